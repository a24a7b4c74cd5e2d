//! Benchmark harness: runtimes measured side by side, interleaved, in one run.
//!
//! A [`Runner`] measures one program on one runtime: `measure(repeat)` runs the program
//! `repeat` times on the same input and returns the mean ns per run of that batch. The
//! harness calibrates `repeat` per runner so a batch lasts long enough to be far above
//! timer resolution, then takes samples in rounds: in every round each runner gets one
//! batch, in a fresh random order, so drift and noise hit all runtimes alike. Ratios are
//! computed from medians and, for the spread, from the per-round pairs.
//!
//! Modules: [`runners`] (the runtimes: kernel BPF_PROG_TEST_RUN, interpreter, our JIT with
//! and without kinsn native regions, the rbpf peer, and the oracle check), [`native`] (the
//! C kernels built for the host by build.rs), [`suite`] (objects + runtime names -> checked
//! cases, the `kops` build: recognizer, lowering, native emits), [`packet`] (the seeded
//! input), [`report`] (terminal table, JSON, SVG, BENCHMARKS.md). The command is
//! `kops bench` (crates/cli/src/cmd/bench.rs).

pub mod instructions;
pub mod native;
pub mod packet;
pub mod report;
pub mod runners;
pub mod suite;
pub mod traffic;

use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde::Serialize;
use std::time::Duration;

pub trait Runner {
    /// Mean ns per run over `repeat` runs of one batch.
    fn measure(&mut self, repeat: u32) -> Result<f64, String>;
}

/// One (program, runtime) pair to measure.
pub struct Case {
    pub id: ProgId,
    pub runtime: String,
    pub runner: Box<dyn Runner>,
}

/// Which program a result is about: results and ratios are keyed by (object, program),
/// never by the program name alone (objects from different sources reuse names).
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct ProgId {
    pub object: String,
    pub program: String,
    /// The row label: the program name, or `object-file:program` where another object has
    /// a program of that name ([`label_ids`]).
    #[serde(skip)]
    pub key: String,
}

impl ProgId {
    pub fn new(object: &str, program: &str) -> ProgId {
        ProgId { object: object.to_string(), program: program.to_string(), key: program.to_string() }
    }
}

/// Make every row label unique: programs whose name occurs in several objects are labelled
/// with the object's file name too.
pub fn label_ids<'a>(ids: impl IntoIterator<Item = &'a mut ProgId>) {
    let ids: Vec<&mut ProgId> = ids.into_iter().collect();
    let mut objects_of: std::collections::BTreeMap<String, std::collections::BTreeSet<String>> = Default::default();
    for i in &ids {
        objects_of.entry(i.program.clone()).or_default().insert(i.object.clone());
    }
    for i in ids {
        i.key = if objects_of[&i.program].len() > 1 {
            let file = std::path::Path::new(&i.object).file_name().map(|f| f.to_string_lossy().to_string());
            format!("{}:{}", file.unwrap_or_else(|| i.object.clone()), i.program)
        } else {
            i.program.clone()
        };
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct CaseResult {
    #[serde(flatten)]
    pub id: ProgId,
    pub runtime: String,
    pub median_ns: f64,
    pub min_ns: f64,
    pub max_ns: f64,
    pub repeat: u32,
    pub samples_ns: Vec<f64>,
    /// Native instructions per run counted by callgrind (userspace runtimes, with
    /// `kops bench --instructions`); the packet is the same every run.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub instructions_per_packet: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Ratio {
    #[serde(flatten)]
    pub id: ProgId,
    pub numerator: String,
    pub denominator: String,
    /// median(numerator) / median(denominator).
    pub ratio: f64,
    /// 95% bootstrap confidence interval of `ratio`: the rounds (each measured both runtimes,
    /// interleaved) resampled with replacement ([`bootstrap_ci`]).
    pub ci_low: f64,
    pub ci_high: f64,
    /// Spread of the per-round ratios.
    pub min: f64,
    pub max: f64,
    pub identity: bool,
    /// The ratio with each side's harness floor (the same runtime's median on the floor
    /// program) subtracted first; set by [`net_of_floor`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub net_of_floor: Option<f64>,
    /// instructions(numerator) / instructions(denominator) per run, when both were counted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub instructions_ratio: Option<f64>,
}

/// A (program, runtime) that was not measured, and why.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Skipped {
    #[serde(flatten)]
    pub id: ProgId,
    pub runtime: String,
    pub reason: String,
}

/// A runtime whose result differed from the oracle's: never timed.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Mismatch {
    #[serde(flatten)]
    pub id: ProgId,
    pub runtime: String,
    /// The runtime it was compared with (`kernel`, or `interp` without bpf(2)).
    pub oracle: String,
    pub detail: String,
}

