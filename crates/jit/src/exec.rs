//! Executable memory that is never writable and executable at the same time: map
//! read-write, copy the code, then switch to read+execute; unmap on drop.

use std::io;

pub struct ExecMem {
    ptr: *mut u8,
    len: usize,
}

// The mapping is immutable once created (read+execute), so sharing it is fine.
unsafe impl Send for ExecMem {}
unsafe impl Sync for ExecMem {}

fn page() -> usize {
    // SAFETY: sysconf has no preconditions.
    let p = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if p > 0 {
        p as usize
    } else {
        4096
    }
}

impl ExecMem {
    /// Reserve `len` bytes read-write, preferably at `hint` (exactly there, or not at all
    /// when `exact`). Returns the base address before any code is written, so callers
    /// can link for it.
    pub fn reserve(len: usize, hint: Option<u64>, exact: bool) -> io::Result<ExecMem> {
        let len = len.max(1).div_ceil(page()) * page();
        let mut flags = libc::MAP_PRIVATE | libc::MAP_ANONYMOUS;
        if exact && hint.is_some() {
            flags |= libc::MAP_FIXED_NOREPLACE;
        }
        let addr = hint.unwrap_or(0) as *mut libc::c_void;
        // SAFETY: anonymous mapping; with MAP_FIXED_NOREPLACE the kernel never replaces
        // an existing mapping.
        let p = unsafe { libc::mmap(addr, len, libc::PROT_READ | libc::PROT_WRITE, flags, -1, 0) };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        if exact && hint.is_some() && p as u64 != hint.unwrap() {
            // Old kernels ignore MAP_FIXED_NOREPLACE and treat it as a hint.
            // SAFETY: we own this fresh mapping.
            unsafe { libc::munmap(p, len) };
            return Err(io::Error::new(io::ErrorKind::AddrInUse, "mapping not at the requested address"));
        }
        Ok(ExecMem { ptr: p as *mut u8, len })
    }

    /// Reserve `len` bytes within ±2 GB (minus the image) of every address in `targets`,
    /// trying addresses below and above their span. None if no such range is free.
    pub fn reserve_near(len: usize, targets: &[u64]) -> Option<ExecMem> {
        let lo = *targets.iter().min()?;
        let hi = *targets.iter().max()?;
        let span = 0x7000_0000u64; // stay well inside rel32 reach
        if hi - lo >= span {
            return None;
        }
        let pg = page() as u64;
        let len_r = (len as u64).div_ceil(pg) * pg;
        let mut cands = Vec::new();
        for step in 1..64u64 {
            let d = step * 0x100_0000; // 16 MB steps
            if d + len_r < span - (hi - lo) {
                cands.push(hi.saturating_add(d) / pg * pg);
                cands.push(lo.saturating_sub(d + len_r) / pg * pg);
            }
        }
        for c in cands {
            if c == 0 {
                continue;
            }
            let far = c.max(hi) - c.min(lo) + len_r;
            if far >= 0x7fff_0000 {
                continue;
            }
            if let Ok(m) = ExecMem::reserve(len, Some(c), true) {
                return Some(m);
            }
        }
        None
    }

    pub fn addr(&self) -> u64 {
        self.ptr as u64
    }
    pub fn len(&self) -> usize {
        self.len
    }
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Copy `code` in and make the mapping read+execute (never writable again).
    pub fn finish(self, code: &[u8]) -> io::Result<ExecMem> {
        if code.len() > self.len {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "code larger than the mapping"));
        }
        // SAFETY: the mapping is ours, read-write, and at least code.len() bytes.
        unsafe {
            std::ptr::copy_nonoverlapping(code.as_ptr(), self.ptr, code.len());
            // Fill the rest with int3.
            std::ptr::write_bytes(self.ptr.add(code.len()), 0xCC, self.len - code.len());
            if libc::mprotect(self.ptr as *mut libc::c_void, self.len, libc::PROT_READ | libc::PROT_EXEC) != 0 {
                return Err(io::Error::last_os_error());
            }
        }
        Ok(self)
    }

    /// Read back the bytes (for tests and dumps).
    pub fn bytes(&self) -> &[u8] {
        // SAFETY: the mapping is readable for its whole length while self lives.
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }
}

impl Drop for ExecMem {
    fn drop(&mut self) {
        // SAFETY: ptr/len describe a mapping we created and nobody else unmaps.
        unsafe {
            libc::munmap(self.ptr as *mut libc::c_void, self.len);
        }
    }
}
