//! Signed checkpoints of the journal, in the C2SP `tlog-checkpoint` / `signed-note`
//! text formats, signed with the journal key (Ed25519).
//!
//! A checkpoint's body is
//!
//! ```text
//! <origin>\n
//! <tree size, decimal>\n
//! <root hash, standard base64>\n
//! time <RFC 3339 UTC, seconds, Z>\n
//! ```
//!
//! and the signed note is the body, a blank line, then one signature line per key:
//! `— <key name> <base64(key id ‖ signature)>\n` (an em dash U+2014 and a space first).
//! The key id is the first 4 bytes of SHA-256(key name ‖ 0x0A ‖ 0x01 ‖ public key), the
//! signature is Ed25519 over the body bytes. The verifier key string is
//! `<name>+<hex key id>+<base64(0x01 ‖ public key)>`. The key name is the origin.
//! The tree is the RFC 6962 tree over the journal's leaf hashes in sequence order
//! (see [`crate::merkle`]).

use crate::journal::{FaultKind, Record, Verifier};
use crate::merkle::{Hash, RootBuilder};
use serde_json::Value;
use chrono::{DateTime, Utc};
use data_encoding::BASE64;
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use sha2::{Digest, Sha256};
use std::fmt;

/// Start of a signature line: an em dash and a space.
pub const SIGNATURE_PREFIX: &str = "\u{2014} ";
/// Signature type byte of Ed25519 keys in C2SP signed notes.
pub const ED25519_TYPE: u8 = 0x01;
/// Largest note accepted by the parser.
pub const MAX_NOTE_BYTES: usize = 64 * 1024;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CheckpointError {
    #[error("point de contrôle mal formé : {0}")]
    Malformed(String),
    #[error("nom de clé invalide « {0} » (non vide, sans espace ni « + »)")]
    BadKeyName(String),
    #[error("clé de vérification illisible : {0}")]
    BadKeyString(String),
    #[error("point de contrôle non signé par la clé {0} : il est signé par une autre clé")]
    NotSignedByKey(String),
    #[error("signature invalide pour la clé {0} : le point de contrôle a été modifié ou sa signature falsifiée")]
    BadSignature(String),
    #[error("origine « {got} » inattendue : la clé {expected} signe l'origine « {expected} »")]
    WrongOrigin { got: String, expected: String },
}

fn malformed(m: impl Into<String>) -> CheckpointError {
    CheckpointError::Malformed(m.into())
}

/// What a checkpoint states: the tree of `size` leaves of `origin` has `root`, at `time`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    pub origin: String,
    pub size: u64,
    pub root: Hash,
    /// Seconds since the Unix epoch, UTC.
    pub time: i64,
}

fn format_time(seconds: i64) -> String {
    DateTime::<Utc>::from_timestamp(seconds, 0).unwrap_or_default().format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

fn parse_time(text: &str) -> Option<i64> {
    if !text.ends_with('Z') || text.len() != 20 {
        return None;
    }
    DateTime::parse_from_rfc3339(text).ok().map(|t| t.timestamp())
}

impl Checkpoint {
    /// The time line's value: `2026-11-23T22:37:38Z`.
    pub fn time_rfc3339(&self) -> String {
        format_time(self.time)
    }

    /// The note body (what is signed).
    pub fn body(&self) -> String {
        format!("{}\n{}\n{}\ntime {}\n", self.origin, self.size, BASE64.encode(&self.root), self.time_rfc3339())
    }

    /// Reads a checkpoint body: origin, size, root, then extension lines, of which one
    /// must be `time …`.
    pub fn parse_body(body: &str) -> Result<Checkpoint, CheckpointError> {
        let Some(body) = body.strip_suffix('\n') else {
            return Err(malformed("le corps doit finir par un saut de ligne"));
        };
        let mut lines = body.split('\n');
        let origin = lines.next().unwrap_or("");
        if origin.is_empty() {
            return Err(malformed("origine absente (première ligne)"));
        }
        let size_text = lines.next().ok_or_else(|| malformed("taille de l'arbre absente (deuxième ligne)"))?;
        let digits_ok = !size_text.is_empty()
            && size_text.bytes().all(|b| b.is_ascii_digit())
            && (size_text == "0" || !size_text.starts_with('0'));
        let size: u64 = if digits_ok { size_text.parse().ok() } else { None }
            .ok_or_else(|| malformed(format!("taille de l'arbre « {size_text} » : nombre décimal attendu")))?;
        let root_text = lines.next().ok_or_else(|| malformed("racine absente (troisième ligne)"))?;
        let root: Hash = BASE64
            .decode(root_text.as_bytes())
            .ok()
            .and_then(|v| v.try_into().ok())
            .ok_or_else(|| malformed(format!("racine « {root_text} » : 32 octets en base64 attendus")))?;
        let mut time = None;
        for ext in lines {
            if ext.is_empty() {
                return Err(malformed("ligne vide dans le corps"));
            }
            if let Some(t) = ext.strip_prefix("time ") {
                if time.is_some() {
                    return Err(malformed("plusieurs lignes « time »"));
                }
                time = Some(parse_time(t).ok_or_else(|| malformed(format!("heure « {t} » : AAAA-MM-JJThh:mm:ssZ attendu")))?);
            }
        }
        let time = time.ok_or_else(|| malformed("ligne « time » absente"))?;
        Ok(Checkpoint { origin: origin.to_owned(), size, root, time })
    }
}

/// One signature line of a note.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NoteSignature {
    pub name: String,
    pub key_id: [u8; 4],
    /// The bytes after the key id (64 for Ed25519).
    pub signature: Vec<u8>,
}

