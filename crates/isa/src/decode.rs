//! Validating decoder: which slots are instructions Linux accepts, and what they are.
//!
//! The model is a table: for each opcode byte, [`forms`] lists the instruction forms that
//! opcode can take, each with a rule for every other field (`dst_reg`, `src_reg`, `off`,
//! `imm`). An instruction is valid when one of its opcode's forms matches all four fields.
//! The rules are those of the Linux 6.x verifier's structural checks (`check_alu_op`,
//! the `do_check` JMP/LD/LDX/ST/STX branches, `check_atomic`, `resolve_pseudo_ldimm64`,
//! `bpf_opcode_in_insntable`), plus three forms the kernel does not load by itself:
//! `callx` (`JMP|CALL|X`, register in `dst_reg`, as LLVM and bpf_conformance encode it) and
//! the Kops kinsn transport (sidecar `ALU64|MOV|K` with `src_reg = 3`, call `JMP|CALL` with
//! `src_reg = 4`). Semantic checks (division by a zero immediate, shift ranges, writes to
//! r10, subprogram boundaries) belong to the verifier/analysis layers, not here.

use crate::{op, Insn, LengthError};
use std::fmt;

/// What a valid slot is. One kind per row of the form table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// `dst op= src|imm`: add, sub, mul, div, or, and, lsh, rsh, mod, xor, mov, arsh.
    Alu,
    /// Signed `sdiv`/`smod` (`DIV`/`MOD` with `off = 1`).
    AluSigned,
    /// `dst = -dst`.
    Neg,
    /// Sign-extending register move, `off` = source width (8/16/32).
    MovSx,
    /// Arena pointer cast (`ALU64|MOV|X`, `off = 1`, `imm` = 1 or 1 << 16).
    AddrSpaceCast,
    /// `le16/32/64`, `be16/32/64` (`ALU|END`).
    End,
    /// Unconditional byte swap (`ALU64|END|K`), imm 16/32/64.
    Bswap,
    /// Kops kinsn sidecar: `ALU64|MOV|K` with `src_reg = 3` carrying a 52-bit payload.
    KinsnSidecar,
    /// First slot of `ld_imm64`; `src_reg` is the pseudo kind (0..=6).
    LdImm64,
    /// Second slot of `ld_imm64` (opcode 0).
    LdImm64Hi,
    /// Legacy packet load `r0 = *(size *)skb[imm]`.
    LdAbs,
    /// Legacy packet load `r0 = *(size *)skb[src + imm]`.
    LdInd,
    /// `dst = *(size *)(src + off)`.
    Ldx,
    /// Sign-extending load (`BPF_MEMSX`).
    LdxSx,
    /// `*(size *)(dst + off) = imm`.
    St,
    /// `*(size *)(dst + off) = src`.
    Stx,
    /// add/or/and/xor (optionally fetch), xchg, cmpxchg on W or DW.
    Atomic,
    /// `dst = load_acquire((size *)(src + off))`.
    LoadAcquire,
    /// `store_release((size *)(dst + off), src)`.
    StoreRelease,
    /// `goto off` (`JMP|JA`).
    Ja,
    /// `gotol imm` (`JMP32|JA`).
    Gotol,
    /// `may_goto off` (`JMP|JCOND`, `src_reg = 0`).
    MayGoto,
    /// Conditional jump, JMP or JMP32.
    CondJump,
    /// Helper call, `imm` = helper id.
    CallHelper,
    /// bpf-to-bpf call, target `pc + 1 + imm`.
    CallPseudo,
    /// kfunc call, `imm` = BTF id, `off` = fd_array slot of the module BTF.
    CallKfunc,
    /// Kops kinsn call (`src_reg = 4`), `imm` = operation id, `off` = BTF fd_array slot.
    CallKinsn,
    /// Indirect call through `dst_reg`.
    Callx,
    Exit,
}

/// A rule for one field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rule {
    Zero,
    Any,
    /// A register number r0..=r10.
    Reg,
    OneOf(&'static [i32]),
}

