//! Making a mandat: the aidant chooses the démarches and the duration with the usager,
//! the usager identifies through FranceConnect, the aidant checks the summary, attests
//! having informed the usager and proves a second factor; then the usager, the mandat,
//! its autorisations and its attestation are written in one transaction.
//!
//! Until then everything lives in the aidant's session under [`DRAFT_KEY`]: the choices,
//! then the identity received (with the usager key, never FranceConnect's `sub`). A
//! failed identification leaves the choices in place and writes nothing.

use crate::franceconnect::{callback_error, store_pending, take_pending, FcError, SESSION_KEY as FC_PENDING_KEY};
use crate::guard::{self, SignedIn};
use crate::pages::{self, render_with, server_side, DemarcheView, Header};
use crate::signin::reauthenticate_totp;
use crate::AppState;
use actix_session::Session;
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use askama::Template;
use broker_core::identite::{usager_key, IdentitePivot};
use broker_core::mandat::Duree;
use broker_core::secret::random_bytes;
use broker_core::{Demarche, Timestamp};
use broker_store::mandats::{create_mandat_with_attestation, NewMandatForUsager};
use broker_store::{auth, StoreError};
use serde::{Deserialize, Serialize};

/// Session key of the mandat being made.
pub const DRAFT_KEY: &str = "mandat.brouillon";

const FORM: &str = "/mandats/nouveau";
const CALLBACK: &str = "/mandats/nouveau/franceconnect/retour";
const RECAP: &str = "/mandats/nouveau/recapitulatif";

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(web::resource(FORM).get(form).post(submit))
        .route(CALLBACK, web::get().to(callback))
        .service(web::resource(RECAP).get(recap).post(confirm));
}

/// The usager as FranceConnect identified them, kept until the mandat is made.
#[derive(Clone, Serialize, Deserialize)]
struct Identified {
    usager_key: String,
    given_name: String,
    family_name: String,
    preferred_username: Option<String>,
    birthdate: String,
    gender: String,
    birthplace: String,
    birthcountry: String,
    email: String,
    /// When the identity came back (microseconds): the second factor must be proved after.
    at: i64,
}

impl Identified {
    fn pivot(&self) -> IdentitePivot {
        IdentitePivot {
            given_name: self.given_name.clone(),
            family_name: self.family_name.clone(),
            preferred_username: self.preferred_username.clone(),
            birthdate: self.birthdate.clone(),
            gender: self.gender.clone(),
            birthplace: self.birthplace.clone(),
            birthcountry: self.birthcountry.clone(),
            email: self.email.clone(),
        }
    }
}

#[derive(Clone, Default, Serialize, Deserialize)]
struct Draft {
    organisation_id: i64,
    demarches: Vec<String>,
    duree_jours: i64,
    usager: Option<Identified>,
    /// Why the last identification failed: title and message, shown once on the form.
    erreur: Option<(String, String)>,
}

impl Draft {
    fn demarches(&self) -> Vec<Demarche> {
        self.demarches.iter().filter_map(|k| Demarche::from_key(k)).collect()
    }
}

fn load(session: &Session) -> Option<Draft> {
    session.get::<Draft>(DRAFT_KEY).ok().flatten()
}

fn keep(session: &Session, d: &Draft) -> Result<(), actix_session::SessionInsertError> {
    session.insert(DRAFT_KEY, d)
}

/// The aidant's current organisation and the démarches it allows.
async fn organisation(state: &web::Data<AppState>, aidant_id: i64) -> Result<Option<(i64, Vec<Demarche>)>, HttpResponse> {
    let st = state.clone();
    let found = web::block(move || -> Result<Option<(i64, Vec<Demarche>)>, StoreError> {
        let Some(a) = st.db.read(|c| auth::find_active_by_id(c, aidant_id))? else { return Ok(None) };
        let Some(org_id) = a.current_organisation_id else { return Ok(None) };
        let org = st.db.read(|c| broker_store::admin::find_organisation(c, org_id))?;
        Ok(Some((org_id, org.allowed())))
    })
    .await;
    server_side(found, "organisation lookup failed")
}

