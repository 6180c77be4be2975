//! The content of a printed attestation (mandat or revocation) and its fingerprint.
//!
//! The fingerprint is the lowercase hexadecimal SHA-256 of [`AttestationContent::canonical`],
//! a plain UTF-8 text documented in `docs/attestation.md` so that anyone holding the
//! paper can recompute it. Everything that is printed and matters legally is in the
//! content; nothing else (no page layout, no time of printing) is, so printing the same
//! attestation again gives the same fingerprint.

use crate::{Demarche, Timestamp};
use sha2::{Digest, Sha256};

/// Version of the legal text printed on attestations. Changing the wording of the
/// printed legal text means changing this version.
pub const LEGAL_TEXT_VERSION: &str = "2026-11-23";

/// First line of the canonical form.
pub const CANONICAL_HEADER: &str = "aidants-connect-attestation/1";

/// What an attestation is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Mandat,
    Revocation,
}

impl Kind {
    pub const fn key(self) -> &'static str {
        match self {
            Kind::Mandat => "mandat",
            Kind::Revocation => "revocation",
        }
    }

    pub fn from_key(key: &str) -> Option<Kind> {
        match key {
            "mandat" => Some(Kind::Mandat),
            "revocation" => Some(Kind::Revocation),
            _ => None,
        }
    }
}

/// Everything the fingerprint covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttestationContent {
    pub kind: Kind,
    pub legal_text_version: String,
    pub mandat_id: i64,
    /// The mandataire.
    pub organisation_name: String,
    pub organisation_siret: String,
    pub organisation_address: String,
    /// The mandant, as FranceConnect gave their identity.
    pub usager_given_name: String,
    pub usager_family_name: String,
    pub usager_birthdate: String,
    pub usager_birthplace: String,
    pub usager_birthcountry: String,
    /// Démarches covered (for a revocation: the démarches revoked). Kept in canonical order.
    pub demarches: Vec<Demarche>,
    pub duration_days: i64,
    /// Creation of the mandat: the date printed as « Fait le ».
    pub created_at: Timestamp,
    pub expires_at: Timestamp,
    /// For a revocation: when it took effect.
    pub revoked_at: Option<Timestamp>,
}

/// Escapes a value so that it holds on one line: `\` → `\\`, line feed → `\n`,
/// carriage return → `\r`.
fn escape(v: &str) -> String {
    let mut o = String::with_capacity(v.len());
    for ch in v.chars() {
        match ch {
            '\\' => o.push_str("\\\\"),
            '\n' => o.push_str("\\n"),
            '\r' => o.push_str("\\r"),
            c => o.push(c),
        }
    }
    o
}

impl AttestationContent {
    /// The canonical text form: one `name=value` line per field, in a fixed order, each
    /// line ended by a line feed (U+000A), values escaped by [`escape`].
    pub fn canonical(&self) -> String {
        let mut demarches = self.demarches.clone();
        demarches.sort();
        demarches.dedup();
        let fields: [(&str, String); 16] = [
            ("kind", self.kind.key().to_owned()),
            ("legal_text_version", self.legal_text_version.clone()),
            ("mandat", self.mandat_id.to_string()),
            ("organisation_name", self.organisation_name.clone()),
            ("organisation_siret", self.organisation_siret.clone()),
            ("organisation_address", self.organisation_address.clone()),
            ("usager_given_name", self.usager_given_name.clone()),
            ("usager_family_name", self.usager_family_name.clone()),
            ("usager_birthdate", self.usager_birthdate.clone()),
            ("usager_birthplace", self.usager_birthplace.clone()),
            ("usager_birthcountry", self.usager_birthcountry.clone()),
            ("demarches", Demarche::join(&demarches)),
            ("duration_days", self.duration_days.to_string()),
            ("created_at", self.created_at.rfc3339()),
            ("expires_at", self.expires_at.rfc3339()),
            ("revoked_at", self.revoked_at.map(Timestamp::rfc3339).unwrap_or_default()),
        ];
        let mut o = String::new();
        o.push_str(CANONICAL_HEADER);
        o.push('\n');
        for (name, value) in fields {
            o.push_str(name);
            o.push('=');
            o.push_str(&escape(&value));
            o.push('\n');
        }
        o
    }

    /// Lowercase hexadecimal SHA-256 of the canonical form's UTF-8 bytes (64 characters).
    pub fn fingerprint(&self) -> String {
        hex::encode(Sha256::digest(self.canonical().as_bytes()))
    }
}