impl Rule {
    fn allows(self, v: i64) -> bool {
        match self {
            Rule::Zero => v == 0,
            Rule::Any => true,
            Rule::Reg => (0..=10).contains(&v),
            Rule::OneOf(set) => set.iter().any(|&x| x as i64 == v),
        }
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Rule::Zero => write!(f, "must be 0"),
            Rule::Any => write!(f, "is unconstrained"),
            Rule::Reg => write!(f, "must be a register r0..r10"),
            Rule::OneOf(set) => {
                write!(f, "must be one of ")?;
                for (i, x) in set.iter().enumerate() {
                    if i > 0 {
                        write!(f, ", ")?;
                    }
                    if *x >= 0x20 {
                        write!(f, "{x:#x}")?;
                    } else {
                        write!(f, "{x}")?;
                    }
                }
                Ok(())
            }
        }
    }
}

/// One row of the table: a kind and the rules for dst, src, off, imm.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Form {
    pub kind: Kind,
    pub dst: Rule,
    pub src: Rule,
    pub off: Rule,
    pub imm: Rule,
}

const fn f(kind: Kind, dst: Rule, src: Rule, off: Rule, imm: Rule) -> Form {
    Form { kind, dst, src, off, imm }
}

use Kind as T;
use Rule::{Any, OneOf, Reg, Zero};

const WIDTHS: &[i32] = &[16, 32, 64];
const ATOMIC_IMMS: &[i32] = &[
    op::ADD as i32,
    op::ADD as i32 | op::FETCH,
    op::OR as i32,
    op::OR as i32 | op::FETCH,
    op::AND as i32,
    op::AND as i32 | op::FETCH,
    op::XOR as i32,
    op::XOR as i32 | op::FETCH,
    op::XCHG,
    op::CMPXCHG,
];
/// `imm` of load-acquire / store-release (`BPF_LOAD_ACQ`, `BPF_STORE_REL`, Linux 6.15).
pub const LOAD_ACQ: i32 = 0x100;
pub const STORE_REL: i32 = 0x110;

const ALU_K: &[Form] = &[f(T::Alu, Reg, Zero, Zero, Any)];
const ALU_X: &[Form] = &[f(T::Alu, Reg, Reg, Zero, Zero)];
const DIVMOD_K: &[Form] = &[f(T::Alu, Reg, Zero, Zero, Any), f(T::AluSigned, Reg, Zero, OneOf(&[1]), Any)];
const DIVMOD_X: &[Form] = &[f(T::Alu, Reg, Reg, Zero, Zero), f(T::AluSigned, Reg, Reg, OneOf(&[1]), Zero)];
const NEG: &[Form] = &[f(T::Neg, Reg, Zero, Zero, Zero)];
const MOV32_K: &[Form] = ALU_K;
const MOV64_K: &[Form] = &[
    f(T::Alu, Reg, Zero, Zero, Any),
    // Payload bits [3:0] live in dst_reg, so any 4-bit value is allowed.
    f(T::KinsnSidecar, Any, OneOf(&[op::PSEUDO_KINSN_SIDECAR as i32]), Any, Any),
];
const MOV32_X: &[Form] = &[f(T::Alu, Reg, Reg, Zero, Zero), f(T::MovSx, Reg, Reg, OneOf(&[8, 16]), Zero)];
const MOV64_X: &[Form] = &[
    f(T::Alu, Reg, Reg, Zero, Zero),
    f(T::MovSx, Reg, Reg, OneOf(&[8, 16, 32]), Zero),
    f(T::AddrSpaceCast, Reg, Reg, OneOf(&[1]), OneOf(&[1, 1 << 16])),
];
const END: &[Form] = &[f(T::End, Reg, Zero, Zero, OneOf(WIDTHS))];
const BSWAP: &[Form] = &[f(T::Bswap, Reg, Zero, Zero, OneOf(WIDTHS))];

const JA: &[Form] = &[f(T::Ja, Zero, Zero, Any, Zero)];
const GOTOL: &[Form] = &[f(T::Gotol, Zero, Zero, Zero, Any)];
const MAY_GOTO: &[Form] = &[f(T::MayGoto, Zero, Zero, Any, Zero)];
const COND_K: &[Form] = &[f(T::CondJump, Reg, Zero, Any, Any)];
const COND_X: &[Form] = &[f(T::CondJump, Reg, Reg, Any, Zero)];
const CALL: &[Form] = &[
    f(T::CallHelper, Zero, Zero, Zero, Any),
    f(T::CallPseudo, Zero, OneOf(&[op::PSEUDO_CALL as i32]), Zero, Any),
    f(T::CallKfunc, Zero, OneOf(&[op::PSEUDO_KFUNC_CALL as i32]), Any, Any),
    f(T::CallKinsn, Zero, OneOf(&[op::PSEUDO_KINSN_CALL as i32]), Any, Any),
];
const CALLX: &[Form] = &[f(T::Callx, Reg, Zero, Zero, Zero)];
// The kernel does not check `off` of exit.
const EXIT: &[Form] = &[f(T::Exit, Zero, Zero, Any, Zero)];

