//! Reading a recovery phrase: at a hidden prompt on the terminal (never echoed, never in
//! argv or shell history), or as one line on stdin when stdin is not a terminal (scripts,
//! tests).
//!
//! At the terminal a mistyped word is asked for again by its position, with the closest
//! valid words as suggestions, written to the terminal itself (`/dev/tty`) and not to
//! stderr, which may be a log. From stdin an error names the position only.

use std::io::{self, BufRead, IsTerminal, Write};

use tidings_device_link::identity::{Identity, PhraseError};
use zeroize::Zeroizing;

use crate::error::CliError;

/// How many times a terminal user may correct the phrase before the command gives up.
const MAX_TRIES: usize = 5;

/// Reads and checks a phrase; returns it normalised (lower case, single spaces).
pub fn read() -> Result<Zeroizing<String>, CliError> {
    if io::stdin().is_terminal() {
        interactive()
    } else {
        from_stdin()
    }
}

fn from_stdin() -> Result<Zeroizing<String>, CliError> {
    let mut line = Zeroizing::new(String::new());
    io::stdin()
        .lock()
        .read_line(&mut line)
        .map_err(CliError::io("cannot read the recovery phrase from stdin"))?;
    checked(words_of(&line))
}

fn interactive() -> Result<Zeroizing<String>, CliError> {
    let mut words = ask_words("Recovery phrase (12 or 24 words; what you type is not shown): ")?;
    let mut last = None;
    for _ in 0..MAX_TRIES {
        let phrase = join(&words);
        match Identity::restore(&phrase) {
            Ok(_) => return Ok(phrase),
            Err(PhraseError::UnknownWord {
                position,
                suggestions,
            }) => {
                let close = if suggestions.is_empty() {
                    String::new()
                } else {
                    format!(" Close words: {}.", suggestions.join(", "))
                };
                tell(&format!("Word {position} is not a recovery phrase word.{close}"));
                let again = ask_words(&format!("Word {position} (not shown): "))?;
                if let (Some(slot), Some(word)) = (words.get_mut(position - 1), again.into_iter().next()) {
                    *slot = word;
                }
                last = Some(PhraseError::UnknownWord {
                    position,
                    suggestions: Vec::new(),
                });
            }
            Err(e) => {
                tell(&format!("{}.", CliError::Phrase(e.clone())));
                words = ask_words("Recovery phrase again (not shown): ")?;
                last = Some(e);
            }
        }
    }
    Err(CliError::Phrase(last.unwrap_or(PhraseError::Checksum)))
}

/// Checks `words` as a phrase.
fn checked(words: Vec<Zeroizing<String>>) -> Result<Zeroizing<String>, CliError> {
    let phrase = join(&words);
    Identity::restore(&phrase).map_err(CliError::Phrase)?;
    Ok(phrase)
}

fn ask_words(prompt: &str) -> Result<Vec<Zeroizing<String>>, CliError> {
    let typed = Zeroizing::new(
        rpassword::prompt_password(prompt).map_err(CliError::io("cannot read the recovery phrase"))?,
    );
    Ok(words_of(&typed))
}

fn words_of(text: &str) -> Vec<Zeroizing<String>> {
    text.split_whitespace()
        .map(|w| Zeroizing::new(w.to_lowercase()))
        .collect()
}

fn join(words: &[Zeroizing<String>]) -> Zeroizing<String> {
    let mut phrase = Zeroizing::new(String::with_capacity(words.len() * 9));
    for (i, word) in words.iter().enumerate() {
        if i > 0 {
            phrase.push(' ');
        }
        phrase.push_str(word);
    }
    phrase
}

/// Writes a line to the terminal itself; dropped when there is none to write to.
fn tell(line: &str) {
    if let Ok(mut tty) = std::fs::OpenOptions::new().write(true).open("/dev/tty") {
        let _ = writeln!(tty, "{line}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ABANDON: &str =
        "abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon about";

    #[test]
    fn a_phrase_is_normalised() {
        let messy = format!("  {}\n", ABANDON.to_uppercase().replace(' ', " \t "));
        assert_eq!(checked(words_of(&messy)).unwrap().as_str(), ABANDON);
    }

    #[test]
    fn a_bad_word_is_named_by_position() {
        let typo = ABANDON.replacen("abandon", "abandom", 1);
        match checked(words_of(&typo)) {
            Err(CliError::Phrase(PhraseError::UnknownWord { position: 1, .. })) => {}
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            checked(words_of("abandon about")),
            Err(CliError::Phrase(PhraseError::WordCount { found: 2 }))
        ));
    }
}
