//! prefetch and speculation barrier: no-ops for the verifier (`ja +0`), hints for the CPU.

use kops_isa::Insn;
use kops_kinsn::payload::{check_reg, Fields, Packer, Payload};
use kops_kinsn::{EmitError, Emitted, PayloadError, X86EmitCtx};
use kops_x86::Mem;

use crate::{id, EInsn};

/// prefetch: payload bits 3:0 base, 19:4 off (i16). Proof `ja +0`; x86-64 `prefetcht0
/// [base + off]` (never faults, SSE baseline).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Prefetch {
    pub base: u8,
    pub off: i16,
}

impl Prefetch {
    pub fn new(base: u8, off: i16) -> Result<Prefetch, PayloadError> {
        let p = Prefetch { base, off };
        check_reg(Self::NAME, "base", base, false)?;
        Ok(p)
    }
}

impl Payload for Prefetch {
    fn encode(&self) -> Result<u64, PayloadError> {
        check_reg(Self::NAME, "base", self.base, false)?;
        Ok(Packer::default().put(0, 4, self.base as u64).put_i16(4, self.off).finish())
    }
    fn decode(raw: u64) -> Result<Self, PayloadError> {
        let mut f = Fields::new(Self::NAME, raw)?;
        let base = f.reg(0, "base", false)?;
        let off = f.i16(4);
        f.finish()?;
        Ok(Prefetch { base, off })
    }
}

impl EInsn for Prefetch {
    const NAME: &'static str = "prefetch";
    const ID: u32 = id::PREFETCH;
    const MAX_PROOF: usize = 1;
    const MAX_X86: usize = 10;

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
}

/// Speculation barrier: empty payload. Proof `ja +0`; x86-64 `lfence`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct SpecBarrier;

impl Payload for SpecBarrier {
    fn encode(&self) -> Result<u64, PayloadError> {
        Ok(0)
    }
    fn decode(raw: u64) -> Result<Self, PayloadError> {
        Fields::new(Self::NAME, raw)?.finish()?;
        Ok(SpecBarrier)
    }
}

impl EInsn for SpecBarrier {
    const NAME: &'static str = "spec_barrier";
    const ID: u32 = id::SPEC_BARRIER;
    const MAX_PROOF: usize = 1;
    const MAX_X86: usize = 3;

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
}
