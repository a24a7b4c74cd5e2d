/* Bounded loops: bitwise CRC-32 (reflected, polynomial 0xEDB88320) of the
 * first 512 packet bytes, an 8-step inner loop per byte; both loops are
 * plain `for` loops with constant bounds and unrolling disabled. */
#ifndef KOPS_K_CRC32_LOOP_H
#define KOPS_K_CRC32_LOOP_H
#include "kops_bench.h"

/* One benchmark run = this many passes of the kernel over the packet
 * (see kops_fold in kops_bench.h). */
#define KOPS_ROUNDS_CRC32_LOOP 1

static KOPS_INLINE __u64 crc32_loop_kernel(const __u8 *data, const __u8 *data_end)
{
	const __u8 *p = data;
	__u32 crc = 0xffffffffu;

	KOPS_NO_UNROLL
	for (__u32 i = 0; i < 512; i++) {
		if (p + 1 > data_end)
			break;
		crc ^= p[0];
		KOPS_NO_UNROLL
		for (int k = 0; k < 8; k++)
			crc = (crc >> 1) ^ (0xedb88320u & (0u - (crc & 1)));
		p++;
	}
	return ~crc;
}
#endif
