//! memcpy / memset: bulk copies and fills of up to [`MAX_BULK_BYTES`] bytes.
//!
//! memcpy payload: [3:0] dst base, [7:4] src base, [11:8] tmp, [27:12] dst off (i16),
//! [43:28] src off (i16), [45:44] log2 width (1/2/4/8 bytes), [50:46] count - 1 (1..32
//! chunks), [51] descending. count * width <= 128; tmp differs from both bases.
//!
//! Proof: `count` chunks `tmp = *(uW *)(src + src_off + i*W); *(uW *)(dst + dst_off + i*W) =
//! tmp`, for i ascending (or descending: clang copies structs from the last field down).
//! Because each chunk is loaded before it is stored, overlapping regions behave exactly as
//! `rep movs` with element size W (DF = 0 ascending, DF = 1 descending), which is what the
//! x86-64 emit uses; after the copy, tmp is reloaded from the last chunk stored when it is
//! live (the last store wrote exactly the tmp value, whatever the overlap).
//!
//! memset payload: [3:0] base, [19:4] off (i16), [21:20] log2 width, [27:22] count - 1
//! (1..64), [35:28] byte value; count * width <= 128; with 8-byte chunks the value must be
//! 0x00 or 0xff (an `ST` immediate is 32 bits, sign-extended). Proof: `count` stores
//! `*(uW *)(base + off + i*W) = pattern` ascending. x86-64: `rep stosb` over all bytes
//! (every byte of the pattern is the value, so the chunk width does not matter).
//!
//! `rep movs`/`rep stos` need rdi, rsi, rcx and rax; those are saved on the native stack and
//! restored, and the operands are set up as a parallel move (a base may itself live in rdi,
//! rsi, rcx or rax).

use kops_isa::{op, Insn};
use kops_kinsn::payload::field_err;
use kops_kinsn::{EmitError, Emitted, PayloadError, X86EmitCtx};
use kops_x86::{Mem, Reg, Size, Width};

use crate::classes::{assignments, Class};
use crate::fields::Kind;
use crate::{EInsn, OpInfo, MAX_BULK_BYTES};

fn check_span(op: &str, field: &'static str, off: i16, width: u8, count: u8) -> Result<(), PayloadError> {
    let last = off as i64 + (count as i64 - 1) * width as i64;
    if last > i16::MAX as i64 {
        return Err(field_err(op, field, off as i64, format!("offset of the last chunk ({last}) must fit in 16 bits")));
    }
    Ok(())
}

fn check_total(op: &str, width: u8, count: u8) -> Result<(), PayloadError> {
    let total = width as usize * count as usize;
    if total > MAX_BULK_BYTES {
        return Err(field_err(op, "count", count as i64, format!("count * width ({total}) <= {MAX_BULK_BYTES}")));
    }
    Ok(())
}

fn size_bits(width: u8) -> u8 {
    op::size_of_bytes(width as usize)
}

/// Zero-extending load of one chunk.
fn load_chunk(ctx: &mut X86EmitCtx, width: u8, dst: Reg, m: Mem) {
    match width {
        1 => ctx.asm.movzx_load32(Size::S8, dst, m),
        2 => ctx.asm.movzx_load32(Size::S16, dst, m),
        4 => ctx.asm.load(Size::S32, dst, m),
        _ => ctx.asm.load(Size::S64, dst, m),
    }
}

crate::payload! {
    pub struct Memcpy {
        dst: u8 = 0, 4, Kind::Reg;
        dst_off: i16 = 12, 16, Kind::Signed;
        src: u8 = 4, 4, Kind::Reg;
        src_off: i16 = 28, 16, Kind::Signed;
        tmp: u8 = 8, 4, Kind::RegW;
        /// Chunk size in bytes: 1, 2, 4 or 8.
        width: u8 = 44, 2, Kind::Pow2(1, 8);
        /// Number of chunks, 1..=32.
        count: u8 = 46, 5, Kind::Biased(1, 32);
        descending: bool = 51, 1, Kind::Flag;
    }
    name "memcpy", id 10, max_proof 64, max_x86 48;
}

impl Memcpy {
    pub fn bytes(&self) -> usize {
        self.width as usize * self.count as usize
    }
    fn chunks(&self) -> Vec<i16> {
        let mut v: Vec<i16> = (0..self.count as i16).map(|i| i * self.width as i16).collect();
        if self.descending {
            v.reverse();
        }
        v
    }
}

impl EInsn for Memcpy {
    fn rules(&self) -> Result<(), PayloadError> {
        let n = Self::NAME;
        if self.tmp == self.dst || self.tmp == self.src {
            return Err(field_err(n, "tmp", self.tmp as i64, "a register other than both bases"));
        }
        check_total(n, self.width, self.count)?;
        check_span(n, "dst_off", self.dst_off, self.width, self.count)?;
        check_span(n, "src_off", self.src_off, self.width, self.count)
    }

