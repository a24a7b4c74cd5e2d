//! The `native` runtime: bpf/native/native.c (the benchmark kernels compiled for the host
//! by build.rs with -O2) through its exported table `kops_native_table`.

use crate::Runner;

type NativeFn = unsafe extern "C" fn(*const u8, usize) -> u64;

#[cfg(kops_native)]
mod ffi {
    #[repr(C)]
    pub struct Entry {
        pub prog: *const std::ffi::c_char,
        pub symbol: *const std::ffi::c_char,
        pub f: Option<super::NativeFn>,
    }
    extern "C" {
        pub static kops_native_table: [Entry; 0];
        pub fn kops_native_floor(data: *const u8, len: usize) -> u64;
    }
}

/// Why the native runtime is absent from this build (None: it is built in).
pub fn unavailable() -> Option<String> {
    if cfg!(kops_native) {
        None
    } else {
        Some(env!("KOPS_NATIVE_SKIP").to_string())
    }
}

/// The compiler and flags the native kernels were built with.
pub fn compiler() -> &'static str {
    env!("KOPS_NATIVE_CC")
}

/// The host function for BPF program `prog`, if native.c has one.
pub fn lookup(prog: &str) -> Option<NativeFn> {
    #[cfg(kops_native)]
    {
        // SAFETY: the table is a static array terminated by an entry whose `prog` is NULL;
        // every other entry has valid C strings and a function pointer.
        unsafe {
            let mut e = ffi::kops_native_table.as_ptr();
            while !(*e).prog.is_null() {
                if std::ffi::CStr::from_ptr((*e).prog).to_bytes() == prog.as_bytes() {
                    return (*e).f;
                }
                e = e.add(1);
            }
        }
        None
    }
    #[cfg(not(kops_native))]
    {
        let _ = prog;
        None
    }
}

/// The native harness floor: a C function (same compiler and flags) that returns
/// XDP_PASS at once, the counterpart of the `xdp_return` program.
pub fn floor() -> Option<NativeFn> {
    #[cfg(kops_native)]
    {
        Some(ffi::kops_native_floor as NativeFn)
    }
    #[cfg(not(kops_native))]
    {
        None
    }
}

/// Runs `f` on the packet; the mean over `repeat` calls.
pub struct NativeRunner {
    f: NativeFn,
    data: Vec<u8>,
}

impl NativeRunner {
    pub fn new(f: NativeFn, data: &[u8]) -> NativeRunner {
        NativeRunner { f, data: data.to_vec() }
    }
    /// One call: the folded result the BPF program stores in `kops_result`.
    pub fn result(&self) -> u64 {
        // SAFETY: the native kernels read only data[0..len).
        unsafe { (self.f)(self.data.as_ptr(), self.data.len()) }
    }
}

impl Runner for NativeRunner {
    fn measure(&mut self, repeat: u32) -> Result<f64, String> {
        let (p, n) = (self.data.as_ptr(), self.data.len());
        let t = crate::runners::ThreadClock::now();
        for _ in 0..repeat {
            // black_box: the call may not be hoisted or dropped (it is an opaque extern call
            // already; this also keeps the arguments from being treated as constants).
            // SAFETY: as in `result`.
            std::hint::black_box(unsafe { (self.f)(std::hint::black_box(p), std::hint::black_box(n)) });
        }
        Ok(t.elapsed_ns() as f64 / repeat as f64)
    }
}
