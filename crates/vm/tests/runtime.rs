//! Runtime tests on small clang-built objects (`tests/data/rt_*.bpf.c`, built with
//! `clang-19 -O2 -g -target bpf -mcpu=v3`). Expected values were computed by hand and
//! checked against the kernel (BPF_PROG_TEST_RUN via bpftool on Linux 6.18) for every
//! program the verifier accepts; the comments say which.

use kops_object::Object;
use kops_vm::{ProgInput, RunResult, Vm, VmError};
use std::path::PathBuf;

fn data(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data").join(name)
}

fn vm(obj: &str) -> Vm {
    let o = Object::load(data(obj)).unwrap_or_else(|e| panic!("{obj}: {e}"));
    Vm::new(&o).unwrap_or_else(|e| panic!("{obj}: {e}"))
}

/// 64-byte Ethernet/IPv4/UDP packet, destination MAC 00:11:22:33:44:55 (not ours, so
/// PACKET_OTHERHOST on the loopback device).
fn packet() -> Vec<u8> {
    let hex = "00112233445566778899aabb08004500003200010000401166b80a0000010a00000204d20050001e00006162636465666768696a6b6c6d6e6f70717273747576";
    (0..hex.len()).step_by(2).map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap()).collect()
}

fn run(vm: &Vm, prog: &str) -> Result<RunResult, VmError> {
    let id = vm.load(prog)?;
    vm.run(id, &ProgInput::packet(&packet()))
}

#[test]
fn xdp_context_fields() {
    // kernel: 100064 = 64 bytes + 1000 * queue 0 + 100000 * ifindex 1 (loopback)
    let v = vm("rt_xdp.bpf.o");
    assert_eq!(run(&v, "xdp_len").unwrap().r0, 100_064);
    let id = v.load("xdp_len").unwrap();
    // ctx_in: rx_queue_index 3, ingress_ifindex 2.
    let mut md = vec![0u8; 24];
    md[12] = 2;
    md[16] = 3;
    let r = v.run(id, &ProgInput { data: packet(), ctx: Some(md) }).unwrap();
    assert_eq!(r.r0, 64 + 3000 + 200_000);
}

#[test]
fn xdp_adjust_head_and_tail() {
    // kernel: r0 2, packet aabbccdd + original minus its last 2 bytes.
    let r = run(&vm("rt_xdp.bpf.o"), "xdp_push").unwrap();
    assert_eq!(r.r0, 2);
    let mut want = vec![0xaa, 0xbb, 0xcc, 0xdd];
    want.extend_from_slice(&packet()[..62]);
    assert_eq!(r.data_out, want);
    let ctx = r.ctx_out.unwrap();
    assert_eq!(&ctx[0..8], &[0, 0, 0, 0, 66, 0, 0, 0]); // data - meta = 0, data_end - meta = 66
}

#[test]
fn xdp_metadata() {
    // kernel: r0 2 (meta -2 gives -EACCES, head +4000 gives -EINVAL), output starts with
    // the 8 metadata bytes.
    let r = run(&vm("rt_xdp.bpf.o"), "xdp_meta").unwrap();
    assert_eq!(r.r0, 2);
    let mut want = vec![0x44, 0x33, 0x22, 0x11, 0x88, 0x77, 0x66, 0x55];
    want.extend_from_slice(&packet());
    assert_eq!(r.data_out, want);
    assert_eq!(&r.ctx_out.unwrap()[0..8], &[8, 0, 0, 0, 72, 0, 0, 0]);
}

#[test]
fn packet_read_past_end_is_an_error() {
    let e = run(&vm("rt_xdp.bpf.o"), "xdp_oob").unwrap_err();
    match e {
        VmError::BadAccess { prog, pc, len, write, .. } => {
            assert_eq!((prog.as_str(), pc, len, write), ("xdp_oob", 1, 1, false));
        }
        e => panic!("{e}"),
    }
}

