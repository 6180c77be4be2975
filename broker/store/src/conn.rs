//! Connections and their pool for PostgreSQL and SQLite, behind one connection type so
//! that every query is written once.

use diesel::connection::SimpleConnection;
use diesel::r2d2::R2D2Connection;
use diesel::{Connection, ConnectionError, PgConnection, SqliteConnection};

#[derive(diesel::MultiConnection)]
pub enum AnyConnection {
    Postgresql(PgConnection),
    Sqlite(SqliteConnection),
}


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

pub struct Manager(pub(crate) DatabaseUrl);

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
