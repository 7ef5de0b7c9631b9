//! A CDR little-endian serializer into a byte slice: no std, no allocation.
//!
//! It writes what `cdr-encoding` writes for the shapes ROS 2 messages have (structs,
//! primitives, strings, sequences, fixed arrays) and refuses the rest (enums,
//! options, maps), which have no `.msg` spelling.

use core::fmt;
use serde::ser::{self, Impossible, Serialize};

use super::{ENCAPSULATION_CDR_LE, HEADER_LEN};
use crate::WireError;

/// Writes the header and `value`'s body into `buf`; returns the bytes written.
pub(super) fn to_slice<T: Serialize + ?Sized>(
    value: &T,
    buf: &mut [u8],
) -> Result<usize, WireError> {
    let mut writer = SliceWriter { buf, pos: 0 };
    writer.write(&ENCAPSULATION_CDR_LE)?;
    value.serialize(&mut writer)?;
    Ok(writer.pos)
}

struct SliceWriter<'a> {
    buf: &'a mut [u8],
    pos: usize,
}

impl SliceWriter<'_> {
    fn write(&mut self, bytes: &[u8]) -> Result<(), WireError> {
        let too_small = WireError::BufferTooSmall {
            capacity: self.buf.len(),
        };
        let end = self.pos.checked_add(bytes.len()).ok_or(too_small.clone())?;
        self.buf
            .get_mut(self.pos..end)
            .ok_or(too_small)?
            .copy_from_slice(bytes);
        self.pos = end;
        Ok(())
    }

    /// Pads with zeros to a multiple of `size` counted from the end of the header.
    fn align(&mut self, size: usize) -> Result<(), WireError> {
        let misalignment = (self.pos - HEADER_LEN) % size;
        if misalignment == 0 {
            Ok(())
        } else {
            self.write(&[0u8; 8][..size - misalignment])
        }
    }

    fn write_len(&mut self, len: usize) -> Result<(), WireError> {
        let len = u32::try_from(len)
            .map_err(|_| WireError::malformed("sequence longer than u32::MAX elements"))?;
        self.align(4)?;
        self.write(&len.to_le_bytes())
    }
}

fn unrepresentable(what: &str) -> WireError {
    WireError::malformed(format_args!(
        "{what} cannot be represented in a ROS 2 message"
    ))
}

macro_rules! aligned {
    ($method:ident, $ty:ty) => {
        fn $method(self, v: $ty) -> Result<(), WireError> {
            self.align(core::mem::size_of::<$ty>())?;
            self.write(&v.to_le_bytes())
        }
    };
}

impl<'a> ser::Serializer for &mut SliceWriter<'a> {
    type Ok = ();
    type Error = WireError;
    type SerializeSeq = Self;
    type SerializeTuple = Self;
    type SerializeTupleStruct = Self;
    type SerializeTupleVariant = Impossible<(), WireError>;
    type SerializeMap = Impossible<(), WireError>;
    type SerializeStruct = Self;
    type SerializeStructVariant = Impossible<(), WireError>;

    fn serialize_bool(self, v: bool) -> Result<(), WireError> {
        self.write(&[u8::from(v)])
    }

    fn serialize_i8(self, v: i8) -> Result<(), WireError> {
        self.write(&v.to_le_bytes())
    }

    fn serialize_u8(self, v: u8) -> Result<(), WireError> {
        self.write(&[v])
    }

    aligned!(serialize_i16, i16);
    aligned!(serialize_i32, i32);
    aligned!(serialize_i64, i64);
    aligned!(serialize_u16, u16);
    aligned!(serialize_u32, u32);
    aligned!(serialize_u64, u64);
    aligned!(serialize_f32, f32);
    aligned!(serialize_f64, f64);

    fn serialize_char(self, v: char) -> Result<(), WireError> {
        self.serialize_u32(u32::from(v))
    }

    fn serialize_str(self, v: &str) -> Result<(), WireError> {
        self.write_len(v.len() + 1)?;
        self.write(v.as_bytes())?;
        self.write(&[0])
    }

    fn serialize_bytes(self, v: &[u8]) -> Result<(), WireError> {
        self.write_len(v.len())?;
        self.write(v)
    }

    fn serialize_none(self) -> Result<(), WireError> {
        Err(unrepresentable("an Option"))
    }

    fn serialize_some<T: ?Sized + Serialize>(self, _: &T) -> Result<(), WireError> {
        Err(unrepresentable("an Option"))
    }

    fn serialize_unit(self) -> Result<(), WireError> {
        Ok(())
    }

