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
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};

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
    pub const EOPNOTSUPP: i64 = 95;
    pub const EOVERFLOW: i64 = 75;
    pub const ENOTSUPP: i64 = 524;
}

/// `flags` of map_update_elem.
pub const BPF_ANY: u64 = 0;
pub const BPF_NOEXIST: u64 = 1;
pub const BPF_EXIST: u64 = 2;
/// `map_flags`: the program may not write the map.
pub const BPF_F_RDONLY_PROG: u32 = 1 << 7;
/// `map_flags`: no preallocation (required by LPM tries).
pub const BPF_F_NO_PREALLOC: u32 = 1;
/// `map_flags` of an array used as inner map: its max_entries may differ from the template's.
pub const BPF_F_INNER_MAP: u32 = 1 << 12;

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

/// LPM trie entries: (prefix length, masked data) -> (key as written, value).
type LpmEntries = BTreeMap<(u32, Vec<u8>), (Vec<u8>, RawBuf)>;

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
    /// LPM trie: (prefix length, data masked to it) -> (the key as last written, value).
    /// The kernel keeps the written key bytes (also past the prefix), so dumps show them.
    Lpm { entries: LpmEntries },
    /// Array or hash of maps: key -> (index of the inner map in the Vm, its address).
    MapInMap { slots: BTreeMap<Vec<u8>, (usize, u64)> },
    /// Queue (FIFO) or stack (LIFO): front = oldest.
    Queue { items: VecDeque<Vec<u8>>, lifo: bool },
    /// Bloom filter, modelled as the exact set of pushed values: the kernel's may answer
    /// "maybe present" for a value never pushed (a false positive), this model never does.
    Bloom { set: HashSet<Vec<u8>> },
    /// Created for setup, but using it needs kernel objects we do not model (sockets,
    /// cgroups, ...): every helper call on it is an error naming the map and its type.
    Unsupported,
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
        // Local storage maps have max_entries 0 (one value per socket/task/...).
        let storage = matches!(
            def.map_type,
            map_type::SK_STORAGE
                | map_type::INODE_STORAGE
                | map_type::TASK_STORAGE
                | map_type::CGRP_STORAGE
                | map_type::CGROUP_STORAGE
                | map_type::PERCPU_CGROUP_STORAGE
        );
        if n == 0 && def.map_type != map_type::PERF_EVENT_ARRAY && !storage {
            return Err(err(format!("max_entries is 0 ({})", map_type::describe(def.map_type))));
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
            map_type::LPM_TRIE => {
                // trie_alloc's checks.
                if def.flags & BPF_F_NO_PREALLOC == 0 {
                    return Err(err("lpm_trie (11) needs map_flags BPF_F_NO_PREALLOC, as in the kernel".into()));
                }
                if !(5..=4 + 256).contains(&def.key_size) {
                    return Err(err(format!("lpm_trie key size {} (must be 4 + 1..256 data bytes)", def.key_size)));
                }
                if vs == 0 {
                    return Err(err("value size is 0".into()));
                }
                Store::Lpm { entries: BTreeMap::new() }
            }
            map_type::ARRAY_OF_MAPS | map_type::HASH_OF_MAPS => {
                if def.inner.is_none() {
                    return Err(err(format!(
                        "{} has no inner map template (BTF `__array(values, ...)` or legacy inner_map_idx; \
                         without either, libbpf's user sets one with bpf_map__set_inner_map_fd)",
                        map_type::describe(def.map_type)
                    )));
                }
                let array = def.map_type == map_type::ARRAY_OF_MAPS;
                if def.value_size != 4 || def.key_size == 0 || (array && def.key_size != 4) {
                    return Err(err(format!("{}: key size {}, value size {} (value must be 4)",
                        map_type::describe(def.map_type), def.key_size, def.value_size)));
                }
                Store::MapInMap { slots: BTreeMap::new() }
            }
            map_type::DEVMAP_HASH => {
                if def.key_size != 4 || !(vs == 4 || vs == 8) {
                    let ks = def.key_size;
                    return Err(err(format!("devmap_hash key size {ks} value size {vs} (must be 4 and 4 or 8)")));
                }
                Store::Hash { entries: HashMap::new(), stride: round8(vs), tick: 0 }
            }
            map_type::CPUMAP => {
                if def.key_size != 4 || !(vs == 4 || vs == 8) {
                    return Err(err(format!("cpumap key size {} value size {vs} (must be 4 and 4 or 8)", def.key_size)));
                }
                let stride = round8(vs);
                Store::Array { data: RawBuf::new(stride * n), stride, present: vec![false; n] }
            }
            map_type::QUEUE | map_type::STACK | map_type::BLOOM_FILTER => {
                if def.key_size != 0 || vs == 0 {
                    return Err(err(format!(
                        "{} needs key size 0 and a value (key {}, value {vs})",
                        map_type::describe(def.map_type),
                        def.key_size
                    )));
                }
                if def.map_type == map_type::BLOOM_FILTER {
                    if def.map_extra & !0xf != 0 {
                        let x = def.map_extra;
                        return Err(err(format!("bloom_filter map_extra {x:#x} (only the low 4 bits: hash count)")));
                    }
                    Store::Bloom { set: HashSet::new() }
                } else {
                    Store::Queue { items: VecDeque::new(), lifo: def.map_type == map_type::STACK }
                }
            }
            map_type::CGROUP_ARRAY
            | map_type::SOCKMAP
            | map_type::SOCKHASH
            | map_type::REUSEPORT_SOCKARRAY
            | map_type::SK_STORAGE
            | map_type::INODE_STORAGE
            | map_type::TASK_STORAGE
            | map_type::CGRP_STORAGE
            | map_type::CGROUP_STORAGE
            | map_type::PERCPU_CGROUP_STORAGE
            | map_type::STACK_TRACE
            | map_type::USER_RINGBUF => Store::Unsupported,
            t => return Err(err(format!("unsupported map type: {}", map_type::describe(t)))),
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
        matches!(
            self.def.map_type,
            map_type::DEVMAP
                | map_type::XSKMAP
                | map_type::PROG_ARRAY
                | map_type::DEVMAP_HASH
                | map_type::CPUMAP
                | map_type::ARRAY_OF_MAPS
                | map_type::HASH_OF_MAPS
        )
    }
    /// Array-like maps whose slots start empty (a slot without a target looks up as NULL).
    fn sparse_array(&self) -> bool {
        matches!(self.def.map_type, map_type::DEVMAP | map_type::XSKMAP | map_type::CPUMAP)
    }

    /// The error of a helper that needs what this map holds at run time, if we do not
    /// model it: "not supported at run time: <map> (<type>)".
    pub fn runtime_unsupported(&self) -> Option<String> {
        matches!(self.store(), Store::Unsupported).then(|| {
            format!("not supported at run time: {} ({})", self.def.name, map_type::describe(self.def.map_type))
        })
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
            Store::Lpm { entries } => self.lpm_match(entries, key).map_or(0, |(_, v)| v.addr()),
            Store::MapInMap { slots } => slots.get(key).map_or(0, |s| s.1),
            _ => 0,
        }
    }

    /// Longest-prefix match: the entry with the longest prefix (at most the key's prefix
    /// length) whose bits equal the key's.
    fn lpm_match<'a>(&self, entries: &'a LpmEntries, key: &[u8]) -> Option<&'a (Vec<u8>, RawBuf)> {
        let (plen, data) = lpm_parts(key)?;
        let max = data.len() as u32 * 8;
        // trie_lookup_elem: a prefix length beyond the data matches nothing.
        if plen > max {
            return None;
        }
        (0..=plen).rev().find_map(|l| entries.get(&(l, mask_prefix(data, l))))
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
                if self.def.map_type == map_type::CPUMAP {
                    // cpu_map_update_elem: qsize 0 empties the slot, above 16384 is refused.
                    let qsize = u32::from_le_bytes(value[..4].try_into().map_err(|_| errno::EINVAL)?);
                    if qsize > 16384 {
                        return Err(errno::EOVERFLOW);
                    }
                    if qsize == 0 {
                        present[i] = false;
                        data.write(i * *stride, &vec![0; *stride]);
                        return Ok(());
                    }
                }
                let n = value.len().min(*stride);
                data.write(i * *stride, &value[..n]);
                if self.sparse_array() {
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
            Store::Lpm { entries } => {
                let (plen, data) = lpm_parts(key).ok_or(errno::EINVAL)?;
                if plen > data.len() as u32 * 8 {
                    return Err(errno::EINVAL);
                }
                let id = (plen, mask_prefix(data, plen));
                if let Some(e) = entries.get_mut(&id) {
                    if flags == BPF_NOEXIST {
                        return Err(errno::EEXIST);
                    }
                    // The kernel replaces the node: the key bytes are the new ones.
                    e.0 = key.to_vec();
                    e.1.write(0, &value[..value.len().min(self.def.value_size as usize)]);
                    return Ok(());
                }
                if flags == BPF_EXIST {
                    return Err(errno::ENOENT);
                }
                if entries.len() >= max {
                    return Err(errno::ENOSPC);
                }
                let buf = RawBuf::new(round8(self.def.value_size as usize));
                buf.write(0, &value[..value.len().min(buf.len())]);
                reg.add(Region {
                    start: buf.addr(),
                    end: buf.addr() + self.def.value_size as u64,
                    writable: true,
                    kind: RegionKind::MapValue { map: index },
                });
                entries.insert(id, (key.to_vec(), buf));
                Ok(())
            }
            Store::Queue { items, .. } => {
                // queue_stack_map_push_elem: BPF_EXIST makes room by dropping the oldest.
                if flags & BPF_NOEXIST != 0 || flags > BPF_EXIST {
                    return Err(errno::EINVAL);
                }
                if items.len() >= max {
                    if flags != BPF_EXIST {
                        return Err(errno::E2BIG);
                    }
                    items.pop_front();
                }
                items.push_back(value[..self.def.value_size as usize].to_vec());
                Ok(())
            }
            Store::Bloom { set } => {
                if flags != BPF_ANY {
                    return Err(errno::EINVAL);
                }
                set.insert(value[..self.def.value_size as usize].to_vec());
                Ok(())
            }
            Store::MapInMap { .. } => Err(errno::EINVAL),
            Store::ProgArray { .. } => Err(errno::EINVAL),
            Store::RingBuf { .. } | Store::PerfEventArray | Store::Unsupported => Err(errno::EINVAL),
        }
    }

    fn delete_inner(&self, key: &[u8], _reg: &mut Registry) -> Result<(), i64> {
        match self.store() {
            Store::Array { present, .. } => {
                if self.sparse_array() {
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
            Store::Lpm { entries } => {
                let (plen, data) = lpm_parts(key).ok_or(errno::EINVAL)?;
                if plen > data.len() as u32 * 8 {
                    return Err(errno::EINVAL);
                }
                match entries.remove(&(plen, mask_prefix(data, plen))) {
                    Some((_, v)) => {
                        // SAFETY: single-threaded.
                        unsafe { &mut *self.graveyard.get() }.push(v);
                        Ok(())
                    }
                    None => Err(errno::ENOENT),
                }
            }
            Store::MapInMap { slots } => {
                if self.def.map_type == map_type::ARRAY_OF_MAPS {
                    self.array_index(key).ok_or(errno::E2BIG)?;
                }
                slots.remove(key).map(|_| ()).ok_or(errno::ENOENT)
            }
            _ => Err(errno::EINVAL),
        }
    }

    /// `bpf_map_pop_elem` (`pop`) / `bpf_map_peek_elem` on a queue, stack or bloom filter,
    /// into `out` (`value_size` bytes). Returns 0 or a negative errno as the helper does;
    /// an empty queue or stack zeroes `out`, as the kernel does.
    pub(crate) fn prog_pop_peek(&self, out: &mut [u8], pop: bool) -> i64 {
        let vs = self.def.value_size as usize;
        match self.store() {
            Store::Queue { items, lifo } => {
                let got = match (pop, *lifo) {
                    (true, false) => items.pop_front(),
                    (true, true) => items.pop_back(),
                    (false, false) => items.front().cloned(),
                    (false, true) => items.back().cloned(),
                };
                match got {
                    Some(v) => {
                        out[..vs].copy_from_slice(&v);
                        0
                    }
                    None => {
                        out[..vs].fill(0);
                        -errno::ENOENT
                    }
                }
            }
            // Bloom peek: `out` is the value asked about.
            Store::Bloom { set } if !pop => {
                if set.contains(&out[..vs]) {
                    0
                } else {
                    -errno::ENOENT
                }
            }
            Store::Bloom { .. } => -errno::EOPNOTSUPP,
            _ => -errno::EINVAL,
        }
    }

    /// `bpf_map_push_elem`.
    pub(crate) fn prog_push(&self, value: &[u8], flags: u64, reg: &mut Registry) -> i64 {
        match self.store() {
            Store::Queue { .. } | Store::Bloom { .. } => match self.update_inner(&[], value, flags, reg) {
                Ok(()) => 0,
                Err(e) => -e,
            },
            _ => -errno::EINVAL,
        }
    }

    // ---- map-in-map ----

    /// Sets slot `key` of an array/hash of maps to `inner` (index `inner_index` in the Vm),
    /// after the kernel's compatibility check against the inner template.
    pub(crate) fn map_in_map_set(&self, key: &[u8], inner: &Map, inner_index: usize) -> Result<(), MapError> {
        let err = |msg: String| MapError { map: self.def.name.clone(), msg };
        let Some(t) = self.def.inner.as_deref() else {
            return Err(err(format!("not a map-in-map: {}", map_type::describe(self.def.map_type))));
        };
        let d = &inner.def;
        let same_entries = d.max_entries == t.max_entries
            || (t.flags & BPF_F_INNER_MAP != 0 && matches!(t.map_type, map_type::ARRAY | map_type::PERCPU_ARRAY))
            || !matches!(t.map_type, map_type::ARRAY | map_type::PERCPU_ARRAY);
        let same_shape = d.map_type == t.map_type && d.key_size == t.key_size && d.value_size == t.value_size;
        if !same_shape || d.flags != t.flags || !same_entries {
            return Err(err(format!(
                "map `{}` ({}, key {}, value {}, max_entries {}, flags {:#x}) does not match the inner template \
                 ({}, key {}, value {}, max_entries {}, flags {:#x})",
                d.name, map_type::describe(d.map_type), d.key_size, d.value_size, d.max_entries, d.flags,
                map_type::describe(t.map_type), t.key_size, t.value_size, t.max_entries, t.flags
            )));
        }
        if key.len() != self.def.key_size as usize {
            return Err(err(format!("key is {} bytes, map has {}", key.len(), self.def.key_size)));
        }
        let max = self.def.max_entries as usize;
        let array = self.def.map_type == map_type::ARRAY_OF_MAPS;
        if array && self.array_index(key).is_none() {
            let i = u32::from_le_bytes(key.try_into().unwrap_or_default());
            return Err(err(format!("index {i} out of range (max_entries {max})")));
        }
        match self.store() {
            Store::MapInMap { slots } => {
                if !array && !slots.contains_key(key) && slots.len() >= max {
                    return Err(err(format!("full ({max} entries)")));
                }
                slots.insert(key.to_vec(), (inner_index, inner.addr()));
                Ok(())
            }
            _ => Err(err("not a map-in-map".into())),
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
                if !present[i] && self.sparse_array() {
                    return None;
                }
                Some(data.read(i * *stride, uvs))
            }
            Store::Hash { entries, .. } => entries.get(key).map(|e| e.value.read(0, uvs)),
            Store::ProgArray { slots, .. } => {
                let i = self.array_index(key)?;
                slots[i].map(|p| (p as u32).to_le_bytes().to_vec())
            }
            Store::Lpm { entries } => self.lpm_match(entries, key).map(|(_, v)| v.read(0, uvs)),
            // The inner map's index in the Vm (the kernel gives its map id).
            Store::MapInMap { slots } => slots.get(key).map(|s| (s.0 as u32).to_le_bytes().to_vec()),
            _ => None,
        }
    }

    /// Queue/stack contents in pop order (what [`Map::dump`] shows for them, keyed by
    /// position as u32 from 0).
    pub fn queue_items(&self) -> Vec<Vec<u8>> {
        match self.store() {
            Store::Queue { items, lifo: false } => items.iter().cloned().collect(),
            Store::Queue { items, lifo: true } => items.iter().rev().cloned().collect(),
            _ => Vec::new(),
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
        if map_type::is_map_in_map(self.def.map_type) {
            return Err(err("a map-in-map slot is set with Vm::set_map_in_map (it holds a map)".into()));
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
            Store::Lpm { entries } => entries.values().map(|e| e.0.clone()).collect(),
            Store::MapInMap { slots } => slots.keys().cloned().collect(),
            _ => Vec::new(),
        };
        k.sort();
        k
    }

    /// (key, value) pairs sorted by key, for comparison with the kernel's map contents.
    /// Queues and stacks: (position in pop order as u32, value).
    pub fn dump(&self) -> Vec<(Vec<u8>, Vec<u8>)> {
        if matches!(self.store(), Store::Queue { .. }) {
            let items = self.queue_items().into_iter().enumerate();
            return items.map(|(i, v)| ((i as u32).to_le_bytes().to_vec(), v)).collect();
        }
        self.keys()
            .into_iter()
            .filter_map(|k| self.lookup(&k).map(|v| (k, v)))
            .collect()
    }

    /// Whether this map type holds key/value data that a dump compares: see [`comparable`].
    pub fn is_data_map(&self) -> bool {
        comparable(self.def.map_type)
    }
}

/// Map types whose contents `kops diff` compares with the kernel's (which reads the same
/// types back: `kops_kernel::Map::undumpable`). Not compared: ring buffers and perf event
/// arrays (records, not entries), program arrays and map-in-map (they hold programs and
/// maps, whose ids differ; the inner maps are compared themselves), redirect targets
/// (devices, sockets, CPUs: the programs cannot change them), bloom filters (membership
/// only) and maps we do not model at run time.
pub fn comparable(t: u32) -> bool {
    matches!(
        t,
        map_type::ARRAY
            | map_type::PERCPU_ARRAY
            | map_type::HASH
            | map_type::PERCPU_HASH
            | map_type::LRU_HASH
            | map_type::LRU_PERCPU_HASH
            | map_type::LPM_TRIE
            | map_type::QUEUE
            | map_type::STACK
    )
}

/// Prefix length and data of an LPM trie key.
fn lpm_parts(key: &[u8]) -> Option<(u32, &[u8])> {
    Some((u32::from_le_bytes(key.get(..4)?.try_into().ok()?), &key[4..]))
}

/// `data` with every bit after the first `plen` cleared (bits counted from the most
/// significant bit of byte 0, as the kernel's trie does).
fn mask_prefix(data: &[u8], plen: u32) -> Vec<u8> {
    data.iter()
        .enumerate()
        .map(|(i, &b)| {
            let keep = (plen as i64 - 8 * i as i64).clamp(0, 8) as u32;
            if keep == 0 {
                0
            } else {
                b & (0xffu8 << (8 - keep))
            }
        })
        .collect()
}

impl std::fmt::Debug for Map {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Map({} {} at {:#x})", self.def.name, map_type::describe(self.def.map_type), self.addr())
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
    fn lpm_key(plen: u32, d: [u8; 4]) -> Vec<u8> {
        let mut k = plen.to_le_bytes().to_vec();
        k.extend_from_slice(&d);
        k
    }

    #[test]
    fn lpm_longest_prefix_and_exact_update_delete() {
        let mut reg = Registry::default();
        assert!(Map::new(&def(map_type::LPM_TRIE, 8, 4, 4), 0, &mut reg).unwrap_err().msg.contains("BPF_F_NO_PREALLOC"));
        let mut d = def(map_type::LPM_TRIE, 8, 4, 3);
        d.flags = BPF_F_NO_PREALLOC;
        let m = Map::new(&d, 0, &mut reg).unwrap();
        // 10.0.0.0/8 -> 1, 10.1.0.0/16 -> 2 (written with host bits set: kept as written).
        assert_eq!(m.prog_update(&lpm_key(8, [10, 0, 0, 0]), &1u32.to_le_bytes(), BPF_ANY, &mut reg), 0);
        assert_eq!(m.prog_update(&lpm_key(16, [10, 1, 99, 99]), &2u32.to_le_bytes(), BPF_NOEXIST, &mut reg), 0);
        let val = |k: Vec<u8>| m.lookup(&k).map(|v| u32::from_le_bytes(v.try_into().unwrap()));
        assert_eq!(val(lpm_key(32, [10, 1, 2, 3])), Some(2));
        assert_eq!(val(lpm_key(32, [10, 2, 2, 3])), Some(1));
        // The key's own prefix length bounds the match.
        assert_eq!(val(lpm_key(12, [10, 1, 2, 3])), Some(1));
        assert_eq!(val(lpm_key(32, [11, 1, 2, 3])), None);
        // Same prefix, other host bits: the same entry (EEXIST with NOEXIST), replaced with BPF_ANY.
        assert_eq!(m.prog_update(&lpm_key(16, [10, 1, 0, 0]), &3u32.to_le_bytes(), BPF_NOEXIST, &mut reg), -17);
        assert_eq!(m.prog_update(&lpm_key(16, [10, 1, 0, 7]), &3u32.to_le_bytes(), BPF_EXIST, &mut reg), 0);
        assert_eq!(m.prog_update(&lpm_key(24, [10, 1, 0, 7]), &3u32.to_le_bytes(), BPF_EXIST, &mut reg), -2);
        assert_eq!(m.prog_update(&lpm_key(33, [10, 1, 0, 7]), &3u32.to_le_bytes(), BPF_ANY, &mut reg), -22);
        assert_eq!(m.prog_update(&lpm_key(0, [1, 2, 3, 4]), &4u32.to_le_bytes(), BPF_ANY, &mut reg), 0);
        assert_eq!(m.prog_update(&lpm_key(32, [1, 2, 3, 4]), &5u32.to_le_bytes(), BPF_ANY, &mut reg), -28); // full
        assert_eq!(val(lpm_key(32, [11, 1, 2, 3])), Some(4));
        assert_eq!(m.keys(), vec![lpm_key(0, [1, 2, 3, 4]), lpm_key(8, [10, 0, 0, 0]), lpm_key(16, [10, 1, 0, 7])]);
        // Delete is exact: a longer or shorter prefix is ENOENT.
        assert_eq!(m.prog_delete(&lpm_key(24, [10, 1, 0, 0]), &mut reg), -2);
        assert_eq!(m.prog_delete(&lpm_key(16, [10, 1, 5, 5]), &mut reg), 0);
        assert_eq!(val(lpm_key(32, [10, 1, 2, 3])), Some(1));
        assert_eq!(m.prog_delete(&lpm_key(40, [10, 1, 5, 5]), &mut reg), -22);
    }

    #[test]
    fn queue_stack_and_bloom() {
        let mut reg = Registry::default();
        assert!(Map::new(&def(map_type::QUEUE, 4, 4, 2), 0, &mut reg).is_err());
        let q = Map::new(&def(map_type::QUEUE, 0, 4, 2), 0, &mut reg).unwrap();
        let s = Map::new(&def(map_type::STACK, 0, 4, 2), 1, &mut reg).unwrap();
        for m in [&q, &s] {
            assert_eq!(m.prog_push(&1u32.to_le_bytes(), BPF_ANY, &mut reg), 0);
            assert_eq!(m.prog_push(&2u32.to_le_bytes(), BPF_ANY, &mut reg), 0);
            assert_eq!(m.prog_push(&3u32.to_le_bytes(), BPF_ANY, &mut reg), -7); // full
            assert_eq!(m.prog_push(&3u32.to_le_bytes(), BPF_NOEXIST, &mut reg), -22);
            // BPF_EXIST drops the oldest (1).
            assert_eq!(m.prog_push(&3u32.to_le_bytes(), BPF_EXIST, &mut reg), 0);
        }
        let mut out = [9u8; 4];
        assert_eq!(q.prog_pop_peek(&mut out, false), 0);
        assert_eq!(u32::from_le_bytes(out), 2);
        assert_eq!(s.prog_pop_peek(&mut out, true), 0);
        assert_eq!(u32::from_le_bytes(out), 3);
        assert_eq!(q.dump(), vec![(0u32.to_le_bytes().to_vec(), 2u32.to_le_bytes().to_vec()), (1u32.to_le_bytes().to_vec(), 3u32.to_le_bytes().to_vec())]);
        assert_eq!(s.dump(), vec![(0u32.to_le_bytes().to_vec(), 2u32.to_le_bytes().to_vec())]);
        assert_eq!(s.prog_pop_peek(&mut out, true), 0);
        out = [9; 4];
        assert_eq!(s.prog_pop_peek(&mut out, true), -2);
        assert_eq!(out, [0; 4]); // zeroed on empty, as the kernel does
        let b = Map::new(&def(map_type::BLOOM_FILTER, 0, 4, 8), 2, &mut reg).unwrap();
        assert_eq!(b.prog_push(&7u32.to_le_bytes(), BPF_EXIST, &mut reg), -22);
        assert_eq!(b.prog_push(&7u32.to_le_bytes(), BPF_ANY, &mut reg), 0);
        let mut probe = 7u32.to_le_bytes();
        assert_eq!(b.prog_pop_peek(&mut probe, false), 0);
        probe = 8u32.to_le_bytes();
        assert_eq!(b.prog_pop_peek(&mut probe, false), -2);
        assert_eq!(b.prog_pop_peek(&mut probe, true), -95);
    }

    #[test]
    fn redirect_targets_and_unsupported_maps() {
        let mut reg = Registry::default();
        let c = Map::new(&def(map_type::CPUMAP, 4, 4, 2), 0, &mut reg).unwrap();
        assert_eq!(c.prog_lookup(&0u32.to_le_bytes()), 0);
        assert!(c.update(&0u32.to_le_bytes(), &192u32.to_le_bytes(), 0, &mut reg).is_ok());
        assert_ne!(c.prog_lookup(&0u32.to_le_bytes()), 0);
        assert!(c.update(&1u32.to_le_bytes(), &16385u32.to_le_bytes(), 0, &mut reg).unwrap_err().msg.contains("75"));
        assert!(c.update(&2u32.to_le_bytes(), &1u32.to_le_bytes(), 0, &mut reg).unwrap_err().msg.contains("errno 7"));
        c.update(&0u32.to_le_bytes(), &0u32.to_le_bytes(), 0, &mut reg).unwrap(); // qsize 0 empties
        assert_eq!(c.prog_lookup(&0u32.to_le_bytes()), 0);
        assert_eq!(c.prog_update(&0u32.to_le_bytes(), &1u32.to_le_bytes(), 0, &mut reg), -22);
        let h = Map::new(&def(map_type::DEVMAP_HASH, 4, 4, 2), 1, &mut reg).unwrap();
        h.update(&77u32.to_le_bytes(), &1u32.to_le_bytes(), 0, &mut reg).unwrap();
        assert_ne!(h.prog_lookup(&77u32.to_le_bytes()), 0);
        assert_eq!(h.prog_lookup(&1u32.to_le_bytes()), 0);
        let s = Map::new(&def(map_type::SOCKMAP, 4, 4, 2), 2, &mut reg).unwrap();
        assert_eq!(s.runtime_unsupported().unwrap(), "not supported at run time: m (sockmap (15))");
        let u = Map::new(&def(map_type::USER_RINGBUF, 0, 0, 4096), 3, &mut reg).unwrap();
        assert_eq!(u.runtime_unsupported().unwrap(), "not supported at run time: m (user_ringbuf (31))");
        assert!(h.runtime_unsupported().is_none());
        let e = Map::new(&def(99, 4, 4, 2), 3, &mut reg).unwrap_err();
        assert_eq!(e.msg, "unsupported map type: unknown map type 99");
    }

    #[test]
    fn map_in_map_checks_the_template() {
        let mut reg = Registry::default();
        let mut o = def(map_type::ARRAY_OF_MAPS, 4, 4, 2);
        assert!(Map::new(&o, 0, &mut reg).unwrap_err().msg.contains("no inner map template"));
        o.inner = Some(Box::new(def(map_type::HASH, 4, 8, 16)));
        let outer = Map::new(&o, 0, &mut reg).unwrap();
        let good = Map::new(&def(map_type::HASH, 4, 8, 16), 1, &mut reg).unwrap();
        let bad = Map::new(&def(map_type::HASH, 4, 4, 16), 2, &mut reg).unwrap();
        outer.map_in_map_set(&1u32.to_le_bytes(), &good, 1).unwrap();
        assert!(outer.map_in_map_set(&0u32.to_le_bytes(), &bad, 2).unwrap_err().msg.contains("does not match the inner template"));
        assert!(outer.map_in_map_set(&2u32.to_le_bytes(), &good, 1).unwrap_err().msg.contains("out of range"));
        assert_eq!(outer.prog_lookup(&1u32.to_le_bytes()), good.addr());
        assert_eq!(outer.prog_lookup(&0u32.to_le_bytes()), 0);
        assert_eq!(outer.prog_update(&0u32.to_le_bytes(), &[0; 4], 0, &mut reg), -22);
        assert!(!outer.is_data_map());
    }
}
