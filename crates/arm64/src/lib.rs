//! AArch64 instruction encoders for the arm64 JIT (trusted code).
//!
//! One function per instruction shape. Each returns the 32-bit instruction word, or an
//! [`EncodeError`] when an operand cannot be encoded (a register of the wrong class, an
//! immediate out of range, misaligned or not representable). Nothing is silently
//! truncated: a caller that wants a fallback (for example the JIT's "logical immediate,
//! else move to a temporary") asks first ([`bitmask_imm`], [`is_addsub_imm`]) or
//! matches on the error.
//!
//! Registers: [`Reg::X`] is a general register `0..=30`; register number 31 means the
//! stack pointer in some operand positions and the zero register in others, so it has
//! two names here, [`Reg::Sp`] and [`Reg::Zr`], and each encoder refuses the one its
//! operand cannot mean. The width of an operation ([`W::W32`] / [`W::X64`]) picks the
//! `w`/`x` view of the same registers.
//!
//! Branch offsets are in instructions (4-byte units) from the branch itself.
//! Every shape is decoded by an independent disassembler in `tests.rs`.

#[cfg(test)]
mod tests;

/// A general register operand.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reg {
    /// x0..x30 (w0..w30).
    X(u8),
    /// The stack pointer (register number 31 where the operand allows it).
    Sp,
    /// The zero register (register number 31 where the operand allows it).
    Zr,
}

pub use Reg::{Sp, Zr};

/// Frame pointer (x29) and link register (x30).
pub const FP: Reg = Reg::X(29);
pub const LR: Reg = Reg::X(30);

/// Operation width: 32-bit (`w` registers) or 64-bit (`x` registers).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum W {
    W32,
    X64,
}

impl W {
    fn sf(self) -> u32 {
        match self {
            W::W32 => 0,
            W::X64 => 1,
        }
    }
    fn bits(self) -> u32 {
        match self {
            W::W32 => 32,
            W::X64 => 64,
        }
    }
}

/// Access size of a load or store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Size {
    B,
    H,
    S32,
    D64,
}

impl Size {
    fn code(self) -> u32 {
        match self {
            Size::B => 0,
            Size::H => 1,
            Size::S32 => 2,
            Size::D64 => 3,
        }
    }
    /// Bytes accessed.
    pub fn bytes(self) -> i64 {
        1 << self.code()
    }
}

/// Condition codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Cond {
    Eq = 0,
    Ne = 1,
    Hs = 2,
    Lo = 3,
    Mi = 4,
    Pl = 5,
    Vs = 6,
    Vc = 7,
    Hi = 8,
    Ls = 9,
    Ge = 10,
    Lt = 11,
    Gt = 12,
    Le = 13,
    Al = 14,
}

impl Cond {
    pub const ALL: [Cond; 15] = [
        Cond::Eq,
        Cond::Ne,
        Cond::Hs,
        Cond::Lo,
        Cond::Mi,
        Cond::Pl,
        Cond::Vs,
        Cond::Vc,
        Cond::Hi,
        Cond::Ls,
        Cond::Ge,
        Cond::Lt,
        Cond::Gt,
        Cond::Le,
        Cond::Al,
    ];
    /// The opposite condition (`Al` has none).
    pub fn invert(self) -> Option<Cond> {
        if self == Cond::Al {
            return None;
        }
        Some(Cond::ALL[(self as usize) ^ 1])
    }
}

/// Shift applied to the second register of a shifted-register operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Shift {
    Lsl = 0,
    Lsr = 1,
    Asr = 2,
    Ror = 3,
}

/// Memory ordering of an LSE atomic or compare-and-swap.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Order {
    /// No ordering (plain `ldadd`).
    Relaxed,
    /// Acquire (`ldadda`).
    Acquire,
    /// Release (`ldaddl`).
    Release,
    /// Acquire and release (`ldaddal`), what the kernel's JIT uses for fetching forms.
    AcqRel,
}

impl Order {
    /// (A, R) bits.
    fn ar(self) -> (u32, u32) {
        match self {
            Order::Relaxed => (0, 0),
            Order::Acquire => (1, 0),
            Order::Release => (0, 1),
            Order::AcqRel => (1, 1),
        }
    }
}

/// LSE atomic memory operations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AtomicOp {
    Add,
    Clr,
    Eor,
    Set,
    Swp,
}

/// Addressing mode of a load/store pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PairMode {
    /// `[rn, #imm]`
    Offset,
    /// `[rn, #imm]!`
    PreIndex,
    /// `[rn], #imm`
    PostIndex,
}

/// `bti` targets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Bti {
    /// Plain `bti` (no target).
    None,
    C,
    J,
    Jc,
}

/// `dmb` domains used by the JIT.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Barrier {
    /// Inner shareable, all accesses (`dmb ish`).
    Ish,
    /// Inner shareable, loads (`dmb ishld`).
    Ishld,
    /// Inner shareable, stores (`dmb ishst`).
    Ishst,
    /// Full system (`dmb sy`).
    Sy,
}

/// An operand that cannot be encoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("arm64 {insn}: {msg}")]
pub struct EncodeError {
    pub insn: &'static str,
    pub msg: String,
}

pub type Result<T> = std::result::Result<T, EncodeError>;

fn err<T>(insn: &'static str, msg: impl Into<String>) -> Result<T> {
    Err(EncodeError { insn, msg: msg.into() })
}

/// Register number of an operand that may be a general register or the zero register.
fn zr(insn: &'static str, r: Reg) -> Result<u32> {
    match r {
        Reg::X(n) if n <= 30 => Ok(n as u32),
        Reg::Zr => Ok(31),
        Reg::X(n) => err(insn, format!("no register x{n}")),
        Reg::Sp => err(insn, "sp is not allowed in this operand (register 31 means zr here)"),
    }
}

