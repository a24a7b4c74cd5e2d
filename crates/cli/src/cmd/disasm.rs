//! `kops disasm FILE.o [--section S]`: print the executable sections of an object in
//! llvm-objdump-19's BPF syntax, with function symbols as labels and slot indices.
//! `kops disasm --native FILE.o [--prog NAME]`: per BPF instruction, the x86-64 code our
//! Kops JIT makes of it (the code `kops run --runtime kops` runs).

use anyhow::{anyhow, bail, Context, Result};
use kops_isa::disasm::{format_program, Options};
use object::{Object, ObjectSection, ObjectSymbol, SectionFlags, SymbolKind};
use std::collections::BTreeMap;
use std::io::Write;

/// Disassemble the programs of a BPF object file.
///
/// Prints every executable ELF section (or only --section), each function symbol as a
/// `<name>:` label, then one `index: instruction` line per instruction. Instruction indices
/// are 8-byte slot numbers within the section (an ld_imm64 takes two). The text is what
/// `llvm-objdump-19 -d --no-show-raw-insn` prints, except where llvm-19 has no syntax
/// (kinsn sidecar `kinsn_sidecar 0x<payload>`, kinsn call `kinsn_call <id>[, <btf slot>]`,
/// load_acquire/store_release, 32-bit atomics other than add: printed as with --mcpu=v3).
/// Calls and map references are shown unrelocated, as in the file.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// The object file (clang -target bpf output, e.g. bpf/out/foo.bpf.o).
    file: std::path::PathBuf,
    /// Only this section (e.g. `xdp`, `.text`).
    #[arg(long, short = 's')]
    section: Option<String>,
    /// Name 32-bit subregisters in loads and stores (`w0 = *(u32 *)...`), like
    /// `llvm-objdump --mcpu=v3`.
    #[arg(long)]
    alu32: bool,
    /// Print kinsn calls exactly as llvm-objdump does (`call <id>`).
    #[arg(long)]
    llvm_calls: bool,
    /// Show, per BPF instruction, the x86-64 code of our JIT (iced-x86, Intel syntax) as
    /// `kops run --runtime kops` compiles it: the program loaded by the runtime (maps
    /// resolved, context accesses rewritten, so the same slots), each kinsn site as its op's
    /// native instruction(s) or, where the op or the CPU (masked by KOPS_DISABLE_FEATURES)
    /// has none, its proof sequence. An object without sites is shown as it is (run
    /// `kops rewrite` first to get sites).
    #[arg(long)]
    native: bool,
    /// With --native: only this program (default: every program).
    #[arg(long, short = 'p', requires = "native")]
    prog: Option<String>,
    /// With --native: x86_64 (the Kops JIT) or arm64 (our arm64 JIT as `kops run --runtime
    /// jit --arch arm64` compiles it, kinsn sites lowered to their proof sequences;
    /// disassembled by yaxpeax-arm).
    #[arg(long, default_value = "x86_64", requires = "native")]
    arch: String,
}

pub fn run(args: Args) -> Result<u8> {
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let r = if args.native { native(&args, &mut out) } else { listing(&args, &mut out) };
    match r {
        Ok(()) => Ok(0),
        // A closed stdout (`| head`) is not an error.
        Err(e) if e.downcast_ref::<std::io::Error>().is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe) => Ok(0),
        Err(e) => Err(e),
    }
}

/// `--native`: every (or the named) program through the Kops engine.
fn native(args: &Args, out: &mut dyn Write) -> Result<()> {
    let path = args.file.display().to_string();
    let obj = kops_object::Object::load(&args.file).with_context(|| format!("{path}: cannot load"))?;
    let progs = super::verify::select_programs(&obj, args.prog.as_deref()).map_err(|e| anyhow!("{path}: {e}"))?;
    super::note_broken("disasm", &obj, args.prog.as_deref());
    for p in progs {
        let text = match args.arch.as_str() {
            "x86_64" | "x86-64" => native_listing(&path, &obj, p)?,
            "arm64" | "aarch64" => native_listing_arm64(&path, &obj, p)?,
            a => bail!("unknown architecture `{a}` (known: x86_64, arm64)"),
        };
        out.write_all(text.as_bytes())?;
    }
    Ok(())
}

fn hex_bytes(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect::<Vec<_>>().join(" ")
}

