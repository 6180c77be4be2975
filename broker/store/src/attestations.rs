//! Attestations: the fingerprint of each printed attestation, recorded with its
//! `attestation_created` journal entry, and the content rebuilt from the database so
//! that printing again gives the same fingerprint.

use crate::admin::find_organisation;
use crate::journal;
use crate::mandat_facts::facts;
use crate::schema::{attestations, autorisations, journal as journal_t, mandats, usagers};
use crate::{AnyConnection, StoreError};
use broker_core::attestation::{AttestationContent, Kind, LEGAL_TEXT_VERSION};
use broker_core::capability::{AidantId, MandatId, OrganisationId, UsagerId};
use broker_core::journal::{Action, Actor, Event, Parties};
use broker_core::mandat::MandatFacts;
use broker_core::{Demarche, Timestamp};
use diesel::prelude::*;

/// Records an attestation of `kind` (`"mandat"` or `"revocation"`) for `content`, with its
/// `attestation_created` journal entry carrying the fingerprint. Works inside the
/// caller's write transaction. Recording the same content again writes nothing and
/// returns the same fingerprint.
#[allow(clippy::too_many_arguments)]
pub fn record(
    c: &mut AnyConnection,
    mandat_id: i64,
    kind: &str,
    content: &AttestationContent,
    aidant_id: i64,
    organisation_id: i64,
    usager_id: i64,
    now: Timestamp,
) -> Result<String, StoreError> {
    let parties = Parties { organisation: OrganisationId(organisation_id), usager: UsagerId(usager_id) };
    record_by(c, MandatId(mandat_id), kind, content, Actor::Aidant(AidantId(aidant_id)), parties, now)
}

/// [`record`], by an aidant or by the usager themselves.
pub fn record_by(
    c: &mut AnyConnection,
    mandat: MandatId,
    kind: &str,
    content: &AttestationContent,
    by: Actor,
    parties: Parties,
    now: Timestamp,
) -> Result<String, StoreError> {
    let mandat_id = mandat.get();
    let k = Kind::from_key(kind).ok_or_else(|| StoreError::Invalid(format!("type d'attestation inconnu : {kind}")))?;
    if k != content.kind || content.mandat_id != mandat_id {
        return Err(StoreError::Invalid("le contenu de l'attestation ne correspond pas au mandat".into()));
    }
    let fp = content.fingerprint();
    let existing: Option<i64> = attestations::table
        .filter(attestations::hash.eq(&fp))
        .select(attestations::mandat_id)
        .first(c)
        .optional()?;
    match existing {
        Some(m) if m == mandat_id => return Ok(fp),
        Some(_) => return Err(StoreError::Conflict("empreinte déjà enregistrée pour un autre mandat".into())),
        None => {}
    }
    diesel::insert_into(attestations::table)
        .values((
            attestations::mandat_id.eq(mandat_id),
            attestations::kind.eq(k.key()),
            attestations::hash.eq(&fp),
            attestations::legal_text_version.eq(&content.legal_text_version),
            attestations::created_at.eq(now.micros()),
        ))
        .execute(c)?;
    let e = Event::AttestationCreated {
        by,
        parties,
        mandat,
        fingerprint: fp.clone(),
        kind: k.key(),
        legal_text_version: content.legal_text_version.clone(),
    }
    .entry(now);
    journal::append(c, &[e])?;
    Ok(fp)
}

struct MandatRow {
    organisation_id: i64,
    usager_id: i64,
    created_at: i64,
    expires_at: i64,
    duration_days: i32,
}

