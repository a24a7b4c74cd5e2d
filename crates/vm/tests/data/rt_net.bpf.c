// Networking helpers, for `kops diff` against the kernel (BPF_PROG_TEST_RUN): every
// helper's return values go to .bss arrays, and the packet comes back out.
// Build: clang-19 -O2 -g -target bpf -mcpu=v3 -I/usr/include/x86_64-linux-gnu -c rt_net.bpf.c -o rt_net.bpf.o
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#define NOINLINE __attribute__((noinline))

__s64 xdp_res[8];
__s64 room_res[12];
__s64 size_res[12];
__s64 vlan_res[16];
__s64 tun_res[24];
__s64 misc_res[24];
__s64 xmisc_res[8];
__s64 sock_res[12];
__s64 filt_res[4];
__s64 proto_res[8];
__s64 opt_res[12];

SEC("xdp")
int xdp_bytes(struct xdp_md *ctx)
{
	__u8 buf[8] = {};
	__u32 len = bpf_xdp_get_buff_len(ctx);

	xdp_res[0] = bpf_xdp_load_bytes(ctx, 2, buf, 8);
	// Reverse the bytes and write them back at 6 (inside any frame of 14+ bytes).
	for (int i = 0; i < 4; i++) {
		__u8 t = buf[i];
		buf[i] = buf[7 - i];
		buf[7 - i] = t;
	}
	xdp_res[1] = bpf_xdp_store_bytes(ctx, 6, buf, 8);
	xdp_res[2] = bpf_xdp_load_bytes(ctx, len - 4, buf, 8);      // past the end: -EINVAL
	xdp_res[3] = bpf_xdp_load_bytes(ctx, 0x10000, buf, 4);      // -EFAULT
	xdp_res[4] = bpf_xdp_store_bytes(ctx, len - 2, buf, 4);     // -EINVAL
	xdp_res[5] = buf[0] | (buf[3] << 8);
	xdp_res[6] = bpf_xdp_get_buff_len(ctx);
	return XDP_PASS;
}

SEC("tc")
int tc_room(struct __sk_buff *skb)
{
	room_res[0] = bpf_skb_adjust_room(skb, 8, BPF_ADJ_ROOM_NET, 0);
	room_res[1] = skb->len;
	room_res[2] = bpf_skb_adjust_room(skb, -4, BPF_ADJ_ROOM_MAC, BPF_F_ADJ_ROOM_NO_CSUM_RESET);
	room_res[3] = bpf_skb_adjust_room(skb, 0x1000, BPF_ADJ_ROOM_MAC, 0);   // -EFAULT
	room_res[4] = bpf_skb_adjust_room(skb, 4, 7, 0);                        // bad mode
	room_res[5] = bpf_skb_adjust_room(skb, 28, BPF_ADJ_ROOM_MAC,
					  BPF_F_ADJ_ROOM_ENCAP_L3_IPV4 | BPF_F_ADJ_ROOM_ENCAP_L4_UDP);
	room_res[6] = bpf_skb_adjust_room(skb, 4, BPF_ADJ_ROOM_MAC, BPF_F_ADJ_ROOM_ENCAP_L3_IPV4); // -EALREADY
	room_res[7] = bpf_skb_change_tail(skb, skb->len + 2, 0);             // encapsulated: -ENOTSUPP
	room_res[8] = skb->protocol;
	room_res[9] = bpf_skb_adjust_room(skb, -20, BPF_ADJ_ROOM_MAC, (1ULL << 8)); // BPF_F_ADJ_ROOM_DECAP_L3_IPV6
	room_res[10] = bpf_skb_adjust_room(skb, -30000, BPF_ADJ_ROOM_NET, 0);
	room_res[11] = skb->len;
	return 0;
}

