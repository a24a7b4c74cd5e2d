/* A tiny register-machine interpreter: every packet byte is an instruction,
 * the low 4 bits select one of 16 operations (a switch, which clang -target
 * bpf lowers to a compare tree: BPF has no indirect jump), the high 4 bits
 * are an immediate. Only the first 768 bytes are interpreted: every step has
 * 16 paths for the verifier (~500 verified insns per byte), so the whole
 * packet would come close to the 1M-insn limit; a run is 2 passes instead. */
#ifndef KOPS_K_OPCODE_INTERP_H
#define KOPS_K_OPCODE_INTERP_H
#include "kops_bench.h"

/* One benchmark run = this many passes of the kernel over the packet
 * (see kops_fold in kops_bench.h). */
#define KOPS_ROUNDS_OPCODE_INTERP 2

static KOPS_INLINE __u64 opcode_interp_kernel(const __u8 *data, const __u8 *data_end)
{
	const __u8 *p = data;
	__u64 a = 0x0123456789abcdefULL, b = 0x1000, c = 7, d = 0;

	for (__u32 i = 0; i < 768; i++) {
		if (p + 1 > data_end)
			break;
		__u32 insn = p[0];
		__u32 imm = insn >> 4;
		switch (insn & 15) {
		case 0: a += b; break;
		case 1: a ^= imm; break;
		case 2: b = a - c; break;
		case 3: c += imm * 3; break;
		case 4: a <<= (imm & 7); break;
		case 5: a >>= (imm & 7) + 1; break;
		case 6: d += a; break;
		case 7: b ^= d; break;
		case 8: a = a * 9 + c; break;
		case 9: c = b | imm; break;
		case 10: d -= c; break;
		case 11: a = ~a; break;
		case 12: b += imm << 8; break;
		case 13: if (a > b) d ^= 0x55; break;
		case 14: c = d + 1; break;
		default: a ^= b ^ c; break;
		}
		p++;
	}
	return a ^ b ^ c ^ d;
}
#endif
