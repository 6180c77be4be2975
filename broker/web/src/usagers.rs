//! The organisation's usagers: the list, one usager's mandats and history, revoking an
//! autorisation or a whole mandat (with its printable revocation attestation), and
//! renewing a mandat without a new FranceConnect identification.
//!
//! Every page is for signed-in aidants of the organisation that holds the mandats;
//! anyone else gets "page introuvable". Revocation and renewal need a fresh second factor.

use crate::attestation::{qr_svg, verification_url};
use crate::guard::{self, field, parse_form, SignedIn};
use crate::pages::{self, render, render_with, Header};
use crate::AppState;
use actix_session::Session;
use actix_web::http::StatusCode;
use actix_web::{web, HttpResponse};
use askama::Template;
use broker_core::attestation::is_fingerprint;
use broker_core::capability::{AidantId, AutorisationId, MandatId, OrganisationId, UsagerId};
use broker_core::journal::Action;
use broker_core::mandat::{Duree, MandatFacts, Status};
use broker_core::{Demarche, Timestamp};
use broker_store::mandat_changes::{self, HistoryLine, UsagerName};
use broker_store::mandats::{self, NewMandat};
use broker_store::{admin, attestations, auth, capabilities, StoreError};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Session key of the renewal being prepared.
pub const K_RENEWAL: &str = "usager.renouvellement";

const ARGENT_WARNING: &str = "Attention : la démarche « Argent » donne accès aux impôts, aux prestations et aux comptes \
de la personne. Ne la gardez que si la personne le demande clairement ; vous ne devez jamais payer à sa place.";

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/usagers", web::get().to(list))
        .route("/usagers/{id}", web::get().to(detail))
        .route("/usagers/{id}/autorisations/{aid}/revoquer", web::get().to(revoke_autorisation_confirm))
        .route("/usagers/{id}/autorisations/{aid}/revoquer", web::post().to(revoke_autorisation_submit))
        .route("/usagers/{id}/mandats/{mid}/revoquer", web::get().to(revoke_mandat_confirm))
        .route("/usagers/{id}/mandats/{mid}/revoquer", web::post().to(revoke_mandat_submit))
        .route("/usagers/{id}/revocations/{fp}", web::get().to(revocation_page))
        .route("/usagers/{id}/mandats/{mid}/renouveler", web::get().to(renew_form))
        .route("/usagers/{id}/mandats/{mid}/renouveler", web::post().to(renew_choose))
        .route("/usagers/{id}/mandats/{mid}/renouveler/recapitulatif", web::get().to(renew_recap))
        .route("/usagers/{id}/mandats/{mid}/renouveler/recapitulatif", web::post().to(renew_confirm));
}

fn not_found() -> HttpResponse {
    pages::error_page(StatusCode::NOT_FOUND, "Page introuvable", "Cette personne ou ce mandat n'existe pas, ou ne dépend pas de votre structure.")
}

fn store_failure(e: &StoreError) -> HttpResponse {
    tracing::error!(error = %e, "usagers");
    pages::server_error()
}

fn date_time(t: Timestamp) -> String {
    t.datetime().format("%d/%m/%Y à %H:%M").to_string()
}

fn duration_days(m: &MandatFacts) -> i64 {
    (m.expires_at.micros() - m.created_at.micros()) / 86_400_000_000
}

fn duree_label(d: Duree) -> &'static str {
    match d {
        Duree::UnJour => "1 jour",
        Duree::UnMois => "1 mois",
        Duree::SixMois => "6 mois",
        Duree::UnAn => "1 an",
    }
}

/// The organisation the aidant currently works for.
fn organisation_of(st: &AppState, aidant_id: i64) -> Result<Option<i64>, StoreError> {
    Ok(st.db.read(|c| auth::find_active_by_id(c, aidant_id))?.and_then(|a| a.current_organisation_id))
}

/// A usager seen from an organisation: their name and every mandat they gave it.
struct UsagerCtx {
    organisation_id: i64,
    usager: UsagerName,
    mandats: Vec<MandatFacts>,
}

/// The usager `usager_id` as the aidant's organisation sees them; None when the
/// organisation holds no mandat of theirs.
fn load_usager(st: &AppState, aidant_id: i64, usager_id: i64) -> Result<Option<UsagerCtx>, StoreError> {
    let Some(org) = organisation_of(st, aidant_id)? else { return Ok(None) };
    st.db.read(|c| {
        let ms = mandats::facts(c, org, usager_id)?;
        if ms.is_empty() {
            return Ok(None);
        }
        let Some(usager) = mandat_changes::usager_names(c, &[usager_id])?.pop() else { return Ok(None) };
        Ok(Some(UsagerCtx { organisation_id: org, usager, mandats: ms }))
    })
}

