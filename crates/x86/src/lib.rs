//! x86-64 instruction encoders shared by the JIT and the native emits (trusted code).
//!
//! One method of [`Asm`] per machine-instruction shape, in the spirit of the emit helpers of
//! Linux's `arch/x86/net/bpf_jit_comp.c`. Where the kernel picks a particular encoding among
//! several equivalent ones, these encoders pick the same one, so that a JIT built on them can
//! produce the kernel's bytes:
//!
//! - register-register ALU ops, `mov`, `test`, `cmp` use the `op r/m, reg` form (`0x89`,
//!   `0x01`, ...) with the destination in ModRM.rm;
//! - memory operands always carry a displacement, disp8 when it fits (even `[rdi+0]`), as the
//!   kernel's `emit_insn_suffix` does;
//! - `alu_ri` uses the imm8 form (`0x83`) when the immediate fits, else the short `rax` form,
//!   else `0x81`; a shift by 1 uses `0xD1`.
//!
//! Every method appends to [`Asm::code`]. Nothing here allocates registers or decides
//! semantics: callers (the JIT, the kinsn native emits) do.

mod features;

pub use features::{CpuFeatures, Feature, FeatureError};

/// General-purpose registers, numbered as in the hardware encoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum Reg {
    Rax = 0,
    Rcx = 1,
    Rdx = 2,
    Rbx = 3,
    Rsp = 4,
    Rbp = 5,
    Rsi = 6,
    Rdi = 7,
    R8 = 8,
    R9 = 9,
    R10 = 10,
    R11 = 11,
    R12 = 12,
    R13 = 13,
    R14 = 14,
    R15 = 15,
}

impl Reg {
    pub const ALL: [Reg; 16] = [
        Reg::Rax,
        Reg::Rcx,
        Reg::Rdx,
        Reg::Rbx,
        Reg::Rsp,
        Reg::Rbp,
        Reg::Rsi,
        Reg::Rdi,
        Reg::R8,
        Reg::R9,
        Reg::R10,
        Reg::R11,
        Reg::R12,
        Reg::R13,
        Reg::R14,
        Reg::R15,
    ];

    pub fn num(self) -> u8 {
        self as u8
    }
    /// Low three bits (the ModRM/SIB/opcode field).
    pub fn low(self) -> u8 {
        self as u8 & 7
    }
    /// r8..r15 need a REX extension bit.
    pub fn is_ext(self) -> bool {
        self as u8 >= 8
    }
    /// As an 8-bit operand, spl/bpl/sil/dil need a REX prefix (else they mean ah/ch/dh/bh).
    pub fn byte_needs_rex(self) -> bool {
        matches!(self, Reg::Rsp | Reg::Rbp | Reg::Rsi | Reg::Rdi)
    }
    pub fn from_num(n: u8) -> Option<Reg> {
        Reg::ALL.get(n as usize).copied()
    }
    pub fn name64(self) -> &'static str {
        [
            "rax", "rcx", "rdx", "rbx", "rsp", "rbp", "rsi", "rdi", "r8", "r9", "r10", "r11", "r12",
            "r13", "r14", "r15",
        ][self as usize]
    }
}

/// Operand width of a general-purpose register operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Width {
    /// 32-bit: the result is zero-extended into the full register by the hardware.
    W32,
    W64,
}

impl Width {
    pub fn from_is64(is64: bool) -> Width {
        if is64 {
            Width::W64
        } else {
            Width::W32
        }
    }
    fn is64(self) -> bool {
        self == Width::W64
    }
}

/// Memory access size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Size {
    S8,
    S16,
    S32,
    S64,
}

impl Size {
    pub fn bytes(self) -> usize {
        match self {
            Size::S8 => 1,
            Size::S16 => 2,
            Size::S32 => 4,
            Size::S64 => 8,
        }
    }
    pub fn from_bytes(n: usize) -> Option<Size> {
        match n {
            1 => Some(Size::S8),
            2 => Some(Size::S16),
            4 => Some(Size::S32),
            8 => Some(Size::S64),
            _ => None,
        }
    }
}

/// Condition codes, numbered as in `Jcc`/`SETcc`/`CMOVcc` (`0x70 + cc`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Cond {
    O = 0,
    No = 1,
    /// below (unsigned <), = C
    B = 2,
    /// above or equal (unsigned >=), = NC
    Ae = 3,
    E = 4,
    Ne = 5,
    /// below or equal (unsigned <=)
    Be = 6,
    /// above (unsigned >)
    A = 7,
    S = 8,
    Ns = 9,
    P = 10,
    Np = 11,
    /// signed <
    L = 12,
    /// signed >=
    Ge = 13,
    /// signed <=
    Le = 14,
    /// signed >
    G = 15,
}

impl Cond {
    pub fn negate(self) -> Cond {
        Cond::from_num(self as u8 ^ 1)
    }
    pub fn from_num(n: u8) -> Cond {
        use Cond::*;
        [O, No, B, Ae, E, Ne, Be, A, S, Ns, P, Np, L, Ge, Le, G][(n & 15) as usize]
    }
}

