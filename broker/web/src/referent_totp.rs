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
use crate::guard::{field, parse_form};
use crate::page_error::PageError;
use crate::referent::{referent_and_member, referent_and_member_form, run_store, Freshness, MemberRow, Referent, NOT_FOUND};
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

/// The page of the member's devices of `kind`.
fn page(kind: DeviceKind) -> &'static str {
    match kind {
        DeviceKind::Card => "carte",
        DeviceKind::App => "application",
    }
}

/// The référent, and the member of their organisation named in the path.
async fn enter(state: &web::Data<AppState>, session: &Session, raw_id: &str, kind: DeviceKind) -> Result<(Referent, Member), PageError> {
    let here = format!("/referent/aidants/{raw_id}/{}", page(kind));
    referent_and_member(state, session, &here, raw_id, Freshness::Fresh).await
}

/// Same as [`enter`] for a form: the CSRF token is checked before the member is read.
async fn enter_form(state: &web::Data<AppState>, session: &Session, raw_id: &str, kind: DeviceKind, form: &[(String, String)]) -> Result<(Referent, Member), PageError> {
    let here = format!("/referent/aidants/{raw_id}/{}", page(kind));
    referent_and_member_form(state, session, &here, raw_id, form).await
}

/// Same as [`enter_form`] for a device of the member, named in the path after them.
async fn enter_device(state: &web::Data<AppState>, session: &Session, (raw_id, raw_device): (String, String), kind: DeviceKind, form: &[(String, String)]) -> Result<(Referent, Member, i64), PageError> {
    let (r, m) = enter_form(state, session, &raw_id, kind, form).await?;
    let device = raw_device.parse::<i64>().ok().filter(|v| *v > 0).ok_or(NOT_FOUND)?;
    Ok((r, m, device))
}

/// Who changes the second factors of which member, and when.
#[derive(Clone, Copy)]
struct Change {
    org: i64,
    id: i64,
    by: i64,
    now: Timestamp,
}

/// Runs the store change `f`: on success, a redirect to the `kind` page with the notice
/// `ok`; when refused, that page again with the message.
#[allow(clippy::too_many_arguments)]
async fn apply<T: Send + 'static>(
    state: &web::Data<AppState>,
    session: &Session,
    r: &Referent,
    m: &Member,
    kind: DeviceKind,
    ok: &str,
    serial: &str,
    f: impl FnOnce(&AppState, Change) -> Result<T, StoreError> + Send + 'static,
) -> Result<HttpResponse, PageError> {
    let st = state.clone();
    let c = Change { org: r.organisation_id(), id: m.id, by: r.who.aidant_id, now: state.clock.now() };
    match run_store(move || f(&st, c)).await? {
        Ok(_) => Ok(guard::see_other(&format!("/referent/aidants/{}/{}?ok={ok}", c.id, page(kind)))),
        Err(e) => refused(state, session, r, m, kind, e.to_string(), serial).await,
    }
}