fn base_content(c: &mut AnyConnection, mandat_id: i64, kind: Kind) -> Result<AttestationContent, StoreError> {
    let m = mandats::table
        .find(mandat_id)
        .select((mandats::organisation_id, mandats::usager_id, mandats::created_at, mandats::expires_at, mandats::duration_days))
        .first::<(i64, i64, i64, i64, i32)>(c)
        .optional()?
        .map(|(organisation_id, usager_id, created_at, expires_at, duration_days)| MandatRow {
            organisation_id,
            usager_id,
            created_at,
            expires_at,
            duration_days,
        })
        .ok_or_else(|| StoreError::NotFound(format!("mandat inconnu : {mandat_id}")))?;
    let org = find_organisation(c, m.organisation_id)?;
    let (given, family, birthdate, birthplace, birthcountry): (String, String, String, String, String) = usagers::table
        .find(m.usager_id)
        .select((usagers::given_name, usagers::family_name, usagers::birthdate, usagers::birthplace, usagers::birthcountry))
        .first(c)?;
    let version: Option<String> = attestations::table
        .filter(attestations::mandat_id.eq(mandat_id))
        .filter(attestations::kind.eq(kind.key()))
        .order(attestations::id)
        .select(attestations::legal_text_version)
        .first(c)
        .optional()?;
    Ok(AttestationContent {
        kind,
        legal_text_version: version.unwrap_or_else(|| LEGAL_TEXT_VERSION.to_owned()),
        mandat_id,
        organisation_name: org.name,
        organisation_siret: org.siret,
        organisation_address: org.address,
        usager_given_name: given,
        usager_family_name: family,
        usager_birthdate: birthdate,
        usager_birthplace: birthplace,
        usager_birthcountry: birthcountry,
        demarches: Vec::new(),
        duration_days: i64::from(m.duration_days),
        created_at: Timestamp::from_micros(m.created_at),
        expires_at: Timestamp::from_micros(m.expires_at),
        revoked_at: None,
    })
}

/// The content of the mandat's attestation, rebuilt from the database: the mandat, its
/// organisation, its usager and every démarche it was created with (revoked ones
/// included). The legal text version is the one recorded with the mandat's first
/// attestation, or the current one when none is recorded yet.
pub fn content_for_mandat(c: &mut AnyConnection, mandat_id: i64) -> Result<AttestationContent, StoreError> {
    let mut content = base_content(c, mandat_id, Kind::Mandat)?;
    let keys: Vec<String> = autorisations::table
        .filter(autorisations::mandat_id.eq(mandat_id))
        .order(autorisations::id)
        .select(autorisations::demarche)
        .load(c)?;
    let mut demarches: Vec<Demarche> = keys.iter().filter_map(|k| Demarche::from_key(k)).collect();
    demarches.sort();
    demarches.dedup();
    content.demarches = demarches;
    Ok(content)
}

/// The content of a revocation attestation for `demarches` of the mandat, revoked at
/// `revoked_at`.
pub fn content_for_revocation(
    c: &mut AnyConnection,
    mandat_id: i64,
    demarches: &[Demarche],
    revoked_at: Timestamp,
) -> Result<AttestationContent, StoreError> {
    let mut content = base_content(c, mandat_id, Kind::Revocation)?;
    let mut demarches = demarches.to_vec();
    demarches.sort();
    demarches.dedup();
    content.demarches = demarches;
    content.revoked_at = Some(revoked_at);
    Ok(content)
}

/// An attestation found by its fingerprint.
#[derive(Debug, Clone)]
pub struct FoundAttestation {
    pub id: i64,
    pub mandat_id: i64,
    pub kind: Kind,
    pub legal_text_version: String,
    pub created_at: Timestamp,
    /// True when the journal holds the `attestation_created` entry with this fingerprint.
    pub journaled: bool,
    /// The mandat as it is now, to compute its status.
    pub mandat: MandatFacts,
}

/// The attestation recorded with fingerprint `fp`, if any.
pub fn find_by_fingerprint(c: &mut AnyConnection, fp: &str) -> Result<Option<FoundAttestation>, StoreError> {
    let Some((id, mandat_id, kind, version, created_at)) = attestations::table
        .filter(attestations::hash.eq(fp))
        .select((attestations::id, attestations::mandat_id, attestations::kind, attestations::legal_text_version, attestations::created_at))
        .first::<(i64, i64, String, String, i64)>(c)
        .optional()?
    else {
        return Ok(None);
    };
    let action = Action::AttestationCreated.key();
    let in_journal: i64 = journal_t::table
        .filter(journal_t::action.eq(action))
        .filter(journal_t::attestation_hash.eq(fp))
        .filter(journal_t::mandat_id.eq(mandat_id))
        .count()
        .get_result(c)?;
    let (org, usager): (i64, i64) = mandats::table.find(mandat_id).select((mandats::organisation_id, mandats::usager_id)).first(c)?;
    let mandat = facts(c, org, usager)?
        .into_iter()
        .find(|m| m.id == mandat_id)
        .ok_or_else(|| StoreError::NotFound(format!("mandat inconnu : {mandat_id}")))?;
    Ok(Some(FoundAttestation {
        id,
        mandat_id,
        kind: Kind::from_key(&kind).unwrap_or(Kind::Mandat),
        legal_text_version: version,
        created_at: Timestamp::from_micros(created_at),
        journaled: in_journal > 0,
        mandat,
    }))
}

