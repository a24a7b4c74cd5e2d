//! Equivalence of native emits against their proof sequences, decided by an SMT solver.
//!
//! One side is the proof sequence run symbolically with eBPF semantics ([`bpf`]); the other
//! is the bytes the emitter really produced, decoded by iced-x86 and run symbolically with
//! x86-64 semantics ([`x86`]). Both start from the same symbolic registers (through the JIT's
//! register map) and memory; the claim is that every BPF register and all memory end equal.

pub mod bpf;
pub mod check_model;
pub mod concrete;
pub mod cpu;
pub mod einsn;
pub mod smt;
pub mod x86;

use kops_isa::Insn;
use smt::{Bv, Smt};

/// BPF register -> x86 register number (rax=0 .. r15=15), the Linux JIT's map:
/// r0 rax, r1 rdi, r2 rsi, r3 rdx, r4 rcx, r5 r8, r6 rbx, r7 r13, r8 r14, r9 r15, r10 rbp.
pub const BPF_TO_X86: [usize; 11] = [0, 7, 6, 2, 1, 8, 3, 13, 14, 15, 5];

/// x86 register names for messages.
pub const X86_NAMES: [&str; 16] = [
    "rax", "rcx", "rdx", "rbx", "rsp", "rbp", "rsi", "rdi", "r8", "r9", "r10", "r11", "r12",
    "r13", "r14", "r15",
];

