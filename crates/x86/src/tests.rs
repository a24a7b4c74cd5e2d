//! Every encoder is checked by decoding its bytes with iced-x86 (an independent decoder) and
//! comparing the disassembly with the text we meant to emit, written by hand. Where the kernel
//! JIT fixes a particular encoding, the exact bytes are checked too (from the Intel SDM
//! opcode tables / the kernel's `bpf_jit_comp.c`).

use super::*;
use iced_x86::{Decoder, DecoderOptions, Formatter, IntelFormatter};
use Reg::*;
use Width::*;

fn formatter() -> IntelFormatter {
    let mut f = IntelFormatter::new();
    let o = f.options_mut();
    o.set_hex_prefix("0x");
    o.set_hex_suffix("");
    o.set_uppercase_hex(false);
    o.set_space_after_operand_separator(true);
    o.set_branch_leading_zeros(false);
    o.set_show_branch_size(false);
    o.set_signed_immediate_operands(false);
    f
}

/// Disassemble all of `code` ("; "-separated), failing on invalid or trailing bytes.
fn dis(code: &[u8]) -> String {
    let mut d = Decoder::with_ip(64, code, 0, DecoderOptions::NONE);
    let mut f = formatter();
    let mut out = Vec::new();
    while d.can_decode() {
        let i = d.decode();
        assert!(!i.is_invalid(), "invalid instruction in {}", hex(code));
        let mut s = String::new();
        f.format(&i, &mut s);
        out.push(s);
    }
    out.join("; ")
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect::<Vec<_>>().join(" ")
}

fn check(emit: impl FnOnce(&mut Asm), want: &str) -> Vec<u8> {
    let mut a = Asm::new();
    emit(&mut a);
    let got = dis(&a.code);
    assert_eq!(got, want, "bytes {}", hex(&a.code));
    a.code
}

fn check_bytes(emit: impl FnOnce(&mut Asm), want_text: &str, want_bytes: &[u8]) {
    let b = check(emit, want_text);
    assert_eq!(b, want_bytes, "text {want_text}: got {} want {}", hex(&b), hex(want_bytes));
}

fn r32(r: Reg) -> String {
    match r {
        Rax => "eax".into(),
        Rcx => "ecx".into(),
        Rdx => "edx".into(),
        Rbx => "ebx".into(),
        Rsp => "esp".into(),
        Rbp => "ebp".into(),
        Rsi => "esi".into(),
        Rdi => "edi".into(),
        _ => format!("r{}d", r.num()),
    }
}
fn r16(r: Reg) -> String {
    match r {
        Rax | Rcx | Rdx | Rbx | Rsp | Rbp | Rsi | Rdi => r32(r)[1..].to_string(),
        _ => format!("r{}w", r.num()),
    }
}
fn r8(r: Reg) -> String {
    match r {
        Rax => "al".into(),
        Rcx => "cl".into(),
        Rdx => "dl".into(),
        Rbx => "bl".into(),
        Rsp => "spl".into(),
        Rbp => "bpl".into(),
        Rsi => "sil".into(),
        Rdi => "dil".into(),
        _ => format!("r{}b", r.num()),
    }
}
fn rw(w: Width, r: Reg) -> String {
    match w {
        W32 => r32(r),
        W64 => r.name64().to_string(),
    }
}
fn mem_text(m: &Mem) -> String {
    let mut s = format!("[{}", m.base.name64());
    if let Some((i, sc)) = m.index {
        s += &format!("+{}", i.name64());
        if sc != 1 {
            s += &format!("*{sc}");
        }
    }
    if m.disp > 0 {
        s += &if m.disp <= 9 { format!("+{}", m.disp) } else { format!("+0x{:x}", m.disp) };
    } else if m.disp < 0 {
        let d = -(m.disp as i64);
        s += &if d <= 9 { format!("-{d}") } else { format!("-0x{d:x}") };
    }
    s + "]"
}

/// An immediate as iced prints it for a `w`-bit operand: unsigned, 0..9 in decimal.
fn ih(w: Width, v: i64) -> String {
    let u = if w == W32 { v as u32 as u64 } else { v as u64 };
    if u <= 9 { format!("{u}") } else { format!("0x{u:x}") }
}

const DISPS: [i32; 6] = [0, 8, -8, 127, -128, 0x1234];

// ---- exhaustive register/operand sweeps ------------------------------------------------------

