//! Applying matches: region replacement with every fix-up, and the per-program driver.

use crate::passes::{self, Ctx};
use crate::policy::{self, Policy};
use crate::{encode, Match, Pass};
use kops_analysis::{is_pseudo_func, Analysis};
use kops_isa::{op, Insn};
use kops_object::{FuncInfo, LineInfo, Object, Program, Subprog};
use serde::Serialize;

#[derive(Debug, thiserror::Error)]
pub enum RewriteError {
    #[error("program `{prog}`: {msg}")]
    Analysis { prog: String, msg: String },
    #[error("program `{prog}`: instruction {pc}: {msg}")]
    Fixup { prog: String, pc: usize, msg: String },
}

/// One site as reported by `kops inspect` / `kops rewrite`.
#[derive(Clone, Debug, Serialize)]
pub struct SiteReport {
    pub pass: String,
    /// Instruction range in the original program, `[start, end)` (slots).
    pub start: usize,
    pub end: usize,
    /// Slots of the idiom itself (the range may hold interleaved, unrelated instructions).
    pub idiom_slots: usize,
    /// What the site computes.
    pub op: String,
    /// `file:line` from line_info, when the object has it.
    pub line: Option<String>,
    pub source: Option<String>,
    pub rewrite: bool,
    pub reason: String,
    pub native_before: u32,
    pub native_after: u32,
    pub saving: i32,
}

#[derive(Clone, Debug, Serialize)]
pub struct RejectReport {
    pub pass: String,
    pub start: usize,
    pub end: usize,
    pub reason: String,
}

#[derive(Clone, Debug, Serialize)]
pub struct ProgramReport {
    pub name: String,
    pub section: String,
    pub insns_before: usize,
    pub insns_after: usize,
    pub sites: Vec<SiteReport>,
    /// Candidates that matched an idiom's shape but failed a safety check.
    pub rejected: Vec<RejectReport>,
}

#[derive(Clone, Debug, Serialize)]
pub struct ObjectReport {
    pub path: String,
    pub programs: Vec<ProgramReport>,
}

impl ObjectReport {
    pub fn total_sites(&self) -> usize {
        self.programs.iter().map(|p| p.sites.len()).sum()
    }
    pub fn rewritten(&self) -> usize {
        self.programs.iter().flat_map(|p| &p.sites).filter(|s| s.rewrite).count()
    }
}

/// Result of replacing regions in an instruction array.
pub struct Applied {
    pub insns: Vec<Insn>,
    /// New slot of every old slot that survives (region starts map to their replacement).
    pub map: Vec<Option<usize>>,
    /// For every new slot, the old slot it came from (replacement slots: the region start).
    pub origin: Vec<usize>,
}

/// One region replacement: `[start, end)` becomes `new`; `kept` lists (index in `new`, old
/// slot) for the old instructions that survive inside it (their pc-relative fields are
/// fixed like any other's).
pub struct Edit {
    pub start: usize,
    pub end: usize,
    pub new: Vec<Insn>,
    pub kept: Vec<(usize, usize)>,
}

