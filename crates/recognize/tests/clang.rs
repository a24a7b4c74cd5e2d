//! Every pass on real clang-19 output: small C functions compiled in the test. The expected
//! site counts come from reading `llvm-objdump-19 -d` of this source (kept in comments);
//! each program is then rewritten, lowered and run against the original on the interpreter.

mod common;
use common::*;
use kops_recognize::{Mode, Pass};

const SRC: &str = r#"typedef unsigned long long u64; typedef unsigned int u32; typedef unsigned short u16; typedef unsigned char u8;
typedef long long s64; typedef int s32;
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
SEC("syscall") int rot64(u64 *p) {
  u64 x = p[0], y = p[1];
  p[2] = (x << 13) | (x >> 51);
  p[3] = (y >> 7) | (y << 57);
  return 0;
}
SEC("syscall") int rot32(u32 *p) {
  u32 x = p[0], y = p[1];
  p[2] = (x << 5) | (x >> 27);
  p[3] = (y >> 9) | (y << 23);
  return 0;
}
SEC("syscall") int rot_live_tmp(u64 *p) {
  u64 x = p[0];
  u64 t = x >> 51;
  p[2] = (x << 13) | t;
  p[3] = t;
  return 0;
}
SEC("syscall") int sel(s64 *p) {
  s64 a = p[0], b = p[1], c = p[2];
  p[3] = c ? a : b;
  p[4] = a > b ? a : b;
  p[5] = (u32)c ? a : b;
  return 0;
}
SEC("syscall") int ext(u64 *p) {
  u64 a = p[0];
  p[1] = (a >> 12) & 0xff;
  p[2] = (a >> 40) & 0xfffff;
  return 0;
}
SEC("syscall") int endian(u8 *p) {
  u64 *o = (u64 *)(p + 32);
  o[0] = __builtin_bswap16(*(u16*)(p+2));
  o[1] = __builtin_bswap32(*(u32*)(p+4));
  o[2] = __builtin_bswap64(*(u64*)(p+8));
  return 0;
}
SEC("syscall") int pop(u64 *p) {
  p[1] = __builtin_popcountll(p[0]);
  p[2] = __builtin_popcount((u32)p[3]);
  return 0;
}
struct S { u64 a, b, c, d, e, f, g, h; };
SEC("syscall") int copy(struct S *s) {
  struct S t;
  __builtin_memcpy(&t, s, sizeof t);
  asm volatile("" :: "r"(&t) : "memory");
  __builtin_memcpy(s + 1, &t, sizeof t);
  __builtin_memset(s + 2, 0, sizeof t);
  return 0;
}
SEC("syscall") int selimm(s64 *p) {
  s64 c = p[2];
  p[6] = c ? 5 : 9;
  p[7] = c ? p[0] : 77;
  return 0;
}
SEC("syscall") int zero(struct S *s) {
  struct S z;
  __builtin_memset(&z, 0, sizeof z);
  z.c = s->a;
  asm volatile("" :: "r"(&z) : "memory");
  __builtin_memcpy(s + 1, &z, sizeof z);
  return 0;
}
struct { __uint(type, BPF_MAP_TYPE_ARRAY); __uint(max_entries, 1); __type(key, u32); __type(value, u64[4]); } m SEC(".maps");
SEC("syscall") int mapladder(u64 *p) {
  u32 k = 0;
  u8 *v = bpf_map_lookup_elem(&m, &k);
  if (!v) return 0;
  *(u64 *)v = p[0];
  *(u64 *)(v + 8) = p[1];
  asm volatile("" ::: "memory");
  p[2] = v[0] | (v[1] << 8) | (v[2] << 16) | ((u32)v[3] << 24);
  p[3] = (u64)v[8] | ((u64)v[9] << 8) | ((u64)v[10] << 16) | ((u64)v[11] << 24) | ((u64)v[12] << 32) | ((u64)v[13] << 40) | ((u64)v[14] << 48) | ((u64)v[15] << 56);
  p[4] = v[5] | (v[6] << 8);
  return 0;
}
SEC("syscall") int pf(u64 *p) {
  u64 a = p[0];
  asm volatile("" : "+r"(a));
  (void)*(volatile u8 *)(p + 8);
  return a + p[1];
}
char LICENSE[] SEC("license") = "GPL";
"#;

fn sites(rep: &kops_recognize::ObjectReport, prog: &str) -> Vec<(String, usize, usize, bool)> {
    rep.programs
        .iter()
        .find(|p| p.name == prog)
        .unwrap()
        .sites
        .iter()
        .map(|s| (s.pass.clone(), s.start, s.end, s.rewrite))
        .collect()
}

fn rejected(rep: &kops_recognize::ObjectReport, prog: &str) -> Vec<String> {
    rep.programs.iter().find(|p| p.name == prog).unwrap().rejected.iter().map(|r| r.reason.clone()).collect()
}

