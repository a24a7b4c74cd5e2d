//! Maps: creation from `kops_object::MapDef`, initial contents, read-back, reset.

use std::os::fd::{AsRawFd, OwnedFd, RawFd};

use kops_object::{map_type, MapDef, MapOrigin};

use crate::sys;
use crate::{available, possible_cpus, KernelBtf, KernelError};

/// Map types that take no BTF key/value ids (their ops refuse them: `map_check_no_btf`);
/// libbpf's list in bpf_object__create_map.
fn takes_no_btf(t: u32) -> bool {
    matches!(
        t,
        map_type::PERF_EVENT_ARRAY
            | map_type::CGROUP_ARRAY
            | map_type::STACK_TRACE
            | map_type::ARRAY_OF_MAPS
            | map_type::HASH_OF_MAPS
            | map_type::DEVMAP
            | map_type::DEVMAP_HASH
            | map_type::CPUMAP
            | map_type::XSKMAP
            | map_type::SOCKMAP
            | map_type::SOCKHASH
            | map_type::QUEUE
            | map_type::STACK
            | map_type::ARENA
    )
}

/// Map types the kernel creates only with BTF key/value type ids (bpf_local_storage).
fn needs_btf(t: u32) -> bool {
    matches!(t, map_type::SK_STORAGE | map_type::INODE_STORAGE | map_type::TASK_STORAGE | map_type::CGRP_STORAGE)
}

fn is_queue(t: u32) -> bool {
    matches!(t, map_type::QUEUE | map_type::STACK)
}

/// A map created in the kernel from a definition.
#[derive(Debug)]
pub struct Map {
    pub fd: OwnedFd,
    pub def: MapDef,
    /// max_entries as created (PERF_EVENT_ARRAY with 0 becomes the CPU count, as libbpf does).
    pub max_entries: u32,
    /// Why the kernel refused the map with its BTF ids, when it was then created without
    /// them (as libbpf retries, with a warning); callers show it.
    pub btf_refused: Option<String>,
}

/// One map entry as read back: key and value(s) (one per CPU for per-CPU maps).
pub type Entry = (Vec<u8>, Vec<Vec<u8>>);

/// Contents of a map: `(key, values)` in key order, where `values` has one entry per
/// possible CPU for per-CPU maps and exactly one otherwise (each `value_size` bytes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MapDump {
    pub name: String,
    pub per_cpu: bool,
    pub entries: Vec<Entry>,
}

pub fn is_per_cpu(map_type: u32) -> bool {
    matches!(
        map_type,
        map_type::PERCPU_ARRAY | map_type::PERCPU_HASH | map_type::LRU_PERCPU_HASH
    )
}

fn is_array(map_type: u32) -> bool {
    matches!(map_type, map_type::ARRAY | map_type::PERCPU_ARRAY)
}

fn is_hash(map_type: u32) -> bool {
    matches!(
        map_type,
        map_type::HASH | map_type::PERCPU_HASH | map_type::LRU_HASH | map_type::LRU_PERCPU_HASH
    )
}

impl Map {
    /// Creates the map, writes its initial contents (global data) and freezes `.rodata`.
    /// Without BTF; see [`Map::create_with_btf`].
    pub fn create(def: &MapDef) -> Result<Map, KernelError> {
        Map::create_with_btf(def, None)
    }

