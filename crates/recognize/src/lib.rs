//! Idiom recognizer: finds what clang emits for rotates, selects, bit-field extracts,
//! endian loads, popcounts, bulk copies/zeroing and byte-load ladders, and rewrites them
//! into kinsn sites (or, for ladders, into one plain wide load).
//!
//! Layout:
//! - [`find_matches`]: every pass over one instruction array, each match checked for
//!   safety (no branch target inside, no subprogram boundary crossed, temporaries dead
//!   after the site, operand widths); [`Found`] holds matches and rejected candidates;
//! - [`policy`]: the static cost model that decides per site ([`Policy`], [`Mode`]);
//! - [`encode`]: turns a match into the instructions that replace it (the EInsn site of
//!   its payload, or the plain wide load);
//! - [`rewrite`]: applies accepted matches and fixes up jumps, calls, pseudo-func
//!   references, subprograms, func_info and line_info; [`run_program`] iterates
//!   match/decide/apply on a [`kops_object::Program`] until nothing changes (so idioms
//!   that clang interleaves are taken one after the other), [`rewrite_object`] does every
//!   program, [`write_object`] writes the result as ELF through `kops_object::write`.
//!
//! How the data-flow idioms are matched: each candidate last instruction (an `or`, `rsh`,
//! `and`, `be`) is evaluated symbolically over up to 64 slots of its basic block
//! ([`sym`]); the value it produces is compared with the idiom's term (rotate, clang's
//! popcount expansion, shift+mask, load+swap, byte ladder). The instructions that
//! contributed (the backward slice, minus those computing the idiom's input) are the
//! idiom; everything else in between is kept, in order, after (or before) the site, and
//! is checked not to read the idiom's intermediate values. Select and bulk copy/zeroing
//! are matched by shape. Pointer kinds ([`ptr`]) decide overlap and wide-load alignment.

pub mod encode;
pub mod passes;
pub mod policy;
pub mod ptr;
pub mod rewrite;
pub mod sym;

use kops_analysis::{Analysis, AnalysisError};
use kops_einsn::AnyOp;
use kops_isa::Insn;
use std::fmt;

pub use policy::{Decision, Mode, Policy};
pub use rewrite::{rewrite_object, run_program, write_object, ObjectReport, ProgramReport, Rewritten, SiteReport};

/// The recognizer passes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Pass {
    Rotate,
    Select,
    Extract,
    Endian,
    Popcount,
    Bulk,
    Prefetch,
    WideLoad,
    Abs,
}

impl Pass {
    pub const ALL: [Pass; 9] = [
        Pass::Popcount,
        Pass::WideLoad,
        Pass::Rotate,
        Pass::Endian,
        Pass::Bulk,
        Pass::Select,
        Pass::Extract,
        Pass::Prefetch,
        Pass::Abs,
    ];
    pub fn name(self) -> &'static str {
        match self {
            Pass::Rotate => "rotate",
            Pass::Select => "select",
            Pass::Extract => "extract",
            Pass::Endian => "endian",
            Pass::Popcount => "popcount",
            Pass::Bulk => "bulk",
            Pass::Prefetch => "prefetch",
            Pass::WideLoad => "wideload",
            Pass::Abs => "abs",
        }
    }
    pub fn from_name(s: &str) -> Option<Pass> {
        Pass::ALL.iter().copied().find(|p| p.name() == s)
    }
    /// Parse a comma-separated list (`rotate,select`); `all` means every pass.
    pub fn parse_list(s: &str) -> Result<Vec<Pass>, String> {
        let mut out = Vec::new();
        for name in s.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            if name == "all" {
                return Ok(Pass::ALL.to_vec());
            }
            let p = Pass::from_name(name).ok_or_else(|| {
                let names: Vec<_> = Pass::ALL.iter().map(|p| p.name()).collect();
                format!("unknown pass `{name}` (known: {})", names.join(", "))
            })?;
            if !out.contains(&p) {
                out.push(p);
            }
        }
        Ok(out)
    }
}

impl fmt::Display for Pass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Operation width: 32-bit forms act on the low halves and zero-extend.
pub use sym::W as Width;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Operand {
    Reg(u8),
    Imm(i32),
}

