//! Our JIT against the kernel's, without needing bpf(2): the kernel's xlated programs and
//! jited images of some bundled programs are stored under tests/kernel/ (see its README).
//! Our code for the xlated program must have the kernel's instruction count per function
//! and byte-identical instructions, except the absolute targets of calls/jumps that leave
//! the function (helpers, subprograms, the return thunk) and movabs/per-CPU addresses.

use kops_jit_tools::disasm::{disassemble, NativeInsn};
use kops_jit::{compile, CpuFeatures, Feature, JitOptions};
use kops_jit_tools::xlated;

/// A call/jump whose target is outside `[ip, ip + len)`.
fn external(i: &NativeInsn, (ip, len): (u64, usize)) -> bool {
    i.target.is_some_and(|t| t < ip || t >= ip + len as u64)
}

/// Same instruction up to an absolute address.
fn equivalent(a: &NativeInsn, b: &NativeInsn, alen: (u64, usize), blen: (u64, usize)) -> bool {
    if a.bytes == b.bytes {
        return true;
    }
    if a.bytes.len() != b.bytes.len() {
        return false;
    }
    if external(a, alen) && external(b, blen) && a.bytes[0] == b.bytes[0] {
        return true; // call/jmp rel32 out of the function
    }
    let n = a.bytes.len();
    if n == 10 && a.bytes[..2] == b.bytes[..2] && (a.bytes[0] & 0xf8) == 0x48 && (a.bytes[1] & 0xf8) == 0xb8 {
        return true; // movabs of a kernel address
    }
    n == 9 && a.bytes[0] == 0x65 && a.bytes[..5] == b.bytes[..5] // add r, gs:[this_cpu_off]
}

#[test]
fn bundled_programs_match_stored_kernel_images() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/kernel");
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| e.unwrap().file_name().to_str().and_then(|f| f.strip_suffix(".xlated")).map(str::to_string))
        .collect();
    names.sort();
    assert!(names.len() >= 9, "{names:?}");
    // The kernel that produced the images had BMI2.
    let features = CpuFeatures::NONE.with(Feature::Bmi2);
    for name in names {
        let x = std::fs::read(dir.join(format!("{name}.xlated"))).unwrap();
        let jited = std::fs::read(dir.join(format!("{name}.jited"))).unwrap();
        let lens: Vec<usize> = std::fs::read_to_string(dir.join(format!("{name}.lens")))
            .unwrap()
            .split_whitespace()
            .map(|s| s.parse().unwrap())
            .collect();
        let insns = xlated::prepare(&kops_isa::slots_from_bytes(&x).unwrap(), false);
        let mut o = JitOptions::kernel_xlated(features);
        o.direct_tail_calls = xlated::direct_tail_calls(&insns, 12);
        let img = compile(&insns, &o, &xlated::XlatedResolver).unwrap();
        assert_eq!(img.funcs.len(), lens.len(), "{name}: functions");
        // Linked in the kernel's module area, so helper calls are real rel32 calls.
        let base = 0xffff_ffff_c000_0000u64;
        let code = img.link(base).unwrap();
        let mut koff = 0;
        for (fi, f) in img.funcs.iter().enumerate() {
            let ours = &code[f.code_start..f.code_start + f.code_len];
            let oip = base + f.code_start as u64;
            let theirs = &jited[koff..koff + lens[fi]];
            koff += lens[fi];
            let (o, k) = (disassemble(ours, oip), disassemble(theirs, 0x1000));
            assert_eq!(o.len(), k.len(), "{name} function {fi}: instruction count");
            assert_eq!(ours.len(), theirs.len(), "{name} function {fi}: bytes");
            for (a, b) in o.iter().zip(&k) {
                assert!(equivalent(a, b, (oip, ours.len()), (0x1000, theirs.len())), "{name} function {fi} at {:#x}: ours `{}`, kernel `{}`", a.offset, a.text, b.text);
            }
        }
    }
}
