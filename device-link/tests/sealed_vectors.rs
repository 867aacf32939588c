//! `docs/test-vectors.json` "sealed_message" against the crate. Every intermediate value is
//! re-derived here from the primitives alone (SHA-512, X25519, HKDF, Ed25519,
//! XChaCha20-Poly1305) by DESIGN.md's text, without the crate's sealing code; then the
//! crate's deterministic seal must give the published bytes, and opening them must name
//! the sender and give the plaintext.

// Test code: a failed unwrap is a failed test with its line.
#![allow(clippy::unwrap_used)]

use chacha20poly1305::{
    KeyInit, XChaCha20Poly1305,
    aead::{Aead, Payload},
};
use ed25519_dalek::{Signer, SigningKey};
use hkdf::Hkdf;
use serde_json::Value;
use sha2::{Digest, Sha256, Sha512};
use tidings_device_link::{
    identity::Identity,
    sealed::{self, SealedMessageError},
};
use x25519_dalek::{PublicKey, StaticSecret, X25519_BASEPOINT_BYTES, x25519};

const VECTORS: &str = include_str!("../../docs/test-vectors.json");

/// One "sealed_message" vector: its inputs and every published intermediate.
struct Vector {
    note: String,
    sender_seed: [u8; 32],
    recipient_seed: [u8; 32],
    sender_phrase: String,
    recipient_phrase: String,
    eph_secret: [u8; 32],
    nonce: [u8; 24],
    plaintext: Vec<u8>,
    published: Value,
}

/// The values DESIGN.md's text gives for a vector's inputs.
struct Derived {
    sender_account: [u8; 32],
    recipient_account: [u8; 32],
    recipient_x25519_public: [u8; 32],
    eph_public: [u8; 32],
    shared_secret: [u8; 32],
    k: [u8; 32],
    signature: [u8; 64],
    inner: Vec<u8>,
    sealed: Vec<u8>,
}

fn hex_field(v: &Value, name: &str) -> Vec<u8> {
    let text = v[name]
        .as_str()
        .unwrap_or_else(|| panic!("vector field {name} missing"));
    hex::decode(text).unwrap_or_else(|e| panic!("vector field {name}: {e}"))
}

fn array<const N: usize>(v: &Value, name: &str) -> [u8; N] {
    hex_field(v, name)
        .try_into()
        .unwrap_or_else(|_| panic!("vector field {name} is not {N} bytes"))
}

fn vectors() -> Vec<Vector> {
    let doc: Value = serde_json::from_str(VECTORS).unwrap();
    let accounts = doc["vectors"].as_array().unwrap();
    let account = |v: &Value, name: &str| &accounts[v[name].as_u64().unwrap() as usize];
    doc["sealed_message"]["vectors"]
        .as_array()
        .expect("a sealed_message.vectors array")
        .iter()
        .map(|v| Vector {
            note: v["note"].as_str().unwrap().to_owned(),
            sender_seed: array(account(v, "sender_vector"), "identity_ed25519_seed"),
            recipient_seed: array(account(v, "recipient_vector"), "identity_ed25519_seed"),
            sender_phrase: account(v, "sender_vector")["phrase"].as_str().unwrap().to_owned(),
            recipient_phrase: account(v, "recipient_vector")["phrase"]
                .as_str()
                .unwrap()
                .to_owned(),
            eph_secret: array(v, "eph_secret"),
            nonce: array(v, "nonce"),
            plaintext: hex_field(v, "plaintext"),
            published: v.clone(),
        })
        .collect()
}

/// DESIGN.md's buckets: 256, powers of two to 64 KiB, then multiples of 64 KiB.
fn bucket(len: usize) -> usize {
    match len {
        0..=256 => 256,
        257..=65_536 => len.next_power_of_two(),
        _ => len.div_ceil(65_536) * 65_536,
    }
}

/// The recipient's X25519 public key from its Ed25519 seed: the clamped first half of
/// SHA-512(seed) times the base point (x25519 clamps).
fn x25519_public_of_seed(seed: &[u8; 32]) -> [u8; 32] {
    let scalar: [u8; 32] = Sha512::digest(seed)[..32].try_into().unwrap();
    x25519(scalar, X25519_BASEPOINT_BYTES)
}

