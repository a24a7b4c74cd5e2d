//! The running kernel's verifier as the gate in front of Kops's native runtimes
//! ([`KernelVerifier`], a [`kops_vm::Verifier`]).
//!
//! A program is checked the way `kops verify` checks it: kinsn sites lowered to their
//! proof sequences (func_info/line_info fixed up), the object's maps created (global data
//! with its contents, `.rodata` frozen), its BTF, program type, expected attach type and
//! attach target, through BPF_PROG_LOAD. The loaded program is closed right away: only the
//! verdict matters.
//!
//! Accepted verdicts are cached under a SHA-256 of everything the verdict depends on: the
//! kernel (release, version, machine), the lowered instructions, func_info and line_info,
//! program type, attach type, section, name, license, and every map definition with its
//! initial contents, and the object's BTF. A program that differs in any of these is a
//! different key, so the cache never lets a different program through. The cache lives in
//! memory and, unless `KOPS_VERIFY_CACHE=off`, in a directory (`KOPS_VERIFY_CACHE`, else
//! `$XDG_CACHE_HOME/kops/verdicts`, else `~/.cache/kops/verdicts`) so that repeated runs
//! and the benchmark do not pay for verification again. Whoever can write that directory
//! can make Kops run a program unverified, as whoever can replace the `kops` binary can.

use crate::{KernelBtf, KernelError, MapSet};
use kops_object::{Object, Program};
use kops_vm::{VerifyError, VerifyRequest};
use sha2::{Digest, Sha256};
use std::cell::{Cell, RefCell};
use std::collections::HashSet;
use std::path::PathBuf;

/// What the kernel is given for a program: the program itself, or, when it has kinsn
/// sites, its lowered form (every site replaced by its proof sequence, jumps, calls,
/// subprograms, func_info and line_info fixed for the new layout) with the record that maps
/// lowered slots back to the original ones.
pub struct KernelForm {
    pub prog: Program,
    pub lowered: Option<kops_kinsn::Lowered>,
}

/// The kernel knows nothing of sites: lower them with `registry`. A malformed site (or
/// sites without a registry) is an error naming its slot.
pub fn kernel_form(p: &Program, registry: Option<&kops_kinsn::Registry>) -> Result<KernelForm, String> {
    let first = p.insns.iter().position(|i| i.is_kinsn_sidecar() || i.is_kinsn_call());
    let Some(first) = first else {
        return Ok(KernelForm { prog: p.clone(), lowered: None });
    };
    let Some(registry) = registry else {
        return Err(format!("insn {first}: kinsn site, but no operation registry to lower it with"));
    };
    let (prog, l) = kops_kinsn::lower_program(p, registry).map_err(|e| format!("kinsn sites cannot be lowered: {e}"))?;
    Ok(KernelForm { prog, lowered: Some(l) })
}

/// The kernel verifier as a [`kops_vm::Verifier`], with a verdict cache.
pub struct KernelVerifier {
    accepted: RefCell<HashSet<[u8; 32]>>,
    dir: Option<PathBuf>,
    /// Maps and BTF of the last object, created once for all its programs.
    object: RefCell<Option<([u8; 32], MapSet, Option<KernelBtf>)>>,
    loads: Cell<usize>,
    hits: Cell<usize>,
}

impl Default for KernelVerifier {
    fn default() -> KernelVerifier {
        KernelVerifier::new()
    }
}

impl KernelVerifier {
    /// With the on-disk cache from the environment (see the module doc).
    pub fn new() -> KernelVerifier {
        KernelVerifier::with_cache_dir(default_cache_dir())
    }

    /// With the on-disk cache in `dir` (None: memory only).
    pub fn with_cache_dir(dir: Option<PathBuf>) -> KernelVerifier {
        KernelVerifier {
            accepted: RefCell::new(HashSet::new()),
            dir,
            object: RefCell::new(None),
            loads: Cell::new(0),
            hits: Cell::new(0),
        }
    }

    /// Programs given to BPF_PROG_LOAD so far, and verdicts taken from the cache.
    pub fn counts(&self) -> (usize, usize) {
        (self.loads.get(), self.hits.get())
    }

