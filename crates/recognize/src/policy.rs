//! The static cost model and the per-site decision.
//!
//! Costs are counted in native x86-64 instructions: what the baseline (Linux-faithful)
//! JIT emits for the idiom's eBPF instructions, against what the Kops JIT emits for the
//! site: the op's checked native emit, called with the JIT's register map, every CPU
//! feature an emit can use ([`COST_FEATURES`]) and the registers dead after the site, and
//! its instructions counted (a site that falls back costs its proof sequence). The
//! heuristics:
//!
//! - rotate, popcount, wide load: rewritten when they save at least one instruction
//!   (they replace a dependency chain by one instruction; no branch or memory behaviour
//!   changes);
//! - endian load: kept. `movbe` (or load + bswap) saves instructions by count, but measured
//!   side by side endian_parse ran 1.02-1.03x the baseline JIT's time in three runs, and
//!   the endian pass alone 1.00-1.02x. `--policy all` still rewrites them;
//! - extract: the native emit is `shr` + `and` (plus a `mov` when not in place), which is
//!   what the baseline JIT emits for clang's pair already: rewritten only when the count
//!   says it saves (it rarely does; BEXTR would need its control word in a register);
//! - select: rewritten only when the condition is computed from data loaded in the same
//!   basic block (likely unpredictable) and the site saves instructions; a condition on a
//!   loop counter, an argument or a constant-derived value is taken to be predictable,
//!   and a predictable branch is cheaper than a `cmov` dependency. Comparison selects
//!   (select_cmp, clang's `if a <cmp> b goto +1; dst = src`) are taken at equal
//!   instruction count too (`cmp; cmov`, plus `mov r11d, src` for a 32-bit move, against
//!   `cmp; jcc; mov`): the branch is what goes. Measured (`kops bench`, kops/jit):
//!   rewriting every such site made select_clamp 1.36x and select_sortnet 1.05x slower
//!   (predicted branches, and cmov chains through loop-carried min/max), while this rule
//!   (6 of 26 sortnet sites, none of clamp's 4) gave sortnet 0.93 and clamp 1.00;
//! - bulk copy / zeroing: kept. `rep movs`/`rep stos` pay a start-up cost (and `std` for
//!   descending copies a slow microcode path) that the unrolled runs of at most 128 bytes
//!   do not: measured side by side (BENCHMARKS.md), struct_copy ran 2.6x and struct_map
//!   12.7x slower with these sites than on the baseline JIT. `--policy all` still
//!   rewrites them;
//! - prefetch: kept: a dead load already brings the line in; only a measured A/B can show
//!   a gain.

use crate::encode;
use crate::passes::Ctx;
use crate::{Match, Pass, Site};
use kops_analysis::RegSet;
use kops_einsn::AnyOp;
use kops_isa::{op, Insn};
use kops_x86::CpuFeatures;

/// The CPU the cost model assumes: every feature a native emit can use (an x86-64-v3
/// machine), so that the decision does not depend on the machine that rewrites.
pub const COST_FEATURES: fn() -> CpuFeatures = CpuFeatures::all;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// The cost model decides.
    Auto,
    /// Rewrite every site that can be expressed.
    All,
    /// Rewrite nothing (report only).
    None,
}

impl Mode {
    pub fn parse(s: &str) -> Result<Mode, String> {
        match s {
            "auto" => Ok(Mode::Auto),
            "all" => Ok(Mode::All),
            "none" => Ok(Mode::None),
            _ => Err(format!("unknown policy `{s}` (auto, all or none)")),
        }
    }
}

#[derive(Clone, Debug)]
pub struct Policy {
    pub mode: Mode,
    /// Passes to run (others are not searched at all).
    pub passes: Vec<Pass>,
}

