//! The aidant's own space: home, second factors (security keys and TOTP devices), and
//! the security-key ceremonies (sign-in, re-authentication, registration) as JSON
//! endpoints for the page script.

use crate::guard::{self, SignedIn, K_CEREMONY};
use crate::pages::{self, render};
use crate::signin::client_ip;
use crate::throttle::{self, Attempt};
use crate::AppState;
use actix_session::Session;
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use askama::Template;
use broker_core::journal::{Action, Entry};
use broker_core::secret::{constant_time_eq, random_bytes};
use broker_core::Timestamp;
use broker_store::{auth, journal, webauthn as keys, StoreError};
use serde::Deserialize;
use serde_json::{json, Value};
use std::time::Duration;

const CEREMONY_TTL: Duration = Duration::from_secs(300);
const KEY_FAILURE: &str = "La clé de sécurité n'a pas été reconnue. Réessayez, ou utilisez votre e-mail et votre code.";

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

pub async fn home(state: web::Data<AppState>, session: Session, q: web::Query<NoticeQuery>) -> HttpResponse {
    let who = match guard::require_signed_in(&state, &session, "/espace") {
        Ok(w) => w,
        Err(r) => return r,
    };
    let st = state.clone();
    let found = web::block(move || {
        st.db.read(|c| {
            let current = auth::find_active_by_id(c, who.aidant_id)?.and_then(|a| a.current_organisation_id);
            Ok::<_, StoreError>((current, broker_store::referent::memberships_of(c, who.aidant_id)?, broker_store::audit::is_auditor(c, who.aidant_id)?))
        })
    })
    .await;
    let Ok(Ok((current, memberships, auditor))) = found else { return pages::server_error() };
    let referent = memberships.iter().any(|m| Some(m.organisation_id) == current && m.role == broker_store::referent::Role::Referent);
    let structures = memberships.into_iter().map(|m| StructureChoice { current: Some(m.organisation_id) == current, id: m.organisation_id, name: m.name }).collect();
    let notice = (q.ok.as_deref() == Some("structure")).then_some("Vous travaillez maintenant pour cette structure. Les mandats que vous créez et les usagers que vous voyez sont les siens.");
    let header = pages::header_for(&state, &session, who.aidant_id).await;
    render(&EspacePage { header, structures, referent, auditor, notice })
}

#[derive(Deserialize)]
pub struct NoticeQuery {
    ok: Option<String>,
}

async fn security_page(state: &web::Data<AppState>, session: &Session, who: SignedIn, notice: Option<&str>, error: Option<&str>) -> HttpResponse {
    let st = state.clone();
    let lists = web::block(move || -> Result<_, StoreError> {
        Ok((keys::list_credentials(&st.db, who.aidant_id)?, auth::totp_devices(&st.db, who.aidant_id)?))
    })
    .await;
    let Ok(Ok((creds, devices))) = lists else { return pages::server_error() };
    let date = |t: i64| Timestamp::from_micros(t).french_date();
    let header = pages::header_for(state, session, who.aidant_id).await;
    render(&SecuritePage {
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
    })
}

