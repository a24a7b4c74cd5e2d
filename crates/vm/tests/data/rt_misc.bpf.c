// Redirect helpers, trace_printk, csum_diff.
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <bpf/bpf_helpers.h>

struct {
	__uint(type, BPF_MAP_TYPE_DEVMAP);
	__uint(max_entries, 4);
	__type(key, __u32);
	__type(value, __u32);
} tx_port SEC(".maps");

SEC("xdp")
int redir(struct xdp_md *ctx)
{
	return bpf_redirect(5, 0);
}

// XDP_PASS while slot 1 is empty, XDP_REDIRECT once it holds a device.
SEC("xdp")
int redir_map(struct xdp_md *ctx)
{
	return bpf_redirect_map(&tx_port, 1, XDP_PASS);
}

SEC("xdp")
int printk(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	bpf_printk("len %d x %x", (int)(end - data), 255);
	return 2;
}

// Folded one's complement sum of the IPv4 header via csum_diff: 0xffff for a header
// with a correct checksum. Returns 1000000 if it folds to 0xffff, plus the low 20 bits of the raw 32-bit result.
SEC("xdp")
int csum(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	struct iphdr *ip = data + sizeof(struct ethhdr);
	if ((void *)(ip + 1) > end)
		return 0;
	__u64 s = bpf_csum_diff(0, 0, (__be32 *)ip, sizeof(*ip), 0);
	__u64 f = s;
	f = (f & 0xffff) + (f >> 16);
	f = (f & 0xffff) + (f >> 16);
	return (f == 0xffff ? 1000000 : 0) + (s & 0xfffff);
}

char LICENSE[] SEC("license") = "GPL";
