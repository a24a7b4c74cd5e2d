//! The loader: ELF sections and symbols (via the `object` crate's ELF reader), programs
//! and subprograms, relocations, maps, func_info/line_info.

use std::collections::{BTreeMap, HashMap};
use std::fmt;

use kops_isa::{op, Insn};
use object::elf::{self, FileHeader64};
use object::read::elf::{FileHeader, Rel, SectionHeader, Sym};
use object::{Endianness, SectionIndex};

use crate::btf::{rd_u32, Btf, BtfExt, ExtInfo, ExtSec};
use crate::{
    map_type, secdef, Extern, ExternKind, FuncInfo, LineInfo, MapDef, MapOrigin, Object, Program, Subprog,
};

/// A load failure, with where it happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadError {
    pub file: String,
    pub section: Option<String>,
    pub program: Option<String>,
    /// Slot index: in `program` when that is set, else in `section`.
    pub insn: Option<usize>,
    pub kind: LoadErrorKind,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LoadErrorKind {
    #[error("cannot read file: {0}")]
    Io(String),
    #[error("not an ELF file")]
    NotElf,
    #[error("corrupted ELF: {0}")]
    Elf(String),
    #[error("ELF machine is {0}, not BPF (247)")]
    NotBpf(u16),
    #[error("big-endian BPF objects are not supported")]
    BigEndian,
    #[error("section size {0} is not a multiple of 8")]
    SectionSize(u64),
    #[error("ld_imm64 is missing its second half")]
    LdImm64Truncated,
    #[error("jump to {target} is outside its function (slots {start}..{end})")]
    JumpOutOfRange { target: i64, start: usize, end: usize },
    #[error("jump to {0} lands on the second half of an ld_imm64")]
    JumpIntoLdImm64(i64),
    #[error("bpf-to-bpf call or function reference to slot {slot} of section '{section}', which is not inside any function")]
    BadCallTarget { section: String, slot: i64 },
    #[error("relocation against missing symbol index {0}")]
    MissingSymbol(usize),
    #[error("relocation against undefined symbol '{0}' at an instruction that is neither a call nor an ld_imm64")]
    UndefinedSymbol(String),
    #[error("relocation against an undefined symbol without a name")]
    UnnamedExtern,
    #[error("relocation at byte offset {0} is not at an instruction boundary")]
    RelocOffset(u64),
    #[error("relocation at an instruction (opcode {0:#04x}) that is neither ld_imm64 nor call")]
    RelocNotLdImm64OrCall(u8),
    #[error("relocation against '{symbol}' in section '{section}', which holds neither maps, global data nor code")]
    RelocTarget { symbol: String, section: String },
    #[error("relocation against map section offset {0} that starts no map")]
    NoMapAt(u64),
    #[error("bad BTF: {0}")]
    Btf(String),
    #[error("bad map definition: {0}")]
    Map(String),
    #[error("section name `{0}` is unknown (neither libbpf nor its legacy prefixes give it a program type); pass --type <xdp|tc|socket|cgroup_skb|lwt_xmit|...>")]
    UnknownSection(String),
    #[error("exception callback '{0}' (BTF decl tag exception_callback:) is not a function of the object")]
    ExceptionCallback(String),
    #[error("function '{name}' (slots {start}..{end}) extends past the section's {len} slots")]
    FuncRange { name: String, start: u64, end: u64, len: usize },
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file)?;
        if let Some(s) = &self.section {
            write!(f, ": section '{s}'")?;
        }
        if let Some(p) = &self.program {
            write!(f, ": program '{p}'")?;
        }
        if let Some(i) = self.insn {
            write!(f, ": insn {i}")?;
        }
        write!(f, ": {}", self.kind)
    }
}

impl std::error::Error for LoadError {}

type K = LoadErrorKind;

/// Partial error location, filled in as the error travels up.
struct E {
    section: Option<String>,
    program: Option<String>,
    insn: Option<usize>,
    kind: K,
}

impl From<K> for E {
    fn from(kind: K) -> E {
        E { section: None, program: None, insn: None, kind }
    }
}

impl E {
    fn located(self, file: &str) -> LoadError {
        LoadError { file: file.to_string(), section: self.section, program: self.program, insn: self.insn, kind: self.kind }
    }
    fn sec(mut self, s: &str) -> E {
        if self.section.is_none() {
            self.section = Some(s.to_string());
        }
        self
    }
    fn at(mut self, i: usize) -> E {
        if self.insn.is_none() {
            self.insn = Some(i);
        }
        self
    }
}

fn elf_err(e: object::read::Error) -> E {
    K::Elf(e.to_string()).into()
}

struct Sec<'a> {
    name: String,
    sh_type: u32,
    flags: u64,
    data: &'a [u8],
    size: u64,
}

impl Sec<'_> {
    fn is_exec(&self) -> bool {
        self.sh_type == elf::SHT_PROGBITS && self.flags & elf::SHF_EXECINSTR as u64 != 0
    }
}

#[derive(Clone)]
struct SymInfo {
    name: String,
    /// Defined in this section (None: undefined, absolute, common).
    sec: Option<usize>,
    value: u64,
    size: u64,
    typ: u8,
    global: bool,
    weak: bool,
}

