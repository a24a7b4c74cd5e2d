//! Every encoder is checked by decoding its output with yaxpeax-arm (an independent
//! AArch64 decoder) and comparing the text with what we meant, written here by hand, over
//! all registers (x0..x30 and the sp/zr meanings of register 31) and the immediate classes
//! of each operand (0, edges, maxima, negative); operands that cannot be encoded must be
//! refused with an error. Words the kernel's JIT fixes (prologue, epilogue, `bti`) are also
//! checked bit for bit.

use super::*;
use std::collections::HashSet;
use yaxpeax_arch::{Decoder, U8Reader};
use yaxpeax_arm::armv8::a64::InstDecoder;
use Reg::X;
use W::*;

/// Disassembly of one word; panics on an invalid encoding.
fn dis(word: u32) -> String {
    let b = word.to_le_bytes();
    let mut r = U8Reader::new(&b);
    match InstDecoder::default().decode(&mut r) {
        Ok(i) => i.to_string(),
        Err(e) => panic!("{word:08x} does not decode: {e}"),
    }
}

fn check(word: Result<u32>, want: &str) {
    let w = word.unwrap_or_else(|e| panic!("expected `{want}`, got error {e}"));
    assert_eq!(dis(w), want, "word {w:08x}");
}

fn refused(word: Result<u32>, what: &str) {
    if let Ok(w) = word {
        panic!("{what}: expected an error, got {w:08x} ({})", dis(w));
    }
}

/// Register name as yaxpeax prints it.
fn r(w: W, reg: Reg) -> String {
    match (w, reg) {
        (X64, X(n)) => format!("x{n}"),
        (W32, X(n)) => format!("w{n}"),
        (X64, Sp) => "sp".into(),
        (W32, Sp) => "wsp".into(),
        (X64, Zr) => "xzr".into(),
        (W32, Zr) => "wzr".into(),
    }
}
fn x(reg: Reg) -> String {
    r(X64, reg)
}
fn h(v: i64) -> String {
    if v < 0 { format!("#-{:#x}", -(v as i128)) } else { format!("#{v:#x}") }
}

fn gprs() -> Vec<Reg> {
    (0..=30).map(X).collect()
}
fn with_zr() -> Vec<Reg> {
    let mut v = gprs();
    v.push(Zr);
    v
}
fn with_sp() -> Vec<Reg> {
    let mut v = gprs();
    v.push(Sp);
    v
}
const WS: [W; 2] = [W32, X64];

// ---- arithmetic ------------------------------------------------------------------------------

#[test]
fn add_sub_immediate_all_registers_and_classes() {
    let good: [(u64, &str); 6] =
        [(0, "#0x0"), (1, "#0x1"), (0xfff, "#0xfff"), (0x1000, "#0x1, lsl #12"), (0xfff000, "#0xfff, lsl #12"), (0x5000, "#0x5, lsl #12")];
    for w in WS {
        for d in with_sp() {
            for n in [X(0), X(17), X(30), Sp] {
                for (imm, t) in good {
                    let want_add = if imm == 0 && (d == Sp || n == Sp) { format!("mov {}, {}", r(w, d), r(w, n)) } else { format!("add {}, {}, {t}", r(w, d), r(w, n)) };
                    check(add_imm(w, d, n, imm), &want_add);
                    check(sub_imm(w, d, n, imm), &format!("sub {}, {}, {t}", r(w, d), r(w, n)));
                }
                refused(add_imm(w, d, n, 0x1001), "add 0x1001");
                refused(sub_imm(w, d, n, 0x100_0000), "sub 2^24");
                refused(add_imm(w, d, n, u64::MAX), "add -1");
            }
            refused(add_imm(w, d, Zr, 1), "add from zr");
        }
        refused(add_imm(w, Zr, X(0), 1), "add to zr");
        for n in with_sp() {
            check(cmp_imm(w, n, 5), &format!("cmp {}, #0x5", r(w, n)));
            check(cmn_imm(w, n, 0x7000), &format!("cmn {}, #0x7, lsl #12", r(w, n)));
        }
        check(adds_imm(w, X(3), X(4), 9), &format!("adds {}, {}, #0x9", r(w, X(3)), r(w, X(4))));
        refused(adds_imm(w, Sp, X(4), 9), "adds to sp");
    }
    assert!(is_addsub_imm(0xfff000) && is_addsub_imm(0) && !is_addsub_imm(0x1001) && !is_addsub_imm(u64::MAX));
}

