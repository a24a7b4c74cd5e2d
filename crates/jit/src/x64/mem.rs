//! `LD` (`ld_imm64`, legacy packet loads), `LDX`, `ST`, `STX` and the atomics.

use kops_isa::op;
use kops_x86::{Alu, Cond, Mem, Reg, Size, Width};

use super::{alu_of, size_of, Cx};
use crate::{CallMode, JitError, AUX_REG};

impl Cx<'_> {
    /// `ld_imm64` (two slots), or a legacy packet load.
    pub(super) fn emit_ld(&mut self) -> Result<(), JitError> {
        let i = self.i;
        if !i.is_ld_imm64() {
            return self.emit_ld_abs();
        }
        if self.pc + 1 >= self.f.end {
            return Err(self.err("ld_imm64 without its second slot"));
        }
        let hi = self.p.insns[self.pc + 1];
        let dst = self.reg(i.dst)?;
        let v = if i.src == 0 {
            (hi.imm as u32 as u64) << 32 | i.imm as u32 as u64
        } else {
            self.p.res.ld_imm64(self.p.orig[self.pc], &i, &hi).map_err(|m| self.err(m))?
        };
        self.a.mov_imm64(dst, v);
        self.slots = 2;
        Ok(())
    }

    /// `LD_ABS`/`LD_IND` through the runtime's loader ([`crate::JitOptions::ld_abs`]):
    /// r0 = value; r1..r5 are clobbered (as in the kernel); out of range returns 0 from the
    /// current function.
    fn emit_ld_abs(&mut self) -> Result<(), JitError> {
        let i = self.i;
        let func = self.opts().ld_abs.ok_or_else(|| self.unsupported("legacy packet access (LD_ABS/LD_IND)"))?;
        if !matches!(i.mode(), op::ABS | op::IND) || i.size() == op::DW {
            return Err(self.unsupported(format!("load opcode {:#04x}", i.code)));
        }
        // The offset is computed in 64 bits and used as an int.
        if i.mode() == op::IND {
            let src = self.reg(i.src)?;
            self.a.mov_rr(Width::W64, Reg::Rsi, src);
            self.a.alu_ri(Alu::Add, Width::W64, Reg::Rsi, i.imm);
            self.a.movsx_rr(Width::W64, Size::S32, Reg::Rsi, Reg::Rsi);
        } else {
            self.a.mov_imm64(Reg::Rsi, i.imm as i64 as u64);
        }
        self.a.mov_imm32(false, Reg::Rdi, i.size_bytes() as i32);
        match self.opts().call_mode {
            CallMode::Absolute => {
                self.a.movabs(AUX_REG, func);
                self.a.call_r(AUX_REG);
            }
            _ => {
                let rel = self.rel(5, |l| l.tramps.get(&func).copied().ok_or_else(|| self.err("no trampoline for the packet loader")))?;
                self.a.call_rel32(rel);
            }
        }
        // Out of range: the kernel's expansion (bpf_gen_ld_abs) `w0 ^= w0; exit`, which in a
        // subprogram returns 0 to its caller. Fixed size: jns rel8 over xor (2) + jmp rel32 (5).
        self.a.test_rr(Width::W64, Reg::Rax, Reg::Rax);
        self.a.jcc_rel8(Cond::Ns, 7);
        self.a.alu_rr(Alu::Xor, Width::W32, Reg::Rax, Reg::Rax);
        let end = self.start + self.a.len() as i64 + 5;
        self.a.jmp_rel32((self.f.cleanup_addr - end) as i32);
        Ok(())
    }

    pub(super) fn emit_ldx(&mut self) -> Result<(), JitError> {
        let i = self.i;
        let m = Mem::new(self.reg(i.src)?, i.off as i32);
        let dst = self.reg(i.dst)?;
        match i.mode() {
            op::MEM => self.a.load(size_of(&i), dst, m),
            op::MEMSX if i.size() != op::DW => self.a.load_sx(size_of(&i), dst, m),
            _ => return Err(self.unsupported(format!("load mode {:#04x}", i.code))),
        }
        Ok(())
    }

    pub(super) fn emit_st(&mut self) -> Result<(), JitError> {
        let i = self.i;
        if i.code == op::ST | 0xc0 {
            self.a.lfence(); // BPF_ST | BPF_NOSPEC
            return Ok(());
        }
        if i.mode() != op::MEM {
            return Err(self.unsupported(format!("store mode {:#04x}", i.code)));
        }
        let m = Mem::new(self.reg(i.dst)?, i.off as i32);
        self.a.store_imm(size_of(&i), m, i.imm);
        Ok(())
    }

    pub(super) fn emit_stx(&mut self) -> Result<(), JitError> {
        let i = self.i;
        let m = Mem::new(self.reg(i.dst)?, i.off as i32);
        let src = self.reg(i.src)?;
        match i.mode() {
            op::MEM => self.a.store(size_of(&i), m, src),
            op::ATOMIC => self.emit_atomic()?,
            _ => return Err(self.unsupported(format!("store mode {:#04x}", i.code))),
        }
        Ok(())
    }

    /// `BPF_ATOMIC`: load-acquire/store-release, the `lock`-prefixed read-modify-writes,
    /// and the kernel's cmpxchg loop for fetch-and/or/xor.
    fn emit_atomic(&mut self) -> Result<(), JitError> {
        let i = self.i;
        let size = size_of(&i);
        let dst = self.reg(i.dst)?;
        let src = self.reg(i.src)?;
        let m = Mem::new(dst, i.off as i32);
        const LOAD_ACQ: i32 = 0x100;
        const STORE_REL: i32 = 0x110;
        match i.imm {
            // BPF_LOAD_ACQ is `dst = *(src + off)`.
            LOAD_ACQ => {
                self.a.load(size, dst, Mem::new(src, i.off as i32));
                return Ok(());
            }
            STORE_REL => {
                self.a.store(size, m, src);
                return Ok(());
            }
            _ => {}
        }
        if !matches!(size, Size::S32 | Size::S64) {
            return Err(self.unsupported("1- and 2-byte read-modify-write atomics"));
        }
        let is64 = size == Size::S64;
        let fetch_op = |o: i32| o | op::FETCH;
        let a = &mut self.a;
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
            x => return Err(self.unsupported(format!("atomic operation {x:#x}"))),
        }
        Ok(())
    }
}