/// The eight classic ALU operations, numbered as their `/digit` in `0x81`/`0x83`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Alu {
    Add = 0,
    Or = 1,
    Adc = 2,
    Sbb = 3,
    And = 4,
    Sub = 5,
    Xor = 6,
    Cmp = 7,
}

/// Shift and rotate operations, numbered as their `/digit` in `0xC1`/`0xD1`/`0xD3`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Shift {
    Rol = 0,
    Ror = 1,
    Shl = 4,
    Shr = 5,
    Sar = 7,
}

/// A memory operand `[base + index*scale + disp]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Mem {
    pub base: Reg,
    /// Index register and scale (1, 2, 4 or 8). The index may not be `rsp`.
    pub index: Option<(Reg, u8)>,
    pub disp: i32,
}

impl Mem {
    pub fn new(base: Reg, disp: i32) -> Mem {
        Mem { base, index: None, disp }
    }
    /// `[base + index*scale + disp]`. Panics if `index` is rsp or `scale` is not 1/2/4/8
    /// (a programming error in the caller, not an input error).
    pub fn indexed(base: Reg, index: Reg, scale: u8, disp: i32) -> Mem {
        assert!(index != Reg::Rsp, "rsp cannot be an index register");
        assert!(matches!(scale, 1 | 2 | 4 | 8), "bad scale {scale}");
        Mem { base, index: Some((index, scale)), disp }
    }
}

pub fn is_imm8(v: i64) -> bool {
    (-128..=127).contains(&v)
}
pub fn is_simm32(v: i64) -> bool {
    (i32::MIN as i64..=i32::MAX as i64).contains(&v)
}
pub fn is_uimm32(v: u64) -> bool {
    v <= u32::MAX as u64
}

/// Length of the `Jcc`/`JMP` forms, for callers that size jumps.
pub const JMP_REL8_LEN: usize = 2;
pub const JMP_REL32_LEN: usize = 5;
pub const JCC_REL8_LEN: usize = 2;
pub const JCC_REL32_LEN: usize = 6;
pub const CALL_REL32_LEN: usize = 5;

/// An append-only x86-64 code buffer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Asm {
    pub code: Vec<u8>,
}

impl Asm {
    pub fn new() -> Asm {
        Asm { code: Vec::new() }
    }
    pub fn len(&self) -> usize {
        self.code.len()
    }
    pub fn is_empty(&self) -> bool {
        self.code.is_empty()
    }
    pub fn bytes(&self) -> &[u8] {
        &self.code
    }
    pub fn into_bytes(self) -> Vec<u8> {
        self.code
    }
    pub fn clear(&mut self) {
        self.code.clear()
    }

    // ---- raw bytes ------------------------------------------------------------------------

    pub fn byte(&mut self, b: u8) {
        self.code.push(b);
    }
    pub fn raw(&mut self, b: &[u8]) {
        self.code.extend_from_slice(b);
    }
    pub fn imm16(&mut self, v: u16) {
        self.raw(&v.to_le_bytes());
    }
    pub fn imm32(&mut self, v: i32) {
        self.raw(&v.to_le_bytes());
    }
    pub fn imm64(&mut self, v: u64) {
        self.raw(&v.to_le_bytes());
    }

    // ---- prefixes and operand bytes -------------------------------------------------------

    /// REX with the given bits; emitted when any bit is set or `force` (byte registers).
    fn rex(&mut self, w: bool, r: bool, x: bool, b: bool, force: bool) {
        if w || r || x || b || force {
            self.byte(0x40 | (w as u8) << 3 | (r as u8) << 2 | (x as u8) << 1 | b as u8);
        }
    }
    /// REX for `reg` in ModRM.reg and `rm` in ModRM.rm (register direct).
    fn rex_rr(&mut self, w: bool, reg: Reg, rm: Reg, force: bool) {
        self.rex(w, reg.is_ext(), false, rm.is_ext(), force);
    }
    fn rex_rm(&mut self, w: bool, reg: Reg, m: &Mem, force: bool) {
        let x = m.index.map(|(i, _)| i.is_ext()).unwrap_or(false);
        self.rex(w, reg.is_ext(), x, m.base.is_ext(), force);
    }
    fn modrm_rr(&mut self, reg: u8, rm: Reg) {
        self.byte(0xC0 | (reg & 7) << 3 | rm.low());
    }
    /// ModRM (+SIB) (+disp) for a memory operand; `reg` is the ModRM.reg field.
    fn modrm_mem(&mut self, reg: u8, m: &Mem) {
        let reg = (reg & 7) << 3;
        let (md, disp8) = if is_imm8(m.disp as i64) { (0x40, true) } else { (0x80, false) };
        match m.index {
            None if m.base.low() != 4 => self.byte(md | reg | m.base.low()),
            None => {
                // rsp/r12 base needs a SIB byte with "no index".
                self.byte(md | reg | 4);
                self.byte(0x24);
            }
            Some((idx, scale)) => {
                let ss = match scale {
                    1 => 0,
                    2 => 1,
                    4 => 2,
                    _ => 3,
                };
                self.byte(md | reg | 4);
                self.byte(ss << 6 | idx.low() << 3 | m.base.low());
            }
        }
        if disp8 {
            self.byte(m.disp as i8 as u8);
        } else {
            self.imm32(m.disp);
        }
    }
    /// 3-byte VEX prefix: `map` 1 = 0F, 2 = 0F38, 3 = 0F3A; `pp` 0 none, 1 66, 2 F3, 3 F2.
    fn vex3(&mut self, reg: Reg, rm: Reg, map: u8, w: bool, vvvv: Reg, pp: u8) {
        self.byte(0xC4);
        self.byte((!reg.is_ext() as u8) << 7 | 1 << 6 | (!rm.is_ext() as u8) << 5 | map);
        self.byte((w as u8) << 7 | (!vvvv.num() & 15) << 3 | pp);
    }

