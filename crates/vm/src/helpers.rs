//! Helper functions, callable from every engine: `extern "C" fn(r1..r5) -> r0`.
//!
//! Helpers reach the state of the current run (maps, region registry, trace output,
//! redirect target, random state, the context) through a thread-local pointer that
//! [`crate::Vm::run`] sets for the duration of a run, the way the kernel keeps
//! `bpf_redirect_info` per CPU. Every pointer argument that names a map is checked against
//! the run's maps; a helper that cannot make sense of its arguments records a fault (the run
//! then ends with [`crate::VmError::HelperFault`]) and returns a negative errno. Memory
//! arguments are trusted here: the verifier guarantees them in the kernel, the interpreter
//! checks them before the call, and a JIT runs only programs that the interpreter or the
//! kernel accepted.

use crate::ctx::{self, CtxKind};
use crate::maps::{errno, Map};
use crate::mem::{RegionKind, Registry};
use crate::Shared;
use kops_object::map_type;
use std::cell::{Cell, RefMut};

pub mod kfuncs;
pub mod net;

/// The helper calling convention of every engine.
pub type HelperFn = extern "C" fn(u64, u64, u64, u64, u64) -> u64;

/// One helper of a [`HelperTable`].
#[derive(Clone, Copy)]
pub struct HelperDef {
    pub id: u32,
    pub name: &'static str,
    pub func: HelperFn,
}

impl std::fmt::Debug for HelperDef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}#{} at {:#x}", self.name, self.id, self.func as usize)
    }
}

/// Helper id -> implementation, for one program.
#[derive(Clone, Debug, Default)]
pub struct HelperTable {
    defs: Vec<HelperDef>,
}

impl HelperTable {
    /// The helpers of a Linux program (the set the runtime implements).
    pub fn kernel() -> HelperTable {
        let mut defs = KERNEL_HELPERS.to_vec();
        // Helpers that take a socket from a lookup (see `net::socket_arg_helper`).
        for id in 0..KERNEL_HELPER_NAMES.len() as u32 {
            if let (Some(func), Some(name)) = (net::socket_arg_helper(id), kernel_helper_name(id)) {
                defs.push(HelperDef { id, name, func });
            }
        }
        HelperTable { defs }
    }
    /// The conformance suite's helpers: only id 5 ("unwind").
    pub fn conformance() -> HelperTable {
        HelperTable { defs: vec![HelperDef { id: UNWIND, name: "unwind", func: h_unwind }] }
    }
    pub fn get(&self, id: u32) -> Option<&HelperDef> {
        self.defs.iter().find(|d| d.id == id)
    }
    /// Address of helper `id`'s implementation, for native calls.
    pub fn address(&self, id: u32) -> Option<u64> {
        self.get(id).map(|d| d.func as usize as u64)
    }
    pub fn iter(&self) -> impl Iterator<Item = &HelperDef> {
        self.defs.iter()
    }
}

// Helper ids (include/uapi/linux/bpf.h `___BPF_FUNC_MAPPER` order).
pub const MAP_LOOKUP_ELEM: u32 = 1;
pub const MAP_UPDATE_ELEM: u32 = 2;
pub const MAP_DELETE_ELEM: u32 = 3;
pub const KTIME_GET_NS: u32 = 5;
pub const TRACE_PRINTK: u32 = 6;
pub const GET_PRANDOM_U32: u32 = 7;
pub const GET_SMP_PROCESSOR_ID: u32 = 8;
pub const SKB_STORE_BYTES: u32 = 9;
pub const L3_CSUM_REPLACE: u32 = 10;
pub const L4_CSUM_REPLACE: u32 = 11;
pub const TAIL_CALL: u32 = 12;
pub const REDIRECT: u32 = 23;
pub const PERF_EVENT_OUTPUT: u32 = 25;
pub const SKB_LOAD_BYTES: u32 = 26;
pub const CSUM_DIFF: u32 = 28;
pub const XDP_ADJUST_HEAD: u32 = 44;
pub const REDIRECT_MAP: u32 = 51;
pub const MAP_PUSH_ELEM: u32 = 87;
pub const MAP_POP_ELEM: u32 = 88;
pub const MAP_PEEK_ELEM: u32 = 89;
pub const XDP_ADJUST_META: u32 = 54;
pub const XDP_ADJUST_TAIL: u32 = 65;
pub const KTIME_GET_BOOT_NS: u32 = 125;
pub const RINGBUF_OUTPUT: u32 = 130;
pub const RINGBUF_RESERVE: u32 = 131;
pub const RINGBUF_SUBMIT: u32 = 132;
pub const RINGBUF_DISCARD: u32 = 133;
pub const XDP_GET_BUFF_LEN: u32 = 188;
pub const CLONE_REDIRECT: u32 = 13;
pub const SKB_VLAN_PUSH: u32 = 18;
pub const SKB_VLAN_POP: u32 = 19;
pub const SKB_GET_TUNNEL_KEY: u32 = 20;
pub const SKB_SET_TUNNEL_KEY: u32 = 21;
pub const GET_HASH_RECALC: u32 = 34;
pub const SKB_CHANGE_TAIL: u32 = 38;
pub const SKB_PULL_DATA: u32 = 39;
pub const CSUM_UPDATE: u32 = 40;
pub const SET_HASH_INVALID: u32 = 41;
pub const SKB_CHANGE_HEAD: u32 = 43;
pub const SET_HASH: u32 = 48;
pub const SKB_ADJUST_ROOM: u32 = 50;
pub const FIB_LOOKUP: u32 = 69;
pub const SKB_ECN_SET_CE: u32 = 97;
pub const SKC_LOOKUP_TCP: u32 = 99;
pub const SKB_GET_TUNNEL_OPT: u32 = 29;
pub const SKB_SET_TUNNEL_OPT: u32 = 30;
pub const SKB_CHANGE_PROTO: u32 = 31;
pub const SPIN_LOCK: u32 = 93;
pub const SPIN_UNLOCK: u32 = 94;
pub const SKB_CHANGE_TYPE: u32 = 32;
pub const SKB_LOAD_BYTES_RELATIVE: u32 = 68;
pub const SK_LOOKUP_TCP: u32 = 84;
pub const SK_LOOKUP_UDP: u32 = 85;
pub const XDP_OUTPUT: u32 = 121;

