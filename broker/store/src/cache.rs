//! Short-lived state (codes, ceremonies, sessions, rate-limit counters): Redis when
//! `REDIS_URL` is set, in-process otherwise. Callers hash secret keys before use.

use crate::metrics::{self, CacheErrorKind};
use crate::redemption::{self, Redeemed, Redemption, Steps};
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Mutex;
use std::time::{Duration, Instant};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use tokio::runtime::Id as RuntimeId;

/// What an async cache call returns.
pub type CacheFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, CacheError>> + Send + 'a>>;

#[derive(Debug, thiserror::Error)]
#[error("cache injoignable : {0}")]
pub struct CacheError(pub String);

impl From<redis::RedisError> for CacheError {
    fn from(e: redis::RedisError) -> Self {
        CacheError(e.to_string())
    }
}

/// Blocking calls: from async code, run them on the blocking pool (except
/// [`Cache::redeem_async`]).
pub trait Cache: Send + Sync {
    /// Stores `value` under `key` for `ttl`, replacing any previous value.
    fn put(&self, key: &str, value: &[u8], ttl: Duration) -> Result<(), CacheError>;
    /// Reads without consuming.
    fn get(&self, key: &str) -> Result<Option<Vec<u8>>, CacheError>;
    /// Reads and deletes atomically: of several concurrent callers, one gets the value.
    fn take(&self, key: &str) -> Result<Option<Vec<u8>>, CacheError>;
    /// Increments a counter; the TTL starts with the first increment.
    fn incr(&self, key: &str, ttl: Duration) -> Result<i64, CacheError>;
    fn delete(&self, key: &str) -> Result<(), CacheError>;
    fn ping(&self) -> Result<(), CacheError>;
    fn kind(&self) -> &'static str;
    /// Whether the cache could not be reached a moment ago (calls then fail at once).
    fn unreachable(&self) -> bool {
        false
    }

    /// A round trip whatever happened before; a cache that fails fast after a failure
    /// ([`Cache::unreachable`]) opens or closes its breaker from the outcome.
    fn probe(&self) -> Result<(), CacheError> {
        self.ping()
    }

    /// Stores `value` under `key` for `ttl` only if `key` holds a live value; answers
    /// whether it did. Atomic on Redis (`SET … XX`) and in process; this default is not.
    fn replace(&self, key: &str, value: &[u8], ttl: Duration) -> Result<bool, CacheError> {
        if self.get(key)?.is_none() {
            return Ok(false);
        }
        self.put(key, value, ttl)?;
        Ok(true)
    }

    /// Redeems an authorization code in one step ([`crate::redemption`]): atomic on
    /// Redis (one script, one round trip) and in process (one lock); this default, made
    /// of the calls above, is neither, and serves wrappers of a cache only.
    fn redeem(&self, r: &Redemption) -> Result<Redeemed, CacheError> {
        redemption::run(&mut Calls(self), r)
    }

    /// [`Cache::redeem`] from async code, without the blocking pool: on Redis over an
    /// async connection. This default runs [`Cache::redeem`] inline, which suits a cache
    /// doing no I/O (the in-process one); a cache that does I/O overrides it.
    fn redeem_async<'a>(&'a self, r: Redemption) -> CacheFuture<'a, Redeemed> {
        Box::pin(std::future::ready(self.redeem(&r)))
    }

    /// [`Cache::get`] from async code, as [`Cache::redeem_async`]: this default runs
    /// inline; a cache that does I/O overrides it.
    fn get_async<'a>(&'a self, key: &'a str) -> CacheFuture<'a, Option<Vec<u8>>> {
        Box::pin(std::future::ready(self.get(key)))
    }
}

/// A cache's own calls as the steps of a redemption.
struct Calls<'c, C: ?Sized>(&'c C);

impl<C: Cache + ?Sized> Steps for Calls<'_, C> {
    fn take(&mut self, key: &str) -> Result<Option<Vec<u8>>, CacheError> {
        self.0.take(key)
    }
    fn get(&mut self, key: &str) -> Result<Option<Vec<u8>>, CacheError> {
        self.0.get(key)
    }
    fn put(&mut self, key: &str, value: &[u8], ttl: Duration) -> Result<(), CacheError> {
        self.0.put(key, value, ttl)
    }
    fn delete(&mut self, key: &str) -> Result<bool, CacheError> {
        let live = self.0.get(key)?.is_some();
        self.0.delete(key)?;
        Ok(live)
    }
}

type Entries = HashMap<String, (Vec<u8>, Instant)>;

/// The in-process map, under its lock, as the steps of a redemption.
struct Locked<'m>(&'m mut Entries);

