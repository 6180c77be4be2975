//! What the scheduled jobs do (the rules are in `broker_core::lifecycle`): the reminders to
//! aidants and référents, the deactivation of inactive accounts and the notices to
//! usagers. Each runs in the transaction of its job's run, so its messages, its changes
//! and its journal entries are committed together, or not at all.

use crate::journal;
use crate::mail_queue::{self, NewMail};
use crate::schema::{
    aidants, autorisations, journal as journal_t, mandats, memberships, oidc_clients, organisations, totp_devices, usager_notices,
    usagers, webauthn_credentials,
};
use crate::{AnyConnection, StoreError};
use broker_core::journal::{Action, Entry};
use broker_core::lifecycle::{inactivity, Inactivity, EXPIRING_WITHIN_DAYS, USE_DIGEST_SECONDS};
use broker_core::notice::{AidantLine, ExpiringMandat, MandatChange, Notice, Use};
use broker_core::{Demarche, Timestamp};
use diesel::prelude::*;
use std::collections::{BTreeMap, BTreeSet};

/// What a run did, for `broker jobs list` and the logs: `"3 messages"`.
fn messages(n: usize) -> String {
    match n {
        0 => "aucun message".to_owned(),
        1 => "1 message".to_owned(),
        n => format!("{n} messages"),
    }
}

/// Active members of `organisation`: (id, first name, last name, e-mail, référent).
fn active_members(c: &mut AnyConnection, organisation: i64) -> Result<Vec<(i64, String, String, String, bool)>, StoreError> {
    let rows: Vec<(i64, String, String, String, String)> = memberships::table
        .inner_join(aidants::table)
        .filter(memberships::organisation_id.eq(organisation))
        .filter(aidants::active.eq(true))
        .order(aidants::id)
        .select((aidants::id, aidants::first_name, aidants::last_name, aidants::email, memberships::role))
        .load(c)?;
    Ok(rows.into_iter().map(|(id, f, l, e, role)| (id, f, l, e, role == "referent")).collect())
}

fn organisation_name(c: &mut AnyConnection, id: i64) -> Result<String, StoreError> {
    Ok(organisations::table.find(id).select(organisations::name).first(c)?)
}

/// Weekly: to each active aidant of a structure, its mandats that end within 30 days and
/// still cover a démarche. `run` names the run (one message per aidant and run).
pub fn mandats_expiring(c: &mut AnyConnection, now: Timestamp, run: i64) -> Result<String, StoreError> {
    let until = now.plus_days(EXPIRING_WITHIN_DAYS);
    let rows: Vec<(i64, i64, i64, i64, String, String, String)> = mandats::table
        .inner_join(autorisations::table)
        .inner_join(usagers::table)
        .filter(mandats::expires_at.gt(now.micros()))
        .filter(mandats::expires_at.le(until.micros()))
        .filter(autorisations::revoked_at.is_null())
        .order((mandats::organisation_id, mandats::expires_at, mandats::id, autorisations::id))
        .select((
            mandats::organisation_id,
            mandats::id,
            mandats::usager_id,
            mandats::expires_at,
            autorisations::demarche,
            usagers::given_name,
            usagers::family_name,
        ))
        .load(c)?;
    let mut by_org: BTreeMap<i64, Vec<ExpiringMandat>> = BTreeMap::new();
    for (org, mandat, usager, expires, demarche, given, family) in rows {
        let list = by_org.entry(org).or_default();
        let d = Demarche::from_key(&demarche);
        match list.last_mut() {
            Some(m) if m.mandat == mandat => m.demarches.extend(d),
            _ => list.push(ExpiringMandat {
                mandat,
                usager,
                usager_name: format!("{given} {family}"),
                expires_at: Timestamp::from_micros(expires),
                demarches: d.into_iter().collect(),
            }),
        }
    }
    let mut sent = 0;
    for (org, list) in by_org {
        let organisation = organisation_name(c, org)?;
        for (aidant, first_name, _, email, _) in active_members(c, org)? {
            let notice = Notice::MandatsExpiring { first_name, organisation: organisation.clone(), mandats: list.clone() };
            let key = format!("mandats-echeance:{run}:{org}:{aidant}");
            let m = NewMail { key, recipient: &email, notice: &notice, organisation: Some(org), aidant: Some(aidant), usager: None };
            sent += usize::from(mail_queue::enqueue(c, &m, now)?);
        }
    }
    Ok(messages(sent))
}