#[test]
fn mov_rr_all_pairs() {
    for w in [W32, W64] {
        for d in Reg::ALL {
            for s in Reg::ALL {
                check(|a| a.mov_rr(w, d, s), &format!("mov {}, {}", rw(w, d), rw(w, s)));
            }
        }
    }
}

#[test]
fn alu_rr_all_pairs() {
    let ops = [
        (Alu::Add, "add"),
        (Alu::Or, "or"),
        (Alu::Adc, "adc"),
        (Alu::Sbb, "sbb"),
        (Alu::And, "and"),
        (Alu::Sub, "sub"),
        (Alu::Xor, "xor"),
        (Alu::Cmp, "cmp"),
    ];
    for (op, name) in ops {
        for w in [W32, W64] {
            for d in Reg::ALL {
                for s in [Rax, Rsi, R8, R15] {
                    check(|a| a.alu_rr(op, w, d, s), &format!("{name} {}, {}", rw(w, d), rw(w, s)));
                }
            }
        }
    }
}

#[test]
fn loads_stores_all_bases_and_disps() {
    for base in Reg::ALL {
        for disp in DISPS {
            let m = Mem::new(base, disp);
            let mt = mem_text(&m);
            for r in [Rax, Rdi, R9, R13] {
                check(|a| a.load(Size::S8, r, m), &format!("movzx {}, byte ptr {mt}", r.name64()));
                check(|a| a.load(Size::S16, r, m), &format!("movzx {}, word ptr {mt}", r.name64()));
                check(|a| a.load(Size::S32, r, m), &format!("mov {}, {mt}", r32(r)));
                check(|a| a.load(Size::S64, r, m), &format!("mov {}, {mt}", r.name64()));
                check(|a| a.load_sx(Size::S8, r, m), &format!("movsx {}, byte ptr {mt}", r.name64()));
                check(|a| a.load_sx(Size::S16, r, m), &format!("movsx {}, word ptr {mt}", r.name64()));
                check(|a| a.load_sx(Size::S32, r, m), &format!("movsxd {}, {mt}", r.name64()));
                check(|a| a.movzx_load32(Size::S8, r, m), &format!("movzx {}, byte ptr {mt}", r32(r)));
                check(|a| a.store(Size::S8, m, r), &format!("mov {mt}, {}", r8(r)));
                check(|a| a.store(Size::S16, m, r), &format!("mov {mt}, {}", r16(r)));
                check(|a| a.store(Size::S32, m, r), &format!("mov {mt}, {}", r32(r)));
                check(|a| a.store(Size::S64, m, r), &format!("mov {mt}, {}", r.name64()));
                check(|a| a.lea(W64, r, m), &format!("lea {}, {mt}", r.name64()));
            }
            // Byte stores of sil/dil/bpl/spl need a REX prefix, else they would mean dh/bh/ch/ah.
            for r in [Rsp, Rbp, Rsi, Rdi] {
                check(|a| a.store(Size::S8, m, r), &format!("mov {mt}, {}", r8(r)));
            }
            check(|a| a.store_imm(Size::S8, m, -1), &format!("mov byte ptr {mt}, 0xff"));
            check(|a| a.store_imm(Size::S16, m, 0x1234), &format!("mov word ptr {mt}, 0x1234"));
            check(|a| a.store_imm(Size::S32, m, 7), &format!("mov dword ptr {mt}, 7"));
            check(|a| a.store_imm(Size::S64, m, -2), &format!("mov qword ptr {mt}, 0xfffffffffffffffe"));
        }
    }
}

#[test]
fn indexed_memory() {
    for base in Reg::ALL {
        for idx in [Rax, Rbp, R12, R13, R9] {
            for sc in [1u8, 2, 4, 8] {
                let m = Mem::indexed(base, idx, sc, -0x40);
                check(|a| a.load(Size::S64, R11, m), &format!("mov r11, {}", mem_text(&m)));
            }
        }
    }
}

// ---- exact kernel encodings -------------------------------------------------------------------

