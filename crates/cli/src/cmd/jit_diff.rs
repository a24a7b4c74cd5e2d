//! `kops jit-diff FILE.o [--prog NAME]`: our x86-64 JIT next to the running kernel's.
//!
//! Each program is loaded into the kernel (its maps created, BTF attached); the kernel's
//! xlated program (the instructions after every verifier rewrite, which is what the kernel
//! JIT compiled) and its jited image are read back. Our JIT compiles the same xlated
//! instructions ([`kops_jit_tools::xlated`]), so the comparison isolates the JIT itself:
//! context-access conversion, helper inlining, divide guards and map pointers are in both
//! inputs (constant blinding is off for root). The two images are disassembled with
//! iced-x86 and printed side by side per xlated eBPF instruction, with each difference
//! classified:
//!
//! - `thunk`: the kernel returns through `jmp __x86_return_thunk` (retbleed mitigation),
//!   we `ret`;
//! - `address`: the same instruction with a different absolute address (map pointers
//!   loaded with `movabs`, `call rel32` to kernel helpers / subprograms vs our image);
//! - `diff`: anything else (a lowering difference, which would be a fidelity bug).
//!
//! Then the same program as our runtime JITs it from the object (before the verifier's
//! rewrites) is counted, with the rewrites that separate the two listed.
//! The last line totals the native instruction counts over the object's programs.

use anyhow::{bail, Context, Result};
use kops_isa::{op, Insn};
use kops_jit_tools::disasm::{disassemble, NativeInsn};
use kops_jit::{compile, CpuFeatures, JitImage, JitOptions, Resolver};
use kops_jit_tools::xlated;
use kops_kernel::{KernelBtf, MapSet};
use kops_object::{Object, Program};

#[derive(clap::Args, Debug)]
#[command(about = "compare our x86-64 JIT with the kernel's jited image")]
pub struct Args {
    /// The .bpf.o object.
    file: String,
    /// Only this program (default: all).
    #[arg(long)]
    prog: Option<String>,
    /// Print only the per-program summaries, not the listings.
    #[arg(long)]
    summary: bool,
    /// Program type for programs whose section name gives none (legacy names such as
    /// `redirect_xmit`): xdp, tc, socket, cgroup_skb, lwt_xmit, ... (an unknown name lists them all).
    #[arg(long = "type", value_name = "TYPE")]
    prog_type: Option<String>,
}

const EXIT_NO_KERNEL: u8 = 3;

pub fn run(a: Args) -> Result<u8> {
    let mut obj = Object::load(&a.file).with_context(|| format!("loading {}", a.file))?;
    obj.resolve_prog_types(a.prog_type.as_deref()).map_err(anyhow::Error::msg)?;
    let obj = obj;
    let progs = super::verify::select_programs(&obj, a.prog.as_deref()).map_err(|e| anyhow::anyhow!("{}: {e}", a.file))?;
    super::note_broken("jit-diff", &obj, a.prog.as_deref());
    let btf = KernelBtf::for_object(&obj).unwrap_or(None);
    let maps = match super::verify::kernel_maps("jit-diff", &obj.maps, btf.as_ref()) {
        Ok(Some(m)) => m,
        Ok(None) => return Ok(EXIT_NO_KERNEL),
        Err(e) => bail!("{}: creating maps: {e}", a.file),
    };
    // The kernel JIT checks the boot CPU's features (BMI2); no masking here.
    let features = CpuFeatures::host();
    let harden = std::fs::read_to_string("/proc/sys/net/core/bpf_jit_harden").map(|s| s.trim().to_string()).unwrap_or_else(|_| "?".into());
    // /proc/self belongs to the process's effective uid.
    let root = std::os::unix::fs::MetadataExt::uid(&std::fs::metadata("/proc/self")?) == 0;
    if !a.summary {
        println!("# left: ours (JIT of the kernel's xlated program), right: the kernel's jited image; per xlated eBPF slot");
        println!("# differences: `thunk` = kernel returns via jmp __x86_return_thunk (retbleed), ours via jmp to a local ret;");
        println!("#   `address` = same instruction, different absolute address (map pointers, helpers, subprograms, per-CPU);");
        println!("#   `diff` = anything else (a lowering difference). CPU features used: {features}.");
        println!("# helper calls: here `call rel32` to the helper as in the kernel; our runtime (`--runtime jit`) keeps");
        println!("#   that call site but targets a per-helper trampoline in the image (aligns the stack for SysV helpers,");
        println!("#   then `call r11`), since our image cannot be placed within rel32 reach of every helper in general.");
        println!(
            "# constant blinding: net.core.bpf_jit_harden = {harden}{}",
            match (harden.as_str(), root) {
                ("0", _) => " (off)",
                ("1", true) => " (unprivileged only: off for us, root)",
                ("2", _) => " (on for everyone: the kernel image has blinded constants, ours not)",
                _ => "",
            }
        );
    }
    let (mut tk, mut to, mut failed) = (0usize, 0usize, 0usize);
    for p in &progs {
        match diff_one(&obj, p, &maps, btf.as_ref(), features, a.summary) {
            Ok((k, o, _)) => {
                tk += k;
                to += o;
            }
            Err(e) => {
                failed += 1;
                println!("{}: {e:#}", p.name);
            }
        }
    }
    if failed > 0 {
        println!("{failed} program(s) could not be compared (not counted below)");
    }
    println!("kernel: {tk} native instructions, ours: {to} native instructions");
    Ok(if failed > 0 { 1 } else { 0 })
}

