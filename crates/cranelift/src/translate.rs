//! eBPF -> Cranelift IR, one Cranelift function per eBPF function.
//!
//! - The eleven eBPF registers are `Variable`s; cranelift-frontend builds SSA from them.
//! - Every function owns a 512-byte stack slot; r10 is its end.
//! - Functions: the entry function (pc 0) has the host ABI `fn(r1, r2) -> r0`; every
//!   bpf-to-bpf callee (and pc 0 again when something calls it) has `fn(r1..r5) -> r0`, plus
//!   an unwind flag in conformance mode (helper 5 returning 0 ends the whole program).
//! - Helpers are `extern "C" fn(u64, u64, u64, u64, u64) -> u64` at the addresses of the
//!   program's helper table; tail calls and LD_ABS/LD_IND go through this crate's
//!   runtime functions (`crate::rt`).

use std::collections::BTreeSet;

use cranelift_codegen::ir::condcodes::IntCC;
use cranelift_codegen::ir::{
    types, AbiParam, AtomicRmwOp, Block, FuncRef, InstBuilder, MemFlagsData, SigRef, Signature, StackSlotData, StackSlotKind, Type, Value,
};
use cranelift_frontend::{FunctionBuilder, Variable};
use kops_isa::{op, Insn};

use crate::Error;

const I64: Type = types::I64;
const I32: Type = types::I32;

/// Atomic load-acquire / store-release (`imm` of STX|ATOMIC).
const LOAD_ACQ: i32 = 0x100;
const STORE_REL: i32 = 0x110;

/// One eBPF function: slots `[start, end)` of the program.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Func {
    pub start: usize,
    pub end: usize,
}

/// Which ABI a Cranelift function gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Abi {
    /// `fn(r1, r2) -> r0`: the program's entry.
    Entry,
    /// `fn(r1, r2, r3, r4, r5) -> r0` (`-> (r0, unwind)` in conformance mode).
    Internal,
}

/// Addresses of what generated code calls.
pub struct Runtime<'a> {
    /// Helper id -> address (`None`: no such helper).
    pub helper: &'a dyn Fn(u32) -> Option<u64>,
    /// `tail_call(map, index) -> entry address or 0`.
    pub tail_lookup: u64,
    /// `ld_abs(size, off) -> value, bit 63 set when out of range`.
    pub ld_abs: u64,
    /// Address of the callx table (`CALLX_SLOTS` u64 helper addresses, 0 = none).
    pub callx_table: u64,
}

/// Entries of the conformance `callx` table.
pub const CALLX_SLOTS: u64 = 256;

/// A kinsn site whose op Cranelift has an operation for: its proof sequence (slots
/// `[start, end)` of the lowered program, straight-line) is translated as usual, so every
/// register ends exactly as the verified instructions leave it, and then the op's result
/// register is redefined by the Cranelift operation on the inputs as they were before the
/// site. The two values are equal (that is what the op's proof sequence means, checked by
/// `kops prove` and the ops' tests); Cranelift drops whichever computation is dead.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NativeSite {
    pub start: usize,
    pub end: usize,
    pub op: NativeOp,
}

/// The ops with a Cranelift operation (`rotl`, `popcnt`, `iabs`, `select`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NativeOp {
    /// select64: `dst = cond != 0 ? a : b` (cond32: low half tested; mov32: the moved value
    /// zero-extended from its low half). Its proof writes only dst, so the whole proof is
    /// replaced (no branch is left).
    Select { dst: u8, cond: u8, a: u8, b: u8, cond32: bool, mov32: bool },
    /// select_cmp: `dst = (lhs <cmp> rhs) ? dst : src` (jmp32: low halves compared; mov32 as
    /// for Select). Replaced like Select.
    SelectCmp { dst: u8, lhs: u8, rhs: u8, src: u8, cmp: u8, jmp32: bool, mov32: bool },
    /// `dst = rol(src, k)` at width `w` (32: zero-extended).
    Rotate { w: u8, dst: u8, src: u8, k: u8 },
    /// `dst = popcount(src)` at width `w`.
    Popcount { w: u8, dst: u8, src: u8 },
    /// `dst = |src|` (wrapping) at width `w`.
    Abs { w: u8, dst: u8, src: u8 },
}

/// What the translator needs to know about the whole program.
pub struct Program<'a> {
    pub insns: &'a [Insn],
    pub conformance: bool,
    pub helper_tail_call: Option<u32>,
    pub unwind_helper: Option<u32>,
    pub frontend: cranelift_codegen::isa::TargetFrontendConfig,
    /// Sites compiled to Cranelift operations, by start slot.
    pub sites: &'a [NativeSite],
}

/// Splits the program into functions: pc 0 and every bpf-to-bpf call target start one.
pub fn split_functions(insns: &[Insn]) -> Result<Vec<Func>, Error> {
    let mut starts = BTreeSet::new();
    starts.insert(0usize);
    for (pc, i) in insns.iter().enumerate() {
        if i.is_pseudo_call() {
            let t = pc as i64 + 1 + i.imm as i64;
            if t < 0 || t >= insns.len() as i64 {
                return Err(Error::at(pc, format!("bpf-to-bpf call to invalid target {t}")));
            }
            starts.insert(t as usize);
        }
    }
    let starts: Vec<usize> = starts.into_iter().collect();
    Ok(starts.iter().enumerate().map(|(k, &s)| Func { start: s, end: starts.get(k + 1).copied().unwrap_or(insns.len()) }).collect())
}

