//! One usager's mandats, autorisations and history.

use broker_core::capability::{OrganisationId, UsagerId};
use super::{date_time, french_birthdate, usager_of};
use crate::guard;
use crate::page_error::{blocking, PageError};
use crate::pages::{self, render, Header};
use crate::AppState;
use actix_session::Session;
use actix_web::{web, HttpResponse};
use askama::Template;
use broker_core::journal::Action;
use broker_core::mandat::{MandatFacts, Status};
use broker_core::{Demarche, Timestamp};
use broker_store::mandat_changes::{self, HistoryLine};
use broker_store::{admin, attestations, StoreError};
use std::collections::BTreeMap;

pub struct AutorisationView {
    pub id: i64,
    pub title: &'static str,
    pub status: &'static str,
    pub active: bool,
    pub revoked_on: String,
    /// Active, but for a démarche the organisation no longer allows: cannot be used.
    pub blocked: bool,
}

pub struct MandatView {
    pub id: i64,
    pub created: String,
    pub expires: String,
    pub status: &'static str,
    pub active: bool,
    pub autorisations: Vec<AutorisationView>,
}

pub struct HistoryView {
    pub when: String,
    pub what: String,
    pub by: String,
}

#[derive(Template)]
#[template(path = "usager.html")]
struct DetailPage {
    header: Header,
    usager_id: i64,
    name: String,
    birthdate: String,
    mandats: Vec<MandatView>,
    history: Vec<HistoryView>,
}

fn history_text(l: &HistoryLine) -> String {
    let details: serde_json::Value = serde_json::from_str(&l.details).unwrap_or_default();
    let action = Action::from_key(&l.action);
    let mut s = match action {
        Some(Action::AttestationCreated) if details.get("kind").and_then(|k| k.as_str()) == Some("revocation") => {
            "Attestation de révocation créée".to_owned()
        }
        Some(Action::AutorisationRevoked) if details.get("reason").and_then(|k| k.as_str()) == Some("superseded") => {
            "Autorisation remplacée par un nouveau mandat".to_owned()
        }
        Some(a) => a.label().to_owned(),
        None => l.action.clone(),
    };
    if let Some(d) = l.demarche.as_deref().and_then(Demarche::from_key) {
        s.push_str(&format!(" : {}", d.title()));
    }
    if let Some(m) = l.mandat_id {
        s.push_str(&format!(" (mandat n° {m})"));
    }
    s
}

fn mandat_view(m: &MandatFacts, allowed: &[Demarche], now: Timestamp) -> MandatView {
    let status = m.status(now);
    MandatView {
        id: m.id,
        created: m.created_at.french_date(),
        expires: m.expires_at.french_date(),
        status: status.label(),
        active: status == Status::Active,
        autorisations: m
            .autorisations
            .iter()
            .map(|a| {
                let s = a.status(m.expires_at, now);
                AutorisationView {
                    id: a.id,
                    title: a.demarche.title(),
                    status: s.label(),
                    active: s == Status::Active,
                    revoked_on: a.revoked_at.filter(|_| s == Status::Revoked).map(|t| t.french_date()).unwrap_or_default(),
                    blocked: s == Status::Active && !allowed.contains(&a.demarche),
                }
            })
            .collect(),
    }
}

/// The history lines, the names of the aidants they mention and the allowed démarches.
type Loaded = (Vec<HistoryLine>, BTreeMap<i64, String>, Vec<Demarche>);

pub async fn detail(state: web::Data<AppState>, session: Session, path: web::Path<String>) -> Result<HttpResponse, PageError> {
    let raw = path.into_inner();
    let who = guard::signed_in(&state, &session, &format!("/usagers/{raw}"))?;
    let ctx = usager_of(&state, who, &raw).await?;
    let usager_id = ctx.usager.id;
    let st = state.clone();
    let org = ctx.organisation_id;
    let (lines, names, allowed) = blocking(move || -> Result<Loaded, StoreError> {
        st.db.read_snapshot(|c| {
            let allowed = admin::find_organisation(c, org)?.allowed();
            let lines = mandat_changes::history(c, OrganisationId(org), UsagerId(usager_id))?;
            let mut names = BTreeMap::new();
            for a in lines.iter().filter_map(|l| l.aidant_id) {
                if let std::collections::btree_map::Entry::Vacant(v) = names.entry(a) {
                    if let Some((f, l)) = attestations::aidant_name(c, a)? {
                        v.insert(format!("{f} {l}"));
                    }
                }
            }
            Ok((lines, names, allowed))
        })
    })
    .await?;
    let now = state.clock.now();
    let mut mandats: Vec<MandatView> = ctx.mandats.iter().map(|m| mandat_view(m, &allowed, now)).collect();
    mandats.reverse();
    let history = lines
        .iter()
        .rev()
        .map(|l| HistoryView {
            when: date_time(l.at),
            what: history_text(l),
            by: l.aidant_id.and_then(|a| names.get(&a).cloned()).unwrap_or_default(),
        })
        .collect();
    let header = pages::header_for(&state, &session, who.aidant_id).await;
    Ok(render(&DetailPage {
        header,
        usager_id,
        name: ctx.name(),
        birthdate: french_birthdate(&ctx.usager.birthdate),
        mandats,
        history,
    }))
}
