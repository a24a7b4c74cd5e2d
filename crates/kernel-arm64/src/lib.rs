//! A real arm64 Linux kernel as an oracle: Debian's arm64 kernel booted under
//! `qemu-system-aarch64 -M virt -cpu max,pauth-impdef=on` (TCG) with an initramfs whose `/init` is a small
//! static loader (`scripts/arm64-oracle/loader.c`). One boot serves a whole batch of
//! [`Job`]s: for each, the loader creates its maps, loads the program with bpf(2), and
//! reports the verifier's verdict and log, the xlated program, the arm64 image of the
//! kernel's JIT (`BPF_OBJ_GET_INFO_BY_FD`) and every `BPF_PROG_TEST_RUN` result on the
//! serial console, then powers the machine off.
//!
//! `scripts/arm64-kernel.sh` prepares the cache this crate reads ([`Oracle::find`]):
//! `$KOPS_ARM64_CACHE` (default `target/arm64-oracle` of the workspace) with `Image`,
//! `VERSION`, `PACKAGE` and `loader`. `qemu-system-aarch64` comes from `$KOPS_QEMU` or
//! `PATH`.
//!
//! The guest has one CPU (`-smp 1`): per-CPU map values hold one slot. `-cpu max` gives
//! the JIT every feature QEMU models (LSE atomics, pointer authentication, BTI), which
//! decides some of the kernel's code choices ([`Oracle::cpu`]).
//!
//! ```no_run
//! use kops_kernel_arm64::{Job, Oracle, Run};
//! use kops_isa::Insn;
//! let oracle = Oracle::find().expect("run scripts/arm64-kernel.sh");
//! let job = Job::new("ret42", 6, vec![Insn::mov64_imm(0, 42), Insn::exit()]).with_run(Run::packet(vec![0; 64]));
//! let out = oracle.run(&[job]).unwrap();
//! assert_eq!(out[0].runs[0].as_ref().unwrap().retval, 42);
//! ```

mod btf;
mod cpio;
mod job;
mod outcome;

pub use btf::object_btf;
pub use job::{encode, Job, JobMap, Run, MAX_INSNS, MAX_MAPS, MAX_SLOTS, MAX_SYMBOLS};
pub use outcome::{errno_name, Outcome, RunResult, Verdict};

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Why the oracle cannot run on this machine (one line: what is missing and what to do).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the arm64 kernel oracle is unavailable: {0}")]
pub struct Unavailable(pub String);

/// Errors of a batch run. Those about the guest carry the tail of its console.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A job cannot be given to the loader (named, with the reason).
    #[error("{0}")]
    Job(String),
    #[error("{what}: {err}")]
    Io { what: String, err: std::io::Error },
    /// qemu could not be started.
    #[error("cannot start {qemu}: {err}")]
    Spawn { qemu: String, err: std::io::Error },
    /// The guest did not finish in time ([`Oracle::timeout`]), or wrote nothing for
    /// [`Oracle::stall`]: `why` says which. `done` holds the outcomes of the jobs finished
    /// before (the first ones of the batch); `started` whether the loader ran at all.
    #[error("the arm64 guest {why} ({stage}); console tail:\n{tail}")]
    Timeout { why: String, stage: String, tail: String, started: bool, done: Vec<Outcome> },
    /// The loader stopped with a message.
    #[error("the loader in the arm64 guest failed: {message}; console tail:\n{tail}")]
    Loader { message: String, tail: String },
    /// qemu exited before the loader finished the batch (kernel panic, qemu error, ...);
    /// `done` and `started` as for [`Error::Timeout`].
    #[error("the arm64 guest stopped early ({stage}, qemu {status}); console tail:\n{tail}")]
    Incomplete { stage: String, status: String, tail: String, started: bool, done: Vec<Outcome> },
    /// A console line of the loader could not be read.
    #[error("unreadable loader output: {msg}; console tail:\n{tail}")]
    Parse { msg: String, tail: String },
}

