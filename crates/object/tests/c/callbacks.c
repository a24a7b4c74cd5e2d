// Function references (ld_imm64 src=4 via bpf_loop callbacks) and a static subprogram
// placed in the program's own section (a call without relocation inside `xdp`).
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

struct ctx_t { __u64 sum; };

static int add_one(__u32 i, void *data)
{
	struct ctx_t *c = data;
	c->sum += i * 3 + 1;
	return 0;
}

static int add_two(__u32 i, void *data)
{
	struct ctx_t *c = data;
	c->sum ^= i;
	return 0;
}

static __attribute__((noinline, section("xdp"))) __u64 local_fold(__u64 x)
{
	return (x >> 5) ^ (x * 11);
}

SEC("xdp")
int loops(struct xdp_md *xdp)
{
	struct ctx_t c = { .sum = xdp->ingress_ifindex };
	bpf_loop(8, add_one, &c, 0);
	bpf_loop(4, add_two, &c, 0);
	return local_fold(c.sum) & 3;
}

char _license[] SEC("license") = "GPL";
