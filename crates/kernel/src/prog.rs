//! Program load (with verifier log) and BPF_PROG_TEST_RUN.

use std::ffi::CString;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};

use kops_isa::Insn;
use kops_object::{FuncInfo, LineInfo};

use crate::sys;
use crate::{available, KernelBtf, KernelError};

/// Everything `BPF_PROG_LOAD` takes besides the instructions and the fd_array.
#[derive(Debug, Clone, Default)]
pub struct LoadOptions {
    /// Program name (shortened to the kernel's 15 characters).
    pub name: String,
    /// `enum bpf_prog_type`.
    pub prog_type: u32,
    /// `enum bpf_attach_type` (0 when the type needs none).
    pub expected_attach_type: u32,
    /// Empty means "GPL" (our own test programs); objects pass their `license` section.
    pub license: String,
    pub kern_version: u32,
    /// `BPF_F_*` load flags (e.g. `BPF_F_SLEEPABLE`).
    pub prog_flags: u32,
    /// Verifier log level: 0 = log only on failure (loaded again at level 1 to get the
    /// reason), 1 = instructions, 2 = verbose states, 4 = statistics; may be OR-ed.
    pub log_level: u32,
    /// BTF of the program (borrowed for the call) for func_info/line_info.
    pub btf_fd: Option<RawFd>,
    pub func_info: Vec<FuncInfo>,
    pub line_info: Vec<LineInfo>,
    /// Tracing/extension programs: BTF id of the attach target, and the target program's fd
    /// when the target is a BPF program rather than a kernel function.
    pub attach_btf_id: u32,
    pub attach_prog_fd: Option<RawFd>,
}

/// A program the verifier accepted.
#[derive(Debug)]
pub struct LoadedProg {
    pub fd: OwnedFd,
    pub name: String,
    pub prog_type: u32,
    /// The verifier log at the requested level (empty at level 0).
    pub log: String,
    /// How the attach target of a tracing program was chosen, when it was.
    pub attach_note: Option<String>,
    /// A stand-in attach target kept alive with the program.
    pub(crate) _target: Option<Box<(LoadedProg, KernelBtf)>>,
}

pub(crate) struct RawLoadError {
    pub errno: i32,
    pub log: String,
}

const LOG_START: usize = 1 << 16;
/// The kernel accepts up to `UINT_MAX >> 2`; a log beyond this is not worth keeping.
const LOG_MAX: usize = 1 << 28;

/// `BPF_PROG_LOAD` through libbpf, growing the log buffer while the kernel answers ENOSPC
/// (a truncated log makes the whole load fail, even for a valid program).
pub(crate) fn load_raw(
    insns: &[Insn],
    opts: &LoadOptions,
    fd_array: &[RawFd],
) -> Result<(OwnedFd, String), RawLoadError> {
    sys::quiet_libbpf();
    let name = sys::kernel_name(&opts.name);
    let license = CString::new(if opts.license.is_empty() { "GPL" } else { opts.license.as_str() })
        .map_err(|_| RawLoadError { errno: libc::EINVAL, log: "license contains a NUL byte".into() })?;
    // The kernel's struct bpf_insn has the same layout as our Insn's to_bytes().
    let raw: Vec<libbpf_sys::bpf_insn> = insns
        .iter()
        .map(|i| {
            let b = i.to_bytes();
            let mut r = libbpf_sys::bpf_insn { code: b[0], ..Default::default() };
            r.set_dst_reg(b[1] & 0x0f);
            r.set_src_reg(b[1] >> 4);
            r.off = i.off;
            r.imm = i.imm;
            r
        })
        .collect();
    let finfo: Vec<u32> = opts.func_info.iter().flat_map(|f| [f.insn_off, f.type_id]).collect();
    let linfo: Vec<u32> = opts
        .line_info
        .iter()
        .flat_map(|l| [l.insn_off, l.file_name_off, l.line_off, l.line_col])
        .collect();
    let mut log_size = LOG_START;
    loop {
        let mut log = vec![0u8; log_size];
        let mut o = libbpf_sys::bpf_prog_load_opts {
            sz: std::mem::size_of::<libbpf_sys::bpf_prog_load_opts>() as _,
            expected_attach_type: opts.expected_attach_type,
            prog_flags: opts.prog_flags,
            kern_version: opts.kern_version,
            attach_btf_id: opts.attach_btf_id,
            attach_prog_fd: opts.attach_prog_fd.unwrap_or(0) as u32,
            log_level: opts.log_level,
            log_size: log_size as u32,
            log_buf: log.as_mut_ptr() as *mut _,
            ..Default::default()
        };
        if !fd_array.is_empty() {
            o.fd_array = fd_array.as_ptr();
        }
        if let Some(btf) = opts.btf_fd {
            o.prog_btf_fd = btf as u32;
            if !finfo.is_empty() {
                o.func_info = finfo.as_ptr() as *const _;
                o.func_info_cnt = opts.func_info.len() as u32;
                o.func_info_rec_size = 8;
            }
            if !linfo.is_empty() {
                o.line_info = linfo.as_ptr() as *const _;
                o.line_info_cnt = opts.line_info.len() as u32;
                o.line_info_rec_size = 16;
            }
        }
        let ret = unsafe {
            libbpf_sys::bpf_prog_load(
                opts.prog_type,
                name.as_ptr(),
                license.as_ptr(),
                raw.as_ptr(),
                raw.len() as _,
                &mut o,
            )
        };
        let text = log_text(&log);
        match sys::fd_or_errno(ret) {
            Ok(fd) => return Ok((fd, text)),
            Err(libc::ENOSPC) if log_size < LOG_MAX => {
                log_size = (o.log_true_size as usize + 1).max(log_size * 4).min(LOG_MAX);
            }
            Err(errno) => return Err(RawLoadError { errno, log: text }),
        }
    }
}

