//! Loader tests on real clang-19 output. Expected values were read off
//! `llvm-objdump-19 -dr` / `llvm-readelf-19 -sS` of the objects (or are checked against
//! that output programmatically, see `common::check_against_llvm`).

mod common;

use std::path::{Path, PathBuf};

use common::*;
use kops_object::{map_type, LoadErrorKind, MapOrigin, Object, ProgType};

fn subprogs(o: &Object, prog: &str) -> Vec<(String, usize, usize, String, usize)> {
    o.program(prog)
        .unwrap()
        .subprogs
        .iter()
        .map(|s| (s.name.clone(), s.start, s.len, s.section.clone(), s.sec_start))
        .collect()
}

fn sp(name: &str, start: usize, len: usize, sec: &str, sec_start: usize) -> (String, usize, usize, String, usize) {
    (name.into(), start, len, sec.into(), sec_start)
}

/// (src, imm, second-slot imm) of the ld_imm64 at `pc`.
fn ld(o: &Object, prog: &str, pc: usize) -> (u8, i32, i32) {
    let p = o.program(prog).unwrap();
    assert!(p.insns[pc].is_ld_imm64(), "{prog} insn {pc} is not ld_imm64");
    (p.insns[pc].src, p.insns[pc].imm, p.insns[pc + 1].imm)
}

fn midx(o: &Object, name: &str) -> i32 {
    o.map_index(name).unwrap_or_else(|| panic!("no map {name}")) as i32
}

/// 1-based line of the first source line containing `needle`.
fn src_line(file: &str, needle: &str) -> u32 {
    let src = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/c").join(file)).unwrap();
    src.lines().position(|l| l.contains(needle)).unwrap() as u32 + 1
}

