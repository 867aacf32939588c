//! Yes/no questions: `--yes` answers them, otherwise one line is read from stdin (the
//! terminal, or a script's pipe; end of input is "no").

use std::io::{self, BufRead};

use crate::error::CliError;

/// Asks `question` on stderr; `true` for "y" or "yes". `yes` answers without asking.
pub fn confirm(question: &str, yes: bool) -> Result<bool, CliError> {
    if yes {
        return Ok(true);
    }
    eprint!("{question} [y/N] ");
    let mut line = String::new();
    io::stdin()
        .lock()
        .read_line(&mut line)
        .map_err(CliError::io("cannot read the answer from stdin"))?;
    Ok(is_yes(&line))
}

/// [`confirm`] off the async runtime's thread, for questions asked while relay calls are
/// in flight.
pub async fn confirm_async(question: String, yes: bool) -> Result<bool, CliError> {
    tokio::task::spawn_blocking(move || confirm(&question, yes))
        .await
        .map_err(|e| CliError::Internal(format!("the prompt failed: {e}")))?
}

fn is_yes(answer: &str) -> bool {
    matches!(answer.trim().to_ascii_lowercase().as_str(), "y" | "yes")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_yes_is_yes() {
        for yes in ["y", "Y\n", " yes ", "YES"] {
            assert!(is_yes(yes), "{yes:?}");
        }
        for no in ["", "\n", "n", "no", "yep", "ja"] {
            assert!(!is_yes(no), "{no:?}");
        }
        assert!(confirm("never asked", true).unwrap());
    }
}
