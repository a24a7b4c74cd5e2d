// XDP context, packet access and the adjust helpers.
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

// Returns data_end - data + 1000 * rx_queue_index + 100000 * ingress_ifindex.
SEC("xdp")
int xdp_len(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	return (end - data) + 1000 * ctx->rx_queue_index + 100000 * ctx->ingress_ifindex;
}

// Pushes 4 bytes (0xaa 0xbb 0xcc 0xdd) in front of the packet, trims 2 bytes at the end.
SEC("xdp")
int xdp_push(struct xdp_md *ctx)
{
	if (bpf_xdp_adjust_head(ctx, -4))
		return 0;
	unsigned char *data = (void *)(long)ctx->data;
	unsigned char *end = (void *)(long)ctx->data_end;
	if (data + 4 > end)
		return 0;
	data[0] = 0xaa; data[1] = 0xbb; data[2] = 0xcc; data[3] = 0xdd;
	if (bpf_xdp_adjust_tail(ctx, -2))
		return 0;
	return 2;
}

// Reserves 8 bytes of metadata and writes a marker into it.
SEC("xdp")
int xdp_meta(struct xdp_md *ctx)
{
	if (bpf_xdp_adjust_meta(ctx, -8))
		return 0;
	__u32 *meta = (void *)(long)ctx->data_meta;
	void *data = (void *)(long)ctx->data;
	if ((void *)(meta + 2) > data)
		return 0;
	meta[0] = 0x11223344;
	meta[1] = 0x55667788;
	// Invalid requests fail as in the kernel: metadata length not a multiple of 4, a head
	// adjustment past the packet end.
	long a = bpf_xdp_adjust_meta(ctx, -2);
	long b = bpf_xdp_adjust_head(ctx, 4000);
	return (a == -13 && b == -22) ? 2 : 1;
}

#ifndef VERIFIABLE_ONLY /* refused by the verifier: tests the runtime checks */
// Reads one byte past data_end without a bounds check (the verifier would refuse this).
SEC("xdp")
int xdp_oob(struct xdp_md *ctx)
{
	unsigned char *end = (void *)(long)ctx->data_end;
	return end[0];
}
#endif

#ifndef VERIFIABLE_ONLY /* refused by the verifier: tests the runtime checks */
// Calls a helper the runtime does not have.
SEC("xdp")
int xdp_unknown_helper(struct xdp_md *ctx)
{
	return bpf_get_current_pid_tgid() & 1;
}
#endif

char LICENSE[] SEC("license") = "GPL";
