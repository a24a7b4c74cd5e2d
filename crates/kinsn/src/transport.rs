//! The bytecode transport of a kinsn site (DESIGN.md section 3), bit-compatible with the
//! reference kernel patch:
//!
//! ```text
//! slot pc:     ALU64|MOV|K (0xb7), src_reg = 3 (sidecar)
//!              payload bits [3:0] -> dst_reg, [19:4] -> off, [51:20] -> imm
//! slot pc + 1: JMP|CALL (0x85), src_reg = 4, dst_reg = 0, imm = op id, off = 0
//! ```
//!
//! In the kernel the call's `imm` is the BTF id of the op's stub function and `off` the
//! 1-based fd_array slot of its module BTF (0 = vmlinux); userspace Kops uses its own stable
//! op ids with `off = 0`.

use kops_isa::{op, Insn};

pub use crate::payload::MAX_PAYLOAD;
use crate::payload::PayloadError;


/// A decoded site: the sidecar is at slot `pc`, the call at `pc + 1`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Site {
    pub pc: usize,
    pub op_id: u32,
    pub payload: u64,
}

/// A malformed site, or a site that cannot be lowered; always names the slot.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SiteError {
    #[error("instruction {pc}: kinsn call (call src_reg=4) is not preceded by its sidecar (mov64 src_reg=3)")]
    CallWithoutSidecar { pc: usize },
    #[error("instruction {pc}: kinsn sidecar (mov64 src_reg=3) is not followed by a kinsn call (call src_reg=4)")]
    SidecarWithoutCall { pc: usize },
    #[error("instruction {pc}: malformed kinsn call: {msg}")]
    MalformedCall { pc: usize, msg: String },
    #[error("instruction {pc}: unknown kinsn op id {id}")]
    UnknownOp { pc: usize, id: u32 },
    #[error("instruction {pc}: kinsn site `{op}`: {err}")]
    Payload { pc: usize, op: String, err: PayloadError },
    #[error("instruction {pc}: kinsn site `{op}` has an invalid proof sequence: {err}")]
    Proof { pc: usize, op: String, err: crate::validate::ProofError },
    #[error("instruction {pc}: kinsn site starts a subprogram (a site may not be the first instruction of a function)")]
    AtSubprogStart { pc: usize },
    #[error("instruction {pc}: kinsn site spans the subprogram boundary at instruction {boundary}")]
    SpansSubprog { pc: usize, boundary: usize },
    #[error("instruction {pc}: control transfer into the middle of the kinsn site at instruction {site}")]
    TargetInsideSite { pc: usize, site: usize },
    #[error("kinsn payload {payload:#x} does not fit in 52 bits")]
    PayloadTooWide { payload: u64 },
}

/// The two slots of a site.
pub fn encode_site(op_id: u32, payload: u64) -> Result<[Insn; 2], SiteError> {
    if payload > MAX_PAYLOAD {
        return Err(SiteError::PayloadTooWide { payload });
    }
    let sidecar = Insn::new(
        op::ALU64 | op::MOV | op::K,
        (payload & 0xf) as u8,
        op::PSEUDO_KINSN_SIDECAR,
        ((payload >> 4) & 0xffff) as u16 as i16,
        (payload >> 20) as u32 as i32,
    );
    let call = Insn::new(op::JMP | op::CALL, 0, op::PSEUDO_KINSN_CALL, 0, op_id as i32);
    Ok([sidecar, call])
}