#[derive(Debug, Clone, Serialize, Default)]
pub struct Report {
    pub results: Vec<CaseResult>,
    pub ratios: Vec<Ratio>,
    /// Cases that could not be measured, with the reason (never silently dropped).
    pub skipped: Vec<Skipped>,
    pub mismatches: Vec<Mismatch>,
    /// Row label of the harness-floor program (returns at once), when measured.
    pub floor: Option<String>,
    /// Row label ([`ProgId::key`]) -> the idiom it stresses.
    pub descriptions: std::collections::BTreeMap<String, String>,
    /// Free-form lines for the reader (site counts, oracle choice, ...).
    pub notes: Vec<String>,
    /// Rounds measured, and why measuring stopped.
    pub rounds: usize,
    pub stopped: String,
    /// Static native code size per (program, runtime), a stable complement to time.
    pub code_bytes: Vec<CodeSize>,
    /// Compile time per (program, runtime), where the runtime measures it (`cranelift`).
    pub compile_us: Vec<CompileTime>,
}

/// Time one runtime took to compile a program, in microseconds (the compiling thread's CPU
/// time, so a loaded machine does not inflate it).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct CompileTime {
    #[serde(flatten)]
    pub id: ProgId,
    pub runtime: String,
    pub micros: f64,
}

/// Bytes of native code one runtime made of a program (functions only, no stubs).
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct CodeSize {
    #[serde(flatten)]
    pub id: ProgId,
    pub runtime: String,
    pub bytes: usize,
}

pub struct Settings {
    /// Rounds at least (every case once per round, in a fresh random order).
    pub samples: usize,
    /// Keep adding rounds until every ratio's 95% interval is narrower than this fraction of
    /// the ratio, or `budget` ends; None: exactly `samples` rounds.
    pub ci_width: Option<f64>,
    /// Wall time the measuring rounds may take when adding rounds for `ci_width`.
    pub budget: Duration,
    /// Wall time one batch should take at least.
    pub batch_target: Duration,
    pub seed: u64,
    pub progress: bool,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            samples: 11,
            ci_width: None,
            budget: Duration::from_secs(60),
            batch_target: Duration::from_millis(20),
            seed: 1,
            progress: true,
        }
    }
}

pub fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let n = s.len();
    if n == 0 {
        return f64::NAN;
    }
    if n % 2 == 1 {
        s[n / 2]
    } else {
        (s[n / 2 - 1] + s[n / 2]) / 2.0
    }
}

/// Find a repeat count so that one batch takes about `target`.
fn calibrate(r: &mut dyn Runner, target: Duration) -> Result<u32, String> {
    let mut repeat = 1u32;
    loop {
        let ns = r.measure(repeat)?;
        let total = ns * repeat as f64;
        if total >= target.as_nanos() as f64 / 4.0 || repeat >= 1 << 24 {
            let want = (target.as_nanos() as f64 / ns.max(0.1)).ceil();
            return Ok(want.clamp(1.0, (1u64 << 26) as f64) as u32);
        }
        repeat = repeat.saturating_mul(4);
    }
}

