//! CO-RE relocations and externs, resolved against the running kernel by libbpf itself.
//!
//! [`relocate`] opens the object's ELF with libbpf (`bpf_object__open_mem`, no custom BTF
//! path, so libbpf uses `/sys/kernel/btf/vmlinux`) and calls `bpf_object__prepare`, which
//! resolves externs (`.kconfig` from /proc/config.gz or /boot/config-*, `.ksyms` and kfuncs
//! from vmlinux BTF and kallsyms, with libbpf's weak/strong rules), applies every CO-RE
//! relocation and lays out subprograms, without loading programs. The relocated
//! instructions (`bpf_program__insns`) are then put back into our object model:
//!
//! - libbpf appends subprograms depth-first (a callee right after its first caller's scan
//!   reaches it), our loader breadth-first: each function's slots are located in libbpf's
//!   layout by replaying its order on our call graph, and the result keeps our layout, so
//!   calls, func_info and line_info stay as the loader made them;
//! - map references stay in our `PSEUDO_MAP_IDX` form (libbpf is told not to create the
//!   object's maps); `.kconfig` values become a new read-only global-data map `.kconfig`
//!   (libbpf's contents) appended to `Object::maps`, referenced with `PSEUDO_MAP_IDX_VALUE`;
//! - kfunc calls get the kernel's BTF id (`src_reg = 2`), typed ksyms `PSEUDO_BTF_ID`,
//!   untyped ksyms their kallsyms address; unresolved weak ones stay as libbpf poisons them;
//! - a failed CO-RE relocation is poisoned by libbpf (`call 0xbad2310`), which the verifier
//!   only reports when the code is reachable (guarded `bpf_core_field_exists` code is not);
//! - the object's BTF becomes libbpf's fixed-up copy (extern DATASECs as the kernel wants).
//!
//! Limits, reported as errors naming the object, program and slot: kfuncs and ksyms in
//! kernel modules (their BTF fd would belong to the closed libbpf object). Needs bpf(2):
//! libbpf probes the kernel and creates the `.kconfig` map.
//!
//! `kops verify`, `run` and `diff` call this when [`Object::needs_relocation`].

use std::collections::HashMap;
use std::ffi::{CStr, CString};
use std::sync::Mutex;

use kops_isa::{op, Insn};
use kops_object::{ExternKind, MapDef, MapOrigin, Object, Program};

use crate::{available, KernelError};

/// libbpf's `POISON_CALL_KFUNC_BASE`: an unresolved weak kfunc call becomes `call BASE+idx`.
const POISON_CALL_KFUNC_BASE: i32 = 2002000000;

static LOCK: Mutex<()> = Mutex::new(());
static LOG: Mutex<String> = Mutex::new(String::new());
/// libbpf's debug lines about CO-RE relocations: each one's local spec, and the ones it
/// poisoned (`substituting insn`).
static CORE_LOG: Mutex<Vec<String>> = Mutex::new(Vec::new());

unsafe extern "C" {
    fn vsnprintf(buf: *mut libc::c_char, n: libc::size_t, fmt: *const libc::c_char, ap: *mut libbpf_sys::__va_list_tag) -> libc::c_int;
}

unsafe extern "C" fn capture(level: libbpf_sys::libbpf_print_level, fmt: *const libc::c_char, ap: *mut libbpf_sys::__va_list_tag) -> libc::c_int {
    let mut buf = [0u8; 1024];
    let n = unsafe { vsnprintf(buf.as_mut_ptr() as *mut _, buf.len(), fmt, ap) };
    if n > 0 {
        let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
        let line = String::from_utf8_lossy(&buf[..end]);
        if level != libbpf_sys::LIBBPF_DEBUG {
            if let Ok(mut l) = LOG.lock() {
                l.push_str(&line);
            }
        } else if line.contains(": relo #") && (line.contains(": <") || line.contains("substituting insn")) {
            if let Ok(mut l) = CORE_LOG.lock() {
                l.push(line.trim_end().to_string());
            }
        }
    }
    0
}

/// Owns a libbpf object; closes it (and the `.kconfig` map fd) on drop.
struct LibbpfObject(*mut libbpf_sys::bpf_object);

impl Drop for LibbpfObject {
    fn drop(&mut self) {
        unsafe { libbpf_sys::bpf_object__close(self.0) };
    }
}

