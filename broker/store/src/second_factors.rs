//! Second factors of an organisation's aidants, managed by the référent: TOTP cards and apps.
//!
//! A card from the imported stock is associated to an aidant by its serial number, then
//! validated with a code read on it: the validation searches a wide window and learns
//! the card's drift, so that sign-in afterwards uses the usual ±1 window around it. An
//! app is started (fresh seed, shown as a QR code) and confirmed with a code from the
//! phone. Until validated or confirmed, a device cannot be used to sign in. Every change
//! is written with its journal entry in one transaction.

use crate::admin::{app_context, card_context};
use crate::auth::{self, TotpDeviceView};
use crate::journal;
use crate::referent::role_in;
use crate::schema::{totp_cards, totp_devices};
use crate::seal::Sealer;
use crate::{AnyConnection, Db, StoreError};
use broker_core::journal::{Action, Entry};
use broker_core::totp::{check, Accepted, DeviceKind, DeviceState, Seed, APP_STEP, DIGITS, MAX_DRIFT_STEPS};
use broker_core::{validate, Timestamp};
use diesel::prelude::*;
use diesel::result::{DatabaseErrorKind, Error as DieselError};

/// Why a card is taken back from an aidant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reason {
    Lost,
    Broken,
    Left,
    Other(String),
}

impl Reason {
    /// The reason chosen in the form (`perdue`, `cassee`, `depart`, `autre` with a text).
    pub fn parse(key: &str, text: &str) -> Result<Reason, StoreError> {
        match key {
            "perdue" => Ok(Reason::Lost),
            "cassee" => Ok(Reason::Broken),
            "depart" => Ok(Reason::Left),
            "autre" => {
                if text.trim().is_empty() {
                    return Err(StoreError::Invalid("Précisez la raison dans le champ « Autre raison ».".into()));
                }
                Ok(Reason::Other(validate::label("raison", text, 200)?))
            }
            _ => Err(StoreError::Invalid("Choisissez la raison pour laquelle vous dissociez la carte.".into())),
        }
    }

    pub fn key(&self) -> &'static str {
        match self {
            Reason::Lost => "perdue",
            Reason::Broken => "cassee",
            Reason::Left => "depart",
            Reason::Other(_) => "autre",
        }
    }
}

fn check_member(c: &mut AnyConnection, organisation_id: i64, aidant_id: i64) -> Result<(), StoreError> {
    match role_in(c, aidant_id, organisation_id)? {
        Some(_) => Ok(()),
        None => Err(StoreError::NotFound("Cet aidant ne fait pas partie de votre structure.".into())),
    }
}

/// Writes with `f` in one transaction, once the aidant is checked to be a member of the organisation.
fn write_for_member<T>(db: &Db, organisation_id: i64, aidant_id: i64, f: impl FnOnce(&mut AnyConnection) -> Result<T, StoreError>) -> Result<T, StoreError> {
    db.write(|c| {
        check_member(c, organisation_id, aidant_id)?;
        f(c)
    })
}

/// [`write_for_member`] for a change that gives the aidant's account a way in: `by` must
/// be référent of every organisation of the aidant ([`crate::referent::ensure_referent_of_all`]).
fn write_way_in<T>(db: &Db, organisation_id: i64, aidant_id: i64, by: i64, f: impl FnOnce(&mut AnyConnection) -> Result<T, StoreError>) -> Result<T, StoreError> {
    write_for_member(db, organisation_id, aidant_id, |c| {
        crate::referent::ensure_referent_of_all(c, by, aidant_id)?;
        f(c)
    })
}

/// The journal entry of a change by the référent `by`, on the web, to a device of the aidant.
fn device_entry(action: Action, kind: DeviceKind, organisation_id: i64, aidant_id: i64, by: i64, device: i64) -> Entry {
    Entry::new(action)
        .aidant(aidant_id)
        .organisation(organisation_id)
        .detail("by", by)
        .detail("kind", kind.key())
        .detail("device", device)
        .detail("via", "web")
}

/// Every TOTP card and app of a member of the organisation, oldest first (no secret).
pub fn devices(db: &Db, organisation_id: i64, aidant_id: i64) -> Result<Vec<TotpDeviceView>, StoreError> {
    db.read(|c| check_member(c, organisation_id, aidant_id))?;
    auth::totp_devices(db, aidant_id)
}

