//! Writing an edited object back as ELF (for `kops rewrite`).
//!
//! The writer takes the original object bytes and new instruction arrays for some of its
//! functions, and produces a relocatable ELF object that our loader, libbpf and
//! `llvm-objdump-19` read like a clang-built one. Everything that is not code is kept; what
//! points into code is moved along:
//!
//! - program sections get the new instruction bytes (lengths may change);
//! - relocations in those sections move with the instructions they patch;
//! - function symbols get their new offsets and sizes;
//! - bpf-to-bpf calls and function references (`ld_imm64 src=4`) are re-targeted,
//!   including ones in unedited functions that call an edited one;
//! - `.BTF.ext` func_info, line_info and CO-RE records get their new `insn_off`
//!   (line_info entries that collapse onto the same slot keep only the first, since the
//!   kernel wants strictly increasing offsets), and `.rel.BTF.ext` follows the records;
//! - DWARF (`.debug_*`) and `.llvm_addrsig` are dropped: their code addresses and symbol
//!   indices would be stale, and BTF line_info carries the source lines.
//!
//! # API
//!
//! An edit replaces one function (an ELF `FUNC` symbol) with [`FunctionEdit`]:
//!
//! - `section`, `sec_start`: where the function is (as in [`crate::Subprog`]);
//! - `insns`: the new body, in the **loaded form** of [`crate::Program::insns`]. Slots
//!   that carried a relocation or a bpf-to-bpf call in the original (map and global-data
//!   `ld_imm64`, pseudo calls, function references) must still hold an instruction of the
//!   same kind at their mapped position; the writer puts the original ELF encoding back
//!   there (with re-targeted offsets), so their `imm` in `insns` does not matter. Every other
//!   slot is written as given: intra-function jump offsets must already be fixed up;
//! - `old_to_new`: for each old slot `i` of the function (`0..=old_len`, the last entry
//!   being the end), the new slot where it now is. It must start at 0, end at
//!   `insns.len()` and never decrease; a deleted slot maps to the slot that follows it.
//!
//! [`edits_from_program`] cuts a whole rewritten [`crate::Program`] (entry function plus
//! appended subprograms, with one program-wide `old_to_new`) into per-function edits.
//! Functions shared by several programs may be edited more than once if the edits are
//! identical. [`rewrite_functions`] applies the edits; `rewrite_functions(orig, &[])` is a
//! plain re-serialization.

use std::collections::{BTreeMap, HashMap};

use kops_isa::{op, Insn};
use object::build::elf::{Builder, SectionData, SectionId, SymbolId};
use object::build::Id;
use object::elf;

use crate::btf::{Btf, BtfExt};
use crate::Program;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WriteError {
    #[error("cannot rewrite ELF: {0}")]
    Elf(String),
    #[error("bad edit of {section}+{start}: {msg}")]
    BadEdit { section: String, start: usize, msg: String },
    #[error("bad BTF: {0}")]
    Btf(String),
}

/// New body of one function; see the module documentation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FunctionEdit {
    pub section: String,
    pub sec_start: usize,
    pub insns: Vec<Insn>,
    pub old_to_new: Vec<usize>,
}

/// Splits a rewritten program into per-function edits. `new_insns` is the whole new
/// program and `old_to_new` maps each slot of `prog.insns` (plus the end) to its new slot.
pub fn edits_from_program(prog: &Program, new_insns: &[Insn], old_to_new: &[usize]) -> Result<Vec<FunctionEdit>, WriteError> {
    let bad = |msg: String| WriteError::BadEdit { section: prog.section.clone(), start: 0, msg: format!("program '{}': {msg}", prog.name) };
    if old_to_new.len() != prog.insns.len() + 1 {
        return Err(bad(format!("old_to_new has {} entries for {} slots", old_to_new.len(), prog.insns.len())));
    }
    if old_to_new.windows(2).any(|w| w[0] > w[1]) || old_to_new[prog.insns.len()] != new_insns.len() {
        return Err(bad("old_to_new must be non-decreasing and end at the new length".into()));
    }
    let mut out = Vec::new();
    for sp in &prog.subprogs {
        let (a, b) = (old_to_new[sp.start], old_to_new[sp.start + sp.len]);
        out.push(FunctionEdit {
            section: sp.section.clone(),
            sec_start: sp.sec_start,
            insns: new_insns[a..b].to_vec(),
            old_to_new: old_to_new[sp.start..=sp.start + sp.len].iter().map(|&x| x - a).collect(),
        });
    }
    Ok(out)
}

