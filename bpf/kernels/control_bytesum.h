/* Control (no idiom): plain sum of all packet bytes. */
#ifndef KOPS_K_CONTROL_BYTESUM_H
#define KOPS_K_CONTROL_BYTESUM_H
#include "kops_bench.h"

/* One benchmark run = this many passes of the kernel over the packet
 * (see kops_fold in kops_bench.h). */
#define KOPS_ROUNDS_CONTROL_BYTESUM 3

static KOPS_INLINE __u64 control_bytesum_kernel(const __u8 *data, const __u8 *data_end)
{
	const __u8 *p = data;
	__u64 sum = 0;

	for (__u32 i = 0; i < 2048; i++) {
		if (p + 1 > data_end)
			break;
		sum += p[0];
		p++;
	}
	return sum;
}
#endif