/// The signed-in aidant, their current organisation and the démarches it allows, or the
/// response to send (sign-in, or no organisation).
async fn aidant_organisation(state: &web::Data<AppState>, session: &Session) -> Result<(SignedIn, i64, Vec<Demarche>), HttpResponse> {
    let who = guard::require_signed_in(state, session, FORM)?;
    match organisation(state, who.aidant_id).await? {
        Some((org_id, allowed)) => Ok((who, org_id, allowed)),
        None => Err(no_organisation()),
    }
}

fn no_organisation() -> HttpResponse {
    pages::error_page(
        StatusCode::FORBIDDEN,
        "Aucune structure",
        "Vous n'êtes rattaché à aucune structure : vous ne pouvez pas établir de mandat. Contactez le référent de votre structure.",
    )
}

pub struct ChoiceView {
    pub key: &'static str,
    pub title: &'static str,
    pub description: &'static str,
    pub checked: bool,
    pub argent: bool,
}

pub struct DureeView {
    pub days: i64,
    pub label: &'static str,
    pub checked: bool,
}

fn duree_label(d: Duree) -> &'static str {
    match d {
        Duree::UnJour => "1 jour",
        Duree::UnMois => "1 mois",
        Duree::SixMois => "6 mois",
        Duree::UnAn => "1 an",
    }
}

const ARGENT_WARNING: &str = "La démarche « Argent » permet d'agir sur les impôts, les prestations et les comptes de la \
personne : ne la cochez que si la personne vous le demande expressément, et ne réalisez jamais de paiement à sa place.";

#[derive(Template)]
#[template(path = "mandat_form.html")]
struct FormPage {
    header: Header,
    csrf: String,
    error: Option<(String, String)>,
    demarches: Vec<ChoiceView>,
    durees: Vec<DureeView>,
    argent_warning: &'static str,
    argent_checked: bool,
    fc_available: bool,
}

async fn form_page(state: &web::Data<AppState>, session: &Session, aidant_id: i64, allowed: &[Demarche], d: &Draft, error: Option<(String, String)>, status: StatusCode) -> HttpResponse {
    let header = pages::header_for(state, session, aidant_id).await;
    let chosen = d.demarches();
    let demarches = allowed
        .iter()
        .map(|&x| ChoiceView { key: x.key(), title: x.title(), description: x.description(), checked: chosen.contains(&x), argent: x == Demarche::Argent })
        .collect();
    let durees = Duree::ALL.into_iter().map(|x| DureeView { days: x.days(), label: duree_label(x), checked: x.days() == d.duree_jours }).collect();
    render_with(
        status,
        &FormPage {
            header,
            csrf: guard::csrf_token(session),
            error,
            demarches,
            durees,
            argent_warning: ARGENT_WARNING,
            argent_checked: chosen.contains(&Demarche::Argent),
            fc_available: state.franceconnect.is_some(),
        },
    )
}

#[derive(Deserialize)]
pub struct FormQuery {
    state: Option<String>,
}

/// The choices form. Coming back from FranceConnect's logout (with `state`) once the
/// usager is identified leads to the summary.
pub async fn form(state: web::Data<AppState>, session: Session, q: web::Query<FormQuery>) -> HttpResponse {
    if crate::usager_space::returning_from_logout(&session) {
        return guard::see_other("/espace-usager");
    }
    let (who, org_id, allowed) = match aidant_organisation(&state, &session).await {
        Ok(v) => v,
        Err(r) => return r,
    };
    let mut d = load(&session).filter(|d| d.organisation_id == org_id).unwrap_or_default();
    if q.state.is_some() && d.usager.is_some() {
        return guard::see_other(RECAP);
    }
    let error = d.erreur.take();
    if error.is_some() && keep(&session, &d).is_err() {
        return pages::server_error();
    }
    form_page(&state, &session, who.aidant_id, &allowed, &d, error, StatusCode::OK).await
}

