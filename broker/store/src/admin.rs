//! Operator actions: structures, aidants, TOTP stock and apps, OIDC clients, signing keys.
//! Each one checks its input, then writes its change and its journal entry in one
//! transaction: on any error nothing is written.

use crate::journal;
use crate::schema::{aidants, memberships, oidc_clients, organisations, totp_cards, totp_devices};
use crate::seal::Sealer;
use crate::{AnyConnection, Db, StoreError};
use broker_core::client::NewClient;
use broker_core::journal::{Action, Entry};
use broker_core::totp::{CardRecord, DeviceKind, Seed, APP_STEP, DIGITS};
use broker_core::{validate, Demarche, Timestamp};
use diesel::prelude::*;
use serde::Serialize;

#[derive(Debug, Clone, Serialize, Queryable, Selectable)]
#[diesel(table_name = organisations)]
pub struct Organisation {
    pub id: i64,
    pub name: String,
    pub siret: String,
    pub address: String,
    pub allowed_demarches: String,
    pub created_at: i64,
}

impl Organisation {
    pub fn allowed(&self) -> Vec<Demarche> {
        Demarche::parse_list(&self.allowed_demarches).unwrap_or_default()
    }
}

pub fn create_organisation(db: &Db, name: &str, siret: &str, address: &str, demarches: Option<&str>) -> Result<Organisation, StoreError> {
    let name = validate::label("nom de la structure", name, 200)?;
    let siret = validate::siret(siret)?;
    let address = address.trim().to_owned();
    let allowed = match demarches {
        Some(list) => Demarche::parse_list(list).map_err(|e| StoreError::Invalid(e.to_string()))?,
        None => Demarche::ALL.to_vec(),
    };
    let now = Timestamp::now().micros();
    db.write(|c| {
        let org: Organisation = diesel::insert_into(organisations::table)
            .values((
                organisations::name.eq(&name),
                organisations::siret.eq(&siret),
                organisations::address.eq(&address),
                organisations::allowed_demarches.eq(Demarche::join(&allowed)),
                organisations::created_at.eq(now),
            ))
            .returning(organisations::id)
            .get_result::<i64>(c)
            .and_then(|id| organisations::table.find(id).select(Organisation::as_select()).first(c))?;
        journal::append(
            c,
            &[Entry::new(Action::OrganisationCreated)
                .organisation(org.id)
                .detail("demarches", org.allowed_demarches.clone())
                .detail("via", "cli")],
        )?;
        Ok(org)
    })
}

pub fn list_organisations(db: &Db) -> Result<Vec<Organisation>, StoreError> {
    db.read(|c| Ok(organisations::table.order(organisations::id).select(Organisation::as_select()).load(c)?))
}

pub fn find_organisation(c: &mut AnyConnection, id: i64) -> Result<Organisation, StoreError> {
    organisations::table
        .find(id)
        .select(Organisation::as_select())
        .first(c)
        .optional()?
        .ok_or_else(|| StoreError::NotFound(format!("structure inconnue : {id} (voir « broker admin organisation list »)")))
}

#[derive(Debug, Clone, Serialize, Queryable, Selectable)]
#[diesel(table_name = aidants)]
pub struct Aidant {
    pub id: i64,
    pub email: String,
    pub first_name: String,
    pub last_name: String,
    pub profession: String,
    pub active: bool,
    pub current_organisation_id: Option<i64>,
    pub created_at: i64,
}

#[derive(Debug, Clone, Serialize)]
pub struct AidantWithRoles {
    #[serde(flatten)]
    pub aidant: Aidant,
    /// (organisation id, role)
    pub memberships: Vec<(i64, String)>,
}

pub struct NewAidant<'a> {
    pub organisation_id: i64,
    pub email: &'a str,
    pub first_name: &'a str,
    pub last_name: &'a str,
    pub profession: &'a str,
    pub referent: bool,
}

