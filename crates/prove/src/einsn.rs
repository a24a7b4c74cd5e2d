//! The proof of each payload class's emitted bytes (the classes come from the ops).
//!
//! Coverage per op: every value of each numeric field (shift amounts, start/length,
//! sizes up to the op's maximum) with one register assignment, and every register
//! aliasing pattern plus every register in every operand position with representative
//! numeric fields. Each class is proven with the temporaries live and with them dead,
//! and under every CPU feature set that changes the emitted bytes.

use crate::{check, ProveError, Relaxation, Verdict, BPF_TO_X86};
use kops_analysis::RegSet;
use kops_kinsn::{emit_x86_checked, KinsnOp};
use kops_x86::{CpuFeatures, Feature};
use std::collections::HashSet;

/// One payload to prove, with the registers its proof uses as temporaries: each op
/// enumerates its own ([`KinsnOp::classes`]; the EInsn ops in their op files).
pub use kops_kinsn::PayloadClass as Class;

#[derive(Clone, Debug)]
pub struct ClassOutcome {
    pub label: String,
    /// Feature set and dead registers the emit was made with.
    pub variant: String,
    pub verdict: Result<Verdict, String>,
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
    fn prover_register_map_is_the_jits() {
        assert!(regmap_matches_jit());
    }

    #[test]
    fn every_registered_op_has_classes() {
        for op in kops_einsn::registry().iter() {
            assert!(!op.classes().is_empty(), "no classes for {}", op.name());
        }
    }
}