#[derive(Clone)]
struct Func {
    sec: usize,
    start: usize,
    len: usize,
    name: String,
    /// Non-local symbol: in a program section, an entry point (libbpf refuses static
    /// programs; a static function there is only reachable as a subprogram).
    global: bool,
}

#[derive(Clone, Copy)]
struct Reloc {
    sym: usize,
}

struct Ctx<'a> {
    secs: Vec<Sec<'a>>,
    syms: Vec<Option<SymInfo>>,
    /// Relocations of each section, by byte offset.
    relocs: HashMap<usize, BTreeMap<u64, Reloc>>,
    /// Slots of each executable section.
    slots: HashMap<usize, Vec<Insn>>,
    /// Functions per executable section, sorted by start.
    funcs: Vec<Func>,
    /// Map lookup: (section, offset) of a map definition -> map index.
    map_at: HashMap<(usize, u64), usize>,
    /// Global data section -> map index.
    data_map: HashMap<usize, usize>,
    maps: Vec<MapDef>,
    btf: Option<Btf>,
    ext: Option<BtfExt>,
}

pub(crate) fn parse(bytes: &[u8], path: &str) -> Result<Object, LoadError> {
    let mut o = parse_inner(bytes).map_err(|e| e.located(path))?;
    o.path = path.to_string();
    for b in &mut o.broken {
        b.error.file = path.to_string();
    }
    Ok(o)
}

/// One BTF map definition (`struct { __uint(type, ..); __type(key, ..); ... }` of type
/// `tid`): the map and the offset of its `values` member, if any. A map-in-map's
/// `__array(values, struct {...})` gives its inner template (`depth` 1; nesting stops there).
fn btf_map_def(btf: &Btf, name: &str, tid: u32, depth: u32) -> Result<(MapDef, Option<u64>), String> {
    let (_, st) = btf.skip_mods(tid).map_err(|e| format!("map '{name}': {e}"))?;
    let btfparse::TypeVariant::Struct(st) = st else {
        return Err(format!("map '{name}' is not a struct"));
    };
    let mut m = MapDef::new(name.to_string(), MapOrigin::Btf, 0, 0, 0, 0);
    let mut values_off = None;
    let mut values_tid = None;
    let mut key_size = None;
    let mut value_size = None;
    for mem in st.member_list() {
        let mname = mem.name().unwrap_or_default();
        let moff = match mem.offset() {
            btfparse::Offset::ByteOffset(b) => b as u64,
            _ => return Err(format!("map '{name}': member '{mname}' is a bitfield")),
        };
        let e = |x: String| format!("map '{name}': member '{mname}': {x}");
        // `__uint(name, N)` is `int (*name)[N]`.
        let uint = || -> Result<u32, String> {
            let (_, p) = btf.skip_mods(mem.tid()).map_err(e)?;
            let btfparse::TypeVariant::Ptr(p) = p else { return Err(e("not a pointer".into())) };
            let (_, a) = btf.skip_mods(*p.tid()).map_err(e)?;
            let btfparse::TypeVariant::Array(a) = a else { return Err(e("not a pointer to an array".into())) };
            Ok(*a.element_count())
        };
        // `__type(name, T)` is `T *name`.
        let typ = || -> Result<(u32, u32), String> {
            let (_, p) = btf.skip_mods(mem.tid()).map_err(e)?;
            let btfparse::TypeVariant::Ptr(p) = p else { return Err(e("not a pointer".into())) };
            let id = *p.tid();
            let sz = btf.size_of(id).map_err(e)?;
            let sz = u32::try_from(sz).map_err(|_| e(format!("size {sz} too large")))?;
            Ok((id, sz))
        };
        match mname.as_str() {
            "type" => m.map_type = uint()?,
            "max_entries" => m.max_entries = uint()?,
            "map_flags" => m.flags = uint()?,
            "pinning" => m.pinning = uint()?,
            "map_extra" => m.map_extra = uint()? as u64,
            "key_size" => key_size = Some(uint()?),
            "value_size" => value_size = Some(uint()?),
            "key" => {
                let (id, sz) = typ()?;
                m.btf_key_type_id = id;
                m.key_size = sz;
            }
            "value" => {
                let (id, sz) = typ()?;
                m.btf_value_type_id = id;
                m.value_size = sz;
            }
            "values" => {
                values_off = Some(moff);
                values_tid = Some(mem.tid());
            }
            // numa_node: not needed by our runtimes.
            _ => {}
        }
    }
    for (what, explicit, cur) in [("key", key_size, &mut m.key_size), ("value", value_size, &mut m.value_size)] {
        if let Some(x) = explicit {
            if *cur != 0 && *cur != x {
                return Err(format!("map '{name}': {what}_size {x} disagrees with the {what} type's size {cur}"));
            }
            *cur = x;
        }
    }
    if let (Some(vt), true) = (values_tid, map_type::is_map_in_map(m.map_type)) {
        // `__array(values, struct {...})` is `typeof(struct {...}) *values[]`.
        let e = |x: String| format!("map '{name}': member 'values': {x}");
        let (_, a) = btf.skip_mods(vt).map_err(e)?;
        let btfparse::TypeVariant::Array(a) = a else { return Err(e("not an array".into())) };
        let (_, p) = btf.skip_mods(*a.element_tid()).map_err(e)?;
        let btfparse::TypeVariant::Ptr(p) = p else { return Err(e("not an array of pointers".into())) };
        if depth > 0 {
            return Err(e("a map-in-map inside a map-in-map template is not supported".into()));
        }
        let (inner, _) = btf_map_def(btf, &format!("{name}.inner"), *p.tid(), depth + 1)?;
        m.inner = Some(Box::new(inner));
    }
    if values_off.is_some() && m.value_size == 0 {
        // Prog arrays and map-in-map hold 4-byte ids/fds.
        m.value_size = 4;
    }
    if values_off.is_some() && m.key_size == 0 {
        m.key_size = 4;
    }
    Ok((m, values_off))
}

