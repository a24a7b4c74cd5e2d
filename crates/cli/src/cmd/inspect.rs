//! `kops inspect FILE.o`: list the idiom sites the recognizer finds, per program and pass.

use anyhow::Context;
use kops_recognize::{rewrite_object, Mode, ObjectReport, Pass, Policy};
use std::io::Write;

/// Which passes run and which of their sites are rewritten (shared by `inspect` and `rewrite`).
#[derive(clap::Args, Debug)]
pub(crate) struct SiteSelection {
    /// Comma-separated passes to run (rotate,select,extract,endian,popcount,bulk,prefetch,wideload; or all).
    #[arg(long, default_value = "all")]
    passes: String,
    /// Which sites to rewrite: auto (static cost model), all, none.
    #[arg(long, default_value = "auto")]
    policy: String,
}

impl SiteSelection {
    pub(crate) fn policy(&self) -> anyhow::Result<Policy> {
        parse_policy(&self.passes, &self.policy)
    }
}

#[derive(clap::Args, Debug)]
#[command(about = "list the idiom sites the recognizer finds in an object's programs")]
pub struct Args {
    /// The .bpf.o object.
    file: String,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    sel: SiteSelection,
    /// Also list candidates that failed a safety check, with the reason.
    #[arg(long)]
    rejected: bool,
}

fn parse_policy(passes: &str, policy: &str) -> anyhow::Result<Policy> {
    let passes = Pass::parse_list(passes).map_err(anyhow::Error::msg)?;
    let mode = Mode::parse(policy).map_err(anyhow::Error::msg)?;
    Ok(Policy { mode, passes })
}

/// One site of the text report.
pub(crate) fn site_line(s: &kops_recognize::SiteReport) -> String {
    format!(
        "[{}, {}) {}  {}  {} native {} -> {} (saving {})  {}: {}",
        s.start,
        s.end,
        s.line.as_deref().unwrap_or("-"),
        s.op,
        if s.rewrite { "REWRITE" } else { "keep" },
        s.native_before,
        s.native_after,
        s.saving,
        if s.rewrite { "because" } else { "reason" },
        s.reason
    )
}

/// Text report; the last line is `S sites in P programs`.
pub(crate) fn write_report(out: &mut dyn Write, rep: &ObjectReport, show_rejected: bool) -> std::io::Result<()> {
    for p in &rep.programs {
        writeln!(
            out,
            "program {} (section {}): {} sites, {} rewritten, {} -> {} slots",
            p.name,
            p.section,
            p.sites.len(),
            p.sites.iter().filter(|s| s.rewrite).count(),
            p.insns_before,
            p.insns_after
        )?;
        for pass in Pass::ALL {
            let sites: Vec<_> = p.sites.iter().filter(|s| s.pass == pass.name()).collect();
            if sites.is_empty() {
                continue;
            }
            writeln!(out, "  {pass}: {} sites", sites.len())?;
            for s in sites {
                writeln!(out, "    {}", site_line(s))?;
                if let Some(src) = &s.source {
                    writeln!(out, "        | {src}")?;
                }
            }
        }
        if show_rejected {
            for r in &p.rejected {
                writeln!(out, "  rejected {} [{}, {}): {}", r.pass, r.start, r.end, r.reason)?;
            }
        }
    }
    writeln!(out, "{} sites in {} programs", rep.total_sites(), rep.programs.len())
}

/// JSON report: the object report plus totals.
pub(crate) fn json_report(rep: &ObjectReport) -> serde_json::Value {
    let mut v = serde_json::to_value(rep).unwrap_or(serde_json::Value::Null);
    if let Some(o) = v.as_object_mut() {
        o.insert("sites".into(), rep.total_sites().into());
        o.insert("rewritten".into(), rep.rewritten().into());
        o.insert("program_count".into(), rep.programs.len().into());
    }
    v
}

/// Print, treating a closed pipe (`| head`) as the reader being done.
pub(crate) fn emit(f: impl FnOnce(&mut dyn Write) -> std::io::Result<()>) -> anyhow::Result<()> {
    let stdout = std::io::stdout();
    let mut lock = stdout.lock();
    match f(&mut lock).and_then(|_| lock.flush()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        r => Ok(r?),
    }
}

pub fn run(a: Args) -> anyhow::Result<u8> {
    let policy = a.sel.policy()?;
    let obj = kops_object::Object::load(&a.file).with_context(|| format!("loading {}", a.file))?;
    super::note_broken("inspect", &obj, None);
    let (_, rep, _) = rewrite_object(&obj, &policy).with_context(|| a.file.clone())?;
    if a.json {
        let text = serde_json::to_string_pretty(&json_report(&rep))?;
        emit(|o| writeln!(o, "{text}"))?;
    } else {
        emit(|o| write_report(o, &rep, a.rejected))?;
    }
    Ok(0)
}
