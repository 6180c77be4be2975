//! The référent's space: an organisation's aidants (add, deactivate, reactivate), its
//! allowed démarches, and the aidant's choice of current organisation. Every change
//! is written with its journal entry in one transaction.

use crate::admin::{find_organisation, Aidant, Organisation};
use crate::journal;
use crate::schema::{aidants, journal as journal_t, memberships, organisations, totp_devices, webauthn_credentials};
use crate::{AnyConnection, Db, StoreError};
use broker_core::journal::{Action, Entry};
use broker_core::{validate, Demarche, Timestamp};
use crate::mail_queue::{self, NewMail};
use broker_core::notice::Notice;
use diesel::prelude::*;
use std::collections::BTreeMap;

/// A role within an organisation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Aidant,
    Referent,
}

impl Role {
    pub fn from_key(key: &str) -> Option<Role> {
        match key {
            "aidant" => Some(Role::Aidant),
            "referent" => Some(Role::Referent),
            _ => None,
        }
    }

    pub const fn key(self) -> &'static str {
        match self {
            Role::Aidant => "aidant",
            Role::Referent => "referent",
        }
    }
}

/// The role of an aidant in an organisation, None when not a member.
pub fn role_in(c: &mut AnyConnection, aidant_id: i64, organisation_id: i64) -> Result<Option<Role>, StoreError> {
    let role: Option<String> = memberships::table
        .filter(memberships::aidant_id.eq(aidant_id))
        .filter(memberships::organisation_id.eq(organisation_id))
        .select(memberships::role)
        .first(c)
        .optional()?;
    Ok(role.as_deref().and_then(Role::from_key))
}

/// Refused to a référent who would give an account a way in (a key, a card, an app, a
/// reactivation) while the account also belongs to an organisation where they are not
/// référent: the people of that organisation did not agree to it.
pub const NOT_ALL_YOURS: &str = "Cet aidant travaille aussi pour une autre structure dont vous n'êtes pas référent : \
seul un référent de chacune de ses structures peut lui ajouter une clé, une carte, une application ou réactiver son compte. \
L'aidant peut ajouter lui-même une clé de sécurité dans « Mon espace ».";

/// Fails with [`NOT_ALL_YOURS`] unless `by` is référent of every organisation
/// `aidant_id` belongs to. Removing a way in (deactivation, a key or a card taken away)
/// needs only the référent role where the aidant works with `by`.
pub fn ensure_referent_of_all(c: &mut AnyConnection, by: i64, aidant_id: i64) -> Result<(), StoreError> {
    let theirs: Vec<i64> = memberships::table.filter(memberships::aidant_id.eq(aidant_id)).select(memberships::organisation_id).load(c)?;
    let managed: Vec<i64> = memberships::table
        .filter(memberships::aidant_id.eq(by))
        .filter(memberships::role.eq(Role::Referent.key()))
        .select(memberships::organisation_id)
        .load(c)?;
    if theirs.iter().all(|o| managed.contains(o)) {
        Ok(())
    } else {
        Err(StoreError::Conflict(NOT_ALL_YOURS.into()))
    }
}

/// The current organisation of an active aidant, when they are its référent.
pub fn referent_of_current(c: &mut AnyConnection, aidant_id: i64) -> Result<Option<i64>, StoreError> {
    let current: Option<Option<i64>> =
        aidants::table.find(aidant_id).filter(aidants::active.eq(true)).select(aidants::current_organisation_id).first(c).optional()?;
    let Some(org) = current.flatten() else { return Ok(None) };
    Ok((role_in(c, aidant_id, org)? == Some(Role::Referent)).then_some(org))
}

/// An organisation an aidant belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Membership {
    pub organisation_id: i64,
    pub name: String,
    pub role: Role,
}

