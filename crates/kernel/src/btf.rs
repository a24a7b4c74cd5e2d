//! Loading an object's `.BTF` into the kernel (BPF_BTF_LOAD).
//!
//! clang leaves every DATASEC with size 0 and its variables at offset 0; libbpf fills them
//! in from the ELF section sizes and symbol values before BTF_LOAD, and the kernel rejects
//! the unfixed form. We do the same fix-up on a copy of the raw section ([`fixup_datasecs`]).

use std::collections::HashMap;
use std::os::fd::OwnedFd;

use kops_object::Object;

use crate::sys;
use crate::{available, KernelError};

/// BTF loaded into the kernel.
#[derive(Debug)]
pub struct KernelBtf {
    pub fd: OwnedFd,
    /// The bytes given to the kernel (after fix-up).
    pub data: Vec<u8>,
}

const KIND_STRUCT: u32 = 4;
const KIND_UNION: u32 = 5;
const KIND_VAR: u32 = 14;
const KIND_DATASEC: u32 = 15;

/// Size of the kind-specific data that follows a type's 12-byte header.
fn extra_len(kind: u32, vlen: usize) -> Option<usize> {
    Some(match kind {
        1 => 4,                         // INT
        2 | 7..=12 | 16 | 18 => 0,      // PTR, FWD, TYPEDEF, VOLATILE, CONST, RESTRICT, FUNC, FLOAT, TYPE_TAG
        3 => 12,                        // ARRAY
        KIND_STRUCT | KIND_UNION => 12 * vlen,
        6 => 8 * vlen,                  // ENUM
        13 => 8 * vlen,                 // FUNC_PROTO
        KIND_VAR => 4,
        KIND_DATASEC => 12 * vlen,
        17 => 4,                        // DECL_TAG
        19 => 12 * vlen,                // ENUM64
        _ => return None,
    })
}

fn rd(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

fn wr(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_le_bytes());
}

/// Fills in DATASEC sizes (`section_sizes` by section name) and variable offsets
/// (`symbols` by name: (section name, value)), sorting each DATASEC's variables by offset,
/// as libbpf does before loading. Returns an error naming what is malformed.
pub fn fixup_datasecs(
    raw: &[u8],
    section_sizes: &HashMap<String, u64>,
    symbols: &HashMap<String, (String, u64)>,
) -> Result<Vec<u8>, String> {
    let mut b = raw.to_vec();
    if rd(&b, 0).map(|m| m & 0xffff) != Some(0xeb9f) {
        return Err("not little-endian BTF (bad magic)".into());
    }
    let hdr_len = rd(&b, 4).ok_or("truncated header")? as usize;
    let type_off = rd(&b, 8).ok_or("truncated header")? as usize;
    let type_len = rd(&b, 12).ok_or("truncated header")? as usize;
    let str_off = rd(&b, 16).ok_or("truncated header")? as usize;
    let str_len = rd(&b, 20).ok_or("truncated header")? as usize;
    let types = hdr_len + type_off;
    let strs = hdr_len + str_off;
    if types + type_len > b.len() || strs + str_len > b.len() {
        return Err("section offsets beyond the data".into());
    }
    let name_at = |b: &[u8], off: u32| -> String {
        let s = &b[strs + off as usize..strs + str_len];
        let end = s.iter().position(|&c| c == 0).unwrap_or(s.len());
        String::from_utf8_lossy(&s[..end]).into_owned()
    };
    // Pass 1: where each type id starts (VARs are looked up by id from DATASECs).
    let mut starts = vec![0usize]; // id 0 is void
    let mut p = types;
    while p < types + type_len {
        let info = rd(&b, p + 4).ok_or("truncated type")?;
        let kind = (info >> 24) & 0x1f;
        let vlen = (info & 0xffff) as usize;
        let extra = extra_len(kind, vlen).ok_or_else(|| format!("type {} has unknown kind {kind}", starts.len()))?;
        starts.push(p);
        p += 12 + extra;
    }
    if p != types + type_len {
        return Err("type section length does not match its types".into());
    }
    for &t in &starts[1..] {
        let info = rd(&b, t + 4).unwrap();
        if (info >> 24) & 0x1f != KIND_DATASEC {
            continue;
        }
        let sec = name_at(&b, rd(&b, t).unwrap());
        let vlen = (info & 0xffff) as usize;
        if rd(&b, t + 8).unwrap() == 0 {
            if let Some(&size) = section_sizes.get(&sec) {
                wr(&mut b, t + 8, size as u32);
            }
        }
        let mut vars: Vec<[u32; 3]> = Vec::with_capacity(vlen);
        for i in 0..vlen {
            let at = t + 12 + 12 * i;
            let mut v = [rd(&b, at).unwrap(), rd(&b, at + 4).unwrap(), rd(&b, at + 8).unwrap()];
            if let Some(&vt) = starts.get(v[0] as usize) {
                let vinfo = rd(&b, vt + 4).unwrap();
                if (vinfo >> 24) & 0x1f == KIND_VAR {
                    let vname = name_at(&b, rd(&b, vt).unwrap());
                    if let Some((s, value)) = symbols.get(&vname) {
                        if *s == sec {
                            v[1] = *value as u32;
                        }
                    }
                }
            }
            vars.push(v);
        }
        vars.sort_by_key(|v| v[1]);
        for (i, v) in vars.iter().enumerate() {
            let at = t + 12 + 12 * i;
            for (j, w) in v.iter().enumerate() {
                wr(&mut b, at + 4 * j, *w);
            }
        }
    }
    Ok(b)
}

