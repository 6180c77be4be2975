//! Test databases: a fresh PostgreSQL database per test (dropped at the end) and a
//! fresh SQLite file. PostgreSQL is required: an unreachable server fails the test.

pub mod authenticator;
pub mod smtp;

use broker_store::{AnyConnection, DatabaseUrl, Db, StoreError};
use diesel::connection::SimpleConnection;
use diesel::{Connection, PgConnection};

/// The server the tests create their databases on. Loopback connections go without
/// TLS and GSSAPI: libpq's OpenSSL and Kerberos state is torn down at process exit
/// while a pool thread may still be connecting, which crashes a finished test.
pub fn pg_admin_url() -> String {
    let url = std::env::var("AC_TEST_PG_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
    if url.contains('?') {
        url
    } else {
        format!("{url}?sslmode=disable&gssencmode=disable")
    }
}

/// The URL of database `name` on the test server, with the admin URL's parameters.
pub fn pg_database_url(name: &str) -> String {
    let admin = pg_admin_url();
    let (base, query) = admin.split_once('?').unwrap_or((&admin, ""));
    let Some((server, _)) = base.rsplit_once('/') else { panic!("bad AC_TEST_PG_URL") };
    if query.is_empty() {
        format!("{server}/{name}")
    } else {
        format!("{server}/{name}?{query}")
    }
}

pub fn redis_url() -> String {
    std::env::var("AC_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

pub struct TestDb {
    pub db: Db,
    pub url: String,
    pg_name: Option<String>,
    _dir: Option<tempfile::TempDir>,
}

impl TestDb {
    pub fn name(&self) -> &'static str {
        self.db.backend().name()
    }

    /// A fresh, migrated PostgreSQL database; dropped with the value.
    pub fn postgres() -> TestDb {
        let t = TestDb::postgres_url_only();
        t.db.migrate().unwrap();
        t
    }

    /// A fresh, empty PostgreSQL database (not migrated); dropped with the value.
    pub fn postgres_url_only() -> TestDb {
        Self::postgres_unmigrated(12)
    }

    /// A fresh, migrated PostgreSQL database with a pool of `size` connections.
    pub fn postgres_with_pool(size: u32) -> TestDb {
        let t = Self::postgres_unmigrated(size);
        t.db.migrate().unwrap();
        t
    }

    fn postgres_unmigrated(size: u32) -> TestDb {
        let name = format!("ac_test_{}", hex::encode(rand::random::<[u8; 6]>()));
        let admin = pg_admin_url();
        let mut c = PgConnection::establish(&admin)
            .unwrap_or_else(|e| panic!("PostgreSQL is required for the tests ({admin}): {e}"));
        c.batch_execute(&format!("CREATE DATABASE {name}")).unwrap();
        let url = pg_database_url(&name);
        let db = Db::open(&DatabaseUrl::parse(&url), size).unwrap();
        TestDb { db, url, pg_name: Some(name), _dir: None }
    }

    pub fn sqlite() -> TestDb {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("t.sqlite3").display());
        let db = Db::open(&DatabaseUrl::parse(&url), 4).unwrap();
        db.migrate().unwrap();
        TestDb { db, url, pg_name: None, _dir: Some(dir) }
    }

    /// Both backends, SQLite first.
    pub fn both() -> Vec<TestDb> {
        vec![TestDb::sqlite(), TestDb::postgres()]
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if let Some(name) = &self.pg_name {
            if let Ok(mut c) = PgConnection::establish(&pg_admin_url()) {
                let _ = c.batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"));
            }
        }
    }
}

/// Reads the journal in one snapshot (every entry committed so far is numbered).
pub fn journal<T>(db: &Db, f: impl FnOnce(&mut AnyConnection) -> Result<T, StoreError>) -> Result<T, StoreError> {
    db.read_snapshot(f)
}
