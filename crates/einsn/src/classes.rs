//! Payload classes of every op, for exhaustive checks (differential tests, the prover).
//!
//! Native code depends on the payload only through: amounts/lengths/sizes/flags, which
//! registers alias, and the x86 encoding of each register (REX for r8..r15, rbp/r13 need a
//! displacement, rsp/r12 a SIB byte; rdi/rsi/rcx/rax are fixed operands of `rep movs/stos`).
//! [`Coverage::Patterns`] takes every amount/size/flag with every aliasing pattern of the
//! register roles, instantiated on two register sets (low registers that map to legacy x86
//! registers, high ones that map to REX registers in the Linux map) plus the fixed-operand
//! cases for memcpy/memset. [`Coverage::Full`] takes every register assignment.

use kops_kinsn::payload::Payload;

use crate::*;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Coverage {
    Patterns,
    Full,
}

/// All set partitions of `n` roles, as role -> block index (blocks numbered by first use).
fn partitions(n: usize) -> Vec<Vec<usize>> {
    fn go(i: usize, n: usize, cur: &mut Vec<usize>, blocks: usize, out: &mut Vec<Vec<usize>>) {
        if i == n {
            out.push(cur.clone());
            return;
        }
        for b in 0..=blocks {
            cur.push(b);
            go(i + 1, n, cur, blocks.max(b + 1), out);
            cur.pop();
        }
    }
    let mut out = vec![];
    go(0, n, &mut vec![], 0, &mut out);
    out
}

/// Register assignments for `n` roles: every aliasing pattern on each representative set
/// (Patterns), or every tuple of r0..r10 (Full). Roles are later filtered by the op's own
/// validity rules.
fn assignments(n: usize, coverage: Coverage) -> Vec<Vec<u8>> {
    match coverage {
        Coverage::Full => {
            let mut out = vec![vec![]];
            for _ in 0..n {
                out = out.into_iter().flat_map(|v| (0..11u8).map(move |r| [v.clone(), vec![r]].concat())).collect();
            }
            out
        }
        Coverage::Patterns => {
            // Low: rax, rdi, rsi, rdx (r0..r3); high: r8, rbx, r13, r14 (r5..r8).
            let sets: [[u8; 4]; 2] = [[0, 1, 2, 3], [5, 6, 7, 8]];
            let mut out = vec![];
            for set in sets {
                for p in partitions(n) {
                    out.push(p.iter().map(|&b| set[b]).collect());
                }
            }
            out
        }
    }
}

fn enc<P: Payload>(v: &mut Vec<u64>, p: Result<P, kops_kinsn::PayloadError>) {
    if let Ok(p) = p {
        v.push(p.encode().expect("constructed payloads encode"));
    }
}

