//! The Cranelift engine against the interpreter: the conformance suite, random programs,
//! tail calls, legacy packet loads, kinsn sites (lowered), the verifier gate and bad input.

use kops_cranelift::CraneliftEngine;
use kops_isa::conformance::TestFile;
use kops_isa::{op, Insn};
use kops_vm::{CtxKind, Engine, HelperTable, ProgInput, Vm, VmError};

/// These tests run programs that are safe by construction (the suite, generated programs,
/// hand-written ones); the gate itself is tested in `gate_refuses_unverified_images`.
fn test_gate() -> Box<dyn kops_vm::Verifier> {
    Box::new(kops_vm::Unverified::quiet())
}

fn cranelift() -> Box<dyn Engine> {
    Box::new(CraneliftEngine::new().verify_ir())
}

/// Every file of the suite; expected r0 from the file. 313 passed, 0 failed.
#[test]
fn conformance_suite_on_cranelift() {
    let Some(files) = kops_isa::conformance::suite_files_for_test() else { return };
    let mut failures = Vec::new();
    for f in &files {
        let name = f.file_name().unwrap().to_string_lossy().to_string();
        let t = TestFile::parse(&std::fs::read_to_string(f).unwrap()).unwrap();
        let expected = t.result.expect("expected result");
        match kops_vm::run_conformance_with(&t.insns, &t.mem, Some(cranelift()), test_gate()) {
            Ok(r0) if r0 == expected => {}
            Ok(r0) => failures.push(format!("{name}: r0 = {r0:#x}, expected {expected:#x}")),
            Err(e) => failures.push(format!("{name}: {e}")),
        }
    }
    for f in &failures {
        eprintln!("FAIL {f}");
    }
    println!("{} passed, {} failed", files.len() - failures.len(), failures.len());
    assert!(failures.is_empty(), "{} conformance failures", failures.len());
    assert_eq!(files.len(), 313);
}

/// The suite once more without Cranelift's optimizer: the translation alone is right.
#[test]
fn conformance_suite_unoptimized() {
    let Some(files) = kops_isa::conformance::suite_files_for_test() else { return };
    for f in &files {
        let t = TestFile::parse(&std::fs::read_to_string(f).unwrap()).unwrap();
        let e = Box::new(CraneliftEngine::with_opt(kops_cranelift::OptLevel::None).verify_ir());
        let r0 = kops_vm::run_conformance_with(&t.insns, &t.mem, Some(e), test_gate()).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
        assert_eq!(Some(r0), t.result, "{}", f.display());
    }
}

/// Run `insns` on `engine` with the generator's buffer; (r0, buffer after).
fn run_on(engine: Box<dyn Engine>, insns: &[Insn], buf: &[u8]) -> Result<(u64, Vec<u8>), VmError> {
    let vm = Vm::with_verifier(None, engine, test_gate())?;
    let id =
        vm.load_insns("gen", insns.to_vec(), Vec::new(), kops_object::ProgType::Unspec, CtxKind::Mem, HelperTable::conformance(), true)?;
    let r = vm.run(id, &ProgInput { data: buf.to_vec(), ctx: None })?;
    Ok((r.r0, r.data_out))
}

/// Random programs (kops_jit_tools::gen: every ALU width and opcode, loads, stores,
/// atomics, jumps, loops, calls): r0 and the buffer (every register and the stack at
/// exit) exactly as the interpreter. 1500 programs; `KOPS_CRANELIFT_PROPTEST=N` for more.
#[test]
fn random_programs_match_interpreter() {
    let count: u64 = std::env::var("KOPS_CRANELIFT_PROPTEST").ok().and_then(|v| v.parse().ok()).unwrap_or(1500);
    let mut failures = Vec::new();
    for seed in 0..count {
        let mut rng = kops_jit_tools::gen::Rng::new(seed);
        let size = 10 + rng.below(60) as usize;
        let prog = kops_jit_tools::gen::program(&mut rng, size);
        let buf: Vec<u8> = (0..kops_jit_tools::gen::BUF_SIZE).map(|_| rng.next() as u8).collect();
        let want = run_on(Box::new(kops_vm::interp::Interp), &prog, &buf);
        let got = run_on(cranelift(), &prog, &buf);
        match (want, got) {
            (Ok(w), Ok(g)) if w == g => {}
            (Ok(w), Ok(g)) => {
                let first = w.1.iter().zip(&g.1).position(|(a, b)| a != b);
                failures.push(format!("seed {seed}: interp r0={:#x} cranelift r0={:#x}, first buffer difference at {first:?}", w.0, g.0));
            }
            (Err(e), _) => failures.push(format!("seed {seed}: the interpreter rejects the generated program: {e}")),
            (_, Err(e)) => failures.push(format!("seed {seed}: cranelift failed: {e}")),
        }
        if failures.len() > 10 {
            break;
        }
    }
    for f in &failures {
        eprintln!("{f}");
    }
    assert!(failures.is_empty(), "{} of {count} random programs differ", failures.len());
}