SEC("tc")
int tc_size(struct __sk_buff *skb)
{
	__u32 len = skb->len;

	size_res[0] = bpf_skb_change_tail(skb, len + 5, 0);
	size_res[1] = skb->len;
	size_res[2] = bpf_skb_change_tail(skb, len - 3, 0);
	size_res[3] = bpf_skb_change_tail(skb, 10, 0);          // below the network header
	size_res[4] = bpf_skb_change_tail(skb, len, 1);         // flags
	size_res[5] = bpf_skb_change_tail(skb, 20000, 0);       // too long
	size_res[6] = bpf_skb_change_head(skb, 6, 0);
	size_res[7] = skb->len;
	size_res[8] = bpf_skb_change_head(skb, 4, 2);           // flags
	size_res[9] = bpf_skb_pull_data(skb, 0);
	size_res[10] = bpf_skb_pull_data(skb, 60000);           // longer than the skb
	size_res[11] = bpf_skb_pull_data(skb, 14);
	return 0;
}

SEC("tc")
int tc_vlan(struct __sk_buff *skb)
{
	vlan_res[0] = bpf_skb_vlan_push(skb, bpf_htons(0x8100), 5);
	vlan_res[1] = skb->vlan_present | (skb->vlan_tci << 8) | ((__u64)skb->vlan_proto << 32);
	vlan_res[2] = skb->len;
	vlan_res[3] = bpf_skb_vlan_push(skb, bpf_htons(0x88a8), 7);
	vlan_res[4] = skb->vlan_present | (skb->vlan_tci << 8) | ((__u64)skb->vlan_proto << 32);
	vlan_res[5] = skb->len | ((__u64)skb->protocol << 32);
	vlan_res[6] = bpf_skb_vlan_push(skb, bpf_htons(0x1234), 9);  // any other proto: 802.1Q
	vlan_res[7] = skb->vlan_present | (skb->vlan_tci << 8) | ((__u64)skb->vlan_proto << 32);
	vlan_res[8] = bpf_skb_vlan_pop(skb);
	vlan_res[9] = skb->vlan_present | (skb->vlan_tci << 8) | ((__u64)skb->vlan_proto << 32);
	vlan_res[10] = skb->len | ((__u64)skb->protocol << 32);
	vlan_res[11] = bpf_skb_vlan_pop(skb);
	vlan_res[12] = skb->vlan_present | (skb->vlan_tci << 8) | ((__u64)skb->vlan_proto << 32);
	vlan_res[13] = bpf_skb_vlan_pop(skb);
	vlan_res[14] = skb->len | ((__u64)skb->protocol << 32);
	vlan_res[15] = bpf_skb_vlan_push(skb, bpf_htons(0x8100), 0x123);
	return 0;
}

static NOINLINE void put_key(int at, struct bpf_tunnel_key *k)
{
	if (at < 0 || at > 16)
		return;
	tun_res[at] = k->tunnel_id | ((__u64)k->remote_ipv4 << 32);
	tun_res[at + 1] = k->tunnel_tos | (k->tunnel_ttl << 8) | (k->tunnel_flags << 16) | ((__u64)k->local_ipv4 << 32);
	tun_res[at + 2] = k->tunnel_label | ((__u64)k->remote_ipv6[3] << 32);
}

