//! Demo data for the embedded default (development only): one structure, one référent
//! aidant with a TOTP app, four usagers each with a mandat to that structure, three TOTP
//! cards in the stock (for the référent to associate), and an OIDC client for the
//! demonstration e-service. Seeded once (each part is looked up
//! before it is created); the aidant's credentials are printed on the console at every
//! start.

use crate::keys::Keys;
use crate::settings::Settings;
use anyhow::Result;
use broker_core::client::NewClient;
use broker_core::identite::{usager_key, IdentitePivot, FRANCE};
use broker_core::mandat::Duree;
use broker_core::secret::Secret;
use broker_core::totp::{CardRecord, Seed, APP_STEP, CARD_STEP, DIGITS};
use broker_core::{Demarche, Timestamp};
use broker_store::admin::{self, Aidant, Client};
use broker_store::mandats::{self, NewMandat};
use broker_store::seal::Sealer;
use broker_store::{Db, StoreError};
use hmac::{Hmac, Mac};
use sha2::Sha256;

pub const DEMO_EMAIL: &str = "marie.aidante@structure-demo.test";
pub const DEMO_AUDITOR_EMAIL: &str = "paul.auditeur@controle-demo.test";
pub const DEMO_SIRET: &str = "81234567800013";

/// TOTP cards of the demo stock (60-second step, 6 digits): serial and seed. Their seeds
/// are public (printed at every start): development only.
pub const DEMO_CARDS: [(&str, &[u8; 20]); 3] =
    [("DEMO-0001", b"aidants-demo-carte-1"), ("DEMO-0002", b"aidants-demo-carte-2"), ("DEMO-0003", b"aidants-demo-carte-3")];

fn demo_cards() -> Vec<CardRecord> {
    DEMO_CARDS
        .iter()
        .map(|(serial, seed)| CardRecord { serial: (*serial).to_owned(), seed: Seed::from_bytes(seed.to_vec()), step: CARD_STEP, digits: DIGITS })
        .collect()
}

/// The demonstration e-service's OIDC client.
pub const DEMO_CLIENT_ID: &str = "demo-service";
pub const DEMO_CLIENT_NAME: &str = "Service en ligne de démonstration";

/// The demo client's secret: hex(HMAC-SHA-256(seal key, "demo-service client secret")).
/// Stable across restarts while the seal key stays, and never stored in clear.
pub fn demo_client_secret(seal: &[u8; 32]) -> String {
    hex::encode(derived(seal, b"demo-service client secret"))
}

/// HMAC-SHA-256 of `label` under the seal key.
fn derived(seal: &[u8; 32], label: &[u8]) -> [u8; 32] {
    let mut mac = Hmac::<Sha256>::new_from_slice(seal).expect("HMAC accepts any key length");
    mac.update(label);
    mac.finalize().into_bytes().into()
}

/// The broker's client at the FranceConnect simulator (development default).
pub const FC_SIM_CLIENT_ID: &str = "aidants-connect-dev";

/// The broker's secret at the FranceConnect simulator: hex(HMAC-SHA-256(seal key,
/// "franceconnect simulator client secret")).
pub fn fc_sim_client_secret(seal: &[u8; 32]) -> String {
    hex::encode(derived(seal, b"franceconnect simulator client secret"))
}

/// The FranceConnect simulator's key seed, from the seal key: instances sharing the seal
/// key publish the same JWKS and redeem each other's codes.
pub fn fc_sim_key_seed(seal: &[u8; 32]) -> [u8; 32] {
    derived(seal, b"franceconnect simulator key seed")
}

/// A demo usager, as FranceConnect would describe them, and their mandat.
pub struct DemoUsager {
    /// The fake FranceConnect `sub`; the usager's key is derived from it.
    pub fc_sub: &'static str,
    pub given_name: &'static str,
    pub family_name: &'static str,
    pub preferred_username: Option<&'static str>,
    pub birthdate: &'static str,
    pub gender: &'static str,
    pub birthplace: &'static str,
    pub birthcountry: &'static str,
    pub email: &'static str,
    pub demarches: &'static [Demarche],
    pub duree: Duree,
}

impl DemoUsager {
    pub fn identite(&self) -> IdentitePivot {
        IdentitePivot {
            given_name: self.given_name.into(),
            family_name: self.family_name.into(),
            preferred_username: self.preferred_username.map(Into::into),
            birthdate: self.birthdate.into(),
            gender: self.gender.into(),
            birthplace: self.birthplace.into(),
            birthcountry: self.birthcountry.into(),
            email: self.email.into(),
        }
    }
}

