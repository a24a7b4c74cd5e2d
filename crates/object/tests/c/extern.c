// A kconfig extern: libbpf resolves it at load time; our loader keeps the reference.
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

extern unsigned int LINUX_KERNEL_VERSION __attribute__((section(".kconfig")));

SEC("xdp")
int uses_kconfig(struct xdp_md *ctx)
{
	return LINUX_KERNEL_VERSION > 0x50000 ? 2 : 1;
}

char _license[] SEC("license") = "GPL";
