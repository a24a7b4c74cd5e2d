//! Lowering (every site -> its proof sequence) and restoring (proof regions -> sites).
//!
//! Lowering is what the verifier path (the kernel checks the lowered program), the
//! interpreter and any runtime without native forms execute. All control-flow references
//! are fixed for the new layout: jump offsets (`gotol` keeps its offset in `imm`),
//! bpf-to-bpf call offsets, `ld_imm64` pseudo-func offsets, func_info and line_info.
//!
//! The kernel patch rewrites sites one at a time from the back, shifting the recorded
//! region starts after each patch; here the final position of every slot is computed in
//! one pass (`lowered_of`), which gives the same layout and offsets.

use kops_isa::{op, Insn};
use kops_object::{FuncInfo, LineInfo, Program, Subprog};

use crate::transport::{encode_site, find_sites, SiteError};
use crate::validate::validate_proof;
use crate::Registry;

/// One lowered site: its proof sequence occupies `start..start + len` of the lowered
/// program; the site itself was at `orig_pc` (sidecar) and `orig_pc + 1` (call).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Region {
    pub orig_pc: usize,
    pub start: usize,
    pub len: usize,
    pub op_id: u32,
    pub payload: u64,
}

impl Region {
    pub fn end(&self) -> usize {
        self.start + self.len
    }
}

/// A program with every site replaced by its proof sequence.
#[derive(Debug, Clone)]
pub struct Lowered {
    pub insns: Vec<Insn>,
    pub func_info: Vec<FuncInfo>,
    pub line_info: Vec<LineInfo>,
    /// Subprogram starts in the lowered layout (given ones plus call/pseudo-func targets
    /// and func_info offsets).
    pub subprog_starts: Vec<usize>,
    /// In program order.
    pub regions: Vec<Region>,
    /// Lowered slot -> original slot (every slot of a proof region maps to its sidecar).
    pub orig_of: Vec<usize>,
    /// Original slot (and `orig_len`, one past the end) -> lowered slot. A site's call slot
    /// maps to its region start + 1.
    pub lowered_of: Vec<usize>,
    pub orig_len: usize,
    /// line_info entries on a site's call slot that have no slot of their own in the
    /// lowered layout (1-slot proof, or an `ld_imm64` tail at region start + 1):
    /// (index into `regions`, entry with its original `insn_off`). Restored by [`restore`].
    pub dropped_line_info: Vec<(usize, LineInfo)>,
}

impl Lowered {
    /// The region containing lowered slot `pc`, if any.
    pub fn region_at(&self, pc: usize) -> Option<&Region> {
        let i = self.regions.partition_point(|r| r.start <= pc);
        let r = self.regions.get(i.checked_sub(1)?)?;
        (pc < r.end()).then_some(r)
    }

    /// Original slot for a lowered slot (e.g. to map verifier log lines back).
    pub fn orig_slot(&self, pc: usize) -> Option<usize> {
        self.orig_of.get(pc).copied()
    }
}

