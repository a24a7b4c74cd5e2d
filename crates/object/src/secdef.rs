//! Program type and expected attach type from an ELF section name, following libbpf's
//! `SEC()` conventions (tools/lib/bpf/libbpf.c, `section_defs`).

use crate::ProgType;

/// `enum bpf_attach_type` numbers (include/uapi/linux/bpf.h).
pub mod attach_type {
    pub const CGROUP_INET_INGRESS: u32 = 0;
    pub const CGROUP_INET_EGRESS: u32 = 1;
    pub const CGROUP_INET_SOCK_CREATE: u32 = 2;
    pub const CGROUP_SOCK_OPS: u32 = 3;
    pub const SK_SKB_STREAM_PARSER: u32 = 4;
    pub const SK_SKB_STREAM_VERDICT: u32 = 5;
    pub const CGROUP_DEVICE: u32 = 6;
    pub const SK_MSG_VERDICT: u32 = 7;
    pub const CGROUP_INET4_BIND: u32 = 8;
    pub const CGROUP_INET6_BIND: u32 = 9;
    pub const CGROUP_INET4_CONNECT: u32 = 10;
    pub const CGROUP_INET6_CONNECT: u32 = 11;
    pub const CGROUP_INET4_POST_BIND: u32 = 12;
    pub const CGROUP_INET6_POST_BIND: u32 = 13;
    pub const CGROUP_UDP4_SENDMSG: u32 = 14;
    pub const CGROUP_UDP6_SENDMSG: u32 = 15;
    pub const LIRC_MODE2: u32 = 16;
    pub const FLOW_DISSECTOR: u32 = 17;
    pub const CGROUP_SYSCTL: u32 = 18;
    pub const CGROUP_UDP4_RECVMSG: u32 = 19;
    pub const CGROUP_UDP6_RECVMSG: u32 = 20;
    pub const CGROUP_GETSOCKOPT: u32 = 21;
    pub const CGROUP_SETSOCKOPT: u32 = 22;
    pub const TRACE_RAW_TP: u32 = 23;
    pub const TRACE_FENTRY: u32 = 24;
    pub const TRACE_FEXIT: u32 = 25;
    pub const MODIFY_RETURN: u32 = 26;
    pub const LSM_MAC: u32 = 27;
    pub const TRACE_ITER: u32 = 28;
    pub const CGROUP_INET4_GETPEERNAME: u32 = 29;
    pub const CGROUP_INET6_GETPEERNAME: u32 = 30;
    pub const CGROUP_INET4_GETSOCKNAME: u32 = 31;
    pub const CGROUP_INET6_GETSOCKNAME: u32 = 32;
    pub const XDP_DEVMAP: u32 = 33;
    pub const CGROUP_INET_SOCK_RELEASE: u32 = 34;
    pub const XDP_CPUMAP: u32 = 35;
    pub const SK_LOOKUP: u32 = 36;
    pub const XDP: u32 = 37;
    pub const SK_SKB_VERDICT: u32 = 38;
    pub const SK_REUSEPORT_SELECT: u32 = 39;
    pub const SK_REUSEPORT_SELECT_OR_MIGRATE: u32 = 40;
    pub const PERF_EVENT: u32 = 41;
    pub const TRACE_KPROBE_MULTI: u32 = 42;
    pub const LSM_CGROUP: u32 = 43;
    pub const STRUCT_OPS: u32 = 44;
    pub const NETFILTER: u32 = 45;
    pub const TCX_INGRESS: u32 = 46;
    pub const TCX_EGRESS: u32 = 47;
    pub const TRACE_UPROBE_MULTI: u32 = 48;
    pub const CGROUP_UNIX_CONNECT: u32 = 49;
    pub const CGROUP_UNIX_SENDMSG: u32 = 50;
    pub const CGROUP_UNIX_RECVMSG: u32 = 51;
    pub const CGROUP_UNIX_GETPEERNAME: u32 = 52;
    pub const CGROUP_UNIX_GETSOCKNAME: u32 = 53;
    pub const NETKIT_PRIMARY: u32 = 54;
    pub const NETKIT_PEER: u32 = 55;
    pub const TRACE_KPROBE_SESSION: u32 = 56;
}

