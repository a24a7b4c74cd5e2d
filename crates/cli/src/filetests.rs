//! Text filetests (`tests/filetests/**/*.test` at the repository root), in the style of
//! Cranelift's: a program in the conformance suite's assembly goes in, and the expected
//! output is written below it, so a change in what the recognizer finds or what an emit
//! produces shows up in review as a text diff.
//!
//! ```text
//! ; what the test shows (free text)
//! ; test: inspect            inspect: the recognizer's site lines (`kops inspect`)
//! ;                          native: per site, the op and its x86-64 bytes/disassembly
//! ; policy: all              auto (default), all or none
//! ; features: -bmi2,-movbe   native only: CPU features masked (default: all present)
//! -- asm
//! ...
//! -- expect
//! ...
//! ```
//!
//! `KOPS_BLESS=1 cargo test -p kops-cli filetests` rewrites the `-- expect` sections from
//! what the code produces now; review the diff before committing it.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use kops_object::{ProgType, Program, Subprog};
use kops_recognize::{Mode, Pass, Policy};

struct FileTest {
    header: Vec<String>,
    asm: String,
    expect: String,
}

fn parse(text: &str) -> Result<FileTest, String> {
    let mut header = Vec::new();
    let (mut asm, mut expect) = (String::new(), String::new());
    let mut section = None;
    for line in text.lines() {
        match line.trim_end() {
            "-- asm" => section = Some(&mut asm),
            "-- expect" => section = Some(&mut expect),
            l => match &mut section {
                Some(s) => {
                    s.push_str(l);
                    s.push('\n');
                }
                None => header.push(l.to_string()),
            },
        }
    }
    if asm.trim().is_empty() {
        return Err("no `-- asm` section".into());
    }
    Ok(FileTest { header, asm, expect })
}

fn option<'a>(header: &'a [String], key: &str) -> Option<&'a str> {
    header.iter().find_map(|l| l.strip_prefix(';')?.trim().strip_prefix(key)?.strip_prefix(':').map(str::trim))
}

fn program(asm: &str) -> Result<Program, String> {
    let insns = kops_isa::asm::assemble(asm).map_err(|e| format!("assembly: {e}"))?;
    Ok(Program {
        name: "filetest".into(),
        section: "xdp".into(),
        prog_type: ProgType::Xdp,
        prog_type_id: ProgType::Xdp.kernel_id(),
        expected_attach_type: 0,
        subprogs: vec![Subprog { name: "filetest".into(), start: 0, len: insns.len(), section: "xdp".into(), sec_start: 0 }],
        insns,
        func_info: Vec::new(),
        line_info: Vec::new(),
    })
}

fn policy(t: &FileTest) -> Result<Policy, String> {
    let mode = Mode::parse(option(&t.header, "policy").unwrap_or("auto"))?;
    Ok(Policy { mode, passes: Pass::ALL.to_vec() })
}

/// The recognizer's site lines, as `kops inspect` prints them, and its rejections.
fn inspect(t: &FileTest) -> Result<String, String> {
    let r = kops_recognize::run_program(&program(&t.asm)?, &policy(t)?).map_err(|e| e.to_string())?;
    let mut out = String::new();
    for s in &r.report.sites {
        writeln!(out, "{}: {}", s.pass, crate::cmd::inspect::site_line(s)).unwrap();
    }
    for x in &r.report.rejected {
        writeln!(out, "rejected {} [{}, {}): {}", x.pass, x.start, x.end, x.reason).unwrap();
    }
    writeln!(out, "{} -> {} slots", r.report.insns_before, r.report.insns_after).unwrap();
    Ok(out)
}

