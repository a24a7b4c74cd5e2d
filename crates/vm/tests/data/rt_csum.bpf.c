// tc NAT-style checksum updates: bpf_l3_csum_replace / bpf_l4_csum_replace in their
// size-4, size-2 and csum_diff forms, and the UDP "mangled 0" rule.
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <linux/udp.h>
#include <bpf/bpf_helpers.h>

#define IP_CSUM (ETH_HLEN + 10)
#define IP_DST (ETH_HLEN + 16)
#define UDP_DPORT (ETH_HLEN + 20 + 2)
#define UDP_CSUM (ETH_HLEN + 20 + 6)

static __always_inline int rewrite(struct __sk_buff *skb, __u64 l4flags)
{
	void *data = (void *)(long)skb->data;
	void *end = (void *)(long)skb->data_end;
	struct iphdr *ip = data + ETH_HLEN;
	struct udphdr *udp = (void *)(ip + 1);
	if ((void *)(udp + 1) > end)
		return -1;
	__u32 old_dst = ip->daddr;
	__u32 new_dst = old_dst ^ 0x01020304;
	__u16 old_port = udp->dest;
	__u16 new_port = old_port ^ 0x1111;
	long r = 0;
	r |= bpf_l4_csum_replace(skb, UDP_CSUM, old_dst, new_dst, l4flags | BPF_F_PSEUDO_HDR | 4);
	r |= bpf_l3_csum_replace(skb, IP_CSUM, old_dst, new_dst, 4);
	r |= bpf_skb_store_bytes(skb, IP_DST, &new_dst, 4, 0);
	r |= bpf_l4_csum_replace(skb, UDP_CSUM, old_port, new_port, l4flags | 2);
	r |= bpf_skb_store_bytes(skb, UDP_DPORT, &new_port, 2, 0);
	return r;
}

SEC("tc")
int nat4(struct __sk_buff *skb)
{
	return rewrite(skb, 0);
}

SEC("tc")
int nat4_mangled(struct __sk_buff *skb)
{
	return rewrite(skb, BPF_F_MARK_MANGLED_0);
}

// Same NAT through csum_diff (size-0 form); also invalid calls' errors.
SEC("tc")
int nat_diff(struct __sk_buff *skb)
{
	void *data = (void *)(long)skb->data;
	void *end = (void *)(long)skb->data_end;
	struct iphdr *ip = data + ETH_HLEN;
	if ((void *)(ip + 1) > end)
		return -1;
	__u32 old_dst = ip->daddr;
	__u32 new_dst = 0x0a0b0c0d;
	__s64 d = bpf_csum_diff(&old_dst, 4, &new_dst, 4, 0);
	long r = bpf_l3_csum_replace(skb, IP_CSUM, 0, d, 0);
	r |= bpf_skb_store_bytes(skb, IP_DST, &new_dst, 4, 0);
	long e1 = bpf_l3_csum_replace(skb, IP_CSUM + 1, 0, 0, 2);   // odd offset: -EFAULT
	long e2 = bpf_l3_csum_replace(skb, IP_CSUM, 1, 0, 0);       // diff form with from: -EINVAL
	long e3 = bpf_l3_csum_replace(skb, 5000, 0, 0, 2);          // past the packet: -EFAULT
	return r == 0 && e1 == -14 && e2 == -22 && e3 == -14 ? 1 : 2;
}

char LICENSE[] SEC("license") = "GPL";
