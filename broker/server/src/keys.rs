//! Key files in the key directory (`AC_KEYS_DIR`), each holding hex-encoded random
//! bytes. In development, missing keys are generated; in production they must exist.
//! The signing keys live beside them in `signing/` (see `broker_core::signing::files`);
//! every change of those is journaled together with its file.

use anyhow::{bail, Context, Result};
use broker_core::checkpoint::JournalKey;
use broker_core::signing::{files, SigningKey};
use broker_store::admin::{self, SigningKeyChange};
use broker_store::{Db, StoreError};
use std::io::Write;
use std::path::{Path, PathBuf};

/// (file name, bytes, purpose)
pub const KEY_FILES: &[(&str, usize, &str)] = &[
    ("seal.key", 32, "chiffrement des graines TOTP et des secrets HS256"),
    ("usager-salt.key", 32, "sel des identifiants d'usagers (hachage du sub FranceConnect)"),
    ("session.key", 64, "signature des cookies de session"),
];

pub struct Keys {
    pub seal: [u8; 32],
    pub usager_salt: [u8; 32],
    pub session: [u8; 64],
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Keys(…)")
    }
}

fn read_key<const N: usize>(dir: &Path, name: &str, generate: Option<Generate>) -> Result<[u8; N]> {
    let path = dir.join(name);
    if !path.exists() {
        let Some(how) = generate else {
            bail!("clé manquante : {} (créez-la avec « broker keys init » ou copiez-la depuis votre coffre)", path.display());
        };
        std::fs::create_dir_all(dir).with_context(|| format!("création de {}", dir.display()))?;
        let bytes = broker_core::secret::random_bytes::<N>();
        write_private(&path, &hex::encode(bytes))?;
        match how {
            Generate::Development => eprintln!(
                "ATTENTION : clé de développement générée dans {} — ne l'utilisez pas en production.",
                path.display()
            ),
            Generate::Provision => eprintln!("Clé créée : {} (sauvegardez-la dans votre coffre)", path.display()),
        }
        return Ok(bytes);
    }
    let text = std::fs::read_to_string(&path).with_context(|| format!("lecture de {}", path.display()))?;
    let bytes = hex::decode(text.trim()).ok().and_then(|b| <[u8; N]>::try_from(b).ok());
    match bytes {
        Some(b) => Ok(b),
        None => bail!("clé illisible : {} ({} octets en hexadécimal attendus)", path.display(), N),
    }
}

fn write_private(path: &Path, content: &str) -> Result<()> {
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts.open(path).with_context(|| format!("création de {}", path.display()))?;
    f.write_all(content.as_bytes())?;
    f.write_all(b"\n")?;
    Ok(())
}

/// Who creates a missing key: the development fallback, or the operator's `keys init`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Generate {
    Development,
    Provision,
}

impl Keys {
    pub fn load(dir: &Path, generate_missing: Option<Generate>) -> Result<Self> {
        Ok(Self {
            seal: read_key(dir, KEY_FILES[0].0, generate_missing)?,
            usager_salt: read_key(dir, KEY_FILES[1].0, generate_missing)?,
            session: read_key(dir, KEY_FILES[2].0, generate_missing)?,
        })
    }
}

/// The journal key file (hex-encoded Ed25519 seed), beside the other key files.
pub const JOURNAL_KEY_FILE: &str = "journal-ed25519.key";

pub fn journal_key_path(dir: &Path) -> PathBuf {
    dir.join(JOURNAL_KEY_FILE)
}

/// The journal key named `origin`. A missing key is generated in development, and
/// an error telling the command that creates it otherwise.
pub fn load_journal_key(dir: &Path, origin: &str, generate: Option<Generate>) -> Result<JournalKey> {
    let path = journal_key_path(dir);
    if !path.exists() {
        if generate.is_none() {
            bail!(
                "clé du journal manquante : {} (créez-la avec « broker journal key generate » ou « broker keys init », ou copiez-la depuis votre coffre ; voir docs/audit.md)",
                path.display()
            );
        }
        let (key, path) = generate_journal_key(dir, origin)?;
        eprintln!(
            "ATTENTION : clé du journal de développement générée dans {} — ne l'utilisez pas en production.",
            path.display()
        );
        return Ok(key);
    }
    let seed: [u8; 32] = read_key(dir, JOURNAL_KEY_FILE, None)?;
    JournalKey::from_seed(origin, &seed).map_err(|e| anyhow::anyhow!("AC_JOURNAL_ORIGIN : {e}"))
}

