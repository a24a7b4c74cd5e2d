//! Turning object files and runtime names into checked [`Case`]s.
//!
//! For every program: one input (the seeded packet), one oracle run (the kernel's
//! BPF_PROG_TEST_RUN; the interpreter when bpf(2) is refused), then each runtime's own
//! single run, compared with the oracle on r0, the output packet and every map both sides
//! can read back (the bundled benchmarks leave their folded result in `.bss`
//! `kops_result`; `native` is compared on that value). A runtime that differs is a
//! mismatch and is not timed; one that cannot run the program is skipped with the reason.

use std::collections::BTreeMap;
use std::path::Path;
use std::rc::Rc;

use kops_kernel::KernelBtf;
use kops_object::{Object, Program};
use kops_recognize::{Mode, Pass, Policy};
use kops_vm::{CtxKind, Engine};

use crate::native::{self, NativeRunner};
use crate::runners::{differences, input_for, KernelProg, KinsnProgram, OurJit, Outcome, RbpfEngine, VmProg};
use crate::{Case, CodeSize, CompileTime, Mismatch, ProgId, Skipped};

/// Every runtime name `kops bench` knows, in column order.
pub const RUNTIMES: [&str; 7] = ["kernel", "interp", "jit", "kops", "cranelift", "native", "rbpf"];
/// The identity control: a second, independently loaded copy on the kernel.
pub const KERNEL_COPY: &str = "kernel2";
/// The harness-floor program (bpf/progs/xdp_return.bpf.c: returns XDP_PASS at once).
pub const FLOOR: &str = "xdp_return";

pub struct SuiteOptions {
    pub runtimes: Vec<String>,
    /// Also measure each recognizer pass alone (`kops:<pass>`).
    pub per_pass: bool,
    pub packet: Vec<u8>,
    /// Time over these packets (a traffic trace) instead of `packet` alone; results are
    /// checked on `packet` (use `kops diff --traffic` to check every packet).
    pub traffic: Vec<Vec<u8>>,
    /// CPU the thread is pinned to (per-CPU map values are read there); None: not pinned.
    pub cpu: Option<usize>,
    /// Program type for programs whose section name gives none (`--type`).
    pub prog_type: Option<String>,
}

#[derive(Default)]
pub struct Prepared {
    pub cases: Vec<Case>,
    pub skipped: Vec<Skipped>,
    pub mismatches: Vec<Mismatch>,
    pub notes: Vec<String>,
    /// Row label ([`ProgId::key`]) -> the one line saying which idiom it stresses (from its
    /// source).
    pub descriptions: BTreeMap<String, String>,
    pub code_bytes: Vec<CodeSize>,
    /// Compile times (`cranelift`).
    pub compile_us: Vec<CompileTime>,
    /// Timing over a traffic trace (some runners cannot).
    pub traffic: bool,
    /// What the recognizer rewrote for the `kops` runtime, per program.
    pub kops_sites: Vec<KopsSites>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KopsSites {
    pub id: ProgId,
    /// kinsn sites, of which `native` got a native emit (the rest: proof-sequence fallback).
    pub sites: usize,
    pub native: usize,
    /// Rewrites to plain instructions (wide loads).
    pub plain: usize,
}

/// One line: the programs the recognizer changed, with their site counts.
pub fn kops_sites_line(v: &[KopsSites]) -> String {
    let changed: Vec<String> = v
        .iter()
        .filter(|k| k.sites + k.plain > 0)
        .map(|k| {
            let mut s = format!("{} {}", k.id.key, k.sites);
            if k.native != k.sites {
                s.push_str(&format!(" ({} fallback)", k.sites - k.native));
            }
            if k.plain > 0 {
                s.push_str(&format!(" +{} plain", k.plain));
            }
            s
        })
        .collect();
    let same = v.iter().filter(|k| k.sites + k.plain == 0).count();
    format!(
        "kops (policy auto) rewrote kinsn sites, all with native emits unless noted: {}; {same} programs unchanged (kops = jit code)",
        if changed.is_empty() { "none".to_string() } else { changed.join(", ") }
    )
}

impl Prepared {
    fn code(&mut self, id: &ProgId, runtime: &str, bytes: Option<usize>) {
        if let Some(bytes) = bytes {
            self.code_bytes.push(CodeSize { id: id.clone(), runtime: runtime.into(), bytes });
        }
    }