/// Replace non-overlapping regions and fix every pc-relative reference outside them.
pub fn apply(insns: &[Insn], edits: &[Edit]) -> Result<Applied, (usize, String)> {
    let mut edits: Vec<&Edit> = edits.iter().collect();
    edits.sort_by_key(|e| e.start);
    for w in edits.windows(2) {
        if w[0].end > w[1].start {
            return Err((w[1].start, "overlapping rewrite regions".into()));
        }
    }
    let n = insns.len();
    let mut out: Vec<Insn> = Vec::with_capacity(n);
    let mut origin = Vec::with_capacity(n);
    let mut map: Vec<Option<usize>> = vec![None; n + 1];
    // Old slot of each new slot that needs its pc-relative fields fixed.
    let mut fix: Vec<(usize, usize)> = Vec::new();
    let mut pc = 0;
    let mut e = 0;
    while pc < n {
        if e < edits.len() && edits[e].start == pc {
            let ed = edits[e];
            map[ed.start] = Some(out.len());
            for (k, ins) in ed.new.iter().enumerate() {
                match ed.kept.iter().find(|x| x.0 == k) {
                    Some(&(_, old)) => {
                        if old != ed.start {
                            map[old] = Some(out.len());
                        }
                        fix.push((out.len(), old));
                        origin.push(old);
                    }
                    None => origin.push(ed.start),
                }
                out.push(*ins);
            }
            pc = ed.end;
            e += 1;
        } else {
            map[pc] = Some(out.len());
            fix.push((out.len(), pc));
            origin.push(pc);
            out.push(insns[pc]);
            pc += 1;
        }
    }
    map[n] = Some(out.len());
    for (newpc, oldpc) in fix {
        let i = insns[oldpc];
        let target_of = |t: i64| -> Result<i64, (usize, String)> {
            let t = usize::try_from(t).map_err(|_| (oldpc, format!("target {t} out of range")))?;
            let nt = map.get(t).copied().flatten().ok_or((oldpc, format!("target {t} lies inside a rewritten region")))?;
            Ok(nt as i64 - newpc as i64 - 1)
        };
        if i.is_jump() {
            let off = target_of(i.target(oldpc).unwrap())?;
            if i.code == op::JMP32 | op::JA {
                out[newpc].imm = off as i32;
            } else {
                out[newpc].off = i16::try_from(off).map_err(|_| (oldpc, format!("jump offset {off} does not fit 16 bits")))?;
            }
        } else if i.is_pseudo_call() {
            out[newpc].imm = target_of(i.target(oldpc).unwrap())? as i32;
        } else if is_pseudo_func(&i) {
            out[newpc].imm = target_of(oldpc as i64 + 1 + i.imm as i64)? as i32;
        }
    }
    Ok(Applied { insns: out, map, origin })
}

/// Carry subprograms, func_info and line_info through a rewrite.
fn fix_program(prog: &Program, ap: &Applied) -> Result<Program, RewriteError> {
    let err = |pc: usize, msg: &str| RewriteError::Fixup { prog: prog.name.clone(), pc, msg: msg.into() };
    let mut p = prog.clone();
    p.insns = ap.insns.clone();
    let mut subs: Vec<Subprog> = Vec::new();
    for s in &prog.subprogs {
        let start = ap.map.get(s.start).copied().flatten().ok_or_else(|| err(s.start, "subprogram start was rewritten away or out of range"))?;
        subs.push(Subprog { start, len: 0, ..s.clone() });
    }
    for k in 0..subs.len() {
        let end = subs.get(k + 1).map(|s| s.start).unwrap_or(p.insns.len());
        subs[k].len = end - subs[k].start;
    }
    p.subprogs = subs;
    p.func_info = prog
        .func_info
        .iter()
        .map(|f| {
            let o = f.insn_off as usize;
            let n = ap.map.get(o).copied().flatten().ok_or_else(|| err(o, "func_info points into a rewritten region"))?;
            Ok(FuncInfo { insn_off: n as u32, type_id: f.type_id })
        })
        .collect::<Result<_, RewriteError>>()?;
    // line_info: an entry on a removed slot moves to the next surviving slot; the kernel
    // wants strictly increasing offsets, so the first entry for a slot wins.
    let mut li: Vec<LineInfo> = Vec::new();
    for l in &prog.line_info {
        let mut o = l.insn_off as usize;
        while o < ap.map.len() && ap.map[o].is_none() {
            o += 1;
        }
        let Some(n) = ap.map.get(o).copied().flatten() else { continue };
        if n >= p.insns.len() || li.last().is_some_and(|x| x.insn_off as usize >= n) {
            continue;
        }
        let mut l2 = l.clone();
        l2.insn_off = n as u32;
        li.push(l2);
    }
    p.line_info = li;
    Ok(p)
}