/// Why two aligned native instructions differ.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Why {
    Thunk,
    Address,
    Diff,
}

impl Why {
    fn tag(self) -> &'static str {
        match self {
            Why::Thunk => "thunk",
            Why::Address => "address",
            Why::Diff => "diff",
        }
    }
}

/// Alignment key: bytes, except that absolute addresses (call/jump targets outside the
/// function, movabs immediates) are masked.
fn key(i: &NativeInsn, fstart: u64, fend: u64) -> String {
    if let Some(t) = i.target {
        if t >= fstart && t < fend {
            return format!("{} ->{:x}", i.mnemonic, t - fstart);
        }
        return format!("{} ->ext", i.mnemonic);
    }
    if i.bytes.len() == 10 && (i.bytes[0] & 0xf8) == 0x48 && (i.bytes[1] & 0xf8) == 0xb8 {
        return format!("movabs {:02x}{:02x}", i.bytes[0], i.bytes[1]);
    }
    if i.bytes.len() == 9 && i.bytes[0] == 0x65 && i.bytes[4] == 0x25 {
        // add r, gs:[disp32]: the per-CPU offset variable's address.
        return format!("gs {}", hex(&i.bytes[..5]));
    }
    i.bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Our return-thunk jump: `jmp` to the `ret` stub right after the functions.
fn is_exit_jump(i: &NativeInsn) -> bool {
    i.bytes.len() == 5
}

fn classify(ours: &NativeInsn, theirs: &NativeInsn, fo: (u64, u64), fk: (u64, u64)) -> Option<Why> {
    if ours.bytes == theirs.bytes {
        return None;
    }
    if ours.mnemonic == "jmp" && theirs.mnemonic == "jmp" && ours.target.is_some_and(|t| t < fo.0 || t >= fo.1)
        && theirs.target.is_some_and(|t| t < fk.0 || t >= fk.1) && ours.bytes[0] == 0xe9 && is_exit_jump(ours)
    {
        return Some(Why::Thunk);
    }
    if key(ours, fo.0, fo.1) == key(theirs, fk.0, fk.1) {
        return Some(Why::Address);
    }
    Some(Why::Diff)
}

/// Pairs of (our index, kernel index) in order; unmatched entries have one side None.
fn align(ours: &[NativeInsn], theirs: &[NativeInsn], fo: (u64, u64), fk: (u64, u64)) -> Vec<(Option<usize>, Option<usize>)> {
    let ko: Vec<String> = ours.iter().map(|i| key(i, fo.0, fo.1)).collect();
    let kk: Vec<String> = theirs.iter().map(|i| key(i, fk.0, fk.1)).collect();
    let same = |a: usize, b: usize| {
        ko[a] == kk[b] || (ours[a].mnemonic == "ret" && theirs[b].mnemonic == "jmp" && kk[b].ends_with("->ext"))
    };
    let (mut i, mut j) = (0, 0);
    let mut out = Vec::new();
    while i < ours.len() || j < theirs.len() {
        if i < ours.len() && j < theirs.len() && same(i, j) {
            out.push((Some(i), Some(j)));
            i += 1;
            j += 1;
            continue;
        }
        // Resynchronise: the nearest pair (di, dj) that matches again.
        let mut best: Option<(usize, usize)> = None;
        'search: for d in 1..16 {
            for di in 0..=d {
                let dj = d - di;
                if i + di < ours.len() && j + dj < theirs.len() && same(i + di, j + dj) {
                    best = Some((di, dj));
                    break 'search;
                }
            }
        }
        match best {
            Some((di, dj)) => {
                // Pair up what can be paired (as differing), the rest alone.
                let common = di.min(dj);
                for k in 0..common {
                    out.push((Some(i + k), Some(j + k)));
                }
                for k in common..di {
                    out.push((Some(i + k), None));
                }
                for k in common..dj {
                    out.push((None, Some(j + k)));
                }
                i += di;
                j += dj;
            }
            None => {
                if i < ours.len() && j < theirs.len() {
                    out.push((Some(i), Some(j)));
                    i += 1;
                    j += 1;
                } else if i < ours.len() {
                    out.push((Some(i), None));
                    i += 1;
                } else {
                    out.push((None, Some(j)));
                    j += 1;
                }
            }
        }
    }
    out
}

