//! The journal appender, sequencer and verifier.
//!
//! [`append`] is called inside the write transaction of the change it records (see
//! [`crate::Db::write`]), so an entry exists exactly when its change does.
//!
//! - On SQLite (one writer at a time) the entry is sequenced right there: the head row
//!   gives the next number and the previous chain hash.
//! - On PostgreSQL the entry is written to `journal_pending` with its change, and the
//!   process's sequencer moves it into `journal` right after the commit
//!   ([`crate::Db::flush_journal`] waits for that). The sequencer takes a
//!   transaction-scoped advisory lock, so one sequencer at a time (across every process)
//!   numbers all pending entries in one batch and one commit: concurrent writers share
//!   that commit instead of queueing on the head row.
//!
//! Either way numbers are contiguous, and the primary key on `seq` makes a fork
//! impossible even if the lock were bypassed.

use crate::tx::write_tx;
use crate::schema::{journal, journal_head, journal_pending};
use crate::{AnyConnection, StoreError};
use broker_core::journal::{parse_hash, Entry, Fault, Record, Verifier, GENESIS};
use broker_core::Timestamp;
use diesel::connection::SimpleConnection;
use diesel::prelude::*;

/// Key of the PostgreSQL advisory lock held while sequencing.
const SEQUENCER_LOCK: i64 = 0x4143_4A4F_5552;
/// Entries numbered per sequencing transaction, at most.
const BATCH: i64 = 5_000;

#[derive(Queryable, Selectable, Insertable)]
#[diesel(table_name = journal)]
struct Row {
    seq: i64,
    at: i64,
    action: String,
    aidant_id: Option<i64>,
    organisation_id: Option<i64>,
    usager_id: Option<i64>,
    mandat_id: Option<i64>,
    autorisation_id: Option<i64>,
    demarche: Option<String>,
    client_id: Option<String>,
    attestation_hash: Option<String>,
    details: String,
    leaf_hash: String,
    chain_hash: String,
    pending_id: Option<i64>,
}

impl From<Row> for Record {
    fn from(r: Row) -> Self {
        Record {
            seq: r.seq,
            at: r.at,
            action: r.action,
            aidant: r.aidant_id,
            organisation: r.organisation_id,
            usager: r.usager_id,
            mandat: r.mandat_id,
            autorisation: r.autorisation_id,
            demarche: r.demarche,
            client: r.client_id,
            attestation_hash: r.attestation_hash,
            details: r.details,
            leaf_hash: r.leaf_hash,
            chain_hash: r.chain_hash,
        }
    }
}

impl Row {
    fn new(r: Record, pending_id: Option<i64>) -> Self {
        Row {
            seq: r.seq,
            at: r.at,
            action: r.action,
            aidant_id: r.aidant,
            organisation_id: r.organisation,
            usager_id: r.usager,
            mandat_id: r.mandat,
            autorisation_id: r.autorisation,
            demarche: r.demarche,
            client_id: r.client,
            attestation_hash: r.attestation_hash,
            details: r.details,
            leaf_hash: r.leaf_hash,
            chain_hash: r.chain_hash,
            pending_id,
        }
    }
}

#[derive(Queryable, Selectable)]
#[diesel(table_name = journal_pending)]
struct PendingRow {
    id: i64,
    at: i64,
    action: String,
    aidant_id: Option<i64>,
    organisation_id: Option<i64>,
    usager_id: Option<i64>,
    mandat_id: Option<i64>,
    autorisation_id: Option<i64>,
    demarche: Option<String>,
    client_id: Option<String>,
    attestation_hash: Option<String>,
    details: String,
}

impl PendingRow {
    fn record(self) -> (i64, Record) {
        (
            self.id,
            Record {
                seq: 0,
                at: self.at,
                action: self.action,
                aidant: self.aidant_id,
                organisation: self.organisation_id,
                usager: self.usager_id,
                mandat: self.mandat_id,
                autorisation: self.autorisation_id,
                demarche: self.demarche,
                client: self.client_id,
                attestation_hash: self.attestation_hash,
                details: self.details,
                leaf_hash: String::new(),
                chain_hash: String::new(),
            },
        )
    }
}

