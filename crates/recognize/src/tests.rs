// Instruction sequences in the conformance suite's assembly syntax: every operand/shift
// order, the negative cases, and the fix-ups. Expected values are worked out by hand from
// the sequences.
use super::*;
use kops_einsn::*;
use kops_isa::op::*;

fn asm(text: &str) -> Vec<Insn> {
    kops_isa::asm::assemble(text).unwrap_or_else(|e| panic!("{e}"))
}

fn found(p: &[Insn]) -> Found {
    find_matches(p, &[], None, &Pass::ALL).unwrap()
}

fn ops(f: &Found, pass: Pass) -> Vec<Site> {
    f.matches.iter().filter(|m| m.pass == pass).map(|m| m.op.clone()).collect()
}

fn rejects(f: &Found, pass: Pass) -> Vec<String> {
    f.rejects.iter().filter(|r| r.pass == pass).map(|r| r.reason.clone()).collect()
}

/// `r2 = *(u64 *)(r1 + 0)`, the body, `r0 = r{ret}`, `exit`.
fn prog(body: &str, ret: u8) -> Vec<Insn> {
    asm(&format!("ldxdw %r2, [%r1]\n{body}\nmov %r0, %r{ret}\nexit"))
}

fn site<P: Into<AnyOp>>(p: Result<P, kops_kinsn::PayloadError>) -> Site {
    Site::Kinsn(p.unwrap().into())
}

#[test]
fn rotate_every_operand_and_shift_order() {
    // (body, result register)
    let cases = [
        ("mov %r3, %r2\nrsh %r3, 51\nlsh %r2, 13\nor %r2, %r3", 2),
        ("mov %r3, %r2\nlsh %r3, 13\nrsh %r2, 51\nor %r2, %r3", 2),
        // result in the temporary: or t,s
        ("mov %r3, %r2\nrsh %r3, 51\nlsh %r2, 13\nor %r3, %r2", 3),
        // source kept: two copies
        ("mov %r3, %r2\nrsh %r3, 51\nmov %r4, %r2\nlsh %r4, 13\nor %r4, %r3", 4),
        // shifts in the other order, or reversed
        ("mov %r4, %r2\nlsh %r4, 13\nmov %r3, %r2\nrsh %r3, 51\nor %r3, %r4", 3),
    ];
    for (body, ret) in cases {
        let f = found(&prog(body, ret));
        let r = ops(&f, Pass::Rotate);
        assert_eq!(r.len(), 1, "{body}: {:?}", f.rejects);
        let Site::Kinsn(AnyOp::Rotate64(p)) = &r[0] else { panic!("{:?}", r[0]) };
        assert_eq!((p.dst, p.src, p.k), (ret, 2, 13));
        assert_ne!(p.tmp, p.dst);
    }
    let r = ops(&found(&prog("mov32 %r3, %r2\nrsh32 %r3, 27\nlsh32 %r2, 5\nor32 %r2, %r3", 2)), Pass::Rotate);
    assert!(matches!(r[..], [Site::Kinsn(AnyOp::Rotate32(Rotate32 { dst: 2, src: 2, k: 5, .. }))]), "{r:?}");
}

#[test]
fn rotate_negatives() {
    let base = "mov %r3, %r2\nrsh %r3, 51\nlsh %r2, 13\nor %r2, %r3";
    // The temporary is live after the idiom (returned).
    let f = found(&prog(base, 3));
    assert!(ops(&f, Pass::Rotate).is_empty());
    assert!(rejects(&f, Pass::Rotate).iter().any(|r| r.contains("temporary r3 is live")), "{:?}", f.rejects);
    // Mixed widths: 64-bit right shift, 32-bit left shift and or (clang's truncated rol64).
    assert!(ops(&found(&prog("mov %r3, %r2\nrsh %r3, 51\nlsh32 %r2, 13\nor32 %r2, %r3", 2)), Pass::Rotate).is_empty());
    // Shift amounts that do not add up to the width.
    assert!(ops(&found(&prog("mov %r3, %r2\nrsh %r3, 50\nlsh %r2, 13\nor %r2, %r3", 2)), Pass::Rotate).is_empty());
    // movsx is not a mov: r3 = (s32)r2.
    assert!(ops(&found(&prog("movsx3264 %r3, %r2\nrsh %r3, 51\nlsh %r2, 13\nor %r2, %r3", 2)), Pass::Rotate).is_empty());
    // A branch into the middle (to the left shift) splits the idiom.
    let p = asm(&format!("ldxdw %r2, [%r1]\njeq %r2, 7, +2\n{base}\nmov %r0, %r2\nexit"));
    assert_eq!(p[1].target(1), Some(4));
    assert!(ops(&found(&p), Pass::Rotate).is_empty());
}

