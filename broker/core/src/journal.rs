//! The journal: one enum of actions, entries, their canonical encoding (version 1),
//! leaf hashes and the hash chain, and the verifier that recomputes them.
//!
//! Canonical encoding v1 of an entry is the UTF-8 JSON text
//! `{"v":1,"seq":…,"at":"…","action":"…","aidant":…,"organisation":…,"usager":…,`
//! `"mandat":…,"autorisation":…,"demarche":…,"client":…,"attestation_hash":…,"details":…}`
//! with the fields in exactly that order, no white space, integers in decimal, absent
//! values as `null`, strings escaped as JSON does, `at` in RFC 3339 UTC with six
//! fractional digits, and `details` as stored: a JSON object with keys sorted, no white
//! space. Leaf hash = SHA-256(0x00 ‖ canonical bytes) (RFC 6962 leaf).
//! Chain hash: c₀ = 32 zero bytes, cₙ = SHA-256(cₙ₋₁ ‖ leafₙ).

mod event;

pub use event::{Actor, Event, Parties};

use crate::{Demarche, Timestamp};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use std::fmt;

pub const ENCODING_VERSION: u32 = 1;
pub const GENESIS: [u8; 32] = [0u8; 32];

macro_rules! actions {
    ($($variant:ident => $key:literal, $label:literal;)*) => {
        /// Every action the journal records. Stored by key; keys never change.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum Action { $($variant),* }

        impl Action {
            pub const ALL: &'static [Action] = &[$(Action::$variant),*];

            pub const fn key(self) -> &'static str {
                match self { $(Action::$variant => $key),* }
            }

            /// Short French description, for readers of the journal.
            pub const fn label(self) -> &'static str {
                match self { $(Action::$variant => $label),* }
            }
        }
    };
}

actions! {
    AidantLogin => "aidant_login", "Connexion d'un aidant";
    Reauthentication => "reauthentication", "Nouvelle vérification du second facteur";
    Logout => "logout", "Déconnexion";
    SigninLocked => "signin_locked", "Connexion bloquée après plusieurs échecs";
    SecondFactorAdded => "second_factor_added", "Second facteur ajouté";
    SecondFactorRemoved => "second_factor_removed", "Second facteur retiré";
    SecondFactorValidated => "second_factor_validated", "Second facteur validé";
    TotpCardsImported => "totp_cards_imported", "Cartes TOTP importées";
    UsagerIdentified => "usager_identified", "Usager identifié avec FranceConnect";
    MandatCreated => "mandat_created", "Mandat créé";
    AttestationCreated => "attestation_created", "Attestation de mandat créée";
    AutorisationCreated => "autorisation_created", "Autorisation créée";
    AutorisationUsed => "autorisation_used", "Autorisation utilisée";
    AutorisationRevoked => "autorisation_revoked", "Autorisation révoquée";
    MandatRevoked => "mandat_revoked", "Mandat révoqué";
    MandatRenewed => "mandat_renewed", "Mandat renouvelé";
    OrganisationCreated => "organisation_created", "Structure créée";
    OrganisationSwitched => "organisation_switched", "Changement de structure";
    OrganisationDemarchesChanged => "organisation_demarches_changed", "Démarches autorisées modifiées";
    AidantCreated => "aidant_created", "Aidant créé";
    AidantDeactivated => "aidant_deactivated", "Aidant désactivé";
    AidantReactivated => "aidant_reactivated", "Aidant réactivé";
    AidantAdded => "aidant_added", "Aidant ajouté à une structure";
    ClientRegistered => "client_registered", "Client OIDC enregistré";
    ClientChanged => "client_changed", "Client OIDC modifié";
    SigningKeyRotated => "signing_key_rotated", "Clé de signature changée";
    JournalCheckpoint => "journal_checkpoint", "Point de contrôle du journal";
    JournalExported => "journal_exported", "Journal exporté";
    UsagerNoticesChanged => "usager_notices_changed", "Avis d'utilisation activés ou désactivés par l'usager";
}

impl Action {
    pub fn from_key(key: &str) -> Option<Action> {
        Action::ALL.iter().copied().find(|a| a.key() == key)
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.key())
    }
}

