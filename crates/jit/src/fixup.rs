//! The verifier rewrites the kernel applies before its JIT sees a program, for the
//! instructions whose native form would otherwise fault (`do_misc_fixups` in
//! `kernel/bpf/verifier.c`): division and modulo by a register get a zero guard, signed
//! ones also a -1 guard; `sdiv/smod` by the immediate -1 become `neg` / `mov 0`.
//!
//! The rewrite is done at the eBPF level with the kernel's exact patch sequences, so the
//! JIT lowers them the same way the kernel's JIT lowers the kernel's xlated program. The
//! patches use `BPF_REG_AX` (register 11, x86 r10), which no program can name.
//!
//! A 32-bit `cmpxchg` is followed by a zero-extension of r0 (the verifier adds it when the
//! upper half is read later; we always do).
//!
//! Division by an immediate 0 is rejected by the kernel verifier; our runtimes run
//! unverified programs too, so it gets the same treatment as a register that is 0.

use kops_isa::{op, Insn};

/// The verifier's hidden temporary (`MAX_BPF_REG`).
pub const BPF_REG_AX: u8 = 11;

/// An expanded program and the mapping back to the original slots.
pub struct Expanded {
    pub insns: Vec<Insn>,
    /// For each expanded slot, the original slot it came from.
    pub orig: Vec<usize>,
    /// For each original slot, the first expanded slot of its patch.
    pub start: Vec<usize>,
}

fn jmp(is64: bool, opc: u8, dst: u8, off: i16, imm: i32) -> Insn {
    Insn::new(if is64 { op::JMP } else { op::JMP32 } | opc | op::K, dst, 0, off, imm)
}
fn alu(is64: bool, opc: u8, dst: u8, src_bit: u8, src: u8, imm: i32) -> Insn {
    Insn::new(if is64 { op::ALU64 } else { op::ALU } | opc | src_bit, dst, src, 0, imm)
}

/// The patch for one instruction, or `None` to keep it.
fn patch(i: &Insn) -> Option<Vec<Insn>> {
    let cls = i.class();
    // x86 `cmpxchg r/m32` leaves rax's upper half alone when it succeeds; the verifier
    // zero-extends r0 after a 32-bit cmpxchg (`BPF_ZEXT_REG`, imm 1 marks it).
    if i.code == op::STX | op::ATOMIC | op::W && i.imm == op::CMPXCHG {
        return Some(vec![*i, Insn::new(op::ALU | op::MOV | op::X, 0, 0, 0, 1)]);
    }
    if cls != op::ALU && cls != op::ALU64 {
        return None;
    }
    let opc = i.op();
    if opc != op::DIV && opc != op::MOD {
        return None;
    }
    let is64 = cls == op::ALU64;
    let isdiv = opc == op::DIV;
    let signed = i.off == 1;
    let d = i.dst;
    if i.source() == op::K {
        if signed && i.imm == -1 {
            return Some(vec![if isdiv {
                alu(is64, op::NEG, d, op::K, 0, 0)
            } else {
                alu(false, op::MOV, d, op::K, 0, 0)
            }]);
        }
        if i.imm == 0 {
            // Kernel would reject; give it the register-zero semantics.
            return Some(vec![if isdiv {
                alu(false, op::MOV, d, op::K, 0, 0)
            } else if is64 {
                Insn::ja(0)
            } else {
                alu(false, op::MOV, d, op::X, d, 0)
            }]);
        }
        return None;
    }
    let s = i.src;
    let ax = BPF_REG_AX;
    let mut p = Vec::new();
    if signed && isdiv {
        p.push(Insn::mov64_reg(ax, s));
        p.push(alu(is64, op::ADD, ax, op::K, 0, 1));
        p.push(jmp(is64, op::JGT, ax, 4, 1));
        p.push(jmp(is64, op::JEQ, ax, 1, 0));
        p.push(alu(is64, op::MOV, d, op::K, 0, 0));
        p.push(alu(is64, op::NEG, d, op::K, 0, 0));
        p.push(Insn::ja(1));
        p.push(*i);
    } else if signed {
        p.push(Insn::mov64_reg(ax, s));
        p.push(alu(is64, op::ADD, ax, op::K, 0, 1));
        p.push(jmp(is64, op::JGT, ax, 3, 1));
        p.push(jmp(is64, op::JEQ, ax, 3 + if is64 { 0 } else { 1 }, 1));
        p.push(alu(false, op::MOV, d, op::K, 0, 0));
        p.push(Insn::ja(1));
        p.push(*i);
        if !is64 {
            p.push(Insn::ja(1));
            p.push(alu(false, op::MOV, d, op::X, d, 0));
        }
    } else if isdiv {
        p.push(jmp(is64, op::JNE, s, 2, 0));
        p.push(alu(false, op::XOR, d, op::X, d, 0));
        p.push(Insn::ja(1));
        p.push(*i);
    } else {
        p.push(jmp(is64, op::JEQ, s, 1 + if is64 { 0 } else { 1 }, 0));
        p.push(*i);
        if !is64 {
            p.push(Insn::ja(1));
            p.push(alu(false, op::MOV, d, op::X, d, 0));
        }
    }
    Some(p)
}

