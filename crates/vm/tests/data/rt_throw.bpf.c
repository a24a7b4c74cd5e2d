// bpf_throw (exceptions, Linux 6.7+) and a program the loader cannot build.
// - `throw_cb` declares an exception callback: a throw from two calls deep ends the program
//   with cb(cookie) = 2 * cookie + 1; without a throw it returns 7.
// - `throw_default` has no callback: the result is the cookie (the kernel's default).
// - `bad_jump` jumps out of its function: our loader refuses it, the rest of the object loads.
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

extern void bpf_throw(__u64 cookie) __ksym;

__noinline int cb(__u64 cookie)
{
	return 2 * cookie + 1;
}

static __noinline int check_len(struct __sk_buff *skb)
{
	if (skb->len > 100)
		bpf_throw(skb->len);
	return 0;
}

static __noinline int inner(struct __sk_buff *skb)
{
	return check_len(skb) + 3;
}

SEC("tc")
__attribute__((btf_decl_tag("exception_callback:cb")))
int throw_cb(struct __sk_buff *skb)
{
	return inner(skb) + 4;
}

static __noinline int deep(__u64 v)
{
	bpf_throw(v + 40);
	return 1;
}

SEC("tc")
int throw_default(struct __sk_buff *skb)
{
	return deep(2) + 100;
}

SEC("socket")
__attribute__((naked)) void bad_jump(void)
{
	asm volatile("r0 = 0; if r0 > 0 goto +100; exit;" ::: "memory");
}

char _license[] SEC("license") = "GPL";
