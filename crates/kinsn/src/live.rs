//! Liveness after each site, computed by the consumer (the JIT) itself.
//!
//! A native emit may leave a register with a different value than the proof sequence
//! would only if that register is dead after the site. The producer of the site (the
//! recognizer, or whoever wrote the program) is not trusted for this: the JIT calls
//! [`dead_after_sites`], which lowers the program and runs the liveness analysis of
//! `kops_analysis` on the lowered program, where every site has its exact proof semantics.

use kops_analysis::{Analysis, Options, RegSet};
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
