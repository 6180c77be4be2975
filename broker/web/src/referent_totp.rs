//! TOTP cards and apps of an organisation's aidants, managed by the référent.
//!
//! Cards come from the imported stock: the référent associates one by its serial
//! number, then validates it with a code read on it (which learns the card's drift), or
//! dissociates it with a reason. An app is started (QR code and secret shown) and
//! confirmed with a code from the phone. Every route needs a fresh second factor; an
//! aidant of another organisation is "page introuvable".

use crate::attestation::qr_svg;
use crate::guard;
use crate::pages::{self, render_with, Header};
use crate::guard::{csrf_checked, field, parse_form};
use crate::referent::{member_of, not_found, require_referent, store_failure, Freshness, MemberRow, Referent};
use crate::AppState;
use actix_session::Session;
use actix_web::http::StatusCode;
use actix_web::{web, HttpResponse};
use askama::Template;
use broker_core::totp::{DeviceKind, APP_STEP, DIGITS};
use broker_core::Timestamp;
use broker_store::referent::Member;
use broker_store::second_factors::{self, Reason};
use broker_store::StoreError;

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/referent/aidants/{id}/carte", web::get().to(cards_page))
        .route("/referent/aidants/{id}/carte", web::post().to(associate))
        .route("/referent/aidants/{id}/carte/{device}/valider", web::post().to(validate))
        .route("/referent/aidants/{id}/carte/{device}/dissocier", web::post().to(dissociate))
        .route("/referent/aidants/{id}/application", web::get().to(app_page))
        .route("/referent/aidants/{id}/application", web::post().to(start_app))
        .route("/referent/aidants/{id}/application/{device}/confirmer", web::post().to(confirm_app));
}

#[derive(serde::Deserialize)]
pub struct Notice {
    ok: Option<String>,
}

fn notice_text(key: Option<&str>) -> Option<&'static str> {
    match key? {
        "associee" => Some("La carte est associée. Validez-la maintenant avec le code affiché sur la carte : tant qu'elle n'est pas validée, l'aidant ne peut pas s'en servir."),
        "validee" => Some("La carte est validée : l'aidant peut maintenant se connecter avec les codes qu'elle affiche."),
        "dissociee" => Some("La carte est dissociée : elle ne permet plus de se connecter. Elle pourra être associée de nouveau plus tard."),
        "demarree" => Some("Scannez le QR code avec l'application à code du téléphone de l'aidant, puis tapez le code qu'elle affiche pour l'activer."),
        "confirmee" => Some("L'application est activée : l'aidant peut maintenant se connecter avec les codes qu'elle affiche."),
        _ => None,
    }
}

fn since(micros: i64) -> String {
    Timestamp::from_micros(micros).french_date()
}

/// The référent, and the member of their organisation named in the path.
async fn enter(state: &web::Data<AppState>, session: &Session, raw_id: &str, page: &str) -> Result<(Referent, Member), HttpResponse> {
    let here = format!("/referent/aidants/{raw_id}/{page}");
    let r = require_referent(state, session, &here, Freshness::Fresh).await?;
    let m = member_of(state, &r, raw_id).await?;
    Ok((r, m))
}

/// Same as [`enter`] for a form: the CSRF token is checked before anything else is read.
async fn enter_form(state: &web::Data<AppState>, session: &Session, raw_id: &str, page: &str, form: &[(String, String)]) -> Result<(Referent, Member), HttpResponse> {
    let here = format!("/referent/aidants/{raw_id}/{page}");
    let r = require_referent(state, session, &here, Freshness::Fresh).await?;
    csrf_checked(session, form)?;
    let m = member_of(state, &r, raw_id).await?;
    Ok((r, m))
}

fn device_id(raw: &str) -> Option<i64> {
    raw.parse::<i64>().ok().filter(|v| *v > 0)
}

/// Runs a store call on the blocking pool: a user error is a message for the page,
/// anything else the server error response.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T, StoreError> + Send + 'static) -> Result<Result<T, String>, HttpResponse> {
    match web::block(f).await {
        Ok(Ok(v)) => Ok(Ok(v)),
        Ok(Err(e)) if e.is_user_error() => Ok(Err(e.to_string())),
        Ok(Err(e)) => Err(store_failure(&e)),
        Err(_) => Err(pages::server_error()),
    }
}

pub struct CardRow {
    pub id: i64,
    pub serial: String,
    pub confirmed: bool,
    pub since: String,
}

#[derive(Template)]
#[template(path = "referent_carte.html")]
struct CardsPage<'a> {
    header: Header,
    member: MemberRow,
    cards: Vec<CardRow>,
    serial: &'a str,
    notice: Option<&'static str>,
    error: Option<String>,
}

