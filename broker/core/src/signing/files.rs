//! Signing key files: one `<kid>.json` per key in the signing directory
//! (`AC_KEYS_DIR/signing`), holding the private JWK and the key's life cycle:
//!
//! ```json
//! {"v":1,"kid":"…","alg":"ES256","created_at":"2026-…Z","active_from":"2026-…Z","retired_at":null,"private_jwk":{…}}
//! ```
//!
//! New files are created with `create_new` and mode 0600 in a 0700 directory; a
//! retirement replaces the file through a private temporary file and a rename. Files are
//! never deleted by the broker. The whole directory is loaded at once: any unreadable
//! file stops the load, naming the file.

use super::{Alg, KeySet, SigningError, SigningKey};
use crate::time::Timestamp;
use josekit::jwk::Jwk;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::io::Write;
use std::path::{Path, PathBuf};

/// The signing directory inside the key directory.
pub const DIR_NAME: &str = "signing";

const VERSION: u32 = 1;

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyFile {
    v: u32,
    kid: String,
    alg: String,
    created_at: String,
    active_from: String,
    retired_at: Option<String>,
    private_jwk: Map<String, Value>,
}

fn file_error(path: &Path, what: impl std::fmt::Display) -> SigningError {
    SigningError::File(format!("clé de signature illisible : {} ({what})", path.display()))
}

/// The file of a key.
pub fn path(dir: &Path, kid: &str) -> PathBuf {
    dir.join(format!("{kid}.json"))
}

/// The file content of a key: private material included.
pub fn to_json(key: &SigningKey) -> String {
    let file = KeyFile {
        v: VERSION,
        kid: key.kid.clone(),
        alg: key.alg.key().to_owned(),
        created_at: key.created_at.rfc3339(),
        active_from: key.active_from.rfc3339(),
        retired_at: key.retired_at.map(Timestamp::rfc3339),
        private_jwk: key.private_jwk.as_ref().clone(),
    };
    let mut text = serde_json::to_string_pretty(&file).expect("a key file serialises");
    text.push('\n');
    text
}

/// Reads a key file's content (`path` names it in errors and gives the expected kid).
pub fn from_json(text: &str, path: &Path) -> Result<SigningKey, SigningError> {
    let f: KeyFile = serde_json::from_str(text).map_err(|e| file_error(path, e))?;
    if f.v != VERSION {
        return Err(file_error(path, format!("version {} inconnue", f.v)));
    }
    let expected = path.file_stem().and_then(|s| s.to_str()).unwrap_or_default();
    if f.kid != expected {
        return Err(file_error(path, format!("kid « {} » différent du nom du fichier", f.kid)));
    }
    let alg = Alg::parse(&f.alg).map_err(|e| file_error(path, e.0))?;
    let instant = |name: &str, v: &str| Timestamp::parse_rfc3339(v).ok_or_else(|| file_error(path, format!("{name} : date RFC 3339 attendue")));
    let created_at = instant("created_at", &f.created_at)?;
    let active_from = instant("active_from", &f.active_from)?;
    let retired_at = f.retired_at.as_deref().map(|r| instant("retired_at", r)).transpose()?;
    let jwk = Jwk::from_map(f.private_jwk).map_err(|e| file_error(path, e))?;
    SigningKey::from_parts(f.kid, alg, created_at, active_from, retired_at, jwk).map_err(|e| file_error(path, e))
}

/// Whether a directory entry is a key file (temporary and other files are skipped).
fn is_key_file(name: &str) -> bool {
    name.ends_with(".json") && !name.starts_with('.')
}

/// Loads every key of the directory; a missing directory is an empty set.
pub fn load(dir: &Path) -> Result<KeySet, SigningError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(KeySet::default()),
        Err(e) => return Err(SigningError::File(format!("lecture de {} : {e}", dir.display()))),
    };
    let mut keys = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| SigningError::File(format!("lecture de {} : {e}", dir.display())))?;
        let name = entry.file_name();
        if !name.to_str().is_some_and(is_key_file) {
            continue;
        }
        let p = entry.path();
        let text = std::fs::read_to_string(&p).map_err(|e| file_error(&p, e))?;
        keys.push(from_json(&text, &p)?);
    }
    Ok(KeySet::new(keys))
}

/// What identifies the directory's content without reading it: key file names, sizes
/// and modification times. A change means the set must be loaded again.
pub fn fingerprint(dir: &Path) -> Result<Vec<(String, u64, Option<std::time::SystemTime>)>, SigningError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(SigningError::File(format!("lecture de {} : {e}", dir.display()))),
    };
    let mut out = Vec::new();
    for entry in entries.flatten() {
        let Some(name) = entry.file_name().to_str().filter(|n| is_key_file(n)).map(str::to_owned) else {
            continue;
        };
        let meta = entry.metadata().ok();
        out.push((name, meta.as_ref().map_or(0, |m| m.len()), meta.and_then(|m| m.modified().ok())));
    }
    out.sort();
    Ok(out)
}

