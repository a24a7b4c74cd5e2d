//! `kops prove`: every EInsn native emit against its proof sequence, by SMT.

use kops_prove::einsn::{prove_class, ClassOutcome};
use kops_prove::Verdict;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Instant;

/// Prove each native emit equal to its proof sequence.
///
/// Z3 over bit-vectors, for every payload class: every shift amount, start/length and size,
/// every register aliasing pattern, with temporaries live and dead, under each CPU feature
/// set. `--check-model` instead checks the prover's x86-64 model against this CPU.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Architecture (only x86_64 has native emits).
    #[arg(long, default_value = "x86_64")]
    arch: String,
    /// Prove only this op (repeatable), e.g. rotate64.
    #[arg(long)]
    op: Vec<String>,
    /// Write every outcome as JSON.
    #[arg(long)]
    json: Option<String>,
    /// Prove only every Nth class (a sampled subset, for quick runs).
    #[arg(long, default_value_t = 1)]
    stride: usize,
    /// Worker threads (each drives its own z3 process).
    #[arg(long, default_value_t = 2)]
    jobs: usize,
    /// Instead of proving: check the prover's x86-64 model against this CPU, every form
    /// the model covers on random concrete states.
    #[arg(long)]
    check_model: bool,
    /// With --check-model: states per form.
    #[arg(long, default_value_t = 1000)]
    states: usize,
    /// With --check-model: seed of the random states (a run is reproducible from it).
    #[arg(long, default_value_t = kops_prove::check_model::Options::default().seed)]
    seed: u64,
    /// With --check-model: states per form also evaluated by z3 (checks the fast evaluator).
    #[arg(long, default_value_t = 8)]
    z3_states: usize,
}

pub fn run(a: Args) -> anyhow::Result<u8> {
    if a.arch != "x86_64" {
        anyhow::bail!("no native emits for architecture `{}` yet (only x86_64)", a.arch);
    }
    if a.check_model {
        return check_model(&a);
    }
    let reg = kops_einsn::registry();
    let ops: Vec<_> = reg.iter().filter(|o| a.op.is_empty() || a.op.iter().any(|n| n == o.name())).cloned().collect();
    for n in &a.op {
        if reg.by_name(n).is_none() {
            anyhow::bail!("unknown op `{n}`");
        }
    }
    let (mut total_ok, mut total_bad) = (0usize, 0usize);
    let mut json = Vec::new();
    println!("{:<15} {:>8} {:>9} {:>8} {:>7} {:>9}", "op", "classes", "variants", "proven", "failed", "time");
    for op in ops {
        let cl: Vec<_> = op.classes().into_iter().step_by(a.stride.max(1)).collect();
        let t0 = Instant::now();
        let next = AtomicUsize::new(0);
        let outcomes: Mutex<Vec<ClassOutcome>> = Mutex::new(Vec::new());
        std::thread::scope(|s| {
            for _ in 0..a.jobs.max(1) {
                s.spawn(|| loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(c) = cl.get(i) else { break };
                    let r = prove_class(op.as_ref(), c);
                    outcomes.lock().unwrap().extend(r);
                });
            }
        });
        let outcomes = outcomes.into_inner().unwrap();
        let ok = outcomes.iter().filter(|o| matches!(o.verdict, Ok(Verdict::Proven))).count();
        let bad = outcomes.len() - ok;
        println!(
            "{:<15} {:>8} {:>9} {:>8} {:>7} {:>8.1}s",
            op.name(),
            cl.len(),
            outcomes.len(),
            ok,
            bad,
            t0.elapsed().as_secs_f64()
        );
        for o in outcomes.iter().filter(|o| !matches!(o.verdict, Ok(Verdict::Proven))).take(5) {
            match &o.verdict {
                Ok(Verdict::Refuted { inputs, differs, .. }) => {
                    let ins: Vec<String> = inputs.iter().map(|(n, v)| format!("{n}={v:#x}")).collect();
                    println!("  FAILED {} [{}]: {differs} differs for {}", o.label, o.variant, ins.join(" "));
                }
                Err(e) => println!("  ERROR {} [{}]: {e}", o.label, o.variant),
                Ok(Verdict::Proven) => unreachable!(),
            }
        }
        if a.json.is_some() {
            for o in &outcomes {
                json.push(serde_json::json!({
                    "op": op.name(), "class": o.label, "variant": o.variant,
                    "proven": matches!(o.verdict, Ok(Verdict::Proven)),
                    "detail": match &o.verdict {
                        Ok(Verdict::Proven) => serde_json::Value::Null,
                        Ok(Verdict::Refuted { inputs, differs, .. }) => serde_json::json!({"differs": differs, "inputs": inputs}),
                        Err(e) => serde_json::json!({"error": e}),
                    }
                }));
            }
        }
        total_ok += ok;
        total_bad += bad;
    }
    if let Some(p) = &a.json {
        std::fs::write(p, serde_json::to_string_pretty(&json)?)?;
    }
    println!("{total_ok} proven, {total_bad} failed");
    Ok(if total_bad == 0 { 0 } else { 1 })
}

fn check_model(a: &Args) -> anyhow::Result<u8> {
    use kops_prove::check_model::{check_all, forms, Options};
    let t0 = Instant::now();
    let set = forms();
    let emitted = set.forms.iter().filter(|f| f.in_emits).count();
    println!(
        "{} forms in the model ({emitted} produced by the native emits, marked *); {} states each",
        set.forms.len(),
        a.states
    );
    let opts = Options { states: a.states, seed: a.seed, z3_sample: a.z3_states, jobs: a.jobs.max(1), perturb: None };
    let reports = check_all(&set, &opts, |_| {}).map_err(anyhow::Error::msg)?;
    let (mut states, mut bad) = (0usize, 0usize);
    for r in &reports {
        println!(
            "{} {:<64} {:>3} instances {:>6} states {:>3} z3 {:>5} disagreements",
            if r.in_emits { "*" } else { " " },
            r.name,
            r.instances,
            r.states,
            r.z3_states,
            r.disagreements
        );
        for d in &r.examples {
            println!("{d}");
        }
        states += r.states;
        bad += r.disagreements;
    }
    let mut gaps = 0;
    for f in &set.unbuilt {
        println!("ERROR: no instance could be built of {f}, whose mnemonic the model handles");
        gaps += 1;
    }
    for f in &set.emitted_outside_model {
        println!("ERROR: the emits produce {f}, which the model does not accept");
        gaps += 1;
    }
    eprintln!("({:.1}s)", t0.elapsed().as_secs_f64());
    println!("{} forms, {states} states, {bad} disagreements", reports.len());
    Ok(if bad == 0 && gaps == 0 { 0 } else { 1 })
}