/// The listing of one program: the runtime loads it on a [`KopsEngine`] (which checks
/// its sites), then the same final instructions are compiled again here with the plan kept.
fn native_listing(path: &str, obj: &kops_object::Object, p: &kops_object::Program) -> Result<String> {
    use kops_vm::jit_engine::KopsEngine;
    let registry = kops_einsn::registry();
    // The code is listed, never run: no verifier needed (and `disasm` works without bpf(2)).
    let listed_only = Box::new(kops_vm::Unverified::quiet());
    let vm = kops_vm::Vm::with_verifier(Some(obj), Box::new(KopsEngine::new(registry.clone())?), listed_only).with_context(|| path.to_string())?;
    let id = vm.load(&p.name).with_context(|| path.to_string())?;
    let lp = vm.program(id).expect("just loaded");
    let engine = KopsEngine::new(registry.clone())?;
    let starts: Vec<usize> = lp.subprogs.iter().map(|s| s.start).collect();
    let kc = engine
        .compile_planned(&lp.name, &lp.insns, &starts, &lp.helpers, lp.conformance, lp.exception_cb)
        .with_context(|| path.to_string())?;
    let l = &kc.lowered;
    // The runtime keeps the object's layout for the Kops engine: slots are the object's.
    if l.orig_len != p.insns.len() {
        bail!("{path}: program `{}`: the runtime changed the slot count ({} -> {})", p.name, p.insns.len(), l.orig_len);
    }
    let code = kc.program.code();
    let base = kc.program.entry();
    let listing = kops_jit_tools::disasm::per_slot(&kc.program.image, code, base);
    let native_sites = kc.plans.iter().filter(|x| x.native.is_some()).count();
    let mut s = format!(
        "{path}: program `{}` on the Kops JIT (features: {}): {} slots, {} kinsn site(s): {native_sites} native, {} fallback (proof sequence); {} x86-64 instructions, {} bytes\n",
        p.name,
        engine.features(),
        p.insns.len(),
        l.regions.len(),
        l.regions.len() - native_sites,
        listing.len(),
        code.len()
    );
    let line = |s: &mut String, i: &kops_jit_tools::disasm::NativeInsn| {
        s.push_str(&format!("            {:<30} {}\n", hex_bytes(&i.bytes), i.text));
    };
    let first_owned = listing.iter().position(|(o, _)| o.is_some()).unwrap_or(listing.len());
    s.push_str("  (prologue)\n");
    for (_, i) in &listing[..first_owned] {
        line(&mut s, i);
    }
    // Native instructions by lowered slot.
    let mut by_slot: BTreeMap<usize, Vec<&kops_jit_tools::disasm::NativeInsn>> = BTreeMap::new();
    for (o, i) in &listing[first_owned..] {
        if let Some(o) = o {
            by_slot.entry(*o).or_default().push(i);
        }
    }
    let stubs = listing[first_owned..].iter().filter(|(o, _)| o.is_none()).count();
    let site_at: BTreeMap<usize, usize> = l.regions.iter().enumerate().map(|(k, r)| (r.orig_pc, k)).collect();
    for (pc, text) in format_program(&p.insns, Options { alu32: false, kinsn: true }) {
        if let Some(sp) = p.subprogs.iter().find(|sp| sp.start == pc) {
            s.push_str(&format!("<{}>:\n", sp.name));
        }
        if let Some(&k) = site_at.get(&pc) {
            let r = &l.regions[k];
            let site = kops_kinsn::Site { pc, op_id: r.op_id, payload: r.payload };
            let what = kops_kinsn::describe_site(&registry, &site).unwrap_or_else(|e| e.to_string());
            let how = if kc.plans[k].native.is_some() { "native" } else { "fallback: proof sequence" };
            s.push_str(&format!("{pc:>8}: kinsn {what}  [{how}]\n"));
            for slot in r.start..r.end() {
                for i in by_slot.get(&slot).into_iter().flatten() {
                    line(&mut s, i);
                }
            }
            continue;
        }
        if pc > 0 && site_at.contains_key(&(pc - 1)) {
            s.push_str(&format!("{pc:>8}: {text}  (call slot of the site at {})\n", pc - 1));
            continue;
        }
        s.push_str(&format!("{pc:>8}: {text}\n"));
        for i in by_slot.get(&l.lowered_of[pc]).into_iter().flatten() {
            line(&mut s, i);
        }
    }
    s.push_str(&format!("  (not attributed to a slot: {stubs} instructions of subprogram prologues and runtime stubs)\n"));
    Ok(s)
}