fn elf_err(e: impl std::fmt::Display) -> WriteError {
    WriteError::Elf(e.to_string())
}

/// An instruction that refers to code or data through the original ELF encoding.
#[derive(Clone, Copy)]
struct Special {
    /// Old slot in the section.
    old: usize,
    wide: bool,
    reloc: Option<SymbolId>,
}

struct SecPlan {
    id: SectionId,
    name: String,
    insns: Vec<Insn>,
    /// Section-wide map, `old_len + 1` entries.
    map: Vec<usize>,
    /// (new slot, special) for every instruction to re-target.
    specials: Vec<(usize, Special)>,
}

/// Applies function edits to an object; see the module documentation.
pub fn rewrite_functions(original: &[u8], edits: &[FunctionEdit]) -> Result<Vec<u8>, WriteError> {
    // The Builder refuses section types it does not know (clang's SHT_LLVM_ADDRSIG);
    // such sections are dropped, so mark them PROGBITS in a copy first.
    let mut input = original.to_vec();
    let dropped_types = neutralize_unknown_sections(&mut input)?;
    let mut b = Builder::read(&input[..]).map_err(elf_err)?;
    if b.header.e_machine != elf::EM_BPF {
        return Err(WriteError::Elf(format!("machine {} is not BPF", b.header.e_machine)));
    }
    // The writer pads to each section's alignment; a corrupted one must not become a
    // terabyte of padding.
    for s in &b.sections {
        if s.sh_addralign > 4096 {
            return Err(WriteError::Elf(format!(
                "section '{}' has alignment {}",
                String::from_utf8_lossy(&s.name),
                s.sh_addralign
            )));
        }
    }

    let sec_name = |b: &Builder, id: SectionId| String::from_utf8_lossy(&b.sections.get(id).name).into_owned();
    let mut by_name: HashMap<String, SectionId> = HashMap::new();
    for s in &b.sections {
        by_name.insert(String::from_utf8_lossy(&s.name).into_owned(), s.id());
    }

    // Relocations per target section, by byte offset.
    let mut relocs: HashMap<usize, BTreeMap<u64, SymbolId>> = HashMap::new();
    for s in &b.sections {
        if let (SectionData::Relocation(rs), Some(t)) = (&s.data, s.sh_info_section) {
            let m = relocs.entry(t.index()).or_default();
            for r in rs {
                if let Some(sym) = r.symbol {
                    m.insert(r.r_offset, sym);
                }
            }
        }
    }

    // Group edits per section, dropping identical duplicates.
    let mut per_sec: BTreeMap<String, BTreeMap<usize, &FunctionEdit>> = BTreeMap::new();
    for e in edits {
        let slot = per_sec.entry(e.section.clone()).or_default();
        if let Some(prev) = slot.get(&e.sec_start) {
            if *prev != e {
                return Err(WriteError::BadEdit { section: e.section.clone(), start: e.sec_start, msg: "two different edits of the same function".into() });
            }
            continue;
        }
        slot.insert(e.sec_start, e);
    }

    // Phase 1: new contents and slot maps of every executable section.
    let mut plans: Vec<SecPlan> = Vec::new();
    for s in &b.sections {
        let is_exec = s.sh_type == elf::SHT_PROGBITS && s.sh_flags & elf::SHF_EXECINSTR as u64 != 0;
        if !is_exec {
            continue;
        }
        let name = sec_name(&b, s.id());
        let SectionData::Data(d) = &s.data else { continue };
        let old = kops_isa::slots_from_bytes(d).map_err(|e| WriteError::Elf(format!("section '{name}': {e}")))?;
        let rel = relocs.get(&s.id().index());
        // Function extents from FUNC symbols.
        let mut funcs: BTreeMap<usize, usize> = BTreeMap::new();
        for y in &b.symbols {
            if y.section == Some(s.id()) && y.st_type() == elf::STT_FUNC && y.st_value % 8 == 0 {
                funcs.insert((y.st_value / 8) as usize, y.st_size.div_ceil(8) as usize);
            }
        }
        let specials_in = |from: usize, to: usize| -> Result<Vec<Special>, WriteError> {
            let mut v = Vec::new();
            let mut i = from;
            while i < to {
                let insn = old[i];
                let r = rel.and_then(|m| m.get(&(i as u64 * 8)).copied());
                let wide = insn.is_ld_imm64();
                if wide && i + 1 >= to {
                    return Err(WriteError::Elf(format!("section '{name}' slot {i}: ld_imm64 is missing its second half")));
                }
                if r.is_some() && !wide && !insn.is_call() {
                    return Err(WriteError::Elf(format!("section '{name}' slot {i}: relocation at a non-ld_imm64, non-call instruction")));
                }
                if r.is_some() || insn.is_pseudo_call() || (wide && insn.src == op::PSEUDO_FUNC) {
                    v.push(Special { old: i, wide, reloc: r });
                }
                i += if wide { 2 } else { 1 };
            }
            Ok(v)
        };
        let sec_edits = per_sec.remove(&name).unwrap_or_default();
        let mut insns = Vec::with_capacity(old.len());
        let mut map = vec![0usize; old.len() + 1];
        let mut specials = Vec::new();
        let mut cur = 0usize;
        let mut edits_iter = sec_edits.into_iter().peekable();
        while cur < old.len() {
            if let Some((&start, e)) = edits_iter.peek().map(|(s, e)| (s, *e)) {
                if start == cur {
                    edits_iter.next();
                    let bad = |msg: String| WriteError::BadEdit { section: name.clone(), start, msg };
                    let Some(&flen) = funcs.get(&start) else {
                        return Err(bad("no function symbol starts there".into()));
                    };
                    let flen = if flen == 0 { e.old_to_new.len().saturating_sub(1) } else { flen };
                    if e.old_to_new.len() != flen + 1 || start + flen > old.len() {
                        return Err(bad(format!("old_to_new has {} entries for a {flen}-slot function", e.old_to_new.len())));
                    }
                    if e.old_to_new[0] != 0 || e.old_to_new[flen] != e.insns.len() || e.old_to_new.windows(2).any(|w| w[0] > w[1]) {
                        return Err(bad("old_to_new must start at 0, never decrease and end at the new length".into()));
                    }
                    let base = insns.len();
                    let mut body = e.insns.clone();
                    for sp in specials_in(start, start + flen)? {
                        let n = e.old_to_new[sp.old - start];
                        let ok = match body.get(n) {
                            Some(x) if sp.wide => x.is_ld_imm64() && n + 1 < body.len(),
                            Some(x) => x.is_call(),
                            None => false,
                        };
                        if !ok {
                            return Err(bad(format!(
                                "old slot {} ({}) has no instruction of the same kind at new slot {n}",
                                sp.old - start,
                                if sp.wide { "ld_imm64" } else { "call" }
                            )));
                        }
                        body[n] = old[sp.old];
                        if sp.wide {
                            body[n + 1] = old[sp.old + 1];
                        }
                        specials.push((base + n, sp));
                    }
                    // A pseudo call or map reference that did not exist before cannot be
                    // expressed without a relocation.
                    let known: Vec<usize> = specials.iter().filter(|x| x.0 >= base).map(|x| x.0 - base).collect();
                    let mut j = 0;
                    while j < body.len() {
                        let x = body[j];
                        let new_ref = x.is_pseudo_call() || (x.is_ld_imm64() && matches!(x.src, op::PSEUDO_FUNC | op::PSEUDO_MAP_IDX | op::PSEUDO_MAP_IDX_VALUE | op::PSEUDO_MAP_FD | op::PSEUDO_MAP_VALUE));
                        if new_ref && !known.contains(&j) {
                            return Err(bad(format!("new slot {j} is a call or map reference that the original function did not have")));
                        }
                        j += if x.is_ld_imm64() { 2 } else { 1 };
                    }
                    for k in 0..=flen {
                        map[start + k] = base + e.old_to_new[k];
                    }
                    insns.extend(body);
                    cur = start + flen;
                    continue;
                }
                if start < cur {
                    return Err(WriteError::BadEdit { section: name.clone(), start, msg: "edit overlaps the previous function".into() });
                }
            }
            // Unedited slot.
            let next = edits_iter.peek().map(|(s, _)| *s).unwrap_or(old.len()).min(old.len());
            for sp in specials_in(cur, next)? {
                specials.push((insns.len() + sp.old - cur, sp));
            }
            for k in cur..next {
                map[k] = insns.len();
                insns.push(old[k]);
            }
            cur = next;
        }
        map[old.len()] = insns.len();
        if let Some(&(start, _)) = edits_iter.peek() {
            return Err(WriteError::BadEdit { section: name.clone(), start, msg: "past the end of the section".into() });
        }
        plans.push(SecPlan { id: s.id(), name, insns, map, specials });
    }
    if let Some((name, m)) = per_sec.into_iter().next() {
        let start = m.keys().next().copied().unwrap_or(0);
        return Err(WriteError::BadEdit { section: name, start, msg: "no such executable section".into() });
    }

    // Phase 2: re-target code references (libbpf's formulas, in both layouts).
    let maps: HashMap<usize, Vec<usize>> = plans.iter().map(|p| (p.id.index(), p.map.clone())).collect();
    let remap = |sec: SectionId, slot: i64| -> Option<i64> {
        let m = maps.get(&sec.index())?;
        usize::try_from(slot).ok().and_then(|s| m.get(s)).map(|&x| x as i64)
    };
    for p in &mut plans {
        for &(n, sp) in &p.specials {
            let insn = p.insns[n];
            let fail = |what: &str| WriteError::Elf(format!("section '{}' slot {}: cannot re-target {what}", p.name, sp.old));
            match sp.reloc {
                None => {
                    // Same-section pseudo call / function reference.
                    let t = sp.old as i64 + 1 + insn.imm as i64;
                    let nt = remap(p.id, t).ok_or_else(|| fail("call"))?;
                    p.insns[n].imm = i32::try_from(nt - n as i64 - 1).map_err(|_| fail("call"))?;
                }
                Some(sym) => {
                    let y = b.symbols.get(sym);
                    let Some(ts) = y.section else { continue };
                    if !maps.contains_key(&ts.index()) {
                        continue; // data reference: unchanged
                    }
                    let yslot = (y.st_value / 8) as i64;
                    let ny = remap(ts, yslot).ok_or_else(|| fail("symbol"))?;
                    if insn.is_call() {
                        let t = yslot + insn.imm as i64 + 1;
                        let nt = remap(ts, t).ok_or_else(|| fail("call"))?;
                        p.insns[n].imm = i32::try_from(nt - ny - 1).map_err(|_| fail("call"))?;
                    } else {
                        let t = (y.st_value as i64 + insn.imm as i64).div_euclid(8);
                        let nt = remap(ts, t).ok_or_else(|| fail("function reference"))?;
                        p.insns[n].imm = i32::try_from((nt - ny) * 8).map_err(|_| fail("function reference"))?;
                    }
                }
            }
        }
    }

    // Phase 3: section data, relocations, symbols.
    let remap_off = |sec: SectionId, off: u64| -> Option<u64> {
        let m = maps.get(&sec.index())?;
        let slot = (off / 8) as usize;
        m.get(slot).map(|&x| x as u64 * 8 + off % 8)
    };
    for p in &plans {
        let s = b.sections.get_mut(p.id);
        s.data = SectionData::Data(kops_isa::to_bytes(&p.insns).into());
        s.sh_size = (p.insns.len() * 8) as u64;
    }
    for s in &mut b.sections {
        let Some(t) = s.sh_info_section else { continue };
        if !maps.contains_key(&t.index()) {
            continue;
        }
        if let SectionData::Relocation(rs) = &mut s.data {
            for r in rs.iter_mut() {
                r.r_offset = remap_off(t, r.r_offset).ok_or_else(|| WriteError::Elf(format!("relocation at {} is past its section", r.r_offset)))?;
            }
        }
    }
    for y in &mut b.symbols {
        let Some(sec) = y.section else { continue };
        let Some(m) = maps.get(&sec.index()) else { continue };
        if y.st_value % 8 != 0 || y.st_type() == elf::STT_SECTION {
            continue;
        }
        let a = (y.st_value / 8) as usize;
        let e = a + y.st_size.div_ceil(8) as usize;
        let (Some(&na), Some(&ne)) = (m.get(a), m.get(e)) else { continue };
        y.st_value = na as u64 * 8;
        if y.st_size > 0 {
            y.st_size = ((ne - na) * 8) as u64;
        }
    }

    // .BTF.ext.
    if let (Some(&ext_id), Some(&btf_id)) = (by_name.get(".BTF.ext"), by_name.get(".BTF")) {
        let SectionData::Data(btf_raw) = &b.sections.get(btf_id).data else {
            return Err(WriteError::Btf(".BTF has no data".into()));
        };
        let btf = Btf::parse(btf_raw).map_err(WriteError::Btf)?;
        let SectionData::Data(ext_raw) = &b.sections.get(ext_id).data else {
            return Err(WriteError::Btf(".BTF.ext has no data".into()));
        };
        let mut ext = BtfExt::parse(ext_raw).map_err(WriteError::Btf)?;
        let sec_of = |name_off: u32| btf.str_at(name_off).and_then(|n| by_name.get(&n).copied()).filter(|id| maps.contains_key(&id.index()));
        let fix = |info: &mut crate::btf::ExtInfo, dedup: bool| {
            for s in &mut info.secs {
                let Some(id) = sec_of(s.name_off) else { continue };
                let mut last: Option<u32> = None;
                s.recs.retain_mut(|(_, r)| {
                    let off = u32::from_le_bytes([r[0], r[1], r[2], r[3]]) as u64;
                    let Some(n) = remap_off(id, off) else { return true };
                    let n = n as u32;
                    r[..4].copy_from_slice(&n.to_le_bytes());
                    if dedup && last == Some(n) {
                        return false;
                    }
                    last = Some(n);
                    true
                });
            }
        };
        fix(&mut ext.func, false);
        fix(&mut ext.line, true);
        if let Some(c) = &mut ext.core {
            fix(c, false);
        }
        let (bytes, moved) = ext.to_bytes();
        let moved: HashMap<usize, usize> = moved.into_iter().collect();
        // Record extents in the original, to find which record a relocation falls in.
        let old_ext = BtfExt::parse(ext_raw).map_err(WriteError::Btf)?;
        let mut old_rec: BTreeMap<usize, usize> = BTreeMap::new();
        for info in [Some(&old_ext.func), Some(&old_ext.line), old_ext.core.as_ref()].into_iter().flatten() {
            for s in &info.secs {
                for (o, r) in &s.recs {
                    old_rec.insert(*o, r.len());
                }
            }
        }
        {
            let s = b.sections.get_mut(ext_id);
            s.sh_size = bytes.len() as u64;
            s.data = SectionData::Data(bytes.into());
        }
        for s in &mut b.sections {
            if s.sh_info_section != Some(ext_id) {
                continue;
            }
            if let SectionData::Relocation(rs) = &mut s.data {
                rs.retain_mut(|r| {
                    let off = r.r_offset as usize;
                    let Some((&start, &len)) = old_rec.range(..=off).next_back() else { return false };
                    if off >= start + len {
                        return false;
                    }
                    match moved.get(&start) {
                        Some(&n) => {
                            r.r_offset = (n + off - start) as u64;
                            true
                        }
                        None => false,
                    }
                });
            }
        }
    }

    // Drop DWARF and LLVM metadata. A relocation section goes with its target (below),
    // whatever its name: the loader applies relocations by target, not by name (a
    // relocation section for code named `.debug*` was dropped here once; found by fuzzing).
    // (The builder's iterators skip deleted sections: collect the ids as they are marked.)
    let mut deleted: Vec<SectionId> = Vec::new();
    for s in &mut b.sections {
        if matches!(s.data, SectionData::Relocation(_)) && s.sh_info_section.is_some() {
            continue;
        }
        let n = String::from_utf8_lossy(&s.name).into_owned();
        // DWARF is never loaded or executed: a section with code or data in it is kept
        // whatever it is called (a code section named `.rel.debug_line` went once).
        let loaded = s.sh_flags & u64::from(elf::SHF_ALLOC | elf::SHF_EXECINSTR) != 0;
        let dwarf = !loaded && (n.starts_with(".debug") || n.starts_with(".rel.debug") || n.starts_with(".rela.debug"));
        // BTF is found by name, whatever its type (as libbpf does): keep it, retyped.
        let btf = n == ".BTF" || n == ".BTF.ext";
        if dwarf || (!btf && dropped_types.contains(&(n, s.sh_offset))) {
            s.delete = true;
            deleted.push(s.id());
        }
    }
    // Relocation sections whose target is deleted go too.
    for s in &mut b.sections {
        if s.sh_info_section.is_some_and(|t| deleted.contains(&t)) {
            s.delete = true;
        }
    }
    b.delete_orphans();

    // clang shares one string table between section and symbol names; the builder
    // writes them separately and needs a section for the section names.
    if !b.sections.iter().any(|s| matches!(s.data, SectionData::SectionString) && !s.delete) {
        let s = b.sections.add();
        s.name = (&b".shstrtab"[..]).into();
        s.sh_type = elf::SHT_STRTAB;
        s.sh_addralign = 1;
        s.data = SectionData::SectionString;
    }
    let mut out = Vec::new();
    b.write(&mut out).map_err(elf_err)?;
    Ok(out)
}