impl Steps for Locked<'_> {
    fn take(&mut self, key: &str) -> Result<Option<Vec<u8>>, CacheError> {
        Ok(self.0.remove(key).filter(|(_, exp)| *exp > Instant::now()).map(|(v, _)| v))
    }
    fn get(&mut self, key: &str) -> Result<Option<Vec<u8>>, CacheError> {
        Ok(self.0.get(key).filter(|(_, exp)| *exp > Instant::now()).map(|(v, _)| v.clone()))
    }
    fn put(&mut self, key: &str, value: &[u8], ttl: Duration) -> Result<(), CacheError> {
        self.0.insert(key.to_owned(), (value.to_vec(), Instant::now() + ttl));
        Ok(())
    }
    fn delete(&mut self, key: &str) -> Result<bool, CacheError> {
        Ok(self.0.remove(key).is_some_and(|(_, exp)| exp > Instant::now()))
    }
}

#[derive(Default)]
pub struct InProcess {
    entries: Mutex<Entries>,
}

impl InProcess {
    pub fn new() -> Self {
        Self::default()
    }

    fn with<T>(&self, f: impl FnOnce(&mut Entries) -> T) -> T {
        let mut map = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        if map.len() > 10_000 {
            map.retain(|_, (_, exp)| *exp > now);
        }
        f(&mut map)
    }
}

impl Cache for InProcess {
    fn put(&self, key: &str, value: &[u8], ttl: Duration) -> Result<(), CacheError> {
        self.with(|m| m.insert(key.to_owned(), (value.to_vec(), Instant::now() + ttl)));
        Ok(())
    }

    fn get(&self, key: &str) -> Result<Option<Vec<u8>>, CacheError> {
        Ok(self.with(|m| m.get(key).filter(|(_, exp)| *exp > Instant::now()).map(|(v, _)| v.clone())))
    }

    fn replace(&self, key: &str, value: &[u8], ttl: Duration) -> Result<bool, CacheError> {
        Ok(self.with(|m| match m.get_mut(key) {
            Some(entry) if entry.1 > Instant::now() => {
                *entry = (value.to_vec(), Instant::now() + ttl);
                true
            }
            _ => false,
        }))
    }

    fn take(&self, key: &str) -> Result<Option<Vec<u8>>, CacheError> {
        Ok(self.with(|m| m.remove(key).filter(|(_, exp)| *exp > Instant::now()).map(|(v, _)| v)))
    }

    fn incr(&self, key: &str, ttl: Duration) -> Result<i64, CacheError> {
        Ok(self.with(|m| {
            let now = Instant::now();
            let entry = m.entry(key.to_owned()).or_insert_with(|| (b"0".to_vec(), now + ttl));
            if entry.1 <= now {
                *entry = (b"0".to_vec(), now + ttl);
            }
            let n = std::str::from_utf8(&entry.0).ok().and_then(|s| s.parse::<i64>().ok()).unwrap_or(0) + 1;
            entry.0 = n.to_string().into_bytes();
            n
        }))
    }

    fn delete(&self, key: &str) -> Result<(), CacheError> {
        self.with(|m| m.remove(key));
        Ok(())
    }

    fn ping(&self) -> Result<(), CacheError> {
        Ok(())
    }

    fn kind(&self) -> &'static str {
        "in-process"
    }

    fn redeem(&self, r: &Redemption) -> Result<Redeemed, CacheError> {
        self.with(|m| redemption::run(&mut Locked(m), r))
    }
}

pub struct Redis {
    pool: r2d2::Pool<redis::Client>,
    prefix: String,
    breaker: crate::breaker::Breaker,
    client: redis::Client,
    /// One multiplexed async connection per Tokio runtime: each server worker runs its
    /// own, and a connection's task lives on the runtime that opened it.
    async_conns: Mutex<HashMap<RuntimeId, ConnectionManager>>,
    /// Loaded once by the server, then called by its SHA-1 (`EVALSHA`).
    redeem_script: redis::Script,
}

/// How long a call waits for a Redis connection before the cache counts as unreachable.
pub const REDIS_CONNECTION_WAIT: Duration = Duration::from_secs(1);

/// Above this many runtimes with an async connection, the connections are dropped (and
/// reopened by the runtimes still running).
const ASYNC_CONNS_SWEEP: usize = 64;

