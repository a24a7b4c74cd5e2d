//! Idiom recognizer: finds what clang emits for rotates, selects, bit-field extracts,
//! endian loads, popcounts, bulk copies/zeroing and byte-load ladders, and rewrites them
//! into kinsn sites (or, for ladders, into one plain wide load).
//!
//! Layout:
//! - [`find_matches`]: every pass over one instruction array, each match checked for
//!   safety (no branch target inside, no subprogram boundary crossed, temporaries dead
//!   after the site, operand widths); [`Found`] holds matches and rejected candidates;
//! - [`policy`]: the static cost model that decides per site ([`Policy`], [`Mode`]);
//! - [`encode`]: turns a match into the instructions that replace it (EInsn payloads via
//!   [`einsn_bridge`]);
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

pub mod einsn_bridge;
pub mod encode;
pub mod passes;
pub mod policy;
pub mod ptr;
pub mod rewrite;
pub mod sym;

use kops_analysis::{Analysis, AnalysisError};
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
}

impl Pass {
    pub const ALL: [Pass; 8] = [
        Pass::Popcount,
        Pass::WideLoad,
        Pass::Rotate,
        Pass::Endian,
        Pass::Bulk,
        Pass::Select,
        Pass::Extract,
        Pass::Prefetch,
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

/// What a matched site computes: exactly the fields its kinsn payload needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SiteOp {
    /// `dst = rol(src, amount)` at `width`; `tmp` (not dst) is dead after the site.
    Rotate { dst: u8, src: u8, amount: u8, width: Width, tmp: u8 },
    /// `dst = cond ? if_true : if_false` (`width` is the width of the moves).
    Select { dst: u8, cond: Cond, if_true: Operand, if_false: Operand, width: Width },
    /// `dst = (src >> start) & (2^len - 1)`.
    Extract { dst: u8, src: u8, start: u8, len: u8 },
    /// `dst = bswap_size(*(uN *)(base + off))`.
    EndianLoad { dst: u8, base: u8, off: i16, size: u8 },
    /// `dst = popcount(src)` (width 32: of the low half); `tmps` are dead after the site
    /// (the 32-bit form uses only the first).
    Popcount { dst: u8, src: u8, width: Width, tmps: [u8; 2] },
    /// `count` chunks of `width` bytes from `src_base + src_off` to `dst_base + dst_off`,
    /// in ascending or descending chunk order; `tmp` ends holding the last chunk stored.
    Memcpy { dst_base: u8, dst_off: i16, src_base: u8, src_off: i16, width: u8, count: u8, descending: bool, tmp: u8 },
    /// `count` chunks of `width` bytes at `base + off` filled with `value`.
    Memset { base: u8, off: i16, width: u8, count: u8, value: u8 },
    /// Prefetch of `base + off`.
    Prefetch { base: u8, off: i16 },
    /// Plain wide load replacing a byte-load ladder (`big_endian`: followed by a swap).
    WideLoad { dst: u8, base: u8, off: i16, size: u8, big_endian: bool },
}

impl fmt::Display for SiteOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let w = |w: &Width| if *w == Width::W64 { 64 } else { 32 };
        match self {
            SiteOp::Rotate { dst, src, amount, width, tmp } => {
                write!(f, "r{dst} = rol{}(r{src}, {amount}) tmp r{tmp}", w(width))
            }
            SiteOp::Select { dst, cond, if_true, if_false, width } => write!(
                f,
                "r{dst} = ({}{} {} {}) ? {if_true} : {if_false} (mov{})",
                if cond.jmp32 { "w" } else { "r" },
                cond.lhs,
                jmp_op_name(cond.op),
                match cond.rhs {
                    Operand::Reg(r) => format!("{}{r}", if cond.jmp32 { "w" } else { "r" }),
                    Operand::Imm(i) => i.to_string(),
                },
                w(width)
            ),
            SiteOp::Extract { dst, src, start, len } => write!(f, "r{dst} = (r{src} >> {start}) & ((1 << {len}) - 1)"),
            SiteOp::EndianLoad { dst, base, off, size } => {
                write!(f, "r{dst} = be{}(*(u{} *)(r{base} {off:+}))", size * 8, size * 8)
            }
            SiteOp::Popcount { dst, src, width, .. } => write!(f, "r{dst} = popcount{}(r{src})", w(width)),
            SiteOp::Memcpy { dst_base, dst_off, src_base, src_off, width, count, descending, .. } => write!(
                f,
                "memcpy(r{dst_base} {dst_off:+}, r{src_base} {src_off:+}, {count} x {width} bytes{})",
                if *descending { ", descending" } else { "" }
            ),
            SiteOp::Memset { base, off, width, count, value } => {
                write!(f, "memset(r{base} {off:+}, {value:#x}, {count} x {width} bytes)")
            }
            SiteOp::Prefetch { base, off } => write!(f, "prefetch(r{base} {off:+})"),
            SiteOp::WideLoad { dst, base, off, size, big_endian } => write!(
                f,
                "r{dst} = {}*(u{} *)(r{base} {off:+})",
                if *big_endian { "be " } else { "" },
                size * 8
            ),
        }
    }
}

pub fn jmp_op_name(op: u8) -> &'static str {
    use kops_isa::op::*;
    match op {
        JEQ => "==",
        JNE => "!=",
        JGT => ">",
        JGE => ">=",
        JLT => "<",
        JLE => "<=",
        JSGT => "s>",
        JSGE => "s>=",
        JSLT => "s<",
        JSLE => "s<=",
        JSET => "&",
        _ => "?",
    }
}

/// One matched idiom in an instruction array.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Match {
    pub pass: Pass,
    /// Region `[start, end)` the rewrite replaces (slots).
    pub start: usize,
    pub end: usize,
    pub op: SiteOp,
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
    let eff = |_pc: usize, side: &Insn, call: &Insn| einsn_bridge::site_effects(&registry, side, call);
    Analysis::with_options(insns, &kops_analysis::Options { extra_subprog_starts, kinsn_effects: Some(&eff) })
}

#[cfg(test)]
mod tests;