/// The choices, then off to FranceConnect.
pub async fn submit(state: web::Data<AppState>, session: Session, body: web::Form<Vec<(String, String)>>) -> HttpResponse {
    let field = |name: &str| body.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str());
    if !guard::csrf_ok(&session, field("csrf").unwrap_or("")) {
        return guard::csrf_refused();
    }
    let (who, org_id, allowed) = match aidant_organisation(&state, &session).await {
        Ok(v) => v,
        Err(r) => return r,
    };
    let mut chosen: Vec<Demarche> = Vec::new();
    let mut unknown = false;
    for (_, v) in body.iter().filter(|(k, _)| k == "demarche") {
        match Demarche::from_key(v).filter(|d| allowed.contains(d)) {
            Some(d) if !chosen.contains(&d) => chosen.push(d),
            Some(_) => {}
            None => unknown = true,
        }
    }
    chosen.sort();
    let duree = field("duree").and_then(|v| v.parse::<i64>().ok()).and_then(Duree::from_days);
    let d = Draft {
        organisation_id: org_id,
        demarches: chosen.iter().map(|x| x.key().to_owned()).collect(),
        duree_jours: duree.map(Duree::days).unwrap_or(0),
        usager: None,
        erreur: None,
    };
    let problem = if unknown {
        Some("Une des démarches choisies n'est pas ouverte à votre structure. Choisissez parmi la liste.")
    } else if chosen.is_empty() {
        Some("Choisissez au moins une démarche.")
    } else if duree.is_none() {
        Some("Choisissez la durée du mandat.")
    } else {
        None
    };
    if let Some(p) = problem {
        return form_page(&state, &session, who.aidant_id, &allowed, &d, Some(("Le formulaire est incomplet".into(), p.into())), StatusCode::UNPROCESSABLE_ENTITY).await;
    }
    let Some(fc) = state.franceconnect.clone() else {
        return pages::error_page(
            StatusCode::SERVICE_UNAVAILABLE,
            "FranceConnect n'est pas disponible",
            "L'identification des usagers avec FranceConnect n'est pas configurée sur ce service : aucun mandat ne peut être établi pour le moment.",
        );
    };
    if keep(&session, &d).is_err() {
        return pages::server_error();
    }
    match fc.begin().await {
        Ok((url, pending)) => {
            if store_pending(&session, &pending).is_err() {
                return pages::server_error();
            }
            guard::see_other(url.as_str())
        }
        Err(e) => back_to_form(&session, d, &e.to_string(), e.title(), &e.message()),
    }
}

/// Keeps the choices with a message for the form, and goes back to it.
fn back_to_form(session: &Session, mut d: Draft, detail: &str, title: &str, message: &str) -> HttpResponse {
    tracing::warn!(detail = %broker_core::validate::log_value(detail), "FranceConnect identification failed");
    d.usager = None;
    d.erreur = Some((title.to_owned(), message.to_owned()));
    match keep(session, &d) {
        Ok(()) => guard::see_other(FORM),
        Err(_) => pages::server_error(),
    }
}

#[derive(Deserialize)]
pub struct CallbackQuery {
    code: Option<String>,
    state: Option<String>,
    error: Option<String>,
    error_description: Option<String>,
}

/// FranceConnect's answer: the identity is verified and kept in the draft, then the
/// usager's FranceConnect session is ended.
pub async fn callback(state: web::Data<AppState>, session: Session, q: web::Query<CallbackQuery>) -> HttpResponse {
    if crate::usager_space::owns_callback(&session, q.state.as_deref()) {
        let error = q.error.as_deref().map(|e| (e, q.error_description.as_deref()));
        return crate::usager_space::callback(state, session, q.code.as_deref(), q.state.as_deref().unwrap_or(""), error).await;
    }
    let who = match guard::require_signed_in(&state, &session, FORM) {
        Ok(w) => w,
        Err(r) => return r,
    };
    let Some(d) = load(&session) else {
        session.remove(FC_PENDING_KEY);
        return guard::see_other(FORM);
    };
    let Some(fc) = state.franceconnect.clone() else { return guard::see_other(FORM) };
    let pending = take_pending(&session, q.state.as_deref().unwrap_or(""));
    if let Some(error) = q.error.as_deref() {
        let e = callback_error(error, q.error_description.as_deref());
        if pending.is_none() {
            return foreign_answer(&session, d);
        }
        return back_to_form(&session, d, &e.to_string(), e.title(), &e.message());
    }
    let Some(pending) = pending else { return foreign_answer(&session, d) };
    let Some(code) = q.code.as_deref().filter(|c| !c.is_empty()) else {
        let e = FcError::Token("no code on the callback".into());
        return back_to_form(&session, d, &e.to_string(), e.title(), &e.message());
    };
    let got = match fc.finish(code, &pending.nonce).await {
        Ok(g) => g,
        Err(e) => return back_to_form(&session, d, &e.to_string(), e.title(), &e.message()),
    };
    let i = &got.identity;
    let mut d = d;
    d.erreur = None;
    d.usager = Some(Identified {
        usager_key: usager_key(&state.usager_salt, &got.fc_sub),
        given_name: i.given_name.clone(),
        family_name: i.family_name.clone(),
        preferred_username: i.preferred_username.clone(),
        birthdate: i.birthdate.clone(),
        gender: i.gender.clone(),
        birthplace: i.birthplace.clone(),
        birthcountry: i.birthcountry.clone(),
        email: i.email.clone(),
        at: state.clock.now().micros(),
    });
    if keep(&session, &d).is_err() {
        return pages::server_error();
    }
    tracing::info!(aidant = who.aidant_id, "usager identified through FranceConnect");
    let logout_state = data_encoding::BASE64URL_NOPAD.encode(&random_bytes::<32>());
    match fc.logout_url(&got.id_token, &logout_state).await {
        Ok(url) => guard::see_other(url.as_str()),
        Err(e) => {
            tracing::warn!(error = %e, "FranceConnect logout URL unavailable");
            guard::see_other(RECAP)
        }
    }
}

