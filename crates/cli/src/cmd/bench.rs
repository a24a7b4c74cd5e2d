//! `kops bench`: runtimes side by side against the kernel JIT (see kops-bench).

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use kops_bench::suite::{self, SuiteOptions, RUNTIMES};
use kops_bench::{report, Settings};

/// Benchmark programs on several runtimes, interleaved, in one run.
///
/// Runtimes: `kernel` (the running kernel's JIT, BPF_PROG_TEST_RUN with repeat; needs
/// root), `interp` (our interpreter), `jit` (our baseline x86-64 JIT), `kops` (recognizer
/// rewrite, policy auto, then our JIT with native emits at the kinsn sites), `cranelift`
/// (the whole program compiled by Cranelift; compile times in the JSON's `compile_us`;
/// not in the default set), `native` (the
/// same C kernel compiled for the host with -O2, bpf/native), `rbpf` (the rbpf crate's
/// x86-64 JIT, for programs without helpers or bpf-to-bpf calls).
///
/// Every program gets the same seeded Ethernet+IPv4+UDP packet on every runtime. Before
/// timing, each runtime's r0, output packet and maps are compared with the kernel's (the
/// interpreter's when bpf(2) is refused); a runtime that differs is reported as a
/// mismatch and not timed. The identity control (`kernel2/kernel`: a second copy of the
/// program loaded into the kernel) and the harness floor (`xdp_return`) are always part
/// of the report.
///
/// Timing: the kernel's own per-run average from BPF_PROG_TEST_RUN; for userspace
/// runtimes the thread's CPU time around a loop of runs on one context (neither counts
/// time spent descheduled). Defaults: 15 rounds of ~20 ms batches (--quick: 3 of 2 ms).
///
/// Without --json/--svg/--markdown, the report is written to target/kops-bench/.
/// Exit status: 0, 1 when a runtime's result differed from the oracle, 2 usage.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Object files (default: bpf/out/*.bpf.o).
    files: Vec<String>,
    /// Comma-separated runtimes (kernel, interp, jit, kops, cranelift, native, rbpf).
    #[arg(long, default_value = "kernel,interp,jit,kops,native,rbpf")]
    runtimes: String,
    /// Interleaved rounds (samples per program and runtime).
    #[arg(long)]
    samples: Option<usize>,
    /// Keep adding rounds until every ratio's 95% confidence interval (bootstrap over the
    /// interleaved rounds) is narrower than this many percent of the ratio, or --budget ends.
    #[arg(long)]
    ci_width: Option<f64>,
    /// Seconds of measuring rounds allowed when adding rounds for --ci-width.
    #[arg(long, default_value_t = 120)]
    budget: u64,
    /// Measured time one batch (one sample) should take, in milliseconds.
    #[arg(long)]
    batch_ms: Option<u64>,
    /// Few samples and short batches (for tests; the numbers are rough).
    #[arg(long)]
    quick: bool,
    /// Also measure each recognizer pass alone on the kops runtime (`kops:<pass>`).
    #[arg(long)]
    per_pass: bool,
    /// Write the JSON report here.
    #[arg(long)]
    json: Option<String>,
    /// Write the SVG chart of speedups here.
    #[arg(long)]
    svg: Option<String>,
    /// Write the markdown report (BENCHMARKS.md) here.
    #[arg(long)]
    markdown: Option<String>,
    /// Also run Debian's libxdp1 BPF objects (real-world XDP programs; fetched with
    /// `apt-get download libxdp1` into $KOPS_LIBXDP_DIR or the temp dir when missing).
    #[arg(long)]
    libxdp: bool,
    /// Packet length in bytes.
    #[arg(long, default_value_t = 1500)]
    packet_len: usize,
    /// Seed of the packet and of the round order.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Also count native instructions per run on interp/jit/kops with callgrind (a metric
    /// without timing noise; about 2 s per program and runtime).
    #[arg(long)]
    instructions: bool,
    /// Time every program over a traffic trace instead of one packet: a pcap/pcapng file, or
    /// a named mix (`list` prints them). Times are per packet, the mean over the trace;
    /// results are checked on its first packet (`kops diff --traffic` checks every one).
    #[arg(long)]
    traffic: Option<String>,
    /// Packets generated for a named --traffic mix.
    #[arg(long, default_value_t = 256)]
    traffic_packets: usize,
    /// No progress bar.
    #[arg(long)]
    no_progress: bool,
    /// Program type for programs whose section name gives none (legacy names such as
    /// `redirect_xmit`): xdp, tc, socket, cgroup_skb, lwt_xmit, ... (an unknown name lists them all).
    #[arg(long = "type", value_name = "TYPE")]
    prog_type: Option<String>,
}

