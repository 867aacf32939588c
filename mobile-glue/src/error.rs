//! The one error type of the API, which becomes `TidingsError` (Python, Swift) or
//! `TidingsException` (Kotlin) with one subclass per variant.
//!
//! Variants carry what an app shows or acts on (the position of a mistyped word, the gRPC
//! code of a relay refusal); no field, message or `Debug` output contains a phrase word
//! (mistyped or suggested), a key or a token. The generated Kotlin and Swift errors print
//! their fields in their messages, so the rule covers fields too.

use tidings_device_link::{
    account::AccountError,
    client::{ClientError, PushDecryptError},
    identity::{AccountIdError, PhraseError},
    link::{LinkError, PayloadError},
    state::StateError,
};

/// Why a call failed. `Display` and `Debug` never show a phrase word (not even a
/// mistyped one: it is usually one letter from the real word), a key or a token.
#[derive(Clone, PartialEq, Eq, thiserror::Error, uniffi::Error)]
pub enum TidingsError {
    /// A recovery phrase word is not in the word list. Only its position is carried (a
    /// generated Kotlin or Swift error prints its fields in its message, which apps log):
    /// `suggest_words(phrase, position)` gives the closest words for the app to offer.
    #[error("word {position} is not a recovery phrase word")]
    BadWord {
        /// 1-based position of the word.
        position: u32,
    },
    /// Every word is valid but the checksum does not match (a wrong or swapped word).
    #[error("the recovery phrase's checksum does not match: a word is wrong or out of order")]
    BadChecksum,
    /// Not 12 or 24 words.
    #[error("a recovery phrase has 12 or 24 words, this one has {found}")]
    WordCount {
        /// How many words were given.
        found: u32,
    },
    /// Not `"01"` followed by 64 hex digits. The text is not repeated: it may be
    /// anything the user pasted, a phrase included.
    #[error("not an account id (\"01\" and 64 hex digits)")]
    InvalidAccountId,
    /// An argument is outside what the API accepts.
    #[error("invalid argument: {reason}")]
    InvalidArgument {
        /// Which argument and rule.
        reason: String,
    },
    /// The state key does not open the state directory.
    #[error("the state key does not open this state directory (wrong key, or altered files)")]
    WrongStateKey,
    /// The state directory could not be read or written.
    #[error("device state: {reason}")]
    State {
        /// What failed.
        reason: String,
    },
    /// The call needs an account but this install is signed out.
    #[error("no account: create or restore one first")]
    NotSignedIn,
    /// The call needs a signed-out install (create, restore, link as the new device).
    #[error("this install already has an account: sign out first")]
    AlreadySignedIn,
    /// The relay could not be reached (after retries).
    #[error("the relay is unreachable: {reason}")]
    Unreachable {
        /// The transport's explanation.
        reason: String,
    },
    /// The relay refused the request.
    #[error("the relay answered {code}: {reason}")]
    Relay {
        /// The gRPC status code's name, e.g. `INVALID_ARGUMENT`.
        code: String,
        /// The relay's message (names the field and rule for `INVALID_ARGUMENT`). Not
        /// called `message`: Kotlin exceptions have a `message` of their own.
        reason: String,
    },
    /// A push payload is damaged (not base64, truncated or not a notification).
    #[error("the push payload is damaged")]
    PushMalformed,
    /// A push payload is not for this device's push key (another install) or was altered.
    #[error("the push payload is not for this device's push key, or was altered")]
    PushNotForThisDevice,
    /// A scanned link code is not a valid tidings link code.
    #[error("invalid link code: {reason}")]
    BadLinkCode {
        /// What is wrong with it.
        reason: String,
    },
    /// Linking a device failed (nothing arrived, a degenerate key, no pending request).
    #[error("linking failed: {reason}")]
    Link {
        /// What failed.
        reason: String,
    },
    /// A config change was refused (a name too long, an empty id).
    #[error("config: {reason}")]
    Config {
        /// Which input and limit.
        reason: String,
    },
    /// The call did not finish in time.
    #[error("timed out: {what}")]
    Timeout {
        /// What was waited for.
        what: String,
    },
    /// The call was cancelled (its `Cancellation` fired).
    #[error("cancelled")]
    Cancelled,
    /// The client was closed.
    #[error("the client is closed")]
    Closed,
}

