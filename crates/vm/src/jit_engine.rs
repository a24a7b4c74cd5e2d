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
//! Native code has no instruction budget and no per-access checks: both engines compile
//! only images that carry a [`crate::Verified`] token (see [`crate::verify`]).

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

/// The JIT's resolver for a program the runtime has prepared: helper calls go to the
/// table's trampoline addresses.
pub struct Helpers<'a>(pub &'a HelperTable);

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
    /// skb run in progress, for LD_ABS/LD_IND: (context address, packet buffer start, tc).
    static SKB_RUN: std::cell::Cell<Option<(u64, u64, bool)>> = const { std::cell::Cell::new(None) };
}

/// `LD_ABS`/`LD_IND` for native code, with the interpreter's (the kernel's) semantics:
/// the big-endian value of `size` bytes at `off` from the skb data (negative offsets
/// address the network / link-layer header, `SKF_NET_OFF` / `SKF_LL_OFF`); bit 63 set when
/// out of range (the JIT then ends the program with 0).
pub extern "C" fn ld_abs(size: u64, off: i64) -> u64 {
    let Some((c, head, tc)) = SKB_RUN.with(|s| s.get()) else { return 1 << 63 };
    crate::ctx::legacy_packet_load(c, head, tc, size, off).unwrap_or(1 << 63)
}

/// Entry address of slot `index` of program array `map` for the run in progress, 0 when
/// the map is not a program array of this run, the index is out of range or the slot is
/// empty (the tail call then falls through, as in the kernel).
pub extern "C" fn tail_lookup(map: u64, index: u64) -> u64 {
    TAIL_MAPS.with(|t| prog_array_entry(&t.borrow(), map, index))
}

/// Native entry of slot `index` of program array `map` among `tables` (the run's program
/// arrays: map address, slot table, max_entries), 0 when there is none: what every native
/// engine's tail-call lookup returns.
pub fn prog_array_entry(tables: &[(u64, u64, u64)], map: u64, index: u64) -> u64 {
    for &(m, table, max) in tables {
        if m == map {
            if index >= max || table == 0 {
                return 0;
            }
            // SAFETY: `table` is the map's slot array of `max` u64 entries, alive for the
            // run (the Vm owns the map); index < max.
            return unsafe { *((table + index * 8) as *const u64) };
        }
    }
    0
}

impl Engine for JitEngine {
    fn name(&self) -> &'static str {
        "jit"
    }

    fn compile(&self, prog: &ProgImage<'_>) -> Result<Box<dyn Compiled>, VmError> {
        crate::verify::require(prog, "jit")?;
        let o = runtime_options(&self.options, prog.conformance, throw(prog.helpers, prog.exception_cb));
        let jp = JitProgram::new(prog.insns, &o, &Helpers(prog.helpers)).map_err(|e| match e {
            kops_jit::JitError::Insn { pc, msg } => VmError::Load { prog: prog.name.to_string(), pc, msg },
            kops_jit::JitError::Unsupported { pc, what } => {
                VmError::Load { prog: prog.name.to_string(), pc, msg: format!("JIT: unsupported {what}") }
            }
            e => VmError::Load { prog: prog.name.to_string(), pc: 0, msg: format!("JIT: {e}") },
        })?;
        Ok(Box::new(JitCompiled { prog: jp }))
    }

    fn native(&self) -> bool {
        true
    }
}

/// The Kops engine (`--runtime kops`): the JIT with kinsn dispatch. Each site is compiled
/// to its op's native x86-64 form when the op has one and the CPU has its features
/// (masked by `KOPS_DISABLE_FEATURES`), else to its proof sequence (fallback); the plan
/// (lowering, liveness after each site, checked emits) is made by the JIT itself
/// (`kops_jit::compile_kinsn`).
///
/// The runtime hands sites through unlowered (`ProgImage::insns` with the sidecar + call
/// pairs, [`crate::KinsnSupport::Native`]) after checking them at load; programs without
/// sites compile exactly as with [`JitEngine`].
pub struct KopsEngine {
    options: JitOptions,
    registry: kops_kinsn::Registry,
}

impl KopsEngine {
    pub fn new(registry: kops_kinsn::Registry) -> Result<KopsEngine, VmError> {
        let options = JitOptions::runtime().map_err(|e| VmError::Setup(e.to_string()))?;
        Ok(KopsEngine { options, registry })
    }
    pub fn with_options(options: JitOptions, registry: kops_kinsn::Registry) -> KopsEngine {
        KopsEngine { options, registry }
    }

    /// Compile instructions with sites (what [`Engine::compile`] does, without a Vm).
    pub fn compile_insns(&self, name: &str, insns: &[Insn], subprog_starts: &[usize], helpers: &HelperTable, conformance: bool) -> Result<JitProgram, VmError> {
        Ok(self.compile_planned(name, insns, subprog_starts, helpers, conformance, None)?.program)
    }

    /// [`KopsEngine::compile_insns`] keeping the plan: the lowered program the JIT compiled
    /// and, per site, its native code or fallback (for listings such as `kops disasm
    /// --native`).
    /// `exception_cb`: see [`ProgImage::exception_cb`].
    pub fn compile_planned(
        &self,
        name: &str,
        insns: &[Insn],
        subprog_starts: &[usize],
        helpers: &HelperTable,
        conformance: bool,
        exception_cb: Option<usize>,
    ) -> Result<KopsCompiled, VmError> {
        let o = runtime_options(&self.options, conformance, throw(helpers, exception_cb));
        let load_err = |pc: usize, msg: String| VmError::Load { prog: name.to_string(), pc, msg };
        let k = kops_jit::Kinsn { registry: &self.registry, subprog_starts, func_info: &[] };
        // The JIT lowers the sites itself; its errors name slots of `insns`.
        let (program, lowered, plans) = JitProgram::with_kinsn(insns, &k, &o, &Helpers(helpers)).map_err(|e| match e {
            kops_jit::JitError::Kinsn(e) => load_err(0, format!("kinsn: {e}")),
            kops_jit::JitError::Insn { pc, msg } => load_err(pc, msg),
            kops_jit::JitError::Unsupported { pc, what } => load_err(pc, format!("JIT: unsupported {what}")),
            e => load_err(0, format!("JIT: {e}")),
        })?;
        Ok(KopsCompiled { program, lowered, plans })
    }

    /// The features the engine compiles for (CPU, masked by `KOPS_DISABLE_FEATURES`).
    pub fn features(&self) -> kops_jit::CpuFeatures {
        self.options.features
    }
    pub fn registry(&self) -> &kops_kinsn::Registry {
        &self.registry
    }
}