/// Appends entries, in order, inside the caller's write transaction, each at its own
/// `at` when it has one (the clock of its change), at the wall time otherwise.
pub fn append(conn: &mut AnyConnection, entries: &[Entry]) -> Result<(), StoreError> {
    if entries.is_empty() {
        return Ok(());
    }
    let at = Timestamp::now();
    match conn {
        AnyConnection::Sqlite(_) => {
            let records = entries.iter().map(|e| (None, e.record(e.at.unwrap_or(at)))).collect();
            seal_and_insert(conn, records)
        }
        AnyConnection::Postgresql(_) => {
            for e in entries {
                let r = e.record(e.at.unwrap_or(at));
                diesel::insert_into(journal_pending::table)
                    .values((
                        journal_pending::at.eq(r.at),
                        journal_pending::action.eq(r.action),
                        journal_pending::aidant_id.eq(r.aidant),
                        journal_pending::organisation_id.eq(r.organisation),
                        journal_pending::usager_id.eq(r.usager),
                        journal_pending::mandat_id.eq(r.mandat),
                        journal_pending::autorisation_id.eq(r.autorisation),
                        journal_pending::demarche.eq(r.demarche),
                        journal_pending::client_id.eq(r.client),
                        journal_pending::attestation_hash.eq(r.attestation_hash),
                        journal_pending::details.eq(r.details),
                    ))
                    .execute(conn)?;
            }
            crate::tx::note_wrote_pending();
            Ok(())
        }
    }
}

/// Numbers and chains `records` after the head, inserts them and moves the head.
/// The caller holds the sequencing lock (SQLite's write lock, or the advisory lock).
fn seal_and_insert(conn: &mut AnyConnection, records: Vec<(Option<i64>, Record)>) -> Result<(), StoreError> {
    // A write to the head row takes its row lock (and, on SQLite, is covered by the
    // database write lock of BEGIN IMMEDIATE).
    diesel::update(journal_head::table.find(1))
        .set(journal_head::seq.eq(journal_head::seq))
        .execute(conn)?;
    let (mut seq, head_hash) = head(conn)?;
    let mut prev = if seq == 0 {
        GENESIS
    } else {
        parse_hash(&head_hash).ok_or_else(|| StoreError::Seal("tête du journal illisible".into()))?
    };
    let mut rows = Vec::with_capacity(records.len());
    for (pending_id, r) in records {
        seq += 1;
        let r = r.seal(seq, &prev);
        prev = parse_hash(&r.chain_hash).expect("chain hash just computed");
        rows.push(Row::new(r, pending_id));
    }
    match conn {
        AnyConnection::Postgresql(pg) => {
            for chunk in rows.chunks(1_000) {
                diesel::insert_into(journal::table).values(chunk).execute(pg)?;
            }
        }
        AnyConnection::Sqlite(_) => {
            for row in &rows {
                diesel::insert_into(journal::table).values(row).execute(conn)?;
            }
        }
    }
    diesel::update(journal_head::table.find(1))
        .set((journal_head::seq.eq(seq), journal_head::chain_hash.eq(hex::encode(prev))))
        .execute(conn)?;
    crate::tiles::extend(conn, seq)?;
    Ok(())
}

/// Moves every pending entry into the journal, in batches, each in its own
/// transaction under the sequencing lock. Returns how many were numbered.
/// Does nothing on SQLite, where entries are numbered as they are appended.
pub fn sequence_pending(conn: &mut AnyConnection) -> Result<usize, StoreError> {
    if !matches!(conn, AnyConnection::Postgresql(_)) {
        return Ok(0);
    }
    let mut total = 0;
    loop {
        let n = write_tx(conn, |c| {
            c.batch_execute(&format!("SELECT pg_advisory_xact_lock({SEQUENCER_LOCK})"))?;
            let pending: Vec<PendingRow> = journal_pending::table
                .order(journal_pending::id)
                .limit(BATCH)
                .select(PendingRow::as_select())
                .load(c)?;
            if pending.is_empty() {
                return Ok(0);
            }
            let records: Vec<(Option<i64>, Record)> = pending
                .into_iter()
                .map(|p| {
                    let (id, r) = p.record();
                    (Some(id), r)
                })
                .collect();
            let ids: Vec<i64> = records.iter().filter_map(|(id, _)| *id).collect();
            seal_and_insert(c, records)?;
            for chunk in ids.chunks(10_000) {
                diesel::delete(journal_pending::table.filter(journal_pending::id.eq_any(chunk))).execute(c)?;
            }
            Ok(ids.len())
        })?;
        total += n;
        if (n as i64) < BATCH {
            return Ok(total);
        }
    }
}

/// Entries written with their change and not numbered yet (PostgreSQL only).
/// Entries read from `journal_pending` (with their id) and then from `journal` (with the
/// `pending_id` each was moved from), each kept once: the numbered ones, then the pending
/// ones not numbered in between. Read in that order, an entry the sequencer moves
/// meanwhile is seen at least once, so nothing is missed, in a snapshot or not.
pub fn once<T>(pending: Vec<(i64, T)>, numbered: Vec<(Option<i64>, T)>) -> Vec<T> {
    let moved: std::collections::HashSet<i64> = numbered.iter().filter_map(|(p, _)| *p).collect();
    let mut out: Vec<T> = numbered.into_iter().map(|(_, t)| t).collect();
    out.extend(pending.into_iter().filter(|(id, _)| !moved.contains(id)).map(|(_, t)| t));
    out
}

