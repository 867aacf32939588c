//! What can go wrong, as one line each that names what to do, and the exit code of each
//! class of failure (documented in `tidings --help` and the README).
//!
//! No message carries a phrase word (not even the suggestions for a mistyped one), a key,
//! or an account id the user typed: stderr ends up in scripts' logs.

use std::{path::PathBuf, time::Duration};

use tidings_device_link::{
    account::AccountError, client::ClientError, config::ConfigError, identity::PhraseError, link::LinkError,
    sealed::SealedMessageError, state::StateError,
};
use tonic::Code;

/// The classes of failure, each with its own exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitClass {
    /// Anything else: a "no" at a prompt, output that could not be written, a bug.
    Failure,
    /// Bad arguments, or a command the state dir is not ready for (clap uses 2 as well).
    Usage,
    /// Input that cannot be right: a phrase word, an account id, a link code, a name.
    BadInput,
    /// The relay cannot be reached (or its certificate is not trusted).
    Unreachable,
    /// The relay answered, and refused.
    Refused,
    /// The state dir or its key file is damaged, missing or busy.
    State,
    /// Linking did not complete: declined, codes differ, timed out.
    Link,
    /// Ctrl-C while a command waited for something it needs (linking).
    Interrupted,
}

impl ExitClass {
    /// The process exit code.
    pub fn code(self) -> u8 {
        match self {
            ExitClass::Failure => 1,
            ExitClass::Usage => 2,
            ExitClass::BadInput => 3,
            ExitClass::Unreachable => 4,
            ExitClass::Refused => 5,
            ExitClass::State => 6,
            ExitClass::Link => 7,
            ExitClass::Interrupted => 130,
        }
    }
}

/// Where a command ran, for messages: the relay, the state dir, the OHTTP relay.
#[derive(Debug, Clone)]
pub struct Where {
    /// The relay's address as given (its OHTTP gateway with `--ohttp-relay`).
    pub relay: String,
    /// The state dir.
    pub dir: PathBuf,
    /// `--ohttp-relay`, when calls go through one.
    pub ohttp_relay: Option<String>,
}