// Kernel prog type numbers without a ProgType variant.
const CGROUP_SOCK: u32 = 9;
const LWT_IN: u32 = 10;
const LWT_OUT: u32 = 11;
const LWT_XMIT: u32 = 12;
const SOCK_OPS: u32 = 13;
const SK_SKB: u32 = 14;
const CGROUP_DEVICE: u32 = 15;
const SK_MSG: u32 = 16;
const CGROUP_SOCK_ADDR: u32 = 18;
const LWT_SEG6LOCAL: u32 = 19;
const LIRC_MODE2: u32 = 20;
const SK_REUSEPORT: u32 = 21;
const FLOW_DISSECTOR: u32 = 22;
const CGROUP_SYSCTL: u32 = 23;
const RAW_TRACEPOINT_WRITABLE: u32 = 24;
const CGROUP_SOCKOPT: u32 = 25;
const STRUCT_OPS: u32 = 27;
const EXT: u32 = 28;
const SK_LOOKUP: u32 = 30;
const NETFILTER: u32 = 32;

/// How a table entry matches: `Exact` only the name itself; `Prefix` the name or the name
/// followed by `/...` (libbpf's `+` entries, and the `kprobe/` style of older sections).
#[derive(Clone, Copy)]
enum M {
    Exact,
    Prefix,
}

use attach_type as at;

