//! The JIT engine: programs compiled to x86-64 by [`kops_jit`] (the Linux-faithful
//! baseline JIT) and run natively, with the same maps, helpers and contexts as the
//! interpreter (pointers are host addresses in every engine, see the crate doc).
//!
//! - Helpers are called through per-helper trampolines in the image that align the stack
//!   for SysV code ([`kops_jit::CallMode::Trampoline`]); the call site itself is the
//!   kernel's single `call rel32`.
//! - Tail calls use the kernel's inline sequence, except that the target is found by
//!   [`tail_lookup`] (our program arrays are not `struct bpf_array`).
//! - Conformance mode: helper 5 "unwind" ends the program from any depth when it returns
//!   0; `callx` goes through a helper table built into the image.
//!
//! Native code has no instruction budget and no per-access checks: run only programs that
//! the kernel verifier accepts (or that are known safe, like the conformance suite).

use std::cell::RefCell;

use kops_isa::Insn;
use kops_jit::{CallMode, JitOptions, JitProgram, Resolver, TailCallMode};

use crate::helpers::{HelperTable, TAIL_CALL};
use crate::{Compiled, Engine, ProgImage, RunEnv, VmError};

/// Largest helper id given a callx table slot.
const CALLX_HELPERS: u32 = 256;

/// The JIT engine (`--runtime jit`).
pub struct JitEngine {
    options: JitOptions,
}

impl JitEngine {
    /// Features detected from the CPU, masked by `KOPS_DISABLE_FEATURES`.
    pub fn new() -> Result<JitEngine, VmError> {
        let options = JitOptions::runtime().map_err(|e| VmError::Setup(e.to_string()))?;
        Ok(JitEngine { options })
    }
    /// With explicit JIT options (helper/tail-call settings are still set per program).
    pub fn with_options(options: JitOptions) -> JitEngine {
        JitEngine { options }
    }
    pub fn options(&self) -> &JitOptions {
        &self.options
    }
}

struct Helpers<'a>(&'a HelperTable);

impl Resolver for Helpers<'_> {
    fn helper(&self, id: i32) -> Option<u64> {
        u32::try_from(id).ok().and_then(|id| self.0.address(id))
    }
    fn ld_imm64(&self, pc: usize, lo: &Insn, _hi: &Insn) -> Result<u64, String> {
        // The runtime resolves map references before engines see the program.
        Err(format!("unresolved ld_imm64 with src_reg {} at {pc}", lo.src))
    }
}

thread_local! {
    /// Program arrays of the run in progress: (map address, slot table, max_entries).
    static TAIL_MAPS: RefCell<Vec<(u64, u64, u64)>> = const { RefCell::new(Vec::new()) };
}

/// Entry address of slot `index` of program array `map` for the run in progress, 0 when
/// the map is not a program array of this run, the index is out of range or the slot is
/// empty (the tail call then falls through, as in the kernel).
pub extern "C" fn tail_lookup(map: u64, index: u64) -> u64 {
    TAIL_MAPS.with(|t| {
        for &(m, table, max) in t.borrow().iter() {
            if m == map {
                if index >= max || table == 0 {
                    return 0;
                }
                // SAFETY: `table` is the map's slot array of `max` u64 entries, alive for
                // the run (the Vm owns the map).
                return unsafe { *((table + index * 8) as *const u64) };
            }
        }
        0
    })
}

impl Engine for JitEngine {
    fn name(&self) -> &'static str {
        "jit"
    }

    fn compile(&self, prog: &ProgImage<'_>) -> Result<Box<dyn Compiled>, VmError> {
        let mut o = self.options.clone();
        o.call_mode = CallMode::Trampoline;
        o.div_fixups = true;
        o.tail_call = Some((TAIL_CALL as i32, TailCallMode::Lookup(tail_lookup as extern "C" fn(u64, u64) -> u64 as usize as u64)));
        if prog.conformance {
            o.unwind_helper = Some(crate::helpers::UNWIND as i32);
            o.callx_helpers = Some(CALLX_HELPERS);
        }
        let jp = JitProgram::new(prog.insns, &o, &Helpers(prog.helpers)).map_err(|e| match e {
            kops_jit::JitError::Insn { pc, msg } => VmError::Load { prog: prog.name.to_string(), pc, msg },
            kops_jit::JitError::Unsupported { pc, what } => {
                VmError::Load { prog: prog.name.to_string(), pc, msg: format!("JIT: unsupported {what}") }
            }
            e => VmError::Load { prog: prog.name.to_string(), pc: 0, msg: format!("JIT: {e}") },
        })?;
        Ok(Box::new(JitCompiled { prog: jp }))
    }
}

struct JitCompiled {
    prog: JitProgram,
}

impl JitCompiled {
    /// The native image (for dumps).
    #[allow(dead_code)]
    fn code(&self) -> &[u8] {
        self.prog.code()
    }
}

