//! The choices form: démarches and duration, then off to FranceConnect.

use super::{aidant_organisation, back_to_form, keep, load, Draft, ARGENT_WARNING, RECAP};
use crate::franceconnect::store_pending;
use crate::guard;
use crate::page_error::PageError;
use crate::pages::{self, render_with, Header};
use crate::AppState;
use actix_session::Session;
use actix_web::http::StatusCode;
use actix_web::{web, HttpResponse};
use askama::Template;
use broker_core::mandat::Duree;
use broker_core::Demarche;
use serde::Deserialize;

pub struct ChoiceView {
    pub key: &'static str,
    pub title: &'static str,
    pub description: &'static str,
    pub checked: bool,
    pub argent: bool,
}

pub struct DureeView {
    pub days: i64,
    pub label: &'static str,
    pub checked: bool,
}

#[derive(Template)]
#[template(path = "mandat_form.html")]
struct FormPage {
    header: Header,
    csrf: String,
    error: Option<(String, String)>,
    demarches: Vec<ChoiceView>,
    durees: Vec<DureeView>,
    argent_warning: &'static str,
    argent_checked: bool,
    fc_available: bool,
}

async fn form_page(state: &web::Data<AppState>, session: &Session, aidant_id: i64, allowed: &[Demarche], d: &Draft, error: Option<(String, String)>, status: StatusCode) -> HttpResponse {
    let header = pages::header_for(state, session, aidant_id).await;
    let chosen = d.demarches();
    let demarches = allowed
        .iter()
        .map(|&x| ChoiceView { key: x.key(), title: x.title(), description: x.description(), checked: chosen.contains(&x), argent: x == Demarche::Argent })
        .collect();
    let durees = Duree::ALL.into_iter().map(|x| DureeView { days: x.days(), label: x.short_label(), checked: x.days() == d.duree_jours }).collect();
    render_with(
        status,
        &FormPage {
            header,
            csrf: guard::csrf_token(session),
            error,
            demarches,
            durees,
            argent_warning: ARGENT_WARNING,
            argent_checked: chosen.contains(&Demarche::Argent),
            fc_available: state.franceconnect.is_some(),
        },
    )
}

#[derive(Deserialize)]
pub struct FormQuery {
    state: Option<String>,
}

/// The choices form. Coming back from FranceConnect's logout (with `state`) once the
/// usager is identified leads to the summary.
pub async fn form(state: web::Data<AppState>, session: Session, q: web::Query<FormQuery>) -> Result<HttpResponse, PageError> {
    if crate::usager_space::returning_from_logout(&session) {
        return Ok(guard::see_other("/espace-usager"));
    }
    let (who, org_id, allowed) = aidant_organisation(&state, &session).await?;
    let mut d = load(&session).filter(|d| d.organisation_id == org_id).unwrap_or_default();
    if q.state.is_some() && d.usager.is_some() {
        return Ok(guard::see_other(RECAP));
    }
    let error = d.erreur.take();
    if error.is_some() {
        keep(&session, &d).map_err(PageError::server)?;
    }
    Ok(form_page(&state, &session, who.aidant_id, &allowed, &d, error, StatusCode::OK).await)
}

/// The choices, then off to FranceConnect.
pub async fn submit(state: web::Data<AppState>, session: Session, body: web::Form<Vec<(String, String)>>) -> Result<HttpResponse, PageError> {
    let field = |name: &str| body.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str());
    guard::check_csrf(&session, &body)?;
    let (who, org_id, allowed) = aidant_organisation(&state, &session).await?;
    let mut chosen: Vec<Demarche> = Vec::new();
    let mut unknown = false;
    for (_, v) in body.iter().filter(|(k, _)| k == "demarche") {
        match Demarche::from_key(v).filter(|d| allowed.contains(d)) {
            Some(d) if !chosen.contains(&d) => chosen.push(d),
            Some(_) => {}
            None => unknown = true,
        }
    }
    chosen.sort();
    let duree = field("duree").and_then(|v| v.parse::<i64>().ok()).and_then(Duree::from_days);
    let d = Draft {
        organisation_id: org_id,
        demarches: chosen.iter().map(|x| x.key().to_owned()).collect(),
        duree_jours: duree.map(Duree::days).unwrap_or(0),
        usager: None,
        erreur: None,
    };
    if let Some(p) = problem(unknown, &chosen, duree) {
        let error = Some(("Le formulaire est incomplet".into(), p.into()));
        return Ok(form_page(&state, &session, who.aidant_id, &allowed, &d, error, StatusCode::UNPROCESSABLE_ENTITY).await);
    }
    let Some(fc) = state.franceconnect.clone() else {
        return Err(PageError::page(
            StatusCode::SERVICE_UNAVAILABLE,
            "FranceConnect n'est pas disponible",
            "L'identification des usagers avec FranceConnect n'est pas configurée sur ce service : aucun mandat ne peut être établi pour le moment.",
        ));
    };
    keep(&session, &d).map_err(PageError::server)?;
    match fc.begin().await {
        Ok((url, pending)) => {
            store_pending(&session, &pending).map_err(PageError::server)?;
            Ok(guard::see_other(url.as_str()))
        }
        Err(e) => back_to_form(&session, d, &e.to_string(), e.title(), &e.message()),
    }
}

/// What is wrong with the choices, if anything.
fn problem(unknown: bool, chosen: &[Demarche], duree: Option<Duree>) -> Option<&'static str> {
    if unknown {
        Some("Une des démarches choisies n'est pas ouverte à votre structure. Choisissez parmi la liste.")
    } else if chosen.is_empty() {
        Some("Choisissez au moins une démarche.")
    } else if duree.is_none() {
        Some("Choisissez la durée du mandat.")
    } else {
        None
    }
}

