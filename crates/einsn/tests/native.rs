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

/// The op-specific parts of a differential check.
trait Oracle: EInsn {
    /// Make pointer registers point into the test buffer at `base`.
    fn setup(&self, _rng: &mut StdRng, _r: &mut [u64; 11], _base: u64) {}
    /// Registers the proof may write.
    fn writes(&self) -> Vec<u8>;
    /// The op's meaning, stated directly: check the interpreted result.
    fn spec(&self, before: &[u64; 11], mb: &[u8], base: u64, after: &[u64; 11], ma: &[u8]) -> Result<(), String>;
    /// Does the emit need a feature missing from `f` (so fallback is expected)?
    fn needs_missing(&self, _f: CpuFeatures) -> bool {
        false
    }
}

fn eq(what: &str, got: u64, want: u64) -> Result<(), String> {
    if got != want {
        return Err(format!("{what}: proof gives {got:#x}, meaning says {want:#x}"));
    }
    Ok(())
}

impl<const W: u8> Oracle for Rotate<W> {
    fn writes(&self) -> Vec<u8> {
        vec![self.dst, self.tmp]
    }
    fn spec(&self, b: &[u64; 11], _: &[u8], _: u64, a: &[u64; 11], _: &[u8]) -> Result<(), String> {
        let s = b[self.src as usize];
        let k = self.k as u32;
        let (rot, l, r) = if W == 64 {
            (s.rotate_left(k), s << k, s >> (64 - k))
        } else {
            let s = s as u32;
            (s.rotate_left(k) as u64, (s << k) as u64, (s >> (32 - k)) as u64)
        };
        eq("dst", a[self.dst as usize], rot)?;
        eq("tmp", a[self.tmp as usize], if self.tmp_lsh { l } else { r })
    }
}

impl Oracle for Select {
    fn writes(&self) -> Vec<u8> {
        vec![self.dst]
    }
    fn spec(&self, b: &[u64; 11], _: &[u8], _: u64, a: &[u64; 11], _: &[u8]) -> Result<(), String> {
        let c = b[self.cond as usize];
        let t = if self.cond32 { c as u32 != 0 } else { c != 0 };
        let v = if t { b[self.a as usize] } else { b[self.b as usize] };
        eq("dst", a[self.dst as usize], if self.mov32 { v as u32 as u64 } else { v })
    }
}

impl Oracle for SelectCmp {
    fn writes(&self) -> Vec<u8> {
        vec![self.dst]
    }
    fn spec(&self, b: &[u64; 11], _: &[u8], _: u64, a: &[u64; 11], _: &[u8]) -> Result<(), String> {
        use kops_isa::op;
        let (l, r) = (b[self.lhs as usize], b[self.rhs as usize]);
        let (l, r) = if self.jmp32 { (l as u32 as u64, r as u32 as u64) } else { (l, r) };
        // Signed views at the compared width.
        let (sl, sr) = if self.jmp32 { (l as u32 as i32 as i64, r as u32 as i32 as i64) } else { (l as i64, r as i64) };
        let taken = match self.cmp {
            op::JEQ => l == r,
            op::JNE => l != r,
            op::JGT => l > r,
            op::JGE => l >= r,
            op::JLT => l < r,
            op::JLE => l <= r,
            op::JSGT => sl > sr,
            op::JSGE => sl >= sr,
            op::JSLT => sl < sr,
            op::JSLE => sl <= sr,
            op::JSET => l & r != 0,
            c => return Err(format!("unknown cmp {c:#x}")),
        };
        let s = b[self.src as usize];
        let want = if taken { b[self.dst as usize] } else if self.mov32 { s as u32 as u64 } else { s };
        eq("dst", a[self.dst as usize], want)
    }
}

impl Oracle for Extract {
    fn writes(&self) -> Vec<u8> {
        vec![self.dst]
    }
    fn spec(&self, b: &[u64; 11], _: &[u8], _: u64, a: &[u64; 11], _: &[u8]) -> Result<(), String> {
        eq("dst", a[self.dst as usize], (b[self.src as usize] >> self.start) & ((1u64 << self.len) - 1))
    }
}

