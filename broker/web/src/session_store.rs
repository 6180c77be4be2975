//! Server-side sessions for actix-session, kept in the broker's short-lived state cache
//! (Redis when configured, in-process otherwise). The cookie holds only a random key;
//! the cache key is its SHA-256, so a cache dump reveals no usable session key.
//!
//! A cache that cannot be reached never fails the request here: the session reads as
//! empty and is not written, and the application's outer layer, which knows the cache
//! is down, answers the "service momentanément indisponible" page with every security
//! header (an error from this layer would reach the client as a bare 500).

use actix_session::storage::{LoadError, SaveError, SessionKey, SessionStore, UpdateError};
use actix_web::cookie::time::Duration;
use broker_core::secret::{random_bytes, sha256_hex};
use broker_store::cache::Cache;
use std::collections::HashMap;
use std::sync::Arc;

#[derive(Clone)]
pub struct CacheSessionStore {
    cache: Arc<dyn Cache>,
}

impl CacheSessionStore {
    pub fn new(cache: Arc<dyn Cache>) -> Self {
        Self { cache }
    }
}

fn cache_key(key: &SessionKey) -> String {
    format!("session:{}", sha256_hex(key.as_ref().as_bytes()))
}

fn std_ttl(ttl: &Duration) -> std::time::Duration {
    std::time::Duration::from_secs(u64::try_from(ttl.whole_seconds()).unwrap_or(1).max(1))
}

fn new_key() -> SessionKey {
    SessionKey::try_from(hex::encode(random_bytes::<32>())).expect("64 hex characters make a valid session key")
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T, anyhow::Error> + Send + 'static) -> Result<T, anyhow::Error> {
    actix_web::rt::task::spawn_blocking(f).await.map_err(|e| anyhow::anyhow!(e.to_string()))?
}

impl SessionStore for CacheSessionStore {
    async fn load(&self, session_key: &SessionKey) -> Result<Option<HashMap<String, String>>, LoadError> {
        let (cache, key) = (self.cache.clone(), cache_key(session_key));
        let raw = match blocking(move || Ok(cache.get(&key)?)).await {
            Ok(raw) => raw,
            Err(e) => {
                tracing::warn!(error = %e, "session not read: cache unreachable");
                return Ok(None);
            }
        };
        match raw {
            None => Ok(None),
            Some(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|e| LoadError::Deserialization(e.into())),
        }
    }

    async fn save(&self, state: HashMap<String, String>, ttl: &Duration) -> Result<SessionKey, SaveError> {
        let body = serde_json::to_vec(&state).map_err(|e| SaveError::Serialization(e.into()))?;
        let key = new_key();
        let (cache, ck, ttl) = (self.cache.clone(), cache_key(&key), std_ttl(ttl));
        if let Err(e) = blocking(move || Ok(cache.put(&ck, &body, ttl)?)).await {
            tracing::warn!(error = %e, "session not written: cache unreachable");
        }
        Ok(key)
    }

    /// Writes the state only over a session that still exists: a request that was in
    /// flight while the session ended (sign-out, deactivation, expiry) must not bring it
    /// back. Such a request gets a new, empty session instead.
    async fn update(&self, session_key: SessionKey, state: HashMap<String, String>, ttl: &Duration) -> Result<SessionKey, UpdateError> {
        let body = serde_json::to_vec(&state).map_err(|e| UpdateError::Serialization(e.into()))?;
        let (cache, ck, std) = (self.cache.clone(), cache_key(&session_key), std_ttl(ttl));
        let replaced = match blocking(move || Ok(cache.replace(&ck, &body, std)?)).await {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(error = %e, "session not written: cache unreachable");
                return Ok(session_key);
            }
        };
        if replaced {
            return Ok(session_key);
        }
        self.save(HashMap::new(), ttl).await.map_err(|e| UpdateError::Other(anyhow::anyhow!(e.to_string())))
    }

    async fn update_ttl(&self, session_key: &SessionKey, ttl: &Duration) -> Result<(), anyhow::Error> {
        let (cache, ck, ttl) = (self.cache.clone(), cache_key(session_key), std_ttl(ttl));
        let refreshed = blocking(move || {
            if let Some(v) = cache.get(&ck)? {
                cache.replace(&ck, &v, ttl)?;
            }
            Ok(())
        })
        .await;
        if let Err(e) = refreshed {
            tracing::warn!(error = %e, "session not refreshed: cache unreachable");
        }
        Ok(())
    }

    async fn delete(&self, session_key: &SessionKey) -> Result<(), anyhow::Error> {
        let (cache, ck) = (self.cache.clone(), cache_key(session_key));
        blocking(move || Ok(cache.delete(&ck)?)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use broker_store::cache::InProcess;

    #[actix_web::test]
    async fn a_session_ended_meanwhile_is_not_written_back() {
        let store = CacheSessionStore::new(Arc::new(InProcess::new()));
        let ttl = Duration::minutes(10);
        let key = |s: &str| SessionKey::try_from(s.to_owned()).unwrap();
        let state = HashMap::from([("aidant".to_owned(), "42".to_owned())]);
        let first: String = store.save(state.clone(), &ttl).await.unwrap().into();
        let kept: String = store.update(key(&first), state.clone(), &ttl).await.unwrap().into();
        assert_eq!(kept, first, "a live session keeps its key");
        assert_eq!(store.load(&key(&kept)).await.unwrap(), Some(state.clone()), "a live session is updated in place");
        store.delete(&key(&kept)).await.unwrap();
        let after: String = store.update(key(&kept), state, &ttl).await.unwrap().into();
        assert_ne!(after, kept);
        assert_eq!(store.load(&key(&kept)).await.unwrap(), None, "the ended session stays ended");
        assert_eq!(store.load(&key(&after)).await.unwrap(), Some(HashMap::new()), "the in-flight request gets an empty session");
    }
}
