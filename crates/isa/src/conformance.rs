//! Parser for bpf_conformance `.data` test files.
//!
//! Sections start with `-- NAME`; `#` starts a comment in every section. Known sections:
//! `asm` (assembler text, see [`crate::asm`]), `raw` (one 64-bit hex word per instruction,
//! the slot read as a little-endian u64: opcode in the low byte), `mem` (hex bytes),
//! `result` (expected r0, hex `0x...` or decimal), `error` (expected error text).
//! Any other section (`-- c`, `-- no register offset`, ...) is informational and ignored.

use crate::asm::{assemble, AsmError};
use crate::Insn;
use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TestFile {
    /// The program to run: assembled from `-- asm`, or `-- raw` when there is no asm.
    pub insns: Vec<Insn>,
    /// The `-- asm` text, if present.
    pub asm: Option<String>,
    /// The `-- raw` program, if present.
    pub raw: Option<Vec<Insn>>,
    /// Input memory (empty when the file has no `-- mem`).
    pub mem: Vec<u8>,
    /// Expected r0.
    pub result: Option<u64>,
    /// Expected error text.
    pub error: Option<String>,
}

/// A parse error naming the 1-based line in the `.data` file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    pub line: usize,
    pub msg: String,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}", self.line, self.msg)
    }
}

impl std::error::Error for ParseError {}

impl TestFile {
    pub fn parse(text: &str) -> Result<TestFile, ParseError> {
        // (section name, first line number of its body, body lines)
        let mut sections: Vec<(String, usize, Vec<&str>)> = Vec::new();
        for (i, line) in text.lines().enumerate() {
            if let Some(name) = line.strip_prefix("-- ") {
                sections.push((name.trim().to_string(), i + 2, Vec::new()));
            } else if let Some(s) = sections.last_mut() {
                s.2.push(line);
            }
            // Lines before the first section are the licence header.
        }

        let mut t = TestFile::default();
        let mut seen = Vec::new();
        for (name, first, body) in &sections {
            if matches!(name.as_str(), "asm" | "raw" | "mem" | "result" | "error") {
                if seen.contains(name) {
                    return Err(ParseError { line: first - 1, msg: format!("duplicate section `-- {name}`") });
                }
                seen.push(name.clone());
            }
            match name.as_str() {
                "asm" => {
                    let text = body.join("\n");
                    t.insns = assemble(&text).map_err(|e: AsmError| ParseError {
                        line: first + e.line - 1,
                        msg: format!("asm: {}: `{}`", e.msg, e.text.trim()),
                    })?;
                    t.asm = Some(text);
                }
                "raw" => {
                    let mut v = Vec::new();
                    for (j, l) in body.iter().enumerate() {
                        let w = strip_comment(l);
                        if w.is_empty() {
                            continue;
                        }
                        let h = w.strip_prefix("0x").or_else(|| w.strip_prefix("0X")).unwrap_or(w);
                        let word = u64::from_str_radix(h, 16).map_err(|_| ParseError {
                            line: first + j,
                            msg: format!("raw: invalid instruction word `{w}`"),
                        })?;
                        v.push(Insn::from_bytes(word.to_le_bytes()));
                    }
                    t.raw = Some(v);
                }
                "mem" => {
                    for (j, l) in body.iter().enumerate() {
                        for b in strip_comment(l).split_whitespace() {
                            let byte = u8::from_str_radix(b, 16).ok().filter(|_| b.len() <= 2).ok_or_else(|| {
                                ParseError { line: first + j, msg: format!("mem: invalid hex byte `{b}`") }
                            })?;
                            t.mem.push(byte);
                        }
                    }
                }
                "result" => {
                    let vals: Vec<(usize, &str)> = body
                        .iter()
                        .enumerate()
                        .map(|(j, l)| (first + j, strip_comment(l)))
                        .filter(|(_, l)| !l.is_empty())
                        .collect();
                    let [(line, v)] = vals.as_slice() else {
                        return Err(ParseError { line: first - 1, msg: "result: expected one value".into() });
                    };
                    let parsed = match v.strip_prefix("0x").or_else(|| v.strip_prefix("0X")) {
                        Some(h) => u64::from_str_radix(h, 16).ok(),
                        None => v.parse::<u64>().ok().or_else(|| v.parse::<i64>().ok().map(|x| x as u64)),
                    };
                    t.result = Some(parsed.ok_or_else(|| ParseError {
                        line: *line,
                        msg: format!("result: invalid value `{v}`"),
                    })?);
                }
                "error" => {
                    let text: Vec<&str> =
                        body.iter().map(|l| strip_comment(l)).filter(|l| !l.is_empty()).collect();
                    t.error = Some(text.join("\n"));
                }
                _ => {}
            }
        }
        match (&t.asm, &t.raw) {
            (None, Some(raw)) => t.insns = raw.clone(),
            (None, None) => return Err(ParseError { line: 1, msg: "no `-- asm` or `-- raw` section".into() }),
            _ => {}
        }
        Ok(t)
    }
}