/// Associates the stock card `serial` to a member of the organisation, not yet
/// validated. A card belongs to one aidant only. Returns the device id.
pub fn associate_card(db: &Db, organisation_id: i64, aidant_id: i64, serial: &str, by: i64, now: Timestamp) -> Result<i64, StoreError> {
    let serial = serial.trim().to_owned();
    if serial.is_empty() {
        return Err(StoreError::Invalid("Tapez le numéro de série inscrit au dos de la carte.".into()));
    }
    if !broker_core::validate::is_identifier(&serial) {
        return Err(StoreError::Invalid(
            "Ce numéro de série n'est pas valable : tapez les lettres, chiffres et tirets inscrits au dos de la carte.".into(),
        ));
    }
    let taken = || StoreError::Conflict(format!("La carte {serial} est déjà associée à un aidant. Vérifiez le numéro de série ; si la carte doit changer de main, dissociez-la d'abord."));
    let out = write_way_in(db, organisation_id, aidant_id, by, |c| {
        let (card_id, step, digits): (i64, i32, i32) = totp_cards::table
            .filter(totp_cards::serial.eq(&serial))
            .select((totp_cards::id, totp_cards::step, totp_cards::digits))
            .first(c)
            .optional()?
            .ok_or_else(|| {
                StoreError::NotFound(format!(
                    "Aucune carte ne porte le numéro de série « {serial} ». Vérifiez le numéro inscrit au dos de la carte, en respectant les tirets."
                ))
            })?;
        let owner: Option<i64> = totp_devices::table.filter(totp_devices::card_id.eq(card_id)).select(totp_devices::aidant_id).first(c).optional()?;
        match owner {
            Some(o) if o == aidant_id => return Err(StoreError::Conflict(format!("La carte {serial} est déjà associée à cet aidant."))),
            Some(_) => return Err(taken()),
            None => {}
        }
        let device: i64 = diesel::insert_into(totp_devices::table)
            .values((
                totp_devices::aidant_id.eq(aidant_id),
                totp_devices::kind.eq(DeviceKind::Card.key()),
                totp_devices::card_id.eq(Some(card_id)),
                totp_devices::step.eq(step),
                totp_devices::digits.eq(digits),
                totp_devices::created_at.eq(now.micros()),
            ))
            .returning(totp_devices::id)
            .get_result(c)?;
        let e = device_entry(Action::SecondFactorAdded, DeviceKind::Card, organisation_id, aidant_id, by, device).detail("serial", serial.as_str());
        journal::append(c, &[e])?;
        Ok(device)
    });
    match out {
        Err(StoreError::Database(DieselError::DatabaseError(DatabaseErrorKind::UniqueViolation, _))) => Err(taken()),
        other => other,
    }
}

/// An unconfirmed device of the aidant, of `kind`, with its seed sealed where it is.
struct Pending {
    sealed: String,
    context: String,
    step: u64,
    digits: u8,
    serial: Option<String>,
}

type PendingRow = (String, Option<i64>, Option<String>, Option<String>, Option<String>, i32, i32);

fn pending(c: &mut AnyConnection, aidant_id: i64, device_id: i64, kind: DeviceKind) -> Result<Pending, StoreError> {
    let missing = || match kind {
        DeviceKind::Card => StoreError::NotFound("Cette carte n'est pas associée à cet aidant. Rechargez la page.".into()),
        DeviceKind::App => StoreError::NotFound("Cette application n'est pas en attente pour cet aidant. Recommencez l'ajout de l'application.".into()),
    };
    let row: Option<PendingRow> = totp_devices::table
        .left_join(totp_cards::table.on(totp_cards::id.nullable().eq(totp_devices::card_id)))
        .filter(totp_devices::id.eq(device_id))
        .filter(totp_devices::aidant_id.eq(aidant_id))
        .select((
            totp_devices::kind,
            totp_devices::confirmed_at,
            totp_devices::seed_sealed,
            totp_cards::serial.nullable(),
            totp_cards::seed_sealed.nullable(),
            totp_devices::step,
            totp_devices::digits,
        ))
        .first(c)
        .optional()?;
    let Some((k, confirmed, app_seed, serial, card_seed, step, digits)) = row else { return Err(missing()) };
    if DeviceKind::from_key(&k) != Some(kind) {
        return Err(missing());
    }
    if confirmed.is_some() {
        return Err(StoreError::Conflict(match kind {
            DeviceKind::Card => "Cette carte est déjà validée : l'aidant peut s'en servir pour se connecter.".into(),
            DeviceKind::App => "Cette application est déjà activée : l'aidant peut s'en servir pour se connecter.".into(),
        }));
    }
    let (sealed, context) = match kind {
        DeviceKind::Card => (card_seed.ok_or_else(missing)?, card_context(serial.as_deref().unwrap_or(""))),
        DeviceKind::App => (app_seed.ok_or_else(missing)?, app_context(aidant_id)),
    };
    Ok(Pending {
        sealed,
        context,
        step: u64::try_from(step).map_err(|_| missing())?,
        digits: u8::try_from(digits).map_err(|_| missing())?,
        serial,
    })
}

