//! Payload field tables: every op declares its payload once, with [`payload!`], as a list
//! of `field: lowest bit, width, kind`. The table yields the codec ([`Payload`]: encode,
//! decode with reserved-bit rejection) and the per-field range checks, and `FIELDS`
//! documents the layout; the op adds only the rules that relate several fields
//! ([`EInsn::rules`](crate::EInsn::rules)) and its human-readable `describe`.
//!
//! [`Payload`]: kops_kinsn::payload::Payload

use kops_kinsn::payload::field_err;
use kops_kinsn::PayloadError;

/// How a field's value is stored in its bits and which values are valid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A register that is only read: r0..r10.
    Reg,
    /// A register that is written: r0..r9 (r10 is the read-only frame pointer).
    RegW,
    /// An unsigned value in `min..=max`, stored as is.
    Range(i64, i64),
    /// A two's complement value of the field's width (offsets).
    Signed,
    /// A one-bit flag.
    Flag,
    /// A power of two in `min..=max`, stored as its base-2 logarithm (chunk widths).
    Pow2(i64, i64),
    /// A value in `min..=max`, stored as `value - min` (counts from 1).
    Biased(i64, i64),
    /// One of `values`, stored shifted right by `shift` (BPF_OP codes, stored `>> 4`).
    OneOf(u32, &'static [u8]),
}

/// One row of a payload field table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Field {
    pub name: &'static str,
    pub lo: u32,
    pub width: u32,
    pub kind: Kind,
}

impl Field {
    fn mask(&self) -> u64 {
        ((1u64 << self.width) - 1) << self.lo
    }

    /// Check a value against the field's kind.
    pub fn check(&self, op: &str, v: i64) -> Result<(), PayloadError> {
        let range = |min: i64, max: i64, what: String| {
            if v < min || v > max {
                Err(field_err(op, self.name, v, what))
            } else {
                Ok(())
            }
        };
        match self.kind {
            Kind::Reg => range(0, 10, "a register r0..r10".into()),
            Kind::RegW => range(0, 9, "a writable register r0..r9".into()),
            Kind::Range(min, max) | Kind::Biased(min, max) => range(min, max, format!("{min}..={max}")),
            Kind::Flag => range(0, 1, "0 or 1".into()),
            Kind::Signed => {
                let half = 1i64 << (self.width - 1);
                range(-half, half - 1, format!("{}..={}", -half, half - 1))
            }
            Kind::Pow2(min, max) => {
                if v < min || v > max || v.count_ones() != 1 {
                    let mut ok = vec![];
                    let mut p = min;
                    while p <= max {
                        ok.push(p.to_string());
                        p *= 2;
                    }
                    let last = ok.pop().unwrap_or_default();
                    return Err(field_err(op, self.name, v, format!("{} or {last} bytes", ok.join(", "))));
                }
                Ok(())
            }
            Kind::OneOf(_, values) => {
                if values.iter().any(|&x| x as i64 == v) {
                    Ok(())
                } else {
                    let vs: Vec<String> = values.iter().map(|x| format!("{x:#x}")).collect();
                    Err(field_err(op, self.name, v, format!("one of {}", vs.join(", "))))
                }
            }
        }
    }

    /// The field's bits for a checked value.
    pub fn encode(&self, v: i64) -> u64 {
        let raw = match self.kind {
            Kind::Pow2(..) => v.trailing_zeros() as u64,
            Kind::Biased(min, _) => (v - min) as u64,
            Kind::OneOf(shift, _) => (v as u64) >> shift,
            _ => v as u64,
        };
        (raw << self.lo) & self.mask()
    }

    /// The field's value in a raw payload (not yet checked).
    pub fn decode(&self, raw: u64) -> i64 {
        let bits = (raw & self.mask()) >> self.lo;
        match self.kind {
            Kind::Signed => ((bits << (64 - self.width)) as i64) >> (64 - self.width),
            Kind::Pow2(..) => 1i64 << bits,
            Kind::Biased(min, _) => bits as i64 + min,
            Kind::OneOf(shift, _) => (bits << shift) as i64,
            _ => bits as i64,
        }
    }
}

/// Field value types of payload structs.
pub trait FieldValue: Copy {
    fn to_i64(self) -> i64;
    fn from_i64(v: i64) -> Self;
}

impl FieldValue for u8 {
    fn to_i64(self) -> i64 {
        self as i64
    }
    fn from_i64(v: i64) -> u8 {
        v as u8
    }
}

impl FieldValue for i16 {
    fn to_i64(self) -> i64 {
        self as i64
    }
    fn from_i64(v: i64) -> i16 {
        v as i16
    }
}

impl FieldValue for bool {
    fn to_i64(self) -> i64 {
        self as i64
    }
    fn from_i64(v: i64) -> bool {
        v != 0
    }
}

/// Check every field of a table, values in table order.
pub fn check_fields(op: &str, table: &[Field], values: &[i64]) -> Result<(), PayloadError> {
    for (f, &v) in table.iter().zip(values) {
        f.check(op, v)?;
    }
    Ok(())
}

