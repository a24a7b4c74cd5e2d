//! The arm64 JIT through the `kops` binary: the conformance suite under emulation
//! (KOPS_CONFORMANCE_DIR; SKIPPED without it), every bundled object on `--arch arm64`
//! against the interpreter (`kops diff`), the per-instruction listing, and clear errors.

use std::path::{Path, PathBuf};
use std::process::Command;

fn run(args: &[&str]) -> (i32, String, String) {
    let o = Command::new(env!("CARGO_BIN_EXE_kops")).args(args).output().unwrap();
    (o.status.code().unwrap_or(-1), String::from_utf8_lossy(&o.stdout).into_owned(), String::from_utf8_lossy(&o.stderr).into_owned())
}

fn last_line(s: &str) -> &str {
    s.lines().last().unwrap_or("")
}

fn bundled() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../bpf/out");
    let mut v: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().ends_with(".bpf.o"))
        .collect();
    v.sort();
    assert!(!v.is_empty());
    v
}

#[test]
fn conformance_on_arm64_under_emulation() {
    if kops_isa::conformance::suite_files_for_test().is_none() {
        return;
    }
    let suite = kops_isa::conformance::suite_dir();
    let (code, so, se) = run(&["conformance", suite.to_str().unwrap(), "--runtime", "jit", "--arch", "arm64"]);
    assert_eq!(code, 0, "{so}{se}");
    assert!(so.starts_with("runtime jit (arm64, emulated): native code, UNVERIFIED"), "{so}");
    assert_eq!(last_line(&so), "313 passed, 0 failed");
}

/// Every bundled object: the arm64 JIT (emulated) agrees with the interpreter on every
/// program and generated input. Unverified, so the test runs where bpf(2) is refused too
/// (the bundled programs are verifier-clean: `kops verify` checks them elsewhere).
#[test]
fn bundled_objects_agree_with_interpreter() {
    let mut total_inputs = 0;
    for f in bundled() {
        let f = f.to_str().unwrap();
        let (code, so, se) = run(&["diff", f, "--runtimes", "interp,jit-arm64", "--unverified"]);
        let l = last_line(&so);
        assert!(l.ends_with(", 0 mismatches"), "{f}: `{l}`\n{so}{se}");
        assert_eq!(code, 0, "{f}: {so}{se}");
        let w: Vec<&str> = l.split_whitespace().collect();
        total_inputs += w[2].parse::<usize>().unwrap();
    }
    assert!(total_inputs > 0);
}

#[test]
fn run_and_disasm_on_arm64() {
    let f = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../bpf/out/parse_layers.bpf.o");
    let f = f.to_str().unwrap();
    let (_, interp, _) = run(&["run", f, "--runtime", "interp"]);
    let (code, arm, se) = run(&["run", f, "--runtime", "jit", "--arch", "arm64", "--unverified"]);
    assert_eq!(code, 0, "{arm}{se}");
    assert_eq!(arm.lines().take(2).collect::<Vec<_>>(), interp.lines().take(2).collect::<Vec<_>>());
    let (code, so, se) = run(&["disasm", "--native", "--arch", "arm64", f]);
    assert_eq!(code, 0, "{se}");
    assert!(so.contains("on the arm64 JIT"), "{so}");
    assert!(so.contains("stp x29, x30, [sp, #-0x10]!") && so.contains("ret"), "{so}");
    // Every BPF instruction line is followed by its words (or is an exit / data slot).
    assert!(so.lines().any(|l| l.trim_start().starts_with("0: ")), "{so}");
}

#[test]
fn bad_arch_or_runtime_is_a_clear_error() {
    let f = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../bpf/out/parse_layers.bpf.o");
    let f = f.to_str().unwrap();
    let (code, _, se) = run(&["run", f, "--runtime", "jit", "--arch", "mips"]);
    assert_ne!(code, 0);
    assert!(se.contains("unknown architecture `mips`"), "{se}");
    let (code, _, se) = run(&["run", f, "--runtime", "kops", "--arch", "arm64"]);
    assert_ne!(code, 0);
    assert!(se.contains("no arm64 form"), "{se}");
    assert!(!se.contains("panicked"), "{se}");
}
