//! Lowering/restoring tests with ops defined here (the registry is open to outside ops).

use std::sync::Arc;

use kops_isa::{op, Insn};
use kops_object::{FuncInfo, LineInfo};

use crate::payload::{field_err, Fields};
use crate::*;

/// `pad`: payload n (1..=8) in bits [3:0]; proof = n x `r0 += 1`.
struct Pad;
impl KinsnOp for Pad {
    fn name(&self) -> &str {
        "pad"
    }
    fn id(&self) -> u32 {
        1000
    }
    fn max_proof_len(&self) -> usize {
        8
    }
    fn max_native_size(&self, _: Arch) -> usize {
        0
    }
    fn validate(&self, payload: u64) -> Result<(), PayloadError> {
        let mut f = Fields::new("pad", payload)?;
        f.ranged(0, 4, "n", 1, 8)?;
        f.finish()
    }
    fn describe(&self, payload: u64) -> Result<String, PayloadError> {
        self.validate(payload)?;
        Ok(format!("pad {payload}"))
    }
    fn instantiate(&self, payload: u64) -> Result<Vec<Insn>, PayloadError> {
        self.validate(payload)?;
        Ok(vec![Insn::alu64_imm(op::ADD, 0, 1); payload as usize])
    }
}

/// `inc`: dst in [3:0], tmp in [7:4]; proof `tmp = 1; dst += tmp`.
struct Inc;
impl KinsnOp for Inc {
    fn name(&self) -> &str {
        "inc"
    }
    fn id(&self) -> u32 {
        1001
    }
    fn max_proof_len(&self) -> usize {
        2
    }
    fn max_native_size(&self, _: Arch) -> usize {
        0
    }
    fn validate(&self, payload: u64) -> Result<(), PayloadError> {
        let mut f = Fields::new("inc", payload)?;
        let d = f.reg(0, "dst", true)?;
        let t = f.reg(4, "tmp", true)?;
        if d == t {
            return Err(field_err("inc", "tmp", t as i64, "a register other than dst"));
        }
        f.finish()
    }
    fn describe(&self, payload: u64) -> Result<String, PayloadError> {
        self.validate(payload)?;
        Ok("inc".into())
    }
    fn instantiate(&self, payload: u64) -> Result<Vec<Insn>, PayloadError> {
        self.validate(payload)?;
        let (d, t) = ((payload & 0xf) as u8, (payload >> 4 & 0xf) as u8);
        Ok(vec![Insn::mov64_imm(t, 1), Insn::alu64_reg(op::ADD, d, t)])
    }
}

/// `bad`: its proof contains an exit.
struct Bad;
impl KinsnOp for Bad {
    fn name(&self) -> &str {
        "bad"
    }
    fn id(&self) -> u32 {
        1002
    }
    fn max_proof_len(&self) -> usize {
        2
    }
    fn max_native_size(&self, _: Arch) -> usize {
        0
    }
    fn validate(&self, _: u64) -> Result<(), PayloadError> {
        Ok(())
    }
    fn describe(&self, _: u64) -> Result<String, PayloadError> {
        Ok("bad".into())
    }
    fn instantiate(&self, _: u64) -> Result<Vec<Insn>, PayloadError> {
        Ok(vec![Insn::mov64_imm(0, 0), Insn::exit()])
    }
}

fn reg() -> Registry {
    let mut r = Registry::new();
    r.register(Arc::new(Pad)).unwrap();
    r.register(Arc::new(Inc)).unwrap();
    r.register(Arc::new(Bad)).unwrap();
    r
}

fn site(id: u32, payload: u64) -> [Insn; 2] {
    encode_site(id, payload).unwrap()
}

fn li(off: u32, line: u32) -> LineInfo {
    LineInfo { insn_off: off, file_name_off: 1, line_off: 2, line_col: line << 10, file: "f.c".into(), source_line: format!("line {line}") }
}

