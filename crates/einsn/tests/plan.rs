//! The JIT-facing API: `plan_x86` computes liveness itself and picks native code or
//! fallback per site; native code disassembled by iced-x86 (an independent decoder) shows
//! the expected machine instructions.

use iced_x86::{Decoder, DecoderOptions, Formatter, IntelFormatter};
use kops_einsn::*;
use kops_isa::{op, Insn};
use kops_kinsn::plan_x86;
use kops_x86::{CpuFeatures, Feature, Reg};

const MAP: [Reg; 11] = kops_jit::REGMAP;

fn disasm(code: &[u8]) -> Vec<String> {
    let mut d = Decoder::with_ip(64, code, 0, DecoderOptions::NONE);
    let mut f = IntelFormatter::new();
    let mut out = vec![];
    while d.can_decode() {
        let i = d.decode();
        assert!(!i.is_invalid(), "invalid x86 in {code:02x?}");
        let mut s = String::new();
        f.format(&i, &mut s);
        out.push(s);
    }
    out
}

/// Program `site; exit` (plus `r0 = tmp` first when `use_tmp`, so it is live).
fn prog(site: [Insn; 2], reads: &[u8]) -> Vec<Insn> {
    let mut p = vec![Insn::mov64_imm(0, 0)];
    p.extend(site);
    for &r in reads {
        p.push(Insn::alu64_reg(op::ADD, 0, r));
    }
    p.push(Insn::exit());
    p
}

fn native(site: [Insn; 2], reads: &[u8], f: CpuFeatures) -> Option<Vec<String>> {
    let reg = registry();
    let (l, plans) = plan_x86(&prog(site, reads), &[], &[], &reg, f, &MAP, kops_jit::AUX_REG).unwrap();
    assert_eq!(l.regions.len(), 1);
    plans[0].native.as_deref().map(disasm)
}

