//! Differential tests: for every EInsn op and payload class, the native x86-64 code run on
//! random register and memory states leaves exactly the state that the interpreted proof
//! sequence leaves (except registers declared dead after the site and the JIT scratch
//! register); the proof sequence itself is checked against a direct Rust statement of the
//! op's meaning. Classes are run with all CPU features and with none (other native paths,
//! or fallback where the op needs a feature), with the Linux register map and with random
//! register maps.
//!
//! `cargo test -p kops-einsn --release -- --ignored` runs the full version (>= 100,000
//! states per op).

mod harness;

use harness::*;
use kops_analysis::RegSet;
use kops_einsn::*;
use kops_isa::Insn;
use kops_kinsn::emit_x86_checked;
use kops_x86::{CpuFeatures, Reg};
use rand::prelude::*;
use rand::rngs::StdRng;

const BUF: usize = 2048;

#[derive(Default, Debug)]
struct Stats {
    classes: usize,
    /// States run natively and compared with the proof.
    states: usize,
    /// Classes where the emit fell back (a needed feature masked): only the proof runs.
    fallbacks: usize,
}

fn rand_val(rng: &mut StdRng) -> u64 {
    match rng.gen_range(0..8) {
        0 => 0,
        1 => u64::MAX,
        2 => 1u64 << rng.gen_range(0..64),
        3 => rng.gen::<u32>() as u64,
        4 => (rng.gen::<i32>() as i64) as u64,
        _ => rng.gen(),
    }
}

fn random_map(rng: &mut StdRng) -> ([Reg; 11], Reg) {
    let mut regs: Vec<Reg> = Reg::ALL.iter().copied().filter(|&r| r != Reg::Rsp).collect();
    regs.shuffle(rng);
    let mut m = [Reg::Rax; 11];
    m.copy_from_slice(&regs[..11]);
    (m, regs[11])
}

/// Does the emit need a feature missing from `f` (so fallback is expected)?
fn needs_missing<P: EInsn>(p: &P, f: CpuFeatures) -> bool {
    p.x86_features().iter().any(|n| !f.has(kops_x86::Feature::from_name(n).expect("known feature")))
}

/// Run `states` random states of one class with the given native code (None: fallback).
#[allow(clippy::too_many_arguments)]
fn run_class<P: EInsn>(
    p: &P,
    code: Option<&[u8]>,
    map: &[Reg; 11],
    scratch: Reg,
    dead: RegSet,
    states: usize,
    rng: &mut StdRng,
    page: &mut ExecPage,
) -> Result<usize, String> {
    let proof: Vec<Insn> = p.proof();
    if let Some(c) = code {
        page.install(c);
    }
    let writes = p.writes();
    for _ in 0..states {
        let mut mem: Vec<u8> = (0..BUF).map(|_| rng.gen()).collect();
        let base = mem.as_ptr() as u64;
        let mut regs = [0u64; 11];
        for r in regs.iter_mut() {
            *r = rand_val(rng);
        }
        p.place(&mut |lo, hi| rng.gen_range(lo..=hi), &mut regs, base, BUF);
        let mut im = Memory { base, bytes: mem.clone() };
        let mut ir = regs;
        eval(&proof, &mut ir, &mut im)?;
        p.meaning(&regs, &mem, base, &ir, &im.bytes).map_err(|e| format!("proof vs meaning: {e} (regs {regs:#x?})"))?;
        for r in 0..11u8 {
            if !writes.contains(&r) && ir[r as usize] != regs[r as usize] {
                return Err(format!("proof wrote r{r}, which the op does not declare"));
            }
        }
        let Some(_) = code else { continue };
        let mut st: X86State = [0; 18];
        for v in st.iter_mut().take(16) {
            *v = rng.gen();
        }
        for (i, &x) in map.iter().enumerate() {
            st[x.num() as usize] = regs[i];
        }
        let before = st;
        // SAFETY: every pointer register the op dereferences was set up to point into `mem`
        // (checked by the evaluator above, which ran the same accesses on a copy).
        unsafe { page.run(&mut st) };
        let ctx = || format!("payload {:#x}, map {map:?}, dead {dead:?}, regs {regs:#x?}", p.encode().unwrap());
        for (i, &x) in map.iter().enumerate() {
            if !dead.contains(i as u8) && st[x.num() as usize] != ir[i] {
                return Err(format!("r{i} ({}): native {:#x}, proof {:#x}; {}", x.name64(), st[x.num() as usize], ir[i], ctx()));
            }
        }
        for x in Reg::ALL {
            if x != Reg::Rsp && x != scratch && !map.contains(&x) && st[x.num() as usize] != before[x.num() as usize] {
                return Err(format!("native code clobbered {}; {}", x.name64(), ctx()));
            }
        }
        if st[16] != st[4] {
            return Err(format!("rsp not restored; {}", ctx()));
        }
        if st[17] & (1 << 10) != 0 {
            return Err(format!("direction flag left set; {}", ctx()));
        }
        if mem != im.bytes {
            let at = mem.iter().zip(&im.bytes).position(|(a, b)| a != b).unwrap();
            return Err(format!("memory differs at buffer offset {at}: native {:#x}, proof {:#x}; {}", mem[at], im.bytes[at], ctx()));
        }
        mem.clear();
    }
    Ok(states)
}

