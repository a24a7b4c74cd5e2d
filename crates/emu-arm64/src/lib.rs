//! Runs images of the arm64 JIT ([`kops_jit_arm64`]) in-process under the unicorn
//! emulator, as a [`kops_vm::Engine`] (`--arch arm64`).
//!
//! Pointers stay host addresses, as in every engine: guest address == host address.
//! - The code image lives in host memory that is never executable on the host; the
//!   emulator maps it read+execute at its own address.
//! - The guest stack is a host buffer mapped read+write.
//! - Any other page the program touches (context, packet, map values, the Vm's stack
//!   buffers) is mapped on first access, from the same host page at the same address, by a
//!   hook on unmapped accesses; a page the host has not mapped is a fault reported with its
//!   address. Instruction fetches are mapped only inside a compiled image (tail calls).
//! - Helpers: the JIT calls them at addresses in a reserved area (host `PROT_NONE`, so no
//!   host data can be there); each 4-byte slot holds a `ret`, and a code hook on the area
//!   calls the Rust helper (`extern "C" fn(u64, u64, u64, u64, u64) -> u64`) with x0..x4
//!   and puts its result in x0 before the `ret` runs. The runtime's tail-call lookup and
//!   packet loader (`LD_ABS`) are called the same way.
//! - The program returns to the area's last slot, where emulation stops.
//! - An image keeps its emulator between runs; the pages mapped on first access are
//!   unmapped after every run, and a run that faults drops the emulator.
//!
//! Emulated time says nothing about arm64 performance: the engine is for correctness.

use std::sync::{Mutex, OnceLock};

use kops_isa::Insn;
use kops_jit_arm64::{Arm64Image, Arm64Options};
use kops_vm::helpers::{HelperTable, TAIL_CALL, UNWIND};
use kops_vm::{Compiled, Engine, ProgImage, RunEnv, VmError};
use unicorn_engine::{Arch, HookType, MemType, Mode, Prot, RegisterARM64, Unicorn};

const PAGE: u64 = 4096;
/// Bytes of the helper area (4-byte slots; the last one is where programs return to).
const HELPER_AREA: u64 = 4 * PAGE;
const SLOTS: u64 = HELPER_AREA / 4 - 1;
/// Largest helper id given a callx table slot (as the x86 engine).
const CALLX_HELPERS: u32 = 256;
/// Guest stack bytes.
const STACK: usize = 256 * 1024;
/// `ret`
const RET: u32 = 0xd65f_03c0;

/// The helper page: a reserved host page and the host function of each slot.
struct HelperPage {
    base: u64,
    fns: Mutex<Vec<u64>>,
}

fn helper_page() -> &'static HelperPage {
    static P: OnceLock<HelperPage> = OnceLock::new();
    P.get_or_init(|| {
        // SAFETY: an anonymous PROT_NONE reservation; never accessed by the host.
        let p = unsafe { libc::mmap(std::ptr::null_mut(), HELPER_AREA as usize, libc::PROT_NONE, libc::MAP_PRIVATE | libc::MAP_ANONYMOUS, -1, 0) };
        assert!(p != libc::MAP_FAILED, "cannot reserve the helper page");
        HelperPage { base: p as u64, fns: Mutex::new(Vec::new()) }
    })
}

/// Guest address of the slot for host function `f` (allocated on first use).
fn helper_slot(f: u64) -> Option<u64> {
    let hp = helper_page();
    let mut fns = hp.fns.lock().ok()?;
    let k = match fns.iter().position(|&x| x == f) {
        Some(k) => k,
        None => {
            if fns.len() as u64 >= SLOTS {
                return None;
            }
            fns.push(f);
            fns.len() - 1
        }
    };
    Some(hp.base + 4 * k as u64)
}

/// Code images alive in this process: (start, length) (for fetches of tail-call targets).
fn images() -> &'static Mutex<Vec<(u64, u64)>> {
    static I: OnceLock<Mutex<Vec<(u64, u64)>>> = OnceLock::new();
    I.get_or_init(|| Mutex::new(Vec::new()))
}

/// Page-aligned anonymous host memory (read+write on the host, never executable there).
struct HostMem {
    ptr: *mut u8,
    len: usize,
}