    /// Like [`Map::create`]; with the object's BTF loaded, the map gets its BTF key/value
    /// type ids as libbpf gives them (required by sk_storage and the other local storage
    /// maps; for other maps a refusal with BTF is retried without, as libbpf does).
    /// Map-in-map: the inner template is created first and given as `inner_map_fd`.
    pub fn create_with_btf(def: &MapDef, btf: Option<&KernelBtf>) -> Result<Map, KernelError> {
        available()?;
        let err = |msg: String| KernelError::Map { name: def.name.clone(), msg };
        let what = map_type::describe(def.map_type);
        let inner = if map_type::is_map_in_map(def.map_type) {
            let Some(t) = def.inner.as_deref() else {
                return Err(err(format!(
                    "{what} has no inner map template (BTF `__array(values, ...)` or legacy inner_map_idx; \
                         without either, libbpf's user sets one with bpf_map__set_inner_map_fd)"
                )));
            };
            Some(Map::create_with_btf(t, btf).map_err(|e| err(format!("inner map template: {e}")))?)
        } else {
            None
        };
        let with_btf = match btf {
            Some(b) if (def.btf_value_type_id != 0 || def.btf_key_type_id != 0) && !takes_no_btf(def.map_type) => {
                Some(b)
            }
            _ => None,
        };
        if needs_btf(def.map_type) && with_btf.is_none() {
            return Err(err(format!(
                "{what} needs BTF key/value type ids (btf_fd, btf_key_type_id, btf_value_type_id): {}",
                if btf.is_none() { "the object's BTF is not loaded" } else { "the map has no BTF key/value types" }
            )));
        }
        let mut max_entries = def.max_entries;
        if def.map_type == map_type::PERF_EVENT_ARRAY && max_entries == 0 {
            max_entries = possible_cpus() as u32;
        }
        let mut flags = def.flags;
        if def.origin == MapOrigin::GlobalData && def.readonly {
            // As libbpf: the program may not write .rodata, and once frozen the verifier
            // treats its contents as constants (loop bounds, feature switches).
            flags |= libbpf_sys::BPF_F_RDONLY_PROG;
        }
        let create = |b: Option<&KernelBtf>| {
            let (btf_fd, key_id, value_id) = match b {
                Some(b) => (b.fd.as_raw_fd() as u32, def.btf_key_type_id, def.btf_value_type_id),
                None => (0, 0, 0),
            };
            let opts = libbpf_sys::bpf_map_create_opts {
                sz: std::mem::size_of::<libbpf_sys::bpf_map_create_opts>() as _,
                map_flags: flags,
                map_extra: def.map_extra,
                inner_map_fd: inner.as_ref().map_or(0, |m| m.fd.as_raw_fd() as u32),
                btf_fd,
                btf_key_type_id: key_id,
                btf_value_type_id: value_id,
                ..Default::default()
            };
            let name = sys::kernel_name(&def.name);
            let ret = unsafe {
                libbpf_sys::bpf_map_create(
                    def.map_type,
                    name.as_ptr(),
                    def.key_size,
                    def.value_size,
                    max_entries,
                    &opts,
                )
            };
            sys::fd_or_errno(ret)
        };
        let mut ret = create(with_btf);
        let mut btf_refused = None;
        if let (Err(e), Some(_), false) = (&ret, with_btf, needs_btf(def.map_type)) {
            btf_refused = Some(format!("refused with BTF key/value ids ({}), created without", sys::errno_text(*e)));
            ret = create(None);
        }
        let fd = ret.map_err(|e| {
            err(format!(
                "BPF_MAP_CREATE ({what}, key {}, value {}, max_entries {}, flags {:#x}{}) failed: {}",
                def.key_size,
                def.value_size,
                max_entries,
                flags,
                if with_btf.is_some() { ", with BTF ids" } else { "" },
                sys::errno_text(e)
            ))
        })?;
        let map = Map { fd, def: def.clone(), max_entries, btf_refused };
        if let Some(init) = &def.initial {
            if init.len() != def.value_size as usize {
                return Err(err(format!(
                    "initial contents are {} bytes, value size is {}",
                    init.len(),
                    def.value_size
                )));
            }
            map.update(&0u32.to_ne_bytes(), &map.expand_value(init), 0)
                .map_err(|e| err(format!("writing initial contents: {e}")))?;
        }
        if def.readonly {
            let r = unsafe { libbpf_sys::bpf_map_freeze(map.fd.as_raw_fd()) };
            sys::check(r).map_err(|e| err(format!("BPF_MAP_FREEZE failed: {}", sys::errno_text(e))))?;
        }
        Ok(map)
    }

    pub fn per_cpu(&self) -> bool {
        is_per_cpu(self.def.map_type)
    }

    /// Bytes of one value as the syscalls see it (all CPUs for per-CPU maps).
    fn syscall_value_size(&self) -> usize {
        if self.per_cpu() {
            self.stride() * possible_cpus()
        } else {
            self.def.value_size as usize
        }
    }

    fn stride(&self) -> usize {
        (self.def.value_size as usize + 7) & !7
    }

    /// The same value for every CPU (for per-CPU maps), else `v` itself.
    fn expand_value(&self, v: &[u8]) -> Vec<u8> {
        if !self.per_cpu() {
            return v.to_vec();
        }
        let mut out = vec![0u8; self.syscall_value_size()];
        for c in 0..possible_cpus() {
            out[c * self.stride()..c * self.stride() + v.len()].copy_from_slice(v);
        }
        out
    }

    fn split_values(&self, raw: &[u8]) -> Vec<Vec<u8>> {
        let vs = self.def.value_size as usize;
        if self.per_cpu() {
            (0..possible_cpus()).map(|c| raw[c * self.stride()..c * self.stride() + vs].to_vec()).collect()
        } else {
            vec![raw[..vs].to_vec()]
        }
    }

