//! The verification gate: native engines run only what the kernel verifier accepted, and
//! the verdict cache never lets a different program through. Test object:
//! `data/gate.bpf.c` (`evil` stores to a wild address, `spin` never ends, `good` is fine).

use kops_kernel::{require_kernel, KernelVerifier};
use kops_object::Object;
use kops_vm::jit_engine::{JitEngine, KopsEngine};
use kops_vm::{Engine, Lowering, ProgInput, Verifier, VerifyError, VerifyRequest, Vm, VmError};

fn gate_obj() -> Object {
    Object::load(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/gate.bpf.o")).unwrap()
}

fn native_engines() -> Vec<Box<dyn Engine>> {
    vec![
        Box::new(Lowering::new(JitEngine::new().unwrap(), kops_einsn::registry())),
        Box::new(KopsEngine::new(kops_einsn::registry()).unwrap()),
    ]
}

fn scratch(name: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("kops-gate-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

#[test]
fn without_a_verifier_native_engines_load_nothing() {
    let obj = gate_obj();
    for engine in native_engines() {
        let name = engine.name();
        let vm = Vm::with_engine(Some(&obj), engine).unwrap();
        match vm.load("good") {
            Err(VmError::Verify { prog, err: VerifyError::Unavailable(why) }) => {
                assert_eq!(prog, "good");
                assert!(why.contains("no verifier"), "{name}: {why}");
            }
            Err(e) => panic!("{name}: unexpected error {e}"),
            Ok(_) => panic!("{name}: loaded a program without a verifier"),
        }
    }
    // The interpreter checks every access itself: no verifier, and the wild store is a
    // clean error at run time.
    let vm = Vm::new(&obj).unwrap();
    let id = vm.load("evil").unwrap();
    match vm.run(id, &ProgInput::packet(&[0u8; 64])) {
        Err(VmError::BadAccess { pc: 3, addr: 0x4141414141410000, write: true, .. }) => {}
        other => panic!("interpreter on evil: {other:?}"),
    }
}

#[test]
fn native_engines_refuse_what_the_kernel_rejects() {
    require_kernel!();
    let obj = gate_obj();
    for engine in native_engines() {
        let name = engine.name();
        let vm = Vm::with_verifier(Some(&obj), engine, Box::new(KernelVerifier::with_cache_dir(None))).unwrap();
        // Slots are the program's own (evil's store is its insn 3; spin's back-edge its 5).
        for (prog, pc, why) in [("evil", 3, "invalid mem access"), ("spin", 5, "infinite loop")] {
            match vm.load(prog) {
                Err(VmError::Verify { prog: p, err: VerifyError::Rejected { verifier, pc: at, reason } }) => {
                    assert_eq!(p, prog);
                    assert_eq!(verifier, "kernel");
                    assert_eq!(at, Some(pc), "{name} {prog}: {reason}");
                    assert!(reason.contains(why), "{name} {prog}: {reason}");
                }
                Err(e) => panic!("{name} {prog}: unexpected error {e}"),
                Ok(_) => panic!("{name}: {prog} was loaded for native code"),
            }
        }
        let id = vm.load("good").unwrap_or_else(|e| panic!("{name}: good: {e}"));
        assert_eq!(vm.program(id).unwrap().verified.as_ref().map(|v| v.verifier()), Some("kernel"));
        let mut pkt = [0u8; 64];
        assert_eq!(vm.run(id, &ProgInput::packet(&pkt)).unwrap().r0, 2, "{name}: even first byte passes");
        pkt[0] = 1;
        assert_eq!(vm.run(id, &ProgInput::packet(&pkt)).unwrap().r0, 1, "{name}: odd first byte drops");
        let hits = vm.map_dump_u64("hits");
        assert_eq!(hits, 2, "{name}: two runs counted");
    }
}

trait HitsExt {
    fn map_dump_u64(&self, name: &str) -> u64;
}
impl HitsExt for Vm {
    fn map_dump_u64(&self, name: &str) -> u64 {
        let m = self.map(name).unwrap();
        let d = m.dump();
        u64::from_le_bytes(d[0].1[..8].try_into().unwrap())
    }
}

fn verify(v: &KernelVerifier, obj: &Object, prog: &kops_object::Program) -> Result<(), VerifyError> {
    v.verify(&VerifyRequest { object: Some(obj), program: prog, registry: Some(&kops_einsn::registry()) })
}

#[test]
fn the_verdict_cache_never_lets_a_different_program_through() {
    require_kernel!();
    let obj = gate_obj();
    let good = obj.program("good").unwrap().clone();
    let dir = scratch("cache");
    let v = KernelVerifier::with_cache_dir(Some(dir.clone()));
    verify(&v, &obj, &good).unwrap();
    assert_eq!(v.counts(), (1, 0), "first verdict comes from the kernel");
    verify(&v, &obj, &good).unwrap();
    assert_eq!(v.counts(), (1, 1), "the same program again is a cache hit");

    // One instruction changed: the packet load reads p[1] after checking only p + 1.
    let mut off_by_one = good.clone();
    let ld = off_by_one.insns.iter().position(|i| i.code == kops_isa::op::LDX | kops_isa::op::B | kops_isa::op::MEM).unwrap();
    off_by_one.insns[ld].off = 1;
    match verify(&v, &obj, &off_by_one) {
        Err(VerifyError::Rejected { pc: Some(pc), reason, .. }) => {
            assert_eq!(pc, ld);
            assert!(reason.contains("invalid access to packet"), "{reason}");
        }
        other => panic!("a changed program got through: {other:?}"),
    }
    assert_eq!(v.counts(), (2, 1), "the changed program went to the kernel");

    // The same instructions with a map whose value is too small for the u64 counter.
    let mut small = obj.clone();
    small.maps.iter_mut().find(|m| m.name == "hits").unwrap().value_size = 4;
    match verify(&v, &small, &good) {
        Err(VerifyError::Rejected { reason, .. }) => assert!(reason.contains("invalid access to map value"), "{reason}"),
        other => panic!("a changed map definition got through: {other:?}"),
    }

    // Another program type: the same code as a socket filter cannot read xdp_md fields.
    let mut as_socket = good.clone();
    as_socket.prog_type_id = 1;
    as_socket.prog_type = kops_object::ProgType::SocketFilter;
    as_socket.section = "socket".into();
    assert!(verify(&v, &obj, &as_socket).is_err(), "a changed program type got through");

    // Only the accepted verdict is on disk, and a new verifier takes it from there.
    let files = std::fs::read_dir(&dir).unwrap().count();
    assert_eq!(files, 1, "only accepted verdicts are cached");
    let v2 = KernelVerifier::with_cache_dir(Some(dir.clone()));
    verify(&v2, &obj, &good).unwrap();
    assert_eq!(v2.counts(), (0, 1), "the verdict came from the disk cache");
    assert!(verify(&v2, &obj, &off_by_one).is_err());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn programs_without_a_type_cannot_be_verified() {
    // Raw instructions (the conformance suite's shape) have no program type: the kernel
    // verifier cannot check them, and the message says so (no bpf(2) needed to know).
    let insns = kops_isa::asm::assemble("mov %r0, 1\nexit").unwrap();
    let vm = Vm::with_verifier(None, Box::new(JitEngine::new().unwrap()), Box::new(KernelVerifier::with_cache_dir(None))).unwrap();
    let r = vm.load_insns(
        "raw",
        insns,
        Vec::new(),
        kops_object::ProgType::Unspec,
        kops_vm::CtxKind::Mem,
        kops_vm::HelperTable::conformance(),
        true,
    );
    match r {
        Err(VmError::Verify { err: VerifyError::Unavailable(why), .. }) => assert!(why.contains("program type"), "{why}"),
        Err(e) => panic!("unexpected error {e}"),
        Ok(_) => panic!("an untyped program was loaded for native code"),
    }
}
