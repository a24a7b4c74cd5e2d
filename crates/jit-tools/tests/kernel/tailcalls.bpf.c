#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
struct { __uint(type, BPF_MAP_TYPE_PROG_ARRAY); __uint(max_entries, 4); __type(key, __u32); __type(value, __u32);} jmp SEC(".maps");
static __attribute__((noinline)) int leaf(int x) { return x * 3 + 1; }
static __attribute__((noinline)) int tcsub(struct xdp_md *ctx, int k) { bpf_tail_call(ctx, &jmp, k & 3); return k + 5; }
SEC("xdp") int tmain(struct xdp_md *ctx) {
  int a = leaf(ctx->rx_queue_index);
  int b = tcsub(ctx, a);
  bpf_tail_call(ctx, &jmp, 1);
  return a + b + leaf(b);
}
char _license[] SEC("license") = "GPL";
