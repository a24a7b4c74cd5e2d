//! ELF writer: round-trips through `write::rewrite_functions`, read back by our loader
//! and cross-checked against llvm-objdump-19 / llvm-readelf-19.

mod common;

use std::path::{Path, PathBuf};

use common::*;
use kops_isa::Insn;
use kops_object::write::{edits_from_program, rewrite_functions, FunctionEdit, WriteError};
use kops_object::{Object, Program};

fn corpus() -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = ["multi", "legacy", "callbacks"].iter().filter_map(|n| compile(n)).collect();
    let bundled = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../bpf/out");
    if let Ok(rd) = std::fs::read_dir(&bundled) {
        let mut b: Vec<PathBuf> = rd.map(|e| e.unwrap().path()).filter(|p| p.to_string_lossy().ends_with(".bpf.o")).collect();
        b.sort();
        v.extend(b);
    }
    let xdp = std::env::var_os("KOPS_LIBXDP_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| std::env::temp_dir().join("kops-libxdp1"))
        .join("x/usr/lib/x86_64-linux-gnu/bpf");
    if let Ok(rd) = std::fs::read_dir(&xdp) {
        let mut b: Vec<PathBuf> = rd.map(|e| e.unwrap().path()).filter(|p| p.extension().is_some_and(|x| x == "o")).collect();
        b.sort();
        v.extend(b);
    } else {
        eprintln!("note: libxdp1 objects not cached at {} (the loader test fetches them)", xdp.display());
    }
    v
}

fn save(bytes: &[u8], name: &str) -> PathBuf {
    let p = tmp_dir("w").join(name);
    std::fs::write(&p, bytes).unwrap();
    p
}

fn same_programs(a: &Object, b: &Object, what: &str) {
    assert_eq!(a.programs.len(), b.programs.len(), "{what}");
    for (x, y) in a.programs.iter().zip(&b.programs) {
        assert_eq!(x.name, y.name, "{what}");
        assert_eq!(x.section, y.section, "{what}");
        assert_eq!(x.insns, y.insns, "{what}: {}", x.name);
        assert_eq!(x.subprogs, y.subprogs, "{what}: {}", x.name);
        assert_eq!(x.func_info, y.func_info, "{what}: {}", x.name);
        assert_eq!(x.line_info, y.line_info, "{what}: {}", x.name);
    }
    assert_eq!(a.maps, b.maps, "{what}");
    assert_eq!(a.license, b.license);
    assert_eq!(a.btf, b.btf);
}

#[test]
fn unchanged_round_trip() {
    let files = corpus();
    if files.is_empty() {
        return;
    }
    for f in &files {
        let orig = std::fs::read(f).unwrap();
        let a = Object::parse(&orig, &f.display().to_string()).unwrap();
        let out = rewrite_functions(&orig, &[]).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
        let p = save(&out, &format!("same-{}", f.file_name().unwrap().to_string_lossy()));
        let b = Object::load(&p).unwrap_or_else(|e| panic!("{e}"));
        same_programs(&a, &b, &f.display().to_string());
        check_against_llvm(&b, &p);
    }
}

/// Inserts a no-op (`goto +0`, which reads no register, so the kernel verifier accepts the
/// result too) after the first instruction of every function of `p`, fixing jumps and
/// calls by hand. Returns (new insns, old_to_new).
fn grow(p: &Program) -> (Vec<Insn>, Vec<usize>) {
    let nop = Insn::ja(0);
    let mut map = vec![0usize; p.insns.len() + 1];
    let mut n = 0;
    for sp in &p.subprogs {
        let first = if p.insns[sp.start].is_ld_imm64() { 2 } else { 1 };
        for k in 0..sp.len {
            if k == first {
                n += 1; // the inserted slot
            }
            map[sp.start + k] = n;
            n += 1;
        }
        if first >= sp.len {
            n += 1;
        }
    }
    map[p.insns.len()] = n;
    let mut out = vec![nop; n];
    // Second halves of ld_imm64, walking each function from its start.
    let mut second = vec![false; p.insns.len()];
    for sp in &p.subprogs {
        let mut j = sp.start;
        while j < sp.start + sp.len {
            if p.insns[j].is_ld_imm64() {
                second[j + 1] = true;
                j += 2;
            } else {
                j += 1;
            }
        }
    }
    for (pc, insn) in p.insns.iter().enumerate() {
        let mut x = *insn;
        let np = map[pc];
        if !second[pc] {
            if let Some(t) = insn.target(pc) {
                let rel = map[t as usize] as i64 - np as i64 - 1;
                if insn.is_pseudo_call() || insn.code == 0x06 {
                    x.imm = rel as i32;
                } else {
                    x.off = rel as i16;
                }
            } else if insn.is_ld_imm64() && insn.src == 4 {
                x.imm = (map[(pc as i64 + 1 + insn.imm as i64) as usize] as i64 - np as i64 - 1) as i32;
            }
        }
        out[np] = x;
    }
    (out, map)
}