fn tail_object() -> kops_object::Object {
    use kops_object::{MapDef, MapOrigin, Object};
    Object::empty("tail-test", vec![MapDef::new("jmp", MapOrigin::Btf, kops_object::map_type::PROG_ARRAY, 4, 4, 4)])
}

/// `buf[0] += 1; tail_call(ctx, jmp, index); return stack + 2` with a spilled value.
fn tail_caller(index: i32) -> Vec<Insn> {
    let mut p = vec![
        Insn::mov64_reg(6, 1),
        Insn::st(op::DW, 10, -16, 5),
        Insn::ldx(op::DW, 2, 6, 0),
        Insn::alu64_imm(op::ADD, 2, 1),
        Insn::stx(op::DW, 6, 2, 0),
        Insn::mov64_reg(1, 6),
    ];
    p.extend(Insn::ld_imm64(2, op::PSEUDO_MAP_IDX, 0));
    p.extend([
        Insn::mov64_imm(3, index),
        Insn::call_helper(12),
        Insn::ldx(op::DW, 0, 10, -16),
        Insn::alu64_imm(op::ADD, 0, 2),
        Insn::exit(),
    ]);
    p
}

/// (r0, buf[0]) after running the caller with slot 0 = `target` (0: a callee returning
/// 42, 1: the caller itself).
fn tail_run(engine: Box<dyn Engine>, index: i32, target: usize) -> (u64, u64) {
    let obj = tail_object();
    let vm = Vm::with_verifier(Some(&obj), engine, test_gate()).unwrap();
    let load = |name: &str, insns: Vec<Insn>| {
        vm.load_insns(name, insns, Vec::new(), kops_object::ProgType::Unspec, CtxKind::Mem, HelperTable::kernel(), false).unwrap()
    };
    let b = load("callee", vec![Insn::mov64_imm(0, 42), Insn::exit()]);
    let a = load("caller", tail_caller(index));
    vm.set_prog_array(0, 0, Some(if target == 0 { b } else { a })).unwrap();
    let r = vm.run(a, &ProgInput { data: vec![0; 8], ctx: None }).unwrap();
    (r.r0, u64::from_le_bytes(r.data_out[..8].try_into().unwrap()))
}

/// Taken, empty-slot, out-of-range and self tail calls (33 at most) as on the interpreter.
#[test]
fn tail_calls_match_interpreter() {
    for (index, target) in [(0, 0), (1, 0), (7, 0), (0, 1)] {
        let want = tail_run(Box::new(kops_vm::interp::Interp), index, target);
        let got = tail_run(cranelift(), index, target);
        assert_eq!(got, want, "index {index} target {target}");
    }
    // Hand-computed: the callee's 42; an empty slot falls through to 5 + 2; the self call
    // runs 1 + 33 times before falling through.
    assert_eq!(tail_run(cranelift(), 0, 0), (42, 1));
    assert_eq!(tail_run(cranelift(), 1, 0), (7, 1));
    assert_eq!(tail_run(cranelift(), 0, 1), (7, 34));
}

