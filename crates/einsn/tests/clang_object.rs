//! Lowering on a real clang-19 object: three idioms of a compiled XDP program (with a
//! bpf-to-bpf call, BTF func_info and line_info) are replaced in place by kinsn sites
//! (padded with `ja +0` so the layout with sites equals clang's), the program is lowered,
//! and the kernel must accept it with the fixed-up func_info/line_info and compute the same
//! result (return value and packet) as the original. A copy with stale func_info is
//! rejected, showing that the kernel really checks what lowering fixed.

use kops_einsn::*;
use kops_isa::{op, Insn};
use kops_kinsn::lower::lower_program;

const SRC: &str = r#"
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

static __attribute__((noinline)) __u32 swap_first(void *data, void *end)
{
	__u32 *p = data;
	if ((void *)(p + 1) > end)
		return 0;
	return __builtin_bswap32(*p);
}

SEC("xdp")
int kinsn_obj(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	__u64 *q = data;
	if ((void *)(q + 2) > end)
		return XDP_PASS;
	__u64 x = q[1];
	__u64 f = (x >> 5) & 0x1f;
	q[1] = (x << 13) | (x >> 51);
	return (swap_first(data, end) + f) & 0xff;
}

char LICENSE[] SEC("license") = "GPL";
"#;

fn compile() -> Option<std::path::PathBuf> {
    let dir = std::env::temp_dir().join(format!("kops-einsn-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let c = dir.join("obj.c");
    let o = dir.join("obj.o");
    std::fs::write(&c, SRC).unwrap();
    let st = std::process::Command::new("clang-19")
        .args(["-O2", "-g", "-target", "bpf", "-mcpu=v3", "-I/usr/include/x86_64-linux-gnu", "-c"])
        .arg(&c)
        .arg("-o")
        .arg(&o)
        .status()
        .ok()?;
    st.success().then_some(o)
}

/// Position of `pat` in `insns`.
fn find(insns: &[Insn], pat: &[Insn]) -> usize {
    insns.windows(pat.len()).position(|w| w == pat).unwrap_or_else(|| panic!("pattern {pat:?} not in clang output"))
}

fn put(insns: &mut [Insn], at: usize, len: usize, site: [Insn; 2]) {
    insns[at] = site[0];
    insns[at + 1] = site[1];
    for i in insns.iter_mut().skip(at + 2).take(len - 2) {
        *i = Insn::ja(0);
    }
}

#[test]
fn lowered_clang_program_keeps_func_and_line_info_valid() {
    let Some(path) = compile() else {
        eprintln!("SKIPPED: clang-19 not available");
        return;
    };
    let obj = kops_object::Object::load(&path).unwrap();
    let prog = obj.program("kinsn_obj").unwrap().clone();
    assert_eq!(prog.func_info.len(), 2, "main and swap_first");
    assert!(!prog.line_info.is_empty());

    // The idioms, as llvm-objdump-19 shows them for this source.
    let mut with_sites = prog.clone();
    let ins = &mut with_sites.insns;
    // r3 = r6; r3 >>= 51; r4 = r6; r4 <<= 13; r4 |= r3
    let rot = [
        Insn::mov64_reg(3, 6),
        Insn::alu64_imm(op::RSH, 3, 51),
        Insn::mov64_reg(4, 6),
        Insn::alu64_imm(op::LSH, 4, 13),
        Insn::alu64_reg(op::OR, 4, 3),
    ];
    let at_rot = find(ins, &rot);
    put(ins, at_rot, 5, Rotate64::new(4, 6, 3, 13, false).unwrap().site().unwrap());
    // w6 >>= 5; w6 &= 0x1f
    let at_ext = find(ins, &[Insn::alu32_imm(op::RSH, 6, 5), Insn::alu32_imm(op::AND, 6, 0x1f)]);
    put(ins, at_ext, 2, Extract::new(6, 6, 5, 5).unwrap().site().unwrap());
    // r0 = *(u32 *)(r1 + 0); r0 = be32 r0   (in the subprogram)
    let at_be = find(ins, &[Insn::ldx(op::W, 0, 1, 0), Insn::new(op::ALU | op::END | op::TO_BE, 0, 0, 0, 32)]);
    put(ins, at_be, 2, EndianLoad32::new(0, 1, 0).unwrap().site().unwrap());
    assert!(at_rot < prog.subprogs[1].start && at_be > prog.subprogs[1].start);

    let reg = registry();
    let (lowered, l) = lower_program(&with_sites, &reg).unwrap();
    assert_eq!(l.regions.len(), 3);
    // The rotate proof has 5 instructions for 2 site slots: everything after moves by 3.
    assert_eq!(lowered.insns.len(), prog.insns.len() + 3);
    assert_eq!(lowered.func_info[1].insn_off, prog.func_info[1].insn_off + 3);
    assert_eq!(lowered.subprogs[1].start, prog.subprogs[1].start + 3);
    // And the restored program is the one with sites.
    let back = kops_kinsn::restore(&l).unwrap();
    assert_eq!(back.insns, with_sites.insns);
    assert_eq!(back.line_info, with_sites.line_info);

    if let Some(why) = kops_kernel::skip_reason() {
        eprintln!("SKIPPED: kernel part: {why}");
        return;
    }
    let maps = kops_kernel::MapSet::create(&obj.maps).unwrap();
    let btf = kops_kernel::KernelBtf::for_object(&obj).unwrap();
    assert!(btf.is_some());
    let orig = kops_kernel::load_object_program(&obj, &prog, &prog.insns, &maps, btf.as_ref(), 0).unwrap();
    let low = kops_kernel::load_object_program(&obj, &lowered, &lowered.insns, &maps, btf.as_ref(), 0)
        .unwrap_or_else(|e| panic!("lowered program rejected: {e}"));
    let pkt: Vec<u8> = (0..64u32).map(|i| (i * 37 + 11) as u8).collect();
    let run = kops_kernel::TestRun { data_in: Some(&pkt), ..Default::default() };
    let a = orig.test_run(&run).unwrap();
    let b = low.test_run(&run).unwrap();
    assert_eq!(a.retval, b.retval);
    assert_eq!(a.data_out, b.data_out);
    assert_ne!(a.data_out[8..16], pkt[8..16], "the rotate wrote the packet");

    // Stale func_info/line_info (the object's, not fixed up) must be refused by the kernel.
    let mut stale = lowered.clone();
    stale.func_info = prog.func_info.clone();
    stale.line_info = prog.line_info.clone();
    assert!(kops_kernel::load_object_program(&obj, &stale, &stale.insns, &maps, btf.as_ref(), 0).is_err());
}
