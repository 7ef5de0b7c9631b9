//! A CDR deserializer over a byte slice (either byte order): no std, no allocation.
//!
//! It reads the shapes ROS 2 messages have (structs, primitives, strings, sequences,
//! fixed arrays) and refuses the rest. Every length prefix is checked against the
//! bytes that remain before anything is read, so garbage fails fast.

use serde::de::{self, DeserializeOwned, DeserializeSeed, SeqAccess, Visitor};

use crate::WireError;

/// Decodes one `T` from the start of `body` (the bytes after the encapsulation
/// header); returns it and the number of bytes consumed.
pub(super) fn from_body<T: DeserializeOwned>(
    body: &[u8],
    big_endian: bool,
) -> Result<(T, usize), WireError> {
    let mut reader = SliceReader {
        input: body,
        pos: 0,
        big_endian,
    };
    let value = T::deserialize(&mut reader)?;
    Ok((value, reader.pos))
}

struct SliceReader<'de> {
    input: &'de [u8],
    pos: usize,
    big_endian: bool,
}

impl<'de> SliceReader<'de> {
    fn remaining(&self) -> usize {
        self.input.len() - self.pos
    }

    fn take(&mut self, n: usize) -> Result<&'de [u8], WireError> {
        if n > self.remaining() {
            return Err(WireError::Truncated);
        }
        let bytes = &self.input[self.pos..self.pos + n];
        self.pos += n;
        Ok(bytes)
    }

    fn take_array<const N: usize>(&mut self) -> Result<[u8; N], WireError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    /// Skips padding to a multiple of `size` from the start of the body.
    fn align(&mut self, size: usize) -> Result<(), WireError> {
        let misalignment = self.pos % size;
        if misalignment != 0 {
            self.take(size - misalignment)?;
        }
        Ok(())
    }

    /// A `u32` count of elements (sequence) or bytes (string, byte sequence).
    fn read_len(&mut self) -> Result<usize, WireError> {
        self.align(4)?;
        let raw = self.take_array::<4>()?;
        let len = if self.big_endian {
            u32::from_be_bytes(raw)
        } else {
            u32::from_le_bytes(raw)
        };
        Ok(len as usize)
    }
}

fn unrepresentable(what: &str) -> WireError {
    WireError::malformed(format_args!(
        "{what} cannot be represented in a ROS 2 message"
    ))
}

macro_rules! aligned {
    ($method:ident, $visit:ident, $ty:ty) => {
        fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, WireError> {
            const SIZE: usize = core::mem::size_of::<$ty>();
            self.align(SIZE)?;
            let raw = self.take_array::<SIZE>()?;
            visitor.$visit(if self.big_endian {
                <$ty>::from_be_bytes(raw)
            } else {
                <$ty>::from_le_bytes(raw)
            })
        }
    };
}

impl<'de> de::Deserializer<'de> for &mut SliceReader<'de> {
    type Error = WireError;

    fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, WireError> {
        Err(WireError::malformed(
            "CDR is not self-describing; the type must say what it reads",
        ))
    }

    fn deserialize_bool<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, WireError> {
        match self.take(1)?[0] {
            0 => visitor.visit_bool(false),
            1 => visitor.visit_bool(true),
            b => Err(WireError::InvalidBool(b)),
        }
    }

    fn deserialize_i8<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, WireError> {
        visitor.visit_i8(i8::from_le_bytes(self.take_array::<1>()?))
    }

    fn deserialize_u8<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, WireError> {
        visitor.visit_u8(self.take(1)?[0])
    }

    aligned!(deserialize_i16, visit_i16, i16);
    aligned!(deserialize_i32, visit_i32, i32);
    aligned!(deserialize_i64, visit_i64, i64);
    aligned!(deserialize_u16, visit_u16, u16);
    aligned!(deserialize_u32, visit_u32, u32);
    aligned!(deserialize_u64, visit_u64, u64);
    aligned!(deserialize_f32, visit_f32, f32);
    aligned!(deserialize_f64, visit_f64, f64);

    fn deserialize_char<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, WireError> {
        let code = self.read_len()? as u32;
        match char::from_u32(code) {
            Some(c) => visitor.visit_char(c),
            None => Err(WireError::malformed(format_args!(
                "{code:#x} is not a Unicode scalar value"
            ))),
        }
    }

    fn deserialize_str<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, WireError> {
        let len = self.read_len()?;
        if len == 0 {
            // Some DDS implementations send an empty string without its NUL.
            return visitor.visit_borrowed_str("");
        }
        let bytes = self.take(len)?;
        let (text, nul) = bytes.split_at(len - 1);
        if nul != [0] {
            return Err(WireError::malformed("string is not NUL-terminated"));
        }
        let text = core::str::from_utf8(text).map_err(|_| WireError::InvalidUtf8)?;
        visitor.visit_borrowed_str(text)
    }

    fn deserialize_string<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, WireError> {
        self.deserialize_str(visitor)
    }

    fn deserialize_bytes<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, WireError> {
        let len = self.read_len()?;
        visitor.visit_borrowed_bytes(self.take(len)?)
    }

    fn deserialize_byte_buf<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, WireError> {
        self.deserialize_bytes(visitor)
    }

    fn deserialize_option<V: Visitor<'de>>(self, _: V) -> Result<V::Value, WireError> {
        Err(unrepresentable("an Option"))
    }

    fn deserialize_unit<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, WireError> {
        visitor.visit_unit()
    }

    fn deserialize_unit_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        visitor: V,
    ) -> Result<V::Value, WireError> {
        visitor.visit_unit()
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        visitor: V,
    ) -> Result<V::Value, WireError> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, WireError> {
        let len = self.read_len()?;
        // Every element the schema allows takes at least one byte: a count larger
        // than the rest of the input is a lie, refused before reading anything.
        if len > self.remaining() {
            return Err(WireError::Truncated);
        }
        visitor.visit_seq(Elements {
            reader: self,
            left: len,
        })
    }

    fn deserialize_tuple<V: Visitor<'de>>(
        self,
        len: usize,
        visitor: V,
    ) -> Result<V::Value, WireError> {
        visitor.visit_seq(Elements {
            reader: self,
            left: len,
        })
    }

    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        len: usize,
        visitor: V,
    ) -> Result<V::Value, WireError> {
        self.deserialize_tuple(len, visitor)
    }

    fn deserialize_map<V: Visitor<'de>>(self, _: V) -> Result<V::Value, WireError> {
        Err(unrepresentable("a map"))
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, WireError> {
        self.deserialize_tuple(fields.len(), visitor)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _: &'static str,
        _: &'static [&'static str],
        _: V,
    ) -> Result<V::Value, WireError> {
        Err(unrepresentable("an enum"))
    }

    fn deserialize_identifier<V: Visitor<'de>>(self, _: V) -> Result<V::Value, WireError> {
        Err(WireError::malformed("CDR has no field identifiers"))
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, WireError> {
        Err(WireError::malformed(
            "CDR cannot skip a value of unknown type",
        ))
    }

    fn is_human_readable(&self) -> bool {
        false
    }
}

/// The elements of a sequence, fixed array or struct.
struct Elements<'a, 'de> {
    reader: &'a mut SliceReader<'de>,
    left: usize,
}

impl<'de> SeqAccess<'de> for Elements<'_, 'de> {
    type Error = WireError;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, WireError> {
        if self.left == 0 {
            return Ok(None);
        }
        self.left -= 1;
        seed.deserialize(&mut *self.reader).map(Some)
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.left)
    }
}
