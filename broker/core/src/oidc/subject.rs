//! Which `sub` a client receives (OpenID Connect Core §8), and the `act` claim.
//!
//! A **public** client receives the usager's broker id. A **pairwise** client receives
//! `BASE64URL(HMAC-SHA-256(K, "usager" ‖ 0 ‖ sector ‖ 0 ‖ broker id))`, 43 ASCII
//! characters: stable for a (sector, usager), unrelated between sectors, and revealing
//! nothing without `K`. The sector is the client's `--sector-identifier` host, or its
//! `client_id` when it has none (each client is then a sector of its own). `K` is
//! derived from the usager-salt key of the key directory, which already must never
//! change (usager ids hang on it); signing-key rotation does not touch it.
//!
//! The `act` claim (RFC 8693 §4.1) names the acting aidant by a pairwise id of the same
//! kind (`"aidant"` instead of `"usager"`), and their organisation.

use super::claims::Map;
use crate::client::SubjectType;
use serde_json::{json, Value};

/// The key of pairwise subjects.
#[derive(Clone)]
pub struct PairwiseKey([u8; 32]);

impl std::fmt::Debug for PairwiseKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PairwiseKey(…)")
    }
}

const DERIVATION_LABEL: &[u8] = b"aidants-connect/pairwise-subject/v1";

impl PairwiseKey {
    /// Derived from the usager-salt key: `HMAC-SHA-256(salt, label)`.
    pub fn derive(usager_salt: &[u8; 32]) -> Self {
        Self(hmac(usager_salt, &[DERIVATION_LABEL]))
    }

    fn pairwise(&self, kind: &str, sector: &str, id: &str) -> String {
        let mac = hmac(&self.0, &[kind.as_bytes(), b"\0", sector.as_bytes(), b"\0", id.as_bytes()]);
        data_encoding::BASE64URL_NOPAD.encode(&mac)
    }
}

use crate::secret::hmac_sha256 as hmac;

/// How one client sees subjects.
#[derive(Debug, Clone, Copy)]
pub struct SubjectRule<'a> {
    pub subject_type: SubjectType,
    /// The sector identifier, or the client id when the client has none.
    pub sector: &'a str,
}

impl SubjectRule<'_> {
    /// The `sub` this client receives for the usager whose broker id is `usager_sub`.
    pub fn usager(&self, key: &PairwiseKey, usager_sub: &str) -> String {
        match self.subject_type {
            SubjectType::Public => usager_sub.to_owned(),
            SubjectType::Pairwise => key.pairwise("usager", self.sector, usager_sub),
        }
    }

    /// The acting aidant's id for this client: always pairwise (the aidant's own account
    /// id never leaves the broker).
    pub fn aidant(&self, key: &PairwiseKey, aidant_id: i64) -> String {
        key.pairwise("aidant", self.sector, &aidant_id.to_string())
    }
}

/// The organisation an aidant acts for, as the `act` claim names it.
#[derive(Debug, Clone, Copy)]
pub struct ActingOrganisation<'a> {
    pub siret: &'a str,
    pub name: &'a str,
}

/// The `act` claim: `{"sub": <aidant's pairwise id>, "organisation": {"siret", "name"}}`.
pub fn act_claim(rule: &SubjectRule<'_>, key: &PairwiseKey, aidant_id: i64, org: ActingOrganisation<'_>) -> Value {
    json!({
        "sub": rule.aidant(key, aidant_id),
        "organisation": { "siret": org.siret, "name": org.name },
    })
}

/// Adds `act` to a claim set.
pub fn insert_act(claims: &mut Map<String, Value>, act: Option<Value>) {
    if let Some(act) = act {
        claims.insert("act".into(), act);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SALT: [u8; 32] = [7; 32];

    fn rule(t: SubjectType, sector: &str) -> SubjectRule<'_> {
        SubjectRule { subject_type: t, sector }
    }

    #[test]
    fn public_is_the_broker_id_and_pairwise_depends_on_the_sector_only() {
        let key = PairwiseKey::derive(&SALT);
        let u = "b3f1c2d4e5a6978899aabbccddeeff00112233445566778899aabbccddeeff00";
        assert_eq!(rule(SubjectType::Public, "c1").usager(&key, u), u);
        let a = rule(SubjectType::Pairwise, "c1").usager(&key, u);
        let b = rule(SubjectType::Pairwise, "c2").usager(&key, u);
        assert_ne!(a, b, "two sectors, two subjects");
        assert_eq!(a, rule(SubjectType::Pairwise, "c1").usager(&key, u), "stable");
        assert_ne!(a, rule(SubjectType::Pairwise, "c1").usager(&key, "autre-usager"));
        assert_eq!(a.len(), 43);
        assert!(a.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
        assert!(!a.contains(u) && !a.contains("c1"));
        // Another salt (another deployment): other subjects.
        assert_ne!(a, rule(SubjectType::Pairwise, "c1").usager(&PairwiseKey::derive(&[8; 32]), u));
        // The separator keeps (sector, id) pairs apart.
        assert_ne!(
            rule(SubjectType::Pairwise, "ab").usager(&key, "c"),
            rule(SubjectType::Pairwise, "a").usager(&key, "bc")
        );
    }

    #[test]
    fn the_act_claim_names_the_aidant_pairwise_and_the_organisation() {
        let key = PairwiseKey::derive(&SALT);
        let r = rule(SubjectType::Public, "c1");
        let act = act_claim(&r, &key, 42, ActingOrganisation { siret: "12345678901234", name: "CCAS de Rennes" });
        assert_eq!(act["organisation"], json!({"siret": "12345678901234", "name": "CCAS de Rennes"}));
        let sub = act["sub"].as_str().unwrap();
        assert_eq!(sub.len(), 43);
        assert_ne!(sub, "42");
        assert_ne!(sub, rule(SubjectType::Public, "c2").aidant(&key, 42), "per sector");
        assert_ne!(sub, r.usager(&PairwiseKey::derive(&SALT), "42"), "never a usager's subject");
        let mut claims = Map::new();
        insert_act(&mut claims, None);
        assert!(claims.is_empty());
        insert_act(&mut claims, Some(act.clone()));
        assert_eq!(claims["act"], act);
    }
}