#[test]
fn select_shapes_widths_and_negatives() {
    // mov; jcc +1; mov with a JMP32 and a JMP condition on zero.
    for (jeq, cond32) in [("jeq32", true), ("jeq", false)] {
        let p = asm(&format!(
            "ldxdw %r2, [%r1]\nldxdw %r4, [%r1+8]\nmov %r3, %r4\n{jeq} %r2, 0, +1\nmov %r3, %r1\nmov %r0, %r3\nexit"
        ));
        let f = found(&p);
        let s = ops(&f, Pass::Select);
        // select64 dst = cond != 0 ? a : b, with a = the false value for JEQ.
        assert_eq!(s, vec![site(Select::new(3, 2, 1, 4, cond32, false))], "{:?}", f.rejects);
    }
    // Diamond: if r2 != 0 goto +2; r3 = r5; ja +1; r3 = r4
    let p = asm("ldxdw %r2, [%r1]\njne %r2, 0, +2\nmov %r3, %r5\nja +1\nmov %r3, %r4\nmov %r0, %r3\nexit");
    assert_eq!(ops(&found(&p), Pass::Select), vec![site(Select::new(3, 2, 4, 5, false, false))]);
    // movsx in place of a move: no select.
    let p = asm("ldxdw %r2, [%r1]\nmov %r3, %r4\njeq %r2, 0, +1\nmovsx1664 %r3, %r1\nmov %r0, %r3\nexit");
    assert!(ops(&found(&p), Pass::Select).is_empty());
    // Mixed widths: w3 = w4 on one side, r3 = r1 on the other. The three-instruction
    // shape is rejected; what remains is the one-sided select after the 32-bit move
    // (r3 keeps the zero-extended w4 when the condition holds), which is exact.
    let p = asm("ldxdw %r2, [%r1]\nmov32 %r3, %r4\njeq %r2, 0, +1\nmov %r3, %r1\nmov %r0, %r3\nexit");
    let f = found(&p);
    assert!(rejects(&f, Pass::Select).iter().any(|r| r.contains("widths")));
    let m: Vec<_> = f.matches.iter().filter(|m| m.pass == Pass::Select).map(|m| (m.start, m.end)).collect();
    assert_eq!(m, vec![(2, 4)]);
    // One-sided with a 32-bit move whose destination may have upper bits set: rejected.
    let p = asm("ldxdw %r2, [%r1]\nldxdw %r3, [%r1+8]\njeq %r2, 0, +1\nmov32 %r3, %r1\nmov %r0, %r3\nexit");
    let f = found(&p);
    assert!(ops(&f, Pass::Select).is_empty());
    assert!(rejects(&f, Pass::Select).iter().any(|r| r.contains("mixed widths")), "{:?}", f.rejects);
    // A jump from outside into the second move.
    let p = asm("ldxdw %r2, [%r1]\nldxdw %r3, [%r1+8]\njeq %r2, 5, +2\nmov %r0, %r2\njeq %r3, 0, +1\nmov %r0, %r3\nexit");
    let f = found(&p);
    assert!(ops(&f, Pass::Select).is_empty());
    assert!(rejects(&f, Pass::Select).iter().any(|r| r.contains("jumps into the region")), "{:?}", f.rejects);
    // A diamond whose last move starts a subprogram (bpf-to-bpf call target).
    let p = asm("mov %r1, 1\ncall local f\njeq %r0, 0, +2\nmov %r0, 1\nja +1\nf:\nmov %r0, 2\nexit");
    let f = found(&p);
    assert!(ops(&f, Pass::Select).is_empty());
    assert!(rejects(&f, Pass::Select).iter().any(|r| r.contains("subprogram")), "{:?}", f.rejects);
}

#[test]
fn extract_forms() {
    let cases = [
        ("rsh %r2, 12\nand %r2, 0xff", (12, 8)),
        ("and %r2, 0xff000\nrsh %r2, 12", (12, 8)),
        ("lsh %r2, 44\nrsh %r2, 52", (8, 12)),
        ("rsh32 %r2, 12\nand32 %r2, 0xff", (12, 8)),
    ];
    for (body, (start, len)) in cases {
        assert_eq!(ops(&found(&prog(body, 2)), Pass::Extract), vec![site(Extract::new(2, 2, start, len))], "{body}");
    }
    // A plain mask (start 0) and a non-contiguous mask are not extracts.
    for body in ["rsh %r2, 12\nand %r2, 0xf0", "and %r2, 0xff\nadd %r2, 1"] {
        assert!(ops(&found(&prog(body, 2)), Pass::Extract).is_empty(), "{body}");
    }
}

