//! The runtimes: one [`Runner`] each, plus the single checked run ([`Outcome`]) that must
//! agree with the oracle before a runtime is timed.
//!
//! - `kernel`: BPF_PROG_TEST_RUN with `repeat`; the time is the kernel's own average per
//!   run (`duration`, integer ns), so syscall and packet setup are excluded as for every
//!   other runtime.
//! - `interp`, `jit`, `kops`, `rbpf`: a [`kops_vm::Vm`] (same maps, helpers and contexts)
//!   whose engine is wrapped by [`RepeatEngine`]: one `Vm::run` builds the context once and
//!   the wrapped program runs `repeat` times on it, timed around that loop only. As in the
//!   kernel's test run, the context and packet are not reset between repeats.
//! - `native`: see [`crate::native`].
//!
//! Userspace batches are timed with the thread's CPU clock ([`ThreadClock`]), not the wall
//! clock: the kernel's test run disables preemption and stops its timer around
//! rescheduling, so time spent descheduled never counts there; on a loaded machine a wall
//! clock would charge other processes' time to the userspace runtimes only.

use std::cell::Cell;
use std::collections::BTreeMap;
use std::rc::Rc;

use kops_isa::{op, Insn};
use kops_jit::{CallMode, JitOptions, JitProgram, Resolver};
use kops_kernel::{KernelBtf, KernelError, LoadedProg, MapSet, TestRun};
use kops_object::{map_type, Object, Program};
use kops_vm::{CtxKind, Compiled, Engine, HelperTable, ProgId, ProgImage, ProgInput, RunEnv, Vm, VmError};
use kops_vm::jit_engine::Helpers;

use crate::Runner;

pub use kops_vm::compare::{MapState, Outcome};

fn is_array(t: u32) -> bool {
    matches!(t, map_type::ARRAY | map_type::PERCPU_ARRAY)
}

fn canon_insert(out: &mut BTreeMap<Vec<u8>, Vec<u8>>, array: bool, k: Vec<u8>, v: Vec<u8>) {
    if array && v.iter().all(|&b| b == 0) {
        return;
    }
    out.insert(k, v);
}

/// Differences between the oracle's outcome `o` and `x`, one line each (empty: equal).
/// r0 is compared on its low 32 bits: the kernel's test run returns a u32.
pub fn differences(o: &Outcome, x: &Outcome) -> Vec<String> {
    kops_vm::compare::differences(o, x, true)
}

/// The packet input for `kind`, or why the program cannot be benchmarked on it.
pub fn input_for(kind: CtxKind, packet: &[u8]) -> Result<ProgInput, String> {
    if kind.has_packet() {
        Ok(ProgInput::packet(packet))
    } else {
        Err("not a packet program (XDP, tc or socket filter): no benchmark input for it".into())
    }
}

// ---------------------------------------------------------------------------------------
// kernel

/// A program loaded into the kernel with its own maps.
pub struct KernelProg {
    prog: LoadedProg,
    maps: MapSet,
    input: ProgInput,
    cpu: usize,
    /// Timed inputs when measuring over a traffic trace (else `input` alone).
    trace: Vec<ProgInput>,
}

impl KernelProg {
    /// Load `insns` (the object's program, or a rewritten/lowered one given as `prog`) with
    /// fresh maps. `cpu`: the CPU this thread is pinned to (per-CPU values are read there).
    pub fn load(obj: &Object, prog: &Program, btf: Option<&KernelBtf>, input: &ProgInput, cpu: usize) -> Result<KernelProg, KernelError> {
        let maps = MapSet::create(&obj.maps)?;
        let p = kops_kernel::load_object_program(obj, prog, &prog.insns, &maps, btf, 0)?;
        Ok(KernelProg { prog: p, maps, input: input.clone(), cpu, trace: Vec::new() })
    }

    /// Time over every input of `trace` (each packet `repeat` times per sample; the sample
    /// is the mean per packet) instead of the one checked input.
    pub fn with_trace(mut self, trace: Vec<ProgInput>) -> KernelProg {
        self.trace = trace;
        self
    }

