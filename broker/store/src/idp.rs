//! What the identity provider reads and writes in the database: registered clients, the
//! usagers an aidant may act for, the check of an autorisation at the instant a code is
//! issued, and the disclosure of an identity at `/userinfo` with its journal entry.

use crate::admin::Client;
use broker_core::capability::{ActingFor, AidantId, InOrganisation, MandatId, UsagerId};
use crate::schema::{autorisations, mandats, oidc_clients, oidc_token_uses, usagers};
use crate::{AnyConnection, Db, StoreError};
use broker_core::{Demarche, Timestamp};
use diesel::prelude::*;
use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

/// An active client by its id (exact match). A value that cannot be an identifier (a
/// NUL byte, a control character, overlong…) names no client and is not looked up.
pub fn find_client(db: &Db, client_id: &str) -> Result<Option<Client>, StoreError> {
    if !broker_core::validate::is_identifier(client_id) {
        return Ok(None);
    }
    db.read(|c| {
        Ok(oidc_clients::table
            .filter(oidc_clients::client_id.eq(client_id))
            .filter(oidc_clients::active.eq(true))
            .select(Client::as_select())
            .first(c)
            .optional()?)
    })
}

/// Active clients, read through a short-lived copy in process memory: `/token` and
/// `/userinfo` look their client up on every request, and registrations rarely change.
/// A client unknown to the copy is always read from the database (a client registered a
/// moment ago is found at once); a client made inactive in the database stops being
/// served within the copy's lifetime. A lifetime of zero reads the database every time.
pub struct ClientCache {
    ttl: Duration,
    entries: RwLock<HashMap<String, (Arc<Client>, Instant)>>,
}

/// Above this many copies, those past their lifetime are dropped on the next insertion.
const CLIENT_CACHE_SWEEP: usize = 1024;

impl ClientCache {
    pub fn new(ttl: Duration) -> Self {
        ClientCache { ttl, entries: RwLock::new(HashMap::new()) }
    }

    /// The copy of the active client `client_id` read less than `ttl` ago, if any: no
    /// database call (async callers try this first).
    pub fn fresh(&self, client_id: &str) -> Option<Arc<Client>> {
        if self.ttl.is_zero() {
            return None;
        }
        let entries = self.entries.read().unwrap_or_else(|e| e.into_inner());
        entries.get(client_id).filter(|(_, at)| at.elapsed() < self.ttl).map(|(client, _)| client.clone())
    }

    /// The active client `client_id`, as [`find_client`] answers it at most `ttl` ago.
    pub fn get(&self, db: &Db, client_id: &str) -> Result<Option<Arc<Client>>, StoreError> {
        if let Some(client) = self.fresh(client_id) {
            return Ok(Some(client));
        }
        let found = find_client(db, client_id)?.map(Arc::new);
        if !self.ttl.is_zero() {
            let mut entries = self.entries.write().unwrap_or_else(|e| e.into_inner());
            match &found {
                Some(client) => {
                    if entries.len() >= CLIENT_CACHE_SWEEP {
                        let ttl = self.ttl;
                        entries.retain(|_, (_, at)| at.elapsed() < ttl);
                    }
                    entries.insert(client_id.to_owned(), (client.clone(), Instant::now()));
                }
                None => {
                    entries.remove(client_id);
                }
            }
        }
        Ok(found)
    }
}

/// The aidant `aidant_id`, if active, acting in their current organisation (with its
/// allowed démarches): resolved once per request. `None` when they no longer may act
/// (deactivated, without an organisation).
pub fn in_organisation(db: &Db, aidant_id: AidantId) -> Result<Option<InOrganisation>, StoreError> {
    match crate::capabilities::in_organisation(db, aidant_id) {
        Ok(by) => Ok(Some(by)),
        Err(StoreError::NotFound(_) | StoreError::Invalid(_)) => Ok(None),
        Err(e) => Err(e),
    }
}

