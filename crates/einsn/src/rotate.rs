//! rotate64 / rotate32: `dst = rol(src, k)` with a temporary.
//!
//! Payload: [3:0] dst, [7:4] src, [11:8] tmp, [17:12] k (1..W-1), [18] tmp_lsh.
//!
//! Proof (W = 64 with ALU64, W = 32 with ALU32, which zero-extends every result):
//! ```text
//! dst = src              if dst != src
//! tmp = src              if tmp != src
//! tmp <<= k ; dst >>= W-k     if tmp_lsh
//! tmp >>= W-k ; dst <<= k     otherwise
//! dst |= tmp
//! ```
//! `tmp == src` is allowed (src is then clobbered, as in clang's
//! `r0 = r1; r1 >>= 51; r0 <<= 13; r0 |= r1`); `dst == src` too; `dst != tmp`.
//! A right rotate by `r` is `k = W - r`.

use kops_isa::{op, Insn};
use kops_kinsn::payload::{check_range, field_err};
use kops_kinsn::{EmitError, Emitted, PayloadError, X86EmitCtx};
use kops_x86::{Feature, Shift};

use crate::classes::{assignments, Class};
use crate::fields::Kind;
use crate::{w, EInsn, OpInfo};

crate::payload! {
    pub struct Rotate<const W: u8> {
        dst: u8 = 0, 4, Kind::RegW;
        src: u8 = 4, 4, Kind::Reg;
        tmp: u8 = 8, 4, Kind::RegW;
        /// Left-rotate amount, 1..W-1.
        k: u8 = 12, 6, Kind::Range(1, W as i64 - 1);
        /// `tmp` ends as `src << k` (true) or `src >> (W - k)` (false).
        tmp_lsh: bool = 18, 1, Kind::Flag;
    }
    name if W == 64 { "rotate64" } else { "rotate32" }, id if W == 64 { 1 } else { 2 }, max_proof 5, max_x86 24;
}

pub type Rotate64 = Rotate<64>;
pub type Rotate32 = Rotate<32>;

impl<const W: u8> Rotate<W> {
    /// `dst = ror(src, r)`, i.e. a left rotate by `W - r` (`tmp_lsh` as in [`Rotate::new`]:
    /// `tmp` ends as `src << (W - r)` when true, `src >> r` otherwise).
    pub fn new_right(dst: u8, src: u8, tmp: u8, r: u8, tmp_lsh: bool) -> Result<Self, PayloadError> {
        check_range(Self::NAME, "r", r as i64, 1, W as i64 - 1)?;
        Self::new(dst, src, tmp, W - r, tmp_lsh)
    }
}

impl<const W: u8> EInsn for Rotate<W> {
    fn rules(&self) -> Result<(), PayloadError> {
        if self.dst == self.tmp {
            return Err(field_err(Self::NAME, "tmp", self.tmp as i64, "a register other than dst"));
        }
        Ok(())
    }

    fn classes() -> Vec<Class<Self>> {
        let mk = |d: u8, s: u8, t: u8, k: u8, lsh: bool| {
            let label = format!("dst r{d} src r{s} tmp r{t} k {k}{}", if lsh { " tmp<<" } else { "" });
            Class::new(label, Self::new(d, s, t, k, lsh), if t != d { vec![t] } else { vec![] })
        };
        let mut v = vec![];
        for k in 1..W {
            for lsh in [false, true] {
                v.push(mk(0, 1, 2, k, lsh));
            }
        }
        for a in assignments(&[true, false, true]) {
            for k in [1, W / 2, W - 1] {
                v.push(mk(a[0], a[1], a[2], k, false));
            }
        }
        Class::collect(v)
    }

    fn proof(&self) -> Vec<Insn> {
        type Reg3 = fn(u8, u8, u8) -> Insn;
        type Imm3 = fn(u8, u8, i32) -> Insn;
        let (alu_r, alu_i): (Reg3, Imm3) = if W == 64 {
            (Insn::alu64_reg, Insn::alu64_imm)
        } else {
            (Insn::alu32_reg, Insn::alu32_imm)
        };
        let (d, s, t, k) = (self.dst, self.src, self.tmp, self.k as i32);
        let mut v = Vec::with_capacity(5);
        if d != s {
            v.push(alu_r(op::MOV, d, s));
        }
        if t != s {
            v.push(alu_r(op::MOV, t, s));
        }
        if self.tmp_lsh {
            v.push(alu_i(op::LSH, t, k));
            v.push(alu_i(op::RSH, d, W as i32 - k));
        } else {
            v.push(alu_i(op::RSH, t, W as i32 - k));
            v.push(alu_i(op::LSH, d, k));
        }
        v.push(alu_r(op::OR, d, t));
        v
    }

    fn describe(&self) -> String {
        let part = if self.tmp_lsh { format!("r{} << {}", self.src, self.k) } else { format!("r{} >> {}", self.src, W - self.k) };
        format!("r{} = rol{}(r{}, {}) [tmp r{} = {}]", self.dst, W, self.src, self.k, self.tmp, part)
    }

    fn emit_x86(&self, ctx: &mut X86EmitCtx) -> Result<Emitted, EmitError> {
        let wd = w(W == 64);
        let (d, s, t) = (ctx.reg(self.dst), ctx.reg(self.src), ctx.reg(self.tmp));
        let (tshift, tamt) = if self.tmp_lsh { (Shift::Shl, self.k) } else { (Shift::Shr, W - self.k) };
        let tmp_live = ctx.live(self.tmp);
        // tmp from the original src, before dst (which may be src) changes.
        if tmp_live && t != s {
            ctx.asm.mov_rr(wd, t, s);
            ctx.asm.shift_ri(tshift, wd, t, tamt);
        }
        if d == s {
            ctx.asm.shift_ri(Shift::Rol, wd, d, self.k);
        } else if ctx.features.has(Feature::Bmi2) {
            ctx.asm.rorx(wd, d, s, W - self.k);
        } else {
            ctx.asm.mov_rr(wd, d, s);
            ctx.asm.shift_ri(Shift::Rol, wd, d, self.k);
        }
        // tmp == src (so dst != src): src still holds its original value here.
        if tmp_live && t == s {
            ctx.asm.shift_ri(tshift, wd, t, tamt);
        }
        Ok(Emitted::Native)
    }

    fn writes(&self) -> Vec<u8> {
        vec![self.dst, self.tmp]
    }
    fn meaning(&self, b: &[u64; 11], _: &[u8], _: u64, a: &[u64; 11], _: &[u8]) -> Result<(), String> {
        let s = b[self.src as usize];
        let k = self.k as u32;
        let (rot, l, r) = if W == 64 {
            (s.rotate_left(k), s << k, s >> (64 - k))
        } else {
            let s = s as u32;
            (s.rotate_left(k) as u64, (s << k) as u64, (s >> (32 - k)) as u64)
        };
        crate::check_eq("dst", a[self.dst as usize], rot)?;
        crate::check_eq("tmp", a[self.tmp as usize], if self.tmp_lsh { l } else { r })
    }
}

