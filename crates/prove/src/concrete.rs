//! Concrete evaluation of the SMT-LIB text [`Smt`] builds: the exact definitions the prover
//! sends to z3, interpreted with every input a value. Used by `check_model` to run the x86
//! model on thousands of states quickly; `check_model` cross-checks it against z3's own
//! `simplify` on a sample of states, so this evaluator is not trusted on its own.
//!
//! Undefined values (havoc constants: flags the model leaves unknown) evaluate to
//! [`Val::Undef`], which propagates; such outputs claim nothing and are not compared.

use crate::smt::Smt;
use std::collections::HashMap;
use std::rc::Rc;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Val {
    Bv(u32, u64),
    Bool(bool),
    Mem(Rc<MemVal>),
    Undef,
}

/// An array: an initial (input) memory plus the stores on top of it, oldest first.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemVal {
    pub root: Rc<str>,
    pub writes: Vec<(u64, u8)>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EvalError {
    #[error("cannot interpret `{0}`")]
    Parse(String),
    #[error("memory `{mem}` read at {addr:#x}, outside the bytes the state defines")]
    ReadOutside { mem: String, addr: u64 },
}

#[derive(Clone, Copy, Debug)]
enum Op {
    Add,
    Sub,
    Mul,
    And,
    Or,
    Xor,
    Shl,
    Lshr,
    Ashr,
    Not,
    Neg,
    Extract(u32, u32),
    Zext(u32),
    Sext(u32),
    Concat,
    Rotl(u32),
    Ite,
    Eq,
    Ult,
    Ule,
    Ugt,
    Uge,
    Slt,
    Sle,
    Sgt,
    Sge,
    BNot,
    BAnd,
    BOr,
    BXor,
    Select,
    Store,
}

#[derive(Clone, Debug)]
enum E {
    Lit(Val),
    Slot(usize),
    App(Op, Vec<E>),
}

/// A compiled closure of definitions with its outputs.
pub struct Program {
    /// Per slot: `Some(name)` for an input (declare-const), `None` for a definition.
    inputs: Vec<Option<String>>,
    defs: Vec<Option<E>>,
    outputs: Vec<E>,
}

enum Sx<'a> {
    Atom(&'a str),
    List(Vec<Sx<'a>>),
}

fn parse(text: &str) -> Result<Sx<'_>, EvalError> {
    let toks: Vec<&str> = crate::smt::split_tokens(text).into_iter().filter(|t| !t.trim().is_empty()).collect();
    let mut pos = 0;
    let sx = parse_at(&toks, &mut pos).ok_or_else(|| EvalError::Parse(text.to_string()))?;
    Ok(sx)
}

fn parse_at<'a>(toks: &[&'a str], pos: &mut usize) -> Option<Sx<'a>> {
    let t = *toks.get(*pos)?;
    *pos += 1;
    match t {
        "(" => {
            let mut v = Vec::new();
            while *toks.get(*pos)? != ")" {
                v.push(parse_at(toks, pos)?);
            }
            *pos += 1;
            Some(Sx::List(v))
        }
        ")" => None,
        a => Some(Sx::Atom(a)),
    }
}

fn atom<'a>(s: &Sx<'a>) -> Option<&'a str> {
    match s {
        Sx::Atom(a) => Some(a),
        Sx::List(_) => None,
    }
}

fn mask(w: u32) -> u64 {
    if w >= 64 {
        u64::MAX
    } else {
        (1u64 << w) - 1
    }
}

fn sext64(v: u64, w: u32) -> i64 {
    ((v << (64 - w)) as i64) >> (64 - w)
}

impl Program {
    /// Compile the definitions `outputs` (terms as text: names or literals) depend on.
    pub fn new(s: &Smt, outputs: &[&str]) -> Result<Program, EvalError> {
        let mut names: HashMap<String, usize> = HashMap::new();
        let mut p = Program { inputs: Vec::new(), defs: Vec::new(), outputs: Vec::new() };
        for line in s.lines_for(outputs) {
            let sx = parse(line)?;
            let bad = || EvalError::Parse(line.to_string());
            let Sx::List(items) = &sx else { return Err(bad()) };
            let head = items.first().and_then(atom).ok_or_else(bad)?;
            let name = items.get(1).and_then(atom).ok_or_else(bad)?.to_string();
            match head {
                "declare-const" => {
                    p.inputs.push(Some(name.clone()));
                    p.defs.push(None);
                }
                "define-fun" => {
                    let e = compile(items.get(4).ok_or_else(bad)?, &names, line)?;
                    p.inputs.push(None);
                    p.defs.push(Some(e));
                }
                _ => return Err(bad()),
            }
            names.insert(name, p.defs.len() - 1);
        }
        for o in outputs {
            let sx = parse(o)?;
            p.outputs.push(compile(&sx, &names, o)?);
        }
        Ok(p)
    }

