//! The one encoding: CDR (XCDR1, "plain CDR", what ROS 2 puts on DDS) behind the
//! 4-byte encapsulation header.
//!
//! A message on the wire is
//!
//! ```text
//! 00 01 00 00          encapsulation header: CDR little-endian, options 0
//! vv vv                wire_version (u16), the first field of every message
//! ...                  the remaining fields in declaration order, each primitive
//!                      aligned to its size relative to the byte after the header;
//!                      sequences and strings are a u32 count then the elements
//!                      (strings: UTF-8 bytes plus a NUL, counted)
//! ```
//!
//! Decoding checks, in this order and before touching the body: the size limit
//! ([`MAX_MESSAGE_BYTES`], so a forged input cannot make the decoder work or allocate
//! in proportion to a length prefix), the representation (plain CDR, little- or
//! big-endian; anything else is [`WireError::UnsupportedRepresentation`]) and the
//! `wire_version` (1 ..= [`WIRE_VERSION`], otherwise
//! [`WireError::UnsupportedVersion`]). After the body at most 3 zero bytes of
//! alignment padding may follow (some DDS implementations pad payloads to 4 bytes);
//! anything else is [`WireError::TrailingBytes`]. Length prefixes are never trusted:
//! a sequence claiming more elements than the input holds fails with
//! [`WireError::Truncated`] once the input runs out.
//!
//! Two implementations write identical bytes (a test checks that on every message):
//!
//! - [`encode`], [`encode_into`] and [`decode`] (feature `std`) use the `cdr-encoding`
//!   crate, the CDR implementation under RustDDS / ros2-client, which needs std;
//! - [`encode_to_slice`] and [`decode_from_slice`] (always available, no allocation)
//!   are this crate's own, for robots without std or an allocator; they work with
//!   the fixed-capacity types of [`crate::fixed`] (and with the growable ones when
//!   `alloc` is on).
//!
//! Encoding always writes little-endian.

mod de;
mod ser;

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::fixed::{ActionCommandN, ObservationN, TransitionN};
use crate::{WireError, WIRE_VERSION};

/// Encapsulation header of plain CDR, little-endian (the one reflex writes).
pub const ENCAPSULATION_CDR_LE: [u8; 4] = [0x00, 0x01, 0x00, 0x00];
/// Encapsulation header of plain CDR, big-endian (accepted when decoding).
pub const ENCAPSULATION_CDR_BE: [u8; 4] = [0x00, 0x00, 0x00, 0x00];
/// Length of the encapsulation header in bytes.
pub const HEADER_LEN: usize = 4;
/// Largest message (header included) encoded or decoded, in bytes: 64 MiB, room for a
/// large ONNX policy. Larger inputs are refused before anything is parsed.
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024 * 1024;

/// Representation identifier of plain CDR big-endian.
const CDR_BE: u16 = 0x0000;
/// Representation identifier of plain CDR little-endian.
const CDR_LE: u16 = 0x0001;

/// A top-level message: one that travels on its own on a key or topic, and whose
/// first field is `wire_version: u16`.
pub trait WireMessage: Serialize + DeserializeOwned {
    /// ROS 2 message name, e.g. `"Observation"` (`reflex_msgs/msg/Observation`).
    const NAME: &'static str;
    /// ROS 2 type name, e.g. `"reflex_msgs/msg/Observation"`.
    const ROS_TYPE: &'static str;
    /// DDS type name, e.g. `"reflex_msgs::msg::dds_::Observation_"` (also the schema to
    /// tag zenoh CDR payloads with).
    const DDS_TYPE: &'static str;

    /// The message's `wire_version` field.
    fn wire_version(&self) -> u16;
}

macro_rules! wire_message {
    ($name:literal, [$($generics:tt)*], $ty:ty) => {
        impl<$($generics)*> WireMessage for $ty {
            const NAME: &'static str = $name;
            const ROS_TYPE: &'static str = concat!("reflex_msgs/msg/", $name);
            const DDS_TYPE: &'static str = concat!("reflex_msgs::msg::dds_::", $name, "_");

            fn wire_version(&self) -> u16 {
                self.wire_version
            }
        }
    };
}

#[cfg(feature = "alloc")]
mod alloc_impls {
    use super::WireMessage;
    use crate::*;

    wire_message!("Observation", [], Observation);
    wire_message!("ActionCommand", [], ActionCommand);
    wire_message!("Transition", [], Transition);
    wire_message!("TransitionBatch", [], TransitionBatch);
    wire_message!("PolicySpec", [], PolicySpec);
    wire_message!("PolicyUpdate", [], PolicyUpdate);
    wire_message!("Status", [], Status);
    wire_message!("StepInfo", [], StepInfo);
}

