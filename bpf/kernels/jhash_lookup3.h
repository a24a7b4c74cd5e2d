/* Jenkins lookup3 (jhash2-style) over the packet in 12-byte chunks, plus a
 * per-chunk jhash_3words as a flow hash would do (32-bit rotates). */
#ifndef KOPS_K_JHASH_LOOKUP3_H
#define KOPS_K_JHASH_LOOKUP3_H
#include "kops_bench.h"

/* One benchmark run = this many passes of the kernel over the packet
 * (see kops_fold in kops_bench.h). */
#define KOPS_ROUNDS_JHASH_LOOKUP3 3

#define KOPS_JMIX(a, b, c)                                              \
	do {                                                            \
		a -= c; a ^= KOPS_ROTL32(c, 4);  c += b;                \
		b -= a; b ^= KOPS_ROTL32(a, 6);  a += c;                \
		c -= b; c ^= KOPS_ROTL32(b, 8);  b += a;                \
		a -= c; a ^= KOPS_ROTL32(c, 16); c += b;                \
		b -= a; b ^= KOPS_ROTL32(a, 19); a += c;                \
		c -= b; c ^= KOPS_ROTL32(b, 4);  b += a;                \
	} while (0)

#define KOPS_JFINAL(a, b, c)                                            \
	do {                                                            \
		c ^= b; c -= KOPS_ROTL32(b, 14);                        \
		a ^= c; a -= KOPS_ROTL32(c, 11);                        \
		b ^= a; b -= KOPS_ROTL32(a, 25);                        \
		c ^= b; c -= KOPS_ROTL32(b, 16);                        \
		a ^= c; a -= KOPS_ROTL32(c, 4);                         \
		b ^= a; b -= KOPS_ROTL32(a, 14);                        \
		c ^= b; c -= KOPS_ROTL32(b, 24);                        \
	} while (0)

#define KOPS_JHASH_INITVAL 0xdeadbeefu

static KOPS_INLINE __u32 kops_jhash_3words(__u32 a, __u32 b, __u32 c, __u32 initval)
{
	a += KOPS_JHASH_INITVAL + initval + (3 << 2);
	b += KOPS_JHASH_INITVAL + initval + (3 << 2);
	c += KOPS_JHASH_INITVAL + initval + (3 << 2);
	KOPS_JFINAL(a, b, c);
	return c;
}

static KOPS_INLINE __u64 jhash_lookup3_kernel(const __u8 *data, const __u8 *data_end)
{
	__u32 a, b, c, flows = 0;
	const __u8 *p = data;

	a = b = c = KOPS_JHASH_INITVAL + 0x5eed;
	for (__u32 i = 0; i < 192; i++) {
		if (p + 12 > data_end)
			break;
		__u32 w0 = KOPS_LD32(p), w1 = KOPS_LD32(p + 4), w2 = KOPS_LD32(p + 8);
		flows += kops_jhash_3words(w0, w1, w2, i);
		a += w0;
		b += w1;
		c += w2;
		KOPS_JMIX(a, b, c);
		p += 12;
	}
	KOPS_JFINAL(a, b, c);
	return ((__u64)c << 32) | flows;
}
#endif
