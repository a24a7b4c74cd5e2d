//! Stack depth of one function, as the verifier computes it (`stack_depth`): the deepest
//! byte below r10 that the function reads or writes, directly or through a pointer derived
//! from r10 by constant offsets (including pointers handed to helpers and callees). The JIT
//! reserves `round_up(depth, 8)` bytes, as the kernel does.
//!
//! The analysis is a forward dataflow over the function with one lattice value per
//! register (unknown scalar / r10 + constant / anything). Whenever a stack pointer escapes
//! what it can follow (variable offsets, spilled to memory, merged with a different value)
//! it gives up and returns the full 512 bytes, which is always safe.

use kops_isa::{op, Insn};

/// The eBPF stack size (`MAX_BPF_STACK`).
pub const MAX_STACK: u32 = 512;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum V {
    Scalar,
    Fp(i64),
    Top,
}

fn join(a: V, b: V) -> V {
    match (a, b) {
        (x, y) if x == y => x,
        _ => V::Top,
    }
}

struct Bail;

/// `insns[start..end]` is one function; `second[i]` marks the data slot of an ld_imm64.
pub fn stack_depth(insns: &[Insn], start: usize, end: usize, second: &[bool]) -> u32 {
    let uses_fp = (start..end).any(|i| !second[i] && (insns[i].dst == op::FP || insns[i].src == op::FP) && !is_sidecar(&insns[i]));
    if !uses_fp {
        return 0;
    }
    match analyze(insns, start, end, second) {
        Ok(d) => (d.min(MAX_STACK as i64) as u32).div_ceil(8) * 8,
        Err(Bail) => MAX_STACK,
    }
}

fn is_sidecar(i: &Insn) -> bool {
    i.code == op::ALU64 | op::MOV | op::K && i.src == op::PSEUDO_KINSN_SIDECAR
}

fn analyze(insns: &[Insn], start: usize, end: usize, second: &[bool]) -> Result<i64, Bail> {
    let n = end - start;
    let mut state: Vec<Option<[V; 11]>> = vec![None; n];
    let mut entry = [V::Scalar; 11];
    entry[10] = V::Fp(0);
    state[0] = Some(entry);
    let mut work = vec![0usize];
    let mut depth = 0i64;
    let mut touch = |c: i64, depth: &mut i64| -> Result<(), Bail> {
        if c > 0 || c < -(MAX_STACK as i64) {
            return Err(Bail);
        }
        *depth = (*depth).max(-c);
        Ok(())
    };
    while let Some(k) = work.pop() {
        let pc = start + k;
        let mut s = state[k].unwrap();
        let i = insns[pc];
        let val = |s: &[V; 11], r: u8| s.get(r as usize).copied().unwrap_or(V::Scalar);
        let mut succ: Vec<usize> = Vec::new();
        let mem_base = |s: &[V; 11], r: u8, off: i16, depth: &mut i64, touch: &mut dyn FnMut(i64, &mut i64) -> Result<(), Bail>| -> Result<(), Bail> {
            match val(s, r) {
                V::Fp(c) => touch(c + off as i64, depth),
                V::Top => Err(Bail),
                _ => Ok(()),
            }
        };
        let set = |s: &mut [V; 11], r: u8, v: V| {
            if (r as usize) < 10 {
                s[r as usize] = v;
            }
        };
        match i.class() {
            op::ALU | op::ALU64 if !is_sidecar(&i) => {
                let is64 = i.class() == op::ALU64;
                let d = val(&s, i.dst);
                let src = if i.source() == op::X { val(&s, i.src) } else { V::Scalar };
                let v = match (i.op(), is64) {
                    (op::MOV, true) if i.source() == op::X && i.off == 0 => src,
                    (op::ADD, true) if i.source() == op::K => match d {
                        V::Fp(c) => V::Fp(c + i.imm as i64),
                        x => x,
                    },
                    (op::SUB, true) if i.source() == op::K => match d {
                        V::Fp(c) => V::Fp(c - i.imm as i64),
                        x => x,
                    },
                    _ => {
                        if matches!(d, V::Fp(_) | V::Top) && i.op() != op::MOV
                            || matches!(src, V::Fp(_) | V::Top)
                        {
                            // Pointer arithmetic we don't follow.
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
                        s[r] = V::Scalar;
                    }
                    succ.push(k + 1);
                }
            }
            op::LDX => {
                mem_base(&s, i.src, i.off, &mut depth, &mut touch)?;
                set(&mut s, i.dst, V::Scalar);
                succ.push(k + 1);
            }
            op::ST => {
                mem_base(&s, i.dst, i.off, &mut depth, &mut touch)?;
                succ.push(k + 1);
            }
            op::STX => {
                mem_base(&s, i.dst, i.off, &mut depth, &mut touch)?;
                if matches!(val(&s, i.src), V::Fp(_) | V::Top) {
                    return Err(Bail); // a stack pointer spilled to memory
                }
                if i.mode() == op::ATOMIC {
                    if i.imm & op::FETCH != 0 {
                        set(&mut s, i.src, V::Scalar);
                    }
                    if i.imm == op::CMPXCHG || i.imm == 0x100 {
                        set(&mut s, 0, V::Scalar);
                        if i.imm == 0x100 {
                            set(&mut s, i.dst, V::Scalar);
                        }
                    }
                }
                succ.push(k + 1);
            }
            op::JMP | op::JMP32 => {
                if i.is_exit() {
                } else if i.is_call() {
                    for r in 1..=5u8 {
                        match val(&s, r) {
                            V::Fp(c) => touch(c, &mut depth)?,
                            V::Top => return Err(Bail),
                            _ => {}
                        }
                    }
                    if i.src == op::PSEUDO_KINSN_CALL {
                        // A kinsn site may use any register as a base; be safe.
                        if s.iter().take(10).any(|v| matches!(v, V::Fp(_) | V::Top)) {
                            return Err(Bail);
                        }
                    }
                    for r in 0..=5 {
                        s[r] = V::Scalar;
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
            let merged = match state[sk] {
                None => s,
                Some(old) => {
                    let mut m = old;
                    for r in 0..11 {
                        m[r] = join(old[r], s[r]);
                    }
                    m
                }
            };
            if state[sk] != Some(merged) {
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
        stack_depth(p, 0, p.len(), &second)
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
        // A pointer spilled to memory: give up.
        assert_eq!(depth(&[Insn::stx(op::DW, 10, 10, -8), Insn::exit()]), 512);
        // Different stack offsets merged at a join: give up.
        assert_eq!(
            depth(&[
                Insn::mov64_reg(2, 10),
                Insn::jmp_imm(op::JEQ, 1, 0, 1),
                Insn::alu64_imm(op::ADD, 2, -8),
                Insn::ldx(op::DW, 0, 2, -8),
                Insn::exit(),
            ]),
            512
        );
    }
}