/// The capability to act for the usager of `chosen` on its démarche, checked now from
/// the mandat's facts; `None` when it no longer holds.
pub fn acting_for(db: &Db, by: &InOrganisation, chosen: &ActiveAutorisation, now: Timestamp) -> Result<Option<ActingFor>, StoreError> {
    let Some(facts) = db.read(|c| crate::mandat_facts::mandat(c, MandatId(chosen.mandat_id)))? else { return Ok(None) };
    Ok(ActingFor::check(by, &facts, chosen.demarche, now).ok())
}

/// One active autorisation of a usager, as the aidant may pick it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ActiveAutorisation {
    pub demarche: Demarche,
    pub autorisation_id: i64,
    pub mandat_id: i64,
    pub expires_at: Timestamp,
}

/// A usager the aidant may act for, with the démarches they may act on.
#[derive(Clone)]
pub struct Candidate {
    pub usager_id: i64,
    pub given_name: String,
    pub family_name: String,
    pub preferred_username: Option<String>,
    pub birthdate: String,
    /// In the canonical order of [`Demarche::ALL`].
    pub autorisations: Vec<ActiveAutorisation>,
    /// The most recent creation among those autorisations (lists are sorted by it).
    pub latest: Timestamp,
}

impl std::fmt::Debug for Candidate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Candidate").field("usager_id", &self.usager_id).field("autorisations", &self.autorisations).finish_non_exhaustive()
    }
}

/// Usager (id, given name, usage name, family name, birthdate), autorisation (id,
/// démarche), mandat (id, expiry) and the autorisation's creation.
type AutRow = (i64, String, Option<String>, String, String, i64, String, i64, i64, i64);

fn active_rows(c: &mut AnyConnection, organisation_id: i64, usager: Option<i64>, allowed: &[Demarche], now: Timestamp) -> Result<Vec<AutRow>, StoreError> {
    let keys: Vec<&str> = allowed.iter().map(|d| d.key()).collect();
    let mut q = autorisations::table
        .inner_join(mandats::table.inner_join(usagers::table))
        .filter(mandats::organisation_id.eq(organisation_id))
        .filter(mandats::expires_at.gt(now.micros()))
        .filter(autorisations::revoked_at.is_null())
        .filter(autorisations::demarche.eq_any(keys))
        .select((
            usagers::id,
            usagers::given_name,
            usagers::preferred_username,
            usagers::family_name,
            usagers::birthdate,
            autorisations::id,
            autorisations::demarche,
            mandats::id,
            mandats::expires_at,
            autorisations::created_at,
        ))
        .into_boxed();
    if let Some(u) = usager {
        q = q.filter(usagers::id.eq(u));
    }
    Ok(q.load::<AutRow>(c)?)
}

fn fold(s: &str) -> String {
    s.chars()
        .flat_map(char::to_lowercase)
        .map(|ch| match ch {
            'à' | 'â' | 'ä' | 'á' | 'ã' => 'a',
            'ç' => 'c',
            'é' | 'è' | 'ê' | 'ë' => 'e',
            'î' | 'ï' | 'í' => 'i',
            'ô' | 'ö' | 'ó' => 'o',
            'ù' | 'û' | 'ü' | 'ú' => 'u',
            'ÿ' => 'y',
            '-' | '\'' | '’' => ' ',
            other => other,
        })
        .collect()
}

/// Whether every word of `search` starts a word of the usager's names (case and
/// accents ignored).
fn matches(search: &str, names: &[&str]) -> bool {
    let words: Vec<String> = names.iter().flat_map(|n| fold(n).split_whitespace().map(str::to_owned).collect::<Vec<_>>()).collect();
    fold(search).split_whitespace().all(|w| words.iter().any(|n| n.starts_with(w)))
}

