//! The decoder's table against the running kernel's verifier.
//!
//! For every form of every opcode we load small programs through bpf(BPF_PROG_LOAD) and read
//! the verifier log: the kernel's structural checks (unknown opcode, reserved fields, invalid
//! registers, ld_imm64 pairing, atomic opcodes) must accept what we accept, and reject the
//! near misses we reject (each form with one field set just outside its rule). Semantic
//! rejections (a scalar dereferenced, an unknown helper id) come after the structural checks,
//! so they count as "structurally accepted". Forms that the kernel does not load by design
//! (callx, the Kops kinsn sidecar and call) are listed and must be rejected by it.
//! Without bpf(2) privileges the test prints why and passes without checking.

use kops_isa::decode::{classify, forms, Kind, Rule};
use kops_isa::{op, Insn};

const BPF_PROG_LOAD: libc::c_long = 5;
const SOCKET_FILTER: u32 = 1;

/// Load `insns` as a socket filter; Ok(()) when loaded, Err(log) when refused.
fn load(insns: &[Insn]) -> Result<(), String> {
    let bytes = kops_isa::to_bytes(insns);
    let license = b"GPL\0";
    let mut log = vec![0u8; 1 << 16];
    // union bpf_attr, BPF_PROG_LOAD prefix: prog_type, insn_cnt, insns, license,
    // log_level, log_size, log_buf.
    let mut attr = [0u8; 128];
    attr[0..4].copy_from_slice(&SOCKET_FILTER.to_ne_bytes());
    attr[4..8].copy_from_slice(&(insns.len() as u32).to_ne_bytes());
    attr[8..16].copy_from_slice(&(bytes.as_ptr() as u64).to_ne_bytes());
    attr[16..24].copy_from_slice(&(license.as_ptr() as u64).to_ne_bytes());
    attr[24..28].copy_from_slice(&1u32.to_ne_bytes());
    attr[28..32].copy_from_slice(&(log.len() as u32).to_ne_bytes());
    attr[32..40].copy_from_slice(&(log.as_mut_ptr() as u64).to_ne_bytes());
    // SAFETY: attr is a valid bpf_attr prefix whose pointers outlive the call.
    let fd = unsafe { libc::syscall(libc::SYS_bpf, BPF_PROG_LOAD, attr.as_mut_ptr(), attr.len() as u32) };
    if fd >= 0 {
        // SAFETY: closing the fd we just got.
        unsafe { libc::close(fd as i32) };
        return Ok(());
    }
    let errno = std::io::Error::last_os_error();
    let end = log.iter().position(|&b| b == 0).unwrap_or(log.len());
    Err(format!("{errno}: {}", String::from_utf8_lossy(&log[..end])))
}

/// Does the verifier log say the instruction's encoding is invalid?
fn structural_reject(log: &str) -> bool {
    const MARKERS: &[&str] = &[
        "unknown opcode",
        "uses reserved fields",
        "invalid bpf_ld_imm64",
        "unrecognized bpf_ld_imm64",
        "invalid BPF_LD_IMM",
        "invalid BPF_LD mode",
        "invalid atomic",
        "uses invalid atomic opcode",
        "invalid may_goto",
        "invalid BPF_JMP/JMP32 opcode",
        "invalid BPF_ALU opcode",
        "addr_space_cast insn can only convert",
        "unknown insn class",
        "BPF_ATOMIC uses",
    ];
    // "R11 is invalid": a register number out of range.
    let bad_reg = log.lines().any(|l| {
        l.strip_prefix('R')
            .and_then(|r| r.strip_suffix(" is invalid"))
            .is_some_and(|n| n.parse::<u8>().is_ok())
    });
    bad_reg || MARKERS.iter().any(|m| log.contains(m))
}

