//! A hand-written program with one site of every EInsn op: lowered, it must be accepted by
//! the running kernel's verifier, and BPF_PROG_TEST_RUN must return what our evaluator
//! computes for the lowered program. The program with sites (not lowered) must be rejected
//! by a kernel without kinsn support. Skips (with a message) where bpf(2) is unavailable.

mod harness;

use harness::{eval, Memory};
use kops_einsn::*;
use kops_isa::{op, Insn};
use kops_kinsn::lower;

fn program() -> Vec<Insn> {
    let mut p = vec![Insn::mov64_reg(6, 1)];
    let site = |p: &mut Vec<Insn>, s: [Insn; 2]| p.extend(s);
    site(&mut p, Memset::new(10, -64, 8, 8, 0).unwrap().site().unwrap());
    p.extend(Insn::ld_imm64(1, 0, 0x0123_4567_89ab_cdef));
    p.push(Insn::stx(op::DW, 10, 1, -8));
    site(&mut p, EndianLoad64::new(2, 10, -8).unwrap().site().unwrap());
    site(&mut p, EndianLoad32::new(3, 10, -8).unwrap().site().unwrap());
    site(&mut p, EndianLoad16::new(4, 10, -6).unwrap().site().unwrap());
    site(&mut p, Rotate64::new(2, 2, 5, 13, false).unwrap().site().unwrap());
    site(&mut p, Rotate32::new(3, 3, 5, 7, true).unwrap().site().unwrap());
    site(&mut p, Select::new(0, 2, 3, 4, false, false).unwrap().site().unwrap());
    site(&mut p, Extract::new(0, 0, 3, 5).unwrap().site().unwrap());
    site(&mut p, Popcount64::new(7, 2, 8, 9).unwrap().site().unwrap());
    site(&mut p, Popcount32::new(8, 3, 9).unwrap().site().unwrap());
    p.push(Insn::alu64_reg(op::ADD, 7, 8));
    site(&mut p, Memcpy::new(10, -32, 10, -64, 1, 8, 4, true).unwrap().site().unwrap());
    p.push(Insn::ldx(op::DW, 1, 10, -8));
    p.push(Insn::alu64_reg(op::XOR, 7, 1));
    site(&mut p, Prefetch::new(10, -8).unwrap().site().unwrap());
    site(&mut p, SpecBarrier.site().unwrap());
    site(&mut p, Extract::new(1, 7, 0, 32).unwrap().site().unwrap());
    p.push(Insn::alu64_reg(op::ADD, 0, 1));
    p.push(Insn::exit());
    p
}

#[test]
fn lowered_program_with_every_op_passes_the_kernel_verifier() {
    let p = program();
    let reg = registry();
    let sites = kops_kinsn::find_sites(&p).unwrap();
    assert_eq!(sites.len(), 14);
    let mut ids: Vec<u32> = sites.iter().map(|s| s.op_id).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 13, "one site of each op");
    let l = lower(&p, &[], &[], &[], &reg).unwrap();

    // Expected return value from our evaluator on the lowered program (without the exit).
    let mut mem = Memory { base: 0x10000, bytes: vec![0; 512] };
    let mut r = [0u64; 11];
    r[1] = 0xdead_0000; // ctx pointer: only copied
    r[10] = mem.base + 512;
    eval(&l.insns[..l.insns.len() - 1], &mut r, &mut mem).unwrap();
    let expected = r[0] as u32;

    if let Some(why) = kops_kernel::skip_reason() {
        eprintln!("SKIPPED: kernel verifier check: {why}");
        return;
    }
    let opts = kops_kernel::LoadOptions {
        name: "kinsn_all".into(),
        prog_type: 1, // BPF_PROG_TYPE_SOCKET_FILTER
        log_level: 1,
        ..Default::default()
    };
    let prog = kops_kernel::load_program(&l.insns, &opts, &[]).unwrap_or_else(|e| panic!("verifier rejected the lowered program: {e}"));
    eprintln!("verifier accepted {} sites lowered to {} instructions", sites.len(), l.insns.len());
    let pkt = [0u8; 64];
    let res = prog.test_run(&kops_kernel::TestRun { data_in: Some(&pkt), ..Default::default() }).unwrap();
    assert_eq!(res.retval, expected, "kernel result vs our evaluation of the lowered program");

    // The same program with its sites is not something a stock kernel understands.
    assert!(kops_kernel::load_program(&p, &opts, &[]).is_err());
}
