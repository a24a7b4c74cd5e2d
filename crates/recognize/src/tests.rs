// Hand-built instruction sequences: every operand/shift order, the negative cases, and the
// fix-ups. Expected values are worked out by hand from the sequences.
use super::*;
use kops_einsn::EInsn;
use kops_isa::op::*;

fn found(p: &[Insn]) -> Found {
    find_matches(p, &[], None, &Pass::ALL).unwrap()
}

fn ops(f: &Found, pass: Pass) -> Vec<SiteOp> {
    f.matches.iter().filter(|m| m.pass == pass).map(|m| m.op.clone()).collect()
}

fn rejects(f: &Found, pass: Pass) -> Vec<String> {
    f.rejects.iter().filter(|r| r.pass == pass).map(|r| r.reason.clone()).collect()
}

/// `r2 = *(u64 *)(r1 + 0)`, the body, `r0 = r{ret}`, `exit`.
fn prog(body: &[Insn], ret: u8) -> Vec<Insn> {
    let mut v = vec![Insn::ldx(DW, 2, 1, 0)];
    v.extend_from_slice(body);
    v.push(Insn::mov64_reg(0, ret));
    v.push(Insn::exit());
    v
}

#[test]
fn rotate_every_operand_and_shift_order() {
    let a64 = |o, d, k| Insn::alu64_imm(o, d, k);
    let x64 = |o, d, s| Insn::alu64_reg(o, d, s);
    // (body, result register)
    let cases: Vec<(Vec<Insn>, u8)> = vec![
        // mov t,s; rsh t,51; lsh s,13; or s,t
        (vec![Insn::mov64_reg(3, 2), a64(RSH, 3, 51), a64(LSH, 2, 13), x64(OR, 2, 3)], 2),
        // mov t,s; lsh t,13; rsh s,51; or s,t
        (vec![Insn::mov64_reg(3, 2), a64(LSH, 3, 13), a64(RSH, 2, 51), x64(OR, 2, 3)], 2),
        // result in the temporary: or t,s
        (vec![Insn::mov64_reg(3, 2), a64(RSH, 3, 51), a64(LSH, 2, 13), x64(OR, 3, 2)], 3),
        // source kept: two copies
        (vec![Insn::mov64_reg(3, 2), a64(RSH, 3, 51), Insn::mov64_reg(4, 2), a64(LSH, 4, 13), x64(OR, 4, 3)], 4),
        // shifts in the other order, or reversed
        (vec![Insn::mov64_reg(4, 2), a64(LSH, 4, 13), Insn::mov64_reg(3, 2), a64(RSH, 3, 51), x64(OR, 3, 4)], 3),
    ];
    for (body, ret) in &cases {
        let f = found(&prog(body, *ret));
        let r = ops(&f, Pass::Rotate);
        assert_eq!(r.len(), 1, "{body:?}: {:?}", f.rejects);
        match &r[0] {
            SiteOp::Rotate { dst, src, amount, width, tmp } => {
                assert_eq!((*dst, *src, *amount, *width), (*ret, 2, 13, Width::W64));
                assert_ne!(tmp, dst);
            }
            o => panic!("{o:?}"),
        }
    }
    // 32-bit: w3 = w2; w3 >>= 27; w2 <<= 5; w2 |= w3
    let body = [
        Insn::alu32_reg(MOV, 3, 2),
        Insn::alu32_imm(RSH, 3, 27),
        Insn::alu32_imm(LSH, 2, 5),
        Insn::alu32_reg(OR, 2, 3),
    ];
    let r = ops(&found(&prog(&body, 2)), Pass::Rotate);
    assert!(matches!(r[..], [SiteOp::Rotate { dst: 2, src: 2, amount: 5, width: Width::W32, .. }]), "{r:?}");
}