    /// Names of the inputs, in the order [`Program::eval`] takes their values.
    pub fn input_names(&self) -> Vec<&str> {
        self.inputs.iter().flatten().map(String::as_str).collect()
    }

    /// Evaluate the outputs. `inputs` follows [`Program::input_names`] (`Val::Undef` for an
    /// unknown); `memory(root, addr)` gives an input memory's byte, `None` outside the state.
    pub fn eval(&self, inputs: &[Val], memory: &dyn Fn(&str, u64) -> Option<u8>) -> Result<Vec<Val>, EvalError> {
        let mut slots: Vec<Val> = Vec::with_capacity(self.defs.len());
        let mut next_input = 0;
        for (i, d) in self.defs.iter().enumerate() {
            let v = match d {
                Some(e) => ev(e, &slots, memory)?,
                None => {
                    let v = inputs.get(next_input).cloned().unwrap_or(Val::Undef);
                    next_input += 1;
                    match (&v, self.inputs[i].as_deref()) {
                        // An array input is its root name; its bytes come from `memory`.
                        (Val::Undef, Some(n)) if is_mem_input(n) => Val::Mem(Rc::new(MemVal { root: n.into(), writes: vec![] })),
                        _ => v,
                    }
                }
            };
            slots.push(v);
        }
        self.outputs.iter().map(|e| ev(e, &slots, memory)).collect()
    }
}

/// Memory inputs are the ones named by the model (`mem`, `stack`); the evaluator's
/// caller passes `Val::Undef` for them.
fn is_mem_input(n: &str) -> bool {
    n == "mem" || n == "stack" || n.starts_with("mem_") || n == "native_stack"
}

fn compile(sx: &Sx, names: &HashMap<String, usize>, line: &str) -> Result<E, EvalError> {
    let bad = || EvalError::Parse(line.to_string());
    match sx {
        Sx::Atom("true") => Ok(E::Lit(Val::Bool(true))),
        Sx::Atom("false") => Ok(E::Lit(Val::Bool(false))),
        Sx::Atom(a) => names.get(*a).map(|&i| E::Slot(i)).ok_or_else(bad),
        Sx::List(items) => {
            let num = |s: Option<&Sx>| s.and_then(atom).and_then(|a| a.parse::<u64>().ok()).ok_or_else(bad);
            // (_ bvV W)
            if let Some("_") = items.first().and_then(atom) {
                let lit = items.get(1).and_then(atom).and_then(|a| a.strip_prefix("bv")).ok_or_else(bad)?;
                let w = num(items.get(2))? as u32;
                let v: u64 = lit.parse().map_err(|_| bad())?;
                if w > 64 {
                    return Err(bad());
                }
                return Ok(E::Lit(Val::Bv(w, v)));
            }
            let op = match items.first().ok_or_else(bad)? {
                Sx::Atom(h) => match *h {
                    "bvadd" => Op::Add,
                    "bvsub" => Op::Sub,
                    "bvmul" => Op::Mul,
                    "bvand" => Op::And,
                    "bvor" => Op::Or,
                    "bvxor" => Op::Xor,
                    "bvshl" => Op::Shl,
                    "bvlshr" => Op::Lshr,
                    "bvashr" => Op::Ashr,
                    "bvnot" => Op::Not,
                    "bvneg" => Op::Neg,
                    "concat" => Op::Concat,
                    "ite" => Op::Ite,
                    "=" => Op::Eq,
                    "bvult" => Op::Ult,
                    "bvule" => Op::Ule,
                    "bvugt" => Op::Ugt,
                    "bvuge" => Op::Uge,
                    "bvslt" => Op::Slt,
                    "bvsle" => Op::Sle,
                    "bvsgt" => Op::Sgt,
                    "bvsge" => Op::Sge,
                    "not" => Op::BNot,
                    "and" => Op::BAnd,
                    "or" => Op::BOr,
                    "xor" => Op::BXor,
                    "select" => Op::Select,
                    "store" => Op::Store,
                    _ => return Err(bad()),
                },
                Sx::List(ix) => {
                    let k = num(ix.get(2))? as u32;
                    match ix.get(1).and_then(atom) {
                        Some("extract") => Op::Extract(k, num(ix.get(3))? as u32),
                        Some("zero_extend") => Op::Zext(k),
                        Some("sign_extend") => Op::Sext(k),
                        Some("rotate_left") => Op::Rotl(k),
                        _ => return Err(bad()),
                    }
                }
            };
            let args = items[1..].iter().map(|a| compile(a, names, line)).collect::<Result<Vec<_>, _>>()?;
            Ok(E::App(op, args))
        }
    }
}

