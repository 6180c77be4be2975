//! WebAuthn credentials (security keys, passkeys) of aidants. The ceremonies live in
//! `broker_web::passkeys`; this module only keeps what they produce: the credential id
//! (base64url without padding, as `webauthn-rs` gives it), the serialised passkey (a
//! JSON document holding the public key, the signature counter and the backup flags,
//! nothing secret), a name the aidant chose, and when it was added and last used.
//!
//! Adding and removing a credential are second-factor changes: each is written in one
//! transaction with its journal entry. An aidant may not remove their last way to sign
//! in (security key or confirmed TOTP device).

use crate::journal;
use crate::schema::{aidants, totp_devices, webauthn_credentials};
use crate::{AnyConnection, Db, StoreError};
use broker_core::journal::{Action, Entry};
use broker_core::{validate, Timestamp};
use diesel::prelude::*;
use diesel::result::{DatabaseErrorKind, Error as DieselError};
use serde::Serialize;

/// The kind recorded in the journal details of `second_factor_added` / `_removed`.
pub const KIND: &str = "security_key";

/// Longest name an aidant may give a key.
pub const NAME_MAX: usize = 60;

/// Longest credential id accepted: the WebAuthn limit is 1023 bytes, 1364 characters
/// in base64url.
const CREDENTIAL_ID_MAX: usize = 1364;

/// A credential as the aidant's pages list it (no key material).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Queryable, Selectable)]
#[diesel(table_name = webauthn_credentials)]
pub struct CredentialView {
    pub id: i64,
    pub credential_id: String,
    pub name: String,
    pub created_at: i64,
    pub last_used_at: Option<i64>,
}

fn check_credential_id(credential_id: &str) -> Result<(), StoreError> {
    let ok = !credential_id.is_empty()
        && credential_id.len() <= CREDENTIAL_ID_MAX
        && credential_id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(StoreError::Invalid("identifiant de clé de sécurité invalide".into()))
    }
}

fn duplicate() -> StoreError {
    StoreError::Conflict("cette clé de sécurité est déjà enregistrée".into())
}

/// The aidant's current organisation, or `NotFound` for an unknown aidant.
fn aidant_org(c: &mut AnyConnection, aidant_id: i64) -> Result<(bool, Option<i64>), StoreError> {
    aidants::table
        .find(aidant_id)
        .select((aidants::active, aidants::current_organisation_id))
        .first(c)
        .optional()?
        .ok_or_else(|| StoreError::NotFound(format!("aidant inconnu : {aidant_id}")))
}

/// Records a credential that has just passed registration, with its journal entry
/// (`second_factor_added`, kind `security_key`, device = the new row id). The name is
/// trimmed, 1 to 60 characters. A credential id already stored, for this aidant or
/// another, is a `Conflict` and nothing is written. Returns the row id.
pub fn add_credential(
    db: &Db,
    aidant_id: i64,
    credential_id: &str,
    passkey_json: &str,
    name: &str,
    now: Timestamp,
) -> Result<i64, StoreError> {
    add(db, aidant_id, credential_id, passkey_json, name, now, None)
}

/// [`add_credential`] by the référent of `organisation_id` for one of its aidants, in
/// person (the aidant touches the key). Not a member: `NotFound`.
#[allow(clippy::too_many_arguments)]
pub fn add_credential_for(
    db: &Db,
    organisation_id: i64,
    aidant_id: i64,
    credential_id: &str,
    passkey_json: &str,
    name: &str,
    now: Timestamp,
    by: i64,
) -> Result<i64, StoreError> {
    add(db, aidant_id, credential_id, passkey_json, name, now, Some((organisation_id, by)))
}

