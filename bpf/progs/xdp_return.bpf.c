// stresses: control: no idiom (harness floor: returns XDP_PASS at once)
#include "kops_bench.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

SEC("xdp")
int xdp_return(struct xdp_md *ctx)
{
	return XDP_PASS;
}