/// A signed note split into its body and signature lines (not verified).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedNote {
    pub body: String,
    pub signatures: Vec<NoteSignature>,
}

/// Splits a signed note at its last blank line and reads its signature lines.
pub fn parse_note(text: &str) -> Result<SignedNote, CheckpointError> {
    if text.len() > MAX_NOTE_BYTES {
        return Err(malformed("note trop longue"));
    }
    if !text.ends_with('\n') {
        return Err(malformed("la note doit finir par un saut de ligne"));
    }
    let split = text.rfind("\n\n").ok_or_else(|| malformed("ligne vide entre le corps et les signatures absente"))?;
    let body = &text[..split + 1];
    let sigs = &text[split + 2..];
    if body.len() <= 1 {
        return Err(malformed("corps vide"));
    }
    let mut signatures = Vec::new();
    for line in sigs.strip_suffix('\n').unwrap_or(sigs).split('\n') {
        let rest = line
            .strip_prefix(SIGNATURE_PREFIX)
            .ok_or_else(|| malformed(format!("ligne de signature « {line} » : elle doit commencer par « — »")))?;
        let (name, b64) = rest.split_once(' ').ok_or_else(|| malformed("ligne de signature sans nom de clé"))?;
        check_name(name).map_err(|_| malformed(format!("nom de clé « {name} » invalide dans une signature")))?;
        let raw = BASE64.decode(b64.as_bytes()).map_err(|_| malformed("signature : base64 illisible"))?;
        if raw.len() < 5 {
            return Err(malformed("signature trop courte"));
        }
        signatures.push(NoteSignature { name: name.to_owned(), key_id: raw[..4].try_into().expect("4 bytes"), signature: raw[4..].to_vec() });
    }
    if signatures.is_empty() {
        return Err(malformed("aucune signature"));
    }
    Ok(SignedNote { body: body.to_owned(), signatures })
}

fn check_name(name: &str) -> Result<(), CheckpointError> {
    if name.is_empty() || name.contains('+') || name.chars().any(char::is_whitespace) {
        return Err(CheckpointError::BadKeyName(name.to_owned()));
    }
    Ok(())
}

/// Key id of an Ed25519 key: SHA-256(name ‖ 0x0A ‖ 0x01 ‖ public key)[..4].
pub fn key_id(name: &str, public: &[u8; 32]) -> [u8; 4] {
    let mut h = Sha256::new();
    h.update(name.as_bytes());
    h.update([b'\n', ED25519_TYPE]);
    h.update(public);
    h.finalize()[..4].try_into().expect("4 bytes")
}

/// The journal key: signs checkpoints. Its name is the checkpoint origin.
#[derive(Clone)]
pub struct JournalKey {
    name: String,
    key: SigningKey,
}

impl fmt::Debug for JournalKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "JournalKey({})", self.verifier())
    }
}

impl JournalKey {
    /// The key of this 32-byte Ed25519 seed (the private key as RFC 8032 defines it).
    pub fn from_seed(name: &str, seed: &[u8; 32]) -> Result<Self, CheckpointError> {
        check_name(name)?;
        Ok(Self { name: name.to_owned(), key: SigningKey::from_bytes(seed) })
    }

