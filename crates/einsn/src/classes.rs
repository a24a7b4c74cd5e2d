//! Payload classes: each op enumerates its own ([`EInsn::classes`](crate::EInsn::classes)),
//! once, for both the prover (`kops prove`) and the native differential tests.
//!
//! Native code depends on the payload only through amounts/lengths/sizes/flags, which
//! registers alias, and the x86 encoding of each register (REX for r8..r15, rbp/r13 need a
//! displacement, rsp/r12 a SIB byte; rdi/rsi/rcx/rax are fixed operands of `rep movs/stos`).
//! Ops therefore take every value of each numeric field with one register assignment, and
//! every register aliasing pattern plus every register in every operand position
//! ([`assignments`]) with representative numeric fields.

use std::collections::HashSet;

use kops_kinsn::PayloadError;

/// One payload class: a representative payload, its label, and the registers its proof
/// sequence uses as temporaries (proven both live and dead after the site).
#[derive(Debug, Clone, PartialEq)]
pub struct Class<P> {
    pub label: String,
    pub payload: P,
    pub temps: Vec<u8>,
}

impl<P> Class<P> {
    /// A class, or None when the constructor rejected the fields (the enumerations try
    /// register patterns that an op's rules may exclude).
    pub fn new(label: String, payload: Result<P, PayloadError>, temps: Vec<u8>) -> Option<Class<P>> {
        payload.ok().map(|payload| Class { label, payload, temps })
    }
    pub fn collect(v: Vec<Option<Class<P>>>) -> Vec<Class<P>> {
        v.into_iter().flatten().collect()
    }
}

/// Set partitions of `n` operand positions, each as a block number per position.
pub fn partitions(n: usize) -> Vec<Vec<usize>> {
    let mut out = vec![vec![]];
    for _ in 0..n {
        let mut next = Vec::new();
        for p in &out {
            let blocks = p.iter().copied().max().map_or(0, |m| m + 1);
            for b in 0..=blocks {
                let mut q = p.clone();
                q.push(b);
                next.push(q);
            }
        }
        out = next;
    }
    out
}

/// Register assignments for `n` operands: every aliasing pattern (with representatives
/// that include the registers `rep movs/stos` uses: r1=rdi, r2=rsi, r4=rcx, r0=rax), and
/// every register in each position with the others fixed and distinct.
/// `writable[i]`: operand i is written, so r10 is not allowed there.
pub fn assignments(writable: &[bool]) -> Vec<Vec<u8>> {
    let n = writable.len();
    let reps = [1u8, 2, 4, 0, 6, 3, 5, 7];
    let mut out = Vec::new();
    let mut seen = HashSet::new();
    let mut push = |v: Vec<u8>, out: &mut Vec<Vec<u8>>| {
        if v.iter().zip(writable).all(|(&r, &w)| r <= 9 || (!w && r == 10)) && seen.insert(v.clone()) {
            out.push(v);
        }
    };
    for p in partitions(n) {
        push(p.iter().map(|&b| reps[b]).collect(), &mut out);
    }
    for pos in 0..n {
        for r in 0..=10u8 {
            let mut others = (0..=9u8).filter(|&x| x != r);
            let v: Vec<u8> = (0..n).map(|i| if i == pos { r } else { others.next().unwrap() }).collect();
            push(v, &mut out);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::*;

    #[test]
    fn partitions_are_bell_numbers() {
        assert_eq!(partitions(3).len(), 5);
        assert_eq!(partitions(4).len(), 15);
    }

    #[test]
    fn every_op_has_classes_that_validate() {
        let r = registry();
        for op in r.iter() {
            let classes = op.classes();
            assert!(!classes.is_empty(), "{}", op.name());
            for c in &classes {
                op.validate(c.payload).unwrap();
            }
        }
        // select64: 15 aliasing patterns + 4 positions x 11 registers (minus r10 as dst and
        // repeats), each with 4 flag combinations.
        assert_eq!(Select::classes().len() % 4, 0);
        // rotate64: every amount both ways on one assignment, 3 amounts on the others.
        let n = assignments(&[true, false, true]).iter().filter(|a| a[0] != a[2]).count();
        assert_eq!(Rotate64::classes().len(), 63 * 2 + 3 * n);
    }
}
