//! `kops verify`: load each program of an object into the running kernel's verifier.

use kops_isa::Insn;
use kops_kernel::{KernelBtf, KernelError, MapSet};
use kops_object::{Object, Program};

/// Load the programs of an object into the kernel verifier.
///
/// Load the programs of an eBPF object into the kernel verifier and report, per program,
/// `verified` or `rejected` with the verifier's message and the instruction it points at.
///
/// Maps (including global data, .rodata frozen) are created as libbpf would, the object's
/// BTF is loaded with func_info/line_info, and tracing programs get their attach target.
/// Needs root (or CAP_BPF + CAP_PERFMON + CAP_NET_ADMIN).
///
/// Exit status: 0 all verified, 1 a program was rejected (or the object could not be
/// loaded), 2 usage error, 3 the kernel refused bpf(2) (no privilege, BPF disabled).
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Object file (clang -target bpf output).
    file: String,
    /// Verify only this program (function name).
    #[arg(long)]
    prog: Option<String>,
    /// Verifier log level: 0 = only on rejection (default), 1 = instruction trace,
    /// 2 = verbose states, 4 = statistics (may be combined, e.g. 5). The full log is
    /// printed when the level is not 0.
    #[arg(long, default_value_t = 0)]
    log_level: u32,
    /// Program type for programs whose section name gives none (legacy names such as
    /// `redirect_xmit`): xdp, tc, socket, cgroup_skb, lwt_xmit, ... (an unknown name lists them all).
    #[arg(long = "type", value_name = "TYPE")]
    prog_type: Option<String>,
}

pub const EXIT_REJECTED: u8 = 1;
pub const EXIT_NO_KERNEL: u8 = 3;

/// The program named `name`, or all of the object's programs without one.
pub(crate) fn select_programs<'o>(obj: &'o Object, name: Option<&str>) -> Result<Vec<&'o Program>, String> {
    let Some(n) = name else { return Ok(obj.programs.iter().collect()) };
    match obj.program(n) {
        Some(p) => Ok(vec![p]),
        None => Err(obj.missing_program(n)),
    }
}

/// The object's maps, created in the kernel; None, with the reason printed under the
/// subcommand's name `cmd`, where there is no kernel to use (exit with [`EXIT_NO_KERNEL`]).
pub(crate) fn kernel_maps(
    cmd: &str,
    maps: &[kops_object::MapDef],
    btf: Option<&KernelBtf>,
) -> Result<Option<MapSet>, KernelError> {
    let unavailable = |e: KernelError| {
        eprintln!("kops {cmd}: {e}");
        Ok(None)
    };
    if let Err(e) = kops_kernel::available() {
        return unavailable(e);
    }
    match MapSet::create_with_btf(maps, btf) {
        Ok(m) => Ok(Some(m)),
        Err(e @ KernelError::KernelUnavailable(_)) => unavailable(e),
        Err(e) => Err(e),
    }
}

pub fn run(a: Args) -> anyhow::Result<u8> {
    let mut obj = match Object::load(&a.file) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("kops verify: {e}");
            return Ok(1);
        }
    };
    if let Err(e) = obj.resolve_prog_types(a.prog_type.as_deref()) {
        eprintln!("kops verify: {e}");
        return Ok(1);
    }
    // CO-RE relocations and externs are resolved against this kernel first.
    let (obj, poisoned) = if obj.needs_relocation() {
        match kops_kernel::core::relocate_explained(&obj) {
            Ok(o) => o,
            Err(e @ KernelError::KernelUnavailable(_)) => {
                eprintln!("kops verify: {e}");
                return Ok(EXIT_NO_KERNEL);
            }
            Err(e) => {
                eprintln!("kops verify: {e}");
                return Ok(1);
            }
        }
    } else {
        (obj, Vec::new())
    };
    let progs = match select_programs(&obj, a.prog.as_deref()) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("kops verify: {}: {e}", a.file);
            return Ok(1);
        }
    };
    if let Err(e) = kops_kernel::available() {
        eprintln!("kops verify: {e}");
        return Ok(EXIT_NO_KERNEL);
    }
    let btf = match KernelBtf::for_object(&obj) {
        Ok(b) => b,
        Err(e) => {
            // Without BTF the kernel still verifies the code (static subprograms only);
            // say so rather than failing the whole object.
            println!("{}: note: {e}; verifying without BTF (no func_info/line_info)", a.file);
            None
        }
    };
    let maps = match kernel_maps("verify", &obj.maps, btf.as_ref()) {
        Ok(Some(m)) => m,
        Ok(None) => return Ok(EXIT_NO_KERNEL),
        Err(e) => {
            eprintln!("kops verify: {}: {e}", a.file);
            return Ok(1);
        }
    };
    let mut rejected = 0;
    let mut sites_lowered = 0;
    for p in &progs {
        match verify_one(&obj, p, &maps, btf.as_ref(), a.log_level, &poisoned) {
            Ok(Verdict::Verified { log, note, lowered }) => {
                println!("{}: verified{}", p.name, processed(&log));
                if let Some(n) = lowered {
                    println!("  {n}");
                    sites_lowered += 1;
                }
                if let Some(n) = note {
                    println!("  note: {n}");
                }
                if a.log_level != 0 {
                    print_log(&log);
                }
            }
            Ok(Verdict::Rejected(text)) => {
                rejected += 1;
                println!("{}: rejected", p.name);
                print!("{text}");
            }
            Err(e @ KernelError::KernelUnavailable(_)) => {
                eprintln!("kops verify: {e}");
                return Ok(EXIT_NO_KERNEL);
            }
            Err(e) => {
                rejected += 1;
                println!("{}: rejected", p.name);
                println!("  {e}");
            }
        }
    }
    // Programs our loader could not build never reach the kernel: reported, and a failure.
    let broken = super::broken_programs(&obj, a.prog.as_deref());
    for b in &broken {
        println!("{}: not loaded", b.name);
        println!("  {}", b.error);
    }
    let not_loaded = if broken.is_empty() { String::new() } else { format!(", {} not loaded", broken.len()) };
    let with_sites = if sites_lowered > 0 { format!(" ({sites_lowered} with kinsn sites, verified lowered)") } else { String::new() };
    println!("{} programs, {} verified{with_sites}, {} rejected{not_loaded}", progs.len() + broken.len(), progs.len() - rejected, rejected);
    Ok(if rejected > 0 || !broken.is_empty() { EXIT_REJECTED } else { 0 })
}

