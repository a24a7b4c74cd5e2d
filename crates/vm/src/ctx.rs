//! Program contexts: the structures `r1` points to, the packet buffers behind them, and the
//! load-time rewriting of context accesses (the kernel's `convert_ctx_access`).
//!
//! Our internal context structures keep the uapi struct (`xdp_md`, `__sk_buff`) at offset 0,
//! so plain `u32` fields are read and written in place; the packet pointers live as `u64`
//! after it. A program's 32-bit load of `data`/`data_end`/`data_meta` is rewritten, one
//! instruction for one, into a 64-bit load of the corresponding pointer, so instruction
//! indices (jumps, line info) do not move.

use crate::mem::RawBuf;
use crate::VmError;
use kops_isa::{op, Insn};
use kops_object::{ProgType, Subprog};

/// What `r1` points to when a program starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CtxKind {
    /// Plain memory: r1 = pointer to the input bytes (0 when empty), r2 = their length.
    /// The conformance suite's convention.
    Mem,
    /// `struct xdp_md` over an XDP buffer.
    Xdp,
    /// `struct __sk_buff`; `tc` for sched_cls/sched_act (data starts at the Ethernet
    /// header and more fields are writable), else socket filter / cgroup skb (data starts
    /// at the network header, as in BPF_PROG_TEST_RUN).
    Skb { tc: bool },
    /// Read-only context bytes taken from the input (kprobe `pt_regs`, tracepoint records).
    Raw,
}

impl CtxKind {
    pub fn for_prog_type(t: ProgType) -> CtxKind {
        match t {
            ProgType::Xdp => CtxKind::Xdp,
            ProgType::SchedCls | ProgType::SchedAct => CtxKind::Skb { tc: true },
            ProgType::SocketFilter | ProgType::CgroupSkb => CtxKind::Skb { tc: false },
            ProgType::Syscall => CtxKind::Mem,
            _ => CtxKind::Raw,
        }
    }
    /// Whether the program works on a packet (prints and compares an output packet).
    pub fn has_packet(self) -> bool {
        matches!(self, CtxKind::Xdp | CtxKind::Skb { .. })
    }
}

// ---- XDP ----

/// Size of `struct xdp_md`.
pub const XDP_MD_SIZE: usize = 24;
/// Internal layout: `xdp_md` at 0, then these u64 fields.
pub const XDP_DATA: usize = 32;
pub const XDP_DATA_END: usize = 40;
pub const XDP_DATA_META: usize = 48;
pub const XDP_HARD_START: usize = 56;
/// End of the area the packet may grow into (frame end minus the shared-info tailroom).
pub const XDP_HARD_END: usize = 64;
pub const XDP_CTX_SIZE: usize = 72;
/// `XDP_PACKET_HEADROOM`.
pub const XDP_HEADROOM: usize = 256;
/// BPF_PROG_TEST_RUN's XDP frame: one page, of which `SKB_DATA_ALIGN(sizeof(struct
/// skb_shared_info))` = 320 bytes at the end are not packet.
pub const XDP_FRAME_SIZE: usize = 4096;
pub const XDP_TAILROOM: usize = 320;
/// `sizeof(struct xdp_frame)`: adjust_head/meta keep it free at the buffer start.
const XDP_FRAME_STRUCT: u64 = 40;
const ETH_HLEN: u64 = 14;

// ---- __sk_buff ----

pub const SKB_UAPI_SIZE: usize = 192;
pub const SKB_DATA: usize = 192;
pub const SKB_DATA_END: usize = 200;
pub const SKB_DATA_META: usize = 208;
pub const SKB_CTX_SIZE: usize = 216;
/// `SKB_MAX_ALLOC`: 16 KiB minus the shared info (the limit of adjust_room and
/// change_head/tail).
pub const SKB_MAX_LEN: u64 = 16384 - 320;

/// Headroom BPF_PROG_TEST_RUN gives an skb (`NET_SKB_PAD + NET_IP_ALIGN`).
pub const SKB_HEADROOM: usize = 64 + 2;
/// Room we keep before the headroom and after the packet, so that the resizing helpers
/// (`crate::helpers::net`) can grow an skb to the kernel's maximum without moving it. Programs
/// cannot observe an skb's headroom.
const SKB_GROW_ROOM: usize = 16384;

