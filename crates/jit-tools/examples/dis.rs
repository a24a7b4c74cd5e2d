//! Dev tool: JIT a conformance .data file (helper 5 = a dummy address) and print the image.
use kops_jit::*;
use kops_jit_tools::disasm;
struct R;
impl Resolver for R {
    fn helper(&self, id: i32) -> Option<u64> { if id == 5 { Some(0x1000) } else { None } }
    fn ld_imm64(&self, _: usize, _: &kops_isa::Insn, _: &kops_isa::Insn) -> Result<u64, String> { Err("no".into()) }
}
fn main() {
    let a: Vec<String> = std::env::args().collect();
    let t = kops_isa::conformance::TestFile::parse(&std::fs::read_to_string(&a[1]).unwrap()).unwrap();
    let mut o = JitOptions::runtime().unwrap();
    o.unwind_helper = Some(5);
    o.callx_helpers = Some(8);
    let img = compile(&t.insns, &o, &R).unwrap();
    for i in disasm::disassemble(&img.code, 0) {
        println!("{:4x}  {:24} {}", i.offset, i.bytes.iter().map(|b| format!("{b:02x}")).collect::<String>(), i.text);
    }
    println!("{:?}", img.funcs);
    println!("abs {:?}", img.abs_slots);
}
