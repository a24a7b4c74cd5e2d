//! CO-RE relocations and externs resolved against the running kernel
//! (`kops_kernel::core::relocate`), on `data/core_extern.bpf.o` (source next to it).

use std::path::PathBuf;

use kops_kernel::{load_object_program, require_kernel, KernelBtf, KernelError, MapSet, TestRun};
use kops_object::{ExternKind, MapOrigin, Object};
use kops_vm::{ProgInput, Vm};

fn object() -> Object {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/core_extern.bpf.o");
    Object::load(p).unwrap()
}

fn packet() -> Vec<u8> {
    (0..64u8).map(|i| i.wrapping_mul(7).wrapping_add(3)).collect()
}

#[test]
fn runtimes_refuse_unresolved_externs_by_name() {
    let mut o = object();
    let vm = Vm::new(&o).unwrap();
    let e = vm.load("core_fields").unwrap_err().to_string();
    assert!(e.contains("10 CO-RE relocations not applied"), "{e}");
    // Without the CO-RE records: the unsupported kfunc and the unresolved kconfig extern.
    o.core_relos = 0;
    let vm = Vm::new(&o).unwrap();
    let e = vm.load("core_unsupported").unwrap_err().to_string();
    assert!(e.contains("kfunc bpf_cast_to_kern_ctx is not supported by the kops runtimes"), "{e}");
    let e = vm.load("core_fields").unwrap_err().to_string();
    assert!(e.contains("kconfig extern LINUX_KERNEL_VERSION is unresolved"), "{e}");
}