#[test]
fn rotate_negatives() {
    let base = [Insn::mov64_reg(3, 2), Insn::alu64_imm(RSH, 3, 51), Insn::alu64_imm(LSH, 2, 13), Insn::alu64_reg(OR, 2, 3)];
    // The temporary is live after the idiom (returned).
    let f = found(&prog(&base, 3));
    assert!(ops(&f, Pass::Rotate).is_empty());
    assert!(rejects(&f, Pass::Rotate).iter().any(|r| r.contains("temporary r3 is live")), "{:?}", f.rejects);
    // Mixed widths: 64-bit right shift, 32-bit left shift and or (clang's truncated rol64).
    let mixed = [Insn::mov64_reg(3, 2), Insn::alu64_imm(RSH, 3, 51), Insn::alu32_imm(LSH, 2, 13), Insn::alu32_reg(OR, 2, 3)];
    assert!(ops(&found(&prog(&mixed, 2)), Pass::Rotate).is_empty());
    // Shift amounts that do not add up to the width.
    let bad = [Insn::mov64_reg(3, 2), Insn::alu64_imm(RSH, 3, 50), Insn::alu64_imm(LSH, 2, 13), Insn::alu64_reg(OR, 2, 3)];
    assert!(ops(&found(&prog(&bad, 2)), Pass::Rotate).is_empty());
    // movsx is not a mov: r3 = (s32)r2.
    let sx = [Insn::new(ALU64 | MOV | X, 3, 2, 32, 0), Insn::alu64_imm(RSH, 3, 51), Insn::alu64_imm(LSH, 2, 13), Insn::alu64_reg(OR, 2, 3)];
    assert!(ops(&found(&prog(&sx, 2)), Pass::Rotate).is_empty());
    // A branch into the middle (to the left shift) splits the idiom.
    let mut p = vec![Insn::ldx(DW, 2, 1, 0), Insn::jmp_imm(JEQ, 2, 7, 2)];
    p.extend_from_slice(&base);
    p.extend([Insn::mov64_reg(0, 2), Insn::exit()]);
    assert_eq!(p[1].target(1), Some(4));
    assert!(ops(&found(&p), Pass::Rotate).is_empty());
}

