// Programs `kops diff` cannot compare, which it must report as "not run" (never as a clean
// pass): one calls a helper the kops runtimes do not implement, one is a program type
// BPF_PROG_TEST_RUN does not run; `fine` runs everywhere.
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

SEC("tc")
int realm(struct __sk_buff *skb)
{
	return bpf_get_route_realm(skb) == 0 ? 0 : 2;
}

SEC("sockops")
int ops(struct bpf_sock_ops *skops)
{
	return 1;
}

SEC("tc")
int fine(struct __sk_buff *skb)
{
	return skb->len > 100 ? 2 : 0;
}

char LICENSE[] SEC("license") = "GPL";