impl fmt::Display for Operand {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Operand::Reg(r) => write!(f, "r{r}"),
            Operand::Imm(i) => write!(f, "{i}"),
        }
    }
}

/// The condition of a conditional jump: `lhs <op> rhs`, 64-bit (`JMP`) or 32-bit (`JMP32`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cond {
    pub jmp32: bool,
    /// `BPF_OP` of the jump (`op::JEQ`, ...).
    pub op: u8,
    pub lhs: u8,
    pub rhs: Operand,
}

/// What a match becomes: a kinsn site, described by its EInsn payload (the recognizer
/// builds payloads directly, so a match that no op can express is a rejected candidate),
/// or a plain rewrite.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Site {
    Kinsn(AnyOp),
    WideLoad(WideLoad),
}

/// A plain wide load replacing a byte-load ladder: `dst = *(uN *)(base + off)`, followed by
/// a swap to big endian when `big_endian`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WideLoad {
    pub dst: u8,
    pub base: u8,
    pub off: i16,
    pub size: u8,
    pub big_endian: bool,
}

impl<P: Into<AnyOp>> From<P> for Site {
    fn from(p: P) -> Site {
        Site::Kinsn(p.into())
    }
}

impl Site {
    /// The kinsn payload, if this is a kinsn site.
    pub fn kinsn(&self) -> Option<&AnyOp> {
        match self {
            Site::Kinsn(p) => Some(p),
            Site::WideLoad(_) => None,
        }
    }
}

impl fmt::Display for Site {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Site::Kinsn(p) => f.write_str(&p.describe()),
            Site::WideLoad(WideLoad { dst, base, off, size, big_endian }) => write!(
                f,
                "r{dst} = {}*(u{} *)(r{base} {off:+})",
                if *big_endian { "be " } else { "" },
                size * 8
            ),
        }
    }
}

/// One matched idiom in an instruction array.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Match {
    pub pass: Pass,
    /// Region `[start, end)` the rewrite replaces (slots).
    pub start: usize,
    pub end: usize,
    pub op: Site,
    /// Slots inside the region that are not part of the idiom (interleaved by the
    /// scheduler); they are kept, in order, after the replacement.
    pub keep: Vec<usize>,
    /// Instructions emitted just before the site (e.g. an immediate moved to a register).
    pub prefix: Vec<Insn>,
    /// The site goes before `keep[site_pos]` (0: first, `keep.len()`: after all of them).
    pub site_pos: usize,
    /// Slots of the idiom itself.
    pub idiom_slots: usize,
}

/// Why a candidate was not taken (kept for `--json` diagnostics and tests).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reject {
    pub pass: Pass,
    pub start: usize,
    pub end: usize,
    pub reason: String,
}

/// Results of running the passes over one instruction array.
#[derive(Clone, Debug, Default)]
pub struct Found {
    pub matches: Vec<Match>,
    pub rejects: Vec<Reject>,
}

/// Run `passes` over `insns` (one program: entry plus appended subprograms).
/// `extra_subprog_starts` may add boundaries known from the object (e.g. `Program::subprogs`).
/// Matches may overlap each other; [`rewrite`] chooses among them.
pub fn find_matches(
    insns: &[Insn],
    extra_subprog_starts: &[usize],
    prog_type: Option<kops_object::ProgType>,
    passes: &[Pass],
) -> Result<Found, AnalysisError> {
    let an = analyse(insns, extra_subprog_starts)?;
    let ctx = passes::Ctx::new(insns, &an, prog_type);
    let mut found = Found::default();
    for &p in Pass::ALL.iter().filter(|p| passes.contains(p)) {
        passes::run(p, &ctx, &mut found);
    }
    Ok(found)
}

/// The analyses of a program that may already carry kinsn sites: each site's register
/// effect is taken from its proof sequence (EInsn registry), unknown ones stay conservative.
pub fn analyse(insns: &[Insn], extra_subprog_starts: &[usize]) -> Result<Analysis, AnalysisError> {
    let registry = kops_einsn::registry();
    let eff = kops_kinsn::effects_fn(&registry);
    Analysis::with_options(insns, &kops_analysis::Options { extra_subprog_starts, kinsn_effects: Some(&eff) })
}

#[cfg(test)]
mod tests;
