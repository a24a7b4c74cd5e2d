// Open-coded numeric iterators (bpf_for, Linux 6.4+): bpf_iter_num_new/next/destroy.
// iter_sum: the sum of 2..10 (44) for packets under 100 bytes, of 2..20 (189) otherwise;
// plus 1000 when bpf_iter_num_new refuses start > end (-EINVAL).
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

struct bpf_iter_num {
	__u64 __opaque[1];
} __attribute__((aligned(8)));

extern int bpf_iter_num_new(struct bpf_iter_num *it, int start, int end) __ksym;
extern int *bpf_iter_num_next(struct bpf_iter_num *it) __ksym;
extern void bpf_iter_num_destroy(struct bpf_iter_num *it) __ksym;

SEC("tc")
int iter_sum(struct __sk_buff *skb)
{
	struct bpf_iter_num it, bad;
	int *v, sum = 0;

	bpf_iter_num_new(&it, 2, skb->len < 100 ? 10 : 20);
	while ((v = bpf_iter_num_next(&it)))
		sum += *v;
	bpf_iter_num_destroy(&it);
	if (bpf_iter_num_new(&bad, 5, 3) == -22)
		sum += 1000;
	bpf_iter_num_destroy(&bad);
	return sum;
}

char _license[] SEC("license") = "GPL";
