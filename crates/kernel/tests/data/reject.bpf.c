// Test object for `kops verify`: `ok` is valid; `bad` reads the packet without a bounds
// check, which the verifier rejects at the load from `p`.
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

SEC("xdp")
int ok(struct xdp_md *ctx)
{
	return XDP_PASS;
}

SEC("xdp")
int bad(struct xdp_md *ctx)
{
	unsigned char *p = (void *)(long)ctx->data;
	return p[3];
}

char _license[] SEC("license") = "GPL";
