//! Jobs: what the loader in the guest does for one program (maps to create, the program
//! to load, the test runs), and their binary encoding (the batch file `/jobs.bin`, whose
//! format is described at the top of `scripts/arm64-oracle/loader.c`).

use kops_isa::Insn;
use kops_object::{map_type, FuncInfo, LineInfo, MapDef, MapOrigin, Object, Program};

/// `BPF_F_RDONLY_PROG`: what libbpf sets on `.rodata` maps.
const BPF_F_RDONLY_PROG: u32 = 1 << 7;
/// The loader's limit on maps per job.
pub const MAX_MAPS: usize = 256;
/// The loader's limit on map-in-map slots per job.
pub const MAX_SLOTS: usize = 1024;
/// The kernel's limit on instructions per program (`BPF_COMPLEXITY_LIMIT_INSNS`).
pub const MAX_INSNS: usize = 1_000_000;

/// A map the loader creates before loading the program. Its position in [`Job::maps`] is
/// the index that `ld_imm64 src=PSEUDO_MAP_IDX(_VALUE)` references (the loader passes the
/// map fds as the program's fd_array).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobMap {
    pub name: String,
    pub map_type: u32,
    pub key_size: u32,
    pub value_size: u32,
    pub max_entries: u32,
    pub flags: u32,
    pub map_extra: u64,
    /// BTF key/value type ids (used only when the job carries BTF; a map the kernel refuses
    /// with them is created without, as libbpf does).
    pub btf_key_type_id: u32,
    pub btf_value_type_id: u32,
    /// Map-in-map: the inner map template (type, key size, value size, max entries, flags).
    pub inner: Option<(u32, u32, u32, u32, u32)>,
    /// Elements written after creation: (key, value). Values of per-CPU maps hold one
    /// 8-byte-aligned slot per possible CPU of the guest (it has one CPU).
    pub entries: Vec<(Vec<u8>, Vec<u8>)>,
    /// Map-in-map elements set, once every map of the job exists, to another map of the
    /// job: (key, index in [`Job::maps`]).
    pub slots: Vec<(Vec<u8>, usize)>,
    /// BPF_MAP_FREEZE after the entries are written (`.rodata`).
    pub freeze: bool,
}

impl JobMap {
    /// A map of this shape, empty, without flags.
    pub fn new(name: impl Into<String>, map_type: u32, key_size: u32, value_size: u32, max_entries: u32) -> JobMap {
        JobMap {
            name: name.into(),
            map_type,
            key_size,
            value_size,
            max_entries,
            flags: 0,
            map_extra: 0,
            btf_key_type_id: 0,
            btf_value_type_id: 0,
            inner: None,
            entries: Vec::new(),
            slots: Vec::new(),
            freeze: false,
        }
    }

    /// The map as libbpf would create it from an object's definition: global data gets
    /// its initial contents as element 0, `.rodata` is read-only for programs and frozen.
    /// Initial slots (`values = {...}`) are left to [`Job::from_program`], which knows the
    /// other maps; those of program arrays stay empty (the guest loads one program per job).
    pub fn from_def(def: &MapDef) -> Result<JobMap, String> {
        let mut m = JobMap::new(def.name.clone(), def.map_type, def.key_size, def.value_size, def.max_entries);
        m.flags = def.flags;
        m.map_extra = def.map_extra;
        m.btf_key_type_id = def.btf_key_type_id;
        m.btf_value_type_id = def.btf_value_type_id;
        if map_type::is_map_in_map(def.map_type) {
            let t = def.inner.as_deref().ok_or_else(|| {
                format!("map `{}`: {} has no inner map template", def.name, map_type::describe(def.map_type))
            })?;
            if t.inner.is_some() {
                return Err(format!("map `{}`: nested map-in-map templates are not supported", def.name));
            }
            m.inner = Some((t.map_type, t.key_size, t.value_size, t.max_entries, t.flags));
        }
        if def.map_type == map_type::PERF_EVENT_ARRAY && m.max_entries == 0 {
            m.max_entries = 1; // libbpf: the number of possible CPUs (the guest has one)
        }
        if let Some(init) = &def.initial {
            if init.len() != def.value_size as usize {
                return Err(format!(
                    "map `{}`: initial contents are {} bytes, value size is {}",
                    def.name,
                    init.len(),
                    def.value_size
                ));
            }
            m.entries.push((0u32.to_le_bytes().to_vec(), init.clone()));
        }
        if def.origin == MapOrigin::GlobalData && def.readonly {
            m.flags |= BPF_F_RDONLY_PROG;
        }
        m.freeze = def.readonly;
        Ok(m)
    }
}