/// The program described in the comments; offsets computed by hand.
fn program() -> Vec<Insn> {
    let [f0, f1] = Insn::ld_imm64(1, op::PSEUDO_FUNC, 11); // 0: -> 12
    let [a0, a1] = site(1000, 3); // 2
    let [b0, b1] = site(1000, 4); // 5
    let [c0, c1] = site(1000, 2); // 13
    vec![
        f0,
        f1,
        a0,
        a1,
        Insn::jmp_imm(op::JEQ, 0, 0, -3), // 4: -> 2
        b0,
        b1,
        Insn::new(op::JMP32 | op::JA, 0, 0, 0, -6),              // 7: gotol -> 2
        Insn::new(op::JMP | op::CALL, 0, op::PSEUDO_CALL, 0, 3), // 8: -> 12
        Insn::ja(1),                                             // 9: -> 11
        Insn::mov64_imm(0, 0),
        Insn::exit(),
        Insn::mov64_imm(0, 1), // 12: subprog
        c0,
        c1,
        Insn::exit(),
    ]
}

#[test]
fn registry_rejects_duplicates() {
    let mut r = reg();
    assert!(matches!(r.register(Arc::new(Pad)), Err(RegistryError::DuplicateId { id: 1000, .. })));
    assert_eq!(r.len(), 3);
    assert_eq!(r.by_name("inc").unwrap().id(), 1001);
}

#[test]
fn lower_fixes_every_reference() {
    let p = program();
    let fi = [FuncInfo { insn_off: 0, type_id: 7 }, FuncInfo { insn_off: 12, type_id: 8 }];
    let lis = [li(0, 1), li(2, 2), li(3, 3), li(6, 4), li(12, 5), li(14, 6)];
    let l = lower(&p, &[0, 12], &fi, &lis, &reg()).unwrap();
    assert_eq!(l.insns.len(), 19);
    // ld_imm64 pseudo func: target 12 -> 15.
    assert_eq!(l.insns[0].imm, 14);
    // Region of the first site, then the jeq at new slot 5 back to 2.
    assert_eq!(&l.insns[2..5], &[Insn::alu64_imm(op::ADD, 0, 1); 3]);
    assert_eq!(l.insns[5].off, -4);
    assert_eq!(&l.insns[6..10], &[Insn::alu64_imm(op::ADD, 0, 1); 4]);
    // gotol keeps the offset in imm.
    assert_eq!(l.insns[10].code, op::JMP32 | op::JA);
    assert_eq!(l.insns[10].imm, -9);
    assert_eq!(l.insns[10].off, 0);
    assert_eq!(l.insns[11].imm, 3);
    assert_eq!(l.insns[12].off, 1);
    assert_eq!(l.insns[15], Insn::mov64_imm(0, 1));
    assert_eq!(&l.insns[16..18], &[Insn::alu64_imm(op::ADD, 0, 1); 2]);
    assert_eq!(l.insns[18], Insn::exit());
    assert_eq!(l.func_info, vec![FuncInfo { insn_off: 0, type_id: 7 }, FuncInfo { insn_off: 15, type_id: 8 }]);
    let offs: Vec<u32> = l.line_info.iter().map(|e| e.insn_off).collect();
    assert_eq!(offs, vec![0, 2, 3, 7, 15, 17]);
    assert_eq!(l.subprog_starts, vec![0, 15]);
    assert_eq!(
        l.regions.iter().map(|r| (r.orig_pc, r.start, r.len)).collect::<Vec<_>>(),
        vec![(2, 2, 3), (5, 6, 4), (13, 16, 2)]
    );
    assert_eq!(l.orig_slot(8), Some(5));
    assert_eq!(l.orig_slot(10), Some(7));
    assert_eq!(l.region_at(9).unwrap().orig_pc, 5);
    assert!(l.region_at(10).is_none());

    let r = restore(&l).unwrap();
    assert_eq!(r.insns, p);
    assert_eq!(r.func_info, fi.to_vec());
    assert_eq!(r.line_info, lis.to_vec());
}

#[test]
fn one_slot_proof_drops_then_restores_call_slot_line() {
    let [s0, s1] = site(1000, 1);
    let p = vec![Insn::mov64_imm(0, 0), s0, s1, Insn::exit()];
    let lis = [li(0, 1), li(1, 2), li(2, 3), li(3, 4)];
    let l = lower(&p, &[], &[], &lis, &reg()).unwrap();
    assert_eq!(l.insns.len(), 3);
    assert_eq!(l.line_info.iter().map(|e| e.insn_off).collect::<Vec<_>>(), vec![0, 1, 2]);
    assert_eq!(l.dropped_line_info.len(), 1);
    let r = restore(&l).unwrap();
    assert_eq!(r.insns, p);
    assert_eq!(r.line_info, lis.to_vec());
}

