//! Planted wrong emits: each is made by patching the bytes a real EInsn emitter produced
//! (rotate by k+1, cmov with the condition inverted, extract mask one bit too wide, bswap
//! left out). The prover must refute each, and its counterexample must really differ when
//! run concretely: the mutated bytes on the CPU, the proof sequence on the interpreter.

#[path = "../../einsn/tests/harness/mod.rs"]
mod harness;

use harness::{ExecPage, X86State};
use iced_x86::{Decoder, DecoderOptions, Mnemonic, OpKind};
use kops_analysis::RegSet;
use kops_einsn::*;
use kops_isa::{op, Insn};
use kops_kinsn::payload::Payload;
use kops_kinsn::{emit_x86_checked, KinsnOp};
use kops_prove::{check, Relaxation, Verdict, BPF_TO_X86};
use kops_x86::{CpuFeatures, Feature};

fn emit(op: &dyn KinsnOp, payload: u64, feats: CpuFeatures) -> Vec<u8> {
    emit_x86_checked(op, payload, feats, RegSet(0), &kops_jit::REGMAP, kops_jit::AUX_REG)
        .unwrap()
        .expect("native form expected")
}

/// Byte range of the first instruction with mnemonic `m`.
fn find(code: &[u8], m: Mnemonic) -> (usize, usize, iced_x86::Instruction) {
    let mut d = Decoder::with_ip(64, code, 0, DecoderOptions::NONE);
    while d.can_decode() {
        let i = d.decode();
        if i.mnemonic() == m {
            return (i.ip() as usize, i.len(), i);
        }
    }
    panic!("no {m:?} in the emitted code {code:02x?}");
}

fn first_cmov(code: &[u8]) -> (usize, usize) {
    let mut d = Decoder::with_ip(64, code, 0, DecoderOptions::NONE);
    while d.can_decode() {
        let i = d.decode();
        if format!("{:?}", i.mnemonic()).starts_with("Cmov") {
            return (i.ip() as usize, i.len());
        }
    }
    panic!("no cmov in {code:02x?}");
}

/// Prove `proof` against `mutated`; require a refutation in BPF register `out`, then run
/// the counterexample concretely on both sides and return (interpreter, native) values.
fn refute_and_run(proof: &[Insn], mutated: &[u8], out: u8, base: Option<u8>) -> (u64, u64) {
    let v = check(proof, mutated, Relaxation { dead_bpf: 0, scratch_x86: 1 << 11 }).unwrap();
    let Verdict::Refuted { inputs, memory, differs } = v else {
        panic!("planted wrong emit was proven equal");
    };
    assert!(differs.starts_with(&format!("r{out} ")), "differs in {differs}, expected r{out}");
    let val = |n: &str| inputs.iter().find(|(m, _)| m == n).map_or(0, |x| x.1);
    let regs: [u64; 11] = std::array::from_fn(|i| val(&format!("r{i}")));

    // Memory the counterexample reads, relocated into a buffer (the ops compute addresses
    // only as base + offset, so shifting the base shifts every access alike).
    let lo = memory.iter().map(|m| m.0).min().unwrap_or(0);
    let hi = memory.iter().map(|m| m.0).max().unwrap_or(0);
    let mut buf = vec![0u8; (hi - lo) as usize + 1];
    for &(a, b) in &memory {
        buf[(a - lo) as usize] = b;
    }
    if base.is_some() {
        assert!(!memory.is_empty(), "a load's counterexample must say what memory held");
    }

    // Interpreter: r1 points at the buffer; set the base from it, then every register.
    let mut p: Vec<Insn> = Vec::new();
    if let Some(b) = base {
        let off = regs[b as usize].wrapping_sub(lo);
        let t = if b == 1 { 0 } else { b };
        p.extend(Insn::ld_imm64(t, 0, off));
        if b == 1 {
            p.push(Insn::alu64_reg(op::ADD, 1, 0));
        } else {
            p.push(Insn::alu64_reg(op::ADD, b, 1));
        }
    }
    for r in 0..10u8 {
        if Some(r) != base {
            p.extend(Insn::ld_imm64(r, 0, regs[r as usize]));
        }
    }
    p.extend_from_slice(proof);
    p.push(Insn::mov64_reg(0, out));
    p.push(Insn::exit());
    let interp = kops_vm::run_conformance(&p, &buf, None).expect("interpreter runs the proof");

    // Native: the same registers through the JIT's map, the base relocated into `buf`.
    let mut st: X86State = [0; 18];
    for (x, slot) in st.iter_mut().enumerate().take(16) {
        *slot = val(&format!("x86_{}", kops_prove::X86_NAMES[x]));
    }
    for b in 0..11 {
        st[BPF_TO_X86[b]] = regs[b];
    }
    if let Some(b) = base {
        let delta = (buf.as_ptr() as u64).wrapping_sub(lo);
        st[BPF_TO_X86[b as usize]] = regs[b as usize].wrapping_add(delta);
    }
    let mut page = ExecPage::new(4096);
    page.install(mutated);
    // SAFETY: the mutated code reads only through the base register, relocated into
    // `buf` above, and keeps the stack balanced (only an immediate or a cc was changed).
    unsafe { page.run(&mut st) };
    let native = st[BPF_TO_X86[out as usize]];
    assert_ne!(interp, native, "counterexample does not differ when run concretely");
    (interp, native)
}