#[test]
fn unknown_helper_is_a_load_error() {
    let e = vm("rt_xdp.bpf.o").load("xdp_unknown_helper").unwrap_err();
    let s = e.to_string();
    assert!(matches!(e, VmError::Load { pc: 0, .. }), "{s}");
    assert!(s.contains("xdp_unknown_helper") && s.contains("14") && s.contains("get_current_pid_tgid"), "{s}");
}

#[test]
fn socket_filter_ld_abs() {
    // kernel: 0x45110032 = IP version/IHL 0x45, protocol 17, skb->len 50 (the socket
    // filter's data starts at the IP header); the output has a zeroed Ethernet header.
    let v = vm("rt_skb.bpf.o");
    let r = run(&v, "sock_ld_abs").unwrap();
    assert_eq!(r.r0, 0x4511_0032);
    let mut want = vec![0u8; 14];
    want.extend_from_slice(&packet()[14..]);
    assert_eq!(r.data_out, want);
    // kernel: 0 (a load past the end ends the program with 0).
    assert_eq!(run(&v, "sock_ld_abs_oob").unwrap().r0, 0);
    // kernel: 0x08000011 (SKF_LL_OFF + 12: EtherType, SKF_NET_OFF + 9: protocol).
    assert_eq!(run(&v, "sock_ld_neg").unwrap().r0, 0x0800_0011);
}

#[test]
fn tc_skb_fields() {
    // kernel: 0x01000803 = ifindex 1 << 24 | protocol htons(0x0800) << 8 | PACKET_OTHERHOST;
    // first byte incremented.
    let r = run(&vm("rt_skb.bpf.o"), "tc_fields").unwrap();
    assert_eq!(r.r0, 0x0100_0803);
    let mut want = packet();
    want[0] += 1;
    assert_eq!(r.data_out, want);
    let ctx = r.ctx_out.unwrap();
    assert_eq!(u32::from_le_bytes(ctx[8..12].try_into().unwrap()), 0xabcd); // mark
    assert_eq!(u32::from_le_bytes(ctx[52..56].try_into().unwrap()), 64); // cb[1] = len
}

#[test]
fn map_helpers_and_global_data() {
    // kernel: r0 = (u32)-ENOENT, counts {1: 3, 2: 6}, total 5 + 3 = 8, zeroed 1.
    let v = vm("rt_maps.bpf.o");
    let r = run(&v, "map_ops").unwrap();
    assert_eq!(r.r0, 0xffff_fffe);
    let counts = v.map("counts").unwrap().dump();
    assert_eq!(
        counts,
        vec![
            (1u32.to_le_bytes().to_vec(), 3u64.to_le_bytes().to_vec()),
            (2u32.to_le_bytes().to_vec(), 6u64.to_le_bytes().to_vec()),
        ]
    );
    assert_eq!(v.map(".data").unwrap().lookup(&[0; 4]).unwrap(), 8u64.to_le_bytes());
    assert_eq!(v.map(".bss").unwrap().lookup(&[0; 4]).unwrap(), 1u32.to_le_bytes());
    // Per-CPU value as userspace reads it: 4-byte value rounded to 8, one CPU.
    assert_eq!(v.map("pcpu").unwrap().lookup(&1u32.to_le_bytes()).unwrap(), vec![9, 0, 0, 0, 0, 0, 0, 0]);
    // One ring buffer record {0xfeed, 8}.
    let recs = v.map("events").unwrap().ringbuf_drain();
    let mut want = 0xfeedu64.to_le_bytes().to_vec();
    want.extend_from_slice(&8u64.to_le_bytes());
    assert_eq!(recs, vec![want]);
    // A second run continues from the map state.
    run(&v, "map_ops").unwrap();
    assert_eq!(v.map("counts").unwrap().lookup(&2u32.to_le_bytes()).unwrap(), 12u64.to_le_bytes());
    assert_eq!(v.map(".data").unwrap().lookup(&[0; 4]).unwrap(), 11u64.to_le_bytes());
}