/// The Cranelift signature of a function of this program.
pub fn signature(abi: Abi, conformance: bool) -> Signature {
    let mut s = Signature::new(cranelift_codegen::isa::CallConv::SystemV);
    let n = if abi == Abi::Entry { 2 } else { 5 };
    for _ in 0..n {
        s.params.push(AbiParam::new(I64));
    }
    s.returns.push(AbiParam::new(I64));
    if abi == Abi::Internal && conformance {
        // The unwind flag, then r1-r5 as the callee left them (the interpreter's frames
        // share r1-r5 with the caller; verified programs cannot read them after a call).
        s.returns.extend([AbiParam::new(I64); 6]);
    }
    s
}

/// Whether any instruction of `f` names r10 (the function then gets a stack slot).
fn uses_stack(insns: &[Insn], f: Func) -> bool {
    insns[f.start..f.end].iter().any(|i| i.dst == 10 || i.src == 10)
}

/// Translates one function into `b` (a fresh builder over an empty function with the
/// signature of `abi`). `callee` maps a call target pc to the FuncRef of its internal
/// function.
pub struct FnTranslator<'a, 'b> {
    b: FunctionBuilder<'b>,
    p: &'a Program<'a>,
    rt: &'a Runtime<'a>,
    f: Func,
    abi: Abi,
    regs: [Variable; 11],
    /// Block starting at each slot of the function that begins one.
    leaders: Vec<Option<Block>>,
    helper_sig: SigRef,
    entry_sig: SigRef,
    tail_sig: SigRef,
    ld_abs_sig: SigRef,
    /// FuncRef of the internal function starting at each call target.
    callees: Vec<(usize, FuncRef)>,
    flags: MemFlagsData,
}

impl NativeOp {
    /// Whether the site's proof sequence is replaced (it writes only the result register)
    /// rather than translated and then overridden.
    pub fn replaces_proof(&self) -> bool {
        matches!(self, NativeOp::Select { .. } | NativeOp::SelectCmp { .. })
    }
}

impl<'a, 'b> FnTranslator<'a, 'b> {
    pub fn new(
        mut b: FunctionBuilder<'b>,
        p: &'a Program<'a>,
        rt: &'a Runtime<'a>,
        f: Func,
        abi: Abi,
        callees: Vec<(usize, FuncRef)>,
    ) -> Result<FnTranslator<'a, 'b>, Error> {
        let regs = std::array::from_fn(|_| b.declare_var(I64));
        let host = cranelift_codegen::isa::CallConv::SystemV;
        let mut hs = Signature::new(host);
        hs.params.extend([AbiParam::new(I64); 5]);
        hs.returns.push(AbiParam::new(I64));
        let helper_sig = b.import_signature(hs);
        let entry_sig = b.import_signature(signature(Abi::Entry, p.conformance));
        let mut ts = Signature::new(host);
        ts.params.extend([AbiParam::new(I64); 2]);
        ts.returns.push(AbiParam::new(I64));
        let tail_sig = b.import_signature(ts.clone());
        let ld_abs_sig = b.import_signature(ts);
        let leaders = vec![None; f.end - f.start];
        Ok(FnTranslator {
            b,
            p,
            rt,
            f,
            abi,
            regs,
            leaders,
            helper_sig,
            entry_sig,
            tail_sig,
            ld_abs_sig,
            callees,
            flags: MemFlagsData::new().with_notrap(),
        })
    }

    fn insn(&self, pc: usize) -> Insn {
        self.p.insns[pc]
    }

    fn get(&mut self, r: u8) -> Value {
        self.b.use_var(self.regs[r as usize])
    }
    fn set(&mut self, r: u8, v: Value) {
        self.b.def_var(self.regs[r as usize], v);
    }
    fn iconst(&mut self, ty: Type, v: i64) -> Value {
        self.b.ins().iconst(ty, v)
    }

    /// Marks the block leaders of the function: its start, jump targets, and the slot after
    /// every jump and exit.
    fn find_leaders(&mut self) -> Result<(), Error> {
        let Func { start, end } = self.f;
        let mark = |s: &mut Self, pc: usize| {
            if pc < end && s.leaders[pc - start].is_none() {
                s.leaders[pc - start] = Some(s.b.create_block());
            }
        };
        mark(self, start);
        let mut second = vec![false; end - start];
        let mut pc = start;
        while pc < end {
            let i = self.insn(pc);
            if let Some(s) = self.p.sites.iter().find(|s| s.start == pc && s.op.replaces_proof() && s.end <= end) {
                // The proof's own jumps are not translated.
                pc = s.end;
                continue;
            }
            if i.is_ld_imm64() {
                if pc + 1 >= end {
                    return Err(Error::at(pc, "ld_imm64 without its second slot".into()));
                }
                second[pc + 1 - start] = true;
                pc += 2;
                continue;
            }
            if i.is_jump() {
                let t = pc as i64 + 1 + i.jump_offset() as i64;
                if t < start as i64 || t >= end as i64 {
                    return Err(Error::at(pc, format!("jump to {t} leaves its function [{start}, {end})")));
                }
                mark(self, t as usize);
                mark(self, pc + 1);
            } else if i.is_exit() {
                mark(self, pc + 1);
            }
            pc += 1;
        }
        for (k, l) in self.leaders.iter().enumerate() {
            if l.is_some() && second[k] {
                return Err(Error::at(start + k, "jump into the second slot of ld_imm64".into()));
            }
        }
        for s in self.p.sites.iter().filter(|s| s.op.replaces_proof() && s.start >= start && s.end <= end) {
            if let Some(k) = (s.start + 1..s.end).find(|&k| self.leaders[k - start].is_some()) {
                return Err(Error::at(k, format!("a jump enters the kinsn site at {}", s.start)));
            }
        }
        Ok(())
    }

