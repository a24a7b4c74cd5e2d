//! Symbolic evaluation of straight-line code, with backward slices.
//!
//! Each register holds a [`Term`] over the register values at the window start plus the
//! set of window positions that contributed to it. Terms are normalised as they are built
//! (commutative operands sorted, redundant zero-extensions dropped) so that the same
//! computation gives the same term whatever the register allocation, operand order or
//! instruction order clang chose. Matching an idiom is then a comparison of terms, and
//! its slice tells which instructions the site replaces.

use kops_analysis::{effects, RegSet};
use kops_isa::{op, Insn};
use std::rc::Rc;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum W {
    W32,
    W64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Bin {
    Add,
    Sub,
    Mul,
    Or,
    And,
    Xor,
    Lsh,
    Rsh,
    Arsh,
    Div,
    Mod,
}

impl Bin {
    fn commutative(self) -> bool {
        matches!(self, Bin::Add | Bin::Mul | Bin::Or | Bin::And | Bin::Xor)
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Term {
    /// Value of register n at the window start.
    In(u8),
    Const(u64),
    /// 32-bit ops act on the low halves of their operands and zero-extend the result.
    Bin(Bin, W, Rc<Term>, Rc<Term>),
    /// Zero-extension of the low 32 bits (`w = w`).
    Zext32(Rc<Term>),
    /// Zero-extending load of `size` bytes from `base + off`; `epoch` counts the memory
    /// writes before it in the window, so loads across a store never compare equal.
    Load { size: u8, base: Rc<Term>, off: i16, epoch: u32 },
    /// Byte swap of the low `bits` (16/32/64), zero-extended (`be16/32/64`, `bswap`).
    Swap(u8, Rc<Term>),
    /// Anything else: the value written by the instruction at window position `pos`.
    Opaque(usize, u8),
}

pub type T = Rc<Term>;

/// Is the term's value known to fit in 32 bits (upper half zero)?
pub fn fits32(t: &Term) -> bool {
    match t {
        Term::Const(c) => *c <= u32::MAX as u64,
        Term::Bin(_, W::W32, _, _) | Term::Zext32(_) => true,
        Term::Load { size, .. } => *size <= 4,
        Term::Swap(b, _) => *b <= 32,
        Term::Bin(Bin::And, W::W64, a, b) => fits32(a) || fits32(b),
        Term::Bin(Bin::Rsh, W::W64, _, s) => matches!(**s, Term::Const(k) if k >= 32 && k < 64),
        _ => false,
    }
}

fn strip32(t: T) -> T {
    match &*t {
        Term::Zext32(x) => strip32(x.clone()),
        Term::Const(c) => Rc::new(Term::Const(c & 0xffff_ffff)),
        _ => t,
    }
}

pub fn cst(c: u64) -> T {
    Rc::new(Term::Const(c))
}

/// Build a binary term, normalised.
pub fn bin(op: Bin, w: W, a: T, b: T) -> T {
    let (mut a, mut b) = if w == W::W32 { (strip32(a), strip32(b)) } else { (a, b) };
    if op.commutative() && cmp_terms(&b, &a, &mut 20_000) == std::cmp::Ordering::Less {
        std::mem::swap(&mut a, &mut b);
    }
    Rc::new(Term::Bin(op, w, a, b))
}

/// Structural order of two terms, short-cutting shared subterms (a DAG compared as a tree
/// can be exponential). Past `budget` node visits, falls back to the allocation order:
/// the normalisation may then miss a match, never make one up (matching uses equality).
pub fn cmp_terms(a: &T, b: &T, budget: &mut u32) -> std::cmp::Ordering {
    use std::cmp::Ordering::*;
    if Rc::ptr_eq(a, b) {
        return Equal;
    }
    if *budget == 0 {
        return (Rc::as_ptr(a) as usize).cmp(&(Rc::as_ptr(b) as usize));
    }
    *budget -= 1;
    let rank = |t: &Term| match t {
        Term::In(_) => 0,
        Term::Const(_) => 1,
        Term::Bin(..) => 2,
        Term::Zext32(_) => 3,
        Term::Load { .. } => 4,
        Term::Swap(..) => 5,
        Term::Opaque(..) => 6,
    };
    match (&**a, &**b) {
        (Term::In(x), Term::In(y)) => x.cmp(y),
        (Term::Const(x), Term::Const(y)) => x.cmp(y),
        (Term::Bin(o1, w1, a1, b1), Term::Bin(o2, w2, a2, b2)) => (o1, w1)
            .cmp(&(o2, w2))
            .then_with(|| cmp_terms(a1, a2, budget))
            .then_with(|| cmp_terms(b1, b2, budget)),
        (Term::Zext32(x), Term::Zext32(y)) => cmp_terms(x, y, budget),
        (Term::Load { size: s1, base: b1, off: o1, epoch: e1 }, Term::Load { size: s2, base: b2, off: o2, epoch: e2 }) => {
            (s1, o1, e1).cmp(&(s2, o2, e2)).then_with(|| cmp_terms(b1, b2, budget))
        }
        (Term::Swap(n1, x), Term::Swap(n2, y)) => n1.cmp(n2).then_with(|| cmp_terms(x, y, budget)),
        (Term::Opaque(p1, r1), Term::Opaque(p2, r2)) => (p1, r1).cmp(&(p2, r2)),
        (x, y) => rank(x).cmp(&rank(y)),
    }
}

pub fn zext32(t: T) -> T {
    if fits32(&t) {
        t
    } else if let Term::Const(c) = &*t {
        cst(c & 0xffff_ffff)
    } else {
        Rc::new(Term::Zext32(t))
    }
}

/// Symbolic register file entry: the value and the window positions it depends on.
#[derive(Clone, Debug)]
pub struct Val {
    pub t: T,
    pub deps: u64,
}

/// Longest window evaluated (positions are bits of a u64).
pub const MAX_WINDOW: usize = 64;

/// The evaluation of a window `[start, end)` of one basic block.
pub struct Eval {
    pub start: usize,
    /// `states[k]` is the register file before slot `start + k`; one more at the end.
    pub states: Vec<[Val; 11]>,
    /// Memory writes (stores, atomics, calls) seen before slot `start + k`.
    pub epochs: Vec<u32>,
}

impl Eval {
    /// `consts`: registers known to hold a constant at `start`.
    pub fn run(insns: &[Insn], start: usize, end: usize, consts: &[Option<u64>; 11]) -> Eval {
        assert!(end - start <= MAX_WINDOW);
        let mut regs: [Val; 11] = std::array::from_fn(|r| Val {
            t: Rc::new(consts[r].map(Term::Const).unwrap_or(Term::In(r as u8))),
            deps: 0,
        });
        let mut states = Vec::with_capacity(end - start + 1);
        let mut epochs = Vec::with_capacity(end - start + 1);
        let mut epoch = 0u32;
        let mut pc = start;
        while pc < end {
            states.push(regs.clone());
            epochs.push(epoch);
            let k = pc - start;
            let i = insns[pc];
            let me = 1u64 << k;
            let get = |regs: &[Val; 11], r: u8| -> Val {
                regs.get(r as usize).cloned().unwrap_or(Val { t: Rc::new(Term::Opaque(k, r)), deps: 0 })
            };
            let opaque_defs = |regs: &mut [Val; 11], defs: RegSet| {
                for r in defs.iter() {
                    if (r as usize) < 11 {
                        regs[r as usize] = Val { t: Rc::new(Term::Opaque(k, r)), deps: me };
                    }
                }
            };
            let d = i.dst as usize;
            match i.class() {
                op::ALU | op::ALU64 if d < 10 && !i.is_kinsn_sidecar() => {
                    let w = if i.class() == op::ALU64 { W::W64 } else { W::W32 };
                    let src = if i.source() == op::X {
                        get(&regs, i.src)
                    } else if w == W::W64 {
                        Val { t: cst(i.imm as i64 as u64), deps: 0 }
                    } else {
                        Val { t: cst(i.imm as u32 as u64), deps: 0 }
                    };
                    let dv = regs[d].clone();
                    let binop = match i.op() {
                        op::ADD => Some(Bin::Add),
                        op::SUB => Some(Bin::Sub),
                        op::MUL if i.off == 0 => Some(Bin::Mul),
                        op::OR => Some(Bin::Or),
                        op::AND => Some(Bin::And),
                        op::XOR => Some(Bin::Xor),
                        op::LSH => Some(Bin::Lsh),
                        op::RSH => Some(Bin::Rsh),
                        op::ARSH => Some(Bin::Arsh),
                        op::DIV if i.off == 0 => Some(Bin::Div),
                        op::MOD if i.off == 0 => Some(Bin::Mod),
                        _ => None,
                    };
                    if let Some(b) = binop {
                        regs[d] = Val { t: bin(b, w, dv.t, src.t), deps: dv.deps | src.deps | me };
                    } else if i.op() == op::MOV && i.off == 0 {
                        // Plain mov only: movsx (off != 0) is a different operation.
                        let t = if w == W::W64 { src.t } else { zext32(src.t) };
                        regs[d] = Val { t, deps: src.deps | me };
                    } else if i.op() == op::END && matches!(i.imm, 16 | 32 | 64) {
                        let swap = i.class() == op::ALU64 || i.source() == op::TO_BE;
                        if swap {
                            regs[d] = Val { t: Rc::new(Term::Swap(i.imm as u8, dv.t)), deps: dv.deps | me };
                        } else {
                            opaque_defs(&mut regs, RegSet::of(i.dst));
                        }
                    } else {
                        opaque_defs(&mut regs, RegSet::of(i.dst));
                    }
                }
                op::LDX if i.mode() == op::MEM && d < 10 && (i.src as usize) < 11 => {
                    let b = get(&regs, i.src);
                    let t = Rc::new(Term::Load { size: i.size_bytes() as u8, base: b.t, off: i.off, epoch });
                    regs[d] = Val { t, deps: b.deps | me };
                }
                op::LD if i.is_ld_imm64() && i.src == 0 && pc + 1 < end && d < 10 => {
                    let v = (i.imm as u32 as u64) | ((insns[pc + 1].imm as u32 as u64) << 32);
                    regs[d] = Val { t: cst(v), deps: me | (me << 1) };
                }
                _ => {
                    let e = effects(&i);
                    if matches!(i.class(), op::ST | op::STX) || i.is_call() {
                        epoch += 1;
                    }
                    opaque_defs(&mut regs, e.defs);
                }
            }
            if i.is_ld_imm64() && pc + 1 < end {
                states.push(regs.clone());
                epochs.push(epoch);
                pc += 2;
            } else {
                pc += 1;
            }
        }
        states.push(regs);
        epochs.push(epoch);
        Eval { start, states, epochs }
    }

    /// Register file before slot `pc` (after the window when `pc` is its end).
    pub fn before(&self, pc: usize) -> &[Val; 11] {
        &self.states[pc - self.start]
    }
}

/// Every distinct subterm of `t` (pre-order, duplicates by structure removed).
pub fn subterms(t: &T, out: &mut Vec<T>) {
    if out.iter().any(|x| Rc::ptr_eq(x, t) || **x == **t) {
        return;
    }
    out.push(t.clone());
    match &**t {
        Term::Bin(_, _, a, b) => {
            subterms(a, out);
            subterms(b, out);
        }
        Term::Zext32(a) | Term::Swap(_, a) => subterms(a, out),
        Term::Load { base, .. } => subterms(base, out),
        _ => {}
    }
}

/// clang's branch-free popcount expansion of `x` (64-bit: `>> 56`, 32-bit: `>> 24`).
pub fn popcount_term(x: &T, w: W) -> T {
    let (m1, m2, m4, h01, sh) = match w {
        W::W64 => (0x5555_5555_5555_5555u64, 0x3333_3333_3333_3333u64, 0x0f0f_0f0f_0f0f_0f0fu64, 0x0101_0101_0101_0101u64, 56),
        W::W32 => (0x5555_5555, 0x3333_3333, 0x0f0f_0f0f, 0x0101_0101, 24),
    };
    let x = x.clone();
    let a = bin(Bin::Sub, w, x.clone(), bin(Bin::And, w, bin(Bin::Rsh, w, x, cst(1)), cst(m1)));
    let b = bin(
        Bin::Add,
        w,
        bin(Bin::And, w, a.clone(), cst(m2)),
        bin(Bin::And, w, bin(Bin::Rsh, w, a, cst(2)), cst(m2)),
    );
    let c = bin(Bin::And, w, bin(Bin::Add, w, b.clone(), bin(Bin::Rsh, w, b, cst(4))), cst(m4));
    bin(Bin::Rsh, w, bin(Bin::Mul, w, c, cst(h01)), cst(sh))
}

#[cfg(test)]
mod tests {
    use super::*;
    use kops_isa::op::*;

    #[test]
    fn rotate_orders_normalise_equal() {
        // r3 = r2; r3 >>= 51; r2 <<= 13; r2 |= r3   vs   r3 = r2; r3 <<= 13; r2 >>= 51; r3 |= r2
        let a = [
            Insn::mov64_reg(3, 2),
            Insn::alu64_imm(RSH, 3, 51),
            Insn::alu64_imm(LSH, 2, 13),
            Insn::alu64_reg(OR, 2, 3),
        ];
        let b = [
            Insn::mov64_reg(3, 2),
            Insn::alu64_imm(LSH, 3, 13),
            Insn::alu64_imm(RSH, 2, 51),
            Insn::alu64_reg(OR, 3, 2),
        ];
        let ea = Eval::run(&a, 0, 4, &[None; 11]);
        let eb = Eval::run(&b, 0, 4, &[None; 11]);
        assert_eq!(ea.before(4)[2].t, eb.before(4)[3].t);
        assert_eq!(ea.before(4)[2].deps, 0b1111);
        let expect = bin(
            Bin::Or,
            W::W64,
            bin(Bin::Lsh, W::W64, Rc::new(Term::In(2)), cst(13)),
            bin(Bin::Rsh, W::W64, Rc::new(Term::In(2)), cst(51)),
        );
        assert_eq!(ea.before(4)[2].t, expect);
    }

    #[test]
    fn mixed_width_is_not_32bit_rotate() {
        // r3 = r2; r3 >>= 51; w2 <<= 13; w2 |= w3  (clang's truncated rol64)
        let a = [
            Insn::mov64_reg(3, 2),
            Insn::alu64_imm(RSH, 3, 51),
            Insn::alu32_imm(LSH, 2, 13),
            Insn::alu32_reg(OR, 2, 3),
        ];
        let e = Eval::run(&a, 0, 4, &[None; 11]);
        let x = Rc::new(Term::In(2));
        let r32 = bin(Bin::Or, W::W32, bin(Bin::Lsh, W::W32, x.clone(), cst(13)), bin(Bin::Rsh, W::W32, x, cst(19)));
        assert_ne!(e.before(4)[2].t, r32);
    }

    #[test]
    fn movsx_is_opaque() {
        let a = [Insn::new(ALU64 | MOV | X, 1, 2, 8, 0)];
        let e = Eval::run(&a, 0, 1, &[None; 11]);
        assert_eq!(*e.before(1)[1].t, Term::Opaque(0, 1));
    }
}