/// Turns sections of types the ELF builder cannot copy (LLVM extensions) into PROGBITS in
/// `data` and returns their names, to be deleted.
/// The neutralized sections, by (name, file offset): names alone are not unique in a
/// hostile object (an unnamed code section went with an unnamed unknown one once).
fn neutralize_unknown_sections(data: &mut [u8]) -> Result<Vec<(String, u64)>, WriteError> {
    use object::read::elf::{FileHeader, SectionHeader};
    let hdr = elf::FileHeader64::<object::Endianness>::parse(&*data).map_err(elf_err)?;
    let endian = object::read::elf::FileHeader::endian(hdr).map_err(elf_err)?;
    let shoff = hdr.e_shoff(endian) as usize;
    let shentsize = hdr.e_shentsize(endian) as usize;
    let table = hdr.sections(endian, &*data).map_err(elf_err)?;
    let mut fix = Vec::new();
    for (i, sh) in table.enumerate() {
        let t = sh.sh_type(endian);
        if t >= elf::SHT_LOOS && !matches!(t, elf::SHT_GNU_HASH | elf::SHT_GNU_VERSYM | elf::SHT_GNU_VERDEF | elf::SHT_GNU_VERNEED | elf::SHT_GNU_ATTRIBUTES) {
            let name = String::from_utf8_lossy(table.section_name(endian, sh).map_err(elf_err)?).into_owned();
            fix.push((shoff + i.0 * shentsize + 4, (name, sh.sh_offset(endian))));
        }
    }
    let mut names = Vec::new();
    for (at, name) in fix {
        let le = endian == object::Endianness::Little;
        let v = if le { elf::SHT_PROGBITS.to_le_bytes() } else { elf::SHT_PROGBITS.to_be_bytes() };
        data.get_mut(at..at + 4).ok_or_else(|| WriteError::Elf("section header past the end".into()))?.copy_from_slice(&v);
        names.push(name);
    }
    Ok(names)
}
