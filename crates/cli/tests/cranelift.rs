//! The `cranelift` runtime through the `kops` binary: the conformance suite, `kops diff`
//! of every bundled object against the interpreter (and the kernel), `kops run` with its
//! compile-time line.
//!
//! Kernel-dependent parts print `SKIPPED: reason` when bpf(2) is refused (native runtimes
//! then refuse to run: they need the kernel verifier), and fail under KOPS_REQUIRE_KERNEL=1.

use std::path::{Path, PathBuf};
use std::process::Command;

fn run(args: &[&str]) -> (i32, String, String) {
    let o = Command::new(env!("CARGO_BIN_EXE_kops")).args(args).output().expect("running kops");
    (o.status.code().unwrap_or(-1), String::from_utf8_lossy(&o.stdout).into_owned(), String::from_utf8_lossy(&o.stderr).into_owned())
}

fn bundled() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../bpf/out");
    let mut v: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().ends_with(".bpf.o"))
        .collect();
    v.sort();
    assert!(!v.is_empty(), "no bundled objects in {}", dir.display());
    v
}

fn last_line(s: &str) -> String {
    s.lines().last().unwrap_or("").to_string()
}

#[test]
fn conformance_suite_on_cranelift_cli() {
    if kops_isa::conformance::suite_files_for_test().is_none() {
        return;
    }
    let dir = kops_isa::conformance::suite_dir();
    let (code, out, err) = run(&["conformance", dir.to_str().unwrap(), "--runtime", "cranelift"]);
    assert_eq!(last_line(&out), "313 passed, 0 failed", "{out}{err}");
    assert_eq!(code, 0);
}

/// Every bundled object: `kops diff --runtimes kernel,interp,cranelift`, then
/// `interp,cranelift`: every program runs, 0 mismatches.
#[test]
fn bundled_objects_diff_cranelift() {
    if let Some(r) = kops_kernel::skip_reason() {
        println!("SKIPPED: {r}");
        return;
    }
    let files: Vec<String> = bundled().iter().map(|p| p.display().to_string()).collect();
    for rts in ["kernel,interp,cranelift", "interp,cranelift"] {
        let mut args = vec!["diff", "--inputs", "40", "--runtimes", rts];
        args.extend(files.iter().map(|s| s.as_str()));
        let (code, out, err) = run(&args);
        let last = last_line(&out);
        let w: Vec<&str> = last.split_whitespace().collect();
        assert!(w.len() == 6 && w[1] == "programs," && w[5] == "mismatches", "{rts}: unexpected summary `{last}`\n{err}");
        assert_eq!(w[0].parse::<usize>().unwrap(), files.len(), "{rts}: one program per bundled object: {last}");
        assert_eq!(w[4], "0", "{rts}: {out}");
        assert_eq!(code, 0, "{rts}: {out}{err}");
    }
}

/// `kops run --runtime cranelift` prints r0 as the interpreter does, and the compile time.
#[test]
fn run_prints_compile_time() {
    if let Some(r) = kops_kernel::skip_reason() {
        println!("SKIPPED: {r}");
        return;
    }
    let obj = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../bpf/out/siphash.bpf.o");
    let obj = obj.to_str().unwrap();
    let (code, out, err) = run(&["run", obj, "--runtime", "cranelift"]);
    assert_eq!(code, 0, "{out}{err}");
    let line = out.lines().find(|l| l.starts_with("cranelift: compiled in ")).unwrap_or_else(|| panic!("no compile line: {out}"));
    assert!(line.contains(" µs (thread CPU time; ") && line.contains("bytes of code"), "{line}");
    let (_, interp, _) = run(&["run", obj, "--runtime", "interp"]);
    let r0 = |s: &str| s.lines().find(|l| l.starts_with("r0 = ")).map(str::to_string);
    assert_eq!(r0(&out), r0(&interp));
    // Unknown runtimes are a usage error naming the known ones.
    let (code, _, err) = run(&["run", obj, "--runtime", "cranelifx"]);
    assert_ne!(code, 0);
    assert!(err.contains("cranelift"), "{err}");
}