    // ---- moves ----------------------------------------------------------------------------

    /// `mov dst, src` (`89 /r`). The 32-bit form zero-extends.
    pub fn mov_rr(&mut self, w: Width, dst: Reg, src: Reg) {
        self.rex_rr(w.is64(), src, dst, false);
        self.byte(0x89);
        self.modrm_rr(src.low(), dst);
    }
    /// `mov dst32, imm32` (`B8+r id`): zero-extends into the 64-bit register.
    pub fn mov_r32_imm32(&mut self, dst: Reg, imm: u32) {
        self.rex(false, false, false, dst.is_ext(), false);
        self.byte(0xB8 + dst.low());
        self.imm32(imm as i32);
    }
    /// `mov dst64, simm32` (`REX.W C7 /0 id`): sign-extends the immediate.
    pub fn mov_r64_simm32(&mut self, dst: Reg, imm: i32) {
        self.rex(true, false, false, dst.is_ext(), false);
        self.byte(0xC7);
        self.modrm_rr(0, dst);
        self.imm32(imm);
    }
    /// `movabs dst, imm64` (`REX.W B8+r io`).
    pub fn movabs(&mut self, dst: Reg, imm: u64) {
        self.rex(true, false, false, dst.is_ext(), false);
        self.byte(0xB8 + dst.low());
        self.imm64(imm);
    }
    /// Load a 32-bit immediate the way the kernel's `emit_mov_imm32` does: `xor` for 0,
    /// `mov r32, imm32` when the value is non-negative or `!sign_extend`, else
    /// `mov r64, simm32` (sign-extended to 64 bits).
    pub fn mov_imm32(&mut self, sign_extend: bool, dst: Reg, imm: i32) {
        if sign_extend && imm < 0 {
            self.mov_r64_simm32(dst, imm);
        } else if imm == 0 {
            self.alu_rr(Alu::Xor, Width::W32, dst, dst);
        } else {
            self.mov_r32_imm32(dst, imm as u32);
        }
    }
    /// Load a 64-bit immediate the way the kernel's `emit_mov_imm64` does: the shortest of
    /// the 32-bit forms when the value fits, else `movabs`.
    pub fn mov_imm64(&mut self, dst: Reg, imm: u64) {
        if is_uimm32(imm) {
            self.mov_imm32(false, dst, imm as u32 as i32);
        } else if is_simm32(imm as i64) {
            self.mov_imm32(true, dst, imm as i32);
        } else {
            self.movabs(dst, imm);
        }
    }
    /// `xchg a, b` (`87 /r`).
    pub fn xchg_rr(&mut self, w: Width, a: Reg, b: Reg) {
        self.rex_rr(w.is64(), b, a, false);
        self.byte(0x87);
        self.modrm_rr(b.low(), a);
    }
    /// `cmovcc dst, src` (`0F 40+cc /r`).
    pub fn cmov(&mut self, cc: Cond, w: Width, dst: Reg, src: Reg) {
        self.rex_rr(w.is64(), dst, src, false);
        self.raw(&[0x0F, 0x40 + cc as u8]);
        self.modrm_rr(dst.low(), src);
    }
    /// `setcc dst8` (`0F 90+cc /0`).
    pub fn setcc(&mut self, cc: Cond, dst: Reg) {
        self.rex(false, false, false, dst.is_ext(), dst.byte_needs_rex());
        self.raw(&[0x0F, 0x90 + cc as u8]);
        self.modrm_rr(0, dst);
    }
    /// `movzx dst, src8/src16` (`0F B6`/`0F B7`). `from` is S8 or S16.
    pub fn movzx_rr(&mut self, w: Width, from: Size, dst: Reg, src: Reg) {
        let op = match from {
            Size::S8 => 0xB6,
            Size::S16 => 0xB7,
            _ => panic!("movzx from {from:?}"),
        };
        self.rex_rr(w.is64(), dst, src, from == Size::S8 && src.byte_needs_rex());
        self.raw(&[0x0F, op]);
        self.modrm_rr(dst.low(), src);
    }
    /// `movsx dst, src8/src16` (`0F BE`/`0F BF`) or `movsxd dst64, src32` (`63`).
    /// The 32-bit 8-bit form always carries a REX prefix, as the kernel's `emit_movsx_reg`.
    pub fn movsx_rr(&mut self, w: Width, from: Size, dst: Reg, src: Reg) {
        match from {
            Size::S8 => {
                self.rex_rr(w.is64(), dst, src, true);
                self.raw(&[0x0F, 0xBE]);
            }
            Size::S16 => {
                self.rex_rr(w.is64(), dst, src, false);
                self.raw(&[0x0F, 0xBF]);
            }
            Size::S32 => {
                assert!(w.is64(), "movsxd needs a 64-bit destination");
                self.rex_rr(true, dst, src, false);
                self.byte(0x63);
            }
            Size::S64 => panic!("movsx from 64 bits"),
        }
        self.modrm_rr(dst.low(), src);
    }
    /// `lea dst, [mem]` (`8D /r`).
    pub fn lea(&mut self, w: Width, dst: Reg, m: Mem) {
        self.rex_rm(w.is64(), dst, &m, false);
        self.byte(0x8D);
        self.modrm_mem(dst.low(), &m);
    }

