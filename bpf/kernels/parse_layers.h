/* Multi-layer packet parser: Ethernet, up to two VLAN tags (802.1Q/802.1ad),
 * IPv4 (with options) or IPv6, then TCP or UDP; folds the extracted fields.
 * One parse is ~100 instructions, so the kernel parses the packet 64 times
 * (the barrier on `data` stops clang from hoisting the parse out of the loop)
 * (and KOPS_ROUNDS_PARSE_LAYERS passes per run) to make one run cost > 1 us. */
#ifndef KOPS_K_PARSE_LAYERS_H
#define KOPS_K_PARSE_LAYERS_H
#include "kops_bench.h"

/* One benchmark run = this many passes of the kernel over the packet
 * (see kops_fold in kops_bench.h). */
#define KOPS_ROUNDS_PARSE_LAYERS 8

static KOPS_INLINE __u64 kops_parse_once(const __u8 *data, const __u8 *data_end)
{
	const __u8 *p = data;
	__u64 h = 0;
	__u32 proto, l4proto;

	if (p + KOPS_ETH_HLEN > data_end)
		return 1;
	h = KOPS_LD32(p) ^ KOPS_LD16(p + 6);
	proto = KOPS_LDBE16(p + 12);
	p += KOPS_ETH_HLEN;
	for (int t = 0; t < 2; t++) {
		if (proto != KOPS_ETH_P_8021Q && proto != KOPS_ETH_P_8021AD)
			break;
		if (p + 4 > data_end)
			return 2;
		h += KOPS_LDBE16(p) & 0xfff;
		proto = KOPS_LDBE16(p + 2);
		p += 4;
	}
	if (proto == KOPS_ETH_P_IP) {
		if (p + 20 > data_end)
			return 3;
		__u32 ihl = (p[0] & 0xf) * 4;
		if (ihl < 20)
			return 4;
		l4proto = p[9];
		h += KOPS_LDBE16(p + 2);                    /* total length */
		h ^= KOPS_LDBE16(p + 6) & 0x1fff;           /* fragment offset */
		h += (__u64)KOPS_LDBE32(p + 12) << 1;       /* saddr */
		h += (__u64)KOPS_LDBE32(p + 16) << 2;       /* daddr */
		h += p[8];                                  /* ttl */
		p += ihl;
	} else if (proto == KOPS_ETH_P_IPV6) {
		if (p + 40 > data_end)
			return 5;
		l4proto = p[6];
		h += KOPS_LDBE16(p + 4);
		h ^= KOPS_LDBE64(p + 8) + KOPS_LDBE64(p + 16);
		h ^= KOPS_LDBE64(p + 24) - KOPS_LDBE64(p + 32);
		p += 40;
	} else {
		return 6 + proto;
	}
	if (l4proto == KOPS_IPPROTO_TCP) {
		if (p + 20 > data_end)
			return 7;
		h += KOPS_LDBE16(p) * 3 + KOPS_LDBE16(p + 2);
		h ^= KOPS_LDBE32(p + 4) + KOPS_LDBE32(p + 8);
		h += (p[12] >> 4) * 4 + (p[13] & 0x3f);
	} else if (l4proto == KOPS_IPPROTO_UDP) {
		if (p + 8 > data_end)
			return 8;
		h += KOPS_LDBE16(p) * 5 + KOPS_LDBE16(p + 2);
		h ^= KOPS_LDBE16(p + 4);
	} else {
		h ^= l4proto;
	}
	return h;
}

static KOPS_INLINE __u64 parse_layers_kernel(const __u8 *data, const __u8 *data_end)
{
	__u64 acc = 0;

	KOPS_NO_UNROLL
	for (__u32 r = 0; r < 64; r++) {
		const __u8 *d = data;
		KOPS_BARRIER_VAR(d);
		acc = acc * 31 + kops_parse_once(d, data_end);
	}
	return acc;
}
#endif
