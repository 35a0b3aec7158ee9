//! When a job is due: a cron expression (5 fields, 6 with seconds, `@hourly`
//! and friends; parsed by `croner`) or pg_cron's interval form (`'30 seconds'`),
//! evaluated in the job's IANA time zone (`chrono-tz`).
//!
//! Every node computes the same ticks for a job, because a tick is a pure
//! function of the expression, the zone and the instant: that is what lets the
//! unique `(job_id, scheduled_for)` key decide which node runs it. Intervals are
//! therefore aligned to the Unix epoch (a `'10 seconds'` job runs at :00, :10,
//! …), not to when a node started.
//!
//! Daylight-saving transitions follow croner's (OCPS) rules: a fixed-time job
//! whose local time is skipped runs once at the first valid instant after the
//! gap; in a repeated hour it runs once (the first occurrence). Jobs that run
//! every hour or more often keep running through both.

use chrono::{DateTime, TimeZone, Utc};
use chrono_tz::Tz;
use croner::parser::{CronParser, Seconds, Year};
use croner::Cron;
use std::fmt;

/// A parsed schedule with its time zone.
#[derive(Clone, Debug)]
pub struct Schedule {
    when: When,
    tz: Tz,
}

#[derive(Clone, Debug)]
enum When {
    Cron(Box<Cron>),
    /// Every this many seconds, aligned to the Unix epoch.
    Every(i64),
}

/// Why a schedule or time zone was refused; `position` is the 1-based
/// character column of the field at fault, when one field is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScheduleError {
    /// What is wrong, naming the field.
    pub message: String,
    /// 1-based column of the offending field in the expression.
    pub position: Option<usize>,
}

impl fmt::Display for ScheduleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.position {
            Some(p) => write!(f, "{} (at position {p})", self.message),
            None => f.write_str(&self.message),
        }
    }
}

impl std::error::Error for ScheduleError {}

const FIELDS_5: [&str; 5] = ["minute", "hour", "day of month", "month", "day of week"];
const FIELDS_6: [&str; 6] = [
    "second",
    "minute",
    "hour",
    "day of month",
    "month",
    "day of week",
];

/// The longest interval the `'N seconds'` form takes (a day; longer periods
/// read better as cron expressions).
const MAX_INTERVAL_SECS: i64 = 86_400;

fn parser() -> CronParser {
    CronParser::builder()
        .seconds(Seconds::Optional)
        .year(Year::Disallowed)
        .build()
}

fn err(message: impl Into<String>, position: Option<usize>) -> ScheduleError {
    ScheduleError {
        message: message.into(),
        position,
    }
}

/// Parses `tz` as an IANA zone name (`Europe/Berlin`, `UTC`).
pub fn parse_timezone(tz: &str) -> Result<Tz, ScheduleError> {
    tz.parse::<Tz>().map_err(|_| {
        err(
            format!("unknown time zone '{tz}' (use an IANA name such as 'Europe/Berlin' or 'UTC')"),
            None,
        )
    })
}

/// `'N seconds'` (pg_cron's form), also `N minutes` / `N hours`; None when
/// `expr` is not of that shape at all.
fn parse_interval(expr: &str) -> Option<Result<i64, ScheduleError>> {
    let mut words = expr.split_whitespace();
    let (n, unit) = (words.next()?, words.next()?);
    if words.next().is_some() || !n.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let per = match unit.to_ascii_lowercase().as_str() {
        "second" | "seconds" | "sec" | "secs" => 1,
        "minute" | "minutes" | "min" | "mins" => 60,
        "hour" | "hours" => 3600,
        _ => return None,
    };
    Some(
        match n.parse::<i64>().ok().and_then(|n| n.checked_mul(per)) {
            Some(secs) if (1..=MAX_INTERVAL_SECS).contains(&secs) => Ok(secs),
            _ => Err(err(
                format!("an interval must be between 1 second and {MAX_INTERVAL_SECS} seconds"),
                Some(1),
            )),
        },
    )
}

impl Schedule {
    /// Parses `expr` in time zone `tz`; the error names the field at fault and
    /// its position.
    pub fn parse(expr: &str, tz: &str) -> Result<Schedule, ScheduleError> {
        let tz = parse_timezone(tz)?;
        let expr = expr.trim();
        if expr.is_empty() {
            return Err(err("the schedule is empty", None));
        }
        if let Some(every) = parse_interval(expr) {
            return Ok(Schedule {
                when: When::Every(every?),
                tz,
            });
        }
        match parser().parse(expr) {
            Ok(c) => Ok(Schedule {
                when: When::Cron(Box::new(c)),
                tz,
            }),
            Err(e) => Err(locate(expr, &e)),
        }
    }