#[test]
fn userspace_map_updates_are_seen_by_programs() {
    let v = vm("rt_maps.bpf.o");
    v.map_update("counts", &1u32.to_le_bytes(), &100u64.to_le_bytes(), 0).unwrap();
    run(&v, "map_ops").unwrap();
    assert_eq!(v.map("counts").unwrap().lookup(&1u32.to_le_bytes()).unwrap(), 103u64.to_le_bytes());
    // .rodata is frozen for userspace too.
    assert!(v.map_update(".rodata", &[0; 4], &[0; 16], 0).is_err());
    // Wrong sizes are refused with the map's name.
    let e = v.map_update("counts", &[0; 2], &[0; 8], 0).unwrap_err();
    assert!(e.to_string().contains("counts"), "{e}");
}

#[test]
fn rodata_write_is_an_error() {
    let e = run(&vm("rt_maps.bpf.o"), "write_rodata").unwrap_err();
    assert!(matches!(e, VmError::BadAccess { write: true, .. }), "{e}");
    assert!(e.to_string().contains(".rodata"), "{e}");
}

#[test]
fn tail_calls() {
    let v = vm("rt_tail.bpf.o");
    // Slot 0 holds `target` from the object's initial values.
    assert_eq!(run(&v, "entry").unwrap().r0, 42);
    // Empty and out-of-range slots fall through (kernel: 3).
    assert_eq!(run(&v, "empty_slot").unwrap().r0, 3);
    // selfcall tail-calls itself: 1 run + 33 tail calls, then falls through.
    assert_eq!(run(&v, "selfcall").unwrap().r0, 7);
    assert_eq!(v.map("counter").unwrap().lookup(&[0; 4]).unwrap(), 34u64.to_le_bytes());
    // Clearing the slot makes `entry` fall through.
    let pa = v.object().unwrap().map_index("jmp_table").unwrap();
    v.set_prog_array(pa, 0, None).unwrap();
    assert_eq!(run(&v, "entry").unwrap().r0, 1);
}

#[test]
fn bundled_objects_run() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../bpf/out");
    let Ok(rd) = std::fs::read_dir(&dir) else { return };
    let mut n = 0;
    for e in rd {
        let p = e.unwrap().path();
        if !p.to_string_lossy().ends_with(".bpf.o") {
            continue;
        }
        let o = Object::load(&p).unwrap();
        let v = Vm::new(&o).unwrap();
        for prog in &o.programs {
            let id = v.load(&prog.name).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            let r = v.run(id, &ProgInput::packet(&packet())).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            assert!(r.executed.unwrap() > 0);
            n += 1;
        }
    }
    assert!(n > 0 || !dir.exists());
}

#[test]
fn redirect_helpers() {
    let v = vm("rt_misc.bpf.o");
    // kernel: 4 (XDP_REDIRECT).
    let r = run(&v, "redir").unwrap();
    assert_eq!(r.r0, 4);
    assert_eq!(r.redirect, Some(kops_vm::Redirect::Ifindex { ifindex: 5, flags: 0 }));
    // kernel: 2 (empty devmap slot: the fallback action XDP_PASS).
    let r = run(&v, "redir_map").unwrap();
    assert_eq!((r.r0, r.redirect), (2, None));
    v.map_update("tx_port", &1u32.to_le_bytes(), &7u32.to_le_bytes(), 0).unwrap();
    let r = run(&v, "redir_map").unwrap();
    let devmap = v.object().unwrap().map_index("tx_port").unwrap();
    assert_eq!((r.r0, r.redirect), (4, Some(kops_vm::Redirect::Map { map: devmap, key: 1 })));
}

#[test]
fn trace_printk_output() {
    let r = run(&vm("rt_misc.bpf.o"), "printk").unwrap();
    assert_eq!(r.trace, vec!["len 64 x ff".to_string()]);
}

#[test]
fn csum_diff_of_a_valid_ipv4_header() {
    // kernel: 1065535 (folds to 0xffff; Linux 6.12+ returns the 16-bit fold).
    assert_eq!(run(&vm("rt_misc.bpf.o"), "csum").unwrap().r0, 1_065_535);
}