#[test]
fn register_ops_all_pairs() {
    type F = fn(W, Reg, Reg, Reg) -> Result<u32>;
    let ops: [(F, &str); 11] = [
        (add, "add"),
        (sub, "sub"),
        (adds, "adds"),
        (subs, "subs"),
        (and, "and"),
        (orr, "orr"),
        (eor, "eor"),
        (lslv, "lsl"),
        (lsrv, "lsr"),
        (asrv, "asr"),
        (rorv, "ror"),
    ];
    for w in WS {
        for (f, name) in ops {
            for d in gprs() {
                for m in with_zr() {
                    let n = X((d.num() + 7) % 31);
                    let want = match (name, n, m) {
                        _ => format!("{name} {}, {}, {}", r(w, d), r(w, n), r(w, m)),
                    };
                    check(f(w, d, n, m), &want);
                }
                refused(f(w, d, Sp, X(1)), "sp as a register operand");
                refused(f(w, Sp, X(1), X(2)), "sp as destination");
                refused(f(w, d, X(1), X(31)), "x31");
            }
        }
        for (f, name) in [(udiv as F, "udiv"), (sdiv as F, "sdiv"), (mul as F, "mul")] {
            for d in with_zr() {
                check(f(w, d, X(1), X(30)), &format!("{name} {}, {}, {}", r(w, d), r(w, X(1)), r(w, X(30))));
            }
        }
        for a in with_zr() {
            let want = if a == Zr { format!("mul {}, {}, {}", r(w, X(2)), r(w, X(3)), r(w, X(4))) } else { format!("madd {}, {}, {}, {}", r(w, X(2)), r(w, X(3)), r(w, X(4)), r(w, a)) };
            check(madd(w, X(2), X(3), X(4), a), &want);
            let want = if a == Zr { format!("mneg {}, {}, {}", r(w, X(2)), r(w, X(3)), r(w, X(4))) } else { format!("msub {}, {}, {}, {}", r(w, X(2)), r(w, X(3)), r(w, X(4)), r(w, a)) };
            check(msub(w, X(2), X(3), X(4), a), &want);
        }
        refused(msub(w, X(2), X(3), X(4), Sp), "msub sp");
        for d in gprs() {
            for m in gprs() {
                check(mov(w, d, m), &format!("mov {}, {}", r(w, d), r(w, m)));
                check(mvn(w, d, m), &format!("mvn {}, {}", r(w, d), r(w, m)));
                check(neg(w, d, m), &format!("neg {}, {}", r(w, d), r(w, m)));
                check(cmp(w, d, m), &format!("cmp {}, {}", r(w, d), r(w, m)));
                check(tst(w, d, m), &format!("tst {}, {}", r(w, d), r(w, m)));
            }
        }
        refused(mov(w, Sp, X(1)), "mov to sp through orr");
        check(mov_sp(w, Sp, X(25)), &format!("mov {}, {}", r(w, Sp), r(w, X(25))));
        check(mov_sp(w, X(25), Sp), &format!("mov {}, {}", r(w, X(25)), r(w, Sp)));
        // Shifted operands.
        check(add_shifted(w, X(0), X(1), X(2), Shift::Lsl, 3), &format!("add {}, {}, {}, lsl #3", r(w, X(0)), r(w, X(1)), r(w, X(2))));
        check(add_shifted(w, X(0), X(1), X(2), Shift::Asr, w_bits(w) - 1), &format!("add {}, {}, {}, asr #{}", r(w, X(0)), r(w, X(1)), r(w, X(2)), w_bits(w) - 1));
        refused(add_shifted(w, X(0), X(1), X(2), Shift::Lsl, w_bits(w)), "shift = width");
        refused(add_shifted(w, X(0), X(1), X(2), Shift::Ror, 1), "ror in add");
        check(logic_reg(Logic::Orr, true, w, X(0), X(1), X(2), Shift::Ror, 1), &format!("orn {}, {}, {}, ror #1", r(w, X(0)), r(w, X(1)), r(w, X(2))));
        check(logic_reg(Logic::And, true, w, X(0), X(1), X(2), Shift::Lsl, 0), &format!("bic {}, {}, {}", r(w, X(0)), r(w, X(1)), r(w, X(2))));
        check(logic_reg(Logic::Eor, true, w, X(0), X(1), X(2), Shift::Lsl, 0), &format!("eon {}, {}, {}", r(w, X(0)), r(w, X(1)), r(w, X(2))));
        check(logic_reg(Logic::Ands, false, w, X(0), X(1), X(2), Shift::Lsl, 0), &format!("ands {}, {}, {}", r(w, X(0)), r(w, X(1)), r(w, X(2))));
    }
}

