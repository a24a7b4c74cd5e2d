/* Internet checksum (RFC 1071) over the whole packet, two ways in one pass:
 * 16-bit words into a 32-bit sum, and 32-bit words into a 64-bit sum with
 * end-around carry fold. Both must agree (returned side by side). One pass
 * only: a second loop would be re-verified for every exit of the first. */
#ifndef KOPS_K_CSUM_RFC1071_H
#define KOPS_K_CSUM_RFC1071_H
#include "kops_bench.h"

/* One benchmark run = this many passes of the kernel over the packet
 * (see kops_fold in kops_bench.h). */
#define KOPS_ROUNDS_CSUM_RFC1071 8

static KOPS_INLINE __u16 kops_csum_fold32(__u32 sum)
{
	sum = (sum & 0xffff) + (sum >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	return (__u16)~sum;
}

static KOPS_INLINE __u64 csum_rfc1071_kernel(const __u8 *data, const __u8 *data_end)
{
	const __u8 *p = data;
	__u32 sum16 = 0;
	__u64 sum32 = 0;

	for (__u32 i = 0; i < 512; i++) {
		if (p + 4 > data_end)
			break;
		sum16 += KOPS_LD16(p);
		sum16 += KOPS_LD16(p + 2);
		sum32 += KOPS_LD32(p);
		p += 4;
	}
	for (__u32 j = 0; j < 3; j++) {
		if (p + 1 > data_end)
			break;
		/* byte j of the tail is the low (j even) or high (j odd) half of
		 * a little-endian 16-bit word */
		__u32 v = (__u32)p[0] << (8 * (j & 1));
		sum16 += v;
		sum32 += v;
		p++;
	}
	sum32 = (sum32 & 0xffffffffULL) + (sum32 >> 32);
	sum32 = (sum32 & 0xffffffffULL) + (sum32 >> 32);
	return ((__u64)kops_csum_fold32(sum16) << 16) | kops_csum_fold32((__u32)sum32);
}
#endif