/// Raw payloads of op `op_id` (see [`id`]); empty for an unknown id.
pub fn payload_classes(op_id: u32, coverage: Coverage) -> Vec<u64> {
    let mut v = vec![];
    let offs: &[i16] = &[0, 8, -1, 127, -128, 128, -129, i16::MIN, i16::MAX - 8];
    match op_id {
        id::ROTATE64 | id::ROTATE32 => {
            let w = if op_id == id::ROTATE64 { 64 } else { 32 };
            for r in assignments(3, coverage) {
                for k in 1..w {
                    for lsh in [false, true] {
                        if op_id == id::ROTATE64 {
                            enc(&mut v, Rotate64::new(r[0], r[1], r[2], k, lsh));
                        } else {
                            enc(&mut v, Rotate32::new(r[0], r[1], r[2], k, lsh));
                        }
                    }
                }
            }
        }
        id::SELECT64 => {
            for r in assignments(4, coverage) {
                for f in 0..4 {
                    enc(&mut v, Select::new(r[0], r[1], r[2], r[3], f & 1 != 0, f & 2 != 0));
                }
            }
        }
        id::SELECT_CMP => {
            // roles: dst, lhs, rhs, src
            for r in assignments(4, coverage) {
                for cmp in CMP_OPS {
                    for f in 0..4 {
                        enc(&mut v, SelectCmp::new(r[0], r[1], r[2], cmp, f & 1 != 0, r[3], f & 2 != 0));
                    }
                }
            }
        }
        id::EXTRACT64 => {
            for r in assignments(2, coverage) {
                for start in 0..64u8 {
                    for len in 1..=32u8 {
                        enc(&mut v, Extract::new(r[0], r[1], start, len));
                    }
                }
            }
        }
        id::ENDIAN_LOAD16 | id::ENDIAN_LOAD32 | id::ENDIAN_LOAD64 => {
            let mut regs = assignments(2, coverage);
            if coverage == Coverage::Patterns {
                // The frame pointer (rbp: always a displacement) as base.
                regs.extend([vec![0, 10], vec![9, 10]]);
            }
            for r in regs {
                for &off in offs {
                    match op_id {
                        id::ENDIAN_LOAD16 => enc(&mut v, EndianLoad16::new(r[0], r[1], off)),
                        id::ENDIAN_LOAD32 => enc(&mut v, EndianLoad32::new(r[0], r[1], off)),
                        _ => enc(&mut v, EndianLoad64::new(r[0], r[1], off)),
                    }
                }
            }
        }
        id::POPCOUNT64 => {
            for r in assignments(4, coverage) {
                enc(&mut v, Popcount64::new(r[0], r[1], r[2], r[3]));
            }
        }
        id::POPCOUNT32 => {
            for r in assignments(3, coverage) {
                enc(&mut v, Popcount32::new(r[0], r[1], r[2]));
            }
        }
        id::MEMCPY => {
            // Roles dst, src, tmp. Patterns: bases and tmp on each fixed operand register
            // of rep movs (r1 = rdi, r2 = rsi, r4 = rcx), the frame pointer and a plain one.
            let regs: Vec<Vec<u8>> = match coverage {
                Coverage::Full => assignments(3, coverage),
                Coverage::Patterns => {
                    let roles = [1u8, 2, 4, 10, 6];
                    let mut out = vec![];
                    for &d in &roles {
                        for &s in &roles {
                            for t in [1u8, 2, 4, 3] {
                                out.push(vec![d, s, t]);
                            }
                        }
                    }
                    out
                }
            };
            for r in regs {
                for w in [1u8, 2, 4, 8] {
                    for count in 1..=((MAX_BULK_BYTES / w as usize).min(32) as u8) {
                        for desc in [false, true] {
                            enc(&mut v, Memcpy::new(r[0], -256, r[1], 64, r[2], w, count, desc));
                        }
                    }
                }
            }
        }
        id::MEMSET => {
            let bases: Vec<u8> = match coverage {
                Coverage::Full => (0..11).collect(),
                Coverage::Patterns => vec![0, 1, 4, 10, 6],
            };
            for b in bases {
                for w in [1u8, 2, 4, 8] {
                    for count in 1..=((MAX_BULK_BYTES / w as usize).min(64) as u8) {
                        for value in [0u8, 0xff, 0x5a] {
                            enc(&mut v, Memset::new(b, -200, w, count, value));
                        }
                    }
                }
            }
        }
        id::PREFETCH => {
            for b in 0..11 {
                for &off in offs {
                    enc(&mut v, Prefetch::new(b, off));
                }
            }
        }
        id::SPEC_BARRIER => v.push(0),
        _ => {}
    }
    v.sort_unstable();
    v.dedup();
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partitions_are_bell_numbers() {
        assert_eq!(partitions(3).len(), 5);
        assert_eq!(partitions(4).len(), 15);
    }

    #[test]
    fn every_op_has_classes_that_validate() {
        let r = registry();
        for op in r.iter() {
            let pat = payload_classes(op.id(), Coverage::Patterns);
            assert!(!pat.is_empty(), "{}", op.name());
            for &p in &pat {
                op.validate(p).unwrap();
            }
        }
        // select: 15 aliasing patterns x 4 flag combinations x 2 register sets.
        assert_eq!(payload_classes(id::SELECT64, Coverage::Patterns).len(), 120);
        // rotate64 in full: every (dst, src, tmp) with dst, tmp writable and distinct.
        assert_eq!(payload_classes(id::ROTATE64, Coverage::Full).len(), 10 * 11 * 9 * 63 * 2);
    }
}
