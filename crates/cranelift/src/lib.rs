//! Whole-program native code for eBPF through Cranelift: the `cranelift` runtime.
//!
//! The baseline JIT (`kops_jit`) translates one eBPF instruction at a time, as Linux does.
//! This engine instead hands the whole program to an optimizing compiler: each eBPF
//! function becomes a Cranelift function whose registers are SSA variables, so constants
//! propagate, dead code goes, registers are allocated freely and instructions are selected
//! across eBPF instruction boundaries. The price is trust: Cranelift is in the trusted
//! base of this runtime (docs/TRUST.md).
//!
//! What the generated code does is what the interpreter (`kops_vm::interp`) defines:
//!
//! - 32-bit ALU results are zero-extended; shifts are masked to the width; division by
//!   zero gives 0 and modulo by zero the dividend; signed `MIN / -1` is `MIN`, `MIN % -1`
//!   is 0; `movsx`, sign-extending loads, byte swaps of ISA v4.
//! - Atomics (add/or/and/xor with and without fetch, xchg, cmpxchg, load-acquire,
//!   store-release) are Cranelift's `atomic_rmw`/`atomic_cas`/`atomic_load`/`atomic_store`.
//! - bpf-to-bpf calls are real calls; every function has its own 512-byte frame (r10 at
//!   its end); r6-r9 of the caller are untouched by construction (SSA variables).
//! - Helpers are called at the addresses of the program's [`kops_vm::HelperTable`], the
//!   same functions every engine uses. Tail calls call the target's entry and return its
//!   r0 (at most [`kops_vm::MAX_TAIL_CALLS`] per run); LD_ABS/LD_IND read through
//!   [`rt::ld_abs`].
//! - Conformance mode (the suite's convention): helper 5 returning 0 ends the program with
//!   r0 = 0 from any depth; `callx` goes through a 256-entry helper table.
//!
//! Native code has no per-access checks: like the other native engines, this one compiles
//! only images that carry a [`kops_vm::Verified`] token.
//!
//! Kinsn sites ([`CraneliftEngine::with_kinsn`], [`kops_vm::KinsnSupport::Native`]): the
//! engine lowers the sites to their proof sequences itself (the form the verifier
//! checked) and compiles rotates, population counts and abs to `rotl`/`popcnt`/`iabs`
//! (the proof is translated too, then the result register redefined: Cranelift drops
//! what is dead) and select/select_cmp to `select` (the proof writes only the result, so
//! its branches are replaced); the other ops run as their proof sequences. Without a
//! registry, wrap the engine in [`kops_vm::Lowering`].
//!
//! Compiled code is cached in memory per thread under a SHA-256 of everything it depends
//! on (instructions, helper addresses, conformance mode, optimization level, kinsn mode);
//! [`stats`] reports compile times.

pub mod rt;
mod translate;

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::time::Instant;

use cranelift_codegen::ir::UserFuncName;
use cranelift_codegen::settings::{self, Configurable};
use cranelift_frontend::{FunctionBuilder, FunctionBuilderContext};
use cranelift_jit::{JITBuilder, JITModule};
use cranelift_module::{FuncId, Linkage, Module};
use kops_isa::Insn;
use kops_vm::{Compiled, Engine, HelperTable, ProgImage, RunEnv, VmError};
use sha2::{Digest, Sha256};

use translate::{Abi, FnTranslator, Func, NativeOp, NativeSite, Program, Runtime};

/// A compile error at an instruction (or 0 for the whole program).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("insn {pc}: {msg}")]
pub struct Error {
    pub pc: usize,
    pub msg: String,
}

impl Error {
    pub(crate) fn at(pc: usize, msg: String) -> Error {
        Error { pc, msg }
    }
}

/// How the engine runs Cranelift.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Config {
    pub level: OptLevel,
    /// Run Cranelift's IR verifier on every function (default: with `KOPS_CRANELIFT_VERIFY`
    /// set; the tests turn it on).
    pub verify_ir: bool,
}

impl Default for Config {
    fn default() -> Config {
        Config { level: OptLevel::Speed, verify_ir: std::env::var_os("KOPS_CRANELIFT_VERIFY").is_some() }
    }
}

/// Cranelift's optimization level for this engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OptLevel {
    /// `opt_level=none`.
    None,
    /// `opt_level=speed` (default).
    Speed,
}

