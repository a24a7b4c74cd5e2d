//! extract64: `dst = (src >> start) & (2^len - 1)`.
//!
//! Payload: [3:0] dst, [7:4] src, [13:8] start (0..63), [19:14] len (1..32), with
//! start + len <= 64.
//!
//! Proof:
//! ```text
//! dst = src                      if dst != src
//! dst >>= start                  if start > 0
//! dst &= 2^len - 1               if len < 32 (ALU64 AND, positive imm)
//! w(dst) = w(dst)                if len == 32 (mov32 zero-extends; 0xffffffff is not an
//!                                 ALU64 immediate: it would sign-extend to all ones)
//! ```

use kops_isa::{op, Insn};
use kops_kinsn::payload::field_err;
use kops_kinsn::{EmitError, Emitted, PayloadError, X86EmitCtx};
use kops_x86::{Alu, Shift, Size, Width};

use crate::classes::{assignments, Class};
use crate::fields::Kind;
use crate::{EInsn, OpInfo};

crate::payload! {
    pub struct Extract {
        dst: u8 = 0, 4, Kind::RegW;
        src: u8 = 4, 4, Kind::Reg;
        start: u8 = 8, 6, Kind::Range(0, 63);
        len: u8 = 14, 6, Kind::Range(1, 32);
    }
    name "extract64", id 4, max_proof 3, max_x86 16;
}

impl EInsn for Extract {
    fn rules(&self) -> Result<(), PayloadError> {
        if self.start as u32 + self.len as u32 > 64 {
            return Err(field_err(Self::NAME, "len", self.len as i64, format!("start + len <= 64 (start is {})", self.start)));
        }
        Ok(())
    }

    fn classes() -> Vec<Class<Self>> {
        let mut v = vec![];
        for start in 0..64u8 {
            for len in 1..=32u8 {
                v.push(Class::new(format!("dst r0 src r1 start {start} len {len}"), Extract::new(0, 1, start, len), vec![]));
            }
        }
        for a in assignments(&[true, false]) {
            for (start, len) in [(0, 8), (13, 32), (60, 4)] {
                let label = format!("dst r{} src r{} start {start} len {len}", a[0], a[1]);
                v.push(Class::new(label, Extract::new(a[0], a[1], start, len), vec![]));
            }
        }
        Class::collect(v)
    }

    fn proof(&self) -> Vec<Insn> {
        let mut v = Vec::with_capacity(3);
        if self.dst != self.src {
            v.push(Insn::mov64_reg(self.dst, self.src));
        }
        if self.start > 0 {
            v.push(Insn::alu64_imm(op::RSH, self.dst, self.start as i32));
        }
        if self.len < 32 {
            v.push(Insn::alu64_imm(op::AND, self.dst, ((1u32 << self.len) - 1) as i32));
        } else {
            v.push(Insn::alu32_reg(op::MOV, self.dst, self.dst));
        }
        v
    }

    fn describe(&self) -> String {
        format!("r{} = (r{} >> {}) & {:#x}", self.dst, self.src, self.start, (1u64 << self.len) - 1)
    }

    fn emit_x86(&self, ctx: &mut X86EmitCtx) -> Result<Emitted, EmitError> {
        let (d, s) = (ctx.reg(self.dst), ctx.reg(self.src));
        let a = &mut ctx.asm;
        if self.start == 0 {
            // Pure masks of 8/16/32 bits are one zero-extending move.
            match self.len {
                32 => a.mov_rr(Width::W32, d, s),
                16 => a.movzx_rr(Width::W32, Size::S16, d, s),
                8 => a.movzx_rr(Width::W32, Size::S8, d, s),
                len => {
                    if d != s {
                        a.mov_rr(Width::W64, d, s);
                    }
                    a.alu_ri(Alu::And, Width::W32, d, ((1u32 << len) - 1) as i32);
                }
            }
            return Ok(Emitted::Native);
        }
        if d != s {
            a.mov_rr(Width::W64, d, s);
        }
        a.shift_ri(Shift::Shr, Width::W64, d, self.start);
        // After the shift only 64 - start bits remain: no mask needed if they all fit.
        if (self.start as u32 + self.len as u32) < 64 {
            if self.len == 32 {
                a.mov_rr(Width::W32, d, d);
            } else {
                // 32-bit AND: the mask is below 2^31 and the upper half becomes zero.
                a.alu_ri(Alu::And, Width::W32, d, ((1u32 << self.len) - 1) as i32);
            }
        }
        Ok(Emitted::Native)
    }

    fn writes(&self) -> Vec<u8> {
        vec![self.dst]
    }
    fn meaning(&self, b: &[u64; 11], _: &[u8], _: u64, a: &[u64; 11], _: &[u8]) -> Result<(), String> {
        crate::check_eq("dst", a[self.dst as usize], (b[self.src as usize] >> self.start) & ((1u64 << self.len) - 1))
    }
}

