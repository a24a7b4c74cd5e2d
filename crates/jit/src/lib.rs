//! Baseline x86-64 JIT for eBPF, faithful to Linux's `arch/x86/net/bpf_jit_comp.c`
//! (trusted code).
//!
//! With no kinsn in the program it emits what the running kernel's JIT emits for the same
//! (xlated) instructions: the same register map ([`REGMAP`]), the same prologue (patch nops,
//! frame, `sub rsp, depth`, pushes of the callee-saved registers the function uses), the same
//! lowering per instruction, one native jump per eBPF jump with short forms chosen by the
//! kernel's size-convergence loop, one epilogue per function that later exits jump to,
//! `call rel32` for helpers and bpf-to-bpf calls (each subprogram its own function).
//!
//! Deliberate differences from the kernel, all at the edges:
//! - `ret` instead of `jmp __x86_return_thunk` in our runtime ([`JitOptions::return_thunk`]
//!   reproduces the kernel's `jmp rel32` for comparisons);
//! - helper calls: the kernel's `call rel32` goes to a per-helper trampoline in the image
//!   that aligns the stack for SysV code ([`CallMode::Trampoline`], the runtime default);
//!   [`CallMode::Rel32`] calls the helper directly (image placed within ±2 GB), and
//!   [`CallMode::Absolute`] uses `movabs r11, addr; call r11`;
//! - tail calls find their target through a runtime lookup function instead of reading
//!   `struct bpf_array` ([`TailCallMode`]); counter and frame handling as the kernel;
//! - runtime extras the kernel does not need (it rewrites or rejects these before its JIT
//!   runs): `LD_ABS`/`LD_IND` through a runtime loader, the conformance suite's "unwind"
//!   helper and `callx` through a helper table (both end the program from any depth via
//!   r12, which holds the main frame's stack pointer), guards for division by an
//!   immediate 0, and refusing functions that can run off their end.
//!
//! Kinsn sites: [`compile_kinsn`] takes the program with its sites and the op registry;
//! the JIT itself lowers the sites, computes the registers dead after each one and calls
//! each op's checked native emit (`kops_kinsn::plan_x86`: registry lookup, payload
//! validation, emit into a scratch buffer bounded by the op's maximum size). It accepts no
//! native bytes from outside.
//!
//! Module map: [`fixup`] (the verifier's divide and cmpxchg rewrites), [`stack`] (stack
//! depth), `x64` (the lowering per instruction class and the convergence loop), [`exec`]
//! (W^X executable memory). Untrusted helpers (random programs, xlated comparison,
//! disassembly) are in the `kops-jit-tools` crate; docs/TRUST.md lists the trusted files.

pub mod exec;
pub mod fixup;
pub mod stack;
mod x64;

use kops_isa::Insn;
pub use kops_x86::{CpuFeatures, Feature, Reg};

pub use x64::compile;

/// BPF r0..r10 -> x86-64, as the kernel's `reg2hex`: r0 rax, r1 rdi, r2 rsi, r3 rdx, r4 rcx,
/// r5 r8, r6 rbx, r7 r13, r8 r14, r9 r15, r10 rbp.
pub const REGMAP: [Reg; 11] = [
    Reg::Rax,
    Reg::Rdi,
    Reg::Rsi,
    Reg::Rdx,
    Reg::Rcx,
    Reg::R8,
    Reg::Rbx,
    Reg::R13,
    Reg::R14,
    Reg::R15,
    Reg::Rbp,
];
/// `BPF_REG_AX` (the verifier's hidden register 11): x86 r10.
pub const REG_AX: Reg = Reg::R10;
/// `AUX_REG`: the JIT's scratch register, x86 r11. Kinsn native emits may clobber it.
pub const AUX_REG: Reg = Reg::R11;
/// Holds the main frame's stack pointer when the program can unwind (not a BPF register;
/// callee-saved, so helpers preserve it).
pub const UNWIND_REG: Reg = Reg::R12;

