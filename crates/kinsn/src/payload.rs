//! Payload codec helpers: bit fields of the 52-bit payload and their validation.

/// Largest payload (52 bits).
pub const MAX_PAYLOAD: u64 = (1u64 << 52) - 1;

/// A payload field is out of range, or the payload as a whole is malformed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PayloadError {
    #[error("{op}: payload field `{field}` = {value} is out of range ({expected})")]
    Field { op: String, field: &'static str, value: i64, expected: String },
    #[error("{op}: reserved payload bits {bits:#x} are set (payload {payload:#x})")]
    Reserved { op: String, bits: u64, payload: u64 },
    #[error("{op}: {msg}")]
    Invalid { op: String, msg: String },
    #[error("payload {0:#x} does not fit in 52 bits")]
    TooWide(u64),
}

/// A typed payload with its codec. `encode` validates the fields (a struct can hold
/// out-of-range values), `decode` rejects reserved bits and out-of-range fields.
pub trait Payload: Sized {
    fn encode(&self) -> Result<u64, PayloadError>;
    fn decode(raw: u64) -> Result<Self, PayloadError>;
}

/// Reads fields out of a raw payload and remembers which bits were consumed, so that
/// [`Fields::finish`] can reject stray bits.
pub struct Fields<'a> {
    op: &'a str,
    raw: u64,
    used: u64,
}

impl<'a> Fields<'a> {
    pub fn new(op: &'a str, raw: u64) -> Result<Fields<'a>, PayloadError> {
        if raw > MAX_PAYLOAD {
            return Err(PayloadError::TooWide(raw));
        }
        Ok(Fields { op, raw, used: 0 })
    }

    /// Unsigned field of `width` bits at `lo`.
    pub fn uint(&mut self, lo: u32, width: u32) -> u64 {
        let mask = (1u64 << width) - 1;
        self.used |= mask << lo;
        (self.raw >> lo) & mask
    }

    /// Signed (two's complement) 16-bit field at `lo`.
    pub fn i16(&mut self, lo: u32) -> i16 {
        self.uint(lo, 16) as u16 as i16
    }

    /// A 4-bit register field; `writable` excludes r10.
    pub fn reg(&mut self, lo: u32, field: &'static str, writable: bool) -> Result<u8, PayloadError> {
        let r = self.uint(lo, 4) as u8;
        check_reg(self.op, field, r, writable)?;
        Ok(r)
    }

    /// Field with an inclusive range check.
    pub fn ranged(&mut self, lo: u32, width: u32, field: &'static str, min: u64, max: u64) -> Result<u64, PayloadError> {
        let v = self.uint(lo, width);
        if v < min || v > max {
            return Err(field_err(self.op, field, v as i64, format!("{min}..={max}")));
        }
        Ok(v)
    }

    /// Reject any bit not consumed by a field.
    pub fn finish(self) -> Result<(), PayloadError> {
        let stray = self.raw & !self.used;
        if stray != 0 {
            return Err(PayloadError::Reserved { op: self.op.to_string(), bits: stray, payload: self.raw });
        }
        Ok(())
    }
}

/// Packs fields into a payload.
#[derive(Default)]
pub struct Packer(pub u64);

impl Packer {
    pub fn put(mut self, lo: u32, width: u32, v: u64) -> Packer {
        debug_assert!(v < (1u64 << width));
        self.0 |= (v & ((1u64 << width) - 1)) << lo;
        self
    }
    pub fn put_i16(self, lo: u32, v: i16) -> Packer {
        self.put(lo, 16, v as u16 as u64)
    }
    pub fn finish(self) -> u64 {
        self.0
    }
}

pub fn field_err(op: &str, field: &'static str, value: i64, expected: impl Into<String>) -> PayloadError {
    PayloadError::Field { op: op.to_string(), field, value, expected: expected.into() }
}

pub fn invalid(op: &str, msg: impl Into<String>) -> PayloadError {
    PayloadError::Invalid { op: op.to_string(), msg: msg.into() }
}

/// Registers: r0..r10 may be read; r0..r9 written (r10 is the read-only frame pointer).
pub fn check_reg(op: &str, field: &'static str, r: u8, writable: bool) -> Result<(), PayloadError> {
    let max = if writable { 9 } else { 10 };
    if r > max {
        let what = if writable { "a writable register r0..r9" } else { "a register r0..r10" };
        return Err(field_err(op, field, r as i64, what));
    }
    Ok(())
}

/// Check a range inclusive, for typed payload encoders.
pub fn check_range(op: &str, field: &'static str, v: i64, min: i64, max: i64) -> Result<(), PayloadError> {
    if v < min || v > max {
        return Err(field_err(op, field, v, format!("{min}..={max}")));
    }
    Ok(())
}
