//! [`PushKey`]: the key a device's pushes are encrypted with, which must never be printed.

use std::fmt;

use zeroize::Zeroizing;

/// The 32-byte key a device registered for its pushes (the ChaCha20-Poly1305 key of
/// DESIGN "Push payload"). Whoever holds it reads every push to that device, so `Debug`
/// prints nothing of it, there is no `Display`, and the bytes are wiped when it is dropped.
#[derive(Clone, PartialEq, Eq)]
pub struct PushKey(Zeroizing<[u8; 32]>);

impl PushKey {
    /// Wraps a key.
    pub fn new(key: [u8; 32]) -> PushKey {
        PushKey(Zeroizing::new(key))
    }

    /// The key itself, for the encryption that needs it.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl From<[u8; 32]> for PushKey {
    fn from(key: [u8; 32]) -> PushKey {
        PushKey::new(key)
    }
}

impl fmt::Debug for PushKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PushKey(<redacted>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_prints_nothing_of_the_key() {
        let k = PushKey::new([0xab; 32]);
        let printed = format!("{k:?}");
        assert_eq!(printed, "PushKey(<redacted>)");
        assert!(!printed.to_ascii_lowercase().contains("ab"));
        assert_eq!(k.as_bytes(), &[0xab; 32]);
    }
}
