//! The reference interpreter: the kernel's semantics, instruction by instruction, with
//! every memory access checked.
//!
//! Rules (as `kernel/bpf/core.c` and the x86-64 JIT implement them):
//! - 32-bit ALU results are zero-extended to 64 bits; shift amounts are masked to the width
//!   (`& 63`, `& 31`).
//! - Unsigned and signed division by 0 give 0; modulo by 0 leaves dst (32-bit: its low half,
//!   zero-extended). Signed `INT_MIN / -1` is `INT_MIN`, `INT_MIN % -1` is 0 (wrapping).
//! - `movsx` (MOV with off 8/16/32) and `ldsx` (MEMSX) sign-extend; `bswap` (ALU64|END)
//!   swaps unconditionally, `le`/`be` (ALU|END) convert from host (little-endian) order and
//!   truncate to the width.
//! - Atomics on 32 and 64 bits: add/and/or/xor with and without fetch (fetch returns the
//!   old value, 32-bit zero-extended, in src), xchg, cmpxchg (compares with r0, old value in
//!   r0), load-acquire and store-release.
//! - bpf-to-bpf calls get a fresh 512-byte frame (r10 moves down) and r6-r9 are restored on
//!   return; at most 8 frames. Tail calls replace the current frame's program, 33 at most.
//! - Legacy `LD_ABS`/`LD_IND` read big-endian from the skb's data; out of range returns
//!   r0 = 0 from the current function, as the kernel's expansion `w0 ^= w0; exit` does.

use crate::ctx::{self, CtxKind};
use crate::helpers::{self, HelperTable};
use crate::mem::RawBuf;
use crate::{Compiled, Engine, ProgImage, RunEnv, VmError, MAX_CALL_FRAMES, MAX_TAIL_CALLS, STACK_SIZE};
use kops_isa::{op, sem, Insn};
use kops_object::map_type;
use std::rc::Rc;

/// The interpreter engine.
#[derive(Debug, Clone, Copy, Default)]
pub struct Interp;

impl Engine for Interp {
    fn name(&self) -> &'static str {
        "interp"
    }
    fn compile(&self, _prog: &ProgImage<'_>) -> Result<Box<dyn Compiled>, VmError> {
        Ok(Box::new(InterpProg))
    }
}

/// The interpreter runs the [`crate::LoadedProg`] instructions directly.
struct InterpProg;

impl Compiled for InterpProg {
    fn run(&self, r1: u64, r2: u64, env: &RunEnv<'_>) -> Result<u64, VmError> {
        let prog = env
            .vm
            .program(env.prog)
            .ok_or_else(|| VmError::Setup(format!("no program {:?}", env.prog)))?;
        let mut m = Machine::new(env, prog);
        let r = m.exec(r1, r2).map_err(|e| *e);
        env.executed.set(Some(m.count));
        r
    }
}