/// A failed command.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// The recovery phrase was not accepted (the position only, never a word).
    #[error("{}", phrase_message(.0))]
    Phrase(PhraseError),
    /// An account id that does not parse.
    #[error(
        "that is not an account id: an account id is \"01\" followed by 64 hex digits \
         (`tidings account show` prints it)"
    )]
    AccountId,
    /// An account id that parses but is no account key: nothing can be sealed to it.
    #[error("that account id names no account (it is not a valid account key): check it with its owner")]
    NoSuchAccount,
    /// A contact command for an account id that is not a contact.
    #[error("no contact has that account id: see `tidings contacts list`")]
    UnknownContact,
    /// Other input that cannot be right; the text says what and what to do.
    #[error("{0}")]
    Input(String),
    /// The relay cannot be reached.
    #[error(
        "cannot reach the relay at {relay} ({detail}): start it (`cargo run -p tidings-relay -- serve`), \
         pass --relay URL, or set TIDINGS_RELAY"
    )]
    Unreachable {
        /// The relay's address.
        relay: String,
        /// Why, as the client says.
        detail: String,
    },
    /// Through OHTTP: the OHTTP relay or the gateway behind it cannot be reached.
    #[error(
        "cannot reach the relay's OHTTP gateway at {gateway} through the OHTTP relay {ohttp_relay} \
         ({detail}): check that both are up, that the OHTTP relay forwards to this gateway, and that \
         --relay is the gateway's address (the relay's [ohttp] listen, port 7402 by default)"
    )]
    OhttpUnreachable {
        /// `--relay`.
        gateway: String,
        /// `--ohttp-relay`.
        ohttp_relay: String,
        /// Why, as the client says.
        detail: String,
    },
    /// Through OHTTP: the gateway's key configuration cannot be fetched (`unreachable`:
    /// no answer; else an answer that is no key configuration, as from a relay without
    /// OHTTP).
    #[error("{}", ohttp_keys_message(gateway, detail, *unreachable))]
    OhttpKeys {
        /// `--relay`.
        gateway: String,
        /// Why, as the client says.
        detail: String,
        /// Nothing answered (rather than something that is no gateway).
        unreachable: bool,
    },
    /// Through OHTTP: the OHTTP relay or the gateway refused to carry the call (the relay
    /// itself never saw it). `key_rejected`: the gateway no longer accepts the key
    /// configuration this device used, which is then forgotten.
    #[error("{}", ohttp_refused_message(gateway, ohttp_relay, detail, *key_rejected))]
    OhttpRefused {
        /// `--relay`.
        gateway: String,
        /// `--ohttp-relay`.
        ohttp_relay: String,
        /// The client's message.
        detail: String,
        /// The key was refused.
        key_rejected: bool,
    },
    /// The relay answered with an error.
    #[error("the relay at {relay} refused the request ({detail})")]
    Refused {
        /// The relay's address.
        relay: String,
        /// Its status and message.
        detail: String,
    },
    /// The state dir cannot be read or written.
    #[error(
        "cannot use the state in {}: {detail}; if it is damaged, move the directory away and \
         `tidings account restore` from the recovery phrase",
        dir.display()
    )]
    State {
        /// The state dir.
        dir: PathBuf,
        /// What is wrong.
        detail: String,
    },
    /// The key file is missing (with state beside it), damaged or unreadable.
    #[error("the state key file {} {problem}", path.display())]
    KeyFile {
        /// The key file.
        path: PathBuf,
        /// What is wrong and what to do.
        problem: String,
    },
    /// Another tidings process has the state dir open.
    #[error(
        "{} is in use by another tidings command (a running `tidings listen` or `--watch`?): stop it, \
         or wait for it to end",
        dir.display()
    )]
    Busy {
        /// The state dir.
        dir: PathBuf,
    },
    /// The command needs an account and the state dir has none.
    #[error(
        "no account is signed in to {}: run `tidings account create` or `tidings account restore` \
         (or pass --state-dir)",
        dir.display()
    )]
    NoAccount {
        /// The state dir.
        dir: PathBuf,
    },
    /// The command makes an account and the state dir has one.
    #[error(
        "{} already holds an account: pass another --state-dir, or `tidings account sign-out` first",
        dir.display()
    )]
    HasAccount {
        /// The state dir.
        dir: PathBuf,
    },
    /// A state dir that holds other files and no tidings state.
    #[error(
        "{} is not empty and holds no tidings state: pass a new or empty --state-dir",
        dir.display()
    )]
    ForeignDir {
        /// The directory.
        dir: PathBuf,
    },
    /// The other device declined the link request.
    #[error("the other device declined the link: nothing was linked")]
    LinkDeclined,
    /// This device's user declined (scan side) or saw different codes (show side).
    #[error("{0}: nothing was linked")]
    LinkStopped(&'static str),
    /// Nothing arrived in time while linking.
    #[error(
        "the other device did not answer within {} s: start again with `tidings link show`",
        .0.as_secs()
    )]
    LinkTimeout(Duration),
    /// Linking failed on the other side's answer (another device answered, a bad root).
    #[error("{0}: start again with `tidings link show`")]
    LinkFailed(String),
    /// The user answered "no" at a confirmation.
    #[error("{0}")]
    Aborted(&'static str),
    /// Ctrl-C while waiting.
    #[error("interrupted: nothing was changed")]
    Interrupted,
    /// The terminal or a pipe failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// The OS error.
        source: std::io::Error,
    },
    /// Something that should not happen; the text says what.
    #[error("{0}")]
    Internal(String),
}

