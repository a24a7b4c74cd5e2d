//! Kernel layer against the running kernel. Expected values are computed by hand from the
//! programs below (or are kernel facts), never taken from our own output.

use kops_isa::{op, Insn};
use kops_kernel::conformance::{self, KernelConformance};
use kops_kernel::{load_program, require_kernel, KernelError, LoadOptions, MapSet, TestRun};
use kops_object::{map_type, MapDef, MapOrigin};

const XDP: u32 = 6;

fn def(name: &str, ty: u32, ks: u32, vs: u32, n: u32) -> MapDef {
    MapDef::new(name, MapOrigin::Btf, ty, ks, vs, n)
}

fn xdp(name: &str) -> LoadOptions {
    LoadOptions { name: name.into(), prog_type: XDP, ..LoadOptions::default() }
}

#[test]
fn xdp_test_run_rewrites_packet_and_returns() {
    require_kernel!();
    // if data + 2 > data_end: return 1; data[0] = 0xab; data[1] += 1; return 3 (XDP_TX)
    let p = [
        Insn::ldx(op::W, 2, 1, 0),
        Insn::ldx(op::W, 3, 1, 4),
        Insn::mov64_reg(4, 2),
        Insn::alu64_imm(op::ADD, 4, 2),
        Insn::jmp_reg(op::JGT, 4, 3, 6),
        Insn::st(op::B, 2, 0, 0xab),
        Insn::ldx(op::B, 5, 2, 1),
        Insn::alu64_imm(op::ADD, 5, 1),
        Insn::stx(op::B, 2, 5, 1),
        Insn::mov64_imm(0, 3),
        Insn::exit(),
        Insn::mov64_imm(0, 1),
        Insn::exit(),
    ];
    let prog = load_program(&p, &xdp("t_rewrite"), &[]).expect("verifier accepts");
    let mut pkt = vec![0u8; 60];
    pkt[1] = 0x41;
    let r = prog.test_run(&TestRun { data_in: Some(&pkt), ..Default::default() }).unwrap();
    assert_eq!(r.retval, 3);
    let mut want = pkt.clone();
    want[0] = 0xab;
    want[1] = 0x42;
    assert_eq!(r.data_out, want);
    // The kernel refuses packets shorter than an Ethernet header: a clear error, no panic.
    let short = prog.test_run(&TestRun { data_in: Some(&[1u8]), ..Default::default() });
    let e = short.unwrap_err().to_string();
    assert!(e.contains("14 bytes"), "{e}");
    // repeat and duration
    let r = prog.test_run(&TestRun { data_in: Some(&pkt), repeat: 1000, ..Default::default() }).unwrap();
    assert_eq!(r.retval, 3);
}

#[test]
fn rejection_names_instruction_and_reason() {
    require_kernel!();
    // Reads the packet without a bounds check: the verifier stops at insn 1.
    let p = [Insn::ldx(op::W, 2, 1, 0), Insn::ldx(op::B, 0, 2, 0), Insn::exit()];
    match load_program(&p, &xdp("t_reject"), &[]) {
        Err(KernelError::Rejected { insn, message, errno, .. }) => {
            assert_eq!(insn, Some(1));
            assert_eq!(errno, libc_eacces());
            assert!(message.contains("invalid access to packet"), "{message}");
        }
        other => panic!("expected a rejection, got {other:?}"),
    }
    // Stats level on success, then level 1|4 is used again on failure to get the reason.
    let opts = LoadOptions { log_level: 4, ..xdp("t_reject4") };
    match load_program(&p, &opts, &[]) {
        Err(KernelError::Rejected { insn: Some(1), .. }) => {}
        other => panic!("expected a rejection at insn 1, got {other:?}"),
    }
    let ok = load_program(&[Insn::mov64_imm(0, 2), Insn::exit()], &opts, &[]).unwrap();
    assert!(ok.log.contains("processed 2 insns"), "{}", ok.log);
}

fn libc_eacces() -> i32 {
    13
}

