//! Bodies of the cargo-fuzz targets in `fuzz/` (one function per target), kept here so
//! they build and run under stable: the fuzz targets are one-line calls, and
//! `tests/regressions.rs` runs every file of `fuzz/regressions/<target>/` through its body
//! under `cargo test`.
//!
//! Every body takes arbitrary bytes. The rule it checks is the project's: bad input gets an
//! error naming the problem and its location, never a panic. A body panics (and so the
//! fuzzer reports a crash, and the regression test fails) when the code under test panics
//! or when an invariant stated below does not hold.
//!
//! - [`decode`]: the instruction decoder, validator and disassembler.
//! - [`object`]: the `.bpf.o` loader and the ELF re-serializer.
//! - [`rewrite`]: recognizer -> lowering -> restore round trip, and hostile kinsn sites.
//! - [`jit_vs_interp`]: the x86-64 JIT against the interpreter on generated programs.

use kops_jit_tools::gen;
use kops_jit_tools::gen::Choices;

use kops_isa::disasm::{self, Options};
use kops_isa::Insn;
use kops_object::{Object, ProgType, Program, Subprog};

/// The instruction decoder: raw slots, classification, (relocatable) validation, every
/// disassembly dialect, and the encode round trip.
///
/// Invariants: slots re-encode to exactly the input bytes; a program that [`kops_isa::decode`]
/// accepts classifies slot by slot, and none of its instructions disassembles as
/// `<invalid: ...>`; whatever `decode` accepts, `decode_relocatable` accepts.
pub fn decode(data: &[u8]) {
    // Whole slots only (a trailing partial slot is the length error; check it is one).
    let whole = data.len() / 8 * 8;
    if whole != data.len() {
        assert!(kops_isa::slots_from_bytes(data).is_err());
        assert!(kops_isa::decode(data).is_err());
    }
    let bytes = &data[..whole];
    let slots = kops_isa::slots_from_bytes(bytes).expect("whole slots");
    assert_eq!(kops_isa::to_bytes(&slots), bytes, "encode(decode(bytes)) != bytes");
    for i in &slots {
        let _ = kops_isa::decode::classify(i);
        let _ = i.target(u32::MAX as usize);
    }
    let _ = kops_isa::decode::kinds(&slots);
    let strict = kops_isa::decode(bytes);
    let reloc = kops_isa::decode::decode_relocatable(bytes);
    if let Err(e) = &strict {
        let _ = e.to_string();
    }
    if let Err(e) = &reloc {
        let _ = e.to_string();
    }
    if strict.is_ok() {
        assert!(reloc.is_ok(), "decode accepts what decode_relocatable rejects: {:?}", reloc.err());
    }
    for opts in [Options::LLVM, Options::LLVM_ALU32, Options { alu32: false, kinsn: true }] {
        let listing = disasm::format_program(&slots, opts);
        if strict.is_ok() {
            for (pc, text) in &listing {
                assert!(!text.starts_with("<invalid"), "valid instruction {pc} disassembles as {text}");
            }
        }
    }
    // Single-slot formatting, including out-of-range and second-slot positions.
    for pc in 0..slots.len().min(64) + 1 {
        let _ = disasm::format(&slots, pc);
    }
}

/// The object loader: [`Object::parse`] of arbitrary bytes (seeded with the bundled
/// objects, which the fuzzer mutates), then the writer's plain re-serialization.
///
/// Invariant: an object that loads and re-serializes loads again with the same programs.
pub fn object(data: &[u8]) {
    let obj = match Object::parse(data, "fuzz.bpf.o") {
        Ok(o) => o,
        Err(e) => {
            let _ = e.to_string();
            return;
        }
    };
    for p in &obj.programs {
        let _ = kops_object::prog_type_from_section(&p.section);
        for s in &p.subprogs {
            assert!(s.start + s.len <= p.insns.len(), "program {}: subprog {} ({}+{}) outside its {} slots", p.name, s.name, s.start, s.len, p.insns.len());
        }
        let _ = disasm::format_program(&p.insns, Options::default());
    }
    let again = match kops_object::write::rewrite_functions(data, &[]) {
        Ok(b) => b,
        Err(e) => {
            let _ = e.to_string();
            return;
        }
    };
    let reloaded = Object::parse(&again, "fuzz.rewritten.bpf.o")
        .unwrap_or_else(|e| panic!("re-serialized object does not load: {e}"));
    same_programs(&obj, &reloaded, "re-serialized");
}