    /// The first tick strictly after `t`, None if the expression never fires
    /// again (e.g. `0 0 30 2 *`).
    pub fn next_after(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        match &self.when {
            When::Every(secs) => {
                let ts = t.timestamp();
                let next = (ts.div_euclid(*secs) + 1) * secs;
                Utc.timestamp_opt(next, 0).single()
            }
            When::Cron(c) => {
                let local = t.with_timezone(&self.tz);
                c.find_next_occurrence(&local, false)
                    .ok()
                    .map(|d| d.with_timezone(&Utc))
            }
        }
    }

    /// The next `n` ticks after `t` (what a job's creation shows).
    pub fn upcoming(&self, t: DateTime<Utc>, n: usize) -> Vec<DateTime<Utc>> {
        let mut out = Vec::with_capacity(n);
        let mut at = t;
        while out.len() < n {
            match self.next_after(at) {
                Some(next) => {
                    out.push(next);
                    at = next;
                }
                None => break,
            }
        }
        out
    }

    /// Ticks in `(after, until]`, the latest `max` of them, oldest first (what
    /// the missed-tick policies run). Walks back from `until`, so a long outage
    /// costs `max` steps, not one per tick that passed.
    pub fn ticks_between(
        &self,
        after: DateTime<Utc>,
        until: DateTime<Utc>,
        max: usize,
    ) -> Vec<DateTime<Utc>> {
        let mut out = Vec::with_capacity(max.min(64));
        match &self.when {
            When::Every(secs) => {
                let mut t = until.timestamp().div_euclid(*secs) * secs;
                while out.len() < max {
                    match Utc.timestamp_opt(t, 0).single() {
                        Some(d) if d > after && d <= until => out.push(d),
                        _ => break,
                    }
                    t -= secs;
                }
            }
            When::Cron(c) => {
                let mut at = until.with_timezone(&self.tz);
                let mut inclusive = true;
                while out.len() < max {
                    match c.find_previous_occurrence(&at, inclusive) {
                        Ok(d) if d.with_timezone(&Utc) > after => {
                            out.push(d.with_timezone(&Utc));
                            at = d;
                            inclusive = false;
                        }
                        _ => break,
                    }
                }
            }
        }
        out.reverse();
        out
    }
}

