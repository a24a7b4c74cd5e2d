//! The lowering of each eBPF instruction and the kernel's size-convergence loop.

use kops_isa::{op, Insn};
use kops_x86::{is_imm8, is_simm32, Alu, Asm, Cond, Feature, Mem, Reg, Shift, Size, Width};

use crate::fixup;
use crate::{stack, CallMode, FuncLayout, JitError, JitImage, JitOptions, Resolver, AUX_REG, UNWIND_REG};

/// `MAX_PASSES` and `PADDING_PASSES` of the kernel.
const MAX_PASSES: u32 = 20;
const PADDING_PASSES: u32 = MAX_PASSES - 5;
/// `MAX_TAIL_CALL_CNT`.
const MAX_TAIL_CALL_CNT: i8 = 33;
/// Bytes skipped by a tail call: nop5 + nop3/xor + push rbp + mov rbp,rsp (no ENDBR: this
/// kernel runs without IBT, as its jited images show).
const TAIL_CALL_OFFSET: i8 = 12;

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

/// Signed 8-bit jump offsets only up to 123, as the kernel's `is_imm8_jmp_offset` (a
/// bigger limit can keep the convergence loop from terminating).
fn is_imm8_jmp(v: i64) -> bool {
    (-128..=123).contains(&v)
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

/// Callee-saved registers in push order: rbx, r13, r14, r15 (BPF r6..r9).
const CALLEE: [Reg; 4] = [Reg::Rbx, Reg::R13, Reg::R14, Reg::R15];

/// Per-function state kept across passes.
struct Func {
    start: usize,
    end: usize,
    is_subprog: bool,
    depth: u32,
    callee_used: [bool; 4],
    tail_call_reachable: bool,
    /// `addrs[k]`: native offset where local instruction k starts (= end of k-1).
    addrs: Vec<i64>,
    cleanup_addr: i64,
    tail_call_label: i64,
    tail_call_direct_label: i64,
    prologue_len: usize,
    proglen: usize,
}

/// Image-wide positions, known only in the final pass (zero before).
struct Layout {
    final_pass: bool,
    func_base: usize,
    /// Native image offset of the function that starts at each slot.
    func_at: Vec<Option<usize>>,
    unwind_stub: usize,
    abort_stub: usize,
    callx_table: usize,
    tramps: std::collections::BTreeMap<u64, usize>,
    ret_thunk: usize,
    rcx_thunk: usize,
}

struct Program<'a> {
    insns: &'a [Insn],
    /// Native regions: first slot -> (slots covered, code).
    native: std::collections::BTreeMap<usize, (usize, Vec<u8>)>,
    second: Vec<bool>,
    /// Original slot of each slot of `insns` (after fixups).
    orig: Vec<usize>,
    opts: &'a JitOptions,
    res: &'a dyn Resolver,
    needs_unwind: bool,
    main_callee: [bool; 4],
    main_depth: u32,
    main_tcr: bool,
}

struct Out {
    relocs: Vec<(usize, u64)>,
}