    fn classes() -> Vec<Class<Self>> {
        let mut v = vec![];
        for width in [1u8, 2, 4, 8] {
            for count in 1..=(MAX_BULK_BYTES as u8 / width) {
                for desc in [false, true] {
                    let label = format!("r1+0 <- r2+8, {count} x {width} bytes{}", if desc { " desc" } else { "" });
                    v.push(Class::new(label, Memcpy::new(1, 0, 2, 8, 3, width, count, desc), vec![3]));
                }
            }
        }
        for a in assignments(&[false, false, true]) {
            for (width, count) in [(8u8, 3u8), (1, 5)] {
                let label = format!("r{}-16 <- r{}+4 tmp r{}, {count} x {width}", a[0], a[1], a[2]);
                v.push(Class::new(label, Memcpy::new(a[0], -16, a[1], 4, a[2], width, count, false), vec![a[2]]));
            }
        }
        Class::collect(v)
    }

    fn proof(&self) -> Vec<Insn> {
        let sz = size_bits(self.width);
        let mut v = Vec::with_capacity(2 * self.count as usize);
        for o in self.chunks() {
            v.push(Insn::ldx(sz, self.tmp, self.src, self.src_off + o));
            v.push(Insn::stx(sz, self.dst, self.tmp, self.dst_off + o));
        }
        v
    }

    fn describe(&self) -> String {
        format!(
            "memcpy(r{} {:+}, r{} {:+}, {} x {}B{}) [tmp r{}]",
            self.dst,
            self.dst_off,
            self.src,
            self.src_off,
            self.count,
            self.width,
            if self.descending { ", descending" } else { "" },
            self.tmp
        )
    }

    fn emit_x86(&self, ctx: &mut X86EmitCtx) -> Result<Emitted, EmitError> {
        let (d, s) = (ctx.reg(self.dst), ctx.reg(self.src));
        let w = self.width as i32;
        let down = self.descending && self.count > 1;
        let first = if down { (self.count as i32 - 1) * w } else { 0 };
        let saved = [Reg::Rdi, Reg::Rsi, Reg::Rcx];
        for r in saved {
            ctx.asm.push(r);
        }
        // Parallel move (src, dst) -> (rsi, rdi) through the stack: both bases are read
        // before rdi or rsi is written, whichever registers they live in, and no scratch
        // register is needed.
        ctx.asm.push(s);
        ctx.asm.push(d);
        ctx.asm.pop(Reg::Rdi);
        ctx.asm.pop(Reg::Rsi);
        let (doff, soff) = (self.dst_off as i32 + first, self.src_off as i32 + first);
        if doff != 0 {
            ctx.asm.lea(Width::W64, Reg::Rdi, Mem::new(Reg::Rdi, doff));
        }
        if soff != 0 {
            ctx.asm.lea(Width::W64, Reg::Rsi, Mem::new(Reg::Rsi, soff));
        }
        ctx.asm.mov_r32_imm32(Reg::Rcx, self.count as u32);
        if down {
            ctx.asm.std();
        }
        ctx.asm.rep_movs(Size::from_bytes(self.width as usize).expect("width is 1, 2, 4 or 8"));
        if down {
            ctx.asm.cld();
        }
        for r in saved.iter().rev() {
            ctx.asm.pop(*r);
        }
        if ctx.live(self.tmp) {
            // The proof's last chunk ends in tmp and was stored last: read it back.
            let last = if self.descending { 0 } else { (self.count as i32 - 1) * w };
            let t = ctx.reg(self.tmp);
            load_chunk(ctx, self.width, t, Mem::new(d, self.dst_off as i32 + last));
        }
        Ok(Emitted::Native)
    }

    fn place(&self, pick: &mut dyn FnMut(i64, i64) -> i64, r: &mut [u64; 11], base: u64, buf: usize) {
        let len = self.bytes() as i64;
        let room = buf as i64 - len;
        let (doff, soff) = (self.dst_off as i64, self.src_off as i64);
        if self.dst == self.src {
            let lo = (-doff).max(-soff);
            let hi = (room - doff).min(room - soff);
            let x = pick(lo, hi);
            r[self.dst as usize] = base.wrapping_add(x as u64);
        } else {
            let pd = pick(0, room);
            // Overlapping regions half of the time.
            let ps = if pick(0, 1) == 1 { (pd + pick(-len - 2, len + 2)).clamp(0, room) } else { pick(0, room) };
            r[self.dst as usize] = base.wrapping_add((pd - doff) as u64);
            r[self.src as usize] = base.wrapping_add((ps - soff) as u64);
        }
    }
    fn writes(&self) -> Vec<u8> {
        vec![self.tmp]
    }
    fn meaning(&self, b: &[u64; 11], mb: &[u8], base: u64, _: &[u64; 11], ma: &[u8]) -> Result<(), String> {
        let len = self.bytes();
        let d = (b[self.dst as usize].wrapping_add(self.dst_off as i64 as u64) - base) as usize;
        let s = (b[self.src as usize].wrapping_add(self.src_off as i64 as u64) - base) as usize;
        let mut want = mb.to_vec();
        if d + len <= s || s + len <= d {
            want[d..d + len].copy_from_slice(&mb[s..s + len]);
            if want != ma {
                return Err("memcpy of disjoint regions is not a plain copy".into());
            }
        } else {
            // Overlap: only bytes outside the destination are known to stay.
            if ma[..d] != mb[..d] || ma[d + len..] != mb[d + len..] {
                return Err("memcpy wrote outside its destination".into());
            }
        }
        Ok(())
    }
}