/// A batch's outcomes with what the run cost.
#[derive(Debug, Clone)]
pub struct Report {
    pub outcomes: Vec<Outcome>,
    /// From starting qemu to the loader's first line (the kernel's boot).
    pub boot: Duration,
    /// From starting qemu to its exit.
    pub total: Duration,
    /// Addresses of the kernel symbols asked for ([`Oracle::symbols`]) that the guest's
    /// /proc/kallsyms has.
    pub symbols: BTreeMap<String, u64>,
    /// Everything the console showed.
    pub console: String,
    /// The outcomes come from [`Oracle::results`], not from a boot (`boot` and `total`
    /// are then zero).
    pub cached: bool,
}

/// The arm64 kernel, the loader and qemu, found on this machine.
#[derive(Debug, Clone)]
pub struct Oracle {
    pub qemu: PathBuf,
    pub image: PathBuf,
    pub loader: PathBuf,
    /// The kernel release (`uname -r` in the guest), e.g. `6.12.118+deb12-arm64`.
    pub release: String,
    /// The Debian package and version the kernel came from.
    pub package: String,
    /// Time limit of one batch; `None`: 120 s plus 2 s per job (`KOPS_ARM64_TIMEOUT` in
    /// seconds overrides). Under emulation the verifier takes 0.01-10 s per program (the
    /// corpus of scripts/corpus.sh: 0.9 s on average).
    pub timeout: Option<Duration>,
    /// The guest is given up when, once the loader started, the console stays silent this
    /// long (the loader prints as it goes; one verification can take minutes under
    /// emulation): 600 s by default (`KOPS_ARM64_STALL` in seconds).
    pub stall: Duration,
    /// Guest memory, in MiB.
    pub memory_mib: u32,
    /// qemu's `-cpu`: `max,pauth-impdef=on` by default. `max` gives the JIT every feature
    /// QEMU models (LSE atomics, pointer authentication, BTI); `pauth-impdef=on` replaces
    /// the architected QARMA5 signing algorithm by a cheap one, which the kernel cannot
    /// tell apart (it signs return addresses on every call: the boot takes 3-4 s instead
    /// of 8-14 s).
    pub cpu: String,
    /// Kernel symbols whose addresses each batch reports ([`Report::symbols`]). By
    /// default `__bpf_call_base`: the xlated image gives helper calls as offsets from it,
    /// the jited image as absolute addresses.
    pub symbols: Vec<String>,
    /// A directory of earlier results (`$KOPS_ARM64_RESULTS` by default, else none): a
    /// batch identical to one run before (same jobs, symbols, loader, kernel package, CPU
    /// and memory) is answered from it without booting. Programs whose result depends on
    /// the machine (random numbers, time) then repeat their first answer.
    pub results: Option<PathBuf>,
}

/// The cache `scripts/arm64-kernel.sh` fills: `$KOPS_ARM64_CACHE`, else
/// `target/arm64-oracle` in the workspace this crate was built from.
pub fn cache_dir() -> PathBuf {
    match std::env::var_os("KOPS_ARM64_CACHE") {
        Some(d) if !d.is_empty() => PathBuf::from(d),
        _ => Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/arm64-oracle"),
    }
}

fn find_in_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|d| d.join(name)).find(|p| p.is_file())
}

impl Oracle {
    /// Finds the oracle in [`cache_dir`] and qemu on `PATH` (or `$KOPS_QEMU`).
    pub fn find() -> Result<Oracle, Unavailable> {
        Oracle::at(&cache_dir())
    }

