// A kfunc no kernel has, not weak: relocation must fail naming it (kops_kernel::core).
// Built like core_extern.bpf.c.
#include <linux/types.h>
#include <bpf/bpf_helpers.h>
struct xdp_md;
extern int bpf_kops_no_such_kfunc(struct xdp_md *ctx) __ksym;
SEC("xdp")
int nope(struct xdp_md *ctx)
{
	return bpf_kops_no_such_kfunc(ctx);
}
char LICENSE[] SEC("license") = "GPL";
