//! Write transactions, and the note that one wrote journal entries still to be numbered
//! (read by `Db::write` to wake the sequencer after the commit).

use crate::conn::AnyConnection;
use crate::StoreError;
use diesel::connection::{AnsiTransactionManager, TransactionManager};
use std::cell::Cell;

thread_local! {
    /// Set when this thread's open transaction wrote pending entries.
    static WROTE_PENDING: Cell<bool> = const { Cell::new(false) };
}

/// Notes that the open transaction on this thread wrote pending journal entries.
pub(crate) fn note_wrote_pending() {
    WROTE_PENDING.with(|w| w.set(true));
}

/// Whether the transaction that just ended on this thread wrote pending entries
/// (and forgets it).
pub(crate) fn take_wrote_pending() -> bool {
    WROTE_PENDING.with(|w| w.replace(false))
}

/// A write transaction: `BEGIN IMMEDIATE` on SQLite (the write lock is taken at once,
/// so concurrent writers queue instead of failing), `BEGIN` on PostgreSQL.
pub fn write_tx<T>(
    conn: &mut AnyConnection,
    f: impl FnOnce(&mut AnyConnection) -> Result<T, StoreError>,
) -> Result<T, StoreError> {
    match conn {
        AnyConnection::Sqlite(c) => AnsiTransactionManager::begin_transaction_sql(c, "BEGIN IMMEDIATE")?,
        AnyConnection::Postgresql(c) => AnsiTransactionManager::begin_transaction(c)?,
    }
    let out = f(conn);
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
