//! Baseline eBPF -> ARM64 JIT, faithful to Linux's `arch/arm64/net/bpf_jit_comp.c` as of
//! the 6.13+ kernels (trusted code).
//!
//! Like the kernel it translates one eBPF instruction at a time, with:
//! - the kernel's register map ([`REGMAP`], its `bpf2a64`): r0 x7, r1..r5 x0..x4, r6..r9
//!   x19..x22, r10 x25, scratch x10..x12, `BPF_REG_AX` x9, the tail-call counter pointer
//!   x26;
//! - its prologue (`build_prologue`): `bti jc`, the `mov x9, lr; nop` patch site,
//!   `paciasp`, the frame record, `prepare_bpf_tail_call_cnt` (main: a zeroed counter slot
//!   and x26 pointing at it; subprograms: x26 kept), `bti j` where tail calls land
//!   (`PROLOGUE_OFFSET`), then only the callee-saved registers the function names
//!   (`find_used_callee_regs`, pushed in pairs, an odd one with xzr), `mov x25, sp` when
//!   it uses r10, and the stack (`round_up(depth, 16)`); the epilogue in reverse, `autiasp`,
//!   `ret`, then the PLT (`ldr x10, #8; br x10; .quad`) the kernel appends;
//! - its immediate choices: `emit_a64_mov_i` / `emit_a64_mov_i64` (movz or movn, whichever
//!   leaves fewer blocks, then movk), `emit_a64_add_i` (12-bit or shifted immediate, the
//!   negated form, else through x10), logical immediates when encodable, else through x10;
//! - SP-relative r10 accesses (`sp + stack_size + off`), the unsigned-offset forms when
//!   the offset fits, else the offset in a scratch register (register-offset form);
//! - atomics: LSE (`stadd`..., `ldaddal`..., `swpal`, `casal`) when [`Arm64Options::lse`],
//!   else the kernel's exclusive loops (`ldxr`/`stxr`, `stlxr` + `dmb ish` for the fetching
//!   forms); load-acquire / store-release as `ldar` / `stlr`;
//! - one epilogue per function that `exit` branches to; the last `exit` falls through.
//! Every word is produced by an encoder of `kops-arm64`.
//!
//! Division: AArch64's `udiv`/`sdiv` give 0 for a zero divisor and `MIN / -1 = MIN`, and
//! `msub` then leaves the dividend for a modulo, which is what the eBPF ISA defines; the
//! verifier's rewrites (`kops_jit::fixup`, which the kernel applies on every architecture)
//! are applied as well when [`Arm64Options::div_fixups`] is on, so the code is that of the
//! kernel's xlated program.
//!
//! Deliberate differences from the kernel:
//! - helper calls are always `movz/movk/movk x10; blr x10`: the kernel uses
//!   `movn/movk/movk` for its kernel-space addresses (same length) and a direct `bl` when
//!   the helper is within ±128 MB of the image; our helpers are user-space addresses
//!   below 2^48 (other addresses are an error). Subprogram calls are `bl`, as in the
//!   kernel's final pass; function pointers (`ld_imm64` of a subprogram) are patched at
//!   link time ([`Arm64Image::link`]); the PLT's target is 0 (nothing attaches to our
//!   images);
//! - `bpf_get_smp_processor_id` and `bpf_get_current_task(_btf)`, which the kernel inlines
//!   as reads of `sp_el0`, are ordinary helper calls;
//! - tail calls find their target through a runtime lookup function
//!   ([`Arm64Options::tail_call`], like the x86 JIT's `TailCallMode::Lookup`) instead of
//!   reading `struct bpf_array`; the counter check through x26, its update only when a
//!   target exists, the frame teardown and the jump to `PROLOGUE_OFFSET` are the kernel's;
//! - the conformance suite's extras (the kernel rewrites or rejects these): the "unwind"
//!   helper and `callx` through a helper table, both able to end the program from any
//!   depth. The main function then also saves x27 and keeps its stack pointer there (one
//!   more pair and one `mov`); nothing else touches x27;
//! - immediate shift counts are taken modulo the width (the verifier rejects larger ones;
//!   the interpreter masks them); division by an immediate 0 gets the register-zero
//!   semantics (the verifier rejects it);
//! - after a 32-bit `cmpxchg` the zero extension of r0 that `kops_jit::fixup` adds is
//!   kept (`mov w7, w7`; the kernel adds it only for JITs that need zero extensions, and
//!   `cas` already zero-extends);
//! - no exception tables (`PROBE_MEM`), no BHB mitigation for classic BPF, no exception
//!   boundaries or callbacks;
//! - `LD_ABS`/`LD_IND` (which the kernel rewrites before its JIT runs) call a runtime
//!   loader ([`Arm64Options::ld_abs`]), as the x86 JIT does;
//! - not supported (clear errors): kfunc calls, kinsn sites (lower them first), arena and
//!   per-CPU address instructions.
//!
//! Written from the kernel's source (read, not copied); the per-instruction expectations
//! in `tests.rs` are the kernel's choices written out by hand.

#[cfg(test)]
mod tests;

use kops_arm64::{self as a64, Access, AtomicOp, Barrier, Bti, Cond, Order, Reg, Size, Sp, Zr, W};
use kops_isa::{op, Insn};
pub use kops_jit::{JitError, Resolver};
use Reg::X;

/// BPF r0..r10 -> AArch64, the kernel's `bpf2a64`: r0 x7, r1..r5 x0..x4 (arguments),
/// r6..r9 x19..x22 (callee-saved), r10 x25 (frame pointer).
pub const REGMAP: [Reg; 11] = [X(7), X(0), X(1), X(2), X(3), X(4), X(19), X(20), X(21), X(22), X(25)];
/// `TMP_REG_1..3`: the JIT's scratch registers.
pub const TMP1: Reg = X(10);
pub const TMP2: Reg = X(11);
pub const TMP3: Reg = X(12);
/// `TCCNT_PTR`: address of the tail-call counter (in the main function's frame).
pub const TCCNT_PTR: Reg = X(26);
/// `BPF_REG_AX` (the verifier's hidden register 11).
pub const REG_AX: Reg = X(9);
/// Saved with x28 as the kernel does (private stack / arena there); here it holds the
/// main frame's stack pointer when the program can unwind.
pub const UNWIND_REG: Reg = X(27);

/// `BPF_LOAD_ACQ` / `BPF_STORE_REL`: the atomic load-acquire and store-release (6.15).
pub const LOAD_ACQ: i32 = 0x100;
pub const STORE_REL: i32 = 0x110;

/// `MAX_TAIL_CALL_CNT`.
pub const MAX_TAIL_CALL_CNT: u64 = 33;

/// AArch64 register of BPF register `r` (0..=10, 11 = `BPF_REG_AX`).
pub fn a64_reg(r: u8) -> Option<Reg> {
    match r {
        0..=10 => Some(REGMAP[r as usize]),
        11 => Some(REG_AX),
        _ => None,
    }
}

/// `hint #25` / `hint #29`: sign / authenticate the return address (a `nop` on CPUs
/// without pointer authentication).
pub const PACIASP: u32 = 0xd503_233f;
pub const AUTIASP: u32 = 0xd503_23bf;

