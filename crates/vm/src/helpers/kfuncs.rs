//! The kfuncs XDP and tc programs use, with the helper calling convention: the runtime
//! turns a kfunc call it implements into a call of a private helper id (`KFUNC_BASE + k`,
//! outside the kernel's helper ids) and adds the function to the program's table, so every
//! engine calls it the way it calls helpers.
//!
//! Models (documented where they differ from the kernel):
//! - `struct bpf_dynptr` (16 bytes on the program's stack, opaque to the program): bytes
//!   0..8 the context address, 8..12 the kind (1 = xdp, 2 = skb), 12..16 0. A slice is
//!   computed from the context at the time of the call (after `xdp_adjust_head` too).
//!   Packets are linear in our runtimes, so a slice is always a direct pointer (never a
//!   copy into `buffer`); out of range gives NULL, as in the kernel.
//! - `bpf_xdp_ct_lookup`/`bpf_skb_ct_lookup`: there is no connection tracking table, so
//!   every lookup answers "not found": NULL, with `opts->error = -ENOENT` when `opts` is
//!   large enough to hold it. `bpf_ct_release` is then never reached with a connection
//!   and does nothing.

use super::{fault, with_state, HelperDef, HelperTable};
use crate::ctx::{self, CtxKind};
use crate::maps::errno;

/// First private helper id of the kfuncs (far above the kernel's helper ids).
pub const KFUNC_BASE: u32 = 0x4b00_0000;

const KIND_XDP: u32 = 1;
const KIND_SKB: u32 = 2;

/// The kfuncs the runtimes implement.
pub const KFUNCS: &[HelperDef] = &[
    HelperDef { id: KFUNC_BASE, name: "bpf_dynptr_from_xdp", func: k_dynptr_from_xdp },
    HelperDef { id: KFUNC_BASE + 1, name: "bpf_dynptr_from_skb", func: k_dynptr_from_skb },
    HelperDef { id: KFUNC_BASE + 2, name: "bpf_dynptr_slice", func: k_dynptr_slice },
    HelperDef { id: KFUNC_BASE + 3, name: "bpf_dynptr_slice_rdwr", func: k_dynptr_slice },
    HelperDef { id: KFUNC_BASE + 4, name: "bpf_xdp_ct_lookup", func: k_ct_lookup },
    HelperDef { id: KFUNC_BASE + 5, name: "bpf_skb_ct_lookup", func: k_ct_lookup },
    HelperDef { id: KFUNC_BASE + 6, name: "bpf_ct_release", func: k_ct_release },
    HelperDef { id: KFUNC_BASE + 7, name: "bpf_dynptr_size", func: k_dynptr_size },
    HelperDef { id: THROW, name: "bpf_throw", func: k_throw },
    HelperDef { id: KFUNC_BASE + 9, name: "bpf_iter_num_new", func: k_iter_num_new },
    HelperDef { id: KFUNC_BASE + 10, name: "bpf_iter_num_next", func: k_iter_num_next },
    HelperDef { id: KFUNC_BASE + 11, name: "bpf_iter_num_destroy", func: k_iter_num_destroy },
];

/// `struct bpf_iter_num` (8 opaque stack bytes, what `bpf_for` uses) as the kernel keeps
/// it: `int cur; int end;`.
fn iter_num_put(it: u64, cur: i32, end: i32) {
    // SAFETY: the verifier (kernel, or the interpreter's argument check) makes `it` 8
    // writable stack bytes.
    unsafe {
        std::ptr::write_unaligned(it as *mut i32, cur);
        std::ptr::write_unaligned((it + 4) as *mut i32, end);
    }
}

/// `int bpf_iter_num_new(struct bpf_iter_num *it, int start, int end)`: iterates
/// `start..end`; start > end is -EINVAL and more than BPF_MAX_LOOPS steps -E2BIG (both
/// leave an empty iterator).
extern "C" fn k_iter_num_new(it: u64, start: u64, end: u64, _: u64, _: u64) -> u64 {
    let (start, end) = (start as i32, end as i32);
    if start > end {
        iter_num_put(it, 0, 0);
        return (-errno::EINVAL) as u64;
    }
    if end as i64 - start as i64 > 8 * 1024 * 1024 {
        iter_num_put(it, 0, 0);
        return (-errno::E2BIG) as u64;
    }
    iter_num_put(it, start.wrapping_sub(1), end);
    0
}