async fn usager_ctx(state: &web::Data<AppState>, who: SignedIn, usager_id: i64) -> Result<UsagerCtx, HttpResponse> {
    let st = state.clone();
    match web::block(move || load_usager(&st, who.aidant_id, usager_id)).await {
        Ok(Ok(Some(u))) => Ok(u),
        Ok(Ok(None)) => Err(not_found()),
        Ok(Err(e)) => Err(store_failure(&e)),
        Err(_) => Err(pages::server_error()),
    }
}

fn ids(raw: &str) -> Option<i64> {
    raw.parse::<i64>().ok().filter(|v| *v > 0)
}

/// The usager whose id is `raw` in the path, as the aidant's organisation sees them.
async fn usager_of(state: &web::Data<AppState>, who: SignedIn, raw: &str) -> Result<UsagerCtx, HttpResponse> {
    let Some(usager_id) = ids(raw) else { return Err(not_found()) };
    usager_ctx(state, who, usager_id).await
}

/// The posted form, or None when its CSRF token is not the session's.
fn checked_form(session: &Session, body: &[u8]) -> Option<Vec<(String, String)>> {
    let form = parse_form(body);
    guard::csrf_ok(session, field(&form, "csrf").unwrap_or("")).then_some(form)
}

/// 400 for a page shown again with an error, 200 otherwise.
fn status_for(error: &Option<String>) -> StatusCode {
    if error.is_some() { StatusCode::BAD_REQUEST } else { StatusCode::OK }
}

// ---------------------------------------------------------------- list

#[derive(Deserialize)]
pub struct ListQuery {
    q: Option<String>,
}

pub struct UsagerRow {
    pub id: i64,
    pub name: String,
    pub demarches: Vec<&'static str>,
    pub soonest_expiry: String,
    pub status: &'static str,
    pub active: bool,
}

#[derive(Template)]
#[template(path = "usagers.html")]
struct ListPage {
    header: Header,
    q: String,
    rows: Vec<UsagerRow>,
}

/// A usager with the organisation's mandats shown in lists.
type Listed = (UsagerName, Vec<(MandatFacts, Status)>);

fn normalise(s: &str) -> String {
    s.to_lowercase()
        .chars()
        .map(|c| match c {
            'à' | 'â' | 'ä' => 'a',
            'é' | 'è' | 'ê' | 'ë' => 'e',
            'î' | 'ï' => 'i',
            'ô' | 'ö' => 'o',
            'ù' | 'û' | 'ü' => 'u',
            'ç' => 'c',
            c => c,
        })
        .collect()
}

pub async fn list(state: web::Data<AppState>, session: Session, query: web::Query<ListQuery>) -> HttpResponse {
    let who = match guard::require_signed_in(&state, &session, "/usagers") {
        Ok(w) => w,
        Err(r) => return r,
    };
    let q = query.into_inner().q.unwrap_or_default().trim().chars().take(100).collect::<String>();
    let now = state.clock.now();
    let st = state.clone();
    let loaded = web::block(move || -> Result<Vec<Listed>, StoreError> {
        let Some(org) = organisation_of(&st, who.aidant_id)? else { return Ok(Vec::new()) };
        let mut by_usager: BTreeMap<i64, Vec<(MandatFacts, Status)>> = BTreeMap::new();
        for (m, s) in mandats::list_for_organisation(&st.db, org, now)? {
            by_usager.entry(m.usager_id).or_default().push((m, s));
        }
        let ids: Vec<i64> = by_usager.keys().copied().collect();
        let names = st.db.read(|c| mandat_changes::usager_names(c, &ids))?;
        Ok(names.into_iter().filter_map(|n| by_usager.remove(&n.id).map(|ms| (n, ms))).collect())
    })
    .await;
    let loaded = match loaded {
        Ok(Ok(l)) => l,
        Ok(Err(e)) => return store_failure(&e),
        Err(_) => return pages::server_error(),
    };
    let needle = normalise(&q);
    let mut rows: Vec<(String, UsagerRow)> = loaded
        .into_iter()
        .filter(|(n, _)| needle.is_empty() || normalise(&format!("{} {}", n.given_name, n.family_name)).contains(&needle))
        .map(|(n, ms)| {
            let active: Vec<&MandatFacts> = ms.iter().filter(|(_, s)| *s == Status::Active).map(|(m, _)| m).collect();
            let mut demarches: Vec<Demarche> = active.iter().flat_map(|m| m.active_demarches(now)).collect();
            demarches.sort();
            demarches.dedup();
            let soonest = active.iter().map(|m| m.expires_at).min();
            let status = if !active.is_empty() {
                Status::Active
            } else {
                ms.iter().max_by_key(|(m, _)| m.ended_at(now).map(|t| t.micros()).unwrap_or(0)).map(|(_, s)| *s).unwrap_or(Status::Expired)
            };
            (
                normalise(&format!("{} {}", n.family_name, n.given_name)),
                UsagerRow {
                    id: n.id,
                    name: format!("{} {}", n.given_name, n.family_name),
                    demarches: demarches.iter().map(|d| d.title()).collect(),
                    soonest_expiry: soonest.map(|t| t.french_date()).unwrap_or_default(),
                    status: status.label(),
                    active: status == Status::Active,
                },
            )
        })
        .collect();
    rows.sort_by(|a, b| a.0.cmp(&b.0).then(a.1.id.cmp(&b.1.id)));
    let header = pages::header_for(&state, &session, who.aidant_id).await;
    render(&ListPage { header, q, rows: rows.into_iter().map(|r| r.1).collect() })
}