const LD_IMM64: &[Form] = &[f(T::LdImm64, Reg, OneOf(&[0, 1, 2, 3, 4, 5, 6]), Zero, Any)];
const LD_ABS: &[Form] = &[f(T::LdAbs, Zero, Zero, Zero, Any)];
const LD_IND: &[Form] = &[f(T::LdInd, Zero, Reg, Zero, Any)];
const LDX: &[Form] = &[f(T::Ldx, Reg, Reg, Any, Zero)];
const LDXSX: &[Form] = &[f(T::LdxSx, Reg, Reg, Any, Zero)];
const ST: &[Form] = &[f(T::St, Reg, Zero, Any, Any)];
const STX: &[Form] = &[f(T::Stx, Reg, Reg, Any, Zero)];
const ATOMIC_WDW: &[Form] = &[
    f(T::Atomic, Reg, Reg, Any, OneOf(ATOMIC_IMMS)),
    f(T::LoadAcquire, Reg, Reg, Any, OneOf(&[LOAD_ACQ])),
    f(T::StoreRelease, Reg, Reg, Any, OneOf(&[STORE_REL])),
];
const ATOMIC_BH: &[Form] = &[
    f(T::LoadAcquire, Reg, Reg, Any, OneOf(&[LOAD_ACQ])),
    f(T::StoreRelease, Reg, Reg, Any, OneOf(&[STORE_REL])),
];

/// `BPF_JCOND` (may_goto), not in [`op`] because only `JMP|JCOND|K` exists.
pub const JCOND: u8 = 0xe0;

/// The forms an opcode byte can take (empty: not an instruction).
pub fn forms(code: u8) -> &'static [Form] {
    let class = code & 0x07;
    let x = code & op::X != 0;
    match class {
        op::ALU | op::ALU64 => {
            let wide = class == op::ALU64;
            match (code & 0xf0, x) {
                (op::ADD | op::SUB | op::MUL | op::OR | op::AND | op::LSH | op::RSH | op::XOR | op::ARSH, false) => ALU_K,
                (op::ADD | op::SUB | op::MUL | op::OR | op::AND | op::LSH | op::RSH | op::XOR | op::ARSH, true) => ALU_X,
                (op::DIV | op::MOD, false) => DIVMOD_K,
                (op::DIV | op::MOD, true) => DIVMOD_X,
                (op::NEG, false) => NEG,
                (op::MOV, false) if wide => MOV64_K,
                (op::MOV, false) => MOV32_K,
                (op::MOV, true) if wide => MOV64_X,
                (op::MOV, true) => MOV32_X,
                (op::END, _) if !wide => END,
                (op::END, false) => BSWAP,
                _ => &[],
            }
        }
        op::JMP | op::JMP32 => {
            let jmp = class == op::JMP;
            match (code & 0xf0, x) {
                (op::JA, false) if jmp => JA,
                (op::JA, false) => GOTOL,
                (op::CALL, false) if jmp => CALL,
                (op::CALL, true) if jmp => CALLX,
                (op::EXIT, false) if jmp => EXIT,
                (JCOND, false) if jmp => MAY_GOTO,
                (op::JA | op::CALL | op::EXIT | JCOND | 0xf0, _) => &[],
                (_, false) => COND_K,
                (_, true) => COND_X,
            }
        }
        op::LD => match (code & 0xe0, code & 0x18) {
            (op::IMM, op::DW) => LD_IMM64,
            (op::ABS, op::B | op::H | op::W) => LD_ABS,
            (op::IND, op::B | op::H | op::W) => LD_IND,
            _ => &[],
        },
        op::LDX => match (code & 0xe0, code & 0x18) {
            (op::MEM, _) => LDX,
            (op::MEMSX, op::B | op::H | op::W) => LDXSX,
            _ => &[],
        },
        op::ST => match code & 0xe0 {
            op::MEM => ST,
            _ => &[],
        },
        _ /* STX */ => match (code & 0xe0, code & 0x18) {
            (op::MEM, _) => STX,
            (op::ATOMIC, op::W | op::DW) => ATOMIC_WDW,
            (op::ATOMIC, _) => ATOMIC_BH,
            _ => &[],
        },
    }
}

