//! Bit-precise symbolic semantics of the x86-64 instructions native emits use, applied to
//! bytes decoded by iced-x86 (an independent decoder: we never trust our own encoder's idea
//! of what it emitted).
//!
//! Memory through `rsp` is a separate array: the JIT's own pushes land below the BPF stack,
//! where no BPF access can reach, so they must not count as a difference.

use crate::smt::{Bool, Bv, Mem, Smt};
use iced_x86::{Code, Decoder, DecoderOptions, Instruction, Mnemonic, OpKind, Register};

/// The sixteen general-purpose registers, indexed by iced's full-register number.
#[derive(Clone, Debug)]
pub struct X86State {
    pub gpr: [Bv; 16],
    pub zf: Bool,
    pub sf: Bool,
    pub cf: Bool,
    pub of: Bool,
    /// Direction flag, concrete: the ABI has it clear at entry, and `rep` expansion needs
    /// to know the direction.
    pub df: bool,
    /// BPF-visible memory.
    pub mem: Mem,
    /// Memory addressed through rsp (the native stack).
    pub stack: Mem,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum X86SymError {
    #[error("byte {offset}: cannot decode")]
    Decode { offset: usize },
    #[error("byte {offset}: `{text}` is outside the modelled x86 subset ({why})")]
    Unsupported { offset: usize, text: String, why: String },
}

/// Index 0..16 of a 64-bit register (rax=0 .. r15=15), as in the ModRM encoding.
pub fn gpr_index(r: Register) -> Option<usize> {
    let full = r.full_register();
    let i = (full as u32).checked_sub(Register::RAX as u32)? as usize;
    (i < 16).then_some(i)
}

/// Decode `code` into instructions with their byte offsets.
pub fn decode(code: &[u8]) -> Result<Vec<Instruction>, X86SymError> {
    let mut dec = Decoder::with_ip(64, code, 0, DecoderOptions::NONE);
    let mut out = Vec::new();
    while dec.can_decode() {
        let ins = dec.decode();
        if ins.is_invalid() {
            return Err(X86SymError::Decode { offset: ins.ip() as usize });
        }
        out.push(ins);
    }
    Ok(out)
}

struct Exec<'a> {
    s: &'a mut Smt,
    st: X86State,
    ins: Instruction,
}