impl<const B: u8> Oracle for EndianLoad<B> {
    fn setup(&self, rng: &mut StdRng, r: &mut [u64; 11], base: u64) {
        let pos = rng.gen_range(0..=(BUF - B as usize)) as u64;
        r[self.base as usize] = base.wrapping_add(pos).wrapping_sub(self.off as i64 as u64);
    }
    fn writes(&self) -> Vec<u8> {
        vec![self.dst]
    }
    fn spec(&self, b: &[u64; 11], mb: &[u8], base: u64, a: &[u64; 11], _: &[u8]) -> Result<(), String> {
        let o = (b[self.base as usize].wrapping_add(self.off as i64 as u64) - base) as usize;
        let mut x = [0u8; 8];
        x[..B as usize].copy_from_slice(&mb[o..o + B as usize]);
        let v = u64::from_le_bytes(x);
        let want = match B {
            2 => (v as u16).swap_bytes() as u64,
            4 => (v as u32).swap_bytes() as u64,
            _ => v.swap_bytes(),
        };
        eq("dst", a[self.dst as usize], want)
    }
    fn needs_missing(&self, _: CpuFeatures) -> bool {
        false
    }
}

impl Oracle for Popcount64 {
    fn writes(&self) -> Vec<u8> {
        vec![self.dst, self.t1, self.t2]
    }
    fn spec(&self, b: &[u64; 11], _: &[u8], _: u64, a: &[u64; 11], _: &[u8]) -> Result<(), String> {
        eq("dst", a[self.dst as usize], b[self.src as usize].count_ones() as u64)?;
        eq("t1", a[self.t1 as usize], 0x0f0f_0f0f_0f0f_0f0f)?;
        eq("t2", a[self.t2 as usize], 0x0101_0101_0101_0101)
    }
    fn needs_missing(&self, f: CpuFeatures) -> bool {
        !f.has(kops_x86::Feature::Popcnt)
    }
}

impl Oracle for Popcount32 {
    fn writes(&self) -> Vec<u8> {
        vec![self.dst, self.tmp]
    }
    fn spec(&self, b: &[u64; 11], _: &[u8], _: u64, a: &[u64; 11], _: &[u8]) -> Result<(), String> {
        eq("dst", a[self.dst as usize], (b[self.src as usize] as u32).count_ones() as u64)?;
        eq("tmp", a[self.tmp as usize], 0x0101_0101)
    }
    fn needs_missing(&self, f: CpuFeatures) -> bool {
        !f.has(kops_x86::Feature::Popcnt)
    }
}

impl Oracle for Memcpy {
    fn setup(&self, rng: &mut StdRng, r: &mut [u64; 11], base: u64) {
        let len = self.bytes() as i64;
        let room = BUF as i64 - len;
        let (doff, soff) = (self.dst_off as i64, self.src_off as i64);
        if self.dst == self.src {
            let lo = (-doff).max(-soff);
            let hi = (room - doff).min(room - soff);
            let x = rng.gen_range(lo..=hi);
            r[self.dst as usize] = base.wrapping_add(x as u64);
        } else {
            let pd = rng.gen_range(0..=room);
            // Overlapping regions half of the time.
            let ps = if rng.gen_bool(0.5) { (pd + rng.gen_range(-len - 2..=len + 2)).clamp(0, room) } else { rng.gen_range(0..=room) };
            r[self.dst as usize] = base.wrapping_add((pd - doff) as u64);
            r[self.src as usize] = base.wrapping_add((ps - soff) as u64);
        }
    }
    fn writes(&self) -> Vec<u8> {
        vec![self.tmp]
    }
    fn spec(&self, b: &[u64; 11], mb: &[u8], base: u64, _: &[u64; 11], ma: &[u8]) -> Result<(), String> {
        let len = self.bytes();
        let d = (b[self.dst as usize].wrapping_add(self.dst_off as i64 as u64) - base) as usize;
        let s = (b[self.src as usize].wrapping_add(self.src_off as i64 as u64) - base) as usize;
        let mut want = mb.to_vec();
        if d + len <= s || s + len <= d {
            want[d..d + len].copy_from_slice(&mb[s..s + len]);
            if want != ma {
                return Err("memcpy of disjoint regions is not a plain copy".into());
            }
        } else {
            // Overlap: only bytes outside the destination are known to stay.
            if ma[..d] != mb[..d] || ma[d + len..] != mb[d + len..] {
                return Err("memcpy wrote outside its destination".into());
            }
        }
        Ok(())
    }
}