    fn serialize_unit_struct(self, _: &'static str) -> Result<(), WireError> {
        Ok(())
    }

    fn serialize_unit_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
    ) -> Result<(), WireError> {
        Err(unrepresentable("an enum"))
    }

    fn serialize_newtype_struct<T: ?Sized + Serialize>(
        self,
        _: &'static str,
        value: &T,
    ) -> Result<(), WireError> {
        value.serialize(self)
    }

    fn serialize_newtype_variant<T: ?Sized + Serialize>(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: &T,
    ) -> Result<(), WireError> {
        Err(unrepresentable("an enum"))
    }

    fn serialize_seq(self, len: Option<usize>) -> Result<Self, WireError> {
        let len = len.ok_or_else(|| WireError::malformed("sequence of unknown length"))?;
        self.write_len(len)?;
        Ok(self)
    }

    fn serialize_tuple(self, _: usize) -> Result<Self, WireError> {
        Ok(self)
    }

    fn serialize_tuple_struct(self, _: &'static str, _: usize) -> Result<Self, WireError> {
        Ok(self)
    }

    fn serialize_tuple_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeTupleVariant, WireError> {
        Err(unrepresentable("an enum"))
    }

    fn serialize_map(self, _: Option<usize>) -> Result<Self::SerializeMap, WireError> {
        Err(unrepresentable("a map"))
    }

    fn serialize_struct(self, _: &'static str, _: usize) -> Result<Self, WireError> {
        Ok(self)
    }

    fn serialize_struct_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeStructVariant, WireError> {
        Err(unrepresentable("an enum"))
    }

    fn collect_str<T: ?Sized + fmt::Display>(self, value: &T) -> Result<(), WireError> {
        // The length goes first: measure, then write (no buffer to format into).
        let mut counter = ByteCounter(0);
        fmt::write(&mut counter, format_args!("{value}"))
            .map_err(|_| WireError::malformed("Display failed"))?;
        self.write_len(counter.0 + 1)?;
        let start = self.pos;
        let mut sink = Sink {
            writer: &mut *self,
            error: None,
        };
        if fmt::write(&mut sink, format_args!("{value}")).is_err() {
            return Err(sink
                .error
                .unwrap_or_else(|| WireError::malformed("Display failed")));
        }
        if self.pos - start != counter.0 {
            return Err(WireError::malformed("Display wrote different lengths"));
        }
        self.write(&[0])
    }

    fn is_human_readable(&self) -> bool {
        false
    }
}

/// Counts the bytes a `Display` writes.
struct ByteCounter(usize);

impl fmt::Write for ByteCounter {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        self.0 += s.len();
        Ok(())
    }
}

/// Writes what a `Display` writes into the slice.
struct Sink<'w, 'a> {
    writer: &'w mut SliceWriter<'a>,
    error: Option<WireError>,
}

impl fmt::Write for Sink<'_, '_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        self.writer.write(s.as_bytes()).map_err(|e| {
            self.error = Some(e);
            fmt::Error
        })
    }
}

impl ser::SerializeSeq for &mut SliceWriter<'_> {
    type Ok = ();
    type Error = WireError;

    fn serialize_element<T: ?Sized + Serialize>(&mut self, value: &T) -> Result<(), WireError> {
        value.serialize(&mut **self)
    }

    fn end(self) -> Result<(), WireError> {
        Ok(())
    }
}

impl ser::SerializeTuple for &mut SliceWriter<'_> {
    type Ok = ();
    type Error = WireError;

    fn serialize_element<T: ?Sized + Serialize>(&mut self, value: &T) -> Result<(), WireError> {
        value.serialize(&mut **self)
    }

    fn end(self) -> Result<(), WireError> {
        Ok(())
    }
}

impl ser::SerializeTupleStruct for &mut SliceWriter<'_> {
    type Ok = ();
    type Error = WireError;

    fn serialize_field<T: ?Sized + Serialize>(&mut self, value: &T) -> Result<(), WireError> {
        value.serialize(&mut **self)
    }

    fn end(self) -> Result<(), WireError> {
        Ok(())
    }
}

impl ser::SerializeStruct for &mut SliceWriter<'_> {
    type Ok = ();
    type Error = WireError;

    fn serialize_field<T: ?Sized + Serialize>(
        &mut self,
        _: &'static str,
        value: &T,
    ) -> Result<(), WireError> {
        value.serialize(&mut **self)
    }

    fn end(self) -> Result<(), WireError> {
        Ok(())
    }
}