    /// Builds the whole function.
    pub fn translate(mut self) -> Result<(), Error> {
        self.find_leaders()?;
        let entry = self.b.create_block();
        self.b.append_block_params_for_function_params(entry);
        self.b.switch_to_block(entry);
        let params: Vec<Value> = self.b.block_params(entry).to_vec();
        let zero = self.iconst(I64, 0);
        for r in 0..10u8 {
            let v = if (1..=5).contains(&r) { params.get(r as usize - 1).copied().unwrap_or(zero) } else { zero };
            self.set(r, v);
        }
        if uses_stack(self.p.insns, self.f) {
            let slot = self.b.create_sized_stack_slot(StackSlotData::new(StackSlotKind::ExplicitSlot, kops_vm::STACK_SIZE as u32, 4));
            if self.p.conformance {
                // The interpreter's stack starts zeroed; the suite's programs may read it.
                let z = self.iconst(I64, 0);
                for k in 0..(kops_vm::STACK_SIZE as i32 / 8) {
                    self.b.ins().stack_store(I64, z, slot, k * 8);
                }
            }
            let fp = self.b.ins().stack_addr(I64, slot, kops_vm::STACK_SIZE as i32);
            self.set(10, fp);
        } else {
            self.set(10, zero);
        }
        let first = self.leaders[0].expect("start is a leader");
        self.b.ins().jump(first, &[]);
        let mut filled = true;
        let mut pc = self.f.start;
        // A native site in progress: (end slot, result register, native value).
        let mut pending: Option<(usize, u8, Value)> = None;
        while pc < self.f.end {
            if let Some((end, dst, v)) = pending {
                if end == pc {
                    self.set(dst, v);
                    pending = None;
                }
            }
            if let Some(blk) = self.leaders[pc - self.f.start] {
                if !filled {
                    self.b.ins().jump(blk, &[]);
                }
                self.b.switch_to_block(blk);
            } else if filled {
                // Unreachable code after a jump or exit: a block nobody enters.
                let blk = self.b.create_block();
                self.b.switch_to_block(blk);
            }
            if let Some(s) = self.p.sites.iter().find(|s| s.start == pc) {
                if s.op.replaces_proof() && s.end <= self.f.end {
                    let (dst, v) = self.replace_site(s);
                    self.set(dst, v);
                    filled = false;
                    pc = s.end;
                    continue;
                }
                pending = self.native_site(s).map(|(dst, v)| (s.end, dst, v));
            }
            let i = self.insn(pc);
            let (next, ends) = self.one(pc, i)?;
            if ends && pending.is_some() {
                return Err(Error::at(pc, "a native kinsn site's proof sequence ends its block".into()));
            }
            filled = ends;
            pc = next;
        }
        if !filled {
            return Err(Error::at(self.f.end.saturating_sub(1), "execution can fall off the end of the function".into()));
        }
        self.b.seal_all_blocks();
        self.b.finalize(self.p.frontend);
        Ok(())
    }

    /// The value of a site whose proof is replaced (it writes only dst).
    fn replace_site(&mut self, s: &NativeSite) -> (u8, Value) {
        let mov = |t: &mut Self, r: u8, mov32: bool| {
            let v = t.get(r);
            if mov32 {
                let x = t.low(v);
                t.b.ins().uextend(I64, x)
            } else {
                v
            }
        };
        match s.op {
            NativeOp::Select { dst, cond, a, b, cond32, mov32 } => {
                let c = self.get(cond);
                let c = if cond32 { self.low(c) } else { c };
                let va = mov(self, a, mov32);
                let vb = mov(self, b, mov32);
                let v = self.b.ins().select(c, va, vb);
                (dst, v)
            }
            NativeOp::SelectCmp { dst, lhs, rhs, src, cmp, jmp32, mov32 } => {
                let l = self.get(lhs);
                let r = self.get(rhs);
                let (l, r) = if jmp32 { (self.low(l), self.low(r)) } else { (l, r) };
                let taken = match cmp_cc(cmp) {
                    Some(cc) => self.b.ins().icmp(cc, l, r),
                    None => {
                        let x = self.b.ins().band(l, r);
                        self.b.ins().icmp_imm_s(IntCC::NotEqual, x, 0)
                    }
                };
                let keep = self.get(dst);
                let moved = mov(self, src, mov32);
                let v = self.b.ins().select(taken, keep, moved);
                (dst, v)
            }
            // Not replaced (see `replaces_proof`).
            NativeOp::Rotate { dst, .. } | NativeOp::Popcount { dst, .. } | NativeOp::Abs { dst, .. } => {
                let v = self.get(dst);
                (dst, v)
            }
        }
    }