    /// A new random key.
    pub fn generate(name: &str) -> Result<Self, CheckpointError> {
        Self::from_seed(name, &crate::secret::random_bytes::<32>())
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The private seed, to write the key file.
    pub fn seed(&self) -> [u8; 32] {
        self.key.to_bytes()
    }

    pub fn verifier(&self) -> VerifierKey {
        VerifierKey::new(&self.name, &self.key.verifying_key().to_bytes()).expect("valid name and key")
    }

    /// The signed note of `checkpoint`, whose origin must be the key name.
    pub fn sign(&self, checkpoint: &Checkpoint) -> Result<String, CheckpointError> {
        if checkpoint.origin != self.name {
            return Err(CheckpointError::WrongOrigin { got: checkpoint.origin.clone(), expected: self.name.clone() });
        }
        let body = checkpoint.body();
        let sig = self.key.sign(body.as_bytes()).to_bytes();
        let mut raw = Vec::with_capacity(68);
        raw.extend_from_slice(&key_id(&self.name, &self.key.verifying_key().to_bytes()));
        raw.extend_from_slice(&sig);
        Ok(format!("{body}\n{SIGNATURE_PREFIX}{} {}\n", self.name, BASE64.encode(&raw)))
    }
}

/// A public journal key, as `<name>+<hex key id>+<base64(0x01 ‖ public key)>`.
#[derive(Clone, PartialEq, Eq)]
pub struct VerifierKey {
    name: String,
    id: [u8; 4],
    key: VerifyingKey,
}

impl fmt::Debug for VerifierKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "VerifierKey({self})")
    }
}

impl fmt::Display for VerifierKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut raw = vec![ED25519_TYPE];
        raw.extend_from_slice(self.key.as_bytes());
        write!(f, "{}+{}+{}", self.name, hex::encode(self.id), BASE64.encode(&raw))
    }
}

impl VerifierKey {
    pub fn new(name: &str, public: &[u8; 32]) -> Result<Self, CheckpointError> {
        check_name(name)?;
        let key = VerifyingKey::from_bytes(public).map_err(|_| CheckpointError::BadKeyString("clé publique Ed25519 invalide".into()))?;
        Ok(Self { name: name.to_owned(), id: key_id(name, public), key })
    }

