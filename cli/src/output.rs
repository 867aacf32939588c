//! Results on stdout (text for people, or one JSON object per result with `--json`),
//! notes on stderr, and progress bars on stderr when it is a terminal.

use std::{
    io::{self, IsTerminal, Write},
    time::Duration,
};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::Value;
use tidings_device_link::account::{Progress, ProgressStage};

use crate::error::CliError;

/// How results are printed.
#[derive(Debug, Clone, Copy)]
pub struct Output {
    json: bool,
    bars: bool,
}

impl Output {
    /// JSON or text; progress bars only for text on a terminal.
    pub fn new(json: bool) -> Output {
        Output {
            json,
            bars: !json && io::stderr().is_terminal(),
        }
    }

    /// Whether results are JSON.
    pub fn is_json(&self) -> bool {
        self.json
    }

    /// Prints one result: `text` for people, `json` as one line for scripts. Flushed, so a
    /// script reading line by line sees it at once.
    pub fn result(&self, text: &str, json: Value) -> Result<(), CliError> {
        if self.json {
            self.line(&json.to_string())
        } else {
            self.line(text)
        }
    }

    /// Prints text for people; nothing with `--json`.
    pub fn text(&self, text: &str) -> Result<(), CliError> {
        if self.json { Ok(()) } else { self.line(text) }
    }

    fn line(&self, text: &str) -> Result<(), CliError> {
        let mut out = io::stdout().lock();
        writeln!(out, "{text}")
            .and_then(|()| out.flush())
            .map_err(CliError::io("cannot write to stdout"))
    }

    /// A note for the person at the terminal (a warning, what happens next), on stderr in
    /// both modes.
    pub fn note(&self, text: &str) {
        eprintln!("{text}");
    }

    /// A spinner saying what is going on, on stderr (hidden with `--json` or no terminal).
    pub fn spinner(&self, message: &str) -> ProgressBar {
        let bar = ProgressBar::with_draw_target(None, self.target());
        bar.set_style(
            ProgressStyle::with_template("{spinner} {msg} {elapsed}")
                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
        );
        bar.set_message(message.to_owned());
        bar.enable_steady_tick(Duration::from_millis(100));
        bar
    }

    /// A bar for a restore's progress (feed it with [`show_progress`]).
    pub fn restore_bar(&self) -> ProgressBar {
        let bar = ProgressBar::with_draw_target(None, self.target());
        bar.set_style(
            ProgressStyle::with_template("{spinner} {msg} [{bar:30}] {pos}/{len} messages, {elapsed}")
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
        );
        bar.set_message("restoring the account's config");
        bar.enable_steady_tick(Duration::from_millis(100));
        bar
    }

    fn target(&self) -> ProgressDrawTarget {
        if self.bars {
            ProgressDrawTarget::stderr()
        } else {
            ProgressDrawTarget::hidden()
        }
    }
}

/// Moves a restore bar to `p`.
pub fn show_progress(bar: &ProgressBar, p: Progress) {
    match p.stage {
        ProgressStage::Fetching => {
            bar.set_length(p.total.unwrap_or(p.messages).max(p.messages));
            bar.set_position(p.messages);
            bar.set_message(format!("fetching config ({} kB)", p.bytes.div_ceil(1024)));
        }
        ProgressStage::Merging => bar.set_message("merging"),
        ProgressStage::Done => {
            bar.set_length(p.messages);
            bar.set_position(p.messages);
            bar.set_message("restored");
        }
    }
}

/// `text` safe to print on a terminal: control characters (escape sequences, line breaks)
/// shown escaped, so a message or a name cannot rewrite the screen.
pub fn printable(text: &str) -> String {
    text.chars()
        .flat_map(|c| {
            let escaped: Vec<char> = if matches!(c, '\n' | '\r' | '\t') {
                c.escape_default().collect()
            } else if c.is_control() || is_layout_control(c) {
                c.escape_unicode().collect()
            } else {
                vec![c]
            };
            escaped
        })
        .collect()
}

/// Bidirectional overrides and isolates, which reorder what follows them on screen.
fn is_layout_control(c: char) -> bool {
    matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}' | '\u{2028}' | '\u{2029}')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_cannot_reach_the_terminal() {
        assert_eq!(printable("hi there"), "hi there");
        assert_eq!(printable("a\u{1b}[2Jb"), "a\\u{1b}[2Jb");
        assert_eq!(printable("one\ntwo"), "one\\ntwo");
        assert_eq!(printable("x\u{202E}y"), "x\\u{202e}y");
        assert_eq!(printable("Zoë 📱"), "Zoë 📱");
    }
}