SEC("tc")
int tc_tunnel(struct __sk_buff *skb)
{
	struct bpf_tunnel_key k = {};
	void *data = (void *)(long)skb->data;
	void *end = (void *)(long)skb->data_end;
	__u32 w = 0;

	if (data + 18 <= end)
		w = *(__u32 *)(data + 14);
	tun_res[0] = bpf_skb_get_tunnel_key(skb, &k, sizeof(k), 0);   // nothing set: -EINVAL
	k.tunnel_id = w;
	k.remote_ipv4 = 0x0a000001 ^ w;
	k.local_ipv4 = 0x0a000002;
	k.tunnel_tos = 3;
	k.tunnel_ttl = 64;
	tun_res[1] = bpf_skb_set_tunnel_key(skb, &k, sizeof(k), BPF_F_ZERO_CSUM_TX | BPF_F_SEQ_NUMBER);
	__builtin_memset(&k, 0xaa, sizeof(k));
	tun_res[2] = bpf_skb_get_tunnel_key(skb, &k, sizeof(k), BPF_F_TUNINFO_FLAGS);
	put_key(3, &k);
	tun_res[6] = bpf_skb_get_tunnel_key(skb, &k, sizeof(k), BPF_F_TUNINFO_IPV6);   // -EPROTO
	tun_res[7] = k.tunnel_id;
	tun_res[8] = bpf_skb_get_tunnel_key(skb, &k, 8, 0);            // old layout
	tun_res[9] = k.tunnel_id | ((__u64)k.remote_ipv4 << 32);
	__builtin_memset(&k, 0, sizeof(k));
	k.tunnel_id = 77;
	k.remote_ipv6[0] = bpf_htonl(0x20010db8);
	k.remote_ipv6[3] = w;
	k.local_ipv6[3] = 5;
	k.tunnel_label = 0xfff12345;
	tun_res[10] = bpf_skb_set_tunnel_key(skb, &k, sizeof(k), 0);   // label without IPV6: -EINVAL
	tun_res[11] = bpf_skb_set_tunnel_key(skb, &k, sizeof(k), BPF_F_TUNINFO_IPV6 | BPF_F_DONT_FRAGMENT);
	__builtin_memset(&k, 0, sizeof(k));
	tun_res[12] = bpf_skb_get_tunnel_key(skb, &k, sizeof(k), BPF_F_TUNINFO_IPV6 | BPF_F_TUNINFO_FLAGS);
	put_key(13, &k);
	tun_res[16] = k.local_ipv6[3] | ((__u64)k.remote_ipv6[0] << 32);
	tun_res[17] = bpf_skb_set_tunnel_key(skb, &k, 13, 0);          // bad size
	tun_res[18] = bpf_skb_get_tunnel_key(skb, &k, sizeof(k), 1 << 7); // bad flag
	return 0;
}

SEC("tc")
int tc_misc(struct __sk_buff *skb)
{
	struct bpf_fib_lookup fib = {};
	__u32 mtu = 0;

	misc_res[0] = bpf_csum_level(skb, BPF_CSUM_LEVEL_QUERY);
	misc_res[1] = bpf_csum_level(skb, BPF_CSUM_LEVEL_INC);
	misc_res[2] = bpf_csum_level(skb, BPF_CSUM_LEVEL_INC);
	misc_res[3] = bpf_csum_level(skb, BPF_CSUM_LEVEL_QUERY);
	misc_res[4] = bpf_csum_level(skb, BPF_CSUM_LEVEL_DEC);
	misc_res[5] = bpf_csum_level(skb, BPF_CSUM_LEVEL_QUERY);
	misc_res[6] = bpf_csum_level(skb, 9);
	misc_res[7] = bpf_csum_update(skb, 5);
	misc_res[8] = bpf_check_mtu(skb, 0, &mtu, 0, 0);
	misc_res[9] = mtu;
	mtu = 65600;
	misc_res[10] = bpf_check_mtu(skb, 1, &mtu, 0, 0);
	mtu = 0;
	misc_res[11] = bpf_check_mtu(skb, 0, &mtu, 70000, 0);
	misc_res[12] = bpf_check_mtu(skb, 0, &mtu, 0, 2);
	misc_res[13] = bpf_check_mtu(skb, 9999, &mtu, 0, 0);
	fib.family = 2;
	fib.ifindex = 1;
	fib.ipv4_dst = bpf_htonl(0x0a000001);
	misc_res[14] = bpf_fib_lookup(skb, &fib, sizeof(fib), 0);
	fib.family = 3;
	misc_res[15] = bpf_fib_lookup(skb, &fib, sizeof(fib), 0);
	fib.family = 10;
	fib.ifindex = 9999;
	misc_res[16] = bpf_fib_lookup(skb, &fib, sizeof(fib), 0);
	misc_res[17] = bpf_fib_lookup(skb, &fib, sizeof(fib), 1 << 12);
	misc_res[18] = bpf_set_hash(skb, 0x1234567);
	misc_res[19] = bpf_get_hash_recalc(skb);
	misc_res[20] = bpf_clone_redirect(skb, 9999, 0);
	misc_res[21] = bpf_clone_redirect(skb, 1, 4);
	misc_res[22] = bpf_skb_set_tstamp(skb, 0, 1);
	misc_res[23] = bpf_skb_set_tstamp(skb, 1000, 1) | (skb->tstamp << 8);
	return bpf_redirect_peer(9999, 1);
}

