//! The loader never panics: real objects, truncated and with bytes flipped or overwritten
//! at random (proptest), must give Ok or Err.

mod common;

use kops_object::Object;
use proptest::prelude::*;

/// KOPS_FUZZ_CASES overrides the case count for a longer run.
fn cases(default: u32) -> u32 {
    std::env::var("KOPS_FUZZ_CASES").ok().and_then(|s| s.parse().ok()).unwrap_or(default)
}

fn corpus() -> Vec<Vec<u8>> {
    let mut v = Vec::new();
    for name in ["multi", "legacy", "callbacks"] {
        if let Some(p) = common::compile(name) {
            v.push(std::fs::read(p).unwrap());
        }
    }
    v
}

#[derive(Debug, Clone)]
enum Mutation {
    Truncate(usize),
    Flip(usize, u8),
    Word(usize, u32),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        any::<usize>().prop_map(Mutation::Truncate),
        (any::<usize>(), 1u8..=255).prop_map(|(o, x)| Mutation::Flip(o, x)),
        (any::<usize>(), prop_oneof![Just(0u32), Just(u32::MAX), Just(0x8000_0000), 0u32..64, any::<u32>()])
            .prop_map(|(o, w)| Mutation::Word(o, w)),
    ]
}

fn apply(mut b: Vec<u8>, ms: &[Mutation]) -> Vec<u8> {
    for m in ms {
        if b.is_empty() {
            break;
        }
        match *m {
            Mutation::Truncate(n) => b.truncate(n % b.len()),
            Mutation::Flip(o, x) => {
                let o = o % b.len();
                b[o] ^= x;
            }
            Mutation::Word(o, w) => {
                let o = o % b.len();
                let e = (o + 4).min(b.len());
                b[o..e].copy_from_slice(&w.to_le_bytes()[..e - o]);
            }
        }
    }
    b
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(3000), ..ProptestConfig::default() })]
    #[test]
    fn mutated_objects_never_panic(which in any::<usize>(), ms in proptest::collection::vec(mutation(), 1..12)) {
        thread_local!(static CORPUS: Vec<Vec<u8>> = corpus());
        CORPUS.with(|c| {
            if c.is_empty() {
                return;
            }
            let b = apply(c[which % c.len()].clone(), &ms);
            let _ = Object::parse(&b, "fuzz.o");
            let _ = kops_object::write::rewrite_functions(&b, &[]);
        });
    }
}

/// Every prefix length of a real object (coarse steps), and single-byte damage to every
/// header and section-header byte.
#[test]
fn truncations_and_header_damage() {
    for b in corpus() {
        for n in (0..b.len()).step_by(7) {
            let _ = Object::parse(&b[..n], "trunc.o");
        }
        let shoff = u64::from_le_bytes(b[0x28..0x30].try_into().unwrap()) as usize;
        for o in (0..64).chain(shoff..b.len()) {
            for x in [0x01u8, 0x80, 0xff] {
                let mut c = b.clone();
                c[o] ^= x;
                let _ = Object::parse(&c, "hdr.o");
            }
        }
    }
}

/// Byte ranges of the sections the loader interprets (.BTF, .BTF.ext, code, relocations,
/// symbols, maps), so that mutations land where parsing is deep.
fn hot_ranges(b: &[u8]) -> Vec<(usize, usize)> {
    let shoff = u64::from_le_bytes(b[0x28..0x30].try_into().unwrap()) as usize;
    let shnum = u16::from_le_bytes(b[0x3c..0x3e].try_into().unwrap()) as usize;
    let shstrndx = u16::from_le_bytes(b[0x3e..0x40].try_into().unwrap()) as usize;
    let u64at = |o: usize| u64::from_le_bytes(b[o..o + 8].try_into().unwrap()) as usize;
    let strtab = u64at(shoff + shstrndx * 64 + 24);
    let mut v = Vec::new();
    for i in 1..shnum {
        let sh = shoff + i * 64;
        let n = u32::from_le_bytes(b[sh..sh + 4].try_into().unwrap()) as usize;
        let name = &b[strtab + n..];
        let name = String::from_utf8_lossy(&name[..name.iter().position(|&c| c == 0).unwrap()]).into_owned();
        let (off, size) = (u64at(sh + 24), u64at(sh + 32));
        if !name.starts_with(".debug") && !name.starts_with(".rel.debug") && size > 0 && off + size <= b.len() {
            v.push((off, size));
        }
    }
    v
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(4000), ..ProptestConfig::default() })]
    #[test]
    fn mutations_in_interpreted_sections_never_panic(
        which in any::<usize>(),
        region in any::<usize>(),
        ms in proptest::collection::vec((any::<usize>(), any::<u32>(), 0u8..3), 1..6),
    ) {
        type Corpus = Vec<(Vec<u8>, Vec<(usize, usize)>)>;
        thread_local!(static CORPUS: Corpus =
            corpus().into_iter().map(|b| { let r = hot_ranges(&b); (b, r) }).collect());
        CORPUS.with(|c| {
            if c.is_empty() {
                return;
            }
            let (b, ranges) = &c[which % c.len()];
            let mut b = b.clone();
            let (off, size) = ranges[region % ranges.len()];
            for &(o, w, kind) in &ms {
                let o = off + o % size;
                match kind {
                    0 => b[o] ^= (w as u8) | 1,
                    1 => {
                        let e = (o + 4).min(b.len());
                        b[o..e].copy_from_slice(&w.to_le_bytes()[..e - o]);
                    }
                    _ => {
                        let e = (o + 4).min(b.len());
                        b[o..e].copy_from_slice(&(w % 64).to_le_bytes()[..e - o]);
                    }
                }
            }
            let _ = Object::parse(&b, "fuzz.o");
            let _ = kops_object::write::rewrite_functions(&b, &[]);
        });
    }
}
