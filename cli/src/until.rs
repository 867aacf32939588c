//! `--until` for muting: a duration (`30m`, `8h`, `2d`, `1w`) or `forever`.

use std::time::Duration;

/// The latest mute end `forever` stands for: 9999-12-31T23:59:59Z, a date every app can show.
pub const FOREVER_MS: u64 = 253_402_300_799_000;

/// How long to mute.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Until {
    /// For this long from now.
    For(Duration),
    /// Until unmuted.
    Forever,
}

impl Until {
    /// The mute end in Unix ms, counted from `now_ms`.
    pub fn to_unix_ms(self, now_ms: u64) -> u64 {
        match self {
            Until::Forever => FOREVER_MS,
            Until::For(d) => {
                let ms = u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
                now_ms.saturating_add(ms).min(FOREVER_MS)
            }
        }
    }
}

/// Parses `--until`: digits and one unit (s, m, h, d, w), or `forever`.
pub fn parse(text: &str) -> Result<Until, String> {
    let text = text.trim();
    if text.eq_ignore_ascii_case("forever") {
        return Ok(Until::Forever);
    }
    let bad =
        || format!("{text:?} is not a duration: use a number and s, m, h, d or w (8h, 2d), or `forever`");
    let split = text.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
    let (number, unit) = text.split_at(split);
    let n: u64 = number.parse().map_err(|_| bad())?;
    let seconds_per = match unit.to_ascii_lowercase().as_str() {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        "w" => 7 * 86_400,
        _ => return Err(bad()),
    };
    if n == 0 {
        return Err(format!(
            "{text:?} is no time at all: to unmute, use `tidings contacts unmute`"
        ));
    }
    let seconds = n.checked_mul(seconds_per).ok_or_else(bad)?;
    Ok(Until::For(Duration::from_secs(seconds)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn units_and_forever() {
        assert_eq!(parse("30m"), Ok(Until::For(Duration::from_secs(1800))));
        assert_eq!(parse("8H"), Ok(Until::For(Duration::from_secs(8 * 3600))));
        assert_eq!(parse("1w"), Ok(Until::For(Duration::from_secs(604_800))));
        assert_eq!(parse(" forever "), Ok(Until::Forever));
        for bad in [
            "",
            "h",
            "8",
            "8x",
            "-1h",
            "1.5h",
            "0m",
            "8 h",
            "99999999999999999999s",
        ] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn mute_ends_are_capped() {
        assert_eq!(Until::Forever.to_unix_ms(5), FOREVER_MS);
        assert_eq!(Until::For(Duration::from_secs(2)).to_unix_ms(1000), 3000);
        assert_eq!(Until::For(Duration::MAX).to_unix_ms(1000), FOREVER_MS);
    }

    proptest! {
        #[test]
        fn parsing_never_panics(text in "\\PC{0,12}") {
            let _ = parse(&text);
        }

        #[test]
        fn a_written_duration_reads_back(n in 1u64..1_000_000, unit in prop::sample::select(vec![
            ("s", 1u64), ("m", 60), ("h", 3600), ("d", 86_400), ("w", 604_800),
        ])) {
            let parsed = parse(&format!("{n}{}", unit.0)).unwrap();
            prop_assert_eq!(parsed, Until::For(Duration::from_secs(n * unit.1)));
        }
    }
}
