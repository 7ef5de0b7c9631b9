//! Errors of encoding, decoding and converting messages.

use core::fmt;

/// Why bytes could not be decoded into a message, or a message could not be encoded.
///
/// Every malformed input maps to one of these; decoding never panics and never
/// allocates more than the input could describe.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WireError {
    /// The input is shorter than the encapsulation header plus the `wire_version` field.
    #[error(
        "message is {len} bytes, shorter than the 4-byte CDR header plus the 2-byte wire_version"
    )]
    TooShort {
        /// Length of the input in bytes.
        len: usize,
    },
    /// The encapsulation header names a representation other than plain CDR
    /// (`00 00` big-endian or `00 01` little-endian), e.g. XCDR2 or a parameter list.
    #[error("encapsulation 0x{id:04x} is not plain CDR (expected 0x0001 CDR_LE or 0x0000 CDR_BE)")]
    UnsupportedRepresentation {
        /// The representation identifier (first two header bytes, big-endian).
        id: u16,
    },
    /// The message was written by a newer (or invalid, 0) schema version than this
    /// build understands.
    #[error("wire version {found} is not supported (this build speaks versions 1..={supported})")]
    UnsupportedVersion {
        /// The `wire_version` found in the message.
        found: u16,
        /// The newest version this build supports ([`crate::WIRE_VERSION`]).
        supported: u16,
    },
    /// The input (or the encoded message) is larger than the size limit.
    #[error("message is {len} bytes, larger than the {max}-byte limit")]
    TooLarge {
        /// Size of the input or the encoded message in bytes.
        len: usize,
        /// The limit in bytes.
        max: usize,
    },
    /// The input ended in the middle of a field (truncated message, or a length prefix
    /// larger than the rest of the input).
    #[error("message ends in the middle of a field (truncated, or a length prefix is too large)")]
    Truncated,
    /// Bytes remain after the message beyond the at most 3 zero bytes of alignment
    /// padding DDS implementations may append.
    #[error("{count} unexpected bytes after the end of the message")]
    TrailingBytes {
        /// Number of bytes left over.
        count: usize,
    },
    /// A `bool` field held a byte other than 0 or 1.
    #[error("bool field holds {0}, expected 0 or 1")]
    InvalidBool(u8),
    /// A `string` field is not valid UTF-8.
    #[error("string field is not valid UTF-8")]
    InvalidUtf8,
    /// A field holds a value the schema forbids (e.g. an unknown action `kind`, a
    /// sequence longer than a fixed-capacity type holds), or a type cannot be
    /// represented in ROS 2 CDR (enums, options, maps). The reason is truncated to
    /// [`REASON_CAPACITY`] bytes.
    #[error("malformed message: {0}")]
    Malformed(Reason),
    /// The output buffer of [`encode_to_slice`](crate::encode_to_slice) is too small.
    #[error("output buffer of {capacity} bytes is too small for the message")]
    BufferTooSmall {
        /// Size of the buffer in bytes.
        capacity: usize,
    },
}

/// Longest reason kept in [`WireError::Malformed`], in bytes.
pub const REASON_CAPACITY: usize = 96;

/// The reason text of [`WireError::Malformed`] (fixed capacity, no allocation).
pub type Reason = heapless::String<REASON_CAPACITY>;

impl WireError {
    /// A [`WireError::Malformed`] with `reason` (truncated to [`REASON_CAPACITY`] bytes
    /// at a character boundary).
    pub fn malformed(reason: impl fmt::Display) -> Self {
        let mut out = Truncating(Reason::new());
        // Truncating never fails; a failing Display impl leaves a partial reason.
        let _ = fmt::write(&mut out, format_args!("{reason}"));
        Self::Malformed(out.0)
    }
}

/// A `fmt::Write` that keeps what fits and drops the rest.
struct Truncating(Reason);

impl fmt::Write for Truncating {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for c in s.chars() {
            if self.0.push(c).is_err() {
                break;
            }
        }
        Ok(())
    }
}

impl serde::ser::Error for WireError {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        Self::malformed(msg)
    }
}

impl serde::de::Error for WireError {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        Self::malformed(msg)
    }
}

/// A growable value does not fit the capacity of its fixed-capacity (`heapless`)
/// counterpart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("field `{field}` has {len} elements, more than its capacity {capacity}")]
pub struct CapacityError {
    /// The field that does not fit.
    pub field: &'static str,
    /// Its length (elements, or bytes for strings).
    pub len: usize,
    /// The capacity of the fixed-capacity type.
    pub capacity: usize,
}

/// One line for an error and its chain of causes, each cause written once.
///
/// Many error types show their cause in their own message (`"replay: {0}"`) *and*
/// return it from [`source`](std::error::Error::source), so walking the chain naively
/// prints it twice (`replay: bad state: bad state`). This joins the chain with `": "`
/// and skips a cause whose text already ends the line as a whole word. The binaries print their
/// fatal errors with it.
///
/// ```
/// use std::io;
/// #[derive(Debug, thiserror::Error)]
/// #[error("replay: {0}")]
/// struct Outer(#[from] io::Error);
///
/// let e = Outer(io::Error::other("disk full"));
/// assert_eq!(reflex_msgs::error_report(&e), "replay: disk full");
/// ```
#[cfg(feature = "std")]
pub fn error_report(error: &(dyn std::error::Error + 'static)) -> std::string::String {
    use std::string::ToString;
    let mut line = error.to_string();
    let mut cause = error.source();
    while let Some(e) = cause {
        let text = e.to_string();
        let shown = line == text
            || line
                .strip_suffix(text.as_str())
                .is_some_and(|head| head.ends_with(": ") || head.ends_with(' '));
        if !text.is_empty() && !shown {
            line.push_str(": ");
            line.push_str(&text);
        }
        cause = e.source();
    }
    line
}
