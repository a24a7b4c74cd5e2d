// Socket filter with legacy packet loads (BPF_LD ABS/IND) and a bounded loop.
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

unsigned long long load_byte(void *skb, unsigned long long off) asm("llvm.bpf.load.byte");
unsigned long long load_half(void *skb, unsigned long long off) asm("llvm.bpf.load.half");
unsigned long long load_word(void *skb, unsigned long long off) asm("llvm.bpf.load.word");

SEC("socket")
int legacy(struct __sk_buff *skb)
{
	unsigned long long sum = 0;
	unsigned long long proto = load_half(skb, 12);
	unsigned long long ihl = load_byte(skb, 14) & 0xf;
	for (unsigned long long i = 0; i < 8; i++)
		sum += load_word(skb, 14 + ihl * 4 + i * 4) ^ skb->len;
	if (proto != 0x0800)
		return 0;
	return sum > 100 ? -1 : skb->mark + bpf_get_prandom_u32();
}

char LICENSE[] SEC("license") = "GPL";
