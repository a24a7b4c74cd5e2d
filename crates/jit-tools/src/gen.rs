//! Random valid eBPF programs for differential testing (JIT against interpreter).
//!
//! A program runs on a 512-byte buffer (r1 on entry, kept in r6): bytes 0..256 are
//! read/written by the body, 256..384 receive r0..r9 at the end, 384..512 a copy of the
//! stack area the body uses (r10-128 .. r10). So comparing r0 and the buffer compares
//! the whole observable state.
//!
//! The body is structured so that every program terminates and every access is in bounds:
//! straight-line ALU of every width and opcode (K and X forms, signed div/mod, movsx, byte
//! swaps), loads/stores/atomics of every size to the stack and the buffer, forward
//! conditional and unconditional jumps that skip whole items, bounded loops (counter in
//! r9), and calls to a generated subprogram. Not trusted code; deterministic per seed.

use kops_isa::{op, Insn};

/// Where the generator's decisions come from: a seeded PRNG ([`Rng`], the differential
/// tests, or `kops_rng::Rng`) or the fuzzer's input bytes ([`InputRng`], the `jit_vs_interp` fuzz target, so
/// libFuzzer's mutations steer the program shape). Only [`Choices::next`] is required.
pub trait Choices {
    /// A full 64-bit choice.
    fn next(&mut self) -> u64;
    /// A choice in `0..n` (`0` when `n` is 0).
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
    fn pick<T: Copy>(&mut self, v: &[T]) -> T
    where
        Self: Sized,
    {
        v[self.below(v.len() as u64) as usize]
    }
    /// Immediates biased toward edge cases.
    fn imm(&mut self) -> i32
    where
        Self: Sized,
    {
        match self.below(10) {
            0 => 0,
            1 => -1,
            2 => 1,
            3 => i32::MIN,
            4 => i32::MAX,
            5 => self.pick(&[2, 3, 7, 8, 31, 32, 63, 64, 255, 256, 0xffff, -0x8000, 0x10000]),
            6 => (self.next() as i32) >> self.below(31),
            _ => self.next() as i32,
        }
    }
}

/// Seeded programs come from the project's one generator.
pub use kops_rng::Rng;

impl Choices for kops_rng::Rng {
    fn next(&mut self) -> u64 {
        kops_rng::Rng::next(self)
    }
}

/// Choices read from fuzzer input: each decision takes the next input byte (8 for a full
/// 64-bit value), so a mutated input byte changes one decision of the program; past the
/// end of the input, a [`Rng`] stream seeded from the input takes over.
#[derive(Clone, Debug)]
pub struct InputRng<'a> {
    data: &'a [u8],
    pos: usize,
    rest: Rng,
}

impl<'a> InputRng<'a> {
    pub fn new(data: &'a [u8]) -> InputRng<'a> {
        // FNV-1a of the input seeds the stream used past its end.
        let h = data.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| (h ^ b as u64).wrapping_mul(0x100_0000_01b3));
        InputRng { data, pos: 0, rest: Rng::new(h) }
    }
    /// Input bytes consumed so far.
    pub fn consumed(&self) -> usize {
        self.pos.min(self.data.len())
    }
    pub fn byte(&mut self) -> u8 {
        match self.data.get(self.pos) {
            Some(&b) => {
                self.pos += 1;
                b
            }
            None => self.rest.next() as u8,
        }
    }
}

impl Choices for InputRng<'_> {
    fn next(&mut self) -> u64 {
        let mut b = [0u8; 8];
        for x in &mut b {
            *x = self.byte();
        }
        u64::from_le_bytes(b)
    }
    fn below(&mut self, n: u64) -> u64 {
        let n = n.max(1);
        if n <= 256 {
            self.byte() as u64 % n
        } else {
            self.next() % n
        }
    }
}

/// Buffer size a generated program expects in r1.
pub const BUF_SIZE: usize = 512;
/// Bytes of stack (below r10) the body uses.
pub const STACK_USED: i16 = 128;
/// Body area of the buffer.
const BUF_BODY: i16 = 256;