/// The tested slot(s) after register set-up (r6 = context for legacy packet loads, the
/// rest 0), then `r0 = 0; exit`, then a subprogram `r0 = 0; exit` for calls and function
/// references to target. Jump targets point at the next instruction, call targets at the
/// subprogram, so that only the encoding is at stake. A tested `exit` ends the program.
fn program(test: &[Insn]) -> Vec<Insn> {
    let mut p = vec![Insn::mov64_reg(6, 1)];
    p.extend((0..10).filter(|&r| r != 6).map(|r| Insn::mov64_imm(r, 0)));
    p.extend_from_slice(test);
    if test.first().is_some_and(|i| i.is_exit()) {
        return p;
    }
    p.extend([Insn::mov64_imm(0, 0), Insn::exit()]);
    let calls = test.first().is_some_and(|i| i.is_pseudo_call() || (i.is_ld_imm64() && i.src == op::PSEUDO_FUNC));
    if calls {
        p.extend([Insn::mov64_imm(0, 0), Insn::exit()]);
    }
    p
}

/// Point a call or function reference in `test` at the subprogram `program` appends.
fn aim(mut test: Vec<Insn>) -> Vec<Insn> {
    let i = &mut test[0];
    if i.is_pseudo_call() {
        i.imm = 2;
    } else if i.is_ld_imm64() && i.src == op::PSEUDO_FUNC {
        i.imm = 3;
    }
    test
}

fn pick(rule: Rule) -> i64 {
    match rule {
        Rule::Zero => 0,
        Rule::Reg => 1,
        Rule::Any => 0,
        Rule::OneOf(s) => s[0] as i64,
    }
}

/// Values just outside a rule.
fn outside(rule: Rule, field: usize) -> Vec<i64> {
    match rule {
        Rule::Zero => vec![1],
        Rule::Reg => vec![11, 15],
        Rule::Any => vec![],
        Rule::OneOf(s) => {
            let v: Vec<i64> = match field {
                0 | 1 => (0..16).collect(),
                _ => vec![0, 1, 2, 7, 8, 16, 24, 32, 33, 48, 64, 0x10, 0x11, 0x20, 0xe0, 0xf0, 0x100, 0x110, 0x10000, 0x10001],
            };
            v.into_iter().filter(|x| !s.iter().any(|&y| y as i64 == *x)).collect()
        }
    }
}

fn slots(code: u8, f: [i64; 4]) -> Vec<Insn> {
    let i = Insn::new(code, f[0] as u8, f[1] as u8, f[2] as i16, f[3] as i32);
    if i.is_ld_imm64() {
        vec![i, Insn::new(0, 0, 0, 0, 0)]
    } else {
        vec![i]
    }
}

