/* bpf-to-bpf calls: static __noinline functions (a 64-bit mixer called once
 * per 8-byte word, a block function that takes packet pointers and is
 * called once per 64-byte block, and a finalizer). */
#ifndef KOPS_K_BPF2BPF_CALLS_H
#define KOPS_K_BPF2BPF_CALLS_H
#include "kops_bench.h"

/* One benchmark run = this many passes of the kernel over the packet
 * (see kops_fold in kops_bench.h). */
#define KOPS_ROUNDS_BPF2BPF_CALLS 1

static KOPS_NOINLINE __u64 kops_b2b_mix(__u64 h, __u64 v)
{
	h ^= v * 0x9e3779b97f4a7c15ULL;
	h ^= h >> 29;
	return h * 0xbf58476d1ce4e5b9ULL + 1;
}

static KOPS_NOINLINE __u64 kops_b2b_block(const __u8 *p, const __u8 *data_end, __u64 h)
{
	for (int j = 0; j < 8; j++) {
		if (p + 8 > data_end)
			break;
		h = kops_b2b_mix(h, KOPS_LD64(p));
		p += 8;
	}
	return h;
}

static KOPS_NOINLINE __u64 kops_b2b_final(__u64 h, __u64 n)
{
	h ^= n;
	h ^= h >> 31;
	h *= 0x94d049bb133111ebULL;
	return h ^ (h >> 33);
}

static KOPS_INLINE __u64 bpf2bpf_calls_kernel(const __u8 *data, const __u8 *data_end)
{
	const __u8 *p = data;
	__u64 h = 0x243f6a8885a308d3ULL, n = 0;

	for (__u32 i = 0; i < 32; i++) {
		if (p + 64 > data_end)
			break;
		h = kops_b2b_block(p, data_end, h);
		p += 64;
		n++;
	}
	for (__u32 i = 0; i < 8; i++) {
		if (p + 8 > data_end)
			break;
		h = kops_b2b_mix(h, KOPS_LD64(p));
		p += 8;
	}
	return kops_b2b_final(h, n);
}
#endif