    /// The key pointer for bpf(2): NULL for maps without keys (queue, stack, bloom filter),
    /// which the kernel requires.
    fn key_ptr(key: &[u8]) -> *const std::ffi::c_void {
        if key.is_empty() {
            std::ptr::null()
        } else {
            key.as_ptr() as *const _
        }
    }

    fn check_key(&self, key: &[u8]) -> Result<(), KernelError> {
        if key.len() != self.def.key_size as usize {
            return Err(KernelError::Map {
                name: self.def.name.clone(),
                msg: format!("key of {} bytes, the map's key size is {}", key.len(), self.def.key_size),
            });
        }
        Ok(())
    }

    /// Raw value of `key` (all CPUs concatenated at 8-byte stride for per-CPU maps).
    pub fn lookup_raw(&self, key: &[u8]) -> Result<Option<Vec<u8>>, KernelError> {
        self.check_key(key)?;
        let mut v = vec![0u8; self.syscall_value_size()];
        let r = unsafe {
            libbpf_sys::bpf_map_lookup_elem(
                self.fd.as_raw_fd(),
                Map::key_ptr(key),
                v.as_mut_ptr() as *mut _,
            )
        };
        match sys::check(r) {
            Ok(()) => Ok(Some(v)),
            Err(libc::ENOENT) => Ok(None),
            Err(e) => Err(self.sys_err("lookup", e)),
        }
    }

    /// Value(s) of `key`: one per CPU for per-CPU maps.
    pub fn lookup(&self, key: &[u8]) -> Result<Option<Vec<Vec<u8>>>, KernelError> {
        Ok(self.lookup_raw(key)?.map(|v| self.split_values(&v)))
    }

    /// Writes `value` (one value; per-CPU maps get it on every CPU, or pass all CPUs'
    /// values concatenated at 8-byte stride).
    pub fn update(&self, key: &[u8], value: &[u8], flags: u64) -> Result<(), KernelError> {
        self.check_key(key)?;
        let v = if value.len() == self.syscall_value_size() {
            value.to_vec()
        } else if value.len() == self.def.value_size as usize {
            self.expand_value(value)
        } else {
            return Err(KernelError::Map {
                name: self.def.name.clone(),
                msg: format!("value of {} bytes, the map's value size is {}", value.len(), self.def.value_size),
            });
        };
        let r = unsafe {
            libbpf_sys::bpf_map_update_elem(
                self.fd.as_raw_fd(),
                Map::key_ptr(key),
                v.as_ptr() as *const _,
                flags,
            )
        };
        sys::check(r).map_err(|e| self.sys_err("update", e))
    }

    pub fn delete(&self, key: &[u8]) -> Result<(), KernelError> {
        self.check_key(key)?;
        let r = unsafe { libbpf_sys::bpf_map_delete_elem(self.fd.as_raw_fd(), Map::key_ptr(key)) };
        sys::check(r).map_err(|e| self.sys_err("delete", e))
    }

    /// All keys, by BPF_MAP_GET_NEXT_KEY.
    pub fn keys(&self) -> Result<Vec<Vec<u8>>, KernelError> {
        let ks = self.def.key_size as usize;
        if ks == 0 {
            return Err(KernelError::Map {
                name: self.def.name.clone(),
                msg: format!(
                    "{} has no keys (queues and stacks are read with dump)",
                    map_type::describe(self.def.map_type)
                ),
            });
        }
        let mut out: Vec<Vec<u8>> = Vec::new();
        let mut next = vec![0u8; ks];
        loop {
            let prev = out.last().map(|k| k.as_ptr()).unwrap_or(std::ptr::null());
            let r = unsafe {
                libbpf_sys::bpf_map_get_next_key(self.fd.as_raw_fd(), prev as *const _, next.as_mut_ptr() as *mut _)
            };
            match sys::check(r) {
                Ok(()) => out.push(next.clone()),
                Err(libc::ENOENT) => return Ok(out),
                Err(e) => return Err(self.sys_err("get_next_key", e)),
            }
            if out.len() > self.max_entries as usize + 1 {
                return Err(self.sys_err("get_next_key (more keys than max_entries)", libc::E2BIG));
            }
        }
    }