fn check_op<P: EInsn>(classes: &[P], states: usize, seed: u64) -> Stats {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut page = ExecPage::new(4096);
    let op = Op::<P>::new();
    let all = CpuFeatures::host();
    let mut st = Stats::default();
    for (n, p) in classes.iter().enumerate() {
        let raw = p.encode().unwrap();
        let features = if n % 2 == 0 { all } else { CpuFeatures::NONE };
        let (map, scratch) = if n % 4 < 2 { (LINUX_MAP, LINUX_SCRATCH) } else { random_map(&mut rng) };
        let dead = match rng.gen_range(0..3) {
            0 => RegSet::EMPTY,
            1 => RegSet(rng.gen::<u16>() & 0x3ff),
            _ => RegSet(0x3ff),
        };
        let code = emit_x86_checked(&op, raw, features, dead, &map, scratch).unwrap_or_else(|e| panic!("{p:?}: {e}"));
        // Emits are pure: a second call gives the same bytes.
        assert_eq!(emit_x86_checked(&op, raw, features, dead, &map, scratch).unwrap(), code);
        if code.is_none() {
            assert!(needs_missing(p, features), "{p:?}: unexpected fallback with {features}");
            st.fallbacks += 1;
        } else {
            assert!(!needs_missing(p, features), "{p:?}: native code without a needed feature");
        }
        let n = run_class(p, code.as_deref(), &map, scratch, dead, states, &mut rng, &mut page)
            .unwrap_or_else(|e| panic!("{} {p:?}: {e}", P::NAME));
        if code.is_some() {
            st.states += n;
        }
        st.classes += 1;
    }
    st
}

/// Run every op over its payload classes (`EInsn::classes`, what `kops prove` proves), with
/// at least `states` states per class and at least `min_states` native states per op.
fn run_all(states: usize, min_states: usize) {
    struct Run {
        states: usize,
        min_states: usize,
        rng: StdRng,
        report: Vec<String>,
    }
    impl OpVisitor for Run {
        fn visit<P: EInsn>(&mut self) {
            let c: Vec<P> = P::classes().into_iter().map(|c| c.payload).collect();
            // Half of the classes run with no CPU features: those fall back where the op
            // needs one.
            let share = if c.iter().any(|p| needs_missing(p, CpuFeatures::NONE)) { 2 } else { 1 };
            let per_class = self.states.max((self.min_states * share).div_ceil(c.len()));
            let s = check_op(&c, per_class, self.rng.gen());
            self.report.push(format!(
                "{:14} {:6} classes {:8} native states {:4} fallback classes",
                P::NAME,
                s.classes,
                s.states,
                s.fallbacks
            ));
            assert_eq!(s.classes, c.len());
            assert!(s.states >= self.min_states, "{}: only {} states", P::NAME, s.states);
        }
    }
    let mut run = Run { states, min_states, rng: StdRng::seed_from_u64(0x4b0b5), report: vec![] };
    visit_ops(&mut run);
    let report = run.report;
    for l in report {
        eprintln!("{l}");
    }
}

#[test]
fn native_matches_proof_quick() {
    run_all(1, 2_000);
}

/// At least 100,000 states per op (about 9 s in release, which is how CI runs the suite).
#[test]
fn native_matches_proof_full() {
    run_all(4, 100_000);
}