    /// Finds the oracle in `cache` (a directory `scripts/arm64-kernel.sh` filled).
    pub fn at(cache: &Path) -> Result<Oracle, Unavailable> {
        let fix = "run scripts/arm64-kernel.sh";
        let qemu = match std::env::var_os("KOPS_QEMU") {
            Some(q) if !q.is_empty() => PathBuf::from(q),
            _ => find_in_path("qemu-system-aarch64").ok_or_else(|| {
                Unavailable(format!("qemu-system-aarch64 is not on PATH (Debian package qemu-system-arm; {fix})"))
            })?,
        };
        if !qemu.is_file() {
            return Err(Unavailable(format!("{} does not exist", qemu.display())));
        }
        let need = |f: &str, what: &str| -> Result<PathBuf, Unavailable> {
            let p = cache.join(f);
            if p.is_file() {
                Ok(p)
            } else {
                Err(Unavailable(format!("no {what} at {} ({fix}, or set KOPS_ARM64_CACHE)", p.display())))
            }
        };
        let image = need("Image", "arm64 kernel image")?;
        let loader = need("loader", "loader binary")?;
        let read = |f: &str| -> Result<String, Unavailable> {
            std::fs::read_to_string(need(f, "kernel description")?)
                .map(|s| s.trim().to_string())
                .map_err(|e| Unavailable(format!("{}: {e}", cache.join(f).display())))
        };
        Ok(Oracle {
            qemu,
            image,
            loader,
            release: read("VERSION")?,
            package: read("PACKAGE")?,
            timeout: None,
            stall: Duration::from_secs(
                std::env::var("KOPS_ARM64_STALL").ok().and_then(|s| s.parse().ok()).unwrap_or(600),
            ),
            memory_mib: 1024,
            cpu: "max,pauth-impdef=on".to_string(),
            symbols: vec!["__bpf_call_base".to_string()],
            results: std::env::var_os("KOPS_ARM64_RESULTS").filter(|d| !d.is_empty()).map(PathBuf::from),
        })
    }

    fn limit(&self, jobs: usize) -> Duration {
        if let Some(t) = self.timeout {
            return t;
        }
        if let Some(s) = std::env::var("KOPS_ARM64_TIMEOUT").ok().and_then(|s| s.parse::<u64>().ok()) {
            return Duration::from_secs(s);
        }
        Duration::from_secs(120 + 2 * jobs as u64)
    }

    /// Runs a batch in one boot; the outcomes are in the order of `jobs`.
    pub fn run(&self, jobs: &[Job]) -> Result<Vec<Outcome>, Error> {
        self.run_report(jobs).map(|r| r.outcomes)
    }

    /// Like [`Oracle::run`], with the boot and total times and the console.
    pub fn run_report(&self, jobs: &[Job]) -> Result<Report, Error> {
        let batch = encode(jobs, &self.symbols).map_err(Error::Job)?;
        let loader = std::fs::read(&self.loader)
            .map_err(|err| Error::Io { what: format!("reading {}", self.loader.display()), err })?;
        let initrd = cpio::initramfs(&loader, &batch).map_err(Error::Job)?;
        let cached = self.results.as_ref().map(|d| d.join(format!("{}.console", self.result_key(&initrd))));
        if let Some(console) = cached.as_ref().and_then(|p| std::fs::read_to_string(p).ok()) {
            if let Ok(outcome::Parsed::Done(outcomes, symbols)) = outcome::parse(&console, jobs) {
                let zero = Duration::ZERO;
                return Ok(Report { outcomes, boot: zero, total: zero, symbols, console, cached: true });
            }
        }
        let dir = TempDir::new()?;
        let initrd_path = dir.0.join("initrd.cpio");
        std::fs::write(&initrd_path, &initrd)
            .map_err(|err| Error::Io { what: format!("writing {}", initrd_path.display()), err })?;
        let (console, status, boot, total, timed_out) = self.boot(&initrd_path, self.limit(jobs.len()))?;
        let tail = tail(&console, 40);
        let stage = |started: bool, done: usize| {
            if started {
                format!("{done} of {} jobs done", jobs.len())
            } else {
                "the loader never started: the kernel did not boot to /init, or /init could not run".to_string()
            }
        };
        match outcome::parse(&console, jobs) {
            Ok(outcome::Parsed::Done(outcomes, symbols)) => {
                if let Some(path) = &cached {
                    store(path, &console);
                }
                Ok(Report { outcomes, boot: boot.unwrap_or(total), total, symbols, console, cached: false })
            }
            Ok(outcome::Parsed::Fatal(message)) => Err(Error::Loader { message, tail }),
            Ok(outcome::Parsed::Incomplete { started, done }) => match timed_out {
                Some(why) => Err(Error::Timeout { why, stage: stage(started, done.len()), tail, started, done }),
                None => Err(Error::Incomplete { stage: stage(started, done.len()), status, tail, started, done }),
            },
            Err(msg) => Err(Error::Parse { msg, tail }),
        }
    }