/// One BPF_PROG_TEST_RUN.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Run {
    pub data_in: Vec<u8>,
    pub ctx_in: Vec<u8>,
    /// Capacity of the output packet (XDP may grow the packet: keep room).
    pub data_out_size: u32,
    /// Capacity of the output context (0: no context out).
    pub ctx_out_size: u32,
    /// Repetitions (0 and 1 both mean one run).
    pub repeat: u32,
    pub flags: u32,
}

impl Run {
    /// A run on a packet, with room for 256 more bytes of output (`bpf_xdp_adjust_head`
    /// or `_tail` may grow it).
    pub fn packet(data: impl Into<Vec<u8>>) -> Run {
        let data_in = data.into();
        let data_out_size = data_in.len() as u32 + 256;
        Run { data_in, data_out_size, repeat: 1, ..Run::default() }
    }

    /// A run with an input context and no packet (e.g. `syscall` or `raw_tracepoint`).
    pub fn context(ctx: impl Into<Vec<u8>>) -> Run {
        let ctx_in = ctx.into();
        let ctx_out_size = ctx_in.len() as u32;
        Run { ctx_in, ctx_out_size, repeat: 1, ..Run::default() }
    }
}

/// A program for the guest kernel, with its maps and test runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Job {
    /// Program name (the kernel keeps 15 characters; others become `_`).
    pub name: String,
    /// `enum bpf_prog_type`.
    pub prog_type: u32,
    pub expected_attach_type: u32,
    pub prog_flags: u32,
    /// Verifier log level for the load (0: a log only when rejected).
    pub log_level: u32,
    pub kern_version: u32,
    /// Empty: "GPL".
    pub license: String,
    /// Map references as `ld_imm64 src=PSEUDO_MAP_IDX(_VALUE), imm = index into maps`.
    /// A caller that changes them (lowering kinsn sites, ...) fixes `func_info` and
    /// `line_info` up or clears them, as `kops_kernel::load_object_program` drops them.
    pub insns: Vec<Insn>,
    pub maps: Vec<JobMap>,
    /// Raw BTF ready for BPF_BTF_LOAD (DATASECs fixed up), with the program's func and
    /// line info; without BTF both are dropped.
    pub btf: Option<Vec<u8>>,
    pub func_info: Vec<FuncInfo>,
    pub line_info: Vec<LineInfo>,
    pub runs: Vec<Run>,
    /// Read every map back after the runs ([`crate::Outcome::dumps`]).
    pub dump_maps: bool,
    /// Each run starts from the maps as created: after each run the loader reads back the
    /// maps' non-zero elements ([`crate::RunResult::maps`]; frozen maps and maps that hold
    /// kernel objects are left out, queues and stacks are read by popping) and puts the
    /// maps back as the job created them, as `kops diff` does on the host kernel.
    pub isolate_runs: bool,
}

impl Job {
    /// A program of type `prog_type` with no maps and no runs.
    pub fn new(name: impl Into<String>, prog_type: u32, insns: Vec<Insn>) -> Job {
        Job {
            name: name.into(),
            prog_type,
            expected_attach_type: 0,
            prog_flags: 0,
            log_level: 0,
            kern_version: 0,
            license: String::new(),
            insns,
            maps: Vec::new(),
            btf: None,
            func_info: Vec::new(),
            line_info: Vec::new(),
            runs: Vec::new(),
            dump_maps: false,
            isolate_runs: false,
        }
    }

