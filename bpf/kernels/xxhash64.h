/* xxHash64 (seed 0) over the packet: 32-byte stripes with four lanes,
 * 64-bit rotates by 31, 27, 23, 1, 7, 12, 18, 11. */
#ifndef KOPS_K_XXHASH64_H
#define KOPS_K_XXHASH64_H
#include "kops_bench.h"

/* One benchmark run = this many passes of the kernel over the packet
 * (see kops_fold in kops_bench.h). */
#define KOPS_ROUNDS_XXHASH64 16

#define KOPS_XXP1 11400714785074694791ULL
#define KOPS_XXP2 14029467366897019727ULL
#define KOPS_XXP3 1609587929392839161ULL
#define KOPS_XXP4 9650029242287828579ULL
#define KOPS_XXP5 2870177450012600261ULL

static KOPS_INLINE __u64 kops_xx_round(__u64 acc, __u64 input)
{
	acc += input * KOPS_XXP2;
	acc = KOPS_ROTL64(acc, 31);
	return acc * KOPS_XXP1;
}

static KOPS_INLINE __u64 kops_xx_merge(__u64 acc, __u64 val)
{
	acc ^= kops_xx_round(0, val);
	return acc * KOPS_XXP1 + KOPS_XXP4;
}

static KOPS_INLINE __u64 xxhash64_kernel(const __u8 *data, const __u8 *data_end)
{
	const __u8 *p = data;
	__u64 len = 0, h;
	__u64 v1 = KOPS_XXP1 + KOPS_XXP2, v2 = KOPS_XXP2, v3 = 0, v4 = 0 - KOPS_XXP1;

	for (__u32 i = 0; i < 64; i++) {
		if (p + 32 > data_end)
			break;
		v1 = kops_xx_round(v1, KOPS_LD64(p));
		v2 = kops_xx_round(v2, KOPS_LD64(p + 8));
		v3 = kops_xx_round(v3, KOPS_LD64(p + 16));
		v4 = kops_xx_round(v4, KOPS_LD64(p + 24));
		p += 32;
		len += 32;
	}
	if (len >= 32) {
		h = KOPS_ROTL64(v1, 1) + KOPS_ROTL64(v2, 7) + KOPS_ROTL64(v3, 12) +
		    KOPS_ROTL64(v4, 18);
		h = kops_xx_merge(h, v1);
		h = kops_xx_merge(h, v2);
		h = kops_xx_merge(h, v3);
		h = kops_xx_merge(h, v4);
	} else {
		h = KOPS_XXP5;
	}
	for (__u32 i = 0; i < 3; i++) {
		if (p + 8 > data_end)
			break;
		h ^= kops_xx_round(0, KOPS_LD64(p));
		h = KOPS_ROTL64(h, 27) * KOPS_XXP1 + KOPS_XXP4;
		p += 8;
		len += 8;
	}
	if (p + 4 <= data_end) {
		h ^= (__u64)KOPS_LD32(p) * KOPS_XXP1;
		h = KOPS_ROTL64(h, 23) * KOPS_XXP2 + KOPS_XXP3;
		p += 4;
		len += 4;
	}
	for (__u32 i = 0; i < 3; i++) {
		if (p + 1 > data_end)
			break;
		h ^= p[0] * KOPS_XXP5;
		h = KOPS_ROTL64(h, 11) * KOPS_XXP1;
		p++;
		len++;
	}
	h += len;
	h ^= h >> 33;
	h *= KOPS_XXP2;
	h ^= h >> 29;
	h *= KOPS_XXP3;
	h ^= h >> 32;
	return h;
}
#endif
