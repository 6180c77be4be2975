//! The rules of the service's lifecycle: which scheduled jobs exist and how often they
//! run, when a reminder is due, and how a message that could not be delivered is tried
//! again.

use crate::Timestamp;

pub const SECONDS_PER_DAY: i64 = 86_400;

/// A mandat is announced as ending when it ends within this many days.
pub const EXPIRING_WITHIN_DAYS: i64 = 30;
/// An aidant without a sign-in for this many days is warned…
pub const INACTIVITY_WARNING_DAYS: i64 = 150;
/// …and deactivated after this many.
pub const INACTIVITY_DEACTIVATION_DAYS: i64 = 180;
/// At most one notice of uses per usager in this many seconds.
pub const USE_DIGEST_SECONDS: i64 = 3_600;

/// The scheduled jobs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Job {
    /// Weekly: each active aidant receives the list of their structure's mandats ending
    /// within 30 days.
    MandatsExpiring,
    /// Weekly: each référent receives the list of their aidants without a working second
    /// factor.
    MissingSecondFactors,
    /// Daily: warning at 150 days without a sign-in, deactivation at 180.
    Inactivity,
    /// Every ten minutes: notices to usagers (uses of their mandats, hourly digest at most).
    UsagerNotices,
}

impl Job {
    pub const ALL: [Job; 4] = [Job::MandatsExpiring, Job::MissingSecondFactors, Job::Inactivity, Job::UsagerNotices];

    /// The job's name, as stored and shown by `broker jobs list`.
    pub const fn name(self) -> &'static str {
        match self {
            Job::MandatsExpiring => "rappel-mandats-echeance",
            Job::MissingSecondFactors => "rappel-seconds-facteurs",
            Job::Inactivity => "inactivite-aidants",
            Job::UsagerNotices => "avis-usagers",
        }
    }

    pub const fn description(self) -> &'static str {
        match self {
            Job::MandatsExpiring => "Mandats prenant fin dans les 30 jours : un récapitulatif à chaque aidant de la structure",
            Job::MissingSecondFactors => "Aidants sans second facteur utilisable : un récapitulatif à leurs référents",
            Job::Inactivity => "Inactivité des aidants : avertissement à 150 jours, désactivation à 180",
            Job::UsagerNotices => "Avis aux usagers : utilisations de leurs mandats (au plus un par heure)",
        }
    }

    /// Seconds between two runs.
    pub const fn period_seconds(self) -> i64 {
        match self {
            Job::MandatsExpiring | Job::MissingSecondFactors => 7 * SECONDS_PER_DAY,
            Job::Inactivity => SECONDS_PER_DAY,
            Job::UsagerNotices => 600,
        }
    }

    /// "chaque semaine", for people.
    pub const fn schedule(self) -> &'static str {
        match self {
            Job::MandatsExpiring | Job::MissingSecondFactors => "chaque semaine",
            Job::Inactivity => "chaque jour",
            Job::UsagerNotices => "toutes les 10 minutes",
        }
    }

    pub fn from_name(name: &str) -> Option<Job> {
        Job::ALL.into_iter().find(|j| j.name() == name)
    }

    /// When the job is due next after a run at `ran_at`.
    pub fn next_due(self, ran_at: Timestamp) -> Timestamp {
        ran_at.plus_seconds(self.period_seconds())
    }
}

/// Seconds before a failed run is tried again.
pub const JOB_RETRY_SECONDS: i64 = 300;

/// Whether a mandat ending at `expires_at` is announced at `now`: it has not ended and ends
/// within [`EXPIRING_WITHIN_DAYS`] (the 30th day included).
pub fn is_expiring(expires_at: Timestamp, now: Timestamp) -> bool {
    expires_at > now && expires_at <= now.plus_days(EXPIRING_WITHIN_DAYS)
}

/// What inactivity calls for, for an aidant whose last sign-in (or, never signed in,
/// account creation) was at `since`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Inactivity {
    Active,
    /// Warn: the account will be deactivated at `deactivation_on`.
    Warn { deactivation_on: Timestamp },
    Deactivate,
}

pub fn inactivity(since: Timestamp, now: Timestamp) -> Inactivity {
    if now >= since.plus_days(INACTIVITY_DEACTIVATION_DAYS) {
        Inactivity::Deactivate
    } else if now >= since.plus_days(INACTIVITY_WARNING_DAYS) {
        Inactivity::Warn { deactivation_on: since.plus_days(INACTIVITY_DEACTIVATION_DAYS) }
    } else {
        Inactivity::Active
    }
}

/// Messages are tried this many times before they are given up (about two days).
pub const MAIL_MAX_ATTEMPTS: i32 = 40;

/// Seconds before the next attempt after `attempts` failed ones: 30 s, doubling, at most
/// an hour.
pub fn mail_retry_seconds(attempts: i32) -> i64 {
    let doublings = attempts.clamp(1, 8) - 1;
    (30i64 << doublings).min(3_600)
}

/// How long a sender holds a message it is delivering before another may take it.
pub const MAIL_CLAIM_SECONDS: i64 = 120;

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: Timestamp = Timestamp::from_micros(1_800_000_000_000_000);

    #[test]
    fn the_thirtieth_day_is_announced_the_thirty_first_is_not() {
        assert!(is_expiring(NOW.plus_days(29), NOW));
        assert!(is_expiring(NOW.plus_days(30), NOW));
        assert!(!is_expiring(NOW.plus_days(30).plus_seconds(1), NOW));
        assert!(!is_expiring(NOW.plus_days(31), NOW));
        assert!(!is_expiring(NOW, NOW), "an ended mandat is not announced");
    }

    #[test]
    fn inactivity_warns_at_150_days_and_deactivates_at_180() {
        assert_eq!(inactivity(NOW.plus_days(-149), NOW), Inactivity::Active);
        assert_eq!(inactivity(NOW.plus_days(-150), NOW), Inactivity::Warn { deactivation_on: NOW.plus_days(30) });
        assert_eq!(inactivity(NOW.plus_days(-179), NOW), Inactivity::Warn { deactivation_on: NOW.plus_days(1) });
        assert_eq!(inactivity(NOW.plus_days(-180), NOW), Inactivity::Deactivate);
    }

    #[test]
    fn retries_back_off_to_an_hour() {
        assert_eq!(mail_retry_seconds(1), 30);
        assert_eq!(mail_retry_seconds(2), 60);
        assert_eq!(mail_retry_seconds(5), 480);
        assert_eq!(mail_retry_seconds(8), 3_600);
        assert_eq!(mail_retry_seconds(40), 3_600);
    }

    #[test]
    fn job_names_round_trip() {
        for j in Job::ALL {
            assert_eq!(Job::from_name(j.name()), Some(j));
            assert_eq!(j.next_due(NOW), NOW.plus_seconds(j.period_seconds()));
        }
        assert_eq!(Job::from_name("autre"), None);
    }
}