    /// Like [`Oracle::run_report`], but a guest that stops or hangs in the middle of the
    /// batch does not lose it: the job it stopped in gets [`Verdict::Crashed`] (with the
    /// console's last lines), and the jobs after it run in a new boot. An error only when
    /// a boot does not get to the loader at all, or for the reasons `run_report` has
    /// besides. `boot` is the first boot's; `total` sums every boot.
    pub fn run_resuming(&self, jobs: &[Job]) -> Result<Report, Error> {
        let mut outcomes = Vec::with_capacity(jobs.len());
        let mut first_boot = None;
        let mut total = Duration::ZERO;
        let mut console = String::new();
        let mut symbols = BTreeMap::new();
        let mut cached = true;
        while outcomes.len() < jobs.len() {
            let rest = &jobs[outcomes.len()..];
            let started = Instant::now();
            let (done, why, tail) = match self.run_report(rest) {
                Ok(r) => {
                    first_boot.get_or_insert(r.boot);
                    total += r.total;
                    console.push_str(&r.console);
                    symbols = r.symbols;
                    cached &= r.cached;
                    outcomes.extend(r.outcomes);
                    break;
                }
                Err(Error::Timeout { why, tail, started: true, done, .. }) => (done, format!("the guest {why}"), tail),
                Err(Error::Incomplete { status, tail, started: true, done, .. }) => {
                    (done, format!("the guest stopped (qemu {status})"), tail)
                }
                Err(e) => return Err(e),
            };
            cached = false;
            first_boot.get_or_insert(started.elapsed());
            total += started.elapsed();
            console.push_str(&tail);
            console.push('\n');
            outcomes.extend(done);
            if let Some(job) = jobs.get(outcomes.len()) {
                let last: Vec<&str> = tail.lines().rev().filter(|l| !l.trim().is_empty()).take(3).collect();
                let reason = format!(
                    "{why} while running this job; last console lines: {}",
                    last.into_iter().rev().collect::<Vec<_>>().join(" | ")
                );
                outcomes.push(Outcome::crashed(job.name.clone(), reason));
            }
        }
        Ok(Report { outcomes, boot: first_boot.unwrap_or_default(), total, symbols, console, cached })
    }

    /// What a batch's result depends on, hashed: the initramfs (loader, jobs, symbols), the
    /// kernel package and qemu's machine settings.
    fn result_key(&self, initrd: &[u8]) -> String {
        use sha2::{Digest, Sha256};
        let mut h = Sha256::new();
        h.update(b"kops-arm64-results-1\0");
        for part in
            [self.package.as_bytes(), self.release.as_bytes(), self.cpu.as_bytes(), &self.memory_mib.to_le_bytes()]
        {
            h.update((part.len() as u64).to_le_bytes());
            h.update(part);
        }
        h.update(initrd);
        h.finalize().iter().map(|b| format!("{b:02x}")).collect()
    }