pub fn pending_count(conn: &mut AnyConnection) -> Result<i64, StoreError> {
    Ok(journal_pending::table.count().get_result(conn)?)
}

/// Last sequence number and chain hash recorded by the appender.
pub fn head(conn: &mut AnyConnection) -> Result<(i64, String), StoreError> {
    Ok(journal_head::table
        .find(1)
        .select((journal_head::seq, journal_head::chain_hash))
        .first(conn)?)
}

/// Entries with `seq > after`, at most `limit`, in order.
pub fn page(conn: &mut AnyConnection, after: i64, limit: i64) -> Result<Vec<Record>, StoreError> {
    let rows: Vec<Row> = journal::table
        .filter(journal::seq.gt(after))
        .order(journal::seq.asc())
        .limit(limit)
        .select(Row::as_select())
        .load(conn)?;
    Ok(rows.into_iter().map(Record::from).collect())
}

pub fn count(conn: &mut AnyConnection) -> Result<i64, StoreError> {
    Ok(journal::table.count().get_result(conn)?)
}

/// Outcome of a full verification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verification {
    /// Entries checked and found good.
    pub verified: i64,
    pub head_seq: i64,
    /// Entries written with their change but not numbered yet.
    pub pending: i64,
    pub fault: Option<Fault>,
}

/// Recomputes every leaf and chain hash from the database, in pages, and compares the
/// end with the head. Reports the first bad sequence number.
///
/// Run it on one snapshot ([`crate::Db::read_snapshot`]) when writers are active.
pub fn verify(conn: &mut AnyConnection) -> Result<Verification, StoreError> {
    const PAGE: i64 = 10_000;
    let (head_seq, head_hash) = head(conn)?;
    let pending = pending_count(conn)?;
    let mut v = Verifier::new();
    let mut after = 0;
    'pages: loop {
        let rows = page(conn, after, PAGE)?;
        let Some(last) = rows.last().map(|r| r.seq) else { break };
        for r in &rows {
            if !v.push(r) {
                break 'pages;
            }
        }
        after = last;
    }
    let verified = v.verified();
    let fault = v.finish(head_seq, &head_hash).err();
    Ok(Verification { verified, head_seq, pending, fault })
}

/// What a reader of the journal looks for; every field narrows the search.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    pub aidant: Option<i64>,
    pub usager: Option<i64>,
    pub organisation: Option<i64>,
    pub demarche: Option<String>,
    pub action: Option<String>,
    pub client: Option<String>,
    /// Microseconds since the Unix epoch, inclusive.
    pub from: Option<i64>,
    /// Microseconds since the Unix epoch, exclusive.
    pub until: Option<i64>,
    /// Only entries numbered up to this sequence number.
    pub up_to_seq: Option<i64>,
}

/// Numbered entries matching `f` with `seq > after`, at most `limit`, in order: keyset
/// pagination on the sequence number.
pub fn search(conn: &mut AnyConnection, f: &Filter, after: i64, limit: i64) -> Result<Vec<Record>, StoreError> {
    let mut q = journal::table.filter(journal::seq.gt(after)).into_boxed();
    if let Some(v) = f.aidant {
        q = q.filter(journal::aidant_id.eq(v));
    }
    if let Some(v) = f.usager {
        q = q.filter(journal::usager_id.eq(v));
    }
    if let Some(v) = f.organisation {
        q = q.filter(journal::organisation_id.eq(v));
    }
    if let Some(v) = &f.demarche {
        q = q.filter(journal::demarche.eq(v.clone()));
    }
    if let Some(v) = &f.action {
        q = q.filter(journal::action.eq(v.clone()));
    }
    if let Some(v) = &f.client {
        q = q.filter(journal::client_id.eq(v.clone()));
    }
    if let Some(v) = f.from {
        q = q.filter(journal::at.ge(v));
    }
    if let Some(v) = f.until {
        q = q.filter(journal::at.lt(v));
    }
    if let Some(v) = f.up_to_seq {
        q = q.filter(journal::seq.le(v));
    }
    let rows: Vec<Row> = q.order(journal::seq.asc()).limit(limit).select(Row::as_select()).load(conn)?;
    Ok(rows.into_iter().map(Record::from).collect())
}
