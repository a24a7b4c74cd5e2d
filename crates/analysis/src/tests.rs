// Expectations below are worked out by hand from the instruction lists, not from the code.
use super::*;
use kops_isa::op::*;

fn rs(regs: &[u8]) -> RegSet {
    RegSet::from_regs(regs).with(10)
}

#[test]
fn regset_basics() {
    let s = RegSet::from_regs(&[0, 3, 10]);
    assert_eq!(s.0, 0b100_0000_1001);
    assert!(s.contains(3) && !s.contains(4));
    assert_eq!(format!("{s:?}"), "{r0,r3,r10}");
    assert_eq!(RegSet::ARGS.iter().collect::<Vec<_>>(), vec![1, 2, 3, 4, 5]);
}

#[test]
fn straight_line_liveness() {
    let p = [
        Insn::mov64_imm(1, 5),
        Insn::mov64_reg(2, 1),
        Insn::alu64_imm(ADD, 2, 3),
        Insn::mov64_reg(0, 2),
        Insn::exit(),
    ];
    let a = Analysis::new(&p).unwrap();
    assert_eq!(a.blocks.len(), 1);
    assert_eq!(a.live_in[0], rs(&[]));
    assert_eq!(a.live_out[0], rs(&[1]));
    assert_eq!(a.live_in[2], rs(&[2]));
    assert_eq!(a.live_in[3], rs(&[2]));
    assert_eq!(a.live_out[3], rs(&[0]));
    assert_eq!(a.live_in[4], rs(&[0]));
    assert_eq!(a.live_out[4], rs(&[]));
}

fn diamond(gotol: bool) -> Vec<Insn> {
    vec![
        Insn::jmp_imm(JEQ, 1, 0, 2),
        Insn::mov64_imm(0, 1),
        if gotol { Insn::new(JMP32 | JA, 0, 0, 0, 1) } else { Insn::ja(1) },
        Insn::mov64_imm(0, 2),
        Insn::exit(),
    ]
}

#[test]
fn diamond_cfg_and_liveness() {
    for gotol in [false, true] {
        let a = Analysis::new(&diamond(gotol)).unwrap();
        assert_eq!(a.branch_targets.iter().copied().collect::<Vec<_>>(), vec![3, 4]);
        let spans: Vec<_> = a.blocks.iter().map(|b| (b.start, b.end)).collect();
        assert_eq!(spans, vec![(0, 1), (1, 3), (3, 4), (4, 5)]);
        assert_eq!(a.blocks[0].succs, vec![1, 2]);
        assert_eq!(a.blocks[1].succs, vec![3]);
        assert_eq!(a.blocks[2].succs, vec![3]);
        assert_eq!(a.blocks[3].preds.len(), 2);
        assert_eq!(a.live_in[0], rs(&[1]));
        assert_eq!(a.live_out[0], rs(&[]));
        assert_eq!(a.live_out[1], rs(&[0]));
        assert_eq!(a.live_in[4], rs(&[0]));
        assert_eq!(a.check_region(0, 5), Err(RegionIssue::BranchTargetInside { at: 3 }));
        assert_eq!(a.check_region(3, 5), Err(RegionIssue::BranchTargetInside { at: 4 }));
        assert_eq!(a.check_region(1, 3), Ok(()));
        assert_eq!(a.check_region(0, 0), Err(RegionIssue::Malformed));
    }
}

#[test]
fn loop_liveness() {
    let p = [
        Insn::mov64_imm(0, 0),
        Insn::alu64_imm(ADD, 0, 1),
        Insn::jmp_imm(JLT, 0, 10, -2),
        Insn::exit(),
    ];
    let a = Analysis::new(&p).unwrap();
    assert_eq!(a.blocks.len(), 3);
    assert_eq!(a.blocks[1].succs, vec![2, 1]);
    assert_eq!(a.live_in[1], rs(&[0]));
    assert_eq!(a.live_out[2], rs(&[0]));
    assert_eq!(a.live_in[0], rs(&[]));
}

