//! Mapping of site operations to the EInsn operation set (`kops_einsn`).

use crate::SiteOp;
use kops_isa::Insn;

pub fn kinsn_site(o: &SiteOp) -> Result<Vec<Insn>, String> {
    Err(format!("no EInsn operation for `{o}` yet"))
}
