/* ChaCha20 block function (ARX quarter rounds, 32-bit rotates by 16/12/8/7):
 * key = first 32 packet bytes, one 64-byte keystream block per 64-byte packet
 * block, keystream XOR-folded with the block. Needs >= 64 bytes for work. */
#ifndef KOPS_K_CHACHA_ARX_H
#define KOPS_K_CHACHA_ARX_H
#include "kops_bench.h"

/* One benchmark run = this many passes of the kernel over the packet
 * (see kops_fold in kops_bench.h). */
#define KOPS_ROUNDS_CHACHA_ARX 1

#define KOPS_QR(a, b, c, d)                                    \
	do {                                                   \
		a += b; d ^= a; d = KOPS_ROTL32(d, 16);        \
		c += d; b ^= c; b = KOPS_ROTL32(b, 12);        \
		a += b; d ^= a; d = KOPS_ROTL32(d, 8);         \
		c += d; b ^= c; b = KOPS_ROTL32(b, 7);         \
	} while (0)

static KOPS_INLINE __u64 chacha_arx_kernel(const __u8 *data, const __u8 *data_end)
{
	__u32 k[8];
	__u64 acc = 0;
	const __u8 *p = data;

	if (data + 32 > data_end)
		return 0;
	for (int i = 0; i < 8; i++)
		k[i] = KOPS_LD32(data + 4 * i);

	for (__u32 blk = 0; blk < 32; blk++) {
		if (p + 64 > data_end)
			break;
		__u32 x0 = 0x61707865, x1 = 0x3320646e, x2 = 0x79622d32, x3 = 0x6b206574;
		__u32 x4 = k[0], x5 = k[1], x6 = k[2], x7 = k[3];
		__u32 x8 = k[4], x9 = k[5], x10 = k[6], x11 = k[7];
		__u32 x12 = blk, x13 = 0x4b4f5053, x14 = 0x12345678, x15 = 0x9abcdef0;
		KOPS_NO_UNROLL
		for (int r = 0; r < 10; r++) {
			KOPS_QR(x0, x4, x8, x12);
			KOPS_QR(x1, x5, x9, x13);
			KOPS_QR(x2, x6, x10, x14);
			KOPS_QR(x3, x7, x11, x15);
			KOPS_QR(x0, x5, x10, x15);
			KOPS_QR(x1, x6, x11, x12);
			KOPS_QR(x2, x7, x8, x13);
			KOPS_QR(x3, x4, x9, x14);
		}
		x0 += 0x61707865; x1 += 0x3320646e; x2 += 0x79622d32; x3 += 0x6b206574;
		x4 += k[0]; x5 += k[1]; x6 += k[2]; x7 += k[3];
		x8 += k[4]; x9 += k[5]; x10 += k[6]; x11 += k[7];
		x12 += blk; x13 += 0x4b4f5053; x14 += 0x12345678; x15 += 0x9abcdef0;
		acc += (__u64)(x0 ^ KOPS_LD32(p + 0)) + (x1 ^ KOPS_LD32(p + 4)) +
		       (x2 ^ KOPS_LD32(p + 8)) + (x3 ^ KOPS_LD32(p + 12));
		acc ^= (__u64)(x4 ^ KOPS_LD32(p + 16)) << 7;
		acc += (__u64)(x5 ^ KOPS_LD32(p + 20)) + (x6 ^ KOPS_LD32(p + 24)) +
		       (x7 ^ KOPS_LD32(p + 28)) + (x8 ^ KOPS_LD32(p + 32));
		acc ^= (__u64)(x9 ^ KOPS_LD32(p + 36)) << 13;
		acc += (__u64)(x10 ^ KOPS_LD32(p + 40)) + (x11 ^ KOPS_LD32(p + 44)) +
		       (x12 ^ KOPS_LD32(p + 48)) + (x13 ^ KOPS_LD32(p + 52));
		acc ^= (__u64)(x14 ^ KOPS_LD32(p + 56)) << 21;
		acc += (__u64)(x15 ^ KOPS_LD32(p + 60));
		p += 64;
	}
	return acc;
}
#endif
