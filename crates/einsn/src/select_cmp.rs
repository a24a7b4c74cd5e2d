//! select_cmp: `dst = (lhs <cmp> rhs) ? dst : src`, clang's one-sided compare-select.
//!
//! Payload: [3:0] dst, [7:4] lhs, [11:8] rhs, [15:12] src, [19:16] cmp (`BPF_OP >> 4` of a
//! conditional jump: JEQ, JGT, JGE, JSET, JNE, JSGT, JSGE, JLT, JLE, JSLT, JSLE),
//! [20] jmp32, [21] mov32. Any aliasing of dst, lhs, rhs, src is allowed.
//!
//! Proof (exactly what clang emits for min/max/clamp):
//! ```text
//! if lhs <cmp> rhs goto +1   (JMP or JMP32, register operand)
//! dst = src                  (mov or mov32)
//! ```

use kops_isa::{op, Insn};
use kops_kinsn::{EmitError, Emitted, X86EmitCtx};
use kops_x86::{Cond, Width};

use crate::classes::{assignments, Class};
use crate::fields::Kind;
use crate::{w, EInsn};

/// The conditional-jump ops select_cmp accepts (`BPF_OP` values).
pub const CMP_OPS: [u8; 11] =
    [op::JEQ, op::JNE, op::JGT, op::JGE, op::JLT, op::JLE, op::JSGT, op::JSGE, op::JSLT, op::JSLE, op::JSET];

crate::payload! {
    pub struct SelectCmp {
        dst: u8 = 0, 4, Kind::RegW;
        lhs: u8 = 4, 4, Kind::Reg;
        rhs: u8 = 8, 4, Kind::Reg;
        /// `BPF_OP` of the jump (`op::JGT`, ...).
        cmp: u8 = 16, 4, Kind::OneOf(4, &CMP_OPS);
        jmp32: bool = 20, 1, Kind::Flag;
        src: u8 = 12, 4, Kind::Reg;
        mov32: bool = 21, 1, Kind::Flag;
    }
    // cmp (4) + mov r11d (3) + cmov (4)
    name "select_cmp", id 14, max_proof 2, max_x86 16;
}

fn cmp_name(c: u8) -> &'static str {
    match c {
        op::JEQ => "==",
        op::JNE => "!=",
        op::JGT => ">",
        op::JGE => ">=",
        op::JLT => "<",
        op::JLE => "<=",
        op::JSGT => "s>",
        op::JSGE => "s>=",
        op::JSLT => "s<",
        op::JSLE => "s<=",
        op::JSET => "&",
        _ => "?",
    }
}

/// x86 condition under which the jump is taken, after `cmp lhs, rhs` (`test` for JSET).
fn taken_cc(c: u8) -> Cond {
    match c {
        op::JEQ => Cond::E,
        op::JNE | op::JSET => Cond::Ne,
        op::JGT => Cond::A,
        op::JGE => Cond::Ae,
        op::JLT => Cond::B,
        op::JLE => Cond::Be,
        op::JSGT => Cond::G,
        op::JSGE => Cond::Ge,
        op::JSLT => Cond::L,
        _ => Cond::Le, // JSLE; check() admits nothing else
    }
}

impl EInsn for SelectCmp {
    fn classes() -> Vec<Class<Self>> {
        let mut v = vec![];
        // roles: dst, lhs, rhs, src
        for a in assignments(&[true, false, false, false]) {
            for cmp in CMP_OPS {
                for (j32, m32) in [(false, false), (true, false), (false, true), (true, true)] {
                    let (c, m) = (if j32 { "w" } else { "r" }, if m32 { " (mov32)" } else { "" });
                    let label = format!("r{} = ({c}{} op {cmp:#x} {c}{}) ? r{} : r{}{m}", a[0], a[1], a[2], a[0], a[3]);
                    v.push(Class::new(label, SelectCmp::new(a[0], a[1], a[2], cmp, j32, a[3], m32), vec![]));
                }
            }
        }
        Class::collect(v)
    }

    fn proof(&self) -> Vec<Insn> {
        let jcls = if self.jmp32 { op::JMP32 } else { op::JMP };
        let mov = if self.mov32 { Insn::alu32_reg(op::MOV, self.dst, self.src) } else { Insn::alu64_reg(op::MOV, self.dst, self.src) };
        vec![Insn::new(jcls | self.cmp | op::X, self.lhs, self.rhs, 1, 0), mov]
    }

    fn describe(&self) -> String {
        let (c, m) = (if self.jmp32 { "w" } else { "r" }, if self.mov32 { "w" } else { "r" });
        format!(
            "{m}{} = ({c}{} {} {c}{}) ? {m}{} : {m}{}",
            self.dst,
            self.lhs,
            cmp_name(self.cmp),
            self.rhs,
            self.dst,
            self.src
        )
    }