impl Redis {
    /// Connects lazily: an unreachable server makes calls fail, not start-up.
    pub fn new(url: &str, prefix: &str) -> Result<Self, CacheError> {
        let client = redis::Client::open(url)?;
        let client_for_async = client.clone();
        let pool = r2d2::Pool::builder()
            .max_size(16)
            .min_idle(Some(0))
            .connection_timeout(REDIS_CONNECTION_WAIT)
            // No PING before every command: a broken connection fails its command and
            // is dropped by the pool (`has_broken`).
            .test_on_check_out(false)
            .build_unchecked(client);
        Ok(Self {
            pool,
            prefix: prefix.to_owned(),
            breaker: crate::breaker::Breaker::new(crate::db::UNREACHABLE_WINDOW),
            client: client_for_async,
            async_conns: Mutex::new(HashMap::new()),
            redeem_script: redis::Script::new(redemption::REDEEM_SCRIPT),
        })
    }

    /// The calling runtime's async connection, opened on first use (the caller must run
    /// on a Tokio runtime). Fails at once while the breaker is open. Connecting and each
    /// answer wait at most [`REDIS_CONNECTION_WAIT`].
    fn async_conn(&self) -> Result<(RuntimeId, ConnectionManager), CacheError> {
        if self.breaker.is_open() {
            return Err(refused());
        }
        let runtime = tokio::runtime::Handle::try_current().map_err(|e| CacheError(e.to_string()))?.id();
        let mut conns = self.async_conns.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = conns.get(&runtime) {
            return Ok((runtime, c.clone()));
        }
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(REDIS_CONNECTION_WAIT))
            .set_response_timeout(Some(REDIS_CONNECTION_WAIT))
            .set_number_of_retries(0);
        let c = ConnectionManager::new_lazy_with_config(self.client.clone(), config).map_err(|e| self.failed(e))?;
        if conns.len() >= ASYNC_CONNS_SWEEP {
            // Runtimes come and go (tests, tools): the live ones reconnect on next use.
            conns.clear();
        }
        conns.insert(runtime, c.clone());
        Ok((runtime, c))
    }

    /// Drops a runtime's async connection after a failure: its next call opens a new one.
    fn forget_async_conn(&self, runtime: RuntimeId) {
        self.async_conns.lock().unwrap_or_else(|p| p.into_inner()).remove(&runtime);
    }

    fn redeem_invocation(&self, r: &Redemption) -> redis::ScriptInvocation<'_> {
        let mut call = self.redeem_script.prepare_invoke();
        call.key(self.k(&r.code_key))
            .key(self.k(&r.tombstone_key))
            .key(self.k(&r.token_key))
            .arg(r.now.micros())
            .arg(&r.binding)
            .arg(ttl_ms(r.token_ttl))
            .arg(&r.token_tail)
            .arg(ttl_ms(r.tombstone_ttl))
            .arg(&self.prefix);
        call
    }

    fn conn(&self) -> Result<r2d2::PooledConnection<redis::Client>, CacheError> {
        if self.breaker.is_open() {
            return Err(refused());
        }
        match self.pool.get() {
            Ok(c) => {
                self.breaker.close();
                Ok(c)
            }
            Err(e) => {
                self.breaker.trip();
                Err(no_connection(e))
            }
        }
    }

    fn k(&self, key: &str) -> String {
        format!("{}{}", self.prefix, key)
    }

    /// A command that failed because the server went away opens the breaker. Every
    /// failure is counted ([`crate::metrics::CACHE_ERRORS`]).
    fn failed(&self, e: redis::RedisError) -> CacheError {
        let kind = CacheErrorKind::of(&e);
        metrics::cache_error(kind);
        if kind != CacheErrorKind::Reply {
            self.breaker.trip();
        }
        e.into()
    }
}

/// A call refused at once while the breaker is open.
fn refused() -> CacheError {
    metrics::cache_error(CacheErrorKind::Unavailable);
    CacheError("cache injoignable (nouvel essai dans un instant)".into())
}

/// The pool could not give a connection in time.
fn no_connection(e: r2d2::Error) -> CacheError {
    metrics::cache_error(CacheErrorKind::Connection);
    CacheError(e.to_string())
}

/// Redis answered something this code does not expect.
fn unexpected(what: String) -> CacheError {
    metrics::cache_error(CacheErrorKind::Reply);
    CacheError(what)
}

fn ttl_ms(ttl: Duration) -> u64 {
    u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1)
}

impl Cache for Redis {
    fn put(&self, key: &str, value: &[u8], ttl: Duration) -> Result<(), CacheError> {
        let mut c = self.conn()?;
        redis::cmd("SET").arg(self.k(key)).arg(value).arg("PX").arg(ttl_ms(ttl)).query::<()>(&mut *c).map_err(|e| self.failed(e))?;
        Ok(())
    }

    fn get(&self, key: &str) -> Result<Option<Vec<u8>>, CacheError> {
        let mut c = self.conn()?;
        redis::cmd("GET").arg(self.k(key)).query(&mut *c).map_err(|e| self.failed(e))
    }