impl HostMem {
    fn new(len: usize) -> Result<HostMem, String> {
        let len = (len.max(1) as u64).div_ceil(PAGE) as usize * PAGE as usize;
        // SAFETY: anonymous private mapping of `len` bytes.
        let p = unsafe { libc::mmap(std::ptr::null_mut(), len, libc::PROT_READ | libc::PROT_WRITE, libc::MAP_PRIVATE | libc::MAP_ANONYMOUS, -1, 0) };
        if p == libc::MAP_FAILED {
            return Err(format!("mmap of {len} bytes failed"));
        }
        Ok(HostMem { ptr: p as *mut u8, len })
    }
    fn addr(&self) -> u64 {
        self.ptr as u64
    }
}

impl Drop for HostMem {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `new`.
        unsafe { libc::munmap(self.ptr as *mut libc::c_void, self.len) };
    }
}

/// Whether the host has page `page` mapped.
fn host_mapped(page: u64) -> bool {
    let mut v = 0u8;
    // SAFETY: mincore only inspects the mapping; ENOMEM means unmapped.
    unsafe { libc::mincore(page as *mut libc::c_void, PAGE as usize, &mut v) == 0 }
}

/// The arm64 JIT under emulation (`--runtime jit --arch arm64`).
pub struct Arm64EmuEngine {
    options: Arm64Options,
}

impl Arm64EmuEngine {
    pub fn new() -> Arm64EmuEngine {
        Arm64EmuEngine { options: Arm64Options::default() }
    }
    pub fn with_options(options: Arm64Options) -> Arm64EmuEngine {
        Arm64EmuEngine { options }
    }
    /// Compile without a Vm (for listings): the image and its options.
    pub fn compile_image(&self, insns: &[Insn], helpers: &HelperTable, conformance: bool) -> Result<Arm64Image, kops_jit::JitError> {
        let o = self.runtime_options(conformance);
        kops_jit_arm64::compile(insns, &o, &Resolver(helpers))
    }
    fn runtime_options(&self, conformance: bool) -> Arm64Options {
        let mut o = self.options.clone();
        o.div_fixups = true;
        let lookup = tail_lookup as extern "C" fn(u64, u64, u64, u64, u64) -> u64 as usize as u64;
        o.tail_call = helper_slot(lookup).map(|a| (TAIL_CALL as i32, a));
        o.ld_abs = helper_slot(ld_abs as extern "C" fn(u64, u64, u64, u64, u64) -> u64 as usize as u64);
        if conformance {
            o.unwind_helper = Some(UNWIND as i32);
            o.callx_helpers = Some(CALLX_HELPERS);
        }
        o
    }
}

impl Default for Arm64EmuEngine {
    fn default() -> Self {
        Arm64EmuEngine::new()
    }
}

/// Helper ids -> slots on the helper page.
struct Resolver<'a>(&'a HelperTable);

impl kops_jit::Resolver for Resolver<'_> {
    fn helper(&self, id: i32) -> Option<u64> {
        let f = u32::try_from(id).ok().and_then(|id| self.0.address(id))?;
        helper_slot(f)
    }
    fn ld_imm64(&self, pc: usize, lo: &Insn, _hi: &Insn) -> Result<u64, String> {
        Err(format!("unresolved ld_imm64 with src_reg {} at {pc}", lo.src))
    }
}

thread_local! {
    /// Program arrays of the run in progress: (map address, slot table, max_entries).
    static TAIL_MAPS: std::cell::RefCell<Vec<(u64, u64, u64)>> = const { std::cell::RefCell::new(Vec::new()) };
    /// skb run in progress, for LD_ABS/LD_IND: (context address, lowest packet address, tc).
    static SKB_RUN: std::cell::Cell<Option<(u64, u64, bool)>> = const { std::cell::Cell::new(None) };
}

/// `LD_ABS`/`LD_IND` for the JIT's code, with the interpreter's (the kernel's) semantics:
/// the big-endian value of `size` bytes at `off` from the skb data; negative offsets
/// address the network (`SKF_NET_OFF`) or link-layer (`SKF_LL_OFF`) header; bit 63 set
/// when out of range.
extern "C" fn ld_abs(size: u64, off: u64, _: u64, _: u64, _: u64) -> u64 {
    let Some((c, head, tc)) = SKB_RUN.with(|s| s.get()) else { return 1 << 63 };
    kops_vm::ctx::legacy_packet_load(c, head, tc, size, off as i64).unwrap_or(1 << 63)
}