// ECN: CE on ECN-capable IPv4 (with the checksum update) and IPv6 headers; the rest of
// the packet is compared too. The second call reports an already marked packet.
SEC("tc")
int tc_ecn(struct __sk_buff *skb)
{
	long a = bpf_skb_ecn_set_ce(skb);
	long b = bpf_skb_ecn_set_ce(skb);

	return a | (b << 1);
}

SEC("xdp")
int xdp_misc(struct xdp_md *ctx)
{
	struct bpf_fib_lookup fib = {};
	__u32 mtu = 0;

	xmisc_res[0] = bpf_check_mtu(ctx, 0, &mtu, 0, 0);
	xmisc_res[1] = mtu;
	mtu = 0;
	xmisc_res[2] = bpf_check_mtu(ctx, 0, &mtu, 65536, 0);
	xmisc_res[3] = bpf_check_mtu(ctx, 0, &mtu, 0, 1);
	fib.family = 2;
	fib.ifindex = ctx->ingress_ifindex;
	xmisc_res[4] = bpf_fib_lookup(ctx, &fib, sizeof(fib), BPF_FIB_LOOKUP_OUTPUT);
	xmisc_res[5] = bpf_fib_lookup(ctx, &fib, 8, 0);
	return XDP_PASS;
}

// Socket lookups (no local socket serves 192.0.2.200:9 from 198.51.100.1), headers
// relative to MAC and network header, packet type changes.
SEC("tc")
int tc_sock(struct __sk_buff *skb)
{
	struct bpf_sock_tuple t = {};
	struct bpf_sock *sk;
	__u8 b[6] = {};

	t.ipv4.saddr = bpf_htonl(0xc6336401);
	t.ipv4.daddr = bpf_htonl(0xc00002c8);
	t.ipv4.sport = bpf_htons(40000);
	t.ipv4.dport = bpf_htons(9);
	sk = bpf_sk_lookup_tcp(skb, &t, sizeof(t.ipv4), BPF_F_CURRENT_NETNS, 0);
	sock_res[0] = sk != 0;
	if (sk)
		bpf_sk_release(sk);
	sk = bpf_sk_lookup_udp(skb, &t, sizeof(t.ipv4), BPF_F_CURRENT_NETNS, 0);
	sock_res[1] = sk != 0;
	if (sk)
		bpf_sk_release(sk);
	sk = (struct bpf_sock *)bpf_skc_lookup_tcp(skb, &t, sizeof(t.ipv4), BPF_F_CURRENT_NETNS, 0);
	sock_res[2] = sk != 0;
	if (sk)
		bpf_sk_release(sk);
	sock_res[3] = bpf_skb_load_bytes_relative(skb, 6, b, 6, BPF_HDR_START_MAC);
	sock_res[4] = b[0] | (b[5] << 8);
	sock_res[5] = bpf_skb_load_bytes_relative(skb, 1, b, 4, BPF_HDR_START_NET);
	sock_res[6] = b[0] | (b[3] << 8);
	sock_res[7] = bpf_skb_load_bytes_relative(skb, 0, b, 6, 2);
	sock_res[8] = bpf_skb_load_bytes_relative(skb, skb->len - 3, b, 6, BPF_HDR_START_MAC);
	sock_res[9] = bpf_skb_change_type(skb, 2);
	sock_res[10] = skb->pkt_type;
	sock_res[11] = bpf_skb_change_type(skb, 6);
	return 0;
}

