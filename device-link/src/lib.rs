//! tidings client library: the recovery phrase and keys of an account, the async relay
//! client, the converging config documents and their sync over the mailbox, and linking
//! a new device by phrase or QR code.
//!
//! This crate knows nothing of the relay's internals: it speaks only the wire contract
//! of `tidings-proto`.

#![warn(missing_docs)]

pub mod account;
pub mod client;
pub mod config;
pub mod fast_mode;
pub mod identity;
pub mod journal;
pub mod link;
pub mod notification;
pub mod ohttp;
pub mod sealed;
pub mod state;
pub mod tls;
pub mod webpush;
