/* RSS Toeplitz hash (Microsoft default 40-byte key) of IPv4 4-tuples
 * (saddr, daddr, sport, dport = 12 bytes). The first tuple is the real one of
 * an Ethernet+IPv4(no options)+TCP/UDP packet (offset 26); the rest of the
 * packet is read as a batch of further 12-byte tuples (up to 32 in all). */
#ifndef KOPS_K_TOEPLITZ_RSS_H
#define KOPS_K_TOEPLITZ_RSS_H
#include "kops_bench.h"

/* One benchmark run = this many passes of the kernel over the packet
 * (see kops_fold in kops_bench.h). */
#define KOPS_ROUNDS_TOEPLITZ_RSS 2

static const __u8 kops_rss_key[40] = {
	0x6d, 0x5a, 0x56, 0xda, 0x25, 0x5b, 0x0e, 0xc2, 0x41, 0x67,
	0x25, 0x3d, 0x43, 0xa3, 0x8f, 0xb0, 0xd0, 0xca, 0x2b, 0xcb,
	0xae, 0x7b, 0x30, 0xb4, 0x77, 0xcb, 0x2d, 0xa3, 0x80, 0x30,
	0xf2, 0x0c, 0x6a, 0x42, 0xb7, 0x3b, 0xbe, 0xac, 0x01, 0xfa,
};

/* t must have 12 readable bytes (checked by the caller). */
static KOPS_INLINE __u32 kops_toeplitz12(const __u8 *t)
{
	__u64 window = 0;
	__u32 result = 0;

	for (int i = 0; i < 8; i++)
		window = (window << 8) | kops_rss_key[i];
	KOPS_NO_UNROLL
	for (int i = 0; i < 12; i++) {
		__u32 byte = t[i];
		for (int bit = 0; bit < 8; bit++) {
			/* Opaque to clang: otherwise it rewrites the conditional
			 * xor into (byte << k) s>> 31 & w, on which the 6.18
			 * verifier forks every bit (2^8 paths per byte). */
			__u32 set = byte & 0x80;
			KOPS_BARRIER_VAR(set);
			if (set)
				result ^= (__u32)(window >> 32);
			byte <<= 1;
			window <<= 1;
		}
		window |= kops_rss_key[i + 8];
	}
	return result;
}

static KOPS_INLINE __u64 toeplitz_rss_kernel(const __u8 *data, const __u8 *data_end)
{
	const __u8 *p = data + 26;
	__u64 acc = 0;

	for (__u32 n = 0; n < 32; n++) {
		if (p + 12 > data_end)
			break;
		__u32 h = kops_toeplitz12(p);
		acc = (acc << 3) ^ (acc >> 61) ^ h;
		p += 12;
	}
	return acc;
}
#endif
