// __sk_buff fields and legacy packet loads.
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

unsigned long long load_byte(void *skb, unsigned long long off) asm("llvm.bpf.load.byte");
unsigned long long load_half(void *skb, unsigned long long off) asm("llvm.bpf.load.half");
unsigned long long load_word(void *skb, unsigned long long off) asm("llvm.bpf.load.word");

// Socket filter: data starts at the network header. Returns
// (first IP byte << 24) | (IP protocol << 16) | skb->len.
SEC("socket")
int sock_ld_abs(struct __sk_buff *skb)
{
	return (load_byte(skb, 0) << 24) | (load_byte(skb, 9) << 16) | skb->len;
}

// Out-of-range LD_ABS ends the program with 0.
SEC("socket")
int sock_ld_abs_oob(struct __sk_buff *skb)
{
	return load_word(skb, 5000) + 77;
}

// Negative offsets: SKF_LL_OFF + 12 is the EtherType, SKF_NET_OFF + 9 the IP protocol.
SEC("socket")
int sock_ld_neg(struct __sk_buff *skb)
{
	return (load_half(skb, -0x200000 + 12) << 16) | load_byte(skb, -0x100000 + 9);
}

// tc: data starts at the Ethernet header; sets mark and cb[1], returns protocol and
// pkt_type; the packet's first byte is incremented.
SEC("tc")
int tc_fields(struct __sk_buff *skb)
{
	unsigned char *data = (void *)(long)skb->data;
	unsigned char *end = (void *)(long)skb->data_end;
	if (data + 14 > end)
		return 2;
	data[0] += 1;
	skb->mark = 0xabcd;
	skb->cb[1] = skb->len;
	return (skb->protocol << 8) | skb->pkt_type | (skb->ifindex << 24);
}

char LICENSE[] SEC("license") = "GPL";
