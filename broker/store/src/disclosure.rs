//! The disclosure of a usager's identity at `/userinfo`, committed by the group writer
//! ([`crate::group`]): for a whole batch of access tokens at once, one query checks that
//! their autorisations are still active and reads the identities, one multi-row insert
//! marks the tokens used (a token already used is left out by the database), and the
//! `autorisation_used` entries are numbered with the batch's commit.

use crate::admin::Client;
use crate::group::{Job, Reply};
use crate::idp::ClientCache;
use crate::schema::{autorisations, mandats, oidc_token_uses, usagers};
use crate::{journal, AnyConnection, Db, StoreError};
use broker_core::capability::ActingFor;
use broker_core::identite::IdentitePivot;
use broker_core::journal::Event;
use broker_core::oidc::grant::Grant;
use broker_core::Timestamp;
use diesel::prelude::*;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

/// What `/userinfo` may answer for one access token.
pub enum Disclosure {
    /// The identity, disclosed now and journaled, and the client it goes to.
    Identity(Box<(IdentitePivot, Arc<Client>)>),
    /// The client is no longer active: nothing is disclosed.
    ClientInactive,
    /// The autorisation is no longer active (revoked, or its mandat expired).
    NotActive,
    /// The token has already served its disclosure.
    AlreadyUsed,
}

/// One disclosure asked of the group writer.
pub(crate) struct DiscloseRequest {
    token_hash: String,
    acting: ActingFor,
    client_id: String,
    now: Timestamp,
}

/// The group writer's answer to one [`DiscloseRequest`].
pub(crate) enum Disclosed {
    Identity(IdentitePivot),
    NotActive,
    AlreadyUsed,
}

/// Discloses the usager's identity for the access token whose hash is `token_hash`: checks
/// that the autorisation is still active at `now`, marks the token used and appends the
/// `autorisation_used` entry, all committed before this returns. The grant's client must
/// be active (as `clients` knows it). Nothing is written when the answer is not
/// [`Disclosure::Identity`]. Blocks the calling thread until the commit.
pub fn disclose(db: &Db, clients: &ClientCache, token_hash: &str, g: &Grant, now: Timestamp) -> Result<Disclosure, StoreError> {
    let Some(client) = clients.get(db, &g.client_id)? else { return Ok(Disclosure::ClientInactive) };
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    db.submit(Job::Disclose(request(token_hash, g, now), Reply::Wait(tx)));
    let out = rx.recv().unwrap_or_else(|_| Err(crate::db::stopped()))?;
    Ok(answer(out, client))
}

/// [`disclose`] for a task: awaits the commit instead of blocking a thread. The client is
/// looked up in `clients` (an in-process copy; on a miss, a short database read).
pub async fn disclose_async(db: &Db, client: Option<Arc<Client>>, token_hash: &str, g: &Grant, now: Timestamp) -> Result<Disclosure, StoreError> {
    let Some(client) = client else { return Ok(Disclosure::ClientInactive) };
    let (tx, rx) = tokio::sync::oneshot::channel();
    db.submit(Job::Disclose(request(token_hash, g, now), Reply::Notify(tx)));
    let out = rx.await.unwrap_or_else(|_| Err(crate::db::stopped()))?;
    Ok(answer(out, client))
}

fn request(token_hash: &str, g: &Grant, now: Timestamp) -> DiscloseRequest {
    DiscloseRequest { token_hash: token_hash.to_owned(), acting: g.acting.clone(), client_id: g.client_id.clone(), now }
}

fn answer(out: Disclosed, client: Arc<Client>) -> Disclosure {
    match out {
        Disclosed::Identity(identity) => Disclosure::Identity(Box::new((identity, client))),
        Disclosed::NotActive => Disclosure::NotActive,
        Disclosed::AlreadyUsed => Disclosure::AlreadyUsed,
    }
}

type IdentityRow = (String, String, Option<String>, String, String, String, String, Option<String>);
/// Id, revocation, expiry, organisation, usager and démarche of an autorisation.
type AutorisationRow = (i64, Option<i64>, i64, i64, i64, String);

