//! Assembler for the bpf_conformance suite's syntax.
//!
//! One instruction per line, `#` starts a comment, operands separated by commas/spaces:
//!
//! ```text
//! mov32 %r0, 0          add %r1, %r2          neg %r3
//! ldxh %r9, [%r0+2]     stw [%r10-4], 7       stxdw [%r10-8], %r1
//! ldxsb %r0, [%r1]      lddw %r1, 0x1122334455667788
//! le16 %r0   be64 %r0   bswap32 %r0 (alias swap32)
//! movsx832 %r1, %r2 (ALU, off 8)   movsx3264 %r1, %r2 (ALU64, off 32)
//! sdiv/smod[32]         ja label   ja +3   ja32 label (gotol)
//! jeq %r1, 5, label     jsgt32 %r1, %r2, -2
//! call 5 (helper)       call local name   call %r2 (callx)   call runtime 7 (kfunc)
//! lock add [%r10-8], %r1      lock fetch xor32 [%r1+4], %r2
//! lock xchg [%r1], %r2        lock cmpxchg32 [%r1], %r2      exit
//! label:
//! ```
//!
//! Encodings follow the suite's own assembler (`bpf_assembler.cc`): `call %rN` puts the
//! register in `dst` with `BPF_X` set (as LLVM encodes callx); a label named `exit` is
//! implicitly defined at the first `exit` instruction unless the program defines it; a label
//! target of `call local`/`ja32` is stored in `imm`, of other jumps in `off`. Where the
//! upstream assembler silently truncates immediates, we reject values that fit neither the
//! signed nor the unsigned range of the field.

use crate::{op, Insn};
use std::collections::HashMap;
use std::fmt;

/// An assembly error, naming the 1-based line number and its text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AsmError {
    pub line: usize,
    pub text: String,
    pub msg: String,
}

impl fmt::Display for AsmError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}: `{}`", self.line, self.msg, self.text.trim())
    }
}

impl std::error::Error for AsmError {}

/// ALU operations by mnemonic stem: (stem, BPF_OP bits, off field, operand count).
/// `sdiv`/`smod` are `div`/`mod` with off = 1 (ISA v4).
const ALU_OPS: &[(&str, u8, i16, usize)] = &[
    ("add", op::ADD, 0, 2),
    ("sub", op::SUB, 0, 2),
    ("mul", op::MUL, 0, 2),
    ("div", op::DIV, 0, 2),
    ("sdiv", op::DIV, 1, 2),
    ("or", op::OR, 0, 2),
    ("and", op::AND, 0, 2),
    ("lsh", op::LSH, 0, 2),
    ("rsh", op::RSH, 0, 2),
    ("neg", op::NEG, 0, 1),
    ("mod", op::MOD, 0, 2),
    ("smod", op::MOD, 1, 2),
    ("xor", op::XOR, 0, 2),
    ("mov", op::MOV, 0, 2),
    ("arsh", op::ARSH, 0, 2),
];

/// Conditional jumps by mnemonic stem.
const JMP_OPS: &[(&str, u8)] = &[
    ("jeq", op::JEQ),
    ("jgt", op::JGT),
    ("jge", op::JGE),
    ("jset", op::JSET),
    ("jne", op::JNE),
    ("jsgt", op::JSGT),
    ("jsge", op::JSGE),
    ("jlt", op::JLT),
    ("jle", op::JLE),
    ("jslt", op::JSLT),
    ("jsle", op::JSLE),
];

/// Memory access size suffixes.
const SIZES: &[(&str, u8)] = &[("b", op::B), ("h", op::H), ("w", op::W), ("dw", op::DW)];

/// Atomic operations (`lock [fetch] OP[32] [dst+off], src`): (name, imm, fetch allowed).
const ATOMIC_OPS: &[(&str, i32)] = &[
    ("add", op::ADD as i32),
    ("or", op::OR as i32),
    ("and", op::AND as i32),
    ("xor", op::XOR as i32),
    ("xchg", op::XCHG),
    ("cmpxchg", op::CMPXCHG),
];

