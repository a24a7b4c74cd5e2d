//! Bit-precise symbolic semantics of the eBPF instructions proof sequences use.
//!
//! Proof sequences have only forward jumps, so execution walks the slots in order and
//! merges the states that reach a slot with `ite` on their path conditions.

use crate::smt::{Bool, Bv, Mem, Smt};
use kops_isa::{op, Insn};

#[derive(Clone, Debug)]
pub struct BpfState {
    pub regs: [Bv; 11],
    pub mem: Mem,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BpfSymError {
    #[error("slot {pc}: {what} is not modelled for proof sequences")]
    Unsupported { pc: usize, what: String },
    #[error("slot {pc}: jump to {target} leaves the sequence or goes backwards")]
    BadJump { pc: usize, target: i64 },
}

fn merge(s: &mut Smt, c: &Bool, a: &BpfState, b: &BpfState) -> BpfState {
    let regs = std::array::from_fn(|i| s.ite(c, &a.regs[i], &b.regs[i]));
    BpfState { regs, mem: s.ite_mem(c, &a.mem, &b.mem) }
}

/// Run `insns` from `init`; the result is the state at `insns.len()` (one past the end).
pub fn run(s: &mut Smt, insns: &[Insn], init: BpfState) -> Result<BpfState, BpfSymError> {
    let n = insns.len();
    // Incoming (path condition, state) per slot, plus the exit slot n.
    let mut incoming: Vec<Vec<(Bool, BpfState)>> = vec![Vec::new(); n + 1];
    incoming[0].push((s.t(), init));
    for pc in 0..n {
        let Some((guard, st)) = join(s, std::mem::take(&mut incoming[pc])) else {
            continue; // unreachable slot
        };
        let insn = insns[pc];
        let unsupported = |what: &str| BpfSymError::Unsupported { pc, what: what.to_string() };
        match insn.class() {
            op::ALU | op::ALU64 => {
                let mut st = st;
                alu(s, &insn, &mut st).map_err(|w| unsupported(&w))?;
                incoming[pc + 1].push((guard, st));
            }
            op::LDX => {
                if insn.mode() != op::MEM && insn.mode() != op::MEMSX {
                    return Err(unsupported("this load mode"));
                }
                let mut st = st;
                let n = insn.size_bytes() as u32;
                let off = s.lit(64, insn.off as i64 as u64);
                let addr = s.add(&st.regs[insn.src as usize], &off);
                let v = s.load(&st.mem, &addr, n);
                st.regs[insn.dst as usize] = if insn.mode() == op::MEMSX {
                    s.sext(&v, 64)
                } else {
                    s.zext(&v, 64)
                };
                incoming[pc + 1].push((guard, st));
            }
            op::ST | op::STX => {
                if insn.mode() != op::MEM {
                    return Err(unsupported("atomic or non-MEM store"));
                }
                let mut st = st;
                let n = insn.size_bytes() as u32;
                let off = s.lit(64, insn.off as i64 as u64);
                let addr = s.add(&st.regs[insn.dst as usize], &off);
                let v = if insn.class() == op::ST {
                    s.lit(64, insn.imm as i64 as u64)
                } else {
                    st.regs[insn.src as usize].clone()
                };
                st.mem = s.store(&st.mem, &addr, &v, n);
                incoming[pc + 1].push((guard, st));
            }
            op::JMP | op::JMP32 => {
                if !insn.is_jump() {
                    return Err(unsupported("call or exit"));
                }
                let target = insn.target(pc).unwrap();
                if target <= pc as i64 || target > n as i64 {
                    return Err(BpfSymError::BadJump { pc, target });
                }
                let t = target as usize;
                if insn.op() == op::JA {
                    incoming[t].push((guard, st));
                    continue;
                }
                let c = cond(s, &insn, &st);
                let taken = s.band(&guard, &c);
                let nc = s.bnot(&c);
                let fall = s.band(&guard, &nc);
                incoming[t].push((taken, st.clone()));
                incoming[pc + 1].push((fall, st));
            }
            op::LD if insn.is_ld_imm64() && insn.src == 0 && pc + 1 < n => {
                // Plain 64-bit constant; the second slot only carries the high half.
                let mut st = st;
                let v = (insn.imm as u32 as u64) | ((insns[pc + 1].imm as u32 as u64) << 32);
                st.regs[insn.dst as usize] = s.lit(64, v);
                incoming[pc + 2].push((guard, st));
            }
            _ => return Err(unsupported("pseudo ld_imm64 or legacy packet load")),
        }
    }
    let (_, st) = join(s, std::mem::take(&mut incoming[n])).expect("end of sequence is reachable");
    Ok(st)
}

/// Merge the states reaching one slot. Guards are disjoint, so the last state needs no test.
fn join(s: &mut Smt, mut ins: Vec<(Bool, BpfState)>) -> Option<(Bool, BpfState)> {
    let (mut g, mut st) = ins.pop()?;
    while let Some((g2, st2)) = ins.pop() {
        st = merge(s, &g2, &st2, &st);
        g = s.bor(&g2, &g);
    }
    Some((g, st))
}

fn cond(s: &mut Smt, insn: &Insn, st: &BpfState) -> Bool {
    let w = if insn.class() == op::JMP32 { 32 } else { 64 };
    let a = s.extract(&st.regs[insn.dst as usize], w - 1, 0);
    let b = if insn.source() == op::X {
        s.extract(&st.regs[insn.src as usize], w - 1, 0)
    } else {
        s.lit(w, insn.imm as i64 as u64)
    };
    match insn.op() {
        op::JEQ => s.eq(&a, &b),
        op::JNE => {
            let e = s.eq(&a, &b);
            s.bnot(&e)
        }
        op::JGT => s.cmp("bvugt", &a, &b),
        op::JGE => s.cmp("bvuge", &a, &b),
        op::JLT => s.cmp("bvult", &a, &b),
        op::JLE => s.cmp("bvule", &a, &b),
        op::JSGT => s.cmp("bvsgt", &a, &b),
        op::JSGE => s.cmp("bvsge", &a, &b),
        op::JSLT => s.cmp("bvslt", &a, &b),
        op::JSLE => s.cmp("bvsle", &a, &b),
        _ => {
            // JSET
            let x = s.and(&a, &b);
            let z = s.lit(w, 0);
            let e = s.eq(&x, &z);
            s.bnot(&e)
        }
    }
}

fn alu(s: &mut Smt, insn: &Insn, st: &mut BpfState) -> Result<(), String> {
    let w = if insn.class() == op::ALU64 { 64 } else { 32 };
    let d = insn.dst as usize;
    let a = s.extract(&st.regs[d], w - 1, 0);
    let opc = insn.op();
    if opc == op::END {
        let bits = insn.imm as u32;
        if !matches!(bits, 16 | 32 | 64) {
            return Err(format!("endian width {bits}"));
        }
        let x = s.extract(&st.regs[d], bits - 1, 0);
        // ALU|END|TO_LE is a truncation on little-endian; TO_BE and ALU64 swap.
        let swap = insn.class() == op::ALU64 || insn.source() == op::TO_BE;
        let v = if swap { bswap(s, &x) } else { x };
        st.regs[d] = s.zext(&v, 64);
        return Ok(());
    }
    let b = if insn.source() == op::X {
        s.extract(&st.regs[insn.src as usize], w - 1, 0)
    } else {
        s.lit(w, insn.imm as i64 as u64)
    };
    let signed = insn.off == 1;
    let zero = s.lit(w, 0);
    let r = match opc {
        op::ADD => s.add(&a, &b),
        op::SUB => s.sub(&a, &b),
        op::MUL => s.mul(&a, &b),
        op::OR => s.or(&a, &b),
        op::AND => s.and(&a, &b),
        op::XOR => s.xor(&a, &b),
        op::NEG => s.neg(&a),
        op::LSH | op::RSH | op::ARSH => {
            let m = s.lit(w, (w - 1) as u64);
            let k = s.and(&b, &m);
            match opc {
                op::LSH => s.shl(&a, &k),
                op::RSH => s.lshr(&a, &k),
                _ => s.ashr(&a, &k),
            }
        }
        op::DIV | op::MOD => {
            // Division by zero: div gives 0, mod leaves dst. SMT's bvurem/bvsrem by zero
            // already return the dividend; bvudiv/bvsdiv need the explicit test.
            let bz = s.eq(&b, &zero);
            match (opc, signed) {
                (op::DIV, false) => {
                    let q = s.bin("bvudiv", &a, &b);
                    s.ite(&bz, &zero, &q)
                }
                (op::DIV, true) => {
                    let q = s.bin("bvsdiv", &a, &b);
                    s.ite(&bz, &zero, &q)
                }
                (_, false) => s.bin("bvurem", &a, &b),
                (_, true) => s.bin("bvsrem", &a, &b),
            }
        }
        op::MOV => match insn.off {
            0 => b,
            8 | 16 | 32 if insn.source() == op::X => {
                let x = s.extract(&b, insn.off as u32 - 1, 0);
                s.sext(&x, w)
            }
            o => return Err(format!("mov with off {o}")),
        },
        o => return Err(format!("ALU op {o:#x}")),
    };
    st.regs[d] = s.zext(&r, 64);
    Ok(())
}

/// Reverse the bytes of `x` (width a multiple of 8).
pub fn bswap(s: &mut Smt, x: &Bv) -> Bv {
    let n = x.w / 8;
    let mut v: Option<Bv> = None;
    for i in 0..n {
        let byte = s.extract(x, 8 * i + 7, 8 * i);
        // Byte i of the input becomes byte n-1-i: build from the most significant end.
        v = Some(match v {
            None => byte,
            Some(hi) => s.concat(&hi, &byte),
        });
    }
    v.unwrap()
}