/// An entry to append: what happened and to whom. The store gives it its sequence
/// number inside the transaction of the change it records, and its time: `at` when the
/// change has one (its clock), the wall time of the append otherwise.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub action: Action,
    pub aidant: Option<i64>,
    pub organisation: Option<i64>,
    pub usager: Option<i64>,
    pub mandat: Option<i64>,
    pub autorisation: Option<i64>,
    pub demarche: Option<Demarche>,
    pub client: Option<String>,
    pub attestation_hash: Option<String>,
    pub details: Map<String, Value>,
    /// The instant of the change, when it has its own clock.
    pub at: Option<Timestamp>,
}

impl Entry {
    pub fn new(action: Action) -> Self {
        Self {
            action,
            aidant: None,
            organisation: None,
            usager: None,
            mandat: None,
            autorisation: None,
            demarche: None,
            client: None,
            attestation_hash: None,
            details: Map::new(),
            at: None,
        }
    }

    /// Stamps the entry with the instant of the change.
    pub fn at(mut self, at: Timestamp) -> Self {
        self.at = Some(at);
        self
    }

    pub fn aidant(mut self, id: i64) -> Self {
        self.aidant = Some(id);
        self
    }
    pub fn organisation(mut self, id: i64) -> Self {
        self.organisation = Some(id);
        self
    }
    /// The aidant's current organisation, when they have one.
    pub fn in_organisation(mut self, id: Option<i64>) -> Self {
        self.organisation = id;
        self
    }
    pub fn usager(mut self, id: i64) -> Self {
        self.usager = Some(id);
        self
    }
    pub fn mandat(mut self, id: i64) -> Self {
        self.mandat = Some(id);
        self
    }
    pub fn autorisation(mut self, id: i64) -> Self {
        self.autorisation = Some(id);
        self
    }
    pub fn demarche(mut self, d: Demarche) -> Self {
        self.demarche = Some(d);
        self
    }
    pub fn client(mut self, id: impl Into<String>) -> Self {
        self.client = Some(id.into());
        self
    }
    pub fn attestation_hash(mut self, h: impl Into<String>) -> Self {
        self.attestation_hash = Some(h.into());
        self
    }
    pub fn detail(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.details.insert(key.to_owned(), value.into());
        self
    }

    /// The entry in its stored form at `at`, before it has a sequence number.
    pub fn record(&self, at: Timestamp) -> Record {
        Record {
            seq: 0,
            at: at.micros(),
            action: self.action.key().to_owned(),
            aidant: self.aidant,
            organisation: self.organisation,
            usager: self.usager,
            mandat: self.mandat,
            autorisation: self.autorisation,
            demarche: self.demarche.map(|d| d.key().to_owned()),
            client: self.client.clone(),
            attestation_hash: self.attestation_hash.clone(),
            details: sorted_json(&Value::Object(self.details.clone())),
            leaf_hash: String::new(),
            chain_hash: String::new(),
        }
    }

    /// The entry as it is stored, once sequenced.
    pub fn seal(&self, seq: i64, at: Timestamp, prev_chain: &[u8; 32]) -> Record {
        self.record(at).seal(seq, prev_chain)
    }
}

/// JSON text with the keys of every object sorted (byte order) and no white space: the
/// canonical form of `details`. Sorted here explicitly, whatever the map order of
/// serde_json (a dependency, josekit, turns on its `preserve_order` feature, which makes
/// maps keep insertion order across the whole build).
pub fn sorted_json(v: &Value) -> String {
    fn write(v: &Value, out: &mut String) {
        match v {
            Value::Object(m) => {
                let mut entries: Vec<(&String, &Value)> = m.iter().collect();
                entries.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
                out.push('{');
                for (i, (k, v)) in entries.into_iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    out.push_str(&Value::String(k.clone()).to_string());
                    out.push(':');
                    write(v, out);
                }
                out.push('}');
            }
            Value::Array(items) => {
                out.push('[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    write(item, out);
                }
                out.push(']');
            }
            other => out.push_str(&other.to_string()),
        }
    }
    let mut out = String::new();
    write(v, &mut out);
    out
}

