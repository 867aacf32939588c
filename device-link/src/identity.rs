//! The account: its recovery phrase and the keys derived from it (DESIGN.md "Identity").
//!
//! ```text
//! root = BIP-39 seed of the phrase, empty passphrase (64 bytes)
//! key  = HKDF-SHA256(ikm = root, salt = "tidings/v1", info = LABEL, L = 32)
//! ```

use std::fmt;

use bip39::{Language, Mnemonic};
use ed25519_dalek::SigningKey;
use hkdf::Hkdf;
use sha2::Sha256;
use x25519_dalek::StaticSecret;
use zeroize::Zeroizing;

/// HKDF salt of every account key.
pub const KDF_SALT: &[u8] = b"tidings/v1";
/// HKDF info of the Ed25519 seed of the account signing key.
pub const LABEL_IDENTITY: &[u8] = b"identity/ed25519";
/// HKDF info of the symmetric key of config messages.
pub const LABEL_CONFIG: &[u8] = b"config/xchacha20";
/// Prefix of the displayed account id.
pub const ACCOUNT_ID_PREFIX: &str = "01";
/// Length of a displayed account id: the prefix and 64 hex digits.
pub const ACCOUNT_ID_LEN: usize = 66;
/// Number of words of a newly created phrase (128-bit entropy).
pub const NEW_PHRASE_WORDS: usize = 12;

/// How many close words a mistyped word's error suggests at most.
const MAX_SUGGESTIONS: usize = 3;

/// Why a recovery phrase was not accepted. Neither `Display` nor `Debug` shows a word of
/// the phrase: a mistyped word is usually one letter away from the real one, and the
/// suggestions are likely the real one. The app renders `suggestions` itself.
#[derive(Clone, PartialEq, Eq, thiserror::Error)]
pub enum PhraseError {
    /// Not 12 or 24 words.
    #[error("a recovery phrase has 12 or 24 words, this one has {found}")]
    WordCount {
        /// How many words were given.
        found: usize,
    },
    /// A word is not in the BIP-39 English word list.
    #[error("word {position} is not a recovery phrase word")]
    UnknownWord {
        /// 1-based position of the word in the phrase.
        position: usize,
        /// Up to three valid words closest to it, closest first: for the app to offer,
        /// never to log.
        suggestions: Vec<String>,
    },
    /// Every word is valid but the phrase's checksum does not match: a word is wrong or
    /// the words are out of order.
    #[error("the recovery phrase's checksum does not match: a word is wrong or out of order")]
    Checksum,
    /// Raw entropy of a length that no 12- or 24-word phrase has.
    #[error("a root secret is 16 or 32 bytes, this one has {found}")]
    EntropyLength {
        /// How many bytes were given.
        found: usize,
    },
}

impl std::fmt::Debug for PhraseError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PhraseError::UnknownWord {
                position,
                suggestions,
            } => f
                .debug_struct("UnknownWord")
                .field("position", position)
                .field("suggestions", &suggestions.len())
                .finish(),
            PhraseError::WordCount { found } => f.debug_struct("WordCount").field("found", found).finish(),
            PhraseError::Checksum => f.write_str("Checksum"),
            PhraseError::EntropyLength { found } => {
                f.debug_struct("EntropyLength").field("found", found).finish()
            }
        }
    }
}

/// Why a displayed account id was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AccountIdError {
    /// Not "01" followed by 64 hex digits.
    #[error("an account id is \"01\" followed by 64 hex digits")]
    Format,
}

/// An account: the recovery phrase and the keys derived from it.
///
/// The phrase, its entropy and the config key are wiped from memory when dropped, and
/// `Debug` shows only a truncated account id.
#[derive(Clone)]
pub struct Identity {
    phrase: Zeroizing<String>,
    entropy: Zeroizing<Vec<u8>>,
    signing_key: SigningKey,
    config_key: Zeroizing<[u8; 32]>,
}