    /// The native value of site `s` from the registers as they are at its start, or None
    /// (the proof sequence alone) when the site is not straight-line code in one block.
    fn native_site(&mut self, s: &NativeSite) -> Option<(u8, Value)> {
        let (lo, hi) = (s.start.checked_sub(self.f.start)?, s.end.checked_sub(self.f.start)?);
        if hi > self.leaders.len() || self.leaders[lo + 1..hi].iter().any(|l| l.is_some()) {
            return None;
        }
        let straight =
            self.p.insns[s.start..s.end].iter().all(|i| matches!(i.class(), op::ALU | op::ALU64) || i.is_ld_imm64() || i.code == 0);
        if !straight {
            return None;
        }
        match s.op {
            NativeOp::Rotate { w, dst, src, k } => {
                let x = self.get(src);
                let v = if w == 32 {
                    let x = self.low(x);
                    let k = self.iconst(I32, k as i64);
                    let r = self.b.ins().rotl(x, k);
                    self.b.ins().uextend(I64, r)
                } else {
                    let k = self.iconst(I64, k as i64);
                    self.b.ins().rotl(x, k)
                };
                Some((dst, v))
            }
            NativeOp::Select { .. } | NativeOp::SelectCmp { .. } => None,
            NativeOp::Abs { w, dst, src } => {
                let x = self.get(src);
                let v = if w == 32 {
                    let x = self.low(x);
                    let r = self.b.ins().iabs(x);
                    self.b.ins().uextend(I64, r)
                } else {
                    self.b.ins().iabs(x)
                };
                Some((dst, v))
            }
            NativeOp::Popcount { w, dst, src } => {
                let x = self.get(src);
                let v = if w == 32 {
                    let x = self.low(x);
                    let r = self.b.ins().popcnt(x);
                    self.b.ins().uextend(I64, r)
                } else {
                    self.b.ins().popcnt(x)
                };
                Some((dst, v))
            }
        }
    }

    /// `return r0` from this function (the unwind flag clear).
    fn ret(&mut self, r0: Value) {
        if self.abi == Abi::Internal && self.p.conformance {
            let z = self.iconst(I64, 0);
            let a = self.args();
            self.b.ins().return_(&[r0, z, a[0], a[1], a[2], a[3], a[4]]);
        } else {
            self.b.ins().return_(&[r0]);
        }
    }

    /// End the whole program with r0 = 0 (conformance unwind).
    fn unwind(&mut self) {
        let z = self.iconst(I64, 0);
        if self.abi == Abi::Internal {
            let one = self.iconst(I64, 1);
            let a = self.args();
            self.b.ins().return_(&[z, one, a[0], a[1], a[2], a[3], a[4]]);
        } else {
            self.b.ins().return_(&[z]);
        }
    }

    /// Translates the instruction at `pc`; returns the next pc and whether the current
    /// block ended.
    fn one(&mut self, pc: usize, i: Insn) -> Result<(usize, bool), Error> {
        match i.class() {
            op::ALU64 | op::ALU => {
                self.alu(pc, i)?;
                Ok((pc + 1, false))
            }
            op::LDX => {
                let base = self.get(i.src);
                let n = i.size_bytes();
                let v = if i.mode() == op::MEMSX {
                    match n {
                        1 => self.b.ins().sload8(I64, self.flags, base, i.off as i32),
                        2 => self.b.ins().sload16(I64, self.flags, base, i.off as i32),
                        4 => self.b.ins().sload32(self.flags, base, i.off as i32),
                        _ => return Err(Error::at(pc, "sign-extending 64-bit load".into())),
                    }
                } else {
                    self.load(n, base, i.off as i32)
                };
                self.set(i.dst, v);
                Ok((pc + 1, false))
            }
            op::ST => {
                let base = self.get(i.dst);
                let v = self.iconst(I64, i.imm as i64);
                self.store(i.size_bytes(), v, base, i.off as i32);
                Ok((pc + 1, false))
            }
            op::STX => {
                if i.mode() == op::ATOMIC {
                    self.atomic(pc, i)?;
                } else {
                    let base = self.get(i.dst);
                    let v = self.get(i.src);
                    self.store(i.size_bytes(), v, base, i.off as i32);
                }
                Ok((pc + 1, false))
            }
            op::LD => {
                if i.is_ld_imm64() {
                    if i.src != 0 {
                        return Err(Error::at(pc, format!("unresolved ld_imm64 with src_reg {}", i.src)));
                    }
                    let hi = self.p.insns.get(pc + 1).map_or(0, |h| h.imm as u32 as u64);
                    let v = (i.imm as u32 as u64) | (hi << 32);
                    let c = self.iconst(I64, v as i64);
                    self.set(i.dst, c);
                    return Ok((pc + 2, false));
                }
                self.ld_abs(pc, i)?;
                Ok((pc + 1, false))
            }
            op::JMP | op::JMP32 => self.jump(pc, i),
            c => Err(Error::at(pc, format!("unknown instruction class {c:#x}"))),
        }
    }

