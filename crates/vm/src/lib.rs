//! Runtime for eBPF programs: the reference interpreter, maps, helpers and program
//! contexts, shared by every execution engine.
//!
//! # Model
//!
//! Pointers are **real host addresses** in every engine. A map pointer (`ld_imm64` src=5
//! after loading) is the address of a [`Map`]; a map value pointer is the address of the
//! value in stable storage; the context pointer is the address of our context structure
//! (see [`ctx`]). So the interpreter, a JIT and the helpers share the same maps and the same
//! helper implementations ([`helpers`], `extern "C" fn(u64, u64, u64, u64, u64) -> u64`).
//! The interpreter additionally checks every memory access against the regions the program
//! may touch (its stack frames, the context, the packet, map values, ring buffer
//! reservations); a stray access ends the run with [`VmError::BadAccess`] naming the pc and
//! address.
//!
//! # Use
//!
//! ```no_run
//! # fn main() -> Result<(), kops_vm::VmError> {
//! # let object: kops_object::Object = unimplemented!();
//! let vm = kops_vm::Vm::new(&object)?;                // maps created, interpreter engine
//! let prog = vm.load("xdp_prog")?;                    // relocated, ctx accesses rewritten
//! let out = vm.run(prog, &kops_vm::ProgInput::packet(&[0u8; 64]))?;
//! println!("r0 = {}, packet = {:02x?}", out.r0, out.data_out);
//! for m in vm.maps() { println!("{} {:?}", m.def.name, m.dump()); }
//! # Ok(()) }
//! ```
//!
//! For the conformance suite's convention (r1 = memory, r2 = length, helper 5 = unwind):
//! [`run_conformance`].
//!
//! # What a program sees
//!
//! - **Contexts** ([`ctx`], chosen from the program type by [`CtxKind::for_prog_type`]):
//!   XDP (`xdp_md` over a 4096-byte frame with 256 bytes of headroom, loopback ifindex 1,
//!   queue 0), `__sk_buff` for tc (data from the Ethernet header) and socket filters / cgroup
//!   skb (data from the network header, like BPF_PROG_TEST_RUN), plain memory, and raw
//!   read-only context bytes for other types. `data`/`data_end`/`data_meta` loads are
//!   rewritten at load time into 64-bit loads of our pointers; a forward dataflow over
//!   registers and spilled stack slots finds the context pointer (through bpf-to-bpf calls)
//!   and rejects accesses it cannot type, and context writes the kernel forbids.
//! - **Maps** ([`maps`]): array, per-CPU array, hash, per-CPU hash, LRU hash, LRU per-CPU
//!   hash, LPM trie, array and hash of maps (a lookup gives the inner map, which helpers
//!   take; slots from BTF `values`), program array, ring buffer, perf event array, devmap,
//!   devmap_hash, cpumap, xskmap (redirect targets: [`Redirect`]), queue, stack, bloom
//!   filter (an exact set: never a false positive); global data (`.data`, `.rodata`
//!   read-only, `.bss`) as one-element arrays with their initial contents. Socket, cgroup
//!   and local-storage maps are created, and the first helper call on one is a fault
//!   ("not supported at run time: <map> (<type>)"). Per-CPU maps model one CPU with the
//!   kernel's userspace layout (value size rounded up to 8 per CPU).
//! - **Helpers** ([`helpers`]): map lookup/update/delete, ktime_get_ns and ktime_get_boot_ns
//!   (deterministic clock), trace_printk, get_prandom_u32 (seeded), get_smp_processor_id,
//!   skb_store_bytes, skb_load_bytes, l3_csum_replace, l4_csum_replace, tail_call, redirect,
//!   perf_event_output (no event attached: -ENOENT, as in a kernel test run), csum_diff,
//!   xdp_adjust_head/meta/tail, redirect_map, ringbuf output/reserve/submit/discard,
//!   xdp_get_buff_len, and the networking helpers of [`net`] (xdp_load/store_bytes,
//!   skb_adjust_room, skb_change_head/tail/proto/type, skb_pull_data,
//!   skb_load_bytes_relative, skb_vlan_push/pop, skb_get/set_tunnel_key and _opt,
//!   skb_ecn_set_ce, clone_redirect, redirect_peer/neigh, get_hash_recalc,
//!   set_hash(_invalid), csum_level, csum_update, check_mtu, fib_lookup,
//!   sk/skc_lookup_* (no sockets: NULL), skb_set_tstamp, xdp_output, spin_lock/unlock)
//!   over a documented skb/device/FIB model ([`Vm::net`]), trace_vprintk,
//!   ktime_get_coarse_ns/tai_ns and jiffies64 (the same deterministic clock),
//!   get_numa_node_id. Any other id is a load error naming the helper as
//!   `bpf_<name> (id N)` ([`helper_names`]) and the instruction.
//!
//! # Engines
//!
//! An [`Engine`] turns a loaded program ([`ProgImage`]: final instructions, helper table,
//! context kind) into a [`Compiled`] program that [`Vm::run`] calls with the context
//! pointer. The interpreter is [`interp::Interp`]. A JIT implements the same two traits:
//!
//! - `ProgImage::insns` are final: `ld_imm64` map references already hold real addresses
//!   (src_reg 0), context field loads are already rewritten to our structures, helper calls
//!   keep their id in `imm` and [`ProgImage::helpers`] gives the address to call for each id;
//!   bpf-to-bpf calls are `call` with src_reg 1 (`pc + 1 + imm`), subprogram boundaries in
//!   [`ProgImage::subprogs`].
//! - Tail calls (`call 12`): r2 is a program-array [`Map`]; [`Map::prog_array_table`] is the
//!   address of `max_entries` u64 slots, each the [`Compiled::entry_address`] of the target
//!   (0 = empty), written when the slot is set; [`Map::def`]`.max_entries` bounds the index.
//!   The limit is 33 tail calls per run ([`MAX_TAIL_CALLS`]).
//! - With [`ProgImage::conformance`], helper 5 is "unwind": it returns r1, and when that is 0
//!   the whole program must end at once with r0 = 0; `call %rN` (`JMP|CALL|X`, register in
//!   dst) calls the helper whose id is in rN.
//! - [`Compiled::run`] gets r1 (context address) and r2 (length for the plain memory
//!   context, else 0) and returns r0. The run state helpers need is installed by
//!   [`Vm::run`] around the call. After the run, a helper fault (a helper given a pointer
//!   that is not a map, ...) turns the result into [`VmError::HelperFault`].
//!
//! # Kinsn sites
//!
//! A program with kinsn sites (sidecar + `call` src_reg 4) loads only on an engine that
//! says how it takes them ([`Engine::kinsn`]). Every site is checked at load with the
//! engine's registry (a call without sidecar, an unknown op id, a payload out of range, a
//! site starting a subprogram are load errors naming the slot). Relocation and the context
//! rewrite run on the lowered program. Then either the engine compiles the sites itself
//! ([`KinsnSupport::Native`]: [`jit_engine::KopsEngine`]) or it gets the lowered program
//! ([`KinsnSupport::Lower`]: any engine wrapped in [`Lowering`], e.g. the interpreter);
//! pcs in load and run errors are then mapped back to the original slots.
//!
//! # Verified programs only, on native engines
//!
//! An engine that runs native code ([`Engine::native`]) compiles a program only with a
//! [`verify::Verified`] token for exactly that image, made by the Vm after its
//! [`verify::Verifier`] accepted the program (see [`verify`]). [`Vm::with_verifier`] sets
//! the verifier; a Vm from [`Vm::with_engine`] has none and refuses native loads.

