//! The matchers. Data-flow idioms (rotate, popcount, extract, endian, wide load) are found
//! by symbolic evaluation ([`crate::sym`]) and replaced by their backward slice; control
//! and memory idioms (select, bulk copy/zeroing) by their instruction shapes.

use crate::ptr::{self, Kind};
use crate::sym::{self, Bin, Eval, Term, T, W};
use crate::{Cond, Found, Match, Operand, Pass, Reject, Site, WideLoad};
use kops_einsn::{
    Abs, AnyOp, EndianLoad16, EndianLoad32, EndianLoad64, Extract, Memcpy, Memset, Popcount32, Popcount64, Prefetch, Rotate32,
    Rotate64, Select, SelectCmp,
};
use kops_analysis::{effects, Analysis, RegSet, RegionIssue};
use kops_isa::{op, Insn};
use std::collections::HashMap;

pub struct Ctx<'a> {
    pub insns: &'a [Insn],
    pub an: &'a Analysis,
    /// Register effect of each slot, kinsn sites included (from their proof sequences).
    pub effs: Vec<kops_analysis::Effects>,
    pub kinds: Vec<ptr::State>,
    /// Jump sources per target slot.
    pub sources: HashMap<usize, Vec<usize>>,
}

impl<'a> Ctx<'a> {
    /// `prog_type` tells which context fields are packet pointers (None: no packets).
    pub fn new(insns: &'a [Insn], an: &'a Analysis, prog_type: Option<kops_object::ProgType>) -> Ctx<'a> {
        let pkt = prog_type.map(ptr::packet_fields).unwrap_or(&[]);
        let mut sources: HashMap<usize, Vec<usize>> = HashMap::new();
        for pc in 0..insns.len() {
            if an.insn_start[pc] && insns[pc].is_jump() {
                let t = insns[pc].target(pc).unwrap() as usize;
                sources.entry(t).or_default().push(pc);
            }
        }
        let registry = kops_einsn::registry();
        let site_eff = kops_kinsn::effects_fn(&registry);
        let site_effects = |pc: usize| (pc > 0).then(|| site_eff(pc, &insns[pc - 1], &insns[pc])).flatten();
        let effs: Vec<kops_analysis::Effects> = (0..insns.len())
            .map(|pc| if insns[pc].is_kinsn_call() { site_effects(pc) } else { None }.unwrap_or_else(|| effects(&insns[pc])))
            .collect();
        let site_defs = |pc: usize| site_effects(pc).map(|e| e.defs);
        Ctx { kinds: ptr::analyse(insns, an, pkt, &site_defs), insns, an, sources, effs }
    }

    /// Register effect of the instruction at `pc` (kinsn sites: their proof's effect).
    pub fn eff(&self, pc: usize) -> kops_analysis::Effects {
        self.effs[pc]
    }

    /// The instruction starts before slot `pc` in its block, nearest first.
    pub(crate) fn starts_before(&self, pc: usize) -> impl Iterator<Item = usize> + '_ {
        let start = self.an.blocks[self.an.block_of[pc]].start;
        (start..pc).rev().filter(|&q| self.an.insn_start[q])
    }

    /// Pointer kind of register `r` before slot `pc` (Unknown for registers beyond r10).
    pub fn kind(&self, pc: usize, r: u8) -> Kind {
        self.kinds.get(pc).and_then(|st| st.get(r as usize)).copied().unwrap_or(Kind::Unknown)
    }

    /// Region check allowing jumps that start inside the region to land inside it.
    fn region_ok(&self, start: usize, end: usize) -> Result<(), String> {
        match self.an.check_region(start, end) {
            Ok(()) => Ok(()),
            Err(RegionIssue::BranchTargetInside { .. }) => {
                for t in start + 1..end {
                    if let Some(srcs) = self.sources.get(&t) {
                        if let Some(s) = srcs.iter().find(|&&s| s < start || s >= end) {
                            return Err(format!("instruction {s} jumps into the region (to {t})"));
                        }
                    }
                }
                // Only internal targets: still reject subprogram boundaries.
                if let Some(&s) = self.an.subprog_starts.iter().find(|&&s| s >= start && s < end) {
                    return Err(format!("subprogram boundary at {s}"));
                }
                Ok(())
            }
            Err(e) => Err(e.to_string()),
        }
    }
}

pub fn run(p: Pass, cx: &Ctx, found: &mut Found) {
    match p {
        Pass::Rotate | Pass::Popcount | Pass::Extract | Pass::Endian | Pass::WideLoad | Pass::Abs => dataflow(p, cx, found),
        Pass::Select => select(cx, found),
        Pass::Bulk => {
            memcpy(cx, found);
            memset(cx, found);
        }
        Pass::Prefetch => prefetch(cx, found),
    }
}

// ---------------------------------------------------------------------------------------
// Slices.

struct Slice {
    /// First and last slot of the idiom.
    p: usize,
    j: usize,
    /// Non-idiom slots in (p, j].
    keep: Vec<usize>,
    /// Registers the idiom writes whose values die (preferred temporaries).
    free_tmps: RegSet,
    /// The site must go after this many kept instructions: the last one that reads or
    /// writes the destination must run before the site writes it.
    min_pos: usize,
    /// Registers live after `j`.
    live: RegSet,
    idiom_slots: usize,
}

impl Slice {
    /// Registers a site placed before `keep[pos]` may clobber (besides its destination):
    /// not read by a later kept instruction before one rewrites them, and dead after the
    /// idiom unless so rewritten.
    fn clobberable(&self, cx: &Ctx, pos: usize, dst: u8) -> RegSet {
        let mut out = RegSet::EMPTY;
        for r in (0..10u8).filter(|&r| r != dst) {
            let mut verdict = None;
            for &k in self.keep[pos..].iter().filter(|&&k| cx.an.insn_start[k]) {
                let e = cx.eff(k);
                if e.uses.contains(r) {
                    verdict = Some(false);
                    break;
                }
                if e.defs.contains(r) {
                    verdict = Some(true);
                    break;
                }
            }
            if verdict.unwrap_or(!self.live.contains(r)) {
                out = out.with(r);
            }
        }
        out
    }

    /// Registers written by the kept instructions before `keep[pos]`.
    fn written_before(&self, cx: &Ctx, pos: usize) -> RegSet {
        self.keep[..pos]
            .iter()
            .filter(|&&k| cx.an.insn_start[k])
            .fold(RegSet::EMPTY, |w, &k| w.union(cx.eff(k).defs))
    }
}