/// Register number of an operand that may be a general register or the stack pointer.
fn sp(insn: &'static str, r: Reg) -> Result<u32> {
    match r {
        Reg::X(n) if n <= 30 => Ok(n as u32),
        Reg::Sp => Ok(31),
        Reg::X(n) => err(insn, format!("no register x{n}")),
        Reg::Zr => err(insn, "zr is not allowed in this operand (register 31 means sp here)"),
    }
}

/// Register number of an operand that must be x0..x30.
fn gp(insn: &'static str, r: Reg) -> Result<u32> {
    match r {
        Reg::X(n) if n <= 30 => Ok(n as u32),
        _ => err(insn, format!("{r:?} is not allowed here (x0..x30 only)")),
    }
}

fn uimm(insn: &'static str, what: &str, v: i64, bits: u32) -> Result<u32> {
    if v < 0 || v >= 1i64 << bits {
        return err(insn, format!("{what} {v} does not fit {bits} unsigned bits"));
    }
    Ok(v as u32)
}

fn simm(insn: &'static str, what: &str, v: i64, bits: u32) -> Result<u32> {
    let lim = 1i64 << (bits - 1);
    if v < -lim || v >= lim {
        return err(insn, format!("{what} {v} does not fit {bits} signed bits"));
    }
    Ok((v as u32) & ((1u32 << bits) - 1))
}

// ---- add/sub ------------------------------------------------------------------------------

/// Whether `imm` is encodable by `add`/`sub` (immediate): 12 bits, optionally shifted by 12.
pub fn is_addsub_imm(imm: u64) -> bool {
    imm & !0xfff == 0 || imm & !0xfff000 == 0
}

fn addsub_imm(insn: &'static str, w: W, op: u32, s: u32, rd: u32, rn: Reg, imm: u64) -> Result<u32> {
    let rn = sp(insn, rn)?;
    let (sh, imm12) = if imm & !0xfff == 0 {
        (0, imm as u32)
    } else if imm & !0xfff000 == 0 {
        (1, (imm >> 12) as u32)
    } else {
        return err(insn, format!("immediate {imm:#x} is neither 12 bits nor 12 bits shifted by 12"));
    };
    Ok(w.sf() << 31 | op << 30 | s << 29 | 0b100010 << 23 | sh << 22 | imm12 << 10 | rn << 5 | rd)
}

/// `add rd, rn, #imm` (rd and rn may be sp).
pub fn add_imm(w: W, rd: Reg, rn: Reg, imm: u64) -> Result<u32> {
    addsub_imm("add", w, 0, 0, sp("add", rd)?, rn, imm)
}
/// `sub rd, rn, #imm` (rd and rn may be sp).
pub fn sub_imm(w: W, rd: Reg, rn: Reg, imm: u64) -> Result<u32> {
    addsub_imm("sub", w, 1, 0, sp("sub", rd)?, rn, imm)
}
/// `adds rd, rn, #imm` (rd may be zr: `cmn`).
pub fn adds_imm(w: W, rd: Reg, rn: Reg, imm: u64) -> Result<u32> {
    addsub_imm("adds", w, 0, 1, zr("adds", rd)?, rn, imm)
}
/// `subs rd, rn, #imm` (rd may be zr: `cmp`).
pub fn subs_imm(w: W, rd: Reg, rn: Reg, imm: u64) -> Result<u32> {
    addsub_imm("subs", w, 1, 1, zr("subs", rd)?, rn, imm)
}
/// `cmp rn, #imm`
pub fn cmp_imm(w: W, rn: Reg, imm: u64) -> Result<u32> {
    subs_imm(w, Zr, rn, imm)
}
/// `cmn rn, #imm`
pub fn cmn_imm(w: W, rn: Reg, imm: u64) -> Result<u32> {
    adds_imm(w, Zr, rn, imm)
}
/// `mov rd, rn` where one of them is sp (`add rd, rn, #0`).
pub fn mov_sp(w: W, rd: Reg, rn: Reg) -> Result<u32> {
    add_imm(w, rd, rn, 0)
}

fn addsub_reg(insn: &'static str, w: W, op: u32, s: u32, rd: Reg, rn: Reg, rm: Reg, shift: Shift, amount: u32) -> Result<u32> {
    let (rd, rn, rm) = (zr(insn, rd)?, zr(insn, rn)?, zr(insn, rm)?);
    if shift == Shift::Ror {
        return err(insn, "ror is not a shift of add/sub");
    }
    if amount >= w.bits() {
        return err(insn, format!("shift amount {amount} >= {}", w.bits()));
    }
    Ok(w.sf() << 31 | op << 30 | s << 29 | 0b01011 << 24 | (shift as u32) << 22 | rm << 16 | amount << 10 | rn << 5 | rd)
}

/// `add rd, rn, rm{, shift #amount}`
pub fn add_shifted(w: W, rd: Reg, rn: Reg, rm: Reg, shift: Shift, amount: u32) -> Result<u32> {
    addsub_reg("add", w, 0, 0, rd, rn, rm, shift, amount)
}
/// `add rd, rn, rm`
pub fn add(w: W, rd: Reg, rn: Reg, rm: Reg) -> Result<u32> {
    addsub_reg("add", w, 0, 0, rd, rn, rm, Shift::Lsl, 0)
}
/// `sub rd, rn, rm`
pub fn sub(w: W, rd: Reg, rn: Reg, rm: Reg) -> Result<u32> {
    addsub_reg("sub", w, 1, 0, rd, rn, rm, Shift::Lsl, 0)
}
/// `adds rd, rn, rm`
pub fn adds(w: W, rd: Reg, rn: Reg, rm: Reg) -> Result<u32> {
    addsub_reg("adds", w, 0, 1, rd, rn, rm, Shift::Lsl, 0)
}
/// `subs rd, rn, rm`
pub fn subs(w: W, rd: Reg, rn: Reg, rm: Reg) -> Result<u32> {
    addsub_reg("subs", w, 1, 1, rd, rn, rm, Shift::Lsl, 0)
}
/// `cmp rn, rm`
pub fn cmp(w: W, rn: Reg, rm: Reg) -> Result<u32> {
    subs(w, Zr, rn, rm)
}
/// `cmn rn, rm`
pub fn cmn(w: W, rn: Reg, rm: Reg) -> Result<u32> {
    adds(w, Zr, rn, rm)
}
/// `neg rd, rm` (`sub rd, zr, rm`)
pub fn neg(w: W, rd: Reg, rm: Reg) -> Result<u32> {
    sub(w, rd, Zr, rm)
}

