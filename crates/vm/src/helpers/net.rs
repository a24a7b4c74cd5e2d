//! Networking helpers whose answer depends on more than the packet: the skb's metadata
//! (headers, checksum state, tunnel key), the devices and the routing table.
//!
//! Everything the kernel's answer in BPF_PROG_TEST_RUN depends on is modelled here and
//! deterministic:
//! - the skb ([`SkbModel`]): built as BPF_PROG_TEST_RUN builds it (CHECKSUM_NONE, no
//!   tunnel metadata, no GSO unless the ctx sets gso_size, network header after the
//!   Ethernet header, transport header unset); the helpers keep it up to date;
//! - the devices and the FIB ([`NetModel`], on [`crate::Vm::net`]): by default only the
//!   loopback device (ifindex 1, MTU 65536, 14-byte header, forwarding off, as the test
//!   run's device on a host that does not forward), so `bpf_fib_lookup` answers
//!   `BPF_FIB_LKUP_RET_FWD_DISABLED` for it and -ENODEV for other ifindexes, and
//!   `bpf_check_mtu` checks against 65536; a harness adds devices and routes (a matching
//!   route answers SUCCESS with its egress device and MACs: the model has no neighbour
//!   table, does not check `tot_len` against the MTU and ignores DIRECT/TBID/MARK);
//! - sockets: none, so `bpf_sk_lookup_*`/`bpf_skc_lookup_tcp` return NULL (a host socket
//!   matching the tuple would make the kernel differ);
//! - `bpf_get_hash_recalc`: the kernel hashes the flow with a per-boot random key; we
//!   use FNV-1a of the packet bytes (never 0), stored as the skb hash.
//!
//! Packet-resizing helpers are offered to tc programs only (the kernel's verifier refuses
//! them in socket filters). The skb packet buffer has room for the kernel's largest skb
//! ([`SKB_MAX_LEN`]) on either side, so nothing moves.

use crate::ctx::{self, skb, CtxKind};
use crate::helpers::{fault, with_state, RunState};
use crate::maps::errno;

const EINVAL: u64 = (-errno::EINVAL) as u64;
const EFAULT: i64 = 14;
const ENODEV: i64 = 19;
const ENOENT: i64 = 2;
const EPROTO: i64 = 71;
const EALREADY: i64 = 114;
const EAFNOSUPPORT: i64 = 97;
const EACCES: i64 = 13;

pub use crate::ctx::SKB_MAX_LEN;

const ETH_P_IP: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86dd;
const ETH_P_8021Q: u16 = 0x8100;
const ETH_P_8021AD: u16 = 0x88a8;
const ETH_HLEN: u64 = 14;
const VLAN_HLEN: u64 = 4;

/// A device of the model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetDevice {
    pub ifindex: u32,
    pub mtu: u32,
    pub hard_header_len: u32,
    /// IPv4/IPv6 forwarding enabled (else fib_lookup answers FWD_DISABLED).
    pub forwarding: bool,
}

/// A route of the model: packets to `dst/prefix_len` (family 2 = IPv4, 10 = IPv6; address
/// bytes in network order) leave through `ifindex` towards `dmac`, from `smac`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FibRoute {
    pub family: u8,
    pub dst: [u8; 16],
    pub prefix_len: u8,
    pub ifindex: u32,
    pub smac: [u8; 6],
    pub dmac: [u8; 6],
}

/// Devices and routes `bpf_fib_lookup`, `bpf_check_mtu` and friends see.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetModel {
    pub devices: Vec<NetDevice>,
    pub routes: Vec<FibRoute>,
}

impl Default for NetModel {
    fn default() -> NetModel {
        NetModel {
            devices: vec![NetDevice { ifindex: 1, mtu: 65536, hard_header_len: 14, forwarding: false }],
            routes: Vec::new(),
        }
    }
}

impl NetModel {
    pub fn device(&self, ifindex: u32) -> Option<&NetDevice> {
        self.devices.iter().find(|d| d.ifindex == ifindex)
    }
}

/// IP tunnel metadata set by `bpf_skb_set_tunnel_key` (as the kernel keeps it: `dst` is
/// the remote end, `src` the local one).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TunnelInfo {
    pub ipv6: bool,
    pub id: u32,
    pub tos: u8,
    pub ttl: u8,
    /// `IP_TUNNEL_*_BIT` flags, low 16 bits.
    pub flags: u16,
    pub label: u32,
    /// IPv4: host-order value in the first word; IPv6: the 16 bytes.
    pub dst: [u8; 16],
    pub src: [u8; 16],
}

/// The skb state the helpers below read and change (see the module doc).
#[derive(Debug, Clone, Default)]
pub struct SkbModel {
    /// Network header offset from `data`.
    pub net_off: u64,
    /// `skb->mac_len`: 0 in a test run's skb until a helper resets it.
    pub mac_len: u64,
    /// Transport header offset from `data`, once set.
    pub trans_off: Option<u64>,
    pub encapsulation: bool,
    /// CHECKSUM_UNNECESSARY (else CHECKSUM_NONE) and its level.
    pub csum_unnecessary: bool,
    pub csum_level: u8,
    pub tunnel: Option<TunnelInfo>,
    /// Tunnel options (`bpf_skb_set_tunnel_opt`), cleared by `set_tunnel_key`.
    pub tunnel_opts: Vec<u8>,
    /// The packet buffer `[start, end)` the packet may grow into.
    pub buf: (u64, u64),
}

impl SkbModel {
    /// The skb BPF_PROG_TEST_RUN builds for context `kind`.
    pub fn for_run(kind: CtxKind, buf: (u64, u64)) -> SkbModel {
        let net_off = if kind == (CtxKind::Skb { tc: true }) { ETH_HLEN } else { 0 };
        SkbModel { net_off, buf, ..SkbModel::default() }
    }
}

fn rd32(a: u64) -> u32 {
    // SAFETY: callers pass addresses inside our live context structure.
    unsafe { std::ptr::read_unaligned(a as *const u32) }
}
fn wr32(a: u64, v: u32) {
    // SAFETY: as rd32.
    unsafe { std::ptr::write_unaligned(a as *mut u32, v) }
}
fn rd64(a: u64) -> u64 {
    // SAFETY: as rd32.
    unsafe { std::ptr::read_unaligned(a as *const u64) }
}
fn wr64(a: u64, v: u64) {
    // SAFETY: as rd32.
    unsafe { std::ptr::write_unaligned(a as *mut u64, v) }
}

/// The tc skb of this run, or a fault naming the helper.
fn tc_skb(st: &mut RunState, ctx: u64, what: &str) -> Option<u64> {
    if st.ctx_kind != (CtxKind::Skb { tc: true }) || ctx != st.ctx {
        fault(st, format!("bpf_{what}: {ctx:#x} is not the tc skb context of this run (the kernel offers it to tc programs only)"));
        return None;
    }
    Some(ctx)
}

fn any_skb(st: &mut RunState, ctx: u64, what: &str) -> Option<u64> {
    if !matches!(st.ctx_kind, CtxKind::Skb { .. }) || ctx != st.ctx {
        fault(st, format!("bpf_{what}: {ctx:#x} is not the skb context of this run"));
        return None;
    }
    Some(ctx)
}

/// `[data, data_end)` of the skb.
fn skb_data(ctx: u64) -> (u64, u64) {
    (rd64(ctx + ctx::SKB_DATA as u64), rd64(ctx + ctx::SKB_DATA_END as u64))
}

/// Sets the skb's data pointers (and `len`) after a resize.
fn set_skb_data(ctx: u64, data: u64, end: u64) {
    wr64(ctx + ctx::SKB_DATA as u64, data);
    wr64(ctx + ctx::SKB_DATA_META as u64, data);
    wr64(ctx + ctx::SKB_DATA_END as u64, end);
    wr32(ctx + skb::LEN as u64, (end - data) as u32);
}