/// True when `s` looks like a fingerprint: 64 lowercase hexadecimal characters.
pub fn is_fingerprint(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> AttestationContent {
        AttestationContent {
            kind: Kind::Mandat,
            legal_text_version: LEGAL_TEXT_VERSION.to_owned(),
            mandat_id: 42,
            organisation_name: "Maison France services de Trifouilly".into(),
            organisation_siret: "12345678901234".into(),
            organisation_address: "1 place de la Mairie, 12345 Trifouilly".into(),
            usager_given_name: "Angela Claire Louise".into(),
            usager_family_name: "DUBOIS".into(),
            usager_birthdate: "1962-08-24".into(),
            usager_birthplace: "75107".into(),
            usager_birthcountry: "99100".into(),
            demarches: vec![Demarche::Argent, Demarche::Social],
            duration_days: 31,
            created_at: Timestamp::from_micros(1_795_000_000_123_456),
            expires_at: Timestamp::from_micros(1_795_000_000_123_456).plus_days(31),
            revoked_at: None,
        }
    }

    #[test]
    fn canonical_form_is_exactly_as_documented() {
        let c = sample();
        let expected = "aidants-connect-attestation/1\n\
kind=mandat\n\
legal_text_version=2026-11-23\n\
mandat=42\n\
organisation_name=Maison France services de Trifouilly\n\
organisation_siret=12345678901234\n\
organisation_address=1 place de la Mairie, 12345 Trifouilly\n\
usager_given_name=Angela Claire Louise\n\
usager_family_name=DUBOIS\n\
usager_birthdate=1962-08-24\n\
usager_birthplace=75107\n\
usager_birthcountry=99100\n\
demarches=social,argent\n\
duration_days=31\n\
created_at=2026-11-18T11:06:40.123456Z\n\
expires_at=2026-12-19T11:06:40.123456Z\n\
revoked_at=\n";
        assert_eq!(c.canonical(), expected);
        assert_eq!(c.fingerprint(), hex::encode(Sha256::digest(expected.as_bytes())));
        // The value `sha256sum` gives for the text above (the example of docs/attestation.md).
        assert_eq!(c.fingerprint(), "b1b83994bffe3b5518748a6ea738ec5fb67b82838f86b70271e9bdaf07142bce");
    }

    #[test]
    fn fingerprint_is_stable_and_well_formed() {
        let a = sample().fingerprint();
        assert_eq!(a, sample().fingerprint());
        assert!(is_fingerprint(&a), "{a}");
        let mut reordered = sample();
        reordered.demarches = vec![Demarche::Social, Demarche::Argent, Demarche::Social];
        assert_eq!(reordered.fingerprint(), a, "démarches are a set in canonical order");
    }

    #[test]
    fn every_field_changes_the_fingerprint() {
        let base = sample().fingerprint();
        type Change = Box<dyn Fn(&mut AttestationContent)>;
        let changes: Vec<(&str, Change)> = vec![
            ("kind", Box::new(|c| c.kind = Kind::Revocation)),
            ("legal_text_version", Box::new(|c| c.legal_text_version = "2020-01-01".into())),
            ("mandat_id", Box::new(|c| c.mandat_id = 43)),
            ("organisation_name", Box::new(|c| c.organisation_name.push('x'))),
            ("organisation_siret", Box::new(|c| c.organisation_siret = "12345678901235".into())),
            ("organisation_address", Box::new(|c| c.organisation_address.push('x'))),
            ("usager_given_name", Box::new(|c| c.usager_given_name = "Angela".into())),
            ("usager_family_name", Box::new(|c| c.usager_family_name = "DUPONT".into())),
            ("usager_birthdate", Box::new(|c| c.usager_birthdate = "1962-08-25".into())),
            ("usager_birthplace", Box::new(|c| c.usager_birthplace = "75108".into())),
            ("usager_birthcountry", Box::new(|c| c.usager_birthcountry = "99101".into())),
            ("demarches", Box::new(|c| c.demarches.push(Demarche::Justice))),
            ("duration_days", Box::new(|c| c.duration_days = 182)),
            ("created_at", Box::new(|c| c.created_at = c.created_at.plus_seconds(1))),
            ("expires_at", Box::new(|c| c.expires_at = c.expires_at.plus_days(1))),
            ("revoked_at", Box::new(|c| c.revoked_at = Some(c.created_at))),
        ];
        let mut seen = std::collections::HashSet::new();
        for (name, change) in changes {
            let mut c = sample();
            change(&mut c);
            let fp = c.fingerprint();
            assert_ne!(fp, base, "changing {name} must change the fingerprint");
            assert!(seen.insert(fp), "{name} collides with another change");
        }
    }

    #[test]
    fn values_cannot_forge_another_line() {
        let mut a = sample();
        a.organisation_address = "1 rue\nusager_family_name=X".into();
        let canonical = a.canonical();
        assert_eq!(canonical.lines().count(), 17);
        assert!(canonical.contains("organisation_address=1 rue\\nusager_family_name=X\n"));
        let mut b = sample();
        b.organisation_address = "a\\nb".into();
        let mut c = sample();
        c.organisation_address = "a\nb".into();
        assert_ne!(b.fingerprint(), c.fingerprint());
    }

    #[test]
    fn kind_keys_round_trip() {
        for k in [Kind::Mandat, Kind::Revocation] {
            assert_eq!(Kind::from_key(k.key()), Some(k));
        }
        assert_eq!(Kind::from_key("autre"), None);
    }
}