#[allow(clippy::too_many_arguments)]
fn add(
    db: &Db,
    aidant_id: i64,
    credential_id: &str,
    passkey_json: &str,
    name: &str,
    now: Timestamp,
    referent: Option<(i64, i64)>,
) -> Result<i64, StoreError> {
    let name = validate::label("nom de la clé", name, NAME_MAX)?;
    check_credential_id(credential_id)?;
    if passkey_json.trim().is_empty() {
        return Err(StoreError::Invalid("clé de sécurité illisible".into()));
    }
    db.write(|c| {
        let (active, mut org) = aidant_org(c, aidant_id)?;
        if let Some((organisation_id, by)) = referent {
            if crate::referent::role_in(c, aidant_id, organisation_id)?.is_none() {
                return Err(StoreError::NotFound(format!("aidant inconnu : {aidant_id}")));
            }
            crate::referent::ensure_referent_of_all(c, by, aidant_id)?;
            org = Some(organisation_id);
        }
        if !active {
            return Err(StoreError::Conflict("ce compte d'aidant est désactivé".into()));
        }
        let taken: i64 = webauthn_credentials::table
            .filter(webauthn_credentials::credential_id.eq(credential_id))
            .count()
            .get_result(c)?;
        if taken > 0 {
            return Err(duplicate());
        }
        let id: i64 = diesel::insert_into(webauthn_credentials::table)
            .values((
                webauthn_credentials::aidant_id.eq(aidant_id),
                webauthn_credentials::credential_id.eq(credential_id),
                webauthn_credentials::passkey.eq(passkey_json),
                webauthn_credentials::name.eq(&name),
                webauthn_credentials::created_at.eq(now.micros()),
            ))
            .returning(webauthn_credentials::id)
            .get_result(c)
            .map_err(|e| match e {
                // The same key registered at the same instant by a concurrent request.
                DieselError::DatabaseError(DatabaseErrorKind::UniqueViolation, _) => duplicate(),
                e => e.into(),
            })?;
        let mut e = Entry::new(Action::SecondFactorAdded).aidant(aidant_id).in_organisation(org).detail("kind", KIND).detail("device", id);
        if let Some((_, by)) = referent {
            e = e.detail("by", by);
        }
        journal::append(c, &[e])?;
        Ok(id)
    })
}

/// The aidant's credentials, oldest first.
pub fn list_credentials(db: &Db, aidant_id: i64) -> Result<Vec<CredentialView>, StoreError> {
    db.read(|c| {
        Ok(webauthn_credentials::table
            .filter(webauthn_credentials::aidant_id.eq(aidant_id))
            .order(webauthn_credentials::id)
            .select(CredentialView::as_select())
            .load(c)?)
    })
}

/// `(credential id, passkey JSON)` of each of the aidant's credentials, oldest first:
/// what a sign-in ceremony needs to verify an assertion.
pub fn passkeys_of(db: &Db, aidant_id: i64) -> Result<Vec<(String, String)>, StoreError> {
    db.read(|c| {
        Ok(webauthn_credentials::table
            .filter(webauthn_credentials::aidant_id.eq(aidant_id))
            .order(webauthn_credentials::id)
            .select((webauthn_credentials::credential_id, webauthn_credentials::passkey))
            .load(c)?)
    })
}

/// The aidant a credential id belongs to, if any. Whether that aidant is still active
/// is for the caller to check.
pub fn find_owner(db: &Db, credential_id: &str) -> Result<Option<i64>, StoreError> {
    db.read(|c| {
        Ok(webauthn_credentials::table
            .filter(webauthn_credentials::credential_id.eq(credential_id))
            .select(webauthn_credentials::aidant_id)
            .first(c)
            .optional()?)
    })
}

/// After a successful sign-in: sets `last_used_at`, and stores the updated passkey
/// (new signature counter, backup state) when the ceremony produced one. Not
/// journaled: the sign-in itself is (`aidant_login`, `reauthentication`).
pub fn mark_used(db: &Db, credential_id: &str, updated_passkey_json: Option<&str>, now: Timestamp) -> Result<(), StoreError> {
    db.write(|c| {
        let target = webauthn_credentials::table.filter(webauthn_credentials::credential_id.eq(credential_id));
        let n = match updated_passkey_json {
            Some(p) => diesel::update(target)
                .set((webauthn_credentials::last_used_at.eq(Some(now.micros())), webauthn_credentials::passkey.eq(p)))
                .execute(c)?,
            None => diesel::update(target).set(webauthn_credentials::last_used_at.eq(Some(now.micros()))).execute(c)?,
        };
        if n == 0 {
            return Err(StoreError::NotFound("clé de sécurité inconnue".into()));
        }
        Ok(())
    })
}

