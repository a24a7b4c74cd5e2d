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
use kops_kinsn::payload::{check_range, check_reg, field_err, Fields, Packer, Payload};
use kops_kinsn::{EmitError, Emitted, PayloadError, X86EmitCtx};
use kops_x86::{Alu, Shift, Size, Width};

use crate::{id, EInsn};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Extract {
    pub dst: u8,
    pub src: u8,
    pub start: u8,
    pub len: u8,
}

impl Extract {
    pub fn new(dst: u8, src: u8, start: u8, len: u8) -> Result<Extract, PayloadError> {
        let p = Extract { dst, src, start, len };
        p.check()?;
        Ok(p)
    }
    fn check(&self) -> Result<(), PayloadError> {
        let n = Self::NAME;
        check_reg(n, "dst", self.dst, true)?;
        check_reg(n, "src", self.src, false)?;
        check_range(n, "start", self.start as i64, 0, 63)?;
        check_range(n, "len", self.len as i64, 1, 32)?;
        if self.start as u32 + self.len as u32 > 64 {
            return Err(field_err(n, "len", self.len as i64, format!("start + len <= 64 (start is {})", self.start)));
        }
        Ok(())
    }
}

impl Payload for Extract {
    fn encode(&self) -> Result<u64, PayloadError> {
        self.check()?;
        Ok(Packer::default()
            .put(0, 4, self.dst as u64)
            .put(4, 4, self.src as u64)
            .put(8, 6, self.start as u64)
            .put(14, 6, self.len as u64)
            .finish())
    }
    fn decode(raw: u64) -> Result<Self, PayloadError> {
        let mut f = Fields::new(Self::NAME, raw)?;
        let p = Extract {
            dst: f.uint(0, 4) as u8,
            src: f.uint(4, 4) as u8,
            start: f.uint(8, 6) as u8,
            len: f.uint(14, 6) as u8,
        };
        f.finish()?;
        p.check()?;
        Ok(p)
    }
}

impl EInsn for Extract {
    const NAME: &'static str = "extract64";
    const ID: u32 = id::EXTRACT64;
    const MAX_PROOF: usize = 3;
    const MAX_X86: usize = 16;

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
}