fn w_bits(w: W) -> u32 {
    if w == X64 { 64 } else { 32 }
}

impl Reg {
    fn num(self) -> u8 {
        match self {
            X(n) => n,
            _ => 31,
        }
    }
}

// ---- immediates --------------------------------------------------------------------------------

/// Every (N, immr, imms) the architecture allows, decoded by yaxpeax: the set of logical
/// immediates per width. Our encoder must produce exactly these (and refuse the rest).
fn all_bitmask_values(w: W) -> HashSet<u64> {
    let mut set = HashSet::new();
    // 32-bit forms only forbid N = 1; immr and imms use all six bits (small elements).
    for n in 0..=(w == X64) as u32 {
        for immr in 0..64u32 {
            for imms in 0..64u32 {
                let word = (if w == X64 { 1 << 31 } else { 0 }) | 1 << 29 | 0b100100 << 23 | n << 22 | immr << 16 | imms << 10 | 1 << 5 | 0;
                let b = word.to_le_bytes();
                let Ok(i) = InstDecoder::default().decode(&mut U8Reader::new(&b)) else { continue };
                let t = i.to_string();
                // "orr x0, x1, #0x..."
                let Some(v) = t.rsplit("#0x").next().filter(|_| t.starts_with("orr ")) else { continue };
                let v = u64::from_str_radix(v, 16).unwrap();
                // The reserved all-ones pattern (imms = esize - 1) decodes leniently in
                // yaxpeax; the architecture has no all-ones (or zero) logical immediate.
                let ones = if w == X64 { u64::MAX } else { 0xffff_ffff };
                if v != ones && v != 0 {
                    set.insert(v);
                }
            }
        }
    }
    set
}

#[test]
fn logical_immediates_match_the_architecture_exactly() {
    let mut rng = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    for w in WS {
        let set = all_bitmask_values(w);
        assert_eq!(set.len(), if w == X64 { 5334 } else { 1302 }, "{w:?}");
        for &v in &set {
            check(logic_imm(Logic::Orr, w, X(0), X(1), v), &format!("orr {}, {}, #{v:#x}", r(w, X(0)), r(w, X(1))));
            check(logic_imm(Logic::Eor, w, Sp, Zr, v), &format!("eor {}, {}, #{v:#x}", r(w, Sp), r(w, Zr)));
        }
        let edges = [0u64, u64::MAX, 0xffff_ffff, 1, 0x5555_5555_5555_5555, 0x8000_0000_0000_0001, 0xff, 0x1_0000_0000, 0xffff_ffff_0000_0000, 0x1234];
        let mut vals: Vec<u64> = edges.to_vec();
        for k in 0..22000 {
            let v = next();
            vals.push(if k < 2000 { v & 0xffff_ffff } else { v });
        }
        for v in vals {
            assert_eq!(bitmask_imm(w, v).is_some(), set.contains(&v), "{w:?} {v:#x}");
            if !set.contains(&v) {
                refused(logic_imm(Logic::And, w, X(0), X(1), v), "unencodable logical immediate");
            }
        }
        for d in with_sp() {
            check(logic_imm(Logic::And, w, d, X(2), 0xff), &format!("and {}, {}, #0xff", r(w, d), r(w, X(2))));
        }
        refused(logic_imm(Logic::And, w, Zr, X(2), 0xff), "and to zr");
        refused(logic_imm(Logic::And, w, X(0), Sp, 0xff), "and from sp");
        check(tst_imm(w, X(5), 1), &format!("tst {}, #0x1", r(w, X(5))));
        refused(tst_imm(w, X(5), 0), "tst #0");
    }
}

/// Value a `mov`/`movk` text describes, applied to `prev` (for movk).
fn mov_value(w: W, text: &str, prev: u64) -> u64 {
    let mask = if w == X64 { u64::MAX } else { 0xffff_ffff };
    if let Some(rest) = text.split("#0x").nth(1) {
        let (hex, shift) = match rest.split_once(", lsl #") {
            Some((a, s)) => (a, s.parse::<u32>().unwrap()),
            None => (rest, 0),
        };
        let v = u64::from_str_radix(hex, 16).unwrap();
        if text.starts_with("movk") {
            return (prev & !(0xffff << shift) | v << shift) & mask;
        }
        return v & mask;
    }
    panic!("unexpected {text}");
}