#[test]
fn kernel_encoding_choices() {
    // mov r/m, r form (0x89), as EMIT_mov.
    check_bytes(|a| a.mov_rr(W64, Rax, Rdi), "mov rax, rdi", &[0x48, 0x89, 0xf8]);
    check_bytes(|a| a.mov_rr(W64, Rbp, Rsp), "mov rbp, rsp", &[0x48, 0x89, 0xe5]);
    // le32 zero-extension: mov r13d, r13d = 45 89 ed.
    check_bytes(|a| a.mov_rr(W32, R13, R13), "mov r13d, r13d", &[0x45, 0x89, 0xed]);
    // [rdi+0] keeps a disp8, like emit_insn_suffix.
    check_bytes(|a| a.load(Size::S64, Rax, Mem::new(Rdi, 0)), "mov rax, [rdi]", &[0x48, 0x8b, 0x47, 0x00]);
    check_bytes(|a| a.load(Size::S32, Rax, Mem::new(Rbp, -8)), "mov eax, [rbp-8]", &[0x8b, 0x45, 0xf8]);
    check_bytes(
        |a| a.load(Size::S64, Rax, Mem::new(Rdi, 0x200)),
        "mov rax, [rdi+0x200]",
        &[0x48, 0x8b, 0x87, 0x00, 0x02, 0x00, 0x00],
    );
    // byte load is movzx with REX.W.
    check_bytes(|a| a.load(Size::S8, Rsi, Mem::new(Rdi, 1)), "movzx rsi, byte ptr [rdi+1]", &[0x48, 0x0f, 0xb6, 0x77, 0x01]);
    // ALU imm forms.
    check_bytes(|a| a.alu_ri(Alu::Add, W64, Rdi, 1), "add rdi, 1", &[0x48, 0x83, 0xc7, 0x01]);
    check_bytes(|a| a.alu_ri(Alu::Add, W64, Rax, 0x1000), "add rax, 0x1000", &[0x48, 0x05, 0x00, 0x10, 0x00, 0x00]);
    check_bytes(|a| a.alu_ri(Alu::And, W32, Rsi, 0x1000), "and esi, 0x1000", &[0x81, 0xe6, 0x00, 0x10, 0x00, 0x00]);
    check_bytes(|a| a.alu_ri(Alu::Sub, W64, Rsp, 0x10), "sub rsp, 0x10", &[0x48, 0x83, 0xec, 0x10]);
    check_bytes(|a| a.alu_ri32(Alu::Sub, W64, Rsp, 0x10), "sub rsp, 0x10", &[0x48, 0x81, 0xec, 0x10, 0, 0, 0]);
    check_bytes(|a| a.alu_ri(Alu::Cmp, W32, Rax, 1000), "cmp eax, 0x3e8", &[0x3d, 0xe8, 0x03, 0, 0]);
    // cmp_ri / test_ri never use the rax short forms (as the kernel's jump lowering).
    check_bytes(|a| a.cmp_ri(W32, Rax, 1000), "cmp eax, 0x3e8", &[0x81, 0xf8, 0xe8, 0x03, 0, 0]);
    check_bytes(|a| a.cmp_ri(W64, R8, -1), "cmp r8, 0xffffffffffffffff", &[0x49, 0x83, 0xf8, 0xff]);
    check_bytes(|a| a.test_ri(W64, Rax, 2), "test rax, 2", &[0x48, 0xf7, 0xc0, 2, 0, 0, 0]);
    check_bytes(|a| a.shift16_ri(Shift::Ror, Rdx, 8), "ror dx, 8", &[0x66, 0xc1, 0xca, 0x08]);
    // Immediates.
    check_bytes(|a| a.mov_imm32(true, Rax, 0), "xor eax, eax", &[0x31, 0xc0]);
    check_bytes(|a| a.mov_imm32(true, R8, 5), "mov r8d, 5", &[0x41, 0xb8, 5, 0, 0, 0]);
    check_bytes(|a| a.mov_imm32(true, Rdi, -1), "mov rdi, 0xffffffffffffffff", &[0x48, 0xc7, 0xc7, 0xff, 0xff, 0xff, 0xff]);
    check_bytes(|a| a.mov_imm32(false, Rdi, -1), "mov edi, 0xffffffff", &[0xbf, 0xff, 0xff, 0xff, 0xff]);
    check_bytes(
        |a| a.movabs(R15, 0x1122334455667788),
        "mov r15, 0x1122334455667788",
        &[0x49, 0xbf, 0x88, 0x77, 0x66, 0x55, 0x44, 0x33, 0x22, 0x11],
    );
    check(|a| a.mov_imm64(Rax, 0xffff_ffff), "mov eax, 0xffffffff");
    check(|a| a.mov_imm64(Rax, u64::MAX), "mov rax, 0xffffffffffffffff");
    check(|a| a.mov_imm64(Rax, 1 << 40), "mov rax, 0x10000000000");
    // Shift by 1 uses D1.
    check_bytes(|a| a.shift_ri(Shift::Shl, W64, Rax, 1), "shl rax, 1", &[0x48, 0xd1, 0xe0]);
    check_bytes(|a| a.shift_ri(Shift::Sar, W32, R9, 3), "sar r9d, 3", &[0x41, 0xc1, 0xf9, 3]);
    // Byte swaps.
    check_bytes(|a| a.rol16_ri(Rbx, 8), "rol bx, 8", &[0x66, 0xc1, 0xc3, 0x08]);
    check_bytes(|a| a.rol16_ri(R14, 8), "rol r14w, 8", &[0x66, 0x41, 0xc1, 0xc6, 0x08]);
    check_bytes(|a| a.bswap(W64, R13), "bswap r13", &[0x49, 0x0f, 0xcd]);
    check_bytes(|a| a.bswap(W32, Rdi), "bswap edi", &[0x0f, 0xcf]);
    // Prologue shapes.
    check_bytes(|a| a.push(R15), "push r15", &[0x41, 0x57]);
    check_bytes(|a| a.pop(Rbx), "pop rbx", &[0x5b]);
    check_bytes(|a| a.endbr64(), "endbr64", &[0xf3, 0x0f, 0x1e, 0xfa]);
}

