//! Native execution of small programs with hand-computed results, native regions, and the
//! W^X property of the executable memory.

use kops_isa::{op, Insn};
use std::sync::Arc;

use kops_jit::{CallMode, CpuFeatures, JitError, JitOptions, JitProgram, Kinsn, Resolver};
use kops_kinsn::{encode_site, Arch, EmitError, Emitted, KinsnOp, PayloadError, Registry, X86EmitCtx};
use kops_x86::{Asm, Reg, Shift, Width};

extern "C" fn add3(a: u64, b: u64, c: u64, _: u64, _: u64) -> u64 {
    a.wrapping_add(b).wrapping_add(c)
}

struct R;
impl Resolver for R {
    fn helper(&self, id: i32) -> Option<u64> {
        (id == 1).then_some(add3 as extern "C" fn(u64, u64, u64, u64, u64) -> u64 as usize as u64)
    }
    fn ld_imm64(&self, pc: usize, _: &Insn, _: &Insn) -> Result<u64, String> {
        Err(format!("no pseudo ld_imm64 expected at {pc}"))
    }
}

fn opts(features: CpuFeatures, mode: CallMode) -> JitOptions {
    let mut o = JitOptions::runtime().unwrap();
    o.features = features;
    o.call_mode = mode;
    o
}

fn run(p: &[Insn], r1: u64, r2: u64) -> u64 {
    let mut results = Vec::new();
    for f in [CpuFeatures::host(), CpuFeatures::NONE] {
        for m in [CallMode::Trampoline, CallMode::Absolute, CallMode::Rel32] {
            let jp = JitProgram::new(p, &opts(f, m), &R).unwrap();
            // SAFETY: the test programs only touch their own stack.
            results.push(unsafe { jp.call(r1, r2) });
        }
    }
    assert!(results.windows(2).all(|w| w[0] == w[1]), "feature/call-mode variants disagree: {results:x?}");
    results[0]
}

#[test]
fn arithmetic_and_loops() {
    // r0 = sum(1..=100) with a loop: 5050.
    let p = [
        Insn::mov64_imm(0, 0),
        Insn::mov64_imm(1, 100),
        Insn::alu64_reg(op::ADD, 0, 1),
        Insn::alu64_imm(op::SUB, 1, 1),
        Insn::jmp_imm(op::JNE, 1, 0, -3),
        Insn::exit(),
    ];
    assert_eq!(run(&p, 0, 0), 5050);
    // Division/modulo edge cases (Linux semantics): 7/0 = 0, 7%0 = 7, INT_MIN/-1 = INT_MIN,
    // INT_MIN%-1 = 0; r0 = sum of them with distinct weights.
    let p = [
        Insn::mov64_imm(1, 7),
        Insn::mov64_imm(2, 0),
        Insn::mov64_reg(3, 1),
        Insn::alu64_reg(op::DIV, 3, 2), // 0
        Insn::mov64_reg(4, 1),
        Insn::alu64_reg(op::MOD, 4, 2), // 7
        Insn::mov32_imm_raw(5, i32::MIN),
        Insn::new(op::ALU | op::DIV | op::K, 5, 0, 1, -1), // sdiv32 by -1 -> INT_MIN (u32)
        Insn::mov32_imm_raw(0, i32::MIN),
        Insn::mov64_imm(2, -1),
        Insn::new(op::ALU | op::MOD | op::X, 0, 2, 1, 0), // smod32 by -1 -> 0
        Insn::alu64_reg(op::ADD, 0, 3),
        Insn::alu64_imm(op::MUL, 4, 1000),
        Insn::alu64_reg(op::ADD, 0, 4),
        Insn::alu64_reg(op::ADD, 0, 5),
        Insn::exit(),
    ];
    assert_eq!(run(&p, 0, 0), 7000 + 0x8000_0000);
}

trait Mov32 {
    fn mov32_imm_raw(dst: u8, imm: i32) -> Insn;
}
impl Mov32 for Insn {
    fn mov32_imm_raw(dst: u8, imm: i32) -> Insn {
        Insn::alu32_imm(op::MOV, dst, imm)
    }
}