pub fn create_aidant(db: &Db, n: &NewAidant<'_>) -> Result<Aidant, StoreError> {
    let email = validate::email(n.email)?;
    let first = validate::label("prénom", n.first_name, 150)?;
    let last = validate::label("nom", n.last_name, 150)?;
    let profession = n.profession.trim().to_owned();
    let role = if n.referent { "referent" } else { "aidant" };
    let now = Timestamp::now().micros();
    db.write(|c| {
        find_organisation(c, n.organisation_id)?;
        let taken: i64 = aidants::table.filter(aidants::email.eq(&email)).count().get_result(c)?;
        if taken > 0 {
            return Err(StoreError::Conflict(format!("un aidant existe déjà avec l'adresse {email}")));
        }
        let a: Aidant = diesel::insert_into(aidants::table)
            .values((
                aidants::email.eq(&email),
                aidants::first_name.eq(&first),
                aidants::last_name.eq(&last),
                aidants::profession.eq(&profession),
                aidants::active.eq(true),
                aidants::current_organisation_id.eq(Some(n.organisation_id)),
                aidants::created_at.eq(now),
            ))
            .returning(aidants::id)
            .get_result::<i64>(c)
            .and_then(|id| aidants::table.find(id).select(Aidant::as_select()).first(c))?;
        diesel::insert_into(memberships::table)
            .values((
                memberships::aidant_id.eq(a.id),
                memberships::organisation_id.eq(n.organisation_id),
                memberships::role.eq(role),
                memberships::created_at.eq(now),
            ))
            .execute(c)?;
        journal::append(
            c,
            &[Entry::new(Action::AidantCreated)
                .aidant(a.id)
                .organisation(n.organisation_id)
                .detail("role", role)
                .detail("via", "cli")],
        )?;
        Ok(a)
    })
}

pub fn list_aidants(db: &Db, organisation: Option<i64>) -> Result<Vec<AidantWithRoles>, StoreError> {
    db.read(|c| {
        let mut q = aidants::table.order(aidants::id).select(Aidant::as_select()).into_boxed();
        if let Some(org) = organisation {
            q = q.filter(
                aidants::id.eq_any(memberships::table.filter(memberships::organisation_id.eq(org)).select(memberships::aidant_id)),
            );
        }
        let list: Vec<Aidant> = q.load(c)?;
        let ms: Vec<(i64, i64, String)> = memberships::table
            .select((memberships::aidant_id, memberships::organisation_id, memberships::role))
            .order((memberships::aidant_id, memberships::organisation_id))
            .load(c)?;
        Ok(list
            .into_iter()
            .map(|a| {
                let memberships = ms.iter().filter(|m| m.0 == a.id).map(|m| (m.1, m.2.clone())).collect();
                AidantWithRoles { aidant: a, memberships }
            })
            .collect())
    })
}

pub fn find_aidant_by_email(c: &mut AnyConnection, email: &str) -> Result<Aidant, StoreError> {
    let email = validate::email(email)?;
    aidants::table
        .filter(aidants::email.eq(&email))
        .select(Aidant::as_select())
        .first(c)
        .optional()?
        .ok_or_else(|| StoreError::NotFound(format!("aucun aidant avec l'adresse {email}")))
}

pub fn deactivate_aidant(db: &Db, email: &str) -> Result<Aidant, StoreError> {
    let now = Timestamp::now().micros();
    db.write(|c| {
        let a = find_aidant_by_email(c, email)?;
        if !a.active {
            return Err(StoreError::Conflict(format!("l'aidant {} est déjà désactivé", a.email)));
        }
        let a: Aidant = diesel::update(aidants::table.find(a.id))
            .set((aidants::active.eq(false), aidants::deactivated_at.eq(Some(now))))
            .returning(aidants::id)
            .get_result::<i64>(c)
            .and_then(|id| aidants::table.find(id).select(Aidant::as_select()).first(c))?;
        let e = Entry::new(Action::AidantDeactivated).aidant(a.id).in_organisation(a.current_organisation_id).detail("via", "cli");
        journal::append(c, &[e])?;
        Ok(a)
    })
}