#[test]
fn relocated_against_the_running_kernel() {
    require_kernel!();
    let o = object();
    let (r, poisoned) = match kops_kernel::core::relocate_explained(&o) {
        Ok(r) => r,
        Err(e) => panic!("relocation failed: {e}"),
    };
    // core_exists reads a field this kernel lacks: that read (not the exists check) is
    // poisoned, and named.
    assert_eq!(poisoned.len(), 1, "{poisoned:?}");
    let x = &poisoned[0];
    let pe = r.program("core_exists").unwrap();
    assert_eq!((x.program.as_str(), x.function.as_str()), ("core_exists", "core_exists"));
    assert_eq!(o.program("core_exists").unwrap().insns[x.slot].code, 0x61, "slot {} was the field read", x.slot);
    assert_eq!(pe.insns[x.slot].imm, 0xbad2310);
    assert!(x.spec.contains("kops_no_such_field") && x.to_string().contains("has no match"), "{x}");
    assert_eq!(r.core_relos, 0);
    assert!(!r.needs_relocation());
    // .kconfig appended after the object's own maps, read-only, LINUX_KERNEL_VERSION set.
    let k = r.maps.last().unwrap();
    assert_eq!((k.name.as_str(), k.origin, k.readonly, r.maps.len()), (".kconfig", MapOrigin::GlobalData, true, o.maps.len() + 1));
    assert!(k.initial.as_ref().unwrap().iter().any(|&b| b != 0), "LINUX_KERNEL_VERSION is 0 in .kconfig");
    assert!(r.externs.iter().filter(|e| e.kind == ExternKind::Kconfig).all(|e| e.sites.is_empty()));

    // The six CO-RE loads of core_fields of the swapped local `struct xdp_md` now use the kernel's offsets
    // (data at 0, data_end at 4): every one of them changed, and nothing else did except
    // the extern sites.
    let (p0, p1) = (o.program("core_fields").unwrap(), r.program("core_fields").unwrap());
    assert_eq!(p0.insns.len(), p1.insns.len());
    let changed: Vec<usize> = (0..p0.insns.len()).filter(|&i| p0.insns[i] != p1.insns[i]).collect();
    let ctx_loads: Vec<usize> = changed.iter().copied().filter(|&i| p1.insns[i].code == 0x61).collect();
    assert_eq!(ctx_loads.len(), 6, "changed slots {changed:?}");
    for &i in &ctx_loads {
        assert_eq!(p0.insns[i].off ^ p1.insns[i].off, 4, "slot {i}");
    }
    // Kfunc calls carry vmlinux BTF ids.
    for e in r.externs.iter().filter(|e| e.kind == ExternKind::Kfunc) {
        if e.name == "bpf_kops_no_such_kfunc" {
            // Weak and missing: address 0, call poisoned by libbpf (POISON_CALL_KFUNC_BASE + index).
            let (pi, s) = e.sites[1];
            let i = r.programs[pi].insns[s];
            assert!(i.is_call() && i.src == 0 && i.imm >= 2002000000, "{i:?}");
            let (pi, s) = e.sites[0];
            assert_eq!((r.programs[pi].insns[s].imm, r.programs[pi].insns[s + 1].imm), (0, 0));
            continue;
        }
        assert!(e.resolved && e.btf_id > 0, "{}", e.name);
        for &(pi, s) in &e.sites {
            let i = r.programs[pi].insns[s];
            assert!(i.src == kops_isa::op::PSEUDO_KFUNC_CALL && i.imm as u32 == e.btf_id && i.off == 0, "{}: {i:?}", e.name);
        }
    }

    // The kernel verifies every program; each one our runtimes implement gives the
    // kernel's r0 in the interpreter and the JIT (kfuncs: dynptr from xdp/skb, slices,
    // size, conntrack lookup answering "not found").
    let maps = MapSet::create(&r.maps).unwrap();
    let btf = KernelBtf::for_object(&r).unwrap();
    let data = packet();
    let expect = |name: &str| -> u64 {
        match name {
            "core_fields" => (((data[0] as u32 + data[1] as u32 + 64) << 8) | 2) as u64,
            "core_kfunc" => ((data[12] as u64) << 16) | ((data[13] as u64) << 8) | 2,
            "core_skb" => ((data[12] as u64) << 8) | data[13] as u64,
            "core_ct" | "core_exists" => 2,
            _ => 2,
        }
    };
    for p in &r.programs {
        match load_object_program(&r, p, &p.insns, &maps, btf.as_ref(), 0) {
            Ok(l) => {
                let out = l.test_run(&TestRun { data_in: Some(&data), ..TestRun::default() }).unwrap();
                assert_eq!(out.retval as u64, expect(&p.name), "{} in the kernel", p.name);
            }
            Err(KernelError::Rejected { message, log, .. }) => panic!("{}: rejected: {message}\n{log}", p.name),
            Err(e) => panic!("{}: {e}", p.name),
        }
    }
    for engine in ["interp", "jit"] {
        // The JIT runs natively, so the kernel verifier gates it (on the relocated object).
        let eng: Box<dyn kops_vm::Engine> =
            if engine == "interp" { Box::new(kops_vm::interp::Interp) } else { Box::new(kops_vm::jit_engine::JitEngine::new().unwrap()) };
        let vm = Vm::with_verifier(Some(&r), eng, Box::new(kops_kernel::KernelVerifier::with_cache_dir(None))).unwrap();
        for name in ["core_fields", "core_kfunc", "core_skb", "core_ct", "core_weak", "core_exists"] {
            let id = vm.load(name).unwrap_or_else(|e| panic!("{engine}: {name}: {e}"));
            assert_eq!(vm.run(id, &ProgInput::packet(&data)).unwrap().r0, expect(name), "{engine}: {name}");
        }
        let e = vm.load("core_unsupported").unwrap_err().to_string();
        assert!(e.contains("kfunc bpf_cast_to_kern_ctx is not supported by the kops runtimes"), "{e}");
    }

    // Without relocation the kernel refuses core_fields (offsets swapped, kconfig unresolved).
    let maps0 = MapSet::create(&o.maps).unwrap();
    let p = o.program("core_fields").unwrap();
    assert!(load_object_program(&o, p, &p.insns, &maps0, None, 0).is_err());
}

#[test]
fn relocation_errors_name_the_object() {
    require_kernel!();
    // A kfunc no kernel has (not weak): libbpf's refusal names it.
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/core_missing.bpf.o");
    let m = Object::load(&p).unwrap();
    let e = kops_kernel::core::relocate(&m).unwrap_err().to_string();
    assert!(e.contains("core_missing.bpf.o") && e.contains("bpf_kops_no_such_kfunc") && e.contains("not found in kernel"), "{e}");
    let mut o = object();
    o.path = "/nonexistent/core.bpf.o".into();
    let e = kops_kernel::core::relocate(&o).unwrap_err().to_string();
    assert!(e.contains("/nonexistent/core.bpf.o"), "{e}");
    // Bytes that are not the object's: libbpf's refusal is reported with its messages.
    let o = object();
    let e = kops_kernel::core::relocate_elf(&o, b"not an elf file").unwrap_err().to_string();
    assert!(e.contains("libbpf cannot open the object"), "{e}");
}