    /// Program `prog` of `obj` as libbpf would load it: the object's maps (all of them, in
    /// `Object::maps` order, which is what the program's map references index), its type,
    /// attach type, license and kernel version. No BTF (see [`Job::with_btf`]). Objects
    /// whose externs or CO-RE relocations are unresolved are refused: they need the running
    /// kernel's BTF, which is the x86 host's, not the guest's.
    pub fn from_program(obj: &Object, prog: &Program) -> Result<Job, String> {
        if obj.needs_relocation() {
            let what: Vec<&str> = obj.externs.iter().filter(|e| !e.resolved).map(|e| e.name.as_str()).collect();
            return Err(format!(
                "{}: program `{}` needs CO-RE relocation or extern resolution ({} CO-RE records{}), which the arm64 oracle does not do",
                obj.path,
                prog.name,
                obj.core_relos,
                if what.is_empty() { String::new() } else { format!(", externs {}", what.join(", ")) }
            ));
        }
        let maps = obj
            .maps
            .iter()
            .map(JobMap::from_def)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("{}: {e}", obj.path))?;
        let mut maps = maps;
        for (m, def) in maps.iter_mut().zip(&obj.maps) {
            if !map_type::is_map_in_map(def.map_type) {
                continue;
            }
            for (slot, name) in &def.init_slots {
                let target = obj.maps.iter().position(|d| &d.name == name).ok_or_else(|| {
                    format!(
                        "{}: map `{}`: slot {slot} names `{name}`, which is not a map of the object",
                        obj.path, def.name
                    )
                })?;
                m.slots.push((slot.to_le_bytes().to_vec(), target));
            }
        }
        let mut job = Job::new(prog.name.clone(), prog.prog_type_id, prog.insns.clone());
        job.expected_attach_type = prog.expected_attach_type;
        job.license = obj.license.clone();
        job.kern_version = obj.kernel_version;
        job.maps = maps;
        job.func_info = prog.func_info.clone();
        job.line_info = prog.line_info.clone();
        Ok(job)
    }

    /// Gives the job BTF (already fixed up for BPF_BTF_LOAD).
    pub fn with_btf(mut self, btf: Vec<u8>) -> Job {
        self.btf = Some(btf);
        self
    }

    pub fn with_map(mut self, map: JobMap) -> Job {
        self.maps.push(map);
        self
    }

    pub fn with_run(mut self, run: Run) -> Job {
        self.runs.push(run);
        self
    }

    /// What is wrong with the job for the loader, if anything.
    pub fn check(&self) -> Result<(), String> {
        let n = &self.name;
        if self.insns.is_empty() {
            return Err(format!("program `{n}` has no instructions"));
        }
        if self.insns.len() > MAX_INSNS {
            return Err(format!(
                "program `{n}` has {} instructions (the kernel takes at most {MAX_INSNS})",
                self.insns.len()
            ));
        }
        if self.maps.len() > MAX_MAPS {
            return Err(format!("program `{n}` has {} maps (the loader creates at most {MAX_MAPS})", self.maps.len()));
        }
        // (Without BTF they are not given to the kernel.)
        if let Some(off) = self
            .func_info
            .iter()
            .map(|f| f.insn_off)
            .chain(self.line_info.iter().map(|l| l.insn_off))
            .find(|&o| o as usize >= self.insns.len())
            .filter(|_| self.btf.is_some())
        {
            return Err(format!(
                "program `{n}`: func or line info names instruction {off} of {} (stale after the instructions changed?)",
                self.insns.len()
            ));
        }
        let slots: usize = self.maps.iter().map(|m| m.slots.len()).sum();
        if slots > MAX_SLOTS {
            return Err(format!("program `{n}` sets {slots} map-in-map slots (the loader sets at most {MAX_SLOTS})"));
        }
        for m in &self.maps {
            if let Some((_, t)) = m.slots.iter().find(|(k, t)| *t >= self.maps.len() || k.len() != m.key_size as usize)
            {
                return Err(format!(
                    "program `{n}`, map `{}`: a slot names map {t} (the job has {}) or has a key of the wrong size",
                    m.name,
                    self.maps.len()
                ));
            }
            let per_cpu =
                matches!(m.map_type, map_type::PERCPU_ARRAY | map_type::PERCPU_HASH | map_type::LRU_PERCPU_HASH);
            let value_len = if per_cpu { (m.value_size as usize).div_ceil(8) * 8 } else { m.value_size as usize };
            for (k, v) in &m.entries {
                if k.len() != m.key_size as usize || v.len() != value_len {
                    return Err(format!(
                        "program `{n}`, map `{}`: an entry has a {}-byte key and a {}-byte value, the map takes {} and {}",
                        m.name,
                        k.len(),
                        v.len(),
                        m.key_size,
                        value_len
                    ));
                }
            }
        }
        Ok(())
    }
}

