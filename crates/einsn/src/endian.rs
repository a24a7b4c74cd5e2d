//! endian_load16/32/64: `dst = bswap(load(base + off))`, zero-extended.
//!
//! Payload: [3:0] dst, [7:4] base, [23:8] off (signed 16 bits). dst == base is allowed.
//!
//! Proof: `dst = *(uN *)(base + off); dst = beN dst` (`BPF_END|BPF_TO_BE`: on a
//! little-endian machine a byte swap of the low N bits that zeroes the rest).
//!
//! x86-64: `movbe` where the CPU has MOVBE, else `mov` + `bswap` (16 bits: `movzx` +
//! `rol r16, 8`). The 16-bit `movbe` writes only the low word, so it is followed by
//! `movzx r32, r16`.

use kops_isa::{op, Insn};
use kops_kinsn::{EmitError, Emitted, X86EmitCtx};
use kops_x86::{Feature, Mem, Size, Width};

use crate::classes::{assignments, Class};
use crate::fields::Kind;
use crate::EInsn;

crate::payload! {
    pub struct EndianLoad<const BYTES: u8> {
        dst: u8 = 0, 4, Kind::RegW;
        base: u8 = 4, 4, Kind::Reg;
        off: i16 = 8, 16, Kind::Signed;
    }
    name match BYTES { 2 => "endian_load16", 4 => "endian_load32", _ => "endian_load64" },
    id match BYTES { 2 => 5, 4 => 6, _ => 7 },
    max_proof 2, max_x86 16;
}

pub type EndianLoad16 = EndianLoad<2>;
pub type EndianLoad32 = EndianLoad<4>;
pub type EndianLoad64 = EndianLoad<8>;

impl<const BYTES: u8> EndianLoad<BYTES> {
    fn size(&self) -> Size {
        Size::from_bytes(BYTES as usize).expect("2, 4 or 8")
    }
}

impl<const BYTES: u8> EInsn for EndianLoad<BYTES> {
    fn classes() -> Vec<Class<Self>> {
        let mut v = vec![];
        for a in assignments(&[true, false]) {
            for off in [0i16, 14, -8, i16::MAX, i16::MIN] {
                v.push(Class::new(format!("dst r{} base r{} off {off}", a[0], a[1]), Self::new(a[0], a[1], off), vec![]));
            }
        }
        Class::collect(v)
    }

    fn proof(&self) -> Vec<Insn> {
        vec![
            Insn::ldx(op::size_of_bytes(BYTES as usize), self.dst, self.base, self.off),
            Insn::new(op::ALU | op::END | op::TO_BE, self.dst, 0, 0, BYTES as i32 * 8),
        ]
    }

    fn describe(&self) -> String {
        format!("r{} = be{}(*(u{} *)(r{} {:+}))", self.dst, BYTES * 8, BYTES * 8, self.base, self.off)
    }

    fn emit_x86(&self, ctx: &mut X86EmitCtx) -> Result<Emitted, EmitError> {
        let (d, b) = (ctx.reg(self.dst), ctx.reg(self.base));
        let m = Mem::new(b, self.off as i32);
        let movbe = ctx.features.has(Feature::Movbe);
        let a = &mut ctx.asm;
        match (BYTES, movbe) {
            (2, true) => {
                a.movbe_load(Size::S16, d, m);
                a.movzx_rr(Width::W32, Size::S16, d, d);
            }
            (2, false) => {
                a.movzx_load32(Size::S16, d, m);
                a.rol16_ri(d, 8);
            }
            (_, true) => a.movbe_load(self.size(), d, m),
            (_, false) => {
                a.load(self.size(), d, m);
                a.bswap(if BYTES == 8 { Width::W64 } else { Width::W32 }, d);
            }
        }
        Ok(Emitted::Native)
    }

    fn place(&self, pick: &mut dyn FnMut(i64, i64) -> i64, r: &mut [u64; 11], base: u64, buf: usize) {
        let pos = pick(0, (buf - BYTES as usize) as i64) as u64;
        r[self.base as usize] = base.wrapping_add(pos).wrapping_sub(self.off as i64 as u64);
    }
    fn writes(&self) -> Vec<u8> {
        vec![self.dst]
    }
    fn meaning(&self, b: &[u64; 11], mb: &[u8], base: u64, a: &[u64; 11], _: &[u8]) -> Result<(), String> {
        let o = (b[self.base as usize].wrapping_add(self.off as i64 as u64) - base) as usize;
        let mut x = [0u8; 8];
        x[..BYTES as usize].copy_from_slice(&mb[o..o + BYTES as usize]);
        let v = u64::from_le_bytes(x);
        let want = match BYTES {
            2 => (v as u16).swap_bytes() as u64,
            4 => (v as u32).swap_bytes() as u64,
            _ => v.swap_bytes(),
        };
        crate::check_eq("dst", a[self.dst as usize], want)
    }
}

