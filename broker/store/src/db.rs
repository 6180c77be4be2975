//! The database handle (pool, breaker, group-commit writer) and migrations for
//! PostgreSQL and SQLite. Connections are in [`crate::conn`], transactions in
//! [`crate::tx`], the writer in [`crate::group`].

pub use crate::conn::{AnyConnection, Backend, DatabaseUrl, Manager, Pool, PooledConnection};
use crate::group::{Job, Reply, Writer};
pub use crate::tx::write_tx;
use crate::StoreError;
use diesel::connection::{AnsiTransactionManager, TransactionManager};
use diesel::r2d2::R2D2Connection;
use diesel_migrations::{embed_migrations, EmbeddedMigrations, MigrationHarness};
use std::any::Any;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub const POSTGRES_MIGRATIONS: EmbeddedMigrations = embed_migrations!("../../migrations/postgres");
pub const SQLITE_MIGRATIONS: EmbeddedMigrations = embed_migrations!("../../migrations/sqlite");

/// The database: a pool, the backend it talks to, and the process's group-commit writer.
#[derive(Clone)]
pub struct Db {
    pool: Pool,
    url: DatabaseUrl,
    writer: Arc<Writer>,
    /// Fails calls at once for a moment after the database could not be reached.
    breaker: Arc<crate::breaker::Breaker>,
}

/// What [`Db::pool_state`] tells.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolState {
    /// Connections open, in use or idle.
    pub connections: u32,
    /// Open connections no call holds.
    pub idle: u32,
    /// The most connections the pool opens.
    pub max: u32,
}

impl PoolState {
    /// Connections held by a call now.
    pub fn in_use(&self) -> u32 {
        self.connections.saturating_sub(self.idle)
    }
}

/// Group-commit writers per process on PostgreSQL ([`crate::group`]). Two, taking turns,
/// were measured no faster at `/userinfo` and slower for journal appends (their batches
/// wait on each other for the head lock).
const GROUP_WRITERS: usize = 1;

/// How long a call waits for a connection before the database counts as unreachable.
pub const CONNECTION_WAIT: Duration = Duration::from_secs(2);
/// How long calls then fail at once ([`crate::breaker`]).
pub const UNREACHABLE_WINDOW: Duration = Duration::from_secs(2);

impl Db {
    /// Opens the pool. Nothing is migrated here: see [`Db::migrate`].
    pub fn open(url: &DatabaseUrl, max_size: u32) -> Result<Self, StoreError> {
        let size = if url.backend == Backend::Sqlite { max_size.min(4) } else { max_size };
        let pool = r2d2::Pool::builder()
            .max_size(size.max(1))
            // No idle connection is opened in the background: a short-lived command
            // must not exit while the pool's thread is still connecting.
            .min_idle(Some(0))
            .connection_timeout(Duration::from_secs(5))
            .test_on_check_out(false)
            .build(Manager(url.clone()))
            .map_err(|e| StoreError::Unavailable(e.to_string()))?;
        let breaker = Arc::new(crate::breaker::Breaker::new(UNREACHABLE_WINDOW));
        let writers = match url.backend {
            Backend::Postgres => GROUP_WRITERS,
            Backend::Sqlite => 1,
        };
        let writer = Arc::new(Writer::start(pool.clone(), breaker.clone(), writers));
        Ok(Self { pool, url: url.clone(), writer, breaker })
    }

    pub fn backend(&self) -> Backend {
        self.url.backend
    }

    pub fn url(&self) -> &DatabaseUrl {
        &self.url
    }

    /// A connection from the pool, waiting [`CONNECTION_WAIT`] at most; none at all for a
    /// moment after the database could not be reached ([`Db::unreachable`]). An idle
    /// connection is taken at once; otherwise the wait is counted
    /// ([`crate::metrics::DB_POOL_WAITS`]).
    pub fn conn(&self) -> Result<PooledConnection, StoreError> {
        if self.breaker.is_open() {
            return Err(StoreError::Unavailable("base de données injoignable (nouvel essai dans un instant)".into()));
        }
        let asked = Instant::now();
        let got = match self.pool.try_get() {
            Some(c) => {
                crate::metrics::pool_wait(asked.elapsed(), true);
                Ok(c)
            }
            None => {
                let got = self.pool.get_timeout(CONNECTION_WAIT);
                crate::metrics::pool_wait(asked.elapsed(), false);
                got
            }
        };
        match got {
            Ok(c) => {
                self.breaker.close();
                Ok(c)
            }
            Err(e) => {
                self.breaker.trip();
                Err(StoreError::Unavailable(e.to_string()))
            }
        }
    }

