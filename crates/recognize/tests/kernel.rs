//! The kernel verifier accepts every bundled program rewritten with every site taken
//! (policy all) and lowered to its proof sequences, with the object's maps, BTF and the
//! fixed-up func_info/line_info; BPF_PROG_TEST_RUN of original and lowered programs agree.

mod common;
use common::*;
use kops_kernel::{load_object_program, require_kernel, KernelBtf, MapSet, TestRun};
use kops_recognize::Mode;

#[test]
fn kernel_accepts_lowered_rewritten_bundled_programs() {
    require_kernel!();
    let mut files = objects_in(&bundled_dir(), ".bpf.o");
    if files.is_empty() {
        eprintln!("SKIP: no bundled objects in {}", bundled_dir().display());
    }
    if let Some(d) = libxdp_dir() {
        files.extend(objects_in(&d, ".o"));
    }
    let registry = kops_einsn::registry();
    let mut loaded = 0;
    let mut skipped = 0;
    let mut sites = 0;
    for f in &files {
        let obj = kops_object::Object::load(f).unwrap();
        let (new, rep, _) = kops_recognize::rewrite_object(&obj, &policy(Mode::All)).unwrap();
        sites += rep.rewritten();
        let btf = KernelBtf::for_object(&obj).unwrap_or_else(|e| panic!("{}: BTF: {e}", f.display()));
        for (orig, p) in obj.programs.iter().zip(&new.programs) {
            let (lp, _) = kops_kinsn::lower::lower_program(p, &registry).unwrap();
            let maps_a = MapSet::create(&obj.maps).unwrap();
            let maps_b = MapSet::create(&obj.maps).unwrap();
            let a = match load_object_program(&obj, orig, &orig.insns, &maps_a, btf.as_ref(), 0) {
                Ok(a) => a,
                Err(e) => {
                    // E.g. tracing programs on a locked-down kernel: nothing to compare with.
                    eprintln!("note: {} {}: the original does not load either, skipped: {e}", f.display(), orig.name);
                    skipped += 1;
                    continue;
                }
            };
            let b = load_object_program(&obj, &lp, &lp.insns, &maps_b, btf.as_ref(), 0)
                .unwrap_or_else(|e| panic!("{} {}: rewritten+lowered rejected: {e}", f.display(), p.name));
            loaded += 1;
            if !matches!(orig.prog_type, kops_object::ProgType::Xdp | kops_object::ProgType::SchedCls) {
                continue;
            }
            let mut rng = Rng::new(0x1234_5678_9abc_def1);
            for len in [64usize, 200, 1500] {
                let pkt = rng.bytes(len);
                let run = TestRun { data_in: Some(&pkt), ..Default::default() };
                let ra = a.test_run(&run).unwrap();
                let rb = b.test_run(&run).unwrap();
                assert_eq!(ra.retval, rb.retval, "{} {}: retval", f.display(), p.name);
                assert_eq!(ra.data_out, rb.data_out, "{} {}: data out", f.display(), p.name);
                for (ma, mb) in maps_a.maps.iter().zip(&maps_b.maps) {
                    if ma.undumpable().is_none() {
                        assert_eq!(ma.dump().unwrap(), mb.dump().unwrap(), "{} {}: map {}", f.display(), p.name, ma.def.name);
                    }
                }
            }
        }
    }
    eprintln!("{loaded} programs with {sites} sites accepted by the kernel verifier after lowering ({skipped} skipped)");
    assert!(loaded > 0 || files.is_empty());
}