/// x86 register of BPF register `r` (0..=10, or 11 = `BPF_REG_AX`).
pub fn x86_reg(r: u8) -> Option<Reg> {
    match r {
        0..=10 => Some(REGMAP[r as usize]),
        11 => Some(REG_AX),
        _ => None,
    }
}

/// A range of slots compiled as native bytes: a kinsn site whose proof sequence occupies
/// `insns[start..start + len]` in the lowered program. Made only by [`compile_kinsn`] from
/// the checked emit of the site's op.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct NativeRegion {
    pub start: usize,
    pub len: usize,
    pub code: Vec<u8>,
}

/// A program's kinsn sites as the JIT needs them: the registry that names their ops, and
/// the program's subprogram starts and func_info (which the lowering keeps in step).
#[derive(Clone, Copy)]
pub struct Kinsn<'a> {
    pub registry: &'a kops_kinsn::Registry,
    pub subprog_starts: &'a [usize],
    pub func_info: &'a [kops_object::FuncInfo],
}

/// A program with kinsn sites compiled by [`compile_kinsn`]: the image (its
/// `insn_ranges` are per slot of `lowered.insns`), the lowered program it compiled, and per
/// region of `lowered` the registers dead after it and its native code or fallback.
#[derive(Debug, Clone)]
pub struct KinsnImage {
    pub image: JitImage,
    pub lowered: kops_kinsn::Lowered,
    pub plans: Vec<kops_kinsn::RegionPlan>,
}

/// Compile a program with kinsn sites (sidecar + kinsn call pairs): the sites are lowered
/// to their proof sequences, liveness after each site decides `dead_after`, and each site
/// whose op has a native form for these CPU features becomes that op's checked emit in
/// place of its proof sequence; the others compile their proof sequence (fallback).
/// Programs without sites compile exactly as with [`compile`]. Errors name slots of
/// `insns` (a slot of a site's proof sequence: the site's first slot).
pub fn compile_kinsn(insns: &[Insn], kinsn: &Kinsn<'_>, opts: &JitOptions, res: &dyn Resolver) -> Result<KinsnImage, JitError> {
    let (lowered, plans) =
        kops_kinsn::plan_x86(insns, kinsn.subprog_starts, kinsn.func_info, kinsn.registry, opts.features, &REGMAP, AUX_REG)?;
    let regions: Vec<NativeRegion> = lowered
        .regions
        .iter()
        .zip(&plans)
        .filter_map(|(r, p)| p.native.clone().map(|code| NativeRegion { start: r.start, len: r.len, code }))
        .collect();
    let orig = |pc: usize| lowered.orig_of.get(pc).copied().unwrap_or(pc);
    // The exception callback's slot, in the lowered program.
    let mut lowered_opts;
    let mut opts = opts;
    if let Some(Throw { helper, callback: Some(cb) }) = opts.throw {
        let cb = lowered.lowered_of.get(cb).copied().ok_or_else(|| JitError::Other(format!("exception callback slot {cb} is outside the program")))?;
        lowered_opts = opts.clone();
        lowered_opts.throw = Some(Throw { helper, callback: Some(cb) });
        opts = &lowered_opts;
    }
    let image = x64::compile_regions(&lowered.insns, &regions, opts, res).map_err(|e| match e {
        JitError::Insn { pc, msg } => JitError::Insn { pc: orig(pc), msg },
        JitError::Unsupported { pc, what } => JitError::Unsupported { pc: orig(pc), what },
        e => e,
    })?;
    Ok(KinsnImage { image, lowered, plans })
}

/// How helper calls reach their target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallMode {
    /// `call rel32` straight to the helper, as the kernel. The image must be linked at a
    /// base within ±2 GB of every helper ([`JitImage::link`] checks). The kernel's helpers
    /// need no stack alignment; userspace (SysV) functions may, so this is for images that
    /// are compared, not run, unless the helpers are known not to care.
    Rel32,
    /// `call rel32` to a per-helper trampoline at the end of the image that aligns the
    /// stack to 16 bytes (SysV) and calls the helper through r11. Same instruction count
    /// and size at the call site as the kernel; what the runtime uses.
    Trampoline,
    /// `movabs r11, addr; call r11`: one more instruction per call, no stack alignment.
    Absolute,
}