/// Searches ±[`MAX_DRIFT_STEPS`] steps for `code`, nearest first.
fn check_wide(seed: &Seed, step: u64, digits: u8, code: &str, now: Timestamp) -> Option<Accepted> {
    let centres = std::iter::once(0).chain((1..MAX_DRIFT_STEPS).flat_map(|d| [-d, d]));
    centres
        .map(|d| DeviceState { step, digits, drift_steps: d, last_used_counter: None })
        .find_map(|state| check(seed, &state, code, now))
}

/// Validates an associated card with a code read on it, learning its drift (up to
/// ±[`MAX_DRIFT_STEPS`] steps). Returns the learned drift, in steps.
#[allow(clippy::too_many_arguments)]
pub fn validate_card(
    db: &Db,
    sealer: &Sealer,
    organisation_id: i64,
    aidant_id: i64,
    device_id: i64,
    code: &str,
    by: i64,
    now: Timestamp,
) -> Result<i32, StoreError> {
    write_way_in(db, organisation_id, aidant_id, by, |c| {
        let (p, accepted) = confirm_pending(c, sealer, aidant_id, device_id, DeviceKind::Card, code, now)?;
        let e = device_entry(Action::SecondFactorValidated, DeviceKind::Card, organisation_id, aidant_id, by, device_id)
            .detail("serial", p.serial.unwrap_or_default())
            .detail("drift", accepted.drift_steps);
        journal::append(c, &[e])?;
        Ok(accepted.drift_steps)
    })
}

/// Confirms the aidant's pending device of `kind` with a code read on it: a card's code is
/// searched ±[`MAX_DRIFT_STEPS`] steps (learning its drift), an app's in the usual ±1 window.
fn confirm_pending(c: &mut AnyConnection, sealer: &Sealer, aidant_id: i64, device_id: i64, kind: DeviceKind, code: &str, now: Timestamp) -> Result<(Pending, Accepted), StoreError> {
    let p = pending(c, aidant_id, device_id, kind)?;
    let seed = Seed::from_bytes(sealer.open(&p.sealed, &p.context)?);
    let accepted = match kind {
        DeviceKind::Card => check_wide(&seed, p.step, p.digits, code, now),
        DeviceKind::App => check(&seed, &DeviceState { step: p.step, digits: p.digits, drift_steps: 0, last_used_counter: None }, code, now),
    };
    let accepted = accepted.ok_or_else(|| {
        StoreError::Invalid(match kind {
            DeviceKind::Card => format!(
                "Le code ne correspond pas à la carte {}. Vérifiez le numéro de série, puis tapez les {} chiffres affichés en ce moment sur la carte.",
                p.serial.as_deref().unwrap_or(""),
                p.digits
            ),
            DeviceKind::App => format!(
                "Le code ne correspond pas. Vérifiez que l'heure du téléphone est à l'heure, puis tapez les {} chiffres affichés en ce moment dans l'application.",
                p.digits
            ),
        })
    })?;
    confirm(c, device_id, accepted, now)?;
    Ok((p, accepted))
}

fn confirm(c: &mut AnyConnection, device_id: i64, accepted: Accepted, now: Timestamp) -> Result<(), StoreError> {
    let n = diesel::update(totp_devices::table.filter(totp_devices::id.eq(device_id)).filter(totp_devices::confirmed_at.is_null()))
        .set((
            totp_devices::confirmed_at.eq(Some(now.micros())),
            totp_devices::last_used_step.eq(Some(accepted.counter)),
            totp_devices::drift_steps.eq(accepted.drift_steps),
        ))
        .execute(c)?;
    if n == 1 {
        Ok(())
    } else {
        Err(StoreError::Conflict("Ce moyen de connexion vient d'être modifié. Rechargez la page.".into()))
    }
}

