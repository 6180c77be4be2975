//! What a usager sees of themselves after identifying with FranceConnect: their mandats
//! in every organisation, every use made of them, and their own revocations. Every
//! function takes the usager's id and never reads another usager's rows.

use crate::revocation::{revoke_in, Revocation, Target};
use crate::mandats::{self as mandat_store};
use crate::schema::{aidants, autorisations, journal as journal_t, mandats, oidc_clients, organisations};
use crate::{AnyConnection, Db, StoreError};
use broker_core::capability::{AutorisationId, MandatId, UsagerId};
use broker_core::journal::Action;
use broker_core::mandat::Revoker;
use broker_core::mandat::MandatFacts;
use broker_core::{Demarche, Timestamp};
use diesel::prelude::*;
use std::collections::BTreeMap;

/// A mandat of the usager, with the name of the organisation that holds it.
#[derive(Debug, Clone)]
pub struct UsagerMandat {
    pub organisation: String,
    pub facts: MandatFacts,
}

/// The usager's mandats in every organisation, most recent first.
pub fn mandats_of(c: &mut AnyConnection, usager_id: i64) -> Result<Vec<UsagerMandat>, StoreError> {
    let orgs: Vec<(i64, String)> = organisations::table
        .filter(organisations::id.eq_any(mandats::table.filter(mandats::usager_id.eq(usager_id)).select(mandats::organisation_id)))
        .select((organisations::id, organisations::name))
        .load(c)?;
    let mut out = Vec::new();
    for (org, name) in orgs {
        for facts in mandat_store::facts(c, org, usager_id)? {
            out.push(UsagerMandat { organisation: name.clone(), facts });
        }
    }
    out.sort_by_key(|m| std::cmp::Reverse((m.facts.created_at, m.facts.id)));
    Ok(out)
}

/// One use of a mandat: an aidant acted for the usager on an e-service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Use {
    pub at: Timestamp,
    pub organisation: String,
    pub aidant: String,
    pub demarche: Option<Demarche>,
    pub service: String,
}

type UseRow = (i64, Option<i64>, Option<i64>, Option<String>, Option<String>);

/// Every use made of the usager's mandats, most recent first.
pub fn uses_of(c: &mut AnyConnection, usager_id: i64) -> Result<Vec<Use>, StoreError> {
    let action = Action::AutorisationUsed.key();
    let rows: Vec<UseRow> = journal_t::table
        .filter(journal_t::usager_id.eq(usager_id))
        .filter(journal_t::action.eq(action))
        .select((journal_t::at, journal_t::aidant_id, journal_t::organisation_id, journal_t::demarche, journal_t::client_id))
        .load(c)?;
    let aidant_ids: Vec<i64> = rows.iter().filter_map(|r| r.1).collect();
    let org_ids: Vec<i64> = rows.iter().filter_map(|r| r.2).collect();
    let client_ids: Vec<String> = rows.iter().filter_map(|r| r.4.clone()).collect();
    let names: BTreeMap<i64, String> = aidants::table
        .filter(aidants::id.eq_any(&aidant_ids))
        .select((aidants::id, aidants::first_name, aidants::last_name))
        .load::<(i64, String, String)>(c)?
        .into_iter()
        .map(|(id, f, l)| (id, format!("{f} {l}")))
        .collect();
    let orgs: BTreeMap<i64, String> =
        organisations::table.filter(organisations::id.eq_any(&org_ids)).select((organisations::id, organisations::name)).load::<(i64, String)>(c)?.into_iter().collect();
    let services: BTreeMap<String, String> =
        oidc_clients::table.filter(oidc_clients::client_id.eq_any(&client_ids)).select((oidc_clients::client_id, oidc_clients::name)).load::<(String, String)>(c)?.into_iter().collect();
    let mut out: Vec<Use> = rows
        .into_iter()
        .map(|(at, aidant, org, demarche, client)| Use {
            at: Timestamp::from_micros(at),
            aidant: aidant.and_then(|a| names.get(&a).cloned()).unwrap_or_default(),
            organisation: org.and_then(|o| orgs.get(&o).cloned()).unwrap_or_default(),
            demarche: demarche.as_deref().and_then(Demarche::from_key),
            service: client.map(|c| services.get(&c).cloned().unwrap_or(c)).unwrap_or_default(),
        })
        .collect();
    out.sort_by_key(|u| std::cmp::Reverse(u.at));
    Ok(out)
}

fn not_theirs() -> StoreError {
    StoreError::NotFound("mandat introuvable".into())
}

/// The usager revokes one of their active autorisations (journaled as done by the
/// usager, with the revocation attestation). Another usager's autorisation: `NotFound`.
pub fn revoke_autorisation(db: &Db, usager: UsagerId, autorisation: AutorisationId, now: Timestamp) -> Result<Revocation, StoreError> {
    let (usager_id, autorisation_id) = (usager.get(), autorisation.get());
    db.write(|c| {
        autorisations::table
            .inner_join(mandats::table)
            .filter(autorisations::id.eq(autorisation_id))
            .filter(mandats::usager_id.eq(usager_id))
            .select(autorisations::mandat_id)
            .first::<i64>(c)
            .optional()?
            .ok_or_else(not_theirs)?;
        revoke_in(c, Target::Autorisation(autorisation), Revoker::Usager(usager), now)
    })
}

/// The usager revokes a whole mandat of theirs. Another usager's mandat: `NotFound`.
pub fn revoke_mandat(db: &Db, usager: UsagerId, mandat: MandatId, now: Timestamp) -> Result<Revocation, StoreError> {
    let (usager_id, mandat_id) = (usager.get(), mandat.get());
    db.write(|c| {
        let owner: Option<i64> = mandats::table.find(mandat_id).select(mandats::usager_id).first(c).optional()?;
        if owner != Some(usager_id) {
            return Err(not_theirs());
        }
        revoke_in(c, Target::Mandat(mandat), Revoker::Usager(usager), now)
    })
}
