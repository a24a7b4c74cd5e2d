// Tail calls through a program array with an initial slot (BTF `values`), and the
// 33-tail-call limit.
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} counter SEC(".maps");

SEC("xdp")
int target(struct xdp_md *ctx)
{
	return 42;
}

SEC("xdp")
int selfcall(struct xdp_md *ctx);

struct {
	__uint(type, BPF_MAP_TYPE_PROG_ARRAY);
	__uint(max_entries, 4);
	__type(key, __u32);
	__type(value, __u32);
	__array(values, int (void *));
} jmp_table SEC(".maps") = {
	.values = { [0] = (void *)&target, [1] = (void *)&selfcall },
};

SEC("xdp")
int entry(struct xdp_md *ctx)
{
	bpf_tail_call(ctx, &jmp_table, 0);
	return 1;
}

SEC("xdp")
int empty_slot(struct xdp_md *ctx)
{
	bpf_tail_call(ctx, &jmp_table, 2);
	bpf_tail_call(ctx, &jmp_table, 100);
	return 3;
}

SEC("xdp")
int selfcall(struct xdp_md *ctx)
{
	__u32 k = 0;
	__u64 *c = bpf_map_lookup_elem(&counter, &k);
	if (c)
		*c += 1;
	bpf_tail_call(ctx, &jmp_table, 1);
	return 7;
}

char LICENSE[] SEC("license") = "GPL";