pub const CSUM_LEVEL: u32 = 135;
pub const REDIRECT_NEIGH: u32 = 152;
pub const REDIRECT_PEER: u32 = 155;
pub const KTIME_GET_COARSE_NS: u32 = 160;
pub const CHECK_MTU: u32 = 163;
pub const TRACE_VPRINTK: u32 = 177;
pub const XDP_LOAD_BYTES: u32 = 189;
pub const XDP_STORE_BYTES: u32 = 190;
pub const SKB_SET_TSTAMP: u32 = 192;
pub const KTIME_GET_TAI_NS: u32 = 208;
pub const GET_NUMA_NODE_ID: u32 = 42;
pub const JIFFIES64: u32 = 118;
/// Conformance suite: returns r1; the engine ends the program when it is 0.
pub const UNWIND: u32 = 5;

const KERNEL_HELPERS: &[HelperDef] = &[
    HelperDef { id: MAP_LOOKUP_ELEM, name: "map_lookup_elem", func: h_map_lookup_elem },
    HelperDef { id: MAP_UPDATE_ELEM, name: "map_update_elem", func: h_map_update_elem },
    HelperDef { id: MAP_DELETE_ELEM, name: "map_delete_elem", func: h_map_delete_elem },
    HelperDef { id: KTIME_GET_NS, name: "ktime_get_ns", func: h_ktime_get_ns },
    HelperDef { id: TRACE_PRINTK, name: "trace_printk", func: h_trace_printk },
    HelperDef { id: GET_PRANDOM_U32, name: "get_prandom_u32", func: h_get_prandom_u32 },
    HelperDef { id: GET_SMP_PROCESSOR_ID, name: "get_smp_processor_id", func: h_get_smp_processor_id },
    HelperDef { id: SKB_STORE_BYTES, name: "skb_store_bytes", func: h_skb_store_bytes },
    HelperDef { id: L3_CSUM_REPLACE, name: "l3_csum_replace", func: h_l3_csum_replace },
    HelperDef { id: L4_CSUM_REPLACE, name: "l4_csum_replace", func: h_l4_csum_replace },
    HelperDef { id: TAIL_CALL, name: "tail_call", func: h_tail_call },
    HelperDef { id: REDIRECT, name: "redirect", func: h_redirect },
    HelperDef { id: PERF_EVENT_OUTPUT, name: "perf_event_output", func: h_perf_event_output },
    HelperDef { id: SKB_LOAD_BYTES, name: "skb_load_bytes", func: h_skb_load_bytes },
    HelperDef { id: CSUM_DIFF, name: "csum_diff", func: h_csum_diff },
    HelperDef { id: XDP_ADJUST_HEAD, name: "xdp_adjust_head", func: h_xdp_adjust_head },
    HelperDef { id: REDIRECT_MAP, name: "redirect_map", func: h_redirect_map },
    HelperDef { id: MAP_PUSH_ELEM, name: "map_push_elem", func: h_map_push_elem },
    HelperDef { id: MAP_POP_ELEM, name: "map_pop_elem", func: h_map_pop_elem },
    HelperDef { id: MAP_PEEK_ELEM, name: "map_peek_elem", func: h_map_peek_elem },
    HelperDef { id: XDP_ADJUST_META, name: "xdp_adjust_meta", func: h_xdp_adjust_meta },
    HelperDef { id: XDP_ADJUST_TAIL, name: "xdp_adjust_tail", func: h_xdp_adjust_tail },
    HelperDef { id: KTIME_GET_BOOT_NS, name: "ktime_get_boot_ns", func: h_ktime_get_ns },
    HelperDef { id: RINGBUF_OUTPUT, name: "ringbuf_output", func: h_ringbuf_output },
    HelperDef { id: RINGBUF_RESERVE, name: "ringbuf_reserve", func: h_ringbuf_reserve },
    HelperDef { id: RINGBUF_SUBMIT, name: "ringbuf_submit", func: h_ringbuf_submit },
    HelperDef { id: RINGBUF_DISCARD, name: "ringbuf_discard", func: h_ringbuf_discard },
    HelperDef { id: XDP_GET_BUFF_LEN, name: "xdp_get_buff_len", func: h_xdp_get_buff_len },
    HelperDef { id: CLONE_REDIRECT, name: "clone_redirect", func: net::h_clone_redirect },
    HelperDef { id: SKB_VLAN_PUSH, name: "skb_vlan_push", func: net::h_skb_vlan_push },
    HelperDef { id: SKB_VLAN_POP, name: "skb_vlan_pop", func: net::h_skb_vlan_pop },
    HelperDef { id: SKB_GET_TUNNEL_KEY, name: "skb_get_tunnel_key", func: net::h_skb_get_tunnel_key },
    HelperDef { id: SKB_SET_TUNNEL_KEY, name: "skb_set_tunnel_key", func: net::h_skb_set_tunnel_key },
    HelperDef { id: GET_HASH_RECALC, name: "get_hash_recalc", func: net::h_get_hash_recalc },
    HelperDef { id: SKB_CHANGE_TAIL, name: "skb_change_tail", func: net::h_skb_change_tail },
    HelperDef { id: SKB_PULL_DATA, name: "skb_pull_data", func: net::h_skb_pull_data },
    HelperDef { id: CSUM_UPDATE, name: "csum_update", func: net::h_csum_update },
    HelperDef { id: SET_HASH_INVALID, name: "set_hash_invalid", func: net::h_set_hash_invalid },
    HelperDef { id: SKB_CHANGE_HEAD, name: "skb_change_head", func: net::h_skb_change_head },
    HelperDef { id: SET_HASH, name: "set_hash", func: net::h_set_hash },
    HelperDef { id: SKB_ADJUST_ROOM, name: "skb_adjust_room", func: net::h_skb_adjust_room },
    HelperDef { id: FIB_LOOKUP, name: "fib_lookup", func: net::h_fib_lookup },
    HelperDef { id: SKB_ECN_SET_CE, name: "skb_ecn_set_ce", func: net::h_skb_ecn_set_ce },
    HelperDef { id: SKC_LOOKUP_TCP, name: "skc_lookup_tcp", func: net::h_sk_lookup },
    HelperDef { id: SK_LOOKUP_TCP, name: "sk_lookup_tcp", func: net::h_sk_lookup },
    HelperDef { id: SK_LOOKUP_UDP, name: "sk_lookup_udp", func: net::h_sk_lookup },
    HelperDef { id: SKB_GET_TUNNEL_OPT, name: "skb_get_tunnel_opt", func: net::h_skb_get_tunnel_opt },
    HelperDef { id: SKB_SET_TUNNEL_OPT, name: "skb_set_tunnel_opt", func: net::h_skb_set_tunnel_opt },
    HelperDef { id: SPIN_LOCK, name: "spin_lock", func: net::h_spin_lock },
    HelperDef { id: SPIN_UNLOCK, name: "spin_unlock", func: net::h_spin_lock },
    HelperDef { id: SKB_CHANGE_PROTO, name: "skb_change_proto", func: net::h_skb_change_proto },
    HelperDef { id: SKB_CHANGE_TYPE, name: "skb_change_type", func: net::h_skb_change_type },
    HelperDef { id: SKB_LOAD_BYTES_RELATIVE, name: "skb_load_bytes_relative", func: net::h_skb_load_bytes_relative },
    HelperDef { id: XDP_OUTPUT, name: "xdp_output", func: h_perf_event_output },
    HelperDef { id: CSUM_LEVEL, name: "csum_level", func: net::h_csum_level },
    HelperDef { id: REDIRECT_NEIGH, name: "redirect_neigh", func: net::h_redirect_neigh },
    HelperDef { id: REDIRECT_PEER, name: "redirect_peer", func: net::h_redirect_peer },
    HelperDef { id: KTIME_GET_COARSE_NS, name: "ktime_get_coarse_ns", func: h_ktime_get_ns },
    HelperDef { id: CHECK_MTU, name: "check_mtu", func: net::h_check_mtu },
    HelperDef { id: TRACE_VPRINTK, name: "trace_vprintk", func: h_trace_vprintk },
    HelperDef { id: XDP_LOAD_BYTES, name: "xdp_load_bytes", func: net::h_xdp_load_bytes },
    HelperDef { id: XDP_STORE_BYTES, name: "xdp_store_bytes", func: net::h_xdp_store_bytes },
    HelperDef { id: SKB_SET_TSTAMP, name: "skb_set_tstamp", func: net::h_skb_set_tstamp },
    HelperDef { id: KTIME_GET_TAI_NS, name: "ktime_get_tai_ns", func: h_ktime_get_ns },
    HelperDef { id: GET_NUMA_NODE_ID, name: "get_numa_node_id", func: h_get_smp_processor_id },
    HelperDef { id: JIFFIES64, name: "jiffies64", func: h_jiffies64 },
];