/// Measure every case; `ratio_pairs` lists (numerator runtime, denominator runtime, identity)
/// to compute per program when both are present.
pub fn run(mut cases: Vec<Case>, ratio_pairs: &[(&str, &str, bool)], st: &Settings) -> Report {
    let mut skipped = Vec::new();
    let mut repeats = Vec::new();
    let bar = if st.progress {
        indicatif::ProgressBar::new((cases.len() * (st.samples + 1)) as u64)
    } else {
        indicatif::ProgressBar::hidden()
    };
    bar.set_style(
        indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} {msg}").unwrap(),
    );
    let mut alive = vec![true; cases.len()];
    for (i, c) in cases.iter_mut().enumerate() {
        bar.set_message(format!("calibrating {} on {}", c.id.key, c.runtime));
        match calibrate(c.runner.as_mut(), st.batch_target) {
            Ok(r) => repeats.push(r),
            Err(e) => {
                skipped.push(Skipped { id: c.id.clone(), runtime: c.runtime.clone(), reason: e });
                alive[i] = false;
                repeats.push(0);
            }
        }
        bar.inc(1);
    }
    let mut samples: Vec<Vec<f64>> = vec![Vec::new(); cases.len()];
    let mut rng = rand::rngs::StdRng::seed_from_u64(st.seed);
    let mut order: Vec<usize> = (0..cases.len()).filter(|&i| alive[i]).collect();
    let started = std::time::Instant::now();
    let mut round = 0;
    let stopped = loop {
        if round >= st.samples {
            let Some(w) = st.ci_width else { break format!("{round} rounds as asked") };
            let wide = widest_intervals(&cases, &samples, &alive, ratio_pairs, w, st.seed);
            if wide.is_empty() {
                break format!("{round} rounds: every ratio's 95% interval narrower than {:.1}%", w * 100.0);
            }
            if started.elapsed() >= st.budget {
                break format!(
                    "{round} rounds: time budget of {} s reached; {} ratio(s) with a 95% interval wider than {:.1}%: {}",
                    st.budget.as_secs(),
                    wide.len(),
                    w * 100.0,
                    wide.join(", ")
                );
            }
            bar.inc_length(order.len() as u64);
        }
        round += 1;
        order.shuffle(&mut rng);
        bar.set_message(format!("round {round}/{}", st.samples.max(round)));
        for &i in &order {
            if !alive[i] {
                continue;
            }
            match cases[i].runner.measure(repeats[i]) {
                Ok(ns) => samples[i].push(ns),
                Err(e) => {
                    skipped.push(Skipped {
                        id: cases[i].id.clone(),
                        runtime: cases[i].runtime.clone(),
                        reason: e,
                    });
                    alive[i] = false;
                }
            }
            bar.inc(1);
        }
    };
    bar.finish_and_clear();
    let results: Vec<CaseResult> = cases
        .iter()
        .enumerate()
        .filter(|(i, _)| alive[*i])
        .map(|(i, c)| {
            let s = &samples[i];
            CaseResult {
                id: c.id.clone(),
                runtime: c.runtime.clone(),
                median_ns: median(s),
                min_ns: s.iter().cloned().fold(f64::INFINITY, f64::min),
                max_ns: s.iter().cloned().fold(0.0, f64::max),
                repeat: repeats[i],
                samples_ns: s.clone(),
                instructions_per_packet: None,
            }
        })
        .collect();
    let ratios = ratios(&results, ratio_pairs);
    Report { results, ratios, skipped, rounds: round, stopped, ..Report::default() }
}

/// Ratios per program for each requested pair of runtimes that were both measured.
pub fn ratios(results: &[CaseResult], pairs: &[(&str, &str, bool)]) -> Vec<Ratio> {
    let mut out = Vec::new();
    let mut programs: Vec<&ProgId> = Vec::new();
    for r in results {
        if !programs.contains(&&r.id) {
            programs.push(&r.id);
        }
    }
    for p in programs {
        let find = |rt: &str| results.iter().find(|r| &r.id == p && r.runtime == rt);
        for &(num, den, identity) in pairs {
            let (Some(a), Some(b)) = (find(num), find(den)) else { continue };
            let per_round: Vec<f64> =
                a.samples_ns.iter().zip(&b.samples_ns).map(|(x, y)| x / y).collect();
            let (ci_low, ci_high) = bootstrap_ci(&a.samples_ns, &b.samples_ns, 2000, 0x5eed);
            out.push(Ratio {
                id: p.clone(),
                numerator: num.to_string(),
                denominator: den.to_string(),
                ratio: a.median_ns / b.median_ns,
                ci_low,
                ci_high,
                min: per_round.iter().cloned().fold(f64::INFINITY, f64::min),
                max: per_round.iter().cloned().fold(0.0, f64::max),
                identity,
                net_of_floor: None,
                instructions_ratio: None,
            });
        }
    }
    out
}