/// libbpf's ring buffer size rule: a size that is already a power-of-2 multiple of the
/// page size stays; another one becomes the smallest such size above it (0 stays 0, so
/// the kernel reports it).
pub(crate) fn ringbuf_size(sz: u32) -> u32 {
    const PAGE: u64 = 4096;
    let sz64 = sz as u64;
    if sz == 0 || (sz64 % PAGE == 0 && (sz64 / PAGE).is_power_of_two()) {
        return sz;
    }
    let mut n = PAGE;
    while n <= u32::MAX as u64 {
        if n > sz64 {
            return n as u32;
        }
        n *= 2;
    }
    sz
}

fn is_global_data(name: &str) -> bool {
    let pre = |p: &str| name == p || name.starts_with(&format!("{p}."));
    pre(".data") || pre(".rodata") || pre(".bss")
}

fn parse_inner(data: &[u8]) -> Result<Object, E> {
    if data.len() < 4 || &data[..4] != b"\x7fELF" {
        return Err(K::NotElf.into());
    }
    let hdr = FileHeader64::<Endianness>::parse(data).map_err(elf_err)?;
    let endian = hdr.endian().map_err(elf_err)?;
    if endian != Endianness::Little {
        return Err(K::BigEndian.into());
    }
    let machine = hdr.e_machine(endian);
    if machine != elf::EM_BPF {
        return Err(K::NotBpf(machine).into());
    }
    let table = hdr.sections(endian, data).map_err(elf_err)?;

    let mut secs = Vec::new();
    for (i, sh) in table.enumerate() {
        let name = table.section_name(endian, sh).map_err(elf_err)?;
        let name = String::from_utf8_lossy(name).into_owned();
        let sh_type = sh.sh_type(endian);
        let d = if sh_type == elf::SHT_NOBITS || i.0 == 0 {
            &[][..]
        } else {
            sh.data(endian, data).map_err(|e| elf_err(e).sec(&name))?
        };
        secs.push(Sec { name, sh_type, flags: sh.sh_flags(endian), data: d, size: sh.sh_size(endian) });
    }

    // Symbols.
    let symtab = table.symbols(endian, data, elf::SHT_SYMTAB).map_err(elf_err)?;
    let mut syms = Vec::with_capacity(symtab.len());
    for (i, s) in symtab.enumerate() {
        if i.0 == 0 {
            syms.push(None);
            continue;
        }
        let name = String::from_utf8_lossy(symtab.symbol_name(endian, s).map_err(elf_err)?).into_owned();
        let sec = symtab
            .symbol_section(endian, s, i)
            .map_err(elf_err)?
            .map(|SectionIndex(x)| x)
            .filter(|&x| x > 0 && x < secs.len());
        let typ = s.st_type();
        // Section symbols carry no name of their own.
        let name = if typ == elf::STT_SECTION && name.is_empty() {
            sec.map(|x| secs[x].name.clone()).unwrap_or_default()
        } else {
            name
        };
        let global = s.st_bind() != elf::STB_LOCAL;
        let weak = s.st_bind() == elf::STB_WEAK;
        syms.push(Some(SymInfo { name, sec, value: s.st_value(endian), size: s.st_size(endian), typ, global, weak }));
    }

    // Relocations (REL only: BPF objects do not use RELA).
    let mut relocs: HashMap<usize, BTreeMap<u64, Reloc>> = HashMap::new();
    for (i, sh) in table.enumerate() {
        let t = sh.sh_type(endian);
        if t != elf::SHT_REL {
            continue;
        }
        let target = sh.sh_info(endian) as usize;
        if target == 0 || target >= secs.len() {
            continue;
        }
        let (rels, _) = match sh.rel(endian, data).map_err(|e| elf_err(e).sec(&secs[i.0].name))? {
            Some(r) => r,
            None => continue,
        };
        let m = relocs.entry(target).or_default();
        for r in rels {
            m.insert(r.r_offset(endian), Reloc { sym: r.r_sym(endian) as usize });
        }
    }

    let btf_raw = secs.iter().find(|s| s.name == ".BTF").map(|s| s.data.to_vec());
    let btf = match &btf_raw {
        Some(b) => Some(Btf::parse(b).map_err(|e| E::from(K::Btf(e)).sec(".BTF"))?),
        None => None,
    };
    let ext_sec = secs.iter().find(|s| s.name == ".BTF.ext");
    let ext = match ext_sec {
        Some(s) => {
            if btf.is_none() {
                return Err(E::from(K::Btf("object has .BTF.ext but no .BTF".into())).sec(".BTF.ext"));
            }
            Some(BtfExt::parse(s.data).map_err(|e| E::from(K::Btf(e)).sec(".BTF.ext"))?)
        }
        None => None,
    };

    let mut cx = Ctx {
        secs,
        syms,
        relocs,
        slots: HashMap::new(),
        funcs: Vec::new(),
        map_at: HashMap::new(),
        data_map: HashMap::new(),
        maps: Vec::new(),
        btf,
        ext,
    };

    cx.collect_code()?;
    cx.collect_legacy_maps()?;
    cx.collect_btf_maps()?;
    cx.collect_global_data()?;

    let mut license = String::new();
    let mut kernel_version = 0;
    for s in &cx.secs {
        if s.name == "license" {
            let end = s.data.iter().position(|&b| b == 0).unwrap_or(s.data.len());
            license = String::from_utf8_lossy(&s.data[..end]).into_owned();
        } else if s.name == "version" {
            kernel_version = rd_u32(s.data, 0).unwrap_or(0);
        }
    }

    let mut programs = Vec::new();
    let mut externs: Vec<Extern> = Vec::new();
    let mut broken = Vec::new();
    let mut exception_callbacks = Vec::new();
    for fi in 0..cx.funcs.len() {
        let f = &cx.funcs[fi];
        if cx.secs[f.sec].name == ".text" || !f.global {
            continue;
        }
        let name = f.name.clone();
        let section = cx.secs[f.sec].name.clone();
        let (p, refs) = match cx.build_program(fi) {
            Ok(built) => built,
            Err(mut e) => {
                if e.program.is_none() {
                    e.program = Some(name.clone());
                }
                let error = e.sec(&section).located("");
                broken.push(crate::BrokenProgram { name, section, error });
                continue;
            }
        };
        for (ename, kind, weak, slot) in refs {
            let site = (programs.len(), slot);
            match externs.iter_mut().find(|x| x.name == ename) {
                Some(x) => x.sites.push(site),
                None => externs.push(Extern { name: ename, kind, weak, sites: vec![site], resolved: false, btf_id: 0 }),
            }
        }
        if let Some(cb) = cx.btf.as_ref().and_then(|b| b.exception_callback(&p.name)) {
            exception_callbacks.push((p.name.clone(), cb));
        }
        programs.push(p);
    }
    // As libbpf does at load: ring buffer sizes become a power-of-2 number of pages.
    for m in cx.maps.iter_mut().filter(|m| matches!(m.map_type, map_type::RINGBUF | map_type::USER_RINGBUF)) {
        m.max_entries = ringbuf_size(m.max_entries);
    }
    let core_relos = cx.ext.as_ref().and_then(|e| e.core.as_ref()).map(|c| c.secs.iter().map(|s| s.recs.len()).sum()).unwrap_or(0);

    Ok(Object {
        path: String::new(),
        programs,
        maps: cx.maps,
        license,
        kernel_version,
        has_btf_ext: cx.ext.is_some(),
        btf: btf_raw,
        externs,
        core_relos,
        broken,
        exception_callbacks,
    })
}

