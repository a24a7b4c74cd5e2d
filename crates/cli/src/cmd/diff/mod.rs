//! `kops diff`: differential testing of runtimes against an oracle.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::rc::Rc;

use kops_kernel::{KernelBtf, KernelError, MapSet};
use kops_object::{attach_type, map_type, Object, Program};
use kops_bench::packet::gen_input;
use kops_rng::Rng;

mod report;
mod runtime;

use report::{nondeterministic_helpers, report, shrink, Observed};
use runtime::{check_runtime_name, RunOutcome, Runtime};
use kops_vm::CtxKind;

/// Differential testing of runtimes against an oracle.
///
/// Run every program of the given objects on several runtimes with the same generated
/// inputs and the same initial map contents, and compare the return value, the output
/// packet and every map's contents afterwards. The first runtime is the oracle.
///
/// Inputs: XDP/tc/socket programs get packets of 0, 1, 14, 60 and 1500 bytes, then random
/// sizes, built from real Ethernet/VLAN/IPv4/IPv6/TCP/UDP headers with random fields, some
/// cut short; other program types get random context bytes. Maps are reset to their
/// initial contents before every input.
///
/// Maps compared: arrays, hashes (all variants), LPM tries (as sets of key bytes ->
/// value), queues and stacks (by position in pop order; the kernel's are read by popping
/// and pushing back). Not compared, and listed per program: map-in-map (holds map ids; the
/// inner maps are compared), redirect targets (devmap, devmap_hash, cpumap, xskmap: empty
/// in both, so `bpf_redirect_map` returns its fallback action), bloom filters, ring
/// buffers, perf event arrays, program arrays, socket/cgroup/storage maps. A bloom filter
/// cannot be emptied in the kernel: what earlier inputs pushed stays, while the runtimes
/// start empty, and the kernel may answer "maybe" for a value never pushed; programs whose
/// bloom lookups depend on that can differ.
///
/// A mismatch prints a reproducer (program, input hex, each result), shrunk to a small
/// input that still differs. A program that some runtime cannot load, or of which the
/// oracle runs no input (a program type BPF_PROG_TEST_RUN does not support, ...), is
/// "not run", with the reason per runtime. The last line is `P programs, I inputs,
/// M mismatches`, followed by `, N not run` when N > 0.
///
/// Runtimes: `kernel` (BPF_PROG_TEST_RUN, needs root), and every engine `kops run
/// --runtime` knows (`interp`, the reference interpreter; `jit`; `kops`, the JIT with
/// kinsn dispatch; `cranelift`, the whole program through Cranelift, rotate and popcount
/// sites as Cranelift operations). Programs with kinsn sites go to kernel, interp and jit
/// lowered to their proof sequences; `kops` and `cranelift` compile them themselves. For an
/// object without sites, `kops` and `cranelift` run the recognizer's rewrite of it (policy
/// auto), so `--runtimes interp,kops` on a plain object checks the rewrite too.
///
/// Exit status: 0 every program ran with no mismatch, 1 mismatches or programs not run,
/// 2 usage, 3 the kernel refused bpf(2).
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Object files.
    #[arg(required_unless_present = "traffic")]
    files: Vec<String>,
    /// Inputs per program.
    #[arg(long, default_value_t = 100)]
    inputs: usize,
    /// Seed of the input generator.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Comma-separated runtimes; the first is the oracle.
    #[arg(long, default_value = "kernel,interp")]
    runtimes: String,
    /// Only this program (function name).
    #[arg(long)]
    prog: Option<String>,
    /// Reproducers printed in full per program (further mismatches are counted).
    #[arg(long, default_value_t = 3)]
    max_reports: usize,
    /// Count differences in programs that call nondeterministic helpers (ktime,
    /// prandom, ...) as mismatches too; by default they are listed but not counted.
    #[arg(long)]
    strict: bool,
    /// Packets from this traffic source instead of the fuzzing generator, for XDP/tc/socket
    /// programs: a pcap/pcapng file, or a named mix generated from --seed (`list` prints
    /// them). --inputs packets are used (a capture is cycled when shorter).
    #[arg(long)]
    traffic: Option<String>,
    /// Run jit/kops WITHOUT the kernel verifier (a bad program then crashes this process).
    /// Prints a warning for every program.
    #[arg(long)]
    unverified: bool,
    /// Program type for programs whose section name gives none (legacy names such as
    /// `redirect_xmit`): xdp, tc, socket, cgroup_skb, lwt_xmit, ... (an unknown name lists them all).
    #[arg(long = "type", value_name = "TYPE")]
    prog_type: Option<String>,
}