#[test]
fn select_shapes_widths_and_negatives() {
    // mov; jcc +1; mov with a JMP32 and a JMP condition on zero.
    for (jc, cond32) in [(JMP32, true), (JMP, false)] {
        let p = [
            Insn::ldx(DW, 2, 1, 0),
            Insn::ldx(DW, 4, 1, 8),
            Insn::mov64_reg(3, 4),
            Insn::new(jc | JEQ | K, 2, 0, 1, 0),
            Insn::mov64_reg(3, 1),
            Insn::mov64_reg(0, 3),
            Insn::exit(),
        ];
        let f = found(&p);
        let s = ops(&f, Pass::Select);
        assert_eq!(s.len(), 1, "{:?}", f.rejects);
        let SiteOp::Select { dst, cond, if_true, if_false, width } = s[0] else { panic!() };
        assert_eq!((dst, cond.jmp32, cond.op, cond.lhs), (3, cond32, JEQ, 2));
        assert_eq!((if_true, if_false, width), (Operand::Reg(4), Operand::Reg(1), Width::W64));
        // The site: select64 dst = cond != 0 ? a : b with a = the false value for JEQ.
        let site = encode::site(&s[0]).unwrap();
        let expect = kops_einsn::Select::new(3, 2, 1, 4, cond32, false).unwrap().site().unwrap();
        assert_eq!(site, expect.to_vec());
    }
    // Diamond: if r2 != 0 goto +2; r3 = r5; ja +1; r3 = r4
    let p = [
        Insn::ldx(DW, 2, 1, 0),
        Insn::jmp_imm(JNE, 2, 0, 2),
        Insn::mov64_reg(3, 5),
        Insn::ja(1),
        Insn::mov64_reg(3, 4),
        Insn::mov64_reg(0, 3),
        Insn::exit(),
    ];
    let s = ops(&found(&p), Pass::Select);
    assert!(
        matches!(s[..], [SiteOp::Select { dst: 3, if_true: Operand::Reg(4), if_false: Operand::Reg(5), .. }]),
        "{s:?}"
    );
    // movsx in place of a move: no select.
    let p = [
        Insn::ldx(DW, 2, 1, 0),
        Insn::mov64_reg(3, 4),
        Insn::jmp_imm(JEQ, 2, 0, 1),
        Insn::new(ALU64 | MOV | X, 3, 1, 16, 0),
        Insn::mov64_reg(0, 3),
        Insn::exit(),
    ];
    assert!(ops(&found(&p), Pass::Select).is_empty());
    // Mixed widths: w3 = w4 on one side, r3 = r1 on the other. The three-instruction
    // shape is rejected; what remains is the one-sided select after the 32-bit move
    // (r3 keeps the zero-extended w4 when the condition holds), which is exact.
    let p = [
        Insn::ldx(DW, 2, 1, 0),
        Insn::alu32_reg(MOV, 3, 4),
        Insn::jmp_imm(JEQ, 2, 0, 1),
        Insn::mov64_reg(3, 1),
        Insn::mov64_reg(0, 3),
        Insn::exit(),
    ];
    let f = found(&p);
    assert!(rejects(&f, Pass::Select).iter().any(|r| r.contains("widths")));
    let m: Vec<_> = f.matches.iter().filter(|m| m.pass == Pass::Select).map(|m| (m.start, m.end)).collect();
    assert_eq!(m, vec![(2, 4)]);
    // One-sided with a 32-bit move whose destination may have upper bits set: rejected.
    let p = [
        Insn::ldx(DW, 2, 1, 0),
        Insn::ldx(DW, 3, 1, 8),
        Insn::jmp_imm(JEQ, 2, 0, 1),
        Insn::alu32_reg(MOV, 3, 1),
        Insn::mov64_reg(0, 3),
        Insn::exit(),
    ];
    let f = found(&p);
    assert!(ops(&f, Pass::Select).is_empty());
    assert!(rejects(&f, Pass::Select).iter().any(|r| r.contains("mixed widths")), "{:?}", f.rejects);
    // A jump from outside into the second move.
    let p = [
        Insn::ldx(DW, 2, 1, 0),
        Insn::ldx(DW, 3, 1, 8),
        Insn::jmp_imm(JEQ, 2, 5, 2), // -> 5
        Insn::mov64_reg(0, 2),
        Insn::jmp_imm(JEQ, 3, 0, 1), // -> 6
        Insn::mov64_reg(0, 3),
        Insn::exit(),
    ];
    let f = found(&p);
    assert!(ops(&f, Pass::Select).is_empty());
    assert!(rejects(&f, Pass::Select).iter().any(|r| r.contains("jumps into the region")), "{:?}", f.rejects);
    // A diamond whose last move starts a subprogram (bpf-to-bpf call target).
    let p = [
        Insn::mov64_imm(1, 1),
        Insn::new(JMP | CALL, 0, PSEUDO_CALL, 0, 3), // -> 5
        Insn::jmp_imm(JEQ, 0, 0, 2),                 // -> 5
        Insn::mov64_imm(0, 1),
        Insn::ja(1),
        Insn::mov64_imm(0, 2),
        Insn::exit(),
    ];
    let f = found(&p);
    assert!(ops(&f, Pass::Select).is_empty());
    assert!(rejects(&f, Pass::Select).iter().any(|r| r.contains("subprogram")), "{:?}", f.rejects);
}

#[test]
fn extract_forms() {
    let cases: Vec<Vec<Insn>> = vec![
        vec![Insn::alu64_imm(RSH, 2, 12), Insn::alu64_imm(AND, 2, 0xff)],
        vec![Insn::alu64_imm(AND, 2, 0xff000), Insn::alu64_imm(RSH, 2, 12)],
        vec![Insn::alu64_imm(LSH, 2, 44), Insn::alu64_imm(RSH, 2, 52)],
        vec![Insn::alu32_imm(RSH, 2, 12), Insn::alu32_imm(AND, 2, 0xff)],
    ];
    let expect = [(12, 8), (12, 8), (8, 12), (12, 8)];
    for (body, (start, len)) in cases.iter().zip(expect) {
        let s = ops(&found(&prog(body, 2)), Pass::Extract);
        assert_eq!(s, vec![SiteOp::Extract { dst: 2, src: 2, start, len }], "{body:?}");
    }
    // A plain mask (start 0) and a non-contiguous mask are not extracts.
    let none: Vec<Vec<Insn>> = vec![
        vec![Insn::alu64_imm(RSH, 2, 12), Insn::alu64_imm(AND, 2, 0xf0)],
        vec![Insn::alu64_imm(AND, 2, 0xff), Insn::alu64_imm(ADD, 2, 1)],
    ];
    for body in &none {
        assert!(ops(&found(&prog(body, 2)), Pass::Extract).is_empty(), "{body:?}");
    }
}

