//! Structural validation of proof sequences (DESIGN.md section 3).
//!
//! A proof sequence is spliced into the program in place of its site, so it must behave
//! like one straight-line unit with a single exit at its end: no calls, exits or legacy
//! packet loads (which may leave the program), no pseudo `ld_imm64` (map/BTF/function
//! references would need relocation), no nested sites, no back-edges, and jumps that land
//! inside the sequence or one past its end.

use kops_isa::{op, Insn};


/// Why a proof sequence is rejected; `at` is the index inside the sequence.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProofError {
    #[error("empty proof sequence")]
    Empty,
    #[error("proof sequence has {len} instructions, more than the op's maximum {max}")]
    TooLong { len: usize, max: usize },
    #[error("proof instruction {at}: {what} is not allowed in a proof sequence")]
    Forbidden { at: usize, what: &'static str },
    #[error("proof instruction {at}: backward jump (offset {offset})")]
    BackEdge { at: usize, offset: i32 },
    #[error("proof instruction {at}: jump target {target} is outside the sequence (0..={len})")]
    JumpOutside { at: usize, target: i64, len: usize },
    #[error("proof instruction {at}: jump target {target} is the second slot of an ld_imm64")]
    TargetInsideLdImm64 { at: usize, target: usize },
    #[error("proof instruction {at}: ld_imm64 is missing its second slot")]
    TruncatedLdImm64 { at: usize },
    #[error("proof instruction {at}: second slot of ld_imm64 has code {code:#04x}, must be 0")]
    BadLdImm64Tail { at: usize, code: u8 },
}

/// Check `proof` against the section-3 rules and the op's maximum length.
pub fn validate_proof(proof: &[Insn], max_len: usize) -> Result<(), ProofError> {
    let len = proof.len();
    if len == 0 {
        return Err(ProofError::Empty);
    }
    if len > max_len {
        return Err(ProofError::TooLong { len, max: max_len });
    }
    let mut start = vec![true; len];
    let mut at = 0;
    while at < len {
        if proof[at].is_ld_imm64() {
            if at + 1 >= len {
                return Err(ProofError::TruncatedLdImm64 { at });
            }
            if proof[at + 1].code != 0 {
                return Err(ProofError::BadLdImm64Tail { at: at + 1, code: proof[at + 1].code });
            }
            start[at + 1] = false;
            at += 2;
        } else {
            at += 1;
        }
    }
    for at in (0..len).filter(|&a| start[a]) {
        let i = &proof[at];
        let forbidden = |what| Err(ProofError::Forbidden { at, what });
        if i.is_kinsn_sidecar() {
            return forbidden("a nested kinsn sidecar");
        }
        if i.is_kinsn_call() {
            return forbidden("a nested kinsn call");
        }
        if i.is_call() {
            return forbidden("a call");
        }
        if i.is_exit() {
            return forbidden("exit");
        }
        if i.is_ld_imm64() && i.src != 0 {
            return forbidden("a pseudo ld_imm64");
        }
        if i.class() == op::LD && (i.mode() == op::ABS || i.mode() == op::IND) {
            return forbidden("a legacy packet load (LD_ABS/LD_IND)");
        }
        if i.class() == op::LD && !i.is_ld_imm64() {
            return forbidden("an unknown LD instruction");
        }
        if i.is_jump() {
            let offset = i.jump_offset();
            if offset < 0 {
                return Err(ProofError::BackEdge { at, offset });
            }
            let target = at as i64 + 1 + offset as i64;
            if target > len as i64 {
                return Err(ProofError::JumpOutside { at, target, len });
            }
            let t = target as usize;
            if t < len && !start[t] {
                return Err(ProofError::TargetInsideLdImm64 { at, target: t });
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules() {
        let mov = Insn::mov64_reg(1, 2);
        assert_eq!(validate_proof(&[mov, Insn::ja(0)], 2), Ok(()));
        assert_eq!(validate_proof(&[], 2), Err(ProofError::Empty));
        assert_eq!(validate_proof(&[mov, mov, mov], 2), Err(ProofError::TooLong { len: 3, max: 2 }));
        assert!(matches!(validate_proof(&[mov, Insn::exit()], 4), Err(ProofError::Forbidden { at: 1, .. })));
        assert!(matches!(validate_proof(&[Insn::call_helper(1)], 4), Err(ProofError::Forbidden { at: 0, .. })));
        let [m0, m1] = Insn::ld_imm64(1, op::PSEUDO_MAP_IDX, 0);
        assert!(matches!(validate_proof(&[m0, m1], 4), Err(ProofError::Forbidden { at: 0, .. })));
        let [p0, p1] = Insn::ld_imm64(1, 0, u64::MAX);
        assert_eq!(validate_proof(&[p0, p1], 4), Ok(()));
        assert_eq!(validate_proof(&[p0], 4), Err(ProofError::TruncatedLdImm64 { at: 0 }));
        let [s, c] = crate::encode_site(1, 0).unwrap();
        assert!(matches!(validate_proof(&[s, c], 4), Err(ProofError::Forbidden { at: 0, .. })));
        assert!(matches!(validate_proof(&[mov, c], 4), Err(ProofError::Forbidden { at: 1, .. })));
        // Jumps: one past the end is fine, two past is not, backward never, gotol by imm.
        assert_eq!(validate_proof(&[Insn::ja(1), mov], 4), Ok(()));
        assert!(matches!(validate_proof(&[Insn::ja(2), mov], 4), Err(ProofError::JumpOutside { at: 0, target: 3, .. })));
        assert!(matches!(validate_proof(&[mov, Insn::ja(-1)], 4), Err(ProofError::BackEdge { at: 1, .. })));
        let gotol = Insn::new(op::JMP32 | op::JA, 0, 0, 0, -2);
        assert!(matches!(validate_proof(&[mov, gotol], 4), Err(ProofError::BackEdge { at: 1, offset: -2 })));
        let gotol_fwd = Insn::new(op::JMP32 | op::JA, 0, 0, -5, 1);
        assert_eq!(validate_proof(&[gotol_fwd, mov], 4), Ok(()));
        assert!(matches!(
            validate_proof(&[Insn::jmp_imm(op::JEQ, 1, 0, 1), p0, p1], 4),
            Err(ProofError::TargetInsideLdImm64 { at: 0, target: 2 })
        ));
        let ldabs = Insn::new(op::LD | op::ABS | op::W, 0, 0, 0, 12);
        assert!(matches!(validate_proof(&[ldabs], 4), Err(ProofError::Forbidden { .. })));
    }
}
