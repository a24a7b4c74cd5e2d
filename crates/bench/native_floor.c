/* The native runtime's harness floor: the same call the benchmark kernels get
 * (an opaque call through a pointer with the packet), doing nothing, returning
 * XDP_PASS like bpf/progs/xdp_return.bpf.c. Built with native.c (build.rs). */
#include <stddef.h>
#include <stdint.h>

uint64_t kops_native_floor(const uint8_t *data, size_t len)
{
	(void)data;
	(void)len;
	return 2; /* XDP_PASS */
}