#[test]
fn endian_sizes_must_match() {
    let p = |sz, bits| {
        vec![
            Insn::mov64_imm(0, 0),
            Insn::ldx(sz, 3, 1, 2),
            Insn::new(ALU | END | TO_BE, 3, 0, 0, bits),
            Insn::mov64_reg(0, 3),
            Insn::exit(),
        ]
    };
    assert_eq!(ops(&found(&p(H, 16)), Pass::Endian), vec![SiteOp::EndianLoad { dst: 3, base: 1, off: 2, size: 2 }]);
    assert_eq!(ops(&found(&p(DW, 64)), Pass::Endian), vec![SiteOp::EndianLoad { dst: 3, base: 1, off: 2, size: 8 }]);
    assert!(ops(&found(&p(W, 16)), Pass::Endian).is_empty());
    // to-little-endian is a truncation on this host, not a swap.
    let mut q = p(H, 16);
    q[2] = Insn::new(ALU | END | TO_LE, 3, 0, 0, 16);
    assert!(ops(&found(&q), Pass::Endian).is_empty());
}

#[test]
fn bulk_overlap_and_order() {
    // Same base, overlapping ranges, copied ascending: exactly the proof's order, taken.
    let copy = |d_off: i16, desc: bool| {
        let mut v = vec![Insn::mov64_imm(0, 0)];
        let mut offs = vec![0i16, 8, 16];
        if desc {
            offs.reverse();
        }
        for o in offs {
            v.push(Insn::ldx(DW, 2, 1, o));
            v.push(Insn::stx(DW, 1, 2, o + d_off));
        }
        v.push(Insn::exit());
        v
    };
    let s = ops(&found(&copy(8, false)), Pass::Bulk);
    assert!(matches!(s[..], [SiteOp::Memcpy { count: 3, width: 8, descending: false, .. }]), "{s:?}");
    // Two temporaries interleaved (ld, ld, st, st) with overlap: not the proof's order.
    let p = [
        Insn::mov64_imm(0, 0),
        Insn::ldx(DW, 2, 1, 0),
        Insn::ldx(DW, 3, 1, 8),
        Insn::stx(DW, 1, 2, 8),
        Insn::stx(DW, 1, 3, 16),
        Insn::exit(),
    ];
    let f = found(&p);
    assert!(ops(&f, Pass::Bulk).is_empty());
    assert!(rejects(&f, Pass::Bulk).iter().any(|r| r.contains("overlap")), "{:?}", f.rejects);
    // The same from the context to the stack: regions cannot overlap, any order is fine.
    let p = [
        Insn::mov64_imm(0, 0),
        Insn::ldx(DW, 2, 1, 0),
        Insn::ldx(DW, 3, 1, 8),
        Insn::stx(DW, 10, 2, -16),
        Insn::stx(DW, 10, 3, -8),
        Insn::exit(),
    ];
    let s = ops(&found(&p), Pass::Bulk);
    assert!(matches!(s[..], [SiteOp::Memcpy { dst_base: 10, dst_off: -16, src_base: 1, src_off: 0, count: 2, .. }]), "{s:?}");
    // Zero stores with a gap are no memset; contiguous ones are.
    let z = |offs: &[i16]| {
        let mut v = vec![Insn::mov64_imm(0, 0)];
        v.extend(offs.iter().map(|&o| Insn::st(DW, 10, o, 0)));
        v.push(Insn::exit());
        v
    };
    assert!(matches!(ops(&found(&z(&[-8, -16, -24])), Pass::Bulk)[..], [SiteOp::Memset { off: -24, count: 3, width: 8, .. }]));
    assert!(ops(&found(&z(&[-8, -24])), Pass::Bulk).is_empty());
}