    /// Maps that can be read back, by name.
    pub fn comparable_maps(&self) -> Vec<String> {
        self.maps.maps.iter().filter(|m| m.undumpable().is_none()).map(|m| m.def.name.clone()).collect()
    }

    /// One run from the initial map contents.
    pub fn outcome(&self, compare: &[String]) -> Result<Outcome, String> {
        self.maps.reset().map_err(|e| e.to_string())?;
        let r = self
            .prog
            .test_run(&TestRun { data_in: Some(&self.input.data), repeat: 1, ..TestRun::default() })
            .map_err(|e| e.to_string())?;
        let mut state = MapState::new();
        for m in &self.maps.maps {
            if !compare.contains(&m.def.name) {
                continue;
            }
            let d = m.dump().map_err(|e| e.to_string())?;
            let mut entries = BTreeMap::new();
            for (k, vals) in d.entries {
                let v = if d.per_cpu { vals.get(self.cpu).cloned().unwrap_or_default() } else { vals[0].clone() };
                canon_insert(&mut entries, is_array(m.def.map_type), k, v);
            }
            state.insert(m.def.name.clone(), entries);
        }
        Ok(Outcome { r0: r.retval as u64, data_out: Some(r.data_out), maps: state })
    }

    /// Bytes of the kernel's jited image (all functions).
    pub fn jited_bytes(&self) -> Option<usize> {
        self.prog.info().ok().map(|i| i.jited.len()).filter(|&n| n > 0)
    }

    /// 8 bytes at `off` of global-data map `map` (e.g. `.bss` `kops_result`), as left by the
    /// last run.
    pub fn read_u64(&self, map: &str, off: usize) -> Result<u64, String> {
        let m = self.maps.get(map).ok_or_else(|| format!("no map `{map}`"))?;
        let v = m
            .lookup_raw(&0u32.to_le_bytes())
            .map_err(|e| e.to_string())?
            .ok_or_else(|| format!("map `{map}` has no element 0"))?;
        let b = v.get(off..off + 8).ok_or_else(|| format!("offset {off} past the {}-byte value of `{map}`", v.len()))?;
        Ok(u64::from_le_bytes(b.try_into().unwrap()))
    }
}

impl KernelProg {
    fn measure_one(&self, input: &ProgInput, repeat: u32) -> Result<f64, String> {
        let r = self
            .prog
            .test_run(&TestRun { data_in: Some(&input.data), repeat, ..TestRun::default() })
            .map_err(|e| e.to_string())?;
        // The kernel reports the mean per run in whole ns (total / repeat).
        Ok(r.duration_ns as f64)
    }
}

impl Runner for KernelProg {
    fn measure(&mut self, repeat: u32) -> Result<f64, String> {
        if self.trace.is_empty() {
            return self.measure_one(&self.input, repeat);
        }
        mean_over(&self.trace, |i| self.measure_one(i, repeat))
    }
}

/// Mean of `f` over a trace's inputs: time per packet over the whole trace.
fn mean_over(trace: &[ProgInput], mut f: impl FnMut(&ProgInput) -> Result<f64, String>) -> Result<f64, String> {
    let mut sum = 0.0;
    for (k, i) in trace.iter().enumerate() {
        sum += f(i).map_err(|e| format!("traffic packet {k}: {e}"))?;
    }
    Ok(sum / trace.len() as f64)
}

// ---------------------------------------------------------------------------------------
// userspace engines

/// CPU time of the calling thread (CLOCK_THREAD_CPUTIME_ID), in ns.
pub struct ThreadClock(u128);

impl ThreadClock {
    fn read() -> u128 {
        let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
        // SAFETY: plain syscall writing into `ts`; this clock id always exists on Linux.
        unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
        ts.tv_sec as u128 * 1_000_000_000 + ts.tv_nsec as u128
    }
    pub fn now() -> ThreadClock {
        ThreadClock(Self::read())
    }
    pub fn elapsed_ns(&self) -> u128 {
        Self::read().saturating_sub(self.0)
    }
}

/// Repeat count for the next run and the time the last one took.
#[derive(Default)]
pub struct Ctl {
    repeat: Cell<u32>,
    elapsed_ns: Cell<u128>,
}