/// Relative-target fields of an original instruction that must follow the expansion.
fn retarget(i: &mut Insn, pc: usize, new_pc: usize, start: &[usize]) -> Result<(), String> {
    let fix = |rel: i64| -> Result<i64, String> {
        let t = pc as i64 + 1 + rel;
        if t < 0 || t as usize >= start.len() {
            return Err(format!("target {t} out of range"));
        }
        Ok(start[t as usize] as i64 - (new_pc as i64 + 1))
    };
    if i.is_jump() {
        if i.code == op::JMP32 | op::JA {
            i.imm = fix(i.imm as i64)? as i32;
        } else {
            let n = fix(i.off as i64)?;
            i.off = i16::try_from(n).map_err(|_| format!("jump offset {n} no longer fits 16 bits"))?;
        }
    } else if i.is_pseudo_call() || (i.is_ld_imm64() && i.src == op::PSEUDO_FUNC) {
        i.imm = fix(i.imm as i64)? as i32;
    }
    Ok(())
}

/// Apply the divide fixups. Jumps, bpf-to-bpf calls and `ld_imm64` function pointers are
/// retargeted; a jump to a patched instruction lands on the start of its patch, as in the
/// kernel's `bpf_patch_insn_data`.
pub fn expand(insns: &[Insn]) -> Result<Expanded, (usize, String)> {
    let second = second_slots(insns);
    let mut patches: Vec<Option<Vec<Insn>>> = Vec::with_capacity(insns.len());
    let mut start = Vec::with_capacity(insns.len() + 1);
    let mut n = 0;
    let mut pc = 0;
    while pc < insns.len() {
        let p = if second[pc] { None } else { patch(&insns[pc]) };
        start.push(n);
        n += p.as_ref().map(|p| p.len()).unwrap_or(1);
        patches.push(p);
        pc += 1;
    }
    start.push(n);
    let mut out = Vec::with_capacity(n);
    let mut orig = Vec::with_capacity(n);
    for (pc, p) in patches.into_iter().enumerate() {
        match p {
            Some(seq) => {
                for ins in seq {
                    out.push(ins);
                    orig.push(pc);
                }
            }
            None => {
                let mut ins = insns[pc];
                // The second slot of ld_imm64 carries data, not a target.
                if !second[pc] {
                    retarget(&mut ins, pc, out.len(), &start).map_err(|e| (pc, e))?;
                }
                out.push(ins);
                orig.push(pc);
            }
        }
    }
    start.pop();
    Ok(Expanded { insns: out, orig, start })
}

/// Which slots are the second half of an `ld_imm64` (scanned from the start, so a data
/// slot that happens to look like an instruction is not mistaken for one).
pub fn second_slots(insns: &[Insn]) -> Vec<bool> {
    kops_analysis::ld_imm64_data_slots(insns)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jumps_follow_patches() {
        // 0: if r1 == 0 goto 3 ; 1: r0 /= r2 ; 2: r0 += 1 ; 3: exit
        let prog = [
            Insn::jmp_imm(op::JEQ, 1, 0, 2),
            Insn::alu64_reg(op::DIV, 0, 2),
            Insn::alu64_imm(op::ADD, 0, 1),
            Insn::exit(),
        ];
        let e = expand(&prog).unwrap();
        // div expands to 4 slots (jne, xor, ja, div).
        assert_eq!(e.insns.len(), 7);
        assert_eq!(e.start, vec![0, 1, 5, 6]);
        assert_eq!(e.insns[0].off, 5); // to the exit at 6
        assert_eq!(e.insns[1].code, op::JMP | op::JNE | op::K);
        assert_eq!(e.insns[4], prog[1]);
    }

    #[test]
    fn backward_jump_to_patched_insn() {
        let prog = [Insn::alu32_reg(op::MOD, 0, 1), Insn::ja(-2), Insn::exit()];
        let e = expand(&prog).unwrap();
        // mod32 -> jeq, mod, ja, mov32 (4 slots); ja -2 must land on slot 0.
        assert_eq!(e.insns.len(), 6);
        assert_eq!(e.insns[4].off, -5);
    }
}