/// Entry of slot `index` of program array `map` (0: none), for the JIT's tail calls.
extern "C" fn tail_lookup(map: u64, index: u64, _: u64, _: u64, _: u64) -> u64 {
    TAIL_MAPS.with(|t| kops_vm::jit_engine::prog_array_entry(&t.borrow(), map, index))
}

impl Engine for Arm64EmuEngine {
    fn name(&self) -> &'static str {
        "jit-arm64"
    }
    fn compile(&self, prog: &ProgImage<'_>) -> Result<Box<dyn Compiled>, VmError> {
        kops_vm::verify::require(prog, "jit-arm64")?;
        // Exceptions need the JIT's unwind to the main frame, which the arm64 JIT lacks:
        // refused at load, never a run that faults halfway.
        let throw = kops_vm::helpers::kfuncs::THROW as i32;
        if let Some(pc) = prog.insns.iter().position(|i| !prog.conformance && i.is_helper_call() && i.imm == throw) {
            return Err(VmError::Load { prog: prog.name.to_string(), pc, msg: "arm64 JIT: unsupported bpf_throw (exceptions)".into() });
        }
        let image = self.compile_image(prog.insns, prog.helpers, prog.conformance).map_err(|e| match e {
            kops_jit::JitError::Insn { pc, msg } => VmError::Load { prog: prog.name.to_string(), pc, msg },
            kops_jit::JitError::Unsupported { pc, what } => VmError::Load { prog: prog.name.to_string(), pc, msg: format!("arm64 JIT: unsupported {what}") },
            e => VmError::Load { prog: prog.name.to_string(), pc: 0, msg: format!("arm64 JIT: {e}") },
        })?;
        let c = EmuCompiled::new(&image).map_err(|m| VmError::Load { prog: prog.name.to_string(), pc: 0, msg: m })?;
        Ok(Box::new(c))
    }
    fn native(&self) -> bool {
        true
    }
}

/// A linked image in host memory, run by the emulator.
pub struct EmuCompiled {
    mem: HostMem,
    len: usize,
    /// The emulator of the previous run, kept for the next (its setup costs more than most
    /// runs); dropped after a fault.
    emu: std::cell::RefCell<Option<Emu>>,
}

/// One emulator instance with the image, the helper area and a stack mapped, and the pages
/// of the run in progress that were mapped on first access (unmapped after each run, so no
/// run sees another's mappings).
struct Emu {
    uc: Unicorn<'static, ()>,
    stack: HostMem,
    fault: Rc<Cell<Option<(u64, MemType)>>>,
    lazy: Rc<RefCell<Vec<u64>>>,
}

use std::cell::{Cell, RefCell};
use std::rc::Rc;

fn ue(what: &str, e: unicorn_engine::uc_error) -> String {
    format!("emulator: {what}: {e:?}")
}

impl EmuCompiled {
    pub fn new(image: &Arm64Image) -> Result<EmuCompiled, String> {
        let mem = HostMem::new(image.code.len())?;
        let code = image.link(mem.addr()).map_err(|e| e.to_string())?;
        // SAFETY: `mem` has at least code.len() writable bytes.
        unsafe { std::ptr::copy_nonoverlapping(code.as_ptr(), mem.ptr, code.len()) };
        // W^X: the code is never writable again; it is never executable on the host, and
        // the emulator maps it read+execute.
        // SAFETY: the whole mapping made by HostMem::new.
        if unsafe { libc::mprotect(mem.ptr as *mut libc::c_void, mem.len, libc::PROT_READ) } != 0 {
            return Err(format!("mprotect: {}", std::io::Error::last_os_error()));
        }
        images().lock().map_err(|_| "image registry poisoned")?.push((mem.addr(), mem.len as u64));
        Ok(EmuCompiled { mem, len: code.len(), emu: RefCell::new(None) })
    }
    /// The linked code as the emulator sees it.
    pub fn code(&self) -> &[u8] {
        // SAFETY: `len` bytes were written in `new`.
        unsafe { std::slice::from_raw_parts(self.mem.ptr, self.len) }
    }

