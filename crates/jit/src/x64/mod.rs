//! The x86-64 lowering, shaped like Linux's `arch/x86/net/bpf_jit_comp.c`.
//!
//! - this file: the pipeline of [`compile_regions`] (input checks, the verifier's fixups,
//!   function discovery, what the runtime stubs must provide), the per-function
//!   size-convergence loop ([`converge`]), the final layout, and `do_jit`: one pass over a
//!   function that dispatches each instruction to the emit function of its class;
//! - [`alu`]: `ALU`/`ALU64`; [`jmp`]: `JMP`/`JMP32` jumps and `exit`; [`mem`]: `LD`, `LDX`,
//!   `ST`, `STX` and atomics; [`call`]: calls, tail calls, the prologue and the stubs.
//!
//! Every emit function is a method of [`Cx`], the per-instruction state the kernel's
//! `do_jit` keeps in locals (image position, `addrs`, instruction index, options), and
//! writes only through the encoder (`kops_x86::Asm`). Displacements to image positions
//! outside the function go through the one helper [`Cx::rel`] / [`rel32`].

mod alu;
mod call;
mod jmp;
mod mem;

use std::collections::{BTreeMap, BTreeSet};

use kops_isa::{op, Insn};
use kops_x86::{Alu, Asm, Cond, Reg, Shift, Size};

use crate::{fixup, stack, CallMode, FuncLayout, JitError, JitImage, JitOptions, NativeRegion, Resolver, TailCallMode};

/// `MAX_PASSES` and `PADDING_PASSES` of the kernel.
const MAX_PASSES: u32 = 20;
const PADDING_PASSES: u32 = MAX_PASSES - 5;

fn reg(pc: usize, r: u8) -> Result<Reg, JitError> {
    crate::x86_reg(r).ok_or(JitError::Insn { pc, msg: format!("bad register r{r}") })
}

fn size_of(i: &Insn) -> Size {
    match i.size() {
        op::B => Size::S8,
        op::H => Size::S16,
        op::W => Size::S32,
        _ => Size::S64,
    }
}

fn alu_of(opc: u8) -> Alu {
    match opc {
        op::ADD => Alu::Add,
        op::SUB => Alu::Sub,
        op::AND => Alu::And,
        op::OR => Alu::Or,
        _ => Alu::Xor,
    }
}

fn shift_of(opc: u8) -> Shift {
    match opc {
        op::LSH => Shift::Shl,
        op::RSH => Shift::Shr,
        _ => Shift::Sar,
    }
}

fn cond_of(opc: u8) -> Option<Cond> {
    Some(match opc {
        op::JEQ => Cond::E,
        op::JSET | op::JNE => Cond::Ne,
        op::JGT => Cond::A,
        op::JLT => Cond::B,
        op::JGE => Cond::Ae,
        op::JLE => Cond::Be,
        op::JSGT => Cond::G,
        op::JSLT => Cond::L,
        op::JSGE => Cond::Ge,
        op::JSLE => Cond::Le,
        _ => return None,
    })
}

/// The one rel32 computation: the displacement from `next` (the image offset just after
/// the instruction that holds it) to image offset `target`.
fn rel32(target: usize, next: i64) -> i32 {
    (target as i64 - next) as i32
}

/// Per-function state kept across passes.
struct Func {
    start: usize,
    end: usize,
    is_subprog: bool,
    depth: u32,
    /// The function has `may_goto`: its counter is the lowest 8 bytes of `depth`.
    may_goto: bool,
    /// Which of rbx, r13, r14, r15 (BPF r6..r9) the function uses.
    callee_used: [bool; 4],
    tail_call_reachable: bool,
    /// `addrs[k]`: native offset where local instruction k starts (= end of k-1).
    addrs: Vec<i64>,
    /// Where the epilogue starts (the first `exit`); later exits jump there.
    cleanup_addr: i64,
    /// This pass has emitted the epilogue.
    seen_exit: bool,
    tail_call_label: i64,
    tail_call_direct_label: i64,
    prologue_len: usize,
    proglen: usize,
}