SEC("socket")
int sock_rel(struct __sk_buff *skb)
{
	__u8 b[4] = {};

	filt_res[0] = bpf_skb_load_bytes_relative(skb, 12, b, 2, BPF_HDR_START_MAC);
	filt_res[1] = b[0] << 8 | b[1];
	filt_res[2] = bpf_skb_load_bytes_relative(skb, 0, b, 4, BPF_HDR_START_NET);
	filt_res[3] = b[0] | (b[3] << 8);
	return skb->len;
}

// NAT64-style protocol changes: IPv4 -> IPv6 (20 zero bytes after the MAC header), and
// back; other pairs and flags are refused.
SEC("tc")
int tc_proto(struct __sk_buff *skb)
{
	proto_res[0] = bpf_skb_change_proto(skb, bpf_htons(0x86dd), 0);
	proto_res[1] = skb->len | ((__u64)skb->protocol << 32);
	proto_res[2] = bpf_skb_change_proto(skb, bpf_htons(0x86dd), 0);
	proto_res[3] = bpf_skb_change_proto(skb, bpf_htons(0x0800), 1);
	proto_res[4] = bpf_skb_change_proto(skb, bpf_htons(0x0800), 0);
	proto_res[5] = skb->len | ((__u64)skb->protocol << 32);
	proto_res[6] = bpf_skb_change_proto(skb, bpf_htons(0x0806), 0);
	if (proto_res[4] == 0)
		proto_res[7] = bpf_skb_change_proto(skb, bpf_htons(0x86dd), 0);
	return 0;
}

// Tunnel options: only after set_tunnel_key, in 32-bit words; they show in the key's
// flags. A key whose tunnel_ext (here: the flags just read) is set is refused, so the
// options stay.
SEC("tc")
int tc_tunopt(struct __sk_buff *skb)
{
	struct bpf_tunnel_key k = {};
	__u32 opt[4] = { 0x01020304, 0x05060708, 0, 0 };
	__u32 out[6] = {};

	opt_res[0] = bpf_skb_set_tunnel_opt(skb, opt, 8);            // no key yet: -EINVAL
	opt_res[1] = bpf_skb_get_tunnel_opt(skb, out, sizeof(out));  // -ENOENT
	k.tunnel_id = skb->len;
	k.remote_ipv4 = 0x0a000009;
	bpf_skb_set_tunnel_key(skb, &k, sizeof(k), 0);
	opt_res[2] = bpf_skb_get_tunnel_opt(skb, out, sizeof(out));  // key but no options
	opt_res[3] = bpf_skb_set_tunnel_opt(skb, opt, 6);            // not whole words
	opt_res[4] = bpf_skb_set_tunnel_opt(skb, opt, 12);
	out[5] = 0xffffffff;
	opt_res[5] = bpf_skb_get_tunnel_opt(skb, out, sizeof(out));
	opt_res[6] = out[0] | ((__u64)out[1] << 32);
	opt_res[7] = out[2] | ((__u64)out[5] << 32);
	opt_res[8] = bpf_skb_get_tunnel_opt(skb, out, 8);            // too small: -ENOMEM
	bpf_skb_get_tunnel_key(skb, &k, sizeof(k), BPF_F_TUNINFO_FLAGS);
	opt_res[9] = k.tunnel_flags;
	bpf_skb_set_tunnel_key(skb, &k, sizeof(k), 0);
	opt_res[10] = bpf_skb_get_tunnel_opt(skb, out, sizeof(out));
	opt_res[11] = out[0];
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