/// Wraps an engine so that one `Vm::run` runs the program `repeat` times on the same
/// context and records the time of that loop.
pub struct RepeatEngine {
    inner: Box<dyn Engine>,
    ctl: Rc<Ctl>,
}

impl RepeatEngine {
    pub fn new(inner: Box<dyn Engine>) -> (RepeatEngine, Rc<Ctl>) {
        let ctl = Rc::new(Ctl { repeat: Cell::new(1), elapsed_ns: Cell::new(0) });
        (RepeatEngine { inner, ctl: ctl.clone() }, ctl)
    }
}

impl Engine for RepeatEngine {
    fn name(&self) -> &'static str {
        self.inner.name()
    }
    fn compile(&self, prog: &ProgImage<'_>) -> Result<Box<dyn Compiled>, VmError> {
        Ok(Box::new(Repeated { inner: self.inner.compile(prog)?, ctl: self.ctl.clone() }))
    }
    fn kinsn(&self) -> kops_vm::KinsnSupport<'_> {
        self.inner.kinsn()
    }
    fn native(&self) -> bool {
        self.inner.native()
    }
}

struct Repeated {
    inner: Box<dyn Compiled>,
    ctl: Rc<Ctl>,
}

impl Compiled for Repeated {
    fn run(&self, r1: u64, r2: u64, env: &RunEnv<'_>) -> Result<u64, VmError> {
        let n = self.ctl.repeat.get().max(1);
        let t = ThreadClock::now();
        let mut r0 = 0;
        for _ in 0..n {
            r0 = self.inner.run(r1, r2, env)?;
        }
        self.ctl.elapsed_ns.set(t.elapsed_ns());
        Ok(r0)
    }
    fn entry_address(&self) -> u64 {
        self.inner.entry_address()
    }
}

/// Our x86-64 JIT (`kops_jit`), optionally with kinsn sites: `jit` without, `kops` with.
/// Options as kops-vm's JIT engine (CPU features detected and masked by
/// KOPS_DISABLE_FEATURES, trampolined helper calls, divide fixups); the run is the bare
/// native call, so `jit` and `kops` are timed by the same code.
pub struct OurJit {
    options: JitOptions,
    /// The program whose sites the `kops` runner compiles natively.
    kinsn: Option<KinsnProgram>,
}

/// A program with kinsn sites for the `kops` runner. The runtime loads (verifies,
/// relocates) the lowered program, `lowering.insns`; the JIT compiles the program with its
/// sites, lowering them itself and emitting each op's checked native form, so it gets no
/// native bytes from here.
pub struct KinsnProgram {
    pub name: String,
    /// The program as the recognizer wrote it (sites as sidecar + kinsn call pairs).
    pub program: Program,
    /// Its lowering (what the runtime loads).
    pub lowering: kops_kinsn::Lowered,
    pub registry: kops_kinsn::Registry,
}

impl KinsnProgram {
    /// The program with sites, carrying what the runtime changed in the lowered program
    /// (`final_insns`: relocated map references, rewritten context loads) back to the
    /// slots they came from. A change inside a proof sequence is an error: the native
    /// form could not follow it.
    fn with_runtime_changes(&self, final_insns: &[Insn]) -> Result<Vec<Insn>, (usize, String)> {
        let l = &self.lowering;
        if final_insns.len() != l.insns.len() {
            return Err((0, format!("the runtime's program has {} slots, its lowering {}", final_insns.len(), l.insns.len())));
        }
        let mut insns = self.program.insns.clone();
        for (pc, (now, before)) in final_insns.iter().zip(&l.insns).enumerate() {
            if now == before {
                continue;
            }
            if l.region_at(pc).is_some() {
                return Err((pc, "the runtime changed the proof sequence of this kinsn site; the native form cannot follow".into()));
            }
            insns[l.orig_of[pc]] = *now;
        }
        Ok(insns)
    }
    /// Compile `final_insns` (the runtime's lowered program) with the sites native.
    fn compile(&self, final_insns: &[Insn], options: &JitOptions, res: &dyn Resolver) -> Result<(JitProgram, kops_kinsn::Lowered), kops_jit::JitError> {
        let insns = self.with_runtime_changes(final_insns).map_err(|(pc, msg)| kops_jit::JitError::Insn { pc, msg })?;
        let starts: Vec<usize> = self.program.subprogs.iter().map(|s| s.start).collect();
        let k = kops_jit::Kinsn { registry: &self.registry, subprog_starts: &starts, func_info: &self.program.func_info };
        let (jp, lowered, _) = JitProgram::with_kinsn(&insns, &k, options, res).map_err(|e| match e {
            // Errors in the runtime's (lowered) numbering, as for the `jit` runner.
            kops_jit::JitError::Insn { pc, msg } => kops_jit::JitError::Insn { pc: self.lowering.lowered_of.get(pc).copied().unwrap_or(pc), msg },
            kops_jit::JitError::Unsupported { pc, what } => {
                kops_jit::JitError::Unsupported { pc: self.lowering.lowered_of.get(pc).copied().unwrap_or(pc), what }
            }
            e => e,
        })?;
        if lowered.insns != final_insns {
            return Err(kops_jit::JitError::Other("the JIT's lowering differs from the program the runtime loaded".into()));
        }
        Ok((jp, lowered))
    }
}