/// Per site of the rewritten program: the op and what the JIT emits for it.
fn native(t: &FileTest) -> Result<String, String> {
    let r = kops_recognize::run_program(&program(&t.asm)?, &policy(t)?).map_err(|e| e.to_string())?;
    let mut features = kops_x86::CpuFeatures::all();
    for f in option(&t.header, "features").unwrap_or("").split(',').map(str::trim).filter(|f| !f.is_empty()) {
        let name = f.strip_prefix('-').ok_or_else(|| format!("features: `{f}` is not a -feature"))?;
        let feat = kops_x86::Feature::from_name(name).ok_or_else(|| format!("features: unknown feature `{name}`"))?;
        features = features.without(feat);
    }
    let registry = kops_einsn::registry();
    let starts: Vec<usize> = r.program.subprogs.iter().map(|s| s.start).collect();
    let (lowered, plans) = kops_kinsn::plan_x86(&r.program.insns, &starts, &[], &registry, features, &kops_jit::REGMAP, kops_jit::AUX_REG)
        .map_err(|e| e.to_string())?;
    let mut out = String::new();
    for (reg, plan) in lowered.regions.iter().zip(&plans) {
        let site = kops_kinsn::Site { pc: reg.orig_pc, op_id: reg.op_id, payload: reg.payload };
        let what = kops_kinsn::describe_site(&registry, &site).map_err(|e| e.to_string())?;
        match &plan.native {
            Some(code) => {
                writeln!(out, "{}: {what}", reg.orig_pc).unwrap();
                for i in kops_jit_tools::disasm::disassemble(code, 0) {
                    let bytes: Vec<String> = i.bytes.iter().map(|b| format!("{b:02x}")).collect();
                    writeln!(out, "    {:<30} {}", bytes.join(" "), i.text).unwrap();
                }
            }
            None => writeln!(out, "{}: {what}  [fallback: {} proof slots]", reg.orig_pc, reg.len).unwrap(),
        }
    }
    Ok(out)
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/filetests")
}

fn files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let p = e.unwrap().path();
        if p.is_dir() {
            files(&p, out);
        } else if p.extension().is_some_and(|x| x == "test") {
            out.push(p);
        }
    }
}

#[test]
fn filetests() {
    let mut all = Vec::new();
    files(&root(), &mut all);
    all.sort();
    assert!(all.len() >= 10, "filetests in {}: {}", root().display(), all.len());
    let bless = std::env::var("KOPS_BLESS").is_ok_and(|v| v == "1");
    let mut failures = Vec::new();
    for f in &all {
        let text = std::fs::read_to_string(f).unwrap();
        let got = parse(&text).and_then(|t| {
            let out = match option(&t.header, "test") {
                Some("inspect") => inspect(&t)?,
                Some("native") => native(&t)?,
                other => return Err(format!("`; test:` must be inspect or native, not {other:?}")),
            };
            Ok((t, out))
        });
        match got {
            Err(e) => failures.push(format!("{}: {e}", f.display())),
            Ok((t, out)) if out != t.expect => {
                if bless {
                    let head = text.split("-- expect\n").next().unwrap_or(&text);
                    let head = if text.contains("-- expect\n") { head.to_string() } else { format!("{}\n", text.trim_end()) };
                    std::fs::write(f, format!("{head}-- expect\n{out}")).unwrap();
                    println!("blessed {}", f.display());
                } else {
                    failures.push(format!("{}:\n--- expected\n{}--- got\n{}", f.display(), t.expect, out));
                }
            }
            Ok(_) => {}
        }
    }
    assert!(failures.is_empty(), "{} of {} filetests differ (KOPS_BLESS=1 to accept):\n{}", failures.len(), all.len(), failures.join("\n"));
}

#[test]
fn a_wrong_expectation_fails() {
    let t = parse("; test: inspect\n-- asm\nmov %r0, 1\nexit\n-- expect\nnothing like this\n").unwrap();
    assert_ne!(inspect(&t).unwrap(), t.expect);
    assert!(parse("; test: inspect\n").is_err());
    assert!(native(&parse("; test: native\n; features: bmi2\n-- asm\nexit\n").unwrap()).is_err());
}
