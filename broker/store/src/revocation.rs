//! The one revocation path: the decision from `broker_core::mandat::plan_revocation`,
//! applied with its journal events and the revocation attestation.

use crate::attestations;
use crate::journal;
use crate::mandat_facts;
use crate::schema::autorisations;
use crate::{AnyConnection, StoreError};
use broker_core::capability::{AutorisationId, MandatId};
use broker_core::mandat::{plan_revocation, RevocationError, RevocationPlan, RevocationTarget, Revoker};
use broker_core::{Demarche, Timestamp};
use broker_core::notice::MandatChange;
use diesel::prelude::*;

/// A revocation made: what was revoked and the fingerprint of its attestation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Revocation {
    pub mandat_id: i64,
    pub demarches: Vec<Demarche>,
    pub fingerprint: String,
}

/// Plans the revocation of `target` in its mandat at `now` (see
/// [`broker_core::mandat::plan_revocation`]) and writes it, with its journal events, in the
/// caller's transaction. No attestation: [`revoke_in`] adds it.
pub fn apply_revocation(c: &mut AnyConnection, target: Target, who: Revoker<'_>, now: Timestamp) -> Result<RevocationPlan, StoreError> {
    let (mandat_id, target) = match target {
        Target::Autorisation(id) => {
            let mandat_id: i64 = autorisations::table
                .find(id.get())
                .select(autorisations::mandat_id)
                .first(c)
                .optional()?
                .ok_or_else(|| StoreError::NotFound(format!("autorisation inconnue : {id}")))?;
            (MandatId(mandat_id), RevocationTarget::Autorisation(id))
        }
        Target::Mandat(id) => (id, RevocationTarget::Mandat),
    };
    let facts = mandat_facts::mandat(c, mandat_id)?.ok_or_else(|| StoreError::NotFound(format!("mandat inconnu : {mandat_id}")))?;
    let plan = plan_revocation(&facts, target, who, now).map_err(|e| match e {
        RevocationError::UnknownAutorisation(_) | RevocationError::NotTheirs => StoreError::NotFound(e.to_string()),
        RevocationError::Expired | RevocationError::AutorisationAlreadyRevoked | RevocationError::MandatAlreadyRevoked => StoreError::Conflict(e.to_string()),
    })?;
    for (id, _) in &plan.revoked {
        diesel::update(autorisations::table.find(id.get()))
            .set(autorisations::revoked_at.eq(Some(plan.at.micros())))
            .execute(c)?;
    }
    let entries: Vec<_> = plan.events.iter().map(|e| e.entry(plan.at)).collect();
    journal::append(c, &entries)?;
    Ok(plan)
}

/// What to revoke: one autorisation, or every active autorisation of a mandat.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    Autorisation(AutorisationId),
    Mandat(MandatId),
}

/// The one revocation path (pages, usager space, command line): revokes `target` at `now`,
/// journals each autorisation revoked (and `mandat_revoked` when none stays active), and
/// records the revocation attestation, in the caller's transaction.
pub fn revoke_in(c: &mut AnyConnection, target: Target, who: Revoker<'_>, now: Timestamp) -> Result<Revocation, StoreError> {
    let plan = apply_revocation(c, target, who, now)?;
    let revoked: Vec<Demarche> = plan.revoked.iter().map(|r| r.1).collect();
    let mandat_id = plan.mandat.get();
    let content = attestations::content_for_revocation(c, mandat_id, &revoked, now)?;
    let fingerprint = attestations::record_by(c, plan.mandat, "revocation", &content, plan.by, plan.parties, now)?;
    crate::lifecycle::mandat_changed(c, mandat_id, MandatChange::Revoked, &revoked, &fingerprint, now)?;
    Ok(Revocation { mandat_id, demarches: plan.demarches(), fingerprint })
}