/// A constant materialisation (`mov K`, `ld_imm64` without pseudo source).
fn is_const_insn(i: &Insn) -> bool {
    (matches!(i.class(), op::ALU | op::ALU64) && i.op() == op::MOV && i.source() == op::K && i.src == 0)
        || (i.is_ld_imm64() && i.src == 0)
}

/// Check that the instructions in `mask` (window positions from `ws`), ending at `j`, can be
/// replaced by one site at the first of them, keeping every other instruction in between.
/// Constant loads of the idiom that other code also reads (clang shares the popcount masks
/// between expansions) are kept instead of replaced.
fn check_slice(cx: &Ctx, ev: &Eval, mut mask: u64, j: usize, dst: u8, memory: bool, input: &T) -> Result<Slice, String> {
    let ws = ev.start;
    // Instructions that may stay in place when other code needs their result: constant
    // loads, and plain copies of the idiom's input.
    let demotable = |w: usize| {
        let i = &cx.insns[w];
        is_const_insn(i)
            || (i.code == op::ALU64 | op::MOV | op::X && i.off == 0 && i.dst < 11 && ev.before(w + 1)[i.dst as usize].t == *input)
    };
    for _ in 0..16 {
        match check_slice_once(cx, ws, mask, j, dst, memory, &demotable)? {
            Ok(s) => return Ok(s),
            Err(demote) => {
                mask &= !(1u64 << (demote - ws));
                if cx.insns[demote].is_ld_imm64() {
                    mask &= !(1u64 << (demote + 1 - ws));
                }
            }
        }
    }
    Err("too many shared constants".into())
}

/// `Ok(Ok(slice))`, `Ok(Err(slot))` to retry with the constant load at `slot` kept, or the
/// reason for rejecting.
fn check_slice_once(
    cx: &Ctx,
    ws: usize,
    mask: u64,
    j: usize,
    dst: u8,
    memory: bool,
    demotable: &dyn Fn(usize) -> bool,
) -> Result<Result<Slice, usize>, String> {
    if mask == 0 || mask & (1u64 << (j - ws)) == 0 {
        return Err("the last instruction is not part of the idiom".into());
    }
    let p = ws + mask.trailing_zeros() as usize;
    cx.region_ok(p, j + 1)?;
    let in_slice = |pc: usize| mask & (1u64 << (pc - ws)) != 0;
    let mut slice_defs = RegSet::EMPTY; // registers whose latest writer is an idiom instruction
    let mut writer = [usize::MAX; 16];
    let mut keep = Vec::new();
    let mut touched_by_keep = RegSet::EMPTY;
    let mut min_pos = 0;
    let mut pc = p;
    let mut n = 0;
    while pc <= j {
        if !cx.an.insn_start[pc] {
            pc += 1;
            continue;
        }
        let i = &cx.insns[pc];
        let e = cx.eff(pc);
        if in_slice(pc) {
            slice_defs = slice_defs.union(e.defs);
            for r in e.defs.iter() {
                writer[r as usize] = pc;
            }
            n += if i.is_ld_imm64() { 2 } else { 1 };
        } else {
            if i.is_jump() || i.is_exit() {
                return Err(format!("instruction {pc} is a jump inside the idiom"));
            }
            if memory && (matches!(i.class(), op::ST | op::STX) || i.is_call()) {
                return Err(format!("instruction {pc} writes memory between the idiom's loads"));
            }
            if let Some(r) = e.uses.intersect(slice_defs).iter().next() {
                let w = writer[r as usize];
                if w != j && demotable(w) {
                    return Ok(Err(w));
                }
                return Err(format!("instruction {pc} reads r{r}, an intermediate value of the idiom"));
            }
            if e.uses.union(e.defs).contains(dst) {
                min_pos = keep.len() + 1;
            }
            slice_defs = slice_defs.minus(e.defs);
            touched_by_keep = touched_by_keep.union(e.uses).union(e.defs);
            keep.push(pc);
            if i.is_ld_imm64() {
                keep.push(pc + 1);
            }
        }
        pc += if i.is_ld_imm64() { 2 } else { 1 };
    }
    let live = cx.an.live_out[j];
    if let Some(r) = slice_defs.without(dst).intersect(live).iter().next() {
        let w = writer[r as usize];
        if w != j && demotable(w) {
            return Ok(Err(w));
        }
        return Err(format!("temporary r{r} is live after the idiom"));
    }
    Ok(Ok(Slice {
        p,
        j,
        free_tmps: slice_defs.without(dst).minus(touched_by_keep),
        min_pos: if min_pos > 0 && keep.get(min_pos - 1).is_some_and(|&k| cx.insns[k].is_ld_imm64()) {
            min_pos + 1 // after both slots of a kept ld_imm64
        } else {
            min_pos
        },
        live,
        keep,
        idiom_slots: n,
    }))
}

/// The instructions that compute the value `x` (the idiom's input): the smallest
/// dependency set over every register that holds it at some point of the window (a copy
/// made by the idiom itself depends on the copy; the original holder does not).
fn deps_of(ev: &Eval, pc_after: usize, x: &T) -> u64 {
    ev.states[..=pc_after - ev.start]
        .iter()
        .flat_map(|st| st.iter())
        .filter(|v| v.t == *x)
        .map(|v| v.deps)
        .min_by_key(|d| d.count_ones())
        .unwrap_or(0)
}

fn width_bits(w: W) -> u64 {
    if w == W::W64 {
        64
    } else {
        32
    }
}

fn as_const(t: &T) -> Option<u64> {
    match **t {
        Term::Const(c) => Some(c),
        _ => None,
    }
}

fn as_bin(t: &T) -> Option<(Bin, W, &T, &T)> {
    match &**t {
        Term::Bin(b, w, x, y) => Some((*b, *w, x, y)),
        _ => None,
    }
}

/// What a data-flow pass found in the value `f`: the op (with `src`/`base` placeholders
/// filled from register search) and the input term that must be in a register.
enum Shape {
    Rotate { x: T, k: u8, w: W },
    Popcount { x: T, w: W },
    Extract { x: T, start: u8, len: u8 },
    Endian { base: T, off: i16, size: u8, epoch: u32 },
    Ladder { base: T, off: i16, size: u8, epoch: u32, big_endian: bool },
    Abs { x: T, w: W },
}