    fn replace(&self, key: &str, value: &[u8], ttl: Duration) -> Result<bool, CacheError> {
        let mut c = self.conn()?;
        let done: Option<String> = redis::cmd("SET").arg(self.k(key)).arg(value).arg("PX").arg(ttl_ms(ttl)).arg("XX").query(&mut *c).map_err(|e| self.failed(e))?;
        Ok(done.is_some())
    }

    fn take(&self, key: &str) -> Result<Option<Vec<u8>>, CacheError> {
        let mut c = self.conn()?;
        redis::cmd("GETDEL").arg(self.k(key)).query(&mut *c).map_err(|e| self.failed(e))
    }

    fn incr(&self, key: &str, ttl: Duration) -> Result<i64, CacheError> {
        let mut c = self.conn()?;
        let k = self.k(key);
        let (n,): (i64,) = redis::pipe()
            .atomic()
            .cmd("INCR").arg(&k)
            .cmd("PEXPIRE").arg(&k).arg(ttl_ms(ttl)).arg("NX").ignore()
            .query(&mut *c).map_err(|e| self.failed(e))?;
        Ok(n)
    }

    fn delete(&self, key: &str) -> Result<(), CacheError> {
        let mut c = self.conn()?;
        redis::cmd("DEL").arg(self.k(key)).query::<()>(&mut *c).map_err(|e| self.failed(e))?;
        Ok(())
    }

    fn ping(&self) -> Result<(), CacheError> {
        let mut c = self.conn()?;
        let pong: String = redis::cmd("PING").query(&mut *c).map_err(|e| self.failed(e))?;
        if pong == "PONG" { Ok(()) } else { Err(unexpected(format!("réponse inattendue : {pong}"))) }
    }

    fn kind(&self) -> &'static str {
        "redis"
    }

    fn unreachable(&self) -> bool {
        self.breaker.is_open()
    }

    fn probe(&self) -> Result<(), CacheError> {
        let outcome = self.pool.get().map_err(no_connection).and_then(|mut c| {
            let pong: String = redis::cmd("PING").query(&mut *c).map_err(|e| self.failed(e))?;
            if pong == "PONG" { Ok(()) } else { Err(unexpected(format!("réponse inattendue : {pong}"))) }
        });
        match &outcome {
            Ok(()) => self.breaker.close(),
            Err(_) => self.breaker.trip(),
        }
        outcome
    }

    fn redeem(&self, r: &Redemption) -> Result<Redeemed, CacheError> {
        let mut c = self.conn()?;
        let out = self.redeem_invocation(r).invoke(&mut *c).map_err(|e| self.failed(e))?;
        redeemed(out)
    }

    fn get_async<'a>(&'a self, key: &'a str) -> CacheFuture<'a, Option<Vec<u8>>> {
        Box::pin(async move {
            let (runtime, mut c) = self.async_conn()?;
            let out = redis::cmd("GET").arg(self.k(key)).query_async::<Option<Vec<u8>>>(&mut c).await;
            self.settle(runtime, out)
        })
    }

    fn redeem_async<'a>(&'a self, r: Redemption) -> CacheFuture<'a, Redeemed> {
        Box::pin(async move {
            let (runtime, mut c) = self.async_conn()?;
            let out = self.redeem_invocation(&r).invoke_async(&mut c).await;
            redeemed(self.settle(runtime, out)?)
        })
    }
}

impl Redis {
    /// The outcome of a call on `runtime`'s async connection: an answer closes the
    /// breaker; an error drops the connection (the next call opens another).
    fn settle<T>(&self, runtime: RuntimeId, out: redis::RedisResult<T>) -> Result<T, CacheError> {
        match out {
            Ok(v) => {
                self.breaker.close();
                Ok(v)
            }
            Err(e) => {
                self.forget_async_conn(runtime);
                Err(self.failed(e))
            }
        }
    }
}

/// What [`crate::redemption::REDEEM_SCRIPT`] returns, as a [`Redeemed`].
fn redeemed((status, entry, revoked): (i64, Option<Vec<u8>>, i64)) -> Result<Redeemed, CacheError> {
    match (status, entry) {
        (0, _) => Ok(Redeemed::Unknown),
        (1, Some(e)) => Ok(Redeemed::Issued(e)),
        (2, Some(e)) => Ok(Redeemed::Refused(e)),
        (3, _) => Ok(Redeemed::Replayed { revoked: revoked > 0 }),
        (s, _) => Err(unexpected(format!("réponse inattendue du script : {s}"))),
    }
}
