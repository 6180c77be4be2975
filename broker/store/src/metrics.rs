//! What the store records for the operator's metrics, through the `metrics` facade:
//! waits for a database connection and cache errors. Nothing is kept unless the server
//! installed a recorder (`AC_METRICS_LISTEN`). The gauges read at scrape time (pool,
//! journal) are set by the web side from [`crate::Db::pool_state`] and
//! [`crate::Db::group_stats`].

use metrics::{counter, describe_counter, describe_histogram, histogram, Unit};
use std::time::Duration;

/// Connection requests that found no idle connection in the pool and had to wait.
pub const DB_POOL_WAITS: &str = "broker_db_pool_waits_total";
/// Time from a connection request to the connection (or to giving up), every request.
pub const DB_POOL_WAIT_SECONDS: &str = "broker_db_pool_wait_seconds";
/// Failed calls to Redis, by [`CacheErrorKind`].
pub const CACHE_ERRORS: &str = "broker_cache_errors_total";

/// Why a cache call failed: a small fixed set, so the label never carries a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheErrorKind {
    /// Refused at once: the server failed a moment ago ([`crate::breaker`]).
    Unavailable,
    /// No connection could be made, or it went away during the call.
    Connection,
    /// The server did not answer in time.
    Timeout,
    /// The server answered with an error, or with an unexpected reply.
    Reply,
}

impl CacheErrorKind {
    pub const ALL: [CacheErrorKind; 4] = [Self::Unavailable, Self::Connection, Self::Timeout, Self::Reply];

    pub fn key(self) -> &'static str {
        match self {
            Self::Unavailable => "unavailable",
            Self::Connection => "connection",
            Self::Timeout => "timeout",
            Self::Reply => "reply",
        }
    }

    pub(crate) fn of(e: &redis::RedisError) -> Self {
        if e.is_timeout() {
            Self::Timeout
        } else if e.is_io_error() || e.is_connection_dropped() || e.is_connection_refusal() {
            Self::Connection
        } else {
            Self::Reply
        }
    }
}

/// Describes the store's families and makes every counter appear at zero, so that a
/// scrape shows them before the first event.
pub fn describe() {
    describe_counter!(DB_POOL_WAITS, "Database connection requests that found no idle connection in the pool");
    describe_histogram!(DB_POOL_WAIT_SECONDS, Unit::Seconds, "Time spent waiting for a database connection from the pool");
    describe_counter!(CACHE_ERRORS, "Failed calls to the Redis cache, by kind");
    counter!(DB_POOL_WAITS).absolute(0);
    for kind in CacheErrorKind::ALL {
        counter!(CACHE_ERRORS, "kind" => kind.key()).absolute(0);
    }
}

pub(crate) fn pool_wait(waited: Duration, found_idle: bool) {
    if !found_idle {
        counter!(DB_POOL_WAITS).increment(1);
    }
    histogram!(DB_POOL_WAIT_SECONDS).record(waited.as_secs_f64());
}

pub(crate) fn cache_error(kind: CacheErrorKind) {
    counter!(CACHE_ERRORS, "kind" => kind.key()).increment(1);
}
