// stresses: rotate64 (SipHash-2-4 rounds: rotl 13/16/17/21/32)
/* xdp wrapper of bpf/kernels/siphash.h. One run = KOPS_ROUNDS_SIPHASH passes
 * of the kernel, folded with kops_fold (the native build does the same).
 * Each pass is a BPF global function: the verifier checks it once, not once
 * per pass. The folded result goes to the .bss global kops_result; the
 * action is constant so the verifier never branches on the result (which
 * would mark it precise and defeat state pruning). */
#include "kops_bench.h"
#include "../kernels/siphash.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

__u64 kops_result; /* .bss: last folded result (compare with the native build) */
__u64 kops_passes; /* .bss: written by every pass, so clang cannot hoist a pass */
__u64 kops_runs = 1; /* .data: run counter (starts at 1 so it is not .bss) */

__attribute__((noinline)) __u64 kops_pass(struct xdp_md *ctx)
{
	const __u8 *data = (const __u8 *)(long)ctx->data;
	const __u8 *data_end = (const __u8 *)(long)ctx->data_end;

	kops_passes++;
	return siphash_kernel(data, data_end);
}

SEC("xdp")
int siphash(struct xdp_md *ctx)
{
	__u64 r = 0;

	KOPS_NO_UNROLL
	for (__u32 i = 0; i < KOPS_ROUNDS_SIPHASH; i++)
		r = kops_fold(r, kops_pass(ctx));
	kops_result = r;
	kops_runs++;
	return XDP_PASS;
}