#[test]
fn endian_sizes_must_match() {
    let p = |ld: &str, swap: &str| asm(&format!("mov %r0, 0\n{ld} %r3, [%r1+2]\n{swap} %r3\nmov %r0, %r3\nexit"));
    assert_eq!(ops(&found(&p("ldxh", "be16")), Pass::Endian), vec![site(EndianLoad16::new(3, 1, 2))]);
    assert_eq!(ops(&found(&p("ldxdw", "be64")), Pass::Endian), vec![site(EndianLoad64::new(3, 1, 2))]);
    assert!(ops(&found(&p("ldxw", "be16")), Pass::Endian).is_empty());
    // to-little-endian is a truncation on this host, not a swap.
    assert!(ops(&found(&p("ldxh", "le16")), Pass::Endian).is_empty());
}

#[test]
fn bulk_overlap_and_order() {
    // Same base, overlapping ranges, copied ascending: exactly the proof's order, taken.
    let mut copy = "mov %r0, 0\n".to_string();
    for o in [0, 8, 16] {
        copy += &format!("ldxdw %r2, [%r1+{o}]\nstxdw [%r1+{}], %r2\n", o + 8);
    }
    let s = ops(&found(&asm(&(copy + "exit"))), Pass::Bulk);
    assert!(matches!(s[..], [Site::Kinsn(AnyOp::Memcpy(Memcpy { count: 3, width: 8, descending: false, .. }))]), "{s:?}");
    // Two temporaries interleaved (ld, ld, st, st) with overlap: not the proof's order.
    let p = asm("mov %r0, 0\nldxdw %r2, [%r1]\nldxdw %r3, [%r1+8]\nstxdw [%r1+8], %r2\nstxdw [%r1+16], %r3\nexit");
    let f = found(&p);
    assert!(ops(&f, Pass::Bulk).is_empty());
    assert!(rejects(&f, Pass::Bulk).iter().any(|r| r.contains("overlap")), "{:?}", f.rejects);
    // The same from the context to the stack: regions cannot overlap, any order is fine.
    let p = asm("mov %r0, 0\nldxdw %r2, [%r1]\nldxdw %r3, [%r1+8]\nstxdw [%r10-16], %r2\nstxdw [%r10-8], %r3\nexit");
    let s = ops(&found(&p), Pass::Bulk);
    assert!(
        matches!(s[..], [Site::Kinsn(AnyOp::Memcpy(Memcpy { dst: 10, dst_off: -16, src: 1, src_off: 0, count: 2, .. }))]),
        "{s:?}"
    );
    // Zero stores with a gap are no memset; contiguous ones are.
    let z = |offs: &[i16]| {
        let st: Vec<String> = offs.iter().map(|o| format!("stdw [%r10{o}], 0")).collect();
        asm(&format!("mov %r0, 0\n{}\nexit", st.join("\n")))
    };
    let s = ops(&found(&z(&[-8, -16, -24])), Pass::Bulk);
    assert!(matches!(s[..], [Site::Kinsn(AnyOp::Memset(Memset { off: -24, count: 3, width: 8, .. }))]), "{s:?}");
    assert!(ops(&found(&z(&[-8, -24])), Pass::Bulk).is_empty());
}

