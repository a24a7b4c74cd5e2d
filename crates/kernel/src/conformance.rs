//! Running conformance-suite programs in the kernel.
//!
//! BPF_PROG_TEST_RUN reports only the low 32 bits of r0, and the suite's programs expect
//! `r1 = pointer to the memory, r2 = its length` where a real program type would give a
//! context. So each test body is wrapped:
//!
//! ```text
//! main (XDP, r1 = xdp_md):                 test body (a bpf-to-bpf subprogram):
//!   r6 = xdp->data; r7 = xdp->data_end        the suite's instructions, unchanged;
//!   if r6 + N > r7: return 0                  its `exit` returns to main
//!   r1 = r6 (0 when there is no memory); r2 = N
//!   call test
//!   r1 = &result (direct value of array map 0)
//!   result.r0 = r0; result.ran = 1
//!   return XDP_PASS
//! ```
//!
//! The memory is the packet (padded to the 14 bytes the kernel's test-run demands; the
//! bounds check against N is what the verifier sees, so the test may touch exactly N
//! bytes). Packet pointers allow the pointer arithmetic suite programs do (a context
//! pointer would not), and a static subprogram inherits the caller's packet range.
//! A program the verifier refuses comes back as [`KernelConformance::Rejected`] with the
//! reason and the instruction index inside the test body.

use kops_isa::{op, Insn};
use kops_object::{map_type, MapDef, MapOrigin};

use crate::map::MapSet;
use crate::prog::{load_program, LoadOptions, TestRun};
use crate::KernelError;

/// The kernel's answer for one suite program.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KernelConformance {
    /// The verifier accepted the program and it ran: the full 64-bit r0.
    Ran { r0: u64 },
    /// The verifier refused it.
    Rejected {
        /// The verifier's message.
        reason: String,
        /// Index inside the test body (the suite's program), when the log names one.
        insn: Option<usize>,
        /// Full verifier log (indices in it are of the wrapped program).
        log: String,
    },
}

const XDP: u32 = 6;
const XDP_PASS: i32 = 2;

/// The wrapper, for memory of `n` bytes; the test body follows it.
fn wrapper(n: usize) -> Vec<Insn> {
    let mut w = vec![
        Insn::ldx(op::W, 6, 1, 0), // r6 = xdp->data
        Insn::ldx(op::W, 7, 1, 4), // r7 = xdp->data_end
        Insn::mov64_reg(8, 6),
        Insn::alu64_imm(op::ADD, 8, n as i32),
        Insn::jmp_reg(op::JGT, 8, 7, 0), // patched: to the failure exit
        if n == 0 { Insn::mov64_imm(1, 0) } else { Insn::mov64_reg(1, 6) },
        Insn::mov64_imm(2, n as i32),
        Insn::new(op::JMP | op::CALL, 0, op::PSEUDO_CALL, 0, 0), // patched: to the test body
    ];
    w.extend(Insn::ld_imm64(1, op::PSEUDO_MAP_IDX_VALUE, 0)); // map 0, offset 0
    w.extend([
        Insn::stx(op::DW, 1, 0, 0),
        Insn::st(op::DW, 1, 8, 1),
        Insn::mov64_imm(0, XDP_PASS),
        Insn::exit(),
    ]);
    let fail = w.len();
    w.extend([Insn::mov64_imm(0, 0), Insn::exit()]);
    w[4].off = (fail - 5) as i16;
    let body = w.len();
    w[7].imm = (body - 8) as i32;
    w
}

/// Runs one suite program (`insns`, as assembled) on memory `mem` in the kernel.
pub fn run(insns: &[Insn], mem: &[u8]) -> Result<KernelConformance, KernelError> {
    if mem.len() > 3000 {
        return Err(KernelError::Invalid(format!(
            "conformance memory of {} bytes is larger than one test-run packet page",
            mem.len()
        )));
    }
    let result_map = MapDef::new("kops_conf_r0", MapOrigin::GlobalData, map_type::ARRAY, 4, 16, 1);
    let maps = MapSet::create(std::slice::from_ref(&result_map))?;
    let mut prog = wrapper(mem.len());
    let body = prog.len();
    prog.extend_from_slice(insns);
    let opts = LoadOptions {
        name: "kops_conf".into(),
        prog_type: XDP,
        log_level: 0,
        ..LoadOptions::default()
    };
    let loaded = match load_program(&prog, &opts, &maps.fd_array()) {
        Ok(p) => p,
        Err(KernelError::Rejected { message, insn, log, .. }) => {
            return Ok(KernelConformance::Rejected {
                reason: message,
                insn: insn.and_then(|i| i.checked_sub(body)),
                log,
            })
        }
        Err(e) => return Err(e),
    };
    let mut packet = mem.to_vec();
    packet.resize(mem.len().max(14), 0);
    let res = loaded.test_run(&TestRun { data_in: Some(&packet), ..TestRun::default() })?;
    let value = maps.maps[0]
        .lookup(&0u32.to_ne_bytes())?
        .and_then(|v| v.into_iter().next())
        .ok_or_else(|| KernelError::Invalid("conformance result map has no element 0".into()))?;
    let r0 = u64::from_ne_bytes(value[0..8].try_into().unwrap());
    let ran = u64::from_ne_bytes(value[8..16].try_into().unwrap());
    if ran != 1 || res.retval != XDP_PASS as u32 {
        return Err(KernelError::Invalid(format!(
            "the wrapped program did not reach its store of r0 (XDP return {}, marker {ran})",
            res.retval
        )));
    }
    Ok(KernelConformance::Ran { r0 })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrapper_jumps_land_where_intended() {
        for n in [0usize, 8, 100] {
            let w = wrapper(n);
            // The bounds check goes to `r0 = 0; exit`, the call to the first body slot.
            let fail = w[4].target(4).unwrap() as usize;
            assert_eq!(w[fail], Insn::mov64_imm(0, 0));
            assert!(w[fail + 1].is_exit());
            assert_eq!(w[7].target(7).unwrap() as usize, w.len());
        }
    }
}