// ---- one check per remaining shape ----------------------------------------------------------

#[test]
fn alu_immediates_and_unary() {
    for w in [W32, W64] {
        for r in Reg::ALL {
            let n = rw(w, r);
            check(|a| a.alu_ri(Alu::Xor, w, r, -5), &format!("xor {n}, {}", ih(w, -5)));
            check(|a| a.alu_ri(Alu::Or, w, r, 0x12345), &format!("or {n}, 0x12345"));
            check(|a| a.alu_ri8(Alu::Add, w, r, 127), &format!("add {n}, 0x7f"));
            check(|a| a.alu_ri32(Alu::Cmp, w, r, -0x1000), &format!("cmp {n}, {}", ih(w, -0x1000)));
            check(|a| a.test_ri(w, r, 0x100), &format!("test {n}, 0x100"));
            check(|a| a.test_rr(w, r, R10), &format!("test {n}, {}", rw(w, R10)));
            check(|a| a.cmp_rr(w, r, Rdx), &format!("cmp {n}, {}", rw(w, Rdx)));
            check(|a| a.cmp_ri(w, r, 3), &format!("cmp {n}, 3"));
            check(|a| a.not(w, r), &format!("not {n}"));
            check(|a| a.neg(w, r), &format!("neg {n}"));
            check(|a| a.mul(w, r), &format!("mul {n}"));
            check(|a| a.div(w, r), &format!("div {n}"));
            check(|a| a.idiv(w, r), &format!("idiv {n}"));
            check(|a| a.imul_rr(w, r, R12), &format!("imul {n}, {}", rw(w, R12)));
            // iced prints `imul r, r, imm` as `imul r, imm`, so use a different source.
            let s = if r == Rcx { Rdx } else { Rcx };
            check(|a| a.imul_rri(w, r, s, 10), &format!("imul {n}, {}, 0xa", rw(w, s)));
            check(|a| a.imul_rri(w, r, s, 1000), &format!("imul {n}, {}, 0x3e8", rw(w, s)));
            check(|a| a.popcnt(w, r, R9), &format!("popcnt {n}, {}", rw(w, R9)));
            check(|a| a.bswap(w, r), &format!("bswap {n}"));
            check(|a| a.xchg_rr(w, r, Rsi), &format!("xchg {n}, {}", rw(w, Rsi)));
            check(|a| a.mov_rr(w, r, r), &format!("mov {n}, {n}"));
        }
        check(|a| a.cdq_cqo(w), if w == W64 { "cqo" } else { "cdq" });
    }
}

