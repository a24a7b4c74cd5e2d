//! select64: `dst = cond != 0 ? a : b`.
//!
//! Payload: [3:0] dst, [7:4] cond, [11:8] a, [15:12] b, [16] cond32, [17] mov32.
//! `cond32` tests only the low 32 bits of cond (JMP32, as clang's `if w1 == 0`); `mov32`
//! makes the moves 32-bit (dst = zero-extended low half of a or b, as clang's `w0 = w2`).
//! Any aliasing of dst, cond, a, b is allowed.
//!
//! Proof:
//! ```text
//! if cond == 0 goto +2      (JMP or JMP32)
//! dst = a                   (mov or mov32)
//! goto +1
//! dst = b
//! ```

use kops_isa::{op, Insn};
use kops_kinsn::{EmitError, Emitted, X86EmitCtx};
use kops_x86::Cond;

use crate::classes::{assignments, Class};
use crate::fields::Kind;
use crate::{w, EInsn};

crate::payload! {
    pub struct Select {
        dst: u8 = 0, 4, Kind::RegW;
        cond: u8 = 4, 4, Kind::Reg;
        a: u8 = 8, 4, Kind::Reg;
        b: u8 = 12, 4, Kind::Reg;
        cond32: bool = 16, 1, Kind::Flag;
        mov32: bool = 17, 1, Kind::Flag;
    }
    name "select64", id 3, max_proof 4, max_x86 16;
}

impl EInsn for Select {
    fn classes() -> Vec<Class<Self>> {
        let mut v = vec![];
        for a in assignments(&[true, false, false, false]) {
            for (c32, m32) in [(false, false), (true, false), (false, true), (true, true)] {
                let label = format!(
                    "dst r{} = r{}{} ? r{} : r{}{}",
                    a[0], a[1], if c32 { " (w)" } else { "" }, a[2], a[3], if m32 { " (mov32)" } else { "" }
                );
                v.push(Class::new(label, Select::new(a[0], a[1], a[2], a[3], c32, m32), vec![]));
            }
        }
        Class::collect(v)
    }

    fn proof(&self) -> Vec<Insn> {
        let jcls = if self.cond32 { op::JMP32 } else { op::JMP };
        let mov: fn(u8, u8, u8) -> Insn = if self.mov32 { Insn::alu32_reg } else { Insn::alu64_reg };
        vec![
            Insn::new(jcls | op::JEQ | op::K, self.cond, 0, 2, 0),
            mov(op::MOV, self.dst, self.a),
            Insn::ja(1),
            mov(op::MOV, self.dst, self.b),
        ]
    }

    fn describe(&self) -> String {
        let (c, m) = (if self.cond32 { "w" } else { "r" }, if self.mov32 { "w" } else { "r" });
        format!("{m}{} = {c}{} != 0 ? {m}{} : {m}{}", self.dst, self.cond, self.a, self.b)
    }

    fn emit_x86(&self, ctx: &mut X86EmitCtx) -> Result<Emitted, EmitError> {
        let (d, c, a, b) = (ctx.reg(self.dst), ctx.reg(self.cond), ctx.reg(self.a), ctx.reg(self.b));
        let mw = w(!self.mov32);
        if a == b {
            // Both arms move the same register; a 32-bit move still zero-extends.
            if d != a || self.mov32 {
                ctx.asm.mov_rr(mw, d, a);
            }
            return Ok(Emitted::Native);
        }
        // Flags first: cond may be overwritten by the moves below (dst == cond).
        ctx.asm.test_rr(w(!self.cond32), c, c);
        // A 32-bit cmov zero-extends its destination whether or not it moves.
        if d == a {
            ctx.asm.cmov(Cond::E, mw, d, b);
        } else if d == b {
            ctx.asm.cmov(Cond::Ne, mw, d, a);
        } else {
            ctx.asm.mov_rr(mw, d, b);
            ctx.asm.cmov(Cond::Ne, mw, d, a);
        }
        Ok(Emitted::Native)
    }

    fn writes(&self) -> Vec<u8> {
        vec![self.dst]
    }
    fn meaning(&self, b: &[u64; 11], _: &[u8], _: u64, a: &[u64; 11], _: &[u8]) -> Result<(), String> {
        let c = b[self.cond as usize];
        let t = if self.cond32 { c as u32 != 0 } else { c != 0 };
        let v = if t { b[self.a as usize] } else { b[self.b as usize] };
        crate::check_eq("dst", a[self.dst as usize], if self.mov32 { v as u32 as u64 } else { v })
    }
}