// ---------------------------------------------------------------- detail

pub struct AutorisationView {
    pub id: i64,
    pub title: &'static str,
    pub status: &'static str,
    pub active: bool,
    pub revoked_on: String,
    /// Active, but for a démarche the organisation no longer allows: cannot be used.
    pub blocked: bool,
}

pub struct MandatView {
    pub id: i64,
    pub created: String,
    pub expires: String,
    pub status: &'static str,
    pub active: bool,
    pub autorisations: Vec<AutorisationView>,
}

pub struct HistoryView {
    pub when: String,
    pub what: String,
    pub by: String,
}

#[derive(Template)]
#[template(path = "usager.html")]
struct DetailPage {
    header: Header,
    usager_id: i64,
    name: String,
    birthdate: String,
    mandats: Vec<MandatView>,
    history: Vec<HistoryView>,
}

fn french_birthdate(d: &str) -> String {
    let parts: Vec<&str> = d.split('-').collect();
    match parts.as_slice() {
        [y, m, j] if y.len() == 4 && m.len() == 2 && j.len() == 2 => format!("{j}/{m}/{y}"),
        _ => d.to_owned(),
    }
}

fn history_text(l: &HistoryLine) -> String {
    let details: serde_json::Value = serde_json::from_str(&l.details).unwrap_or_default();
    let action = Action::from_key(&l.action);
    let mut s = match action {
        Some(Action::AttestationCreated) if details.get("kind").and_then(|k| k.as_str()) == Some("revocation") => {
            "Attestation de révocation créée".to_owned()
        }
        Some(Action::AutorisationRevoked) if details.get("reason").and_then(|k| k.as_str()) == Some("superseded") => {
            "Autorisation remplacée par un nouveau mandat".to_owned()
        }
        Some(a) => a.label().to_owned(),
        None => l.action.clone(),
    };
    if let Some(d) = l.demarche.as_deref().and_then(Demarche::from_key) {
        s.push_str(&format!(" : {}", d.title()));
    }
    if let Some(m) = l.mandat_id {
        s.push_str(&format!(" (mandat n° {m})"));
    }
    s
}

pub async fn detail(state: web::Data<AppState>, session: Session, path: web::Path<String>) -> HttpResponse {
    let raw = path.into_inner();
    let who = match guard::require_signed_in(&state, &session, &format!("/usagers/{raw}")) {
        Ok(w) => w,
        Err(r) => return r,
    };
    let ctx = match usager_of(&state, who, &raw).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    let usager_id = ctx.usager.id;
    let st = state.clone();
    let org = ctx.organisation_id;
    let lines = web::block(move || -> Result<(Vec<HistoryLine>, BTreeMap<i64, String>, Vec<Demarche>), StoreError> {
        st.db.read_snapshot(|c| {
            let allowed = admin::find_organisation(c, org)?.allowed();
            let lines = mandat_changes::history(c, OrganisationId(org), UsagerId(usager_id))?;
            let mut names = BTreeMap::new();
            for a in lines.iter().filter_map(|l| l.aidant_id) {
                if let std::collections::btree_map::Entry::Vacant(v) = names.entry(a) {
                    if let Some((f, l)) = attestations::aidant_name(c, a)? {
                        v.insert(format!("{f} {l}"));
                    }
                }
            }
            Ok((lines, names, allowed))
        })
    })
    .await;
    let (lines, names, allowed) = match lines {
        Ok(Ok(l)) => l,
        Ok(Err(e)) => return store_failure(&e),
        Err(_) => return pages::server_error(),
    };
    let now = state.clock.now();
    let mut mandats: Vec<MandatView> = ctx
        .mandats
        .iter()
        .map(|m| {
            let status = m.status(now);
            MandatView {
                id: m.id,
                created: m.created_at.french_date(),
                expires: m.expires_at.french_date(),
                status: status.label(),
                active: status == Status::Active,
                autorisations: m
                    .autorisations
                    .iter()
                    .map(|a| {
                        let s = a.status(m.expires_at, now);
                        AutorisationView {
                            id: a.id,
                            title: a.demarche.title(),
                            status: s.label(),
                            active: s == Status::Active,
                            revoked_on: a.revoked_at.filter(|_| s == Status::Revoked).map(|t| t.french_date()).unwrap_or_default(),
                            blocked: s == Status::Active && !allowed.contains(&a.demarche),
                        }
                    })
                    .collect(),
            }
        })
        .collect();
    mandats.reverse();
    let history = lines
        .iter()
        .rev()
        .map(|l| HistoryView {
            when: date_time(l.at),
            what: history_text(l),
            by: l.aidant_id.and_then(|a| names.get(&a).cloned()).unwrap_or_default(),
        })
        .collect();
    let header = pages::header_for(&state, &session, who.aidant_id).await;
    render(&DetailPage {
        header,
        usager_id,
        name: format!("{} {}", ctx.usager.given_name, ctx.usager.family_name),
        birthdate: french_birthdate(&ctx.usager.birthdate),
        mandats,
        history,
    })
}