fn protocol(ctx: u64) -> u16 {
    u16::from_be(rd32(ctx + skb::PROTOCOL as u64) as u16)
}
fn set_protocol(ctx: u64, p: u16) {
    wr32(ctx + skb::PROTOCOL as u64, p.to_be() as u32);
}

fn gso(ctx: u64) -> bool {
    rd32(ctx + skb::GSO_SIZE as u64) != 0
}

/// Inserts `len` zero bytes at `off` of the packet, moving the bytes before it towards the
/// buffer start (`skb_push` + memmove). False when the buffer has no room left.
fn push_at(st: &RunState, ctx: u64, off: u64, len: u64) -> bool {
    let (d, e) = skb_data(ctx);
    if d - st.skb.buf.0 < len || off > e - d {
        return false;
    }
    let nd = d - len;
    // SAFETY: [nd, e) lies in the packet buffer (checked above).
    unsafe {
        std::ptr::copy(d as *const u8, nd as *mut u8, off as usize);
        std::ptr::write_bytes((nd + off) as *mut u8, 0, len as usize);
    }
    set_skb_data(ctx, nd, e);
    true
}

/// Removes `len` bytes at `off` (memmove of the bytes before it, then `skb_pull`).
fn pop_at(ctx: u64, off: u64, len: u64) {
    let (d, e) = skb_data(ctx);
    // SAFETY: callers checked off + len <= e - d.
    unsafe { std::ptr::copy(d as *const u8, (d + len) as *mut u8, off as usize) };
    set_skb_data(ctx, d + len, e);
}

// ---- XDP ----

fn xdp_ctx(st: &mut RunState, ctx: u64, what: &str) -> Option<(u64, u64)> {
    if st.ctx_kind != CtxKind::Xdp || ctx != st.ctx {
        fault(st, format!("bpf_{what}: {ctx:#x} is not the XDP context of this run"));
        return None;
    }
    Some((rd64(ctx + ctx::XDP_DATA as u64), rd64(ctx + ctx::XDP_DATA_END as u64)))
}

/// `bpf_xdp_pointer`'s checks: -EFAULT for offsets or lengths past 64 KiB, -EINVAL past
/// the packet (the buffer is linear here). The buffer is not cleared on error.
fn xdp_range(d: u64, e: u64, off: u64, len: u64) -> Result<u64, u64> {
    let (off, len) = (off as u32 as u64, len as u32 as u64);
    if off > 0xffff || len > 0xffff {
        return Err((-EFAULT) as u64);
    }
    if off + len > e - d {
        return Err(EINVAL);
    }
    Ok(d + off)
}

pub(crate) extern "C" fn h_xdp_load_bytes(ctx: u64, off: u64, buf: u64, len: u64, _: u64) -> u64 {
    with_state(EINVAL, |st| {
        let Some((d, e)) = xdp_ctx(st, ctx, "xdp_load_bytes") else { return EINVAL };
        match xdp_range(d, e, off, len) {
            Ok(p) => {
                // SAFETY: source inside the packet; destination checked by the caller.
                unsafe { std::ptr::copy(p as *const u8, buf as *mut u8, len as u32 as usize) };
                0
            }
            Err(r) => r,
        }
    })
}

pub(crate) extern "C" fn h_xdp_store_bytes(ctx: u64, off: u64, buf: u64, len: u64, _: u64) -> u64 {
    with_state(EINVAL, |st| {
        let Some((d, e)) = xdp_ctx(st, ctx, "xdp_store_bytes") else { return EINVAL };
        match xdp_range(d, e, off, len) {
            Ok(p) => {
                // SAFETY: destination inside the packet; source checked by the caller.
                unsafe { std::ptr::copy(buf as *const u8, p as *mut u8, len as u32 as usize) };
                0
            }
            Err(r) => r,
        }
    })
}

// ---- skb metadata ----

/// FNV-1a over the packet bytes (the model of the kernel's keyed flow hash), never 0.
fn packet_hash(d: u64, e: u64) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for a in d..e {
        // SAFETY: [d, e) is the packet.
        h ^= unsafe { *(a as *const u8) } as u32;
        h = h.wrapping_mul(0x0100_0193);
    }
    h.max(1)
}

pub(crate) extern "C" fn h_get_hash_recalc(ctx: u64, _: u64, _: u64, _: u64, _: u64) -> u64 {
    with_state(0, |st| {
        let Some(c) = any_skb(st, ctx, "get_hash_recalc") else { return 0 };
        let cur = rd32(c + skb::HASH as u64);
        if cur != 0 {
            return cur as u64;
        }
        let (d, e) = skb_data(c);
        let h = packet_hash(d, e);
        wr32(c + skb::HASH as u64, h);
        h as u64
    })
}

pub(crate) extern "C" fn h_set_hash_invalid(ctx: u64, _: u64, _: u64, _: u64, _: u64) -> u64 {
    with_state(0, |st| {
        if let Some(c) = tc_skb(st, ctx, "set_hash_invalid") {
            wr32(c + skb::HASH as u64, 0);
        }
        0
    })
}

pub(crate) extern "C" fn h_set_hash(ctx: u64, hash: u64, _: u64, _: u64, _: u64) -> u64 {
    with_state(0, |st| {
        if let Some(c) = tc_skb(st, ctx, "set_hash") {
            wr32(c + skb::HASH as u64, hash as u32);
        }
        0
    })
}

/// `bpf_csum_level` on CHECKSUM_NONE / CHECKSUM_UNNECESSARY skbs (`__skb_*_checksum_unnecessary`).
pub(crate) extern "C" fn h_csum_level(ctx: u64, level: u64, _: u64, _: u64, _: u64) -> u64 {
    with_state(EINVAL, |st| {
        if tc_skb(st, ctx, "csum_level").is_none() {
            return EINVAL;
        }
        let s = &mut st.skb;
        match level {
            0 => return if s.csum_unnecessary { s.csum_level as u64 } else { (-EACCES) as u64 },
            1 if s.csum_unnecessary => s.csum_level = (s.csum_level + 1).min(3),
            1 => {
                s.csum_unnecessary = true;
                s.csum_level = 0;
            }
            2 if s.csum_unnecessary && s.csum_level == 0 => s.csum_unnecessary = false,
            2 if s.csum_unnecessary => s.csum_level -= 1,
            2 => {}
            3 => {
                s.csum_unnecessary = false;
                s.csum_level = 0;
            }
            _ => return EINVAL,
        }
        0
    })
}

/// `bpf_csum_update`: only CHECKSUM_COMPLETE skbs carry a checksum to update; ours never do.
pub(crate) extern "C" fn h_csum_update(ctx: u64, _: u64, _: u64, _: u64, _: u64) -> u64 {
    with_state(EINVAL, |st| match tc_skb(st, ctx, "csum_update") {
        Some(_) => (-errno::ENOTSUPP) as u64,
        None => EINVAL,
    })
}

// ---- skb resizing ----

pub(crate) extern "C" fn h_skb_pull_data(ctx: u64, len: u64, _: u64, _: u64, _: u64) -> u64 {
    with_state(EINVAL, |st| {
        let Some(c) = any_skb(st, ctx, "skb_pull_data") else { return EINVAL };
        let (d, e) = skb_data(c);
        // The packet is linear: anything up to its length is already "pulled".
        if len as u32 as u64 > e - d {
            return (-errno::ENOMEM) as u64;
        }
        0
    })
}