/// `__sk_buff` field offsets.
pub mod skb {
    pub const LEN: usize = 0;
    pub const PKT_TYPE: usize = 4;
    pub const MARK: usize = 8;
    pub const QUEUE_MAPPING: usize = 12;
    pub const PROTOCOL: usize = 16;
    pub const VLAN_PRESENT: usize = 20;
    pub const VLAN_TCI: usize = 24;
    pub const VLAN_PROTO: usize = 28;
    pub const PRIORITY: usize = 32;
    pub const INGRESS_IFINDEX: usize = 36;
    pub const IFINDEX: usize = 40;
    pub const TC_INDEX: usize = 44;
    pub const CB: usize = 48;
    pub const HASH: usize = 68;
    pub const TC_CLASSID: usize = 72;
    pub const DATA: usize = 76;
    pub const DATA_END: usize = 80;
    pub const NAPI_ID: usize = 84;
    pub const FAMILY: usize = 88;
    pub const DATA_META: usize = 140;
    pub const FLOW_KEYS: usize = 144;
    pub const TSTAMP: usize = 152;
    pub const WIRE_LEN: usize = 160;
    pub const GSO_SEGS: usize = 164;
    pub const SK: usize = 168;
    pub const GSO_SIZE: usize = 176;
    pub const TSTAMP_TYPE: usize = 180;
    pub const HWTSTAMP: usize = 184;
}

fn rd64(addr: u64) -> u64 {
    // SAFETY: callers pass addresses of our own live context structures.
    unsafe { std::ptr::read_unaligned(addr as *const u64) }
}
fn wr64(addr: u64, v: u64) {
    // SAFETY: as rd64.
    unsafe { std::ptr::write_unaligned(addr as *mut u64, v) }
}

/// `[start, end)` of the bytes a program may access as packet (incl. XDP metadata).
pub fn packet_bounds(kind: CtxKind, ctx: u64) -> (u64, u64) {
    match kind {
        CtxKind::Xdp => {
            let data = rd64(ctx + XDP_DATA as u64);
            let meta = rd64(ctx + XDP_DATA_META as u64);
            (meta.min(data), rd64(ctx + XDP_DATA_END as u64))
        }
        CtxKind::Skb { .. } => {
            let data = rd64(ctx + SKB_DATA as u64);
            let meta = rd64(ctx + SKB_DATA_META as u64);
            (meta.min(data), rd64(ctx + SKB_DATA_END as u64))
        }
        _ => (0, 0),
    }
}

/// Packet bytes only (no metadata): `[data, data_end)`.
pub(crate) fn data_bounds(kind: CtxKind, ctx: u64) -> (u64, u64) {
    match kind {
        CtxKind::Xdp => (rd64(ctx + XDP_DATA as u64), rd64(ctx + XDP_DATA_END as u64)),
        CtxKind::Skb { .. } => (rd64(ctx + SKB_DATA as u64), rd64(ctx + SKB_DATA_END as u64)),
        _ => (0, 0),
    }
}

pub(crate) fn xdp_adjust_head(ctx: u64, delta: i64) -> i64 {
    let hard = rd64(ctx + XDP_HARD_START as u64);
    let data = rd64(ctx + XDP_DATA as u64);
    let end = rd64(ctx + XDP_DATA_END as u64);
    let meta = rd64(ctx + XDP_DATA_META as u64);
    let metalen = data - meta.min(data);
    let new = data.wrapping_add(delta as u64);
    if new < hard + XDP_FRAME_STRUCT + metalen || new > end - ETH_HLEN {
        return -22;
    }
    if metalen != 0 {
        // SAFETY: both ranges lie inside the packet buffer (checked above).
        unsafe {
            std::ptr::copy(meta as *const u8, meta.wrapping_add(delta as u64) as *mut u8, metalen as usize)
        };
    }
    wr64(ctx + XDP_DATA_META as u64, meta.wrapping_add(delta as u64));
    wr64(ctx + XDP_DATA as u64, new);
    0
}

pub(crate) fn xdp_adjust_meta(ctx: u64, delta: i64) -> i64 {
    let hard = rd64(ctx + XDP_HARD_START as u64);
    let data = rd64(ctx + XDP_DATA as u64);
    let meta = rd64(ctx + XDP_DATA_META as u64).wrapping_add(delta as u64);
    if meta < hard + XDP_FRAME_STRUCT || meta > data {
        return -22;
    }
    let metalen = data - meta;
    // Linux >= 6.x: up to 255 bytes (skb_shared_info.meta_len is a u8), 4-byte aligned.
    if metalen & 3 != 0 || metalen > 255 {
        return -13; // -EACCES
    }
    wr64(ctx + XDP_DATA_META as u64, meta);
    0
}

pub(crate) fn xdp_adjust_tail(ctx: u64, delta: i64) -> i64 {
    let data = rd64(ctx + XDP_DATA as u64);
    let end = rd64(ctx + XDP_DATA_END as u64);
    let hard_end = rd64(ctx + XDP_HARD_END as u64);
    let new = end.wrapping_add(delta as u64);
    if new > hard_end || new < data + ETH_HLEN {
        return -22;
    }
    if delta > 0 {
        // SAFETY: [end, new) is inside the buffer (new <= hard_end).
        unsafe { std::ptr::write_bytes(end as *mut u8, 0, delta as usize) };
    }
    wr64(ctx + XDP_DATA_END as u64, new);
    0
}

