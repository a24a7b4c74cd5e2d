//! The networking helpers against the running kernel, and section names through the
//! `kops` binary. The objects and their C sources are in crates/vm/tests/data
//! (rt_net.bpf.c, rt_legacy.bpf.c).
//!
//! Kernel-dependent tests print `SKIPPED: reason` when bpf(2) is refused (they fail
//! instead under KOPS_REQUIRE_KERNEL=1).

use std::path::Path;
use std::process::{Command, Output};

fn kops(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kops")).args(args).output().expect("run kops")
}

fn data(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../vm/tests/data").join(name).display().to_string()
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

/// Every program of rt_net (XDP and tc, each calling a family of helpers and storing every
/// return value, with the packet coming back out) agrees with BPF_PROG_TEST_RUN on
/// generated inputs, for the interpreter, the JIT and the Kops JIT.
#[test]
fn net_helpers_agree_with_the_kernel() {
    kops_kernel::require_kernel!();
    let o = data("rt_net.bpf.o");
    let out = kops(&["diff", "--runtimes", "kernel,interp,jit,kops", "--inputs", "200", "--seed", "7", &o]);
    let t = text(&out);
    println!("{t}");
    assert_eq!(out.status.code(), Some(0), "{t}");
    let last = t.lines().rev().find(|l| l.contains(" programs, ")).unwrap_or("");
    assert!(last.starts_with("12 programs, ") && last.ends_with(", 0 mismatches"), "{last}");
    for p in ["xdp_bytes", "xdp_misc", "tc_room", "tc_size", "tc_vlan", "tc_tunnel", "tc_misc", "tc_ecn", "tc_sock", "sock_rel", "tc_proto", "tc_tunopt"] {
        let line = t.lines().find(|l| l.starts_with(&format!("{p}: "))).unwrap_or_else(|| panic!("no summary for {p}: {t}"));
        let n: usize = line.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
        assert!(n >= 150, "{p}: only {n} inputs compared: {line}");
    }
}

/// Values read from the kernel's sources (net/core/filter.c, Linux 6.12) for the default
/// 64-byte Ethernet/IPv4/UDP packet of `kops run`, checked on the interpreter: the
/// documented models (loopback device with MTU 65536 and forwarding off, tunnel keys in
/// the skb, CHECKSUM_NONE skbs).
#[test]
fn net_helper_models_on_the_interpreter() {
    let o = data("rt_net.bpf.o");
    let bss = |prog: &str| -> Vec<i64> {
        let out = kops(&["run", "--prog", prog, "--dump-maps", &o]);
        let t = text(&out);
        assert_eq!(out.status.code(), Some(0), "{t}");
        let hex = t.lines().skip_while(|l| !l.starts_with("map .bss")).nth(1).and_then(|l| l.split("=> ").nth(1)).unwrap_or_else(|| panic!("{t}"));
        let b: Vec<u8> = (0..hex.len() / 2).map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).unwrap()).collect();
        b.chunks(8).map(|c| i64::from_le_bytes(c.try_into().unwrap())).collect()
    };
    // .bss layout: xdp_res[8], room_res[12], size_res[12], vlan_res[16], tun_res[24],
    // misc_res[24], xmisc_res[8], sock_res[12], filt_res[4].
    let misc = &bss("tc_misc")[8 + 12 + 12 + 16 + 24..][..24];
    // csum_level: query on CHECKSUM_NONE is -EACCES; two INCs give level 1; DEC 0.
    assert_eq!(&misc[0..7], &[-13, 0, 0, 1, 0, 0, -22]);
    assert_eq!(misc[7], -524, "csum_update without CHECKSUM_COMPLETE: -ENOTSUPP");
    assert_eq!((misc[8], misc[9]), (0, 65536), "check_mtu on the loopback device");
    assert_eq!((misc[10], misc[13]), (1, -19), "FRAG_NEEDED past the MTU; -ENODEV for an unknown device");
    assert_eq!((misc[14], misc[15], misc[16]), (5, -97, -19), "fib_lookup: FWD_DISABLED, -EAFNOSUPPORT, -ENODEV");
    assert_eq!(misc[19], 0x1234567, "get_hash_recalc returns the hash set_hash set");
    let tun = &bss("tc_tunnel")[8 + 12 + 12 + 16..][..24];
    assert_eq!((tun[0], tun[1], tun[6]), (-22, 0, -71), "get before set: -EINVAL; set; wrong family: -EPROTO");
    // Set remote 10.0.0.1^w, local 10.0.0.2: get reports them swapped (received view),
    // with flags KEY|SEQ|NOCACHE (no CSUM: BPF_F_ZERO_CSUM_TX) as a __be16.
    let flags = (tun[4] >> 16) as u16;
    assert_eq!(flags, ((1u16 << 2) | (1 << 3) | (1 << 13)).to_be(), "{:#x}", tun[4]);
    assert_eq!((tun[4] >> 32) as u32 ^ 0x0a00_0001, tun[3] as u32, "local = set's remote");
    let sock = &bss("tc_sock")[8 + 12 + 12 + 16 + 24 + 24 + 8..][..12];
    assert_eq!(&sock[..3], &[0, 0, 0], "no socket serves the tuple");
    // Bytes 6 and 11 from the MAC header: the source MAC's first and last bytes (66, bb).
    assert_eq!((sock[3], sock[4]), (0, 0xbb66));
    assert_eq!((sock[7], sock[8]), (-14, -14), "bad start header; past the end: -EFAULT");
    assert_eq!((sock[9], sock[10], sock[11]), (0, 2, -22), "pkt_type to PACKET_MULTICAST; 6 is refused");
    let vlan = &bss("tc_vlan")[8 + 12 + 12..][..16];
    // First push: metadata only (present, TCI 5, 802.1Q as the __be16 in memory: 0x0081),
    // length unchanged.
    assert_eq!((vlan[0], vlan[1], vlan[2]), (0, 0x0081_0000_0501, 64));
    // Second push moves the first tag into the packet: 4 bytes more, protocol 802.1Q.
    assert_eq!(vlan[5], 0x0081_0000_0044);
}

