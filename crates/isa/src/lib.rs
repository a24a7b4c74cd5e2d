//! eBPF instruction model: decode, encode, disassemble, assemble.
//!
//! The model is the kernel's `struct bpf_insn`: an 8-byte slot with opcode, two 4-bit
//! registers, a 16-bit offset and a 32-bit immediate. `ld_imm64` takes two slots; the
//! second slot is kept as its own [`Insn`] (opcode 0) so that instruction indices are
//! slot indices, as they are for jump offsets, line_info and the kernel's verifier log.
//!
//! - [`mod@decode`]: the table of valid forms ([`decode::forms`]), [`decode()`]/[`validate`]
//!   (and `_relocatable` variants for unlinked ELF sections), [`DecodeError`] naming the slot.
//! - [`disasm`]: llvm-objdump-19 text ([`disasm::format()`]), both LLVM dialects.
//! - [`asm`]: the bpf_conformance assembler; [`conformance`]: its `.data` test files.
//! - Encoding is [`Insn::to_bytes`] / [`to_bytes`].

pub mod asm;
pub mod conformance;
pub mod decode;
pub mod disasm;
pub mod op;
pub mod sem;

pub use decode::{decode, validate, DecodeError, DecodeErrorKind, Kind};

use std::fmt;

/// One 8-byte instruction slot.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Insn {
    pub code: u8,
    pub dst: u8,
    pub src: u8,
    pub off: i16,
    pub imm: i32,
}

impl fmt::Debug for Insn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Insn {{ code: {:#04x}, dst: {}, src: {}, off: {}, imm: {} }}",
            self.code, self.dst, self.src, self.off, self.imm
        )
    }
}