#[derive(Debug, Clone)]
pub struct Arm64Options {
    /// LSE atomics (`ARM64_HAS_LSE_ATOMICS`), else exclusive load/store loops.
    pub lse: bool,
    /// BTI landing pads (`CONFIG_ARM64_BTI_KERNEL`).
    pub bti: bool,
    /// `paciasp`/`autiasp` (`CONFIG_ARM64_PTR_AUTH_KERNEL`).
    pub pac: bool,
    /// Apply the verifier's divide rewrites ([`kops_jit::fixup`]).
    pub div_fixups: bool,
    /// Helper id with the conformance suite's "unwind" semantics (0 result ends the
    /// program with r0 = 0).
    pub unwind_helper: Option<i32>,
    /// `callx` support: helper ids `0..n` through a table in the image.
    pub callx_helpers: Option<u32>,
    /// Helper id of `bpf_tail_call` and the address of the runtime's
    /// `extern "C" fn(map: u64, index: u64) -> u64` returning the target's entry (0: none).
    pub tail_call: Option<(i32, u64)>,
    /// Stack depth per function: computed ([`kops_jit::stack::stack_depth`]) or fixed.
    pub stack_depth: Option<u32>,
    /// Legacy packet loads (`LD_ABS`/`LD_IND`, which the kernel rewrites before its JIT
    /// runs): address of the runtime's `extern "C" fn(size: u64, off: i64) -> u64`
    /// returning the big-endian value, or a value with bit 63 set when out of range (the
    /// function then returns 0). None: such loads are rejected.
    pub ld_abs: Option<u64>,
    /// The program passed the kernel verifier (see [`kops_jit::stack`]).
    pub verified: bool,
}

impl Default for Arm64Options {
    /// What a Debian arm64 kernel on a current CPU uses: LSE, BTI and PAC on; divide
    /// rewrites on (our runtime also runs unverified programs).
    fn default() -> Arm64Options {
        Arm64Options {
            lse: true,
            bti: true,
            pac: true,
            div_fixups: true,
            unwind_helper: None,
            callx_helpers: None,
            tail_call: None,
            stack_depth: None,
            ld_abs: None,
            verified: false,
        }
    }
}

impl Arm64Options {
    /// `PROLOGUE_OFFSET`: instructions a tail call skips at the target's entry.
    pub fn prologue_offset(&self) -> usize {
        self.bti as usize + 2 + self.pac as usize + 4
    }
}

/// One function of the image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FuncLayout {
    /// First slot and one past the last, in the input program.
    pub insn_start: usize,
    pub insn_end: usize,
    /// Byte offset and length in [`Arm64Image::code`].
    pub code_start: usize,
    pub code_len: usize,
    /// Stack bytes (`round_up(stack_depth, 16)`).
    pub stack_size: u32,
    /// Bytes of prologue.
    pub prologue_len: usize,
}

/// A compiled program, not yet placed.
#[derive(Debug, Clone)]
pub struct Arm64Image {
    /// Little-endian instruction words (functions, stubs), then the callx table.
    pub code: Vec<u8>,
    pub funcs: Vec<FuncLayout>,
    /// Per slot of the input program: the native bytes `[start, end)` it became.
    pub insn_ranges: Vec<(u32, u32)>,
    /// `movz/movk/movk` sequences to fill at link time: (byte offset of the movz, register,
    /// image byte offset whose absolute address they must load).
    pub addr_relocs: Vec<(usize, Reg, usize)>,
}

impl Arm64Image {
    /// The bytes as they must be at address `base` (4-byte aligned).
    pub fn link(&self, base: u64) -> Result<Vec<u8>, JitError> {
        let mut code = self.code.clone();
        for &(at, reg, off) in &self.addr_relocs {
            let words = addr_words(reg, base + off as u64).map_err(|e| JitError::Other(e.to_string()))?;
            for (k, w) in words.iter().enumerate() {
                code[at + 4 * k..at + 4 * k + 4].copy_from_slice(&w.to_le_bytes());
            }
        }
        Ok(code)
    }
    /// Number of instruction words before the data (callx table).
    pub fn words(&self) -> usize {
        self.funcs.last().map_or(0, |f| f.code_start + f.code_len) / 4
    }
}

/// The fixed-length address move (`emit_addr_mov_i64`): 3 words, for an address below
/// 2^48 (`movz/movk/movk`) or, as the kernel's, with the top 16 bits set
/// (`movn/movk/movk`).
fn addr_words(reg: Reg, addr: u64) -> a64::Result<[u32; 3]> {
    let chunk = |s: u32| ((addr >> s) & 0xffff) as u16;
    let first = match addr >> 48 {
        0 => a64::movz(W::X64, reg, chunk(0), 0)?,
        0xffff => a64::movn(W::X64, reg, !chunk(0), 0)?,
        _ => return Err(a64::EncodeError { insn: "address move", msg: format!("address {addr:#x} needs more than 48 bits") }),
    };
    Ok([first, a64::movk(W::X64, reg, chunk(16), 16)?, a64::movk(W::X64, reg, chunk(32), 32)?])
}

/// `emit_a64_mov_i`: a 32-bit immediate, sign-extended for 64-bit moves.
pub fn mov_i(a: &mut a64::Asm, is64: bool, reg: Reg, val: i32) -> a64::Result<()> {
    let w = if is64 { W::X64 } else { W::W32 };
    let hi = (val >> 16) as u16;
    let lo = val as u16;
    if hi & 0x8000 != 0 {
        if hi == 0xffff {
            a.emit(a64::movn(w, reg, !lo, 0))?;
        } else {
            a.emit(a64::movn(w, reg, !hi, 16))?;
            if lo != 0xffff {
                a.emit(a64::movk(w, reg, lo, 0))?;
            }
        }
    } else {
        a.emit(a64::movz(w, reg, lo, 0))?;
        if hi != 0 {
            a.emit(a64::movk(w, reg, hi, 16))?;
        }
    }
    Ok(())
}

/// `emit_a64_mov_i64`: movz or movn (whichever leaves fewer 16-bit blocks to fill) from
/// the highest interesting block down, then movk for each remaining block.
pub fn mov_i64(a: &mut a64::Asm, reg: Reg, val: u64) -> a64::Result<()> {
    if val >> 32 == 0 {
        return mov_i(a, false, reg, val as u32 as i32);
    }
    let blocks = |v: u64, fill: u64| (0..4).filter(|k| (v >> (16 * k)) & 0xffff != fill).count();
    let inverse = blocks(val, 0xffff) < blocks(val, 0);
    let top = |v: u64| 63 - v.leading_zeros() as i32; // fls64 - 1 (v != 0 here)
    let mut shift = if inverse { top(!val) } else { top(val) };
    shift = (shift / 16 * 16).max(0);
    if inverse {
        a.emit(a64::movn(W::X64, reg, ((!val >> shift) & 0xffff) as u16, shift as u32))?;
    } else {
        a.emit(a64::movz(W::X64, reg, ((val >> shift) & 0xffff) as u16, shift as u32))?;
    }
    shift -= 16;
    while shift >= 0 {
        let chunk = (val >> shift) & 0xffff;
        if chunk != if inverse { 0xffff } else { 0 } {
            a.emit(a64::movk(W::X64, reg, chunk as u16, shift as u32))?;
        }
        shift -= 16;
    }
    Ok(())
}

/// Per-function state.
struct Func {
    start: usize,
    end: usize,
    is_main: bool,
    /// `find_used_callee_regs`: the callee-saved registers the function saves, in push
    /// order (r6..r9 and the frame pointer when named, plus x27 in a main function that
    /// can unwind), and whether it names r10.
    callee: Vec<Reg>,
    fp_used: bool,
    stack_size: u32,
    /// Word index (in the function) where local instruction k starts; `addrs[n]` is the
    /// epilogue.
    addrs: Vec<usize>,
    /// Word index of the epilogue.
    epilogue: usize,
    prologue_len: usize,
    /// Words of the whole function.
    len: usize,
    /// Word index of the function in the image (final pass).
    base: usize,
}