pub mod compare;
pub mod ctx;
pub mod helper_names;
pub mod helpers;
pub mod interp;
pub mod jit_engine;
pub mod maps;
pub mod mem;
pub mod verify;

pub use ctx::{CtxKind, ProgInput};
pub use helpers::{HelperDef, HelperFn, HelperTable, Redirect};
pub use maps::{Map, MapError};
pub use verify::{Unverified, Verified, Verifier, VerifyError, VerifyRequest};

use helpers::{RunGuard, RunState};
use kops_isa::{op, Insn};
use kops_object::{map_type, Object, ProgType, Program, Subprog};
use mem::Registry;
use std::cell::{Cell, RefCell};

/// Most tail calls one run may make (the kernel's `MAX_TAIL_CALL_CNT`).
pub const MAX_TAIL_CALLS: u32 = 33;
/// Stack bytes per frame.
pub const STACK_SIZE: usize = 512;
/// Most nested bpf-to-bpf frames (the kernel's `MAX_CALL_FRAMES`).
pub const MAX_CALL_FRAMES: usize = 8;

/// Errors of loading and running programs. Each names where it happened.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VmError {
    /// The program cannot be loaded (bad instruction, unknown helper, unsupported feature).
    #[error("program `{prog}`, insn {pc}: {msg}")]
    Load { prog: String, pc: usize, msg: String },
    /// Maps or programs of the object cannot be set up.
    #[error("{0}")]
    Setup(String),
    /// A memory access outside every region the program may touch.
    #[error("program `{prog}`, insn {pc}: invalid {} of {len} bytes at {addr:#x}{}", if *.write { "write" } else { "read" }, if .detail.is_empty() { String::new() } else { format!(" ({})", .detail) })]
    BadAccess { prog: String, pc: usize, addr: u64, len: u64, write: bool, detail: String },
    /// The instruction budget ran out (likely an endless loop).
    #[error("program `{prog}`, insn {pc}: instruction budget of {limit} exhausted")]
    Budget { prog: String, pc: usize, limit: u64 },
    /// Any other failure while executing (invalid opcode, call depth, falling off the end).
    #[error("program `{prog}`, insn {pc}: {msg}")]
    Exec { prog: String, pc: usize, msg: String },
    /// A helper was called with arguments it cannot use.
    #[error("program `{prog}`: helper fault: {msg}")]
    HelperFault { prog: String, msg: String },
    /// The input does not fit the program's context.
    #[error("input: {0}")]
    Input(String),
    /// A native engine was asked to compile a program no verifier accepted.
    #[error("program `{prog}`: {msg}")]
    Unverified { prog: String, msg: String },
    /// The verifier refused the program (or could not check it): native engines run only
    /// verified programs.
    #[error("program `{prog}`: {err}; native runtimes run only verified programs")]
    Verify { prog: String, err: VerifyError },
}

/// A map's (key, value) pairs, sorted by key.
pub type MapDump = Vec<(Vec<u8>, Vec<u8>)>;

/// Handle of a loaded program inside its [`Vm`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ProgId(pub usize);

/// What an engine compiles: a program as the runtime has prepared it.
#[derive(Debug)]
pub struct ProgImage<'a> {
    pub name: &'a str,
    pub prog_type: ProgType,
    pub ctx: CtxKind,
    /// Final instructions (see the crate doc).
    pub insns: &'a [Insn],
    pub subprogs: &'a [Subprog],
    pub helpers: &'a HelperTable,
    /// Conformance-suite conventions (helper 5 = unwind, callx).
    pub conformance: bool,
    /// Start slot of the program's exception callback in `insns` (`__exception_cb`):
    /// where `bpf_throw` ([`helpers::kfuncs::THROW`]) continues.
    pub exception_cb: Option<usize>,
    /// The verifier's acceptance of exactly these `insns` ([`Engine::native`] engines
    /// refuse images without it).
    pub verified: Option<&'a Verified>,
}

/// How an engine takes programs with kinsn sites (sidecar + `call` src_reg 4 pairs).
#[derive(Clone, Copy)]
pub enum KinsnSupport<'a> {
    /// Sites are rejected at load.
    None,
    /// The runtime lowers every site to its proof sequence (with this registry) and the
    /// engine runs the lowered program; pcs in errors are mapped back to original slots.
    Lower(&'a kops_kinsn::Registry),
    /// The engine compiles the sites itself ([`ProgImage::insns`] keep them); the runtime
    /// only checks them with this registry.
    Native(&'a kops_kinsn::Registry),
}

/// An execution engine: the interpreter, or a JIT.
pub trait Engine {
    fn name(&self) -> &'static str;
    fn compile(&self, prog: &ProgImage<'_>) -> Result<Box<dyn Compiled>, VmError>;
    /// Whether and how this engine runs kinsn sites (default: it does not).
    fn kinsn(&self) -> KinsnSupport<'_> {
        KinsnSupport::None
    }
    /// Whether this engine runs native code without per-access checks, and so compiles
    /// only verified images (default: it checks every access itself).
    fn native(&self) -> bool {
        false
    }
}

/// An engine that runs programs with kinsn sites by lowering them first (DESIGN.md
/// pitfalls: interpreters cannot run sites directly). `Lowering::new(interp::Interp, reg)`
/// is the interpreter for programs with sites; wrapping the baseline JIT gives its
/// proof-sequence fallback. Programs without sites compile exactly as on `inner`.
pub struct Lowering<E> {
    pub inner: E,
    pub registry: kops_kinsn::Registry,
}

impl<E: Engine> Lowering<E> {
    pub fn new(inner: E, registry: kops_kinsn::Registry) -> Lowering<E> {
        Lowering { inner, registry }
    }
}

impl<E: Engine> Engine for Lowering<E> {
    fn name(&self) -> &'static str {
        self.inner.name()
    }
    fn compile(&self, prog: &ProgImage<'_>) -> Result<Box<dyn Compiled>, VmError> {
        self.inner.compile(prog)
    }
    fn kinsn(&self) -> KinsnSupport<'_> {
        KinsnSupport::Lower(&self.registry)
    }
    fn native(&self) -> bool {
        self.inner.native()
    }
}

