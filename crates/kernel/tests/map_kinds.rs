//! The map types of real XDP/tc programs (issue 13): the kernel is the oracle. Each test runs
//! the same operations on a kernel map and on the runtime's model (`kops_vm`) and compares
//! every result and the contents; expected constants come from the kernel's documented
//! semantics (include/uapi/linux/bpf.h, kernel/bpf/*.c), never from our own output.

use std::os::fd::AsRawFd;

use kops_kernel::{require_kernel, KernelBtf, KernelError, MapSet, TestRun};
use kops_object::{map_type, MapDef, MapOrigin, Object};
use kops_vm::{ProgInput, Vm};

fn def(name: &str, ty: u32, ks: u32, vs: u32, n: u32) -> MapDef {
    MapDef::new(name, MapOrigin::Btf, ty, ks, vs, n)
}

fn object(maps: Vec<MapDef>) -> Object {
    Object::empty("map_kinds", maps)
}

fn mapkinds() -> Object {
    let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../vm/tests/data/rt_mapkinds.bpf.o");
    Object::load(p).unwrap()
}

/// Errno name of a failed kernel map operation (its message ends with "(ENAME)").
fn kerr(r: Result<(), KernelError>) -> Result<(), String> {
    r.map_err(|e| {
        let s = e.to_string();
        s.rsplit('(').next().unwrap_or("").trim_end_matches(')').to_string()
    })
}

/// Errno name of a failed vm map operation ("... failed with errno N").
fn verr(r: Result<(), kops_vm::MapError>) -> Result<(), String> {
    r.map_err(|e| {
        let n: i32 = e.msg.rsplit(' ').next().unwrap().parse().unwrap();
        match n {
            2 => "ENOENT",
            7 => "E2BIG",
            17 => "EEXIST",
            22 => "EINVAL",
            28 => "ENOSPC",
            _ => panic!("unexpected errno {n}: {e}"),
        }
        .to_string()
    })
}

struct Lcg(u64);
impl Lcg {
    fn next(&mut self) -> u32 {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (self.0 >> 33) as u32
    }
}

#[test]
fn lpm_trie_matches_the_kernel() {
    require_kernel!();
    let mut d = def("lpm", map_type::LPM_TRIE, 4 + 2, 4, 6);
    // The kernel, like our model, refuses a preallocated trie.
    let e = MapSet::create(std::slice::from_ref(&d)).unwrap_err().to_string();
    assert!(e.contains("lpm_trie (11)") && e.contains("EINVAL"), "{e}");
    d.flags = 1; // BPF_F_NO_PREALLOC
    let k = MapSet::create(std::slice::from_ref(&d)).unwrap();
    let km = &k.maps[0];
    let vm = Vm::new(&object(vec![d])).unwrap();
    let mut rng = Lcg(7);
    let (mut oks, mut errs, mut hits) = (0, 0, 0);
    for step in 0..3000 {
        // Prefix lengths 0..=17 (17 > 16 bits: EINVAL) over few distinct data values.
        let r = rng.next();
        let plen = r % 18;
        let key: Vec<u8> = [plen.to_le_bytes().to_vec(), vec![(r >> 8) as u8 & 0xc3, (r >> 16) as u8 & 0x81]].concat();
        let val = step.to_string().into_bytes()[..1].repeat(4);
        match (r >> 24) % 4 {
            0 | 1 => {
                let flags = ((r >> 26) % 3) as u64;
                let a = kerr(km.update(&key, &val, flags));
                let b = verr(vm.map_update("lpm", &key, &val, flags));
                assert_eq!(a, b, "update {key:?} flags {flags} at step {step}");
                if a.is_ok() { oks += 1 } else { errs += 1 }
            }
            2 => {
                let a = kerr(km.delete(&key));
                let b = verr(vm.map_delete("lpm", &key));
                assert_eq!(a, b, "delete {key:?} at step {step}");
            }
            _ => {
                let a = km.lookup(&key).unwrap().map(|v| v[0].clone());
                let b = vm.map("lpm").unwrap().lookup(&key);
                assert_eq!(a, b, "lookup {key:?} at step {step}");
                hits += a.is_some() as usize;
            }
        }
        let mut kd: Vec<(Vec<u8>, Vec<u8>)> = km.dump().unwrap().entries.into_iter().map(|(k, v)| (k, v[0].clone())).collect();
        kd.sort();
        assert_eq!(kd, vm.map("lpm").unwrap().dump(), "contents after step {step}");
    }
    assert!(oks >= 50 && errs > 100 && hits > 100, "the sequence exercised every path: {oks} {errs} {hits}");
}

