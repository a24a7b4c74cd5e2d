//! `JMP`/`JMP32` jumps and `exit`: one native jump per eBPF jump, short when the offset of
//! the previous pass allows (the kernel's `is_imm8_jmp_offset`), with the kernel's padding
//! rule in the padding passes.

use kops_isa::decode::JCOND;
use kops_isa::op;
use kops_x86::{is_simm32, Alu, Cond, Mem, Reg, Size, Width};

use super::call::may_goto_slot;
use super::{cond_of, Cx};
use crate::{JitError, AUX_REG, UNWIND_REG};


/// Signed 8-bit jump offsets only up to 123, as the kernel's `is_imm8_jmp_offset` (a
/// bigger limit can keep the convergence loop from terminating).
fn is_imm8_jmp(v: i64) -> bool {
    (-128..=123).contains(&v)
}

impl Cx<'_> {
    /// `exit`: the first one is the epilogue (`cleanup_addr`), later ones jump to it.
    pub(super) fn emit_exit(&mut self) {
        if self.f.seen_exit {
            let off = self.f.cleanup_addr - self.f.addrs[self.k + 1];
            self.emit_jmp(off);
            return;
        }
        self.f.seen_exit = true;
        self.f.cleanup_addr = self.start;
        if self.p.needs_unwind && !self.f.is_subprog {
            self.a.pop(UNWIND_REG);
        }
        super::call::pop_callee(&self.f.callee_used, &mut self.a);
        self.a.leave();
        if self.opts().return_thunk {
            let rel = self.rel(5, |l| Ok(l.ret_thunk)).unwrap_or(0);
            self.a.jmp_rel32(rel);
        } else {
            self.a.ret();
        }
    }

    /// `ja` and the conditional jumps.
    pub(super) fn emit_jump(&mut self) -> Result<(), JitError> {
        let i = self.i;
        let opc = i.op();
        if opc == op::JA {
            if i.source() == op::X {
                return Err(self.unsupported("indirect jump (gotox)"));
            }
            let rel = i.jump_offset();
            let off = if rel == -1 { -2 } else { self.jump_off(self.local_target(rel)?) };
            if off == 0 {
                // `ja +0` vanishes (padded back to its old size in the padding passes).
                if self.padding {
                    self.a.nops(self.prev_len.max(0) as usize);
                }
            } else {
                self.emit_jmp(off);
            }
            return Ok(());
        }
        let cc = if opc == JCOND && i.class() == op::JMP {
            // may_goto: the function's counter (below its frame, set by the prologue)
            // counts down; once it is 0 the jump is taken and it stays 0. With r11:
            // `sub 1` borrows exactly when it was 0, `adc 0` undoes that borrow (and
            // carries exactly then), the store keeps the flags.
            let slot = Mem::new(Reg::Rbp, -may_goto_slot(self.f.depth));
            self.a.load(Size::S64, AUX_REG, slot);
            self.a.alu_ri8(Alu::Sub, Width::W64, AUX_REG, 1);
            self.a.alu_ri8(Alu::Adc, Width::W64, AUX_REG, 0);
            self.a.store(Size::S64, slot, AUX_REG);
            Cond::B
        } else {
            let cc = cond_of(opc).ok_or_else(|| self.unsupported(format!("jump opcode {:#04x}", i.code)))?;
            let jw = Width::from_is64(i.class() == op::JMP);
            let dst = self.reg(i.dst)?;
            if i.source() == op::X {
                let src = self.reg(i.src)?;
                if opc == op::JSET {
                    self.a.test_rr(jw, dst, src);
                } else {
                    self.a.cmp_rr(jw, dst, src);
                }
            } else if opc == op::JSET {
                self.a.test_ri(jw, dst, i.imm);
            } else if i.imm == 0 {
                self.a.test_rr(jw, dst, dst);
            } else {
                self.a.cmp_ri(jw, dst, i.imm);
            }
            cc
        };
        let off = self.jump_off(self.local_target(i.off as i32)?);
        if is_imm8_jmp(off) {
            if self.padding {
                let nops = self.prev_len - self.a.len() as i64 - 2;
                if nops != 0 && nops != 4 {
                    return Err(self.err(format!("unexpected jcc padding {nops}")));
                }
                self.a.nops(nops as usize);
            }
            self.a.jcc_rel8(cc, off as i8);
        } else if is_simm32(off) {
            self.a.jcc_rel32(cc, off as i32);
        } else {
            return Err(self.err("jump offset overflow"));
        }
        Ok(())
    }

    /// `emit_jmp`: short when the offset allows, with the kernel's padding rule.
    fn emit_jmp(&mut self, off: i64) {
        if is_imm8_jmp(off) {
            if self.padding {
                let nops = self.prev_len - self.a.len() as i64 - 2;
                if nops > 0 {
                    self.a.nops(nops as usize);
                }
            }
            self.a.jmp_rel8(off as i8);
        } else {
            self.a.jmp_rel32(off as i32);
        }
    }
}