pub use crate::helper_names::{describe_helper, kernel_helper_id, kernel_helper_name, KERNEL_HELPER_NAMES};

/// Where an XDP or tc program asked to redirect the packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Redirect {
    /// `bpf_redirect(ifindex, flags)`.
    Ifindex { ifindex: u32, flags: u64 },
    /// `bpf_redirect_map(map, key, flags)` that found its target.
    Map { map: usize, key: u32 },
    /// `bpf_redirect_peer(ifindex, 0)`.
    Peer { ifindex: u32 },
    /// `bpf_redirect_neigh(ifindex, params, plen, 0)`.
    Neigh { ifindex: u32 },
    /// `bpf_redirect_map` on a devmap with BPF_F_BROADCAST: to every device of the map
    /// (but the ingress one with BPF_F_EXCLUDE_INGRESS).
    Broadcast { map: usize, exclude_ingress: bool },
}

/// State of the run in progress on this thread.
pub(crate) struct RunState {
    pub shared: *const Shared,
    pub ctx_kind: CtxKind,
    /// Address of the context the run started with (helpers that take `ctx` check it).
    pub ctx: u64,
    pub trace: Vec<String>,
    pub rng: u64,
    pub ktime: u64,
    pub redirect: Option<Redirect>,
    /// `bpf_clone_redirect` targets, in call order: (ifindex, flags).
    pub clones: Vec<(u32, u64)>,
    pub fault: Option<String>,
    /// The skb as the networking helpers see it (see [`net`]).
    pub skb: net::SkbModel,
    /// Devices and routes (owned by the Vm).
    pub net: *const net::NetModel,
}

thread_local! {
    static CURRENT: Cell<*mut RunState> = const { Cell::new(std::ptr::null_mut()) };
}

/// Installs `state` as the current run until the guard drops.
pub(crate) struct RunGuard {
    prev: *mut RunState,
}

impl RunGuard {
    pub fn install(state: &mut RunState) -> RunGuard {
        let prev = CURRENT.with(|c| c.replace(state as *mut RunState));
        RunGuard { prev }
    }
}

impl Drop for RunGuard {
    fn drop(&mut self) {
        CURRENT.with(|c| c.set(self.prev));
    }
}

