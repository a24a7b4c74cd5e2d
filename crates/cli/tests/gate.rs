//! The verification gate through the `kops` binary: native runtimes refuse programs the
//! kernel verifier rejects (an error and exit status 1, never a signal), `--unverified`
//! warns, and `kops conformance` says in its first line that it runs unverified.
//! Test object: crates/kernel/tests/data/gate.bpf.c.

use std::path::Path;
use std::process::{Command, Output};

fn kops(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kops")).args(args).output().unwrap()
}

fn gate_obj() -> String {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../kernel/tests/data/gate.bpf.o").display().to_string()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Exit status 1 from an error, not a signal or a panic.
fn assert_clean_failure(o: &Output, what: &str) {
    assert_eq!(o.status.code(), Some(1), "{what}: status {:?}, stderr {}", o.status, stderr(o));
    assert!(!stderr(o).contains("panicked"), "{what}: {}", stderr(o));
}

#[test]
fn native_runtimes_refuse_a_wild_store_and_an_endless_loop() {
    let obj = gate_obj();
    for runtime in ["jit", "kops"] {
        for (prog, reason) in [("evil", "invalid mem access"), ("spin", "infinite loop")] {
            let o = kops(&["run", &obj, "--prog", prog, "--runtime", runtime]);
            let what = format!("kops run --prog {prog} --runtime {runtime}");
            assert_clean_failure(&o, &what);
            let e = stderr(&o);
            assert!(e.contains(&format!("program `{prog}`")), "{what}: {e}");
            match kops_kernel::skip_reason() {
                None => {
                    assert!(e.contains("rejected by the kernel verifier"), "{what}: {e}");
                    assert!(e.contains(reason), "{what}: {e}");
                }
                // Without bpf(2) the refusal says why and what to do.
                Some(why) => {
                    println!("SKIPPED (verdict part): {why}");
                    assert!(e.contains("cannot be verified") && e.contains("--runtime interp"), "{what}: {e}");
                }
            }
        }
    }
    // The interpreter checks every access: the same program is a clean run-time error.
    let o = kops(&["run", &obj, "--prog", "evil", "--runtime", "interp"]);
    assert_clean_failure(&o, "interp evil");
    assert!(stderr(&o).contains("invalid write of 8 bytes at 0x4141414141410000"), "{}", stderr(&o));
}

#[test]
fn verified_programs_run_and_unverified_warns() {
    kops_kernel::require_kernel!();
    let obj = gate_obj();
    for runtime in ["jit", "kops"] {
        let o = kops(&["run", &obj, "--prog", "good", "--runtime", runtime]);
        assert_eq!(o.status.code(), Some(0), "{runtime}: {}", stderr(&o));
        assert!(String::from_utf8_lossy(&o.stdout).contains("r0 = 2 (0x2) XDP_PASS"), "{runtime}");
        assert!(!stderr(&o).contains("WITHOUT verification"), "{runtime}: {}", stderr(&o));
        let o = kops(&["run", &obj, "--prog", "good", "--runtime", runtime, "--unverified"]);
        assert_eq!(o.status.code(), Some(0), "{runtime}: {}", stderr(&o));
        assert!(stderr(&o).contains("warning: program `good` runs as native code WITHOUT verification"), "{runtime}: {}", stderr(&o));
    }
    // kops diff: the native runtimes are gated there too, and agree on the good program.
    let o = kops(&["diff", &obj, "--prog", "good", "--runtimes", "kernel,interp,jit,kops", "--inputs", "20"]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert_eq!(o.status.code(), Some(0), "{out}{}", stderr(&o));
    // 20 inputs, of which the kernel test-runs those of at least 14 bytes.
    assert!(out.contains("good: 16 inputs compared, 0 mismatches"), "{out}");
    assert!(out.ends_with("1 programs, 16 inputs, 0 mismatches\n"), "{out}");
    // ... and a rejected program is "not run" there (with the reason), not a pass.
    let o = kops(&["diff", &obj, "--prog", "evil", "--runtimes", "jit,interp", "--inputs", "2"]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert_eq!(o.status.code(), Some(1), "{out}");
    assert!(out.contains("evil: not run") && out.contains("rejected by the kernel verifier"), "{out}");
    assert!(out.ends_with("1 programs, 0 inputs, 0 mismatches, 1 not run\n"), "{out}");
}

#[test]
fn conformance_on_native_runtimes_says_it_runs_unverified() {
    if kops_isa::conformance::suite_files_for_test().is_none() {
        return;
    }
    let file = kops_isa::conformance::suite_dir().join("add.data");
    for runtime in ["jit", "kops"] {
        let o = kops(&["conformance", file.to_str().unwrap(), "--runtime", runtime]);
        let out = String::from_utf8_lossy(&o.stdout);
        assert_eq!(o.status.code(), Some(0), "{out}");
        let first = out.lines().next().unwrap_or("");
        assert!(first.contains("UNVERIFIED"), "{runtime}: first line `{first}`");
        assert!(out.contains("1 passed, 0 failed"), "{out}");
    }
    let o = kops(&["conformance", file.to_str().unwrap(), "--runtime", "interp"]);
    assert!(!String::from_utf8_lossy(&o.stdout).contains("UNVERIFIED"), "the interpreter checks every access");
}
