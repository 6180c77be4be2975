//! Scheduled jobs that run once across instances: one row per job in `scheduled_jobs`;
//! a run takes its row (PostgreSQL: `FOR UPDATE SKIP LOCKED`, so another instance skips
//! it; SQLite: the write lock), does its work, and moves the row to its next due instant,
//! all in one transaction. A run that fails changes nothing but its row (outcome, and due
//! again in a few minutes).

use crate::lifecycle;
use crate::schema::scheduled_jobs as j;
use crate::{AnyConnection, Db, StoreError};
use broker_core::lifecycle::{Job, JOB_RETRY_SECONDS};
use broker_core::Timestamp;
use diesel::prelude::*;

/// A job as `broker jobs list` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobState {
    pub job: Job,
    pub next_due_at: Timestamp,
    pub last_run_at: Option<Timestamp>,
    pub last_outcome: Option<String>,
    pub last_duration_micros: Option<i64>,
}

impl JobState {
    /// Whether the last run succeeded (`None`: never run).
    pub fn last_ok(&self) -> Option<bool> {
        self.last_outcome.as_deref().map(|o| !o.starts_with(FAILED))
    }
}

/// How the outcome of a failed run begins.
const FAILED: &str = "échec";

/// One run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Run {
    pub job: Job,
    pub ok: bool,
    pub outcome: String,
    pub micros: i64,
}

/// Adds the jobs missing from the table, due at `now`.
pub fn ensure(c: &mut AnyConnection, now: Timestamp) -> Result<(), StoreError> {
    for job in Job::ALL {
        let row = (j::name.eq(job.name()), j::next_due_at.eq(now.micros()));
        match c {
            AnyConnection::Postgresql(pg) => diesel::insert_into(j::table).values(row).on_conflict_do_nothing().execute(pg)?,
            AnyConnection::Sqlite(sq) => diesel::insert_into(j::table).values(row).on_conflict_do_nothing().execute(sq)?,
        };
    }
    Ok(())
}

/// Every job, in the order of [`Job::ALL`].
pub fn list(db: &Db, now: Timestamp) -> Result<Vec<JobState>, StoreError> {
    db.write(|c| ensure(c, now))?;
    db.read(states)
}

/// The jobs that have a row (every job once a server or `broker jobs` ran), in the order
/// of [`Job::ALL`].
pub fn states(c: &mut AnyConnection) -> Result<Vec<JobState>, StoreError> {
    let rows: Vec<(String, i64, Option<i64>, Option<String>, Option<i64>)> =
        j::table.select((j::name, j::next_due_at, j::last_run_at, j::last_outcome, j::last_duration_micros)).load(c)?;
    let mut out: Vec<JobState> = rows
        .into_iter()
        .filter_map(|(name, due, last, outcome, micros)| {
            Some(JobState {
                job: Job::from_name(&name)?,
                next_due_at: Timestamp::from_micros(due),
                last_run_at: last.map(Timestamp::from_micros),
                last_outcome: outcome,
                last_duration_micros: micros,
            })
        })
        .collect();
    out.sort_by_key(|s| Job::ALL.iter().position(|j| *j == s.job));
    Ok(out)
}

/// Takes `job`'s row when it is due at `now` and no other instance holds it: its due
/// instant and cursor.
fn take(c: &mut AnyConnection, job: Job, now: Timestamp) -> Result<Option<(i64, i64)>, StoreError> {
    let q = j::table.find(job.name()).filter(j::next_due_at.le(now.micros())).select((j::next_due_at, j::cursor));
    Ok(match c {
        AnyConnection::Postgresql(pg) => q.for_update().skip_locked().first(pg).optional()?,
        AnyConnection::Sqlite(sq) => q.first(sq).optional()?,
    })
}

fn body(c: &mut AnyConnection, job: Job, now: Timestamp, due: i64, cursor: i64) -> Result<(String, i64), StoreError> {
    match job {
        Job::MandatsExpiring => lifecycle::mandats_expiring(c, now, due).map(|o| (o, cursor)),
        Job::MissingSecondFactors => lifecycle::missing_second_factors(c, now, due).map(|o| (o, cursor)),
        Job::Inactivity => lifecycle::inactivity_run(c, now).map(|o| (o, cursor)),
        Job::UsagerNotices => lifecycle::usager_notices_run(c, now, cursor),
    }
}

/// Runs each job due at `now` that no other instance is running, once. Returns the runs
/// made here.
pub fn run_due(db: &Db, now: Timestamp) -> Result<Vec<Run>, StoreError> {
    db.write(|c| ensure(c, now))?;
    let mut runs = Vec::new();
    for job in Job::ALL {
        if let Some(run) = run_taken(db, job, now)? {
            runs.push(run);
        }
    }
    Ok(runs)
}

/// Runs `job` if it is due at `now` and free.
pub fn run_one(db: &Db, job: Job, now: Timestamp) -> Result<Option<Run>, StoreError> {
    db.write(|c| ensure(c, now))?;
    run_taken(db, job, now)
}

fn run_taken(db: &Db, job: Job, now: Timestamp) -> Result<Option<Run>, StoreError> {
    let started = std::time::Instant::now();
    let done = db.write(|c| {
        let Some((due, cursor)) = take(c, job, now)? else { return Ok(None) };
        let (outcome, cursor) = body(c, job, now, due, cursor)?;
        let micros = i64::try_from(started.elapsed().as_micros()).unwrap_or(i64::MAX);
        diesel::update(j::table.find(job.name()))
            .set((
                j::next_due_at.eq(job.next_due(now).micros()),
                j::last_run_at.eq(Some(now.micros())),
                j::last_outcome.eq(Some(&outcome)),
                j::last_duration_micros.eq(Some(micros)),
                j::cursor.eq(cursor),
            ))
            .execute(c)?;
        Ok(Some(Run { job, ok: true, outcome, micros }))
    });
    match done {
        Ok(run) => Ok(run),
        // The database itself is away: nothing to record.
        Err(e @ StoreError::Unavailable(_)) => Err(e),
        Err(e) => {
            let micros = i64::try_from(started.elapsed().as_micros()).unwrap_or(i64::MAX);
            let outcome = format!("{FAILED} : {e}");
            tracing::error!(job = job.name(), error = %e, "scheduled job failed");
            db.write(|c| {
                diesel::update(j::table.find(job.name()).filter(j::next_due_at.le(now.micros())))
                    .set((
                        j::next_due_at.eq(now.plus_seconds(JOB_RETRY_SECONDS).micros()),
                        j::last_run_at.eq(Some(now.micros())),
                        j::last_outcome.eq(Some(&outcome)),
                        j::last_duration_micros.eq(Some(micros)),
                    ))
                    .execute(c)?;
                Ok(())
            })?;
            Ok(Some(Run { job, ok: false, outcome, micros }))
        }
    }
}