pub(crate) extern "C" fn h_skb_change_tail(ctx: u64, new_len: u64, flags: u64, _: u64, _: u64) -> u64 {
    with_state(EINVAL, |st| {
        let Some(c) = tc_skb(st, ctx, "skb_change_tail") else { return EINVAL };
        let new_len = new_len as u32 as u64;
        let min = st.skb.trans_off.unwrap_or(st.skb.net_off);
        if flags != 0 || new_len > SKB_MAX_LEN || new_len < min {
            return EINVAL;
        }
        if st.skb.encapsulation {
            return (-errno::ENOTSUPP) as u64;
        }
        let (d, e) = skb_data(c);
        let ne = d + new_len;
        if ne > st.skb.buf.1 {
            return (-errno::ENOMEM) as u64;
        }
        if ne > e {
            // SAFETY: [e, ne) is inside the buffer (checked above).
            unsafe { std::ptr::write_bytes(e as *mut u8, 0, (ne - e) as usize) };
        }
        set_skb_data(c, d, ne);
        if gso(c) {
            // skb_gso_reset
            wr32(c + skb::GSO_SIZE as u64, 0);
            wr32(c + skb::GSO_SEGS as u64, 0);
        }
        0
    })
}

pub(crate) extern "C" fn h_skb_change_head(ctx: u64, room: u64, flags: u64, _: u64, _: u64) -> u64 {
    with_state(EINVAL, |st| {
        let Some(c) = tc_skb(st, ctx, "skb_change_head") else { return EINVAL };
        let (d, e) = skb_data(c);
        let room = room as u32 as u64;
        let new_len = (e - d + room) as u32 as u64;
        if flags != 0 || (!gso(c) && new_len > SKB_MAX_LEN) || new_len < e - d {
            return EINVAL;
        }
        if !push_at(st, c, 0, room) {
            return (-errno::ENOMEM) as u64;
        }
        // The mac header is reset to the new start; the network header stays put.
        st.skb.net_off += room;
        st.skb.mac_len = st.skb.net_off;
        if let Some(t) = &mut st.skb.trans_off {
            *t += room;
        }
        0
    })
}

const ADJ_FIXED_GSO: u64 = 1;
const ADJ_ENCAP_L3_IPV4: u64 = 1 << 1;
const ADJ_ENCAP_L3_IPV6: u64 = 1 << 2;
const ADJ_ENCAP_L4_GRE: u64 = 1 << 3;
const ADJ_ENCAP_L4_UDP: u64 = 1 << 4;
const ADJ_NO_CSUM_RESET: u64 = 1 << 5;
const ADJ_ENCAP_L2_ETH: u64 = 1 << 6;
const ADJ_DECAP_L3_IPV4: u64 = 1 << 7;
const ADJ_DECAP_L3_IPV6: u64 = 1 << 8;
const ADJ_ENCAP_L2_SHIFT: u64 = 56;
const ADJ_ENCAP_L3: u64 = ADJ_ENCAP_L3_IPV4 | ADJ_ENCAP_L3_IPV6;
const ADJ_DECAP_L3: u64 = ADJ_DECAP_L3_IPV4 | ADJ_DECAP_L3_IPV6;
const ADJ_MASK: u64 = ADJ_FIXED_GSO
    | ADJ_ENCAP_L3
    | ADJ_ENCAP_L4_GRE
    | ADJ_ENCAP_L4_UDP
    | ADJ_ENCAP_L2_ETH
    | (0xff << ADJ_ENCAP_L2_SHIFT)
    | ADJ_DECAP_L3;

fn net_base_len(proto: u16) -> Option<u64> {
    match proto {
        ETH_P_IP => Some(20),
        ETH_P_IPV6 => Some(40),
        _ => None,
    }
}

/// `bpf_skb_adjust_room` (filter.c: bpf_skb_net_grow/shrink) on a non-GSO skb; a GSO skb
/// from the test run has no gso_type, so both directions refuse it with -ENOTSUPP.
pub(crate) extern "C" fn h_skb_adjust_room(ctx: u64, len_diff: u64, mode: u64, flags: u64, _: u64) -> u64 {
    with_state(EINVAL, |st| {
        let Some(c) = tc_skb(st, ctx, "skb_adjust_room") else { return EINVAL };
        let diff = len_diff as i32;
        let abs = diff.unsigned_abs() as u64;
        let shrink = diff < 0;
        if flags & !(ADJ_MASK | ADJ_NO_CSUM_RESET) != 0 {
            return EINVAL;
        }
        if abs > 0xfff {
            return (-EFAULT) as u64;
        }
        let proto = protocol(c);
        let Some(base) = net_base_len(proto) else { return (-errno::ENOTSUPP) as u64 };
        let mut len_min = base;
        let mac_len = st.skb.net_off;
        let off = match mode as u32 {
            0 => mac_len + base, // BPF_ADJ_ROOM_NET
            1 => mac_len,        // BPF_ADJ_ROOM_MAC
            _ => return (-errno::ENOTSUPP) as u64,
        };
        if flags & ADJ_DECAP_L3 != 0 {
            if !shrink {
                return EINVAL;
            }
            len_min = match flags & ADJ_DECAP_L3 {
                ADJ_DECAP_L3_IPV4 => 20,
                ADJ_DECAP_L3_IPV6 => 40,
                _ => return EINVAL,
            };
        }
        let (d, e) = skb_data(c);
        let len = e - d;
        let len_cur = len.saturating_sub(st.skb.net_off);
        if (shrink && (abs >= len_cur || len_cur - abs < len_min)) || (!shrink && len + abs > SKB_MAX_LEN && !gso(c)) {
            return (-errno::ENOTSUPP) as u64;
        }
        let ret = if shrink { net_shrink(st, c, off, abs, flags) } else { net_grow(st, c, off, abs, flags) };
        if ret == 0 && flags & ADJ_NO_CSUM_RESET == 0 {
            st.skb.csum_unnecessary = false;
            st.skb.csum_level = 0;
        }
        ret as u64
    })
}

fn net_grow(st: &mut RunState, c: u64, off: u64, len: u64, flags: u64) -> i64 {
    let inner_mac = flags >> ADJ_ENCAP_L2_SHIFT;
    let encap = flags & ADJ_ENCAP_L3 != 0;
    if gso(c) {
        return -errno::ENOTSUPP;
    }
    if encap {
        if flags & ADJ_ENCAP_L3 == ADJ_ENCAP_L3 || flags & (ADJ_ENCAP_L4_GRE | ADJ_ENCAP_L4_UDP) == (ADJ_ENCAP_L4_GRE | ADJ_ENCAP_L4_UDP) {
            return -errno::EINVAL;
        }
        if flags & ADJ_ENCAP_L2_ETH != 0 && inner_mac < ETH_HLEN {
            return -errno::EINVAL;
        }
        if st.skb.encapsulation {
            return -EALREADY;
        }
        if inner_mac > len {
            return -errno::EINVAL;
        }
    }
    let mac_len = st.skb.net_off;
    let trans_same = st.skb.trans_off == Some(st.skb.net_off);
    if !push_at(st, c, off, len) {
        return -errno::ENOMEM;
    }
    // mac and network headers move with the pushed bytes: their offsets from data stay.
    if let Some(t) = &mut st.skb.trans_off {
        if !trans_same {
            *t += len;
        }
    }
    if encap {
        st.skb.encapsulation = true;
        st.skb.net_off = mac_len;
        if flags & (ADJ_ENCAP_L4_GRE | ADJ_ENCAP_L4_UDP) != 0 {
            let nh = if flags & ADJ_ENCAP_L3_IPV6 != 0 { 40 } else { 20 };
            st.skb.trans_off = Some(mac_len + nh);
        }
        let proto = protocol(c);
        if proto == ETH_P_IP && flags & ADJ_ENCAP_L3_IPV6 != 0 {
            set_protocol(c, ETH_P_IPV6);
        } else if proto == ETH_P_IPV6 && flags & ADJ_ENCAP_L3_IPV4 != 0 {
            set_protocol(c, ETH_P_IP);
        }
    }
    0
}

