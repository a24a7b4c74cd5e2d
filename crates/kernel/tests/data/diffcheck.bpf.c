// Test object for `kops diff` (built with bpf/../build flags, committed with its source):
// a tail call through a program array with an initial slot, a per-CPU counter, a hash map,
// .data and .rodata globals, and a program whose result depends on bpf_get_prandom_u32.
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 4);
	__type(key, __u32);
	__type(value, __u64);
} pcpu_count SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 256);
	__type(key, __u32);
	__type(value, __u64);
} by_len SEC(".maps");

__u64 seen = 0;
const volatile __u32 bias = 7;

SEC("xdp")
int tail(struct xdp_md *ctx)
{
	unsigned char *p = (void *)(long)ctx->data, *end = (void *)(long)ctx->data_end;
	if (p + 1 > end)
		return XDP_ABORTED;
	return (p[0] + bias) & 1 ? XDP_TX : XDP_PASS;
}

struct {
	__uint(type, BPF_MAP_TYPE_PROG_ARRAY);
	__uint(max_entries, 2);
	__type(key, __u32);
	__array(values, int (void *));
} jump SEC(".maps") = {
	.values = { [0] = (void *)&tail },
};

SEC("xdp")
int entry(struct xdp_md *ctx)
{
	__u32 len = ctx->data_end - ctx->data, k0 = 0, k = len & 0xff;
	__u64 one = 1, *c = bpf_map_lookup_elem(&pcpu_count, &k0), *h;
	if (c)
		*c += len;
	h = bpf_map_lookup_elem(&by_len, &k);
	if (h)
		*h += 1;
	else
		bpf_map_update_elem(&by_len, &k, &one, BPF_ANY);
	seen += len + bias;
	bpf_tail_call(ctx, &jump, 0);
	return XDP_DROP;
}

SEC("xdp")
int coin(struct xdp_md *ctx)
{
	return bpf_get_prandom_u32() & 1 ? XDP_PASS : XDP_TX;
}

char _license[] SEC("license") = "GPL";