/// What the check is allowed to ignore.
#[derive(Clone, Copy, Debug, Default)]
pub struct Relaxation {
    /// BPF registers (bit i = ri) the JIT has shown dead after the site: they may differ.
    pub dead_bpf: u16,
    /// x86 registers outside the BPF map (bit = x86 number) the native code may clobber
    /// (the JIT's scratch). Every other unmapped register, rsp included, must be preserved.
    pub scratch_x86: u16,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Proven,
    /// Inputs (register and memory-free) under which the two sides differ, and the first
    /// differing location.
    Refuted {
        inputs: Vec<(String, u64)>,
        /// (address, byte) of the initial memory the proof sequence read, where it did.
        memory: Vec<(u64, u8)>,
        differs: String,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum ProveError {
    #[error("proof sequence: {0}")]
    Bpf(#[from] bpf::BpfSymError),
    #[error("native code: {0}")]
    X86(#[from] x86::X86SymError),
    #[error(transparent)]
    Solver(#[from] smt::SolverError),
}

/// Check that `native` (x86-64 bytes) leaves every BPF register (except those dead after
/// the site) and memory exactly as `proof` does, for all inputs. x86 registers outside
/// the BPF map (r9-r12, rsp) are scratch for the native side but rsp must be restored.
pub fn check(proof: &[Insn], native: &[u8], relax: Relaxation) -> Result<Verdict, ProveError> {
    let mut s = Smt::new();
    let regs: [Bv; 11] = std::array::from_fn(|i| s.input(&format!("r{i}"), 64));
    let mem = s.input_mem("mem");
    let stack = s.input_mem("native_stack");
    let bpf_init = bpf::BpfState { regs: regs.clone(), mem: mem.clone() };
    let bpf_end = bpf::run(&mut s, proof, bpf_init)?;

    let gpr: [Bv; 16] = std::array::from_fn(|x| {
        match BPF_TO_X86.iter().position(|&m| m == x) {
            Some(b) => regs[b].clone(),
            None => s.input(&format!("x86_{}", X86_NAMES[x]), 64),
        }
    });
    let x86_init_gpr = gpr.clone();
    let flag = |s: &mut Smt, n: &str| {
        let b = s.input(n, 1);
        let one = s.lit(1, 1);
        s.eq(&b, &one)
    };
    let init = x86::X86State {
        gpr,
        zf: flag(&mut s, "zf"),
        sf: flag(&mut s, "sf"),
        cf: flag(&mut s, "cf"),
        of: flag(&mut s, "of"),
        df: false,
        mem,
        stack,
    };
    let x86_end = x86::run(&mut s, native, init)?;

    let mut checks: Vec<(String, smt::Bool)> = Vec::new();
    for b in 0..11 {
        if relax.dead_bpf & (1 << b) != 0 {
            continue;
        }
        let x = BPF_TO_X86[b];
        let e = s.eq(&bpf_end.regs[b], &x86_end.gpr[x]);
        checks.push((format!("r{b} ({})", X86_NAMES[x]), e));
    }
    for x in 0..16 {
        if BPF_TO_X86.contains(&x) || relax.scratch_x86 & (1 << x) != 0 {
            continue;
        }
        let e = s.eq(&x86_init_gpr[x], &x86_end.gpr[x]);
        checks.push((format!("{} (must be preserved)", X86_NAMES[x]), e));
    }
    let e = s.mem_eq(&bpf_end.mem, &x86_end.mem);
    checks.push(("memory".into(), e));

    // One query per location: it names what differs, and the solver's cache recognises
    // a location already proven for another register assignment.
    for (what, claim) in checks {
        if let Some(model) = s.prove(&claim)? {
            let value = |n: &str| model.iter().find(|(m, _)| m == n).map(|x| x.1);
            let mut memory: Vec<(u64, u8)> = s
                .probes
                .iter()
                .filter_map(|(a, b)| {
                    let addr = a.value().or_else(|| value(&a.s))?;
                    Some((addr, value(&b.s)? as u8))
                })
                .collect();
            memory.sort();
            memory.dedup();
            let inputs = model
                .into_iter()
                .filter(|(n, _)| n.starts_with('r') || n.starts_with("x86_"))
                .collect();
            return Ok(Verdict::Refuted { inputs, memory, differs: what });
        }
    }
    Ok(Verdict::Proven)
}

#[cfg(test)]
mod tests {
    use super::*;
    use kops_isa::op;

    /// r1 = rol64(r1, 5) through r2, as clang emits `(x << 5) | (x >> 59)`.
    fn rotate_proof() -> Vec<Insn> {
        vec![
            Insn::mov64_reg(2, 1),
            Insn::alu64_imm(op::RSH, 2, 59),
            Insn::alu64_imm(op::LSH, 1, 5),
            Insn::alu64_reg(op::OR, 1, 2),
        ]
    }

    // Hand-assembled (checked with llvm-mc -triple=x86_64 -show-encoding):
    // rol rdi, 5  = 48 c1 c7 05 ; rol rdi, 6 = 48 c1 c7 06
    // mov rsi, rdi = 48 89 fe ; shr rsi, 59 = 48 c1 ee 3b
    const ROL5: [u8; 4] = [0x48, 0xc1, 0xc7, 0x05];
    const ROL6: [u8; 4] = [0x48, 0xc1, 0xc7, 0x06];

    #[test]
    fn rotate_with_dead_temporary_is_proven() {
        let v = check(&rotate_proof(), &ROL5, Relaxation { dead_bpf: 1 << 2, scratch_x86: 0 }).unwrap();
        assert_eq!(v, Verdict::Proven);
    }

    #[test]
    fn rotate_with_live_temporary_needs_it_written() {
        // Without the temporary r2 the native code differs from the proof in r2.
        let v = check(&rotate_proof(), &ROL5, Relaxation::default()).unwrap();
        match v {
            Verdict::Refuted { differs, .. } => assert!(differs.starts_with("r2"), "{differs}"),
            v => panic!("expected refutation, got {v:?}"),
        }
        // Reproducing the temporary first makes it equal again.
        let mut full = vec![0x48, 0x89, 0xfe, 0x48, 0xc1, 0xee, 0x3b];
        full.extend_from_slice(&ROL5);
        assert_eq!(check(&rotate_proof(), &full, Relaxation::default()).unwrap(), Verdict::Proven);
    }

    #[test]
    fn wrong_rotate_amount_is_refuted_with_a_real_counterexample() {
        let v = check(&rotate_proof(), &ROL6, Relaxation { dead_bpf: 1 << 2, scratch_x86: 0 }).unwrap();
        let Verdict::Refuted { inputs, differs, .. } = v else { panic!("rol 6 accepted") };
        assert!(differs.starts_with("r1"));
        let r1 = inputs.iter().find(|(n, _)| n == "r1").map(|x| x.1).unwrap_or(0);
        assert_ne!(r1.rotate_left(5), r1.rotate_left(6), "counterexample does not differ");
    }

    #[test]
    fn unmodelled_instruction_is_an_error() {
        // cpuid (0f a2) is outside the subset: an error, never skipped.
        let e = check(&rotate_proof(), &[0x0f, 0xa2], Relaxation::default()).unwrap_err();
        assert!(e.to_string().contains("outside the modelled"), "{e}");
    }

    #[test]
    fn pushes_below_the_stack_do_not_count_but_rsp_must_return() {
        // push rax; pop rax around the rotate: memory through rsp is the native stack.
        let mut code = vec![0x50];
        code.extend_from_slice(&ROL5);
        code.push(0x58);
        let relax = Relaxation { dead_bpf: 1 << 2, scratch_x86: 0 };
        assert_eq!(check(&rotate_proof(), &code, relax).unwrap(), Verdict::Proven);
        // A push without its pop leaves rsp moved.
        let mut bad = vec![0x50];
        bad.extend_from_slice(&ROL5);
        match check(&rotate_proof(), &bad, relax).unwrap() {
            Verdict::Refuted { differs, .. } => assert!(differs.starts_with("rsp"), "{differs}"),
            v => panic!("{v:?}"),
        }
    }
}
