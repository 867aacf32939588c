//! The SDK's Web Push decryption (`tidings_device_link::webpush`) against an independent
//! implementation: Mozilla's Python `http_ece` encrypts for the install's keys, the SDK
//! decrypts, in one record as the relay sends and in many as RFC 8188 allows. Skips
//! (visibly) when Python or `http_ece` is missing: `pip install http-ece`.

// Test code: a failed unwrap is a failed test with its line.
#![allow(clippy::unwrap_used)]

use std::process::Command;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use tidings_device_link::webpush::{WebPushError, WebPushKeys};

/// Encrypts argv[3] (base64url) for p256dh argv[1] and auth argv[2] in records of argv[4]
/// bytes from a fresh sender key; prints the body in base64url.
const ENCRYPT: &str = r#"
import base64, os, sys
import http_ece
from cryptography.hazmat.primitives.asymmetric import ec
def unb64(s): return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))
sender = ec.generate_private_key(ec.SECP256R1())
body = http_ece.encrypt(unb64(sys.argv[3]), salt=os.urandom(16), private_key=sender,
                        dh=unb64(sys.argv[1]), auth_secret=unb64(sys.argv[2]),
                        rs=int(sys.argv[4]), version="aes128gcm")
print(base64.urlsafe_b64encode(body).decode().rstrip("="))
"#;

fn encrypt_with_http_ece(keys: &WebPushKeys, plaintext: &[u8], record_size: usize) -> Option<Vec<u8>> {
    let out = Command::new("python3")
        .args([
            "-c",
            ENCRYPT,
            &URL_SAFE_NO_PAD.encode(keys.p256dh()),
            &URL_SAFE_NO_PAD.encode(keys.auth()),
            &URL_SAFE_NO_PAD.encode(plaintext),
            &record_size.to_string(),
        ])
        .output()
        .ok()?;
    if !out.status.success() {
        eprintln!(
            "SKIPPED: Python's http_ece is not usable (pip install http-ece): {}",
            String::from_utf8_lossy(&out.stderr)
                .lines()
                .last()
                .unwrap_or_default()
        );
        return None;
    }
    Some(
        URL_SAFE_NO_PAD
            .decode(String::from_utf8(out.stdout).unwrap().trim())
            .unwrap(),
    )
}

#[test]
fn the_sdk_decrypts_what_http_ece_encrypts() {
    let keys = WebPushKeys::generate();
    let enc = "A".repeat(300) + "-_09az";
    let Some(one_record) = encrypt_with_http_ece(&keys, enc.as_bytes(), 4096) else {
        return;
    };
    assert_eq!(keys.decrypt_enc(&one_record).unwrap(), enc);
    let many = encrypt_with_http_ece(&keys, enc.as_bytes(), 64).expect("ran once already");
    assert!(many.len() > one_record.len() + 16 * 4, "several records");
    assert_eq!(&keys.decrypt(&many).unwrap()[..], enc.as_bytes());

    // Someone else's keys, a flipped bit, a binary plaintext: each refused by name.
    assert_eq!(
        WebPushKeys::generate().decrypt(&one_record).unwrap_err(),
        WebPushError::Rejected
    );
    let mut flipped = one_record.clone();
    *flipped.last_mut().unwrap() ^= 1;
    assert_eq!(keys.decrypt(&flipped).unwrap_err(), WebPushError::Rejected);
    let binary = encrypt_with_http_ece(&keys, &[0xff, 0x00, 0x10], 4096).expect("ran once already");
    assert_eq!(keys.decrypt_enc(&binary).unwrap_err(), WebPushError::NotAPush);
}
