//! Time: the clock (`now_ms`), the forms times and durations are printed in (RFC 3339 in
//! UTC for JSON, short forms for people), and the durations people type (`--since 7d`,
//! `--keep-since "2 weeks"`). Times are unix milliseconds everywhere in nix-ledger.

use crate::{Error, Result};

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Unix milliseconds as RFC 3339 UTC with millisecond precision.
pub fn rfc3339_ms(ms: i64) -> String {
    match jiff::Timestamp::from_millisecond(ms) {
        Ok(ts) => format!("{ts:.3}"),
        Err(_) => String::from("invalid-time"),
    }
}

/// A duration in milliseconds as people read it: `850ms`, `12.3s`, `4m05s`, `1h02m`.
pub fn human_duration_ms(ms: i64) -> String {
    if ms < 1000 {
        return format!("{ms}ms");
    }
    let secs = ms / 1000;
    if secs < 60 {
        return format!("{:.1}s", ms as f64 / 1000.0);
    }
    if secs < 3600 {
        return format!("{}m{:02}s", secs / 60, secs % 60);
    }
    format!("{}h{:02}m", secs / 3600, (secs % 3600) / 60)
}

/// Parses a duration as people type it: `7d`, `24h`, `90m`, `1mo`, `1y`, `2 weeks`,
/// `1 month` (jiff's friendly format), in milliseconds. Months and years are calendar
/// units, counted back from now in UTC: "1 month" is the length of the month just past.
pub fn parse_duration(input: &str) -> Result<i64> {
    let bad = || Error::BadDuration {
        input: crate::error::shorten(input),
    };
    let span: jiff::Span = input.trim().parse().map_err(|_| bad())?;
    if span.is_negative() {
        return Err(bad());
    }
    let now = jiff::Timestamp::now().to_zoned(jiff::tz::TimeZone::UTC);
    let ms = span
        .total((jiff::Unit::Millisecond, &now))
        .map_err(|_| bad())?;
    if !ms.is_finite() || ms < 0.0 {
        return Err(bad());
    }
    Ok(ms as i64)
}

/// `--since DURATION` as a start time: now minus the duration, or the beginning of time
/// when `None`.
pub fn since_ms(since: Option<&str>) -> Result<i64> {
    match since {
        Some(s) => Ok(now_ms().saturating_sub(parse_duration(s)?)),
        None => Ok(0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_is_utc_with_milliseconds() {
        assert_eq!(rfc3339_ms(1_700_000_000_123), "2023-11-14T22:13:20.123Z");
        assert_eq!(rfc3339_ms(0), "1970-01-01T00:00:00.000Z");
    }

    #[test]
    fn durations_read_naturally() {
        assert_eq!(human_duration_ms(850), "850ms");
        assert_eq!(human_duration_ms(12_345), "12.3s");
        assert_eq!(human_duration_ms(245_000), "4m05s");
        assert_eq!(human_duration_ms(3_720_000), "1h02m");
    }

    #[test]
    fn friendly_durations_parse_and_bad_ones_name_the_input() {
        assert_eq!(parse_duration("7d").unwrap(), 7 * 86_400_000);
        assert_eq!(parse_duration("24h").unwrap(), 86_400_000);
        assert_eq!(parse_duration("90m").unwrap(), 5_400_000);
        assert_eq!(parse_duration("2 weeks").unwrap(), 14 * 86_400_000);
        let err = parse_duration("soon").unwrap_err().to_string();
        assert!(err.starts_with("soon: not a duration"), "{err}");
        assert!(parse_duration("-3h").is_err());
    }

    #[test]
    fn months_and_years_are_calendar_units() {
        let day = 86_400_000;
        for month in ["1mo", "1 month", "1 months"] {
            let ms = parse_duration(month).unwrap();
            assert!((28 * day..=31 * day).contains(&ms), "{month}: {ms}");
        }
        for year in ["1y", "1 year"] {
            let ms = parse_duration(year).unwrap();
            assert!((365 * day..=366 * day).contains(&ms), "{year}: {ms}");
        }
    }
}
