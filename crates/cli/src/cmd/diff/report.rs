//! What a difference between two runtimes looks like: observing both on one input,
//! shrinking the input while they still differ, and printing a reproducer.

use std::fmt::Write as _;

use kops_kernel::KernelError;
use kops_object::Program;
use kops_vm::compare::{differences, Outcome};
use kops_vm::ProgInput;

use super::runtime::{RunOutcome, Runtime};



pub(super) fn hex(b: &[u8]) -> String {
    let mut s = String::with_capacity(b.len() * 2);
    for x in b {
        let _ = write!(s, "{x:02x}");
    }
    s
}

/// Helpers whose results differ between two runs by nature (time, randomness, CPU number
/// when the oracle ran elsewhere). Programs that call them can differ legitimately.
pub(super) fn nondeterministic_helpers(p: &Program, kernel_cpu: Option<usize>) -> Vec<&'static str> {
    let mut out = Vec::new();
    for i in &p.insns {
        if !i.is_helper_call() {
            continue;
        }
        let name = match i.imm {
            5 => "ktime_get_ns",
            7 => "get_prandom_u32",
            8 if kernel_cpu.unwrap_or(0) != 0 => "get_smp_processor_id",
            42 => "get_numa_node_id",
            118 => "jiffies64",
            34 => "get_hash_recalc",
            125 => "ktime_get_boot_ns",
            160 => "ktime_get_coarse_ns",
            208 => "ktime_get_tai_ns",
            _ => continue,
        };
        if !out.contains(&name) {
            out.push(name);
        }
    }
    out
}

pub(super) struct Observed {
    pub(super) oracle: Result<Outcome, String>,
    pub(super) other: Result<Outcome, String>,
}

impl Observed {
    pub(super) fn differs(&self, bits32: bool) -> bool {
        match (&self.oracle, &self.other) {
            (Ok(a), Ok(b)) => !differences(a, b, bits32).is_empty(),
            (Ok(_), Err(_)) => true,
            _ => false, // the oracle does not run it: nothing to compare
        }
    }
}

pub(super) fn observe(o: &Runtime, x: &Runtime, input: &ProgInput, compare: &[String]) -> Result<Observed, KernelError> {
    let conv = |r: RunOutcome| match r {
        RunOutcome::Ran(v) => Ok(v),
        RunOutcome::Refused(w) | RunOutcome::Failed(w) => Err(w),
    };
    Ok(Observed { oracle: conv(o.run(input, compare)?), other: conv(x.run(input, compare)?) })
}

/// Makes a differing input smaller: cut the tail while the difference stays, then zero
/// bytes one at a time (a bounded number of runs). Returns the smallest input found with
/// what the runtimes did on it (`first` when nothing smaller still differs).
pub(super) fn shrink(
    o: &Runtime,
    x: &Runtime,
    input: &ProgInput,
    first: Observed,
    compare: &[String],
    bits32: bool,
) -> Result<(ProgInput, Observed), KernelError> {
    let mut cur = (input.clone(), first);
    let mut budget = 300;
    let mut step = cur.0.data.len() / 2;
    while step > 0 && budget > 0 {
        let mut t = cur.0.clone();
        t.data.truncate(cur.0.data.len() - step);
        budget -= 1;
        let obs = observe(o, x, &t, compare)?;
        if obs.differs(bits32) {
            cur = (t, obs);
            step = step.min(cur.0.data.len() / 2);
        } else {
            step /= 2;
        }
    }
    for i in 0..cur.0.data.len() {
        if budget == 0 {
            break;
        }
        if cur.0.data[i] == 0 {
            continue;
        }
        let mut t = cur.0.clone();
        t.data[i] = 0;
        budget -= 1;
        let obs = observe(o, x, &t, compare)?;
        if obs.differs(bits32) {
            cur = (t, obs);
        }
    }
    Ok(cur)
}

pub(super) fn report(path: &str, p: &Program, o: &Runtime, x: &Runtime, input: &ProgInput, obs: &Observed, bits32: bool) {
    println!("MISMATCH {path} program `{}` ({}): {} vs {}", p.name, p.section, o.name(), x.name());
    println!("  input ({} bytes): {}", input.data.len(), hex(&input.data));
    if let Some(c) = &input.ctx {
        println!("  ctx: {}", hex(c));
    }
    let show = |r: &Result<Outcome, String>| -> String {
        match r {
            Ok(r) => {
                let mut s = format!("r0 = {:#x}", r.r0);
                match &r.data_out {
                    Some(d) if *d == input.data => s.push_str(", packet out = input"),
                    Some(d) => {
                        let _ = write!(s, ", packet out ({} bytes) {}", d.len(), hex(d));
                    }
                    None => {}
                }
                s
            }
            Err(w) => format!("error: {w}"),
        }
    };
    println!("  {}: {}", o.name(), show(&obs.oracle));
    println!("  {}: {}", x.name(), show(&obs.other));
    if let (Ok(a), Ok(b)) = (&obs.oracle, &obs.other) {
        for d in differences(a, b, bits32) {
            println!("  differs: {d}");
        }
    }
}