    /// `lea dst, [rip + rel]` (`REX.W 8D /r`, ModRM mod 00 rm 101): `rel` counts from the
    /// end of this 7-byte instruction.
    pub fn lea_rip(&mut self, dst: Reg, rel: i32) {
        self.rex(true, dst.is_ext(), false, false, false);
        self.byte(0x8D);
        self.byte((dst.low() << 3) | 5);
        self.imm32(rel);
    }
    /// `add dst, gs:[disp]` (`65 REX.W 03 /r`, SIB with no base and no index: an absolute
    /// 32-bit address in the GS segment), the kernel's per-CPU address lowering.
    pub fn add_r_gs_abs32(&mut self, dst: Reg, disp: u32) {
        self.byte(0x65);
        self.rex(true, dst.is_ext(), false, false, false);
        self.byte(0x03);
        self.byte((dst.low() << 3) | 4);
        self.byte(0x25);
        self.imm32(disp as i32);
    }

    // ---- loads and stores -----------------------------------------------------------------

    /// `mov dst, qword ptr [base + disp32]` (`REX.W 8B /r`, always a 32-bit displacement,
    /// as the kernel's `LOAD_TAIL_CALL_CNT_PTR`). `base` must not be rsp/r12 (no SIB).
    pub fn load64_disp32(&mut self, dst: Reg, base: Reg, disp: i32) {
        assert!(base.low() != 4, "load64_disp32: rsp/r12 base needs a SIB byte");
        self.rex(true, dst.is_ext(), false, base.is_ext(), false);
        self.byte(0x8B);
        self.byte(0x80 | (dst.low() << 3) | base.low());
        self.imm32(disp);
    }
    /// Zero-extending load, in the kernel's `emit_ldx` forms: 1 and 2 bytes with
    /// `movzx r64, m8/m16` (REX.W), 4 bytes with `mov r32, m32`, 8 with `mov r64, m64`.
    pub fn load(&mut self, size: Size, dst: Reg, m: Mem) {
        match size {
            Size::S8 | Size::S16 => {
                self.rex_rm(true, dst, &m, false);
                self.raw(&[0x0F, if size == Size::S8 { 0xB6 } else { 0xB7 }]);
            }
            Size::S32 => {
                self.rex_rm(false, dst, &m, false);
                self.byte(0x8B);
            }
            Size::S64 => {
                self.rex_rm(true, dst, &m, false);
                self.byte(0x8B);
            }
        }
        self.modrm_mem(dst.low(), &m);
    }
    /// `movzx r32, m8/m16` without REX.W (one byte shorter than [`Asm::load`]'s form).
    pub fn movzx_load32(&mut self, size: Size, dst: Reg, m: Mem) {
        let op = match size {
            Size::S8 => 0xB6,
            Size::S16 => 0xB7,
            _ => panic!("movzx from {size:?}"),
        };
        self.rex_rm(false, dst, &m, false);
        self.raw(&[0x0F, op]);
        self.modrm_mem(dst.low(), &m);
    }
    /// Sign-extending load to 64 bits (`movsx r64, m8/m16`, `movsxd r64, m32`), as the
    /// kernel's `emit_ldsx`. `S64` is a plain `mov r64, m64`.
    pub fn load_sx(&mut self, size: Size, dst: Reg, m: Mem) {
        self.rex_rm(true, dst, &m, false);
        match size {
            Size::S8 => self.raw(&[0x0F, 0xBE]),
            Size::S16 => self.raw(&[0x0F, 0xBF]),
            Size::S32 => self.byte(0x63),
            Size::S64 => self.byte(0x8B),
        }
        self.modrm_mem(dst.low(), &m);
    }
    /// Store the low `size` bytes of `src` (`88`/`66 89`/`89`/`REX.W 89`).
    pub fn store(&mut self, size: Size, m: Mem, src: Reg) {
        match size {
            Size::S8 => {
                self.rex_rm(false, src, &m, src.byte_needs_rex());
                self.byte(0x88);
            }
            Size::S16 => {
                self.byte(0x66);
                self.rex_rm(false, src, &m, false);
                self.byte(0x89);
            }
            Size::S32 => {
                self.rex_rm(false, src, &m, false);
                self.byte(0x89);
            }
            Size::S64 => {
                self.rex_rm(true, src, &m, false);
                self.byte(0x89);
            }
        }
        self.modrm_mem(src.low(), &m);
    }
    /// Store an immediate (`C6 /0 ib`, `66 C7 /0 iw`, `C7 /0 id`, `REX.W C7 /0 id` which
    /// sign-extends the 32-bit immediate to 64 bits).
    pub fn store_imm(&mut self, size: Size, m: Mem, imm: i32) {
        let z = Reg::Rax; // ModRM.reg = 0, no REX.R
        match size {
            Size::S8 => {
                self.rex_rm(false, z, &m, false);
                self.byte(0xC6);
            }
            Size::S16 => {
                self.byte(0x66);
                self.rex_rm(false, z, &m, false);
                self.byte(0xC7);
            }
            Size::S32 => {
                self.rex_rm(false, z, &m, false);
                self.byte(0xC7);
            }
            Size::S64 => {
                self.rex_rm(true, z, &m, false);
                self.byte(0xC7);
            }
        }
        self.modrm_mem(0, &m);
        match size {
            Size::S8 => self.byte(imm as u8),
            Size::S16 => self.imm16(imm as u16),
            _ => self.imm32(imm),
        }
    }
    /// `movbe dst, [mem]` (`0F 38 F0`): load and byte-swap; `size` is S16, S32 or S64.
    /// The 16-bit form writes only the low 16 bits of `dst`.
    pub fn movbe_load(&mut self, size: Size, dst: Reg, m: Mem) {
        if size == Size::S16 {
            self.byte(0x66);
        }
        assert!(size != Size::S8, "movbe has no 8-bit form");
        self.rex_rm(size == Size::S64, dst, &m, false);
        self.raw(&[0x0F, 0x38, 0xF0]);
        self.modrm_mem(dst.low(), &m);
    }
    /// `movbe [mem], src` (`0F 38 F1`): byte-swap and store.
    pub fn movbe_store(&mut self, size: Size, m: Mem, src: Reg) {
        if size == Size::S16 {
            self.byte(0x66);
        }
        assert!(size != Size::S8, "movbe has no 8-bit form");
        self.rex_rm(size == Size::S64, src, &m, false);
        self.raw(&[0x0F, 0x38, 0xF1]);
        self.modrm_mem(src.low(), &m);
    }