impl<'a> Ctx<'a> {
    fn sym(&self, idx: usize) -> Result<&SymInfo, E> {
        self.syms.get(idx).and_then(|s| s.as_ref()).ok_or_else(|| K::MissingSymbol(idx).into())
    }

    fn collect_code(&mut self) -> Result<(), E> {
        for si in 0..self.secs.len() {
            let s = &self.secs[si];
            if !s.is_exec() {
                continue;
            }
            if !s.size.is_multiple_of(8) {
                return Err(E::from(K::SectionSize(s.size)).sec(&s.name));
            }
            let slots = kops_isa::slots_from_bytes(s.data).map_err(|_| E::from(K::SectionSize(s.size)).sec(&s.name))?;
            let n = slots.len();
            // Function symbols of this section.
            let mut fs: Vec<(u64, u64, String, bool)> = self
                .syms
                .iter()
                .flatten()
                .filter(|y| y.sec == Some(si) && y.typ == elf::STT_FUNC)
                .map(|y| (y.value, y.size, y.name.clone(), y.global))
                .collect();
            fs.sort_by_key(|f| f.0);
            fs.dedup_by_key(|f| f.0);
            if fs.is_empty() && s.name != ".text" && n > 0 {
                // Hand-written code without symbols: the whole section is one program.
                fs.push((0, n as u64 * 8, s.name.clone(), true));
            }
            for k in 0..fs.len() {
                let (value, size, ref name, global) = fs[k];
                if value % 8 != 0 {
                    return Err(E::from(K::Elf(format!("function '{name}' starts at byte {value}, not at an instruction"))).sec(&s.name));
                }
                let start = value / 8;
                let end = if size > 0 {
                    start + size.div_ceil(8)
                } else {
                    fs.get(k + 1).map(|f| f.0 / 8).unwrap_or(n as u64)
                };
                if end > n as u64 || end <= start {
                    return Err(E::from(K::FuncRange { name: name.clone(), start, end, len: n }).sec(&s.name));
                }
                self.funcs.push(Func { sec: si, start: start as usize, len: (end - start) as usize, name: name.clone(), global });
            }
            // ld_imm64 halves must be complete inside each function.
            for f in self.funcs.iter().filter(|f| f.sec == si) {
                let mut i = f.start;
                while i < f.start + f.len {
                    if slots[i].is_ld_imm64() {
                        let ok = i + 1 < f.start + f.len && {
                            let h = slots[i + 1];
                            h.code == 0 && h.dst == 0 && h.src == 0 && h.off == 0
                        };
                        if !ok {
                            return Err(E::from(K::LdImm64Truncated).sec(&s.name).at(i));
                        }
                        i += 2;
                    } else {
                        i += 1;
                    }
                }
            }
            self.slots.insert(si, slots);
        }
        Ok(())
    }

