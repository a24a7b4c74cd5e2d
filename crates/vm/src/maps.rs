//! Runtime maps. A program's map pointer is the address of a [`Map`]; value pointers are
//! real addresses into [`RawBuf`] storage that does not move while the value exists.
//!
//! Semantics follow the kernel where a program or a comparison with the kernel can tell
//! the difference: error codes of update/delete, `BPF_NOEXIST`/`BPF_EXIST`, per-CPU value
//! layout for userspace (value size rounded up to 8, per CPU; we model one CPU), array
//! elements at an 8-byte stride, `.rodata` read-only.

use crate::mem::{RawBuf, Region, RegionKind, Registry};
use kops_object::{map_type, MapDef};
use std::cell::UnsafeCell;
use std::collections::HashMap;

/// Linux errno values returned (negated) by map operations and helpers.
pub mod errno {
    pub const EPERM: i64 = 1;
    pub const ENOENT: i64 = 2;
    pub const E2BIG: i64 = 7;
    pub const EAGAIN: i64 = 11;
    pub const ENOMEM: i64 = 12;
    pub const EBUSY: i64 = 16;
    pub const EEXIST: i64 = 17;
    pub const EINVAL: i64 = 22;
    pub const ENOSPC: i64 = 28;
    pub const ENOTSUPP: i64 = 524;
}

/// `flags` of map_update_elem.
pub const BPF_ANY: u64 = 0;
pub const BPF_NOEXIST: u64 = 1;
pub const BPF_EXIST: u64 = 2;
/// `map_flags`: the program may not write the map.
pub const BPF_F_RDONLY_PROG: u32 = 1 << 7;

/// CPUs we model for per-CPU maps.
pub const NR_CPUS: usize = 1;

fn round8(n: usize) -> usize {
    (n + 7) & !7
}

struct HashEntry {
    value: RawBuf,
    /// Last use, for LRU eviction.
    tick: u64,
}

enum Store {
    /// array, per-CPU array, global data, devmap, xskmap. `present` is used by devmap/xskmap
    /// (a slot without a device or socket looks up as NULL).
    Array { data: RawBuf, stride: usize, present: Vec<bool> },
    Hash { entries: HashMap<Vec<u8>, HashEntry>, stride: usize, tick: u64 },
    /// Program ids (of the owning Vm) per slot, plus the raw table an engine may read:
    /// slot i holds the engine entry address of the target (0 when empty).
    ProgArray { slots: Vec<Option<usize>>, raw: RawBuf },
    RingBuf { records: Vec<Vec<u8>>, used: usize, pending: HashMap<u64, RawBuf> },
    PerfEventArray,
}

/// One map. Created by [`crate::Vm`]; programs refer to it by its address.
pub struct Map {
    pub def: MapDef,
    /// Index in the object's map list (the `imm` of `ld_imm64` src=5/6).
    pub index: usize,
    store: UnsafeCell<Store>,
    /// Hash values deleted during a run: kept alive (and their regions valid) until the run
    /// ends, as RCU keeps them alive in the kernel.
    graveyard: UnsafeCell<Vec<RawBuf>>,
}

/// Failure of a userspace map operation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("map `{map}`: {msg}")]
pub struct MapError {
    pub map: String,
    pub msg: String,
}