/// 95% percentile-bootstrap interval of median(num) / median(den), where `num[i]` and
/// `den[i]` were measured in the same round: rounds are resampled with replacement, both
/// sides together, so what the rounds share (machine state at that moment) stays paired.
pub fn bootstrap_ci(num: &[f64], den: &[f64], resamples: usize, seed: u64) -> (f64, f64) {
    let n = num.len().min(den.len());
    if n == 0 {
        return (f64::NAN, f64::NAN);
    }
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut stats = Vec::with_capacity(resamples);
    let (mut a, mut b) = (vec![0.0; n], vec![0.0; n]);
    for _ in 0..resamples {
        for j in 0..n {
            let k = rng.gen_range(0..n);
            a[j] = num[k];
            b[j] = den[k];
        }
        stats.push(median(&a) / median(&b));
    }
    stats.sort_by(|x, y| x.total_cmp(y));
    let at = |q: f64| stats[((q * (resamples - 1) as f64).round() as usize).min(resamples - 1)];
    (at(0.025), at(0.975))
}

/// The ratios (labels) whose 95% interval is still wider than `w` times the ratio.
fn widest_intervals(
    cases: &[Case],
    samples: &[Vec<f64>],
    alive: &[bool],
    pairs: &[(&str, &str, bool)],
    w: f64,
    seed: u64,
) -> Vec<String> {
    let mut wide = Vec::new();
    for (i, c) in cases.iter().enumerate() {
        for &(num, den, _) in pairs {
            if c.runtime != num || !alive[i] {
                continue;
            }
            let Some(j) = cases.iter().position(|d| d.id == c.id && d.runtime == den) else { continue };
            if !alive[j] || samples[i].is_empty() {
                continue;
            }
            let (lo, hi) = bootstrap_ci(&samples[i], &samples[j], 500, seed);
            let r = median(&samples[i]) / median(&samples[j]);
            if !((hi - lo) / r <= w) {
                wide.push(format!("{} {num}/{den}", c.id.key));
            }
        }
    }
    wide
}

/// Count instructions per run (callgrind, [`instructions`]) for every result of a userspace
/// runtime, with `count(object, program, runtime)`, and fill the ratios' instruction ratios.
/// Returns the counts that failed, with the reason.
pub fn count_instructions(
    rep: &mut Report,
    mut count: impl FnMut(&str, &str, &str) -> Result<f64, String>,
) -> Vec<(ProgId, String, String)> {
    let mut failed = Vec::new();
    for r in rep.results.iter_mut().filter(|r| matches!(r.runtime.as_str(), "interp" | "jit" | "kops")) {
        match count(&r.id.object, &r.id.program, &r.runtime) {
            Ok(n) => r.instructions_per_packet = Some(n),
            Err(e) => failed.push((r.id.clone(), r.runtime.clone(), e)),
        }
    }
    let of = |id: &ProgId, rt: &str| rep.results.iter().find(|r| &r.id == id && r.runtime == rt).and_then(|r| r.instructions_per_packet);
    let ratios: Vec<Option<f64>> =
        rep.ratios.iter().map(|x| Some(of(&x.id, &x.numerator)? / of(&x.id, &x.denominator)?)).collect();
    for (x, r) in rep.ratios.iter_mut().zip(ratios) {
        x.instructions_ratio = r;
    }
    failed
}

/// Fill [`Ratio::net_of_floor`] for every ratio whose two runtimes were measured on the
/// floor program `floor` (not for the floor program itself).
pub fn net_of_floor(rep: &mut Report, floor: &str) {
    let floor_of = |rt: &str| rep.results.iter().find(|r| r.id.key == floor && r.runtime == rt).map(|r| r.median_ns);
    let median_of = |p: &str, rt: &str| rep.results.iter().find(|r| r.id.key == p && r.runtime == rt).map(|r| r.median_ns);
    let mut nets = Vec::new();
    for r in &rep.ratios {
        let net = match (floor_of(&r.numerator), floor_of(&r.denominator), median_of(&r.id.key, &r.numerator), median_of(&r.id.key, &r.denominator)) {
            (Some(fa), Some(fb), Some(a), Some(b)) if r.id.key != floor && b - fb > 0.0 => Some((a - fa) / (b - fb)),
            _ => None,
        };
        nets.push(net);
    }
    for (r, n) in rep.ratios.iter_mut().zip(nets) {
        r.net_of_floor = n;
    }
}