fn line_of(prog: &Program, pc: usize) -> Option<&LineInfo> {
    prog.line_info.iter().take_while(|l| l.insn_off as usize <= pc).last()
}

/// A rewritten program.
#[derive(Clone, Debug)]
pub struct Rewritten {
    pub program: Program,
    pub report: ProgramReport,
    /// For each slot of the original program (and its end), the new slot where it is now;
    /// a removed slot maps to the slot that follows it (what `kops_object::write` wants).
    pub old_to_new: Vec<usize>,
}

/// Match, decide and rewrite one program until no more sites are taken. Ranges in the
/// report are in the original program.
pub fn run_program(prog: &Program, policy: &Policy) -> Result<Rewritten, RewriteError> {
    let mut cur = prog.clone();
    let mut origin: Vec<usize> = (0..prog.insns.len()).collect();
    let mut old_to_new: Vec<usize> = (0..=prog.insns.len()).collect();
    let mut sites: Vec<SiteReport> = Vec::new();
    let mut rejected: Vec<RejectReport> = Vec::new();
    let mut seen: std::collections::HashSet<(Pass, usize, usize, String)> = Default::default();
    let orig_end = |origin: &Vec<usize>, end: usize| -> usize {
        // One past the original slot of the last replaced instruction.
        origin.get(end - 1).map(|&o| o + 1 + prog.insns[o].is_ld_imm64() as usize).unwrap_or(prog.insns.len())
    };
    for _round in 0..16 {
        let starts: Vec<usize> = cur.subprogs.iter().map(|s| s.start).collect();
        let an = crate::analyse(&cur.insns, &starts)
        .map_err(|e| RewriteError::Analysis { prog: prog.name.clone(), msg: e.to_string() })?;
        let cx = Ctx::new(&cur.insns, &an, Some(prog.prog_type));
        let mut found = crate::Found::default();
        for &p in Pass::ALL.iter().filter(|p| policy.passes.contains(p)) {
            passes::run(p, &cx, &mut found);
        }
        for r in &found.rejects {
            let (s, e) = (origin[r.start], orig_end(&origin, r.end.max(r.start + 1)));
            if !rejected.iter().any(|x| x.pass == r.pass.name() && x.start == s && x.end == e && x.reason == r.reason) {
                rejected.push(RejectReport { pass: r.pass.name().into(), start: s, end: e, reason: r.reason.clone() });
            }
        }
        // Larger idioms first (a ladder over 8 bytes before the 2-byte ladder inside it).
        let order = |p: Pass| Pass::ALL.iter().position(|&q| q == p).unwrap_or(0);
        found.matches.sort_by_key(|m| (order(m.pass), std::cmp::Reverse(m.idiom_slots), m.start));
        // A match whose idiom is part of a larger one of the same pass (the 2-byte ladder
        // inside the 8-byte ladder) is not a site of its own.
        let subsumed = |m: &Match| {
            found.matches.iter().any(|o| {
                o.pass == m.pass
                    && o.idiom_slots > m.idiom_slots
                    && o.start <= m.start
                    && m.end <= o.end
                    && (m.start..m.end).filter(|pc| !m.keep.contains(pc)).all(|pc| !o.keep.contains(&pc))
            })
        };
        let mut taken: Vec<&Match> = Vec::new();
        for m in found.matches.iter().filter(|m| !subsumed(m)) {
            let key = (m.pass, origin[m.start], orig_end(&origin, m.end), m.op.to_string());
            if seen.contains(&key) {
                continue;
            }
            let dec = policy::decide(&cx, m, policy);
            if dec.rewrite && taken.iter().any(|t| t.start < m.end && m.start < t.end) {
                continue; // overlaps a site taken this round: look again next round
            }
            seen.insert(key.clone());
            let li = line_of(&cur, m.start);
            sites.push(SiteReport {
                pass: m.pass.name().into(),
                start: key.1,
                end: key.2,
                idiom_slots: m.idiom_slots,
                op: m.op.to_string(),
                line: li.map(|l| format!("{}:{}", l.file, l.line())),
                source: li.map(|l| l.source_line.trim().to_string()).filter(|s| !s.is_empty()),
                rewrite: dec.rewrite,
                reason: dec.reason.clone(),
                native_before: dec.native_before,
                native_after: dec.native_after,
                saving: dec.saving(),
            });
            if dec.rewrite {
                taken.push(m);
            }
        }
        if taken.is_empty() {
            break;
        }
        let mut edits = Vec::new();
        for m in &taken {
            let (new, kept) = encode::replacement(&cur.insns, m)
                .map_err(|e| RewriteError::Fixup { prog: prog.name.clone(), pc: m.start, msg: e })?;
            edits.push(Edit { start: m.start, end: m.end, new, kept });
        }
        let ap = apply(&cur.insns, &edits)
            .map_err(|(pc, msg)| RewriteError::Fixup { prog: prog.name.clone(), pc, msg })?;
        let next = fix_program(&cur, &ap)?;
        origin = ap.origin.iter().map(|&o| origin[o]).collect();
        // Fill removed slots with the next surviving one, then compose.
        let mut filled = vec![0usize; ap.map.len()];
        let mut nextv = ap.insns.len();
        for k in (0..ap.map.len()).rev() {
            if let Some(v) = ap.map[k] {
                nextv = v;
            }
            filled[k] = nextv;
        }
        old_to_new = old_to_new.iter().map(|&x| filled[x]).collect();
        cur = next;
    }
    // The result must still be a well-formed program.
    Analysis::new(&cur.insns).map_err(|e| RewriteError::Analysis { prog: prog.name.clone(), msg: format!("after rewriting: {e}") })?;
    sites.sort_by_key(|s| (s.start, s.pass.clone()));
    rejected.sort_by_key(|r| (r.start, r.pass.clone()));
    let report = ProgramReport {
        name: prog.name.clone(),
        section: prog.section.clone(),
        insns_before: prog.insns.len(),
        insns_after: cur.insns.len(),
        sites,
        rejected,
    };
    Ok(Rewritten { program: cur, report, old_to_new })
}

