//! Loader for clang/libbpf-style `.bpf.o` objects.
//!
//! A loaded [`Object`] is self-contained: every program carries its instructions with
//! bpf-to-bpf calls already resolved (the `.text` subprograms it calls are appended after
//! its own code, as libbpf does), and every map reference is an `ld_imm64` in fd_array
//! form, so the same instruction array can go to the kernel (with an fd_array) or to our
//! own runtimes:
//!
//! - `src_reg = PSEUDO_MAP_IDX` (5), `imm = index into Object::maps`: a map pointer;
//! - `src_reg = PSEUDO_MAP_IDX_VALUE` (6), `imm = map index`, second slot's `imm = offset`:
//!   a pointer into the value of a global-data map (`.data`, `.rodata`, `.bss`, ...).
//!
//! What the loader does, following libbpf:
//!
//! - **Programs**: one per non-static `FUNC` symbol in each executable section other than
//!   `.text` (several per section are fine), in section then address order. `.text`
//!   functions, and static functions in program sections, are subprograms.
//! - **Calls**: `call` with `src_reg = 1` (relocated against `.text`/function symbols, or
//!   plain same-section calls) and `ld_imm64` function references (set to `src_reg = 4`)
//!   are resolved; every reached function is appended once, in order of first reference
//!   while scanning the growing program, and `imm` is re-based. [`Program::subprogs`] records
//!   the layout and where each function came from (`section`, `sec_start`).
//! - **Maps**: legacy `maps` (`struct bpf_map_def`, stride = symbol size), then BTF `.maps`
//!   (`type`, `max_entries`, `map_flags`, `pinning`, `key`/`value` types or
//!   `key_size`/`value_size`, `map_extra`, `values` initializers of prog arrays and
//!   map-in-map, whose inner template comes from `__array(values, struct {...})`; legacy
//!   definitions with samples/bpf's `inner_map_idx` give it too), then
//!   global data sections as single-element `ARRAY` maps (key 4 bytes, value = section,
//!   `.rodata*` read-only with `BPF_F_RDONLY_PROG`).
//! - **BTF**: the raw `.BTF` is kept in [`Object::btf`]; `.BTF.ext` func_info and
//!   line_info (with file and source line strings) are remapped to each program's layout.
//! - **Section names**: [`prog_type_from_section`] gives the program type and expected
//!   attach type by libbpf's `SEC()` table.
//! - **Externs**: a relocation against an undefined symbol is an [`Extern`] reference, left
//!   unresolved (it depends on the running kernel): a kfunc call becomes `call` with
//!   `src_reg = PSEUDO_KFUNC_CALL`, `imm = 0`; a `.kconfig`/`.ksyms` `ld_imm64` keeps
//!   clang's `imm = 0`. [`Object::externs`] lists each with its sites. The kernel layer
//!   (`kops_kernel::core::relocate`) resolves them, with CO-RE relocations, which the
//!   loader only counts ([`Object::core_relos`]).
//! - **Errors**: [`LoadError`] names the file, section, program and instruction slot. No
//!   input panics (see `tests/fuzz.rs`).
//!
//! [`mod@write`] puts edited functions back into an ELF object (for `kops rewrite`).

// LoadError carries its location inline; it is built once per failed load.
#![allow(clippy::result_large_err)]

use kops_isa::Insn;

mod btf;
mod load;
mod secdef;
pub mod write;

pub use load::{LoadError, LoadErrorKind};
pub use secdef::{attach_type, prog_type_from_name, prog_type_from_section, prog_type_names};

/// Linux `enum bpf_prog_type` values for the program types we know by section name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProgType {
    SocketFilter,
    Kprobe,
    SchedCls,
    SchedAct,
    Tracepoint,
    Xdp,
    PerfEvent,
    CgroupSkb,
    RawTracepoint,
    Tracing,
    Lsm,
    Syscall,
    /// A section name libbpf would not map to a type we know.
    Unspec,
}

impl ProgType {
    /// The kernel's `enum bpf_prog_type` number.
    pub fn kernel_id(self) -> u32 {
        match self {
            ProgType::Unspec => 0,
            ProgType::SocketFilter => 1,
            ProgType::Kprobe => 2,
            ProgType::SchedCls => 3,
            ProgType::SchedAct => 4,
            ProgType::Tracepoint => 5,
            ProgType::Xdp => 6,
            ProgType::PerfEvent => 7,
            ProgType::CgroupSkb => 8,
            ProgType::RawTracepoint => 17,
            ProgType::Tracing => 26,
            ProgType::Lsm => 29,
            ProgType::Syscall => 31,
        }
    }
}

