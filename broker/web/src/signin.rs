//! Sign-in with e-mail + TOTP code, then a single-use link sent by e-mail; sign-out;
//! re-authentication for sensitive actions.
//!
//! Every failure shows the same text, whether the e-mail is unknown, the aidant
//! deactivated, or the code wrong or already used. Failures are counted and bounded by
//! [`crate::throttle`], so that a stranger cannot lock the aidant out.

use crate::guard::{self, SignedIn, K_LINK_BINDING};
use broker_core::notice::Notice;
use broker_store::mail_queue::{self, NewMail};
use crate::page_error::{blocking, PageError};
use crate::pages::{self, render};
use crate::throttle::{self, Attempt};
use crate::AppState;
use actix_session::Session;
use actix_web::{web, HttpRequest, HttpResponse};
use askama::Template;
use broker_core::journal::{Action, Entry};
use broker_core::secret::{constant_time_eq, random_bytes, sha256_hex};
use broker_store::admin::Aidant;
use broker_store::{auth, journal, StoreError};
use serde::{Deserialize, Serialize};
use std::time::Duration;

pub const GENERIC_FAILURE: &str = "L'adresse e-mail ou le code est incorrect. Vérifiez-les et réessayez.";
pub const LINK_FAILURE: &str = "Ce lien de connexion n'est pas valable : il a expiré, il a déjà servi, ou il a été demandé depuis un autre navigateur. Recommencez la connexion depuis ce navigateur.";
pub const LOCKED: &str = "Trop de tentatives de connexion ont échoué. Pour votre sécurité, la connexion est bloquée pendant 15 minutes : réessayez après ce délai.";
pub const LINK_TTL_SECONDS: i64 = 300;

#[derive(Template)]
#[template(path = "signin.html")]
struct SigninPage<'a> {
    header: pages::Header,
    csrf: String,
    email: &'a str,
    error: Option<&'a str>,
    suite: &'a str,
}

#[derive(Template)]
#[template(path = "signin_sent.html")]
struct SentPage {
    header: pages::Header,
}

#[derive(Template)]
#[template(path = "link_confirm.html")]
struct LinkPage<'a> {
    header: pages::Header,
    csrf: String,
    jeton: &'a str,
}

#[derive(Template)]
#[template(path = "reauth.html")]
struct ReauthPage<'a> {
    header: pages::Header,
    csrf: String,
    error: Option<&'a str>,
    suite: &'a str,
}

#[derive(Deserialize)]
pub struct SuiteQuery {
    suite: Option<String>,
}

pub async fn form(state: web::Data<AppState>, session: Session, q: web::Query<SuiteQuery>) -> HttpResponse {
    if SignedIn::from_session(&session, state.clock.now()).is_some() {
        return guard::see_other(&guard::safe_next(q.suite.as_deref()));
    }
    let suite = guard::safe_next(q.suite.as_deref());
    render(&SigninPage { header: pages::Header::anonymous_with_csrf(&session), csrf: guard::csrf_token(&session), email: "", error: None, suite: &suite })
}

#[derive(Deserialize)]
pub struct SigninForm {
    csrf: String,
    email: String,
    code: String,
    suite: Option<String>,
}

/// What the e-mailed link stands for, kept in the cache under the hash of its token.
#[derive(Serialize, Deserialize)]
struct LinkRecord {
    aidant_id: i64,
    device_id: i64,
    /// SHA-256 of the random value kept in the requesting browser's session.
    binding: String,
    expires_at: i64,
    suite: String,
}

fn link_key(token: &str) -> String {
    format!("signin-link:{}", sha256_hex(token.as_bytes()))
}

/// The client's address, for rate limits: from the proxy's headers when the broker is
/// configured to be behind one (they could be forged otherwise), from the socket if not.
pub fn client_ip(state: &AppState, req: &HttpRequest) -> String {
    if state.behind_proxy {
        // The right-most `X-Forwarded-For` entry is the one the proxy wrote; `Forwarded`
        // and the entries before are the client's to choose, so they are not read.
        let forwarded = req.headers().get_all("x-forwarded-for").filter_map(|v| v.to_str().ok()).last();
        if let Some(ip) = forwarded.and_then(|v| v.rsplit(',').next()).and_then(|ip| ip.trim().parse::<std::net::IpAddr>().ok()) {
            return ip.to_string();
        }
    }
    req.peer_addr().map(|a| a.ip().to_string()).unwrap_or_default()
}

enum Outcome {
    Locked,
    Failed,
    Sent,
}