impl Exec<'_> {
    fn err(&self, why: impl Into<String>) -> X86SymError {
        X86SymError::Unsupported {
            offset: self.ins.ip() as usize,
            text: format!("{}", self.ins),
            why: why.into(),
        }
    }

    fn read_reg(&mut self, r: Register) -> Result<Bv, X86SymError> {
        let i = gpr_index(r).ok_or_else(|| self.err(format!("register {r:?}")))?;
        let full = self.st.gpr[i].clone();
        let w = r.size() as u32 * 8;
        if matches!(r, Register::AH | Register::BH | Register::CH | Register::DH) {
            return Ok(self.s.extract(&full, 15, 8));
        }
        Ok(self.s.extract(&full, w - 1, 0))
    }

    fn write_reg(&mut self, r: Register, v: &Bv) -> Result<(), X86SymError> {
        let i = gpr_index(r).ok_or_else(|| self.err(format!("register {r:?}")))?;
        let full = self.st.gpr[i].clone();
        let new = match r.size() {
            8 => v.clone(),
            // 32-bit writes zero the upper half.
            4 => self.s.zext(v, 64),
            2 | 1 => {
                let hi8 = matches!(r, Register::AH | Register::BH | Register::CH | Register::DH);
                let lo = if hi8 { 8 } else { 0 };
                let hi = lo + v.w;
                let top = self.s.extract(&full, 63, hi);
                let mid = self.s.concat(&top, v);
                if lo == 0 {
                    mid
                } else {
                    let bot = self.s.extract(&full, lo - 1, 0);
                    self.s.concat(&mid, &bot)
                }
            }
            _ => return Err(self.err("register size")),
        };
        self.st.gpr[i] = new;
        Ok(())
    }

    fn mem_addr(&mut self) -> Result<(Bv, bool), X86SymError> {
        let ins = self.ins;
        if ins.memory_segment() != Register::DS && ins.memory_segment() != Register::SS {
            return Err(self.err("segment override"));
        }
        let base = ins.memory_base();
        if base == Register::RIP {
            return Err(self.err("rip-relative"));
        }
        // An address-size prefix makes a 32-bit address (not modelled; was a width panic).
        if base.size() == 4 || ins.memory_index().size() == 4 {
            return Err(self.err("32-bit addressing"));
        }
        let mut a = self.s.lit(64, ins.memory_displacement64());
        let via_rsp = base == Register::RSP;
        if base != Register::None {
            let b = self.read_reg(base)?;
            a = self.s.add(&b, &a);
        }
        if ins.memory_index() != Register::None {
            if ins.memory_index() == Register::RSP {
                return Err(self.err("rsp as index"));
            }
            let x = self.read_reg(ins.memory_index())?;
            let sc = self.s.lit(64, ins.memory_index_scale() as u64);
            let xs = self.s.mul(&x, &sc);
            a = self.s.add(&a, &xs);
        }
        Ok((a, via_rsp))
    }

    fn load(&mut self, addr: &Bv, via_rsp: bool, n: u32) -> Bv {
        let m = if via_rsp { self.st.stack.clone() } else { self.st.mem.clone() };
        self.s.load(&m, addr, n)
    }

    fn store(&mut self, addr: &Bv, via_rsp: bool, v: &Bv) {
        let n = v.w / 8;
        if via_rsp {
            self.st.stack = self.s.store(&self.st.stack.clone(), addr, v, n);
        } else {
            self.st.mem = self.s.store(&self.st.mem.clone(), addr, v, n);
        }
    }

    /// Width in bits of operand `i`.
    fn op_width(&self, i: u32) -> u32 {
        match self.ins.op_kind(i) {
            OpKind::Register => self.ins.op_register(i).size() as u32 * 8,
            OpKind::Memory => self.ins.memory_size().size() as u32 * 8,
            _ => self.ins.op_register(0).size() as u32 * 8,
        }
    }

    fn read_op(&mut self, i: u32, w: u32) -> Result<Bv, X86SymError> {
        match self.ins.op_kind(i) {
            OpKind::Register => self.read_reg(self.ins.op_register(i)),
            OpKind::Memory => {
                let (a, r) = self.mem_addr()?;
                Ok(self.load(&a, r, w / 8))
            }
            OpKind::Immediate8
            | OpKind::Immediate16
            | OpKind::Immediate32
            | OpKind::Immediate64
            | OpKind::Immediate8to16
            | OpKind::Immediate8to32
            | OpKind::Immediate8to64
            | OpKind::Immediate32to64 => Ok(self.s.lit(w, self.ins.immediate(i))),
            k => Err(self.err(format!("operand kind {k:?}"))),
        }
    }

    fn write_op(&mut self, i: u32, v: &Bv) -> Result<(), X86SymError> {
        match self.ins.op_kind(i) {
            OpKind::Register => self.write_reg(self.ins.op_register(i), v),
            OpKind::Memory => {
                let (a, r) = self.mem_addr()?;
                self.store(&a, r, v);
                Ok(())
            }
            k => Err(self.err(format!("destination kind {k:?}"))),
        }
    }

    fn set_zs(&mut self, r: &Bv) {
        let z = self.s.lit(r.w, 0);
        self.st.zf = self.s.eq(r, &z);
        let top = self.s.extract(r, r.w - 1, r.w - 1);
        let one = self.s.lit(1, 1);
        self.st.sf = self.s.eq(&top, &one);
    }

    fn havoc_flags(&mut self) {
        for f in 0..4 {
            let h = self.s.havoc(1);
            let one = self.s.lit(1, 1);
            let b = self.s.eq(&h, &one);
            match f {
                0 => self.st.zf = b,
                1 => self.st.sf = b,
                2 => self.st.cf = b,
                _ => self.st.of = b,
            }
        }
    }

    fn logic_flags(&mut self, r: &Bv) {
        self.set_zs(r);
        self.st.cf = self.s.f();
        self.st.of = self.s.f();
    }

    fn cc(&mut self, m: Mnemonic) -> Result<Bool, X86SymError> {
        use Mnemonic::*;
        let st = self.st.clone();
        let s = &mut *self.s;
        // x86 conditions come in pairs, the second the negation of the first.
        let (c, negate) = match m {
            Cmove | Sete | Je => (st.zf, false),
            Cmovne | Setne | Jne => (st.zf, true),
            Cmovb | Setb | Jb => (st.cf, false),
            Cmovae | Setae | Jae => (st.cf, true),
            Cmovbe | Setbe | Jbe => (s.bor(&st.cf, &st.zf), false),
            Cmova | Seta | Ja => (s.bor(&st.cf, &st.zf), true),
            Cmovs | Sets | Js => (st.sf, false),
            Cmovns | Setns | Jns => (st.sf, true),
            Cmovo | Seto | Jo => (st.of, false),
            Cmovno | Setno | Jno => (st.of, true),
            Cmovl | Setl | Jl => (s.bxor(&st.sf, &st.of), false),
            Cmovge | Setge | Jge => (s.bxor(&st.sf, &st.of), true),
            Cmovle | Setle | Jle | Cmovg | Setg | Jg => {
                let x = s.bxor(&st.sf, &st.of);
                (s.bor(&x, &st.zf), matches!(m, Cmovg | Setg | Jg))
            }
            _ => return Err(self.err("condition code")),
        };
        Ok(if negate { s.bnot(&c) } else { c })
    }

    /// Shift/rotate count operand, masked as the hardware does.
    fn count(&mut self, i: u32, w: u32) -> Result<CountVal, X86SymError> {
        let mask = if w == 64 { 63 } else { 31 };
        match self.ins.op_kind(i) {
            OpKind::Register => {
                let c = self.read_reg(self.ins.op_register(i))?;
                let c = self.s.zext(&c, w.max(c.w));
                let c = self.s.extract(&c, w - 1, 0);
                let m = self.s.lit(w, mask);
                Ok(CountVal::Sym(self.s.and(&c, &m)))
            }
            _ => Ok(CountVal::Const(self.ins.immediate(i) as u32 & mask as u32)),
        }
    }

    fn step(&mut self) -> Result<(), X86SymError> {
        use Mnemonic::*;
        let ins = self.ins;
        let m = ins.mnemonic();
        match m {
            Nop | Prefetcht0 | Prefetcht1 | Prefetcht2 | Prefetchnta | Lfence | Mfence => {}
            Mov => {
                let w = self.op_width(0);
                let v = self.read_op(1, w)?;
                self.write_op(0, &v)?;
            }
            Movzx | Movsx | Movsxd => {
                let w0 = self.op_width(0);
                let w1 = self.op_width(1);
                let v = self.read_op(1, w1)?;
                let v = if m == Movzx { self.s.zext(&v, w0) } else { self.s.sext(&v, w0) };
                self.write_op(0, &v)?;
            }
            Lea => {
                let (a, _) = self.mem_addr()?;
                let w = self.op_width(0);
                let v = self.s.extract(&a, w - 1, 0);
                self.write_op(0, &v)?;
            }
            Add | Sub | And | Or | Xor | Cmp | Test => {
                let w = self.op_width(0);
                let a = self.read_op(0, w)?;
                let b = self.read_op(1, w)?;
                let r = match m {
                    Add => self.s.add(&a, &b),
                    Sub | Cmp => self.s.sub(&a, &b),
                    And | Test => self.s.and(&a, &b),
                    Or => self.s.or(&a, &b),
                    _ => self.s.xor(&a, &b),
                };
                match m {
                    Add => {
                        self.set_zs(&r);
                        self.st.cf = self.s.cmp("bvult", &r, &a);
                        self.st.of = add_overflow(self.s, &a, &b, &r);
                    }
                    Sub | Cmp => {
                        self.set_zs(&r);
                        self.st.cf = self.s.cmp("bvult", &a, &b);
                        self.st.of = sub_overflow(self.s, &a, &b, &r);
                    }
                    _ => self.logic_flags(&r),
                }
                if !matches!(m, Cmp | Test) {
                    self.write_op(0, &r)?;
                }
            }
            Not => {
                let w = self.op_width(0);
                let a = self.read_op(0, w)?;
                let r = self.s.not(&a);
                self.write_op(0, &r)?;
            }
            Neg => {
                let w = self.op_width(0);
                let a = self.read_op(0, w)?;
                let r = self.s.neg(&a);
                self.set_zs(&r);
                let z = self.s.lit(w, 0);
                let e = self.s.eq(&a, &z);
                self.st.cf = self.s.bnot(&e);
                let zero = self.s.lit(w, 0);
                self.st.of = sub_overflow(self.s, &zero, &a, &r);
                self.write_op(0, &r)?;
            }
            Imul if ins.op_count() == 3 || ins.op_count() == 2 => {
                let w = self.op_width(0);
                let (a, b) = if ins.op_count() == 3 {
                    (self.read_op(1, w)?, self.read_op(2, w)?)
                } else {
                    (self.read_op(0, w)?, self.read_op(1, w)?)
                };
                let r = self.s.mul(&a, &b);
                self.write_op(0, &r)?;
                self.havoc_flags();
            }
            Shl | Shr | Sar | Rol | Ror => {
                let w = self.op_width(0);
                let a = self.read_op(0, w)?;
                let r = match self.count(1, w)? {
                    CountVal::Const(0) => {
                        // Flags unchanged, but a 32-bit register is still written, so its
                        // upper half is cleared (seen on the CPU by `kops prove
                        // --check-model`: `ror esi, 0x40` with rsi = 0xffff_ffff_ffff_fffe
                        // leaves 0xffff_fffe).
                        if ins.op_kind(0) == OpKind::Register && w == 32 {
                            self.write_op(0, &a)?;
                        }
                        return Ok(());
                    }
                    CountVal::Const(k) => match m {
                        Rol => self.s.rotl(&a, k),
                        // 8/16-bit counts are masked to 5 bits, so k may exceed w.
                        Ror => self.s.rotl(&a, (w - k % w) % w),
                        _ => {
                            let kb = self.s.lit(w, k as u64);
                            shift(self.s, m, &a, &kb)
                        }
                    },
                    CountVal::Sym(k) => {
                        if matches!(m, Rol | Ror) {
                            return Err(self.err("rotate by a register"));
                        }
                        shift(self.s, m, &a, &k)
                    }
                };
                self.write_op(0, &r)?;
                // Flag results of shifts are not used by our emits; make them unknown so
                // a later reader cannot be proven by accident.
                self.havoc_flags();
            }
            Shlx | Shrx | Sarx | Rorx => {
                let w = self.op_width(0);
                let a = self.read_op(1, w)?;
                let r = if m == Rorx {
                    let k = ins.immediate(2) as u32 % w;
                    self.s.rotl(&a, (w - k) % w)
                } else {
                    let k = match self.count(2, w)? {
                        CountVal::Sym(k) => k,
                        CountVal::Const(k) => self.s.lit(w, k as u64),
                    };
                    let mm = match m {
                        Shlx => Shl,
                        Shrx => Shr,
                        _ => Sar,
                    };
                    shift(self.s, mm, &a, &k)
                };
                self.write_op(0, &r)?; // no flags
            }
            Bswap => {
                let w = self.op_width(0);
                if w != 32 && w != 64 {
                    return Err(self.err("16-bit bswap is undefined"));
                }
                let a = self.read_op(0, w)?;
                let r = crate::bpf::bswap(self.s, &a);
                self.write_op(0, &r)?;
            }
            Movbe => {
                let w = self.op_width(0);
                let a = self.read_op(1, w)?;
                let r = crate::bpf::bswap(self.s, &a);
                self.write_op(0, &r)?;
            }
            Popcnt => {
                let w = self.op_width(0);
                let a = self.read_op(1, w)?;
                // The sum of all bits, grouped by byte: the same function as a flat sum,
                // but the solver can match it byte by byte against SWAR proof sequences.
                let mut acc = self.s.lit(w, 0);
                for byte in 0..w / 8 {
                    let mut cnt = self.s.lit(8, 0);
                    for i in 0..8 {
                        let b = self.s.extract(&a, byte * 8 + i, byte * 8 + i);
                        let bz = self.s.zext(&b, 8);
                        cnt = self.s.add(&cnt, &bz);
                    }
                    let cz = self.s.zext(&cnt, w);
                    acc = self.s.add(&acc, &cz);
                }
                self.write_op(0, &acc)?;
                self.logic_flags(&a);
                let z = self.s.lit(w, 0);
                self.st.zf = self.s.eq(&a, &z);
                self.st.sf = self.s.f();
            }
            Bextr => {
                // The XOP (TBM) form with an immediate control: no CPU here has TBM, so it
                // cannot be checked against one, and no emit uses it.
                if ins.op_kind(2) != OpKind::Register {
                    return Err(self.err("bextr with an immediate control (TBM)"));
                }
                let w = self.op_width(0);
                let src = self.read_op(1, w)?;
                let ctl = self.read_op(2, w)?;
                let start8 = self.s.extract(&ctl, 7, 0);
                let len8 = self.s.extract(&ctl, 15, 8);
                let start = self.s.zext(&start8, w);
                let len = self.s.zext(&len8, w);
                // bvlshr/bvshl give 0 for amounts >= w, as BEXTR does for start >= w.
                let sh = self.s.lshr(&src, &start);
                let one = self.s.lit(w, 1);
                let lm = self.s.shl(&one, &len);
                let mask = self.s.sub(&lm, &one);
                let wl = self.s.lit(w, w as u64);
                let big = self.s.cmp("bvuge", &len, &wl);
                let ones = self.s.lit(w, u64::MAX);
                let mask = self.s.ite(&big, &ones, &mask);
                let r = self.s.and(&sh, &mask);
                self.write_op(0, &r)?;
                self.logic_flags(&r);
                // SF (like AF, PF) is undefined after BEXTR; this CPU clears it where the
                // result's top bit is set (`bextr r9d, r12d, r8d`, r12 = -40, r8 = 0x8000).
                let h = self.s.havoc(1);
                let one = self.s.lit(1, 1);
                self.st.sf = self.s.eq(&h, &one);
            }
            Cmove | Cmovne | Cmovb | Cmovae | Cmovbe | Cmova | Cmovs | Cmovns | Cmovl
            | Cmovge | Cmovle | Cmovg | Cmovo | Cmovno => {
                let w = self.op_width(0);
                let c = self.cc(m)?;
                let old = self.read_op(0, w)?;
                let new = self.read_op(1, w)?;
                let r = self.s.ite(&c, &new, &old);
                // A 32-bit cmov zero-extends even when the condition is false.
                self.write_op(0, &r)?;
            }
            Sete | Setne | Setb | Setae | Setbe | Seta | Sets | Setns | Setl | Setge | Setle
            | Setg | Seto | Setno => {
                let c = self.cc(m)?;
                let v = self.s.bool_to_bv(&c, 8);
                self.write_op(0, &v)?;
            }
            Xchg => {
                let w = self.op_width(0);
                let a = self.read_op(0, w)?;
                let b = self.read_op(1, w)?;
                self.write_op(0, &b)?;
                self.write_op(1, &a)?;
            }
            // With an operand-size prefix push/pop move 2 bytes and rsp by 2 (found by
            // `kops prove --check-model`: the model moved 8 and panicked on `pop r16`).
            Push => {
                let w = match ins.op_kind(0) {
                    OpKind::Register | OpKind::Memory => self.op_width(0),
                    OpKind::Immediate8to16 | OpKind::Immediate16 => 16,
                    _ => 64,
                };
                let v = self.read_op(0, w)?;
                let rsp = self.st.gpr[4].clone();
                let n = self.s.lit(64, w as u64 / 8);
                let nsp = self.s.sub(&rsp, &n);
                self.st.gpr[4] = nsp.clone();
                self.store(&nsp, true, &v);
            }
            Pop => {
                let w = self.op_width(0);
                let rsp = self.st.gpr[4].clone();
                let v = self.load(&rsp, true, w / 8);
                let n = self.s.lit(64, w as u64 / 8);
                // The new rsp is in place before a memory destination's address is formed.
                self.st.gpr[4] = self.s.add(&rsp, &n);
                self.write_op(0, &v)?;
            }
            Cld => self.st.df = false,
            Std => self.st.df = true,
            Movsb | Movsw | Movsd | Movsq | Stosb | Stosw | Stosd | Stosq if ins.has_rep_prefix() => {
                let (movs, size) = match m {
                    Movsb => (true, 1),
                    Movsw => (true, 2),
                    Movsd => (true, 4),
                    Movsq => (true, 8),
                    Stosb => (false, 1),
                    Stosw => (false, 2),
                    Stosd => (false, 4),
                    _ => (false, 8),
                };
                self.rep_string(movs, size)?
            }
            _ => return Err(self.err("mnemonic")),
        }
        Ok(())
    }

    /// `rep movs` / `rep stos` of `size`-byte elements with a count known when the code is
    /// emitted (the emit loads rcx with a constant); a symbolic count is refused, never
    /// approximated. Elements move one at a time in the direction DF says, as the hardware
    /// defines it, so overlapping regions get the architectural result.
    fn rep_string(&mut self, movs: bool, size: u32) -> Result<(), X86SymError> {
        // A segment override (fs/gs have a base) or 32-bit addressing (esi/edi/ecx) would
        // change the addresses the loop below computes.
        if self.ins.segment_prefix() != Register::None {
            return Err(self.err("string instruction with a segment override"));
        }
        if (0..self.ins.op_count()).any(|i| {
            matches!(self.ins.op_kind(i), OpKind::MemorySegESI | OpKind::MemoryESEDI | OpKind::MemorySegSI | OpKind::MemoryESDI)
        }) {
            return Err(self.err("string instruction with 16/32-bit addressing"));
        }
        let rcx = self.st.gpr[1].clone();
        let n = rcx.value().ok_or_else(|| self.err("rep with a non-constant rcx"))?;
        if n > 4096 {
            return Err(self.err("rep count above 4096"));
        }
        let step = if self.st.df { (size as u64).wrapping_neg() } else { size as u64 };
        for _ in 0..n {
            let rdi = self.st.gpr[7].clone();
            let val = if movs {
                let rsi = self.st.gpr[6].clone();
                let v = self.load(&rsi, false, size);
                let st = self.s.lit(64, step);
                self.st.gpr[6] = self.s.add(&rsi, &st);
                v
            } else {
                let rax = self.st.gpr[0].clone();
                self.s.extract(&rax, 8 * size - 1, 0)
            };
            self.store(&rdi, false, &val);
            let st = self.s.lit(64, step);
            self.st.gpr[7] = self.s.add(&rdi, &st);
        }
        self.st.gpr[1] = self.s.lit(64, 0);
        Ok(())
    }
}