/// Runs `f` with the current run state, or returns `none` when no run is in progress.
pub(crate) fn with_state<R>(none: R, f: impl FnOnce(&mut RunState) -> R) -> R {
    let p = CURRENT.with(|c| c.get());
    if p.is_null() {
        return none;
    }
    // SAFETY: the pointer is installed by RunGuard for the duration of a run on this thread,
    // and helpers do not nest.
    f(unsafe { &mut *p })
}

pub(crate) fn fault(st: &mut RunState, msg: String) -> u64 {
    if st.fault.is_none() {
        st.fault = Some(msg);
    }
    (-errno::EINVAL) as u64
}

impl RunState {
    fn shared(&self) -> &Shared {
        // SAFETY: `shared` outlives the run (it is owned by the Vm that runs the program).
        unsafe { &*self.shared }
    }
    fn map(&self, addr: u64) -> Option<&Map> {
        self.shared().maps.iter().find(|m| m.addr() == addr).map(|m| &**m)
    }
    /// The map a helper was given, or the fault to record: not a map, or a map we do not
    /// model at run time.
    fn map_arg(&self, addr: u64, helper: &str) -> Result<&Map, String> {
        let m = self.map(addr).ok_or_else(|| format!("{helper}: {addr:#x} is not a map"))?;
        match m.runtime_unsupported() {
            Some(why) => Err(format!("{helper}: {why}")),
            None => Ok(m),
        }
    }
    fn registry(&self) -> RefMut<'_, Registry> {
        self.shared().registry.borrow_mut()
    }
}

/// Bytes at a program-supplied address (checked by the caller, see the module doc).
unsafe fn bytes<'a>(addr: u64, len: usize) -> &'a [u8] {
    if len == 0 {
        return &[];
    }
    std::slice::from_raw_parts(addr as *const u8, len)
}

extern "C" fn h_map_lookup_elem(map: u64, key: u64, _: u64, _: u64, _: u64) -> u64 {
    with_state(0, |st| match st.map_arg(map, "map_lookup_elem") {
        // SAFETY: see `bytes`.
        Ok(m) => m.prog_lookup(unsafe { bytes(key, m.def.key_size as usize) }),
        Err(msg) => {
            fault(st, msg);
            0
        }
    })
}

extern "C" fn h_map_update_elem(map: u64, key: u64, value: u64, flags: u64, _: u64) -> u64 {
    with_state((-errno::EINVAL) as u64, |st| match st.map_arg(map, "map_update_elem") {
        Ok(m) => {
            // SAFETY: see `bytes`.
            let (k, v) = unsafe {
                (bytes(key, m.def.key_size as usize), bytes(value, m.def.value_size as usize))
            };
            m.prog_update(k, v, flags, &mut st.registry()) as u64
        }
        Err(msg) => fault(st, msg),
    })
}

extern "C" fn h_map_delete_elem(map: u64, key: u64, _: u64, _: u64, _: u64) -> u64 {
    with_state((-errno::EINVAL) as u64, |st| match st.map_arg(map, "map_delete_elem") {
        Ok(m) => {
            // SAFETY: see `bytes`.
            let k = unsafe { bytes(key, m.def.key_size as usize) };
            m.prog_delete(k, &mut st.registry()) as u64
        }
        Err(msg) => fault(st, msg),
    })
}

/// `bpf_map_push_elem(map, value, flags)`: queue, stack, bloom filter.
extern "C" fn h_map_push_elem(map: u64, value: u64, flags: u64, _: u64, _: u64) -> u64 {
    with_state((-errno::EINVAL) as u64, |st| match st.map_arg(map, "map_push_elem") {
        Ok(m) => {
            // SAFETY: see `bytes`.
            let v = unsafe { bytes(value, m.def.value_size as usize) };
            m.prog_push(v, flags, &mut st.registry()) as u64
        }
        Err(msg) => fault(st, msg),
    })
}

fn pop_peek(map: u64, value: u64, pop: bool) -> u64 {
    let what = if pop { "map_pop_elem" } else { "map_peek_elem" };
    with_state((-errno::EINVAL) as u64, |st| match st.map_arg(map, what) {
        Ok(m) => {
            let n = m.def.value_size as usize;
            // SAFETY: `value` holds value_size bytes (see `bytes`); the interpreter checked
            // it writable for queues and stacks, readable for bloom filters (which only read).
            let out = unsafe { std::slice::from_raw_parts_mut(value as *mut u8, n) };
            m.prog_pop_peek(out, pop) as u64
        }
        Err(msg) => fault(st, msg),
    })
}

extern "C" fn h_map_pop_elem(map: u64, value: u64, _: u64, _: u64, _: u64) -> u64 {
    pop_peek(map, value, true)
}

extern "C" fn h_map_peek_elem(map: u64, value: u64, _: u64, _: u64, _: u64) -> u64 {
    pop_peek(map, value, false)
}

/// Deterministic clock: starts at the Vm's base and advances 1 µs per call, so runs are
/// reproducible across engines.
extern "C" fn h_ktime_get_ns(_: u64, _: u64, _: u64, _: u64, _: u64) -> u64 {
    with_state(0, |st| {
        st.ktime += 1000;
        st.ktime
    })
}

/// `bpf_jiffies64`: the deterministic clock in ticks of a HZ=250 kernel (4 ms); it
/// advances like `bpf_ktime_get_ns`.
extern "C" fn h_jiffies64(_: u64, _: u64, _: u64, _: u64, _: u64) -> u64 {
    h_ktime_get_ns(0, 0, 0, 0, 0) / 4_000_000
}

extern "C" fn h_get_prandom_u32(_: u64, _: u64, _: u64, _: u64, _: u64) -> u64 {
    with_state(0, |st| {
        // xorshift64*: deterministic for a given seed.
        let mut x = st.rng;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        st.rng = x;
        (x.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 32) as u32 as u64
    })
}