/// A program ready to run on its engine.
pub trait Compiled {
    /// Runs with r1 = `r1`, r2 = `r2`; returns r0.
    fn run(&self, r1: u64, r2: u64, env: &RunEnv<'_>) -> Result<u64, VmError>;
    /// Native entry point used for tail calls from native code (0 if none).
    fn entry_address(&self) -> u64 {
        0
    }
}

/// What an engine may consult during a run.
pub struct RunEnv<'a> {
    pub(crate) vm: &'a Vm,
    pub(crate) ctx: &'a ctx::RunCtx,
    /// The program being run.
    pub prog: ProgId,
    /// Instruction budget for engines that count (the interpreter).
    pub budget: u64,
    /// Instructions executed, for engines that count.
    pub executed: Cell<Option<u64>>,
}

impl RunEnv<'_> {
    pub fn vm(&self) -> &Vm {
        self.vm
    }
    /// `[start, end)` of the packet the program may access now.
    pub fn packet_range(&self) -> (u64, u64) {
        self.ctx.packet_range()
    }
    /// `[start, end)` of the packet buffer, headroom included (what LD_ABS may reach).
    pub fn buffer_range(&self) -> (u64, u64) {
        self.ctx.buffer_range()
    }
    /// The context kind of the run.
    pub fn ctx_kind(&self) -> CtxKind {
        self.ctx.kind
    }
}

/// The interpreter's instruction budget for programs with `may_goto`, at least: a loop
/// that only may_goto ends falls through [`interp::MAY_GOTO_LOOPS`] times per call.
pub const MAY_GOTO_BUDGET: u64 = 12 * interp::MAY_GOTO_LOOPS;

/// Run options.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VmOptions {
    /// Instruction budget per run (the interpreter stops with [`VmError::Budget`]).
    pub budget: u64,
    /// Seed of `bpf_get_prandom_u32` (reset at each run, so runs are reproducible).
    pub seed: u64,
    /// First value of the `bpf_ktime_get_ns` clock (advances 1 µs per call).
    pub ktime_base: u64,
    /// [`Vm::run`]: the interpreter's stack starts filled with 0xa5 instead of zeros, and
    /// context, packet and stack lie 4 KiB into bigger allocations (other addresses). A run
    /// whose result changes with this reads uninitialized stack or depends on memory
    /// addresses: results that no two runtimes need to share.
    pub poison_stack: bool,
}

impl Default for VmOptions {
    fn default() -> VmOptions {
        VmOptions { budget: 10_000_000, seed: 0x005e_ed0f_b0f5_u64, ktime_base: 1_000_000_000, poison_stack: false }
    }
}

/// Result of one run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunResult {
    pub r0: u64,
    /// Output data as BPF_PROG_TEST_RUN's `data_out` (see [`ctx`]): the packet for XDP and
    /// skb programs, the memory for the plain memory context.
    pub data_out: Vec<u8>,
    /// Context out (xdp_md / __sk_buff), as BPF_PROG_TEST_RUN's `ctx_out`.
    pub ctx_out: Option<Vec<u8>>,
    /// `bpf_trace_printk` lines.
    pub trace: Vec<String>,
    pub redirect: Option<Redirect>,
    /// Where `bpf_clone_redirect` sent copies: (ifindex, flags), in call order.
    pub clones: Vec<(u32, u64)>,
    /// Instructions executed (interpreter only).
    pub executed: Option<u64>,
}

/// Maps and the region registry: what helpers reach through the run state.
pub(crate) struct Shared {
    /// Boxed: programs hold the maps' addresses, which must never move.
    #[allow(clippy::vec_box)]
    pub maps: Vec<Box<Map>>,
    pub registry: RefCell<Registry>,
    /// Some loaded program tail-calls from a bpf-to-bpf callee: the target then runs in
    /// the callee's frame and may call deeper, so the interpreter's stack must allow
    /// `MAX_CALL_FRAMES` frames per tail call (the kernel bounds it by the tail-call count).
    pub deep_stack: std::cell::Cell<bool>,
}

/// A program loaded into a [`Vm`].
pub struct LoadedProg {
    pub name: String,
    pub prog_type: ProgType,
    pub ctx: CtxKind,
    /// Final instructions (see the crate doc).
    pub insns: Vec<Insn>,
    pub subprogs: Vec<Subprog>,
    pub helpers: HelperTable,
    pub conformance: bool,
    /// See [`ProgImage::exception_cb`].
    pub exception_cb: Option<usize>,
    /// The program has `may_goto` (its interpreter budget is [`MAY_GOTO_BUDGET`]).
    pub may_goto: bool,
    /// Kinsn sites of the program as given (0 when it has none).
    pub kinsn_sites: usize,
    /// When the runtime lowered the sites for the engine ([`KinsnSupport::Lower`]):
    /// `insns` are the lowered slots and this record maps them back to the original ones.
    pub lowering: Option<kops_kinsn::Lowered>,
    /// Set when the program was verified (native engines).
    pub verified: Option<Verified>,
    compiled: Box<dyn Compiled>,
}

impl LoadedProg {
    pub fn image(&self) -> ProgImage<'_> {
        ProgImage {
            name: &self.name,
            prog_type: self.prog_type,
            ctx: self.ctx,
            insns: &self.insns,
            subprogs: &self.subprogs,
            helpers: &self.helpers,
            conformance: self.conformance,
            exception_cb: self.exception_cb,
            verified: self.verified.as_ref(),
        }
    }
}

/// An object's maps and loaded programs, on one engine.
pub struct Vm {
    shared: Box<Shared>,
    object: Option<Object>,
    progs: RefCell<Vec<std::rc::Rc<LoadedProg>>>,
    engine: Box<dyn Engine>,
    verifier: Box<dyn Verifier>,
    pub options: VmOptions,
    /// Devices and routes the networking helpers see (see [`net`]).
    pub net: helpers::net::NetModel,
}

