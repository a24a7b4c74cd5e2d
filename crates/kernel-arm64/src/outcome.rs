//! What the guest said about each job: the console lines `KOPS ...` of the loader, parsed.

use std::collections::BTreeMap;
use std::time::Duration;

use kops_isa::Insn;

use crate::job::Job;

/// The verifier's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Accepted,
    /// BPF_PROG_LOAD failed: `errno`, the verifier's message and the instruction it points
    /// at, read from the log as `kops_kernel::parse_log` reads the host's (the full log is
    /// in [`Outcome::log`]).
    Rejected {
        errno: i32,
        message: String,
        insn: Option<usize>,
    },
    /// The program was not given to the verifier: a map could not be created.
    NotLoaded {
        reason: String,
    },
    /// The guest stopped or hung while running this job ([`crate::Oracle::run_resuming`]):
    /// a kernel panic, a hang, or the batch's time running out; `reason` says which, with
    /// the console's last lines.
    Crashed {
        reason: String,
    },
}

/// Result of one BPF_PROG_TEST_RUN.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunResult {
    /// The program's return value (the kernel reports its low 32 bits).
    pub retval: u32,
    pub data_out: Vec<u8>,
    pub ctx_out: Vec<u8>,
    /// With [`crate::Job::isolate_runs`]: the maps' non-zero elements after this run, as
    /// (map index, key, value), in the loader's reading order.
    pub maps: Vec<(usize, Vec<u8>, Vec<u8>)>,
}

/// One job's outcome, in the order of the jobs given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub name: String,
    pub verdict: Verdict,
    /// The verifier log: at the job's log level when accepted (empty at level 0), at
    /// level 1 at least when rejected.
    pub log: String,
    /// BPF_BTF_LOAD failed (errno, log); the job went on without BTF.
    pub btf_error: Option<(i32, String)>,
    /// `verified_insns` from BPF_OBJ_GET_INFO_BY_FD.
    pub verified_insns: u32,
    /// The program after the verifier's rewrites.
    pub xlated: Vec<Insn>,
    /// The arm64 image the kernel's JIT produced (all functions, main program first);
    /// empty when the JIT did not run (the interpreter runs the program then).
    pub jited: Vec<u8>,
    /// Byte length of each jited function.
    pub jited_func_lens: Vec<u32>,
    /// Kernel address of each jited function (the guest runs with `kptr_restrict=0`):
    /// what pc-relative branches and calls in the image are relative to.
    pub jited_ksyms: Vec<u64>,
    /// With BTF line info: (xlated instruction, kernel address of its native code) for
    /// each line info record, as `BPF_OBJ_GET_INFO_BY_FD` pairs `line_info` with
    /// `jited_line_info`.
    pub jited_lines: Vec<(u32, u64)>,
    /// One per [`crate::Run`] of the job: the result or the errno of BPF_PROG_TEST_RUN.
    /// Empty when the program was not loaded.
    pub runs: Vec<Result<RunResult, i32>>,
    /// Guest time of BPF_PROG_LOAD (the verifier and the JIT; the first load only when a
    /// rejection was loaded again for its log), of the test runs, and of the whole job, as
    /// the guest's monotonic clock saw them under emulation: they show where a batch spends
    /// its time, nothing about arm64 speed.
    pub load_time: Duration,
    pub runs_time: Duration,
    pub job_time: Duration,
    /// With [`crate::Job::dump_maps`]: every element of every map after the runs, as
    /// (map index, key, value).
    pub dumps: Vec<(usize, Vec<u8>, Vec<u8>)>,
    /// Failures while reading maps back or putting them back: (run, or None after the
    /// runs; map index; errno).
    pub map_errors: Vec<(Option<usize>, usize, i32)>,
}

impl Outcome {
    fn new(name: String) -> Outcome {
        Outcome {
            name,
            verdict: Verdict::NotLoaded { reason: "the loader said nothing about this job".into() },
            log: String::new(),
            btf_error: None,
            verified_insns: 0,
            xlated: Vec::new(),
            jited: Vec::new(),
            jited_func_lens: Vec::new(),
            jited_ksyms: Vec::new(),
            jited_lines: Vec::new(),
            runs: Vec::new(),
            load_time: Duration::ZERO,
            runs_time: Duration::ZERO,
            job_time: Duration::ZERO,
            dumps: Vec::new(),
            map_errors: Vec::new(),
        }
    }