/// The arm64 listing of one program: loaded by the runtime on the arm64 engine (sites
/// lowered), compiled again here, each slot followed by its words.
fn native_listing_arm64(path: &str, obj: &kops_object::Object, p: &kops_object::Program) -> Result<String> {
    use kops_emu_arm64::{disassemble, Arm64EmuEngine};
    let listed_only = Box::new(kops_vm::Unverified::quiet());
    let engine = kops_vm::Lowering::new(Arm64EmuEngine::new(), kops_einsn::registry());
    let vm = kops_vm::Vm::with_verifier(Some(obj), Box::new(engine), listed_only).with_context(|| path.to_string())?;
    let id = vm.load(&p.name).with_context(|| path.to_string())?;
    let lp = vm.program(id).expect("just loaded");
    let img = Arm64EmuEngine::new().compile_image(&lp.insns, &lp.helpers, lp.conformance).map_err(|e| anyhow!("{path}: program `{}`: {e}", p.name))?;
    let words = img.words();
    let lowered = if lp.lowering.is_some() { " (kinsn sites lowered to proof sequences: slots of the lowered program)" } else { "" };
    let mut s = format!(
        "{path}: program `{}` on the arm64 JIT{lowered}: {} slots; {} arm64 instructions, {} bytes ({} functions)\n",
        p.name,
        lp.insns.len(),
        words,
        img.code.len(),
        img.funcs.len()
    );
    let line = |s: &mut String, (off, w, t): &(usize, u32, String)| s.push_str(&format!("    {off:6x}:  {w:08x}  {t}\n"));
    // Linked at address 0: subprogram addresses read as image offsets.
    let code = img.link(0).map_err(|e| anyhow!("{path}: program `{}`: {e}", p.name))?;
    let all = disassemble(&code[..words * 4], 0);
    let mut shown = vec![false; words];
    let mut text = format_program(&lp.insns, Options { alu32: false, kinsn: true }).into_iter().peekable();
    for (fi, f) in img.funcs.iter().enumerate() {
        s.push_str(&format!("  (function {fi}: prologue, {} bytes of stack)\n", f.stack_size));
        for l in &all[f.code_start / 4..(f.code_start + f.prologue_len) / 4] {
            line(&mut s, l);
            shown[l.0 / 4] = true;
        }
        while let Some((pc, t)) = text.next_if(|(pc, _)| *pc < f.insn_end) {
            s.push_str(&format!("{pc:>8}: {t}\n"));
            let (a, b) = img.insn_ranges[pc];
            for l in &all[a as usize / 4..b as usize / 4] {
                line(&mut s, l);
                shown[l.0 / 4] = true;
            }
        }
        s.push_str("  (epilogue and PLT)\n");
        let end = (f.code_start + f.code_len) / 4;
        let left: Vec<usize> = (f.code_start / 4..end).filter(|&k| !shown[k]).collect();
        for k in left {
            let l = &all[k];
            // The PLT's 8-byte target is data.
            let data = l.0 + 8 >= f.code_start + f.code_len;
            if data {
                s.push_str(&format!("    {:6x}:  {:08x}  (PLT target)\n", l.0, l.1));
            } else {
                line(&mut s, l);
            }
            shown[l.0 / 4] = true;
        }
    }
    let rest = shown.iter().filter(|x| !**x).count();
    if rest > 0 {
        s.push_str(&format!("  (runtime stubs: {rest} instructions)\n"));
        for l in all.iter().filter(|l| !shown[l.0 / 4]) {
            line(&mut s, l);
        }
    }
    Ok(s)
}

fn listing(args: &Args, out: &mut dyn Write) -> Result<()> {
    let path = args.file.display().to_string();
    let data = std::fs::read(&args.file).with_context(|| format!("{path}: cannot read"))?;
    let text = disassemble(&path, &data, args.section.as_deref(), Options { alu32: args.alu32, kinsn: !args.llvm_calls })?;
    out.write_all(text.as_bytes())?;
    Ok(())
}

