//! `kops conformance DIR [--runtime interp]`: run the bpf_conformance suite;
//! `kops conformance-plugin`: the suite's plugin protocol.

use anyhow::{bail, Context, Result};
use kops_isa::conformance::TestFile;
use kops_isa::Insn;
use std::io::Read;
use std::path::{Path, PathBuf};

/// println! that ignores a closed stdout (`kops ... | head`) instead of panicking.
macro_rules! outln {
    ($($t:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($t)*);
    }};
}

/// Run every `.data` file of the eBPF conformance suite.
///
/// Each file's program runs with r1 = its input memory (0 when it has none), r2 = the
/// memory's length, helper 5 = "unwind"; r0 at exit must equal the file's `-- result`.
/// Prints one line per failure (file, expected and actual r0, or the error) and ends with
/// `N passed, M failed`. Exit status 1 when any test fails.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Directory with the `.data` files (e.g. ../shared/conformance/tests), or one file.
    dir: PathBuf,
    /// Runtime: interp, jit, kops (the JIT with kinsn dispatch; the suite has no sites, so
    /// this checks that the Kops engine compiles plain eBPF like the JIT), cranelift (the
    /// whole program through Cranelift), or kernel
    /// (BPF_PROG_TEST_RUN; programs the verifier refuses are listed as REJECTED and counted
    /// as skipped).
    #[arg(long, default_value = "interp")]
    runtime: String,
    /// Architecture of the native runtime: x86_64, or arm64 (`--runtime jit`: our arm64 JIT
    /// under the unicorn emulator).
    #[arg(long, default_value = "x86_64")]
    arch: String,
    /// Also print a line for every passing test.
    #[arg(long, short = 'v')]
    verbose: bool,
}

/// Outcome of one program on one runtime.
pub enum Outcome {
    /// r0 at exit.
    Ok(u64),
    /// The runtime refused or failed the program (message says why).
    Err(String),
    /// The kernel verifier refused the program (reason, instruction in the test body).
    Rejected(String),
}

/// Runs one conformance program on `runtime`. This is the dispatch point for runtimes:
/// `interp`, `jit`, `kops` (any [`kops_vm::Engine`] from `run::engine`) go through
/// [`kops_vm::run_conformance`]; `kernel` through [`kops_kernel::conformance::run`].
/// An `Err` here is an environment problem (e.g. no bpf(2)), not a test failure.
/// `arch` is the native runtimes' target (`x86_64`, or `arm64`: see `run::engine_arch`).
pub fn run_one_arch(runtime: &str, arch: &str, insns: &[Insn], mem: &[u8]) -> Result<Outcome> {
    match runtime {
        "kernel" if arch == "x86_64" => {
            use kops_kernel::conformance::{run, KernelConformance};
            match run(insns, mem) {
                Ok(KernelConformance::Ran { r0 }) => Ok(Outcome::Ok(r0)),
                Ok(KernelConformance::Rejected { reason, insn, .. }) => Ok(Outcome::Rejected(match insn {
                    Some(i) => format!("insn {i}: {reason}"),
                    None => reason,
                })),
                Err(e @ kops_kernel::KernelError::KernelUnavailable(_)) => Err(e.into()),
                Err(e) => Ok(Outcome::Err(e.to_string())),
            }
        }
        other => {
            let engine = super::run::engine_arch(other, arch)?;
            // The suite's programs are not kernel-verifiable by design (raw memory, callx):
            // native runtimes run them unverified, as `main` says in its first line.
            let verifier = Box::new(kops_vm::Unverified::quiet());
            Ok(match kops_vm::run_conformance_with(insns, mem, Some(engine), verifier) {
                Ok(r0) => Outcome::Ok(r0),
                Err(e) => Outcome::Err(e.to_string()),
            })
        }
    }
}

fn files(dir: &Path) -> Result<Vec<PathBuf>> {
    if dir.is_file() {
        return Ok(vec![dir.to_path_buf()]);
    }
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("{}: cannot read directory", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "data"))
        .collect();
    v.sort();
    if v.is_empty() {
        bail!("{}: no .data files", dir.display());
    }
    Ok(v)
}