/// Takes a card back from an aidant: the device is deleted, the journal keeps the
/// record with the reason, and the card may be associated again later.
pub fn dissociate_card(db: &Db, organisation_id: i64, aidant_id: i64, device_id: i64, reason: &Reason, by: i64, _now: Timestamp) -> Result<(), StoreError> {
    write_for_member(db, organisation_id, aidant_id, |c| {
        let row: Option<(String, Option<String>)> = totp_devices::table
            .left_join(totp_cards::table.on(totp_cards::id.nullable().eq(totp_devices::card_id)))
            .filter(totp_devices::id.eq(device_id))
            .filter(totp_devices::aidant_id.eq(aidant_id))
            .select((totp_devices::kind, totp_cards::serial.nullable()))
            .first(c)
            .optional()?;
        let serial = match row {
            Some((k, serial)) if k == DeviceKind::Card.key() => serial.unwrap_or_default(),
            _ => return Err(StoreError::NotFound("Cette carte n'est pas associée à cet aidant. Rechargez la page.".into())),
        };
        diesel::delete(totp_devices::table.find(device_id)).execute(c)?;
        let mut e = device_entry(Action::SecondFactorRemoved, DeviceKind::Card, organisation_id, aidant_id, by, device_id)
            .detail("serial", serial)
            .detail("reason", reason.key());
        if let Reason::Other(text) = reason {
            e = e.detail("reason_text", text.as_str());
        }
        journal::append(c, &[e])
    })
}

/// Starts a TOTP app for a member of the organisation: a fresh seed, sealed, on a
/// device not yet confirmed. A previous unconfirmed app of the aidant is replaced.
/// Returns the device id and the seed to show.
pub fn start_app(db: &Db, sealer: &Sealer, organisation_id: i64, aidant_id: i64, by: i64, now: Timestamp) -> Result<(i64, Seed), StoreError> {
    let seed = Seed::generate();
    write_way_in(db, organisation_id, aidant_id, by, |c| {
        let replaced: Vec<i64> = totp_devices::table
            .filter(totp_devices::aidant_id.eq(aidant_id))
            .filter(totp_devices::kind.eq(DeviceKind::App.key()))
            .filter(totp_devices::confirmed_at.is_null())
            .select(totp_devices::id)
            .load(c)?;
        diesel::delete(totp_devices::table.filter(totp_devices::id.eq_any(&replaced))).execute(c)?;
        let device: i64 = diesel::insert_into(totp_devices::table)
            .values((
                totp_devices::aidant_id.eq(aidant_id),
                totp_devices::kind.eq(DeviceKind::App.key()),
                totp_devices::seed_sealed.eq(Some(sealer.seal(seed.bytes(), &app_context(aidant_id)))),
                totp_devices::step.eq(APP_STEP as i32),
                totp_devices::digits.eq(i32::from(DIGITS)),
                totp_devices::created_at.eq(now.micros()),
            ))
            .returning(totp_devices::id)
            .get_result(c)?;
        let mut e = device_entry(Action::SecondFactorAdded, DeviceKind::App, organisation_id, aidant_id, by, device);
        if !replaced.is_empty() {
            e = e.detail("replaces", replaced);
        }
        journal::append(c, &[e])?;
        Ok((device, seed.clone()))
    })
}

/// The aidant's app waiting for its first code, if any: its device id and seed.
pub fn pending_app(db: &Db, sealer: &Sealer, organisation_id: i64, aidant_id: i64) -> Result<Option<(i64, Seed)>, StoreError> {
    let row: Option<(i64, Option<String>)> = db.read(|c| {
        check_member(c, organisation_id, aidant_id)?;
        Ok(totp_devices::table
            .filter(totp_devices::aidant_id.eq(aidant_id))
            .filter(totp_devices::kind.eq(DeviceKind::App.key()))
            .filter(totp_devices::confirmed_at.is_null())
            .order(totp_devices::id.desc())
            .select((totp_devices::id, totp_devices::seed_sealed))
            .first(c)
            .optional()?)
    })?;
    match row {
        Some((id, Some(sealed))) => Ok(Some((id, Seed::from_bytes(sealer.open(&sealed, &app_context(aidant_id))?)))),
        _ => Ok(None),
    }
}

/// Confirms a started app with a code from the phone (the usual ±1 window).
#[allow(clippy::too_many_arguments)]
pub fn confirm_app(
    db: &Db,
    sealer: &Sealer,
    organisation_id: i64,
    aidant_id: i64,
    device_id: i64,
    code: &str,
    by: i64,
    now: Timestamp,
) -> Result<(), StoreError> {
    write_way_in(db, organisation_id, aidant_id, by, |c| {
        confirm_pending(c, sealer, aidant_id, device_id, DeviceKind::App, code, now)?;
        let e = device_entry(Action::SecondFactorValidated, DeviceKind::App, organisation_id, aidant_id, by, device_id);
        journal::append(c, &[e])
    })
}