impl Oracle for Memset {
    fn setup(&self, rng: &mut StdRng, r: &mut [u64; 11], base: u64) {
        let pos = rng.gen_range(0..=(BUF - self.bytes())) as u64;
        r[self.base as usize] = base.wrapping_add(pos).wrapping_sub(self.off as i64 as u64);
    }
    fn writes(&self) -> Vec<u8> {
        vec![]
    }
    fn spec(&self, b: &[u64; 11], mb: &[u8], base: u64, _: &[u64; 11], ma: &[u8]) -> Result<(), String> {
        let d = (b[self.base as usize].wrapping_add(self.off as i64 as u64) - base) as usize;
        let mut want = mb.to_vec();
        want[d..d + self.bytes()].fill(self.value);
        if want != ma {
            return Err("memset result differs from a plain fill".into());
        }
        Ok(())
    }
}

impl Oracle for Prefetch {
    fn setup(&self, rng: &mut StdRng, r: &mut [u64; 11], base: u64) {
        if rng.gen_bool(0.5) {
            r[self.base as usize] = base.wrapping_add(rng.gen_range(0..BUF as u64));
        }
    }
    fn writes(&self) -> Vec<u8> {
        vec![]
    }
    fn spec(&self, _: &[u64; 11], mb: &[u8], _: u64, _: &[u64; 11], ma: &[u8]) -> Result<(), String> {
        (mb == ma).then_some(()).ok_or_else(|| "prefetch changed memory".into())
    }
}

impl Oracle for SpecBarrier {
    fn writes(&self) -> Vec<u8> {
        vec![]
    }
    fn spec(&self, _: &[u64; 11], mb: &[u8], _: u64, _: &[u64; 11], ma: &[u8]) -> Result<(), String> {
        (mb == ma).then_some(()).ok_or_else(|| "barrier changed memory".into())
    }
}

/// Run `states` random states of one class with the given native code (None: fallback).
#[allow(clippy::too_many_arguments)]
fn run_class<P: Oracle>(
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
        p.setup(rng, &mut regs, base);
        let mut im = Memory { base, bytes: mem.clone() };
        let mut ir = regs;
        eval(&proof, &mut ir, &mut im)?;
        p.spec(&regs, &mem, base, &ir, &im.bytes).map_err(|e| format!("proof vs meaning: {e} (regs {regs:#x?})"))?;
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

fn check_op<P: Oracle>(classes: &[P], states: usize, seed: u64) -> Stats {
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
            assert!(p.needs_missing(features), "{p:?}: unexpected fallback with {features}");
            st.fallbacks += 1;
        } else {
            assert!(!p.needs_missing(features), "{p:?}: native code without a needed feature");
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
    let mut rng = StdRng::seed_from_u64(0x4b0b5);
    let mut report = vec![];
    fn one<P: Oracle>(states: usize, min_states: usize, seed: u64, report: &mut Vec<String>) {
        let c: Vec<P> = P::classes().into_iter().map(|c| c.payload).collect();
        // Half of the classes run with no CPU features: those fall back where the op needs one.
        let share = if c.iter().any(|p| p.needs_missing(CpuFeatures::NONE)) { 2 } else { 1 };
        let per_class = states.max((min_states * share).div_ceil(c.len()));
        let s = check_op(&c, per_class, seed);
        report.push(format!("{:14} {:6} classes {:8} native states {:4} fallback classes", P::NAME, s.classes, s.states, s.fallbacks));
        assert_eq!(s.classes, c.len());
        assert!(s.states >= min_states, "{}: only {} states", P::NAME, s.states);
    }
    macro_rules! ops {
        ($($ty:ty),*) => { $(one::<$ty>(states, min_states, rng.gen(), &mut report);)* };
    }
    ops!(Rotate64, Rotate32, Select, Extract, EndianLoad16, EndianLoad32, EndianLoad64, Popcount64, Popcount32, Memcpy, Memset, Prefetch, SpecBarrier, SelectCmp);
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
