//! The référent's space: the organisation's aidants (add, deactivate, reactivate, their
//! second factors), the organisation's allowed démarches, and the way in for the TOTP
//! pages ([`crate::referent_totp`]) and the statistics ([`crate::referent_stats`]).
//!
//! Only a référent of the aidant's current organisation gets in; an aidant of another
//! organisation is "page introuvable". Every change needs a fresh second factor.

use crate::guard::{self, csrf_checked, field, parse_form, SignedIn};
use crate::pages::{self, render, render_with, Header};
use crate::AppState;
use actix_session::Session;
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use crate::espace::{KeyTarget, RegistrationBody, RegistrationStart};
use askama::Template;
use broker_core::{Demarche, Timestamp};
use broker_store::admin::{self, Organisation};
use broker_store::referent::{self, Added, Member, NewMember, Role};
use broker_store::StoreError;

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/referent", web::get().to(home))
        .route("/referent/aidants/nouveau", web::get().to(new_member_form))
        .route("/referent/aidants/nouveau", web::post().to(new_member_submit))
        .route("/referent/aidants/{id}", web::get().to(member_page))
        .route("/referent/aidants/{id}/desactiver", web::post().to(deactivate))
        .route("/referent/aidants/{id}/reactiver", web::post().to(reactivate))
        .route("/referent/aidants/{id}/cles", web::get().to(keys_page))
        .route("/referent/aidants/{id}/cles/options", web::post().to(keys_options))
        .route("/referent/aidants/{id}/cles/ajout", web::post().to(keys_finish))
        .route("/referent/aidants/{id}/cles/{key}/retirer", web::post().to(keys_remove))
        .route("/referent/demarches", web::get().to(demarches_form))
        .route("/referent/demarches", web::post().to(demarches_submit))
        .route("/espace/structure", web::post().to(switch_organisation));
}

/// A référent of their current organisation, as the session and the database tell.
#[derive(Debug, Clone)]
pub struct Referent {
    pub who: SignedIn,
    pub organisation: Organisation,
}

impl Referent {
    pub fn organisation_id(&self) -> i64 {
        self.organisation.id
    }
}

/// Whether a page needs a second factor proved in the last minutes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Freshness {
    /// Reading pages.
    Any,
    /// Every change.
    Fresh,
}

pub fn not_found() -> HttpResponse {
    pages::error_page(StatusCode::NOT_FOUND, "Page introuvable", "Cette page n'existe pas, ou ne dépend pas de votre structure.")
}

pub fn forbidden() -> HttpResponse {
    pages::error_page(
        StatusCode::FORBIDDEN,
        "Espace réservé aux référents",
        "Cette page est réservée aux référents de la structure. Si vous devez gérer les aidants de votre structure, demandez à votre référent de vous donner ce rôle.",
    )
}

pub fn store_failure(e: &StoreError) -> HttpResponse {
    tracing::error!(error = %e, "referent");
    pages::server_error()
}

/// The signed-in référent of the current organisation, or the response to send:
/// sign-in, re-authentication (for [`Freshness::Fresh`]), or 403.
pub async fn require_referent(state: &web::Data<AppState>, session: &Session, here: &str, freshness: Freshness) -> Result<Referent, HttpResponse> {
    let who = match freshness {
        Freshness::Any => guard::require_signed_in(state, session, here)?,
        Freshness::Fresh => guard::require_fresh(state, session, here)?,
    };
    let st = state.clone();
    let found = web::block(move || {
        st.db.read(|c| {
            let Some(org) = referent::referent_of_current(c, who.aidant_id)? else { return Ok(None) };
            Ok::<_, StoreError>(Some(admin::find_organisation(c, org)?))
        })
    })
    .await;
    match found {
        Ok(Ok(Some(organisation))) => Ok(Referent { who, organisation }),
        Ok(Ok(None)) => Err(forbidden()),
        Ok(Err(e)) => Err(store_failure(&e)),
        Err(_) => Err(pages::server_error()),
    }
}

/// The member `raw` (an id from the path) of the référent's organisation, or 404.
pub async fn member_of(state: &web::Data<AppState>, r: &Referent, raw: &str) -> Result<Member, HttpResponse> {
    let Some(id) = raw.parse::<i64>().ok().filter(|v| *v > 0) else { return Err(not_found()) };
    let st = state.clone();
    let org = r.organisation_id();
    match web::block(move || st.db.read(|c| referent::member(c, org, id))).await {
        Ok(Ok(Some(m))) => Ok(m),
        Ok(Ok(None)) => Err(not_found()),
        Ok(Err(e)) => Err(store_failure(&e)),
        Err(_) => Err(pages::server_error()),
    }
}