/// CPU 0 of NUMA node 0: the runtimes model one CPU.
extern "C" fn h_get_smp_processor_id(_: u64, _: u64, _: u64, _: u64, _: u64) -> u64 {
    0
}

extern "C" fn h_tail_call(_: u64, _: u64, _: u64, _: u64, _: u64) -> u64 {
    with_state((-errno::EINVAL) as u64, |st| {
        fault(st, "tail_call reached the helper: the engine must perform tail calls itself".into())
    })
}

extern "C" fn h_unwind(r1: u64, _: u64, _: u64, _: u64, _: u64) -> u64 {
    r1
}

/// `bpf_trace_printk(fmt, fmt_size, a1, a2, a3)`: formats like the kernel (the conversions
/// it accepts) into the run's trace output; returns the length written.
extern "C" fn h_trace_printk(fmt: u64, size: u64, a1: u64, a2: u64, a3: u64) -> u64 {
    with_state((-errno::EINVAL) as u64, |st| {
        // SAFETY: see `bytes`.
        let raw = unsafe { bytes(fmt, size as usize) };
        let raw = raw.split(|b| *b == 0).next().unwrap_or(&[]);
        match format_printk(raw, [a1, a2, a3]) {
            Some(s) => {
                let n = s.len() as u64;
                st.trace.push(s);
                n
            }
            None => (-errno::EINVAL) as u64,
        }
    })
}

/// `bpf_trace_vprintk(fmt, fmt_size, args, args_size)`: up to 12 u64 arguments in an
/// array (formatted here with the conversions of [`format_printk`]).
extern "C" fn h_trace_vprintk(fmt: u64, size: u64, args: u64, args_size: u64, _: u64) -> u64 {
    with_state((-errno::EINVAL) as u64, |st| {
        let n = args_size as u32 as usize;
        if !n.is_multiple_of(8) || n > 8 * 12 || (args == 0 && n != 0) {
            return (-errno::EINVAL) as u64;
        }
        // SAFETY: see `bytes`.
        let raw = unsafe { bytes(fmt, size as usize) };
        let raw = raw.split(|b| *b == 0).next().unwrap_or(&[]);
        // SAFETY: see `bytes`.
        let a: Vec<u64> = unsafe { bytes(args, n) }.chunks(8).map(|c| u64::from_le_bytes(c.try_into().unwrap())).collect();
        match format_printk_n(raw, &a) {
            Some(s) => {
                let len = s.len() as u64;
                st.trace.push(s);
                len
            }
            None => (-errno::EINVAL) as u64,
        }
    })
}

/// printf-style formatting of the conversions `bpf_trace_printk` accepts
/// (`%d %i %u %x %X %c`, with `l`/`ll` length and `%p`, `%%`). `%s` is rejected: its
/// argument would be an unchecked pointer.
pub fn format_printk(fmt: &[u8], args: [u64; 3]) -> Option<String> {
    format_printk_n(fmt, &args)
}

fn format_printk_n(fmt: &[u8], args: &[u64]) -> Option<String> {
    let mut out = String::new();
    let mut ai = 0;
    let mut i = 0;
    while i < fmt.len() {
        let c = fmt[i];
        i += 1;
        if c != b'%' {
            out.push(c as char);
            continue;
        }
        if fmt.get(i) == Some(&b'%') {
            out.push('%');
            i += 1;
            continue;
        }
        let mut longs = 0;
        while fmt.get(i) == Some(&b'l') {
            longs += 1;
            i += 1;
        }
        let conv = *fmt.get(i)?;
        i += 1;
        let a = *args.get(ai)?;
        ai += 1;
        let wide = longs > 0;
        match conv {
            b'd' | b'i' => {
                let v = if wide { a as i64 } else { a as i32 as i64 };
                out.push_str(&v.to_string());
            }
            b'u' => {
                let v = if wide { a } else { a as u32 as u64 };
                out.push_str(&v.to_string());
            }
            b'x' => out.push_str(&format!("{:x}", if wide { a } else { a as u32 as u64 })),
            b'X' => out.push_str(&format!("{:X}", if wide { a } else { a as u32 as u64 })),
            b'p' => out.push_str(&format!("{a:016x}")),
            b'c' => out.push(a as u8 as char),
            _ => return None,
        }
    }
    Some(out)
}

// XDP actions and tc actions used by the redirect helpers.
const XDP_ABORTED: u64 = 0;
const XDP_REDIRECT: u64 = 4;
const TC_ACT_SHOT: u64 = 2;
const TC_ACT_REDIRECT: u64 = 7;
const BPF_F_INGRESS: u64 = 1;
const BPF_F_BROADCAST: u64 = 8;
const BPF_F_EXCLUDE_INGRESS: u64 = 16;

extern "C" fn h_redirect(ifindex: u64, flags: u64, _: u64, _: u64, _: u64) -> u64 {
    with_state(XDP_ABORTED, |st| {
        let xdp = st.ctx_kind == CtxKind::Xdp;
        if (xdp && flags != 0) || (!xdp && flags & !BPF_F_INGRESS != 0) {
            return if xdp { XDP_ABORTED } else { TC_ACT_SHOT };
        }
        st.redirect = Some(Redirect::Ifindex { ifindex: ifindex as u32, flags });
        if xdp {
            XDP_REDIRECT
        } else {
            TC_ACT_REDIRECT
        }
    })
}

