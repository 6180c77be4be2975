//! Usagers, mandats and autorisations. The decisions (supersession, allowed démarches,
//! status) come from `broker_core::mandat`; this module applies them with their journal
//! entries in one transaction.

use crate::admin::find_organisation;
use crate::journal;
use crate::schema::{autorisations, mandats, usagers};
use crate::{AnyConnection, Db, StoreError};
use broker_core::identite::IdentitePivot;
use broker_core::capability::{AidantId, AutorisationId, MandatId, OrganisationId, UsagerId};
use broker_core::journal::{Event, Parties};
use broker_core::mandat::{plan_new_mandat, Duree, MandatFacts, MandatPlan, Revoker, Status};

pub use crate::mandat_facts::facts;
use crate::mandat_facts::with_autorisations;
use broker_core::{Demarche, Timestamp};
use broker_core::notice::MandatChange;
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
    let by = AidantId(n.aidant_id);
    let parties = Parties { organisation: OrganisationId(n.organisation_id), usager: UsagerId(n.usager_id) };
    let mut events = vec![Event::MandatCreated {
        by,
        parties,
        mandat: MandatId(mandat_id),
        duree: plan.duree,
        demarches: plan.demarches.clone(),
        expires_at: plan.expires_at,
    }];
    for &superseded in &plan.superseded {
        let (old_mandat, demarche): (i64, String) = diesel::update(autorisations::table.find(superseded))
            .set(autorisations::revoked_at.eq(Some(now.micros())))
            .returning((autorisations::mandat_id, autorisations::demarche))
            .get_result(c)?;
        // Superseded autorisations come from `existing`, whose démarches are all known.
        let demarche = Demarche::from_key(&demarche).ok_or_else(|| StoreError::Invalid(format!("démarche inconnue : {demarche}")))?;
        events.push(Event::AutorisationSuperseded {
            by,
            parties,
            mandat: MandatId(old_mandat),
            autorisation: AutorisationId(superseded),
            demarche,
            by_mandat: MandatId(mandat_id),
        });
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
        events.push(Event::AutorisationCreated { by, parties, mandat: MandatId(mandat_id), autorisation: AutorisationId(id), demarche: d });
        created.push((id, d));
    }
    let entries: Vec<_> = events.iter().map(|e| e.entry(now)).collect();
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
        let identified = Event::UsagerIdentified {
            by: AidantId(n.aidant_id),
            parties: Parties { organisation: OrganisationId(n.organisation_id), usager: UsagerId(usager_id) },
        };
        journal::append(c, &[identified.entry(now)])?;
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
        let demarches = crate::mandat_facts::mandat(c, MandatId(mandat.mandat_id))?.map(|m| m.active_demarches(now)).unwrap_or_default();
        crate::lifecycle::mandat_changed(c, mandat.mandat_id, MandatChange::Created, &demarches, &fingerprint, now)?;
        Ok(CreatedWithAttestation { usager_id, mandat, fingerprint })
    })
}

/// Revokes one autorisation at `now` as its mandat's aidant `aidant_id` (journaled, with
/// `mandat_revoked` when it was the last active one), without the revocation attestation:
/// a bare revocation for fixtures. Pages, the usager space and the command line go through
/// [`crate::revocation::revoke_in`], which adds the attestation.
pub fn revoke_autorisation(db: &Db, autorisation_id: i64, aidant_id: i64, now: Timestamp) -> Result<(), StoreError> {
    db.write(|c| {
        let by = crate::capabilities::in_organisation_on(c, AidantId(aidant_id))?;
        crate::revocation::apply_revocation(c, crate::revocation::Target::Autorisation(AutorisationId(autorisation_id)), Revoker::Aidant(&by), now)?;
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