#[test]
fn helpers_calls_and_stack() {
    // main: *(r10-8) = r1; r1 = 2; r2 = 3; r3 = 4; call add3 -> 9; call f(r0) ; r0 += *(r10-8)
    // f(x): its own stack; returns x * 10.
    let p = [
        Insn::stx(op::DW, 10, 1, -8),
        Insn::mov64_imm(1, 2),
        Insn::mov64_imm(2, 3),
        Insn::mov64_imm(3, 4),
        Insn::call_helper(1),
        Insn::mov64_reg(1, 0),
        Insn::new(op::JMP | op::CALL, 0, op::PSEUDO_CALL, 0, 3),
        Insn::ldx(op::DW, 1, 10, -8),
        Insn::alu64_reg(op::ADD, 0, 1),
        Insn::exit(),
        // f at slot 10
        Insn::stx(op::DW, 10, 1, -16),
        Insn::ldx(op::DW, 0, 10, -16),
        Insn::alu64_imm(op::MUL, 0, 10),
        Insn::exit(),
    ];
    assert_eq!(run(&p, 1000, 0), 90 + 1000);
}

/// A test op: `r0 = rol64(r0, 13)` with r2 as the proof sequence's temporary; its native
/// form (when `native`) is one `rol rax, 13`.
struct Rol13 {
    native: bool,
}

impl KinsnOp for Rol13 {
    fn name(&self) -> &str {
        if self.native {
            "rol13"
        } else {
            "rol13_proof_only"
        }
    }
    fn id(&self) -> u32 {
        9000 + self.native as u32
    }
    fn max_proof_len(&self) -> usize {
        4
    }
    fn max_native_size(&self, _: Arch) -> usize {
        if self.native {
            4
        } else {
            0
        }
    }
    fn validate(&self, payload: u64) -> Result<(), PayloadError> {
        if payload != 0 {
            return Err(PayloadError::Reserved { op: self.name().into(), bits: payload, payload });
        }
        Ok(())
    }
    fn describe(&self, _: u64) -> Result<String, PayloadError> {
        Ok("r0 = rol64(r0, 13) (tmp r2)".into())
    }
    fn instantiate(&self, _: u64) -> Result<Vec<Insn>, PayloadError> {
        Ok(vec![Insn::mov64_reg(2, 0), Insn::alu64_imm(op::LSH, 2, 13), Insn::alu64_imm(op::RSH, 0, 51), Insn::alu64_reg(op::OR, 0, 2)])
    }
    fn emit_x86(&self, payload: u64, ctx: &mut X86EmitCtx) -> Result<Emitted, EmitError> {
        self.validate(payload)?;
        if !self.native {
            return Ok(Emitted::Fallback("proof only"));
        }
        let r0 = ctx.reg(0);
        ctx.asm.shift_ri(Shift::Rol, Width::W64, r0, 13);
        Ok(Emitted::Native)
    }
}

#[test]
fn kinsn_sites_get_their_checked_native_emit() {
    let mut registry = Registry::new();
    registry.register(Arc::new(Rol13 { native: true })).unwrap();
    registry.register(Arc::new(Rol13 { native: false })).unwrap();
    let x = 0x0123_4567_89ab_cdefu64;
    let want = x.rotate_left(13);
    let o = opts(CpuFeatures::host(), CallMode::Trampoline);
    let mut rol = Asm::new();
    rol.shift_ri(Shift::Rol, Width::W64, Reg::Rax, 13);
    for native in [true, false] {
        // r0 = r1; site; exit
        let mut p = vec![Insn::mov64_reg(0, 1)];
        p.extend(encode_site(9000 + native as u32, 0).unwrap());
        p.push(Insn::exit());
        let k = Kinsn { registry: &registry, subprog_starts: &[], func_info: &[] };
        let (jp, lowered, plans) = JitProgram::with_kinsn(&p, &k, &o, &R).unwrap();
        assert_eq!(unsafe { jp.call(x, 0) }, want, "native {native}");
        assert_eq!(lowered.regions.len(), 1);
        let r = &lowered.regions[0];
        assert_eq!((r.start, r.len), (1, 4));
        // r2 is dead after the site (exit reads only r0): the JIT computed it.
        assert!(plans[0].dead_after.contains(2));
        let (s, e) = jp.image.insn_ranges[1];
        if native {
            // The op's bytes are in the image at the region's first slot; the rest emit nothing.
            assert_eq!(plans[0].native.as_deref(), Some(rol.bytes()));
            assert_eq!(&jp.image.code[s as usize..e as usize], rol.bytes());
            for k in 2..5 {
                let (s, e) = jp.image.insn_ranges[k];
                assert_eq!(s, e, "slot {k} of the region emits nothing");
            }
        } else {
            // Fallback: the proof sequence, instruction by instruction.
            assert_eq!(plans[0].native, None);
            assert_ne!(&jp.image.code[s as usize..e as usize], rol.bytes());
            assert!((2..5).all(|k| jp.image.insn_ranges[k].0 < jp.image.insn_ranges[k].1));
        }
    }
    // An unknown op is the plan's error; the plain entry point refuses sites.
    let mut p = vec![Insn::mov64_reg(0, 1)];
    p.extend(encode_site(9100, 0).unwrap());
    p.push(Insn::exit());
    let k = Kinsn { registry: &registry, subprog_starts: &[], func_info: &[] };
    assert!(matches!(kops_jit::compile_kinsn(&p, &k, &o, &R), Err(JitError::Kinsn(_))));
    p[1..3].copy_from_slice(&encode_site(9000, 0).unwrap());
    assert!(matches!(kops_jit::compile(&p, &o, &R), Err(JitError::Unsupported { pc: 1, .. })));
}