/// The référent at `here` and the member `raw` of their organisation, or the response to send.
pub(crate) async fn referent_and_member(state: &web::Data<AppState>, session: &Session, here: &str, raw: &str, freshness: Freshness) -> Result<(Referent, Member), HttpResponse> {
    let r = require_referent(state, session, here, freshness).await?;
    let m = member_of(state, &r, raw).await?;
    Ok((r, m))
}

/// The référent at `here` with a fresh second factor, for a form whose CSRF token is valid.
async fn referent_form(state: &web::Data<AppState>, session: &Session, here: &str, form: &[(String, String)]) -> Result<Referent, HttpResponse> {
    let r = require_referent(state, session, here, Freshness::Fresh).await?;
    csrf_checked(session, form)?;
    Ok(r)
}

/// Same as [`referent_and_member`] for a form, with a fresh second factor: the CSRF token
/// is checked before the member is read.
pub(crate) async fn referent_and_member_form(state: &web::Data<AppState>, session: &Session, here: &str, raw: &str, form: &[(String, String)]) -> Result<(Referent, Member), HttpResponse> {
    let r = referent_form(state, session, here, form).await?;
    let m = member_of(state, &r, raw).await?;
    Ok((r, m))
}

/// Runs a store call on the blocking pool: a user error is left to the caller, anything
/// else is the server error response.
pub(crate) async fn run_store<T: Send + 'static>(f: impl FnOnce() -> Result<T, StoreError> + Send + 'static) -> Result<Result<T, StoreError>, HttpResponse> {
    match web::block(f).await {
        Ok(Ok(v)) => Ok(Ok(v)),
        Ok(Err(e)) if e.is_user_error() => Ok(Err(e)),
        Ok(Err(e)) => Err(store_failure(&e)),
        Err(_) => Err(pages::server_error()),
    }
}

fn date_time(t: Timestamp) -> String {
    t.datetime().format("%d/%m/%Y à %H:%M").to_string()
}

pub struct MemberRow {
    pub id: i64,
    pub name: String,
    pub email: String,
    pub profession: String,
    pub active: bool,
    pub referent: bool,
    pub factors: String,
    pub missing_factor: bool,
    pub last_login: String,
}

impl MemberRow {
    pub fn from(m: &Member) -> Self {
        MemberRow {
            id: m.id,
            name: format!("{} {}", m.first_name, m.last_name),
            email: m.email.clone(),
            profession: m.profession.clone(),
            active: m.active,
            referent: m.role == Role::Referent,
            factors: factors_label(m),
            missing_factor: !m.has_second_factor(),
            last_login: m.last_login.map(date_time).unwrap_or_else(|| "jamais".to_owned()),
        }
    }
}

fn plural(n: i64, one: &str, many: &str) -> String {
    if n == 1 {
        format!("1 {one}")
    } else {
        format!("{n} {many}")
    }
}

/// "1 clé de sécurité, 1 carte à code" or "aucun".
pub fn factors_label(m: &Member) -> String {
    let mut parts = Vec::new();
    if m.keys > 0 {
        parts.push(plural(m.keys, "clé de sécurité", "clés de sécurité"));
    }
    if m.totp_cards > 0 {
        parts.push(plural(m.totp_cards, "carte à code", "cartes à code"));
    }
    if m.totp_apps > 0 {
        parts.push(plural(m.totp_apps, "application à code", "applications à code"));
    }
    if m.unconfirmed > 0 {
        parts.push(plural(m.unconfirmed, "code à valider", "codes à valider"));
    }
    if parts.is_empty() {
        "aucun".to_owned()
    } else {
        parts.join(", ")
    }
}

#[derive(Template)]
#[template(path = "referent.html")]
struct HomePage<'a> {
    header: Header,
    organisation: &'a str,
    members: Vec<MemberRow>,
    notice: Option<&'a str>,
}

#[derive(serde::Deserialize)]
pub struct Notice {
    ok: Option<String>,
}

fn notice_text(key: Option<&str>) -> Option<&'static str> {
    match key? {
        "ajoute" => Some("L'aidant a été ajouté à la structure. Un e-mail l'invite à se connecter."),
        "rejoint" => Some("Cet aidant avait déjà un compte : il fait maintenant aussi partie de votre structure."),
        "desactive" => Some("L'aidant a été désactivé : il ne peut plus se connecter."),
        "reactive" => Some("L'aidant a été réactivé : il peut de nouveau se connecter."),
        "demarches" => Some("Les démarches autorisées de la structure ont été modifiées."),
        _ => None,
    }
}