impl std::fmt::Debug for TidingsError {
    // The variant and its message, which carry only our own texts and codes: a derived
    // Debug would print whatever a future field holds.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            other => write!(f, "{}({other})", variant_name(other)),
        }
    }
}

fn variant_name(e: &TidingsError) -> &'static str {
    match e {
        TidingsError::BadWord { .. } => "BadWord",
        TidingsError::BadChecksum => "BadChecksum",
        TidingsError::WordCount { .. } => "WordCount",
        TidingsError::InvalidAccountId => "InvalidAccountId",
        TidingsError::InvalidArgument { .. } => "InvalidArgument",
        TidingsError::WrongStateKey => "WrongStateKey",
        TidingsError::State { .. } => "State",
        TidingsError::NotSignedIn => "NotSignedIn",
        TidingsError::AlreadySignedIn => "AlreadySignedIn",
        TidingsError::Unreachable { .. } => "Unreachable",
        TidingsError::Relay { .. } => "Relay",
        TidingsError::PushMalformed => "PushMalformed",
        TidingsError::PushNotForThisDevice => "PushNotForThisDevice",
        TidingsError::BadLinkCode { .. } => "BadLinkCode",
        TidingsError::Link { .. } => "Link",
        TidingsError::Config { .. } => "Config",
        TidingsError::Timeout { .. } => "Timeout",
        TidingsError::Cancelled => "Cancelled",
        TidingsError::Closed => "Closed",
    }
}

/// Results of this crate.
pub type Result<T, E = TidingsError> = std::result::Result<T, E>;

impl From<PhraseError> for TidingsError {
    fn from(e: PhraseError) -> Self {
        match e {
            PhraseError::WordCount { found } => TidingsError::WordCount {
                found: saturating_u32(found),
            },
            PhraseError::UnknownWord { position, .. } => TidingsError::BadWord {
                position: saturating_u32(position),
            },
            PhraseError::Checksum => TidingsError::BadChecksum,
            other @ PhraseError::EntropyLength { .. } => TidingsError::State {
                reason: other.to_string(),
            },
        }
    }
}

impl From<AccountIdError> for TidingsError {
    fn from(_: AccountIdError) -> Self {
        TidingsError::InvalidAccountId
    }
}

impl From<StateError> for TidingsError {
    fn from(e: StateError) -> Self {
        match e {
            StateError::WrongKey => TidingsError::WrongStateKey,
            other => TidingsError::State {
                reason: other.to_string(),
            },
        }
    }
}

impl From<ClientError> for TidingsError {
    fn from(e: ClientError) -> Self {
        use tonic_code::name;
        match &e {
            ClientError::Connect(reason) => TidingsError::Unreachable {
                reason: reason.clone(),
            },
            ClientError::Status { code, message } => match code {
                tonic::Code::Unavailable => TidingsError::Unreachable {
                    reason: message.clone(),
                },
                tonic::Code::DeadlineExceeded => TidingsError::Timeout {
                    what: message.clone(),
                },
                code => TidingsError::Relay {
                    code: name(*code).to_owned(),
                    reason: message.clone(),
                },
            },
            ClientError::Endpoint { .. }
            | ClientError::InvalidNamespace(_)
            | ClientError::OwnerOnlyNamespace(_) => TidingsError::InvalidArgument {
                reason: e.to_string(),
            },
            ClientError::InvalidResponse(_) => TidingsError::Relay {
                code: "INTERNAL".to_owned(),
                reason: e.to_string(),
            },
        }
    }
}

impl From<PushDecryptError> for TidingsError {
    fn from(e: PushDecryptError) -> Self {
        match e {
            PushDecryptError::NotForThisDevice => TidingsError::PushNotForThisDevice,
            PushDecryptError::Malformed | PushDecryptError::Content => TidingsError::PushMalformed,
        }
    }
}

impl From<PayloadError> for TidingsError {
    fn from(e: PayloadError) -> Self {
        TidingsError::BadLinkCode {
            reason: e.to_string(),
        }
    }
}

