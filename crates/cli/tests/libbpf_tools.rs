//! `kops verify` on Debian's libbpf-tools objects (CO-RE against vmlinux.h, kconfig and
//! ksym externs), extracted by scripts/libbpf-tools-objects.sh: every object that bpftool
//! loads on this kernel (`bpftool prog loadall`) must pass `kops verify`.
//! SKIPPED without the package, bpftool or bpf(2); under KOPS_REQUIRE_KERNEL=1 a refused
//! bpf(2) fails instead.

use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn bpftool() -> Option<PathBuf> {
    ["/usr/sbin/bpftool", "/usr/bin/bpftool", "/sbin/bpftool"].iter().map(PathBuf::from).find(|p| p.is_file())
}

#[test]
fn libbpf_tools_that_bpftool_loads_pass_kops_verify() {
    if !Command::new("dpkg").args(["-L", "libbpf-tools"]).output().map(|o| o.status.success()).unwrap_or(false) {
        println!("SKIPPED: package libbpf-tools is not installed");
        return;
    }
    let Some(bpftool) = bpftool() else {
        println!("SKIPPED: bpftool is not installed (it decides which objects this kernel loads)");
        return;
    };
    kops_kernel::require_kernel!();
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("libbpf-tools");
    let _ = std::fs::remove_dir_all(&dir);
    let out = Command::new(root().join("scripts/libbpf-tools-objects.sh")).arg(&dir).output().unwrap();
    assert!(out.status.success(), "extraction failed: {}", String::from_utf8_lossy(&out.stderr));
    let mut objs: Vec<PathBuf> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().path()).filter(|p| p.to_string_lossy().ends_with(".bpf.o")).collect();
    objs.sort();
    assert!(objs.len() >= 10, "only {} objects extracted from libbpf-tools", objs.len());

    let fs_ok = std::fs::read_to_string("/proc/mounts").unwrap_or_default().lines().any(|l| l.contains(" /sys/fs/bpf bpf "))
        || Command::new("mount").args(["-t", "bpf", "bpf", "/sys/fs/bpf"]).status().map(|s| s.success()).unwrap_or(false);
    assert!(fs_ok, "cannot mount bpffs at /sys/fs/bpf for bpftool prog loadall");
    let pin = PathBuf::from(format!("/sys/fs/bpf/kops-test-lbt-{}", std::process::id()));
    let (mut loadable, mut failures) = (0, Vec::new());
    for o in &objs {
        let b = Command::new(&bpftool).arg("prog").arg("loadall").arg(o).arg(&pin).output().unwrap();
        let _ = std::fs::remove_dir_all(&pin);
        let _ = std::fs::remove_file(&pin);
        if !b.status.success() {
            continue;
        }
        loadable += 1;
        let k = Command::new(env!("CARGO_BIN_EXE_kops")).arg("verify").arg(o).output().unwrap();
        if k.status.code() != Some(0) {
            failures.push(format!(
                "{}: exit {:?}\n{}{}",
                o.display(),
                k.status.code(),
                String::from_utf8_lossy(&k.stdout),
                String::from_utf8_lossy(&k.stderr)
            ));
        }
    }
    println!("{} objects, {loadable} load with bpftool, {} of those pass kops verify", objs.len(), loadable - failures.len());
    assert!(loadable > 0, "bpftool loads none of the {} objects: nothing was checked", objs.len());
    assert!(failures.is_empty(), "bpftool loads these, kops verify does not:\n{}", failures.join("\n"));
}
