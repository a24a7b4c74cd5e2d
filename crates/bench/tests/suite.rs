//! The suite on bundled programs: every runtime agrees with the oracle before timing,
//! rbpf is refused with the reason where it lacks a feature, and a planted difference is
//! caught. Kernel parts skip with the reason when bpf(2) is refused (fail instead under
//! KOPS_REQUIRE_KERNEL=1).

use std::path::PathBuf;

use kops_bench::runners::{differences, rbpf_unsupported, Outcome};
use kops_bench::suite::{prepare, SuiteOptions};

fn obj(name: &str) -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../bpf/out").join(format!("{name}.bpf.o")).to_string_lossy().into_owned()
}

fn opts(runtimes: &str, cpu: Option<usize>) -> SuiteOptions {
    SuiteOptions {
        runtimes: runtimes.split(',').map(String::from).collect(),
        per_pass: false,
        packet: kops_bench::packet::udp_packet(1500, 1),
        traffic: Vec::new(),
        cpu,
        prog_type: None,
    }
}

fn cases(p: &kops_bench::suite::Prepared) -> Vec<(String, String)> {
    p.cases.iter().map(|c| (c.id.program.clone(), c.runtime.clone())).collect()
}

#[test]
fn userspace_runtimes_agree_with_the_interpreter() {
    // No kernel runtime requested: the interpreter is the oracle.
    let p = prepare(&[obj("xdp_return"), obj("murmur3_rot32"), obj("popcount_bitmap")], &opts("interp,jit,kops,native,rbpf", None), false);
    assert!(p.mismatches.is_empty(), "{:?}", p.mismatches);
    let c = cases(&p);
    for prog in ["murmur3_rot32", "popcount_bitmap"] {
        for rt in ["interp", "jit", "kops"] {
            assert!(c.contains(&(prog.into(), rt.into())), "{prog} on {rt} missing: {:?} {:?}", c, p.skipped);
        }
        if kops_bench::native::unavailable().is_none() {
            assert!(c.contains(&(prog.into(), "native".into())), "{prog} native: {:?}", p.skipped);
        }
        // Both wrap their kernel in a noinline pass function (bpf-to-bpf call).
        let s = p.skipped.iter().find(|s| s.id.program == prog && s.runtime == "rbpf").expect("rbpf skipped");
        assert!(s.reason.contains("bpf-to-bpf calls"), "{}", s.reason);
    }
    // xdp_return is within rbpf's reach; on native it is the empty C floor function.
    assert!(c.contains(&("xdp_return".into(), "rbpf".into())), "{:?}", p.skipped);
    if kops_bench::native::unavailable().is_none() {
        assert!(c.contains(&("xdp_return".into(), "native".into())), "{:?}", p.skipped);
    }
    // popcount_bitmap has popcount sites: kops must have rewritten some natively.
    let k = p.kops_sites.iter().find(|k| k.id.program == "popcount_bitmap").expect("kops built");
    assert!(k.sites > 0 && k.native > 0, "{k:?}");
    let x = p.kops_sites.iter().find(|k| k.id.program == "xdp_return").expect("kops built");
    assert_eq!((x.sites, x.plain), (0, 0));
}

#[test]
fn kernel_is_the_oracle_with_an_identity_copy() {
    kops_kernel::require_kernel!();
    let cpu = kops_kernel::pin_to_one_cpu().ok();
    let p = prepare(&[obj("siphash"), obj("struct_map")], &opts("kernel,jit,kops,native", cpu), false);
    assert!(p.mismatches.is_empty(), "{:?}", p.mismatches);
    let c = cases(&p);
    for prog in ["siphash", "struct_map"] {
        for rt in ["kernel", "kernel2", "jit", "kops"] {
            assert!(c.contains(&(prog.into(), rt.into())), "{prog} on {rt} missing: {:?}", p.skipped);
        }
    }
    // native agreed with the kernel's .bss kops_result (else it would be a mismatch).
    if kops_bench::native::unavailable().is_none() {
        assert!(c.contains(&("siphash".into(), "native".into())), "{:?}", p.skipped);
    }
}

