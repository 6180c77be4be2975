//! The key set at run time. Loaded in full from its directory at start, and again when
//! the directory changes (an operator's `broker keys rotate` or `retire` while the
//! service runs), checked at most every [`RELOAD_CHECK`]. A directory that cannot be
//! read keeps the previous set. The JWKS document is built once per key set and per
//! period in which the published keys stay the same, not per request.

use super::{files, Alg, KeySet, SigningError};
use crate::time::Timestamp;
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

/// How often the key directory is looked at for changes (file names, sizes, times).
pub const RELOAD_CHECK: Duration = Duration::from_secs(2);

type Fingerprint = Vec<(String, u64, Option<std::time::SystemTime>)>;

/// The JWKS as served: its body and a strong entity tag (hash of the body).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JwksDocument {
    pub body: String,
    /// Quoted, e.g. `"3f2a…"`.
    pub etag: String,
    generation: u64,
    built_at: Timestamp,
    valid_until: Option<Timestamp>,
}

impl JwksDocument {
    fn build(set: &KeySet, now: Timestamp, generation: u64) -> Self {
        let body = set.jwks(now).to_string();
        let etag = format!("\"{}\"", &hex::encode(Sha256::digest(body.as_bytes()))[..32]);
        Self { body, etag, generation, built_at: now, valid_until: set.next_publication_change(now) }
    }

    fn serves(&self, generation: u64, now: Timestamp) -> bool {
        self.generation == generation && self.built_at <= now && self.valid_until.is_none_or(|u| now < u)
    }
}

struct Loaded {
    set: Arc<KeySet>,
    generation: u64,
    fingerprint: Fingerprint,
}

struct Check {
    at: Option<Instant>,
    /// The content that failed to load last, so that it is not read again every check.
    failed: Option<Fingerprint>,
}

pub struct KeyStore {
    dir: Option<PathBuf>,
    loaded: RwLock<Loaded>,
    check: Mutex<Check>,
    document: Mutex<Option<Arc<JwksDocument>>>,
}

impl std::fmt::Debug for KeyStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyStore").field("dir", &self.dir).finish_non_exhaustive()
    }
}

impl KeyStore {
    /// Loads the key directory (an unreadable file is an error).
    pub fn open(dir: &Path) -> Result<Self, SigningError> {
        let fingerprint = files::fingerprint(dir)?;
        let set = files::load(dir)?;
        Ok(Self::with(Some(dir.to_owned()), set, fingerprint))
    }

    /// A set that never changes (tests).
    pub fn fixed(set: KeySet) -> Self {
        Self::with(None, set, Vec::new())
    }

    fn with(dir: Option<PathBuf>, set: KeySet, fingerprint: Fingerprint) -> Self {
        Self {
            dir,
            loaded: RwLock::new(Loaded { set: Arc::new(set), generation: 1, fingerprint }),
            check: Mutex::new(Check { at: Some(Instant::now()), failed: None }),
            document: Mutex::new(None),
        }
    }

    pub fn dir(&self) -> Option<&Path> {
        self.dir.as_deref()
    }

    /// The current key set.
    pub fn keys(&self) -> Arc<KeySet> {
        self.loaded.read().unwrap_or_else(|p| p.into_inner()).set.clone()
    }

    /// Whether [`KeyStore::refresh`] would look at the directory now (no I/O): callers on
    /// an async runtime move the refresh to a blocking thread only then.
    pub fn refresh_due(&self) -> bool {
        self.dir.is_some()
            && self.check.try_lock().is_ok_and(|c| c.at.is_none_or(|at| at.elapsed() >= RELOAD_CHECK))
    }

    /// Looks at the directory if the last look is older than [`RELOAD_CHECK`], and loads
    /// it again if it changed. `Ok(true)` when a new set was loaded; an error keeps the
    /// previous set (report it: it is returned once per faulty content).
    pub fn refresh(&self) -> Result<bool, SigningError> {
        {
            let Ok(mut c) = self.check.try_lock() else { return Ok(false) };
            if c.at.is_some_and(|at| at.elapsed() < RELOAD_CHECK) {
                return Ok(false);
            }
            c.at = Some(Instant::now());
        }
        self.reload()
    }

    /// Loads the directory again now if it changed (see [`KeyStore::refresh`]).
    pub fn reload(&self) -> Result<bool, SigningError> {
        let Some(dir) = &self.dir else { return Ok(false) };
        let fingerprint = files::fingerprint(dir)?;
        if self.loaded.read().unwrap_or_else(|p| p.into_inner()).fingerprint == fingerprint {
            return Ok(false);
        }
        let mut check = self.check.lock().unwrap_or_else(|p| p.into_inner());
        if check.failed.as_ref() == Some(&fingerprint) {
            return Ok(false);
        }
        match files::load(dir) {
            Ok(set) => {
                check.failed = None;
                let mut l = self.loaded.write().unwrap_or_else(|p| p.into_inner());
                *l = Loaded { set: Arc::new(set), generation: l.generation + 1, fingerprint };
                Ok(true)
            }
            Err(e) => {
                check.failed = Some(fingerprint);
                Err(e)
            }
        }
    }