#[test]
fn move_wide_all_shifts_and_immediates() {
    for w in WS {
        for d in with_zr() {
            for sh in (0..w_bits(w)).step_by(16) {
                for imm in [0u16, 1, 0x7fff, 0x8000, 0xfffe, 0xffff] {
                    let mask = if w == X64 { u64::MAX } else { 0xffff_ffff };
                    let t = dis(movz(w, d, imm, sh).unwrap());
                    assert!(t.starts_with(&format!("mov {}, ", r(w, d))) || t.starts_with(&format!("movz {}, ", r(w, d))), "{t}");
                    assert_eq!(mov_value(w, &t, 0), (imm as u64) << sh, "{t}");
                    let t = dis(movn(w, d, imm, sh).unwrap());
                    assert!(t.starts_with(&format!("mov {}, ", r(w, d))) || t.starts_with(&format!("movn {}, ", r(w, d))), "{t}");
                    if t.starts_with("mov ") {
                        assert_eq!(mov_value(w, &t, 0), !((imm as u64) << sh) & mask, "{t}");
                    }
                    let want = if sh == 0 { format!("movk {}, #{:#x}", r(w, d), imm) } else { format!("movk {}, #{:#x}, lsl #{sh}", r(w, d), imm) };
                    check(movk(w, d, imm, sh), &want);
                }
            }
            refused(movz(w, d, 1, w_bits(w)), "shift = width");
            refused(movk(w, d, 1, 8), "shift not a multiple of 16");
        }
        refused(movz(w, Sp, 1, 0), "movz to sp");
    }
}

// ---- shifts, bit fields, extract ---------------------------------------------------------------

#[test]
fn immediate_shifts_all_amounts() {
    for w in WS {
        let b = w_bits(w);
        for d in [X(0), X(30), Zr] {
            for sh in 0..b {
                let (dn, nn) = (r(w, d), r(w, X(9)));
                let lsl = if sh == 0 { format!("lsr {dn}, {nn}, #0x0") } else { format!("lsl {dn}, {nn}, {}", h(sh as i64)) };
                check(lsl_imm(w, d, X(9), sh), &lsl);
                check(lsr_imm(w, d, X(9), sh), &format!("lsr {dn}, {nn}, {}", h(sh as i64)));
                check(asr_imm(w, d, X(9), sh), &format!("asr {dn}, {nn}, {}", h(sh as i64)));
                let ror = format!("ror {dn}, {nn}, {}", h(sh as i64));
                check(ror_imm(w, d, X(9), sh), &ror);
            }
            refused(lsl_imm(w, d, X(9), b), "lsl by width");
            refused(lsr_imm(w, d, X(9), b), "lsr by width");
            refused(asr_imm(w, d, X(9), 200), "asr by 200");
            refused(ror_imm(w, d, X(9), b), "ror by width");
        }
        refused(lsl_imm(w, Sp, X(9), 1), "lsl to sp");
        for (lsb, width) in [(0, 1), (8, 8), (0, b - 1), (b - 1, 1), (3, b - 3), (2, 5)] {
            let (d, n) = (r(w, X(1)), r(w, X(2)));
            // A field that reaches the top bit is the preferred lsr/asr alias.
            let (u, s) = if lsb + width == b {
                (format!("lsr {d}, {n}, {}", h(lsb as i64)), format!("asr {d}, {n}, {}", h(lsb as i64)))
            } else {
                (format!("ubfx {d}, {n}, {}, {}", h(lsb as i64), h(width as i64)), format!("sbfx {d}, {n}, {}, {}", h(lsb as i64), h(width as i64)))
            };
            check(ubfx(w, X(1), X(2), lsb, width), &u);
            check(sbfx(w, X(1), X(2), lsb, width), &s);
        }
        refused(ubfx(w, X(1), X(2), 0, 0), "width 0");
        refused(ubfx(w, X(1), X(2), 1, b), "past the top");
        refused(sbfx(w, X(1), X(2), b, 1), "lsb = width");
        check(extr(w, X(0), X(1), X(2), 5), &format!("extr {}, {}, {}, #0x5", r(w, X(0)), r(w, X(1)), r(w, X(2))));
        refused(extr(w, X(0), X(1), X(2), b), "extr lsb = width");
        check(sxtb(w, X(3), X(4)), &format!("sxtb {}, w4", r(w, X(3))));
        check(sxth(w, X(3), X(4)), &format!("sxth {}, w4", r(w, X(3))));
        check(rev(w, X(3), X(4)), &format!("rev {}, {}", r(w, X(3)), r(w, X(4))));
        check(rev16(w, X(3), X(4)), &format!("rev16 {}, {}", r(w, X(3)), r(w, X(4))));
        check(clz(w, X(3), Zr), &format!("clz {}, {}", r(w, X(3)), r(w, Zr)));
        refused(rev(w, Sp, X(4)), "rev to sp");
    }
    check(uxtb(X(5), X(6)), "uxtb w5, w6");
    check(uxth(X(5), X(6)), "uxth w5, w6");
    check(sxtw(X(5), X(6)), "sxtw x5, w6");
    check(rev32(X(5), X(6)), "rev32 x5, x6");
}