/// Section sizes by name, and symbols by name with (section name, value).
pub type ElfLayout = (HashMap<String, u64>, HashMap<String, (String, u64)>);

/// Section sizes and symbol (section, value) pairs of an ELF object, for [`fixup_datasecs`].
pub fn elf_layout(elf: &[u8]) -> Result<ElfLayout, String> {
    use object::{Object as _, ObjectSection, ObjectSymbol};
    let f = object::File::parse(elf).map_err(|e| format!("not a readable ELF object: {e}"))?;
    let mut sizes = HashMap::new();
    let mut by_index = HashMap::new();
    for s in f.sections() {
        if let Ok(n) = s.name() {
            sizes.insert(n.to_string(), s.size());
            by_index.insert(s.index(), n.to_string());
        }
    }
    let mut syms = HashMap::new();
    for s in f.symbols() {
        let (Ok(name), Some(idx)) = (s.name(), s.section_index()) else { continue };
        if let Some(sec) = by_index.get(&idx) {
            if !name.is_empty() {
                syms.entry(name.to_string()).or_insert((sec.clone(), s.address()));
            }
        }
    }
    Ok((sizes, syms))
}

impl KernelBtf {
    /// BPF_BTF_LOAD of raw BTF as is.
    pub fn load(data: Vec<u8>) -> Result<KernelBtf, KernelError> {
        available()?;
        sys::quiet_libbpf();
        let mut log_size = 1usize << 16;
        loop {
            let mut log = vec![0u8; log_size];
            let mut o = libbpf_sys::bpf_btf_load_opts {
                sz: std::mem::size_of::<libbpf_sys::bpf_btf_load_opts>() as _,
                log_buf: log.as_mut_ptr() as *mut _,
                log_size: log_size as u32,
                log_level: 0,
                ..Default::default()
            };
            let r = unsafe { libbpf_sys::bpf_btf_load(data.as_ptr() as *const _, data.len() as _, &mut o) };
            match sys::fd_or_errno(r) {
                Ok(fd) => return Ok(KernelBtf { fd, data }),
                Err(libc::ENOSPC) if log_size < 1 << 26 => log_size *= 8,
                Err(e) => {
                    // At level 0 the kernel writes nothing; load again at level 1 for the reason.
                    let mut log2 = vec![0u8; 1 << 20];
                    let mut o2 = libbpf_sys::bpf_btf_load_opts {
                        sz: std::mem::size_of::<libbpf_sys::bpf_btf_load_opts>() as _,
                        log_buf: log2.as_mut_ptr() as *mut _,
                        log_size: log2.len() as u32,
                        log_level: 1,
                        ..Default::default()
                    };
                    let _ = unsafe { libbpf_sys::bpf_btf_load(data.as_ptr() as *const _, data.len() as _, &mut o2) };
                    let end = log2.iter().position(|&c| c == 0).unwrap_or(log2.len());
                    let log = String::from_utf8_lossy(&log2[..end]).into_owned();
                    let last = log.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("").to_string();
                    return Err(KernelError::Btf { msg: format!("{}: {last}", sys::errno_text(e)), log });
                }
            }
        }
    }