/// Active aidants of any structure with no security key and no confirmed code device.
fn without_second_factor(c: &mut AnyConnection) -> Result<BTreeSet<i64>, StoreError> {
    let active: Vec<i64> = aidants::table.filter(aidants::active.eq(true)).select(aidants::id).load(c)?;
    let with_key: BTreeSet<i64> = webauthn_credentials::table.select(webauthn_credentials::aidant_id).distinct().load::<i64>(c)?.into_iter().collect();
    let with_code: BTreeSet<i64> = totp_devices::table
        .filter(totp_devices::confirmed_at.is_not_null())
        .select(totp_devices::aidant_id)
        .distinct()
        .load::<i64>(c)?
        .into_iter()
        .collect();
    Ok(active.into_iter().filter(|a| !with_key.contains(a) && !with_code.contains(a)).collect())
}

/// Weekly: to each active référent of a structure, its aidants who cannot sign in.
pub fn missing_second_factors(c: &mut AnyConnection, now: Timestamp, run: i64) -> Result<String, StoreError> {
    let missing = without_second_factor(c)?;
    if missing.is_empty() {
        return Ok(messages(0));
    }
    let ids: Vec<i64> = missing.iter().copied().collect();
    let orgs: BTreeSet<i64> = memberships::table
        .filter(memberships::aidant_id.eq_any(&ids))
        .select(memberships::organisation_id)
        .load::<i64>(c)?
        .into_iter()
        .collect();
    let mut sent = 0;
    for org in orgs {
        let members = active_members(c, org)?;
        let lines: Vec<AidantLine> = members
            .iter()
            .filter(|m| missing.contains(&m.0))
            .map(|(id, f, l, e, _)| AidantLine { id: *id, name: format!("{f} {l}"), email: e.clone() })
            .collect();
        if lines.is_empty() {
            continue;
        }
        let organisation = organisation_name(c, org)?;
        for (referent, first_name, _, email, _) in members.iter().filter(|m| m.4 && !missing.contains(&m.0)) {
            let notice = Notice::MissingSecondFactor { first_name: first_name.clone(), organisation: organisation.clone(), aidants: lines.clone() };
            let key = format!("seconds-facteurs:{run}:{org}:{referent}");
            let m = NewMail { key, recipient: email, notice: &notice, organisation: Some(org), aidant: Some(*referent), usager: None };
            sent += usize::from(mail_queue::enqueue(c, &m, now)?);
        }
    }
    Ok(messages(sent))
}