    pub(crate) fn crashed(name: String, reason: String) -> Outcome {
        let mut o = Outcome::new(name);
        o.verdict = Verdict::Crashed { reason };
        o
    }

    pub fn accepted(&self) -> bool {
        self.verdict == Verdict::Accepted
    }

    /// The jited image as 32-bit arm64 instruction words (little-endian).
    pub fn jited_words(&self) -> Vec<u32> {
        self.jited.chunks_exact(4).map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect()
    }
}

/// `EACCES (13)`: the errno's name where we know it.
pub fn errno_name(e: i32) -> String {
    let name = match e {
        1 => "EPERM",
        2 => "ENOENT",
        7 => "E2BIG",
        12 => "ENOMEM",
        13 => "EACCES",
        14 => "EFAULT",
        16 => "EBUSY",
        22 => "EINVAL",
        28 => "ENOSPC",
        95 => "EOPNOTSUPP",
        524 => "ENOTSUPP",
        _ => return format!("errno {e}"),
    };
    format!("{name} ({e})")
}

fn unhex(s: &str) -> Result<Vec<u8>, String> {
    if s == "-" {
        return Ok(Vec::new());
    }
    if !s.len().is_multiple_of(2) {
        return Err(format!("odd-length hex field ({} digits)", s.len()));
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).map_err(|_| format!("bad hex digits `{}`", &s[i..i + 2])))
        .collect()
}

fn text(s: &str) -> Result<String, String> {
    Ok(String::from_utf8_lossy(&unhex(s)?).into_owned())
}

/// What the console shows, parsed.
pub(crate) enum Parsed {
    /// `KOPS end` reached: the outcomes, and the kernel symbols found.
    Done(Vec<Outcome>, BTreeMap<String, u64>),
    /// The loader stopped with a message (`KOPS fatal`).
    Fatal(String),
    /// The console stops before `KOPS end`: whether the loader started at all, and the
    /// outcomes of the jobs it finished (the first ones of the batch).
    Incomplete { started: bool, done: Vec<Outcome> },
}

fn num<T: std::str::FromStr>(f: Option<&&str>, what: &str) -> Result<T, String> {
    let s = f.ok_or_else(|| format!("missing {what}"))?;
    s.parse().map_err(|_| format!("bad {what} `{s}`"))
}