// ---- logical ------------------------------------------------------------------------------

/// Logical operations (register and immediate forms).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Logic {
    And,
    Orr,
    Eor,
    Ands,
}

impl Logic {
    fn opc(self) -> u32 {
        match self {
            Logic::And => 0,
            Logic::Orr => 1,
            Logic::Eor => 2,
            Logic::Ands => 3,
        }
    }
    fn name(self) -> &'static str {
        match self {
            Logic::And => "and",
            Logic::Orr => "orr",
            Logic::Eor => "eor",
            Logic::Ands => "ands",
        }
    }
}

/// Logical shifted register: `and/orr/eor/ands rd, rn, rm{, shift #amount}`; with
/// `invert` the second operand is complemented (`bic/orn/eon/bics`).
pub fn logic_reg(op: Logic, invert: bool, w: W, rd: Reg, rn: Reg, rm: Reg, shift: Shift, amount: u32) -> Result<u32> {
    let insn = op.name();
    let (rd, rn, rm) = (zr(insn, rd)?, zr(insn, rn)?, zr(insn, rm)?);
    if amount >= w.bits() {
        return err(insn, format!("shift amount {amount} >= {}", w.bits()));
    }
    Ok(w.sf() << 31 | op.opc() << 29 | 0b01010 << 24 | (shift as u32) << 22 | (invert as u32) << 21 | rm << 16 | amount << 10 | rn << 5 | rd)
}
/// `and rd, rn, rm`
pub fn and(w: W, rd: Reg, rn: Reg, rm: Reg) -> Result<u32> {
    logic_reg(Logic::And, false, w, rd, rn, rm, Shift::Lsl, 0)
}
/// `orr rd, rn, rm`
pub fn orr(w: W, rd: Reg, rn: Reg, rm: Reg) -> Result<u32> {
    logic_reg(Logic::Orr, false, w, rd, rn, rm, Shift::Lsl, 0)
}
/// `eor rd, rn, rm`
pub fn eor(w: W, rd: Reg, rn: Reg, rm: Reg) -> Result<u32> {
    logic_reg(Logic::Eor, false, w, rd, rn, rm, Shift::Lsl, 0)
}
/// `tst rn, rm` (`ands zr, rn, rm`)
pub fn tst(w: W, rn: Reg, rm: Reg) -> Result<u32> {
    logic_reg(Logic::Ands, false, w, Zr, rn, rm, Shift::Lsl, 0)
}
/// `mov rd, rm` between general registers (`orr rd, zr, rm`); neither may be sp.
pub fn mov(w: W, rd: Reg, rm: Reg) -> Result<u32> {
    logic_reg(Logic::Orr, false, w, rd, Zr, rm, Shift::Lsl, 0)
}
/// `mvn rd, rm` (`orn rd, zr, rm`)
pub fn mvn(w: W, rd: Reg, rm: Reg) -> Result<u32> {
    logic_reg(Logic::Orr, true, w, rd, Zr, rm, Shift::Lsl, 0)
}

/// The `(N, immr, imms)` fields of a logical immediate, or None when `value` (of width
/// `w`; for 32 bits only the low half may be set) is not a replicated rotated run of ones.
pub fn bitmask_imm(w: W, value: u64) -> Option<(u32, u32, u32)> {
    let v = match w {
        W::X64 => value,
        W::W32 => {
            if value >> 32 != 0 {
                return None;
            }
            value | value << 32
        }
    };
    if v == 0 || v == u64::MAX {
        return None;
    }
    // Smallest element size whose pattern repeats over the 64 bits.
    let mut size = 64u32;
    while size > 2 {
        let half = size / 2;
        let mask = (1u64 << half) - 1;
        if v & mask != (v >> half) & mask {
            break;
        }
        size = half;
    }
    let emask = if size == 64 { u64::MAX } else { (1u64 << size) - 1 };
    let elt = v & emask;
    let ones = elt.count_ones();
    let run = if ones == 64 { u64::MAX } else { (1u64 << ones) - 1 };
    let ror = |x: u64, r: u32| if r == 0 { x } else { ((x >> r) | (x << (size - r))) & emask };
    // elt = ror(run, immr) for some immr.
    let immr = (0..size).find(|&r| ror(run, r) == elt)?;
    let n = (size == 64) as u32;
    let imms = ((!(size - 1) << 1) | (ones - 1)) & 0x3f;
    Some((n, immr, imms))
}

/// Logical immediate: `and/orr/eor/ands rd, rn, #value`. rd may be sp for and/orr/eor
/// (zr for ands: `tst`); rn may be zr. Unencodable values are refused.
pub fn logic_imm(op: Logic, w: W, rd: Reg, rn: Reg, value: u64) -> Result<u32> {
    let insn = op.name();
    let rd = if op == Logic::Ands { zr(insn, rd)? } else { sp(insn, rd)? };
    let rn = zr(insn, rn)?;
    let Some((n, immr, imms)) = bitmask_imm(w, value) else {
        return err(insn, format!("{value:#x} is not a {}-bit logical immediate", w.bits()));
    };
    Ok(w.sf() << 31 | op.opc() << 29 | 0b100100 << 23 | n << 22 | immr << 16 | imms << 10 | rn << 5 | rd)
}
/// `tst rn, #value`
pub fn tst_imm(w: W, rn: Reg, value: u64) -> Result<u32> {
    logic_imm(Logic::Ands, w, Zr, rn, value)
}