wire_message!("Observation", [const N: usize], ObservationN<N>);
wire_message!("ActionCommand", [const A: usize], ActionCommandN<A>);
wire_message!(
    "Transition",
    [const N: usize, const A: usize, const H: usize],
    TransitionN<N, A, H>
);

/// A checked encapsulation header and the body after it.
struct Envelope<'a> {
    big_endian: bool,
    body: &'a [u8],
}

/// Checks size and representation; the body starts with the `wire_version`.
fn open(bytes: &[u8]) -> Result<Envelope<'_>, WireError> {
    if bytes.len() > MAX_MESSAGE_BYTES {
        return Err(WireError::TooLarge {
            len: bytes.len(),
            max: MAX_MESSAGE_BYTES,
        });
    }
    if bytes.len() < HEADER_LEN {
        return Err(WireError::TooShort { len: bytes.len() });
    }
    // The representation identifier is big-endian by definition (DDS-RTPS 10.2);
    // the two option bytes are reserved and ignored.
    let big_endian = match u16::from_be_bytes([bytes[0], bytes[1]]) {
        CDR_LE => false,
        CDR_BE => true,
        id => return Err(WireError::UnsupportedRepresentation { id }),
    };
    let body = &bytes[HEADER_LEN..];
    if body.len() < 2 {
        return Err(WireError::TooShort { len: bytes.len() });
    }
    Ok(Envelope { big_endian, body })
}

impl Envelope<'_> {
    fn version(&self) -> u16 {
        let raw = [self.body[0], self.body[1]];
        if self.big_endian {
            u16::from_be_bytes(raw)
        } else {
            u16::from_le_bytes(raw)
        }
    }

    /// Refuses versions this build cannot read (0 is never valid).
    fn check_version(&self) -> Result<(), WireError> {
        check_version(self.version())
    }
}

fn check_version(found: u16) -> Result<(), WireError> {
    if (1..=WIRE_VERSION).contains(&found) {
        Ok(())
    } else {
        Err(WireError::UnsupportedVersion {
            found,
            supported: WIRE_VERSION,
        })
    }
}

/// Accepts at most 3 zero bytes of alignment padding after the body.
fn check_trailing(rest: &[u8]) -> Result<(), WireError> {
    if rest.len() < 4 && rest.iter().all(|&b| b == 0) {
        Ok(())
    } else {
        Err(WireError::TrailingBytes { count: rest.len() })
    }
}

/// The `wire_version` of an encoded message, after checking its size and
/// encapsulation header but not the version itself nor the body (for logging what
/// a peer speaks).
pub fn peek_version(bytes: &[u8]) -> Result<u16, WireError> {
    Ok(open(bytes)?.version())
}

/// Encodes `msg` (header included) into the start of `buf` without allocating and
/// returns the number of bytes written; [`WireError::BufferTooSmall`] if it does not
/// fit. The bytes are identical to [`encode`]'s.
pub fn encode_to_slice<T: WireMessage>(msg: &T, buf: &mut [u8]) -> Result<usize, WireError> {
    check_version(msg.wire_version())?;
    let len = ser::to_slice(msg, buf)?;
    if len > MAX_MESSAGE_BYTES {
        return Err(WireError::TooLarge {
            len,
            max: MAX_MESSAGE_BYTES,
        });
    }
    Ok(len)
}

/// Decodes a message (header included) without allocating beyond what `T` itself
/// needs, with the same checks as [`decode`].
pub fn decode_from_slice<T: WireMessage>(bytes: &[u8]) -> Result<T, WireError> {
    let envelope = open(bytes)?;
    envelope.check_version()?;
    let (msg, consumed) = de::from_body(envelope.body, envelope.big_endian)?;
    check_trailing(&envelope.body[consumed..])?;
    Ok(msg)
}

#[cfg(feature = "std")]
mod with_std {
    use super::*;
    use alloc::vec::Vec;
    use byteorder::{BigEndian, LittleEndian};

    /// Encodes `msg` as a complete wire message: [`ENCAPSULATION_CDR_LE`], then the
    /// CDR body.
    ///
    /// Refuses a message whose `wire_version` this build cannot write
    /// ([`WireError::UnsupportedVersion`]) or whose encoding exceeds
    /// [`MAX_MESSAGE_BYTES`].
    pub fn encode<T: WireMessage>(msg: &T) -> Result<Vec<u8>, WireError> {
        let mut buf = Vec::new();
        encode_into(msg, &mut buf)?;
        Ok(buf)
    }