impl Vm {
    /// Maps of `object` created (global data with its initial contents), interpreter engine.
    pub fn new(object: &Object) -> Result<Vm, VmError> {
        Vm::with_engine(Some(object), Box::new(interp::Interp))
    }

    /// Like [`Vm::new`] with another engine; `object` None gives a Vm without maps (for
    /// [`Vm::load_insns`]). Without a verifier, a native engine loads nothing: see
    /// [`Vm::with_verifier`].
    pub fn with_engine(object: Option<&Object>, engine: Box<dyn Engine>) -> Result<Vm, VmError> {
        Vm::with_verifier(object, engine, Box::new(verify::NoVerifier))
    }

    /// Like [`Vm::with_engine`]; every program loaded for a native engine must first be
    /// accepted by `verifier`.
    pub fn with_verifier(object: Option<&Object>, engine: Box<dyn Engine>, verifier: Box<dyn Verifier>) -> Result<Vm, VmError> {
        let mut registry = Registry::default();
        let mut maps = Vec::new();
        if let Some(o) = object {
            for (i, d) in o.maps.iter().enumerate() {
                let m = Map::new(d, i, &mut registry)
                    .map_err(|e| VmError::Setup(format!("{}: {e}", o.path)))?;
                maps.push(Box::new(m));
            }
        }
        let vm = Vm {
            shared: Box::new(Shared { maps, registry: RefCell::new(registry), deep_stack: Default::default() }),
            object: object.cloned(),
            progs: RefCell::new(Vec::new()),
            engine,
            verifier,
            options: VmOptions::default(),
            net: helpers::net::NetModel::default(),
        };
        // Map-in-map slots declared with initial maps (BTF `values = { [i] = &map }`; for
        // a hash of maps `i` is the key).
        if let Some(o) = object {
            for d in o.maps.iter().filter(|d| map_type::is_map_in_map(d.map_type)) {
                for (slot, name) in &d.init_slots {
                    vm.set_map_in_map(&d.name, &slot.to_le_bytes(), name)
                        .map_err(|e| VmError::Setup(format!("{}: {e}", o.path)))?;
                }
            }
        }
        // Program arrays declared with initial slots (BTF `values = { [i] = &prog }`).
        if let Some(o) = object {
            for (mi, d) in o.maps.iter().enumerate() {
                if d.map_type != map_type::PROG_ARRAY {
                    continue;
                }
                for (slot, name) in &d.init_slots {
                    let p = vm.load(name)?;
                    vm.set_prog_array(mi, *slot, Some(p))?;
                }
            }
        }
        Ok(vm)
    }

    /// A Vm without maps on the interpreter.
    pub fn empty() -> Vm {
        Vm::with_engine(None, Box::new(interp::Interp)).expect("a Vm without an object cannot fail")
    }