#[test]
fn multi_programs_subprogs_maps_and_data() {
    let Some(path) = compile("multi") else { return };
    let o = Object::load(&path).unwrap();
    assert_eq!(o.license, "Dual BSD/GPL");
    assert!(o.btf.is_some() && o.has_btf_ext);

    // Programs, in section then address order (llvm-readelf symbol table).
    let names: Vec<(&str, &str)> = o.programs.iter().map(|p| (p.section.as_str(), p.name.as_str())).collect();
    assert_eq!(
        names,
        [("xdp", "tail_a"), ("xdp", "tail_b"), ("xdp", "prog_one"), ("xdp", "prog_two"), ("tc", "tc_prog")]
    );
    let p1 = o.program("prog_one").unwrap();
    assert_eq!((p1.prog_type, p1.prog_type_id, p1.expected_attach_type), (ProgType::Xdp, 6, 37));
    let tc = o.program("tc_prog").unwrap();
    assert_eq!((tc.prog_type, tc.prog_type_id, tc.expected_attach_type), (ProgType::SchedCls, 3, 0));

    // helper2 = .text slots 0..11, mix = 11..20 (symbol sizes 88 and 72 bytes).
    // prog_one = xdp slot 14, 208 bytes; it calls helper2 which calls mix.
    assert_eq!(
        subprogs(&o, "prog_one"),
        [sp("prog_one", 0, 26, "xdp", 14), sp("helper2", 26, 11, ".text", 0), sp("mix", 37, 9, ".text", 11)]
    );
    // prog_two (xdp slot 40, 264 bytes) calls only mix.
    assert_eq!(subprogs(&o, "prog_two"), [sp("prog_two", 0, 33, "xdp", 40), sp("mix", 33, 9, ".text", 11)]);
    assert_eq!(
        subprogs(&o, "tc_prog"),
        [sp("tc_prog", 0, 15, "tc", 0), sp("helper2", 15, 11, ".text", 0), sp("mix", 26, 9, ".text", 11)]
    );
    // Calls: xdp slot 25 (call -1, R_BPF_64_32 .text) -> helper2 at 26: imm = 26 - 12.
    let call = |prog: &str, pc: usize| {
        let i = o.program(prog).unwrap().insns[pc];
        assert!(i.is_pseudo_call(), "{prog} insn {pc}");
        i.imm
    };
    assert_eq!(call("prog_one", 11), 14);
    // .text slot 6 "call 0x4" (helper2 -> mix, no relocation): 26+6 -> 37.
    assert_eq!(call("prog_one", 32), 4);
    // xdp slot 52 "call 0xa" with R_BPF_64_32 .text: 0/8 + 10 + 1 = mix; pc 12 -> 33.
    assert_eq!(call("prog_two", 12), 20);
    assert_eq!(call("tc_prog", 13), 1);
    assert_eq!(call("tc_prog", 21), 4);

    // BTF maps.
    let m = |n: &str| o.maps[o.map_index(n).unwrap()].clone();
    let counts = m("counts");
    assert_eq!((counts.map_type, counts.key_size, counts.value_size, counts.max_entries), (map_type::HASH, 4, 8, 128));
    assert_eq!(counts.origin, MapOrigin::Btf);
    let pairs = m("pairs");
    // struct pair { u64; u32; u16 } is 16 bytes; BPF_F_RDONLY_PROG = 1 << 7.
    assert_eq!((pairs.map_type, pairs.key_size, pairs.value_size, pairs.max_entries, pairs.flags), (map_type::ARRAY, 4, 16, 4, 0x80));
    assert!(pairs.btf_key_type_id != 0 && pairs.btf_value_type_id != 0);
    let scratch = m("scratch");
    assert_eq!((scratch.map_type, scratch.key_size, scratch.value_size, scratch.max_entries, scratch.pinning), (map_type::PERCPU_ARRAY, 4, 24, 1, 1));
    let jumps = m("jumps");
    assert_eq!((jumps.map_type, jumps.key_size, jumps.value_size, jumps.max_entries), (map_type::PROG_ARRAY, 4, 4, 8));
    assert_eq!(jumps.init_slots, vec![(1, "tail_a".to_string()), (5, "tail_b".to_string())]);

    // Global data.
    let ro = m(".rodata");
    assert_eq!((ro.map_type, ro.key_size, ro.value_size, ro.max_entries, ro.readonly), (map_type::ARRAY, 4, 24, 1, true));
    let mut want = [0u8; 24];
    want[0] = 7; // cfg_limit
    want[8] = 0xff; // cfg_mask
    want[16..24].copy_from_slice(b"len %d\n\0"); // tc_prog.msg at .rodata+0x10
    assert_eq!(ro.initial.as_deref(), Some(&want[..]));
    let data = m(".data");
    assert_eq!((data.value_size, data.readonly), (12, false));
    assert_eq!(data.initial.as_deref(), Some(&[1, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0][..]));
    let bss = m(".bss");
    assert_eq!(bss.initial.as_deref(), Some(&[0u8; 16][..]));
    let s11 = m(".rodata.str1.1");
    assert_eq!(s11.initial.as_deref(), Some(&b"literal %d\n\0"[..]));
    assert!(s11.readonly);

    // Relocations (llvm-objdump -dr): xdp slot 19 counts, 30 misses (.data+8),
    // 35 zeroed2 (.bss+0); .text slot 1 cfg_limit (.rodata+0), 15 cfg_mask (.rodata+8).
    assert_eq!(ld(&o, "prog_one", 5), (5, midx(&o, "counts"), 0));
    assert_eq!(ld(&o, "prog_one", 16), (6, midx(&o, ".data"), 8));
    assert_eq!(ld(&o, "prog_one", 21), (6, midx(&o, ".bss"), 0));
    assert_eq!(ld(&o, "prog_one", 27), (6, midx(&o, ".rodata"), 0));
    assert_eq!(ld(&o, "prog_one", 41), (6, midx(&o, ".rodata"), 8));
    // xdp slots 45 pairs, 56 hits (.data+0), 61 zeroed (.bss+8), 67 jumps.
    assert_eq!(ld(&o, "prog_two", 5), (5, midx(&o, "pairs"), 0));
    assert_eq!(ld(&o, "prog_two", 16), (6, midx(&o, ".data"), 0));
    assert_eq!(ld(&o, "prog_two", 21), (6, midx(&o, ".bss"), 8));
    assert_eq!(ld(&o, "prog_two", 27), (5, midx(&o, "jumps"), 0));
    // tc slot 2 "r1 = 0x10 ll" against the .rodata section symbol: offset 16.
    assert_eq!(ld(&o, "tc_prog", 2), (6, midx(&o, ".rodata"), 16));
    assert_eq!(ld(&o, "tc_prog", 7), (6, midx(&o, ".rodata.str1.1"), 0));
    assert_eq!(ld(&o, "tail_b", 4), (5, midx(&o, "scratch"), 0));

    // func_info: one per function, at its start in the program layout.
    let fi: Vec<u32> = p1.func_info.iter().map(|f| f.insn_off).collect();
    assert_eq!(fi, [0, 26, 37]);
    assert!(p1.func_info.iter().all(|f| f.type_id != 0));
    // line_info is sorted, and the first entry of each function points into it.
    let li = &p1.line_info;
    assert!(li.windows(2).all(|w| w[0].insn_off < w[1].insn_off));
    for (off, func) in [(0u32, "prog_one"), (26, "helper2"), (37, "mix")] {
        let first = li.iter().find(|l| l.insn_off >= off).unwrap();
        assert_eq!(first.insn_off, off, "line_info at the start of {func}");
        assert!(first.file.ends_with("multi.c"), "{}", first.file);
        let body_start = src_line("multi.c", &format!(" {func}("));
        assert!(first.line() >= body_start && first.line() <= body_start + 8, "{func}: line {}", first.line());
    }
    // helper2's `if (k > cfg_limit)` line appears in the remapped range 26..37.
    let if_line = src_line("multi.c", "if (k > cfg_limit)");
    assert!(li.iter().any(|l| (26..37).contains(&l.insn_off) && l.line() == if_line && l.source_line.contains("cfg_limit")));
    // The same .text function appended to two programs gets the same lines.
    let mix_lines = |p: &str, base: u32| -> Vec<(u32, u32)> {
        o.program(p).unwrap().line_info.iter().filter(|l| l.insn_off >= base).map(|l| (l.insn_off - base, l.line_col)).collect()
    };
    assert_eq!(mix_lines("prog_one", 37), mix_lines("prog_two", 33));

    assert!(check_against_llvm(&o, &path) > 100);
}