#[test]
fn maps_update_lookup_dump_reset() {
    require_kernel!();
    let cpus = kops_kernel::possible_cpus();
    let set = MapSet::create(&[
        def("arr", map_type::ARRAY, 4, 8, 4),
        def("h", map_type::HASH, 4, 4, 16),
        def("pcpu", map_type::PERCPU_ARRAY, 4, 4, 2),
    ])
    .unwrap();
    let (arr, h, pc) = (&set.maps[0], &set.maps[1], &set.maps[2]);
    arr.update(&2u32.to_ne_bytes(), &7u64.to_ne_bytes(), 0).unwrap();
    h.update(&9u32.to_ne_bytes(), &5u32.to_ne_bytes(), 0).unwrap();
    h.update(&3u32.to_ne_bytes(), &6u32.to_ne_bytes(), 0).unwrap();
    pc.update(&1u32.to_ne_bytes(), &0x11223344u32.to_ne_bytes(), 0).unwrap();
    let d = arr.dump().unwrap();
    assert_eq!(d.entries.len(), 4);
    assert_eq!(d.entries[2].1, vec![7u64.to_ne_bytes().to_vec()]);
    assert_eq!(d.entries[3].1, vec![vec![0u8; 8]]);
    let d = h.dump().unwrap();
    let keys: Vec<u32> = d.entries.iter().map(|(k, _)| u32::from_ne_bytes(k[..].try_into().unwrap())).collect();
    let mut sorted = keys.clone();
    sorted.sort_by_key(|k| k.to_ne_bytes());
    assert_eq!(keys, sorted);
    assert_eq!(keys.len(), 2);
    let d = pc.dump().unwrap();
    assert!(d.per_cpu);
    assert_eq!(d.entries[1].1.len(), cpus);
    assert!(d.entries[1].1.iter().all(|v| v == &0x11223344u32.to_ne_bytes()));
    assert_eq!(h.lookup(&4u32.to_ne_bytes()).unwrap(), None);
    // wrong key size is an error naming the map
    let e = h.lookup(&[1u8]).unwrap_err().to_string();
    assert!(e.contains("`h`"), "{e}");
    set.reset().unwrap();
    assert!(arr.dump().unwrap().entries.iter().all(|(_, v)| v[0] == vec![0u8; 8]));
    assert!(h.dump().unwrap().entries.is_empty());
    assert!(pc.dump().unwrap().entries[1].1.iter().all(|v| v == &[0u8; 4]));
}

#[test]
fn unsupported_map_is_named() {
    require_kernel!();
    let e = MapSet::create(&[def("weird_map", 4242, 4, 4, 1)]).unwrap_err().to_string();
    assert!(e.contains("weird_map") && e.contains("BPF_MAP_CREATE"), "{e}");
}

#[test]
fn global_data_initial_frozen_rodata_and_fd_array() {
    require_kernel!();
    let mut ro = def(".rodata", map_type::ARRAY, 4, 8, 1);
    ro.origin = MapOrigin::GlobalData;
    ro.readonly = true;
    ro.initial = Some(40u64.to_le_bytes().to_vec());
    let mut data = def(".data", map_type::ARRAY, 4, 8, 1);
    data.origin = MapOrigin::GlobalData;
    data.initial = Some(2u64.to_le_bytes().to_vec());
    let set = MapSet::create(&[ro, data]).unwrap();
    // r0 = rodata[0] + data[0]; data[0] = r0. The verifier knows rodata is the constant 40
    // (frozen), so `if r0 != 40 goto bad` is dead code and the bad path may be invalid.
    let mut p = Vec::new();
    p.extend(Insn::ld_imm64(1, op::PSEUDO_MAP_IDX_VALUE, 0));
    p.push(Insn::ldx(op::DW, 0, 1, 0));
    p.push(Insn::jmp_imm(op::JNE, 0, 40, 4));
    p.extend(Insn::ld_imm64(2, op::PSEUDO_MAP_IDX_VALUE, 1));
    p.push(Insn::ldx(op::DW, 3, 2, 0));
    p.push(Insn::alu64_reg(op::ADD, 0, 3));
    p.push(Insn::stx(op::DW, 2, 0, 0));
    p.push(Insn::exit());
    // not reachable when .rodata is known: reads r9, which is never initialised
    p.push(Insn::mov64_reg(0, 9));
    p.push(Insn::exit());
    // fix the jump: from 3 to the `r0 = r9`
    p[3].off = (p.len() - 2 - 4) as i16;
    let prog = load_program(&p, &xdp("t_global"), &set.fd_array()).expect("accepted with known .rodata");
    let r = prog.test_run(&TestRun { data_in: Some(&[0u8; 14]), ..Default::default() }).unwrap();
    assert_eq!(r.retval, 42);
    let v = set.maps[1].lookup(&0u32.to_ne_bytes()).unwrap().unwrap();
    assert_eq!(v[0], 42u64.to_le_bytes().to_vec());
    // frozen: the syscall side cannot write it either
    assert!(set.maps[0].update(&0u32.to_ne_bytes(), &[0u8; 8], 0).is_err());
    set.reset().unwrap();
    let v = set.maps[1].lookup(&0u32.to_ne_bytes()).unwrap().unwrap();
    assert_eq!(v[0], 2u64.to_le_bytes().to_vec());
}