/// Creates the journal key file; refuses to replace an existing one.
pub fn generate_journal_key(dir: &Path, origin: &str) -> Result<(JournalKey, PathBuf)> {
    let path = journal_key_path(dir);
    if path.exists() {
        bail!("la clé du journal existe déjà : {} (elle n'est jamais remplacée)", path.display());
    }
    let key = JournalKey::generate(origin).map_err(|e| anyhow::anyhow!("AC_JOURNAL_ORIGIN : {e}"))?;
    std::fs::create_dir_all(dir).with_context(|| format!("création de {}", dir.display()))?;
    write_private(&path, &hex::encode(key.seed()))?;
    Ok((key, path))
}

/// The signing key directory: `AC_KEYS_DIR/signing`.
pub fn signing_dir(keys_dir: &Path) -> PathBuf {
    keys_dir.join(files::DIR_NAME)
}

/// Writes a new signing key's file and its journal entry together: the entry is rolled
/// back if the file cannot be written, and the file removed if the commit fails.
pub fn record_new_signing_key(db: &Db, dir: &Path, operation: &str, key: &SigningKey, via: &str) -> Result<PathBuf, StoreError> {
    let mut written = None;
    let change = SigningKeyChange { operation, kid: key.kid(), alg: key.alg().key(), via };
    let out = admin::journal_signing_key(db, &change, || {
        written = Some(files::write_new(dir, key).map_err(|e| e.to_string())?);
        Ok(())
    });
    match (out, written) {
        (Ok(()), Some(path)) => Ok(path),
        (Ok(()), None) => Err(StoreError::File("fichier de clé non écrit".into())),
        (Err(e), Some(path)) => {
            let _ = std::fs::remove_file(path);
            Err(e)
        }
        (Err(e), None) => Err(e),
    }
}

/// Rewrites a retired key's file and journals it together; the previous file content is
/// put back if the commit fails.
pub fn record_retirement(db: &Db, dir: &Path, retired: &SigningKey, before: &SigningKey) -> Result<(), StoreError> {
    let mut written = false;
    let change = SigningKeyChange { operation: "retire", kid: retired.kid(), alg: retired.alg().key(), via: "cli" };
    let out = admin::journal_signing_key(db, &change, || {
        files::replace(dir, retired).map_err(|e| e.to_string())?;
        written = true;
        Ok(())
    });
    if out.is_err() && written {
        let _ = files::replace(dir, before);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn journal_key_is_generated_in_development_only_and_never_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let e = load_journal_key(dir.path(), "localhost:8000/journal", None).unwrap_err().to_string();
        assert!(e.contains("broker journal key generate"), "{e}");
        let k1 = load_journal_key(dir.path(), "localhost:8000/journal", Some(Generate::Development)).unwrap();
        let k2 = load_journal_key(dir.path(), "localhost:8000/journal", None).unwrap();
        assert_eq!(k1.verifier(), k2.verifier());
        assert!(generate_journal_key(dir.path(), "localhost:8000/journal").is_err());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(journal_key_path(dir.path())).unwrap().permissions().mode();
            assert_eq!(mode & 0o077, 0, "the journal key is private");
        }
    }

    #[test]
    fn development_generates_private_keys_once_production_refuses_missing_ones() {
        let dir = tempfile::tempdir().unwrap();
        assert!(Keys::load(dir.path(), None).is_err());
        let k1 = Keys::load(dir.path(), Some(Generate::Development)).unwrap();
        let k2 = Keys::load(dir.path(), None).unwrap();
        assert_eq!(k1.seal, k2.seal, "generated once, then read back");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join("seal.key")).unwrap().permissions().mode();
            assert_eq!(mode & 0o077, 0, "key files are private");
        }
        std::fs::write(dir.path().join("session.key"), "zz").unwrap();
        assert!(Keys::load(dir.path(), None).unwrap_err().to_string().contains("session.key"));
    }
}