/// Imports card stock. Serials already in stock or repeated in the file are all
/// reported and nothing is imported.
pub fn import_cards(db: &Db, sealer: &Sealer, cards: &[CardRecord]) -> Result<usize, StoreError> {
    if cards.is_empty() {
        return Err(StoreError::Invalid("le fichier ne contient aucune carte".into()));
    }
    let mut seen = std::collections::BTreeSet::new();
    let mut repeated = std::collections::BTreeSet::new();
    for c in cards {
        if !seen.insert(c.serial.clone()) {
            repeated.insert(c.serial.clone());
        }
    }
    let now = Timestamp::now().micros();
    db.write(|c| {
        let serials: Vec<&str> = cards.iter().map(|c| c.serial.as_str()).collect();
        let mut existing = std::collections::BTreeSet::new();
        for chunk in serials.chunks(500) {
            let found: Vec<String> = totp_cards::table
                .filter(totp_cards::serial.eq_any(chunk))
                .select(totp_cards::serial)
                .load(c)?;
            existing.extend(found);
        }
        if !repeated.is_empty() || !existing.is_empty() {
            let mut parts = Vec::new();
            if !repeated.is_empty() {
                parts.push(format!("en double dans le fichier : {}", repeated.into_iter().collect::<Vec<_>>().join(", ")));
            }
            if !existing.is_empty() {
                parts.push(format!("déjà en stock : {}", existing.into_iter().collect::<Vec<_>>().join(", ")));
            }
            return Err(StoreError::Conflict(format!("aucune carte importée ; numéros de série {}", parts.join(" ; "))));
        }
        for card in cards {
            diesel::insert_into(totp_cards::table)
                .values((
                    totp_cards::serial.eq(&card.serial),
                    totp_cards::seed_sealed.eq(sealer.seal(card.seed.bytes(), &card_context(&card.serial))),
                    totp_cards::step.eq(card.step as i32),
                    totp_cards::digits.eq(i32::from(card.digits)),
                    totp_cards::imported_at.eq(now),
                ))
                .execute(c)?;
        }
        journal::append(
            c,
            &[Entry::new(Action::TotpCardsImported)
                .detail("count", cards.len())
                .detail("via", "cli")],
        )?;
        Ok(cards.len())
    })
}

pub fn card_context(serial: &str) -> String {
    format!("totp_card:{serial}")
}

pub fn app_context(aidant_id: i64) -> String {
    format!("totp_app:{aidant_id}")
}

pub fn count_cards(db: &Db) -> Result<i64, StoreError> {
    db.read(|c| Ok(totp_cards::table.count().get_result(c)?))
}

/// A TOTP app for an aidant: returns the seed (to show once) and its device id.
pub fn enroll_app(db: &Db, sealer: &Sealer, email: &str) -> Result<(Aidant, Seed), StoreError> {
    let seed = Seed::generate();
    let now = Timestamp::now().micros();
    db.write(|c| {
        let a = find_aidant_by_email(c, email)?;
        if !a.active {
            return Err(StoreError::Conflict(format!("l'aidant {} est désactivé", a.email)));
        }
        let device: i64 = diesel::insert_into(totp_devices::table)
            .values((
                totp_devices::aidant_id.eq(a.id),
                totp_devices::kind.eq(DeviceKind::App.key()),
                totp_devices::seed_sealed.eq(Some(sealer.seal(seed.bytes(), &app_context(a.id)))),
                totp_devices::step.eq(APP_STEP as i32),
                totp_devices::digits.eq(i32::from(DIGITS)),
                totp_devices::confirmed_at.eq(Some(now)),
                totp_devices::created_at.eq(now),
            ))
            .returning(totp_devices::id)
            .get_result(c)?;
        let e = Entry::new(Action::SecondFactorAdded)
            .aidant(a.id)
            .detail("kind", DeviceKind::App.key())
            .detail("device", device)
            .detail("via", "cli")
            .in_organisation(a.current_organisation_id);
        journal::append(c, &[e])?;
        Ok((a, seed))
    })
}

/// The seed of an aidant's most recent TOTP app, unsealed.
pub fn app_seed(db: &Db, sealer: &Sealer, aidant_id: i64) -> Result<Option<Seed>, StoreError> {
    let sealed: Option<Option<String>> = db.read(|c| {
        Ok(totp_devices::table
            .filter(totp_devices::aidant_id.eq(aidant_id))
            .filter(totp_devices::kind.eq(DeviceKind::App.key()))
            .order(totp_devices::id.desc())
            .select(totp_devices::seed_sealed)
            .first(c)
            .optional()?)
    })?;
    match sealed.flatten() {
        Some(s) => Ok(Some(Seed::from_bytes(sealer.open(&s, &app_context(aidant_id))?))),
        None => Ok(None),
    }
}

#[derive(Debug, Clone, Serialize, Queryable, Selectable)]
#[diesel(table_name = oidc_clients)]
pub struct Client {
    pub id: i64,
    pub client_id: String,
    pub name: String,
    #[serde(skip)]
    pub secret_hash: String,
    #[serde(skip)]
    pub secret_sealed: Option<String>,
    pub redirect_uris: String,
    pub post_logout_redirect_uris: String,
    pub id_token_alg: String,
    pub userinfo_format: String,
    pub active: bool,
    pub created_at: i64,
    /// `public` or `pairwise` ([`broker_core::client::SubjectType`]).
    pub subject_type: String,
    pub sector_identifier: Option<String>,
    pub act_claim: bool,
}

