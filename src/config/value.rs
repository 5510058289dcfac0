//! Durations and sizes as a file writes them: the text forms ([`parse_duration`],
//! [`parse_size`]), the serde readers that also take bare TOML integers (`RawDuration`,
//! `RawSize`, and `Count` for non-negative integers that must fit a type), and the bounds.
//!
//! Invariants: nothing read here exceeds [`MAX_DURATION`] (the runtime adds durations to
//! `Instant`s, which panics on overflow), no size overflows a `u64`, and every refusal is a
//! sentence for an operator rather than serde's wording. Whether a value is suspicious (a timeout
//! of days, milliseconds written as seconds) is decided here too; the builder words the warning.

use std::fmt;
use std::time::Duration;

use serde::de::{self, Deserializer, Unexpected, Visitor};
use serde::Deserialize;

/// Longest accepted duration. The runtime adds durations to `Instant`s, which panics on
/// overflow, so the bound is enforced here rather than trusted.
pub const MAX_DURATION: Duration = Duration::from_secs(365 * 24 * 3600);
/// Durations above this are accepted but draw a warning: a timeout of days is usually a unit
/// mistake.
pub(super) const SUSPICIOUS_DURATION: Duration = Duration::from_secs(24 * 3600);
/// Bare integers from this many seconds up draw the same warning even under a day: the usual
/// mistake is milliseconds written as bare seconds (`idle_timeout = 60000`, 16h 40m), which the
/// one-day rule alone would miss. Someone who means hours can write `"3h"` and silence it.
pub(super) const SUSPICIOUS_BARE_SECONDS: u64 = 10_000;

/// Parses a duration written as a whole number with a unit: `ms`, `s`, `m` or `h` (`"1500ms"`,
/// `"10s"`, `"2m"`, `"1h"`).
///
/// A bare number in a string (`"10"`) is refused: in a string the unit is what says the author
/// thought about it, while a bare TOML integer (`10`, handled by the deserializer) means seconds
/// as in APISIX. Fractions (`"1.5s"`) are refused too, with a hint to use a smaller unit: that
/// keeps parsing exact and the accepted forms few. Durations above [`MAX_DURATION`] are refused.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let digits = s.bytes().take_while(u8::is_ascii_digit).count();
    let (number, unit) = s.split_at(digits);
    if number.is_empty() {
        return Err(if s.starts_with('-') {
            format!("{s:?} is negative; durations cannot be")
        } else {
            format!("expected a whole number with a unit (ms, s, m, h), found {s:?}")
        });
    }
    if unit.starts_with('.') {
        return Err(format!(
            "{s:?} has a fraction; use a smaller unit instead, e.g. \"1500ms\" for 1.5s"
        ));
    }
    let too_long = || format!("{s:?} is longer than the longest accepted duration (365 days)");
    let n: u64 = number.parse().map_err(|_| too_long())?;
    let duration = match unit {
        "ms" => Duration::from_millis(n),
        "s" => Duration::from_secs(n),
        "m" => Duration::from_secs(n.checked_mul(60).ok_or_else(too_long)?),
        "h" => Duration::from_secs(n.checked_mul(3600).ok_or_else(too_long)?),
        "" => {
            return Err(format!(
                "{s:?} has no unit; write \"{n}s\" (or the bare integer {n} for seconds)"
            ))
        }
        _ => {
            return Err(format!(
                "{s:?} has an unknown unit {unit:?}; expected ms, s, m or h"
            ))
        }
    };
    if duration > MAX_DURATION {
        return Err(too_long());
    }
    Ok(duration)
}

/// Parses a size in bytes: a whole number with an optional `k`, `m` or `g` suffix (powers of
/// 1024, either case), e.g. `"16k"`, `"1m"`, `"0"`. Fractions and other suffixes are refused.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let digits = s.bytes().take_while(u8::is_ascii_digit).count();
    let (number, suffix) = s.split_at(digits);
    if number.is_empty() {
        return Err(if s.starts_with('-') {
            format!("{s:?} is negative; sizes cannot be")
        } else {
            format!("expected a whole number with an optional k, m or g suffix, found {s:?}")
        });
    }
    let too_large = || format!("{s:?} is too large");
    let n: u64 = number.parse().map_err(|_| too_large())?;
    let shift = match suffix {
        "" => 0,
        "k" | "K" => 10,
        "m" | "M" => 20,
        "g" | "G" => 30,
        _ => {
            return Err(format!(
                "{s:?} has an unknown suffix {suffix:?}; expected k, m or g (powers of 1024)"
            ))
        }
    };
    n.checked_mul(1 << shift).ok_or_else(too_large)
}

/// A non-negative integer that fits `T`, with errors phrased for people rather than for serde.
pub(super) struct Count<T>(pub(super) T);

impl<'de, T: TryFrom<u64>> Deserialize<'de> for Count<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(CountVisitor(std::marker::PhantomData))
    }
}

struct CountVisitor<T>(std::marker::PhantomData<T>);

impl<T: TryFrom<u64>> Visitor<'_> for CountVisitor<T> {
    type Value = Count<T>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a non-negative integer")
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
        T::try_from(v)
            .map(Count)
            .map_err(|_| E::custom(format!("{v} is too large for this setting")))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
        match u64::try_from(v) {
            Ok(v) => self.visit_u64(v),
            Err(_) => Err(E::custom(format!(
                "expected a non-negative integer, found {v}"
            ))),
        }
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Err(E::custom(format!(
            "expected a non-negative integer, found {v:?}"
        )))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
        Err(E::custom(format!(
            "expected a non-negative integer, found {v}"
        )))
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Self::Value, E> {
        Err(E::custom(format!(
            "expected a non-negative integer, found {v}"
        )))
    }
}

