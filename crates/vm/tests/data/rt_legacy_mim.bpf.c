// Legacy map-in-map (samples/bpf's inner_map_idx), for the object loader and kernel tests.
// samples/bpf's bpf_load.c map layout: `inner_map_idx` names the map whose shape the
// inner maps of a map-in-map have (index in offset order within `maps`).
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

struct bpf_map_def {
	unsigned int type;
	unsigned int key_size;
	unsigned int value_size;
	unsigned int max_entries;
	unsigned int map_flags;
	unsigned int inner_map_idx;
	unsigned int numa_node;
};

struct bpf_map_def SEC("maps") port_a = {
	.type = BPF_MAP_TYPE_HASH,
	.key_size = 2,
	.value_size = 4,
	.max_entries = 16,
};

struct bpf_map_def SEC("maps") outer = {
	.type = BPF_MAP_TYPE_ARRAY_OF_MAPS,
	.key_size = 4,
	.value_size = 4,
	.max_entries = 2,
	.inner_map_idx = 0,
};

SEC("xdp")
int prog(struct xdp_md *ctx)
{
	__u32 k = 0;
	void *m = bpf_map_lookup_elem(&outer, &k);
	return m ? XDP_PASS : XDP_DROP;
}

char _license[] SEC("license") = "GPL";