    /// The pool now: connections open, idle among them, and the most it opens.
    pub fn pool_state(&self) -> PoolState {
        let state = self.pool.state();
        PoolState { connections: state.connections, idle: state.idle_connections, max: self.pool.max_size() }
    }

    /// Whether the database could not be reached a moment ago (calls fail at once).
    pub fn unreachable(&self) -> bool {
        self.breaker.is_open()
    }

    /// A cheap round trip, for readiness checks (fails at once while [`Db::unreachable`]).
    pub fn ping(&self) -> Result<(), StoreError> {
        let mut c = self.conn()?;
        c.ping().map_err(StoreError::from)
    }

    /// A round trip whatever the breaker says, which then opens or closes it: a server's
    /// background check keeps [`Db::unreachable`] true while the database is down, and
    /// false again as soon as it answers.
    pub fn probe(&self) -> Result<(), StoreError> {
        let outcome = self
            .pool
            .get_timeout(CONNECTION_WAIT)
            .map_err(|e| StoreError::Unavailable(e.to_string()))
            .and_then(|mut c| c.ping().map_err(StoreError::from));
        match &outcome {
            Ok(()) => self.breaker.close(),
            Err(_) => self.breaker.trip(),
        }
        outcome
    }

    /// Applies pending migrations, each in its own transaction. Refuses to run on a
    /// schema newer than this binary knows. Returns the versions applied now.
    pub fn migrate(&self) -> Result<Vec<String>, StoreError> {
        let mut c = self.conn()?;
        let done = migrate(&mut c)?;
        let numbered = crate::journal::number_left_pending(&mut c)?;
        if numbered > 0 {
            tracing::info!(entries = numbered, "journal entries left pending by an earlier version numbered");
        }
        Ok(done)
    }

    /// Runs `f` in a write transaction and commits, or rolls back on error. Journal
    /// entries appended by `f` are numbered and committed with the change.
    pub fn write<T>(&self, f: impl FnOnce(&mut AnyConnection) -> Result<T, StoreError>) -> Result<T, StoreError> {
        let mut c = self.conn()?;
        let out = write_tx(&mut c, f);
        drop(c);
        self.noting_lost_connection(out)
    }

    /// Like [`Db::write`], but committed by the group writer with other requests' writes
    /// in one transaction ([`crate::group`]): `f` runs in a savepoint of it, so its error
    /// undoes its own work only. For the journaled writes that come in numbers.
    pub fn write_grouped<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut AnyConnection) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        self.writer.submit(Job::Run(boxed(f), Reply::Wait(tx)));
        unbox(rx.recv().unwrap_or_else(|_| Err(stopped())))
    }

    /// Appends journal entries that record no other change (a sign-in), committed by the
    /// group writer with other requests' writes; returns once they are committed.
    pub fn append_grouped(&self, entries: Vec<broker_core::journal::Entry>) -> Result<(), StoreError> {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        self.writer.submit(Job::Append(entries, Reply::Wait(tx)));
        rx.recv().unwrap_or_else(|_| Err(stopped()))
    }

    /// [`Db::write_grouped`] for a task: awaits the commit instead of blocking a thread.
    pub async fn write_grouped_async<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut AnyConnection) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.writer.submit(Job::Run(boxed(f), Reply::Notify(tx)));
        unbox(rx.await.unwrap_or_else(|_| Err(stopped())))
    }

    /// Transactions and jobs committed by this process's group writer so far.
    pub fn group_stats(&self) -> crate::group::GroupStats {
        self.writer.stats()
    }

    pub(crate) fn submit(&self, job: Job) {
        self.writer.submit(job);
    }

    /// Runs `f` in a read-only transaction that sees one consistent snapshot.
    pub fn read_snapshot<T>(&self, f: impl FnOnce(&mut AnyConnection) -> Result<T, StoreError>) -> Result<T, StoreError> {
        let mut c = self.conn()?;
        match &mut *c {
            AnyConnection::Postgresql(pg) => {
                AnsiTransactionManager::begin_transaction_sql(pg, "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")?
            }
            AnyConnection::Sqlite(sq) => AnsiTransactionManager::begin_transaction_sql(sq, "BEGIN DEFERRED")?,
        }
        let out = f(&mut c);
        match &mut *c {
            AnyConnection::Postgresql(pg) => AnsiTransactionManager::rollback_transaction(pg)?,
            AnyConnection::Sqlite(sq) => AnsiTransactionManager::rollback_transaction(sq)?,
        }
        out
    }

    /// Runs `f` on a connection, outside any explicit transaction.
    pub fn read<T>(&self, f: impl FnOnce(&mut AnyConnection) -> Result<T, StoreError>) -> Result<T, StoreError> {
        let mut c = self.conn()?;
        let out = f(&mut c);
        self.noting_lost_connection(out)
    }

    /// A call that lost its connection (the server went away under it) opens the
    /// breaker, like a connection that could not be made.
    fn noting_lost_connection<T>(&self, out: Result<T, StoreError>) -> Result<T, StoreError> {
        if lost_connection(&out) {
            self.breaker.trip();
        }
        out
    }
}