impl CliError {
    /// The class, and so the exit code, of this failure.
    pub fn class(&self) -> ExitClass {
        match self {
            CliError::Phrase(PhraseError::EntropyLength { .. }) => ExitClass::State,
            CliError::Phrase(_)
            | CliError::AccountId
            | CliError::NoSuchAccount
            | CliError::UnknownContact
            | CliError::Input(_) => ExitClass::BadInput,
            CliError::Unreachable { .. }
            | CliError::OhttpUnreachable { .. }
            | CliError::OhttpKeys {
                unreachable: true, ..
            } => ExitClass::Unreachable,
            CliError::Refused { .. } | CliError::OhttpKeys { .. } | CliError::OhttpRefused { .. } => {
                ExitClass::Refused
            }
            CliError::State { .. } | CliError::KeyFile { .. } | CliError::Busy { .. } => ExitClass::State,
            CliError::NoAccount { .. } | CliError::HasAccount { .. } | CliError::ForeignDir { .. } => {
                ExitClass::Usage
            }
            CliError::LinkDeclined
            | CliError::LinkStopped(_)
            | CliError::LinkTimeout(_)
            | CliError::LinkFailed(_) => ExitClass::Link,
            CliError::Interrupted => ExitClass::Interrupted,
            CliError::Aborted(_) | CliError::Io { .. } | CliError::Internal(_) => ExitClass::Failure,
        }
    }

    /// An I/O failure while doing `what`.
    pub fn io(what: &'static str) -> impl FnOnce(std::io::Error) -> CliError {
        move |source| CliError::Io { what, source }
    }
}

/// The message for a key configuration that could not be fetched.
fn ohttp_keys_message(gateway: &str, detail: &str, unreachable: bool) -> String {
    if unreachable {
        format!(
            "cannot fetch the OHTTP key configuration from the gateway at {gateway} ({detail}): is the \
             relay running with [ohttp] enabled = true, and is --relay its OHTTP gateway (the [ohttp] \
             listen address, port 7402 by default, not the gRPC address)?"
        )
    } else {
        format!(
            "{gateway} serves no OHTTP key configuration ({detail}): OHTTP is not enabled on that relay \
             ([ohttp] enabled = true in its config), or --relay is not its OHTTP gateway (the [ohttp] \
             listen address, port 7402 by default, not the gRPC address)"
        )
    }
}

/// The message for a call the OHTTP relay or the gateway did not carry.
fn ohttp_refused_message(gateway: &str, ohttp_relay: &str, detail: &str, key_rejected: bool) -> String {
    if key_rejected {
        format!(
            "the relay's OHTTP gateway at {gateway} no longer accepts the key configuration this device \
             used (its key changed without an overlap this device saw), so it was forgotten: run the \
             command again, which fetches the current one (with --ohttp-keys, save the current one to \
             that file first)"
        )
    } else {
        format!(
            "the OHTTP relay {ohttp_relay} or the gateway at {gateway} did not carry the request ({detail}): \
             check --ohttp-relay (the URL its operator publishes for this relay) and that it forwards to \
             this gateway"
        )
    }
}

/// The message for a phrase that was not accepted: the position of a bad word, never the
/// word, nor the suggestions (likely the real word).
fn phrase_message(e: &PhraseError) -> String {
    match e {
        PhraseError::UnknownWord { position, .. } => format!(
            "word {position} of the recovery phrase is not a recovery phrase word: check word {position} \
             and try again"
        ),
        PhraseError::Checksum => "the recovery phrase does not check out (a word is wrong or two are \
                                  swapped): check the phrase and try again"
            .to_owned(),
        PhraseError::WordCount { found } => {
            format!("a recovery phrase has 12 or 24 words, {found} were given: enter the whole phrase")
        }
        PhraseError::EntropyLength { .. } => {
            "the stored root secret is damaged: restore the account from its recovery phrase".to_owned()
        }
    }
}