/// Rewrite every program of an object. Returns the rewritten object (in memory), the
/// report, and each program's old-to-new slot map (same order as `obj.programs`).
pub fn rewrite_object(obj: &Object, policy: &Policy) -> Result<(Object, ObjectReport, Vec<Vec<usize>>), RewriteError> {
    let mut out = obj.clone();
    let mut programs = Vec::new();
    let mut maps = Vec::new();
    for (k, p) in obj.programs.iter().enumerate() {
        let r = run_program(p, policy)?;
        out.programs[k] = r.program;
        programs.push(r.report);
        maps.push(r.old_to_new);
    }
    Ok((out, ObjectReport { path: obj.path.clone(), programs }, maps))
}

/// Write a rewritten object as ELF: `original` is the input file's bytes, `obj` the object
/// loaded from it, `new`/`maps` what [`rewrite_object`] returned.
pub fn write_object(original: &[u8], obj: &Object, new: &Object, maps: &[Vec<usize>]) -> Result<Vec<u8>, String> {
    let mut edits: Vec<kops_object::write::FunctionEdit> = Vec::new();
    for (k, p) in obj.programs.iter().enumerate() {
        let es = kops_object::write::edits_from_program(p, &new.programs[k].insns, &maps[k]).map_err(|e| e.to_string())?;
        for e in es {
            match edits.iter().find(|x| x.section == e.section && x.sec_start == e.sec_start) {
                Some(x) if *x == e => {}
                Some(_) => {
                    return Err(format!(
                        "function at {}+{} is shared by several programs and was rewritten differently",
                        e.section, e.sec_start
                    ))
                }
                None => edits.push(e),
            }
        }
    }
    kops_object::write::rewrite_functions(original, &edits).map_err(|e| e.to_string())
}
