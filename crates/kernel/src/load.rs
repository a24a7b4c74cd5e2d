//! Loading an object's program the way libbpf would: its maps, BTF with func/line info,
//! program and attach type from its section, and the attach target of tracing programs.

use std::os::fd::AsRawFd;

use kops_isa::Insn;
use kops_object::{Object, Program};

use crate::map::MapSet;
use crate::prog::{load_program, LoadOptions, LoadedProg};
use crate::{KernelBtf, KernelError};

/// Loads program `prog` of `obj` with the object's maps (created in `maps`), its BTF
/// (when given, with func_info/line_info) and the type/attach type from its section.
pub fn load_object_program(
    obj: &Object,
    prog: &Program,
    insns: &[Insn],
    maps: &MapSet,
    btf: Option<&KernelBtf>,
    log_level: u32,
) -> Result<LoadedProg, KernelError> {
    let mut opts = LoadOptions {
        name: prog.name.clone(),
        prog_type: prog.prog_type_id,
        expected_attach_type: prog.expected_attach_type,
        license: obj.license.clone(),
        kern_version: obj.kernel_version,
        log_level,
        ..LoadOptions::default()
    };
    if let Some(b) = btf {
        opts.btf_fd = Some(b.fd.as_raw_fd());
        // func_info/line_info describe the object's own layout; a caller that changed the
        // instruction count (lowering) passes a program whose info was fixed up, else we
        // drop them rather than hand the kernel stale offsets.
        if insns.len() == prog.insns.len() {
            opts.func_info = prog.func_info.clone();
            opts.line_info = prog.line_info.clone();
        }
    }
    let target = crate::attach::resolve(prog, &mut opts)?;
    let mut loaded = load_program(insns, &opts, &maps.fd_array())?;
    if let Some((note, keep)) = target {
        loaded.attach_note = Some(note);
        loaded._target = keep;
    }
    Ok(loaded)
}
