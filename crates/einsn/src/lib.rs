//! EInsn: the Kops operation set (layer 5), each with its proof sequence and x86-64 native
//! emit.
//!
//! One file per op (a few hold two widths of one op), each with everything about it:
//!
//! - the payload struct and its field table, declared once with [`payload!`] (codec and
//!   per-field range checks); cross-field rules in [`EInsn::rules`];
//! - the proof sequence ([`EInsn::proof`]) and a human-readable [`EInsn::describe`];
//! - its meaning in plain Rust ([`EInsn::writes`], [`EInsn::place`], [`EInsn::meaning`]),
//!   the oracle of the differential tests;
//! - its payload classes ([`EInsn::classes`]), proven by `kops prove` and run by the
//!   differential tests;
//! - its native emit per architecture ([`EInsn::emit_x86`]); the recognizer measures a
//!   site's cost by calling it.
//!
//! Adding an op is one new file plus one line in the `ops!` list below (which yields
//! [`register_all`], [`AnyOp`] and [`visit_ops`]); its id (`EInsn::ID`, the call `imm` of
//! a site) is stable for ever. `kops prove` lists every registered op with its id-ordered
//! classes.
//!
//! Native emits follow the contract of [`KinsnOp::emit_x86`]: the whole register and memory
//! effect of the proof sequence, except registers the JIT proved dead after the site; only
//! the JIT's scratch register and the flags may be clobbered.

use std::marker::PhantomData;
use std::sync::Arc;

use kops_isa::Insn;
use kops_kinsn::payload::Payload;
use kops_kinsn::{Arch, EmitError, Emitted, KinsnOp, PayloadClass, PayloadError, Registry, X86EmitCtx};

mod abs;
mod bulk;
pub mod classes;
#[macro_use]
pub mod fields;
mod endian;
mod extract;
mod misc;
mod popcount;
mod rotate;
mod select;
mod select_cmp;

pub use abs::Abs;
pub use bulk::{Memcpy, Memset};
pub use classes::Class;
pub use endian::{EndianLoad, EndianLoad16, EndianLoad32, EndianLoad64};
pub use extract::Extract;
pub use misc::{Prefetch, SpecBarrier};
pub use popcount::{Popcount32, Popcount64};
pub use rotate::{Rotate, Rotate32, Rotate64};
pub use select::Select;
pub use select_cmp::{SelectCmp, CMP_OPS};

/// Largest memcpy/memset size in bytes.
pub const MAX_BULK_BYTES: usize = 128;

/// An op's name, stable id (the call `imm` of a site; unique, checked by [`register_all`])
/// and size bounds, declared with its payload by [`payload!`].
pub trait OpInfo {
    const NAME: &'static str;
    const ID: u32;
    /// Upper bound of `proof().len()`.
    const MAX_PROOF: usize;
    /// Upper bound of the x86-64 native size in bytes.
    const MAX_X86: usize;
}

/// An EInsn operation, described by its typed payload.
pub trait EInsn: OpInfo + Payload + Clone + std::fmt::Debug + PartialEq + Send + Sync + 'static {
    /// Rules relating several payload fields (each field's own range comes from the
    /// op's [`payload!`] table).
    fn rules(&self) -> Result<(), PayloadError> {
        Ok(())
    }
    /// The payload classes `kops prove` proves and the native differential tests run.
    fn classes() -> Vec<Class<Self>>;
    /// The proof sequence (call on a payload that `encode`s without error).
    fn proof(&self) -> Vec<Insn>;
    fn describe(&self) -> String;
    /// Features whose absence makes the x86-64 emit fall back.
    fn x86_features(&self) -> Vec<&'static str> {
        Vec::new()
    }
    fn emit_x86(&self, ctx: &mut X86EmitCtx) -> Result<Emitted, EmitError>;

    // The op's meaning, stated directly in Rust: the oracle the differential tests check
    // the proof sequence against (and, through it, the native emit).

    /// Registers the proof sequence may write.
    fn writes(&self) -> Vec<u8>;
    /// Point the op's base registers into a test buffer of `buf` bytes at `base` so that
    /// every access lies inside it; `pick(lo, hi)` is a random value in `lo..=hi`.
    fn place(&self, _pick: &mut dyn FnMut(i64, i64) -> i64, _r: &mut [u64; 11], _base: u64, _buf: usize) {}
    /// Check the state after the proof sequence (`a`, memory `ma`) against the op's
    /// meaning applied to the state before (`b`, memory `mb`, buffer at `base`).
    fn meaning(&self, b: &[u64; 11], mb: &[u8], base: u64, a: &[u64; 11], ma: &[u8]) -> Result<(), String>;

    /// The two transport slots of a site for this payload.
    fn site(&self) -> Result<[Insn; 2], PayloadError> {
        let raw = self.encode()?;
        Ok(kops_kinsn::encode_site(Self::ID, raw).expect("encoded payloads fit in 52 bits"))
    }
}