/// clang's branch-free absolute value: `(x ^ m) - m` with the sign mask `m = x s>> (W-1)`.
fn match_abs(f: &T) -> Option<Shape> {
    let (b, w, xm, m) = as_bin(f)?;
    if b != Bin::Sub {
        return None;
    }
    let (mb, mw, x, k) = as_bin(m)?;
    if mb != Bin::Arsh || mw != w || as_const(k)? != width_bits(w) - 1 {
        return None;
    }
    let (xb, xw, l, r) = as_bin(xm)?;
    if xb != Bin::Xor || xw != w || !((l == x && r == m) || (l == m && r == x)) {
        return None;
    }
    Some(Shape::Abs { x: x.clone(), w })
}

fn match_rotate(f: &T) -> Option<Shape> {
    let (b, w, x, y) = as_bin(f)?;
    if b != Bin::Or {
        return None;
    }
    for (l, r) in [(x, y), (y, x)] {
        let (lb, lw, lx, lk) = as_bin(l)?;
        let (rb, rw, rx, rk) = as_bin(r)?;
        if lb == Bin::Lsh && rb == Bin::Rsh && lw == w && rw == w && lx == rx {
            let (k, k2) = (as_const(lk)?, as_const(rk)?);
            // k2 compared as `width - k`: `k + k2` overflows for a huge (invalid) shift constant.
            if k > 0 && k < width_bits(w) && k2 == width_bits(w) - k {
                return Some(Shape::Rotate { x: lx.clone(), k: k as u8, w });
            }
        }
    }
    None
}

fn match_popcount(f: &T) -> Option<Shape> {
    let (b, w, _, sh) = as_bin(f)?;
    if b != Bin::Rsh || as_const(sh)? != if w == W::W64 { 56 } else { 24 } {
        return None;
    }
    let mut subs = Vec::new();
    sym::subterms(f, &mut subs);
    for s in subs {
        if let Term::Bin(Bin::Sub, sw, x, _) = &*s {
            if *sw == w && sym::popcount_term(x, w) == *f {
                return Some(Shape::Popcount { x: x.clone(), w });
            }
        }
    }
    None
}

fn low_mask_len(m: u64) -> Option<u8> {
    if m != 0 && m != u64::MAX && (m & (m + 1)) == 0 {
        Some(m.count_ones() as u8)
    } else {
        None
    }
}

/// `(other, constant)` of a binary term with one constant operand (either side).
fn split_const<'t>(x: &'t T, y: &'t T) -> Option<(&'t T, u64)> {
    match (as_const(x), as_const(y)) {
        (None, Some(c)) => Some((x, c)),
        (Some(c), None) => Some((y, c)),
        _ => None,
    }
}

fn match_extract(f: &T) -> Option<Shape> {
    let (b, w, x, y) = as_bin(f)?;
    let bits = width_bits(w);
    let (start, len, src) = match b {
        // (x >> s) & m
        Bin::And => {
            let (inner, m) = split_const(x, y)?;
            let len = low_mask_len(m)? as u64;
            let (ib, iw, ix, is) = as_bin(inner)?;
            if ib != Bin::Rsh || iw != w {
                return None;
            }
            (as_const(is)?, len, ix.clone())
        }
        Bin::Rsh => {
            let s2 = as_const(y)?;
            let (ib, iw, ix, iy) = as_bin(x)?;
            if iw != w {
                return None;
            }
            match ib {
                // (x << a) >> b, b >= a
                Bin::Lsh => {
                    let a = as_const(iy)?;
                    if s2 < a || s2 >= bits {
                        return None;
                    }
                    (s2 - a, bits - s2, ix.clone())
                }
                // (x & (m << s)) >> s
                Bin::And => {
                    let (v, m) = split_const(ix, iy)?;
                    if s2 >= bits || m >> s2 << s2 != m {
                        return None;
                    }
                    let len = low_mask_len(m >> s2)? as u64;
                    (s2, len, v.clone())
                }
                _ => return None,
            }
        }
        _ => return None,
    };
    if start == 0 || start >= bits || len == 0 || start + len > bits {
        // start 0 is a plain mask, not an extract.
        return None;
    }
    Some(Shape::Extract { x: src, start: start as u8, len: len as u8 })
}

fn match_endian(f: &T) -> Option<Shape> {
    if let Term::Swap(bits, inner) = &**f {
        if let Term::Load { size, base, off, epoch } = &**inner {
            if *size as u32 * 8 == *bits as u32 {
                return Some(Shape::Endian { base: base.clone(), off: *off, size: *size, epoch: *epoch });
            }
        }
    }
    None
}

fn or_leaves(t: &T, w: W, out: &mut Vec<T>) {
    match &**t {
        Term::Bin(Bin::Or, tw, a, b) if *tw == w => {
            or_leaves(a, w, out);
            or_leaves(b, w, out);
        }
        _ => out.push(t.clone()),
    }
}

fn match_ladder(f: &T) -> Option<Shape> {
    let (b, w, _, _) = as_bin(f)?;
    if b != Bin::Or {
        return None;
    }
    let mut leaves = Vec::new();
    or_leaves(f, w, &mut leaves);
    // (base, off, size, epoch, shift)
    let mut parts = Vec::new();
    for l in &leaves {
        let (ld, shift) = match &**l {
            Term::Load { .. } => (l.clone(), 0u64),
            Term::Bin(Bin::Lsh, lw, x, s) if *lw == w => (x.clone(), as_const(s)?),
            _ => return None,
        };
        match &*ld {
            Term::Load { size, base, off, epoch } => parts.push((base.clone(), *off, *size, *epoch, shift)),
            _ => return None,
        }
    }
    let (base, epoch) = (parts[0].0.clone(), parts[0].3);
    if parts.iter().any(|p| p.0 != base || p.3 != epoch) {
        return None;
    }
    let lo = parts.iter().map(|p| p.1 as i64).min()?;
    let total: u64 = parts.iter().map(|p| p.2 as u64).sum();
    if !matches!(total, 2 | 4 | 8) || total * 8 > width_bits(w) || parts.len() < 2 {
        return None;
    }
    // Every byte covered exactly once.
    let mut covered = 0u8;
    for p in &parts {
        let rel = (p.1 as i64 - lo) as u64;
        for k in rel..rel + p.2 as u64 {
            if k >= total || covered & (1 << k) != 0 {
                return None;
            }
            covered |= 1 << k;
        }
    }
    let le = parts.iter().all(|p| p.4 == 8 * (p.1 as i64 - lo) as u64);
    let be = parts.iter().all(|p| p.2 == 1 && p.4 == 8 * (total - 1 - (p.1 as i64 - lo) as u64));
    if !le && !be {
        return None;
    }
    Some(Shape::Ladder { base, off: lo as i16, size: total as u8, epoch, big_endian: !le })
}

