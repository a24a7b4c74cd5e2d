// stresses: popcount64 (__builtin_popcountll expansion) in a socket filter over a stack buffer
/* Socket filters cannot read the packet directly, so the first 256 bytes
 * (or 64 if the packet is shorter; zero padded) are copied to the stack with
 * bpf_skb_load_bytes and popcount_buf_kernel runs on that buffer. One run =
 * KOPS_ROUNDS_SOCKET_POPCOUNT passes. Keeps the whole packet (returns len). */
#include "kops_bench.h"
#include "../kernels/popcount_bitmap.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

#define KOPS_ROUNDS_SOCKET_POPCOUNT 4

__u64 kops_result; /* .bss: last folded result (compare with the native build) */
__u64 kops_passes; /* .bss: written by every pass, so clang cannot hoist a pass */

__attribute__((noinline)) __u64 kops_pass(struct __sk_buff *skb)
{
	__u64 buf[KOPS_POPCOUNT_BUF_WORDS];

	__builtin_memset(buf, 0, sizeof(buf));
	if (skb->len >= sizeof(buf))
		bpf_skb_load_bytes(skb, 0, buf, sizeof(buf));
	else if (skb->len >= 64)
		bpf_skb_load_bytes(skb, 0, buf, 64);
	kops_passes++;
	return popcount_buf_kernel(buf);
}

SEC("socket")
int socket_popcount(struct __sk_buff *skb)
{
	__u64 r = 0;

	KOPS_NO_UNROLL
	for (__u32 i = 0; i < KOPS_ROUNDS_SOCKET_POPCOUNT; i++)
		r = kops_fold(r, kops_pass(skb));
	kops_result = r;
	return skb->len;
}
