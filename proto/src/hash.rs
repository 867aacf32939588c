//! `H(x)`: BLAKE2b-256, and the message hash built from it.

use blake2::{Blake2b, Digest, digest::consts::U32};

/// BLAKE2b with a 32-byte output.
type Blake2b256 = Blake2b<U32>;

/// `H(x)` = BLAKE2b-256 of the concatenation of `parts`.
pub fn h(parts: &[&[u8]]) -> [u8; 32] {
    let mut hasher = Blake2b256::new();
    for p in parts {
        hasher.update(p);
    }
    hasher.finalize().into()
}

/// The hash a message is known by: `H(account ‖ be32(namespace) ‖ data)`.
pub fn message_hash(account: &[u8; 32], namespace: u32, data: &[u8]) -> [u8; 32] {
    h(&[account, &namespace.to_be_bytes(), data])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blake2b_256_of_empty_input_matches_the_reference() {
        // RFC 7693 parameters, digest length 32; the well-known value for "".
        assert_eq!(
            hex::encode(h(&[])),
            "0e5751c026e543b2e8ab2eb06099daa1d1e5df47778f7787faab45cdf12fe3a8"
        );
    }

    #[test]
    fn message_hash_is_the_hash_of_the_concatenation() {
        let account = [7u8; 32];
        let mut whole = account.to_vec();
        whole.extend_from_slice(&12u32.to_be_bytes());
        whole.extend_from_slice(b"hello");
        assert_eq!(message_hash(&account, 12, b"hello"), h(&[&whole]));
        assert_ne!(message_hash(&account, 13, b"hello"), h(&[&whole]));
    }
}