/// The fingerprint of the mandat's attestation, if one is recorded.
pub fn mandat_fingerprint(c: &mut AnyConnection, mandat_id: i64) -> Result<Option<String>, StoreError> {
    Ok(attestations::table
        .filter(attestations::mandat_id.eq(mandat_id))
        .filter(attestations::kind.eq(Kind::Mandat.key()))
        .order(attestations::id)
        .select(attestations::hash)
        .first(c)
        .optional()?)
}

/// The aidant who recorded the attestation with fingerprint `fp`, from its journal entry.
pub fn recorded_by(c: &mut AnyConnection, fp: &str) -> Result<Option<i64>, StoreError> {
    let action = Action::AttestationCreated.key();
    Ok(journal_t::table
        .filter(journal_t::action.eq(action))
        .filter(journal_t::attestation_hash.eq(fp))
        .select(journal_t::aidant_id)
        .first::<Option<i64>>(c)
        .optional()?
        .flatten())
}

/// First and last name of an aidant (active or not).
pub fn aidant_name(c: &mut AnyConnection, aidant_id: i64) -> Result<Option<(String, String)>, StoreError> {
    use crate::schema::aidants;
    Ok(aidants::table.find(aidant_id).select((aidants::first_name, aidants::last_name)).first(c).optional()?)
}

/// Whether an attestation with fingerprint `fp` is recorded.
pub fn is_recorded(c: &mut AnyConnection, fp: &str) -> Result<bool, StoreError> {
    let n: i64 = attestations::table.filter(attestations::hash.eq(fp)).count().get_result(c)?;
    Ok(n > 0)
}

/// The mandat's attestation as it prints now, recorded (with its journal entry, by
/// `aidant_id`) if this exact content is not recorded yet. Returns the content and its
/// fingerprint.
pub fn ensure_for_mandat(db: &crate::Db, mandat: MandatId, aidant: AidantId, now: Timestamp) -> Result<(AttestationContent, String), StoreError> {
    let (mandat_id, aidant_id) = (mandat.get(), aidant.get());
    let content = db.read(|c| content_for_mandat(c, mandat_id))?;
    let fp = content.fingerprint();
    if db.read(|c| is_recorded(c, &fp))? {
        return Ok((content, fp));
    }
    let written = db.write(|c| {
        let content = content_for_mandat(c, mandat_id)?;
        let (org, usager): (i64, i64) = mandats::table.find(mandat_id).select((mandats::organisation_id, mandats::usager_id)).first(c)?;
        let fp = record(c, mandat_id, Kind::Mandat.key(), &content, aidant_id, org, usager, now)?;
        Ok((content, fp))
    });
    match written {
        // Another request recorded the same attestation at the same moment.
        Err(StoreError::Database(diesel::result::Error::DatabaseError(diesel::result::DatabaseErrorKind::UniqueViolation, _)))
            if db.read(|c| is_recorded(c, &fp))? =>
        {
            Ok((content, fp))
        }
        other => other,
    }
}

/// The organisation a mandat belongs to, if the mandat exists.
pub fn mandat_organisation(c: &mut AnyConnection, mandat_id: i64) -> Result<Option<i64>, StoreError> {
    Ok(mandats::table.find(mandat_id).select(mandats::organisation_id).first(c).optional()?)
}

/// The sequence number of the `attestation_created` entry of fingerprint `fp`, once numbered.
pub fn journal_seq(c: &mut AnyConnection, fp: &str) -> Result<Option<i64>, StoreError> {
    Ok(journal_t::table
        .filter(journal_t::action.eq(Action::AttestationCreated.key()))
        .filter(journal_t::attestation_hash.eq(fp))
        .order(journal_t::seq)
        .select(journal_t::seq)
        .first(c)
        .optional()?)
}
