// Test object for CO-RE relocations and externs (kops_kernel::core::relocate), built with
//   clang-19 -O2 -g -target bpf -mcpu=v3 -I/usr/include/x86_64-linux-gnu -c core_extern.bpf.c -o core_extern.bpf.o
// No vmlinux.h: local types with preserve_access_index, as libbpf's CO-RE docs allow.
// `struct xdp_md` is declared with data/data_end swapped: only CO-RE field-offset
// relocation against the kernel's BTF makes the packet accesses valid. The subprograms
// are laid out differently by libbpf (depth-first) and our loader (breadth-first).
#include <linux/types.h>
#include <bpf/bpf_helpers.h>

struct xdp_md {
	__u32 data_end;
	__u32 data;
} __attribute__((preserve_access_index));

struct bpf_dynptr {
	__u64 __opaque[2];
} __attribute__((aligned(8)));

extern unsigned int LINUX_KERNEL_VERSION __kconfig;
extern int CONFIG_KOPS_NO_SUCH_OPTION __kconfig __weak;
extern int bpf_dynptr_from_xdp(struct xdp_md *x, __u64 flags, struct bpf_dynptr *ptr__uninit) __ksym;
extern __u32 bpf_dynptr_size(const struct bpf_dynptr *p) __ksym;

static __attribute__((noinline)) int third(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	if (data + 2 > end)
		return 0;
	return ((__u8 *)data)[1];
}

static __attribute__((noinline)) int first(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	if (data + 1 > end)
		return 0;
	return ((__u8 *)data)[0] + third(ctx);
}

static __attribute__((noinline)) int second(struct xdp_md *ctx)
{
	return (int)(ctx->data_end - ctx->data);
}

// XDP_PASS (2) on this kernel; packet bytes and length in the high bits so runtimes can
// be compared on it.
SEC("xdp")
int core_fields(struct xdp_md *ctx)
{
	int r = first(ctx) + second(ctx);
	if (LINUX_KERNEL_VERSION == 0 || CONFIG_KOPS_NO_SUCH_OPTION != 0)
		return 0;
	return (r << 8) | 2;
}

SEC("xdp")
int core_kfunc(struct xdp_md *ctx)
{
	struct bpf_dynptr ptr;
	if (bpf_dynptr_from_xdp(ctx, 0, &ptr))
		return 0;
	return bpf_dynptr_size(&ptr) > 0 ? 2 : 1;
}

char LICENSE[] SEC("license") = "GPL";