/// Parses the console output of a batch of `jobs`. A malformed `KOPS` line is an error
/// naming it (a line split by kernel messages would be one).
pub(crate) fn parse(console: &str, jobs: &[Job]) -> Result<Parsed, String> {
    let mut outs: Vec<Outcome> = jobs.iter().map(|j| Outcome::new(j.name.clone())).collect();
    let mut started = false;
    let mut done = 0usize;
    let mut symbols = BTreeMap::new();
    for (lineno, raw) in console.lines().enumerate() {
        let line = raw.trim_end_matches('\r');
        let Some(rest) = line.strip_prefix("KOPS ") else { continue };
        let f: Vec<&str> = rest.split(' ').collect();
        let bad = |e: String| format!("console line {}: {e}: `{}`", lineno + 1, shorten(line));
        match f[0] {
            "begin" => {
                let n: usize = num(f.get(1), "job count").map_err(bad)?;
                if n != jobs.len() {
                    return Err(bad(format!("the loader read {n} jobs, the batch has {}", jobs.len())));
                }
                started = true;
                continue;
            }
            "end" => return Ok(Parsed::Done(outs, symbols)),
            "sym" => {
                let name = f.get(1).ok_or_else(|| bad("missing symbol name".into()))?;
                let addr =
                    f.get(2).and_then(|a| u64::from_str_radix(a, 16).ok()).ok_or_else(|| bad("bad address".into()))?;
                symbols.entry(name.to_string()).or_insert(addr);
                continue;
            }
            "fatal" => return Ok(Parsed::Fatal(text(f.get(1).copied().unwrap_or("-")).map_err(bad)?)),
            _ => {}
        }
        let j: usize = num(f.get(1), "job index").map_err(bad)?;
        let o = outs.get_mut(j).ok_or_else(|| bad(format!("job {j} is not in the batch")))?;
        let field = |i: usize| f.get(i).copied().ok_or_else(|| bad(format!("missing field {i}")));
        match f[0] {
            "job" => {}
            "btf" if field(2)? == "err" => {
                o.btf_error = Some((num(f.get(3), "errno").map_err(bad)?, text(field(4)?).map_err(bad)?));
            }
            "btf" => {}
            "map" if field(3)? == "err" => {
                let m: usize = num(f.get(2), "map index").map_err(bad)?;
                let e: i32 = num(f.get(4), "errno").map_err(bad)?;
                let name = jobs.get(j).and_then(|job| job.maps.get(m)).map(|x| x.name.as_str()).unwrap_or("?");
                o.verdict =
                    Verdict::NotLoaded { reason: format!("creating map {m} (`{name}`) failed: {}", errno_name(e)) };
            }
            "map" => {}
            "load" if field(2)? == "ok" => o.verdict = Verdict::Accepted,
            "load" => {
                let e: i32 = num(f.get(3), "errno").map_err(bad)?;
                o.verdict = Verdict::Rejected {
                    errno: e,
                    message: format!("{} (the verifier log is empty)", errno_name(e)),
                    insn: None,
                };
            }
            "log" => {
                o.log = text(field(2)?).map_err(bad)?;
                if let Verdict::Rejected { message, insn, .. } = &mut o.verdict {
                    let m = kops_kernel::parse_log(&o.log);
                    if !m.message.is_empty() {
                        *message = m.message;
                    }
                    *insn = m.insn;
                }
            }
            "info" => o.verified_insns = num(f.get(2), "verified_insns").map_err(bad)?,
            "infoerr" => {
                let e: i32 = num(f.get(2), "errno").map_err(bad)?;
                return Err(bad(format!("BPF_OBJ_GET_INFO_BY_FD failed: {}", errno_name(e))));
            }
            "xlated" => {
                o.xlated =
                    kops_isa::slots_from_bytes(&unhex(field(2)?).map_err(bad)?).map_err(|e| bad(e.to_string()))?
            }
            "jited" => o.jited = unhex(field(2)?).map_err(bad)?,
            "funclens" if field(2)? == "-" => {}
            "funclens" => {
                o.jited_func_lens = field(2)?
                    .split(',')
                    .map(|s| s.parse().map_err(|_| bad(format!("bad length `{s}`"))))
                    .collect::<Result<_, _>>()?
            }
            "lines" if field(2)? == "-" => {}
            "lines" => {
                o.jited_lines = field(2)?
                    .split(',')
                    .map(|s| {
                        let (i, a) = s.split_once(':').ok_or_else(|| bad(format!("bad line record `{s}`")))?;
                        match (i.parse(), u64::from_str_radix(a, 16)) {
                            (Ok(i), Ok(a)) => Ok((i, a)),
                            _ => Err(bad(format!("bad line record `{s}`"))),
                        }
                    })
                    .collect::<Result<_, _>>()?
            }
            "ksyms" if field(2)? == "-" => {}
            "ksyms" => {
                o.jited_ksyms = field(2)?
                    .split(',')
                    .map(|s| u64::from_str_radix(s, 16).map_err(|_| bad(format!("bad address `{s}`"))))
                    .collect::<Result<_, _>>()?
            }
            "run" if field(3)? == "ok" => {
                let r = RunResult {
                    retval: num(f.get(4), "retval").map_err(bad)?,
                    data_out: unhex(field(5)?).map_err(bad)?,
                    ctx_out: unhex(field(6)?).map_err(bad)?,
                    maps: Vec::new(),
                };
                o.runs.push(Ok(r));
            }
            "run" => o.runs.push(Err(num(f.get(4), "errno").map_err(bad)?)),
            "dump" => {
                let m: usize = num(f.get(2), "map index").map_err(bad)?;
                o.dumps.push((m, unhex(field(3)?).map_err(bad)?, unhex(field(4)?).map_err(bad)?));
            }
            "rdump" => {
                let r: usize = num(f.get(2), "run index").map_err(bad)?;
                let m: usize = num(f.get(3), "map index").map_err(bad)?;
                let elem = (m, unhex(field(4)?).map_err(bad)?, unhex(field(5)?).map_err(bad)?);
                match o.runs.get_mut(r) {
                    Some(Ok(run)) => run.maps.push(elem),
                    _ => return Err(bad(format!("maps of run {r}, which did not run"))),
                }
            }
            "dumperr" => {
                let r: i64 = num(f.get(2), "run index").map_err(bad)?;
                let m: usize = num(f.get(3), "map index").map_err(bad)?;
                let e: i32 = num(f.get(4), "errno").map_err(bad)?;
                o.map_errors.push((usize::try_from(r).ok(), m, e));
            }
            "time" => {
                let us = |i: usize, what: &str| num::<u64>(f.get(i), what).map(Duration::from_micros).map_err(bad);
                o.load_time = us(2, "load time")?;
                o.runs_time = us(3, "run time")?;
                o.job_time = us(4, "job time")?;
            }
            "done" => done = j + 1,
            other => return Err(bad(format!("unknown record `{other}`"))),
        }
    }
    outs.truncate(done);
    Ok(Parsed::Incomplete { started, done: outs })
}

