// Loader test object: several programs in one section, static subprograms in .text
// called from two programs (one calling another), BTF maps of several kinds, global data.
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 128);
	__type(key, __u32);
	__type(value, __u64);
} counts SEC(".maps");

struct pair { __u64 a; __u32 b; __u16 c; };

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 4);
	__type(key, __u32);
	__type(value, struct pair);
	__uint(map_flags, BPF_F_RDONLY_PROG);
} pairs SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__uint(key_size, 4);
	__uint(value_size, 24);
	__uint(pinning, 1);
} scratch SEC(".maps");

int tail_a(struct xdp_md *ctx);
int tail_b(struct xdp_md *ctx);

struct {
	__uint(type, BPF_MAP_TYPE_PROG_ARRAY);
	__uint(max_entries, 8);
	__uint(key_size, sizeof(__u32));
	__array(values, int (void *));
} jumps SEC(".maps") = {
	.values = { [1] = (void *)&tail_a, [5] = (void *)&tail_b },
};

const volatile __u32 cfg_limit = 7;
const volatile __u64 cfg_mask = 0xff;
__u64 hits = 1;
__u32 misses = 2;
__u64 zeroed;
__u32 zeroed2;

static __attribute__((noinline)) __u64 mix(__u64 x)
{
	return (x << 7) ^ (x >> 3) ^ cfg_mask;
}

static __attribute__((noinline)) __u64 helper2(__u64 x, __u32 k)
{
	if (k > cfg_limit)
		return mix(x) + 1;
	return x * 3;
}

SEC("xdp")
int prog_one(struct xdp_md *ctx)
{
	__u32 key = ctx->ingress_ifindex;
	__u64 *v = bpf_map_lookup_elem(&counts, &key);
	__u64 r = helper2(key, ctx->rx_queue_index);
	if (v)
		r += *v;
	misses += 1;
	zeroed2 = (__u32)r;
	return r & 3;
}

SEC("xdp")
int prog_two(struct xdp_md *ctx)
{
	__u32 k = 0;
	struct pair *p = bpf_map_lookup_elem(&pairs, &k);
	__u64 r = mix(ctx->data_end - ctx->data);
	if (p)
		r += p->b;
	hits += r;
	zeroed += 1;
	bpf_tail_call(ctx, &jumps, 1);
	return 2;
}

SEC("xdp")
int tail_a(struct xdp_md *ctx)
{
	return 1;
}

SEC("xdp")
int tail_b(struct xdp_md *ctx)
{
	__u32 k = 0;
	void *s = bpf_map_lookup_elem(&scratch, &k);
	return s ? 2 : 1;
}

SEC("tc")
int tc_prog(struct __sk_buff *skb)
{
	static const char msg[] = "len %d\n";
	bpf_trace_printk(msg, sizeof(msg), skb->len);
	bpf_trace_printk("literal %d\n", 12, skb->mark);
	return (int)helper2(skb->len, skb->mark);
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
