//! Usagers, mandats and autorisations. The decisions (supersession, allowed démarches,
//! status) come from `broker_core::mandat`; this module applies them with their journal
//! entries in one transaction.

use crate::admin::find_organisation;
use crate::journal;
use crate::schema::{autorisations, mandats, usagers};
use crate::{AnyConnection, Db, StoreError};
use broker_core::identite::IdentitePivot;
use broker_core::journal::{Action, Entry};
use broker_core::mandat::{plan_new_mandat, AutorisationFacts, Duree, MandatFacts, MandatPlan, Status};
use broker_core::{Demarche, Timestamp};
use diesel::prelude::*;

/// Finds the usager by key, or records them. Returns the usager id.
pub fn upsert_usager(c: &mut AnyConnection, usager_key: &str, id: &IdentitePivot, now: Timestamp) -> Result<i64, StoreError> {
    if let Some(existing) = usagers::table
        .filter(usagers::sub_hash.eq(usager_key))
        .select(usagers::id)
        .first::<i64>(c)
        .optional()?
    {
        return Ok(existing);
    }
    Ok(diesel::insert_into(usagers::table)
        .values((
            usagers::sub_hash.eq(usager_key),
            usagers::given_name.eq(&id.given_name),
            usagers::family_name.eq(&id.family_name),
            usagers::preferred_username.eq(&id.preferred_username),
            usagers::birthdate.eq(&id.birthdate),
            usagers::gender.eq(&id.gender),
            usagers::birthplace.eq(&id.birthplace),
            usagers::birthcountry.eq(&id.birthcountry),
            usagers::email.eq(Some(&id.email)),
            usagers::created_at.eq(now.micros()),
        ))
        .returning(usagers::id)
        .get_result(c)?)
}

/// The usager recorded under this key, if any.
pub fn find_usager_by_key(c: &mut AnyConnection, usager_key: &str) -> Result<Option<i64>, StoreError> {
    Ok(usagers::table.filter(usagers::sub_hash.eq(usager_key)).select(usagers::id).first::<i64>(c).optional()?)
}

/// Every mandat of a usager with an organisation, with its autorisations.
pub fn facts(c: &mut AnyConnection, organisation_id: i64, usager_id: i64) -> Result<Vec<MandatFacts>, StoreError> {
    let ms: Vec<(i64, i64, i64)> = mandats::table
        .filter(mandats::organisation_id.eq(organisation_id))
        .filter(mandats::usager_id.eq(usager_id))
        .order(mandats::id)
        .select((mandats::id, mandats::created_at, mandats::expires_at))
        .load(c)?;
    with_autorisations(c, ms.into_iter().map(|(id, cr, ex)| (id, organisation_id, usager_id, cr, ex)).collect())
}

fn with_autorisations(c: &mut AnyConnection, ms: Vec<(i64, i64, i64, i64, i64)>) -> Result<Vec<MandatFacts>, StoreError> {
    let ids: Vec<i64> = ms.iter().map(|m| m.0).collect();
    let mut auts: Vec<(i64, i64, String, Option<i64>)> = Vec::new();
    for chunk in ids.chunks(500) {
        auts.extend(
            autorisations::table
                .filter(autorisations::mandat_id.eq_any(chunk))
                .order(autorisations::id)
                .select((autorisations::id, autorisations::mandat_id, autorisations::demarche, autorisations::revoked_at))
                .load::<(i64, i64, String, Option<i64>)>(c)?,
        );
    }
    Ok(ms
        .into_iter()
        .map(|(id, org, usager, created, expires)| MandatFacts {
            id,
            organisation_id: org,
            usager_id: usager,
            created_at: Timestamp::from_micros(created),
            expires_at: Timestamp::from_micros(expires),
            autorisations: auts
                .iter()
                .filter(|a| a.1 == id)
                .filter_map(|a| {
                    Demarche::from_key(&a.2).map(|demarche| AutorisationFacts {
                        id: a.0,
                        demarche,
                        revoked_at: a.3.map(Timestamp::from_micros),
                    })
                })
                .collect(),
        })
        .collect())
}