/// An answer that does not belong to a request made from this session.
fn foreign_answer(session: &Session, d: Draft) -> HttpResponse {
    back_to_form(
        session,
        d,
        "callback: state unknown to this session",
        "L'identification a échoué",
        "La réponse de FranceConnect ne correspond à aucune demande faite depuis ce navigateur : par sécurité, elle n'a pas \
         été utilisée. Relancez l'identification depuis ce navigateur, dans un seul onglet.",
    )
}

pub struct IdentityView {
    pub given_name: String,
    pub family_name: String,
    pub preferred_username: Option<String>,
    pub birthdate: String,
    pub birthplace: String,
    pub birthcountry: String,
    pub email: String,
}

#[derive(Template)]
#[template(path = "mandat_recap.html")]
struct RecapPage {
    header: Header,
    csrf: String,
    error: Option<String>,
    usager: IdentityView,
    demarches: Vec<DemarcheView>,
    argent: bool,
    argent_warning: &'static str,
    duree: &'static str,
    expires: String,
    reauth_url: String,
}

fn birthdate_fr(d: &str) -> String {
    let p: Vec<&str> = d.split('-').collect();
    match p.as_slice() {
        [y, "00", "00"] => format!("{y} (jour et mois inconnus)"),
        [y, m, "00"] => format!("{m}/{y} (jour inconnu)"),
        [y, m, day] => format!("{day}/{m}/{y}"),
        _ => d.to_owned(),
    }
}

async fn recap_page(state: &web::Data<AppState>, session: &Session, aidant_id: i64, d: &Draft, u: &Identified, error: Option<String>, status: StatusCode) -> HttpResponse {
    let header = pages::header_for(state, session, aidant_id).await;
    let chosen = d.demarches();
    let duree = Duree::from_days(d.duree_jours).unwrap_or(Duree::UnJour);
    let mut suite = url::form_urlencoded::Serializer::new(String::new());
    suite.append_pair("suite", RECAP);
    render_with(
        status,
        &RecapPage {
            header,
            csrf: guard::csrf_token(session),
            error,
            usager: IdentityView {
                given_name: u.given_name.clone(),
                family_name: u.family_name.clone(),
                preferred_username: u.preferred_username.clone(),
                birthdate: birthdate_fr(&u.birthdate),
                birthplace: u.birthplace.clone(),
                birthcountry: u.birthcountry.clone(),
                email: u.email.clone(),
            },
            demarches: chosen.iter().map(|x| DemarcheView { key: x.key(), title: x.title(), description: x.description() }).collect(),
            argent: chosen.contains(&Demarche::Argent),
            argent_warning: ARGENT_WARNING,
            duree: duree_label(duree),
            expires: duree.expiry(state.clock.now()).french_date(),
            reauth_url: format!("/reauthentification?{}", suite.finish()),
        },
    )
}

/// The draft with an identified usager, for the aidant's current organisation.
async fn identified_draft(state: &web::Data<AppState>, session: &Session, aidant_id: i64) -> Result<(Draft, Identified), HttpResponse> {
    let org = match organisation(state, aidant_id).await? {
        Some((id, _)) => id,
        None => return Err(no_organisation()),
    };
    match load(session).filter(|d| d.organisation_id == org) {
        Some(d) => match d.usager.clone() {
            Some(u) if Duree::from_days(d.duree_jours).is_some() && !d.demarches.is_empty() => Ok((d, u)),
            _ => Err(guard::see_other(FORM)),
        },
        None => Err(guard::see_other(FORM)),
    }
}

