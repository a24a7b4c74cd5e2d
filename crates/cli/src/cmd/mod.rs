//! One module per subcommand.
pub mod bench;
pub mod conformance;
pub mod diff;
pub mod disasm;
pub mod inspect;
pub mod jit_diff;
pub mod prove;
pub mod rewrite;
pub mod run;
pub mod verify;

/// Programs of `obj` the loader could not build, as `(name, reason)` lines for a command
/// that works on every program (or only on `only`): each is reported, never silently
/// skipped.
pub fn broken_programs<'o>(obj: &'o kops_object::Object, only: Option<&str>) -> Vec<&'o kops_object::BrokenProgram> {
    obj.broken.iter().filter(|b| only.is_none_or(|n| n == b.name)).collect()
}

/// Says on stderr which programs `cmd` skips because the loader could not build them.
pub fn note_broken(cmd: &str, obj: &kops_object::Object, only: Option<&str>) {
    for b in broken_programs(obj, only) {
        eprintln!("kops {cmd}: {}: program `{}` skipped: it cannot be loaded: {}", obj.path, b.name, b.error);
    }
}