impl OurJit {
    pub fn new(kinsn: Option<KinsnProgram>) -> Result<OurJit, String> {
        let mut options = JitOptions::runtime().map_err(|e| e.to_string())?;
        options.call_mode = CallMode::Trampoline;
        options.div_fixups = true;
        // As kops-vm's JitEngine, so the code is the same (programs that do tail calls are
        // refused in `compile`: the lookup table is private to that engine's runs).
        options.tail_call = Some((
            kops_vm::helpers::TAIL_CALL as i32,
            kops_jit::TailCallMode::Lookup(kops_vm::jit_engine::tail_lookup as extern "C" fn(u64, u64) -> u64 as usize as u64),
        ));
        Ok(OurJit { options, kinsn })
    }
    pub fn options(&self) -> &JitOptions {
        &self.options
    }

    /// The sites to compile natively for program `name`, if this is the `kops` runner and
    /// they belong to it.
    fn sites_for(&self, name: &str) -> Option<&KinsnProgram> {
        self.kinsn.as_ref().filter(|k| k.name == name)
    }

    /// Bytes of the functions this JIT makes of `insns` (final instructions, as the engine
    /// gets them), without the helper trampolines and stubs after them: what compares with
    /// the kernel's jited image.
    pub fn code_bytes(&self, name: &str, insns: &[Insn]) -> Option<usize> {
        let res = Helpers(&HelperTable::kernel());
        let img = match self.sites_for(name) {
            Some(k) => k.compile(insns, &self.options, &res).ok()?.0.image,
            None => kops_jit::compile(insns, &self.options, &res).ok()?,
        };
        Some(img.funcs.iter().map(|f| f.code_len).sum())
    }
}

impl Engine for OurJit {
    fn name(&self) -> &'static str {
        if self.kinsn.is_some() {
            "kops"
        } else {
            "jit"
        }
    }
    fn native(&self) -> bool {
        true
    }
    fn compile(&self, prog: &ProgImage<'_>) -> Result<Box<dyn Compiled>, VmError> {
        kops_vm::verify::require(prog, self.name())?;
        let load_err = |pc: usize, msg: String| VmError::Load { prog: prog.name.to_string(), pc, msg };
        for (pc, i) in prog.insns.iter().enumerate() {
            if i.is_helper_call() && i.imm == kops_vm::helpers::TAIL_CALL as i32 {
                return Err(load_err(pc, "tail calls are not supported by the benchmark's JIT runner".into()));
            }
            // LD_ABS/LD_IND go through kops-vm's per-run skb state, private to its engine.
            if i.class() == kops_isa::op::LD && matches!(i.mode(), kops_isa::op::ABS | kops_isa::op::IND) {
                return Err(load_err(pc, "LD_ABS/LD_IND are not supported by the benchmark's JIT runner".into()));
            }
        }
        let jp = match self.sites_for(prog.name) {
            Some(k) => k.compile(prog.insns, &self.options, &Helpers(prog.helpers)).map(|(jp, _)| jp),
            None => JitProgram::new(prog.insns, &self.options, &Helpers(prog.helpers)),
        }
        .map_err(|e| match e {
            kops_jit::JitError::Insn { pc, msg } => load_err(pc, format!("JIT: {msg}")),
            kops_jit::JitError::Unsupported { pc, what } => load_err(pc, format!("JIT: unsupported {what}")),
            e => load_err(0, format!("JIT: {e}")),
        })?;
        Ok(Box::new(OurJitProg(jp)))
    }
}