    // ---- atomics --------------------------------------------------------------------------

    fn atomic_prefix(&mut self, size: Size, m: &Mem, src: Reg) {
        assert!(matches!(size, Size::S32 | Size::S64), "atomics are 32 or 64 bits");
        self.byte(0xF0);
        self.rex_rm(size == Size::S64, src, m, false);
    }
    /// `lock <op> [mem], src` for add/or/and/xor/sub/... (`F0 [REX] op*8+1 /r`).
    pub fn lock_alu(&mut self, op: Alu, size: Size, m: Mem, src: Reg) {
        self.atomic_prefix(size, &m, src);
        self.byte((op as u8) << 3 | 1);
        self.modrm_mem(src.low(), &m);
    }
    /// `lock xadd [mem], src` (`F0 [REX] 0F C1 /r`).
    pub fn lock_xadd(&mut self, size: Size, m: Mem, src: Reg) {
        self.atomic_prefix(size, &m, src);
        self.raw(&[0x0F, 0xC1]);
        self.modrm_mem(src.low(), &m);
    }
    /// `lock xchg [mem], src` (`F0 [REX] 87 /r`; the kernel keeps the redundant lock).
    pub fn lock_xchg(&mut self, size: Size, m: Mem, src: Reg) {
        self.atomic_prefix(size, &m, src);
        self.byte(0x87);
        self.modrm_mem(src.low(), &m);
    }
    /// `lock cmpxchg [mem], src` (`F0 [REX] 0F B1 /r`): compares with rax/eax.
    pub fn lock_cmpxchg(&mut self, size: Size, m: Mem, src: Reg) {
        self.atomic_prefix(size, &m, src);
        self.raw(&[0x0F, 0xB1]);
        self.modrm_mem(src.low(), &m);
    }

    // ---- arithmetic -----------------------------------------------------------------------

