//! Codec and proof-structure tests. The differential tests (native code against the
//! interpreted proof sequence) are in `tests/`.

use kops_isa::{op, Insn};
use kops_kinsn::payload::Payload;
use kops_kinsn::{validate_proof, KinsnOp, PayloadError};

use crate::*;

#[test]
fn registry_keeps_the_stable_ids() {
    // Ids are part of the transport format: an op keeps its id for ever (new ops take new
    // ones; `Registry::register` rejects a duplicate id or name).
    let r = registry();
    for (name, id) in [
        ("rotate64", 1),
        ("rotate32", 2),
        ("select64", 3),
        ("extract64", 4),
        ("endian_load16", 5),
        ("endian_load32", 6),
        ("endian_load64", 7),
        ("popcount64", 8),
        ("popcount32", 9),
        ("memcpy", 10),
        ("memset", 11),
        ("prefetch", 12),
        ("spec_barrier", 13),
        ("select_cmp", 14),
    ] {
        assert_eq!(r.by_name(name).map(|o| o.id()), Some(id), "{name}");
    }
}

#[test]
fn rotate_site_bytes_by_hand() {
    // dst r0, src r1, tmp r1, k 13, tmp = r1 >> 51: payload 0xd110.
    let p = Rotate64::new(0, 1, 1, 13, false).unwrap();
    assert_eq!(p.encode().unwrap(), 0xd110);
    let [s, c] = p.site().unwrap();
    assert_eq!(s.to_bytes(), [0xb7, 0x30, 0x11, 0x0d, 0, 0, 0, 0]);
    assert_eq!(c.to_bytes(), [0x85, 0x40, 0, 0, 1, 0, 0, 0]);
    // The proof is what clang-19 -O2 emits for (x << 13) | (x >> 51) (see llvm-objdump):
    //   r0 = r1; r1 >>= 0x33; r0 <<= 0xd; r0 |= r1
    assert_eq!(
        p.proof(),
        vec![
            Insn::mov64_reg(0, 1),
            Insn::alu64_imm(op::RSH, 1, 51),
            Insn::alu64_imm(op::LSH, 0, 13),
            Insn::alu64_reg(op::OR, 0, 1)
        ]
    );
    // rotate32 the same way with w registers (clang: w0 = w1; w1 >>= 19; w0 <<= 13; w0 |= w1).
    let p32 = Rotate32::new(0, 1, 1, 13, false).unwrap();
    assert_eq!(
        p32.proof(),
        vec![
            Insn::alu32_reg(op::MOV, 0, 1),
            Insn::alu32_imm(op::RSH, 1, 19),
            Insn::alu32_imm(op::LSH, 0, 13),
            Insn::alu32_reg(op::OR, 0, 1)
        ]
    );
}

#[test]
fn right_rotate_is_left_by_the_complement() {
    // clang for (x >> 13) | (x << 51): r0 = r1; r1 >>= 13; r0 <<= 51; r0 |= r1
    let p = Rotate64::new_right(0, 1, 1, 13, false).unwrap();
    assert_eq!(p.k, 51);
    assert_eq!(
        p.proof(),
        vec![
            Insn::mov64_reg(0, 1),
            Insn::alu64_imm(op::RSH, 1, 13),
            Insn::alu64_imm(op::LSH, 0, 51),
            Insn::alu64_reg(op::OR, 0, 1)
        ]
    );
    assert!(Rotate64::new_right(0, 1, 1, 0, false).is_err());
}

#[test]
fn extract_and_endian_proofs_by_hand() {
    // clang: r0 = r1; r0 >>= 5; r0 &= 0x1f
    assert_eq!(
        Extract::new(0, 1, 5, 5).unwrap().proof(),
        vec![Insn::mov64_reg(0, 1), Insn::alu64_imm(op::RSH, 0, 5), Insn::alu64_imm(op::AND, 0, 0x1f)]
    );
    // len 32: a 32-bit mov (w0 = w0, opcode 0xbc) instead of an AND with 0xffffffff.
    let e = Extract::new(0, 0, 3, 32).unwrap().proof();
    assert_eq!(e[1].to_bytes(), [0xbc, 0x00, 0, 0, 0, 0, 0, 0]);
    // clang: r0 = *(u16 *)(r1 + 0x0); r0 = be16 r0  (0x69 ldxh, 0xdc be with imm 16)
    let b = EndianLoad16::new(0, 1, 0).unwrap().proof();
    assert_eq!(b[0].to_bytes(), [0x69, 0x10, 0, 0, 0, 0, 0, 0]);
    assert_eq!(b[1].to_bytes(), [0xdc, 0x00, 0, 0, 16, 0, 0, 0]);
}

fn err<P: Payload + std::fmt::Debug>(r: Result<P, PayloadError>) -> String {
    r.unwrap_err().to_string()
}