impl Identity {
    /// Creates a new account: 128 bits from the operating system's CSPRNG, a 12-word phrase.
    pub fn create() -> Self {
        let entropy = Zeroizing::new(tidings_proto::random_bytes::<16>());
        // 16 bytes is a valid BIP-39 entropy length, so this cannot fail.
        Self::from_entropy(entropy.as_slice()).expect("16 bytes of entropy make a 12-word phrase")
    }

    /// Restores an account from its 12- or 24-word phrase. Case and extra whitespace
    /// are ignored.
    pub fn restore(phrase: &str) -> Result<Self, PhraseError> {
        let normalized = Zeroizing::new(normalize_phrase(phrase));
        let words: Vec<&str> = normalized.split(' ').filter(|w| !w.is_empty()).collect();
        if words.len() != 12 && words.len() != 24 {
            return Err(PhraseError::WordCount { found: words.len() });
        }
        for (i, word) in words.iter().enumerate() {
            if Language::English.find_word(word).is_none() {
                return Err(PhraseError::UnknownWord {
                    position: i + 1,
                    suggestions: closest_words(word),
                });
            }
        }
        let mnemonic =
            Mnemonic::parse_in_normalized(Language::English, &normalized).map_err(|e| match e {
                bip39::Error::BadWordCount(found) => PhraseError::WordCount { found },
                // Unknown words were ruled out above; anything else means the checksum.
                _ => PhraseError::Checksum,
            })?;
        Ok(Self::from_mnemonic(&mnemonic))
    }

    /// Rebuilds an account from the phrase's entropy (16 bytes for 12 words, 32 for 24):
    /// the root secret that device state keeps and QR linking transfers.
    pub fn from_entropy(entropy: &[u8]) -> Result<Self, PhraseError> {
        if entropy.len() != 16 && entropy.len() != 32 {
            return Err(PhraseError::EntropyLength { found: entropy.len() });
        }
        let mnemonic = Mnemonic::from_entropy_in(Language::English, entropy)
            .map_err(|_| PhraseError::EntropyLength { found: entropy.len() })?;
        Ok(Self::from_mnemonic(&mnemonic))
    }

    fn from_mnemonic(mnemonic: &Mnemonic) -> Self {
        let root = Zeroizing::new(mnemonic.to_seed_normalized(""));
        let seed = Zeroizing::new(derive_key(&root, LABEL_IDENTITY));
        let (entropy, len) = mnemonic.to_entropy_array();
        let entropy = Zeroizing::new(entropy);
        Self {
            phrase: Zeroizing::new(mnemonic.words().collect::<Vec<_>>().join(" ")),
            entropy: Zeroizing::new(entropy[..len].to_vec()),
            signing_key: SigningKey::from_bytes(&seed),
            config_key: Zeroizing::new(derive_key(&root, LABEL_CONFIG)),
        }
    }

    /// The recovery phrase: lower-case words separated by single spaces.
    pub fn phrase(&self) -> &str {
        &self.phrase
    }

    /// The phrase's entropy (16 or 32 bytes): the root secret, from which
    /// [`Identity::from_entropy`] rebuilds everything.
    pub fn entropy(&self) -> &[u8] {
        &self.entropy
    }

    /// The account signing key.
    pub fn signing_key(&self) -> &SigningKey {
        &self.signing_key
    }

    /// The account key: the Ed25519 public key the relay knows the account by.
    pub fn account(&self) -> [u8; 32] {
        self.signing_key.verifying_key().to_bytes()
    }

    /// The displayed account id: `"01"` and 64 lower-case hex digits.
    pub fn account_id(&self) -> String {
        account_id(&self.account())
    }

    /// The symmetric key of config messages.
    pub fn config_key(&self) -> &[u8; 32] {
        &self.config_key
    }

    /// Signs `message` with the account key.
    pub fn sign(&self, message: &[u8]) -> [u8; 64] {
        tidings_proto::sign::sign(&self.signing_key, message)
    }

