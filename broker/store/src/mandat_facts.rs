//! The read side of mandats: their facts (mandat, autorisations, revocation instants) as
//! `broker_core::mandat` decides on them.

use crate::schema::{autorisations, mandats};
use crate::{AnyConnection, StoreError};
use broker_core::capability::MandatId;
use broker_core::mandat::{AutorisationFacts, MandatFacts};
use broker_core::{Demarche, Timestamp};
use diesel::prelude::*;

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

pub(crate) fn with_autorisations(c: &mut AnyConnection, ms: Vec<(i64, i64, i64, i64, i64)>) -> Result<Vec<MandatFacts>, StoreError> {
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

/// One mandat with its autorisations, if it exists.
pub fn mandat(c: &mut AnyConnection, id: MandatId) -> Result<Option<MandatFacts>, StoreError> {
    let m: Option<(i64, i64, i64, i64, i64)> = mandats::table
        .find(id.get())
        .select((mandats::id, mandats::organisation_id, mandats::usager_id, mandats::created_at, mandats::expires_at))
        .first(c)
        .optional()?;
    Ok(match m {
        Some(m) => with_autorisations(c, vec![m])?.pop(),
        None => None,
    })
}