/// `int *bpf_iter_num_next(struct bpf_iter_num *it)`: a pointer to the next value (in the
/// iterator itself), or NULL at the end (the iterator is then empty).
extern "C" fn k_iter_num_next(it: u64, _: u64, _: u64, _: u64, _: u64) -> u64 {
    // SAFETY: as in `iter_num_put`.
    let (cur, end) = unsafe { (std::ptr::read_unaligned(it as *const i32), std::ptr::read_unaligned((it + 4) as *const i32)) };
    if cur as i64 + 1 >= end as i64 {
        iter_num_put(it, 0, 0);
        return 0;
    }
    iter_num_put(it, cur + 1, end);
    it
}

extern "C" fn k_iter_num_destroy(it: u64, _: u64, _: u64, _: u64, _: u64) -> u64 {
    iter_num_put(it, 0, 0);
    0
}

/// `bpf_throw(cookie)`: the engines do not call this function; each lowers the call
/// itself: the program's frames are dropped and its exception callback runs with r1 =
/// cookie on the main frame, its r0 being the program's result; without a callback
/// (`__exception_cb`) the result is the cookie, like the kernel's default callback.
pub const THROW: u32 = KFUNC_BASE + 8;

extern "C" fn k_throw(_: u64, _: u64, _: u64, _: u64, _: u64) -> u64 {
    with_state((-errno::EINVAL) as u64, |st| fault(st, "bpf_throw reached as a plain call (the engine must unwind it)".into()))
}

/// Stands for an instruction of a verified program that writes r10: the verifier accepts
/// it only as code it proved unreachable (and removes), so reaching it is a fault.
pub fn unreachable_code() -> HelperDef {
    HelperDef { id: KFUNC_BASE + 0xfd, name: "unreachable_code", func: k_unreachable }
}

extern "C" fn k_unreachable(_: u64, _: u64, _: u64, _: u64, _: u64) -> u64 {
    with_state((-errno::EINVAL) as u64, |st| fault(st, "an instruction that writes r10, in code the kernel verifier proved unreachable, was reached".into()))
}

/// Stands for a weak kfunc call that libbpf poisoned (the kernel lacks the kfunc): the
/// verifier proved it unreachable, so reaching it is a fault.
pub fn poisoned() -> HelperDef {
    HelperDef { id: KFUNC_BASE + 0xff, name: "poisoned_weak_kfunc", func: k_poisoned }
}

extern "C" fn k_poisoned(_: u64, _: u64, _: u64, _: u64, _: u64) -> u64 {
    with_state((-errno::EINVAL) as u64, |st| fault(st, "a weak kfunc this kernel lacks was called (libbpf poisoned the call)".into()))
}

/// Stands for libbpf's poisoned instruction of a CO-RE relocation that found no match
/// (`call 0xbad2310`): unreachable by the verifier's proof, a fault if reached.
pub fn poisoned_core() -> HelperDef {
    HelperDef { id: KFUNC_BASE + 0xfe, name: "poisoned_core_relocation", func: k_poisoned_core }
}

extern "C" fn k_poisoned_core(_: u64, _: u64, _: u64, _: u64, _: u64) -> u64 {
    with_state((-errno::EINVAL) as u64, |st| fault(st, "an instruction whose CO-RE relocation failed was reached (libbpf poisoned it)".into()))
}

/// The implementation of kfunc `name`, if the runtimes have one.
pub fn by_name(name: &str) -> Option<HelperDef> {
    KFUNCS.iter().find(|k| k.name == name).copied()
}

/// Adds `def` to `table` (once).
pub(crate) fn add(table: &mut HelperTable, def: HelperDef) {
    if table.get(def.id).is_none() {
        table.defs.push(def);
    }
}

/// Writes a dynptr (see the module doc); a null dynptr is all zeros.
fn put_dynptr(ptr: u64, ctx: u64, kind: u32) {
    let mut b = [0u8; 16];
    b[..8].copy_from_slice(&ctx.to_le_bytes());
    b[8..12].copy_from_slice(&kind.to_le_bytes());
    // SAFETY: the verifier (kernel, or the interpreter's argument check) makes `ptr` 16
    // writable stack bytes.
    unsafe { std::ptr::copy_nonoverlapping(b.as_ptr(), ptr as *mut u8, 16) };
}