impl Map {
    pub(crate) fn new(def: &MapDef, index: usize, reg: &mut Registry) -> Result<Map, MapError> {
        let err = |msg: String| MapError { map: def.name.clone(), msg };
        let vs = def.value_size as usize;
        let n = def.max_entries as usize;
        if n == 0 && def.map_type != map_type::PERF_EVENT_ARRAY {
            return Err(err("max_entries is 0".into()));
        }
        let array_like = |key_ok: bool| -> Result<(), MapError> {
            if !key_ok {
                return Err(err(format!("key size {} (must be 4)", def.key_size)));
            }
            if vs == 0 {
                return Err(err("value size is 0".into()));
            }
            Ok(())
        };
        let store = match def.map_type {
            map_type::ARRAY | map_type::PERCPU_ARRAY | map_type::DEVMAP | map_type::XSKMAP => {
                array_like(def.key_size == 4)?;
                let stride = round8(vs);
                let total = stride.checked_mul(n).filter(|t| *t <= 1 << 30).ok_or_else(|| {
                    err(format!("{n} entries of {vs} bytes is too large"))
                })?;
                let data = RawBuf::new(total);
                if let Some(init) = &def.initial {
                    if init.len() > vs {
                        return Err(err(format!(
                            "initial contents ({} bytes) larger than the value ({vs} bytes)",
                            init.len()
                        )));
                    }
                    data.write(0, init);
                }
                let plain = matches!(def.map_type, map_type::ARRAY | map_type::PERCPU_ARRAY);
                if plain {
                    reg.add(Region {
                        start: data.addr(),
                        end: data.addr() + total as u64,
                        writable: !(def.readonly || def.flags & BPF_F_RDONLY_PROG != 0),
                        kind: RegionKind::MapValue { map: index },
                    });
                }
                Store::Array { data, stride, present: vec![plain; n] }
            }
            map_type::HASH | map_type::PERCPU_HASH | map_type::LRU_HASH | map_type::LRU_PERCPU_HASH => {
                if def.key_size == 0 || vs == 0 {
                    return Err(err("hash map with key or value size 0".into()));
                }
                Store::Hash { entries: HashMap::new(), stride: round8(vs), tick: 0 }
            }
            map_type::PROG_ARRAY => {
                if def.key_size != 4 || def.value_size != 4 {
                    return Err(err("program array needs key and value size 4".into()));
                }
                Store::ProgArray { slots: vec![None; n], raw: RawBuf::new(n * 8) }
            }
            map_type::RINGBUF => {
                if !n.is_power_of_two() || !n.is_multiple_of(4096) {
                    return Err(err(format!(
                        "ring buffer size {n} is not a power of 2 multiple of the page size"
                    )));
                }
                Store::RingBuf { records: Vec::new(), used: 0, pending: HashMap::new() }
            }
            map_type::PERF_EVENT_ARRAY => Store::PerfEventArray,
            t => return Err(err(format!("unsupported map type {t}"))),
        };
        Ok(Map {
            def: def.clone(),
            index,
            store: UnsafeCell::new(store),
            graveyard: UnsafeCell::new(Vec::new()),
        })
    }

    /// The address programs use for this map.
    pub fn addr(&self) -> u64 {
        self as *const Map as u64
    }

    #[allow(clippy::mut_from_ref)]
    fn store(&self) -> &mut Store {
        // SAFETY: maps are used from one thread (Map is !Sync through UnsafeCell) and no
        // operation re-enters another while holding this reference.
        unsafe { &mut *self.store.get() }
    }

    fn percpu(&self) -> bool {
        matches!(
            self.def.map_type,
            map_type::PERCPU_ARRAY | map_type::PERCPU_HASH | map_type::LRU_PERCPU_HASH
        )
    }
    fn lru(&self) -> bool {
        matches!(self.def.map_type, map_type::LRU_HASH | map_type::LRU_PERCPU_HASH)
    }
    /// Maps whose slots only userspace may change (the verifier refuses program writes).
    fn userspace_only(&self) -> bool {
        matches!(self.def.map_type, map_type::DEVMAP | map_type::XSKMAP | map_type::PROG_ARRAY)
    }
    fn prog_writable(&self) -> bool {
        !(self.def.readonly || self.def.flags & BPF_F_RDONLY_PROG != 0)
    }
    /// Bytes of one value as userspace sees it (per-CPU maps: every CPU's copy).
    pub fn user_value_size(&self) -> usize {
        if self.percpu() {
            round8(self.def.value_size as usize) * NR_CPUS
        } else {
            self.def.value_size as usize
        }
    }

