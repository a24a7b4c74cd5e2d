//! The bpf(2) side of Kops (DESIGN.md layer 9): map creation from an object's definitions,
//! program load with the verifier log, BPF_PROG_TEST_RUN, map read-back, program info
//! (xlated and jited images) and program id iteration.
//!
//! Everything goes through libbpf's low-level API (`libbpf-sys`, vendored and linked
//! statically, so the bindings and the library are always the same version). There are no
//! raw bpf(2) calls: every command we need (`BPF_MAP_CREATE`, `BPF_PROG_LOAD`,
//! `BPF_BTF_LOAD`, `BPF_PROG_TEST_RUN`, lookup/next-key/batch, `BPF_OBJ_GET_INFO_BY_FD`,
//! `BPF_PROG_GET_NEXT_ID`, `BPF_PROG_GET_FD_BY_ID`, `BPF_MAP_FREEZE`) has a libbpf wrapper.
//! Building needs a C compiler, make, pkg-config, libelf-dev and zlib1g-dev (libbpf is
//! compiled from the crate's vendored sources; libelf and zlib are linked from the system).
//!
//! CO-RE relocations and externs (`.kconfig`, `.ksyms`, kfuncs) are resolved against the
//! running kernel by libbpf itself, and mapped back into the object model: see [`core`].
//!
//! Privilege: [`available`] probes once whether bpf(2) works and caches the answer; every
//! entry point that needs the kernel calls it first, so a machine without BPF or without
//! privilege gets one [`KernelError::KernelUnavailable`] line instead of a cascade of EPERMs.

pub mod attach;
pub mod btf;
pub mod conformance;
pub mod core;
pub mod info;
pub mod load;
pub mod log;
pub mod map;
pub mod prog;
mod sys;
pub mod verifier;

pub use btf::KernelBtf;
pub use info::{prog_fd_by_id, prog_ids, prog_info, ProgInfo};
pub use log::{parse_log, VerifierMessage};
pub use map::{Map, MapDump, MapSet};
pub use load::load_object_program;
pub use prog::{load_program, LoadOptions, LoadedProg, TestRun, TestRunResult};
pub use verifier::{kernel_form, KernelForm, KernelVerifier};

use std::sync::OnceLock;

/// Errors of the kernel layer. Each names the object it concerns (map, program, input).
#[derive(Debug, thiserror::Error)]
pub enum KernelError {
    /// bpf(2) is refused (no privilege, BPF disabled, no syscall). One line, with the reason.
    #[error("the kernel refused bpf(2): {0}")]
    KernelUnavailable(String),
    /// The kernel refused to create a map.
    #[error("map `{name}`: {msg}")]
    Map { name: String, msg: String },
    /// The kernel refused the object's BTF.
    #[error("BTF rejected by the kernel: {msg}")]
    Btf { msg: String, log: String },
    /// The verifier rejected the program. `log` is the full verifier log.
    #[error("program `{name}` rejected by the verifier ({errno_name}): {message}")]
    Rejected {
        name: String,
        errno: i32,
        errno_name: String,
        /// The verifier's message (the lines after the last instruction it printed).
        message: String,
        /// The instruction the message points at, when the log names one.
        insn: Option<usize>,
        log: String,
    },
    /// CO-RE relocations or externs could not be resolved against the running kernel
    /// (`msg` names the program and slot, with libbpf's own warnings).
    #[error("{object}: {msg}")]
    Relocation { object: String, msg: String },
    /// Our input could not be given to the kernel (bad instruction array, ...).
    #[error("{0}")]
    Invalid(String),
    /// Any other failing call.
    #[error("{op}: {err}")]
    Sys { op: String, err: std::io::Error },
}

impl KernelError {
    pub(crate) fn sys(op: impl Into<String>, errno: i32) -> KernelError {
        KernelError::Sys { op: op.into(), err: std::io::Error::from_raw_os_error(errno) }
    }
}

static AVAILABLE: OnceLock<Result<(), String>> = OnceLock::new();

/// Probe once whether this process may use bpf(2): create a one-element array map and load
/// `r0 = 0; exit` as a socket filter. EPERM/EACCES/ENOSYS (and anything else that stops these
/// two trivial calls) make the kernel unavailable, with the reason in one line.
pub fn available() -> Result<(), KernelError> {
    AVAILABLE
        .get_or_init(probe)
        .clone()
        .map_err(KernelError::KernelUnavailable)
}

