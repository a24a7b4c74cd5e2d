//! Random programs built from idiom fragments (rotate halves in both widths, selects,
//! extracts, endian loads, byte ladders, copies, zero stores) in random orders and
//! register choices: every rewrite (policy all), lowered, must leave the program's result
//! and memory exactly as the original on the interpreter. This stresses the safety
//! checks (liveness, interleaving, overlap) with shapes clang does not produce.

mod common;
use common::Rng;
use kops_isa::op::*;
use kops_isa::Insn;
use kops_object::{ProgType, Program, Subprog};
use kops_recognize::{run_program, Mode, Pass, Policy};
use kops_vm::{CtxKind, HelperTable, ProgInput, Vm};

fn fragment(rng: &mut Rng) -> Vec<Insn> {
    // Registers r2..r7 carry data; r1 is the memory (64 bytes), r10 the stack.
    let mut reg = || 2 + (rng.next() % 6) as u8;
    let (a, b, c) = (reg(), reg(), reg());
    let k = 1 + (rng.next() % 63) as i32;
    let k32 = 1 + (rng.next() % 31) as i32;
    let off = (rng.next() % 7) as i16 * 8;
    let off8 = (rng.next() % 3) as i16 * 8;
    match rng.next() % 21 {
        0 => vec![Insn::mov64_reg(b, a), Insn::alu64_imm(RSH, b, 64 - k), Insn::alu64_imm(LSH, a, k), Insn::alu64_reg(OR, a, b)],
        1 => vec![Insn::mov64_reg(b, a), Insn::alu64_imm(LSH, b, k), Insn::alu64_imm(RSH, a, 64 - k), Insn::alu64_reg(OR, b, a)],
        2 => vec![Insn::alu32_reg(MOV, b, a), Insn::alu32_imm(RSH, b, 32 - k32), Insn::alu32_imm(LSH, a, k32), Insn::alu32_reg(OR, a, b)],
        3 => vec![Insn::alu64_imm(RSH, a, k)],
        4 => vec![Insn::alu64_imm(LSH, a, k), Insn::alu64_reg(OR, a, b)],
        5 => vec![Insn::mov64_reg(a, b), Insn::jmp_imm(JEQ, c, 0, 1), Insn::mov64_reg(a, c)],
        6 => vec![Insn::new(JMP32 | JNE | K, c, 0, 1, 0), Insn::mov64_reg(a, b)],
        7 => vec![Insn::alu64_imm(RSH, a, k % 40 + 1), Insn::alu64_imm(AND, a, 0xfff)],
        8 => vec![Insn::ldx(H, a, 1, off + 2), Insn::new(ALU | END | TO_BE, a, 0, 0, 16)],
        9 => vec![Insn::ldx(DW, a, 1, off), Insn::new(ALU | END | TO_BE, a, 0, 0, 64)],
        10 => vec![
            Insn::ldx(B, a, 10, -16),
            Insn::ldx(B, b, 10, -15),
            Insn::alu64_imm(LSH, b, 8),
            Insn::alu64_reg(OR, a, b),
        ],
        11 => vec![Insn::stx(DW, 10, a, -16), Insn::stx(DW, 10, b, -8)],
        12 => vec![Insn::ldx(DW, a, 1, off), Insn::stx(DW, 10, a, -32), Insn::ldx(DW, a, 1, off + 8), Insn::stx(DW, 10, a, -24)],
        13 => vec![Insn::st(DW, 10, -16, 0), Insn::st(DW, 10, -8, 0)],
        14 => vec![Insn::alu64_reg(ADD, a, b), Insn::alu64_imm(XOR, c, k)],
        // Copies inside the memory that overlap, in every order, with one or two temporaries.
        16 => vec![Insn::ldx(DW, a, 1, off8), Insn::stx(DW, 1, a, off8 + 8), Insn::ldx(DW, a, 1, off8 + 8), Insn::stx(DW, 1, a, off8 + 16)],
        17 => vec![Insn::ldx(DW, a, 1, off8 + 8), Insn::stx(DW, 1, a, off8 + 16), Insn::ldx(DW, a, 1, off8), Insn::stx(DW, 1, a, off8 + 8)],
        18 if a != b => vec![
            Insn::ldx(DW, a, 1, off8),
            Insn::ldx(DW, b, 1, off8 + 8),
            Insn::stx(DW, 1, a, off8 + 8),
            Insn::stx(DW, 1, b, off8 + 16),
            Insn::mov64_imm(a, 1),
            Insn::mov64_imm(b, 2),
        ],
        // Two temporaries into the stack (disjoint): both must be dead, or the copy stays.
        19 if a != b => vec![Insn::ldx(DW, a, 1, off), Insn::ldx(DW, b, 1, off + 8), Insn::stx(DW, 10, a, -32), Insn::stx(DW, 10, b, -24)],
        // The condition tests the register the first move wrote.
        20 => vec![Insn::mov64_reg(a, b), Insn::jmp_imm(JEQ, a, 0, 1), Insn::mov64_reg(a, c)],
        _ => vec![Insn::mov64_reg(a, b), Insn::alu64_reg(MUL, a, c)],
    }
}

