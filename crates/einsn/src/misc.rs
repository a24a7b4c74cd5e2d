//! prefetch and speculation barrier: no-ops for the verifier (`ja +0`), hints for the CPU.

use kops_isa::Insn;
use kops_kinsn::{EmitError, Emitted, X86EmitCtx};
use kops_x86::Mem;

use crate::classes::{assignments, Class};
use crate::fields::Kind;
use crate::EInsn;

crate::payload! {
    /// prefetch: payload bits 3:0 base, 19:4 off (i16). Proof `ja +0`; x86-64 `prefetcht0
    /// [base + off]` (never faults, SSE baseline).
    pub struct Prefetch {
        base: u8 = 0, 4, Kind::Reg;
        off: i16 = 4, 16, Kind::Signed;
    }
    name "prefetch", id 12, max_proof 1, max_x86 10;
}

impl EInsn for Prefetch {
    fn classes() -> Vec<Class<Self>> {
        let mut v = vec![];
        for a in assignments(&[false]) {
            for off in [0i16, 64, -1] {
                v.push(Class::new(format!("r{} + {off}", a[0]), Prefetch::new(a[0], off), vec![]));
            }
        }
        Class::collect(v)
    }

    fn proof(&self) -> Vec<Insn> {
        vec![Insn::ja(0)]
    }
    fn describe(&self) -> String {
        format!("prefetch(r{} {:+})", self.base, self.off)
    }
    fn emit_x86(&self, ctx: &mut X86EmitCtx) -> Result<Emitted, EmitError> {
        let b = ctx.reg(self.base);
        ctx.asm.prefetcht0(Mem::new(b, self.off as i32));
        Ok(Emitted::Native)
    }

    fn place(&self, pick: &mut dyn FnMut(i64, i64) -> i64, r: &mut [u64; 11], base: u64, buf: usize) {
        if pick(0, 1) == 1 {
            r[self.base as usize] = base.wrapping_add(pick(0, buf as i64 - 1) as u64);
        }
    }
    fn writes(&self) -> Vec<u8> {
        vec![]
    }
    fn meaning(&self, _: &[u64; 11], mb: &[u8], _: u64, _: &[u64; 11], ma: &[u8]) -> Result<(), String> {
        (mb == ma).then_some(()).ok_or_else(|| "prefetch changed memory".into())
    }
}

crate::payload! {
    /// Speculation barrier: empty payload. Proof `ja +0`; x86-64 `lfence`.
    pub struct SpecBarrier;
    name "spec_barrier", id 13, max_proof 1, max_x86 3;
}

impl EInsn for SpecBarrier {
    fn classes() -> Vec<Class<Self>> {
        vec![Class { label: "barrier".into(), payload: SpecBarrier, temps: vec![] }]
    }

    fn proof(&self) -> Vec<Insn> {
        vec![Insn::ja(0)]
    }
    fn describe(&self) -> String {
        "speculation barrier".into()
    }
    fn emit_x86(&self, ctx: &mut X86EmitCtx) -> Result<Emitted, EmitError> {
        ctx.asm.lfence();
        Ok(Emitted::Native)
    }

    fn writes(&self) -> Vec<u8> {
        vec![]
    }
    fn meaning(&self, _: &[u64; 11], mb: &[u8], _: u64, _: &[u64; 11], ma: &[u8]) -> Result<(), String> {
        (mb == ma).then_some(()).ok_or_else(|| "barrier changed memory".into())
    }
}