/// What a run starts with, and what it writes back.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProgInput {
    /// XDP/skb: the packet (from the Ethernet header); plain memory context: the memory;
    /// other program types: the context bytes.
    pub data: Vec<u8>,
    /// Optional context in, as BPF_PROG_TEST_RUN's `ctx_in`: `struct xdp_md` (its `data`
    /// field is the metadata length at the start of `data`; `ingress_ifindex`,
    /// `rx_queue_index`) or `struct __sk_buff` (`mark`, `priority`, `ifindex`,
    /// `ingress_ifindex`, `tc_index`, `cb`, `tstamp`, `wire_len`, `gso_segs`, `gso_size`,
    /// `hwtstamp`; other fields must be 0).
    pub ctx: Option<Vec<u8>>,
}

impl ProgInput {
    pub fn packet(data: &[u8]) -> ProgInput {
        ProgInput { data: data.to_vec(), ctx: None }
    }
}

/// The context of one run: buffers the program may touch, with their addresses.
pub(crate) struct RunCtx {
    pub kind: CtxKind,
    /// The context structure (Xdp/Skb/Raw), or the memory (Mem).
    pub ctx: RawBuf,
    /// Packet buffer (Xdp/Skb): owned here so it lives as long as the run; reached through
    /// the pointers in `ctx`.
    pub pkt: Option<RawBuf>,
    /// r1 and r2 at entry.
    pub r1: u64,
    pub r2: u64,
    /// Bytes of the context structure the program may read (program view).
    pub ctx_len: u64,
    pub ctx_writable: bool,
}

fn get_u32(b: &[u8], off: usize) -> u32 {
    u32::from_le_bytes(b[off..off + 4].try_into().unwrap())
}

