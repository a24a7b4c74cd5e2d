//! The JIT's output per eBPF instruction, shown as bytes and disassembled by yaxpeax-arm
//! (independent of our encoder), compared with what the kernel's arm64 JIT emits for the
//! same instruction (written here by hand from `bpf_jit_comp.c`).

use super::*;
use yaxpeax_arch::{Decoder, U8Reader};
use yaxpeax_arm::armv8::a64::InstDecoder;

struct NoHelpers;
impl Resolver for NoHelpers {
    fn helper(&self, id: i32) -> Option<u64> {
        // Helpers at a fixed user-space address per id.
        (0..1000).contains(&id).then(|| 0x7f00_0000_0000 + 0x40 * id as u64)
    }
    fn ld_imm64(&self, _: usize, lo: &Insn, hi: &Insn) -> Result<u64, String> {
        Ok((hi.imm as u32 as u64) << 32 | lo.imm as u32 as u64 | 0x1000_0000_0000)
    }
}

fn dis(code: &[u8]) -> Vec<String> {
    let d = InstDecoder::default();
    code.chunks_exact(4)
        .map(|b| match d.decode(&mut U8Reader::new(b)) {
            Ok(i) => i.to_string(),
            Err(e) => panic!("{:02x?} does not decode: {e}", b),
        })
        .collect()
}

fn compile_with(prog: &[Insn], o: &Arm64Options) -> Arm64Image {
    compile(prog, o, &NoHelpers).unwrap_or_else(|e| panic!("{e}"))
}

/// The native code of slot `pc`, disassembled ("; "-separated), printed with its bytes.
fn slot(prog: &[Insn], pc: usize, o: &Arm64Options) -> String {
    let img = compile_with(prog, o);
    let (s, e) = img.insn_ranges[pc];
    let bytes = &img.code[s as usize..e as usize];
    let text = dis(bytes).join("; ");
    println!("{:?} -> {} | {text}", prog[pc], bytes.iter().map(|b| format!("{b:02x}")).collect::<String>());
    text
}

/// Code of the first instruction of `[insn, exit]` (no divide rewrites: the instruction
/// as the kernel's JIT sees it after the verifier).
fn one(i: Insn) -> String {
    let o = Arm64Options { div_fixups: false, ..Arm64Options::default() };
    slot(&[i, Insn::exit()], 0, &o)
}

#[test]
fn alu_register_forms() {
    use op::*;
    let cases: Vec<(Insn, &str)> = vec![
        (Insn::alu64_reg(ADD, 1, 2), "add x0, x0, x1"),
        (Insn::alu32_reg(SUB, 0, 6), "sub w7, w7, w19"),
        (Insn::alu64_reg(AND, 6, 9), "and x19, x19, x22"),
        (Insn::alu64_reg(OR, 7, 8), "orr x20, x20, x21"),
        (Insn::alu32_reg(XOR, 3, 4), "eor w2, w2, w3"),
        (Insn::alu64_reg(MUL, 0, 1), "mul x7, x7, x0"),
        (Insn::alu64_reg(DIV, 0, 1), "udiv x7, x7, x0"),
        (Insn::alu32_reg(MOD, 0, 1), "udiv w10, w7, w0; msub w7, w10, w0, w7"),
        (Insn::alu64_reg(LSH, 5, 1), "lsl x4, x4, x0"),
        (Insn::alu32_reg(RSH, 5, 1), "lsr w4, w4, w0"),
        (Insn::alu64_reg(ARSH, 5, 1), "asr x4, x4, x0"),
        (Insn::mov64_reg(10, 1), "mov x25, x0"),
        (Insn::alu32_reg(MOV, 1, 10), "mov w0, w25"),
        (Insn::new(ALU64 | NEG, 2, 0, 0, 0), "neg x1, x1"),
        (Insn::new(ALU | NEG, 2, 0, 0, 0), "neg w1, w1"),
        // sdiv/smod (off = 1), movsx (off = 8/16/32)
        (Insn::new(ALU64 | DIV | X, 0, 1, 1, 0), "sdiv x7, x7, x0"),
        (Insn::new(ALU64 | MOD | X, 0, 1, 1, 0), "sdiv x10, x7, x0; msub x7, x10, x0, x7"),
        (Insn::new(ALU64 | MOV | X, 0, 1, 8, 0), "sxtb x7, w0"),
        (Insn::new(ALU64 | MOV | X, 0, 1, 16, 0), "sxth x7, w0"),
        (Insn::new(ALU64 | MOV | X, 0, 1, 32, 0), "sxtw x7, w0"),
        (Insn::new(ALU | MOV | X, 0, 1, 8, 0), "sxtb w7, w0"),
    ];
    for (i, want) in cases {
        assert_eq!(one(i), want, "{i:?}");
    }
}

