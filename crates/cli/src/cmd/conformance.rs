//! `kops conformance DIR [--runtime interp]`: run the bpf_conformance suite;
//! `kops conformance-plugin`: the suite's plugin protocol.

use anyhow::{bail, Context, Result};
use clap::Parser;
use kops_isa::conformance::TestFile;
use kops_isa::Insn;
use std::io::Read;
use std::path::{Path, PathBuf};

/// Run every `.data` file of the eBPF conformance suite.
///
/// Each file's program runs with r1 = its input memory (0 when it has none), r2 = the
/// memory's length, helper 5 = "unwind"; r0 at exit must equal the file's `-- result`.
/// Prints one line per failure (file, expected and actual r0, or the error) and ends with
/// `N passed, M failed`. Exit status 1 when any test fails.
#[derive(Parser, Debug)]
#[command(name = "kops conformance")]
struct Args {
    /// Directory with the `.data` files (e.g. ../shared/conformance/tests), or one file.
    dir: PathBuf,
    /// Execution engine: interp or jit (`kernel` plugs in at `run_one`).
    #[arg(long, default_value = "interp")]
    runtime: String,
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
}

/// Runs one conformance program on `runtime`. This is the dispatch point for runtimes:
/// `interp` (and any [`kops_vm::Engine`] from `run::engine`) go through
/// [`kops_vm::run_conformance`]; `kernel` plugs in here as a function
/// `(insns, mem) -> Result<u64, E: Display>`.
pub fn run_one(runtime: &str, insns: &[Insn], mem: &[u8]) -> Result<Outcome> {
    match runtime {
        "kernel" => bail!("runtime `kernel` is not available in this build yet"),
        other => {
            let engine = super::run::engine(other)?;
            Ok(match kops_vm::run_conformance(insns, mem, Some(engine)) {
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

pub fn main(args: Vec<String>) -> Result<u8> {
    let args = match Args::try_parse_from(&args) {
        Ok(a) => a,
        Err(e) => {
            let code = if e.use_stderr() { 2 } else { 0 };
            let _ = e.print();
            return Ok(code);
        }
    };
    // Fail early on an unknown runtime rather than once per file.
    if args.runtime != "kernel" {
        super::run::engine(&args.runtime)?;
    }
    let (mut passed, mut failed) = (0usize, 0usize);
    for f in files(&args.dir)? {
        let name = f.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_default();
        let verdict = (|| -> Result<std::result::Result<String, String>> {
            let text = std::fs::read_to_string(&f).with_context(|| format!("{}: cannot read", f.display()))?;
            let t = match TestFile::parse(&text) {
                Ok(t) => t,
                Err(e) => return Ok(Err(format!("cannot parse: {e}"))),
            };
            let out = run_one(&args.runtime, &t.insns, &t.mem)?;
            Ok(match (out, t.result, &t.error) {
                (Outcome::Ok(r0), Some(exp), _) if r0 == exp => Ok(format!("r0 = {r0:#x}")),
                (Outcome::Ok(r0), Some(exp), _) => Err(format!("r0 = {r0:#x}, expected {exp:#x}")),
                (Outcome::Ok(r0), None, Some(err)) => Err(format!("r0 = {r0:#x}, expected error `{err}`")),
                (Outcome::Ok(r0), None, None) => Err(format!("r0 = {r0:#x}, file has no expected result")),
                (Outcome::Err(e), _, Some(_)) => Ok(format!("error as expected: {e}")),
                (Outcome::Err(e), _, None) => Err(e),
            })
        })()?;
        match verdict {
            Ok(msg) => {
                passed += 1;
                if args.verbose {
                    println!("PASS {name}: {msg}");
                }
            }
            Err(msg) => {
                failed += 1;
                println!("FAIL {name}: {msg}");
            }
        }
    }
    println!("{passed} passed, {failed} failed");
    Ok(if failed == 0 { 0 } else { 1 })
}

/// Plugin protocol options (the upstream runner passes the memory as the first positional
/// argument and may pass `--elf`/`--debug` flags we do not need).
#[derive(Parser, Debug)]
#[command(name = "kops conformance-plugin")]
struct PluginArgs {
    /// Input memory as hex bytes (may be absent or empty).
    memory: Option<String>,
    /// Execution engine.
    #[arg(long, default_value = "interp")]
    runtime: String,
    /// Accepted for compatibility; the program always comes as hex on stdin.
    #[arg(long)]
    elf: bool,
    /// Print the program's instructions to stderr before running it.
    #[arg(long)]
    debug: bool,
}

/// The bpf_conformance plugin protocol: the program as hex bytes (instruction slots,
/// little-endian) on stdin, the memory as hex in the first argument; prints r0 in hex on
/// stdout. Exit status 1 (message on stderr) when the program cannot run.
pub fn plugin_main(args: Vec<String>) -> Result<u8> {
    let args = match PluginArgs::try_parse_from(&args) {
        Ok(a) => a,
        Err(e) => {
            let code = if e.use_stderr() { 2 } else { 0 };
            let _ = e.print();
            return Ok(code);
        }
    };
    let mut text = String::new();
    std::io::stdin().read_to_string(&mut text).context("reading the program from stdin")?;
    let bytes = super::run::parse_hex(&text).context("program on stdin")?;
    let insns = kops_isa::slots_from_bytes(&bytes).context("program on stdin")?;
    let mem = match &args.memory {
        Some(m) => super::run::parse_hex(m).context("memory argument")?,
        None => Vec::new(),
    };
    if args.debug {
        for (i, x) in insns.iter().enumerate() {
            eprintln!("{i}: {x:?}");
        }
    }
    match run_one(&args.runtime, &insns, &mem)? {
        Outcome::Ok(r0) => {
            println!("{r0:x}");
            Ok(0)
        }
        Outcome::Err(e) => {
            eprintln!("{e}");
            Ok(1)
        }
    }
}
