//! Figures for the référent's statistics panel: the démarches covered by the mandats an
//! organisation created, and the démarches its aidants did for usagers, per month.
//!
//! Months are calendar months in Paris time. The rows are read with plain filters and
//! counted here, so that PostgreSQL and SQLite share the code.

use crate::schema::{autorisations, journal, mandats};
use crate::{AnyConnection, StoreError};
use broker_core::journal::Action;
use broker_core::{Demarche, Timestamp};
use chrono::{Datelike, NaiveDate};
use diesel::prelude::*;

/// A calendar month, in Paris time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Month {
    pub year: i32,
    /// 1 to 12.
    pub month: u32,
}

const MONTH_NAMES: [&str; 12] =
    ["janvier", "février", "mars", "avril", "mai", "juin", "juillet", "août", "septembre", "octobre", "novembre", "décembre"];

impl Month {
    /// The month `t` falls in, in Paris.
    pub fn of(t: Timestamp) -> Month {
        let d = t.datetime();
        let m = Month { year: d.year(), month: d.month() };
        // Paris is ahead of UTC: the last hours of a UTC month may be the next month there.
        if t >= m.next().start() {
            m.next()
        } else {
            m
        }
    }

    pub fn next(self) -> Month {
        if self.month == 12 {
            Month { year: self.year + 1, month: 1 }
        } else {
            Month { year: self.year, month: self.month + 1 }
        }
    }

    pub fn previous(self) -> Month {
        if self.month == 1 {
            Month { year: self.year - 1, month: 12 }
        } else {
            Month { year: self.year, month: self.month - 1 }
        }
    }

    /// Midnight on the first day of the month in Paris. The first of April to the first of
    /// October are in summer time (UTC+2), the others in winter time (UTC+1): the changes
    /// happen on the last Sundays of March and October.
    pub fn start(self) -> Timestamp {
        let midnight = NaiveDate::from_ymd_opt(self.year, self.month, 1)
            .and_then(|d| d.and_hms_opt(0, 0, 0))
            .map(|d| d.and_utc().timestamp_micros())
            .unwrap_or(0);
        let offset_hours = if (4..=10).contains(&self.month) { 2 } else { 1 };
        Timestamp::from_micros(midnight - offset_hours * 3_600_000_000)
    }

    /// "novembre 2026".
    pub fn label(self) -> String {
        format!("{} {}", MONTH_NAMES[(self.month as usize + 11) % 12], self.year)
    }
}

/// The figures of one organisation over a period of whole months.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stats {
    /// The months of the period, oldest first; the last one is the current month.
    pub months: Vec<Month>,
    /// Autorisations created (one per démarche of each new mandat), per démarche in the
    /// order of [`Demarche::ALL`], then per month in the order of `months`. Only the
    /// démarches with at least one autorisation are listed.
    pub created: Vec<(Demarche, Vec<i64>)>,
    /// Autorisations used (`autorisation_used` journal entries), per month.
    pub used: Vec<i64>,
}

impl Stats {
    /// Autorisations created in the month at `index`, all démarches together.
    pub fn created_in(&self, index: usize) -> i64 {
        self.created.iter().map(|(_, per_month)| per_month[index]).sum()
    }

    pub fn created_total(&self) -> i64 {
        self.created.iter().flat_map(|(_, per_month)| per_month.iter()).sum()
    }

    pub fn used_total(&self) -> i64 {
        self.used.iter().sum()
    }
}

/// The figures of `organisation_id` for the `months` months up to and including the
/// month of `now` (at least one). Journal entries are read from the numbered journal
/// and from the entries not numbered yet, each counted once, in a snapshot or not; the
/// mandats and the uses are consistent with each other in a snapshot
/// ([`crate::Db::read_snapshot`]).
pub fn organisation_stats(c: &mut AnyConnection, organisation_id: i64, now: Timestamp, months: u32) -> Result<Stats, StoreError> {
    let mut list = vec![Month::of(now)];
    for _ in 1..months.max(1) {
        let first = list[0].previous();
        list.insert(0, first);
    }
    let starts: Vec<i64> = list.iter().map(|m| m.start().micros()).collect();
    let (from, until) = (starts[0], list[list.len() - 1].next().start().micros());
    // Index of the month an instant of the period falls in.
    let bucket = |at: i64| starts.partition_point(|s| *s <= at) - 1;

    let created_rows: Vec<(String, i64)> = autorisations::table
        .inner_join(mandats::table)
        .filter(mandats::organisation_id.eq(organisation_id))
        .filter(autorisations::created_at.ge(from))
        .filter(autorisations::created_at.lt(until))
        .select((autorisations::demarche, autorisations::created_at))
        .load(c)?;
    let mut per_demarche = vec![vec![0i64; list.len()]; Demarche::ALL.len()];
    for (key, at) in created_rows {
        if let Some(i) = Demarche::ALL.iter().position(|d| d.key() == key) {
            per_demarche[i][bucket(at)] += 1;
        }
    }
    let created = Demarche::ALL
        .iter()
        .zip(per_demarche)
        .filter(|(_, counts)| counts.iter().any(|n| *n > 0))
        .map(|(d, counts)| (*d, counts))
        .collect();

    let used_key = Action::AutorisationUsed.key();
    let numbered: Vec<i64> = journal::table
        .filter(journal::organisation_id.eq(organisation_id))
        .filter(journal::action.eq(used_key))
        .filter(journal::at.ge(from))
        .filter(journal::at.lt(until))
        .select(journal::at)
        .load(c)?;
    let mut used = vec![0i64; list.len()];
    for at in numbered {
        used[bucket(at)] += 1;
    }
    Ok(Stats { months: list, created, used })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> Timestamp {
        Timestamp::parse_rfc3339(text).unwrap()
    }

    #[test]
    fn months_start_at_midnight_in_paris() {
        assert_eq!(Month { year: 2026, month: 11 }.start(), at("2026-10-31T23:00:00Z"));
        assert_eq!(Month { year: 2026, month: 7 }.start(), at("2026-06-30T22:00:00Z"));
        assert_eq!(Month::of(at("2026-10-31T22:59:59Z")), Month { year: 2026, month: 10 });
        assert_eq!(Month::of(at("2026-10-31T23:00:00Z")), Month { year: 2026, month: 11 });
        assert_eq!(Month::of(at("2026-12-31T23:30:00Z")), Month { year: 2027, month: 1 });
        assert_eq!(Month { year: 2027, month: 1 }.previous().label(), "décembre 2026");
    }
}
