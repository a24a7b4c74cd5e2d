//! The host's x86-64 kernel next to the arm64 oracle: loads every program of the given
//! objects in both (the same maps, BTF and instructions), test-runs each on a 64-byte zero
//! packet, and prints the programs on which verdict, return value or output packet differ.
//!
//!     cargo run --release -p kops-kernel-arm64 --example crosscheck -- FILE.o... [--all]
//!
//! `--all` prints every program. Needs bpf(2) on the host (root). Differences are
//! expected where the kernels differ (the host runs a newer kernel, whose verifier accepts
//! more) and for programs whose result depends on the machine (random numbers, time).

use std::process::ExitCode;

use kops_kernel::{KernelBtf, MapSet, TestRun};
use kops_kernel_arm64::{errno_name, object_btf, Job, Oracle, Outcome, Run, Verdict};
use kops_object::Object;

fn main() -> ExitCode {
    match run() {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}

/// The host kernel's answer, in the words `arm64` uses.
fn host(obj: &Object, p: &kops_object::Program, packet: &[u8]) -> String {
    let btf = match KernelBtf::for_object(obj) {
        Ok(b) => b,
        Err(e) => return format!("BTF refused: {e}"),
    };
    let maps = match MapSet::create_with_btf(&obj.maps, btf.as_ref()) {
        Ok(m) => m,
        Err(e) => return format!("not loaded: {e}"),
    };
    match kops_kernel::load_object_program(obj, p, &p.insns, &maps, btf.as_ref(), 0) {
        Ok(l) => match l.test_run(&TestRun { data_in: Some(packet), ..TestRun::default() }) {
            Ok(t) => format!("accepted, retval {}, {}", t.retval, packet_digest(&t.data_out)),
            Err(kops_kernel::KernelError::Sys { err, .. }) => {
                format!("accepted, test run: {}", errno_name(err.raw_os_error().unwrap_or(0)))
            }
            Err(e) => format!("accepted, test run: {e}"),
        },
        Err(kops_kernel::KernelError::Rejected { errno, message, .. }) => {
            format!("rejected ({}): {}", errno_name(errno), message.lines().next().unwrap_or(""))
        }
        Err(e) => format!("not loaded: {e}"),
    }
}

/// The output packet in a few characters: length and an FNV-1a hash.
fn packet_digest(p: &[u8]) -> String {
    let h = p.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| (h ^ b as u64).wrapping_mul(0x100_0000_01b3));
    format!("packet out {} bytes #{:016x}", p.len(), h)
}

fn arm64(o: &Outcome) -> String {
    match &o.verdict {
        Verdict::Accepted => match o.runs.first() {
            Some(Ok(r)) => format!("accepted, retval {}, {}", r.retval, packet_digest(&r.data_out)),
            Some(Err(e)) => format!("accepted, test run: {}", errno_name(*e)),
            None => "accepted, not run".into(),
        },
        Verdict::Rejected { errno, message, .. } => {
            format!("rejected ({}): {}", errno_name(*errno), message.lines().next().unwrap_or(""))
        }
        Verdict::NotLoaded { reason } => format!("not loaded: {reason}"),
        Verdict::Crashed { reason } => format!("crashed: {reason}"),
    }
}

fn run() -> Result<bool, String> {
    let mut files = Vec::new();
    let mut all = false;
    for a in std::env::args().skip(1) {
        match a.as_str() {
            "--all" => all = true,
            s if s.starts_with('-') => {
                return Err(format!("unknown option `{s}` (usage: crosscheck FILE.o... [--all])"))
            }
            _ => files.push(a),
        }
    }
    if files.is_empty() {
        return Err("usage: crosscheck FILE.o... [--all]".into());
    }
    kops_kernel::available().map_err(|e| e.to_string())?;
    let oracle = Oracle::find().map_err(|e| e.to_string())?;
    let packet = [0u8; 64];
    let (mut names, mut hosts, mut jobs) = (Vec::new(), Vec::new(), Vec::new());
    for f in &files {
        let obj = match Object::load(f) {
            Ok(o) => o,
            Err(e) => {
                println!("{f}: left out: {e}");
                continue;
            }
        };
        let btf = match object_btf(&obj) {
            Ok(b) => b,
            Err(e) => {
                println!("{f}: left out: {e}");
                continue;
            }
        };
        for p in &obj.programs {
            let job = match Job::from_program(&obj, p) {
                Ok(j) => j,
                Err(e) => {
                    println!("{f} {}: left out: {e}", p.name);
                    continue;
                }
            };
            let job = match &btf {
                Some(b) => job.with_btf(b.clone()),
                None => job,
            };
            jobs.push(job.with_run(Run::packet(packet.to_vec())));
            hosts.push(host(&obj, p, &packet));
            names.push(format!("{f} {}", p.name));
        }
    }
    let out = oracle.run_resuming(&jobs).map(|r| r.outcomes).map_err(|e| e.to_string())?;
    let mut differ = 0;
    for ((name, h), o) in names.iter().zip(&hosts).zip(&out) {
        let a = arm64(o);
        // An empty verifier log is worded differently by the two layers.
        let same = a == *h
            || (a.contains("the verifier log is empty")
                && h.contains("the verifier log is empty")
                && a[..a.find(':').unwrap_or(0)] == h[..h.find(':').unwrap_or(0)]);
        if !same {
            differ += 1;
            println!("{name}: DIFFER\n  x86-64 (host): {h}\n  arm64 {}: {a}", oracle.release);
        } else if all {
            println!("{name}: {a}");
        }
    }
    println!("{} programs, {} agree, {differ} differ", jobs.len(), jobs.len() - differ);
    Ok(differ == 0)
}