/// LD_ABS / LD_IND on tc and socket-filter contexts, in and out of range, against the
/// interpreter (and two hand-computed values).
#[test]
fn legacy_packet_loads_match_interpreter() {
    let ld_abs = |sz: u8, imm: i32| Insn::new(op::LD | op::ABS | sz, 0, 0, 0, imm);
    let ld_ind = |sz: u8, src: u8, imm: i32| Insn::new(op::LD | op::IND | sz, 0, src, 0, imm);
    let prog = |abs_off: i32, ind_off: i32| {
        vec![
            Insn::mov64_reg(6, 1),
            Insn::mov64_imm(7, 0),
            ld_abs(op::H, 12),
            Insn::mov64_reg(7, 0),
            Insn::alu64_imm(op::LSH, 7, 32),
            Insn::mov64_imm(8, 2),
            ld_ind(op::B, 8, abs_off),
            Insn::alu64_reg(op::OR, 7, 0),
            ld_abs(op::W, ind_off),
            Insn::alu64_imm(op::LSH, 0, 8),
            Insn::alu64_reg(op::XOR, 0, 7),
            Insn::exit(),
        ]
    };
    let run = |engine: Box<dyn Engine>, insns: &[Insn], tc: bool, pkt: &[u8]| -> u64 {
        let vm = Vm::with_verifier(None, engine, test_gate()).unwrap();
        let pt = if tc { kops_object::ProgType::SchedCls } else { kops_object::ProgType::SocketFilter };
        let id = vm.load_insns("ldabs", insns.to_vec(), Vec::new(), pt, CtxKind::for_prog_type(pt), HelperTable::kernel(), false).unwrap();
        vm.run(id, &ProgInput::packet(pkt)).unwrap().r0
    };
    let pkt: Vec<u8> = (0u8..64).collect();
    let want = ((0x0c0du64 << 32) | 6) ^ (0x0809_0a0bu64 << 8);
    assert_eq!(run(cranelift(), &prog(4, 8), true, &pkt), want);
    assert_eq!(run(cranelift(), &prog(4, 62), true, &pkt), 0);
    let offs = [0, 1, 13, 60, 100, 1500, -1, -0x10_0000, -0x10_0000 + 3, -0x20_0000, -0x20_0000 + 13, -0x30_0000];
    for &a in &offs {
        for &b in &offs {
            for tc in [false, true] {
                let i = run(Box::new(kops_vm::interp::Interp), &prog(a, b), tc, &pkt);
                let j = run(cranelift(), &prog(a, b), tc, &pkt);
                assert_eq!(i, j, "offsets {a} {b} tc {tc}");
            }
        }
    }
}

/// A program with kinsn sites (rotate and popcount) runs lowered and computes Rust's
/// rotate_left ^ count_ones.
#[test]
fn kinsn_sites_run_lowered() {
    use kops_einsn::{EInsn, Popcount64, Rotate64};
    let mut p = Insn::ld_imm64(1, 0, 0x0123_4567_89ab_cdef).to_vec();
    p.extend(Rotate64::new(0, 1, 2, 13, true).unwrap().site().unwrap());
    p.extend(Popcount64::new(3, 1, 4, 5).unwrap().site().unwrap());
    p.extend([Insn::alu64_reg(op::XOR, 0, 3), Insn::exit()]);
    let x = 0x0123_4567_89ab_cdefu64;
    let e = Box::new(kops_vm::Lowering::new(CraneliftEngine::new().verify_ir(), kops_einsn::registry()));
    let vm = Vm::with_verifier(None, e, test_gate()).unwrap();
    let id = vm.load_insns("t", p, Vec::new(), kops_object::ProgType::Unspec, CtxKind::Mem, HelperTable::kernel(), false).unwrap();
    assert_eq!(vm.program(id).unwrap().kinsn_sites, 2);
    let r = vm.run(id, &ProgInput { data: vec![0; 8], ctx: None }).unwrap();
    assert_eq!(r.r0, x.rotate_left(13) ^ x.count_ones() as u64);
}

/// Without a verifier the engine compiles nothing.
#[test]
fn gate_refuses_unverified_images() {
    let vm = Vm::with_engine(None, cranelift()).unwrap();
    let r = vm.load_insns(
        "t",
        vec![Insn::mov64_imm(0, 1), Insn::exit()],
        Vec::new(),
        kops_object::ProgType::Unspec,
        CtxKind::Mem,
        HelperTable::kernel(),
        false,
    );
    match r {
        Err(e) => assert!(e.to_string().contains("verif"), "{e}"),
        Ok(_) => panic!("an unverified program was compiled"),
    }
}