#[test]
fn legacy_maps_version_and_custom_data() {
    let Some(path) = compile("legacy") else { return };
    let o = Object::load(&path).unwrap();
    assert_eq!(o.license, "GPL");
    assert_eq!(o.kernel_version, 0x050a00);
    let h = &o.maps[o.map_index("legacy_hash").unwrap()];
    assert_eq!((h.map_type, h.key_size, h.value_size, h.max_entries, h.flags, h.origin), (1, 8, 16, 64, 1, MapOrigin::Legacy));
    let a = &o.maps[o.map_index("legacy_array").unwrap()];
    assert_eq!((a.map_type, a.key_size, a.value_size, a.max_entries, a.flags), (2, 4, 4, 3, 0));
    let c = &o.maps[o.map_index(".data.custom").unwrap()];
    assert_eq!(c.initial.as_deref(), Some(&[0x11, 0, 0, 0, 0x22, 0, 0, 0][..]));
    let kp = o.program("kp").unwrap();
    assert_eq!((kp.prog_type, kp.section.as_str()), (ProgType::Kprobe, "kprobe/do_sys_open"));
    assert_eq!(o.program("sock").unwrap().prog_type, ProgType::SocketFilter);
    assert!(check_against_llvm(&o, &path) > 20);
}

#[test]
fn function_references_and_same_section_calls() {
    let Some(path) = compile("callbacks") else { return };
    let o = Object::load(&path).unwrap();
    // local_fold is static (LOCAL FUNC in xdp): a subprogram only.
    let names: Vec<&str> = o.programs.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["loops"]);
    // llvm-objdump -dr: xdp slot 5 `r2 = 0x0 ll` R_BPF_64_64 .text (add_one, .text+0),
    // slot 11 `r2 = 0x38 ll` (add_two, .text+7), slot 17 `call 0x2` -> xdp slot 20.
    assert_eq!(
        subprogs(&o, "loops"),
        [
            sp("loops", 0, 20, "xdp", 0),
            sp("add_one", 20, 7, ".text", 0),
            sp("add_two", 27, 6, ".text", 7),
            sp("local_fold", 33, 5, "xdp", 20)
        ]
    );
    assert_eq!(ld(&o, "loops", 5), (4, 20 - 6, 0));
    assert_eq!(ld(&o, "loops", 11), (4, 27 - 12, 0));
    let c = o.program("loops").unwrap().insns[17];
    assert!(c.is_pseudo_call());
    assert_eq!(c.imm, 33 - 18);
    let fi: Vec<u32> = o.program("loops").unwrap().func_info.iter().map(|f| f.insn_off).collect();
    assert_eq!(fi, [0, 20, 27, 33]);
    check_against_llvm(&o, &path);
}

fn check_dir(dir: &Path, pattern: impl Fn(&str) -> bool) -> usize {
    let mut n = 0;
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).collect();
    files.sort();
    for f in files {
        if !pattern(f.file_name().unwrap().to_str().unwrap()) {
            continue;
        }
        let o = Object::load(&f).unwrap_or_else(|e| panic!("{e}"));
        assert!(!o.programs.is_empty(), "{}: no programs", f.display());
        if tool_ok("llvm-objdump-19") {
            check_against_llvm(&o, &f);
        }
        n += 1;
    }
    n
}