/// Linux `enum bpf_map_type` numbers, and their names for messages ([`map_type::describe`]).
pub mod map_type {
    pub const HASH: u32 = 1;
    pub const ARRAY: u32 = 2;
    pub const PROG_ARRAY: u32 = 3;
    pub const PERF_EVENT_ARRAY: u32 = 4;
    pub const PERCPU_HASH: u32 = 5;
    pub const PERCPU_ARRAY: u32 = 6;
    pub const STACK_TRACE: u32 = 7;
    pub const CGROUP_ARRAY: u32 = 8;
    pub const LRU_HASH: u32 = 9;
    pub const LRU_PERCPU_HASH: u32 = 10;
    pub const LPM_TRIE: u32 = 11;
    pub const ARRAY_OF_MAPS: u32 = 12;
    pub const HASH_OF_MAPS: u32 = 13;
    pub const DEVMAP: u32 = 14;
    pub const SOCKMAP: u32 = 15;
    pub const CPUMAP: u32 = 16;
    pub const XSKMAP: u32 = 17;
    pub const SOCKHASH: u32 = 18;
    pub const CGROUP_STORAGE: u32 = 19;
    pub const REUSEPORT_SOCKARRAY: u32 = 20;
    pub const PERCPU_CGROUP_STORAGE: u32 = 21;
    pub const QUEUE: u32 = 22;
    pub const STACK: u32 = 23;
    pub const SK_STORAGE: u32 = 24;
    pub const DEVMAP_HASH: u32 = 25;
    pub const STRUCT_OPS: u32 = 26;
    pub const RINGBUF: u32 = 27;
    pub const INODE_STORAGE: u32 = 28;
    pub const TASK_STORAGE: u32 = 29;
    pub const BLOOM_FILTER: u32 = 30;
    pub const USER_RINGBUF: u32 = 31;
    pub const CGRP_STORAGE: u32 = 32;
    pub const ARENA: u32 = 33;

    /// The kernel's name (`enum bpf_map_type` without `BPF_MAP_TYPE_`, lower case), as
    /// bpftool prints it; None for numbers this kernel generation does not define.
    pub fn name(t: u32) -> Option<&'static str> {
        const NAMES: [&str; 34] = [
            "unspec", "hash", "array", "prog_array", "perf_event_array", "percpu_hash", "percpu_array",
            "stack_trace", "cgroup_array", "lru_hash", "lru_percpu_hash", "lpm_trie", "array_of_maps",
            "hash_of_maps", "devmap", "sockmap", "cpumap", "xskmap", "sockhash", "cgroup_storage",
            "reuseport_sockarray", "percpu_cgroup_storage", "queue", "stack", "sk_storage", "devmap_hash",
            "struct_ops", "ringbuf", "inode_storage", "task_storage", "bloom_filter", "user_ringbuf",
            "cgrp_storage", "arena",
        ];
        NAMES.get(t as usize).copied()
    }

    /// `lpm_trie (11)`, or `unknown map type 99` for a number the table does not know.
    pub fn describe(t: u32) -> String {
        match name(t) {
            Some(n) => format!("{n} ({t})"),
            None => format!("unknown map type {t}"),
        }
    }

    /// Map-in-map types (their values are maps; creation needs an inner map template).
    pub fn is_map_in_map(t: u32) -> bool {
        matches!(t, ARRAY_OF_MAPS | HASH_OF_MAPS)
    }
}

/// Where a map definition came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MapOrigin {
    /// BTF-defined map in `.maps`.
    Btf,
    /// Legacy `struct bpf_map_def` in `maps`.
    Legacy,
    /// Global data section turned into a single-element array map.
    GlobalData,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MapDef {
    /// Symbol name, or the section name for global data (`.rodata`, `.data.foo`, ...).
    pub name: String,
    pub map_type: u32,
    pub key_size: u32,
    pub value_size: u32,
    pub max_entries: u32,
    pub flags: u32,
    pub origin: MapOrigin,
    /// Initial contents of element 0 for global data (`.bss`: zeros).
    pub initial: Option<Vec<u8>>,
    /// `.rodata`: frozen after creation.
    pub readonly: bool,
    /// libbpf `pinning` attribute, if any.
    pub pinning: u32,
    /// BTF type ids of key and value, when the object has BTF for them.
    pub btf_key_type_id: u32,
    pub btf_value_type_id: u32,
    /// BTF-defined map-in-map / prog-array initial slots: (index, program or map name).
    pub init_slots: Vec<(u32, String)>,
    /// Map-in-map: the inner map template (BTF `__array(values, struct {...})`, or the
    /// legacy `inner_map_idx` map). Its name is `<outer>.inner`.
    pub inner: Option<Box<MapDef>>,
    /// `map_extra` (bloom filter: number of hash functions in the low 4 bits).
    pub map_extra: u64,
}