enum CountVal {
    Const(u32),
    Sym(Bv),
}

fn shift(s: &mut Smt, m: Mnemonic, a: &Bv, k: &Bv) -> Bv {
    match m {
        Mnemonic::Shl => s.shl(a, k),
        Mnemonic::Shr => s.lshr(a, k),
        _ => s.ashr(a, k),
    }
}

fn sign(s: &mut Smt, x: &Bv) -> Bv {
    s.extract(x, x.w - 1, x.w - 1)
}

fn add_overflow(s: &mut Smt, a: &Bv, b: &Bv, r: &Bv) -> Bool {
    let (sa, sb, sr) = (sign(s, a), sign(s, b), sign(s, r));
    let same = s.eq(&sa, &sb);
    let e = s.eq(&sa, &sr);
    let flip = s.bnot(&e);
    s.band(&same, &flip)
}

fn sub_overflow(s: &mut Smt, a: &Bv, b: &Bv, r: &Bv) -> Bool {
    let (sa, sb, sr) = (sign(s, a), sign(s, b), sign(s, r));
    let e = s.eq(&sa, &sb);
    let differ = s.bnot(&e);
    let e2 = s.eq(&sa, &sr);
    let flip = s.bnot(&e2);
    s.band(&differ, &flip)
}

/// Run decoded code from `init` to its end. Forward jumps inside the code are merged like
/// the eBPF side; anything else (backward jumps, calls, ret) is refused.
pub fn run(s: &mut Smt, code: &[u8], init: X86State) -> Result<X86State, X86SymError> {
    let st = run_to_end(s, code, init)?;
    if st.df {
        return Err(X86SymError::Unsupported {
            offset: code.len(),
            text: "end of code".into(),
            why: "the direction flag is left set (the ABI requires it clear)".into(),
        });
    }
    Ok(st)
}