struct Writer(Vec<u8>);

impl Writer {
    fn u32(&mut self, v: u32) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn u64(&mut self, v: u64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn len(&mut self, n: usize) -> Result<(), String> {
        let n = u32::try_from(n).map_err(|_| format!("a field of {n} bytes is too large for the batch"))?;
        self.u32(n);
        Ok(())
    }
    fn bytes(&mut self, b: &[u8]) -> Result<(), String> {
        self.len(b.len())?;
        self.0.extend_from_slice(b);
        Ok(())
    }
}

/// The loader's limit on kernel symbols looked up per batch.
pub const MAX_SYMBOLS: usize = 64;

/// The batch file for `jobs` (each checked first; the error names the job), with the
/// kernel symbols whose addresses the loader reports.
pub fn encode(jobs: &[Job], symbols: &[String]) -> Result<Vec<u8>, String> {
    let mut w = Writer(b"KOPSBAT1".to_vec());
    w.len(jobs.len())?;
    if symbols.len() > MAX_SYMBOLS {
        return Err(format!("{} kernel symbols asked for (the loader looks up at most {MAX_SYMBOLS})", symbols.len()));
    }
    w.len(symbols.len())?;
    for s in symbols {
        if s.is_empty() || s.len() > 500 || s.bytes().any(|b| b.is_ascii_whitespace() || b == 0) {
            return Err(format!("`{s}` is not a kernel symbol name"));
        }
        w.bytes(s.as_bytes())?;
    }
    for (i, j) in jobs.iter().enumerate() {
        j.check().map_err(|e| format!("job {i}: {e}"))?;
        for v in [
            j.prog_type,
            j.expected_attach_type,
            j.prog_flags,
            j.log_level,
            j.kern_version,
            j.dump_maps as u32 | (j.isolate_runs as u32) << 1,
        ] {
            w.u32(v);
        }
        w.bytes(j.name.as_bytes())?;
        w.bytes(j.license.as_bytes())?;
        w.bytes(&kops_isa::to_bytes(&j.insns))?;
        let (btf, finfo, linfo): (&[u8], Vec<u8>, Vec<u8>) = match &j.btf {
            Some(b) => (
                b,
                j.func_info.iter().flat_map(|f| [f.insn_off, f.type_id]).flat_map(u32::to_le_bytes).collect(),
                j.line_info
                    .iter()
                    .flat_map(|l| [l.insn_off, l.file_name_off, l.line_off, l.line_col])
                    .flat_map(u32::to_le_bytes)
                    .collect(),
            ),
            None => (&[], Vec::new(), Vec::new()),
        };
        w.bytes(btf)?;
        w.bytes(&finfo)?;
        w.bytes(&linfo)?;
        w.len(j.maps.len())?;
        for m in &j.maps {
            for v in [
                m.map_type,
                m.key_size,
                m.value_size,
                m.max_entries,
                m.flags,
                m.btf_key_type_id,
                m.btf_value_type_id,
                m.freeze as u32,
            ] {
                w.u32(v);
            }
            w.u64(m.map_extra);
            let (t, k, v, e, f) = m.inner.unwrap_or_default();
            for x in [t, k, v, e, f] {
                w.u32(x);
            }
            w.bytes(m.name.as_bytes())?;
            w.len(m.entries.len())?;
            for (k, v) in &m.entries {
                w.bytes(k)?;
                w.bytes(v)?;
            }
            w.len(m.slots.len())?;
            for (k, t) in &m.slots {
                w.bytes(k)?;
                w.len(*t)?;
            }
        }
        w.len(j.runs.len())?;
        for r in &j.runs {
            w.bytes(&r.data_in)?;
            w.bytes(&r.ctx_in)?;
            for v in [r.data_out_size, r.ctx_out_size, r.repeat, r.flags] {
                w.u32(v);
            }
        }
    }
    Ok(w.0)
}
