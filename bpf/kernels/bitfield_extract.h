/* Bit-field extraction: shift+mask of header-like fields out of 32-bit and
 * 64-bit words (IPv4 version/IHL, fragment flags/offset, TCP data offset and
 * flags, VLAN PCP/VID, and wider 64-bit fields). Little-endian loads, so
 * the only idiom here is (x >> k) & mask. */
#ifndef KOPS_K_BITFIELD_EXTRACT_H
#define KOPS_K_BITFIELD_EXTRACT_H
#include "kops_bench.h"

/* One benchmark run = this many passes of the kernel over the packet
 * (see kops_fold in kops_bench.h). */
#define KOPS_ROUNDS_BITFIELD_EXTRACT 4

static KOPS_INLINE __u64 bitfield_extract_kernel(const __u8 *data, const __u8 *data_end)
{
	const __u8 *p = data;
	__u64 acc = 0, acc2 = 0;

	for (__u32 i = 0; i < 256; i++) {
		if (p + 8 > data_end)
			break;
		__u32 w = KOPS_LD32(p);
		__u64 q = KOPS_LD64(p);
		acc += (w >> 4) & 0xf;     /* version */
		acc += (w >> 8) & 0x3f;    /* dscp-like */
		acc ^= (w >> 13) & 0x7;    /* fragment flags */
		acc += (w >> 16) & 0x1fff; /* fragment offset */
		acc += (w >> 12) & 0xf;    /* tcp data offset */
		acc ^= (w >> 21) & 0x1ff;  /* tcp flags */
		acc += (w >> 1) & 0x7;     /* vlan pcp */
		acc2 += (q >> 3) & 0xfff;  /* vlan vid */
		acc2 ^= (q >> 20) & 0xfffff;
		acc2 += (q >> 33) & 0x7fff;
		acc2 += (q >> 47) & 0x3ff;
		acc2 ^= (q >> 40) & 0xffff;
		p += 8;
	}
	return acc * 0x100000001ULL + acc2;
}
#endif