/// Image-wide positions, known only in the final pass (zero before).
#[derive(Default)]
struct Layout {
    final_pass: bool,
    func_base: usize,
    /// Native image offset of the function that starts at each slot.
    func_at: Vec<Option<usize>>,
    unwind_stub: usize,
    abort_stub: usize,
    callx_table: usize,
    tramps: BTreeMap<u64, usize>,
    ret_thunk: usize,
    rcx_thunk: usize,
}

/// Program-wide state: the instructions (after fixups), the native regions, the options
/// and what the runtime stubs must provide.
struct Program<'a> {
    insns: &'a [Insn],
    /// Native regions: first slot -> (slots covered, code).
    native: BTreeMap<usize, (usize, Vec<u8>)>,
    second: Vec<bool>,
    /// Original slot of each slot of `insns` (after fixups).
    orig: Vec<usize>,
    opts: &'a JitOptions,
    res: &'a dyn Resolver,
    needs_unwind: bool,
    /// Start slot of the exception callback (see [`crate::Throw`]).
    exception_cb: Option<usize>,
    main_callee: [bool; 4],
    main_depth: u32,
    main_tcr: bool,
}

impl Program<'_> {
    fn err(&self, pc: usize, msg: impl Into<String>) -> JitError {
        JitError::Insn { pc: self.orig[pc], msg: msg.into() }
    }
}

/// Per-instruction state: what the kernel's `do_jit` loop keeps in locals and passes to
/// its emit helpers.
struct Cx<'a> {
    p: &'a Program<'a>,
    lay: &'a Layout,
    f: &'a mut Func,
    /// `call rel32` fields to link (final pass only).
    relocs: &'a mut Vec<(usize, u64)>,
    /// Slot in the program, and its index in the function.
    pc: usize,
    k: usize,
    i: Insn,
    /// This instruction's native code.
    a: Asm,
    /// Function offset where the instruction starts.
    start: i64,
    /// Its byte length in the previous pass (for the padding passes).
    prev_len: i64,
    padding: bool,
    /// Slots the instruction takes (2 for `ld_imm64`).
    slots: usize,
}

impl Cx<'_> {
    fn opts(&self) -> &JitOptions {
        self.p.opts
    }
    fn err(&self, msg: impl Into<String>) -> JitError {
        self.p.err(self.pc, msg)
    }
    fn unsupported(&self, what: impl Into<String>) -> JitError {
        JitError::Unsupported { pc: self.p.orig[self.pc], what: what.into() }
    }
    fn reg(&self, r: u8) -> Result<Reg, JitError> {
        reg(self.pc, r)
    }
    /// The rel32 field of an instruction of `len` bytes appended now, to the image offset
    /// `target` gives (called in the final pass only; 0 before, when the image is not laid
    /// out yet).
    fn rel(&self, len: usize, target: impl FnOnce(&Layout) -> Result<usize, JitError>) -> Result<i32, JitError> {
        if !self.lay.final_pass {
            return Ok(0);
        }
        Ok(rel32(target(self.lay)?, self.lay.func_base as i64 + self.start + (self.a.len() + len) as i64))
    }
    /// Image offset where the next byte of this instruction lands.
    fn image_pos(&self) -> usize {
        self.lay.func_base + self.start as usize + self.a.len()
    }
    /// Offset from the end of this instruction to the start of local instruction `t`
    /// (`addrs` of the previous pass, as the kernel).
    fn jump_off(&self, t: usize) -> i64 {
        self.f.addrs[t] - self.f.addrs[self.k + 1]
    }
    /// Local index of the jump target `pc + 1 + rel`, which must be in the function.
    fn local_target(&self, rel: i32) -> Result<usize, JitError> {
        let t = self.pc as i64 + 1 + rel as i64;
        if t < self.f.start as i64 || t >= self.f.end as i64 {
            return Err(self.err(format!("jump to slot {} leaves the function", t)));
        }
        Ok(t as usize - self.f.start)
    }

    /// One instruction, by class (the `switch (insn->code)` of the kernel's `do_jit`).
    fn emit(&mut self) -> Result<(), JitError> {
        let i = self.i;
        match i.class() {
            op::ALU | op::ALU64 => self.emit_alu(),
            op::LD => self.emit_ld(),
            op::LDX => self.emit_ldx(),
            op::ST => self.emit_st(),
            op::STX => self.emit_stx(),
            op::JMP if i.op() == op::CALL => self.emit_call(),
            op::JMP if i.op() == op::EXIT => {
                self.emit_exit();
                Ok(())
            }
            op::JMP | op::JMP32 => self.emit_jump(),
            _ => Err(self.unsupported(format!("opcode {:#04x}", i.code))),
        }
    }
}

