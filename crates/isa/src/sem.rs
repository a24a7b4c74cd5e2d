//! The meaning of the ALU and conditional-jump operations on plain integers, one definition
//! for every width: the interpreter and the test evaluators all compute through these.
//!
//! Each returns `None` for an operation code that has no meaning at that class.

use crate::op;

macro_rules! alu_fn {
    ($(#[$m:meta])* $name:ident, $u:ty, $i:ty, $mask:expr, |$src:ident, $off:ident| $movsx:expr) => {
        $(#[$m])*
        #[inline(always)]
        pub fn $name(opc: u8, $off: i16, dst: $u, $src: $u) -> Option<$u> {
            let src = $src;
            Some(match opc {
                op::ADD => dst.wrapping_add(src),
                op::SUB => dst.wrapping_sub(src),
                op::MUL => dst.wrapping_mul(src),
                op::DIV => {
                    if src == 0 {
                        0
                    } else if $off == 1 {
                        (dst as $i).wrapping_div(src as $i) as $u
                    } else {
                        dst / src
                    }
                }
                op::MOD => {
                    if src == 0 {
                        dst
                    } else if $off == 1 {
                        (dst as $i).wrapping_rem(src as $i) as $u
                    } else {
                        dst % src
                    }
                }
                op::OR => dst | src,
                op::AND => dst & src,
                op::XOR => dst ^ src,
                op::LSH => dst << (src & $mask),
                op::RSH => dst >> (src & $mask),
                op::ARSH => ((dst as $i) >> (src & $mask)) as $u,
                op::NEG => (dst as $i).wrapping_neg() as $u,
                op::MOV => $movsx,
                _ => return None,
            })
        }
    };
}

alu_fn!(
    /// 64-bit ALU: `off` 1 selects signed DIV/MOD, 8/16/32 a sign-extending MOV.
    alu64, u64, i64, 63,
    |src, off| match off {
        8 => src as i8 as i64 as u64,
        16 => src as i16 as i64 as u64,
        32 => src as i32 as i64 as u64,
        _ => src,
    }
);

alu_fn!(
    /// 32-bit ALU: `off` 1 selects signed DIV/MOD, 8/16 a sign-extending MOV.
    alu32, u32, i32, 31,
    |src, off| match off {
        8 => src as i8 as i32 as u32,
        16 => src as i16 as i32 as u32,
        _ => src,
    }
);

macro_rules! cond_fn {
    ($(#[$m:meta])* $name:ident, $u:ty, $i:ty) => {
        $(#[$m])*
        #[inline(always)]
        pub fn $name(opc: u8, a: $u, b: $u) -> Option<bool> {
            Some(match opc {
                op::JEQ => a == b,
                op::JNE => a != b,
                op::JGT => a > b,
                op::JGE => a >= b,
                op::JLT => a < b,
                op::JLE => a <= b,
                op::JSET => a & b != 0,
                op::JSGT => (a as $i) > (b as $i),
                op::JSGE => (a as $i) >= (b as $i),
                op::JSLT => (a as $i) < (b as $i),
                op::JSLE => (a as $i) <= (b as $i),
                _ => return None,
            })
        }
    };
}

cond_fn!(
    /// Whether a JMP-class conditional jump is taken.
    cond64, u64, i64
);
cond_fn!(
    /// Whether a JMP32-class conditional jump is taken (low 32 bits compared).
    cond32, u32, i32
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn widths_and_signedness() {
        assert_eq!(alu64(op::DIV, 1, (-7i64) as u64, 2), Some((-3i64) as u64));
        assert_eq!(alu32(op::DIV, 1, (-7i32) as u32, 2), Some((-3i32) as u32));
        assert_eq!(alu64(op::MOD, 0, 7, 0), Some(7));
        assert_eq!(alu64(op::MOV, 32, 0xffff_ffff, 0x8000_0000), Some(0xffff_ffff_8000_0000));
        assert_eq!(alu32(op::LSH, 0, 1, 33), Some(2));
        assert_eq!(alu64(op::END, 0, 1, 1), None);
        assert_eq!(cond32(op::JSLT, 0xffff_ffff, 0), Some(true));
        assert_eq!(cond64(op::JSLT, 0xffff_ffff, 0), Some(false));
        assert_eq!(cond64(op::JA, 0, 0), None);
    }
}