    /// `<op> dst, src` in the `op r/m, reg` form (`01`, `09`, `21`, `29`, `31`, `39`, ...).
    pub fn alu_rr(&mut self, op: Alu, w: Width, dst: Reg, src: Reg) {
        self.rex_rr(w.is64(), src, dst, false);
        self.byte((op as u8) << 3 | 1);
        self.modrm_rr(src.low(), dst);
    }
    /// `<op> dst, imm` choosing the encoding as the kernel's ALU-immediate lowering:
    /// imm8 (`83 /op ib`) when it fits, else the short `rax` form (`op*8+5 id`), else
    /// `81 /op id`. 64-bit forms sign-extend the immediate.
    pub fn alu_ri(&mut self, op: Alu, w: Width, dst: Reg, imm: i32) {
        if is_imm8(imm as i64) {
            self.alu_ri8(op, w, dst, imm as i8);
        } else if dst == Reg::Rax {
            self.rex(w.is64(), false, false, false, false);
            self.byte((op as u8) << 3 | 5);
            self.imm32(imm);
        } else {
            self.alu_ri32(op, w, dst, imm);
        }
    }
    /// `83 /op ib`.
    pub fn alu_ri8(&mut self, op: Alu, w: Width, dst: Reg, imm: i8) {
        self.rex(w.is64(), false, false, dst.is_ext(), false);
        self.byte(0x83);
        self.modrm_rr(op as u8, dst);
        self.byte(imm as u8);
    }
    /// `81 /op id`.
    pub fn alu_ri32(&mut self, op: Alu, w: Width, dst: Reg, imm: i32) {
        self.rex(w.is64(), false, false, dst.is_ext(), false);
        self.byte(0x81);
        self.modrm_rr(op as u8, dst);
        self.imm32(imm);
    }
    /// `<op> qword/dword ptr [base], imm8` (`83 /op ib`, ModRM mod 00: no displacement),
    /// as the kernel's tail-call counter `cmp qword ptr [rax], MAX` / `add qword ptr [rax], 1`.
    /// `base` must not be rsp/r12 (SIB) or rbp/r13 (mod 00 means rip-relative there).
    pub fn alu_m0_i8(&mut self, op: Alu, w: Width, base: Reg, imm: i8) {
        assert!(base.low() != 4 && base.low() != 5, "alu_m0_i8: base {} needs a SIB byte or displacement", base.name64());
        self.rex(w.is64(), false, false, base.is_ext(), false);
        self.byte(0x83);
        self.byte(((op as u8) << 3) | base.low());
        self.byte(imm as u8);
    }
    /// `cmp [mem], src` (`39 /r`, memory first): flags from `[mem] - src`.
    pub fn cmp_mr(&mut self, w: Width, m: Mem, src: Reg) {
        self.rex_rm(w.is64(), src, &m, false);
        self.byte(0x39);
        self.modrm_mem(src.low(), &m);
    }
    /// `cmp dst, src` (`39 /r`): flags from `dst - src`.
    pub fn cmp_rr(&mut self, w: Width, dst: Reg, src: Reg) {
        self.alu_rr(Alu::Cmp, w, dst, src);
    }
    /// `cmp dst, imm`: `83 /7 ib` when the immediate fits, else `81 /7 id` (the kernel's
    /// conditional-jump lowering never uses the short `rax` form `3D`).
    pub fn cmp_ri(&mut self, w: Width, dst: Reg, imm: i32) {
        if is_imm8(imm as i64) {
            self.alu_ri8(Alu::Cmp, w, dst, imm as i8);
        } else {
            self.alu_ri32(Alu::Cmp, w, dst, imm);
        }
    }
    /// `test a, b` (`85 /r`, `a` in ModRM.rm).
    pub fn test_rr(&mut self, w: Width, a: Reg, b: Reg) {
        self.rex_rr(w.is64(), b, a, false);
        self.byte(0x85);
        self.modrm_rr(b.low(), a);
    }
    /// `test dst, imm32` (`F7 /0 id`, also for rax, as the kernel's JSET lowering).
    pub fn test_ri(&mut self, w: Width, dst: Reg, imm: i32) {
        self.rex(w.is64(), false, false, dst.is_ext(), false);
        self.byte(0xF7);
        self.modrm_rr(0, dst);
        self.imm32(imm);
    }
    fn f7(&mut self, digit: u8, w: Width, r: Reg) {
        self.rex(w.is64(), false, false, r.is_ext(), false);
        self.byte(0xF7);
        self.modrm_rr(digit, r);
    }
    /// `not r` (`F7 /2`).
    pub fn not(&mut self, w: Width, r: Reg) {
        self.f7(2, w, r)
    }
    /// `neg r` (`F7 /3`).
    pub fn neg(&mut self, w: Width, r: Reg) {
        self.f7(3, w, r)
    }
    /// `mul r` (`F7 /4`): rdx:rax = rax * r, unsigned.
    pub fn mul(&mut self, w: Width, r: Reg) {
        self.f7(4, w, r)
    }
    /// `div r` (`F7 /6`): unsigned rdx:rax / r.
    pub fn div(&mut self, w: Width, r: Reg) {
        self.f7(6, w, r)
    }
    /// `idiv r` (`F7 /7`): signed rdx:rax / r.
    pub fn idiv(&mut self, w: Width, r: Reg) {
        self.f7(7, w, r)
    }
    /// `cdq` (32-bit) or `cqo` (64-bit): sign-extend rax into rdx.
    pub fn cdq_cqo(&mut self, w: Width) {
        self.rex(w.is64(), false, false, false, false);
        self.byte(0x99);
    }
    /// `imul dst, src` (`0F AF /r`).
    pub fn imul_rr(&mut self, w: Width, dst: Reg, src: Reg) {
        self.rex_rr(w.is64(), dst, src, false);
        self.raw(&[0x0F, 0xAF]);
        self.modrm_rr(dst.low(), src);
    }
    /// `imul dst, src, imm` (`6B /r ib` when imm fits in 8 bits, else `69 /r id`).
    pub fn imul_rri(&mut self, w: Width, dst: Reg, src: Reg, imm: i32) {
        self.rex_rr(w.is64(), dst, src, false);
        if is_imm8(imm as i64) {
            self.byte(0x6B);
            self.modrm_rr(dst.low(), src);
            self.byte(imm as u8);
        } else {
            self.byte(0x69);
            self.modrm_rr(dst.low(), src);
            self.imm32(imm);
        }
    }
    /// `popcnt dst, src` (`F3 [REX] 0F B8 /r`). Needs POPCNT.
    pub fn popcnt(&mut self, w: Width, dst: Reg, src: Reg) {
        self.byte(0xF3);
        self.rex_rr(w.is64(), dst, src, false);
        self.raw(&[0x0F, 0xB8]);
        self.modrm_rr(dst.low(), src);
    }
    /// `bswap r` (`[REX] 0F C8+r`).
    pub fn bswap(&mut self, w: Width, r: Reg) {
        self.rex(w.is64(), false, false, r.is_ext(), false);
        self.raw(&[0x0F, 0xC8 + r.low()]);
    }