// ---- move wide ----------------------------------------------------------------------------

fn movw(insn: &'static str, opc: u32, w: W, rd: Reg, imm16: u16, shift: u32) -> Result<u32> {
    let rd = zr(insn, rd)?;
    if shift % 16 != 0 || shift >= w.bits() {
        return err(insn, format!("shift {shift} is not a multiple of 16 below {}", w.bits()));
    }
    Ok(w.sf() << 31 | opc << 29 | 0b100101 << 23 | (shift / 16) << 21 | (imm16 as u32) << 5 | rd)
}
/// `movz rd, #imm16, lsl #shift`
pub fn movz(w: W, rd: Reg, imm16: u16, shift: u32) -> Result<u32> {
    movw("movz", 2, w, rd, imm16, shift)
}
/// `movk rd, #imm16, lsl #shift`
pub fn movk(w: W, rd: Reg, imm16: u16, shift: u32) -> Result<u32> {
    movw("movk", 3, w, rd, imm16, shift)
}
/// `movn rd, #imm16, lsl #shift` (rd = !(imm16 << shift))
pub fn movn(w: W, rd: Reg, imm16: u16, shift: u32) -> Result<u32> {
    movw("movn", 0, w, rd, imm16, shift)
}

// ---- shifts, bitfields, extract -------------------------------------------------------------

fn dp2(insn: &'static str, opcode: u32, w: W, rd: Reg, rn: Reg, rm: Reg) -> Result<u32> {
    let (rd, rn, rm) = (zr(insn, rd)?, zr(insn, rn)?, zr(insn, rm)?);
    Ok(w.sf() << 31 | 0x1ac0_0000 | rm << 16 | opcode << 10 | rn << 5 | rd)
}
/// `lslv rd, rn, rm` (shift by rm modulo the width)
pub fn lslv(w: W, rd: Reg, rn: Reg, rm: Reg) -> Result<u32> {
    dp2("lslv", 0b001000, w, rd, rn, rm)
}
/// `lsrv rd, rn, rm`
pub fn lsrv(w: W, rd: Reg, rn: Reg, rm: Reg) -> Result<u32> {
    dp2("lsrv", 0b001001, w, rd, rn, rm)
}
/// `asrv rd, rn, rm`
pub fn asrv(w: W, rd: Reg, rn: Reg, rm: Reg) -> Result<u32> {
    dp2("asrv", 0b001010, w, rd, rn, rm)
}
/// `rorv rd, rn, rm`
pub fn rorv(w: W, rd: Reg, rn: Reg, rm: Reg) -> Result<u32> {
    dp2("rorv", 0b001011, w, rd, rn, rm)
}
/// `udiv rd, rn, rm` (x / 0 = 0)
pub fn udiv(w: W, rd: Reg, rn: Reg, rm: Reg) -> Result<u32> {
    dp2("udiv", 0b000010, w, rd, rn, rm)
}
/// `sdiv rd, rn, rm` (x / 0 = 0, MIN / -1 = MIN)
pub fn sdiv(w: W, rd: Reg, rn: Reg, rm: Reg) -> Result<u32> {
    dp2("sdiv", 0b000011, w, rd, rn, rm)
}

fn dp3(insn: &'static str, o0: u32, w: W, rd: Reg, rn: Reg, rm: Reg, ra: Reg) -> Result<u32> {
    let (rd, rn, rm, ra) = (zr(insn, rd)?, zr(insn, rn)?, zr(insn, rm)?, zr(insn, ra)?);
    Ok(w.sf() << 31 | 0x1b00_0000 | rm << 16 | o0 << 15 | ra << 10 | rn << 5 | rd)
}
/// `madd rd, rn, rm, ra` (ra + rn * rm)
pub fn madd(w: W, rd: Reg, rn: Reg, rm: Reg, ra: Reg) -> Result<u32> {
    dp3("madd", 0, w, rd, rn, rm, ra)
}
/// `msub rd, rn, rm, ra` (ra - rn * rm)
pub fn msub(w: W, rd: Reg, rn: Reg, rm: Reg, ra: Reg) -> Result<u32> {
    dp3("msub", 1, w, rd, rn, rm, ra)
}
/// `mul rd, rn, rm` (`madd rd, rn, rm, zr`)
pub fn mul(w: W, rd: Reg, rn: Reg, rm: Reg) -> Result<u32> {
    madd(w, rd, rn, rm, Zr)
}