#[test]
fn queue_and_stack_match_the_kernel() {
    require_kernel!();
    for t in [map_type::QUEUE, map_type::STACK] {
        let d = def("q", t, 0, 2, 3);
        let k = MapSet::create(std::slice::from_ref(&d)).unwrap();
        let km = &k.maps[0];
        let vm = Vm::new(&object(vec![d])).unwrap();
        let mut rng = Lcg(t as u64);
        for step in 0..400 {
            let r = rng.next();
            let v = [(r >> 8) as u8, step as u8];
            let flags = ((r >> 20) % 3) as u64;
            let a = kerr(km.update(&[], &v, flags));
            let b = verr(vm.map_update("q", &[], &v, flags));
            assert_eq!(a, b, "{} push flags {flags} at step {step}", map_type::describe(t));
            let kd: Vec<(Vec<u8>, Vec<u8>)> = km.dump().unwrap().entries.into_iter().map(|(k, v)| (k, v[0].clone())).collect();
            assert_eq!(kd, vm.map("q").unwrap().dump(), "{} contents after step {step}", map_type::describe(t));
            // Reading the kernel's contents popped and pushed them back: nothing changed.
            let again: Vec<(Vec<u8>, Vec<u8>)> = km.dump().unwrap().entries.into_iter().map(|(k, v)| (k, v[0].clone())).collect();
            assert_eq!(kd, again);
        }
        km.reset().unwrap();
        assert!(km.dump().unwrap().entries.is_empty());
    }
}

/// Map-in-map from BTF `__array(values, ...)`: created with the inner template, the
/// declared slots hold the named maps, and a map that does not match the template is
/// refused by the kernel, as by the runtime.
#[test]
fn map_in_map_slots_and_template_check() {
    require_kernel!();
    let obj = mapkinds();
    let btf = KernelBtf::for_object(&obj).unwrap();
    let set = MapSet::create_with_btf(&obj.maps, btf.as_ref()).unwrap();
    let oa = set.get("outer_arr").unwrap();
    // Userspace lookups of an outer map give inner map ids.
    assert!(oa.lookup(&0u32.to_ne_bytes()).unwrap().is_some());
    assert!(oa.lookup(&1u32.to_ne_bytes()).unwrap().is_some());
    assert!(oa.lookup(&2u32.to_ne_bytes()).unwrap().is_none());
    let oh = set.get("outer_hash").unwrap();
    assert!(oh.lookup(&5u32.to_ne_bytes()).unwrap().is_some());
    assert!(oh.lookup(&0u32.to_ne_bytes()).unwrap().is_none());
    assert!(oa.undumpable().is_some());
    // hash_a (a hash) in the array-of-arrays: refused by both.
    let mut bad = obj.clone();
    let i = bad.map_index("outer_arr").unwrap();
    bad.maps[i].init_slots[1].1 = "hash_a".into();
    let e = MapSet::create_with_btf(&bad.maps, btf.as_ref()).unwrap_err().to_string();
    assert!(e.contains("outer_arr") && e.contains("slot 1 = map `hash_a`") && e.contains("EINVAL"), "{e}");
    let e = Vm::new(&bad).err().unwrap().to_string();
    assert!(e.contains("outer_arr") && e.contains("does not match the inner template"), "{e}");
    // Without a template neither can create it.
    let mut none = obj.clone();
    none.maps[i].inner = None;
    let e = MapSet::create_with_btf(&none.maps, btf.as_ref()).unwrap_err().to_string();
    assert!(e.contains("array_of_maps (12) has no inner map template"), "{e}");
    let e = Vm::new(&none).err().unwrap().to_string();
    assert!(e.contains("array_of_maps (12) has no inner map template"), "{e}");
}

/// sk_storage is created only with the object's BTF ids (the kernel refuses it without);
/// the runtimes accept the object and refuse the first helper call on a socket map.
#[test]
fn sk_storage_needs_btf_and_socket_maps_are_named_at_run_time() {
    require_kernel!();
    let obj = mapkinds();
    let e = MapSet::create(&obj.maps).unwrap_err().to_string();
    assert!(e.contains("sk_data") && e.contains("sk_storage (24) needs BTF key/value type ids"), "{e}");
    // What our check stands in for: the kernel itself refuses sk_storage without BTF ids.
    let sk = obj.maps.iter().find(|m| m.name == "sk_data").unwrap();
    let raw = unsafe {
        let opts = libbpf_sys::bpf_map_create_opts {
            sz: std::mem::size_of::<libbpf_sys::bpf_map_create_opts>() as _,
            map_flags: sk.flags,
            ..Default::default()
        };
        libbpf_sys::bpf_map_create(sk.map_type, std::ptr::null(), sk.key_size, sk.value_size, 0, &opts)
    };
    assert_eq!(raw, -libc::EINVAL);
    let btf = KernelBtf::for_object(&obj).unwrap();
    let set = MapSet::create_with_btf(&obj.maps, btf.as_ref()).unwrap();
    for n in ["sk_data", "socks", "sock_hash", "cgroups", "reuse"] {
        assert!(set.get(n).unwrap().fd.as_raw_fd() >= 0);
    }
    let vm = Vm::new(&obj).unwrap();
    let id = vm.load("sockuse").unwrap();
    let e = vm.run(id, &ProgInput { data: vec![0; 64], ctx: None }).unwrap_err().to_string();
    assert!(e.contains("not supported at run time: socks (sockmap (15))"), "{e}");
}

