/* MurmurHash3 x86_32 over the packet, computed for two seeds in one pass
 * (32-bit rotates by 13, 15). One pass only: a second loop after the first
 * would be re-verified for every exit point of the first. */
#ifndef KOPS_K_MURMUR3_ROT32_H
#define KOPS_K_MURMUR3_ROT32_H
#include "kops_bench.h"

/* One benchmark run = this many passes of the kernel over the packet
 * (see kops_fold in kops_bench.h). */
#define KOPS_ROUNDS_MURMUR3_ROT32 2

static KOPS_INLINE __u32 kops_murmur3_block(__u32 h, __u32 k)
{
	k *= 0xcc9e2d51u;
	k = KOPS_ROTL32(k, 15);
	k *= 0x1b873593u;
	h ^= k;
	h = KOPS_ROTL32(h, 13);
	return h * 5 + 0xe6546b64u;
}

static KOPS_INLINE __u32 kops_murmur3_final(__u32 h, __u32 k, __u32 len)
{
	k *= 0xcc9e2d51u;
	k = KOPS_ROTL32(k, 15);
	k *= 0x1b873593u;
	h ^= k;
	h ^= len;
	h ^= h >> 16;
	h *= 0x85ebca6bu;
	h ^= h >> 13;
	h *= 0xc2b2ae35u;
	h ^= h >> 16;
	return h;
}

static KOPS_INLINE __u64 murmur3_rot32_kernel(const __u8 *data, const __u8 *data_end)
{
	__u32 h1 = 0x9747b28cu, h2 = 0x1234567u, len = 0, k;
	const __u8 *p = data;

	for (__u32 i = 0; i < 512; i++) {
		if (p + 4 > data_end)
			break;
		k = KOPS_LD32(p);
		h1 = kops_murmur3_block(h1, k);
		h2 = kops_murmur3_block(h2, k ^ 0x5bd1e995u);
		p += 4;
		len += 4;
	}
	k = 0;
	for (__u32 j = 0; j < 3; j++) {
		if (p + 1 > data_end)
			break;
		k |= (__u32)p[0] << (8 * j);
		p++;
		len++;
	}
	h1 = kops_murmur3_final(h1, k, len);
	h2 = kops_murmur3_final(h2, k, len);
	return ((__u64)h1 << 32) | h2;
}
#endif