impl MapDef {
    /// A map with the given shape and origin; everything else (flags, initial contents,
    /// pinning, BTF ids, initial slots) empty.
    pub fn new(name: impl Into<String>, origin: MapOrigin, map_type: u32, key_size: u32, value_size: u32, max_entries: u32) -> MapDef {
        MapDef {
            name: name.into(),
            map_type,
            key_size,
            value_size,
            max_entries,
            flags: 0,
            origin,
            initial: None,
            readonly: false,
            pinning: 0,
            btf_key_type_id: 0,
            btf_value_type_id: 0,
            init_slots: Vec::new(),
            inner: None,
            map_extra: 0,
        }
    }
}

/// `struct bpf_func_info`: a function starts at `insn_off` (slot index in the program).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FuncInfo {
    pub insn_off: u32,
    pub type_id: u32,
}

/// `struct bpf_line_info` plus the resolved strings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LineInfo {
    pub insn_off: u32,
    pub file_name_off: u32,
    pub line_off: u32,
    /// `line << 10 | column`, as in the kernel.
    pub line_col: u32,
    pub file: String,
    pub source_line: String,
}

impl LineInfo {
    pub fn line(&self) -> u32 {
        self.line_col >> 10
    }
    pub fn column(&self) -> u32 {
        self.line_col & 0x3ff
    }
}

/// A subprogram inside a program's instruction array.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subprog {
    pub name: String,
    /// First slot.
    pub start: usize,
    /// Number of slots.
    pub len: usize,
    /// ELF section the function came from (`.text` for appended subprograms).
    pub section: String,
    /// First slot of the function inside that ELF section (what `write` needs to put an
    /// edited body back).
    pub sec_start: usize,
}

#[derive(Debug, Clone)]
pub struct Program {
    /// Function symbol name of the entry point.
    pub name: String,
    /// ELF section name (`xdp`, `tc`, `kprobe/sys_open`, ...).
    pub section: String,
    pub prog_type: ProgType,
    /// The kernel's `enum bpf_prog_type` number; also set for section kinds that
    /// [`ProgType`] has no variant for (then `prog_type` is `Unspec`).
    pub prog_type_id: u32,
    /// libbpf's expected attach type, when the section implies one.
    pub expected_attach_type: u32,
    /// Entry function first, then every `.text` subprogram it reaches.
    pub insns: Vec<Insn>,
    /// Entry function first (start 0), in layout order.
    pub subprogs: Vec<Subprog>,
    /// Empty when the object has no `.BTF.ext`.
    pub func_info: Vec<FuncInfo>,
    pub line_info: Vec<LineInfo>,
}

/// What an extern symbol stands for (libbpf's classes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExternKind {
    /// A `.kconfig` variable (`CONFIG_*`, `LINUX_KERNEL_VERSION`, ...).
    Kconfig,
    /// A `.ksyms` variable (kernel symbol address or typed BTF ksym).
    Ksym,
    /// A kernel function called from BPF (kfunc).
    Kfunc,
}

impl ExternKind {
    pub fn name(self) -> &'static str {
        match self {
            ExternKind::Kconfig => "kconfig",
            ExternKind::Ksym => "ksym",
            ExternKind::Kfunc => "kfunc",
        }
    }
}

/// An extern symbol the object references.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Extern {
    pub name: String,
    pub kind: ExternKind,
    /// `__weak`: may stay unresolved (value 0, call poisoned) instead of failing.
    pub weak: bool,
    /// (program index, slot) of each reference still in extern form. Relocation turns
    /// kconfig references into `.kconfig` map values and drops their sites; kfunc and
    /// ksym sites stay (with the kernel's BTF ids) so that messages can name them.
    pub sites: Vec<(usize, usize)>,
    /// Set by the kernel layer once the kernel's value, address or BTF id is in the code.
    pub resolved: bool,
    /// Kfuncs and typed ksyms, once resolved: the vmlinux BTF id (0 otherwise).
    pub btf_id: u32,
}