/// [`run`] without the end-of-code ABI check on DF: the instruction semantics alone, as
/// `check_model` compares them with the CPU (`std` is a form too).
pub fn run_to_end(s: &mut Smt, code: &[u8], init: X86State) -> Result<X86State, X86SymError> {
    let insns = decode(code)?;
    let n = insns.len();
    let index_of = |ip: u64| insns.iter().position(|i| i.ip() == ip).or((ip == code.len() as u64).then_some(n));
    let mut incoming: Vec<Vec<(Bool, X86State)>> = vec![Vec::new(); n + 1];
    incoming[0].push((s.t(), init));
    for k in 0..n {
        let Some((guard, st)) = join(s, std::mem::take(&mut incoming[k]))? else { continue };
        let ins = insns[k];
        if ins.is_jcc_short_or_near() || ins.is_jmp_short_or_near() {
            // With an operand-size prefix AMD CPUs truncate the target to 16 bits, while
            // iced decodes it as Intel does (prefix ignored): refuse rather than pick one.
            if branch_has_osize_prefix(&code[ins.ip() as usize..]) {
                return Err(X86SymError::Unsupported {
                    offset: ins.ip() as usize,
                    text: format!("{ins}"),
                    why: "branch with an operand-size prefix".into(),
                });
            }
            let t = ins.near_branch_target();
            let Some(ti) = index_of(t).filter(|&ti| ti > k) else {
                return Err(X86SymError::Unsupported {
                    offset: ins.ip() as usize,
                    text: format!("{ins}"),
                    why: "jump backwards or out of the code".into(),
                });
            };
            if ins.is_jmp_short_or_near() {
                incoming[ti].push((guard, st));
                continue;
            }
            let mut ex = Exec { s, st, ins };
            let c = ex.cc(ins.mnemonic())?;
            let st = ex.st;
            let taken = s.band(&guard, &c);
            let nc = s.bnot(&c);
            let fall = s.band(&guard, &nc);
            incoming[ti].push((taken, st.clone()));
            incoming[k + 1].push((fall, st));
            continue;
        }
        if ins.code() == Code::INVALID {
            return Err(X86SymError::Decode { offset: ins.ip() as usize });
        }
        let mut ex = Exec { s, st, ins };
        ex.step()?;
        let st = ex.st;
        incoming[k + 1].push((guard, st));
    }
    let (_, st) = join(s, std::mem::take(&mut incoming[n]))?.expect("end reachable");
    Ok(st)
}