#[test]
fn moves_and_extensions() {
    for r in Reg::ALL {
        check(|a| a.mov_r32_imm32(r, 0xdeadbeef), &format!("mov {}, 0xdeadbeef", r32(r)));
        check(|a| a.mov_r64_simm32(r, -3), &format!("mov {}, 0xfffffffffffffffd", r.name64()));
        check(|a| a.movabs(r, 0x8000_0000_0000_0001), &format!("mov {}, 0x8000000000000001", r.name64()));
        for s in [Rax, Rsi, Rdi, Rbp, R8, R15] {
            check(|a| a.movzx_rr(W32, Size::S8, r, s), &format!("movzx {}, {}", r32(r), r8(s)));
            check(|a| a.movzx_rr(W32, Size::S16, r, s), &format!("movzx {}, {}", r32(r), r16(s)));
            check(|a| a.movzx_rr(W64, Size::S8, r, s), &format!("movzx {}, {}", r.name64(), r8(s)));
            check(|a| a.movsx_rr(W32, Size::S8, r, s), &format!("movsx {}, {}", r32(r), r8(s)));
            check(|a| a.movsx_rr(W32, Size::S16, r, s), &format!("movsx {}, {}", r32(r), r16(s)));
            check(|a| a.movsx_rr(W64, Size::S8, r, s), &format!("movsx {}, {}", r.name64(), r8(s)));
            check(|a| a.movsx_rr(W64, Size::S16, r, s), &format!("movsx {}, {}", r.name64(), r16(s)));
            check(|a| a.movsx_rr(W64, Size::S32, r, s), &format!("movsxd {}, {}", r.name64(), r32(s)));
            for (cc, name) in [(Cond::E, "e"), (Cond::A, "a"), (Cond::L, "l"), (Cond::Ge, "ge")] {
                check(|a| a.cmov(cc, W64, r, s), &format!("cmov{name} {}, {}", r.name64(), s.name64()));
                check(|a| a.cmov(cc, W32, r, s), &format!("cmov{name} {}, {}", r32(r), r32(s)));
            }
        }
        check(|a| a.setcc(Cond::Ne, r), &format!("setne {}", r8(r)));
        check(|a| a.setcc(Cond::B, r), &format!("setb {}", r8(r)));
    }
}

#[test]
fn shifts_rotates_bmi() {
    let ops = [
        (Shift::Rol, "rol"),
        (Shift::Ror, "ror"),
        (Shift::Shl, "shl"),
        (Shift::Shr, "shr"),
        (Shift::Sar, "sar"),
    ];
    for w in [W32, W64] {
        for r in Reg::ALL {
            let n = rw(w, r);
            for (op, name) in ops {
                check(|a| a.shift_ri(op, w, r, 1), &format!("{name} {n}, 1"));
                check(|a| a.shift_ri(op, w, r, 13), &format!("{name} {n}, 0xd"));
                check(|a| a.shift_cl(op, w, r), &format!("{name} {n}, cl"));
            }
            for s in [Rax, Rcx, R11, R15] {
                for c in [Rdx, Rsp, R9] {
                    let (sn, cn) = (rw(w, s), rw(w, c));
                    check(|a| a.shlx(w, r, s, c), &format!("shlx {n}, {sn}, {cn}"));
                    check(|a| a.shrx(w, r, s, c), &format!("shrx {n}, {sn}, {cn}"));
                    check(|a| a.sarx(w, r, s, c), &format!("sarx {n}, {sn}, {cn}"));
                    check(|a| a.bextr(w, r, s, c), &format!("bextr {n}, {sn}, {cn}"));
                }
                check(|a| a.rorx(w, r, s, 7), &format!("rorx {n}, {}, 7", rw(w, s)));
            }
        }
    }
    for r in Reg::ALL {
        check(|a| a.rol16_ri(r, 8), &format!("rol {}, 8", r16(r)));
    }
}