/// Every program of `a` is in `b`, in the same order, with the same instructions; `b` has
/// no other program except ones `a` could not build (`Object::broken`: writing an object
/// regenerates what made them unbuildable, such as bad line_info, from what loaded).
fn same_programs(a: &Object, b: &Object, what: &str) {
    let kept: Vec<&kops_object::Program> = b.programs.iter().filter(|q| a.program(&q.name).is_some()).collect();
    for q in &b.programs {
        assert!(
            a.program(&q.name).is_some() || a.broken.iter().any(|x| x.name == q.name),
            "{what} object has a program {} the original lacks",
            q.name
        );
    }
    assert_eq!(a.programs.len(), kept.len(), "{what} object has another program count");
    for (p, q) in a.programs.iter().zip(kept) {
        assert_eq!(p.name, q.name, "{what} object: program names differ");
        same_list(&q.insns, &p.insns, &format!("{what} object: program {} instructions", p.name));
    }
}

/// Panics with the first difference (not the whole lists: they can be long).
fn same_list<T: PartialEq + std::fmt::Debug>(got: &[T], want: &[T], what: &str) {
    if got == want {
        return;
    }
    match got.iter().zip(want).position(|(a, b)| a != b) {
        Some(k) => panic!("{what}: entry {k} is {:?}, expected {:?}", got[k], want[k]),
        None => panic!("{what}: {} entries, expected {}", got.len(), want.len()),
    }
}

/// Length of the control prefix of a [`rewrite`] input.
pub const REWRITE_PREFIX: usize = 32;

/// Recognizer + lowering + restore, then hostile kinsn sites.
///
/// Input: a [`REWRITE_PREFIX`]-byte control prefix, then either an ELF object (starts with
/// `\x7fELF`; seeded from `bpf/out`) or raw instruction bytes (one program). Prefix byte 0:
/// bit 0 policy `all` (else `auto`), bits 1-2 the number of hostile sites (0-3), bit 3
/// insert them (else overwrite two slots), bit 4 put them into the rewritten program (else
/// the original); byte 1 picks the program for hostile sites; then 3 sites of 10 bytes
/// (position u16, kind, op id, payload bits).
/// Kind: bits 0-2 the shape (site, lone sidecar, lone call, bad call fields, swapped,
/// split), bits 3-4 the payload width, bits 5-7 0 for an unknown op id.
///
/// Invariants: when the recognizer rewrites a program that lowers, the rewritten program
/// lowers too, and [`kops_kinsn::restore`] of the lowering gives back the rewritten program
/// exactly (instructions, func_info, line_info); for objects, what `kops rewrite` writes
/// loads back with the rewritten programs. Hostile sites give errors, never panics, and
/// when they do lower, restore gives back the instructions.
pub fn rewrite(data: &[u8]) {
    if data.len() < REWRITE_PREFIX {
        return;
    }
    let (ctl, rest) = data.split_at(REWRITE_PREFIX);
    let policy = kops_recognize::Policy {
        mode: if ctl[0] & 1 != 0 { kops_recognize::Mode::All } else { kops_recognize::Mode::Auto },
        passes: kops_recognize::Pass::ALL.to_vec(),
    };
    let registry = kops_einsn::registry();
    let is_elf = rest.starts_with(b"\x7fELF");
    let obj = if is_elf {
        match Object::parse(rest, "fuzz.bpf.o") {
            Ok(o) => o,
            Err(_) => return,
        }
    } else {
        let slots = kops_isa::slots_from_bytes(&rest[..rest.len() / 8 * 8]).expect("whole slots");
        if slots.is_empty() {
            return;
        }
        Object { programs: vec![raw_program(slots)], ..Object::empty("fuzz-insns", Vec::new()) }
    };

    // The round trip, per program.
    let mut rewritten = Vec::with_capacity(obj.programs.len());
    for p in &obj.programs {
        let orig_lowers = kops_kinsn::lower_program(p, &registry).is_ok();
        let r = match kops_recognize::run_program(p, &policy) {
            Ok(r) => r,
            Err(e) => {
                let _ = e.to_string();
                rewritten.push(None);
                continue;
            }
        };
        assert_eq!(r.old_to_new.len(), p.insns.len() + 1, "program {}: old_to_new length", p.name);
        let _ = r.report.sites.len();
        match kops_kinsn::lower_program(&r.program, &registry) {
            Ok((_, l)) => {
                let back = kops_kinsn::restore(&l).unwrap_or_else(|e| panic!("program {}: restore of a lowering fails: {e}", p.name));
                same_list(&back.insns, &r.program.insns, &format!("program {}: restore(lower(p)) instructions", p.name));
                same_list(&back.func_info, &r.program.func_info, &format!("program {}: restore(lower(p)) func_info", p.name));
                // restore() gives line_info in insn_off order (as the kernel wants it); a
                // hostile object may list it in another order.
                let mut want_li = r.program.line_info.clone();
                want_li.sort_by_key(|e| e.insn_off);
                same_list(&back.line_info, &want_li, &format!("program {}: restore(lower(p)) line_info", p.name));
                let starts: Vec<usize> = r.program.subprogs.iter().map(|s| s.start).collect();
                let _ = kops_kinsn::dead_after_sites(&r.program.insns, &starts, &r.program.func_info, &registry);
            }
            Err(e) => {
                assert!(!orig_lowers, "program {}: the recognizer made a program that lowers into one that does not: {e}", p.name);
            }
        }
        rewritten.push(Some(r));
    }

    // What `kops rewrite` writes must load back with the rewritten programs.
    if is_elf && rewritten.iter().all(Option::is_some) {
        let rs: Vec<_> = rewritten.iter().flatten().collect();
        let mut new = obj.clone();
        for (k, r) in rs.iter().enumerate() {
            new.programs[k] = r.program.clone();
        }
        let maps: Vec<Vec<usize>> = rs.iter().map(|r| r.old_to_new.clone()).collect();
        if let Ok(bytes) = kops_recognize::write_object(rest, &obj, &new, &maps) {
            let reloaded = Object::parse(&bytes, "fuzz.kops.o").unwrap_or_else(|e| panic!("rewritten object does not load: {e}"));
            same_programs(&new, &reloaded, "rewritten");
        }
    }

    // Hostile sites.
    let count = ((ctl[0] >> 1) & 3) as usize;
    if count == 0 || obj.programs.is_empty() {
        return;
    }
    let k = ctl[1] as usize % obj.programs.len();
    let mut prog = match (&rewritten[k], ctl[0] & 0x10 != 0) {
        (Some(r), true) => r.program.clone(),
        _ => obj.programs[k].clone(),
    };
    let insert = ctl[0] & 8 != 0;
    for s in ctl[2..2 + 10 * count].chunks_exact(10) {
        let slots = hostile_slots(s);
        let pos = u16::from_le_bytes([s[0], s[1]]) as usize % (prog.insns.len() + 1);
        if insert {
            for (j, i) in slots.iter().enumerate() {
                prog.insns.insert(pos + j, *i);
            }
            for sp in &mut prog.subprogs {
                if sp.start >= pos && sp.start > 0 {
                    sp.start += slots.len();
                } else if sp.start + sp.len >= pos {
                    sp.len += slots.len();
                }
            }
        } else {
            for (j, i) in slots.iter().enumerate() {
                if let Some(d) = prog.insns.get_mut(pos + j) {
                    *d = *i;
                }
            }
        }
    }
    hostile(&prog, &registry);
}