/// Turns croner's error into one naming the field and its column: each field
/// is replaced by `*` in turn, and the first whose replacement parses is the
/// one at fault.
fn locate(expr: &str, e: &croner::errors::CronError) -> ScheduleError {
    if expr.starts_with('@') {
        return err(
            format!("unknown nickname '{expr}' (use @yearly, @annually, @monthly, @weekly, @daily or @hourly)"),
            Some(1),
        );
    }
    let fields: Vec<(usize, &str)> = expr
        .split_whitespace()
        .map(|f| (f.as_ptr() as usize - expr.as_ptr() as usize, f))
        .collect();
    let names: &[&str] = match fields.len() {
        5 => &FIELDS_5,
        6 => &FIELDS_6,
        n => {
            return err(
                format!(
                    "a schedule has 5 fields (minute hour day-of-month month day-of-week), 6 with seconds first, \
                     an @nickname, or the form 'N seconds'; this one has {n}"
                ),
                None,
            )
        }
    };
    for (i, (offset, field)) in fields.iter().enumerate() {
        let mut probe: Vec<&str> = fields.iter().map(|(_, f)| *f).collect();
        probe[i] = "*";
        if parser().parse(&probe.join(" ")).is_ok() {
            let column = expr[..*offset].chars().count() + 1;
            return err(
                format!("invalid {} field '{field}'", names[i]),
                Some(column),
            );
        }
    }
    err(format!("invalid schedule: {e}"), None)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn next(expr: &str, tz: &str, after: &str, n: usize) -> Vec<String> {
        Schedule::parse(expr, tz)
            .unwrap()
            .upcoming(utc(after), n)
            .into_iter()
            .map(|d| d.to_rfc3339())
            .collect()
    }

    #[test]
    fn forms() {
        assert_eq!(
            next("*/15 * * * *", "UTC", "2026-01-01T00:07:00Z", 2),
            ["2026-01-01T00:15:00+00:00", "2026-01-01T00:30:00+00:00"]
        );
        assert_eq!(
            next("*/20 * * * * *", "UTC", "2026-01-01T00:00:00Z", 2),
            ["2026-01-01T00:00:20+00:00", "2026-01-01T00:00:40+00:00"]
        );
        assert_eq!(
            next("@hourly", "UTC", "2026-01-01T00:00:00Z", 1),
            ["2026-01-01T01:00:00+00:00"]
        );
        assert_eq!(
            next("@daily", "Europe/Berlin", "2026-01-01T00:00:00Z", 1),
            ["2026-01-01T23:00:00+00:00"]
        );
        // Intervals are aligned to the epoch, so every node agrees.
        assert_eq!(
            next("30 seconds", "UTC", "2026-01-01T00:00:07Z", 2),
            ["2026-01-01T00:00:30+00:00", "2026-01-01T00:01:00+00:00"]
        );
        assert_eq!(
            next("1 second", "UTC", "2026-01-01T00:00:00.5Z", 1),
            ["2026-01-01T00:00:01+00:00"]
        );
    }

    #[test]
    fn errors_name_the_field_and_position() {
        let e = Schedule::parse("0 25 * * *", "UTC").unwrap_err();
        assert_eq!(e.position, Some(3), "{e}");
        assert!(e.message.contains("hour"), "{e}");
        let e = Schedule::parse("*/5 * * * * * *", "UTC").unwrap_err();
        assert_eq!(e.position, None);
        assert!(e.message.contains("has 7"), "{e}");
        let e = Schedule::parse("0 0 * foo *", "UTC").unwrap_err();
        assert_eq!(e.position, Some(7));
        assert!(e.message.contains("month"), "{e}");
        let e = Schedule::parse("61 * * * * *", "UTC").unwrap_err();
        assert_eq!((e.position, e.message.contains("second")), (Some(1), true));
        assert!(Schedule::parse("@fortnightly", "UTC").is_err());
        assert!(Schedule::parse("0 seconds", "UTC").is_err());
        assert!(Schedule::parse("", "UTC").is_err());
        let e = Schedule::parse("* * * * *", "Mars/Olympus").unwrap_err();
        assert!(e.message.contains("time zone"), "{e}");
    }

    #[test]
    fn skipped_local_hour_runs_once_after_the_gap() {
        // Europe/Berlin springs forward on 2026-03-29: 02:00 → 03:00 local.
        assert_eq!(
            next("30 2 * * *", "Europe/Berlin", "2026-03-28T12:00:00Z", 2),
            // 03:00 CEST is 01:00Z: the first valid instant after the gap.
            ["2026-03-29T01:00:00+00:00", "2026-03-30T00:30:00+00:00"]
        );
    }

    #[test]
    fn repeated_local_hour_runs_once() {
        // Europe/Berlin falls back on 2026-10-25: 03:00 CEST → 02:00 CET, so
        // 02:30 local happens twice (00:30Z and 01:30Z).
        assert_eq!(
            next("30 2 * * *", "Europe/Berlin", "2026-10-24T12:00:00Z", 2),
            ["2026-10-25T00:30:00+00:00", "2026-10-26T01:30:00+00:00"]
        );
        // An hourly job runs in both copies of the hour.
        assert_eq!(
            next("0 * * * *", "Europe/Berlin", "2026-10-24T23:30:00Z", 3),
            [
                "2026-10-25T00:00:00+00:00",
                "2026-10-25T01:00:00+00:00",
                "2026-10-25T02:00:00+00:00"
            ]
        );
    }

    #[test]
    fn missed_ticks_keep_the_latest() {
        let s = Schedule::parse("1 second", "UTC").unwrap();
        let t = s.ticks_between(utc("2026-01-01T00:00:00Z"), utc("2026-01-02T00:00:00Z"), 3);
        let t: Vec<String> = t.into_iter().map(|d| d.to_rfc3339()).collect();
        assert_eq!(
            t,
            [
                "2026-01-01T23:59:58+00:00",
                "2026-01-01T23:59:59+00:00",
                "2026-01-02T00:00:00+00:00"
            ]
        );
        assert!(s
            .ticks_between(utc("2026-01-01T00:00:00Z"), utc("2026-01-01T00:00:00Z"), 3)
            .is_empty());
        // A schedule that fires in bursts, after weeks down: still found.
        let s = Schedule::parse("0 9-17 * * 1-5", "UTC").unwrap();
        let t: Vec<String> = s
            .ticks_between(utc("2026-01-01T00:00:00Z"), utc("2026-02-01T03:00:00Z"), 2)
            .into_iter()
            .map(|d| d.to_rfc3339())
            .collect();
        // 2026-02-01 is a Sunday: the last ticks are Friday 16:00 and 17:00.
        assert_eq!(
            t,
            ["2026-01-30T16:00:00+00:00", "2026-01-30T17:00:00+00:00"]
        );
        assert!(Schedule::parse("1152921504606846977 hours", "UTC").is_err());
    }
}