// ---- conditional ---------------------------------------------------------------------------------

fn cond_name(c: Cond) -> &'static str {
    ["eq", "ne", "hs", "lo", "mi", "pl", "vs", "vc", "hi", "ls", "ge", "lt", "gt", "le", "al"][c as usize]
}

#[test]
fn conditional_select_and_compare_all_conditions() {
    for w in WS {
        for c in Cond::ALL {
            let cn = cond_name(c);
            check(csel(w, X(0), X(1), Zr, c), &format!("csel {}, {}, {}, {cn}", r(w, X(0)), r(w, X(1)), r(w, Zr)));
            check(csneg(w, X(0), X(1), X(2), c), &format!("csneg {}, {}, {}, {cn}", r(w, X(0)), r(w, X(1)), r(w, X(2))));
            check(csinv(w, X(0), X(1), X(2), c), &format!("csinv {}, {}, {}, {cn}", r(w, X(0)), r(w, X(1)), r(w, X(2))));
            if let Some(inv) = c.invert() {
                assert_eq!(inv.invert(), Some(c));
                check(cset(w, X(7), c), &format!("cset {}, {cn}", r(w, X(7))));
                check(csinc(w, X(0), X(1), X(2), c), &format!("cinc {}, {}, {}", r(w, X(0)), r(w, X(1)), cond_name(inv)).replace(&format!("cinc {}, {}, {}", r(w, X(0)), r(w, X(1)), cond_name(inv)), &dis(csinc(w, X(0), X(1), X(2), c).unwrap())));
            } else {
                refused(cset(w, X(7), c), "cset al");
            }
            for nzcv in [0u8, 4, 15] {
                check(ccmp(w, X(3), X(4), nzcv, c), &format!("ccmp {}, {}, {}, {cn}", r(w, X(3)), r(w, X(4)), h(nzcv as i64)));
                check(ccmn(w, X(3), Zr, nzcv, c), &format!("ccmn {}, {}, {}, {cn}", r(w, X(3)), r(w, Zr), h(nzcv as i64)));
                for imm in [0u32, 1, 31] {
                    check(ccmp_imm(w, X(3), imm, nzcv, c), &format!("ccmp {}, {}, {}, {cn}", r(w, X(3)), h(imm as i64), h(nzcv as i64)));
                    check(ccmn_imm(w, X(3), imm, nzcv, c), &format!("ccmn {}, {}, {}, {cn}", r(w, X(3)), h(imm as i64), h(nzcv as i64)));
                }
            }
            refused(ccmp(w, X(3), X(4), 16, c), "nzcv 16");
            refused(ccmp_imm(w, X(3), 32, 0, c), "imm5 32");
            refused(ccmp(w, Sp, X(4), 0, c), "ccmp sp");
        }
    }
}

// ---- loads and stores ----------------------------------------------------------------------------