struct OurJitProg(JitProgram);

impl Compiled for OurJitProg {
    fn run(&self, r1: u64, r2: u64, _env: &RunEnv<'_>) -> Result<u64, VmError> {
        // SAFETY: compiled only with a matching `Verified` token (see `compile`): the
        // kernel verifier accepted the program.
        Ok(unsafe { self.0.call(r1, r2) })
    }
    fn entry_address(&self) -> u64 {
        self.0.entry()
    }
}

/// Why the rbpf peer cannot run `insns` (None: it can). rbpf 0.3's JIT knows eBPF up to
/// the JMP32 class, helper calls by registered id, and nothing of v4 or of bpf-to-bpf
/// calls; some of what it lacks would panic or be silently miscompiled, so it is refused
/// here first.
pub fn rbpf_unsupported(insns: &[Insn]) -> Option<String> {
    let mut pc = 0;
    while pc < insns.len() {
        let i = insns[pc];
        let class = i.class();
        let why = if i.is_call() {
            match i.src {
                0 => Some("helper calls (the peer runs helper-free programs only)"),
                op::PSEUDO_CALL => Some("bpf-to-bpf calls"),
                _ => Some("kfunc/kinsn calls"),
            }
        } else if i.code == op::JMP | op::CALL | op::X {
            Some("callx")
        } else if class == op::STX && i.mode() == op::ATOMIC {
            Some("atomic instructions")
        } else if class == op::LDX && i.mode() == op::MEMSX {
            Some("sign-extending loads (v4)")
        } else if matches!(class, op::ALU | op::ALU64) && i.off != 0 {
            Some("signed division or movsx (v4)")
        } else if class == op::ALU64 && i.op() == op::END {
            Some("unconditional byte swap (v4)")
        } else if i.code == op::JMP32 | op::JA {
            Some("gotol (v4)")
        } else if class == op::LD && matches!(i.mode(), op::ABS | op::IND) {
            Some("legacy packet loads (LD_ABS/LD_IND have other semantics in rbpf)")
        } else {
            None
        };
        if let Some(w) = why {
            return Some(format!("{w} at instruction {pc}"));
        }
        pc += if i.is_ld_imm64() { 2 } else { 1 };
    }
    None
}

/// The `rbpf` crate's x86-64 JIT as a peer: it gets the runtime's final instructions (map
/// references and context accesses already resolved to host addresses) and r1 = our
/// context, so it runs with the same maps and packet as every other userspace engine.
pub struct RbpfEngine;

impl Engine for RbpfEngine {
    fn name(&self) -> &'static str {
        "rbpf"
    }
    fn native(&self) -> bool {
        true
    }
    fn compile(&self, prog: &ProgImage<'_>) -> Result<Box<dyn Compiled>, VmError> {
        kops_vm::verify::require(prog, "rbpf")?;
        let load_err = |msg: String| VmError::Load { prog: prog.name.to_string(), pc: 0, msg };
        if let Some(why) = rbpf_unsupported(prog.insns) {
            return Err(load_err(format!("rbpf does not support {why}")));
        }
        let bytes: Vec<u8> = prog.insns.iter().flat_map(|i| i.to_bytes()).collect();
        // rbpf borrows the program for the VM's lifetime; benchmark programs live until
        // the process ends, so leaking the few KB is the simple answer.
        let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
        // rbpf asserts (panics) when code outgrows its one-page buffer: catch that quietly.
        let hook = std::panic::take_hook();
        std::panic::set_hook(Box::new(|_| {}));
        let r = std::panic::catch_unwind(|| -> Result<rbpf::EbpfVmRaw<'static>, String> {
            let mut vm = rbpf::EbpfVmRaw::new(Some(bytes)).map_err(|e| e.to_string())?;
            vm.jit_compile().map_err(|e| e.to_string())?;
            Ok(vm)
        });
        std::panic::set_hook(hook);
        match r {
            Ok(Ok(vm)) => Ok(Box::new(RbpfProg(vm))),
            Ok(Err(e)) => Err(load_err(format!("rbpf: {e}"))),
            Err(_) => Err(load_err("rbpf's JIT panicked (its code buffer is one 4 KiB page: program too large)".into())),
        }
    }
}

