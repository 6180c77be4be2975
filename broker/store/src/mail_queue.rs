//! The mail queue: every e-mail is first a row, written in the transaction of the change
//! that causes it, then delivered by a sender that takes due rows for a while
//! ([`claim`]), tries them, and marks each sent, to be tried again later, or given up.
//!
//! A row's idempotency key names its notice: queuing the same key again writes nothing,
//! so a notice is queued once whatever retries or instances do. A sender that stops
//! between the SMTP server's acceptance and [`sent`] leaves its claim to expire and the
//! message is delivered again, with the same `Message-ID` (derived from the key) so that
//! mail systems can recognise it. A delivered message keeps its envelope (recipient,
//! kind, dates) for the référent space; its text is erased.

use crate::schema::mail_queue as q;
use crate::{AnyConnection, StoreError};
use broker_core::lifecycle::{mail_retry_seconds, MAIL_CLAIM_SECONDS, MAIL_MAX_ATTEMPTS};
use broker_core::notice::Notice;
use broker_core::Timestamp;
use diesel::prelude::*;

/// A message to queue.
#[derive(Debug, Clone)]
pub struct NewMail<'a> {
    /// Names the notice: one row per key, ever.
    pub key: String,
    pub recipient: &'a str,
    pub notice: &'a Notice,
    /// The structure whose référents see the message in their space.
    pub organisation: Option<i64>,
    pub aidant: Option<i64>,
    pub usager: Option<i64>,
}

/// Queues `m`, due at once. `Ok(false)`: a message with this key was queued before
/// (nothing written). Works inside the caller's transaction.
pub fn enqueue(c: &mut AnyConnection, m: &NewMail<'_>, now: Timestamp) -> Result<bool, StoreError> {
    Ok(enqueue_many(c, std::slice::from_ref(m), now)? == 1)
}

/// Queues every message of `list`, due at once, in few statements; a message whose key was
/// queued before is left out. Returns how many were queued. Works inside the caller's
/// transaction.
pub fn enqueue_many(c: &mut AnyConnection, list: &[NewMail<'_>], now: Timestamp) -> Result<usize, StoreError> {
    let mut rows = Vec::with_capacity(list.len());
    for m in list {
        let notice = serde_json::to_string(m.notice).map_err(|e| StoreError::Invalid(e.to_string()))?;
        rows.push((
            q::idempotency_key.eq(m.key.clone()),
            q::kind.eq(m.notice.kind()),
            q::recipient.eq(m.recipient.to_owned()),
            q::notice.eq(notice),
            q::organisation_id.eq(m.organisation),
            q::aidant_id.eq(m.aidant),
            q::usager_id.eq(m.usager),
            q::created_at.eq(now.micros()),
            q::next_attempt_at.eq(now.micros()),
        ));
    }
    let mut queued = 0;
    match c {
        AnyConnection::Postgresql(pg) => {
            for chunk in rows.chunks(500) {
                queued += diesel::insert_into(q::table).values(chunk).on_conflict_do_nothing().execute(pg)?;
            }
        }
        AnyConnection::Sqlite(sq) => {
            for row in rows {
                queued += diesel::insert_into(q::table).values(row).on_conflict_do_nothing().execute(sq)?;
            }
        }
    }
    Ok(queued)
}

/// A message taken for delivery.
#[derive(Debug, Clone)]
pub struct Claimed {
    pub id: i64,
    pub key: String,
    pub recipient: String,
    /// The notice's JSON.
    pub notice: String,
    /// Attempts so far, this one included.
    pub attempts: i32,
    pub queued_at: Timestamp,
}

/// Takes up to `limit` due messages for [`MAIL_CLAIM_SECONDS`]: no other sender takes them
/// meanwhile. Each row is taken by a conditional update, so that two senders racing for
/// one row get it once.
pub fn claim(c: &mut AnyConnection, now: Timestamp, limit: i64) -> Result<Vec<Claimed>, StoreError> {
    let due: Vec<i64> = q::table
        .filter(q::sent_at.is_null())
        .filter(q::failed_at.is_null())
        .filter(q::next_attempt_at.le(now.micros()))
        .filter(q::claimed_until.is_null().or(q::claimed_until.le(now.micros())))
        .order((q::next_attempt_at, q::id))
        .limit(limit)
        .select(q::id)
        .load(c)?;
    let mut out = Vec::with_capacity(due.len());
    for id in due {
        let taken = diesel::update(
            q::table
                .find(id)
                .filter(q::sent_at.is_null())
                .filter(q::failed_at.is_null())
                .filter(q::claimed_until.is_null().or(q::claimed_until.le(now.micros()))),
        )
        .set((q::claimed_until.eq(now.plus_seconds(MAIL_CLAIM_SECONDS).micros()), q::attempts.eq(q::attempts + 1)))
        .execute(c)?;
        if taken == 1 {
            let (key, recipient, notice, attempts, queued) = q::table
                .find(id)
                .select((q::idempotency_key, q::recipient, q::notice, q::attempts, q::created_at))
                .first::<(String, String, String, i32, i64)>(c)?;
            out.push(Claimed { id, key, recipient, notice, attempts, queued_at: Timestamp::from_micros(queued) });
        }
    }
    Ok(out)
}

/// The message was accepted by the mail server (or written to the development outbox).
pub fn sent(c: &mut AnyConnection, id: i64, now: Timestamp) -> Result<(), StoreError> {
    diesel::update(q::table.find(id))
        .set((q::sent_at.eq(now.micros()), q::notice.eq(""), q::claimed_until.eq(None::<i64>), q::last_error.eq(None::<String>)))
        .execute(c)?;
    Ok(())
}

/// Delivery failed with `error` (short, without the message nor its recipient). A
/// permanent failure, or the last allowed attempt, gives the message up; otherwise it is
/// due again after [`mail_retry_seconds`].
pub fn failed(c: &mut AnyConnection, m: &Claimed, error: &str, permanent: bool, now: Timestamp) -> Result<Outcome, StoreError> {
    let error: String = error.chars().take(200).collect();
    if permanent || m.attempts >= MAIL_MAX_ATTEMPTS {
        diesel::update(q::table.find(m.id))
            .set((q::failed_at.eq(now.micros()), q::notice.eq(""), q::claimed_until.eq(None::<i64>), q::last_error.eq(error)))
            .execute(c)?;
        return Ok(Outcome::GivenUp);
    }
    let next = now.plus_seconds(mail_retry_seconds(m.attempts));
    diesel::update(q::table.find(m.id))
        .set((q::next_attempt_at.eq(next.micros()), q::claimed_until.eq(None::<i64>), q::last_error.eq(error)))
        .execute(c)?;
    Ok(Outcome::Retry { at: next })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Retry { at: Timestamp },
    GivenUp,
}

/// The queue at a glance, for the metrics and `broker jobs list`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct QueueStats {
    /// Messages not delivered yet (being tried again included).
    pub waiting: i64,
    /// Of those, messages that failed at least once.
    pub retrying: i64,
    /// Messages given up.
    pub given_up: i64,
    pub delivered: i64,
    /// When the oldest waiting message was queued.
    pub oldest_waiting_since: Option<Timestamp>,
}