/// Malformed programs are load errors naming the instruction, never panics.
#[test]
fn bad_programs_are_errors() {
    let cases: Vec<(Vec<Insn>, &str)> = vec![
        (vec![Insn::mov64_imm(0, 1)], "fall off the end"),
        (vec![Insn::mov64_imm(0, 1), Insn::new(op::JMP | op::JA, 0, 0, 5, 0), Insn::exit()], "jump"),
        (vec![Insn::new(0xff, 0, 0, 0, 0), Insn::exit()], "invalid"),
        (vec![Insn::call_helper(9999), Insn::exit()], "helper"),
    ];
    for (p, what) in cases {
        let vm = Vm::with_verifier(None, cranelift(), test_gate()).unwrap();
        match vm.load_insns("bad", p.clone(), Vec::new(), kops_object::ProgType::Unspec, CtxKind::Mem, HelperTable::kernel(), false) {
            Err(e) => assert!(e.to_string().to_lowercase().contains(what), "{what}: {e}"),
            Ok(_) => panic!("{what}: loaded {p:?}"),
        }
        // The compiler itself (without the Vm's checks first) refuses too.
        assert!(kops_cranelift::compile(&p, &HelperTable::kernel(), false, kops_cranelift::Config::default()).is_err(), "{what}");
    }
}

/// The second compile of the same image is served from the cache, and stats say so.
#[test]
fn compile_cache_and_stats() {
    let p = vec![Insn::mov64_imm(0, 3), Insn::alu64_imm(op::MUL, 0, 7), Insn::exit()];
    for _ in 0..2 {
        let vm = Vm::with_verifier(None, cranelift(), test_gate()).unwrap();
        let id = vm
            .load_insns("cache-me", p.clone(), Vec::new(), kops_object::ProgType::Unspec, CtxKind::Mem, HelperTable::kernel(), false)
            .unwrap();
        assert_eq!(vm.run(id, &ProgInput { data: vec![0; 8], ctx: None }).unwrap().r0, 21);
    }
    let s: Vec<_> = kops_cranelift::stats().into_iter().filter(|s| s.name == "cache-me").collect();
    assert_eq!(s.len(), 2);
    assert!(!s[0].cached && s[0].micros > 0.0 && s[0].code_bytes > 0);
    assert!(s[1].cached);
}

