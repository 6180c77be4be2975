//! The printable attestation of a mandat, with the QR code of its fingerprint, and the
//! public page that tells whether a fingerprint matches an attestation in the journal.

use crate::guard;
use crate::page_error::{blocking, PageError};
use crate::pages::{self, render, render_with, Header};
use crate::AppState;
use actix_session::Session;
use actix_web::http::StatusCode;
use actix_web::{web, HttpResponse};
use askama::Template;
use broker_core::attestation::{is_fingerprint, AttestationContent, Kind};
use broker_core::mandat::{Duree, Status};
use broker_core::Timestamp;
use broker_store::{attestations, auth, StoreError};

const PRINT_CSS: &str = include_str!("../static/attestation.css");
const PRINT_JS: &str = include_str!("../static/attestation.js");

/// Routes of this module.
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/mandats/{id}/attestation", web::get().to(attestation_page))
        .route("/attestations/verifier/{fingerprint}", web::get().to(verify_page))
        .route("/static/app/attestation.css", web::get().to(print_css))
        .route("/static/app/attestation.js", web::get().to(print_js));
}

async fn print_css() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/css; charset=utf-8")
        .insert_header(("Cache-Control", "no-cache"))
        .body(PRINT_CSS)
}

async fn print_js() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/javascript; charset=utf-8")
        .insert_header(("Cache-Control", "no-cache"))
        .body(PRINT_JS)
}

/// `{issuer}/attestations/verifier/{fingerprint}`: what the QR code encodes.
pub fn verification_url(issuer: &str, fingerprint: &str) -> String {
    format!("{}/attestations/verifier/{fingerprint}", issuer.trim_end_matches('/'))
}

/// The QR code of `data` as an inline SVG element, or None if it cannot be drawn.
pub fn qr_svg(data: &str, label: &str) -> Option<String> {
    let code = qrcode::QrCode::with_error_correction_level(data.as_bytes(), qrcode::EcLevel::M).ok()?;
    let svg = code
        .render::<qrcode::render::svg::Color<'_>>()
        .min_dimensions(160, 160)
        .quiet_zone(true)
        .build();
    let start = svg.find("<svg")?;
    let label = askama_escape(label);
    Some(svg[start..].replacen("<svg ", &format!("<svg role=\"img\" aria-label=\"{label}\" class=\"attestation-qr\" "), 1))
}

fn askama_escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;").replace('\'', "&#39;")
}

/// `1962-08-24` → `24/08/1962`; other forms as they are.
fn french_birthdate(d: &str) -> String {
    let parts: Vec<&str> = d.split('-').collect();
    match parts.as_slice() {
        [y, m, j] if y.len() == 4 && m.len() == 2 && j.len() == 2 => format!("{j}/{m}/{y}"),
        _ => d.to_owned(),
    }
}

pub struct DemarcheLine {
    pub title: &'static str,
    pub description: &'static str,
}

#[derive(Template)]
#[template(path = "attestation.html")]
struct AttestationPage {
    header: Header,
    mandat_id: i64,
    legal_text_version: String,
    organisation_name: String,
    organisation_siret: String,
    organisation_address: String,
    usager_name: String,
    usager_birthdate: String,
    usager_birthplace: String,
    usager_birthcountry: String,
    demarches: Vec<DemarcheLine>,
    duration: String,
    created_date: String,
    expires_date: String,
    aidant_name: String,
    fingerprint: String,
    verification_url: String,
    qr: String,
}

const NOT_FOUND: PageError = PageError::NotFound("Ce mandat n'existe pas ou ne dépend pas de votre structure.");

struct Loaded {
    content: AttestationContent,
    fingerprint: String,
    aidant_name: String,
}