/// Image-wide positions (word indexes), known in the final pass.
#[derive(Default, Clone)]
struct Layout {
    final_pass: bool,
    /// Word index of the function starting at each slot.
    func_at: std::collections::BTreeMap<usize, usize>,
    unwind_stub: usize,
    abort_stub: usize,
    callx_table_byte: usize,
}

struct Program<'a> {
    insns: Vec<Insn>,
    second: Vec<bool>,
    orig: Vec<usize>,
    opts: &'a Arm64Options,
    res: &'a dyn Resolver,
    needs_unwind: bool,
}

struct Cx<'a> {
    p: &'a Program<'a>,
    lay: &'a Layout,
    f: &'a Func,
    a: a64::Asm,
    /// Word index in the function where this instruction's words go.
    base: usize,
    pc: usize,
    i: Insn,
    /// Address relocations of this instruction: (word index in the function, reg, target).
    relocs: Vec<(usize, Reg, usize)>,
    slots: usize,
}

impl Cx<'_> {
    fn err(&self, msg: impl Into<String>) -> JitError {
        JitError::Insn { pc: self.p.orig[self.pc], msg: msg.into() }
    }
    fn unsupported(&self, what: impl Into<String>) -> JitError {
        JitError::Unsupported { pc: self.p.orig[self.pc], what: what.into() }
    }
    fn e(&mut self, w: a64::Result<u32>) -> Result<(), JitError> {
        let w = w.map_err(|e| self.err(e.to_string()))?;
        self.a.put(w);
        Ok(())
    }
    fn wrap(&self, r: a64::Result<()>) -> Result<(), JitError> {
        r.map_err(|e| self.err(e.to_string()))
    }
    fn reg(&self, r: u8) -> Result<Reg, JitError> {
        a64_reg(r).ok_or_else(|| self.err(format!("bad register r{r}")))
    }
    fn mov_i(&mut self, is64: bool, reg: Reg, val: i32) -> Result<(), JitError> {
        let r = mov_i(&mut self.a, is64, reg, val);
        self.wrap(r)
    }
    /// `emit_a64_add_i`: dst = src + imm with an add/sub immediate, else through `tmp`.
    fn add_i(&mut self, is64: bool, dst: Reg, src: Reg, tmp: Reg, imm: i32) -> Result<(), JitError> {
        let w = if is64 { W::X64 } else { W::W32 };
        if a64::is_addsub_imm(imm as u32 as u64) {
            self.e(a64::add_imm(w, dst, src, imm as u32 as u64))
        } else if a64::is_addsub_imm(imm.wrapping_neg() as u32 as u64) {
            self.e(a64::sub_imm(w, dst, src, imm.wrapping_neg() as u32 as u64))
        } else {
            self.mov_i(is64, tmp, imm)?;
            self.e(a64::add(w, dst, src, tmp))
        }
    }
    fn mov_i64(&mut self, reg: Reg, val: u64) -> Result<(), JitError> {
        let r = mov_i64(&mut self.a, reg, val);
        self.wrap(r)
    }
    /// Word index in the function of the next word.
    fn here(&self) -> usize {
        self.base + self.a.len()
    }
    /// Word index in the image of the next word (final pass).
    fn image_here(&self) -> usize {
        self.f.base + self.here()
    }
    /// Branch offset (words) from the next word to image word `target` (0 before the
    /// final pass).
    fn to_image(&self, target: usize) -> i64 {
        if !self.lay.final_pass {
            return 0;
        }
        target as i64 - self.image_here() as i64
    }
    /// A fixed-length absolute address move.
    fn mov_addr(&mut self, reg: Reg, addr: u64) -> Result<(), JitError> {
        let w = addr_words(reg, addr).map_err(|e| self.err(e.to_string()))?;
        for x in w {
            self.a.put(x);
        }
        Ok(())
    }
    /// A 3-word address move of an image position, patched at link time.
    fn mov_image_addr(&mut self, reg: Reg, image_byte: usize) -> Result<(), JitError> {
        self.relocs.push((self.here(), reg, image_byte));
        self.mov_addr(reg, 0)
    }

    fn emit(&mut self) -> Result<(), JitError> {
        let i = self.i;
        match i.class() {
            op::ALU | op::ALU64 => self.emit_alu(),
            op::LD => self.emit_ld(),
            op::LDX => self.emit_ldx(),
            op::ST => self.emit_st(),
            op::STX => self.emit_stx(),
            op::JMP if i.op() == op::CALL => self.emit_call(),
            op::JMP if i.op() == op::EXIT => self.emit_exit(),
            op::JMP | op::JMP32 => self.emit_jump(),
            _ => Err(self.unsupported(format!("opcode {:#04x}", i.code))),
        }
    }

    // ---- ALU -------------------------------------------------------------------------------

    fn emit_alu(&mut self) -> Result<(), JitError> {
        let i = self.i;
        let is64 = i.class() == op::ALU64;
        let w = if is64 { W::X64 } else { W::W32 };
        let dst = self.reg(i.dst)?;
        let signed = i.off == 1;
        if i.source() == op::X && i.op() != op::END && i.op() != op::NEG {
            let src = self.reg(i.src)?;
            return match i.op() {
                op::MOV => match (i.off, is64) {
                    (0, _) => self.e(a64::mov(w, dst, src)),
                    (8, _) => self.e(a64::sxtb(w, dst, src)),
                    (16, _) => self.e(a64::sxth(w, dst, src)),
                    (32, true) => self.e(a64::sxtw(dst, src)),
                    _ => Err(self.unsupported(format!("mov with offset {} (per-CPU / arena address)", i.off))),
                },
                op::ADD => self.e(a64::add(w, dst, dst, src)),
                op::SUB => self.e(a64::sub(w, dst, dst, src)),
                op::AND => self.e(a64::and(w, dst, dst, src)),
                op::OR => self.e(a64::orr(w, dst, dst, src)),
                op::XOR => self.e(a64::eor(w, dst, dst, src)),
                op::MUL => self.e(a64::mul(w, dst, dst, src)),
                op::DIV => self.e(if signed { a64::sdiv(w, dst, dst, src) } else { a64::udiv(w, dst, dst, src) }),
                op::MOD => {
                    self.e(if signed { a64::sdiv(w, TMP1, dst, src) } else { a64::udiv(w, TMP1, dst, src) })?;
                    self.e(a64::msub(w, dst, TMP1, src, dst))
                }
                op::LSH => self.e(a64::lslv(w, dst, dst, src)),
                op::RSH => self.e(a64::lsrv(w, dst, dst, src)),
                op::ARSH => self.e(a64::asrv(w, dst, dst, src)),
                _ => Err(self.unsupported(format!("ALU opcode {:#04x}", i.code))),
            };
        }
        let imm = i.imm;
        // The immediate as the kernel hands it to its logical-immediate encoder: always
        // sign-extended to 64 bits, so a negative one never fits a 32-bit operation (which
        // then goes through x10, as in the kernel).
        let value = imm as i64 as u64;
        match i.op() {
            op::NEG => self.e(a64::neg(w, dst, dst)),
            op::END => self.emit_end(is64, dst),
            op::MOV => self.mov_i(is64, dst, imm),
            op::ADD | op::SUB => {
                let (pos, negf): (fn(W, Reg, Reg, u64) -> a64::Result<u32>, fn(W, Reg, Reg, u64) -> a64::Result<u32>) =
                    if i.op() == op::ADD { (a64::add_imm, a64::sub_imm) } else { (a64::sub_imm, a64::add_imm) };
                if a64::is_addsub_imm(imm as u32 as u64) {
                    self.e(pos(w, dst, dst, imm as u32 as u64))
                } else if a64::is_addsub_imm(imm.wrapping_neg() as u32 as u64) {
                    self.e(negf(w, dst, dst, imm.wrapping_neg() as u32 as u64))
                } else {
                    self.mov_i(is64, TMP1, imm)?;
                    self.e(if i.op() == op::ADD { a64::add(w, dst, dst, TMP1) } else { a64::sub(w, dst, dst, TMP1) })
                }
            }
            op::AND | op::OR | op::XOR => {
                let l = match i.op() {
                    op::AND => a64::Logic::And,
                    op::OR => a64::Logic::Orr,
                    _ => a64::Logic::Eor,
                };
                if a64::bitmask_imm(w, value).is_some() {
                    self.e(a64::logic_imm(l, w, dst, dst, value))
                } else {
                    self.mov_i(is64, TMP1, imm)?;
                    self.e(a64::logic_reg(l, false, w, dst, dst, TMP1, a64::Shift::Lsl, 0))
                }
            }
            op::MUL => {
                self.mov_i(is64, TMP1, imm)?;
                self.e(a64::mul(w, dst, dst, TMP1))
            }
            op::DIV => {
                self.mov_i(is64, TMP1, imm)?;
                self.e(if signed { a64::sdiv(w, dst, dst, TMP1) } else { a64::udiv(w, dst, dst, TMP1) })
            }
            op::MOD => {
                self.mov_i(is64, TMP2, imm)?;
                self.e(if signed { a64::sdiv(w, TMP1, dst, TMP2) } else { a64::udiv(w, TMP1, dst, TMP2) })?;
                self.e(a64::msub(w, dst, TMP1, TMP2, dst))
            }
            op::LSH | op::RSH | op::ARSH => {
                let sh = (imm as u32) & if is64 { 63 } else { 31 };
                self.e(match i.op() {
                    op::LSH => a64::lsl_imm(w, dst, dst, sh),
                    op::RSH => a64::lsr_imm(w, dst, dst, sh),
                    _ => a64::asr_imm(w, dst, dst, sh),
                })
            }
            _ => Err(self.unsupported(format!("ALU opcode {:#04x}", i.code))),
        }
    }

    /// Byte swaps: `to_le` on a little-endian CPU only zero-extends; `to_be` and the
    /// unconditional `bswap` (ALU64) reverse.
    fn emit_end(&mut self, is64: bool, dst: Reg) -> Result<(), JitError> {
        let i = self.i;
        let w = if is64 { W::X64 } else { W::W32 };
        let swap = is64 || i.source() == op::TO_BE;
        match (swap, i.imm) {
            (true, 16) => {
                self.e(a64::rev16(w, dst, dst))?;
                self.e(a64::ubfm(w, dst, dst, 0, 15))
            }
            (true, 32) => self.e(a64::rev(W::W32, dst, dst)),
            (true, 64) => self.e(a64::rev(W::X64, dst, dst)),
            (false, 16) => self.e(a64::ubfm(w, dst, dst, 0, 15)),
            (false, 32) => self.e(a64::ubfm(w, dst, dst, 0, 31)),
            (false, 64) => Ok(()),
            _ => Err(self.err(format!("byte swap of {} bits", i.imm))),
        }
    }

    // ---- jumps -----------------------------------------------------------------------------

    /// Branch offset from the next word to the start of local instruction `target`.
    fn jump_off(&self, rel: i64) -> Result<i64, JitError> {
        let t = self.pc as i64 + 1 + rel;
        if t < self.f.start as i64 || t >= self.f.end as i64 {
            return Err(self.err(format!("jump to slot {t} leaves the function")));
        }
        if !self.lay.final_pass {
            return Ok(0);
        }
        Ok(self.f.addrs[t as usize - self.f.start] as i64 - self.here() as i64)
    }

    fn emit_jump(&mut self) -> Result<(), JitError> {
        let i = self.i;
        let is64 = i.class() == op::JMP;
        let w = if is64 { W::X64 } else { W::W32 };
        if i.op() == op::JA {
            let rel = if is64 { i.off as i64 } else { i.imm as i64 };
            let off = self.jump_off(rel)?;
            return self.e(a64::b(off));
        }
        let cond = match i.op() {
            op::JEQ => Cond::Eq,
            op::JGT => Cond::Hi,
            op::JLT => Cond::Lo,
            op::JGE => Cond::Hs,
            op::JLE => Cond::Ls,
            op::JSET | op::JNE => Cond::Ne,
            op::JSGT => Cond::Gt,
            op::JSLT => Cond::Lt,
            op::JSGE => Cond::Ge,
            op::JSLE => Cond::Le,
            _ => return Err(self.unsupported(format!("jump opcode {:#04x}", i.code))),
        };
        let dst = self.reg(i.dst)?;
        if i.source() == op::X {
            let src = self.reg(i.src)?;
            self.e(if i.op() == op::JSET { a64::tst(w, dst, src) } else { a64::cmp(w, dst, src) })?;
        } else if i.op() == op::JSET {
            // Sign-extended as for the ALU's logical immediates.
            let value = i.imm as i64 as u64;
            if a64::bitmask_imm(w, value).is_some() {
                self.e(a64::tst_imm(w, dst, value))?;
            } else {
                self.mov_i(is64, TMP1, i.imm)?;
                self.e(a64::tst(w, dst, TMP1))?;
            }
        } else if a64::is_addsub_imm(i.imm as u32 as u64) {
            self.e(a64::cmp_imm(w, dst, i.imm as u32 as u64))?;
        } else if a64::is_addsub_imm(i.imm.wrapping_neg() as u32 as u64) {
            self.e(a64::cmn_imm(w, dst, i.imm.wrapping_neg() as u32 as u64))?;
        } else {
            self.mov_i(is64, TMP1, i.imm)?;
            self.e(a64::cmp(w, dst, TMP1))?;
        }
        let off = self.jump_off(i.off as i64)?;
        self.e(a64::b_cond(cond, off))
    }

    fn emit_exit(&mut self) -> Result<(), JitError> {
        // The last instruction falls through into the epilogue.
        if self.pc + 1 == self.f.end {
            return Ok(());
        }
        let off = if self.lay.final_pass { self.f.epilogue as i64 - self.here() as i64 } else { 0 };
        self.e(a64::b(off))
    }

    // ---- calls -----------------------------------------------------------------------------

    fn emit_call(&mut self) -> Result<(), JitError> {
        let i = self.i;
        if i.source() == op::X {
            return self.emit_callx();
        }
        match i.src {
            0 => {
                if let Some((id, lookup)) = self.p.opts.tail_call {
                    if id == i.imm {
                        return self.emit_tail_call(lookup);
                    }
                }
                let addr = self.p.res.helper(i.imm).ok_or_else(|| self.err(format!("unknown helper {}", i.imm)))?;
                self.mov_addr(TMP1, addr)?;
                self.e(a64::blr(TMP1))?;
                self.e(a64::mov(W::X64, REGMAP[0], X(0)))?;
                if Some(i.imm) == self.p.opts.unwind_helper {
                    // The suite's unwind helper: 0 ends the whole program with r0 = 0.
                    let off = self.to_image(self.lay.unwind_stub);
                    self.e(a64::cbz(W::X64, REGMAP[0], off))?;
                }
                Ok(())
            }
            op::PSEUDO_CALL => {
                // The kernel's final pass calls a subprogram directly (`bl`): it is in
                // range (±128 MB), here in the same image.
                let target = self.pc as i64 + 1 + i.imm as i64;
                let word = usize::try_from(target).ok().and_then(|t| self.lay.func_at.get(&t).copied());
                let off = match (self.lay.final_pass, word) {
                    (false, _) => 0,
                    (true, Some(w)) => self.to_image(w),
                    (true, None) => return Err(self.err("call target is not a function start")),
                };
                self.e(a64::bl(off))?;
                self.e(a64::mov(W::X64, REGMAP[0], X(0)))
            }
            op::PSEUDO_KINSN_CALL => Err(self.unsupported("kinsn site (lower it first)")),
            s => Err(self.unsupported(format!("call with src_reg {s} (kfunc)"))),
        }
    }

    /// `call %rN` (the conformance suite's `callx`): the helper whose id is in rN, through
    /// a table of helper addresses after the code. Ids without a helper, or out of range,
    /// end the program with r0 = 0.
    fn emit_callx(&mut self) -> Result<(), JitError> {
        let n = self.p.opts.callx_helpers.ok_or_else(|| self.unsupported("callx (no helper table in this runtime)"))?;
        let r = self.reg(self.i.dst)?;
        self.e(a64::cmp_imm(W::X64, r, n as u64))?;
        let off = self.to_image(self.lay.abort_stub);
        self.e(a64::b_cond(Cond::Hs, off))?;
        // Keep the id across the call (16-byte slot, sp stays aligned).
        self.e(a64::ldst_pair(false, W::X64, r, Zr, Sp, -16, a64::PairMode::PreIndex))?;
        self.e(a64::lsl_imm(W::X64, TMP2, r, 3))?;
        self.mov_image_addr(TMP1, self.lay.callx_table_byte)?;
        self.e(a64::ldst_reg(Access::Load, Size::D64, TMP1, TMP1, TMP2))?;
        let off = self.to_image(self.lay.abort_stub);
        self.e(a64::cbz(W::X64, TMP1, off))?;
        self.e(a64::blr(TMP1))?;
        self.e(a64::ldst_pair(true, W::X64, TMP2, Zr, Sp, 16, a64::PairMode::PostIndex))?;
        self.e(a64::mov(W::X64, REGMAP[0], X(0)))?;
        if let Some(u) = self.p.opts.unwind_helper {
            // Called the unwind helper and it returned 0: end the program.
            self.e(a64::cmp_imm(W::X64, TMP2, u as u64))?;
            self.e(a64::b_cond(Cond::Ne, 2))?;
            let off = self.to_image(self.lay.unwind_stub);
            self.e(a64::cbz(W::X64, REGMAP[0], off))?;
        }
        Ok(())
    }

    /// `bpf_tail_call(ctx, map, index)` through the runtime's lookup; then, as the
    /// kernel's `emit_bpf_tail_call`: check and bump the counter through x26, drop this
    /// frame's stack and callee-saved registers and branch past the target's prologue
    /// head. Falls through (r0..r5 clobbered) when there is no target or the counter is
    /// exhausted.
    fn emit_tail_call(&mut self, lookup: u64) -> Result<(), JitError> {
        let (r1, r2, r3) = (REGMAP[1], REGMAP[2], REGMAP[3]);
        let start = self.here();
        self.e(a64::mov(W::W32, r3, r3))?;
        // prg = lookup(map, index); ctx (r1) survives on the stack.
        self.e(a64::ldst_pair(false, W::X64, r1, Zr, Sp, -16, a64::PairMode::PreIndex))?;
        self.e(a64::mov(W::X64, X(0), r2))?;
        self.e(a64::mov(W::X64, X(1), r3))?;
        self.mov_addr(TMP1, lookup)?;
        self.e(a64::blr(TMP1))?;
        self.e(a64::mov(W::X64, TMP2, X(0)))?;
        self.e(a64::ldst_pair(true, W::X64, r1, Zr, Sp, 16, a64::PairMode::PostIndex))?;
        // Words from here to `out`, fixed by construction (checked below).
        let pops = self.f.callee.len().div_ceil(2);
        let tail = 1 + 1 + 1 + 1 + 1 + 1 + 1 + (self.f.stack_size != 0) as usize + pops + 2;
        self.e(a64::cbz(W::X64, TMP2, tail as i64))?;
        // if (*tcc_ptr >= MAX_TAIL_CALL_CNT) goto out; (*tcc_ptr)++
        self.e(a64::movz(W::X64, TMP1, MAX_TAIL_CALL_CNT as u16, 0))?;
        self.e(a64::ldst_imm(Access::Load, Size::D64, TMP3, TCCNT_PTR, 0))?;
        self.e(a64::cmp(W::X64, TMP3, TMP1))?;
        // b.hs is the 4th word after the cbz.
        self.e(a64::b_cond(Cond::Hs, tail as i64 - 4))?;
        self.e(a64::add_imm(W::X64, TMP3, TMP3, 1))?;
        self.e(a64::ldst_imm(Access::Store, Size::D64, TMP3, TCCNT_PTR, 0))?;
        if self.f.stack_size != 0 {
            self.e(a64::add_imm(W::X64, Sp, Sp, self.f.stack_size as u64))?;
        }
        self.pop_callee()?;
        self.e(a64::add_imm(W::X64, TMP2, TMP2, 4 * self.p.opts.prologue_offset() as u64))?;
        self.e(a64::br(TMP2))?;
        // `out:` is here, `tail` words after the cbz (the 11th word of the sequence).
        let cbz_at = start + 10;
        if self.here() != cbz_at + tail {
            return Err(self.err(format!("tail call sequence length {} != {}", self.here() - cbz_at, tail)));
        }
        Ok(())
    }

    fn pop_callee(&mut self) -> Result<(), JitError> {
        let r = pop_callee(&self.f.callee, &mut self.a);
        self.wrap(r)
    }

    // ---- loads and stores ----------------------------------------------------------------

    fn emit_ld(&mut self) -> Result<(), JitError> {
        let i = self.i;
        if !i.is_ld_imm64() {
            return self.emit_ld_abs();
        }
        if self.pc + 1 >= self.f.end {
            return Err(self.err("ld_imm64 without its second slot"));
        }
        let hi = self.p.insns[self.pc + 1];
        let dst = self.reg(i.dst)?;
        self.slots = 2;
        match i.src {
            0 => self.mov_i64(dst, (hi.imm as u32 as u64) << 32 | i.imm as u32 as u64),
            op::PSEUDO_FUNC => {
                let target = self.pc as i64 + 1 + i.imm as i64;
                let word = if self.lay.final_pass {
                    *usize::try_from(target).ok().and_then(|t| self.lay.func_at.get(&t)).ok_or_else(|| self.err("function pointer to a non-function"))?
                } else {
                    0
                };
                self.mov_image_addr(dst, word * 4)
            }
            _ => {
                let v = self.p.res.ld_imm64(self.p.orig[self.pc], &i, &hi).map_err(|m| self.err(m))?;
                self.mov_i64(dst, v)
            }
        }
    }

    /// `LD_ABS`/`LD_IND` through the runtime's loader: r0 = the value; r1..r5 clobbered;
    /// out of range, r0 = 0 and the function returns (the kernel's `bpf_gen_ld_abs`).
    fn emit_ld_abs(&mut self) -> Result<(), JitError> {
        let i = self.i;
        let func = self.p.opts.ld_abs.ok_or_else(|| self.unsupported("legacy packet access (LD_ABS/LD_IND)"))?;
        if !matches!(i.mode(), op::ABS | op::IND) || i.size() == op::DW {
            return Err(self.unsupported(format!("load opcode {:#04x}", i.code)));
        }
        // The offset is computed in 64 bits and used as an int.
        if i.mode() == op::IND {
            let src = self.reg(i.src)?;
            self.add_i(true, X(1), src, TMP1, i.imm)?;
            self.e(a64::sxtw(X(1), X(1)))?;
        } else {
            self.mov_i(true, X(1), i.imm)?;
        }
        self.e(a64::movz(W::X64, X(0), i.size_bytes() as u16, 0))?;
        self.mov_addr(TMP1, func)?;
        self.e(a64::blr(TMP1))?;
        self.e(a64::mov(W::X64, REGMAP[0], X(0)))?;
        self.e(a64::cmp_imm(W::X64, REGMAP[0], 0))?;
        self.e(a64::b_cond(Cond::Ge, 3))?;
        self.e(a64::movz(W::X64, REGMAP[0], 0, 0))?;
        let off = if self.lay.final_pass { self.f.epilogue as i64 - self.here() as i64 } else { 0 };
        self.e(a64::b(off))
    }

    fn size(&self) -> Size {
        match self.i.size() {
            op::B => Size::B,
            op::H => Size::H,
            op::W => Size::S32,
            _ => Size::D64,
        }
    }

    /// The kernel's addressing: the BPF frame pointer becomes `sp + stack_size`; an offset
    /// that does not fit the unsigned-offset form goes to a temporary (register-offset
    /// form, from the unadjusted base).
    fn access(&mut self, acc: Access, rt: Reg, base: Reg, off: i16, tmp: Reg) -> Result<(), JitError> {
        let size = self.size();
        let (b, o) = if base == REGMAP[10] { (Sp, off as i64 + self.f.stack_size as i64) } else { (base, off as i64) };
        if a64::is_lsi_offset(o, size) {
            self.e(a64::ldst_imm(acc, size, rt, b, o))
        } else {
            self.mov_i(true, tmp, off as i32)?;
            self.e(a64::ldst_reg(acc, size, rt, base, tmp))
        }
    }

    fn emit_ldx(&mut self) -> Result<(), JitError> {
        let i = self.i;
        let acc = match i.mode() {
            op::MEM => Access::Load,
            op::MEMSX if i.size() != op::DW => Access::LoadSigned,
            _ => return Err(self.unsupported(format!("load mode {:#04x}", i.code))),
        };
        let (dst, src) = (self.reg(i.dst)?, self.reg(i.src)?);
        self.access(acc, dst, src, i.off, TMP1)
    }

    fn emit_st(&mut self) -> Result<(), JitError> {
        let i = self.i;
        if i.code == op::ST | 0xc0 {
            return Ok(()); // BPF_ST | BPF_NOSPEC: nothing on arm64 (firmware SSBD)
        }
        if i.mode() != op::MEM {
            return Err(self.unsupported(format!("store mode {:#04x}", i.code)));
        }
        let dst = self.reg(i.dst)?;
        self.mov_i(true, TMP1, i.imm)?;
        self.access(Access::Store, TMP1, dst, i.off, TMP2)
    }

    fn emit_stx(&mut self) -> Result<(), JitError> {
        let i = self.i;
        let (dst, src) = (self.reg(i.dst)?, self.reg(i.src)?);
        match i.mode() {
            op::MEM => self.access(Access::Store, src, dst, i.off, TMP1),
            op::ATOMIC if i.imm == LOAD_ACQ || i.imm == STORE_REL => self.emit_atomic_ld_st(dst, src),
            op::ATOMIC if matches!(i.size(), op::W | op::DW) => {
                if self.p.opts.lse {
                    self.emit_lse_atomic(dst, src)
                } else {
                    self.emit_ll_sc_atomic(dst, src)
                }
            }
            _ => Err(self.unsupported(format!("store opcode {:#04x}", i.code))),
        }
    }

    /// `emit_atomic_ld_st`: load-acquire (`ldar`) / store-release (`stlr`) of any size.
    fn emit_atomic_ld_st(&mut self, dst: Reg, src: Reg) -> Result<(), JitError> {
        let (load, size) = (self.i.imm == LOAD_ACQ, self.size());
        let mut reg = if load { src } else { dst };
        if self.i.off != 0 {
            self.add_i(true, TMP1, reg, TMP1, self.i.off as i32)?;
            reg = TMP1;
        }
        self.e(if load { a64::ldar(size, dst, reg) } else { a64::stlr(size, src, reg) })
    }

    /// The address register of an atomic: dst, or TMP1 = dst + off.
    fn atomic_addr(&mut self, dst: Reg) -> Result<Reg, JitError> {
        if self.i.off == 0 {
            return Ok(dst);
        }
        self.add_i(true, TMP1, dst, TMP1, self.i.off as i32)?;
        Ok(TMP1)
    }

    fn emit_lse_atomic(&mut self, dst: Reg, src: Reg) -> Result<(), JitError> {
        let w = if self.i.size() == op::DW { W::X64 } else { W::W32 };
        let imm = self.i.imm;
        let reg = self.atomic_addr(dst)?;
        let (o, fetch) = (Order::AcqRel, imm & op::FETCH != 0);
        match imm {
            x if x == op::ADD as i32 => self.e(a64::lse(AtomicOp::Add, Order::Relaxed, w, src, Zr, reg)),
            x if x == op::OR as i32 => self.e(a64::lse(AtomicOp::Set, Order::Relaxed, w, src, Zr, reg)),
            x if x == op::XOR as i32 => self.e(a64::lse(AtomicOp::Eor, Order::Relaxed, w, src, Zr, reg)),
            x if x == op::AND as i32 => {
                self.e(a64::mvn(w, TMP2, src))?;
                self.e(a64::lse(AtomicOp::Clr, Order::Relaxed, w, TMP2, Zr, reg))
            }
            x if fetch && x == op::ADD as i32 | op::FETCH => self.e(a64::lse(AtomicOp::Add, o, w, src, src, reg)),
            x if fetch && x == op::OR as i32 | op::FETCH => self.e(a64::lse(AtomicOp::Set, o, w, src, src, reg)),
            x if fetch && x == op::XOR as i32 | op::FETCH => self.e(a64::lse(AtomicOp::Eor, o, w, src, src, reg)),
            x if fetch && x == op::AND as i32 | op::FETCH => {
                self.e(a64::mvn(w, TMP2, src))?;
                self.e(a64::lse(AtomicOp::Clr, o, w, TMP2, src, reg))
            }
            op::XCHG => self.e(a64::lse(AtomicOp::Swp, o, w, src, src, reg)),
            op::CMPXCHG => self.e(a64::cas(o, w, REGMAP[0], src, reg)),
            _ => Err(self.unsupported(format!("atomic operation {imm:#x}"))),
        }
    }

    fn emit_ll_sc_atomic(&mut self, dst: Reg, src: Reg) -> Result<(), JitError> {
        let w = if self.i.size() == op::DW { W::X64 } else { W::W32 };
        let imm = self.i.imm;
        let reg = self.atomic_addr(dst)?;
        let alu = |w: W, d: Reg, n: Reg, m: Reg, base: i32| -> Option<a64::Result<u32>> {
            Some(match base {
                x if x == op::ADD as i32 => a64::add(w, d, n, m),
                x if x == op::AND as i32 => a64::and(w, d, n, m),
                x if x == op::OR as i32 => a64::orr(w, d, n, m),
                x if x == op::XOR as i32 => a64::eor(w, d, n, m),
                _ => return None,
            })
        };
        if let Some(word) = alu(w, TMP2, TMP2, src, imm) {
            // lock *(dst + off) <op>= src
            self.e(a64::ldxr(false, w, TMP2, reg))?;
            self.e(word)?;
            self.e(a64::stxr(false, w, TMP3, TMP2, reg))?;
            return self.e(a64::cbnz(W::W32, TMP3, -3));
        }
        if imm & op::FETCH != 0 {
            if let Some(word) = alu(w, TMP2, src, REG_AX, imm & !op::FETCH) {
                // src = atomic_fetch_<op>(dst + off, src)
                self.e(a64::mov(w, REG_AX, src))?;
                self.e(a64::ldxr(false, w, src, reg))?;
                self.e(word)?;
                self.e(a64::stxr(true, w, TMP3, TMP2, reg))?;
                self.e(a64::cbnz(W::W32, TMP3, -3))?;
                return self.e(Ok(a64::dmb(Barrier::Ish)));
            }
        }
        match imm {
            op::XCHG => {
                self.e(a64::mov(w, TMP2, src))?;
                self.e(a64::ldxr(false, w, src, reg))?;
                self.e(a64::stxr(true, w, TMP3, TMP2, reg))?;
                self.e(a64::cbnz(W::W32, TMP3, -2))?;
                self.e(Ok(a64::dmb(Barrier::Ish)))
            }
            op::CMPXCHG => {
                let r0 = REGMAP[0];
                self.e(a64::mov(w, TMP2, r0))?;
                self.e(a64::ldxr(false, w, r0, reg))?;
                self.e(a64::eor(w, TMP3, r0, TMP2))?;
                self.e(a64::cbnz(w, TMP3, 4))?;
                self.e(a64::stxr(true, w, TMP3, src, reg))?;
                self.e(a64::cbnz(W::W32, TMP3, -4))?;
                self.e(Ok(a64::dmb(Barrier::Ish)))
            }
            _ => Err(self.unsupported(format!("atomic operation {imm:#x}"))),
        }
    }
}