// Ordered as libbpf orders its table: more specific names before their prefixes.
const DEFS: &[(&str, M, u32, u32)] = &[
    ("socket", M::Prefix, 1, 0),
    ("sk_reuseport/migrate", M::Exact, SK_REUSEPORT, at::SK_REUSEPORT_SELECT_OR_MIGRATE),
    ("sk_reuseport", M::Exact, SK_REUSEPORT, at::SK_REUSEPORT_SELECT),
    ("kprobe.multi", M::Prefix, 2, at::TRACE_KPROBE_MULTI),
    ("kprobe.session", M::Prefix, 2, at::TRACE_KPROBE_SESSION),
    ("kretprobe.multi", M::Prefix, 2, at::TRACE_KPROBE_MULTI),
    ("uprobe.multi", M::Prefix, 2, at::TRACE_UPROBE_MULTI),
    ("uretprobe.multi", M::Prefix, 2, at::TRACE_UPROBE_MULTI),
    ("uprobe.multi.s", M::Prefix, 2, at::TRACE_UPROBE_MULTI),
    ("uretprobe.multi.s", M::Prefix, 2, at::TRACE_UPROBE_MULTI),
    ("kprobe", M::Prefix, 2, 0),
    ("uprobe", M::Prefix, 2, 0),
    ("uprobe.s", M::Prefix, 2, 0),
    ("kretprobe", M::Prefix, 2, 0),
    ("uretprobe", M::Prefix, 2, 0),
    ("uretprobe.s", M::Prefix, 2, 0),
    ("ksyscall", M::Prefix, 2, 0),
    ("kretsyscall", M::Prefix, 2, 0),
    ("usdt", M::Prefix, 2, 0),
    ("usdt.s", M::Prefix, 2, 0),
    ("tc/ingress", M::Exact, 3, at::TCX_INGRESS),
    ("tc/egress", M::Exact, 3, at::TCX_EGRESS),
    ("tcx/ingress", M::Exact, 3, at::TCX_INGRESS),
    ("tcx/egress", M::Exact, 3, at::TCX_EGRESS),
    ("tc", M::Prefix, 3, 0),
    ("classifier", M::Prefix, 3, 0),
    ("action", M::Prefix, 4, 0),
    ("netkit/primary", M::Exact, 3, at::NETKIT_PRIMARY),
    ("netkit/peer", M::Exact, 3, at::NETKIT_PEER),
    ("tracepoint", M::Prefix, 5, 0),
    ("tp", M::Prefix, 5, 0),
    ("raw_tracepoint.w", M::Prefix, RAW_TRACEPOINT_WRITABLE, 0),
    ("raw_tp.w", M::Prefix, RAW_TRACEPOINT_WRITABLE, 0),
    ("raw_tracepoint", M::Prefix, 17, 0),
    ("raw_tp", M::Prefix, 17, 0),
    ("tp_btf", M::Prefix, 26, at::TRACE_RAW_TP),
    ("fentry.s", M::Prefix, 26, at::TRACE_FENTRY),
    ("fmod_ret.s", M::Prefix, 26, at::MODIFY_RETURN),
    ("fexit.s", M::Prefix, 26, at::TRACE_FEXIT),
    ("fentry", M::Prefix, 26, at::TRACE_FENTRY),
    ("fmod_ret", M::Prefix, 26, at::MODIFY_RETURN),
    ("fexit", M::Prefix, 26, at::TRACE_FEXIT),
    ("freplace", M::Prefix, EXT, 0),
    ("lsm.s", M::Prefix, 29, at::LSM_MAC),
    ("lsm_cgroup", M::Prefix, 29, at::LSM_CGROUP),
    ("lsm", M::Prefix, 29, at::LSM_MAC),
    ("iter.s", M::Prefix, 26, at::TRACE_ITER),
    ("iter", M::Prefix, 26, at::TRACE_ITER),
    ("syscall", M::Exact, 31, 0),
    ("xdp.frags/devmap", M::Exact, 6, at::XDP_DEVMAP),
    ("xdp/devmap", M::Exact, 6, at::XDP_DEVMAP),
    ("xdp.frags/cpumap", M::Exact, 6, at::XDP_CPUMAP),
    ("xdp/cpumap", M::Exact, 6, at::XDP_CPUMAP),
    ("xdp.frags", M::Exact, 6, at::XDP),
    ("xdp", M::Prefix, 6, at::XDP),
    ("perf_event", M::Exact, 7, 0),
    ("lwt_in", M::Exact, LWT_IN, 0),
    ("lwt_out", M::Exact, LWT_OUT, 0),
    ("lwt_xmit", M::Exact, LWT_XMIT, 0),
    ("lwt_seg6local", M::Exact, LWT_SEG6LOCAL, 0),
    ("sockops", M::Exact, SOCK_OPS, at::CGROUP_SOCK_OPS),
    ("sk_skb/stream_parser", M::Exact, SK_SKB, at::SK_SKB_STREAM_PARSER),
    ("sk_skb/stream_verdict", M::Exact, SK_SKB, at::SK_SKB_STREAM_VERDICT),
    ("sk_skb/verdict", M::Exact, SK_SKB, at::SK_SKB_VERDICT),
    ("sk_skb", M::Exact, SK_SKB, 0),
    ("sk_msg", M::Exact, SK_MSG, at::SK_MSG_VERDICT),
    ("lirc_mode2", M::Exact, LIRC_MODE2, at::LIRC_MODE2),
    ("flow_dissector", M::Exact, FLOW_DISSECTOR, at::FLOW_DISSECTOR),
    ("cgroup_skb/ingress", M::Exact, 8, at::CGROUP_INET_INGRESS),
    ("cgroup_skb/egress", M::Exact, 8, at::CGROUP_INET_EGRESS),
    ("cgroup/skb", M::Exact, 8, 0),
    ("cgroup/sock_create", M::Exact, CGROUP_SOCK, at::CGROUP_INET_SOCK_CREATE),
    ("cgroup/sock_release", M::Exact, CGROUP_SOCK, at::CGROUP_INET_SOCK_RELEASE),
    ("cgroup/sock", M::Exact, CGROUP_SOCK, at::CGROUP_INET_SOCK_CREATE),
    ("cgroup/post_bind4", M::Exact, CGROUP_SOCK, at::CGROUP_INET4_POST_BIND),
    ("cgroup/post_bind6", M::Exact, CGROUP_SOCK, at::CGROUP_INET6_POST_BIND),
    ("cgroup/bind4", M::Exact, CGROUP_SOCK_ADDR, at::CGROUP_INET4_BIND),
    ("cgroup/bind6", M::Exact, CGROUP_SOCK_ADDR, at::CGROUP_INET6_BIND),
    ("cgroup/connect4", M::Exact, CGROUP_SOCK_ADDR, at::CGROUP_INET4_CONNECT),
    ("cgroup/connect6", M::Exact, CGROUP_SOCK_ADDR, at::CGROUP_INET6_CONNECT),
    ("cgroup/connect_unix", M::Exact, CGROUP_SOCK_ADDR, at::CGROUP_UNIX_CONNECT),
    ("cgroup/sendmsg4", M::Exact, CGROUP_SOCK_ADDR, at::CGROUP_UDP4_SENDMSG),
    ("cgroup/sendmsg6", M::Exact, CGROUP_SOCK_ADDR, at::CGROUP_UDP6_SENDMSG),
    ("cgroup/sendmsg_unix", M::Exact, CGROUP_SOCK_ADDR, at::CGROUP_UNIX_SENDMSG),
    ("cgroup/recvmsg4", M::Exact, CGROUP_SOCK_ADDR, at::CGROUP_UDP4_RECVMSG),
    ("cgroup/recvmsg6", M::Exact, CGROUP_SOCK_ADDR, at::CGROUP_UDP6_RECVMSG),
    ("cgroup/recvmsg_unix", M::Exact, CGROUP_SOCK_ADDR, at::CGROUP_UNIX_RECVMSG),
    ("cgroup/getpeername4", M::Exact, CGROUP_SOCK_ADDR, at::CGROUP_INET4_GETPEERNAME),
    ("cgroup/getpeername6", M::Exact, CGROUP_SOCK_ADDR, at::CGROUP_INET6_GETPEERNAME),
    ("cgroup/getpeername_unix", M::Exact, CGROUP_SOCK_ADDR, at::CGROUP_UNIX_GETPEERNAME),
    ("cgroup/getsockname4", M::Exact, CGROUP_SOCK_ADDR, at::CGROUP_INET4_GETSOCKNAME),
    ("cgroup/getsockname6", M::Exact, CGROUP_SOCK_ADDR, at::CGROUP_INET6_GETSOCKNAME),
    ("cgroup/getsockname_unix", M::Exact, CGROUP_SOCK_ADDR, at::CGROUP_UNIX_GETSOCKNAME),
    ("cgroup/sysctl", M::Exact, CGROUP_SYSCTL, at::CGROUP_SYSCTL),
    ("cgroup/getsockopt", M::Exact, CGROUP_SOCKOPT, at::CGROUP_GETSOCKOPT),
    ("cgroup/setsockopt", M::Exact, CGROUP_SOCKOPT, at::CGROUP_SETSOCKOPT),
    ("cgroup/dev", M::Exact, CGROUP_DEVICE, at::CGROUP_DEVICE),
    ("struct_ops.s", M::Prefix, STRUCT_OPS, 0),
    ("struct_ops", M::Prefix, STRUCT_OPS, 0),
    ("sk_lookup", M::Exact, SK_LOOKUP, at::SK_LOOKUP),
    ("netfilter", M::Exact, NETFILTER, at::NETFILTER),
];