extern "C" fn h_redirect_map(map: u64, key: u64, flags: u64, _: u64, _: u64) -> u64 {
    with_state(XDP_ABORTED, |st| {
        let m = match st.map_arg(map, "redirect_map") {
            Ok(m) => m,
            Err(msg) => return fault(st, msg),
        };
        // __bpf_xdp_redirect_map: the low bits of flags are the action to return when the
        // slot is empty; devmaps also take BPF_F_BROADCAST and BPF_F_EXCLUDE_INGRESS.
        let devmap = matches!(m.def.map_type, map_type::DEVMAP | map_type::DEVMAP_HASH);
        let extra = if devmap { BPF_F_BROADCAST | BPF_F_EXCLUDE_INGRESS } else { 0 };
        if flags & !(3 | extra) != 0 {
            return XDP_ABORTED;
        }
        if !matches!(m.def.map_type, map_type::DEVMAP | map_type::DEVMAP_HASH | map_type::CPUMAP | map_type::XSKMAP) {
            let t = map_type::describe(m.def.map_type);
            let msg = format!("redirect_map: map `{}` is a {t}, not a redirect target", m.def.name);
            return fault(st, msg);
        }
        let index = m.index;
        if flags & BPF_F_BROADCAST != 0 {
            st.redirect = Some(Redirect::Broadcast { map: index, exclude_ingress: flags & BPF_F_EXCLUDE_INGRESS != 0 });
            return XDP_REDIRECT;
        }
        // The key is a u32 for every redirect map.
        let k = key as u32;
        if m.prog_lookup(&k.to_le_bytes()) == 0 {
            return flags & 3;
        }
        st.redirect = Some(Redirect::Map { map: index, key: k });
        XDP_REDIRECT
    })
}

/// One's complement sum of 32-bit little-endian words plus `seed`, folded to 32 bits, as
/// x86-64's `csum_partial` computes it (end-around carry).
pub fn csum_partial(data: &[u8], seed: u32) -> u32 {
    let mut acc = seed as u64;
    for w in data.chunks(4) {
        let mut b = [0u8; 4];
        b[..w.len()].copy_from_slice(w);
        acc += u32::from_le_bytes(b) as u64;
    }
    fold32(acc)
}

fn fold32(mut acc: u64) -> u32 {
    while acc >> 32 != 0 {
        acc = (acc & 0xffff_ffff) + (acc >> 32);
    }
    acc as u32
}

/// `bpf_csum_diff` as Linux 6.12+ computes it: `csum_sub(sum(to, seed), sum(from))`
/// (or the one-sided forms), folded to 16 bits so that every architecture agrees.
/// Checked against the running kernel for all four argument shapes.
pub fn csum_diff(from: &[u8], to: &[u8], seed: u32) -> u32 {
    let ret = match (from.is_empty(), to.is_empty()) {
        (false, false) => {
            let t = csum_partial(to, seed);
            let f = csum_partial(from, 0);
            fold32(t as u64 + !f as u64)
        }
        (true, false) => csum_partial(to, seed),
        _ => !csum_partial(from, !seed),
    };
    // csum_from32to16
    let x = ret.wrapping_add(ret.rotate_right(16));
    x >> 16
}

extern "C" fn h_csum_diff(from: u64, from_size: u64, to: u64, to_size: u64, seed: u64) -> u64 {
    // The kernel limits the diff to its 512-byte scratch buffer and to whole 32-bit words.
    let (fs, ts) = (from_size as u32 as usize, to_size as u32 as usize);
    if (fs | ts) & 3 != 0 || fs + ts > 512 {
        return (-errno::EINVAL) as u64;
    }
    // SAFETY: see `bytes`.
    let (f, t) = unsafe { (bytes(from, fs), bytes(to, ts)) };
    csum_diff(f, t, seed as u32) as u64
}

fn xdp_fields(st: &mut RunState, ctx: u64, what: &str) -> Option<u64> {
    if st.ctx_kind != CtxKind::Xdp || ctx != st.ctx {
        fault(st, format!("{what}: {ctx:#x} is not the XDP context of this run"));
        return None;
    }
    Some(ctx)
}

extern "C" fn h_xdp_adjust_head(ctx: u64, delta: u64, _: u64, _: u64, _: u64) -> u64 {
    with_state((-errno::EINVAL) as u64, |st| match xdp_fields(st, ctx, "xdp_adjust_head") {
        Some(c) => ctx::xdp_adjust_head(c, delta as i32 as i64) as u64,
        None => (-errno::EINVAL) as u64,
    })
}

extern "C" fn h_xdp_adjust_meta(ctx: u64, delta: u64, _: u64, _: u64, _: u64) -> u64 {
    with_state((-errno::EINVAL) as u64, |st| match xdp_fields(st, ctx, "xdp_adjust_meta") {
        Some(c) => ctx::xdp_adjust_meta(c, delta as i32 as i64) as u64,
        None => (-errno::EINVAL) as u64,
    })
}

extern "C" fn h_xdp_adjust_tail(ctx: u64, delta: u64, _: u64, _: u64, _: u64) -> u64 {
    with_state((-errno::EINVAL) as u64, |st| match xdp_fields(st, ctx, "xdp_adjust_tail") {
        Some(c) => ctx::xdp_adjust_tail(c, delta as i32 as i64) as u64,
        None => (-errno::EINVAL) as u64,
    })
}

extern "C" fn h_xdp_get_buff_len(ctx: u64, _: u64, _: u64, _: u64, _: u64) -> u64 {
    with_state(0, |st| match xdp_fields(st, ctx, "xdp_get_buff_len") {
        // data_end - data: the metadata before data is not part of the buffer's length.
        Some(c) => {
            let (d, e) = ctx::data_bounds(CtxKind::Xdp, c);
            e - d
        }
        None => 0,
    })
}

fn skb_packet(st: &mut RunState, ctx: u64, what: &str) -> Option<(u64, u64)> {
    if !matches!(st.ctx_kind, CtxKind::Skb { .. }) || ctx != st.ctx {
        fault(st, format!("{what}: {ctx:#x} is not the skb context of this run"));
        return None;
    }
    Some(ctx::packet_bounds(st.ctx_kind, ctx))
}

