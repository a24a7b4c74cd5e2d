//! abs: `dst = |src|` (wrapping: the most negative value stays itself), 64-bit or, with
//! `alu32`, of the low half (zero-extended). clang's branch-free `abs()`/`labs()` and
//! `x < 0 ? -x : x`.
//!
//! Payload: [3:0] dst, [7:4] src, [11:8] tmp, [12] alu32; tmp differs from dst and src
//! (dst == src is allowed).
//!
//! Proof (exactly what clang emits, ALU32 with `alu32`, W = 32 or 64):
//! ```text
//! tmp = src
//! tmp s>>= W-1          the sign mask: 0 or all ones
//! dst = src             if dst != src
//! dst ^= tmp
//! dst -= tmp
//! ```
//! x86-64: `mov dst, src; neg dst; cmovs dst, src` (with dst == src: `neg` a copy in the
//! scratch register and `cmovns` it back), plus `mov tmp, src; sar tmp, W-1` first when tmp
//! is live after the site.

use kops_isa::{op, Insn};
use kops_kinsn::payload::field_err;
use kops_kinsn::{EmitError, Emitted, PayloadError, X86EmitCtx};
use kops_x86::{Cond, Shift};

use crate::classes::{assignments, Class};
use crate::fields::Kind;
use crate::{check_eq, w, EInsn, OpInfo};

crate::payload! {
    pub struct Abs {
        dst: u8 = 0, 4, Kind::RegW;
        src: u8 = 4, 4, Kind::Reg;
        tmp: u8 = 8, 4, Kind::RegW;
        /// Of the low 32 bits, zero-extended (ALU32 proof).
        alu32: bool = 12, 1, Kind::Flag;
    }
    // mov + sar (4 + 4), mov + neg + cmov (3 + 3 + 4)
    name "abs", id 15, max_proof 5, max_x86 20;
}

impl Abs {
    fn bits(&self) -> u8 {
        if self.alu32 {
            32
        } else {
            64
        }
    }
}

impl EInsn for Abs {
    fn rules(&self) -> Result<(), PayloadError> {
        if self.tmp == self.dst || self.tmp == self.src {
            return Err(field_err(Self::NAME, "tmp", self.tmp as i64, "a register other than dst and src"));
        }
        Ok(())
    }

    fn classes() -> Vec<Class<Self>> {
        let mut v = vec![];
        for a in assignments(&[true, false, true]) {
            for alu32 in [false, true] {
                let label = format!("dst r{} src r{} tmp r{}{}", a[0], a[1], a[2], if alu32 { " (alu32)" } else { "" });
                v.push(Class::new(label, Abs::new(a[0], a[1], a[2], alu32), vec![a[2]]));
            }
        }
        Class::collect(v)
    }

    fn proof(&self) -> Vec<Insn> {
        type Reg3 = fn(u8, u8, u8) -> Insn;
        type Imm3 = fn(u8, u8, i32) -> Insn;
        let (alu_r, alu_i): (Reg3, Imm3) =
            if self.alu32 { (Insn::alu32_reg, Insn::alu32_imm) } else { (Insn::alu64_reg, Insn::alu64_imm) };
        let (d, s, t) = (self.dst, self.src, self.tmp);
        let mut v = vec![alu_r(op::MOV, t, s), alu_i(op::ARSH, t, self.bits() as i32 - 1)];
        if d != s {
            v.push(alu_r(op::MOV, d, s));
        }
        v.push(alu_r(op::XOR, d, t));
        v.push(alu_r(op::SUB, d, t));
        v
    }

    fn describe(&self) -> String {
        let r = if self.alu32 { "w" } else { "r" };
        format!("{r}{} = abs{}({r}{}) [tmp {r}{} = {r}{} s>> {}]", self.dst, self.bits(), self.src, self.tmp, self.src, self.bits() - 1)
    }

    fn emit_x86(&self, ctx: &mut X86EmitCtx) -> Result<Emitted, EmitError> {
        let wd = w(!self.alu32);
        let (d, s) = (ctx.reg(self.dst), ctx.reg(self.src));
        // tmp first: it reads src, which dst may be.
        if ctx.live(self.tmp) {
            let t = ctx.reg(self.tmp);
            ctx.asm.mov_rr(wd, t, s);
            ctx.asm.shift_ri(Shift::Sar, wd, t, self.bits() - 1);
        }
        if d != s {
            // -src is negative (src > 0, or the most negative value): keep src.
            ctx.asm.mov_rr(wd, d, s);
            ctx.asm.neg(wd, d);
            ctx.asm.cmov(Cond::S, wd, d, s);
        } else {
            let x = ctx.scratch;
            ctx.asm.mov_rr(wd, x, s);
            ctx.asm.neg(wd, x);
            // A 32-bit cmov zero-extends dst even when it does not move: the ALU32 proof
            // writes dst zero-extended either way.
            ctx.asm.cmov(Cond::Ns, wd, d, x);
        }
        Ok(Emitted::Native)
    }

    fn writes(&self) -> Vec<u8> {
        vec![self.dst, self.tmp]
    }

    fn meaning(&self, b: &[u64; 11], _: &[u8], _: u64, a: &[u64; 11], _: &[u8]) -> Result<(), String> {
        let s = b[self.src as usize];
        let (abs, mask) = if self.alu32 {
            let x = s as u32 as i32;
            (x.wrapping_abs() as u32 as u64, (x >> 31) as u32 as u64)
        } else {
            let x = s as i64;
            (x.wrapping_abs() as u64, (x >> 63) as u64)
        };
        check_eq("dst", a[self.dst as usize], abs)?;
        check_eq("tmp", a[self.tmp as usize], mask)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kops_kinsn::payload::Payload;

    #[test]
    fn payload_bits_and_proof_by_hand() {
        // dst r9, src r2, tmp r3, alu32: 0x9 | 0x2 << 4 | 0x3 << 8 | 1 << 12 = 0x1329
        let p = Abs::new(9, 2, 3, true).unwrap();
        assert_eq!(p.encode().unwrap(), 0x1329);
        assert_eq!(Abs::decode(0x1329).unwrap(), p);
        // clang-19 (select_clamp): w3 = w2; w3 s>>= 31; w9 = w2; w9 ^= w3; w9 -= w3
        let text = "mov32 %r3, %r2\narsh32 %r3, 31\nmov32 %r9, %r2\nxor32 %r9, %r3\nsub32 %r9, %r3";
        assert_eq!(p.proof(), kops_isa::asm::assemble(text).unwrap());
        assert!(Abs::new(9, 2, 9, false).is_err());
        assert!(Abs::new(9, 2, 2, false).is_err());
        assert!(Abs::decode(1 << 13 | 0x329).is_err());
    }
}