/// Registers the body may write in the main function (r6 = buffer, r9 = loop counter,
/// r10 = frame pointer are reserved).
const MAIN_REGS: [u8; 8] = [0, 1, 2, 3, 4, 5, 7, 8];
/// Registers a subprogram uses (its arguments and r0).
const SUB_REGS: [u8; 6] = [0, 1, 2, 3, 4, 5];

#[derive(Clone, Copy)]
struct Ctx<'a> {
    regs: &'a [u8],
    /// Buffer accesses allowed (main only: r6 holds the buffer).
    buffer: bool,
    /// Calls to the subprogram allowed.
    calls: bool,
    /// Loops allowed (not inside a loop: one counter).
    loops: bool,
}

/// Generate one program. `size` is roughly the number of body items.
pub fn program<R: Choices>(rng: &mut R, size: usize) -> Vec<Insn> {
    let mut main = Vec::new();
    main.push(Insn::mov64_reg(6, 1));
    // Defined values in every register the body reads.
    for r in [0u8, 1, 2, 3, 4, 5, 7, 8, 9] {
        if rng.chance(30) {
            main.extend(Insn::ld_imm64(r, 0, rng.next()));
        } else {
            main.push(Insn::mov64_imm(r, rng.imm()));
        }
    }
    // Defined stack.
    for k in 1..=(STACK_USED / 8) {
        main.push(Insn::stx(op::DW, 10, rng.pick(&MAIN_REGS), -8 * k));
    }
    let with_sub = rng.chance(50);
    let ctx = Ctx { regs: &MAIN_REGS, buffer: true, calls: with_sub, loops: true };
    let mut calls = Vec::new();
    items(rng, &ctx, size, &mut main, &mut calls);
    // Epilogue: registers, then the stack, into the buffer's tail.
    // (r6 is the buffer's own address, which differs between runs: not stored.)
    for r in [0u8, 1, 2, 3, 4, 5, 7, 8, 9] {
        main.push(Insn::stx(op::DW, 6, r, BUF_BODY + 8 * r as i16));
    }
    for k in 0..(STACK_USED / 8) {
        main.push(Insn::ldx(op::DW, 1, 10, -STACK_USED + 8 * k));
        main.push(Insn::stx(op::DW, 6, 1, 384 + 8 * k));
    }
    main.push(Insn::exit());
    if with_sub && !calls.is_empty() {
        let sub_start = main.len();
        for pc in calls {
            main[pc].imm = (sub_start - pc - 1) as i32;
        }
        // Subprogram: own stack (initialised), r0 from the arguments.
        main.push(Insn::mov64_reg(0, 1));
        for k in 1..=8 {
            main.push(Insn::stx(op::DW, 10, rng.pick(&SUB_REGS), -8 * k));
        }
        let sctx = Ctx { regs: &SUB_REGS, buffer: false, calls: false, loops: false };
        let mut none = Vec::new();
        items(rng, &sctx, size / 3 + 1, &mut main, &mut none);
        main.push(Insn::exit());
    }
    main
}

/// Append about `n` items; records the slots of subprogram calls in `calls`.
fn items<R: Choices>(rng: &mut R, c: &Ctx, n: usize, out: &mut Vec<Insn>, calls: &mut Vec<usize>) {
    let mut left = n;
    while left > 0 {
        left -= 1;
        match rng.below(100) {
            0..=44 => alu(rng, c, out),
            45..=64 => mem(rng, c, out),
            65..=69 => atomic(rng, c, out),
            93..=96 => derived_stack(rng, c, out),
            70..=81 => {
                // Forward jump over the next few items.
                let k = (rng.below(4) + 1) as usize;
                let at = out.len();
                out.push(Insn::ja(0)); // placeholder
                let mut inner_calls = Vec::new();
                items(rng, &Ctx { loops: false, ..*c }, k.min(left.max(1)), out, &mut inner_calls);
                calls.extend(inner_calls);
                let skip = out.len() - at - 1;
                out[at] = jump(rng, c, skip as i16);
            }
            82..=87 if c.loops => {
                // Bounded loop: r9 = n; body; r9 -= 1; if r9 != 0 goto body.
                out.push(Insn::mov64_imm(9, rng.below(5) as i32 + 1));
                let body = out.len();
                let mut inner_calls = Vec::new();
                let len = (rng.below(6) + 1) as usize;
                items(rng, &Ctx { loops: false, ..*c }, len, out, &mut inner_calls);
                calls.extend(inner_calls);
                out.push(Insn::alu64_imm(op::SUB, 9, 1));
                let back = body as i64 - (out.len() as i64 + 1);
                out.push(Insn::jmp_imm(op::JNE, 9, 0, back as i16));
            }
            88..=92 if c.calls => {
                calls.push(out.len());
                out.push(Insn::new(op::JMP | op::CALL, 0, op::PSEUDO_CALL, 0, 0));
            }
            _ => {
                if rng.chance(50) {
                    let r = rng.pick(c.regs);
                    out.extend(Insn::ld_imm64(r, 0, rng.next()));
                } else {
                    alu(rng, c, out);
                }
            }
        }
    }
}