    /// The object's BTF, fixed up from its ELF file (`obj.path`) and loaded. `Ok(None)`
    /// when the object has no `.BTF`.
    pub fn for_object(obj: &Object) -> Result<Option<KernelBtf>, KernelError> {
        let Some(raw) = &obj.btf else { return Ok(None) };
        let elf = std::fs::read(&obj.path)
            .map_err(|e| KernelError::Invalid(format!("{}: cannot read for BTF fix-up: {e}", obj.path)))?;
        let (sizes, syms) = elf_layout(&elf).map_err(|e| KernelError::Invalid(format!("{}: {e}", obj.path)))?;
        let fixed = fixup_datasecs(raw, &sizes, &syms)
            .map_err(|e| KernelError::Btf { msg: format!("{}: malformed .BTF: {e}", obj.path), log: String::new() })?;
        KernelBtf::load(fixed).map(Some)
    }
}

/// Builds raw BTF with one function `int NAME(struct xdp_md *ctx)` (type id 5), for a
/// stand-in XDP program that tracing programs can attach to when their real target is
/// chosen at run time (libxdp's xdpdump: `fentry/func`).
pub fn xdp_func_btf(name: &str) -> Vec<u8> {
    let mut strs = vec![0u8];
    let mut add = |s: &str| -> u32 {
        let off = strs.len() as u32;
        strs.extend_from_slice(s.as_bytes());
        strs.push(0);
        off
    };
    let (s_int, s_md, s_ctx, s_fn) = (add("int"), add("xdp_md"), add("ctx"), add(name));
    let kind = |k: u32, vlen: u32| (k << 24) | vlen;
    let mut t: Vec<u32> = Vec::new();
    t.extend([s_int, kind(1, 0), 4, (1 << 24) | 32]); // [1] int: signed, 32 bits
    t.extend([s_md, kind(KIND_STRUCT, 0), 24]); // [2] struct xdp_md (members not needed)
    t.extend([0, kind(2, 0), 2]); // [3] struct xdp_md *
    t.extend([0, kind(13, 1), 1, s_ctx, 3]); // [4] int (*)(struct xdp_md *ctx)
    t.extend([s_fn, kind(12, 1), 4]); // [5] global func NAME
    let types: Vec<u8> = t.iter().flat_map(|w| w.to_le_bytes()).collect();
    let mut b = Vec::new();
    b.extend_from_slice(&0xeb9fu16.to_le_bytes());
    b.push(1); // version
    b.push(0); // flags
    for w in [24u32, 0, types.len() as u32, types.len() as u32, strs.len() as u32] {
        b.extend_from_slice(&w.to_le_bytes());
    }
    b.extend_from_slice(&types);
    b.extend_from_slice(&strs);
    b
}

/// Type id of the BTF `FUNC` called `name` in raw BTF (the id the kernel gives it when this
/// BTF is loaded as is), for attach targets (freplace, fentry on a BPF program).
pub fn func_id(raw: &[u8], name: &str) -> Option<u32> {
    let hdr_len = rd(raw, 4)? as usize;
    let types = hdr_len + rd(raw, 8)? as usize;
    let type_len = rd(raw, 12)? as usize;
    let strs = hdr_len + rd(raw, 16)? as usize;
    let str_len = rd(raw, 20)? as usize;
    let mut p = types;
    let mut id = 1u32;
    while p + 12 <= types + type_len {
        let info = rd(raw, p + 4)?;
        let kind = (info >> 24) & 0x1f;
        if kind == 12 {
            let off = rd(raw, p)? as usize;
            let s = raw.get(strs + off..strs + str_len)?;
            let end = s.iter().position(|&c| c == 0)?;
            if &s[..end] == name.as_bytes() {
                return Some(id);
            }
        }
        p += 12 + extra_len(kind, (info & 0xffff) as usize)?;
        id += 1;
    }
    None
}
