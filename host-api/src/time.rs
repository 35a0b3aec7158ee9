//! The one date formatter: every timestamp the platform writes as text (auth
//! JSON, function logs, guest SQL results, migration file names) is RFC 3339
//! in UTC, made here by chrono, so the shapes cannot drift apart — including
//! years before 1970 and PostgreSQL's infinities, which a `SystemTime`-only
//! formatter cannot express.

use chrono::{DateTime, NaiveDate, NaiveDateTime, SecondsFormat, TimeDelta, Utc};
use std::time::SystemTime;

/// `YYYY-MM-DDTHH:MM:SSZ`, the shape GoTrue writes.
pub fn rfc3339_seconds(t: SystemTime) -> String {
    DateTime::<Utc>::from(t).to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// `YYYY-MM-DDTHH:MM:SS.mmmZ`, for log entries.
pub fn rfc3339_millis(t: SystemTime) -> String {
    DateTime::<Utc>::from(t).to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// PostgreSQL's epoch for its binary date and timestamp formats.
fn pg_epoch() -> NaiveDateTime {
    NaiveDate::from_ymd_opt(2000, 1, 1)
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .expect("2000-01-01 is a date")
}

/// A binary `timestamptz` (`utc`, ends in `Z`) or zone-less `timestamp`
/// (microseconds since 2000-01-01) as RFC 3339 (six fraction digits unless
/// whole seconds); `infinity`/`-infinity` as PostgreSQL prints them. `None` past
/// the years chrono can represent.
pub fn pg_timestamp(micros: i64, utc: bool) -> Option<String> {
    match micros {
        i64::MAX => return Some("infinity".into()),
        i64::MIN => return Some("-infinity".into()),
        _ => {}
    }
    let t = pg_epoch().checked_add_signed(TimeDelta::microseconds(micros))?;
    let zone = if utc { "Z" } else { "" };
    // Whole seconds print none; otherwise always six digits (microseconds).
    let shape = if micros.rem_euclid(1_000_000) == 0 {
        "%Y-%m-%dT%H:%M:%S"
    } else {
        "%Y-%m-%dT%H:%M:%S%.6f"
    };
    Some(format!("{}{zone}", t.format(shape)))
}

/// A binary `date` (days since 2000-01-01) as `YYYY-MM-DD`; infinities as
/// PostgreSQL prints them. `None` past the years chrono can represent.
pub fn pg_date(days: i32) -> Option<String> {
    match days {
        i32::MAX => return Some("infinity".into()),
        i32::MIN => return Some("-infinity".into()),
        _ => {}
    }
    let d = pg_epoch()
        .date()
        .checked_add_signed(TimeDelta::try_days(days.into())?)?;
    Some(d.format("%Y-%m-%d").to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats() {
        let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(1_795_326_582_123);
        assert_eq!(rfc3339_seconds(t), "2026-11-22T05:49:42Z");
        assert_eq!(rfc3339_millis(t), "2026-11-22T05:49:42.123Z");
        assert_eq!(pg_timestamp(0, true).unwrap(), "2000-01-01T00:00:00Z");
        assert_eq!(
            pg_timestamp(500_000, true).unwrap(),
            "2000-01-01T00:00:00.500000Z"
        );
        assert_eq!(
            pg_timestamp(-1, false).unwrap(),
            "1999-12-31T23:59:59.999999"
        );
        // Before 1970 (the Unix epoch) and before 1000.
        assert_eq!(
            pg_timestamp(-1_000_000 * 86_400 * 365 * 100, true).unwrap(),
            "1900-01-25T00:00:00Z"
        );
        assert_eq!(pg_date(-730_000).unwrap(), "0001-04-30");
        assert_eq!(pg_date(366).unwrap(), "2001-01-01");
        assert_eq!(pg_date(i32::MAX).unwrap(), "infinity");
        assert_eq!(pg_timestamp(i64::MIN, true).unwrap(), "-infinity");
    }
}