fn insn_from(r: &libbpf_sys::bpf_insn) -> Insn {
    Insn::new(r.code, r.dst_reg(), r.src_reg(), r.off, r.imm)
}

/// A CO-RE relocation that found no match in the kernel's BTF: libbpf replaced its
/// instruction with `call 0xbad2310`, which the verifier refuses only where reachable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Poisoned {
    pub program: String,
    /// Slot in the program (our layout).
    pub slot: usize,
    /// Function the relocation is in, and its index among its ELF section's CO-RE records.
    pub function: String,
    pub relo: usize,
    /// libbpf's rendering of the local spec (`<byte_off> [27] struct inet_sock.freebind ...`).
    pub spec: String,
}

impl std::fmt::Display for Poisoned {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CO-RE relocation #{} of function `{}` ({}) has no match in this kernel's BTF", self.relo, self.function, self.spec)
    }
}

/// Relocates `obj` (read from its file, `obj.path`) against the running kernel; see the
/// module doc. An object that needs nothing is returned as is.
pub fn relocate(obj: &Object) -> Result<Object, KernelError> {
    relocate_explained(obj).map(|r| r.0)
}

/// [`relocate`], with the CO-RE relocations libbpf had to poison.
pub fn relocate_explained(obj: &Object) -> Result<(Object, Vec<Poisoned>), KernelError> {
    if !obj.needs_relocation() {
        return Ok((obj.clone(), Vec::new()));
    }
    let elf = std::fs::read(&obj.path).map_err(|e| KernelError::Invalid(format!("{}: cannot read for relocation: {e}", obj.path)))?;
    relocate_elf_explained(obj, &elf)
}

/// [`relocate`] with the object's ELF bytes given (those `obj` was loaded from).
pub fn relocate_elf(obj: &Object, elf: &[u8]) -> Result<Object, KernelError> {
    relocate_elf_explained(obj, elf).map(|r| r.0)
}

fn relocate_elf_explained(obj: &Object, elf: &[u8]) -> Result<(Object, Vec<Poisoned>), KernelError> {
    available()?;
    let _guard = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    if let Ok(mut l) = LOG.lock() {
        l.clear();
    }
    if let Ok(mut l) = CORE_LOG.lock() {
        l.clear();
    }
    unsafe { libbpf_sys::libbpf_set_print(Some(capture)) };
    let r = prepare_and_map(obj, elf);
    crate::sys::quiet_libbpf_now();
    let out = r?;
    let lines = CORE_LOG.lock().map(|mut l| std::mem::take(&mut *l)).unwrap_or_default();
    let poisoned = poisoned(&out, &lines);
    Ok((out, poisoned))
}

/// Parses `prog 'F': relo #K: ...` lines: K's spec, and `substituting insn #I` (I counted
/// from the start of function F, as libbpf applies CO-RE before laying out subprograms).
fn poisoned(obj: &Object, lines: &[String]) -> Vec<Poisoned> {
    let head = |l: &str| -> Option<(String, usize, String)> {
        let rest = l.strip_prefix("libbpf: ").unwrap_or(l).strip_prefix("prog '")?;
        let (func, rest) = rest.split_once("': relo #")?;
        let (k, rest) = rest.split_once(": ")?;
        Some((func.to_string(), k.parse().ok()?, rest.to_string()))
    };
    let mut spec: HashMap<(String, usize), String> = HashMap::new();
    let mut out = Vec::new();
    for l in lines {
        let Some((func, k, rest)) = head(l) else { continue };
        if rest.starts_with('<') {
            spec.entry((func, k)).or_insert(rest);
            continue;
        }
        let Some(i) = rest.strip_prefix("substituting insn #").and_then(|r| r.split(' ').next()).and_then(|n| n.parse::<usize>().ok()) else {
            continue;
        };
        for p in &obj.programs {
            for sp in p.subprogs.iter().filter(|s| s.name == func && i < s.len) {
                let slot = sp.start + i;
                let x = p.insns[slot];
                if x.is_call() && x.src == 0 && x.imm == 0xbad2310 {
                    out.push(Poisoned {
                        program: p.name.clone(),
                        slot,
                        function: func.clone(),
                        relo: k,
                        spec: spec.get(&(func.clone(), k)).cloned().unwrap_or_else(|| "spec not logged".into()),
                    });
                }
            }
        }
    }
    out
}