const EXIT_NO_KERNEL: u8 = 3;

pub fn run(a: Args) -> anyhow::Result<u8> {
    if a.traffic.as_deref() == Some("list") {
        print!("{}", kops_bench::traffic::list());
        return Ok(0);
    }
    if a.files.is_empty() {
        eprintln!("kops diff: no object files given");
        return Ok(2);
    }
    let traffic = match &a.traffic {
        Some(t) => match kops_bench::traffic::load(t, a.inputs, a.seed) {
            Ok(t) => {
                println!("traffic: {}", t.source);
                Some(t)
            }
            Err(e) => {
                eprintln!("kops diff: --traffic: {e}");
                return Ok(2);
            }
        },
        None => None,
    };
    let names: Vec<String> = a.runtimes.split(',').map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect();
    if names.len() < 2 {
        eprintln!("kops diff: --runtimes needs at least two runtimes (oracle first), got `{}`", a.runtimes);
        return Ok(2);
    }
    for n in &names {
        if let Err(e) = check_runtime_name(n) {
            eprintln!("kops diff: {e}");
            return Ok(2);
        }
    }
    let mut kernel_cpu = None;
    if names.iter().any(|n| n == "kernel") {
        if let Err(e) = kops_kernel::available() {
            eprintln!("kops diff: {e}");
            return Ok(EXIT_NO_KERNEL);
        }
        kernel_cpu = Some(kops_kernel::pin_to_one_cpu().map_err(|e| anyhow::anyhow!("{e}"))?);
    }
    let mut totals = Totals::default();
    let mut failed = false;
    for f in &a.files {
        match diff_object(f, &a, &names, kernel_cpu, traffic.as_ref(), &mut totals) {
            Ok(()) => {}
            Err(e @ KernelError::KernelUnavailable(_)) => {
                eprintln!("kops diff: {e}");
                return Ok(EXIT_NO_KERNEL);
            }
            Err(e) => {
                println!("{f}: error: {e}");
                failed = true;
            }
        }
    }
    failed |= totals.errors > 0;
    if totals.refused > 0 {
        println!("note: {} inputs not compared because the oracle does not run them (listed per program above)", totals.refused);
    }
    if totals.nondet > 0 {
        println!(
            "note: {} differences in programs that call nondeterministic helpers were not counted (listed above)",
            totals.nondet
        );
    }
    println!("{}", totals.last_line());
    Ok(if totals.mismatches > 0 || totals.not_run > 0 || failed { 1 } else { 0 })
}

#[derive(Default)]
struct Totals {
    programs: usize,
    inputs: usize,
    mismatches: usize,
    refused: usize,
    nondet: usize,
    errors: usize,
    /// Programs some runtime could not load or the oracle ran no input of.
    not_run: usize,
}

impl Totals {
    fn last_line(&self) -> String {
        let mut l = format!("{} programs, {} inputs, {} mismatches", self.programs, self.inputs, self.mismatches);
        if self.not_run > 0 {
            let _ = write!(l, ", {} not run", self.not_run);
        }
        l
    }
}

// ---------------------------------------------------------------------------------------
// Driver

