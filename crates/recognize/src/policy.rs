//! The static cost model and the per-site decision.
//!
//! Costs are counted in native x86-64 instructions: what the baseline (Linux-faithful)
//! JIT emits for the idiom's eBPF instructions, against what the Kops JIT emits for the
//! site with the CPU features it needs present. The heuristics:
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
use crate::{Match, Operand, Pass, SiteOp, Width};
use kops_isa::{op, Insn};

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

/// x86-64 instructions of the Kops JIT's native emit for a site (features present).
pub fn site_cost(o: &SiteOp) -> u32 {
    match o {
        SiteOp::Rotate { dst, src, .. } => 1 + (dst != src) as u32,
        SiteOp::Select { cond, width, .. } if !crate::passes::zero_test(cond) => {
            // select_cmp: cmp/test; cmov (a 32-bit move goes through the scratch register:
            // mov r11d, src; 64-bit cmov, as a 32-bit cmov would clear dst's upper half).
            2 + (*width == Width::W32) as u32
        }
        SiteOp::Select { dst, if_true, if_false, .. } => {
            // test cond; cmov (plus a mov when dst is neither value). Immediates were
            // moved to registers by the match's prefix, counted separately.
            2 + (*if_true != Operand::Reg(*dst) && *if_false != Operand::Reg(*dst)) as u32
        }
        // mov (unless in place); shr; and (unless the field reaches bit 63)
        SiteOp::Extract { dst, src, start, len } => {
            (dst != src) as u32 + 1 + ((*start as u32 + *len as u32) < 64) as u32
        }
        SiteOp::EndianLoad { size, .. } => {
            if *size == 2 {
                2
            } else {
                1
            }
        }
        SiteOp::Popcount { .. } => 1,
        // save rdi/rsi/rcx, two lea, mov ecx, rep movsb, three restores
        SiteOp::Memcpy { .. } => 10,
        // save rdi/rcx/rax, lea, mov ecx, xor eax, rep stosb, three restores
        SiteOp::Memset { .. } => 10,
        SiteOp::Prefetch { .. } => 1,
        SiteOp::WideLoad { big_endian, size, .. } => {
            1 + if *big_endian {
                if *size == 2 {
                    2
                } else {
                    1
                }
            } else {
                0
            }
        }
    }
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
    let blk = &cx.an.blocks[cx.an.block_of[pc]];
    let mut q = pc;
    while q > blk.start {
        q -= 1;
        if !cx.an.insn_start[q] {
            continue;
        }
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
    let after = site_cost(&m.op) + m.prefix.len() as u32;
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
    match &m.op {
        SiteOp::EndianLoad { .. } => d(
            false,
            format!(
                "saves {saving} native instructions by count, but endian loads measured no gain \
                 (endian_parse 1.02-1.03x of jit time over three runs)"
            ),
        ),
        SiteOp::Rotate { .. } | SiteOp::Popcount { .. } | SiteOp::WideLoad { .. } => {
            if saving >= 1 {
                d(true, format!("saves {saving} native instructions"))
            } else {
                d(false, format!("saves {saving} native instructions"))
            }
        }
        SiteOp::Extract { .. } => {
            if saving >= 1 {
                d(true, format!("saves {saving} native instructions"))
            } else {
                d(false, format!("saves {saving}: shr+and is what the baseline JIT emits already"))
            }
        }
        SiteOp::Select { cond, width, .. } => {
            let mut dep = data_dependent(cx, m.start, cond.lhs, 0);
            if let Operand::Reg(r) = cond.rhs {
                dep |= data_dependent(cx, m.start, r, 0);
            }
            // A comparison select (select_cmp) at equal count still removes a branch.
            let min_saving = if crate::passes::zero_test(cond) { 1 } else { 0 };
            if saving < min_saving {
                d(false, format!("saves {saving} native instructions"))
            } else if !dep {
                d(false, "condition not computed from loaded data: branch assumed predictable".into())
            } else {
                let w = if *width == Width::W64 { 64 } else { 32 };
                d(true, format!("data-dependent condition (likely unpredictable), cmov{w} saves {saving}"))
            }
        }
        SiteOp::Memcpy { width, count, .. } | SiteOp::Memset { width, count, .. } => {
            let len = *width as u32 * *count as u32;
            d(
                false,
                format!(
                    "{len} bytes (saves {saving} native instructions by count), but rep movs/stos \
                     measured slower than unrolled runs of this size"
                ),
            )
        }
        SiteOp::Prefetch { .. } => d(false, "a dead load already prefetches; only a measured A/B can justify it".into()),
    }
}
