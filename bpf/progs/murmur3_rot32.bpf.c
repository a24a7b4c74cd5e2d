// stresses: rotate32 (MurmurHash3 x86_32: rotl32 13/15)
/* xdp wrapper of bpf/kernels/murmur3_rot32.h. One run = KOPS_ROUNDS_MURMUR3_ROT32 passes
 * of the kernel, folded with kops_fold (the native build does the same).
 * Each pass is a BPF global function: the verifier checks it once, not once
 * per pass. The folded result goes to the .bss global kops_result; the
 * action is constant so the verifier never branches on the result (which
 * would mark it precise and defeat state pruning). */
#include "kops_bench.h"
#include "../kernels/murmur3_rot32.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

__u64 kops_result; /* .bss: last folded result (compare with the native build) */
__u64 kops_passes; /* .bss: written by every pass, so clang cannot hoist a pass */

__attribute__((noinline)) __u64 kops_pass(struct xdp_md *ctx)
{
	const __u8 *data = (const __u8 *)(long)ctx->data;
	const __u8 *data_end = (const __u8 *)(long)ctx->data_end;

	kops_passes++;
	return murmur3_rot32_kernel(data, data_end);
}

SEC("xdp")
int murmur3_rot32(struct xdp_md *ctx)
{
	__u64 r = 0;

	KOPS_NO_UNROLL
	for (__u32 i = 0; i < KOPS_ROUNDS_MURMUR3_ROT32; i++)
		r = kops_fold(r, kops_pass(ctx));
	kops_result = r;
	return XDP_PASS;
}
