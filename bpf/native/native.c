/* Host build of every benchmark kernel in bpf/kernels/: the very same C the
 * eBPF programs run, so the `native` runtime can time the physical limit.
 *
 * For each program <prog> with a native counterpart this exports
 *     uint64_t kops_native_<prog>(const uint8_t *data, size_t len);
 * which computes exactly what the BPF program stores in its .bss global
 * `kops_result` for the packet data[0..len): KOPS_ROUNDS_<KERNEL> passes of
 * the kernel folded with kops_fold. The table kops_native_table (and
 * bpf/native/kernels.txt) maps program name -> symbol.
 *
 * Build: cc -O2 -I bpf/include -c bpf/native/native.c  (gcc or clang)
 */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "kops_bench.h"
#include "native.h"

#include "../kernels/bitfield_extract.h"
#include "../kernels/bpf2bpf_calls.h"
#include "../kernels/bsearch_rodata.h"
#include "../kernels/byte_recompose.h"
#include "../kernels/chacha_arx.h"
#include "../kernels/control_bytesum.h"
#include "../kernels/control_counter.h"
#include "../kernels/crc32_loop.h"
#include "../kernels/csum_rfc1071.h"
#include "../kernels/endian_parse.h"
#include "../kernels/jhash_lookup3.h"
#include "../kernels/murmur3_rot32.h"
#include "../kernels/opcode_interp.h"
#include "../kernels/parse_layers.h"
#include "../kernels/popcount_bitmap.h"
#include "../kernels/select_clamp.h"
#include "../kernels/select_sortnet.h"
#include "../kernels/siphash.h"
#include "../kernels/struct_copy.h"
#include "../kernels/struct_map.h"
#include "../kernels/toeplitz_rss.h"
#include "../kernels/xxhash64.h"

/* Same rounds as the BPF wrapper (KOPS_ROUNDS_<KERNEL>), same fold. */
#define KOPS_NATIVE(prog, kernel, ROUNDS)                                   \
	uint64_t kops_native_##prog(const uint8_t *data, size_t len)        \
	{                                                                   \
		const __u8 *end = data + len;                               \
		__u64 r = 0;                                                \
		for (__u32 i = 0; i < (ROUNDS); i++)                        \
			r = kops_fold(r, kernel##_kernel(data, end));       \
		return r;                                                   \
	}

KOPS_NATIVE(bitfield_extract, bitfield_extract, KOPS_ROUNDS_BITFIELD_EXTRACT)
KOPS_NATIVE(bpf2bpf_calls, bpf2bpf_calls, KOPS_ROUNDS_BPF2BPF_CALLS)
KOPS_NATIVE(bsearch_rodata, bsearch_rodata, KOPS_ROUNDS_BSEARCH_RODATA)
KOPS_NATIVE(byte_recompose, byte_recompose, KOPS_ROUNDS_BYTE_RECOMPOSE)
KOPS_NATIVE(chacha_arx, chacha_arx, KOPS_ROUNDS_CHACHA_ARX)
KOPS_NATIVE(control_bytesum, control_bytesum, KOPS_ROUNDS_CONTROL_BYTESUM)
KOPS_NATIVE(control_counter, control_counter, KOPS_ROUNDS_CONTROL_COUNTER)
KOPS_NATIVE(crc32_loop, crc32_loop, KOPS_ROUNDS_CRC32_LOOP)
KOPS_NATIVE(csum_rfc1071, csum_rfc1071, KOPS_ROUNDS_CSUM_RFC1071)
KOPS_NATIVE(endian_parse, endian_parse, KOPS_ROUNDS_ENDIAN_PARSE)
KOPS_NATIVE(jhash_lookup3, jhash_lookup3, KOPS_ROUNDS_JHASH_LOOKUP3)
KOPS_NATIVE(murmur3_rot32, murmur3_rot32, KOPS_ROUNDS_MURMUR3_ROT32)
KOPS_NATIVE(opcode_interp, opcode_interp, KOPS_ROUNDS_OPCODE_INTERP)
KOPS_NATIVE(parse_layers, parse_layers, KOPS_ROUNDS_PARSE_LAYERS)
KOPS_NATIVE(popcount_bitmap, popcount_bitmap, KOPS_ROUNDS_POPCOUNT_BITMAP)
KOPS_NATIVE(select_clamp, select_clamp, KOPS_ROUNDS_SELECT_CLAMP)
KOPS_NATIVE(select_sortnet, select_sortnet, KOPS_ROUNDS_SELECT_SORTNET)
KOPS_NATIVE(siphash, siphash, KOPS_ROUNDS_SIPHASH)
KOPS_NATIVE(struct_copy, struct_copy, KOPS_ROUNDS_STRUCT_COPY)
KOPS_NATIVE(toeplitz_rss, toeplitz_rss, KOPS_ROUNDS_TOEPLITZ_RSS)
/* tc programs: same kernels as xdp ones, skb->data..data_end = the packet */
KOPS_NATIVE(tc_xxhash64, xxhash64, KOPS_ROUNDS_XXHASH64)
KOPS_NATIVE(tc_parse_layers, parse_layers, KOPS_ROUNDS_PARSE_LAYERS)

/* struct_map: the record is a map value in BPF; here a static buffer. Every
 * block starts by zeroing it, so the result does not depend on its history. */
static struct kops_flow_rec kops_native_rec;
uint64_t kops_native_struct_map(const uint8_t *data, size_t len)
{
	__u64 r = 0;

	for (__u32 i = 0; i < KOPS_ROUNDS_STRUCT_MAP; i++)
		r = kops_fold(r, struct_map_kernel(data, data + len, &kops_native_rec));
	return r;
}

/* socket_popcount: a socket filter sees the skb from the network header on
 * (BPF_PROG_TEST_RUN pulls the 14-byte Ethernet header for socket filters),
 * so `data` (a whole Ethernet frame, like for every other entry) is skipped
 * by 14 bytes. The program copies 256 bytes of that (64 if shorter, nothing
 * below 64) into a zeroed stack buffer. Keep in sync with
 * bpf/progs/socket_popcount.bpf.c (KOPS_ROUNDS_SOCKET_POPCOUNT = 4). */
uint64_t kops_native_socket_popcount(const uint8_t *data, size_t len)
{
	__u64 buf[KOPS_POPCOUNT_BUF_WORDS];
	__u64 r = 0;

	if (len < KOPS_ETH_HLEN)
		len = 0;
	else {
		data += KOPS_ETH_HLEN;
		len -= KOPS_ETH_HLEN;
	}

	for (__u32 i = 0; i < 4; i++) {
		memset(buf, 0, sizeof(buf));
		if (len >= sizeof(buf))
			memcpy(buf, data, sizeof(buf));
		else if (len >= 64)
			memcpy(buf, data, 64);
		r = kops_fold(r, popcount_buf_kernel(buf));
	}
	return r;
}

const struct kops_native_entry kops_native_table[] = {
#define E(p) { #p, "kops_native_" #p, kops_native_##p }
	E(bitfield_extract), E(bpf2bpf_calls), E(bsearch_rodata), E(byte_recompose),
	E(chacha_arx), E(control_bytesum), E(control_counter), E(crc32_loop),
	E(csum_rfc1071), E(endian_parse), E(jhash_lookup3), E(murmur3_rot32),
	E(opcode_interp), E(parse_layers), E(popcount_bitmap), E(select_clamp),
	E(select_sortnet), E(siphash), E(socket_popcount), E(struct_copy),
	E(struct_map), E(tc_parse_layers), E(tc_xxhash64), E(toeplitz_rss),
#undef E
	{ 0, 0, 0 },
};
