//! The test identities offered on the simulator's page, and the failure scenarios.

use serde::{Deserialize, Serialize};

/// A fictitious person, with the identité pivot in FranceConnect's formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Identity {
    /// Stable key: the form value, and the basis of the pairwise `sub`.
    pub key: &'static str,
    /// What makes this identity useful, shown on the page.
    pub description: &'static str,
    pub given_name: &'static str,
    pub family_name: &'static str,
    pub preferred_username: Option<&'static str>,
    /// `YYYY-MM-DD`, or `YYYY-MM-00` / `YYYY-00-00` when partly unknown.
    pub birthdate: &'static str,
    /// `female` or `male`.
    pub gender: &'static str,
    /// INSEE commune code when born in France, empty string otherwise.
    pub birthplace: &'static str,
    /// INSEE COG country code; 99100 is France.
    pub birthcountry: &'static str,
    pub email: &'static str,
}

/// The identities, in the order of the page.
pub const IDENTITIES: [Identity; 6] = [
    Identity {
        key: "marie-martin",
        description: "Cas le plus courant : née en France (Paris 7e), date de naissance complète.",
        given_name: "Marie",
        family_name: "Martin",
        preferred_username: None,
        birthdate: "1962-08-24",
        gender: "female",
        birthplace: "75107",
        birthcountry: "99100",
        email: "marie.martin@example.com",
    },
    Identity {
        key: "karim-benali",
        description: "Né au Maroc : la commune de naissance est vide.",
        given_name: "Karim",
        family_name: "Benali",
        preferred_username: None,
        birthdate: "1975-03-02",
        gender: "male",
        birthplace: "",
        birthcountry: "99350",
        email: "karim.benali@example.com",
    },
    Identity {
        key: "aminata-diallo",
        description: "Née au Sénégal : seule l'année de naissance est connue.",
        given_name: "Aminata",
        family_name: "Diallo",
        preferred_username: None,
        birthdate: "1958-00-00",
        gender: "female",
        birthplace: "",
        birthcountry: "99341",
        email: "aminata.diallo@example.com",
    },
    Identity {
        key: "jean-pierre-durand",
        description: "Prénoms composés, nom d'usage (Durand-Leroy) différent du nom de naissance.",
        given_name: "Jean Pierre",
        family_name: "Durand",
        preferred_username: Some("Durand-Leroy"),
        birthdate: "1949-11-30",
        gender: "male",
        birthplace: "59350",
        birthcountry: "99100",
        email: "jean-pierre.durand@example.com",
    },
    Identity {
        key: "helene-lefevre",
        description: "Prénom, nom et nom d'usage (Ménard) accentués.",
        given_name: "Hélène",
        family_name: "Lefèvre",
        preferred_username: Some("Ménard"),
        birthdate: "1938-02-14",
        gender: "female",
        birthplace: "69123",
        birthcountry: "99100",
        email: "helene.lefevre@example.com",
    },
    Identity {
        key: "ange-santoni",
        description: "Né à Ajaccio : code de commune corse, jour de naissance inconnu.",
        given_name: "Ange",
        family_name: "Santoni",
        preferred_username: None,
        birthdate: "1981-07-00",
        gender: "male",
        birthplace: "2A004",
        birthcountry: "99100",
        email: "ange.santoni@example.com",
    },
];

/// The identity of that key.
pub fn identity(key: &str) -> Option<&'static Identity> {
    IDENTITIES.iter().find(|i| i.key == key)
}

/// A failure the simulator plays on purpose, chosen on the identity page. The usager's
/// cancellation is the page's "Annuler" button, not a scenario.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Failure {
    /// `/token` answers 400 `invalid_grant`.
    #[serde(rename = "erreur-jeton")]
    TokenError,
    /// The id_token is signed with another key, under the kid of the published one.
    #[serde(rename = "signature-id-token")]
    IdTokenSignature,
    /// The id_token carries a nonce other than the request's.
    #[serde(rename = "nonce-different")]
    WrongNonce,
    /// The id_token's `acr` is `eidas0`, below `eidas1`.
    #[serde(rename = "niveau-insuffisant")]
    LowAcr,
    /// The userinfo JWT is signed with another key, under the kid of the published one.
    #[serde(rename = "signature-userinfo")]
    UserinfoSignature,
}