#[test]
fn bundled_objects_load() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../bpf/out");
    if !dir.is_dir() {
        eprintln!("SKIP: {} does not exist", dir.display());
        return;
    }
    let n = check_dir(&dir, |n| n.ends_with(".bpf.o"));
    eprintln!("loaded {n} bundled objects");
}

#[test]
fn libxdp1_objects_load() {
    let Some(dir) = libxdp_dir() else { return };
    let n = check_dir(&dir, |n| n.ends_with(".o"));
    assert!(n >= 10, "only {n} libxdp objects");
    // xdp-dispatcher: global .text functions prog0..prog9 + compat_test reached from
    // xdp_dispatcher through R_BPF_64_32 relocations (llvm-objdump -dr).
    let o = Object::load(dir.join("xdp-dispatcher.o")).unwrap();
    let d = o.program("xdp_dispatcher").unwrap();
    let names: Vec<&str> = d.subprogs.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names[0], "xdp_dispatcher");
    assert_eq!(names.len(), 12);
    assert!(names.contains(&"prog9") && names.contains(&"compat_test"));
    assert_eq!(d.func_info.len(), 12);
}

// ---- errors ----

fn bytes_of(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap()
}

/// (file offset of section data, size, section header offset) by name.
fn section(bytes: &[u8], name: &str) -> (usize, usize, usize) {
    let shoff = u64::from_le_bytes(bytes[0x28..0x30].try_into().unwrap()) as usize;
    let shnum = u16::from_le_bytes(bytes[0x3c..0x3e].try_into().unwrap()) as usize;
    let shstrndx = u16::from_le_bytes(bytes[0x3e..0x40].try_into().unwrap()) as usize;
    let sh = |i: usize| shoff + i * 64;
    let u64at = |o: usize| u64::from_le_bytes(bytes[o..o + 8].try_into().unwrap()) as usize;
    let strtab = u64at(sh(shstrndx) + 24);
    for i in 0..shnum {
        let n = u32::from_le_bytes(bytes[sh(i)..sh(i) + 4].try_into().unwrap()) as usize;
        let s = &bytes[strtab + n..];
        let s = &s[..s.iter().position(|&b| b == 0).unwrap()];
        if s == name.as_bytes() {
            return (u64at(sh(i) + 24), u64at(sh(i) + 32), sh(i));
        }
    }
    panic!("no section {name}");
}

/// The error of a bad object: the object's, or (when only one program is bad and the rest
/// of the object loads) that program's.
fn err(bytes: &[u8]) -> kops_object::LoadError {
    match Object::parse(bytes, "bad.o") {
        Ok(o) => match o.broken.as_slice() {
            [b] => {
                assert!(o.program(&b.name).is_none(), "broken program {} is also loaded", b.name);
                assert_eq!(b.error.file, "bad.o");
                b.error.clone()
            }
            _ => panic!("loaded a bad object ({} broken programs)", o.broken.len()),
        },
        Err(e) => e,
    }
}