/// A one-sample result, for tests.
#[cfg(test)]
pub(crate) fn case(program: &str, runtime: &str, ns: f64) -> CaseResult {
    CaseResult {
        id: ProgId::new("o.bpf.o", program),
        runtime: runtime.into(),
        median_ns: ns,
        min_ns: ns,
        max_ns: ns,
        repeat: 1,
        samples_ns: vec![ns],
        instructions_per_packet: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn net_of_floor_subtracts_each_runtimes_floor() {
        let r = case;
        let results = vec![r("f", "kernel", 30.0), r("f", "jit", 5.0), r("p", "kernel", 1030.0), r("p", "jit", 1005.0)];
        let ratios = ratios(&results, &[("jit", "kernel", false)]);
        let mut rep = Report { results, ratios, ..Report::default() };
        net_of_floor(&mut rep, "f");
        let p = rep.ratios.iter().find(|x| x.id.key == "p").unwrap();
        // (1005 - 5) / (1030 - 30) = 1.0, while the plain ratio is 1005/1030.
        assert_eq!(p.net_of_floor, Some(1.0));
        assert!((p.ratio - 1005.0 / 1030.0).abs() < 1e-12);
        assert_eq!(rep.ratios.iter().find(|x| x.id.key == "f").unwrap().net_of_floor, None);
    }

    /// A runner whose cost per run is known exactly (busy work, measured with a clock).
    struct Spin(u64);
    impl Runner for Spin {
        fn measure(&mut self, repeat: u32) -> Result<f64, String> {
            // CPU time of this thread: a wall clock would charge other processes' time.
            let t = crate::runners::ThreadClock::now();
            let mut x = 0u64;
            for _ in 0..repeat {
                for i in 0..self.0 {
                    x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(i));
                }
            }
            std::hint::black_box(x);
            Ok(t.elapsed_ns() as f64 / repeat as f64)
        }
    }

    struct Broken;
    impl Runner for Broken {
        fn measure(&mut self, _: u32) -> Result<f64, String> {
            Err("cannot load".into())
        }
    }

    /// The bootstrap interval: a constant ratio gives a zero-width interval at it; noisy
    /// rounds a wider one that still holds the point estimate; with a width target, rounds
    /// are added until it is met (or the budget ends, which the report says).
    #[test]
    fn bootstrap_interval_and_rounds_until_narrow() {
        assert_eq!(bootstrap_ci(&[2.0, 4.0, 6.0], &[1.0, 2.0, 3.0], 200, 1), (2.0, 2.0));
        let num: Vec<f64> = (0..20).map(|i| 100.0 + (i * 37 % 11) as f64).collect();
        let den: Vec<f64> = (0..20).map(|i| 50.0 + (i * 13 % 7) as f64).collect();
        let (lo, hi) = bootstrap_ci(&num, &den, 2000, 1);
        let r = median(&num) / median(&den);
        assert!(lo < r && r < hi && hi - lo < 0.5, "{lo} {r} {hi}");
        let cases = vec![
            Case { id: ProgId::new("o", "p"), runtime: "a".into(), runner: Box::new(Spin(2000)) },
            Case { id: ProgId::new("o", "p"), runtime: "b".into(), runner: Box::new(Spin(4000)) },
        ];
        let st = Settings {
            samples: 3,
            ci_width: Some(0.5),
            budget: Duration::from_secs(5),
            batch_target: Duration::from_millis(2),
            seed: 7,
            progress: false,
        };
        let rep = run(cases, &[("b", "a", false)], &st);
        let r = &rep.ratios[0];
        assert!(rep.stopped.contains("narrower than 50.0%"), "{}", rep.stopped);
        assert!((r.ci_high - r.ci_low) / r.ratio <= 0.5, "{r:?}");
        // An impossible target ends at the budget, and says so.
        let never = Settings { ci_width: Some(0.0), budget: Duration::from_millis(200), ..st };
        let cases = vec![
            Case { id: ProgId::new("o", "p"), runtime: "a".into(), runner: Box::new(Spin(2000)) },
            Case { id: ProgId::new("o", "p"), runtime: "b".into(), runner: Box::new(Spin(4000)) },
        ];
        let rep = run(cases, &[("b", "a", false)], &never);
        assert!(rep.stopped.contains("time budget"), "{}", rep.stopped);
        assert!(rep.rounds > 3, "{}", rep.rounds);
    }

    /// Three objects with a program of the same name (as real objects from different
    /// sources have): each gets its own ratio, from its own results, and a unique label.
    #[test]
    fn same_program_name_in_several_objects_keeps_separate_results() {
        let mut results = Vec::new();
        for (obj, kernel, jit) in [("/a/x.bpf.o", 100.0, 50.0), ("/b/y.bpf.o", 100.0, 80.0), ("/c/z.bpf.o", 10.0, 30.0)] {
            for (rt, ns) in [("kernel", kernel), ("jit", jit)] {
                let mut r = case("tx", rt, ns);
                r.id = ProgId::new(obj, "tx");
                results.push(r);
            }
        }
        let mut solo = case("solo", "kernel", 1.0);
        solo.id = ProgId::new("/a/x.bpf.o", "solo");
        results.push(solo);
        label_ids(results.iter_mut().map(|r| &mut r.id));
        let rs = ratios(&results, &[("jit", "kernel", false)]);
        let got: Vec<(String, f64)> = rs.iter().map(|r| (r.id.key.clone(), r.ratio)).collect();
        assert_eq!(got, vec![("x.bpf.o:tx".to_string(), 0.5), ("y.bpf.o:tx".to_string(), 0.8), ("z.bpf.o:tx".to_string(), 3.0)]);
        assert_eq!(results.last().unwrap().id.key, "solo");
        let json = serde_json::to_value(&rs[1]).unwrap();
        assert_eq!((json["object"].as_str(), json["program"].as_str()), (Some("/b/y.bpf.o"), Some("tx")));
    }

    /// Instruction counts land on the userspace results only, and the ratios get
    /// count(numerator) / count(denominator); a failed count is returned, not hidden.
    #[test]
    fn instruction_counts_fill_results_and_ratios() {
        let results = vec![case("p", "kernel", 100.0), case("p", "jit", 50.0), case("p", "kops", 40.0), case("q", "jit", 9.0)];
        let ratios = ratios(&results, &[("kops", "jit", false), ("jit", "kernel", false)]);
        let mut rep = Report { results, ratios, ..Report::default() };
        let failed = count_instructions(&mut rep, |_, p, rt| match (p, rt) {
            ("p", "jit") => Ok(2000.0),
            ("p", "kops") => Ok(1500.0),
            _ => Err("no count".into()),
        });
        assert_eq!(failed.len(), 1, "{failed:?}"); // q on jit
        let kernel = rep.results.iter().find(|r| r.runtime == "kernel").unwrap();
        assert_eq!(kernel.instructions_per_packet, None);
        let kj = rep.ratios.iter().find(|r| r.numerator == "kops").unwrap();
        assert_eq!(kj.instructions_ratio, Some(0.75));
        let jk = rep.ratios.iter().find(|r| r.numerator == "jit").unwrap();
        assert_eq!(jk.instructions_ratio, None, "the kernel is not counted");
    }

    #[test]
    fn median_of_odd_and_even() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
    }

    #[test]
    fn twice_the_work_shows_as_a_ratio_near_two_and_failures_are_reported() {
        let cases = vec![
            Case { id: ProgId::new("o", "p"), runtime: "a".into(), runner: Box::new(Spin(2000)) },
            Case { id: ProgId::new("o", "p"), runtime: "b".into(), runner: Box::new(Spin(4000)) },
            Case { id: ProgId::new("o", "p"), runtime: "c".into(), runner: Box::new(Broken) },
        ];
        let st = Settings {
            samples: 5,
            ci_width: None,
            budget: Duration::from_secs(1),
            batch_target: Duration::from_millis(5),
            seed: 7,
            progress: false,
        };
        let rep = run(cases, &[("b", "a", false), ("c", "a", false)], &st);
        assert_eq!(rep.results.len(), 2);
        assert_eq!(rep.ratios.len(), 1, "no ratio for a runtime that failed");
        let r = &rep.ratios[0];
        assert!((1.5..2.6).contains(&r.ratio), "ratio {}", r.ratio);
        assert!(r.ci_low <= r.ratio && r.ratio <= r.ci_high, "{r:?}");
        assert_eq!(rep.rounds, 5);
        assert_eq!(rep.skipped.len(), 1);
        assert_eq!(rep.skipped[0].reason, "cannot load");
    }
}
