// Test object for the map types of real XDP programs (issue 13): LPM trie, array and hash
// of maps (BTF __array inner templates with initial slots), devmap_hash and cpumap as
// redirect targets, queue, stack and bloom filter; socket, cgroup and sk_storage maps that
// the runtimes create but do not run (sk_storage needs BTF ids in the kernel). Built with
// clang-19 -O2 -g -target bpf -mcpu=v3 -I/usr/include/x86_64-linux-gnu -c rt_mapkinds.bpf.c
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

struct lpm_key {
	__u32 prefixlen;
	__u8 data[4];
};

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, 3);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct lpm_key);
	__type(value, __u32);
} routes SEC(".maps");

// Results of the programs' helper calls, compared between runtimes.
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 16);
	__type(key, __u32);
	__type(value, __s64);
} out SEC(".maps");

static __always_inline void put(__u32 i, __s64 v)
{
	bpf_map_update_elem(&out, &i, &v, BPF_ANY);
}

// Four inserts from the packet (prefix length, data, flags), then lookups and a delete:
// ENOSPC after three entries, EEXIST/ENOENT from the flags, EINVAL for prefix length 33,
// longest-prefix match on lookup. Few distinct prefixes, so that entries collide (the
// kernel keeps the key bytes last written for an entry, also past its prefix).
static __always_inline __u32 lpm_len(unsigned char b)
{
	__u32 x = b % 6; // 0, 4, 8, 9, 16, 33
	return x == 5 ? 33 : x == 4 ? 16 : x == 3 ? 9 : x * 4;
}

static __always_inline void lpm_key_at(struct lpm_key *k, unsigned char *p)
{
	k->prefixlen = lpm_len(p[0]);
	k->data[0] = p[1] & 0x13;
	k->data[1] = p[2] & 0x81;
	k->data[2] = p[3];
	k->data[3] = p[4];
}

SEC("xdp")
int lpm(struct xdp_md *ctx)
{
	unsigned char *p = (void *)(long)ctx->data, *end = (void *)(long)ctx->data_end;
	if (p + 26 > end)
		return XDP_PASS;
#pragma unroll
	for (int i = 0; i < 4; i++) {
		struct lpm_key k;
		lpm_key_at(&k, p + 5 * i);
		__u32 v = p[5 * i] + 1;
		put(i, bpf_map_update_elem(&routes, &k, &v, (p[5 * i + 3] >> 4) % 3));
	}
	struct lpm_key q;
	lpm_key_at(&q, p + 20);
	q.prefixlen = 32;
	__u32 *hit = bpf_map_lookup_elem(&routes, &q);
	put(4, hit ? *hit : -1);
	q.prefixlen = p[25] % 33;
	hit = bpf_map_lookup_elem(&routes, &q);
	put(5, hit ? *hit : -1);
	struct lpm_key d;
	lpm_key_at(&d, p + 10);
	d.prefixlen = lpm_len(p[25]);
	put(6, bpf_map_delete_elem(&routes, &d));
	return hit ? XDP_TX : XDP_DROP;
}

struct inner_arr {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 4);
	__type(key, __u32);
	__type(value, __u64);
};

struct inner_arr arr_a SEC(".maps"), arr_b SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY_OF_MAPS);
	__uint(max_entries, 3);
	__type(key, __u32);
	__array(values, struct inner_arr);
} outer_arr SEC(".maps") = {
	.values = { [0] = &arr_a, [1] = &arr_b },
};

struct inner_hash {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4);
	__type(key, __u32);
	__type(value, __u32);
};

struct inner_hash hash_a SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH_OF_MAPS);
	__uint(max_entries, 8);
	__type(key, __u32);
	__array(values, struct inner_hash);
} outer_hash SEC(".maps") = {
	.values = { [5] = &hash_a },
};

// Map-in-map: the outer lookup gives a map that further helpers take.
SEC("xdp")
int mim(struct xdp_md *ctx)
{
	unsigned char *p = (void *)(long)ctx->data, *end = (void *)(long)ctx->data_end;
	if (p + 8 > end)
		return XDP_PASS;
	__u32 o = p[0] % 3, k = p[1] % 5;
	void *inner = bpf_map_lookup_elem(&outer_arr, &o);
	if (!inner)
		return XDP_DROP;
	__u64 *v = bpf_map_lookup_elem(inner, &k);
	if (v)
		*v += p[2] + 1;
	__u32 hk = p[3] % 7;
	void *h = bpf_map_lookup_elem(&outer_hash, &hk);
	if (!h)
		return XDP_ABORTED;
	__u32 key = p[4] % 6, val = p[5];
	put(0, bpf_map_update_elem(h, &key, &val, p[6] % 3));
	key = p[7] % 6;
	put(1, bpf_map_delete_elem(h, &key));
	__u32 *x = bpf_map_lookup_elem(h, &key);
	put(2, x ? *x : -1);
	return v ? XDP_TX : XDP_PASS;
}