/// A program with one site of every EInsn op: the Cranelift engine taking the sites
/// itself (rotates and popcounts as `rotl`/`popcnt`, the rest as proof sequences) and
/// lowered, against the lowering interpreter; rotates and popcounts with their temporaries
/// live afterwards (the program stores every register).
#[test]
fn every_op_native_sites_match_interpreter() {
    use kops_einsn::*;
    let mut p = vec![Insn::mov64_reg(6, 1)];
    p.extend(Memset::new(10, -64, 8, 8, 0).unwrap().site().unwrap());
    p.extend(Insn::ld_imm64(1, 0, 0x0123_4567_89ab_cdef));
    p.push(Insn::stx(op::DW, 10, 1, -8));
    p.extend(EndianLoad64::new(2, 10, -8).unwrap().site().unwrap());
    p.extend(EndianLoad32::new(3, 10, -8).unwrap().site().unwrap());
    p.extend(EndianLoad16::new(4, 10, -6).unwrap().site().unwrap());
    p.extend(Rotate64::new(2, 2, 5, 13, false).unwrap().site().unwrap());
    p.extend(Rotate32::new(3, 3, 5, 7, true).unwrap().site().unwrap());
    p.extend(Select::new(0, 2, 3, 4, false, false).unwrap().site().unwrap());
    p.extend(Extract::new(0, 0, 3, 5).unwrap().site().unwrap());
    p.extend(Popcount64::new(7, 2, 8, 9).unwrap().site().unwrap());
    p.extend(Popcount32::new(8, 3, 9).unwrap().site().unwrap());
    p.push(Insn::alu64_reg(op::ADD, 7, 8));
    p.extend(Memcpy::new(10, -32, 10, -64, 1, 8, 4, true).unwrap().site().unwrap());
    p.push(Insn::ldx(op::DW, 1, 10, -8));
    p.push(Insn::alu64_reg(op::XOR, 7, 1));
    p.extend(Prefetch::new(10, -8).unwrap().site().unwrap());
    p.extend(SpecBarrier.site().unwrap());
    p.extend(Extract::new(1, 7, 0, 32).unwrap().site().unwrap());
    p.extend(Rotate64::new(4, 7, 5, 3, true).unwrap().site().unwrap());
    p.extend(Popcount64::new(3, 4, 8, 9).unwrap().site().unwrap());
    p.extend(SelectCmp::new(5, 7, 8, op::JGT, false, 2, false).unwrap().site().unwrap());
    p.extend(SelectCmp::new(4, 3, 2, op::JSLT, true, 7, true).unwrap().site().unwrap());
    p.extend(SelectCmp::new(2, 2, 3, op::JSET, false, 4, false).unwrap().site().unwrap());
    p.extend(Select::new(9, 5, 4, 2, true, true).unwrap().site().unwrap());
    // Every register into the buffer (r6), so temporaries count too.
    for r in [0u8, 1, 2, 3, 4, 5, 7, 8, 9] {
        p.push(Insn::stx(op::DW, 6, r, 8 * r as i16));
    }
    p.extend([Insn::alu64_reg(op::ADD, 0, 1), Insn::alu64_reg(op::XOR, 0, 7), Insn::exit()]);
    let reg = kops_einsn::registry();
    let run = |e: Box<dyn Engine>| {
        let vm = Vm::with_verifier(None, e, test_gate()).unwrap();
        let id =
            vm.load_insns("all", p.clone(), Vec::new(), kops_object::ProgType::Unspec, CtxKind::Mem, HelperTable::kernel(), false).unwrap();
        let r = vm.run(id, &ProgInput { data: vec![0; 80], ctx: None }).unwrap();
        (r.r0, r.data_out)
    };
    let want = run(Box::new(kops_vm::Lowering::new(kops_vm::interp::Interp, reg.clone())));
    assert_eq!(run(Box::new(CraneliftEngine::new().verify_ir().with_kinsn(reg.clone()))), want, "native sites");
    // Three rotates, three population counts, two selects and three compare-selects went
    // to rotl/popcnt/select.
    assert_eq!(kops_cranelift::last_stat("all").map(|s| s.native_sites), Some(11));
    assert_eq!(run(Box::new(kops_vm::Lowering::new(CraneliftEngine::new().verify_ir(), reg.clone()))), want, "lowered");
    assert_eq!(
        run(Box::new(CraneliftEngine::with_opt(kops_cranelift::OptLevel::None).verify_ir().with_kinsn(reg))),
        want,
        "native, unoptimized"
    );
}