// ---------------------------------------------------------------- revocation

#[derive(Template)]
#[template(path = "usager_revoquer.html")]
struct ConfirmRevocation {
    header: Header,
    csrf: String,
    action: String,
    usager_id: i64,
    name: String,
    mandat_id: i64,
    whole: bool,
    demarches: Vec<&'static str>,
    error: Option<String>,
}

/// What a revocation would revoke: the mandat and the démarches, or None when the
/// target is not an active part of this usager's mandats.
fn revocation_target(ctx: &UsagerCtx, mandat_id: Option<i64>, autorisation_id: Option<i64>, now: Timestamp) -> Option<(i64, Vec<&'static str>)> {
    match (mandat_id, autorisation_id) {
        (Some(mid), _) => {
            let m = ctx.mandats.iter().find(|m| m.id == mid)?;
            let d: Vec<&'static str> = m.active_demarches(now).iter().map(|d| d.title()).collect();
            (!d.is_empty()).then_some((mid, d))
        }
        (None, Some(aid)) => ctx.mandats.iter().find_map(|m| {
            let a = m.autorisations.iter().find(|a| a.id == aid)?;
            (a.status(m.expires_at, now) == Status::Active).then(|| (m.id, vec![a.demarche.title()]))
        }),
        _ => None,
    }
}

/// Whether `autorisation_id` / `mandat_id` belongs to the usager in this organisation at all.
fn belongs(ctx: &UsagerCtx, mandat_id: Option<i64>, autorisation_id: Option<i64>) -> bool {
    match (mandat_id, autorisation_id) {
        (Some(mid), _) => ctx.mandats.iter().any(|m| m.id == mid),
        (None, Some(aid)) => ctx.mandats.iter().any(|m| m.autorisations.iter().any(|a| a.id == aid)),
        _ => false,
    }
}

fn nothing_to_revoke() -> HttpResponse {
    pages::error_page(
        StatusCode::CONFLICT,
        "Rien à révoquer",
        "Ce mandat ou cette autorisation n'est plus actif : il a déjà été révoqué ou il a expiré.",
    )
}

/// The aidant, with a fresh second factor, and the usager, when the mandat or autorisation
/// to revoke is theirs in the aidant's organisation.
async fn revocation_ctx(
    state: &web::Data<AppState>,
    session: &Session,
    raw_usager: &str,
    mandat_id: Option<i64>,
    autorisation_id: Option<i64>,
    here: &str,
) -> Result<(SignedIn, UsagerCtx), HttpResponse> {
    let who = guard::require_fresh(state, session, here)?;
    let ctx = usager_of(state, who, raw_usager).await?;
    if !belongs(&ctx, mandat_id, autorisation_id) {
        return Err(not_found());
    }
    Ok((who, ctx))
}

async fn confirm_page(
    state: web::Data<AppState>,
    session: Session,
    raw_usager: String,
    mandat_id: Option<i64>,
    autorisation_id: Option<i64>,
    here: String,
    error: Option<String>,
) -> HttpResponse {
    let (who, ctx) = match revocation_ctx(&state, &session, &raw_usager, mandat_id, autorisation_id, &here).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    let name = format!("{} {}", ctx.usager.given_name, ctx.usager.family_name);
    let Some((mid, demarches)) = revocation_target(&ctx, mandat_id, autorisation_id, state.clock.now()) else { return nothing_to_revoke() };
    let header = pages::header_for(&state, &session, who.aidant_id).await;
    render_with(
        status_for(&error),
        &ConfirmRevocation {
            header,
            csrf: guard::csrf_token(&session),
            action: here,
            usager_id: ctx.usager.id,
            name,
            mandat_id: mid,
            whole: mandat_id.is_some(),
            demarches,
            error,
        },
    )
}

