// stresses: rotate64 (xxHash64 lanes: rotl 31/27/23/1/7/12/18/11) in a tc program
/* tc wrapper of bpf/kernels/xxhash64.h. One run = KOPS_ROUNDS_XXHASH64 passes
 * of the kernel, folded with kops_fold (the native build does the same).
 * Each pass is a BPF global function: the verifier checks it once, not once
 * per pass. The folded result goes to the .bss global kops_result; the
 * action is constant so the verifier never branches on the result (which
 * would mark it precise and defeat state pruning). */
#include "kops_bench.h"
#include "../kernels/xxhash64.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

__u64 kops_result; /* .bss: last folded result (compare with the native build) */
__u64 kops_passes; /* .bss: written by every pass, so clang cannot hoist a pass */

__attribute__((noinline)) __u64 kops_pass(struct __sk_buff *ctx)
{
	const __u8 *data = (const __u8 *)(long)ctx->data;
	const __u8 *data_end = (const __u8 *)(long)ctx->data_end;

	kops_passes++;
	return xxhash64_kernel(data, data_end);
}

SEC("tc")
int tc_xxhash64(struct __sk_buff *ctx)
{
	__u64 r = 0;

	KOPS_NO_UNROLL
	for (__u32 i = 0; i < KOPS_ROUNDS_XXHASH64; i++)
		r = kops_fold(r, kops_pass(ctx));
	kops_result = r;
	return 0 /* TC_ACT_OK */;
}