fn li(off: u32, line: u32) -> kops_object::LineInfo {
    kops_object::LineInfo {
        insn_off: off,
        file_name_off: 0,
        line_off: 0,
        line_col: line << 10,
        file: "t.c".into(),
        source_line: format!("line {line}"),
    }
}

#[test]
fn rewrite_fixes_jumps_calls_func_refs_and_btf_ext() {
    let f = Insn::ld_imm64(4, PSEUDO_FUNC, 11); // slot 1 -> 1 + 1 + 11 = 13
    let insns = vec![
        Insn::ldx(DW, 2, 1, 0),                       // 0
        f[0],                                         // 1
        f[1],                                         // 2
        Insn::jmp_imm(JEQ, 2, 0, 6),                  // 3 -> 10
        Insn::mov64_reg(6, 2),                        // 4  rotate
        Insn::alu64_imm(RSH, 6, 51),                  // 5
        Insn::alu64_imm(LSH, 2, 13),                  // 6
        Insn::alu64_reg(OR, 2, 6),                    // 7
        Insn::mov64_reg(1, 2),                        // 8
        Insn::new(JMP | CALL, 0, PSEUDO_CALL, 0, 3),  // 9 -> 13
        Insn::jmp_imm(JEQ, 0, 1, -7),                 // 10 -> 4
        Insn::mov64_imm(0, 0),                        // 11
        Insn::exit(),                                 // 12
        Insn::mov64_reg(0, 1),                        // 13 subprogram
        Insn::exit(),                                 // 14
    ];
    let sub = |name: &str, start, len| kops_object::Subprog { name: name.into(), start, len, section: "xdp".into(), sec_start: start };
    let p = kops_object::Program {
        name: "t".into(),
        section: "xdp".into(),
        prog_type: kops_object::ProgType::Xdp,
        prog_type_id: 6,
        expected_attach_type: 0,
        insns,
        subprogs: vec![sub("t", 0, 13), sub("f", 13, 2)],
        func_info: vec![kops_object::FuncInfo { insn_off: 0, type_id: 1 }, kops_object::FuncInfo { insn_off: 13, type_id: 2 }],
        line_info: vec![li(0, 1), li(4, 2), li(5, 3), li(6, 4), li(10, 5), li(13, 6)],
    };
    let pol = Policy { mode: Mode::All, passes: vec![Pass::Rotate] };
    let r = run_program(&p, &pol).unwrap();
    let site = kops_einsn::Rotate64::new(2, 2, 6, 13, false).unwrap().site().unwrap();
    let f2 = Insn::ld_imm64(4, PSEUDO_FUNC, 9); // slot 1 -> 11
    let expect = vec![
        Insn::ldx(DW, 2, 1, 0),
        f2[0],
        f2[1],
        Insn::jmp_imm(JEQ, 2, 0, 4), // 3 -> 8
        site[0],
        site[1],
        Insn::mov64_reg(1, 2),
        Insn::new(JMP | CALL, 0, PSEUDO_CALL, 0, 3), // 7 -> 11
        Insn::jmp_imm(JEQ, 0, 1, -5),                // 8 -> 4
        Insn::mov64_imm(0, 0),
        Insn::exit(),
        Insn::mov64_reg(0, 1),
        Insn::exit(),
    ];
    assert_eq!(r.program.insns, expect);
    assert_eq!(r.program.subprogs.iter().map(|s| (s.start, s.len)).collect::<Vec<_>>(), vec![(0, 11), (11, 2)]);
    assert_eq!(r.program.func_info.iter().map(|f| f.insn_off).collect::<Vec<_>>(), vec![0, 11]);
    // Entries on removed slots move to the next surviving one (old 8 = new 6); the first
    // entry for a slot wins.
    assert_eq!(r.program.line_info.iter().map(|l| (l.insn_off, l.line())).collect::<Vec<_>>(), vec![(0, 1), (4, 2), (6, 3), (8, 5), (11, 6)]);
    assert_eq!(r.old_to_new, vec![0, 1, 2, 3, 4, 6, 6, 6, 6, 7, 8, 9, 10, 11, 12, 13]);
    let s = &r.report.sites[0];
    assert_eq!((s.start, s.end, s.rewrite, s.line.as_deref()), (4, 8, true, Some("t.c:2")));
}

