//! Payload classes for every EInsn op and the proof of each class's emitted bytes.
//!
//! Coverage per op: every value of each numeric field (shift amounts, start/length,
//! sizes up to the op's maximum) with one register assignment, and every register
//! aliasing pattern plus every register in every operand position with representative
//! numeric fields. Each class is proven with the temporaries live and with them dead,
//! and under every CPU feature set that changes the emitted bytes.

use crate::{check, ProveError, Relaxation, Verdict, BPF_TO_X86};
use kops_analysis::RegSet;
use kops_einsn::*;
use kops_kinsn::payload::Payload;
use kops_kinsn::{emit_x86_checked, KinsnOp};
use kops_x86::{CpuFeatures, Feature};
use std::collections::HashSet;

/// One payload to prove, with the registers its proof uses as temporaries.
#[derive(Clone, Debug)]
pub struct Class {
    pub label: String,
    pub payload: u64,
    pub temps: Vec<u8>,
}

#[derive(Clone, Debug)]
pub struct ClassOutcome {
    pub label: String,
    /// Feature set and dead registers the emit was made with.
    pub variant: String,
    pub verdict: Result<Verdict, String>,
}

/// Set partitions of `n` operand positions, each as a block number per position.
fn partitions(n: usize) -> Vec<Vec<usize>> {
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

fn class<P: Payload>(label: String, p: Result<P, kops_kinsn::PayloadError>, temps: Vec<u8>) -> Option<Class> {
    let p = p.ok()?;
    Some(Class { label, payload: p.encode().ok()?, temps })
}

/// Every class of the op named `name`.
pub fn classes(name: &str) -> Vec<Class> {
    let mut v: Vec<Option<Class>> = Vec::new();
    match name {
        "rotate64" | "rotate32" => {
            let w = if name == "rotate64" { 64u8 } else { 32 };
            let mk = |d: u8, s: u8, t: u8, k: u8, lsh: bool| -> Option<Class> {
                let label = format!("dst r{d} src r{s} tmp r{t} k {k}{}", if lsh { " tmp<<" } else { "" });
                let temps = if t != d { vec![t] } else { vec![] };
                if w == 64 {
                    class(label, Rotate64::new(d, s, t, k, lsh), temps)
                } else {
                    class(label, Rotate32::new(d, s, t, k, lsh), temps)
                }
            };
            for k in 1..w {
                for lsh in [false, true] {
                    v.push(mk(0, 1, 2, k, lsh));
                }
            }
            for a in assignments(&[true, false, true]) {
                for k in [1, w / 2, w - 1] {
                    v.push(mk(a[0], a[1], a[2], k, false));
                }
            }
        }
        "select64" => {
            for a in assignments(&[true, false, false, false]) {
                for (c32, m32) in [(false, false), (true, false), (false, true), (true, true)] {
                    let label = format!(
                        "dst r{} = r{}{} ? r{} : r{}{}",
                        a[0], a[1], if c32 { " (w)" } else { "" }, a[2], a[3], if m32 { " (mov32)" } else { "" }
                    );
                    v.push(class(label, Select::new(a[0], a[1], a[2], a[3], c32, m32), vec![]));
                }
            }
        }
        "select_cmp" => {
            // roles: dst, lhs, rhs, src
            for a in assignments(&[true, false, false, false]) {
                for cmp in CMP_OPS {
                    for (j32, m32) in [(false, false), (true, false), (false, true), (true, true)] {
                        let label = format!(
                            "r{} = ({}{} op {:#x} {}{}) ? r{} : r{}{}",
                            a[0],
                            if j32 { "w" } else { "r" },
                            a[1],
                            cmp,
                            if j32 { "w" } else { "r" },
                            a[2],
                            a[0],
                            a[3],
                            if m32 { " (mov32)" } else { "" }
                        );
                        v.push(class(label, SelectCmp::new(a[0], a[1], a[2], cmp, j32, a[3], m32), vec![]));
                    }
                }
            }
        }
        "extract64" => {
            for start in 0..64u8 {
                for len in 1..=32u8 {
                    let label = format!("dst r0 src r1 start {start} len {len}");
                    v.push(class(label, Extract::new(0, 1, start, len), vec![]));
                }
            }
            for a in assignments(&[true, false]) {
                for (start, len) in [(0, 8), (13, 32), (60, 4)] {
                    let label = format!("dst r{} src r{} start {start} len {len}", a[0], a[1]);
                    v.push(class(label, Extract::new(a[0], a[1], start, len), vec![]));
                }
            }
        }
        "endian_load16" | "endian_load32" | "endian_load64" => {
            for a in assignments(&[true, false]) {
                for off in [0i16, 14, -8, i16::MAX, i16::MIN] {
                    let label = format!("dst r{} base r{} off {off}", a[0], a[1]);
                    v.push(match name {
                        "endian_load16" => class(label, EndianLoad16::new(a[0], a[1], off), vec![]),
                        "endian_load32" => class(label, EndianLoad32::new(a[0], a[1], off), vec![]),
                        _ => class(label, EndianLoad64::new(a[0], a[1], off), vec![]),
                    });
                }
            }
        }
        "popcount64" => {
            for a in assignments(&[true, false, true, true]) {
                let label = format!("dst r{} src r{} t1 r{} t2 r{}", a[0], a[1], a[2], a[3]);
                let temps = [a[2], a[3]].into_iter().filter(|&t| t != a[0]).collect();
                v.push(class(label, Popcount64::new(a[0], a[1], a[2], a[3]), temps));
            }
        }
        "popcount32" => {
            for a in assignments(&[true, false, true]) {
                let label = format!("dst r{} src r{} tmp r{}", a[0], a[1], a[2]);
                let temps = if a[2] != a[0] { vec![a[2]] } else { vec![] };
                v.push(class(label, Popcount32::new(a[0], a[1], a[2]), temps));
            }
        }
        "memcpy" => {
            for width in [1u8, 2, 4, 8] {
                for count in 1..=(MAX_BULK_BYTES as u8 / width) {
                    for desc in [false, true] {
                        let label = format!("r1+0 <- r2+8, {count} x {width} bytes{}", if desc { " desc" } else { "" });
                        v.push(class(label, Memcpy::new(1, 0, 2, 8, 3, width, count, desc), vec![3]));
                    }
                }
            }
            for a in assignments(&[false, false, true]) {
                for (width, count) in [(8u8, 3u8), (1, 5)] {
                    let label = format!("r{}-16 <- r{}+4 tmp r{}, {count} x {width}", a[0], a[1], a[2]);
                    v.push(class(label, Memcpy::new(a[0], -16, a[1], 4, a[2], width, count, false), vec![a[2]]));
                }
            }
        }
        "memset" => {
            for width in [1u8, 2, 4, 8] {
                for count in 1..=(MAX_BULK_BYTES as u8 / width) {
                    for value in [0u8, 0xa5] {
                        let label = format!("r1+0, {count} x {width} bytes of {value:#x}");
                        v.push(class(label, Memset::new(1, 0, width, count, value), vec![]));
                    }
                }
            }
            for a in assignments(&[false]) {
                let label = format!("r{}-24, 5 x 8 bytes of 0", a[0]);
                v.push(class(label, Memset::new(a[0], -24, 8, 5, 0), vec![]));
            }
        }
        "prefetch" => {
            for a in assignments(&[false]) {
                for off in [0i16, 64, -1] {
                    v.push(class(format!("r{} + {off}", a[0]), Prefetch::new(a[0], off), vec![]));
                }
            }
        }
        "spec_barrier" => v.push(class("barrier".into(), Ok(SpecBarrier), vec![])),
        _ => {}
    }
    v.into_iter().flatten().collect()
}

/// Feature sets that can change an op's emitted bytes: all features, and each one masked.
pub fn feature_sets() -> Vec<(String, CpuFeatures)> {
    let all = CpuFeatures::all();
    let mut v = vec![("all features".to_string(), all)];
    for f in [Feature::Popcnt, Feature::Movbe, Feature::Bmi1, Feature::Bmi2, Feature::Erms] {
        v.push((format!("no {}", f.name()), all.without(f)));
    }
    v
}

/// Prove one class in every variant (feature set x temporaries live/dead); identical
/// emitted bytes are proven once.
pub fn prove_class(op: &dyn KinsnOp, c: &Class) -> Vec<ClassOutcome> {
    let proof = match op.instantiate(c.payload) {
        Ok(p) => p,
        Err(e) => {
            return vec![ClassOutcome { label: c.label.clone(), variant: "-".into(), verdict: Err(e.to_string()) }]
        }
    };
    let mut out = Vec::new();
    let mut done: HashSet<(Vec<u8>, u16)> = HashSet::new();
    let dead_sets: Vec<(String, RegSet)> = if c.temps.is_empty() {
        vec![("".into(), RegSet(0))]
    } else {
        vec![("temps live".into(), RegSet(0)), ("temps dead".into(), RegSet::from_regs(&c.temps))]
    };
    for (fname, feats) in feature_sets() {
        for (dname, dead) in &dead_sets {
            let variant = format!("{fname}{}{dname}", if dname.is_empty() { "" } else { ", " });
            let bytes = match emit_x86_checked(op, c.payload, feats, *dead, &kops_jit::REGMAP, kops_jit::AUX_REG) {
                Ok(Some(b)) => b,
                Ok(None) => continue, // fallback: the JIT compiles the proof sequence itself
                Err(e) => {
                    out.push(ClassOutcome { label: c.label.clone(), variant, verdict: Err(e.to_string()) });
                    continue;
                }
            };
            // A temporary that aliases an output is not dead in the sense of the proof.
            let dead_bits = dead.0 & 0x3ff;
            if !done.insert((bytes.clone(), dead_bits)) {
                continue;
            }
            let relax = Relaxation { dead_bpf: dead_bits, scratch_x86: 1 << kops_jit::AUX_REG.num() };
            let verdict = check(&proof, &bytes, relax).map_err(|e: ProveError| e.to_string());
            out.push(ClassOutcome { label: c.label.clone(), variant, verdict });
        }
    }
    out
}

/// The register map used here must be the JIT's; keep the prover's own copy honest.
pub fn regmap_matches_jit() -> bool {
    kops_jit::REGMAP.iter().enumerate().all(|(b, r)| BPF_TO_X86[b] == r.num() as usize)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partitions_count_is_bell_number() {
        assert_eq!(partitions(3).len(), 5);
        assert_eq!(partitions(4).len(), 15);
    }

    #[test]
    fn prover_register_map_is_the_jits() {
        assert!(regmap_matches_jit());
    }

    #[test]
    fn every_registered_op_has_classes() {
        for op in kops_einsn::registry().iter() {
            assert!(!classes(op.name()).is_empty(), "no classes for {}", op.name());
        }
    }
}