/// Where a label reference goes once labels are known.
#[derive(Clone, Copy)]
enum Fixup {
    Off,
    Imm,
}

struct Pending {
    slot: usize,
    label: String,
    field: Fixup,
    line: usize,
    text: String,
}

/// Assemble a whole program. Instruction indices in the result are slot indices
/// (`lddw` yields two slots).
pub fn assemble(text: &str) -> Result<Vec<Insn>, AsmError> {
    let mut out: Vec<Insn> = Vec::new();
    let mut labels: HashMap<String, usize> = HashMap::new();
    let mut first_exit: Option<usize> = None;
    let mut pending: Vec<Pending> = Vec::new();

    for (idx, raw_line) in text.lines().enumerate() {
        let line_no = idx + 1;
        let err = |msg: String| AsmError { line: line_no, text: raw_line.to_string(), msg };
        let mut code = match raw_line.find('#') {
            Some(p) => &raw_line[..p],
            None => raw_line,
        }
        .trim();
        if code.is_empty() {
            continue;
        }
        // Labels: `name:` (an instruction may follow on the same line).
        if let Some(first) = code.split_whitespace().next() {
            if let Some(name) = first.strip_suffix(':') {
                if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.') {
                    return Err(err(format!("invalid label name `{name}`")));
                }
                if labels.insert(name.to_string(), out.len()).is_some() {
                    return Err(err(format!("duplicate label `{name}`")));
                }
                code = code[first.len()..].trim();
                if code.is_empty() {
                    continue;
                }
            }
        }
        let mut toks = code.split(|c: char| c.is_whitespace() || c == ',').filter(|t| !t.is_empty());
        let mnemonic = toks.next().unwrap_or_default().to_ascii_lowercase();
        let operands: Vec<&str> = toks.collect();
        let slot = out.len();
        let mut label_ref: Option<(String, Fixup)> = None;
        let insns = encode_line(&mnemonic, &operands, &mut label_ref).map_err(err)?;
        if mnemonic == "exit" && first_exit.is_none() {
            first_exit = Some(slot);
        }
        if let Some((label, field)) = label_ref {
            pending.push(Pending { slot, label, field, line: line_no, text: raw_line.to_string() });
        }
        out.extend(insns);
    }

    if let Some(e) = first_exit {
        labels.entry("exit".to_string()).or_insert(e);
    }
    for p in pending {
        let err = |msg: String| AsmError { line: p.line, text: p.text.clone(), msg };
        let target = *labels
            .get(&p.label)
            .ok_or_else(|| err(format!("undefined label `{}`", p.label)))?;
        let rel = target as i64 - p.slot as i64 - 1;
        match p.field {
            Fixup::Off => {
                out[p.slot].off = i16::try_from(rel)
                    .map_err(|_| err(format!("jump to `{}` ({rel:+}) does not fit in 16 bits", p.label)))?;
            }
            Fixup::Imm => {
                out[p.slot].imm = i32::try_from(rel)
                    .map_err(|_| err(format!("target `{}` ({rel:+}) does not fit in 32 bits", p.label)))?;
            }
        }
    }
    Ok(out)
}

fn want(ops: &[&str], n: usize, mnemonic: &str) -> Result<(), String> {
    if ops.len() != n {
        return Err(format!("`{mnemonic}` takes {n} operand(s), found {}", ops.len()));
    }
    Ok(())
}

