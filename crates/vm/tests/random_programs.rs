//! Random instruction sequences never crash the host: every run ends with r0 or an error
//! (bad access, budget, invalid instruction, helper fault), never a panic or a segfault.

use kops_isa::{op, Insn};
use kops_object::ProgType;
use kops_vm::{CtxKind, HelperTable, ProgInput, Vm};

use kops_rng::Rng;

/// Opcodes of every class, with the odd invalid one mixed in.
const CODES: &[u8] = &[
    0x07, 0x0f, 0x17, 0x1f, 0x27, 0x2f, 0x37, 0x3f, 0x47, 0x4f, 0x57, 0x5f, 0x67, 0x6f, 0x77, 0x7f, 0x87, 0x97,
    0x9f, 0xa7, 0xaf, 0xb7, 0xbf, 0xc7, 0xcf, 0xd7, 0x04, 0x0c, 0x14, 0x1c, 0x24, 0x2c, 0x34, 0x3c, 0x44, 0x54,
    0x64, 0x6c, 0x74, 0x7c, 0x84, 0x94, 0x9c, 0xa4, 0xb4, 0xbc, 0xc4, 0xcc, 0xd4, 0xdc, // ALU
    0x05, 0x15, 0x1d, 0x25, 0x2d, 0x35, 0x45, 0x55, 0x5d, 0x65, 0x6d, 0xa5, 0xad, 0xc5, 0xd5, 0x06, 0x16, 0x1e,
    0x26, 0x56, 0x66, 0xa6, 0xc6, 0xde, 0x85, 0x95, // jumps, call, exit
    0x61, 0x69, 0x71, 0x79, 0x81, 0x89, 0x91, 0x62, 0x6a, 0x72, 0x7a, 0x63, 0x6b, 0x73, 0x7b, 0xc3, 0xdb, // mem
    0x18, 0x20, 0x28, 0x30, 0x40, 0x48, // ld_imm64, ld_abs/ind
    0xff, 0x8d,
];

fn random_program(rng: &mut Rng) -> Vec<Insn> {
    let n = 1 + rng.below(14) as usize;
    let mut p = Vec::new();
    for _ in 0..n {
        let code = CODES[rng.below(CODES.len() as u64) as usize];
        let class = code & 7;
        // Mostly operands the validator accepts, so most programs get to run.
        let dst = if matches!(class, op::ST | op::STX) { rng.below(11) as u8 } else { rng.below(10) as u8 };
        let src = if code == 0x85 { 0 } else { rng.below(11) as u8 };
        let off = match (class, rng.below(10)) {
            (op::ALU | op::ALU64, 0..=7) => 0,
            (op::ALU | op::ALU64, 8) => [1, 8, 16, 32][rng.below(4) as usize],
            (op::JMP | op::JMP32, 0..=8) => rng.below(3) as i16,
            (op::LDX | op::ST | op::STX, 0..=5) => -(rng.below(520) as i16),
            (_, 0..=5) => rng.below(8) as i16 - 4,
            _ => rng.next() as i16,
        };
        let imm = match rng.below(4) {
            0 => rng.below(16) as i32 - 4,
            1 => [0x00, 0x01, 0x40, 0x41, 0x50, 0xa1, 0xe1, 0xf1, 16, 32, 64][rng.below(11) as usize],
            2 if code == 0x85 => [1, 2, 3, 5, 6, 7, 12, 23, 26, 28, 44, 51, 65, 130, 131, 132][rng.below(16) as usize],
            2 => rng.below(200) as i32, // shifts and the like
            _ => rng.next() as i32,
        };
        p.push(Insn::new(code, dst, src, off, imm));
        if code == 0x18 {
            p.push(Insn::new(0, 0, 0, 0, rng.next() as i32));
        }
    }
    p.push(Insn::exit());
    p
}

#[test]
fn random_programs_never_crash() {
    let mut rng = Rng::new(0x1234_5678_9abc_def1);
    let (mut ran, mut load_err, mut run_err) = (0, 0, 0);
    for round in 0..40_000u32 {
        let insns = random_program(&mut rng);
        let vm = Vm::empty();
        let (ctx, helpers, conf) = match round % 3 {
            0 => (CtxKind::Mem, HelperTable::conformance(), true),
            1 => (CtxKind::Mem, HelperTable::kernel(), false),
            _ => (CtxKind::Xdp, HelperTable::kernel(), false),
        };
        let id = match vm.load_insns("rand", insns, Vec::new(), ProgType::Unspec, ctx, helpers, conf) {
            Ok(id) => id,
            Err(_) => {
                load_err += 1;
                continue;
            }
        };
        let data: Vec<u8> = (0..rng.below(64)).map(|_| rng.next() as u8).collect();
        match vm.run(id, &ProgInput::packet(&data)) {
            Ok(_) => ran += 1,
            Err(_) => run_err += 1,
        }
    }
    eprintln!("random programs: {ran} ran, {load_err} refused at load, {run_err} stopped with an error");
    // The generator must exercise all three outcomes.
    assert!(ran > 2000 && load_err > 1000 && run_err > 1000, "ran {ran}, load errors {load_err}, run errors {run_err}");
}