/// bpf/out next to the working directory, else the one of the source tree this binary was
/// built from.
fn default_dir() -> PathBuf {
    let here = PathBuf::from("bpf/out");
    if here.is_dir() {
        return here;
    }
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../bpf/out")
}

fn default_files(dir: &Path) -> anyhow::Result<Vec<String>> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .with_context(|| format!("listing {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.to_string_lossy().ends_with(".bpf.o"))
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    v.sort();
    if v.is_empty() {
        anyhow::bail!("no .bpf.o files in {} (build them with bpf/build.sh)", dir.display());
    }
    Ok(v)
}

use kops_bench::suite::FLOOR;

/// Debian's libxdp1 objects (`*.o` under usr/lib/x86_64-linux-gnu/bpf of the package),
/// extracted into a cache dir ($KOPS_LIBXDP_DIR, else <tmp>/kops-libxdp1, the layout the
/// other crates' tests use); fetched with apt-get download + dpkg-deb -x when missing.
fn libxdp_objects() -> anyhow::Result<Vec<String>> {
    use std::process::Command;
    let base = std::env::var_os("KOPS_LIBXDP_DIR").map(PathBuf::from).unwrap_or_else(|| std::env::temp_dir().join("kops-libxdp1"));
    let objdir = base.join("x/usr/lib/x86_64-linux-gnu/bpf");
    if !objdir.is_dir() {
        std::fs::create_dir_all(&base).with_context(|| format!("creating {}", base.display()))?;
        let out = Command::new("apt-get").arg("download").arg("libxdp1").current_dir(&base).output().context("running apt-get download libxdp1")?;
        let deb = std::fs::read_dir(&base)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .find(|p| p.extension().is_some_and(|x| x == "deb"))
            .ok_or_else(|| anyhow::anyhow!("apt-get download libxdp1 gave no package: {}", String::from_utf8_lossy(&out.stderr).trim()))?;
        let ok = Command::new("dpkg-deb").arg("-x").arg(&deb).arg(base.join("x")).status().map(|s| s.success()).unwrap_or(false);
        if !ok || !objdir.is_dir() {
            anyhow::bail!("could not extract {} (dpkg-deb -x)", deb.display());
        }
    }
    let mut v: Vec<String> = std::fs::read_dir(&objdir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "o"))
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    v.sort();
    Ok(v)
}

fn stem(f: &str) -> &str {
    let name = Path::new(f).file_name().and_then(|n| n.to_str()).unwrap_or(f);
    name.strip_suffix(".bpf.o").unwrap_or(name)
}

/// "CPU model, N CPUs; Linux <release>".
pub fn machine() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name").map(|r| r.trim_start_matches([' ', '\t', ':']).trim().to_string()))
        .unwrap_or_else(|| "unknown CPU".into());
    let cpus = cpuinfo.lines().filter(|l| l.starts_with("processor")).count();
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").map(|s| s.trim().to_string()).unwrap_or_else(|_| "?".into());
    format!("{model}, {cpus} CPUs; Linux {release}")
}

/// The CPU-vulnerability mitigations that change what the kernel JIT's calls and returns
/// cost (its `ret` becomes a jump to a return thunk; our userspace JIT returns with `ret`).
pub fn mitigations() -> Option<String> {
    let dir = Path::new("/sys/devices/system/cpu/vulnerabilities");
    let parts: Vec<String> = ["spec_rstack_overflow", "retbleed", "spectre_v2"]
        .iter()
        .filter_map(|f| std::fs::read_to_string(dir.join(f)).ok().map(|v| format!("{f}: {}", v.trim())))
        .collect();
    (!parts.is_empty()).then(|| parts.join("; "))
}

/// UTC now as `YYYY-MM-DD HH:MM UTC` (civil-from-days, no time crate needed).
pub fn utc_now() -> String {
    format_utc(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0))
}

