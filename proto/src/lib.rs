//! The tidings wire contract.
//!
//! Everything two implementations must agree on byte for byte lives here: the gRPC
//! messages and services generated from `proto/tidings/v1/*.proto`, the signed byte
//! strings ([`sign`]), the message hash ([`hash`]), the sealed push registration
//! ([`seal`]) and the encrypted push payload ([`push`]).
//!
//! This crate knows no storage, no network transport and no relay policy (limits,
//! clocks, configuration): it only turns values into bytes and back.

#![warn(missing_docs)]

pub mod aead;
pub mod hash;
pub mod namespace;
pub mod push;
pub mod seal;
pub mod sign;

/// Generated messages and services of package `tidings.v1`.
pub mod v1 {
    #![allow(missing_docs, clippy::all, clippy::pedantic)]
    tonic::include_proto!("tidings.v1");
}

/// The encoded `FileDescriptorSet` of every `.proto` file, for gRPC reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/tidings_descriptor.bin"));

/// Length of an account key (an Ed25519 public key).
pub const ACCOUNT_LEN: usize = 32;
/// Length of a device id.
pub const DEVICE_ID_LEN: usize = 16;
/// Length of a push key.
pub const PUSH_KEY_LEN: usize = 32;
/// Length of an Ed25519 signature.
pub const SIGNATURE_LEN: usize = 64;
/// Length of a message hash.
pub const HASH_LEN: usize = 32;

/// Fills a fresh array from the operating system's CSPRNG.
///
/// # Panics
/// When the operating system has no randomness to give. Every key and nonce depends
/// on it; carrying on without it would be worse than stopping.
pub fn random_bytes<const N: usize>() -> [u8; N] {
    let mut out = [0u8; N];
    // An OS without a working CSPRNG cannot run this software safely (see above).
    getrandom::fill(&mut out).expect("the operating system's random number generator failed");
    out
}