/// The field names used in messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    Dst,
    Src,
    Off,
    Imm,
}

impl fmt::Display for Field {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Field::Dst => "dst_reg",
            Field::Src => "src_reg",
            Field::Off => "off",
            Field::Imm => "imm",
        })
    }
}

/// Why a slot is not a valid instruction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecodeErrorKind {
    /// The byte length is not a multiple of 8; `index` is the partial slot.
    Truncated { len: usize },
    UnknownOpcode { code: u8 },
    /// A field breaks the rule of the (closest) form of its opcode.
    BadField { code: u8, field: Field, value: i64, rule: Rule },
    /// `ld_imm64` in the last slot, without its second half.
    LdImm64MissingSecond,
    /// The slot after `ld_imm64` is not a valid second half.
    LdImm64BadSecond { field: &'static str, value: i64 },
    /// A slot with opcode 0 that does not follow an `ld_imm64`.
    StrayLdImm64Second,
    /// A jump, call or `ld_imm64` function reference that leaves the program.
    TargetOutOfRange { target: i64, len: usize },
    /// A jump, call or function reference into the second slot of an `ld_imm64`.
    TargetInsideLdImm64 { target: i64 },
}

impl fmt::Display for DecodeErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use DecodeErrorKind::*;
        match self {
            Truncated { len } => write!(f, "truncated slot: {len} bytes is not a multiple of 8"),
            UnknownOpcode { code } => write!(f, "unknown opcode {code:#04x}"),
            BadField { code, field, value, rule } => {
                write!(f, "opcode {code:#04x}: {field} is {value}, {rule}")
            }
            LdImm64MissingSecond => write!(f, "ld_imm64 without its second slot (end of program)"),
            LdImm64BadSecond { field, value } => {
                write!(f, "second slot of ld_imm64 has {field} {value}, must be 0")
            }
            StrayLdImm64Second => write!(f, "opcode 0x00 outside an ld_imm64 (second slot without a first)"),
            TargetOutOfRange { target, len } => {
                write!(f, "target {target} is outside the program (0..{len})")
            }
            TargetInsideLdImm64 { target } => {
                write!(f, "target {target} is the second slot of an ld_imm64")
            }
        }
    }
}

/// A decode/validation error naming the slot index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeError {
    pub index: usize,
    pub kind: DecodeErrorKind,
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "instruction {} (byte offset {}): {}", self.index, self.index * 8, self.kind)
    }
}

impl std::error::Error for DecodeError {}

impl From<LengthError> for DecodeError {
    fn from(e: LengthError) -> Self {
        DecodeError { index: e.len / 8, kind: DecodeErrorKind::Truncated { len: e.len } }
    }
}

fn fields(i: &Insn) -> [(Field, i64); 4] {
    [
        (Field::Dst, i.dst as i64),
        (Field::Src, i.src as i64),
        (Field::Off, i.off as i64),
        (Field::Imm, i.imm as i64),
    ]
}

fn rules(form: &Form) -> [Rule; 4] {
    [form.dst, form.src, form.off, form.imm]
}

/// Classify one slot on its own (an opcode-0 slot is reported as a stray second half;
/// [`kinds`] knows about pairs).
pub fn classify(i: &Insn) -> Result<Kind, DecodeErrorKind> {
    let forms = forms(i.code);
    if forms.is_empty() {
        return Err(if i.code == 0 {
            DecodeErrorKind::StrayLdImm64Second
        } else {
            DecodeErrorKind::UnknownOpcode { code: i.code }
        });
    }
    let vals = fields(i);
    let mut best: Option<(usize, Field, i64, Rule)> = None;
    for form in forms {
        let bad: Vec<_> = rules(form)
            .into_iter()
            .zip(vals)
            .filter(|(r, (_, v))| !r.allows(*v))
            .collect();
        match bad.first() {
            None => {
                // Second-slot immediates of map fd/idx references must be 0; that is a
                // pair rule, checked in `kinds`.
                return Ok(form.kind);
            }
            Some(&(rule, (field, value))) => {
                if best.as_ref().is_none_or(|b| bad.len() < b.0) {
                    best = Some((bad.len(), field, value, rule));
                }
            }
        }
    }
    let (_, field, value, rule) = best.expect("non-empty form list");
    Err(DecodeErrorKind::BadField { code: i.code, field, value, rule })
}