#[test]
fn alu_immediates_as_the_kernel_chooses() {
    use op::*;
    let cases: Vec<(Insn, &str)> = vec![
        // emit_a64_mov_i
        (Insn::mov64_imm(0, 0), "mov x7, #0x0"),
        (Insn::mov64_imm(0, 0x1234_5678), "mov x7, #0x5678; movk x7, #0x1234, lsl #16"),
        (Insn::mov64_imm(0, -1), "mov x7, #0xffffffffffffffff"),
        (Insn::mov64_imm(0, -2), "mov x7, #0xfffffffffffffffe"),
        (Insn::mov64_imm(0, i32::MIN), "mov x7, #0xffffffff8000ffff; movk x7, #0x0"),
        (Insn::mov64_imm(0, -0x1234_5678), "mov x7, #0xffffffffedcbffff; movk x7, #0xa988"),
        (Insn::alu32_imm(MOV, 0, -1), "mov w7, #0xffffffff"),
        // add/sub: imm12, shifted imm12, the negated form, else through x10
        (Insn::alu64_imm(ADD, 1, 5), "add x0, x0, #0x5"),
        (Insn::alu64_imm(ADD, 1, 0x5000), "add x0, x0, #0x5, lsl #12"),
        (Insn::alu64_imm(ADD, 1, -5), "sub x0, x0, #0x5"),
        (Insn::alu64_imm(ADD, 1, 0x12345), "mov x10, #0x2345; movk x10, #0x1, lsl #16; add x0, x0, x10"),
        (Insn::alu32_imm(SUB, 1, 1), "sub w0, w0, #0x1"),
        (Insn::alu32_imm(SUB, 1, -0xfff), "add w0, w0, #0xfff"),
        (Insn::alu64_imm(SUB, 1, i32::MIN), "mov x10, #0xffffffff8000ffff; movk x10, #0x0; sub x0, x0, x10"),
        // logical immediates, else through x10
        (Insn::alu64_imm(AND, 0, 0xff), "and x7, x7, #0xff"),
        (Insn::alu64_imm(AND, 0, -16), "and x7, x7, #0xfffffffffffffff0"),
        (Insn::alu32_imm(OR, 0, 0x0f0f_0f0f), "orr w7, w7, #0xf0f0f0f"),
        // A negative immediate is sign-extended before the kernel's encoder sees it: never
        // a 32-bit logical immediate.
        (Insn::alu32_imm(AND, 0, -16), "mov w10, #0xfffffff0; and w7, w7, w10"),
        (Insn::alu64_imm(XOR, 0, 0x1234), "mov x10, #0x1234; eor x7, x7, x10"),
        (Insn::alu64_imm(AND, 0, -1), "mov x10, #0xffffffffffffffff; and x7, x7, x10"),
        (Insn::alu64_imm(MUL, 2, 3), "mov x10, #0x3; mul x1, x1, x10"),
        (Insn::alu64_imm(DIV, 2, 3), "mov x10, #0x3; udiv x1, x1, x10"),
        (Insn::alu32_imm(MOD, 2, 3), "mov w11, #0x3; udiv w10, w1, w11; msub w1, w10, w11, w1"),
        (Insn::alu64_imm(LSH, 2, 3), "lsl x1, x1, #0x3"),
        (Insn::alu64_imm(RSH, 2, 63), "lsr x1, x1, #0x3f"),
        (Insn::alu32_imm(ARSH, 2, 31), "asr w1, w1, #0x1f"),
        (Insn::alu64_imm(LSH, 2, 0), "lsr x1, x1, #0x0"),
    ];
    for (i, want) in cases {
        assert_eq!(one(i), want, "{i:?}");
    }
}