fn net_shrink(st: &mut RunState, c: u64, off: u64, len: u64, flags: u64) -> i64 {
    if flags & !(ADJ_FIXED_GSO | ADJ_DECAP_L3 | ADJ_NO_CSUM_RESET) != 0 {
        return -errno::EINVAL;
    }
    if gso(c) {
        return -errno::ENOTSUPP;
    }
    let (d, e) = skb_data(c);
    if off + len > e - d {
        return -errno::ENOMEM;
    }
    let trans_same = st.skb.trans_off == Some(st.skb.net_off);
    pop_at(c, off, len);
    if let Some(t) = &mut st.skb.trans_off {
        if !trans_same {
            *t = t.saturating_sub(len);
        }
    }
    let proto = protocol(c);
    if proto == ETH_P_IP && flags & ADJ_DECAP_L3_IPV6 != 0 {
        set_protocol(c, ETH_P_IPV6);
    } else if proto == ETH_P_IPV6 && flags & ADJ_DECAP_L3_IPV4 != 0 {
        set_protocol(c, ETH_P_IP);
    }
    0
}

/// `bpf_skb_change_proto`: IPv4 <-> IPv6 by growing or shrinking the network header by
/// 20 bytes (zeros inserted, or bytes removed, right after the MAC header); the program
/// writes the new header itself. Clears the hash.
pub(crate) extern "C" fn h_skb_change_proto(ctx: u64, proto: u64, flags: u64, _: u64, _: u64) -> u64 {
    with_state(EINVAL, |st| {
        let Some(c) = tc_skb(st, ctx, "skb_change_proto") else { return EINVAL };
        if flags != 0 {
            return EINVAL;
        }
        let to = u16::from_be(proto as u16);
        let off = st.skb.net_off;
        let trans_same = st.skb.trans_off == Some(st.skb.net_off);
        match (protocol(c), to) {
            (ETH_P_IP, ETH_P_IPV6) => {
                if !push_at(st, c, off, 20) {
                    return (-errno::ENOMEM) as u64;
                }
                if let Some(t) = &mut st.skb.trans_off {
                    if !trans_same {
                        *t += 20;
                    }
                }
            }
            (ETH_P_IPV6, ETH_P_IP) => {
                let (d, e) = skb_data(c);
                if off + 20 > e - d {
                    return (-errno::ENOMEM) as u64;
                }
                pop_at(c, off, 20);
                if let Some(t) = &mut st.skb.trans_off {
                    if !trans_same {
                        *t = t.saturating_sub(20);
                    }
                }
            }
            _ => return (-errno::ENOTSUPP) as u64,
        }
        set_protocol(c, to);
        wr32(c + skb::HASH as u64, 0);
        0
    })
}

// ---- VLAN ----

fn vlan_fields(c: u64) -> (bool, u16, u16) {
    let present = rd32(c + skb::VLAN_PRESENT as u64) != 0;
    let tci = rd32(c + skb::VLAN_TCI as u64) as u16;
    let proto = u16::from_be(rd32(c + skb::VLAN_PROTO as u64) as u16);
    (present, tci, proto)
}

fn set_vlan(c: u64, tag: Option<(u16, u16)>) {
    let (p, tci, proto) = match tag {
        Some((proto, tci)) => (1, tci as u32, proto.to_be() as u32),
        None => (0, 0, 0),
    };
    wr32(c + skb::VLAN_PRESENT as u64, p);
    wr32(c + skb::VLAN_TCI as u64, tci);
    wr32(c + skb::VLAN_PROTO as u64, proto);
}

/// `skb_vlan_push`: the first tag goes to the (hardware-accelerated) skb metadata; a tag
/// already there is first written into the packet after the MAC addresses.
pub(crate) extern "C" fn h_skb_vlan_push(ctx: u64, proto: u64, tci: u64, _: u64, _: u64) -> u64 {
    with_state(EINVAL, |st| {
        let Some(c) = tc_skb(st, ctx, "skb_vlan_push") else { return EINVAL };
        let mut vproto = u16::from_be(proto as u16);
        if vproto != ETH_P_8021Q && vproto != ETH_P_8021AD {
            vproto = ETH_P_8021Q;
        }
        let (present, otci, oproto) = vlan_fields(c);
        if present {
            let (d, e) = skb_data(c);
            if e - d < ETH_HLEN {
                return EINVAL;
            }
            if !push_at(st, c, 2 * 6, VLAN_HLEN) {
                return (-errno::ENOMEM) as u64;
            }
            let (d, _) = skb_data(c);
            let tag = [oproto.to_be_bytes(), otci.to_be_bytes()].concat();
            // SAFETY: 4 bytes at d + 12, inside the packet just grown.
            unsafe { std::ptr::copy_nonoverlapping(tag.as_ptr(), (d + 12) as *mut u8, 4) };
            set_protocol(c, oproto);
            st.skb.net_off += VLAN_HLEN;
            if let Some(t) = &mut st.skb.trans_off {
                *t += VLAN_HLEN;
            }
        }
        set_vlan(c, Some((vproto, tci as u16)));
        st.skb.mac_len = st.skb.net_off;
        0
    })
}

/// `__skb_vlan_pop`: removes the tag after the MAC addresses; the encapsulated type
/// becomes the protocol. Returns the TCI.
fn vlan_pop_packet(st: &mut RunState, c: u64) -> Result<u16, i64> {
    let (d, e) = skb_data(c);
    if e - d < ETH_HLEN + VLAN_HLEN {
        return Err(-errno::ENOMEM);
    }
    // SAFETY: 18 bytes of packet checked above.
    let hdr = unsafe { std::slice::from_raw_parts(d as *const u8, 18) };
    let tci = u16::from_be_bytes([hdr[14], hdr[15]]);
    let inner = u16::from_be_bytes([hdr[16], hdr[17]]);
    pop_at(c, 12, VLAN_HLEN);
    // vlan_set_encap_proto
    let p = if inner >= 0x0600 {
        inner
    } else {
        let at = d + VLAN_HLEN + ETH_HLEN;
        // SAFETY: read only when the two bytes after the new Ethernet header exist.
        if at + 2 <= e && unsafe { std::ptr::read_unaligned(at as *const u16) } == 0xffff {
            0x0001 // ETH_P_802_3
        } else {
            0x0004 // ETH_P_802_2
        }
    };
    set_protocol(c, p);
    if st.skb.net_off < ETH_HLEN + VLAN_HLEN {
        st.skb.net_off = ETH_HLEN;
    } else {
        st.skb.net_off -= VLAN_HLEN;
    }
    if let Some(t) = &mut st.skb.trans_off {
        *t = t.saturating_sub(VLAN_HLEN);
    }
    st.skb.mac_len = st.skb.net_off;
    Ok(tci)
}

pub(crate) extern "C" fn h_skb_vlan_pop(ctx: u64, _: u64, _: u64, _: u64, _: u64) -> u64 {
    with_state(EINVAL, |st| {
        let Some(c) = tc_skb(st, ctx, "skb_vlan_pop") else { return EINVAL };
        let is_vlan = |p: u16| p == ETH_P_8021Q || p == ETH_P_8021AD;
        let (present, _, _) = vlan_fields(c);
        if present {
            set_vlan(c, None);
        } else {
            if !is_vlan(protocol(c)) {
                return 0;
            }
            if let Err(e) = vlan_pop_packet(st, c) {
                return e as u64;
            }
        }
        // The next tag in the packet moves to the metadata.
        let p = protocol(c);
        if !is_vlan(p) {
            return 0;
        }
        match vlan_pop_packet(st, c) {
            Ok(tci) => {
                set_vlan(c, Some((p, tci)));
                0
            }
            Err(e) => e as u64,
        }
    })
}