enum Verdict {
    Verified { log: String, note: Option<String>, lowered: Option<String> },
    /// Rendered report lines (indented, newline-terminated).
    Rejected(String),
}

/// What the kernel is given for a program (sites lowered with the einsn registry); see
/// [`kops_kernel::kernel_form`]. `kops verify`, `kops diff` and `kops run --runtime
/// kernel` load this.
pub(crate) fn kernel_form(p: &Program) -> Result<kops_kernel::KernelForm, String> {
    kops_kernel::kernel_form(p, Some(&kops_einsn::registry()))
}

/// How a lowered slot reads in terms of the original program: its original slot and, in
/// a proof sequence, the site it belongs to.
fn orig_note(l: &kops_kinsn::Lowered, orig: &Program, i: usize) -> String {
    let Some(o) = l.orig_slot(i) else { return String::new() };
    match l.region_at(i) {
        Some(r) => {
            let site = kops_kinsn::Site { pc: r.orig_pc, op_id: r.op_id, payload: r.payload };
            let what = kops_kinsn::describe_site(&kops_einsn::registry(), &site).unwrap_or_else(|e| e.to_string());
            format!(
                "  = original insn {o}: slot {} of the proof sequence of the kinsn site at insn {} ({what})\n",
                i - r.start,
                r.orig_pc
            )
        }
        None => format!("  = original insn {o}: {}\n", describe(&orig.insns, o)),
    }
}

fn verify_one(
    obj: &Object,
    p: &Program,
    maps: &MapSet,
    btf: Option<&KernelBtf>,
    log_level: u32,
    poisoned: &[kops_kernel::core::Poisoned],
) -> Result<Verdict, KernelError> {
    let kf = match kernel_form(p) {
        Ok(k) => k,
        Err(msg) => return Ok(Verdict::Rejected(format!("  {msg}\n"))),
    };
    let insns = &kf.prog.insns;
    let lowered_note = kf.lowered.as_ref().map(|l| {
        format!(
            "{} kinsn site(s) lowered to proof sequences ({} -> {} slots); the verifier accepted the lowered program",
            l.regions.len(),
            l.orig_len,
            l.insns.len()
        )
    });
    // Statistics (level 4) cost nothing and give the `N insns processed` line; on a
    // rejection the kernel layer loads again at level 1 for the reason.
    match kops_kernel::load_object_program(obj, &kf.prog, insns, maps, btf, log_level | 4) {
        Ok(l) => Ok(Verdict::Verified { log: l.log.clone(), note: l.attach_note.clone(), lowered: lowered_note }),
        Err(KernelError::Rejected { errno_name, message, insn, log, .. }) => {
            let mut s = String::new();
            for line in message.lines() {
                s.push_str(&format!("  {line}\n"));
            }
            if let Some(l) = &kf.lowered {
                s.push_str(&format!(
                    "  (the program's {} kinsn site(s) were lowered to proof sequences; insn numbers below are of the lowered program)\n",
                    l.regions.len()
                ));
            }
            if let Some(i) = insn {
                s.push_str(&format!("  at insn {i}: {}\n", describe(insns, i)));
                // Function offsets in the original layout (what `kops disasm` shows).
                let o = kf.lowered.as_ref().and_then(|l| l.orig_slot(i)).unwrap_or(i);
                if let Some(n) = insns.get(i).and_then(poison_note) {
                    s.push_str(&format!("  note: {n}\n"));
                    if let Some(x) = poisoned.iter().find(|x| x.program == p.name && x.slot == o) {
                        s.push_str(&format!("  note: {x}\n"));
                    }
                }
                if let Some(l) = &kf.lowered {
                    s.push_str(&orig_note(l, p, i));
                }
                if let Some(sp) = p.subprog_at(o) {
                    s.push_str(&format!("  in function `{}` (+{})\n", sp.name, o - sp.start));
                }
                if let Some(li) = kf.prog.line_info.iter().rfind(|l| l.insn_off as usize <= i) {
                    s.push_str(&format!(
                        "  source: {}:{}: {}\n",
                        li.file,
                        li.line(),
                        li.source_line.trim()
                    ));
                }
            }
            s.push_str(&format!("  (BPF_PROG_LOAD failed with {errno_name})\n"));
            if log_level != 0 {
                s.push_str("  verifier log:\n");
                for l in log.lines() {
                    s.push_str(&format!("    {l}\n"));
                }
            }
            Ok(Verdict::Rejected(s))
        }
        Err(e) => Err(e),
    }
}

