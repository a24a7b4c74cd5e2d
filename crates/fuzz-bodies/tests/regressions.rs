//! Every file in `fuzz/regressions/<target>/` (the inputs that found fixed bugs, plus seeds)
//! through its fuzz body under stable. A body that panics on any file fails the test,
//! which names the file; all files are run before failing.

use std::path::{Path, PathBuf};

fn dir(target: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/regressions").join(target)
}

fn run_all(target: &str, body: fn(&[u8])) {
    let d = dir(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&d)
        .unwrap_or_else(|e| panic!("{}: {e}", d.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    assert!(!files.is_empty(), "{}: no regression inputs", d.display());
    let mut failed = Vec::new();
    for f in &files {
        let data = std::fs::read(f).unwrap();
        if let Err(e) = std::panic::catch_unwind(|| body(&data)) {
            let msg = e
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "non-string panic".into());
            failed.push(format!("{}: {msg}", f.display()));
        }
    }
    assert!(failed.is_empty(), "{target}: {} of {} inputs panic:\n{}", failed.len(), files.len(), failed.join("\n"));
    eprintln!("{target}: {} inputs pass", files.len());
}

#[test]
fn decode_regressions() {
    run_all("decode", kops_fuzz_bodies::decode);
}

#[test]
fn object_regressions() {
    run_all("object", kops_fuzz_bodies::object);
}

#[test]
fn rewrite_regressions() {
    run_all("rewrite", kops_fuzz_bodies::rewrite);
}

#[test]
fn jit_vs_interp_regressions() {
    run_all("jit_vs_interp", kops_fuzz_bodies::jit_vs_interp);
}

/// The harness itself: a body that panics fails `run_all` (so the tests above can fail).
#[test]
fn a_panicking_body_fails() {
    fn boom(_: &[u8]) {
        panic!("boom");
    }
    let r = std::panic::catch_unwind(|| run_all("decode", boom));
    assert!(r.is_err());
}