pub async fn revoke_autorisation_confirm(state: web::Data<AppState>, session: Session, path: web::Path<(String, String)>) -> HttpResponse {
    let (u, a) = path.into_inner();
    let here = format!("/usagers/{u}/autorisations/{a}/revoquer");
    let Some(aid) = ids(&a) else { return not_found() };
    confirm_page(state, session, u, None, Some(aid), here, None).await
}

pub async fn revoke_mandat_confirm(state: web::Data<AppState>, session: Session, path: web::Path<(String, String)>) -> HttpResponse {
    let (u, m) = path.into_inner();
    let here = format!("/usagers/{u}/mandats/{m}/revoquer");
    let Some(mid) = ids(&m) else { return not_found() };
    confirm_page(state, session, u, Some(mid), None, here, None).await
}

async fn revoke_submit(
    state: web::Data<AppState>,
    session: Session,
    body: web::Bytes,
    raw_usager: String,
    mandat_id: Option<i64>,
    autorisation_id: Option<i64>,
    here: String,
) -> HttpResponse {
    let Some(form) = checked_form(&session, &body) else { return guard::csrf_refused() };
    let (who, ctx) = match revocation_ctx(&state, &session, &raw_usager, mandat_id, autorisation_id, &here).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    let usager_id = ctx.usager.id;
    if field(&form, "confirmation") != Some("oui") {
        return confirm_page(
            state,
            session,
            raw_usager,
            mandat_id,
            autorisation_id,
            here,
            Some("Cochez la case pour confirmer que la personne demande cette révocation.".into()),
        )
        .await;
    }
    let now = state.clock.now();
    let st = state.clone();
    let done = web::block(move || match (mandat_id, autorisation_id) {
        (Some(mid), _) => capabilities::in_organisation(&st.db, AidantId(who.aidant_id)).and_then(|by| mandat_changes::revoke_mandat(&st.db, &by, MandatId(mid), now)),
        (None, Some(aid)) => capabilities::in_organisation(&st.db, AidantId(who.aidant_id)).and_then(|by| mandat_changes::revoke_autorisation(&st.db, &by, AutorisationId(aid), now)),
        _ => Err(StoreError::NotFound("rien à révoquer".into())),
    })
    .await;
    match done {
        Ok(Ok(r)) => guard::see_other(&format!("/usagers/{usager_id}/revocations/{}", r.fingerprint)),
        Ok(Err(StoreError::Conflict(_))) => nothing_to_revoke(),
        Ok(Err(e)) => store_failure(&e),
        Err(_) => pages::server_error(),
    }
}

pub async fn revoke_autorisation_submit(state: web::Data<AppState>, session: Session, path: web::Path<(String, String)>, body: web::Bytes) -> HttpResponse {
    let (u, a) = path.into_inner();
    let here = format!("/usagers/{u}/autorisations/{a}/revoquer");
    let Some(aid) = ids(&a) else { return not_found() };
    revoke_submit(state, session, body, u, None, Some(aid), here).await
}

pub async fn revoke_mandat_submit(state: web::Data<AppState>, session: Session, path: web::Path<(String, String)>, body: web::Bytes) -> HttpResponse {
    let (u, m) = path.into_inner();
    let here = format!("/usagers/{u}/mandats/{m}/revoquer");
    let Some(mid) = ids(&m) else { return not_found() };
    revoke_submit(state, session, body, u, Some(mid), None, here).await
}

pub struct DemarcheLine {
    pub title: &'static str,
    pub description: &'static str,
}

#[derive(Template)]
#[template(path = "usager_revocation.html")]
struct RevocationPage {
    header: Header,
    back_href: String,
    back_label: String,
    mandat_id: i64,
    usager_name: String,
    usager_birthdate: String,
    organisation_name: String,
    organisation_siret: String,
    organisation_address: String,
    aidant_name: String,
    demarches: Vec<DemarcheLine>,
    created_date: String,
    revoked_date: String,
    whole: bool,
    legal_text_version: String,
    fingerprint: String,
    verification_url: String,
    qr: String,
}