fn ev(e: &E, slots: &[Val], memory: &dyn Fn(&str, u64) -> Option<u8>) -> Result<Val, EvalError> {
    let (op, args) = match e {
        E::Lit(v) => return Ok(v.clone()),
        E::Slot(i) => return Ok(slots[*i].clone()),
        E::App(op, args) => (*op, args),
    };
    // Lazy where the result does not need every argument.
    match op {
        Op::Ite => {
            return match ev(&args[0], slots, memory)? {
                Val::Bool(true) => ev(&args[1], slots, memory),
                Val::Bool(false) => ev(&args[2], slots, memory),
                _ => {
                    let (a, b) = (ev(&args[1], slots, memory)?, ev(&args[2], slots, memory)?);
                    Ok(if a == b { a } else { Val::Undef })
                }
            }
        }
        Op::BAnd | Op::BOr => {
            let short = matches!(op, Op::BOr);
            let mut undef = false;
            for a in args {
                match ev(a, slots, memory)? {
                    Val::Bool(b) if b == short => return Ok(Val::Bool(short)),
                    Val::Bool(_) => {}
                    _ => undef = true,
                }
            }
            return Ok(if undef { Val::Undef } else { Val::Bool(!short) });
        }
        _ => {}
    }
    let vals = args.iter().map(|a| ev(a, slots, memory)).collect::<Result<Vec<_>, _>>()?;
    if vals.iter().any(|v| *v == Val::Undef) {
        return Ok(Val::Undef);
    }
    let bad = || EvalError::Parse(format!("{op:?} on {vals:?}"));
    let bv = |i: usize| match vals.get(i) {
        Some(Val::Bv(w, v)) => Ok((*w, *v)),
        _ => Err(bad()),
    };
    let bo = |i: usize| match vals.get(i) {
        Some(Val::Bool(b)) => Ok(*b),
        _ => Err(bad()),
    };
    let bin = |f: &dyn Fn(u32, u64, u64) -> u64| -> Result<Val, EvalError> {
        let ((w, a), (w2, b)) = (bv(0)?, bv(1)?);
        if w != w2 {
            return Err(bad());
        }
        Ok(Val::Bv(w, f(w, a, b) & mask(w)))
    };
    let cmp = |f: &dyn Fn(u32, u64, u64) -> bool| -> Result<Val, EvalError> {
        let ((w, a), (_, b)) = (bv(0)?, bv(1)?);
        Ok(Val::Bool(f(w, a, b)))
    };
    match op {
        Op::Add => bin(&|_, a, b| a.wrapping_add(b)),
        Op::Sub => bin(&|_, a, b| a.wrapping_sub(b)),
        Op::Mul => bin(&|_, a, b| a.wrapping_mul(b)),
        Op::And => bin(&|_, a, b| a & b),
        Op::Or => bin(&|_, a, b| a | b),
        Op::Xor => bin(&|_, a, b| a ^ b),
        Op::Shl => bin(&|w, a, b| if b >= w as u64 { 0 } else { a << b }),
        Op::Lshr => bin(&|w, a, b| if b >= w as u64 { 0 } else { a >> b }),
        Op::Ashr => bin(&|w, a, b| (sext64(a, w) >> b.min(63)) as u64),
        Op::Not => {
            let (w, a) = bv(0)?;
            Ok(Val::Bv(w, !a & mask(w)))
        }
        Op::Neg => {
            let (w, a) = bv(0)?;
            Ok(Val::Bv(w, a.wrapping_neg() & mask(w)))
        }
        Op::Extract(hi, lo) => {
            let (w, a) = bv(0)?;
            if hi >= w || lo > hi {
                return Err(bad());
            }
            Ok(Val::Bv(hi - lo + 1, (a >> lo) & mask(hi - lo + 1)))
        }
        Op::Zext(k) | Op::Sext(k) => {
            let (w, a) = bv(0)?;
            if w + k > 64 {
                return Err(bad());
            }
            let v = if matches!(op, Op::Zext(_)) { a } else { sext64(a, w) as u64 & mask(w + k) };
            Ok(Val::Bv(w + k, v))
        }
        Op::Concat => {
            let ((wh, h), (wl, l)) = (bv(0)?, bv(1)?);
            if wh + wl > 64 || vals.len() != 2 {
                return Err(bad());
            }
            Ok(Val::Bv(wh + wl, h << wl | l))
        }
        Op::Rotl(k) => {
            let (w, a) = bv(0)?;
            let k = k % w;
            Ok(Val::Bv(w, if k == 0 { a } else { (a << k | a >> (w - k)) & mask(w) }))
        }
        Op::Eq => match (&vals[0], &vals[1]) {
            (Val::Bv(w, a), Val::Bv(w2, b)) if w == w2 => Ok(Val::Bool(a == b)),
            (Val::Bool(a), Val::Bool(b)) => Ok(Val::Bool(a == b)),
            _ => Err(bad()),
        },
        Op::Ult => cmp(&|_, a, b| a < b),
        Op::Ule => cmp(&|_, a, b| a <= b),
        Op::Ugt => cmp(&|_, a, b| a > b),
        Op::Uge => cmp(&|_, a, b| a >= b),
        Op::Slt => cmp(&|w, a, b| sext64(a, w) < sext64(b, w)),
        Op::Sle => cmp(&|w, a, b| sext64(a, w) <= sext64(b, w)),
        Op::Sgt => cmp(&|w, a, b| sext64(a, w) > sext64(b, w)),
        Op::Sge => cmp(&|w, a, b| sext64(a, w) >= sext64(b, w)),
        Op::BNot => Ok(Val::Bool(!bo(0)?)),
        Op::BXor => {
            let mut r = false;
            for i in 0..vals.len() {
                r ^= bo(i)?;
            }
            Ok(Val::Bool(r))
        }
        Op::Select => {
            let Val::Mem(m) = &vals[0] else { return Err(bad()) };
            let (_, a) = bv(1)?;
            if let Some(&(_, b)) = m.writes.iter().rev().find(|(x, _)| *x == a) {
                return Ok(Val::Bv(8, b as u64));
            }
            memory(&m.root, a)
                .map(|b| Val::Bv(8, b as u64))
                .ok_or_else(|| EvalError::ReadOutside { mem: m.root.to_string(), addr: a })
        }
        Op::Store => {
            let Val::Mem(m) = &vals[0] else { return Err(bad()) };
            let ((_, a), (w, b)) = (bv(1)?, bv(2)?);
            if w != 8 {
                return Err(bad());
            }
            let mut n = MemVal::clone(m);
            n.writes.push((a, b as u8));
            Ok(Val::Mem(Rc::new(n)))
        }
        Op::Ite | Op::BAnd | Op::BOr => unreachable!(),
    }
}