/// How `bpf_tail_call` is lowered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TailCallMode {
    /// The kernel's inline sequence reading the program array at fixed offsets.
    Kernel(TailCallLayout),
    /// Our runtime: `extern "C" fn(map: u64, index: u64) -> u64` at this address returns
    /// the target's entry address (0: no program there / index out of range); the rest
    /// (counter, frame teardown, jump past the target's prologue head) as the kernel.
    Lookup(u64),
}

/// Tail-call support: where the JIT finds a program array's fields (our runtime's layout).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TailCallLayout {
    /// Offset of the u32 `max_entries` in the array object.
    pub max_entries_off: i32,
    /// Offset of the `*const Prog` slots (8 bytes each, null = empty).
    pub ptrs_off: i32,
    /// Offset of the entry-point address inside a program object.
    pub func_off: i32,
}

/// Stand-in for `&this_cpu_off` in xlated comparisons (any 32-bit value encodes the same).
pub const FAKE_THIS_CPU_OFF: u32 = 0x0001_f000;

/// The running kernel's layout (`struct bpf_array` / `struct bpf_prog` of Linux 6.18 as
/// its jited tail calls show: `cmp [rsi+0x4c], edx`, `mov rcx, [rsi+rdx*8+0x138]`,
/// `mov rcx, [rcx+0x48]`), for `jit-diff`.
pub const KERNEL_TAIL_CALL_LAYOUT: TailCallLayout =
    TailCallLayout { max_entries_off: 0x4c, ptrs_off: 0x138, func_off: 0x48 };

#[derive(Debug, Clone)]
pub struct JitOptions {
    /// CPU features for JIT-time choices (BMI2 shifts). Default: detected, masked by
    /// `KOPS_DISABLE_FEATURES`.
    pub features: CpuFeatures,
    pub call_mode: CallMode,
    /// Apply the verifier's divide fixups ([`fixup`]). Off for programs that already went
    /// through the kernel verifier (xlated dumps contain them).
    pub div_fixups: bool,
    /// Helper id with the conformance suite's "unwind" semantics: when it returns 0, the
    /// whole program ends with r0 = 0.
    pub unwind_helper: Option<i32>,
    /// `bpf_throw` (see [`Throw`]).
    pub throw: Option<Throw>,
    /// `callx` support: helper table size (ids `0..n`); the JIT builds the table itself
    /// from [`Resolver::helper`].
    pub callx_helpers: Option<u32>,
    /// Helper id that is `bpf_tail_call` and how to lower it.
    pub tail_call: Option<(i32, TailCallMode)>,
    /// Stack depth per function: computed ([`stack::stack_depth`]) or fixed.
    pub stack_depth: Option<u32>,
    /// The program passed the kernel verifier: the stack-depth analysis may rely on it
    /// (see [`stack`]). Off for our runtime, which also runs unverified programs.
    pub verified: bool,
    /// Return as the kernel does with retbleed mitigations: `jmp rel32` to a return thunk
    /// (here a `ret` in the image) instead of `ret`; and jump indirectly (tail calls) as
    /// with retpolines: `jmp rel32` to a `jmp rcx` thunk. Same sizes as the kernel's image.
    pub return_thunk: bool,
    /// Slots (of the program given to [`compile`]) whose tail call the kernel compiles as
    /// a direct, patchable jump (constant key: `emit_bpf_tail_call_direct`). Only for
    /// comparisons (`kops_jit_tools::xlated::direct_tail_calls`); our runtime patches nothing.
    pub direct_tail_calls: Vec<usize>,
    /// Legacy packet loads (`LD_ABS`/`LD_IND`): address of
    /// `extern "C" fn(size: u64, off: i64) -> u64` that returns the big-endian value, or a
    /// value with bit 63 set when the offset is out of range, which ends the program with
    /// r0 = 0 (the kernel's semantics). None: such loads are rejected.
    pub ld_abs: Option<u64>,
    /// Lower per-CPU address moves (`mov dst, src` with `off = -1`, from the verifier's
    /// helper inlining) as the kernel: `add dst, gs:[this_cpu_off]` with this address.
    /// Only meaningful for xlated programs; None: such moves are rejected.
    pub percpu_off: Option<u32>,
}

