//! An object's BTF in the form BPF_BTF_LOAD takes: the DATASEC sizes and variable offsets
//! clang leaves at 0 filled in from the ELF file, as libbpf does (the fix-up is
//! `kops_kernel::btf`'s; the guest kernel gets the same bytes as the host's would).

use kops_object::Object;

/// The fixed-up `.BTF` of `obj`, read again from its file (`obj.path`); `Ok(None)` when the
/// object has no BTF. The error names the file and what is wrong.
pub fn object_btf(obj: &Object) -> Result<Option<Vec<u8>>, String> {
    let Some(raw) = &obj.btf else { return Ok(None) };
    let elf = std::fs::read(&obj.path).map_err(|e| format!("{}: cannot read for the BTF fix-up: {e}", obj.path))?;
    let (sizes, syms) = kops_kernel::btf::elf_layout(&elf).map_err(|e| format!("{}: {e}", obj.path))?;
    kops_kernel::btf::fixup_datasecs(raw, &sizes, &syms)
        .map(Some)
        .map_err(|e| format!("{}: malformed .BTF: {e}", obj.path))
}