/// A program compiled by the Kops engine with its plan.
pub struct KopsCompiled {
    /// The native program (its `image.insn_ranges` are per slot of `lowered.insns`).
    pub program: JitProgram,
    /// The lowered program the JIT compiled (identical to the input when it has no sites).
    pub lowered: kops_kinsn::Lowered,
    /// Per region of `lowered`: native bytes or fallback.
    pub plans: Vec<kops_kinsn::RegionPlan>,
}

impl Engine for KopsEngine {
    fn name(&self) -> &'static str {
        "kops"
    }

    fn compile(&self, prog: &ProgImage<'_>) -> Result<Box<dyn Compiled>, VmError> {
        crate::verify::require(prog, "kops")?;
        let starts: Vec<usize> = prog.subprogs.iter().map(|s| s.start).collect();
        let jp = self.compile_planned(prog.name, prog.insns, &starts, prog.helpers, prog.conformance, prog.exception_cb)?.program;
        Ok(Box::new(JitCompiled { prog: jp }))
    }

    fn kinsn(&self) -> crate::KinsnSupport<'_> {
        crate::KinsnSupport::Native(&self.registry)
    }

    fn native(&self) -> bool {
        true
    }
}

/// `bpf_throw` for the JIT when the program calls it (its table has the kfunc).
fn throw(helpers: &HelperTable, exception_cb: Option<usize>) -> Option<kops_jit::Throw> {
    let id = crate::helpers::kfuncs::THROW;
    helpers.get(id).map(|_| kops_jit::Throw { helper: id as i32, callback: exception_cb })
}