/// The listing of `data` (an ELF object named `path` in messages).
fn disassemble(path: &str, data: &[u8], only: Option<&str>, opts: Options) -> Result<String> {
    let file = object::File::parse(data).map_err(|e| anyhow!("{path}: not a readable ELF object: {e}"))?;
    if file.architecture() != object::Architecture::Bpf {
        bail!("{path}: not a BPF object (architecture {:?})", file.architecture());
    }
    if !file.is_little_endian() {
        bail!("{path}: big-endian BPF object (bpfeb); only little-endian (bpfel) is supported");
    }
    let mut out = format!("{path}:\tfile format elf64-bpf\n");
    let mut found = false;
    let mut names = Vec::new();
    for section in file.sections() {
        let exec = matches!(section.flags(), SectionFlags::Elf { sh_flags } if sh_flags & u64::from(object::elf::SHF_EXECINSTR) != 0);
        let name = section.name().map_err(|e| anyhow!("{path}: section {}: bad name: {e}", section.index().0))?;
        if !exec || section.size() == 0 {
            continue;
        }
        names.push(name.to_string());
        if only.is_some_and(|s| s != name) {
            continue;
        }
        found = true;
        let bytes = section.data().map_err(|e| anyhow!("{path}: section {name}: cannot read contents: {e}"))?;
        if bytes.len() % 8 != 0 {
            bail!("{path}: section {name}: size {} is not a multiple of 8 (slot {} is truncated)", bytes.len(), bytes.len() / 8);
        }
        let insns = kops_isa::decode::decode_relocatable(bytes)
            .map_err(|e| anyhow!("{path}: section {name}: {e}"))?;

        // Function symbols of this section, by slot. Fall back to the section name at 0
        // (as llvm-objdump does) when no symbol starts there.
        let mut labels: BTreeMap<usize, Vec<String>> = BTreeMap::new();
        for sym in file.symbols() {
            if sym.section_index() == Some(section.index()) && sym.kind() == SymbolKind::Text {
                if let Ok(n) = sym.name() {
                    if !n.is_empty() && sym.address() % 8 == 0 {
                        labels.entry((sym.address() / 8) as usize).or_default().push(n.to_string());
                    }
                }
            }
        }
        labels.entry(0).or_insert_with(|| vec![name.to_string()]);

        out += &format!("\nDisassembly of section {name}:\n");
        for (pc, text) in format_program(&insns, opts) {
            if let Some(ls) = labels.get(&pc) {
                for l in ls {
                    out += &format!("\n<{l}>:\n");
                }
            }
            out += &format!("{pc:>8}:\t{text}\n");
        }
    }
    if let Some(s) = only {
        if !found {
            bail!("{path}: no executable section `{s}` (have: {})", names.join(", "));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use object::write;
    use std::path::Path;
    use std::process::Command;

    fn elf_with_text(name: &str, code: &[u8]) -> Vec<u8> {
        let mut obj = write::Object::new(object::BinaryFormat::Elf, object::Architecture::Bpf, object::Endianness::Little);
        let sec = obj.add_section(Vec::new(), name.as_bytes().to_vec(), object::SectionKind::Text);
        obj.append_section_data(sec, code, 8);
        obj.add_symbol(write::Symbol {
            name: b"prog".to_vec(),
            value: 0,
            size: code.len() as u64,
            kind: SymbolKind::Text,
            scope: object::SymbolScope::Linkage,
            weak: false,
            section: write::SymbolSection::Section(sec),
            flags: object::SymbolFlags::None,
        });
        obj.write().unwrap()
    }

    const EXIT: [u8; 8] = [0x95, 0, 0, 0, 0, 0, 0, 0];
    const MOV_R0_1: [u8; 8] = [0xb7, 0, 0, 0, 1, 0, 0, 0];

    #[test]
    fn prints_labels_and_slots() {
        let elf = elf_with_text("xdp", &[MOV_R0_1, EXIT].concat());
        let s = disassemble("t.o", &elf, None, Options::default()).unwrap();
        assert!(s.contains("Disassembly of section xdp:\n\n<prog>:\n       0:\tr0 = 0x1\n       1:\texit\n"), "{s}");
        assert!(disassemble("t.o", &elf, Some("xdp"), Options::default()).is_ok());
        let e = disassemble("t.o", &elf, Some("tc"), Options::default()).unwrap_err().to_string();
        assert!(e.contains("no executable section `tc`") && e.contains("xdp"), "{e}");
    }

    #[test]
    fn bad_inputs_name_file_section_slot() {
        let e = disassemble("x.o", b"not an elf at all", None, Options::default()).unwrap_err().to_string();
        assert!(e.starts_with("x.o: not a readable ELF object"), "{e}");

        let elf = elf_with_text("xdp", &[MOV_R0_1, EXIT].concat());
        let e = disassemble("x.o", &elf[..elf.len() / 2], None, Options::default()).unwrap_err().to_string();
        assert!(e.starts_with("x.o: "), "{e}");

        let elf = elf_with_text("xdp", &[&MOV_R0_1[..], &EXIT[..], &[0x95, 0, 0][..]].concat());
        let e = disassemble("x.o", &elf, None, Options::default()).unwrap_err().to_string();
        assert_eq!(e, "x.o: section xdp: size 19 is not a multiple of 8 (slot 2 is truncated)");

        let elf = elf_with_text("xdp", &[MOV_R0_1, [0xb7, 0x0c, 0, 0, 0, 0, 0, 0], EXIT].concat());
        let e = disassemble("x.o", &elf, None, Options::default()).unwrap_err().to_string();
        assert_eq!(e, "x.o: section xdp: instruction 1 (byte offset 8): opcode 0xb7: dst_reg is 12, must be a register r0..r10");

        let elf = elf_with_text("xdp", &[[0x18, 1, 0, 0, 0, 0, 0, 0]].concat());
        let e = disassemble("x.o", &elf, None, Options::default()).unwrap_err().to_string();
        assert!(e.contains("section xdp: instruction 0 (byte offset 0): ld_imm64 without its second slot"), "{e}");

        let elf = elf_with_text("xdp", &[[0x05, 0, 5, 0, 0, 0, 0, 0], EXIT].concat());
        let e = disassemble("x.o", &elf, None, Options::default()).unwrap_err().to_string();
        assert!(e.contains("section xdp: instruction 0 (byte offset 0): target 6 is outside the program"), "{e}");
    }

    #[test]
    fn main_exit_codes() {
        assert_eq!(crate::run_cli(&["kops", "disasm", "--help"]), 0);
        assert_eq!(crate::run_cli(&["kops", "disasm"]), 2);
        assert_eq!(crate::run_cli(&["kops", "disasm", "/nonexistent/x.o"]), 1);
    }

    /// `kops disasm` against `llvm-objdump-19 -d` on every bundled object: same sections,
    /// same labels, same instruction text at the same slot.
    #[test]
    fn bundled_objects_match_llvm_objdump() {
        let ok = Command::new("llvm-objdump-19").arg("--version").output().map(|o| o.status.success()).unwrap_or(false);
        if !ok {
            eprintln!("SKIPPED: llvm-objdump-19 not installed");
            return;
        }
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../bpf/out");
        let Ok(rd) = std::fs::read_dir(&dir) else {
            eprintln!("SKIPPED: no {}", dir.display());
            return;
        };
        let mut n = 0;
        for p in rd.map(|e| e.unwrap().path()).filter(|p| p.to_string_lossy().ends_with(".bpf.o")) {
            let ours = disassemble("f", &std::fs::read(&p).unwrap(), None, Options::default()).unwrap();
            let llvm = Command::new("llvm-objdump-19").args(["-d", "--no-show-raw-insn"]).arg(&p).output().unwrap();
            let llvm = String::from_utf8(llvm.stdout).unwrap();
            // Normalise llvm: drop the file line, address in labels and jump annotations.
            let norm_llvm: Vec<String> = llvm
                .lines()
                .filter(|l| !l.contains("file format") && !l.trim().is_empty())
                .map(|l| {
                    if let Some((_, label)) = l.split_once(" <").filter(|_| l.ends_with(">:") && !l.contains('\t')) {
                        format!("<{label}")
                    } else if l.contains(":\t") && l.ends_with('>') && !l.ends_with("<unknown>") {
                        l[..l.rfind(" <").unwrap()].to_string()
                    } else {
                        l.to_string()
                    }
                })
                .collect();
            let norm_ours: Vec<String> =
                ours.lines().filter(|l| !l.contains("file format") && !l.trim().is_empty()).map(String::from).collect();
            assert_eq!(norm_ours, norm_llvm, "{}", p.display());
            n += 1;
        }
        eprintln!("compared {n} bundled objects");
    }
}