// ---- tunnel metadata ----

const TUNNEL_KEY_SIZE: usize = 44;
const TUNINFO_IPV6: u64 = 1;
const TUNINFO_FLAGS: u64 = 1 << 4;
const ZERO_CSUM_TX: u64 = 1 << 1;
const DONT_FRAGMENT: u64 = 1 << 2;
const SEQ_NUMBER: u64 = 1 << 3;
const NO_TUNNEL_KEY: u64 = 1 << 4;
/// Sizes of older `struct bpf_tunnel_key` layouts the kernel still accepts.
const TUNNEL_KEY_COMPAT: [usize; 4] = [28, 24, 22, 8];

pub(crate) extern "C" fn h_skb_set_tunnel_key(ctx: u64, from: u64, size: u64, flags: u64, _: u64) -> u64 {
    with_state(EINVAL, |st| {
        if tc_skb(st, ctx, "skb_set_tunnel_key").is_none() {
            return EINVAL;
        }
        if flags & !(TUNINFO_IPV6 | ZERO_CSUM_TX | DONT_FRAGMENT | SEQ_NUMBER | NO_TUNNEL_KEY) != 0 {
            return EINVAL;
        }
        let size = size as u32 as usize;
        if size != TUNNEL_KEY_SIZE && !TUNNEL_KEY_COMPAT.contains(&size) {
            return EINVAL;
        }
        let mut k = [0u8; TUNNEL_KEY_SIZE];
        // SAFETY: the caller checked `size` bytes at `from`.
        unsafe { std::ptr::copy_nonoverlapping(from as *const u8, k.as_mut_ptr(), size) };
        let u32at = |o: usize| u32::from_le_bytes(k[o..o + 4].try_into().unwrap());
        let ipv6 = flags & TUNINFO_IPV6 != 0;
        let label = u32at(24);
        let ext = u16::from_le_bytes([k[22], k[23]]);
        if (!ipv6 && label != 0) || ext != 0 {
            return EINVAL;
        }
        // IP_TUNNEL_{CSUM,KEY,SEQ,DONT_FRAGMENT,NOCACHE}_BIT
        let mut tf: u16 = 1 << 13;
        if flags & DONT_FRAGMENT != 0 {
            tf |= 1 << 8;
        }
        if flags & ZERO_CSUM_TX == 0 {
            tf |= 1;
        }
        if flags & SEQ_NUMBER != 0 {
            tf |= 1 << 3;
        }
        if flags & NO_TUNNEL_KEY == 0 {
            tf |= 1 << 2;
        }
        let mut t = TunnelInfo { ipv6, id: u32at(0), tos: k[20], ttl: k[21], flags: tf, ..TunnelInfo::default() };
        if ipv6 {
            t.dst.copy_from_slice(&k[4..20]);
            t.src.copy_from_slice(&k[28..44]);
            t.label = label & 0x000f_ffff;
        } else {
            t.dst[..4].copy_from_slice(&k[4..8]);
            t.src[..4].copy_from_slice(&k[28..32]);
        }
        st.skb.tunnel = Some(t);
        st.skb.tunnel_opts.clear();
        0
    })
}

/// `IP_TUNNEL_{GENEVE,VXLAN,ERSPAN,GTP}_OPT_BIT`: options present.
const TUNNEL_OPT_FLAGS: u16 = (1 << 11) | (1 << 12) | (1 << 14) | (1 << 15);

/// `bpf_skb_set_tunnel_opt`: options for the metadata `set_tunnel_key` made (-EINVAL
/// without it), whole 32-bit words, at most 255 bytes.
pub(crate) extern "C" fn h_skb_set_tunnel_opt(ctx: u64, from: u64, size: u64, _: u64, _: u64) -> u64 {
    with_state(EINVAL, |st| {
        if tc_skb(st, ctx, "skb_set_tunnel_opt").is_none() {
            return EINVAL;
        }
        let size = size as u32 as usize;
        let Some(t) = &mut st.skb.tunnel else { return EINVAL };
        if !size.is_multiple_of(4) {
            return EINVAL;
        }
        if size > 255 {
            return (-errno::ENOMEM) as u64;
        }
        if size > 0 {
            t.flags |= TUNNEL_OPT_FLAGS;
        }
        // SAFETY: the caller checked `size` bytes at `from`.
        st.skb.tunnel_opts = unsafe { std::slice::from_raw_parts(from as *const u8, size) }.to_vec();
        0
    })
}

/// `bpf_skb_get_tunnel_opt`: the options' length, the rest of `to` zeroed.
pub(crate) extern "C" fn h_skb_get_tunnel_opt(ctx: u64, to: u64, size: u64, _: u64, _: u64) -> u64 {
    with_state(EINVAL, |st| {
        if tc_skb(st, ctx, "skb_get_tunnel_opt").is_none() {
            return EINVAL;
        }
        let size = size as u32 as usize;
        let opts = &st.skb.tunnel_opts;
        let present = st.skb.tunnel.is_some_and(|t| t.flags & TUNNEL_OPT_FLAGS != 0);
        let ret = if !present {
            -ENOENT
        } else if size < opts.len() {
            -errno::ENOMEM
        } else {
            // SAFETY: the caller checked `size` bytes at `to`.
            unsafe {
                std::ptr::copy_nonoverlapping(opts.as_ptr(), to as *mut u8, opts.len());
                std::ptr::write_bytes((to as *mut u8).add(opts.len()), 0, size - opts.len());
            }
            return opts.len() as u64;
        };
        // SAFETY: as above.
        unsafe { std::ptr::write_bytes(to as *mut u8, 0, size) };
        ret as u64
    })
}

/// `bpf_spin_lock`/`bpf_spin_unlock`: runs are single-threaded, so there is nothing to
/// wait for; the lock word (which the verifier keeps programs from reading) is left as is.
pub(crate) extern "C" fn h_spin_lock(_: u64, _: u64, _: u64, _: u64, _: u64) -> u64 {
    0
}

/// `bpf_skb_get_tunnel_key`: reads the skb's tunnel metadata as received (so after a
/// `set`, `remote` is the key's source and `local` its destination, as in the kernel).
pub(crate) extern "C" fn h_skb_get_tunnel_key(ctx: u64, to: u64, size: u64, flags: u64, _: u64) -> u64 {
    with_state(EINVAL, |st| {
        if tc_skb(st, ctx, "skb_get_tunnel_key").is_none() {
            return EINVAL;
        }
        let size = size as u32 as usize;
        let clear = |err: i64| {
            // SAFETY: the caller checked `size` bytes at `to`.
            unsafe { std::ptr::write_bytes(to as *mut u8, 0, size) };
            err as u64
        };
        let Some(t) = st.skb.tunnel else { return clear(-errno::EINVAL) };
        if flags & !(TUNINFO_IPV6 | TUNINFO_FLAGS) != 0 {
            return clear(-errno::EINVAL);
        }
        if t.ipv6 != (flags & TUNINFO_IPV6 != 0) {
            return clear(-EPROTO);
        }
        if size != TUNNEL_KEY_SIZE {
            match size {
                28 | 24 | 22 => {}
                8 if !t.ipv6 => {}
                _ => return clear(-errno::EINVAL),
            }
        }
        let mut k = [0u8; TUNNEL_KEY_SIZE];
        k[0..4].copy_from_slice(&t.id.to_le_bytes());
        k[20] = t.tos;
        k[21] = t.ttl;
        if flags & TUNINFO_FLAGS != 0 {
            k[22..24].copy_from_slice(&t.flags.to_be_bytes());
        }
        if t.ipv6 {
            k[4..20].copy_from_slice(&t.src);
            k[28..44].copy_from_slice(&t.dst);
            k[24..28].copy_from_slice(&t.label.to_le_bytes());
        } else {
            k[4..8].copy_from_slice(&t.src[..4]);
            k[28..32].copy_from_slice(&t.dst[..4]);
        }
        // SAFETY: as above.
        unsafe { std::ptr::copy_nonoverlapping(k.as_ptr(), to as *mut u8, size.min(TUNNEL_KEY_SIZE)) };
        0
    })
}