    fn load(&mut self, n: usize, base: Value, off: i32) -> Value {
        let f = self.flags;
        match n {
            1 => self.b.ins().uload8(I64, f, base, off),
            2 => self.b.ins().uload16(I64, f, base, off),
            4 => self.b.ins().uload32(f, base, off),
            _ => self.b.ins().load(I64, f, base, off),
        }
    }

    fn store(&mut self, n: usize, v: Value, base: Value, off: i32) {
        let f = self.flags;
        match n {
            1 => self.b.ins().istore8(f, v, base, off),
            2 => self.b.ins().istore16(f, v, base, off),
            4 => self.b.ins().istore32(f, v, base, off),
            _ => self.b.ins().store(f, v, base, off),
        };
    }

    /// 32-bit operand: the low half of a register.
    fn low(&mut self, v: Value) -> Value {
        self.b.ins().ireduce(I32, v)
    }

    fn alu(&mut self, pc: usize, i: Insn) -> Result<(), Error> {
        let is64 = i.class() == op::ALU64;
        let ty = if is64 { I64 } else { I32 };
        let opc = i.op();
        if opc == op::END {
            let v = self.get(i.dst);
            let swap = is64 || i.source() == op::TO_BE;
            let r = match (i.imm, swap) {
                (16, false) => self.b.ins().band_imm_u(v, 0xffff),
                (32, false) => {
                    let x = self.low(v);
                    self.b.ins().uextend(I64, x)
                }
                (64, false) => v,
                (16, true) => {
                    let x = self.b.ins().ireduce(types::I16, v);
                    let s = self.b.ins().bswap(x);
                    self.b.ins().uextend(I64, s)
                }
                (32, true) => {
                    let x = self.low(v);
                    let s = self.b.ins().bswap(x);
                    self.b.ins().uextend(I64, s)
                }
                (64, true) => self.b.ins().bswap(v),
                (w, _) => return Err(Error::at(pc, format!("byte swap width {w}"))),
            };
            self.set(i.dst, r);
            return Ok(());
        }
        if opc == op::MOV {
            let r = if i.source() == op::K {
                if is64 {
                    self.iconst(I64, i.imm as i64)
                } else {
                    self.iconst(I64, i.imm as u32 as i64)
                }
            } else {
                let s = self.get(i.src);
                match (is64, i.off) {
                    (true, 0) => s,
                    (_, 8 | 16 | 32) => {
                        let nt = match i.off {
                            8 => types::I8,
                            16 => types::I16,
                            _ => I32,
                        };
                        let x = self.b.ins().ireduce(nt, s);
                        if is64 {
                            self.b.ins().sextend(I64, x)
                        } else {
                            let y = self.b.ins().sextend(I32, x);
                            self.b.ins().uextend(I64, y)
                        }
                    }
                    (false, 0) => {
                        let x = self.low(s);
                        self.b.ins().uextend(I64, x)
                    }
                    (_, o) => return Err(Error::at(pc, format!("mov with offset {o}"))),
                }
            };
            self.set(i.dst, r);
            return Ok(());
        }
        let d64 = self.get(i.dst);
        let a = if is64 { d64 } else { self.low(d64) };
        // The source: a register, or the immediate (sign-extended for ALU64; for ALU the
        // constant is made at I32, its low 32 bits).
        let (bv, bimm): (Option<Value>, Option<i64>) = if i.source() == op::X {
            let s = self.get(i.src);
            (Some(if is64 { s } else { self.low(s) }), None)
        } else {
            (None, Some(i.imm as i64))
        };
        let b_val = |s: &mut Self| -> Value {
            match bv {
                Some(v) => v,
                None => s.iconst(ty, bimm.unwrap_or(0)),
            }
        };
        let ins_signed = i.off == 1;
        if matches!(opc, op::DIV | op::MOD) && !matches!(i.off, 0 | 1) {
            return Err(Error::at(pc, format!("division offset {}", i.off)));
        }
        let r = match opc {
            op::ADD => match bimm {
                Some(k) => self.b.ins().iadd_imm_s(a, k),
                None => {
                    let b = b_val(self);
                    self.b.ins().iadd(a, b)
                }
            },
            op::SUB => {
                let b = b_val(self);
                self.b.ins().isub(a, b)
            }
            op::MUL => {
                let b = b_val(self);
                self.b.ins().imul(a, b)
            }
            op::OR => {
                let b = b_val(self);
                self.b.ins().bor(a, b)
            }
            op::AND => {
                let b = b_val(self);
                self.b.ins().band(a, b)
            }
            op::XOR => {
                let b = b_val(self);
                self.b.ins().bxor(a, b)
            }
            op::LSH | op::RSH | op::ARSH => {
                // Cranelift masks shift amounts to the operand width, as eBPF does.
                let b = match bimm {
                    Some(k) => self.iconst(ty, k & if is64 { 63 } else { 31 }),
                    None => b_val(self),
                };
                match opc {
                    op::LSH => self.b.ins().ishl(a, b),
                    op::RSH => self.b.ins().ushr(a, b),
                    _ => self.b.ins().sshr(a, b),
                }
            }
            op::NEG => self.b.ins().ineg(a),
            op::DIV | op::MOD => self.divmod(ty, opc == op::DIV, ins_signed, a, bv, bimm),
            o => return Err(Error::at(pc, format!("unknown ALU operation {o:#x}"))),
        };
        let r = if is64 { r } else { self.b.ins().uextend(I64, r) };
        self.set(i.dst, r);
        Ok(())
    }