fn bitfield(insn: &'static str, opc: u32, w: W, rd: Reg, rn: Reg, immr: u32, imms: u32) -> Result<u32> {
    let (rd, rn) = (zr(insn, rd)?, zr(insn, rn)?);
    if immr >= w.bits() || imms >= w.bits() {
        return err(insn, format!("immr {immr} / imms {imms} out of range for {} bits", w.bits()));
    }
    Ok(w.sf() << 31 | opc << 29 | 0b100110 << 23 | w.sf() << 22 | immr << 16 | imms << 10 | rn << 5 | rd)
}
/// `sbfm rd, rn, #immr, #imms`
pub fn sbfm(w: W, rd: Reg, rn: Reg, immr: u32, imms: u32) -> Result<u32> {
    bitfield("sbfm", 0, w, rd, rn, immr, imms)
}
/// `ubfm rd, rn, #immr, #imms`
pub fn ubfm(w: W, rd: Reg, rn: Reg, immr: u32, imms: u32) -> Result<u32> {
    bitfield("ubfm", 2, w, rd, rn, immr, imms)
}
fn shift_amount(insn: &'static str, w: W, sh: u32) -> Result<u32> {
    if sh >= w.bits() {
        return err(insn, format!("shift {sh} >= {}", w.bits()));
    }
    Ok(sh)
}
/// `lsl rd, rn, #sh` (`ubfm rd, rn, #(-sh mod bits), #(bits - 1 - sh)`)
pub fn lsl_imm(w: W, rd: Reg, rn: Reg, sh: u32) -> Result<u32> {
    let sh = shift_amount("lsl", w, sh)?;
    let b = w.bits();
    ubfm(w, rd, rn, (b - sh) % b, b - 1 - sh)
}
/// `lsr rd, rn, #sh` (`ubfm rd, rn, #sh, #(bits - 1)`)
pub fn lsr_imm(w: W, rd: Reg, rn: Reg, sh: u32) -> Result<u32> {
    let sh = shift_amount("lsr", w, sh)?;
    ubfm(w, rd, rn, sh, w.bits() - 1)
}
/// `asr rd, rn, #sh` (`sbfm rd, rn, #sh, #(bits - 1)`)
pub fn asr_imm(w: W, rd: Reg, rn: Reg, sh: u32) -> Result<u32> {
    let sh = shift_amount("asr", w, sh)?;
    sbfm(w, rd, rn, sh, w.bits() - 1)
}
fn field(insn: &'static str, w: W, lsb: u32, width: u32) -> Result<()> {
    if width == 0 || lsb >= w.bits() || width > w.bits() - lsb {
        return err(insn, format!("field lsb {lsb} width {width} does not fit {} bits", w.bits()));
    }
    Ok(())
}
/// `ubfx rd, rn, #lsb, #width` (unsigned bit-field extract)
pub fn ubfx(w: W, rd: Reg, rn: Reg, lsb: u32, width: u32) -> Result<u32> {
    field("ubfx", w, lsb, width)?;
    ubfm(w, rd, rn, lsb, lsb + width - 1)
}
/// `sbfx rd, rn, #lsb, #width` (signed bit-field extract)
pub fn sbfx(w: W, rd: Reg, rn: Reg, lsb: u32, width: u32) -> Result<u32> {
    field("sbfx", w, lsb, width)?;
    sbfm(w, rd, rn, lsb, lsb + width - 1)
}
/// `uxtb wd, wn`
pub fn uxtb(rd: Reg, rn: Reg) -> Result<u32> {
    ubfm(W::W32, rd, rn, 0, 7)
}
/// `uxth wd, wn`
pub fn uxth(rd: Reg, rn: Reg) -> Result<u32> {
    ubfm(W::W32, rd, rn, 0, 15)
}
/// `sxtb rd, wn`
pub fn sxtb(w: W, rd: Reg, rn: Reg) -> Result<u32> {
    sbfm(w, rd, rn, 0, 7)
}
/// `sxth rd, wn`
pub fn sxth(w: W, rd: Reg, rn: Reg) -> Result<u32> {
    sbfm(w, rd, rn, 0, 15)
}
/// `sxtw xd, wn`
pub fn sxtw(rd: Reg, rn: Reg) -> Result<u32> {
    sbfm(W::X64, rd, rn, 0, 31)
}
/// `extr rd, rn, rm, #lsb` (bits lsb.. of rn:rm)
pub fn extr(w: W, rd: Reg, rn: Reg, rm: Reg, lsb: u32) -> Result<u32> {
    let (rd, rn, rm) = (zr("extr", rd)?, zr("extr", rn)?, zr("extr", rm)?);
    if lsb >= w.bits() {
        return err("extr", format!("lsb {lsb} >= {}", w.bits()));
    }
    Ok(w.sf() << 31 | 0b00100111 << 23 | w.sf() << 22 | rm << 16 | lsb << 10 | rn << 5 | rd)
}
/// `ror rd, rn, #sh` (`extr rd, rn, rn, #sh`)
pub fn ror_imm(w: W, rd: Reg, rn: Reg, sh: u32) -> Result<u32> {
    extr(w, rd, rn, rn, sh)
}

// ---- data processing, one source ------------------------------------------------------------

fn dp1(insn: &'static str, opcode: u32, w: W, rd: Reg, rn: Reg) -> Result<u32> {
    let (rd, rn) = (zr(insn, rd)?, zr(insn, rn)?);
    Ok(w.sf() << 31 | 0x5ac0_0000 | opcode << 10 | rn << 5 | rd)
}
/// `rev rd, rn`: all bytes of the register reversed.
pub fn rev(w: W, rd: Reg, rn: Reg) -> Result<u32> {
    dp1("rev", if w == W::X64 { 3 } else { 2 }, w, rd, rn)
}
/// `rev16 rd, rn`: bytes reversed in each 16-bit half-word.
pub fn rev16(w: W, rd: Reg, rn: Reg) -> Result<u32> {
    dp1("rev16", 1, w, rd, rn)
}
/// `rev32 xd, xn`: bytes reversed in each 32-bit word (64-bit only; in 32 bits it is `rev`).
pub fn rev32(rd: Reg, rn: Reg) -> Result<u32> {
    dp1("rev32", 2, W::X64, rd, rn)
}
/// `clz rd, rn`
pub fn clz(w: W, rd: Reg, rn: Reg) -> Result<u32> {
    dp1("clz", 4, w, rd, rn)
}

// ---- conditional select / compare -----------------------------------------------------------