/// The organisations of an aidant, by name.
pub fn memberships_of(c: &mut AnyConnection, aidant_id: i64) -> Result<Vec<Membership>, StoreError> {
    let rows: Vec<(i64, String, String)> = memberships::table
        .inner_join(organisations::table)
        .filter(memberships::aidant_id.eq(aidant_id))
        .order((organisations::name, organisations::id))
        .select((organisations::id, organisations::name, memberships::role))
        .load(c)?;
    Ok(rows
        .into_iter()
        .map(|(organisation_id, name, role)| Membership { organisation_id, name, role: Role::from_key(&role).unwrap_or(Role::Aidant) })
        .collect())
}

/// Makes `organisation_id` the aidant's current organisation (a member only), journaled.
pub fn switch_organisation(db: &Db, aidant_id: i64, organisation_id: i64) -> Result<(), StoreError> {
    db.write(|c| {
        if role_in(c, aidant_id, organisation_id)?.is_none() {
            return Err(StoreError::NotFound(format!("structure inconnue : {organisation_id}")));
        }
        let before: Option<i64> = aidants::table.find(aidant_id).select(aidants::current_organisation_id).first(c)?;
        if before == Some(organisation_id) {
            return Ok(());
        }
        diesel::update(aidants::table.find(aidant_id)).set(aidants::current_organisation_id.eq(Some(organisation_id))).execute(c)?;
        let mut e = Entry::new(Action::OrganisationSwitched).aidant(aidant_id).organisation(organisation_id);
        if let Some(b) = before {
            e = e.detail("from", b);
        }
        journal::append(c, &[e])
    })
}

/// An aidant as their organisation's référent sees them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub id: i64,
    pub email: String,
    pub first_name: String,
    pub last_name: String,
    pub profession: String,
    pub active: bool,
    pub role: Role,
    /// Security keys.
    pub keys: i64,
    /// Confirmed TOTP apps and cards.
    pub totp_apps: i64,
    pub totp_cards: i64,
    /// TOTP devices waiting for their first code.
    pub unconfirmed: i64,
    pub last_login: Option<Timestamp>,
}

impl Member {
    pub fn has_second_factor(&self) -> bool {
        self.keys + self.totp_apps + self.totp_cards > 0
    }
}

/// The organisation's aidants, active first, then by name.
pub fn members(c: &mut AnyConnection, organisation_id: i64) -> Result<Vec<Member>, StoreError> {
    let rows: Vec<(Aidant, String)> = aidants::table
        .inner_join(memberships::table)
        .filter(memberships::organisation_id.eq(organisation_id))
        .select((Aidant::as_select(), memberships::role))
        .load(c)?;
    let ids: Vec<i64> = rows.iter().map(|(a, _)| a.id).collect();
    let keys: BTreeMap<i64, i64> = webauthn_credentials::table
        .filter(webauthn_credentials::aidant_id.eq_any(&ids))
        .group_by(webauthn_credentials::aidant_id)
        .select((webauthn_credentials::aidant_id, diesel::dsl::count_star()))
        .load::<(i64, i64)>(c)?
        .into_iter()
        .collect();
    let devices: Vec<(i64, String, Option<i64>)> = totp_devices::table
        .filter(totp_devices::aidant_id.eq_any(&ids))
        .select((totp_devices::aidant_id, totp_devices::kind, totp_devices::confirmed_at))
        .load(c)?;
    let logins = last_logins(c, &ids)?;
    let mut out: Vec<Member> = rows
        .into_iter()
        .map(|(a, role)| {
            let mine = || devices.iter().filter(move |d| d.0 == a.id);
            Member {
                keys: keys.get(&a.id).copied().unwrap_or(0),
                totp_apps: mine().filter(|d| d.1 == "totp_app" && d.2.is_some()).count() as i64,
                totp_cards: mine().filter(|d| d.1 == "totp_card" && d.2.is_some()).count() as i64,
                unconfirmed: mine().filter(|d| d.2.is_none()).count() as i64,
                last_login: logins.get(&a.id).copied(),
                role: Role::from_key(&role).unwrap_or(Role::Aidant),
                id: a.id,
                email: a.email,
                first_name: a.first_name,
                last_name: a.last_name,
                profession: a.profession,
                active: a.active,
            }
        })
        .collect();
    out.sort_by(|x, y| {
        (!x.active, x.last_name.to_lowercase(), x.first_name.to_lowercase(), x.id).cmp(&(
            !y.active,
            y.last_name.to_lowercase(),
            y.first_name.to_lowercase(),
            y.id,
        ))
    });
    Ok(out)
}