/// Where our image is linked for the comparison (the kernel's module area).
const FAKE_IMAGE_BASE: u64 = 0xffff_ffff_c000_0000;

/// The `sub rsp, imm32` of a prologue (bytes reserved for the eBPF stack).
fn frame_of(code: &[NativeInsn]) -> Option<u32> {
    code.iter().take(6).find(|i| i.bytes.starts_with(&[0x48, 0x81, 0xec])).map(|i| u32::from_le_bytes(i.bytes[3..7].try_into().unwrap()))
}

/// Fake addresses for JITing the object's own program (count only).
struct ObjectResolver;
impl Resolver for ObjectResolver {
    fn helper(&self, id: i32) -> Option<u64> {
        Some(xlated::FAKE_TEXT_BASE + id as u32 as u64)
    }
    fn ld_imm64(&self, _pc: usize, lo: &Insn, hi: &Insn) -> Result<u64, String> {
        Ok(xlated::FAKE_MAP_BASE + ((lo.imm as u32 as u64) << 12) + hi.imm as u32 as u64)
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect::<Vec<_>>().join(" ")
}

fn diff_one(
    obj: &Object,
    p: &Program,
    maps: &MapSet,
    btf: Option<&KernelBtf>,
    features: CpuFeatures,
    summary: bool,
) -> Result<(usize, usize, usize)> {
    let has_sites = p.insns.iter().any(|i| i.is_call() && i.src == op::PSEUDO_KINSN_CALL);
    let registry = kops_einsn::registry();
    // A program with kinsn sites goes to the kernel lowered (proof sequences), as for
    // `kops verify`; the baseline comparison is on that, the Kops listing follows.
    let lowered_prog;
    let kp = if has_sites {
        lowered_prog = kops_kinsn::lower_program(p, &registry).map_err(|e| anyhow::anyhow!("lowering kinsn sites: {e}"))?.0;
        &lowered_prog
    } else {
        p
    };
    let loaded = kops_kernel::load_object_program(obj, kp, &kp.insns, maps, btf, 0).map_err(|e| anyhow::anyhow!("kernel load: {e}"))?;
    let info = loaded.info().map_err(|e| anyhow::anyhow!("program info: {e}"))?;
    if info.jited.is_empty() {
        bail!("the kernel returned no jited image (JIT disabled, or no CAP_SYS_ADMIN/bpf_jit_kallsyms)");
    }
    if std::env::var_os("KOPS_JIT_DIFF_RAW").is_some() {
        for (k, i) in info.xlated.iter().enumerate() {
            eprintln!("xlated[{k}] {:02x?}", i.to_bytes());
        }
    }
    // kops-kernel loads with fd_array (map references as PSEUDO_MAP_IDX/IDX_VALUE).
    let insns = xlated::prepare(&info.xlated, true);
    let mut xo = JitOptions::kernel_xlated(features);
    xo.direct_tail_calls = xlated::direct_tail_calls(&insns, 12);
    let img: JitImage = compile(&insns, &xo, &xlated::XlatedResolver)
        .map_err(|e| anyhow::anyhow!("our JIT on the xlated program: {e}"))?;
    let lens: Vec<usize> = if info.jited_func_lens.is_empty() {
        vec![info.jited.len()]
    } else {
        info.jited_func_lens.iter().map(|&l| l as usize).collect()
    };
    if lens.len() != img.funcs.len() {
        bail!("kernel has {} functions, we split {} (subprogram detection differs)", lens.len(), img.funcs.len());
    }
    println!(
        "== {} ({}): {} eBPF slots in the object{}, {} after the verifier; {} function(s)",
        p.name,
        p.section,
        p.insns.len(),
        if has_sites { format!(" ({} lowered)", kp.insns.len()) } else { String::new() },
        info.xlated.len(),
        lens.len()
    );
    let (mut nk, mut no, mut bk, mut bo) = (0, 0, 0, 0);
    let mut whys = [0usize; 3];
    let mut unmatched = 0usize;
    let mut koff = 0;
    // Link ours in the kernel's module area so that calls to (fake) kernel helpers are
    // real rel32 calls, and decode both with their real addresses.
    let linked = img.link(FAKE_IMAGE_BASE).map_err(|e| anyhow::anyhow!("linking: {e}"))?;
    let mut notes = Vec::new();
    for (fi, f) in img.funcs.iter().enumerate() {
        let ours_code = &linked[f.code_start..f.code_start + f.code_len];
        let kcode = info.jited.get(koff..koff + lens[fi]).context("jited image shorter than its function lengths")?;
        koff += lens[fi];
        let oip = FAKE_IMAGE_BASE + f.code_start as u64;
        let kip = info.jited_ksyms.get(fi).copied().unwrap_or(0x1_0000_0000);
        let o = disassemble(ours_code, oip);
        let k = disassemble(kcode, kip);
        let (ko, kk) = (frame_of(&o), frame_of(&k));
        if ko != kk {
            let why = match kops_jit::stack::explain(&insns, f.insn_start, f.insn_end, &kops_jit::fixup::second_slots(&insns), true) {
                Err(b) => format!("our analysis gave up at slot {}: {}", b.0, b.1),
                Ok(_) => "analysis differs".to_string(),
            };
            notes.push(format!(
                "function {fi}: stack frame kernel {} bytes, ours {} bytes ({why}); the verifier's stack_depth is not in the program info",
                kk.unwrap_or(0),
                ko.unwrap_or(0)
            ));
        }
        nk += k.len();
        no += o.len();
        bk += kcode.len();
        bo += ours_code.len();
        let fo = (oip, oip + ours_code.len() as u64);
        let fk = (kip, kip + kcode.len() as u64);
        let pairs = align(&o, &k, fo, fk);
        if !summary {
            println!(
                "-- function {fi} (slots {}..{}): kernel {} insns / {} bytes, ours {} insns / {} bytes",
                f.insn_start,
                f.insn_end,
                k.len(),
                kcode.len(),
                o.len(),
                ours_code.len()
            );
        }
        // Our instruction index -> xlated slot owning it.
        let slot_of = |off: usize| -> Option<usize> {
            (f.insn_start..f.insn_end).find(|&s| {
                let (a, b) = img.insn_ranges[s];
                (a as usize) <= f.code_start + off && f.code_start + off < b as usize
            })
        };
        let mut last_slot: Option<Option<usize>> = None;
        for (oi, ki) in pairs {
            let why = match (oi, ki) {
                (Some(x), Some(y)) => classify(&o[x], &k[y], fo, fk),
                _ => {
                    unmatched += 1;
                    Some(Why::Diff)
                }
            };
            if let Some(w) = why {
                whys[w as usize] += 1;
            }
            if summary {
                continue;
            }
            let slot = oi.map(|x| slot_of(o[x].offset)).unwrap_or(last_slot.flatten());
            if last_slot != Some(slot) {
                match slot {
                    Some(s) => println!("  [{s:4}] {}", kops_isa::disasm::format(&insns, s)),
                    None => println!("  [prologue]"),
                }
                last_slot = Some(slot);
            }
            let side = |i: Option<&NativeInsn>| match i {
                Some(i) => format!("{:4x}: {:<24} {:<34}", i.offset, hex(&i.bytes), i.text),
                None => format!("{:65}", ""),
            };
            let mark = match why {
                None => "  ".to_string(),
                Some(w) => format!("* {}", w.tag()),
            };
            println!("    {} | {} {}", side(oi.map(|x| &o[x])), side(ki.map(|y| &k[y])), mark);
        }
    }
    // Our runtime's view: the object's program before any verifier rewrite.
    let mut ro = JitOptions::kernel_xlated(features);
    ro.div_fixups = true;
    let obj_count = compile(&kp.insns, &ro, &ObjectResolver).map(|i| kops_jit_tools::disasm::count(&i.code[..i.funcs.iter().map(|f| f.code_len).sum::<usize>()]));
    let delta = if nk > 0 { (no as f64 - nk as f64) * 100.0 / nk as f64 } else { 0.0 };
    println!(
        "{}: kernel {nk} insns / {bk} bytes, ours {no} insns / {bo} bytes ({delta:+.1}% insns); differences: {} return thunk, {} address, {} other{}",
        p.name,
        whys[Why::Thunk as usize],
        whys[Why::Address as usize],
        whys[Why::Diff as usize],
        if unmatched > 0 { format!(" ({unmatched} unpaired)") } else { String::new() }
    );
    for n in &notes {
        println!("  note: {n}");
    }
    if has_sites {
        kops_listing(p, &registry, features, nk, summary)?;
    }
    let rewrites = rewrite_note(&kp.insns, &info.xlated);
    match obj_count {
        Ok(c) => println!(
            "  ours from the object (before verifier rewrites, divide guards added): {c} insns; {rewrites}"
        ),
        Err(e) => println!("  ours from the object: not compiled ({e}); {rewrites}"),
    }
    Ok((nk, no, whys[Why::Diff as usize]))
}

/// The program as the Kops JIT compiles it: sites with a native form become that form
/// (the JIT's checked emit, `kops_jit::compile_kinsn`), the others their proof sequences.
fn kops_listing(p: &Program, registry: &kops_kinsn::Registry, features: CpuFeatures, kernel_total: usize, summary: bool) -> Result<()> {
    let starts: Vec<usize> = p.subprogs.iter().map(|s| s.start).collect();
    let mut o = JitOptions::kernel_xlated(features);
    o.div_fixups = true;
    let k = kops_jit::Kinsn { registry, subprog_starts: &starts, func_info: &p.func_info };
    let kops_jit::KinsnImage { image: img, lowered: low, plans } = kops_jit::compile_kinsn(&p.insns, &k, &o, &ObjectResolver).map_err(|e| match e {
        kops_jit::JitError::Kinsn(e) => anyhow::anyhow!("kinsn plan: {e}"),
        e => anyhow::anyhow!("Kops JIT: {e}"),
    })?;
    let native = plans.iter().filter(|p| p.native.is_some()).count();
    let fallback = plans.len() - native;
    let fn_bytes: usize = img.funcs.iter().map(|f| f.code_len).sum();
    let listing = kops_jit_tools::disasm::per_slot(&img, &img.code[..fn_bytes], 0);
    if !summary {
        println!("-- Kops JIT (object's program, {native} native site(s), {fallback} fallback):");
        for (ri, r) in low.regions.iter().enumerate() {
            let site = kops_kinsn::Site { pc: r.orig_pc, op_id: r.op_id, payload: r.payload };
            let what = kops_kinsn::describe_site(registry, &site).unwrap_or_else(|e| e.to_string());
            let how = if plans[ri].native.is_some() { "native" } else { "fallback (proof sequence)" };
            println!("  site at slot {}: {what} -> {how}", r.orig_pc);
            for (_, i) in listing.iter().filter(|(s, _)| s.is_some_and(|s| s >= r.start && s < r.end())) {
                println!("      {:4x}: {:<24} {}", i.offset, hex(&i.bytes), i.text);
            }
        }
    }
    let n = listing.len();
    println!(
        "  kops: {n} native instructions / {fn_bytes} bytes with {native} native site(s) (kernel on the lowered program: {kernel_total})"
    );
    Ok(())
}

/// What the verifier changed, as far as the two instruction streams show.
fn rewrite_note(orig: &[Insn], xl: &[Insn]) -> String {
    let helpers = |v: &[Insn]| {
        let mut m = std::collections::BTreeMap::new();
        for i in v {
            if i.is_helper_call() {
                *m.entry(i.imm).or_insert(0usize) += 1;
            }
        }
        m
    };
    let ho = helpers(orig);
    let ctx_loads = |v: &[Insn]| v.iter().filter(|i| i.class() == op::LDX).count();
    let mut parts = vec![format!("verifier: {} -> {} slots", orig.len(), xl.len())];
    let calls_o: usize = ho.values().sum();
    let calls_x = xl.iter().filter(|i| i.is_helper_call()).count();
    if calls_o > calls_x {
        let names: Vec<String> = ho
            .keys()
            .map(|id| kops_vm::helpers::kernel_helper_name(*id as u32).map(|s| s.to_string()).unwrap_or(format!("#{id}")))
            .collect();
        parts.push(format!("{} helper call(s) inlined (of {})", calls_o - calls_x, names.join(", ")));
    }
    let (lo, lx) = (ctx_loads(orig), ctx_loads(xl));
    if lx > lo {
        parts.push(format!("{} more loads (context access conversion / inlined lookups)", lx - lo));
    }
    parts.join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dis(bytes: &[u8], ip: u64) -> Vec<NativeInsn> {
        disassemble(bytes, ip)
    }

    #[test]
    fn classification() {
        // Same bytes: no difference.
        let a = dis(&[0x48, 0x89, 0xf8], 0x1000);
        assert_eq!(classify(&a[0], &a[0], (0x1000, 0x1003), (0x1000, 0x1003)), None);
        // movabs with different immediates: address.
        let o = dis(&[0x48, 0xbf, 1, 2, 3, 4, 5, 6, 7, 8], 0x1000);
        let k = dis(&[0x48, 0xbf, 9, 9, 9, 9, 9, 9, 9, 9], 0x5000);
        assert_eq!(classify(&o[0], &k[0], (0x1000, 0x100a), (0x5000, 0x500a)), Some(Why::Address));
        // A different register: a real difference.
        let k2 = dis(&[0x48, 0xbe, 1, 2, 3, 4, 5, 6, 7, 8], 0x5000);
        assert_eq!(classify(&o[0], &k2[0], (0x1000, 0x100a), (0x5000, 0x500a)), Some(Why::Diff));
        // Both leave the function with jmp rel32: our return-thunk stand-in vs the kernel's.
        let oj = dis(&[0xe9, 0x10, 0, 0, 0], 0x1000);
        let kj = dis(&[0xe9, 0x00, 0x10, 0, 0], 0x5000);
        assert_eq!(classify(&oj[0], &kj[0], (0x1000, 0x1005), (0x5000, 0x5005)), Some(Why::Thunk));
        // Jumps inside the function: equal when the relative targets are.
        let o = dis(&[0x74, 0x02, 0x90, 0x90], 0x1000);
        let k = dis(&[0x74, 0x02, 0x90, 0x90], 0x7000);
        assert_eq!(classify(&o[0], &k[0], (0x1000, 0x1004), (0x7000, 0x7004)), None);
        let k = dis(&[0x74, 0x01, 0x90, 0x90], 0x7000);
        assert_eq!(classify(&o[0], &k[0], (0x1000, 0x1004), (0x7000, 0x7004)), Some(Why::Diff));
    }

    /// Every bundled program through the running kernel: the same number of native
    /// instructions as the kernel's JIT, and no difference other than return thunks and
    /// addresses. Needs bpf(2) (root); skipped with a note otherwise.
    #[test]
    fn bundled_programs_match_the_kernel_jit() {
        if let Err(e) = kops_kernel::available() {
            eprintln!("skipped: {e}");
            return;
        }
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../bpf/out");
        let mut files: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().path()).filter(|p| p.to_string_lossy().ends_with(".bpf.o")).collect();
        files.sort();
        assert!(!files.is_empty());
        let mut bad = Vec::new();
        let mut n = 0;
        for f in &files {
            let obj = Object::load(f).unwrap();
            let maps = MapSet::create(&obj.maps).unwrap();
            let btf = KernelBtf::for_object(&obj).unwrap_or(None);
            for p in &obj.programs {
                match diff_one(&obj, p, &maps, btf.as_ref(), CpuFeatures::host(), true) {
                    Ok((k, o, other)) if k == o && other == 0 => n += 1,
                    Ok((k, o, other)) => bad.push(format!("{}: kernel {k}, ours {o}, {other} other differences", p.name)),
                    Err(e) => bad.push(format!("{}: {e:#}", p.name)),
                }
            }
        }
        assert!(bad.is_empty(), "{bad:#?}");
        eprintln!("{n} programs identical up to return thunks and addresses");
    }

    #[test]
    fn alignment_resynchronises() {
        // ours: push rbx; mov rax, rdi; ret   kernel: mov rax, rdi; ret (no push)
        let o = dis(&[0x53, 0x48, 0x89, 0xf8, 0xc3], 0);
        let k = dis(&[0x48, 0x89, 0xf8, 0xc3], 0x100);
        let pairs = align(&o, &k, (0, 5), (0x100, 0x104));
        assert_eq!(pairs, vec![(Some(0), None), (Some(1), Some(0)), (Some(2), Some(1))]);
    }
}
