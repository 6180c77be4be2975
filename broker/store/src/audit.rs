//! Auditors: accounts that sign in like aidants (two factors), read and export the whole
//! journal, and belong to no organisation (so they make no mandat and act for nobody).

use crate::admin::Aidant;
use crate::journal;
use crate::schema::aidants;
use crate::{AnyConnection, Db, StoreError};
use broker_core::journal::{Action, Entry};
use broker_core::{validate, Timestamp};
use diesel::prelude::*;

/// Whether the aidant account `id` is an active auditor.
pub fn is_auditor(c: &mut AnyConnection, id: i64) -> Result<bool, StoreError> {
    Ok(aidants::table
        .find(id)
        .filter(aidants::active.eq(true))
        .select(aidants::auditor)
        .first::<bool>(c)
        .optional()?
        .unwrap_or(false))
}

/// Creates an auditor account (no organisation), journaled. A TOTP app or a security
/// key is then added as for any aidant (`broker admin totp enroll-app`).
pub fn create_auditor(db: &Db, email: &str, first_name: &str, last_name: &str) -> Result<Aidant, StoreError> {
    let email = validate::email(email)?;
    let first = validate::label("prénom", first_name, 150)?;
    let last = validate::label("nom", last_name, 150)?;
    let now = Timestamp::now().micros();
    db.write(|c| {
        let taken: i64 = aidants::table.filter(aidants::email.eq(&email)).count().get_result(c)?;
        if taken > 0 {
            return Err(StoreError::Conflict(format!("un compte existe déjà avec l'adresse {email}")));
        }
        let id: i64 = diesel::insert_into(aidants::table)
            .values((
                aidants::email.eq(&email),
                aidants::first_name.eq(&first),
                aidants::last_name.eq(&last),
                aidants::active.eq(true),
                aidants::auditor.eq(true),
                aidants::created_at.eq(now),
            ))
            .returning(aidants::id)
            .get_result(c)?;
        journal::append(c, &[Entry::new(Action::AidantCreated).aidant(id).detail("role", "auditeur").detail("via", "cli")])?;
        Ok(aidants::table.find(id).select(Aidant::as_select()).first(c)?)
    })
}
