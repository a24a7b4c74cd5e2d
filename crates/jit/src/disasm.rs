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