#[allow(clippy::too_many_arguments)]
async fn render_cards(state: &web::Data<AppState>, session: &Session, r: &Referent, m: &Member, status: StatusCode, notice: Option<&'static str>, error: Option<String>, serial: &str) -> HttpResponse {
    let st = state.clone();
    let (org, id) = (r.organisation_id(), m.id);
    let devices = match blocking(move || second_factors::devices(&st.db, org, id)).await {
        Ok(Ok(d)) => d,
        Ok(Err(_)) => return not_found(),
        Err(resp) => return resp,
    };
    let cards = devices
        .into_iter()
        .filter(|d| d.kind == DeviceKind::Card.key())
        .map(|d| CardRow { id: d.id, serial: d.card_serial.unwrap_or_default(), confirmed: d.confirmed, since: since(d.created_at) })
        .collect();
    let header = pages::header_for(state, session, r.who.aidant_id).await;
    render_with(status, &CardsPage { header, member: MemberRow::from(m), cards, serial, notice, error })
}

pub async fn cards_page(state: web::Data<AppState>, session: Session, path: web::Path<String>, q: web::Query<Notice>) -> HttpResponse {
    let (r, m) = match enter(&state, &session, &path, "carte").await {
        Ok(v) => v,
        Err(resp) => return resp,
    };
    render_cards(&state, &session, &r, &m, StatusCode::OK, notice_text(q.ok.as_deref()), None, "").await
}

pub async fn associate(state: web::Data<AppState>, session: Session, path: web::Path<String>, body: web::Bytes) -> HttpResponse {
    let form = parse_form(&body);
    let (r, m) = match enter_form(&state, &session, &path, "carte", &form).await {
        Ok(v) => v,
        Err(resp) => return resp,
    };
    let serial = field(&form, "serie").unwrap_or("").trim().to_owned();
    let st = state.clone();
    let (org, id, by, now, s) = (r.organisation_id(), m.id, r.who.aidant_id, state.clock.now(), serial.clone());
    match blocking(move || second_factors::associate_card(&st.db, org, id, &s, by, now)).await {
        Ok(Ok(_)) => guard::see_other(&format!("/referent/aidants/{id}/carte?ok=associee")),
        Ok(Err(msg)) => render_cards(&state, &session, &r, &m, StatusCode::UNPROCESSABLE_ENTITY, None, Some(msg), &serial).await,
        Err(resp) => resp,
    }
}

pub async fn validate(state: web::Data<AppState>, session: Session, path: web::Path<(String, String)>, body: web::Bytes) -> HttpResponse {
    let (raw_id, raw_device) = path.into_inner();
    let form = parse_form(&body);
    let (r, m) = match enter_form(&state, &session, &raw_id, "carte", &form).await {
        Ok(v) => v,
        Err(resp) => return resp,
    };
    let Some(device) = device_id(&raw_device) else { return not_found() };
    let code = field(&form, "code").unwrap_or("").to_owned();
    let st = state.clone();
    let (org, id, by, now) = (r.organisation_id(), m.id, r.who.aidant_id, state.clock.now());
    match blocking(move || second_factors::validate_card(&st.db, &st.sealer, org, id, device, &code, by, now)).await {
        Ok(Ok(_)) => guard::see_other(&format!("/referent/aidants/{id}/carte?ok=validee")),
        Ok(Err(msg)) => render_cards(&state, &session, &r, &m, StatusCode::UNPROCESSABLE_ENTITY, None, Some(msg), "").await,
        Err(resp) => resp,
    }
}

pub async fn dissociate(state: web::Data<AppState>, session: Session, path: web::Path<(String, String)>, body: web::Bytes) -> HttpResponse {
    let (raw_id, raw_device) = path.into_inner();
    let form = parse_form(&body);
    let (r, m) = match enter_form(&state, &session, &raw_id, "carte", &form).await {
        Ok(v) => v,
        Err(resp) => return resp,
    };
    let Some(device) = device_id(&raw_device) else { return not_found() };
    let reason = match Reason::parse(field(&form, "raison").unwrap_or(""), field(&form, "precision").unwrap_or("")) {
        Ok(reason) => reason,
        Err(e) => return render_cards(&state, &session, &r, &m, StatusCode::UNPROCESSABLE_ENTITY, None, Some(e.to_string()), "").await,
    };
    let st = state.clone();
    let (org, id, by, now) = (r.organisation_id(), m.id, r.who.aidant_id, state.clock.now());
    match blocking(move || second_factors::dissociate_card(&st.db, org, id, device, &reason, by, now)).await {
        Ok(Ok(())) => guard::see_other(&format!("/referent/aidants/{id}/carte?ok=dissociee")),
        Ok(Err(msg)) => render_cards(&state, &session, &r, &m, StatusCode::UNPROCESSABLE_ENTITY, None, Some(msg), "").await,
        Err(resp) => resp,
    }
}