crate::payload! {
    pub struct Memset {
        base: u8 = 0, 4, Kind::Reg;
        off: i16 = 4, 16, Kind::Signed;
        /// Chunk size in bytes: 1, 2, 4 or 8.
        width: u8 = 20, 2, Kind::Pow2(1, 8);
        /// Number of chunks, 1..=64.
        count: u8 = 22, 6, Kind::Biased(1, 64);
        /// Fill byte (0x00 or 0xff with 8-byte chunks).
        value: u8 = 28, 8, Kind::Range(0, 255);
    }
    name "memset", id 11, max_proof 64, max_x86 32;
}

impl Memset {
    pub fn bytes(&self) -> usize {
        self.width as usize * self.count as usize
    }
    /// The `ST` immediate of one chunk.
    fn imm(&self) -> i32 {
        let v = self.value as u32;
        match self.width {
            1 => v as i32,
            2 => (v * 0x0101) as i32,
            4 => (v * 0x0101_0101) as i32,
            _ => {
                if v == 0 {
                    0
                } else {
                    -1
                }
            }
        }
    }
}

impl EInsn for Memset {
    fn rules(&self) -> Result<(), PayloadError> {
        let n = Self::NAME;
        check_total(n, self.width, self.count)?;
        check_span(n, "off", self.off, self.width, self.count)?;
        if self.width == 8 && !matches!(self.value, 0 | 0xff) {
            return Err(field_err(n, "value", self.value as i64, "0x00 or 0xff with 8-byte chunks"));
        }
        Ok(())
    }

    fn classes() -> Vec<Class<Self>> {
        let mut v = vec![];
        for width in [1u8, 2, 4, 8] {
            for count in 1..=(MAX_BULK_BYTES as u8 / width) {
                for value in [0u8, 0xa5] {
                    let label = format!("r1+0, {count} x {width} bytes of {value:#x}");
                    v.push(Class::new(label, Memset::new(1, 0, width, count, value), vec![]));
                }
            }
        }
        for a in assignments(&[false]) {
            v.push(Class::new(format!("r{}-24, 5 x 8 bytes of 0", a[0]), Memset::new(a[0], -24, 8, 5, 0), vec![]));
        }
        Class::collect(v)
    }

    fn proof(&self) -> Vec<Insn> {
        let sz = size_bits(self.width);
        (0..self.count as i16).map(|i| Insn::st(sz, self.base, self.off + i * self.width as i16, self.imm())).collect()
    }

    fn describe(&self) -> String {
        format!("memset(r{} {:+}, {:#04x}, {} x {}B)", self.base, self.off, self.value, self.count, self.width)
    }

    fn emit_x86(&self, ctx: &mut X86EmitCtx) -> Result<Emitted, EmitError> {
        let b = ctx.reg(self.base);
        let saved = [Reg::Rdi, Reg::Rcx, Reg::Rax];
        for r in saved {
            ctx.asm.push(r);
        }
        // The base is read before rdi, rcx or rax is written. Every byte of the fill is
        // `value` whatever the chunk width, so a byte-wise `rep stosb` (the fast string
        // form with ERMS/FSRM) stores exactly what the proof stores.
        ctx.asm.lea(Width::W64, Reg::Rdi, Mem::new(b, self.off as i32));
        ctx.asm.mov_r32_imm32(Reg::Rcx, self.bytes() as u32);
        ctx.asm.mov_imm32(false, Reg::Rax, self.value as i32);
        ctx.asm.rep_stosb();
        for r in saved.iter().rev() {
            ctx.asm.pop(*r);
        }
        Ok(Emitted::Native)
    }

    fn place(&self, pick: &mut dyn FnMut(i64, i64) -> i64, r: &mut [u64; 11], base: u64, buf: usize) {
        let pos = pick(0, (buf - self.bytes()) as i64) as u64;
        r[self.base as usize] = base.wrapping_add(pos).wrapping_sub(self.off as i64 as u64);
    }
    fn writes(&self) -> Vec<u8> {
        vec![]
    }
    fn meaning(&self, b: &[u64; 11], mb: &[u8], base: u64, _: &[u64; 11], ma: &[u8]) -> Result<(), String> {
        let d = (b[self.base as usize].wrapping_add(self.off as i64 as u64) - base) as usize;
        let mut want = mb.to_vec();
        want[d..d + self.bytes()].fill(self.value);
        if want != ma {
            return Err("memset result differs from a plain fill".into());
        }
        Ok(())
    }
}