/// devmap_hash and cpumap with a target set from userspace: `redir` returns XDP_REDIRECT
/// (4) for a present key and the fallback action (flags & 3) otherwise; BPF_F_BROADCAST is
/// a redirect on a devmap_hash whatever the key, XDP_ABORTED (0) on a cpumap (flag not
/// allowed there). The kernel and the interpreter agree on each, with the values expected.
#[test]
fn redirect_to_populated_devmap_hash_and_cpumap() {
    require_kernel!();
    let cpu = kops_kernel::pin_to_one_cpu().unwrap() as u32;
    let obj = mapkinds();
    let btf = KernelBtf::for_object(&obj).unwrap();
    let set = MapSet::create_with_btf(&obj.maps, btf.as_ref()).unwrap();
    let lo = 1u32; // the loopback device
    set.get("dev_hash").unwrap().update(&7u32.to_ne_bytes(), &lo.to_ne_bytes(), 0).unwrap();
    let cpuval = [192u32.to_ne_bytes(), 0u32.to_ne_bytes()].concat(); // qsize 192, no program
    set.get("cpus").unwrap().update(&cpu.to_ne_bytes(), &cpuval, 0).unwrap();
    let p = obj.program("redir").unwrap();
    let kp = kops_kernel::load_object_program(&obj, p, &p.insns, &set, btf.as_ref(), 0).unwrap();
    let vm = Vm::new(&obj).unwrap();
    vm.map_update("dev_hash", &7u32.to_le_bytes(), &lo.to_le_bytes(), 0).unwrap();
    vm.map_update("cpus", &cpu.to_le_bytes(), &cpuval, 0).unwrap();
    let vid = vm.load("redir").unwrap();
    let dev = obj.map_index("dev_hash").unwrap();
    let cpus = obj.map_index("cpus").unwrap();
    use kops_vm::Redirect;
    // (p[0] odd: devmap_hash, p[1]: fallback | 0x40 broadcast, p[2]: key) -> r0, redirect
    let cases: [([u8; 3], u32, Option<Redirect>); 8] = [
        ([1, 0, 7], 4, Some(Redirect::Map { map: dev, key: 7 })),
        ([1, 2, 8], 2, None),
        ([1, 3, 6], 3, None),
        ([1, 0x41, 9], 4, Some(Redirect::Broadcast { map: dev, exclude_ingress: false })),
        ([0, 1, cpu as u8], 4, Some(Redirect::Map { map: cpus, key: cpu })),
        ([0, 1, cpu as u8 + 1], 1, None),
        ([0, 2, 6], 2, None), // key 6 % 8 = 6 >= max_entries 4
        ([0, 0x40, cpu as u8], 0, None),
    ];
    for (head, want, redirect) in cases {
        let mut pkt = vec![0u8; 64];
        pkt[..3].copy_from_slice(&head);
        let k = kp.test_run(&TestRun { data_in: Some(&pkt), ..TestRun::default() }).unwrap();
        let v = vm.run(vid, &ProgInput { data: pkt.clone(), ctx: None }).unwrap();
        assert_eq!(k.retval, want, "kernel on {head:?}");
        assert_eq!(v.r0, want as u64, "interp on {head:?}");
        assert_eq!(v.redirect, redirect, "interp's recorded target on {head:?}");
    }
}

/// Legacy (samples/bpf bpf_load.c) map-in-map: the template comes from `inner_map_idx`;
/// the outer map starts empty (XDP_DROP), and once slot 0 holds `port_a` the lookup
/// succeeds (XDP_PASS) in the kernel and in the interpreter alike.
#[test]
fn legacy_map_in_map_from_inner_map_idx() {
    require_kernel!();
    let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../vm/tests/data/rt_legacy_mim.bpf.o");
    let obj = Object::load(p).unwrap();
    let set = MapSet::create(&obj.maps).unwrap();
    let prog = obj.program("prog").unwrap();
    let kp = kops_kernel::load_object_program(&obj, prog, &prog.insns, &set, None, 0).unwrap();
    let vm = Vm::new(&obj).unwrap();
    let vid = vm.load("prog").unwrap();
    let pkt = vec![0u8; 64];
    let both = || {
        let k = kp.test_run(&TestRun { data_in: Some(&pkt), ..TestRun::default() }).unwrap().retval as u64;
        let v = vm.run(vid, &ProgInput { data: pkt.clone(), ctx: None }).unwrap().r0;
        (k, v)
    };
    assert_eq!(both(), (1, 1));
    let port_a = set.get("port_a").unwrap().fd.as_raw_fd() as u32;
    set.get("outer").unwrap().update(&0u32.to_ne_bytes(), &port_a.to_ne_bytes(), 0).unwrap();
    vm.set_map_in_map("outer", &0u32.to_le_bytes(), "port_a").unwrap();
    assert_eq!(both(), (2, 2));
}