#[derive(Debug, Clone)]
pub struct Object {
    /// Path as given, for messages.
    pub path: String,
    pub programs: Vec<Program>,
    pub maps: Vec<MapDef>,
    pub license: String,
    pub kernel_version: u32,
    /// Raw `.BTF` section, for the kernel (BTF_LOAD) and for func_info/line_info.
    pub btf: Option<Vec<u8>>,
    /// Whether the object has a `.BTF.ext` section (func_info/line_info/CO-RE).
    pub has_btf_ext: bool,
    /// Extern symbols referenced by the programs (see [`Extern`]).
    pub externs: Vec<Extern>,
    /// Number of CO-RE relocation records in `.BTF.ext` still to apply (0 once relocated).
    pub core_relos: usize,
    /// Programs the loader could not build (a jump out of their function, a truncated
    /// `ld_imm64`, ...): the rest of the object stays usable, as with libbpf, and every
    /// command that works on all programs reports these by name.
    pub broken: Vec<BrokenProgram>,
    /// `(program, function)`: the exception callback each program declares with
    /// `__exception_cb` (a BTF decl tag); its code is in the program (appended as libbpf
    /// does). `bpf_throw` ends the program through it.
    pub exception_callbacks: Vec<(String, String)>,
}

/// A program of the object that could not be built, and why.
#[derive(Debug, Clone)]
pub struct BrokenProgram {
    pub name: String,
    pub section: String,
    pub error: LoadError,
}

impl Object {
    pub fn program(&self, name: &str) -> Option<&Program> {
        self.programs.iter().find(|p| p.name == name)
    }

    /// Why there is no program `name`: it is one the loader could not build (with the
    /// reason), or no program has that name (with the names there are).
    /// Start slot of the exception callback of program `p` (see
    /// [`Object::exception_callbacks`]) in `p.insns`, found by subprogram name.
    pub fn exception_callback(&self, p: &Program) -> Option<usize> {
        let (_, cb) = self.exception_callbacks.iter().find(|(prog, _)| *prog == p.name)?;
        p.subprogs.iter().find(|s| s.name == *cb).map(|s| s.start)
    }

    pub fn missing_program(&self, name: &str) -> String {
        if let Some(b) = self.broken.iter().find(|b| b.name == name) {
            return match b.error.insn {
                Some(i) => format!("program `{name}` cannot be loaded: insn {i}: {}", b.error.kind),
                None => format!("program `{name}` cannot be loaded: {}", b.error.kind),
            };
        }
        let names: Vec<&str> = self.programs.iter().map(|p| p.name.as_str()).collect();
        format!("no program `{name}` (programs: {})", names.join(", "))
    }

    /// Reads and loads a file (see [`Object::parse`]).
    pub fn load(path: impl AsRef<std::path::Path>) -> Result<Object, LoadError> {
        let path = path.as_ref();
        let shown = path.display().to_string();
        let bytes = std::fs::read(path).map_err(|e| LoadError {
            file: shown.clone(),
            section: None,
            program: None,
            insn: None,
            kind: LoadErrorKind::Io(e.to_string()),
        })?;
        Object::parse(&bytes, &shown)
    }

    /// An object with `maps` and nothing else (no programs, no BTF; GPL), for programs
    /// built in code; `path` names it in messages.
    pub fn empty(path: &str, maps: Vec<MapDef>) -> Object {
        Object {
            path: path.to_string(),
            programs: Vec::new(),
            maps,
            license: "GPL".into(),
            kernel_version: 0,
            btf: None,
            has_btf_ext: false,
            externs: Vec::new(),
            core_relos: 0,
            broken: Vec::new(),
            exception_callbacks: Vec::new(),
        }
    }

    /// Loads an object from its bytes; `path` is only used in messages.
    pub fn parse(bytes: &[u8], path: &str) -> Result<Object, LoadError> {
        load::parse(bytes, path)
    }

    /// Whether the programs need the kernel layer's relocation (CO-RE records or extern
    /// references) before the kernel or a runtime can take them.
    pub fn needs_relocation(&self) -> bool {
        self.core_relos > 0 || self.externs.iter().any(|e| !e.resolved)
    }

