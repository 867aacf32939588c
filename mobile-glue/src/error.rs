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
    config::{ConfigError, envelope::EnvelopeError},
    identity::{AccountIdError, PhraseError},
    journal::JournalError,
    link::{LinkError, PayloadError},
    state::StateError,
    webpush::WebPushError,
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
    #[error("device state ({kind:?}): {reason}")]
    State {
        /// What kind of failure, for the app to act on.
        kind: StateFailure,
        /// What failed, for a log (a path and the OS error; never a secret).
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
    /// The relay's TLS certificate is not trusted by the configured roots (`trust`,
    /// `extra_ca_roots_pem`). Not retried: fix the relay's certificate or the options.
    #[error("the relay's certificate is not trusted: {reason}")]
    UntrustedCertificate {
        /// Which roots refused it and why.
        reason: String,
    },
    /// The relay refused the request.
    #[error("the relay answered {code:?}: {reason}")]
    Relay {
        /// The gRPC status code (UNAVAILABLE and DEADLINE_EXCEEDED come as `Unreachable`
        /// and `Timeout`).
        code: RelayCode,
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
    #[error("invalid link code ({kind:?}): {reason}")]
    BadLinkCode {
        /// What is wrong with it, for the app to word its message.
        kind: LinkCodeProblem,
        /// The same, in English.
        reason: String,
    },
    /// Linking a device failed (a call out of order, a code replaced while waiting, a
    /// message from the other device that does not open).
    #[error("linking failed ({kind:?}): {reason}")]
    Link {
        /// What failed.
        kind: LinkFailure,
        /// The same, in English.
        reason: String,
    },
    /// A config change was refused (a name too long, an empty id), or saved or received
    /// config could not be read.
    #[error("config ({kind:?}): {reason}")]
    Config {
        /// What kind of failure.
        kind: ConfigFailure,
        /// Which input and limit, or what could not be read.
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
        write!(f, "{}({self})", variant_name(self))
    }
}

/// A gRPC status code the relay answered with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, uniffi::Enum)]
pub enum RelayCode {
    /// A request field broke a rule (the reason names the field and the rule).
    InvalidArgument,
    /// A signature or its time window was refused (check the device clock).
    Unauthenticated,
    /// The account may not do this (an owner-only namespace).
    PermissionDenied,
    /// What was asked for does not exist.
    NotFound,
    /// A limit: too many requests (retry later) or a message too large.
    ResourceExhausted,
    /// The relay is not in a state to do this.
    FailedPrecondition,
    /// A value outside its range.
    OutOfRange,
    /// The relay does not offer this call (an older relay).
    Unimplemented,
    /// The relay is broken (its operator is alerted); retrying later may help.
    Internal,
    /// The call was cancelled on the way.
    Cancelled,
    /// Any other code.
    Other,
}

impl RelayCode {
    fn from_grpc(code: tonic::Code) -> RelayCode {
        use tonic::Code as C;
        match code {
            C::InvalidArgument => RelayCode::InvalidArgument,
            C::Unauthenticated => RelayCode::Unauthenticated,
            C::PermissionDenied => RelayCode::PermissionDenied,
            C::NotFound => RelayCode::NotFound,
            C::ResourceExhausted => RelayCode::ResourceExhausted,
            C::FailedPrecondition => RelayCode::FailedPrecondition,
            C::OutOfRange => RelayCode::OutOfRange,
            C::Unimplemented => RelayCode::Unimplemented,
            C::Internal | C::DataLoss | C::Unknown => RelayCode::Internal,
            C::Cancelled => RelayCode::Cancelled,
            _ => RelayCode::Other,
        }
    }
}

/// What kind of device-state failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, uniffi::Enum)]
pub enum StateFailure {
    /// The file system refused (full, read-only, permissions, a protected file while
    /// the device is locked).
    Io,
    /// A state file opened with the right key is damaged or was altered.
    Corrupt,
    /// The state directory holds no state (nothing was opened there yet).
    NoState,
    /// State exists but its device record is missing: refusing to start over on top of it.
    MissingDeviceRecord,
    /// A bug in the SDK (an internal task failed); the report has details.
    Internal,
}

/// What is wrong with a scanned link code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, uniffi::Enum)]
pub enum LinkCodeProblem {
    /// Not a tidings link code at all (another QR code).
    NotALinkCode,
    /// The other device runs an older app whose codes this one refuses: update it.
    OtherDeviceOutdated,
    /// A newer kind of code than this app understands: update this app.
    ThisAppOutdated,
    /// Damaged or incomplete (scan again).
    Damaged,
    /// The relay address or device name it carries is not acceptable.
    BadContents,
}

/// What went wrong while linking.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, uniffi::Enum)]
pub enum LinkFailure {
    /// A call out of order: no code shown yet (`begin_link`), no scan yet
    /// (`wait_for_link`), or nothing inspected (`inspect_link`).
    NotStarted,
    /// The code or the request was replaced, rejected or declined while waiting.
    Replaced,
    /// The request was inspected while another account was signed in: scan it again.
    OtherAccount,
    /// What the other device sent does not open, or is not an account.
    BadMessage,
}

/// What kind of config failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, uniffi::Enum)]
pub enum ConfigFailure {
    /// An input is longer than its limit.
    TooLong,
    /// An input that must not be empty is.
    Empty,
    /// A change too large for one config message.
    TooLarge,
    /// Saved or received config could not be read (damaged, or from a newer app).
    Unreadable,
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
        TidingsError::UntrustedCertificate { .. } => "UntrustedCertificate",
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
                kind: StateFailure::Corrupt,
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
        let kind = match &e {
            StateError::WrongKey => return TidingsError::WrongStateKey,
            StateError::Io { .. } => StateFailure::Io,
            StateError::MissingDeviceRecord(_) => StateFailure::MissingDeviceRecord,
            StateError::NoState(_) => StateFailure::NoState,
            StateError::Corrupt(_) | StateError::Identity(_) => StateFailure::Corrupt,
            StateError::BlobName(_) => StateFailure::Internal,
        };
        TidingsError::State {
            kind,
            reason: e.to_string(),
        }
    }
}