pub async fn revocation_page(state: web::Data<AppState>, session: Session, path: web::Path<(String, String)>) -> HttpResponse {
    let (u, fp) = path.into_inner();
    let who = match guard::require_signed_in(&state, &session, &format!("/usagers/{u}/revocations/{fp}")) {
        Ok(w) => w,
        Err(r) => return r,
    };
    if !is_fingerprint(&fp) {
        return not_found();
    }
    let ctx = match usager_of(&state, who, &u).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    let header = pages::header_for(&state, &session, who.aidant_id).await;
    let back = (format!("/usagers/{}", ctx.usager.id), format!("Revenir à la fiche de {} {}", ctx.usager.given_name, ctx.usager.family_name));
    revocation_view(&state, header, back, fp, &ctx.mandats).await
}

/// The printable revocation attestation `fp`, if it is one of `mandats`' (404 otherwise).
pub(crate) async fn revocation_view(state: &web::Data<AppState>, header: Header, back: (String, String), fp: String, mandats: &[MandatFacts]) -> HttpResponse {
    let st = state.clone();
    let fp2 = fp.clone();
    let loaded = web::block(move || {
        st.db.read_snapshot(|c| {
            let Some(content) = mandat_changes::revocation_content(c, &fp2)? else { return Ok(None) };
            let by = match attestations::recorded_by(c, &fp2)? {
                Some(a) => attestations::aidant_name(c, a)?,
                None => None,
            };
            Ok::<_, StoreError>(Some((content, by)))
        })
    })
    .await;
    let (content, by) = match loaded {
        Ok(Ok(Some(x))) => x,
        Ok(Ok(None)) => return not_found(),
        Ok(Err(e)) => return store_failure(&e),
        Err(_) => return pages::server_error(),
    };
    let Some(m) = mandats.iter().find(|m| m.id == content.mandat_id) else { return not_found() };
    let revoked_at = content.revoked_at.unwrap_or(content.created_at);
    let whole = m.autorisations.iter().all(|a| a.revoked_at.is_some_and(|r| r <= revoked_at));
    let url = verification_url(&state.issuer, &fp);
    let Some(qr) = qr_svg(&url, "QR code de vérification de l'attestation de révocation") else { return pages::server_error() };
    render(&RevocationPage {
        header,
        back_href: back.0,
        back_label: back.1,
        mandat_id: content.mandat_id,
        usager_name: format!("{} {}", content.usager_given_name, content.usager_family_name),
        usager_birthdate: french_birthdate(&content.usager_birthdate),
        organisation_name: content.organisation_name.clone(),
        organisation_siret: content.organisation_siret.clone(),
        organisation_address: content.organisation_address.clone(),
        aidant_name: by.map(|(f, l)| format!("{f} {l}")).unwrap_or_default(),
        demarches: content.demarches.iter().map(|d| DemarcheLine { title: d.title(), description: d.description() }).collect(),
        created_date: content.created_at.french_date(),
        revoked_date: revoked_at.french_date(),
        whole,
        legal_text_version: content.legal_text_version.clone(),
        fingerprint: fp,
        verification_url: url,
        qr,
    })
}

// ---------------------------------------------------------------- renewal

/// The renewal being prepared, kept in the session between the form and the summary.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Renewal {
    pub usager_id: i64,
    pub mandat_id: i64,
    pub demarches: Vec<String>,
    pub days: i64,
}

pub struct ChoiceView {
    pub key: &'static str,
    pub title: &'static str,
    pub description: &'static str,
    pub checked: bool,
}

pub struct DureeView {
    pub days: i64,
    pub label: &'static str,
    pub checked: bool,
}

#[derive(Template)]
#[template(path = "usager_renouveler.html")]
struct RenewForm {
    header: Header,
    csrf: String,
    action: String,
    usager_id: i64,
    name: String,
    mandat_id: i64,
    demarches: Vec<ChoiceView>,
    durees: Vec<DureeView>,
    argent_warning: &'static str,
    error: Option<String>,
}

#[derive(Template)]
#[template(path = "usager_renouveler_recap.html")]
struct RenewRecap {
    header: Header,
    csrf: String,
    action: String,
    back: String,
    name: String,
    mandat_id: i64,
    demarches: Vec<DemarcheLine>,
    duration: &'static str,
    expires: String,
    argent: bool,
    argent_warning: &'static str,
    error: Option<String>,
}

fn allowed_of(st: &AppState, org: i64) -> Result<Vec<Demarche>, StoreError> {
    Ok(st.db.read(|c| admin::find_organisation(c, org))?.allowed())
}