/// What one compilation cost and produced.
#[derive(Debug, Clone, PartialEq)]
pub struct CompileStat {
    pub name: String,
    /// CPU time of the compiling thread (IR, Cranelift, linking), in microseconds: time
    /// spent descheduled on a loaded machine does not count; 0 on a cache hit.
    pub micros: f64,
    /// Wall time of the same, in microseconds.
    pub wall_micros: f64,
    /// Bytes of machine code of all functions.
    pub code_bytes: usize,
    /// Cranelift functions (eBPF functions, plus the entry's internal copy when called).
    pub functions: usize,
    /// Served from the in-memory cache.
    pub cached: bool,
    /// kinsn sites compiled to a Cranelift operation (rotl, popcnt, iabs, select).
    pub native_sites: usize,
}

thread_local! {
    static STATS: RefCell<Vec<CompileStat>> = const { RefCell::new(Vec::new()) };
    static CACHE: RefCell<HashMap<[u8; 32], Rc<Code>>> = RefCell::new(HashMap::new());
}

/// Most compiled images the per-thread cache keeps (it is emptied when full).
const CACHE_CAP: usize = 512;

/// Compile statistics of this thread, oldest first (at most the last 4096).
pub fn stats() -> Vec<CompileStat> {
    STATS.with(|s| s.borrow().clone())
}

/// The last compilation of program `name` on this thread.
pub fn last_stat(name: &str) -> Option<CompileStat> {
    STATS.with(|s| s.borrow().iter().rev().find(|c| c.name == name).cloned())
}

fn record(stat: CompileStat) {
    STATS.with(|s| {
        let mut s = s.borrow_mut();
        if s.len() >= 4096 {
            s.drain(..1024);
        }
        s.push(stat);
    });
}

/// The Cranelift engine (`--runtime cranelift`).
pub struct CraneliftEngine {
    opt: Config,
    cache: bool,
    /// With a registry the engine takes kinsn sites itself ([`kops_vm::KinsnSupport::Native`]):
    /// rotates, population counts, abs and selects become Cranelift's `rotl`/`popcnt`/`iabs`/`select`, every other op
    /// its proof sequence.
    registry: Option<kops_kinsn::Registry>,
}

impl CraneliftEngine {
    /// Optimizing, with the in-memory cache; programs with kinsn sites are refused (wrap
    /// the engine in [`kops_vm::Lowering`], or use [`CraneliftEngine::with_kinsn`]).
    pub fn new() -> CraneliftEngine {
        CraneliftEngine { opt: Config::default(), cache: true, registry: None }
    }
    pub fn with_opt(opt: OptLevel) -> CraneliftEngine {
        CraneliftEngine { opt: Config { level: opt, ..Config::default() }, cache: true, registry: None }
    }
    /// With Cranelift's IR verifier on every function.
    pub fn verify_ir(mut self) -> CraneliftEngine {
        self.opt.verify_ir = true;
        self
    }
    /// Takes programs with kinsn sites of `registry`'s ops and compiles the sites itself.
    pub fn with_kinsn(mut self, registry: kops_kinsn::Registry) -> CraneliftEngine {
        self.registry = Some(registry);
        self
    }
    /// Without the compiled-image cache (every compile is measured).
    pub fn uncached(mut self) -> CraneliftEngine {
        self.cache = false;
        self
    }
}

impl Default for CraneliftEngine {
    fn default() -> Self {
        CraneliftEngine::new()
    }
}