#[test]
fn map_value_bad_accesses_are_errors() {
    let v = vm("rt_maps.bpf.o");
    let e = run(&v, "null_deref").unwrap_err();
    assert!(matches!(e, VmError::BadAccess { addr: 0, len: 8, write: false, .. }), "{e}");
    assert!(e.to_string().contains("null pointer"), "{e}");
    let e = run(&v, "value_oob").unwrap_err();
    assert!(matches!(e, VmError::BadAccess { len: 1, write: false, .. }), "{e}");
    assert!(e.to_string().contains("value_oob"), "{e}");
}

#[test]
fn repeated_runs_share_context_and_maps() {
    let v = vm("rt_maps.bpf.o");
    let id = v.load("map_ops").unwrap();
    let (r, ns) = v.run_repeat(id, &ProgInput::packet(&packet()), 3).unwrap();
    assert_eq!(r.r0, 0xffff_fffe);
    assert!(ns > 0.0);
    // three runs: counts[2] = 3 * (3 + 3), total = 5 + 3 * 3
    assert_eq!(v.map("counts").unwrap().lookup(&2u32.to_le_bytes()).unwrap(), 18u64.to_le_bytes());
    assert_eq!(v.map(".data").unwrap().lookup(&[0; 4]).unwrap(), 14u64.to_le_bytes());
    // Like BPF_PROG_TEST_RUN's repeat, the packet is not reset between runs: two pushes
    // of 4 bytes, two trims of 2.
    let x = vm("rt_xdp.bpf.o");
    let id = x.load("xdp_push").unwrap();
    let (r, _) = x.run_repeat(id, &ProgInput::packet(&packet()), 2).unwrap();
    assert_eq!(r.data_out.len(), 64 + 8 - 4);
    assert_eq!(&r.data_out[..8], &[0xaa, 0xbb, 0xcc, 0xdd, 0xaa, 0xbb, 0xcc, 0xdd]);
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
}

#[test]
fn l3_l4_checksum_helpers() {
    let v = vm("rt_csum.bpf.o");
    let mut input = packet();
    input[40] = 0x12; // UDP checksum 0x1234
    input[41] = 0x34;
    let id = v.load("nat4").unwrap();
    let r = v.run(id, &ProgInput::packet(&input)).unwrap();
    assert_eq!(r.r0, 0);
    // Output of the same program on the same packet in the kernel (BPF_PROG_TEST_RUN).
    let kernel = unhex("00112233445566778899aabb08004500003200010000401160b40a0000010e03020304d21141001efb3e6162636465666768696a6b6c6d6e6f70717273747576");
    assert_eq!(r.data_out, kernel);
    // Independent check: the rewritten IPv4 header still sums to 0xffff.
    let mut sum: u32 = (0..10).map(|i| u16::from_be_bytes([r.data_out[14 + 2 * i], r.data_out[15 + 2 * i]]) as u32).sum();
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    assert_eq!(sum, 0xffff);
    // csum_diff form and error codes (kernel: 1).
    assert_eq!(run(&v, "nat_diff").unwrap().r0, 1);
}

