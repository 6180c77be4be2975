//! The list of the organisation's usagers, with a search on their names.

use super::organisation_of;
use crate::guard;
use crate::page_error::{blocking, PageError};
use crate::pages::{self, render, Header};
use crate::AppState;
use actix_session::Session;
use actix_web::{web, HttpResponse};
use askama::Template;
use broker_core::mandat::{MandatFacts, Status};
use broker_core::Demarche;
use broker_store::mandat_changes::{self, UsagerName};
use broker_store::{mandats, StoreError};
use serde::Deserialize;
use std::collections::BTreeMap;

#[derive(Deserialize)]
pub struct ListQuery {
    q: Option<String>,
}

pub struct UsagerRow {
    pub id: i64,
    pub name: String,
    pub demarches: Vec<&'static str>,
    pub soonest_expiry: String,
    pub status: &'static str,
    pub active: bool,
}

#[derive(Template)]
#[template(path = "usagers.html")]
struct ListPage {
    header: Header,
    q: String,
    rows: Vec<UsagerRow>,
}

/// A usager with the organisation's mandats shown in lists.
type Listed = (UsagerName, Vec<(MandatFacts, Status)>);

fn normalise(s: &str) -> String {
    s.to_lowercase()
        .chars()
        .map(|c| match c {
            'à' | 'â' | 'ä' => 'a',
            'é' | 'è' | 'ê' | 'ë' => 'e',
            'î' | 'ï' => 'i',
            'ô' | 'ö' => 'o',
            'ù' | 'û' | 'ü' => 'u',
            'ç' => 'c',
            c => c,
        })
        .collect()
}

/// The list's row for one usager, with the key it is sorted by.
fn row(n: UsagerName, ms: Vec<(MandatFacts, Status)>, now: broker_core::Timestamp) -> (String, UsagerRow) {
    let active: Vec<&MandatFacts> = ms.iter().filter(|(_, s)| *s == Status::Active).map(|(m, _)| m).collect();
    let mut demarches: Vec<Demarche> = active.iter().flat_map(|m| m.active_demarches(now)).collect();
    demarches.sort();
    demarches.dedup();
    let soonest = active.iter().map(|m| m.expires_at).min();
    let status = if !active.is_empty() {
        Status::Active
    } else {
        ms.iter().max_by_key(|(m, _)| m.ended_at(now).map(|t| t.micros()).unwrap_or(0)).map(|(_, s)| *s).unwrap_or(Status::Expired)
    };
    (
        normalise(&format!("{} {}", n.family_name, n.given_name)),
        UsagerRow {
            id: n.id,
            name: format!("{} {}", n.given_name, n.family_name),
            demarches: demarches.iter().map(|d| d.title()).collect(),
            soonest_expiry: soonest.map(|t| t.french_date()).unwrap_or_default(),
            status: status.label(),
            active: status == Status::Active,
        },
    )
}

pub async fn list(state: web::Data<AppState>, session: Session, query: web::Query<ListQuery>) -> Result<HttpResponse, PageError> {
    let who = guard::signed_in(&state, &session, "/usagers")?;
    let q = query.into_inner().q.unwrap_or_default().trim().chars().take(100).collect::<String>();
    let now = state.clock.now();
    let st = state.clone();
    let loaded = blocking(move || -> Result<Vec<Listed>, StoreError> {
        let Some(org) = organisation_of(&st, who.aidant_id)? else { return Ok(Vec::new()) };
        let mut by_usager: BTreeMap<i64, Vec<(MandatFacts, Status)>> = BTreeMap::new();
        for (m, s) in mandats::list_for_organisation(&st.db, org, now)? {
            by_usager.entry(m.usager_id).or_default().push((m, s));
        }
        let ids: Vec<i64> = by_usager.keys().copied().collect();
        let names = st.db.read(|c| mandat_changes::usager_names(c, &ids))?;
        Ok(names.into_iter().filter_map(|n| by_usager.remove(&n.id).map(|ms| (n, ms))).collect())
    })
    .await?;
    let needle = normalise(&q);
    let mut rows: Vec<(String, UsagerRow)> = loaded
        .into_iter()
        .filter(|(n, _)| needle.is_empty() || normalise(&format!("{} {}", n.given_name, n.family_name)).contains(&needle))
        .map(|(n, ms)| row(n, ms, now))
        .collect();
    rows.sort_by(|a, b| a.0.cmp(&b.0).then(a.1.id.cmp(&b.1.id)));
    let header = pages::header_for(&state, &session, who.aidant_id).await;
    Ok(render(&ListPage { header, q, rows: rows.into_iter().map(|r| r.1).collect() }))
}