impl Where {
    /// Turns a device-link error into the CLI's, with this relay and state dir named.
    pub fn account(&self, e: AccountError) -> CliError {
        match e {
            AccountError::State(e) => self.state(e),
            AccountError::Journal(e) => self.state_detail(e.to_string()),
            AccountError::Relay(e) => self.relay(e),
            AccountError::Config(e) => self.config(e),
            AccountError::Envelope(e) => {
                CliError::Internal(format!("a config change could not be sealed: {e}"))
            }
            AccountError::Phrase(e) => CliError::Phrase(e),
            AccountError::Link(e) => self.link(e),
            AccountError::Push(e) => CliError::Internal(e.to_string()),
            AccountError::AccountId(_) => CliError::AccountId,
            AccountError::NotSignedIn(dir) => CliError::NoAccount { dir },
            AccountError::AlreadySignedIn(dir) | AccountError::OtherAccount(dir) => {
                CliError::HasAccount { dir }
            }
            AccountError::Sealed(e) => sealed(e),
            AccountError::PushForOtherAccount => CliError::Internal("a push for another account".into()),
        }
    }

    /// A relay call's failure: unreachable, refused, or a bad address.
    pub fn relay(&self, e: ClientError) -> CliError {
        if let Some(ohttp_relay) = &self.ohttp_relay
            && let Some(through) = self.through_ohttp(ohttp_relay, &e)
        {
            return through;
        }
        let relay = self.relay.clone();
        match &e {
            ClientError::Endpoint { reason, .. } => CliError::Input(format!(
                "--relay {relay} is not a relay address ({reason}): use http://HOST:PORT or https://HOST:PORT"
            )),
            ClientError::Connect(detail) => CliError::Unreachable {
                relay,
                detail: detail.clone(),
            },
            ClientError::UntrustedCertificate(detail) => CliError::Unreachable {
                relay,
                detail: format!("its certificate is not trusted: {detail}"),
            },
            ClientError::Status { code, message }
                if matches!(code, Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled) =>
            {
                CliError::Unreachable {
                    relay,
                    detail: format!("{}: {message}", code.description()),
                }
            }
            ClientError::Status { code, message } => CliError::Refused {
                relay,
                detail: format!("{}: {message}", code.description()),
            },
            _ => CliError::Refused {
                relay,
                detail: e.to_string(),
            },
        }
    }

    /// Through OHTTP, the failures of the way there rather than of the relay: the OHTTP
    /// relay or the gateway unreachable, or refusing to carry the call. `None` for the
    /// relay's own answers, which come through unchanged.
    fn through_ohttp(&self, ohttp_relay: &str, e: &ClientError) -> Option<CliError> {
        let unreachable = |detail: String| CliError::OhttpUnreachable {
            gateway: self.relay.clone(),
            ohttp_relay: ohttp_relay.to_owned(),
            detail,
        };
        match e {
            ClientError::Endpoint { reason, .. } => Some(CliError::Input(format!(
                "--relay {} is not a gateway address ({reason}): with --ohttp-relay, --relay is the \
                 relay's OHTTP gateway, http://HOST:PORT or https://HOST:PORT",
                self.relay
            ))),
            ClientError::Connect(detail) => Some(unreachable(detail.clone())),
            ClientError::UntrustedCertificate(detail) => {
                Some(unreachable(format!("a certificate is not trusted: {detail}")))
            }
            // device-link's own statuses for the way there all start with "OHTTP" (or
            // name the OHTTP relay); the relay's come through as they are.
            ClientError::Status { code, message } if is_ohttp_message(message) => match code {
                Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled => {
                    Some(unreachable(message.clone()))
                }
                Code::FailedPrecondition => Some(CliError::OhttpRefused {
                    gateway: self.relay.clone(),
                    ohttp_relay: ohttp_relay.to_owned(),
                    detail: message.clone(),
                    key_rejected: message.contains("no longer accepts"),
                }),
                _ => None,
            },
            _ => None,
        }
    }