#[test]
fn atomics_and_movbe() {
    for base in [Rdi, Rbp, R12, R13, Rsp] {
        for disp in [0, -16, 0x400] {
            let m = Mem::new(base, disp);
            let mt = mem_text(&m);
            for r in [Rax, Rsi, R11, R14] {
                for (size, n) in [(Size::S32, r32(r)), (Size::S64, r.name64().to_string())] {
                    check(|a| a.lock_alu(Alu::Add, size, m, r), &format!("lock add {mt}, {n}"));
                    check(|a| a.lock_alu(Alu::And, size, m, r), &format!("lock and {mt}, {n}"));
                    check(|a| a.lock_alu(Alu::Or, size, m, r), &format!("lock or {mt}, {n}"));
                    check(|a| a.lock_alu(Alu::Xor, size, m, r), &format!("lock xor {mt}, {n}"));
                    check(|a| a.lock_xadd(size, m, r), &format!("lock xadd {mt}, {n}"));
                    check(|a| a.lock_xchg(size, m, r), &format!("lock xchg {mt}, {n}"));
                    check(|a| a.lock_cmpxchg(size, m, r), &format!("lock cmpxchg {mt}, {n}"));
                    check(|a| a.movbe_load(size, r, m), &format!("movbe {n}, {mt}"));
                    check(|a| a.movbe_store(size, m, r), &format!("movbe {mt}, {n}"));
                }
                check(|a| a.movbe_load(Size::S16, r, m), &format!("movbe {}, {mt}", r16(r)));
                check(|a| a.movbe_store(Size::S16, m, r), &format!("movbe {mt}, {}", r16(r)));
            }
            check(|a| a.prefetcht0(m), &format!("prefetcht0 {mt}"));
            check(|a| a.call_m(m), &format!("call qword ptr {mt}"));
        }
    }
}

#[test]
fn jit_special_forms() {
    // The fixed encodings the x86-64 JIT takes from the kernel's bpf_jit_comp.c.
    // (iced shows a rip-relative operand as its absolute address, from ip 0.)
    check_bytes(|a| a.lea_rip(R11, 0x10), "lea r11, [0x17]", &[0x4c, 0x8d, 0x1d, 0x10, 0, 0, 0]);
    check_bytes(|a| a.add_r_gs_abs32(Rdi, 0x1f000), "add rdi, gs:[0x1f000]", &[0x65, 0x48, 0x03, 0x3c, 0x25, 0x00, 0xf0, 0x01, 0x00]);
    check_bytes(|a| a.add_r_gs_abs32(R14, 0x1f000), "add r14, gs:[0x1f000]", &[0x65, 0x4c, 0x03, 0x34, 0x25, 0x00, 0xf0, 0x01, 0x00]);
    check_bytes(|a| a.load64_disp32(Rax, Rbp, -24), "mov rax, [rbp-0x18]", &[0x48, 0x8b, 0x85, 0xe8, 0xff, 0xff, 0xff]);
    check_bytes(|a| a.alu_m0_i8(Alu::Add, W64, Rax, 1), "add qword ptr [rax], 1", &[0x48, 0x83, 0x00, 0x01]);
    check_bytes(|a| a.alu_m0_i8(Alu::Cmp, W64, Rax, 33), "cmp qword ptr [rax], 0x21", &[0x48, 0x83, 0x38, 0x21]);
    check_bytes(|a| a.cmp_mr(W32, Mem::new(Rsi, 0x4c), Rdx), "cmp [rsi+0x4c], edx", &[0x39, 0x56, 0x4c]);
    check_bytes(|a| a.cmp_mr(W32, Mem::new(Rsi, 0x138), Rdx), "cmp [rsi+0x138], edx", &[0x39, 0x96, 0x38, 0x01, 0, 0]);
    check_bytes(|a| a.alu_rr(Alu::Xor, W64, Rax, Rax), "xor rax, rax", &[0x48, 0x31, 0xc0]);
    check_bytes(|a| a.alu_ri8(Alu::Cmp, W64, Rax, 33), "cmp rax, 0x21", &[0x48, 0x83, 0xf8, 0x21]);
    for r in Reg::ALL {
        let n = r.name64();
        check(|a| a.lea_rip(r, -7), &format!("lea {n}, [0]"));
        check(|a| a.add_r_gs_abs32(r, 0x1000), &format!("add {n}, gs:[0x1000]"));
        if r.low() != 4 {
            check(|a| a.load64_disp32(Rcx, r, 8), &format!("mov rcx, [{n}+8]"));
            check(|a| a.cmp_mr(W64, Mem::new(r, 8), Rdx), &format!("cmp [{n}+8], rdx"));
        }
        if r.low() != 4 && r.low() != 5 {
            check(|a| a.alu_m0_i8(Alu::Sub, W64, r, -1), &format!("sub qword ptr [{n}], 0xffffffffffffffff"));
            check(|a| a.alu_m0_i8(Alu::Add, W32, r, 1), &format!("add dword ptr [{n}], 1"));
        }
    }
}

