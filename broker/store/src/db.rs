//! Connections, pool, transactions and migrations for PostgreSQL and SQLite, behind
//! one connection type so that every query is written once.

use crate::StoreError;
use diesel::connection::{AnsiTransactionManager, SimpleConnection, TransactionManager};
use diesel::r2d2::R2D2Connection;
use diesel::{Connection, ConnectionError, PgConnection, SqliteConnection};
use diesel_migrations::{embed_migrations, EmbeddedMigrations, MigrationHarness};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

#[derive(diesel::MultiConnection)]
pub enum AnyConnection {
    Postgresql(PgConnection),
    Sqlite(SqliteConnection),
}

pub const POSTGRES_MIGRATIONS: EmbeddedMigrations = embed_migrations!("../../migrations/postgres");
pub const SQLITE_MIGRATIONS: EmbeddedMigrations = embed_migrations!("../../migrations/sqlite");

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Postgres,
    Sqlite,
}

impl Backend {
    pub const fn name(self) -> &'static str {
        match self {
            Backend::Postgres => "postgres",
            Backend::Sqlite => "sqlite",
        }
    }
}

/// Where the data lives: a `postgres://` URL, or a SQLite file path
/// (`sqlite://path` or a plain path).
#[derive(Clone)]
pub struct DatabaseUrl {
    pub backend: Backend,
    target: String,
}

impl std::fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "DatabaseUrl({}, {})", self.backend.name(), self.redacted())
    }
}

impl DatabaseUrl {
    pub fn parse(raw: &str) -> Self {
        let raw = raw.trim();
        if raw.starts_with("postgres://") || raw.starts_with("postgresql://") {
            // The broker never authenticates to PostgreSQL with Kerberos: unless the URL
            // asks for it, libpq is kept from loading GSSAPI on every connection.
            let target = if raw.contains("gssencmode=") {
                raw.to_owned()
            } else if raw.contains('?') {
                format!("{raw}&gssencmode=disable")
            } else {
                format!("{raw}?gssencmode=disable")
            };
            Self { backend: Backend::Postgres, target }
        } else {
            let path = raw.strip_prefix("sqlite://").unwrap_or(raw);
            Self { backend: Backend::Sqlite, target: path.to_owned() }
        }
    }

    pub fn target(&self) -> &str {
        &self.target
    }

    /// The URL without its password, for messages.
    pub fn redacted(&self) -> String {
        match url::Url::parse(&self.target) {
            Ok(mut u) if self.backend == Backend::Postgres => {
                if u.password().is_some() {
                    let _ = u.set_password(Some("***"));
                }
                u.to_string()
            }
            _ => self.target.clone(),
        }
    }

    pub fn establish(&self) -> Result<AnyConnection, ConnectionError> {
        match self.backend {
            Backend::Postgres => PgConnection::establish(&self.target).map(AnyConnection::Postgresql),
            Backend::Sqlite => {
                if let Some(dir) = std::path::Path::new(&self.target).parent() {
                    if !dir.as_os_str().is_empty() {
                        std::fs::create_dir_all(dir)
                            .map_err(|e| ConnectionError::BadConnection(e.to_string()))?;
                    }
                }
                let mut c = SqliteConnection::establish(&self.target)?;
                // WAL lets readers run beside the writer; FULL makes every commit durable.
                c.batch_execute(
                    "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; \
                     PRAGMA foreign_keys = ON; PRAGMA busy_timeout = 10000;",
                )
                .map_err(|e| ConnectionError::BadConnection(e.to_string()))?;
                Ok(AnyConnection::Sqlite(c))
            }
        }
    }
}

pub struct Manager(DatabaseUrl);

impl r2d2::ManageConnection for Manager {
    type Connection = AnyConnection;
    type Error = ConnectionError;

    fn connect(&self) -> Result<AnyConnection, ConnectionError> {
        self.0.establish()
    }

    fn is_valid(&self, conn: &mut AnyConnection) -> Result<(), ConnectionError> {
        conn.ping().map_err(|e| ConnectionError::BadConnection(e.to_string()))
    }

    fn has_broken(&self, conn: &mut AnyConnection) -> bool {
        conn.is_broken()
    }
}

pub type Pool = r2d2::Pool<Manager>;
pub type PooledConnection = r2d2::PooledConnection<Manager>;