/// Checks that an instruction is one the interpreter knows. `conformance` allows callx.
pub fn validate(i: &Insn, conformance: bool) -> Result<(), String> {
    let bad = |why: &str| Err(format!("invalid instruction {:#04x} ({why})", i.code));
    if i.dst > 10 || i.src > 10 {
        return bad("register number above r10");
    }
    let class = i.class();
    match class {
        op::ALU | op::ALU64 => {
            let is64 = class == op::ALU64;
            match i.op() {
                op::ADD | op::SUB | op::MUL | op::OR | op::AND | op::LSH | op::RSH | op::XOR | op::ARSH => {
                    if i.off != 0 {
                        return bad("non-zero offset");
                    }
                }
                op::DIV | op::MOD => {
                    if i.off != 0 && i.off != 1 {
                        return bad("division offset must be 0 or 1");
                    }
                }
                op::NEG => {
                    if i.source() != op::K || i.off != 0 {
                        return bad("neg takes no source");
                    }
                }
                op::MOV => {
                    if i.source() == op::K {
                        if i.src == op::PSEUDO_KINSN_SIDECAR && is64 {
                            return Err("kinsn sidecar: lower kinsn sites before running".into());
                        }
                        if i.off != 0 || i.src != 0 {
                            return bad("mov immediate with offset or source register");
                        }
                    } else {
                        let ok = if is64 { matches!(i.off, 0 | 8 | 16 | 32) } else { matches!(i.off, 0 | 8 | 16) };
                        if !ok {
                            return bad("movsx offset");
                        }
                    }
                }
                op::END => {
                    if is64 && i.source() != op::K {
                        return bad("bswap with the BE bit");
                    }
                    if !matches!(i.imm, 16 | 32 | 64) {
                        return bad("byte swap width not 16/32/64");
                    }
                }
                _ => return bad("unknown ALU operation"),
            }
        }
        op::JMP | op::JMP32 => match i.op() {
            op::JA => {
                if i.source() != op::K {
                    return bad("ja with register source");
                }
            }
            op::JEQ | op::JGT | op::JGE | op::JSET | op::JNE | op::JSGT | op::JSGE | op::JLT | op::JLE
            | op::JSLT | op::JSLE => {}
            op::CALL if class == op::JMP => {
                if i.source() == op::X && !conformance {
                    return bad("callx (call by register) outside the conformance convention");
                }
            }
            op::EXIT if class == op::JMP => {}
            kops_isa::decode::JCOND if class == op::JMP => {
                if i.source() != op::K || i.src != 0 || i.dst != 0 || i.imm != 0 {
                    return bad("may_goto with a register or immediate");
                }
            }
            _ => return bad("unknown jump operation"),
        },
        op::LDX => match i.mode() {
            op::MEM => {}
            op::MEMSX if i.size() != op::DW => {}
            _ => return bad("unknown load mode"),
        },
        op::ST => {
            if i.mode() != op::MEM {
                return bad("unknown store mode");
            }
        }
        op::STX => match i.mode() {
            op::MEM => {}
            op::ATOMIC => {
                let rmw = matches!(i.imm & !op::FETCH, 0x00 | 0x40 | 0x50 | 0xa0) || i.imm == op::XCHG || i.imm == op::CMPXCHG;
                if rmw {
                    if !matches!(i.size(), op::W | op::DW) {
                        return bad("atomic read-modify-write must be 32 or 64 bits");
                    }
                } else if i.imm != LOAD_ACQ && i.imm != STORE_REL {
                    return bad("unknown atomic operation");
                }
            }
            _ => return bad("unknown store mode"),
        },
        op::LD => match i.mode() {
            op::IMM if i.size() == op::DW => {}
            op::ABS | op::IND if i.size() != op::DW => {}
            _ => return bad("unknown LD form"),
        },
        _ => return bad("unknown class"),
    }
    if writes_r10(i) {
        return bad("write to r10");
    }
    Ok(())
}

/// Whether the instruction writes r10 (the read-only frame pointer).
pub fn writes_r10(i: &Insn) -> bool {
    match i.class() {
        op::ALU | op::ALU64 | op::LDX | op::LD => i.dst == 10,
        op::STX if i.mode() == op::ATOMIC => (i.imm & op::FETCH != 0 && i.src == 10) || (i.imm == LOAD_ACQ && i.dst == 10),
        _ => false,
    }
}

const LOAD_ACQ: i32 = 0x100;
const STORE_REL: i32 = 0x110;

struct Frame {
    prog: Rc<crate::LoadedProg>,
    ret_pc: usize,
    saved: [u64; 4],
    saved_fp: u64,
    saved_may_goto: u64,
}

/// `may_goto` falls through this many times per function call, then jumps: the kernel's
/// `BPF_MAX_LOOPS` (kernels with timed may_goto, 6.13+ on x86-64, instead jump once about
/// 250 ms have passed, so a loop that ends only through may_goto runs a different number
/// of times there).
pub const MAY_GOTO_LOOPS: u64 = 8 * 1024 * 1024;