fn shorten(s: &str) -> String {
    if s.len() <= 120 {
        s.to_string()
    } else {
        let mut end = 120;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        format!("{}... ({} bytes)", &s[..end], s.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jobs(n: usize) -> Vec<Job> {
        (0..n).map(|i| Job::new(format!("p{i}"), 6, vec![Insn::exit()])).collect()
    }

    #[test]
    fn parses_a_batch() {
        let console = "boot noise\r\n\nKOPS begin 2 6.12 1\nKOPS sym __bpf_call_base ffff80008001a2b0\nKOPS job 0\nKOPS load 0 ok\nKOPS info 0 2 1\n\
            KOPS xlated 0 b70000002a0000009500000000000000\nKOPS jited 0 c9030091\nKOPS funclens 0 4\nKOPS lines 0 0:ffff800080001000,1:ffff800080001024\nKOPS ksyms 0 ffff800080001000\n\
            KOPS run 0 0 ok 42 0000 -\nKOPS rdump 0 0 1 00000000 07\nKOPS dumperr 0 -1 2 1\nKOPS done 0\nKOPS job 1\nKOPS load 1 err 13\n\
            KOPS log 1 303a2052313d6374782829205231303d6670300a303a202839352920657869740a52302021726561645f6f6b0a70726f636573736564203120696e736e7320286c696d6974203130303030303029206d61785f7374617465735f7065725f696e736e203020746f74616c5f7374617465732030207065616b5f7374617465732030206d61726b5f7265616420300a\nKOPS done 1\nKOPS end\n";
        let Parsed::Done(o, syms) = parse(console, &jobs(2)).unwrap() else { panic!() };
        assert_eq!(syms["__bpf_call_base"], 0xffff80008001a2b0);
        assert!(o[0].accepted());
        assert_eq!(o[0].xlated.len(), 2);
        assert_eq!(o[0].jited_words(), [0x910003c9]);
        assert_eq!(o[0].jited_ksyms, [0xffff800080001000]);
        assert_eq!(o[0].jited_lines, [(0, 0xffff800080001000), (1, 0xffff800080001024)]);
        assert_eq!(
            o[0].runs,
            [Ok(RunResult { retval: 42, data_out: vec![0, 0], ctx_out: vec![], maps: vec![(1, vec![0; 4], vec![7])] })]
        );
        assert_eq!(o[0].map_errors, [(None, 2, 1)]);
        assert_eq!(o[1].verdict, Verdict::Rejected { errno: 13, message: "R0 !read_ok".into(), insn: Some(0) });
    }

    #[test]
    fn bad_lines_are_errors() {
        for c in [
            "KOPS begin 1\nKOPS jited 0 abc\n",
            "KOPS begin 1\nKOPS run 7 0 ok 1 - -\n",
            "KOPS begin 3\n",
            "KOPS zzz 0\n",
        ] {
            assert!(parse(c, &jobs(1)).is_err(), "{c}");
        }
        let Parsed::Incomplete { started: true, done } = parse("KOPS begin 1\nKOPS job 0\n", &jobs(1)).unwrap() else {
            panic!()
        };
        assert!(done.is_empty());
        let two = "KOPS begin 2\nKOPS job 0\nKOPS load 0 ok\nKOPS done 0\nKOPS job 1\n";
        let Parsed::Incomplete { started: true, done } = parse(two, &jobs(2)).unwrap() else { panic!() };
        assert_eq!(done.len(), 1);
        assert!(done[0].accepted());
        let Parsed::Fatal(m) = parse("KOPS fatal 6869\n", &jobs(1)).unwrap() else { panic!() };
        assert_eq!(m, "hi");
    }
}
