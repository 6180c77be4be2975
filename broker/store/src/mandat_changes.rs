//! Changes an aidant makes to existing mandats from the usagers pages: revoking one
//! autorisation or a whole mandat (with the revocation attestation), renewing, and the
//! reading of a usager's history in the journal.

use crate::attestations;
use crate::journal;
use crate::mandats::{self, CreatedMandat, NewMandat};
use crate::schema::{autorisations, journal as journal_t, journal_pending, mandats as mandats_t, usagers};
use crate::{AnyConnection, Db, StoreError};
use broker_core::attestation::AttestationContent;
use broker_core::journal::{Action, Entry};
use broker_core::{Demarche, Timestamp};
use diesel::prelude::*;

/// A revocation made: what was revoked and the fingerprint of its attestation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Revocation {
    pub mandat_id: i64,
    pub demarches: Vec<Demarche>,
    pub fingerprint: String,
}

/// Revokes `autorisation_ids` (all of the same mandat, all active) at `now`, journals each
/// revocation (and the mandat's when none stays active), and records the revocation
/// attestation, in the caller's transaction.
/// `aidant_id` is None when the usager revokes from their own space.
pub(crate) fn revoke_in(c: &mut AnyConnection, mandat_id: i64, only: Option<i64>, aidant_id: Option<i64>, now: Timestamp) -> Result<Revocation, StoreError> {
    let (org, usager, expires_at): (i64, i64, i64) = mandats_t::table
        .find(mandat_id)
        .select((mandats_t::organisation_id, mandats_t::usager_id, mandats_t::expires_at))
        .first(c)
        .optional()?
        .ok_or_else(|| StoreError::NotFound(format!("mandat inconnu : {mandat_id}")))?;
    if now.micros() >= expires_at {
        return Err(StoreError::Conflict("ce mandat a expiré : il n'y a plus rien à révoquer".into()));
    }
    let active: Vec<(i64, String)> = autorisations::table
        .filter(autorisations::mandat_id.eq(mandat_id))
        .filter(autorisations::revoked_at.is_null())
        .order(autorisations::id)
        .select((autorisations::id, autorisations::demarche))
        .load(c)?;
    let targets: Vec<(i64, String)> = match only {
        Some(id) => {
            let t: Vec<(i64, String)> = active.iter().filter(|a| a.0 == id).cloned().collect();
            if t.is_empty() {
                return Err(StoreError::Conflict("cette autorisation est déjà révoquée".into()));
            }
            t
        }
        None => active.clone(),
    };
    if targets.is_empty() {
        return Err(StoreError::Conflict("ce mandat est déjà révoqué".into()));
    }
    let base = |a: Action| {
        let mut e = Entry::new(a).organisation(org).usager(usager).mandat(mandat_id);
        match aidant_id {
            Some(id) => e.aidant = Some(id),
            None => e = e.detail("by", "usager"),
        }
        e
    };
    let mut entries = Vec::new();
    let mut demarches = Vec::new();
    for (id, key) in &targets {
        diesel::update(autorisations::table.find(*id))
            .set(autorisations::revoked_at.eq(Some(now.micros())))
            .execute(c)?;
        let mut e = base(Action::AutorisationRevoked).autorisation(*id).detail("reason", "revoked");
        if let Some(d) = Demarche::from_key(key) {
            e = e.demarche(d);
            demarches.push(d);
        }
        entries.push(e);
    }
    if targets.len() == active.len() {
        entries.push(base(Action::MandatRevoked).detail("demarches", Demarche::join(&demarches)));
    }
    journal::append(c, &entries)?;
    let content = attestations::content_for_revocation(c, mandat_id, &demarches, now)?;
    let fingerprint = attestations::record_by(c, mandat_id, "revocation", &content, aidant_id, org, usager, now)?;
    demarches.sort();
    Ok(Revocation { mandat_id, demarches, fingerprint })
}

/// Revokes one active autorisation, with its revocation attestation, in one transaction.
pub fn revoke_autorisation(db: &Db, autorisation_id: i64, aidant_id: i64, now: Timestamp) -> Result<Revocation, StoreError> {
    db.write(|c| {
        let mandat_id: i64 = autorisations::table
            .find(autorisation_id)
            .select(autorisations::mandat_id)
            .first(c)
            .optional()?
            .ok_or_else(|| StoreError::NotFound(format!("autorisation inconnue : {autorisation_id}")))?;
        revoke_in(c, mandat_id, Some(autorisation_id), Some(aidant_id), now)
    })
}

/// Revokes every active autorisation of a mandat, with the `mandat_revoked` entry and the
/// revocation attestation, in one transaction.
pub fn revoke_mandat(db: &Db, mandat_id: i64, aidant_id: i64, now: Timestamp) -> Result<Revocation, StoreError> {
    db.write(|c| revoke_in(c, mandat_id, None, Some(aidant_id), now))
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
/// mandat's attestation, in one transaction.
pub fn renew_mandat(db: &Db, old_mandat_id: i64, n: &NewMandat, now: Timestamp) -> Result<CreatedMandat, StoreError> {
    db.write(|c| {
        let created = mandats::insert_mandat(c, n, now)?;
        journal::append(
            c,
            &[Entry::new(Action::MandatRenewed)
                .aidant(n.aidant_id)
                .organisation(n.organisation_id)
                .usager(n.usager_id)
                .mandat(created.mandat_id)
                .detail("renews", old_mandat_id)],
        )?;
        let content = crate::attestations::content_for_mandat(c, created.mandat_id)?;
        crate::attestations::record(c, created.mandat_id, "mandat", &content, n.aidant_id, n.organisation_id, n.usager_id, now)?;
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

/// What the journal holds about a usager within an organisation, oldest first (entries
/// not yet numbered included). Each entry is listed once, whether or not the connection
/// is in a snapshot while the sequencer numbers entries.
pub fn history(c: &mut AnyConnection, organisation_id: i64, usager_id: i64) -> Result<Vec<HistoryLine>, StoreError> {
    // Pending entries first, numbered ones second (see `journal::once`).
    let pending: Vec<(i64, Line)> = journal_pending::table
        .filter(journal_pending::usager_id.eq(usager_id))
        .filter(journal_pending::organisation_id.eq(organisation_id))
        .order(journal_pending::id)
        .select((
            journal_pending::id,
            (journal_pending::at, journal_pending::action, journal_pending::aidant_id, journal_pending::mandat_id, journal_pending::demarche, journal_pending::details),
        ))
        .load(c)?;
    let numbered: Vec<(Option<i64>, (i64, Line))> = journal_t::table
        .filter(journal_t::usager_id.eq(usager_id))
        .filter(journal_t::organisation_id.eq(organisation_id))
        .order(journal_t::seq)
        .select((journal_t::pending_id, (journal_t::seq, (journal_t::at, journal_t::action, journal_t::aidant_id, journal_t::mandat_id, journal_t::demarche, journal_t::details))))
        .load(c)?;
    // Ordered by instant, then by number; entries not numbered yet come after the numbered.
    let pending = pending.into_iter().map(|(id, l)| (id, (i64::MAX / 2 + id, l))).collect();
    let mut rows = journal::once(pending, numbered);
    rows.sort_by_key(|(order, l)| (l.0, *order));
    Ok(rows
        .into_iter()
        .map(|(_, (at, action, aidant_id, mandat_id, demarche, details))| HistoryLine { at: Timestamp::from_micros(at), action, aidant_id, mandat_id, demarche, details })
        .collect())
}