struct Machine<'a> {
    env: &'a RunEnv<'a>,
    prog: Rc<crate::LoadedProg>,
    /// `prog.insns` as a raw slice, so the hot loop does not go through the Rc each step;
    /// valid while `prog` is held (updated by `set_prog`).
    code: *const Insn,
    code_len: usize,
    stack: RawBuf,
    frames: Vec<Frame>,
    reg: [u64; 11],
    pc: usize,
    count: u64,
    tail_calls: u32,
    /// `may_goto` counter of the running function (each call starts its own, as the
    /// kernel's counter lives in the function's frame).
    may_goto: u64,
}

/// The stack buffer (its end is the first frame's r10); see [`crate::VmOptions::poison_stack`].
fn new_stack(len: usize, poison: bool) -> RawBuf {
    let b = RawBuf::new(len);
    if poison {
        b.fill(0, len, 0xa5);
    }
    b
}

/// Frames the interpreter's stack holds.
fn max_frames(deep: bool) -> usize {
    if deep {
        MAX_CALL_FRAMES * (MAX_TAIL_CALLS as usize + 1)
    } else {
        MAX_CALL_FRAMES
    }
}

/// Whether a tail call (helper 12) sits in a bpf-to-bpf callee, i.e. at or after the first
/// call target.
pub(crate) fn tail_calls_from_callee(insns: &[Insn]) -> bool {
    let first_callee = insns
        .iter()
        .enumerate()
        .filter(|(_, i)| i.is_pseudo_call())
        .map(|(pc, i)| pc as i64 + 1 + i.imm as i64)
        .filter(|&t| t > 0)
        .min();
    let Some(first) = first_callee else { return false };
    insns.iter().enumerate().skip(first as usize).any(|(_, i)| i.is_helper_call() && i.imm == helpers::TAIL_CALL as i32)
}

/// Errors stay boxed inside the hot loop so results stay small.
type R<T> = Result<T, Box<VmError>>;

enum Flow {
    Next,
    Jump(usize),
    Exit(u64),
}