#[test]
fn prefetch_only_for_dead_loads_off_the_stack() {
    let p = |base: u8, ret: u8| {
        vec![
            Insn::ldx(DW, 2, 1, 0),
            Insn::mov64_reg(4, 10),
            Insn::ldx(B, 3, base, -8),
            Insn::mov64_reg(0, ret),
            Insn::exit(),
        ]
    };
    assert_eq!(ops(&found(&p(1, 2)), Pass::Prefetch), vec![SiteOp::Prefetch { base: 1, off: -8 }]);
    // The loaded value is used: a real load.
    assert!(ops(&found(&p(1, 3)), Pass::Prefetch).is_empty());
    // A stack address (r4 = r10): nothing to prefetch.
    assert!(ops(&found(&p(4, 2)), Pass::Prefetch).is_empty());
}

/// Random instruction arrays (plausible and garbage slots mixed) never panic the passes
/// or the rewriter: they give matches, rejects or an analysis error.
#[test]
fn random_programs_do_not_panic() {
    let mut x = 0x2545_f491_4f6c_dd1du64;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let pool = [
        Insn::mov64_reg(3, 2),
        Insn::alu64_imm(RSH, 3, 51),
        Insn::alu64_imm(LSH, 2, 13),
        Insn::alu64_reg(OR, 2, 3),
        Insn::alu32_imm(RSH, 2, 3),
        Insn::alu32_imm(AND, 2, 0x1f),
        Insn::ldx(B, 4, 1, 0),
        Insn::ldx(B, 5, 1, 1),
        Insn::alu64_imm(LSH, 5, 8),
        Insn::alu64_reg(OR, 4, 5),
        Insn::ldx(DW, 2, 10, -8),
        Insn::stx(DW, 10, 2, -16),
        Insn::st(DW, 10, -24, 0),
        Insn::jmp_imm(JEQ, 2, 0, 1),
        Insn::ja(1),
        Insn::new(ALU | END | TO_BE, 4, 0, 0, 16),
        Insn::new(ALU64 | MOV | K, 7, PSEUDO_KINSN_SIDECAR, 3, 5),
        Insn::new(JMP | CALL, 0, PSEUDO_KINSN_CALL, 0, 1),
        Insn::call_helper(1),
    ];
    let (mut analysed, mut matched, mut rewritten) = (0, 0, 0);
    for _ in 0..3000 {
        let n = 1 + (next() % 40) as usize;
        let mut v: Vec<Insn> = (0..n)
            .map(|_| {
                let r = next();
                if r % 5 == 0 {
                    Insn::from_bytes(next().to_le_bytes())
                } else {
                    pool[(r >> 8) as usize % pool.len()]
                }
            })
            .collect();
        v.push(Insn::exit());
        if let Ok(f) = find_matches(&v, &[], Some(kops_object::ProgType::Xdp), &Pass::ALL) {
            analysed += 1;
            matched += f.matches.len();
            for m in &f.matches {
                let _ = encode::replacement(&v, m);
            }
        }
        let p = kops_object::Program {
            name: "r".into(),
            section: "xdp".into(),
            prog_type: kops_object::ProgType::Xdp,
            prog_type_id: 6,
            expected_attach_type: 0,
            insns: v.clone(),
            subprogs: vec![kops_object::Subprog { name: "r".into(), start: 0, len: v.len(), section: "xdp".into(), sec_start: 0 }],
            func_info: vec![],
            line_info: vec![],
        };
        if run_program(&p, &Policy { mode: Mode::All, passes: Pass::ALL.to_vec() }).is_ok() {
            rewritten += 1;
        }
    }
    // The generator must reach the passes, not only the analysis errors.
    assert!(analysed > 500 && matched > 100 && rewritten > 500, "{analysed} {matched} {rewritten}");
}