impl RunCtx {
    pub fn build(kind: CtxKind, input: &ProgInput) -> Result<RunCtx, VmError> {
        let bad = |msg: String| VmError::Input(msg);
        match kind {
            CtxKind::Mem => {
                if input.ctx.is_some() {
                    return Err(bad("the plain memory context takes no ctx input".into()));
                }
                let ctx = RawBuf::from_bytes(&input.data);
                let r1 = if input.data.is_empty() { 0 } else { ctx.addr() };
                Ok(RunCtx { kind, r1, r2: input.data.len() as u64, ctx_len: input.data.len() as u64, ctx, pkt: None, ctx_writable: true })
            }
            CtxKind::Raw => {
                if input.ctx.is_some() {
                    return Err(bad("this program type takes its context as data, not ctx".into()));
                }
                let ctx = RawBuf::from_bytes(&input.data);
                Ok(RunCtx { kind, r1: ctx.addr(), r2: 0, ctx_len: input.data.len() as u64, ctx, pkt: None, ctx_writable: false })
            }
            CtxKind::Xdp => {
                let max = XDP_FRAME_SIZE - XDP_HEADROOM - XDP_TAILROOM;
                if input.data.len() > max {
                    return Err(bad(format!(
                        "XDP packet of {} bytes exceeds the {max}-byte linear frame (multi-buffer XDP is not supported)",
                        input.data.len()
                    )));
                }
                let mut md = [0u8; XDP_MD_SIZE];
                let mut metalen = 0usize;
                // Defaults of BPF_PROG_TEST_RUN: the loopback device, queue 0.
                md[12..16].copy_from_slice(&1u32.to_le_bytes());
                if let Some(c) = &input.ctx {
                    if c.len() > XDP_MD_SIZE {
                        return Err(bad(format!("xdp_md ctx of {} bytes (max {XDP_MD_SIZE})", c.len())));
                    }
                    let mut full = [0u8; XDP_MD_SIZE];
                    full[..c.len()].copy_from_slice(c);
                    metalen = get_u32(&full, 0) as usize;
                    let end = get_u32(&full, 4) as usize;
                    if get_u32(&full, 8) != 0 || get_u32(&full, 20) != 0 {
                        return Err(bad("xdp_md ctx: data_meta and egress_ifindex must be 0".into()));
                    }
                    if end != 0 && end != input.data.len() || metalen > input.data.len() {
                        return Err(bad("xdp_md ctx: data/data_end do not match the packet".into()));
                    }
                    if metalen > 255 || metalen & 3 != 0 {
                        return Err(bad(format!("xdp_md ctx: metadata length {metalen} invalid")));
                    }
                    if get_u32(&full, 12) != 0 {
                        md[12..16].copy_from_slice(&full[12..16]);
                    }
                    md[16..20].copy_from_slice(&full[16..20]);
                }
                let pkt = RawBuf::new(XDP_FRAME_SIZE);
                pkt.write(XDP_HEADROOM, &input.data);
                let ctx = RawBuf::new(XDP_CTX_SIZE);
                ctx.write(0, &md);
                let base = pkt.addr();
                let meta = base + XDP_HEADROOM as u64;
                let w = |off: usize, v: u64| ctx.write(off, &v.to_le_bytes());
                w(XDP_DATA_META, meta);
                w(XDP_DATA, meta + metalen as u64);
                w(XDP_DATA_END, meta + input.data.len() as u64);
                w(XDP_HARD_START, base);
                w(XDP_HARD_END, base + (XDP_FRAME_SIZE - XDP_TAILROOM) as u64);
                Ok(RunCtx { kind, r1: ctx.addr(), r2: 0, ctx_len: XDP_MD_SIZE as u64, ctx, pkt: Some(pkt), ctx_writable: false })
            }
            CtxKind::Skb { tc } => {
                let d = &input.data;
                if d.len() < ETH_HLEN as usize {
                    return Err(bad(format!("skb packet of {} bytes is shorter than an Ethernet header", d.len())));
                }
                let mut u = [0u8; SKB_UAPI_SIZE];
                if let Some(c) = &input.ctx {
                    if c.len() > SKB_UAPI_SIZE {
                        return Err(bad(format!("__sk_buff ctx of {} bytes (max {SKB_UAPI_SIZE})", c.len())));
                    }
                    u[..c.len()].copy_from_slice(c);
                    // Fields BPF_PROG_TEST_RUN accepts from ctx_in (convert___skb_to_skb).
                    let allowed: &[(usize, usize)] = &[
                        (skb::MARK, 4),
                        (skb::PRIORITY, 4),
                        (skb::INGRESS_IFINDEX, 4),
                        (skb::IFINDEX, 4),
                        (skb::TC_INDEX, 4),
                        (skb::CB, 20),
                        (skb::TSTAMP, 8),
                        (skb::WIRE_LEN, 4),
                        (skb::GSO_SEGS, 4),
                        (skb::GSO_SIZE, 4),
                        (skb::HWTSTAMP, 8),
                    ];
                    for (i, b) in u.iter().enumerate() {
                        if *b != 0 && !allowed.iter().any(|(o, n)| i >= *o && i < o + n) {
                            return Err(bad(format!("__sk_buff ctx: field at offset {i} may not be set")));
                        }
                    }
                }
                // eth_type_trans on the loopback device (address 00:00:00:00:00:00).
                let dst = &d[0..6];
                let pkt_type: u32 = if dst == [0u8; 6] {
                    0 // PACKET_HOST
                } else if dst[0] & 1 != 0 {
                    if dst == [0xff; 6] {
                        1 // PACKET_BROADCAST
                    } else {
                        2 // PACKET_MULTICAST
                    }
                } else {
                    3 // PACKET_OTHERHOST
                };
                // eth_type_trans: an 802.3 length field (< 0x600) gives ETH_P_802_3 when the
                // payload starts with 0xffff (raw IPX), else ETH_P_802_2. __be16 as stored.
                let ethertype = u16::from_be_bytes([d[12], d[13]]);
                let proto = if ethertype >= 0x600 {
                    ethertype
                } else if d.len() >= 16 && d[14..16] == [0xff, 0xff] {
                    1
                } else {
                    4
                };
                let proto = u16::from_ne_bytes(proto.to_be_bytes()) as u32;
                // Socket filters see the packet from the network header.
                let start = if tc { 0 } else { ETH_HLEN as usize };
                let len = d.len() - start;
                let put = |u: &mut [u8; SKB_UAPI_SIZE], off: usize, v: u32| u[off..off + 4].copy_from_slice(&v.to_le_bytes());
                put(&mut u, skb::LEN, len as u32);
                put(&mut u, skb::PKT_TYPE, pkt_type);
                put(&mut u, skb::PROTOCOL, proto);
                if get_u32(&u, skb::IFINDEX) == 0 {
                    put(&mut u, skb::IFINDEX, 1);
                }
                if get_u32(&u, skb::WIRE_LEN) == 0 {
                    put(&mut u, skb::WIRE_LEN, d.len() as u32);
                }
                if get_u32(&u, skb::GSO_SEGS) == 0 {
                    put(&mut u, skb::GSO_SEGS, 1);
                }
                let front = SKB_GROW_ROOM + SKB_HEADROOM;
                let pkt = RawBuf::new(front + d.len().max(SKB_MAX_LEN as usize) + 64);
                pkt.write(front, d);
                let ctx = RawBuf::new(SKB_CTX_SIZE);
                ctx.write(0, &u);
                let data = pkt.addr() + (front + start) as u64;
                ctx.write(SKB_DATA, &data.to_le_bytes());
                ctx.write(SKB_DATA_END, &(data + len as u64).to_le_bytes());
                ctx.write(SKB_DATA_META, &data.to_le_bytes());
                Ok(RunCtx { kind, r1: ctx.addr(), r2: 0, ctx_len: SKB_UAPI_SIZE as u64, ctx, pkt: Some(pkt), ctx_writable: true })
            }
        }
    }

    /// `[start, end)` of the packet buffer (what the packet may grow into).
    pub fn buffer_range(&self) -> (u64, u64) {
        self.pkt.as_ref().map(|p| (p.addr(), p.addr() + p.len() as u64)).unwrap_or((0, 0))
    }