fn diff_object(
    path: &str,
    a: &Args,
    names: &[String],
    kernel_cpu: Option<usize>,
    traffic: Option<&kops_bench::traffic::Traffic>,
    totals: &mut Totals,
) -> Result<(), KernelError> {
    let mut obj = Object::load(path).map_err(|e| KernelError::Invalid(e.to_string()))?;
    obj.resolve_prog_types(a.prog_type.as_deref()).map_err(KernelError::Invalid)?;
    let obj = if obj.needs_relocation() { kops_kernel::core::relocate(&obj)? } else { obj };
    println!("== {path}");
    let progs: Vec<&Program> = match &a.prog {
        Some(n) => obj.programs.iter().filter(|p| &p.name == n).collect(),
        None => obj.programs.iter().collect(),
    };
    let broken = super::broken_programs(&obj, a.prog.as_deref());
    if progs.is_empty() && broken.is_empty() {
        return Err(KernelError::Invalid(match &a.prog {
            Some(n) => format!("{path}: {}", obj.missing_program(n)),
            None => format!("{path}: no program to test"),
        }));
    }
    // Programs our loader could not build are not run, with the loader's reason.
    for b in &broken {
        totals.programs += 1;
        totals.not_run += 1;
        println!("{}: not run", b.name);
        println!("  loader: {}", b.error);
    }
    let uses_kernel = names.iter().any(|n| n == "kernel");
    let verifier: Rc<dyn kops_vm::Verifier> = Rc::from(super::run::verifier(a.unverified));
    let btf = if uses_kernel {
        match KernelBtf::for_object(&obj) {
            Ok(b) => b,
            Err(e) => {
                println!("  note: {e}; loading without BTF");
                None
            }
        }
    } else {
        None
    };
    // With the object's BTF the maps get their BTF key/value ids (sk_storage needs them).
    let kmaps = if uses_kernel { Some(MapSet::create_with_btf(&obj.maps, btf.as_ref())?) } else { None };
    for m in kmaps.iter().flat_map(|s| &s.maps) {
        if let Some(why) = &m.btf_refused {
            println!("  note: map `{}`: {why}", m.def.name);
        }
        if m.def.map_type == map_type::BLOOM_FILTER {
            println!(
                "  note: bloom filter `{}`: the kernel's keeps what earlier inputs pushed (it cannot be emptied) \
                 and may answer \"maybe\" for values never pushed; the runtimes start empty and answer exactly",
                m.def.name
            );
        }
    }
    // Program arrays declared with initial slots get their programs, as the vm does.
    let mut _slot_progs = Vec::new();
    if let Some(maps) = &kmaps {
        for (mi, d) in obj.maps.iter().enumerate() {
            if d.map_type != map_type::PROG_ARRAY {
                continue;
            }
            for (slot, name) in &d.init_slots {
                let target = obj.program(name).ok_or_else(|| {
                    KernelError::Invalid(format!("{path}: map `{}` slot {slot} names unknown program `{name}`", d.name))
                })?;
                let kf = crate::cmd::verify::kernel_form(target).map_err(|e| KernelError::Invalid(format!("{path}: program `{name}`: {e}")))?;
                let l = kops_kernel::load_object_program(&obj, &kf.prog, &kf.prog.insns, maps, btf.as_ref(), 0)?;
                use std::os::fd::AsRawFd;
                maps.maps[mi].update(&slot.to_ne_bytes(), &(l.fd.as_raw_fd() as u32).to_ne_bytes(), 0)?;
                _slot_progs.push(l);
            }
        }
    }
    let kobj = if names.iter().any(|n| n == "kops" || n == "cranelift") {
        let (o, note) = super::run::kops_object(&obj).map_err(|e| KernelError::Invalid(format!("{e:#}")))?;
        // The same object for kops and cranelift.
        let users: Vec<&str> = names.iter().map(String::as_str).filter(|n| *n == "kops" || *n == "cranelift").collect();
        println!("  {}", note.replacen("runtime kops", &format!("runtime {}", users.join(", ")), 1));
        Some(o)
    } else {
        None
    };
    for (pi, p) in progs.iter().enumerate() {
        totals.programs += 1;
        let kind = CtxKind::for_prog_type(p.prog_type);
        let mut rts = Vec::new();
        let mut setup_err: Vec<String> = Vec::new();
        for n in names {
            if n == "kernel" {
                let maps = kmaps.as_ref().expect("created above");
                // The same hook as `kops verify`: what the kernel is given (issue 5 lowers
                // kinsn sites here).
                let kf = match crate::cmd::verify::kernel_form(p) {
                    Ok(k) => k,
                    Err(e) => {
                        setup_err.push(format!("kernel: {e}"));
                        continue;
                    }
                };
                let mut loaded = kops_kernel::load_object_program(&obj, &kf.prog, &kf.prog.insns, maps, btf.as_ref(), 0);
                // BPF_PROG_TEST_RUN refuses XDP programs for devmap/cpumap entries (EINVAL):
                // verified with their own attach type above, they run as plain XDP.
                let at = kf.prog.expected_attach_type;
                if loaded.is_ok() && (at == attach_type::XDP_DEVMAP || at == attach_type::XDP_CPUMAP) {
                    let mut plain = kf.prog.clone();
                    plain.expected_attach_type = 0;
                    loaded = kops_kernel::load_object_program(&obj, &plain, &plain.insns, maps, btf.as_ref(), 0).map_err(|e| {
                        KernelError::Invalid(format!(
                            "the kernel does not test-run xdp programs for {} entries, and as a plain XDP program the verifier rejects it: {}",
                            if at == attach_type::XDP_DEVMAP { "devmap" } else { "cpumap" },
                            e.to_string().lines().next().unwrap_or("")
                        ))
                    });
                    if loaded.is_ok() {
                        println!(
                            "  note: `{}`: the kernel does not test-run xdp programs for {} entries; its runs are of the same instructions loaded as plain XDP",
                            p.name,
                            if at == attach_type::XDP_DEVMAP { "devmap" } else { "cpumap" }
                        );
                    }
                }
                match loaded {
                    Ok(prog) => {
                        // Whatever earlier programs of the object left in the maps goes.
                        maps.reset()?;
                        rts.push(Runtime::Kernel {
                            prog,
                            maps,
                            kind,
                            cpu: kernel_cpu.unwrap_or(0),
                            dirty: Default::default(),
                        })
                    }
                    Err(e @ KernelError::KernelUnavailable(_)) => return Err(e),
                    Err(e) => setup_err.push(format!("kernel: {}", e.to_string().lines().next().unwrap_or(""))),
                }
            } else if n == "kops" || n == "cranelift" {
                // `--runtime kops` semantics (run::kops_object): the object's own sites, or
                // the recognizer's rewrite of an object without sites (cranelift too).
                let ko = kobj.as_ref().expect("built above when kops or cranelift is a runtime");
                match ko.program(&p.name) {
                    Some(kp) => {
                        let rt = Runtime::Vm { name: n.clone(), obj: ko, prog: kp, verifier: verifier.clone() };
                        match rt.check_load() {
                            Ok(()) => rts.push(rt),
                            Err(e) => setup_err.push(format!("{n}: {e}")),
                        }
                    }
                    None => setup_err.push(format!("{n}: the rewritten object has no program `{}`", p.name)),
                }
            } else {
                let rt = Runtime::Vm { name: n.clone(), obj: &obj, prog: p, verifier: verifier.clone() };
                match rt.check_load() {
                    Ok(()) => rts.push(rt),
                    Err(e) => setup_err.push(format!("{n}: {e}")),
                }
            }
        }
        if !setup_err.is_empty() {
            println!("{}: not run", p.name);
            for e in &setup_err {
                println!("  {e}");
            }
            totals.not_run += 1;
            continue;
        }
        // Maps every runtime can read back are compared; say which are not.
        let mut compare: Vec<String> = rts[0].comparable_maps();
        for r in &rts[1..] {
            let c = r.comparable_maps();
            compare.retain(|m| c.contains(m));
        }
        let skipped_maps: Vec<&str> =
            obj.maps.iter().map(|m| m.name.as_str()).filter(|m| !compare.iter().any(|c| c == m)).collect();
        let nondet = nondeterministic_helpers(p, kernel_cpu);
        let r0_bits32 = uses_kernel;
        let mut rng = Rng::new(a.seed ^ (pi as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ hash_str(&p.name));
        let (mut compared, mut mism, mut nd, mut reported) = (0usize, 0usize, 0usize, 0usize);
        let mut undefined = 0usize;
        let mut refused: BTreeMap<String, usize> = BTreeMap::new();
        for i in 0..a.inputs {
            let input = match traffic {
                Some(t) if kind.has_packet() => kops_vm::ProgInput { data: t.packets[i % t.packets.len()].clone(), ctx: None },
                _ => gen_input(kind, i, &mut rng),
            };
            let oracle = match rts[0].run(&input, &compare)? {
                RunOutcome::Ran(o) => o,
                RunOutcome::Refused(why) | RunOutcome::Failed(why) => {
                    *refused.entry(why).or_default() += 1;
                    continue;
                }
            };
            compared += 1;
            // Computed at the first difference of this input only.
            let mut input_undefined: Option<bool> = None;
            for rt in &rts[1..] {
                let other = match rt.run(&input, &compare)? {
                    RunOutcome::Ran(x) => Ok(x),
                    RunOutcome::Refused(why) | RunOutcome::Failed(why) => Err(why),
                };
                let obs = Observed { oracle: Ok(oracle.clone()), other };
                if !obs.differs(r0_bits32) {
                    continue;
                }
                // A runtime that failed where the oracle ran is a mismatch even in a program
                // with nondeterministic helpers: randomness does not make a runtime fail.
                if !nondet.is_empty() && !a.strict && obs.other.is_ok() {
                    nd += 1;
                    continue;
                }
                // A result that reads uninitialized stack or depends on addresses differs
                // between correct runtimes; the interpreter shows it by disagreeing with
                // itself on a poisoned, moved stack.
                if !a.strict && obs.other.is_ok() {
                    let u = *input_undefined.get_or_insert_with(|| runtime::address_dependent(&obj, p, &input, &compare));
                    if u {
                        undefined += 1;
                        continue;
                    }
                }
                mism += 1;
                if reported < a.max_reports {
                    reported += 1;
                    let (small, obs) = shrink(&rts[0], rt, &input, obs, &compare, r0_bits32)?;
                    report(path, p, &rts[0], rt, &small, &obs, r0_bits32);
                }
            }
        }
        let mut line = format!("{}: {} inputs compared, {} mismatches", p.name, compared, mism);
        if !skipped_maps.is_empty() {
            let _ = write!(line, "; maps not compared: {}", skipped_maps.join(", "));
        }
        println!("{line}");
        for (why, n) in &refused {
            println!("  {n} inputs not run by the oracle ({}): {why}", rts[0].name());
        }
        if !nondet.is_empty() {
            println!(
                "  note: calls {} (nondeterministic): {nd} differing inputs not counted as mismatches",
                nondet.join(", ")
            );
        }
        if undefined > 0 {
            println!(
                "  note: {undefined} differing results read uninitialized stack or depend on memory addresses \
                 (the interpreter disagrees with itself on a poisoned, moved stack): not counted as mismatches (--strict counts them)"
            );
        }
        if compared == 0 && a.inputs > 0 {
            // Nothing was compared: that is not "0 mismatches".
            let why = if rts[0].name() == "kernel" {
                format!(
                    "BPF_PROG_TEST_RUN ran none of its inputs (section `{}`)",
                    p.section
                )
            } else {
                format!("the oracle ({}) ran none of its inputs", rts[0].name())
            };
            println!("  not run: {why}");
            totals.not_run += 1;
        }
        totals.inputs += compared;
        totals.mismatches += mism;
        totals.refused += refused.values().sum::<usize>();
        totals.nondet += nd + undefined;
    }
    Ok(())
}

fn hash_str(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ b as u64).wrapping_mul(0x100_0000_01b3))
}