impl From<LinkError> for TidingsError {
    fn from(e: LinkError) -> Self {
        match e {
            LinkError::Payload(p) => p.into(),
            LinkError::Client(c) => c.into(),
            LinkError::Timeout(d) => TidingsError::Timeout {
                what: format!("no device sent the account within {} s", d.as_secs()),
            },
            other => TidingsError::Link {
                reason: other.to_string(),
            },
        }
    }
}

impl From<AccountError> for TidingsError {
    fn from(e: AccountError) -> Self {
        match e {
            AccountError::State(e) => e.into(),
            AccountError::Relay(e) => e.into(),
            AccountError::Phrase(e) => e.into(),
            AccountError::Link(e) => e.into(),
            AccountError::Push(e) => e.into(),
            AccountError::AccountId(_) => TidingsError::InvalidAccountId,
            AccountError::NotSignedIn(_) => TidingsError::NotSignedIn,
            AccountError::AlreadySignedIn(_) | AccountError::OtherAccount(_) => TidingsError::AlreadySignedIn,
            AccountError::PushForOtherAccount => TidingsError::InvalidArgument {
                reason: "the push is for another account than the signed-in one".into(),
            },
            AccountError::Sealed(e) => TidingsError::InvalidArgument {
                reason: format!("message: {e}"),
            },
            e @ (AccountError::Config(_) | AccountError::Envelope(_)) => TidingsError::Config {
                reason: e.to_string(),
            },
            // A future variant: its message says what it is.
            #[allow(unreachable_patterns)]
            e => TidingsError::State {
                reason: e.to_string(),
            },
        }
    }
}

/// A count or position as the FFI's `u32`; nothing this API counts comes near the limit.
pub(crate) fn saturating_u32(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// The names gRPC uses for its codes, which app developers search for.
mod tonic_code {
    pub fn name(code: tonic::Code) -> &'static str {
        use tonic::Code::*;
        match code {
            Ok => "OK",
            Cancelled => "CANCELLED",
            Unknown => "UNKNOWN",
            InvalidArgument => "INVALID_ARGUMENT",
            DeadlineExceeded => "DEADLINE_EXCEEDED",
            NotFound => "NOT_FOUND",
            AlreadyExists => "ALREADY_EXISTS",
            PermissionDenied => "PERMISSION_DENIED",
            ResourceExhausted => "RESOURCE_EXHAUSTED",
            FailedPrecondition => "FAILED_PRECONDITION",
            Aborted => "ABORTED",
            OutOfRange => "OUT_OF_RANGE",
            Unimplemented => "UNIMPLEMENTED",
            Internal => "INTERNAL",
            Unavailable => "UNAVAILABLE",
            DataLoss => "DATA_LOSS",
            Unauthenticated => "UNAUTHENTICATED",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phrase_errors_keep_their_details() {
        let e: TidingsError = PhraseError::UnknownWord {
            position: 3,
            suggestions: vec!["about".into()],
        }
        .into();
        assert_eq!(e, TidingsError::BadWord { position: 3 });
        // Neither the typed word nor a suggestion is in what gets logged or shown.
        for shown in [e.to_string(), format!("{e:?}")] {
            assert!(!shown.contains("abuot") && !shown.contains("about"), "{shown}");
            assert!(shown.contains('3'), "{shown}");
        }
        assert_eq!(
            TidingsError::from(PhraseError::Checksum),
            TidingsError::BadChecksum
        );
        assert_eq!(
            TidingsError::from(PhraseError::WordCount { found: 11 }),
            TidingsError::WordCount { found: 11 }
        );
    }

    #[test]
    fn relay_statuses_map_to_what_apps_act_on() {
        let unavailable = ClientError::Status {
            code: tonic::Code::Unavailable,
            message: "down".into(),
        };
        assert!(matches!(
            TidingsError::from(unavailable),
            TidingsError::Unreachable { .. }
        ));
        let refused = ClientError::Status {
            code: tonic::Code::InvalidArgument,
            message: "app_id: not served".into(),
        };
        assert_eq!(
            TidingsError::from(refused),
            TidingsError::Relay {
                code: "INVALID_ARGUMENT".into(),
                reason: "app_id: not served".into()
            }
        );
    }
}