fn encode_line(
    m: &str,
    ops: &[&str],
    label_ref: &mut Option<(String, Fixup)>,
) -> Result<Vec<Insn>, String> {
    let one = |i: Insn| Ok(vec![i]);

    // Fixed mnemonics first.
    match m {
        "exit" => {
            want(ops, 0, m)?;
            return one(Insn::exit());
        }
        "lddw" => {
            want(ops, 2, m)?;
            let dst = reg(ops[0])?;
            let v = parse_int(ops[1], 64)? as u64;
            return Ok(Insn::ld_imm64(dst, 0, v).to_vec());
        }
        "ja" | "ja32" => {
            want(ops, 1, m)?;
            let field = if m == "ja" { Fixup::Off } else { Fixup::Imm };
            let rel = target(ops[0], field, 16 + 16 * (m == "ja32") as u32, label_ref)?;
            return one(if m == "ja" {
                Insn::ja(rel as i16)
            } else {
                Insn::new(op::JMP32 | op::JA, 0, 0, 0, rel as i32)
            });
        }
        "call" => return encode_call(ops, label_ref).map(|i| vec![i]),
        "lock" => return encode_atomic(ops).map(|i| vec![i]),
        _ => {}
    }

    // Byte swaps: le16/be32/bswap64 (alias swap64).
    for (prefix, code) in [
        ("le", op::ALU | op::END | op::TO_LE),
        ("be", op::ALU | op::END | op::TO_BE),
        ("bswap", op::ALU64 | op::END | op::TO_LE),
        ("swap", op::ALU64 | op::END | op::TO_LE),
    ] {
        if let Some(w @ ("16" | "32" | "64")) = m.strip_prefix(prefix) {
            want(ops, 1, m)?;
            return one(Insn::new(code, reg(ops[0])?, 0, 0, w.parse().unwrap()));
        }
    }

    // movsx{8,16,32}{32,64}: sign-extending register move.
    if let Some(rest) = m.strip_prefix("movsx") {
        let (from, class) = match rest {
            "832" => (8, op::ALU),
            "1632" => (16, op::ALU),
            "864" => (8, op::ALU64),
            "1664" => (16, op::ALU64),
            "3264" => (32, op::ALU64),
            _ => return Err(format!("unknown mnemonic `{m}`")),
        };
        want(ops, 2, m)?;
        return one(Insn::new(class | op::MOV | op::X, reg(ops[0])?, reg(ops[1])?, from, 0));
    }

    // Loads and stores.
    for (prefix, class, mode) in [
        ("ldxs", op::LDX, op::MEMSX),
        ("ldx", op::LDX, op::MEM),
        ("stx", op::STX, op::MEM),
        ("st", op::ST, op::MEM),
    ] {
        if let Some(sz) = m.strip_prefix(prefix) {
            if let Some(&(_, size)) = SIZES.iter().find(|(s, _)| *s == sz) {
                if mode == op::MEMSX && size == op::DW {
                    return Err(format!("unknown mnemonic `{m}` (no sign-extending 64-bit load)"));
                }
                want(ops, 2, m)?;
                let code = class | mode | size;
                return one(match class {
                    op::LDX => {
                        let (src, off) = mem(ops[1])?;
                        Insn::new(code, reg(ops[0])?, src, off, 0)
                    }
                    op::STX => {
                        let (dst, off) = mem(ops[0])?;
                        Insn::new(code, dst, reg(ops[1])?, off, 0)
                    }
                    _ => {
                        let (dst, off) = mem(ops[0])?;
                        Insn::new(code, dst, 0, off, parse_int(ops[1], 32)? as i32)
                    }
                });
            }
        }
    }

    // Conditional jumps: jXX[32] dst, src|imm, target.
    let (stem, is32) = match m.strip_suffix("32") {
        Some(s) => (s, true),
        None => (m.strip_suffix("64").unwrap_or(m), false),
    };
    if let Some(&(_, jop)) = JMP_OPS.iter().find(|(n, _)| *n == stem) {
        want(ops, 3, m)?;
        let class = if is32 { op::JMP32 } else { op::JMP };
        let dst = reg(ops[0])?;
        let rel = target(ops[2], Fixup::Off, 16, label_ref)? as i16;
        return one(if ops[1].starts_with('%') {
            Insn::new(class | jop | op::X, dst, reg(ops[1])?, rel, 0)
        } else {
            Insn::new(class | jop | op::K, dst, 0, rel, parse_int(ops[1], 32)? as i32)
        });
    }

    // ALU: OP[32|64] dst, src|imm (neg takes only dst).
    if let Some(&(_, aop, off, n)) = ALU_OPS.iter().find(|(name, ..)| *name == stem) {
        want(ops, n, m)?;
        let class = if is32 { op::ALU } else { op::ALU64 };
        let dst = reg(ops[0])?;
        return one(if n == 1 {
            Insn::new(class | aop | op::K, dst, 0, off, 0)
        } else if ops[1].starts_with('%') {
            Insn::new(class | aop | op::X, dst, reg(ops[1])?, off, 0)
        } else {
            Insn::new(class | aop | op::K, dst, 0, off, parse_int(ops[1], 32)? as i32)
        });
    }

    Err(format!("unknown mnemonic `{m}`"))
}