#[test]
fn bad_inputs_give_located_errors() {
    let Some(path) = compile("multi") else { return };
    let good = bytes_of(&path);

    let e = err(b"hello world");
    assert_eq!(e.kind, LoadErrorKind::NotElf);
    assert!(e.to_string().starts_with("bad.o: "), "{e}");

    let e = err(&good[..100]);
    assert!(matches!(e.kind, LoadErrorKind::Elf(_)), "{e}");

    let mut b = good.clone();
    b[18] = 62; // e_machine = EM_X86_64
    assert_eq!(err(&b).kind, LoadErrorKind::NotBpf(62));

    // `xdp` section size 0x248 -> 0x244.
    let (_, size, shdr) = section(&good, "xdp");
    let mut b = good.clone();
    b[shdr + 32..shdr + 40].copy_from_slice(&(size as u64 - 4).to_le_bytes());
    let e = err(&b);
    assert_eq!(e.kind, LoadErrorKind::SectionSize(size as u64 - 4));
    assert_eq!(e.section.as_deref(), Some("xdp"));

    // tc_prog's last instruction (tc slot 14, exit) becomes an ld_imm64 opcode.
    let (tc, _, _) = section(&good, "tc");
    let mut b = good.clone();
    b[tc + 14 * 8] = 0x18;
    let e = err(&b);
    assert_eq!(e.kind, LoadErrorKind::LdImm64Truncated);
    assert_eq!((e.section.as_deref(), e.insn), (Some("tc"), Some(14)));
    assert!(e.to_string().contains("section 'tc'") && e.to_string().contains("insn 14"), "{e}");

    // tail_b: xdp slot 11 "if r1 == 0x0 goto +0x1" -> goto +100 (program insn 9).
    let (xdp, _, _) = section(&good, "xdp");
    let mut b = good.clone();
    b[xdp + 11 * 8 + 2] = 100;
    let e = err(&b);
    assert!(matches!(e.kind, LoadErrorKind::JumpOutOfRange { target: 110, start: 0, end: 12 }), "{e}");
    assert_eq!((e.program.as_deref(), e.insn), (Some("tail_b"), Some(9)));
    assert!(e.to_string().contains("program 'tail_b'"), "{e}");

    // .relxdp entry 0 (r_offset 0x30, scratch): symbol index -> 999.
    let (rel, _, _) = section(&good, ".relxdp");
    let mut b = good.clone();
    b[rel + 12..rel + 16].copy_from_slice(&999u32.to_le_bytes());
    let e = err(&b);
    assert_eq!(e.kind, LoadErrorKind::MissingSymbol(999));
    assert_eq!((e.program.as_deref(), e.insn), (Some("tail_b"), Some(4)));

    // Same entry, r_offset -> 0x70 (prog_one's first insn, a mov).
    let mut b = good.clone();
    b[rel..rel + 8].copy_from_slice(&0x70u64.to_le_bytes());
    let e = err(&b);
    assert_eq!(e.kind, LoadErrorKind::RelocNotLdImm64OrCall(0xbf));
    assert_eq!((e.program.as_deref(), e.insn), (Some("prog_one"), Some(0)));

    // Corrupted BTF magic.
    let (btf, _, _) = section(&good, ".BTF");
    let mut b = good.clone();
    b[btf] = 0;
    let e = err(&b);
    assert!(matches!(e.kind, LoadErrorKind::Btf(_)), "{e}");
    assert_eq!(e.section.as_deref(), Some(".BTF"));
}

#[test]
fn extern_symbol_is_kept_as_a_reference() {
    let Some(path) = compile("extern") else { return };
    let o = Object::load(&path).unwrap();
    assert_eq!(o.externs.len(), 1);
    let e = &o.externs[0];
    assert_eq!((e.name.as_str(), e.kind, e.weak), ("LINUX_KERNEL_VERSION", kops_object::ExternKind::Kconfig, false));
    let p = o.program("uses_kconfig").unwrap();
    let (pi, slot) = e.sites[0];
    assert_eq!(pi, 0);
    // clang's form stays: ld_imm64 with src 0, imm 0.
    assert_eq!(ld(&o, "uses_kconfig", slot), (0, 0, 0));
    assert!(p.insns[slot].is_ld_imm64());
    assert!(o.needs_relocation());
}