/// Whether a call failed because the connection went away under it.
pub(crate) fn lost_connection<T>(out: &Result<T, StoreError>) -> bool {
    use diesel::result::{DatabaseErrorKind, Error};
    matches!(
        out,
        Err(StoreError::Database(Error::DatabaseError(DatabaseErrorKind::ClosedConnection | DatabaseErrorKind::UnableToSendCommand, _)))
    )
}

pub(crate) fn stopped() -> StoreError {
    StoreError::Unavailable("le service s'arrête".into())
}

fn boxed<T: Send + 'static>(
    f: impl FnOnce(&mut AnyConnection) -> Result<T, StoreError> + Send + 'static,
) -> crate::group::Work {
    Box::new(move |c: &mut AnyConnection| f(c).map(|v| Box::new(v) as Box<dyn Any + Send>))
}

fn unbox<T: 'static>(out: crate::group::Output) -> Result<T, StoreError> {
    out.map(|v| *v.downcast::<T>().expect("the group writer answers each job with its own value"))
}

pub fn migrations_for(conn: &AnyConnection) -> EmbeddedMigrations {
    match conn {
        AnyConnection::Postgresql(_) => POSTGRES_MIGRATIONS,
        AnyConnection::Sqlite(_) => SQLITE_MIGRATIONS,
    }
}

pub fn migrate(conn: &mut AnyConnection) -> Result<Vec<String>, StoreError> {
    fn run<C: MigrationHarness<B>, B: diesel::backend::Backend>(
        c: &mut C,
        source: EmbeddedMigrations,
    ) -> Result<Vec<String>, StoreError> {
        use diesel::migration::MigrationSource;
        let known: Vec<String> = MigrationSource::<B>::migrations(&source)
            .map_err(|e| StoreError::Migration(e.to_string()))?
            .iter()
            .map(|m| m.name().version().to_string())
            .collect();
        let applied = c.applied_migrations().map_err(|e| StoreError::Migration(e.to_string()))?;
        if let Some(unknown) = applied.iter().map(|v| v.to_string()).find(|v| !known.contains(v)) {
            return Err(StoreError::Migration(format!(
                "la base contient la migration {unknown}, inconnue de ce binaire : mettez à jour le broker"
            )));
        }
        let done = c.run_pending_migrations(source).map_err(|e| StoreError::Migration(e.to_string()))?;
        Ok(done.iter().map(|v| v.to_string()).collect())
    }
    match conn {
        AnyConnection::Postgresql(c) => run(c, POSTGRES_MIGRATIONS),
        AnyConnection::Sqlite(c) => run(c, SQLITE_MIGRATIONS),
    }
}

/// Versions recorded as applied in the database.
pub fn applied_migrations(conn: &mut AnyConnection) -> Result<Vec<String>, StoreError> {
    let v = match conn {
        AnyConnection::Postgresql(c) => c.applied_migrations(),
        AnyConnection::Sqlite(c) => c.applied_migrations(),
    }
    .map_err(|e| StoreError::Migration(e.to_string()))?;
    Ok(v.iter().map(|v| v.to_string()).collect())
}

