//! One test per semantic rule of the interpreter, with expectations computed by hand from
//! the kernel's definitions (kernel/bpf/core.c, Documentation/bpf/standardization).

use kops_isa::asm::assemble;
use kops_isa::{op, Insn};
use kops_vm::{run_conformance, VmError};

fn run_asm(src: &str, mem: &[u8]) -> Result<u64, VmError> {
    let insns = assemble(src).unwrap_or_else(|e| panic!("assemble: {e}"));
    run_conformance(&insns, mem, None)
}

fn r0(src: &str) -> u64 {
    run_asm(src, &[]).unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn alu32_zero_extends() {
    assert_eq!(r0("mov %r0, -1\nadd32 %r0, 0\nexit"), 0xffff_ffff);
    assert_eq!(r0("mov %r0, -1\nmov32 %r0, %r0\nexit"), 0xffff_ffff);
    assert_eq!(r0("mov %r0, -1\nneg32 %r0\nexit"), 1);
    assert_eq!(r0("mov %r0, 3\nsub32 %r0, 5\nexit"), 0xffff_fffe);
    // mov32 of a negative immediate: low half only.
    assert_eq!(r0("mov32 %r0, -2\nexit"), 0xffff_fffe);
    // 64-bit immediates are sign-extended.
    assert_eq!(r0("mov %r0, 0\nadd %r0, -2\nexit"), 0xffff_ffff_ffff_fffe);
}

#[test]
fn shift_amounts_are_masked() {
    assert_eq!(r0("mov %r0, 1\nmov %r1, 65\nlsh %r0, %r1\nexit"), 2);
    assert_eq!(r0("mov %r0, 1\nmov %r1, 33\nlsh32 %r0, %r1\nexit"), 2);
    assert_eq!(r0("mov %r0, 8\nmov %r1, 66\nrsh %r0, %r1\nexit"), 2);
    // arsh32 works on the low half and zero-extends: 0x80000000 >> 4 = 0xf8000000.
    assert_eq!(r0("mov32 %r0, 0x80000000\nmov %r1, 36\narsh32 %r0, %r1\nexit"), 0xf800_0000);
    assert_eq!(r0("mov %r0, -16\narsh %r0, 2\nexit"), (-4i64) as u64);
}

#[test]
fn division_by_zero() {
    assert_eq!(r0("mov %r0, 7\nmov %r1, 0\ndiv %r0, %r1\nexit"), 0);
    assert_eq!(r0("mov %r0, 7\nmov %r1, 0\ndiv32 %r0, %r1\nexit"), 0);
    assert_eq!(r0("mov %r0, -7\nmov %r1, 0\nsdiv %r0, %r1\nexit"), 0);
    // mod by 0 leaves dst; the 32-bit form leaves its low half, zero-extended.
    assert_eq!(r0("mov %r0, -1\nmov %r1, 0\nmod %r0, %r1\nexit"), u64::MAX);
    assert_eq!(r0("mov %r0, -1\nmov %r1, 0\nmod32 %r0, %r1\nexit"), 0xffff_ffff);
    assert_eq!(r0("mov %r0, -1\nmov %r1, 0\nsmod32 %r0, %r1\nexit"), 0xffff_ffff);
    // The divisor of a 32-bit division is the low half: 0x1_00000000 is 0 there.
    assert_eq!(r0("mov %r0, 9\nlddw %r1, 0x100000000\ndiv32 %r0, %r1\nexit"), 0);
}

#[test]
fn signed_division() {
    assert_eq!(r0("mov %r0, -7\nsdiv %r0, 2\nexit"), (-3i64) as u64);
    assert_eq!(r0("mov %r0, -7\nsmod %r0, 2\nexit"), (-1i64) as u64);
    assert_eq!(r0("mov %r0, 7\nsmod %r0, -2\nexit"), 1);
    assert_eq!(r0("lddw %r0, 0x8000000000000000\nsdiv %r0, -1\nexit"), 0x8000_0000_0000_0000);
    assert_eq!(r0("lddw %r0, 0x8000000000000000\nsmod %r0, -1\nexit"), 0);
    assert_eq!(r0("mov32 %r0, 0x80000000\nsdiv32 %r0, -1\nexit"), 0x8000_0000);
    assert_eq!(r0("mov32 %r0, 0x80000000\nsmod32 %r0, -1\nexit"), 0);
    assert_eq!(r0("mov32 %r0, -7\nsdiv32 %r0, 2\nexit"), 0xffff_fffd);
    // Unsigned division treats the same bits as large numbers.
    assert_eq!(r0("mov %r0, -8\ndiv %r0, 2\nexit"), 0x7fff_ffff_ffff_fffc);
}

#[test]
fn sign_extending_moves() {
    assert_eq!(r0("mov %r1, 0x80\nmovsx864 %r0, %r1\nexit"), 0xffff_ffff_ffff_ff80);
    assert_eq!(r0("mov %r1, 0x8000\nmovsx1632 %r0, %r1\nexit"), 0xffff_8000);
    assert_eq!(r0("mov32 %r1, 0x80000000\nmovsx3264 %r0, %r1\nexit"), 0xffff_ffff_8000_0000);
    assert_eq!(r0("mov %r1, 0x7f\nmovsx864 %r0, %r1\nexit"), 0x7f);
}

#[test]
fn byte_swaps() {
    let v = "lddw %r0, 0x0102030405060708\n";
    assert_eq!(r0(&format!("{v}be16 %r0\nexit")), 0x0807);
    assert_eq!(r0(&format!("{v}be32 %r0\nexit")), 0x0807_0605);
    assert_eq!(r0(&format!("{v}be64 %r0\nexit")), 0x0807_0605_0403_0201);
    assert_eq!(r0(&format!("{v}le16 %r0\nexit")), 0x0708);
    assert_eq!(r0(&format!("{v}le32 %r0\nexit")), 0x0506_0708);
    assert_eq!(r0(&format!("{v}le64 %r0\nexit")), 0x0102_0304_0506_0708);
    assert_eq!(r0(&format!("{v}bswap16 %r0\nexit")), 0x0807);
    assert_eq!(r0(&format!("{v}bswap64 %r0\nexit")), 0x0807_0605_0403_0201);
}

#[test]
fn sign_extending_loads() {
    assert_eq!(r0("stb [%r10-1], 0xff\nldxsb %r0, [%r10-1]\nexit"), u64::MAX);
    assert_eq!(r0("sth [%r10-2], 0x8001\nldxsh %r0, [%r10-2]\nexit"), 0xffff_ffff_ffff_8001);
    assert_eq!(r0("stw [%r10-4], 0x7fffffff\nldxsw %r0, [%r10-4]\nexit"), 0x7fff_ffff);
    assert_eq!(r0("sth [%r10-2], 0x8001\nldxh %r0, [%r10-2]\nexit"), 0x8001);
    // st with a negative immediate writes the sign-extended value.
    assert_eq!(r0("stdw [%r10-8], -1\nldxdw %r0, [%r10-8]\nexit"), u64::MAX);
}

#[test]
fn atomics() {
    // fetch add 64: src gets the old value, memory the sum.
    assert_eq!(r0("stdw [%r10-8], 16\nmov %r1, 5\nlock fetch add [%r10-8], %r1\nmov %r0, %r1\nexit"), 16);
    assert_eq!(r0("stdw [%r10-8], 16\nmov %r1, 5\nlock add [%r10-8], %r1\nldxdw %r0, [%r10-8]\nexit"), 21);
    // 32-bit add wraps in 32 bits and leaves the neighbouring word alone.
    assert_eq!(
        r0("stdw [%r10-8], -1\nmov %r1, 1\nlock add32 [%r10-8], %r1\nldxdw %r0, [%r10-8]\nexit"),
        0xffff_ffff_0000_0000
    );
    // 32-bit fetch returns the old value zero-extended.
    assert_eq!(r0("stw [%r10-4], -1\nmov %r1, 0\nlock fetch or32 [%r10-4], %r1\nmov %r0, %r1\nexit"), 0xffff_ffff);
    assert_eq!(r0("stdw [%r10-8], 0xc\nmov %r1, 10\nlock and [%r10-8], %r1\nldxdw %r0, [%r10-8]\nexit"), 8);
    assert_eq!(r0("stdw [%r10-8], 0xc\nmov %r1, 10\nlock xor [%r10-8], %r1\nldxdw %r0, [%r10-8]\nexit"), 6);
    assert_eq!(r0("stdw [%r10-8], 3\nmov %r1, 9\nlock xchg [%r10-8], %r1\nldxdw %r0, [%r10-8]\nadd %r0, %r1\nexit"), 12);
    // cmpxchg: equal -> store src, r0 = old; not equal -> no store, r0 = old.
    assert_eq!(
        r0("stdw [%r10-8], 3\nmov %r0, 3\nmov %r1, 9\nlock cmpxchg [%r10-8], %r1\nldxdw %r2, [%r10-8]\nlsh %r0, 8\nor %r0, %r2\nexit"),
        0x309
    );
    assert_eq!(
        r0("stdw [%r10-8], 3\nmov %r0, 4\nmov %r1, 9\nlock cmpxchg [%r10-8], %r1\nldxdw %r2, [%r10-8]\nlsh %r0, 8\nor %r0, %r2\nexit"),
        0x303
    );
    // cmpxchg32 compares the low half of r0 only.
    assert_eq!(
        r0("stw [%r10-4], 3\nlddw %r0, 0x500000003\nmov %r1, 9\nlock cmpxchg32 [%r10-4], %r1\nldxw %r0, [%r10-4]\nexit"),
        9
    );
}

#[test]
fn jmp32_compares_low_halves() {
    assert_eq!(r0("lddw %r1, 0x100000000\nmov %r0, 1\njeq32 %r1, 0, +1\nmov %r0, 2\nexit"), 1);
    assert_eq!(r0("lddw %r1, 0x100000000\nmov %r0, 1\njeq %r1, 0, +1\nmov %r0, 2\nexit"), 2);
    // signed 32-bit: 0x80000000 is negative.
    assert_eq!(r0("mov32 %r1, 0x80000000\nmov %r0, 1\njslt32 %r1, 0, +1\nmov %r0, 2\nexit"), 1);
    // ...but positive as a 64-bit value.
    assert_eq!(r0("mov32 %r1, 0x80000000\nmov %r0, 1\njslt %r1, 0, +1\nmov %r0, 2\nexit"), 2);
    // jset
    assert_eq!(r0("mov %r1, 6\nmov %r0, 1\njset %r1, 1, +1\nmov %r0, 2\nexit"), 2);
}

#[test]
fn gotol_uses_imm() {
    // JMP32|JA with the offset in imm (+1), off = 0.
    let p = vec![
        Insn::mov64_imm(0, 1),
        Insn::new(op::JMP32 | op::JA, 0, 0, 0, 1),
        Insn::mov64_imm(0, 2),
        Insn::exit(),
    ];
    assert_eq!(run_conformance(&p, &[], None).unwrap(), 1);
}

#[test]
fn bpf_to_bpf_calls_have_own_frames() {
    let src = "\
mov %r6, 11
stdw [%r10-8], 1
call local f
ldxdw %r1, [%r10-8]
lsh %r0, 8
or %r0, %r1
lsh %r6, 16
or %r0, %r6
exit
f:
mov %r6, 99
stdw [%r10-8], 2
ldxdw %r0, [%r10-8]
exit";
    // callee saw its own slot (2), caller's slot kept 1, r6 restored to 11.
    assert_eq!(r0(src), (11 << 16) | (2 << 8) | 1);
}

#[test]
fn callee_may_use_callers_stack_through_a_pointer() {
    let src = "\
stdw [%r10-8], 5
mov %r1, %r10
add %r1, -8
call local f
ldxdw %r0, [%r10-8]
exit
f:
stdw [%r1], 42
exit";
    assert_eq!(r0(src), 42);
}

#[test]
fn call_depth_is_bounded() {
    let e = run_asm("call local f\nexit\nf:\ncall local f\nexit", &[]).unwrap_err();
    assert!(e.to_string().contains("call depth"), "{e}");
}

#[test]
fn callx_calls_helper_by_register() {
    assert_eq!(r0("mov %r1, 0\nmov %r2, 5\ncall %r2\nmov %r0, 2\nexit"), 0); // unwind(0) ends
    assert_eq!(r0("mov %r1, 7\nmov %r2, 5\ncall %r2\nexit"), 7);
}

#[test]
fn unwind_ends_from_nested_frames() {
    assert_eq!(r0("call local f\nmov %r0, 3\nexit\nf:\nmov %r1, 0\ncall 5\nmov %r0, 4\nexit"), 0);
}

#[test]
fn budget_stops_endless_loops() {
    let e = run_asm("ja -1\nexit", &[]).unwrap_err();
    assert!(matches!(e, VmError::Budget { pc: 0, .. }), "{e}");
    assert!(e.to_string().contains("budget"));
}

#[test]
fn memory_context() {
    let mem = [1u8, 2, 3, 4, 5, 6, 7, 8];
    assert_eq!(run_asm("ldxh %r0, [%r1+2]\nexit", &mem).unwrap(), 0x0403);
    assert_eq!(run_asm("mov %r0, %r2\nexit", &mem).unwrap(), 8);
    assert_eq!(run_asm("stb [%r1+7], 9\nldxdw %r0, [%r1]\nexit", &mem).unwrap(), 0x0907_0605_0403_0201);
}

#[test]
fn out_of_bounds_accesses_are_errors() {
    let mem = [0u8; 8];
    let e = run_asm("ldxw %r0, [%r1+6]\nexit", &mem).unwrap_err();
    match &e {
        VmError::BadAccess { pc, len, write, addr, .. } => {
            assert_eq!((*pc, *len, *write), (0, 4, false));
            assert!(*addr > 4096);
        }
        _ => panic!("{e}"),
    }
    // Null pointer (no memory: r1 = 0).
    let e = run_asm("ldxb %r0, [%r1]\nexit", &[]).unwrap_err();
    assert!(e.to_string().contains("null pointer"), "{e}");
    // Below the stack frame, and above it.
    let e = run_asm("ldxdw %r0, [%r10-520]\nexit", &[]).unwrap_err();
    assert!(matches!(e, VmError::BadAccess { .. }), "{e}");
    let e = run_asm("stdw [%r10], 1\nexit", &[]).unwrap_err();
    assert!(matches!(e, VmError::BadAccess { write: true, .. }), "{e}");
    // Arbitrary host address.
    let e = run_asm("lddw %r1, 0x7fff00001000\nldxdw %r0, [%r1]\nexit", &[]).unwrap_err();
    assert!(e.to_string().contains("insn 2"), "{e}");
    // Atomic on a wild pointer.
    let e = run_asm("mov %r1, 64\nmov %r2, 1\nlock add [%r1], %r2\nexit", &[]).unwrap_err();
    assert!(matches!(e, VmError::BadAccess { pc: 2, .. }), "{e}");
}

#[test]
fn invalid_programs_are_load_errors() {
    let bad = |p: Vec<Insn>| run_conformance(&p, &[], None).unwrap_err();
    // ld_imm64 missing its second half.
    let e = bad(vec![Insn::new(op::LD | op::IMM | op::DW, 0, 0, 0, 1)]);
    assert!(matches!(e, VmError::Load { pc: 0, .. }), "{e}");
    // jump out of range.
    let e = bad(vec![Insn::ja(5), Insn::exit()]);
    assert!(e.to_string().contains("invalid target"), "{e}");
    // unknown opcode.
    let e = bad(vec![Insn::new(0xff, 0, 0, 0, 0), Insn::exit()]);
    assert!(e.to_string().contains("invalid instruction"), "{e}");
    // write to r10.
    let e = bad(vec![Insn::mov64_imm(10, 0), Insn::exit()]);
    assert!(e.to_string().contains("r10"), "{e}");
    // unknown helper in the conformance set.
    let e = bad(vec![Insn::call_helper(99), Insn::exit()]);
    assert!(matches!(e, VmError::Load { pc: 0, .. }) && e.to_string().contains("unknown helper 99"), "{e}");
    // falling off the end.
    let e = bad(vec![Insn::mov64_imm(0, 0)]);
    assert!(e.to_string().contains("past the end"), "{e}");
}

/// Outside the conformance convention a write to r10 loads (the kernel verifier accepts
/// one only in code it proved unreachable): skipped, it changes nothing; reached, the run
/// fails naming it.
#[test]
fn unreachable_write_to_r10_loads_and_faults_when_reached() {
    use kops_object::ProgType;
    use kops_vm::{CtxKind, HelperTable, ProgInput, Vm};
    let src = "mov %r0, 3\njeq %r1, 0, +1\nexit\nmov %r10, 0\nexit";
    let insns = assemble(src).unwrap();
    let vm = Vm::empty();
    let id = vm.load_insns("dead_r10", insns, Vec::new(), ProgType::Unspec, CtxKind::Mem, HelperTable::kernel(), false).unwrap();
    // r1 is the context pointer (non-zero): the write is skipped.
    assert_eq!(vm.run(id, &ProgInput::packet(&[0u8; 8])).unwrap().r0, 3);
    // A program that reaches it.
    let insns = assemble("mov %r0, 3\nmov %r10, 0\nexit").unwrap();
    let id = vm.load_insns("live_r10", insns, Vec::new(), ProgType::Unspec, CtxKind::Mem, HelperTable::kernel(), false).unwrap();
    let e = vm.run(id, &ProgInput::packet(&[0u8; 8])).unwrap_err().to_string();
    assert!(e.contains("writes r10"), "{e}");
}
