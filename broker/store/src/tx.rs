//! Write transactions, and the journal entries they carry.
//!
//! Entries appended inside a write transaction are kept aside and numbered just before
//! its commit ([`crate::journal::append`]): the journal head's row lock is then the last
//! lock the transaction takes and is held only for the numbering and the commit, so
//! writers never wait on each other's work for it, and lock order cannot invert.

use crate::conn::AnyConnection;
use crate::StoreError;
use broker_core::journal::Record;
use diesel::connection::{AnsiTransactionManager, TransactionManager};
use std::cell::RefCell;

thread_local! {
    /// Entries appended by the write transaction open on this thread, in order.
    static ENTRIES: RefCell<Option<Vec<Record>>> = const { RefCell::new(None) };
}

/// Keeps `records` for the write transaction open on this thread. Gives them back when
/// there is none (the caller then numbers them at once).
pub(crate) fn keep_for_commit(records: Vec<Record>) -> Option<Vec<Record>> {
    ENTRIES.with(|e| match e.borrow_mut().as_mut() {
        Some(kept) => {
            kept.extend(records);
            None
        }
        None => Some(records),
    })
}

/// How many entries the open write transaction holds so far (a mark for [`forget_after`]).
pub(crate) fn kept() -> usize {
    ENTRIES.with(|e| e.borrow().as_ref().map_or(0, Vec::len))
}

/// Forgets the entries kept after `mark`: their part of the transaction was rolled back.
pub(crate) fn forget_after(mark: usize) {
    ENTRIES.with(|e| {
        if let Some(kept) = e.borrow_mut().as_mut() {
            kept.truncate(mark);
        }
    });
}

/// Clears this thread's entries however the transaction ends (a panic included).
struct Kept;

impl Kept {
    fn open() -> Self {
        ENTRIES.with(|e| *e.borrow_mut() = Some(Vec::new()));
        Kept
    }
    fn take(&self) -> Vec<Record> {
        ENTRIES.with(|e| e.borrow_mut().take().unwrap_or_default())
    }
}

impl Drop for Kept {
    fn drop(&mut self) {
        ENTRIES.with(|e| *e.borrow_mut() = None);
    }
}

/// A write transaction: `BEGIN IMMEDIATE` on SQLite (the write lock is taken at once,
/// so concurrent writers queue instead of failing), `BEGIN` on PostgreSQL. Journal
/// entries appended by `f` are numbered and inserted just before the commit.
pub fn write_tx<T>(
    conn: &mut AnyConnection,
    f: impl FnOnce(&mut AnyConnection) -> Result<T, StoreError>,
) -> Result<T, StoreError> {
    match conn {
        AnyConnection::Sqlite(c) => AnsiTransactionManager::begin_transaction_sql(c, "BEGIN IMMEDIATE")?,
        AnyConnection::Postgresql(c) => AnsiTransactionManager::begin_transaction(c)?,
    }
    let kept = Kept::open();
    let out = f(conn).and_then(|v| {
        let entries = kept.take();
        crate::journal::number(conn, entries)?;
        Ok(v)
    });
    drop(kept);
    let end = match (&out, &mut *conn) {
        (Ok(_), AnyConnection::Sqlite(c)) => AnsiTransactionManager::commit_transaction(c),
        (Ok(_), AnyConnection::Postgresql(c)) => AnsiTransactionManager::commit_transaction(c),
        (Err(_), AnyConnection::Sqlite(c)) => AnsiTransactionManager::rollback_transaction(c),
        (Err(_), AnyConnection::Postgresql(c)) => AnsiTransactionManager::rollback_transaction(c),
    };
    match (out, end) {
        (Ok(v), Ok(())) => Ok(v),
        (Ok(_), Err(e)) => Err(e.into()),
        (Err(e), _) => Err(e),
    }
}

/// Runs `f` in a savepoint of the open write transaction: on error, only what `f` did
/// (its entries included) is undone, and `f`'s error is the inner one. The outer error
/// means the savepoint itself failed: the whole transaction is then unusable.
pub(crate) fn savepoint<T>(
    conn: &mut AnyConnection,
    f: impl FnOnce(&mut AnyConnection) -> Result<T, StoreError>,
) -> Result<Result<T, StoreError>, StoreError> {
    let mark = kept();
    match conn {
        AnyConnection::Sqlite(c) => AnsiTransactionManager::begin_transaction(c)?,
        AnyConnection::Postgresql(c) => AnsiTransactionManager::begin_transaction(c)?,
    }
    let out = f(conn);
    let end = match (&out, &mut *conn) {
        (Ok(_), AnyConnection::Sqlite(c)) => AnsiTransactionManager::commit_transaction(c),
        (Ok(_), AnyConnection::Postgresql(c)) => AnsiTransactionManager::commit_transaction(c),
        (Err(_), AnyConnection::Sqlite(c)) => AnsiTransactionManager::rollback_transaction(c),
        (Err(_), AnyConnection::Postgresql(c)) => AnsiTransactionManager::rollback_transaction(c),
    };
    if out.is_err() || end.is_err() {
        forget_after(mark);
    }
    end?;
    Ok(out)
}
