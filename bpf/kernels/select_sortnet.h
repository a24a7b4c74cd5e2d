/* Sorting network on 8 packet bytes per step (Batcher's odd-even merge,
 * 19 compare-exchanges = 38 selects); the median pair and the spread are
 * accumulated. */
#ifndef KOPS_K_SELECT_SORTNET_H
#define KOPS_K_SELECT_SORTNET_H
#include "kops_bench.h"

/* One benchmark run = this many passes of the kernel over the packet
 * (see kops_fold in kops_bench.h). */
#define KOPS_ROUNDS_SELECT_SORTNET 2

#define KOPS_CE(a, b)                                   \
	do {                                            \
		__u32 lo_ = a < b ? a : b;              \
		__u32 hi_ = a < b ? b : a;              \
		a = lo_;                                \
		b = hi_;                                \
	} while (0)

static KOPS_INLINE __u64 select_sortnet_kernel(const __u8 *data, const __u8 *data_end)
{
	const __u8 *p = data;
	__u64 acc = 0;

	for (__u32 i = 0; i < 256; i++) {
		if (p + 8 > data_end)
			break;
		__u32 v0 = p[0], v1 = p[1], v2 = p[2], v3 = p[3];
		__u32 v4 = p[4], v5 = p[5], v6 = p[6], v7 = p[7];
		KOPS_CE(v0, v1); KOPS_CE(v2, v3); KOPS_CE(v4, v5); KOPS_CE(v6, v7);
		KOPS_CE(v0, v2); KOPS_CE(v1, v3); KOPS_CE(v4, v6); KOPS_CE(v5, v7);
		KOPS_CE(v1, v2); KOPS_CE(v5, v6);
		KOPS_CE(v0, v4); KOPS_CE(v1, v5); KOPS_CE(v2, v6); KOPS_CE(v3, v7);
		KOPS_CE(v2, v4); KOPS_CE(v3, v5);
		KOPS_CE(v1, v2); KOPS_CE(v3, v4); KOPS_CE(v5, v6);
		acc = acc * 33 + (v3 + v4) + ((v7 - v0) << 8);
		p += 8;
	}
	return acc;
}
#endif