/// The database: a pool, the backend it talks to, and on PostgreSQL the process's
/// journal sequencer.
#[derive(Clone)]
pub struct Db {
    pool: Pool,
    url: DatabaseUrl,
    sequencer: Option<Arc<SequencerHandle>>,
    /// Fails calls at once for a moment after the database could not be reached.
    breaker: Arc<crate::breaker::Breaker>,
}

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
        let sequencer = (url.backend == Backend::Postgres).then(|| Arc::new(SequencerHandle::start(pool.clone())));
        Ok(Self { pool, url: url.clone(), sequencer, breaker: Arc::new(crate::breaker::Breaker::new(UNREACHABLE_WINDOW)) })
    }

    /// Also sequence, every second, entries left pending by another process that
    /// stopped between its commit and its sequencing (a long-running server does this).
    pub fn sweep_pending_journal_entries(&self) {
        if let Some(s) = &self.sequencer {
            s.seq.sweep.store(true, Ordering::Relaxed);
        }
    }

    /// Waits until every journal entry committed before this call has its sequence
    /// number. Readers that must see their own writes in the journal call it first.
    pub fn flush_journal(&self) {
        if let Some(s) = &self.sequencer {
            s.seq.flush();
        }
    }

    pub fn backend(&self) -> Backend {
        self.url.backend
    }

    pub fn url(&self) -> &DatabaseUrl {
        &self.url
    }

    /// A connection from the pool, waiting [`CONNECTION_WAIT`] at most; none at all for a
    /// moment after the database could not be reached ([`Db::unreachable`]).
    pub fn conn(&self) -> Result<PooledConnection, StoreError> {
        if self.breaker.is_open() {
            return Err(StoreError::Unavailable("base de données injoignable (nouvel essai dans un instant)".into()));
        }
        match self.pool.get_timeout(CONNECTION_WAIT) {
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
        migrate(&mut c)
    }

    /// Runs `f` in a write transaction and commits, or rolls back on error. Journal
    /// entries appended by `f` are committed with the change; on PostgreSQL they get
    /// their sequence number a moment later (see [`Db::flush_journal`]).
    pub fn write<T>(&self, f: impl FnOnce(&mut AnyConnection) -> Result<T, StoreError>) -> Result<T, StoreError> {
        let mut c = self.conn()?;
        crate::journal::take_wrote_pending();
        let out = write_tx(&mut c, f);
        let wrote_pending = crate::journal::take_wrote_pending();
        drop(c);
        let v = self.noting_lost_connection(out)?;
        if let (true, Some(s)) = (wrote_pending, &self.sequencer) {
            s.seq.notify();
        }
        Ok(v)
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
        use diesel::result::{DatabaseErrorKind, Error};
        if let Err(StoreError::Database(Error::DatabaseError(DatabaseErrorKind::ClosedConnection | DatabaseErrorKind::UnableToSendCommand, _))) = &out {
            self.breaker.trip();
        }
        out
    }
}

/// The journal sequencer of one process (PostgreSQL): a thread that numbers pending
/// entries. Writers wake it after their commit and go on; each pass numbers every entry
/// committed before it started, in one transaction, so one commit serves many writers.
struct Sequencer {
    state: Mutex<SeqState>,
    cv: Condvar,
    sweep: AtomicBool,
}

#[derive(Default)]
struct SeqState {
    requested: u64,
    completed: u64,
    shutdown: bool,
}

impl Sequencer {
    fn lock(&self) -> std::sync::MutexGuard<'_, SeqState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Asks for a pass, without waiting for it.
    fn notify(&self) {
        self.lock().requested += 1;
        self.cv.notify_all();
    }

    /// Asks for a pass and waits until it has run.
    fn flush(&self) {
        let mut st = self.lock();
        st.requested += 1;
        let target = st.requested;
        self.cv.notify_all();
        while st.completed < target && !st.shutdown {
            st = self.cv.wait(st).unwrap_or_else(|p| p.into_inner());
        }
    }

    fn run(&self, pool: Pool) {
        loop {
            let (target, last) = {
                let mut st = self.lock();
                while st.requested == st.completed && !st.shutdown {
                    let (next, timeout) = self.cv.wait_timeout(st, Duration::from_secs(1)).unwrap_or_else(|p| p.into_inner());
                    st = next;
                    if timeout.timed_out() && self.sweep.load(Ordering::Relaxed) {
                        break;
                    }
                }
                (st.requested, st.shutdown)
            };
            let result = pool
                .get()
                .map_err(|e| StoreError::Unavailable(e.to_string()))
                .and_then(|mut c| crate::journal::sequence_pending(&mut c));
            if let Err(e) = &result {
                // The entries stay pending with their change; the next pass numbers them.
                tracing::error!(error = %e, "journal sequencing failed");
            }
            {
                let mut st = self.lock();
                st.completed = st.completed.max(target);
                self.cv.notify_all();
            }
            if last {
                return;
            }
            if result.is_err() {
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
}

/// Owns the sequencer thread. When the last clone of the `Db` goes, the thread runs a
/// final pass and stops, so a short-lived command leaves nothing pending.
struct SequencerHandle {
    seq: Arc<Sequencer>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl SequencerHandle {
    fn start(pool: Pool) -> Self {
        let seq = Arc::new(Sequencer { state: Mutex::new(SeqState::default()), cv: Condvar::new(), sweep: AtomicBool::new(false) });
        let worker = seq.clone();
        let thread = std::thread::Builder::new()
            .name("journal-sequencer".into())
            .spawn(move || worker.run(pool))
            .expect("spawn the journal sequencer");
        Self { seq, thread: Mutex::new(Some(thread)) }
    }
}

impl Drop for SequencerHandle {
    fn drop(&mut self) {
        self.seq.lock().shutdown = true;
        self.seq.cv.notify_all();
        if let Some(t) = self.thread.lock().unwrap_or_else(|p| p.into_inner()).take() {
            let _ = t.join();
        }
    }
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
