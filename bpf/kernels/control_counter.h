/* Control (no idiom): a 2048-iteration counter loop (multiply-add chain
 * seeded from the packet length), no memory access inside the loop. */
#ifndef KOPS_K_CONTROL_COUNTER_H
#define KOPS_K_CONTROL_COUNTER_H
#include "kops_bench.h"

/* One benchmark run = this many passes of the kernel over the packet
 * (see kops_fold in kops_bench.h). */
#define KOPS_ROUNDS_CONTROL_COUNTER 1

static KOPS_INLINE __u64 control_counter_kernel(const __u8 *data, const __u8 *data_end)
{
	__u64 x = 0, n = 0;
	const __u8 *p = data;

	/* Seed = packet length (counted, not subtracted: no pointer arithmetic
	 * on data_end in BPF), capped at 64. */
	for (__u32 i = 0; i < 64; i++) {
		if (p + 1 > data_end)
			break;
		p++;
		n++;
	}
	x = n;
	KOPS_NO_UNROLL
	for (__u64 i = 0; i < 2048; i++)
		x = x * 6364136223846793005ULL + i;
	return x;
}
#endif
