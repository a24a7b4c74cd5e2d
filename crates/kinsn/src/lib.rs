//! The kinsn extension interface (layer 4).
//!
//! A *kinsn* is an operation with two forms: a **proof sequence** of ordinary eBPF
//! instructions that defines its meaning (the only form the verifier and the interpreter
//! ever see), and a **native emit** per architecture (what the JIT produces for it).
//!
//! - [`KinsnOp`]: the descriptor of one operation (name, stable id, payload codec,
//!   proof-sequence instantiation, native emitters).
//! - [`Registry`]: op id -> descriptor, open to operations defined outside this crate.
//! - [`transport`]: the two-slot bytecode encoding of a site (sidecar + call), bit-compatible
//!   with the reference kernel patch.
//! - [`lower()`] / [`restore`]: turn every site into its proof
//!   sequence with all offset fix-ups, and back; [`validate_proof`]
//!   checks proof sequences structurally.
//! - [`x86`]: the emit context handed to native x86-64 emitters, the checked emit, and
//!   [`plan_x86`] (lowered program + native bytes or fallback per region) for the JIT.
//! - [`live`]: liveness after each site, computed by the consumer itself on the lowered
//!   program (full-state refinement: a native form may differ from the proof only in
//!   registers dead after the site), and exact register effects of sites for
//!   `kops_analysis` ([`effects_fn`]).

pub mod live;
pub mod lower;
pub mod payload;
pub mod transport;
pub mod validate;
pub mod x86;

use std::collections::BTreeMap;
use std::sync::Arc;

use kops_isa::Insn;

pub use kops_analysis::RegSet;
pub use live::{dead_after_regions, dead_after_sites, effects_fn, proof_effects, site_effects, SiteLiveness};
pub use lower::{check_sites, lower, lower_program, restore, LowerError, Lowered, Region, Restored};
pub use payload::PayloadError;
pub use transport::{decode_site, encode_site, find_sites, Site, SiteError, MAX_PAYLOAD};
pub use validate::{validate_proof, ProofError};
pub use x86::{emit_x86_checked, plan_x86, EmitError, Emitted, PlanError, RegionPlan, X86EmitCtx};

/// Target architectures with native emitters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Arch {
    X86_64,
    Arm64,
}

/// The descriptor of one kinsn operation.
///
/// Payloads travel as raw 52-bit integers (see [`transport`]); every method that takes a
/// payload validates it first and reports out-of-range fields as [`PayloadError`]. Ops
/// usually also offer a typed payload struct implementing [`payload::Payload`].
///
/// All methods must be pure functions of their arguments: the JIT sizes and emits a site by
/// calling the emitter twice and relies on identical bytes.
pub trait KinsnOp: Send + Sync + 'static {
    /// Unique, stable name (`"rotate64"`).
    fn name(&self) -> &str;
    /// Stable operation id: the `imm` of the site's call instruction.
    fn id(&self) -> u32;
    /// Upper bound on `instantiate(..).len()` over all valid payloads (slots).
    fn max_proof_len(&self) -> usize;
    /// Upper bound on the native code size in bytes for `arch` (0 = no native form).
    fn max_native_size(&self, arch: Arch) -> usize;
    /// Check every payload field; `Ok` means `instantiate` and the emitters accept it.
    fn validate(&self, payload: u64) -> Result<(), PayloadError>;
    /// Human-readable form of a site, e.g. `r0 = rol64(r1, 13) (tmp r1)`.
    fn describe(&self, payload: u64) -> Result<String, PayloadError>;
    /// The proof sequence: the meaning of the site as plain eBPF (offsets relative to it).
    fn instantiate(&self, payload: u64) -> Result<Vec<Insn>, PayloadError>;
    /// CPU features (names as in `KOPS_DISABLE_FEATURES`) without which the x86-64 emit
    /// falls back for this payload. Informational; the emitter itself decides from
    /// [`X86EmitCtx::features`].
    fn x86_features(&self, _payload: u64) -> Vec<&'static str> {
        Vec::new()
    }
    /// Append the native x86-64 code for the site to `ctx.asm`, or return
    /// [`Emitted::Fallback`] having appended nothing (the JIT then compiles the proof
    /// sequence). The default is "no native form".
    ///
    /// Contract (what the prover checks): after the code, every BPF register (through the
    /// JIT's register map) and memory are as after the proof sequence, except registers in
    /// `ctx.dead_after`; the code may clobber only the JIT's scratch register (r11) and the
    /// flags, must restore `rsp`, and must not jump outside itself.
    fn emit_x86(&self, payload: u64, ctx: &mut X86EmitCtx) -> Result<Emitted, EmitError> {
        self.validate(payload)?;
        let _ = ctx;
        Ok(Emitted::Fallback("no native x86-64 form"))
    }
    /// Representative payloads that together cover every way the native emits depend on
    /// the payload: what `kops prove` proves and the differential tests run.
    fn classes(&self) -> Vec<PayloadClass> {
        Vec::new()
    }
}

/// One payload class of an op (see [`KinsnOp::classes`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PayloadClass {
    pub label: String,
    pub payload: u64,
    /// Registers the proof sequence uses as temporaries (proven both live and dead after
    /// the site).
    pub temps: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegistryError {
    #[error("kinsn op id {id} is already registered (as `{existing}`), cannot register `{name}`")]
    DuplicateId { id: u32, existing: String, name: String },
    #[error("kinsn op name `{name}` is already registered (id {existing}), cannot register it as id {id}")]
    DuplicateName { name: String, existing: u32, id: u32 },
}

/// Op id -> descriptor. Cheap to clone (descriptors are shared).
#[derive(Clone, Default)]
pub struct Registry {
    ops: BTreeMap<u32, Arc<dyn KinsnOp>>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map().entries(self.ops.iter().map(|(id, op)| (id, op.name()))).finish()
    }
}

/// One-line description of a site for listings (`kops disasm`, `jit-diff`):
/// `rotate64 r0 = rol64(r1, 13) [...]`, or why it is malformed.
pub fn describe_site(registry: &Registry, site: &Site) -> Result<String, SiteError> {
    let op = registry.get(site.op_id).ok_or(SiteError::UnknownOp { pc: site.pc + 1, id: site.op_id })?;
    let d = op
        .describe(site.payload)
        .map_err(|err| SiteError::Payload { pc: site.pc, op: op.name().to_string(), err })?;
    Ok(format!("{} {}", op.name(), d))
}

impl Registry {
    pub fn new() -> Registry {
        Registry::default()
    }

    /// Add an operation; ids and names must be unique.
    pub fn register(&mut self, op: Arc<dyn KinsnOp>) -> Result<(), RegistryError> {
        let id = op.id();
        if let Some(e) = self.ops.get(&id) {
            return Err(RegistryError::DuplicateId { id, existing: e.name().to_string(), name: op.name().to_string() });
        }
        if let Some(e) = self.by_name(op.name()) {
            return Err(RegistryError::DuplicateName { name: op.name().to_string(), existing: e.id(), id });
        }
        self.ops.insert(id, op);
        Ok(())
    }

    pub fn get(&self, id: u32) -> Option<&Arc<dyn KinsnOp>> {
        self.ops.get(&id)
    }

    pub fn by_name(&self, name: &str) -> Option<&Arc<dyn KinsnOp>> {
        self.ops.values().find(|o| o.name() == name)
    }

    /// All operations in id order.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<dyn KinsnOp>> {
        self.ops.values()
    }

    pub fn len(&self) -> usize {
        self.ops.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }
}

#[cfg(test)]
mod tests;
