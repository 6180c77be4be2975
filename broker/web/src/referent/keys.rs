//! The security keys of an organisation's aidants, managed by the référent.

use super::{member_of, referent_and_member, referent_and_member_form, require_referent, run_store, Freshness, MemberRow, Notice, Referent, NOT_FOUND};
use crate::espace::{KeyTarget, RegistrationBody, RegistrationStart};
use crate::guard::{self, parse_form};
use crate::page_error::{blocking, PageError};
use crate::pages::{self, render_with, Header};
use crate::AppState;
use actix_session::Session;
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse, ResponseError};
use askama::Template;
use broker_core::Timestamp;
use broker_store::referent::Member;
use broker_store::StoreError;

pub struct KeyRow {
    pub id: i64,
    pub name: String,
    pub created: String,
    pub last_used: String,
}

#[derive(Template)]
#[template(path = "referent_cles.html")]
struct KeysPage<'a> {
    header: Header,
    member: MemberRow,
    keys: Vec<KeyRow>,
    notice: Option<&'a str>,
    error: Option<&'a str>,
}

async fn render_keys(state: &web::Data<AppState>, session: &Session, r: &Referent, m: &Member, notice: Option<&str>, error: Option<&str>) -> Result<HttpResponse, PageError> {
    let st = state.clone();
    let id = m.id;
    let creds = blocking(move || broker_store::webauthn::list_credentials(&st.db, id)).await?;
    let date = |t: i64| Timestamp::from_micros(t).french_date();
    let keys = creds
        .into_iter()
        .map(|k| KeyRow { id: k.id, name: k.name, created: date(k.created_at), last_used: k.last_used_at.map(date).unwrap_or_else(|| "jamais".into()) })
        .collect();
    let header = pages::header_for(state, session, r.who.aidant_id).await;
    let status = if error.is_some() { StatusCode::UNPROCESSABLE_ENTITY } else { StatusCode::OK };
    Ok(render_with(status, &KeysPage { header, member: MemberRow::from(m), keys, notice, error }))
}

pub async fn keys_page(state: web::Data<AppState>, session: Session, path: web::Path<String>, q: web::Query<Notice>) -> Result<HttpResponse, PageError> {
    let here = format!("/referent/aidants/{}/cles", path.as_str());
    let (r, m) = referent_and_member(&state, &session, &here, &path, Freshness::Any).await?;
    let notice = match q.ok.as_deref() {
        Some("ajout") => Some("La clé de sécurité a été ajoutée."),
        Some("retrait") => Some("La clé de sécurité a été retirée : elle ne permet plus de se connecter."),
        _ => None,
    };
    render_keys(&state, &session, &r, &m, notice, None).await
}

/// The référent and the aidant of a key ceremony, as JSON errors for the page script.
async fn key_target(state: &web::Data<AppState>, session: &Session, raw: &str) -> Result<KeyTarget, HttpResponse> {
    let page = format!("/referent/aidants/{raw}/cles");
    let json = |status: StatusCode, msg: &str| HttpResponse::build(status).insert_header(("Cache-Control", "no-store")).json(serde_json::json!({ "error": msg }));
    let r = match require_referent(state, session, &page, Freshness::Any).await {
        Ok(r) => r,
        Err(e) if e.status_code() == StatusCode::SEE_OTHER => return Err(json(StatusCode::UNAUTHORIZED, "Votre session a expiré. Reconnectez-vous.")),
        Err(_) => return Err(json(StatusCode::FORBIDDEN, "Cette action est réservée aux référents de la structure.")),
    };
    let m = match member_of(state, &r, raw).await {
        Ok(m) => m,
        Err(_) => return Err(json(StatusCode::NOT_FOUND, "Cet aidant ne fait pas partie de votre structure.")),
    };
    Ok(KeyTarget { aidant_id: m.id, referent: Some((r.organisation_id(), r.who.aidant_id)), page })
}

pub async fn keys_options(state: web::Data<AppState>, session: Session, req: HttpRequest, path: web::Path<String>, body: web::Json<RegistrationStart>) -> HttpResponse {
    match key_target(&state, &session, &path).await {
        Ok(t) => crate::espace::start_registration(state, session, req, body.into_inner(), t).await,
        Err(resp) => resp,
    }
}

pub async fn keys_finish(state: web::Data<AppState>, session: Session, req: HttpRequest, path: web::Path<String>, body: web::Json<RegistrationBody>) -> HttpResponse {
    match key_target(&state, &session, &path).await {
        Ok(t) => crate::espace::finish_registration(state, session, req, body.into_inner(), t).await,
        Err(resp) => resp,
    }
}

pub async fn keys_remove(state: web::Data<AppState>, session: Session, path: web::Path<(String, i64)>, body: web::Bytes) -> Result<HttpResponse, PageError> {
    let (raw, key) = path.into_inner();
    let here = format!("/referent/aidants/{raw}/cles");
    let form = parse_form(&body);
    let (r, m) = referent_and_member_form(&state, &session, &here, &raw, &form).await?;
    let st = state.clone();
    let (org, by, now, id) = (r.organisation_id(), r.who.aidant_id, state.clock.now(), m.id);
    match run_store(move || broker_store::webauthn::remove_credential_for(&st.db, org, id, key, now, by)).await? {
        Ok(()) => Ok(guard::see_other(&format!("{here}?ok=retrait"))),
        Err(StoreError::NotFound(_)) => Err(NOT_FOUND),
        Err(e) => render_keys(&state, &session, &r, &m, None, Some(&e.to_string())).await,
    }
}