/// Candidate last instructions for each data-flow pass.
fn is_candidate_end(p: Pass, i: &Insn) -> bool {
    let alu = matches!(i.class(), op::ALU | op::ALU64);
    match p {
        Pass::Rotate | Pass::WideLoad => alu && i.op() == op::OR,
        Pass::Popcount => alu && i.op() == op::RSH && i.source() == op::K,
        Pass::Extract => alu && matches!(i.op(), op::AND | op::RSH) && i.source() == op::K,
        Pass::Endian => alu && i.op() == op::END,
        Pass::Abs => alu && i.op() == op::SUB && i.source() == op::X,
        _ => false,
    }
}

/// Is the value of register `r` before slot `pc` known to have its upper 32 bits zero?
/// Looks back through the block for the last write of `r`.
pub(crate) fn upper_zero_before(cx: &Ctx, pc: usize, r: u8) -> bool {
    for q in cx.starts_before(pc) {
        let i = &cx.insns[q];
        if cx.eff(q).defs.contains(r) {
            return match i.class() {
                op::ALU => i.op() != op::END || i.imm <= 32,
                op::LDX => i.mode() == op::MEM && i.size() != op::DW,
                op::ALU64 => {
                    (i.op() == op::RSH && i.source() == op::K && i.imm >= 32)
                        || (i.op() == op::AND && i.source() == op::K && i.imm >= 0)
                        || (i.op() == op::MOV && i.source() == op::K && i.imm >= 0)
                }
                _ => false,
            };
        }
    }
    false
}

fn dataflow(pass: Pass, cx: &Ctx, found: &mut Found) {
    let an = cx.an;
    for blk in &an.blocks {
        for j in blk.start..blk.end {
            if !an.insn_start[j] || !is_candidate_end(pass, &cx.insns[j]) {
                continue;
            }
            let mut ws = j.saturating_sub(sym::MAX_WINDOW - 1).max(blk.start);
            if !an.insn_start[ws] {
                ws += 1;
            }
            // Registers holding known constants at the window start (clang hoists masks out
            // of loops) enter the evaluation as those constants.
            let consts: [Option<u64>; 11] = std::array::from_fn(|r| match cx.kinds[ws][r] {
                Kind::Const(c) => Some(c),
                _ => None,
            });
            let ev = Eval::run(cx.insns, ws, j + 1, &consts);
            let dst = cx.insns[j].dst;
            if dst > 9 {
                continue;
            }
            let fv = &ev.before(j + 1)[dst as usize];
            let f = &fv.t;
            let shape = match pass {
                Pass::Rotate => match_rotate(f),
                Pass::Popcount => match_popcount(f),
                Pass::Extract => match_extract(f),
                Pass::Endian => match_endian(f),
                Pass::WideLoad => match_ladder(f),
                Pass::Abs => match_abs(f),
                _ => None,
            };
            let Some(shape) = shape else { continue };
            let reject = |found: &mut Found, start: usize, reason: String| {
                found.rejects.push(Reject { pass, start, end: j + 1, reason });
            };
            // The input value must stay outside the slice (it is computed by other code).
            let (input, memory) = match &shape {
                Shape::Rotate { x, .. } | Shape::Popcount { x, .. } | Shape::Extract { x, .. } | Shape::Abs { x, .. } => {
                    (x.clone(), false)
                }
                Shape::Endian { base, .. } | Shape::Ladder { base, .. } => (base.clone(), true),
            };
            let xdeps = deps_of(&ev, j + 1, &input);
            let mask = fv.deps & !xdeps;
            let sl = match check_slice(cx, &ev, mask, j, dst, memory, &input) {
                Ok(s) => s,
                Err(e) => {
                    reject(found, ws + mask.trailing_zeros().min(63) as usize, e);
                    continue;
                }
            };
            let p = sl.p;
            // The site goes as early as possible: before the kept instructions, or after
            // the last one that uses its destination. Its input must still be in a register
            // there: one holding it at the idiom's start that no earlier kept instruction
            // overwrote (the idiom's own instructions are gone in the new code).
            let pos = sl.min_pos;
            let written = sl.written_before(cx, pos);
            let holders: Vec<u8> = (0..11u8).filter(|&r| ev.before(p)[r as usize].t == input && !written.contains(r)).collect();
            let Some(src) = holders.iter().copied().find(|&r| r == dst).or(holders.first().copied()) else {
                let why = if pos > 0 {
                    format!("instructions inside the idiom use r{dst} and its input is overwritten before them")
                } else {
                    "the idiom's input is not in a register at its first instruction".to_string()
                };
                reject(found, p, why);
                continue;
            };
            let clobberable = sl.clobberable(cx, pos, dst);
            let at = p;
            if memory {
                let epoch = match &shape {
                    Shape::Endian { epoch, .. } | Shape::Ladder { epoch, .. } => *epoch,
                    _ => 0,
                };
                if ev.epochs[p - ws] != epoch || ev.epochs[j + 1 - ws] != epoch {
                    reject(found, p, "memory is written between the loads".into());
                    continue;
                }
            }
            // Temporaries: registers the idiom itself clobbers first, then any other dead one.
            let tmps: Vec<u8> = sl
                .free_tmps
                .intersect(clobberable)
                .iter()
                .chain(clobberable.minus(sl.free_tmps).iter())
                .collect();
            let op = match site_of(&shape, cx, at, dst, src, &tmps) {
                Ok(op) => op,
                Err(e) => {
                    reject(found, p, e);
                    continue;
                }
            };
            found.matches.push(Match {
                pass,
                start: p,
                end: sl.j + 1,
                op,
                keep: sl.keep,
                prefix: vec![],
                site_pos: pos,
                idiom_slots: sl.idiom_slots,
            });
        }
    }
}