const EFAULT: i64 = 14;

extern "C" fn h_skb_load_bytes(ctx: u64, off: u64, to: u64, len: u64, _: u64) -> u64 {
    with_state((-errno::EINVAL) as u64, |st| {
        let Some((d, e)) = skb_packet(st, ctx, "skb_load_bytes") else {
            return (-errno::EINVAL) as u64;
        };
        let (off, len) = (off as u32 as u64, len as u32 as u64);
        if len == 0 || off + len > e - d {
            if len != 0 {
                // SAFETY: the destination was checked for `len` bytes by the caller.
                unsafe { std::ptr::write_bytes(to as *mut u8, 0, len as usize) };
            }
            return (-EFAULT) as u64;
        }
        // SAFETY: source range is inside the packet; destination checked by the caller.
        unsafe { std::ptr::copy((d + off) as *const u8, to as *mut u8, len as usize) };
        0
    })
}

extern "C" fn h_skb_store_bytes(ctx: u64, off: u64, from: u64, len: u64, flags: u64) -> u64 {
    with_state((-errno::EINVAL) as u64, |st| {
        let Some((d, e)) = skb_packet(st, ctx, "skb_store_bytes") else {
            return (-errno::EINVAL) as u64;
        };
        // BPF_F_RECOMPUTE_CSUM (1) and BPF_F_INVALIDATE_HASH (2) are the only flags.
        if flags & !3 != 0 {
            return (-errno::EINVAL) as u64;
        }
        let (off, len) = (off as u32 as u64, len as u32 as u64);
        if off + len > e - d {
            return (-EFAULT) as u64;
        }
        // SAFETY: destination inside the packet; source checked by the caller.
        unsafe { std::ptr::copy(from as *const u8, (d + off) as *mut u8, len as usize) };
        0
    })
}

// Checksum arithmetic of include/net/checksum.h, on values in memory byte order.
fn csum_add(a: u32, b: u32) -> u32 {
    fold32(a as u64 + b as u64)
}
fn csum_fold(c: u32) -> u16 {
    let mut s = (c & 0xffff) + (c >> 16);
    s = (s & 0xffff) + (s >> 16);
    !(s as u16)
}
fn csum16_add(c: u16, a: u16) -> u16 {
    let r = c.wrapping_add(a);
    r.wrapping_add((r < a) as u16)
}

const BPF_F_HDR_FIELD_MASK: u64 = 0xf;
const BPF_F_PSEUDO_HDR: u64 = 1 << 4;
const BPF_F_MARK_MANGLED_0: u64 = 1 << 5;
const BPF_F_MARK_ENFORCE: u64 = 1 << 6;
const BPF_F_IPV6: u64 = 1 << 7;

/// Address of the 16-bit checksum at `off` in the skb's data, or the helper's errno.
fn csum_field(ctx: u64, off: u64, what: &str) -> Result<*mut u16, i64> {
    with_state(Err(-errno::EINVAL), |st| {
        let (d, e) = skb_packet(st, ctx, what).ok_or(-errno::EINVAL)?;
        let off = off as u32 as u64;
        if off > 0xffff || off & 1 != 0 || off + 2 > e - d {
            return Err(-EFAULT);
        }
        Ok((d + off) as *mut u16)
    })
}

/// `bpf_l3_csum_replace`: incremental update of an IPv4-style header checksum
/// (`csum_replace2/4`, or by a `csum_diff` value when the size field is 0).
extern "C" fn h_l3_csum_replace(ctx: u64, off: u64, from: u64, to: u64, flags: u64) -> u64 {
    if flags & !BPF_F_HDR_FIELD_MASK != 0 {
        return (-errno::EINVAL) as u64;
    }
    let p = match csum_field(ctx, off, "l3_csum_replace") {
        Ok(p) => p,
        Err(e) => return e as u64,
    };
    // SAFETY: `p` points at two bytes inside the packet (csum_field).
    let sum = unsafe { std::ptr::read_unaligned(p) };
    let new = match flags & BPF_F_HDR_FIELD_MASK {
        0 if from != 0 => return (-errno::EINVAL) as u64,
        0 => csum_fold(csum_add(to as u32, !(sum as u32))),
        2 => !csum16_add(csum16_add(!sum, !(from as u16)), to as u16),
        4 => csum_fold(csum_add(csum_add(!(sum as u32), !(from as u32)), to as u32)),
        _ => return (-errno::EINVAL) as u64,
    };
    // SAFETY: as above.
    unsafe { std::ptr::write_unaligned(p, new) };
    0
}

/// `bpf_l4_csum_replace` for an skb without checksum offload (CHECKSUM_NONE, as in
/// BPF_PROG_TEST_RUN): `inet_proto_csum_replace{2,4,_by_diff}`, with the
/// BPF_F_MARK_MANGLED_0 rules for UDP.
extern "C" fn h_l4_csum_replace(ctx: u64, off: u64, from: u64, to: u64, flags: u64) -> u64 {
    let known = BPF_F_MARK_MANGLED_0 | BPF_F_MARK_ENFORCE | BPF_F_PSEUDO_HDR | BPF_F_HDR_FIELD_MASK | BPF_F_IPV6;
    if flags & !known != 0 {
        return (-errno::EINVAL) as u64;
    }
    let p = match csum_field(ctx, off, "l4_csum_replace") {
        Ok(p) => p,
        Err(e) => return e as u64,
    };
    // SAFETY: `p` points at two bytes inside the packet (csum_field).
    let sum = unsafe { std::ptr::read_unaligned(p) };
    let mmzero = flags & BPF_F_MARK_MANGLED_0 != 0;
    if mmzero && flags & BPF_F_MARK_ENFORCE == 0 && sum == 0 {
        return 0;
    }
    let replace4 = |from: u32, to: u32| {
        let mut diff = Vec::with_capacity(8);
        diff.extend_from_slice(&(!from).to_le_bytes());
        diff.extend_from_slice(&to.to_le_bytes());
        csum_fold(csum_partial(&diff, !(sum as u32)))
    };
    let mut new = match flags & BPF_F_HDR_FIELD_MASK {
        0 if from != 0 => return (-errno::EINVAL) as u64,
        0 => csum_fold(csum_add(to as u32, !(sum as u32))),
        2 => replace4(from as u16 as u32, to as u16 as u32),
        4 => replace4(from as u32, to as u32),
        _ => return (-errno::EINVAL) as u64,
    };
    if mmzero && new == 0 {
        new = 0xffff; // CSUM_MANGLED_0
    }
    // SAFETY: as above.
    unsafe { std::ptr::write_unaligned(p, new) };
    0
}