/// Decode the site whose sidecar is at `pc`.
pub fn decode_site(insns: &[Insn], pc: usize) -> Result<Site, SiteError> {
    let side = insns.get(pc).ok_or(SiteError::SidecarWithoutCall { pc })?;
    if !side.is_kinsn_sidecar() {
        return match insns.get(pc + 1) {
            Some(c) if c.is_kinsn_call() => Err(SiteError::CallWithoutSidecar { pc: pc + 1 }),
            _ => Err(SiteError::MalformedCall { pc, msg: "not a kinsn sidecar".into() }),
        };
    }
    let call = match insns.get(pc + 1) {
        Some(c) if c.is_kinsn_call() => c,
        _ => return Err(SiteError::SidecarWithoutCall { pc }),
    };
    if call.dst != 0 {
        return Err(SiteError::MalformedCall { pc: pc + 1, msg: format!("dst_reg is {}, must be 0", call.dst) });
    }
    if call.off != 0 {
        return Err(SiteError::MalformedCall {
            pc: pc + 1,
            msg: format!("off (module BTF fd_array slot) is {}, userspace kinsn ids need 0", call.off),
        });
    }
    Ok(Site { pc, op_id: call.imm as u32, payload: side.kinsn_payload() })
}

/// Every site of a program, in order, checking only the transport (pairing of sidecar and
/// call). `ld_imm64` second slots are skipped.
pub fn find_sites(insns: &[Insn]) -> Result<Vec<Site>, SiteError> {
    let mut sites = Vec::new();
    let mut pc = 0;
    while pc < insns.len() {
        let i = &insns[pc];
        if i.is_kinsn_sidecar() {
            let s = decode_site(insns, pc)?;
            sites.push(s);
            pc += 2;
        } else if i.is_kinsn_call() {
            return Err(SiteError::CallWithoutSidecar { pc });
        } else if i.is_ld_imm64() {
            pc += 2;
        } else {
            pc += 1;
        }
    }
    Ok(sites)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bit_layout_matches_design() {
        // payload: dst_reg = 0xa, off = 0xbeef, imm = 0x12345678.
        let payload = 0xa | (0xbeef << 4) | (0x1234_5678u64 << 20);
        let [s, c] = encode_site(7, payload).unwrap();
        let sb = s.to_bytes();
        // 0xb7, dst 0xa | src 3 << 4, off LE, imm LE.
        assert_eq!(sb, [0xb7, 0x3a, 0xef, 0xbe, 0x78, 0x56, 0x34, 0x12]);
        assert_eq!(c.to_bytes(), [0x85, 0x40, 0, 0, 7, 0, 0, 0]);
        let site = decode_site(&[s, c], 0).unwrap();
        assert_eq!(site, Site { pc: 0, op_id: 7, payload });
        assert_eq!(site.payload, MAX_PAYLOAD & payload);
    }

    #[test]
    fn max_payload_round_trips_and_wider_is_rejected() {
        let [s, c] = encode_site(u32::MAX, MAX_PAYLOAD).unwrap();
        assert_eq!(decode_site(&[s, c], 0).unwrap().payload, MAX_PAYLOAD);
        assert_eq!(decode_site(&[s, c], 0).unwrap().op_id, u32::MAX);
        assert!(matches!(encode_site(1, MAX_PAYLOAD + 1), Err(SiteError::PayloadTooWide { .. })));
    }

    #[test]
    fn pairing_errors_name_the_slot() {
        let [s, c] = encode_site(1, 5).unwrap();
        let nop = Insn::mov64_imm(0, 0);
        assert_eq!(find_sites(&[nop, c]), Err(SiteError::CallWithoutSidecar { pc: 1 }));
        assert_eq!(find_sites(&[nop, s, nop]), Err(SiteError::SidecarWithoutCall { pc: 1 }));
        assert_eq!(find_sites(&[nop, s]), Err(SiteError::SidecarWithoutCall { pc: 1 }));
        let mut c2 = c;
        c2.off = 1;
        assert!(matches!(find_sites(&[s, c2]), Err(SiteError::MalformedCall { pc: 1, .. })));
        // An ld_imm64 whose second slot looks like nothing special is skipped.
        let [l0, l1] = Insn::ld_imm64(1, 0, 0xb7);
        assert_eq!(find_sites(&[l0, l1, s, c, Insn::exit()]).unwrap(), vec![Site { pc: 2, op_id: 1, payload: 5 }]);
    }
}
