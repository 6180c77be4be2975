//! The aidant's own space: home, second factors (security keys and TOTP devices), and
//! the security-key ceremonies (sign-in, re-authentication, registration) as JSON
//! endpoints for the page script.

mod ceremonies;

pub use ceremonies::{
    assertion_finish, assertion_options, finish_registration, registration_finish, registration_options, start_registration, AssertionBody, KeyTarget,
    RegistrationBody, RegistrationStart,
};

use crate::guard::{self, SignedIn};
use crate::page_error::{blocking, blocking_keep, PageError};
use crate::pages::{self, render};
use crate::AppState;
use actix_session::Session;
use actix_web::{web, HttpResponse};
use askama::Template;
use broker_core::Timestamp;
use broker_store::{auth, webauthn as keys, StoreError};
use serde::Deserialize;

pub struct KeyView {
    pub id: i64,
    pub name: String,
    pub created: String,
    pub last_used: String,
}

pub struct TotpView {
    pub label: String,
    pub created: String,
}

pub struct StructureChoice {
    pub id: i64,
    pub name: String,
    pub current: bool,
}

#[derive(Template)]
#[template(path = "espace.html")]
struct EspacePage {
    header: pages::Header,
    structures: Vec<StructureChoice>,
    referent: bool,
    auditor: bool,
    notice: Option<&'static str>,
}

#[derive(Template)]
#[template(path = "securite.html")]
struct SecuritePage<'a> {
    header: pages::Header,
    csrf: String,
    keys: Vec<KeyView>,
    totp: Vec<TotpView>,
    notice: Option<&'a str>,
    error: Option<&'a str>,
}

pub async fn home(state: web::Data<AppState>, session: Session, q: web::Query<NoticeQuery>) -> Result<HttpResponse, PageError> {
    let who = guard::signed_in(&state, &session, "/espace")?;
    let st = state.clone();
    let (current, memberships, auditor) = blocking(move || {
        st.db.read(|c| {
            let current = auth::find_active_by_id(c, who.aidant_id)?.and_then(|a| a.current_organisation_id);
            Ok::<_, StoreError>((current, broker_store::referent::memberships_of(c, who.aidant_id)?, broker_store::audit::is_auditor(c, who.aidant_id)?))
        })
    })
    .await?;
    let referent = memberships.iter().any(|m| Some(m.organisation_id) == current && m.role == broker_store::referent::Role::Referent);
    let structures = memberships.into_iter().map(|m| StructureChoice { current: Some(m.organisation_id) == current, id: m.organisation_id, name: m.name }).collect();
    let notice = (q.ok.as_deref() == Some("structure")).then_some("Vous travaillez maintenant pour cette structure. Les mandats que vous créez et les usagers que vous voyez sont les siens.");
    let header = pages::header_for(&state, &session, who.aidant_id).await;
    Ok(render(&EspacePage { header, structures, referent, auditor, notice }))
}

#[derive(Deserialize)]
pub struct NoticeQuery {
    ok: Option<String>,
}

async fn security_page(state: &web::Data<AppState>, session: &Session, who: SignedIn, notice: Option<&str>, error: Option<&str>) -> Result<HttpResponse, PageError> {
    let st = state.clone();
    let (creds, devices) = blocking(move || -> Result<_, StoreError> {
        Ok((keys::list_credentials(&st.db, who.aidant_id)?, auth::totp_devices(&st.db, who.aidant_id)?))
    })
    .await?;
    let date = |t: i64| Timestamp::from_micros(t).french_date();
    let header = pages::header_for(state, session, who.aidant_id).await;
    Ok(render(&SecuritePage {
        header,
        csrf: guard::csrf_token(session),
        keys: creds
            .into_iter()
            .map(|c| KeyView { id: c.id, name: c.name, created: date(c.created_at), last_used: c.last_used_at.map(date).unwrap_or_else(|| "jamais".into()) })
            .collect(),
        totp: devices
            .into_iter()
            .filter(|d| d.confirmed)
            .map(|d| TotpView {
                label: match d.card_serial {
                    Some(serial) => format!("Carte à code n° {serial}"),
                    None => "Application d'authentification sur téléphone".into(),
                },
                created: date(d.created_at),
            })
            .collect(),
        notice,
        error,
    }))
}

pub async fn security(state: web::Data<AppState>, session: Session, q: web::Query<NoticeQuery>) -> Result<HttpResponse, PageError> {
    let who = guard::signed_in(&state, &session, "/espace/securite")?;
    let notice = match q.ok.as_deref() {
        Some("ajout") => Some("La clé de sécurité a été ajoutée."),
        Some("retrait") => Some("La clé de sécurité a été retirée."),
        _ => None,
    };
    security_page(&state, &session, who, notice, None).await
}

#[derive(Deserialize)]
pub struct RemoveForm {
    csrf: String,
}

pub async fn remove_key(state: web::Data<AppState>, session: Session, path: web::Path<i64>, form: web::Form<RemoveForm>) -> Result<HttpResponse, PageError> {
    if !guard::csrf_ok(&session, &form.csrf) {
        return Err(PageError::CsrfRefused);
    }
    let who = guard::fresh(&state, &session, "/espace/securite")?;
    let st = state.clone();
    let id = path.into_inner();
    match blocking_keep(move || keys::remove_credential(&st.db, who.aidant_id, id, st.clock.now())).await? {
        Ok(()) => Ok(guard::see_other("/espace/securite?ok=retrait")),
        Err(e) if e.is_user_error() => security_page(&state, &session, who, None, Some(&e.to_string())).await,
        Err(e) => Err(PageError::store("removing a security key failed", e)),
    }
}