/// `call N` / `call helper N` (helper), `call local L` (bpf-to-bpf, src 1, imm = target - pc - 1),
/// `call runtime N` (kfunc, src 2), `call %rN` (callx: `JMP|CALL|X`, register in dst).
fn encode_call(ops: &[&str], label_ref: &mut Option<(String, Fixup)>) -> Result<Insn, String> {
    let (mode, t) = match ops {
        [t] => ("helper", *t),
        [mode, t] => (*mode, *t),
        _ => return Err(format!("`call` takes 1 or 2 operands, found {}", ops.len())),
    };
    let call = op::JMP | op::CALL;
    match mode {
        "helper" if t.starts_with('%') => Ok(Insn::new(call | op::X, reg(t)?, 0, 0, 0)),
        "helper" => Ok(Insn::new(call, 0, 0, 0, parse_int(t, 32)? as i32)),
        "local" => {
            let rel = target(t, Fixup::Imm, 32, label_ref)?;
            Ok(Insn::new(call, 0, op::PSEUDO_CALL, 0, rel as i32))
        }
        "runtime" => Ok(Insn::new(call, 0, op::PSEUDO_KFUNC_CALL, 0, parse_int(t, 32)? as i32)),
        _ => Err(format!("invalid call mode `{mode}` (expected helper, local or runtime)")),
    }
}

/// `lock [fetch] OP[32] [dst+off], src`.
fn encode_atomic(ops: &[&str]) -> Result<Insn, String> {
    let (fetch, rest) = match ops.first() {
        Some(&"fetch") => (true, &ops[1..]),
        _ => (false, ops),
    };
    let [name, dst, src] = rest else {
        return Err("expected `lock [fetch] OP [reg+off], reg`".to_string());
    };
    let (stem, size) = match name.strip_suffix("32") {
        Some(s) => (s, op::W),
        None => (*name, op::DW),
    };
    let &(_, mut imm) = ATOMIC_OPS
        .iter()
        .find(|(n, _)| *n == stem)
        .ok_or_else(|| format!("unknown atomic operation `{name}`"))?;
    if fetch {
        imm |= op::FETCH;
    }
    let (dst, off) = mem(dst)?;
    Ok(Insn::new(op::STX | op::ATOMIC | size, dst, reg(src)?, off, imm))
}

/// A jump target: `+N`/`-N` is a literal offset; anything else is a label resolved later.
fn target(
    t: &str,
    field: Fixup,
    bits: u32,
    label_ref: &mut Option<(String, Fixup)>,
) -> Result<i64, String> {
    if t.starts_with('+') || t.starts_with('-') {
        // Offsets are signed: check the range before truncating.
        let v = parse_int(t, 64)?;
        let min = -(1i128 << (bits - 1));
        let max = (1i128 << (bits - 1)) - 1;
        if v < min || v > max {
            return Err(format!("offset {t} does not fit in {bits} bits"));
        }
        Ok(v as i64)
    } else {
        if t.is_empty() || t.starts_with('%') {
            return Err(format!("invalid jump target `{t}`"));
        }
        *label_ref = Some((t.to_string(), field));
        Ok(0)
    }
}

