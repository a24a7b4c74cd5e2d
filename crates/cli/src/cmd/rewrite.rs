//! `kops rewrite FILE.o -o OUT.o`: rewrite an object's programs into kinsn sites.

use anyhow::Context;
use kops_recognize::{rewrite_object, write_object};

#[derive(clap::Args, Debug)]
#[command(about = "rewrite an object's programs into kinsn sites and write a new ELF object")]
pub struct Args {
    /// The .bpf.o object.
    file: String,
    /// Output object.
    #[arg(short, long)]
    output: String,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    sel: super::inspect::SiteSelection,
}

pub fn run(a: Args) -> anyhow::Result<u8> {
    let policy = a.sel.policy()?;
    let bytes = std::fs::read(&a.file).with_context(|| format!("reading {}", a.file))?;
    let obj = kops_object::Object::parse(&bytes, &a.file).with_context(|| format!("loading {}", a.file))?;
    super::note_broken("rewrite", &obj, None);
    let (new, rep, maps) = rewrite_object(&obj, &policy).with_context(|| a.file.clone())?;
    let out = write_object(&bytes, &obj, &new, &maps).map_err(anyhow::Error::msg).with_context(|| format!("writing {}", a.output))?;
    // Read the result back: it must load, and carry exactly the rewritten programs.
    let back = kops_object::Object::parse(&out, &a.output).with_context(|| format!("re-loading the written {}", a.output))?;
    for p in &new.programs {
        let q = back
            .program(&p.name)
            .ok_or_else(|| anyhow::anyhow!("program `{}` is missing from the written object", p.name))?;
        if q.insns != p.insns {
            anyhow::bail!("program `{}` reads back different from what was rewritten", p.name);
        }
    }
    std::fs::write(&a.output, &out).with_context(|| format!("writing {}", a.output))?;
    use super::inspect::{emit, json_report, write_report};
    if a.json {
        let mut v = json_report(&rep);
        if let Some(o) = v.as_object_mut() {
            o.insert("output".into(), a.output.clone().into());
        }
        let text = serde_json::to_string_pretty(&v)?;
        emit(|o| writeln!(o, "{text}"))?;
    } else {
        emit(|o| {
            write_report(o, &rep, false)?;
            writeln!(o, "rewrote {} of {} sites; wrote {} ({} bytes)", rep.rewritten(), rep.total_sites(), a.output, out.len())
        })?;
    }
    Ok(0)
}