/// The harness must catch wrong emits: run each planted bug's bytes against the right
/// proof and require a mismatch.
#[test]
fn harness_detects_planted_bugs() {
    let mut rng = StdRng::seed_from_u64(7);
    let mut page = ExecPage::new(4096);
    let all = CpuFeatures::host();
    let none = RegSet::EMPTY;
    fn code<P: EInsn>(p: &P, f: CpuFeatures, dead: RegSet) -> Vec<u8> {
        emit_x86_checked(&Op::<P>::new(), p.encode().unwrap(), f, dead, &LINUX_MAP, LINUX_SCRATCH).unwrap().unwrap()
    }
    let expect_fail = |what: &str, r: Result<usize, String>| {
        let e = r.expect_err(what);
        eprintln!("{what}: caught: {}", e.lines().next().unwrap());
    };
    // rotate by k + 1.
    let p = Rotate64::new(0, 1, 1, 13, false).unwrap();
    let bad = code(&Rotate64::new(0, 1, 1, 14, false).unwrap(), all, none);
    expect_fail("rotate k+1", run_class(&p, Some(&bad), &LINUX_MAP, LINUX_SCRATCH, none, 50, &mut rng, &mut page));
    // The rotate temporary not reproduced although live (emitted as if dead).
    let bad = code(&p, all, RegSet::of(1));
    expect_fail("rotate tmp", run_class(&p, Some(&bad), &LINUX_MAP, LINUX_SCRATCH, none, 50, &mut rng, &mut page));
    // cmov with the condition inverted.
    let p = Select::new(0, 1, 2, 3, false, false).unwrap();
    let bad = code(&Select::new(0, 1, 3, 2, false, false).unwrap(), all, none);
    expect_fail("select inverted", run_class(&p, Some(&bad), &LINUX_MAP, LINUX_SCRATCH, none, 50, &mut rng, &mut page));
    // 64-bit test where the proof tests 32 bits.
    let p = Select::new(0, 1, 2, 3, true, false).unwrap();
    let bad = code(&Select::new(0, 1, 2, 3, false, false).unwrap(), all, none);
    expect_fail("select width", run_class(&p, Some(&bad), &LINUX_MAP, LINUX_SCRATCH, none, 200, &mut rng, &mut page));
    // extract mask off by one.
    let p = Extract::new(0, 1, 5, 7).unwrap();
    let bad = code(&Extract::new(0, 1, 5, 8).unwrap(), all, none);
    expect_fail("extract mask", run_class(&p, Some(&bad), &LINUX_MAP, LINUX_SCRATCH, none, 50, &mut rng, &mut page));
    // endian load with the bswap missing.
    let p = EndianLoad32::new(0, 1, 4).unwrap();
    let mut a = kops_x86::Asm::new();
    a.load(kops_x86::Size::S32, kops_x86::Reg::Rax, kops_x86::Mem::new(kops_x86::Reg::Rdi, 4));
    expect_fail("bswap missing", run_class(&p, Some(a.bytes()), &LINUX_MAP, LINUX_SCRATCH, none, 50, &mut rng, &mut page));
    // popcount with the temporaries left alone although live.
    let p = Popcount64::new(0, 1, 2, 3).unwrap();
    let bad = code(&p, all, RegSet::from_regs(&[2, 3]));
    expect_fail("popcount temps", run_class(&p, Some(&bad), &LINUX_MAP, LINUX_SCRATCH, none, 50, &mut rng, &mut page));
    // memcpy one chunk short, and with the tmp reload missing.
    let p = Memcpy::new(1, 0, 2, 0, 3, 8, 4, false).unwrap();
    let bad = code(&Memcpy::new(1, 0, 2, 0, 3, 8, 3, false).unwrap(), all, none);
    expect_fail("memcpy short", run_class(&p, Some(&bad), &LINUX_MAP, LINUX_SCRATCH, none, 50, &mut rng, &mut page));
    let bad = code(&p, all, RegSet::of(3));
    expect_fail("memcpy tmp", run_class(&p, Some(&bad), &LINUX_MAP, LINUX_SCRATCH, none, 50, &mut rng, &mut page));
    // Ascending native copy for a descending proof: differs only when regions overlap.
    let p = Memcpy::new(1, 0, 1, 1, 3, 1, 16, true).unwrap();
    let bad = code(&Memcpy::new(1, 0, 1, 1, 3, 1, 16, false).unwrap(), all, none);
    expect_fail("memcpy direction", run_class(&p, Some(&bad), &LINUX_MAP, LINUX_SCRATCH, none, 50, &mut rng, &mut page));
    // memset without restoring rcx (r4).
    let p = Memset::new(10, -64, 8, 4, 0).unwrap();
    // One chunk short.
    let bad = code(&Memset::new(10, -64, 8, 3, 0).unwrap(), all, none);
    expect_fail("memset short", run_class(&p, Some(&bad), &LINUX_MAP, LINUX_SCRATCH, none, 20, &mut rng, &mut page));
    let good = code(&p, all, none);
    // The code ends with pop rax; pop rcx; pop rdi: replace `pop rcx` by `add rsp, 8`.
    assert_eq!(&good[good.len() - 3..], &[0x58, 0x59, 0x5F]);
    let mut bad = good[..good.len() - 2].to_vec();
    bad.extend([0x48, 0x83, 0xC4, 0x08, 0x5F]);
    expect_fail("memset rcx", run_class(&p, Some(&bad), &LINUX_MAP, LINUX_SCRATCH, none, 20, &mut rng, &mut page));
}