impl Default for Policy {
    fn default() -> Self {
        Policy { mode: Mode::Auto, passes: Pass::ALL.to_vec() }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    pub rewrite: bool,
    pub reason: String,
    /// Native x86-64 instructions of the idiom (baseline JIT) and of the site.
    pub native_before: u32,
    pub native_after: u32,
}

impl Decision {
    pub fn saving(&self) -> i32 {
        self.native_before as i32 - self.native_after as i32
    }
}

/// x86-64 instructions the baseline JIT emits for one eBPF instruction (Linux's choices).
pub fn baseline_cost(i: &Insn) -> u32 {
    match i.class() {
        op::ALU | op::ALU64 => match i.op() {
            op::END => {
                if i.imm == 16 {
                    2 // ror ax, 8; movzx eax, ax
                } else {
                    1
                }
            }
            // div/mod: save rax/rdx, test, div, restore
            op::DIV | op::MOD => 6,
            op::LSH | op::RSH | op::ARSH if i.source() == op::X => 3,
            _ => 1,
        },
        op::LDX | op::ST | op::STX => 1,
        op::LD if i.is_ld_imm64() => 1,
        op::LD if i.code == 0 => 0, // second slot of ld_imm64
        op::JMP | op::JMP32 => match i.op() {
            op::JA => 1,
            op::CALL | op::EXIT => 2,
            _ => 2, // cmp/test + jcc
        },
        _ => 1,
    }
}

/// Instructions in x86-64 machine code.
fn count_x86(code: &[u8]) -> u32 {
    let mut d = iced_x86::Decoder::new(64, code, iced_x86::DecoderOptions::NONE);
    let mut n = 0;
    while d.can_decode() {
        let _ = d.decode();
        n += 1;
    }
    n
}

/// Native x86-64 instructions the Kops JIT emits for a site with `dead_after` dead after it
/// (the baseline JIT's count for the plain instructions of a wide load, and for the proof
/// sequence of a kinsn site whose emit falls back).
pub fn site_cost(o: &Site, dead_after: RegSet) -> u32 {
    let plain = |v: &[Insn]| v.iter().map(baseline_cost).sum::<u32>();
    let Site::Kinsn(p) = o else {
        return encode::site(o).map(|v| plain(&v)).unwrap_or(0);
    };
    let registry = kops_einsn::registry();
    let (Some(op), Ok(raw)) = (registry.get(p.id()), p.encode()) else { return 0 };
    let emitted = kops_kinsn::emit_x86_checked(
        op.as_ref(),
        raw,
        COST_FEATURES(),
        dead_after,
        &kops_jit::REGMAP,
        kops_jit::AUX_REG,
    );
    match emitted {
        Ok(Some(code)) => count_x86(&code),
        _ => plain(&p.proof()),
    }
}

/// Registers dead right after the site of `m`: liveness at the end of its region, carried
/// back through the kept instructions that follow the site inside it (straight-line code).
fn dead_after_site(cx: &Ctx, m: &Match) -> RegSet {
    let mut live = cx.an.live_out[m.end - 1];
    for &k in m.keep.iter().skip(m.site_pos).rev().filter(|&&k| cx.an.insn_start[k]) {
        let e = cx.eff(k);
        live = live.minus(e.defs).union(e.uses);
    }
    RegSet(0x3ff).minus(live)
}
/// Baseline cost of the idiom's own instructions in a match.
pub fn idiom_cost(insns: &[Insn], m: &Match) -> u32 {
    (m.start..m.end)
        .filter(|pc| !m.keep.contains(pc))
        .map(|pc| baseline_cost(&insns[pc]))
        .sum()
}

/// Is register `r` before `pc` derived (within a few steps in the block) from a load?
fn data_dependent(cx: &Ctx, pc: usize, r: u8, depth: u32) -> bool {
    if depth > 4 {
        return false;
    }
    for q in cx.starts_before(pc) {
        let i = &cx.insns[q];
        let e = cx.eff(q);
        if e.defs.contains(r) {
            if i.class() == op::LDX {
                return true;
            }
            if matches!(i.class(), op::ALU | op::ALU64) {
                return e.uses.iter().any(|u| u != 10 && data_dependent(cx, q, u, depth + 1));
            }
            return false;
        }
    }
    false
}

pub fn decide(cx: &Ctx, m: &Match, policy: &Policy) -> Decision {
    let before = idiom_cost(cx.insns, m);
    let after = site_cost(&m.op, dead_after_site(cx, m)) + m.prefix.len() as u32;
    let d = |rewrite: bool, reason: String| Decision { rewrite, reason, native_before: before, native_after: after };
    if let Err(e) = encode::site(&m.op) {
        return d(false, format!("not expressible as a site: {e}"));
    }
    match policy.mode {
        Mode::None => return d(false, "policy none".into()),
        Mode::All => return d(true, "policy all".into()),
        Mode::Auto => {}
    }
    let saving = before as i32 - after as i32;
    let by_saving = |min: i32| d(saving >= min, format!("saves {saving} native instructions"));
    let p = match &m.op {
        Site::WideLoad(_) => return by_saving(1),
        Site::Kinsn(p) => p,
    };
    match p {
        AnyOp::EndianLoad16(_) | AnyOp::EndianLoad32(_) | AnyOp::EndianLoad64(_) => d(
            false,
            format!(
                "saves {saving} native instructions by count, but endian loads measured no gain \
                 (endian_parse 1.02-1.03x of jit time over three runs)"
            ),
        ),
        AnyOp::Extract(_) if saving < 1 => {
            d(false, format!("saves {saving}: shr+and is what the baseline JIT emits already"))
        }
        AnyOp::Select(_) | AnyOp::SelectCmp(_) => {
            let (regs, mov32, min_saving) = match p {
                AnyOp::Select(s) => (vec![s.cond], s.mov32, 1),
                // A comparison select (select_cmp) at equal count still removes a branch.
                AnyOp::SelectCmp(s) => (vec![s.lhs, s.rhs], s.mov32, 0),
                _ => unreachable!(),
            };
            let dep = regs.iter().any(|&r| data_dependent(cx, m.start, r, 0));
            if saving < min_saving {
                d(false, format!("saves {saving} native instructions"))
            } else if !dep {
                d(false, "condition not computed from loaded data: branch assumed predictable".into())
            } else {
                let w = if mov32 { 32 } else { 64 };
                d(true, format!("data-dependent condition (likely unpredictable), cmov{w} saves {saving}"))
            }
        }
        AnyOp::Memcpy(kops_einsn::Memcpy { width, count, .. }) | AnyOp::Memset(kops_einsn::Memset { width, count, .. }) => {
            let len = *width as u32 * *count as u32;
            d(
                false,
                format!(
                    "{len} bytes (saves {saving} native instructions by count), but rep movs/stos \
                     measured slower than unrolled runs of this size"
                ),
            )
        }
        AnyOp::Prefetch(_) | AnyOp::SpecBarrier(_) => {
            d(false, "a dead load already prefetches; only a measured A/B can justify it".into())
        }
        // Rotate, popcount, extract and any op without a rule of its own: taken when the
        // native emit saves instructions.
        _ => by_saving(1),
    }
}