impl JitOptions {
    /// Options for our runtime: features detected (errors on a bad
    /// `KOPS_DISABLE_FEATURES`), divide fixups on, rel32 helper calls.
    pub fn runtime() -> Result<JitOptions, kops_x86::FeatureError> {
        Ok(JitOptions {
            features: CpuFeatures::detect()?,
            call_mode: CallMode::Trampoline,
            div_fixups: true,
            unwind_helper: None,
            throw: None,
            callx_helpers: None,
            tail_call: None,
            stack_depth: None,
            verified: false,
            direct_tail_calls: Vec::new(),
            ld_abs: None,
            return_thunk: false,
            percpu_off: None,
        })
    }
    /// Options for JITing a kernel xlated dump for comparison (`kops_jit_tools::xlated`).
    pub fn kernel_xlated(features: CpuFeatures) -> JitOptions {
        JitOptions {
            features,
            call_mode: CallMode::Rel32,
            div_fixups: false,
            unwind_helper: None,
            throw: None,
            callx_helpers: None,
            tail_call: Some((12, TailCallMode::Kernel(KERNEL_TAIL_CALL_LAYOUT))),
            stack_depth: None,
            verified: true,
            direct_tail_calls: Vec::new(),
            ld_abs: None,
            return_thunk: true,
            percpu_off: Some(FAKE_THIS_CPU_OFF),
        }
    }
}

/// `bpf_throw`: calls of helper `helper` drop every frame down to the main one (as the
/// conformance unwind does), then call the exception callback (the function at slot
/// `callback`, r1 = cookie) and end the program with its r0; without a callback the
/// program ends with r0 = cookie (the kernel's default callback).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Throw {
    pub helper: i32,
    pub callback: Option<usize>,
}

/// What the JIT asks its environment.
pub trait Resolver {
    /// Address of helper `id`, or None if there is no such helper.
    fn helper(&self, id: i32) -> Option<u64>;
    /// Value of an `ld_imm64` with a pseudo `src_reg` (map pointers, map values, ...).
    /// `pc` is the slot index in the program given to [`compile`].
    fn ld_imm64(&self, pc: usize, lo: &Insn, hi: &Insn) -> Result<u64, String>;
}

