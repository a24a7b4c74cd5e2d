/* Struct copies and zeroing on the stack: per 64-byte packet block, copy it
 * into a stack struct, zero a 128-byte struct, copy the block into both
 * halves, then copy 16/32/48-byte sub-structs around. KOPS_BARRIER_MEM keeps
 * every struct in memory (otherwise SROA turns the copies into registers). */
#ifndef KOPS_K_STRUCT_COPY_H
#define KOPS_K_STRUCT_COPY_H
#include "kops_bench.h"

/* One benchmark run = this many passes of the kernel over the packet
 * (see kops_fold in kops_bench.h). */
#define KOPS_ROUNDS_STRUCT_COPY 8

struct kops_s16 { __u64 w[2]; };
struct kops_s32 { __u64 w[4]; };
struct kops_s48 { __u64 w[6]; };
struct kops_s64 { __u64 w[8]; };
struct kops_s128 { __u64 w[16]; };

static KOPS_INLINE __u64 struct_copy_kernel(const __u8 *data, const __u8 *data_end)
{
	const __u8 *p = data;
	__u64 acc = 0;

	for (__u32 i = 0; i < 32; i++) {
		if (p + 64 > data_end)
			break;
		struct kops_s64 blk;
		struct kops_s128 big;
		struct kops_s48 mid;
		struct kops_s32 q;
		struct kops_s16 s;

		KOPS_COPY_FROM(&blk, p, struct kops_s64);
		KOPS_BARRIER_MEM(&blk);
		__builtin_memset(&big, 0, sizeof(big));
		KOPS_BARRIER_MEM(&big);
		__builtin_memcpy(&big.w[0], &blk, sizeof(blk));
		__builtin_memcpy(&big.w[8], &blk, sizeof(blk));
		KOPS_BARRIER_MEM(&big);
		__builtin_memcpy(&mid, &big.w[(i & 1) * 2], sizeof(mid));
		KOPS_BARRIER_MEM(&mid);
		__builtin_memcpy(&q, &mid.w[1], sizeof(q));
		KOPS_BARRIER_MEM(&q);
		__builtin_memcpy(&s, &q.w[2], sizeof(s));
		__builtin_memset(&q, 0, sizeof(q));
		KOPS_BARRIER_MEM(&s);
		KOPS_BARRIER_MEM(&q);
		acc += big.w[15] ^ mid.w[5] ^ s.w[0] ^ (s.w[1] << 1) ^ q.w[3];
		p += 64;
	}
	return acc;
}
#endif
