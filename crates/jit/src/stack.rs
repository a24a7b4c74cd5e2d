//! Stack depth of one function, as the verifier computes it (`stack_depth`): the deepest
//! byte below r10 that the function reads or writes, directly or through a pointer derived
//! from r10 by constant offsets (including pointers handed to helpers and callees). The JIT
//! reserves `round_up(depth, 8)` bytes, as the kernel does.
//!
//! The analysis is a forward dataflow over the function with one lattice value per
//! register (unknown scalar / r10 + constant / anything). Whenever a stack pointer escapes
//! what it can follow (variable offsets, spilled to memory, merged with a different value)
//! it gives up and returns the full 512 bytes, which is always safe.
//!
//! With `verified` (programs the kernel verifier accepted), a stack pointer stored into
//! non-stack memory is ignored: the verifier types whatever is read back from there as a
//! number, so it is never dereferenced.

use kops_isa::{op, Insn};

/// The eBPF stack size (`MAX_BPF_STACK`).
pub const MAX_STACK: u32 = 512;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum V {
    /// Unknown number.
    Scalar,
    /// A number in `[lo, hi]` (unsigned): enough to follow `r10 - 256 + (x & 0x1f) * 8`.
    Range(u64, u64),
    /// r10 + exactly this.
    Fp(i64),
    /// r10 + at least this (merged pointers).
    FpLow(i64),
    Top,
}

impl V {
    fn is_ptr(self) -> bool {
        matches!(self, V::Fp(_) | V::FpLow(_) | V::Top)
    }
    fn low(self) -> Option<i64> {
        match self {
            V::Fp(c) | V::FpLow(c) => Some(c),
            _ => None,
        }
    }
    fn add(self, d: i64) -> V {
        match self {
            V::Fp(c) => V::Fp(c + d),
            V::FpLow(c) => V::FpLow(c + d),
            x => x,
        }
    }
}

fn join(a: V, b: V) -> V {
    match (a, b) {
        (x, y) if x == y => x,
        (V::Range(a, b), V::Range(c, d)) => V::Range(a.min(c), b.max(d)),
        (V::Scalar | V::Range(..), V::Scalar | V::Range(..)) => V::Scalar,
        (V::Scalar | V::Range(..), _) | (_, V::Scalar | V::Range(..)) | (V::Top, _) | (_, V::Top) => V::Top,
        (x, y) => V::FpLow(x.low().unwrap().min(y.low().unwrap())),
    }
}

/// Unsigned bounds of a number (None: a pointer).
fn bounds(v: V) -> Option<(u64, u64)> {
    match v {
        V::Scalar => Some((0, u64::MAX)),
        V::Range(a, b) => Some((a, b)),
        _ => None,
    }
}

fn range(lo: Option<u64>, hi: Option<u64>) -> V {
    match (lo, hi) {
        (Some(a), Some(b)) if a <= b => V::Range(a, b),
        _ => V::Scalar,
    }
}

/// Result of a scalar ALU operation on bounds (32-bit results are below 2^32).
fn scalar_alu(opc: u8, is64: bool, d: (u64, u64), sv: (u64, u64), k: Option<i64>) -> V {
    let full32 = V::Range(0, u32::MAX as u64);
    let v = match opc {
        op::MOV => match k {
            Some(imm) => {
                let x = if is64 { imm as u64 } else { imm as u32 as u64 };
                V::Range(x, x)
            }
            None => V::Range(sv.0, sv.1),
        },
        op::ADD => match k {
            Some(imm) if imm >= 0 => range(d.0.checked_add(imm as u64), d.1.checked_add(imm as u64)),
            Some(imm) => range(d.0.checked_sub(imm.unsigned_abs()), d.1.checked_sub(imm.unsigned_abs())),
            None => range(d.0.checked_add(sv.0), d.1.checked_add(sv.1)),
        },
        op::AND => match k {
            Some(imm) if imm >= 0 => V::Range(0, d.1.min(imm as u64)),
            None => V::Range(0, d.1.min(sv.1)),
            _ => V::Scalar,
        },
        op::LSH => match k {
            Some(sh) if (0..64).contains(&sh) && d.1.leading_zeros() as i64 >= sh => V::Range(d.0 << sh, d.1 << sh),
            _ => V::Scalar,
        },
        op::RSH => match k {
            Some(sh) if (0..64).contains(&sh) => V::Range(d.0 >> sh, d.1 >> sh),
            _ => V::Range(0, d.1),
        },
        _ => V::Scalar,
    };
    if is64 {
        v
    } else {
        match v {
            V::Range(a, b) if b <= u32::MAX as u64 => V::Range(a, b),
            _ => full32,
        }
    }
}