#[test]
fn decoder_agrees_with_kernel_verifier() {
    if let Err(e) = load(&program(&[])) {
        // Only a missing privilege is a reason to skip; a refused template is a test bug.
        assert!(e.starts_with("Operation not permitted") || e.starts_with("Permission denied"), "template refused: {e}");
        eprintln!("SKIPPED: bpf(2) not permitted: {e}");
        return;
    }
    // Forms the kernel does not load by itself (Kops transport, callx) and forms newer than
    // the running kernel may know (load-acquire/store-release: Linux 6.15).
    let not_kernel = |k: Kind| matches!(k, Kind::Callx | Kind::KinsnSidecar | Kind::CallKinsn);
    let mut checked = 0;
    let mut inconclusive = 0;
    let mut bad = Vec::new();
    for code in 0..=255u8 {
        let fs = forms(code);
        if fs.is_empty() {
            // Unknown opcodes: the kernel must refuse them too.
            let p = program(&[Insn::new(code, 0, 0, 0, 0)]);
            if code != 0 {
                match load(&p) {
                    Ok(()) => bad.push(format!("{code:#04x}: kernel loads an opcode we call unknown")),
                    Err(log) if !structural_reject(&log) => {
                        bad.push(format!("{code:#04x}: kernel refuses an unknown opcode for another reason: {log}"))
                    }
                    Err(_) => {}
                }
                checked += 1;
            }
            continue;
        }
        for form in fs {
            let rules = [form.dst, form.src, form.off, form.imm];
            let base = rules.map(pick);
            let good = aim(slots(code, base));
            assert_eq!(classify(&good[0]), Ok(form.kind));
            let res = load(&program(&good));
            checked += 1;
            match (&res, not_kernel(form.kind)) {
                (Err(log), false) if structural_reject(log) => {
                    bad.push(format!("{code:#04x} {:?} {:?}: we accept, kernel refuses: {log}", form.kind, good[0]))
                }
                (Err(log), true) if !structural_reject(log) && !log.contains("invalid func") => bad.push(format!(
                    "{code:#04x} {:?}: not a kernel form, but refused for another reason: {log}",
                    form.kind
                )),
                (Ok(()), true) => bad.push(format!("{code:#04x} {:?}: not a kernel form, but loaded", form.kind)),
                _ => {}
            }
            // Unconstrained fields take other values too (targets stay put).
            let targets = |fi: usize| match form.kind {
                Kind::Ja | Kind::CondJump | Kind::MayGoto => fi == 2,
                Kind::Gotol | Kind::CallPseudo => fi == 3,
                Kind::LdImm64 => fi == 3 && base[1] == op::PSEUDO_FUNC as i64,
                _ => false,
            };
            for (fi, rule) in rules.iter().enumerate() {
                if *rule != Rule::Any || targets(fi) {
                    continue;
                }
                for v in if fi < 2 { vec![5, 15] } else { vec![-1, 0x7f] } {
                    let mut f = base;
                    f[fi] = v;
                    let p = aim(slots(code, f));
                    checked += 1;
                    if let Err(log) = load(&program(&p)) {
                        if structural_reject(&log) && !not_kernel(form.kind) {
                            bad.push(format!("{code:#04x} {:?} {:?}: we accept, kernel refuses: {log}", form.kind, p[0]));
                        }
                    }
                }
            }
            // Near misses: one field outside the rule, where no other form of this opcode
            // takes the value.
            for (fi, rule) in rules.iter().enumerate() {
                for v in outside(*rule, fi) {
                    let mut f = base;
                    f[fi] = v;
                    let miss = aim(slots(code, f));
                    if classify(&miss[0]).is_ok() {
                        continue;
                    }
                    checked += 1;
                    match load(&program(&miss)) {
                        Err(log) if structural_reject(&log) => {}
                        // Without an arena map the kernel refuses every addr_space_cast before
                        // looking at its registers: inconclusive.
                        Err(log) if log.contains("that has an associated arena") => inconclusive += 1,
                        other => bad.push(format!(
                            "{code:#04x} {:?} {:?}: we refuse, kernel {}",
                            form.kind,
                            miss[0],
                            match other {
                                Ok(()) => "loads it".to_string(),
                                Err(log) => format!("refuses only semantically: {}", log.lines().rev().take(2).collect::<Vec<_>>().join(" | ")),
                            }
                        )),
                    }
                }
            }
        }
    }
    // ld_imm64 pairing.
    for (what, hi) in [("code", Insn::new(0x18, 0, 0, 0, 0)), ("dst", Insn::new(0, 1, 0, 0, 0)), ("off", Insn::new(0, 0, 0, 1, 0))] {
        let p = program(&[Insn::new(0x18, 1, 0, 0, 0), hi]);
        assert!(kops_isa::validate(&p).is_err());
        match load(&p) {
            Err(log) if structural_reject(&log) => {}
            other => bad.push(format!("ld_imm64 with bad second slot ({what}): kernel {other:?}")),
        }
        checked += 1;
    }
    let map_hi = program(&[Insn::new(0x18, 1, op::PSEUDO_MAP_FD, 0, 0), Insn::new(0, 0, 0, 0, 1)]);
    assert!(kops_isa::validate(&map_hi).is_err());
    eprintln!("checked {checked} encodings against the kernel ({inconclusive} inconclusive)");
    assert!(bad.is_empty(), "{} disagreements:\n{}", bad.len(), bad.join("\n"));
}