    fn array_index(&self, key: &[u8]) -> Option<usize> {
        let i = u32::from_le_bytes(key.get(..4)?.try_into().ok()?) as usize;
        (i < self.def.max_entries as usize).then_some(i)
    }

    // ---- program side (helpers) ----

    /// `bpf_map_lookup_elem`: address of the value (CPU 0's copy for per-CPU maps) or 0.
    pub fn prog_lookup(&self, key: &[u8]) -> u64 {
        match self.store() {
            Store::Array { data, stride, present } => match self.array_index(key) {
                Some(i) if present[i] => data.addr() + (i * *stride) as u64,
                _ => 0,
            },
            Store::Hash { entries, tick, .. } => match entries.get_mut(key) {
                Some(e) => {
                    *tick += 1;
                    e.tick = *tick;
                    e.value.addr()
                }
                None => 0,
            },
            _ => 0,
        }
    }

    /// `bpf_map_update_elem` from a program: `value` is `value_size` bytes. Returns 0 or a
    /// negative errno, as the helper does.
    pub(crate) fn prog_update(&self, key: &[u8], value: &[u8], flags: u64, reg: &mut Registry) -> i64 {
        if !self.prog_writable() {
            return -errno::EPERM;
        }
        if self.userspace_only() {
            return -errno::EINVAL;
        }
        match self.update_inner(key, value, flags, reg) {
            Ok(()) => 0,
            Err(e) => -e,
        }
    }

    /// `bpf_map_delete_elem` from a program.
    pub(crate) fn prog_delete(&self, key: &[u8], reg: &mut Registry) -> i64 {
        if !self.prog_writable() {
            return -errno::EPERM;
        }
        if self.userspace_only() {
            return -errno::EINVAL;
        }
        match self.delete_inner(key, reg) {
            Ok(()) => 0,
            Err(e) => -e,
        }
    }

    /// Writes `value` for `key`; for per-CPU maps `value` may be one CPU's value (program
    /// side) or every CPU's (userspace side, `value_size` rounded to 8 per CPU).
    fn update_inner(&self, key: &[u8], value: &[u8], flags: u64, reg: &mut Registry) -> Result<(), i64> {
        if flags > BPF_EXIST {
            return Err(errno::EINVAL);
        }
        let index = self.index;
        let lru = self.lru();
        let max = self.def.max_entries as usize;
        match self.store() {
            Store::Array { data, stride, present } => {
                let i = self.array_index(key).ok_or(errno::E2BIG)?;
                if flags == BPF_NOEXIST {
                    return Err(errno::EEXIST);
                }
                let n = value.len().min(*stride);
                data.write(i * *stride, &value[..n]);
                if matches!(self.def.map_type, map_type::DEVMAP | map_type::XSKMAP) {
                    present[i] = true;
                }
                Ok(())
            }
            Store::Hash { entries, stride, tick } => {
                *tick += 1;
                let now = *tick;
                if let Some(e) = entries.get_mut(key) {
                    if flags == BPF_NOEXIST {
                        return Err(errno::EEXIST);
                    }
                    e.value.write(0, &value[..value.len().min(*stride)]);
                    e.tick = now;
                    return Ok(());
                }
                if flags == BPF_EXIST {
                    return Err(errno::ENOENT);
                }
                if entries.len() >= max {
                    if !lru {
                        return Err(errno::E2BIG);
                    }
                    // Evict the least recently used entry.
                    let victim = entries.iter().min_by_key(|(_, e)| e.tick).map(|(k, _)| k.clone());
                    if let Some(k) = victim {
                        let e = entries.remove(&k).unwrap();
                        // SAFETY: single-threaded, no other borrow of the graveyard.
                        unsafe { &mut *self.graveyard.get() }.push(e.value);
                    }
                }
                let buf = RawBuf::new(*stride * NR_CPUS);
                buf.write(0, &value[..value.len().min(buf.len())]);
                reg.add(Region {
                    start: buf.addr(),
                    end: buf.addr() + buf.len() as u64,
                    writable: true,
                    kind: RegionKind::MapValue { map: index },
                });
                entries.insert(key.to_vec(), HashEntry { value: buf, tick: now });
                Ok(())
            }
            Store::ProgArray { .. } => Err(errno::EINVAL),
            Store::RingBuf { .. } | Store::PerfEventArray => Err(errno::EINVAL),
        }
    }

