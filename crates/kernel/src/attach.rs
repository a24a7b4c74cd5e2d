//! Attach targets of tracing programs, which the verifier needs at load time.
//!
//! `fentry/NAME`, `fexit/NAME`, `fmod_ret/NAME`, `tp_btf/NAME`, `iter/NAME`, `lsm/NAME`
//! attach to a kernel function found in vmlinux BTF (libbpf's
//! `libbpf_find_vmlinux_btf_id`). When NAME is not a kernel function, the program follows
//! the convention of tools such as xdpdump: the target is a BPF program picked at run time
//! (`fentry/func` is a placeholder). For fentry/fexit we then load a stand-in XDP program
//! whose BTF declares `int NAME(struct xdp_md *ctx)` and attach to it, which is what such
//! a tool does with the XDP program it traces.

use std::ffi::CString;
use std::os::fd::AsRawFd;

use kops_object::Program;

use crate::btf::{xdp_func_btf, KernelBtf};
use crate::prog::{load_program, LoadOptions, LoadedProg};
use crate::KernelError;

const TRACING: u32 = 26;
const EXT: u32 = 28;
const LSM: u32 = 29;
const FENTRY: u32 = 24;
const FEXIT: u32 = 25;

pub(crate) type Resolved = Option<(String, Option<Box<(LoadedProg, KernelBtf)>>)>;

/// BTF id of a kernel function/tracepoint/hook in vmlinux, for `attach_type`.
pub fn vmlinux_btf_id(name: &str, attach_type: u32) -> Option<u32> {
    let c = CString::new(name).ok()?;
    let r = unsafe { libbpf_sys::libbpf_find_vmlinux_btf_id(c.as_ptr(), attach_type) };
    (r > 0).then_some(r as u32)
}

/// A loaded XDP program with one BTF function `name`; returns it, its BTF and the
/// function's BTF id.
pub fn stand_in_xdp_target(name: &str) -> Result<(LoadedProg, KernelBtf, u32), KernelError> {
    let btf = KernelBtf::load(xdp_func_btf(name))?;
    let opts = LoadOptions {
        name: name.into(),
        prog_type: 6,
        btf_fd: Some(btf.fd.as_raw_fd()),
        func_info: vec![kops_object::FuncInfo { insn_off: 0, type_id: 5 }],
        ..LoadOptions::default()
    };
    let prog = load_program(&[kops_isa::Insn::mov64_imm(0, 2), kops_isa::Insn::exit()], &opts, &[])?;
    Ok((prog, btf, 5))
}

pub(crate) fn resolve(prog: &Program, opts: &mut LoadOptions) -> Result<Resolved, KernelError> {
    if !matches!(prog.prog_type_id, TRACING | EXT | LSM) || opts.attach_btf_id != 0 {
        return Ok(None);
    }
    let target = prog.section.split_once('/').map(|(_, t)| t).unwrap_or("");
    if prog.prog_type_id == EXT {
        return Err(KernelError::Invalid(format!(
            "program `{}` (section `{}`) replaces a function of another BPF program chosen at run \
             time (freplace); kops has no target program to load it against",
            prog.name, prog.section
        )));
    }
    if !target.is_empty() {
        if let Some(id) = vmlinux_btf_id(target, prog.expected_attach_type) {
            opts.attach_btf_id = id;
            return Ok(Some((format!("attached to kernel function `{target}` (vmlinux BTF id {id})"), None)));
        }
    }
    if matches!(prog.expected_attach_type, FENTRY | FEXIT) {
        let name = if target.is_empty() { "func" } else { target };
        let (stand_in, btf, id) = stand_in_xdp_target(name)?;
        opts.attach_btf_id = id;
        opts.attach_prog_fd = Some(stand_in.fd.as_raw_fd());
        let note = format!(
            "`{name}` is not a kernel function: attached to a stand-in XDP program \
             `int {name}(struct xdp_md *ctx)` (the target is chosen at run time)"
        );
        return Ok(Some((note, Some(Box::new((stand_in, btf))))));
    }
    Err(KernelError::Invalid(format!(
        "program `{}` (section `{}`): attach target `{target}` not found in vmlinux BTF",
        prog.name, prog.section
    )))
}

/// Loads program `prog` of `obj` as an extension (`BPF_PROG_TYPE_EXT`, freplace) of the
/// global function `func` of the already loaded program `target`, whose BTF was
/// `target_btf` (raw, as given to the kernel). This is how libxdp attaches XDP programs
/// to its dispatcher (`prog0`..`prog9`); the kernel checks that the prototypes match.
#[allow(clippy::too_many_arguments)]
pub fn load_as_extension(
    obj: &kops_object::Object,
    prog: &Program,
    insns: &[kops_isa::Insn],
    maps: &crate::MapSet,
    btf: &KernelBtf,
    target: &LoadedProg,
    target_btf: &[u8],
    func: &str,
    log_level: u32,
) -> Result<LoadedProg, KernelError> {
    let id = crate::btf::func_id(target_btf, func).ok_or_else(|| {
        KernelError::Invalid(format!("the target program `{}` has no BTF function `{func}`", target.name))
    })?;
    let opts = LoadOptions {
        name: prog.name.clone(),
        prog_type: EXT,
        license: obj.license.clone(),
        log_level,
        btf_fd: Some(btf.fd.as_raw_fd()),
        func_info: if insns.len() == prog.insns.len() { prog.func_info.clone() } else { Vec::new() },
        line_info: if insns.len() == prog.insns.len() { prog.line_info.clone() } else { Vec::new() },
        attach_btf_id: id,
        attach_prog_fd: Some(target.fd.as_raw_fd()),
        ..LoadOptions::default()
    };
    let mut l = load_program(insns, &opts, &maps.fd_array())?;
    l.attach_note = Some(format!("extension of `{func}` in program `{}`", target.name));
    Ok(l)
}
