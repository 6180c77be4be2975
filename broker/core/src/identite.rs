//! The identité pivot: the usager's identity as FranceConnect gives it, and the
//! broker's own usager key, a keyed hash of FranceConnect's `sub`.

use crate::validate::{self, Invalid};
use hmac::{Hmac, Mac};
use sha2::Sha256;

#[derive(Clone, PartialEq, Eq)]
pub struct IdentitePivot {
    pub given_name: String,
    pub family_name: String,
    pub preferred_username: Option<String>,
    /// `YYYY-MM-DD`, or `YYYY-MM-00` / `YYYY-00-00` when partly unknown.
    pub birthdate: String,
    /// `female`, `male` or `unspecified`.
    pub gender: String,
    /// INSEE commune code when born in France, empty otherwise.
    pub birthplace: String,
    /// INSEE country code; 99100 is France.
    pub birthcountry: String,
    pub email: String,
}

/// Personal data: `Debug` shows none of it.
impl std::fmt::Debug for IdentitePivot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("IdentitePivot(…)")
    }
}

pub const FRANCE: &str = "99100";

fn is_cog(code: &str) -> bool {
    let b = code.as_bytes();
    b.len() == 5
        && (b[..2].iter().all(u8::is_ascii_digit) || (b[0] == b'2' && (b[1] == b'A' || b[1] == b'B')))
        && b[2..].iter().all(u8::is_ascii_digit)
}

fn is_birthdate(d: &str) -> bool {
    let parts: Vec<&str> = d.split('-').collect();
    let [y, m, day] = parts.as_slice() else { return false };
    let num = |s: &str, len: usize| s.len() == len && s.bytes().all(|b| b.is_ascii_digit());
    if !(num(y, 4) && num(m, 2) && num(day, 2)) {
        return false;
    }
    let (m, day): (u32, u32) = (m.parse().unwrap_or(99), day.parse().unwrap_or(99));
    match (m, day) {
        (0, 0) => true,
        (0, _) => false,
        (1..=12, 0) => true,
        (1..=12, 1..=31) => chrono::NaiveDate::from_ymd_opt(y.parse().unwrap_or(0), m, day).is_some(),
        _ => false,
    }
}

impl IdentitePivot {
    /// Checks the claims as FranceConnect's core does.
    pub fn validate(self) -> Result<Self, Invalid> {
        let bounded = |field: &str, v: &str| {
            let n = v.chars().count();
            if (1..=256).contains(&n) { Ok(()) } else { Err(Invalid(format!("{field} : 1 à 256 caractères"))) }
        };
        bounded("given_name", &self.given_name)?;
        bounded("family_name", &self.family_name)?;
        if !is_birthdate(&self.birthdate) {
            return Err(Invalid("birthdate : AAAA-MM-JJ attendu".into()));
        }
        if !matches!(self.gender.as_str(), "female" | "male" | "unspecified") {
            return Err(Invalid("gender : female, male ou unspecified".into()));
        }
        if !is_cog(&self.birthcountry) {
            return Err(Invalid("birthcountry : code COG INSEE attendu".into()));
        }
        let born_in_france = self.birthcountry == FRANCE;
        if born_in_france && !is_cog(&self.birthplace) {
            return Err(Invalid("birthplace : code commune INSEE attendu pour une naissance en France".into()));
        }
        if !born_in_france && !self.birthplace.is_empty() {
            return Err(Invalid("birthplace : vide pour une naissance à l'étranger".into()));
        }
        let email = validate::email(&self.email)?;
        Ok(Self { email, ..self })
    }
}

/// The broker's usager key: HMAC-SHA-256 of FranceConnect's `sub` under the usager salt,
/// hex-encoded. FranceConnect's `sub` itself is never stored.
pub fn usager_key(salt: &[u8; 32], fc_sub: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(salt).expect("HMAC accepts any key length");
    mac.update(fc_sub.as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

#[cfg(test)]
pub fn sample() -> IdentitePivot {
    IdentitePivot {
        given_name: "Angela Claire Louise".into(),
        family_name: "Dubois".into(),
        preferred_username: None,
        birthdate: "1962-08-24".into(),
        gender: "female".into(),
        birthplace: "75107".into(),
        birthcountry: FRANCE.into(),
        email: "Angela.Dubois@exemple.fr".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_identities_including_partial_birthdates_and_born_abroad() {
        let ok = sample().validate().unwrap();
        assert_eq!(ok.email, "angela.dubois@exemple.fr");
        assert!(IdentitePivot { birthdate: "1962-00-00".into(), ..sample() }.validate().is_ok());
        assert!(IdentitePivot { birthdate: "1962-08-00".into(), ..sample() }.validate().is_ok());
        assert!(IdentitePivot { birthplace: "2A004".into(), ..sample() }.validate().is_ok());
        assert!(IdentitePivot { birthcountry: "99217".into(), birthplace: String::new(), ..sample() }.validate().is_ok());
    }

    #[test]
    fn invalid_identities_are_refused() {
        for bad in [
            IdentitePivot { given_name: String::new(), ..sample() },
            IdentitePivot { family_name: "x".repeat(257), ..sample() },
            IdentitePivot { birthdate: "1962-00-24".into(), ..sample() },
            IdentitePivot { birthdate: "1962-02-30".into(), ..sample() },
            IdentitePivot { birthdate: "62-08-24".into(), ..sample() },
            IdentitePivot { gender: "f".into(), ..sample() },
            IdentitePivot { birthcountry: "France".into(), ..sample() },
            IdentitePivot { birthplace: String::new(), ..sample() },
            IdentitePivot { birthcountry: "99217".into(), ..sample() },
            IdentitePivot { email: "pas-une-adresse".into(), ..sample() },
        ] {
            assert!(bad.clone().validate().is_err(), "{}", bad.birthdate);
        }
    }

    #[test]
    fn usager_key_is_keyed_stable_and_hides_the_sub() {
        let sub = "b6048e95bb134ec5b1d1e1fa69f287172e91722b9354d637a1bcf2ebb0fd2ef5v1";
        let k = usager_key(&[1; 32], sub);
        assert_eq!(k, usager_key(&[1; 32], sub));
        assert_ne!(k, usager_key(&[2; 32], sub));
        assert_eq!(k.len(), 64);
        assert!(!k.contains(&sub[..16]));
        assert!(!format!("{:?}", sample()).contains("Dubois"));
    }
}