impl<'a> Machine<'a> {
    fn new(env: &'a RunEnv<'a>, prog: Rc<crate::LoadedProg>) -> Machine<'a> {
        Machine {
            env,
            code: prog.insns.as_ptr(),
            code_len: prog.insns.len(),
            prog,
            stack: new_stack(STACK_SIZE * max_frames(env.vm.shared.deep_stack.get()), env.vm.options.poison_stack),
            frames: Vec::new(),
            reg: [0; 11],
            pc: 0,
            count: 0,
            tail_calls: 0,
            may_goto: MAY_GOTO_LOOPS,
        }
    }

    fn set_prog(&mut self, p: Rc<crate::LoadedProg>) {
        self.code = p.insns.as_ptr();
        self.code_len = p.insns.len();
        self.prog = p;
    }

    fn err_exec(&self, msg: String) -> Box<VmError> {
        Box::new(VmError::Exec { prog: self.prog.name.clone(), pc: self.pc, msg })
    }

    fn stack_top(&self) -> u64 {
        self.stack.addr() + self.stack.len() as u64
    }

    /// Checks that `[addr, addr + len)` may be read (or written).
    fn check(&self, addr: u64, len: u64, write: bool) -> R<()> {
        let end = addr.checked_add(len);
        let inside = |lo: u64, hi: u64| addr >= lo && end.is_some_and(|e| e <= hi);
        // Stack: the current frame and every caller's (their pointers may be passed down).
        if inside(self.reg[10] - STACK_SIZE as u64, self.stack_top()) {
            return Ok(());
        }
        let rc = self.env.ctx;
        let mut detail = String::new();
        if inside(rc.ctx.addr(), rc.ctx.addr() + ctx_visible_len(rc)) {
            // Writes never reach our internal packet pointers after the uapi struct.
            if !write || (rc.ctx_writable && inside(rc.ctx.addr(), rc.ctx.addr() + rc.ctx_len)) {
                return Ok(());
            }
            detail = "the context is read-only".into();
        }
        if rc.kind.has_packet() {
            let (lo, hi) = rc.packet_range();
            if inside(lo, hi) {
                return Ok(());
            }
        }
        if detail.is_empty() {
            let reg = self.env.vm.shared.registry.borrow();
            match reg.find(addr, len) {
                Some(r) if !write || r.writable => return Ok(()),
                Some(r) => {
                    detail = match r.kind {
                        crate::mem::RegionKind::MapValue { map } => format!(
                            "map `{}` is read-only",
                            self.env.vm.map_at(map).map_or("?", |m| m.def.name.as_str())
                        ),
                        _ => "read-only region".into(),
                    }
                }
                None => {
                    detail = if addr < 4096 {
                        "null pointer".into()
                    } else {
                        "outside stack, context, packet and map values".into()
                    }
                }
            }
        }
        Err(Box::new(VmError::BadAccess { prog: self.prog.name.clone(), pc: self.pc, addr, len, write, detail }))
    }

    fn load(&self, addr: u64, size: usize) -> R<u64> {
        self.check(addr, size as u64, false)?;
        // SAFETY: the range was checked to lie inside a live region we own.
        Ok(unsafe {
            match size {
                1 => *(addr as *const u8) as u64,
                2 => std::ptr::read_unaligned(addr as *const u16) as u64,
                4 => std::ptr::read_unaligned(addr as *const u32) as u64,
                _ => std::ptr::read_unaligned(addr as *const u64),
            }
        })
    }

    fn store(&self, addr: u64, size: usize, v: u64) -> R<()> {
        self.check(addr, size as u64, true)?;
        // SAFETY: the range was checked to lie inside a live writable region we own.
        unsafe {
            match size {
                1 => *(addr as *mut u8) = v as u8,
                2 => std::ptr::write_unaligned(addr as *mut u16, v as u16),
                4 => std::ptr::write_unaligned(addr as *mut u32, v as u32),
                _ => std::ptr::write_unaligned(addr as *mut u64, v),
            }
        }
        Ok(())
    }

    fn exec(&mut self, r1: u64, r2: u64) -> R<u64> {
        self.reg[1] = r1;
        self.reg[2] = r2;
        self.reg[10] = self.stack_top();
        let budget = self.env.budget;
        loop {
            if self.pc >= self.code_len {
                return Err(self.err_exec("execution ran past the end of the program".into()));
            }
            // SAFETY: pc < code_len, and `code` points into `self.prog.insns`, which the Rc
            // in `self.prog` keeps alive.
            let i = unsafe { *self.code.add(self.pc) };
            self.count += 1;
            if self.count > budget {
                return Err(Box::new(VmError::Budget { prog: self.prog.name.clone(), pc: self.pc, limit: budget }));
            }
            match self.step(i)? {
                Flow::Next => self.pc += 1,
                Flow::Jump(t) => self.pc = t,
                Flow::Exit(r0) => return Ok(r0),
            }
        }
    }

    fn step(&mut self, i: Insn) -> R<Flow> {
        let d = i.dst as usize;
        let s = i.src as usize;
        match i.class() {
            op::ALU64 => {
                if i.op() == op::END {
                    self.reg[d] = match i.imm {
                        16 => (self.reg[d] as u16).swap_bytes() as u64,
                        32 => (self.reg[d] as u32).swap_bytes() as u64,
                        _ => self.reg[d].swap_bytes(),
                    };
                } else {
                    let src = if i.source() == op::X { self.reg[s] } else { i.imm as i64 as u64 };
                    self.reg[d] = sem::alu64(i.op(), i.off, self.reg[d], src).expect("validated");
                }
            }
            op::ALU => {
                if i.op() == op::END {
                    let v = self.reg[d];
                    self.reg[d] = if i.source() == op::TO_BE {
                        match i.imm {
                            16 => (v as u16).swap_bytes() as u64,
                            32 => (v as u32).swap_bytes() as u64,
                            _ => v.swap_bytes(),
                        }
                    } else {
                        match i.imm {
                            16 => v as u16 as u64,
                            32 => v as u32 as u64,
                            _ => v,
                        }
                    };
                } else {
                    let src = if i.source() == op::X { self.reg[s] as u32 } else { i.imm as u32 };
                    self.reg[d] = sem::alu32(i.op(), i.off, self.reg[d] as u32, src).expect("validated") as u64;
                }
            }
            op::LDX => {
                let addr = self.reg[s].wrapping_add(i.off as i64 as u64);
                let n = i.size_bytes();
                let v = self.load(addr, n)?;
                self.reg[d] = if i.mode() == op::MEMSX {
                    match n {
                        1 => v as i8 as i64 as u64,
                        2 => v as i16 as i64 as u64,
                        _ => v as i32 as i64 as u64,
                    }
                } else {
                    v
                };
            }
            op::ST => {
                let addr = self.reg[d].wrapping_add(i.off as i64 as u64);
                self.store(addr, i.size_bytes(), i.imm as i64 as u64)?;
            }
            op::STX => {
                let addr = self.reg[d].wrapping_add(i.off as i64 as u64);
                let n = i.size_bytes();
                if i.mode() == op::MEM {
                    self.store(addr, n, self.reg[s])?;
                } else {
                    self.atomic(i, addr, n)?;
                }
            }
            op::LD => {
                if i.is_ld_imm64() {
                    let hi = self.prog.insns[self.pc + 1].imm as u32 as u64;
                    self.reg[d] = (i.imm as u32 as u64) | (hi << 32);
                    return Ok(Flow::Jump(self.pc + 2));
                }
                return self.ld_abs(i);
            }
            op::JMP | op::JMP32 => return self.jump(i),
            _ => return Err(self.err_exec(format!("invalid instruction {:#04x}", i.code))),
        }
        Ok(Flow::Next)
    }

    fn atomic(&mut self, i: Insn, addr: u64, n: usize) -> R<()> {
        let s = i.src as usize;
        let d = i.dst as usize;
        match i.imm {
            LOAD_ACQ => {
                self.reg[d] = self.load(self.reg[s].wrapping_add(i.off as i64 as u64), n)?;
                return Ok(());
            }
            STORE_REL => return self.store(addr, n, self.reg[s]),
            _ => {}
        }
        self.check(addr, n as u64, true)?;
        let old = self.load(addr, n)?;
        let mask = if n == 4 { 0xffff_ffff } else { u64::MAX };
        let src = self.reg[s] & mask;
        let op = i.imm & !op::FETCH;
        if i.imm == op::CMPXCHG {
            if old == self.reg[0] & mask {
                self.store(addr, n, src)?;
            }
            self.reg[0] = old;
            return Ok(());
        }
        let new = match op {
            0x00 => old.wrapping_add(src),
            0x40 => old | src,
            0x50 => old & src,
            0xa0 => old ^ src,
            _ if i.imm == op::XCHG => src,
            _ => return Err(self.err_exec(format!("unknown atomic operation {:#x}", i.imm))),
        };
        self.store(addr, n, new & mask)?;
        if i.imm & op::FETCH != 0 {
            self.reg[s] = old;
        }
        Ok(())
    }

    /// Legacy packet loads: r0 = big-endian load from skb data; out of range returns 0
    /// from the current function (ends the program in the main one).
    fn ld_abs(&mut self, i: Insn) -> R<Flow> {
        let rc = self.env.ctx;
        let CtxKind::Skb { .. } = rc.kind else {
            return Err(self.err_exec("LD_ABS/LD_IND outside an skb program".into()));
        };
        // The verifier requires the ctx in r6; the data is the skb's, whatever r6 holds.
        let (data, end) = {
            let c = rc.ctx.addr();
            let rd = |o: usize| unsafe { std::ptr::read_unaligned((c + o as u64) as *const u64) };
            (rd(ctx::SKB_DATA), rd(ctx::SKB_DATA_END))
        };
        // The kernel computes the offset in 64 bits and passes it on as an int.
        let off = if i.mode() == op::IND {
            self.reg[i.src as usize].wrapping_add(i.imm as i64 as u64) as i32 as i64
        } else {
            i.imm as i64
        };
        let n = i.size_bytes() as i64;
        // Negative offsets address the network (SKF_NET_OFF) or link-layer (SKF_LL_OFF)
        // header, as bpf_internal_load_pointer_neg_helper does.
        const SKF_NET_OFF: i64 = -0x10_0000;
        const SKF_LL_OFF: i64 = -0x20_0000;
        let tc = matches!(rc.kind, CtxKind::Skb { tc: true });
        let (net, mac) = if tc { (data + 14, data) } else { (data, data.wrapping_sub(14)) };
        let addr = if off >= 0 {
            Some(data.wrapping_add(off as u64))
        } else if off >= SKF_NET_OFF {
            Some(net.wrapping_add((off - SKF_NET_OFF) as u64))
        } else if off >= SKF_LL_OFF {
            Some(mac.wrapping_add((off - SKF_LL_OFF) as u64))
        } else {
            None
        };
        // Like the kernel, anything from the buffer head (headroom included) to the tail.
        let head = rc.pkt.as_ref().map_or(data, |p| p.addr());
        let Some(addr) = addr.filter(|a| *a >= head && a.wrapping_add(n as u64) <= end && *a <= end) else {
            // The kernel's expansion (bpf_gen_ld_abs): `w0 ^= w0; exit`, which in a
            // subprogram returns 0 to its caller.
            self.reg[0] = 0;
            return Ok(self.exit_frame());
        };
        // SAFETY: [addr, addr + n) lies inside our packet buffer (checked above).
        let v = unsafe {
            match n {
                1 => *(addr as *const u8) as u64,
                2 => std::ptr::read_unaligned(addr as *const u16) as u64,
                _ => std::ptr::read_unaligned(addr as *const u32) as u64,
            }
        };
        // Results of this kind of load clobber r1-r5 in the verifier's view; we leave them.
        self.reg[0] = match n {
            1 => v,
            2 => (v as u16).swap_bytes() as u64,
            _ => (v as u32).swap_bytes() as u64,
        };
        Ok(Flow::Next)
    }

    /// An abort from inside nested frames ends the whole program.
    /// `exit`: back to the caller's frame, or the end of the program from the main one.
    fn exit_frame(&mut self) -> Flow {
        match self.frames.pop() {
            None => Flow::Exit(self.reg[0]),
            Some(f) => {
                self.reg[6..10].copy_from_slice(&f.saved);
                self.reg[10] = f.saved_fp;
                self.may_goto = f.saved_may_goto;
                self.set_prog(f.prog);
                Flow::Jump(f.ret_pc)
            }
        }
    }

    fn jump(&mut self, i: Insn) -> R<Flow> {
        let d = i.dst as usize;
        match i.op() {
            op::JA => {
                let t = self.pc as i64 + 1 + i.jump_offset() as i64;
                return Ok(Flow::Jump(t as usize));
            }
            op::EXIT => return Ok(self.exit_frame()),
            op::CALL => return self.call(i),
            kops_isa::decode::JCOND => {
                if self.may_goto == 0 {
                    return Ok(Flow::Jump((self.pc as i64 + 1 + i.off as i64) as usize));
                }
                self.may_goto -= 1;
                return Ok(Flow::Next);
            }
            _ => {}
        }
        let taken = if i.class() == op::JMP {
            let b = if i.source() == op::X { self.reg[i.src as usize] } else { i.imm as i64 as u64 };
            sem::cond64(i.op(), self.reg[d], b).expect("validated")
        } else {
            let b = if i.source() == op::X { self.reg[i.src as usize] as u32 } else { i.imm as u32 };
            sem::cond32(i.op(), self.reg[d] as u32, b).expect("validated")
        };
        Ok(if taken { Flow::Jump((self.pc as i64 + 1 + i.off as i64) as usize) } else { Flow::Next })
    }

    fn call(&mut self, i: Insn) -> R<Flow> {
        if i.src == op::PSEUDO_CALL && i.source() == op::K {
            // Each tail call may start a new chain of MAX_CALL_FRAMES frames (see
            // `tail_calls_from_callee`); the stack buffer holds them all.
            let limit = (MAX_CALL_FRAMES * (self.tail_calls as usize + 1)).min(self.stack.len() / STACK_SIZE);
            if self.frames.len() + 1 >= limit {
                return Err(self.err_exec(format!("call depth exceeds {limit} frames")));
            }
            let mut saved = [0u64; 4];
            saved.copy_from_slice(&self.reg[6..10]);
            self.frames.push(Frame { prog: self.prog.clone(), ret_pc: self.pc + 1, saved, saved_fp: self.reg[10], saved_may_goto: self.may_goto });
            self.may_goto = MAY_GOTO_LOOPS;
            self.reg[10] -= STACK_SIZE as u64;
            return Ok(Flow::Jump((self.pc as i64 + 1 + i.imm as i64) as usize));
        }
        let id = if i.source() == op::X { self.reg[i.dst as usize] } else { i.imm as u32 as u64 };
        let table: &HelperTable = &self.prog.helpers;
        let conformance = self.prog.conformance;
        if !conformance && id == helpers::TAIL_CALL as u64 {
            return self.tail_call();
        }
        let Some(h) = u32::try_from(id).ok().and_then(|id| table.get(id)).copied() else {
            let what = match u32::try_from(id) {
                Ok(i) if !conformance => helpers::describe_helper(i),
                _ => format!("{id}"),
            };
            return Err(self.err_exec(format!("call to unknown helper {what}")));
        };
        if h.id == helpers::kfuncs::THROW {
            return Ok(self.throw());
        }
        self.check_helper_args(h.id)?;
        let r = &self.reg;
        let r0 = (h.func)(r[1], r[2], r[3], r[4], r[5]);
        self.reg[0] = r0;
        // Caller-saved registers are garbage after a call in the kernel; keeping them
        // unchanged is one of the allowed behaviours.
        if conformance && h.id == helpers::UNWIND && r0 == 0 {
            self.frames.clear();
            return Ok(Flow::Exit(0));
        }
        Ok(Flow::Next)
    }

    /// `bpf_throw(r1)`: back on the main frame (of the program running there), then its
    /// exception callback with r1 = cookie, or the cookie as the result.
    fn throw(&mut self) -> Flow {
        let cookie = self.reg[1];
        if let Some(f) = self.frames.first() {
            self.reg[10] = f.saved_fp;
            let p = f.prog.clone();
            self.set_prog(p);
        }
        self.frames.clear();
        match self.prog.exception_cb {
            Some(cb) => Flow::Jump(cb),
            None => Flow::Exit(cookie),
        }
    }

    fn tail_call(&mut self) -> R<Flow> {
        let vm = self.env.vm;
        let Some(m) = vm.map_by_addr(self.reg[2]) else {
            return Err(self.err_exec(format!("tail_call: r2 = {:#x} is not a map", self.reg[2])));
        };
        if m.def.map_type != map_type::PROG_ARRAY {
            return Err(self.err_exec(format!("tail_call: map `{}` is not a program array", m.def.name)));
        }
        let index = self.reg[3] as u32 as u64;
        if self.tail_calls >= MAX_TAIL_CALLS {
            return Ok(Flow::Next);
        }
        let Some(target) = m.prog_array_get(index) else {
            return Ok(Flow::Next);
        };
        let Some(p) = vm.program(crate::ProgId(target)) else {
            return Ok(Flow::Next);
        };
        self.tail_calls += 1;
        self.may_goto = MAY_GOTO_LOOPS;
        self.set_prog(p);
        Ok(Flow::Jump(0))
    }

    /// Memory arguments of helpers must lie in regions the program may touch.
    fn check_helper_args(&self, id: u32) -> R<()> {
        let r = &self.reg;
        let vm = self.env.vm;
        let map_arg = |reg: usize| -> R<&crate::Map> {
            vm.map_by_addr(r[reg]).ok_or_else(|| {
                self.err_exec(format!("helper {}: r{reg} = {:#x} is not a map", helpers::describe_helper(id), r[reg]))
            })
        };
        let mem = |p: u64, n: u64, w: bool| -> R<()> {
            if n == 0 {
                return Ok(());
            }
            self.check(p, n, w)
        };
        if self.prog.conformance {
            return Ok(());
        }
        match id {
            // kfuncs: the dynptr (16 stack bytes) is written by from_xdp/from_skb, read by slices.
            k if k >= helpers::kfuncs::KFUNC_BASE => match k - helpers::kfuncs::KFUNC_BASE {
                0 | 1 => mem(r[3], 16, true),
                2 | 3 | 7 => mem(r[1], 16, false),
                // bpf_iter_num_*: the iterator, 8 stack bytes.
                9..=11 => mem(r[1], 8, true),
                _ => Ok(()),
            },
            helpers::MAP_LOOKUP_ELEM | helpers::MAP_DELETE_ELEM => {
                let m = map_arg(1)?;
                mem(r[2], m.def.key_size as u64, false)
            }
            helpers::MAP_UPDATE_ELEM => {
                let m = map_arg(1)?;
                mem(r[2], m.def.key_size as u64, false)?;
                mem(r[3], m.def.value_size as u64, false)
            }
            helpers::TRACE_PRINTK => mem(r[1], r[2], false),
            helpers::CSUM_DIFF => {
                mem(r[1], r[2] as u32 as u64, false)?;
                mem(r[3], r[4] as u32 as u64, false)
            }
            helpers::SKB_LOAD_BYTES => mem(r[3], r[4] as u32 as u64, true),
            helpers::SKB_STORE_BYTES => mem(r[3], r[4] as u32 as u64, false),
            helpers::PERF_EVENT_OUTPUT => {
                map_arg(2)?;
                mem(r[4], r[5], false)
            }
            helpers::RINGBUF_OUTPUT => {
                map_arg(1)?;
                mem(r[2], r[3], false)
            }
            helpers::RINGBUF_RESERVE | helpers::REDIRECT_MAP => map_arg(1).map(|_| ()),
            helpers::XDP_LOAD_BYTES => mem(r[3], r[4] as u32 as u64, true),
            helpers::SKB_GET_TUNNEL_KEY => mem(r[2], r[3] as u32 as u64, true),
            helpers::SKB_LOAD_BYTES_RELATIVE => mem(r[3], r[4] as u32 as u64, true),
            helpers::XDP_OUTPUT => {
                map_arg(2)?;
                mem(r[4], r[5], false)
            }
            helpers::XDP_STORE_BYTES => mem(r[3], r[4] as u32 as u64, false),
            helpers::SKB_SET_TUNNEL_KEY | helpers::SKB_SET_TUNNEL_OPT => mem(r[2], r[3] as u32 as u64, false),
            helpers::SKB_GET_TUNNEL_OPT => mem(r[2], r[3] as u32 as u64, true),
            helpers::FIB_LOOKUP => mem(r[2], r[3] as u32 as u64, true),
            helpers::CHECK_MTU => mem(r[3], 4, true),
            helpers::REDIRECT_NEIGH => mem(r[2], r[3] as u32 as u64, false),
            helpers::TRACE_VPRINTK => {
                mem(r[1], r[2], false)?;
                mem(r[3], r[4] as u32 as u64, false)
            }
            helpers::MAP_PUSH_ELEM => {
                let m = map_arg(1)?;
                mem(r[2], m.def.value_size as u64, false)
            }
            helpers::MAP_POP_ELEM | helpers::MAP_PEEK_ELEM => {
                // A bloom filter's peek reads the value asked about; queues and stacks write.
                let m = map_arg(1)?;
                mem(r[2], m.def.value_size as u64, m.def.map_type != map_type::BLOOM_FILTER)
            }
            _ => Ok(()),
        }
    }
}

/// Bytes of the context a program may access directly: the uapi struct for XDP/skb (the
/// internal pointer fields after it are reached through rewritten loads, which we allow).
fn ctx_visible_len(rc: &ctx::RunCtx) -> u64 {
    match rc.kind {
        CtxKind::Xdp => ctx::XDP_CTX_SIZE as u64,
        CtxKind::Skb { .. } => ctx::SKB_CTX_SIZE as u64,
        _ => rc.ctx_len,
    }
}