/// A section name nobody knows is an error that says so and offers --type; --type sets
/// the program type; legacy prefix names load without it; an unimplemented helper is
/// named with its id.
#[test]
fn section_names_and_type_option() {
    let o = data("rt_legacy.bpf.o");
    let out = kops(&["run", "--prog", "do_redirect_xmit", &o]);
    let t = text(&out);
    assert_ne!(out.status.code(), Some(0), "{t}");
    assert!(t.contains("program `do_redirect_xmit` cannot be loaded: section name `redirect_xmit` is unknown") && t.contains("--type"), "{t}");
    let out = kops(&["run", "--type", "tc", "--prog", "do_redirect_xmit", &o]);
    let t = text(&out);
    assert!(t.contains("r0 = 7 (0x7) TC_ACT_REDIRECT") && t.contains("redirect: Ifindex { ifindex: 7"), "{t}");
    let out = kops(&["run", "--type", "bogus", "--prog", "do_redirect_xmit", &o]);
    assert!(text(&out).contains("unknown program type `bogus`"), "{}", text(&out));
    // xdp_fwd and socket1: pre-1.0 libbpf prefixes.
    assert!(text(&kops(&["run", "--prog", "do_xdp_fwd", &o])).contains("XDP_DROP"));
    let t = text(&kops(&["run", "--prog", "do_socket1", &o]));
    assert!(t.contains("r0 = 50 (0x32)"), "socket filter: skb->len from the network header: {t}");
    let out = kops(&["run", "--prog", "realm", &o]);
    let t = text(&out);
    assert!(t.contains("program `realm`, insn 0: helper bpf_get_route_realm (id 24) is not supported by the kops runtimes"), "{t}");
    let out = kops(&["verify", &o]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("section name `redirect_xmit` is unknown"));
}

#[test]
fn section_names_and_type_option_in_the_kernel() {
    kops_kernel::require_kernel!();
    let o = data("rt_legacy.bpf.o");
    let out = kops(&["verify", "--type", "tc", &o]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let out = kops(&["diff", "--type", "tc", "--runtimes", "kernel,interp,jit", "--inputs", "60", "--prog", "do_redirect_xmit", &o]);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(0), "{t}");
    assert!(t.trim_end().ends_with(", 0 mismatches") && t.contains("1 programs, "), "{t}");
    let out = kops(&["diff", "--runtimes", "kernel,interp", "--prog", "do_redirect_xmit", &o]);
    assert_ne!(out.status.code(), Some(0));
    assert!(text(&out).contains("--type"), "{}", text(&out));
}
