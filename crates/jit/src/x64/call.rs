//! Calls and frames: the prologue, helper and bpf-to-bpf calls, `callx`, tail calls (the
//! kernel's indirect and direct forms, or our runtime's lookup), and the runtime stubs
//! after the last function.

use std::collections::BTreeMap;

use kops_isa::op;
use kops_x86::{Alu, Asm, Cond, Mem, Reg, Size, Width};

use super::{rel32, Cx, Func, Program};
use crate::{CallMode, JitError, TailCallMode, AUX_REG, UNWIND_REG};

/// `MAX_TAIL_CALL_CNT`.
const MAX_TAIL_CALL_CNT: i8 = 33;
/// Bytes skipped by a tail call: nop5 + nop3/xor + push rbp + mov rbp,rsp (no ENDBR: this
/// kernel runs without IBT, as its jited images show).
const TAIL_CALL_OFFSET: i8 = 12;

/// Callee-saved registers in push order: rbx, r13, r14, r15 (BPF r6..r9).
const CALLEE: [Reg; 4] = [Reg::Rbx, Reg::R13, Reg::R14, Reg::R15];

pub(super) fn pop_callee(used: &[bool; 4], a: &mut Asm) {
    for k in (0..4).rev() {
        if used[k] {
            a.pop(CALLEE[k]);
        }
    }
}

/// `may_goto` falls through this many times per function call (the kernel's
/// `BPF_MAX_LOOPS`), then jumps.
const MAY_GOTO_LOOPS: i32 = 8 * 1024 * 1024;

/// The `may_goto` counter's distance below rbp: the lowest 8 bytes of a frame of `depth`
/// (which [`super::functions`] grew by 8 for it).
pub(super) fn may_goto_slot(depth: u32) -> i32 {
    (depth.div_ceil(8) * 8) as i32
}

/// `LOAD_TAIL_CALL_CNT_PTR`: mov rax, [rbp - round_up(depth, 8) - 16].
fn load_tcc_ptr(f: &Func, a: &mut Asm) {
    a.load64_disp32(Reg::Rax, Reg::Rbp, -16 - (f.depth.div_ceil(8) * 8) as i32);
}