/// One member of the organisation, None when the aidant is not a member (404 for the
/// référent of another organisation).
pub fn member(c: &mut AnyConnection, organisation_id: i64, aidant_id: i64) -> Result<Option<Member>, StoreError> {
    if role_in(c, aidant_id, organisation_id)?.is_none() {
        return Ok(None);
    }
    Ok(members(c, organisation_id)?.into_iter().find(|m| m.id == aidant_id))
}

/// The last sign-in of each aidant, from the journal.
fn last_logins(c: &mut AnyConnection, ids: &[i64]) -> Result<BTreeMap<i64, Timestamp>, StoreError> {
    let action = Action::AidantLogin.key();
    let numbered: Vec<(Option<i64>, Option<i64>)> = journal_t::table
        .filter(journal_t::action.eq(action))
        .filter(journal_t::aidant_id.eq_any(ids))
        .group_by(journal_t::aidant_id)
        .select((journal_t::aidant_id, diesel::dsl::max(journal_t::at)))
        .load(c)?;
    let mut out = BTreeMap::new();
    for (a, at) in numbered {
        if let (Some(a), Some(at)) = (a, at) {
            let t = Timestamp::from_micros(at);
            out.entry(a).and_modify(|v: &mut Timestamp| *v = (*v).max(t)).or_insert(t);
        }
    }
    Ok(out)
}

/// What the référent typed to add an aidant.
#[derive(Debug, Clone)]
pub struct NewMember<'a> {
    pub email: &'a str,
    pub first_name: &'a str,
    pub last_name: &'a str,
    pub profession: &'a str,
}

/// What adding an aidant did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Added {
    /// A new account, member of the organisation.
    Created(i64),
    /// An existing account (another organisation's aidant) joined this organisation.
    Joined(i64),
}

impl Added {
    pub fn aidant_id(self) -> i64 {
        match self {
            Added::Created(id) | Added::Joined(id) => id,
        }
    }
}

/// Adds an aidant to the organisation: a new account, or, when the e-mail is already an
/// aidant's, that aidant joins the organisation (names are theirs, not retyped). An
/// aidant already member is a conflict.
pub fn add_member(db: &Db, organisation_id: i64, n: &NewMember<'_>, by: i64, now: Timestamp) -> Result<Added, StoreError> {
    let email = validate::email(n.email)?;
    let first = validate::label("prénom", n.first_name, 150)?;
    let last = validate::label("nom", n.last_name, 150)?;
    let profession = if n.profession.trim().is_empty() { String::new() } else { validate::label("profession", n.profession, 150)? };
    db.write(|c| {
        find_organisation(c, organisation_id)?;
        let existing: Option<i64> = aidants::table.filter(aidants::email.eq(&email)).select(aidants::id).first(c).optional()?;
        let join = |c: &mut AnyConnection, id: i64| {
            diesel::insert_into(memberships::table)
                .values((
                    memberships::aidant_id.eq(id),
                    memberships::organisation_id.eq(organisation_id),
                    memberships::role.eq(Role::Aidant.key()),
                    memberships::created_at.eq(now.micros()),
                ))
                .execute(c)
        };
        let added = match existing {
            Some(id) => {
                if role_in(c, id, organisation_id)?.is_some() {
                    return Err(StoreError::Conflict("Cet aidant fait déjà partie de la structure.".into()));
                }
                join(c, id)?;
                Added::Joined(id)
            }
            None => {
                let id: i64 = diesel::insert_into(aidants::table)
                    .values((
                        aidants::email.eq(&email),
                        aidants::first_name.eq(&first),
                        aidants::last_name.eq(&last),
                        aidants::profession.eq(&profession),
                        aidants::active.eq(true),
                        aidants::current_organisation_id.eq(Some(organisation_id)),
                        aidants::created_at.eq(now.micros()),
                    ))
                    .returning(aidants::id)
                    .get_result(c)?;
                join(c, id)?;
                Added::Created(id)
            }
        };
        let action = match added {
            Added::Created(_) => Action::AidantCreated,
            Added::Joined(_) => Action::AidantAdded,
        };
        journal::append(
            c,
            &[Entry::new(action)
                .aidant(added.aidant_id())
                .organisation(organisation_id)
                
                .detail("role", Role::Aidant.key())
                .detail("by", by)
                .detail("via", "web")
                .at(now)],
        )?;
        let organisation: String = organisations::table.find(organisation_id).select(organisations::name).first(c)?;
        let invitation = Notice::Invitation { organisation, new_account: matches!(added, Added::Created(_)) };
        let key = format!("invitation:{organisation_id}:{}", added.aidant_id());
        let mail = NewMail { key, recipient: &email, notice: &invitation, organisation: Some(organisation_id), aidant: Some(added.aidant_id()), usager: None };
        mail_queue::enqueue(c, &mail, now)?;
        Ok(added)
    })
}