    fn collect_legacy_maps(&mut self) -> Result<(), E> {
        let Some(si) = self.secs.iter().position(|s| s.name == "maps" && s.sh_type == elf::SHT_PROGBITS) else {
            return Ok(());
        };
        let sec = &self.secs[si];
        let mut ms: Vec<&SymInfo> = self
            .syms
            .iter()
            .flatten()
            .filter(|y| y.sec == Some(si) && y.typ != elf::STT_SECTION && !y.name.is_empty())
            .collect();
        ms.sort_by_key(|y| y.value);
        ms.dedup_by_key(|y| y.value);
        let count = ms.len() as u64;
        let mut out = Vec::new();
        for y in ms {
            let stride = if y.size > 0 { y.size } else { sec.size / count.max(1) };
            if stride < 16 {
                return Err(E::from(K::Map(format!("legacy map '{}' is {} bytes, smaller than struct bpf_map_def", y.name, stride))).sec("maps"));
            }
            let at = |k: u64| -> Result<u32, E> {
                if k * 4 + 4 > stride {
                    return Ok(0);
                }
                usize::try_from(y.value + k * 4)
                    .ok()
                    .and_then(|o| rd_u32(sec.data, o))
                    .ok_or_else(|| E::from(K::Map(format!("legacy map '{}' runs past the section end", y.name))).sec("maps"))
            };
            let mut def = MapDef::new(y.name.clone(), MapOrigin::Legacy, at(0)?, at(1)?, at(2)?, at(3)?);
            def.flags = at(4)?;
            // samples/bpf's bpf_load.c layout adds `inner_map_idx`: the map (in offset
            // order) whose shape a map-in-map's inner maps have. libbpf has no such field.
            let inner_idx = (map_type::is_map_in_map(def.map_type) && stride >= 24).then(|| at(5)).transpose()?;
            out.push((y.value, def, inner_idx));
        }
        let shapes: Vec<MapDef> = out.iter().map(|o| o.1.clone()).collect();
        for (_, def, inner_idx) in &mut out {
            if let Some(i) = *inner_idx {
                let ok = |s: &&MapDef| s.name != def.name && !map_type::is_map_in_map(s.map_type);
                let shape = shapes.get(i as usize).filter(ok);
                let Some(shape) = shape else {
                    return Err(E::from(K::Map(format!(
                        "legacy map '{}': inner_map_idx {i} does not name another map \
                         (not a map-in-map) of the {} in 'maps'",
                        def.name,
                        shapes.len()
                    )))
                    .sec("maps"));
                };
                def.inner = Some(Box::new(MapDef { name: format!("{}.inner", def.name), ..shape.clone() }));
            }
        }
        for (off, m, _) in out {
            self.map_at.insert((si, off), self.maps.len());
            self.maps.push(m);
        }
        Ok(())
    }

    fn collect_btf_maps(&mut self) -> Result<(), E> {
        let Some(si) = self.secs.iter().position(|s| s.name == ".maps") else {
            return Ok(());
        };
        let Some(btf) = &self.btf else {
            return Err(E::from(K::Map("BTF-defined maps (.maps) need a .BTF section".into())).sec(".maps"));
        };
        let bad = |m: String| E::from(K::Map(m)).sec(".maps");
        let Some((_, ds)) = btf.datasec(".maps") else {
            return Err(bad("no DATASEC '.maps' in BTF".into()));
        };
        let mut defs = Vec::new();
        for v in ds.variable_list() {
            let (name, tid) = match btf.get(v.var_decl_id) {
                Some(btfparse::TypeVariant::Var(var)) => (var.name().clone().unwrap_or_default(), *var.tid()),
                _ => return Err(bad(format!("datasec entry type {} is not a VAR", v.var_decl_id))),
            };
            // clang leaves DATASEC offsets at 0 in objects (libbpf fills them in from the
            // symbol table), so the map's place comes from its ELF symbol.
            let sym_off = self
                .syms
                .iter()
                .flatten()
                .find(|y| y.sec == Some(si) && y.typ != elf::STT_SECTION && y.name == name)
                .map(|y| (y.value, y.size));
            let Some((map_off, sym_size)) = sym_off else {
                return Err(bad(format!("map '{name}' has no symbol in .maps")));
            };
            // A `values` initializer makes the symbol longer than the struct type.
            let var_size = match btf.size_of(tid) {
                Ok(s) => s.max(sym_size),
                Err(e) => return Err(bad(format!("map '{name}': {e}"))),
            };
            let (m, values_off) = btf_map_def(btf, &name, tid, 0).map_err(bad)?;
            defs.push((map_off, var_size, values_off, m));
        }
        // `values` initializers: relocations inside the map definition.
        if let Some(rs) = self.relocs.get(&si) {
            for (&off, r) in rs {
                let Some((moff, _, voff, m)) = defs.iter_mut().find(|d| off >= d.0 && off < d.0 + d.1) else {
                    return Err(bad(format!("relocation at offset {off} is outside every map")));
                };
                let Some(voff) = *voff else {
                    return Err(bad(format!("map '{}': relocation at offset {off} but no 'values' member", m.name)));
                };
                let rel = off - *moff;
                if rel < voff || (rel - voff) % 8 != 0 {
                    return Err(bad(format!("map '{}': relocation at offset {off} is not a 'values' slot", m.name)));
                }
                let y = self.syms.get(r.sym).and_then(|y| y.as_ref()).ok_or_else(|| E::from(K::MissingSymbol(r.sym)).sec(".maps"))?;
                m.init_slots.push((((rel - voff) / 8) as u32, y.name.clone()));
            }
        }
        defs.sort_by_key(|d| d.0);
        for (off, _, _, m) in defs {
            self.map_at.insert((si, off), self.maps.len());
            self.maps.push(m);
        }
        Ok(())
    }