/// Classify every slot, pairing each `ld_imm64` with its second slot. Checks everything
/// but jump/call targets (so it accepts relocatable code, whose calls are not yet resolved).
pub fn kinds(insns: &[Insn]) -> Result<Vec<Kind>, DecodeError> {
    let mut out = Vec::with_capacity(insns.len());
    let mut i = 0;
    while i < insns.len() {
        let insn = &insns[i];
        let kind = classify(insn).map_err(|kind| DecodeError { index: i, kind })?;
        out.push(kind);
        if kind == Kind::LdImm64 {
            let Some(hi) = insns.get(i + 1) else {
                return Err(DecodeError { index: i, kind: DecodeErrorKind::LdImm64MissingSecond });
            };
            let bad = [("opcode", hi.code as i64), ("dst_reg", hi.dst as i64), ("src_reg", hi.src as i64), ("off", hi.off as i64)]
                .into_iter()
                .find(|(_, v)| *v != 0)
                .or_else(|| {
                    // Map fd/index references keep the map in the first slot only.
                    let pseudo_map = matches!(insn.src, op::PSEUDO_MAP_FD | op::PSEUDO_MAP_IDX);
                    (pseudo_map && hi.imm != 0).then_some(("imm (map reference)", hi.imm as i64))
                });
            if let Some((field, value)) = bad {
                return Err(DecodeError { index: i + 1, kind: DecodeErrorKind::LdImm64BadSecond { field, value } });
            }
            out.push(Kind::LdImm64Hi);
            i += 2;
        } else {
            i += 1;
        }
    }
    Ok(out)
}

/// Target slot of a jump, bpf-to-bpf call or `ld_imm64` function reference at `pc`.
pub fn target_of(kind: Kind, insn: &Insn, pc: usize) -> Option<i64> {
    let rel = match kind {
        Kind::Ja | Kind::CondJump | Kind::MayGoto => insn.off as i64,
        Kind::Gotol | Kind::CallPseudo => insn.imm as i64,
        Kind::LdImm64 if insn.src == op::PSEUDO_FUNC => insn.imm as i64,
        _ => return None,
    };
    Some(pc as i64 + 1 + rel)
}

/// Full validation: every slot is a valid instruction, `ld_imm64` pairs are complete, and
/// every jump, bpf-to-bpf call and function reference lands on an instruction start.
pub fn validate(insns: &[Insn]) -> Result<(), DecodeError> {
    check_targets(insns, &kinds(insns)?, true)
}

/// Validation for relocatable code (an ELF section before relocation): like [`validate`],
/// but bpf-to-bpf calls and `ld_imm64` function references are not checked, since their
/// immediates are filled in by relocations. Jumps never are relocated, so they are checked.
pub fn validate_relocatable(insns: &[Insn]) -> Result<(), DecodeError> {
    check_targets(insns, &kinds(insns)?, false)
}

fn check_targets(insns: &[Insn], kinds: &[Kind], calls: bool) -> Result<(), DecodeError> {
    for (pc, (insn, &kind)) in insns.iter().zip(kinds).enumerate() {
        if !calls && matches!(kind, Kind::CallPseudo | Kind::LdImm64) {
            continue;
        }
        if let Some(t) = target_of(kind, insn, pc) {
            let err = |kind| Err(DecodeError { index: pc, kind });
            if t < 0 || t >= insns.len() as i64 {
                return err(DecodeErrorKind::TargetOutOfRange { target: t, len: insns.len() });
            }
            if kinds[t as usize] == Kind::LdImm64Hi {
                return err(DecodeErrorKind::TargetInsideLdImm64 { target: t });
            }
        }
    }
    Ok(())
}

/// Bytes to validated instructions (see [`validate`]).
pub fn decode(bytes: &[u8]) -> Result<Vec<Insn>, DecodeError> {
    let insns = crate::slots_from_bytes(bytes)?;
    validate(&insns)?;
    Ok(insns)
}

