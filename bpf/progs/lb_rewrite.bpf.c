// stresses: load-balancer header rewrite (MAC swap, daddr rewrite, incremental IPv4 + full L4 checksum, XDP_TX)
/* A layer-4 load balancer: Jenkins hash of the 5-tuple picks one of 16
 * backends (BTF array map), the destination MAC/IP are rewritten to the
 * backend's, the source MAC becomes the old destination MAC, the IPv4
 * header checksum is updated incrementally (RFC 1624) and the TCP/UDP
 * checksum is recomputed over pseudo-header + the whole L4 segment (to the
 * end of the packet), then XDP_TX. Needs Ethernet+IPv4+TCP/UDP (others:
 * XDP_PASS). No native counterpart (map lookup, packet writes).
 * Backend entries are all-zero unless the loader fills the map; the rewrite
 * happens either way. Per-CPU counters: [0] rewritten, [1] passed.
 * One pass is ~0.3 us, so a run applies the balancer KOPS_ROUNDS_LB_REWRITE
 * times to the (already rewritten) packet; the last pass decides. */
#include "kops_bench.h"
#include "../kernels/jhash_lookup3.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

struct kops_backend {
	__u32 addr;  /* network order */
	__u8 mac[6];
	__u16 pad;
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 16);
	__type(key, __u32);
	__type(value, struct kops_backend);
} kops_lb_backends SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 2);
	__type(key, __u32);
	__type(value, __u64);
} kops_lb_stats SEC(".maps");

static __always_inline int kops_lb_count(__u32 idx, int action)
{
	__u64 *c = bpf_map_lookup_elem(&kops_lb_stats, &idx);

	if (c)
		*c += 1;
	return action;
}

static __always_inline __u16 kops_csum_fold(__u64 s)
{
	s = (s & 0xffffffff) + (s >> 32);
	s = (s & 0xffff) + (s >> 16);
	s = (s & 0xffff) + (s >> 16);
	s = (s & 0xffff) + (s >> 16);
	return (__u16)~s;
}

/* One pass = one load-balancing decision + rewrite (a BPF global function,
 * verified once). */
__attribute__((noinline)) int kops_lb_pass(struct xdp_md *ctx)
{
	__u8 *data = (__u8 *)(long)ctx->data;
	__u8 *data_end = (__u8 *)(long)ctx->data_end;
	__u8 *ip, *l4, *p, tmp[6];
	__u32 ihl, proto, idx, old_daddr, new_daddr, l4len = 0;
	__u64 sum = 0;
	struct kops_backend *be;

	if (data + KOPS_ETH_HLEN + 20 > data_end || KOPS_LDBE16(data + 12) != KOPS_ETH_P_IP)
		return kops_lb_count(1, XDP_PASS);
	ip = data + KOPS_ETH_HLEN;
	ihl = (ip[0] & 0xf) * 4;
	proto = ip[9];
	if (ihl < 20 || (proto != KOPS_IPPROTO_TCP && proto != KOPS_IPPROTO_UDP))
		return kops_lb_count(1, XDP_PASS);
	l4 = ip + ihl;
	if (l4 + 20 > data_end)
		return kops_lb_count(1, XDP_PASS);

	idx = kops_jhash_3words(KOPS_LD32(ip + 12), KOPS_LD32(ip + 16),
				KOPS_LD32(l4), proto) & 15;
	be = bpf_map_lookup_elem(&kops_lb_backends, &idx);
	if (!be)
		return XDP_ABORTED;

	/* MAC: src <- old dst, dst <- backend */
	__builtin_memcpy(tmp, data, 6);
	__builtin_memcpy(data, be->mac, 6);
	__builtin_memcpy(data + 6, tmp, 6);

	/* IPv4 daddr + incremental header checksum (RFC 1624: HC' = ~(~HC + ~m + m')) */
	old_daddr = KOPS_LD32(ip + 16);
	new_daddr = be->addr;
	KOPS_ST32(ip + 16, new_daddr);
	sum = (__u16)~KOPS_LD16(ip + 10);
	sum += (__u16)~old_daddr + (__u16)~(old_daddr >> 16);
	sum += (new_daddr & 0xffff) + (new_daddr >> 16);
	KOPS_ST16(ip + 10, kops_csum_fold(sum));

	/* L4 checksum from scratch: zero the field, sum the segment. */
	if (proto == KOPS_IPPROTO_UDP)
		KOPS_ST16(l4 + 6, 0);
	else
		KOPS_ST16(l4 + 16, 0);
	sum = 0;
	p = l4;
	for (__u32 i = 0; i < 1024; i++) {
		if (p + 2 > data_end)
			break;
		sum += KOPS_LD16(p);
		p += 2;
		l4len += 2;
	}
	if (p + 1 <= data_end) {
		sum += p[0];
		l4len++;
	}
	/* pseudo-header: saddr, daddr, zero+proto, L4 length (all network order;
	 * summing little-endian halves is the same one's-complement sum) */
	sum += (KOPS_LD32(ip + 12) & 0xffff) + (KOPS_LD32(ip + 12) >> 16);
	sum += (new_daddr & 0xffff) + (new_daddr >> 16);
	sum += kops_htons(proto) + kops_htons(l4len);
	__u16 c = kops_csum_fold(sum);
	if (proto == KOPS_IPPROTO_UDP) {
		if (l4 + 8 > data_end)
			return XDP_ABORTED;
		KOPS_ST16(l4 + 6, c ? c : 0xffff);
	} else {
		KOPS_ST16(l4 + 16, c);
	}
	return kops_lb_count(0, XDP_TX);
}

#define KOPS_ROUNDS_LB_REWRITE 6

SEC("xdp")
int lb_rewrite(struct xdp_md *ctx)
{
	int action = XDP_PASS;

	KOPS_NO_UNROLL
	for (__u32 i = 0; i < KOPS_ROUNDS_LB_REWRITE; i++)
		action = kops_lb_pass(ctx);
	return action;
}
