//! Instructions per run counted by callgrind (kops_bench::instructions) on the real binary.

use std::path::Path;

/// A real count on a bundled program: two counts agree within 1%, and the kops runtime
/// (popcnt for the branch-free popcount) executes fewer instructions than the jit.
#[test]
fn callgrind_counts_are_stable_and_see_the_popcount_site() {
    if let Some(why) = kops_bench::instructions::unavailable() {
        assert!(std::env::var("KOPS_REQUIRE_KERNEL").map(|v| v != "1").unwrap_or(true), "{why}");
        println!("SKIPPED: {why}");
        return;
    }
    if let Err(e) = kops_kernel::available() {
        // jit and kops run only kernel-verified programs.
        assert!(std::env::var("KOPS_REQUIRE_KERNEL").map(|v| v != "1").unwrap_or(true), "{e}");
        println!("SKIPPED: {e}");
        return;
    }
    let kops = Path::new(env!("CARGO_BIN_EXE_kops"));
    let obj = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../bpf/out/popcount_bitmap.bpf.o");
    let obj = obj.to_string_lossy();
    let pkt = kops_bench::packet::udp_packet(256, 1);
    let count = |rt: &str| {
        kops_bench::instructions::per_run(kops, &obj, "popcount_bitmap", rt, &pkt).unwrap_or_else(|e| panic!("{rt}: {e}"))
    };
    let (j1, j2, k) = (count("jit"), count("jit"), count("kops"));
    println!("instructions per run: jit {j1:.1}, {j2:.1}; kops {k:.1}");
    assert!((j1 - j2).abs() / j1 < 0.01, "jit {j1} vs {j2}");
    assert!(k < 0.9 * j1, "kops {k} vs jit {j1}");
}