    fn emit_x86(&self, ctx: &mut X86EmitCtx) -> Result<Emitted, EmitError> {
        let (d, l, r, s) = (ctx.reg(self.dst), ctx.reg(self.lhs), ctx.reg(self.rhs), ctx.reg(self.src));
        // Flags first, from the operands as they are before the site (dst may alias them).
        if self.cmp == op::JSET {
            ctx.asm.test_rr(w(!self.jmp32), l, r);
        } else {
            ctx.asm.cmp_rr(w(!self.jmp32), l, r);
        }
        let cc = taken_cc(self.cmp).negate(); // move when the jump is not taken
        if !self.mov32 {
            if d != s {
                ctx.asm.cmov(cc, Width::W64, d, s);
            }
            return Ok(Emitted::Native);
        }
        // A 32-bit cmov zero-extends dst even when it does not move, but the proof leaves
        // dst untouched when the jump is taken: move the zero-extended source through the
        // scratch register with a 64-bit cmov (mov does not touch the flags).
        let t = ctx.scratch;
        ctx.asm.mov_rr(Width::W32, t, s);
        ctx.asm.cmov(cc, Width::W64, d, t);
        Ok(Emitted::Native)
    }

    fn writes(&self) -> Vec<u8> {
        vec![self.dst]
    }
    fn meaning(&self, b: &[u64; 11], _: &[u8], _: u64, a: &[u64; 11], _: &[u8]) -> Result<(), String> {
        use kops_isa::sem;
        let (l, r) = (b[self.lhs as usize], b[self.rhs as usize]);
        let taken = if self.jmp32 { sem::cond32(self.cmp, l as u32, r as u32) } else { sem::cond64(self.cmp, l, r) };
        let taken = taken.ok_or_else(|| format!("unknown cmp {:#x}", self.cmp))?;
        let s = b[self.src as usize];
        let want = if taken { b[self.dst as usize] } else if self.mov32 { s as u32 as u64 } else { s };
        crate::check_eq("dst", a[self.dst as usize], want)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kops_kinsn::payload::Payload;

    #[test]
    fn payload_bits_by_hand() {
        // dst r9, lhs r9, rhs r1, JGT (0x20 -> 2), jmp32, src r1, mov32:
        // 0x9 | 0x9 << 4 | 0x1 << 8 | 0x1 << 12 | 2 << 16 | 1 << 20 | 1 << 21 = 0x321199
        let p = SelectCmp::new(9, 9, 1, op::JGT, true, 1, true).unwrap();
        assert_eq!(p.encode().unwrap(), 0x32_1199);
        assert_eq!(SelectCmp::decode(0x32_1199).unwrap(), p);
        // clang-19: `if w9 > w1 goto +1; w9 = w1` is 0x2e 0x19 0x0100 ..., then 0xbc 0x19.
        let pr = p.proof();
        assert_eq!(pr[0].to_bytes(), [0x2e, 0x19, 1, 0, 0, 0, 0, 0]);
        assert_eq!(pr[1].to_bytes(), [0xbc, 0x19, 0, 0, 0, 0, 0, 0]);
    }

    #[test]
    fn bad_fields_are_named() {
        let err = |r: Result<SelectCmp, kops_kinsn::PayloadError>| r.unwrap_err().to_string();
        assert!(err(SelectCmp::new(10, 1, 2, op::JEQ, false, 3, false)).contains("`dst` = 10"));
        assert!(err(SelectCmp::new(0, 11, 2, op::JEQ, false, 3, false)).contains("`lhs` = 11"));
        assert!(err(SelectCmp::new(0, 1, 12, op::JEQ, false, 3, false)).contains("`rhs` = 12"));
        assert!(err(SelectCmp::new(0, 1, 2, op::JEQ, false, 13, false)).contains("`src` = 13"));
        assert!(err(SelectCmp::new(0, 1, 2, op::JA, false, 3, false)).contains("`cmp` = 0"));
        // JA (0), CALL (8), EXIT (9), 0xe, 0xf in the cmp field; reserved bit 22.
        for c in [0u64, 8, 9, 0xe, 0xf] {
            assert!(SelectCmp::decode(c << 16 | 0x10).is_err(), "cmp {c}");
        }
        assert!(SelectCmp::decode(1 << 22 | 1 << 16).is_err());
        // r10 may be read, not written.
        assert!(SelectCmp::new(0, 10, 10, op::JSET, false, 10, false).is_ok());
    }

    #[test]
    fn registered_with_id_14() {
        let r = crate::registry();
        let o = r.by_name("select_cmp").unwrap();
        assert_eq!(o.id(), 14);
        let raw = SelectCmp::new(3, 4, 5, op::JSLE, false, 6, false).unwrap().encode().unwrap();
        assert_eq!(o.describe(raw).unwrap(), "r3 = (r4 s<= r5) ? r3 : r6");
        assert_eq!(o.instantiate(raw).unwrap().len(), 2);
    }
}