    /// Reads `<name>+<hex key id>+<base64(0x01 ‖ public key)>` and checks the key id.
    pub fn parse(text: &str) -> Result<Self, CheckpointError> {
        let bad = |m: &str| CheckpointError::BadKeyString(m.to_owned());
        let text = text.trim();
        let mut parts = text.splitn(3, '+');
        let (Some(name), Some(id_hex), Some(b64)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(bad("format attendu : <nom>+<identifiant hexadécimal>+<clé en base64>"));
        };
        let id: [u8; 4] = hex::decode(id_hex).ok().and_then(|v| v.try_into().ok()).ok_or_else(|| bad("identifiant : 8 chiffres hexadécimaux attendus"))?;
        let raw = BASE64.decode(b64.as_bytes()).map_err(|_| bad("clé : base64 illisible"))?;
        if raw.len() != 33 || raw[0] != ED25519_TYPE {
            return Err(bad("clé : 0x01 suivi de 32 octets (Ed25519) attendus"));
        }
        let public: [u8; 32] = raw[1..].try_into().expect("32 bytes");
        let key = Self::new(name, &public)?;
        if key.id != id {
            return Err(bad("l'identifiant ne correspond pas au nom et à la clé"));
        }
        Ok(key)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn id(&self) -> [u8; 4] {
        self.id
    }

    pub fn public_key(&self) -> [u8; 32] {
        self.key.to_bytes()
    }

    /// Checks the note's signature by this key and reads its checkpoint, whose origin
    /// must be the key name.
    pub fn verify(&self, note: &str) -> Result<Checkpoint, CheckpointError> {
        let parsed = parse_note(note)?;
        let mine: Vec<&NoteSignature> = parsed.signatures.iter().filter(|s| s.name == self.name && s.key_id == self.id).collect();
        if mine.is_empty() {
            return Err(CheckpointError::NotSignedByKey(self.to_string()));
        }
        let good = mine.iter().any(|s| {
            <[u8; 64]>::try_from(s.signature.as_slice())
                .map(|b| self.key.verify_strict(parsed.body.as_bytes(), &Signature::from_bytes(&b)).is_ok())
                .unwrap_or(false)
        });
        if !good {
            return Err(CheckpointError::BadSignature(self.to_string()));
        }
        let cp = Checkpoint::parse_body(&parsed.body)?;
        if cp.origin != self.name {
            return Err(CheckpointError::WrongOrigin { got: cp.origin, expected: self.name.clone() });
        }
        Ok(cp)
    }
}

// ---- export files and the stand-alone audit ------------------------------------------

/// One line of a JSON Lines export: the entry's canonical bytes (encoding v1), with
/// `"leaf_hash"` and `"chain_hash"` (lower-case hex) added as the last two fields.
pub fn export_line(r: &Record) -> String {
    let mut s = String::from_utf8(r.canonical_bytes()).expect("canonical bytes are UTF-8");
    s.pop();
    s.push_str(",\"leaf_hash\":\"");
    s.push_str(&r.leaf_hash);
    s.push_str("\",\"chain_hash\":\"");
    s.push_str(&r.chain_hash);
    s.push_str("\"}");
    s
}

/// The last line of an export: the signed checkpoint that covers it.
pub fn export_checkpoint_line(note: &str) -> String {
    serde_json::json!({ "checkpoint": note }).to_string()
}

/// A line of an export, read back.
#[derive(Debug, Clone, PartialEq)]
pub enum ExportLine {
    /// An entry, with the leaf and chain hashes the line states. `canonical` is false
    /// when the line is not exactly the canonical encoding of its fields (an edit).
    Entry { record: Record, canonical: bool },
    Checkpoint(String),
}

fn json_int(v: &Value, key: &str) -> Result<Option<i64>, String> {
    match v.get(key) {
        Some(Value::Null) => Ok(None),
        Some(n) => n.as_i64().map(Some).ok_or_else(|| format!("« {key} » : entier ou null attendu")),
        None => Err(format!("champ « {key} » absent")),
    }
}

fn json_str(v: &Value, key: &str) -> Result<Option<String>, String> {
    match v.get(key) {
        Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(format!("« {key} » : texte ou null attendu")),
        None => Err(format!("champ « {key} » absent")),
    }
}

/// Reads one line of an export.
pub fn parse_export_line(line: &str) -> Result<ExportLine, String> {
    let v: Value = serde_json::from_str(line).map_err(|e| format!("JSON illisible ({e})"))?;
    if let Some(note) = v.get("checkpoint") {
        return note.as_str().map(|n| ExportLine::Checkpoint(n.to_owned())).ok_or_else(|| "« checkpoint » : texte attendu".into());
    }
    const SUFFIX_LEN: usize = ",\"leaf_hash\":\"".len() + 64 + "\",\"chain_hash\":\"".len() + 64 + "\"}".len();
    let leaf_hash = json_str(&v, "leaf_hash")?.ok_or("« leaf_hash » absent")?;
    let chain_hash = json_str(&v, "chain_hash")?.ok_or("« chain_hash » absent")?;
    if v.get("v").and_then(Value::as_i64) != Some(crate::journal::ENCODING_VERSION as i64) {
        return Err("version d'encodage (« v ») inconnue".into());
    }
    let seq = json_int(&v, "seq")?.ok_or("« seq » absent")?;
    let at_text = json_str(&v, "at")?.ok_or("« at » absent")?;
    let at = crate::Timestamp::parse_rfc3339(&at_text).ok_or("« at » : date RFC 3339 attendue")?.micros();
    let details = match v.get("details") {
        Some(d @ Value::Object(_)) => crate::journal::sorted_json(d),
        _ => return Err("« details » : objet attendu".into()),
    };
    let record = Record {
        seq,
        at,
        action: json_str(&v, "action")?.ok_or("« action » absent")?,
        aidant: json_int(&v, "aidant")?,
        organisation: json_int(&v, "organisation")?,
        usager: json_int(&v, "usager")?,
        mandat: json_int(&v, "mandat")?,
        autorisation: json_int(&v, "autorisation")?,
        demarche: json_str(&v, "demarche")?,
        client: json_str(&v, "client")?,
        attestation_hash: json_str(&v, "attestation_hash")?,
        details,
        leaf_hash,
        chain_hash,
    };
    let canonical = line.len() > SUFFIX_LEN
        && line.is_char_boundary(line.len() - SUFFIX_LEN)
        && export_line(&record) == line;
    Ok(ExportLine::Entry { record, canonical })
}

/// Why an audit failed. Each message says what an auditor must look at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuditFailure {
    /// The entry no longer matches its leaf hash (or its chain hash).
    Edited { seq: i64 },
    /// The entry with this number is absent: deleted, a gap in the sequence.
    Deleted { seq: i64 },
    /// The entry with this number is not at its place (rows swapped or moved).
    Reordered { seq: i64 },
    /// Fewer entries than the checkpoint covers.
    Truncated { entries: i64, size: u64 },
    /// The tree of the checkpoint's size has another root: another history.
    Fork { size: u64, expected: String, found: String },
    /// The checkpoint itself: bad signature, other key, malformed.
    Checkpoint(CheckpointError),
    /// An inclusion or consistency proof that does not hold.
    ForgedProof(String),
    /// A line of the export that cannot be read.
    Unreadable { line: usize, reason: String },
}

