/* Popcount over the packet read as a bitmap of 64-bit words: set bits and
 * the Hamming distance between neighbouring words (__builtin_popcountll,
 * which clang -target bpf expands to the branch-free shift/mask/multiply
 * sequence), plus 32-bit __builtin_popcount of the halves. */
#ifndef KOPS_K_POPCOUNT_BITMAP_H
#define KOPS_K_POPCOUNT_BITMAP_H
#include "kops_bench.h"

/* One benchmark run = this many passes of the kernel over the packet
 * (see kops_fold in kops_bench.h). */
#define KOPS_ROUNDS_POPCOUNT_BITMAP 3

static KOPS_INLINE __u64 popcount_bitmap_kernel(const __u8 *data, const __u8 *data_end)
{
	const __u8 *p = data;
	__u64 ones = 0, dist = 0, prev = 0;
	__u32 half = 0;

	for (__u32 i = 0; i < 256; i++) {
		if (p + 8 > data_end)
			break;
		__u64 w = KOPS_LD64(p);
		ones += __builtin_popcountll(w);
		dist += __builtin_popcountll(w ^ prev);
		half += __builtin_popcount((__u32)w & (__u32)(w >> 32));
		prev = w;
		p += 8;
	}
	return (ones << 32) ^ (dist << 16) ^ half;
}

/* Variant for the socket filter, which cannot read the packet directly: a
 * 256-byte buffer copied out of the skb (zero padded). Four passes of
 * pairwise Hamming distances at increasing strides. */
#define KOPS_POPCOUNT_BUF_WORDS 32
static KOPS_INLINE __u64 popcount_buf_kernel(const __u64 *w)
{
	__u64 acc = 0;

	KOPS_NO_UNROLL
	for (__u32 r = 1; r <= 4; r++) {
		for (__u32 i = 0; i < KOPS_POPCOUNT_BUF_WORDS; i++) {
			__u64 x = w[i];
			__u64 y = w[(i + r) & (KOPS_POPCOUNT_BUF_WORDS - 1)];
			acc += __builtin_popcountll(x ^ y) + __builtin_popcountll(x & ~y);
		}
	}
	return acc;
}
#endif