    /// The X25519 secret that opens sealed messages to this account
    /// (DESIGN.md "Sealed messages between accounts"): the signing key's scalar, the first
    /// half of SHA-512(seed), which X25519 clamps as Ed25519 does. Its public key is
    /// therefore the Montgomery form of the account key, so a sender needs nothing but the
    /// account id. The secret is wiped when dropped.
    pub fn message_secret(&self) -> StaticSecret {
        let scalar = Zeroizing::new(self.signing_key.to_scalar_bytes());
        StaticSecret::from(*scalar)
    }
}

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // A truncated id tells identities apart in test output without naming the account.
        let id = self.account_id();
        f.debug_struct("Identity")
            .field("account", &format_args!("{}…", &id[..10]))
            .finish_non_exhaustive()
    }
}

/// `HKDF-SHA256(ikm = root, salt = "tidings/v1", info = label, L = 32)`.
pub fn derive_key(root: &[u8; 64], label: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    // 32 bytes is far below HKDF-SHA256's 255 × 32 byte output limit.
    Hkdf::<Sha256>::new(Some(KDF_SALT), root)
        .expand(label, &mut out)
        .expect("HKDF output length within limit");
    out
}

/// The displayed id of an account key: `"01"` and 64 lower-case hex digits.
pub fn account_id(account: &[u8; 32]) -> String {
    format!("{ACCOUNT_ID_PREFIX}{}", hex::encode(account))
}

/// Parses a displayed account id (hex digits of either case) back to the account key.
pub fn parse_account_id(id: &str) -> Result<[u8; 32], AccountIdError> {
    let id = id.trim();
    let hex_part = id
        .strip_prefix(ACCOUNT_ID_PREFIX)
        .filter(|_| id.len() == ACCOUNT_ID_LEN)
        .ok_or(AccountIdError::Format)?;
    let mut out = [0u8; 32];
    hex::decode_to_slice(hex_part, &mut out).map_err(|_| AccountIdError::Format)?;
    Ok(out)
}

/// Lower-cases and collapses whitespace, the form BIP-39 parsing expects.
fn normalize_phrase(phrase: &str) -> String {
    phrase
        .split_whitespace()
        .map(str::to_lowercase)
        .collect::<Vec<_>>()
        .join(" ")
}