/// What libbpf meant by a poisoned call (see kops_kernel::core), if `i` is one.
fn poison_note(i: &Insn) -> Option<String> {
    if !i.is_call() || i.src != 0 {
        return None;
    }
    match i.imm {
        0xbad2310 => Some("libbpf poisoned this instruction: a CO-RE relocation failed (the field, type or enum value does not exist in this kernel's BTF) and the code is reachable".into()),
        2002000000..=2002999999 => Some("libbpf poisoned this call: a weak kfunc this kernel does not have is called on a reachable path".into()),
        _ => None,
    }
}

/// Our disassembly of slot `i` (llvm-objdump syntax).
pub fn describe(insns: &[Insn], i: usize) -> String {
    if i < insns.len() {
        kops_isa::disasm::format(insns, i)
    } else {
        format!("(no slot {i}: the program has {} slots)", insns.len())
    }
}

fn processed(log: &str) -> String {
    log.lines()
        .find(|l| l.starts_with("processed "))
        .and_then(|l| l.split_whitespace().nth(1))
        .map(|n| format!(" ({n} insns processed)"))
        .unwrap_or_default()
}

fn print_log(log: &str) {
    println!("  verifier log:");
    for l in log.lines() {
        println!("    {l}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(name: &str) -> String {
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../kernel/tests/data")
            .join(name)
            .display()
            .to_string()
    }

    fn run(v: &[&str]) -> u8 {
        crate::run_cli(v)
    }

    #[test]
    fn exit_statuses() {
        // usage errors and unreadable input do not need the kernel
        assert_eq!(run(&["kops", "verify"]), 2);
        assert_eq!(run(&["kops", "verify", "--help"]), 0);
        assert_eq!(run(&["kops", "verify", "/nonexistent.o"]), 1);
        kops_kernel::require_kernel!();
        let obj = data("reject.bpf.o");
        assert_eq!(run(&["kops", "verify", &obj]), EXIT_REJECTED);
        assert_eq!(run(&["kops", "verify", &obj, "--prog", "ok"]), 0);
        assert_eq!(run(&["kops", "verify", &obj, "--prog", "bad", "--log-level", "1"]), EXIT_REJECTED);
        assert_eq!(run(&["kops", "verify", &obj, "--prog", "nope"]), 1);
    }

    #[test]
    fn core_relocations_and_externs() {
        kops_kernel::require_kernel!();
        // CO-RE field offsets, .kconfig externs and kfuncs: see core_extern.bpf.c.
        assert_eq!(run(&["kops", "verify", &data("core_extern.bpf.o")]), 0);
    }

    #[test]
    fn rejection_points_at_the_faulting_slot() {
        kops_kernel::require_kernel!();
        let obj = Object::load(data("reject.bpf.o")).unwrap();
        let p = obj.program("bad").unwrap();
        let maps = MapSet::create(&obj.maps).unwrap();
        let btf = KernelBtf::for_object(&obj).unwrap();
        match kops_kernel::load_object_program(&obj, p, &p.insns, &maps, btf.as_ref(), 0) {
            Err(KernelError::Rejected { insn, message, .. }) => {
                // llvm-objdump-19: <bad> is `r1 = *(u32 *)(r1 + 0x0)`, `r0 = *(u8 *)(r1 + 0x3)`, exit
                assert_eq!(insn, Some(1));
                assert_eq!(describe(&p.insns, 1), "r0 = *(u8 *)(r1 + 0x3)");
                assert!(message.starts_with("invalid access to packet"), "{message}");
            }
            other => panic!("expected a rejection, got {other:?}"),
        }
    }
}
