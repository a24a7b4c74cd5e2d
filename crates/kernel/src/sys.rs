//! Small helpers around libbpf's C API.

use std::ffi::CString;
use std::os::fd::{FromRawFd, OwnedFd};
use std::sync::Once;

/// libbpf prints warnings to stderr by default; the low-level calls we use report through
/// their return values, so silence it (we report errors ourselves, with context).
pub(crate) fn quiet_libbpf() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| unsafe {
        libbpf_sys::libbpf_set_print(None);
    });
}

/// Silences libbpf again after a call that captured its messages.
pub(crate) fn quiet_libbpf_now() {
    quiet_libbpf();
    unsafe {
        libbpf_sys::libbpf_set_print(None);
    }
}

/// Takes a libbpf return value (fd >= 0, or -errno) into an owned fd or the errno.
pub(crate) fn fd_or_errno(ret: i32) -> Result<OwnedFd, i32> {
    if ret >= 0 {
        Ok(unsafe { OwnedFd::from_raw_fd(ret) })
    } else {
        Err(-ret)
    }
}

/// libbpf's low-level calls return -errno on failure (libbpf >= 1.0 mode).
pub(crate) fn check(ret: i32) -> Result<(), i32> {
    if ret < 0 {
        Err(-ret)
    } else {
        Ok(())
    }
}

pub(crate) fn errno_text(errno: i32) -> String {
    format!("{} ({})", std::io::Error::from_raw_os_error(errno), errno_name(errno))
}

/// Symbolic errno name (for the kernel-specific ones `std` does not name well).
pub(crate) fn errno_name(errno: i32) -> String {
    match errno {
        libc::EPERM => "EPERM",
        libc::ENOENT => "ENOENT",
        libc::E2BIG => "E2BIG",
        libc::ENOMEM => "ENOMEM",
        libc::EACCES => "EACCES",
        libc::EFAULT => "EFAULT",
        libc::EBUSY => "EBUSY",
        libc::EINVAL => "EINVAL",
        libc::ENOSPC => "ENOSPC",
        libc::ERANGE => "ERANGE",
        libc::ENOSYS => "ENOSYS",
        libc::ELOOP => "ELOOP",
        libc::ENOTSUP => "EOPNOTSUPP",
        524 => "ENOTSUPP",
        libc::EAGAIN => "EAGAIN",
        libc::EEXIST => "EEXIST",
        libc::ESRCH => "ESRCH",
        libc::ENXIO => "ENXIO",
        e => return format!("errno {e}"),
    }
    .to_string()
}

/// Kernel object names: at most 15 bytes of `[A-Za-z0-9_.]`.
pub(crate) fn kernel_name(name: &str) -> CString {
    let s: String = name
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || c == '_' || c == '.' { c } else { '_' })
        .take(15)
        .collect();
    CString::new(s).expect("no NUL after sanitising")
}
