//! Program info (`BPF_OBJ_GET_INFO_BY_FD`) and program id iteration.

use std::os::fd::{OwnedFd, RawFd};

use kops_isa::Insn;

use crate::sys;
use crate::{available, KernelError};

/// What the kernel tells about a loaded program.
#[derive(Debug, Clone)]
pub struct ProgInfo {
    pub id: u32,
    pub prog_type: u32,
    pub name: String,
    pub tag: [u8; 8],
    /// The program after the verifier's rewrites (what the JIT compiled).
    pub xlated: Vec<Insn>,
    /// The native image (all functions, in order).
    pub jited: Vec<u8>,
    /// Byte length of each jited function (main program first), summing to `jited.len()`.
    pub jited_func_lens: Vec<u32>,
    /// Kernel addresses of the jited functions (one per jited ksym).
    pub jited_ksyms: Vec<u64>,
    pub nr_jited_ksyms: u32,
    pub map_ids: Vec<u32>,
    pub verified_insns: u32,
    pub btf_id: u32,
    pub run_time_ns: u64,
    pub run_cnt: u64,
}

fn info_call(fd: RawFd, info: &mut libbpf_sys::bpf_prog_info) -> Result<(), KernelError> {
    let mut len = std::mem::size_of::<libbpf_sys::bpf_prog_info>() as u32;
    let r = unsafe { libbpf_sys::bpf_prog_get_info_by_fd(fd, info, &mut len) };
    sys::check(r).map_err(|e| KernelError::sys("BPF_OBJ_GET_INFO_BY_FD", e))
}

/// Info of the program `fd`, with its xlated and jited images.
pub fn prog_info(fd: RawFd) -> Result<ProgInfo, KernelError> {
    available()?;
    // First call: sizes. Second call: the arrays, in buffers of those sizes.
    let mut sizes = libbpf_sys::bpf_prog_info::default();
    info_call(fd, &mut sizes)?;
    let mut xlated = vec![0u8; sizes.xlated_prog_len as usize];
    let mut jited = vec![0u8; sizes.jited_prog_len as usize];
    let mut func_lens = vec![0u32; sizes.nr_jited_func_lens as usize];
    let mut ksyms = vec![0u64; sizes.nr_jited_ksyms as usize];
    let mut map_ids = vec![0u32; sizes.nr_map_ids as usize];
    let mut info = libbpf_sys::bpf_prog_info {
        xlated_prog_len: xlated.len() as u32,
        xlated_prog_insns: xlated.as_mut_ptr() as u64,
        jited_prog_len: jited.len() as u32,
        jited_prog_insns: jited.as_mut_ptr() as u64,
        nr_jited_func_lens: func_lens.len() as u32,
        jited_func_lens: func_lens.as_mut_ptr() as u64,
        nr_jited_ksyms: ksyms.len() as u32,
        jited_ksyms: ksyms.as_mut_ptr() as u64,
        nr_map_ids: map_ids.len() as u32,
        map_ids: map_ids.as_mut_ptr() as u64,
        ..Default::default()
    };
    info_call(fd, &mut info)?;
    // The kernel reports the full sizes again; keep what fitted (a program id can be
    // replaced between calls only for a different fd, so this is the same program).
    xlated.truncate(info.xlated_prog_len as usize);
    jited.truncate(info.jited_prog_len as usize);
    func_lens.truncate(info.nr_jited_func_lens as usize);
    ksyms.truncate(info.nr_jited_ksyms as usize);
    map_ids.truncate(info.nr_map_ids as usize);
    let name_bytes: Vec<u8> = info.name.iter().take_while(|&&c| c != 0).map(|&c| c as u8).collect();
    let xlated = kops_isa::slots_from_bytes(&xlated)
        .map_err(|e| KernelError::Invalid(format!("xlated image of program {}: {e}", info.id)))?;
    Ok(ProgInfo {
        id: info.id,
        prog_type: info.type_,
        name: String::from_utf8_lossy(&name_bytes).into_owned(),
        tag: info.tag,
        xlated,
        jited,
        jited_func_lens: func_lens,
        jited_ksyms: ksyms,
        nr_jited_ksyms: info.nr_jited_ksyms,
        map_ids,
        verified_insns: info.verified_insns,
        btf_id: info.btf_id,
        run_time_ns: info.run_time_ns,
        run_cnt: info.run_cnt,
    })
}

/// Ids of all programs loaded on the system (BPF_PROG_GET_NEXT_ID), in increasing order.
pub fn prog_ids() -> Result<Vec<u32>, KernelError> {
    available()?;
    let mut ids = Vec::new();
    let mut cur = 0u32;
    loop {
        let mut next = 0u32;
        let r = unsafe { libbpf_sys::bpf_prog_get_next_id(cur, &mut next) };
        match sys::check(r) {
            Ok(()) => {
                ids.push(next);
                cur = next;
            }
            Err(libc::ENOENT) => return Ok(ids),
            Err(e) => return Err(KernelError::sys("BPF_PROG_GET_NEXT_ID", e)),
        }
    }
}

/// An fd for the program with this id (BPF_PROG_GET_FD_BY_ID). `Ok(None)` when the program
/// went away since its id was listed.
pub fn prog_fd_by_id(id: u32) -> Result<Option<OwnedFd>, KernelError> {
    available()?;
    match sys::fd_or_errno(unsafe { libbpf_sys::bpf_prog_get_fd_by_id(id) }) {
        Ok(fd) => Ok(Some(fd)),
        Err(libc::ENOENT) => Ok(None),
        Err(e) => Err(KernelError::sys(format!("BPF_PROG_GET_FD_BY_ID {id}"), e)),
    }
}