/// libbpf before 1.0 ("sloppy" mode) and the samples/bpf loaders matched these names as
/// plain prefixes (`xdp_fwd`, `socket1`, `kprobe/x`); tried only when the table above has
/// no match. Longer names first.
const LEGACY: &[(&str, u32, u32)] = &[
    ("xdp_devmap/", 6, at::XDP_DEVMAP),
    ("xdp_cpumap/", 6, at::XDP_CPUMAP),
    ("xdp", 6, at::XDP),
    ("socket", 1, 0),
    ("sk_reuseport", SK_REUSEPORT, at::SK_REUSEPORT_SELECT),
    ("classifier", 3, 0),
    ("action", 4, 0),
    ("perf_event", 7, 0),
    ("lwt_in", LWT_IN, 0),
    ("lwt_out", LWT_OUT, 0),
    ("lwt_xmit", LWT_XMIT, 0),
    ("lwt_seg6local", LWT_SEG6LOCAL, 0),
    ("cgroup_skb/ingress", 8, at::CGROUP_INET_INGRESS),
    ("cgroup_skb/egress", 8, at::CGROUP_INET_EGRESS),
    ("cgroup/skb", 8, 0),
    ("sockops", SOCK_OPS, at::CGROUP_SOCK_OPS),
    ("sk_skb/stream_parser", SK_SKB, at::SK_SKB_STREAM_PARSER),
    ("sk_skb/stream_verdict", SK_SKB, at::SK_SKB_STREAM_VERDICT),
    ("sk_skb", SK_SKB, 0),
    ("sk_msg", SK_MSG, at::SK_MSG_VERDICT),
    ("lirc_mode2", LIRC_MODE2, at::LIRC_MODE2),
    ("flow_dissector", FLOW_DISSECTOR, at::FLOW_DISSECTOR),
];