struct RbpfProg(rbpf::EbpfVmRaw<'static>);

impl Compiled for RbpfProg {
    fn run(&self, r1: u64, _r2: u64, _env: &RunEnv<'_>) -> Result<u64, VmError> {
        // rbpf's raw VM passes the address of `mem` as r1; give it our context's address.
        // SAFETY: the slice is never read by rbpf itself (only its address and length are
        // passed to the JIT code), and the program is one the verifier (or the
        // interpreter) accepted on this context.
        let mem: &'static mut [u8] = unsafe { std::slice::from_raw_parts_mut(r1 as *mut u8, 1) };
        unsafe { self.0.execute_program_jit(mem) }.map_err(|e| VmError::Exec { prog: "rbpf".into(), pc: 0, msg: e.to_string() })
    }
}

/// A program on a userspace engine, in its own [`Vm`].
pub struct VmProg {
    vm: Vm,
    id: ProgId,
    input: ProgInput,
    ctl: Rc<Ctl>,
    /// Timed inputs when measuring over a traffic trace (else `input` alone).
    trace: Vec<ProgInput>,
}

impl VmProg {
    /// `insns`/`subprogs` of `prog` (original, or lowered for `kops`) on `engine`; native
    /// engines only after `verifier` accepted the program.
    pub fn load(obj: &Object, prog: &Program, engine: Box<dyn Engine>, input: &ProgInput, verifier: &Rc<dyn kops_vm::Verifier>) -> Result<VmProg, String> {
        let (eng, ctl) = RepeatEngine::new(engine);
        let vm = Vm::with_verifier(Some(obj), Box::new(eng), Box::new(verifier.clone())).map_err(|e| e.to_string())?;
        // The program record itself: the verifier needs its func_info (global functions).
        let id = vm.load_program(prog).map_err(|e| e.to_string())?;
        Ok(VmProg { vm, id, input: input.clone(), ctl, trace: Vec::new() })
    }

    /// Time over every input of `trace` (see [`KernelProg::with_trace`]).
    pub fn with_trace(mut self, trace: Vec<ProgInput>) -> VmProg {
        self.trace = trace;
        self
    }

    fn measure_one(&self, input: &ProgInput, repeat: u32) -> Result<f64, String> {
        self.ctl.repeat.set(repeat.max(1));
        self.vm.run(self.id, input).map_err(|e| e.to_string())?;
        Ok(self.ctl.elapsed_ns.get() as f64 / repeat.max(1) as f64)
    }

    /// The program's final instructions (maps resolved, context accesses rewritten).
    pub fn final_insns(&self) -> Vec<Insn> {
        self.vm.program(self.id).map(|p| p.insns.clone()).unwrap_or_default()
    }

    /// Maps that can be read back, by name.
    pub fn comparable_maps(&self) -> Vec<String> {
        self.vm
            .maps()
            .filter(|m| kops_vm::maps::comparable(m.def.map_type))
            .map(|m| m.def.name.clone())
            .collect()
    }

    /// One run. Call on a fresh `VmProg` (maps as the object defines them).
    pub fn outcome(&self, compare: &[String]) -> Result<Outcome, String> {
        self.ctl.repeat.set(1);
        let r = self.vm.run(self.id, &self.input).map_err(|e| e.to_string())?;
        let state = self.vm.snapshot_maps(compare);
        Ok(Outcome { r0: r.r0, data_out: Some(r.data_out), maps: state })
    }
}

impl Runner for VmProg {
    fn measure(&mut self, repeat: u32) -> Result<f64, String> {
        if self.trace.is_empty() {
            return self.measure_one(&self.input, repeat);
        }
        mean_over(&self.trace, |i| self.measure_one(i, repeat))
    }
}