/// The committed CO-RE/extern test object of the kernel crate (clang-19 output).
#[test]
fn core_relocations_and_externs_load() {
    use kops_object::ExternKind;
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../kernel/tests/data/core_extern.bpf.o");
    let o = Object::load(&path).unwrap();
    // llvm-objdump-19 -dr: ten CO-RE records (eight <byte_off> of data/data_end of the
    // swapped local xdp_md, in three subprograms and core_ct; core_exists's two).
    assert_eq!(o.core_relos, 10);
    let ex: Vec<(&str, ExternKind, bool, usize)> = o.externs.iter().map(|e| (e.name.as_str(), e.kind, e.weak, e.sites.len())).collect();
    assert_eq!(
        ex,
        vec![
            ("LINUX_KERNEL_VERSION", ExternKind::Kconfig, false, 1),
            ("CONFIG_KOPS_NO_SUCH_OPTION", ExternKind::Kconfig, true, 1),
            ("bpf_dynptr_from_xdp", ExternKind::Kfunc, false, 1),
            ("bpf_dynptr_slice", ExternKind::Kfunc, false, 3),
            ("bpf_dynptr_size", ExternKind::Kfunc, false, 1),
            ("bpf_cast_to_kern_ctx", ExternKind::Kfunc, false, 1),
            ("bpf_xdp_ct_lookup", ExternKind::Kfunc, false, 1),
            ("bpf_ct_release", ExternKind::Kfunc, false, 1),
            // `&kfunc` (ld_imm64) and the call: a kfunc either way, from its BTF FUNC.
            ("bpf_kops_no_such_kfunc", ExternKind::Kfunc, true, 2),
            // core_skb is in section tc, after the xdp section.
            ("bpf_dynptr_from_skb", ExternKind::Kfunc, false, 1),
        ]
    );
    // Kfunc calls: src_reg 2, imm 0 until the kernel layer gives the BTF id.
    for e in &o.externs[2..] {
        for &(pi, slot) in &e.sites {
            let i = o.programs[pi].insns[slot];
            if i.is_ld_imm64() {
                assert_eq!((i.src, i.imm), (0, 0), "{}", e.name);
                continue;
            }
            assert!(i.is_call() && i.src == kops_isa::op::PSEUDO_KFUNC_CALL && i.imm == 0, "{i:?}");
            assert_eq!(o.extern_at(pi, slot).map(|x| x.name.as_str()), Some(e.name.as_str()));
        }
    }
    let sk = o.programs.iter().position(|p| p.name == "core_skb").unwrap();
    assert_eq!(o.externs[9].sites, [(sk, o.externs[9].sites[0].1)]);
    assert_eq!(o.externs[3].sites.iter().filter(|s| s.0 == sk).count(), 1);
    // Our layout is breadth-first: core_fields, first, second, third.
    let names: Vec<String> = o.program("core_fields").unwrap().subprogs.iter().map(|s| s.name.clone()).collect();
    assert_eq!(names, ["core_fields", "first", "second", "third"]);
    // A plain re-serialization keeps the externs (the writer restores clang's encoding).
    let bytes = std::fs::read(&path).unwrap();
    let back = Object::parse(&kops_object::write::rewrite_functions(&bytes, &[]).unwrap(), "back").unwrap();
    assert_eq!(back.externs, o.externs);
    assert_eq!(back.core_relos, 10);
}

/// BTF `__array(values, struct {...})` gives the inner template of array and hash of
/// maps; `values` initializers name the slots' maps (hash of maps: the key).
#[test]
fn map_in_map_inner_templates() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../vm/tests/data/rt_mapkinds.bpf.o");
    let o = Object::load(&path).unwrap();
    let oa = &o.maps[o.map_index("outer_arr").unwrap()];
    assert_eq!((oa.map_type, oa.key_size, oa.value_size, oa.max_entries), (map_type::ARRAY_OF_MAPS, 4, 4, 3));
    assert_eq!(oa.init_slots, vec![(0, "arr_a".to_string()), (1, "arr_b".to_string())]);
    let i = oa.inner.as_deref().expect("inner template");
    assert_eq!((i.name.as_str(), i.map_type, i.key_size, i.value_size, i.max_entries), ("outer_arr.inner", 2, 4, 8, 4));
    let oh = &o.maps[o.map_index("outer_hash").unwrap()];
    assert_eq!(oh.init_slots, vec![(5, "hash_a".to_string())]);
    let i = oh.inner.as_deref().expect("inner template");
    assert_eq!((i.map_type, i.key_size, i.value_size, i.max_entries), (map_type::HASH, 4, 4, 4));
    let r = &o.maps[o.map_index("routes").unwrap()];
    assert_eq!((r.map_type, r.key_size, r.value_size, r.flags), (map_type::LPM_TRIE, 8, 4, 1));
    assert!(o.maps.iter().filter(|m| m.name != "outer_arr" && m.name != "outer_hash").all(|m| m.inner.is_none()));
    assert_eq!(map_type::describe(11), "lpm_trie (11)");
    assert_eq!(map_type::describe(99), "unknown map type 99");
}

#[test]
fn legacy_inner_map_idx() {
    // Built from crates/vm/tests/data/rt_legacy_mim.bpf.c (committed with its source).
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../vm/tests/data/rt_legacy_mim.bpf.o");
    let o = Object::load(&path).unwrap();
    let outer = &o.maps[o.map_index("outer").unwrap()];
    let i = outer.inner.as_deref().expect("inner template from inner_map_idx");
    assert_eq!((i.name.as_str(), i.map_type, i.key_size, i.value_size, i.max_entries), ("outer.inner", 1, 2, 4, 16));
    // An index naming the map itself is an error that names the map.
    let mut b = std::fs::read(&path).unwrap();
    let (off, _, _) = section(&b, "maps");
    b[off + 28 + 20..off + 28 + 24].copy_from_slice(&1u32.to_le_bytes());
    let e = err(&b).to_string();
    assert!(e.contains("legacy map 'outer': inner_map_idx 1"), "{e}");
}