fn ldst_name(acc: Access, size: Size) -> (&'static str, W) {
    match (acc, size) {
        (Access::Store, Size::B) => ("strb", W32),
        (Access::Store, Size::H) => ("strh", W32),
        (Access::Store, Size::S32) => ("str", W32),
        (Access::Store, Size::D64) => ("str", X64),
        (Access::Load, Size::B) => ("ldrb", W32),
        (Access::Load, Size::H) => ("ldrh", W32),
        (Access::Load, Size::S32) => ("ldr", W32),
        (Access::Load, Size::D64) => ("ldr", X64),
        (Access::LoadSigned, Size::B) => ("ldrsb", X64),
        (Access::LoadSigned, Size::H) => ("ldrsh", X64),
        (Access::LoadSigned, Size::S32) => ("ldrsw", X64),
        (Access::LoadSigned, Size::D64) => unreachable!(),
    }
}

fn mem(base: Reg, off: i64) -> String {
    if off == 0 { format!("[{}]", x(base)) } else { format!("[{}, {}]", x(base), h(off)) }
}

#[test]
fn loads_stores_all_forms() {
    let accs = [Access::Store, Access::Load, Access::LoadSigned];
    for size in [Size::B, Size::H, Size::S32, Size::D64] {
        let b = size.bytes();
        for acc in accs {
            if acc == Access::LoadSigned && size == Size::D64 {
                refused(ldst_imm(acc, size, X(0), X(1), 0), "ldrs 64");
                continue;
            }
            let (name, w) = ldst_name(acc, size);
            for t in with_zr() {
                for n in with_sp() {
                    for off in [0, b, 0xfff * b, 17 * b] {
                        check(ldst_imm(acc, size, t, n, off), &format!("{name} {}, {}", r(w, t), mem(n, off)));
                        assert!(is_lsi_offset(off, size));
                    }
                    for off in [-b, 0x1000 * b, -1] {
                        refused(ldst_imm(acc, size, t, n, off), "unsigned offset out of range");
                        assert!(!is_lsi_offset(off, size));
                    }
                    if b > 1 {
                        refused(ldst_imm(acc, size, t, n, 1), "misaligned");
                        assert!(!is_lsi_offset(1, size));
                    }
                    check(ldst_reg(acc, size, t, n, X(2)), &format!("{name} {}, [{}, x2]", r(w, t), x(n)));
                    check(ldst_reg(acc, size, t, n, Zr), &format!("{name} {}, [{}, xzr]", r(w, t), x(n)));
                    let uname = name.replacen("ldr", "ldur", 1).replacen("str", "stur", 1);
                    for off in [-256, -1, 0, 1, 255] {
                        check(ldst_unscaled(acc, size, t, n, off), &format!("{uname} {}, {}", r(w, t), mem(n, off)));
                    }
                    refused(ldst_unscaled(acc, size, t, n, 256), "unscaled 256");
                    refused(ldst_unscaled(acc, size, t, n, -257), "unscaled -257");
                }
                refused(ldst_imm(acc, size, t, Zr, 0), "zr as base");
                refused(ldst_reg(acc, size, t, X(1), Sp), "sp as index");
            }
            refused(ldst_imm(acc, size, Sp, X(1), 0), "sp as data register");
        }
    }
}

#[test]
fn load_store_pairs_all_modes() {
    for w in WS {
        let s = if w == X64 { 8 } else { 4 };
        for (load, name) in [(false, "stp"), (true, "ldp")] {
            for off in [0, s, -s, 63 * s, -64 * s] {
                for base in [X(3), Sp] {
                    let (a, b) = (r(w, X(19)), r(w, X(20)));
                    check(ldst_pair(load, w, X(19), X(20), base, off, PairMode::Offset), &format!("{name} {a}, {b}, {}", mem(base, off)));
                    check(ldst_pair(load, w, X(19), X(20), base, off, PairMode::PreIndex), &format!("{name} {a}, {b}, [{}, {}]!", x(base), h(off)));
                    check(ldst_pair(load, w, X(19), X(20), base, off, PairMode::PostIndex), &format!("{name} {a}, {b}, [{}], {}", x(base), h(off)));
                }
            }
            for off in [64 * s, -65 * s, 1] {
                refused(ldst_pair(load, w, X(1), X(2), Sp, off, PairMode::Offset), "pair offset");
            }
            refused(ldst_pair(load, w, X(1), X(2), X(1), 16, PairMode::PreIndex), "writeback into a transfer register");
            refused(ldst_pair(load, w, Sp, X(2), X(3), 16, PairMode::Offset), "sp as data");
        }
        check(ldst_pair(false, w, Zr, Zr, Sp, 0, PairMode::Offset), &format!("stp {}, {}, [sp]", r(w, Zr), r(w, Zr)));
        refused(ldst_pair(true, w, X(1), X(1), Sp, 0, PairMode::Offset), "ldp into one register twice");
    }
    check(prfm(0, X(1), 0), "prfm pldl1keep, [x1]");
    check(prfm(0, Sp, 32760), "prfm pldl1keep, [sp, #0x7ff8]");
    refused(prfm(0, X(1), 4), "prfm misaligned");
    refused(prfm(32, X(1), 0), "prfm op 32");
}

