//! reflex-tests: end-to-end scenarios across reflex's crates (and, as they land,
//! across processes: sim ↔ daemon ↔ trainer). The scenarios live in `tests/`;
//! this library holds what they share. It may depend on every crate; nothing
//! depends on it.