/// The original program, rebuilt from a [`Lowered`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Restored {
    pub insns: Vec<Insn>,
    pub func_info: Vec<FuncInfo>,
    pub line_info: Vec<LineInfo>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LowerError {
    #[error(transparent)]
    Site(#[from] SiteError),
    #[error("instruction {pc}: target {target} is outside the program (0..{len})")]
    TargetOutOfRange { pc: usize, target: i64, len: usize },
    #[error("instruction {pc}: offset {offset} does not fit its field after re-layout")]
    OffsetOverflow { pc: usize, offset: i64 },
    #[error("func_info[{index}]: insn_off {insn_off} is outside the program (0..{len})")]
    FuncInfoOutOfRange { index: usize, insn_off: u32, len: usize },
    #[error("line_info[{index}]: insn_off {insn_off} is outside the program (0..{len})")]
    LineInfoOutOfRange { index: usize, insn_off: u32, len: usize },
    #[error("lowered instruction {pc}: {msg}")]
    Restore { pc: usize, msg: String },
    #[error("control-flow analysis of the lowered program: {0}")]
    Analysis(String),
}

/// Re-target one control transfer at `pc` (old layout) whose old target is `t`, given the
/// new positions. Returns the new instruction.
fn retarget(i: &Insn, pc: usize, new_pc: usize, new_t: usize) -> Result<Insn, LowerError> {
    let off = new_t as i64 - new_pc as i64 - 1;
    let mut n = *i;
    if i.is_jump() && i.code != op::JMP32 | op::JA {
        n.off = i16::try_from(off).map_err(|_| LowerError::OffsetOverflow { pc, offset: off })?;
    } else {
        n.imm = i32::try_from(off).map_err(|_| LowerError::OffsetOverflow { pc, offset: off })?;
    }
    Ok(n)
}

/// Target slot of a jump, bpf-to-bpf call or pseudo-func `ld_imm64` at `pc`.
fn transfer_target(i: &Insn, pc: usize) -> Option<i64> {
    if i.is_jump() || i.is_pseudo_call() {
        i.target(pc)
    } else if i.is_ld_imm64() && i.src == op::PSEUDO_FUNC {
        Some(pc as i64 + 1 + i.imm as i64)
    } else {
        None
    }
}

/// Instruction starts (false on `ld_imm64` second slots).
fn insn_starts(insns: &[Insn]) -> Vec<bool> {
    kops_analysis::ld_imm64_data_slots(insns).into_iter().map(|data| !data).collect()
}

/// All subprogram starts: the given ones, 0, bpf-to-bpf call and pseudo-func targets, and
/// func_info offsets.
fn all_subprog_starts(insns: &[Insn], given: &[usize], func_info: &[FuncInfo]) -> Vec<usize> {
    let starts = insn_starts(insns);
    let mut v: Vec<usize> = given.to_vec();
    v.push(0);
    v.extend(func_info.iter().map(|f| f.insn_off as usize));
    for pc in (0..insns.len()).filter(|&p| starts[p]) {
        let i = &insns[pc];
        if i.is_pseudo_call() || (i.is_ld_imm64() && i.src == op::PSEUDO_FUNC) {
            if let Some(t) = transfer_target(i, pc) {
                if t >= 0 {
                    v.push(t as usize);
                }
            }
        }
    }
    v.sort_unstable();
    v.dedup();
    v
}

/// Check every site of a program (transport, known op, payload, proof structure,
/// subprogram boundaries, no control transfer into a site's call slot) without lowering.
/// Returns the sites in order.
pub fn check_sites(
    insns: &[Insn],
    subprog_starts: &[usize],
    func_info: &[FuncInfo],
    registry: &Registry,
) -> Result<Vec<crate::Site>, LowerError> {
    Ok(prepare(insns, subprog_starts, func_info, registry)?.into_iter().map(|(s, _)| s).collect())
}

fn prepare(
    insns: &[Insn],
    subprog_starts: &[usize],
    func_info: &[FuncInfo],
    registry: &Registry,
) -> Result<Vec<(crate::Site, Vec<Insn>)>, LowerError> {
    let sites = find_sites(insns)?;
    if sites.is_empty() {
        return Ok(Vec::new());
    }
    let starts = all_subprog_starts(insns, subprog_starts, func_info);
    let mut out = Vec::with_capacity(sites.len());
    for s in sites {
        let pc = s.pc;
        let op = registry.get(s.op_id).ok_or(SiteError::UnknownOp { pc: pc + 1, id: s.op_id })?;
        let name = op.name().to_string();
        op.validate(s.payload).map_err(|err| SiteError::Payload { pc, op: name.clone(), err })?;
        let proof = op.instantiate(s.payload).map_err(|err| SiteError::Payload { pc, op: name.clone(), err })?;
        validate_proof(&proof, op.max_proof_len()).map_err(|err| SiteError::Proof { pc, op: name.clone(), err })?;
        if starts.binary_search(&pc).is_ok() {
            return Err(SiteError::AtSubprogStart { pc }.into());
        }
        if starts.binary_search(&(pc + 1)).is_ok() {
            return Err(SiteError::SpansSubprog { pc, boundary: pc + 1 }.into());
        }
        out.push((s, proof));
    }
    // No control transfer may land on a call slot.
    let is_call_slot = {
        let mut v = vec![false; insns.len() + 1];
        for (s, _) in &out {
            v[s.pc + 1] = true;
        }
        v
    };
    let st = insn_starts(insns);
    for pc in (0..insns.len()).filter(|&p| st[p]) {
        if let Some(t) = transfer_target(&insns[pc], pc) {
            if t >= 0 && (t as usize) < is_call_slot.len() && is_call_slot[t as usize] {
                return Err(SiteError::TargetInsideSite { pc, site: t as usize - 1 }.into());
            }
        }
    }
    Ok(out)
}

/// Lower every site of a program to its proof sequence.
///
/// `subprog_starts` are the program's function starts (more are derived from calls,
/// pseudo-func references and func_info). Every malformed site is an error naming its slot.
pub fn lower(
    insns: &[Insn],
    subprog_starts: &[usize],
    func_info: &[FuncInfo],
    line_info: &[LineInfo],
    registry: &Registry,
) -> Result<Lowered, LowerError> {
    let n = insns.len();
    let prepared = prepare(insns, subprog_starts, func_info, registry)?;
    let all_starts = all_subprog_starts(insns, subprog_starts, func_info);

    // New position of every original slot (and of one past the end).
    let mut lowered_of = vec![0usize; n + 1];
    let mut site_idx = vec![usize::MAX; n];
    for (k, (s, _)) in prepared.iter().enumerate() {
        site_idx[s.pc] = k;
    }
    let mut cur = 0usize;
    let mut pc = 0usize;
    while pc < n {
        if site_idx[pc] != usize::MAX {
            let len = prepared[site_idx[pc]].1.len();
            lowered_of[pc] = cur;
            lowered_of[pc + 1] = cur + 1;
            cur += len;
            pc += 2;
        } else {
            lowered_of[pc] = cur;
            cur += 1;
            pc += 1;
        }
    }
    lowered_of[n] = cur;
    let new_len = cur;

    let st = insn_starts(insns);
    let mut out = Vec::with_capacity(new_len);
    let mut orig_of = Vec::with_capacity(new_len);
    let mut regions = Vec::with_capacity(prepared.len());
    let mut pc = 0usize;
    while pc < n {
        if site_idx[pc] != usize::MAX {
            let (s, proof) = &prepared[site_idx[pc]];
            regions.push(Region { orig_pc: pc, start: out.len(), len: proof.len(), op_id: s.op_id, payload: s.payload });
            out.extend_from_slice(proof);
            orig_of.extend(std::iter::repeat_n(pc, proof.len()));
            pc += 2;
            continue;
        }
        let i = &insns[pc];
        let mut ni = *i;
        if st[pc] {
            if let Some(t) = transfer_target(i, pc) {
                if t < 0 || t > n as i64 {
                    return Err(LowerError::TargetOutOfRange { pc, target: t, len: n });
                }
                ni = retarget(i, pc, lowered_of[pc], lowered_of[t as usize])?;
            }
        }
        out.push(ni);
        orig_of.push(pc);
        pc += 1;
    }

    let mut new_fi = Vec::with_capacity(func_info.len());
    for (index, f) in func_info.iter().enumerate() {
        if f.insn_off as usize >= n {
            return Err(LowerError::FuncInfoOutOfRange { index, insn_off: f.insn_off, len: n });
        }
        new_fi.push(FuncInfo { insn_off: lowered_of[f.insn_off as usize] as u32, type_id: f.type_id });
    }

    let out_starts = insn_starts(&out);
    let mut new_li = Vec::with_capacity(line_info.len());
    let mut dropped = Vec::new();
    for (index, l) in line_info.iter().enumerate() {
        let o = l.insn_off as usize;
        if o >= n {
            return Err(LowerError::LineInfoOutOfRange { index, insn_off: l.insn_off, len: n });
        }
        // A line on a site's call slot goes to region start + 1 when that is an
        // instruction of the proof; otherwise it has no slot of its own.
        if o > 0 && site_idx[o - 1] != usize::MAX {
            let r = regions.iter().position(|r| r.orig_pc == o - 1).expect("region of a site");
            let p = regions[r].start + 1;
            if regions[r].len < 2 || !out_starts[p] {
                dropped.push((r, l.clone()));
                continue;
            }
        }
        let mut nl = l.clone();
        nl.insn_off = lowered_of[o] as u32;
        new_li.push(nl);
    }

    let mut new_starts: Vec<usize> = all_starts.iter().filter(|&&s| s < n).map(|&s| lowered_of[s]).collect();
    new_starts.dedup();

    Ok(Lowered {
        insns: out,
        func_info: new_fi,
        line_info: new_li,
        subprog_starts: new_starts,
        regions,
        orig_of,
        lowered_of,
        orig_len: n,
        dropped_line_info: dropped,
    })
}

/// Rebuild the program with sites from its lowered form: every recorded region becomes
/// its two-slot site again and every offset is fixed back. Instructions outside the
/// regions may not jump into a region's interior.
pub fn restore(l: &Lowered) -> Result<Restored, LowerError> {
    let n = l.insns.len();
    // Restored position of every lowered slot; region interiors map to the call slot.
    let mut pos = vec![0usize; n + 1];
    let mut in_region = vec![false; n + 1];
    let mut cur = 0usize;
    let mut p = 0usize;
    let mut ri = 0usize;
    while p < n {
        if let Some(r) = l.regions.get(ri).filter(|r| r.start == p) {
            if r.len == 0 || r.end() > n {
                return Err(LowerError::Restore { pc: p, msg: format!("recorded region {}..{} is malformed", r.start, r.end()) });
            }
            pos[p] = cur;
            for q in p + 1..r.end() {
                pos[q] = cur + 1;
                in_region[q] = true;
            }
            cur += 2;
            p = r.end();
            ri += 1;
        } else {
            if let Some(r) = l.regions.get(ri) {
                if r.start < p {
                    return Err(LowerError::Restore { pc: r.start, msg: "recorded regions overlap or are out of order".into() });
                }
            }
            pos[p] = cur;
            cur += 1;
            p += 1;
        }
    }
    if ri != l.regions.len() {
        return Err(LowerError::Restore { pc: n, msg: "recorded region outside the program".into() });
    }
    pos[n] = cur;

    let st = insn_starts(&l.insns);
    let mut out = Vec::with_capacity(cur);
    let mut p = 0usize;
    let mut ri = 0usize;
    while p < n {
        if let Some(r) = l.regions.get(ri).filter(|r| r.start == p) {
            let site = encode_site(r.op_id, r.payload)?;
            out.extend_from_slice(&site);
            p = r.end();
            ri += 1;
            continue;
        }
        let i = &l.insns[p];
        let mut ni = *i;
        if st[p] {
            if let Some(t) = transfer_target(i, p) {
                if t < 0 || t > n as i64 {
                    return Err(LowerError::TargetOutOfRange { pc: p, target: t, len: n });
                }
                if in_region[t as usize] {
                    return Err(LowerError::Restore { pc: p, msg: format!("jumps into the proof region containing {t}") });
                }
                ni = retarget(i, p, pos[p], pos[t as usize])?;
            }
        }
        if i.is_kinsn_call() {
            return Err(LowerError::Restore { pc: p, msg: "kinsn call outside a recorded region".into() });
        }
        out.push(ni);
        p += 1;
    }

    let mut fi = Vec::with_capacity(l.func_info.len());
    for (index, f) in l.func_info.iter().enumerate() {
        let o = f.insn_off as usize;
        if o >= n {
            return Err(LowerError::FuncInfoOutOfRange { index, insn_off: f.insn_off, len: n });
        }
        if in_region[o] {
            return Err(LowerError::Restore { pc: o, msg: format!("func_info[{index}] points inside a proof region") });
        }
        fi.push(FuncInfo { insn_off: pos[o] as u32, type_id: f.type_id });
    }
    let mut li = Vec::with_capacity(l.line_info.len() + l.dropped_line_info.len());
    for (index, e) in l.line_info.iter().enumerate() {
        if e.insn_off as usize >= n {
            return Err(LowerError::LineInfoOutOfRange { index, insn_off: e.insn_off, len: n });
        }
        let mut ne = e.clone();
        ne.insn_off = pos[e.insn_off as usize] as u32;
        li.push(ne);
    }
    for (r, e) in &l.dropped_line_info {
        let reg = l.regions.get(*r).ok_or(LowerError::Restore { pc: n, msg: "dropped line_info names no region".into() })?;
        let mut ne = e.clone();
        ne.insn_off = pos[reg.start] as u32 + 1;
        li.push(ne);
    }
    li.sort_by_key(|e| e.insn_off);
    Ok(Restored { insns: out, func_info: fi, line_info: li })
}

/// Lower a loaded program: returns a copy with lowered instructions, subprograms,
/// func_info and line_info, plus the [`Lowered`] record.
pub fn lower_program(prog: &Program, registry: &Registry) -> Result<(Program, Lowered), LowerError> {
    let starts: Vec<usize> = prog.subprogs.iter().map(|s| s.start).collect();
    let l = lower(&prog.insns, &starts, &prog.func_info, &prog.line_info, registry)?;
    let mut p = prog.clone();
    p.insns = l.insns.clone();
    p.func_info = l.func_info.clone();
    p.line_info = l.line_info.clone();
    let new_starts: Vec<usize> = prog.subprogs.iter().map(|s| l.lowered_of[s.start.min(l.orig_len)]).collect();
    p.subprogs = prog
        .subprogs
        .iter()
        .enumerate()
        .map(|(k, s)| {
            let start = new_starts[k];
            let end = l.lowered_of[(s.start + s.len).min(l.orig_len)];
            let mut ns: Subprog = s.clone();
            ns.start = start;
            ns.len = end.saturating_sub(start);
            ns
        })
        .collect();
    Ok((p, l))
}