impl Program<'_> {
    /// One pass over a function (`do_jit`). Returns the function's code.
    fn do_jit(&self, f: &mut Func, lay: &Layout, padding: bool, relocs: &mut Vec<(usize, u64)>) -> Result<Vec<u8>, JitError> {
        let mut code = Asm::new();
        self.prologue(f, &mut code);
        f.prologue_len = code.len();
        f.addrs[0] = code.len() as i64;
        f.seen_exit = false;
        let n = f.end - f.start;
        let mut k = 0;
        while k < n {
            let pc = f.start + k;
            if let Some((len, bytes)) = self.native.get(&pc) {
                // A kinsn site's checked native emit: the whole region at its first slot.
                code.raw(bytes);
                for kk in k + 1..=k + len {
                    f.addrs[kk.min(n)] = code.len() as i64;
                }
                k += len;
                continue;
            }
            let prev_len = f.addrs[k + 1] - f.addrs[k];
            let mut cx = Cx { p: self, lay, f: &mut *f, relocs: &mut *relocs, pc, k, i: self.insns[pc], a: Asm::new(), start: code.len() as i64, prev_len, padding, slots: 1 };
            cx.emit()?;
            let (bytes, slots) = (cx.a.into_bytes(), cx.slots);
            code.raw(&bytes);
            if slots == 2 {
                // ld_imm64: its data slot is empty and sits at the instruction's end.
                f.addrs[k + 1] = code.len() as i64;
                k += 1;
            }
            f.addrs[k + 1] = code.len() as i64;
            k += 1;
        }
        Ok(code.into_bytes())
    }
}

/// The kernel's size-convergence loop for one function: JIT it until its size stops
/// changing (jumps shrink to their short forms as offsets become known); from pass
/// `PADDING_PASSES` on, instructions are padded to their previous size so the loop ends.
/// Returns the passes taken; `f.proglen` is the converged size.
fn converge(p: &Program<'_>, f: &mut Func, relocs: &mut Vec<(usize, u64)>) -> Result<u32, JitError> {
    let sizing = Layout::default();
    let mut old = usize::MAX;
    let mut pass = 0;
    loop {
        if pass >= MAX_PASSES + 5 {
            return Err(JitError::NoConvergence { passes: pass });
        }
        let padding = pass >= PADDING_PASSES;
        let len = p.do_jit(f, &sizing, padding, relocs)?.len();
        pass += 1;
        if len == old {
            f.proglen = len;
            return Ok(pass);
        }
        old = len;
    }
}

/// Compile `insns` (a program with its subprograms, as `kops_object::Program::insns`).
pub fn compile(insns: &[Insn], opts: &JitOptions, res: &dyn Resolver) -> Result<JitImage, JitError> {
    compile_regions(insns, &[], opts, res)
}