    /// `[start, end)` of the packet the program may access now (it moves with adjust_head).
    pub fn packet_range(&self) -> (u64, u64) {
        packet_bounds(self.kind, self.ctx.addr())
    }

    /// Output data as BPF_PROG_TEST_RUN returns it: XDP `[data_meta, data_end)`; tc the
    /// packet; socket filter the packet behind a zeroed Ethernet header; plain memory the
    /// memory; raw contexts their bytes.
    pub fn data_out(&self) -> Vec<u8> {
        let copy = |a: u64, b: u64| -> Vec<u8> {
            if b <= a {
                return Vec::new();
            }
            let mut v = vec![0u8; (b - a) as usize];
            // SAFETY: [a, b) lies in our packet buffer.
            unsafe { std::ptr::copy_nonoverlapping(a as *const u8, v.as_mut_ptr(), v.len()) };
            v
        };
        match self.kind {
            CtxKind::Mem | CtxKind::Raw => self.ctx.read(0, self.ctx.len()),
            CtxKind::Xdp => {
                let (s, e) = self.packet_range();
                copy(s, e)
            }
            CtxKind::Skb { tc } => {
                let (s, e) = data_bounds(self.kind, self.ctx.addr());
                let mut v = if tc { Vec::new() } else { vec![0u8; ETH_HLEN as usize] };
                v.extend(copy(s, e));
                v
            }
        }
    }

    /// Context out, as BPF_PROG_TEST_RUN writes it back (xdp_md with offsets relative to
    /// data_meta; `__sk_buff`), or None for other kinds.
    pub fn ctx_out(&self) -> Option<Vec<u8>> {
        match self.kind {
            CtxKind::Xdp => {
                let mut md = self.ctx.read(0, XDP_MD_SIZE);
                let c = self.ctx.addr();
                let meta = rd64(c + XDP_DATA_META as u64);
                let data = rd64(c + XDP_DATA as u64);
                let end = rd64(c + XDP_DATA_END as u64);
                md[0..4].copy_from_slice(&((data - meta) as u32).to_le_bytes());
                md[4..8].copy_from_slice(&((end - meta) as u32).to_le_bytes());
                md[8..12].copy_from_slice(&[0; 4]);
                Some(md)
            }
            CtxKind::Skb { .. } => {
                let mut u = self.ctx.read(0, SKB_UAPI_SIZE);
                for off in [skb::DATA, skb::DATA_END, skb::DATA_META] {
                    u[off..off + 4].copy_from_slice(&[0; 4]);
                }
                Some(u)
            }
            _ => None,
        }
    }
}

// ---- load-time rewriting ----

/// How a ctx field access is handled.
enum Field {
    /// Load of a packet pointer: becomes a 64-bit load at this internal offset.
    Pointer(i16),
    /// Read (or, where allowed, written) in place.
    Plain,
}

fn xdp_field(off: i64, size: usize, write: bool) -> Result<Field, String> {
    if write {
        return Err("XDP programs may not write the context".into());
    }
    let ptr = match off {
        0 => Some(XDP_DATA),
        4 => Some(XDP_DATA_END),
        8 => Some(XDP_DATA_META),
        _ => None,
    };
    match ptr {
        Some(p) if size == 4 => Ok(Field::Pointer(p as i16)),
        Some(_) => Err(format!("narrow or wide access to xdp_md pointer field at offset {off}")),
        None if (12..XDP_MD_SIZE as i64).contains(&off) && off as usize % 4 + size <= 4 => {
            Ok(Field::Plain)
        }
        None => Err(format!("invalid xdp_md access at offset {off}, size {size}")),
    }
}

fn skb_field(off: i64, size: usize, write: bool, tc: bool) -> Result<Field, String> {
    if off < 0 || off as usize + size > SKB_UAPI_SIZE {
        return Err(format!("invalid __sk_buff access at offset {off}, size {size}"));
    }
    let o = off as usize;
    let ptr = match o {
        skb::DATA => Some(SKB_DATA),
        skb::DATA_END => Some(SKB_DATA_END),
        skb::DATA_META => Some(SKB_DATA_META),
        _ => None,
    };
    if let Some(p) = ptr {
        if write || size != 4 {
            return Err(format!("__sk_buff pointer field at offset {o} must be read with a 32-bit load"));
        }
        return Ok(Field::Pointer(p as i16));
    }
    if (skb::FLOW_KEYS..skb::FLOW_KEYS + 8).contains(&o) || (skb::SK..skb::SK + 8).contains(&o) {
        return Err(format!("__sk_buff field at offset {o} (flow_keys/sk) is not supported"));
    }
    let is64 = (skb::TSTAMP..skb::TSTAMP + 8).contains(&o) || (skb::HWTSTAMP..skb::HWTSTAMP + 8).contains(&o);
    // cb[] may be accessed in any naturally aligned size (e.g. 8-byte copies of two slots).
    let in_cb = o >= skb::CB && o + size <= skb::CB + 20 && o % size == 0;
    if !is64 && !in_cb && o % 4 + size > 4 {
        return Err(format!("__sk_buff access at offset {o}, size {size} crosses a field"));
    }
    if write {
        let cb = in_cb;
        let tc_only = [skb::MARK, skb::PRIORITY, skb::QUEUE_MAPPING, skb::TC_INDEX, skb::TC_CLASSID].contains(&o)
            || o == skb::TSTAMP;
        let full = size == 4 || (o == skb::TSTAMP && size == 8) || cb;
        if !(cb || (tc && tc_only)) || !full {
            return Err(format!("write to __sk_buff field at offset {o}, size {size} is not allowed"));
        }
        return Ok(Field::Plain);
    }
    Ok(Field::Plain)
}