/// rt_mapkinds `mim`: the outer lookups give the inner maps (slots from BTF `values`), and
/// lookup/update/delete on them act on those maps. Expected values by hand from the source.
#[test]
fn map_in_map_lookups_reach_inner_maps() {
    let v = vm("rt_mapkinds.bpf.o");
    let go = |head: [u8; 8]| {
        let mut p = packet();
        p[..8].copy_from_slice(&head);
        let id = v.load("mim").unwrap();
        v.run(id, &ProgInput::packet(&p)).unwrap().r0
    };
    let out = |i: u32| i64::from_le_bytes(v.map("out").unwrap().lookup(&i.to_le_bytes()).unwrap().try_into().unwrap());
    // outer_arr[1] = arr_b, arr_b[2] += 4 + 1; outer_hash[5] = hash_a: insert 3 = 9
    // (NOEXIST: 0), delete 3 (0), look 3 up (absent: -1 as the u32 of `x ? *x : -1`,
    // 0xffffffff); XDP_TX.
    assert_eq!(go([1, 2, 4, 5, 3, 9, 1, 3]), 3);
    assert_eq!((out(0), out(1), out(2)), (0, 0, 0xffff_ffff));
    assert_eq!(v.map("arr_b").unwrap().lookup(&2u32.to_le_bytes()).unwrap(), 5u64.to_le_bytes());
    assert!(v.map("arr_a").unwrap().dump().iter().all(|(_, x)| x.iter().all(|&b| b == 0)));
    // Again, deleting 4 instead: ENOENT (-2), and 3 = 9 stays in hash_a.
    assert_eq!(go([1, 2, 4, 5, 3, 9, 1, 4]), 3);
    assert_eq!((out(0), out(1), out(2)), (0, -2, 0xffff_ffff));
    assert_eq!(v.map("hash_a").unwrap().dump(), vec![(3u32.to_le_bytes().to_vec(), 9u32.to_le_bytes().to_vec())]);
    assert_eq!(v.map("arr_b").unwrap().lookup(&2u32.to_le_bytes()).unwrap(), 10u64.to_le_bytes());
    // outer_arr[2] is empty: XDP_DROP; outer_hash[6] is absent: XDP_ABORTED.
    assert_eq!(go([2, 0, 0, 0, 0, 0, 0, 0]), 1);
    assert_eq!(go([0, 0, 0, 6, 0, 0, 0, 0]), 0);
    // A slot can be pointed at another compatible map, not at an incompatible one.
    v.set_map_in_map("outer_arr", &2u32.to_le_bytes(), "arr_a").unwrap();
    assert_eq!(go([2, 1, 6, 5, 0, 0, 0, 0]), 3);
    assert_eq!(v.map("arr_a").unwrap().lookup(&1u32.to_le_bytes()).unwrap(), 7u64.to_le_bytes());
    let e = v.set_map_in_map("outer_arr", &2u32.to_le_bytes(), "hash_a").unwrap_err();
    assert!(e.to_string().contains("does not match the inner template"), "{e}");
}

/// bpf_throw (rt_throw.bpf.c), on the interpreter; the native engines are compared with the
/// kernel by `kops diff` (crates/cli). kernel: 401 = cb(200) = 2 * 200 + 1 for a 200-byte
/// packet, 7 without a throw (64 bytes), 42 = the cookie 2 + 40 without a callback.
#[test]
fn bpf_throw_runs_the_exception_callback() {
    let v = vm("rt_throw.bpf.o");
    let id = v.load("throw_cb").unwrap();
    assert_eq!(v.run(id, &ProgInput::packet(&[0u8; 200])).unwrap().r0, 401);
    assert_eq!(v.run(id, &ProgInput::packet(&packet())).unwrap().r0, 7);
    assert_eq!(run(&v, "throw_default").unwrap().r0, 42);
}

/// A program the loader cannot build leaves the rest of the object usable, and loading it
/// by name says why.
#[test]
fn a_broken_program_does_not_take_the_object_down() {
    let o = Object::load(data("rt_throw.bpf.o")).unwrap();
    assert_eq!(o.programs.len(), 2);
    assert_eq!(o.broken.len(), 1);
    let e = vm("rt_throw.bpf.o").load("bad_jump").unwrap_err().to_string();
    assert!(e.contains("bad_jump") && e.contains("jump to 102 is outside its function"), "{e}");
}

/// bpf_for's kfuncs (rt_iter.bpf.c) on the interpreter. kernel: 1189 = 2 + ... + 19 + 1000
/// for 200 bytes, 1044 = 2 + ... + 9 + 1000 for the 64-byte packet.
#[test]
fn numeric_iterators() {
    let v = vm("rt_iter.bpf.o");
    let id = v.load("iter_sum").unwrap();
    assert_eq!(v.run(id, &ProgInput::packet(&[0u8; 200])).unwrap().r0, 1189);
    assert_eq!(v.run(id, &ProgInput::packet(&packet())).unwrap().r0, 1044);
}
