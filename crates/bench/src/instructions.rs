//! Native instructions per run on the userspace runtimes, counted by callgrind: a metric
//! without timing noise, so a few-percent effect on a 40 ns program shows even on a shared
//! machine. `kops run --repeat N` runs under `valgrind --tool=callgrind` with counting on
//! only inside `Vm::run_repeat` (the loop of runs and everything it calls: the runtime's
//! code, helpers, the per-run harness), and the count is divided by N.

use std::path::Path;
use std::process::Command;

/// Runs per count: enough that the loop's one-time costs vanish in the division.
pub const REPEAT: u32 = 1000;

/// Whether callgrind can run here (None) or why not.
pub fn unavailable() -> Option<String> {
    match Command::new("valgrind").arg("--version").output() {
        Ok(o) if o.status.success() => None,
        Ok(o) => Some(format!("valgrind --version failed: {}", String::from_utf8_lossy(&o.stderr).trim())),
        Err(e) => Some(format!("valgrind not found ({e}); scripts/setup.sh installs it")),
    }
}

/// The count of one `kops run` (the executable `kops`) of `program` in `object` on
/// `runtime` (`interp`, `jit` or `kops`) with input `data`, per run.
pub fn per_run(kops: &Path, object: &str, program: &str, runtime: &str, data: &[u8]) -> Result<f64, String> {
    let dir = std::env::temp_dir().join(format!("kops-callgrind-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let input = dir.join("input.bin");
    std::fs::write(&input, data).map_err(|e| format!("{}: {e}", input.display()))?;
    let out = Command::new("valgrind")
        .args(["--tool=callgrind", "--smc-check=all-non-file", "--collect-atstart=no", "--toggle-collect=*Vm*run_repeat*"])
        .arg(format!("--callgrind-out-file={}", dir.join("callgrind.out").display()))
        .arg(kops)
        .args(["run", object, "--prog", program, "--runtime", runtime, "--repeat", &REPEAT.to_string(), "--data"])
        .arg(&input)
        .output()
        .map_err(|e| format!("running valgrind: {e}"))?;
    let _ = std::fs::remove_dir_all(&dir);
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        let last = stderr.lines().filter(|l| !l.starts_with("==")).last().unwrap_or("").to_string();
        return Err(format!("kops run under callgrind failed ({}): {last}", out.status));
    }
    let collected = stderr
        .lines()
        .find_map(|l| l.split("Collected : ").nth(1))
        .and_then(|n| n.trim().parse::<u64>().ok())
        .ok_or_else(|| "callgrind printed no `Collected` count".to_string())?;
    if collected == 0 {
        return Err("callgrind counted nothing inside Vm::run_repeat (symbol not found?)".into());
    }
    Ok(collected as f64 / REPEAT as f64)
}