    pub fn engine_name(&self) -> &'static str {
        self.engine.name()
    }

    pub fn object(&self) -> Option<&Object> {
        self.object.as_ref()
    }

    /// Loads program `name` of the object (by function name, or by section name when no
    /// function has that name). Loading twice gives the same id.
    pub fn load(&self, name: &str) -> Result<ProgId, VmError> {
        if let Some(i) = self.progs.borrow().iter().position(|p| p.name == name) {
            return Ok(ProgId(i));
        }
        let obj = self.object.as_ref().ok_or_else(|| VmError::Setup("no object loaded".into()))?;
        let p = obj
            .program(name)
            .or_else(|| obj.programs.iter().find(|p| p.section == name))
            .ok_or_else(|| VmError::Setup(obj.missing_program(name)))?;
        if let Some(i) = self.progs.borrow().iter().position(|q| q.name == p.name) {
            return Ok(ProgId(i));
        }
        self.load_program(p)
    }

    /// Loads a program record that need not be one of the object's (a lowered or rewritten
    /// copy): like [`Vm::load`], with its func_info/line_info going to the verifier.
    pub fn load_program(&self, p: &Program) -> Result<ProgId, VmError> {
        self.load_with(p, CtxKind::for_prog_type(p.prog_type), HelperTable::kernel(), false)
    }

    /// Loads raw instructions: checks them, resolves map references (`ld_imm64` src=5/6
    /// against this Vm's maps), rewrites context accesses for `ctx`, compiles on the engine.
    /// A verifier sees them without func_info (every subprogram static), which can make
    /// the kernel's verdict stricter than for the object's program ([`Vm::load_program`]).
    #[allow(clippy::too_many_arguments)]
    pub fn load_insns(
        &self,
        name: &str,
        insns: Vec<Insn>,
        subprogs: Vec<Subprog>,
        prog_type: ProgType,
        ctx: CtxKind,
        helpers: HelperTable,
        conformance: bool,
    ) -> Result<ProgId, VmError> {
        let p = Program {
            name: name.to_string(),
            section: String::new(),
            prog_type,
            prog_type_id: prog_type.kernel_id(),
            expected_attach_type: 0,
            insns,
            subprogs,
            func_info: Vec::new(),
            line_info: Vec::new(),
        };
        self.load_with(&p, ctx, helpers, conformance)
    }

    /// The load path of [`Vm::load`] and [`Vm::load_insns`]: verification (native engines),
    /// site checks and lowering, relocation, the context rewrite, compilation.
    fn load_with(&self, p: &Program, ctx: CtxKind, mut helpers: HelperTable, conformance: bool) -> Result<ProgId, VmError> {
        let name = p.name.as_str();
        // The verifier sees the program as given (sites intact, map indices), before the
        // runtime changes anything (after the sites' own checks, whose errors name the
        // slot); the token is sealed on the final image below.
        let verify = || -> Result<Option<String>, VmError> {
            if !self.engine.native() {
                return Ok(None);
            }
            let registry = match self.engine.kinsn() {
                KinsnSupport::None => None,
                KinsnSupport::Lower(r) | KinsnSupport::Native(r) => Some(r),
            };
            let req = VerifyRequest { object: self.object.as_ref(), program: p, registry };
            self.verifier.verify(&req).map_err(|err| VmError::Verify { prog: name.to_string(), err })?;
            Ok(Some(self.verifier.name().to_string()))
        };
        let verified_by;
        let mut insns = p.insns.clone();
        let mut subprogs = p.subprogs.clone();
        let prog_type = p.prog_type;
        let mut kinsn_sites = 0;
        let mut lowering = None;
        let site_pc = insns.iter().position(|i| i.is_kinsn_sidecar() || i.is_kinsn_call());
        if let Some(first) = site_pc {
            let l = self.lower_sites(name, &insns, &subprogs, first)?;
            verified_by = verify()?;
            kinsn_sites = l.regions.len();
            // Relocation and the context rewrite work on the lowered program: they see the
            // proof sequences' real data flow (a sidecar is not a mov, a kinsn call is not
            // a helper call). Errors name original slots.
            let mut low = l.insns.clone();
            let low_subprogs = lowered_subprogs(&subprogs, &l);
            let back = |e: VmError| map_error_pc(e, &l);
            self.relocate_and_check(name, &mut low, &mut helpers, conformance).map_err(back)?;
            ctx::rewrite_ctx_access(name, &mut low, &low_subprogs, ctx).map_err(back)?;
            match self.engine.kinsn() {
                KinsnSupport::Native(_) => {
                    // The engine compiles the sites: put what relocation and the context
                    // rewrite changed back into the program with sites (slot for slot; they
                    // change only loads and ld_imm64 immediates, never control flow).
                    for (p, (now, before)) in low.iter().zip(&l.insns).enumerate() {
                        if now == before {
                            continue;
                        }
                        let o = l.orig_of[p];
                        if let Some(r) = l.region_at(p) {
                            return Err(VmError::Load {
                                prog: name.to_string(),
                                pc: r.orig_pc,
                                msg: "the proof sequence of this kinsn site accesses the program context, which the runtime must rewrite; the native form cannot follow".into(),
                            });
                        }
                        insns[o] = *now;
                    }
                }
                _ => {
                    insns = low;
                    subprogs = low_subprogs;
                    lowering = Some(l);
                }
            }
        } else {
            verified_by = verify()?;
            self.relocate_and_check(name, &mut insns, &mut helpers, conformance)?;
            ctx::rewrite_ctx_access(name, &mut insns, &subprogs, ctx)?;
        }
        if crate::interp::tail_calls_from_callee(&insns) {
            self.shared.deep_stack.set(true);
        }
        // The exception callback the object declares for this program, by name: its start
        // in the final instructions (after lowering).
        let exception_cb = self
            .object
            .as_ref()
            .and_then(|o| o.exception_callbacks.iter().find(|(prog, _)| *prog == p.name))
            .and_then(|(_, cb)| subprogs.iter().find(|s| s.name == *cb))
            .map(|s| s.start);
        let may_goto = insns.iter().any(|i| i.code == op::JMP | kops_isa::decode::JCOND);
        let mut lp = LoadedProg {
            name: name.to_string(),
            prog_type,
            ctx,
            insns,
            subprogs,
            helpers,
            conformance,
            exception_cb,
            may_goto,
            kinsn_sites,
            lowering,
            verified: None,
            compiled: Box::new(NotCompiled),
        };
        lp.verified = verified_by.map(|v| Verified::seal(&lp.insns, &v));
        lp.compiled = match &lp.lowering {
            Some(l) => self.engine.compile(&lp.image()).map_err(|e| map_error_pc(e, l))?,
            None => self.engine.compile(&lp.image())?,
        };
        let mut progs = self.progs.borrow_mut();
        progs.push(std::rc::Rc::new(lp));
        Ok(ProgId(progs.len() - 1))
    }

    /// Checks and lowers the kinsn sites of `insns` (the first site slot is `first`):
    /// every malformed site (call without sidecar, payload out of range, unknown op id, a
    /// site starting a subprogram, ...) is a load error naming its slot.
    fn lower_sites(&self, name: &str, insns: &[Insn], subprogs: &[Subprog], first: usize) -> Result<kops_kinsn::Lowered, VmError> {
        let registry = match self.engine.kinsn() {
            KinsnSupport::None => {
                return Err(VmError::Load {
                    prog: name.to_string(),
                    pc: first,
                    msg: format!(
                        "kinsn site: the `{}` engine cannot run kinsn sites (use the kops runtime, or an engine wrapped in kops_vm::Lowering)",
                        self.engine.name()
                    ),
                })
            }
            KinsnSupport::Lower(r) | KinsnSupport::Native(r) => r,
        };
        let starts: Vec<usize> = subprogs.iter().map(|s| s.start).collect();
        kops_kinsn::lower(insns, &starts, &[], &[], registry).map_err(|e| {
            let (pc, msg) = lower_error_parts(&e);
            VmError::Load { prog: name.to_string(), pc, msg }
        })
    }

    fn relocate_and_check(
        &self,
        name: &str,
        insns: &mut [Insn],
        helpers: &mut HelperTable,
        conformance: bool,
    ) -> Result<(), VmError> {
        let err = |pc: usize, msg: String| VmError::Load { prog: name.to_string(), pc, msg };
        let n = insns.len();
        if n == 0 {
            return Err(err(0, "empty program".into()));
        }
        // Unapplied CO-RE offsets would run silently wrong.
        if let Some(o) = self.object.as_ref().filter(|o| o.core_relos > 0) {
            return Err(err(0, format!(
                "the object has {} CO-RE relocations not applied (relocate it against the kernel with kops_kernel::core::relocate first)",
                o.core_relos
            )));
        }
        // Second halves of ld_imm64, which no jump may target.
        let mut second = vec![false; n];
        let mut pc = 0;
        while pc < n {
            let i = insns[pc];
            if i.is_ld_imm64() {
                if pc + 1 >= n {
                    return Err(err(pc, "ld_imm64 is missing its second half".into()));
                }
                let h = insns[pc + 1];
                if h.code != 0 || h.dst != 0 || h.src != 0 || h.off != 0 {
                    return Err(err(pc + 1, "invalid second half of ld_imm64".into()));
                }
                second[pc + 1] = true;
                pc += 2;
            } else {
                pc += 1;
            }
        }
        let mut pc = 0;
        while pc < n {
            let i = insns[pc];
            if !conformance && interp::writes_r10(&i) && !i.is_ld_imm64() {
                // The kernel verifier accepts a write to r10 only in code it proved
                // unreachable (and removes). Native engines run only verified programs and
                // the interpreter checks at run time: either way it becomes a call that
                // faults, naming the cause, if it is ever reached.
                let def = helpers::kfuncs::unreachable_code();
                helpers::kfuncs::add(helpers, def);
                insns[pc] = Insn::new(op::JMP | op::CALL, 0, 0, 0, def.id as i32);
                pc += 1;
                continue;
            }
            interp::validate(&i, conformance).map_err(|m| err(pc, m))?;
            if i.is_ld_imm64() {
                let lo = |a: u64| a as u32 as i32;
                let hi = |a: u64| (a >> 32) as u32 as i32;
                // An extern still in extern form: a ksym address (or BTF id), or a kconfig
                // value nobody resolved; loading 0 would run silently wrong.
                // A weak extern the kernel lacks is a resolved 0 (libbpf's rule), which
                // programs test (`bpf_ksym_exists`); any other value is a kernel address.
                let zero = i.src == 0 && i.imm == 0 && insns[pc + 1].imm == 0;
                if let Some(e) = self.extern_named(name, pc).filter(|e| !(e.resolved && zero)) {
                    return Err(err(pc, match e.kind {
                        kops_object::ExternKind::Kconfig => format!(
                            "kconfig extern {} is unresolved (resolve externs with kops_kernel::core::relocate first)",
                            e.name
                        ),
                        _ => format!("{} {} is not supported by the kops runtimes", e.kind.name(), e.name),
                    }));
                }
                match i.src {
                    0 => {}
                    op::PSEUDO_MAP_IDX | op::PSEUDO_MAP_IDX_VALUE => {
                        let mi = i.imm as u32 as usize;
                        let m = self.shared.maps.get(mi).ok_or_else(|| {
                            err(pc, format!("map index {mi} out of range ({} maps)", self.shared.maps.len()))
                        })?;
                        let addr = if i.src == op::PSEUDO_MAP_IDX {
                            m.addr()
                        } else {
                            let off = insns[pc + 1].imm as u32;
                            if off >= m.def.value_size {
                                return Err(err(pc, format!(
                                    "offset {off} past the {}-byte value of map `{}`",
                                    m.def.value_size, m.def.name
                                )));
                            }
                            let base = m.prog_lookup(&0u32.to_le_bytes());
                            if base == 0 || !matches!(m.def.map_type, map_type::ARRAY | map_type::PERCPU_ARRAY) {
                                return Err(err(pc, format!("map `{}` has no direct value address", m.def.name)));
                            }
                            base + off as u64
                        };
                        insns[pc] = Insn::new(i.code, i.dst, 0, 0, lo(addr));
                        insns[pc + 1] = Insn::new(0, 0, 0, 0, hi(addr));
                    }
                    op::PSEUDO_MAP_FD | op::PSEUDO_MAP_VALUE => {
                        return Err(err(pc, "map file descriptor reference: load through kops_object (map indices)".into()))
                    }
                    op::PSEUDO_BTF_ID => return Err(err(pc, "kernel symbol (BTF id) references are not supported".into())),
                    op::PSEUDO_FUNC => {
                        return Err(err(pc, "function pointers (callbacks for bpf_loop etc.) are not supported".into()))
                    }
                    s => return Err(err(pc, format!("ld_imm64 with unknown src_reg {s}"))),
                }
                pc += 2;
                continue;
            }
            if i.is_call() {
                match i.src {
                    // libbpf's poisoned instruction of a CO-RE relocation without a match: the
                    // verifier proved it unreachable (a field-exists guard); reaching it faults.
                    0 if i.imm == 0xbad2310 => {
                        let def = helpers::kfuncs::poisoned_core();
                        helpers::kfuncs::add(helpers, def);
                        insns[pc] = Insn::new(i.code, 0, 0, 0, def.id as i32);
                    }
                    0 if (2002000000..2003000000).contains(&i.imm) && self.extern_named(name, pc).is_some() => {
                        // libbpf's poisoned call of a weak kfunc the kernel lacks: the
                        // verifier proved it unreachable; should it run, it faults by name.
                        let def = helpers::kfuncs::poisoned();
                        helpers::kfuncs::add(helpers, def);
                        insns[pc] = Insn::new(i.code, 0, 0, 0, def.id as i32);
                    }
                    0 => {
                        let id = i.imm as u32;
                        if helpers.get(id).is_none() {
                            return Err(err(pc, if conformance {
                                format!("unknown helper {id}")
                            } else {
                                format!("helper {} is not supported by the kops runtimes", helpers::describe_helper(id))
                            }));
                        }
                    }
                    op::PSEUDO_CALL => {
                        let t = pc as i64 + 1 + i.imm as i64;
                        if t < 0 || t >= n as i64 || second[t as usize] {
                            return Err(err(pc, format!("bpf-to-bpf call to invalid target {t}")));
                        }
                    }
                    op::PSEUDO_KFUNC_CALL => {
                        let ext = self.extern_named(name, pc).or_else(|| self.kfunc_by_id(i.imm));
                        let Some(e) = ext else {
                            return Err(err(pc, format!("kfunc call (BTF id {}) is not supported by the kops runtimes", i.imm)));
                        };
                        let Some(def) = helpers::kfuncs::by_name(&e.name) else {
                            return Err(err(pc, format!("kfunc {} is not supported by the kops runtimes", e.name)));
                        };
                        // Implemented kfuncs are called like helpers (see helpers::kfuncs).
                        helpers::kfuncs::add(helpers, def);
                        insns[pc] = Insn::new(i.code, 0, 0, 0, def.id as i32);
                    }
                    op::PSEUDO_KINSN_CALL => {
                        return Err(err(pc, "kinsn site: lower it to its proof sequence before running".into()))
                    }
                    s => return Err(err(pc, format!("call with unknown src_reg {s}"))),
                }
            } else if let Some(t) = i.target(pc) {
                if t < 0 || t >= n as i64 || second[t as usize] {
                    return Err(err(pc, format!("jump to invalid target {t}")));
                }
            }
            pc += 1;
        }
        Ok(())
    }

    /// The kfunc the relocated object calls with vmlinux BTF id `id`.
    fn kfunc_by_id(&self, id: i32) -> Option<&kops_object::Extern> {
        let o = self.object.as_ref()?;
        o.externs.iter().find(|e| e.kind == kops_object::ExternKind::Kfunc && e.resolved && e.btf_id == id as u32 && id != 0)
    }

    /// The extern referenced at slot `pc` of the object's program `prog`.
    fn extern_named(&self, prog: &str, pc: usize) -> Option<&kops_object::Extern> {
        let o = self.object.as_ref()?;
        let pi = o.programs.iter().position(|p| p.name == prog)?;
        o.extern_at(pi, pc)
    }

    /// A loaded program.
    pub fn program(&self, id: ProgId) -> Option<std::rc::Rc<LoadedProg>> {
        self.progs.borrow().get(id.0).cloned()
    }

    /// Id of a loaded program by name.
    pub fn prog_id(&self, name: &str) -> Option<ProgId> {
        self.progs.borrow().iter().position(|p| p.name == name).map(ProgId)
    }

    pub fn maps(&self) -> impl Iterator<Item = &Map> {
        self.shared.maps.iter().map(|m| &**m)
    }

    /// Map by index (the object's map order).
    pub fn map_at(&self, index: usize) -> Option<&Map> {
        self.shared.maps.get(index).map(|m| &**m)
    }

    pub fn map(&self, name: &str) -> Option<&Map> {
        self.maps().find(|m| m.def.name == name)
    }

    /// The map at a program-visible address.
    pub fn map_by_addr(&self, addr: u64) -> Option<&Map> {
        self.maps().find(|m| m.addr() == addr)
    }

    /// Userspace `BPF_MAP_UPDATE_ELEM` (per-CPU maps take every CPU's value).
    pub fn map_update(&self, name: &str, key: &[u8], value: &[u8], flags: u64) -> Result<(), MapError> {
        let m = self.map(name).ok_or_else(|| MapError { map: name.into(), msg: "no such map".into() })?;
        m.update(key, value, flags, &mut self.shared.registry.borrow_mut())
    }

    /// Userspace `BPF_MAP_DELETE_ELEM`.
    pub fn map_delete(&self, name: &str, key: &[u8]) -> Result<(), MapError> {
        let m = self.map(name).ok_or_else(|| MapError { map: name.into(), msg: "no such map".into() })?;
        m.delete(key, &mut self.shared.registry.borrow_mut())
    }

    /// Every data map's contents, sorted by key: (map name, [(key, value)]).
    pub fn dump_maps(&self) -> Vec<(String, MapDump)> {
        self.maps().filter(|m| m.is_data_map()).map(|m| (m.def.name.clone(), m.dump())).collect()
    }

    /// The contents of the maps named in `names`, in the canonical form differential
    /// comparisons use: key -> value, per-CPU values cut to `value_size` (they come padded
    /// to 8 bytes), and array entries that are all zero left out. Arrays are read by index:
    /// `Map::dump` would sort every key first, which dominates a run for big arrays.
    pub fn snapshot_maps(&self, names: &[String]) -> compare::MapState {
        let mut state = std::collections::BTreeMap::new();
        for m in self.maps().filter(|m| names.contains(&m.def.name)) {
            let vs = m.def.value_size as usize;
            let mut entries = std::collections::BTreeMap::new();
            if matches!(m.def.map_type, map_type::ARRAY | map_type::PERCPU_ARRAY) {
                for i in 0..m.def.max_entries {
                    let k = i.to_le_bytes();
                    if let Some(mut v) = m.lookup(&k) {
                        v.truncate(vs);
                        if v.iter().any(|&b| b != 0) {
                            entries.insert(k.to_vec(), v);
                        }
                    }
                }
            } else {
                for (k, mut v) in m.dump() {
                    v.truncate(vs);
                    entries.insert(k, v);
                }
            }
            state.insert(m.def.name.clone(), entries);
        }
        state
    }

    /// Userspace update of an array/hash of maps: slot `key` of `outer` holds map `inner`
    /// (checked against the inner template, as the kernel does).
    pub fn set_map_in_map(&self, outer: &str, key: &[u8], inner: &str) -> Result<(), MapError> {
        let no = |n: &str| MapError { map: n.into(), msg: "no such map".into() };
        let o = self.map(outer).ok_or_else(|| no(outer))?;
        let i = self.shared.maps.iter().position(|m| m.def.name == inner).ok_or_else(|| no(inner))?;
        o.map_in_map_set(key, &self.shared.maps[i], i)
    }

    /// Sets slot `index` of program array `map` (by map index) to a loaded program.
    pub fn set_prog_array(&self, map: usize, index: u32, prog: Option<ProgId>) -> Result<(), VmError> {
        let m = self.map_at(map).ok_or_else(|| VmError::Setup(format!("no map with index {map}")))?;
        let target = match prog {
            Some(id) => {
                let p = self.program(id).ok_or_else(|| VmError::Setup(format!("no program {id:?}")))?;
                Some((id.0, p.compiled.entry_address()))
            }
            None => None,
        };
        m.prog_array_set(index, target).map_err(|e| VmError::Setup(e.to_string()))
    }

    /// Maps the pc of a run error from a lowered program (this one or a tail-called one,
    /// found by name) back to the original slot.
    fn error_to_orig(&self, e: VmError) -> VmError {
        let prog = match &e {
            VmError::BadAccess { prog, .. } | VmError::Budget { prog, .. } | VmError::Exec { prog, .. } | VmError::Load { prog, .. } => prog.clone(),
            _ => return e,
        };
        let progs = self.progs.borrow();
        match progs.iter().find(|p| p.name == prog).and_then(|p| p.lowering.as_ref()) {
            Some(l) => map_error_pc(e, l),
            None => e,
        }
    }

    /// Runs a loaded program once on `input`.
    pub fn run(&self, prog: ProgId, input: &ProgInput) -> Result<RunResult, VmError> {
        if self.options.poison_stack {
            // Context, packet and stack 4168 bytes into their allocations: other addresses, low byte too.
            return mem::with_gap(4096 + 72, || self.run_repeat(prog, input, 1)).map(|(r, _)| r);
        }
        self.run_repeat(prog, input, 1).map(|(r, _)| r)
    }

    /// Runs a loaded program `repeat` times (at least once) on one context set up from
    /// `input`, like BPF_PROG_TEST_RUN with `repeat`: the context and packet are built once
    /// and what a run leaves in them (an adjusted head, rewritten bytes) is what the next
    /// run sees. Returns the last run's result and the mean wall time per run in
    /// nanoseconds, measured around the engine calls only (no setup, no copying out).
    pub fn run_repeat(&self, prog: ProgId, input: &ProgInput, repeat: u64) -> Result<(RunResult, f64), VmError> {
        let p = self.program(prog).ok_or_else(|| VmError::Setup(format!("no program {prog:?}")))?;
        let rc = ctx::RunCtx::build(p.ctx, input)?;
        let mut st = RunState {
            shared: &*self.shared,
            ctx_kind: p.ctx,
            ctx: rc.r1,
            trace: Vec::new(),
            rng: self.options.seed.max(1),
            ktime: self.options.ktime_base,
            redirect: None,
            clones: Vec::new(),
            fault: None,
            skb: helpers::net::SkbModel::for_run(p.ctx, rc.buffer_range()),
            net: &self.net,
        };
        // A loop that only may_goto ends runs MAY_GOTO_LOOPS times per call: room for that.
        let budget = if p.may_goto { self.options.budget.max(MAY_GOTO_BUDGET) } else { self.options.budget };
        let env = RunEnv { vm: self, ctx: &rc, prog, budget, executed: Cell::new(None) };
        let n = repeat.max(1);
        let (r, elapsed) = {
            let _g = RunGuard::install(&mut st);
            let start = std::time::Instant::now();
            let mut r = p.compiled.run(rc.r1, rc.r2, &env);
            for _ in 1..n {
                if r.is_err() {
                    break;
                }
                r = p.compiled.run(rc.r1, rc.r2, &env);
            }
            (r, start.elapsed())
        };
        // Free what the run left behind: deleted hash values, unsubmitted reservations.
        {
            let mut reg = self.shared.registry.borrow_mut();
            for m in self.maps() {
                m.end_run(&mut reg);
            }
        }
        let r0 = r.map_err(|e| self.error_to_orig(e))?;
        if let Some(msg) = st.fault.take() {
            return Err(VmError::HelperFault { prog: p.name.clone(), msg });
        }
        let result = RunResult {
            r0,
            data_out: rc.data_out(),
            ctx_out: rc.ctx_out(),
            trace: st.trace,
            redirect: st.redirect,
            clones: st.clones,
            executed: env.executed.get(),
        };
        Ok((result, elapsed.as_nanos() as f64 / n as f64))
    }
}