#[test]
fn abs_sign_mask_forms() {
    // clang's select_clamp: w3 = w2; w3 s>>= 31; w9 = w2; w9 ^= w3; w9 -= w3 (and in place).
    let p = prog("mov32 %r3, %r2\narsh32 %r3, 31\nmov32 %r9, %r2\nxor32 %r9, %r3\nsub32 %r9, %r3", 9);
    assert_eq!(ops(&found(&p), Pass::Abs), vec![site(Abs::new(9, 2, 3, true))]);
    let p = prog("mov %r3, %r2\narsh %r3, 63\nxor %r2, %r3\nsub %r2, %r3", 2);
    let s = ops(&found(&p), Pass::Abs);
    assert!(matches!(s[..], [Site::Kinsn(AnyOp::Abs(Abs { dst: 2, src: 2, alu32: false, .. }))]), "{s:?}");
    // The wrong shift (not the sign): no site.
    assert!(ops(&found(&prog("mov %r3, %r2\narsh %r3, 62\nxor %r2, %r3\nsub %r2, %r3", 2)), Pass::Abs).is_empty());
    // The mask read after the idiom: it stays in place, the site takes another register.
    let p = asm("ldxdw %r2, [%r1]\nmov %r3, %r2\narsh %r3, 63\nxor %r2, %r3\nsub %r2, %r3\nmov %r0, %r2\nadd %r0, %r3\nexit");
    let s = ops(&found(&p), Pass::Abs);
    assert!(s.iter().all(|s| matches!(s, Site::Kinsn(AnyOp::Abs(a)) if a.tmp != 3)), "{s:?}");
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
    // `lddw %r4, f` with src PSEUDO_FUNC: a pointer to the subprogram at slot 13.
    let func_ref = |insns: &mut Vec<Insn>, pc: usize, imm: i32| {
        insns[pc].src = PSEUDO_FUNC;
        insns[pc].imm = imm;
    };
    let mut insns = asm(
        "ldxdw %r2, [%r1]\n\
         lddw %r4, 0\n\
         jeq %r2, 0, +6\n\
         mov %r6, %r2\nrsh %r6, 51\nlsh %r2, 13\nor %r2, %r6\n\
         mov %r1, %r2\n\
         call local f\n\
         jeq %r0, 1, -7\n\
         mov %r0, 0\nexit\n\
         f:\nmov %r0, %r1\nexit",
    );
    func_ref(&mut insns, 1, 11); // slot 1 -> 1 + 1 + 11 = 13
    assert_eq!((insns[3].target(3), insns[9].target(9), insns[10].target(10)), (Some(10), Some(13), Some(4)));
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
    let site = Rotate64::new(2, 2, 6, 13, false).unwrap().site().unwrap();
    let mut expect = asm(
        "ldxdw %r2, [%r1]\n\
         lddw %r4, 0\n\
         jeq %r2, 0, +4\n\
         mov %r1, %r2\n\
         call local f\n\
         jeq %r0, 1, -5\n\
         mov %r0, 0\nexit\n\
         f:\nmov %r0, %r1\nexit",
    );
    func_ref(&mut expect, 1, 9); // slot 1 -> 11
    expect.splice(4..4, site);
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
    let p = |base: u8, ret: u8| asm(&format!("ldxdw %r2, [%r1]\nmov %r4, %r10\nldxb %r3, [%r{base}-8]\nmov %r0, %r{ret}\nexit"));
    assert_eq!(ops(&found(&p(1, 2)), Pass::Prefetch), vec![site(Prefetch::new(1, -8))]);
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
    let mut pool = asm(
        "mov %r3, %r2\nrsh %r3, 51\nlsh %r2, 13\nor %r2, %r3\nrsh32 %r2, 3\nand32 %r2, 0x1f\n\
         ldxb %r4, [%r1]\nldxb %r5, [%r1+1]\nlsh %r5, 8\nor %r4, %r5\nldxdw %r2, [%r10-8]\n\
         stxdw [%r10-16], %r2\nstdw [%r10-24], 0\njeq %r2, 0, +1\nja +1\nbe16 %r4\ncall 1",
    );
    // A rotate64 site (the assembler has no kinsn syntax) and stray halves of one.
    pool.extend(Rotate64::new(7, 3, 0, 13, false).unwrap().site().unwrap());
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
    let mut text = "ldxdw %r2, [%r1]\nldxdw %r3, [%r1+8]\n".to_string();
    for k in 0..30 {
        text += &format!("add %r2, %r3\n{} %r3, %r2\n", if k % 2 == 0 { "xor" } else { "or" });
    }
    text += "mov %r4, %r3\nrsh %r4, 51\nlsh %r3, 13\nor %r3, %r4\nadd %r2, %r2\nmul %r3, %r3\nmov %r0, %r3\nexit";
    let v = asm(&text);
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
    let p = asm(
        "ldxdw %r2, [%r1]\nmov %r0, %r2\n\
         mov %r3, %r2\n\
         mov %r0, 7\n\
         mov %r5, %r4\n\
         rsh %r3, 51\nmov %r4, %r2\nlsh %r4, 13\nor %r4, %r3\n\
         add %r0, %r4\nadd %r0, %r5\nexit",
    );
    // slot 2 starts the idiom; slot 3 (kept) overwrites a holder of the input; slot 4
    // (kept) reads the destination's old value.
    let f = found(&p);
    let m: Vec<&Match> = f.matches.iter().filter(|m| m.pass == Pass::Rotate).collect();
    assert_eq!(m.len(), 1, "{:?}", f.rejects);
    assert_eq!((m[0].start, m[0].end, m[0].site_pos), (2, 9, 2));
    assert!(matches!(m[0].op, Site::Kinsn(AnyOp::Rotate64(Rotate64 { dst: 4, src: 2, k: 13, .. }))), "{:?}", m[0].op);
    let (new, kept) = encode::replacement(&p, m[0]).unwrap();
    assert_eq!(&new[..2], &[p[3], p[4]]);
    assert_eq!(kept, vec![(0, 3), (1, 4)]);
}

