//! The x86-64 side of the interface: the context a native emitter writes into, and the
//! checked emit the JIT calls for every site.

use kops_analysis::RegSet;
use kops_x86::{Asm, CpuFeatures, Reg};

use crate::payload::PayloadError;
use crate::{Arch, KinsnOp};

/// What a native emitter gets.
///
/// The register map and the scratch register come from the JIT, so emitters never assume
/// a particular assignment: operands that land on fixed hardware registers (`rep movs`
/// needs rdi/rsi/rcx) are handled by comparing mapped registers.
pub struct X86EmitCtx {
    /// Scratch buffer the emitter appends to (empty on entry).
    pub asm: Asm,
    /// CPU features available at JIT time (already masked by `KOPS_DISABLE_FEATURES`).
    pub features: CpuFeatures,
    /// BPF registers whose value after the site is never read, as computed by the JIT
    /// ([`crate::dead_after_sites`]). The emitter may leave these different from the proof
    /// sequence's result; every other register must match exactly.
    pub dead_after: RegSet,
    /// BPF r0..r10 -> x86-64 register (the JIT's map).
    pub regmap: [Reg; 11],
    /// One register the emitter may clobber freely (the JIT's scratch; not in `regmap`).
    pub scratch: Reg,
}

impl X86EmitCtx {
    pub fn new(features: CpuFeatures, dead_after: RegSet, regmap: [Reg; 11], scratch: Reg) -> X86EmitCtx {
        X86EmitCtx { asm: Asm::new(), features, dead_after, regmap, scratch }
    }
    /// x86 register of BPF register `r` (validated payloads only hold r0..r10).
    pub fn reg(&self, r: u8) -> Reg {
        self.regmap[r as usize]
    }
    /// Must the emitter reproduce the proof sequence's final value of BPF register `r`?
    pub fn live(&self, r: u8) -> bool {
        !self.dead_after.contains(r)
    }
}

/// Result of a native emitter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Emitted {
    /// Code was appended to `ctx.asm`.
    Native,
    /// Nothing was appended; the JIT compiles the proof sequence instead.
    Fallback(&'static str),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EmitError {
    #[error(transparent)]
    Payload(#[from] PayloadError),
    #[error("`{op}`: native x86-64 code is {size} bytes, more than the op's maximum {max}")]
    TooLarge { op: String, size: usize, max: usize },
    #[error("`{op}`: emitter reported fallback but wrote {size} bytes")]
    FallbackWroteCode { op: String, size: usize },
    #[error("invalid x86 emit context: {0}")]
    BadContext(String),
}

fn check_map(regmap: &[Reg; 11], scratch: Reg) -> Result<(), EmitError> {
    for (i, r) in regmap.iter().enumerate() {
        if *r == Reg::Rsp {
            return Err(EmitError::BadContext(format!("BPF r{i} is mapped to rsp")));
        }
        if regmap[..i].contains(r) {
            return Err(EmitError::BadContext(format!("BPF r{i} shares {} with another register", r.name64())));
        }
    }
    if scratch == Reg::Rsp || regmap.contains(&scratch) {
        return Err(EmitError::BadContext(format!("scratch register {} is rsp or a BPF register", scratch.name64())));
    }
    Ok(())
}

/// Emit the native x86-64 form of one site into a scratch buffer, check it against the
/// op's maximum size, and return the bytes (`None`: fallback, compile the proof sequence).
///
/// Emitters are pure functions of (payload, features, dead_after, regmap, scratch), so a
/// sizing pass and the final pass get identical bytes.
pub fn emit_x86_checked(
    op: &dyn KinsnOp,
    payload: u64,
    features: CpuFeatures,
    dead_after: RegSet,
    regmap: &[Reg; 11],
    scratch: Reg,
) -> Result<Option<Vec<u8>>, EmitError> {
    check_map(regmap, scratch)?;
    op.validate(payload)?;
    // r10 is never dead: it is the frame pointer.
    let dead = dead_after.intersect(RegSet(0x3ff));
    let mut ctx = X86EmitCtx::new(features, dead, *regmap, scratch);
    match op.emit_x86(payload, &mut ctx)? {
        Emitted::Fallback(_) => {
            if !ctx.asm.is_empty() {
                return Err(EmitError::FallbackWroteCode { op: op.name().to_string(), size: ctx.asm.len() });
            }
            Ok(None)
        }
        Emitted::Native => {
            let max = op.max_native_size(Arch::X86_64);
            if ctx.asm.len() > max {
                return Err(EmitError::TooLarge { op: op.name().to_string(), size: ctx.asm.len(), max });
            }
            Ok(Some(ctx.asm.into_bytes()))
        }
    }
}

/// How the JIT compiles one region of a lowered program.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegionPlan {
    /// Registers dead after the site (computed here from the lowered program).
    pub dead_after: RegSet,
    /// Native code to emit in place of the whole region, or `None`: compile the region's
    /// proof instructions as ordinary eBPF (fallback).
    pub native: Option<Vec<u8>>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    #[error(transparent)]
    Lower(#[from] crate::LowerError),
    #[error("instruction {pc}: kinsn site `{op}`: {err}")]
    Emit { pc: usize, op: String, err: EmitError },
}

/// Everything the x86-64 JIT needs for a program with sites: the lowered program (to JIT
/// instruction by instruction, with one address per slot as usual) and, per region (in
/// `lowered.regions` order), either the native bytes to emit at the region's first slot
/// instead of the region's instructions, or fallback. Jumps from outside a region only
/// land on its first slot or after it, so skipping a region's interior is safe.
pub fn plan_x86(
    insns: &[kops_isa::Insn],
    subprog_starts: &[usize],
    func_info: &[kops_object::FuncInfo],
    registry: &crate::Registry,
    features: CpuFeatures,
    regmap: &[Reg; 11],
    scratch: Reg,
) -> Result<(crate::Lowered, Vec<RegionPlan>), PlanError> {
    let l = crate::lower(insns, subprog_starts, func_info, &[], registry)?;
    let dead = crate::live::dead_after_regions(&l)?;
    let mut plans = Vec::with_capacity(l.regions.len());
    for (r, dead_after) in l.regions.iter().zip(dead) {
        let op = registry.get(r.op_id).expect("lower checked the op id");
        let native = emit_x86_checked(op.as_ref(), r.payload, features, dead_after, regmap, scratch)
            .map_err(|err| PlanError::Emit { pc: r.orig_pc, op: op.name().to_string(), err })?;
        plans.push(RegionPlan { dead_after, native });
    }
    Ok((l, plans))
}