impl From<ClientError> for TidingsError {
    fn from(e: ClientError) -> Self {
        match &e {
            ClientError::Connect(reason) => TidingsError::Unreachable {
                reason: reason.clone(),
            },
            ClientError::UntrustedCertificate(reason) => TidingsError::UntrustedCertificate {
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
                    code: RelayCode::from_grpc(*code),
                    reason: message.clone(),
                },
            },
            ClientError::Endpoint { .. }
            | ClientError::InvalidNamespace(_)
            | ClientError::OwnerOnlyNamespace(_) => TidingsError::InvalidArgument {
                reason: e.to_string(),
            },
            ClientError::InvalidResponse(_) => TidingsError::Relay {
                code: RelayCode::Internal,
                reason: e.to_string(),
            },
        }
    }
}

impl From<WebPushError> for TidingsError {
    fn from(e: WebPushError) -> Self {
        match e {
            WebPushError::Rejected => TidingsError::PushNotForThisDevice,
            WebPushError::Malformed(_) | WebPushError::NotAPush => TidingsError::PushMalformed,
            WebPushError::CorruptKeys => TidingsError::State {
                kind: StateFailure::Corrupt,
                reason: format!("{e}; enable Fast Mode again to register new ones"),
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
        let kind = match &e {
            PayloadError::NotALinkCode => LinkCodeProblem::NotALinkCode,
            PayloadError::Outdated => LinkCodeProblem::OtherDeviceOutdated,
            PayloadError::UnsupportedVersion(_) => LinkCodeProblem::ThisAppOutdated,
            PayloadError::Encoding | PayloadError::TooShort | PayloadError::MailboxKey => {
                LinkCodeProblem::Damaged
            }
            PayloadError::RelayAddress | PayloadError::DeviceName => LinkCodeProblem::BadContents,
        };
        TidingsError::BadLinkCode {
            kind,
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
            other @ (LinkError::Declined | LinkError::Mismatch) => TidingsError::Link {
                kind: LinkFailure::Replaced,
                reason: other.to_string(),
            },
            other => TidingsError::Link {
                kind: LinkFailure::BadMessage,
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
            AccountError::Config(e) => config_error(&e),
            AccountError::Envelope(e) => TidingsError::Config {
                kind: match e {
                    EnvelopeError::TooLarge { .. } => ConfigFailure::TooLarge,
                    _ => ConfigFailure::Unreadable,
                },
                reason: e.to_string(),
            },
            AccountError::Journal(e) => TidingsError::State {
                kind: match e {
                    JournalError::Io { .. } | JournalError::Busy(_) | JournalError::Full(_) => {
                        StateFailure::Io
                    }
                    JournalError::WrongKey => StateFailure::Corrupt,
                    JournalError::TooLarge(_) | JournalError::BadOffset(_) => StateFailure::Internal,
                },
                reason: e.to_string(),
            },
        }
    }
}

fn config_error(e: &ConfigError) -> TidingsError {
    let kind = match e {
        ConfigError::TooLong { .. } => ConfigFailure::TooLong,
        ConfigError::Empty { .. } => ConfigFailure::Empty,
        ConfigError::Decode(_) | ConfigError::Corrupt(_) => ConfigFailure::Unreadable,
    };
    TidingsError::Config {
        kind,
        reason: e.to_string(),
    }
}

/// A count or position as the FFI's `u32`; nothing this API counts comes near the limit.
pub(crate) fn saturating_u32(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
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
                code: RelayCode::InvalidArgument,
                reason: "app_id: not served".into()
            }
        );
    }
}