/// What two runtimes did with one input.
#[cfg(test)]
mod tests {
    use super::*;
    use kops_vm::compare::{differences, MapState, Outcome};

    #[test]
    fn differences_compare_low_half_only_against_the_kernel() {
        let a = Outcome { r0: 0x1_0000_0002, data_out: None, maps: MapState::new() };
        let b = Outcome { r0: 2, data_out: None, maps: MapState::new() };
        assert!(differences(&a, &b, true).is_empty());
        assert_eq!(differences(&a, &b, false).len(), 1);
    }

    #[test]
    fn map_and_packet_differences_are_reported() {
        let mut m1 = MapState::new();
        m1.insert("m".into(), BTreeMap::from([(vec![1u8, 0, 0, 0], vec![5u8])]));
        let mut m2 = MapState::new();
        m2.insert("m".into(), BTreeMap::new());
        let a = Outcome { r0: 2, data_out: Some(vec![1, 2, 3]), maps: m1 };
        let b = Outcome { r0: 2, data_out: Some(vec![1, 9, 3]), maps: m2 };
        let d = differences(&a, &b, true);
        assert_eq!(d.len(), 2, "{d:?}");
        assert!(d[0].contains("first difference at byte 1"), "{d:?}");
        assert!(d[1].contains("map `m` key 01000000: 05 vs (absent)"), "{d:?}");
    }