/// Why the analysis gave up: (slot, reason).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bail(pub usize, pub &'static str);

/// Registers plus stack slots (exact r10 offsets) that hold spilled stack pointers.
#[derive(Clone, PartialEq, Eq, Debug)]
struct State {
    regs: [V; 11],
    slots: std::collections::BTreeMap<i64, V>,
}

fn join_state(a: &State, b: &State) -> State {
    let mut regs = a.regs;
    for (r, v) in regs.iter_mut().enumerate() {
        *v = join(a.regs[r], b.regs[r]);
    }
    let mut slots = std::collections::BTreeMap::new();
    for (k, v) in a.slots.iter() {
        slots.insert(*k, join(*v, b.slots.get(k).copied().unwrap_or(V::Scalar)));
    }
    for (k, v) in b.slots.iter() {
        slots.entry(*k).or_insert_with(|| join(*v, V::Scalar));
    }
    State { regs, slots }
}

/// `insns[start..end]` is one function; `second[i]` marks the data slot of an ld_imm64.
pub fn stack_depth(insns: &[Insn], start: usize, end: usize, second: &[bool], verified: bool) -> u32 {
    let uses_fp = (start..end).any(|i| !second[i] && (insns[i].dst == op::FP || insns[i].src == op::FP) && !insns[i].is_kinsn_sidecar());
    if !uses_fp {
        return 0;
    }
    explain(insns, start, end, second, verified).unwrap_or(MAX_STACK)
}

/// Like [`stack_depth`], or why the analysis fell back to the full stack.
pub fn explain(insns: &[Insn], start: usize, end: usize, second: &[bool], verified: bool) -> Result<u32, Bail> {
    let uses_fp = (start..end).any(|i| !second[i] && (insns[i].dst == op::FP || insns[i].src == op::FP) && !insns[i].is_kinsn_sidecar());
    if !uses_fp {
        return Ok(0);
    }
    analyze(insns, start, end, second, verified).map(|d| (d.min(MAX_STACK as i64) as u32).div_ceil(8) * 8)
}

fn touch(c: i64, depth: &mut i64) -> Result<(), Bail> {
    if c > 0 || c < -(MAX_STACK as i64) {
        return Err(Bail(0, "stack offset out of range"));
    }
    *depth = (*depth).max(-c);
    Ok(())
}

fn val(s: &State, r: u8) -> V {
    s.regs.get(r as usize).copied().unwrap_or(V::Scalar)
}

fn set(s: &mut State, r: u8, v: V) {
    if (r as usize) < 10 {
        s.regs[r as usize] = v;
    }
}

/// A memory access through `r + off`: count it if `r` points into the stack.
fn access(s: &State, r: u8, off: i16, depth: &mut i64) -> Result<(), Bail> {
    match val(s, r) {
        V::Top => Err(Bail(0, "access through a pointer of unknown kind")),
        v => match v.low() {
            Some(c) => touch(c + off as i64, depth),
            None => Ok(()),
        },
    }
}

