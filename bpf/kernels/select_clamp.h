/* Conditional-select heavy code: abs, clamp, running min/max and absolute
 * difference of signed 16-bit samples read from the packet. Bounds lo/hi come
 * from the packet too, so no select folds to a constant; on random data
 * every branch is unpredictable. */
#ifndef KOPS_K_SELECT_CLAMP_H
#define KOPS_K_SELECT_CLAMP_H
#include "kops_bench.h"

/* One benchmark run = this many passes of the kernel over the packet
 * (see kops_fold in kops_bench.h). */
#define KOPS_ROUNDS_SELECT_CLAMP 2

static KOPS_INLINE __u64 select_clamp_kernel(const __u8 *data, const __u8 *data_end)
{
	const __u8 *p = data;
	__s32 lo, hi, mn = 0x7fffffff, mx = -0x7fffffff - 1, prev = 0;
	__u64 acc = 0;

	if (data + 2 > data_end)
		return 0;
	lo = data[0];
	hi = lo + 4096 + data[1] * 64;
	for (__u32 i = 0; i < 1024; i++) {
		if (p + 2 > data_end)
			break;
		__s32 v = (__s16)KOPS_LD16(p);
		__s32 a = v < 0 ? -v : v;
		__s32 c = a < lo ? lo : a;
		c = c > hi ? hi : c;
		mn = v < mn ? v : mn;
		mx = v > mx ? v : mx;
		__s32 d = prev > v ? prev - v : v - prev;
		__s32 m = d > c ? d : c;
		acc += (__u32)(c + m);
		prev = v;
		p += 2;
	}
	return acc ^ ((__u64)(__u32)mn << 32) ^ (__u32)mx;
}
#endif
