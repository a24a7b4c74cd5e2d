//! Dev tool: JIT an xlated dump and compare with the kernel's jited image.
//! usage: xlated_cmp XLATED.bin JITED.bin "len1 len2 ..."
use kops_jit::*;
use kops_jit_tools::{disasm, xlated};
fn main() {
    let a: Vec<String> = std::env::args().collect();
    let x = std::fs::read(&a[1]).unwrap();
    let j = std::fs::read(&a[2]).unwrap();
    let lens: Vec<usize> = std::fs::read_to_string(&a[3]).unwrap().split_whitespace().map(|s| s.parse().unwrap()).collect();
    let insns = xlated::prepare(&kops_isa::slots_from_bytes(&x).unwrap(), false);
    let o = JitOptions::kernel_xlated(CpuFeatures::detect().unwrap());
    let img = compile(&insns, &o, &xlated::XlatedResolver).unwrap();
    let mut koff = 0;
    for (fi, f) in img.funcs.iter().enumerate() {
        let ours = &img.code[f.code_start..f.code_start + f.code_len];
        let theirs = &j[koff..koff + lens[fi]];
        koff += lens[fi];
        let d1 = disasm::disassemble(ours, 0);
        let d2 = disasm::disassemble(theirs, 0);
        println!("func {fi}: ours {} insns {} bytes, kernel {} insns {} bytes", d1.len(), ours.len(), d2.len(), theirs.len());
        for k in 0..d1.len().max(d2.len()) {
            let l = d1.get(k).map(|i| format!("{:4x} {:30}", i.offset, i.text)).unwrap_or_default();
            let r = d2.get(k).map(|i| format!("{:4x} {}", i.offset, i.text)).unwrap_or_default();
            let mark = if d1.get(k).map(|i| &i.bytes) == d2.get(k).map(|i| &i.bytes) { " " } else { "*" };
            println!("{mark} {l:40} | {r}");
        }
    }
}
