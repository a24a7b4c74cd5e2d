// stresses: legacy SEC("maps") map definition (array map lookups + increments per byte, no BTF for the map)
/* Byte histogram of the packet (up to 1536 bytes) in an array map declared the
 * pre-BTF way: a struct bpf_map_def (written out here, newer libbpf headers
 * no longer ship it) in SEC("maps"). No native counterpart (map updates). */
#include "kops_bench.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

struct kops_bpf_map_def {
	unsigned int type;
	unsigned int key_size;
	unsigned int value_size;
	unsigned int max_entries;
	unsigned int map_flags;
};

struct kops_bpf_map_def SEC("maps") legacy_hist_map = {
	.type = BPF_MAP_TYPE_ARRAY,
	.key_size = sizeof(__u32),
	.value_size = sizeof(__u64),
	.max_entries = 256,
};

SEC("xdp")
int legacy_hist(struct xdp_md *ctx)
{
	const __u8 *p = (const __u8 *)(long)ctx->data;
	const __u8 *data_end = (const __u8 *)(long)ctx->data_end;

	for (__u32 i = 0; i < 1536; i++) {
		if (p + 1 > data_end)
			break;
		__u32 key = p[0];
		__u64 *cnt = bpf_map_lookup_elem(&legacy_hist_map, &key);
		if (cnt)
			*cnt += 1;
		p++;
	}
	return XDP_PASS;
}
