//! Function discovery and tail-call reachability as a JIT needs them: where each function
//! of a program starts, and which functions can be on the stack when a tail call runs
//! (their frames carry the tail-call counter). The x86-64 JIT's prologues depend on both.

use kops_isa::{op, Insn};

/// The data slots of `ld_imm64` (the second slot of each): `true` there, never an
/// instruction start.
pub fn ld_imm64_data_slots(insns: &[Insn]) -> Vec<bool> {
    let mut v = vec![false; insns.len()];
    let mut pc = 0;
    while pc < insns.len() {
        if insns[pc].is_ld_imm64() && pc + 1 < insns.len() {
            v[pc + 1] = true;
            pc += 2;
        } else {
            pc += 1;
        }
    }
    v
}

/// Function starts, as the kernel's JIT splits a program: slot 0 and the target of every
/// bpf-to-bpf call and of every `ld_imm64` of a function pointer (`PSEUDO_FUNC`). Sorted
/// and deduplicated. `second[pc]` marks the data slots of `ld_imm64` (never instructions).
/// `Err((pc, target))`: the instruction at `pc` names a target outside the program.
pub fn function_starts(insns: &[Insn], second: &[bool]) -> Result<Vec<usize>, (usize, i64)> {
    let mut starts = vec![0usize];
    for (pc, i) in insns.iter().enumerate() {
        if second[pc] {
            continue;
        }
        if i.is_pseudo_call() || (i.is_ld_imm64() && i.src == op::PSEUDO_FUNC) {
            let t = pc as i64 + 1 + i.imm as i64;
            if t < 0 || t as usize >= insns.len() {
                return Err((pc, t));
            }
            starts.push(t as usize);
        }
    }
    starts.sort();
    starts.dedup();
    Ok(starts)
}

/// `tail_call_reachable` per function (`funcs`: `[start, end)` slot ranges), as the
/// verifier computes it: a function that does a tail call (`is_tail_call`), and every
/// function that (transitively) calls one through bpf-to-bpf calls.
pub fn tail_call_reachable(insns: &[Insn], second: &[bool], funcs: &[(usize, usize)], is_tail_call: impl Fn(&Insn) -> bool) -> Vec<bool> {
    let func_of = |pc: usize| funcs.iter().position(|&(s, e)| s <= pc && pc < e).unwrap_or(0);
    let mut tcr: Vec<bool> = funcs.iter().map(|&(s, e)| (s..e).any(|pc| !second[pc] && is_tail_call(&insns[pc]))).collect();
    let calls: Vec<Vec<usize>> = funcs
        .iter()
        .map(|&(s, e)| {
            (s..e)
                .filter(|&pc| !second[pc] && insns[pc].is_pseudo_call())
                .map(|pc| func_of((pc as i64 + 1 + insns[pc].imm as i64) as usize))
                .collect()
        })
        .collect();
    loop {
        let mut changed = false;
        for fi in 0..funcs.len() {
            if !tcr[fi] && calls[fi].iter().any(|&g| tcr[g]) {
                tcr[fi] = true;
                changed = true;
            }
        }
        if !changed {
            return tcr;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(imm: i32) -> Insn {
        Insn { code: op::JMP | op::CALL, dst: 0, src: op::PSEUDO_CALL, off: 0, imm }
    }
    fn helper(imm: i32) -> Insn {
        Insn { code: op::JMP | op::CALL, dst: 0, src: 0, off: 0, imm }
    }

    #[test]
    fn starts_and_reachability() {
        // main: 0 call -> 5; 1-2 r2 = &f3 (slot 9); 3 r0 = 0; 4 exit
        // f1: 5 call -> 7; 6 exit | f2: 7 tail call; 8 exit | f3: 9 exit
        let mut p = vec![call(4)];
        p.extend(Insn::ld_imm64(2, op::PSEUDO_FUNC, 0));
        p[1].imm = 7;
        p.extend([Insn::mov64_imm(0, 0), Insn::exit(), call(1), Insn::exit(), helper(12), Insn::exit(), Insn::exit()]);
        let s = ld_imm64_data_slots(&p);
        assert_eq!(s.iter().filter(|&&x| x).count(), 1);
        assert!(s[2]);
        let starts = function_starts(&p, &s).unwrap();
        assert_eq!(starts, vec![0, 5, 7, 9]);
        let funcs = [(0, 5), (5, 7), (7, 9), (9, 10)];
        assert_eq!(tail_call_reachable(&p, &s, &funcs, |i| i.is_helper_call() && i.imm == 12), vec![true, true, true, false]);
        assert_eq!(tail_call_reachable(&p, &s, &funcs, |_| false), vec![false; 4]);
        let mut bad = p.clone();
        bad[0].imm = 100;
        assert_eq!(function_starts(&bad, &s), Err((0, 101)));
    }
}
