//! BPF test fixtures shared by the object and recognize crates' tests: C compiled for BPF
//! with clang-19, and Debian's libxdp1 objects.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Debian's libxdp1 objects: fetched with apt-get into a cache dir (KOPS_LIBXDP_DIR
/// overrides where the extracted package lives). None, with the reason printed, when the
/// package cannot be fetched.
pub fn libxdp_dir() -> Option<PathBuf> {
    let base = std::env::var_os("KOPS_LIBXDP_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| std::env::temp_dir().join("kops-libxdp1"));
    let objdir = base.join("x/usr/lib/x86_64-linux-gnu/bpf");
    if objdir.is_dir() {
        return Some(objdir);
    }
    std::fs::create_dir_all(&base).ok()?;
    let dl = Command::new("apt-get").arg("download").arg("libxdp1").current_dir(&base).output();
    let deb = std::fs::read_dir(&base).ok()?.filter_map(|e| e.ok()).map(|e| e.path()).find(|p| p.extension().is_some_and(|x| x == "deb"));
    let Some(deb) = deb else {
        eprintln!("SKIP: apt-get download libxdp1 failed: {:?}", dl.map(|o| String::from_utf8_lossy(&o.stderr).into_owned()));
        return None;
    };
    let ok = Command::new("dpkg-deb").arg("-x").arg(&deb).arg(base.join("x")).status().map(|s| s.success()).unwrap_or(false);
    if !ok || !objdir.is_dir() {
        eprintln!("SKIP: could not extract {}", deb.display());
        return None;
    }
    Some(objdir)
}

/// clang-19 set to compile the C file `src` into the BPF object `out` (-O2 -g, cpu v3).
pub fn clang_bpf(src: &Path, out: &Path) -> Command {
    let mut c = Command::new("clang-19");
    c.args(["-O2", "-g", "-target", "bpf", "-mcpu=v3", "-I/usr/include/x86_64-linux-gnu", "-c"]).arg(src).arg("-o").arg(out);
    c
}