    /// A failure to fetch the gateway's key configuration (a direct request to `--relay`).
    pub fn ohttp_key_fetch(&self, e: ClientError) -> CliError {
        let keys = |detail: &str, unreachable: bool| CliError::OhttpKeys {
            gateway: self.relay.clone(),
            // device-link names its one HTTP client after the OHTTP relay; this request
            // went to the gateway.
            detail: detail
                .trim_start_matches("cannot reach the OHTTP relay: ")
                .to_owned(),
            unreachable,
        };
        match &e {
            ClientError::Connect(detail) => keys(detail, true),
            ClientError::UntrustedCertificate(detail) => {
                keys(&format!("its certificate is not trusted: {detail}"), true)
            }
            ClientError::Status { code, message } => keys(
                message,
                matches!(code, Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled),
            ),
            _ => self.relay(e),
        }
    }

    /// A device state failure.
    pub fn state(&self, e: StateError) -> CliError {
        match e {
            StateError::WrongKey => CliError::State {
                dir: self.dir.clone(),
                detail: "the state key does not open it (another key file, or the files were altered)".into(),
            },
            other => self.state_detail(other.to_string()),
        }
    }

    fn state_detail(&self, detail: String) -> CliError {
        CliError::State {
            dir: self.dir.clone(),
            detail,
        }
    }

    fn config(&self, e: ConfigError) -> CliError {
        match e {
            ConfigError::TooLong { field, len, max } => CliError::Input(format!(
                "the {field} is {len} bytes long; at most {max} are allowed"
            )),
            ConfigError::Empty { field } => CliError::Input(format!("the {field} must not be empty")),
            other => self.state_detail(other.to_string()),
        }
    }

    /// A linking failure.
    pub fn link(&self, e: LinkError) -> CliError {
        match e {
            LinkError::Payload(p) => {
                CliError::Input(format!("{p}: copy the whole code `tidings link show` prints"))
            }
            LinkError::WeakKey | LinkError::Malformed => {
                CliError::Input(format!("{e}: copy the whole code `tidings link show` prints"))
            }
            LinkError::Declined => CliError::LinkDeclined,
            LinkError::Timeout(d) => CliError::LinkTimeout(d),
            LinkError::Mismatch | LinkError::Root(_) => CliError::LinkFailed(e.to_string()),
            LinkError::Client(c) => self.relay(c),
        }
    }
}

/// Whether a status message is device-link's about the OHTTP way there.
fn is_ohttp_message(message: &str) -> bool {
    message.starts_with("OHTTP") || message.starts_with("cannot reach the OHTTP relay")
}