    /// The JWKS document at `now`, built again only when the key set or the published
    /// keys changed.
    pub fn jwks(&self, now: Timestamp) -> Arc<JwksDocument> {
        let (set, generation) = {
            let l = self.loaded.read().unwrap_or_else(|p| p.into_inner());
            (l.set.clone(), l.generation)
        };
        let mut doc = self.document.lock().unwrap_or_else(|p| p.into_inner());
        match doc.as_ref() {
            Some(d) if d.serves(generation, now) => d.clone(),
            _ => {
                let d = Arc::new(JwksDocument::build(&set, now, generation));
                *doc = Some(d.clone());
                d
            }
        }
    }

    /// Signs `claims` with the key that signs for `alg` at `now` (see [`KeySet::sign_jwt_with`]).
    pub fn sign_jwt_with(&self, alg: Alg, claims: &Value, now: Timestamp) -> Result<String, SigningError> {
        self.keys().sign_jwt_with(alg, claims, now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::signing::RETIRED_KEY_GRACE_SECONDS;

    #[test]
    fn the_document_is_reused_until_the_published_keys_change() {
        let now = Timestamp::from_micros(1_800_000_000_000_000);
        let mut set = KeySet::first(Alg::Es256, now).unwrap();
        set.rotate(Alg::Es256, now, 60).unwrap();
        let store = KeyStore::fixed(set);
        let a = store.jwks(now);
        assert!(Arc::ptr_eq(&a, &store.jwks(now.plus_seconds(30))), "same instant class, same document");
        let end = now.plus_seconds(60 + RETIRED_KEY_GRACE_SECONDS);
        let before_end = store.jwks(Timestamp::from_micros(end.micros() - 1));
        assert_eq!(before_end.etag, a.etag);
        let b = store.jwks(end);
        assert_ne!(b.etag, a.etag, "the old key left the JWKS");
        assert_eq!(serde_json::from_str::<Value>(&b.body).unwrap()["keys"].as_array().unwrap().len(), 1);
        assert!(a.etag.starts_with('"') && a.etag.ends_with('"') && a.etag.len() == 34);
    }

    #[test]
    fn a_change_of_the_directory_is_loaded_and_a_broken_file_keeps_the_previous_set() {
        let dir = tempfile::tempdir().unwrap();
        let now = Timestamp::now();
        let mut set = KeySet::first(Alg::Es256, now).unwrap();
        files::write_new(dir.path(), &set.keys()[0]).unwrap();
        let store = KeyStore::open(dir.path()).unwrap();
        assert_eq!(store.keys().keys().len(), 1);
        assert!(!store.refresh().unwrap(), "checked at most every RELOAD_CHECK");
        assert!(!store.reload().unwrap(), "nothing changed");
        let before = store.jwks(now);

        let new = set.rotate(Alg::Es256, now, 3600).unwrap().clone();
        files::write_new(dir.path(), &new).unwrap();
        assert!(store.reload().unwrap());
        assert!(store.keys().get(new.kid()).is_some());
        let after = store.jwks(now);
        assert_ne!(before.etag, after.etag);
        assert!(after.body.contains(new.kid()), "a rotated key is published at once");
        assert!(store.sign_jwt_with(Alg::Rs256, &serde_json::json!({}), now).is_err(), "no RS256 key yet");

        // The first RS256 key, added while the service runs, signs RS256 at once.
        let rsa = set.generate(Alg::Rs256, now).unwrap().clone();
        files::write_new(dir.path(), &rsa).unwrap();
        assert!(store.reload().unwrap());
        let jwt = store.sign_jwt_with(Alg::Rs256, &serde_json::json!({ "sub": "u" }), now).unwrap();
        let header = data_encoding::BASE64URL_NOPAD.decode(jwt.split('.').next().unwrap().as_bytes()).unwrap();
        assert_eq!(serde_json::from_slice::<Value>(&header).unwrap()["kid"], rsa.kid());
        assert!(store.jwks(now).body.contains(rsa.kid()));

        std::fs::write(dir.path().join("casse.json"), "{").unwrap();
        assert!(store.reload().unwrap_err().to_string().contains("casse.json"));
        assert!(!store.reload().unwrap(), "the same fault is reported once");
        assert_eq!(store.keys().keys().len(), 3, "the previous set is kept");
        std::fs::remove_file(dir.path().join("casse.json")).unwrap();
        assert!(!store.reload().unwrap(), "back to the loaded content");
    }
}