async fn renew_ctx(state: &web::Data<AppState>, who: SignedIn, u: &str, m: &str) -> Result<(UsagerCtx, MandatFacts, Vec<Demarche>), HttpResponse> {
    let (Some(usager_id), Some(mid)) = (ids(u), ids(m)) else { return Err(not_found()) };
    let ctx = usager_ctx(state, who, usager_id).await?;
    let Some(mandat) = ctx.mandats.iter().find(|x| x.id == mid).cloned() else { return Err(not_found()) };
    let st = state.clone();
    let org = ctx.organisation_id;
    let allowed = match web::block(move || allowed_of(&st, org)).await {
        Ok(Ok(a)) => a,
        Ok(Err(e)) => return Err(store_failure(&e)),
        Err(_) => return Err(pages::server_error()),
    };
    Ok((ctx, mandat, allowed))
}

/// The renewal of this mandat kept in the session, if any.
fn kept_renewal(session: &Session, ctx: &UsagerCtx, mandat: &MandatFacts) -> Option<Renewal> {
    session.get::<Renewal>(K_RENEWAL).ok().flatten().filter(|r| r.mandat_id == mandat.id && r.usager_id == ctx.usager.id)
}

/// The two renewal pages: the form needs a signed-in aidant, the summary a fresh second factor.
#[derive(Clone, Copy)]
enum RenewStep {
    Form,
    Recap,
}

/// The aidant, the usager, the mandat to renew and the démarches the organisation may choose.
async fn renew_request(
    state: &web::Data<AppState>,
    session: &Session,
    step: RenewStep,
    u: &str,
    m: &str,
) -> Result<(SignedIn, UsagerCtx, MandatFacts, Vec<Demarche>), HttpResponse> {
    let who = match step {
        RenewStep::Form => guard::require_signed_in(state, session, &format!("/usagers/{u}/mandats/{m}/renouveler"))?,
        RenewStep::Recap => guard::require_fresh(state, session, &format!("/usagers/{u}/mandats/{m}/renouveler/recapitulatif"))?,
    };
    let (ctx, mandat, allowed) = renew_ctx(state, who, u, m).await?;
    Ok((who, ctx, mandat, allowed))
}

#[allow(clippy::too_many_arguments)]
fn form_page(header: Header, session: &Session, ctx: &UsagerCtx, mandat: &MandatFacts, allowed: &[Demarche], chosen: &[Demarche], days: i64, error: Option<String>) -> HttpResponse {
    render_with(
        status_for(&error),
        &RenewForm {
            header,
            csrf: guard::csrf_token(session),
            action: format!("/usagers/{}/mandats/{}/renouveler", ctx.usager.id, mandat.id),
            usager_id: ctx.usager.id,
            name: format!("{} {}", ctx.usager.given_name, ctx.usager.family_name),
            mandat_id: mandat.id,
            demarches: allowed
                .iter()
                .map(|&d| ChoiceView { key: d.key(), title: d.title(), description: d.description(), checked: chosen.contains(&d) })
                .collect(),
            durees: Duree::ALL.iter().map(|&d| DureeView { days: d.days(), label: duree_label(d), checked: d.days() == days }).collect(),
            argent_warning: ARGENT_WARNING,
            error,
        },
    )
}

pub async fn renew_form(state: web::Data<AppState>, session: Session, path: web::Path<(String, String)>) -> HttpResponse {
    let (u, m) = path.into_inner();
    let (who, ctx, mandat, allowed) = match renew_request(&state, &session, RenewStep::Form, &u, &m).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    let now = state.clock.now();
    let (chosen, days) = match kept_renewal(&session, &ctx, &mandat) {
        Some(r) => (r.demarches.iter().filter_map(|k| Demarche::from_key(k)).collect::<Vec<_>>(), r.days),
        None => {
            let mut d = mandat.active_demarches(now);
            if d.is_empty() {
                d = mandat.autorisations.iter().map(|a| a.demarche).collect();
            }
            (d, duration_days(&mandat))
        }
    };
    let chosen: Vec<Demarche> = chosen.into_iter().filter(|d| allowed.contains(d)).collect();
    let header = pages::header_for(&state, &session, who.aidant_id).await;
    form_page(header, &session, &ctx, &mandat, &allowed, &chosen, days, None)
}

