//! The tidings relay.
//!
//! Slow Mode: the [`store`] holds mailboxes; Fast Mode: subscriptions and the push
//! outbox live in the same store, and the notifier delivers through APNs and FCM.

pub mod store;
