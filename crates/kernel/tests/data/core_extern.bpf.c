// Test object for CO-RE relocations and externs (kops_kernel::core::relocate), built with
//   clang-19 -O2 -g -target bpf -mcpu=v3 -I/usr/include/x86_64-linux-gnu -c core_extern.bpf.c -o core_extern.bpf.o
// No vmlinux.h: local types with preserve_access_index, as libbpf's CO-RE docs allow.
// `struct xdp_md` is declared with data/data_end swapped: only CO-RE field-offset
// relocation against the kernel's BTF makes the packet accesses valid. The subprograms
// are laid out differently by libbpf (depth-first) and our loader (breadth-first).
#include <linux/types.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>

struct xdp_md {
	__u32 data_end;
	__u32 data;
	__u32 kops_no_such_field;
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

extern void *bpf_dynptr_slice(const struct bpf_dynptr *p, __u32 offset, void *buffer, __u32 buffer__szk) __ksym;
extern void *bpf_cast_to_kern_ctx(void *obj) __ksym;

// Ethertype bytes (via a dynptr slice) in bits 8..24, 2 when the dynptr has a size; an
// out-of-range slice must be NULL.
SEC("xdp")
int core_kfunc(struct xdp_md *ctx)
{
	struct bpf_dynptr ptr;
	__u8 buf[2];
	if (bpf_dynptr_from_xdp(ctx, 0, &ptr))
		return 0;
	__u8 *p = bpf_dynptr_slice(&ptr, 12, buf, sizeof(buf));
	if (!p)
		return 1;
	if (bpf_dynptr_slice(&ptr, 4096, buf, sizeof(buf)))
		return 3;
	return (p[0] << 16) | (p[1] << 8) | (bpf_dynptr_size(&ptr) > 0 ? 2 : 1);
}

// A kfunc the kops runtimes do not implement.
SEC("xdp")
int core_unsupported(struct xdp_md *ctx)
{
	return bpf_cast_to_kern_ctx(ctx) ? 2 : 1;
}

// Connection tracking: our runtimes answer every lookup "not found" (NULL, opts.error =
// -ENOENT), as the kernel does for test packets without a conntrack entry.
struct nf_conn {
	int _opaque;
};
struct bpf_sock_tuple {
	struct {
		__be32 saddr;
		__be32 daddr;
		__be16 sport;
		__be16 dport;
	} ipv4;
};
struct bpf_ct_opts {
	__s32 netns_id;
	__s32 error;
	__u8 l4proto;
	__u8 dir;
	__u16 ct_zone_id;
	__u8 ct_zone_dir;
	__u8 reserved[3];
};
extern struct nf_conn *bpf_xdp_ct_lookup(struct xdp_md *xdp_ctx, struct bpf_sock_tuple *bpf_tuple, __u32 tuple__sz,
					 struct bpf_ct_opts *opts, __u32 opts__sz) __ksym;
extern void bpf_ct_release(struct nf_conn *nfct) __ksym;

SEC("xdp")
int core_ct(struct xdp_md *ctx)
{
	struct bpf_sock_tuple t = {};
	struct bpf_ct_opts opts = { .netns_id = -1, .l4proto = 6 };
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	if (data + 38 > end)
		return 1;
	__builtin_memcpy(&t.ipv4.saddr, data + 26, 8);
	__builtin_memcpy(&t.ipv4.sport, data + 34, 4);
	struct nf_conn *ct = bpf_xdp_ct_lookup(ctx, &t, sizeof(t.ipv4), &opts, sizeof(opts));
	if (ct) {
		bpf_ct_release(ct);
		return 3;
	}
	return opts.error == -2 ? 2 : 4;
}

// A dynptr over an skb (tc).
struct __sk_buff {
	__u32 len;
} __attribute__((preserve_access_index));
extern int bpf_dynptr_from_skb(struct __sk_buff *s, __u64 flags, struct bpf_dynptr *ptr__uninit) __ksym;

SEC("tc")
int core_skb(struct __sk_buff *skb)
{
	struct bpf_dynptr ptr;
	__u8 buf[2];
	if (bpf_dynptr_from_skb(skb, 0, &ptr))
		return 0;
	__u8 *p = bpf_dynptr_slice(&ptr, 12, buf, sizeof(buf));
	if (!p)
		return 1;
	return (p[0] << 8) | p[1];
}

// A weak kfunc this kernel does not have: libbpf resolves its address to 0 and poisons
// the call, which the test makes unreachable (bpf_ksym_exists).
extern int bpf_kops_no_such_kfunc(struct xdp_md *ctx) __ksym __weak;

SEC("xdp")
int core_weak(struct xdp_md *ctx)
{
	if (&bpf_kops_no_such_kfunc)
		return bpf_kops_no_such_kfunc(ctx);
	return 2;
}

// A field this kernel's xdp_md lacks: its read is poisoned by libbpf, and the
// field-exists check makes it unreachable.
SEC("xdp")
int core_exists(struct xdp_md *ctx)
{
	if (bpf_core_field_exists(ctx->kops_no_such_field))
		return ctx->kops_no_such_field;
	return 2;
}

char LICENSE[] SEC("license") = "GPL";
