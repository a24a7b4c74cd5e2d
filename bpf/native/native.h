/* Exported interface of bpf/native/native.c (see there). */
#ifndef KOPS_NATIVE_H
#define KOPS_NATIVE_H
#include <stddef.h>
#include <stdint.h>

typedef uint64_t (*kops_native_fn)(const uint8_t *data, size_t len);

struct kops_native_entry {
	const char *prog;   /* BPF program (and object) name */
	const char *symbol; /* exported function name */
	kops_native_fn fn;
};

/* Terminated by an entry with prog == NULL. */
extern const struct kops_native_entry kops_native_table[];

#define KOPS_NATIVE_DECL(p) uint64_t kops_native_##p(const uint8_t *data, size_t len);
KOPS_NATIVE_DECL(bitfield_extract)
KOPS_NATIVE_DECL(bpf2bpf_calls)
KOPS_NATIVE_DECL(bsearch_rodata)
KOPS_NATIVE_DECL(byte_recompose)
KOPS_NATIVE_DECL(chacha_arx)
KOPS_NATIVE_DECL(control_bytesum)
KOPS_NATIVE_DECL(control_counter)
KOPS_NATIVE_DECL(crc32_loop)
KOPS_NATIVE_DECL(csum_rfc1071)
KOPS_NATIVE_DECL(endian_parse)
KOPS_NATIVE_DECL(jhash_lookup3)
KOPS_NATIVE_DECL(murmur3_rot32)
KOPS_NATIVE_DECL(opcode_interp)
KOPS_NATIVE_DECL(parse_layers)
KOPS_NATIVE_DECL(popcount_bitmap)
KOPS_NATIVE_DECL(select_clamp)
KOPS_NATIVE_DECL(select_sortnet)
KOPS_NATIVE_DECL(siphash)
KOPS_NATIVE_DECL(socket_popcount)
KOPS_NATIVE_DECL(struct_copy)
KOPS_NATIVE_DECL(struct_map)
KOPS_NATIVE_DECL(tc_parse_layers)
KOPS_NATIVE_DECL(tc_xxhash64)
KOPS_NATIVE_DECL(toeplitz_rss)
#undef KOPS_NATIVE_DECL
#endif