/// Daily: a warning to each aidant without a sign-in for 150 days (once per period of
/// inactivity), and at 180 days the account deactivated (journaled `aidant_deactivated`,
/// reason "inactivité") and the référents of their structures told. The count starts at
/// the last sign-in (at the account's creation for an aidant who never signed in), or at
/// the last reactivation by a référent when later. Accounts without a structure
/// (auditors) are left alone.
pub fn inactivity_run(c: &mut AnyConnection, now: Timestamp) -> Result<String, StoreError> {
    let members: BTreeSet<i64> = memberships::table.select(memberships::aidant_id).distinct().load::<i64>(c)?.into_iter().collect();
    type Row = (i64, String, String, String, i64, Option<i64>, Option<i64>);
    let rows: Vec<Row> = aidants::table
        .filter(aidants::active.eq(true))
        .order(aidants::id)
        .select((
            aidants::id,
            aidants::first_name,
            aidants::last_name,
            aidants::email,
            aidants::created_at,
            aidants::last_signin_at,
            aidants::current_organisation_id,
        ))
        .load(c)?;
    let (mut warned, mut deactivated, mut told) = (0, 0, 0);
    for (id, first, last, email, created, signed_in, current) in rows.into_iter().filter(|r| members.contains(&r.0)) {
        let mut since = Timestamp::from_micros(signed_in.unwrap_or(created));
        if inactivity(since, now) != Inactivity::Active {
            // An account reactivated by a référent starts a new period of inactivity.
            let reactivated: Option<i64> = journal_t::table
                .filter(journal_t::aidant_id.eq(id))
                .filter(journal_t::action.eq(Action::AidantReactivated.key()))
                .select(diesel::dsl::max(journal_t::at))
                .first(c)?;
            if let Some(at) = reactivated.filter(|at| *at > since.micros()) {
                since = Timestamp::from_micros(at);
            }
        }
        match inactivity(since, now) {
            Inactivity::Active => {}
            Inactivity::Warn { deactivation_on } => {
                let notice = Notice::InactivityWarning { first_name: first, last_signin: since, deactivation_on };
                let key = format!("inactivite-avertissement:{id}:{}", since.micros());
                let m = NewMail { key, recipient: &email, notice: &notice, organisation: current, aidant: Some(id), usager: None };
                warned += usize::from(mail_queue::enqueue(c, &m, now)?);
            }
            Inactivity::Deactivate => {
                // Not if the aidant signed in meanwhile (PostgreSQL: a sign-in committed
                // after this run read the accounts).
                let changed = diesel::update(
                    aidants::table
                        .find(id)
                        .filter(aidants::active.eq(true))
                        .filter(aidants::last_signin_at.is_null().or(aidants::last_signin_at.le(since.micros()))),
                )
                .set((aidants::active.eq(false), aidants::deactivated_at.eq(Some(now.micros()))))
                .execute(c)?;
                if changed == 0 {
                    continue;
                }
                deactivated += 1;
                let orgs: Vec<i64> = memberships::table.filter(memberships::aidant_id.eq(id)).order(memberships::organisation_id).select(memberships::organisation_id).load(c)?;
                let line = AidantLine { id, name: format!("{first} {last}"), email: email.clone() };
                let mut entries = Vec::new();
                for org in orgs {
                    entries.push(
                        Entry::new(Action::AidantDeactivated)
                            .aidant(id)
                            .organisation(org)
                            .detail("reason", "inactivité")
                            .detail("last_signin", since.rfc3339())
                            .detail("via", "job")
                            .at(now),
                    );
                    let organisation = organisation_name(c, org)?;
                    for (referent, first_name, _, remail, _) in active_members(c, org)?.into_iter().filter(|m| m.4 && m.0 != id) {
                        let notice = Notice::InactiveAidantDeactivated { first_name, organisation: organisation.clone(), aidant: line.clone(), last_signin: since };
                        let key = format!("inactivite-desactivation:{id}:{}:{org}:{referent}", since.micros());
                        let m = NewMail { key, recipient: &remail, notice: &notice, organisation: Some(org), aidant: Some(referent), usager: None };
                        told += usize::from(mail_queue::enqueue(c, &m, now)?);
                    }
                }
                journal::append(c, &entries)?;
            }
        }
    }
    Ok(format!("{warned} avertissement(s), {deactivated} désactivation(s), {told} message(s) aux référents"))
}