/// The proof sequence of the site a select match encodes to (independent check: it must be
/// the idiom's own instructions).
fn select_cmp_proof(m: &Match) -> Vec<Insn> {
    let site = encode::site(&m.op).unwrap();
    assert_eq!(site[1].imm as u32, SelectCmp::ID, "{:?}", m.op);
    let raw = site[0].kinsn_payload();
    registry().get(SelectCmp::ID).unwrap().instantiate(raw).unwrap()
}

#[test]
fn comparison_selects_become_select_cmp() {
    let sel = |f: &Found| -> Vec<Match> { f.matches.iter().filter(|m| m.pass == Pass::Select).cloned().collect() };
    // clang's clamp: `if w9 > w6 goto +1; w9 = w6`, r9 loaded (upper half may be set: the
    // 32-bit move on one path only is exactly select_cmp's mov32 proof).
    for (w, mv) in [("32", "mov32"), ("", "mov")] {
        for cmp in ["jgt", "jslt", "jset", "jne"] {
            let p = asm(&format!("ldxdw %r9, [%r1]\nldxw %r6, [%r1+8]\n{cmp}{w} %r9, %r6, +1\n{mv} %r9, %r6\nmov %r0, %r9\nexit"));
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
    let p = asm(
        "ldxw %r9, [%r1]\nldxw %r1, [%r1+4]\nmov32 %r5, %r9\njgt32 %r9, %r1, +1\nmov32 %r5, %r1\n\
         jlt32 %r9, %r1, +1\nmov32 %r9, %r1\nmov %r0, %r9\nadd %r0, %r5\nexit",
    );
    let f = found(&p);
    let m = sel(&f);
    assert_eq!(m.iter().map(|m| (m.start, m.end)).collect::<Vec<_>>(), vec![(3, 5), (5, 7)], "{:?}", f.rejects);
    assert_eq!(select_cmp_proof(&m[0]), p[3..5].to_vec());
    assert_eq!(select_cmp_proof(&m[1]), p[5..7].to_vec());
    // Immediate comparand: `if r2 s> -5 goto +1; r2 = r4` goes through a dead register
    // (r0: dead until `r0 = r2` after the site), moved sign-extended before the site.
    let p = asm("ldxdw %r2, [%r1]\nldxdw %r4, [%r1+8]\njsgt %r2, -5, +1\nmov %r2, %r4\nmov %r0, %r2\nexit");
    let f = found(&p);
    let m = sel(&f);
    assert_eq!(m.len(), 1, "{:?}", f.rejects);
    assert_eq!(m[0].prefix, asm("mov %r0, -5"));
    assert_eq!(select_cmp_proof(&m[0]), asm("jsgt %r2, %r0, +1\nmov %r2, %r4"));
    // Comparison diamond `if r2 > r4 goto +2; r3 = r5; ja +1; w3 = w6`: the taken value is
    // moved first, then select_cmp over it.
    let p = asm("ldxdw %r2, [%r1]\nldxdw %r4, [%r1+8]\njgt %r2, %r4, +2\nmov %r3, %r5\nja +1\nmov32 %r3, %r6\nmov %r0, %r3\nexit");
    let f = found(&p);
    let m = sel(&f);
    assert_eq!(m.len(), 1, "{:?}", f.rejects);
    assert_eq!((m[0].start, m[0].end), (2, 6));
    assert_eq!(m[0].prefix, asm("mov32 %r3, %r6"));
    assert_eq!(select_cmp_proof(&m[0]), asm("jgt %r2, %r4, +1\nmov %r3, %r5"));
    // ... but not when the condition reads the destination.
    let mut q = p;
    q[2] = asm("jgt %r3, %r4, +2")[0];
    let f = found(&q);
    assert!(sel(&f).is_empty());
    assert!(rejects(&f, Pass::Select).iter().any(|r| r.contains("reads the destination")), "{:?}", f.rejects);
    // movsx is not a move.
    let p = asm("ldxdw %r9, [%r1]\nldxdw %r6, [%r1+8]\njgt %r9, %r6, +1\nmovsx1664 %r9, %r6\nmov %r0, %r9\nexit");
    assert!(sel(&found(&p)).is_empty());
}
