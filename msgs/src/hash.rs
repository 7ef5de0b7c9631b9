//! SHA-256 helpers (the `sha2` crate, no_std): policy bytes and checkpoint hashes.

use sha2::{Digest, Sha256};

/// Length of a SHA-256 digest in bytes.
pub const SHA256_LEN: usize = 32;

/// The SHA-256 digest of `bytes`.
pub fn sha256(bytes: &[u8]) -> [u8; SHA256_LEN] {
    Sha256::digest(bytes).into()
}

/// Lowercase hex of `bytes` (e.g. a [`sha256`] digest, 64 characters).
#[cfg(feature = "alloc")]
pub fn to_hex(bytes: &[u8]) -> alloc::string::String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = alloc::string::String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(DIGITS[usize::from(b >> 4)] as char);
        out.push(DIGITS[usize::from(b & 0x0f)] as char);
    }
    out
}

/// Whether `s` is a SHA-256 digest in lowercase hex (64 characters `0-9a-f`).
pub fn is_sha256_hex(s: &str) -> bool {
    s.len() == 2 * SHA256_LEN && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sha256_of_abc_matches_fips_180_2() {
        let digest = sha256(b"abc");
        assert_eq!(
            digest[..4],
            [0xba, 0x78, 0x16, 0xbf],
            "FIPS 180-2 test vector"
        );
        assert_eq!(digest[31], 0xad);
    }

    #[cfg(feature = "alloc")]
    #[test]
    fn hex_is_lowercase_and_recognised() {
        let hex = to_hex(&sha256(b"abc"));
        assert_eq!(
            hex,
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert!(is_sha256_hex(&hex));
        assert!(!is_sha256_hex(&hex.to_uppercase()));
        assert!(!is_sha256_hex(&hex[1..]));
        assert_eq!(to_hex(&[0x00, 0x0f, 0xf0]), "000ff0");
    }
}