    fn new_emu(&self) -> Result<Emu, String> {
        let stack = HostMem::new(STACK)?;
        let hp = helper_page();
        let mut uc = Unicorn::new(Arch::ARM64, Mode::ARM).map_err(|e| ue("init", e))?;
        uc.ctl_set_cpu_model(unicorn_engine::Arm64CpuModel::MAX as i32).map_err(|e| ue("cpu model", e))?;
        // SAFETY: the image and the stack stay alive (and unmoved) as long as the emulator
        // (both are owned with it).
        unsafe {
            uc.mem_map_ptr(self.mem.addr(), self.mem.len as u64, Prot::READ | Prot::EXEC, self.mem.ptr as *mut _).map_err(|e| ue("map code", e))?;
            uc.mem_map_ptr(stack.addr(), stack.len as u64, Prot::READ | Prot::WRITE, stack.ptr as *mut _).map_err(|e| ue("map stack", e))?;
        }
        uc.mem_map(hp.base, HELPER_AREA, Prot::READ | Prot::EXEC).map_err(|e| ue("map helper page", e))?;
        let rets: Vec<u8> = (0..HELPER_AREA / 4).flat_map(|_| RET.to_le_bytes()).collect();
        uc.mem_write(hp.base, &rets).map_err(|e| ue("write helper page", e))?;
        let fault: Rc<Cell<Option<(u64, MemType)>>> = Default::default();
        let lazy: Rc<RefCell<Vec<u64>>> = Default::default();
        let (f2, l2) = (fault.clone(), lazy.clone());
        uc.add_code_hook(hp.base, hp.base + HELPER_AREA - 1, move |uc, addr, _| {
            let k = ((addr - hp.base) / 4) as usize;
            let Some(f) = hp.fns.lock().ok().and_then(|v| v.get(k).copied()) else { return };
            let rd = |r| uc.reg_read(r).unwrap_or(0);
            let args = [rd(RegisterARM64::X0), rd(RegisterARM64::X1), rd(RegisterARM64::X2), rd(RegisterARM64::X3), rd(RegisterARM64::X4)];
            // SAFETY: `f` is a registered helper, `extern "C" fn(u64 x5) -> u64`, called with
            // the arguments the verified program passes, as the native JIT would.
            let func: extern "C" fn(u64, u64, u64, u64, u64) -> u64 = unsafe { std::mem::transmute(f as usize) };
            let r = func(args[0], args[1], args[2], args[3], args[4]);
            let _ = uc.reg_write(RegisterARM64::X0, r);
        })
        .map_err(|e| ue("hook", e))?;
        uc.add_mem_hook(HookType::MEM_UNMAPPED, 1, 0, move |uc, kind, addr, size, _| {
            // Map the host page(s) the access touches, at the same address.
            let first = addr & !(PAGE - 1);
            let last = (addr + size.max(1) as u64 - 1) & !(PAGE - 1);
            let mut page = first;
            while page <= last {
                let (allowed, prot) = if kind == MemType::FETCH_UNMAPPED {
                    let inside = images().lock().map(|v| v.iter().any(|&(s, l)| page >= s && page < s + l)).unwrap_or(false);
                    (inside, Prot::READ | Prot::EXEC)
                } else {
                    (host_mapped(page), Prot::READ | Prot::WRITE)
                };
                // SAFETY: a live code image of this process, or a page the host has mapped:
                // a verified program only touches memory it may, so it is one the Vm gave it.
                let ok = allowed
                    && match unsafe { uc.mem_map_ptr(page, PAGE, prot, page as *mut _) } {
                        Ok(()) => {
                            l2.borrow_mut().push(page);
                            true
                        }
                        // Already mapped: the access spans into it from an unmapped page.
                        Err(unicorn_engine::uc_error::MAP) => true,
                        Err(_) => false,
                    };
                if !ok {
                    f2.set(Some((addr, kind)));
                    return false;
                }
                page += PAGE;
            }
            true
        })
        .map_err(|e| ue("hook", e))?;
        Ok(Emu { uc, stack, fault, lazy })
    }

