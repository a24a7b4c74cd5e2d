//! From a match to the instructions that replace its region.

use crate::{Match, SiteOp};
use kops_isa::{op, Insn};

/// The instructions of the site itself (a kinsn sidecar + call, or plain instructions
/// for the non-kinsn wide load), or why the operation set cannot express it.
pub fn site(o: &SiteOp) -> Result<Vec<Insn>, String> {
    match *o {
        SiteOp::WideLoad { dst, base, off, size, big_endian } => {
            let mut v = vec![Insn::ldx(op::size_of_bytes(size as usize), dst, base, off)];
            if big_endian {
                v.push(Insn::new(op::ALU | op::END | op::TO_BE, dst, 0, 0, size as i32 * 8));
            }
            Ok(v)
        }
        _ => crate::einsn_bridge::kinsn_site(o),
    }
}

/// Full replacement of the match's region: prefix, site, then the kept instructions.
pub fn replacement(insns: &[Insn], m: &Match) -> Result<Vec<Insn>, String> {
    let mut v = m.prefix.clone();
    v.extend(site(&m.op)?);
    v.extend(m.keep.iter().map(|&pc| insns[pc]));
    Ok(v)
}