pub struct NewMandat {
    pub organisation_id: i64,
    pub usager_id: i64,
    /// The aidant who creates it, recorded in the journal.
    pub aidant_id: i64,
    pub demarches: Vec<Demarche>,
    pub duree: Duree,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreatedMandat {
    pub mandat_id: i64,
    pub autorisations: Vec<(i64, Demarche)>,
    pub plan: MandatPlan,
}

/// Creates a mandat at `now`: checks the organisation's allowed démarches, revokes the
/// superseded autorisations, and journals everything in the same transaction.
pub fn create_mandat(db: &Db, n: &NewMandat, now: Timestamp) -> Result<CreatedMandat, StoreError> {
    db.write(|c| insert_mandat(c, n, now))
}

/// Creates the mandat inside the caller's transaction (see [`create_mandat`]).
pub(crate) fn insert_mandat(c: &mut AnyConnection, n: &NewMandat, now: Timestamp) -> Result<CreatedMandat, StoreError> {
    let org = find_organisation(c, n.organisation_id)?;
    let existing = facts(c, n.organisation_id, n.usager_id)?;
    let plan = plan_new_mandat(n.organisation_id, &org.allowed(), n.usager_id, &n.demarches, n.duree, &existing, now)
        .map_err(|e| StoreError::Invalid(e.to_string()))?;
    let mandat_id: i64 = diesel::insert_into(mandats::table)
        .values((
            mandats::organisation_id.eq(plan.organisation_id),
            mandats::usager_id.eq(plan.usager_id),
            mandats::created_at.eq(plan.created_at.micros()),
            mandats::expires_at.eq(plan.expires_at.micros()),
            mandats::duration_days.eq(plan.duree.days() as i32),
        ))
        .returning(mandats::id)
        .get_result(c)?;
    let base = |a: Action| Entry::new(a).aidant(n.aidant_id).organisation(n.organisation_id).usager(n.usager_id);
    let mut entries = vec![base(Action::MandatCreated)
        .mandat(mandat_id)
        .detail("duree_jours", plan.duree.days())
        .detail("demarches", Demarche::join(&plan.demarches))
        .detail("expires_at", plan.expires_at.rfc3339())];
    for &superseded in &plan.superseded {
        let (old_mandat, demarche): (i64, String) = diesel::update(autorisations::table.find(superseded))
            .set(autorisations::revoked_at.eq(Some(now.micros())))
            .returning((autorisations::mandat_id, autorisations::demarche))
            .get_result(c)?;
        let mut e = base(Action::AutorisationRevoked).mandat(old_mandat).autorisation(superseded).detail("reason", "superseded").detail("by_mandat", mandat_id);
        if let Some(d) = Demarche::from_key(&demarche) {
            e = e.demarche(d);
        }
        entries.push(e);
    }
    let mut created = Vec::new();
    for &d in &plan.demarches {
        let id: i64 = diesel::insert_into(autorisations::table)
            .values((
                autorisations::mandat_id.eq(mandat_id),
                autorisations::demarche.eq(d.key()),
                autorisations::created_at.eq(now.micros()),
            ))
            .returning(autorisations::id)
            .get_result(c)?;
        entries.push(base(Action::AutorisationCreated).mandat(mandat_id).autorisation(id).demarche(d));
        created.push((id, d));
    }
    journal::append(c, &entries)?;
    Ok(CreatedMandat { mandat_id, autorisations: created, plan })
}

/// A mandat made with a usager just identified through FranceConnect.
pub struct NewMandatForUsager<'a> {
    pub organisation_id: i64,
    pub aidant_id: i64,
    /// [`broker_core::identite::usager_key`] of FranceConnect's `sub`.
    pub usager_key: &'a str,
    pub identity: &'a IdentitePivot,
    pub demarches: Vec<Demarche>,
    pub duree: Duree,
}

/// The mandat created with its attestation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreatedWithAttestation {
    pub usager_id: i64,
    pub mandat: CreatedMandat,
    /// Fingerprint of the attestation recorded.
    pub fingerprint: String,
}