impl Program<'_> {
    /// The kernel's `emit_prologue` plus callee-saved pushes.
    pub(super) fn prologue(&self, f: &Func, a: &mut Asm) {
        a.nops(5);
        if f.tail_call_reachable && !f.is_subprog {
            a.alu_rr(Alu::Xor, Width::W64, Reg::Rax, Reg::Rax); // tail_call_cnt = 0
        } else {
            a.nops(3);
        }
        a.push(Reg::Rbp);
        a.mov_rr(Width::W64, Reg::Rbp, Reg::Rsp);
        if f.depth > 0 {
            a.alu_ri32(Alu::Sub, Width::W64, Reg::Rsp, f.depth.div_ceil(8) as i32 * 8);
        }
        if f.may_goto {
            a.store_imm(Size::S64, Mem::new(Reg::Rbp, -may_goto_slot(f.depth)), MAY_GOTO_LOOPS);
        }
        if f.tail_call_reachable {
            if !f.is_subprog {
                a.alu_ri8(Alu::Cmp, Width::W64, Reg::Rax, MAX_TAIL_CALL_CNT);
                a.jcc_rel8(Cond::A, 6);
                a.push(Reg::Rax);
                a.mov_rr(Width::W64, Reg::Rax, Reg::Rsp);
                a.jmp_rel8(1);
                a.push(Reg::Rax);
                a.push(Reg::Rax);
            } else {
                a.push(Reg::Rax);
                a.push(Reg::Rax);
            }
        }
        for (k, r) in CALLEE.iter().enumerate() {
            if f.callee_used[k] {
                a.push(*r);
            }
        }
        if self.needs_unwind && !f.is_subprog {
            a.push(UNWIND_REG);
            a.mov_rr(Width::W64, UNWIND_REG, Reg::Rsp);
        }
    }

    /// Runtime stubs after the last function: the return thunks, unwind (end the program
    /// from any depth), abort (r0 = 0, then unwind), helper trampolines, the callx table.
    pub(super) fn stubs(&self, image_len: usize, tramp_targets: &[u64], callx: Option<u32>) -> Result<Stubs, JitError> {
        let mut a = Asm::new();
        let here = |a: &Asm| image_len + a.len();
        let ret_thunk = here(&a);
        if self.opts.return_thunk {
            a.ret();
            a.int3();
        }
        let rcx_thunk = here(&a);
        if self.opts.return_thunk {
            a.jmp_r(Reg::Rcx);
            a.int3();
        }
        let unwind = here(&a);
        if self.needs_unwind {
            // Back to the main frame from any depth: r12 holds its rsp after the pushes.
            // rbp may belong to a subprogram, so no `leave`: skip the main frame's stack
            // (and tail-call slots) and pop the main frame's rbp.
            a.mov_rr(Width::W64, Reg::Rsp, UNWIND_REG);
            a.pop(UNWIND_REG);
            pop_callee(&self.main_callee, &mut a);
            let frame = self.main_depth.div_ceil(8) * 8 + if self.main_tcr { 16 } else { 0 };
            if frame > 0 {
                a.alu_ri32(Alu::Add, Width::W64, Reg::Rsp, frame as i32);
            }
            a.pop(Reg::Rbp);
            a.ret();
        }
        let abort = here(&a);
        if self.needs_unwind {
            a.alu_rr(Alu::Xor, Width::W32, Reg::Rax, Reg::Rax);
            a.jmp_rel32(rel32(unwind, (here(&a) + 5) as i64));
        }
        // Trampolines: align the stack for SysV code, call through r11.
        let tramp = |a: &mut Asm, addr: u64, unwind_check: bool| -> usize {
            let at = here(a);
            a.push(Reg::Rbp);
            a.mov_rr(Width::W64, Reg::Rbp, Reg::Rsp);
            a.alu_ri8(Alu::And, Width::W64, Reg::Rsp, -16);
            a.movabs(AUX_REG, addr);
            a.call_r(AUX_REG);
            a.leave();
            if unwind_check {
                a.test_rr(Width::W64, Reg::Rax, Reg::Rax);
                a.jcc_rel32(Cond::E, rel32(unwind, (here(a) + 6) as i64));
            }
            a.ret();
            at
        };
        let mut tramps = BTreeMap::new();
        for &t in tramp_targets {
            let at = tramp(&mut a, t, false);
            tramps.insert(t, at);
        }
        let mut abs_slots = Vec::new();
        let mut table = 0;
        if let Some(n) = callx {
            let mut entries = Vec::new();
            for id in 0..n {
                let e = match self.res.helper(id as i32) {
                    None => abort,
                    Some(addr) => {
                        let uw = Some(id as i32) == self.opts.unwind_helper;
                        tramp(&mut a, addr, uw)
                    }
                };
                entries.push(e);
            }
            while !here(&a).is_multiple_of(8) {
                a.int3();
            }
            table = here(&a);
            for e in entries {
                abs_slots.push((here(&a), e));
                a.imm64(0);
            }
        }
        Ok(Stubs { code: a.into_bytes(), unwind, abort, table, tramps, abs_slots, ret_thunk, rcx_thunk })
    }
}

pub(super) struct Stubs {
    pub code: Vec<u8>,
    pub unwind: usize,
    pub abort: usize,
    pub table: usize,
    pub tramps: BTreeMap<u64, usize>,
    pub abs_slots: Vec<(usize, usize)>,
    pub ret_thunk: usize,
    pub rcx_thunk: usize,
}

