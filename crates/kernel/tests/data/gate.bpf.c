// Test object for the verification gate (built with bpf/build.sh's flags, committed with
// its source): `evil` stores to a wild address, `spin` never ends, `good` reads the packet
// within bounds and counts in a map. Native runtimes must refuse the first two.
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} hits SEC(".maps");

SEC("xdp")
int evil(struct xdp_md *ctx)
{
	*(volatile unsigned long *)0x4141414141410000UL = 1;
	return XDP_PASS;
}

SEC("xdp")
int spin(struct xdp_md *ctx)
{
	volatile int i = 0;
	for (;;)
		i++;
	return XDP_PASS;
}

SEC("xdp")
int good(struct xdp_md *ctx)
{
	unsigned char *p = (void *)(long)ctx->data, *end = (void *)(long)ctx->data_end;
	__u32 k = 0;
	__u64 *v = bpf_map_lookup_elem(&hits, &k);
	if (v)
		*v += 1;
	if (p + 1 > end)
		return XDP_ABORTED;
	return p[0] & 1 ? XDP_DROP : XDP_PASS;
}

char _license[] SEC("license") = "GPL";