/// A 64-slot add/xor chain makes terms whose tree form is exponential (each value uses
/// the previous two); matching must stay fast (shared subterms are compared by identity).
#[test]
fn dag_shaped_terms_stay_fast() {
    let mut v = vec![Insn::ldx(DW, 2, 1, 0), Insn::ldx(DW, 3, 1, 8)];
    for k in 0..30 {
        v.push(Insn::alu64_reg(ADD, 2, 3));
        v.push(Insn::alu64_reg(if k % 2 == 0 { XOR } else { OR }, 3, 2));
    }
    v.push(Insn::mov64_reg(4, 3));
    v.push(Insn::alu64_imm(RSH, 4, 51));
    v.push(Insn::alu64_imm(LSH, 3, 13));
    v.push(Insn::alu64_reg(OR, 3, 4));
    v.push(Insn::alu64_reg(ADD, 2, 2));
    v.push(Insn::alu64_reg(MUL, 3, 3));
    v.push(Insn::mov64_reg(0, 3));
    v.push(Insn::exit());
    let t = std::time::Instant::now();
    let f = found(&v);
    assert!(t.elapsed().as_secs() < 5, "{:?}", t.elapsed());
    // The rotate at the end of the chain is still found.
    assert_eq!(ops(&f, Pass::Rotate).len(), 1, "{:?}", f.rejects);
}

/// The site goes after the last kept instruction that reads its destination; its input
/// must come from a register that no kept instruction before it overwrote (r0 held the
/// input at the idiom's start, then `r0 = 7` ran).
#[test]
fn site_after_kept_uses_of_its_destination() {
    let p = [
        Insn::ldx(DW, 2, 1, 0),
        Insn::mov64_reg(0, 2),
        Insn::mov64_reg(3, 2), // idiom starts
        Insn::mov64_imm(0, 7), // kept: overwrites a holder of the input
        Insn::mov64_reg(5, 4), // kept: reads the destination's old value
        Insn::alu64_imm(RSH, 3, 51),
        Insn::mov64_reg(4, 2),
        Insn::alu64_imm(LSH, 4, 13),
        Insn::alu64_reg(OR, 4, 3),
        Insn::alu64_reg(ADD, 0, 4),
        Insn::alu64_reg(ADD, 0, 5),
        Insn::exit(),
    ];
    let f = found(&p);
    let m: Vec<&Match> = f.matches.iter().filter(|m| m.pass == Pass::Rotate).collect();
    assert_eq!(m.len(), 1, "{:?}", f.rejects);
    assert_eq!((m[0].start, m[0].end, m[0].site_pos), (2, 9, 2));
    assert!(matches!(m[0].op, SiteOp::Rotate { dst: 4, src: 2, amount: 13, .. }), "{:?}", m[0].op);
    let (new, kept) = encode::replacement(&p, m[0]).unwrap();
    assert_eq!(&new[..2], &[p[3], p[4]]);
    assert_eq!(kept, vec![(0, 3), (1, 4)]);
}

/// The proof sequence of the site a select match encodes to (independent check: it must be
/// the idiom's own instructions).
fn select_cmp_proof(m: &Match) -> Vec<Insn> {
    let site = encode::site(&m.op).unwrap();
    assert_eq!(site[1].imm as u32, kops_einsn::id::SELECT_CMP, "{:?}", m.op);
    let raw = site[0].kinsn_payload();
    kops_einsn::registry().get(kops_einsn::id::SELECT_CMP).unwrap().instantiate(raw).unwrap()
}