pub async fn submit(state: web::Data<AppState>, session: Session, req: HttpRequest, form: web::Form<SigninForm>) -> Result<HttpResponse, PageError> {
    if !guard::csrf_ok(&session, &form.csrf) {
        return Err(PageError::CsrfRefused);
    }
    let form = form.into_inner();
    let suite = guard::safe_next(form.suite.as_deref());
    let ip = client_ip(&state, &req);
    let browsers = throttle::browser_cookies(&req);
    let binding = hex::encode(random_bytes::<32>());
    let st = state.clone();
    let (email, code, b, s) = (form.email.clone(), form.code.clone(), binding.clone(), suite.clone());
    let outcome = blocking(move || -> Result<Outcome, StoreError> {
        let now = st.clock.now();
        let found = if broker_core::validate::email(&email).is_ok() { st.db.read(|c| auth::find_active_aidant(c, &email))? } else { None };
        let browser = found.as_ref().and_then(|a| throttle::recognised_browser(&st, &browsers, a.id));
        let attempt = Attempt::Code { email: email.clone(), ip: ip.clone(), browser };
        if throttle::is_locked(&st, &attempt)? {
            return Ok(Outcome::Locked);
        }
        let matched = match found {
            Some(a) => auth::verify_totp(&st.db, &st.sealer, a.id, &code, now)?.map(|m| (a, m)),
            // The same read of devices (for an id no aidant has), so that an unknown or
            // deactivated address is not told apart by the time the answer takes.
            None => auth::verify_totp(&st.db, &st.sealer, 0, &code, now)?.and(None),
        };
        let Some((aidant, m)) = matched else {
            throttle::record_failure(&st, &attempt)?;
            return Ok(Outcome::Failed);
        };
        let token = hex::encode(random_bytes::<32>());
        let record = LinkRecord {
            aidant_id: aidant.id,
            device_id: m.device_id,
            binding: sha256_hex(b.as_bytes()),
            expires_at: now.plus_seconds(LINK_TTL_SECONDS).micros(),
            suite: s,
        };
        let body = serde_json::to_vec(&record).expect("link record serialises");
        st.cache.put(&link_key(&token), &body, Duration::from_secs(LINK_TTL_SECONDS as u64))?;
        let mut link = url::Url::parse(&format!("{}/connexion/lien", st.issuer)).map_err(|e| StoreError::Invalid(e.to_string()))?;
        link.query_pairs_mut().append_pair("jeton", &token);
        let text = format!(
            "Bonjour {},\n\nPour vous connecter à Aidants Connect, ouvrez ce lien dans le navigateur où vous avez saisi votre code, dans les 5 minutes :\n\n{}\n\nSi vous n'avez pas demandé à vous connecter, ignorez ce message : personne ne peut se connecter sans ce lien et votre code.\n\nAidants Connect\n",
            aidant.first_name, link
        );
        let notice = Notice::Message { subject: "Votre lien de connexion à Aidants Connect".into(), text };
        let key = format!("connexion:{}", sha256_hex(token.as_bytes()));
        let mail = NewMail { key, recipient: &aidant.email, notice: &notice, organisation: None, aidant: Some(aidant.id), usager: None };
        st.db.write(|c| mail_queue::enqueue(c, &mail, now))?;
        st.mail.wake();
        if st.mailer.is_outbox() {
            println!("Lien de connexion (développement) : {link}");
        }
        Ok(Outcome::Sent)
    })
    .await
    .map_err(|e| PageError::server(format!("sign-in failed: {e}")))?;
    let again = |error| render(&SigninPage { header: pages::Header::anonymous_with_csrf(&session), csrf: guard::csrf_token(&session), email: &form.email, error: Some(error), suite: &suite });
    match outcome {
        Outcome::Sent => {
            session.insert(K_LINK_BINDING, &binding).map_err(PageError::server)?;
            Ok(render(&SentPage { header: pages::Header::anonymous() }))
        }
        Outcome::Failed => Ok(again(GENERIC_FAILURE)),
        Outcome::Locked => Ok(again(LOCKED)),
    }
}

#[derive(Deserialize)]
pub struct LinkQuery {
    jeton: Option<String>,
}

/// The e-mailed link lands here: a page with a button, so that mail scanners that
/// follow links do not use it up.
pub async fn link_page(session: Session, q: web::Query<LinkQuery>) -> HttpResponse {
    let jeton = q.jeton.clone().unwrap_or_default();
    render(&LinkPage { header: pages::Header::anonymous(), csrf: guard::csrf_token(&session), jeton: &jeton })
}

#[derive(Deserialize)]
pub struct LinkForm {
    csrf: String,
    jeton: String,
}

pub async fn link_confirm(state: web::Data<AppState>, session: Session, form: web::Form<LinkForm>) -> Result<HttpResponse, PageError> {
    if !guard::csrf_ok(&session, &form.csrf) {
        return Err(PageError::CsrfRefused);
    }
    let binding = session.get::<String>(K_LINK_BINDING).ok().flatten().unwrap_or_default();
    let st = state.clone();
    let token = form.jeton.clone();
    let result = blocking(move || -> Result<Option<(i64, String)>, StoreError> {
        let now = st.clock.now();
        let key = link_key(&token);
        let Some(raw) = st.cache.get(&key)? else { return Ok(None) };
        let Ok(record) = serde_json::from_slice::<LinkRecord>(&raw) else { return Ok(None) };
        if binding.is_empty() || !constant_time_eq(record.binding.as_bytes(), sha256_hex(binding.as_bytes()).as_bytes()) {
            return Ok(None);
        }
        // Single use: of two concurrent submissions, one takes it.
        if st.cache.take(&key)?.is_none() || now.micros() >= record.expires_at {
            return Ok(None);
        }
        let Some(aidant) = st.db.read(|c| auth::find_active_by_id(c, record.aidant_id))? else { return Ok(None) };
        journal_totp(&st, Action::AidantLogin, &aidant, record.device_id)?;
        Ok(Some((aidant.id, record.suite)))
    })
    .await
    .map_err(|e| PageError::server(format!("sign-in link failed: {e}")))?;
    let Some((aidant_id, suite)) = result else {
        return Err(PageError::page(actix_web::http::StatusCode::BAD_REQUEST, "Lien de connexion non valable", LINK_FAILURE));
    };
    guard::sign_in(&session, aidant_id, state.clock.now(), guard::AMR_TOTP).map_err(PageError::server)?;
    let mut res = guard::see_other(&guard::safe_next(Some(&suite)));
    let _ = res.add_cookie(&throttle::recognised_browser_cookie(&state, aidant_id));
    Ok(res)
}