#[test]
fn rotate_by_k_plus_one_is_refuted() {
    let p = Rotate64::new(0, 1, 1, 13, false).unwrap();
    let op = Op::<Rotate64>::new();
    let mut code = emit(&op, p.encode().unwrap(), CpuFeatures::all().without(Feature::Bmi2));
    let (at, len, _) = find(&code, Mnemonic::Rol);
    code[at + len - 1] += 1; // rol r, 13 -> rol r, 14
    let (interp, native) = refute_and_run(&p.proof(), &code, 0, None);
    // The interpreter side is the real rotate; the mutant rotates one further.
    assert_eq!(native, interp.rotate_left(1));
}

#[test]
fn inverted_cmov_is_refuted() {
    let p = Select::new(0, 1, 2, 3, false, false).unwrap();
    let op = Op::<Select>::new();
    let mut code = emit(&op, p.encode().unwrap(), CpuFeatures::all());
    let (at, len) = first_cmov(&code);
    let cc = (at..at + len - 1).find(|&i| code[i] == 0x0f && (code[i + 1] & 0xf0) == 0x40).unwrap() + 1;
    code[cc] ^= 1; // cmovcc -> cmov!cc
    refute_and_run(&p.proof(), &code, 0, None);
}

#[test]
fn extract_mask_one_bit_too_wide_is_refuted() {
    let p = Extract::new(0, 1, 3, 5).unwrap();
    let op = Op::<Extract>::new();
    let mut code = emit(&op, p.encode().unwrap(), CpuFeatures::all());
    let (at, len, ins) = find(&code, Mnemonic::And);
    let imm_at = match ins.op_kind(1) {
        OpKind::Immediate8to32 | OpKind::Immediate8to64 | OpKind::Immediate8 => at + len - 1,
        _ => at + len - 4,
    };
    assert_eq!(code[imm_at], 0x1f, "mask of a 5-bit field");
    code[imm_at] = 0x3f;
    let (interp, native) = refute_and_run(&p.proof(), &code, 0, None);
    assert_eq!(interp & !0x1f, 0);
    assert_eq!(native, interp | 0x20);
}

#[test]
fn missing_bswap_is_refuted_with_memory_in_the_counterexample() {
    let p = EndianLoad32::new(0, 1, 4).unwrap();
    let op = Op::<EndianLoad32>::new();
    let mut code = emit(&op, p.encode().unwrap(), CpuFeatures::all().without(Feature::Movbe));
    let (at, len, _) = find(&code, Mnemonic::Bswap);
    code.drain(at..at + len);
    let (interp, native) = refute_and_run(&p.proof(), &code, 0, Some(1));
    assert_eq!(native as u32, (interp as u32).swap_bytes());
}

#[test]
fn unmutated_emits_are_proven() {
    // The same payloads, as emitted, must be proven: the mutations above are what differs.
    let cases: Vec<(Box<dyn KinsnOp>, u64, Vec<Insn>, CpuFeatures)> = vec![
        {
            let p = Rotate64::new(0, 1, 1, 13, false).unwrap();
            (Box::new(Op::<Rotate64>::new()), p.encode().unwrap(), p.proof(), CpuFeatures::all().without(Feature::Bmi2))
        },
        {
            let p = Select::new(0, 1, 2, 3, false, false).unwrap();
            (Box::new(Op::<Select>::new()), p.encode().unwrap(), p.proof(), CpuFeatures::all())
        },
        {
            let p = Extract::new(0, 1, 3, 5).unwrap();
            (Box::new(Op::<Extract>::new()), p.encode().unwrap(), p.proof(), CpuFeatures::all())
        },
        {
            let p = EndianLoad32::new(0, 1, 4).unwrap();
            (Box::new(Op::<EndianLoad32>::new()), p.encode().unwrap(), p.proof(), CpuFeatures::all().without(Feature::Movbe))
        },
    ];
    for (op, payload, proof, feats) in cases {
        let code = emit(op.as_ref(), payload, feats);
        let v = check(&proof, &code, Relaxation { dead_bpf: 0, scratch_x86: 1 << 11 }).unwrap();
        assert_eq!(v, Verdict::Proven, "{}", op.name());
    }
}