/// An entry as stored: every field in its stored form, so that verification works on
/// exactly what the database holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub seq: i64,
    /// Microseconds since the Unix epoch, UTC.
    pub at: i64,
    pub action: String,
    pub aidant: Option<i64>,
    pub organisation: Option<i64>,
    pub usager: Option<i64>,
    pub mandat: Option<i64>,
    pub autorisation: Option<i64>,
    pub demarche: Option<String>,
    pub client: Option<String>,
    pub attestation_hash: Option<String>,
    pub details: String,
    pub leaf_hash: String,
    pub chain_hash: String,
}

fn push_opt_int(out: &mut String, v: Option<i64>) {
    match v {
        Some(n) => out.push_str(&n.to_string()),
        None => out.push_str("null"),
    }
}

fn push_opt_str(out: &mut String, v: Option<&str>) {
    match v {
        Some(s) => out.push_str(&Value::String(s.to_owned()).to_string()),
        None => out.push_str("null"),
    }
}

impl Record {
    /// Gives the record its sequence number and computes its leaf and chain hashes.
    pub fn seal(mut self, seq: i64, prev_chain: &[u8; 32]) -> Record {
        self.seq = seq;
        let leaf = self.compute_leaf();
        self.leaf_hash = hex::encode(leaf);
        self.chain_hash = hex::encode(chain(prev_chain, &leaf));
        self
    }

    /// Canonical bytes, encoding version 1 (see the module documentation).
    pub fn canonical_bytes(&self) -> Vec<u8> {
        let mut o = String::with_capacity(256 + self.details.len());
        o.push_str("{\"v\":1,\"seq\":");
        o.push_str(&self.seq.to_string());
        o.push_str(",\"at\":");
        push_opt_str(&mut o, Some(&Timestamp::from_micros(self.at).rfc3339()));
        o.push_str(",\"action\":");
        push_opt_str(&mut o, Some(&self.action));
        o.push_str(",\"aidant\":");
        push_opt_int(&mut o, self.aidant);
        o.push_str(",\"organisation\":");
        push_opt_int(&mut o, self.organisation);
        o.push_str(",\"usager\":");
        push_opt_int(&mut o, self.usager);
        o.push_str(",\"mandat\":");
        push_opt_int(&mut o, self.mandat);
        o.push_str(",\"autorisation\":");
        push_opt_int(&mut o, self.autorisation);
        o.push_str(",\"demarche\":");
        push_opt_str(&mut o, self.demarche.as_deref());
        o.push_str(",\"client\":");
        push_opt_str(&mut o, self.client.as_deref());
        o.push_str(",\"attestation_hash\":");
        push_opt_str(&mut o, self.attestation_hash.as_deref());
        o.push_str(",\"details\":");
        o.push_str(&self.details);
        o.push('}');
        o.into_bytes()
    }

    pub fn compute_leaf(&self) -> [u8; 32] {
        leaf_hash(&self.canonical_bytes())
    }
}

/// RFC 6962 leaf hash: SHA-256(0x00 ‖ data).
pub fn leaf_hash(data: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update([0u8]);
    h.update(data);
    h.finalize().into()
}

/// Next link of the chain: SHA-256(previous ‖ leaf).
pub fn chain(prev: &[u8; 32], leaf: &[u8; 32]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(prev);
    h.update(leaf);
    h.finalize().into()
}

pub fn parse_hash(hex_text: &str) -> Option<[u8; 32]> {
    let v = hex::decode(hex_text).ok()?;
    v.try_into().ok()
}

/// The first inconsistency found, with the sequence number where it shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fault {
    pub seq: i64,
    pub kind: FaultKind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultKind {
    /// The entry expected at `seq` is missing (deleted, or rows reordered).
    Missing,
    /// An entry with this number appears where a later one was expected.
    OutOfOrder,
    /// The entry's content does not match its leaf hash (edited).
    ContentChanged,
    /// The chain hash stored with the entry does not follow from the previous entries.
    ChainBroken,
    /// The journal ends before the head records it should (truncated).
    Truncated,
    /// The head records fewer entries than the journal holds, or another last hash.
    HeadMismatch,
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = match self.kind {
            FaultKind::Missing => "entrée manquante (supprimée ou déplacée)",
            FaultKind::OutOfOrder => "entrée hors d'ordre (numéro déjà vu ou permuté)",
            FaultKind::ContentChanged => "contenu modifié (ne correspond plus à son empreinte)",
            FaultKind::ChainBroken => "chaînage rompu (empreinte de chaîne incorrecte)",
            FaultKind::Truncated => "journal tronqué (entrées finales supprimées)",
            FaultKind::HeadMismatch => "tête du journal incohérente",
        };
        write!(f, "numéro {} : {}", self.seq, what)
    }
}