/// Random sites of the ops the engine compiles to Cranelift operations (rotates,
/// population counts, selects, compare-selects), every register aliasing the payload
/// allows, on random and edge-case register values: every register after the site as on
/// the lowering interpreter.
#[test]
fn random_native_sites_match_interpreter() {
    use kops_einsn::*;
    const REGS: [u8; 9] = [0, 1, 2, 3, 4, 5, 7, 8, 9];
    const EDGES: [u64; 8] = [0, 1, u64::MAX, 0x8000_0000, 0xffff_ffff, 0x1_0000_0000, 0x8000_0000_0000_0000, 0x7fff_ffff];
    let reg = kops_einsn::registry();
    let mut rng = kops_rng::Rng::new(99);
    let mut checked = 0;
    for _ in 0..600 {
        let r = |rng: &mut kops_rng::Rng| REGS[rng.below(REGS.len() as u64) as usize];
        let flag = |rng: &mut kops_rng::Rng| rng.below(2) == 1;
        let site = match rng.below(7) {
            6 => Abs::new(r(&mut rng), r(&mut rng), r(&mut rng), flag(&mut rng)).ok().map(|s| s.site()),
            0 => Rotate64::new(r(&mut rng), r(&mut rng), r(&mut rng), 1 + rng.below(63) as u8, flag(&mut rng)).ok().map(|s| s.site()),
            1 => Rotate32::new(r(&mut rng), r(&mut rng), r(&mut rng), 1 + rng.below(31) as u8, flag(&mut rng)).ok().map(|s| s.site()),
            2 => Popcount64::new(r(&mut rng), r(&mut rng), r(&mut rng), r(&mut rng)).ok().map(|s| s.site()),
            3 => Popcount32::new(r(&mut rng), r(&mut rng), r(&mut rng)).ok().map(|s| s.site()),
            4 => Select::new(r(&mut rng), r(&mut rng), r(&mut rng), r(&mut rng), flag(&mut rng), flag(&mut rng)).ok().map(|s| s.site()),
            _ => {
                let cmp = CMP_OPS[rng.below(CMP_OPS.len() as u64) as usize];
                SelectCmp::new(r(&mut rng), r(&mut rng), r(&mut rng), cmp, flag(&mut rng), r(&mut rng), flag(&mut rng))
                    .ok()
                    .map(|s| s.site())
            }
        };
        let Some(Ok(site)) = site else { continue };
        let mut p = vec![Insn::mov64_reg(6, 1)];
        for (k, &rg) in REGS.iter().enumerate() {
            p.push(Insn::ldx(op::DW, rg, 6, 8 * k as i16));
        }
        p.extend(site);
        for (k, &rg) in REGS.iter().enumerate() {
            p.push(Insn::stx(op::DW, 6, rg, 8 * k as i16));
        }
        p.push(Insn::exit());
        let buf: Vec<u8> =
            (0..REGS.len()).flat_map(|_| if rng.below(2) == 0 { EDGES[rng.below(8) as usize] } else { rng.next() }.to_le_bytes()).collect();
        let run = |e: Box<dyn Engine>| {
            let vm = Vm::with_verifier(None, e, test_gate()).unwrap();
            let id = vm
                .load_insns("site", p.clone(), Vec::new(), kops_object::ProgType::Unspec, CtxKind::Mem, HelperTable::kernel(), false)
                .unwrap();
            let r = vm.run(id, &ProgInput { data: buf.clone(), ctx: None }).unwrap();
            (r.r0, r.data_out)
        };
        let want = run(Box::new(kops_vm::Lowering::new(kops_vm::interp::Interp, reg.clone())));
        let got = run(Box::new(CraneliftEngine::new().verify_ir().with_kinsn(reg.clone())));
        assert_eq!(got, want, "program {p:?}");
        assert_eq!(kops_cranelift::last_stat("site").map(|s| s.native_sites), Some(1));
        checked += 1;
    }
    assert!(checked > 300, "only {checked} valid sites");
}

/// Bad input never panics the compiler: generated programs with random slots overwritten
/// by random bytes (jumps anywhere, bad opcodes, calls into the middle of functions,
/// unreachable code, falling off the end) compile or fail with an error; nothing runs.
#[test]
fn mutated_programs_compile_or_fail_cleanly() {
    let mut rng = kops_rng::Rng::new(4242);
    let (mut ok, mut err) = (0, 0);
    let count: u64 = std::env::var("KOPS_CRANELIFT_MUTATIONS").ok().and_then(|v| v.parse().ok()).unwrap_or(1500);
    for seed in 0..count {
        let mut g = kops_jit_tools::gen::Rng::new(seed);
        let size = 5 + g.below(30) as usize;
        let mut p = kops_jit_tools::gen::program(&mut g, size);
        for _ in 0..1 + rng.below(4) {
            let k = rng.below(p.len() as u64) as usize;
            let mut b = p[k].to_bytes();
            match rng.below(3) {
                0 => b = rng.next().to_le_bytes(),
                1 => b[rng.below(8) as usize] ^= 1 << rng.below(8),
                _ => b[2..4].copy_from_slice(&(rng.next() as i16 % 64).to_le_bytes()),
            }
            p[k] = Insn::from_bytes(b);
        }
        let conformance = seed % 2 == 0;
        let helpers = if conformance { HelperTable::conformance() } else { HelperTable::kernel() };
        match kops_cranelift::compile(&p, &helpers, conformance, kops_cranelift::Config { verify_ir: true, ..Default::default() }) {
            Ok(_) => ok += 1,
            Err(e) => {
                assert!(!e.msg.is_empty());
                err += 1
            }
        }
    }
    // Both outcomes occur: the mutations are neither all harmless nor all fatal.
    assert!(ok > 100 && err > 100, "{ok} compiled, {err} refused");
}