    /// Boots the guest; returns the console (with qemu's own stderr after it), the exit
    /// status, the time to the loader's first line, the total time and, when it was
    /// stopped, why.
    #[allow(clippy::type_complexity)]
    fn boot(
        &self,
        initrd: &Path,
        limit: Duration,
    ) -> Result<(String, String, Option<Duration>, Duration, Option<String>), Error> {
        let start = Instant::now();
        let mut child = Command::new(&self.qemu)
            .args(["-M", "virt", "-cpu"])
            .arg(&self.cpu)
            .args(["-smp", "1", "-m"])
            .arg(self.memory_mib.to_string())
            .args(["-display", "none", "-monitor", "none", "-serial", "stdio", "-no-reboot", "-kernel"])
            .arg(&self.image)
            .arg("-initrd")
            .arg(initrd)
            .args(["-append", "console=ttyAMA0 quiet panic=-1 rdinit=/init"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|err| Error::Spawn { qemu: self.qemu.display().to_string(), err })?;
        let collect = |r: Option<Box<dyn Read + Send>>| {
            let buf = Arc::new(Mutex::new(Vec::new()));
            let b = buf.clone();
            let h = std::thread::spawn(move || {
                let Some(mut r) = r else { return };
                let mut chunk = [0u8; 1 << 16];
                while let Ok(n) = r.read(&mut chunk) {
                    if n == 0 {
                        break;
                    }
                    if let Ok(mut v) = b.lock() {
                        v.extend_from_slice(&chunk[..n]);
                    }
                }
            });
            (buf, h)
        };
        let (out, out_h) = collect(child.stdout.take().map(|s| Box::new(s) as Box<dyn Read + Send>));
        let (err, err_h) = collect(child.stderr.take().map(|s| Box::new(s) as Box<dyn Read + Send>));
        let mut boot = None;
        let mut seen = 0usize;
        let mut last_output = Instant::now();
        let mut timed_out = None;
        let status = loop {
            if let Ok(v) = out.lock() {
                if boot.is_none() {
                    let from = seen.saturating_sub(16);
                    if v[from..].windows(10).any(|w| w == b"KOPS begin") {
                        boot = Some(start.elapsed());
                    }
                }
                if v.len() != seen {
                    last_output = Instant::now();
                }
                seen = v.len();
            }
            let stop = if start.elapsed() > limit {
                Some(format!("did not finish within {} s", limit.as_secs()))
            } else if boot.is_some() && last_output.elapsed() > self.stall {
                Some(format!("wrote nothing for {} s", self.stall.as_secs()))
            } else {
                None
            };
            match child.try_wait() {
                Ok(Some(s)) => break s.to_string(),
                Ok(None) if stop.is_some() => {
                    timed_out = stop;
                    let _ = child.kill();
                    break child.wait().map(|s| s.to_string()).unwrap_or_else(|e| format!("not reaped: {e}"));
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(20)),
                Err(e) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(Error::Io { what: "waiting for qemu".into(), err: e });
                }
            }
        };
        let total = start.elapsed();
        let _ = out_h.join();
        let _ = err_h.join();
        let take =
            |b: Arc<Mutex<Vec<u8>>>| b.lock().map(|v| String::from_utf8_lossy(&v).into_owned()).unwrap_or_default();
        let mut console = take(out);
        let stderr = take(err);
        if !stderr.trim().is_empty() {
            console.push_str("\n[qemu stderr]\n");
            console.push_str(&stderr);
        }
        Ok((console, status, boot, total, timed_out))
    }
}

/// Keeps a finished batch's console for [`Oracle::results`]; a failure to write only
/// costs a boot next time.
fn store(path: &Path, console: &str) {
    let Some(dir) = path.parent() else { return };
    if std::fs::create_dir_all(dir).is_err() {
        return;
    }
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    if std::fs::write(&tmp, console).is_ok() && std::fs::rename(&tmp, path).is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
}

/// The last `n` lines of `s`, each cut to 200 characters.
fn tail(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..]
        .iter()
        .map(|l| {
            let l = l.trim_end_matches('\r');
            match l.char_indices().nth(200) {
                Some((i, _)) => format!("{}...", &l[..i]),
                None => l.to_string(),
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Result<TempDir, Error> {
        use std::sync::atomic::{AtomicU32, Ordering};
        static N: AtomicU32 = AtomicU32::new(0);
        let nanos =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
        let p = std::env::temp_dir().join(format!(
            "kops-arm64-{}-{}-{nanos}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&p).map_err(|err| Error::Io { what: format!("creating {}", p.display()), err })?;
        Ok(TempDir(p))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// For tests: `None` when the oracle is available; otherwise the reason to skip, unless
/// `KOPS_REQUIRE_KERNEL=1` (as CI sets it), in which case this panics so that the test
/// fails instead of passing silently.
pub fn skip_reason() -> Option<String> {
    match Oracle::find() {
        Ok(_) => None,
        Err(e) => {
            if std::env::var("KOPS_REQUIRE_KERNEL").map(|v| v == "1").unwrap_or(false) {
                panic!("KOPS_REQUIRE_KERNEL=1 but {e}");
            }
            Some(e.to_string())
        }
    }
}
