//! Short-lived state (codes, ceremonies, sessions, rate-limit counters): Redis when
//! `REDIS_URL` is set, in-process otherwise. Callers hash secret keys before use.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

#[derive(Debug, thiserror::Error)]
#[error("cache injoignable : {0}")]
pub struct CacheError(pub String);

impl From<redis::RedisError> for CacheError {
    fn from(e: redis::RedisError) -> Self {
        CacheError(e.to_string())
    }
}

/// Blocking calls: from async code, run them on the blocking pool.
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

    /// [`Cache::take`], and when a value was taken, `put(mark_key, mark, ttl)`: one round
    /// trip (and atomic) on Redis.
    fn take_and_mark(&self, key: &str, mark_key: &str, mark: &[u8], ttl: Duration) -> Result<Option<Vec<u8>>, CacheError> {
        let v = self.take(key)?;
        if v.is_some() {
            self.put(mark_key, mark, ttl)?;
        }
        Ok(v)
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

    /// `put(put_key, value, ttl)` then `get(get_key)`, in that order: one round trip on Redis.
    fn put_then_get(&self, put_key: &str, value: &[u8], ttl: Duration, get_key: &str) -> Result<Option<Vec<u8>>, CacheError> {
        self.put(put_key, value, ttl)?;
        self.get(get_key)
    }
}

#[derive(Default)]
pub struct InProcess {
    entries: Mutex<HashMap<String, (Vec<u8>, Instant)>>,
}

impl InProcess {
    pub fn new() -> Self {
        Self::default()
    }

    fn with<T>(&self, f: impl FnOnce(&mut HashMap<String, (Vec<u8>, Instant)>) -> T) -> T {
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
}

pub struct Redis {
    pool: r2d2::Pool<redis::Client>,
    prefix: String,
    breaker: crate::breaker::Breaker,
}

/// How long a call waits for a Redis connection before the cache counts as unreachable.
pub const REDIS_CONNECTION_WAIT: Duration = Duration::from_secs(1);

impl Redis {
    /// Connects lazily: an unreachable server makes calls fail, not start-up.
    pub fn new(url: &str, prefix: &str) -> Result<Self, CacheError> {
        let client = redis::Client::open(url)?;
        let pool = r2d2::Pool::builder()
            .max_size(16)
            .min_idle(Some(0))
            .connection_timeout(REDIS_CONNECTION_WAIT)
            // No PING before every command: a broken connection fails its command and
            // is dropped by the pool (`has_broken`).
            .test_on_check_out(false)
            .build_unchecked(client);
        Ok(Self { pool, prefix: prefix.to_owned(), breaker: crate::breaker::Breaker::new(crate::db::UNREACHABLE_WINDOW) })
    }

    fn conn(&self) -> Result<r2d2::PooledConnection<redis::Client>, CacheError> {
        if self.breaker.is_open() {
            return Err(CacheError("cache injoignable (nouvel essai dans un instant)".into()));
        }
        match self.pool.get() {
            Ok(c) => {
                self.breaker.close();
                Ok(c)
            }
            Err(e) => {
                self.breaker.trip();
                Err(CacheError(e.to_string()))
            }
        }
    }

    fn k(&self, key: &str) -> String {
        format!("{}{}", self.prefix, key)
    }

    /// A command that failed because the server went away opens the breaker.
    fn failed(&self, e: redis::RedisError) -> CacheError {
        if e.is_io_error() || e.is_connection_dropped() || e.is_connection_refusal() || e.is_timeout() {
            self.breaker.trip();
        }
        e.into()
    }
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
        Ok(redis::cmd("GET").arg(self.k(key)).query(&mut *c).map_err(|e| self.failed(e))?)
    }

    fn replace(&self, key: &str, value: &[u8], ttl: Duration) -> Result<bool, CacheError> {
        let mut c = self.conn()?;
        let done: Option<String> = redis::cmd("SET").arg(self.k(key)).arg(value).arg("PX").arg(ttl_ms(ttl)).arg("XX").query(&mut *c).map_err(|e| self.failed(e))?;
        Ok(done.is_some())
    }

    fn take(&self, key: &str) -> Result<Option<Vec<u8>>, CacheError> {
        let mut c = self.conn()?;
        Ok(redis::cmd("GETDEL").arg(self.k(key)).query(&mut *c).map_err(|e| self.failed(e))?)
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
        if pong == "PONG" { Ok(()) } else { Err(CacheError(format!("réponse inattendue : {pong}"))) }
    }

    fn kind(&self) -> &'static str {
        "redis"
    }

    fn unreachable(&self) -> bool {
        self.breaker.is_open()
    }

    fn probe(&self) -> Result<(), CacheError> {
        let outcome = self.pool.get().map_err(|e| CacheError(e.to_string())).and_then(|mut c| {
            let pong: String = redis::cmd("PING").query(&mut *c).map_err(|e| self.failed(e))?;
            if pong == "PONG" { Ok(()) } else { Err(CacheError(format!("réponse inattendue : {pong}"))) }
        });
        match &outcome {
            Ok(()) => self.breaker.close(),
            Err(_) => self.breaker.trip(),
        }
        outcome
    }

    fn take_and_mark(&self, key: &str, mark_key: &str, mark: &[u8], ttl: Duration) -> Result<Option<Vec<u8>>, CacheError> {
        let mut c = self.conn()?;
        Ok(redis::cmd("EVAL")
            .arg(TAKE_AND_MARK)
            .arg(2)
            .arg(self.k(key))
            .arg(self.k(mark_key))
            .arg(mark)
            .arg(ttl_ms(ttl))
            .query(&mut *c).map_err(|e| self.failed(e))?)
    }

    fn put_then_get(&self, put_key: &str, value: &[u8], ttl: Duration, get_key: &str) -> Result<Option<Vec<u8>>, CacheError> {
        let mut c = self.conn()?;
        let (v,): (Option<Vec<u8>>,) = redis::pipe()
            .cmd("SET").arg(self.k(put_key)).arg(value).arg("PX").arg(ttl_ms(ttl)).ignore()
            .cmd("GET").arg(self.k(get_key))
            .query(&mut *c).map_err(|e| self.failed(e))?;
        Ok(v)
    }
}

/// GETDEL, and SET of the mark when a value was there (Redis runs a script atomically).
const TAKE_AND_MARK: &str = "local v = redis.call('GETDEL', KEYS[1]) \
    if v then redis.call('SET', KEYS[2], ARGV[1], 'PX', ARGV[2]) end \
    return v";
