//! Disassembler producing llvm-objdump-19's BPF syntax.
//!
//! [`format()`] prints what `llvm-objdump-19 -d` prints for the instruction (without the
//! address, raw bytes and the `<sym+off>` annotation objdump adds after jump targets).
//! LLVM has two dialects, chosen by `--mcpu`: without it (the default, [`Options::default`])
//! 32-bit loads and stores name 64-bit registers (`r0 = *(u32 *)(r1 + 0x4)`); with
//! `--mcpu=v3`/`v4` ([`Options::alu32`]) they name the 32-bit subregister
//! (`w0 = *(u32 *)(r1 + 0x4)`).
//!
//! Where llvm-objdump-19 cannot print a valid instruction we use our own text:
//! - 32-bit atomics other than `lock ... +=` print `<unknown>` in the default dialect
//!   (and a fetching 32-bit add prints as a non-fetching one); we print the alu32 form,
//!   which is what `--mcpu=v3` prints (`w0 = atomic_fetch_or((u32 *)(r1 + 0x0), w0)`).
//! - load-acquire / store-release (Linux 6.15) use LLVM 20's syntax:
//!   `r0 = load_acquire((u64 *)(r1 + 0x0))`, `store_release((u8 *)(r1 + 0x0), w2)`.
//! - the Kops kinsn sidecar (`ALU64|MOV|K`, src_reg 3) prints as
//!   `kinsn_sidecar 0x<payload>`, the 52-bit payload reassembled from
//!   dst_reg (bits 3:0), off (bits 19:4) and imm (bits 51:20).
//! - a kinsn call (`JMP|CALL`, src_reg 4) prints as LLVM prints it, `call <imm>`; with
//!   [`Options::kinsn`] as `kinsn_call <imm>` (`kinsn_call <imm>, <off>` when the BTF
//!   fd_array slot is not 0).
//! - invalid slots print as `<invalid: reason>`.

use crate::decode::{classify, Kind, LOAD_ACQ};
use crate::{op, Insn};

/// Dialect switches; the default is `llvm-objdump-19 -d` without `--mcpu`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Options {
    /// Print 32-bit loads/stores/atomics with `w` registers (`llvm-objdump --mcpu=v3`).
    pub alu32: bool,
    /// Print kinsn calls as `kinsn_call` instead of LLVM's plain `call`.
    pub kinsn: bool,
}

impl Options {
    pub const LLVM: Options = Options { alu32: false, kinsn: false };
    pub const LLVM_ALU32: Options = Options { alu32: true, kinsn: false };
}

/// The instruction at `pc` in llvm-objdump-19's default syntax. An `ld_imm64` reads the
/// slot after `pc` too; its second slot on its own prints as `<ld_imm64 second slot>`.
pub fn format(insns: &[Insn], pc: usize) -> String {
    format_with(insns, pc, Options::default())
}

/// Every instruction start with its text (second slots of `ld_imm64` skipped).
pub fn format_program(insns: &[Insn], opts: Options) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    let mut pc = 0;
    while pc < insns.len() {
        out.push((pc, format_with(insns, pc, opts)));
        pc += if insns[pc].is_ld_imm64() { 2 } else { 1 };
    }
    out
}

/// Signed hex as LLVM prints immediates: `0x5`, `-0x5`.
fn shex(v: i64) -> String {
    if v < 0 {
        format!("-{:#x}", v.unsigned_abs())
    } else {
        format!("{v:#x}")
    }
}

/// Jump offsets carry an explicit sign: `+0x3`, `-0x2`.
fn rel(v: i64) -> String {
    if v < 0 {
        shex(v)
    } else {
        format!("+{v:#x}")
    }
}

/// `(r1 + 0x4)` / `(r10 - 0x8)`, used inside memory operands.
fn addr(base: u8, off: i16) -> String {
    if off < 0 {
        format!("r{base} - {:#x}", (off as i32).unsigned_abs())
    } else {
        format!("r{base} + {off:#x}")
    }
}

fn size_name(size: u8, signed: bool) -> &'static str {
    match (size, signed) {
        (op::B, false) => "u8",
        (op::H, false) => "u16",
        (op::W, false) => "u32",
        (op::DW, false) => "u64",
        (op::B, true) => "s8",
        (op::H, true) => "s16",
        _ => "s32",
    }
}