    fn delete_inner(&self, key: &[u8], _reg: &mut Registry) -> Result<(), i64> {
        match self.store() {
            Store::Array { present, .. } => {
                if matches!(self.def.map_type, map_type::DEVMAP | map_type::XSKMAP) {
                    let i = self.array_index(key).ok_or(errno::E2BIG)?;
                    present[i] = false;
                    Ok(())
                } else {
                    Err(errno::EINVAL)
                }
            }
            Store::Hash { entries, .. } => match entries.remove(key) {
                Some(e) => {
                    // SAFETY: single-threaded.
                    unsafe { &mut *self.graveyard.get() }.push(e.value);
                    Ok(())
                }
                None => Err(errno::ENOENT),
            },
            Store::ProgArray { slots, raw } => {
                let i = self.array_index(key).ok_or(errno::E2BIG)?;
                slots[i] = None;
                raw.write(i * 8, &0u64.to_le_bytes());
                Ok(())
            }
            _ => Err(errno::EINVAL),
        }
    }

    /// Frees hash values deleted or evicted during a run, and drops their regions.
    pub(crate) fn end_run(&self, reg: &mut Registry) {
        // SAFETY: single-threaded; no program is running.
        let g = unsafe { &mut *self.graveyard.get() };
        for b in g.drain(..) {
            reg.remove(b.addr());
        }
    }

    // ---- program arrays ----

    /// Target program id of a tail call through this map, if the slot is set.
    pub fn prog_array_get(&self, index: u64) -> Option<usize> {
        match self.store() {
            Store::ProgArray { slots, .. } => slots.get(usize::try_from(index).ok()?).copied().flatten(),
            _ => None,
        }
    }

    /// Address of the raw slot table (`max_entries` u64 engine entry addresses, 0 = empty),
    /// for engines that perform tail calls natively. 0 for other map types.
    pub fn prog_array_table(&self) -> u64 {
        match self.store() {
            Store::ProgArray { raw, .. } => raw.addr(),
            _ => 0,
        }
    }

    pub(crate) fn prog_array_set(&self, index: u32, prog: Option<(usize, u64)>) -> Result<(), MapError> {
        let name = self.def.name.clone();
        match self.store() {
            Store::ProgArray { slots, raw } => {
                let i = index as usize;
                if i >= slots.len() {
                    return Err(MapError { map: name, msg: format!("index {i} out of range") });
                }
                slots[i] = prog.map(|p| p.0);
                raw.write(i * 8, &prog.map_or(0, |p| p.1).to_le_bytes());
                Ok(())
            }
            _ => Err(MapError { map: name, msg: "not a program array".into() }),
        }
    }

    // ---- ring buffer and perf event output ----

    /// `bpf_ringbuf_reserve`: address of `size` writable bytes, or 0.
    pub(crate) fn ringbuf_reserve(&self, size: u64, flags: u64, reg: &mut Registry) -> u64 {
        let cap = self.def.max_entries as usize;
        let index = self.index;
        match self.store() {
            Store::RingBuf { used, pending, .. } => {
                // Each record takes an 8-byte header and is padded to 8, as in the kernel.
                if flags != 0 || size == 0 || size > (cap as u64) {
                    return 0;
                }
                let need = round8(size as usize) + 8;
                if *used + need > cap {
                    return 0;
                }
                *used += need;
                let buf = RawBuf::new(size as usize);
                let a = buf.addr();
                reg.add(Region {
                    start: a,
                    end: a + size,
                    writable: true,
                    kind: RegionKind::RingbufRecord { map: index },
                });
                pending.insert(a, buf);
                a
            }
            _ => 0,
        }
    }

