//! Changes an aidant makes to existing mandats from the usagers pages: revoking one
//! autorisation or a whole mandat (with the revocation attestation), renewing, and the
//! reading of a usager's history in the journal.

use crate::attestations;
use crate::journal;
use crate::mandats::{self, CreatedMandat, NewMandat};
pub use crate::revocation::{Revocation, Target};
use crate::revocation::revoke_in;
use crate::schema::{autorisations, journal as journal_t, usagers};
use crate::{AnyConnection, Db, StoreError};
use broker_core::attestation::AttestationContent;
use broker_core::capability::{AutorisationId, InOrganisation, MandatId, OrganisationId, UsagerId};
use broker_core::journal::{Event, Parties};
use broker_core::mandat::Revoker;
use broker_core::{Demarche, Timestamp};
use broker_core::notice::MandatChange;
use diesel::prelude::*;

/// An aidant revokes one active autorisation of their organisation, with its revocation
/// attestation, in one transaction.
pub fn revoke_autorisation(db: &Db, by: &InOrganisation, autorisation: AutorisationId, now: Timestamp) -> Result<Revocation, StoreError> {
    db.write(|c| revoke_in(c, Target::Autorisation(autorisation), Revoker::Aidant(by), now))
}

/// An aidant revokes every active autorisation of a mandat of their organisation, with the
/// `mandat_revoked` entry and the revocation attestation, in one transaction.
pub fn revoke_mandat(db: &Db, by: &InOrganisation, mandat: MandatId, now: Timestamp) -> Result<Revocation, StoreError> {
    db.write(|c| revoke_in(c, Target::Mandat(mandat), Revoker::Aidant(by), now))
}

/// The content of the revocation attestation with fingerprint `fp`, rebuilt from the
/// database (the autorisations of its mandat revoked at the instant it was recorded).
/// None when no revocation attestation has this fingerprint.
pub fn revocation_content(c: &mut AnyConnection, fp: &str) -> Result<Option<AttestationContent>, StoreError> {
    let Some(found) = attestations::find_by_fingerprint(c, fp)? else { return Ok(None) };
    if found.kind != broker_core::attestation::Kind::Revocation {
        return Ok(None);
    }
    let at = found.created_at;
    let keys: Vec<String> = autorisations::table
        .filter(autorisations::mandat_id.eq(found.mandat_id))
        .filter(autorisations::revoked_at.eq(Some(at.micros())))
        .select(autorisations::demarche)
        .load(c)?;
    let demarches: Vec<Demarche> = keys.iter().filter_map(|k| Demarche::from_key(k)).collect();
    let mut content = attestations::content_for_revocation(c, found.mandat_id, &demarches, at)?;
    content.legal_text_version = found.legal_text_version;
    Ok(if content.fingerprint() == fp { Some(content) } else { None })
}

/// Renews a mandat: a new mandat for the same usager and organisation (superseding the
/// old autorisations of the same démarches), the `mandat_renewed` entry and the new
/// mandat's attestation, in one transaction. `n` must be for `by`'s aidant and organisation.
pub fn renew_mandat(db: &Db, by: &InOrganisation, old_mandat: MandatId, n: &NewMandat, now: Timestamp) -> Result<CreatedMandat, StoreError> {
    if n.aidant_id != by.aidant().get() || n.organisation_id != by.organisation().get() {
        return Err(StoreError::Invalid("le mandat ne concerne pas cet usager et cette structure".into()));
    }
    db.write(|c| {
        let created = mandats::insert_mandat(c, n, now)?;
        let parties = Parties { organisation: by.organisation(), usager: UsagerId(n.usager_id) };
        let renewed = Event::MandatRenewed { by: by.aidant(), parties, mandat: MandatId(created.mandat_id), renews: old_mandat };
        journal::append(c, &[renewed.entry(now)])?;
        let content = crate::attestations::content_for_mandat(c, created.mandat_id)?;
        let fingerprint = crate::attestations::record(c, created.mandat_id, "mandat", &content, n.aidant_id, n.organisation_id, n.usager_id, now)?;
        let demarches = crate::mandat_facts::mandat(c, MandatId(created.mandat_id))?.map(|m| m.active_demarches(now)).unwrap_or_default();
        crate::lifecycle::mandat_changed(c, created.mandat_id, MandatChange::Renewed, &demarches, &fingerprint, now)?;
        Ok(created)
    })
}

/// A usager as the usagers pages show them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsagerName {
    pub id: i64,
    pub given_name: String,
    pub family_name: String,
    pub birthdate: String,
}

/// Names of the usagers `ids`.
pub fn usager_names(c: &mut AnyConnection, ids: &[i64]) -> Result<Vec<UsagerName>, StoreError> {
    let mut out = Vec::new();
    for chunk in ids.chunks(500) {
        let rows: Vec<(i64, String, String, String)> = usagers::table
            .filter(usagers::id.eq_any(chunk))
            .select((usagers::id, usagers::given_name, usagers::family_name, usagers::birthdate))
            .load(c)?;
        out.extend(rows.into_iter().map(|(id, given_name, family_name, birthdate)| UsagerName { id, given_name, family_name, birthdate }));
    }
    Ok(out)
}

/// One line of a usager's history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryLine {
    pub at: Timestamp,
    pub action: String,
    pub aidant_id: Option<i64>,
    pub mandat_id: Option<i64>,
    pub demarche: Option<String>,
    /// The entry's details (a JSON object), as recorded.
    pub details: String,
}

type Line = (i64, String, Option<i64>, Option<i64>, Option<String>, String);

/// What the journal holds about a usager within an organisation, oldest first.
pub fn history(c: &mut AnyConnection, organisation: OrganisationId, usager: UsagerId) -> Result<Vec<HistoryLine>, StoreError> {
    let (organisation_id, usager_id) = (organisation.get(), usager.get());
    let mut rows: Vec<(i64, Line)> = journal_t::table
        .filter(journal_t::usager_id.eq(usager_id))
        .filter(journal_t::organisation_id.eq(organisation_id))
        .order(journal_t::seq)
        .select((journal_t::seq, (journal_t::at, journal_t::action, journal_t::aidant_id, journal_t::mandat_id, journal_t::demarche, journal_t::details)))
        .load(c)?;
    // Ordered by instant, then by number.
    rows.sort_by_key(|(seq, l)| (l.0, *seq));
    Ok(rows
        .into_iter()
        .map(|(_, (at, action, aidant_id, mandat_id, demarche, details))| HistoryLine { at: Timestamp::from_micros(at), action, aidant_id, mandat_id, demarche, details })
        .collect())
}