/// Every ten minutes: reads the uses journaled since `cursor` (the last entry read), marks
/// their usagers as waiting for a notice, and sends one digest to each usager waiting
/// whose last digest is an hour old or more. Returns the new cursor. Works by chunks of
/// usagers, with a few statements per chunk.
pub fn usager_notices_run(c: &mut AnyConnection, now: Timestamp, cursor: i64) -> Result<(String, i64), StoreError> {
    let mut cursor = cursor;
    loop {
        let uses: Vec<(i64, Option<i64>)> = journal_t::table
            .filter(journal_t::seq.gt(cursor))
            .filter(journal_t::action.eq(Action::AutorisationUsed.key()))
            .order(journal_t::seq)
            .limit(CHUNK as i64)
            .select((journal_t::seq, journal_t::usager_id))
            .load(c)?;
        let Some(&(last, _)) = uses.last() else { break };
        let mut first: BTreeMap<i64, i64> = BTreeMap::new();
        for (seq, usager) in &uses {
            if let Some(u) = usager {
                first.entry(*u).or_insert(*seq);
            }
        }
        waiting_from(c, &first)?;
        cursor = last;
        if uses.len() < CHUNK {
            break;
        }
    }
    let digest_before = now.plus_seconds(-USE_DIGEST_SECONDS).micros();
    let due: Vec<(i64, bool, i64)> = usager_notices::table
        .filter(usager_notices::pending_from.is_not_null())
        .filter(usager_notices::last_digest_at.is_null().or(usager_notices::last_digest_at.le(digest_before)))
        .order(usager_notices::usager_id)
        .select((usager_notices::usager_id, usager_notices::use_notices, usager_notices::pending_from.assume_not_null()))
        .load(c)?;
    let mut sent = 0;
    for chunk in due.chunks(CHUNK) {
        sent += digests(c, chunk, cursor, now)?;
    }
    Ok((messages(sent), cursor))
}

/// Usagers, journal entries and messages are handled this many at a time.
const CHUNK: usize = 1_000;

/// Sends the digests of `due` (usager, wants notices, first entry not told) for the uses up
/// to entry `to`, and clears their waiting marks.
fn digests(c: &mut AnyConnection, due: &[(i64, bool, i64)], to: i64, now: Timestamp) -> Result<usize, StoreError> {
    let ids: Vec<i64> = due.iter().map(|d| d.0).collect();
    let wanted: Vec<(i64, i64)> = due.iter().filter(|d| d.1).map(|d| (d.0, d.2)).collect();
    let people: BTreeMap<i64, (String, Option<String>)> = usagers::table
        .filter(usagers::id.eq_any(wanted.iter().map(|w| w.0)))
        .select((usagers::id, usagers::given_name, usagers::email))
        .load::<(i64, String, Option<String>)>(c)?
        .into_iter()
        .map(|(id, g, e)| (id, (g, e)))
        .collect();
    let from = wanted.iter().map(|w| w.1).min().unwrap_or(to + 1);
    let rows: Vec<UseRow> = journal_t::table
        .filter(journal_t::usager_id.eq_any(wanted.iter().map(|w| w.0)))
        .filter(journal_t::action.eq(Action::AutorisationUsed.key()))
        .filter(journal_t::seq.ge(from))
        .filter(journal_t::seq.le(to))
        .order(journal_t::seq)
        .select((journal_t::seq, journal_t::at, journal_t::usager_id, journal_t::aidant_id, journal_t::organisation_id, journal_t::demarche, journal_t::client_id))
        .load(c)?;
    let names = Names::load(c, &rows)?;
    let mut uses: BTreeMap<i64, Vec<Use>> = BTreeMap::new();
    let pending: BTreeMap<i64, i64> = wanted.iter().copied().collect();
    for (seq, at, usager, aidant, org, demarche, client) in rows {
        let Some(usager) = usager else { continue };
        if pending.get(&usager).is_none_or(|p| seq < *p) {
            continue;
        }
        let Some(demarche) = demarche.as_deref().and_then(Demarche::from_key) else { continue };
        uses.entry(usager).or_default().push(Use {
            at: Timestamp::from_micros(at),
            organisation: names.organisation(org),
            aidant: names.aidant(aidant),
            demarche,
            service: names.client(client),
        });
    }
    let mut notices = Vec::new();
    for (usager, from) in &wanted {
        let Some((given, Some(email))) = people.get(usager) else { continue };
        let Some(list) = uses.remove(usager) else { continue };
        if email.trim().is_empty() {
            continue;
        }
        notices.push((*usager, *from, email.clone(), Notice::MandatUses { first_name: given.clone(), uses: list }));
    }
    let mails: Vec<NewMail<'_>> = notices
        .iter()
        .map(|(usager, from, email, notice)| NewMail {
            key: format!("avis-utilisation:{usager}:{from}"),
            recipient: email,
            notice,
            organisation: None,
            aidant: None,
            usager: Some(*usager),
        })
        .collect();
    let sent = mail_queue::enqueue_many(c, &mails, now)?;
    let told: Vec<i64> = notices.iter().map(|n| n.0).collect();
    for chunk in told.chunks(CHUNK) {
        diesel::update(usager_notices::table.filter(usager_notices::usager_id.eq_any(chunk)))
            .set(usager_notices::last_digest_at.eq(Some(now.micros())))
            .execute(c)?;
    }
    diesel::update(usager_notices::table.filter(usager_notices::usager_id.eq_any(&ids))).set(usager_notices::pending_from.eq(None::<i64>)).execute(c)?;
    Ok(sent)
}