/// Compile `insns` where each [`NativeRegion`] (a kinsn site's proof sequence in a lowered
/// program, with its op's checked emit) is replaced by its native bytes: they are emitted
/// at the region's first slot and the region's other slots produce nothing. Jumps from
/// outside a region may only target its first slot or the slot after it (the lowering
/// guarantees it).
pub(crate) fn compile_regions(insns: &[Insn], regions: &[NativeRegion], opts: &JitOptions, res: &dyn Resolver) -> Result<JitImage, JitError> {
    if insns.is_empty() {
        return Err(JitError::Other("empty program".into()));
    }
    check_regions(insns, regions)?;
    if opts.div_fixups {
        check_registers(insns)?;
    }
    let (prog_insns, orig, start_of) = if opts.div_fixups {
        let e = fixup::expand(insns).map_err(|(pc, m)| JitError::Insn { pc, msg: m })?;
        (e.insns, e.orig, e.start)
    } else {
        (insns.to_vec(), (0..insns.len()).collect(), (0..insns.len()).collect::<Vec<usize>>())
    };
    // Regions in expanded coordinates: slot -> (slots covered, bytes).
    let mut native = BTreeMap::new();
    for r in regions {
        let s = start_of[r.start];
        let e = start_of.get(r.start + r.len).copied().unwrap_or(prog_insns.len());
        native.insert(s, (e - s, r.code.clone()));
    }
    let second = fixup::second_slots(&prog_insns);
    let mut starts = kops_analysis::function_starts(&prog_insns, &second)
        .map_err(|(pc, t)| JitError::Insn { pc: orig[pc], msg: format!("call target {t} outside the program") })?;
    // The exception callback is a function although nothing calls it.
    let exception_cb = match opts.throw.and_then(|t| t.callback) {
        Some(cb) => {
            let s = start_of.get(cb).copied().filter(|&s| s < prog_insns.len() && !second[s]);
            let s = s.ok_or_else(|| JitError::Other(format!("exception callback slot {cb} is not an instruction of the program")))?;
            starts.push(s);
            starts.sort();
            starts.dedup();
            Some(s)
        }
        None => None,
    };
    let needs = Needs::of(&prog_insns, &second, &orig, opts, res)?;
    let mut funcs = functions(&prog_insns, &second, &orig, &starts, opts)?;
    if needs.tail_call {
        let ranges: Vec<(usize, usize)> = funcs.iter().map(|f| (f.start, f.end)).collect();
        let tail_id = opts.tail_call.map(|t| t.0);
        let tcr = kops_analysis::tail_call_reachable(&prog_insns, &second, &ranges, |i| i.is_helper_call() && Some(i.imm) == tail_id);
        for (f, t) in funcs.iter_mut().zip(tcr) {
            f.tail_call_reachable = t;
        }
    }
    // bpf_throw calls the callback without a tail-call counter pointer in rax.
    if let Some(cb) = exception_cb {
        if funcs.iter().any(|f| f.start == cb && f.tail_call_reachable) {
            return Err(JitError::Unsupported { pc: orig[cb], what: "an exception callback that can reach a tail call".into() });
        }
    }
    let p = Program {
        insns: &prog_insns,
        native,
        second,
        orig: orig.clone(),
        opts,
        res,
        needs_unwind: needs.unwind,
        exception_cb,
        main_callee: funcs[0].callee_used,
        main_depth: funcs[0].depth,
        main_tcr: funcs[0].tail_call_reachable,
    };
    let mut relocs = Vec::new();
    let mut max_passes = 0;
    for f in funcs.iter_mut() {
        max_passes = max_passes.max(converge(&p, f, &mut relocs)?);
    }
    // Lay out: functions back to back, then the stubs; then the final pass with every
    // image position known.
    let mut func_at = vec![None; prog_insns.len()];
    let mut bases = Vec::new();
    let mut off = 0;
    for f in &funcs {
        func_at[f.start] = Some(off);
        bases.push(off);
        off += f.proglen;
    }
    let tramp_targets: Vec<u64> = needs.tramp_targets.into_iter().collect();
    let st = p.stubs(off, &tramp_targets, if needs.callx { opts.callx_helpers } else { None })?;
    let mut code = Vec::new();
    for (fi, f) in funcs.iter_mut().enumerate() {
        let lay = Layout {
            final_pass: true,
            func_base: bases[fi],
            func_at: func_at.clone(),
            unwind_stub: st.unwind,
            abort_stub: st.abort,
            callx_table: st.table,
            tramps: st.tramps.clone(),
            ret_thunk: st.ret_thunk,
            rcx_thunk: st.rcx_thunk,
        };
        let c = p.do_jit(f, &lay, true, &mut relocs)?;
        if c.len() != f.proglen {
            return Err(JitError::Other(format!("function at slot {}: final pass size {} != {}", orig[f.start], c.len(), f.proglen)));
        }
        code.extend_from_slice(&c);
    }
    code.extend_from_slice(&st.code);
    let insn_ranges = insn_ranges(&p, &funcs, &bases, insns.len());
    let layouts = funcs
        .iter()
        .enumerate()
        .map(|(fi, f)| FuncLayout {
            insn_start: orig[f.start],
            insn_end: if f.end < prog_insns.len() { orig[f.end] } else { insns.len() },
            code_start: bases[fi],
            code_len: f.proglen,
            stack_depth: f.depth,
            prologue_len: f.prologue_len,
        })
        .collect();
    Ok(JitImage { code, funcs: layouts, insn_ranges, relocs, abs_slots: st.abs_slots, passes: max_passes })
}