impl Insn {
    pub const fn new(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> Insn {
        Insn { code, dst, src, off, imm }
    }

    /// Little-endian slot encoding (the only byte order Kops targets).
    pub fn from_bytes(b: [u8; 8]) -> Insn {
        Insn {
            code: b[0],
            dst: b[1] & 0x0f,
            src: b[1] >> 4,
            off: i16::from_le_bytes([b[2], b[3]]),
            imm: i32::from_le_bytes([b[4], b[5], b[6], b[7]]),
        }
    }

    pub fn to_bytes(&self) -> [u8; 8] {
        let off = self.off.to_le_bytes();
        let imm = self.imm.to_le_bytes();
        [
            self.code,
            (self.dst & 0x0f) | (self.src << 4),
            off[0],
            off[1],
            imm[0],
            imm[1],
            imm[2],
            imm[3],
        ]
    }

    pub fn class(&self) -> u8 {
        self.code & 0x07
    }
    /// ALU/JMP operation bits (`BPF_OP`).
    pub fn op(&self) -> u8 {
        self.code & 0xf0
    }
    /// ALU/JMP source bit (`BPF_K` or `BPF_X`).
    pub fn source(&self) -> u8 {
        self.code & 0x08
    }
    /// Load/store size bits (`BPF_SIZE`).
    pub fn size(&self) -> u8 {
        self.code & 0x18
    }
    /// Load/store mode bits (`BPF_MODE`).
    pub fn mode(&self) -> u8 {
        self.code & 0xe0
    }

    /// Bytes accessed by a load/store of this size.
    pub fn size_bytes(&self) -> usize {
        op::size_bytes(self.size())
    }

    pub fn is_ld_imm64(&self) -> bool {
        self.code == op::LD | op::IMM | op::DW
    }
    pub fn is_exit(&self) -> bool {
        self.code == op::JMP | op::EXIT
    }
    pub fn is_call(&self) -> bool {
        self.code == op::JMP | op::CALL
    }
    /// A helper call (`src_reg = 0`).
    pub fn is_helper_call(&self) -> bool {
        self.is_call() && self.src == 0
    }
    /// A bpf-to-bpf call (`src_reg = BPF_PSEUDO_CALL`), target `pc + 1 + imm`.
    pub fn is_pseudo_call(&self) -> bool {
        self.is_call() && self.src == op::PSEUDO_CALL
    }
    /// The payload-carrying first slot of a kinsn site (`ALU64|MOV|K`, `src_reg = 3`).
    pub fn is_kinsn_sidecar(&self) -> bool {
        self.code == op::ALU64 | op::MOV | op::K && self.src == op::PSEUDO_KINSN_SIDECAR
    }
    /// The call slot of a kinsn site (`JMP|CALL`, `src_reg = 4`, `imm` = op id).
    pub fn is_kinsn_call(&self) -> bool {
        self.code == op::JMP | op::CALL && self.src == op::PSEUDO_KINSN_CALL
    }
    /// The 52-bit payload a sidecar slot carries: dst (4 bits), off (16), imm (32).
    pub fn kinsn_payload(&self) -> u64 {
        (self.dst as u64 & 0xf) | ((self.off as u16 as u64) << 4) | ((self.imm as u32 as u64) << 20)
    }
    /// Any jump that has a pc-relative target (not call/exit), including `ja`/`gotol`.
    pub fn is_jump(&self) -> bool {
        let c = self.class();
        (c == op::JMP || c == op::JMP32) && !matches!(self.op(), op::CALL | op::EXIT)
    }
    /// Conditional jump (not `ja`).
    pub fn is_cond_jump(&self) -> bool {
        self.is_jump() && self.op() != op::JA
    }
    /// Jump target relative to `pc + 1`: `imm` for `gotol` (JMP32|JA), `off` otherwise.
    pub fn jump_offset(&self) -> i32 {
        if self.code == op::JMP32 | op::JA {
            self.imm
        } else {
            self.off as i32
        }
    }
    /// Absolute target of a jump or bpf-to-bpf call at `pc`, if it has one.
    pub fn target(&self, pc: usize) -> Option<i64> {
        if self.is_jump() {
            Some(pc as i64 + 1 + self.jump_offset() as i64)
        } else if self.is_pseudo_call() {
            Some(pc as i64 + 1 + self.imm as i64)
        } else {
            None
        }
    }

    // Builders for the shapes other crates create most often.
    pub const fn alu64_imm(opc: u8, dst: u8, imm: i32) -> Insn {
        Insn::new(op::ALU64 | opc | op::K, dst, 0, 0, imm)
    }
    pub const fn alu64_reg(opc: u8, dst: u8, src: u8) -> Insn {
        Insn::new(op::ALU64 | opc | op::X, dst, src, 0, 0)
    }
    pub const fn alu32_imm(opc: u8, dst: u8, imm: i32) -> Insn {
        Insn::new(op::ALU | opc | op::K, dst, 0, 0, imm)
    }
    pub const fn alu32_reg(opc: u8, dst: u8, src: u8) -> Insn {
        Insn::new(op::ALU | opc | op::X, dst, src, 0, 0)
    }
    pub const fn mov64_imm(dst: u8, imm: i32) -> Insn {
        Insn::alu64_imm(op::MOV, dst, imm)
    }
    pub const fn mov64_reg(dst: u8, src: u8) -> Insn {
        Insn::alu64_reg(op::MOV, dst, src)
    }
    pub const fn ldx(size: u8, dst: u8, src: u8, off: i16) -> Insn {
        Insn::new(op::LDX | op::MEM | size, dst, src, off, 0)
    }
    pub const fn stx(size: u8, dst: u8, src: u8, off: i16) -> Insn {
        Insn::new(op::STX | op::MEM | size, dst, src, off, 0)
    }
    pub const fn st(size: u8, dst: u8, off: i16, imm: i32) -> Insn {
        Insn::new(op::ST | op::MEM | size, dst, 0, off, imm)
    }
    pub const fn jmp_imm(opc: u8, dst: u8, imm: i32, off: i16) -> Insn {
        Insn::new(op::JMP | opc | op::K, dst, 0, off, imm)
    }
    pub const fn jmp_reg(opc: u8, dst: u8, src: u8, off: i16) -> Insn {
        Insn::new(op::JMP | opc | op::X, dst, src, off, 0)
    }
    pub const fn ja(off: i16) -> Insn {
        Insn::new(op::JMP | op::JA, 0, 0, off, 0)
    }
    pub const fn call_helper(id: i32) -> Insn {
        Insn::new(op::JMP | op::CALL, 0, 0, 0, id)
    }
    pub const fn exit() -> Insn {
        Insn::new(op::JMP | op::EXIT, 0, 0, 0, 0)
    }
    /// The two slots of `dst = imm64` (with a pseudo `src_reg` when not 0).
    pub const fn ld_imm64(dst: u8, src: u8, imm: u64) -> [Insn; 2] {
        [
            Insn::new(op::LD | op::IMM | op::DW, dst, src, 0, imm as u32 as i32),
            Insn::new(0, 0, 0, 0, (imm >> 32) as u32 as i32),
        ]
    }
}

/// Raw slots from bytes, without validation. Errors only on a length that is not a
/// multiple of 8.
pub fn slots_from_bytes(bytes: &[u8]) -> Result<Vec<Insn>, LengthError> {
    if !bytes.len().is_multiple_of(8) {
        return Err(LengthError { len: bytes.len() });
    }
    Ok(bytes
        .chunks_exact(8)
        .map(|c| Insn::from_bytes(c.try_into().unwrap()))
        .collect())
}

pub fn to_bytes(insns: &[Insn]) -> Vec<u8> {
    insns.iter().flat_map(|i| i.to_bytes()).collect()
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("instruction bytes have length {len}, not a multiple of 8")]
pub struct LengthError {
    pub len: usize,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slot_round_trip() {
        let i = Insn::new(0xb7, 3, 4, -2, -100);
        let b = i.to_bytes();
        assert_eq!(b, [0xb7, 0x43, 0xfe, 0xff, 0x9c, 0xff, 0xff, 0xff]);
        assert_eq!(Insn::from_bytes(b), i);
    }

    #[test]
    fn gotol_offset_is_imm() {
        let g = Insn::new(op::JMP32 | op::JA, 0, 0, 7, -3);
        assert_eq!(g.jump_offset(), -3);
        assert_eq!(g.target(10), Some(8));
        let j = Insn::ja(5);
        assert_eq!(j.target(0), Some(6));
    }
}