/// A one-function program around raw slots, as the loader would give it.
fn raw_program(insns: Vec<Insn>) -> Program {
    Program {
        name: "fuzz".into(),
        section: "xdp".into(),
        prog_type: ProgType::Xdp,
        prog_type_id: 6,
        expected_attach_type: 0,
        subprogs: vec![Subprog { name: "fuzz".into(), start: 0, len: insns.len(), section: "xdp".into(), sec_start: 0 }],
        insns,
        func_info: Vec::new(),
        line_info: Vec::new(),
    }
}

/// The slots of one hostile site from 10 control bytes (position, kind, op id, payload).
fn hostile_slots(s: &[u8]) -> Vec<Insn> {
    let kind = s[2];
    let id = match kind >> 5 {
        0 => u32::MAX - s[3] as u32,
        _ => (s[3] % 24) as u32,
    };
    let mut pb = [0u8; 8];
    pb[..6].copy_from_slice(&s[4..10]);
    // Narrow payloads now and then: with most fields 0 they pass validation more often,
    // so the lowering and the native emit see hostile but valid sites too.
    let width = [52, 8, 16, 24][(kind as usize >> 3) & 3];
    let payload = (u64::from_le_bytes(pb) | ((kind as u64 & 0x80) << 41)) & ((1u64 << width) - 1);
    let [side, call] = kops_kinsn::encode_site(id, payload).expect("52-bit payload");
    match kind & 0x7 {
        1 => vec![side],
        2 => vec![call],
        3 => vec![side, Insn { dst: 1 + (s[3] & 7), ..call }],
        4 => vec![side, Insn { off: s[3] as i16 + 1, ..call }],
        5 => vec![call, side],
        6 => vec![side, Insn::exit(), call],
        _ => vec![side, call],
    }
}

