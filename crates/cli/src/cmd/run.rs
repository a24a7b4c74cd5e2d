//! `kops run FILE.o --prog NAME [--data FILE] [--repeat N] [--runtime interp]`: run one
//! program of an object and print r0 (and the output packet for XDP/tc programs).

use anyhow::{bail, Context, Result};
use kops_object::Object;
use kops_vm::{CtxKind, Engine, ProgInput, Vm};

/// println! that ignores a closed stdout (`kops ... | head`) instead of panicking.
macro_rules! outln {
    ($($t:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($t)*);
    }};
}

/// Run one program of an object on a runtime.
///
/// The program gets its input the way BPF_PROG_TEST_RUN gives it: for XDP and tc/socket
/// programs, --data is the packet starting at the Ethernet header (default: a built-in
/// 64-byte Ethernet/IPv4/UDP packet); for other program types it is the context bytes
/// (default: empty). Prints `r0 = ...` and, for XDP and skb programs, the output packet in
/// hex. Maps start with the object's initial contents (global data) and are dumped with
/// --dump-maps after the last run.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// The object file (e.g. bpf/out/parse_layers.bpf.o).
    file: std::path::PathBuf,
    /// Program (function) name; may be omitted when the object has one program.
    #[arg(long, short = 'p')]
    prog: Option<String>,
    /// File with the input bytes (raw binary).
    #[arg(long, short = 'd', conflicts_with = "data_hex")]
    data: Option<std::path::PathBuf>,
    /// The input bytes as hex (`0a0b0c...`, spaces allowed).
    #[arg(long)]
    data_hex: Option<String>,
    /// Context in (xdp_md / __sk_buff bytes) as hex, like BPF_PROG_TEST_RUN's ctx_in.
    #[arg(long)]
    ctx_hex: Option<String>,
    /// Run this many times on one context, like BPF_PROG_TEST_RUN's repeat (what a run
    /// leaves in the packet and maps is what the next sees), and print the mean time per run.
    #[arg(long, default_value_t = 1)]
    repeat: u64,
    /// Runtime: interp (the reference interpreter, checks every access), jit (our x86-64
    /// JIT; native code, so it runs only programs the kernel verifier accepts), kops (our
    /// JIT with kinsn dispatch: each site as its op's native instruction(s), proof sequence
    /// where the op or the CPU has none; an object without sites is first rewritten by the
    /// recognizer, policy auto, as `kops rewrite` does; verified like jit) or kernel (load
    /// into the running kernel and run with BPF_PROG_TEST_RUN; r0 is its low 32 bits) or
    /// cranelift (the whole program compiled by Cranelift, an optimizing compiler that is
    /// then trusted too; the object is first rewritten by the recognizer as for kops, and
    /// rotate/popcount sites become Cranelift's rotl/popcnt; verified like jit; prints the
    /// compile time). interp, jit and kernel run programs with kinsn sites lowered to their
    /// proof sequences.
    #[arg(long, default_value = "interp")]
    runtime: String,
    /// Target architecture of the native runtimes: x86_64 (run natively) or arm64 (`jit`
    /// only: our arm64 JIT, run in-process under the unicorn emulator; emulated time says
    /// nothing about arm64 speed).
    #[arg(long, default_value = "x86_64")]
    arch: String,
    /// Run on jit/kops WITHOUT the kernel verifier. A bad program then crashes or hangs
    /// this process. Prints a warning every time.
    #[arg(long)]
    unverified: bool,
    /// Instruction budget per run (interpreter).
    #[arg(long)]
    budget: Option<u64>,
    /// Print every data map's contents after the runs.
    #[arg(long)]
    dump_maps: bool,
    /// Program type for programs whose section name gives none (legacy names such as
    /// `redirect_xmit`): xdp, tc, socket, cgroup_skb, lwt_xmit, ... (an unknown name lists them all).
    #[arg(long = "type", value_name = "TYPE")]
    prog_type: Option<String>,
}