#[test]
fn info_and_id_iteration() {
    require_kernel!();
    // a bpf-to-bpf call gives two jited functions
    let p = [
        Insn::new(op::JMP | op::CALL, 0, op::PSEUDO_CALL, 0, 2),
        Insn::alu64_imm(op::ADD, 0, 1),
        Insn::exit(),
        Insn::mov64_imm(0, 1),
        Insn::exit(),
    ];
    let prog = load_program(&p, &xdp("t_info"), &[]).unwrap();
    let info = prog.info().unwrap();
    assert_eq!(info.name, "t_info");
    assert_eq!(info.prog_type, XDP);
    assert_eq!(info.xlated.len(), 5);
    assert_eq!(info.xlated[1], p[1]);
    assert_eq!(info.jited_func_lens.len(), 2);
    assert_eq!(info.nr_jited_ksyms, 2);
    assert_eq!(info.jited_func_lens.iter().sum::<u32>() as usize, info.jited.len());
    let ids = kops_kernel::prog_ids().unwrap();
    assert!(ids.contains(&info.id));
    let fd = kops_kernel::prog_fd_by_id(info.id).unwrap().expect("still loaded");
    use std::os::fd::AsRawFd;
    assert_eq!(kops_kernel::prog_info(fd.as_raw_fd()).unwrap().id, info.id);
    let r = prog.test_run(&TestRun { data_in: Some(&[0u8; 14]), ..Default::default() }).unwrap();
    assert_eq!(r.retval, 2);
}

#[test]
fn conformance_wrapper_full_r0_memory_and_rejects() {
    require_kernel!();
    // 64-bit r0 survives (test-run alone would give only the low half).
    let mut p = Insn::ld_imm64(0, 0, 0x1122_3344_5566_7788).to_vec();
    p.push(Insn::exit());
    assert_eq!(conformance::run(&p, &[]).unwrap(), KernelConformance::Ran { r0: 0x1122_3344_5566_7788 });
    // r1 points at the memory, r2 is its length: r0 = *(u64*)(r1+0) + r2
    let p = [Insn::ldx(op::DW, 0, 1, 0), Insn::alu64_reg(op::ADD, 0, 2), Insn::exit()];
    let mem = [1u8, 0, 0, 0, 0, 0, 0, 0x80];
    assert_eq!(conformance::run(&p, &mem).unwrap(), KernelConformance::Ran { r0: 0x8000_0000_0000_0009 });
    // An infinite loop is refused, with the reason and an index inside the test body.
    let p = [Insn::mov64_imm(0, 0), Insn::ja(-1), Insn::exit()];
    match conformance::run(&p, &[]).unwrap() {
        KernelConformance::Rejected { reason, insn, .. } => {
            assert!(!reason.is_empty());
            assert!(insn.map(|i| i < 3).unwrap_or(true), "{insn:?}");
        }
        other => panic!("expected a rejection, got {other:?}"),
    }
}

#[test]
fn log_buffer_grows_for_long_logs() {
    require_kernel!();
    // A level-2 log of a few thousand instructions is far larger than the first 64 KiB buffer.
    let mut p = vec![Insn::mov64_imm(0, 0)];
    for i in 0..3000 {
        p.push(Insn::alu64_imm(op::ADD, 0, i & 7));
    }
    p.push(Insn::mov64_imm(0, 2));
    p.push(Insn::exit());
    let prog = load_program(&p, &LoadOptions { log_level: 2, ..xdp("t_biglog") }, &[]).unwrap();
    assert!(prog.log.len() > 1 << 16, "log of {} bytes", prog.log.len());
}

#[test]
fn btf_func_id_and_stand_in_target() {
    // Our generated BTF: [1] int, [2] struct xdp_md, [3] ptr, [4] proto, [5] func.
    let raw = kops_kernel::btf::xdp_func_btf("my_fn");
    assert_eq!(kops_kernel::btf::func_id(&raw, "my_fn"), Some(5));
    assert_eq!(kops_kernel::btf::func_id(&raw, "other"), None);
    require_kernel!();
    let (prog, _btf, id) = kops_kernel::attach::stand_in_xdp_target("my_fn").unwrap();
    assert_eq!(id, 5);
    let info = prog.info().unwrap();
    assert!(info.btf_id > 0, "the stand-in carries BTF");
}

#[test]
fn object_btf_needs_and_gets_the_datasec_fixup() {
    require_kernel!();
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/diffcheck.bpf.o");
    let obj = kops_object::Object::load(path).unwrap();
    let raw = obj.btf.clone().expect("clang -g emits .BTF");
    // As clang leaves it (DATASEC size 0), the kernel refuses it ...
    match kops_kernel::KernelBtf::load(raw) {
        Err(KernelError::Btf { .. }) => {}
        other => panic!("unfixed BTF should be refused, got {other:?}"),
    }
    // ... and after the fix-up it loads, and programs load with its func_info/line_info.
    let btf = kops_kernel::KernelBtf::for_object(&obj).unwrap().unwrap();
    let maps = MapSet::create(&obj.maps).unwrap();
    let p = obj.program("entry").unwrap();
    assert!(!p.func_info.is_empty() && !p.line_info.is_empty());
    let l = kops_kernel::load_object_program(&obj, p, &p.insns, &maps, Some(&btf), 0).unwrap();
    assert!(l.info().unwrap().btf_id > 0);
}