    // ---- shifts and rotates ---------------------------------------------------------------

    /// `<shift> dst, imm` (`D1 /op` for 1, else `C1 /op ib`).
    pub fn shift_ri(&mut self, op: Shift, w: Width, dst: Reg, imm: u8) {
        self.rex(w.is64(), false, false, dst.is_ext(), false);
        if imm == 1 {
            self.byte(0xD1);
            self.modrm_rr(op as u8, dst);
        } else {
            self.byte(0xC1);
            self.modrm_rr(op as u8, dst);
            self.byte(imm);
        }
    }
    /// `<shift> dst, cl` (`D3 /op`).
    pub fn shift_cl(&mut self, op: Shift, w: Width, dst: Reg) {
        self.rex(w.is64(), false, false, dst.is_ext(), false);
        self.byte(0xD3);
        self.modrm_rr(op as u8, dst);
    }
    /// `<shift> dst16, imm` (`66 [REX] C1 /op ib`); the kernel swaps 16 bits with
    /// `ror r16, 8`.
    pub fn shift16_ri(&mut self, op: Shift, dst: Reg, imm: u8) {
        self.byte(0x66);
        self.rex(false, false, false, dst.is_ext(), false);
        self.byte(0xC1);
        self.modrm_rr(op as u8, dst);
        self.byte(imm);
    }
    /// `rol dst16, imm` (`66 [REX] C1 /0 ib`).
    pub fn rol16_ri(&mut self, dst: Reg, imm: u8) {
        self.shift16_ri(Shift::Rol, dst, imm)
    }
    /// `shlx dst, src, count` (BMI2, `VEX.66.0F38 F7`): dst = src << (count & mask).
    pub fn shlx(&mut self, w: Width, dst: Reg, src: Reg, count: Reg) {
        self.vex3(dst, src, 2, w.is64(), count, 1);
        self.byte(0xF7);
        self.modrm_rr(dst.low(), src);
    }
    /// `shrx dst, src, count` (BMI2, `VEX.F2.0F38 F7`).
    pub fn shrx(&mut self, w: Width, dst: Reg, src: Reg, count: Reg) {
        self.vex3(dst, src, 2, w.is64(), count, 3);
        self.byte(0xF7);
        self.modrm_rr(dst.low(), src);
    }
    /// `sarx dst, src, count` (BMI2, `VEX.F3.0F38 F7`).
    pub fn sarx(&mut self, w: Width, dst: Reg, src: Reg, count: Reg) {
        self.vex3(dst, src, 2, w.is64(), count, 2);
        self.byte(0xF7);
        self.modrm_rr(dst.low(), src);
    }
    /// `rorx dst, src, imm` (BMI2, `VEX.F2.0F3A F0 ib`): rotate right without flags.
    pub fn rorx(&mut self, w: Width, dst: Reg, src: Reg, imm: u8) {
        // VEX.vvvv is unused and must be 1111b: vex3 stores !vvvv, so pass register 0.
        self.vex3(dst, src, 3, w.is64(), Reg::Rax, 3);
        self.byte(0xF0);
        self.modrm_rr(dst.low(), src);
        self.byte(imm);
    }
    /// `bextr dst, src, ctl` (BMI1, `VEX.0F38 F7`): start = ctl[7:0], len = ctl[15:8].
    pub fn bextr(&mut self, w: Width, dst: Reg, src: Reg, ctl: Reg) {
        self.vex3(dst, src, 2, w.is64(), ctl, 0);
        self.byte(0xF7);
        self.modrm_rr(dst.low(), src);
    }

    // ---- control flow ---------------------------------------------------------------------

