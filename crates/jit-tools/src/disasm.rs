//! Disassembly of native code with iced-x86 (for jit-diff and tests; not trusted code).

use iced_x86::{Decoder, DecoderOptions, Formatter, Instruction, IntelFormatter};

/// One decoded instruction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NativeInsn {
    pub offset: usize,
    pub bytes: Vec<u8>,
    pub text: String,
    pub mnemonic: String,
    /// Branch target (offset in the same buffer) of a near jump or call, if any.
    pub target: Option<u64>,
}

pub fn formatter() -> IntelFormatter {
    let mut f = IntelFormatter::new();
    let o = f.options_mut();
    o.set_hex_prefix("0x");
    o.set_hex_suffix("");
    o.set_uppercase_hex(false);
    o.set_space_after_operand_separator(true);
    o.set_branch_leading_zeros(false);
    o.set_show_branch_size(false);
    f
}

/// Decode all of `code`, instruction offsets relative to `ip` (targets too).
pub fn disassemble(code: &[u8], ip: u64) -> Vec<NativeInsn> {
    let mut d = Decoder::with_ip(64, code, ip, DecoderOptions::NONE);
    let mut f = formatter();
    let mut out = Vec::new();
    let mut ins = Instruction::default();
    while d.can_decode() {
        let pos = d.position();
        d.decode_out(&mut ins);
        let mut text = String::new();
        if ins.is_invalid() {
            text = "(bad)".into();
        } else {
            f.format(&ins, &mut text);
        }
        let target = if ins.is_jmp_short_or_near() || ins.is_jcc_short_or_near() || ins.is_call_near() {
            Some(ins.near_branch_target())
        } else {
            None
        };
        let mut mn = String::new();
        f.format_mnemonic(&ins, &mut mn);
        out.push(NativeInsn { offset: pos, bytes: code[pos..pos + ins.len()].to_vec(), text, mnemonic: mn, target });
    }
    out
}

/// Number of instructions in `code`.
pub fn count(code: &[u8]) -> usize {
    let mut d = Decoder::with_ip(64, code, 0, DecoderOptions::NONE);
    let mut n = 0;
    let mut ins = Instruction::default();
    while d.can_decode() {
        d.decode_out(&mut ins);
        n += 1;
    }
    n
}

/// Every native instruction of a compiled program with the input slot it belongs to
/// (None: a prologue, or the runtime stubs after the functions). `code` is the image's
/// bytes as linked at `base` ([`kops_jit::JitImage::link`]) or [`kops_jit::JitImage::code`].
pub fn per_slot(image: &kops_jit::JitImage, code: &[u8], base: u64) -> Vec<(Option<usize>, NativeInsn)> {
    let mut owner: Vec<Option<usize>> = vec![None; code.len()];
    for (slot, &(s, e)) in image.insn_ranges.iter().enumerate() {
        for b in owner.iter_mut().take(e as usize).skip(s as usize) {
            *b = Some(slot);
        }
    }
    disassemble(code, base).into_iter().map(|i| (owner.get(i.offset).copied().flatten(), i)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use kops_isa::{op, Insn};

    struct NoEnv;
    impl kops_jit::Resolver for NoEnv {
        fn helper(&self, _: i32) -> Option<u64> {
            None
        }
        fn ld_imm64(&self, _: usize, _: &Insn, _: &Insn) -> Result<u64, String> {
            Err("none".into())
        }
    }

    #[test]
    fn slots_own_their_instructions() {
        // 0: r0 = 1 (mov eax, 1); 1-2: r1 = imm64 (movabs); 3: r0 += r1 (add); 4: exit.
        let mut p = vec![Insn::mov64_imm(0, 1)];
        p.extend(Insn::ld_imm64(1, 0, 0x1122_3344_5566_7788));
        p.extend([Insn::alu64_reg(op::ADD, 0, 1), Insn::exit()]);
        let mut o = kops_jit::JitOptions::runtime().unwrap();
        o.call_mode = kops_jit::CallMode::Absolute;
        let img = kops_jit::compile(&p, &o, &NoEnv).unwrap();
        let v = per_slot(&img, &img.code, 0);
        let of = |slot: usize| -> Vec<String> { v.iter().filter(|(s, _)| *s == Some(slot)).map(|(_, i)| i.mnemonic.clone()).collect() };
        assert_eq!(of(0), ["mov"]);
        assert_eq!(of(1), ["mov"]);
        assert!(of(2).is_empty());
        assert_eq!(of(3), ["add"]);
        assert_eq!(of(4), ["leave", "ret"]);
        // The prologue belongs to no slot.
        assert_eq!(v[0].0, None);
    }
}