// ---- redirects, devices and routes ----

fn net(st: &RunState) -> &NetModel {
    // SAFETY: the model is owned by the Vm that runs the program and outlives the run.
    unsafe { &*st.net }
}

/// `bpf_clone_redirect`: a copy goes to `ifindex` (recorded in the run's clones, apart
/// from the redirect the program's return asks for); the program goes on with its skb.
pub(crate) extern "C" fn h_clone_redirect(ctx: u64, ifindex: u64, flags: u64, _: u64, _: u64) -> u64 {
    with_state(EINVAL, |st| {
        let Some(c) = tc_skb(st, ctx, "clone_redirect") else { return EINVAL };
        if flags & !1 != 0 {
            return EINVAL;
        }
        if gso(c) {
            return (-74i64) as u64; // -EBADMSG: the test run's GSO skbs have no gso_type
        }
        if net(st).device(ifindex as u32).is_none() {
            return EINVAL;
        }
        st.clones.push((ifindex as u32, flags));
        0
    })
}

const TC_ACT_SHOT: u64 = 2;
const TC_ACT_REDIRECT: u64 = 7;

/// `bpf_redirect_peer` / `bpf_redirect_neigh`: recorded like `bpf_redirect`.
pub(crate) extern "C" fn h_redirect_peer(ifindex: u64, flags: u64, _: u64, _: u64, _: u64) -> u64 {
    with_state(TC_ACT_SHOT, |st| {
        if flags != 0 {
            return TC_ACT_SHOT;
        }
        st.redirect = Some(crate::helpers::Redirect::Peer { ifindex: ifindex as u32 });
        TC_ACT_REDIRECT
    })
}

pub(crate) extern "C" fn h_redirect_neigh(ifindex: u64, params: u64, plen: u64, flags: u64, _: u64) -> u64 {
    with_state(TC_ACT_SHOT, |st| {
        if flags != 0 || (params == 0 && plen != 0) || (params != 0 && plen < 20) {
            return TC_ACT_SHOT;
        }
        st.redirect = Some(crate::helpers::Redirect::Neigh { ifindex: ifindex as u32 });
        TC_ACT_REDIRECT
    })
}

/// `bpf_check_mtu` against the model's device (`ifindex` 0: the packet's device).
pub(crate) extern "C" fn h_check_mtu(ctx: u64, ifindex: u64, mtu_len: u64, len_diff: u64, flags: u64) -> u64 {
    with_state(EINVAL, |st| {
        let xdp = st.ctx_kind == CtxKind::Xdp;
        let (cur_dev, len) = if xdp {
            let Some((d, e)) = xdp_ctx(st, ctx, "check_mtu") else { return EINVAL };
            (rd32(ctx + 12), e - d)
        } else {
            let Some(c) = any_skb(st, ctx, "check_mtu") else { return EINVAL };
            let (d, e) = skb_data(c);
            (rd32(c + skb::IFINDEX as u64), e - d)
        };
        // SAFETY: mtu_len points at 4 bytes (checked by the caller).
        let arg = unsafe { std::ptr::read_unaligned(mtu_len as *const u32) };
        let segs = flags & 1 != 0;
        if (xdp && flags != 0) || flags & !1 != 0 || (segs && (len_diff != 0 || arg != 0)) {
            return EINVAL;
        }
        let idx = if ifindex as u32 == 0 { cur_dev } else { ifindex as u32 };
        let Some(dev) = net(st).device(idx).cloned() else { return (-ENODEV) as u64 };
        let dev_len = dev.mtu as i64 + dev.hard_header_len as i64;
        let mut l = if arg != 0 { arg as i64 + dev.hard_header_len as i64 } else { len as i64 };
        l += len_diff as i32 as i64;
        let mut ret = if l <= dev_len { 0 } else { 1 }; // BPF_MTU_CHK_RET_{SUCCESS,FRAG_NEEDED}
        if ret == 1 && !xdp && gso(ctx) {
            if segs && st.skb.trans_off.is_none() {
                return EINVAL;
            }
            ret = 0;
        }
        // SAFETY: as above.
        unsafe { std::ptr::write_unaligned(mtu_len as *mut u32, dev.mtu) };
        ret
    })
}

const FIB_LOOKUP_MASK: u64 = 0x3f;
const FIB_PARAMS_SIZE: u64 = 64;

/// `bpf_fib_lookup` against the model: an unknown `params->ifindex` is -ENODEV, a device
/// without forwarding answers FWD_DISABLED (what this kernel does for the test run's
/// loopback device), else the longest matching route of the model fills in the egress
/// device and MAC addresses (SUCCESS) or nothing matches (NOT_FWDED).
pub(crate) extern "C" fn h_fib_lookup(ctx: u64, params: u64, plen: u64, flags: u64, _: u64) -> u64 {
    with_state(EINVAL, |st| {
        if ctx != st.ctx || !st.ctx_kind.has_packet() {
            return fault(st, format!("bpf_fib_lookup: {ctx:#x} is not the packet context of this run"));
        }
        if (plen as i32 as i64) < FIB_PARAMS_SIZE as i64 || flags as u32 as u64 & !FIB_LOOKUP_MASK != 0 {
            return EINVAL;
        }
        // SAFETY: the caller checked `plen` >= 64 bytes at `params`.
        let p = unsafe { std::slice::from_raw_parts_mut(params as *mut u8, FIB_PARAMS_SIZE as usize) };
        let family = p[0];
        if family != 2 && family != 10 {
            return (-EAFNOSUPPORT) as u64;
        }
        let ifindex = u32::from_le_bytes(p[8..12].try_into().unwrap());
        let model = net(st);
        let Some(dev) = model.device(ifindex) else { return (-ENODEV) as u64 };
        if !dev.forwarding {
            return 5; // BPF_FIB_LKUP_RET_FWD_DISABLED
        }
        let alen = if family == 2 { 4 } else { 16 };
        let dst = &p[32..32 + alen];
        let best = model
            .routes
            .iter()
            .filter(|r| r.family == family && prefix_matches(&r.dst[..alen], dst, r.prefix_len))
            .max_by_key(|r| r.prefix_len)
            .cloned();
        match best {
            Some(r) => {
                p[8..12].copy_from_slice(&r.ifindex.to_le_bytes());
                p[52..58].copy_from_slice(&r.smac);
                p[58..64].copy_from_slice(&r.dmac);
                0
            }
            None => 4, // BPF_FIB_LKUP_RET_NOT_FWDED
        }
    })
}

fn prefix_matches(net: &[u8], addr: &[u8], plen: u8) -> bool {
    let mut bits = plen as usize;
    for (a, b) in net.iter().zip(addr) {
        if bits == 0 {
            return true;
        }
        let m = if bits >= 8 { 0xff } else { 0xffu8 << (8 - bits) };
        if a & m != b & m {
            return false;
        }
        bits = bits.saturating_sub(8);
    }
    true
}