#[test]
fn a_planted_difference_is_reported() {
    let mut m = kops_bench::runners::MapState::new();
    m.insert(".bss".into(), [(vec![0, 0, 0, 0], vec![1, 2, 3, 4])].into_iter().collect());
    let a = Outcome { r0: 2, data_out: Some(vec![1, 2, 3]), maps: m.clone() };
    assert!(differences(&a, &a.clone()).is_empty());
    // Only the low 32 bits of r0 count (BPF_PROG_TEST_RUN returns a u32).
    assert!(differences(&a, &Outcome { r0: 0x1_0000_0002, ..a.clone() }).is_empty());
    let mut b = a.clone();
    b.maps.get_mut(".bss").unwrap().insert(vec![0, 0, 0, 0], vec![1, 2, 3, 5]);
    let d = differences(&a, &b);
    assert_eq!(d, vec!["map `.bss` key 00000000: 01020304 vs 01020305".to_string()]);
    let d = differences(&a, &Outcome { data_out: Some(vec![1, 9, 3]), ..a.clone() });
    assert_eq!(d, vec!["output packet: 3 vs 3 bytes, first difference at byte 1".to_string()]);
}

#[test]
fn rbpf_refusals_name_the_feature_and_slot() {
    use kops_isa::Insn;
    let ok = [Insn::mov64_imm(0, 2), Insn::exit()];
    assert_eq!(rbpf_unsupported(&ok), None);
    // call with src_reg 1 (bpf-to-bpf) at slot 1: 0x85, dst 0, src 1.
    let call = Insn::new(0x85, 0, 1, 0, 1);
    let bad = [Insn::mov64_imm(0, 2), call, Insn::exit(), Insn::mov64_imm(0, 1), Insn::exit()];
    assert_eq!(rbpf_unsupported(&bad).as_deref(), Some("bpf-to-bpf calls at instruction 1"));
    // sdiv (ALU64 DIV with off = 1) would be miscompiled as unsigned division.
    let sdiv = Insn::new(0x37, 0, 0, 1, 3);
    assert_eq!(rbpf_unsupported(&[sdiv, Insn::exit()]).as_deref(), Some("signed division or movsx (v4) at instruction 0"));
}

#[test]
fn ratio_pairs_are_distinct_with_the_identity_first() {
    let rts: Vec<String> = ["kernel", "jit", "kops"].map(String::from).to_vec();
    let v = kops_bench::suite::ratio_pairs(&rts, true);
    assert_eq!(v[0], ("kernel2".to_string(), "kernel".to_string(), true));
    for (i, x) in v.iter().enumerate() {
        assert!(!v[..i].contains(x), "duplicate pair {x:?}");
    }
    assert!(v.contains(&("kops:rotate".to_string(), "jit".to_string(), false)));
}

/// Timing over traffic: every runtime that can switch packets gets the trace (a sample is
/// the mean per packet over it); the native build, which runs one packet, is skipped with
/// the reason.
#[test]
fn traffic_traces_are_timed_per_packet() {
    let mut o = opts("interp,jit,kops,native", None);
    let mix = kops_bench::traffic::MIXES.iter().find(|m| m.name == "imix").unwrap();
    o.traffic = kops_bench::traffic::generate(mix, 8, 1);
    o.packet = o.traffic[0].clone();
    let mut p = prepare(&[obj("parse_layers")], &o, false);
    assert!(p.mismatches.is_empty(), "{:?}", p.mismatches);
    let s = p.skipped.iter().find(|s| s.runtime == "native").expect("native skipped");
    assert!(s.reason.contains("not timed over traffic"), "{}", s.reason);
    let c = p.cases.iter_mut().find(|c| c.runtime == "interp").expect("interp case");
    let ns = c.runner.measure(2).unwrap();
    assert!(ns > 0.0, "{ns}");
}

/// The `cranelift` runner (the recognizer's rewrite compiled by Cranelift) is checked
/// against the oracle before it is timed, and reports its compile time and code size.
#[test]
fn cranelift_runner_is_checked_and_reports_compile_time() {
    if let Some(r) = kops_kernel::skip_reason() {
        // Native runtimes need the kernel verifier.
        println!("SKIPPED: {r}");
        return;
    }
    let p = prepare(&[obj("murmur3_rot32"), obj("popcount_bitmap")], &opts("interp,cranelift", None), false);
    assert!(p.mismatches.is_empty(), "{:?}", p.mismatches);
    let c = cases(&p);
    for prog in ["murmur3_rot32", "popcount_bitmap"] {
        assert!(c.contains(&(prog.into(), "cranelift".into())), "{prog} on cranelift missing: {:?} {:?}", c, p.skipped);
        let t = p.compile_us.iter().find(|t| t.id.program == prog && t.runtime == "cranelift").expect("compile time recorded");
        assert!(t.micros > 0.0, "{t:?}");
        assert!(p.code_bytes.iter().any(|b| b.id.program == prog && b.runtime == "cranelift" && b.bytes > 0));
    }
}
