//! Branch targets, basic blocks / CFG, subprogram boundaries and register liveness.
//!
//! Everything works on slot indices (one [`Insn`] per 8-byte slot; the second slot of an
//! `ld_imm64` is never an instruction start). [`Analysis::new`] validates the control flow
//! it needs (targets in range, not inside an `ld_imm64`, no fall-through past the end) and
//! reports violations with the instruction index.
//!
//! Liveness is intraprocedural: every subprogram is analysed with the others' effects
//! summarised at call sites (bpf-to-bpf calls read r1-r5, write r0 and clobber r1-r5; helper
//! and kfunc calls read r1-r5 and clobber r0-r5; `exit` reads r0). r10 is always live.

use kops_isa::op;
use kops_isa::Insn;

pub mod funcs;
pub use funcs::{function_starts, ld_imm64_data_slots, tail_call_reachable};
use std::collections::BTreeSet;
use std::fmt;

/// A set of registers r0..r10 as a bit set (bit n = rn).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct RegSet(pub u16);

impl RegSet {
    pub const EMPTY: RegSet = RegSet(0);
    /// r0..r10.
    pub const ALL: RegSet = RegSet(0x7ff);
    /// r1..r5, the argument registers.
    pub const ARGS: RegSet = RegSet(0b11_1110);
    /// r0..r5, what a helper call clobbers.
    pub const CALLER_SAVED: RegSet = RegSet(0b11_1111);
    pub const FP: RegSet = RegSet(1 << 10);

    pub const fn of(r: u8) -> RegSet {
        RegSet(1 << (r & 0x0f))
    }
    pub fn from_regs(regs: &[u8]) -> RegSet {
        regs.iter().fold(RegSet::EMPTY, |s, &r| s.with(r))
    }
    pub const fn contains(self, r: u8) -> bool {
        self.0 & (1 << (r & 0x0f)) != 0
    }
    pub const fn with(self, r: u8) -> RegSet {
        RegSet(self.0 | (1 << (r & 0x0f)))
    }
    pub const fn without(self, r: u8) -> RegSet {
        RegSet(self.0 & !(1 << (r & 0x0f)))
    }
    pub const fn union(self, o: RegSet) -> RegSet {
        RegSet(self.0 | o.0)
    }
    pub const fn minus(self, o: RegSet) -> RegSet {
        RegSet(self.0 & !o.0)
    }
    pub const fn intersect(self, o: RegSet) -> RegSet {
        RegSet(self.0 & o.0)
    }
    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }
    pub fn iter(self) -> impl Iterator<Item = u8> {
        (0u8..16).filter(move |&r| self.contains(r))
    }
}

impl fmt::Debug for RegSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{{")?;
        for (i, r) in self.iter().enumerate() {
            if i > 0 {
                write!(f, ",")?;
            }
            write!(f, "r{r}")?;
        }
        write!(f, "}}")
    }
}

/// Register effect of one instruction: `uses` are read, `defs` are written or clobbered
/// (a def kills liveness; a register in both is read before it is written).
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct Effects {
    pub uses: RegSet,
    pub defs: RegSet,
}

/// `ld_imm64` with `src_reg = PSEUDO_FUNC`: a function pointer to slot `pc + 1 + imm`.
pub fn is_pseudo_func(i: &Insn) -> bool {
    i.is_ld_imm64() && i.src == op::PSEUDO_FUNC
}