    /// eBPF division and modulo: by 0 the quotient is 0 and the remainder the dividend;
    /// signed `MIN / -1` is `MIN` and `MIN % -1` is 0.
    fn divmod(&mut self, ty: Type, div: bool, signed: bool, a: Value, bv: Option<Value>, bimm: Option<i64>) -> Value {
        if let Some(k) = bimm {
            // Constant divisor: no run-time checks (Cranelift strength-reduces these).
            let k = if ty == I32 { k as i32 as i64 } else { k };
            let km = if ty == I32 { k as u32 as i64 } else { k };
            return match (div, signed, k) {
                (true, _, 0) => self.iconst(ty, 0),
                (false, _, 0) => a,
                (true, true, -1) => self.b.ins().ineg(a),
                (false, true, -1) => self.iconst(ty, 0),
                (true, false, _) => {
                    let c = self.iconst(ty, km);
                    self.b.ins().udiv(a, c)
                }
                (false, false, _) => {
                    let c = self.iconst(ty, km);
                    self.b.ins().urem(a, c)
                }
                (true, true, _) => {
                    let c = self.iconst(ty, k);
                    self.b.ins().sdiv(a, c)
                }
                (false, true, _) => {
                    let c = self.iconst(ty, k);
                    self.b.ins().srem(a, c)
                }
            };
        }
        let b = bv.expect("register divisor");
        let zero = self.iconst(ty, 0);
        let one = self.iconst(ty, 1);
        let is0 = self.b.ins().icmp_imm_s(IntCC::Equal, b, 0);
        if !signed {
            let safe = self.b.ins().select(is0, one, b);
            return if div {
                let q = self.b.ins().udiv(a, safe);
                self.b.ins().select(is0, zero, q)
            } else {
                let r = self.b.ins().urem(a, safe);
                self.b.ins().select(is0, a, r)
            };
        }
        let ism1 = self.b.ins().icmp_imm_s(IntCC::Equal, b, -1);
        let special = self.b.ins().bor(is0, ism1);
        let safe = self.b.ins().select(special, one, b);
        if div {
            let q = self.b.ins().sdiv(a, safe);
            let neg = self.b.ins().ineg(a);
            let q = self.b.ins().select(ism1, neg, q);
            self.b.ins().select(is0, zero, q)
        } else {
            let r = self.b.ins().srem(a, safe);
            let r = self.b.ins().select(ism1, zero, r);
            self.b.ins().select(is0, a, r)
        }
    }

    fn atomic(&mut self, pc: usize, i: Insn) -> Result<(), Error> {
        let n = i.size_bytes();
        let f = MemFlagsData::new();
        match i.imm {
            LOAD_ACQ => {
                let base = self.get(i.src);
                let addr = self.b.ins().iadd_imm_s(base, i.off as i64);
                let ty = match n {
                    1 => types::I8,
                    2 => types::I16,
                    4 => I32,
                    _ => I64,
                };
                let v = self.b.ins().atomic_load(ty, f, addr);
                let v = if ty == I64 { v } else { self.b.ins().uextend(I64, v) };
                self.set(i.dst, v);
                return Ok(());
            }
            STORE_REL => {
                let base = self.get(i.dst);
                let addr = self.b.ins().iadd_imm_s(base, i.off as i64);
                let s = self.get(i.src);
                let v = match n {
                    1 => self.b.ins().ireduce(types::I8, s),
                    2 => self.b.ins().ireduce(types::I16, s),
                    4 => self.low(s),
                    _ => s,
                };
                self.b.ins().atomic_store(f, v, addr);
                return Ok(());
            }
            _ => {}
        }
        let ty = match n {
            4 => I32,
            8 => I64,
            _ => return Err(Error::at(pc, "atomic read-modify-write must be 32 or 64 bits".into())),
        };
        let base = self.get(i.dst);
        let addr = self.b.ins().iadd_imm_s(base, i.off as i64);
        let s64 = self.get(i.src);
        let s = if ty == I32 { self.low(s64) } else { s64 };
        let widen = |t: &mut Self, v: Value| if ty == I32 { t.b.ins().uextend(I64, v) } else { v };
        if i.imm == op::CMPXCHG {
            let r0 = self.get(0);
            let e = if ty == I32 { self.low(r0) } else { r0 };
            let old = self.b.ins().atomic_cas(f, addr, e, s);
            let old = widen(self, old);
            self.set(0, old);
            return Ok(());
        }
        let rmw = match i.imm & !op::FETCH {
            0x00 => AtomicRmwOp::Add,
            0x40 => AtomicRmwOp::Or,
            0x50 => AtomicRmwOp::And,
            0xa0 => AtomicRmwOp::Xor,
            _ if i.imm == op::XCHG => AtomicRmwOp::Xchg,
            _ => return Err(Error::at(pc, format!("unknown atomic operation {:#x}", i.imm))),
        };
        let old = self.b.ins().atomic_rmw(ty, f, rmw, addr, s);
        if i.imm & op::FETCH != 0 {
            let old = widen(self, old);
            self.set(i.src, old);
        }
        Ok(())
    }

