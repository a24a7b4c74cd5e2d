//! Shared test support: compiling C with clang-19, and differential runs of an original
//! and a rewritten (then lowered) object on the interpreter.
#![allow(dead_code)]

use kops_object::Object;
use kops_recognize::{rewrite_object, Mode, ObjectReport, Pass, Policy};
use kops_vm::ctx::ProgInput;
use kops_vm::Vm;
use std::path::PathBuf;
use std::process::Command;

/// Compile `src` with clang-19 (-O2 -g -target bpf -mcpu=v3) and load it. None (with the
/// reason printed) when clang-19 is not installed.
pub fn compile(name: &str, src: &str) -> Option<(Object, Vec<u8>)> {
    if Command::new("clang-19").arg("--version").output().is_err() {
        eprintln!("SKIP: clang-19 is not installed");
        return None;
    }
    let dir = std::env::temp_dir().join(format!("kops-recognize-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let c = dir.join(format!("{name}.c"));
    let o = dir.join(format!("{name}.o"));
    std::fs::write(&c, src).unwrap();
    let out = clang_bpf(&c, &o).output().expect("run clang-19");
    assert!(out.status.success(), "clang-19 failed: {}", String::from_utf8_lossy(&out.stderr));
    let bytes = std::fs::read(&o).unwrap();
    let obj = Object::parse(&bytes, o.to_str().unwrap()).expect("load compiled object");
    Some((obj, bytes))
}

pub const PRELUDE: &str = "typedef unsigned long long u64; typedef unsigned int u32; typedef unsigned short u16;\n\
typedef unsigned char u8; typedef long long s64; typedef int s32;\n\
#define SEC(x) __attribute__((section(x), used))\n";

pub fn policy(mode: Mode) -> Policy {
    Policy { mode, passes: Pass::ALL.to_vec() }
}

/// Sites of `pass` in program `prog` of a report.
pub fn count(rep: &ObjectReport, prog: &str, pass: Pass) -> usize {
    rep.programs
        .iter()
        .find(|p| p.name == prog)
        .unwrap_or_else(|| panic!("no program {prog}"))
        .sites
        .iter()
        .filter(|s| s.pass == pass.name())
        .count()
}

pub fn rewritten(rep: &ObjectReport, prog: &str) -> usize {
    rep.programs.iter().find(|p| p.name == prog).unwrap().sites.iter().filter(|s| s.rewrite).count()
}

pub use kops_rng::Rng;

/// Inputs that exercise corner values as well as random ones.
pub fn inputs(n: usize, len: usize, seed: u64) -> Vec<Vec<u8>> {
    let mut rng = Rng::new(seed);
    let mut v = vec![vec![0u8; len], vec![0xffu8; len]];
    while v.len() < n {
        let mut b = rng.bytes(len);
        // Sparse and dense bit patterns for popcount/select corner cases.
        match v.len() % 6 {
            0 => b.iter_mut().for_each(|x| *x &= 0x11),
            1 => b.iter_mut().for_each(|x| *x |= 0xee),
            // 64-bit words whose low half is zero (JMP32 vs JMP conditions differ).
            2 => b.iter_mut().enumerate().for_each(|(i, x)| if i % 8 < 4 { *x = 0 }),
            // ... and whose high half is zero.
            3 => b.iter_mut().enumerate().for_each(|(i, x)| if i % 8 >= 4 { *x = 0 }),
            _ => {}
        }
        v.push(b);
    }
    v
}

/// Rewrite `obj` with `policy`, lower every program and run original and lowered on the
/// interpreter over `inputs`, comparing r0, output data and context out. Returns the report
/// and the rewritten object.
pub fn diff_check(obj: &Object, policy: &Policy, inputs: &[Vec<u8>]) -> (ObjectReport, Object) {
    let (new, rep, _) = rewrite_object(obj, policy).expect("rewrite");
    let registry = kops_einsn::registry();
    let mut lowered = new.clone();
    for p in lowered.programs.iter_mut() {
        let (lp, _) = kops_kinsn::lower::lower_program(p, &registry).expect("lower");
        *p = lp;
    }
    let va = Vm::new(obj).expect("vm original");
    let vb = Vm::new(&lowered).expect("vm rewritten");
    for p in &obj.programs {
        let ia = va.load(&p.name).expect("load original");
        let ib = vb.load(&p.name).unwrap_or_else(|e| panic!("load rewritten {}: {e}", p.name));
        for (k, input) in inputs.iter().enumerate() {
            let inp = ProgInput::packet(input);
            let ra = va.run(ia, &inp);
            let rb = vb.run(ib, &inp);
            match (&ra, &rb) {
                (Ok(a), Ok(b)) => {
                    // Results also land in maps (the bundled programs write .bss globals).
                    for (ma, mb) in va.maps().zip(vb.maps()) {
                        assert_eq!(ma.dump(), mb.dump(), "{}: map contents differ after input {k}", p.name);
                    }
                    assert_eq!(a.r0, b.r0, "{}: r0 differs on input {k}", p.name);
                    assert_eq!(a.data_out, b.data_out, "{}: data out differs on input {k}", p.name);
                    assert_eq!(a.ctx_out, b.ctx_out, "{}: ctx out differs on input {k}", p.name);
                }
                (Err(a), Err(b)) => assert_eq!(a.to_string(), b.to_string(), "{}: errors differ", p.name),
                _ => panic!("{}: one run failed: {ra:?} vs {rb:?}", p.name),
            }
        }
    }
    (rep, new)
}

/// Run the rewritten object (sites kept) on the Kops JIT and the original on the
/// interpreter over `inputs`; results, outputs and maps must agree. Only for programs the
/// kernel verifier accepts (native code has no run-time checks).
pub fn diff_kops_jit(obj: &Object, new: &Object, inputs: &[Vec<u8>]) -> Result<usize, String> {
    let engine = kops_vm::jit_engine::KopsEngine::new(kops_einsn::registry()).map_err(|e| e.to_string())?;
    let va = Vm::new(obj).map_err(|e| e.to_string())?;
    // The gate: the kernel verifies each rewritten program (lowered) before it runs.
    let gate = Box::new(kops_kernel::KernelVerifier::with_cache_dir(None));
    let vb = Vm::with_verifier(Some(new), Box::new(engine), gate).map_err(|e| e.to_string())?;
    let mut runs = 0;
    for p in &obj.programs {
        let ia = va.load(&p.name).map_err(|e| e.to_string())?;
        let ib = vb.load(&p.name).map_err(|e| format!("Kops JIT load {}: {e}", p.name))?;
        for (k, input) in inputs.iter().enumerate() {
            let inp = ProgInput::packet(input);
            // An input the context cannot take (a 0-byte skb packet) is refused by both
            // runtimes alike, before any code runs: not a run.
            let a = match va.run(ia, &inp) {
                Err(kops_vm::VmError::Input(m)) => {
                    let b = vb.run(ib, &inp);
                    assert!(matches!(b, Err(kops_vm::VmError::Input(_))), "{}: input {k}: interpreter refused it ({m}), Kops JIT gave {b:?}", p.name);
                    continue;
                }
                r => r.map_err(|e| e.to_string())?,
            };
            let b = vb.run(ib, &inp).map_err(|e| e.to_string())?;
            assert_eq!(a.r0, b.r0, "{}: r0 differs on input {k} (Kops JIT)", p.name);
            assert_eq!(a.data_out, b.data_out, "{}: data out differs on input {k} (Kops JIT)", p.name);
            for (ma, mb) in va.maps().zip(vb.maps()) {
                assert_eq!(ma.dump(), mb.dump(), "{}: maps differ after input {k} (Kops JIT)", p.name);
            }
            runs += 1;
        }
    }
    Ok(runs)
}

pub fn bundled_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../bpf/out")
}

// BPF fixtures shared with the object crate's tests (the same clang flags, the same libxdp cache).
#[path = "../../../object/tests/common/fixtures.rs"]
mod fixtures;
#[allow(unused_imports)]
pub use fixtures::{clang_bpf, libxdp_dir};

/// Objects in `dir` whose file name ends with `suffix`, sorted.
pub fn objects_in(dir: &std::path::Path, suffix: &str) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|d| d.filter_map(|e| e.ok()).map(|e| e.path()).filter(|p| p.to_string_lossy().ends_with(suffix)).collect())
        .unwrap_or_default();
    v.sort();
    v
}