/// Subprograms of a program after lowering (starts and lengths in the lowered layout).
fn lowered_subprogs(subprogs: &[Subprog], l: &kops_kinsn::Lowered) -> Vec<Subprog> {
    let at = |slot: usize| l.lowered_of[slot.min(l.orig_len)];
    subprogs
        .iter()
        .map(|s| {
            let mut n = s.clone();
            n.start = at(s.start);
            n.len = at(s.start + s.len).saturating_sub(n.start);
            n
        })
        .collect()
}

/// A lowering error as (original slot, message without the slot prefix).
fn lower_error_parts(e: &kops_kinsn::LowerError) -> (usize, String) {
    use kops_kinsn::{LowerError as L, SiteError as S};
    let pc = match e {
        L::Site(s) => match s {
            S::CallWithoutSidecar { pc }
            | S::SidecarWithoutCall { pc }
            | S::MalformedCall { pc, .. }
            | S::UnknownOp { pc, .. }
            | S::Payload { pc, .. }
            | S::Proof { pc, .. }
            | S::AtSubprogStart { pc }
            | S::SpansSubprog { pc, .. }
            | S::TargetInsideSite { pc, .. } => *pc,
            S::PayloadTooWide { .. } => 0,
        },
        L::TargetOutOfRange { pc, .. } | L::OffsetOverflow { pc, .. } | L::Restore { pc, .. } => *pc,
        _ => 0,
    };
    let text = e.to_string();
    let prefix = format!("instruction {pc}: ");
    (pc, text.strip_prefix(&prefix).map(str::to_string).unwrap_or(text))
}