/// `bpf_skb_set_tstamp` (BPF_SKB_CLOCK_REALTIME 0, MONOTONIC 1, TAI 2) on IP packets.
pub(crate) extern "C" fn h_skb_set_tstamp(ctx: u64, tstamp: u64, ty: u64, _: u64, _: u64) -> u64 {
    with_state(EINVAL, |st| {
        let Some(c) = tc_skb(st, ctx, "skb_set_tstamp") else { return EINVAL };
        if net_base_len(protocol(c)).is_none() {
            return (-95i64) as u64; // -EOPNOTSUPP
        }
        match ty as u32 {
            0 => {}
            1 | 2 if tstamp != 0 => {}
            _ => return EINVAL,
        }
        wr64(c + skb::TSTAMP as u64, tstamp);
        wr32(c + skb::TSTAMP_TYPE as u64, ty as u32);
        0
    })
}

/// `bpf_skb_ecn_set_ce` (`INET_ECN_set_ce`): marks an ECN-capable IPv4 or IPv6 header
/// CE (IPv4: with the incremental checksum update); 1 when the packet is CE afterwards.
/// On VLAN-tagged skbs the kernel finds the protocol by walking the tags from `mac_len`
/// (`vlan_get_protocol`) but still edits the bytes at the network header.
pub(crate) extern "C" fn h_skb_ecn_set_ce(ctx: u64, _: u64, _: u64, _: u64, _: u64) -> u64 {
    with_state(0, |st| {
        let Some(c) = tc_skb(st, ctx, "skb_ecn_set_ce") else { return 0 };
        let (d, e) = skb_data(c);
        let nh = d + st.skb.net_off;
        match vlan_get_protocol(st, c) {
            ETH_P_IP if nh + 20 <= e => {
                // SAFETY: 20 bytes at nh are inside the packet.
                let h = unsafe { std::slice::from_raw_parts_mut(nh as *mut u8, 20) };
                let ecn = (h[1].wrapping_add(1) & 3) as u16;
                if ecn & 2 == 0 {
                    return (ecn == 0) as u64;
                }
                // iph->check = csum16_add(check, htons(0xFFFB) + htons(ecn)), in memory order.
                let add = 0xfffbu16.to_be().wrapping_add(ecn.to_be());
                let old = u16::from_ne_bytes([h[10], h[11]]);
                let mut sum = old.wrapping_add(add);
                sum = sum.wrapping_add((sum < add) as u16);
                h[10..12].copy_from_slice(&sum.to_ne_bytes());
                h[1] |= 3;
                1
            }
            ETH_P_IPV6 if nh + 40 <= e => {
                // SAFETY: 40 bytes at nh are inside the packet.
                let h = unsafe { std::slice::from_raw_parts_mut(nh as *mut u8, 4) };
                let dsfield = ((h[0] as u16) << 8 | h[1] as u16) >> 4;
                if dsfield & 3 == 0 {
                    return 0;
                }
                h[1] |= 3 << 4;
                1
            }
            _ => 0,
        }
    })
}

/// `__vlan_get_protocol(skb, skb->protocol, NULL)`: 0 when a tag cannot be read.
fn vlan_get_protocol(st: &RunState, c: u64) -> u16 {
    let is_vlan = |p: u16| p == ETH_P_8021Q || p == ETH_P_8021AD;
    let mut ty = protocol(c);
    if !is_vlan(ty) {
        return ty;
    }
    let (d, e) = skb_data(c);
    let mut depth = match st.skb.mac_len {
        0 => ETH_HLEN,
        m if m < VLAN_HLEN => return 0,
        m => m - VLAN_HLEN,
    };
    for _ in 0..8 {
        if depth + VLAN_HLEN > e - d {
            return 0;
        }
        // SAFETY: the 4-byte tag at depth is inside the packet.
        let b = unsafe { std::slice::from_raw_parts((d + depth) as *const u8, 4) };
        ty = u16::from_be_bytes([b[2], b[3]]);
        depth += VLAN_HLEN;
        if !is_vlan(ty) {
            return ty;
        }
    }
    0
}

/// `bpf_sk_lookup_tcp/udp`, `bpf_skc_lookup_tcp`: the model has no sockets, so every
/// lookup finds nothing (NULL), as the kernel does for a tuple no local socket serves.
pub(crate) extern "C" fn h_sk_lookup(ctx: u64, _: u64, _: u64, _: u64, _: u64) -> u64 {
    with_state(0, |st| {
        if ctx != st.ctx || !st.ctx_kind.has_packet() {
            fault(st, format!("bpf_sk_lookup_*: {ctx:#x} is not the packet context of this run"));
        }
        0
    })
}

/// Helpers that take a socket (`bpf_sk_release`, `bpf_tcp_check_syncookie`, ...): the
/// verifier lets a program reach them only with a socket from a lookup, which the model
/// never returns; reaching one anyway is a helper fault.
fn socket_arg(id: u32, sk: u64) -> u64 {
    with_state(0, |st| {
        let h = crate::helper_names::describe_helper(id);
        fault(st, format!("{h} got the socket {sk:#x}, but the model's socket lookups return none"));
        0
    })
}

macro_rules! socket_helpers {
    ($($id:literal),*) => {
        /// The implementation of socket-taking helper `id` (see `socket_arg`).
        pub(crate) fn socket_arg_helper(id: u32) -> Option<crate::HelperFn> {
            $({
                extern "C" fn f(sk: u64, _: u64, _: u64, _: u64, _: u64) -> u64 {
                    socket_arg($id, sk)
                }
                if id == $id {
                    return Some(f);
                }
            })*
            None
        }
    };
}

// sk_release, sk_fullsock, tcp_sock, get_listener_sock, tcp_check_syncookie,
// tcp_gen_syncookie, skc_to_{tcp6,tcp,tcp_timewait,tcp_request,udp6}_sock.
socket_helpers!(86, 95, 96, 98, 100, 110, 136, 137, 138, 139, 140);

/// `bpf_skb_change_type`: only between PACKET_HOST..PACKET_OTHERHOST.
pub(crate) extern "C" fn h_skb_change_type(ctx: u64, ty: u64, _: u64, _: u64, _: u64) -> u64 {
    with_state(EINVAL, |st| {
        let Some(c) = tc_skb(st, ctx, "skb_change_type") else { return EINVAL };
        let cur = rd32(c + skb::PKT_TYPE as u64);
        if cur > 3 || ty as u32 > 3 {
            return EINVAL;
        }
        wr32(c + skb::PKT_TYPE as u64, ty as u32);
        0
    })
}