#[test]
fn comparison_selects_become_select_cmp() {
    let sel = |f: &Found| -> Vec<Match> { f.matches.iter().filter(|m| m.pass == Pass::Select).cloned().collect() };
    // clang's clamp: `if w9 > w6 goto +1; w9 = w6`, r9 loaded (upper half may be set: the
    // 32-bit move on one path only is exactly select_cmp's mov32 proof).
    for (jc, mv) in [(JMP32, Insn::alu32_reg(MOV, 9, 6)), (JMP, Insn::mov64_reg(9, 6))] {
        for cmp in [JGT, JSLT, JSET, JNE] {
            let p = [Insn::ldx(DW, 9, 1, 0), Insn::ldx(W, 6, 1, 8), Insn::new(jc | cmp | X, 9, 6, 1, 0), mv, Insn::mov64_reg(0, 9), Insn::exit()];
            let f = found(&p);
            let m = sel(&f);
            assert_eq!(m.len(), 1, "{:?}", f.rejects);
            assert_eq!((m[0].start, m[0].end), (2, 4));
            assert!(m[0].prefix.is_empty());
            assert_eq!(select_cmp_proof(&m[0]), p[2..4].to_vec());
        }
    }
    // Compare-exchange: `w5 = w9; if w9 > w1 goto +1; w5 = w1` then `if w9 < w1 goto +1;
    // w9 = w1`: the first move stays, the two one-sided selects are sites.
    let p = [
        Insn::ldx(W, 9, 1, 0),
        Insn::ldx(W, 1, 1, 4),
        Insn::alu32_reg(MOV, 5, 9),
        Insn::new(JMP32 | JGT | X, 9, 1, 1, 0),
        Insn::alu32_reg(MOV, 5, 1),
        Insn::new(JMP32 | JLT | X, 9, 1, 1, 0),
        Insn::alu32_reg(MOV, 9, 1),
        Insn::mov64_reg(0, 9),
        Insn::alu64_reg(ADD, 0, 5),
        Insn::exit(),
    ];
    let f = found(&p);
    let m = sel(&f);
    assert_eq!(m.iter().map(|m| (m.start, m.end)).collect::<Vec<_>>(), vec![(3, 5), (5, 7)], "{:?}", f.rejects);
    assert_eq!(select_cmp_proof(&m[0]), p[3..5].to_vec());
    assert_eq!(select_cmp_proof(&m[1]), p[5..7].to_vec());
    // Immediate comparand: `if r2 s> -5 goto +1; r2 = r4` goes through a dead register
    // (r0: dead until `r0 = r2` after the site), moved sign-extended before the site.
    let p = [Insn::ldx(DW, 2, 1, 0), Insn::ldx(DW, 4, 1, 8), Insn::jmp_imm(JSGT, 2, -5, 1), Insn::mov64_reg(2, 4), Insn::mov64_reg(0, 2), Insn::exit()];
    let f = found(&p);
    let m = sel(&f);
    assert_eq!(m.len(), 1, "{:?}", f.rejects);
    assert_eq!(m[0].prefix, vec![Insn::mov64_imm(0, -5)]);
    assert_eq!(select_cmp_proof(&m[0]), vec![Insn::new(JMP | JSGT | X, 2, 0, 1, 0), Insn::mov64_reg(2, 4)]);
    // Comparison diamond `if r2 > r4 goto +2; r3 = r5; ja +1; w3 = w6`: the taken value is
    // moved first, then select_cmp over it.
    let p = [
        Insn::ldx(DW, 2, 1, 0),
        Insn::ldx(DW, 4, 1, 8),
        Insn::new(JMP | JGT | X, 2, 4, 2, 0),
        Insn::mov64_reg(3, 5),
        Insn::ja(1),
        Insn::alu32_reg(MOV, 3, 6),
        Insn::mov64_reg(0, 3),
        Insn::exit(),
    ];
    let f = found(&p);
    let m = sel(&f);
    assert_eq!(m.len(), 1, "{:?}", f.rejects);
    assert_eq!((m[0].start, m[0].end), (2, 6));
    assert_eq!(m[0].prefix, vec![Insn::alu32_reg(MOV, 3, 6)]);
    assert_eq!(select_cmp_proof(&m[0]), vec![Insn::new(JMP | JGT | X, 2, 4, 1, 0), Insn::mov64_reg(3, 5)]);
    // ... but not when the condition reads the destination.
    let mut q = p;
    q[2] = Insn::new(JMP | JGT | X, 3, 4, 2, 0);
    let f = found(&q);
    assert!(sel(&f).is_empty());
    assert!(rejects(&f, Pass::Select).iter().any(|r| r.contains("reads the destination")), "{:?}", f.rejects);
    // movsx is not a move.
    let p = [Insn::ldx(DW, 9, 1, 0), Insn::ldx(DW, 6, 1, 8), Insn::new(JMP | JGT | X, 9, 6, 1, 0), Insn::new(ALU64 | MOV | X, 9, 6, 16, 0), Insn::mov64_reg(0, 9), Insn::exit()];
    assert!(sel(&found(&p)).is_empty());
}
