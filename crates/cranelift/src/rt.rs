//! What generated code calls besides helpers: tail-call target lookup and the legacy
//! packet loads, with per-run state kept in thread-locals that [`RunScope`] installs
//! around a run (only for programs that need them, so plain runs pay nothing).

use std::cell::{Cell, RefCell};

use kops_vm::{CtxKind, RunEnv};

thread_local! {
    /// Program arrays of the run in progress: (map address, slot table, max_entries).
    static TAIL_MAPS: RefCell<Vec<(u64, u64, u64)>> = const { RefCell::new(Vec::new()) };
    /// Tail calls taken in the run in progress.
    static TAIL_COUNT: Cell<u32> = const { Cell::new(0) };
    /// skb run in progress, for LD_ABS/LD_IND: (context address, packet buffer start, tc).
    static SKB_RUN: Cell<Option<(u64, u64, bool)>> = const { Cell::new(None) };
}

/// Per-run state for one call of a compiled program; cleared on drop.
pub(crate) struct RunScope {
    tail: bool,
    skb: bool,
}

impl RunScope {
    pub(crate) fn enter(env: &RunEnv<'_>, r1: u64, tail: bool, ld_abs: bool) -> RunScope {
        if tail {
            TAIL_MAPS.with(|t| {
                let mut t = t.borrow_mut();
                t.clear();
                t.extend(
                    env.vm()
                        .maps()
                        .filter(|m| m.prog_array_table() != 0)
                        .map(|m| (m.addr(), m.prog_array_table(), m.def.max_entries as u64)),
                );
            });
            TAIL_COUNT.with(|c| c.set(0));
        }
        let skb = ld_abs
            && match env.ctx_kind() {
                CtxKind::Skb { tc } => {
                    SKB_RUN.with(|s| s.set(Some((r1, env.buffer_range().0, tc))));
                    true
                }
                _ => false,
            };
        RunScope { tail, skb }
    }
}

impl Drop for RunScope {
    fn drop(&mut self) {
        if self.tail {
            TAIL_MAPS.with(|t| t.borrow_mut().clear());
        }
        if self.skb {
            SKB_RUN.with(|s| s.set(None));
        }
    }
}

/// Entry address of slot `index` of program array `map` for the run in progress, counting
/// the tail call; 0 (the call falls through) when the map is not a program array of this
/// run, the index is out of range, the slot is empty or the run has made
/// [`kops_vm::MAX_TAIL_CALLS`] tail calls already.
pub extern "C" fn tail_lookup(map: u64, index: u64) -> u64 {
    if TAIL_COUNT.with(|c| c.get()) >= kops_vm::MAX_TAIL_CALLS {
        return 0;
    }
    let entry = TAIL_MAPS.with(|t| kops_vm::jit_engine::prog_array_entry(&t.borrow(), map, index));
    if entry != 0 {
        TAIL_COUNT.with(|c| c.set(c.get() + 1));
    }
    entry
}

/// `LD_ABS`/`LD_IND` with the interpreter's (the kernel's) semantics: the big-endian
/// value of `size` bytes at `off` from the skb data (negative offsets address the network
/// / link-layer header, `SKF_NET_OFF` / `SKF_LL_OFF`); bit 63 set when out of range.
pub extern "C" fn ld_abs(size: u64, off: i64) -> u64 {
    let Some((c, head, tc)) = SKB_RUN.with(|s| s.get()) else { return 1 << 63 };
    kops_vm::ctx::legacy_packet_load(c, head, tc, size, off).unwrap_or(1 << 63)
}