#[derive(Deserialize)]
pub struct CsrfForm {
    csrf: String,
}

pub async fn sign_out(state: web::Data<AppState>, session: Session, form: web::Form<CsrfForm>) -> HttpResponse {
    if !guard::csrf_ok(&session, &form.csrf) {
        return guard::csrf_refused();
    }
    if let Some(who) = SignedIn::from_session(&session, state.clock.now()) {
        let st = state.clone();
        let _ = web::block(move || {
            let org = st.db.read(|c| auth::find_active_by_id(c, who.aidant_id)).ok().flatten().and_then(|a| a.current_organisation_id);
            st.db.write(|c| journal::append(c, &[Entry::new(Action::Logout).aidant(who.aidant_id).in_organisation(org)]))
        })
        .await;
    }
    session.purge();
    guard::see_other("/")
}

pub async fn reauth_form(state: web::Data<AppState>, session: Session, q: web::Query<SuiteQuery>) -> Result<HttpResponse, PageError> {
    let suite = guard::safe_next(q.suite.as_deref());
    let who = guard::signed_in(&state, &session, &suite)?;
    let header = pages::header_for(&state, &session, who.aidant_id).await;
    Ok(render(&ReauthPage { header, csrf: guard::csrf_token(&session), error: None, suite: &suite }))
}

#[derive(Deserialize)]
pub struct ReauthForm {
    csrf: String,
    code: String,
    suite: Option<String>,
}

/// Journals `action` of the aidant, proved with the TOTP device `device`.
fn journal_totp(st: &AppState, action: Action, aidant: &Aidant, device: i64) -> Result<(), StoreError> {
    let e = Entry::new(action).aidant(aidant.id).in_organisation(aidant.current_organisation_id).detail("method", "totp").detail("device", device);
    // Sign-ins come in numbers at the start of the day: committed with others'.
    auth::record_signin(&st.db, aidant.id, e, st.clock.now())
}

/// Checks the TOTP `code` of the aidant re-authenticating from `ip`: a success is
/// journaled, a failure counted. `None` when the aidant is not active any more,
/// `Some(false)` when the code is refused or the sign-in locked.
pub(crate) fn reauthenticate_totp(st: &AppState, aidant_id: i64, code: &str) -> Result<Option<bool>, StoreError> {
    let now = st.clock.now();
    let Some(aidant) = st.db.read(|c| auth::find_active_by_id(c, aidant_id))? else { return Ok(None) };
    let attempt = Attempt::Reauthentication { aidant_id: aidant.id };
    if throttle::is_locked(st, &attempt)? {
        return Ok(Some(false));
    }
    match auth::verify_totp(&st.db, &st.sealer, aidant.id, code, now)? {
        Some(m) => {
            journal_totp(st, Action::Reauthentication, &aidant, m.device_id)?;
            Ok(Some(true))
        }
        None => {
            throttle::record_failure(st, &attempt)?;
            Ok(Some(false))
        }
    }
}

pub async fn reauth_submit(state: web::Data<AppState>, session: Session, form: web::Form<ReauthForm>) -> Result<HttpResponse, PageError> {
    if !guard::csrf_ok(&session, &form.csrf) {
        return Err(PageError::CsrfRefused);
    }
    let suite = guard::safe_next(form.suite.as_deref());
    let who = guard::signed_in(&state, &session, &suite)?;
    let st = state.clone();
    let code = form.code.clone();
    let result = blocking(move || reauthenticate_totp(&st, who.aidant_id, &code)).await.map_err(|e| PageError::server(format!("re-authentication failed: {e}")))?;
    match result {
        Some(true) => {
            guard::mark_fresh(&session, state.clock.now(), guard::AMR_TOTP).map_err(PageError::server)?;
            Ok(guard::see_other(&suite))
        }
        Some(false) => {
            let header = pages::header_for(&state, &session, who.aidant_id).await;
            let error = Some("Le code est incorrect ou a déjà servi. Attendez le code suivant et réessayez.");
            Ok(render(&ReauthPage { header, csrf: guard::csrf_token(&session), error, suite: &suite }))
        }
        None => {
            session.purge();
            Ok(guard::see_other("/connexion"))
        }
    }
}