/// A duration as read, kept with its text so a warning can quote it back.
pub(super) struct RawDuration {
    pub(super) value: Duration,
    /// The text as written: the integer, or the string with its quotes.
    pub(super) as_read: String,
    /// The number and unit, for suggesting a reading in milliseconds.
    pub(super) number: u64,
    pub(super) in_seconds: bool,
    /// Written as a TOML integer rather than a string with a unit.
    pub(super) bare: bool,
    /// The word "auto" (learn the value), accepted only where a setting says so.
    pub(super) auto: bool,
}

impl<'de> Deserialize<'de> for RawDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(DurationVisitor)
    }
}

struct DurationVisitor;

impl Visitor<'_> for DurationVisitor {
    type Value = RawDuration;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a duration such as \"10s\", \"1500ms\", \"2m\", \"1h\", or whole seconds")
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
        let value = Duration::from_secs(v);
        if value > MAX_DURATION {
            return Err(E::custom(format!(
                "{v} seconds is longer than the longest accepted duration (365 days)"
            )));
        }
        Ok(RawDuration {
            value,
            as_read: v.to_string(),
            number: v,
            in_seconds: true,
            bare: true,
            auto: false,
        })
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
        match u64::try_from(v) {
            Ok(v) => self.visit_u64(v),
            Err(_) => Err(E::custom(format!("{v} is negative; durations cannot be"))),
        }
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
        Err(E::custom(format!(
            "{v} has a fraction; write a string with a smaller unit, e.g. \"1500ms\" for 1.5s"
        )))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        if v == "auto" {
            // Only keepalive_pool.idle_timeout accepts it; everywhere else it is refused later,
            // with the key's line.
            return Ok(RawDuration {
                value: Duration::ZERO,
                as_read: "\"auto\"".into(),
                number: 0,
                in_seconds: false,
                bare: false,
                auto: true,
            });
        }
        let value = parse_duration(v).map_err(E::custom)?;
        // parse_duration accepted it, so it starts with a run of digits that fits in u64.
        let digits = v.bytes().take_while(u8::is_ascii_digit).count();
        let number = v[..digits].parse().unwrap_or(0);
        Ok(RawDuration {
            value,
            as_read: format!("{v:?}"),
            number,
            in_seconds: v.ends_with('s') && !v.ends_with("ms"),
            bare: false,
            auto: false,
        })
    }
}

/// A size in bytes: a TOML integer or a string for [`parse_size`].
pub(super) struct RawSize(pub(super) u64);

impl<'de> Deserialize<'de> for RawSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(SizeVisitor)
    }
}

struct SizeVisitor;

impl Visitor<'_> for SizeVisitor {
    type Value = RawSize;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a size such as 1024, \"16k\" or \"1m\"")
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
        Ok(RawSize(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
        u64::try_from(v)
            .map(RawSize)
            .map_err(|_| E::custom(format!("{v} is negative; sizes cannot be")))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
        Err(E::invalid_type(Unexpected::Float(v), &self))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        parse_size(v).map(RawSize).map_err(E::custom)
    }
}

/// A long duration in days, hours and minutes, so a warning shows what was actually asked for.
pub(super) fn spelled_out(d: Duration) -> String {
    let minutes = d.as_secs() / 60;
    let (days, hours, minutes) = (minutes / 1440, minutes / 60 % 24, minutes % 60);
    if days > 0 {
        format!("{days}d {hours}h {minutes}m")
    } else {
        format!("{hours}h {minutes}m")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        let ok: &[(&str, Duration)] = &[
            ("0s", Duration::ZERO),
            ("1500ms", Duration::from_millis(1500)),
            ("10s", Duration::from_secs(10)),
            ("2m", Duration::from_secs(120)),
            ("1h", Duration::from_secs(3600)),
            ("8760h", MAX_DURATION),
        ];
        for (text, want) in ok {
            assert_eq!(parse_duration(text).as_ref(), Ok(want), "{text}");
        }
        let bad: &[(&str, &str)] = &[
            ("10", "no unit"),
            ("-1s", "negative"),
            ("1.5s", "fraction"),
            ("10x", "unknown unit"),
            ("10S", "unknown unit"),
            ("10 s", "unknown unit"),
            ("", "expected a whole number"),
            ("s", "expected a whole number"),
            (" 10s", "expected a whole number"),
            ("99999999999999999999s", "longest"),
            ("18446744073709551615h", "longest"),
            ("8761h", "longest"),
        ];
        for (text, want) in bad {
            let e = parse_duration(text).unwrap_err();
            assert!(e.contains(want), "{text:?}: {e}");
        }
    }

    #[test]
    fn sizes() {
        let ok: &[(&str, u64)] = &[
            ("0", 0),
            ("1024", 1024),
            ("16k", 16 * 1024),
            ("16K", 16 * 1024),
            ("1m", 1 << 20),
            ("2g", 2 << 30),
        ];
        for (text, want) in ok {
            assert_eq!(parse_size(text), Ok(*want), "{text}");
        }
        let bad: &[(&str, &str)] = &[
            ("", "expected a whole number"),
            ("k", "expected a whole number"),
            ("-1", "negative"),
            ("1.5k", "unknown suffix"),
            ("16kb", "unknown suffix"),
            ("10x", "unknown suffix"),
            ("99999999999999999999", "too large"),
            ("17179869184g", "too large"),
        ];
        for (text, want) in bad {
            let e = parse_size(text).unwrap_err();
            assert!(e.contains(want), "{text:?}: {e}");
        }
    }
}