struct {
	__uint(type, BPF_MAP_TYPE_DEVMAP_HASH);
	__uint(max_entries, 8);
	__type(key, __u32);
	__type(value, __u32);
} dev_hash SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_CPUMAP);
	__uint(max_entries, 4);
	__type(key, __u32);
	__type(value, struct bpf_cpumap_val);
} cpus SEC(".maps");

// Redirect targets: the key and the fallback action come from the packet; devmap_hash
// takes BPF_F_BROADCAST, cpumap does not (XDP_ABORTED).
SEC("xdp")
int redir(struct xdp_md *ctx)
{
	unsigned char *p = (void *)(long)ctx->data, *end = (void *)(long)ctx->data_end;
	if (p + 3 > end)
		return XDP_PASS;
	__u64 flags = (p[1] & 3) | (p[1] & 0x40 ? BPF_F_BROADCAST : 0);
	if (p[0] & 1)
		return bpf_redirect_map(&dev_hash, p[2], flags);
	return bpf_redirect_map(&cpus, p[2] % 8, flags);
}

struct {
	__uint(type, BPF_MAP_TYPE_QUEUE);
	__uint(max_entries, 3);
	__type(value, __u32);
} fifo SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_STACK);
	__uint(max_entries, 3);
	__type(value, __u32);
} lifo SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_BLOOM_FILTER);
	__uint(max_entries, 64);
	__type(value, __u32);
} seen SEC(".maps");

// Queue and stack: pushes with BPF_ANY or BPF_EXIST (overwrite the oldest when full),
// pops and peeks, results and the popped values recorded. The bloom filter gets the same
// three values on every run (the kernel's cannot be cleared between inputs) and is asked
// about one value from the packet.
SEC("xdp")
int qs(struct xdp_md *ctx)
{
	unsigned char *p = (void *)(long)ctx->data, *end = (void *)(long)ctx->data_end;
	for (__u32 b = 1; b <= 3; b++)
		bpf_map_push_elem(&seen, &b, BPF_ANY);
	if (p + 10 > end)
		return XDP_PASS;
#pragma unroll
	for (int i = 0; i < 5; i++) {
		__u32 v = p[i];
		__u64 f = p[5] & (1 << i) ? BPF_EXIST : BPF_ANY;
		put(i, bpf_map_push_elem(i & 1 ? (void *)&lifo : (void *)&fifo, &v, f) * 1000 + v);
	}
	__u32 got = 0xdead;
	put(5, bpf_map_pop_elem(&fifo, &got) * 1000 + got);
	got = 0xdead;
	put(6, bpf_map_peek_elem(&lifo, &got) * 1000 + got);
	got = 0xdead;
	if (p[6] & 1)
		put(7, bpf_map_pop_elem(&lifo, &got) * 1000 + got);
	__u32 probe = p[7] % 8;
	put(8, bpf_map_peek_elem(&seen, &probe));
	put(9, bpf_map_push_elem(&fifo, &probe, BPF_NOEXIST));
	return XDP_PASS;
}

struct {
	__uint(type, BPF_MAP_TYPE_SK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, __u64);
} sk_data SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_SOCKMAP);
	__uint(max_entries, 4);
	__type(key, __u32);
	__type(value, __u64);
} socks SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_SOCKHASH);
	__uint(max_entries, 4);
	__type(key, __u32);
	__type(value, __u64);
} sock_hash SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_CGROUP_ARRAY);
	__uint(max_entries, 2);
	__type(key, __u32);
	__type(value, __u32);
} cgroups SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_REUSEPORT_SOCKARRAY);
	__uint(max_entries, 2);
	__type(key, __u32);
	__type(value, __u64);
} reuse SEC(".maps");

// Needs a real socket map: the runtimes refuse it at this call, naming the map.
SEC("xdp")
int sockuse(struct xdp_md *ctx)
{
	__u32 k = 1;
	return bpf_map_delete_elem(&socks, &k) == 0 ? XDP_TX : XDP_PASS;
}

char _license[] SEC("license") = "GPL";