/// Bytes of relocatable code to instructions (see [`validate_relocatable`]).
pub fn decode_relocatable(bytes: &[u8]) -> Result<Vec<Insn>, DecodeError> {
    let insns = crate::slots_from_bytes(bytes)?;
    validate_relocatable(&insns)?;
    Ok(insns)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn k(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> Result<Kind, DecodeErrorKind> {
        classify(&Insn::new(code, dst, src, off, imm))
    }

    /// The opcodes of the valid instruction set, written out by hand from the RFC 9669
    /// opcode table and the kernel's `bpf_opcode_in_insntable` (plus callx, may_goto,
    /// and the atomic B/H forms of load-acquire/store-release).
    const VALID_OPCODES: &[u8] = &[
        // ALU (32) K/X: add sub mul div or and lsh rsh neg(K) mod xor mov arsh end(le/be)
        0x04, 0x0c, 0x14, 0x1c, 0x24, 0x2c, 0x34, 0x3c, 0x44, 0x4c, 0x54, 0x5c, 0x64, 0x6c, 0x74, 0x7c, 0x84,
        0x94, 0x9c, 0xa4, 0xac, 0xb4, 0xbc, 0xc4, 0xcc, 0xd4, 0xdc,
        // ALU64
        0x07, 0x0f, 0x17, 0x1f, 0x27, 0x2f, 0x37, 0x3f, 0x47, 0x4f, 0x57, 0x5f, 0x67, 0x6f, 0x77, 0x7f, 0x87,
        0x97, 0x9f, 0xa7, 0xaf, 0xb7, 0xbf, 0xc7, 0xcf, 0xd7,
        // JMP: ja, jeq..jsle K/X, call, callx, exit, may_goto
        0x05, 0x15, 0x1d, 0x25, 0x2d, 0x35, 0x3d, 0x45, 0x4d, 0x55, 0x5d, 0x65, 0x6d, 0x75, 0x7d, 0x85, 0x8d,
        0x95, 0xa5, 0xad, 0xb5, 0xbd, 0xc5, 0xcd, 0xd5, 0xdd, 0xe5,
        // JMP32: gotol, jeq..jsle K/X
        0x06, 0x16, 0x1e, 0x26, 0x2e, 0x36, 0x3e, 0x46, 0x4e, 0x56, 0x5e, 0x66, 0x6e, 0x76, 0x7e, 0xa6, 0xae,
        0xb6, 0xbe, 0xc6, 0xce, 0xd6, 0xde,
        // LD: imm64, abs B/H/W, ind B/H/W
        0x18, 0x20, 0x28, 0x30, 0x40, 0x48, 0x50,
        // LDX mem W/H/B/DW, memsx W/H/B
        0x61, 0x69, 0x71, 0x79, 0x81, 0x89, 0x91,
        // ST, STX mem
        0x62, 0x6a, 0x72, 0x7a, 0x63, 0x6b, 0x73, 0x7b,
        // STX atomic W, H, B, DW
        0xc3, 0xcb, 0xd3, 0xdb,
    ];

    #[test]
    fn opcode_table_matches_hand_list() {
        for code in 0..=255u8 {
            assert_eq!(!forms(code).is_empty(), VALID_OPCODES.contains(&code), "opcode {code:#04x}");
        }
    }

    #[test]
    fn field_rules() {
        use Kind::*;
        assert_eq!(k(0x3f, 1, 2, 1, 0), Ok(AluSigned));
        assert_eq!(k(0x9c, 1, 2, 1, 0), Ok(AluSigned));
        assert!(k(0x0f, 1, 2, 1, 0).is_err()); // off=1 only for div/mod
        assert_eq!(k(0xbf, 1, 2, 32, 0), Ok(MovSx));
        assert!(k(0xbc, 1, 2, 32, 0).is_err()); // no 32-bit movsx in ALU
        assert_eq!(k(0xbc, 1, 2, 16, 0), Ok(MovSx));
        assert_eq!(k(0xbf, 1, 2, 1, 0x10000), Ok(AddrSpaceCast));
        assert_eq!(k(0xd7, 1, 0, 0, 64), Ok(Bswap));
        assert!(k(0xd7, 1, 0, 0, 8).is_err());
        assert!(k(0xdf, 1, 0, 0, 16).is_err());
        assert_eq!(k(0xdc, 1, 0, 0, 16), Ok(End));
        assert_eq!(k(0xb7, 15, 3, -1, -1), Ok(KinsnSidecar));
        assert!(k(0xb7, 1, 2, 0, 0).is_err());
        assert_eq!(k(0x85, 0, 4, 2, 9), Ok(CallKinsn));
        assert_eq!(k(0x85, 0, 2, 3, 9), Ok(CallKfunc));
        assert!(k(0x85, 0, 1, 3, 9).is_err()); // pseudo call with off
        assert!(k(0x85, 0, 3, 0, 9).is_err());
        assert_eq!(k(0x8d, 3, 0, 0, 0), Ok(Callx));
        assert!(k(0x8d, 0, 3, 0, 0).is_err()); // register belongs in dst
        assert_eq!(k(0x95, 0, 0, 5, 0), Ok(Exit)); // the kernel ignores exit's off
        assert!(k(0x95, 1, 0, 0, 0).is_err());
        assert_eq!(k(0x06, 0, 0, 0, -7), Ok(Gotol));
        assert!(k(0x06, 0, 0, 1, 0).is_err());
        assert!(k(0x05, 0, 0, 1, 1).is_err());
        assert_eq!(k(0xe5, 0, 0, 3, 0), Ok(MayGoto));
        assert!(k(0x1d, 1, 11, 0, 0).is_err());
        assert!(k(0x15, 1, 0, 0, 0).is_ok());
        assert!(k(0x1d, 1, 2, 0, 1).is_err());
        assert_eq!(k(0x91, 1, 2, -4, 0), Ok(LdxSx));
        assert!(k(0x61, 1, 2, 0, 1).is_err());
        assert!(k(0x62, 1, 2, 0, 1).is_err());
        assert_eq!(k(0xc3, 1, 2, 0, 0xa1), Ok(Atomic));
        assert!(k(0xc3, 1, 2, 0, 0xe0).is_err()); // xchg without fetch
        assert!(k(0xdb, 1, 2, 0, 0x11).is_err());
        assert_eq!(k(0xd3, 1, 2, 0, LOAD_ACQ), Ok(LoadAcquire));
        assert!(k(0xd3, 1, 2, 0, 0).is_err());
        assert_eq!(k(0x20, 0, 0, 0, 5), Ok(LdAbs));
        assert!(k(0x20, 1, 0, 0, 5).is_err());
        assert_eq!(k(0x48, 0, 3, 0, 5), Ok(LdInd));
        assert!(k(0x18, 1, 7, 0, 0).is_err());
        assert!(k(0x18, 11, 0, 0, 0).is_err());
    }

    #[test]
    fn pairs_and_targets() {
        let ld = Insn::ld_imm64(1, 0, 0x1_0000_0002);
        let ok = [ld[0], ld[1], Insn::exit()];
        assert!(validate(&ok).is_ok());
        let e = validate(&[Insn::exit(), ld[0]]).unwrap_err();
        assert_eq!((e.index, e.kind.clone()), (1, DecodeErrorKind::LdImm64MissingSecond));
        assert!(e.to_string().starts_with("instruction 1 (byte offset 8): "), "{e}");
        let e = validate(&[ld[0], Insn::new(0, 1, 0, 0, 0), Insn::exit()]).unwrap_err();
        assert_eq!(e.index, 1);
        let map = Insn::ld_imm64(1, op::PSEUDO_MAP_FD, 0x1_0000_0000);
        assert!(validate(&[map[0], map[1], Insn::exit()]).is_err());
        let e = validate(&[Insn::new(0, 0, 0, 0, 0), Insn::exit()]).unwrap_err();
        assert_eq!(e.kind, DecodeErrorKind::StrayLdImm64Second);

        let e = validate(&[Insn::ja(1), Insn::exit()]).unwrap_err();
        assert_eq!(e.kind, DecodeErrorKind::TargetOutOfRange { target: 2, len: 2 });
        let e = validate(&[Insn::ja(-2), Insn::exit()]).unwrap_err();
        assert_eq!(e.kind, DecodeErrorKind::TargetOutOfRange { target: -1, len: 2 });
        let e = validate(&[Insn::ja(1), ld[0], ld[1], Insn::exit()]).unwrap_err();
        assert_eq!(e.kind, DecodeErrorKind::TargetInsideLdImm64 { target: 2 });
        let call = Insn::new(0x85, 0, 1, 0, 5);
        assert!(validate(&[call, Insn::exit()]).is_err());
        assert!(decode_relocatable(&crate::to_bytes(&[call, Insn::exit()])).is_ok());
        assert!(decode_relocatable(&crate::to_bytes(&[Insn::ja(1), Insn::exit()])).is_err());
        let gotol = Insn::new(0x06, 0, 0, 0, 0);
        assert!(validate(&[gotol, Insn::exit()]).is_ok());
        let func = Insn::ld_imm64(2, op::PSEUDO_FUNC, 7);
        assert!(validate(&[func[0], func[1], Insn::exit()]).is_err());
    }

    #[test]
    fn errors_name_slot_and_reason() {
        let e = decode(&[0x95, 0, 0, 0, 0, 0, 0, 0, 0xb7, 0xb1, 0, 0, 0, 0, 0, 0]).unwrap_err();
        assert_eq!(e.index, 1);
        assert_eq!(e.to_string(), "instruction 1 (byte offset 8): opcode 0xb7: src_reg is 11, must be 0");
        let e = decode(&[0x95, 0, 0, 0, 0, 0, 0, 0, 0xb7]).unwrap_err();
        assert_eq!((e.index, e.kind), (1, DecodeErrorKind::Truncated { len: 9 }));
        let e = decode(&[0xff, 0, 0, 0, 0, 0, 0, 0]).unwrap_err();
        assert_eq!(e.to_string(), "instruction 0 (byte offset 0): unknown opcode 0xff");
        let e = decode(&Insn::new(0xbf, 12, 1, 0, 0).to_bytes()).unwrap_err();
        assert!(e.to_string().contains("dst_reg is 12, must be a register r0..r10"), "{e}");
    }

    /// Round trip: every valid opcode with representative fields decodes and re-encodes to
    /// the same bytes.
    #[test]
    fn round_trip_every_form() {
        let mut n = 0;
        for code in 0..=255u8 {
            for form in forms(code) {
                let pick = |r: Rule, any: i64| -> i64 {
                    match r {
                        Rule::Zero => 0,
                        Rule::Any => any,
                        Rule::Reg => 10,
                        Rule::OneOf(s) => *s.last().unwrap() as i64,
                    }
                };
                let i = Insn::new(
                    code,
                    pick(form.dst, 15) as u8,
                    pick(form.src, 15) as u8,
                    pick(form.off, -3) as i16,
                    pick(form.imm, -7) as i32,
                );
                let mut prog = vec![i];
                if form.kind == Kind::LdImm64 {
                    prog.push(Insn::new(0, 0, 0, 0, if matches!(i.src, 1 | 5) { 0 } else { 9 }));
                }
                if form.kind == Kind::LdImm64 && i.src == op::PSEUDO_FUNC {
                    prog[0].imm = 0;
                }
                // Jumps and calls go to the next slot (the exit appended below).
                match form.kind {
                    Kind::Ja | Kind::CondJump | Kind::MayGoto => prog[0].off = 0,
                    Kind::Gotol | Kind::CallPseudo => prog[0].imm = 0,
                    _ => {}
                }
                prog.push(Insn::exit());
                let bytes = crate::to_bytes(&prog);
                let back = decode(&bytes).unwrap_or_else(|e| panic!("{code:#04x} {:?}: {e}", form.kind));
                assert_eq!(crate::to_bytes(&back), bytes);
                n += 1;
            }
        }
        assert!(n >= VALID_OPCODES.len(), "{n}");
    }
}

#[cfg(test)]
mod prop {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig { cases: 4096, ..ProptestConfig::default() })]
        /// Arbitrary bytes never panic the decoder; whatever decodes re-encodes to the same bytes.
        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            if let Ok(insns) = decode(&bytes) {
                prop_assert_eq!(crate::to_bytes(&insns), bytes.clone());
            }
            let _ = decode_relocatable(&bytes);
        }

        /// Slots built from valid-looking opcodes (so that most get past the opcode check).
        #[test]
        fn decode_valid_opcodes_never_panics(slots in proptest::collection::vec(
            (0usize..VALID.len(), any::<u8>(), any::<i16>(), any::<i32>()), 1..40)) {
            let insns: Vec<Insn> = slots.iter().map(|&(c, regs, off, imm)| {
                Insn::new(VALID[c], regs & 0xf, regs >> 4, off % 8, imm % 8)
            }).collect();
            let bytes = crate::to_bytes(&insns);
            if let Ok(back) = decode(&bytes) {
                prop_assert_eq!(back, insns);
            }
        }
    }

    const VALID: &[u8] = &[
        0x04, 0x0c, 0x3c, 0x84, 0x94, 0xb4, 0xbc, 0xd4, 0xdc, 0x07, 0x0f, 0x37, 0x87, 0x97, 0xb7, 0xbf,
        0xd7, 0x05, 0x15, 0x1d, 0x85, 0x8d, 0x95, 0xe5, 0x06, 0x16, 0x1e, 0x18, 0x00, 0x20, 0x48,
        0x61, 0x91, 0x62, 0x7b, 0xc3, 0xdb, 0xd3,
    ];
}