fn condsel(insn: &'static str, op: u32, op2: u32, w: W, rd: Reg, rn: Reg, rm: Reg, c: Cond) -> Result<u32> {
    let (rd, rn, rm) = (zr(insn, rd)?, zr(insn, rn)?, zr(insn, rm)?);
    Ok(w.sf() << 31 | op << 30 | 0x1a80_0000 | rm << 16 | (c as u32) << 12 | op2 << 10 | rn << 5 | rd)
}
/// `csel rd, rn, rm, c`
pub fn csel(w: W, rd: Reg, rn: Reg, rm: Reg, c: Cond) -> Result<u32> {
    condsel("csel", 0, 0, w, rd, rn, rm, c)
}
/// `csinc rd, rn, rm, c`
pub fn csinc(w: W, rd: Reg, rn: Reg, rm: Reg, c: Cond) -> Result<u32> {
    condsel("csinc", 0, 1, w, rd, rn, rm, c)
}
/// `csinv rd, rn, rm, c`
pub fn csinv(w: W, rd: Reg, rn: Reg, rm: Reg, c: Cond) -> Result<u32> {
    condsel("csinv", 1, 0, w, rd, rn, rm, c)
}
/// `csneg rd, rn, rm, c`
pub fn csneg(w: W, rd: Reg, rn: Reg, rm: Reg, c: Cond) -> Result<u32> {
    condsel("csneg", 1, 1, w, rd, rn, rm, c)
}
/// `cset rd, c` (`csinc rd, zr, zr, !c`); `al`/`nv` are refused.
pub fn cset(w: W, rd: Reg, c: Cond) -> Result<u32> {
    let Some(inv) = c.invert() else { return err("cset", "no cset for al") };
    csinc(w, rd, Zr, Zr, inv)
}

fn ccmp_any(insn: &'static str, op: u32, w: W, rn: Reg, imm_bit: u32, rm_or_imm: u32, nzcv: u8, c: Cond) -> Result<u32> {
    let rn = zr(insn, rn)?;
    if nzcv > 15 {
        return err(insn, format!("nzcv {nzcv} > 15"));
    }
    Ok(w.sf() << 31 | op << 30 | 0x3a40_0000 | rm_or_imm << 16 | (c as u32) << 12 | imm_bit << 11 | rn << 5 | nzcv as u32)
}
/// `ccmp rn, rm, #nzcv, c`
pub fn ccmp(w: W, rn: Reg, rm: Reg, nzcv: u8, c: Cond) -> Result<u32> {
    ccmp_any("ccmp", 1, w, rn, 0, zr("ccmp", rm)?, nzcv, c)
}
/// `ccmp rn, #imm5, #nzcv, c`
pub fn ccmp_imm(w: W, rn: Reg, imm: u32, nzcv: u8, c: Cond) -> Result<u32> {
    ccmp_any("ccmp", 1, w, rn, 1, uimm("ccmp", "immediate", imm as i64, 5)?, nzcv, c)
}
/// `ccmn rn, rm, #nzcv, c`
pub fn ccmn(w: W, rn: Reg, rm: Reg, nzcv: u8, c: Cond) -> Result<u32> {
    ccmp_any("ccmn", 0, w, rn, 0, zr("ccmn", rm)?, nzcv, c)
}
/// `ccmn rn, #imm5, #nzcv, c`
pub fn ccmn_imm(w: W, rn: Reg, imm: u32, nzcv: u8, c: Cond) -> Result<u32> {
    ccmp_any("ccmn", 0, w, rn, 1, uimm("ccmn", "immediate", imm as i64, 5)?, nzcv, c)
}

// ---- loads and stores -----------------------------------------------------------------------

/// What a single-register load/store does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Access {
    /// `str`, `strb`, `strh`
    Store,
    /// `ldr`, `ldrb`, `ldrh` (zero-extending)
    Load,
    /// `ldrsb`, `ldrsh`, `ldrsw` into a 64-bit register
    LoadSigned,
}

impl Access {
    fn opc(self, size: Size, insn: &'static str) -> Result<u32> {
        Ok(match self {
            Access::Store => 0,
            Access::Load => 1,
            Access::LoadSigned if size == Size::D64 => return err(insn, "no sign-extending 64-bit load"),
            Access::LoadSigned => 2,
        })
    }
}

/// Unsigned-offset form: `ldr/str rt, [rn, #off]`, `off` in bytes, a multiple of the
/// access size below 4096 times it. rt may be zr (stores of zero); rn may be sp.
pub fn ldst_imm(acc: Access, size: Size, rt: Reg, rn: Reg, off: i64) -> Result<u32> {
    const I: &str = "ldr/str (unsigned offset)";
    let opc = acc.opc(size, I)?;
    let (rt, rn) = (zr(I, rt)?, sp(I, rn)?);
    let b = size.bytes();
    if off < 0 || off % b != 0 || off / b > 0xfff {
        return err(I, format!("offset {off} is not a multiple of {b} in 0..={}", 0xfff * b));
    }
    Ok(size.code() << 30 | 0x3900_0000 | opc << 22 | ((off / b) as u32) << 10 | rn << 5 | rt)
}

/// Whether `off` fits the unsigned-offset form for `size` (the kernel's `is_lsi_offset`).
pub fn is_lsi_offset(off: i64, size: Size) -> bool {
    let b = size.bytes();
    off >= 0 && off % b == 0 && off / b <= 0xfff
}

/// Register-offset form: `ldr/str rt, [rn, xm]`.
pub fn ldst_reg(acc: Access, size: Size, rt: Reg, rn: Reg, rm: Reg) -> Result<u32> {
    const I: &str = "ldr/str (register offset)";
    let opc = acc.opc(size, I)?;
    let (rt, rn, rm) = (zr(I, rt)?, sp(I, rn)?, zr(I, rm)?);
    // option 011 (lsl / uxtx), S = 0: no scaling.
    Ok(size.code() << 30 | 0x3820_0800 | opc << 22 | rm << 16 | 0b011 << 13 | rn << 5 | rt)
}

/// Unscaled form: `ldur/stur rt, [rn, #simm9]`.
pub fn ldst_unscaled(acc: Access, size: Size, rt: Reg, rn: Reg, off: i64) -> Result<u32> {
    const I: &str = "ldur/stur";
    let opc = acc.opc(size, I)?;
    let (rt, rn) = (zr(I, rt)?, sp(I, rn)?);
    let imm9 = simm(I, "offset", off, 9)?;
    Ok(size.code() << 30 | 0x3800_0000 | opc << 22 | imm9 << 12 | rn << 5 | rt)
}