/// Pack checked values (table order).
pub fn pack(table: &[Field], values: &[i64]) -> u64 {
    table.iter().zip(values).fold(0, |raw, (f, &v)| raw | f.encode(v))
}

/// Unpack a raw payload into values (table order), rejecting a payload wider than 52 bits
/// and bits that belong to no field.
pub fn unpack(op: &str, table: &[Field], raw: u64) -> Result<Vec<i64>, PayloadError> {
    if raw > kops_kinsn::MAX_PAYLOAD {
        return Err(PayloadError::TooWide(raw));
    }
    let used = table.iter().fold(0, |m, f| m | f.mask());
    let stray = raw & !used;
    if stray != 0 {
        return Err(PayloadError::Reserved { op: op.to_string(), bits: stray, payload: raw });
    }
    Ok(table.iter().map(|f| f.decode(raw)).collect())
}

/// Declare an op's payload once: the struct, its checked constructor `new` (fields in table
/// order), its [`OpInfo`](crate::OpInfo) (name, id, size bounds) and its field table, which
/// yields `FIELDS`, `field_values`, `check` and the
/// [`Payload`](kops_kinsn::payload::Payload) codec (which also runs the op's cross-field
/// [`EInsn::rules`](crate::EInsn::rules)).
///
/// ```text
/// payload! {
///     pub struct Rotate<const W: u8> {
///         dst: u8 = 0, 4, Kind::RegW;
///         /// Left-rotate amount.
///         k: u8 = 12, 6, Kind::Range(1, W as i64 - 1);
///     }
///     name if W == 64 { "rotate64" } else { "rotate32" }, id 1, max_proof 5, max_x86 24;
/// }
/// ```
#[macro_export]
macro_rules! payload {
    (
        $(#[$meta:meta])* pub struct $ty:ident;
        name $name:expr, id $id:expr, max_proof $mp:expr, max_x86 $mx:expr;
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
        pub struct $ty;
        $crate::payload! { @impl [] $ty { } $name, $id, $mp, $mx }
    };
    (
        $(#[$meta:meta])*
        pub struct $ty:ident $(<const $g:ident: $gt:ty>)? {
            $($(#[$fmeta:meta])* $field:ident: $fty:ty = $lo:expr, $width:expr, $kind:expr;)*
        }
        name $name:expr, id $id:expr, max_proof $mp:expr, max_x86 $mx:expr;
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub struct $ty $(<const $g: $gt>)? {
            $($(#[$fmeta])* pub $field: $fty,)*
        }
        impl $(<const $g: $gt>)? $ty $(<$g>)? {
            /// A checked payload (fields in table order).
            #[allow(clippy::too_many_arguments)]
            pub fn new($($field: $fty),*) -> Result<Self, kops_kinsn::PayloadError> {
                Self { $($field),* }.checked()
            }
        }
        $crate::payload! { @impl [$(const $g: $gt)?] $ty $(<$g>)? { $($field: $lo, $width, $kind;)* } $name, $id, $mp, $mx }
    };
    (@impl [$($g:tt)*] $ty:ty { $($field:ident : $lo:expr, $width:expr, $kind:expr;)* } $name:expr, $id:expr, $mp:expr, $mx:expr) => {
        impl<$($g)*> $crate::OpInfo for $ty {
            const NAME: &'static str = $name;
            const ID: u32 = $id;
            const MAX_PROOF: usize = $mp;
            const MAX_X86: usize = $mx;
        }
        impl<$($g)*> $ty {
            /// The payload field table (bit layout, kinds).
            pub const FIELDS: &'static [$crate::fields::Field] = &[
                $($crate::fields::Field { name: stringify!($field), lo: $lo, width: $width, kind: $kind },)*
            ];
            /// Field values in table order.
            pub fn field_values(&self) -> Vec<i64> {
                vec![$($crate::fields::FieldValue::to_i64(self.$field),)*]
            }
            /// Per-field checks from the table, then the op's cross-field rules.
            pub fn check(&self) -> Result<(), kops_kinsn::PayloadError> {
                $crate::fields::check_fields(<Self as $crate::OpInfo>::NAME, Self::FIELDS, &self.field_values())?;
                <Self as $crate::EInsn>::rules(self)
            }
            /// `self`, once [`check`](Self::check) accepts it.
            pub fn checked(self) -> Result<Self, kops_kinsn::PayloadError> {
                self.check()?;
                Ok(self)
            }
        }
        impl<$($g)*> kops_kinsn::payload::Payload for $ty {
            fn encode(&self) -> Result<u64, kops_kinsn::PayloadError> {
                self.check()?;
                Ok($crate::fields::pack(Self::FIELDS, &self.field_values()))
            }
            #[allow(unused_mut, unused_variables)]
            fn decode(raw: u64) -> Result<Self, kops_kinsn::PayloadError> {
                let v = $crate::fields::unpack(<Self as $crate::OpInfo>::NAME, Self::FIELDS, raw)?;
                let mut it = v.into_iter();
                Self { $($field: $crate::fields::FieldValue::from_i64(it.next().unwrap()),)* }.checked()
            }
        }
    };
}
