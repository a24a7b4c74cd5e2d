//! Host memory that programs may touch: owned raw buffers with stable addresses, and the
//! registry of regions the interpreter checks every access against.
//!
//! Programs see real host addresses (so the interpreter, the JIT and the helpers can share
//! one set of maps). Buffers are therefore raw allocations that never move and are only
//! accessed through raw pointers: no Rust reference to their bytes is kept while a program
//! may write them.

use std::alloc::{alloc_zeroed, dealloc, Layout};
use std::cell::Cell;
use std::collections::BTreeMap;

thread_local! {
    /// Bytes left free before every buffer allocated on this thread (see [`with_gap`]).
    static GAP: Cell<usize> = const { Cell::new(0) };
}

/// Run `f` with every [`RawBuf`] it allocates placed `gap` bytes into a bigger allocation,
/// so its buffers get other addresses than an otherwise identical run's.
pub(crate) fn with_gap<T>(gap: usize, f: impl FnOnce() -> T) -> T {
    let old = GAP.with(|g| g.replace(gap));
    let r = f();
    GAP.with(|g| g.set(old));
    r
}

/// A zeroed, 8-byte aligned heap buffer that never moves. Freed on drop.
pub struct RawBuf {
    ptr: *mut u8,
    len: usize,
    /// Unused bytes before `ptr` in the allocation.
    gap: usize,
}

impl RawBuf {
    pub fn new(len: usize) -> RawBuf {
        // Zero-length buffers still get a real (1-word) allocation so that every buffer
        // has a distinct, valid address.
        let gap = GAP.with(|g| g.get()) / 8 * 8;
        let layout = Layout::from_size_align(len.max(8) + gap, 8).expect("buffer size overflows");
        // SAFETY: layout has non-zero size.
        let base = unsafe { alloc_zeroed(layout) };
        if base.is_null() {
            std::alloc::handle_alloc_error(layout);
        }
        // SAFETY: the allocation holds gap + len bytes.
        RawBuf { ptr: unsafe { base.add(gap) }, len, gap }
    }

    pub fn from_bytes(bytes: &[u8]) -> RawBuf {
        let b = RawBuf::new(bytes.len());
        b.write(0, bytes);
        b
    }

    pub fn addr(&self) -> u64 {
        self.ptr as u64
    }
    pub fn ptr(&self) -> *mut u8 {
        self.ptr
    }
    pub fn len(&self) -> usize {
        self.len
    }
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Copy of `len` bytes at `off`. Panics on a range outside the buffer (caller bug).
    pub fn read(&self, off: usize, len: usize) -> Vec<u8> {
        assert!(off + len <= self.len, "RawBuf::read out of range");
        let mut v = vec![0u8; len];
        // SAFETY: range checked above; the buffer is live.
        unsafe { std::ptr::copy_nonoverlapping(self.ptr.add(off), v.as_mut_ptr(), len) };
        v
    }

    pub fn write(&self, off: usize, bytes: &[u8]) {
        assert!(off + bytes.len() <= self.len, "RawBuf::write out of range");
        // SAFETY: range checked above.
        unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), self.ptr.add(off), bytes.len()) };
    }

    pub fn fill(&self, off: usize, len: usize, byte: u8) {
        assert!(off + len <= self.len, "RawBuf::fill out of range");
        // SAFETY: range checked above.
        unsafe { std::ptr::write_bytes(self.ptr.add(off), byte, len) };
    }
}

impl Drop for RawBuf {
    fn drop(&mut self) {
        let layout = Layout::from_size_align(self.len.max(8) + self.gap, 8).unwrap();
        // SAFETY: allocated in `new` with this layout, `gap` bytes before `ptr`.
        unsafe { dealloc(self.ptr.sub(self.gap), layout) };
    }
}

impl std::fmt::Debug for RawBuf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RawBuf({:#x}, {} bytes)", self.addr(), self.len)
    }
}

/// What a registered region is, for error messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RegionKind {
    /// Value storage of map `index` (array elements, one hash entry, global data).
    MapValue { map: usize },
    /// A ring buffer reservation of map `index`.
    RingbufRecord { map: usize },
}

#[derive(Debug, Clone)]
pub struct Region {
    pub start: u64,
    pub end: u64,
    pub writable: bool,
    pub kind: RegionKind,
}

/// Long-lived regions: map values and ring buffer reservations. Per-run regions (stack,
/// context, packet) are checked by the engine itself.
#[derive(Debug, Default)]
pub struct Registry {
    by_start: BTreeMap<u64, Region>,
}

impl Registry {
    pub fn add(&mut self, r: Region) {
        self.by_start.insert(r.start, r);
    }
    pub fn remove(&mut self, start: u64) {
        self.by_start.remove(&start);
    }
    /// The region containing all of `[addr, addr + len)`, if any.
    pub fn find(&self, addr: u64, len: u64) -> Option<&Region> {
        let (_, r) = self.by_start.range(..=addr).next_back()?;
        let end = addr.checked_add(len)?;
        (addr >= r.start && end <= r.end).then_some(r)
    }
    pub fn len(&self) -> usize {
        self.by_start.len()
    }
    pub fn is_empty(&self) -> bool {
        self.by_start.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_finds_only_contained_ranges() {
        let mut r = Registry::default();
        r.add(Region { start: 100, end: 108, writable: true, kind: RegionKind::MapValue { map: 0 } });
        r.add(Region { start: 200, end: 204, writable: false, kind: RegionKind::MapValue { map: 1 } });
        assert!(r.find(100, 8).is_some());
        assert!(r.find(104, 4).is_some());
        assert!(r.find(104, 5).is_none()); // runs past the end
        assert!(r.find(99, 2).is_none());
        assert!(r.find(150, 1).is_none());
        assert!(!r.find(200, 4).unwrap().writable);
        assert!(r.find(u64::MAX, 8).is_none()); // overflow
        r.remove(100);
        assert!(r.find(100, 1).is_none());
    }

    #[test]
    fn rawbuf_is_zeroed_and_aligned() {
        let b = RawBuf::new(13);
        assert_eq!(b.addr() % 8, 0);
        assert_eq!(b.read(0, 13), vec![0; 13]);
        b.write(3, &[1, 2]);
        assert_eq!(b.read(2, 3), vec![0, 1, 2]);
        let z = RawBuf::new(0);
        assert_ne!(z.addr(), 0);
    }
}