#[test]
fn byte_swaps() {
    use op::*;
    let cases: Vec<(Insn, &str)> = vec![
        (Insn::new(ALU | END | TO_BE, 1, 0, 0, 16), "rev16 w0, w0; uxth w0, w0"),
        (Insn::new(ALU | END | TO_BE, 1, 0, 0, 32), "rev w0, w0"),
        (Insn::new(ALU | END | TO_BE, 1, 0, 0, 64), "rev x0, x0"),
        (Insn::new(ALU | END | TO_LE, 1, 0, 0, 16), "uxth w0, w0"),
        (Insn::new(ALU | END | TO_LE, 1, 0, 0, 32), "lsr w0, w0, #0x0"),
        // bswap (ALU64): always reverses
        (Insn::new(ALU64 | END, 1, 0, 0, 16), "rev16 x0, x0; and x0, x0, #0xffff"),
        (Insn::new(ALU64 | END, 1, 0, 0, 32), "rev w0, w0"),
        (Insn::new(ALU64 | END, 1, 0, 0, 64), "rev x0, x0"),
    ];
    for (i, want) in cases {
        let got = one(i);
        // yaxpeax prints `ubfm x, x, #0, #15` either as ubfx or as the and-mask alias.
        let got = got.replace("ubfx x0, x0, #0x0, #0x10", "and x0, x0, #0xffff");
        assert_eq!(got, want, "{i:?}");
    }
    assert!(one(Insn::new(op::ALU | op::END | op::TO_LE, 1, 0, 0, 64)).is_empty());
}

#[test]
fn jumps_and_compares() {
    use op::*;
    // 0: jump, 1: mov, 2: exit. The branch goes to the exit's code (1 word ahead of the
    // mov); the exit is last, so it is the epilogue itself.
    let o = Arm64Options { div_fixups: false, ..Arm64Options::default() };
    let j = |i: Insn| slot(&[i, Insn::mov64_imm(0, 1), Insn::exit()], 0, &o);
    assert_eq!(j(Insn::jmp_reg(JEQ, 1, 2, 1)), "cmp x0, x1; b.eq $+0x8");
    assert_eq!(j(Insn::new(JMP32 | JGT | X, 1, 2, 1, 0)), "cmp w0, w1; b.hi $+0x8");
    assert_eq!(j(Insn::jmp_reg(JSET, 1, 2, 1)), "tst x0, x1; b.ne $+0x8");
    assert_eq!(j(Insn::jmp_imm(JSGT, 1, 5, 1)), "cmp x0, #0x5; b.gt $+0x8");
    assert_eq!(j(Insn::jmp_imm(JSLT, 1, -5, 1)), "cmn x0, #0x5; b.lt $+0x8");
    assert_eq!(j(Insn::jmp_imm(JLE, 1, 0x12345, 1)), "mov x10, #0x2345; movk x10, #0x1, lsl #16; cmp x0, x10; b.ls $+0x8");
    assert_eq!(j(Insn::jmp_imm(JSET, 1, 8, 1)), "tst x0, #0x8; b.ne $+0x8");
    assert_eq!(j(Insn::jmp_imm(JSET, 1, 0x1234, 1)), "mov x10, #0x1234; tst x0, x10; b.ne $+0x8");
    assert_eq!(j(Insn::jmp_imm(JSET, 1, -8, 1)), "tst x0, #0xfffffffffffffff8; b.ne $+0x8");
    assert_eq!(j(Insn::new(JMP32 | JSET | K, 1, 0, 1, -8)), "mov w10, #0xfffffff8; tst w0, w10; b.ne $+0x8");
    assert_eq!(j(Insn::new(JMP32 | JGE | K, 1, 0, 1, 7)), "cmp w0, #0x7; b.hs $+0x8");
    assert_eq!(j(Insn::new(JMP32 | JLT | K, 1, 0, 1, 7)), "cmp w0, #0x7; b.lo $+0x8");
    assert_eq!(j(Insn::new(JMP | JSGE | K, 1, 0, 1, 7)), "cmp x0, #0x7; b.ge $+0x8");
    assert_eq!(j(Insn::new(JMP | JSLE | K, 1, 0, 1, 7)), "cmp x0, #0x7; b.le $+0x8");
    assert_eq!(j(Insn::new(JMP | JNE | K, 1, 0, 1, 7)), "cmp x0, #0x7; b.ne $+0x8");
    assert_eq!(j(Insn::ja(1)), "b $+0x8");
    assert_eq!(j(Insn::new(JMP32 | JA, 0, 0, 0, 1)), "b $+0x8");
    // An exit that is not last branches to the epilogue.
    let img = compile_with(&[Insn::jmp_imm(JEQ, 1, 0, 1), Insn::exit(), Insn::mov64_imm(0, 1), Insn::exit()], &o);
    let (s, e) = img.insn_ranges[1];
    assert_eq!(dis(&img.code[s as usize..e as usize]), ["b $+0x8"]);
    let (s, e) = img.insn_ranges[3];
    assert_eq!(s, e, "the last exit falls through into the epilogue");
    // A jump out of the function is an error, not a wild branch.
    assert!(compile(&[Insn::ja(5), Insn::exit()], &o, &NoHelpers).is_err());
}