/// `%r0`..`%r10`.
fn reg(t: &str) -> Result<u8, String> {
    t.strip_prefix("%r")
        .and_then(|n| n.parse::<u8>().ok())
        .filter(|&n| n <= 10 && !t[2..].starts_with('+'))
        .ok_or_else(|| format!("invalid register `{t}` (expected %r0..%r10)"))
}

/// `[%rN]`, `[%rN+off]`, `[%rN-off]`.
fn mem(t: &str) -> Result<(u8, i16), String> {
    let inner = t
        .strip_prefix('[')
        .and_then(|s| s.strip_suffix(']'))
        .ok_or_else(|| format!("invalid memory operand `{t}` (expected [%rN+off])"))?;
    match inner.find(['+', '-']) {
        None => Ok((reg(inner)?, 0)),
        Some(p) => Ok((reg(&inner[..p])?, parse_int(&inner[p..], 16)? as i16)),
    }
}

/// Decimal or `0x` hex with optional sign; the value must fit `bits` as signed or unsigned.
/// Returns the value truncated to `bits` and sign-extended back (two's complement).
fn parse_int(t: &str, bits: u32) -> Result<i128, String> {
    let bad = || format!("invalid number `{t}`");
    let (neg, body) = match t.as_bytes().first() {
        Some(b'-') => (true, &t[1..]),
        Some(b'+') => (false, &t[1..]),
        _ => (false, t),
    };
    let mag = if let Some(h) = body.strip_prefix("0x").or_else(|| body.strip_prefix("0X")) {
        u128::from_str_radix(h, 16).map_err(|_| bad())?
    } else {
        if body.is_empty() || !body.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        body.parse::<u128>().map_err(|_| bad())?
    };
    if mag > u64::MAX as u128 {
        return Err(format!("number `{t}` out of range"));
    }
    let v = if neg { -(mag as i128) } else { mag as i128 };
    let min = -(1i128 << (bits - 1));
    let max = (1i128 << bits) - 1;
    if v < min || v > max {
        return Err(format!("number `{t}` does not fit in {bits} bits"));
    }
    // Truncate to `bits` and sign-extend.
    let shift = 128 - bits;
    Ok((v << shift) >> shift)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(s: &str) -> Insn {
        let v = assemble(s).unwrap();
        assert_eq!(v.len(), 1, "{s}");
        v[0]
    }

    // Expected encodings are from the kernel's opcode tables (uapi bpf.h), written by hand.
    #[test]
    fn alu_forms() {
        assert_eq!(one("mov32 %r0, 0"), Insn::new(0xb4, 0, 0, 0, 0));
        assert_eq!(one("mov %r1, -1"), Insn::new(0xb7, 1, 0, 0, -1));
        assert_eq!(one("add %r0, %r1"), Insn::new(0x0f, 0, 1, 0, 0));
        assert_eq!(one("arsh32 %r2, 3"), Insn::new(0xc4, 2, 0, 0, 3));
        assert_eq!(one("neg %r3"), Insn::new(0x87, 3, 0, 0, 0));
        assert_eq!(one("neg32 %r3"), Insn::new(0x84, 3, 0, 0, 0));
        assert_eq!(one("sdiv32 %r1, %r2"), Insn::new(0x3c, 1, 2, 1, 0));
        assert_eq!(one("smod %r1, -3"), Insn::new(0x97, 1, 0, 1, -3));
        assert_eq!(one("mov32 %r9, 0x80000001"), Insn::new(0xb4, 9, 0, 0, 0x80000001u32 as i32));
        assert_eq!(one("movsx832 %r2, %r1"), Insn::new(0xbc, 2, 1, 8, 0));
        assert_eq!(one("movsx3264 %r0, %r9"), Insn::new(0xbf, 0, 9, 32, 0));
        assert_eq!(one("le16 %r0"), Insn::new(0xd4, 0, 0, 0, 16));
        assert_eq!(one("be64 %r0"), Insn::new(0xdc, 0, 0, 0, 64));
        assert_eq!(one("bswap32 %r0"), Insn::new(0xd7, 0, 0, 0, 32));
        assert_eq!(one("swap16 %r4"), Insn::new(0xd7, 4, 0, 0, 16));
    }

    #[test]
    fn memory_forms() {
        assert_eq!(one("ldxh %r9, [%r0+2]"), Insn::new(0x69, 9, 0, 2, 0));
        assert_eq!(one("ldxdw %r0, [%r10-8]"), Insn::new(0x79, 0, 10, -8, 0));
        assert_eq!(one("ldxsb %r0, [%r10-1]"), Insn::new(0x91, 0, 10, -1, 0));
        assert_eq!(one("ldxsw %r0, [%r1]"), Insn::new(0x81, 0, 1, 0, 0));
        assert_eq!(one("stb [%r10-1], 0x80"), Insn::new(0x72, 10, 0, -1, 0x80));
        assert_eq!(one("stxdw [%r10-8], %r3"), Insn::new(0x7b, 10, 3, -8, 0));
        assert_eq!(one("lock add [%r10-8], %r1"), Insn::new(0xdb, 10, 1, -8, 0));
        assert_eq!(one("lock fetch add32 [%r10-8], %r1"), Insn::new(0xc3, 10, 1, -8, 1));
        assert_eq!(one("lock fetch xor [%r1+4], %r2"), Insn::new(0xdb, 1, 2, 4, 0xa1));
        assert_eq!(one("lock xchg32 [%r1], %r2"), Insn::new(0xc3, 1, 2, 0, 0xe1));
        assert_eq!(one("lock cmpxchg [%r10-8], %r1 # c"), Insn::new(0xdb, 10, 1, -8, 0xf1));
        let l = assemble("lddw %r0, 0x1122334455667788").unwrap();
        assert_eq!(l, vec![Insn::new(0x18, 0, 0, 0, 0x55667788), Insn::new(0, 0, 0, 0, 0x11223344)]);
        let l = assemble("lddw %r1, -1").unwrap();
        assert_eq!((l[0].imm, l[1].imm), (-1, -1));
    }

    #[test]
    fn jumps_calls_labels() {
        let p = assemble(
            "mov %r0, 0\njne %r0, 1, l\nlddw %r1, 5\nl:\njeq32 %r1, %r2, exit\nja -2\nexit\nja32 l\ncall local f\nf:\ncall %r2\ncall 5\nexit",
        )
        .unwrap();
        assert_eq!(p[1], Insn::new(0x55, 0, 0, 2, 1)); // to slot 4 from slot 1
        assert_eq!(p[4], Insn::new(0x1e, 1, 2, 1, 0)); // exit is slot 6
        assert_eq!(p[5], Insn::new(0x05, 0, 0, -2, 0));
        assert_eq!(p[7], Insn::new(0x06, 0, 0, 0, -4)); // gotol: offset in imm
        assert_eq!(p[8], Insn::new(0x85, 0, 1, 0, 0));
        assert_eq!(p[9], Insn::new(0x8d, 2, 0, 0, 0));
        assert_eq!(p[10], Insn::new(0x85, 0, 0, 0, 5));
    }

    #[test]
    fn errors_name_line() {
        let e = assemble("mov %r0, 1\n\nfoo %r1, 2\n").unwrap_err();
        assert_eq!(e.line, 3);
        assert!(e.to_string().contains("line 3") && e.to_string().contains("foo %r1, 2"), "{e}");
        assert_eq!(assemble("mov %r11, 1").unwrap_err().line, 1);
        assert!(assemble("ja nowhere").unwrap_err().msg.contains("undefined label"));
        assert!(assemble("l:\nl:\nexit").unwrap_err().msg.contains("duplicate"));
        assert!(assemble("mov %r0, 0x100000000").is_err());
        assert!(assemble("ldxh %r0, %r1").is_err());
        assert!(assemble("add %r0").is_err());
        assert!(assemble("ldxsdw %r0, [%r1]").is_err());
    }
}