/// The site of a data-flow shape: the EInsn payload (temporaries from `tmps`, registers
/// dead after the idiom, preferred first) or the plain wide load, or why there is none.
fn site_of(shape: &Shape, cx: &Ctx, at: usize, dst: u8, src: u8, tmps: &[u8]) -> Result<Site, String> {
    let e = |e: kops_kinsn::PayloadError| e.to_string();
    Ok(match *shape {
        Shape::Rotate { k, w, .. } => {
            // The source may double as the temporary (clang's `r0 = r1; r1 >>= 51; ...`).
            let &tmp = tmps.iter().find(|&&t| t != src).or(tmps.first()).ok_or("no dead register for the rotate's temporary")?;
            match w {
                W::W64 => Rotate64::new(dst, src, tmp, k, false).map_err(e)?.into(),
                W::W32 => Rotate32::new(dst, src, tmp, k, false).map_err(e)?.into(),
            }
        }
        Shape::Popcount { w, .. } => {
            let need = if w == W::W64 { 2 } else { 1 };
            if tmps.len() < need {
                return Err(format!("popcount needs {need} dead temporaries"));
            }
            match w {
                W::W64 => Popcount64::new(dst, src, tmps[0], tmps[1]).map_err(e)?.into(),
                W::W32 => Popcount32::new(dst, src, tmps[0]).map_err(e)?.into(),
            }
        }
        Shape::Abs { w, .. } => {
            // The sign mask's register: not the source or the destination.
            let &tmp = tmps.iter().find(|&&t| t != src).ok_or("no dead register for the sign mask")?;
            Abs::new(dst, src, tmp, w == W::W32).map_err(e)?.into()
        }
        Shape::Extract { start, len, .. } => Extract::new(dst, src, start, len).map_err(e)?.into(),
        Shape::Endian { off, size, .. } => match size {
            2 => EndianLoad16::new(dst, src, off).map_err(e)?.into(),
            4 => EndianLoad32::new(dst, src, off).map_err(e)?.into(),
            _ => EndianLoad64::new(dst, src, off).map_err(e)?.into(),
        },
        Shape::Ladder { off, size, big_endian, .. } => {
            let kind = cx.kind(at, src);
            let abs = match kind {
                Kind::Stack(Some(o)) | Kind::MapValue(Some(o)) => Some(o + off as i64),
                _ => None,
            };
            match abs {
                // Packet: the byte loads passed the verifier's range check for the same
                // bytes in the same state, and x86-64/arm64 kernels accept unaligned packet
                // access (no BPF_F_STRICT_ALIGNMENT from our loader).
                _ if kind == Kind::Packet => {}
                Some(a) if a.rem_euclid(size as i64) == 0 => {}
                Some(_) => return Err(format!("wide load at r{src} {off:+} would be misaligned ({kind:?})")),
                None => return Err(format!("pointer kind/alignment of r{src} not known to allow a wide load ({kind:?})")),
            }
            Site::WideLoad(WideLoad { dst, base: src, off, size, big_endian })
        }
    })
}

// ---------------------------------------------------------------------------------------
// Select.

/// A plain register/immediate move (not movsx): (dst, value, width).
fn plain_mov(i: &Insn) -> Option<(u8, Operand, W)> {
    let w = match i.class() {
        op::ALU64 => W::W64,
        op::ALU => W::W32,
        _ => return None,
    };
    if i.op() != op::MOV || i.off != 0 || i.dst > 9 {
        return None;
    }
    if i.source() == op::X {
        Some((i.dst, Operand::Reg(i.src), w))
    } else if i.src == 0 {
        Some((i.dst, Operand::Imm(i.imm), w))
    } else {
        None // the kinsn sidecar is an ALU64|MOV|K with src_reg = 3
    }
}

fn cond_of(i: &Insn) -> Option<Cond> {
    if !i.is_cond_jump() {
        return None;
    }
    Some(Cond {
        jmp32: i.class() == op::JMP32,
        op: i.op(),
        lhs: i.dst,
        rhs: if i.source() == op::X { Operand::Reg(i.src) } else { Operand::Imm(i.imm) },
    })
}

fn reads(o: Operand, r: u8) -> bool {
    o == Operand::Reg(r)
}

/// Does select64 (`cond != 0`) express this condition? Otherwise the select is a comparison,
/// which only select_cmp expresses (one-sided: `dst` keeps its value when the jump is taken).
pub(crate) fn zero_test(c: &Cond) -> bool {
    matches!(c.rhs, Operand::Imm(0)) && matches!(c.op, op::JEQ | op::JNE)
}

/// A select shape: `dst = cond ? if_true : if_false` (`width` is the width of the moves).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Sel {
    dst: u8,
    cond: Cond,
    if_true: Operand,
    if_false: Operand,
    width: W,
}

impl Sel {
    /// The payload: select64 for a zero test, select_cmp (one-sided) for a comparison.
    /// Operands must be registers by now.
    fn payload(&self) -> Result<AnyOp, String> {
        let Sel { dst, cond, if_true, if_false, width } = *self;
        let reg = |o: Operand, what: &str| match o {
            Operand::Reg(r) => Ok(r),
            Operand::Imm(i) => Err(format!("{what} is the immediate {i}, the ops take registers only")),
        };
        let e = |e: kops_kinsn::PayloadError| e.to_string();
        if !zero_test(&cond) {
            // select_cmp: dst = (lhs <cmp> rhs) ? dst : src, as clang's
            // `if lhs <cmp> rhs goto +1; dst = src`.
            if if_true != Operand::Reg(dst) {
                return Err("select_cmp keeps dst when the comparison holds; this select moves another value there".into());
            }
            let (rhs, src) = (reg(cond.rhs, "the right operand")?, reg(if_false, "the moved value")?);
            return SelectCmp::new(dst, cond.lhs, rhs, cond.op, cond.jmp32, src, width == W::W32).map(AnyOp::from).map_err(e);
        }
        let (t, f) = (reg(if_true, "the true value")?, reg(if_false, "the false value")?);
        // select64: dst = cond != 0 ? a : b
        let (a, b) = if cond.op == op::JNE { (t, f) } else { (f, t) };
        Select::new(dst, cond.lhs, a, b, cond.jmp32, width == W::W32).map(AnyOp::from).map_err(e)
    }
}