#[test]
fn bpf_to_bpf_call() {
    let p = [
        Insn::mov64_reg(6, 1),
        Insn::mov64_imm(1, 1),
        Insn::new(JMP | CALL, 0, PSEUDO_CALL, 0, 2), // -> 5
        Insn::alu64_reg(ADD, 0, 6),
        Insn::exit(),
        Insn::mov64_reg(0, 1),
        Insn::exit(),
    ];
    let a = Analysis::new(&p).unwrap();
    assert_eq!(a.subprog_starts, vec![0, 5]);
    assert_eq!(a.call_targets.iter().copied().collect::<Vec<_>>(), vec![5]);
    assert!(a.branch_targets.is_empty());
    // The call reads r1-r5, so r2-r5 are live from the entry on.
    assert_eq!(a.live_in[0], rs(&[1, 2, 3, 4, 5]));
    assert_eq!(a.live_out[1], rs(&[1, 2, 3, 4, 5, 6]));
    assert_eq!(a.live_in[1], rs(&[2, 3, 4, 5, 6]));
    assert_eq!(a.live_out[2], rs(&[0, 6]));
    assert_eq!(a.live_in[5], rs(&[1]));
    assert_eq!(a.subprog_of(3), 0);
    assert_eq!(a.subprog_of(6), 1);
    assert_eq!(a.subprog_range(1), (5, 7));
    assert_eq!(a.check_region(4, 6), Err(RegionIssue::SubprogBoundary { at: 5 }));
    assert_eq!(a.check_region(5, 7), Err(RegionIssue::SubprogBoundary { at: 5 }));
    // A site may not start a subprogram, the entry included (DESIGN.md section 3).
    assert_eq!(a.check_region(0, 2), Err(RegionIssue::SubprogBoundary { at: 0 }));
    assert_eq!(a.check_region(1, 3), Ok(()));
}

#[test]
fn helper_call_clobbers_r0_to_r5() {
    let p = [
        Insn::mov64_reg(6, 1),
        Insn::mov64_imm(3, 7),
        Insn::call_helper(1),
        Insn::alu64_reg(ADD, 0, 6),
        Insn::alu64_reg(ADD, 0, 3), // r3 was clobbered by the call: this reads garbage
        Insn::exit(),
    ];
    let a = Analysis::new(&p).unwrap();
    assert_eq!(a.live_out[2], rs(&[0, 3, 6]));
    // The call kills r3, so the r3 = 7 is dead except as an argument (r1-r5 are read).
    assert_eq!(a.live_in[2], rs(&[1, 2, 3, 4, 5, 6]));
    assert_eq!(a.live_in[0], rs(&[1, 2, 4, 5]));
}

#[test]
fn pseudo_func_target_is_subprog() {
    let ld = Insn::ld_imm64(2, PSEUDO_FUNC, 4); // target 0 + 1 + 4 = 5
    let p = [
        ld[0],
        ld[1],
        Insn::call_helper(181),
        Insn::mov64_imm(0, 0),
        Insn::exit(),
        Insn::mov64_imm(0, 1),
        Insn::exit(),
    ];
    let a = Analysis::new(&p).unwrap();
    assert_eq!(a.func_targets.iter().copied().collect::<Vec<_>>(), vec![5]);
    assert_eq!(a.subprog_starts, vec![0, 5]);
    assert!(!a.insn_start[1]);
    assert_eq!(a.live_in[0], rs(&[1, 3, 4, 5]));
    assert_eq!(a.live_out[0], rs(&[1, 2, 3, 4, 5]));
    assert_eq!(a.check_region(1, 3), Err(RegionIssue::Malformed));
}

