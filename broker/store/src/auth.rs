//! Aidant sign-in: finding the aidant by e-mail and checking a TOTP code against their
//! devices (phone apps and physical cards). The decision (window, drift, replay) comes
//! from `broker_core::totp::check`; this module loads the device state and records the
//! accepted counter so that a code is never accepted twice.

use crate::admin::{app_context, card_context, Aidant};
use crate::journal;
use crate::schema::{aidants, totp_cards, totp_devices};
use crate::seal::Sealer;
use crate::{AnyConnection, Db, StoreError};
use broker_core::journal::{Action, Entry};
use broker_core::totp::{check, Accepted, DeviceKind, DeviceState, Seed};
use broker_core::{validate, Timestamp};
use diesel::prelude::*;
use serde::Serialize;

/// The active aidant with this e-mail (compared after normalisation). An invalid
/// e-mail gives `Ok(None)` like an unknown or deactivated aidant, so that callers
/// cannot tell these cases apart.
pub fn find_active_aidant(c: &mut AnyConnection, email: &str) -> Result<Option<Aidant>, StoreError> {
    let Ok(email) = validate::email(email) else {
        return Ok(None);
    };
    Ok(aidants::table
        .filter(aidants::email.eq(&email))
        .filter(aidants::active.eq(true))
        .select(Aidant::as_select())
        .first(c)
        .optional()?)
}

/// The device a TOTP code was accepted for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TotpMatch {
    pub device_id: i64,
    pub kind: DeviceKind,
}

/// A confirmed device as loaded for verification: its sealed seed is the app's own or
/// its card's.
struct Candidate {
    id: i64,
    kind: DeviceKind,
    sealed: String,
    context: String,
    state: DeviceState,
}

type CandidateRow = (i64, String, Option<String>, Option<String>, Option<String>, i32, i32, i32, Option<i64>);

fn candidates(c: &mut AnyConnection, aidant_id: i64) -> Result<Vec<Candidate>, StoreError> {
    let rows: Vec<CandidateRow> = totp_devices::table
        .inner_join(aidants::table)
        .left_join(totp_cards::table.on(totp_cards::id.nullable().eq(totp_devices::card_id)))
        .filter(totp_devices::aidant_id.eq(aidant_id))
        .filter(totp_devices::confirmed_at.is_not_null())
        .filter(aidants::active.eq(true))
        .order(totp_devices::id)
        .select((
            totp_devices::id,
            totp_devices::kind,
            totp_devices::seed_sealed,
            totp_cards::serial.nullable(),
            totp_cards::seed_sealed.nullable(),
            totp_devices::step,
            totp_devices::digits,
            totp_devices::drift_steps,
            totp_devices::last_used_step,
        ))
        .load(c)?;
    Ok(rows
        .into_iter()
        .filter_map(|(id, kind, app_seed, serial, card_seed, step, digits, drift, last)| {
            let kind = DeviceKind::from_key(&kind)?;
            let (sealed, context) = match kind {
                DeviceKind::App => (app_seed?, app_context(aidant_id)),
                DeviceKind::Card => (card_seed?, card_context(&serial?)),
            };
            let state = DeviceState {
                step: u64::try_from(step).ok()?,
                digits: u8::try_from(digits).ok()?,
                drift_steps: drift,
                last_used_counter: last,
            };
            Some(Candidate { id, kind, sealed, context, state })
        })
        .collect())
}

/// Checks `code` against the confirmed TOTP devices of an active aidant at `now`.
///
/// On a match, the accepted counter and the learned drift are stored with a
/// conditional update, so that of two requests with the same code only one succeeds:
/// the other gets `Ok(None)`, as for a wrong code. A device whose seed cannot be
/// unsealed is skipped; if no other device matched, that error is returned so that a
/// wrong sealing key does not pass for wrong codes. Nothing is journaled here: the
/// caller journals the sign-in.
pub fn verify_totp(db: &Db, sealer: &Sealer, aidant_id: i64, code: &str, now: Timestamp) -> Result<Option<TotpMatch>, StoreError> {
    let devices = db.read(|c| candidates(c, aidant_id))?;
    let mut unreadable = None;
    let mut found: Option<(&Candidate, Accepted)> = None;
    for d in &devices {
        let seed = match sealer.open(&d.sealed, &d.context) {
            Ok(bytes) => Seed::from_bytes(bytes),
            Err(e) => {
                tracing::error!(device = d.id, error = %e, "TOTP seed cannot be unsealed");
                unreadable = Some(e);
                continue;
            }
        };
        if let Some(accepted) = check(&seed, &d.state, code, now) {
            found = Some((d, accepted));
            break;
        }
    }
    let Some((device, accepted)) = found else {
        return match unreadable {
            Some(e) => Err(e),
            None => Ok(None),
        };
    };
    let updated = db.write(|c| {
        Ok(diesel::update(
            totp_devices::table.filter(totp_devices::id.eq(device.id)).filter(
                totp_devices::last_used_step
                    .is_null()
                    .or(totp_devices::last_used_step.lt(accepted.counter)),
            ),
        )
        .set((
            totp_devices::last_used_step.eq(Some(accepted.counter)),
            totp_devices::drift_steps.eq(accepted.drift_steps),
        ))
        .execute(c)?)
    })?;
    Ok((updated == 1).then_some(TotpMatch { device_id: device.id, kind: device.kind }))
}

