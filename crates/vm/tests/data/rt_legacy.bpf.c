// Section names of Linux 6.12 samples/bpf: `redirect_xmit` (tc, loaded by iproute2 with an
// explicit type, so unknown to libbpf), `xdp_fwd` and `socket1` (pre-1.0 libbpf prefixes);
// and a helper the runtimes do not implement (bpf_get_route_realm, id 24).
// Build: clang-19 -O2 -g -target bpf -mcpu=v3 -I/usr/include/x86_64-linux-gnu -c rt_legacy.bpf.c -o rt_legacy.bpf.o
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

SEC("redirect_xmit")
int do_redirect_xmit(struct __sk_buff *skb)
{
	return skb->len > 60 ? bpf_redirect(7, 0) : 0;
}

SEC("xdp_fwd")
int do_xdp_fwd(struct xdp_md *ctx)
{
	return ctx->data_end - ctx->data > 60 ? XDP_DROP : XDP_PASS;
}

SEC("socket1")
int do_socket1(struct __sk_buff *skb)
{
	return skb->len;
}

SEC("tc")
int realm(struct __sk_buff *skb)
{
	return bpf_get_route_realm(skb);
}

char LICENSE[] SEC("license") = "GPL";