fn branch_has_osize_prefix(bytes: &[u8]) -> bool {
    for &b in bytes {
        match b {
            0x66 => return true,
            0x26 | 0x2e | 0x36 | 0x3e | 0x64 | 0x65 | 0x67 | 0xf0 | 0xf2 | 0xf3 | 0x40..=0x4f => {}
            _ => return false,
        }
    }
    false
}

fn join(s: &mut Smt, mut ins: Vec<(Bool, X86State)>) -> Result<Option<(Bool, X86State)>, X86SymError> {
    let Some((mut g, mut st)) = ins.pop() else { return Ok(None) };
    while let Some((g2, st2)) = ins.pop() {
        let gpr = std::array::from_fn(|i| s.ite(&g2, &st2.gpr[i], &st.gpr[i]));
        st = X86State {
            gpr,
            zf: s.ite_bool(&g2, &st2.zf, &st.zf),
            sf: s.ite_bool(&g2, &st2.sf, &st.sf),
            cf: s.ite_bool(&g2, &st2.cf, &st.cf),
            of: s.ite_bool(&g2, &st2.of, &st.of),
            df: if st2.df == st.df {
                st.df
            } else {
                return Err(X86SymError::Unsupported {
                    offset: 0,
                    text: "join".into(),
                    why: "paths disagree on the direction flag".into(),
                });
            },
            mem: s.ite_mem(&g2, &st2.mem, &st.mem),
            stack: s.ite_mem(&g2, &st2.stack, &st.stack),
        };
        g = s.bor(&g2, &g);
    }
    Ok(Some((g, st)))
}
