//! The conformance suite in the kernel: every file must be accounted for as passed (the
//! kernel's r0 equals the file's `-- result`), failed (it differs), or rejected by the
//! verifier with a reason. The lists are printed (run with `--nocapture` to see them).


use kops_kernel::conformance::{run, KernelConformance};
use kops_kernel::require_kernel;

#[test]
fn all_suite_files_accounted_for_in_the_kernel() {
    require_kernel!();
    let Some(files) = kops_isa::conformance::suite_for_test() else { return };
    let dir = kops_isa::conformance::suite_dir();
    assert_eq!(files.len(), 313, "the suite in {} has 313 files", dir.display());
    let (mut passed, mut failed, mut rejected, mut errors) = (vec![], vec![], vec![], vec![]);
    for (name, t) in files {
        let t = match t {
            Ok(t) => t,
            Err(e) => {
                errors.push(format!("{name}: {e}"));
                continue;
            }
        };
        match run(&t.insns, &t.mem) {
            Ok(KernelConformance::Ran { r0 }) => match t.result {
                Some(want) if want == r0 => passed.push(name),
                Some(want) => failed.push(format!("{name}: r0 {r0:#x}, expected {want:#x}")),
                None => failed.push(format!("{name}: r0 {r0:#x}, the file expects an error")),
            },
            Ok(KernelConformance::Rejected { reason, insn, .. }) => {
                assert!(!reason.trim().is_empty(), "{name}: rejection without a reason");
                let at = insn.map(|i| format!(" (insn {i})")).unwrap_or_default();
                rejected.push(format!("{name}{at}: {}", reason.lines().next().unwrap_or("")));
            }
            Err(e) => errors.push(format!("{name}: {e}")),
        }
    }
    println!("kernel conformance: passed {}:", passed.len());
    println!("  {}", passed.join(" "));
    println!("failed {}:", failed.len());
    failed.iter().for_each(|l| println!("  {l}"));
    println!("rejected by the verifier {}:", rejected.len());
    rejected.iter().for_each(|l| println!("  {l}"));
    println!("errors {}:", errors.len());
    errors.iter().for_each(|l| println!("  {l}"));
    assert!(errors.is_empty(), "files not accounted for: {errors:#?}");
    assert_eq!(passed.len() + failed.len() + rejected.len(), 313);
}