/// Marks each usager of `first` (usager → journal entry) as waiting for a notice of the
/// uses from that entry, unless already waiting.
fn waiting_from(c: &mut AnyConnection, first: &BTreeMap<i64, i64>) -> Result<(), StoreError> {
    let ids: Vec<i64> = first.keys().copied().collect();
    let existing: BTreeMap<i64, Option<i64>> = usager_notices::table
        .filter(usager_notices::usager_id.eq_any(&ids))
        .select((usager_notices::usager_id, usager_notices::pending_from))
        .load::<(i64, Option<i64>)>(c)?
        .into_iter()
        .collect();
    let new: Vec<_> = first
        .iter()
        .filter(|(u, _)| !existing.contains_key(u))
        .map(|(u, seq)| (usager_notices::usager_id.eq(*u), usager_notices::pending_from.eq(Some(*seq))))
        .collect();
    match c {
        AnyConnection::Postgresql(pg) => {
            for chunk in new.chunks(CHUNK) {
                diesel::insert_into(usager_notices::table).values(chunk).on_conflict_do_nothing().execute(pg)?;
            }
        }
        AnyConnection::Sqlite(sq) => {
            for row in new {
                diesel::insert_into(usager_notices::table).values(row).on_conflict_do_nothing().execute(sq)?;
            }
        }
    }
    for (usager, seq) in first.iter().filter(|(u, _)| existing.get(u) == Some(&None)) {
        diesel::update(usager_notices::table.find(*usager)).set(usager_notices::pending_from.eq(Some(*seq))).execute(c)?;
    }
    Ok(())
}

/// The names of the aidants, structures and e-services of some journal entries.
struct Names {
    aidants: BTreeMap<i64, String>,
    organisations: BTreeMap<i64, String>,
    clients: BTreeMap<String, String>,
}

type UseRow = (i64, i64, Option<i64>, Option<i64>, Option<i64>, Option<String>, Option<String>);

impl Names {
    fn load(c: &mut AnyConnection, rows: &[UseRow]) -> Result<Names, StoreError> {
        let aidant_ids: BTreeSet<i64> = rows.iter().filter_map(|r| r.3).collect();
        let org_ids: BTreeSet<i64> = rows.iter().filter_map(|r| r.4).collect();
        let client_ids: BTreeSet<String> = rows.iter().filter_map(|r| r.6.clone()).collect();
        let aidants = aidants::table
            .filter(aidants::id.eq_any(aidant_ids))
            .select((aidants::id, aidants::first_name, aidants::last_name))
            .load::<(i64, String, String)>(c)?
            .into_iter()
            .map(|(id, f, l)| (id, format!("{f} {l}")))
            .collect();
        let organisations = organisations::table.filter(organisations::id.eq_any(org_ids)).select((organisations::id, organisations::name)).load(c)?.into_iter().collect();
        let clients = oidc_clients::table
            .filter(oidc_clients::client_id.eq_any(client_ids))
            .select((oidc_clients::client_id, oidc_clients::name))
            .load(c)?
            .into_iter()
            .collect();
        Ok(Names { aidants, organisations, clients })
    }

