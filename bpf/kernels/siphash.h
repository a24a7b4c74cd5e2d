/* SipHash-2-4 over the whole packet (64-bit rotates by 13, 16, 17, 21, 32). */
#ifndef KOPS_K_SIPHASH_H
#define KOPS_K_SIPHASH_H
#include "kops_bench.h"

/* One benchmark run = this many passes of the kernel over the packet
 * (see kops_fold in kops_bench.h). */
#define KOPS_ROUNDS_SIPHASH 2

#define KOPS_SIPROUND                                                  \
	do {                                                           \
		v0 += v1; v1 = KOPS_ROTL64(v1, 13); v1 ^= v0;          \
		v0 = KOPS_ROTL64(v0, 32);                              \
		v2 += v3; v3 = KOPS_ROTL64(v3, 16); v3 ^= v2;          \
		v0 += v3; v3 = KOPS_ROTL64(v3, 21); v3 ^= v0;          \
		v2 += v1; v1 = KOPS_ROTL64(v1, 17); v1 ^= v2;          \
		v2 = KOPS_ROTL64(v2, 32);                              \
	} while (0)

static KOPS_INLINE __u64 siphash_kernel(const __u8 *data, const __u8 *data_end)
{
	const __u64 k0 = 0x0706050403020100ULL, k1 = 0x0f0e0d0c0b0a0908ULL;
	__u64 v0 = k0 ^ 0x736f6d6570736575ULL;
	__u64 v1 = k1 ^ 0x646f72616e646f6dULL;
	__u64 v2 = k0 ^ 0x6c7967656e657261ULL;
	__u64 v3 = k1 ^ 0x7465646279746573ULL;
	const __u8 *p = data;
	__u64 len = 0, b = 0;

	for (__u32 i = 0; i < 256; i++) {
		if (p + 8 > data_end)
			break;
		__u64 m = KOPS_LD64(p);
		v3 ^= m;
		KOPS_SIPROUND;
		KOPS_SIPROUND;
		v0 ^= m;
		p += 8;
		len += 8;
	}
	for (__u32 j = 0; j < 7; j++) {
		if (p + 1 > data_end)
			break;
		b |= (__u64)p[0] << (8 * j);
		p++;
		len++;
	}
	b |= len << 56;
	v3 ^= b;
	KOPS_SIPROUND;
	KOPS_SIPROUND;
	v0 ^= b;
	v2 ^= 0xff;
	KOPS_SIPROUND;
	KOPS_SIPROUND;
	KOPS_SIPROUND;
	KOPS_SIPROUND;
	return v0 ^ v1 ^ v2 ^ v3;
}
#endif