#[test]
fn malformed_sites_name_the_slot() {
    let r = reg();
    let [s0, s1] = site(1000, 2);
    let mov = Insn::mov64_imm(0, 0);
    let e = |p: &[Insn], starts: &[usize]| lower(p, starts, &[], &[], &r).unwrap_err();

    // Unknown op id.
    let [u0, u1] = site(77, 0);
    assert_eq!(e(&[mov, u0, u1, Insn::exit()], &[]), LowerError::Site(SiteError::UnknownOp { pc: 2, id: 77 }));
    assert_eq!(e(&[mov, u0, u1, Insn::exit()], &[]).to_string(), "instruction 2: unknown kinsn op id 77");
    // Payload out of range (pad n = 9) and reserved bits.
    let [b0, b1] = site(1000, 9);
    let err = e(&[mov, b0, b1, Insn::exit()], &[]);
    assert!(matches!(err, LowerError::Site(SiteError::Payload { pc: 1, .. })), "{err}");
    assert!(err.to_string().contains("field `n` = 9"), "{err}");
    let [c0, c1] = site(1000, 0x12);
    assert!(matches!(e(&[mov, c0, c1, Insn::exit()], &[]), LowerError::Site(SiteError::Payload { pc: 1, .. })));
    // Sidecar at a subprogram start (given, or derived from a call).
    assert_eq!(e(&[mov, s0, s1, Insn::exit()], &[1]), LowerError::Site(SiteError::AtSubprogStart { pc: 1 }));
    let call = Insn::new(op::JMP | op::CALL, 0, op::PSEUDO_CALL, 0, 1); // -> 2
    assert_eq!(e(&[call, Insn::exit(), s0, s1, Insn::exit()], &[]), LowerError::Site(SiteError::AtSubprogStart { pc: 2 }));
    // Site spanning a subprogram boundary.
    assert_eq!(e(&[mov, s0, s1, Insn::exit()], &[2]), LowerError::Site(SiteError::SpansSubprog { pc: 1, boundary: 2 }));
    // A jump into the call slot.
    let j = Insn::jmp_imm(op::JEQ, 0, 0, 1); // 0 -> 2
    assert_eq!(e(&[j, s0, s1, Insn::exit()], &[]), LowerError::Site(SiteError::TargetInsideSite { pc: 0, site: 1 }));
    // Call without sidecar, sidecar without call.
    assert_eq!(e(&[mov, s1, Insn::exit()], &[]), LowerError::Site(SiteError::CallWithoutSidecar { pc: 1 }));
    assert_eq!(e(&[mov, s0, mov, Insn::exit()], &[]), LowerError::Site(SiteError::SidecarWithoutCall { pc: 1 }));
    // A proof breaking the structural rules.
    let [x0, x1] = site(1002, 0);
    assert!(matches!(e(&[mov, x0, x1, Insn::exit()], &[]), LowerError::Site(SiteError::Proof { pc: 1, .. })));
}

#[test]
fn jump_overflow_after_expansion_is_an_error() {
    // A jump of +32767 over a site that grows by 6 slots no longer fits in `off`.
    let [s0, s1] = site(1000, 8);
    let mut p = vec![Insn::ja(i16::MAX)];
    p.extend([s0, s1]);
    p.extend(std::iter::repeat_n(Insn::mov64_imm(0, 0), i16::MAX as usize - 2));
    p.push(Insn::exit());
    assert_eq!(lower(&p, &[], &[], &[], &reg()).unwrap_err(), LowerError::OffsetOverflow { pc: 0, offset: i16::MAX as i64 + 6 });
}

#[test]
fn no_sites_is_identity() {
    let p = vec![Insn::mov64_imm(0, 0), Insn::ja(0), Insn::exit()];
    let l = lower(&p, &[], &[], &[], &reg()).unwrap();
    assert_eq!(l.insns, p);
    assert!(l.regions.is_empty());
}