/// The `kind` page again, with the message of a refused change.
async fn refused(state: &web::Data<AppState>, session: &Session, r: &Referent, m: &Member, kind: DeviceKind, msg: String, serial: &str) -> Result<HttpResponse, PageError> {
    match kind {
        DeviceKind::Card => render_cards(state, session, r, m, StatusCode::UNPROCESSABLE_ENTITY, None, Some(msg), serial).await,
        DeviceKind::App => render_app(state, session, r, m, StatusCode::UNPROCESSABLE_ENTITY, None, Some(msg)).await,
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
async fn render_cards(state: &web::Data<AppState>, session: &Session, r: &Referent, m: &Member, status: StatusCode, notice: Option<&'static str>, error: Option<String>, serial: &str) -> Result<HttpResponse, PageError> {
    let st = state.clone();
    let (org, id) = (r.organisation_id(), m.id);
    let devices = run_store(move || second_factors::devices(&st.db, org, id)).await?.map_err(|_| NOT_FOUND)?;
    let cards = devices
        .into_iter()
        .filter(|d| d.kind == DeviceKind::Card.key())
        .map(|d| CardRow { id: d.id, serial: d.card_serial.unwrap_or_default(), confirmed: d.confirmed, since: since(d.created_at) })
        .collect();
    let header = pages::header_for(state, session, r.who.aidant_id).await;
    Ok(render_with(status, &CardsPage { header, member: MemberRow::from(m), cards, serial, notice, error }))
}

/// The member's `kind` page, with the notice named in the query.
async fn show(state: web::Data<AppState>, session: Session, path: web::Path<String>, q: web::Query<Notice>, kind: DeviceKind) -> Result<HttpResponse, PageError> {
    let (r, m) = enter(&state, &session, &path, kind).await?;
    let notice = notice_text(q.ok.as_deref());
    match kind {
        DeviceKind::Card => render_cards(&state, &session, &r, &m, StatusCode::OK, notice, None, "").await,
        DeviceKind::App => render_app(&state, &session, &r, &m, StatusCode::OK, notice, None).await,
    }
}

pub async fn cards_page(state: web::Data<AppState>, session: Session, path: web::Path<String>, q: web::Query<Notice>) -> Result<HttpResponse, PageError> {
    show(state, session, path, q, DeviceKind::Card).await
}

pub async fn app_page(state: web::Data<AppState>, session: Session, path: web::Path<String>, q: web::Query<Notice>) -> Result<HttpResponse, PageError> {
    show(state, session, path, q, DeviceKind::App).await
}

pub async fn associate(state: web::Data<AppState>, session: Session, path: web::Path<String>, body: web::Bytes) -> Result<HttpResponse, PageError> {
    let form = parse_form(&body);
    let (r, m) = enter_form(&state, &session, &path, DeviceKind::Card, &form).await?;
    let serial = field(&form, "serie").unwrap_or("").trim().to_owned();
    let s = serial.clone();
    apply(&state, &session, &r, &m, DeviceKind::Card, "associee", &serial, move |st, c| second_factors::associate_card(&st.db, c.org, c.id, &s, c.by, c.now)).await
}

/// Validates a card, or confirms an app, with a code read on it.
async fn confirm_code(state: web::Data<AppState>, session: Session, path: web::Path<(String, String)>, body: web::Bytes, kind: DeviceKind) -> Result<HttpResponse, PageError> {
    let form = parse_form(&body);
    let (r, m, device) = enter_device(&state, &session, path.into_inner(), kind, &form).await?;
    let code = field(&form, "code").unwrap_or("").to_owned();
    match kind {
        DeviceKind::Card => {
            apply(&state, &session, &r, &m, kind, "validee", "", move |st, c| second_factors::validate_card(&st.db, &st.sealer, c.org, c.id, device, &code, c.by, c.now)).await
        }
        DeviceKind::App => {
            apply(&state, &session, &r, &m, kind, "confirmee", "", move |st, c| second_factors::confirm_app(&st.db, &st.sealer, c.org, c.id, device, &code, c.by, c.now)).await
        }
    }
}

pub async fn validate(state: web::Data<AppState>, session: Session, path: web::Path<(String, String)>, body: web::Bytes) -> Result<HttpResponse, PageError> {
    confirm_code(state, session, path, body, DeviceKind::Card).await
}

pub async fn dissociate(state: web::Data<AppState>, session: Session, path: web::Path<(String, String)>, body: web::Bytes) -> Result<HttpResponse, PageError> {
    let form = parse_form(&body);
    let (r, m, device) = enter_device(&state, &session, path.into_inner(), DeviceKind::Card, &form).await?;
    let reason = match Reason::parse(field(&form, "raison").unwrap_or(""), field(&form, "precision").unwrap_or("")) {
        Ok(reason) => reason,
        Err(e) => return refused(&state, &session, &r, &m, DeviceKind::Card, e.to_string(), "").await,
    };
    apply(&state, &session, &r, &m, DeviceKind::Card, "dissociee", "", move |st, c| second_factors::dissociate_card(&st.db, c.org, c.id, device, &reason, c.by, c.now)).await
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

async fn render_app(state: &web::Data<AppState>, session: &Session, r: &Referent, m: &Member, status: StatusCode, notice: Option<&'static str>, error: Option<String>) -> Result<HttpResponse, PageError> {
    let st = state.clone();
    let (org, id) = (r.organisation_id(), m.id);
    let loaded = run_store(move || {
        let devices = second_factors::devices(&st.db, org, id)?;
        let pending = second_factors::pending_app(&st.db, &st.sealer, org, id)?;
        Ok((devices, pending))
    })
    .await?;
    let (devices, pending) = loaded.map_err(|_| NOT_FOUND)?;
    let apps = devices.into_iter().filter(|d| d.kind == DeviceKind::App.key() && d.confirmed).map(|d| since(d.created_at)).collect();
    let pending = match pending {
        Some((device, seed)) => {
            let uri = seed.otpauth_uri(APP_STEP, DIGITS, &m.email);
            let qr = qr_svg(&uri, "QR code à scanner avec l'application à code").ok_or_else(|| PageError::server("TOTP app QR code"))?;
            Some(PendingApp { id: device, qr, secret: grouped(&seed.base32()) })
        }
        None => None,
    };
    let header = pages::header_for(state, session, r.who.aidant_id).await;
    Ok(render_with(status, &AppPage { header, member: MemberRow::from(m), apps, pending, notice, error }))
}

pub async fn start_app(state: web::Data<AppState>, session: Session, path: web::Path<String>, body: web::Bytes) -> Result<HttpResponse, PageError> {
    let form = parse_form(&body);
    let (r, m) = enter_form(&state, &session, &path, DeviceKind::App, &form).await?;
    apply(&state, &session, &r, &m, DeviceKind::App, "demarree", "", move |st, c| second_factors::start_app(&st.db, &st.sealer, c.org, c.id, c.by, c.now)).await
}

pub async fn confirm_app(state: web::Data<AppState>, session: Session, path: web::Path<(String, String)>, body: web::Bytes) -> Result<HttpResponse, PageError> {
    confirm_code(state, session, path, body, DeviceKind::App).await
}