    /// `bpf_ringbuf_submit` (`discard = false`) or `bpf_ringbuf_discard`. Returns false if
    /// `addr` is not a pending reservation of this map.
    pub(crate) fn ringbuf_commit(&self, addr: u64, discard: bool, reg: &mut Registry) -> bool {
        match self.store() {
            Store::RingBuf { records, used, pending } => match pending.remove(&addr) {
                Some(buf) => {
                    reg.remove(addr);
                    if discard {
                        *used -= round8(buf.len()) + 8;
                    } else {
                        records.push(buf.read(0, buf.len()));
                    }
                    true
                }
                None => false,
            },
            _ => false,
        }
    }

    /// `bpf_ringbuf_output`: 0 or a negative errno.
    pub(crate) fn ringbuf_output(&self, data: &[u8], flags: u64, reg: &mut Registry) -> i64 {
        if flags & !3 != 0 {
            return -errno::EINVAL;
        }
        let a = self.ringbuf_reserve(data.len() as u64, 0, reg);
        if a == 0 {
            return -errno::EAGAIN;
        }
        // SAFETY: `a` was just reserved with data.len() bytes.
        unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), a as *mut u8, data.len()) };
        self.ringbuf_commit(a, false, reg);
        0
    }

    /// Records submitted to a ring buffer, oldest first; clears them (like a consumer).
    pub fn ringbuf_drain(&self) -> Vec<Vec<u8>> {
        match self.store() {
            Store::RingBuf { records, used, pending } => {
                let out = std::mem::take(records);
                *used = pending.values().map(|b| round8(b.len()) + 8).sum();
                out
            }
            _ => Vec::new(),
        }
    }

    /// Records submitted and not drained yet.
    pub fn ringbuf_records(&self) -> Vec<Vec<u8>> {
        match self.store() {
            Store::RingBuf { records, .. } => records.clone(),
            _ => Vec::new(),
        }
    }

    // ---- userspace side ----

    /// Value of `key` as userspace reads it (per-CPU: all CPUs, 8-byte stride), or None.
    pub fn lookup(&self, key: &[u8]) -> Option<Vec<u8>> {
        if key.len() != self.def.key_size as usize {
            return None;
        }
        let uvs = self.user_value_size();
        match self.store() {
            Store::Array { data, stride, present } => {
                let i = self.array_index(key)?;
                if !present[i] && matches!(self.def.map_type, map_type::DEVMAP | map_type::XSKMAP) {
                    return None;
                }
                Some(data.read(i * *stride, uvs))
            }
            Store::Hash { entries, .. } => entries.get(key).map(|e| e.value.read(0, uvs)),
            Store::ProgArray { slots, .. } => {
                let i = self.array_index(key)?;
                slots[i].map(|p| (p as u32).to_le_bytes().to_vec())
            }
            _ => None,
        }
    }

    /// Userspace update (`BPF_MAP_UPDATE_ELEM`). Per-CPU maps take every CPU's value.
    /// Public as [`crate::Vm::map_update`] (which owns the region registry).
    pub(crate) fn update(&self, key: &[u8], value: &[u8], flags: u64, reg: &mut Registry) -> Result<(), MapError> {
        let err = |msg: String| MapError { map: self.def.name.clone(), msg };
        if key.len() != self.def.key_size as usize {
            return Err(err(format!("key is {} bytes, map has {}", key.len(), self.def.key_size)));
        }
        if value.len() != self.user_value_size() {
            return Err(err(format!(
                "value is {} bytes, map takes {}",
                value.len(),
                self.user_value_size()
            )));
        }
        if self.def.readonly {
            return Err(err("read-only (frozen) map".into()));
        }
        self.update_inner(key, value, flags, reg)
            .map_err(|e| err(format!("update failed with errno {e}")))
    }

    /// Userspace delete.
    pub(crate) fn delete(&self, key: &[u8], reg: &mut Registry) -> Result<(), MapError> {
        self.delete_inner(key, reg)
            .map_err(|e| MapError { map: self.def.name.clone(), msg: format!("delete failed with errno {e}") })
    }

    /// Every key, sorted (arrays: every index; hash maps: the present keys).
    pub fn keys(&self) -> Vec<Vec<u8>> {
        let mut k: Vec<Vec<u8>> = match self.store() {
            Store::Array { present, .. } => {
                let all = matches!(self.def.map_type, map_type::ARRAY | map_type::PERCPU_ARRAY);
                (0..self.def.max_entries)
                    .filter(|i| all || present[*i as usize])
                    .map(|i| i.to_le_bytes().to_vec())
                    .collect()
            }
            Store::Hash { entries, .. } => entries.keys().cloned().collect(),
            Store::ProgArray { slots, .. } => (0..slots.len())
                .filter(|i| slots[*i].is_some())
                .map(|i| (i as u32).to_le_bytes().to_vec())
                .collect(),
            _ => Vec::new(),
        };
        k.sort();
        k
    }

    /// (key, value) pairs sorted by key, for comparison with the kernel's map contents.
    pub fn dump(&self) -> Vec<(Vec<u8>, Vec<u8>)> {
        self.keys()
            .into_iter()
            .filter_map(|k| self.lookup(&k).map(|v| (k, v)))
            .collect()
    }

    /// Whether this map type holds key/value data that a dump compares (not ring buffers,
    /// perf event arrays or program arrays).
    pub fn is_data_map(&self) -> bool {
        !matches!(
            self.def.map_type,
            map_type::RINGBUF | map_type::PERF_EVENT_ARRAY | map_type::PROG_ARRAY
        )
    }
}

