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
    let dir = bundled_dir();
    let Ok(rd) = std::fs::read_dir(&dir) else {
        eprintln!("SKIP: no {}", dir.display());
        return;
    };
    let mut files: Vec<_> = rd.filter_map(|e| e.ok()).map(|e| e.path()).filter(|p| p.to_string_lossy().ends_with(".bpf.o")).collect();
    files.sort();
    let registry = kops_einsn::registry();
    let mut loaded = 0;
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
            let a = load_object_program(&obj, orig, &orig.insns, &maps_a, btf.as_ref(), 0)
                .unwrap_or_else(|e| panic!("{} {}: original rejected: {e}", f.display(), orig.name));
            let b = load_object_program(&obj, &lp, &lp.insns, &maps_b, btf.as_ref(), 0)
                .unwrap_or_else(|e| panic!("{} {}: rewritten+lowered rejected: {e}", f.display(), p.name));
            loaded += 1;
            if !matches!(orig.prog_type, kops_object::ProgType::Xdp | kops_object::ProgType::SchedCls) {
                continue;
            }
            let mut rng = Rng(0x1234_5678_9abc_def1);
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
    eprintln!("{loaded} programs with {sites} sites accepted by the kernel verifier after lowering");
}
