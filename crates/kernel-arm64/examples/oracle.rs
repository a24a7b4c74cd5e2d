//! Loads every program of BPF objects into the arm64 kernel (one boot for all of them)
//! and prints, per program, the verifier's verdict, the number of arm64 instructions the
//! kernel's JIT produced and the return value of a test run on a 64-byte zero packet.
//!
//!     cargo run --release -p kops-kernel-arm64 --example oracle -- FILE.o... [--type T] [--log] [--objdump]
//!
//! `--type` gives programs whose section names no type one (as `kops run --type`); `--log`
//! prints the verifier log of rejected programs; `--objdump` disassembles each image with
//! `aarch64-linux-gnu-objdump` (binutils-aarch64-linux-gnu, installed with the cross
//! compiler).

use std::process::ExitCode;

use kops_kernel_arm64::{errno_name, object_btf, Job, Oracle, Run, Verdict};
use kops_object::Object;

fn main() -> ExitCode {
    match run() {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}

fn run() -> Result<ExitCode, String> {
    let mut files = Vec::new();
    let (mut ty, mut show_log, mut objdump) = (None, false, false);
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--type" => ty = Some(args.next().ok_or("--type needs a program type (xdp, tc, socket, ...)")?),
            "--log" => show_log = true,
            "--objdump" => objdump = true,
            "-h" | "--help" => {
                println!("usage: oracle FILE.o... [--type T] [--log] [--objdump]");
                return Ok(ExitCode::SUCCESS);
            }
            s if s.starts_with('-') => return Err(format!("unknown option `{s}` (try --help)")),
            _ => files.push(a),
        }
    }
    if files.is_empty() {
        return Err("no object given (usage: oracle FILE.o... [--type T] [--log] [--objdump])".into());
    }
    let oracle = Oracle::find().map_err(|e| e.to_string())?;

    // Every program of every object becomes a job; those that cannot (unresolved CO-RE,
    // unknown section) are reported and left out.
    let mut jobs = Vec::new();
    let mut skipped = 0;
    for f in &files {
        // An object that cannot be read, or whose programs have no type, is reported and
        // left out; the others still run.
        let mut obj = match Object::load(f) {
            Ok(o) => o,
            Err(e) => {
                println!("{f}: not loaded: {e}");
                skipped += 1;
                continue;
            }
        };
        if let Err(e) = obj.resolve_prog_types(ty.as_deref()) {
            println!("{f}: not loaded: {e}");
            skipped += obj.programs.len().max(1);
            continue;
        }
        let btf = match object_btf(&obj) {
            Ok(b) => b,
            Err(e) => {
                eprintln!("{f}: loading without BTF: {e}");
                None
            }
        };
        for p in &obj.programs {
            match Job::from_program(&obj, p) {
                Ok(mut j) => {
                    if let Some(b) = &btf {
                        j = j.with_btf(b.clone());
                    }
                    jobs.push((f.clone(), p.section.clone(), j.with_run(Run::packet(vec![0u8; 64]))));
                }
                Err(e) => {
                    println!("{f} {}: not loaded: {e}", p.name);
                    skipped += 1;
                }
            }
        }
    }
    let batch: Vec<Job> = jobs.iter().map(|(_, _, j)| j.clone()).collect();
    if batch.is_empty() {
        println!("no program to load");
        return Ok(ExitCode::FAILURE);
    }
    let report = oracle.run_resuming(&batch).map_err(|e| e.to_string())?;
    println!(
        "arm64 kernel {} ({}): boot {:.1} s, {} programs in {:.1} s",
        oracle.release,
        oracle.package,
        report.boot.as_secs_f64(),
        batch.len(),
        report.total.as_secs_f64()
    );
    let (mut accepted, mut rejected) = (0, 0);
    for ((file, section, job), o) in jobs.iter().zip(&report.outcomes) {
        let what = format!("{file} {} ({section})", job.name);
        if let Some((e, log)) = &o.btf_error {
            let last = log.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("");
            println!("{what}: BTF refused ({}): {last}; loaded without BTF", errno_name(*e));
        }
        match &o.verdict {
            Verdict::Accepted => {
                accepted += 1;
                let run = match o.runs.first() {
                    Some(Ok(r)) => format!("retval {}", r.retval),
                    Some(Err(e)) => format!("test run: {}", errno_name(*e)),
                    None => "not run".into(),
                };
                let funcs = if o.jited_func_lens.len() > 1 {
                    format!(" in {} functions", o.jited_func_lens.len())
                } else {
                    String::new()
                };
                println!(
                    "{what}: accepted, {} BPF -> {} arm64 instructions{funcs}, {run} (guest: load {} ms)",
                    o.xlated.len(),
                    o.jited.len() / 4,
                    o.load_time.as_millis()
                );
                if objdump {
                    print!("{}", disassemble(&o.jited));
                }
            }
            Verdict::Rejected { errno, message, .. } => {
                rejected += 1;
                println!(
                    "{what}: rejected ({}): {}",
                    errno_name(*errno),
                    message.lines().collect::<Vec<_>>().join("; ")
                );
                if show_log {
                    println!("{}", o.log);
                }
            }
            Verdict::NotLoaded { reason } => {
                rejected += 1;
                println!("{what}: not loaded: {reason}");
            }
            Verdict::Crashed { reason } => {
                rejected += 1;
                println!("{what}: CRASHED: {reason}");
            }
        }
    }
    println!(
        "{} programs: {accepted} accepted, {rejected} refused, {skipped} not loaded",
        accepted + rejected + skipped
    );
    Ok(if rejected + skipped == 0 { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

/// The image through `aarch64-linux-gnu-objdump`, or a line saying why not.
fn disassemble(image: &[u8]) -> String {
    let path = std::env::temp_dir().join(format!("kops-arm64-image-{}.bin", std::process::id()));
    if let Err(e) = std::fs::write(&path, image) {
        return format!("  (cannot write {}: {e})\n", path.display());
    }
    let out = std::process::Command::new("aarch64-linux-gnu-objdump")
        .args(["-D", "-b", "binary", "-m", "aarch64"])
        .arg(&path)
        .output();
    let _ = std::fs::remove_file(&path);
    match out {
        Ok(o) if o.status.success() => String::from_utf8_lossy(&o.stdout)
            .lines()
            .filter(|l| l.starts_with("  "))
            .map(|l| format!("  {l}\n"))
            .collect(),
        Ok(o) => format!("  (objdump failed: {})\n", String::from_utf8_lossy(&o.stderr).trim()),
        Err(e) => format!("  (aarch64-linux-gnu-objdump: {e})\n"),
    }
}