const ALU_SYMS: &[(u8, &str)] = &[
    (op::ADD, "+="),
    (op::SUB, "-="),
    (op::MUL, "*="),
    (op::DIV, "/="),
    (op::OR, "|="),
    (op::AND, "&="),
    (op::LSH, "<<="),
    (op::RSH, ">>="),
    (op::MOD, "%="),
    (op::XOR, "^="),
    (op::MOV, "="),
    (op::ARSH, "s>>="),
];

const JMP_SYMS: &[(u8, &str)] = &[
    (op::JEQ, "=="),
    (op::JGT, ">"),
    (op::JGE, ">="),
    (op::JSET, "&"),
    (op::JNE, "!="),
    (op::JSGT, "s>"),
    (op::JSGE, "s>="),
    (op::JLT, "<"),
    (op::JLE, "<="),
    (op::JSLT, "s<"),
    (op::JSLE, "s<="),
];

fn lookup(table: &[(u8, &'static str)], k: u8) -> &'static str {
    table.iter().find(|(c, _)| *c == k).map(|(_, s)| *s).unwrap_or("?")
}

/// The instruction at `pc` in the chosen dialect.
pub fn format_with(insns: &[Insn], pc: usize, opts: Options) -> String {
    let Some(i) = insns.get(pc) else {
        return format!("<invalid: no instruction {pc}>");
    };
    if i.code == 0 && pc > 0 && insns[pc - 1].is_ld_imm64() {
        return "<ld_imm64 second slot>".to_string();
    }
    let kind = match classify(i) {
        Ok(k) => k,
        Err(e) => return format!("<invalid: {e}>"),
    };
    let wide = i.class() == op::ALU64 || i.class() == op::JMP;
    // Register name for ALU/JMP operands: w for 32-bit classes.
    let r = |n: u8| if wide { format!("r{n}") } else { format!("w{n}") };
    // Register name for the data operand of a load/store of `size`.
    let data_reg = |n: u8, size: u8| {
        if opts.alu32 && size != op::DW {
            format!("w{n}")
        } else {
            format!("r{n}")
        }
    };
    let src_operand = || if i.source() == op::X { r(i.src) } else { shex(i.imm as i64) };
    let size = i.size();

    match kind {
        Kind::Alu => format!("{} {} {}", r(i.dst), lookup(ALU_SYMS, i.op()), src_operand()),
        Kind::AluSigned => {
            let sym = if i.op() == op::DIV { "s/=" } else { "s%=" };
            format!("{} {sym} {}", r(i.dst), src_operand())
        }
        Kind::Neg => format!("{} = -{}", r(i.dst), r(i.dst)),
        Kind::MovSx => format!("{} = (s{}){}", r(i.dst), i.off, r(i.src)),
        Kind::AddrSpaceCast => format!(
            "r{} = addr_space_cast(r{}, {:#x}, {:#x})",
            i.dst,
            i.src,
            (i.imm as u32) >> 16,
            (i.imm as u32) & 0xffff
        ),
        Kind::End => {
            let name = if i.source() == op::TO_BE { "be" } else { "le" };
            format!("r{} = {name}{} r{}", i.dst, i.imm, i.dst)
        }
        Kind::Bswap => format!("r{} = bswap{} r{}", i.dst, i.imm, i.dst),
        Kind::KinsnSidecar => {
            let payload = (i.dst as u64 & 0xf) | ((i.off as u16 as u64) << 4) | ((i.imm as u32 as u64) << 20);
            format!("kinsn_sidecar {payload:#x}")
        }
        Kind::LdImm64 => {
            let Some(hi) = insns.get(pc + 1) else {
                return "<invalid: ld_imm64 without its second slot>".to_string();
            };
            if i.src == 0 {
                let v = ((hi.imm as u32 as u64) << 32) | i.imm as u32 as u64;
                format!("r{} = {} ll", i.dst, shex(v as i64))
            } else {
                format!("ld_pseudo\tr{}, {:#x}, {:#x}", i.dst, i.src, i.imm as u32)
            }
        }
        Kind::LdImm64Hi => "<ld_imm64 second slot>".to_string(),
        Kind::LdAbs => format!("r0 = *({} *)skb[{}]", size_name(size, false), shex(i.imm as i64)),
        // LLVM prints the register only; `imm` is added by the kernel but not shown.
        Kind::LdInd => format!("r0 = *({} *)skb[r{}]", size_name(size, false), i.src),
        Kind::Ldx => format!("{} = *({} *)({})", data_reg(i.dst, size), size_name(size, false), addr(i.src, i.off)),
        Kind::LdxSx => format!("r{} = *({} *)({})", i.dst, size_name(size, true), addr(i.src, i.off)),
        Kind::St => format!("*({} *)({}) = {}", size_name(size, false), addr(i.dst, i.off), shex(i.imm as i64)),
        Kind::Stx => format!("*({} *)({}) = {}", size_name(size, false), addr(i.dst, i.off), data_reg(i.src, size)),
        Kind::Atomic => atomic(i, opts),
        Kind::LoadAcquire | Kind::StoreRelease => {
            // B/H/W data registers are 32-bit subregisters in LLVM 20's syntax.
            let d = |n: u8| if size == op::DW { format!("r{n}") } else { format!("w{n}") };
            let ty = size_name(size, false);
            if i.imm == LOAD_ACQ {
                format!("{} = load_acquire(({ty} *)({}))", d(i.dst), addr(i.src, i.off))
            } else {
                format!("store_release(({ty} *)({}), {})", addr(i.dst, i.off), d(i.src))
            }
        }
        Kind::Ja => format!("goto {}", rel(i.off as i64)),
        Kind::Gotol => format!("gotol {}", rel(i.imm as i64)),
        Kind::MayGoto => format!("may_goto {}", rel(i.off as i64)),
        Kind::CondJump => format!(
            "if {} {} {} goto {}",
            r(i.dst),
            lookup(JMP_SYMS, i.op()),
            src_operand(),
            rel(i.off as i64)
        ),
        Kind::CallHelper | Kind::CallPseudo | Kind::CallKfunc => format!("call {}", shex(i.imm as i64)),
        Kind::CallKinsn if opts.kinsn => {
            if i.off == 0 {
                format!("kinsn_call {}", shex(i.imm as i64))
            } else {
                format!("kinsn_call {}, {}", shex(i.imm as i64), shex(i.off as i64))
            }
        }
        Kind::CallKinsn => format!("call {}", shex(i.imm as i64)),
        Kind::Callx => format!("callx r{}", i.dst),
        Kind::Exit => "exit".to_string(),
    }
}

fn atomic(i: &Insn, opts: Options) -> String {
    let dw = i.size() == op::DW;
    let (ty, d) = if dw { ("u64", 'r') } else { ("u32", 'w') };
    let a = addr(i.dst, i.off);
    let s = i.src;
    match i.imm {
        op::XCHG if dw => format!("r{s} = xchg_64({a}, r{s})"),
        op::XCHG => format!("w{s} = xchg32_32({a}, w{s})"),
        op::CMPXCHG if dw => format!("r0 = cmpxchg_64({a}, r0, r{s})"),
        op::CMPXCHG => format!("w0 = cmpxchg32_32({a}, w0, w{s})"),
        imm => {
            let aop = (imm & !op::FETCH) as u8;
            if imm & op::FETCH != 0 {
                let name = match aop {
                    op::ADD => "add",
                    op::OR => "or",
                    op::AND => "and",
                    _ => "xor",
                };
                format!("{d}{s} = atomic_fetch_{name}(({ty} *)({a}), {d}{s})")
            } else {
                // Without alu32, LLVM prints the 32-bit add with a 64-bit register name.
                let reg = if !dw && !opts.alu32 && aop == op::ADD { 'r' } else { d };
                format!("lock *({ty} *)({a}) {} {reg}{s}", lookup(ALU_SYMS, aop))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(i: Insn) -> String {
        format(&[i], 0)
    }

    // Expected strings: llvm-objdump-19 output for the same bytes (transcribed from runs
    // of `llvm-objdump-19 -d --no-show-raw-insn` on objects made by `llvm-mc-19`); the
    // integration test `tests/llvm_objdump.rs` checks the whole table against the tool.
    #[test]
    fn examples() {
        assert_eq!(one(Insn::ldx(op::W, 2, 1, 4)), "r2 = *(u32 *)(r1 + 0x4)");
        assert_eq!(one(Insn::jmp_reg(op::JGT, 3, 2, 0x47)), "if r3 > r2 goto +0x47");
        assert_eq!(one(Insn::alu32_imm(op::MOV, 0, 2)), "w0 = 0x2");
        assert_eq!(format(&Insn::ld_imm64(1, 0, 0), 0), "r1 = 0x0 ll");
        assert_eq!(format(&Insn::ld_imm64(1, 0, u64::MAX), 0), "r1 = -0x1 ll");
        assert_eq!(format(&Insn::ld_imm64(1, 2, 7), 0), "ld_pseudo\tr1, 0x2, 0x7");
        assert_eq!(one(Insn::call_helper(1)), "call 0x1");
        assert_eq!(one(Insn::new(0xdb, 1, 2, 0, 0)), "lock *(u64 *)(r1 + 0x0) += r2");
        assert_eq!(one(Insn::new(0xdc, 0, 0, 0, 16)), "r0 = be16 r0");
        assert_eq!(one(Insn::new(0xbf, 1, 2, 8, 0)), "r1 = (s8)r2");
        assert_eq!(one(Insn::new(0xc6, 1, 0, -2, -3)), "if w1 s< -0x3 goto -0x2");
        assert_eq!(one(Insn::new(0x06, 0, 0, 0, 1000)), "gotol +0x3e8");
        assert_eq!(one(Insn::new(0x7a, 1, 0, i16::MIN, -1)), "*(u64 *)(r1 - 0x8000) = -0x1");
        assert_eq!(one(Insn::new(0x8d, 3, 0, 0, 0)), "callx r3");
        assert_eq!(one(Insn::new(0x50, 0, 1, 0, 16)), "r0 = *(u8 *)skb[r1]");
        assert_eq!(one(Insn::new(0xbf, 1, 2, 1, 1)), "r1 = addr_space_cast(r2, 0x0, 0x1)");
        assert_eq!(one(Insn::new(0xc3, 1, 2, 0, 0)), "lock *(u32 *)(r1 + 0x0) += r2");
        assert_eq!(
            format_with(&[Insn::new(0xc3, 1, 2, 0, 0)], 0, Options::LLVM_ALU32),
            "lock *(u32 *)(r1 + 0x0) += w2"
        );
        assert_eq!(format_with(&[Insn::ldx(op::B, 1, 2, 0)], 0, Options::LLVM_ALU32), "w1 = *(u8 *)(r2 + 0x0)");
    }

    #[test]
    fn kops_forms() {
        // payload 0x123456789abcd: dst = 0xd, off = 0xabc (bits 19:4 = 0x9abc), imm = 0x12345678
        let payload: u64 = 0x1_2345_6789_abcd;
        let side = Insn::new(0xb7, (payload & 0xf) as u8, 3, ((payload >> 4) & 0xffff) as u16 as i16, (payload >> 20) as u32 as i32);
        assert_eq!(one(side), "kinsn_sidecar 0x123456789abcd");
        let call = Insn::new(0x85, 0, 4, 2, 7);
        assert_eq!(one(call), "call 0x7");
        let k = Options { kinsn: true, ..Options::default() };
        assert_eq!(format_with(&[call], 0, k), "kinsn_call 0x7, 0x2");
        assert_eq!(format_with(&[Insn::new(0x85, 0, 4, 0, 7)], 0, k), "kinsn_call 0x7");
    }

    #[test]
    fn bad_input_is_text_not_panic() {
        assert!(one(Insn::new(0xff, 0, 0, 0, 0)).starts_with("<invalid: unknown opcode 0xff"));
        assert_eq!(format(&[Insn::new(0x18, 1, 0, 0, 0)], 0), "<invalid: ld_imm64 without its second slot>");
        let l = Insn::ld_imm64(1, 0, 5);
        assert_eq!(format(&l, 1), "<ld_imm64 second slot>");
        assert!(format(&l, 9).starts_with("<invalid"));
        let p = format_program(&[l[0], l[1], Insn::exit()], Options::default());
        assert_eq!(p, vec![(0, "r1 = 0x5 ll".to_string()), (2, "exit".to_string())]);
    }
}

#[cfg(test)]
mod prop {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Any slot sequence formats without panicking, in both dialects.
        #[test]
        fn format_never_panics(words in proptest::collection::vec(any::<u64>(), 0..64), alu32 in any::<bool>()) {
            let insns: Vec<Insn> = words.iter().map(|w| Insn::from_bytes(w.to_le_bytes())).collect();
            let lines = format_program(&insns, Options { alu32, kinsn: alu32 });
            prop_assert!(lines.len() <= insns.len());
            for pc in 0..insns.len() + 1 {
                let _ = format(&insns, pc);
            }
        }
    }
}