impl Engine for CraneliftEngine {
    fn name(&self) -> &'static str {
        "cranelift"
    }

    fn native(&self) -> bool {
        true
    }

    fn kinsn(&self) -> kops_vm::KinsnSupport<'_> {
        match &self.registry {
            Some(r) => kops_vm::KinsnSupport::Native(r),
            None => kops_vm::KinsnSupport::None,
        }
    }

    fn compile(&self, prog: &ProgImage<'_>) -> Result<Box<dyn Compiled>, VmError> {
        kops_vm::verify::require(prog, "cranelift")?;
        let load_err = |e: Error| VmError::Load { prog: prog.name.to_string(), pc: e.pc, msg: format!("cranelift: {}", e.msg) };
        let key = cache_key(prog.insns, prog.helpers, prog.conformance, self.opt, self.registry.is_some());
        let hit = if self.cache { CACHE.with(|c| c.borrow().get(&key).cloned()) } else { None };
        let code = match hit {
            Some(c) => {
                record(CompileStat {
                    name: prog.name.to_string(),
                    micros: 0.0,
                    wall_micros: 0.0,
                    code_bytes: c.code_bytes,
                    functions: c.functions,
                    cached: true,
                    native_sites: c.native_sites,
                });
                c
            }
            None => {
                let (t, cpu) = (Instant::now(), thread_cpu_ns());
                let c = match &self.registry {
                    Some(reg) => {
                        let starts: Vec<usize> = prog.subprogs.iter().map(|s| s.start).collect();
                        compile_with_sites(prog.insns, &starts, reg, prog.helpers, prog.conformance, self.opt)
                    }
                    None => compile(prog.insns, prog.helpers, prog.conformance, self.opt),
                };
                let c = Rc::new(c.map_err(load_err)?);
                let wall_micros = t.elapsed().as_secs_f64() * 1e6;
                let micros = thread_cpu_ns().saturating_sub(cpu) as f64 / 1e3;
                record(CompileStat {
                    name: prog.name.to_string(),
                    micros,
                    wall_micros,
                    code_bytes: c.code_bytes,
                    functions: c.functions,
                    cached: false,
                    native_sites: c.native_sites,
                });
                if self.cache {
                    CACHE.with(|m| {
                        let mut m = m.borrow_mut();
                        if m.len() >= CACHE_CAP {
                            m.clear();
                        }
                        m.insert(key, c.clone());
                    });
                }
                c
            }
        };
        Ok(Box::new(CraneliftProg { code }))
    }
}

/// CPU time of the calling thread, in ns (CLOCK_THREAD_CPUTIME_ID).
fn thread_cpu_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: plain syscall writing into `ts`; this clock id always exists on Linux.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// SHA-256 of what compiled code depends on.
fn cache_key(insns: &[Insn], helpers: &HelperTable, conformance: bool, opt: Config, sites: bool) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"kops-cranelift 1\0");
    h.update([conformance as u8, opt.level as u8, sites as u8]);
    h.update((insns.len() as u64).to_le_bytes());
    for i in insns {
        h.update(i.to_bytes());
    }
    for d in helpers.iter() {
        h.update(d.id.to_le_bytes());
        h.update((d.func as usize as u64).to_le_bytes());
    }
    h.finalize().into()
}

/// Machine code of one program: the JIT module that owns it, freed on drop.
pub struct Code {
    module: Option<JITModule>,
    entry: usize,
    /// The conformance callx table (its address is in the code).
    _callx: Option<Box<[u64]>>,
    pub code_bytes: usize,
    pub functions: usize,
    uses_tail_calls: bool,
    uses_ld_abs: bool,
    pub native_sites: usize,
}

impl Drop for Code {
    fn drop(&mut self) {
        if let Some(m) = self.module.take() {
            // SAFETY: the last owner of this code is going away (every CraneliftProg holds
            // an Rc, and programs that tail-call into it belong to the same Vm, which drops
            // its programs together), so no function of the module runs or is called again.
            unsafe { m.free_memory() };
        }
    }
}

struct CraneliftProg {
    code: Rc<Code>,
}

impl Compiled for CraneliftProg {
    fn run(&self, r1: u64, r2: u64, env: &RunEnv<'_>) -> Result<u64, VmError> {
        let c = &*self.code;
        let _state = rt::RunScope::enter(env, r1, c.uses_tail_calls, c.uses_ld_abs);
        // SAFETY: `entry` is the finalized entry function of this module, with the host ABI
        // `fn(u64, u64) -> u64`; the program was accepted by a verifier (see `compile`), so
        // it stays inside the memory the Vm gives it and terminates.
        let f: extern "C" fn(u64, u64) -> u64 = unsafe { std::mem::transmute(c.entry) };
        Ok(f(r1, r2))
    }
    fn entry_address(&self) -> u64 {
        self.code.entry as u64
    }
}

/// The ISA: the host's, optimizing.
fn isa(opt: Config) -> Result<cranelift_codegen::isa::OwnedTargetIsa, Error> {
    let e = |m: String| Error::at(0, m);
    let mut fb = settings::builder();
    fb.set("opt_level", if opt.level == OptLevel::Speed { "speed" } else { "none" }).map_err(|x| e(x.to_string()))?;
    fb.set("use_colocated_libcalls", "false").map_err(|x| e(x.to_string()))?;
    fb.set("is_pic", "false").map_err(|x| e(x.to_string()))?;
    fb.set("enable_verifier", if opt.verify_ir { "true" } else { "false" }).map_err(|x| e(x.to_string()))?;
    // Conformance-mode callees return r0, the unwind flag and r1-r5.
    fb.set("enable_multi_ret_implicit_sret", "true").map_err(|x| e(x.to_string()))?;
    let ib = cranelift_native::builder().map_err(|m| e(format!("host not supported by Cranelift: {m}")))?;
    ib.finish(settings::Flags::new(fb)).map_err(|x| e(x.to_string()))
}

