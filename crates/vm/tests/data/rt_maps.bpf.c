// Map helpers from programs: hash, LRU hash, per-CPU array, ring buffer, global data.
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4);
	__type(key, __u32);
	__type(value, __u64);
} counts SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 2);
	__type(key, __u32);
	__type(value, __u32);
} pcpu SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 4096);
} events SEC(".maps");

const volatile __u32 scale = 3;
__u64 total = 5;
__u32 zeroed;

// counts[key] += scale for keys 1, 2, 2; deletes key 7 (absent); total += scale;
// pcpu[1] = 9; one ringbuf record {0xfeed, total}. Returns the delete's result.
SEC("xdp")
int map_ops(struct xdp_md *ctx)
{
	__u32 keys[3] = {1, 2, 2};
	for (int i = 0; i < 3; i++) {
		__u64 *v = bpf_map_lookup_elem(&counts, &keys[i]);
		if (v) {
			*v += scale;
		} else {
			__u64 init = scale;
			bpf_map_update_elem(&counts, &keys[i], &init, BPF_NOEXIST);
		}
	}
	__u32 seven = 7;
	long del = bpf_map_delete_elem(&counts, &seven);
	total += scale;
	zeroed += 1;
	__u32 one = 1;
	__u32 *p = bpf_map_lookup_elem(&pcpu, &one);
	if (p)
		*p = 9;
	__u64 *rec = bpf_ringbuf_reserve(&events, 16, 0);
	if (rec) {
		rec[0] = 0xfeed;
		rec[1] = total;
		bpf_ringbuf_submit(rec, 0);
	}
	return del;
}

#ifndef VERIFIABLE_ONLY /* refused by the verifier: tests the runtime checks */
// Writes to .rodata through a cast (the verifier would refuse this).
SEC("xdp")
int write_rodata(struct xdp_md *ctx)
{
	*(volatile __u32 *)&scale = 1;
	return 0;
}
#endif

#ifndef VERIFIABLE_ONLY /* refused by the verifier: tests the runtime checks */
// Dereferences the result of a lookup that misses (NULL).
SEC("xdp")
int null_deref(struct xdp_md *ctx)
{
	__u32 k = 99;
	__u64 *v = bpf_map_lookup_elem(&counts, &k);
	return *(volatile __u64 *)v;
}

// Reads one byte past a hash value (8 bytes).
SEC("xdp")
int value_oob(struct xdp_md *ctx)
{
	__u32 k = 1;
	__u64 init = 5;
	bpf_map_update_elem(&counts, &k, &init, BPF_ANY);
	unsigned char *v = bpf_map_lookup_elem(&counts, &k);
	if (!v)
		return 0;
	return ((volatile unsigned char *)v)[8];
}
#endif

char LICENSE[] SEC("license") = "GPL";