    /// `jcc rel8` (`70+cc cb`); `rel` is from the end of the instruction.
    pub fn jcc_rel8(&mut self, cc: Cond, rel: i8) {
        self.byte(0x70 + cc as u8);
        self.byte(rel as u8);
    }
    /// `jcc rel32` (`0F 80+cc cd`).
    pub fn jcc_rel32(&mut self, cc: Cond, rel: i32) {
        self.raw(&[0x0F, 0x80 + cc as u8]);
        self.imm32(rel);
    }
    /// `jmp rel8` (`EB cb`).
    pub fn jmp_rel8(&mut self, rel: i8) {
        self.byte(0xEB);
        self.byte(rel as u8);
    }
    /// `jmp rel32` (`E9 cd`).
    pub fn jmp_rel32(&mut self, rel: i32) {
        self.byte(0xE9);
        self.imm32(rel);
    }
    /// `call rel32` (`E8 cd`).
    pub fn call_rel32(&mut self, rel: i32) {
        self.byte(0xE8);
        self.imm32(rel);
    }
    /// `call r` (`FF /2`).
    pub fn call_r(&mut self, r: Reg) {
        self.rex(false, false, false, r.is_ext(), false);
        self.byte(0xFF);
        self.modrm_rr(2, r);
    }
    /// `jmp r` (`FF /4`).
    pub fn jmp_r(&mut self, r: Reg) {
        self.rex(false, false, false, r.is_ext(), false);
        self.byte(0xFF);
        self.modrm_rr(4, r);
    }
    /// `call [mem]` (`FF /2`).
    pub fn call_m(&mut self, m: Mem) {
        self.rex_rm(false, Reg::Rax, &m, false);
        self.byte(0xFF);
        self.modrm_mem(2, &m);
    }
    /// `push r` (`[41] 50+r`).
    pub fn push(&mut self, r: Reg) {
        self.rex(false, false, false, r.is_ext(), false);
        self.byte(0x50 + r.low());
    }
    /// `pop r` (`[41] 58+r`).
    pub fn pop(&mut self, r: Reg) {
        self.rex(false, false, false, r.is_ext(), false);
        self.byte(0x58 + r.low());
    }
    /// `ret` (`C3`).
    pub fn ret(&mut self) {
        self.byte(0xC3);
    }
    /// `leave` (`C9`): mov rsp, rbp; pop rbp.
    pub fn leave(&mut self) {
        self.byte(0xC9);
    }

    // ---- string, cache and misc -----------------------------------------------------------

    /// `rep movs` of `size` elements: copy rcx elements from [rsi] to [rdi] (`F3 A4`; the
    /// wider forms are `A5` with the operand-size prefix, none, or REX.W).
    pub fn rep_movs(&mut self, size: Size) {
        match size {
            Size::S8 => self.raw(&[0xF3, 0xA4]),
            Size::S16 => self.raw(&[0xF3, 0x66, 0xA5]),
            Size::S32 => self.raw(&[0xF3, 0xA5]),
            Size::S64 => self.raw(&[0xF3, 0x48, 0xA5]),
        }
    }
    /// `std` (`FD`): string instructions step downwards.
    pub fn std(&mut self) {
        self.byte(0xFD);
    }
    /// `cld` (`FC`): string instructions step upwards (the ABI's state).
    pub fn cld(&mut self) {
        self.byte(0xFC);
    }
    /// `rep stosb` (`F3 AA`): store al into rcx bytes at [rdi].
    pub fn rep_stosb(&mut self) {
        self.raw(&[0xF3, 0xAA]);
    }
    /// `prefetcht0 [mem]` (`0F 18 /1`).
    pub fn prefetcht0(&mut self, m: Mem) {
        self.rex_rm(false, Reg::Rax, &m, false);
        self.raw(&[0x0F, 0x18]);
        self.modrm_mem(1, &m);
    }
    /// `lfence` (`0F AE E8`).
    pub fn lfence(&mut self) {
        self.raw(&[0x0F, 0xAE, 0xE8]);
    }
    /// `endbr64` (`F3 0F 1E FA`).
    pub fn endbr64(&mut self) {
        self.raw(&[0xF3, 0x0F, 0x1E, 0xFA]);
    }
    /// `int3` (`CC`).
    pub fn int3(&mut self) {
        self.byte(0xCC);
    }
    /// `ud2` (`0F 0B`).
    pub fn ud2(&mut self) {
        self.raw(&[0x0F, 0x0B]);
    }
    /// `nop` (`90`).
    pub fn nop(&mut self) {
        self.byte(0x90);
    }
    /// `len` bytes of padding made of the recommended multi-byte NOPs (at most 8 bytes
    /// each), as the kernel's `emit_nops`.
    pub fn nops(&mut self, mut len: usize) {
        const NOPS: [&[u8]; 9] = [
            &[],
            &[0x90],
            &[0x66, 0x90],
            &[0x0F, 0x1F, 0x00],
            &[0x0F, 0x1F, 0x40, 0x00],
            &[0x0F, 0x1F, 0x44, 0x00, 0x00],
            &[0x66, 0x0F, 0x1F, 0x44, 0x00, 0x00],
            &[0x0F, 0x1F, 0x80, 0x00, 0x00, 0x00, 0x00],
            &[0x0F, 0x1F, 0x84, 0x00, 0x00, 0x00, 0x00, 0x00],
        ];
        while len > 0 {
            let n = len.min(8);
            self.raw(NOPS[n]);
            len -= n;
        }
    }
}

#[cfg(test)]
mod tests;