/// Recomputes leaf and chain hashes entry after entry, in sequence order, and keeps
/// the first fault.
#[derive(Debug, Clone)]
pub struct Verifier {
    next_seq: i64,
    chain: [u8; 32],
    fault: Option<Fault>,
}

impl Default for Verifier {
    fn default() -> Self {
        Self { next_seq: 1, chain: GENESIS, fault: None }
    }
}

impl Verifier {
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of entries checked and found good so far.
    pub fn verified(&self) -> i64 {
        self.next_seq - 1
    }

    pub fn fault(&self) -> Option<&Fault> {
        self.fault.as_ref()
    }

    pub fn chain_hash(&self) -> [u8; 32] {
        self.chain
    }

    /// Checks the next record; returns false once a fault has been found.
    pub fn push(&mut self, r: &Record) -> bool {
        if self.fault.is_some() {
            return false;
        }
        let expected = self.next_seq;
        let kind = if r.seq > expected {
            Some(FaultKind::Missing)
        } else if r.seq < expected {
            Some(FaultKind::OutOfOrder)
        } else {
            let leaf = r.compute_leaf();
            if parse_hash(&r.leaf_hash) != Some(leaf) {
                Some(FaultKind::ContentChanged)
            } else {
                let next = chain(&self.chain, &leaf);
                if parse_hash(&r.chain_hash) != Some(next) {
                    Some(FaultKind::ChainBroken)
                } else {
                    self.chain = next;
                    None
                }
            }
        };
        match kind {
            Some(kind) => {
                self.fault = Some(Fault { seq: expected, kind });
                false
            }
            None => {
                self.next_seq += 1;
                true
            }
        }
    }