/// The autorisations of `ids` with their mandat's expiry and the usager's identity (one
/// query).
fn autorisations_with_identity(c: &mut AnyConnection, ids: &[i64]) -> Result<HashMap<i64, (AutorisationRow, IdentityRow)>, StoreError> {
    let rows: Vec<(AutorisationRow, IdentityRow)> = autorisations::table
        .inner_join(mandats::table.inner_join(usagers::table))
        .filter(autorisations::id.eq_any(ids))
        .select((
            (autorisations::id, autorisations::revoked_at, mandats::expires_at, mandats::organisation_id, mandats::usager_id, autorisations::demarche),
            (
                usagers::given_name,
                usagers::family_name,
                usagers::preferred_username,
                usagers::birthdate,
                usagers::gender,
                usagers::birthplace,
                usagers::birthcountry,
                usagers::email,
            ),
        ))
        .load(c)?;
    Ok(rows.into_iter().map(|r| (r.0 .0, r)).collect())
}

/// The identity when the autorisation `row` still grants what `a` acts for at `now`.
fn still_active(row: &(AutorisationRow, IdentityRow), a: &ActingFor, now: Timestamp) -> Option<IdentitePivot> {
    let ((_, revoked, expires, org, usager, demarche), id) = row;
    let active = revoked.is_none()
        && now.micros() < *expires
        && *org == a.organisation().get()
        && *usager == a.usager().get()
        && demarche == a.demarche().key();
    if !active {
        return None;
    }
    let (given_name, family_name, preferred_username, birthdate, gender, birthplace, birthcountry, email) = id.clone();
    Some(IdentitePivot { given_name, family_name, preferred_username, birthdate, gender, birthplace, birthcountry, email: email.unwrap_or_default() })
}

/// Marks the tokens of `uses` used; returns the hashes marked now (a token already used,
/// by an earlier batch or another process, is left out by the database).
fn mark_used(c: &mut AnyConnection, uses: &[(String, i64)]) -> Result<HashSet<String>, StoreError> {
    if uses.is_empty() {
        return Ok(HashSet::new());
    }
    let rows: Vec<_> = uses.iter().map(|(h, at)| (oidc_token_uses::token_hash.eq(h), oidc_token_uses::used_at.eq(at))).collect();
    let marked: Vec<String> = match c {
        AnyConnection::Postgresql(pg) => diesel::insert_into(oidc_token_uses::table)
            .values(&rows)
            .on_conflict_do_nothing()
            .returning(oidc_token_uses::token_hash)
            .get_results(pg)?,
        AnyConnection::Sqlite(sq) => {
            // One writer at a time on SQLite: row by row costs no round trip.
            let mut marked = Vec::with_capacity(uses.len());
            for (row, (hash, _)) in rows.iter().zip(uses) {
                if diesel::insert_into(oidc_token_uses::table).values(row).on_conflict_do_nothing().execute(sq)? == 1 {
                    marked.push(hash.clone());
                }
            }
            marked
        }
    };
    Ok(marked.into_iter().collect())
}

/// Decides and writes every disclosure of a batch, in the group writer's transaction;
/// one answer per request, in order.
pub(crate) fn disclose_all(c: &mut AnyConnection, requests: &[DiscloseRequest]) -> Result<Vec<Disclosed>, StoreError> {
    if requests.is_empty() {
        return Ok(Vec::new());
    }
    let ids: Vec<i64> = requests.iter().map(|r| r.acting.autorisation().get()).collect::<HashSet<_>>().into_iter().collect();
    let found = autorisations_with_identity(c, &ids)?;
    // First the checks; a token presented twice in one batch is used by the first.
    let mut seen = HashSet::new();
    let checked: Vec<Option<IdentitePivot>> = requests
        .iter()
        .map(|r| found.get(&r.acting.autorisation().get()).and_then(|row| still_active(row, &r.acting, r.now)))
        .collect();
    let uses: Vec<(String, i64)> = requests
        .iter()
        .zip(&checked)
        .filter(|(r, id)| id.is_some() && seen.insert(r.token_hash.as_str()))
        .map(|(r, _)| (r.token_hash.clone(), r.now.micros()))
        .collect();
    let mut marked = mark_used(c, &uses)?;
    let mut entries = Vec::new();
    let mut out = Vec::with_capacity(requests.len());
    for (r, identity) in requests.iter().zip(checked) {
        out.push(match identity {
            None => Disclosed::NotActive,
            // `remove`: a second request with the same token finds it gone.
            Some(identity) if marked.remove(&r.token_hash) => {
                // Stamped at the instant of the disclosure, by the same clock as the checks.
                entries.push(Event::AutorisationUsed { acting: r.acting.clone(), client: r.client_id.clone() }.entry(r.now));
                Disclosed::Identity(identity)
            }
            Some(_) => Disclosed::AlreadyUsed,
        });
    }
    journal::append(c, &entries)?;
    Ok(out)
}