fn create_private(path: &Path, content: &str) -> Result<(), SigningError> {
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let err = |e: std::io::Error| SigningError::File(format!("écriture de {} : {e}", path.display()));
    let mut f = opts.open(path).map_err(err)?;
    f.write_all(content.as_bytes()).map_err(err)?;
    f.sync_all().map_err(err)
}

fn ensure_dir(dir: &Path) -> Result<(), SigningError> {
    let mut b = std::fs::DirBuilder::new();
    b.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        b.mode(0o700);
    }
    b.create(dir).map_err(|e| SigningError::File(format!("création de {} : {e}", dir.display())))
}

/// Writes a new key's file; refuses to overwrite anything.
pub fn write_new(dir: &Path, key: &SigningKey) -> Result<PathBuf, SigningError> {
    ensure_dir(dir)?;
    let p = path(dir, &key.kid);
    create_private(&p, &to_json(key))?;
    Ok(p)
}

/// Replaces the file of an existing key (a retirement), atomically.
pub fn replace(dir: &Path, key: &SigningKey) -> Result<(), SigningError> {
    let target = path(dir, &key.kid);
    if !target.exists() {
        return Err(SigningError::File(format!("fichier de clé absent : {}", target.display())));
    }
    let tmp = dir.join(format!(".{}.{}.tmp", key.kid, hex::encode(crate::secret::random_bytes::<6>())));
    create_private(&tmp, &to_json(key))?;
    std::fs::rename(&tmp, &target).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        SigningError::File(format!("remplacement de {} : {e}", target.display()))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_set_round_trips_through_private_files() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().join(DIR_NAME);
        assert!(load(&d).unwrap().is_empty(), "no directory: no keys");
        let now = Timestamp::from_micros(1_800_000_000_123_456);
        let mut set = KeySet::first(Alg::Es256, now).unwrap();
        let first = set.keys()[0].clone();
        write_new(&d, &first).unwrap();
        let rsa = set.generate(Alg::Rs256, now.plus_seconds(1)).unwrap().clone();
        write_new(&d, &rsa).unwrap();
        let rotated = set.rotate(Alg::Es256, now.plus_seconds(5), 60).unwrap().clone();
        write_new(&d, &rotated).unwrap();
        assert!(write_new(&d, &rotated).is_err(), "never overwrites a key file");

        let loaded = load(&d).unwrap();
        assert_eq!(loaded.keys().len(), 3);
        let t = now.plus_seconds(70);
        assert_eq!(loaded.jwks(t), set.jwks(t), "same public keys after a reload");
        assert_eq!(loaded.signing_key_for(Alg::Es256, t).unwrap().kid(), rotated.kid());
        assert_eq!(loaded.signing_key_for(Alg::Rs256, t).unwrap().kid(), rsa.kid(), "each algorithm keeps its own key");
        assert_eq!(loaded.get(first.kid()).unwrap().created_at(), now, "instants kept to the microsecond");

        set.retire(first.kid(), t).unwrap();
        replace(&d, set.get(first.kid()).unwrap()).unwrap();
        assert_eq!(load(&d).unwrap().get(first.kid()).unwrap().retired_at(), Some(t));

        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            for entry in std::fs::read_dir(&d).unwrap() {
                let mode = entry.unwrap().metadata().unwrap().permissions().mode();
                assert_eq!(mode & 0o077, 0, "key files are private");
            }
            assert_eq!(std::fs::metadata(&d).unwrap().permissions().mode() & 0o077, 0);
        }
        std::fs::write(d.join("README.txt"), "ignored").unwrap();
        assert_eq!(load(&d).unwrap().keys().len(), 3);
    }

    #[test]
    fn an_altered_file_stops_the_load_and_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let now = Timestamp::from_micros(1_800_000_000_000_000);
        let set = KeySet::first(Alg::Es256, now).unwrap();
        let key = &set.keys()[0];
        let p = write_new(dir.path(), key).unwrap();
        let good = std::fs::read_to_string(&p).unwrap();

        // Public coordinates that do not match the private key.
        let other = KeySet::first(Alg::Es256, now).unwrap();
        let mut v: Value = serde_json::from_str(&good).unwrap();
        let other_file: Value = serde_json::from_str(&to_json(&other.keys()[0])).unwrap();
        v["private_jwk"]["x"] = other_file["private_jwk"]["x"].clone();
        v["private_jwk"]["y"] = other_file["private_jwk"]["y"].clone();
        std::fs::write(&p, v.to_string()).unwrap();
        let e = load(dir.path()).unwrap_err().to_string();
        assert!(e.contains(&p.display().to_string()), "{e}");

        std::fs::write(&p, good.replace(key.kid(), "autre")).unwrap();
        assert!(load(dir.path()).unwrap_err().to_string().contains("nom du fichier"));
        std::fs::write(&p, "{").unwrap();
        assert!(load(dir.path()).is_err());
    }
}