#[test]
fn dead_after_comes_from_the_lowered_program() {
    let r = reg();
    let [s0, s1] = site(1001, 0x30); // dst r0, tmp r3
    // r3 is dead after the site: only r0 is read (by exit).
    let p1 = vec![Insn::mov64_imm(0, 0), s0, s1, Insn::exit()];
    let d1 = dead_after_sites(&p1, &[], &[], &r).unwrap();
    assert_eq!(d1.len(), 1);
    assert_eq!(d1[0].pc, 1);
    assert_eq!(d1[0].dead_after, RegSet(0x3fe)); // r1..r9
    // r3 read afterwards: live.
    let p2 = vec![Insn::mov64_imm(0, 0), s0, s1, Insn::alu64_reg(op::ADD, 0, 3), Insn::exit()];
    let d2 = dead_after_sites(&p2, &[], &[], &r).unwrap();
    assert!(!d2[0].dead_after.contains(3));
    assert!(!d2[0].dead_after.contains(0));
    // Read on one path only (after a branch): still live.
    let p3 = vec![
        Insn::mov64_imm(0, 0),
        s0,
        s1,
        Insn::jmp_imm(op::JEQ, 0, 0, 1),
        Insn::mov64_reg(0, 3),
        Insn::exit(),
    ];
    assert!(!dead_after_sites(&p3, &[], &[], &r).unwrap()[0].dead_after.contains(3));
}

#[test]
fn site_effects_follow_the_proof() {
    let r = reg();
    // inc dst r0, tmp r3: `r3 = 1; r0 += r3` reads r0, writes r0 and r3.
    let e = site_effects(&r, 1001, 0x30).unwrap();
    assert_eq!(e.uses, RegSet::of(0));
    assert_eq!(e.defs, RegSet::from_regs(&[0, 3]));
    // A diamond: r1 written on one path only is not a def; r2 read after the join is a use.
    let proof = [
        Insn::jmp_imm(op::JEQ, 4, 0, 2),
        Insn::mov64_imm(1, 1),
        Insn::ja(1),
        Insn::mov64_imm(5, 0),
        Insn::mov64_reg(0, 2),
    ];
    let e = proof_effects(&proof);
    assert_eq!(e.uses, RegSet::from_regs(&[4, 2]));
    assert_eq!(e.defs, RegSet::of(0));
    // Used by the analysis: r3 after the inc site is defined by it, so the mov before it
    // is dead (r3 not live after instruction 0).
    let [s0, s1] = site(1001, 0x30);
    let p = vec![Insn::mov64_imm(3, 7), Insn::mov64_imm(0, 0), s0, s1, Insn::alu64_reg(op::ADD, 0, 3), Insn::exit()];
    let f = effects_fn(&r);
    let a = kops_analysis::Analysis::with_options(&p, &kops_analysis::Options { extra_subprog_starts: &[], kinsn_effects: Some(&f) }).unwrap();
    assert!(!a.live_out[0].contains(3));
    let a0 = kops_analysis::Analysis::new(&p).unwrap();
    assert!(a0.live_out[0].contains(3), "default: the site reads everything");
}