/// Program types `--type` names: the kernel's names (`sched_cls`), libbpf's section roots
/// (`tc`, `socket`) and common short forms. `(name, kernel prog type, expected attach)`.
const TYPE_NAMES: &[(&str, u32, u32)] = &[
    ("socket", 1, 0),
    ("socket_filter", 1, 0),
    ("kprobe", 2, 0),
    ("tc", 3, 0),
    ("sched_cls", 3, 0),
    ("classifier", 3, 0),
    ("action", 4, 0),
    ("sched_act", 4, 0),
    ("tracepoint", 5, 0),
    ("xdp", 6, at::XDP),
    ("perf_event", 7, 0),
    ("cgroup_skb", 8, 0),
    ("cgroup_sock", CGROUP_SOCK, 0),
    ("lwt_in", LWT_IN, 0),
    ("lwt_out", LWT_OUT, 0),
    ("lwt_xmit", LWT_XMIT, 0),
    ("sock_ops", SOCK_OPS, at::CGROUP_SOCK_OPS),
    ("sockops", SOCK_OPS, at::CGROUP_SOCK_OPS),
    ("sk_skb", SK_SKB, 0),
    ("cgroup_device", CGROUP_DEVICE, at::CGROUP_DEVICE),
    ("sk_msg", SK_MSG, at::SK_MSG_VERDICT),
    ("raw_tracepoint", 17, 0),
    ("cgroup_sock_addr", CGROUP_SOCK_ADDR, 0),
    ("lwt_seg6local", LWT_SEG6LOCAL, 0),
    ("lirc_mode2", LIRC_MODE2, at::LIRC_MODE2),
    ("sk_reuseport", SK_REUSEPORT, at::SK_REUSEPORT_SELECT),
    ("flow_dissector", FLOW_DISSECTOR, at::FLOW_DISSECTOR),
    ("cgroup_sysctl", CGROUP_SYSCTL, at::CGROUP_SYSCTL),
    ("syscall", 31, 0),
    ("sk_lookup", SK_LOOKUP, at::SK_LOOKUP),
    ("netfilter", NETFILTER, at::NETFILTER),
];

/// The names `--type` accepts, for messages.
pub fn prog_type_names() -> Vec<&'static str> {
    TYPE_NAMES.iter().map(|t| t.0).collect()
}

/// `(prog_type, kernel prog type number, expected attach type)` for a `--type` value.
pub fn prog_type_from_name(name: &str) -> Option<(ProgType, u32, u32)> {
    TYPE_NAMES.iter().find(|t| t.0 == name).map(|&(_, id, at)| (enum_of(id), id, at))
}

fn matches(sec: &str, pat: &str, m: M) -> bool {
    match m {
        M::Exact => sec == pat,
        M::Prefix => {
            sec == pat || (sec.len() > pat.len() && sec.starts_with(pat) && sec.as_bytes()[pat.len()] == b'/')
        }
    }
}

fn enum_of(id: u32) -> ProgType {
    match id {
        1 => ProgType::SocketFilter,
        2 => ProgType::Kprobe,
        3 => ProgType::SchedCls,
        4 => ProgType::SchedAct,
        5 => ProgType::Tracepoint,
        6 => ProgType::Xdp,
        7 => ProgType::PerfEvent,
        8 => ProgType::CgroupSkb,
        17 => ProgType::RawTracepoint,
        26 => ProgType::Tracing,
        29 => ProgType::Lsm,
        31 => ProgType::Syscall,
        _ => ProgType::Unspec,
    }
}