impl Program<'_> {
    /// `build_prologue`: landing pad, patch site, frame record, tail-call counter, the
    /// callee-saved registers the function uses, frame pointer, stack.
    fn prologue(&self, f: &Func, a: &mut a64::Asm) -> a64::Result<()> {
        let o = self.opts;
        if o.bti {
            a.put(a64::bti(Bti::Jc));
        }
        a.emit(a64::mov(W::X64, X(9), a64::LR))?;
        a.put(a64::NOP);
        if o.pac {
            a.put(PACIASP);
        }
        a.emit(a64::push_pair(a64::FP, a64::LR))?;
        a.emit(a64::mov_sp(W::X64, a64::FP, Sp))?;
        // prepare_bpf_tail_call_cnt: the main function keeps the counter in a stack slot
        // and its address in x26; subprograms keep the caller's x26.
        if f.is_main {
            a.emit(a64::push_pair(Zr, TCCNT_PTR))?;
            a.emit(a64::mov_sp(W::X64, TCCNT_PTR, Sp))?;
            // Tail calls enter here (PROLOGUE_OFFSET); a mismatch would skip or repeat code.
            if a.len() != o.prologue_offset() {
                return Err(a64::EncodeError { insn: "prologue", msg: format!("tail-call entry at word {}, expected {}", a.len(), o.prologue_offset()) });
            }
            if o.bti {
                a.put(a64::bti(Bti::J));
            }
        } else {
            a.emit(a64::push_pair(TCCNT_PTR, TCCNT_PTR))?;
        }
        push_callee(&f.callee, a)?;
        if f.fp_used {
            a.emit(a64::mov_sp(W::X64, REGMAP[10], Sp))?;
        }
        if f.is_main && self.needs_unwind {
            a.emit(a64::mov_sp(W::X64, UNWIND_REG, Sp))?;
        }
        if f.stack_size != 0 {
            a.emit(a64::sub_imm(W::X64, Sp, Sp, f.stack_size as u64))?;
        }
        Ok(())
    }

    /// `build_epilogue`, then `build_plt` (the long-jump slot for trampolines: its target
    /// is 0 here, nothing attaches to our images).
    fn epilogue(&self, f: &Func, a: &mut a64::Asm) -> a64::Result<()> {
        if f.stack_size != 0 {
            a.emit(a64::add_imm(W::X64, Sp, Sp, f.stack_size as u64))?;
        }
        pop_callee(&f.callee, a)?;
        a.emit(a64::pop_pair(Zr, TCCNT_PTR))?;
        a.emit(a64::pop_pair(a64::FP, a64::LR))?;
        a.emit(a64::mov(W::X64, X(0), REGMAP[0]))?;
        if self.opts.pac {
            a.put(AUTIASP);
        }
        a.emit(a64::ret(a64::LR))?;
        if a.len() % 2 == 1 {
            a.put(a64::NOP);
        }
        a.emit(a64::ldr_literal(W::X64, TMP1, 2))?;
        a.emit(a64::br(TMP1))?;
        a.put(0);
        a.put(0);
        Ok(())
    }

    /// One pass over a function: its words and address relocations.
    fn do_jit(&self, f: &mut Func, lay: &Layout) -> Result<(a64::Asm, Vec<(usize, Reg, usize)>), JitError> {
        let mut a = a64::Asm::new();
        let perr = |e: a64::EncodeError| JitError::Insn { pc: self.orig[f.start], msg: e.to_string() };
        self.prologue(f, &mut a).map_err(perr)?;
        f.prologue_len = a.len();
        let n = f.end - f.start;
        let mut relocs = Vec::new();
        let mut addrs = vec![0; n + 1];
        let mut k = 0;
        while k < n {
            let pc = f.start + k;
            addrs[k] = a.len();
            let mut cx = Cx { p: self, lay, f: &*f, a: a64::Asm::new(), base: a.len(), pc, i: self.insns[pc], relocs: Vec::new(), slots: 1 };
            cx.emit()?;
            let (words, slots) = (cx.a.words, cx.slots);
            relocs.extend(cx.relocs);
            a.words.extend(words);
            if slots == 2 {
                addrs[k + 1] = a.len();
                k += 1;
            }
            k += 1;
        }
        addrs[n] = a.len();
        let epilogue = a.len();
        self.epilogue(f, &mut a).map_err(perr)?;
        if lay.final_pass && (addrs != f.addrs || epilogue != f.epilogue || a.len() != f.len) {
            return Err(JitError::Other(format!("function at slot {}: final pass layout differs from the first", self.orig[f.start])));
        }
        f.addrs = addrs;
        f.epilogue = epilogue;
        f.len = a.len();
        Ok((a, relocs))
    }
}