pub fn run(args: Args) -> Result<u8> {
    // Fail early on an unknown runtime rather than once per file.
    if args.runtime != "kernel" || args.arch != "x86_64" {
        let e = super::run::engine_arch(&args.runtime, &args.arch)?;
        if e.native() {
            let arch = if args.arch == "x86_64" { String::new() } else { format!(" ({}, emulated)", args.arch) };
            println!(
                "runtime {}{arch}: native code, UNVERIFIED: the suite's programs are not kernel-verifiable by design (raw memory, callx), so they run without the verifier gate",
                args.runtime
            );
        }
    }
    let (mut passed, mut failed, mut rejected) = (0usize, 0usize, 0usize);
    for f in files(&args.dir)? {
        let name = f.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_default();
        let verdict = (|| -> Result<std::result::Result<String, String>> {
            let text = std::fs::read_to_string(&f).with_context(|| format!("{}: cannot read", f.display()))?;
            let t = match TestFile::parse(&text) {
                Ok(t) => t,
                Err(e) => return Ok(Err(format!("cannot parse: {e}"))),
            };
            let out = run_one_arch(&args.runtime, &args.arch, &t.insns, &t.mem)?;
            if let Outcome::Rejected(why) = out {
                return Ok(Err(format!("REJECTED {why}")));
            }
            Ok(match (out, t.result, &t.error) {
                (Outcome::Ok(r0), Some(exp), _) if r0 == exp => Ok(format!("r0 = {r0:#x}")),
                (Outcome::Ok(r0), Some(exp), _) => Err(format!("r0 = {r0:#x}, expected {exp:#x}")),
                (Outcome::Ok(r0), None, Some(err)) => Err(format!("r0 = {r0:#x}, expected error `{err}`")),
                (Outcome::Ok(r0), None, None) => Err(format!("r0 = {r0:#x}, file has no expected result")),
                (Outcome::Err(e), _, Some(_)) => Ok(format!("error as expected: {e}")),
                (Outcome::Err(e), _, None) => Err(e),
                (Outcome::Rejected(_), _, _) => unreachable!("handled above"),
            })
        })()?;
        match verdict {
            Ok(msg) => {
                passed += 1;
                if args.verbose {
                    outln!("PASS {name}: {msg}");
                }
            }
            Err(msg) if msg.starts_with("REJECTED ") => {
                rejected += 1;
                outln!("REJECTED {name}: {}", &msg["REJECTED ".len()..]);
            }
            Err(msg) => {
                failed += 1;
                outln!("FAIL {name}: {msg}");
            }
        }
    }
    if rejected > 0 {
        // Programs the verifier refuses are not runtime failures: counted as skipped.
        outln!("{rejected} programs rejected by the kernel verifier (REJECTED lines above)");
        outln!("{passed} passed, {failed} failed, {rejected} skipped");
    } else {
        outln!("{passed} passed, {failed} failed");
    }
    Ok(if failed == 0 { 0 } else { 1 })
}

const PLUGIN_HELP: &str = "\
usage: kops conformance-plugin [MEMORY_HEX] [OPTIONS]

Speaks the bpf_conformance plugin protocol: reads the program as hex bytes (8-byte
instruction slots, little-endian, whitespace allowed) on stdin, takes the input memory as
hex in the first argument (may be empty or absent), runs the program with r1 = memory,
r2 = its length, and prints r0 in hex on stdout. On failure it prints the error on stdout
and exits 1 (the runner compares that line with a test's expected error).

options (also accepted inside one argument, as the runner passes --plugin_options):
  --runtime NAME   interp (default), jit, kops, cranelift or kernel
  --arch ARCH      x86_64 (default) or arm64 (jit under emulation)
  --debug          print the instructions to stderr
  --elf            accepted for compatibility (the program is always raw bytes)

The upstream runner needs one executable; use a wrapper script:
  #!/bin/sh
  exec kops conformance-plugin \"$@\"
";

/// The bpf_conformance plugin protocol (see `PLUGIN_HELP`). Arguments are parsed by hand:
/// the runner passes the memory as argv[1] (hex bytes separated by spaces, possibly empty)
/// and its `--plugin_options` string as one more argument.
pub fn plugin_main(args: Vec<String>) -> Result<u8> {
    let mut memory: Option<String> = None;
    let mut runtime = "interp".to_string();
    let mut arch = "x86_64".to_string();
    let mut debug = false;
    let mut words: Vec<String> = Vec::new();
    for (i, a) in args.iter().enumerate().skip(1) {
        let looks_like_hex = a.chars().all(|c| c.is_ascii_hexdigit() || c.is_whitespace());
        if i == 1 && looks_like_hex {
            memory = Some(a.clone());
        } else {
            words.extend(a.split_whitespace().map(str::to_string));
        }
    }
    let mut it = words.into_iter();
    while let Some(w) = it.next() {
        match w.as_str() {
            "-h" | "--help" => {
                outln!("{}", PLUGIN_HELP.trim_end());
                return Ok(0);
            }
            "--runtime" => runtime = it.next().context("--runtime needs a value")?,
            "--arch" => arch = it.next().context("--arch needs a value")?,
            "--debug" => debug = true,
            "--elf" => {}
            other => {
                eprint!("kops conformance-plugin: unexpected argument `{other}`\n\n{PLUGIN_HELP}");
                return Ok(2);
            }
        }
    }
    let mut text = String::new();
    std::io::stdin().read_to_string(&mut text).context("reading the program from stdin")?;
    let fail = |msg: String| -> Result<u8> {
        outln!("{msg}");
        Ok(1)
    };
    let insns = match super::run::parse_hex(&text)
        .and_then(|b| kops_isa::slots_from_bytes(&b).map_err(anyhow::Error::from))
    {
        Ok(i) => i,
        Err(e) => return fail(format!("program on stdin: {e:#}")),
    };
    let mem = match memory.as_deref().map(super::run::parse_hex).transpose() {
        Ok(m) => m.unwrap_or_default(),
        Err(e) => return fail(format!("memory argument: {e:#}")),
    };
    if debug {
        for (i, x) in insns.iter().enumerate() {
            eprintln!("{i}: {x:?}");
        }
    }
    match run_one_arch(&runtime, &arch, &insns, &mem)? {
        Outcome::Ok(r0) => {
            outln!("{r0:x}");
            Ok(0)
        }
        Outcome::Err(e) => fail(e),
        Outcome::Rejected(e) => fail(format!("rejected by the verifier: {e}")),
    }
}