    /// Like [`encode`], replacing the contents of `buf` (whose capacity is reused); on
    /// error `buf` is left empty.
    pub fn encode_into<T: WireMessage>(msg: &T, buf: &mut Vec<u8>) -> Result<(), WireError> {
        buf.clear();
        check_version(msg.wire_version())?;
        buf.extend_from_slice(&ENCAPSULATION_CDR_LE);
        // cdr-encoding aligns relative to the first byte it writes: the body's start.
        let result = cdr_encoding::to_writer::<T, LittleEndian, _>(&mut *buf, msg);
        if let Err(e) = result {
            buf.clear();
            return Err(from_cdr(e));
        }
        if buf.len() > MAX_MESSAGE_BYTES {
            let len = buf.len();
            buf.clear();
            return Err(WireError::TooLarge {
                len,
                max: MAX_MESSAGE_BYTES,
            });
        }
        Ok(())
    }

    /// Decodes one complete wire message (header included).
    ///
    /// Checks the size limit, the encapsulation header (plain CDR, either byte order)
    /// and the `wire_version` before parsing the body, then refuses trailing bytes
    /// beyond alignment padding. Never panics; allocates at most in proportion to the
    /// input's length.
    pub fn decode<T: WireMessage>(bytes: &[u8]) -> Result<T, WireError> {
        let envelope = open(bytes)?;
        envelope.check_version()?;
        let body = envelope.body;
        let (msg, consumed) = if envelope.big_endian {
            cdr_encoding::from_bytes::<T, BigEndian>(body)
        } else {
            cdr_encoding::from_bytes::<T, LittleEndian>(body)
        }
        .map_err(from_cdr)?;
        check_trailing(&body[consumed..])?;
        Ok(msg)
    }

    fn from_cdr(e: cdr_encoding::Error) -> WireError {
        match e {
            cdr_encoding::Error::Eof => WireError::Truncated,
            cdr_encoding::Error::BadBoolean(b) => WireError::InvalidBool(b),
            cdr_encoding::Error::BadUTF8(_) => WireError::InvalidUtf8,
            cdr_encoding::Error::Message(m) => WireError::malformed(m),
            other => WireError::malformed(other),
        }
    }
}

#[cfg(feature = "std")]
pub use with_std::*;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixed::{robot_id, ActionN};

    /// The allocation-free codec on its own (this runs without `alloc`): the
    /// hand-computed bytes of `tests/wire.rs`'s golden observation.
    #[test]
    fn slice_codec_writes_and_reads_golden_bytes() {
        let mut values = heapless::Vec::new();
        values.extend_from_slice(&[1.0, -2.0]).unwrap();
        let obs = ObservationN::<4> {
            wire_version: 1,
            robot_id: robot_id("r1").unwrap(),
            seq: 7,
            timestamp_ns: 0x0102_0304_0506_0708,
            episode_id: 2,
            step: 3,
            values,
            reward: 0.5,
            terminated: true,
            truncated: false,
        };
        #[rustfmt::skip]
        let expected: [u8; 66] = [
            0x00, 0x01, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00,
            0x03, 0x00, 0x00, 0x00, b'r', b'1', 0x00, 0x00,
            0x00, 0x00, 0x00, 0x00, 0x07, 0, 0, 0,
            0, 0, 0, 0, 0x08, 0x07, 0x06, 0x05,
            0x04, 0x03, 0x02, 0x01, 0x02, 0, 0, 0,
            0, 0, 0, 0, 0x03, 0x00, 0x00, 0x00,
            0x02, 0x00, 0x00, 0x00, 0x00, 0x00, 0x80, 0x3f,
            0x00, 0x00, 0x00, 0xc0, 0x00, 0x00, 0x00, 0x3f,
            0x01, 0x00,
        ];
        let mut buf = [0u8; 128];
        let n = encode_to_slice(&obs, &mut buf).unwrap();
        assert_eq!(buf[..n], expected);
        assert_eq!(decode_from_slice::<ObservationN<4>>(&expected), Ok(obs));
        assert_eq!(peek_version(&expected), Ok(1));
        assert!(matches!(
            decode_from_slice::<ObservationN<1>>(&expected),
            Err(WireError::Malformed(_))
        ));
        assert_eq!(
            encode_to_slice(&ObservationN::<4>::default(), &mut buf[..10]),
            Err(WireError::BufferTooSmall { capacity: 10 })
        );

        let cmd = ActionCommandN::<2> {
            action: ActionN::Discrete(3),
            ..ActionCommandN::default()
        };
        let n = encode_to_slice(&cmd, &mut buf).unwrap();
        assert_eq!(decode_from_slice::<ActionCommandN<2>>(&buf[..n]), Ok(cmd));
    }
}
