// stresses: hash-map firewall (5-tuple bpf_map_lookup_elem with wildcard fallbacks, per-CPU array counters)
/* A small stateless firewall. Rules live in a BTF hash map keyed by the IPv4
 * 5-tuple; a miss falls back to two wildcard keys (any source port, then any
 * port). Verdict counters live in a per-CPU array. The packet's own 5-tuple
 * decides the action; the L4 payload is then read as a batch of 16-byte flow
 * records (saddr, daddr, sport, dport, proto, 3 pad) that are classified the
 * same way (like a firewall checking an aggregated batch), up to 32.
 * Needs Ethernet+IPv4+TCP/UDP (other packets: XDP_PASS, counted as "other").
 * No native counterpart (map lookups). With an empty rule map every lookup
 * misses, so each record costs three hash lookups. */
#include "kops_bench.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

struct kops_fw_key {
	__u32 saddr;
	__u32 daddr;
	__u16 sport;
	__u16 dport;
	__u8 proto;
	__u8 pad[3];
};

enum { KOPS_FW_PASS, KOPS_FW_DROP, KOPS_FW_MISS, KOPS_FW_OTHER, KOPS_FW_NSTATS };

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, struct kops_fw_key);
	__type(value, __u32); /* KOPS_FW_PASS or KOPS_FW_DROP */
} kops_fw_rules SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, KOPS_FW_NSTATS);
	__type(key, __u32);
	__type(value, __u64);
} kops_fw_stats SEC(".maps");

/* .rodata: verdict on a miss (loader may change it before load). */
const volatile __u32 kops_fw_default = KOPS_FW_PASS;

static __always_inline __u32 kops_fw_classify(struct kops_fw_key *k)
{
	__u32 *v = bpf_map_lookup_elem(&kops_fw_rules, k);

	if (!v) {
		k->sport = 0;
		v = bpf_map_lookup_elem(&kops_fw_rules, k);
	}
	if (!v) {
		k->dport = 0;
		v = bpf_map_lookup_elem(&kops_fw_rules, k);
	}
	return v ? *v : KOPS_FW_MISS;
}

static __always_inline void kops_fw_count(__u32 idx)
{
	__u64 *c = bpf_map_lookup_elem(&kops_fw_stats, &idx);

	if (c)
		*c += 1;
}

SEC("xdp")
int firewall_hash(struct xdp_md *ctx)
{
	const __u8 *data = (const __u8 *)(long)ctx->data;
	const __u8 *data_end = (const __u8 *)(long)ctx->data_end;
	struct kops_fw_key key;
	const __u8 *ip, *l4, *p;
	__u32 verdict, ihl;

	if (data + KOPS_ETH_HLEN + 20 > data_end ||
	    KOPS_LDBE16(data + 12) != KOPS_ETH_P_IP) {
		kops_fw_count(KOPS_FW_OTHER);
		return XDP_PASS;
	}
	ip = data + KOPS_ETH_HLEN;
	ihl = (ip[0] & 0xf) * 4;
	if (ihl < 20 || (ip[9] != KOPS_IPPROTO_TCP && ip[9] != KOPS_IPPROTO_UDP)) {
		kops_fw_count(KOPS_FW_OTHER);
		return XDP_PASS;
	}
	l4 = ip + ihl;
	if (l4 + 20 > data_end) {
		kops_fw_count(KOPS_FW_OTHER);
		return XDP_PASS;
	}
	__builtin_memset(&key, 0, sizeof(key));
	key.saddr = KOPS_LD32(ip + 12);
	key.daddr = KOPS_LD32(ip + 16);
	key.sport = KOPS_LD16(l4);
	key.dport = KOPS_LD16(l4 + 2);
	key.proto = ip[9];
	verdict = kops_fw_classify(&key);
	if (verdict == KOPS_FW_MISS)
		verdict = kops_fw_default;
	kops_fw_count(verdict);

	p = l4 + (ip[9] == KOPS_IPPROTO_TCP ? 20 : 8);
	for (__u32 i = 0; i < 32; i++) {
		if (p + 16 > data_end)
			break;
		__builtin_memset(&key, 0, sizeof(key));
		key.saddr = KOPS_LD32(p);
		key.daddr = KOPS_LD32(p + 4);
		key.sport = KOPS_LD16(p + 8);
		key.dport = KOPS_LD16(p + 10);
		key.proto = p[12];
		kops_fw_count(kops_fw_classify(&key));
		p += 16;
	}
	return verdict == KOPS_FW_DROP ? XDP_DROP : XDP_PASS;
}