/// Forward dataflow state: which registers and 8-byte stack slots hold the ctx pointer,
/// as must/may bit sets (must ⊆ may).
#[derive(Clone, Copy, PartialEq, Eq, Default)]
struct St {
    must: u16,
    may: u16,
    smust: u64,
    smay: u64,
}

impl St {
    fn join(a: St, b: St) -> St {
        St { must: a.must & b.must, may: a.may | b.may, smust: a.smust & b.smust, smay: a.smay | b.smay }
    }
    fn set_reg(&mut self, r: u8, from: Option<(bool, bool)>) {
        let bit = 1u16 << r;
        let (must, may) = from.unwrap_or((false, false));
        self.must = if must { self.must | bit } else { self.must & !bit };
        self.may = if may { self.may | bit } else { self.may & !bit };
    }
    fn reg(&self, r: u8) -> (bool, bool) {
        (self.must >> r & 1 != 0, self.may >> r & 1 != 0)
    }
    /// Stack slot index of an access at fp+off of `size` bytes touching it, if in range.
    fn slots(off: i64, size: usize) -> std::ops::Range<i64> {
        let lo = (off + 512).div_euclid(8);
        let hi = (off + 512 + size as i64 - 1).div_euclid(8) + 1;
        lo.max(0)..hi.min(64)
    }
    fn clobber_stack(&mut self, off: i64, size: usize) {
        for s in St::slots(off, size) {
            self.smust &= !(1 << s);
            self.smay &= !(1 << s);
        }
    }
}