impl Cx<'_> {
    /// `call`: helpers (and `bpf_tail_call`), bpf-to-bpf calls, `callx`.
    pub(super) fn emit_call(&mut self) -> Result<(), JitError> {
        let i = self.i;
        if i.source() == op::X {
            return self.emit_callx();
        }
        match i.src {
            0 => self.emit_helper_call(),
            op::PSEUDO_CALL => {
                if self.f.tail_call_reachable {
                    load_tcc_ptr(self.f, &mut self.a);
                }
                let target = (self.pc as i64 + 1 + i.imm as i64) as usize;
                let rel = self.rel(5, |l| l.func_at.get(target).copied().flatten().ok_or_else(|| self.err("call target is not a function start")))?;
                self.a.call_rel32(rel);
                Ok(())
            }
            op::PSEUDO_KINSN_CALL => Err(self.unsupported("kinsn site (lower it first or use the kops runtime)")),
            s => Err(self.unsupported(format!("call with src_reg {s} (kfunc)"))),
        }
    }

    fn emit_helper_call(&mut self) -> Result<(), JitError> {
        let i = self.i;
        if let Some((id, mode)) = self.opts().tail_call {
            if id == i.imm {
                if self.opts().direct_tail_calls.contains(&self.p.orig[self.pc]) {
                    self.emit_tail_call_direct();
                    return Ok(());
                }
                return self.emit_tail_call(mode);
            }
        }
        if self.opts().throw.is_some_and(|t| t.helper == i.imm) {
            return self.emit_throw();
        }
        let addr = self.p.res.helper(i.imm).ok_or_else(|| self.err(format!("unknown helper {}", i.imm)))?;
        match self.opts().call_mode {
            CallMode::Rel32 => {
                self.a.call_rel32(0);
                if self.lay.final_pass {
                    let at = self.image_pos() - 4;
                    self.relocs.push((at, addr));
                }
            }
            CallMode::Trampoline => {
                let rel = self.rel(5, |l| l.tramps.get(&addr).copied().ok_or_else(|| self.err("no trampoline")))?;
                self.a.call_rel32(rel);
            }
            CallMode::Absolute => {
                self.a.movabs(AUX_REG, addr);
                self.a.call_r(AUX_REG);
            }
        }
        if Some(i.imm) == self.opts().unwind_helper {
            // The suite's unwind helper: a 0 result ends the whole program with r0 = 0.
            self.a.test_rr(Width::W64, Reg::Rax, Reg::Rax);
            let rel = self.rel(6, |l| Ok(l.unwind_stub))?;
            self.a.jcc_rel32(Cond::E, rel);
        }
        Ok(())
    }

    /// `bpf_throw` ([`crate::Throw`]): back to the main frame's stack pointer (r12), call
    /// the exception callback with the cookie still in rdi (r1), or take the cookie as r0,
    /// then leave through the unwind stub, which restores the main frame's registers.
    fn emit_throw(&mut self) -> Result<(), JitError> {
        self.a.mov_rr(Width::W64, Reg::Rsp, UNWIND_REG);
        match self.p.exception_cb {
            Some(cb) => {
                let rel = self.rel(5, |l| l.func_at.get(cb).copied().flatten().ok_or_else(|| self.err("the exception callback is not a function start")))?;
                self.a.call_rel32(rel);
            }
            None => self.a.mov_rr(Width::W64, Reg::Rax, Reg::Rdi),
        }
        let rel = self.rel(5, |l| Ok(l.unwind_stub))?;
        self.a.jmp_rel32(rel);
        Ok(())
    }

    /// `call %rN`: the helper whose id is in rN, through a table built into the image. Ids
    /// without a helper, or out of range, end the program with r0 = 0.
    fn emit_callx(&mut self) -> Result<(), JitError> {
        let n = self.opts().callx_helpers.ok_or_else(|| self.unsupported("callx (no helper table in this runtime)"))?;
        let r = self.reg(self.i.dst)?;
        self.a.alu_ri32(Alu::Cmp, Width::W64, r, n as i32);
        let rel = self.rel(6, |l| Ok(l.abort_stub))?;
        self.a.jcc_rel32(Cond::Ae, rel);
        let rel = self.rel(7, |l| Ok(l.callx_table))?;
        self.a.lea_rip(AUX_REG, rel);
        self.a.call_m(Mem::indexed(AUX_REG, r, 8, 0));
        Ok(())
    }

    /// The common tail of every tail call once it is taken: count it (rax holds the
    /// counter's address), then take down this frame in the reverse order of the
    /// prologue (unwind register, callee-saved registers, the tail-call counter slots,
    /// the stack) so the target's prologue builds the same frame again.
    fn count_tail_call_and_drop_frame(&mut self) {
        let a = &mut self.a;
        a.alu_m0_i8(Alu::Add, Width::W64, Reg::Rax, 1);
        if self.p.needs_unwind && !self.f.is_subprog {
            a.pop(UNWIND_REG);
        }
        pop_callee(&self.f.callee_used, a);
        a.pop(Reg::Rax);
        a.pop(Reg::Rax);
        if self.f.depth > 0 {
            a.alu_ri32(Alu::Add, Width::W64, Reg::Rsp, (self.f.depth.div_ceil(8) * 8) as i32);
        }
    }

    /// `cmp qword ptr [rax], MAX_TAIL_CALL_CNT; jae <label>` (rax: the counter's address).
    fn check_tail_call_count(&mut self, start: usize, label: i64) {
        self.a.alu_m0_i8(Alu::Cmp, Width::W64, Reg::Rax, MAX_TAIL_CALL_CNT);
        let j = (label - ((self.a.len() - start) as i64 + 2)) as i8;
        self.a.jcc_rel8(Cond::Ae, j);
    }

    /// `emit_bpf_tail_call_indirect`: with the kernel's array layout, or through our
    /// runtime's lookup function (see [`TailCallMode`]).
    fn emit_tail_call(&mut self, mode: TailCallMode) -> Result<(), JitError> {
        let start = self.a.len();
        let label = self.f.tail_call_label;
        let jrel = |a: &Asm| (label - ((a.len() - start) as i64 + 2)) as i8;
        self.a.mov_rr(Width::W32, Reg::Rdx, Reg::Rdx);
        match mode {
            TailCallMode::Kernel(l) => {
                self.a.cmp_mr(Width::W32, Mem::new(Reg::Rsi, l.max_entries_off), Reg::Rdx);
                let j = jrel(&self.a);
                self.a.jcc_rel8(Cond::Be, j);
                load_tcc_ptr(self.f, &mut self.a);
                self.check_tail_call_count(start, label);
                self.a.load(Size::S64, Reg::Rcx, Mem::indexed(Reg::Rsi, Reg::Rdx, 8, l.ptrs_off));
                self.a.test_rr(Width::W64, Reg::Rcx, Reg::Rcx);
                let j = jrel(&self.a);
                self.a.jcc_rel8(Cond::E, j);
                self.count_tail_call_and_drop_frame();
                self.a.load(Size::S64, Reg::Rcx, Mem::new(Reg::Rcx, l.func_off));
            }
            TailCallMode::Lookup(func) => {
                // rcx = lookup(map, index), through the aligning trampoline; ctx survives
                // in rdi across it.
                self.a.push(Reg::Rdi);
                self.a.mov_rr(Width::W64, Reg::Rdi, Reg::Rsi);
                self.a.mov_rr(Width::W64, Reg::Rsi, Reg::Rdx);
                let rel = self.rel(5, |l| l.tramps.get(&func).copied().ok_or_else(|| JitError::Other("no tail-call trampoline".into())))?;
                self.a.call_rel32(rel);
                self.a.pop(Reg::Rdi);
                self.a.mov_rr(Width::W64, Reg::Rcx, Reg::Rax);
                self.a.test_rr(Width::W64, Reg::Rcx, Reg::Rcx);
                let j = jrel(&self.a);
                self.a.jcc_rel8(Cond::E, j);
                load_tcc_ptr(self.f, &mut self.a);
                self.check_tail_call_count(start, label);
                self.count_tail_call_and_drop_frame();
            }
        }
        self.a.alu_ri8(Alu::Add, Width::W64, Reg::Rcx, TAIL_CALL_OFFSET);
        if self.opts().return_thunk {
            // As the kernel with retpolines: jmp __x86_indirect_thunk_rcx.
            let rel = self.rel(5, |l| Ok(l.rcx_thunk))?;
            self.a.jmp_rel32(rel);
        } else {
            self.a.jmp_r(Reg::Rcx);
        }
        self.f.tail_call_label = (self.a.len() - start) as i64;
        Ok(())
    }

    /// `emit_bpf_tail_call_direct`: the kernel's patchable form for a constant key. As
    /// loaded (empty slot) the bypass `jmp` skips to `out`; the `nop5` is the patch site.
    fn emit_tail_call_direct(&mut self) {
        let start = self.a.len();
        let label = self.f.tail_call_direct_label;
        load_tcc_ptr(self.f, &mut self.a);
        self.check_tail_call_count(start, label);
        let rel = label - ((self.a.len() - start) as i64 + 5);
        self.a.jmp_rel32(rel as i32); // bypass
        self.count_tail_call_and_drop_frame();
        self.a.nops(5);
        self.f.tail_call_direct_label = (self.a.len() - start) as i64;
    }
}