/// Turn a select shape into a match: immediates go through a dead register (a `mov` before
/// the site), as select64 and select_cmp take registers only. `head` are moves that go
/// before those (the diamond's taken-path move).
/// Returns whether the match was taken.
fn push_select(cx: &Ctx, found: &mut Found, start: usize, end: usize, op: Sel, slots: usize) -> bool {
    push_select_with(cx, found, start, end, op, slots, vec![])
}

fn push_select_with(
    cx: &Ctx,
    found: &mut Found,
    start: usize,
    end: usize,
    op: Sel,
    slots: usize,
    head: Vec<Insn>,
) -> bool {
    let rej = |found: &mut Found, reason: String| {
        found.rejects.push(Reject { pass: Pass::Select, start, end, reason });
        false
    };
    if let Err(reason) = cx.region_ok(start, end) {
        return rej(found, reason);
    }
    let Sel { dst, mut cond, mut if_true, mut if_false, width } = op;
    let mut busy = RegSet::of(dst).with(cond.lhs).union(cx.an.live_out[end - 1]);
    for o in [cond.rhs, if_true, if_false] {
        if let Operand::Reg(r) = o {
            busy = busy.with(r);
        }
    }
    let mut prefix = head;
    // Only worth a register when select64 or select_cmp can express the select at all.
    let cmp = !zero_test(&cond);
    let expressible = !cmp || (cond.op != op::JA && if_true == Operand::Reg(dst));
    if cmp && expressible {
        if let Operand::Imm(v) = cond.rhs {
            let Some(t) = (0..10u8).find(|&r| !busy.contains(r)) else {
                return rej(found, "no dead register to hold the compared immediate".into());
            };
            busy = busy.with(t);
            // Sign-extended, as a 64-bit jump compares against the sign-extended immediate
            // (a 32-bit jump sees the same low half).
            prefix.push(Insn::mov64_imm(t, v));
            cond.rhs = Operand::Reg(t);
        }
    }
    for o in [&mut if_true, &mut if_false].into_iter().filter(|_| expressible) {
        if let Operand::Imm(v) = *o {
            let Some(t) = (0..10u8).find(|&r| !busy.contains(r)) else {
                return rej(found, "no dead register to hold the immediate".into());
            };
            busy = busy.with(t);
            prefix.push(if width == W::W64 { Insn::mov64_imm(t, v) } else { Insn::alu32_imm(op::MOV, t, v) });
            *o = Operand::Reg(t);
        }
    }
    let payload = match (Sel { dst, cond, if_true, if_false, width }).payload() {
        Ok(p) => p,
        Err(reason) => return rej(found, format!("not expressible as a site: {reason}")),
    };
    found.matches.push(Match {
        pass: Pass::Select,
        start,
        end,
        op: Site::Kinsn(payload),
        keep: vec![],
        prefix,
        site_pos: 0,
        idiom_slots: slots,
    });
    true
}