/// The engine for `--runtime NAME`. This is the dispatch point where the JIT engine
/// (`kops_vm::jit_engine`) and other runtimes plug in. interp and jit run programs with
/// kinsn sites lowered to their proof sequences (einsn registry); kops compiles the sites.
pub fn engine(name: &str) -> Result<Box<dyn Engine>> {
    use kops_vm::Lowering;
    match name {
        "interp" => Ok(Box::new(Lowering::new(kops_vm::interp::Interp, kops_einsn::registry()))),
        "jit" => Ok(Box::new(Lowering::new(kops_vm::jit_engine::JitEngine::new()?, kops_einsn::registry()))),
        "kops" => Ok(Box::new(kops_vm::jit_engine::KopsEngine::new(kops_einsn::registry())?)),
        "cranelift" => Ok(Box::new(kops_cranelift::CraneliftEngine::new().with_kinsn(kops_einsn::registry()))),
        // The arm64 JIT under emulation, by one name (for `kops diff --runtimes ...`).
        "jit-arm64" => engine_arch("jit", "arm64"),
        "kernel" => bail!("runtime `kernel` runs through the kernel layer (BPF_PROG_TEST_RUN), not as a vm engine"),
        _ => bail!("unknown runtime `{name}` (known: interp, jit, kops, cranelift, kernel, jit-arm64)"),
    }
}

/// The engine for `--runtime NAME --arch ARCH`: x86_64 as [`engine`]; arm64 has the
/// interpreter and `jit` (the arm64 JIT under emulation, kinsn sites lowered to their proof
/// sequences).
pub fn engine_arch(name: &str, arch: &str) -> Result<Box<dyn Engine>> {
    match arch {
        "x86_64" | "x86-64" => engine(name),
        "arm64" | "aarch64" => match name {
            "interp" => engine(name),
            "jit" => Ok(Box::new(kops_vm::Lowering::new(kops_emu_arm64::Arm64EmuEngine::new(), kops_einsn::registry()))),
            "kops" | "cranelift" | "kernel" => bail!("runtime `{name}` has no arm64 form yet (arm64 runtimes: interp, jit)"),
            _ => bail!("unknown runtime `{name}` (known: interp, jit, kops, cranelift, kernel)"),
        },
        _ => bail!("unknown architecture `{arch}` (known: x86_64, arm64)"),
    }
}

/// The verifier for a native runtime: the running kernel's (verdicts cached, see
/// [`kops_kernel::verifier`]), or, with `unverified`, none at all (loudly).
pub fn verifier(unverified: bool) -> Box<dyn kops_vm::Verifier> {
    if unverified {
        Box::new(kops_vm::Unverified::loud("--unverified"))
    } else {
        Box::new(kops_kernel::KernelVerifier::new())
    }
}

/// Kinsn sites in a program (sidecar slots).
pub fn site_count(p: &kops_object::Program) -> usize {
    p.insns.iter().filter(|i| i.is_kinsn_sidecar()).count()
}

/// What `--runtime kops` runs for `obj`: the object itself when any program has kinsn
/// sites (an object from `kops rewrite` or hand-written), else the object rewritten by the
/// recognizer with the default policy (auto, every pass), as `kops rewrite` and the
/// benchmark's `kops` runtime (`kops_bench::suite::build_kops`) do. The string says which.
pub fn kops_object(obj: &Object) -> Result<(Object, String)> {
    let given: usize = obj.programs.iter().map(site_count).sum();
    if given > 0 {
        return Ok((obj.clone(), format!("runtime kops: {given} kinsn site(s) as given in the object")));
    }
    let (rw, report, _maps) = kops_recognize::rewrite_object(obj, &kops_recognize::Policy::default())
        .map_err(|e| anyhow::anyhow!("{}: recognizer: {e}", obj.path))?;
    let per: Vec<String> = rw.programs.iter().map(|p| format!("{} {}", p.name, site_count(p))).collect();
    let total: usize = rw.programs.iter().map(site_count).sum();
    // Rewrites that are plain instructions (wide loads) rather than sites.
    let plain = report.rewritten().saturating_sub(total);
    Ok((
        rw,
        format!(
            "runtime kops: no kinsn sites in the object; rewritten by the recognizer (policy auto, all passes): {total} kinsn site(s) ({}), {plain} plain rewrite(s), of {} candidate(s)",
            per.join(", "),
            report.total_sites()
        ),
    ))
}

pub fn parse_hex(s: &str) -> Result<Vec<u8>> {
    let clean: String = s.chars().filter(|c| !c.is_whitespace()).collect();
    let clean = clean.strip_prefix("0x").unwrap_or(&clean);
    if !clean.len().is_multiple_of(2) {
        bail!("hex input has an odd number of digits");
    }
    (0..clean.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&clean[i..i + 2], 16).with_context(|| format!("bad hex digits `{}`", &clean[i..i + 2])))
        .collect()
}

pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// A 64-byte Ethernet/IPv4/UDP packet (10.0.0.1:1234 -> 10.0.0.2:80, 22 bytes of payload).
pub fn sample_packet() -> Vec<u8> {
    let mut p = vec![
        0x00, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88, 0x99, 0xaa, 0xbb, 0x08, 0x00, // eth
        0x45, 0x00, 0x00, 0x32, 0x00, 0x01, 0x00, 0x00, 0x40, 0x11, 0x00, 0x00, // ip
        10, 0, 0, 1, 10, 0, 0, 2, //
        0x04, 0xd2, 0x00, 0x50, 0x00, 0x1e, 0x00, 0x00, // udp
    ];
    // IPv4 header checksum.
    let mut sum: u32 = (0..10).map(|i| u16::from_be_bytes([p[14 + 2 * i], p[15 + 2 * i]]) as u32).sum();
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    let c = !(sum as u16);
    p[24..26].copy_from_slice(&c.to_be_bytes());
    p.extend((0..22u8).map(|i| b'a' + i));
    p
}

fn action_name(ctx: CtxKind, r0: u64) -> &'static str {
    match ctx {
        CtxKind::Xdp => match r0 {
            0 => "XDP_ABORTED",
            1 => "XDP_DROP",
            2 => "XDP_PASS",
            3 => "XDP_TX",
            4 => "XDP_REDIRECT",
            _ => "",
        },
        CtxKind::Skb { tc: true } => match r0 as i64 {
            -1 => "TC_ACT_UNSPEC",
            0 => "TC_ACT_OK",
            1 => "TC_ACT_RECLASSIFY",
            2 => "TC_ACT_SHOT",
            3 => "TC_ACT_PIPE",
            4 => "TC_ACT_STOLEN",
            7 => "TC_ACT_REDIRECT",
            _ => "",
        },
        _ => "",
    }
}

fn input_for(args: &Args, ctx: CtxKind) -> Result<ProgInput> {
    let data = if let Some(f) = &args.data {
        std::fs::read(f).with_context(|| format!("{}: cannot read", f.display()))?
    } else if let Some(h) = &args.data_hex {
        parse_hex(h)?
    } else if ctx.has_packet() {
        sample_packet()
    } else {
        Vec::new()
    };
    Ok(ProgInput { data, ctx: args.ctx_hex.as_deref().map(parse_hex).transpose()? })
}

/// `--runtime kernel`: the program with the object's maps in the running kernel.
fn run_kernel(args: &Args, obj: &Object, name: &str) -> Result<u8> {
    let p = obj
        .program(name)
        .or_else(|| obj.programs.iter().find(|p| p.section == name))
        .with_context(|| format!("{}: {}", args.file.display(), obj.missing_program(name)))?;
    let ctx = CtxKind::for_prog_type(p.prog_type);
    let input = input_for(args, ctx)?;
    let btf = kops_kernel::KernelBtf::for_object(obj).unwrap_or(None);
    let maps = kops_kernel::MapSet::create_with_btf(&obj.maps, btf.as_ref())?;
    // Sites go to the kernel lowered, as for `kops verify`.
    let kf = super::verify::kernel_form(p).map_err(|e| anyhow::anyhow!("{}: program `{}`: {e}", args.file.display(), p.name))?;
    let prog = kops_kernel::load_object_program(obj, &kf.prog, &kf.prog.insns, &maps, btf.as_ref(), 0)?;
    let r = prog.test_run(&kops_kernel::TestRun {
        data_in: Some(&input.data),
        data_out_size: None,
        ctx_in: input.ctx.as_deref(),
        ctx_out_size: 0,
        repeat: args.repeat.clamp(1, u32::MAX as u64) as u32,
        flags: 0,
        cpu: 0,
    })?;
    let r0 = r.retval as u64;
    let act = action_name(ctx, r0);
    outln!("r0 = {} ({:#x}){}{} (low 32 bits, as the kernel reports)", r.retval as i32, r0, if act.is_empty() { "" } else { " " }, act);
    if ctx.has_packet() {
        outln!("packet ({} bytes): {}", r.data_out.len(), hex(&r.data_out));
    }
    if args.repeat > 1 {
        outln!("{} runs on kernel: {} ns/run (kernel-measured)", args.repeat, r.duration_ns);
    }
    if args.dump_maps {
        for m in &maps.maps {
            if let Some(why) = m.undumpable() {
                outln!("map {}: not dumped ({why})", m.def.name);
                continue;
            }
            let t = m.def.map_type;
            if matches!(t, kops_object::map_type::QUEUE | kops_object::map_type::STACK) {
                // Keyless: listed in pop order, by position, as the runtimes list them.
                let d = m.dump()?;
                outln!("map {}: {} entries", m.def.name, d.entries.len());
                for (k, v) in d.entries {
                    outln!("  {} => {}", hex(&k), hex(&v.concat()));
                }
                continue;
            }
            let keys = m.keys()?;
            outln!("map {}: {} entries", m.def.name, keys.len());
            for k in keys {
                if let Some(v) = m.lookup_raw(&k)? {
                    outln!("  {} => {}", hex(&k), hex(&v));
                }
            }
        }
    }
    Ok(0)
}