impl Client {
    /// How this client sees subjects: its subject type (unknown values read as
    /// pairwise, the safer one) and its sector (the sector identifier, else its id).
    pub fn subject_rule(&self) -> broker_core::oidc::subject::SubjectRule<'_> {
        broker_core::oidc::subject::SubjectRule {
            subject_type: broker_core::client::SubjectType::parse(&self.subject_type)
                .unwrap_or(broker_core::client::SubjectType::Pairwise),
            sector: self.sector_identifier.as_deref().unwrap_or(&self.client_id),
        }
    }

    pub fn redirect_uri_list(&self) -> Vec<&str> {
        self.redirect_uris.lines().filter(|l| !l.is_empty()).collect()
    }
    pub fn post_logout_uri_list(&self) -> Vec<&str> {
        self.post_logout_redirect_uris.lines().filter(|l| !l.is_empty()).collect()
    }
}

pub fn client_context(client_id: &str) -> String {
    format!("client_secret:{client_id}")
}

/// Registers a client. Its secret is stored hashed; for HS256 clients it is also kept
/// sealed, since signing needs it.
pub fn create_client(db: &Db, sealer: &Sealer, n: &NewClient) -> Result<Client, StoreError> {
    let now = Timestamp::now().micros();
    let sealed = (n.id_token_alg == broker_core::client::IdTokenAlg::Hs256)
        .then(|| sealer.seal(n.secret.expose().as_bytes(), &client_context(&n.client_id)));
    db.write(|c| {
        let client: Client = diesel::insert_into(oidc_clients::table)
            .values((
                oidc_clients::client_id.eq(&n.client_id),
                oidc_clients::name.eq(&n.name),
                oidc_clients::secret_hash.eq(n.secret.hash()),
                oidc_clients::secret_sealed.eq(sealed),
                oidc_clients::redirect_uris.eq(n.redirect_uris.join("\n")),
                oidc_clients::post_logout_redirect_uris.eq(n.post_logout_redirect_uris.join("\n")),
                oidc_clients::id_token_alg.eq(n.id_token_alg.key()),
                oidc_clients::userinfo_format.eq(n.userinfo.key()),
                oidc_clients::active.eq(true),
                oidc_clients::created_at.eq(now),
                oidc_clients::subject_type.eq(n.subject_type.key()),
                oidc_clients::sector_identifier.eq(&n.sector_identifier),
                oidc_clients::act_claim.eq(n.act_claim),
            ))
            .returning(oidc_clients::id)
            .get_result::<i64>(c)
            .and_then(|id| oidc_clients::table.find(id).select(Client::as_select()).first(c))?;
        journal::append(
            c,
            &[Entry::new(Action::ClientRegistered)
                .client(client.client_id.clone())
                .detail("id_token_alg", n.id_token_alg.key())
                .detail("userinfo", n.userinfo.key())
                .detail("subject_type", n.subject_type.key())
                .detail("act_claim", n.act_claim)
                .detail("via", "cli")],
        )?;
        Ok(client)
    })
}

pub fn list_clients(db: &Db) -> Result<Vec<Client>, StoreError> {
    db.read(|c| Ok(oidc_clients::table.order(oidc_clients::id).select(Client::as_select()).load(c)?))
}

/// A change of the broker's signing keys, as journaled.
#[derive(Debug, Clone, Copy)]
pub struct SigningKeyChange<'a> {
    /// `generate`, `rotate` or `retire`.
    pub operation: &'a str,
    pub kid: &'a str,
    pub alg: &'a str,
    /// `cli`, or `serve` for the development key generated at start.
    pub via: &'a str,
}

/// Journals a change of the signing keys, whose key file `write` writes inside the
/// transaction, after the entry: if the entry cannot be written, the file is not touched;
/// if the file cannot be written, the entry is rolled back. (A commit failing after the
/// file was written is for the caller to undo: it knows the file.)
pub fn journal_signing_key(db: &Db, change: &SigningKeyChange<'_>, write: impl FnOnce() -> Result<(), String>) -> Result<(), StoreError> {
    db.write(|c| {
        journal::append(
            c,
            &[Entry::new(Action::SigningKeyRotated)
                .detail("operation", change.operation)
                .detail("kid", change.kid)
                .detail("alg", change.alg)
                .detail("via", change.via)],
        )?;
        write().map_err(StoreError::File)
    })
}