fn fail(obj: &Object, what: String) -> KernelError {
    let log = LOG.lock().map(|l| l.clone()).unwrap_or_default();
    let log: Vec<String> = log
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| if l.starts_with("libbpf: ") { format!("\n  {l}") } else { format!("\n  libbpf: {l}") })
        .collect();
    let tail = log.concat();
    KernelError::Relocation { object: obj.path.clone(), msg: format!("{what}{tail}") }
}

fn prepare_and_map(obj: &Object, elf: &[u8]) -> Result<Object, KernelError> {
    let name = CString::new(std::path::Path::new(&obj.path).file_stem().map(|s| s.to_string_lossy().replace('.', "_")).unwrap_or_default())
        .unwrap_or_else(|_| CString::new("obj").unwrap());
    let opts = libbpf_sys::bpf_object_open_opts {
        sz: std::mem::size_of::<libbpf_sys::bpf_object_open_opts>() as _,
        object_name: name.as_ptr(),
        ..Default::default()
    };
    let raw = unsafe { libbpf_sys::bpf_object__open_mem(elf.as_ptr() as *const _, elf.len() as _, &opts) };
    if raw.is_null() {
        let e = std::io::Error::last_os_error();
        return Err(fail(obj, format!("libbpf cannot open the object: {e}")));
    }
    let lo = LibbpfObject(raw);
    // Only `.kconfig` is needed from the kernel: our maps keep their indices.
    for m in maps_of(&lo) {
        if !is_kconfig(m) {
            unsafe { libbpf_sys::bpf_map__set_autocreate(m, false) };
        }
    }
    // Programs libbpf would skip (`SEC("?...")`) are still relocated: we verify them all.
    let mut p = std::ptr::null_mut();
    loop {
        p = unsafe { libbpf_sys::bpf_object__next_program(lo.0, p) };
        if p.is_null() {
            break;
        }
        unsafe { libbpf_sys::bpf_program__set_autoload(p, true) };
    }
    let err = unsafe { libbpf_sys::bpf_object__prepare(lo.0) };
    if err < 0 {
        return Err(fail(obj, format!("libbpf could not resolve externs or apply CO-RE relocations ({})", crate::sys::errno_text(-err))));
    }

    let mut out = obj.clone();
    // The `.kconfig` map, as libbpf filled it.
    let mut kconfig: Option<(i32, usize)> = None;
    for m in maps_of(&lo) {
        if !is_kconfig(m) {
            continue;
        }
        let fd = unsafe { libbpf_sys::bpf_map__fd(m) };
        let size = unsafe { libbpf_sys::bpf_map__value_size(m) };
        let mut got: libbpf_sys::size_t = 0;
        let data = unsafe { libbpf_sys::bpf_map__initial_value(m, &mut got) };
        if data.is_null() || got as usize != size as usize {
            return Err(fail(obj, "libbpf's .kconfig map has no readable contents".into()));
        }
        let initial = unsafe { std::slice::from_raw_parts(data as *const u8, size as usize) }.to_vec();
        let mut def = MapDef::new(".kconfig", MapOrigin::GlobalData, kops_object::map_type::ARRAY, 4, size, 1);
        def.flags = 0x80; // BPF_F_RDONLY_PROG, as for .rodata
        def.readonly = true;
        def.initial = Some(initial);
        def.btf_value_type_id = unsafe { libbpf_sys::bpf_map__btf_value_type_id(m) };
        kconfig = Some((fd, out.maps.len()));
        out.maps.push(def);
    }

    for (pi, p) in obj.programs.iter().enumerate() {
        let cname = CString::new(p.name.as_str()).map_err(|_| fail(obj, format!("program '{}': name has a NUL byte", p.name)))?;
        let lp = unsafe { libbpf_sys::bpf_object__find_program_by_name(lo.0, cname.as_ptr()) };
        if lp.is_null() {
            return Err(fail(obj, format!("program '{}': libbpf has no program of that name", p.name)));
        }
        let n = unsafe { libbpf_sys::bpf_program__insn_cnt(lp) } as usize;
        let ip = unsafe { libbpf_sys::bpf_program__insns(lp) };
        if ip.is_null() {
            return Err(fail(obj, format!("program '{}': libbpf gives no instructions", p.name)));
        }
        let lb: Vec<Insn> = unsafe { std::slice::from_raw_parts(ip, n) }.iter().map(insn_from).collect();
        let insns = map_back(obj, pi, p, &lb, kconfig).map_err(|m| fail(obj, format!("program '{}': {m}", p.name)))?;
        out.programs[pi].insns = insns;
    }

    let btf = unsafe { libbpf_sys::bpf_object__btf(lo.0) };
    if !btf.is_null() {
        let mut sz: u32 = 0;
        let d = unsafe { libbpf_sys::btf__raw_data(btf, &mut sz) };
        if !d.is_null() {
            out.btf = Some(unsafe { std::slice::from_raw_parts(d as *const u8, sz as usize) }.to_vec());
        }
    }
    for e in &mut out.externs {
        e.resolved = true;
        let ids: Vec<u32> = e
            .sites
            .iter()
            .filter_map(|&(pi, s)| out.programs.get(pi).and_then(|p| p.insns.get(s)))
            .filter(|i| (i.is_call() && i.src == op::PSEUDO_KFUNC_CALL) || (i.is_ld_imm64() && i.src == op::PSEUDO_BTF_ID))
            .map(|i| i.imm as u32)
            .collect();
        e.btf_id = ids.first().copied().unwrap_or(0);
        if e.kind == ExternKind::Kconfig {
            e.sites.clear();
        }
    }
    out.core_relos = 0;
    Ok(out)
}