/// The per-program JIT options of the runtime engines.
fn runtime_options(base: &JitOptions, conformance: bool, throw: Option<kops_jit::Throw>) -> JitOptions {
    let mut o = base.clone();
    o.throw = throw;
    o.call_mode = CallMode::Trampoline;
    o.div_fixups = true;
    o.tail_call = Some((TAIL_CALL as i32, TailCallMode::Lookup(tail_lookup as extern "C" fn(u64, u64) -> u64 as usize as u64)));
    o.ld_abs = Some(ld_abs as extern "C" fn(u64, i64) -> u64 as usize as u64);
    if conformance {
        o.unwind_helper = Some(crate::helpers::UNWIND as i32);
        o.callx_helpers = Some(CALLX_HELPERS);
    }
    o
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
        let skb = match env.ctx.kind {
            crate::CtxKind::Skb { tc } => Some((env.ctx.ctx.addr(), env.ctx.pkt.as_ref().map_or(0, |p| p.addr()), tc)),
            _ => None,
        };
        SKB_RUN.with(|s| s.set(skb));
        // SAFETY: compiled only from an image with a matching `Verified` token (see
        // `compile`): a verifier accepted the program, so it stays within the memory the
        // Vm gives it and terminates; the Vm relocated it and rewrote its ctx accesses.
        let r0 = unsafe { self.prog.call(r1, r2) };
        TAIL_MAPS.with(|t| t.borrow_mut().clear());
        SKB_RUN.with(|s| s.set(None));
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

    /// These tests run the conformance suite, generated programs and bundled objects whose
    /// accesses are safe by construction; the verifier gate itself is tested with the
    /// kernel in kops-kernel and the CLI.
    fn test_gate() -> Box<dyn crate::Verifier> {
        Box::new(crate::Unverified::quiet())
    }

    /// Every file of the suite on the JIT; expected r0 from the suite's files.
    /// None (SKIPPED printed) without the suite.
    fn run_suite(options: JitOptions) -> Option<(usize, Vec<String>)> {
        let files = kops_isa::conformance::suite_files_for_test()?;
        let mut failures = Vec::new();
        for f in &files {
            let name = f.file_name().unwrap().to_string_lossy().to_string();
            if std::env::var_os("KOPS_TEST_VERBOSE").is_some() {
                eprintln!("{name}");
            }
            let t = TestFile::parse(&std::fs::read_to_string(f).unwrap()).unwrap();
            let expected = t.result.expect("expected result");
            let engine = Box::new(JitEngine::with_options(options.clone()));
            match crate::run_conformance_with(&t.insns, &t.mem, Some(engine), test_gate()) {
                Ok(r0) if r0 == expected => {}
                Ok(r0) => failures.push(format!("{name}: r0 = {r0:#x}, expected {expected:#x}")),
                Err(e) => failures.push(format!("{name}: {e}")),
            }
        }
        Some((files.len() - failures.len(), failures))
    }

    #[test]
    fn conformance_suite_on_jit() {
        let Some((passed, failures)) = run_suite(JitOptions::runtime().unwrap()) else { return };
        for f in &failures {
            eprintln!("FAIL {f}");
        }
        assert!(failures.is_empty(), "{} conformance failures", failures.len());
        assert_eq!(passed, 313);
    }

    /// Run `insns` on `engine` with the generator's buffer; (r0, buffer after).
    fn run_on(engine: Box<dyn Engine>, insns: &[Insn], buf: &[u8]) -> Result<(u64, Vec<u8>), VmError> {
        let vm = crate::Vm::with_verifier(None, engine, test_gate())?;
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

    /// Random programs (kops_jit_tools::gen): the JIT must leave r0 and the buffer (which holds
    /// every register and the stack at exit) exactly as the interpreter. 2000 programs by
    /// default; `KOPS_JIT_PROPTEST=100000` for the big run.
    #[test]
    fn random_programs_jit_matches_interpreter() {
        let count: u64 = std::env::var("KOPS_JIT_PROPTEST").ok().and_then(|v| v.parse().ok()).unwrap_or(2000);
        let first: u64 = std::env::var("KOPS_JIT_PROPTEST_SEED").ok().and_then(|v| v.parse().ok()).unwrap_or(0);
        let mut opts = JitOptions::runtime().unwrap();
        let mut failures = Vec::new();
        for seed in first..first + count {
            let mut rng = kops_jit_tools::gen::Rng::new(seed);
            let size = 10 + rng.below(60) as usize;
            let prog = kops_jit_tools::gen::program(&mut rng, size);
            let buf: Vec<u8> = (0..kops_jit_tools::gen::BUF_SIZE).map(|_| rng.next() as u8).collect();
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

    fn tail_object() -> kops_object::Object {
        use kops_object::{MapDef, MapOrigin, Object};
        Object::empty("tail-test", vec![MapDef::new("jmp", MapOrigin::Btf, kops_object::map_type::PROG_ARRAY, 4, 4, 4)])
    }

    /// `buf[0] += 1; tail_call(ctx, jmp, index); return 7` (+ a callee-saved register and
    /// stack use, so the frame teardown before the jump matters).
    fn tail_caller(index: i32) -> Vec<Insn> {
        use kops_isa::op;
        let mut p = vec![
            Insn::mov64_reg(6, 1),
            Insn::st(op::DW, 10, -16, 5),
            Insn::ldx(op::DW, 2, 6, 0),
            Insn::alu64_imm(op::ADD, 2, 1),
            Insn::stx(op::DW, 6, 2, 0),
            Insn::mov64_reg(1, 6),
        ];
        p.extend(Insn::ld_imm64(2, op::PSEUDO_MAP_IDX, 0));
        p.extend([Insn::mov64_imm(3, index), Insn::call_helper(12), Insn::ldx(op::DW, 0, 10, -16), Insn::alu64_imm(op::ADD, 0, 2), Insn::exit()]);
        p
    }

    /// (r0, buf[0]) after running the caller with slot 0 = `target` (0: the callee
    /// returning 42, 1: the caller itself).
    fn tail_run(engine: Box<dyn Engine>, index: i32, target: usize) -> (u64, u64) {
        let obj = tail_object();
        let vm = crate::Vm::with_verifier(Some(&obj), engine, test_gate()).unwrap();
        let callee = vec![Insn::mov64_imm(0, 42), Insn::exit()];
        let load = |name: &str, insns: Vec<Insn>| {
            vm.load_insns(name, insns, Vec::new(), kops_object::ProgType::Unspec, crate::CtxKind::Mem, HelperTable::kernel(), false)
                .unwrap()
        };
        let b = load("callee", callee);
        let a = load("caller", tail_caller(index));
        vm.set_prog_array(0, 0, Some(if target == 0 { b } else { a })).unwrap();
        let r = vm.run(a, &crate::ProgInput { data: vec![0; 8], ctx: None }).unwrap();
        (r.r0, u64::from_le_bytes(r.data_out[..8].try_into().unwrap()))
    }

    /// A tail call from a program that uses LD_ABS (a call to the packet loader in the
    /// middle of the frame): the callee's result, and the caller's frame torn down.
    #[test]
    fn tail_call_from_program_with_unwind_frame() {
        use kops_isa::op;
        let obj = tail_object();
        let vm = crate::Vm::with_verifier(Some(&obj), Box::new(JitEngine::new().unwrap()), test_gate()).unwrap();
        let pt = kops_object::ProgType::SchedCls;
        let load = |name: &str, insns: Vec<Insn>| {
            vm.load_insns(name, insns, Vec::new(), pt, crate::CtxKind::for_prog_type(pt), HelperTable::kernel(), false).unwrap()
        };
        let callee = load(
            "callee",
            vec![Insn::mov64_reg(6, 1), Insn::new(op::LD | op::ABS | op::B, 0, 0, 0, 1), Insn::alu64_imm(op::ADD, 0, 40), Insn::exit()],
        );
        let mut caller = vec![
            Insn::mov64_reg(6, 1),
            Insn::new(op::LD | op::ABS | op::B, 0, 0, 0, 0),
            Insn::mov64_reg(7, 0),
            Insn::mov64_reg(1, 6),
        ];
        caller.extend(Insn::ld_imm64(2, op::PSEUDO_MAP_IDX, 0));
        caller.extend([Insn::mov64_imm(3, 0), Insn::call_helper(12), Insn::mov64_reg(0, 7), Insn::exit()]);
        let a = load("caller", caller);
        vm.set_prog_array(0, 0, Some(callee)).unwrap();
        let pkt: Vec<u8> = (0u8..64).collect();
        // Hand-computed: the callee returns packet byte 1 + 40.
        assert_eq!(vm.run(a, &crate::ProgInput::packet(&pkt)).unwrap().r0, 41);
        // Twice (the frame and registers stayed sound).
        assert_eq!(vm.run(a, &crate::ProgInput::packet(&pkt)).unwrap().r0, 41);
    }

    /// A tail call made inside a bpf-to-bpf callee replaces the callee's frame: the
    /// target's r0 comes back to the caller (main), as in the kernel.
    #[test]
    fn tail_call_from_subprogram() {
        use kops_isa::op;
        let obj = tail_object();
        let mut main = vec![
            Insn::st(op::DW, 10, -8, 1000),
            Insn::new(op::JMP | op::CALL, 0, op::PSEUDO_CALL, 0, 3), // f at 5
            Insn::ldx(op::DW, 1, 10, -8),
            Insn::alu64_reg(op::ADD, 0, 1),
            Insn::exit(),
            // f:
            Insn::mov64_reg(6, 1),
            Insn::ldx(op::DW, 2, 6, 0),
            Insn::alu64_imm(op::ADD, 2, 1),
            Insn::stx(op::DW, 6, 2, 0),
        ];
        main.extend(Insn::ld_imm64(2, op::PSEUDO_MAP_IDX, 0));
        main.extend([Insn::mov64_imm(3, 0), Insn::call_helper(12), Insn::mov64_imm(0, 7), Insn::exit()]);
        // (Subprogram boundaries come from the call target.)
        let subprogs: Vec<kops_object::Subprog> = Vec::new();
        let mut results = Vec::new();
        for engine in [Box::new(crate::interp::Interp) as Box<dyn Engine>, Box::new(JitEngine::new().unwrap())] {
            let vm = crate::Vm::with_verifier(Some(&obj), engine, test_gate()).unwrap();
            let load = |name: &str, insns: Vec<Insn>, sp: Vec<kops_object::Subprog>| {
                vm.load_insns(name, insns, sp, kops_object::ProgType::Unspec, crate::CtxKind::Mem, HelperTable::kernel(), false).unwrap()
            };
            let callee = load("callee", vec![Insn::mov64_imm(0, 42), Insn::exit()], Vec::new());
            let a = load("caller", main.clone(), subprogs.clone());
            vm.set_prog_array(0, 0, Some(callee)).unwrap();
            let r = vm.run(a, &crate::ProgInput { data: vec![0; 8], ctx: None }).unwrap();
            results.push((r.r0, r.data_out[0]));
        }
        // Hand-computed: 42 from the tail-called program + 1000 from main's stack; f ran once.
        assert_eq!(results, vec![(1042, 1), (1042, 1)]);
    }

    /// The poisoned run (VmOptions::poison_stack) changes exactly the results that depend on
    /// uninitialized stack or addresses: a read of an unwritten stack slot gives 0 vs
    /// 0xa5a5..., a returned stack address moves, a plain computation stays.
    #[test]
    fn poisoned_runs_expose_uninitialized_stack_and_addresses() {
        use kops_isa::op;
        let obj = tail_object();
        let uninit = vec![Insn::ldx(op::DW, 0, 10, -16), Insn::exit()];
        let address = vec![Insn::mov64_reg(0, 10), Insn::exit()];
        let plain = vec![Insn::st(op::DW, 10, -8, 7), Insn::ldx(op::DW, 0, 10, -8), Insn::exit()];
        // Each first Vm stays alive during the second run, so their buffers differ.
        let run = |insns: &Vec<Insn>, poison: bool| {
            let mut vm = crate::Vm::new(&obj).unwrap();
            vm.options.poison_stack = poison;
            let id = vm.load_insns("p", insns.clone(), Vec::new(), kops_object::ProgType::Unspec, crate::CtxKind::Mem, HelperTable::kernel(), false).unwrap();
            let r0 = vm.run(id, &crate::ProgInput { data: vec![0; 8], ctx: None }).unwrap().r0;
            (vm, r0)
        };
        let (_vm, a) = run(&uninit, false);
        assert_eq!((a, run(&uninit, true).1), (0, 0xa5a5_a5a5_a5a5_a5a5));
        let (_vm, a) = run(&address, false);
        assert_ne!(a, run(&address, true).1);
        let (_vm, a) = run(&plain, false);
        assert_eq!((a, run(&plain, true).1), (7, 7));
    }

    /// A program whose callee tail-calls the program itself (selftests'
    /// tailcall_bpf2bpf_hierarchy): every tail call runs in the callee's frame and calls
    /// one frame deeper, so 33 tail calls nest 34 callee frames, beyond the 8 of plain
    /// bpf-to-bpf calls; the kernel runs it, and so must the interpreter.
    #[test]
    fn tail_calls_from_a_callee_nest_deeper_than_eight_frames() {
        use kops_isa::op;
        let obj = tail_object();
        let mut prog = vec![
            Insn::mov64_reg(6, 1),
            Insn::new(op::JMP | op::CALL, 0, op::PSEUDO_CALL, 0, 2), // f at 4
            Insn::alu64_imm(op::ADD, 0, 5),
            Insn::exit(),
            // f: tail-call slot 0 (this program), else return 1
            Insn::mov64_imm(9, 0),
        ];
        prog.extend(Insn::ld_imm64(2, op::PSEUDO_MAP_IDX, 0));
        prog.extend([Insn::mov64_imm(3, 0), Insn::call_helper(12), Insn::mov64_imm(0, 1), Insn::exit()]);
        let mut results = Vec::new();
        for engine in [Box::new(crate::interp::Interp) as Box<dyn Engine>, Box::new(JitEngine::new().unwrap())] {
            let vm = crate::Vm::with_verifier(Some(&obj), engine, test_gate()).unwrap();
            let a = vm
                .load_insns("self", prog.clone(), Vec::new(), kops_object::ProgType::Unspec, crate::CtxKind::Mem, HelperTable::kernel(), false)
                .unwrap();
            vm.set_prog_array(0, 0, Some(a)).unwrap();
            results.push(vm.run(a, &crate::ProgInput { data: vec![0; 8], ctx: None }).unwrap().r0);
        }
        // Hand-computed: the 34th f finds the tail-call budget spent and returns 1; each of
        // the 34 program instances (the first and 33 tail-called into an f's frame) returns
        // to the instance that called that f, which adds 5: 1 + 34 * 5.
        assert_eq!(results, vec![171, 171]);
    }

    /// LD_ABS out of range inside a subprogram returns 0 to the caller, which goes on (the
    /// kernel expands it to `w0 ^= w0; exit`); the subprogram's use of r6/r7 (callee-saved
    /// native registers) must not leak into the host. Found on selftests' verifier_ld_ind.
    #[test]
    fn ld_abs_out_of_range_returns_from_the_subprogram() {
        use kops_isa::op;
        let obj = tail_object();
        let prog = vec![
            Insn::mov64_imm(6, 1000),
            Insn::mov64_imm(7, 2000),
            Insn::new(op::JMP | op::CALL, 0, op::PSEUDO_CALL, 0, 3), // f at 6
            Insn::alu64_imm(op::ADD, 0, 7),
            Insn::alu64_reg(op::ADD, 0, 6),
            Insn::exit(),
            // f: r0 = byte at 20, r6/r7 clobbered (restored for the caller on return)
            Insn::mov64_reg(6, 1),
            Insn::mov64_imm(7, 5),
            Insn::new(op::LD | op::ABS | op::B, 0, 0, 0, 20),
            Insn::exit(),
        ];
        let pt = kops_object::ProgType::SchedCls;
        for short in [true, false] {
            let pkt: Vec<u8> = (0u8..if short { 16 } else { 64 }).collect();
            let mut results = Vec::new();
            for engine in [Box::new(crate::interp::Interp) as Box<dyn Engine>, Box::new(JitEngine::new().unwrap())] {
                let vm = crate::Vm::with_verifier(Some(&obj), engine, test_gate()).unwrap();
                let ctx = crate::CtxKind::for_prog_type(pt);
                let a = vm.load_insns("ldabs", prog.clone(), Vec::new(), pt, ctx, HelperTable::kernel(), false).unwrap();
                for _ in 0..2 {
                    results.push(vm.run(a, &crate::ProgInput::packet(&pkt)).unwrap().r0);
                }
            }
            // Hand-computed: f returns 0 (short packet) or byte 20 (= 20); main adds 7 and
            // its own r6 (1000).
            let want = if short { 1007 } else { 1027 };
            assert_eq!(results, vec![want; 4], "packet of {} bytes", pkt.len());
        }
    }

    #[test]
    fn tail_calls() {
        let jit = || Box::new(JitEngine::new().unwrap()) as Box<dyn Engine>;
        // Hand-computed: slot 0 holds the callee -> 42, the caller ran once.
        assert_eq!(tail_run(jit(), 0, 0), (42, 1));
        // Empty slot / index out of range: the call falls through, r0 = 5 + 2.
        assert_eq!(tail_run(jit(), 1, 0), (7, 1));
        assert_eq!(tail_run(jit(), 9, 0), (7, 1));
        // The caller tail-calls itself: 1 + 33 runs (MAX_TAIL_CALL_CNT), then falls through.
        assert_eq!(tail_run(jit(), 0, 1), (7, 34));
        // And the interpreter agrees on all of them.
        for (i, t) in [(0, 0), (1, 0), (9, 0), (0, 1)] {
            assert_eq!(tail_run(Box::new(crate::interp::Interp), i, t), tail_run(jit(), i, t));
        }
    }

    /// The suite's unwind helper called with 0 from two calls deep ends the whole program
    /// with r0 = 0 (callee-saved registers and the main frame restored); with a nonzero
    /// argument execution goes on. Also through callx.
    #[test]
    fn unwind_from_subprogram() {
        use kops_isa::op;
        let prog = |arg: i32, callx: bool| {
            let call = if callx {
                vec![Insn::mov64_imm(2, 5), Insn::new(op::JMP | op::CALL | op::X, 2, 0, 0, 0)]
            } else {
                vec![Insn::ja(0), Insn::call_helper(5)]
            };
            let mut p = vec![
                Insn::mov64_imm(6, 100),               // 0: callee-saved, live across
                Insn::st(op::DW, 10, -8, 3),           // 1
                Insn::new(op::JMP | op::CALL, 0, 1, 0, 4), // 2: call f (slot 7)
                Insn::ldx(op::DW, 1, 10, -8),          // 3
                Insn::alu64_reg(op::ADD, 0, 1),        // 4
                Insn::alu64_reg(op::ADD, 0, 6),        // 5
                Insn::exit(),                          // 6
                // f: r7 used (pushed), calls g
                Insn::mov64_imm(7, 1),                 // 7
                Insn::new(op::JMP | op::CALL, 0, 1, 0, 2), // 8: call g (slot 11)
                Insn::alu64_reg(op::ADD, 0, 7),        // 9
                Insn::exit(),                          // 10
                // g: unwind(arg)
                Insn::mov64_imm(1, arg),               // 11
            ];
            p.extend(call);                            // 12, 13
            p.extend([Insn::mov64_imm(0, 10), Insn::exit()]);
            p
        };
        for callx in [false, true] {
            for (arg, want) in [(0, 0u64), (1, 10 + 1 + 3 + 100)] {
                let p = prog(arg, callx);
                let jit = crate::run_conformance_with(&p, &[], Some(Box::new(JitEngine::new().unwrap())), test_gate()).unwrap();
                let int = crate::run_conformance(&p, &[], None).unwrap();
                assert_eq!((jit, int), (want, want), "arg {arg} callx {callx}");
            }
        }
    }

    /// `may_goto` falls through 8M times (BPF_MAX_LOOPS) per function call, then jumps:
    /// a loop that only may_goto ends counts 8388608 in a subprogram called twice (each call
    /// its own counter), and the main function's counter is separate from both.
    #[test]
    fn may_goto_counts_per_call() {
        use kops_isa::op;
        let may_goto = |off: i16| Insn::new(op::JMP | kops_isa::decode::JCOND, 0, 0, off, 0);
        let p = vec![
            Insn::mov64_imm(6, 0),                     // 0
            may_goto(2),                               // 1: main's own loop, 8M times
            Insn::alu64_imm(op::ADD, 6, 1),            // 2
            Insn::ja(-3),                              // 3
            Insn::new(op::JMP | op::CALL, 0, 1, 0, 5), // 4: call f (slot 10)
            Insn::alu64_reg(op::ADD, 6, 0),            // 5
            Insn::new(op::JMP | op::CALL, 0, 1, 0, 3), // 6: call f
            Insn::alu64_reg(op::ADD, 6, 0),            // 7
            Insn::alu64_reg(op::MOV, 0, 6),            // 8
            Insn::exit(),                              // 9
            // f: count until may_goto jumps
            Insn::mov64_imm(0, 0),                     // 10
            may_goto(2),                               // 11
            Insn::alu64_imm(op::ADD, 0, 1),            // 12
            Insn::ja(-3),                              // 13
            Insn::exit(),                              // 14
        ];
        let want = 3 * 8 * 1024 * 1024;
        let jit = crate::run_conformance_with(&p, &[], Some(Box::new(JitEngine::new().unwrap())), test_gate()).unwrap();
        let int = crate::run_conformance(&p, &[], None).unwrap();
        assert_eq!((jit, int), (want, want));
    }

    /// A packet for the bundled programs: Ethernet + IPv4/IPv6/VLAN/other + TCP/UDP/ICMP +
    /// payload, with random fields (lengths consistent or not, on purpose).
    fn packet(rng: &mut kops_jit_tools::gen::Rng) -> Vec<u8> {
        let len = rng.pick(&[14usize, 20, 34, 42, 54, 60, 64, 74, 128, 256, 512, 1500]);
        let mut p: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
        if len >= 14 {
            let any = rng.next() as u16;
            let et: u16 = rng.pick(&[0x0800, 0x0800, 0x0800, 0x86dd, 0x8100, 0x0806, any]);
            p[12..14].copy_from_slice(&et.to_be_bytes());
        }
        if len >= 34 && p[12..14] == [0x08, 0x00] {
            p[14] = if rng.chance(90) { 0x45 } else { rng.next() as u8 };
            let tot = if rng.chance(80) { (len - 14) as u16 } else { rng.next() as u16 };
            p[16..18].copy_from_slice(&tot.to_be_bytes());
            p[20] = if rng.chance(80) { 0x40 } else { 0 }; // DF, no fragment
            p[21] = 0;
            let any = rng.next() as u8;
            p[23] = rng.pick(&[6u8, 6, 17, 17, 1, any]);
        }
        p
    }

    fn bundled_dir() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../bpf/out")
    }

    /// Every bundled program, the same 60 generated packets in the same order on the
    /// interpreter and on the JIT: r0, packet out, context out and every data map must be
    /// equal after each run.
    #[test]
    fn bundled_programs_jit_matches_interpreter() {
        let dir = bundled_dir();
        let Ok(rd) = std::fs::read_dir(&dir) else {
            eprintln!("no bundled programs at {}", dir.display());
            return;
        };
        let mut files: Vec<_> = rd.map(|e| e.unwrap().path()).filter(|p| p.to_string_lossy().ends_with(".bpf.o")).collect();
        files.sort();
        let mut compared = 0;
        let mut failures = Vec::new();
        for f in &files {
            let obj = match kops_object::Object::load(f) {
                Ok(o) => o,
                Err(e) => {
                    failures.push(format!("{}: {e}", f.display()));
                    continue;
                }
            };
            for p in &obj.programs {
                let vi = crate::Vm::new(&obj).unwrap();
                let vj = crate::Vm::with_verifier(Some(&obj), Box::new(JitEngine::new().unwrap()), test_gate()).unwrap();
                let (ii, ij) = match (vi.load(&p.name), vj.load(&p.name)) {
                    (Ok(a), Ok(b)) => (a, b),
                    (Err(e), _) => {
                        eprintln!("{}: skipped (interpreter cannot load it: {e})", p.name);
                        continue;
                    }
                    (Ok(_), Err(e)) => {
                        failures.push(format!("{}: the JIT cannot load it: {e}", p.name));
                        continue;
                    }
                };
                let mut rng = kops_jit_tools::gen::Rng::new(0xb0b + compared as u64);
                for k in 0..60 {
                    let input = crate::ProgInput::packet(&packet(&mut rng));
                    let a = vi.run(ii, &input);
                    let Ok(a) = a else {
                        // The JIT has no access checks: only run it where the interpreter
                        // found the run valid; the map states may differ from here on.
                        eprintln!("{} input {k}: interpreter: {}; stopping this program", p.name, a.unwrap_err());
                        break;
                    };
                    let b = vj.run(ij, &input).unwrap();
                    if (a.r0, &a.data_out, &a.ctx_out) != (b.r0, &b.data_out, &b.ctx_out) || vi.dump_maps() != vj.dump_maps() {
                        failures.push(format!("{} input {k}: interp r0={:#x}, jit r0={:#x}", p.name, a.r0, b.r0));
                        break;
                    }
                }
                compared += 1;
            }
        }
        for f in &failures {
            eprintln!("FAIL {f}");
        }
        assert!(failures.is_empty(), "{} bundled programs differ", failures.len());
        eprintln!("{compared} bundled programs agree");
    }

    /// Kinsn sites compile natively (rol, popcnt) or, with the CPU feature masked, to their
    /// proof sequences; both compute what Rust's rotate_left / count_ones compute.
    #[test]
    fn kops_engine_native_and_fallback() {
        use kops_einsn::{EInsn, Popcount64, Rotate64};
        let x = 0x0123_4567_89ab_cdefu64;
        // (A site may not start a function.)
        let mut p = vec![Insn::mov64_imm(0, 0)];
        // r0 = rol64(r1, 13) (tmp r2); r3 = popcount(r1) (temps r4, r5); r0 ^= r3
        p.extend(Rotate64::new(0, 1, 2, 13, true).unwrap().site().unwrap());
        p.extend(Popcount64::new(3, 1, 4, 5).unwrap().site().unwrap());
        p.extend([Insn::alu64_reg(kops_isa::op::XOR, 0, 3), Insn::exit()]);
        let want = x.rotate_left(13) ^ x.count_ones() as u64;
        let reg = kops_einsn::registry();
        for features in [kops_jit::CpuFeatures::host(), kops_jit::CpuFeatures::NONE] {
            let mut o = JitOptions::runtime().unwrap();
            o.features = features;
            let e = KopsEngine::with_options(o, reg.clone());
            let jp = e.compile_insns("sites", &p, &[0], &HelperTable::kernel(), false).unwrap();
            let code = jp.code();
            let text: Vec<String> = kops_jit_tools::disasm::disassemble(code, 0).into_iter().map(|i| i.mnemonic).collect();
            if features.has(kops_jit::Feature::Popcnt) {
                assert!(text.iter().any(|m| m == "popcnt"), "{text:?}");
            } else {
                assert!(!text.iter().any(|m| m == "popcnt"), "{text:?}");
            }
            // SAFETY: registers only.
            assert_eq!(unsafe { jp.call(x, 0) }, want, "features {features}");
        }
    }

    /// LD_ABS / LD_IND in a socket filter and a tc program: the JIT agrees with the
    /// interpreter on generated packets, including out-of-range and negative (SKF_NET_OFF /
    /// SKF_LL_OFF) offsets, which end the program with 0; two values checked by hand.
    #[test]
    fn legacy_packet_loads() {
        use kops_isa::op;
        let ld_abs = |sz: u8, imm: i32| Insn::new(op::LD | op::ABS | sz, 0, 0, 0, imm);
        let ld_ind = |sz: u8, src: u8, imm: i32| Insn::new(op::LD | op::IND | sz, 0, src, 0, imm);
        let prog = |abs_off: i32, ind_off: i32| {
            vec![
                Insn::mov64_reg(6, 1),
                Insn::mov64_imm(7, 0),
                ld_abs(op::H, 12),                // ethertype
                Insn::mov64_reg(7, 0),
                Insn::alu64_imm(op::LSH, 7, 32),
                Insn::mov64_imm(8, 2),
                ld_ind(op::B, 8, abs_off),        // byte at 2 + abs_off
                Insn::alu64_reg(op::OR, 7, 0),
                ld_abs(op::W, ind_off),
                Insn::alu64_imm(op::LSH, 0, 8),
                Insn::alu64_reg(op::XOR, 0, 7),
                Insn::exit(),
            ]
        };
        let run = |engine: Box<dyn Engine>, insns: &[Insn], tc: bool, pkt: &[u8]| -> u64 {
            let vm = crate::Vm::with_verifier(None, engine, test_gate()).unwrap();
            let pt = if tc { kops_object::ProgType::SchedCls } else { kops_object::ProgType::SocketFilter };
            let id = vm.load_insns("ldabs", insns.to_vec(), Vec::new(), pt, crate::CtxKind::for_prog_type(pt), HelperTable::kernel(), false).unwrap();
            vm.run(id, &crate::ProgInput::packet(pkt)).unwrap().r0
        };
        let pkt: Vec<u8> = (0u8..64).collect();
        // Hand-computed for tc (skb data at the Ethernet header): ethertype bytes 12,13 =
        // 0x0c0d; byte 2+4 = 6; word at 8 = 0x08090a0b.
        let want = ((0x0c0du64 << 32) | 6) ^ (0x0809_0a0bu64 << 8);
        assert_eq!(run(Box::new(JitEngine::new().unwrap()), &prog(4, 8), true, &pkt), want);
        // A socket filter's data starts at the network header (14 bytes later): 0x1a1b,
        // 0x14, 0x16171819.
        let want = ((0x1a1bu64 << 32) | 0x14) ^ (0x1617_1819u64 << 8);
        assert_eq!(run(Box::new(JitEngine::new().unwrap()), &prog(4, 8), false, &pkt), want);
        // Out of range: the program ends with 0.
        assert_eq!(run(Box::new(JitEngine::new().unwrap()), &prog(4, 62), true, &pkt), 0);
        let mut rng = kops_jit_tools::gen::Rng::new(77);
        for _ in 0..200 {
            let p = packet(&mut rng);
            let offs = [0, 1, 13, 60, 100, 1500, -1, -0x10_0000, -0x10_0000 + 3, -0x20_0000, -0x20_0000 + 13, -0x30_0000];
            let (a, b) = (rng.pick(&offs), rng.pick(&offs));
            for tc in [false, true] {
                let i = run(Box::new(crate::interp::Interp), &prog(a, b), tc, &p);
                let j = run(Box::new(JitEngine::new().unwrap()), &prog(a, b), tc, &p);
                assert_eq!(i, j, "offsets {a} {b} tc {tc} packet {} bytes", p.len());
            }
        }
    }

    #[test]
    fn conformance_suite_on_jit_without_bmi() {
        // The non-BMI2 shift lowering (rcx juggling) must pass too.
        let mut o = JitOptions::runtime().unwrap();
        o.features = kops_jit::CpuFeatures::NONE;
        let Some((passed, failures)) = run_suite(o) else { return };
        assert!(failures.is_empty(), "{:?}", failures);
        assert_eq!(passed, 313);
    }

    /// A program with one rotate and one popcount site and a hand-computed result.
    fn sites_program() -> (Vec<Insn>, u64) {
        use kops_einsn::{EInsn, Popcount64, Rotate64};
        // r1 = 0x0123456789abcdef; r0 = rol64(r1, 13) ^ popcount(r1)
        let mut p = Insn::ld_imm64(1, 0, 0x0123_4567_89ab_cdef).to_vec();
        p.extend(Rotate64::new(0, 1, 2, 13, true).unwrap().site().unwrap());
        p.extend(Popcount64::new(3, 1, 4, 5).unwrap().site().unwrap());
        p.extend([Insn::alu64_reg(kops_isa::op::XOR, 0, 3), Insn::exit()]);
        let x = 0x0123_4567_89ab_cdefu64;
        (p, x.rotate_left(13) ^ x.count_ones() as u64)
    }

    fn load_on(engine: Box<dyn Engine>, insns: Vec<Insn>, subprogs: Vec<kops_object::Subprog>) -> Result<(crate::Vm, crate::ProgId), VmError> {
        let vm = crate::Vm::with_verifier(None, engine, test_gate())?;
        let id = vm.load_insns("t", insns, subprogs, kops_object::ProgType::Unspec, crate::CtxKind::Mem, HelperTable::kernel(), false)?;
        Ok((vm, id))
    }

    fn engines_with_sites() -> Vec<Box<dyn Engine>> {
        let reg = kops_einsn::registry();
        vec![
            Box::new(crate::Lowering::new(crate::interp::Interp, reg.clone())),
            Box::new(crate::Lowering::new(JitEngine::new().unwrap(), reg.clone())),
            Box::new(KopsEngine::new(reg).unwrap()),
        ]
    }

    /// Programs with sites load through the Vm on the lowering interpreter, the lowering
    /// JIT and the Kops engine, and all compute Rust's rotate_left ^ count_ones. The plain
    /// interpreter rejects them at load, naming the site.
    #[test]
    fn vm_runs_sites_on_every_engine() {
        let (p, want) = sites_program();
        for e in engines_with_sites() {
            let name = e.name();
            let (vm, id) = load_on(e, p.clone(), Vec::new()).unwrap();
            let prog = vm.program(id).unwrap();
            assert_eq!(prog.kinsn_sites, 2, "{name}");
            // Only the lowering engines see lowered instructions.
            assert_eq!(prog.lowering.is_some(), name != "kops", "{name}");
            let r = vm.run(id, &crate::ProgInput { data: vec![0; 8], ctx: None }).unwrap();
            assert_eq!(r.r0, want, "{name}");
        }
        match load_on(Box::new(crate::interp::Interp), p, Vec::new()) {
            Err(VmError::Load { pc: 2, msg, .. }) => assert!(msg.contains("cannot run kinsn sites"), "{msg}"),
            other => panic!("expected a load error at insn 2, got {:?}", other.map(|_| ())),
        }
    }

    /// Malformed sites are load errors naming the instruction, on every engine.
    #[test]
    fn malformed_sites_rejected_at_load() {
        use kops_isa::op;
        let rot = <kops_einsn::Rotate64 as kops_einsn::OpInfo>::ID;
        let site = |id: u32, payload: u64| kops_kinsn::encode_site(id, payload).unwrap();
        let good = {
            use kops_einsn::{EInsn, Rotate64};
            Rotate64::new(0, 1, 2, 13, true).unwrap().site().unwrap()
        };
        let mov = Insn::mov64_imm(0, 0);
        let exit = Insn::exit();
        let call_only = Insn::new(op::JMP | op::CALL, 0, op::PSEUDO_KINSN_CALL, 0, rot as i32);
        // (program, subprograms, slot the error must name, text it must contain)
        let mut cases: Vec<(Vec<Insn>, &str, usize, &str)> = vec![
            (vec![mov, Insn::mov64_imm(1, 1), call_only, exit], "call without sidecar", 2, "not preceded by its sidecar"),
            (vec![mov, Insn::mov64_imm(1, 1), site(9999, 0)[0], site(9999, 0)[1], exit], "unknown op id", 3, "unknown kinsn op id 9999"),
        ];
        // rotate64 with every payload bit set: fields out of range.
        let bad = site(rot, kops_kinsn::MAX_PAYLOAD);
        cases.push((vec![mov, bad[0], bad[1], exit], "payload out of range", 1, "rotate64"));
        // main calls f at slot 3; f starts with a site.
        let call_f = Insn::new(op::JMP | op::CALL, 0, op::PSEUDO_CALL, 0, 1);
        cases.push((vec![mov, call_f, exit, good[0], good[1], exit], "sidecar at a subprogram start", 3, "starts a subprogram"));
        // A sidecar whose next slot is not a kinsn call.
        cases.push((vec![mov, good[0], exit], "sidecar without call", 1, "not followed by a kinsn call"));
        for (prog, what, pc, text) in cases {
            for e in engines_with_sites() {
                let name = e.name();
                match load_on(e, prog.clone(), Vec::new()) {
                    Err(VmError::Load { pc: got, msg, .. }) => {
                        assert_eq!(got, pc, "{what} on {name}: {msg}");
                        assert!(msg.contains(text), "{what} on {name}: {msg}");
                        // The rendered error names the program and instruction.
                        let shown = VmError::Load { prog: "t".into(), pc: got, msg }.to_string();
                        assert!(shown.starts_with(&format!("program `t`, insn {pc}: ")), "{shown}");
                    }
                    other => panic!("{what} on {name}: expected a load error, got {:?}", other.map(|_| ())),
                }
            }
        }
    }

    /// A fault after a site is reported at its original slot, not the lowered one; a load
    /// error after a site too.
    #[test]
    fn lowered_errors_name_original_slots() {
        use kops_einsn::{EInsn, Rotate64};
        use kops_isa::op;
        let site = Rotate64::new(0, 1, 2, 13, true).unwrap().site().unwrap();
        // slot 0 mov, 1-2 site, 3 load through r3 = 0 (invalid), 4 exit
        let p = vec![Insn::mov64_imm(3, 0), site[0], site[1], Insn::ldx(op::DW, 0, 3, 0), Insn::exit()];
        let lowered_len = Rotate64::new(0, 1, 2, 13, true).unwrap().proof().len();
        assert!(lowered_len > 2, "the test needs a proof longer than the site");
        let e = Box::new(crate::Lowering::new(crate::interp::Interp, kops_einsn::registry()));
        let (vm, id) = load_on(e, p, Vec::new()).unwrap();
        match vm.run(id, &crate::ProgInput { data: vec![0; 8], ctx: None }) {
            Err(VmError::BadAccess { pc, .. }) => assert_eq!(pc, 3),
            other => panic!("expected a bad access at insn 3, got {other:?}"),
        }
        // Unknown helper after a site: insn 3 again.
        let p = vec![Insn::mov64_imm(3, 0), site[0], site[1], Insn::call_helper(9999), Insn::exit()];
        for e in engines_with_sites() {
            match load_on(e, p.clone(), Vec::new()) {
                Err(VmError::Load { pc, msg, .. }) => assert_eq!(pc, 3, "{msg}"),
                other => panic!("expected a load error, got {:?}", other.map(|_| ())),
            }
        }
    }

    /// The conformance suite (no sites) passes on the Kops engine.
    #[test]
    fn conformance_suite_on_kops_engine() {
        let Some(files) = kops_isa::conformance::suite_files_for_test() else { return };
        let mut n = 0;
        for f in files {
            let t = TestFile::parse(&std::fs::read_to_string(&f).unwrap()).unwrap();
            let engine = Box::new(KopsEngine::new(kops_einsn::registry()).unwrap());
            let r0 = crate::run_conformance_with(&t.insns, &t.mem, Some(engine), test_gate()).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
            assert_eq!(Some(r0), t.result, "{}", f.display());
            n += 1;
        }
        assert_eq!(n, 313);
    }

    /// One site of every EInsn op (the program of kops-einsn's kernel test): the Kops
    /// engine, the lowering JIT and the lowering interpreter return the same r0, with the
    /// host's features and with all masked; natively each site is its single x86-64
    /// instruction (or short sequence) named here from the ISA.
    #[test]
    fn every_op_native_matches_interpreter() {
        use kops_einsn::*;
        use kops_isa::op;
        let mut p = vec![Insn::mov64_reg(6, 1)];
        p.extend(Memset::new(10, -64, 8, 8, 0).unwrap().site().unwrap());
        p.extend(Insn::ld_imm64(1, 0, 0x0123_4567_89ab_cdef));
        p.push(Insn::stx(op::DW, 10, 1, -8));
        p.extend(EndianLoad64::new(2, 10, -8).unwrap().site().unwrap());
        p.extend(EndianLoad32::new(3, 10, -8).unwrap().site().unwrap());
        p.extend(EndianLoad16::new(4, 10, -6).unwrap().site().unwrap());
        p.extend(Rotate64::new(2, 2, 5, 13, false).unwrap().site().unwrap());
        p.extend(Rotate32::new(3, 3, 5, 7, true).unwrap().site().unwrap());
        p.extend(Select::new(0, 2, 3, 4, false, false).unwrap().site().unwrap());
        p.extend(Extract::new(0, 0, 3, 5).unwrap().site().unwrap());
        p.extend(Popcount64::new(7, 2, 8, 9).unwrap().site().unwrap());
        p.extend(Popcount32::new(8, 3, 9).unwrap().site().unwrap());
        p.push(Insn::alu64_reg(op::ADD, 7, 8));
        p.extend(Memcpy::new(10, -32, 10, -64, 1, 8, 4, true).unwrap().site().unwrap());
        p.push(Insn::ldx(op::DW, 1, 10, -8));
        p.push(Insn::alu64_reg(op::XOR, 7, 1));
        p.extend(Prefetch::new(10, -8).unwrap().site().unwrap());
        p.extend(SpecBarrier.site().unwrap());
        p.extend(Extract::new(1, 7, 0, 32).unwrap().site().unwrap());
        p.extend([Insn::alu64_reg(op::ADD, 0, 1), Insn::alu64_reg(op::XOR, 0, 7), Insn::exit()]);
        let reg = kops_einsn::registry();
        let run = |e: Box<dyn Engine>| {
            let (vm, id) = load_on(e, p.clone(), Vec::new()).unwrap();
            vm.run(id, &crate::ProgInput { data: vec![0; 8], ctx: None }).unwrap().r0
        };
        let want = run(Box::new(crate::Lowering::new(crate::interp::Interp, reg.clone())));
        let host = kops_jit::CpuFeatures::host();
        for features in [host, kops_jit::CpuFeatures::NONE] {
            let mut o = JitOptions::runtime().unwrap();
            o.features = features;
            assert_eq!(run(Box::new(KopsEngine::with_options(o.clone(), reg.clone()))), want, "kops, features {features}");
            assert_eq!(run(Box::new(crate::Lowering::new(JitEngine::with_options(o.clone()), reg.clone()))), want, "jit, features {features}");
            let e = KopsEngine::with_options(o, reg.clone());
            let kc = e.compile_planned("all", &p, &[0], &HelperTable::kernel(), false, None).unwrap();
            assert_eq!(kc.lowered.regions.len(), 14);
            for (r, plan) in kc.lowered.regions.iter().zip(&kc.plans) {
                let name = reg.get(r.op_id).unwrap().name().to_string();
                let Some(code) = &plan.native else {
                    // Only features can force a fallback for these payloads.
                    assert!(features == kops_jit::CpuFeatures::NONE, "{name} fell back with the host's features");
                    continue;
                };
                let text: Vec<String> = kops_jit_tools::disasm::disassemble(code, 0).into_iter().map(|i| i.text).collect();
                let has = |m: &str| text.iter().any(|t| t.starts_with(m) || t.contains(&format!(" {m}")));
                let ok = match name.as_str() {
                    "rotate64" | "rotate32" => has("rol") || has("ror") || has("rorx"),
                    "select64" => has("cmov"),
                    "popcount64" | "popcount32" => has("popcnt"),
                    "endian_load16" | "endian_load32" | "endian_load64" => {
                        has("movbe") || (!features.has(kops_jit::Feature::Movbe) && (has("bswap") || has("rol") || has("ror")))
                    }
                    "memcpy" => has("rep movs"),
                    "memset" => has("rep stos"),
                    "prefetch" => has("prefetch"),
                    "spec_barrier" => has("lfence"),
                    "extract64" => text.len() <= 3,
                    other => panic!("unexpected op {other}"),
                };
                assert!(ok, "{name} (features {features}): {text:?}");
            }
        }
    }
}