    /// LD_ABS / LD_IND: r0 = the big-endian packet bytes; out of range returns 0 from
    /// this function (the kernel's `w0 ^= w0; exit`).
    fn ld_abs(&mut self, pc: usize, i: Insn) -> Result<(), Error> {
        if !matches!(i.mode(), op::ABS | op::IND) || i.size() == op::DW {
            return Err(Error::at(pc, "unknown LD form".into()));
        }
        let size = self.iconst(I64, i.size_bytes() as i64);
        let off = if i.mode() == op::IND {
            let s = self.get(i.src);
            let x = self.b.ins().iadd_imm_s(s, i.imm as i64);
            let x = self.low(x);
            self.b.ins().sextend(I64, x)
        } else {
            self.iconst(I64, i.imm as i64)
        };
        let fp = self.iconst(I64, self.rt.ld_abs as i64);
        let call = self.b.ins().call_indirect(self.ld_abs_sig, fp, &[size, off]);
        let v = self.b.inst_results(call)[0];
        let bad = self.b.ins().icmp_imm_s(IntCC::SignedLessThan, v, 0);
        let fail = self.b.create_block();
        let ok = self.b.create_block();
        self.b.ins().brif(bad, fail, &[], ok, &[]);
        self.b.switch_to_block(fail);
        let z = self.iconst(I64, 0);
        self.ret(z);
        self.b.switch_to_block(ok);
        self.set(0, v);
        Ok(())
    }

    fn jump(&mut self, pc: usize, i: Insn) -> Result<(usize, bool), Error> {
        let is32 = i.class() == op::JMP32;
        match i.op() {
            op::JA => {
                let t = (pc as i64 + 1 + i.jump_offset() as i64) as usize;
                let blk = self.block_at(t, pc)?;
                self.b.ins().jump(blk, &[]);
                return Ok((pc + 1, true));
            }
            op::EXIT if !is32 => {
                let r0 = self.get(0);
                self.ret(r0);
                return Ok((pc + 1, true));
            }
            op::CALL if !is32 => return self.call(pc, i),
            _ => {}
        }
        let cc = match (i.op(), cmp_cc(i.op())) {
            (_, Some(cc)) => cc,
            (op::JSET, None) => IntCC::NotEqual,
            (o, None) => return Err(Error::at(pc, format!("unknown jump operation {o:#x}"))),
        };
        let d = self.get(i.dst);
        let a = if is32 { self.low(d) } else { d };
        let ty = if is32 { I32 } else { I64 };
        let b = if i.source() == op::X {
            let s = self.get(i.src);
            if is32 {
                self.low(s)
            } else {
                s
            }
        } else {
            self.iconst(ty, i.imm as i64)
        };
        let c = if i.op() == op::JSET {
            let x = self.b.ins().band(a, b);
            self.b.ins().icmp_imm_s(IntCC::NotEqual, x, 0)
        } else {
            self.b.ins().icmp(cc, a, b)
        };
        let t = (pc as i64 + 1 + i.off as i64) as usize;
        let taken = self.block_at(t, pc)?;
        let fall = self.block_at(pc + 1, pc)?;
        self.b.ins().brif(c, taken, &[], fall, &[]);
        Ok((pc + 1, true))
    }

    fn block_at(&self, t: usize, pc: usize) -> Result<Block, Error> {
        t.checked_sub(self.f.start)
            .and_then(|k| self.leaders.get(k).copied().flatten())
            .ok_or_else(|| Error::at(pc, format!("control flow leaves the function at {t}")))
    }

    fn args(&mut self) -> [Value; 5] {
        [self.get(1), self.get(2), self.get(3), self.get(4), self.get(5)]
    }

    fn call(&mut self, pc: usize, i: Insn) -> Result<(usize, bool), Error> {
        if i.source() == op::X {
            return self.callx(pc, i);
        }
        match i.src {
            op::PSEUDO_CALL => {
                let t = (pc as i64 + 1 + i.imm as i64) as usize;
                let fref = self.callee(t, pc)?;
                let args = self.args();
                let call = self.b.ins().call(fref, &args);
                let res = self.b.inst_results(call).to_vec();
                self.set(0, res[0]);
                if self.p.conformance {
                    for r in 1..=5u8 {
                        self.set(r, res[r as usize + 1]);
                    }
                    self.check_unwind_flag(res[1]);
                }
                Ok((pc + 1, false))
            }
            0 => {
                let id = i.imm as u32;
                if Some(id) == self.p.helper_tail_call {
                    self.tail_call();
                    return Ok((pc + 1, false));
                }
                let addr = (self.rt.helper)(id).ok_or_else(|| Error::at(pc, format!("call to unknown helper {id}")))?;
                let fp = self.iconst(I64, addr as i64);
                let args = self.args();
                let call = self.b.ins().call_indirect(self.helper_sig, fp, &args);
                let r0 = self.b.inst_results(call)[0];
                self.set(0, r0);
                if self.p.conformance && Some(id) == self.p.unwind_helper {
                    let z = self.b.ins().icmp_imm_s(IntCC::Equal, r0, 0);
                    self.unwind_if(z);
                }
                Ok((pc + 1, false))
            }
            s => Err(Error::at(pc, format!("call with src_reg {s} (kfuncs and kinsn sites are resolved before compiling)"))),
        }
    }