    fn skip(&mut self, id: &ProgId, runtime: &str, reason: impl Into<String>) {
        self.skipped.push(Skipped { id: id.clone(), runtime: runtime.into(), reason: reason.into() });
    }

    /// Keep the native run of `program` as a case when it agreed with the oracle, else record
    /// the mismatch (`detail` says what differed).
    fn native(&mut self, id: &ProgId, oracle: &str, nr: NativeRunner, agrees: bool, detail: impl FnOnce() -> String) {
        if self.traffic {
            self.skip(id, "native", "the native build runs one packet; not timed over traffic");
            return;
        }
        if agrees {
            self.cases.push(Case { id: id.clone(), runtime: "native".into(), runner: Box::new(nr) });
        } else {
            self.mismatches.push(Mismatch { id: id.clone(), runtime: "native".into(), oracle: oracle.into(), detail: detail() });
        }
    }
}

/// Ratio pairs (numerator, denominator, identity) reported for `runtimes` (plus the
/// per-pass runtimes when present).
pub fn ratio_pairs(runtimes: &[String], per_pass: bool) -> Vec<(String, String, bool)> {
    let mut v: Vec<(String, String, bool)> = vec![(KERNEL_COPY.into(), "kernel".into(), true)];
    for (n, d) in [
        ("kops", "kernel"),
        ("kops", "jit"),
        ("jit", "kernel"),
        ("cranelift", "kernel"),
        ("cranelift", "jit"),
        ("cranelift", "kops"),
        ("native", "kernel"),
        ("rbpf", "kernel"),
        ("interp", "kernel"),
    ] {
        if runtimes.iter().any(|r| r == n) && runtimes.iter().any(|r| r == d) {
            v.push((n.into(), d.into(), false));
        }
    }
    if per_pass {
        for p in Pass::ALL {
            v.push((format!("kops:{p}"), "jit".into(), false));
        }
        v.push(("kops".into(), "jit".into(), false));
    }
    let mut out: Vec<(String, String, bool)> = Vec::new();
    for x in v {
        if !out.contains(&x) {
            out.push(x);
        }
    }
    out
}

/// The `// stresses: ...` line of the program's source (bpf/progs/<name>.bpf.c next to
/// bpf/out/), when there is one.
fn description(path: &Path) -> Option<String> {
    let stem = path.file_name()?.to_str()?.strip_suffix(".bpf.o")?;
    let src = path.parent()?.parent()?.join("progs").join(format!("{stem}.bpf.c"));
    let text = std::fs::read_to_string(src).ok()?;
    text.lines().find_map(|l| l.trim().strip_prefix("// stresses:").map(|s| s.trim().to_string()))
}

/// Offset of the `kops_result` global in `.bss`, from the ELF symbol table.
fn kops_result_offset(path: &str) -> Option<(String, usize)> {
    let bytes = std::fs::read(path).ok()?;
    let (_, syms) = kops_kernel::btf::elf_layout(&bytes).ok()?;
    syms.get("kops_result").map(|(sec, off)| (sec.clone(), *off as usize))
}

/// The rewritten and lowered program for `policy`, with its sites for the JIT.
pub struct KopsBuild {
    pub lowered: Program,
    /// The program with its sites and its lowering, for the `kops` runner's JIT.
    pub kinsn: KinsnProgram,
    pub sites: usize,
    pub native: usize,
    /// Rewrites that are plain instructions (wide loads), not kinsn sites.
    pub plain: usize,
}

pub fn build_kops(p: &Program, policy: &Policy, jit: &OurJit) -> Result<KopsBuild, String> {
    let rw = kops_recognize::run_program(p, policy).map_err(|e| format!("recognizer: {e}"))?;
    let registry = kops_einsn::registry();
    let (lowered, l) = kops_kinsn::lower_program(&rw.program, &registry).map_err(|e| format!("lowering: {e}"))?;
    let starts: Vec<usize> = rw.program.subprogs.iter().map(|s| s.start).collect();
    let (l2, plans) = kops_kinsn::plan_x86(
        &rw.program.insns,
        &starts,
        &rw.program.func_info,
        &registry,
        jit.options().features,
        &kops_jit::REGMAP,
        kops_jit::AUX_REG,
    )
    .map_err(|e| format!("planning native emits: {e}"))?;
    if l2.insns != l.insns || l2.regions != l.regions {
        return Err("plan_x86 and lower_program disagree on the lowered program".into());
    }
    let native = plans.iter().filter(|p| p.native.is_some()).count();
    let rewritten = rw.report.sites.iter().filter(|s| s.rewrite).count();
    let sites = l.regions.len();
    let kinsn = KinsnProgram { name: p.name.clone(), program: rw.program, lowering: l, registry };
    Ok(KopsBuild { sites, native, plain: rewritten.saturating_sub(sites), lowered, kinsn })
}

/// Build every case for `files` (with a progress bar when `progress`).
pub fn prepare(files: &[String], o: &SuiteOptions, progress: bool) -> Prepared {
    let bar = if progress { indicatif::ProgressBar::new(files.len() as u64) } else { indicatif::ProgressBar::hidden() };
    bar.set_style(indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} checking {msg}").unwrap());
    let p = prepare_inner(files, o, |f| {
        bar.set_message(f.to_string());
        bar.inc(1);
    });
    bar.finish_and_clear();
    p
}

fn prepare_inner(files: &[String], o: &SuiteOptions, progress: impl Fn(&str)) -> Prepared {
    let mut out = Prepared { traffic: !o.traffic.is_empty(), ..Prepared::default() };
    let want = |r: &str| o.runtimes.iter().any(|x| x == r);
    let kernel_state = if want("kernel") { Some(kops_kernel::available().map_err(|e| e.to_string())) } else { None };
    if let Some(Err(e)) = &kernel_state {
        out.skip(&ProgId::new("*", "*"), "kernel", format!("{e}; the interpreter is the oracle instead"));
    }
    let kernel_ok = matches!(kernel_state, Some(Ok(())));
    if want("native") {
        if let Some(why) = native::unavailable() {
            out.skip(&ProgId::new("*", "*"), "native", format!("not built: {why}"));
        }
    }
    let cpu = o.cpu.unwrap_or(0);
    // The gate for jit/kops: one kernel verifier for the whole run (verdicts cached).
    let verifier: Rc<dyn kops_vm::Verifier> = Rc::new(kops_kernel::KernelVerifier::new());
    let mut described = Vec::new();
    for f in files {
        progress(f);
        let obj = match Object::load(f).map_err(|e| e.to_string()).and_then(|mut obj| obj.resolve_prog_types(o.prog_type.as_deref()).map(|_| obj)) {
            Ok(obj) => obj,
            Err(e) => {
                out.skip(&ProgId::new(f, "*"), "*", format!("cannot load the object: {e}"));
                continue;
            }
        };
        let btf = if kernel_ok {
            match KernelBtf::for_object(&obj) {
                Ok(b) => b,
                Err(e) => {
                    out.notes.push(format!("{f}: BTF not loaded ({e}); programs loaded without it"));
                    None
                }
            }
        } else {
            None
        };
        let result_at = kops_result_offset(f);
        for p in &obj.programs {
            if let Some(d) = description(Path::new(f)) {
                described.push((ProgId::new(&obj.path, &p.name), d));
            }
            prepare_program(&mut out, o, &obj, p, btf.as_ref(), kernel_ok, cpu, result_at.as_ref(), &verifier);
        }
    }
    crate::label_ids(
        out.cases
            .iter_mut()
            .map(|c| &mut c.id)
            .chain(out.skipped.iter_mut().map(|c| &mut c.id))
            .chain(out.mismatches.iter_mut().map(|c| &mut c.id))
            .chain(out.code_bytes.iter_mut().map(|c| &mut c.id))
            .chain(out.compile_us.iter_mut().map(|c| &mut c.id))
            .chain(out.kops_sites.iter_mut().map(|c| &mut c.id))
            .chain(described.iter_mut().map(|d| &mut d.0)),
    );
    out.descriptions = described.into_iter().map(|(id, d)| (id.key, d)).collect();
    out
}

#[allow(clippy::too_many_arguments)]
fn prepare_program(
    out: &mut Prepared,
    o: &SuiteOptions,
    obj: &Object,
    p: &Program,
    btf: Option<&KernelBtf>,
    kernel_ok: bool,
    cpu: usize,
    result_at: Option<&(String, usize)>,
    verifier: &Rc<dyn kops_vm::Verifier>,
) {
    let name = p.name.as_str();
    let id = ProgId::new(&obj.path, name);
    let want = |r: &str| o.runtimes.iter().any(|x| x == r);
    let kind = CtxKind::for_prog_type(p.prog_type);
    let trace: Vec<kops_vm::ProgInput> = if kind.has_packet() {
        o.traffic.iter().filter_map(|p| input_for(kind, p).ok()).collect()
    } else {
        Vec::new()
    };
    let input = match input_for(kind, &o.packet) {
        Ok(i) => i,
        Err(e) => {
            out.skip(&id, "*", e);
            return;
        }
    };
    // Maps both the kernel and the runtime can read back.
    let vm_maps: Vec<String> = obj
        .maps
        .iter()
        .filter(|m| kops_vm::maps::comparable(m.map_type))
        .map(|m| m.name.clone())
        .collect();

    // The oracle.
    let mut kernel = None;
    if want("kernel") && kernel_ok {
        match KernelProg::load(obj, p, btf, &input, cpu) {
            Ok(k) => kernel = Some(k),
            Err(e) => out.skip(&id, "kernel", format!("load: {}", first_line(&e.to_string()))),
        }
    }
    let mut compare = vm_maps.clone();
    if let Some(k) = &kernel {
        let km = k.comparable_maps();
        compare.retain(|m| km.contains(m));
    }
    let (oracle_name, oracle): (&str, Outcome) = match &kernel {
        Some(k) => match k.outcome(&compare) {
            Ok(o) => ("kernel", o),
            Err(e) => {
                out.skip(&id, "*", format!("the kernel's test run failed: {e}"));
                return;
            }
        },
        None => {
            // No kernel: the interpreter (memory-checked) is the oracle, and it must run
            // the program cleanly before any native code does.
            let r = VmProg::load(obj, p, Box::new(kops_vm::interp::Interp), &input, verifier).and_then(|v| v.outcome(&compare));
            match r {
                Ok(o) => ("interp", o),
                Err(e) => {
                    out.skip(&id, "*", format!("no oracle: the kernel did not load it and the interpreter failed: {e}"));
                    return;
                }
            }
        }
    };

    let check = |out: &mut Prepared, rt: &str, got: Result<Outcome, String>| -> bool {
        match got {
            Ok(x) => {
                let d = differences(&oracle, &x);
                if d.is_empty() {
                    true
                } else {
                    out.mismatches.push(Mismatch {
                        id: id.clone(),
                        runtime: rt.into(),
                        oracle: oracle_name.into(),
                        detail: d.join("; "),
                    });
                    false
                }
            }
            Err(e) => {
                out.skip(&id, rt, format!("run failed: {e}"));
                false
            }
        }
    };

    if let Some(k) = kernel {
        out.code(&id, "kernel", k.jited_bytes());
        out.cases.push(Case { id: id.clone(), runtime: "kernel".into(), runner: Box::new(k.with_trace(trace.clone())) });
        // Identity control: the same program loaded again, with its own maps.
        match KernelProg::load(obj, p, btf, &input, cpu) {
            Ok(k2) => {
                if check(out, KERNEL_COPY, k2.outcome(&compare)) {
                    out.cases.push(Case { id: id.clone(), runtime: KERNEL_COPY.into(), runner: Box::new(k2.with_trace(trace.clone())) });
                }
            }
            Err(e) => out.skip(&id, KERNEL_COPY, format!("load: {}", first_line(&e.to_string()))),
        }
    }

    for rt in ["interp", "jit", "cranelift", "rbpf"] {
        if !want(rt) {
            continue;
        }
        let engine: Box<dyn Engine> = match rt {
            "interp" => Box::new(kops_vm::interp::Interp),
            "jit" => match OurJit::new(None) {
                Ok(j) => {
                    if let Ok(v) = VmProg::load(obj, p, Box::new(kops_vm::interp::Interp), &input, verifier) {
                        out.code(&id, "jit", j.code_bytes(name, &v.final_insns()));
                    }
                    Box::new(j)
                }
                Err(e) => {
                    out.skip(&id, rt, e);
                    continue;
                }
            },
            // Uncached, so that every program's compile time is measured; kinsn sites
            // compiled by the engine (rotates and popcounts as Cranelift operations).
            "cranelift" => Box::new(kops_cranelift::CraneliftEngine::new().uncached().with_kinsn(kops_einsn::registry())),
            _ => Box::new(RbpfEngine),
        };
        if rt == "rbpf" {
            if let Some(why) = crate::runners::rbpf_unsupported(&p.insns) {
                out.skip(&id, rt, format!("rbpf does not support {why}"));
                continue;
            }
        }
        // `cranelift` runs the recognizer's rewrite (policy auto), as `kops` does.
        let rewritten;
        let prog = if rt == "cranelift" {
            match kops_recognize::run_program(p, &Policy::default()) {
                Ok(rw) => {
                    rewritten = rw.program;
                    &rewritten
                }
                Err(e) => {
                    out.skip(&id, rt, format!("recognizer: {e}"));
                    continue;
                }
            }
        } else {
            p
        };
        match VmProg::load(obj, prog, engine, &input, verifier) {
            Ok(v) => {
                if rt == "cranelift" {
                    if let Some(s) = kops_cranelift::last_stat(name) {
                        out.code(&id, rt, Some(s.code_bytes));
                        out.compile_us.push(CompileTime { id: id.clone(), runtime: rt.into(), micros: s.micros });
                    }
                }
                if check(out, rt, v.outcome(&compare)) {
                    out.cases.push(Case { id: id.clone(), runtime: rt.into(), runner: Box::new(v.with_trace(trace.clone())) });
                }
            }
            Err(e) => out.skip(&id, rt, e),
        }
    }

    let mut policies: Vec<(String, Policy)> = Vec::new();
    if want("kops") {
        policies.push(("kops".into(), Policy { mode: Mode::Auto, passes: Pass::ALL.to_vec() }));
    }
    if o.per_pass {
        for pass in Pass::ALL {
            policies.push((format!("kops:{pass}"), Policy { mode: Mode::Auto, passes: vec![pass] }));
        }
    }
    for (rt, policy) in policies {
        let jit0 = match OurJit::new(None) {
            Ok(j) => j,
            Err(e) => {
                out.skip(&id, &rt, e);
                continue;
            }
        };
        let b = match build_kops(p, &policy, &jit0) {
            Ok(b) => b,
            Err(e) => {
                out.skip(&id, &rt, e);
                continue;
            }
        };
        if rt == "kops" {
            out.kops_sites.push(KopsSites { id: id.clone(), sites: b.sites, native: b.native, plain: b.plain });
        } else if b.sites + b.plain == 0 {
            // Nothing for this pass to change: it would time the baseline JIT again.
            continue;
        }
        // The lowered program is what the verifier must accept (DESIGN §6); the Vm's gate
        // checks it again (cached) before native code exists. Without the kernel the gate
        // refuses; the interpreter still checks the lowered program against the oracle.
        if kernel_ok {
            if let Err(e) = KernelProg::load(obj, &b.lowered, btf, &input, cpu) {
                out.skip(&id, &rt, format!("the kernel verifier rejects the lowered program: {}", first_line(&e.to_string())));
                continue;
            }
        } else {
            let r = VmProg::load(obj, &b.lowered, Box::new(kops_vm::interp::Interp), &input, verifier).and_then(|v| v.outcome(&compare));
            match r {
                Ok(x) if differences(&oracle, &x).is_empty() => {}
                Ok(x) => {
                    out.mismatches.push(Mismatch {
                        id: id.clone(),
                        runtime: format!("{rt} (lowered, on the interpreter)"),
                        oracle: oracle_name.into(),
                        detail: differences(&oracle, &x).join("; "),
                    });
                    continue;
                }
                Err(e) => {
                    out.skip(&id, &rt, format!("the interpreter fails on the lowered program: {e}"));
                    continue;
                }
            }
        }
        let jit = match OurJit::new(Some(b.kinsn)) {
            Ok(j) => j,
            Err(e) => {
                out.skip(&id, &rt, e);
                continue;
            }
        };
        if let Ok(v) = VmProg::load(obj, &b.lowered, Box::new(kops_vm::interp::Interp), &input, verifier) {
            out.code(&id, &rt, jit.code_bytes(name, &v.final_insns()));
        }
        match VmProg::load(obj, &b.lowered, Box::new(jit), &input, verifier) {
            Ok(v) => {
                if check(out, &rt, v.outcome(&compare)) {
                    out.cases.push(Case { id: id.clone(), runtime: rt.clone(), runner: Box::new(v.with_trace(trace.clone())) });
                }
            }
            Err(e) => out.skip(&id, &rt, e),
        }
    }

    if want("native") {
        if native::unavailable().is_some() {
            // said once for all programs
        } else if name == FLOOR {
            // The floor: an empty C function, checked on r0 (XDP_PASS) like the program.
            let nr = NativeRunner::new(native::floor().expect("built in"), &input.data);
            let got = nr.result();
            out.native(&id, oracle_name, nr, got as u32 == oracle.r0 as u32, || format!("r0 {:#x} vs native floor {got:#x}", oracle.r0 as u32));
        } else if let Some(f) = native::lookup(name) {
            let nr = NativeRunner::new(f, &input.data);
            match result_at {
                Some((sec, off)) => {
                    // The oracle's kops_result (an all-zero .bss was dropped as "empty").
                    let bss = oracle.maps.get(sec).and_then(|m| m.get(&0u32.to_le_bytes().to_vec()));
                    let want_v = match bss {
                        Some(v) => v.get(*off..off + 8).map(|b| u64::from_le_bytes(b.try_into().unwrap())),
                        None if oracle.maps.contains_key(sec) => Some(0),
                        None => None,
                    };
                    match want_v {
                        None => out.skip(&id, "native", format!("the oracle's `{sec}` could not be read back")),
                        Some(w) => {
                            let got = nr.result();
                            out.native(&id, oracle_name, nr, got == w, || format!("kops_result {w:#018x} vs native {got:#018x}"));
                        }
                    }
                }
                None => out.skip(&id, "native", "the object has no `kops_result` global to compare with"),
            }
        } else {
            out.skip(&id, "native", "no native counterpart in bpf/native/native.c");
        }
    }
}

fn first_line(s: &str) -> String {
    s.lines().next().unwrap_or("").to_string()
}