/// The valid words nearest to `word` by edit distance (transpositions count as one),
/// ties in word-list (alphabetical) order, at most three: what a phrase screen offers
/// for a mistyped word.
pub fn closest_words(word: &str) -> Vec<String> {
    let mut ranked: Vec<(usize, &str)> = Language::English
        .word_list()
        .iter()
        .map(|w| (strsim::damerau_levenshtein(word, w), *w))
        .collect();
    // A stable sort keeps the word list's alphabetical order among equal distances.
    ranked.sort_by_key(|(d, _)| *d);
    ranked
        .into_iter()
        .take(MAX_SUGGESTIONS)
        .map(|(_, w)| w.to_owned())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const ABANDON: &str =
        "abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon about";

    #[test]
    fn create_makes_twelve_words_that_restore_to_the_same_account() {
        let id = Identity::create();
        assert_eq!(id.phrase().split(' ').count(), NEW_PHRASE_WORDS);
        assert_eq!(id.entropy().len(), 16);
        let again = Identity::restore(id.phrase()).unwrap();
        assert_eq!(again.account(), id.account());
        assert_eq!(again.config_key(), id.config_key());
        assert_ne!(Identity::create().account(), id.account());
    }

    #[test]
    fn case_and_spacing_are_ignored() {
        let messy = format!("  {}\t\n", ABANDON.to_uppercase().replace(' ', "   "));
        let a = Identity::restore(&messy).unwrap();
        let b = Identity::restore(ABANDON).unwrap();
        assert_eq!(a.account(), b.account());
        assert_eq!(a.phrase(), ABANDON);
    }

    #[test]
    fn a_mistyped_word_is_named_with_suggestions() {
        let typo = ABANDON.replacen("about", "abuot", 1);
        match Identity::restore(&typo) {
            Err(e @ PhraseError::UnknownWord { .. }) => {
                for shown in [e.to_string(), format!("{e:?}")] {
                    assert!(!shown.contains("abuot") && !shown.contains("about"), "{shown}");
                }
                let PhraseError::UnknownWord {
                    position,
                    suggestions,
                } = e
                else {
                    unreachable!()
                };
                assert_eq!(position, 12);
                assert_eq!(suggestions.first().map(String::as_str), Some("about"));
                assert!(suggestions.len() <= MAX_SUGGESTIONS);
            }
            other => panic!("expected UnknownWord, got {other:?}"),
        }
        let typo = ABANDON.replacen("abandon", "abandn", 1);
        let err = Identity::restore(&typo).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("word 1") && !msg.contains("aband"), "{msg}");
    }

    #[test]
    fn a_bad_checksum_says_so() {
        let wrong = ABANDON.replacen("about", "abandon", 1);
        assert_eq!(Identity::restore(&wrong).unwrap_err(), PhraseError::Checksum);
        assert!(PhraseError::Checksum.to_string().contains("checksum"));
    }

    #[test]
    fn a_wrong_word_count_says_so() {
        let eleven = ABANDON.rsplit_once(' ').unwrap().0;
        assert_eq!(
            Identity::restore(eleven).unwrap_err(),
            PhraseError::WordCount { found: 11 }
        );
        let fifteen = format!("{ABANDON} abandon abandon abandon");
        assert_eq!(
            Identity::restore(&fifteen).unwrap_err(),
            PhraseError::WordCount { found: 15 }
        );
        assert_eq!(
            Identity::restore("").unwrap_err(),
            PhraseError::WordCount { found: 0 }
        );
    }

    #[test]
    fn entropy_round_trips_for_both_lengths() {
        for len in [16usize, 32] {
            let entropy = vec![0x5au8; len];
            let id = Identity::from_entropy(&entropy).unwrap();
            assert_eq!(id.entropy(), entropy.as_slice());
            assert_eq!(id.phrase().split(' ').count(), len * 3 / 4);
            assert_eq!(Identity::restore(id.phrase()).unwrap().account(), id.account());
        }
        assert_eq!(
            Identity::from_entropy(&[0; 20]).unwrap_err(),
            PhraseError::EntropyLength { found: 20 }
        );
    }

    #[test]
    fn debug_shows_no_secret() {
        let id = Identity::restore(ABANDON).unwrap();
        let dbg = format!("{id:?}");
        assert!(!dbg.contains("abandon"));
        assert!(!dbg.contains(&hex::encode(id.config_key())));
        assert!(!dbg.contains(&id.account_id()));
        assert!(dbg.starts_with("Identity"));
    }

    #[test]
    fn account_ids_round_trip() {
        let id = Identity::restore(ABANDON).unwrap();
        let shown = id.account_id();
        assert_eq!(shown.len(), ACCOUNT_ID_LEN);
        assert!(shown.starts_with("01"));
        assert_eq!(parse_account_id(&shown.to_uppercase()), Ok(id.account()));
        assert_eq!(parse_account_id(&shown[2..]), Err(AccountIdError::Format));
        assert_eq!(
            parse_account_id(&format!("02{}", &shown[2..])),
            Err(AccountIdError::Format)
        );
    }

    proptest! {
        // Each case runs PBKDF2 twice, slow in debug builds.
        #![proptest_config(ProptestConfig::with_cases(32))]

        #[test]
        fn restore_never_panics(s in ".{0,300}") {
            let _ = Identity::restore(&s);
        }

        #[test]
        fn any_entropy_round_trips(entropy in any::<[u8; 16]>()) {
            let id = Identity::from_entropy(&entropy).unwrap();
            let again = Identity::restore(id.phrase()).unwrap();
            prop_assert_eq!(again.entropy(), &entropy[..]);
        }

        #[test]
        fn parse_account_id_never_panics(s in ".{0,80}") {
            let _ = parse_account_id(&s);
        }
    }
}