#[test]
fn out_of_range_fields_are_rejected_with_the_field_name() {
    assert!(err(Rotate64::new(0, 1, 2, 0, false)).contains("`k` = 0"));
    assert!(err(Rotate64::new(0, 1, 2, 64, false)).contains("`k` = 64"));
    assert!(err(Rotate32::new(0, 1, 2, 32, false)).contains("1..=31"));
    assert!(err(Rotate64::new(10, 1, 2, 3, false)).contains("`dst` = 10"));
    assert!(err(Rotate64::new(3, 1, 3, 3, false)).contains("`tmp`"));
    assert!(err(Select::new(10, 1, 2, 3, false, false)).contains("`dst`"));
    assert!(err(Select::new(0, 11, 2, 3, false, false)).contains("`cond` = 11"));
    assert!(err(Extract::new(0, 1, 0, 33)).contains("`len` = 33"));
    assert!(err(Extract::new(0, 1, 40, 32)).contains("start + len <= 64"));
    assert!(err(EndianLoad32::new(10, 1, 0)).contains("`dst`"));
    assert!(err(Popcount64::new(0, 1, 0, 2)).contains("`t1`"));
    assert!(err(Popcount64::new(0, 1, 2, 2)).contains("`t2`"));
    assert!(err(Popcount32::new(0, 1, 0)).contains("`tmp`"));
    assert!(err(Memcpy::new(1, 0, 2, 0, 2, 8, 4, false)).contains("`tmp`"));
    assert!(err(Memcpy::new(1, 0, 2, 0, 3, 8, 17, false)).contains("`count` = 17"));
    assert!(err(Memcpy::new(1, 0, 2, 0, 3, 3, 1, false)).contains("`width` = 3"));
    assert!(err(Memcpy::new(1, i16::MAX - 7, 2, 0, 3, 8, 2, false)).contains("`dst_off`"));
    assert!(err(Memset::new(1, 0, 8, 1, 0x12)).contains("`value`"));
    assert!(err(Memset::new(1, 0, 1, 65, 0)).contains("`count` = 65"));
    // Raw payloads: reserved bits, and what the registry says about them.
    let r = registry();
    let rot = r.by_name("rotate64").unwrap();
    let good = Rotate64::new(0, 1, 2, 5, true).unwrap().encode().unwrap();
    assert!(rot.validate(good).is_ok());
    assert!(matches!(rot.validate(good | 1 << 40), Err(PayloadError::Reserved { .. })));
    assert!(matches!(rot.validate(1 << 52), Err(PayloadError::TooWide(_))));
    let bar = r.by_name("spec_barrier").unwrap();
    assert!(bar.validate(0).is_ok());
    assert!(bar.validate(1).is_err());
}

/// Every payload of a class list, through the registry: decode(encode) is identity and the
/// proof passes the structural rules within the op's maximum.
fn check_class<P: EInsn>(ps: impl IntoIterator<Item = P>) -> usize {
    let op = Op::<P>::new();
    let mut n = 0;
    for p in ps {
        let raw = p.encode().unwrap();
        assert_eq!(P::decode(raw).unwrap(), p);
        let proof = op.instantiate(raw).unwrap();
        validate_proof(&proof, P::MAX_PROOF).unwrap_or_else(|e| panic!("{p:?}: {e}"));
        assert!(!op.describe(raw).unwrap().is_empty());
        n += 1;
    }
    n
}

#[test]
fn every_payload_class_round_trips_and_has_a_valid_proof() {
    let regs = 0u8..10;
    let mut total = 0;
    total += check_class((1..64).flat_map(|k| {
        (0..10u8).flat_map(move |d| (0..11u8).flat_map(move |s| (0..10u8).filter(move |&t| t != d).map(move |t| Rotate64::new(d, s, t, k, k % 2 == 0).unwrap())))
    }));
    total += check_class((1..32).map(|k| Rotate32::new(1, 1, 2, k, true).unwrap()));
    total += check_class(regs.clone().flat_map(|d| {
        (0..11u8).flat_map(move |c| (0..11u8).flat_map(move |a| (0..11u8).map(move |b| Select::new(d, c, a, b, (a + b) % 2 == 0, c % 2 == 0).unwrap())))
    }));
    total += check_class((0..64u8).flat_map(|s| (1..=32u8).filter(move |l| s + l <= 64).map(move |l| Extract::new(2, 3, s, l).unwrap())));
    total += check_class([i16::MIN, -1, 0, 7, i16::MAX].into_iter().map(|o| EndianLoad16::new(0, 10, o).unwrap()));
    total += check_class([i16::MIN, 0, i16::MAX].into_iter().map(|o| EndianLoad32::new(9, 9, o).unwrap()));
    total += check_class([i16::MIN, 0, i16::MAX].into_iter().map(|o| EndianLoad64::new(3, 1, o).unwrap()));
    total += check_class([(0, 1, 2, 3), (0, 0, 1, 2), (5, 6, 6, 7), (5, 7, 6, 7)].map(|(d, s, a, b)| Popcount64::new(d, s, a, b).unwrap()));
    total += check_class([(0, 1, 2), (0, 0, 1), (5, 6, 6)].map(|(d, s, t)| Popcount32::new(d, s, t).unwrap()));
    total += check_class([1u8, 2, 4, 8].into_iter().flat_map(|w| {
        (1..=(128 / w as usize).min(32) as u8).map(move |c| Memcpy::new(1, -64, 10, -128, 3, w, c, c % 2 == 1).unwrap())
    }));
    total += check_class([1u8, 2, 4, 8].into_iter().flat_map(|w| {
        (1..=(128 / w as usize).min(64) as u8).map(move |c| Memset::new(10, -128, w, c, if w == 8 { 0xff } else { 0x5a }).unwrap())
    }));
    total += check_class([Prefetch::new(10, -8).unwrap()]);
    total += check_class([SpecBarrier]);
    assert!(total > 60_000, "{total}");
}
