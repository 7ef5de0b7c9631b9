//! serde helpers shared by the message types.
//!
//! None of them changes the CDR bytes; they make byte buffers fast to encode and the
//! JSON form (used for [`PolicySpec`](crate::PolicySpec) in ONNX metadata) lossless.

#[cfg(feature = "alloc")]
pub(crate) use with_alloc::*;

#[cfg(feature = "alloc")]
mod with_alloc {
    use alloc::vec::Vec;
    use core::fmt;
    use serde::de::{self, SeqAccess, Visitor};
    use serde::ser::SerializeSeq;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    /// At most this many elements are reserved up front from a length prefix, so a
    /// forged prefix cannot make a decoder allocate more than the input can fill.
    const MAX_PREALLOC: usize = 4096;

    /// `Vec<u8>` as a `sequence<uint8>` written with `serialize_bytes`: the same bytes
    /// as element by element (a `u32` length, then the bytes) but one bulk copy.
    pub(crate) mod bytes {
        use super::*;

        pub(crate) fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
            s.serialize_bytes(v)
        }

        pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
            d.deserialize_byte_buf(BytesVisitor)
        }
    }

    /// Like [`bytes`], and the length must be 0 (unsigned) or 64 (an ed25519 signature).
    pub(crate) mod signature {
        use super::*;

        pub(crate) fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
            s.serialize_bytes(v)
        }

        pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
            let v = d.deserialize_byte_buf(BytesVisitor)?;
            match v.len() {
                0 | crate::ED25519_SIGNATURE_LEN => Ok(v),
                n => Err(de::Error::invalid_length(
                    n,
                    &"an empty or 64-byte ed25519 signature",
                )),
            }
        }
    }

    struct BytesVisitor;

    impl<'de> Visitor<'de> for BytesVisitor {
        type Value = Vec<u8>;

        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a byte sequence")
        }

        fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<Vec<u8>, E> {
            Ok(v.to_vec())
        }

        fn visit_byte_buf<E: de::Error>(self, v: Vec<u8>) -> Result<Vec<u8>, E> {
            Ok(v)
        }

        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<u8>, A::Error> {
            let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(MAX_PREALLOC));
            while let Some(b) = seq.next_element()? {
                out.push(b);
            }
            Ok(out)
        }
    }

    /// `Vec<f32>` as a `sequence<float32>`; in human-readable formats (JSON) non-finite
    /// values are written as the strings `"inf"`, `"-inf"` and `"nan"` (JSON has no
    /// spelling for them, and serde_json would write `null` and fail to read it back).
    pub(crate) mod f32_seq {
        use super::*;

        pub(crate) fn serialize<S: Serializer>(v: &[f32], s: S) -> Result<S::Ok, S::Error> {
            if s.is_human_readable() {
                let mut seq = s.serialize_seq(Some(v.len()))?;
                for x in v {
                    seq.serialize_element(&HumanF32(*x))?;
                }
                seq.end()
            } else {
                v.serialize(s)
            }
        }

        pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<f32>, D::Error> {
            if d.is_human_readable() {
                let v: Vec<HumanF32> = Vec::deserialize(d)?;
                Ok(v.into_iter().map(|x| x.0).collect())
            } else {
                Vec::deserialize(d)
            }
        }
    }

    /// An `f32` that a human-readable format can always carry (see [`f32_seq`]).
    struct HumanF32(f32);

    impl Serialize for HumanF32 {
        fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            let x = self.0;
            if x.is_finite() {
                s.serialize_f32(x)
            } else if x.is_nan() {
                s.serialize_str("nan")
            } else if x > 0.0 {
                s.serialize_str("inf")
            } else {
                s.serialize_str("-inf")
            }
        }
    }

    impl<'de> Deserialize<'de> for HumanF32 {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            d.deserialize_any(HumanF32Visitor)
        }
    }

    struct HumanF32Visitor;

    impl Visitor<'_> for HumanF32Visitor {
        type Value = HumanF32;

        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a number or one of \"inf\", \"-inf\", \"nan\"")
        }

        fn visit_f64<E: de::Error>(self, v: f64) -> Result<HumanF32, E> {
            Ok(HumanF32(v as f32))
        }

        fn visit_f32<E: de::Error>(self, v: f32) -> Result<HumanF32, E> {
            Ok(HumanF32(v))
        }

        fn visit_i64<E: de::Error>(self, v: i64) -> Result<HumanF32, E> {
            Ok(HumanF32(v as f32))
        }

        fn visit_u64<E: de::Error>(self, v: u64) -> Result<HumanF32, E> {
            Ok(HumanF32(v as f32))
        }

        fn visit_str<E: de::Error>(self, v: &str) -> Result<HumanF32, E> {
            match v {
                "inf" | "+inf" | "Infinity" => Ok(HumanF32(f32::INFINITY)),
                "-inf" | "-Infinity" => Ok(HumanF32(f32::NEG_INFINITY)),
                "nan" | "NaN" => Ok(HumanF32(f32::NAN)),
                other => Err(de::Error::invalid_value(de::Unexpected::Str(other), &self)),
            }
        }
    }
}