/// Regions lie inside the program and no jump from outside lands in their interior.
fn check_regions(insns: &[Insn], regions: &[NativeRegion]) -> Result<(), JitError> {
    for r in regions {
        if r.len == 0 || r.start + r.len > insns.len() {
            return Err(JitError::Insn { pc: r.start, msg: format!("native region of {} slots outside the program", r.len) });
        }
        for (pc, i) in insns.iter().enumerate() {
            if let Some(t) = i.target(pc) {
                let inside = t > r.start as i64 && t < (r.start + r.len) as i64;
                let from_inside = pc >= r.start && pc < r.start + r.len;
                if inside && !from_inside {
                    return Err(JitError::Insn { pc, msg: format!("jump into the interior of the native region at {}", r.start) });
                }
            }
        }
    }
    Ok(())
}

/// Programs from outside the kernel: r11 (`BPF_REG_AX`) is the JIT's, not theirs.
fn check_registers(insns: &[Insn]) -> Result<(), JitError> {
    let second = fixup::second_slots(insns);
    for (pc, i) in insns.iter().enumerate() {
        if second[pc] {
            continue;
        }
        let sidecar = i.is_kinsn_sidecar();
        let uses_dst = match i.class() {
            op::JMP | op::JMP32 if i.is_call() || i.is_exit() || i.op() == op::JA => i.code == op::JMP | op::CALL | op::X,
            op::ALU64 if sidecar => false, // dst carries payload bits
            _ => true,
        };
        let uses_src = match i.class() {
            op::ALU | op::ALU64 | op::JMP | op::JMP32 => i.source() == op::X && !i.is_call() && i.code != op::JMP | op::CALL | op::X,
            op::LDX | op::STX => true,
            _ => false,
        };
        if (uses_dst && i.dst > 10) || (uses_src && i.src > 10) {
            return Err(JitError::Insn { pc, msg: format!("register number above r10 in {:#04x}", i.code) });
        }
    }
    Ok(())
}

/// What the program needs from the runtime stubs after its functions.
struct Needs {
    /// It calls `bpf_tail_call` (as [`JitOptions::tail_call`] names it).
    tail_call: bool,
    /// `callx` (helper table).
    callx: bool,
    /// The unwind stub (end the program from any depth).
    unwind: bool,
    /// Helper trampolines, by target address.
    tramp_targets: BTreeSet<u64>,
}

impl Needs {
    fn of(insns: &[Insn], second: &[bool], orig: &[usize], opts: &JitOptions, res: &dyn Resolver) -> Result<Needs, JitError> {
        let any = |pred: &dyn Fn(&Insn) -> bool| insns.iter().enumerate().any(|(pc, i)| !second[pc] && pred(i));
        let tail_id = opts.tail_call.map(|t| t.0);
        let tail_call = tail_id.is_some() && any(&|i| i.is_helper_call() && Some(i.imm) == tail_id);
        // Helpers the program calls (resolved now, so an unknown one is reported up front).
        let mut tramp_targets = BTreeSet::new();
        for (pc, i) in insns.iter().enumerate() {
            if second[pc] || !i.is_helper_call() || Some(i.imm) == tail_id {
                continue;
            }
            let addr = res.helper(i.imm).ok_or(JitError::Insn { pc: orig[pc], msg: format!("unknown helper {}", i.imm) })?;
            tramp_targets.insert(addr);
        }
        if opts.call_mode != CallMode::Trampoline {
            tramp_targets.clear();
        }
        if let Some((_, TailCallMode::Lookup(f))) = opts.tail_call {
            if tail_call {
                tramp_targets.insert(f);
            }
        }
        let is_callx = |i: &Insn| i.code == op::JMP | op::CALL | op::X;
        let is_ld_abs = |i: &Insn| i.class() == op::LD && matches!(i.mode(), op::ABS | op::IND);
        let callx = any(&is_callx);
        let ld_abs = opts.ld_abs.is_some() && any(&is_ld_abs);
        if let (true, Some(f), CallMode::Trampoline | CallMode::Rel32) = (ld_abs, opts.ld_abs, opts.call_mode) {
            tramp_targets.insert(f);
        }
        // LD_ABS needs no unwind: out of range it returns 0 from its own function.
        let throw = opts.throw.map(|t| t.helper);
        let unwind = any(&|i| (i.is_helper_call() && (Some(i.imm) == opts.unwind_helper || Some(i.imm) == throw)) || is_callx(i));
        Ok(Needs { tail_call, callx, unwind, tramp_targets })
    }
}

