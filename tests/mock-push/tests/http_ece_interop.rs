//! The mock Web Push service's RFC 8291 decryption against an independent implementation:
//! Mozilla's Python `http_ece` encrypts, the mock decrypts. Skips (visibly) when Python or
//! `http_ece` is missing: `pip install http-ece`.

// Test code: a failed unwrap is a failed test with its line.
#![allow(clippy::unwrap_used)]

use std::process::Command;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use tidings_mock_push::Subscriber;

/// Encrypts argv[3] (base64url) for the subscriber (p256dh argv[1], auth argv[2]) with
/// records of argv[4] bytes, from a fresh sender key, and prints the body (base64url).
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

fn http_ece_available() -> bool {
    let found = Command::new("python3")
        .args(["-c", "import http_ece, cryptography"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        eprintln!("SKIPPED: Python's http_ece is not installed (pip install http-ece)");
    }
    found
}

fn python_encrypt(sub: &Subscriber, plaintext: &[u8], rs: usize) -> Vec<u8> {
    let out = Command::new("python3")
        .args([
            "-c",
            ENCRYPT,
            &URL_SAFE_NO_PAD.encode(sub.p256dh),
            &URL_SAFE_NO_PAD.encode(sub.auth),
            &URL_SAFE_NO_PAD.encode(plaintext),
            &rs.to_string(),
        ])
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "http_ece failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    URL_SAFE_NO_PAD
        .decode(String::from_utf8(out.stdout).unwrap().trim())
        .unwrap()
}

#[test]
fn the_mock_decrypts_what_http_ece_encrypts() {
    if !http_ece_available() {
        return;
    }
    let sub = Subscriber::generate();
    for (plaintext, rs) in [
        (b"When I grow up, I want to be a watermelon".to_vec(), 4096),
        (vec![0x5a; 3993], 4096),
        // (http_ece writes no record at all for an empty message, which RFC 8188 does not
        // allow; the relay never sends one.)
        // Several records: RFC 8188's per-record nonces and delimiters.
        ((0..200u8).collect::<Vec<u8>>(), 50),
    ] {
        let body = python_encrypt(&sub, &plaintext, rs);
        assert_eq!(
            sub.decrypt(&body).unwrap(),
            plaintext,
            "rs {rs}, {} bytes",
            plaintext.len()
        );
        assert!(
            Subscriber::generate().decrypt(&body).is_err(),
            "another subscriber's key"
        );
    }
}