/// `(prog_type, kernel prog type number, expected attach type)` for a section name, or
/// `(Unspec, 0, 0)` for a name libbpf would not recognize.
pub fn prog_type_from_section(section: &str) -> (ProgType, u32, u32) {
    // `SEC("?xdp")`: libbpf's "do not autoload" marker.
    let section = section.strip_prefix('?').unwrap_or(section);
    for &(pat, m, id, attach) in DEFS {
        if matches(section, pat, m) {
            return (enum_of(id), id, attach);
        }
    }
    for &(pfx, id, attach) in LEGACY {
        if section.starts_with(pfx) {
            return (enum_of(id), id, attach);
        }
    }
    (ProgType::Unspec, 0, 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn libbpf_names() {
        // Values from include/uapi/linux/bpf.h and libbpf's section_defs.
        assert_eq!(prog_type_from_section("xdp"), (ProgType::Xdp, 6, 37));
        assert_eq!(prog_type_from_section("xdp.frags"), (ProgType::Xdp, 6, 37));
        assert_eq!(prog_type_from_section("xdp/devmap"), (ProgType::Xdp, 6, 33));
        assert_eq!(prog_type_from_section("tc"), (ProgType::SchedCls, 3, 0));
        assert_eq!(prog_type_from_section("classifier"), (ProgType::SchedCls, 3, 0));
        assert_eq!(prog_type_from_section("tcx/ingress"), (ProgType::SchedCls, 3, 46));
        assert_eq!(prog_type_from_section("socket"), (ProgType::SocketFilter, 1, 0));
        assert_eq!(prog_type_from_section("kprobe/sys_open"), (ProgType::Kprobe, 2, 0));
        assert_eq!(prog_type_from_section("kretprobe/x"), (ProgType::Kprobe, 2, 0));
        assert_eq!(prog_type_from_section("uprobe"), (ProgType::Kprobe, 2, 0));
        assert_eq!(prog_type_from_section("tracepoint/syscalls/x"), (ProgType::Tracepoint, 5, 0));
        assert_eq!(prog_type_from_section("tp/a/b"), (ProgType::Tracepoint, 5, 0));
        assert_eq!(prog_type_from_section("raw_tracepoint/a"), (ProgType::RawTracepoint, 17, 0));
        assert_eq!(prog_type_from_section("raw_tp/a"), (ProgType::RawTracepoint, 17, 0));
        assert_eq!(prog_type_from_section("fentry/func"), (ProgType::Tracing, 26, 24));
        assert_eq!(prog_type_from_section("fexit/func"), (ProgType::Tracing, 26, 25));
        assert_eq!(prog_type_from_section("lsm/file_open"), (ProgType::Lsm, 29, 27));
        assert_eq!(prog_type_from_section("cgroup_skb/ingress"), (ProgType::CgroupSkb, 8, 0));
        assert_eq!(prog_type_from_section("cgroup_skb/egress"), (ProgType::CgroupSkb, 8, 1));
        assert_eq!(prog_type_from_section("syscall"), (ProgType::Syscall, 31, 0));
        assert_eq!(prog_type_from_section("perf_event"), (ProgType::PerfEvent, 7, 0));
        assert_eq!(prog_type_from_section("sockops"), (ProgType::Unspec, 13, 3));
        assert_eq!(prog_type_from_section("?xdp"), (ProgType::Xdp, 6, 37));
        // Not libbpf names (`xdpfoo` is a legacy prefix match, see below).
        assert_eq!(prog_type_from_section("xdpfoo"), (ProgType::Xdp, 6, 37));
        assert_eq!(prog_type_from_section("tcfoo"), (ProgType::Unspec, 0, 0));
        assert_eq!(prog_type_from_section("prog"), (ProgType::Unspec, 0, 0));
        assert_eq!(prog_type_from_section("redirect_xmit"), (ProgType::Unspec, 0, 0));
        assert_eq!(prog_type_from_section("tc_mark"), (ProgType::Unspec, 0, 0));
        // libbpf 1.x names added since 6.6.
        assert_eq!(prog_type_from_section("netkit/peer"), (ProgType::SchedCls, 3, 55));
        assert_eq!(prog_type_from_section("kprobe.session/f"), (ProgType::Kprobe, 2, 56));
        assert_eq!(prog_type_from_section("cgroup/connect_unix"), (ProgType::Unspec, 18, 49));
        assert_eq!(prog_type_from_section("cgroup/getsockname_unix"), (ProgType::Unspec, 18, 53));
    }

    #[test]
    fn legacy_prefix_names() {
        // Section names of Linux 6.12 samples/bpf that pre-1.0 libbpf matched by prefix.
        assert_eq!(prog_type_from_section("xdp_fwd"), (ProgType::Xdp, 6, 37));
        assert_eq!(prog_type_from_section("xdp_fwd_direct"), (ProgType::Xdp, 6, 37));
        assert_eq!(prog_type_from_section("xdp_icmp"), (ProgType::Xdp, 6, 37));
        assert_eq!(prog_type_from_section("xdp_devmap/x"), (ProgType::Xdp, 6, 33));
        assert_eq!(prog_type_from_section("socket1"), (ProgType::SocketFilter, 1, 0));
        assert_eq!(prog_type_from_section("socket2"), (ProgType::SocketFilter, 1, 0));
        assert_eq!(prog_type_from_section("sockops_x"), (ProgType::Unspec, 13, 3));
        // Exact libbpf 1.x entries still win over the legacy prefixes.
        assert_eq!(prog_type_from_section("xdp.frags"), (ProgType::Xdp, 6, 37));
        assert_eq!(prog_type_from_section("sk_skb/verdict"), (ProgType::Unspec, 14, 38));
    }

    #[test]
    fn type_names() {
        assert_eq!(prog_type_from_name("xdp"), Some((ProgType::Xdp, 6, 37)));
        assert_eq!(prog_type_from_name("tc"), Some((ProgType::SchedCls, 3, 0)));
        assert_eq!(prog_type_from_name("socket"), Some((ProgType::SocketFilter, 1, 0)));
        assert_eq!(prog_type_from_name("lwt_xmit"), Some((ProgType::Unspec, 12, 0)));
        assert_eq!(prog_type_from_name("bogus"), None);
        for n in prog_type_names() {
            assert!(prog_type_from_name(n).is_some_and(|t| t.1 != 0), "{n}");
        }
    }
}