    fn collect_global_data(&mut self) -> Result<(), E> {
        for si in 0..self.secs.len() {
            let s = &self.secs[si];
            if !(s.sh_type == elf::SHT_PROGBITS || s.sh_type == elf::SHT_NOBITS) || !is_global_data(&s.name) || s.size == 0 {
                continue;
            }
            // The kernel caps values far below this; the cap keeps a corrupted .bss size
            // from turning into a multi-gigabyte allocation.
            if s.size > 1 << 28 {
                return Err(E::from(K::Map(format!("global data section of {} bytes is too large", s.size))).sec(&s.name));
            }
            let size = s.size as u32;
            let initial = if s.sh_type == elf::SHT_NOBITS { vec![0u8; size as usize] } else { s.data.to_vec() };
            let readonly = s.name == ".rodata" || s.name.starts_with(".rodata.");
            let value_tid = self.btf.as_ref().and_then(|b| b.datasec(&s.name)).map(|d| d.0).unwrap_or(0);
            self.data_map.insert(si, self.maps.len());
            self.maps.push(MapDef {
                // BPF_F_RDONLY_PROG, as libbpf sets for .rodata.
                flags: if readonly { 0x80 } else { 0 },
                initial: Some(initial),
                readonly,
                btf_value_type_id: value_tid,
                ..MapDef::new(s.name.clone(), MapOrigin::GlobalData, map_type::ARRAY, 4, size, 1)
            });
        }
        Ok(())
    }

    /// The function `__exception_cb` names for entry function `entry`, if any.
    fn exception_callback(&self, entry: usize) -> Result<Option<usize>, E> {
        let Some(cb) = self.btf.as_ref().and_then(|b| b.exception_callback(&self.funcs[entry].name)) else {
            return Ok(None);
        };
        match self.funcs.iter().position(|f| f.name == cb) {
            Some(fi) => Ok(Some(fi)),
            None => Err(K::ExceptionCallback(cb).into()),
        }
    }

    fn func_at(&self, sec: usize, slot: i64) -> Result<usize, E> {
        self.funcs
            .iter()
            .position(|f| f.sec == sec && slot >= f.start as i64 && slot < (f.start + f.len) as i64)
            .ok_or_else(|| K::BadCallTarget { section: self.secs[sec].name.clone(), slot }.into())
    }

    fn reloc(&self, sec: usize, slot: usize) -> Option<Reloc> {
        self.relocs.get(&sec).and_then(|m| m.get(&(slot as u64 * 8)).copied())
    }

    /// Code target of a pseudo call or function-address ld_imm64 at `slot` of `sec`:
    /// `Some((section, slot))`, or None if the instruction is not a code reference.
    fn code_target(&self, sec: usize, slot: usize) -> Result<Option<(usize, i64)>, E> {
        let insn = self.slots[&sec][slot];
        let rel = self.reloc(sec, slot);
        if insn.is_call() {
            if let Some(r) = rel {
                let y = self.sym(r.sym)?;
                let Some(ts) = y.sec else { return Err(K::UndefinedSymbol(y.name.clone()).into()) };
                if !self.secs[ts].is_exec() {
                    return Err(K::RelocTarget { symbol: y.name.clone(), section: self.secs[ts].name.clone() }.into());
                }
                // libbpf: sym_off / 8 + imm + 1.
                return Ok(Some((ts, (y.value / 8) as i64 + insn.imm as i64 + 1)));
            }
            if insn.src == op::PSEUDO_CALL {
                return Ok(Some((sec, slot as i64 + 1 + insn.imm as i64)));
            }
            return Ok(None);
        }
        if insn.is_ld_imm64() {
            if let Some(r) = rel {
                let y = self.sym(r.sym)?;
                if let Some(ts) = y.sec {
                    if self.secs[ts].is_exec() {
                        // libbpf: (sym_off + imm) / 8.
                        return Ok(Some((ts, (y.value as i64 + insn.imm as i64).div_euclid(8))));
                    }
                }
            }
        }
        Ok(None)
    }

