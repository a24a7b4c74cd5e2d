//! JIT a program as the kernel's verifier left it (`xlated`, from `BPF_OBJ_GET_INFO_BY_FD`),
//! so that our output can be compared with the kernel's jited image instruction for
//! instruction: every verifier rewrite (context access conversion, helper inlining,
//! divide guards, map pointers) is already in the input.
//!
//! The dump differs from what the JIT saw in a few encodings, undone here:
//! - a bpf-to-bpf call keeps its pc-relative target in `off` and the subprogram index in
//!   `imm` (`jit_subprogs`); we move `off` back to `imm`;
//! - map references are `ld_imm64 src=PSEUDO_MAP_FD/VALUE imm=map id`; the JIT saw a
//!   kernel address, so we load a kernel-looking 64-bit constant (same `movabs` encoding);
//! - helper calls keep `imm = func - __bpf_call_base`; any address does (rel32 is fixed size).

use kops_isa::{op, Insn};

use crate::Resolver;

/// Undo the dump encodings (see the module comment).
///
/// `fd_array`: the program was loaded with map references in fd_array form
/// (`PSEUDO_MAP_IDX`/`IDX_VALUE`). A program with subprograms is JITed (`jit_subprogs`)
/// before the verifier clears `ld_imm64`'s `src_reg` (`convert_pseudo_ld_imm64` runs
/// later), and the JIT's `detect_reg_usage` reads every `src_reg` field: an
/// `IDX_VALUE` (6) reference then counts as a use of r6 and rbx is saved. The dump shows
/// those as `MAP_VALUE` (2) / `MAP_FD` (1); we put the original values back so our JIT sees
/// what the kernel's saw. Single-function programs are JITed after the clearing
/// (their 1/2 stay: neither names a callee-saved register).
pub fn prepare(xlated: &[Insn], fd_array: bool) -> Vec<Insn> {
    let second = crate::fixup::second_slots(xlated);
    let multi = xlated.iter().enumerate().any(|(pc, i)| {
        !second[pc] && ((i.is_call() && i.src == op::PSEUDO_CALL) || (i.is_ld_imm64() && i.src == op::PSEUDO_FUNC))
    });
    xlated
        .iter()
        .enumerate()
        .map(|(pc, i)| {
            let mut i = *i;
            if second[pc] {
                return i;
            }
            if i.is_call() && i.src == op::PSEUDO_CALL {
                i.imm = i.off as i32;
                i.off = 0;
            }
            if i.is_ld_imm64() && matches!(i.src, op::PSEUDO_MAP_FD | op::PSEUDO_MAP_VALUE) {
                i.src = match (multi, fd_array, i.src) {
                    (true, true, op::PSEUDO_MAP_FD) => op::PSEUDO_MAP_IDX,
                    (true, true, _) => op::PSEUDO_MAP_IDX_VALUE,
                    (true, false, s) => s,
                    (false, _, s) => s,
                };
            }
            i
        })
        .collect()
}

/// Resolves everything to kernel-looking addresses.
pub struct XlatedResolver;

/// Where the fake kernel objects live (direct map, like real `struct bpf_map` pointers).
pub const FAKE_MAP_BASE: u64 = 0xffff_8881_0000_0000;
pub const FAKE_TEXT_BASE: u64 = 0xffff_ffff_8100_0000;

impl Resolver for XlatedResolver {
    fn helper(&self, id: i32) -> Option<u64> {
        Some(FAKE_TEXT_BASE.wrapping_add(id as i64 as u64))
    }
    fn ld_imm64(&self, _pc: usize, lo: &Insn, hi: &Insn) -> Result<u64, String> {
        Ok(FAKE_MAP_BASE + ((lo.imm as u32 as u64) << 12) + hi.imm as u32 as u64)
    }
}