/// Compiles final instructions with kinsn sites: the sites are lowered to their proof
/// sequences (`kops_kinsn::lower`, the form the verifier checked), and the sites of ops
/// with a Cranelift operation are compiled to it (see `translate::NativeSite`). Errors
/// name slots of `insns`.
pub fn compile_with_sites(
    insns: &[Insn],
    subprog_starts: &[usize],
    registry: &kops_kinsn::Registry,
    helpers: &HelperTable,
    conformance: bool,
    opt: Config,
) -> Result<Code, Error> {
    use kops_einsn::{Abs, OpInfo, Popcount32, Popcount64, Rotate32, Rotate64, Select, SelectCmp};
    use kops_kinsn::payload::Payload;
    if !insns.iter().any(|i| i.is_kinsn_sidecar() || i.is_kinsn_call()) {
        return compile(insns, helpers, conformance, opt);
    }
    let l = kops_kinsn::lower(insns, subprog_starts, &[], &[], registry).map_err(|e| Error::at(0, format!("kinsn: {e}")))?;
    let mut sites = Vec::new();
    for r in &l.regions {
        let (start, end) = (r.start, r.end());
        let op = match r.op_id {
            Rotate64::ID => Rotate64::decode(r.payload).ok().map(|p| NativeOp::Rotate { w: 64, dst: p.dst, src: p.src, k: p.k }),
            Rotate32::ID => Rotate32::decode(r.payload).ok().map(|p| NativeOp::Rotate { w: 32, dst: p.dst, src: p.src, k: p.k }),
            Popcount64::ID => Popcount64::decode(r.payload).ok().map(|p| NativeOp::Popcount { w: 64, dst: p.dst, src: p.src }),
            Popcount32::ID => Popcount32::decode(r.payload).ok().map(|p| NativeOp::Popcount { w: 32, dst: p.dst, src: p.src }),
            Abs::ID => Abs::decode(r.payload).ok().map(|p| NativeOp::Abs { w: if p.alu32 { 32 } else { 64 }, dst: p.dst, src: p.src }),
            Select::ID => Select::decode(r.payload).ok().map(|p| NativeOp::Select {
                dst: p.dst,
                cond: p.cond,
                a: p.a,
                b: p.b,
                cond32: p.cond32,
                mov32: p.mov32,
            }),
            SelectCmp::ID => SelectCmp::decode(r.payload).ok().map(|p| NativeOp::SelectCmp {
                dst: p.dst,
                lhs: p.lhs,
                rhs: p.rhs,
                src: p.src,
                cmp: p.cmp,
                jmp32: p.jmp32,
                mov32: p.mov32,
            }),
            _ => None,
        };
        if let Some(op) = op {
            sites.push(NativeSite { start, end, op });
        }
    }
    compile_inner(&l.insns, &sites, helpers, conformance, opt)
        .map_err(|e| Error { pc: l.orig_of.get(e.pc).copied().unwrap_or(e.pc), msg: e.msg })
}

/// Compiles final instructions (see `kops_vm::ProgImage::insns`) to native code.
pub fn compile(insns: &[Insn], helpers: &HelperTable, conformance: bool, opt: Config) -> Result<Code, Error> {
    compile_inner(insns, &[], helpers, conformance, opt)
}

