//! Builds bpf/native/native.c (the benchmark kernels compiled for the host) into a static
//! library for the `native` runtime, with clang -O2 where possible.
//!
//! Compiler: `CC` if set; else `clang-19`, `clang`, then `cc` (the first found on PATH).
//! The optimisation level is always -O2, whatever the cargo profile (a debug build of the
//! harness must not time -O0 C). When no compiler works, the crate is built without the
//! native kernels and `KOPS_NATIVE_SKIP` carries the reason, shown as the runtime's skip
//! reason.

use std::path::{Path, PathBuf};

fn on_path(cmd: &str) -> bool {
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(cmd).is_file()))
        .unwrap_or(false)
}

fn main() {
    println!("cargo::rustc-check-cfg=cfg(kops_native)");
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap()).join("../../bpf");
    let src = root.join("native/native.c");
    let include = root.join("include");
    println!("cargo:rerun-if-changed={}", src.display());
    println!("cargo:rerun-if-changed={}", root.join("native/native.h").display());
    println!("cargo:rerun-if-changed={}", root.join("kernels").display());
    println!("cargo:rerun-if-changed={}", include.display());
    println!("cargo:rerun-if-env-changed=CC");
    if let Ok(rd) = std::fs::read_dir(root.join("kernels")) {
        for e in rd.flatten() {
            println!("cargo:rerun-if-changed={}", e.path().display());
        }
    }
    let skip = |why: String| {
        println!("cargo:warning=kops-bench: native runtime disabled: {why}");
        println!("cargo:rustc-env=KOPS_NATIVE_SKIP={why}");
        println!("cargo:rustc-env=KOPS_NATIVE_CC=");
    };
    if !Path::new(&src).exists() {
        skip(format!("{} not found", src.display()));
        return;
    }
    let compiler = match std::env::var("CC") {
        Ok(cc) if !cc.is_empty() => Some(cc),
        _ => ["clang-19", "clang", "cc", "gcc"].iter().find(|c| on_path(c)).map(|c| c.to_string()),
    };
    let Some(compiler) = compiler else {
        skip("no C compiler found (set CC, or install clang-19/clang/cc)".into());
        return;
    };
    let mut b = cc::Build::new();
    let floor = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap()).join("native_floor.c");
    println!("cargo:rerun-if-changed={}", floor.display());
    b.compiler(&compiler)
        .file(&src)
        .file(&floor)
        .include(&include)
        .opt_level(2)
        .debug(false)
        .warnings(false)
        .cargo_warnings(false);
    match b.try_compile("kops_native") {
        Ok(()) => {
            println!("cargo:rustc-cfg=kops_native");
            println!("cargo:rustc-env=KOPS_NATIVE_SKIP=");
            println!("cargo:rustc-env=KOPS_NATIVE_CC={compiler} -O2");
        }
        Err(e) => skip(format!("compiling {} with {compiler} failed: {e}", src.display())),
    }
}