fn jump<R: Choices>(rng: &mut R, c: &Ctx, off: i16) -> Insn {
    if rng.chance(10) {
        return if rng.chance(50) { Insn::ja(off) } else { Insn::new(op::JMP32 | op::JA, 0, 0, 0, off as i32) };
    }
    let ops = [op::JEQ, op::JNE, op::JGT, op::JGE, op::JLT, op::JLE, op::JSGT, op::JSGE, op::JSLT, op::JSLE, op::JSET];
    let class = if rng.chance(50) { op::JMP } else { op::JMP32 };
    let o = rng.pick(&ops);
    let dst = rng.pick(c.regs);
    if rng.chance(50) {
        Insn::new(class | o | op::X, dst, rng.pick(c.regs), off, 0)
    } else {
        Insn::new(class | o | op::K, dst, 0, off, rng.imm())
    }
}

fn alu<R: Choices>(rng: &mut R, c: &Ctx, out: &mut Vec<Insn>) {
    let is64 = rng.chance(50);
    let class = if is64 { op::ALU64 } else { op::ALU };
    let dst = rng.pick(c.regs);
    let src = rng.pick(c.regs);
    let ops = [
        op::ADD,
        op::SUB,
        op::MUL,
        op::DIV,
        op::OR,
        op::AND,
        op::LSH,
        op::RSH,
        op::NEG,
        op::MOD,
        op::XOR,
        op::MOV,
        op::ARSH,
        op::END,
    ];
    let o = rng.pick(&ops);
    let x = rng.chance(50);
    let insn = match o {
        op::NEG => Insn::new(class | op::NEG | op::K, dst, 0, 0, 0),
        op::END => {
            let bits = rng.pick(&[16, 32, 64]);
            if is64 {
                // bswap16/32/64 (ALU64 END is the unconditional swap, TO_LE bit 0).
                Insn::new(op::ALU64 | op::END, dst, 0, 0, bits)
            } else {
                Insn::new(op::ALU | op::END | rng.pick(&[op::TO_LE, op::TO_BE]), dst, 0, 0, bits)
            }
        }
        op::LSH | op::RSH | op::ARSH if !x => {
            let w = if is64 { 64 } else { 32 };
            Insn::new(class | o | op::K, dst, 0, 0, rng.below(w) as i32)
        }
        op::DIV | op::MOD => {
            let signed = rng.chance(40) as i16;
            if x {
                Insn::new(class | o | op::X, dst, src, signed, 0)
            } else {
                let mut imm = rng.imm();
                if imm == 0 {
                    imm = 3; // the verifier rejects division by an immediate 0
                }
                Insn::new(class | o | op::K, dst, 0, signed, imm)
            }
        }
        op::MOV if x && rng.chance(30) => {
            // movsx
            let off = if is64 { rng.pick(&[8, 16, 32]) } else { rng.pick(&[8, 16]) };
            Insn::new(class | op::MOV | op::X, dst, src, off, 0)
        }
        _ => {
            if x {
                Insn::new(class | o | op::X, dst, src, 0, 0)
            } else {
                Insn::new(class | o | op::K, dst, 0, 0, rng.imm())
            }
        }
    };
    out.push(insn);
}

fn size_pick<R: Choices>(rng: &mut R) -> (u8, i16) {
    rng.pick(&[(op::B, 1), (op::H, 2), (op::W, 4), (op::DW, 8)])
}