#[test]
fn clang_idioms_found_rewritten_and_equivalent() {
    let Some((obj, _)) = compile("idioms", SRC) else { return };
    let inputs = inputs(40, 256, 7);
    let (rep, _) = diff_check(&obj, &policy(Mode::All), &inputs);
    // rot64: `r3 = r2; r3 >>= 0x7; r2 <<= 0x39; r2 |= r3` (slots 1-4) and the same with
    // 0x33/0xd (slots 7-10).
    assert_eq!(count(&rep, "rot64", Pass::Rotate), 2);
    assert_eq!(sites(&rep, "rot64")[0], ("rotate".into(), 1, 5, true));
    // rot32: `w3 = w2; w3 >>= 0x9; w2 <<= 0x17; w2 |= w3` and 0x1b/0x5.
    assert_eq!(count(&rep, "rot32", Pass::Rotate), 2);
    // rot_live_tmp: the shifted temporary is stored between the shift and the or.
    assert_eq!(count(&rep, "rot_live_tmp", Pass::Rotate), 0);
    assert!(rejected(&rep, "rot_live_tmp").iter().any(|r| r.contains("intermediate value")));
    // sel: `r3 = r4; if w0 == 0x0 goto +1; r3 = r2` (JMP32), `r5 = r4; if r0 == 0x0 goto +1;
    // r5 = r2` (JMP), `if r2 s> r4 goto +1; r2 = r4` (comparison: select_cmp).
    assert_eq!(count(&rep, "sel", Pass::Select), 3);
    assert_eq!(rewritten(&rep, "sel"), 3);
    // ext: `r3 = r2; r3 >>= 0x28; r3 &= 0xfffff` and `r2 >>= 0xc; r2 &= 0xff`.
    assert_eq!(count(&rep, "ext", Pass::Extract), 2);
    // endian: ldx+be64 at slot 0 (a site may not start a function), ldx+be16, ldx+be32.
    assert_eq!(count(&rep, "endian", Pass::Endian), 2);
    assert!(rejected(&rep, "endian").iter().any(|r| r.contains("subprogram")));
    // pop: the 64-bit expansion (slots 1..33) interleaved with the 32-bit one (24..40).
    assert_eq!(count(&rep, "pop", Pass::Popcount), 2);
    assert_eq!(rewritten(&rep, "pop"), 2);
    // copy: 8 ld/st pairs into the stack at slot 0 (function start: rejected), 8 pairs
    // stack -> s+1 (descending), `r2 = 0` + 8 zero stores.
    assert_eq!(count(&rep, "copy", Pass::Bulk), 2);
    // selimm: `r3 = 0x9; if r2 == 0x0 goto +1; r3 = 0x5` (immediates go through dead
    // registers); the second select loads a value, not a move.
    assert_eq!(count(&rep, "selimm", Pass::Select), 1);
    // zero: 8 zero stores to the stack, then 8 pairs stack -> s+1.
    assert_eq!(count(&rep, "zero", Pass::Bulk), 2);
    // mapladder: 2 stores into the map value (a 2-chunk copy), an aligned 4-byte and an
    // aligned 8-byte ladder from the map value; the 2-byte ladder at offset 5 is misaligned.
    assert_eq!(count(&rep, "mapladder", Pass::WideLoad), 2);
    assert_eq!(count(&rep, "mapladder", Pass::Bulk), 1);
    assert!(rejected(&rep, "mapladder").iter().any(|r| r.contains("misaligned")));
    // pf: `r3 = *(u8 *)(r1 + 0x40)` with r3 dead (a volatile read whose value is unused).
    assert_eq!(count(&rep, "pf", Pass::Prefetch), 1);
    // And under the cost model, still equivalent.
    let (auto, _) = diff_check(&obj, &policy(Mode::Auto), &inputs);
    assert_eq!(auto.total_sites(), rep.total_sites());
    assert!(auto.rewritten() < rep.rewritten());
    let (none, new) = diff_check(&obj, &policy(Mode::None), &inputs);
    assert_eq!(none.rewritten(), 0);
    for (a, b) in obj.programs.iter().zip(&new.programs) {
        assert_eq!(a.insns, b.insns);
    }
}

#[test]
fn rewritten_object_writes_and_reloads() {
    let Some((obj, bytes)) = compile("write", SRC) else { return };
    let (new, _, maps) = kops_recognize::rewrite_object(&obj, &policy(Mode::All)).unwrap();
    let out = kops_recognize::write_object(&bytes, &obj, &new, &maps).expect("write");
    let back = kops_object::Object::parse(&out, "rewritten").expect("reload");
    for p in &new.programs {
        let q = back.program(&p.name).unwrap();
        assert_eq!(q.insns, p.insns, "{}", p.name);
        assert_eq!(q.func_info, p.func_info, "{}", p.name);
        assert_eq!(q.line_info.len(), p.line_info.len(), "{}", p.name);
    }
    // llvm-objdump reads it.
    let path = std::env::temp_dir().join(format!("kops-recognize-{}-rewritten.o", std::process::id()));
    std::fs::write(&path, &out).unwrap();
    if let Ok(o) = std::process::Command::new("llvm-objdump-19").arg("-d").arg(&path).output() {
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let text = String::from_utf8_lossy(&o.stdout);
        assert!(text.contains("<pop>:"));
    }
}
