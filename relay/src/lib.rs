//! The tidings relay.
//!
//! Slow Mode: the [`store`] holds mailboxes; Fast Mode: subscriptions and the push
//! outbox live in the same store, and the notifier delivers through APNs, FCM, Huawei
//! Push Kit and Web Push.

#![warn(missing_docs)]

// Public only where something outside the crate needs it; the user is named. The rest is
// the relay's own business (`pub(crate)`), so a change there cannot break another crate.
pub(crate) mod admin;
pub(crate) mod auth;
/// The relay binary, the end-to-end tests and the CLI's tests inject time through it.
pub mod clock;
/// The relay binary and every test that starts a relay build its configuration.
pub mod config;
/// The fuzz targets drive the undecodable-body renaming directly.
pub mod decode_errors;
/// The relay binary (`keygen`) and the fuzz targets (the keys registrations are sealed to).
pub mod keys;
pub(crate) mod limits;
pub(crate) mod longpoll;
/// The fuzz targets and their corpus replay call the request validators.
pub mod mailbox;
pub(crate) mod metrics;
pub(crate) mod notifier;
/// The OHTTP fuzz target decapsulates through the gateway.
pub mod ohttp;
/// The push bench times the Web Push encryption (`push::webpush::ece`) on its own.
pub mod push;
/// The fuzz targets validate registrations and round-trip their at-rest sealing.
pub mod registration;
/// The fuzz targets and their corpus replay call the Subscribe validators.
pub mod relay_service;
/// The relay binary, the test harness and the benches start relays with it.
pub mod server;
/// The relay binary (`migrate`), the test harness (test schemas) and the benches.
pub mod store;
pub(crate) mod sweeper;
pub(crate) mod tls;
