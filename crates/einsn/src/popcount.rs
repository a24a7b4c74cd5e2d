//! popcount64 / popcount32: the branch-free shift/mask/multiply population count.
//!
//! popcount64 payload: [3:0] dst, [7:4] src, [11:8] t1, [15:12] t2; dst, t1, t2 distinct,
//! src may be any of them (it is read first). Proof (clang's `__builtin_popcountll`
//! expansion, arranged so the temporaries end as constants: t1 = 0x0f0f..0f,
//! t2 = 0x0101..01):
//! ```text
//! dst = src                      if dst != src
//! t2 = dst; t2 >>= 1; t1 = 0x5555555555555555 ll; t2 &= t1; dst -= t2
//! t1 = 0x3333333333333333 ll; t2 = dst; t2 >>= 2; t2 &= t1; dst &= t1; dst += t2
//! t2 = dst; t2 >>= 4; dst += t2
//! t1 = 0x0f0f0f0f0f0f0f0f ll; dst &= t1
//! t2 = 0x0101010101010101 ll; dst *= t2; dst >>= 56
//! ```
//! popcount32 payload: [3:0] dst, [7:4] src, [11:8] tmp; dst != tmp. Proof: the same with
//! ALU32 operations and 32-bit immediates (clang's `__builtin_popcount`), tmp ending as
//! 0x01010101.
//!
//! x86-64: `popcnt` (needs POPCNT, else fallback), then the temporaries' final constants
//! for those that are live after the site.

use kops_isa::{op, Insn};
use kops_kinsn::payload::field_err;
use kops_kinsn::{EmitError, Emitted, PayloadError, X86EmitCtx};
use kops_x86::{Alu, Feature, Width};

use crate::classes::{assignments, Class};
use crate::fields::Kind;
use crate::{EInsn, OpInfo};

pub(crate) const M1: u64 = 0x5555_5555_5555_5555;
pub(crate) const M2: u64 = 0x3333_3333_3333_3333;
pub(crate) const M4: u64 = 0x0f0f_0f0f_0f0f_0f0f;
pub(crate) const H01: u64 = 0x0101_0101_0101_0101;

/// `popcnt` of eBPF `src` into `dst` at width `w`; false (nothing emitted) when the CPU
/// lacks POPCNT.
fn emit_popcnt(ctx: &mut X86EmitCtx, w: Width, dst: u8, src: u8) -> bool {
    if !ctx.features.has(Feature::Popcnt) {
        return false;
    }
    let (d, s) = (ctx.reg(dst), ctx.reg(src));
    // popcnt has a false dependency on its destination on many Intel cores.
    if d != s {
        ctx.asm.alu_rr(Alu::Xor, Width::W32, d, d);
    }
    ctx.asm.popcnt(w, d, s);
    true
}

crate::payload! {
    pub struct Popcount64 {
        dst: u8 = 0, 4, Kind::RegW;
        src: u8 = 4, 4, Kind::Reg;
        t1: u8 = 8, 4, Kind::RegW;
        t2: u8 = 12, 4, Kind::RegW;
    }
    name "popcount64", id 8, max_proof 24, max_x86 32;
}

impl EInsn for Popcount64 {
    fn rules(&self) -> Result<(), PayloadError> {
        if self.t1 == self.dst {
            return Err(field_err(Self::NAME, "t1", self.t1 as i64, "a register other than dst"));
        }
        if self.t2 == self.dst || self.t2 == self.t1 {
            return Err(field_err(Self::NAME, "t2", self.t2 as i64, "a register other than dst and t1"));
        }
        Ok(())
    }

    fn classes() -> Vec<Class<Self>> {
        let mut v = vec![];
        for a in assignments(&[true, false, true, true]) {
            let label = format!("dst r{} src r{} t1 r{} t2 r{}", a[0], a[1], a[2], a[3]);
            let temps = [a[2], a[3]].into_iter().filter(|&t| t != a[0]).collect();
            v.push(Class::new(label, Popcount64::new(a[0], a[1], a[2], a[3]), temps));
        }
        Class::collect(v)
    }

    fn proof(&self) -> Vec<Insn> {
        let (d, t1, t2) = (self.dst, self.t1, self.t2);
        let mut v = Vec::with_capacity(24);
        let ld = |v: &mut Vec<Insn>, r: u8, imm: u64| v.extend(Insn::ld_imm64(r, 0, imm));
        if d != self.src {
            v.push(Insn::mov64_reg(d, self.src));
        }
        v.push(Insn::mov64_reg(t2, d));
        v.push(Insn::alu64_imm(op::RSH, t2, 1));
        ld(&mut v, t1, M1);
        v.push(Insn::alu64_reg(op::AND, t2, t1));
        v.push(Insn::alu64_reg(op::SUB, d, t2));
        ld(&mut v, t1, M2);
        v.push(Insn::mov64_reg(t2, d));
        v.push(Insn::alu64_imm(op::RSH, t2, 2));
        v.push(Insn::alu64_reg(op::AND, t2, t1));
        v.push(Insn::alu64_reg(op::AND, d, t1));
        v.push(Insn::alu64_reg(op::ADD, d, t2));
        v.push(Insn::mov64_reg(t2, d));
        v.push(Insn::alu64_imm(op::RSH, t2, 4));
        v.push(Insn::alu64_reg(op::ADD, d, t2));
        ld(&mut v, t1, M4);
        v.push(Insn::alu64_reg(op::AND, d, t1));
        ld(&mut v, t2, H01);
        v.push(Insn::alu64_reg(op::MUL, d, t2));
        v.push(Insn::alu64_imm(op::RSH, d, 56));
        v
    }

