//! The usager's own space: after identifying with FranceConnect (the broker as relying
//! party), a usager sees their mandats in every organisation and every use made of them,
//! and can revoke an autorisation or a whole mandat themselves.
//!
//! The session holds the usager's broker id for [`USAGER_MINUTES`] at most, apart from
//! any aidant signed in on the same browser. FranceConnect answers on the broker's one
//! registered callback; [`owns_callback`] tells the mandat journey's callback to hand the
//! answer over.

use crate::franceconnect::{callback_error, FcError, Pending};
use crate::guard;
use crate::page_error::{blocking, blocking_keep, PageError};
use crate::pages::{self, render, Header};
use crate::AppState;
use actix_session::Session;
use actix_web::http::StatusCode;
use actix_web::{web, HttpResponse};
use askama::Template;
use broker_core::attestation::is_fingerprint;
use broker_core::capability::{AutorisationId, MandatId, UsagerId};
use broker_core::identite::usager_key;
use broker_core::mandat::Status;
use broker_core::secret::random_bytes;
use broker_core::Timestamp;
use broker_store::{lifecycle, mandats, usager_space, StoreError};
use serde::Deserialize;

const HOME: &str = "/espace-usager";
const K_USAGER: &str = "usager_space.usager";
const K_USAGER_AT: &str = "usager_space.at";
const K_PENDING: &str = "usager_space.fc";
/// Set while FranceConnect's logout runs, so that its return lands here.
const K_RETURNING: &str = "usager_space.returning";
/// The usager's visit lasts at most this long after identification.
pub const USAGER_MINUTES: i64 = 30;

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route(HOME, web::get().to(home))
        .route("/espace-usager/connexion", web::post().to(begin))
        .route("/espace-usager/quitter", web::post().to(leave))
        .route("/espace-usager/avis", web::post().to(set_notices))
        .route("/espace-usager/autorisations/{id}/revoquer", web::post().to(revoke_autorisation))
        .route("/espace-usager/mandats/{id}/revoquer", web::post().to(revoke_mandat))
        .route("/espace-usager/revocations/{fp}", web::get().to(revocation));
}

/// The usager identified in this session, if the visit has not expired.
fn usager_of(state: &AppState, session: &Session) -> Option<i64> {
    let id = session.get::<i64>(K_USAGER).ok().flatten()?;
    let at = Timestamp::from_micros(session.get::<i64>(K_USAGER_AT).ok().flatten()?);
    if state.clock.now() >= at.plus_seconds(USAGER_MINUTES * 60) {
        forget(session);
        return None;
    }
    Some(id)
}

fn forget(session: &Session) {
    session.remove(K_USAGER);
    session.remove(K_USAGER_AT);
}

/// Whether FranceConnect's answer with `state` belongs to a usager-space request of this
/// session (the pending request stays in place for [`callback`]).
pub fn owns_callback(session: &Session, state: Option<&str>) -> bool {
    let Some(s) = state else { return false };
    session.get::<Pending>(K_PENDING).ok().flatten().is_some_and(|p| crate::franceconnect::matching(Some(p), s).is_some())
}

/// Whether FranceConnect's logout is coming back from a usager-space identification;
/// clears the mark.
pub fn returning_from_logout(session: &Session) -> bool {
    session.remove_as::<bool>(K_RETURNING).and_then(Result::ok).unwrap_or(false)
}

pub struct AutorisationView {
    pub id: i64,
    pub title: &'static str,
    pub status: &'static str,
    pub active: bool,
}

pub struct MandatView {
    pub id: i64,
    pub organisation: String,
    pub created: String,
    pub expires: String,
    pub status: &'static str,
    pub active: bool,
    pub autorisations: Vec<AutorisationView>,
}

pub struct UseView {
    pub when: String,
    pub organisation: String,
    pub aidant: String,
    pub demarche: &'static str,
    pub service: String,
}

#[derive(Template)]
#[template(path = "espace_usager.html")]
struct SpacePage {
    header: Header,
    csrf: String,
    identified: bool,
    fc_available: bool,
    mandats: Vec<MandatView>,
    uses: Vec<UseView>,
    notice: Option<String>,
    error: Option<(String, String)>,
    /// The usager receives the notices of use (`None`: nothing to set, no mandat).
    use_notices: Option<bool>,
    /// The notices setting was just changed.
    notices_saved: bool,
}

#[derive(Deserialize)]
pub struct HomeQuery {
    revocation: Option<String>,
    erreur: Option<String>,
    avis: Option<String>,
}

fn error_text(key: &str) -> (String, String) {
    match key {
        "annule" => ("Identification annulée".into(), "Vous avez annulé l'identification sur FranceConnect. Vous pouvez recommencer quand vous voulez.".into()),
        "niveau" => (
            "Identification refusée".into(),
            "Le compte utilisé sur FranceConnect n'offre pas un niveau de sécurité suffisant. Choisissez un autre compte, par exemple celui des impôts ou de l'Assurance maladie.".into(),
        ),
        "session" => (
            "Identification non aboutie".into(),
            "La réponse de FranceConnect ne correspond à aucune demande faite depuis ce navigateur. Recommencez depuis cette page, dans un seul onglet.".into(),
        ),
        _ => ("Identification non aboutie".into(), "L'identification avec FranceConnect n'a pas abouti. Réessayez dans quelques instants.".into()),
    }
}