fn grow_edits(o: &Object, only: Option<&str>) -> Vec<FunctionEdit> {
    let mut edits = Vec::new();
    for p in &o.programs {
        if only.is_some_and(|n| n != p.name) {
            continue;
        }
        let (insns, map) = grow(p);
        edits.extend(edits_from_program(p, &insns, &map).unwrap());
    }
    edits
}

#[test]
fn grown_functions_read_back() {
    for f in corpus() {
        let what = f.display().to_string();
        let orig = std::fs::read(&f).unwrap();
        let a = Object::parse(&orig, &what).unwrap();
        let out = rewrite_functions(&orig, &grow_edits(&a, None)).unwrap_or_else(|e| panic!("{what}: {e}"));
        let path = save(&out, &format!("grow-{}", f.file_name().unwrap().to_string_lossy()));
        let b = Object::load(&path).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(a.maps, b.maps, "{what}");
        for (x, y) in a.programs.iter().zip(&b.programs) {
            let (want, map) = grow(x);
            assert_eq!(y.insns, want, "{what}: {}", x.name);
            let subs: Vec<(String, usize, usize)> = x.subprogs.iter().map(|s| (s.name.clone(), map[s.start], s.len + 1)).collect();
            let got: Vec<(String, usize, usize)> = y.subprogs.iter().map(|s| (s.name.clone(), s.start, s.len)).collect();
            assert_eq!(got, subs, "{what}: {}", x.name);
            let fi: Vec<(u32, u32)> = x.func_info.iter().map(|f| (map[f.insn_off as usize] as u32, f.type_id)).collect();
            let gfi: Vec<(u32, u32)> = y.func_info.iter().map(|f| (f.insn_off, f.type_id)).collect();
            assert_eq!(gfi, fi, "{what}: {}", x.name);
            let li: Vec<(u32, u32, String)> = x.line_info.iter().map(|l| (map[l.insn_off as usize] as u32, l.line_col, l.source_line.clone())).collect();
            let gli: Vec<(u32, u32, String)> = y.line_info.iter().map(|l| (l.insn_off, l.line_col, l.source_line.clone())).collect();
            assert_eq!(gli, li, "{what}: {}", x.name);
        }
        check_against_llvm(&b, &path);

        // Shrink back: drop the inserted slots again.
        let mut edits = Vec::new();
        for p in &b.programs {
            let mut keep = Vec::new();
            let mut map = Vec::new();
            for sp in &p.subprogs {
                let first = if p.insns[sp.start].is_ld_imm64() { 2 } else { 1 };
                for k in 0..sp.len {
                    map.push(keep.len());
                    if k != first {
                        keep.push(p.insns[sp.start + k]);
                    }
                }
            }
            map.push(keep.len());
            // Jumps: recompute from the grown layout (inserted slots are skipped).
            let mut fixed = keep.clone();
            for sp in &p.subprogs {
                let first = if p.insns[sp.start].is_ld_imm64() { 2 } else { 1 };
                let mut k = 0;
                while k < sp.len {
                    let pc = sp.start + k;
                    let insn = p.insns[pc];
                    if k != first && insn.is_jump() {
                        let t = insn.target(pc).unwrap();
                        let rel = map[t as usize] as i64 - map[pc] as i64 - 1;
                        if insn.code == 0x06 {
                            fixed[map[pc]].imm = rel as i32;
                        } else {
                            fixed[map[pc]].off = rel as i16;
                        }
                    }
                    k += if insn.is_ld_imm64() && k != first { 2 } else { 1 };
                }
            }
            edits.extend(edits_from_program(p, &fixed, &map).unwrap());
        }
        let back = rewrite_functions(&out, &edits).unwrap_or_else(|e| panic!("{what}: shrink: {e}"));
        let path = save(&back, &format!("shrink-{}", f.file_name().unwrap().to_string_lossy()));
        let c = Object::load(&path).unwrap_or_else(|e| panic!("{e}"));
        same_programs(&a, &c, &format!("{what} (grown and shrunk)"));
        check_against_llvm(&c, &path);
    }
}