/// The maps of an open libbpf object, in its order.
fn maps_of(lo: &LibbpfObject) -> Vec<*mut libbpf_sys::bpf_map> {
    let mut v = Vec::new();
    let mut m = std::ptr::null_mut();
    loop {
        // SAFETY: `lo` is open; `m` is null or a map of it.
        m = unsafe { libbpf_sys::bpf_object__next_map(lo.0, m) };
        if m.is_null() {
            return v;
        }
        v.push(m);
    }
}

fn is_kconfig(m: *const libbpf_sys::bpf_map) -> bool {
    unsafe {
        libbpf_sys::bpf_map__is_internal(m) && {
            let n = libbpf_sys::bpf_map__name(m);
            !n.is_null() && CStr::from_ptr(n).to_bytes().ends_with(b".kconfig")
        }
    }
}

/// libbpf's subprogram order for `p`: depth-first from the entry, each callee appended when
/// the scan first reaches a reference to it (`bpf_object__reloc_code`); then the exception
/// callback `exception_cb` (a subprogram index) if not yet placed, and what it reaches.
fn libbpf_order(p: &Program, exception_cb: Option<usize>) -> Vec<usize> {
    let sub_of = |t: i64| p.subprogs.iter().position(|s| t >= s.start as i64 && t < (s.start + s.len) as i64);
    let mut order = vec![0usize];
    let mut placed = vec![false; p.subprogs.len()];
    if let Some(x) = placed.first_mut() {
        *x = true;
    }
    // (function, next slot to scan)
    let mut stack = vec![(0usize, p.subprogs.first().map(|s| s.start).unwrap_or(0))];
    let mut exception_cb = exception_cb;
    loop {
        let Some(&mut (f, ref mut s)) = stack.last_mut() else {
            match exception_cb.take() {
                Some(cb) if cb < placed.len() && !placed[cb] => {
                    placed[cb] = true;
                    order.push(cb);
                    stack.push((cb, p.subprogs[cb].start));
                    continue;
                }
                _ => break,
            }
        };
        let sp = &p.subprogs[f];
        if *s >= sp.start + sp.len || *s >= p.insns.len() {
            stack.pop();
            continue;
        }
        let i = p.insns[*s];
        let here = *s;
        *s += if i.is_ld_imm64() { 2 } else { 1 };
        if i.is_pseudo_call() || (i.is_ld_imm64() && i.src == op::PSEUDO_FUNC) {
            if let Some(tf) = sub_of(here as i64 + 1 + i.imm as i64) {
                if !placed[tf] {
                    placed[tf] = true;
                    order.push(tf);
                    let start = p.subprogs[tf].start;
                    stack.push((tf, start));
                }
            }
        }
    }
    order
}

