/* Big-endian field parsing: every 16-byte step reads a 16-bit, a 16-bit, a
 * 32-bit and a 64-bit network-order field, each as load + byte swap
 * (bpf_ntohs / bpf_ntohl / be64toh of a load). The loads never overlap, so
 * clang cannot forward one into another. */
#ifndef KOPS_K_ENDIAN_PARSE_H
#define KOPS_K_ENDIAN_PARSE_H
#include "kops_bench.h"

/* One benchmark run = this many passes of the kernel over the packet
 * (see kops_fold in kops_bench.h). */
#define KOPS_ROUNDS_ENDIAN_PARSE 16

static KOPS_INLINE __u64 endian_parse_kernel(const __u8 *data, const __u8 *data_end)
{
	const __u8 *p = data;
	__u64 acc = 0, x = 0;
	__u32 y = 0;

	for (__u32 i = 0; i < 128; i++) {
		if (p + 16 > data_end)
			break;
		__u16 len = KOPS_LDBE16(p);
		__u16 port = KOPS_LDBE16(p + 2);
		__u32 addr = KOPS_LDBE32(p + 4);
		__u64 seq = KOPS_LDBE64(p + 8);
		acc += len + (__u64)port * 3;
		y = (y ^ addr) + 0x9e3779b9u;
		x += seq ^ acc;
		p += 16;
	}
	return acc ^ x ^ ((__u64)y << 16);
}
#endif