pub async fn home(state: web::Data<AppState>, session: Session, q: web::Query<Notice>) -> HttpResponse {
    let r = match require_referent(&state, &session, "/referent", Freshness::Any).await {
        Ok(r) => r,
        Err(resp) => return resp,
    };
    let st = state.clone();
    let org = r.organisation_id();
    let members = match web::block(move || st.db.read(|c| referent::members(c, org))).await {
        Ok(Ok(m)) => m,
        Ok(Err(e)) => return store_failure(&e),
        Err(_) => return pages::server_error(),
    };
    let header = pages::header_for(&state, &session, r.who.aidant_id).await;
    render(&HomePage {
        header,
        organisation: &r.organisation.name,
        members: members.iter().map(MemberRow::from).collect(),
        notice: notice_text(q.ok.as_deref()),
    })
}

#[derive(Template)]
#[template(path = "referent_nouvel_aidant.html")]
struct NewMemberPage<'a> {
    header: Header,
    organisation: &'a str,
    email: &'a str,
    first_name: &'a str,
    last_name: &'a str,
    profession: &'a str,
    error: Option<String>,
}

pub async fn new_member_form(state: web::Data<AppState>, session: Session) -> HttpResponse {
    let r = match require_referent(&state, &session, "/referent/aidants/nouveau", Freshness::Fresh).await {
        Ok(r) => r,
        Err(resp) => return resp,
    };
    let header = pages::header_for(&state, &session, r.who.aidant_id).await;
    render(&NewMemberPage { header, organisation: &r.organisation.name, email: "", first_name: "", last_name: "", profession: "", error: None })
}

pub async fn new_member_submit(state: web::Data<AppState>, session: Session, body: web::Bytes) -> HttpResponse {
    let form = parse_form(&body);
    let r = match referent_form(&state, &session, "/referent/aidants/nouveau", &form).await {
        Ok(r) => r,
        Err(resp) => return resp,
    };
    let get = |k: &str| field(&form, k).unwrap_or("").to_owned();
    let (email, first, last, profession) = (get("email"), get("prenom"), get("nom"), get("profession"));
    let st = state.clone();
    let org = r.organisation_id();
    let by = r.who.aidant_id;
    let now = state.clock.now();
    let (e2, f2, l2, p2) = (email.clone(), first.clone(), last.clone(), profession.clone());
    let added = run_store(move || {
        referent::add_member(&st.db, org, &NewMember { email: &e2, first_name: &f2, last_name: &l2, profession: &p2 }, by, now)
    })
    .await;
    let error = match added {
        Ok(Ok(a)) => {
            let to = broker_core::validate::email(&email).unwrap_or_else(|_| email.clone());
            invite(&state, &r, a, &to).await;
            return guard::see_other(match a {
                Added::Created(_) => "/referent?ok=ajoute",
                Added::Joined(_) => "/referent?ok=rejoint",
            });
        }
        Ok(Err(e)) => e.to_string(),
        Err(resp) => return resp,
    };
    let header = pages::header_for(&state, &session, r.who.aidant_id).await;
    render_with(
        StatusCode::UNPROCESSABLE_ENTITY,
        &NewMemberPage {
            header,
            organisation: &r.organisation.name,
            email: &email,
            first_name: &first,
            last_name: &last,
            profession: &profession,
            error: Some(pages::capitalise(&error)),
        },
    )
}

/// The invitation e-mail: where to sign in, and that the référent gives the second factor.
async fn invite(state: &web::Data<AppState>, r: &Referent, added: Added, email: &str) {
    let subject = format!("Aidants Connect : vous faites partie de la structure {}", r.organisation.name);
    let sign_in = format!("{}/connexion", state.issuer.trim_end_matches('/'));
    let body = match added {
        Added::Created(_) => format!(
            "Bonjour,\n\nVotre référent vous a ouvert un compte Aidants Connect pour la structure {org}.\n\n\
Pour vous connecter, il vous faut un moyen de connexion : une carte à code, une application à code ou une clé de sécurité. \
Votre référent l'active avec vous.\n\nEnsuite, connectez-vous ici : {sign_in}\n\n\
Si vous ne travaillez pas pour cette structure, ignorez ce message.\n",
            org = r.organisation.name
        ),
        Added::Joined(_) => format!(
            "Bonjour,\n\nVous faites maintenant aussi partie de la structure {org} sur Aidants Connect.\n\
Une fois connecté, choisissez la structure pour laquelle vous travaillez depuis « Mon espace ».\n\n{sign_in}\n",
            org = r.organisation.name
        ),
    };
    let mailer = state.mailer.clone();
    let m = crate::mail::Message { to: email.to_owned(), subject, text: body };
    match web::block(move || mailer.send(&m)).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::warn!(error = %e, "invitation e-mail not sent"),
        Err(_) => tracing::warn!("invitation e-mail not sent"),
    }
}