/// Why a kernel may refuse a program type outright, from what the machine shows.
fn eperm_hint(prog_type: u32) -> String {
    // tracing (26), ext (28), lsm (29), kprobe (2), tracepoint (5), raw_tp (17), perf (7)
    if !matches!(prog_type, 2 | 5 | 7 | 17 | 26 | 28 | 29) {
        return String::new();
    }
    let mut why = Vec::new();
    match std::fs::read_to_string("/sys/kernel/security/lockdown") {
        Ok(s) if !s.contains("[none]") => why.push(format!("kernel lockdown is {}", s.trim())),
        Ok(_) => {}
        Err(_) => why.push("the kernel may be locked down (lockdown state not readable)".to_string()),
    }
    if !std::path::Path::new("/sys/kernel/btf/vmlinux").exists() {
        why.push("the kernel exposes no vmlinux BTF (/sys/kernel/btf/vmlinux missing)".into());
    }
    if why.is_empty() {
        String::new()
    } else {
        format!("; programs that attach to kernel functions or to other BPF programs are refused here: {}", why.join(", "))
    }
}

fn log_text(buf: &[u8]) -> String {
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

/// Loads `insns` as a program. Map references are `ld_imm64` with `src_reg =
/// PSEUDO_MAP_IDX/IDX_VALUE` and `imm` indexing `fd_array` (the kernel resolves them), or
/// already-resolved fds. A verifier rejection is [`KernelError::Rejected`] with the log and
/// the instruction it points at; EPERM is [`KernelError::KernelUnavailable`].
pub fn load_program(
    insns: &[Insn],
    opts: &LoadOptions,
    fd_array: &[RawFd],
) -> Result<LoadedProg, KernelError> {
    available()?;
    if insns.is_empty() {
        return Err(KernelError::Invalid(format!("program `{}` has no instructions", opts.name)));
    }
    match load_raw(insns, opts, fd_array) {
        Ok((fd, log)) => Ok(LoadedProg {
            fd,
            name: opts.name.clone(),
            prog_type: opts.prog_type,
            log,
            attach_note: None,
            _target: None,
        }),
        Err(RawLoadError { errno, mut log }) => {
            if errno == libc::EPERM && log.trim().is_empty() {
                // bpf(2) itself works (the probe passed), so this is a refusal of this
                // program type or attach target before any verification.
                return Err(KernelError::Rejected {
                    name: opts.name.clone(),
                    errno,
                    errno_name: sys::errno_name(errno),
                    message: format!(
                        "the kernel refused to load this program before verifying it (EPERM, no verifier log){}",
                        eperm_hint(opts.prog_type)
                    ),
                    insn: None,
                    log,
                });
            }
            // A level without the instruction trace (0 or stats only) explains nothing: load
            // again at level 1 so the rejection carries the verifier's reason.
            if opts.log_level & 3 == 0 && opts.log_level != 0 {
                let mut again = opts.clone();
                again.log_level |= 1;
                if let Err(e) = load_raw(insns, &again, fd_array) {
                    log = e.log;
                }
            }
            let msg = crate::log::parse_log(&log);
            Err(KernelError::Rejected {
                name: opts.name.clone(),
                errno,
                errno_name: sys::errno_name(errno),
                message: if msg.message.is_empty() {
                    format!("{} (the verifier log is empty)", sys::errno_text(errno))
                } else {
                    msg.message
                },
                insn: msg.insn,
                log,
            })
        }
    }
}

/// Input of one BPF_PROG_TEST_RUN.
#[derive(Debug, Clone, Default)]
pub struct TestRun<'a> {
    pub data_in: Option<&'a [u8]>,
    /// Capacity for the output packet; `None` = input length + 4096 (XDP may grow it).
    pub data_out_size: Option<usize>,
    pub ctx_in: Option<&'a [u8]>,
    /// Capacity for the output context (0 = no context out).
    pub ctx_out_size: usize,
    /// 0 or 1 = one run.
    pub repeat: u32,
    pub flags: u32,
    pub cpu: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TestRunResult {
    /// The program's return value (the kernel reports only its low 32 bits).
    pub retval: u32,
    pub data_out: Vec<u8>,
    pub ctx_out: Vec<u8>,
    /// Average run time per repetition, in nanoseconds.
    pub duration_ns: u32,
}

impl LoadedProg {
    pub fn test_run(&self, run: &TestRun) -> Result<TestRunResult, KernelError> {
        test_run_fd(self.fd.as_raw_fd(), &self.name, run)
    }
    pub fn info(&self) -> Result<crate::ProgInfo, KernelError> {
        crate::info::prog_info(self.fd.as_raw_fd())
    }
}

/// BPF_PROG_TEST_RUN on any program fd (`what` names it in errors).
pub fn test_run_fd(fd: RawFd, what: &str, run: &TestRun) -> Result<TestRunResult, KernelError> {
    let data_cap = match run.data_in {
        Some(d) => run.data_out_size.unwrap_or(d.len() + 4096),
        None => 0,
    };
    let mut data_out = vec![0u8; data_cap];
    let mut ctx_out = vec![0u8; run.ctx_out_size];
    let mut o = libbpf_sys::bpf_test_run_opts {
        sz: std::mem::size_of::<libbpf_sys::bpf_test_run_opts>() as _,
        repeat: run.repeat as i32,
        flags: run.flags,
        cpu: run.cpu,
        ..Default::default()
    };
    if let Some(d) = run.data_in {
        o.data_in = d.as_ptr() as *const _;
        o.data_size_in = d.len() as u32;
        o.data_out = data_out.as_mut_ptr() as *mut _;
        o.data_size_out = data_cap as u32;
    }
    if let Some(c) = run.ctx_in {
        o.ctx_in = c.as_ptr() as *const _;
        o.ctx_size_in = c.len() as u32;
    }
    if run.ctx_out_size > 0 {
        o.ctx_out = ctx_out.as_mut_ptr() as *mut _;
        o.ctx_size_out = run.ctx_out_size as u32;
    }
    let ret = unsafe { libbpf_sys::bpf_prog_test_run_opts(fd, &mut o) };
    if let Err(errno) = sys::check(ret) {
        let hint = match errno {
            libc::EINVAL if run.data_in.map(|d| d.len() < 14).unwrap_or(false) => {
                " (the kernel test-runs packets of at least 14 bytes, an Ethernet header)"
            }
            libc::ENOTSUP | 524 => " (this program type has no BPF_PROG_TEST_RUN support)",
            libc::ENOSPC => " (output larger than the buffer)",
            _ => "",
        };
        return Err(KernelError::sys(
            format!("BPF_PROG_TEST_RUN of `{what}`: {}{hint}", sys::errno_name(errno)),
            errno,
        ));
    }
    data_out.truncate((o.data_size_out as usize).min(data_cap));
    ctx_out.truncate((o.ctx_size_out as usize).min(run.ctx_out_size));
    Ok(TestRunResult { retval: o.retval, data_out, ctx_out, duration_ns: o.duration })
}