/// `ldp/stp rt1, rt2, [rn...]` with the given mode; `off` in bytes, a multiple of the
/// register size in -64..=63 times it. With writeback, rn may not be rt1 or rt2.
pub fn ldst_pair(load: bool, w: W, rt1: Reg, rt2: Reg, rn: Reg, off: i64, mode: PairMode) -> Result<u32> {
    let insn = if load { "ldp" } else { "stp" };
    let (t1, t2, n) = (zr(insn, rt1)?, zr(insn, rt2)?, sp(insn, rn)?);
    let scale = if w == W::X64 { 8 } else { 4 };
    if off % scale != 0 {
        return err(insn, format!("offset {off} is not a multiple of {scale}"));
    }
    let imm7 = simm(insn, "scaled offset", off / scale, 7)?;
    if mode != PairMode::Offset && (n == t1 || n == t2) && n != 31 {
        return err(insn, "writeback base is also a transfer register");
    }
    if load && t1 == t2 {
        return err(insn, "both destinations are the same register");
    }
    let m = match mode {
        PairMode::PostIndex => 1,
        PairMode::Offset => 2,
        PairMode::PreIndex => 3,
    };
    let opc = if w == W::X64 { 2 } else { 0 };
    Ok(opc << 30 | 0b101 << 27 | m << 23 | (load as u32) << 22 | imm7 << 15 | t2 << 10 | n << 5 | t1)
}
/// `stp rt1, rt2, [sp, #-16]!` (the kernel's `A64_PUSH`).
pub fn push_pair(rt1: Reg, rt2: Reg) -> Result<u32> {
    ldst_pair(false, W::X64, rt1, rt2, Sp, -16, PairMode::PreIndex)
}
/// `ldp rt1, rt2, [sp], #16` (the kernel's `A64_POP`).
pub fn pop_pair(rt1: Reg, rt2: Reg) -> Result<u32> {
    ldst_pair(true, W::X64, rt1, rt2, Sp, 16, PairMode::PostIndex)
}

/// `ldr rt, <literal>`: load from pc + `off` instructions (±2^18), 32 or 64 bits.
pub fn ldr_literal(w: W, rt: Reg, off: i64) -> Result<u32> {
    let base = if w == W::X64 { 0x5800_0000 } else { 0x1800_0000 };
    Ok(base | simm("ldr (literal)", "offset", off, 19)? << 5 | zr("ldr (literal)", rt)?)
}

/// `prfm <op>, [rn, #off]` with `prfop` 0..31 (0 = pldl1keep); `off` a multiple of 8.
pub fn prfm(prfop: u8, rn: Reg, off: i64) -> Result<u32> {
    let rn = sp("prfm", rn)?;
    let op = uimm("prfm", "prefetch operation", prfop as i64, 5)?;
    if off < 0 || off % 8 != 0 || off / 8 > 0xfff {
        return err("prfm", format!("offset {off} is not a multiple of 8 in 0..=32760"));
    }
    Ok(0xf980_0000 | ((off / 8) as u32) << 10 | rn << 5 | op)
}

// ---- atomics --------------------------------------------------------------------------------

fn size_of_w(w: W) -> u32 {
    match w {
        W::W32 => 2,
        W::X64 => 3,
    }
}

/// LSE atomic memory operation: `ld<op>{a,l,al} rs, rt, [rn]` / `swp...` (rt gets the old
/// value, memory gets old <op> rs). With rt = zr (and not swp, not acquire) it is the
/// `st<op>` alias.
pub fn lse(op: AtomicOp, order: Order, w: W, rs: Reg, rt: Reg, rn: Reg) -> Result<u32> {
    const I: &str = "LSE atomic";
    let (rs, rt, rn) = (zr(I, rs)?, zr(I, rt)?, sp(I, rn)?);
    let (o3, opc) = match op {
        AtomicOp::Add => (0, 0),
        AtomicOp::Clr => (0, 1),
        AtomicOp::Eor => (0, 2),
        AtomicOp::Set => (0, 3),
        AtomicOp::Swp => (1, 0),
    };
    let (a, r) = order.ar();
    Ok(size_of_w(w) << 30 | 0x3820_0000 | a << 23 | r << 22 | rs << 16 | o3 << 15 | opc << 12 | rn << 5 | rt)
}

/// `cas{a,l,al} rs, rt, [rn]`: if [rn] == rs then [rn] = rt; rs gets the old value.
pub fn cas(order: Order, w: W, rs: Reg, rt: Reg, rn: Reg) -> Result<u32> {
    let (rs, rt, rn) = (zr("cas", rs)?, zr("cas", rt)?, sp("cas", rn)?);
    let (l, o0) = order.ar();
    Ok(size_of_w(w) << 30 | 0x08a0_7c00 | l << 22 | rs << 16 | o0 << 15 | rn << 5 | rt)
}

/// `ldxr rt, [rn]` (`acquire`: `ldaxr`).
pub fn ldxr(acquire: bool, w: W, rt: Reg, rn: Reg) -> Result<u32> {
    let (rt, rn) = (zr("ldxr", rt)?, sp("ldxr", rn)?);
    Ok(size_of_w(w) << 30 | 0x085f_7c00 | (acquire as u32) << 15 | rn << 5 | rt)
}

/// `stxr ws, rt, [rn]` (`release`: `stlxr`); ws gets 0 on success. ws must differ from
/// rt and rn.
pub fn stxr(release: bool, w: W, rs: Reg, rt: Reg, rn: Reg) -> Result<u32> {
    let (s, t, n) = (zr("stxr", rs)?, zr("stxr", rt)?, sp("stxr", rn)?);
    if s == t || (s == n && n != 31) {
        return err("stxr", "status register overlaps the data or address register");
    }
    Ok(size_of_w(w) << 30 | 0x0800_7c00 | s << 16 | (release as u32) << 15 | n << 5 | t)
}