impl Compiled for JitCompiled {
    fn run(&self, r1: u64, r2: u64, env: &RunEnv<'_>) -> Result<u64, VmError> {
        let tables: Vec<(u64, u64, u64)> = env
            .vm()
            .maps()
            .filter(|m| m.prog_array_table() != 0)
            .map(|m| (m.addr(), m.prog_array_table(), m.def.max_entries as u64))
            .collect();
        TAIL_MAPS.with(|t| *t.borrow_mut() = tables);
        // SAFETY: the program was loaded by the Vm (relocated, ctx accesses rewritten) and is
        // trusted to stay within its memory; see the module doc.
        let r0 = unsafe { self.prog.call(r1, r2) };
        TAIL_MAPS.with(|t| t.borrow_mut().clear());
        Ok(r0)
    }
    fn entry_address(&self) -> u64 {
        self.prog.entry()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kops_isa::conformance::TestFile;
    use std::path::PathBuf;

    fn suite_dir() -> PathBuf {
        if let Ok(d) = std::env::var("KOPS_CONFORMANCE_DIR") {
            return PathBuf::from(d);
        }
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/conformance/tests")
    }

    /// Every file of the suite on the JIT; expected r0 from the suite's files.
    fn run_suite(options: JitOptions) -> (usize, Vec<String>) {
        let dir = suite_dir();
        let mut files: Vec<_> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("conformance suite at {}: {e}", dir.display()))
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|x| x == "data"))
            .collect();
        files.sort();
        let mut failures = Vec::new();
        for f in &files {
            let name = f.file_name().unwrap().to_string_lossy().to_string();
            if std::env::var_os("KOPS_TEST_VERBOSE").is_some() {
                eprintln!("{name}");
            }
            let t = TestFile::parse(&std::fs::read_to_string(f).unwrap()).unwrap();
            let expected = t.result.expect("expected result");
            let engine = Box::new(JitEngine::with_options(options.clone()));
            match crate::run_conformance(&t.insns, &t.mem, Some(engine)) {
                Ok(r0) if r0 == expected => {}
                Ok(r0) => failures.push(format!("{name}: r0 = {r0:#x}, expected {expected:#x}")),
                Err(e) => failures.push(format!("{name}: {e}")),
            }
        }
        (files.len() - failures.len(), failures)
    }

    #[test]
    fn conformance_suite_on_jit() {
        let (passed, failures) = run_suite(JitOptions::runtime().unwrap());
        for f in &failures {
            eprintln!("FAIL {f}");
        }
        assert!(failures.is_empty(), "{} conformance failures", failures.len());
        assert_eq!(passed, 313);
    }

    /// Run `insns` on `engine` with the generator's buffer; (r0, buffer after).
    fn run_on(engine: Box<dyn Engine>, insns: &[Insn], buf: &[u8]) -> Result<(u64, Vec<u8>), VmError> {
        let vm = crate::Vm::with_engine(None, engine)?;
        let id = vm.load_insns(
            "gen",
            insns.to_vec(),
            Vec::new(),
            kops_object::ProgType::Unspec,
            crate::CtxKind::Mem,
            HelperTable::conformance(),
            true,
        )?;
        let r = vm.run(id, &crate::ProgInput { data: buf.to_vec(), ctx: None })?;
        Ok((r.r0, r.data_out))
    }

    /// Random programs (kops_jit::gen): the JIT must leave r0 and the buffer (which holds
    /// every register and the stack at exit) exactly as the interpreter. 2000 programs by
    /// default; `KOPS_JIT_PROPTEST=100000` for the big run.
    #[test]
    fn random_programs_jit_matches_interpreter() {
        let count: u64 = std::env::var("KOPS_JIT_PROPTEST").ok().and_then(|v| v.parse().ok()).unwrap_or(2000);
        let first: u64 = std::env::var("KOPS_JIT_PROPTEST_SEED").ok().and_then(|v| v.parse().ok()).unwrap_or(0);
        let mut opts = JitOptions::runtime().unwrap();
        let mut failures = Vec::new();
        for seed in first..first + count {
            let mut rng = kops_jit::gen::Rng::new(seed);
            let size = 10 + rng.below(60) as usize;
            let prog = kops_jit::gen::program(&mut rng, size);
            let buf: Vec<u8> = (0..kops_jit::gen::BUF_SIZE).map(|_| rng.next() as u8).collect();
            // Alternate BMI2 on/off so both shift lowerings are covered.
            opts.features = if seed % 2 == 0 { JitOptions::runtime().unwrap().features } else { kops_jit::CpuFeatures::NONE };
            let want = run_on(Box::new(crate::interp::Interp), &prog, &buf);
            let got = run_on(Box::new(JitEngine::with_options(opts.clone())), &prog, &buf);
            match (want, got) {
                (Ok(w), Ok(g)) if w == g => {}
                (Ok(w), Ok(g)) => {
                    let first_diff = w.1.iter().zip(&g.1).position(|(a, b)| a != b);
                    failures.push(format!("seed {seed}: interp r0={:#x} jit r0={:#x}, first buffer difference at {first_diff:?}", w.0, g.0));
                }
                (Err(e), _) => failures.push(format!("seed {seed}: generator produced a program the interpreter rejects: {e}")),
                (_, Err(e)) => failures.push(format!("seed {seed}: JIT failed: {e}")),
            }
            if failures.len() > 10 {
                break;
            }
        }
        for f in &failures {
            eprintln!("{f}");
        }
        assert!(failures.is_empty(), "{} of {count} random programs differ", failures.len());
    }

    #[test]
    fn conformance_suite_on_jit_without_bmi() {
        // The non-BMI2 shift lowering (rcx juggling) must pass too.
        let mut o = JitOptions::runtime().unwrap();
        o.features = kops_jit::CpuFeatures::NONE;
        let (passed, failures) = run_suite(o);
        assert!(failures.is_empty(), "{:?}", failures);
        assert_eq!(passed, 313);
    }
}