/// `e` with its pc (a slot of the lowered program `l`) replaced by the original slot; a pc
/// inside a proof sequence says which site it belongs to.
fn map_error_pc(e: VmError, l: &kops_kinsn::Lowered) -> VmError {
    let orig = |pc: usize| -> usize {
        match l.orig_of.get(pc) {
            Some(&o) => o,
            // Past the end (falling off the program): the same distance past the original end.
            None => l.orig_len + pc.saturating_sub(l.insns.len()),
        }
    };
    let note = |pc: usize| -> Option<String> {
        l.region_at(pc).map(|r| format!("in the proof sequence of the kinsn site at insn {} (lowered slot {pc}, op id {})", r.orig_pc, r.op_id))
    };
    match e {
        VmError::Load { prog, pc, msg } => {
            let msg = match note(pc) {
                Some(n) => format!("{msg} ({n})"),
                None => msg,
            };
            VmError::Load { prog, pc: orig(pc), msg }
        }
        VmError::Exec { prog, pc, msg } => {
            let msg = match note(pc) {
                Some(n) => format!("{msg} ({n})"),
                None => msg,
            };
            VmError::Exec { prog, pc: orig(pc), msg }
        }
        VmError::BadAccess { prog, pc, addr, len, write, detail } => {
            let detail = match (note(pc), detail.is_empty()) {
                (Some(n), true) => n,
                (Some(n), false) => format!("{detail}; {n}"),
                (None, _) => detail,
            };
            VmError::BadAccess { prog, pc: orig(pc), addr, len, write, detail }
        }
        VmError::Budget { prog, pc, limit } => VmError::Budget { prog, pc: orig(pc), limit },
        e => e,
    }
}