/// `ldar{b,h} rt, [rn]`: load-acquire of `size` bytes (zero-extended).
pub fn ldar(size: Size, rt: Reg, rn: Reg) -> Result<u32> {
    Ok(size.code() << 30 | 0x08df_fc00 | sp("ldar", rn)? << 5 | zr("ldar", rt)?)
}

/// `stlr{b,h} rt, [rn]`: store-release of the low `size` bytes of rt.
pub fn stlr(size: Size, rt: Reg, rn: Reg) -> Result<u32> {
    Ok(size.code() << 30 | 0x089f_fc00 | sp("stlr", rn)? << 5 | zr("stlr", rt)?)
}

// ---- branches -------------------------------------------------------------------------------

/// `b off` (`off` in instructions from this one, ±2^25).
pub fn b(off: i64) -> Result<u32> {
    Ok(0x1400_0000 | simm("b", "offset", off, 26)?)
}
/// `bl off`
pub fn bl(off: i64) -> Result<u32> {
    Ok(0x9400_0000 | simm("bl", "offset", off, 26)?)
}
/// `b.c off` (±2^18 instructions)
pub fn b_cond(c: Cond, off: i64) -> Result<u32> {
    Ok(0x5400_0000 | simm("b.cond", "offset", off, 19)? << 5 | c as u32)
}
/// `cbz rt, off`
pub fn cbz(w: W, rt: Reg, off: i64) -> Result<u32> {
    Ok(w.sf() << 31 | 0x3400_0000 | simm("cbz", "offset", off, 19)? << 5 | zr("cbz", rt)?)
}
/// `cbnz rt, off`
pub fn cbnz(w: W, rt: Reg, off: i64) -> Result<u32> {
    Ok(w.sf() << 31 | 0x3500_0000 | simm("cbnz", "offset", off, 19)? << 5 | zr("cbnz", rt)?)
}
/// `br xn`
pub fn br(rn: Reg) -> Result<u32> {
    Ok(0xd61f_0000 | gp("br", rn)? << 5)
}
/// `blr xn`
pub fn blr(rn: Reg) -> Result<u32> {
    Ok(0xd63f_0000 | gp("blr", rn)? << 5)
}
/// `ret xn`
pub fn ret(rn: Reg) -> Result<u32> {
    Ok(0xd65f_0000 | gp("ret", rn)? << 5)
}

// ---- system ---------------------------------------------------------------------------------

/// `nop`
pub const NOP: u32 = 0xd503_201f;

/// `bti {c|j|jc}`
pub fn bti(t: Bti) -> u32 {
    let k = match t {
        Bti::None => 0,
        Bti::C => 1,
        Bti::J => 2,
        Bti::Jc => 3,
    };
    0xd503_241f | k << 6
}
/// `dmb <domain>`
pub fn dmb(d: Barrier) -> u32 {
    let crm = match d {
        Barrier::Ish => 0b1011,
        Barrier::Ishld => 0b1001,
        Barrier::Ishst => 0b1010,
        Barrier::Sy => 0b1111,
    };
    0xd503_30bf | crm << 8
}
/// `brk #imm16`
pub fn brk(imm: u16) -> u32 {
    0xd420_0000 | (imm as u32) << 5
}

// ---- SIMD for popcount ------------------------------------------------------------------------

fn vreg(insn: &'static str, v: u8) -> Result<u32> {
    if v > 31 {
        return err(insn, format!("no vector register v{v}"));
    }
    Ok(v as u32)
}
/// `cnt vd.8b, vn.8b` (population count per byte)
pub fn cnt_8b(vd: u8, vn: u8) -> Result<u32> {
    Ok(0x0e20_5800 | vreg("cnt", vn)? << 5 | vreg("cnt", vd)?)
}
/// `addv bd, vn.8b` (sum of the 8 bytes)
pub fn addv_8b(vd: u8, vn: u8) -> Result<u32> {
    Ok(0x0e31_b800 | vreg("addv", vn)? << 5 | vreg("addv", vd)?)
}
/// `fmov dd, xn` (64 bits) or `fmov sd, wn` (32 bits): general register to SIMD.
pub fn fmov_to_simd(w: W, vd: u8, rn: Reg) -> Result<u32> {
    let base = if w == W::X64 { 0x9e67_0000 } else { 0x1e27_0000 };
    Ok(base | zr("fmov", rn)? << 5 | vreg("fmov", vd)?)
}
/// `fmov xd, dn` (64 bits) or `fmov wd, sn` (32 bits): SIMD to general register.
pub fn fmov_from_simd(w: W, rd: Reg, vn: u8) -> Result<u32> {
    let base = if w == W::X64 { 0x9e66_0000 } else { 0x1e26_0000 };
    Ok(base | vreg("fmov", vn)? << 5 | zr("fmov", rd)?)
}

// ---- buffer -------------------------------------------------------------------------------

/// Instruction words being assembled.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Asm {
    pub words: Vec<u32>,
}

impl Asm {
    pub fn new() -> Asm {
        Asm::default()
    }
    /// Append an instruction word (from one of the encoders above).
    pub fn put(&mut self, word: u32) {
        self.words.push(word);
    }
    /// Append an encoder's result, passing its error on.
    pub fn emit(&mut self, word: Result<u32>) -> Result<()> {
        self.words.push(word?);
        Ok(())
    }
    /// Instructions so far.
    pub fn len(&self) -> usize {
        self.words.len()
    }
    pub fn is_empty(&self) -> bool {
        self.words.is_empty()
    }
    /// Little-endian bytes.
    pub fn bytes(&self) -> Vec<u8> {
        self.words.iter().flat_map(|w| w.to_le_bytes()).collect()
    }
}