    fn cached(&self, key: &[u8; 32]) -> bool {
        if self.accepted.borrow().contains(key) {
            return true;
        }
        let on_disk = self.dir.as_ref().is_some_and(|d| d.join(hex(key)).is_file());
        if on_disk {
            self.accepted.borrow_mut().insert(*key);
        }
        on_disk
    }

    fn remember(&self, key: [u8; 32], what: &str) {
        self.accepted.borrow_mut().insert(key);
        if let Some(d) = &self.dir {
            // A cache that cannot be written only costs time: ignore errors.
            if std::fs::create_dir_all(d).is_ok() {
                let _ = std::fs::write(d.join(hex(&key)), format!("{what}\n"));
            }
        }
    }

    fn check(&self, obj: &Object, okey: [u8; 32], form: &KernelForm, original: &Program) -> Result<(), VerifyError> {
        {
            let mut slot = self.object.borrow_mut();
            if slot.as_ref().map(|(k, _, _)| k) != Some(&okey) {
                // Without BTF the kernel still verifies the code (as `kops verify` does).
                let btf = KernelBtf::for_object(obj).unwrap_or(None);
                let maps = MapSet::create_with_btf(&obj.maps, btf.as_ref()).map_err(|e| unavailable(&e))?;
                *slot = Some((okey, maps, btf));
            }
        }
        let slot = self.object.borrow();
        let (_, maps, btf) = slot.as_ref().expect("set above");
        self.loads.set(self.loads.get() + 1);
        match crate::load_object_program(obj, &form.prog, &form.prog.insns, maps, btf.as_ref(), 0) {
            Ok(_) => Ok(()),
            Err(KernelError::Rejected { message, insn, errno_name, .. }) => {
                let (pc, at) = locate(form, original, insn);
                let msg = message.lines().next().unwrap_or("").trim().to_string();
                let msg = if msg.is_empty() { format!("BPF_PROG_LOAD failed with {errno_name} (the verifier log is empty)") } else { msg };
                Err(VerifyError::Rejected { verifier: "kernel".into(), pc, reason: format!("{msg}{at}") })
            }
            Err(e) => Err(unavailable(&e)),
        }
    }
}

// SAFETY: returns Ok only when the running kernel's verifier accepted the lowered program
// with the same maps, BTF and program type (now, or for an identical key before).
unsafe impl kops_vm::Verifier for KernelVerifier {
    fn name(&self) -> &str {
        "kernel"
    }

    fn verify(&self, req: &VerifyRequest<'_>) -> Result<(), VerifyError> {
        let p = req.program;
        if p.prog_type_id == 0 {
            return Err(VerifyError::Unavailable(format!(
                "the kernel verifies only programs with a program type, and `{}` has none (section `{}` names no type libbpf knows)",
                p.name, p.section
            )));
        }
        let raw;
        let obj = match req.object {
            Some(o) => o,
            None => {
                raw = Object::empty(&format!("<program {}>", p.name), Vec::new());
                &raw
            }
        };
        let form = kernel_form(p, req.registry).map_err(|reason| VerifyError::Rejected { verifier: "kops".into(), pc: None, reason })?;
        // Maps and BTF are hashed once per request: both the key and the map cache use it.
        let okey = object_key(obj);
        let key = verdict_key(&okey, &form.prog);
        if self.cached(&key) {
            self.hits.set(self.hits.get() + 1);
            return Ok(());
        }
        crate::available().map_err(|e| unavailable(&e))?;
        self.check(obj, okey, &form, p)?;
        self.remember(key, &format!("{} {}", obj.path, p.name));
        Ok(())
    }
}

fn unavailable(e: &KernelError) -> VerifyError {
    match e {
        KernelError::KernelUnavailable(_) => VerifyError::Unavailable(format!(
            "{e}. Native runtimes run only programs the kernel verifier accepted: run as root (or with CAP_BPF, CAP_PERFMON and CAP_NET_ADMIN), use the interpreter (`--runtime interp`, which checks every access), or opt out with `--unverified` for a program you know is safe"
        )),
        e => VerifyError::Unavailable(format!("the kernel could not check it: {e}")),
    }
}