/// Seconds since the Unix epoch as `YYYY-MM-DD HH:MM UTC`.
fn format_utc(secs: u64) -> String {
    let (days, rem) = ((secs / 86400) as i64, secs % 86400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + (m <= 2) as i64;
    format!("{y:04}-{m:02}-{d:02} {:02}:{:02} UTC", rem / 3600, rem % 3600 / 60)
}

/// `command` is the command line as typed, for the report.
pub fn run(a: Args, command: String) -> anyhow::Result<u8> {
    if a.traffic.as_deref() == Some("list") {
        print!("{}", kops_bench::traffic::list());
        return Ok(0);
    }
    let runtimes: Vec<String> = a.runtimes.split(',').map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect();
    for r in &runtimes {
        if !RUNTIMES.contains(&r.as_str()) {
            eprintln!("kops bench: unknown runtime `{r}` (known: {})", RUNTIMES.join(", "));
            return Ok(2);
        }
    }
    if runtimes.is_empty() {
        eprintln!("kops bench: --runtimes is empty");
        return Ok(2);
    }
    if a.packet_len < 42 {
        eprintln!("kops bench: --packet-len {} is below the 42 bytes of Ethernet+IPv4+UDP headers", a.packet_len);
        return Ok(2);
    }
    let dir = default_dir();
    let mut files = if a.files.is_empty() { default_files(&dir)? } else { a.files.clone() };
    if a.libxdp {
        match libxdp_objects() {
            Ok(v) => files.extend(v),
            Err(e) => eprintln!("kops bench: note: libxdp1 objects not available: {e:#}"),
        }
    }
    for f in &files {
        if !Path::new(f).is_file() {
            eprintln!("kops bench: {f}: no such file");
            return Ok(2);
        }
    }
    // The harness floor is part of every report.
    if !files.iter().any(|f| stem(f) == FLOOR) {
        let floor = dir.join(format!("{FLOOR}.bpf.o"));
        if floor.is_file() {
            files.insert(0, floor.to_string_lossy().into_owned());
        } else {
            eprintln!("kops bench: note: {} not found; no harness floor in this report", floor.display());
        }
    } else if let Some(i) = files.iter().position(|f| stem(f) == FLOOR) {
        let f = files.remove(i);
        files.insert(0, f);
    }

    // BPF_PROG_TEST_RUN runs on the caller's CPU: pin, so per-CPU maps are read where the
    // program ran and every runtime shares one core's caches and frequency.
    let mut cpu = None;
    if runtimes.iter().any(|r| r == "kernel") && kops_kernel::available().is_ok() {
        cpu = kops_kernel::pin_to_one_cpu().ok();
    }
    // Default: 15 rounds of ~20 ms batches; the bundled suite (~160 cases) then needs about
    // a minute of CPU time, a few minutes when the two cores are shared.
    let (samples, batch) = if a.quick { (3, 2) } else { (15, 20) };
    let st = Settings {
        samples: a.samples.unwrap_or(samples).max(1),
        ci_width: a.ci_width.map(|p| p / 100.0),
        budget: Duration::from_secs(a.budget),
        batch_target: Duration::from_millis(a.batch_ms.unwrap_or(batch).max(1)),
        seed: a.seed,
        progress: !a.no_progress,
    };
    let traffic = match &a.traffic {
        Some(t) => match kops_bench::traffic::load(t, a.traffic_packets, a.seed) {
            Ok(t) => Some(t),
            Err(e) => {
                eprintln!("kops bench: --traffic: {e}");
                return Ok(2);
            }
        },
        None => None,
    };
    let opts = SuiteOptions {
        runtimes: runtimes.clone(),
        per_pass: a.per_pass,
        packet: match &traffic {
            Some(t) => t.packets[0].clone(),
            None => kops_bench::packet::udp_packet(a.packet_len, a.seed),
        },
        traffic: traffic.as_ref().map(|t| t.packets.clone()).unwrap_or_default(),
        cpu,
        prog_type: a.prog_type.clone(),
    };
    eprintln!("kops bench: preparing {} objects on {} (checking results against the oracle)", files.len(), runtimes.join(","));
    let prepared = suite::prepare(&files, &opts, !a.no_progress);
    eprintln!(
        "kops bench: timing {} cases: {} rounds, batches of ~{} ms",
        prepared.cases.len(),
        st.samples,
        st.batch_target.as_millis()
    );
    let pairs = suite::ratio_pairs(&runtimes, a.per_pass);
    let pair_refs: Vec<(&str, &str, bool)> = pairs.iter().map(|(n, d, i)| (n.as_str(), d.as_str(), *i)).collect();
    let mut rep = kops_bench::run(prepared.cases, &pair_refs, &st);
    rep.skipped.splice(0..0, prepared.skipped);
    rep.mismatches = prepared.mismatches;
    rep.descriptions = prepared.descriptions;
    rep.notes = prepared.notes;
    rep.code_bytes = prepared.code_bytes;
    rep.compile_us = prepared.compile_us;
    if !rep.compile_us.is_empty() {
        let mut us: Vec<f64> = rep.compile_us.iter().map(|c| c.micros).collect();
        us.sort_by(f64::total_cmp);
        let worst = rep.compile_us.iter().max_by(|a, b| a.micros.total_cmp(&b.micros)).expect("not empty");
        rep.notes.push(format!(
            "cranelift compile time per program (whole program, uncached, thread CPU time): median {:.0} µs, max {:.0} µs ({}), over {} programs",
            us[us.len() / 2],
            worst.micros,
            worst.id.key,
            us.len()
        ));
    }
    if !prepared.kops_sites.is_empty() {
        rep.notes.insert(0, suite::kops_sites_line(&prepared.kops_sites));
    }
    if let Some(c) = cpu {
        rep.notes.push(format!("pinned to CPU {c}"));
    }
    if a.instructions {
        match kops_bench::instructions::unavailable() {
            Some(why) => rep.notes.push(format!("instructions not counted: {why}")),
            None => {
                let exe = std::env::current_exe().context("the path of this kops binary")?;
                eprintln!("kops bench: counting instructions per run with callgrind");
                let pkt = opts.packet.clone();
                let failed = kops_bench::count_instructions(&mut rep, |o, p, rt| {
                    kops_bench::instructions::per_run(&exe, o, p, rt, &pkt)
                });
                for (id, rt, why) in failed {
                    rep.notes.push(format!("instructions of {} on {rt} not counted: {why}", id.key));
                }
            }
        }
    }
    if let Some(m) = mitigations() {
        rep.notes.push(format!(
            "kernel mitigations: {m}. The kernel JIT returns through the return thunk these select, \
             our userspace JITs with a plain `ret`: call-heavy programs (bpf-to-bpf calls, helpers) differ for that reason"
        ));
    }
    rep.notes.push(
        "helpers (map lookups, checksums) run our Rust implementations in userspace and the kernel's own in the kernel: \
         helper-bound programs (firewall_hash, lb_rewrite, struct_map) compare runtimes, not JITs"
            .into(),
    );
    if runtimes.iter().any(|r| r == "native") && kops_bench::native::unavailable().is_none() {
        rep.notes.push(format!("native built with {}", kops_bench::native::compiler()));
    }
    let input = match &traffic {
        Some(t) => format!("traffic {}: times are per packet, the mean over the trace; results checked on its first packet", t.source),
        None => format!("{}-byte Ethernet+IPv4+UDP packet, seed {}", a.packet_len, a.seed),
    };
    rep.notes.push(format!("input: {input}; {} rounds, batches of ~{} ms", st.samples, st.batch_target.as_millis()));
    // Harness overhead matters below 1 µs per run: say which programs are that short.
    let short: Vec<String> = rep
        .results
        .iter()
        .filter(|r| r.runtime == "kernel" && r.id.key != FLOOR && r.median_ns < 1000.0)
        .map(|r| format!("{} ({})", r.id.key, report::fmt_ns(r.median_ns)))
        .collect();
    if !short.is_empty() {
        rep.notes.push(format!("under 1 µs per run on the kernel JIT (harness floor weighs in): {}", short.join(", ")));
    }
    if rep.results.iter().any(|r| r.id.key == FLOOR) {
        rep.floor = Some(FLOOR.into());
        kops_bench::net_of_floor(&mut rep, FLOOR);
    }

    print!("{}", report::table(&rep));
    let default_out = PathBuf::from("target/kops-bench");
    let any_out = a.json.is_some() || a.svg.is_some() || a.markdown.is_some();
    let out_path = |given: &Option<String>, name: &str| -> Option<PathBuf> {
        match given {
            Some(p) => Some(PathBuf::from(p)),
            None if !any_out => Some(default_out.join(name)),
            None => None,
        }
    };
    let write = |p: &Path, text: &str| -> anyhow::Result<()> {
        if let Some(d) = p.parent() {
            if !d.as_os_str().is_empty() {
                std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
            }
        }
        std::fs::write(p, text).with_context(|| format!("writing {}", p.display()))
    };
    let mut wrote = Vec::new();
    if let Some(p) = out_path(&a.json, "bench.json") {
        write(&p, &report::json(&rep))?;
        wrote.push(format!("JSON {}", p.display()));
    }
    if let Some(p) = out_path(&a.svg, "speedup.svg") {
        let series: Vec<(&str, &str)> = [("kops", "kernel"), ("jit", "kernel"), ("cranelift", "kernel"), ("native", "kernel"), ("kops", "jit")]
            .into_iter()
            .filter(|(n, d)| runtimes.iter().any(|r| r == n) && runtimes.iter().any(|r| r == d))
            .collect();
        write(&p, &report::svg(&rep, &series))?;
        wrote.push(format!("SVG {}", p.display()));
    }
    if let Some(p) = out_path(&a.markdown, "BENCHMARKS.md") {
        write(&p, &report::markdown(&rep, &machine(), &utc_now(), &command))?;
        wrote.push(format!("markdown {}", p.display()));
    }
    println!("report: {}", wrote.join(", "));
    Ok(if rep.mismatches.is_empty() { 0 } else { 1 })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `kops bench --quick` on three bundled programs: the JSON has one sample set per
    /// program and runtime, ratios with the fields the issue names, and the identity
    /// control within reach of 1.0 (the 3% target is for the full run; a quick run on a
    /// shared machine gets a looser bound). Without bpf(2) the kernel runtime is dropped
    /// and the rest still checked (fails instead under KOPS_REQUIRE_KERNEL=1).
    #[test]
    fn quick_bench_writes_the_json_report() {
        let out = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../bpf/out");
        let files = ["murmur3_rot32", "select_clamp", "control_counter"].map(|n| out.join(format!("{n}.bpf.o")).to_string_lossy().into_owned());
        let kernel = match kops_kernel::skip_reason() {
            None => true,
            Some(why) => {
                println!("SKIPPED (kernel part): {why}");
                false
            }
        };
        let runtimes = if kernel { "kernel,jit,interp" } else { "jit,interp" };
        let dir = std::env::temp_dir().join(format!("kops-bench-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let json = dir.join("bench.json");
        let md = dir.join("BENCHMARKS.md");
        let mut args = vec!["kops".to_string(), "bench".to_string()];
        args.extend(files.iter().cloned());
        args.extend(
            ["--quick", "--no-progress", "--runtimes", runtimes, "--json", json.to_str().unwrap(), "--markdown", md.to_str().unwrap()]
                .map(String::from),
        );
        assert_eq!(crate::run_cli(&args), 0, "kops bench failed (mismatch?)");
        let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
        let results = v["results"].as_array().expect("results array");
        let mut want_rt: Vec<&str> = runtimes.split(',').collect();
        if kernel {
            want_rt.push("kernel2");
        }
        // The floor program is added to the three given.
        for prog in ["xdp_return", "murmur3_rot32", "select_clamp", "control_counter"] {
            for rt in &want_rt {
                let r = results
                    .iter()
                    .find(|r| r["program"] == prog && r["runtime"] == *rt)
                    .unwrap_or_else(|| panic!("no result for {prog} on {rt}: {v}"));
                let samples = r["samples_ns"].as_array().expect("samples_ns");
                assert_eq!(samples.len(), 3, "--quick takes 3 samples");
                let median = r["median_ns"].as_f64().unwrap();
                assert!(median > 0.0 && samples.iter().all(|s| s.as_f64().unwrap() > 0.0), "{r}");
            }
        }
        let ratios = v["ratios"].as_array().expect("ratios array");
        for r in ratios {
            for k in ["object", "program", "numerator", "denominator", "ratio", "ci_low", "ci_high", "identity"] {
                assert!(!r[k].is_null(), "ratio entry without `{k}`: {r}");
            }
        }
        // jit/interp is not a reported pair; interp/kernel and jit/kernel are, with kernel.
        if kernel {
            for prog in ["murmur3_rot32", "select_clamp", "control_counter"] {
                let id = ratios
                    .iter()
                    .find(|r| r["program"] == prog && r["identity"] == true)
                    .unwrap_or_else(|| panic!("no identity control for {prog}"));
                assert_eq!(id["numerator"], "kernel2");
                assert_eq!(id["denominator"], "kernel");
                let x = id["ratio"].as_f64().unwrap();
                // Loose on purpose: this is a structure check, and a loaded 2-core machine
                // moves the quick run's identity by 35%; BENCHMARKS.md reports the real one.
                assert!((0.33..3.0).contains(&x), "identity ratio {x} for {prog}");
                let jk = ratios.iter().find(|r| r["program"] == prog && r["numerator"] == "jit" && r["denominator"] == "kernel");
                assert!(jk.is_some(), "no jit/kernel ratio for {prog}");
            }
            assert_eq!(v["floor"], "xdp_return");
        }
        let m = std::fs::read_to_string(&md).unwrap();
        assert!(m.starts_with("# Benchmarks") && m.contains("| murmur3_rot32 |"), "{m}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn utc_dates_of_known_timestamps() {
        // `date -u -d @N` gives these.
        assert_eq!(format_utc(0), "1970-01-01 00:00 UTC");
        assert_eq!(format_utc(951_782_400), "2000-02-29 00:00 UTC");
        assert_eq!(format_utc(1_700_000_000), "2023-11-14 22:13 UTC");
    }
}