/// Register effects of the instruction at a slot, without knowledge of kinsn operations:
/// a kinsn call is taken to read every register and to write none (always a safe
/// over-approximation of liveness); its sidecar has no register effect (`dst_reg` carries
/// payload bits, not a register).
pub fn effects(i: &Insn) -> Effects {
    let d = RegSet::of(i.dst);
    let s = RegSet::of(i.src);
    let e = |uses: RegSet, defs: RegSet| Effects { uses, defs };
    match i.class() {
        op::ALU | op::ALU64 => {
            if i.is_kinsn_sidecar() {
                return e(RegSet::EMPTY, RegSet::EMPTY);
            }
            let src = if i.source() == op::X { s } else { RegSet::EMPTY };
            match i.op() {
                // mov / movsx read only the source.
                op::MOV => e(src, d),
                op::NEG | op::END => e(d, d),
                _ => e(d.union(src), d),
            }
        }
        op::LDX => e(s, d),
        op::ST => e(d, RegSet::EMPTY),
        op::STX => {
            if i.mode() == op::ATOMIC {
                if i.imm == op::CMPXCHG {
                    // r0 = cmpxchg(dst + off, r0, src)
                    e(d.union(s).with(0), RegSet::of(0))
                } else if i.imm & op::FETCH != 0 {
                    e(d.union(s), s)
                } else {
                    e(d.union(s), RegSet::EMPTY)
                }
            } else {
                e(d.union(s), RegSet::EMPTY)
            }
        }
        op::LD => {
            if i.is_ld_imm64() {
                e(RegSet::EMPTY, d)
            } else if i.mode() == op::ABS || i.mode() == op::IND {
                // Legacy packet access: implicit ctx in r6, result in r0, r1-r5 clobbered.
                let mut uses = RegSet::of(6);
                if i.mode() == op::IND {
                    uses = uses.union(s);
                }
                e(uses, RegSet::CALLER_SAVED)
            } else if i.code == 0 {
                // Second slot of ld_imm64 (or padding): no effect.
                e(RegSet::EMPTY, RegSet::EMPTY)
            } else {
                // Unknown LD form: assume it reads everything.
                e(RegSet::ALL, RegSet::EMPTY)
            }
        }
        _ => {
            // JMP / JMP32
            match i.op() {
                op::CALL => {
                    if i.is_kinsn_call() {
                        e(RegSet::ALL, RegSet::EMPTY)
                    } else if i.src == op::PSEUDO_CALL {
                        e(RegSet::ARGS, RegSet::CALLER_SAVED)
                    } else if i.source() == op::X {
                        // callx: target register plus arguments.
                        e(RegSet::ARGS.union(d), RegSet::CALLER_SAVED)
                    } else {
                        e(RegSet::ARGS, RegSet::CALLER_SAVED)
                    }
                }
                op::EXIT => e(RegSet::of(0), RegSet::EMPTY),
                op::JA => e(RegSet::EMPTY, RegSet::EMPTY),
                _ => {
                    let src = if i.source() == op::X { s } else { RegSet::EMPTY };
                    e(d.union(src), RegSet::EMPTY)
                }
            }
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AnalysisError {
    #[error("instruction {pc}: target {target} is outside the program (0..{len})")]
    TargetOutOfRange { pc: usize, target: i64, len: usize },
    #[error("instruction {pc}: target {target} is the second slot of an ld_imm64")]
    TargetInsideLdImm64 { pc: usize, target: usize },
    #[error("instruction {pc}: ld_imm64 is missing its second slot")]
    TruncatedLdImm64 { pc: usize },
    #[error("instruction {pc}: control falls through past the end of the program")]
    FallsOffEnd { pc: usize },
    #[error("empty program")]
    Empty,
}

/// A basic block `[start, end)` in slots.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Block {
    pub start: usize,
    pub end: usize,
    /// Successor block indices (fall-through first, then the jump target).
    pub succs: Vec<usize>,
    pub preds: Vec<usize>,
}

/// The analyses of one program's instruction array.
#[derive(Debug, Clone)]
pub struct Analysis {
    pub len: usize,
    /// `false` for the second slot of an `ld_imm64`.
    pub insn_start: Vec<bool>,
    /// Targets of jumps (incl. `gotol`), one per slot that some jump lands on.
    pub branch_targets: BTreeSet<usize>,
    /// Targets of bpf-to-bpf calls.
    pub call_targets: BTreeSet<usize>,
    /// Targets of `ld_imm64` pseudo-func references.
    pub func_targets: BTreeSet<usize>,
    /// Sorted subprogram starts: 0, call targets and pseudo-func targets (plus any extra
    /// starts given to [`Analysis::with_options`]).
    pub subprog_starts: Vec<usize>,
    pub blocks: Vec<Block>,
    /// Block index per slot.
    pub block_of: Vec<usize>,
    /// Registers live before / after each slot (r10 always included).
    pub live_in: Vec<RegSet>,
    pub live_out: Vec<RegSet>,
}

/// Why a region `[start, end)` cannot be replaced as one unit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RegionIssue {
    /// A jump lands strictly inside the region (at `at`).
    BranchTargetInside { at: usize },
    /// A subprogram starts inside the region or at its start.
    SubprogBoundary { at: usize },
    /// The region is empty, out of range, or starts/ends inside an `ld_imm64`.
    Malformed,
}

impl fmt::Display for RegionIssue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RegionIssue::BranchTargetInside { at } => write!(f, "branch target at {at} inside the region"),
            RegionIssue::SubprogBoundary { at } => write!(f, "subprogram boundary at {at}"),
            RegionIssue::Malformed => write!(f, "malformed region"),
        }
    }
}