/// The usagers with at least one active autorisation in `organisation_id` for one of the
/// `allowed` démarches at `now`, most recent autorisation first; `search` keeps those
/// whose names start with each of its words.
pub fn candidates(db: &Db, by: &InOrganisation, now: Timestamp, search: Option<&str>) -> Result<Vec<Candidate>, StoreError> {
    let mut out = group(db.read(|c| active_rows(c, by.organisation().get(), None, by.allowed(), now))?);
    if let Some(s) = search.map(str::trim).filter(|s| !s.is_empty()) {
        out.retain(|c| matches(s, &[&c.given_name, &c.family_name, c.preferred_username.as_deref().unwrap_or("")]));
    }
    out.sort_by(|a, b| b.latest.cmp(&a.latest).then(a.usager_id.cmp(&b.usager_id)));
    Ok(out)
}

/// One usager as [`candidates`] lists them, if they have an active autorisation in the
/// organisation among its allowed démarches at `now`.
pub fn candidate(db: &Db, by: &InOrganisation, usager: UsagerId, now: Timestamp) -> Result<Option<Candidate>, StoreError> {
    Ok(group(db.read(|c| active_rows(c, by.organisation().get(), Some(usager.get()), by.allowed(), now))?).pop())
}

/// The usager's active autorisations in the organisation among its allowed démarches.
pub fn usager_autorisations(db: &Db, by: &InOrganisation, usager: UsagerId, now: Timestamp) -> Result<Vec<ActiveAutorisation>, StoreError> {
    Ok(candidate(db, by, usager, now)?.map(|c| c.autorisations).unwrap_or_default())
}

/// Rows to one candidate per usager, autorisations in the canonical démarche order.
fn group(rows: Vec<AutRow>) -> Vec<Candidate> {
    let mut out: Vec<Candidate> = Vec::new();
    for (usager_id, given, preferred, family, birthdate, aut_id, demarche, mandat_id, expires, created) in rows {
        let Some(d) = Demarche::from_key(&demarche) else { continue };
        let a = ActiveAutorisation { demarche: d, autorisation_id: aut_id, mandat_id, expires_at: Timestamp::from_micros(expires) };
        match out.iter_mut().find(|c| c.usager_id == usager_id) {
            Some(cand) => {
                cand.autorisations.push(a);
                cand.latest = cand.latest.max(Timestamp::from_micros(created));
            }
            None => out.push(Candidate {
                usager_id,
                given_name: given,
                family_name: family,
                preferred_username: preferred,
                birthdate,
                autorisations: vec![a],
                latest: Timestamp::from_micros(created),
            }),
        }
    }
    for c in &mut out {
        c.autorisations.sort_by_key(|a| Demarche::ALL.iter().position(|d| *d == a.demarche));
    }
    out
}

/// The usager's broker key (`sub`), for the id_token.
pub fn usager_sub(db: &Db, usager: UsagerId) -> Result<String, StoreError> {
    db.read(|c| {
        usagers::table
            .find(usager.get())
            .select(usagers::sub_hash)
            .first(c)
            .optional()?
            .ok_or_else(|| StoreError::NotFound("usager inconnu".into()))
    })
}

pub use crate::disclosure::{disclose, disclose_async, Disclosure};

/// Forgets the uses of access tokens that can no longer be presented: those recorded
/// before `before`, which the caller sets at least
/// [`crate::oidc_state::MAX_ACCESS_TOKEN_TTL_SECONDS`] in the past (a token is used after
/// it is issued and lives no longer than that). Returns how many rows went.
pub fn purge_token_uses(db: &Db, before: Timestamp) -> Result<usize, StoreError> {
    db.write(|c| Ok(diesel::delete(oidc_token_uses::table.filter(oidc_token_uses::used_at.lt(before.micros()))).execute(c)?))
}

#[cfg(test)]
mod tests {
    use super::matches;

    #[test]
    fn search_ignores_case_accents_and_matches_word_starts() {
        assert!(matches("hél", &["Hélène", "Dupont", ""]));
        assert!(matches("helene dup", &["Hélène", "Dupont", ""]));
        assert!(matches("jean pie", &["Jean Pierre", "Martin", ""]));
        assert!(matches("bourg", &["Anne", "Lefèvre", "Bourgeois"]));
        assert!(!matches("pont", &["Hélène", "Dupont", ""]));
        assert!(!matches("helene martin", &["Hélène", "Dupont", ""]));
    }
}