/// Rewrites every context field access of `insns` for `kind` (see the module doc).
/// Errors name the instruction.
pub(crate) fn rewrite_ctx_access(
    prog: &str,
    insns: &mut [Insn],
    subprogs: &[Subprog],
    kind: CtxKind,
) -> Result<(), VmError> {
    if matches!(kind, CtxKind::Mem | CtxKind::Raw) {
        return Ok(());
    }
    let n = insns.len();
    let err = |pc: usize, msg: String| VmError::Load { prog: prog.to_string(), pc, msg };
    let mut state: Vec<Option<St>> = vec![None; n];
    let mut work: Vec<usize> = Vec::new();
    let push = |state: &mut Vec<Option<St>>, work: &mut Vec<usize>, pc: usize, s: St| {
        if pc >= n {
            return;
        }
        let new = match state[pc] {
            None => s,
            Some(old) => St::join(old, s),
        };
        if state[pc] != Some(new) {
            state[pc] = Some(new);
            work.push(pc);
        }
    };
    let entry = St { must: 1 << 1, may: 1 << 1, smust: 0, smay: 0 };
    push(&mut state, &mut work, 0, entry);
    let _ = subprogs; // subprogram entries are reached through their call sites
    while let Some(pc) = work.pop() {
        let mut s = state[pc].unwrap();
        let i = insns[pc];
        let class = i.class();
        let mut next = vec![pc + 1];
        match class {
            op::ALU | op::ALU64 => {
                if i.code == op::ALU64 | op::MOV | op::X && i.off == 0 {
                    let from = s.reg(i.src);
                    s.set_reg(i.dst, Some(from));
                } else {
                    s.set_reg(i.dst, None);
                }
            }
            op::LDX => {
                let from = if i.src == op::R10 && i.size() == op::DW && i.mode() == op::MEM && i.off % 8 == 0 {
                    let slot = (i.off as i64 + 512) / 8;
                    if (0..64).contains(&slot) {
                        Some((s.smust >> slot & 1 != 0, s.smay >> slot & 1 != 0))
                    } else {
                        None
                    }
                } else {
                    None
                };
                s.set_reg(i.dst, from);
            }
            op::STX | op::ST => {
                if i.dst == op::R10 {
                    let size = i.size_bytes();
                    let spill = class == op::STX && i.mode() == op::MEM && i.size() == op::DW && i.off % 8 == 0;
                    let (must, may) = if spill { s.reg(i.src) } else { (false, false) };
                    s.clobber_stack(i.off as i64, size);
                    if spill {
                        let slot = (i.off as i64 + 512) / 8;
                        if (0..64).contains(&slot) {
                            if must {
                                s.smust |= 1 << slot;
                            }
                            if may {
                                s.smay |= 1 << slot;
                            }
                        }
                    }
                }
                if class == op::STX && i.mode() == op::ATOMIC {
                    if i.imm == op::CMPXCHG {
                        s.set_reg(0, None);
                    } else if i.imm & op::FETCH != 0 {
                        s.set_reg(i.src, None);
                    }
                }
            }
            op::LD => {
                if i.is_ld_imm64() {
                    s.set_reg(i.dst, None);
                    next = vec![pc + 2];
                } else {
                    // LD_ABS/LD_IND clobber r0-r5.
                    for r in 0..=5 {
                        s.set_reg(r, None);
                    }
                }
            }
            op::JMP | op::JMP32 => {
                if i.is_exit() {
                    next.clear();
                } else if i.is_call() {
                    if i.is_pseudo_call() {
                        let t = pc as i64 + 1 + i.imm as i64;
                        if t >= 0 && (t as usize) < n {
                            let mut callee = St::default();
                            for r in 1..=5 {
                                let v = s.reg(r);
                                callee.set_reg(r, Some(v));
                            }
                            push(&mut state, &mut work, t as usize, callee);
                        }
                    }
                    for r in 0..=5 {
                        s.set_reg(r, None);
                    }
                } else if let Some(t) = i.target(pc) {
                    if t < 0 {
                        return Err(err(pc, format!("jump to {t} before the program start")));
                    }
                    if i.op() == op::JA {
                        next = vec![t as usize];
                    } else {
                        next.push(t as usize);
                    }
                }
            }
            _ => {}
        }
        for t in next {
            push(&mut state, &mut work, t, s);
        }
    }

    // Rewrite accesses whose base register holds the ctx pointer.
    for pc in 0..n {
        let Some(s) = state[pc] else { continue };
        let i = insns[pc];
        let (base, write) = match (i.class(), i.mode()) {
            (op::LDX, op::MEM) | (op::LDX, op::MEMSX) => (i.src, false),
            (op::ST, op::MEM) | (op::STX, op::MEM) | (op::STX, op::ATOMIC) => (i.dst, true),
            (op::LD, op::ABS) | (op::LD, op::IND) => {
                if !matches!(kind, CtxKind::Skb { .. }) {
                    return Err(err(pc, "legacy packet load (LD_ABS/LD_IND) outside an skb program".into()));
                }
                if !s.reg(6).0 {
                    return Err(err(pc, "LD_ABS/LD_IND needs the context in r6".into()));
                }
                continue;
            }
            _ => continue,
        };
        let (must, may) = s.reg(base);
        if !may {
            continue;
        }
        if !must {
            return Err(err(
                pc,
                format!("r{base} holds the context pointer on some paths only; cannot rewrite this context access"),
            ));
        }
        if i.mode() == op::ATOMIC {
            return Err(err(pc, "atomic operation on the context".into()));
        }
        let size = i.size_bytes();
        let off = i.off as i64;
        let f = match kind {
            CtxKind::Xdp => xdp_field(off, size, write),
            CtxKind::Skb { tc } => skb_field(off, size, write, tc),
            _ => unreachable!(),
        }
        .map_err(|m| err(pc, m))?;
        match f {
            Field::Pointer(p) => {
                if i.mode() == op::MEMSX {
                    return Err(err(pc, "sign-extending load of a context pointer field".into()));
                }
                insns[pc] = Insn::ldx(op::DW, i.dst, i.src, p);
            }
            Field::Plain => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xdp_loads_become_pointer_loads() {
        let mut p = vec![
            Insn::ldx(op::W, 2, 1, 0),  // data
            Insn::ldx(op::W, 3, 1, 4),  // data_end
            Insn::ldx(op::W, 4, 1, 12), // ingress_ifindex
            Insn::mov64_imm(0, 2),
            Insn::exit(),
        ];
        rewrite_ctx_access("t", &mut p, &[], CtxKind::Xdp).unwrap();
        assert_eq!(p[0], Insn::ldx(op::DW, 2, 1, XDP_DATA as i16));
        assert_eq!(p[1], Insn::ldx(op::DW, 3, 1, XDP_DATA_END as i16));
        assert_eq!(p[2], Insn::ldx(op::W, 4, 1, 12));
    }

    #[test]
    fn ctx_followed_through_moves_and_spills() {
        let mut p = vec![
            Insn::mov64_reg(6, 1),
            Insn::stx(op::DW, 10, 6, -16),
            Insn::mov64_imm(1, 0),
            Insn::ldx(op::DW, 7, 10, -16),
            Insn::ldx(op::W, 2, 7, 4),
            Insn::ldx(op::W, 3, 1, 4), // r1 is no longer ctx: untouched
            Insn::exit(),
        ];
        rewrite_ctx_access("t", &mut p, &[], CtxKind::Xdp).unwrap();
        assert_eq!(p[4], Insn::ldx(op::DW, 2, 7, XDP_DATA_END as i16));
        assert_eq!(p[5], Insn::ldx(op::W, 3, 1, 4));
    }

    #[test]
    fn ambiguous_ctx_pointer_is_rejected() {
        let mut p = vec![
            Insn::jmp_imm(op::JEQ, 2, 0, 1),
            Insn::mov64_imm(1, 0),
            Insn::ldx(op::W, 3, 1, 0),
            Insn::exit(),
        ];
        let e = rewrite_ctx_access("t", &mut p, &[], CtxKind::Xdp).unwrap_err();
        assert!(e.to_string().contains("insn 2"), "{e}");
    }

    #[test]
    fn ctx_into_subprogram() {
        let mut p = vec![
            Insn::new(op::JMP | op::CALL, 0, op::PSEUDO_CALL, 0, 1),
            Insn::exit(),
            Insn::ldx(op::W, 0, 1, skb::DATA as i16),
            Insn::exit(),
        ];
        rewrite_ctx_access("t", &mut p, &[], CtxKind::Skb { tc: true }).unwrap();
        assert_eq!(p[2], Insn::ldx(op::DW, 0, 1, SKB_DATA as i16));
    }

    #[test]
    fn bad_ctx_accesses_are_load_errors() {
        for bad in [
            Insn::stx(op::W, 1, 2, 12),        // XDP ctx write
            Insn::ldx(op::H, 2, 1, 0),         // narrow pointer load
            Insn::ldx(op::W, 2, 1, 24),        // past xdp_md
        ] {
            let mut p = vec![bad, Insn::exit()];
            assert!(rewrite_ctx_access("t", &mut p, &[], CtxKind::Xdp).is_err(), "{bad:?}");
        }
        let mut p = vec![Insn::stx(op::W, 1, 2, skb::MARK as i16), Insn::exit()];
        assert!(rewrite_ctx_access("t", &mut p, &[], CtxKind::Skb { tc: false }).is_err());
        let mut p = vec![Insn::stx(op::W, 1, 2, skb::MARK as i16), Insn::stx(op::W, 1, 2, skb::CB as i16 + 4), Insn::exit()];
        rewrite_ctx_access("t", &mut p, &[], CtxKind::Skb { tc: true }).unwrap();
        // cb[] in 8-byte units (aligned) and bytes are fine, even for socket filters.
        let mut p = vec![Insn::stx(op::DW, 1, 2, skb::CB as i16 + 8), Insn::ldx(op::B, 3, 1, skb::CB as i16 + 19), Insn::exit()];
        rewrite_ctx_access("t", &mut p, &[], CtxKind::Skb { tc: false }).unwrap();
        // ...but not misaligned or past cb[4].
        for bad in [Insn::stx(op::DW, 1, 2, skb::CB as i16 + 4), Insn::stx(op::DW, 1, 2, skb::CB as i16 + 16)] {
            let mut p = vec![bad, Insn::exit()];
            assert!(rewrite_ctx_access("t", &mut p, &[], CtxKind::Skb { tc: true }).is_err(), "{bad:?}");
        }
    }
}

/// `LD_ABS`/`LD_IND` for the native engines, with the interpreter's (the kernel's)
/// semantics: the big-endian value of `size` bytes at `off` from the data of the skb
/// context at `skb` (negative offsets address the network header, `SKF_NET_OFF`, or the
/// link-layer header, `SKF_LL_OFF`), or None when out of range. `head` is the start of the
/// run's packet buffer; `tc`: data starts at the Ethernet header (else at the network
/// header, as for socket filters).
pub fn legacy_packet_load(skb: u64, head: u64, tc: bool, size: u64, off: i64) -> Option<u64> {
    const SKF_NET_OFF: i64 = -0x10_0000;
    const SKF_LL_OFF: i64 = -0x20_0000;
    // SAFETY: `skb` is the run's skb context structure (alive for the run).
    let rd = |o: usize| unsafe { std::ptr::read_unaligned((skb + o as u64) as *const u64) };
    let (data, end) = (rd(SKB_DATA), rd(SKB_DATA_END));
    let (net, mac) = if tc { (data + 14, data) } else { (data, data.wrapping_sub(14)) };
    let addr = if off >= 0 {
        data.wrapping_add(off as u64)
    } else if off >= SKF_NET_OFF {
        net.wrapping_add((off - SKF_NET_OFF) as u64)
    } else if off >= SKF_LL_OFF {
        mac.wrapping_add((off - SKF_LL_OFF) as u64)
    } else {
        return None;
    };
    if addr < head || addr > end || addr.wrapping_add(size) > end || !matches!(size, 1 | 2 | 4) {
        return None;
    }
    // SAFETY: [addr, addr + size) lies inside the run's packet buffer (checked above).
    let b = unsafe { std::slice::from_raw_parts(addr as *const u8, size as usize) };
    Some(b.iter().fold(0u64, |v, x| v << 8 | *x as u64))
}