/// Seeded in this order (so their ids follow it in a fresh database).
pub const DEMO_USAGERS: [DemoUsager; 4] = [
    DemoUsager {
        fc_sub: "demo-usager-1",
        given_name: "Jean Pierre",
        family_name: "Lefèvre",
        preferred_username: None,
        birthdate: "1948-05-12",
        gender: "male",
        birthplace: "59350",
        birthcountry: FRANCE,
        email: "jean-pierre.lefevre@usager-demo.test",
        demarches: &[Demarche::Social, Demarche::Logement, Demarche::Argent],
        duree: Duree::UnAn,
    },
    DemoUsager {
        fc_sub: "demo-usager-2",
        given_name: "Fatima",
        family_name: "Benali",
        preferred_username: None,
        birthdate: "1962-03-00",
        gender: "female",
        birthplace: "",
        birthcountry: "99352",
        email: "fatima.benali@usager-demo.test",
        demarches: &[Demarche::Social],
        duree: Duree::UnAn,
    },
    DemoUsager {
        fc_sub: "demo-usager-3",
        given_name: "Marcel",
        family_name: "Santoni",
        preferred_username: None,
        birthdate: "1950-00-00",
        gender: "male",
        birthplace: "2A004",
        birthcountry: FRANCE,
        email: "marcel.santoni@usager-demo.test",
        demarches: &[Demarche::Argent],
        duree: Duree::SixMois,
    },
    DemoUsager {
        fc_sub: "demo-usager-4",
        given_name: "Ingrid Anna",
        family_name: "Schmidt",
        preferred_username: Some("Roux"),
        birthdate: "1979-10-02",
        gender: "female",
        birthplace: "",
        birthcountry: "99109",
        email: "ingrid.roux@usager-demo.test",
        demarches: &[Demarche::Papiers, Demarche::Famille],
        duree: Duree::UnAn,
    },
];

pub fn seed_and_print(db: &Db, keys: &Keys, s: &Settings) -> Result<()> {
    let sealer = Sealer::new(&keys.seal);
    let aidant = seed_aidant(db, &sealer)?;
    let usagers = seed_usagers(db, &keys.usager_salt, &aidant)?;
    let client = seed_client(db, &sealer, &keys.seal, &s.issuer)?;
    let cards = seed_cards(db, &sealer)?;
    let seed = admin::app_seed(db, &sealer, aidant.id)?;
    let auditor = seed_auditor(db, &sealer)?;
    let auditor_seed = admin::app_seed(db, &sealer, auditor.id)?;
    println!("──────── Données de démonstration (développement uniquement) ────────");
    println!("Aidant référent : {}", aidant.email);
    if let Some(seed) = seed {
        println!("Secret TOTP     : {}", seed.base32());
        println!("Code actuel     : {} (change toutes les {} s)", seed.code_at(APP_STEP, DIGITS, Timestamp::now()), APP_STEP);
    }
    println!("Auditeur        : {}", auditor.email);
    if let Some(seed) = auditor_seed {
        println!("Secret TOTP de l'auditeur : {}", seed.base32());
    }
    println!("Ouvrir          : {}/", s.issuer);
    for (i, line) in usagers.iter().enumerate() {
        println!("{}{line}", if i == 0 { "Usagers         : " } else { "                  " });
    }
    for (i, card) in cards.iter().enumerate() {
        let head = if i == 0 { "Cartes à code   : " } else { "                  " };
        println!("{head}{} (secret : {}, un code toutes les {} s)", card.serial, card.seed.base32(), card.step);
    }
    println!("Service de démonstration : {}/demo", s.issuer);
    if let Some(c) = client {
        println!("Client OIDC     : {} (secret : {})", c.client_id, demo_client_secret(&keys.seal));
        let expected = format!("{}/demo/retour", s.issuer);
        if !c.redirect_uri_list().contains(&expected.as_str()) {
            println!(
                "                  enregistré pour {} : AC_ISSUER a changé, le retour vers {} sera refusé",
                c.redirect_uri_list().join(" "),
                expected
            );
        }
    }
    println!("──────────────────────────────────────────────────────────────────────");
    Ok(())
}

/// The demo structure and its référent aidant, with a TOTP app.
fn seed_aidant(db: &Db, sealer: &Sealer) -> Result<Aidant> {
    let existing = db.read(|c| match admin::find_aidant_by_email(c, DEMO_EMAIL) {
        Ok(a) => Ok(Some(a)),
        Err(StoreError::NotFound(_)) => Ok(None),
        Err(e) => Err(e),
    })?;
    if let Some(a) = existing {
        return Ok(a);
    }
    let org = admin::create_organisation(db, "Structure de démonstration", DEMO_SIRET, "1 place de la Mairie, 75001 Paris", None)?;
    let a = admin::create_aidant(
        db,
        &admin::NewAidant {
            organisation_id: org.id,
            email: DEMO_EMAIL,
            first_name: "Marie",
            last_name: "Aidante",
            profession: "Conseillère numérique",
            referent: true,
        },
    )?;
    admin::enroll_app(db, sealer, DEMO_EMAIL)?;
    Ok(a)
}

