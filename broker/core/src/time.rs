//! Instants, stored as whole microseconds since the Unix epoch (UTC).
//!
//! One integer type on every backend keeps comparisons exact and makes the journal's
//! canonical encoding independent of how a database renders dates.

use chrono::{DateTime, Datelike, FixedOffset, NaiveDate, SecondsFormat, Utc, Weekday};

/// A UTC instant with microsecond precision.
/// Serialised as microseconds since the Unix epoch (a JSON integer).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize)]
#[serde(transparent)]
pub struct Timestamp(i64);

pub const MICROS_PER_DAY: i64 = 86_400 * 1_000_000;

impl Timestamp {
    pub fn now() -> Self {
        Self(Utc::now().timestamp_micros())
    }

    pub const fn from_micros(micros: i64) -> Self {
        Self(micros)
    }

    pub const fn micros(self) -> i64 {
        self.0
    }

    pub fn plus_days(self, days: i64) -> Self {
        Self(self.0 + days * MICROS_PER_DAY)
    }

    pub fn plus_seconds(self, seconds: i64) -> Self {
        Self(self.0 + seconds * 1_000_000)
    }

    /// RFC 3339 in UTC with exactly six fractional digits, e.g. `2026-11-23T16:41:37.000000Z`.
    pub fn rfc3339(self) -> String {
        self.datetime().to_rfc3339_opts(SecondsFormat::Micros, true)
    }

    /// Reads an RFC 3339 instant (any offset), kept to the microsecond.
    pub fn parse_rfc3339(text: &str) -> Option<Self> {
        DateTime::parse_from_rfc3339(text).ok().map(|d| Self(d.with_timezone(&Utc).timestamp_micros()))
    }

    pub fn datetime(self) -> DateTime<Utc> {
        DateTime::from_timestamp_micros(self.0).unwrap_or(DateTime::<Utc>::MIN_UTC)
    }

    /// Date as French readers expect it, e.g. `23/11/2026`.
    pub fn french_date(self) -> String {
        self.datetime().format("%d/%m/%Y").to_string()
    }

    /// The instant in Paris: UTC+2 from the last Sunday of March, 01:00 UTC, to the last
    /// Sunday of October, 01:00 UTC (the European rule), UTC+1 otherwise.
    pub fn paris(self) -> DateTime<FixedOffset> {
        let utc = self.datetime();
        let year = utc.year();
        let change = |month: u32| {
            let last = (25..=31)
                .rev()
                .find_map(|day| NaiveDate::from_ymd_opt(year, month, day).filter(|d| d.weekday() == Weekday::Sun))
                .unwrap_or_default();
            last.and_hms_opt(1, 0, 0).unwrap_or_default().and_utc()
        };
        let hours = if utc >= change(3) && utc < change(10) { 2 } else { 1 };
        let offset = FixedOffset::east_opt(hours * 3600).unwrap_or_else(|| FixedOffset::east_opt(3600).expect("one hour"));
        utc.with_timezone(&offset)
    }

    /// Date and time in Paris as French readers expect them, e.g. `23/11/2026 à 17:41`.
    pub fn paris_date_time(self) -> String {
        self.paris().format("%d/%m/%Y à %H:%M").to_string()
    }

    /// Date in Paris, e.g. `23/11/2026`.
    pub fn paris_date(self) -> String {
        self.paris().format("%d/%m/%Y").to_string()
    }

    pub fn unix_seconds(self) -> u64 {
        u64::try_from(self.0.div_euclid(1_000_000)).unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_has_six_fraction_digits_and_z() {
        let t = Timestamp::from_micros(1_700_000_000_000_001);
        assert_eq!(t.rfc3339(), "2023-11-14T22:13:20.000001Z");
        assert_eq!(Timestamp::from_micros(0).rfc3339(), "1970-01-01T00:00:00.000000Z");
    }

    #[test]
    fn rfc3339_round_trips_to_the_microsecond() {
        let t = Timestamp::from_micros(1_700_000_000_123_456);
        assert_eq!(Timestamp::parse_rfc3339(&t.rfc3339()), Some(t));
        assert_eq!(Timestamp::parse_rfc3339("2023-11-14T23:13:20.123456+01:00"), Some(t));
        assert_eq!(Timestamp::parse_rfc3339("hier"), None);
    }

    #[test]
    fn days_are_exact_multiples_of_24_hours() {
        let t = Timestamp::from_micros(5);
        assert_eq!(t.plus_days(1).micros(), 5 + 86_400_000_000);
        assert_eq!(t.plus_days(365).micros() - t.micros(), 365 * MICROS_PER_DAY);
    }

    #[test]
    fn paris_time_follows_the_european_summer_time_changes() {
        let at = |s: &str| Timestamp::parse_rfc3339(s).unwrap().paris_date_time();
        assert_eq!(at("2026-01-15T12:00:00Z"), "15/01/2026 à 13:00");
        assert_eq!(at("2026-07-15T12:00:00Z"), "15/07/2026 à 14:00");
        // 2026: summer time from Sunday 29 March, 01:00 UTC, to Sunday 25 October, 01:00 UTC.
        assert_eq!(at("2026-03-29T00:59:00Z"), "29/03/2026 à 01:59");
        assert_eq!(at("2026-03-29T01:00:00Z"), "29/03/2026 à 03:00");
        assert_eq!(at("2026-10-25T00:59:00Z"), "25/10/2026 à 02:59");
        assert_eq!(at("2026-10-25T01:00:00Z"), "25/10/2026 à 02:00");
        assert_eq!(Timestamp::parse_rfc3339("2026-12-31T23:30:00Z").unwrap().paris_date(), "01/01/2027");
    }
}

/// Where "now" comes from: the system clock in service, a settable one in tests.
pub trait Clock: Send + Sync {
    fn now(&self) -> Timestamp;
}

#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        Timestamp::now()
    }
}

/// A clock that only moves when told to.
#[derive(Debug)]
pub struct ManualClock(std::sync::Mutex<Timestamp>);

impl ManualClock {
    pub fn new(start: Timestamp) -> Self {
        Self(std::sync::Mutex::new(start))
    }

    pub fn advance_seconds(&self, seconds: i64) {
        let mut t = self.0.lock().unwrap_or_else(|p| p.into_inner());
        *t = t.plus_seconds(seconds);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Timestamp {
        *self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}
