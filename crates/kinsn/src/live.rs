//! Liveness after each site, computed by the consumer (the JIT) itself.
//!
//! A native emit may leave a register with a different value than the proof sequence
//! would only if that register is dead after the site. The producer of the site (the
//! recognizer, or whoever wrote the program) is not trusted for this: the JIT calls
//! [`dead_after_sites`], which lowers the program and runs the liveness analysis of
//! `kops_analysis` on the lowered program, where every site has its exact proof semantics.

use kops_analysis::{Analysis, Effects, Options, RegSet};
use kops_isa::Insn;
use kops_object::FuncInfo;

use crate::lower::{lower, LowerError, Lowered};
use crate::Registry;

/// Liveness facts for one site.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SiteLiveness {
    /// Sidecar slot in the program with sites.
    pub pc: usize,
    pub op_id: u32,
    pub payload: u64,
    /// Registers (r0..r9) whose value after the site is never read.
    pub dead_after: RegSet,
}

/// For every site of `insns` (in order), the registers dead right after it.
pub fn dead_after_sites(
    insns: &[Insn],
    subprog_starts: &[usize],
    func_info: &[FuncInfo],
    registry: &Registry,
) -> Result<Vec<SiteLiveness>, LowerError> {
    let l = lower(insns, subprog_starts, func_info, &[], registry)?;
    let dead = dead_after_regions(&l)?;
    Ok(l
        .regions
        .iter()
        .zip(dead)
        .map(|(r, dead_after)| SiteLiveness { pc: r.orig_pc, op_id: r.op_id, payload: r.payload, dead_after })
        .collect())
}

/// For every region of a lowered program (in order), the registers dead right after it.
pub fn dead_after_regions(l: &Lowered) -> Result<Vec<RegSet>, LowerError> {
    if l.regions.is_empty() {
        return Ok(Vec::new());
    }
    let a = Analysis::with_options(&l.insns, &Options { extra_subprog_starts: &l.subprog_starts, kinsn_effects: None })
        .map_err(|e| LowerError::Analysis(e.to_string()))?;
    Ok(l
        .regions
        .iter()
        .map(|r| {
            let end = r.end();
            // A site at the very end has no successor: nothing is provably dead.
            let live = if end < a.len { a.live_in[end] } else { RegSet::ALL };
            RegSet::ALL.minus(live).minus(RegSet::FP)
        })
        .collect())
}

/// Register effects of a site, from its proof sequence: `uses` are registers read before
/// being written on some path through the proof, `defs` those written on every path.
/// Suitable for `kops_analysis::Options::kinsn_effects` (see [`effects_fn`]).
pub fn site_effects(registry: &Registry, op_id: u32, payload: u64) -> Option<Effects> {
    let op = registry.get(op_id)?;
    let proof = op.instantiate(payload).ok()?;
    crate::validate_proof(&proof, op.max_proof_len()).ok()?;
    Some(proof_effects(&proof))
}

/// Effects of a validated proof sequence (forward jumps only, so one pass in slot order
/// visits every predecessor first).
pub fn proof_effects(proof: &[Insn]) -> Effects {
    let n = proof.len();
    // Registers defined on every path into slot i (None: not reached yet).
    let mut def_in: Vec<Option<RegSet>> = vec![None; n + 1];
    def_in[0] = Some(RegSet::EMPTY);
    let mut uses = RegSet::EMPTY;
    let merge = |slot: &mut Option<RegSet>, d: RegSet| {
        *slot = Some(match *slot {
            None => d,
            Some(x) => x.intersect(d),
        })
    };
    let mut pc = 0;
    while pc < n {
        let i = &proof[pc];
        let width = if i.is_ld_imm64() { 2 } else { 1 };
        if let Some(d) = def_in[pc] {
            let e = kops_analysis::effects(i);
            uses = uses.union(e.uses.minus(d));
            let out = d.union(e.defs);
            let is_ja = i.is_jump() && i.op() == kops_isa::op::JA;
            if !is_ja {
                merge(&mut def_in[pc + width], out);
            }
            if let Some(t) = i.target(pc) {
                if i.is_jump() {
                    merge(&mut def_in[t as usize], out);
                }
            }
        }
        pc += width;
    }
    Effects { uses: uses.minus(RegSet::FP), defs: def_in[n].unwrap_or(RegSet::EMPTY) }
}

/// A `kinsn_effects` callback for `kops_analysis::Options`: the exact effects of each
/// site from its proof sequence (None for a malformed site: the analysis then keeps its
/// conservative default).
pub fn effects_fn(registry: &Registry) -> impl Fn(usize, &Insn, &Insn) -> Option<Effects> + '_ {
    move |_pc, sidecar, call| {
        if !sidecar.is_kinsn_sidecar() || !call.is_kinsn_call() {
            return None;
        }
        site_effects(registry, call.imm as u32, sidecar.kinsn_payload())
    }
}