/// Deactivates (`active == false`) or reactivates a member of the organisation. A
/// deactivated aidant cannot sign in anywhere; their sessions end at their next request.
/// A référent cannot deactivate themselves. Returns false when nothing changed.
pub fn set_active(db: &Db, organisation_id: i64, aidant_id: i64, active: bool, by: i64, now: Timestamp) -> Result<bool, StoreError> {
    if !active && aidant_id == by {
        return Err(StoreError::Invalid("Vous ne pouvez pas désactiver votre propre compte.".into()));
    }
    db.write(|c| {
        if role_in(c, aidant_id, organisation_id)?.is_none() {
            return Err(StoreError::NotFound(format!("aidant inconnu : {aidant_id}")));
        }
        let was: bool = aidants::table.find(aidant_id).select(aidants::active).first(c)?;
        if was == active {
            return Ok(false);
        }
        if active {
            ensure_referent_of_all(c, by, aidant_id)?;
        }
        diesel::update(aidants::table.find(aidant_id))
            .set((aidants::active.eq(active), aidants::deactivated_at.eq(if active { None } else { Some(now.micros()) })))
            .execute(c)?;
        let action = if active { Action::AidantReactivated } else { Action::AidantDeactivated };
        journal::append(c, &[Entry::new(action).aidant(aidant_id).organisation(organisation_id).detail("by", by).detail("via", "web").at(now)])?;
        Ok(true)
    })
}

/// Whether the aidant may still act: an active account. Used on every signed-in
/// request so that a deactivation ends sessions at once.
pub fn is_active(c: &mut AnyConnection, aidant_id: i64) -> Result<bool, StoreError> {
    Ok(aidants::table.find(aidant_id).select(aidants::active).first::<bool>(c).optional()?.unwrap_or(false))
}

/// Limits the organisation to `allowed` démarches (at least one). New mandats and IdP
/// requests are then limited to them; existing autorisations outside stay recorded.
pub fn set_allowed_demarches(db: &Db, organisation_id: i64, allowed: &[Demarche], by: i64) -> Result<Organisation, StoreError> {
    if allowed.is_empty() {
        return Err(StoreError::Invalid("Choisissez au moins une démarche.".into()));
    }
    let mut list = allowed.to_vec();
    list.sort();
    list.dedup();
    db.write(|c| {
        let before = find_organisation(c, organisation_id)?;
        let joined = Demarche::join(&list);
        if before.allowed() == list {
            return Ok(before);
        }
        diesel::update(organisations::table.find(organisation_id)).set(organisations::allowed_demarches.eq(&joined)).execute(c)?;
        journal::append(
            c,
            &[Entry::new(Action::OrganisationDemarchesChanged)
                .aidant(by)
                .organisation(organisation_id)
                
                .detail("before", before.allowed_demarches.clone())
                .detail("demarches", joined.clone())
                .detail("via", "web")],
        )?;
        find_organisation(c, organisation_id)
    })
}