#[test]
fn control_flow_and_misc() {
    // Targets are shown as absolute addresses from ip 0 (0..9 in decimal).
    check_bytes(|a| a.jmp_rel8(3), "jmp 5", &[0xeb, 0x03]);
    check_bytes(|a| a.jmp_rel32(-5), "jmp 0", &[0xe9, 0xfb, 0xff, 0xff, 0xff]);
    check_bytes(|a| a.jcc_rel8(Cond::Ne, -2), "jne 0", &[0x75, 0xfe]);
    check_bytes(|a| a.jcc_rel32(Cond::Le, 0x100), "jle 0x106", &[0x0f, 0x8e, 0, 1, 0, 0]);
    let names = ["o", "no", "b", "ae", "e", "ne", "be", "a", "s", "ns", "p", "np", "l", "ge", "le", "g"];
    for (i, name) in names.iter().enumerate() {
        let cc = Cond::from_num(i as u8);
        check(|a| a.jcc_rel8(cc, 0), &format!("j{name} 2"));
        check(|a| a.jcc_rel32(cc, 0), &format!("j{name} 6"));
        assert_eq!(cc.negate().negate(), cc);
        assert_ne!(cc.negate(), cc);
    }
    check_bytes(|a| a.call_rel32(0x10), "call 0x15", &[0xe8, 0x10, 0, 0, 0]);
    for r in Reg::ALL {
        check(|a| a.call_r(r), &format!("call {}", r.name64()));
        check(|a| a.jmp_r(r), &format!("jmp {}", r.name64()));
        check(|a| a.push(r), &format!("push {}", r.name64()));
        check(|a| a.pop(r), &format!("pop {}", r.name64()));
    }
    check_bytes(|a| a.ret(), "ret", &[0xc3]);
    check_bytes(|a| a.leave(), "leave", &[0xc9]);
    check_bytes(|a| a.rep_movs(Size::S8), "rep movsb [rdi], [rsi]", &[0xf3, 0xa4]);
    check_bytes(|a| a.rep_movs(Size::S16), "rep movsw [rdi], [rsi]", &[0xf3, 0x66, 0xa5]);
    check_bytes(|a| a.rep_movs(Size::S32), "rep movsd [rdi], [rsi]", &[0xf3, 0xa5]);
    check_bytes(|a| a.rep_movs(Size::S64), "rep movsq [rdi], [rsi]", &[0xf3, 0x48, 0xa5]);
    check_bytes(|a| a.std(), "std", &[0xfd]);
    check_bytes(|a| a.cld(), "cld", &[0xfc]);
    check_bytes(|a| a.rep_stosb(), "rep stosb [rdi]", &[0xf3, 0xaa]);
    check_bytes(|a| a.lfence(), "lfence", &[0x0f, 0xae, 0xe8]);
    check_bytes(|a| a.nop(), "nop", &[0x90]);
    check(|a| a.int3(), "int3");
    check(|a| a.ud2(), "ud2");
    for n in 1..=20 {
        let mut a = Asm::new();
        a.nops(n);
        assert_eq!(a.len(), n);
        let text = dis(&a.code);
        // `66 90` is the two-byte nop; iced names it `xchg ax, ax`.
        assert!(text.split("; ").all(|i| i.starts_with("nop") || i == "xchg ax, ax"), "{n}: {text}");
    }
}

#[test]
fn feature_list_parsing() {
    let f = CpuFeatures::parse_list("popcnt, BMI2,,movbe").unwrap();
    assert!(f.has(Feature::Popcnt) && f.has(Feature::Bmi2) && f.has(Feature::Movbe));
    assert!(!f.has(Feature::Bmi1));
    let e = CpuFeatures::parse_list("popcnt,avx9").unwrap_err();
    assert_eq!(e.name, "avx9");
    assert_eq!(CpuFeatures::all().without(Feature::Bmi1).iter().count(), Feature::ALL.len() - 1);
    assert_eq!(f.to_string(), "popcnt,movbe,bmi2");
}

#[test]
fn host_features_agree_with_std() {
    let h = CpuFeatures::host();
    assert_eq!(h.has(Feature::Popcnt), std::is_x86_feature_detected!("popcnt"));
    assert_eq!(h.has(Feature::Bmi1), std::is_x86_feature_detected!("bmi1"));
    assert_eq!(h.has(Feature::Bmi2), std::is_x86_feature_detected!("bmi2"));
    assert_eq!(h.has(Feature::Lzcnt), std::is_x86_feature_detected!("lzcnt"));
    assert_eq!(h.has(Feature::Movbe), std::is_x86_feature_detected!("movbe"));
}