/// One [`Func`] per function start: its extent, stack depth and callee-saved registers.
fn functions(insns: &[Insn], second: &[bool], orig: &[usize], starts: &[usize], opts: &JitOptions) -> Result<Vec<Func>, JitError> {
    let mut funcs = Vec::new();
    for (fi, &s) in starts.iter().enumerate() {
        let e = starts.get(fi + 1).copied().unwrap_or(insns.len());
        // Native code must not run off a function into the next one (the verifier
        // rejects such programs; unverified ones get this error).
        let mut last = e - 1;
        if last > s && second[last] {
            last -= 1;
        }
        let li = insns[last];
        let ends = li.is_exit() || (li.is_jump() && li.op() == op::JA);
        if !ends {
            return Err(JitError::Insn { pc: orig[last], msg: "the function can run past its last instruction (no exit or jump)".into() });
        }
        let mut used = [false; 4];
        for i in &insns[s..e] {
            for r in [i.dst, i.src] {
                if (6..=9).contains(&r) {
                    used[(r - 6) as usize] = true;
                }
            }
        }
        let mut depth = opts.stack_depth.unwrap_or_else(|| stack::stack_depth(insns, s, e, second, opts.verified));
        // may_goto's counter gets 8 more bytes below the function's own stack.
        let may_goto = (s..e).any(|k| !second[k] && insns[k].code == op::JMP | kops_isa::decode::JCOND);
        if may_goto {
            depth = depth.div_ceil(8) * 8 + 8;
        }
        let n = e - s;
        funcs.push(Func {
            start: s,
            end: e,
            is_subprog: fi > 0,
            depth,
            may_goto,
            callee_used: used,
            tail_call_reachable: false,
            addrs: (0..=n as i64).map(|k| (k + 1) * 64).collect(),
            cleanup_addr: (n as i64 + 1) * 64,
            seen_exit: false,
            tail_call_label: 0,
            tail_call_direct_label: 0,
            prologue_len: 0,
            proglen: 0,
        });
    }
    Ok(funcs)
}

/// Per original slot: the native range it became (empty, at the previous end, for data
/// slots and slots inside native regions).
fn insn_ranges(p: &Program<'_>, funcs: &[Func], bases: &[usize], n_orig: usize) -> Vec<(u32, u32)> {
    let mut ranges: Vec<Option<(u32, u32)>> = vec![None; n_orig];
    for (fi, f) in funcs.iter().enumerate() {
        let base = bases[fi] as i64;
        for k in 0..(f.end - f.start) {
            let pc = f.start + k;
            if p.second[pc] {
                continue;
            }
            let (s, e) = ((base + f.addrs[k]) as u32, (base + f.addrs[k + 1]) as u32);
            let r = ranges[p.orig[pc]].get_or_insert((s, e));
            r.0 = r.0.min(s);
            r.1 = r.1.max(e);
        }
    }
    let mut out = Vec::with_capacity(n_orig);
    let mut prev_end = 0;
    for r in ranges {
        let r = r.unwrap_or((prev_end, prev_end));
        prev_end = r.1;
        out.push(r);
    }
    out
}