pub async fn security(state: web::Data<AppState>, session: Session, q: web::Query<NoticeQuery>) -> HttpResponse {
    let who = match guard::require_signed_in(&state, &session, "/espace/securite") {
        Ok(w) => w,
        Err(r) => return r,
    };
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

pub async fn remove_key(state: web::Data<AppState>, session: Session, path: web::Path<i64>, form: web::Form<RemoveForm>) -> HttpResponse {
    if !guard::csrf_ok(&session, &form.csrf) {
        return guard::csrf_refused();
    }
    let who = match guard::require_fresh(&state, &session, "/espace/securite") {
        Ok(w) => w,
        Err(r) => return r,
    };
    let st = state.clone();
    let id = path.into_inner();
    let r = web::block(move || keys::remove_credential(&st.db, who.aidant_id, id, st.clock.now())).await;
    match r {
        Ok(Ok(())) => guard::see_other("/espace/securite?ok=retrait"),
        Ok(Err(e)) if e.is_user_error() => security_page(&state, &session, who, None, Some(&e.to_string())).await,
        Ok(Err(e)) => {
            tracing::error!(error = %e, "removing a security key failed");
            pages::server_error()
        }
        Err(_) => pages::server_error(),
    }
}

fn json_error(status: StatusCode, message: &str) -> HttpResponse {
    HttpResponse::build(status).insert_header(("Cache-Control", "no-store")).json(json!({ "error": message }))
}

fn header_csrf_ok(req: &HttpRequest, session: &Session) -> bool {
    req.headers().get("x-csrf-token").and_then(|v| v.to_str().ok()).is_some_and(|t| guard::csrf_ok(session, t))
}

/// Stores a ceremony's server-side state; the session keeps only a random handle.
fn keep_ceremony(state: &AppState, session: &Session, kind: &str, payload: Value) -> Result<(), StoreError> {
    let handle = hex::encode(random_bytes::<16>());
    let body = serde_json::to_vec(&json!({ "kind": kind, "payload": payload })).expect("json");
    state.cache.put(&format!("ceremony:{handle}"), &body, CEREMONY_TTL)?;
    session.insert(K_CEREMONY, handle).map_err(|e| StoreError::Unavailable(e.to_string()))
}

/// Takes the ceremony back, once, if it is of the expected kind.
fn take_ceremony(state: &AppState, session: &Session, kind: &str) -> Result<Option<Value>, StoreError> {
    let Some(handle) = session.remove_as::<String>(K_CEREMONY).and_then(Result::ok) else { return Ok(None) };
    let raw = state.cache.take(&format!("ceremony:{handle}"))?;
    let Some(v) = raw.and_then(|r| serde_json::from_slice::<Value>(&r).ok()) else { return Ok(None) };
    if v["kind"].as_str().is_some_and(|k| constant_time_eq(k.as_bytes(), kind.as_bytes())) {
        Ok(Some(v["payload"].clone()))
    } else {
        Ok(None)
    }
}

/// Options for `navigator.credentials.get` (sign-in, or re-authentication).
pub async fn assertion_options(state: web::Data<AppState>, session: Session, req: HttpRequest) -> HttpResponse {
    if !header_csrf_ok(&req, &session) {
        return json_error(StatusCode::FORBIDDEN, "La page a expiré. Rechargez-la et recommencez.");
    }
    let kind = if req.path().starts_with("/reauthentification") { "reauth" } else { "signin" };
    if kind == "reauth" && SignedIn::from_session(&session, state.clock.now()).is_none() {
        return json_error(StatusCode::UNAUTHORIZED, "Votre session a expiré. Reconnectez-vous.");
    }
    match state.passkeys.start_signin() {
        Ok((options, ceremony)) => match keep_ceremony(&state, &session, kind, Value::String(ceremony)) {
            Ok(()) => HttpResponse::Ok().insert_header(("Cache-Control", "no-store")).json(options),
            Err(e) => {
                tracing::error!(error = %e, "storing a WebAuthn ceremony failed");
                json_error(StatusCode::SERVICE_UNAVAILABLE, "Le service est momentanément indisponible. Réessayez.")
            }
        },
        Err(e) => {
            tracing::error!(error = %e.detail(), "starting a WebAuthn sign-in failed");
            json_error(StatusCode::INTERNAL_SERVER_ERROR, KEY_FAILURE)
        }
    }
}

#[derive(Deserialize)]
pub struct AssertionBody {
    credential: Value,
    suite: Option<String>,
}

/// Checks an assertion: signs the aidant in, or refreshes their second factor.
pub async fn assertion_finish(state: web::Data<AppState>, session: Session, req: HttpRequest, body: web::Json<AssertionBody>) -> HttpResponse {
    if !header_csrf_ok(&req, &session) {
        return json_error(StatusCode::FORBIDDEN, "La page a expiré. Rechargez-la et recommencez.");
    }
    let reauth = req.path().starts_with("/reauthentification");
    let kind = if reauth { "reauth" } else { "signin" };
    let current = SignedIn::from_session(&session, state.clock.now());
    if reauth && current.is_none() {
        return json_error(StatusCode::UNAUTHORIZED, "Votre session a expiré. Reconnectez-vous.");
    }
    let ceremony = match take_ceremony(&state, &session, kind) {
        Ok(Some(Value::String(c))) => c,
        Ok(_) => return json_error(StatusCode::BAD_REQUEST, KEY_FAILURE),
        Err(_) => return json_error(StatusCode::SERVICE_UNAVAILABLE, "Le service est momentanément indisponible. Réessayez."),
    };
    let st = state.clone();
    let ip = client_ip(&state, &req);
    let body = body.into_inner();
    let credential = body.credential;
    let outcome = web::block(move || -> Result<Option<i64>, StoreError> {
        let now = st.clock.now();
        let attempt = Attempt::Key { ip: ip.clone() };
        if throttle::is_locked(&st, &attempt)? {
            return Ok(None);
        }
        let checked = (|| {
            let (aidant_id, credential_id) = st.passkeys.identify(&credential).ok()?;
            if keys::find_owner(&st.db, &credential_id).ok()?? != aidant_id {
                return None;
            }
            let aidant = st.db.read(|c| auth::find_active_by_id(c, aidant_id)).ok()??;
            if current.is_some_and(|w| w.aidant_id != aidant.id) {
                return None;
            }
            let stored: Vec<String> = keys::passkeys_of(&st.db, aidant.id).ok()?.into_iter().map(|(_, p)| p).collect();
            let done = st.passkeys.finish_signin(&ceremony, &credential, &stored).ok()?;
            Some((aidant, done))
        })();
        let Some((aidant, done)) = checked else {
            throttle::record_failure(&st, &attempt)?;
            return Ok(None);
        };
        keys::mark_used(&st.db, &done.credential_id, done.updated_passkey_json.as_deref(), now)?;
        st.db.write(|c| {
            let action = if reauth { Action::Reauthentication } else { Action::AidantLogin };
            let e = Entry::new(action).aidant(aidant.id).in_organisation(aidant.current_organisation_id).detail("method", "webauthn");
            journal::append(c, &[e])
        })?;
        Ok(Some(aidant.id))
    })
    .await;
    let now = state.clock.now();
    match outcome {
        Ok(Ok(Some(aidant_id))) => {
            let done = if reauth { guard::mark_fresh(&session, now, guard::AMR_KEY) } else { guard::sign_in(&session, aidant_id, now, guard::AMR_KEY) };
            match done {
                Ok(()) => {
                    let mut res = HttpResponse::Ok().json(json!({ "redirect": guard::safe_next(body.suite.as_deref()) }));
                    if !reauth {
                        let _ = res.add_cookie(&throttle::recognised_browser_cookie(&state, aidant_id));
                    }
                    res
                }
                Err(_) => json_error(StatusCode::SERVICE_UNAVAILABLE, "Le service est momentanément indisponible. Réessayez."),
            }
        }
        Ok(Ok(None)) => json_error(StatusCode::UNAUTHORIZED, KEY_FAILURE),
        Ok(Err(e)) => {
            tracing::error!(error = %e, "WebAuthn sign-in failed");
            json_error(StatusCode::SERVICE_UNAVAILABLE, "Le service est momentanément indisponible. Réessayez.")
        }
        Err(_) => json_error(StatusCode::SERVICE_UNAVAILABLE, "Le service est momentanément indisponible. Réessayez."),
    }
}

#[derive(Deserialize)]
pub struct RegistrationStart {
    pub name: String,
}

/// Whose key is being registered, and by whom.
#[derive(Debug, Clone)]
pub struct KeyTarget {
    /// The aidant who touches the key.
    pub aidant_id: i64,
    /// (organisation, référent) when a référent enrols the key of one of its aidants.
    pub referent: Option<(i64, i64)>,
    /// The page to come back to, after re-authentication or once the key is added.
    pub page: String,
}

/// Options for `navigator.credentials.create`, for a signed-in aidant with a fresh
/// second factor.
pub async fn registration_options(state: web::Data<AppState>, session: Session, req: HttpRequest, body: web::Json<RegistrationStart>) -> HttpResponse {
    let Some(who) = SignedIn::from_session(&session, state.clock.now()) else {
        return json_error(StatusCode::UNAUTHORIZED, "Votre session a expiré. Reconnectez-vous.");
    };
    let target = KeyTarget { aidant_id: who.aidant_id, referent: None, page: "/espace/securite".into() };
    start_registration(state, session, req, body.into_inner(), target).await
}

/// Starts the registration of a key for `target`; the caller has checked who may.
pub async fn start_registration(state: web::Data<AppState>, session: Session, req: HttpRequest, body: RegistrationStart, target: KeyTarget) -> HttpResponse {
    if !header_csrf_ok(&req, &session) {
        return json_error(StatusCode::FORBIDDEN, "La page a expiré. Rechargez-la et recommencez.");
    }
    let who = match SignedIn::from_session(&session, state.clock.now()) {
        Some(w) => w,
        None => return json_error(StatusCode::UNAUTHORIZED, "Votre session a expiré. Reconnectez-vous."),
    };
    if !who.is_fresh(state.clock.now()) {
        let mut u = url::form_urlencoded::Serializer::new(String::new());
        u.append_pair("suite", &target.page);
        return HttpResponse::Forbidden().json(json!({
            "error": "Pour ajouter une clé, confirmez d'abord votre identité.",
            "redirect": format!("/reauthentification?{}", u.finish()),
        }));
    }
    let name = match broker_core::validate::label("nom de la clé", &body.name, 60) {
        Ok(n) => n,
        Err(e) => return json_error(StatusCode::BAD_REQUEST, &e.0),
    };
    let st = state.clone();
    let aidant_id = target.aidant_id;
    let started = web::block(move || -> Result<_, StoreError> {
        let aidant = st.db.read(|c| auth::find_active_by_id(c, aidant_id))?.ok_or_else(|| StoreError::NotFound("aidant".into()))?;
        let exclude: Vec<String> = keys::passkeys_of(&st.db, aidant.id)?.into_iter().map(|(id, _)| id).collect();
        st.passkeys
            .start_registration(aidant.id, &aidant.email, &format!("{} {}", aidant.first_name, aidant.last_name), &exclude)
            .map_err(|e| StoreError::Invalid(e.detail().to_owned()))
    })
    .await;
    match started {
        Ok(Ok((options, ceremony))) => match keep_ceremony(&state, &session, "register", json!({ "state": ceremony, "name": name, "aidant": aidant_id })) {
            Ok(()) => HttpResponse::Ok().insert_header(("Cache-Control", "no-store")).json(options),
            Err(_) => json_error(StatusCode::SERVICE_UNAVAILABLE, "Le service est momentanément indisponible. Réessayez."),
        },
        _ => json_error(StatusCode::INTERNAL_SERVER_ERROR, "L'ajout de la clé n'a pas pu commencer. Réessayez."),
    }
}

#[derive(Deserialize)]
pub struct RegistrationBody {
    pub credential: Value,
}

pub async fn registration_finish(state: web::Data<AppState>, session: Session, req: HttpRequest, body: web::Json<RegistrationBody>) -> HttpResponse {
    let Some(who) = SignedIn::from_session(&session, state.clock.now()) else {
        return json_error(StatusCode::UNAUTHORIZED, "Votre session a expiré. Reconnectez-vous.");
    };
    let target = KeyTarget { aidant_id: who.aidant_id, referent: None, page: "/espace/securite".into() };
    finish_registration(state, session, req, body.into_inner(), target).await
}

/// Finishes the registration started for the same `target`.
pub async fn finish_registration(state: web::Data<AppState>, session: Session, req: HttpRequest, body: RegistrationBody, target: KeyTarget) -> HttpResponse {
    if !header_csrf_ok(&req, &session) {
        return json_error(StatusCode::FORBIDDEN, "La page a expiré. Rechargez-la et recommencez.");
    }
    let now = state.clock.now();
    match SignedIn::from_session(&session, now) {
        Some(w) if w.is_fresh(now) => {}
        _ => return json_error(StatusCode::UNAUTHORIZED, "Votre session a expiré. Reconnectez-vous."),
    };
    let ceremony = match take_ceremony(&state, &session, "register") {
        Ok(Some(v)) if v["aidant"].as_i64() == Some(target.aidant_id) => v,
        _ => return json_error(StatusCode::BAD_REQUEST, "L'ajout de la clé a expiré. Recommencez."),
    };
    let st = state.clone();
    let credential = body.credential;
    let t = target.clone();
    let r = web::block(move || -> Result<Result<i64, String>, StoreError> {
        let state_json = ceremony["state"].as_str().unwrap_or_default();
        let name = ceremony["name"].as_str().unwrap_or_default();
        match st.passkeys.finish_registration(state_json, &credential) {
            Ok(c) => {
                let now = st.clock.now();
                let added = match t.referent {
                    None => keys::add_credential(&st.db, t.aidant_id, &c.credential_id, &c.passkey_json, name, now),
                    Some((org, by)) => keys::add_credential_for(&st.db, org, t.aidant_id, &c.credential_id, &c.passkey_json, name, now, by),
                };
                match added {
                    Ok(id) => Ok(Ok(id)),
                    Err(e) if e.is_user_error() => Ok(Err(e.to_string())),
                    Err(e) => Err(e),
                }
            }
            Err(e) => {
                tracing::warn!(error = %e.detail(), "security key registration refused");
                Ok(Err(e.to_string()))
            }
        }
    })
    .await;
    match r {
        Ok(Ok(Ok(_))) => HttpResponse::Ok().json(json!({ "redirect": format!("{}?ok=ajout", target.page) })),
        Ok(Ok(Err(msg))) => json_error(StatusCode::BAD_REQUEST, &msg),
        _ => json_error(StatusCode::SERVICE_UNAVAILABLE, "Le service est momentanément indisponible. Réessayez."),
    }
}
