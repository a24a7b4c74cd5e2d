//! Test helpers: compiling the C sources with clang-19 and reading llvm-objdump-19 /
//! llvm-readelf-19 output, which is the independent reference for the loader tests.
#![allow(dead_code)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use kops_object::Object;

mod fixtures;
#[allow(unused_imports)]
pub use fixtures::{clang_bpf, libxdp_dir};

pub fn tool_ok(tool: &str) -> bool {
    Command::new(tool).arg("--version").output().map(|o| o.status.success()).unwrap_or(false)
}

pub fn tmp_dir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("kops-object-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Compiles `tests/c/<name>.c` with clang-19; None (and a printed reason) if clang or the
/// llvm tools are missing.
pub fn compile(name: &str) -> Option<PathBuf> {
    for t in ["clang-19", "llvm-objdump-19", "llvm-readelf-19"] {
        if !tool_ok(t) {
            eprintln!("SKIP: {t} not found, cannot build tests/c/{name}.c");
            return None;
        }
    }
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/c").join(format!("{name}.c"));
    let out = tmp_dir("c").join(format!("{name}.o"));
    let st = clang_bpf(&src, &out).status().expect("run clang-19");
    assert!(st.success(), "clang-19 failed on {}", src.display());
    Some(out)
}

fn run(tool: &str, args: &[&str], file: &Path) -> String {
    let o = Command::new(tool).args(args).arg(file).output().expect("run llvm tool");
    assert!(o.status.success(), "{tool} failed on {}: {}", file.display(), String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[derive(Debug, Clone)]
pub struct RSym {
    pub name: String,
    pub value: u64,
    pub size: u64,
    pub typ: String,
    pub bind: String,
    /// Section name, None for UND/ABS.
    pub section: Option<String>,
}

#[derive(Debug, Clone)]
pub struct RSec {
    pub name: String,
    pub typ: String,
    pub exec: bool,
}

/// What llvm-readelf-19 and llvm-objdump-19 say about an object.
#[derive(Debug, Default)]
pub struct Llvm {
    pub sections: Vec<RSec>,
    pub symbols: Vec<RSym>,
    /// Per section: slot -> 8 raw bytes.
    pub slots: HashMap<String, HashMap<usize, [u8; 8]>>,
    /// Per section: byte offset -> (relocation type, symbol name).
    pub relocs: HashMap<String, HashMap<u64, (String, String)>>,
}

impl Llvm {
    pub fn read(file: &Path) -> Llvm {
        let mut l = Llvm::default();
        let re = run("llvm-readelf-19", &["-sS", "--wide"], file);
        for line in re.lines() {
            let t = line.trim_start();
            if t.starts_with('[') && t.contains(']') && !t.starts_with("[Nr]") {
                let rest = &t[t.find(']').unwrap() + 1..];
                let tok: Vec<&str> = rest.split_whitespace().collect();
                if tok.len() < 8 {
                    // The NULL section has no name.
                    l.sections.push(RSec { name: String::new(), typ: "NULL".into(), exec: false });
                    continue;
                }
                let exec = tok.len() == 10 && tok[6].contains('X');
                l.sections.push(RSec { name: tok[0].to_string(), typ: tok[1].to_string(), exec });
            }
        }
        for line in re.lines() {
            let tok: Vec<&str> = line.split_whitespace().collect();
            if tok.len() >= 7 && tok[0].ends_with(':') && tok[0][..tok[0].len() - 1].parse::<u32>().is_ok() {
                let value = u64::from_str_radix(tok[1], 16).unwrap();
                let size = tok[2].parse::<u64>().or_else(|_| u64::from_str_radix(tok[2].trim_start_matches("0x"), 16)).unwrap();
                let section = tok[6].parse::<usize>().ok().map(|i| l.sections[i].name.clone());
                let typ = tok[3].to_string();
                let name = match tok.get(7) {
                    Some(n) => n.to_string(),
                    None if typ == "SECTION" => section.clone().unwrap_or_default(),
                    None => String::new(),
                };
                l.symbols.push(RSym { name, value, size, typ, bind: tok[4].to_string(), section });
            }
        }
        let od = run("llvm-objdump-19", &["-dr"], file);
        let mut cur = String::new();
        for line in od.lines() {
            if let Some(s) = line.strip_prefix("Disassembly of section ") {
                cur = s.trim_end_matches(':').to_string();
                continue;
            }
            let t = line.trim_start();
            if let Some((off, rest)) = t.split_once(":  R_BPF") {
                let off = u64::from_str_radix(off.trim(), 16).unwrap();
                let mut it = rest.split_whitespace();
                let ty = format!("R_BPF{}", it.next().unwrap());
                let sym = it.next().unwrap_or("").to_string();
                l.relocs.entry(cur.clone()).or_default().insert(off, (ty, sym));
                continue;
            }
            // "      12:\tb4 00 ...\tw0 = 0x2"
            let mut parts = line.split('\t');
            let (Some(idx), Some(bytes)) = (parts.next(), parts.next()) else { continue };
            let Some(idx) = idx.trim().strip_suffix(':') else { continue };
            let Ok(idx) = idx.parse::<usize>() else { continue };
            let bs: Vec<u8> = bytes.split_whitespace().map(|b| u8::from_str_radix(b, 16).unwrap()).collect();
            let m = l.slots.entry(cur.clone()).or_default();
            for (k, c) in bs.chunks(8).enumerate() {
                m.insert(idx + k, c.try_into().unwrap());
            }
        }
        l
    }

    pub fn sym(&self, name: &str) -> &RSym {
        self.symbols.iter().find(|s| s.name == name).unwrap_or_else(|| panic!("no symbol {name}"))
    }

    pub fn is_exec(&self, sec: &str) -> bool {
        self.sections.iter().any(|s| s.name == sec && s.exec)
    }
}

fn imm_of(b: &[u8; 8]) -> i32 {
    i32::from_le_bytes([b[4], b[5], b[6], b[7]])
}

fn is_global_data(name: &str) -> bool {
    [".data", ".rodata", ".bss"].iter().any(|p| name == *p || name.starts_with(&format!("{p}.")))
}

/// Checks every program of `obj` slot by slot against llvm's view of `file`, using
/// libbpf's relocation formulas. Returns the number of slots checked.
pub fn check_against_llvm(obj: &Object, file: &Path) -> usize {
    let l = Llvm::read(file);
    let f = file.display();
    // Programs: one per non-static FUNC symbol in each executable section but .text.
    let mut want: Vec<(String, String)> = l
        .symbols
        .iter()
        .filter(|s| s.typ == "FUNC" && s.bind != "LOCAL" && s.section.as_deref().is_some_and(|x| x != ".text" && l.is_exec(x)))
        .map(|s| (s.section.clone().unwrap(), s.name.clone()))
        .collect();
    want.sort();
    let mut got: Vec<(String, String)> = obj.programs.iter().map(|p| (p.section.clone(), p.name.clone())).collect();
    got.sort();
    assert_eq!(got, want, "{f}: program list");
    let mut checked = 0;
    for p in &obj.programs {
        assert_eq!(p.subprogs[0].start, 0);
        assert_eq!(p.subprogs[0].name, p.name);
        let mut end = 0;
        for sp in &p.subprogs {
            assert_eq!(sp.start, end, "{f}: {}: subprogs are contiguous", p.name);
            end += sp.len;
            let s = l.sym(&sp.name);
            assert_eq!(s.section.as_deref(), Some(sp.section.as_str()), "{f}: {}", sp.name);
            assert_eq!(s.value / 8, sp.sec_start as u64, "{f}: {} start", sp.name);
            if s.size > 0 {
                assert_eq!(s.size / 8, sp.len as u64, "{f}: {} len", sp.name);
            }
        }
        assert_eq!(end, p.insns.len(), "{f}: {}: subprogs cover the program", p.name);
        let target_ok = |pc: usize, imm: i32, sec: &str, t: i64| {
            let np = pc as i64 + 1 + imm as i64;
            let sp = p.subprog_at(np as usize).unwrap_or_else(|| panic!("{f}: {} insn {pc}: target {np} outside", p.name));
            assert_eq!(sp.section, sec, "{f}: {} insn {pc}: target section", p.name);
            assert_eq!((sp.sec_start + (np as usize - sp.start)) as i64, t, "{f}: {} insn {pc}: target slot", p.name);
        };
        for sp in &p.subprogs {
            let slots = &l.slots[&sp.section];
            let relocs = l.relocs.get(&sp.section);
            let mut j = 0;
            while j < sp.len {
                let pc = sp.start + j;
                let s = sp.sec_start + j;
                let raw = slots[&s];
                let ours = p.insns[pc];
                let rel = relocs.and_then(|r| r.get(&(s as u64 * 8)));
                let wide = raw[0] == 0x18;
                checked += 1;
                match rel {
                    Some((ty, sym)) if ty == "R_BPF_64_32" => {
                        let y = l.sym(sym);
                        let t = (y.value / 8) as i64 + imm_of(&raw) as i64 + 1;
                        assert!(ours.is_pseudo_call(), "{f}: {} insn {pc}", p.name);
                        target_ok(pc, ours.imm, y.section.as_deref().unwrap(), t);
                    }
                    Some((ty, sym)) => {
                        assert_eq!(ty, "R_BPF_64_64");
                        assert!(wide && ours.is_ld_imm64(), "{f}: {} insn {pc}: ld_imm64", p.name);
                        let y = l.sym(sym);
                        let ysec = y.section.clone().unwrap();
                        if ysec == ".maps" || ysec == "maps" {
                            assert_eq!(ours.src, 5, "{f}: {} insn {pc}: map ref", p.name);
                            assert_eq!(obj.maps[ours.imm as usize].name, y.name, "{f}: {} insn {pc}", p.name);
                        } else if is_global_data(&ysec) {
                            assert_eq!(ours.src, 6, "{f}: {} insn {pc}: map value ref", p.name);
                            assert_eq!(obj.maps[ours.imm as usize].name, ysec, "{f}: {} insn {pc}", p.name);
                            assert_eq!(p.insns[pc + 1].imm as i64, y.value as i64 + imm_of(&raw) as i64, "{f}: {} insn {pc}: offset", p.name);
                        } else {
                            assert!(l.is_exec(&ysec), "{f}: unexpected reloc target {ysec}");
                            assert_eq!(ours.src, 4);
                            target_ok(pc, ours.imm, &ysec, (y.value as i64 + imm_of(&raw) as i64) / 8);
                        }
                    }
                    None if raw[0] == 0x85 && raw[1] >> 4 == 1 => {
                        target_ok(pc, ours.imm, &sp.section, s as i64 + 1 + imm_of(&raw) as i64);
                    }
                    None => {
                        assert_eq!(ours.to_bytes(), raw, "{f}: {} insn {pc} (section slot {s})", p.name);
                        if wide {
                            assert_eq!(p.insns[pc + 1].to_bytes(), slots[&(s + 1)], "{f}: {} insn {}", p.name, pc + 1);
                        }
                    }
                }
                j += if wide { 2 } else { 1 };
            }
        }
    }
    checked
}