#[test]
fn native_forms_are_the_expected_instructions() {
    let all = CpuFeatures::all();
    let s = |p: &dyn Fn() -> [Insn; 2]| p();
    // rotate in place, tmp dead: one rol.
    assert_eq!(native(s(&|| Rotate64::new(1, 1, 3, 13, false).unwrap().site().unwrap()), &[1], all).unwrap(), vec!["rol rdi,0Dh"]);
    // dst != src with BMI2: one rorx; without: mov + rol.
    assert_eq!(native(s(&|| Rotate64::new(0, 1, 3, 13, false).unwrap().site().unwrap()), &[], all).unwrap(), vec!["rorx rax,rdi,33h"]);
    assert_eq!(
        native(s(&|| Rotate64::new(0, 1, 3, 13, false).unwrap().site().unwrap()), &[], all.without(Feature::Bmi2)).unwrap(),
        vec!["mov rax,rdi", "rol rax,0Dh"]
    );
    // tmp live (read after the site): rebuilt with mov + shr.
    assert_eq!(
        native(s(&|| Rotate64::new(0, 1, 3, 13, false).unwrap().site().unwrap()), &[3], all).unwrap(),
        vec!["mov rdx,rdi", "shr rdx,33h", "rorx rax,rdi,33h"]
    );
    // rotate32, clang's shape with src as tmp, src dead.
    assert_eq!(native(s(&|| Rotate32::new(0, 1, 1, 13, false).unwrap().site().unwrap()), &[], all).unwrap(), vec!["rorx eax,edi,13h"]);
    // select: test + cmov.
    assert_eq!(native(s(&|| Select::new(0, 1, 2, 3, false, false).unwrap().site().unwrap()), &[], all).unwrap(), vec!["test rdi,rdi", "mov rax,rdx", "cmovne rax,rsi"]);
    assert_eq!(native(s(&|| Select::new(0, 0, 0, 3, true, true).unwrap().site().unwrap()), &[], all).unwrap(), vec!["test eax,eax", "cmove eax,edx"]);
    // extract: shr + and; len 32 ending at bit 64: shr only.
    assert_eq!(native(s(&|| Extract::new(0, 0, 5, 5).unwrap().site().unwrap()), &[], all).unwrap(), vec!["shr rax,5", "and eax,1Fh"]);
    assert_eq!(native(s(&|| Extract::new(0, 1, 32, 32).unwrap().site().unwrap()), &[], all).unwrap(), vec!["mov rax,rdi", "shr rax,20h"]);
    // endian loads: movbe, or mov + bswap.
    assert_eq!(native(s(&|| EndianLoad32::new(0, 1, 4).unwrap().site().unwrap()), &[], all).unwrap(), vec!["movbe eax,[rdi+4]"]);
    assert_eq!(
        native(s(&|| EndianLoad64::new(0, 1, 4).unwrap().site().unwrap()), &[], all.without(Feature::Movbe)).unwrap(),
        vec!["mov rax,[rdi+4]", "bswap rax"]
    );
    assert_eq!(
        native(s(&|| EndianLoad16::new(0, 10, -2).unwrap().site().unwrap()), &[], all).unwrap(),
        vec!["movbe ax,[rbp-2]", "movzx eax,ax"]
    );
    // popcount: popcnt; fallback without POPCNT.
    assert_eq!(native(s(&|| Popcount64::new(0, 1, 2, 3).unwrap().site().unwrap()), &[], all).unwrap(), vec!["xor eax,eax", "popcnt rax,rdi"]);
    assert_eq!(native(s(&|| Popcount64::new(0, 1, 2, 3).unwrap().site().unwrap()), &[], all.without(Feature::Popcnt)), None);
    // bulk ops: rep movsq / rep stosq with rdi, rsi, rcx (rax) saved.
    let m = native(s(&|| Memcpy::new(10, -64, 10, -128, 3, 8, 8, false).unwrap().site().unwrap()), &[], all).unwrap();
    assert!(m.iter().any(|i| i.starts_with("rep movsq")) && m[..3] == ["push rdi", "push rsi", "push rcx"], "{m:?}");
    let m = native(s(&|| Memset::new(10, -64, 8, 8, 0).unwrap().site().unwrap()), &[], all).unwrap();
    assert!(m.iter().any(|i| i.starts_with("rep stosb")), "{m:?}");
    assert_eq!(native(s(&|| Prefetch::new(1, 64).unwrap().site().unwrap()), &[], all).unwrap(), vec!["prefetcht0 [rdi+40h]"]);
    assert_eq!(native(s(&|| SpecBarrier.site().unwrap()), &[], all).unwrap(), vec!["lfence"]);
}

/// `KOPS_DISABLE_FEATURES` masks features as detected at JIT time: run this test binary
/// again with the variable set and check that the emits take their fallback paths.
#[test]
fn disabled_features_select_fallbacks() {
    if std::env::var_os("KOPS_EINSN_CHILD").is_some() {
        let f = CpuFeatures::detect().unwrap();
        assert!(!f.has(Feature::Popcnt) && !f.has(Feature::Movbe) && !f.has(Feature::Bmi2));
        assert_eq!(native(Popcount32::new(0, 1, 2).unwrap().site().unwrap(), &[], f), None);
        assert_eq!(native(EndianLoad32::new(0, 1, 0).unwrap().site().unwrap(), &[], f).unwrap(), vec!["mov eax,[rdi]", "bswap eax"]);
        assert_eq!(native(Rotate64::new(0, 1, 3, 8, false).unwrap().site().unwrap(), &[], f).unwrap(), vec!["mov rax,rdi", "rol rax,8"]);
        return;
    }
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "disabled_features_select_fallbacks", "--nocapture"])
        .env("KOPS_EINSN_CHILD", "1")
        .env("KOPS_DISABLE_FEATURES", "popcnt,movbe,bmi2")
        .output()
        .unwrap();
    assert!(out.status.success(), "child: {}", String::from_utf8_lossy(&out.stdout));
    assert!(String::from_utf8_lossy(&out.stdout).contains("1 passed"));
}
