// Exercises many instruction forms for the llvm-objdump comparison test.
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 4);
	__type(key, __u32);
	__type(value, __u64);
} counters SEC(".maps");

volatile __u64 global_total;
const volatile __u32 config_shift = 3;
static volatile __u32 shared32;

static __attribute__((noinline)) __u64 mix(__u64 a, __u64 b)
{
	a ^= b;
	a = (a << 13) | (a >> 51);
	return a * 0x9E3779B97F4A7C15ULL;
}

static __attribute__((noinline)) __s64 sdivmod(__s64 a, __s32 b)
{
	if (b == 0)
		return 0;
#if __BPF_CPU_VERSION__ >= 4
	return a / b + a % b + (__s32)a / b;
#else
	return (__u64)a / (__u32)b;
#endif
}

SEC("xdp")
int features(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	__u32 key = 0;
	__u64 *v, acc = 0;
	__s8 *sb = data;
	__s16 *sh = data;
	__s32 *sw = data;

	if (data + 64 > end)
		return XDP_PASS;
	for (int i = 0; i < 16; i++) {
		__u32 w = ((__u32 *)data)[i];
		acc = mix(acc, __builtin_bswap32(w));
		acc += __builtin_bswap16((__u16)w) + __builtin_bswap64(acc);
		acc += sb[i] + sh[i & 7] + sw[i & 3];
	}
	acc += sdivmod(acc, (__s32)acc | 1);
	acc += (__s64)(__s8)acc + (__s64)(__s16)(acc >> 8) + (__s64)(__s32)(acc >> 16);
	acc >>= config_shift;
	switch (acc & 7) {
	case 0: acc += 11; break;
	case 1: acc ^= 0x55; break;
	case 2: acc *= 3; break;
	case 3: acc -= 7; break;
	case 4: acc |= 1ULL << 40; break;
	default: acc = ~acc; break;
	}
	v = bpf_map_lookup_elem(&counters, &key);
	if (v) {
		__sync_fetch_and_add(v, 1);
		__sync_fetch_and_or(v, acc & 0xf0);
		__sync_fetch_and_and(v, ~1ULL);
		__sync_fetch_and_xor(v, 2);
		acc += __sync_fetch_and_add(v, 3);
		acc += __sync_fetch_and_xor(v, 4);
		acc += __sync_lock_test_and_set(v, acc);
		acc += __sync_val_compare_and_swap(v, acc, 9);
	}
	__sync_fetch_and_add(&shared32, 1);
	__sync_fetch_and_or(&shared32, 2);
	acc += __sync_fetch_and_add(&shared32, 5);
	acc += __sync_fetch_and_and(&shared32, 6);
	acc += __sync_lock_test_and_set(&shared32, (__u32)acc);
	acc += __sync_val_compare_and_swap(&shared32, 7, (__u32)acc);
	global_total += acc;
	if ((__s32)acc < -5 || (__u32)acc > 1000)
		return XDP_DROP;
	return acc & 1 ? XDP_TX : XDP_PASS;
}

char LICENSE[] SEC("license") = "GPL";
