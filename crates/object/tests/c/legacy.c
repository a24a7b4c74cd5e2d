// Legacy `maps` section (struct bpf_map_def) plus a kprobe and socket program,
// a .rodata.str1.1 string and a .data.custom section.
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

struct bpf_map_def {
	unsigned int type;
	unsigned int key_size;
	unsigned int value_size;
	unsigned int max_entries;
	unsigned int map_flags;
};

struct bpf_map_def SEC("maps") legacy_hash = {
	.type = BPF_MAP_TYPE_HASH,
	.key_size = 8,
	.value_size = 16,
	.max_entries = 64,
	.map_flags = 1,
};

struct bpf_map_def SEC("maps") legacy_array = {
	.type = BPF_MAP_TYPE_ARRAY,
	.key_size = 4,
	.value_size = 4,
	.max_entries = 3,
};

__u32 custom_a SEC(".data.custom") = 0x11;
__u32 custom_b SEC(".data.custom") = 0x22;

SEC("kprobe/do_sys_open")
int kp(void *ctx)
{
	__u32 k = 1;
	__u32 *v = bpf_map_lookup_elem(&legacy_array, &k);
	bpf_printk("kprobe hit %d", custom_b);
	return v ? *v : 0;
}

SEC("socket")
int sock(struct __sk_buff *skb)
{
	__u64 k = skb->len;
	void *v = bpf_map_lookup_elem(&legacy_hash, &k);
	custom_a += 1;
	return v ? 1 : 0;
}

char _license[] SEC("license") = "GPL";
__u32 _version SEC("version") = 0x050a00;