#[test]
fn loads_and_stores() {
    use op::*;
    // r10-relative accesses go through sp + stack size (here 16: one slot used).
    let o = Arm64Options { div_fixups: false, ..Arm64Options::default() };
    let s = |i: Insn| slot(&[Insn::st(DW, 10, -8, 0), i, Insn::exit()], 1, &o);
    assert_eq!(s(Insn::ldx(DW, 0, 10, -8)), "ldr x7, [sp, #0x8]");
    assert_eq!(s(Insn::ldx(W, 0, 10, -4)), "ldr w7, [sp, #0xc]");
    assert_eq!(s(Insn::stx(B, 10, 1, -1)), "strb w0, [sp, #0xf]");
    assert_eq!(s(Insn::st(H, 10, -2, 0x1234)), "mov x10, #0x1234; strh w10, [sp, #0xe]");
    assert_eq!(s(Insn::ldx(DW, 0, 1, 8)), "ldr x7, [x0, #0x8]");
    assert_eq!(s(Insn::ldx(H, 0, 1, 2)), "ldrh w7, [x0, #0x2]");
    assert_eq!(s(Insn::ldx(B, 0, 1, 4095)), "ldrb w7, [x0, #0xfff]");
    // Negative or misaligned offsets: register-offset form with the offset in x10/x11.
    assert_eq!(s(Insn::ldx(DW, 0, 1, -8)), "mov x10, #0xfffffffffffffff8; ldr x7, [x0, x10]");
    assert_eq!(s(Insn::ldx(W, 0, 1, 2)), "mov x10, #0x2; ldr w7, [x0, x10]");
    assert_eq!(s(Insn::stx(DW, 1, 2, -16)), "mov x10, #0xfffffffffffffff0; str x1, [x0, x10]");
    assert_eq!(s(Insn::st(W, 1, -4, 7)), "mov x10, #0x7; mov x11, #0xfffffffffffffffc; str w10, [x0, x11]");
    // Sign-extending loads.
    assert_eq!(s(Insn::new(LDX | MEMSX | B, 0, 1, 1, 0)), "ldrsb x7, [x0, #0x1]");
    assert_eq!(s(Insn::new(LDX | MEMSX | H, 0, 1, 2, 0)), "ldrsh x7, [x0, #0x2]");
    assert_eq!(s(Insn::new(LDX | MEMSX | W, 0, 1, 4, 0)), "ldrsw x7, [x0, #0x4]");
    // ld_imm64: emit_a64_mov_i64
    let l = |v: u64| slot(&[Insn::ld_imm64(0, 0, v)[0], Insn::ld_imm64(0, 0, v)[1], Insn::exit()], 0, &o);
    assert_eq!(l(0x1234), "mov w7, #0x1234");
    assert_eq!(l(0x1_0000_0000), "mov x7, #0x100000000");
    assert_eq!(l(0x1234_0000_5678_0000), "mov x7, #0x1234000000000000; movk x7, #0x5678, lsl #16");
    assert_eq!(l(0xffff_ffff_ffff_1234), "mov x7, #0xffffffffffff1234");
    assert_eq!(l(0xffff_1234_ffff_ffff), "mov x7, #0xffff1234ffffffff");
    assert_eq!(l(0x8000_0000_0000_0001), "mov x7, #0x8000000000000000; movk x7, #0x1");
}

