//! The API app developers embed: UniFFI bindings of `tidings-device-link` for Swift and
//! Kotlin (tested here from Python), with the Fast/Slow Mode driver.
//!
//! - [`TidingsClient`]: one install — its state directory (secrets under the app's key),
//!   its relay, its account (create, restore by phrase, link by QR code), the config
//!   documents, sending and receiving messages, Fast/Slow Mode.
//! - [`decrypt_push`] / [`push_key_from_state`]: push decryption with no network and no
//!   client, for the iOS Notification Service Extension and Android's messaging service.
//! - [`EventListener`]: the app's callbacks (message, config changed, mode changed, link
//!   request, progress).
//!
//! The generated Swift and Kotlin live in `mobile-glue/bindings/`; `docs/mobile.md` shows
//! how iOS and Android apps use them.

#![warn(missing_docs)]

uniffi::setup_scaffolding!();

#[cfg(target_os = "android")]
mod android;
mod cancel;
mod client;
mod config_api;
mod driver;
mod error;
mod events;
mod inbox;
mod link;
mod log;
mod notification;
mod push;
mod runtime;
mod sign_out;
mod types;
mod webpush;

pub use cancel::Cancellation;
pub use client::TidingsClient;
pub use error::{ConfigFailure, LinkCodeProblem, LinkFailure, RelayCode, StateFailure, TidingsError};
pub use events::EventListener;
pub use log::{LogLevel, LogSink, set_log_sink};
pub use notification::NotificationProcessor;
pub use push::{decrypt_push, push_key_from_state};
pub use types::*;

use tidings_device_link::identity::Identity;
use zeroize::Zeroizing;

/// Checks a recovery phrase without restoring anything (for live feedback while the user
/// types it) and returns the account id it belongs to. Fails with `BadWord` (its
/// position: `suggest_words` offers the closest words), `BadChecksum` or `WordCount`.
#[uniffi::export]
pub fn check_phrase(phrase: String) -> Result<String, TidingsError> {
    let identity = Identity::restore(&Zeroizing::new(phrase))?;
    Ok(identity.account_id())
}

/// Up to three valid words closest to the word at `position` (1-based) of `phrase`,
/// closest first: what a phrase screen offers after `BadWord`. Empty when there is no
/// word there. The words never appear in an error or a log.
#[uniffi::export]
pub fn suggest_words(phrase: String, position: u32) -> Vec<String> {
    let phrase = Zeroizing::new(phrase);
    let Some(word) = usize::try_from(position)
        .ok()
        .and_then(|p| p.checked_sub(1))
        .and_then(|i| phrase.split_whitespace().nth(i))
    else {
        return Vec::new();
    };
    tidings_device_link::identity::closest_words(&word.to_lowercase())
}

/// The library's version.
#[uniffi::export]
pub fn library_version() -> String {
    env!("CARGO_PKG_VERSION").to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    const ABANDON: &str =
        "abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon about";

    #[test]
    fn check_phrase_names_the_problem() {
        assert!(check_phrase(ABANDON.into()).unwrap().starts_with("01"));
        match check_phrase(ABANDON.replace("about", "abuot")) {
            Err(TidingsError::BadWord { position }) => {
                assert_eq!(position, 12);
                let typo = ABANDON.replace("about", "abuot");
                assert_eq!(suggest_words(typo.clone(), position)[0], "about");
                assert!(suggest_words(typo.clone(), 13).is_empty());
                assert!(suggest_words(typo, 0).is_empty());
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            check_phrase(ABANDON.replace("about", "abandon")),
            Err(TidingsError::BadChecksum)
        );
        assert_eq!(
            check_phrase("abandon".into()),
            Err(TidingsError::WordCount { found: 1 })
        );
    }
}