/// The demo auditor (no organisation), with a TOTP app.
fn seed_auditor(db: &Db, sealer: &Sealer) -> Result<Aidant> {
    let existing = db.read(|c| match admin::find_aidant_by_email(c, DEMO_AUDITOR_EMAIL) {
        Ok(a) => Ok(Some(a)),
        Err(StoreError::NotFound(_)) => Ok(None),
        Err(e) => Err(e),
    })?;
    if let Some(a) = existing {
        return Ok(a);
    }
    let a = broker_store::audit::create_auditor(db, DEMO_AUDITOR_EMAIL, "Paul", "Auditeur")?;
    admin::enroll_app(db, sealer, DEMO_AUDITOR_EMAIL)?;
    Ok(a)
}

/// Each demo usager, and their mandat to the aidant's current structure, created by the
/// demo aidant unless the usager already has a mandat there (whatever its state: a
/// revoked or expired demo mandat stays so). Returns one line per usager for the banner.
fn seed_usagers(db: &Db, salt: &[u8; 32], aidant: &Aidant) -> Result<Vec<String>> {
    let Some(org) = aidant.current_organisation_id.filter(|_| aidant.active) else {
        tracing::warn!("demo aidant inactive or without a current organisation: no demo mandats");
        return Ok(Vec::new());
    };
    let now = Timestamp::now();
    let mut lines = Vec::new();
    for u in &DEMO_USAGERS {
        let identite = u.identite().validate().map_err(|e| anyhow::anyhow!("usager de démonstration {} : {}", u.fc_sub, e.0))?;
        let key = usager_key(salt, u.fc_sub);
        let id = db.write(|c| mandats::upsert_usager(c, &key, &identite, now))?;
        if db.read(|c| mandats::facts(c, org, id))?.is_empty() {
            let n = NewMandat { organisation_id: org, usager_id: id, aidant_id: aidant.id, demarches: u.demarches.to_vec(), duree: u.duree };
            match mandats::create_mandat(db, &n, now) {
                Ok(_) => {}
                Err(e) if e.is_user_error() => {
                    tracing::warn!(usager = id, error = %e, "demo mandat not created");
                }
                Err(e) => return Err(e.into()),
            }
        }
        lines.push(format!("{} {} ({})", u.given_name, u.family_name, Demarche::join(u.demarches)));
    }
    Ok(lines)
}

/// The demo cards, each imported into the stock unless already there.
fn seed_cards(db: &Db, sealer: &Sealer) -> Result<Vec<CardRecord>> {
    let cards = demo_cards();
    for card in &cards {
        match admin::import_cards(db, sealer, std::slice::from_ref(card)) {
            Ok(_) | Err(StoreError::Conflict(_)) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(cards)
}

/// The demonstration e-service's client, registered once for the issuer of that run.
fn seed_client(db: &Db, sealer: &Sealer, seal: &[u8; 32], issuer: &str) -> Result<Option<Client>> {
    if let Some(c) = admin::list_clients(db)?.into_iter().find(|c| c.client_id == DEMO_CLIENT_ID) {
        return Ok(Some(c));
    }
    let n = NewClient::validate(DEMO_CLIENT_NAME, &[format!("{issuer}/demo/retour")], &[format!("{issuer}/demo")], "ES256", "json");
    let mut n = match n {
        Ok(n) => n,
        Err(e) => {
            tracing::warn!(issuer, error = %e.0, "demo client not registered");
            return Ok(None);
        }
    };
    n.client_id = DEMO_CLIENT_ID.to_owned();
    n.secret = Secret::new(demo_client_secret(seal));
    Ok(Some(admin::create_client(db, sealer, &n)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn demo_usagers_are_valid_identities_with_distinct_subs() {
        let mut subs: Vec<&str> = DEMO_USAGERS.iter().map(|u| u.fc_sub).collect();
        subs.sort();
        subs.dedup();
        assert_eq!(subs.len(), DEMO_USAGERS.len());
        for u in &DEMO_USAGERS {
            assert!(u.identite().validate().is_ok(), "{}", u.fc_sub);
            assert!(!u.demarches.is_empty());
        }
        assert!(DEMO_USAGERS.iter().any(|u| u.demarches.len() == 1) && DEMO_USAGERS.iter().any(|u| u.demarches.len() > 1));
    }

    #[test]
    fn demo_cards_are_valid_stock_records() {
        for card in demo_cards() {
            let parsed = CardRecord::parse(&card.serial, &card.seed.base32(), "60", "6").unwrap();
            assert_eq!(parsed, card);
        }
    }

    #[test]
    fn the_demo_client_secret_is_stable_and_depends_on_the_seal_key() {
        let a = demo_client_secret(&[1; 32]);
        assert_eq!(a, demo_client_secret(&[1; 32]));
        assert_ne!(a, demo_client_secret(&[2; 32]));
        assert_eq!(a.len(), 64);
        assert!(a.bytes().all(|b| b.is_ascii_hexdigit()));
    }
}
