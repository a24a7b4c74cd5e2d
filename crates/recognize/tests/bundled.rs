//! The bundled programs (bpf/out/*.bpf.o): every program rewritten under each policy,
//! lowered, and run side by side with the original on the interpreter; and the programs
//! written to contain an idiom show sites of its pass.

mod common;
use common::*;
use kops_recognize::{Mode, Pass};

fn bundled() -> Vec<std::path::PathBuf> {
    let dir = bundled_dir();
    let mut v: Vec<_> = std::fs::read_dir(&dir)
        .map(|d| d.filter_map(|e| e.ok()).map(|e| e.path()).filter(|p| p.to_string_lossy().ends_with(".bpf.o")).collect())
        .unwrap_or_default();
    v.sort();
    v
}

fn packets() -> Vec<Vec<u8>> {
    let mut v = Vec::new();
    let mut rng = Rng::new(0x9e3779b97f4a7c15);
    for &len in &[0usize, 14, 60, 64, 100, 128, 257, 600, 1500] {
        for _ in 0..3 {
            v.push(rng.bytes(len));
        }
    }
    v.push(vec![0; 1500]);
    v.push(vec![0xff; 1500]);
    v
}

#[test]
fn bundled_programs_agree_after_rewriting() {
    let files = bundled();
    if files.is_empty() {
        eprintln!("SKIP: no bundled objects in {}", bundled_dir().display());
        return;
    }
    let pk = packets();
    for f in &files {
        let obj = kops_object::Object::load(f).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
        for mode in [Mode::All, Mode::Auto] {
            let (rep, new) = diff_check(&obj, &policy(mode), &pk);
            eprintln!("{} ({mode:?}): {} sites, {} rewritten", f.display(), rep.total_sites(), rep.rewritten());
            // The same rewritten programs with their sites compiled natively by the Kops
            // JIT (these objects are all accepted by the kernel verifier, see tests/kernel.rs).
            // Without bpf(2) the gate refuses native code: that is a skip, not a pass.
            match (diff_kops_jit(&obj, &new, &pk), kops_kernel::skip_reason()) {
                (Ok(n), _) => eprintln!("  Kops JIT: {n} runs agree"),
                (Err(e), Some(why)) => println!("SKIPPED: Kops JIT part ({why}): {e}"),
                (Err(e), None) => panic!("{} ({mode:?}): Kops JIT: {e}", f.display()),
            }
        }
    }
}

#[test]
fn libxdp_programs_agree_after_rewriting() {
    let Some(dir) = libxdp_dir() else { return };
    let pk = packets();
    let mut sites = 0;
    for f in objects_in(&dir, ".o") {
        let obj = kops_object::Object::load(&f).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
        // Only programs the interpreter can run on a packet (not the fentry/fexit ones).
        let mut runnable = obj.clone();
        runnable.programs.retain(|p| matches!(p.prog_type, kops_object::ProgType::Xdp));
        if runnable.programs.is_empty() {
            continue;
        }
        let (rep, _) = diff_check(&runnable, &policy(Mode::All), &pk);
        sites += rep.rewritten();
    }
    eprintln!("libxdp1: {sites} sites rewritten, all runs agree");
}

#[test]
fn bundled_programs_show_their_idioms() {
    let expect: &[(&str, Pass)] = &[
        ("chacha_arx", Pass::Rotate),
        ("jhash_lookup3", Pass::Rotate),
        ("siphash", Pass::Rotate),
        ("murmur3_rot32", Pass::Rotate),
        ("tc_xxhash64", Pass::Rotate),
        ("select_clamp", Pass::Select),
        ("select_sortnet", Pass::Select),
        ("bitfield_extract", Pass::Extract),
        ("endian_parse", Pass::Endian),
        ("parse_layers", Pass::Endian),
        ("popcount_bitmap", Pass::Popcount),
        ("struct_copy", Pass::Bulk),
        ("byte_recompose", Pass::WideLoad),
    ];
    let dir = bundled_dir();
    let mut checked = 0;
    for (name, pass) in expect {
        let path = dir.join(format!("{name}.bpf.o"));
        if !path.exists() {
            eprintln!("SKIP: {} missing", path.display());
            continue;
        }
        let obj = kops_object::Object::load(&path).unwrap();
        let (_, rep, _) = kops_recognize::rewrite_object(&obj, &policy(Mode::Auto)).unwrap();
        let n: usize = rep.programs.iter().map(|p| p.sites.iter().filter(|s| s.pass == pass.name()).count()).sum();
        assert!(n > 0, "{name}: no {pass} site");
        checked += 1;
    }
    if checked == 0 {
        eprintln!("SKIP: no bundled objects");
    }
}

/// Site counts per program and pass against bpf/README.md's shape table (counted from
/// llvm-objdump-19 by bpf/shapes.py, an independent reader). Differences from that table,
/// each checked in the disassembly: parse_layers' "extract32" is `w5 >>= 2; w5 &= 0x3c`
/// (mask 0x3c is not a low mask: no extract); select_sortnet has 26 `jcc +1; mov` (the
/// table's 27 counts one that skips a store).
#[test]
fn bundled_site_counts_match_the_shape_table() {
    let expect: &[(&str, Pass, usize)] = &[
        ("siphash", Pass::Rotate, 47),
        ("tc_xxhash64", Pass::Rotate, 22),
        ("toeplitz_rss", Pass::Rotate, 1),
        ("chacha_arx", Pass::Rotate, 32),
        ("jhash_lookup3", Pass::Rotate, 20),
        ("lb_rewrite", Pass::Rotate, 5),
        ("murmur3_rot32", Pass::Rotate, 2),
        ("bitfield_extract", Pass::Extract, 12),
        ("endian_parse", Pass::Endian, 4),
        ("parse_layers", Pass::Endian, 16),
        ("tc_parse_layers", Pass::Endian, 16),
        ("popcount_bitmap", Pass::Popcount, 3),
        ("socket_popcount", Pass::Popcount, 2),
        ("select_clamp", Pass::Select, 4),
        ("select_sortnet", Pass::Select, 26),
        ("byte_recompose", Pass::WideLoad, 2),
        ("struct_copy", Pass::Bulk, 6),
    ];
    let dir = bundled_dir();
    for (name, pass, n) in expect {
        let path = dir.join(format!("{name}.bpf.o"));
        if !path.exists() {
            eprintln!("SKIP: {} missing", path.display());
            continue;
        }
        let obj = kops_object::Object::load(&path).unwrap();
        let (_, rep, _) = kops_recognize::rewrite_object(&obj, &policy(Mode::None)).unwrap();
        let got: usize = rep.programs.iter().map(|p| p.sites.iter().filter(|s| s.pass == pass.name()).count()).sum();
        assert_eq!(got, *n, "{name}: {pass} sites (see bpf/README.md shape table)");
    }
}
