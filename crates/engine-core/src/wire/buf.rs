//! The protocol buffers encoding's few primitives, as the codec needs them: varints,
//! field keys, fixed 64-bit values and length-delimited bytes, written to a `Vec<u8>`
//! and read from a slice with every length checked.

use crate::Result;
use crate::core_error::CoreError;

/// How a field's value is laid out.
pub(super) const VARINT: u8 = 0;
pub(super) const FIXED64: u8 = 1;
pub(super) const LEN: u8 = 2;
pub(super) const FIXED32: u8 = 5;

/// The largest field number protocol buffers allow.
const MAX_FIELD: u32 = (1 << 29) - 1;

/// Appends `value` as a varint.
pub(super) fn put_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

/// How many bytes `value` takes as a varint.
pub(super) fn varint_len(value: u64) -> usize {
    // One byte per started group of seven bits, and one for zero.
    (64 - (value | 1).leading_zeros() as usize).div_ceil(7)
}

/// Appends the key of field `field` laid out as `wire_type`.
pub(super) fn put_key(out: &mut Vec<u8>, field: u32, wire_type: u8) {
    put_varint(out, (u64::from(field) << 3) | u64::from(wire_type));
}

/// How many bytes the key of field `field` takes.
pub(super) fn key_len(field: u32) -> usize {
    varint_len(u64::from(field) << 3)
}

/// Appends field `field` holding `bytes` (a string, bytes, or an encoded message).
pub(super) fn put_bytes(out: &mut Vec<u8>, field: u32, bytes: &[u8]) {
    put_key(out, field, LEN);
    put_varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

/// How many bytes field `field` holding `len` bytes takes.
pub(super) fn bytes_field_len(field: u32, len: usize) -> usize {
    key_len(field) + varint_len(len as u64) + len
}

/// Appends field `field` holding `value` as eight little-endian bytes.
pub(super) fn put_fixed64(out: &mut Vec<u8>, field: u32, value: u64) {
    put_key(out, field, FIXED64);
    out.extend_from_slice(&value.to_le_bytes());
}

/// Appends field `field` holding `value` as a varint.
pub(super) fn put_varint_field(out: &mut Vec<u8>, field: u32, value: u64) {
    put_key(out, field, VARINT);
    put_varint(out, value);
}

/// One field's value as read.
#[derive(Debug, Clone, Copy)]
pub(super) enum Value<'a> {
    Varint(u64),
    Fixed64(u64),
    Len(&'a [u8]),
    Fixed32,
}

impl<'a> Value<'a> {
    /// The value of field `what`, which must be a varint.
    pub(super) fn varint(self, what: &str) -> Result<u64> {
        match self {
            Self::Varint(value) => Ok(value),
            _ => Err(wrong_type(what)),
        }
    }

    /// The value of field `what`, which must be eight fixed bytes.
    pub(super) fn fixed64(self, what: &str) -> Result<u64> {
        match self {
            Self::Fixed64(value) => Ok(value),
            _ => Err(wrong_type(what)),
        }
    }

    /// The value of field `what`, which must be length-delimited.
    pub(super) fn bytes(self, what: &str) -> Result<&'a [u8]> {
        match self {
            Self::Len(bytes) => Ok(bytes),
            _ => Err(wrong_type(what)),
        }
    }

    /// The value of field `what`, which must be a UTF-8 string.
    pub(super) fn str(self, what: &str) -> Result<&'a str> {
        std::str::from_utf8(self.bytes(what)?)
            .map_err(|_| corrupt(format!("field {what} is not UTF-8")))
    }
}

/// Reads the fields of one encoded message, in the order they were written.
#[derive(Debug)]
pub(super) struct Fields<'a> {
    rest: &'a [u8],
}

impl<'a> Fields<'a> {
    pub(super) fn new(bytes: &'a [u8]) -> Self {
        Self { rest: bytes }
    }

    /// The next field's number and value, `None` at the end.
    pub(super) fn next_field(&mut self) -> Result<Option<(u32, Value<'a>)>> {
        if self.rest.is_empty() {
            return Ok(None);
        }
        let key = self.varint()?;
        // Field numbers run from 1 to 2^29 - 1.
        let field = u32::try_from(key >> 3)
            .ok()
            .filter(|&field| (1..=MAX_FIELD).contains(&field))
            .ok_or_else(|| corrupt(format!("field number {} is out of range", key >> 3)))?;
        let value = match (key & 7) as u8 {
            VARINT => Value::Varint(self.varint()?),
            FIXED64 => Value::Fixed64(u64::from_le_bytes(*self.take_array::<8>()?)),
            LEN => {
                let len = self.varint()?;
                let len = usize::try_from(len)
                    .ok()
                    .filter(|&len| len <= self.rest.len())
                    .ok_or_else(|| corrupt(format!("field {field} is cut short")))?;
                let (bytes, rest) = self.rest.split_at(len);
                self.rest = rest;
                Value::Len(bytes)
            }
            FIXED32 => {
                self.take_array::<4>()?;
                Value::Fixed32
            }
            other => {
                return Err(corrupt(format!(
                    "field {field} has wire type {other}, which is not in use"
                )));
            }
        };
        Ok(Some((field, value)))
    }

    fn varint(&mut self) -> Result<u64> {
        let mut value = 0u64;
        for (i, &byte) in self.rest.iter().enumerate().take(10) {
            value |= u64::from(byte & 0x7f) << (7 * i);
            if byte < 0x80 {
                // The tenth byte may only hold the top bit.
                if i == 9 && byte > 1 {
                    break;
                }
                self.rest = &self.rest[i + 1..];
                return Ok(value);
            }
        }
        Err(corrupt("a varint is cut short or too long".to_owned()))
    }

    fn take_array<const N: usize>(&mut self) -> Result<&'a [u8; N]> {
        let (array, rest) = self
            .rest
            .split_first_chunk::<N>()
            .ok_or_else(|| corrupt(format!("a {N}-byte value is cut short")))?;
        self.rest = rest;
        Ok(array)
    }
}

/// The error for bytes that are not what the codec expects.
pub(super) fn corrupt(why: String) -> crate::Error {
    CoreError::Wire { why }.into()
}

fn wrong_type(what: &str) -> crate::Error {
    corrupt(format!("field {what} has the wrong wire type"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints_round_trip_at_every_length() {
        for shift in 0..64 {
            for value in [1u64 << shift, (1u64 << shift) - 1, u64::MAX >> shift] {
                let mut out = Vec::new();
                put_varint(&mut out, value);
                assert_eq!(out.len(), varint_len(value), "{value}");
                let mut fields = Fields::new(&out);
                assert_eq!(fields.varint().unwrap(), value);
                assert!(fields.rest.is_empty());
            }
        }
    }

    #[test]
    fn an_overlong_varint_is_refused() {
        let mut fields = Fields::new(&[0xff; 11]);
        assert!(fields.varint().is_err());
        let mut fields = Fields::new(&[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02]);
        assert!(fields.varint().is_err());
    }
}