pub struct PendingApp {
    pub id: i64,
    pub qr: String,
    /// The secret in groups of four characters, to type when the QR code cannot be scanned.
    pub secret: String,
}

#[derive(Template)]
#[template(path = "referent_application.html")]
struct AppPage {
    header: Header,
    member: MemberRow,
    /// Dates of the aidant's activated apps.
    apps: Vec<String>,
    pending: Option<PendingApp>,
    notice: Option<&'static str>,
    error: Option<String>,
}

fn grouped(secret: &str) -> String {
    secret.as_bytes().chunks(4).map(|c| String::from_utf8_lossy(c).into_owned()).collect::<Vec<_>>().join(" ")
}

async fn render_app(state: &web::Data<AppState>, session: &Session, r: &Referent, m: &Member, status: StatusCode, notice: Option<&'static str>, error: Option<String>) -> HttpResponse {
    let st = state.clone();
    let (org, id) = (r.organisation_id(), m.id);
    let loaded = blocking(move || {
        let devices = second_factors::devices(&st.db, org, id)?;
        let pending = second_factors::pending_app(&st.db, &st.sealer, org, id)?;
        Ok((devices, pending))
    })
    .await;
    let (devices, pending) = match loaded {
        Ok(Ok(v)) => v,
        Ok(Err(_)) => return not_found(),
        Err(resp) => return resp,
    };
    let apps = devices.into_iter().filter(|d| d.kind == DeviceKind::App.key() && d.confirmed).map(|d| since(d.created_at)).collect();
    let pending = match pending {
        Some((device, seed)) => {
            let uri = seed.otpauth_uri(APP_STEP, DIGITS, &m.email);
            let Some(qr) = qr_svg(&uri, "QR code à scanner avec l'application à code") else { return pages::server_error() };
            Some(PendingApp { id: device, qr, secret: grouped(&seed.base32()) })
        }
        None => None,
    };
    let header = pages::header_for(state, session, r.who.aidant_id).await;
    render_with(status, &AppPage { header, member: MemberRow::from(m), apps, pending, notice, error })
}

pub async fn app_page(state: web::Data<AppState>, session: Session, path: web::Path<String>, q: web::Query<Notice>) -> HttpResponse {
    let (r, m) = match enter(&state, &session, &path, "application").await {
        Ok(v) => v,
        Err(resp) => return resp,
    };
    render_app(&state, &session, &r, &m, StatusCode::OK, notice_text(q.ok.as_deref()), None).await
}

pub async fn start_app(state: web::Data<AppState>, session: Session, path: web::Path<String>, body: web::Bytes) -> HttpResponse {
    let form = parse_form(&body);
    let (r, m) = match enter_form(&state, &session, &path, "application", &form).await {
        Ok(v) => v,
        Err(resp) => return resp,
    };
    let st = state.clone();
    let (org, id, by, now) = (r.organisation_id(), m.id, r.who.aidant_id, state.clock.now());
    match blocking(move || second_factors::start_app(&st.db, &st.sealer, org, id, by, now)).await {
        Ok(Ok(_)) => guard::see_other(&format!("/referent/aidants/{id}/application?ok=demarree")),
        Ok(Err(msg)) => render_app(&state, &session, &r, &m, StatusCode::UNPROCESSABLE_ENTITY, None, Some(msg)).await,
        Err(resp) => resp,
    }
}

pub async fn confirm_app(state: web::Data<AppState>, session: Session, path: web::Path<(String, String)>, body: web::Bytes) -> HttpResponse {
    let (raw_id, raw_device) = path.into_inner();
    let form = parse_form(&body);
    let (r, m) = match enter_form(&state, &session, &raw_id, "application", &form).await {
        Ok(v) => v,
        Err(resp) => return resp,
    };
    let Some(device) = device_id(&raw_device) else { return not_found() };
    let code = field(&form, "code").unwrap_or("").to_owned();
    let st = state.clone();
    let (org, id, by, now) = (r.organisation_id(), m.id, r.who.aidant_id, state.clock.now());
    match blocking(move || second_factors::confirm_app(&st.db, &st.sealer, org, id, device, &code, by, now)).await {
        Ok(Ok(())) => guard::see_other(&format!("/referent/aidants/{id}/application?ok=confirmee")),
        Ok(Err(msg)) => render_app(&state, &session, &r, &m, StatusCode::UNPROCESSABLE_ENTITY, None, Some(msg)).await,
        Err(resp) => resp,
    }
}