    fn run_on(&self, emu: &mut Emu, r1: u64, r2: u64) -> Result<u64, String> {
        let exit = helper_page().base + 4 * SLOTS;
        emu.fault.set(None);
        let regs = [
            (RegisterARM64::X0, r1),
            (RegisterARM64::X1, r2),
            (RegisterARM64::SP, emu.stack.addr() + emu.stack.len as u64),
            (RegisterARM64::X30, exit),
        ];
        for (r, v) in regs {
            emu.uc.reg_write(r, v).map_err(|e| ue("registers", e))?;
        }
        let res = emu.uc.emu_start(self.mem.addr(), exit, 0, 0);
        let pc = emu.uc.reg_read(RegisterARM64::PC).unwrap_or(0);
        if let Err(e) = res {
            let at = if pc >= self.mem.addr() && pc < self.mem.addr() + self.len as u64 { format!("image offset {:#x}", pc - self.mem.addr()) } else { format!("pc {pc:#x}") };
            return Err(match emu.fault.get() {
                Some((addr, kind)) => format!("emulated arm64 code faulted at {at}: {kind:?} at {addr:#x}"),
                None => format!("emulated arm64 code stopped at {at}: {e:?}"),
            });
        }
        if pc != exit {
            return Err(format!("emulation ended at pc {pc:#x}, not at the return address"));
        }
        emu.uc.reg_read(RegisterARM64::X0).map_err(|e| ue("result", e))
    }

    /// Run with x0 = r1, x1 = r2; returns x0 or an error naming the fault.
    pub fn call(&self, r1: u64, r2: u64) -> Result<u64, String> {
        // A run inside a run of the same image (a helper running it again) gets its own
        // emulator.
        let Ok(mut slot) = self.emu.try_borrow_mut() else {
            let mut e = self.new_emu()?;
            return self.run_on(&mut e, r1, r2);
        };
        if slot.is_none() {
            *slot = Some(self.new_emu()?);
        }
        let emu = slot.as_mut().expect("just set");
        let r = self.run_on(emu, r1, r2);
        let pages: Vec<u64> = emu.lazy.borrow_mut().drain(..).collect();
        let mut clean = true;
        for p in pages {
            clean &= emu.uc.mem_unmap(p, PAGE).is_ok();
        }
        if r.is_err() || !clean {
            *slot = None;
        }
        r
    }
}

impl Drop for EmuCompiled {
    fn drop(&mut self) {
        if let Ok(mut v) = images().lock() {
            let a = self.mem.addr();
            v.retain(|&(s, _)| s != a);
        }
    }
}

impl Compiled for EmuCompiled {
    fn run(&self, r1: u64, r2: u64, env: &RunEnv<'_>) -> Result<u64, VmError> {
        let tables: Vec<(u64, u64, u64)> =
            env.vm().maps().filter(|m| m.prog_array_table() != 0).map(|m| (m.addr(), m.prog_array_table(), m.def.max_entries as u64)).collect();
        TAIL_MAPS.with(|t| *t.borrow_mut() = tables);
        // For LD_ABS: r1 is the `__sk_buff`; the packet's lowest address is its data at the
        // start of the run, less the Ethernet header a socket filter's data starts after.
        let kind = env.vm().program(env.prog).map(|p| p.ctx);
        let skb = match kind {
            Some(kops_vm::CtxKind::Skb { tc }) => Some((r1, env.packet_range().0.wrapping_sub(if tc { 0 } else { 14 }), tc)),
            _ => None,
        };
        SKB_RUN.with(|s| s.set(skb));
        let r = self.call(r1, r2);
        TAIL_MAPS.with(|t| t.borrow_mut().clear());
        SKB_RUN.with(|s| s.set(None));
        let name = env.vm().program(env.prog).map(|p| p.name.clone()).unwrap_or_default();
        r.map_err(|msg| VmError::Exec { prog: name, pc: 0, msg })
    }
    fn entry_address(&self) -> u64 {
        self.mem.addr()
    }
}

/// One line per instruction word of `code` (at `base`): `offset: word  text`, decoded by
/// yaxpeax-arm.
pub fn disassemble(code: &[u8], start: usize) -> Vec<(usize, u32, String)> {
    use yaxpeax_arch::{Decoder, U8Reader};
    let d = yaxpeax_arm::armv8::a64::InstDecoder::default();
    code.chunks_exact(4)
        .enumerate()
        .map(|(k, b)| {
            let w = u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
            let t = match d.decode(&mut U8Reader::new(b)) {
                Ok(i) => i.to_string(),
                Err(e) => format!("<{e}>"),
            };
            (start + 4 * k, w, t)
        })
        .collect()
}

#[cfg(test)]
mod tests;