pub async fn attestation_page(state: web::Data<AppState>, session: Session, path: web::Path<String>) -> Result<HttpResponse, PageError> {
    let raw = path.into_inner();
    let here = format!("/mandats/{raw}/attestation");
    let who = guard::signed_in(&state, &session, &here)?;
    let mandat_id = raw.parse::<i64>().map_err(|_| NOT_FOUND)?;
    let st = state.clone();
    let now = state.clock.now();
    let loaded = blocking(move || -> Result<Option<Loaded>, StoreError> {
        let Some(aidant) = st.db.read(|c| auth::find_active_by_id(c, who.aidant_id))? else { return Ok(None) };
        let Some(org) = st.db.read(|c| attestations::mandat_organisation(c, mandat_id))? else { return Ok(None) };
        if aidant.current_organisation_id != Some(org) {
            return Ok(None);
        }
        let (content, fingerprint) = attestations::ensure_for_mandat(&st.db, broker_core::capability::MandatId(mandat_id), broker_core::capability::AidantId(who.aidant_id), now)?;
        let by = st.db.read(|c| {
            let id = attestations::recorded_by(c, &fingerprint)?;
            match id {
                Some(id) => attestations::aidant_name(c, id),
                None => Ok(None),
            }
        })?;
        let aidant_name = by.map(|(f, l)| format!("{f} {l}")).unwrap_or_else(|| format!("{} {}", aidant.first_name, aidant.last_name));
        Ok(Some(Loaded { content, fingerprint, aidant_name }))
    })
    .await?;
    let l = loaded.ok_or(NOT_FOUND)?;
    let url = verification_url(&state.issuer, &l.fingerprint);
    let qr = qr_svg(&url, "QR code de vérification de l'attestation").ok_or_else(|| PageError::server("attestation QR code"))?;
    let header = pages::header_for(&state, &session, who.aidant_id).await;
    let c = l.content;
    let duration = Duree::from_days(c.duration_days).map(|d| d.label().to_owned()).unwrap_or_else(|| format!("{} jours", c.duration_days));
    Ok(render(&AttestationPage {
        header,
        mandat_id: c.mandat_id,
        legal_text_version: c.legal_text_version.clone(),
        organisation_name: c.organisation_name.clone(),
        organisation_siret: c.organisation_siret.clone(),
        organisation_address: c.organisation_address.clone(),
        usager_name: format!("{} {}", c.usager_given_name, c.usager_family_name),
        usager_birthdate: french_birthdate(&c.usager_birthdate),
        usager_birthplace: c.usager_birthplace.clone(),
        usager_birthcountry: c.usager_birthcountry.clone(),
        demarches: c.demarches.iter().map(|d| DemarcheLine { title: d.title(), description: d.description() }).collect(),
        duration,
        created_date: c.created_at.french_date(),
        expires_date: c.expires_at.french_date(),
        aidant_name: l.aidant_name,
        fingerprint: l.fingerprint,
        verification_url: url,
        qr,
    }))
}

#[derive(Template)]
#[template(path = "attestation_verifier.html")]
struct VerifyPage {
    header: Header,
    found: Option<VerifiedView>,
}

pub struct VerifiedView {
    pub kind: &'static str,
    pub mandat_id: i64,
    pub status: &'static str,
    /// The entry's number in the journal, once numbered.
    pub seq: Option<i64>,
    pub proof: Option<broker_store::checkpoints::InclusionProof>,
}

/// The `attestation_created` entry's number and its inclusion proof against the latest
/// signed checkpoint, when one covers it.
fn proof_of(c: &mut broker_store::AnyConnection, fp: &str) -> Result<(Option<i64>, Option<broker_store::checkpoints::InclusionProof>), broker_store::StoreError> {
    let Some(seq) = attestations::journal_seq(c, fp)? else { return Ok((None, None)) };
    let covered = broker_store::checkpoints::latest(c)?.is_some_and(|cp| cp.size >= seq);
    let proof = if covered { Some(broker_store::checkpoints::inclusion(c, seq, None)?) } else { None };
    Ok((Some(seq), proof))
}

pub async fn verify_page(state: web::Data<AppState>, session: Session, path: web::Path<String>) -> Result<HttpResponse, PageError> {
    let fp = path.into_inner().to_ascii_lowercase();
    let now: Timestamp = state.clock.now();
    let header = match guard::SignedIn::from_session(&session, now) {
        Some(who) => pages::header_for(&state, &session, who.aidant_id).await,
        None => Header::anonymous(),
    };
    let found = if is_fingerprint(&fp) {
        let st = state.clone();
        blocking(move || {
            st.db.read_snapshot(|c| {
                let Some(f) = attestations::find_by_fingerprint(c, &fp)?.filter(|f| f.journaled) else { return Ok(None) };
                let proof = proof_of(c, &fp)?;
                Ok::<_, broker_store::StoreError>(Some((f, proof)))
            })
        })
        .await?
    } else {
        None
    };
    match found {
        Some((f, (seq, proof))) => {
            let status: Status = f.mandat.status(now);
            Ok(render(&VerifyPage {
                header,
                found: Some(VerifiedView {
                    kind: match f.kind {
                        Kind::Mandat => "attestation de mandat",
                        Kind::Revocation => "attestation de révocation",
                    },
                    mandat_id: f.mandat_id,
                    status: status.label(),
                    seq,
                    proof,
                }),
            }))
        }
        None => Ok(render_with(StatusCode::NOT_FOUND, &VerifyPage { header, found: None })),
    }
}