    /// libbpf's class of an extern referenced by `ld_imm64`: a BTF `FUNC` (`&kfunc`, as
    /// `bpf_ksym_exists` takes it) is a kfunc, a variable of the `.kconfig` DATASEC (or,
    /// without BTF, a `CONFIG_`/`LINUX_` name) a kconfig value, anything else a ksym.
    fn extern_kind(&self, name: &str) -> ExternKind {
        if let Some(btf) = &self.btf {
            let is_func = btf.types.get().iter().any(|(_, t)| matches!(t, btfparse::TypeVariant::Func(f) if f.name().as_deref() == Some(name)));
            if is_func {
                return ExternKind::Kfunc;
            }
        }
        if let Some((_, ds)) = self.btf.as_ref().and_then(|b| b.datasec(".kconfig")) {
            let btf = self.btf.as_ref().unwrap();
            let hit = ds.variable_list().iter().any(|v| match btf.get(v.var_decl_id) {
                Some(btfparse::TypeVariant::Var(var)) => var.name().as_deref() == Some(name),
                _ => false,
            });
            if hit {
                return ExternKind::Kconfig;
            }
        }
        if name.starts_with("CONFIG_") || name.starts_with("LINUX_") {
            ExternKind::Kconfig
        } else {
            ExternKind::Ksym
        }
    }

    /// Extern references by (name, kind, weak, program slot).
    #[allow(clippy::type_complexity)]
    fn build_program(&self, entry: usize) -> Result<(Program, Vec<(String, ExternKind, bool, usize)>), E> {
        let mut refs = Vec::new();
        // Pass 1: layout in libbpf's order (subprograms appended as first referenced while
        // scanning the growing program).
        let mut layout = vec![entry];
        let mut pos_of: HashMap<usize, usize> = HashMap::from([(entry, 0)]);
        // As libbpf, the exception callback (`__exception_cb`) goes after everything the
        // program reaches, followed by what it reaches in turn.
        let mut exception_cb = self.exception_callback(entry)?;
        let mut k = 0;
        loop {
            if k == layout.len() {
                match exception_cb.take() {
                    Some(cb) if !pos_of.contains_key(&cb) => {
                        pos_of.insert(cb, layout.len());
                        layout.push(cb);
                    }
                    _ => break,
                }
            }
            let f = self.funcs[layout[k]].clone();
            let mut i = f.start;
            while i < f.start + f.len {
                // Errors are reported by pass 2, which knows the program slot.
                if let Ok(Some((ts, t))) = self.code_target(f.sec, i) {
                    if let Ok(tf) = self.func_at(ts, t) {
                        if let std::collections::hash_map::Entry::Vacant(v) = pos_of.entry(tf) {
                            v.insert(layout.len());
                            layout.push(tf);
                        }
                    }
                }
                i += if self.slots[&f.sec][i].is_ld_imm64() { 2 } else { 1 };
            }
            k += 1;
        }
        let mut starts = Vec::with_capacity(layout.len());
        let mut total = 0usize;
        for &fi in &layout {
            starts.push(total);
            total += self.funcs[fi].len;
        }

        // Pass 2: copy and patch.
        let mut insns = Vec::with_capacity(total);
        let mut subprogs = Vec::new();
        for (li, &fi) in layout.iter().enumerate() {
            let f = &self.funcs[fi];
            let sname = &self.secs[f.sec].name;
            let src = &self.slots[&f.sec];
            let base = starts[li];
            subprogs.push(Subprog { name: f.name.clone(), start: base, len: f.len, section: sname.clone(), sec_start: f.start });
            let mut i = f.start;
            while i < f.start + f.len {
                let pc = base + (i - f.start);
                let at = |e: E| e.sec(sname).at(pc);
                let mut insn = src[i];
                if let Some(r) = self.reloc(f.sec, i) {
                    let y = self.sym(r.sym).map_err(at)?;
                    if y.sec.is_none() && y.typ != elf::STT_SECTION {
                        if y.name.is_empty() {
                            return Err(at(K::UnnamedExtern.into()));
                        }
                        if insn.is_call() {
                            refs.push((y.name.clone(), ExternKind::Kfunc, y.weak, pc));
                            insn.src = op::PSEUDO_KFUNC_CALL;
                            insn.imm = 0;
                            insn.off = 0;
                            insns.push(insn);
                            i += 1;
                            continue;
                        }
                        if insn.is_ld_imm64() {
                            refs.push((y.name.clone(), self.extern_kind(&y.name), y.weak, pc));
                            insns.push(insn);
                            insns.push(src[i + 1]);
                            i += 2;
                            continue;
                        }
                        return Err(at(K::UndefinedSymbol(y.name.clone()).into()));
                    }
                }
                if let Some((ts, t)) = self.code_target(f.sec, i).map_err(at)? {
                    let tf = self.func_at(ts, t).map_err(at)?;
                    let tfn = &self.funcs[tf];
                    let new_t = starts[pos_of[&tf]] as i64 + (t - tfn.start as i64);
                    let rel = new_t - (pc as i64 + 1);
                    insn.imm = i32::try_from(rel).map_err(|_| at(K::BadCallTarget { section: self.secs[ts].name.clone(), slot: t }.into()))?;
                    if insn.is_ld_imm64() {
                        insn.src = op::PSEUDO_FUNC;
                        insns.push(insn);
                        insns.push(Insn { imm: 0, ..src[i + 1] });
                        i += 2;
                    } else {
                        insn.src = op::PSEUDO_CALL;
                        insns.push(insn);
                        i += 1;
                    }
                    continue;
                }
                if let Some(r) = self.reloc(f.sec, i) {
                    if !insn.is_ld_imm64() {
                        return Err(at(K::RelocNotLdImm64OrCall(insn.code).into()));
                    }
                    let y = self.sym(r.sym).map_err(at)?;
                    let Some(ts) = y.sec else { return Err(at(K::UndefinedSymbol(y.name.clone()).into())) };
                    let mut hi = src[i + 1];
                    if let Some(&mi) = self.data_map.get(&ts) {
                        let off = y.value as i64 + insn.imm as i64;
                        insn.src = op::PSEUDO_MAP_IDX_VALUE;
                        insn.imm = mi as i32;
                        hi.imm = off as i32;
                    } else if self.map_at.keys().any(|k| k.0 == ts) {
                        let off = y.value.wrapping_add(insn.imm as i64 as u64);
                        let Some(&mi) = self.map_at.get(&(ts, off)) else {
                            return Err(at(K::NoMapAt(off).into()));
                        };
                        insn.src = op::PSEUDO_MAP_IDX;
                        insn.imm = mi as i32;
                        hi.imm = 0;
                    } else {
                        return Err(at(K::RelocTarget { symbol: y.name.clone(), section: self.secs[ts].name.clone() }.into()));
                    }
                    insns.push(insn);
                    insns.push(hi);
                    i += 2;
                    continue;
                }
                insns.push(insn);
                i += 1;
            }
        }

        // Jumps stay inside their function and never land on an ld_imm64's second half.
        for sp in &subprogs {
            let mut second = vec![false; sp.len];
            let mut j = 0;
            while j < sp.len {
                if insns[sp.start + j].is_ld_imm64() && j + 1 < sp.len {
                    second[j + 1] = true;
                    j += 2;
                } else {
                    j += 1;
                }
            }
            for j in 0..sp.len {
                let pc = sp.start + j;
                let insn = insns[pc];
                if second[j] || !insn.is_jump() {
                    continue;
                }
                let Some(t) = insn.target(pc) else { continue };
                if t < sp.start as i64 || t >= (sp.start + sp.len) as i64 {
                    return Err(E::from(K::JumpOutOfRange { target: t, start: sp.start, end: sp.start + sp.len }).sec(&sp.section).at(pc));
                }
                if second[(t as usize) - sp.start] {
                    return Err(E::from(K::JumpIntoLdImm64(t)).sec(&sp.section).at(pc));
                }
            }
        }

        let (func_info, line_info) = self.remap_ext(&layout, &starts)?;
        let f0 = &self.funcs[entry];
        let section = self.secs[f0.sec].name.clone();
        let (prog_type, prog_type_id, expected_attach_type) = secdef::prog_type_from_section(&section);
        Ok((
            Program {
                name: f0.name.clone(),
                section,
                prog_type,
                prog_type_id,
                expected_attach_type,
                insns,
                subprogs,
                func_info,
                line_info,
            },
            refs,
        ))
    }