#[test]
fn atomics_lse_and_exclusives() {
    use op::*;
    let at = |imm: i32, size: u8, off: i16, lse: bool| {
        let o = Arm64Options { div_fixups: false, lse, ..Arm64Options::default() };
        slot(&[Insn::new(STX | ATOMIC | size, 1, 2, off, imm), Insn::exit()], 0, &o)
    };
    let add = ADD as i32;
    let and = AND as i32;
    assert_eq!(at(add, DW, 0, true), "stadd x1, [x0]");
    assert_eq!(at(add, W, 8, true), "add x10, x0, #0x8; stadd w1, [x10]");
    assert_eq!(at(and, DW, 0, true), "mvn x11, x1; stclr x11, [x0]");
    assert_eq!(at(OR as i32, DW, 0, true), "stset x1, [x0]");
    assert_eq!(at(XOR as i32, DW, 0, true), "steor x1, [x0]");
    assert_eq!(at(add | FETCH, DW, 0, true), "ldaddal x1, x1, [x0]");
    assert_eq!(at(and | FETCH, W, 0, true), "mvn w11, w1; ldclral w11, w1, [x0]");
    assert_eq!(at(OR as i32 | FETCH, DW, 0, true), "ldsetal x1, x1, [x0]");
    assert_eq!(at(XOR as i32 | FETCH, DW, 0, true), "ldeoral x1, x1, [x0]");
    assert_eq!(at(XCHG, DW, 0, true), "swpal x1, x1, [x0]");
    assert_eq!(at(CMPXCHG, DW, -8, true), "sub x10, x0, #0x8; casal x7, x1, [x10]");
    assert_eq!(at(LOAD_ACQ, B, 0, true), "ldarb w0, [x1]");
    assert_eq!(at(LOAD_ACQ, DW, 16, false), "add x10, x1, #0x10; ldar x0, [x10]");
    assert_eq!(at(STORE_REL, H, -2, true), "sub x10, x0, #0x2; stlrh w1, [x10]");
    assert_eq!(at(STORE_REL, W, 0, true), "stlr w1, [x0]");
    assert_eq!(at(add, DW, 0, false), "ldxr x11, [x0]; add x11, x11, x1; stxr w12, x11, [x0]; cbnz w12, $-0xc");
    assert_eq!(at(add | FETCH, W, 0, false), "mov w9, w1; ldxr w1, [x0]; add w11, w1, w9; stlxr w12, w11, [x0]; cbnz w12, $-0xc; dmb ish");
    assert_eq!(at(XCHG, DW, 0, false), "mov x11, x1; ldxr x1, [x0]; stlxr w12, x11, [x0]; cbnz w12, $-0x8; dmb ish");
    assert_eq!(at(CMPXCHG, DW, 0, false), "mov x11, x7; ldxr x7, [x0]; eor x12, x7, x11; cbnz x12, $+0x10; stlxr w12, x1, [x0]; cbnz w12, $-0x10; dmb ish");
}