/// `push_callee_regs`: pairs in order, an odd last one with xzr (sp stays 16-aligned).
fn push_callee(regs: &[Reg], a: &mut a64::Asm) -> a64::Result<()> {
    for pair in regs.chunks(2) {
        a.emit(a64::push_pair(pair[0], pair.get(1).copied().unwrap_or(Zr)))?;
    }
    Ok(())
}

/// `pop_callee_regs`: the reverse of [`push_callee`].
fn pop_callee(regs: &[Reg], a: &mut a64::Asm) -> a64::Result<()> {
    for pair in regs.chunks(2).rev() {
        a.emit(a64::pop_pair(pair[0], pair.get(1).copied().unwrap_or(Zr)))?;
    }
    Ok(())
}

/// Programs from outside the kernel: register numbers above r10 are the JIT's.
fn check_registers(insns: &[Insn], second: &[bool]) -> Result<(), JitError> {
    for (pc, i) in insns.iter().enumerate() {
        if second[pc] {
            continue;
        }
        let jmp = matches!(i.class(), op::JMP | op::JMP32);
        let uses_dst = !(jmp && (i.is_call() || i.is_exit() || i.op() == op::JA)) || i.code == op::JMP | op::CALL | op::X;
        let uses_src = match i.class() {
            op::ALU | op::ALU64 | op::JMP | op::JMP32 => i.source() == op::X && !i.is_call(),
            op::LDX | op::STX => true,
            _ => false,
        };
        if (uses_dst && i.dst > 10) || (uses_src && i.src > 10) {
            return Err(JitError::Insn { pc, msg: format!("register number above r10 in {:#04x}", i.code) });
        }
    }
    Ok(())
}