impl fmt::Display for AuditFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AuditFailure::Edited { seq } => write!(f, "entrée modifiée : l'entrée n° {seq} ne correspond plus à son empreinte (premier numéro incorrect : {seq})"),
            AuditFailure::Deleted { seq } => write!(f, "entrée supprimée : l'entrée n° {seq} manque, la numérotation a un trou"),
            AuditFailure::Reordered { seq } => write!(f, "entrées permutées : l'entrée n° {seq} n'est pas à sa place"),
            AuditFailure::Truncated { entries, size } => {
                write!(f, "journal tronqué : {entries} entrée(s), alors que le point de contrôle en couvre {size}")
            }
            AuditFailure::Fork { size, expected, found } => write!(
                f,
                "historique divergent (fork) : l'arbre de taille {size} a la racine {found}, le point de contrôle signé de même taille annonce {expected}"
            ),
            AuditFailure::Checkpoint(e) => write!(f, "point de contrôle refusé : {e}"),
            AuditFailure::ForgedProof(m) => write!(f, "preuve falsifiée : {m}"),
            AuditFailure::Unreadable { line, reason } => write!(f, "export illisible à la ligne {line} : {reason}"),
        }
    }
}

/// Recomputes, entry after entry in sequence order, every leaf hash from the canonical
/// encoding, the chain and the Merkle tree; keeps the root at the size of the
/// checkpoint being audited.
#[derive(Debug)]
pub struct Audit {
    verifier: Verifier,
    tree: RootBuilder,
    target: u64,
    root_at_target: Option<Hash>,
    /// A number found missing: if it shows up later, rows were reordered.
    missing: Option<i64>,
    failure: Option<AuditFailure>,
}

impl Audit {
    /// An audit against a checkpoint of `size` entries.
    pub fn new(size: u64) -> Self {
        Self {
            verifier: Verifier::new(),
            tree: RootBuilder::new(),
            target: size,
            root_at_target: (size == 0).then(crate::merkle::empty_root),
            missing: None,
            failure: None,
        }
    }

    /// Entries checked and found good so far.
    pub fn entries(&self) -> i64 {
        self.verifier.verified()
    }

    /// The root of the entries checked so far.
    pub fn root(&self) -> Hash {
        self.tree.root()
    }

    /// Checks the next entry; `canonical` is false when its line was not in canonical
    /// form. Returns false once the outcome is known (a failure).
    pub fn push(&mut self, r: &Record, canonical: bool) -> bool {
        if self.failure.is_some() {
            return false;
        }
        if let Some(m) = self.missing {
            if r.seq == m {
                self.failure = Some(AuditFailure::Reordered { seq: m });
                return false;
            }
            return true;
        }
        let expected = self.verifier.verified() + 1;
        if !canonical && r.seq == expected {
            self.failure = Some(AuditFailure::Edited { seq: expected });
            return false;
        }
        if self.verifier.push(r) {
            self.tree.push(&r.compute_leaf());
            if self.tree.size() == self.target {
                self.root_at_target = Some(self.tree.root());
            }
            return true;
        }
        let fault = self.verifier.fault().cloned().expect("a fault");
        match fault.kind {
            FaultKind::Missing => {
                self.missing = Some(fault.seq);
                true
            }
            FaultKind::OutOfOrder => {
                self.failure = Some(AuditFailure::Reordered { seq: fault.seq });
                false
            }
            _ => {
                self.failure = Some(AuditFailure::Edited { seq: fault.seq });
                false
            }
        }
    }

    /// The outcome against the audited checkpoint: number of entries and root of the
    /// whole tree read.
    pub fn finish(mut self, checkpoint: &Checkpoint) -> Result<(i64, Hash), AuditFailure> {
        if let Some(f) = self.failure.take() {
            return Err(f);
        }
        if let Some(m) = self.missing {
            return Err(AuditFailure::Deleted { seq: m });
        }
        let entries = self.verifier.verified();
        if (entries as u64) < checkpoint.size {
            return Err(AuditFailure::Truncated { entries, size: checkpoint.size });
        }
        let root = self.root_at_target.expect("root kept at the checkpoint size");
        if root != checkpoint.root {
            return Err(AuditFailure::Fork { size: checkpoint.size, expected: hex::encode(checkpoint.root), found: hex::encode(root) });
        }
        Ok((entries, self.tree.root()))
    }
}

#[cfg(test)]
#[path = "checkpoint_tests.rs"]
mod tests;