fn select(cx: &Ctx, found: &mut Found) {
    let ins = cx.insns;
    let n = ins.len();
    let rej = |found: &mut Found, start: usize, end: usize, r: &str| {
        found.rejects.push(Reject { pass: Pass::Select, start, end, reason: r.into() })
    };
    let mut three_at = usize::MAX; // a `mov; jcc +1; mov` was taken starting here
    for i in 0..n {
        if !cx.an.insn_start[i] {
            continue;
        }
        // Diamond: if cond goto +2; mov d, F; ja +1; mov d, T
        if i + 3 < n {
            if let (Some(c), Some((d1, f, w1)), Some((d2, t, w2))) =
                (cond_of(&ins[i]), plain_mov(&ins[i + 1]), plain_mov(&ins[i + 3]))
            {
                let ja = ins[i + 2];
                if ins[i].jump_offset() == 2 && ja.code == op::JMP | op::JA && ja.off == 1 && d1 == d2 {
                    if !zero_test(&c) {
                        // select_cmp is one-sided: move the taken value first, then select
                        // over it. Exact only when neither the condition nor the other
                        // value reads dst (they would see the first move's value).
                        if c.lhs == d1 || reads(c.rhs, d1) || reads(f, d1) {
                            rej(found, i, i + 4, "comparison diamond whose condition or value reads the destination");
                        } else {
                            let first = match t {
                                Operand::Reg(r) if w2 == W::W64 => Insn::mov64_reg(d1, r),
                                Operand::Reg(r) => Insn::alu32_reg(op::MOV, d1, r),
                                Operand::Imm(v) if w2 == W::W64 => Insn::mov64_imm(d1, v),
                                Operand::Imm(v) => Insn::alu32_imm(op::MOV, d1, v),
                            };
                            let opx = Sel { dst: d1, cond: c, if_true: Operand::Reg(d1), if_false: f, width: w1 };
                            push_select_with(cx, found, i, i + 4, opx, 4, vec![first]);
                        }
                        continue;
                    }
                    if w1 != w2 {
                        rej(found, i, i + 4, "moves of different widths");
                    } else {
                        let opx = Sel { dst: d1, cond: c, if_true: t, if_false: f, width: w1 };
                        push_select(cx, found, i, i + 4, opx, 4);
                    }
                    continue;
                }
            }
        }
        // mov d, T; if cond goto +1; mov d, F
        if i + 2 < n {
            if let (Some((d1, t, w1)), Some(c), Some((d2, f, w2))) =
                (plain_mov(&ins[i]), cond_of(&ins[i + 1]), plain_mov(&ins[i + 2]))
            {
                // A comparison: select_cmp takes the last two instructions (at i + 1), the
                // first move stays as it is.
                if ins[i + 1].jump_offset() == 1 && d1 == d2 && zero_test(&c) {
                    // A condition on the destination sees the first move's value: test
                    // its source instead (exact for 64-bit moves, and for 32-bit moves
                    // under a 32-bit condition).
                    let mut c = c;
                    let subst = match t {
                        Operand::Reg(a) if w1 == W::W64 || c.jmp32 => Some(a),
                        _ => None,
                    };
                    let cond_reads_dst = c.lhs == d1 || reads(c.rhs, d1);
                    if let (true, Some(a)) = (cond_reads_dst, subst) {
                        if c.lhs == d1 {
                            c.lhs = a;
                        }
                        if reads(c.rhs, d1) {
                            c.rhs = Operand::Reg(a);
                        }
                    }
                    if w1 != w2 {
                        rej(found, i, i + 3, "moves of different widths");
                    } else if cond_reads_dst && subst.is_none() {
                        rej(found, i, i + 3, "the condition reads the destination after the first move");
                    } else if reads(f, d1) && !reads(t, d1) {
                        rej(found, i, i + 3, "the second move reads the destination written by the first");
                    } else {
                        // `mov d, d` as the second move keeps the first value.
                        let f = if reads(f, d1) { t } else { f };
                        let opx = Sel { dst: d1, cond: c, if_true: t, if_false: f, width: w1 };
                        if push_select(cx, found, i, i + 3, opx, 3) {
                            three_at = i;
                        }
                    }
                    continue;
                }
            }
        }
        // if cond goto +1; mov d, F   (d keeps its value when the condition holds)
        if i + 1 < n {
            if let (Some(c), Some((d, f, w))) = (cond_of(&ins[i]), plain_mov(&ins[i + 1])) {
                if ins[i].jump_offset() == 1 && !reads(f, d) {
                    // Already part of the three-instruction shape taken at i - 1.
                    if three_at.wrapping_add(1) == i {
                        continue;
                    }
                    // A 32-bit move on one path against the untouched 64-bit register on the
                    // other is a select only when that register's upper half is zero.
                    // (select_cmp is that shape exactly, so a comparison needs no such proof.)
                    if zero_test(&c) && w == W::W32 && !upper_zero_before(cx, i, d) && !cx.kind(i, d).is_zext32() {
                        rej(found, i, i + 2, "mixed widths: 32-bit move on one path, the full 64-bit register on the other");
                        continue;
                    }
                    let opx = Sel { dst: d, cond: c, if_true: Operand::Reg(d), if_false: f, width: w };
                    push_select(cx, found, i, i + 2, opx, 2);
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// Bulk copy and zeroing.

/// Two byte ranges `[a, a+len)` behind `ra` and `[b, b+len)` behind `rb` cannot overlap.
fn disjoint(cx: &Ctx, pc: usize, ra: u8, a: i64, rb: u8, b: i64, len: i64) -> bool {
    if ra == rb {
        return a + len <= b || b + len <= a;
    }
    let (ka, kb) = (cx.kind(pc, ra), cx.kind(pc, rb));
    if ka.disjoint_regions(kb) {
        return true;
    }
    if let (Kind::Stack(Some(x)), Kind::Stack(Some(y))) = (ka, kb) {
        let (a, b) = (a + x, b + y);
        return a + len <= b || b + len <= a;
    }
    false
}

fn memcpy(cx: &Ctx, found: &mut Found) {
    let ins = cx.insns;
    let an = cx.an;
    let is_ld = |x: &Insn| x.class() == op::LDX && x.mode() == op::MEM;
    let is_st = |x: &Insn| x.class() == op::STX && x.mode() == op::MEM;
    let mut i = 0;
    while i < ins.len() {
        if !an.insn_start[i] || !is_ld(&ins[i]) {
            i += 1;
            continue;
        }
        // Grow a run of loads from one base and stores to one base, all of one width, each
        // store writing a value loaded earlier in the run; stop at the chunk limit.
        let (s, width) = (ins[i].src, ins[i].size_bytes());
        let max_chunks = (kops_einsn::MAX_BULK_BYTES / width).min(32);
        let mut d: Option<u8> = None;
        let mut pending: HashMap<u8, i16> = HashMap::new(); // tmp -> src off
        let mut pairs: Vec<(i16, i16, u8)> = Vec::new(); // (src off, dst off, tmp) in store order
        let mut end = i;
        let mut npairs_at_end = 0;
        let mut clobbered_base = false;
        let mut k = i;
        while k < ins.len() && pairs.len() < max_chunks {
            let x = ins[k];
            if k > i && (an.is_branch_target(k) || an.is_subprog_start(k)) {
                break;
            }
            if x.size_bytes() != width {
                break;
            }
            if clobbered_base && (pending.is_empty() || is_ld(&x)) {
                break; // the source base was overwritten by the last load
            }
            if is_ld(&x) && x.src == s && x.dst < 10 && Some(x.dst) != d && !pending.contains_key(&x.dst) {
                // A load into the source base itself can only be the last chunk (clang's
                // `r1 = *(u64 *)(r1 + 0x38)`); the base is then a temporary like the others.
                clobbered_base = x.dst == s;
                pending.insert(x.dst, x.off);
            } else if is_st(&x) && d.map_or(true, |dd| dd == x.dst) && x.dst != x.src {
                let Some(so) = pending.remove(&x.src) else { break };
                if pairs.iter().any(|p| p.2 == x.dst) || pending.contains_key(&x.dst) {
                    break; // the store base was loaded in the run
                }
                d = Some(x.dst);
                pairs.push((so, x.off, x.src));
            } else {
                break;
            }
            k += 1;
            if pending.is_empty() {
                end = k;
                npairs_at_end = pairs.len();
            }
        }
        pairs.truncate(npairs_at_end);
        if pairs.len() < 2 {
            i += 1;
            continue;
        }
        let d = d.unwrap();
        let w = width as i64;
        let order: Vec<i64> = pairs.iter().map(|p| p.0 as i64).collect();
        let ascending = order.windows(2).all(|x| x[1] == x[0] + w);
        let descending = order.windows(2).all(|x| x[1] == x[0] - w);
        let mut sorted = pairs.clone();
        sorted.sort();
        let (src_off, dst_off) = (sorted[0].0 as i64, sorted[0].1 as i64);
        let len = w * pairs.len() as i64;
        let tmps: RegSet = pairs.iter().fold(RegSet::EMPTY, |t, p| t.with(p.2));
        // Strictly load, store, load, store: exactly the proof's chunk order.
        let sequential = (i..end).all(|q| is_ld(&ins[q]) == ((q - i) % 2 == 0));
        let one_tmp = tmps.0.count_ones() == 1;
        let check = || -> Result<Site, String> {
            let contiguous = sorted.iter().enumerate().all(|(n, p)| {
                p.0 as i64 == src_off + n as i64 * w && p.1 as i64 - p.0 as i64 == dst_off - src_off
            });
            if !contiguous {
                return Err("the loads and stores do not form one contiguous copy".into());
            }
            let exact_order = sequential && (ascending || descending);
            if !exact_order && !disjoint(cx, i, s, src_off, d, dst_off, len) {
                return Err(format!(
                    "source r{s} {src_off:+} and destination r{d} {dst_off:+} may overlap and the copy order is not one the site reproduces"
                ));
            }
            // tmp ends holding the last chunk stored in the site's order: the same as the
            // original when one register carries every chunk in that order.
            let live = an.live_out[end - 1];
            let tmp_final_same = exact_order && one_tmp;
            if !tmp_final_same {
                if let Some(r) = tmps.intersect(live).iter().next() {
                    return Err(format!("temporary r{r} is live after the copy"));
                }
            }
            cx.region_ok(i, end)?;
            let tmp = if tmp_final_same {
                    pairs.last().unwrap().2
                } else {
                    // Any dead register but the bases (the payload wants tmp != both).
                    tmps.iter()
                        .chain(0..10u8)
                        .find(|&r| r != s && r != d && !live.contains(r))
                        .ok_or("no dead register for the copy's temporary")?
            };
            let dst_off = i16::try_from(dst_off).map_err(|_| "offset out of range")?;
            let src_off = i16::try_from(src_off).map_err(|_| "offset out of range")?;
            let count = u8::try_from(pairs.len()).map_err(|_| "too many chunks")?;
            let desc = descending && !ascending;
            Memcpy::new(d, dst_off, s, src_off, tmp, width as u8, count, desc).map(Site::from).map_err(|e| e.to_string())
        };
        push_bulk(found, i, end, check());
        i = end;
    }
}

/// Record a bulk-copy/-set run `start..end` whole: a match replacing all of it, or the reason
/// it was rejected.
fn push_bulk(found: &mut Found, start: usize, end: usize, op: Result<Site, String>) {
    match op {
        Ok(op) => found.matches.push(Match {
            pass: Pass::Bulk,
            start,
            end,
            op,
            keep: vec![],
            prefix: vec![],
            site_pos: 0,
            idiom_slots: end - start,
        }),
        Err(reason) => found.rejects.push(Reject { pass: Pass::Bulk, start, end, reason }),
    }
}

/// Registers known to hold zero before slot `pc`, looking back through its block.
fn zero_regs_before(cx: &Ctx, pc: usize) -> RegSet {
    let mut zero = RegSet::EMPTY;
    let mut killed = RegSet::EMPTY;
    for q in cx.starts_before(pc) {
        let i = &cx.insns[q];
        let defs = cx.eff(q).defs;
        for r in defs.minus(killed).iter() {
            if matches!(i.class(), op::ALU | op::ALU64) && i.op() == op::MOV && i.source() == op::K && i.imm == 0 && i.src == 0 {
                zero = zero.with(r);
            }
        }
        killed = killed.union(defs);
    }
    zero
}

fn memset(cx: &Ctx, found: &mut Found) {
    let ins = cx.insns;
    let an = cx.an;
    let mut i = 0;
    while i < ins.len() {
        let zero_store = |pc: usize, zeros: RegSet| -> Option<(u8, i16, usize)> {
            let x = ins[pc];
            if x.class() == op::ST && x.mode() == op::MEM && x.imm == 0 {
                Some((x.dst, x.off, x.size_bytes()))
            } else if x.class() == op::STX && x.mode() == op::MEM && zeros.contains(x.src) {
                Some((x.dst, x.off, x.size_bytes()))
            } else {
                None
            }
        };
        if !an.insn_start[i] {
            i += 1;
            continue;
        }
        let zeros = (0..10u8)
            .filter(|&r| cx.kind(i, r) == Kind::Const(0))
            .fold(zero_regs_before(cx, i), |z, r| z.with(r));
        let Some((base, _, width)) = zero_store(i, zeros) else {
            i += 1;
            continue;
        };
        let max_chunks = (kops_einsn::MAX_BULK_BYTES / width).min(64);
        let mut stores = Vec::new();
        let mut k = i;
        while k < ins.len() && stores.len() < max_chunks {
            if k > i && (an.is_branch_target(k) || an.is_subprog_start(k)) {
                break;
            }
            match zero_store(k, zeros) {
                Some((b, off, sz)) if b == base && sz == width => stores.push(off),
                _ => break,
            }
            k += 1;
        }
        let end = k;
        if stores.len() < 2 {
            i += 1;
            continue;
        }
        stores.sort();
        let off = stores[0];
        let contiguous = stores.iter().enumerate().all(|(n, &o)| o as i64 == off as i64 + (n * width) as i64);
        let ok = if contiguous {
            cx.region_ok(i, end).and_then(|()| {
                let count = u8::try_from(stores.len()).map_err(|_| "too many stores".to_string())?;
                Memset::new(base, off, width as u8, count, 0).map_err(|e| e.to_string())
            })
        } else {
            Err("the zero stores do not cover one contiguous range".to_string())
        };
        push_bulk(found, i, end, ok.map(Site::from));
        i = end;
    }
}

// ---------------------------------------------------------------------------------------
// Prefetch.

/// clang drops `__builtin_prefetch` for BPF, so the only prefetch the compiled code carries
/// is the one a program asks for explicitly: an empty inline asm with a `"r"(ptr)` operand
/// leaves nothing either. What survives is a load whose result is dead (`*(volatile u8 *)p`
/// with the value unused), the classic software-prefetch idiom for BPF. It is replaced by
/// a prefetch site only when the loaded register is dead after it; the site cannot fault,
/// which the verifier still checks through the proof (a plain load of the same address).
fn prefetch(cx: &Ctx, found: &mut Found) {
    let ins = cx.insns;
    for pc in 0..ins.len() {
        let x = ins[pc];
        if !cx.an.insn_start[pc] || x.class() != op::LDX || x.mode() != op::MEM || x.size() != op::B {
            continue;
        }
        if x.dst > 9 || x.src > 10 || cx.an.live_out[pc].contains(x.dst) || x.dst == x.src {
            continue;
        }
        // Stack memory is always hot: a dead load from it is no prefetch hint.
        let kind = cx.kind(pc, x.src);
        if kind.is_stack() {
            continue;
        }
        match cx.region_ok(pc, pc + 1).and_then(|()| Prefetch::new(x.src, x.off).map_err(|e| e.to_string())) {
            Ok(p) => found.matches.push(Match {
                pass: Pass::Prefetch,
                start: pc,
                end: pc + 1,
                op: p.into(),
                keep: vec![],
                prefix: vec![],
                site_pos: 0,
                idiom_slots: 1,
            }),
            Err(reason) => found.rejects.push(Reject { pass: Pass::Prefetch, start: pc, end: pc + 1, reason }),
        }
    }
}