/// A message that could not be sealed.
pub fn sealed(e: SealedMessageError) -> CliError {
    match e {
        SealedMessageError::BadRecipient => CliError::NoSuchAccount,
        SealedMessageError::TooLarge { len, max } => CliError::Input(format!(
            "the message is {len} bytes long; a sealed message carries at most {max}"
        )),
        other => CliError::Internal(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_class_has_its_own_code() {
        let classes = [
            ExitClass::Failure,
            ExitClass::Usage,
            ExitClass::BadInput,
            ExitClass::Unreachable,
            ExitClass::Refused,
            ExitClass::State,
            ExitClass::Link,
            ExitClass::Interrupted,
        ];
        let mut codes: Vec<u8> = classes.iter().map(|c| c.code()).collect();
        codes.sort_unstable();
        codes.dedup();
        assert_eq!(codes.len(), classes.len());
        assert!(!codes.contains(&0));
    }

    #[test]
    fn a_phrase_error_names_the_position_and_no_word() {
        let e = CliError::Phrase(PhraseError::UnknownWord {
            position: 5,
            suggestions: vec!["abandon".into(), "ability".into()],
        });
        let text = e.to_string();
        assert!(text.contains("word 5"), "{text}");
        assert!(!text.contains("abandon") && !text.contains("ability"), "{text}");
        assert!(!format!("{e:?}").contains("abandon"));
        assert_eq!(e.class(), ExitClass::BadInput);
    }

    #[test]
    fn connection_failures_are_unreachable_and_answers_are_refusals() {
        let at = Where {
            relay: "http://127.0.0.1:1".into(),
            dir: PathBuf::from("/tmp/x"),
            ohttp_relay: None,
        };
        let down = at.relay(ClientError::Connect("connection refused".into()));
        assert_eq!(down.class(), ExitClass::Unreachable);
        let busy = at.relay(ClientError::Status {
            code: Code::Unavailable,
            message: "draining".into(),
        });
        assert_eq!(busy.class(), ExitClass::Unreachable);
        let refused = at.relay(ClientError::Status {
            code: Code::ResourceExhausted,
            message: "slow down".into(),
        });
        assert_eq!(refused.class(), ExitClass::Refused);
        let bad = at.relay(ClientError::Endpoint {
            endpoint: "::".into(),
            reason: "no host".into(),
        });
        assert_eq!(bad.class(), ExitClass::BadInput);
    }

    #[test]
    fn through_ohttp_the_way_there_is_told_apart_from_the_relay() {
        let at = Where {
            relay: "http://127.0.0.1:7402".into(),
            dir: PathBuf::from("/tmp/x"),
            ohttp_relay: Some("http://127.0.0.2:3000/".into()),
        };
        let status = |code, message: &str| ClientError::Status {
            code,
            message: message.into(),
        };
        let down = at.relay(status(Code::Unavailable, "cannot reach the OHTTP relay: refused"));
        assert!(matches!(down, CliError::OhttpUnreachable { .. }), "{down:?}");
        assert_eq!(down.class(), ExitClass::Unreachable);
        let stale = at.relay(status(
            Code::FailedPrecondition,
            "OHTTP: the gateway no longer accepts this client's key configuration (key id 3)",
        ));
        assert!(
            matches!(
                stale,
                CliError::OhttpRefused {
                    key_rejected: true,
                    ..
                }
            ),
            "{stale:?}"
        );
        assert_eq!(stale.class(), ExitClass::Refused);
        assert!(stale.to_string().contains("run the command again"), "{stale}");
        let lost = at.relay(status(
            Code::FailedPrecondition,
            "OHTTP: the OHTTP relay or gateway answered HTTP 404 Not Found",
        ));
        assert!(lost.to_string().contains("check --ohttp-relay"), "{lost}");
        // The relay's own refusal is the relay's.
        let refused = at.relay(status(Code::InvalidArgument, "sealed.web_push.p256dh: bad"));
        assert!(matches!(refused, CliError::Refused { .. }), "{refused:?}");

        let off = at.ohttp_key_fetch(status(
            Code::FailedPrecondition,
            "OHTTP: the gateway's key configuration answered HTTP 404 Not Found",
        ));
        assert_eq!(off.class(), ExitClass::Refused);
        assert!(off.to_string().contains("OHTTP is not enabled"), "{off}");
        let closed = at.ohttp_key_fetch(ClientError::Connect(
            "cannot reach the OHTTP relay: connection refused".into(),
        ));
        assert_eq!(closed.class(), ExitClass::Unreachable);
        let text = closed.to_string();
        assert!(text.contains("(connection refused)"), "{text}");
        assert!(!text.contains("cannot reach the OHTTP relay"), "{text}");
    }

    #[test]
    fn messages_are_one_line() {
        let at = Where {
            relay: "http://127.0.0.1:7400".into(),
            dir: PathBuf::from("/tmp/state"),
            ohttp_relay: None,
        };
        for e in [
            at.state(StateError::WrongKey),
            CliError::NoAccount { dir: at.dir.clone() },
            CliError::LinkTimeout(Duration::from_secs(60)),
            CliError::AccountId,
        ] {
            assert!(!e.to_string().contains('\n'), "{e}");
        }
    }
}