#[test]
fn executable_memory_is_never_writable() {
    let p = [Insn::mov64_imm(0, 1), Insn::exit()];
    let jp = JitProgram::new(&p, &opts(CpuFeatures::host(), CallMode::Trampoline), &R).unwrap();
    let addr = jp.entry();
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
    let line = maps
        .lines()
        .find(|l| {
            let r = l.split_whitespace().next().unwrap();
            let (a, b) = r.split_once('-').unwrap();
            let (a, b) = (u64::from_str_radix(a, 16).unwrap(), u64::from_str_radix(b, 16).unwrap());
            a <= addr && addr < b
        })
        .expect("mapping of the JIT image");
    let perms = line.split_whitespace().nth(1).unwrap();
    assert!(perms.starts_with("r-x"), "JIT image mapped {perms}");
    assert_eq!(unsafe { jp.call(0, 0) }, 1);
}

#[test]
fn errors_name_the_instruction() {
    let p = [Insn::mov64_imm(0, 0), Insn::call_helper(99), Insn::exit()];
    let e = kops_jit::compile(&p, &opts(CpuFeatures::host(), CallMode::Trampoline), &R).unwrap_err();
    assert_eq!(e.to_string(), "instruction 1: unknown helper 99");
    let p = [Insn::mov64_imm(0, 0), Insn::ja(5), Insn::exit()];
    let e = kops_jit::compile(&p, &opts(CpuFeatures::host(), CallMode::Trampoline), &R).unwrap_err();
    assert!(e.to_string().starts_with("instruction 1: "), "{e}");
}

#[test]
fn falling_off_a_function_is_refused() {
    let o = opts(CpuFeatures::host(), CallMode::Trampoline);
    let e = kops_jit::compile(&[Insn::mov64_imm(0, 1)], &o, &R).unwrap_err();
    assert_eq!(e.to_string(), "instruction 0: the function can run past its last instruction (no exit or jump)");
    // A subprogram ending in a conditional jump, too.
    let p = [
        Insn::new(op::JMP | op::CALL, 0, op::PSEUDO_CALL, 0, 1),
        Insn::exit(),
        Insn::mov64_imm(0, 1),
        Insn::jmp_imm(op::JEQ, 0, 1, -2),
    ];
    let e = kops_jit::compile(&p, &o, &R).unwrap_err();
    assert!(e.to_string().starts_with("instruction 3: "), "{e}");
}

#[test]
fn register_eleven_is_the_jits() {
    let o = opts(CpuFeatures::host(), CallMode::Trampoline);
    let e = kops_jit::compile(&[Insn::mov64_imm(11, 1), Insn::exit()], &o, &R).unwrap_err();
    assert_eq!(e.to_string(), "instruction 0: register number above r10 in 0xb7");
    let e = kops_jit::compile(&[Insn::mov64_reg(0, 11), Insn::exit()], &o, &R).unwrap_err();
    assert!(e.to_string().starts_with("instruction 0: register number above r10"), "{e}");
}
