//! From a match to the instructions that replace its region.

use crate::{Match, Site, WideLoad};
use kops_isa::{op, Insn};

/// The instructions of the site itself (a kinsn sidecar + call, or plain instructions
/// for the non-kinsn wide load), or why the operation set cannot express it.
pub fn site(o: &Site) -> Result<Vec<Insn>, String> {
    match *o {
        Site::WideLoad(WideLoad { dst, base, off, size, big_endian }) => {
            let mut v = vec![Insn::ldx(op::size_of_bytes(size as usize), dst, base, off)];
            if big_endian {
                v.push(Insn::new(op::ALU | op::END | op::TO_BE, dst, 0, 0, size as i32 * 8));
            }
            Ok(v)
        }
        Site::Kinsn(ref p) => p.site().map(|s| s.to_vec()).map_err(|e| e.to_string()),
    }
}

/// Full replacement of the match's region: the kept instructions in order, with prefix
/// and site inserted before `keep[site_pos]`. Also returns, for each kept instruction, its index in the replacement.
pub fn replacement(insns: &[Insn], m: &Match) -> Result<(Vec<Insn>, Vec<(usize, usize)>), String> {
    let mut head = m.prefix.clone();
    head.extend(site(&m.op)?);
    let mut v = Vec::new();
    let mut kept = Vec::new();
    for (k, &pc) in m.keep.iter().enumerate() {
        if k == m.site_pos {
            v.extend(head.iter().copied());
        }
        kept.push((v.len(), pc));
        v.push(insns[pc]);
    }
    if m.site_pos >= m.keep.len() {
        v.extend(head);
    }
    Ok((v, kept))
}