#[derive(Template)]
#[template(path = "referent_aidant.html")]
struct MemberPage<'a> {
    header: Header,
    member: MemberRow,
    is_self: bool,
    error: Option<&'a str>,
}

pub async fn member_page(state: web::Data<AppState>, session: Session, path: web::Path<String>) -> HttpResponse {
    let here = format!("/referent/aidants/{}", path.as_str());
    let (r, m) = match referent_and_member(&state, &session, &here, &path, Freshness::Any).await {
        Ok(v) => v,
        Err(resp) => return resp,
    };
    let header = pages::header_for(&state, &session, r.who.aidant_id).await;
    render(&MemberPage { header, is_self: m.id == r.who.aidant_id, member: MemberRow::from(&m), error: None })
}

async fn set_active(state: web::Data<AppState>, session: Session, path: web::Path<String>, body: web::Bytes, active: bool) -> HttpResponse {
    let here = format!("/referent/aidants/{}", path.as_str());
    let form = parse_form(&body);
    let (r, m) = match referent_and_member_form(&state, &session, &here, &path, &form).await {
        Ok(v) => v,
        Err(resp) => return resp,
    };
    let st = state.clone();
    let (org, by, now) = (r.organisation_id(), r.who.aidant_id, state.clock.now());
    match run_store(move || referent::set_active(&st.db, org, m.id, active, by, now)).await {
        Ok(Ok(_)) => guard::see_other(if active { "/referent?ok=reactive" } else { "/referent?ok=desactive" }),
        Ok(Err(e)) => {
            let header = pages::header_for(&state, &session, r.who.aidant_id).await;
            let msg = e.to_string();
            render_with(
                StatusCode::UNPROCESSABLE_ENTITY,
                &MemberPage { header, is_self: m.id == by, member: MemberRow::from(&m), error: Some(&msg) },
            )
        }
        Err(resp) => resp,
    }
}

pub async fn deactivate(state: web::Data<AppState>, session: Session, path: web::Path<String>, body: web::Bytes) -> HttpResponse {
    set_active(state, session, path, body, false).await
}

pub async fn reactivate(state: web::Data<AppState>, session: Session, path: web::Path<String>, body: web::Bytes) -> HttpResponse {
    set_active(state, session, path, body, true).await
}

pub struct DemarcheChoice {
    pub key: &'static str,
    pub title: &'static str,
    pub description: &'static str,
    pub checked: bool,
}

#[derive(Template)]
#[template(path = "referent_demarches.html")]
struct DemarchesPage<'a> {
    header: Header,
    organisation: &'a str,
    choices: Vec<DemarcheChoice>,
    error: Option<&'a str>,
}

fn choices(allowed: &[Demarche]) -> Vec<DemarcheChoice> {
    Demarche::ALL
        .iter()
        .map(|d| DemarcheChoice { key: d.key(), title: d.title(), description: d.description(), checked: allowed.contains(d) })
        .collect()
}

pub async fn demarches_form(state: web::Data<AppState>, session: Session) -> HttpResponse {
    let r = match require_referent(&state, &session, "/referent/demarches", Freshness::Any).await {
        Ok(r) => r,
        Err(resp) => return resp,
    };
    let header = pages::header_for(&state, &session, r.who.aidant_id).await;
    render(&DemarchesPage { header, organisation: &r.organisation.name, choices: choices(&r.organisation.allowed()), error: None })
}

pub async fn demarches_submit(state: web::Data<AppState>, session: Session, body: web::Bytes) -> HttpResponse {
    let form = parse_form(&body);
    let r = match referent_form(&state, &session, "/referent/demarches", &form).await {
        Ok(r) => r,
        Err(resp) => return resp,
    };
    let mut wanted = Vec::new();
    for (k, v) in &form {
        if k == "demarche" {
            match Demarche::from_key(v) {
                Some(d) => wanted.push(d),
                None => return pages::error_page(StatusCode::BAD_REQUEST, "Démarche inconnue", "Rechargez la page et recommencez."),
            }
        }
    }
    let st = state.clone();
    let (org, by) = (r.organisation_id(), r.who.aidant_id);
    let w2 = wanted.clone();
    match run_store(move || referent::set_allowed_demarches(&st.db, org, &w2, by)).await {
        Ok(Ok(_)) => guard::see_other("/referent?ok=demarches"),
        Ok(Err(e)) => {
            let header = pages::header_for(&state, &session, r.who.aidant_id).await;
            let msg = e.to_string();
            render_with(
                StatusCode::UNPROCESSABLE_ENTITY,
                &DemarchesPage { header, organisation: &r.organisation.name, choices: choices(&wanted), error: Some(&msg) },
            )
        }
        Err(resp) => resp,
    }
}