    fn describe(&self) -> String {
        format!("r{} = popcount64(r{}) [r{} = {M4:#x}, r{} = {H01:#x}]", self.dst, self.src, self.t1, self.t2)
    }

    fn x86_features(&self) -> Vec<&'static str> {
        vec!["popcnt"]
    }

    fn emit_x86(&self, ctx: &mut X86EmitCtx) -> Result<Emitted, EmitError> {
        if !emit_popcnt(ctx, Width::W64, self.dst, self.src) {
            return Ok(Emitted::Fallback("CPU lacks POPCNT"));
        }
        // After src (which may be t1 or t2) has been read.
        if ctx.live(self.t1) {
            let t1 = ctx.reg(self.t1);
            ctx.asm.movabs(t1, M4);
        }
        if ctx.live(self.t2) {
            let t2 = ctx.reg(self.t2);
            ctx.asm.movabs(t2, H01);
        }
        Ok(Emitted::Native)
    }

    fn writes(&self) -> Vec<u8> {
        vec![self.dst, self.t1, self.t2]
    }
    fn meaning(&self, b: &[u64; 11], _: &[u8], _: u64, a: &[u64; 11], _: &[u8]) -> Result<(), String> {
        crate::check_eq("dst", a[self.dst as usize], b[self.src as usize].count_ones() as u64)?;
        crate::check_eq("t1", a[self.t1 as usize], 0x0f0f_0f0f_0f0f_0f0f)?;
        crate::check_eq("t2", a[self.t2 as usize], 0x0101_0101_0101_0101)
    }
}

crate::payload! {
    pub struct Popcount32 {
        dst: u8 = 0, 4, Kind::RegW;
        src: u8 = 4, 4, Kind::Reg;
        tmp: u8 = 8, 4, Kind::RegW;
    }
    name "popcount32", id 9, max_proof 17, max_x86 16;
}

impl EInsn for Popcount32 {
    fn rules(&self) -> Result<(), PayloadError> {
        if self.tmp == self.dst {
            return Err(field_err(Self::NAME, "tmp", self.tmp as i64, "a register other than dst"));
        }
        Ok(())
    }

    fn classes() -> Vec<Class<Self>> {
        let mut v = vec![];
        for a in assignments(&[true, false, true]) {
            let label = format!("dst r{} src r{} tmp r{}", a[0], a[1], a[2]);
            let temps = if a[2] != a[0] { vec![a[2]] } else { vec![] };
            v.push(Class::new(label, Popcount32::new(a[0], a[1], a[2]), temps));
        }
        Class::collect(v)
    }

    fn proof(&self) -> Vec<Insn> {
        let (d, t) = (self.dst, self.tmp);
        let i = |opc, r, imm: u32| Insn::alu32_imm(opc, r, imm as i32);
        let r = |opc, a, b| Insn::alu32_reg(opc, a, b);
        let mut v = Vec::with_capacity(17);
        if d != self.src {
            v.push(r(op::MOV, d, self.src));
        }
        v.extend([
            r(op::MOV, t, d),
            i(op::RSH, t, 1),
            i(op::AND, t, M1 as u32),
            r(op::SUB, d, t),
            r(op::MOV, t, d),
            i(op::RSH, t, 2),
            i(op::AND, t, M2 as u32),
            i(op::AND, d, M2 as u32),
            r(op::ADD, d, t),
            r(op::MOV, t, d),
            i(op::RSH, t, 4),
            r(op::ADD, d, t),
            i(op::AND, d, M4 as u32),
            i(op::MOV, t, H01 as u32),
            r(op::MUL, d, t),
            i(op::RSH, d, 24),
        ]);
        v
    }

    fn describe(&self) -> String {
        format!("w{} = popcount32(w{}) [w{} = {:#x}]", self.dst, self.src, self.tmp, H01 as u32)
    }

    fn x86_features(&self) -> Vec<&'static str> {
        vec!["popcnt"]
    }

    fn emit_x86(&self, ctx: &mut X86EmitCtx) -> Result<Emitted, EmitError> {
        if !emit_popcnt(ctx, Width::W32, self.dst, self.src) {
            return Ok(Emitted::Fallback("CPU lacks POPCNT"));
        }
        if ctx.live(self.tmp) {
            let t = ctx.reg(self.tmp);
            ctx.asm.mov_r32_imm32(t, H01 as u32);
        }
        Ok(Emitted::Native)
    }

    fn writes(&self) -> Vec<u8> {
        vec![self.dst, self.tmp]
    }
    fn meaning(&self, b: &[u64; 11], _: &[u8], _: u64, a: &[u64; 11], _: &[u8]) -> Result<(), String> {
        crate::check_eq("dst", a[self.dst as usize], (b[self.src as usize] as u32).count_ones() as u64)?;
        crate::check_eq("tmp", a[self.tmp as usize], 0x0101_0101)
    }
}

