//! The security-key ceremonies as JSON endpoints for the page script: sign-in,
//! re-authentication and registration.

use crate::guard::{self, SignedIn, K_CEREMONY};
use crate::signin::client_ip;
use crate::throttle::{self, Attempt};
use crate::AppState;
use actix_session::Session;
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use broker_core::journal::{Action, Entry};
use broker_core::secret::{constant_time_eq, random_bytes};
use broker_store::{auth, webauthn as keys, StoreError};
use serde::Deserialize;
use serde_json::{json, Value};
use std::time::Duration;

const CEREMONY_TTL: Duration = Duration::from_secs(300);
const KEY_FAILURE: &str = "La clé de sécurité n'a pas été reconnue. Réessayez, ou utilisez votre e-mail et votre code.";

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
        let action = if reauth { Action::Reauthentication } else { Action::AidantLogin };
        let e = Entry::new(action).aidant(aidant.id).in_organisation(aidant.current_organisation_id).detail("method", "webauthn");
        broker_store::auth::record_signin(&st.db, aidant.id, e, now)?;
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