    fn aidant(&self, id: Option<i64>) -> String {
        id.and_then(|i| self.aidants.get(&i).cloned()).unwrap_or_else(|| "un aidant".to_owned())
    }

    fn organisation(&self, id: Option<i64>) -> String {
        id.and_then(|i| self.organisations.get(&i).cloned()).unwrap_or_else(|| "une structure d'aide".to_owned())
    }

    fn client(&self, id: Option<String>) -> String {
        match id {
            Some(id) => self.clients.get(&id).cloned().unwrap_or(id),
            None => "un service en ligne".to_owned(),
        }
    }
}

/// Queues the notice of a change to a mandat to its usager (when FranceConnect gave an
/// e-mail address), in the transaction of the change. `fingerprint` is the change's
/// attestation; `demarches`, the démarches it concerns.
pub fn mandat_changed(
    c: &mut AnyConnection,
    mandat: i64,
    change: MandatChange,
    demarches: &[Demarche],
    fingerprint: &str,
    now: Timestamp,
) -> Result<(), StoreError> {
    let (org, usager, expires): (i64, i64, i64) =
        mandats::table.find(mandat).select((mandats::organisation_id, mandats::usager_id, mandats::expires_at)).first(c)?;
    let (given, email): (String, Option<String>) = usagers::table.find(usager).select((usagers::given_name, usagers::email)).first(c)?;
    let Some(email) = email.filter(|e| !e.trim().is_empty()) else { return Ok(()) };
    let notice = Notice::MandatChanged {
        first_name: given,
        change,
        organisation: organisation_name(c, org)?,
        demarches: demarches.to_vec(),
        expires_at: Timestamp::from_micros(expires),
        fingerprint: fingerprint.to_owned(),
    };
    let m = NewMail { key: format!("mandat:{fingerprint}"), recipient: &email, notice: &notice, organisation: None, aidant: None, usager: Some(usager) };
    mail_queue::enqueue(c, &m, now)?;
    Ok(())
}

/// Whether `usager` receives the notices of use (yes unless they turned them off).
pub fn use_notices(c: &mut AnyConnection, usager: i64) -> Result<bool, StoreError> {
    Ok(usager_notices::table.find(usager).select(usager_notices::use_notices).first(c).optional()?.unwrap_or(true))
}

/// Turns the notices of use on or off for `usager`, journaled (`usager_notices_changed`).
/// Returns false when nothing changed.
pub fn set_use_notices(c: &mut AnyConnection, usager: i64, on: bool, now: Timestamp) -> Result<bool, StoreError> {
    if use_notices(c, usager)? == on {
        return Ok(false);
    }
    // The row may be written by the notices job at the same time: insert it if missing,
    // then set the choice.
    let row = usager_notices::usager_id.eq(usager);
    match c {
        AnyConnection::Postgresql(pg) => diesel::insert_into(usager_notices::table).values(row).on_conflict_do_nothing().execute(pg)?,
        AnyConnection::Sqlite(sq) => diesel::insert_into(usager_notices::table).values(row).on_conflict_do_nothing().execute(sq)?,
    };
    diesel::update(usager_notices::table.find(usager)).set(usager_notices::use_notices.eq(on)).execute(c)?;
    let e = Entry::new(Action::UsagerNoticesChanged).usager(usager).detail("use_notices", on).detail("by", "usager").at(now);
    journal::append(c, &[e])?;
    Ok(true)
}