/// Our program with libbpf's relocated instructions `lb` put in.
fn map_back(obj: &Object, pi: usize, p: &Program, lb: &[Insn], kconfig: Option<(i32, usize)>) -> Result<Vec<Insn>, String> {
    let cb = obj.exception_callback(p).and_then(|start| p.subprogs.iter().position(|s| s.start == start));
    let order = libbpf_order(p, cb);
    let total: usize = order.iter().map(|&f| p.subprogs[f].len).sum();
    if order.len() != p.subprogs.len() || total != lb.len() {
        return Err(format!(
            "libbpf laid the program out in {} slots, our loader in {} ({} of {} functions reached): cannot map the relocated code back",
            lb.len(),
            total,
            order.len(),
            p.subprogs.len()
        ));
    }
    let mut lstart = HashMap::new();
    let mut at = 0;
    for &f in &order {
        lstart.insert(f, at);
        at += p.subprogs[f].len;
    }
    let mut out = p.insns.clone();
    for (f, sp) in p.subprogs.iter().enumerate() {
        let base = lstart[&f];
        let mut k = 0;
        while k < sp.len {
            let s = sp.start + k;
            let ours = p.insns[s];
            let theirs = lb[base + k];
            let wide = ours.is_ld_imm64();
            let step = if wide { 2 } else { 1 };
            let slot_err = |m: String| format!("insn {s}: {m}");
            if wide && k + 1 >= sp.len {
                return Err(slot_err("ld_imm64 is missing its second half".into()));
            }
            if let Some(e) = obj.extern_at(pi, s) {
                // By the instruction: `&kfunc` (bpf_ksym_exists) is an ld_imm64 of a kfunc.
                if ours.is_call() {
                    if !theirs.is_call() {
                        return Err(slot_err(format!("kfunc '{}': libbpf left no call here", e.name)));
                    }
                    if theirs.src == op::PSEUDO_KFUNC_CALL && theirs.off != 0 {
                        return Err(slot_err(format!("kfunc '{}' is in a kernel module; module kfuncs are not supported", e.name)));
                    }
                    if theirs.src != op::PSEUDO_KFUNC_CALL && !(theirs.src == 0 && theirs.imm >= POISON_CALL_KFUNC_BASE) {
                        return Err(slot_err(format!("kfunc '{}': unexpected call form src_reg {} imm {}", e.name, theirs.src, theirs.imm)));
                    }
                    out[s] = theirs;
                } else {
                    if !theirs.is_ld_imm64() {
                        return Err(slot_err(format!("{} '{}': libbpf left no ld_imm64 here", e.kind.name(), e.name)));
                    }
                    let mut lo = theirs;
                    let mut hi = lb[base + k + 1];
                    match theirs.src {
                        0 => {}
                        op::PSEUDO_MAP_VALUE => match kconfig {
                            Some((fd, idx)) if fd == theirs.imm => {
                                lo.src = op::PSEUDO_MAP_IDX_VALUE;
                                lo.imm = idx as i32;
                            }
                            _ => return Err(slot_err(format!("{} '{}': map value reference to a map other than .kconfig", e.kind.name(), e.name))),
                        },
                        op::PSEUDO_BTF_ID => {
                            if hi.imm != 0 {
                                return Err(slot_err(format!("ksym '{}' is in a kernel module; module ksyms are not supported", e.name)));
                            }
                        }
                        x => return Err(slot_err(format!("{} '{}': unexpected ld_imm64 src_reg {x}", e.kind.name(), e.name))),
                    }
                    hi.code = 0;
                    out[s] = lo;
                    out[s + 1] = hi;
                }
                k += step;
                continue;
            }
            let ours_ref = ours.is_pseudo_call()
                || (wide && matches!(ours.src, op::PSEUDO_FUNC | op::PSEUDO_MAP_IDX | op::PSEUDO_MAP_IDX_VALUE));
            if ours_ref {
                // Our encoding stands (our layout, our map indices); libbpf's must be the
                // same kind of instruction (or a map reference it poisoned, since it did
                // not create the map).
                let same = if wide { theirs.is_ld_imm64() || theirs.is_call() } else { theirs.is_call() };
                if !same {
                    return Err(slot_err(format!("libbpf has opcode {:#04x} where ours is a call or reference", theirs.code)));
                }
                k += step;
                continue;
            }
            out[s] = theirs;
            if wide {
                out[s + 1] = lb[base + k + 1];
            }
            k += step;
        }
    }
    Ok(out)
}