impl Program<'_> {
    fn orig_pc(&self, pc: usize) -> usize {
        self.orig[pc]
    }
    fn err(&self, pc: usize, msg: impl Into<String>) -> JitError {
        JitError::Insn { pc: self.orig_pc(pc), msg: msg.into() }
    }
    fn unsupported(&self, pc: usize, what: impl Into<String>) -> JitError {
        JitError::Unsupported { pc: self.orig_pc(pc), what: what.into() }
    }

    /// The kernel's `emit_prologue` plus callee-saved pushes.
    fn prologue(&self, f: &Func, a: &mut Asm) {
        a.nops(5);
        if f.tail_call_reachable && !f.is_subprog {
            a.raw(&[0x48, 0x31, 0xC0]); // xor rax, rax: tail_call_cnt = 0
        } else {
            a.nops(3);
        }
        a.push(Reg::Rbp);
        a.mov_rr(Width::W64, Reg::Rbp, Reg::Rsp);
        if f.depth > 0 {
            a.alu_ri32(Alu::Sub, Width::W64, Reg::Rsp, f.depth.div_ceil(8) as i32 * 8);
        }
        if f.tail_call_reachable {
            if !f.is_subprog {
                a.raw(&[0x48, 0x83, 0xF8, MAX_TAIL_CALL_CNT as u8]); // cmp rax, MAX
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

    fn pop_callee(used: &[bool; 4], a: &mut Asm) {
        for k in (0..4).rev() {
            if used[k] {
                a.pop(CALLEE[k]);
            }
        }
    }

    /// One pass over a function (`do_jit`). Returns the function's code.
    fn do_jit(&self, f: &mut Func, lay: &Layout, padding: bool, out: &mut Out) -> Result<Vec<u8>, JitError> {
        let mut code = Asm::new();
        self.prologue(f, &mut code);
        f.prologue_len = code.len();
        f.addrs[0] = code.len() as i64;
        let mut seen_exit = false;
        let n = f.end - f.start;
        let mut k = 0;
        while k < n {
            let pc = f.start + k;
            let i = self.insns[pc];
            let mut t = Asm::new();
            let mut skip = 1;
            let insn_start = code.len() as i64;
            // Bytes this instruction had in the previous pass (for jump padding).
            let prev_len = f.addrs[k + 1] - f.addrs[k];
            if let Some((len, bytes)) = self.native.get(&pc) {
                // A kinsn site's native form: the whole region at its first slot.
                code.raw(bytes);
                for kk in k + 1..=k + len {
                    f.addrs[kk.min(n)] = code.len() as i64;
                }
                k += len;
                continue;
            }
            self.emit_insn(f, lay, pc, k, &i, &mut t, &mut seen_exit, padding, prev_len, insn_start, out, &mut skip)?;
            code.raw(&t.code);
            if skip == 2 {
                // ld_imm64: its data slot is empty and sits at the instruction's end.
                f.addrs[k + 1] = code.len() as i64;
                k += 1;
            }
            f.addrs[k + 1] = code.len() as i64;
            k += 1;
        }
        Ok(code.code)
    }

    #[allow(clippy::too_many_arguments)]
    fn emit_insn(
        &self,
        f: &mut Func,
        lay: &Layout,
        pc: usize,
        k: usize,
        i: &Insn,
        a: &mut Asm,
        seen_exit: &mut bool,
        padding: bool,
        prev_len: i64,
        insn_start: i64,
        out: &mut Out,
        skip: &mut usize,
    ) -> Result<(), JitError> {
        let cls = i.class();
        let is64 = cls == op::ALU64;
        let w = Width::from_is64(is64);
        let opc = i.op();
        let imm = i.imm;
        let end_of_insn = |f: &Func| f.addrs[k + 1];
        match cls {
            op::ALU | op::ALU64 => {
                let dst = reg(pc, i.dst)?;
                if i.dst == 10 {
                    return Err(self.err(pc, "write to the frame pointer r10"));
                }
                let x = i.source() == op::X;
                match opc {
                    op::ADD | op::SUB | op::AND | op::OR | op::XOR => {
                        if x {
                            a.alu_rr(alu_of(opc), w, dst, reg(pc, i.src)?);
                        } else {
                            a.alu_ri(alu_of(opc), w, dst, imm);
                        }
                    }
                    op::MOV => {
                        if x {
                            let src = reg(pc, i.src)?;
                            match (i.off, is64) {
                                (0, true) => {
                                    if dst != src {
                                        a.mov_rr(Width::W64, dst, src);
                                    }
                                }
                                (0, false) => a.mov_rr(Width::W32, dst, src),
                                (8, _) => a.movsx_rr(w, Size::S8, dst, src),
                                (16, _) => a.movsx_rr(w, Size::S16, dst, src),
                                (32, true) => a.movsx_rr(w, Size::S32, dst, src),
                                (-1, true) if self.opts.percpu_off.is_some() => {
                                    // insn_is_mov_percpu_addr: the kernel's exact bytes.
                                    if dst != src {
                                        a.mov_rr(Width::W64, dst, src);
                                    }
                                    a.byte(0x65);
                                    a.byte(0x48 | dst.is_ext() as u8);
                                    a.raw(&[0x03, 0x04 | dst.low() << 3, 0x25]);
                                    a.imm32(self.opts.percpu_off.unwrap_or(0) as i32);
                                }
                                (o, _) => return Err(self.unsupported(pc, format!("mov with off {o} (arena/percpu casts)"))),
                            }
                        } else {
                            if i.src == op::PSEUDO_KINSN_SIDECAR {
                                return Err(self.unsupported(pc, "kinsn site (lower it first or use the kops runtime)"));
                            }
                            a.mov_imm32(is64, dst, imm);
                        }
                    }
                    op::NEG => a.neg(w, dst),
                    op::MUL => {
                        if x {
                            a.imul_rr(w, dst, reg(pc, i.src)?);
                        } else {
                            a.imul_rri(w, dst, dst, imm);
                        }
                    }
                    op::DIV | op::MOD => self.emit_divmod(pc, i, a)?,
                    op::LSH | op::RSH | op::ARSH => {
                        if !x {
                            a.shift_ri(shift_of(opc), w, dst, imm as u8);
                        } else {
                            let src = reg(pc, i.src)?;
                            if self.opts.features.has(Feature::Bmi2) && src != Reg::Rcx {
                                match opc {
                                    op::LSH => a.shlx(w, dst, dst, src),
                                    op::RSH => a.shrx(w, dst, dst, src),
                                    _ => a.sarx(w, dst, dst, src),
                                }
                            } else {
                                let mut d = dst;
                                if src != Reg::Rcx {
                                    if dst == Reg::Rcx {
                                        a.mov_rr(Width::W64, AUX_REG, dst);
                                        d = AUX_REG;
                                    } else {
                                        a.push(Reg::Rcx);
                                    }
                                    a.mov_rr(Width::W64, Reg::Rcx, src);
                                }
                                a.shift_cl(shift_of(opc), w, d);
                                if src != Reg::Rcx {
                                    if dst == Reg::Rcx {
                                        a.mov_rr(Width::W64, dst, AUX_REG);
                                    } else {
                                        a.pop(Reg::Rcx);
                                    }
                                }
                            }
                        }
                    }
                    op::END => {
                        let swap = is64 || i.source() == op::TO_BE;
                        match (imm, swap) {
                            (16, true) => {
                                a.shift16_ri(Shift::Ror, dst, 8);
                                a.movzx_rr(Width::W32, Size::S16, dst, dst);
                            }
                            (32, true) => a.bswap(Width::W32, dst),
                            (64, true) => a.bswap(Width::W64, dst),
                            (16, false) => a.movzx_rr(Width::W32, Size::S16, dst, dst),
                            (32, false) => a.mov_rr(Width::W32, dst, dst),
                            (64, false) => {}
                            _ => return Err(self.err(pc, format!("byte swap of {imm} bits"))),
                        }
                    }
                    _ => return Err(self.unsupported(pc, format!("ALU opcode {:#04x}", i.code))),
                }
            }
            op::LD => {
                if !i.is_ld_imm64() {
                    return self.emit_ld_abs(pc, i, a, lay, insn_start);
                }
                if pc + 1 >= f.end {
                    return Err(self.err(pc, "ld_imm64 without its second slot"));
                }
                let hi = self.insns[pc + 1];
                let dst = reg(pc, i.dst)?;
                let v = if i.src == 0 {
                    (hi.imm as u32 as u64) << 32 | i.imm as u32 as u64
                } else {
                    self.res.ld_imm64(self.orig_pc(pc), i, &hi).map_err(|m| self.err(pc, m))?
                };
                a.mov_imm64(dst, v);
                *skip = 2;
            }
            op::ST => {
                if i.code == op::ST | 0xc0 {
                    a.lfence(); // BPF_ST | BPF_NOSPEC
                    return Ok(());
                }
                if i.mode() != op::MEM {
                    return Err(self.unsupported(pc, format!("store mode {:#04x}", i.code)));
                }
                a.store_imm(size_of(i), Mem::new(reg(pc, i.dst)?, i.off as i32), imm);
            }
            op::STX => {
                let m = Mem::new(reg(pc, i.dst)?, i.off as i32);
                let src = reg(pc, i.src)?;
                match i.mode() {
                    op::MEM => a.store(size_of(i), m, src),
                    op::ATOMIC => self.emit_atomic(pc, i, a)?,
                    _ => return Err(self.unsupported(pc, format!("store mode {:#04x}", i.code))),
                }
            }
            op::LDX => {
                let m = Mem::new(reg(pc, i.src)?, i.off as i32);
                let dst = reg(pc, i.dst)?;
                match i.mode() {
                    op::MEM => a.load(size_of(i), dst, m),
                    op::MEMSX if i.size() != op::DW => a.load_sx(size_of(i), dst, m),
                    _ => return Err(self.unsupported(pc, format!("load mode {:#04x}", i.code))),
                }
            }
            op::JMP | op::JMP32 => {
                let jmp64 = cls == op::JMP;
                let jw = Width::from_is64(jmp64);
                match opc {
                    op::CALL if jmp64 => {
                        if i.source() == op::X {
                            return self.emit_callx(pc, i, a, lay, insn_start, out);
                        }
                        match i.src {
                            0 => self.emit_helper_call(pc, i, a, f, lay, insn_start, out)?,
                            op::PSEUDO_CALL => {
                                if f.tail_call_reachable {
                                    self.load_tcc_ptr(f, a);
                                }
                                let target = (pc as i64 + 1 + imm as i64) as usize;
                                let rel = if lay.final_pass {
                                    let to = lay.func_at.get(target).copied().flatten().ok_or_else(|| self.err(pc, "call target is not a function start"))?;
                                    to as i64 - (lay.func_base as i64 + insn_start + a.len() as i64 + 5)
                                } else {
                                    0
                                };
                                a.call_rel32(rel as i32);
                            }
                            op::PSEUDO_KINSN_CALL => {
                                return Err(self.unsupported(pc, "kinsn site (lower it first or use the kops runtime)"))
                            }
                            s => return Err(self.unsupported(pc, format!("call with src_reg {s} (kfunc)"))),
                        }
                    }
                    op::EXIT if jmp64 => {
                        if *seen_exit {
                            let off = f.cleanup_addr - end_of_insn(f);
                            self.emit_jmp(a, off, padding, prev_len);
                        } else {
                            *seen_exit = true;
                            f.cleanup_addr = insn_start;
                            if self.needs_unwind && !f.is_subprog {
                                a.pop(UNWIND_REG);
                            }
                            Self::pop_callee(&f.callee_used, a);
                            a.leave();
                            if self.opts.return_thunk {
                                let rel = if lay.final_pass {
                                    lay.ret_thunk as i64 - (lay.func_base as i64 + insn_start + a.len() as i64 + 5)
                                } else {
                                    0
                                };
                                a.jmp_rel32(rel as i32);
                            } else {
                                a.ret();
                            }
                        }
                    }
                    op::JA => {
                        if i.source() == op::X {
                            return Err(self.unsupported(pc, "indirect jump (gotox)"));
                        }
                        let rel = i.jump_offset();
                        let off = if rel == -1 {
                            -2
                        } else {
                            let t = self.local_target(f, pc, rel)?;
                            f.addrs[t] - end_of_insn(f)
                        };
                        if off == 0 {
                            if padding {
                                a.nops((prev_len as usize).saturating_sub(0));
                            }
                        } else {
                            self.emit_jmp(a, off, padding, prev_len);
                        }
                    }
                    0xe0 => return Err(self.unsupported(pc, "may_goto")),
                    _ => {
                        let cc = cond_of(opc).ok_or_else(|| self.unsupported(pc, format!("jump opcode {:#04x}", i.code)))?;
                        let dst = reg(pc, i.dst)?;
                        if i.source() == op::X {
                            let src = reg(pc, i.src)?;
                            if opc == op::JSET {
                                a.test_rr(jw, dst, src);
                            } else {
                                a.cmp_rr(jw, dst, src);
                            }
                        } else if opc == op::JSET {
                            a.test_ri(jw, dst, imm);
                        } else if imm == 0 {
                            a.test_rr(jw, dst, dst);
                        } else {
                            a.cmp_ri(jw, dst, imm);
                        }
                        let t = self.local_target(f, pc, i.off as i32)?;
                        let off = f.addrs[t] - end_of_insn(f);
                        if is_imm8_jmp(off) {
                            if padding {
                                let nops = prev_len - a.len() as i64 - 2;
                                if nops != 0 && nops != 4 {
                                    return Err(self.err(pc, format!("unexpected jcc padding {nops}")));
                                }
                                a.nops(nops as usize);
                            }
                            a.jcc_rel8(cc, off as i8);
                        } else if is_simm32(off) {
                            a.jcc_rel32(cc, off as i32);
                        } else {
                            return Err(self.err(pc, "jump offset overflow"));
                        }
                    }
                }
            }
            _ => return Err(self.unsupported(pc, format!("opcode {:#04x}", i.code))),
        }
        Ok(())
    }

    /// `LD_ABS`/`LD_IND` through the runtime's loader ([`JitOptions::ld_abs`]): r0 = value;
    /// r1..r5 are clobbered (as in the kernel); out of range ends the program with 0.
    fn emit_ld_abs(&self, pc: usize, i: &Insn, a: &mut Asm, lay: &Layout, insn_start: i64) -> Result<(), JitError> {
        let func = self.opts.ld_abs.ok_or_else(|| self.unsupported(pc, "legacy packet access (LD_ABS/LD_IND)"))?;
        if !matches!(i.mode(), op::ABS | op::IND) || i.size() == op::DW {
            return Err(self.unsupported(pc, format!("load opcode {:#04x}", i.code)));
        }
        // The offset is computed in 64 bits and used as an int.
        if i.mode() == op::IND {
            let src = reg(pc, i.src)?;
            a.mov_rr(Width::W64, Reg::Rsi, src);
            a.alu_ri(Alu::Add, Width::W64, Reg::Rsi, i.imm);
            a.movsx_rr(Width::W64, Size::S32, Reg::Rsi, Reg::Rsi);
        } else {
            a.mov_imm64(Reg::Rsi, i.imm as i64 as u64);
        }
        a.mov_imm32(false, Reg::Rdi, i.size_bytes() as i32);
        match self.opts.call_mode {
            CallMode::Absolute => {
                a.movabs(AUX_REG, func);
                a.call_r(AUX_REG);
            }
            _ => {
                let rel = if lay.final_pass {
                    let to = *lay.tramps.get(&func).ok_or_else(|| self.err(pc, "no trampoline for the packet loader"))?;
                    to as i64 - (lay.func_base as i64 + insn_start + a.len() as i64 + 5)
                } else {
                    0
                };
                a.call_rel32(rel as i32);
            }
        }
        a.test_rr(Width::W64, Reg::Rax, Reg::Rax);
        let rel = if lay.final_pass { lay.abort_stub as i64 - (lay.func_base as i64 + insn_start + a.len() as i64 + 6) } else { 0 };
        a.jcc_rel32(Cond::S, rel as i32);
        Ok(())
    }

    fn local_target(&self, f: &Func, pc: usize, rel: i32) -> Result<usize, JitError> {
        let t = pc as i64 + 1 + rel as i64;
        if t < f.start as i64 || t >= f.end as i64 {
            return Err(self.err(pc, format!("jump to slot {} leaves the function", t)));
        }
        Ok(t as usize - f.start)
    }

    /// `emit_jmp`: short when the offset allows, with the kernel's padding rule.
    fn emit_jmp(&self, a: &mut Asm, off: i64, padding: bool, prev_len: i64) {
        if is_imm8_jmp(off) {
            if padding {
                let nops = prev_len - a.len() as i64 - 2;
                if nops > 0 {
                    a.nops(nops as usize);
                }
            }
            a.jmp_rel8(off as i8);
        } else {
            a.jmp_rel32(off as i32);
        }
    }

    fn emit_divmod(&self, pc: usize, i: &Insn, a: &mut Asm) -> Result<(), JitError> {
        let is64 = i.class() == op::ALU64;
        let w = Width::from_is64(is64);
        let dst = reg(pc, i.dst)?;
        if dst != Reg::Rax {
            a.push(Reg::Rax);
        }
        if dst != Reg::Rdx {
            a.push(Reg::Rdx);
        }
        let mut src;
        if i.source() == op::X {
            src = reg(pc, i.src)?;
            if src == Reg::Rax || src == Reg::Rdx {
                a.mov_rr(Width::W64, AUX_REG, src);
                src = AUX_REG;
            }
        } else {
            a.mov_r64_simm32(AUX_REG, i.imm);
            src = AUX_REG;
        }
        if dst != Reg::Rax {
            a.mov_rr(w, Reg::Rax, dst);
        }
        if i.off == 0 {
            a.alu_rr(Alu::Xor, Width::W32, Reg::Rdx, Reg::Rdx);
            a.div(w, src);
        } else {
            a.cdq_cqo(w);
            a.idiv(w, src);
        }
        if i.op() == op::MOD && dst != Reg::Rdx {
            a.mov_rr(w, dst, Reg::Rdx);
        } else if i.op() == op::DIV && dst != Reg::Rax {
            a.mov_rr(w, dst, Reg::Rax);
        }
        if dst != Reg::Rdx {
            a.pop(Reg::Rdx);
        }
        if dst != Reg::Rax {
            a.pop(Reg::Rax);
        }
        Ok(())
    }

    fn emit_atomic(&self, pc: usize, i: &Insn, a: &mut Asm) -> Result<(), JitError> {
        let size = size_of(i);
        let dst = reg(pc, i.dst)?;
        let src = reg(pc, i.src)?;
        let m = Mem::new(dst, i.off as i32);
        const LOAD_ACQ: i32 = 0x100;
        const STORE_REL: i32 = 0x110;
        match i.imm {
            LOAD_ACQ => {
                a.load(size, src_as_dst(i, pc)?, Mem::new(src, i.off as i32));
                return Ok(());
            }
            STORE_REL => {
                a.store(size, m, src);
                return Ok(());
            }
            _ => {}
        }
        if !matches!(size, Size::S32 | Size::S64) {
            return Err(self.unsupported(pc, "1- and 2-byte read-modify-write atomics"));
        }
        let is64 = size == Size::S64;
        let fetch_op = |o: i32| o | op::FETCH;
        match i.imm {
            x if x == op::ADD as i32 || x == op::AND as i32 || x == op::OR as i32 || x == op::XOR as i32 => {
                a.lock_alu(alu_of(x as u8), size, m, src)
            }
            x if x == fetch_op(op::ADD as i32) => a.lock_xadd(size, m, src),
            op::XCHG => a.lock_xchg(size, m, src),
            op::CMPXCHG => a.lock_cmpxchg(size, m, src),
            x if x == fetch_op(op::AND as i32) || x == fetch_op(op::OR as i32) || x == fetch_op(op::XOR as i32) => {
                // No single x86 instruction: the kernel's cmpxchg loop.
                let ax = crate::REG_AX;
                let w = Width::from_is64(is64);
                a.mov_rr(Width::W64, ax, Reg::Rax);
                let rsrc = if src == Reg::Rax { ax } else { src };
                let rdst = if dst == Reg::Rax { ax } else { dst };
                let target = a.len();
                a.load(size, Reg::Rax, Mem::new(rdst, i.off as i32));
                a.mov_rr(w, AUX_REG, Reg::Rax);
                a.alu_rr(alu_of((x & !op::FETCH) as u8), w, AUX_REG, rsrc);
                a.lock_cmpxchg(size, Mem::new(rdst, i.off as i32), AUX_REG);
                let back = -((a.len() - target) as i64) - 2;
                a.jcc_rel8(Cond::Ne, back as i8);
                if w == Width::W64 {
                    if rsrc != Reg::Rax {
                        a.mov_rr(w, rsrc, Reg::Rax);
                    }
                } else {
                    a.mov_rr(w, rsrc, Reg::Rax);
                }
                a.mov_rr(Width::W64, Reg::Rax, ax);
            }
            x => return Err(self.unsupported(pc, format!("atomic operation {x:#x}"))),
        }
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn emit_helper_call(
        &self,
        pc: usize,
        i: &Insn,
        a: &mut Asm,
        f: &mut Func,
        lay: &Layout,
        insn_start: i64,
        out: &mut Out,
    ) -> Result<(), JitError> {
        if let Some((id, mode)) = self.opts.tail_call {
            if id == i.imm {
                if self.opts.direct_tail_calls.contains(&self.orig_pc(pc)) {
                    return self.emit_tail_call_direct(f, a);
                }
                return self.emit_tail_call(f, a, mode, lay, insn_start);
            }
        }
        let addr = self.res.helper(i.imm).ok_or_else(|| self.err(pc, format!("unknown helper {}", i.imm)))?;
        match self.opts.call_mode {
            CallMode::Rel32 => {
                a.call_rel32(0);
                if lay.final_pass {
                    out.relocs.push((lay.func_base + insn_start as usize + a.len() - 4, addr));
                }
            }
            CallMode::Trampoline => {
                let rel = if lay.final_pass {
                    let to = *lay.tramps.get(&addr).ok_or_else(|| self.err(pc, "no trampoline"))?;
                    to as i64 - (lay.func_base as i64 + insn_start + a.len() as i64 + 5)
                } else {
                    0
                };
                a.call_rel32(rel as i32);
            }
            CallMode::Absolute => {
                a.movabs(AUX_REG, addr);
                a.call_r(AUX_REG);
            }
        }
        if Some(i.imm) == self.opts.unwind_helper {
            // The suite's unwind helper: a 0 result ends the whole program with r0 = 0.
            a.test_rr(Width::W64, Reg::Rax, Reg::Rax);
            let rel = if lay.final_pass {
                lay.unwind_stub as i64 - (lay.func_base as i64 + insn_start + a.len() as i64 + 6)
            } else {
                0
            };
            a.jcc_rel32(Cond::E, rel as i32);
        }
        Ok(())
    }

    /// `call %rN`: the helper whose id is in rN, through a table built into the image. Ids
    /// without a helper, or out of range, end the program with r0 = 0.
    fn emit_callx(&self, pc: usize, i: &Insn, a: &mut Asm, lay: &Layout, insn_start: i64, _out: &mut Out) -> Result<(), JitError> {
        let n = self.opts.callx_helpers.ok_or_else(|| self.unsupported(pc, "callx (no helper table in this runtime)"))?;
        let r = reg(pc, i.dst)?;
        let rel = |a: &Asm, to: usize, len: i64| {
            if lay.final_pass {
                to as i64 - (lay.func_base as i64 + insn_start + a.len() as i64 + len)
            } else {
                0
            }
        };
        a.alu_ri32(Alu::Cmp, Width::W64, r, n as i32);
        let r1 = rel(a, lay.abort_stub, 6);
        a.jcc_rel32(Cond::Ae, r1 as i32);
        // lea r11, [rip + table]; call [r11 + r*8]
        let r2 = rel(a, lay.callx_table, 7);
        a.raw(&[0x4C, 0x8D, 0x1D]);
        a.imm32(r2 as i32);
        a.call_m(Mem::indexed(AUX_REG, r, 8, 0));
        Ok(())
    }

    /// `LOAD_TAIL_CALL_CNT_PTR`: mov rax, [rbp - round_up(depth, 8) - 16].
    fn load_tcc_ptr(&self, f: &Func, a: &mut Asm) {
        let off = -16 - (f.depth.div_ceil(8) * 8) as i32;
        a.raw(&[0x48, 0x8B, 0x85]);
        a.imm32(off);
    }

    /// The common tail of every tail call once it is taken: count it (rax holds the
    /// counter's address), then take down this frame in the reverse order of the
    /// prologue (unwind register, callee-saved registers, the tail-call counter slots,
    /// the stack) so the target's prologue builds the same frame again.
    fn count_tail_call_and_drop_frame(&self, f: &Func, a: &mut Asm) {
        a.raw(&[0x48, 0x83, 0x00, 0x01]); // add qword ptr [rax], 1
        if self.needs_unwind && !f.is_subprog {
            a.pop(UNWIND_REG);
        }
        Self::pop_callee(&f.callee_used, a);
        a.pop(Reg::Rax);
        a.pop(Reg::Rax);
        if f.depth > 0 {
            a.alu_ri32(Alu::Add, Width::W64, Reg::Rsp, (f.depth.div_ceil(8) * 8) as i32);
        }
    }

    /// `emit_bpf_tail_call_indirect`: with the kernel's array layout, or through our
    /// runtime's lookup function (see [`crate::TailCallMode`]).
    fn emit_tail_call(&self, f: &mut Func, a: &mut Asm, mode: crate::TailCallMode, lay: &Layout, insn_start: i64) -> Result<(), JitError> {
        let start = a.len() as i64;
        let label = f.tail_call_label;
        let jrel = |a: &Asm| (label - (a.len() as i64 - start + 2)) as i8;
        a.mov_rr(Width::W32, Reg::Rdx, Reg::Rdx);
        match mode {
            crate::TailCallMode::Kernel(l) => {
                // cmp dword ptr [rsi + max_entries], edx
                a.byte(0x39);
                if is_imm8(l.max_entries_off as i64) {
                    a.raw(&[0x56, l.max_entries_off as u8]);
                } else {
                    a.byte(0x96);
                    a.imm32(l.max_entries_off);
                }
                let j = jrel(a);
                a.jcc_rel8(Cond::Be, j);
                self.load_tcc_ptr(f, a);
                a.raw(&[0x48, 0x83, 0x38, MAX_TAIL_CALL_CNT as u8]); // cmp qword ptr [rax], MAX
                let j = jrel(a);
                a.jcc_rel8(Cond::Ae, j);
                a.load(Size::S64, Reg::Rcx, Mem { base: Reg::Rsi, index: Some((Reg::Rdx, 8)), disp: l.ptrs_off });
                a.test_rr(Width::W64, Reg::Rcx, Reg::Rcx);
                let j = jrel(a);
                a.jcc_rel8(Cond::E, j);
                self.count_tail_call_and_drop_frame(f, a);
                a.load(Size::S64, Reg::Rcx, Mem::new(Reg::Rcx, l.func_off));
            }
            crate::TailCallMode::Lookup(func) => {
                // rcx = lookup(map, index), through the aligning trampoline; ctx survives
                // in rdi across it.
                a.push(Reg::Rdi);
                a.mov_rr(Width::W64, Reg::Rdi, Reg::Rsi);
                a.mov_rr(Width::W64, Reg::Rsi, Reg::Rdx);
                let rel = if lay.final_pass {
                    let to = *lay.tramps.get(&func).ok_or_else(|| JitError::Other("no tail-call trampoline".into()))?;
                    to as i64 - (lay.func_base as i64 + insn_start + a.len() as i64 + 5)
                } else {
                    0
                };
                a.call_rel32(rel as i32);
                a.pop(Reg::Rdi);
                a.mov_rr(Width::W64, Reg::Rcx, Reg::Rax);
                a.test_rr(Width::W64, Reg::Rcx, Reg::Rcx);
                let j = jrel(a);
                a.jcc_rel8(Cond::E, j);
                self.load_tcc_ptr(f, a);
                a.raw(&[0x48, 0x83, 0x38, MAX_TAIL_CALL_CNT as u8]); // cmp qword ptr [rax], MAX
                let j = jrel(a);
                a.jcc_rel8(Cond::Ae, j);
                self.count_tail_call_and_drop_frame(f, a);
            }
        }
        a.alu_ri8(Alu::Add, Width::W64, Reg::Rcx, TAIL_CALL_OFFSET);
        if self.opts.return_thunk {
            // As the kernel with retpolines: jmp __x86_indirect_thunk_rcx.
            let rel = if lay.final_pass {
                lay.rcx_thunk as i64 - (lay.func_base as i64 + insn_start + a.len() as i64 + 5)
            } else {
                0
            };
            a.jmp_rel32(rel as i32);
        } else {
            a.jmp_r(Reg::Rcx);
        }
        f.tail_call_label = a.len() as i64 - start;
        Ok(())
    }

    /// `emit_bpf_tail_call_direct`: the kernel's patchable form for a constant key. As
    /// loaded (empty slot) the bypass `jmp` skips to `out`; the `nop5` is the patch site.
    fn emit_tail_call_direct(&self, f: &mut Func, a: &mut Asm) -> Result<(), JitError> {
        let start = a.len() as i64;
        let label = f.tail_call_direct_label;
        self.load_tcc_ptr(f, a);
        a.raw(&[0x48, 0x83, 0x38, MAX_TAIL_CALL_CNT as u8]); // cmp qword ptr [rax], MAX
        let j = (label - (a.len() as i64 - start + 2)) as i8;
        a.jcc_rel8(Cond::Ae, j);
        let rel = label - (a.len() as i64 - start + 5);
        a.jmp_rel32(rel as i32); // bypass
        self.count_tail_call_and_drop_frame(f, a);
        a.nops(5);
        f.tail_call_direct_label = a.len() as i64 - start;
        Ok(())
    }

    /// Runtime stubs after the last function: unwind (end the program from any depth),
    /// abort (r0 = 0, then unwind), helper trampolines, the callx table.
    fn stubs(&self, image_len: usize, tramp_targets: &[u64], callx: Option<u32>) -> Result<Stubs, JitError> {
        let mut a = Asm::new();
        let ret_thunk = image_len + a.len();
        if self.opts.return_thunk {
            a.ret();
            a.int3();
        }
        let rcx_thunk = image_len + a.len();
        if self.opts.return_thunk {
            a.jmp_r(Reg::Rcx);
            a.int3();
        }
        let unwind = image_len + a.len();
        if self.needs_unwind {
            // Back to the main frame from any depth: r12 holds its rsp after the pushes.
            // rbp may belong to a subprogram, so no `leave`: skip the main frame's stack
            // (and tail-call slots) and pop the main frame's rbp.
            a.mov_rr(Width::W64, Reg::Rsp, UNWIND_REG);
            a.pop(UNWIND_REG);
            Self::pop_callee(&self.main_callee, &mut a);
            let frame = self.main_depth.div_ceil(8) * 8 + if self.main_tcr { 16 } else { 0 };
            if frame > 0 {
                a.alu_ri32(Alu::Add, Width::W64, Reg::Rsp, frame as i32);
            }
            a.pop(Reg::Rbp);
            a.ret();
        }
        let abort = image_len + a.len();
        if self.needs_unwind {
            a.alu_rr(Alu::Xor, Width::W32, Reg::Rax, Reg::Rax);
            let rel = unwind as i64 - (image_len + a.len() + 5) as i64;
            a.jmp_rel32(rel as i32);
        }
        // Trampolines: align the stack for SysV code, call through r11.
        let mut tramps = std::collections::BTreeMap::new();
        let tramp = |a: &mut Asm, addr: u64, unwind_check: bool| -> usize {
            let at = image_len + a.len();
            a.push(Reg::Rbp);
            a.mov_rr(Width::W64, Reg::Rbp, Reg::Rsp);
            a.alu_ri8(Alu::And, Width::W64, Reg::Rsp, -16);
            a.movabs(AUX_REG, addr);
            a.call_r(AUX_REG);
            a.leave();
            if unwind_check {
                a.test_rr(Width::W64, Reg::Rax, Reg::Rax);
                let rel = unwind as i64 - (image_len + a.len() + 6) as i64;
                a.jcc_rel32(Cond::E, rel as i32);
            }
            a.ret();
            at
        };
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
            while !(image_len + a.len()).is_multiple_of(8) {
                a.int3();
            }
            table = image_len + a.len();
            for e in entries {
                abs_slots.push((image_len + a.len(), e));
                a.imm64(0);
            }
        }
        Ok(Stubs { code: a.code, unwind, abort, table, tramps, abs_slots, ret_thunk, rcx_thunk })
    }
}

struct Stubs {
    code: Vec<u8>,
    unwind: usize,
    abort: usize,
    table: usize,
    tramps: std::collections::BTreeMap<u64, usize>,
    abs_slots: Vec<(usize, usize)>,
    ret_thunk: usize,
    rcx_thunk: usize,
}

fn src_as_dst(i: &Insn, pc: usize) -> Result<Reg, JitError> {
    // load-acquire writes src_reg? No: BPF_LOAD_ACQ is `dst = *(src + off)`.
    reg(pc, i.dst)
}

/// Compile `insns` (a program with its subprograms, as `kops_object::Program::insns`).
pub fn compile(insns: &[Insn], opts: &JitOptions, res: &dyn Resolver) -> Result<JitImage, JitError> {
    compile_with(insns, &[], opts, res)
}

/// Compile `insns` where each [`crate::NativeRegion`] (a kinsn site's proof sequence in a
/// lowered program) is replaced by its native bytes: they are emitted at the region's
/// first slot and the region's other slots produce nothing. Jumps from outside a region
/// may only target its first slot or the slot after it (the lowering guarantees it).
pub fn compile_with(
    insns: &[Insn],
    regions: &[crate::NativeRegion],
    opts: &JitOptions,
    res: &dyn Resolver,
) -> Result<JitImage, JitError> {
    if insns.is_empty() {
        return Err(JitError::Other("empty program".into()));
    }
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
    if opts.div_fixups {
        // Programs from outside the kernel: r11 (BPF_REG_AX) is the JIT's, not theirs.
        let second = fixup::second_slots(insns);
        for (pc, i) in insns.iter().enumerate() {
            if second[pc] {
                continue;
            }
            let sidecar = i.code == op::ALU64 | op::MOV | op::K && i.src == op::PSEUDO_KINSN_SIDECAR;
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
    }
    let (prog_insns, orig, start_of) = if opts.div_fixups {
        let e = fixup::expand(insns).map_err(|(pc, m)| JitError::Insn { pc, msg: m })?;
        (e.insns, e.orig, e.start)
    } else {
        (insns.to_vec(), (0..insns.len()).collect(), (0..insns.len()).collect::<Vec<usize>>())
    };
    // Regions in expanded coordinates: slot -> (slots covered, bytes).
    let mut native: std::collections::BTreeMap<usize, (usize, Vec<u8>)> = Default::default();
    for r in regions {
        let s = start_of[r.start];
        let e = start_of.get(r.start + r.len).copied().unwrap_or(prog_insns.len());
        native.insert(s, (e - s, r.code.clone()));
    }
    let second = fixup::second_slots(&prog_insns);
    // Function starts: slot 0 and every bpf-to-bpf call / function-pointer target.
    let mut starts = vec![0usize];
    for (pc, i) in prog_insns.iter().enumerate() {
        if second[pc] {
            continue;
        }
        if i.is_pseudo_call() || (i.is_ld_imm64() && i.src == op::PSEUDO_FUNC) {
            let t = pc as i64 + 1 + i.imm as i64;
            if t < 0 || t as usize >= prog_insns.len() {
                return Err(JitError::Insn { pc: orig[pc], msg: format!("call target {t} outside the program") });
            }
            starts.push(t as usize);
        }
    }
    starts.sort();
    starts.dedup();
    let tail_id = opts.tail_call.map(|t| t.0);
    let uses_tail_call = tail_id.is_some()
        && prog_insns.iter().enumerate().any(|(pc, i)| !second[pc] && i.is_helper_call() && Some(i.imm) == tail_id);
    // Helpers the program calls (resolved now, so an unknown one is reported up front).
    let mut tramp_targets = std::collections::BTreeSet::new();
    for (pc, i) in prog_insns.iter().enumerate() {
        if second[pc] || !i.is_helper_call() || Some(i.imm) == tail_id {
            continue;
        }
        let addr = res.helper(i.imm).ok_or(JitError::Insn { pc: orig[pc], msg: format!("unknown helper {}", i.imm) })?;
        tramp_targets.insert(addr);
    }
    if opts.call_mode != CallMode::Trampoline {
        tramp_targets.clear();
    }
    if let Some((_, crate::TailCallMode::Lookup(f))) = opts.tail_call {
        if uses_tail_call {
            tramp_targets.insert(f);
        }
    }
    let uses_callx = prog_insns.iter().enumerate().any(|(pc, i)| !second[pc] && i.code == op::JMP | op::CALL | op::X);
    let is_callx = |i: &Insn| i.code == op::JMP | op::CALL | op::X;
    let is_ld_abs = |i: &Insn| i.class() == op::LD && matches!(i.mode(), op::ABS | op::IND);
    let uses_ld_abs = opts.ld_abs.is_some() && prog_insns.iter().enumerate().any(|(pc, i)| !second[pc] && is_ld_abs(i));
    if let (true, Some(f), CallMode::Trampoline | CallMode::Rel32) = (uses_ld_abs, opts.ld_abs, opts.call_mode) {
        tramp_targets.insert(f);
    }
    let needs_unwind = uses_ld_abs
        || prog_insns.iter().enumerate().any(|(pc, i)| {
            !second[pc] && ((i.is_helper_call() && Some(i.imm) == opts.unwind_helper) || is_callx(i))
        });
    let mut funcs: Vec<Func> = Vec::new();
    for (fi, &s) in starts.iter().enumerate() {
        let e = starts.get(fi + 1).copied().unwrap_or(prog_insns.len());
        // Native code must not run off a function into the next one (the verifier
        // rejects such programs; unverified ones get this error).
        let mut last = e - 1;
        if last > s && second[last] {
            last -= 1;
        }
        let li = prog_insns[last];
        let ends = li.is_exit() || (li.is_jump() && li.op() == op::JA);
        if !ends {
            return Err(JitError::Insn { pc: orig[last], msg: "the function can run past its last instruction (no exit or jump)".into() });
        }
        let mut used = [false; 4];
        for i in &prog_insns[s..e] {
            for r in [i.dst, i.src] {
                if (6..=9).contains(&r) {
                    used[(r - 6) as usize] = true;
                }
            }
        }
        let depth = opts.stack_depth.unwrap_or_else(|| stack::stack_depth(&prog_insns, s, e, &second, opts.verified));
        let n = e - s;
        funcs.push(Func {
            start: s,
            end: e,
            is_subprog: fi > 0,
            depth,
            callee_used: used,
            tail_call_reachable: uses_tail_call,
            addrs: (0..=n as i64).map(|k| (k + 1) * 64).collect(),
            cleanup_addr: (n as i64 + 1) * 64,
            tail_call_label: 0,
            tail_call_direct_label: 0,
            prologue_len: 0,
            proglen: 0,
        });
    }
    // tail_call_reachable, as the verifier computes it: a function that does a tail call,
    // and every function that (transitively) calls one; the others keep the plain prologue.
    if uses_tail_call {
        let func_of = |pc: usize| funcs.iter().position(|f| f.start <= pc && pc < f.end).unwrap_or(0);
        let mut tcr: Vec<bool> = funcs
            .iter()
            .map(|f| (f.start..f.end).any(|pc| !second[pc] && prog_insns[pc].is_helper_call() && Some(prog_insns[pc].imm) == tail_id))
            .collect();
        let mut calls: Vec<Vec<usize>> = vec![Vec::new(); funcs.len()];
        for (fi, f) in funcs.iter().enumerate() {
            for pc in f.start..f.end {
                let i = prog_insns[pc];
                if !second[pc] && i.is_pseudo_call() {
                    calls[fi].push(func_of((pc as i64 + 1 + i.imm as i64) as usize));
                }
            }
        }
        loop {
            let mut changed = false;
            for fi in 0..funcs.len() {
                if !tcr[fi] && calls[fi].iter().any(|&g| tcr[g]) {
                    tcr[fi] = true;
                    changed = true;
                }
            }
            if !changed {
                break;
            }
        }
        for (f, t) in funcs.iter_mut().zip(tcr) {
            f.tail_call_reachable = t;
        }
    }
    let p = Program {
        insns: &prog_insns,
        native,
        second,
        orig: orig.clone(),
        opts,
        res,
        needs_unwind,
        main_callee: funcs[0].callee_used,
        main_depth: funcs[0].depth,
        main_tcr: funcs[0].tail_call_reachable,
    };
    let mut out = Out { relocs: Vec::new() };
    let sizing = Layout {
        final_pass: false,
        func_base: 0,
        func_at: vec![],
        unwind_stub: 0,
        abort_stub: 0,
        callx_table: 0,
        tramps: Default::default(),
        ret_thunk: 0,
        rcx_thunk: 0,
    };
    let mut max_passes = 0;
    for f in funcs.iter_mut() {
        let mut old = usize::MAX;
        let mut padding = false;
        let mut pass = 0;
        loop {
            if pass >= MAX_PASSES + 5 {
                return Err(JitError::NoConvergence { passes: pass });
            }
            if !padding && pass >= PADDING_PASSES {
                padding = true;
            }
            let code = p.do_jit(f, &sizing, padding, &mut out)?;
            pass += 1;
            if code.len() == old {
                break;
            }
            old = code.len();
        }
        f.proglen = old;
        max_passes = max_passes.max(pass);
    }
    // Lay out: functions back to back, then the stubs.
    let mut func_at = vec![None; prog_insns.len()];
    let mut off = 0;
    let mut bases = Vec::new();
    for f in &funcs {
        func_at[f.start] = Some(off);
        bases.push(off);
        off += f.proglen;
    }
    let tt: Vec<u64> = tramp_targets.into_iter().collect();
    let st = p.stubs(off, &tt, if uses_callx { opts.callx_helpers } else { None })?;
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
        let c = p.do_jit(f, &lay, true, &mut out)?;
        if c.len() != f.proglen {
            return Err(JitError::Other(format!("function at slot {}: final pass size {} != {}", orig[f.start], c.len(), f.proglen)));
        }
        code.extend_from_slice(&c);
    }
    code.extend_from_slice(&st.code);
    let abs_slots = st.abs_slots;
    // Per original slot: native range (empty, at the previous end, for data slots).
    let mut ranges: Vec<Option<(u32, u32)>> = vec![None; insns.len()];
    for (fi, f) in funcs.iter().enumerate() {
        let base = bases[fi] as i64;
        for k in 0..(f.end - f.start) {
            let pc = f.start + k;
            if p.second[pc] {
                continue;
            }
            let (s, e) = ((base + f.addrs[k]) as u32, (base + f.addrs[k + 1]) as u32);
            let r = ranges[orig[pc]].get_or_insert((s, e));
            r.0 = r.0.min(s);
            r.1 = r.1.max(e);
        }
    }
    let mut insn_ranges = Vec::with_capacity(insns.len());
    let mut prev_end = 0;
    for r in ranges {
        let r = r.unwrap_or((prev_end, prev_end));
        prev_end = r.1;
        insn_ranges.push(r);
    }
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
    Ok(JitImage { code, funcs: layouts, insn_ranges, relocs: out.relocs, abs_slots, passes: max_passes })
}