fn derive(v: &Vector) -> Derived {
    let sender = SigningKey::from_bytes(&v.sender_seed);
    let sender_account = sender.verifying_key().to_bytes();
    let recipient_account = SigningKey::from_bytes(&v.recipient_seed)
        .verifying_key()
        .to_bytes();
    let recipient_x25519_public = x25519_public_of_seed(&v.recipient_seed);
    let eph_public = x25519(v.eph_secret, X25519_BASEPOINT_BYTES);
    let shared_secret = x25519(v.eph_secret, recipient_x25519_public);
    let salt = [eph_public, recipient_x25519_public].concat();
    let mut k = [0u8; 32];
    Hkdf::<Sha256>::new(Some(&salt), &shared_secret)
        .expand(b"tidings/message/v1", &mut k)
        .unwrap();
    let signed = [
        b"tidings/message/v1/sig".as_slice(),
        &recipient_account,
        &v.plaintext,
    ]
    .concat();
    let signature = sender.sign(&signed).to_bytes();
    let sealed_len = bucket(173 + v.plaintext.len());
    let mut inner = [
        &sender_account[..],
        &signature,
        &(v.plaintext.len() as u32).to_be_bytes(),
    ]
    .concat();
    inner.extend_from_slice(&v.plaintext);
    inner.resize(sealed_len - 1 - 32 - 24 - 16, 0);
    let aad = [&[0x01u8][..], &recipient_account, &eph_public].concat();
    let ciphertext = XChaCha20Poly1305::new(&k.into())
        .encrypt(
            &v.nonce.into(),
            Payload {
                msg: &inner,
                aad: &aad,
            },
        )
        .unwrap();
    let sealed = [&[0x01u8][..], &eph_public, &v.nonce, &ciphertext].concat();
    Derived {
        sender_account,
        recipient_account,
        recipient_x25519_public,
        eph_public,
        shared_secret,
        k,
        signature,
        inner,
        sealed,
    }
}

#[test]
fn sealed_vectors_are_the_ones_promised() {
    let all = vectors();
    assert!(all.len() >= 2);
    assert!(all.iter().any(|v| v.plaintext.is_empty()));
    assert!(
        all.iter().any(|v| bucket(173 + v.plaintext.len()) > 256),
        "none crosses a bucket"
    );
}

#[test]
fn sealed_vectors_follow_from_the_design_text() {
    for v in vectors() {
        let d = derive(&v);
        let p = &v.published;
        assert_eq!(array::<32>(p, "sender_account"), d.sender_account, "{}", v.note);
        assert_eq!(
            array::<32>(p, "recipient_account"),
            d.recipient_account,
            "{}",
            v.note
        );
        let x = array::<32>(p, "recipient_x25519_public");
        assert_eq!(x, d.recipient_x25519_public, "{}", v.note);
        assert_eq!(array::<32>(p, "eph_public"), d.eph_public, "{}", v.note);
        assert_eq!(array::<32>(p, "shared_secret"), d.shared_secret, "{}", v.note);
        assert_eq!(array::<32>(p, "k"), d.k, "{}", v.note);
        assert_eq!(array::<64>(p, "signature"), d.signature, "{}", v.note);
        assert_eq!(hex_field(p, "inner"), d.inner, "{}", v.note);
        assert_eq!(hex_field(p, "sealed"), d.sealed, "{}", v.note);
    }
}

#[test]
fn sealed_vectors_seal_and_open_with_the_crate() {
    for v in vectors() {
        let sender = Identity::restore(&v.sender_phrase).unwrap();
        let recipient = Identity::restore(&v.recipient_phrase).unwrap();
        let p = &v.published;
        let x = array::<32>(p, "recipient_x25519_public");
        assert_eq!(
            sealed::message_public_key(&recipient.account()),
            Ok(x),
            "{}",
            v.note
        );
        assert_eq!(
            PublicKey::from(&recipient.message_secret()).to_bytes(),
            x,
            "{}",
            v.note
        );
        let eph = StaticSecret::from(v.eph_secret);
        let want = hex_field(p, "sealed");
        let got = sealed::seal_with(&sender, &recipient.account(), &v.plaintext, &eph, &v.nonce).unwrap();
        assert_eq!(hex::encode(&got), hex::encode(&want), "{}", v.note);
        let opened = sealed::open_message(&recipient, &want).unwrap();
        assert_eq!(opened.sender, sender.account(), "{}", v.note);
        assert_eq!(opened.plaintext.as_slice(), v.plaintext.as_slice(), "{}", v.note);
        if sender.account() != recipient.account() {
            assert_eq!(
                sealed::open_message(&sender, &want).unwrap_err(),
                SealedMessageError::Decrypt,
                "{}",
                v.note
            );
        }
    }
}