fn date_time(t: Timestamp) -> String {
    t.datetime().format("%d/%m/%Y à %H:%M").to_string()
}

pub async fn home(state: web::Data<AppState>, session: Session, q: web::Query<HomeQuery>) -> Result<HttpResponse, PageError> {
    let csrf = guard::csrf_token(&session);
    let header = Header::anonymous_with_csrf(&session);
    let error = q.erreur.as_deref().map(error_text);
    let Some(usager) = usager_of(&state, &session) else {
        return Ok(render(&SpacePage {
            header,
            csrf,
            identified: false,
            fc_available: state.franceconnect.is_some(),
            mandats: Vec::new(),
            uses: Vec::new(),
            notice: None,
            error,
            use_notices: None,
            notices_saved: false,
        }));
    };
    let st = state.clone();
    let (ms, uses, wanted) = blocking(move || {
        st.db.read_snapshot(|c| {
            Ok::<_, StoreError>((usager_space::mandats_of(c, usager)?, usager_space::uses_of(c, usager)?, lifecycle::use_notices(c, usager)?))
        })
    })
    .await?;
    let use_notices = (usager != 0 && !ms.is_empty()).then_some(wanted);
    let now = state.clock.now();
    let mandats = ms
        .iter()
        .map(|m| {
            let status = m.facts.status(now);
            MandatView {
                id: m.facts.id,
                organisation: m.organisation.clone(),
                created: m.facts.created_at.french_date(),
                expires: m.facts.expires_at.french_date(),
                status: status.label(),
                active: status == Status::Active,
                autorisations: m
                    .facts
                    .autorisations
                    .iter()
                    .map(|a| {
                        let s = a.status(m.facts.expires_at, now);
                        AutorisationView { id: a.id, title: a.demarche.title(), status: s.label(), active: s == Status::Active }
                    })
                    .collect(),
            }
        })
        .collect();
    let uses = uses
        .into_iter()
        .map(|u| UseView {
            when: date_time(u.at),
            organisation: u.organisation,
            aidant: u.aidant,
            demarche: u.demarche.map(|d| d.title()).unwrap_or("-"),
            service: u.service,
        })
        .collect();
    let notice = q.revocation.as_deref().filter(|fp| is_fingerprint(fp)).map(|fp| fp.to_owned());
    let notices_saved = q.avis.is_some();
    Ok(render(&SpacePage { header, csrf, identified: true, fc_available: state.franceconnect.is_some(), mandats, uses, notice, error, use_notices, notices_saved }))
}

/// Turns the e-mail notices of use on (`avis=oui`) or off (`avis=non`), journaled.
pub async fn set_notices(state: web::Data<AppState>, session: Session, body: web::Bytes) -> Result<HttpResponse, PageError> {
    let form = guard::parse_form(&body);
    guard::check_csrf(&session, &form)?;
    let Some(usager) = usager_of(&state, &session).filter(|u| *u != 0) else { return Ok(guard::see_other(HOME)) };
    let on = match guard::field(&form, "avis") {
        Some("oui") => true,
        Some("non") => false,
        _ => return Err(PageError::page(StatusCode::BAD_REQUEST, "Choix non reconnu", "Choisissez de recevoir ou non les avis, puis enregistrez.")),
    };
    let st = state.clone();
    let now = state.clock.now();
    blocking(move || st.db.write(|c| lifecycle::set_use_notices(c, usager, on, now))).await?;
    Ok(guard::see_other(&format!("{HOME}?avis=enregistre#avis")))
}

/// Sends the usager to FranceConnect.
pub async fn begin(state: web::Data<AppState>, session: Session, body: web::Bytes) -> Result<HttpResponse, PageError> {
    guard::check_csrf(&session, &guard::parse_form(&body))?;
    let Some(fc) = state.franceconnect.clone() else {
        return Err(PageError::page(StatusCode::SERVICE_UNAVAILABLE, "FranceConnect n'est pas disponible", "L'identification avec FranceConnect n'est pas possible pour le moment. Réessayez plus tard."));
    };
    match fc.begin().await {
        Ok((url, pending)) => {
            session.insert(K_PENDING, &pending).map_err(PageError::server)?;
            Ok(guard::see_other(url.as_str()))
        }
        Err(e) => {
            tracing::warn!(error = %e, "usager space: FranceConnect unavailable");
            Ok(guard::see_other(&format!("{HOME}?erreur=indisponible")))
        }
    }
}