    fn ext_records<'b>(&'b self, info: &'b ExtInfo, sec: usize) -> impl Iterator<Item = &'b Vec<u8>> + 'b {
        let btf = self.btf.as_ref();
        let name = &self.secs[sec].name;
        info.secs
            .iter()
            .filter(move |s: &&ExtSec| btf.and_then(|b| b.str_at(s.name_off)).as_deref() == Some(name.as_str()))
            .flat_map(|s| s.recs.iter().map(|r| &r.1))
    }

    fn remap_ext(&self, layout: &[usize], starts: &[usize]) -> Result<(Vec<FuncInfo>, Vec<LineInfo>), E> {
        let (Some(ext), Some(btf)) = (&self.ext, &self.btf) else {
            return Ok((Vec::new(), Vec::new()));
        };
        let mut fis = Vec::new();
        let mut lis = Vec::new();
        for (li, &fi) in layout.iter().enumerate() {
            let f = &self.funcs[fi];
            let inside = |rec: &[u8]| {
                let off = ExtSec::insn_off(rec) as usize;
                let slot = off / 8;
                (off.is_multiple_of(8) && slot >= f.start && slot < f.start + f.len).then(|| (starts[li] + slot - f.start) as u32)
            };
            for r in self.ext_records(&ext.func, f.sec) {
                if let Some(insn_off) = inside(r) {
                    fis.push(FuncInfo { insn_off, type_id: rd_u32(r, 4).unwrap_or(0) });
                }
            }
            for r in self.ext_records(&ext.line, f.sec) {
                if let Some(insn_off) = inside(r) {
                    let file_name_off = rd_u32(r, 4).unwrap_or(0);
                    let line_off = rd_u32(r, 8).unwrap_or(0);
                    let s = |o: u32| {
                        btf.str_at(o).ok_or_else(|| {
                            E::from(K::Btf(format!("line_info string offset {o} is outside the string table"))).sec(".BTF.ext")
                        })
                    };
                    lis.push(LineInfo {
                        insn_off,
                        file_name_off,
                        line_off,
                        line_col: rd_u32(r, 12).unwrap_or(0),
                        file: s(file_name_off)?,
                        source_line: s(line_off)?,
                    });
                }
            }
        }
        Ok((fis, lis))
    }
}

#[cfg(test)]
mod ringbuf_tests {
    #[test]
    fn ringbuf_sizes_round_like_libbpf() {
        use super::ringbuf_size as r;
        assert_eq!((r(0), r(8), r(4096), r(4097), r(8192), r(12288), r(1 << 20)), (0, 4096, 4096, 8192, 8192, 16384, 1 << 20));
        assert_eq!(r(u32::MAX), u32::MAX, "no power-of-2 page multiple fits: left for the kernel to refuse");
    }
}
