//! The one AEAD of the protocol, XChaCha20-Poly1305, with 32-byte keys and 24-byte nonces.

use chacha20poly1305::{
    KeyInit, XChaCha20Poly1305,
    aead::{Aead, Payload},
};

/// Encrypts `plaintext` and returns ciphertext ‖ tag.
pub fn encrypt(key: &[u8; 32], nonce: &[u8; 24], plaintext: &[u8], aad: &[u8]) -> Vec<u8> {
    let cipher = XChaCha20Poly1305::new(&(*key).into());
    // Encryption fails only for plaintexts beyond 2^38 bytes; ours are bounded far below.
    cipher
        .encrypt(&(*nonce).into(), Payload { msg: plaintext, aad })
        .expect("XChaCha20-Poly1305 plaintext within size limits")
}

/// Decrypts ciphertext ‖ tag; `None` when the tag does not verify.
pub fn decrypt(key: &[u8; 32], nonce: &[u8; 24], ciphertext: &[u8], aad: &[u8]) -> Option<Vec<u8>> {
    let cipher = XChaCha20Poly1305::new(&(*key).into());
    cipher
        .decrypt(&(*nonce).into(), Payload { msg: ciphertext, aad })
        .ok()
}