impl MemVal {
    /// The byte at `addr` after the stores, or `None` where the initial memory shows.
    pub fn written(&self, addr: u64) -> Option<u8> {
        self.writes.iter().rev().find(|(a, _)| *a == addr).map(|x| x.1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn evaluates_what_the_builder_makes() {
        let mut s = Smt::new();
        let x = s.input("x", 64);
        let y = s.input("y", 8);
        let m = s.input_mem("mem");
        let k = s.lit(64, 3);
        let sh = s.shl(&x, &k);
        let ys = s.sext(&y, 64);
        let sum = s.add(&sh, &ys);
        let lt = s.cmp("bvslt", &sum, &x);
        let r = s.rotl(&sum, 13);
        let m2 = s.store(&m, &x, &y, 1);
        let ld = s.load(&m2, &x, 2);
        let p = Program::new(&s, &[&sum.s, &lt.0, &r.s, &ld.s]).unwrap();
        assert_eq!(p.input_names(), vec!["x", "y", "mem"]);
        let xv = 0x8000_0000_0000_0011u64;
        let out = p
            .eval(&[Val::Bv(64, xv), Val::Bv(8, 0xfe), Val::Undef], &|_, a| (a == xv + 1).then_some(0x5a))
            .unwrap();
        let sumv = (xv << 3).wrapping_sub(2);
        assert_eq!(out[0], Val::Bv(64, sumv));
        assert_eq!(out[1], Val::Bool((sumv as i64) < (xv as i64)));
        assert_eq!(out[2], Val::Bv(64, sumv.rotate_left(13)));
        assert_eq!(out[3], Val::Bv(16, 0x5afe));
        // A read the state does not define is an error, never a guess.
        let e = p.eval(&[Val::Bv(64, 0), Val::Bv(8, 0), Val::Undef], &|_, _| None).unwrap_err();
        assert!(matches!(e, EvalError::ReadOutside { .. }), "{e}");
    }
}
