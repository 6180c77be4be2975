//! The facts behind the typed capabilities of `broker_core::capability`, read from the
//! database, and the capabilities checked from them.

use crate::admin::find_organisation;
use crate::schema::aidants;
use crate::{AnyConnection, Db, StoreError};
use broker_core::capability::{AidantFacts, AidantId, InOrganisation, OrganisationFacts, OrganisationId};
use diesel::prelude::*;

/// What the store knows of the aidant, if they exist.
pub fn aidant_facts(c: &mut AnyConnection, aidant: AidantId) -> Result<Option<AidantFacts>, StoreError> {
    let row: Option<(bool, Option<i64>)> = aidants::table
        .find(aidant.get())
        .select((aidants::active, aidants::current_organisation_id))
        .first(c)
        .optional()?;
    Ok(row.map(|(active, current)| AidantFacts { id: aidant, active, current_organisation: current.map(OrganisationId) }))
}

/// The aidant acting in their current organisation, read on `c`. A refusal (unknown or
/// inactive aidant, no organisation) is `Invalid` with its reason.
pub fn in_organisation_on(c: &mut AnyConnection, aidant: AidantId) -> Result<InOrganisation, StoreError> {
    let facts = aidant_facts(c, aidant)?.ok_or_else(|| StoreError::NotFound(format!("aidant inconnu : {aidant}")))?;
    let org = facts.current_organisation.ok_or_else(|| StoreError::Invalid(broker_core::capability::Refusal::NoOrganisation.to_string()))?;
    let o = find_organisation(c, org.get())?;
    let org_facts = OrganisationFacts { id: org, allowed_demarches: o.allowed() };
    InOrganisation::check(&facts, &org_facts).map_err(|r| StoreError::Invalid(r.to_string()))
}

/// [`in_organisation_on`] on a connection of `db`.
pub fn in_organisation(db: &Db, aidant: AidantId) -> Result<InOrganisation, StoreError> {
    db.read(|c| in_organisation_on(c, aidant))
}