/// The aidant picks their current organisation among theirs (journaled).
pub async fn switch_organisation(state: web::Data<AppState>, session: Session, body: web::Bytes) -> HttpResponse {
    let who = match guard::require_signed_in(&state, &session, "/espace") {
        Ok(w) => w,
        Err(r) => return r,
    };
    let form = parse_form(&body);
    if let Err(resp) = csrf_checked(&session, &form) {
        return resp;
    }
    let Some(org) = field(&form, "structure").and_then(|v| v.parse::<i64>().ok()) else {
        return pages::error_page(StatusCode::BAD_REQUEST, "Structure inconnue", "Choisissez une de vos structures dans la liste.");
    };
    let st = state.clone();
    match web::block(move || referent::switch_organisation(&st.db, who.aidant_id, org)).await {
        Ok(Ok(())) => guard::see_other("/espace?ok=structure"),
        Ok(Err(StoreError::NotFound(_))) => {
            pages::error_page(StatusCode::NOT_FOUND, "Structure inconnue", "Vous ne faites pas partie de cette structure. Choisissez une de vos structures dans la liste.")
        }
        Ok(Err(e)) => store_failure(&e),
        Err(_) => pages::server_error(),
    }
}

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

async fn render_keys(state: &web::Data<AppState>, session: &Session, r: &Referent, m: &Member, notice: Option<&str>, error: Option<&str>) -> HttpResponse {
    let st = state.clone();
    let id = m.id;
    let creds = match web::block(move || broker_store::webauthn::list_credentials(&st.db, id)).await {
        Ok(Ok(c)) => c,
        Ok(Err(e)) => return store_failure(&e),
        Err(_) => return pages::server_error(),
    };
    let date = |t: i64| Timestamp::from_micros(t).french_date();
    let keys = creds
        .into_iter()
        .map(|k| KeyRow { id: k.id, name: k.name, created: date(k.created_at), last_used: k.last_used_at.map(date).unwrap_or_else(|| "jamais".into()) })
        .collect();
    let header = pages::header_for(state, session, r.who.aidant_id).await;
    let status = if error.is_some() { StatusCode::UNPROCESSABLE_ENTITY } else { StatusCode::OK };
    render_with(status, &KeysPage { header, member: MemberRow::from(m), keys, notice, error })
}

pub async fn keys_page(state: web::Data<AppState>, session: Session, path: web::Path<String>, q: web::Query<Notice>) -> HttpResponse {
    let here = format!("/referent/aidants/{}/cles", path.as_str());
    let (r, m) = match referent_and_member(&state, &session, &here, &path, Freshness::Any).await {
        Ok(v) => v,
        Err(resp) => return resp,
    };
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
        Err(resp) if resp.status() == StatusCode::SEE_OTHER => return Err(json(StatusCode::UNAUTHORIZED, "Votre session a expiré. Reconnectez-vous.")),
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

pub async fn keys_remove(state: web::Data<AppState>, session: Session, path: web::Path<(String, i64)>, body: web::Bytes) -> HttpResponse {
    let (raw, key) = path.into_inner();
    let here = format!("/referent/aidants/{raw}/cles");
    let form = parse_form(&body);
    let (r, m) = match referent_and_member_form(&state, &session, &here, &raw, &form).await {
        Ok(v) => v,
        Err(resp) => return resp,
    };
    let st = state.clone();
    let (org, by, now, id) = (r.organisation_id(), r.who.aidant_id, state.clock.now(), m.id);
    match run_store(move || broker_store::webauthn::remove_credential_for(&st.db, org, id, key, now, by)).await {
        Ok(Ok(())) => guard::see_other(&format!("{here}?ok=retrait")),
        Ok(Err(StoreError::NotFound(_))) => not_found(),
        Ok(Err(e)) => render_keys(&state, &session, &r, &m, None, Some(&e.to_string())).await,
        Err(resp) => resp,
    }
}