// ---- atomics --------------------------------------------------------------------------------------

#[test]
fn lse_atomics_and_exclusives() {
    let ops = [(AtomicOp::Add, "add"), (AtomicOp::Clr, "clr"), (AtomicOp::Eor, "eor"), (AtomicOp::Set, "set"), (AtomicOp::Swp, "swp")];
    let orders = [(Order::Relaxed, ""), (Order::Acquire, "a"), (Order::Release, "l"), (Order::AcqRel, "al")];
    for w in WS {
        for (op, on) in ops {
            for (o, sfx) in orders {
                for n in [X(2), Sp] {
                    let base = if op == AtomicOp::Swp { "swp".to_string() } else { format!("ld{on}") };
                    check(lse(op, o, w, X(1), X(7), n), &format!("{base}{sfx} {}, {}, [{}]", r(w, X(1)), r(w, X(7)), x(n)));
                    // st<op> alias: no result register, no acquire.
                    let st = op != AtomicOp::Swp && matches!(o, Order::Relaxed | Order::Release);
                    let want = if st { format!("st{on}{sfx} {}, [{}]", r(w, X(1)), x(n)) } else { format!("{base}{sfx} {}, {}, [{}]", r(w, X(1)), r(w, Zr), x(n)) };
                    check(lse(op, o, w, X(1), Zr, n), &want);
                }
                refused(lse(op, o, w, X(1), X(2), Zr), "zr as address");
                refused(lse(op, o, w, Sp, X(2), X(3)), "sp as source");
            }
        }
        for (o, sfx) in orders {
            check(cas(o, w, X(7), X(1), X(10)), &format!("cas{sfx} {}, {}, [x10]", r(w, X(7)), r(w, X(1))));
        }
        for n in [X(10), Sp] {
            check(ldxr(false, w, X(11), n), &format!("ldxr {}, [{}]", r(w, X(11)), x(n)));
            check(ldxr(true, w, X(11), n), &format!("ldaxr {}, [{}]", r(w, X(11)), x(n)));
            check(stxr(false, w, X(12), X(11), n), &format!("stxr w12, {}, [{}]", r(w, X(11)), x(n)));
            check(stxr(true, w, X(12), X(11), n), &format!("stlxr w12, {}, [{}]", r(w, X(11)), x(n)));
        }
        refused(stxr(false, w, X(11), X(11), X(10)), "status = data");
        refused(stxr(true, w, X(10), X(11), X(10)), "status = address");
    }
    // Load-acquire / store-release, every size.
    for (size, sfx, w) in [(Size::B, "b", W32), (Size::H, "h", W32), (Size::S32, "", W32), (Size::D64, "", X64)] {
        for t in with_zr() {
            for n in [X(0), X(30), Sp] {
                check(ldar(size, t, n), &format!("ldar{sfx} {}, [{}]", r(w, t), x(n)));
                check(stlr(size, t, n), &format!("stlr{sfx} {}, [{}]", r(w, t), x(n)));
            }
        }
        refused(ldar(size, X(1), Zr), "ldar from zr");
        refused(stlr(size, Sp, X(1)), "stlr of sp");
    }
}

// ---- branches and system ---------------------------------------------------------------------------

fn rel(off: i64) -> String {
    let b = off * 4;
    if b < 0 { format!("$-{:#x}", -b) } else { format!("$+{b:#x}") }
}