impl Failure {
    pub const ALL: [Failure; 5] =
        [Failure::TokenError, Failure::IdTokenSignature, Failure::WrongNonce, Failure::LowAcr, Failure::UserinfoSignature];

    /// The form value.
    pub fn key(self) -> &'static str {
        match self {
            Failure::TokenError => "erreur-jeton",
            Failure::IdTokenSignature => "signature-id-token",
            Failure::WrongNonce => "nonce-different",
            Failure::LowAcr => "niveau-insuffisant",
            Failure::UserinfoSignature => "signature-userinfo",
        }
    }

    pub fn from_key(key: &str) -> Option<Failure> {
        Failure::ALL.into_iter().find(|f| f.key() == key)
    }

    /// The label on the page.
    pub fn label(self) -> &'static str {
        match self {
            Failure::TokenError => "Le service ne peut pas échanger le code : FranceConnect répond « invalid_grant »",
            Failure::IdTokenSignature => "Le jeton d'identité (id_token) est signé avec une autre clé",
            Failure::WrongNonce => "Le jeton d'identité porte un autre « nonce » que celui de la demande",
            Failure::LowAcr => "Le niveau d'authentification est « eidas0 », inférieur à eidas1",
            Failure::UserinfoSignature => "Les informations d'identité (userinfo) sont signées avec une autre clé",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identities_follow_the_formats_franceconnect_validates() {
        let mut keys: Vec<&str> = IDENTITIES.iter().map(|i| i.key).collect();
        keys.sort();
        keys.dedup();
        assert_eq!(keys.len(), IDENTITIES.len(), "keys are unique");
        for i in IDENTITIES {
            let d = i.birthdate.as_bytes();
            assert!(d.len() == 10 && d[4] == b'-' && d[7] == b'-', "{}", i.birthdate);
            assert!(i.birthdate.bytes().enumerate().all(|(n, c)| n == 4 || n == 7 || c.is_ascii_digit()), "{}", i.birthdate);
            assert!(&i.birthdate[5..7] != "00" || &i.birthdate[8..] == "00", "unknown month implies unknown day: {}", i.birthdate);
            assert!(matches!(i.gender, "female" | "male"));
            assert!(is_cog(i.birthcountry), "{}", i.birthcountry);
            if i.birthcountry == "99100" {
                assert!(is_cog(i.birthplace), "{}", i.birthplace);
            } else {
                assert_eq!(i.birthplace, "");
            }
            assert!(i.email.contains('@'));
            assert!(!i.given_name.is_empty() && !i.family_name.is_empty());
        }
    }

    /// `^(2[AB]|[0-9]{2})[0-9]{3}$`
    fn is_cog(code: &str) -> bool {
        let b = code.as_bytes();
        b.len() == 5
            && ((b[0] == b'2' && matches!(b[1], b'A' | b'B')) || (b[0].is_ascii_digit() && b[1].is_ascii_digit()))
            && b[2..].iter().all(u8::is_ascii_digit)
    }

    #[test]
    fn the_page_covers_each_case_the_relying_party_must_handle() {
        assert!(IDENTITIES.iter().any(|i| i.birthcountry == "99100" && !i.birthplace.is_empty()), "born in France");
        assert!(IDENTITIES.iter().any(|i| i.birthcountry != "99100" && i.birthplace.is_empty()), "born abroad");
        assert!(IDENTITIES.iter().any(|i| i.birthdate.ends_with("-00-00")), "only the year known");
        assert!(IDENTITIES.iter().any(|i| i.given_name.contains(' ')), "composed first names");
        assert!(IDENTITIES.iter().any(|i| !i.family_name.is_ascii() && !i.given_name.is_ascii()), "accents");
    }

    #[test]
    fn failure_keys_round_trip_and_match_their_serialised_form() {
        for f in Failure::ALL {
            assert_eq!(Failure::from_key(f.key()), Some(f));
            assert_eq!(serde_json::to_value(f).unwrap(), serde_json::Value::String(f.key().into()));
        }
        assert_eq!(Failure::from_key("normal"), None);
    }
}