/// FranceConnect's answer for a usager-space request (see [`owns_callback`]).
pub async fn callback(state: web::Data<AppState>, session: Session, code: Option<&str>, fc_state: &str, error: Option<(&str, Option<&str>)>) -> Result<HttpResponse, PageError> {
    let pending = session.remove_as::<Pending>(K_PENDING).and_then(Result::ok);
    let Some(pending) = crate::franceconnect::matching(pending, fc_state) else {
        return Err(PageError::Redirect(format!("{HOME}?erreur=session")));
    };
    let Some(fc) = state.franceconnect.clone() else { return Err(PageError::Redirect(HOME.to_owned())) };
    if let Some((e, d)) = error {
        let key = if callback_error(e, d) == FcError::Cancelled { "annule" } else { "refus" };
        return Err(PageError::Redirect(format!("{HOME}?erreur={key}")));
    }
    let Some(code) = code.filter(|c| !c.is_empty()) else { return Err(PageError::Redirect(format!("{HOME}?erreur=refus"))) };
    let got = match fc.finish(code, &pending.nonce).await {
        Ok(g) => g,
        Err(e) => {
            tracing::warn!(error = %e, "usager space: FranceConnect identification failed");
            let key = if matches!(e, FcError::AcrTooLow(_)) { "niveau" } else { "refus" };
            return Err(PageError::Redirect(format!("{HOME}?erreur={key}")));
        }
    };
    let key = usager_key(&state.usager_salt, &got.fc_sub);
    let st = state.clone();
    let found = blocking(move || st.db.read(|c| mandats::find_usager_by_key(c, &key))).await?;
    session.renew();
    forget(&session);
    // Someone with no mandat at all sees an empty space: nothing tells whether a person is
    // known to the service, and nothing of anyone else is ever shown.
    let id = found.unwrap_or(0);
    session.insert(K_USAGER, id).map_err(PageError::server)?;
    session.insert(K_USAGER_AT, state.clock.now().micros()).map_err(PageError::server)?;
    tracing::info!("usager identified for their space");
    let logout_state = data_encoding::BASE64URL_NOPAD.encode(&random_bytes::<32>());
    match fc.logout_url(&got.id_token, &logout_state).await {
        Ok(url) => {
            let _ = session.insert(K_RETURNING, true);
            Ok(guard::see_other(url.as_str()))
        }
        Err(_) => Ok(guard::see_other(HOME)),
    }
}

pub async fn leave(session: Session, body: web::Bytes) -> Result<HttpResponse, PageError> {
    guard::check_csrf(&session, &guard::parse_form(&body))?;
    forget(&session);
    Ok(guard::see_other(HOME))
}

async fn revoke(state: web::Data<AppState>, session: Session, body: web::Bytes, target: Result<i64, i64>) -> Result<HttpResponse, PageError> {
    guard::check_csrf(&session, &guard::parse_form(&body))?;
    let Some(usager) = usager_of(&state, &session) else { return Err(PageError::Redirect(HOME.to_owned())) };
    let st = state.clone();
    let now = state.clock.now();
    let done = blocking_keep(move || match target {
        Ok(aut) => usager_space::revoke_autorisation(&st.db, UsagerId(usager), AutorisationId(aut), now),
        Err(mandat) => usager_space::revoke_mandat(&st.db, UsagerId(usager), MandatId(mandat), now),
    })
    .await?;
    match done {
        Ok(r) => Ok(guard::see_other(&format!("{HOME}?revocation={}", r.fingerprint))),
        Err(StoreError::NotFound(_)) => Err(NOT_FOUND),
        Err(StoreError::Conflict(m)) => Err(PageError::page(
            StatusCode::CONFLICT,
            "Rien à révoquer",
            format!("{}. Revenez à votre espace pour voir l'état de vos mandats.", pages::capitalise(&m)),
        )),
        Err(e) => Err(PageError::store("usager space: revocation failed", e)),
    }
}

const NOT_FOUND: PageError = PageError::NotFound("Ce mandat ou cette attestation n'existe pas, ou ne vous concerne pas.");

/// A positive id from the path, or "page introuvable".
fn id_of(raw: &str) -> Result<i64, PageError> {
    raw.parse::<i64>().ok().filter(|v| *v > 0).ok_or(NOT_FOUND)
}

pub async fn revoke_autorisation(state: web::Data<AppState>, session: Session, path: web::Path<String>, body: web::Bytes) -> Result<HttpResponse, PageError> {
    let id = id_of(&path)?;
    revoke(state, session, body, Ok(id)).await
}

pub async fn revoke_mandat(state: web::Data<AppState>, session: Session, path: web::Path<String>, body: web::Bytes) -> Result<HttpResponse, PageError> {
    let id = id_of(&path)?;
    revoke(state, session, body, Err(id)).await
}

/// The printable attestation of a revocation of the usager's.
pub async fn revocation(state: web::Data<AppState>, session: Session, path: web::Path<String>) -> Result<HttpResponse, PageError> {
    let fp = path.into_inner();
    let Some(usager) = usager_of(&state, &session) else { return Err(PageError::Redirect(HOME.to_owned())) };
    if !is_fingerprint(&fp) {
        return Err(NOT_FOUND);
    }
    let st = state.clone();
    let ms = blocking(move || st.db.read(|c| usager_space::mandats_of(c, usager))).await?.into_iter().map(|m| m.facts).collect::<Vec<_>>();
    let header = Header::anonymous_with_csrf(&session);
    crate::usagers::revocation_view(&state, header, (HOME.to_owned(), "Revenir à mon espace".to_owned()), fp, &ms).await
}

