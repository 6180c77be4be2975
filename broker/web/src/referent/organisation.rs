//! The organisation's allowed démarches, and the aidant's choice of current organisation.

use super::{referent_form, require_referent, run_store, Freshness};
use crate::guard::{self, field, parse_form};
use crate::page_error::{blocking_keep, PageError};
use crate::pages::{self, render, render_with, Header};
use crate::AppState;
use actix_session::Session;
use actix_web::http::StatusCode;
use actix_web::{web, HttpResponse};
use askama::Template;
use broker_core::Demarche;
use broker_store::referent;
use broker_store::StoreError;

pub struct DemarcheChoice {
    pub key: &'static str,
    pub title: &'static str,
    pub description: &'static str,
    pub checked: bool,
}

#[derive(Template)]
#[template(path = "referent_demarches.html")]
struct DemarchesPage<'a> {
    header: Header,
    organisation: &'a str,
    choices: Vec<DemarcheChoice>,
    error: Option<&'a str>,
}

fn choices(allowed: &[Demarche]) -> Vec<DemarcheChoice> {
    Demarche::ALL
        .iter()
        .map(|d| DemarcheChoice { key: d.key(), title: d.title(), description: d.description(), checked: allowed.contains(d) })
        .collect()
}

pub async fn demarches_form(state: web::Data<AppState>, session: Session) -> Result<HttpResponse, PageError> {
    let r = require_referent(&state, &session, "/referent/demarches", Freshness::Any).await?;
    let header = pages::header_for(&state, &session, r.who.aidant_id).await;
    Ok(render(&DemarchesPage { header, organisation: &r.organisation.name, choices: choices(&r.organisation.allowed()), error: None }))
}

pub async fn demarches_submit(state: web::Data<AppState>, session: Session, body: web::Bytes) -> Result<HttpResponse, PageError> {
    let form = parse_form(&body);
    let r = referent_form(&state, &session, "/referent/demarches", &form).await?;
    let mut wanted = Vec::new();
    for (k, v) in &form {
        if k == "demarche" {
            match Demarche::from_key(v) {
                Some(d) => wanted.push(d),
                None => return Err(PageError::page(StatusCode::BAD_REQUEST, "Démarche inconnue", "Rechargez la page et recommencez.")),
            }
        }
    }
    let st = state.clone();
    let (org, by) = (r.organisation_id(), r.who.aidant_id);
    let w2 = wanted.clone();
    match run_store(move || referent::set_allowed_demarches(&st.db, org, &w2, by)).await? {
        Ok(_) => Ok(guard::see_other("/referent?ok=demarches")),
        Err(e) => {
            let header = pages::header_for(&state, &session, r.who.aidant_id).await;
            let msg = e.to_string();
            Ok(render_with(
                StatusCode::UNPROCESSABLE_ENTITY,
                &DemarchesPage { header, organisation: &r.organisation.name, choices: choices(&wanted), error: Some(&msg) },
            ))
        }
    }
}

/// The aidant picks their current organisation among theirs (journaled).
pub async fn switch_organisation(state: web::Data<AppState>, session: Session, body: web::Bytes) -> Result<HttpResponse, PageError> {
    let who = guard::signed_in(&state, &session, "/espace")?;
    let form = parse_form(&body);
    guard::check_csrf(&session, &form)?;
    let Some(org) = field(&form, "structure").and_then(|v| v.parse::<i64>().ok()) else {
        return Err(PageError::page(StatusCode::BAD_REQUEST, "Structure inconnue", "Choisissez une de vos structures dans la liste."));
    };
    let st = state.clone();
    match blocking_keep(move || referent::switch_organisation(&st.db, who.aidant_id, org)).await? {
        Ok(()) => Ok(guard::see_other("/espace?ok=structure")),
        Err(StoreError::NotFound(_)) => Err(PageError::page(
            StatusCode::NOT_FOUND,
            "Structure inconnue",
            "Vous ne faites pas partie de cette structure. Choisissez une de vos structures dans la liste.",
        )),
        Err(e) => Err(PageError::store("referent", e)),
    }
}