pub fn run(args: Args) -> Result<u8> {
    let mut obj = Object::load(&args.file)?;
    let name = match &args.prog {
        Some(n) => n.clone(),
        None if obj.programs.len() == 1 => obj.programs[0].name.clone(),
        None => {
            let names: Vec<&str> = obj.programs.iter().map(|p| p.name.as_str()).collect();
            bail!("{}: --prog is required (programs: {})", args.file.display(), names.join(", "));
        }
    };
    obj.resolve_prog_types(args.prog_type.as_deref()).map_err(anyhow::Error::msg)?;
    // CO-RE and externs depend on the running kernel (see kops_kernel::core).
    let obj = if obj.needs_relocation() { kops_kernel::core::relocate(&obj)? } else { obj };
    // Refuse an unknown runtime/architecture pair before any work.
    if args.runtime != "kernel" || args.arch != "x86_64" {
        engine_arch(&args.runtime, &args.arch)?;
    }
    if args.runtime == "kernel" {
        return run_kernel(&args, &obj, &name);
    }
    let obj = if args.runtime == "kops" || args.runtime == "cranelift" {
        let (o, note) = kops_object(&obj)?;
        outln!("{}", note.replacen("runtime kops", &format!("runtime {}", args.runtime), 1));
        o
    } else {
        obj
    };
    let mut vm = Vm::with_verifier(Some(&obj), engine_arch(&args.runtime, &args.arch)?, verifier(args.unverified))
        .with_context(|| args.file.display().to_string())?;
    if let Some(b) = args.budget {
        vm.options.budget = b;
    }
    let shown = args.file.display().to_string();
    let id = vm.load(&name).with_context(|| shown.clone())?;
    let prog = vm.program(id).expect("just loaded");
    if args.runtime == "cranelift" {
        if let Some(s) = kops_cranelift::last_stat(&prog.name) {
            let how = if s.cached {
                "cached image".to_string()
            } else {
                format!("compiled in {:.0} µs (thread CPU time; {:.0} µs wall)", s.micros, s.wall_micros)
            };
            outln!(
                "cranelift: {how}, {} bytes of code in {} function(s), {} kinsn site(s) as Cranelift operations",
                s.code_bytes,
                s.functions,
                s.native_sites
            );
        }
    }
    let input = input_for(&args, prog.ctx)?;
    let n = args.repeat.max(1);
    let (r, ns_per_run) = vm.run_repeat(id, &input, n).with_context(|| shown.clone())?;
    let act = action_name(prog.ctx, r.r0);
    outln!("r0 = {} ({:#x}){}{}", r.r0 as i64, r.r0, if act.is_empty() { "" } else { " " }, act);
    if prog.ctx.has_packet() {
        outln!("packet ({} bytes): {}", r.data_out.len(), hex(&r.data_out));
    }
    if let Some(rd) = &r.redirect {
        outln!("redirect: {rd:?}");
    }
    for (ifindex, flags) in &r.clones {
        outln!("clone_redirect: ifindex {ifindex}, flags {flags:#x}");
    }
    for t in &r.trace {
        outln!("trace: {t}");
    }
    if let Some(c) = r.executed {
        outln!("instructions executed: {c}");
    }
    if prog.kinsn_sites > 0 {
        let how = if prog.lowering.is_some() { "lowered to proof sequences" } else { "compiled by the Kops JIT" };
        outln!("kinsn sites: {} ({how})", prog.kinsn_sites);
    }
    if n > 1 {
        // Emulated arm64 code: the time is the emulator's, not an arm64 CPU's.
        let note = if vm.engine_name() == "jit-arm64" { " (emulated: says nothing about arm64 speed)" } else { "" };
        outln!("{n} runs on {}: {ns_per_run:.1} ns/run{note}", vm.engine_name());
    }
    if args.dump_maps {
        for (m, entries) in vm.dump_maps() {
            outln!("map {m}: {} entries", entries.len());
            for (k, v) in entries {
                outln!("  {} => {}", hex(&k), hex(&v));
            }
        }
    }
    Ok(0)
}