pub async fn renew_choose(state: web::Data<AppState>, session: Session, path: web::Path<(String, String)>, body: web::Bytes) -> HttpResponse {
    let (u, m) = path.into_inner();
    let Some(form) = checked_form(&session, &body) else { return guard::csrf_refused() };
    let (who, ctx, mandat, allowed) = match renew_request(&state, &session, RenewStep::Form, &u, &m).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    let mut chosen: Vec<Demarche> = form.iter().filter(|(k, _)| k == "demarche").filter_map(|(_, v)| Demarche::from_key(v)).collect();
    chosen.sort();
    chosen.dedup();
    let days = field(&form, "duree").and_then(|d| d.parse::<i64>().ok()).unwrap_or(0);
    let error = if chosen.is_empty() {
        Some("Choisissez au moins une démarche.".to_owned())
    } else if chosen.iter().any(|d| !allowed.contains(d)) {
        Some("Votre structure n'est pas habilitée pour une des démarches choisies.".to_owned())
    } else if Duree::from_days(days).is_none() {
        Some("Choisissez la durée du mandat.".to_owned())
    } else {
        None
    };
    if error.is_some() {
        let header = pages::header_for(&state, &session, who.aidant_id).await;
        let chosen: Vec<Demarche> = chosen.into_iter().filter(|d| allowed.contains(d)).collect();
        return form_page(header, &session, &ctx, &mandat, &allowed, &chosen, days, error);
    }
    let r = Renewal { usager_id: ctx.usager.id, mandat_id: mandat.id, demarches: chosen.iter().map(|d| d.key().to_owned()).collect(), days };
    if session.insert(K_RENEWAL, &r).is_err() {
        return pages::server_error();
    }
    guard::see_other(&format!("/usagers/{}/mandats/{}/renouveler/recapitulatif", ctx.usager.id, mandat.id))
}

async fn recap_page(state: &web::Data<AppState>, session: &Session, who: SignedIn, u: &str, m: &str, error: Option<String>) -> HttpResponse {
    let (ctx, mandat, _) = match renew_ctx(state, who, u, m).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    let back = format!("/usagers/{}/mandats/{}/renouveler", ctx.usager.id, mandat.id);
    let Some(r) = kept_renewal(session, &ctx, &mandat) else { return guard::see_other(&back) };
    let Some(duree) = Duree::from_days(r.days) else { return guard::see_other(&back) };
    let demarches: Vec<Demarche> = r.demarches.iter().filter_map(|k| Demarche::from_key(k)).collect();
    let header = pages::header_for(state, session, who.aidant_id).await;
    render_with(
        status_for(&error),
        &RenewRecap {
            header,
            csrf: guard::csrf_token(session),
            action: format!("{back}/recapitulatif"),
            back,
            name: format!("{} {}", ctx.usager.given_name, ctx.usager.family_name),
            mandat_id: mandat.id,
            argent: demarches.contains(&Demarche::Argent),
            demarches: demarches.iter().map(|d| DemarcheLine { title: d.title(), description: d.description() }).collect(),
            duration: duree_label(duree),
            expires: duree.expiry(state.clock.now()).french_date(),
            argent_warning: ARGENT_WARNING,
            error,
        },
    )
}

pub async fn renew_recap(state: web::Data<AppState>, session: Session, path: web::Path<(String, String)>) -> HttpResponse {
    let (u, m) = path.into_inner();
    let who = match guard::require_fresh(&state, &session, &format!("/usagers/{u}/mandats/{m}/renouveler/recapitulatif")) {
        Ok(w) => w,
        Err(r) => return r,
    };
    recap_page(&state, &session, who, &u, &m, None).await
}

pub async fn renew_confirm(state: web::Data<AppState>, session: Session, path: web::Path<(String, String)>, body: web::Bytes) -> HttpResponse {
    let (u, m) = path.into_inner();
    let Some(form) = checked_form(&session, &body) else { return guard::csrf_refused() };
    let (who, ctx, mandat, _) = match renew_request(&state, &session, RenewStep::Recap, &u, &m).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    let back = format!("/usagers/{}/mandats/{}/renouveler", ctx.usager.id, mandat.id);
    let Some(r) = kept_renewal(&session, &ctx, &mandat) else { return guard::see_other(&back) };
    if field(&form, "consentement") != Some("oui") {
        return recap_page(&state, &session, who, &u, &m, Some("Cochez la case pour attester avoir informé la personne.".into())).await;
    }
    let Some(duree) = Duree::from_days(r.days) else { return guard::see_other(&back) };
    let n = NewMandat {
        organisation_id: ctx.organisation_id,
        usager_id: ctx.usager.id,
        aidant_id: who.aidant_id,
        demarches: r.demarches.iter().filter_map(|k| Demarche::from_key(k)).collect(),
        duree,
    };
    let now = state.clock.now();
    let st = state.clone();
    let old = mandat.id;
    let aidant = AidantId(who.aidant_id);
    match web::block(move || capabilities::in_organisation(&st.db, aidant).and_then(|by| mandat_changes::renew_mandat(&st.db, &by, MandatId(old), &n, now))).await {
        Ok(Ok(created)) => {
            session.remove(K_RENEWAL);
            guard::see_other(&format!("/mandats/{}/attestation", created.mandat_id))
        }
        Ok(Err(StoreError::Invalid(msg))) => recap_page(&state, &session, who, &u, &m, Some(msg)).await,
        Ok(Err(e)) => store_failure(&e),
        Err(_) => pages::server_error(),
    }
}