/// The [`KinsnOp`] descriptor of an [`EInsn`].
pub struct Op<P: EInsn>(PhantomData<fn() -> P>);

impl<P: EInsn> Op<P> {
    pub fn new() -> Op<P> {
        Op(PhantomData)
    }
    pub fn arc() -> Arc<dyn KinsnOp> {
        Arc::new(Op::<P>::new())
    }
}

impl<P: EInsn> Default for Op<P> {
    fn default() -> Self {
        Op::new()
    }
}

impl<P: EInsn> KinsnOp for Op<P> {
    fn name(&self) -> &str {
        P::NAME
    }
    fn id(&self) -> u32 {
        P::ID
    }
    fn max_proof_len(&self) -> usize {
        P::MAX_PROOF
    }
    fn max_native_size(&self, arch: Arch) -> usize {
        match arch {
            Arch::X86_64 => P::MAX_X86,
            Arch::Arm64 => 0,
        }
    }
    fn validate(&self, payload: u64) -> Result<(), PayloadError> {
        P::decode(payload).map(|_| ())
    }
    fn describe(&self, payload: u64) -> Result<String, PayloadError> {
        Ok(P::decode(payload)?.describe())
    }
    fn instantiate(&self, payload: u64) -> Result<Vec<Insn>, PayloadError> {
        Ok(P::decode(payload)?.proof())
    }
    fn x86_features(&self, payload: u64) -> Vec<&'static str> {
        P::decode(payload).map(|p| p.x86_features()).unwrap_or_default()
    }
    fn emit_x86(&self, payload: u64, ctx: &mut X86EmitCtx) -> Result<Emitted, EmitError> {
        P::decode(payload)?.emit_x86(ctx)
    }
    fn classes(&self) -> Vec<PayloadClass> {
        P::classes()
            .into_iter()
            .map(|c| PayloadClass { label: c.label, payload: c.payload.encode().expect("classes encode"), temps: c.temps })
            .collect()
    }
}

/// Something done for every op type (see [`visit_ops`]).
pub trait OpVisitor {
    fn visit<P: EInsn>(&mut self);
}

/// For [`EInsn::meaning`]: a register value against the meaning's.
pub fn check_eq(what: &str, got: u64, want: u64) -> Result<(), String> {
    if got != want {
        return Err(format!("{what}: proof gives {got:#x}, meaning says {want:#x}"));
    }
    Ok(())
}

/// The op list: one line per op. Yields [`register_all`], [`AnyOp`] and [`visit_ops`].
macro_rules! ops {
    ($($ty:ident),* $(,)?) => {
        /// A payload of any EInsn op (what the recognizer produces for a site).
        #[derive(Debug, Clone, PartialEq, Eq)]
        pub enum AnyOp {
            $($ty($ty),)*
        }
        $(impl From<$ty> for AnyOp {
            fn from(p: $ty) -> AnyOp {
                AnyOp::$ty(p)
            }
        })*
        impl AnyOp {
            pub fn name(&self) -> &'static str {
                match self { $(AnyOp::$ty(_) => <$ty as OpInfo>::NAME,)* }
            }
            pub fn id(&self) -> u32 {
                match self { $(AnyOp::$ty(_) => <$ty as OpInfo>::ID,)* }
            }
            pub fn encode(&self) -> Result<u64, PayloadError> {
                match self { $(AnyOp::$ty(p) => p.encode(),)* }
            }
            /// The two transport slots of the site.
            pub fn site(&self) -> Result<[Insn; 2], PayloadError> {
                match self { $(AnyOp::$ty(p) => p.site(),)* }
            }
            pub fn describe(&self) -> String {
                match self { $(AnyOp::$ty(p) => p.describe(),)* }
            }
            pub fn proof(&self) -> Vec<Insn> {
                match self { $(AnyOp::$ty(p) => p.proof(),)* }
            }
        }
        /// Call `v.visit::<P>()` for every op type.
        pub fn visit_ops(v: &mut impl OpVisitor) {
            $(v.visit::<$ty>();)*
        }
        /// Add every EInsn op to `r`.
        pub fn register_all(r: &mut Registry) -> Result<(), kops_kinsn::RegistryError> {
            $(r.register(Op::<$ty>::arc())?;)*
            Ok(())
        }
    };
}

ops! {
    Rotate64,
    Rotate32,
    Select,
    Extract,
    EndianLoad16,
    EndianLoad32,
    EndianLoad64,
    Popcount64,
    Popcount32,
    Memcpy,
    Memset,
    Prefetch,
    SpecBarrier,
    SelectCmp,
    Abs,
}

impl std::fmt::Display for AnyOp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.describe())
    }
}

/// A registry holding every EInsn op.
pub fn registry() -> Registry {
    let mut r = Registry::new();
    register_all(&mut r).expect("EInsn ids and names are unique");
    r
}

pub(crate) fn w(is64: bool) -> kops_x86::Width {
    kops_x86::Width::from_is64(is64)
}

#[cfg(test)]
mod tests;
