//! `docs/test-vectors.json` against the crate, and every vector re-derived from first
//! principles (word list, SHA-256 checksum, PBKDF2, HKDF, Ed25519) without the crate's
//! identity code, so the published file is confirmed independently.

// Test code: a failed unwrap is a failed test with its line.
#![allow(clippy::unwrap_used)]

use ed25519_dalek::SigningKey;
use hkdf::Hkdf;
use serde_json::Value;
use sha2::{Digest, Sha256, Sha512};
use tidings_device_link::identity::{self, Identity};

const VECTORS: &str = include_str!("../../docs/test-vectors.json");

/// The published BIP-39 seed of "abandon ×11 about" with the empty passphrase
/// (reproduced with Python's `hashlib.pbkdf2_hmac` and found in independent wallets).
const ABANDON_SEED: &str = "5eb00bbddcf069084889a8ab9155568165f5c453ccb85e70811aaed6f6da5fc1\
                            9a5ac40b389cd370d086206dec8aa6c43daea6690f20ad3d8d48b2d2ce9e38e4";

/// SHA-256 of the official BIP-39 `english.txt` (2048 words, each followed by '\n').
const ENGLISH_TXT_SHA256: &str = "2f5eed53a4727b4bf8880d8f3f199efc90e58503646d9ff8eff3a2ed3b24dbda";

struct Vector {
    phrase: String,
    entropy: Vec<u8>,
    seed: Vec<u8>,
    identity_seed: [u8; 32],
    public_key: [u8; 32],
    account_id: String,
    config_key: [u8; 32],
}

fn field(v: &Value, name: &str) -> String {
    v[name]
        .as_str()
        .unwrap_or_else(|| panic!("vector field {name} missing"))
        .to_owned()
}

fn hex32(v: &Value, name: &str) -> [u8; 32] {
    hex::decode(field(v, name)).unwrap().try_into().unwrap()
}

fn vectors() -> Vec<Vector> {
    let doc: Value = serde_json::from_str(VECTORS).unwrap();
    doc["vectors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| Vector {
            phrase: field(v, "phrase"),
            entropy: hex::decode(field(v, "entropy")).unwrap(),
            seed: hex::decode(field(v, "seed")).unwrap(),
            identity_seed: hex32(v, "identity_ed25519_seed"),
            public_key: hex32(v, "ed25519_public_key"),
            account_id: field(v, "account_id"),
            config_key: hex32(v, "config_key"),
        })
        .collect()
}

/// Entropy → words by the BIP-39 rule: entropy ‖ first ENT/32 bits of SHA-256(entropy),
/// cut into 11-bit word indices.
fn phrase_from_entropy(entropy: &[u8]) -> String {
    let words = bip39::Language::English.word_list();
    let checksum = Sha256::digest(entropy);
    let mut bits: Vec<bool> = entropy
        .iter()
        .flat_map(|b| (0..8).rev().map(move |i| b >> i & 1 == 1))
        .collect();
    let cs_bits = entropy.len() * 8 / 32;
    bits.extend((0..cs_bits).map(|i| checksum[0] >> (7 - i) & 1 == 1));
    bits.chunks(11)
        .map(|c| words[c.iter().fold(0usize, |acc, &b| acc << 1 | usize::from(b))])
        .collect::<Vec<_>>()
        .join(" ")
}

fn bip39_seed(phrase: &str) -> [u8; 64] {
    let mut seed = [0u8; 64];
    pbkdf2::pbkdf2_hmac::<Sha512>(phrase.as_bytes(), b"mnemonic", 2048, &mut seed);
    seed
}

fn hkdf32(root: &[u8], label: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    Hkdf::<Sha256>::new(Some(b"tidings/v1"), root)
        .expand(label, &mut out)
        .unwrap();
    out
}

#[test]
fn the_file_has_the_vectors_it_promises() {
    let all = vectors();
    assert!(all.len() >= 5);
    assert!(all.iter().any(|v| v.phrase.split(' ').count() == 24));
    assert_eq!(
        all[0].phrase,
        "abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon about"
    );
}

#[test]
fn the_word_list_is_the_official_one() {
    let mut text = bip39::Language::English.word_list().join("\n");
    text.push('\n');
    assert_eq!(hex::encode(Sha256::digest(text.as_bytes())), ENGLISH_TXT_SHA256);
}

#[test]
fn the_standard_bip39_seed_matches_the_published_value() {
    let abandon = &vectors()[0];
    assert_eq!(hex::encode(bip39_seed(&abandon.phrase)), ABANDON_SEED);
    assert_eq!(hex::encode(&abandon.seed), ABANDON_SEED);
}

#[test]
fn the_crate_reproduces_every_vector() {
    for v in vectors() {
        let id = Identity::restore(&v.phrase).unwrap();
        assert_eq!(id.entropy(), v.entropy.as_slice(), "{}", v.phrase);
        assert_eq!(id.account(), v.public_key, "{}", v.phrase);
        assert_eq!(id.account_id(), v.account_id, "{}", v.phrase);
        assert_eq!(id.config_key(), &v.config_key, "{}", v.phrase);
        assert_eq!(id.signing_key().to_bytes(), v.identity_seed, "{}", v.phrase);
        let from_entropy = Identity::from_entropy(&v.entropy).unwrap();
        assert_eq!(from_entropy.phrase(), v.phrase);
        assert_eq!(identity::parse_account_id(&v.account_id).unwrap(), v.public_key);
        let seed: [u8; 64] = v.seed.as_slice().try_into().unwrap();
        assert_eq!(identity::derive_key(&seed, identity::LABEL_CONFIG), v.config_key);
    }
}

#[test]
fn every_vector_follows_from_first_principles() {
    for v in vectors() {
        assert_eq!(phrase_from_entropy(&v.entropy), v.phrase);
        let seed = bip39_seed(&v.phrase);
        assert_eq!(seed.as_slice(), v.seed.as_slice(), "{}", v.phrase);
        let identity_seed = hkdf32(&seed, b"identity/ed25519");
        assert_eq!(identity_seed, v.identity_seed, "{}", v.phrase);
        let public_key = SigningKey::from_bytes(&identity_seed).verifying_key().to_bytes();
        assert_eq!(public_key, v.public_key, "{}", v.phrase);
        assert_eq!(format!("01{}", hex::encode(public_key)), v.account_id);
        assert_eq!(hkdf32(&seed, b"config/xchacha20"), v.config_key, "{}", v.phrase);
    }
}