fn random_program(rng: &mut Rng) -> Vec<Insn> {
    let mut v = vec![Insn::mov64_imm(0, 0)];
    for r in 2..=7u8 {
        v.push(Insn::ldx(DW, r, 1, (r as i16 - 2) * 8));
    }
    // Initialise the stack slots the fragments read.
    for o in [-8i16, -16, -24, -32] {
        v.push(Insn::stx(DW, 10, 2, o));
    }
    for _ in 0..(3 + rng.next() % 10) {
        let mut f = fragment(rng);
        // Interleave an unrelated instruction inside the fragment now and then (never
        // between a conditional jump and the instruction it skips).
        if rng.next() % 2 == 0 && f.len() > 1 {
            let at = 1 + (rng.next() as usize % (f.len() - 1));
            if !f[at - 1].is_cond_jump() && !f[at].is_cond_jump() {
                let r = 2 + (rng.next() % 6) as u8;
                // Sometimes read a register the fragment uses.
                let used = f[rng.next() as usize % f.len()].dst;
                let noise = match rng.next() % 5 {
                    4 if used != r && (2..=7).contains(&used) => Insn::mov64_reg(r, used),
                    0 => Insn::alu64_imm(ADD, r, 3),
                    1 => Insn::mov64_reg(r, 2 + (rng.next() % 6) as u8),
                    2 => Insn::ldx(DW, r, 1, 48),
                    _ => Insn::alu32_imm(XOR, r, 0x55),
                };
                f.insert(at, noise);
            }
        }
        v.extend(f);
    }
    // Everything observable: registers to memory, stack folded into r0.
    for r in 2..=7u8 {
        v.push(Insn::stx(DW, 1, r, (r as i16 - 2) * 8));
    }
    for o in [-8i16, -16, -24, -32] {
        v.push(Insn::ldx(DW, 3, 10, o));
        v.push(Insn::alu64_reg(XOR, 0, 3));
    }
    v.push(Insn::exit());
    v
}

fn run(insns: &[Insn], mem: &[u8]) -> Result<(u64, Vec<u8>), String> {
    let vm = Vm::empty();
    let subs = vec![Subprog { name: "f".into(), start: 0, len: insns.len(), section: "syscall".into(), sec_start: 0 }];
    let id = vm
        .load_insns("f", insns.to_vec(), subs, ProgType::Syscall, CtxKind::Mem, HelperTable::kernel(), false)
        .map_err(|e| e.to_string())?;
    let r = vm.run(id, &ProgInput { data: mem.to_vec(), ctx: None }).map_err(|e| e.to_string())?;
    Ok((r.r0, r.data_out))
}

#[test]
fn random_idiom_soup_rewrites_preserve_semantics() {
    let mut rng = Rng::new(0xdead_beef_cafe_f00d);
    let registry = kops_einsn::registry();
    let (mut compared, mut sites) = (0usize, 0usize);
    for n in 0..1500 {
        let insns = random_program(&mut rng);
        let prog = Program {
            name: format!("f{n}"),
            section: "syscall".into(),
            prog_type: ProgType::Syscall,
            prog_type_id: 31,
            expected_attach_type: 0,
            insns: insns.clone(),
            subprogs: vec![Subprog { name: "f".into(), start: 0, len: insns.len(), section: "syscall".into(), sec_start: 0 }],
            func_info: vec![],
            line_info: vec![],
        };
        let r = run_program(&prog, &Policy { mode: Mode::All, passes: Pass::ALL.to_vec() }).expect("rewrite");
        sites += r.report.sites.iter().filter(|s| s.rewrite).count();
        let (lowered, _) = kops_kinsn::lower::lower_program(&r.program, &registry).expect("lower");
        for _ in 0..4 {
            let mem = rng.bytes(64);
            let a = run(&insns, &mem);
            let b = run(&lowered.insns, &mem);
            assert_eq!(a, b, "program {n}: {:?}\nrewritten: {:?}", insns, r.program.insns);
            compared += a.is_ok() as usize;
        }
    }
    assert!(compared > 4000 && sites > 1000, "compared {compared} runs, {sites} sites");
    eprintln!("{compared} runs compared over {sites} rewritten sites");
}