/// Removes one of the aidant's credentials (by row id), with its journal entry
/// (`second_factor_removed`). A credential of another aidant is `NotFound`. Refused
/// (`Conflict`) when the aidant would be left with no way to sign in: no other
/// credential and no confirmed TOTP device. Concurrent removals for one aidant are
/// serialised on the aidant's row, so two requests cannot each remove "the other" key.
pub fn remove_credential(db: &Db, aidant_id: i64, credential_row_id: i64, now: Timestamp) -> Result<(), StoreError> {
    remove(db, aidant_id, credential_row_id, now, None)
}

/// Removes a key of an aidant of `organisation_id`, by its référent (a lost or broken
/// key): allowed even when it is the aidant's last way to sign in, since a lost key must
/// stop working at once. Not a member, or not their key: `NotFound`.
pub fn remove_credential_for(db: &Db, organisation_id: i64, aidant_id: i64, credential_row_id: i64, now: Timestamp, by: i64) -> Result<(), StoreError> {
    remove(db, aidant_id, credential_row_id, now, Some((organisation_id, by)))
}

fn remove(db: &Db, aidant_id: i64, credential_row_id: i64, now: Timestamp, referent: Option<(i64, i64)>) -> Result<(), StoreError> {
    let _ = now; // the journal entry is timed by the journal itself
    db.write(|c| {
        if let Some((organisation_id, _)) = referent {
            if crate::referent::role_in(c, aidant_id, organisation_id)?.is_none() {
                return Err(StoreError::NotFound("clé de sécurité introuvable".into()));
            }
        }
        // Takes the aidant's row lock on PostgreSQL (SQLite holds the write lock already).
        let locked = diesel::update(aidants::table.find(aidant_id)).set(aidants::active.eq(aidants::active)).execute(c)?;
        let not_found = || StoreError::NotFound("clé de sécurité introuvable".into());
        if locked == 0 {
            return Err(not_found());
        }
        let (_, mut org) = aidant_org(c, aidant_id)?;
        if let Some((organisation_id, _)) = referent {
            org = Some(organisation_id);
        }
        let owned: i64 = webauthn_credentials::table
            .filter(webauthn_credentials::id.eq(credential_row_id))
            .filter(webauthn_credentials::aidant_id.eq(aidant_id))
            .count()
            .get_result(c)?;
        if owned == 0 {
            return Err(not_found());
        }
        let keys: i64 = webauthn_credentials::table
            .filter(webauthn_credentials::aidant_id.eq(aidant_id))
            .count()
            .get_result(c)?;
        let totp: i64 = totp_devices::table
            .filter(totp_devices::aidant_id.eq(aidant_id))
            .filter(totp_devices::confirmed_at.is_not_null())
            .count()
            .get_result(c)?;
        if referent.is_none() && keys - 1 + totp < 1 {
            return Err(StoreError::Conflict(
                "Vous ne pouvez pas retirer votre dernier moyen de connexion : ajoutez-en un autre d'abord.".into(),
            ));
        }
        diesel::delete(webauthn_credentials::table.find(credential_row_id)).execute(c)?;
        let e = Entry::new(Action::SecondFactorRemoved)
            .aidant(aidant_id)
            .in_organisation(org)
            .detail("kind", KIND)
            .detail("device", credential_row_id);
        let e = match referent {
            Some((_, by)) => e.detail("by", by),
            None => e,
        };
        journal::append(c, &[e])?;
        Ok(())
    })
}