/// Register effects of the kinsn site whose call is at the given slot (sidecar, call).
pub type KinsnEffectsFn<'a> = &'a dyn Fn(usize, &Insn, &Insn) -> Option<Effects>;

/// Options for [`Analysis::with_options`].
#[derive(Default)]
pub struct Options<'a> {
    /// Extra subprogram starts (e.g. from the object's symbol table / func_info).
    pub extra_subprog_starts: &'a [usize],
    /// Register effects of the kinsn site whose call is at the given slot; `None` keeps
    /// the conservative default (reads everything, writes nothing).
    pub kinsn_effects: Option<KinsnEffectsFn<'a>>,
}

impl Analysis {
    pub fn new(insns: &[Insn]) -> Result<Analysis, AnalysisError> {
        Analysis::with_options(insns, &Options::default())
    }

    pub fn with_options(insns: &[Insn], opts: &Options<'_>) -> Result<Analysis, AnalysisError> {
        let len = insns.len();
        if len == 0 {
            return Err(AnalysisError::Empty);
        }
        // Instruction starts.
        let mut insn_start = vec![true; len];
        let mut pc = 0;
        while pc < len {
            if insns[pc].is_ld_imm64() {
                if pc + 1 >= len {
                    return Err(AnalysisError::TruncatedLdImm64 { pc });
                }
                insn_start[pc + 1] = false;
                pc += 2;
            } else {
                pc += 1;
            }
        }
        let check = |pc: usize, t: i64| -> Result<usize, AnalysisError> {
            if t < 0 || t >= len as i64 {
                return Err(AnalysisError::TargetOutOfRange { pc, target: t, len });
            }
            let t = t as usize;
            if !insn_start[t] {
                return Err(AnalysisError::TargetInsideLdImm64 { pc, target: t });
            }
            Ok(t)
        };
        let mut branch_targets = BTreeSet::new();
        let mut call_targets = BTreeSet::new();
        let mut func_targets = BTreeSet::new();
        for pc in (0..len).filter(|&p| insn_start[p]) {
            let i = &insns[pc];
            if i.is_jump() {
                branch_targets.insert(check(pc, i.target(pc).unwrap())?);
            } else if i.is_pseudo_call() {
                call_targets.insert(check(pc, i.target(pc).unwrap())?);
            } else if is_pseudo_func(i) {
                func_targets.insert(check(pc, pc as i64 + 1 + i.imm as i64)?);
            }
        }
        let mut starts: BTreeSet<usize> = [0].into_iter().collect();
        starts.extend(call_targets.iter().copied());
        starts.extend(func_targets.iter().copied());
        for &s in opts.extra_subprog_starts {
            if s < len && insn_start[s] {
                starts.insert(s);
            }
        }
        let subprog_starts: Vec<usize> = starts.into_iter().collect();

        // Leaders.
        let mut leader = vec![false; len];
        for &s in &subprog_starts {
            leader[s] = true;
        }
        for &t in &branch_targets {
            leader[t] = true;
        }
        for pc in (0..len).filter(|&p| insn_start[p]) {
            let i = &insns[pc];
            if i.is_jump() || i.is_exit() {
                if pc + 1 < len {
                    leader[pc + 1] = true;
                }
            }
        }
        let mut blocks: Vec<Block> = Vec::new();
        let mut block_of = vec![0usize; len];
        for pc in 0..len {
            if leader[pc] || blocks.is_empty() {
                if let Some(b) = blocks.last_mut() {
                    b.end = pc;
                }
                blocks.push(Block { start: pc, end: len, succs: vec![], preds: vec![] });
            }
            block_of[pc] = blocks.len() - 1;
        }
        // Edges.
        for b in 0..blocks.len() {
            let (start, end) = (blocks[b].start, blocks[b].end);
            // Last instruction start in the block.
            let last = (start..end).rev().find(|&p| insn_start[p]).unwrap_or(start);
            let i = insns[last];
            let next = if insns[last].is_ld_imm64() { last + 2 } else { last + 1 };
            let mut succs = vec![];
            let falls = !(i.is_exit() || (i.is_jump() && i.op() == op::JA));
            if falls {
                if next >= len {
                    return Err(AnalysisError::FallsOffEnd { pc: last });
                }
                succs.push(block_of[next]);
            }
            if i.is_jump() {
                let t = i.target(last).unwrap() as usize;
                if !succs.contains(&block_of[t]) {
                    succs.push(block_of[t]);
                }
            }
            for &s in &succs {
                blocks[s].preds.push(b);
            }
            blocks[b].succs = succs;
        }

        // Per-slot effects.
        let eff: Vec<Effects> = (0..len)
            .map(|pc| {
                if !insn_start[pc] {
                    return Effects::default();
                }
                let i = &insns[pc];
                if i.is_kinsn_call() {
                    if let (Some(f), true) = (opts.kinsn_effects, pc > 0) {
                        if let Some(e) = f(pc, &insns[pc - 1], i) {
                            return e;
                        }
                    }
                }
                effects(i)
            })
            .collect();

        // Block-level backward dataflow with a worklist.
        let nb = blocks.len();
        let mut gen = vec![RegSet::EMPTY; nb];
        let mut kill = vec![RegSet::EMPTY; nb];
        for (b, blk) in blocks.iter().enumerate() {
            let (mut g, mut k) = (RegSet::EMPTY, RegSet::EMPTY);
            for pc in (blk.start..blk.end).rev() {
                let e = eff[pc];
                g = g.minus(e.defs).union(e.uses);
                k = k.union(e.defs);
            }
            gen[b] = g;
            kill[b] = k;
        }
        let mut bin = vec![RegSet::EMPTY; nb];
        let mut bout = vec![RegSet::EMPTY; nb];
        let mut work: Vec<usize> = (0..nb).collect();
        let mut queued = vec![true; nb];
        while let Some(b) = work.pop() {
            queued[b] = false;
            let out = blocks[b].succs.iter().fold(RegSet::EMPTY, |s, &x| s.union(bin[x]));
            let inn = out.minus(kill[b]).union(gen[b]);
            bout[b] = out;
            if inn != bin[b] {
                bin[b] = inn;
                for &p in &blocks[b].preds {
                    if !queued[p] {
                        queued[p] = true;
                        work.push(p);
                    }
                }
            }
        }
        let mut live_in = vec![RegSet::EMPTY; len];
        let mut live_out = vec![RegSet::EMPTY; len];
        for (b, blk) in blocks.iter().enumerate() {
            let mut cur = bout[b];
            for pc in (blk.start..blk.end).rev() {
                live_out[pc] = cur.union(RegSet::FP);
                let e = eff[pc];
                cur = cur.minus(e.defs).union(e.uses);
                live_in[pc] = cur.union(RegSet::FP);
            }
        }

        Ok(Analysis {
            len,
            insn_start,
            branch_targets,
            call_targets,
            func_targets,
            subprog_starts,
            blocks,
            block_of,
            live_in,
            live_out,
        })
    }