/// `bpf_skb_load_bytes_relative` from the MAC (0) or network (1) header; the buffer is
/// cleared on error.
pub(crate) extern "C" fn h_skb_load_bytes_relative(ctx: u64, off: u64, to: u64, len: u64, start: u64) -> u64 {
    with_state(EINVAL, |st| {
        let Some(c) = any_skb(st, ctx, "skb_load_bytes_relative") else { return EINVAL };
        let len = len as u32 as u64;
        let clear = || {
            // SAFETY: the caller checked `len` bytes at `to`.
            unsafe { std::ptr::write_bytes(to as *mut u8, 0, len as usize) };
            (-EFAULT) as u64
        };
        let (d, e) = skb_data(c);
        let tc = st.ctx_kind == (CtxKind::Skb { tc: true });
        // Socket filters and cgroup skb programs start at the network header, with the
        // Ethernet header in front of it in our buffer.
        let (mac, nh) = if tc { (d, d + st.skb.net_off) } else { (d - ETH_HLEN, d) };
        let base = match start {
            0 => mac,
            1 => nh,
            _ => return clear(),
        };
        let off = off as u32 as u64;
        if off > 0xffff || base + off + len > e {
            return clear();
        }
        // SAFETY: [base + off, + len) lies in the packet buffer.
        unsafe { std::ptr::copy((base + off) as *const u8, to as *mut u8, len as usize) };
        0
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{interp::Interp, HelperTable, ProgInput, Vm, VmError};
    use kops_isa::Insn;
    use kops_object::ProgType;

    fn run_tc(insns: Vec<Insn>) -> Result<u64, VmError> {
        let vm = Vm::with_engine(None, Box::new(Interp))?;
        let id = vm.load_insns("t", insns, Vec::new(), ProgType::SchedCls, CtxKind::Skb { tc: true }, HelperTable::kernel(), false)?;
        vm.run(id, &ProgInput::packet(&[0u8; 64])).map(|r| r.r0)
    }

    #[test]
    fn helper_messages_name_the_helper() {
        // A helper the runtimes lack: a load error with its name and id.
        let e = run_tc(vec![Insn::call_helper(24), Insn::exit()]).unwrap_err();
        assert_eq!(e.to_string(), "program `t`, insn 0: helper bpf_get_route_realm (id 24) is not supported by the kops runtimes");
        // An id the kernel does not have.
        let e = run_tc(vec![Insn::call_helper(4000), Insn::exit()]).unwrap_err();
        assert!(e.to_string().contains("helper id 4000 (not a kernel helper)"), "{e}");
        // A socket helper reached with a made-up socket: a fault naming it.
        let e = run_tc(vec![Insn::mov64_imm(1, 8), Insn::call_helper(86), Insn::exit()]).unwrap_err();
        assert!(e.to_string().contains("bpf_sk_release (id 86) got the socket 0x8"), "{e}");
        // A tc-only helper from a socket filter is refused by name.
        let vm = Vm::with_engine(None, Box::new(Interp)).unwrap();
        let id = vm
            .load_insns("s", vec![Insn::mov64_imm(2, 4), Insn::call_helper(38), Insn::exit()], Vec::new(), ProgType::SocketFilter, CtxKind::Skb { tc: false }, HelperTable::kernel(), false)
            .unwrap();
        let e = vm.run(id, &ProgInput::packet(&[0u8; 64])).unwrap_err();
        assert!(e.to_string().contains("bpf_skb_change_tail") && e.to_string().contains("tc programs only"), "{e}");
    }

    #[test]
    fn clone_redirect_is_recorded_apart_from_the_redirect() {
        let vm = Vm::with_engine(None, Box::new(Interp)).unwrap();
        let p = vec![
            Insn::mov64_imm(2, 1),
            Insn::mov64_imm(3, 1),
            Insn::call_helper(13), // clone to lo, ingress
            Insn::mov64_imm(1, 5),
            Insn::mov64_imm(2, 0),
            Insn::call_helper(23), // redirect(5, 0)
            Insn::exit(),
        ];
        let id = vm.load_insns("c", p, Vec::new(), ProgType::SchedCls, CtxKind::Skb { tc: true }, HelperTable::kernel(), false).unwrap();
        let r = vm.run(id, &ProgInput::packet(&[0u8; 64])).unwrap();
        assert_eq!(r.r0, TC_ACT_REDIRECT);
        assert_eq!(r.clones, vec![(1, 1)]);
        assert_eq!(r.redirect, Some(crate::Redirect::Ifindex { ifindex: 5, flags: 0 }));
    }

    /// fib_lookup from a harness-configured model: the longest matching route answers.
    #[test]
    fn configured_fib_routes() {
        let mut vm = Vm::with_engine(None, Box::new(Interp)).unwrap();
        vm.net.devices[0].forwarding = true;
        vm.net.devices.push(NetDevice { ifindex: 3, mtu: 1500, hard_header_len: 14, forwarding: true });
        let r = |plen: u8, ifindex: u32| FibRoute { family: 2, dst: [10, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0], prefix_len: plen, ifindex, smac: [2; 6], dmac: [ifindex as u8; 6] };
        vm.net.routes = vec![r(8, 1), r(16, 3)];
        // params on the stack at fp-64: family 2, ifindex 1, ipv4_dst at +32; r0 = ret
        // | egress ifindex << 8 | dmac[0] << 16.
        let dst = |a: u32| {
            vec![
                Insn::st(kops_isa::op::DW, 10, -8, 0),
                Insn::st(kops_isa::op::B, 10, -64, 2),
                Insn::st(kops_isa::op::W, 10, -56, 1),
                Insn::st(kops_isa::op::W, 10, -32, a as i32),
                Insn::mov64_reg(2, 10),
                Insn::alu64_imm(kops_isa::op::ADD, 2, -64),
                Insn::mov64_imm(3, 64),
                Insn::mov64_imm(4, 0),
                Insn::call_helper(69),
                Insn::ldx(kops_isa::op::W, 1, 10, -56),
                Insn::alu64_imm(kops_isa::op::LSH, 1, 8),
                Insn::alu64_reg(kops_isa::op::OR, 0, 1),
                Insn::ldx(kops_isa::op::B, 1, 10, -6),
                Insn::alu64_imm(kops_isa::op::LSH, 1, 16),
                Insn::alu64_reg(kops_isa::op::OR, 0, 1),
                Insn::exit(),
            ]
        };
        let run = |vm: &Vm, a: u32| {
            let id = vm.load_insns(&format!("f{a:x}"), dst(a), Vec::new(), ProgType::Xdp, CtxKind::Xdp, HelperTable::kernel(), false).unwrap();
            vm.run(id, &ProgInput::packet(&[0u8; 64])).unwrap().r0
        };
        // Address bytes in network order: 10.1.2.3 is 0x0302010a as a little-endian u32.
        assert_eq!(run(&vm, 0x0302_010a), 0x03_03_00, "10.1.2.3: the /16 via ifindex 3");
        assert_eq!(run(&vm, 0x0302_020a), 0x01_01_00, "10.2.2.3: the /8 via ifindex 1");
        assert_eq!(run(&vm, 0x0302_020b), 0x00_01_04, "11.2.2.3: NOT_FWDED, params untouched");
        vm.net.devices[0].forwarding = false;
        assert_eq!(run(&vm, 0x0302_010a), 0x00_01_05, "forwarding off: FWD_DISABLED");
    }

    #[test]
    fn skb_grows_to_the_kernel_maximum_and_no_further() {
        // change_tail to SKB_MAX_LEN succeeds, one more byte is -EINVAL (filter.c).
        let tail = |n: i32| vec![Insn::mov64_imm(2, n), Insn::mov64_imm(3, 0), Insn::call_helper(38), Insn::exit()];
        assert_eq!(run_tc(tail(SKB_MAX_LEN as i32)).unwrap(), 0);
        assert_eq!(run_tc(tail(SKB_MAX_LEN as i32 + 1)).unwrap(), EINVAL);
        // change_head by the rest of the maximum succeeds (64-byte packet).
        let head = |n: i32| vec![Insn::mov64_imm(2, n), Insn::mov64_imm(3, 0), Insn::call_helper(43), Insn::exit()];
        assert_eq!(run_tc(head(SKB_MAX_LEN as i32 - 64)).unwrap(), 0);
        assert_eq!(run_tc(head(SKB_MAX_LEN as i32 - 63)).unwrap(), EINVAL);
    }

    #[test]
    fn prefixes() {
        assert!(prefix_matches(&[10, 0, 0, 0], &[10, 1, 2, 3], 8));
        assert!(!prefix_matches(&[10, 0, 0, 0], &[11, 1, 2, 3], 8));
        assert!(prefix_matches(&[192, 168, 1, 128], &[192, 168, 1, 200], 25));
        assert!(!prefix_matches(&[192, 168, 1, 128], &[192, 168, 1, 100], 25));
        assert!(prefix_matches(&[0; 4], &[1, 2, 3, 4], 0));
    }
}