    /// After a call into an internal function: a set unwind flag ends the program.
    fn check_unwind_flag(&mut self, flag: Value) {
        let c = self.b.ins().icmp_imm_s(IntCC::NotEqual, flag, 0);
        self.unwind_if(c);
    }

    fn unwind_if(&mut self, c: Value) {
        let out = self.b.create_block();
        let cont = self.b.create_block();
        self.b.ins().brif(c, out, &[], cont, &[]);
        self.b.switch_to_block(out);
        self.unwind();
        self.b.switch_to_block(cont);
    }

    /// `call %rN` (conformance): the helper whose id is in rN, from the callx table; an id
    /// without a helper ends the program with r0 = 0.
    fn callx(&mut self, pc: usize, i: Insn) -> Result<(usize, bool), Error> {
        if !self.p.conformance || self.rt.callx_table == 0 {
            return Err(Error::at(pc, "callx (call by register) outside the conformance convention".into()));
        }
        if i.dst > 10 {
            return Err(Error::at(pc, "callx register above r10".into()));
        }
        let id = self.get(i.dst);
        let inb = self.b.ins().icmp_imm_s(IntCC::UnsignedLessThan, id, CALLX_SLOTS as i64);
        let look = self.b.create_block();
        let have = self.b.create_block();
        let abort = self.b.create_block();
        self.b.ins().brif(inb, look, &[], abort, &[]);
        self.b.switch_to_block(abort);
        self.unwind();
        self.b.switch_to_block(look);
        let table = self.iconst(I64, self.rt.callx_table as i64);
        let off = self.b.ins().ishl_imm_u(id, 3);
        let at = self.b.ins().iadd(table, off);
        let addr = self.b.ins().load(I64, MemFlagsData::trusted().with_readonly(), at, 0);
        let nz = self.b.ins().icmp_imm_s(IntCC::NotEqual, addr, 0);
        let abort2 = self.b.create_block();
        self.b.ins().brif(nz, have, &[], abort2, &[]);
        self.b.switch_to_block(abort2);
        self.unwind();
        self.b.switch_to_block(have);
        let args = self.args();
        let call = self.b.ins().call_indirect(self.helper_sig, addr, &args);
        let r0 = self.b.inst_results(call)[0];
        self.set(0, r0);
        if let Some(u) = self.p.unwind_helper {
            let is_u = self.b.ins().icmp_imm_s(IntCC::Equal, id, u as i64);
            let is0 = self.b.ins().icmp_imm_s(IntCC::Equal, r0, 0);
            let both = self.b.ins().band(is_u, is0);
            self.unwind_if(both);
        }
        Ok((pc + 1, false))
    }

    /// `bpf_tail_call(ctx, map, index)`: when the runtime finds a target (and the count
    /// allows), run it with this r1 and return its r0 from this function; else go on with
    /// r0 unchanged, as the interpreter does.
    fn tail_call(&mut self) {
        let map = self.get(2);
        let idx = self.get(3);
        let idx = self.b.ins().band_imm_u(idx, 0xffff_ffff);
        let fp = self.iconst(I64, self.rt.tail_lookup as i64);
        let call = self.b.ins().call_indirect(self.tail_sig, fp, &[map, idx]);
        let entry = self.b.inst_results(call)[0];
        let nz = self.b.ins().icmp_imm_s(IntCC::NotEqual, entry, 0);
        let go = self.b.create_block();
        let cont = self.b.create_block();
        self.b.ins().brif(nz, go, &[], cont, &[]);
        self.b.switch_to_block(go);
        let r1 = self.get(1);
        let r2 = self.get(2);
        let call = self.b.ins().call_indirect(self.entry_sig, entry, &[r1, r2]);
        let r0 = self.b.inst_results(call)[0];
        self.ret(r0);
        self.b.switch_to_block(cont);
    }

    fn callee(&mut self, t: usize, pc: usize) -> Result<FuncRef, Error> {
        self.callees
            .iter()
            .find(|(s, _)| *s == t)
            .map(|(_, f)| *f)
            .ok_or_else(|| Error::at(pc, format!("bpf-to-bpf call to {t}, which starts no function")))
    }
}

/// The condition of a conditional jump op (None for JSET and non-comparisons).
fn cmp_cc(o: u8) -> Option<IntCC> {
    Some(match o {
        op::JEQ => IntCC::Equal,
        op::JNE => IntCC::NotEqual,
        op::JGT => IntCC::UnsignedGreaterThan,
        op::JGE => IntCC::UnsignedGreaterThanOrEqual,
        op::JLT => IntCC::UnsignedLessThan,
        op::JLE => IntCC::UnsignedLessThanOrEqual,
        op::JSGT => IntCC::SignedGreaterThan,
        op::JSGE => IntCC::SignedGreaterThanOrEqual,
        op::JSLT => IntCC::SignedLessThan,
        op::JSLE => IntCC::SignedLessThanOrEqual,
        _ => return None,
    })
}