    pub fn is_branch_target(&self, pc: usize) -> bool {
        self.branch_targets.contains(&pc)
    }

    pub fn is_subprog_start(&self, pc: usize) -> bool {
        self.subprog_starts.binary_search(&pc).is_ok()
    }

    /// Index into `subprog_starts` of the subprogram containing `pc`.
    pub fn subprog_of(&self, pc: usize) -> usize {
        match self.subprog_starts.binary_search(&pc) {
            Ok(i) => i,
            Err(i) => i - 1,
        }
    }

    /// Slot range `[start, end)` of subprogram `idx`.
    pub fn subprog_range(&self, idx: usize) -> (usize, usize) {
        let start = self.subprog_starts[idx];
        let end = self.subprog_starts.get(idx + 1).copied().unwrap_or(self.len);
        (start, end)
    }

    /// Registers live after the region `[start, end)` when control leaves it by falling
    /// through to `end` (what the region's replacement must preserve).
    pub fn live_after_region(&self, end: usize) -> RegSet {
        if end == 0 {
            return RegSet::ALL;
        }
        self.live_out[end - 1]
    }

    /// Can `[start, end)` be replaced by one straight-line unit? Jumps may land on `start`
    /// (they then land on the replacement) or on `end`, but not strictly inside; no
    /// subprogram may start in the region (a site may not start a subprogram either).
    pub fn check_region(&self, start: usize, end: usize) -> Result<(), RegionIssue> {
        if start >= end || end > self.len || !self.insn_start[start] || (end < self.len && !self.insn_start[end]) {
            return Err(RegionIssue::Malformed);
        }
        if let Some(&t) = self.branch_targets.range(start + 1..end).next() {
            return Err(RegionIssue::BranchTargetInside { at: t });
        }
        if let Some(&s) = self.subprog_starts.iter().find(|&&s| s >= start && s < end) {
            return Err(RegionIssue::SubprogBoundary { at: s });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