    /// Compares what was read with the head (last sequence number and chain hash the
    /// appender recorded). Returns the first fault, if any.
    pub fn finish(mut self, head_seq: i64, head_chain: &str) -> Result<i64, Fault> {
        if let Some(f) = self.fault.take() {
            return Err(f);
        }
        let last = self.next_seq - 1;
        if last < head_seq {
            return Err(Fault { seq: self.next_seq, kind: FaultKind::Truncated });
        }
        if last > head_seq || (last > 0 && parse_hash(head_chain) != Some(self.chain)) {
            return Err(Fault { seq: head_seq.max(1), kind: FaultKind::HeadMismatch });
        }
        Ok(last)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn build(n: i64) -> Vec<Record> {
        let mut prev = GENESIS;
        (1..=n)
            .map(|seq| {
                let e = Entry::new(Action::MandatCreated)
                    .aidant(seq)
                    .organisation(2)
                    .demarche(Demarche::Argent)
                    .detail("z", 1)
                    .detail("a", "é\"x");
                let r = e.seal(seq, Timestamp::from_micros(1_000_000 * seq), &prev);
                prev = parse_hash(&r.chain_hash).unwrap();
                r
            })
            .collect()
    }

    fn verify(rows: &[Record], head_seq: i64, head_chain: &str) -> Result<i64, Fault> {
        let mut v = Verifier::new();
        for r in rows {
            if !v.push(r) {
                break;
            }
        }
        v.finish(head_seq, head_chain)
    }

    #[test]
    fn action_keys_are_unique_and_round_trip() {
        let mut keys: Vec<_> = Action::ALL.iter().map(|a| a.key()).collect();
        keys.sort();
        keys.dedup();
        assert_eq!(keys.len(), Action::ALL.len());
        for a in Action::ALL {
            assert_eq!(Action::from_key(a.key()), Some(*a));
        }
    }

    #[test]
    fn details_keys_are_sorted_at_every_depth_whatever_the_insertion_order() {
        let v: Value = serde_json::from_str(r#"{"z":1,"a":{"y":[{"b":1,"a":"é\"x"}],"c":null},"M":true}"#).unwrap();
        assert_eq!(sorted_json(&v), r#"{"M":true,"a":{"c":null,"y":[{"a":"é\"x","b":1}]},"z":1}"#);
    }

    #[test]
    fn canonical_encoding_v1_is_stable() {
        let r = Entry::new(Action::AidantCreated)
            .aidant(3)
            .organisation(1)
            .detail("via", "cli")
            .detail("b", 2)
            .seal(1, Timestamp::from_micros(1_700_000_000_123_456), &GENESIS);
        assert_eq!(
            String::from_utf8(r.canonical_bytes()).unwrap(),
            r#"{"v":1,"seq":1,"at":"2023-11-14T22:13:20.123456Z","action":"aidant_created","aidant":3,"organisation":1,"usager":null,"mandat":null,"autorisation":null,"demarche":null,"client":null,"attestation_hash":null,"details":{"b":2,"via":"cli"}}"#
        );
        let mut expect = Sha256::new();
        expect.update([0u8]);
        expect.update(r.canonical_bytes());
        assert_eq!(r.leaf_hash, hex::encode(expect.finalize()));
        let mut c = Sha256::new();
        c.update(GENESIS);
        c.update(parse_hash(&r.leaf_hash).unwrap());
        assert_eq!(r.chain_hash, hex::encode(c.finalize()));
    }

    #[test]
    fn intact_journal_verifies() {
        let rows = build(20);
        assert_eq!(verify(&rows, 20, &rows[19].chain_hash), Ok(20));
        assert_eq!(verify(&[], 0, ""), Ok(0));
    }

    #[test]
    fn edited_entry_is_reported_at_its_number() {
        let mut rows = build(20);
        rows[6].details = r#"{"a":"autre","z":1}"#.into();
        let head = rows[19].chain_hash.clone();
        assert_eq!(verify(&rows, 20, &head), Err(Fault { seq: 7, kind: FaultKind::ContentChanged }));
    }

    #[test]
    fn edited_entry_with_recomputed_leaf_breaks_the_chain() {
        let mut rows = build(20);
        rows[6].aidant = Some(99);
        rows[6].leaf_hash = hex::encode(rows[6].compute_leaf());
        let head = rows[19].chain_hash.clone();
        assert_eq!(verify(&rows, 20, &head), Err(Fault { seq: 7, kind: FaultKind::ChainBroken }));
    }

    #[test]
    fn deleted_swapped_and_truncated_entries_are_reported() {
        let rows = build(20);
        let head = rows[19].chain_hash.clone();
        let mut deleted = rows.clone();
        deleted.remove(9);
        assert_eq!(verify(&deleted, 20, &head), Err(Fault { seq: 10, kind: FaultKind::Missing }));

        let mut swapped = rows.clone();
        swapped.swap(4, 5);
        assert_eq!(verify(&swapped, 20, &head), Err(Fault { seq: 5, kind: FaultKind::Missing }));

        // Swapping the numbers as well as the rows: content no longer matches its number.
        let mut renumbered = rows.clone();
        renumbered.swap(4, 5);
        renumbered[4].seq = 5;
        renumbered[5].seq = 6;
        assert_eq!(verify(&renumbered, 20, &head), Err(Fault { seq: 5, kind: FaultKind::ContentChanged }));

        let truncated = &rows[..15];
        assert_eq!(verify(truncated, 20, &head), Err(Fault { seq: 16, kind: FaultKind::Truncated }));
        assert_eq!(verify(&rows, 19, &head).unwrap_err().kind, FaultKind::HeadMismatch);
    }
}

#[cfg(test)]
mod doc_tests {
    use super::Action;

    #[test]
    fn every_action_is_documented() {
        let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/journal.md")).unwrap();
        for a in Action::ALL {
            assert!(doc.contains(&format!("| `{}` |", a.key())), "docs/journal.md does not list {}", a.key());
        }
    }
}