impl std::fmt::Debug for Map {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Map({} type {} at {:#x})", self.def.name, self.def.map_type, self.addr())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kops_object::MapOrigin;

    fn def(t: u32, ks: u32, vs: u32, n: u32) -> MapDef {
        MapDef::new("m", MapOrigin::Btf, t, ks, vs, n)
    }

    #[test]
    fn array_semantics() {
        let mut reg = Registry::default();
        let m = Map::new(&def(map_type::ARRAY, 4, 4, 3), 0, &mut reg).unwrap();
        let k1 = 1u32.to_le_bytes();
        let a = m.prog_lookup(&k1);
        assert_ne!(a, 0);
        // 8-byte element stride as in the kernel's array map.
        assert_eq!(m.prog_lookup(&2u32.to_le_bytes()) - m.prog_lookup(&0u32.to_le_bytes()), 16);
        assert_eq!(m.prog_lookup(&3u32.to_le_bytes()), 0);
        assert_eq!(m.prog_update(&k1, &[1, 2, 3, 4], BPF_ANY, &mut reg), 0);
        assert_eq!(m.lookup(&k1), Some(vec![1, 2, 3, 4]));
        assert_eq!(m.prog_update(&k1, &[0; 4], BPF_NOEXIST, &mut reg), -17);
        assert_eq!(m.prog_update(&3u32.to_le_bytes(), &[0; 4], BPF_ANY, &mut reg), -7);
        assert_eq!(m.prog_delete(&k1, &mut reg), -22);
        assert_eq!(m.keys().len(), 3);
        assert!(reg.find(a, 4).unwrap().writable);
    }

    #[test]
    fn hash_semantics() {
        let mut reg = Registry::default();
        let m = Map::new(&def(map_type::HASH, 2, 3, 2), 0, &mut reg).unwrap();
        assert_eq!(m.prog_lookup(&[1, 1]), 0);
        assert_eq!(m.prog_update(&[1, 1], &[9, 9, 9], BPF_EXIST, &mut reg), -2);
        assert_eq!(m.prog_update(&[1, 1], &[9, 9, 9], BPF_NOEXIST, &mut reg), 0);
        assert_eq!(m.prog_update(&[1, 1], &[8, 8, 8], BPF_NOEXIST, &mut reg), -17);
        assert_eq!(m.prog_update(&[2, 2], &[7, 7, 7], BPF_ANY, &mut reg), 0);
        assert_eq!(m.prog_update(&[3, 3], &[7, 7, 7], BPF_ANY, &mut reg), -7); // full
        let a = m.prog_lookup(&[1, 1]);
        assert!(reg.find(a, 3).is_some());
        assert_eq!(m.prog_delete(&[1, 1], &mut reg), 0);
        assert_eq!(m.prog_delete(&[1, 1], &mut reg), -2);
        // Deleted value stays accessible until the run ends.
        assert!(reg.find(a, 3).is_some());
        m.end_run(&mut reg);
        assert!(reg.find(a, 3).is_none());
        assert_eq!(m.dump(), vec![(vec![2, 2], vec![7, 7, 7])]);
    }

    #[test]
    fn lru_evicts_least_recent() {
        let mut reg = Registry::default();
        let m = Map::new(&def(map_type::LRU_HASH, 1, 1, 2), 0, &mut reg).unwrap();
        m.prog_update(&[1], &[1], 0, &mut reg);
        m.prog_update(&[2], &[2], 0, &mut reg);
        m.prog_lookup(&[1]); // 2 is now least recently used
        assert_eq!(m.prog_update(&[3], &[3], 0, &mut reg), 0);
        assert_eq!(m.keys(), vec![vec![1], vec![3]]);
    }

    #[test]
    fn percpu_layout_rounds_to_8() {
        let mut reg = Registry::default();
        let m = Map::new(&def(map_type::PERCPU_ARRAY, 4, 4, 1), 0, &mut reg).unwrap();
        assert_eq!(m.user_value_size(), 8);
        assert_eq!(m.lookup(&0u32.to_le_bytes()).unwrap().len(), 8);
        let h = Map::new(&def(map_type::PERCPU_HASH, 4, 12, 4), 1, &mut reg).unwrap();
        assert_eq!(h.user_value_size(), 16);
        assert!(h.update(&[0; 4], &[0; 12], 0, &mut reg).is_err());
        h.update(&[0; 4], &[5; 16], 0, &mut reg).unwrap();
        assert_eq!(h.lookup(&[0; 4]).unwrap(), vec![5; 16]);
    }

    #[test]
    fn rodata_is_readonly() {
        let mut reg = Registry::default();
        let mut d = def(map_type::ARRAY, 4, 4, 1);
        d.readonly = true;
        d.initial = Some(vec![1, 2, 3, 4]);
        let m = Map::new(&d, 0, &mut reg).unwrap();
        let a = m.prog_lookup(&[0; 4]);
        assert!(!reg.find(a, 4).unwrap().writable);
        assert_eq!(m.lookup(&[0; 4]).unwrap(), vec![1, 2, 3, 4]);
        assert_eq!(m.prog_update(&[0; 4], &[0; 4], 0, &mut reg), -1);
        assert!(m.update(&[0; 4], &[0; 4], 0, &mut reg).is_err());
    }

    #[test]
    fn ringbuf_records() {
        let mut reg = Registry::default();
        let m = Map::new(&def(map_type::RINGBUF, 0, 0, 4096), 0, &mut reg).unwrap();
        let a = m.ringbuf_reserve(5, 0, &mut reg);
        assert_ne!(a, 0);
        assert!(reg.find(a, 5).unwrap().writable);
        unsafe { *(a as *mut u8) = 42 };
        assert!(m.ringbuf_commit(a, false, &mut reg));
        assert!(reg.find(a, 1).is_none());
        assert_eq!(m.ringbuf_output(&[1, 2], 0, &mut reg), 0);
        assert_eq!(m.ringbuf_reserve(4096, 0, &mut reg), 0); // no room with the 8-byte headers
        assert_eq!(m.ringbuf_drain(), vec![vec![42, 0, 0, 0, 0], vec![1, 2]]);
        assert!(Map::new(&def(map_type::RINGBUF, 0, 0, 1000), 0, &mut reg).is_err());
    }
}