/// Compile `insns` (a program with its subprograms).
pub fn compile(insns: &[Insn], opts: &Arm64Options, res: &dyn Resolver) -> Result<Arm64Image, JitError> {
    if insns.is_empty() {
        return Err(JitError::Other("empty program".into()));
    }
    let second0 = kops_jit::fixup::second_slots(insns);
    if opts.div_fixups {
        check_registers(insns, &second0)?;
    }
    let (prog, orig) = if opts.div_fixups {
        let e = kops_jit::fixup::expand(insns).map_err(|(pc, m)| JitError::Insn { pc, msg: m })?;
        (e.insns, e.orig)
    } else {
        (insns.to_vec(), (0..insns.len()).collect())
    };
    let second = kops_jit::fixup::second_slots(&prog);
    let starts = kops_analysis::function_starts(&prog, &second)
        .map_err(|(pc, t)| JitError::Insn { pc: orig[pc], msg: format!("call target {t} outside the program") })?;
    let any = |pred: &dyn Fn(&Insn) -> bool| prog.iter().enumerate().any(|(pc, i)| !second[pc] && pred(i));
    let is_callx = |i: &Insn| i.code == op::JMP | op::CALL | op::X;
    let needs_unwind = any(&|i| (i.is_helper_call() && Some(i.imm) == opts.unwind_helper) || is_callx(i));
    let has_callx = any(&is_callx);
    let mut funcs = Vec::new();
    for (fi, &s) in starts.iter().enumerate() {
        let e = starts.get(fi + 1).copied().unwrap_or(prog.len());
        let mut last = e - 1;
        if last > s && second[last] {
            last -= 1;
        }
        let li = prog[last];
        if !(li.is_exit() || (li.is_jump() && li.op() == op::JA)) {
            return Err(JitError::Insn { pc: orig[last], msg: "the function can run past its last instruction (no exit or jump)".into() });
        }
        let depth = opts.stack_depth.unwrap_or_else(|| kops_jit::stack::stack_depth(&prog, s, e, &second, opts.verified));
        let named = |r: u8| prog[s..e].iter().any(|i| i.dst == r || i.src == r);
        let mut callee: Vec<Reg> = (6..=10).filter(|&r| named(r)).map(|r| REGMAP[r as usize]).collect();
        if fi == 0 && needs_unwind {
            callee.push(UNWIND_REG);
        }
        funcs.push(Func { start: s, end: e, is_main: fi == 0, callee, fp_used: named(10), stack_size: depth.div_ceil(16) * 16, addrs: Vec::new(), epilogue: 0, prologue_len: 0, len: 0, base: 0 });
    }
    let p = Program { insns: prog, second, orig: orig.clone(), opts, res, needs_unwind };
    // Pass 1: sizes (every sequence's length is independent of branch distances).
    let sizing = Layout::default();
    for f in funcs.iter_mut() {
        p.do_jit(f, &sizing)?;
    }
    let mut lay = Layout { final_pass: true, ..Layout::default() };
    let mut at = 0;
    for f in funcs.iter_mut() {
        f.base = at;
        lay.func_at.insert(f.start, at);
        at += f.len;
    }
    // Stubs: unwind (sp back to the main frame after its pushes, then the main epilogue's
    // pops with r0 as it is), abort (r0 = 0, then unwind).
    let main = &funcs[0];
    let main_pops = main.base + main.epilogue + (main.stack_size != 0) as usize;
    let mut stubs = a64::Asm::new();
    lay.unwind_stub = at;
    lay.abort_stub = at + 2;
    let se = |e: a64::EncodeError| JitError::Other(e.to_string());
    if needs_unwind {
        stubs.emit(a64::mov_sp(W::X64, Sp, UNWIND_REG)).map_err(se)?;
        stubs.emit(a64::b(main_pops as i64 - (at + 1) as i64)).map_err(se)?;
        stubs.emit(a64::movz(W::X64, REGMAP[0], 0, 0)).map_err(se)?;
        stubs.emit(a64::b(lay.unwind_stub as i64 - (at + 3) as i64)).map_err(se)?;
    }
    let mut table = Vec::new();
    if let (Some(n), true) = (opts.callx_helpers, has_callx) {
        if (at + stubs.len()) % 2 == 1 {
            stubs.put(a64::brk(0x3e8));
        }
        for id in 0..n {
            table.extend_from_slice(&res.helper(id as i32).unwrap_or(0).to_le_bytes());
        }
    }
    lay.callx_table_byte = (at + stubs.len()) * 4;
    // Pass 2: final code.
    let mut code = Vec::new();
    let mut addr_relocs = Vec::new();
    for f in funcs.iter_mut() {
        let (a, relocs) = p.do_jit(f, &lay)?;
        for (w, r, target) in relocs {
            addr_relocs.push(((f.base + w) * 4, r, target));
        }
        code.extend(a.bytes());
    }
    code.extend(stubs.bytes());
    code.extend(table);
    // Native ranges per original slot.
    let mut ranges: Vec<Option<(u32, u32)>> = vec![None; insns.len()];
    for f in &funcs {
        for k in 0..f.end - f.start {
            let pc = f.start + k;
            if p.second[pc] {
                continue;
            }
            let (s, e) = (((f.base + f.addrs[k]) * 4) as u32, ((f.base + f.addrs[k + 1]) * 4) as u32);
            let r = ranges[p.orig[pc]].get_or_insert((s, e));
            r.0 = r.0.min(s);
            r.1 = r.1.max(e);
        }
    }
    let mut insn_ranges = Vec::with_capacity(insns.len());
    let mut prev = 0;
    for r in ranges {
        let r = r.unwrap_or((prev, prev));
        prev = r.1;
        insn_ranges.push(r);
    }
    let layouts = funcs
        .iter()
        .map(|f| FuncLayout {
            insn_start: orig[f.start],
            insn_end: if f.end < orig.len() { orig[f.end] } else { insns.len() },
            code_start: f.base * 4,
            code_len: f.len * 4,
            stack_size: f.stack_size,
            prologue_len: f.prologue_len * 4,
        })
        .collect();
    Ok(Arm64Image { code, funcs: layouts, insn_ranges, addr_relocs })
}