/// A TOTP device as the aidant's security page shows it (no secret).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TotpDeviceView {
    pub id: i64,
    /// `totp_app` or `totp_card`.
    pub kind: String,
    pub card_serial: Option<String>,
    /// Seconds per code.
    pub step: i32,
    pub confirmed: bool,
    /// Microseconds since the Unix epoch.
    pub created_at: i64,
}

type DeviceViewRow = (i64, String, Option<String>, i32, Option<i64>, i64);

/// Every TOTP device of an aidant, oldest first.
pub fn totp_devices(db: &Db, aidant_id: i64) -> Result<Vec<TotpDeviceView>, StoreError> {
    db.read(|c| {
        let rows: Vec<DeviceViewRow> = totp_devices::table
            .left_join(totp_cards::table.on(totp_cards::id.nullable().eq(totp_devices::card_id)))
            .filter(totp_devices::aidant_id.eq(aidant_id))
            .order(totp_devices::id)
            .select((
                totp_devices::id,
                totp_devices::kind,
                totp_cards::serial.nullable(),
                totp_devices::step,
                totp_devices::confirmed_at,
                totp_devices::created_at,
            ))
            .load(c)?;
        Ok(rows
            .into_iter()
            .map(|(id, kind, card_serial, step, confirmed_at, created_at)| TotpDeviceView {
                id,
                kind,
                card_serial,
                step,
                confirmed: confirmed_at.is_some(),
                created_at,
            })
            .collect())
    })
}

/// Links an imported card (by serial) to an active aidant as a confirmed `totp_card`
/// device, with its journal entry, in one transaction. Returns the device id.
pub fn attach_card(db: &Db, aidant_id: i64, serial: &str, now: Timestamp) -> Result<i64, StoreError> {
    let serial = serial.trim();
    db.write(|c| {
        let aidant: Aidant = aidants::table
            .find(aidant_id)
            .select(Aidant::as_select())
            .first(c)
            .optional()?
            .ok_or_else(|| StoreError::NotFound(format!("aidant inconnu : {aidant_id}")))?;
        if !aidant.active {
            return Err(StoreError::Conflict(format!("l'aidant {} est désactivé", aidant.email)));
        }
        let (card_id, step, digits): (i64, i32, i32) = totp_cards::table
            .filter(totp_cards::serial.eq(serial))
            .select((totp_cards::id, totp_cards::step, totp_cards::digits))
            .first(c)
            .optional()?
            .ok_or_else(|| StoreError::NotFound(format!("carte inconnue : {serial}")))?;
        let linked: i64 = totp_devices::table.filter(totp_devices::card_id.eq(card_id)).count().get_result(c)?;
        if linked > 0 {
            return Err(StoreError::Conflict(format!("la carte {serial} est déjà associée à un aidant")));
        }
        let device: i64 = diesel::insert_into(totp_devices::table)
            .values((
                totp_devices::aidant_id.eq(aidant.id),
                totp_devices::kind.eq(DeviceKind::Card.key()),
                totp_devices::card_id.eq(Some(card_id)),
                totp_devices::step.eq(step),
                totp_devices::digits.eq(digits),
                totp_devices::confirmed_at.eq(Some(now.micros())),
                totp_devices::created_at.eq(now.micros()),
            ))
            .returning(totp_devices::id)
            .get_result(c)?;
        let e = Entry::new(Action::SecondFactorAdded)
            .aidant(aidant.id)
            .detail("kind", DeviceKind::Card.key())
            .detail("device", device)
            .detail("serial", serial)
            .detail("via", "web")
            .in_organisation(aidant.current_organisation_id);
        journal::append(c, &[e])?;
        Ok(device)
    })
}

/// The aidant with this id, if active.
pub fn find_active_by_id(c: &mut AnyConnection, aidant_id: i64) -> Result<Option<Aidant>, StoreError> {
    Ok(aidants::table
        .find(aidant_id)
        .filter(aidants::active.eq(true))
        .select(Aidant::as_select())
        .first(c)
        .optional()?)
}

/// Journals a sign-in or a re-authentication (`entry`) and records it as the aidant's
/// last sign-in (which postpones the inactivity reminders), committed by the group
/// writer with other requests' writes.
pub fn record_signin(db: &Db, aidant_id: i64, entry: Entry, now: Timestamp) -> Result<(), StoreError> {
    db.write_grouped(move |c| {
        diesel::update(aidants::table.find(aidant_id)).set(aidants::last_signin_at.eq(Some(now.micros()))).execute(c)?;
        journal::append(c, &[entry])
    })
}