const BPF_F_CURRENT_CPU: u64 = 0xffff_ffff;

/// `bpf_perf_event_output`: no perf event is ever attached to our arrays (as in a
/// BPF_PROG_TEST_RUN with an empty array), so valid calls fail with -ENOENT, like the kernel.
extern "C" fn h_perf_event_output(_ctx: u64, map: u64, flags: u64, _data: u64, _size: u64) -> u64 {
    with_state((-errno::EINVAL) as u64, |st| {
        let Some(m) = st.map(map) else {
            return fault(st, format!("perf_event_output: {map:#x} is not a map"));
        };
        if flags & !(0xfffff_u64 << 32 | 0xffff_ffff) != 0 {
            return (-errno::EINVAL) as u64;
        }
        let mut index = flags & 0xffff_ffff;
        if index == BPF_F_CURRENT_CPU {
            index = 0;
        }
        if index >= m.def.max_entries as u64 {
            return (-errno::E2BIG) as u64;
        }
        (-errno::ENOENT) as u64
    })
}

extern "C" fn h_ringbuf_output(map: u64, data: u64, size: u64, flags: u64, _: u64) -> u64 {
    with_state((-errno::EINVAL) as u64, |st| {
        let Some(m) = st.map(map) else {
            return fault(st, format!("ringbuf_output: {map:#x} is not a map"));
        };
        // SAFETY: see `bytes`.
        let d = unsafe { bytes(data, size as usize) };
        m.ringbuf_output(d, flags, &mut st.registry()) as u64
    })
}

extern "C" fn h_ringbuf_reserve(map: u64, size: u64, flags: u64, _: u64, _: u64) -> u64 {
    with_state(0, |st| {
        let Some(m) = st.map(map) else {
            fault(st, format!("ringbuf_reserve: {map:#x} is not a map"));
            return 0;
        };
        m.ringbuf_reserve(size, flags, &mut st.registry())
    })
}

fn ringbuf_commit(data: u64, discard: bool) -> u64 {
    with_state(0, |st| {
        let owner = match st.registry().find(data, 1) {
            Some(r) if r.start == data => match r.kind {
                RegionKind::RingbufRecord { map } => Some(map),
                _ => None,
            },
            _ => None,
        };
        let m = owner.and_then(|i| st.shared().maps.get(i));
        let ok = m.is_some_and(|m| m.ringbuf_commit(data, discard, &mut st.registry()));
        if !ok {
            let what = if discard { "ringbuf_discard" } else { "ringbuf_submit" };
            fault(st, format!("{what}: {data:#x} is not a pending ring buffer reservation"));
        }
        0
    })
}

extern "C" fn h_ringbuf_submit(data: u64, _flags: u64, _: u64, _: u64, _: u64) -> u64 {
    ringbuf_commit(data, false)
}

extern "C" fn h_ringbuf_discard(data: u64, _flags: u64, _: u64, _: u64, _: u64) -> u64 {
    ringbuf_commit(data, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn printk_formats() {
        assert_eq!(
            format_printk(b"a=%d b=%u c=%x", [(-5i64) as u64, 7, 255]).unwrap(),
            "a=-5 b=7 c=ff"
        );
        assert_eq!(format_printk(b"%lld %llx %%", [(-1i64) as u64, 0x1_0000_0000, 0]).unwrap(), "-1 100000000 %");
        assert!(format_printk(b"%s", [0, 0, 0]).is_none());
        assert!(format_printk(b"%d %d %d %d", [0, 0, 0]).is_none());
    }

    #[test]
    fn csum_partial_matches_rfc1071_example() {
        // RFC 1071 example words 0x0001 0xf203 0xf4f5 0xf6f7 sum (16-bit) to 0xddf2.
        let data = [0x00u8, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        let s = csum_partial(&data, 0);
        let mut x = s;
        while x >> 16 != 0 {
            x = (x & 0xffff) + (x >> 16);
        }
        // Words are summed in memory order: the 16-bit fold is the byte-swapped sum.
        assert_eq!((x as u16).swap_bytes(), 0xddf2);
    }

    #[test]
    fn csum_diff_matches_kernel() {
        // Values from bpf_csum_diff in Linux 6.18 (BPF_PROG_TEST_RUN).
        let a = 0x1122_3344u32.to_le_bytes();
        let b = 0xaabb_ccddu32.to_le_bytes();
        let mut two = a.to_vec();
        two.extend_from_slice(&0xffff_fff0u32.to_le_bytes());
        assert_eq!(csum_diff(&a, &b, 0x1234), 17767);
        assert_eq!(csum_diff(&two, &[], 0x1234), 52700);
        assert_eq!(csum_diff(&[], &two, 0xffff_0000), 17495);
        assert_eq!(csum_diff(&[], &[], 0x1234_5678), 26796);
        assert_eq!(h_csum_diff(0, 3, 0, 0, 0), (-22i64) as u64);
    }
}
