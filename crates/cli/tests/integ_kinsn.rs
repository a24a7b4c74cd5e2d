//! End-to-end tests of kinsn sites through the `kops` binary: rewrite every bundled object,
//! verify the rewritten objects through the kernel (lowered), diff them on every runtime,
//! and look at the native code the Kops JIT makes of the sites.
//!
//! Kernel-dependent parts print `SKIPPED: reason` when bpf(2) is refused (they fail
//! instead under KOPS_REQUIRE_KERNEL=1).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn kops() -> Command {
    Command::new(env!("CARGO_BIN_EXE_kops"))
}

fn bundled_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../bpf/out")
}

fn bundled() -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(bundled_dir())
        .unwrap_or_else(|e| panic!("{}: {e}", bundled_dir().display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().ends_with(".bpf.o"))
        .collect();
    v.sort();
    assert!(!v.is_empty(), "no bundled objects in {}", bundled_dir().display());
    v
}

/// A fresh directory for this test's files.
fn temp_dir(test: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("kops-integ-{}-{test}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn text(o: &Output) -> (String, String) {
    (String::from_utf8_lossy(&o.stdout).into_owned(), String::from_utf8_lossy(&o.stderr).into_owned())
}

/// Runs `kops args...` with extra environment; (exit code, stdout, stderr).
fn run_env(args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let mut c = kops();
    c.args(args);
    for (k, v) in env {
        c.env(k, v);
    }
    let o = c.output().expect("running kops");
    let (out, err) = text(&o);
    (o.status.code().unwrap_or(-1), out, err)
}

fn run(args: &[&str]) -> (i32, String, String) {
    run_env(args, &[])
}

/// `kops rewrite IN -o OUT`; panics on failure.
/// Programs whose sites the default policy keeps (bulk copies and endian loads measured
/// no faster): rewritten with `--policy all` here so those sites stay covered.
const FORCE_ALL: &[&str] = &["struct_copy", "struct_map", "endian_parse"];

fn rewrite(input: &Path, out: &Path) {
    let stem = input.file_name().unwrap().to_string_lossy().trim_end_matches(".bpf.o").to_string();
    let mut args = vec!["rewrite", input.to_str().unwrap(), "-o", out.to_str().unwrap()];
    if FORCE_ALL.contains(&stem.as_str()) {
        args.extend(["--policy", "all"]);
    }
    let (code, so, se) = run(&args);
    assert_eq!(code, 0, "kops rewrite {}: {so}{se}", input.display());
}

/// Kinsn sites per program of an object, counted from its instructions (sidecar slots:
/// `mov64` with src_reg 3), independently of the commands under test.
fn sites_per_program(path: &Path) -> Vec<(String, usize)> {
    let obj = kops_object::Object::load(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    obj.programs
        .iter()
        .map(|p| {
            let n = p
                .insns
                .iter()
                .filter(|i| i.code == kops_isa::op::ALU64 | kops_isa::op::MOV | kops_isa::op::K && i.src == kops_isa::op::PSEUDO_KINSN_SIDECAR)
                .count();
            (p.name.clone(), n)
        })
        .collect()
}

/// Programs whose C source uses an idiom the recognizer turns into a site under the
/// default policy (rotates in the hashes and ciphers, __builtin_popcountll, big-endian
/// loads, struct copies): their rewrite must have sites.
const IDIOM_PROGRAMS: &[&str] = &[
    "siphash",
    "chacha_arx",
    "murmur3_rot32",
    "jhash_lookup3",
    "tc_xxhash64",
    "popcount_bitmap",
    "socket_popcount",
    "endian_parse",
    "struct_copy",
];

fn last_line(s: &str) -> &str {
    s.lines().last().unwrap_or("")
}

/// `P programs, I inputs, M mismatches` -> (I, M).
fn diff_totals(out: &str) -> (usize, usize) {
    let l = last_line(out);
    let w: Vec<&str> = l.split_whitespace().collect();
    assert!(w.len() == 6 && w[1] == "programs," && w[3] == "inputs," && w[5] == "mismatches", "unexpected diff summary `{l}`");
    (w[2].parse().unwrap(), w[4].parse().unwrap())
}

/// Every bundled object: `kops rewrite` it, then `kops diff` the rewritten object on the
/// userspace runtimes (interp and jit run the sites lowered, kops natively) and, with the
/// kernel, `kops verify` it (all verified, every site lowered) and `kops diff` with the
/// kernel as the oracle.
#[test]
fn bundled_objects_rewrite_verify_diff() {
    let dir = temp_dir("bundled");
    let kernel = kops_kernel::skip_reason();
    if let Some(r) = &kernel {
        println!("SKIPPED (kernel parts): {r}");
    }
    let runtimes = if kernel.is_none() { "kernel,interp,jit,kops" } else { "interp,jit,kops" };
    let mut with_sites = 0;
    let mut failures = Vec::new();
    for f in bundled() {
        let base = f.file_name().unwrap().to_string_lossy().trim_end_matches(".bpf.o").to_string();
        let out = dir.join(format!("{base}.rw.o"));
        rewrite(&f, &out);
        let sites = sites_per_program(&out);
        for (p, n) in &sites {
            if IDIOM_PROGRAMS.contains(&p.as_str()) && *n == 0 {
                failures.push(format!("{base}: program `{p}` has no kinsn site after kops rewrite"));
            }
            if *n > 0 {
                with_sites += 1;
            }
        }
        let o = out.to_str().unwrap();
        if kernel.is_none() {
            let (code, so, se) = run(&["verify", o]);
            if code != 0 {
                failures.push(format!("{base}: kops verify exit {code}: {so}{se}"));
            } else {
                let n = sites.len();
                let want = format!("{n} programs, {n} verified");
                if !last_line(&so).starts_with(&want) || !last_line(&so).ends_with(", 0 rejected") {
                    failures.push(format!("{base}: kops verify: `{}`, expected `{want}..., 0 rejected`", last_line(&so)));
                }
                for (p, k) in &sites {
                    let verified = so.lines().any(|l| l.starts_with(&format!("{p}: verified")));
                    let lowered = so.lines().any(|l| l.trim_start().starts_with(&format!("{k} kinsn site(s) lowered to proof sequences")) && l.contains("the verifier accepted"));
                    if !verified || (*k > 0 && !lowered) {
                        failures.push(format!("{base}: program `{p}` with {k} sites: kops verify said:\n{so}"));
                    }
                }
            }
        }
        let (code, so, se) = run(&["diff", "--inputs", "30", "--runtimes", runtimes, o]);
        if code != 0 {
            failures.push(format!("{base}: kops diff --runtimes {runtimes} exit {code}:\n{so}{se}"));
            continue;
        }
        let (inputs, mism) = diff_totals(&so);
        if mism != 0 || inputs < 20 {
            failures.push(format!("{base}: kops diff: {inputs} inputs compared, {mism} mismatches"));
        }
        let total: usize = sites.iter().map(|(_, n)| n).sum();
        if total > 0 && !so.contains(&format!("runtime kops: {total} kinsn site(s) as given in the object")) {
            failures.push(format!("{base}: kops diff did not run the object's own sites on `kops`:\n{so}"));
        }
    }
    for f in &failures {
        eprintln!("FAIL {f}");
    }
    assert!(failures.is_empty(), "{} failures", failures.len());
    assert!(with_sites >= IDIOM_PROGRAMS.len(), "only {with_sites} programs with sites");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Mnemonics of the native instructions listed under each `kinsn <op>` site line of a
/// `kops disasm --native` listing.
fn site_mnemonics(listing: &str, op: &str) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    let mut cur: Option<Vec<String>> = None;
    for l in listing.lines() {
        let t = l.trim_start();
        let slot_line = t.split(':').next().is_some_and(|n| !n.is_empty() && n.chars().all(|c| c.is_ascii_digit()));
        if slot_line {
            if let Some(v) = cur.take() {
                out.push(v);
            }
            if t.split_once(": ").is_some_and(|(_, rest)| rest.starts_with(&format!("kinsn {op} "))) {
                cur = Some(Vec::new());
            }
        } else if let Some(v) = cur.as_mut() {
            if l.starts_with("            ") {
                // Hex byte tokens first, then the instruction.
                if let Some(m) = t.split_whitespace().find(|w| !(w.len() == 2 && w.chars().all(|c| c.is_ascii_hexdigit()))) {
                    v.push(m.to_string());
                }
            }
        }
    }
    if let Some(v) = cur {
        out.push(v);
    }
    out
}

/// `kops disasm --native` on rewritten programs shows the single native instruction of
/// each site (rotate: rol/ror, or rorx with BMI2; popcount: popcnt; big-endian load:
/// movbe), and the proof sequence instead when the feature is masked.
#[test]
fn disasm_native_shows_site_instructions() {
    let dir = temp_dir("disasm");
    let host = kops_x86::CpuFeatures::host();
    let rw = |name: &str| {
        let out = dir.join(format!("{name}.rw.o"));
        rewrite(&bundled_dir().join(format!("{name}.bpf.o")), &out);
        out.to_str().unwrap().to_string()
    };
    let listing = |file: &str, prog: &str, env: &[(&str, &str)]| {
        let (code, so, se) = run_env(&["disasm", "--native", file, "--prog", prog], env);
        assert_eq!(code, 0, "disasm --native {file}: {so}{se}");
        so
    };

    // Rotates (siphash): each site is one rotate instruction.
    let sip = rw("siphash");
    let blocks = site_mnemonics(&listing(&sip, "siphash", &[]), "rotate64");
    assert!(!blocks.is_empty(), "no rotate64 sites listed");
    for b in &blocks {
        assert!(b.len() <= 2 && b.iter().any(|m| ["rol", "ror", "rorx"].contains(&m.as_str())), "rotate site: {b:?}");
    }
    // Without BMI2 there is no rorx: rol/ror.
    let blocks = site_mnemonics(&listing(&sip, "siphash", &[("KOPS_DISABLE_FEATURES", "bmi2")]), "rotate64");
    for b in &blocks {
        assert!(b.iter().any(|m| m == "rol" || m == "ror") && !b.iter().any(|m| m == "rorx"), "rotate site without bmi2: {b:?}");
    }

    // Popcount.
    let pc = rw("popcount_bitmap");
    let full = listing(&pc, "popcount_bitmap", &[]);
    let blocks = site_mnemonics(&full, "popcount64");
    assert!(!blocks.is_empty(), "no popcount64 sites listed");
    if host.has(kops_x86::Feature::Popcnt) {
        for b in &blocks {
            assert!(b.iter().any(|m| m == "popcnt"), "popcount site: {b:?}");
        }
    }
    let masked = listing(&pc, "popcount_bitmap", &[("KOPS_DISABLE_FEATURES", "popcnt")]);
    assert!(!masked.contains("popcnt "), "popcnt with the feature masked:\n{masked}");
    for b in site_mnemonics(&masked, "popcount64") {
        // The proof sequence (SWAR): many instructions.
        assert!(b.len() > 5, "popcount fallback: {b:?}");
    }

    // Big-endian loads.
    let en = rw("endian_parse");
    if host.has(kops_x86::Feature::Movbe) {
        let l = listing(&en, "endian_parse", &[]);
        let blocks: Vec<_> = ["endian_load16", "endian_load32", "endian_load64"].iter().flat_map(|op| site_mnemonics(&l, op)).collect();
        assert!(!blocks.is_empty(), "no endian sites");
        for b in &blocks {
            assert_eq!(b.first().map(String::as_str), Some("movbe"), "endian site: {b:?}");
        }
    }
    let l = listing(&en, "endian_parse", &[("KOPS_DISABLE_FEATURES", "movbe")]);
    assert!(!l.contains("movbe "), "movbe with the feature masked");
    let _ = std::fs::remove_dir_all(&dir);
}

/// `kops run --runtime kops`: an object without sites is rewritten by the recognizer
/// first (and says so), a rewritten one runs its own sites; both give what the
/// interpreter gives on the original. `kops diff --runtimes interp,kops` on the plain
/// object compares the rewrite with the original.
#[test]
fn run_kops_runtime() {
    let dir = temp_dir("run");
    let orig = bundled_dir().join("siphash.bpf.o");
    let rw = dir.join("siphash.rw.o");
    rewrite(&orig, &rw);
    let body = |s: &str| s.lines().filter(|l| l.starts_with("r0 = ") || l.starts_with("packet")).collect::<Vec<_>>().join("\n");
    let (c0, interp, e0) = run(&["run", orig.to_str().unwrap(), "--runtime", "interp"]);
    assert_eq!(c0, 0, "{interp}{e0}");
    let (c1, plain, e1) = run(&["run", orig.to_str().unwrap(), "--runtime", "kops"]);
    assert_eq!(c1, 0, "{plain}{e1}");
    assert!(plain.contains("no kinsn sites in the object; rewritten by the recognizer"), "{plain}");
    let (c2, given, e2) = run(&["run", rw.to_str().unwrap(), "--runtime", "kops"]);
    assert_eq!(c2, 0, "{given}{e2}");
    assert!(given.contains("kinsn site(s) as given in the object"), "{given}");
    assert!(given.contains("compiled by the Kops JIT"), "{given}");
    assert!(!body(&interp).is_empty());
    assert_eq!(body(&plain), body(&interp));
    assert_eq!(body(&given), body(&interp));
    // The interpreter runs the rewritten object lowered.
    let (c3, low, e3) = run(&["run", rw.to_str().unwrap(), "--runtime", "interp"]);
    assert_eq!(c3, 0, "{low}{e3}");
    assert!(low.contains("lowered to proof sequences"), "{low}");
    assert_eq!(body(&low), body(&interp));

    let (c, so, se) = run(&["diff", "--inputs", "20", "--runtimes", "interp,kops", orig.to_str().unwrap()]);
    assert_eq!(c, 0, "{so}{se}");
    assert!(so.contains("rewritten by the recognizer"), "{so}");
    assert_eq!(diff_totals(&so), (20, 0));
    let _ = std::fs::remove_dir_all(&dir);
}

/// A rewritten object with one site corrupted (op id 9999): every runtime refuses it at
/// load naming the instruction, and `kops verify` rejects it naming it too.
#[test]
fn malformed_site_in_an_object() {
    let dir = temp_dir("malformed");
    let orig_path = bundled_dir().join("popcount_bitmap.bpf.o");
    let orig = kops_object::Object::load(&orig_path).unwrap();
    let (mut rw, _, maps) = kops_recognize::rewrite_object(&orig, &kops_recognize::Policy::default()).unwrap();
    let p = &mut rw.programs[0];
    let call = p
        .insns
        .iter()
        .position(|i| i.code == kops_isa::op::JMP | kops_isa::op::CALL && i.src == kops_isa::op::PSEUDO_KINSN_CALL)
        .expect("the rewrite has a site");
    p.insns[call].imm = 9999;
    let bytes = kops_recognize::write_object(&std::fs::read(&orig_path).unwrap(), &orig, &rw, &maps).unwrap();
    let bad = dir.join("bad.o");
    std::fs::write(&bad, bytes).unwrap();
    let b = bad.to_str().unwrap();
    let want = format!("insn {call}: unknown kinsn op id 9999");
    for rt in ["kops", "interp", "jit"] {
        let (code, so, se) = run(&["run", b, "--runtime", rt]);
        assert_ne!(code, 0, "{rt}: {so}");
        assert!(se.contains(&want), "{rt}: expected `{want}` in:\n{so}{se}");
    }
    if let Some(r) = kops_kernel::skip_reason() {
        println!("SKIPPED (verify): {r}");
        return;
    }
    let (code, so, se) = run(&["verify", b]);
    assert_eq!(code, 1, "{so}{se}");
    assert!(so.contains(&format!("instruction {call}: unknown kinsn op id 9999")), "{so}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// The conformance suite (no sites) on the Kops engine: all 313 pass.
#[test]
fn conformance_on_kops() {
    if kops_isa::conformance::suite_files_for_test().is_none() {
        return;
    }
    let suite = kops_isa::conformance::suite_dir();
    let (code, so, se) = run(&["conformance", suite.to_str().unwrap(), "--runtime", "kops"]);
    assert_eq!(code, 0, "{so}{se}");
    assert_eq!(last_line(&so), "313 passed, 0 failed");
}

/// `kops verify` rejections on a rewritten program name original slots: one after the
/// sites (an out-of-frame stack read), one inside a proof sequence (a popcount of the frame
/// pointer: bit operations on a pointer are refused).
#[test]
fn verify_rejections_map_to_original_slots() {
    use kops_einsn::{EInsn, Popcount64};
    use kops_isa::{op, Insn};
    kops_kernel::require_kernel!();
    let dir = temp_dir("reject");
    let orig_path = bundled_dir().join("popcount_bitmap.bpf.o");
    let orig = kops_object::Object::load(&orig_path).unwrap();
    let original_bytes = std::fs::read(&orig_path).unwrap();
    let (rw, _, maps) = kops_recognize::rewrite_object(&orig, &kops_recognize::Policy::default()).unwrap();
    let sidecars: Vec<usize> = rw.programs[0]
        .insns
        .iter()
        .enumerate()
        .filter(|(_, i)| i.code == op::ALU64 | op::MOV | op::K && i.src == op::PSEUDO_KINSN_SIDECAR)
        .map(|(k, _)| k)
        .collect();
    assert!(!sidecars.is_empty());
    let first = sidecars[0];
    let write = |obj: &kops_object::Object, name: &str| {
        let b = kops_recognize::write_object(&original_bytes, &orig, obj, &maps).unwrap();
        let p = dir.join(name);
        std::fs::write(&p, b).unwrap();
        p.to_str().unwrap().to_string()
    };

    // The slot after the first site's call: r0 = *(u64 *)(r10 + 8), outside the frame.
    let mut bad = rw.clone();
    let after = first + 2;
    bad.programs[0].insns[after] = Insn::ldx(op::DW, 0, 10, 8);
    let f = write(&bad, "after.o");
    let (code, so, se) = run(&["verify", &f]);
    println!("{so}");
    assert_eq!(code, 1, "{so}{se}");
    assert!(so.contains(&format!("= original insn {after}: r0 = *(u64 *)(r10 + 0x8)")), "{so}");

    // The first site becomes popcount64(r10): rejected inside its proof sequence.
    let mut bad = rw.clone();
    let site = Popcount64::new(0, 10, 1, 2).unwrap().site().unwrap();
    bad.programs[0].insns[first] = site[0];
    bad.programs[0].insns[first + 1] = site[1];
    let f = write(&bad, "inside.o");
    let (code, so, se) = run(&["verify", &f]);
    println!("{so}");
    assert_eq!(code, 1, "{so}{se}");
    assert!(so.contains(&format!("of the proof sequence of the kinsn site at insn {first} (popcount64")), "{so}");
    let _ = std::fs::remove_dir_all(&dir);
}