/// Random programs with sites, jumps (incl. gotol), bpf-to-bpf calls, pseudo-func
/// references, func_info and line_info: every reference points at the same instruction
/// after lowering, regions hold the proofs, and restoring gives the program back.
#[test]
fn random_programs_lower_and_restore() {
    #![allow(clippy::needless_range_loop)]
    use rand::prelude::*;
    let r = reg();
    let mut rng = rand::rngs::StdRng::seed_from_u64(42);
    let (mut done, mut sites) = (0, 0);
    for round in 0..300 {
        // Layout: kinds per slot first, then targets.
        #[derive(Clone, Copy, PartialEq)]
        enum K {
            Plain,
            Jump,
            Gotol,
            Call,
            Func,
            FuncTail,
            Side(u64),
            CallSlot,
            Exit,
        }
        let n = rng.gen_range(4..120);
        let mut kinds = vec![K::Plain];
        while kinds.len() < n {
            match rng.gen_range(0..12) {
                0 | 1 => kinds.extend([K::Side(rng.gen_range(1..=8)), K::CallSlot]),
                2 | 3 => kinds.push(K::Jump),
                4 => kinds.push(K::Gotol),
                5 => kinds.push(K::Call),
                6 => kinds.extend([K::Func, K::FuncTail]),
                7 => kinds.push(K::Exit),
                _ => kinds.push(K::Plain),
            }
        }
        kinds.push(K::Exit);
        let n = kinds.len();
        let starts_ok = |i: usize| !matches!(kinds[i], K::CallSlot | K::FuncTail);
        // Subprogram starts: 0 plus a few instruction starts that are not sites.
        let mut subs = vec![0usize];
        for _ in 0..rng.gen_range(0..3) {
            let s = rng.gen_range(1..n);
            if starts_ok(s) && !matches!(kinds[s], K::Side(_)) && !matches!(kinds[s - 1], K::Side(_)) {
                subs.push(s);
            }
        }
        subs.sort();
        subs.dedup();
        let pick_target = |rng: &mut rand::rngs::StdRng| loop {
            let t = rng.gen_range(0..n);
            if starts_ok(t) {
                return t;
            }
        };
        let mut p = Vec::with_capacity(n);
        for pc in 0..n {
            let rel = |t: usize| t as i64 - pc as i64 - 1;
            p.push(match kinds[pc] {
                K::Plain => Insn::mov64_imm(rng.gen_range(0..10), rng.gen()),
                K::Exit => Insn::exit(),
                K::Jump => Insn::jmp_imm(op::JNE, 1, 0, rel(pick_target(&mut rng)) as i16),
                K::Gotol => Insn::new(op::JMP32 | op::JA, 0, 0, 0, rel(pick_target(&mut rng)) as i32),
                K::Call => Insn::new(op::JMP | op::CALL, 0, op::PSEUDO_CALL, 0, rel(subs[rng.gen_range(0..subs.len())]) as i32),
                K::Func => Insn::ld_imm64(2, op::PSEUDO_FUNC, rel(subs[rng.gen_range(0..subs.len())]) as u32 as u64)[0],
                K::FuncTail => Insn::new(0, 0, 0, 0, 0),
                K::Side(k) => site(1000, k)[0],
                K::CallSlot => site(1000, 1)[1],
            });
        }
        // Sites may not sit at subprogram starts or across them.
        if subs.iter().any(|&s| s > 0 && (matches!(kinds[s], K::Side(_)) || matches!(kinds[s - 1], K::Side(_)))) {
            continue;
        }
        let fi: Vec<FuncInfo> = subs.iter().map(|&s| FuncInfo { insn_off: s as u32, type_id: s as u32 + 1 }).collect();
        let li: Vec<LineInfo> = (0..n).filter(|&i| kinds[i] != K::FuncTail && rng.gen_bool(0.3)).map(|i| li(i as u32, i as u32)).collect();
        let l = lower(&p, &subs, &fi, &li, &r).unwrap_or_else(|e| panic!("round {round}: {e}"));
        // References land on the same instruction.
        for pc in 0..n {
            let i = p[pc];
            let t = match kinds[pc] {
                K::Jump | K::Gotol | K::Call => i.target(pc).unwrap(),
                K::Func => pc as i64 + 1 + i.imm as i64,
                _ => continue,
            } as usize;
            let np = l.lowered_of[pc];
            let ni = l.insns[np];
            let nt = match kinds[pc] {
                K::Func => np as i64 + 1 + ni.imm as i64,
                _ => ni.target(np).unwrap(),
            } as usize;
            assert_eq!(nt, l.lowered_of[t], "round {round}: pc {pc}");
            assert_eq!(l.orig_of[nt], t);
        }
        for reg_ in &l.regions {
            assert_eq!(&l.insns[reg_.start..reg_.end()], &Pad.instantiate(reg_.payload).unwrap()[..]);
            assert_eq!(l.lowered_of[reg_.orig_pc], reg_.start);
        }
        for (a, b) in fi.iter().zip(&l.func_info) {
            assert_eq!(b.insn_off as usize, l.lowered_of[a.insn_off as usize]);
        }
        let back = restore(&l).unwrap();
        assert_eq!(back.insns, p, "round {round}");
        assert_eq!(back.func_info, fi);
        assert_eq!(back.line_info, li);
        done += 1;
        sites += l.regions.len();
    }
    assert!(done > 200 && sites > 2000, "{done} programs, {sites} sites");
}