/// A compiled program, not yet placed in memory.
#[derive(Debug, Clone)]
pub struct JitImage {
    /// All functions back to back (main first), then the runtime stubs and data.
    pub code: Vec<u8>,
    pub funcs: Vec<FuncLayout>,
    /// For each slot of the input program: the native bytes `[start, end)` it became
    /// (empty for the data slot of ld_imm64 and for instructions the JIT drops, e.g. `ja +0`).
    pub insn_ranges: Vec<(u32, u32)>,
    /// `call rel32` fields that need the final address: (offset of the rel32, target).
    pub relocs: Vec<(usize, u64)>,
    /// Absolute addresses of in-image positions to fill at link time:
    /// (offset of an 8-byte slot, image offset it must point to).
    pub abs_slots: Vec<(usize, usize)>,
    /// Convergence passes of the slowest function.
    pub passes: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FuncLayout {
    /// First slot and one past the last, in the input program.
    pub insn_start: usize,
    pub insn_end: usize,
    /// Native offset and length in [`JitImage::code`].
    pub code_start: usize,
    pub code_len: usize,
    pub stack_depth: u32,
    /// Byte length of the prologue.
    pub prologue_len: usize,
}

impl JitImage {
    /// The bytes as they must be at address `base`: rel32 helper calls and in-image
    /// absolute slots resolved.
    pub fn link(&self, base: u64) -> Result<Vec<u8>, JitError> {
        let mut code = self.code.clone();
        for &(at, target) in &self.relocs {
            let next = base.wrapping_add(at as u64 + 4);
            let rel = target.wrapping_sub(next) as i64;
            if rel < i32::MIN as i64 || rel > i32::MAX as i64 {
                return Err(JitError::OutOfRange { target, base });
            }
            code[at..at + 4].copy_from_slice(&(rel as i32).to_le_bytes());
        }
        for &(at, off) in &self.abs_slots {
            code[at..at + 8].copy_from_slice(&(base + off as u64).to_le_bytes());
        }
        Ok(code)
    }
    /// Every helper address the image calls with rel32.
    pub fn call_targets(&self) -> Vec<u64> {
        self.relocs.iter().map(|r| r.1).collect()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JitError {
    #[error("instruction {pc}: {msg}")]
    Insn { pc: usize, msg: String },
    #[error("instruction {pc}: unsupported instruction {what}")]
    Unsupported { pc: usize, what: String },
    #[error("helper at {target:#x} is not within ±2 GB of the image at {base:#x}")]
    OutOfRange { target: u64, base: u64 },
    #[error("JIT did not converge after {passes} passes")]
    NoConvergence { passes: u32 },
    #[error("kinsn: {0}")]
    Kinsn(#[from] kops_kinsn::PlanError),
    #[error("{0}")]
    Other(String),
}

/// A compiled program in executable memory.
pub struct JitProgram {
    pub image: JitImage,
    mem: exec::ExecMem,
}

impl JitProgram {
    /// Compile, place, link and protect (read+execute).
    pub fn new(insns: &[Insn], opts: &JitOptions, res: &dyn Resolver) -> Result<JitProgram, JitError> {
        JitProgram::place(compile(insns, opts, res)?, opts)
    }
    /// [`JitProgram::new`] for a program with kinsn sites ([`compile_kinsn`]); also returns
    /// the lowered program and the plan per site.
    pub fn with_kinsn(
        insns: &[Insn],
        kinsn: &Kinsn<'_>,
        opts: &JitOptions,
        res: &dyn Resolver,
    ) -> Result<(JitProgram, kops_kinsn::Lowered, Vec<kops_kinsn::RegionPlan>), JitError> {
        let k = compile_kinsn(insns, kinsn, opts, res)?;
        Ok((JitProgram::place(k.image, opts)?, k.lowered, k.plans))
    }
    fn place(image: JitImage, opts: &JitOptions) -> Result<JitProgram, JitError> {
        let mem = if opts.call_mode == CallMode::Rel32 && !image.relocs.is_empty() {
            exec::ExecMem::reserve_near(image.code.len(), &image.call_targets())
                .ok_or_else(|| JitError::Other("no free memory within ±2 GB of the helpers".into()))?
        } else {
            exec::ExecMem::reserve(image.code.len(), None, false).map_err(|e| JitError::Other(format!("mmap: {e}")))?
        };
        let code = image.link(mem.addr())?;
        let mem = mem.finish(&code).map_err(|e| JitError::Other(format!("mprotect: {e}")))?;
        Ok(JitProgram { image, mem })
    }
    /// Address of the main function (what tail calls jump into).
    pub fn entry(&self) -> u64 {
        self.mem.addr()
    }
    /// The code as it is in memory.
    pub fn code(&self) -> &[u8] {
        &self.mem.bytes()[..self.image.code.len()]
    }
    /// Run with r1, r2 set; returns r0.
    ///
    /// # Safety
    /// The program must have been checked (by a verifier or by construction) to access only
    /// memory it may, and its helpers must accept the arguments it passes.
    pub unsafe fn call(&self, r1: u64, r2: u64) -> u64 {
        let f: extern "C" fn(u64, u64) -> u64 = std::mem::transmute(self.mem.addr() as usize);
        f(r1, r2)
    }
}

/// Normalise `KOPS_DISABLE_FEATURES` errors etc. into `JitError`.
impl From<kops_x86::FeatureError> for JitError {
    fn from(e: kops_x86::FeatureError) -> Self {
        JitError::Other(e.to_string())
    }
}