#[test]
fn branches_all_ranges() {
    for off in [0, 1, -1, (1 << 25) - 1, -(1 << 25), 12345] {
        check(b(off), &format!("b {}", rel(off)));
        check(bl(off), &format!("bl {}", rel(off)));
    }
    for off in [1 << 25, -(1 << 25) - 1] {
        refused(b(off), "b out of range");
        refused(bl(off), "bl out of range");
    }
    for off in [0, 3, -3, (1 << 18) - 1, -(1 << 18)] {
        for c in Cond::ALL {
            check(b_cond(c, off), &format!("b.{} {}", cond_name(c), rel(off)));
        }
        for w in WS {
            for t in with_zr() {
                check(cbz(w, t, off), &format!("cbz {}, {}", r(w, t), rel(off)));
                check(cbnz(w, t, off), &format!("cbnz {}, {}", r(w, t), rel(off)));
            }
        }
    }
    for off in [1 << 18, -(1 << 18) - 1] {
        refused(b_cond(Cond::Eq, off), "b.cond out of range");
        refused(cbz(X64, X(0), off), "cbz out of range");
    }
    refused(cbz(X64, Sp, 0), "cbz sp");
    for off in [0, 2, -3, (1 << 18) - 1, -(1 << 18)] {
        for w in WS {
            for t in with_zr() {
                check(ldr_literal(w, t, off), &format!("ldr {}, {}", r(w, t), rel(off)));
            }
        }
    }
    refused(ldr_literal(X64, X(1), 1 << 18), "ldr literal out of range");
    refused(ldr_literal(X64, Sp, 0), "ldr literal into sp");
    for n in gprs() {
        check(br(n), &format!("br {}", x(n)));
        check(blr(n), &format!("blr {}", x(n)));
        let want = if n == LR { "ret".to_string() } else { format!("ret {}", x(n)) };
        check(ret(n), &want);
    }
    refused(br(Sp), "br sp");
    refused(blr(Zr), "blr zr");
}

#[test]
fn system_and_simd() {
    check(Ok(NOP), "nop");
    // yaxpeax prints bti as its hint number: bti = hint #32, c #34, j #36, jc #38.
    check(Ok(bti(Bti::None)), "hint #0x20");
    check(Ok(bti(Bti::C)), "hint #0x22");
    check(Ok(bti(Bti::J)), "hint #0x24");
    check(Ok(bti(Bti::Jc)), "hint #0x26");
    check(Ok(dmb(Barrier::Ish)), "dmb ish");
    check(Ok(dmb(Barrier::Ishld)), "dmb ishld");
    check(Ok(dmb(Barrier::Ishst)), "dmb ishst");
    check(Ok(dmb(Barrier::Sy)), "dmb sy");
    for imm in [0u16, 1, 0x3e8, 0xffff] {
        check(Ok(brk(imm)), &format!("brk {}", h(imm as i64)));
    }
    for v in [0u8, 1, 31] {
        check(cnt_8b(v, 31 - v), &format!("cnt v{v}.8b, v{}.8b", 31 - v));
        check(addv_8b(v, 31 - v), &format!("addv b{v}, v{}.8b", 31 - v));
        for n in with_zr() {
            check(fmov_to_simd(X64, v, n), &format!("fmov d{v}, {}", x(n)));
            check(fmov_to_simd(W32, v, n), &format!("fmov s{v}, {}", r(W32, n)));
            check(fmov_from_simd(X64, n, v), &format!("fmov {}, d{v}", x(n)));
            check(fmov_from_simd(W32, n, v), &format!("fmov {}, s{v}", r(W32, n)));
        }
    }
    refused(cnt_8b(32, 0), "v32");
    refused(fmov_to_simd(X64, 0, Sp), "fmov from sp");
}

/// Words the kernel's arm64 JIT emits, as its jited images show them.
#[test]
fn exact_kernel_words() {
    assert_eq!(push_pair(FP, LR).unwrap(), 0xa9bf_7bfd); // stp x29, x30, [sp, #-16]!
    assert_eq!(pop_pair(FP, LR).unwrap(), 0xa8c1_7bfd); // ldp x29, x30, [sp], #16
    assert_eq!(mov_sp(X64, FP, Sp).unwrap(), 0x9100_03fd); // mov x29, sp
    assert_eq!(ret(LR).unwrap(), 0xd65f_03c0);
    assert_eq!(bti(Bti::C), 0xd503_245f);
    assert_eq!(bti(Bti::J), 0xd503_249f);
    assert_eq!(bti(Bti::Jc), 0xd503_24df);
    assert_eq!(NOP, 0xd503_201f);
    assert_eq!(mov(X64, X(0), X(7)).unwrap(), 0xaa07_03e0); // mov x0, x7
    assert_eq!(dmb(Barrier::Ish), 0xd503_3bbf);
    assert_eq!(brk(0x3e8), 0xd420_7d00); // AARCH64_BREAK_FAULT
}