    /// The extern referenced at `slot` of program `prog` (an index into `programs`).
    pub fn extern_at(&self, prog: usize, slot: usize) -> Option<&Extern> {
        self.externs.iter().find(|e| e.sites.contains(&(prog, slot)))
    }

    /// Applies a `--type` choice: every program whose section name gives no program type
    /// gets `ty`. Without `ty`, each such program moves to [`Object::broken`] with an error
    /// that names its section and offers `--type`; the other programs stay loadable.
    /// Programs whose section names a type keep it.
    pub fn resolve_prog_types(&mut self, ty: Option<&str>) -> Result<(), String> {
        let chosen = match ty {
            Some(t) => Some(prog_type_from_name(t).ok_or_else(|| {
                format!("unknown program type `{t}` (known: {})", prog_type_names().join(", "))
            })?),
            None => None,
        };
        let mut i = self.programs.len();
        while i > 0 {
            i -= 1;
            if self.programs[i].prog_type_id != 0 {
                continue;
            }
            if let Some((pt, id, at)) = chosen {
                let p = &mut self.programs[i];
                p.prog_type = pt;
                p.prog_type_id = id;
                p.expected_attach_type = at;
                continue;
            }
            let p = self.remove_program(i);
            let kind = LoadErrorKind::UnknownSection(p.section.clone());
            let error = LoadError { file: self.path.clone(), section: Some(p.section.clone()), program: Some(p.name.clone()), insn: None, kind };
            self.broken.push(BrokenProgram { name: p.name, section: p.section, error });
        }
        Ok(())
    }

    /// Removes program `i`, keeping the extern sites (which index programs) right.
    fn remove_program(&mut self, i: usize) -> Program {
        for e in &mut self.externs {
            e.sites.retain(|&(pi, _)| pi != i);
            for site in &mut e.sites {
                if site.0 > i {
                    site.0 -= 1;
                }
            }
        }
        self.programs.remove(i)
    }

    /// Index of the map called `name`.
    pub fn map_index(&self, name: &str) -> Option<usize> {
        self.maps.iter().position(|m| m.name == name)
    }
}

#[cfg(test)]
mod type_tests {
    use super::*;

    fn obj(sections: &[&str]) -> Object {
        let programs = sections
            .iter()
            .map(|s| {
                let (prog_type, prog_type_id, expected_attach_type) = prog_type_from_section(s);
                Program {
                    name: format!("p_{s}"),
                    section: s.to_string(),
                    prog_type,
                    prog_type_id,
                    expected_attach_type,
                    insns: Vec::new(),
                    subprogs: Vec::new(),
                    func_info: Vec::new(),
                    line_info: Vec::new(),
                }
            })
            .collect();
        Object { path: "t.o".into(), programs, maps: Vec::new(), license: String::new(), kernel_version: 0, btf: None, has_btf_ext: false, externs: Vec::new(), core_relos: 0, broken: Vec::new(), exception_callbacks: Vec::new() }
    }

    #[test]
    fn unknown_sections_need_a_type() {
        // Without --type the program with the unknown section cannot be loaded; the
        // others can.
        let mut without = obj(&["xdp", "redirect_xmit"]);
        without.resolve_prog_types(None).unwrap();
        assert_eq!(without.programs.len(), 1);
        assert_eq!(without.programs[0].name, "p_xdp");
        let e = without.missing_program("p_redirect_xmit");
        assert!(e.contains("program `p_redirect_xmit`") && e.contains("section name `redirect_xmit` is unknown") && e.contains("--type"), "{e}");
        let mut o = obj(&["xdp", "redirect_xmit"]);
        let e = o.resolve_prog_types(Some("nope")).unwrap_err();
        assert!(e.contains("unknown program type `nope`"), "{e}");
        o.resolve_prog_types(Some("tc")).unwrap();
        assert_eq!(o.programs[1].prog_type, ProgType::SchedCls);
        assert_eq!(o.programs[1].prog_type_id, 3);
        // Known sections keep their type.
        assert_eq!(o.programs[0].prog_type, ProgType::Xdp);
    }
}

impl Program {
    /// The subprogram that contains slot `pc`.
    pub fn subprog_at(&self, pc: usize) -> Option<&Subprog> {
        self.subprogs.iter().find(|s| pc >= s.start && pc < s.start + s.len)
    }
}