pub fn stats(c: &mut AnyConnection) -> Result<QueueStats, StoreError> {
    let waiting = q::table.filter(q::sent_at.is_null()).filter(q::failed_at.is_null());
    let count_waiting: i64 = waiting.count().get_result(c)?;
    let retrying: i64 = q::table
        .filter(q::sent_at.is_null())
        .filter(q::failed_at.is_null())
        .filter(q::last_error.is_not_null())
        .count()
        .get_result(c)?;
    let given_up: i64 = q::table.filter(q::failed_at.is_not_null()).count().get_result(c)?;
    let delivered: i64 = q::table.filter(q::sent_at.is_not_null()).count().get_result(c)?;
    let oldest: Option<i64> = q::table
        .filter(q::sent_at.is_null())
        .filter(q::failed_at.is_null())
        .select(diesel::dsl::min(q::created_at))
        .first(c)?;
    Ok(QueueStats { waiting: count_waiting, retrying, given_up, delivered, oldest_waiting_since: oldest.map(Timestamp::from_micros) })
}

/// One message as its structure's référents see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sent {
    pub queued_at: Timestamp,
    pub kind: String,
    pub recipient: String,
    pub status: Status,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Waiting,
    Delivered(Timestamp),
    GivenUp,
}

/// The latest `limit` messages about `organisation`, newest first.
pub fn for_organisation(c: &mut AnyConnection, organisation: i64, limit: i64) -> Result<Vec<Sent>, StoreError> {
    let rows: Vec<(i64, String, String, Option<i64>, Option<i64>)> = q::table
        .filter(q::organisation_id.eq(organisation))
        .order(q::id.desc())
        .limit(limit)
        .select((q::created_at, q::kind, q::recipient, q::sent_at, q::failed_at))
        .load(c)?;
    Ok(rows
        .into_iter()
        .map(|(at, kind, recipient, sent, failed)| Sent {
            queued_at: Timestamp::from_micros(at),
            kind,
            recipient,
            status: match (sent, failed) {
                (Some(s), _) => Status::Delivered(Timestamp::from_micros(s)),
                (None, Some(_)) => Status::GivenUp,
                (None, None) => Status::Waiting,
            },
        })
        .collect())
}