#[test]
fn editing_one_program_retargets_calls_from_the_others() {
    let Some(f) = compile("multi") else { return };
    let orig = std::fs::read(&f).unwrap();
    let a = Object::parse(&orig, "multi.o").unwrap();
    // Only prog_one (and the .text functions it reaches: helper2, mix) change.
    let out = rewrite_functions(&orig, &grow_edits(&a, Some("prog_one"))).unwrap();
    let path = save(&out, "one.o");
    let b = Object::load(&path).unwrap();
    let (want, _) = grow(a.program("prog_one").unwrap());
    assert_eq!(b.program("prog_one").unwrap().insns, want);
    // prog_two's own code is unchanged; its call (R_BPF_64_32 against the .text section
    // symbol, imm = slot of mix - 1) now reaches the grown mix, which starts at .text slot
    // 12 (helper2 grew by one).
    let p2 = b.program("prog_two").unwrap();
    let a2 = a.program("prog_two").unwrap();
    assert_eq!(p2.insns[..33], a2.insns[..33]);
    assert_eq!(p2.subprogs[1].sec_start, 12);
    assert_eq!(p2.subprogs[1].len, 10);
    let p1 = b.program("prog_one").unwrap();
    let mix1 = p1.subprogs.iter().find(|s| s.name == "mix").unwrap();
    assert_eq!(p2.insns[33..], p1.insns[mix1.start..mix1.start + mix1.len]);
    // The raw .text call slot in prog_two's section keeps imm relative to its symbol:
    // llvm agrees on every slot.
    check_against_llvm(&b, &path);
}

#[test]
fn bad_edits_are_rejected() {
    let Some(f) = compile("multi") else { return };
    let orig = std::fs::read(&f).unwrap();
    let a = Object::parse(&orig, "multi.o").unwrap();
    let p = a.program("prog_one").unwrap();
    let (insns, map) = grow(p);
    let mut edits = edits_from_program(p, &insns, &map).unwrap();
    // Dropping the map reference at prog_one slot 5 (ld_imm64 counts).
    let mut e = edits[0].clone();
    e.insns[6] = Insn::mov64_reg(0, 0);
    e.insns[7] = Insn::mov64_reg(0, 0);
    let err = rewrite_functions(&orig, &[e]).unwrap_err();
    assert!(matches!(err, WriteError::BadEdit { ref section, start: 14, .. } if section == "xdp"), "{err}");
    // A map that does not end at the new length.
    let mut e = edits[0].clone();
    e.old_to_new.pop();
    assert!(rewrite_functions(&orig, &[e]).is_err());
    // Conflicting edits of the same function.
    let mut e2 = edits[1].clone();
    e2.insns[3] = Insn::mov64_reg(1, 1);
    edits.push(e2);
    assert!(matches!(rewrite_functions(&orig, &edits), Err(WriteError::BadEdit { .. })));
    // Not an object.
    assert!(matches!(rewrite_functions(b"junk", &[]), Err(WriteError::Elf(_))));
}

#[test]
fn corrupted_alignment_is_an_error_not_an_allocation() {
    let Some(f) = compile("multi") else { return };
    let mut b = std::fs::read(&f).unwrap();
    // Section header 2 (.text): sh_addralign at +48.
    let shoff = u64::from_le_bytes(b[0x28..0x30].try_into().unwrap()) as usize;
    let at = shoff + 2 * 64 + 48;
    b[at..at + 8].copy_from_slice(&(1u64 << 40).to_le_bytes());
    assert!(matches!(rewrite_functions(&b, &[]), Err(WriteError::Elf(_))));
    // The loader does not care about alignment.
    assert!(Object::parse(&b, "x.o").is_ok());
}

/// libbpf and the running kernel's verifier accept the grown object (func_info and
/// line_info included). Needs root, bpftool and a mounted bpffs; skipped otherwise.
#[test]
fn grown_object_passes_libbpf_and_the_verifier() {
    let Some(f) = compile("multi") else { return };
    let is_root = std::process::Command::new("id").arg("-u").output().map(|o| o.stdout.starts_with(b"0")).unwrap_or(false);
    if !is_root || !tool_ok("bpftool") || !Path::new("/sys/fs/bpf").is_dir() {
        eprintln!("SKIP: needs root, bpftool and /sys/fs/bpf");
        return;
    }
    let orig = std::fs::read(&f).unwrap();
    let a = Object::parse(&orig, "multi.o").unwrap();
    let out = rewrite_functions(&orig, &grow_edits(&a, None)).unwrap();
    let path = save(&out, "kernel-grow-multi.o");
    let pin = PathBuf::from(format!("/sys/fs/bpf/kops-object-test-{}", std::process::id()));
    // `scratch` has `pinning = LIBBPF_PIN_BY_NAME`: libbpf pins it at /sys/fs/bpf/scratch.
    let by_name = Path::new("/sys/fs/bpf/scratch");
    let existed = by_name.exists();
    let o = std::process::Command::new("bpftool").arg("prog").arg("loadall").arg(&path).arg(&pin).output().unwrap();
    let _ = std::fs::remove_dir_all(&pin);
    if !existed {
        let _ = std::fs::remove_file(by_name);
    }
    let log = String::from_utf8_lossy(&o.stderr);
    if !o.status.success() && (log.contains("Operation not permitted") || log.contains("permission")) {
        eprintln!("SKIP: kernel refused bpf(): {log}");
        return;
    }
    assert!(o.status.success(), "bpftool prog loadall failed:\n{log}");
}
