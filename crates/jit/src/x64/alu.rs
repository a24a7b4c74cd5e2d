//! `ALU` and `ALU64`: the kernel's lowering of each operation, including its divide and
//! shift register shuffles.

use kops_isa::op;
use kops_x86::{Alu, Feature, Reg, Shift, Size, Width};

use super::{alu_of, shift_of, Cx};
use crate::{JitError, AUX_REG};

impl Cx<'_> {
    pub(super) fn emit_alu(&mut self) -> Result<(), JitError> {
        let i = self.i;
        let is64 = i.class() == op::ALU64;
        let w = Width::from_is64(is64);
        let opc = i.op();
        let imm = i.imm;
        let dst = self.reg(i.dst)?;
        if i.dst == 10 {
            return Err(self.err("write to the frame pointer r10"));
        }
        // The source register, for the operations that read one (NEG and END do not).
        let reads_src = i.source() == op::X && !matches!(opc, op::NEG | op::END);
        let known = matches!(opc, op::ADD | op::SUB | op::AND | op::OR | op::XOR | op::MOV | op::NEG | op::MUL | op::DIV | op::MOD)
            || matches!(opc, op::LSH | op::RSH | op::ARSH | op::END);
        let src = if reads_src && known { Some(self.reg(i.src)?) } else { None };
        match opc {
            op::ADD | op::SUB | op::AND | op::OR | op::XOR => match src {
                Some(src) => self.a.alu_rr(alu_of(opc), w, dst, src),
                None => self.a.alu_ri(alu_of(opc), w, dst, imm),
            },
            op::MOV => self.emit_mov(dst, src)?,
            op::NEG => self.a.neg(w, dst),
            op::MUL => match src {
                Some(src) => self.a.imul_rr(w, dst, src),
                None => self.a.imul_rri(w, dst, dst, imm),
            },
            op::DIV | op::MOD => self.emit_divmod(dst, src),
            op::LSH | op::RSH | op::ARSH => match src {
                None => self.a.shift_ri(shift_of(opc), w, dst, imm as u8),
                Some(src) => self.emit_shift_x(shift_of(opc), w, dst, src),
            },
            op::END => {
                let swap = is64 || i.source() == op::TO_BE;
                let a = &mut self.a;
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
                    _ => return Err(self.err(format!("byte swap of {imm} bits"))),
                }
            }
            _ => return Err(self.unsupported(format!("ALU opcode {:#04x}", i.code))),
        }
        Ok(())
    }

    /// `mov`, `movsx` (`off` 8/16/32), the per-CPU address move (`off` -1, xlated only).
    fn emit_mov(&mut self, dst: Reg, src: Option<Reg>) -> Result<(), JitError> {
        let i = self.i;
        let is64 = i.class() == op::ALU64;
        let w = Width::from_is64(is64);
        let Some(src) = src else {
            if i.src == op::PSEUDO_KINSN_SIDECAR {
                return Err(self.unsupported("kinsn site (lower it first or use the kops runtime)"));
            }
            self.a.mov_imm32(is64, dst, i.imm);
            return Ok(());
        };
        let percpu = self.opts().percpu_off;
        let a = &mut self.a;
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
            (-1, true) if percpu.is_some() => {
                // insn_is_mov_percpu_addr: the kernel's `add dst, gs:[this_cpu_off]`.
                if dst != src {
                    a.mov_rr(Width::W64, dst, src);
                }
                a.add_r_gs_abs32(dst, percpu.unwrap_or(0));
            }
            (o, _) => return Err(self.unsupported(format!("mov with off {o} (arena/percpu casts)"))),
        }
        Ok(())
    }

    /// Shift by a register: BMI2 `shlx`/`shrx`/`sarx` when available (and the count is not
    /// in rcx), else through cl, saving rcx around it.
    fn emit_shift_x(&mut self, sh: Shift, w: Width, dst: Reg, src: Reg) {
        let bmi2 = self.opts().features.has(Feature::Bmi2);
        let a = &mut self.a;
        if bmi2 && src != Reg::Rcx {
            match sh {
                Shift::Shl => a.shlx(w, dst, dst, src),
                Shift::Shr => a.shrx(w, dst, dst, src),
                _ => a.sarx(w, dst, dst, src),
            }
            return;
        }
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
        a.shift_cl(sh, w, d);
        if src != Reg::Rcx {
            if dst == Reg::Rcx {
                a.mov_rr(Width::W64, dst, AUX_REG);
            } else {
                a.pop(Reg::Rcx);
            }
        }
    }

    /// `div`/`mod` (`off` 1: signed) through rax:rdx, saving them around it.
    fn emit_divmod(&mut self, dst: Reg, src: Option<Reg>) {
        let i = self.i;
        let w = Width::from_is64(i.class() == op::ALU64);
        let a = &mut self.a;
        if dst != Reg::Rax {
            a.push(Reg::Rax);
        }
        if dst != Reg::Rdx {
            a.push(Reg::Rdx);
        }
        let src = match src {
            Some(src) if src == Reg::Rax || src == Reg::Rdx => {
                a.mov_rr(Width::W64, AUX_REG, src);
                AUX_REG
            }
            Some(src) => src,
            None => {
                a.mov_r64_simm32(AUX_REG, i.imm);
                AUX_REG
            }
        };
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
    }
}
