//! Mapping of site operations to the EInsn operation set (`kops_einsn`): the payload
//! constructors validate every field, and `site()` gives the transport slots.

use crate::{Operand, SiteOp, Width};
use kops_einsn::*;
use kops_isa::{op, Insn};

fn reg(o: Operand, what: &str) -> Result<u8, String> {
    match o {
        Operand::Reg(r) => Ok(r),
        Operand::Imm(i) => Err(format!("select64 takes registers only ({what} is the immediate {i})")),
    }
}

pub fn kinsn_site(o: &SiteOp) -> Result<Vec<Insn>, String> {
    let e = |e: kops_kinsn::PayloadError| e.to_string();
    let slots = match *o {
        SiteOp::Rotate { dst, src, amount, width: Width::W64, tmp } => Rotate64::new(dst, src, tmp, amount, false).and_then(|p| p.site()),
        SiteOp::Rotate { dst, src, amount, width: Width::W32, tmp } => Rotate32::new(dst, src, tmp, amount, false).and_then(|p| p.site()),
        SiteOp::Select { dst, cond, if_true, if_false, width } => {
            if !crate::passes::zero_test(&cond) {
                // select_cmp: dst = (lhs <cmp> rhs) ? dst : src (one-sided, as clang's
                // `if lhs <cmp> rhs goto +1; dst = src`)
                if if_true != Operand::Reg(dst) {
                    return Err("select_cmp keeps dst when the comparison holds; this select moves another value there".into());
                }
                let rhs = match cond.rhs {
                    Operand::Reg(r) => r,
                    Operand::Imm(i) => return Err(format!("select_cmp compares registers only (the right operand is the immediate {i})")),
                };
                let src = match if_false {
                    Operand::Reg(r) => r,
                    Operand::Imm(i) => return Err(format!("select_cmp moves a register only (the value is the immediate {i})")),
                };
                return SelectCmp::new(dst, cond.lhs, rhs, cond.op, cond.jmp32, src, width == Width::W32)
                    .and_then(|p| p.site())
                    .map(|s| s.to_vec())
                    .map_err(e);
            }
            let (t, f) = (reg(if_true, "the true value")?, reg(if_false, "the false value")?);
            // select64: dst = cond != 0 ? a : b
            let (a, b) = if cond.op == op::JNE { (t, f) } else { (f, t) };
            Select::new(dst, cond.lhs, a, b, cond.jmp32, width == Width::W32).and_then(|p| p.site())
        }
        SiteOp::Extract { dst, src, start, len } => Extract::new(dst, src, start, len).and_then(|p| p.site()),
        SiteOp::EndianLoad { dst, base, off, size: 2 } => EndianLoad16::new(dst, base, off).and_then(|p| p.site()),
        SiteOp::EndianLoad { dst, base, off, size: 4 } => EndianLoad32::new(dst, base, off).and_then(|p| p.site()),
        SiteOp::EndianLoad { dst, base, off, size: 8 } => EndianLoad64::new(dst, base, off).and_then(|p| p.site()),
        SiteOp::EndianLoad { size, .. } => return Err(format!("no endian load of {size} bytes")),
        SiteOp::Popcount { dst, src, width: Width::W64, tmps } => Popcount64::new(dst, src, tmps[0], tmps[1]).and_then(|p| p.site()),
        SiteOp::Popcount { dst, src, width: Width::W32, tmps } => Popcount32::new(dst, src, tmps[0]).and_then(|p| p.site()),
        SiteOp::Memcpy { dst_base, dst_off, src_base, src_off, width, count, descending, tmp } => {
            Memcpy::new(dst_base, dst_off, src_base, src_off, tmp, width, count, descending).and_then(|p| p.site())
        }
        SiteOp::Memset { base, off, width, count, value } => Memset::new(base, off, width, count, value).and_then(|p| p.site()),
        SiteOp::Prefetch { base, off } => Prefetch::new(base, off).and_then(|p| p.site()),
        SiteOp::WideLoad { .. } => return Err("the wide load is not a kinsn".into()),
    };
    slots.map(|s| s.to_vec()).map_err(e)
}

/// Register effect of a kinsn site, derived from its proof sequence (what the verifier and
/// the interpreter execute): `uses` = registers read before any write on some path,
/// `defs` = registers written on every path and not read first. None for unknown ops or
/// invalid payloads (the analysis then stays conservative).
pub fn site_effects(registry: &kops_kinsn::Registry, sidecar: &Insn, call: &Insn) -> Option<kops_analysis::Effects> {
    use kops_analysis::{effects, RegSet};
    let op = registry.get(call.imm as u32)?;
    let proof = op.instantiate(sidecar.kinsn_payload()).ok()?;
    let n = proof.len();
    // Backward liveness over the proof (forward jumps only, "one past the end" allowed),
    // once with nothing live after it and once with everything live.
    let live_in = |after: RegSet| -> Option<RegSet> {
        let mut live = vec![after; n + 1];
        for pc in (0..n).rev() {
            let i = &proof[pc];
            if i.is_call() || i.is_exit() {
                return None;
            }
            let mut out = RegSet::EMPTY;
            if !(i.is_jump() && i.op() == kops_isa::op::JA) {
                out = out.union(live[pc + 1]);
            }
            if i.is_jump() {
                let t = i.target(pc)?;
                if t <= pc as i64 || t > n as i64 {
                    return None;
                }
                out = out.union(live[t as usize]);
            }
            let e = effects(i);
            live[pc] = out.minus(e.defs).union(e.uses);
        }
        Some(live[0])
    };
    let uses = live_in(RegSet::EMPTY)?;
    let all = RegSet(0x7ff);
    let defs = all.minus(live_in(all)?);
    Some(kops_analysis::Effects { uses: uses.without(10), defs })
}