#[test]
fn prologue_epilogue_and_calls() {
    // Main function using r6 and the stack, calling helper 7 and a subprogram.
    use op::*;
    let prog = vec![
        Insn::mov64_reg(6, 1),                                   // 0
        Insn::st(DW, 10, -8, 1),                                 // 1
        Insn::call_helper(7),                                    // 2
        Insn::new(JMP | CALL, 0, PSEUDO_CALL, 0, 1),             // 3 -> 5
        Insn::exit(),                                            // 4
        Insn::mov64_imm(0, 3),                                   // 5: subprogram
        Insn::exit(),                                            // 6
    ];
    let o = Arm64Options { div_fixups: false, ..Arm64Options::default() };
    let img = compile_with(&prog, &o);
    assert_eq!(img.funcs.len(), 2);
    let f = &img.funcs[0];
    let text = dis(&img.code[f.code_start..f.code_start + f.prologue_len]);
    // yaxpeax names bti/paciasp by their hint numbers: bti jc = #38, paciasp = #25,
    // bti j = #36, autiasp = #29.
    assert_eq!(
        text,
        [
            "hint #0x26",
            "mov x9, x30",
            "nop",
            "hint #0x19",
            "stp x29, x30, [sp, #-0x10]!",
            "mov x29, sp",
            "stp xzr, x26, [sp, #-0x10]!",
            "mov x26, sp",
            "hint #0x24",
            "stp x19, x25, [sp, #-0x10]!",
            "mov x25, sp",
            "sub sp, sp, #0x10",
        ]
    );
    assert_eq!(o.prologue_offset(), 8, "tail calls enter at the bti j");
    let (s, e) = img.insn_ranges[2];
    assert_eq!(dis(&img.code[s as usize..e as usize]), ["mov x10, #0x1c0", "movk x10, #0x0, lsl #16", "movk x10, #0x7f00, lsl #32", "blr x10", "mov x7, x0"]);
    // The subprogram call is a direct `bl` to the subprogram's entry.
    let (s, e) = img.insn_ranges[3];
    let t = dis(&img.code[s as usize..e as usize]);
    let rel = img.funcs[1].code_start as i64 - s as i64;
    assert_eq!(t, [format!("bl $+{rel:#x}"), "mov x7, x0".to_string()]);
    // Epilogue after the last exit, then the PLT.
    let end = f.code_start + f.code_len;
    let mut tail = dis(&img.code[e as usize..end - 8]);
    let want = ["add sp, sp, #0x10", "ldp x19, x25, [sp], #0x10", "ldp xzr, x26, [sp], #0x10", "ldp x29, x30, [sp], #0x10", "mov x0, x7", "hint #0x1d", "ret"];
    assert_eq!(tail[..want.len()], want);
    assert_eq!(tail.split_off(tail.len() - 2), ["ldr x10, $+0x8", "br x10"]);
    assert!(tail.len() == want.len() || tail[want.len()..] == ["nop"], "{tail:?}");
    // The subprogram: no bti j, keeps the caller's x26, saves no register it does not use.
    let g = &img.funcs[1];
    let t = dis(&img.code[g.code_start..g.code_start + g.prologue_len]);
    assert_eq!(t, ["hint #0x26", "mov x9, x30", "nop", "hint #0x19", "stp x29, x30, [sp, #-0x10]!", "mov x29, sp", "stp x26, x26, [sp, #-0x10]!"]);
    // Every function is a whole number of 8-byte units (the PLT target is aligned).
    assert!(img.funcs.iter().all(|f| f.code_start % 8 == 0 && f.code_len % 8 == 0));
}

#[test]
fn bad_input_is_an_error() {
    use op::*;
    let o = Arm64Options::default();
    let cases: Vec<(Vec<Insn>, &str)> = vec![
        (vec![], "empty"),
        (vec![Insn::mov64_imm(0, 0)], "run past"),
        (vec![Insn::mov64_reg(11, 1), Insn::exit()], "above r10"),
        (vec![Insn::call_helper(5000), Insn::exit()], "unknown helper"),
        (vec![Insn::new(LD | ABS | W, 0, 0, 0, 0), Insn::exit()], "LD_ABS"),
        (vec![Insn::new(JMP | CALL, 0, 2, 0, 7), Insn::exit()], "kfunc"),
        (vec![Insn::new(0xff, 0, 0, 0, 0), Insn::exit()], "opcode"),
        (vec![Insn::new(ALU | END | TO_BE, 1, 0, 0, 24), Insn::exit()], "swap"),
        (vec![Insn::new(STX | ATOMIC | DW, 1, 2, 0, 0x42), Insn::exit()], "atomic"),
    ];
    for (p, what) in cases {
        match compile(&p, &o, &NoHelpers) {
            Err(e) => assert!(e.to_string().contains(what), "expected `{what}` in: {e}"),
            Ok(_) => panic!("{what}: compiled"),
        }
    }
}

