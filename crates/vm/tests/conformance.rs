//! The bpf_conformance suite on the interpreter: every `.data` file must pass.

#[test]
fn conformance_suite_on_interpreter() {
    let Some(files) = kops_isa::conformance::suite_for_test() else { return };
    let mut failures = Vec::new();
    for (name, t) in &files {
        let t = match t {
            Ok(t) => t,
            Err(e) => {
                failures.push(format!("{name}: {e}"));
                continue;
            }
        };
        let Some(expected) = t.result else {
            failures.push(format!("{name}: no expected result"));
            continue;
        };
        match kops_vm::run_conformance(&t.insns, &t.mem, None) {
            Ok(r0) if r0 == expected => {}
            Ok(r0) => failures.push(format!("{name}: r0 = {r0:#x}, expected {expected:#x}")),
            Err(e) => failures.push(format!("{name}: {e}")),
        }
    }
    let passed = files.len() - failures.len();
    for f in &failures {
        eprintln!("FAIL {f}");
    }
    eprintln!("{passed} passed, {} failed", failures.len());
    assert!(failures.is_empty(), "{} conformance failures", failures.len());
    assert_eq!(passed, 313, "expected the 313 files of the suite");
}