fn from_ctx(ctx: u64, flags: u64, ptr: u64, want: u32, what: &str) -> u64 {
    with_state((-errno::EINVAL) as u64, |st| {
        let kind_ok = match st.ctx_kind {
            CtxKind::Xdp => want == KIND_XDP,
            CtxKind::Skb { .. } => want == KIND_SKB,
            _ => false,
        };
        if !kind_ok || ctx != st.ctx {
            put_dynptr(ptr, 0, 0);
            return fault(st, format!("{what}: {ctx:#x} is not the context of this run"));
        }
        if flags != 0 {
            put_dynptr(ptr, 0, 0);
            return (-errno::EINVAL) as u64;
        }
        put_dynptr(ptr, ctx, want);
        0
    })
}

extern "C" fn k_dynptr_from_xdp(ctx: u64, flags: u64, ptr: u64, _: u64, _: u64) -> u64 {
    from_ctx(ctx, flags, ptr, KIND_XDP, "bpf_dynptr_from_xdp")
}

extern "C" fn k_dynptr_from_skb(ctx: u64, flags: u64, ptr: u64, _: u64, _: u64) -> u64 {
    from_ctx(ctx, flags, ptr, KIND_SKB, "bpf_dynptr_from_skb")
}

/// The context a dynptr at `ptr` was made from (0: null dynptr).
fn dynptr_ctx(ptr: u64) -> u64 {
    let mut b = [0u8; 8];
    // SAFETY: as in `put_dynptr`, 16 readable stack bytes.
    unsafe { std::ptr::copy_nonoverlapping(ptr as *const u8, b.as_mut_ptr(), 8) };
    u64::from_le_bytes(b)
}

/// `__u32 bpf_dynptr_size(const struct bpf_dynptr *p)`: the packet length now.
extern "C" fn k_dynptr_size(ptr: u64, _: u64, _: u64, _: u64, _: u64) -> u64 {
    with_state(0, |st| {
        let c = dynptr_ctx(ptr);
        if c == 0 {
            return 0;
        }
        if c != st.ctx {
            return fault(st, format!("bpf_dynptr_size: dynptr of context {c:#x}, not this run's"));
        }
        let (data, end) = ctx::data_bounds(st.ctx_kind, c);
        end.saturating_sub(data)
    })
}

/// `void *bpf_dynptr_slice(const struct bpf_dynptr *p, u32 offset, void *buffer, u32 buffer__szk)`
extern "C" fn k_dynptr_slice(ptr: u64, offset: u64, _buffer: u64, size: u64, _: u64) -> u64 {
    with_state(0, |st| {
        let c = dynptr_ctx(ptr);
        if c == 0 {
            return 0; // null dynptr
        }
        if c != st.ctx {
            fault(st, format!("bpf_dynptr_slice: dynptr of context {c:#x}, not this run's"));
            return 0;
        }
        let (data, end) = ctx::data_bounds(st.ctx_kind, c);
        let (off, size) = (offset as u32 as u64, size as u32 as u64);
        match data.checked_add(off).and_then(|p| p.checked_add(size).map(|e| (p, e))) {
            Some((p, e)) if e <= end => p,
            _ => 0,
        }
    })
}

/// `struct nf_conn *bpf_xdp_ct_lookup(ctx, struct bpf_sock_tuple *t, u32 t__sz, struct bpf_ct_opts *opts, u32 opts__sz)`
extern "C" fn k_ct_lookup(_ctx: u64, _tuple: u64, _tsz: u64, opts: u64, opts_sz: u64) -> u64 {
    if opts != 0 && opts_sz as u32 >= 8 {
        // bpf_ct_opts: s32 netns_id; s32 error; ...
        // SAFETY: the verifier checked `opts` for `opts__sz` bytes.
        unsafe { std::ptr::write_unaligned((opts + 4) as *mut i32, -(errno::ENOENT as i32)) };
    }
    0
}

extern "C" fn k_ct_release(_: u64, _: u64, _: u64, _: u64, _: u64) -> u64 {
    0
}
