//! The tidings relay.
//!
//! Slow Mode: the [`store`] holds mailboxes; Fast Mode: subscriptions and the push
//! outbox live in the same store, and the notifier delivers through APNs, FCM, Huawei Push Kit and Web Push.

#![warn(missing_docs)]

pub mod admin;
pub mod auth;
pub mod clock;
pub mod config;
pub mod decode_errors;
pub mod keys;
pub mod limits;
pub mod longpoll;
pub mod mailbox;
pub mod metrics;
pub mod notifier;
pub mod ohttp;
pub mod push;
pub mod registration;
pub mod relay_service;
pub mod server;
pub mod store;
pub mod sweeper;
pub mod tls;