    fn bundled_objects() -> Vec<String> {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../bpf/out");
        let mut v: Vec<String> = std::fs::read_dir(&dir)
            .map(|r| {
                r.filter_map(|e| e.ok())
                    .map(|e| e.path())
                    .filter(|p| p.extension().map(|x| x == "o").unwrap_or(false))
                    .map(|p| p.display().to_string())
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v
    }

    fn args(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    /// Every bundled object: all programs verified by the kernel, and no difference
    /// between the kernel and the interpreter on a few generated inputs.
    #[test]
    fn bundled_objects_verify_and_diff() {
        kops_kernel::require_kernel!();
        let objs = bundled_objects();
        assert!(!objs.is_empty(), "no bundled objects in bpf/out");
        for o in &objs {
            assert_eq!(crate::run_cli(&args(&["kops", "verify", o])), 0, "kops verify {o}");
        }
        let mut a = args(&["kops", "diff", "--inputs", "12", "--seed", "3"]);
        a.extend(objs.iter().cloned());
        assert_eq!(crate::run_cli(&a), 0, "kops diff on the bundled objects");
    }

    fn diffcheck_object() -> String {
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../kernel/tests/data/diffcheck.bpf.o")
            .display()
            .to_string()
    }

    /// Tail call through an initialised program array, per-CPU and hash maps, .data and
    /// .rodata: no difference; a program returning bpf_get_prandom_u32() & 1 differs from
    /// run to run, which is listed but not counted, and counted with --strict (so the
    /// comparison does find differences when there are some).
    #[test]
    fn diffcheck_object_agrees_and_nondeterminism_is_detected() {
        kops_kernel::require_kernel!();
        let o = diffcheck_object();
        assert_eq!(crate::run_cli(&args(&["kops", "diff", "--inputs", "30", &o])), 0);
        assert_eq!(crate::run_cli(&args(&["kops", "diff", "--inputs", "30", "--prog", "coin", "--strict", &o])), 1);
        assert_eq!(crate::run_cli(&args(&["kops", "diff", "--inputs", "3", "--runtimes", "kernel", &o])), 2);
        assert_eq!(crate::run_cli(&args(&["kops", "diff", "--runtimes", "kernel,nope", &o])), 2);
    }

    /// A program some runtime cannot load (a helper the runtimes lack) and one the kernel
    /// does not test-run (sockops) are "not run": exit 1, never a clean pass; the program
    /// that runs everywhere passes alone.
    #[test]
    fn programs_not_run_fail_the_diff() {
        kops_kernel::require_kernel!();
        let o = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../kernel/tests/data/notrun.bpf.o");
        let o = o.display().to_string();
        let rts = "kernel,interp,jit,kops";
        let diff = |prog: Option<&str>| {
            let mut a = args(&["kops", "diff", "--inputs", "8", "--runtimes", rts]);
            if let Some(p) = prog {
                a.extend(args(&["--prog", p]));
            }
            a.push(o.clone());
            crate::run_cli(&a)
        };
        assert_eq!(diff(Some("fine")), 0);
        assert_eq!(diff(Some("realm")), 1, "a helper the runtimes lack");
        assert_eq!(diff(Some("ops")), 1, "sockops: no BPF_PROG_TEST_RUN");
        assert_eq!(diff(None), 1);
    }

    /// bpf_throw with and without an exception callback, and the bpf_iter_num kfuncs, agree
    /// with the kernel on every
    /// runtime; the object's program that our loader cannot build is "not run" (exit 1)
    /// while the others still run.
    #[test]
    fn exceptions_iterators_and_a_broken_program() {
        kops_kernel::require_kernel!();
        let o = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../vm/tests/data/rt_throw.bpf.o");
        let o = o.display().to_string();
        let diff = |prog: Option<&str>| {
            // IMIX has packets over and under 100 bytes: both paths of throw_cb run.
            let mut a = args(&["kops", "diff", "--traffic", "imix", "--inputs", "40", "--runtimes", "kernel,interp,jit,kops"]);
            if let Some(p) = prog {
                a.extend(args(&["--prog", p]));
            }
            a.push(o.clone());
            crate::run_cli(&a)
        };
        assert_eq!(diff(Some("throw_cb")), 0);
        let iter = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../vm/tests/data/rt_iter.bpf.o");
        let a = args(&["kops", "diff", "--traffic", "imix", "--inputs", "40", "--runtimes", "kernel,interp,jit,kops", &iter.display().to_string()]);
        assert_eq!(crate::run_cli(&a), 0, "bpf_iter_num kfuncs");
        assert_eq!(diff(Some("throw_default")), 0);
        assert_eq!(diff(Some("bad_jump")), 1);
        assert_eq!(diff(None), 1);
    }

    /// Named traffic instead of generated inputs: the bundled XDP parser agrees with the
    /// kernel on an IMIX mix; `--traffic list` names the mixes; an unknown source is a usage
    /// error naming the mixes.
    #[test]
    fn diff_on_named_traffic() {
        kops_kernel::require_kernel!();
        let o = bundled_objects().into_iter().find(|o| o.ends_with("parse_layers.bpf.o")).expect("parse_layers");
        let rts = "kernel,interp,jit,kops";
        assert_eq!(crate::run_cli(&args(&["kops", "diff", "--traffic", "imix", "--inputs", "60", "--runtimes", rts, &o])), 0);
        assert_eq!(crate::run_cli(&args(&["kops", "diff", "--traffic", "list"])), 0);
        assert_eq!(crate::run_cli(&args(&["kops", "diff", "--traffic", "nope", &o])), 2);
        assert_eq!(crate::run_cli(&args(&["kops", "diff", "--traffic", "imix"])), 2);
    }

    #[test]
    fn last_line_counts_programs_not_run_only_when_there_are_some() {
        let mut t = Totals { programs: 3, inputs: 7, ..Totals::default() };
        assert_eq!(t.last_line(), "3 programs, 7 inputs, 0 mismatches");
        t.not_run = 2;
        assert_eq!(t.last_line(), "3 programs, 7 inputs, 0 mismatches, 2 not run");
    }

    /// The map types of real XDP programs (crates/vm/tests/data/rt_mapkinds.bpf.c): LPM trie,
    /// array and hash of maps with BTF inner templates, devmap_hash and cpumap redirects,
    /// queue, stack and bloom filter agree between the kernel and every runtime on 200
    /// inputs each. The program that needs a real socket map is a failure that names the
    /// map, not a silent pass. (Mutating the runtime's LPM key handling or the stack's pop
    /// order makes this test fail: see the commit that added it.)
    #[test]
    fn map_kinds_agree_with_the_kernel_on_every_runtime() {
        kops_kernel::require_kernel!();
        let o = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../vm/tests/data/rt_mapkinds.bpf.o")
            .display()
            .to_string();
        for p in ["lpm", "mim", "redir", "qs"] {
            let a = args(&["kops", "diff", "--runtimes", "kernel,interp,jit,kops", "--inputs", "200", "--prog", p, &o]);
            assert_eq!(crate::run_cli(&a), 0, "kops diff --prog {p} {o}");
        }
        let a = args(&["kops", "diff", "--runtimes", "kernel,interp", "--inputs", "20", "--prog", "sockuse", &o]);
        assert_eq!(crate::run_cli(&a), 1, "sockuse needs a socket map: not supported at run time");
    }

    /// libxdp's own load conventions for its dispatcher: `.rodata` holds the
    /// configuration (libxdp 1.3, `struct xdp_dispatcher_config`, 124 bytes: magic,
    /// version, num_progs_enabled, is_xdp_frags, then chain_call_actions[10],
    /// run_prios[10], program_flags[10]), set before loading; the XDP programs then
    /// replace `prog0`..`prog9` as extensions (freplace).
    fn dispatcher_conventions(bpfdir: &std::path::Path) {
        let d = bpfdir.join("xdp-dispatcher.o");
        let mut disp = Object::load(&d).unwrap();
        let ro = disp.maps.iter_mut().find(|m| m.name.ends_with(".rodata")).expect("dispatcher .rodata");
        assert_eq!(ro.value_size, 124, "struct xdp_dispatcher_config of libxdp 1.3");
        let conf = ro.initial.as_mut().unwrap();
        conf[2] = 10; // all ten slots enabled
        for i in 0..10 {
            conf[4 + 4 * i..8 + 4 * i].copy_from_slice(&(1u32 << 2).to_le_bytes()); // chain on XDP_PASS
        }
        let maps = MapSet::create(&disp.maps).unwrap();
        let btf = KernelBtf::for_object(&disp).unwrap().expect("dispatcher BTF");
        let p = disp.program("xdp_dispatcher").unwrap();
        let target = kops_kernel::load_object_program(&disp, p, &p.insns, &maps, Some(&btf), 0)
            .unwrap_or_else(|e| panic!("dispatcher with 10 enabled slots: {e}"));
        println!("xdp-dispatcher with 10 enabled slots: verified");
        for f in ["xdpfilt_alw_all.o", "xdpfilt_dny_tcp.o", "xdpdump_xdp.o", "xsk_def_xdp_prog.o"] {
            let o = Object::load(bpfdir.join(f)).unwrap();
            let m = MapSet::create(&o.maps).unwrap();
            let b = KernelBtf::for_object(&o).unwrap().expect("BTF");
            let pr = &o.programs[0];
            match kops_kernel::attach::load_as_extension(&o, pr, &pr.insns, &m, &b, &target, &btf.data, "prog0", 0) {
                Ok(_) => println!("{f}: verified as freplace of the dispatcher's prog0"),
                Err(KernelError::Rejected { errno: 1, log, message, .. }) if log.trim().is_empty() => {
                    println!("{f}: as freplace of prog0: refused before verification: {message}")
                }
                Err(e) => panic!("{f} as freplace of the dispatcher's prog0: {e}"),
            }
        }
    }

    /// Debian's libxdp1 objects, fetched with `apt-get download` (not installed). Every
    /// program is verified, except those this kernel refuses before verification (EPERM:
    /// fentry/fexit on a locked-down kernel), which are listed; then kops diff on every
    /// object whose programs load.
    #[test]
    fn libxdp1_objects_verify_and_diff() {
        kops_kernel::require_kernel!();
        let require = std::env::var("KOPS_REQUIRE_KERNEL").map(|v| v == "1").unwrap_or(false);
        let tmp = std::env::temp_dir().join(format!("kops-libxdp1-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&tmp);
        std::fs::create_dir_all(&tmp).unwrap();
        let dl = std::process::Command::new("apt-get").arg("download").arg("libxdp1").current_dir(&tmp).output();
        let ok = matches!(&dl, Ok(o) if o.status.success());
        if !ok {
            let why = match &dl {
                Ok(o) => String::from_utf8_lossy(&o.stderr).trim().to_string(),
                Err(e) => e.to_string(),
            };
            assert!(!require, "apt-get download libxdp1 failed: {why}");
            println!("SKIPPED: apt-get download libxdp1 failed: {why}");
            return;
        }
        let deb = std::fs::read_dir(&tmp)
            .unwrap()
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .find(|p| p.extension().map(|x| x == "deb").unwrap_or(false))
            .expect("a .deb was downloaded");
        let st = std::process::Command::new("dpkg-deb").arg("-x").arg(&deb).arg(tmp.join("x")).status().unwrap();
        assert!(st.success(), "dpkg-deb -x failed");
        let bpfdir = tmp.join("x/usr/lib/x86_64-linux-gnu/bpf");
        let mut objs: Vec<String> = std::fs::read_dir(&bpfdir)
            .unwrap()
            .filter_map(|e| e.ok())
            .map(|e| e.path().display().to_string())
            .filter(|p| p.ends_with(".o"))
            .collect();
        objs.sort();
        assert!(objs.len() >= 10, "libxdp1 ships its BPF objects ({} found)", objs.len());
        let (mut verified, mut refused, mut failed) = (vec![], vec![], vec![]);
        let mut loadable = vec![];
        for o in &objs {
            let obj = Object::load(o).unwrap_or_else(|e| panic!("our loader on {o}: {e}"));
            let maps = MapSet::create(&obj.maps).unwrap_or_else(|e| panic!("{o}: {e}"));
            let btf = KernelBtf::for_object(&obj).unwrap_or_else(|e| panic!("{o}: BTF: {e}"));
            let mut all = true;
            for p in &obj.programs {
                let what = format!("{}:{}", o.rsplit('/').next().unwrap(), p.name);
                match kops_kernel::load_object_program(&obj, p, &p.insns, &maps, btf.as_ref(), 0) {
                    Ok(_) => verified.push(what),
                    Err(KernelError::Rejected { errno: 1, log, message, .. }) if log.trim().is_empty() => {
                        all = false;
                        refused.push(format!("{what} ({}): {message}", p.section));
                    }
                    Err(e) => {
                        all = false;
                        failed.push(format!("{what}: {e}"));
                    }
                }
            }
            let code = crate::run_cli(&args(&["kops", "verify", o]));
            assert_eq!(code, if all { 0 } else { 1 }, "kops verify {o} exit status");
            if all {
                loadable.push(o.clone());
            }
        }
        println!("libxdp1: verified {}: {}", verified.len(), verified.join(" "));
        println!("refused by this kernel before verification {}:", refused.len());
        refused.iter().for_each(|r| println!("  {r}"));
        println!("rejected {}:", failed.len());
        failed.iter().for_each(|r| println!("  {r}"));
        assert!(failed.is_empty(), "libxdp1 programs rejected: {failed:#?}");
        // Only tracing programs may be refused outright (their attach needs a kernel that
        // allows fentry/fexit); every XDP program must verify.
        assert!(refused.iter().all(|r| r.contains("(fentry/") || r.contains("(fexit/")), "{refused:#?}");
        assert!(verified.len() >= 14, "{verified:?}");
        dispatcher_conventions(&bpfdir);
        let mut a = args(&["kops", "diff", "--inputs", "12", "--seed", "5"]);
        a.extend(loadable);
        assert_eq!(crate::run_cli(&a), 0, "kops diff on the libxdp1 objects");
        let _ = std::fs::remove_dir_all(&tmp);
    }
}


