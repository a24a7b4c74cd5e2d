/* Struct copies and zeroing into a 128-byte record that lives in a map value
 * (the BPF wrapper passes a bpf_map_lookup_elem result; the native build
 * passes a static buffer). Per 64-byte packet block: zero the record, copy
 * a 16-byte key, a 32-byte header and the 64-byte block into it, zero part
 * of it again. Documented variant: extra argument `rec`. */
#ifndef KOPS_K_STRUCT_MAP_H
#define KOPS_K_STRUCT_MAP_H
#include "kops_bench.h"

/* One benchmark run = this many passes of the kernel over the packet
 * (see kops_fold in kops_bench.h). */
#define KOPS_ROUNDS_STRUCT_MAP 12

struct kops_flow_rec {
	__u64 key[2];   /* 16 */
	__u64 hdr[4];   /* 32 */
	__u64 body[8];  /* 64 */
	__u64 stats[2]; /* 16 */
};

struct kops_key16 { __u64 w[2]; };
struct kops_hdr32 { __u64 w[4]; };
struct kops_body64 { __u64 w[8]; };

static KOPS_INLINE __u64 struct_map_kernel(const __u8 *data, const __u8 *data_end,
					   struct kops_flow_rec *rec)
{
	const __u8 *p = data;
	__u64 acc = 0;

	for (__u32 i = 0; i < 32; i++) {
		if (p + 64 > data_end)
			break;
		__builtin_memset(rec, 0, sizeof(*rec));
		KOPS_BARRIER_MEM(rec);
		KOPS_COPY_FROM((struct kops_key16 *)rec->key, p, struct kops_key16);
		KOPS_COPY_FROM((struct kops_hdr32 *)rec->hdr, p + 16, struct kops_hdr32);
		KOPS_COPY_FROM((struct kops_body64 *)rec->body, p, struct kops_body64);
		KOPS_BARRIER_MEM(rec);
		rec->stats[0] += rec->key[0] ^ rec->hdr[3];
		rec->stats[1] = i;
		acc += rec->stats[0] + rec->body[7];
		__builtin_memset(rec->hdr, 0, sizeof(rec->hdr));
		KOPS_BARRIER_MEM(rec);
		p += 64;
	}
	return acc;
}
#endif
