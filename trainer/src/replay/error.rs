//! The replay module's error: every argument a caller (or a robot's data) can get
//! wrong is refused with one of these, never a panic.

/// Why a replay operation was refused. The buffer is left unchanged when an
/// operation returns an error.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ReplayError {
    /// A size that must be positive is zero (capacity, `obs_dim`, action width,
    /// number of discrete actions, `n` of n-step, number of streams, batch size).
    #[error("{what} must be at least 1")]
    Zero {
        /// The offending size.
        what: &'static str,
    },
    /// The requested storage could not be allocated (it overflows the address
    /// space or the allocator refused it).
    #[error("{what} is too large to allocate: {rows} rows of {width} values")]
    TooLarge {
        /// The array that could not be allocated.
        what: &'static str,
        /// Number of rows asked for.
        rows: usize,
        /// Values per row.
        width: usize,
    },
    /// A row or a list has the wrong length.
    #[error("{what} has length {got}, expected {expected}")]
    LengthMismatch {
        /// The offending argument.
        what: &'static str,
        /// The length the buffer was built for.
        expected: usize,
        /// The length given.
        got: usize,
    },
    /// A discrete action index is not below the number of actions.
    #[error("discrete action {index} is out of range 0..{n}")]
    ActionOutOfRange {
        /// The index given.
        index: u32,
        /// Number of actions.
        n: u32,
    },
    /// A discrete action was given to a continuous buffer, or the reverse.
    #[error("expected a {expected} action, got a {got} one")]
    ActionKind {
        /// What the buffer stores.
        expected: &'static str,
        /// What was given.
        got: &'static str,
    },
    /// A value that must be finite is NaN or infinite (an observation entry, a
    /// reward, a TD error, a priority).
    #[error("{what} is not finite")]
    NonFinite {
        /// The offending value.
        what: &'static str,
    },
    /// A finite value is outside its allowed range (γ, a discount, α, ε, β, a
    /// negative priority).
    #[error("{what} = {value} is outside {range}")]
    OutOfRange {
        /// The offending value's name.
        what: &'static str,
        /// The value given.
        value: f64,
        /// The allowed range, in words.
        range: &'static str,
    },
    /// Sampling (or searching a sum tree) with nothing stored.
    #[error("cannot sample from an empty replay buffer")]
    Empty,
    /// An index that does not name a stored transition (or a tree leaf).
    #[error("index {index} is out of range: {len} stored")]
    IndexOutOfRange {
        /// The index given.
        index: usize,
        /// Number of valid indices.
        len: usize,
    },
    /// An n-step stream id beyond the accumulator's streams.
    #[error("stream {stream} does not exist: the accumulator has {streams} streams")]
    UnknownStream {
        /// The stream id given.
        stream: usize,
        /// Number of streams.
        streams: usize,
    },
    /// Saved replay state that does not decode (wrong magic, truncated,
    /// inconsistent header, values a buffer could not hold).
    #[error("bad replay state: {0}")]
    BadState(&'static str),
    /// Saved replay state written in a format this build does not read.
    #[error("replay state format version {found} is not supported (this build reads {supported})")]
    UnsupportedVersion {
        /// The version in the header.
        found: u16,
        /// The version this build reads and writes.
        supported: u16,
    },
}