fn probe() -> Result<(), String> {
    sys::quiet_libbpf();
    let explain = |what: &str, errno: i32| -> String {
        let why = match errno {
            libc::EPERM | libc::EACCES => {
                let knob = std::fs::read_to_string("/proc/sys/kernel/unprivileged_bpf_disabled")
                    .map(|s| format!(", kernel.unprivileged_bpf_disabled={}", s.trim()))
                    .unwrap_or_default();
                format!("permission denied (needs root or CAP_BPF+CAP_PERFMON+CAP_NET_ADMIN{knob})")
            }
            libc::ENOSYS => "this kernel has no bpf(2) system call (CONFIG_BPF_SYSCALL off, or a seccomp filter)".into(),
            e => sys::errno_text(e),
        };
        format!("{what} failed: {why}")
    };
    let map = unsafe {
        libbpf_sys::bpf_map_create(
            libbpf_sys::BPF_MAP_TYPE_ARRAY,
            std::ptr::null(),
            4,
            8,
            1,
            std::ptr::null(),
        )
    };
    if map < 0 {
        return Err(explain("BPF_MAP_CREATE (probe)", -map));
    }
    unsafe { libc::close(map) };
    let insns = [kops_isa::Insn::mov64_imm(0, 0), kops_isa::Insn::exit()];
    let opts = LoadOptions {
        prog_type: 1,
        name: "kops_probe".into(),
        ..LoadOptions::default()
    };
    match prog::load_raw(&insns, &opts, &[]) {
        Ok(_) => Ok(()),
        Err(prog::RawLoadError { errno, log }) => {
            let mut s = explain("BPF_PROG_LOAD (probe)", errno);
            if let Some(line) = log.lines().find(|l| !l.trim().is_empty()) {
                s.push_str(&format!(" ({line})"));
            }
            Err(s)
        }
    }
}

/// For tests that need the kernel: `None` when bpf(2) works; otherwise the reason to skip,
/// unless `KOPS_REQUIRE_KERNEL=1` (as CI sets it), in which case this panics so the test
/// fails instead of passing silently.
pub fn skip_reason() -> Option<String> {
    match available() {
        Ok(()) => None,
        Err(e) => {
            if std::env::var("KOPS_REQUIRE_KERNEL").map(|v| v == "1").unwrap_or(false) {
                panic!("KOPS_REQUIRE_KERNEL=1 but {e}");
            }
            Some(e.to_string())
        }
    }
}

/// `require_kernel!()` at the top of a test: prints `SKIPPED: <reason>` and returns when
/// bpf(2) is refused (fails instead under `KOPS_REQUIRE_KERNEL=1`).
#[macro_export]
macro_rules! require_kernel {
    () => {
        if let Some(reason) = $crate::skip_reason() {
            println!("SKIPPED: {reason}");
            return;
        }
    };
}

/// Number of possible CPUs (the stride of per-CPU map values).
pub fn possible_cpus() -> usize {
    static N: OnceLock<usize> = OnceLock::new();
    *N.get_or_init(|| {
        let n = unsafe { libbpf_sys::libbpf_num_possible_cpus() };
        if n > 0 {
            n as usize
        } else {
            1
        }
    })
}

/// Pins the calling thread to one CPU (the lowest it may run on) and returns its number.
/// BPF_PROG_TEST_RUN runs the program on the caller's CPU, so after this every per-CPU map
/// change lands in that CPU's slot and `bpf_get_smp_processor_id` is predictable.
pub fn pin_to_one_cpu() -> Result<usize, KernelError> {
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) != 0 {
            return Err(KernelError::Sys { op: "sched_getaffinity".into(), err: std::io::Error::last_os_error() });
        }
        let cpu = (0..libc::CPU_SETSIZE as usize)
            .find(|&c| libc::CPU_ISSET(c, &set))
            .ok_or_else(|| KernelError::Invalid("no CPU in this thread's affinity mask".into()))?;
        let mut one: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut one);
        if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &one) != 0 {
            return Err(KernelError::Sys { op: "sched_setaffinity".into(), err: std::io::Error::last_os_error() });
        }
        Ok(cpu)
    }
}