fn analyze(insns: &[Insn], start: usize, end: usize, second: &[bool], verified: bool) -> Result<i64, Bail> {
    let n = end - start;
    let mut state: Vec<Option<State>> = vec![None; n];
    let mut entry = State { regs: [V::Scalar; 11], slots: Default::default() };
    entry.regs[10] = V::Fp(0);
    state[0] = Some(entry);
    let mut work = vec![0usize];
    let mut depth = 0i64;
    let mut steps = 0usize;
    let mut visits = vec![0u32; n];
    while let Some(k) = work.pop() {
        steps += 1;
        if steps > 200_000 {
            return Err(Bail(start, "too many steps"));
        }
        let pc = start + k;
        let mut s = state[k].clone().unwrap();
        let i = insns[pc];
        let mut succ: Vec<usize> = Vec::new();
        match i.class() {
            op::ALU | op::ALU64 if !i.is_kinsn_sidecar() => {
                let is64 = i.class() == op::ALU64;
                let d = val(&s, i.dst);
                let src = if i.source() == op::X { val(&s, i.src) } else { V::Scalar };
                let kimm = if i.source() == op::K { Some(i.imm as i64) } else { None };
                let v = match (i.op(), is64) {
                    (op::MOV, true) if i.source() == op::X && i.off == 0 => src,
                    (op::ADD, true) if i.source() == op::K && d.is_ptr() => d.add(i.imm as i64),
                    (op::SUB, true) if i.source() == op::K && d.is_ptr() => d.add(-(i.imm as i64)),
                    (op::ADD, true) if matches!(d, V::Fp(_) | V::FpLow(_)) && bounds(src).is_some_and(|b| b.1 < (1 << 32)) => {
                        // Stack pointer plus a bounded number: the lowest address counts.
                        let (lo, hi) = bounds(src).unwrap();
                        if lo == hi {
                            d.add(lo as i64)
                        } else {
                            V::FpLow(d.low().unwrap() + lo as i64)
                        }
                    }
                    (op::ADD, true) if matches!(src, V::Fp(_) | V::FpLow(_)) && bounds(d).is_some_and(|b| b.1 < (1 << 32)) => {
                        let (lo, hi) = bounds(d).unwrap();
                        if lo == hi {
                            src.add(lo as i64)
                        } else {
                            V::FpLow(src.low().unwrap() + lo as i64)
                        }
                    }
                    (o, _) if !d.is_ptr() && !src.is_ptr() && i.off == 0 => {
                        let sd = bounds(d).unwrap();
                        let ss = bounds(src).unwrap();
                        if o == op::MOV && i.source() == op::X && !is64 {
                            scalar_alu(op::MOV, false, sd, ss, None)
                        } else {
                            scalar_alu(o, is64, sd, ss, kimm)
                        }
                    }
                    _ => {
                        if d.is_ptr() || src.is_ptr() {
                            // Pointer arithmetic we don't follow (a 32-bit result is no
                            // pointer, but the verifier would reject that anyway).
                            if is64 {
                                V::Top
                            } else {
                                V::Scalar
                            }
                        } else {
                            V::Scalar
                        }
                    }
                };
                set(&mut s, i.dst, v);
                succ.push(k + 1);
            }
            op::ALU | op::ALU64 => succ.push(k + 1),
            op::LD => {
                if i.is_ld_imm64() {
                    set(&mut s, i.dst, V::Scalar);
                    succ.push(k + 2);
                } else {
                    // Legacy packet loads clobber r0..r5.
                    for r in 0..=5 {
                        s.regs[r] = V::Scalar;
                    }
                    succ.push(k + 1);
                }
            }
            op::LDX => {
                access(&s, i.src, i.off, &mut depth).map_err(|b| Bail(pc, b.1))?;
                let v = match val(&s, i.src) {
                    _ if i.mode() == op::MEM && i.size() != op::DW => V::Range(0, (1u64 << (8 * i.size_bytes())) - 1),
                    V::Fp(c) if i.size() == op::DW => s.slots.get(&(c + i.off as i64)).copied().unwrap_or(V::Scalar),
                    V::FpLow(_) if i.size() == op::DW => {
                        // Which slot is unknown: any spilled pointer may come back.
                        s.slots.values().fold(V::Scalar, |a, b| if a == V::Scalar { *b } else { join(a, *b) })
                    }
                    _ => V::Scalar,
                };
                set(&mut s, i.dst, v);
                succ.push(k + 1);
            }
            op::ST => {
                access(&s, i.dst, i.off, &mut depth).map_err(|b| Bail(pc, b.1))?;
                if let V::Fp(c) = val(&s, i.dst) {
                    let a = c + i.off as i64;
                    s.slots.retain(|k, _| *k + 8 <= a || *k >= a + i.size_bytes() as i64);
                }
                succ.push(k + 1);
            }
            op::STX => {
                access(&s, i.dst, i.off, &mut depth).map_err(|b| Bail(pc, b.1))?;
                let v = val(&s, i.src);
                let base = val(&s, i.dst);
                if i.mode() == op::MEM && v.is_ptr() {
                    // A stack pointer spilled: follow it only into an exact stack slot.
                    match (base, v, i.size()) {
                        (V::Fp(c), V::Fp(_) | V::FpLow(_), op::DW) => {
                            s.slots.insert(c + i.off as i64, v);
                        }
                        (V::Fp(c), V::Top, op::DW) if verified => {
                            s.slots.insert(c + i.off as i64, v);
                        }
                        // Verified programs never dereference a pointer read back from
                        // non-stack memory or from a stack slot written at a variable
                        // offset (the verifier types it as a number).
                        _ if verified => {}
                        _ => return Err(Bail(pc, "stack pointer stored outside an exact stack slot")),
                    }
                } else if i.mode() == op::ATOMIC && v.is_ptr() {
                    return Err(Bail(pc, "stack pointer in an atomic"));
                } else if let V::Fp(c) = base {
                    let a = c + i.off as i64;
                    s.slots.retain(|k, _| *k + 8 <= a || *k >= a + i.size_bytes() as i64);
                }
                if i.mode() == op::ATOMIC {
                    if i.imm & op::FETCH != 0 {
                        set(&mut s, i.src, V::Scalar);
                    }
                    if i.imm == op::CMPXCHG {
                        set(&mut s, 0, V::Scalar);
                    }
                    if i.imm == 0x100 {
                        set(&mut s, i.dst, V::Scalar);
                    }
                }
                succ.push(k + 1);
            }
            op::JMP | op::JMP32 => {
                if i.is_exit() {
                } else if i.code == op::JMP | op::CALL | op::X || i.is_call() {
                    for r in 1..=5u8 {
                        match val(&s, r) {
                            V::Top => return Err(Bail(pc, "call argument of unknown kind")),
                            v => {
                                if let Some(c) = v.low() {
                                    touch(c, &mut depth).map_err(|b| Bail(pc, b.1))?;
                                }
                            }
                        }
                    }
                    if i.src == op::PSEUDO_KINSN_CALL {
                        // A kinsn site may use any register as a base; be safe.
                        if s.regs.iter().take(10).any(|v| v.is_ptr()) {
                            return Err(Bail(pc, "stack pointer live across a kinsn site"));
                        }
                    }
                    for r in 0..=5 {
                        s.regs[r] = V::Scalar;
                    }
                    succ.push(k + 1);
                } else {
                    let t = i.target(pc).unwrap_or(-1);
                    if t >= start as i64 && (t as usize) < end {
                        succ.push(t as usize - start);
                    }
                    if i.is_cond_jump() || i.op() == 0xe0 {
                        succ.push(k + 1);
                    }
                }
            }
            _ => succ.push(k + 1),
        }
        for sk in succ {
            if sk >= n || second[start + sk] {
                continue;
            }
            let merged = match &state[sk] {
                None => s.clone(),
                Some(old) => {
                    let mut m = join_state(old, &s);
                    visits[sk] += 1;
                    if visits[sk] > 8 {
                        // Widen number ranges that keep changing (loop counters).
                        // Bounds that grow jump to the next threshold (so a masked
                        // index stays below 2^32); ones that shrink go to 0.
                        for r in 0..11 {
                            if let (V::Range(ol, oh), V::Range(nl, nh)) = (old.regs[r], m.regs[r]) {
                                let lo = if nl < ol { 0 } else { nl };
                                let hi = if nh > oh {
                                    [0xff, 0xffff, u32::MAX as u64, u64::MAX].into_iter().find(|t| *t >= nh).unwrap()
                                } else {
                                    nh
                                };
                                m.regs[r] = V::Range(lo, hi);
                            }
                        }
                    }
                    m
                }
            };
            if state[sk].as_ref() != Some(&merged) {
                state[sk] = Some(merged);
                work.push(sk);
            }
        }
    }
    Ok(depth)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn depth(p: &[Insn]) -> u32 {
        let second = crate::fixup::second_slots(p);
        stack_depth(p, 0, p.len(), &second, false)
    }

    #[test]
    fn depths() {
        // No r10 at all: no frame.
        assert_eq!(depth(&[Insn::mov64_imm(0, 1), Insn::exit()]), 0);
        // *(u32 *)(r10 - 4) = r1 -> 4 -> 8.
        assert_eq!(depth(&[Insn::stx(op::W, 10, 1, -4), Insn::exit()]), 8);
        // r2 = r10; r2 += -20; call helper -> 20 -> 24.
        assert_eq!(
            depth(&[Insn::mov64_reg(2, 10), Insn::alu64_imm(op::ADD, 2, -20), Insn::call_helper(1), Insn::exit()]),
            24
        );
        // A pointer spilled into a map value (not the stack): give up.
        assert_eq!(depth(&[Insn::stx(op::DW, 1, 10, -8), Insn::exit()]), 512);
        // Spilled to the stack and reloaded: followed. r2 = r10 - 48 spilled at -8,
        // reloaded into r3, then *(r3 - 8) -> depth 56.
        assert_eq!(
            depth(&[
                Insn::mov64_reg(2, 10),
                Insn::alu64_imm(op::ADD, 2, -48),
                Insn::stx(op::DW, 10, 2, -8),
                Insn::ldx(op::DW, 3, 10, -8),
                Insn::st(op::B, 3, -8, 0),
                Insn::exit(),
            ]),
            56
        );
        // Different stack offsets merged at a join: the lower one counts (-16 - 8 = 24).
        assert_eq!(
            depth(&[
                Insn::mov64_reg(2, 10),
                Insn::jmp_imm(op::JEQ, 1, 0, 1),
                Insn::alu64_imm(op::ADD, 2, -8),
                Insn::ldx(op::DW, 0, 2, -8),
                Insn::exit(),
            ]),
            16
        );
        // r10 - 256 + (x & 0x1f) * 8: the lowest possible address counts (256).
        assert_eq!(
            depth(&[
                Insn::alu64_imm(op::AND, 1, 0x1f),
                Insn::alu64_imm(op::LSH, 1, 3),
                Insn::mov64_reg(2, 10),
                Insn::alu64_imm(op::ADD, 2, -256),
                Insn::alu64_reg(op::ADD, 2, 1),
                Insn::ldx(op::DW, 0, 2, 0),
                Insn::exit(),
            ]),
            256
        );
        // ... but an unbounded index: give up.
        assert_eq!(
            depth(&[
                Insn::mov64_reg(2, 10),
                Insn::alu64_imm(op::ADD, 2, -256),
                Insn::alu64_reg(op::ADD, 2, 1),
                Insn::ldx(op::DW, 0, 2, 0),
                Insn::exit(),
            ]),
            512
        );
        // A pointer walked downwards in a loop leaves the stack: give up.
        assert_eq!(
            depth(&[
                Insn::mov64_reg(2, 10),
                Insn::alu64_imm(op::ADD, 2, -8),
                Insn::st(op::DW, 2, 0, 0),
                Insn::jmp_imm(op::JNE, 1, 0, -3),
                Insn::exit(),
            ]),
            512
        );
    }
}
