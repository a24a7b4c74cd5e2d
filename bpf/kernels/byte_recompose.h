/* Byte-by-byte load recomposition: 64-bit little-endian, 32-bit big-endian
 * and 16-bit values assembled from single-byte packet loads
 * (b0 | b1 << 8 | ...). BPF cannot do unaligned-by-contract wide loads of
 * byte pointers, so clang keeps the byte-load ladders. */
#ifndef KOPS_K_BYTE_RECOMPOSE_H
#define KOPS_K_BYTE_RECOMPOSE_H
#include "kops_bench.h"

/* One benchmark run = this many passes of the kernel over the packet
 * (see kops_fold in kops_bench.h). */
#define KOPS_ROUNDS_BYTE_RECOMPOSE 8

static KOPS_INLINE __u64 byte_recompose_kernel(const __u8 *data, const __u8 *data_end)
{
	const __u8 *p = data;
	__u64 acc = 0, acc2 = 0;

	for (__u32 i = 0; i < 128; i++) {
		if (p + 16 > data_end)
			break;
		__u64 le64 = (__u64)p[0] | ((__u64)p[1] << 8) | ((__u64)p[2] << 16) |
			     ((__u64)p[3] << 24) | ((__u64)p[4] << 32) | ((__u64)p[5] << 40) |
			     ((__u64)p[6] << 48) | ((__u64)p[7] << 56);
		__u32 be32 = ((__u32)p[8] << 24) | ((__u32)p[9] << 16) | ((__u32)p[10] << 8) |
			     (__u32)p[11];
		__u32 le32 = (__u32)p[12] | ((__u32)p[13] << 8) | ((__u32)p[14] << 16) |
			     ((__u32)p[15] << 24);
		__u16 be16 = (__u16)(((__u32)p[9] << 8) | p[10]);
		acc += le64 ^ ((__u64)be32 << 7);
		acc2 = (acc2 ^ le32) * 0x100000001b3ULL + be16;
		p += 16;
	}
	return acc ^ acc2;
}
#endif