/// The original slot of a verifier message's instruction, and a note saying what it is.
fn locate(form: &KernelForm, original: &Program, insn: Option<usize>) -> (Option<usize>, String) {
    let Some(i) = insn else { return (None, String::new()) };
    let Some(l) = &form.lowered else {
        return (Some(i), format!(" (insn {i}: `{}`)", describe(&original.insns, i)));
    };
    let Some(o) = l.orig_slot(i) else { return (None, format!(" (lowered slot {i})")) };
    match l.region_at(i) {
        Some(r) => (
            Some(r.orig_pc),
            format!(" (slot {} of the proof sequence of the kinsn site at insn {}, op id {})", i - r.start, r.orig_pc, r.op_id),
        ),
        None => (Some(o), format!(" (insn {o}: `{}`)", describe(&original.insns, o))),
    }
}

fn describe(insns: &[kops_isa::Insn], i: usize) -> String {
    if i < insns.len() {
        kops_isa::disasm::format(insns, i)
    } else {
        format!("no slot {i}")
    }
}

fn default_cache_dir() -> Option<PathBuf> {
    match std::env::var_os("KOPS_VERIFY_CACHE") {
        Some(v) if v == "off" || v.is_empty() => return None,
        Some(v) => return Some(PathBuf::from(v)),
        None => {}
    }
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))?;
    Some(base.join("kops").join("verdicts"))
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// The running kernel, as far as the verifier's behaviour can depend on it.
fn kernel_identity() -> String {
    // SAFETY: uname fills the zeroed struct; the fields are NUL-terminated strings.
    let mut u: libc::utsname = unsafe { std::mem::zeroed() };
    if unsafe { libc::uname(&mut u) } != 0 {
        return "unknown kernel".into();
    }
    let field = |f: &[libc::c_char]| {
        let bytes: Vec<u8> = f.iter().take_while(|&&c| c != 0).map(|&c| c as u8).collect();
        String::from_utf8_lossy(&bytes).into_owned()
    };
    format!("{} {} {}", field(&u.release), field(&u.version), field(&u.machine))
}

fn put(h: &mut Sha256, tag: &str, bytes: &[u8]) {
    // Tagged and length-prefixed, so no two different inputs give the same stream.
    h.update(tag.as_bytes());
    h.update((bytes.len() as u64).to_le_bytes());
    h.update(bytes);
}

/// The object's maps and BTF (what the program's maps look like to the verifier).
fn object_key(obj: &Object) -> [u8; 32] {
    let mut h = Sha256::new();
    put(&mut h, "kops object v1", &[]);
    put(&mut h, "path", obj.path.as_bytes());
    put(&mut h, "license", obj.license.as_bytes());
    put(&mut h, "kver", &obj.kernel_version.to_le_bytes());
    put(&mut h, "btf", obj.btf.as_deref().unwrap_or(&[]));
    for m in &obj.maps {
        // Debug of MapDef lists every field, initial contents included.
        put(&mut h, "map", format!("{m:?}").as_bytes());
    }
    h.finalize().into()
}

/// Everything a verdict on `prog` (the kernel form) depends on.
fn verdict_key(object_key: &[u8; 32], prog: &Program) -> [u8; 32] {
    let mut h = Sha256::new();
    put(&mut h, "kops verdict v1", &[]);
    put(&mut h, "kernel", kernel_identity().as_bytes());
    put(&mut h, "object", object_key);
    put(&mut h, "name", prog.name.as_bytes());
    put(&mut h, "section", prog.section.as_bytes());
    put(&mut h, "type", &prog.prog_type_id.to_le_bytes());
    put(&mut h, "attach", &prog.expected_attach_type.to_le_bytes());
    put(&mut h, "insns", &kops_isa::to_bytes(&prog.insns));
    put(&mut h, "func_info", format!("{:?}", prog.func_info).as_bytes());
    put(&mut h, "line_info", format!("{:?}", prog.line_info).as_bytes());
    h.finalize().into()
}