    /// Why the map's contents cannot be read back by syscalls, if they cannot.
    /// Agrees with `kops_vm::maps::comparable`, which says what the runtimes compare.
    pub fn undumpable(&self) -> Option<&'static str> {
        let t = self.def.map_type;
        if is_array(t) || is_hash(t) || t == map_type::LPM_TRIE || is_queue(t) {
            None
        } else {
            Some(match t {
                map_type::RINGBUF => "ring buffer (records are consumed, not looked up)",
                map_type::PERF_EVENT_ARRAY => "perf event array",
                map_type::PROG_ARRAY => "program array (holds programs)",
                map_type::ARRAY_OF_MAPS | map_type::HASH_OF_MAPS => {
                    "map-in-map (holds map ids; the inner maps are compared themselves)"
                }
                map_type::DEVMAP | map_type::DEVMAP_HASH | map_type::XSKMAP | map_type::CPUMAP => {
                    "redirect target map (devices, sockets, CPUs)"
                }
                map_type::BLOOM_FILTER => "bloom filter (membership queries only, cannot be listed)",
                map_type::SOCKMAP | map_type::SOCKHASH | map_type::REUSEPORT_SOCKARRAY | map_type::CGROUP_ARRAY => {
                    "socket/cgroup map (holds kernel objects)"
                }
                map_type::SK_STORAGE | map_type::INODE_STORAGE | map_type::TASK_STORAGE | map_type::CGRP_STORAGE => {
                    "local storage map (values live on sockets, tasks, ...)"
                }
                _ => "map type without syscall lookup support in kops",
            })
        }
    }

    /// Queue/stack contents in pop order, read by popping everything and pushing it back
    /// (the kernel has no other way to list them).
    fn queue_items(&self) -> Result<Vec<Vec<u8>>, KernelError> {
        let items = self.pop_all()?;
        // A stack pops newest first: push back oldest first.
        let order: Vec<&Vec<u8>> =
            if self.def.map_type == map_type::STACK { items.iter().rev().collect() } else { items.iter().collect() };
        for v in order {
            let r = unsafe {
                libbpf_sys::bpf_map_update_elem(self.fd.as_raw_fd(), std::ptr::null(), v.as_ptr() as *const _, 0)
            };
            sys::check(r).map_err(|e| self.sys_err("push (restoring after a dump)", e))?;
        }
        Ok(items)
    }

    fn pop_all(&self) -> Result<Vec<Vec<u8>>, KernelError> {
        let mut out = Vec::new();
        loop {
            let mut v = vec![0u8; self.def.value_size as usize];
            let r = unsafe {
                let fd = self.fd.as_raw_fd();
                libbpf_sys::bpf_map_lookup_and_delete_elem(fd, std::ptr::null(), v.as_mut_ptr() as *mut _)
            };
            match sys::check(r) {
                Ok(()) => out.push(v),
                Err(libc::ENOENT) => return Ok(out),
                Err(e) => return Err(self.sys_err("pop", e)),
            }
            if out.len() > self.max_entries as usize {
                return Err(self.sys_err("pop (more values than max_entries)", libc::E2BIG));
            }
        }
    }

    /// Contents (arrays: every index; hashes: every present key), sorted by key bytes.
    pub fn dump(&self) -> Result<MapDump, KernelError> {
        if let Some(why) = self.undumpable() {
            return Err(KernelError::Map { name: self.def.name.clone(), msg: format!("cannot be read back: {why}") });
        }
        self.dump_inner(false)
    }

    /// Like [`Map::dump`], but arrays list only entries with a non-zero byte (on any CPU):
    /// after a run that touched a few entries of a big array, that is what changed.
    pub fn dump_nonzero(&self) -> Result<MapDump, KernelError> {
        self.dump_inner(true)
    }

    fn dump_inner(&self, skip_zero: bool) -> Result<MapDump, KernelError> {
        if let Some(why) = self.undumpable() {
            return Err(KernelError::Map { name: self.def.name.clone(), msg: format!("cannot be read back: {why}") });
        }
        let mut entries = Vec::new();
        if is_array(self.def.map_type) {
            entries = self.dump_array_batch(skip_zero)?;
        } else if is_queue(self.def.map_type) {
            // Keyed by position in pop order, as the runtimes' snapshots are.
            let items = self.queue_items()?.into_iter().enumerate();
            entries = items.map(|(i, v)| ((i as u32).to_ne_bytes().to_vec(), vec![v])).collect();
        } else {
            for k in self.keys()? {
                // A key can vanish between next_key and lookup only under concurrency.
                if let Some(v) = self.lookup(&k)? {
                    entries.push((k, v));
                }
            }
            entries.sort();
        }
        Ok(MapDump { name: self.def.name.clone(), per_cpu: self.per_cpu(), entries })
    }

    /// Arrays: one BPF_MAP_LOOKUP_BATCH call per chunk instead of a syscall per index
    /// (xdp-filter's port array has 65536 entries and is read after every run).
    fn dump_array_batch(&self, skip_zero: bool) -> Result<Vec<Entry>, KernelError> {
        let n = self.max_entries as usize;
        let vsz = self.syscall_value_size();
        let chunk = n.clamp(1, 8192);
        let mut keys = vec![0u8; 4 * chunk];
        let mut vals = vec![0u8; vsz * chunk];
        let mut out = Vec::new();
        let mut seen = 0usize;
        let mut in_batch = 0u32;
        let mut out_batch = 0u32;
        let mut first = true;
        loop {
            let mut count = chunk as u32;
            let opts = batch_opts();
            let r = unsafe {
                libbpf_sys::bpf_map_lookup_batch(
                    self.fd.as_raw_fd(),
                    if first { std::ptr::null_mut() } else { &mut in_batch as *mut u32 as *mut _ },
                    &mut out_batch as *mut u32 as *mut _,
                    keys.as_mut_ptr() as *mut _,
                    vals.as_mut_ptr() as *mut _,
                    &mut count,
                    &opts,
                )
            };
            let done = match sys::check(r) {
                Ok(()) => false,
                Err(libc::ENOENT) => true,
                Err(libc::EINVAL) | Err(libc::ENOTSUP) | Err(524) if first => return self.dump_array_slow(skip_zero),
                Err(e) => return Err(self.sys_err("lookup_batch", e)),
            };
            for i in 0..count as usize {
                let raw = &vals[vsz * i..vsz * (i + 1)];
                seen += 1;
                if skip_zero && raw.iter().all(|&b| b == 0) {
                    continue;
                }
                let k = keys[4 * i..4 * i + 4].to_vec();
                out.push((k, self.split_values(raw)));
            }
            if done || seen >= n {
                break;
            }
            first = false;
            in_batch = out_batch;
        }
        out.sort_by_key(|(k, _)| u32::from_ne_bytes(k[..4].try_into().unwrap()));
        Ok(out)
    }

    fn dump_array_slow(&self, skip_zero: bool) -> Result<Vec<Entry>, KernelError> {
        let mut out = Vec::new();
        for i in 0..self.max_entries {
            let k = i.to_ne_bytes().to_vec();
            if let Some(raw) = self.lookup_raw(&k)? {
                if skip_zero && raw.iter().all(|&b| b == 0) {
                    continue;
                }
                out.push((k, self.split_values(&raw)));
            }
        }
        Ok(out)
    }

    /// What [`Map::reset`] and [`Map::reset_keys`] share: frozen and undumpable maps stay as
    /// they are, queues and stacks are emptied; None for maps whose keys must be put back.
    fn reset_without_keys(&self) -> Option<Result<(), KernelError>> {
        if self.def.readonly || self.undumpable().is_some() {
            return Some(Ok(()));
        }
        is_queue(self.def.map_type).then(|| self.pop_all().map(|_| ()))
    }

    /// Puts these keys back to their state right after [`Map::create`]: array entries to
    /// their initial value (zeros, or the global data), hash entries deleted. Cheaper than
    /// [`Map::reset`] when a run changed a few entries of a big map.
    pub fn reset_keys(&self, keys: &[Vec<u8>]) -> Result<(), KernelError> {
        if let Some(r) = self.reset_without_keys() {
            return r;
        }
        if is_array(self.def.map_type) {
            let zero = vec![0u8; self.def.value_size as usize];
            for k in keys {
                let first = k.len() == 4 && u32::from_ne_bytes(k[..4].try_into().unwrap()) == 0;
                let v = match (&self.def.initial, first) {
                    (Some(init), true) => init.as_slice(),
                    _ => zero.as_slice(),
                };
                self.update(k, v, 0)?;
            }
        } else {
            for k in keys {
                match self.delete(k) {
                    Ok(()) => {}
                    Err(KernelError::Map { msg, .. }) if msg.contains("ENOENT") => {}
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(())
    }

    /// Back to the state right after [`Map::create`]: arrays to their initial contents
    /// (zeros, or the global data), hashes emptied. Frozen and undumpable maps are left as
    /// they are (the program cannot change the former; the latter are not compared).
    pub fn reset(&self) -> Result<(), KernelError> {
        if let Some(r) = self.reset_without_keys() {
            return r;
        }
        if is_array(self.def.map_type) {
            let zero = vec![0u8; self.def.value_size as usize];
            let init = self.def.initial.as_deref().unwrap_or(&zero);
            let one = self.expand_value(&zero);
            let first = self.expand_value(init);
            let n = self.max_entries as usize;
            let chunk = n.clamp(1, 8192);
            let mut start = 0usize;
            while start < n {
                let m = chunk.min(n - start);
                let keys: Vec<u8> = (start..start + m).flat_map(|i| (i as u32).to_ne_bytes()).collect();
                let mut vals = Vec::with_capacity(m * one.len());
                for i in start..start + m {
                    vals.extend_from_slice(if i == 0 { &first } else { &one });
                }
                let mut count = m as u32;
                let opts = batch_opts();
                let r = unsafe {
                    libbpf_sys::bpf_map_update_batch(
                        self.fd.as_raw_fd(),
                        keys.as_ptr() as *const _,
                        vals.as_ptr() as *const _,
                        &mut count,
                        &opts,
                    )
                };
                if let Err(e) = sys::check(r) {
                    if matches!(e, libc::EINVAL | libc::ENOTSUP | 524) {
                        for i in start..start + m {
                            self.update(&(i as u32).to_ne_bytes(), if i == 0 { &first } else { &one }, 0)?;
                        }
                    } else {
                        return Err(self.sys_err("update_batch", e));
                    }
                }
                start += m;
            }
        } else {
            for k in self.keys()? {
                match self.delete(&k) {
                    Ok(()) => {}
                    Err(KernelError::Map { msg, .. }) if msg.contains("ENOENT") => {}
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(())
    }

    fn sys_err(&self, op: &str, errno: i32) -> KernelError {
        KernelError::Map { name: self.def.name.clone(), msg: format!("{op} failed: {}", sys::errno_text(errno)) }
    }
}

/// The maps of one object, in `Object::maps` order (so `fd_array[i]` is map `i`).
#[derive(Debug, Default)]
pub struct MapSet {
    pub maps: Vec<Map>,
}

impl MapSet {
    /// The maps without BTF ids (see [`MapSet::create_with_btf`]).
    pub fn create(defs: &[MapDef]) -> Result<MapSet, KernelError> {
        MapSet::create_with_btf(defs, None)
    }

    /// Creates every map (with BTF ids when `btf` is the object's loaded BTF, see
    /// [`Map::create_with_btf`]), then fills map-in-map slots declared with initial maps
    /// (BTF `values = { [i] = &map }`; for a hash of maps `i` is the key).
    pub fn create_with_btf(defs: &[MapDef], btf: Option<&KernelBtf>) -> Result<MapSet, KernelError> {
        let mut maps = Vec::with_capacity(defs.len());
        for d in defs {
            maps.push(Map::create_with_btf(d, btf)?);
        }
        let set = MapSet { maps };
        for m in set.maps.iter().filter(|m| map_type::is_map_in_map(m.def.map_type)) {
            for (slot, name) in &m.def.init_slots {
                let inner = set.get(name).ok_or_else(|| KernelError::Map {
                    name: m.def.name.clone(),
                    msg: format!("slot {slot} names `{name}`, which is not a map of the object"),
                })?;
                m.update(&slot.to_ne_bytes(), &(inner.fd.as_raw_fd() as u32).to_ne_bytes(), 0).map_err(|e| {
                    KernelError::Map { name: m.def.name.clone(), msg: format!("slot {slot} = map `{name}`: {e}") }
                })?;
            }
        }
        Ok(set)
    }

    /// The fd_array for `BPF_PROG_LOAD`: `ld_imm64 src=PSEUDO_MAP_IDX(_VALUE), imm=i`
    /// refers to `maps[i]`.
    pub fn fd_array(&self) -> Vec<RawFd> {
        self.maps.iter().map(|m| m.fd.as_raw_fd()).collect()
    }

    pub fn reset(&self) -> Result<(), KernelError> {
        self.maps.iter().try_for_each(|m| m.reset())
    }

    pub fn get(&self, name: &str) -> Option<&Map> {
        self.maps.iter().find(|m| m.def.name == name)
    }
}

/// Options of the batch operations (only their size set).
fn batch_opts() -> libbpf_sys::bpf_map_batch_opts {
    libbpf_sys::bpf_map_batch_opts { sz: std::mem::size_of::<libbpf_sys::bpf_map_batch_opts>() as _, ..Default::default() }
}