#[test]
fn mov_i64_matches_the_kernel_rule() {
    // The number of words is 1 + the 16-bit blocks that differ from the fill value (0 for
    // movz, 0xffff for movn), with movn chosen when it leaves fewer, for 64-bit values.
    let mut x = 0x1234_5678_9abc_def1u64;
    for _ in 0..2000 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        for v in [x, x & 0xffff_0000_ffff_0000, x | 0xffff_0000_0000_ffff, x >> 40, !(x >> 40)] {
            let mut a = a64::Asm::new();
            mov_i64(&mut a, X(7), v).unwrap();
            let blocks = |fill: u64| (0..4).filter(|k| (v >> (16 * k)) & 0xffff != fill).count();
            let n = if v >> 32 == 0 {
                a.len() // 32-bit path: checked by the emulated runs
            } else {
                blocks(0xffff).min(blocks(0)).max(1)
            };
            assert_eq!(a.len(), n, "{v:#x}");
            // And the value is right: evaluate the movz/movn/movk words.
            let mut r = 0u64;
            for w in &a.words {
                let imm = ((w >> 5) & 0xffff) as u64;
                let sh = ((w >> 21) & 3) * 16;
                let sf = w >> 31;
                match (w >> 29) & 3 {
                    0 => r = !(imm << sh),
                    2 => r = imm << sh,
                    3 => r = (r & !(0xffff << sh)) | imm << sh,
                    _ => panic!("not a move"),
                }
                if sf == 0 {
                    r &= 0xffff_ffff;
                }
            }
            assert_eq!(r, v, "{v:#x}: {:x?}", a.words);
        }
    }
}

/// Arbitrary instruction words (random opcodes, registers, offsets, immediates, with a
/// bias to real opcodes and short programs) never panic the JIT: each compiles or is an
/// error naming an instruction.
#[test]
fn random_input_never_panics() {
    let mut x = 0x2545_f491_4f6c_dd1du64;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let codes: Vec<u8> = {
        let mut v = Vec::new();
        for cls in [op::ALU, op::ALU64, op::JMP, op::JMP32] {
            for o in (0..14).map(|k| k << 4) {
                v.push(cls | o);
                v.push(cls | o | op::X);
            }
        }
        for sz in [op::B, op::H, op::W, op::DW] {
            v.extend([op::LDX | op::MEM | sz, op::LDX | op::MEMSX | sz, op::ST | op::MEM | sz, op::STX | op::MEM | sz, op::STX | op::ATOMIC | sz]);
        }
        v.push(op::LD | op::IMM | op::DW);
        v
    };
    let (mut ok, mut err) = (0, 0);
    for round in 0..20000 {
        let n = 1 + (next() % 12) as usize;
        let mut p: Vec<Insn> = (0..n)
            .map(|_| {
                let r = next();
                let code = if r % 4 == 0 { r as u8 } else { codes[(r >> 8) as usize % codes.len()] };
                let imm = match (r >> 40) % 4 {
                    0 => (r >> 16) as i32,
                    1 => ((r >> 16) % 70) as i32 - 3,
                    2 => [op::ADD as i32, op::XCHG, op::CMPXCHG, op::OR as i32 | op::FETCH, i32::MIN, -1][(r >> 20) as usize % 6],
                    _ => 0,
                };
                Insn::new(code, ((r >> 12) % 13) as u8, ((r >> 20) % 13) as u8, ((r >> 28) as i16) % 8, imm)
            })
            .collect();
        if round % 2 == 0 {
            p.push(Insn::exit());
        }
        for o in [Arm64Options::default(), Arm64Options { lse: false, div_fixups: false, ..Arm64Options::default() }] {
            match compile(&p, &o, &NoHelpers) {
                Ok(img) => {
                    ok += 1;
                    assert_eq!(img.insn_ranges.len(), p.len());
                    assert!(img.link(0x4000_0000).is_ok());
                }
                Err(_) => err += 1,
            }
        }
    }
    assert!(ok > 1000 && err > 1000, "ok {ok} err {err}: the generator should hit both");
}
