//! The journal appender, numbering and verifier.
//!
//! [`append`] is called inside the write transaction of the change it records (see
//! [`crate::Db::write`] and [`crate::group`]), so an entry exists exactly when its change
//! does. The entries of a transaction are numbered just before its commit
//! ([`crate::tx::write_tx`]): the head row gives the next number and the previous chain
//! hash, and its row lock, taken last and held until the commit, makes numbering one
//! writer at a time across every process. The group writer ([`crate::group`]) commits
//! many requests' entries in one transaction, so concurrent writers share that lock and
//! that commit instead of queueing on them one by one.
//!
//! Numbers are contiguous, and the primary key on `seq` makes a fork impossible even if
//! the lock were bypassed.

use crate::schema::{journal, journal_head, journal_pending};
use crate::{AnyConnection, StoreError};
use broker_core::journal::{parse_hash, Entry, Fault, Record, Verifier, GENESIS};
use broker_core::Timestamp;
use diesel::prelude::*;

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

/// Appends entries, in order, to the caller's write transaction, each at its own `at`
/// when it has one (the clock of its change), at the wall time otherwise. They are
/// numbered just before the commit; outside a write transaction, at once.
pub fn append(conn: &mut AnyConnection, entries: &[Entry]) -> Result<(), StoreError> {
    if entries.is_empty() {
        return Ok(());
    }
    let at = Timestamp::now();
    let records = entries.iter().map(|e| e.record(e.at.unwrap_or(at))).collect();
    match crate::tx::keep_for_commit(records) {
        None => Ok(()),
        Some(records) => number(conn, records),
    }
}

/// Numbers and chains `records` after the head and inserts them, in the caller's
/// transaction (see the module's documentation).
pub(crate) fn number(conn: &mut AnyConnection, records: Vec<Record>) -> Result<(), StoreError> {
    if records.is_empty() {
        return Ok(());
    }
    seal_and_insert(conn, records.into_iter().map(|r| (None, r)).collect())
}

/// Takes the head row's lock (on SQLite, covered by the database write lock of
/// `BEGIN IMMEDIATE`) and reads it, in one round trip.
fn lock_head(conn: &mut AnyConnection) -> Result<(i64, String), StoreError> {
    let lock = diesel::update(journal_head::table.find(1))
        .set(journal_head::seq.eq(journal_head::seq))
        .returning((journal_head::seq, journal_head::chain_hash));
    Ok(match conn {
        AnyConnection::Postgresql(pg) => lock.get_result(pg)?,
        AnyConnection::Sqlite(sq) => lock.get_result(sq)?,
    })
}

/// Numbers and chains `records` after the head, inserts them and moves the head.
/// Tiles are stored as soon as they are full: only when the entries complete one.
fn seal_and_insert(conn: &mut AnyConnection, records: Vec<(Option<i64>, Record)>) -> Result<(), StoreError> {
    let (mut seq, head_hash) = lock_head(conn)?;
    let first = seq + 1;
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
    if crate::tiles::completes_a_tile(first, seq) {
        crate::tiles::extend(conn, seq)?;
    }
    Ok(())
}

/// Numbers the entries an earlier version of the broker left in `journal_pending`
/// (written with their change, numbered by a sequencer after the commit), in the order
/// they were written, and removes them from there. `broker migrate` runs it; this version
/// never writes to that table. Returns how many were numbered.
pub fn number_left_pending(conn: &mut AnyConnection) -> Result<usize, StoreError> {
    crate::tx::write_tx(conn, |c| {
        let pending: Vec<PendingRow> = journal_pending::table.order(journal_pending::id).select(PendingRow::as_select()).load(c)?;
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
        // The table refuses deletions (append-only); a trigger lets through the removal
        // of rows whose number is in the journal.
        for chunk in ids.chunks(10_000) {
            diesel::delete(journal_pending::table.filter(journal_pending::id.eq_any(chunk))).execute(c)?;
        }
        Ok(ids.len())
    })
}

/// Entries left in `journal_pending` by an earlier version and not numbered yet (see
/// [`number_left_pending`]).
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
    /// Entries left unnumbered by an earlier version (see [`number_left_pending`]).
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
