// stresses: bulk memcpy/memset into a map value (16/32/64/128-byte struct copies and zeroing)
/* xdp wrapper of bpf/kernels/struct_map.h: the record the kernel fills is
 * the value of a one-entry BTF array map. One run = KOPS_ROUNDS_STRUCT_MAP
 * passes (global function, verified once). */
#include "kops_bench.h"
#include "../kernels/struct_map.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct kops_flow_rec);
} kops_recs SEC(".maps");

__u64 kops_result; /* .bss: last folded result (compare with the native build) */

__attribute__((noinline)) __u64 kops_pass(struct xdp_md *ctx)
{
	const __u8 *data = (const __u8 *)(long)ctx->data;
	const __u8 *data_end = (const __u8 *)(long)ctx->data_end;
	__u32 key = 0;
	struct kops_flow_rec *rec = bpf_map_lookup_elem(&kops_recs, &key);

	if (!rec)
		return 0;
	return struct_map_kernel(data, data_end, rec);
}

SEC("xdp")
int struct_map(struct xdp_md *ctx)
{
	__u64 r = 0;

	KOPS_NO_UNROLL
	for (__u32 i = 0; i < KOPS_ROUNDS_STRUCT_MAP; i++)
		r = kops_fold(r, kops_pass(ctx));
	kops_result = r;
	return XDP_PASS;
}