fn compile_inner(insns: &[Insn], sites: &[NativeSite], helpers: &HelperTable, conformance: bool, opt: Config) -> Result<Code, Error> {
    if insns.is_empty() {
        return Err(Error::at(0, "empty program".into()));
    }
    // The instruction checks every engine shares.
    let mut pc = 0;
    while pc < insns.len() {
        let i = insns[pc];
        if i.is_kinsn_sidecar() || i.is_kinsn_call() {
            return Err(Error::at(pc, "kinsn site: the runtime lowers sites before this engine sees them".into()));
        }
        kops_vm::interp::validate(&i, conformance).map_err(|m| Error::at(pc, m))?;
        pc += if i.is_ld_imm64() { 2 } else { 1 };
    }
    let funcs = translate::split_functions(insns)?;
    let tail_id = (!conformance).then_some(kops_vm::helpers::TAIL_CALL);
    let unwind_id = conformance.then_some(kops_vm::helpers::UNWIND);
    let uses_tail_calls = tail_id.is_some_and(|t| insns.iter().any(|i| i.is_helper_call() && i.imm == t as i32));
    let uses_ld_abs = insns.iter().any(|i| i.class() == kops_isa::op::LD && matches!(i.mode(), kops_isa::op::ABS | kops_isa::op::IND));
    let callx: Option<Box<[u64]>> =
        conformance.then(|| (0..translate::CALLX_SLOTS as u32).map(|id| helpers.address(id).unwrap_or(0)).collect());
    let helper = |id: u32| helpers.address(id);
    let runtime = Runtime {
        helper: &helper,
        tail_lookup: rt::tail_lookup as extern "C" fn(u64, u64) -> u64 as usize as u64,
        ld_abs: rt::ld_abs as extern "C" fn(u64, i64) -> u64 as usize as u64,
        callx_table: callx.as_ref().map_or(0, |t| t.as_ptr() as u64),
    };
    let isa = isa(opt)?;
    let frontend = isa.frontend_config();
    let program = Program { insns, sites, conformance, helper_tail_call: tail_id, unwind_helper: unwind_id, frontend };
    let mut module = JITModule::new(JITBuilder::with_isa(isa, cranelift_module::default_libcall_names()));
    let merr = |e: cranelift_module::ModuleError| Error::at(0, format!("Cranelift: {e}"));
    // Declare: the entry, then an internal function per call target.
    let called: Vec<usize> = {
        let mut v: Vec<usize> =
            insns.iter().enumerate().filter(|(_, i)| i.is_pseudo_call()).map(|(pc, i)| (pc as i64 + 1 + i.imm as i64) as usize).collect();
        v.sort_unstable();
        v.dedup();
        v
    };
    let entry_id = module.declare_function("entry", Linkage::Local, &translate::signature(Abi::Entry, conformance)).map_err(merr)?;
    let mut internal: Vec<(usize, FuncId)> = Vec::new();
    for &t in &called {
        let id =
            module.declare_function(&format!("f{t}"), Linkage::Local, &translate::signature(Abi::Internal, conformance)).map_err(merr)?;
        internal.push((t, id));
    }
    let mut ctx = module.make_context();
    let mut fbc = FunctionBuilderContext::new();
    let mut code_bytes = 0;
    let mut jobs: Vec<(FuncId, Func, Abi)> = vec![(entry_id, funcs[0], Abi::Entry)];
    for &(t, id) in &internal {
        let f = *funcs.iter().find(|f| f.start == t).ok_or_else(|| Error::at(t, "call target starts no function".into()))?;
        jobs.push((id, f, Abi::Internal));
    }
    for (k, &(id, f, abi)) in jobs.iter().enumerate() {
        ctx.clear();
        ctx.func.signature = translate::signature(abi, conformance);
        ctx.func.name = UserFuncName::user(0, k as u32);
        let callees: Vec<(usize, cranelift_codegen::ir::FuncRef)> =
            internal.iter().map(|&(t, fid)| (t, module.declare_func_in_func(fid, &mut ctx.func))).collect();
        {
            let b = FunctionBuilder::new(&mut ctx.func, &mut fbc);
            FnTranslator::new(b, &program, &runtime, f, abi, callees)?.translate()?;
        }
        module.define_function(id, &mut ctx).map_err(|e| match e {
            cranelift_module::ModuleError::Compilation(c) => Error::at(f.start, format!("Cranelift: {c:?}")),
            e => merr(e),
        })?;
        code_bytes += ctx.compiled_code().map_or(0, |c| c.code_buffer().len());
        // KOPS_CRANELIFT_DUMP=DIR: the optimized CLIF and machine code of every function.
        if let Some(dir) = std::env::var_os("KOPS_CRANELIFT_DUMP") {
            let base = std::path::Path::new(&dir).join(format!("f{}-{k}", f.start));
            let _ = std::fs::write(base.with_extension("clif"), ctx.func.display().to_string());
            if let Some(c) = ctx.compiled_code() {
                let _ = std::fs::write(base.with_extension("bin"), c.code_buffer());
            }
        }
    }
    module.clear_context(&mut ctx);
    module.finalize_definitions().map_err(merr)?;
    let entry = module.get_finalized_function(entry_id) as usize;
    let native_sites = sites.len();
    Ok(Code { module: Some(module), entry, _callx: callx, code_bytes, functions: jobs.len(), uses_tail_calls, uses_ld_abs, native_sites })
}