/// Placeholder while a program is being compiled.
struct NotCompiled;
impl Compiled for NotCompiled {
    fn run(&self, _: u64, _: u64, _: &RunEnv<'_>) -> Result<u64, VmError> {
        Err(VmError::Setup("program not compiled".into()))
    }
}

/// Runs one conformance-suite program (r1 = `mem` or 0, r2 = its length, helper 5 =
/// unwind, callx) on `engine` (None: the interpreter) and returns r0. A native engine
/// refuses: the suite's programs are not verifiable (raw memory, callx); see
/// [`run_conformance_with`].
pub fn run_conformance(insns: &[Insn], mem: &[u8], engine: Option<Box<dyn Engine>>) -> Result<u64, VmError> {
    run_conformance_with(insns, mem, engine, Box::new(verify::NoVerifier))
}

/// [`run_conformance`] with a verifier for native engines (for the suite itself,
/// [`Unverified`]: its programs are safe by construction but not kernel-verifiable).
pub fn run_conformance_with(insns: &[Insn], mem: &[u8], engine: Option<Box<dyn Engine>>, verifier: Box<dyn Verifier>) -> Result<u64, VmError> {
    let vm = Vm::with_verifier(None, engine.unwrap_or_else(|| Box::new(interp::Interp)), verifier)?;
    let id = vm.load_insns(
        "conformance",
        insns.to_vec(),
        Vec::new(),
        ProgType::Unspec,
        CtxKind::Mem,
        HelperTable::conformance(),
        true,
    )?;
    Ok(vm.run(id, &ProgInput { data: mem.to_vec(), ctx: None })?.r0)
}