/// A base register and an in-bounds, aligned offset for an access of `n` bytes.
fn place<R: Choices>(rng: &mut R, c: &Ctx, n: i16) -> (u8, i16) {
    if c.buffer && rng.chance(50) {
        (6, (rng.below((BUF_BODY / n) as u64) as i16) * n)
    } else {
        // Subprograms only touch their first 64 bytes (initialised by their prologue).
        let span = if c.buffer { STACK_USED } else { 64 };
        (10, -((rng.below((span / n) as u64) as i16 + 1) * n))
    }
}

fn mem<R: Choices>(rng: &mut R, c: &Ctx, out: &mut Vec<Insn>) {
    let (sz, n) = size_pick(rng);
    let (base, off) = place(rng, c, n);
    let r = rng.pick(c.regs);
    match rng.below(4) {
        0 => out.push(Insn::ldx(sz, r, base, off)),
        1 if sz != op::DW => out.push(Insn::new(op::LDX | op::MEMSX | sz, r, base, off, 0)),
        2 => out.push(Insn::stx(sz, base, r, off)),
        _ => out.push(Insn::st(sz, base, off, rng.imm())),
    }
}

/// Stack access through a pointer derived from r10: a constant offset, or a masked,
/// scaled index (`p = r10 - span + (x & m) * n`), so that stack-depth analysis matters.
fn derived_stack<R: Choices>(rng: &mut R, c: &Ctx, out: &mut Vec<Insn>) {
    let span = if c.buffer { STACK_USED } else { 64 };
    let (sz, n) = size_pick(rng);
    let regs: Vec<u8> = c.regs.iter().copied().filter(|r| *r != 0).collect();
    let p = rng.pick(&regs);
    out.push(Insn::mov64_reg(p, 10));
    if rng.chance(50) {
        let off = -((rng.below((span / n) as u64) as i16 + 1) * n);
        out.push(Insn::alu64_imm(op::ADD, p, off as i32));
    } else {
        let x = loop {
            let x = rng.pick(&regs);
            if x != p {
                break x;
            }
        };
        let slots = (span / n) as i32; // a power of two
        out.push(Insn::alu64_imm(op::AND, x, slots - 1));
        out.push(Insn::alu64_imm(op::LSH, x, n.trailing_zeros() as i32));
        out.push(Insn::alu64_imm(op::ADD, p, -(span as i32)));
        out.push(Insn::alu64_reg(op::ADD, p, x));
    }
    // Never store or keep the pointer itself: addresses differ between runtimes.
    let r = loop {
        let r = rng.pick(c.regs);
        if r != p {
            break r;
        }
    };
    if rng.chance(50) {
        out.push(Insn::ldx(sz, r, p, 0));
    } else {
        out.push(Insn::stx(sz, p, r, 0));
    }
    out.push(Insn::mov64_imm(p, rng.imm()));
}

fn atomic<R: Choices>(rng: &mut R, c: &Ctx, out: &mut Vec<Insn>) {
    let (sz, n) = if rng.chance(50) { (op::W, 4) } else { (op::DW, 8) };
    let (base, off) = place(rng, c, n);
    let src = rng.pick(c.regs);
    let ops = [
        op::ADD as i32,
        op::OR as i32,
        op::AND as i32,
        op::XOR as i32,
        op::ADD as i32 | op::FETCH,
        op::OR as i32 | op::FETCH,
        op::AND as i32 | op::FETCH,
        op::XOR as i32 | op::FETCH,
        op::XCHG,
        op::CMPXCHG,
    ];
    out.push(Insn::new(op::STX | op::ATOMIC | sz, base, src, off, rng.pick(&ops)));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn programs_are_structurally_valid() {
        for seed in 0..300 {
            let p = program(&mut Rng::new(seed), 40);
            let second = kops_jit::fixup::second_slots(&p);
            assert!(p.iter().any(|i| i.is_exit()));
            for (pc, i) in p.iter().enumerate() {
                if second[pc] {
                    continue;
                }
                if let Some(t) = i.target(pc) {
                    assert!(t >= 0 && (t as usize) < p.len(), "seed {seed} pc {pc}: target {t}");
                    assert!(!second[t as usize], "seed {seed} pc {pc}: jump into ld_imm64");
                }
            }
        }
    }
}