/// Everything that consumes kinsn sites, on a program with hostile ones.
fn hostile(prog: &Program, registry: &kops_kinsn::Registry) {
    let _ = kops_kinsn::find_sites(&prog.insns).map(|sites| {
        for s in sites {
            let _ = kops_kinsn::describe_site(registry, &s);
        }
    });
    let starts: Vec<usize> = prog.subprogs.iter().map(|s| s.start).collect();
    let _ = kops_kinsn::check_sites(&prog.insns, &starts, &prog.func_info, registry);
    let _ = kops_kinsn::dead_after_sites(&prog.insns, &starts, &prog.func_info, registry);
    let _ = kops_kinsn::plan_x86(
        &prog.insns,
        &starts,
        &prog.func_info,
        registry,
        kops_jit::CpuFeatures::NONE,
        &kops_jit::REGMAP,
        kops_jit::AUX_REG,
    );
    let _ = disasm::format_program(&prog.insns, Options { alu32: false, kinsn: true });
    match kops_kinsn::lower_program(prog, registry) {
        Ok((_, l)) => {
            let back = kops_kinsn::restore(&l).unwrap_or_else(|e| panic!("restore of a lowering of hostile sites fails: {e}"));
            same_list(&back.insns, &prog.insns, "hostile sites: restore(lower(p)) instructions");
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }
    // The recognizer on a program that already has (hostile) sites.
    let _ = kops_recognize::run_program(prog, &kops_recognize::Policy::default());
}

/// Largest generated program run by [`jit_vs_interp`] (slots).
const MAX_GEN_LEN: usize = 4096;

/// The JIT against the interpreter: a program from [`gen::program`] driven by the input
/// (byte 0: size, byte 1 bit 0: BMI2 off; then the generator's choices, then the buffer),
/// run on both engines.
///
/// Invariant: the interpreter runs every generated program (they are valid, terminating
/// and in bounds by construction) and the JIT leaves r0 and the 512-byte buffer (which
/// holds every register and the used stack at exit) exactly as the interpreter does.
pub fn jit_vs_interp(data: &[u8]) {
    let mut rng = gen::InputRng::new(data);
    let size = 1 + rng.below(80) as usize;
    let bmi2_off = rng.byte() & 1 != 0;
    let prog = gen::program(&mut rng, size);
    if prog.len() > MAX_GEN_LEN {
        return;
    }
    let buf: Vec<u8> = (0..gen::BUF_SIZE).map(|_| rng.byte()).collect();
    let mut opts = match kops_jit::JitOptions::runtime() {
        Ok(o) => o,
        Err(e) => panic!("JIT options: {e}"),
    };
    if bmi2_off {
        opts.features = kops_jit::CpuFeatures::NONE;
    }
    let want = run_generated(Box::new(kops_vm::interp::Interp), &prog, &buf);
    let got = run_generated(jit_engine(opts), &prog, &buf);
    match (want, got) {
        (Ok(w), Ok(g)) => {
            if w != g {
                let first_diff = w.1.iter().zip(&g.1).position(|(a, b)| a != b);
                panic!(
                    "JIT differs from the interpreter: interp r0={:#x} jit r0={:#x}, first buffer difference at {first_diff:?}\nprogram: {}",
                    w.0,
                    g.0,
                    listing(&prog)
                );
            }
        }
        (Err(e), _) => panic!("generated program rejected by the interpreter: {e}\nprogram: {}", listing(&prog)),
        (_, Err(e)) => panic!("JIT failed on a program the interpreter runs: {e}\nprogram: {}", listing(&prog)),
    }
}

fn listing(prog: &[Insn]) -> String {
    disasm::format_program(prog, Options::default()).into_iter().map(|(pc, t)| format!("\n{pc:4}: {t}")).collect()
}

/// The JIT engine as the generated-program test in `crates/vm/src/jit_engine.rs` builds it.
fn jit_engine(opts: kops_jit::JitOptions) -> Box<dyn kops_vm::Engine> {
    Box::new(kops_vm::jit_engine::JitEngine::with_options(opts))
}

/// A Vm for one engine, as the generated-program test in `crates/vm/src/jit_engine.rs`
/// makes it: the generated programs are safe by construction (terminating, in bounds) but
/// not kernel-verified, so native engines get the explicit, quiet opt-out of the gate.
fn vm_for(engine: Box<dyn kops_vm::Engine>) -> Result<kops_vm::Vm, kops_vm::VmError> {
    kops_vm::Vm::with_verifier(None, engine, Box::new(kops_vm::Unverified::quiet()))
}

/// Run a generated program with the generator's buffer; (r0, buffer after).
fn run_generated(engine: Box<dyn kops_vm::Engine>, insns: &[Insn], buf: &[u8]) -> Result<(u64, Vec<u8>), kops_vm::VmError> {
    let vm = vm_for(engine)?;
    let id = vm.load_insns(
        "gen",
        insns.to_vec(),
        Vec::new(),
        ProgType::Unspec,
        kops_vm::CtxKind::Mem,
        kops_vm::HelperTable::conformance(),
        true,
    )?;
    let r = vm.run(id, &kops_vm::ProgInput { data: buf.to_vec(), ctx: None })?;
    Ok((r.r0, r.data_out))
}