#[test]
fn structural_errors() {
    let p = [Insn::ja(5), Insn::exit()];
    assert_eq!(
        Analysis::new(&p).unwrap_err(),
        AnalysisError::TargetOutOfRange { pc: 0, target: 6, len: 2 }
    );
    let ld = Insn::ld_imm64(1, 0, 0);
    let p = [Insn::jmp_imm(JEQ, 1, 0, 1), ld[0], ld[1], Insn::exit()];
    assert_eq!(
        Analysis::new(&p).unwrap_err(),
        AnalysisError::TargetInsideLdImm64 { pc: 0, target: 2 }
    );
    let p = [Insn::mov64_imm(0, 0)];
    assert_eq!(Analysis::new(&p).unwrap_err(), AnalysisError::FallsOffEnd { pc: 0 });
    let p = [Insn::mov64_imm(0, 0), ld[0]];
    assert_eq!(Analysis::new(&p).unwrap_err(), AnalysisError::TruncatedLdImm64 { pc: 1 });
    assert_eq!(Analysis::new(&[]).unwrap_err(), AnalysisError::Empty);
}

fn kinsn_prog() -> Vec<Insn> {
    vec![
        Insn::mov64_imm(1, 1),
        Insn::new(ALU64 | MOV | K, 7, PSEUDO_KINSN_SIDECAR, 0, 0),
        Insn::new(JMP | CALL, 0, PSEUDO_KINSN_CALL, 0, 1),
        Insn::mov64_reg(0, 2),
        Insn::exit(),
    ]
}

#[test]
fn kinsn_site_conservative_and_with_effects() {
    let p = kinsn_prog();
    let a = Analysis::new(&p).unwrap();
    // Unknown site: reads every register, writes none; the sidecar's dst is payload.
    assert_eq!(a.live_in[2], RegSet::ALL);
    assert_eq!(a.live_in[1], RegSet::ALL);
    assert_eq!(a.live_in[0], RegSet::ALL.without(1));
    let f = |pc: usize, side: &Insn, _call: &Insn| {
        assert_eq!(pc, 2);
        assert_eq!(side.dst, 7);
        Some(Effects { uses: RegSet::of(1), defs: RegSet::of(2) })
    };
    let a = Analysis::with_options(&p, &Options { kinsn_effects: Some(&f), ..Default::default() }).unwrap();
    assert_eq!(a.live_out[2], rs(&[2]));
    assert_eq!(a.live_in[2], rs(&[1]));
    assert_eq!(a.live_in[0], rs(&[]));
}

#[test]
fn instruction_effects() {
    // cmpxchg reads r0 and writes r0
    let cx = Insn::new(STX | ATOMIC | DW, 1, 2, 0, CMPXCHG);
    assert_eq!(effects(&cx), Effects { uses: RegSet::from_regs(&[0, 1, 2]), defs: RegSet::of(0) });
    // fetch-add writes its source
    let fa = Insn::new(STX | ATOMIC | DW, 1, 2, 0, ADD as i32 | FETCH);
    assert_eq!(effects(&fa).defs, RegSet::of(2));
    // movsx reads only the source
    let mx = Insn::new(ALU64 | MOV | X, 3, 4, 8, 0);
    assert_eq!(effects(&mx), Effects { uses: RegSet::of(4), defs: RegSet::of(3) });
    // be16 reads and writes dst
    let be = Insn::new(ALU | END | TO_BE, 5, 0, 0, 16);
    assert_eq!(effects(&be), Effects { uses: RegSet::of(5), defs: RegSet::of(5) });
    // ld_abs: r6 implicit, r0-r5 clobbered
    let la = Insn::new(LD | ABS | W, 0, 0, 0, 12);
    assert_eq!(effects(&la), Effects { uses: RegSet::of(6), defs: RegSet::CALLER_SAVED });
    // JMP32 reg compare reads both
    let j = Insn::new(JMP32 | JGT | X, 1, 2, 3, 0);
    assert_eq!(effects(&j).uses, RegSet::from_regs(&[1, 2]));
    // store reads base and value, writes nothing
    assert_eq!(effects(&Insn::stx(DW, 10, 3, -8)).uses, RegSet::from_regs(&[3, 10]));
    assert_eq!(effects(&Insn::st(W, 10, -8, 0)).uses, RegSet::of(10));
}