pub async fn recap(state: web::Data<AppState>, session: Session) -> HttpResponse {
    let who = match guard::require_signed_in(&state, &session, RECAP) {
        Ok(w) => w,
        Err(r) => return r,
    };
    match identified_draft(&state, &session, who.aidant_id).await {
        Ok((d, u)) => recap_page(&state, &session, who.aidant_id, &d, &u, None, StatusCode::OK).await,
        Err(r) => r,
    }
}

#[derive(Deserialize)]
pub struct ConfirmForm {
    csrf: String,
    consentement: Option<String>,
    code: Option<String>,
}

/// Checks the TOTP code typed on the summary; journaled like a re-authentication.
async fn verify_code(state: &web::Data<AppState>, req: &HttpRequest, aidant_id: i64, code: String) -> Result<bool, HttpResponse> {
    let st = state.clone();
    let _ = req;
    let result = web::block(move || reauthenticate_totp(&st, aidant_id, &code)).await;
    server_side(result, "second factor check failed").map(|ok| ok == Some(true))
}

/// The aidant confirms: consent, second factor, then everything in one transaction.
pub async fn confirm(state: web::Data<AppState>, session: Session, req: HttpRequest, form: web::Form<ConfirmForm>) -> HttpResponse {
    if !guard::csrf_ok(&session, &form.csrf) {
        return guard::csrf_refused();
    }
    let who = match guard::require_signed_in(&state, &session, RECAP) {
        Ok(w) => w,
        Err(r) => return r,
    };
    let (d, u) = match identified_draft(&state, &session, who.aidant_id).await {
        Ok(v) => v,
        Err(r) => return r,
    };
    if form.consentement.as_deref() != Some("oui") {
        let msg = "Cochez la case pour attester avoir informé la personne avant de créer le mandat.".to_owned();
        return recap_page(&state, &session, who.aidant_id, &d, &u, Some(msg), StatusCode::UNPROCESSABLE_ENTITY).await;
    }
    let now = state.clock.now();
    let code = form.code.as_deref().map(str::trim).unwrap_or("").to_owned();
    if !code.is_empty() {
        match verify_code(&state, &req, who.aidant_id, code).await {
            Ok(true) => {
                if guard::mark_fresh(&session, state.clock.now(), guard::AMR_TOTP).is_err() {
                    return pages::server_error();
                }
            }
            Ok(false) => {
                let msg = "Le code est incorrect ou a déjà servi. Attendez le code suivant et réessayez.".to_owned();
                return recap_page(&state, &session, who.aidant_id, &d, &u, Some(msg), StatusCode::UNPROCESSABLE_ENTITY).await;
            }
            Err(r) => return r,
        }
    } else if !(who.is_fresh(now) && who.fresh_at > Timestamp::from_micros(u.at)) {
        let mut q = url::form_urlencoded::Serializer::new(String::new());
        q.append_pair("suite", RECAP);
        return guard::see_other(&format!("/reauthentification?{}", q.finish()));
    }
    let st = state.clone();
    let aidant_id = who.aidant_id;
    let (org, demarches, duree) = (d.organisation_id, d.demarches(), Duree::from_days(d.duree_jours).unwrap_or(Duree::UnJour));
    let pivot = u.pivot();
    let key = u.usager_key.clone();
    let result = web::block(move || {
        let n = NewMandatForUsager { organisation_id: org, aidant_id, usager_key: &key, identity: &pivot, demarches, duree };
        create_mandat_with_attestation(&st.db, &n, st.clock.now())
    })
    .await;
    match result {
        Ok(Ok(created)) => {
            session.remove(DRAFT_KEY);
            guard::see_other(&format!("/mandats/{}/attestation", created.mandat.mandat_id))
        }
        Ok(Err(StoreError::Invalid(msg))) => recap_page(&state, &session, who.aidant_id, &d, &u, Some(msg), StatusCode::UNPROCESSABLE_ENTITY).await,
        Ok(Err(e)) => {
            tracing::error!(error = %e, "mandat creation failed");
            pages::server_error()
        }
        Err(_) => pages::server_error(),
    }
}