/// The whole creation in one transaction: the usager found or recorded (journaled as
/// identified), the mandat with its autorisations and the superseded ones revoked, and
/// the attestation with its journal entry. Nothing is written when any step fails.
pub fn create_mandat_with_attestation(db: &Db, n: &NewMandatForUsager<'_>, now: Timestamp) -> Result<CreatedWithAttestation, StoreError> {
    db.write(|c| {
        let usager_id = upsert_usager(c, n.usager_key, n.identity, now)?;
        journal::append(
            c,
            &[Entry::new(Action::UsagerIdentified)
                .aidant(n.aidant_id)
                .organisation(n.organisation_id)
                .usager(usager_id)
                .detail("method", "franceconnect")],
        )?;
        let mandat = insert_mandat(
            c,
            &NewMandat {
                organisation_id: n.organisation_id,
                usager_id,
                aidant_id: n.aidant_id,
                demarches: n.demarches.clone(),
                duree: n.duree,
            },
            now,
        )?;
        let content = crate::attestations::content_for_mandat(c, mandat.mandat_id)?;
        let fingerprint = crate::attestations::record(
            c,
            mandat.mandat_id,
            "mandat",
            &content,
            n.aidant_id,
            n.organisation_id,
            usager_id,
            now,
        )?;
        Ok(CreatedWithAttestation { usager_id, mandat, fingerprint })
    })
}

/// Revokes one autorisation at `now` (journaled). Revoking the last active one makes
/// the mandat revoked.
pub fn revoke_autorisation(db: &Db, autorisation_id: i64, aidant_id: i64, now: Timestamp) -> Result<(), StoreError> {
    db.write(|c| {
        let (mandat_id, demarche, revoked_at): (i64, String, Option<i64>) = autorisations::table
            .find(autorisation_id)
            .select((autorisations::mandat_id, autorisations::demarche, autorisations::revoked_at))
            .first(c)
            .optional()?
            .ok_or_else(|| StoreError::NotFound(format!("autorisation inconnue : {autorisation_id}")))?;
        let (org, usager, expires_at): (i64, i64, i64) = mandats::table
            .find(mandat_id)
            .select((mandats::organisation_id, mandats::usager_id, mandats::expires_at))
            .first(c)?;
        if revoked_at.is_some() {
            return Err(StoreError::Conflict("cette autorisation est déjà révoquée".into()));
        }
        if now.micros() >= expires_at {
            return Err(StoreError::Conflict("ce mandat a expiré : il n'y a plus rien à révoquer".into()));
        }
        diesel::update(autorisations::table.find(autorisation_id))
            .set(autorisations::revoked_at.eq(Some(now.micros())))
            .execute(c)?;
        let mut e = Entry::new(Action::AutorisationRevoked)
            .aidant(aidant_id)
            .organisation(org)
            .usager(usager)
            .mandat(mandat_id)
            .autorisation(autorisation_id)
            .detail("reason", "revoked");
        if let Some(d) = Demarche::from_key(&demarche) {
            e = e.demarche(d);
        }
        journal::append(c, &[e])?;
        Ok(())
    })
}

/// The organisation's mandats as lists show them at `now`: mandats expired or revoked
/// for more than 365 days are left out (they stay in the database).
pub fn list_for_organisation(db: &Db, organisation_id: i64, now: Timestamp) -> Result<Vec<(MandatFacts, Status)>, StoreError> {
    db.read(|c| {
        let ms: Vec<(i64, i64, i64, i64, i64)> = mandats::table
            .filter(mandats::organisation_id.eq(organisation_id))
            .order(mandats::id)
            .select((mandats::id, mandats::organisation_id, mandats::usager_id, mandats::created_at, mandats::expires_at))
            .load(c)?;
        Ok(with_autorisations(c, ms)?
            .into_iter()
            .filter(|m| m.shown_in_lists(now))
            .map(|m| {
                let s = m.status(now);
                (m, s)
            })
            .collect())
    })
}
