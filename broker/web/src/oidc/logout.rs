//! `end_session_endpoint` (`/logout`, GET or POST): ends the aidant's session (aidants
//! work on shared computers), then goes back to the client's registered post-logout URI
//! with `state`, or shows a page. With an `id_token_hint` the broker signed, the session
//! ends in every case; without one, a signed-in aidant confirms first (any page could
//! send the browser here). A URI that is not registered for the client named by
//! `client_id` or by the `id_token_hint`'s audience is never followed.

use super::{form_pairs, hs256_secret};
use crate::guard::{self, SignedIn};
use crate::pages;
use crate::AppState;
use actix_session::Session;
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use askama::Template;
use broker_core::client::IdTokenAlg;
use broker_core::journal::{Action, Entry};
use broker_core::oidc::claims::{verify_broker_jwt, verify_hs256};
use broker_store::journal;

pub async fn logout_get(req: HttpRequest, state: web::Data<AppState>, session: Session) -> HttpResponse {
    logout(form_pairs(req.query_string().as_bytes()), state, session, false).await
}

/// A POST from a client, or the aidant's confirmation (the form carries `csrf`).
pub async fn logout_post(body: web::Bytes, state: web::Data<AppState>, session: Session) -> HttpResponse {
    let p = form_pairs(&body);
    let confirmed = match param(&p, "csrf") {
        Some(token) if guard::csrf_ok(&session, token) => true,
        Some(_) => return guard::csrf_refused(),
        None => false,
    };
    logout(p, state, session, confirmed).await
}

/// The parameters a confirmation carries over.
const CARRIED: [&str; 4] = ["client_id", "post_logout_redirect_uri", "state", "ui_locales"];

#[derive(Template)]
#[template(path = "logout_confirm.html")]
struct ConfirmPage {
    header: pages::Header,
    csrf: String,
    carried: Vec<(&'static str, String)>,
}

fn confirm_page(session: &Session, p: &[(String, String)]) -> HttpResponse {
    let carried = CARRIED.iter().filter_map(|k| param(p, k).map(|v| (*k, v.to_owned()))).collect();
    pages::render(&ConfirmPage { header: pages::Header::anonymous_with_csrf(session), csrf: guard::csrf_token(session), carried })
}

fn param<'a>(p: &'a [(String, String)], name: &str) -> Option<&'a str> {
    p.iter().find(|(k, v)| k == name && !v.is_empty()).map(|(_, v)| v.as_str())
}

fn refused() -> HttpResponse {
    pages::error_page(
        StatusCode::BAD_REQUEST,
        "Déconnexion : adresse de retour refusée",
        "Votre session Aidants Connect est terminée. L'adresse de retour demandée n'est pas enregistrée pour ce service en ligne : vous n'y êtes pas renvoyé. Retournez sur le service en ligne par son adresse habituelle.",
    )
}

enum Target {
    None,
    Redirect(String),
    Refused,
}

/// The audience of an id_token hint the broker signed: with one of its keys, or, for an
/// HS256 client, with that client's secret. `None` when it signed nothing of the kind.
fn hint_audience(st: &AppState, h: &str) -> Result<Option<String>, String> {
    let aud = |claims: &serde_json::Value| claims.get("aud").and_then(|a| a.as_str()).map(str::to_owned);
    if let Some(a) = verify_broker_jwt(h, &st.signing.keys()).as_ref().and_then(aud) {
        return Ok(Some(a));
    }
    // An HS256 hint: its audience names the client whose secret verifies it.
    let unverified = h.split('.').nth(1).and_then(|b| data_encoding::BASE64URL_NOPAD.decode(b.as_bytes()).ok()).and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok());
    let Some(a) = unverified.as_ref().and_then(aud) else { return Ok(None) };
    match st.clients.get(&st.db, &a).map_err(|e| e.to_string())? {
        Some(c) if c.id_token_alg == IdTokenAlg::Hs256.key() => {
            let secret = hs256_secret(st, &c).map_err(|e| e.to_string())?;
            Ok(secret.and_then(|s| verify_hs256(h, &s)).and_then(|c| aud(&c)))
        }
        _ => Ok(None),
    }
}

/// Where the logout goes. The client is `client_id`, or the audience of the hint
/// (`hinted`: `None` without a hint, `Some(None)` for a hint the broker did not sign).
fn target_of(st: &AppState, hinted: Option<Option<String>>, client_id: Option<String>, post_logout: Option<String>) -> Result<Target, String> {
    let client_id = match (hinted, client_id) {
        (None, c) => c,
        (Some(None), _) => return Ok(if post_logout.is_some() { Target::Refused } else { Target::None }),
        (Some(Some(a)), Some(c)) if a != c => return Ok(Target::Refused),
        (Some(Some(a)), _) => Some(a),
    };
    let Some(uri) = post_logout else { return Ok(Target::None) };
    let Some(client_id) = client_id else { return Ok(Target::Refused) };
    match st.clients.get(&st.db, &client_id).map_err(|e| e.to_string())? {
        Some(c) if c.post_logout_uri_list().contains(&uri.as_str()) => Ok(Target::Redirect(uri)),
        _ => Ok(Target::Refused),
    }
}

async fn logout(p: Vec<(String, String)>, state: web::Data<AppState>, session: Session, confirmed: bool) -> HttpResponse {
    let hint = param(&p, "id_token_hint").map(str::to_owned);
    let client_id = param(&p, "client_id").map(str::to_owned);
    let post_logout = param(&p, "post_logout_redirect_uri").map(str::to_owned);
    let st = state.clone();
    let target = web::block(move || -> Result<(Target, bool), String> {
        // `Some(None)`: a hint the broker did not sign (or for no client).
        let hinted = hint.as_deref().map(|h| hint_audience(&st, h)).transpose()?;
        let vouched = matches!(hinted, Some(Some(_)));
        Ok((target_of(&st, hinted, client_id, post_logout)?, vouched))
    })
    .await;
    let (target, vouched) = match target {
        Ok(Ok(t)) => t,
        Ok(Err(e)) => {
            tracing::error!(error = %e, "logout failed");
            return pages::server_error();
        }
        Err(_) => return pages::server_error(),
    };
    let signed_in = SignedIn::from_session(&session, state.clock.now());
    // Without an id_token_hint the broker signed, the request may come from any page:
    // the aidant confirms first (and the form's CSRF token proves the confirmation).
    if signed_in.is_some() && !vouched && !confirmed {
        return confirm_page(&session, &p);
    }
    if let Some(who) = signed_in {
        let st = state.clone();
        let _ = web::block(move || st.db.write(|c| journal::append(c, &[Entry::new(Action::Logout).aidant(who.aidant_id).detail("via", "end_session")]))).await;
    }
    // The session ends whatever happens next: aidants work on shared computers.
    session.purge();
    match target {
        Target::Refused => refused(),
        Target::Redirect(uri) => match url::Url::parse(&uri) {
            Ok(mut url) => {
                if let Some(s) = param(&p, "state") {
                    url.query_pairs_mut().append_pair("state", s);
                }
                guard::see_other(url.as_str())
            }
            Err(_) => refused(),
        },
        _ => pages::error_page(
            StatusCode::OK,
            "Vous êtes déconnecté",
            "Votre session Aidants Connect est terminée sur ce navigateur. Vous pouvez fermer cette page ou retourner sur le service en ligne.",
        ),
    }
}