fn strip_comment(l: &str) -> &str {
    match l.find('#') {
        Some(p) => &l[..p],
        None => l,
    }
    .trim()
}

/// Where the bpf_conformance suite's `.data` files are: `KOPS_CONFORMANCE_DIR`, else
/// `../shared/conformance/tests` beside this repository's checkout.
pub fn suite_dir() -> std::path::PathBuf {
    match std::env::var_os("KOPS_CONFORMANCE_DIR") {
        Some(d) => std::path::PathBuf::from(d),
        None => std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/conformance/tests"),
    }
}

/// The suite's `.data` files, sorted, for tests. Where the suite is absent (a clone of
/// this repository alone) it prints `SKIPPED: <reason>` and returns None; under
/// `KOPS_REQUIRE_CONFORMANCE=1` (as CI sets) that is a panic instead.
pub fn suite_files_for_test() -> Option<Vec<std::path::PathBuf>> {
    let dir = suite_dir();
    let files: Vec<std::path::PathBuf> = match std::fs::read_dir(&dir) {
        Ok(rd) => rd.filter_map(|e| e.ok().map(|e| e.path())).filter(|p| p.extension().is_some_and(|x| x == "data")).collect(),
        Err(_) => Vec::new(),
    };
    if files.is_empty() {
        let why = format!("no conformance suite at {} (set KOPS_CONFORMANCE_DIR)", dir.display());
        if std::env::var("KOPS_REQUIRE_CONFORMANCE").is_ok_and(|v| v == "1") {
            panic!("KOPS_REQUIRE_CONFORMANCE=1 but {why}");
        }
        println!("SKIPPED: {why}");
        return None;
    }
    let mut files = files;
    files.sort();
    Some(files)
}

/// The suite for tests, as [`suite_files_for_test`] finds it: each file's name with its
/// parse, a failure as `parse: <reason>`.
pub fn suite_for_test() -> Option<Vec<(String, Result<TestFile, String>)>> {
    let files = suite_files_for_test()?;
    Some(
        files
            .iter()
            .map(|f| {
                let name = f.file_name().unwrap().to_string_lossy().to_string();
                let text = std::fs::read_to_string(f).unwrap();
                (name, TestFile::parse(&text).map_err(|e| format!("parse: {e}")))
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_sections() {
        let t = TestFile::parse(
            "# header\n-- asm\nmov %r0, 1 # one\nexit\n-- mem\n11 22\n33\n-- result\n0x1\n-- c\nint x;\n",
        )
        .unwrap();
        assert_eq!(t.insns, vec![Insn::new(0xb7, 0, 0, 0, 1), Insn::exit()]);
        assert_eq!(t.mem, vec![0x11, 0x22, 0x33]);
        assert_eq!(t.result, Some(1));
        assert_eq!(t.error, None);
        let r = TestFile::parse("-- raw\n0x0000000000000095\n-- result\n42\n").unwrap();
        assert_eq!(r.insns, vec![Insn::exit()]);
        assert_eq!(r.result, Some(42));
    }

    #[test]
    fn errors_name_file_line() {
        let e = TestFile::parse("# x\n-- asm\nmov %r0, 1\nbogus\n").unwrap_err();
        assert_eq!(e.line, 4, "{e}");
        assert!(TestFile::parse("-- asm\nexit\n-- mem\nzz\n").unwrap_err().to_string().contains("line 4"));
        assert!(TestFile::parse("-- asm\nexit\n-- result\nnope\n").is_err());
        assert!(TestFile::parse("-- mem\n00\n").is_err());
    }

    /// Every file of the suite assembles; where a file gives both `asm` and `raw`, they agree
    /// (the raw words are an independent encoding, written by the suite's authors).
    #[test]
    fn whole_suite_assembles() {
        let Some(files) = suite_files_for_test() else { return };
        let mut n = 0;
        let mut both = 0;
        for p in files {
            let text = std::fs::read_to_string(&p).unwrap();
            let t = TestFile::parse(&text).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            assert!(!t.insns.is_empty(), "{}", p.display());
            // The suite's programs are valid eBPF (callx included).
            crate::validate(&t.insns).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            assert!(t.result.is_some() || t.error.is_some(), "{}", p.display());
            if let (Some(_), Some(raw)) = (&t.asm, &t.raw) {
                assert_eq!(&t.insns, raw, "{}: asm and raw differ", p.display());
                both += 1;
            }
            n += 1;
        }
        assert_eq!(n, 313);
        assert!(both >= 1);
    }
}
