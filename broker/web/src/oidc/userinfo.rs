//! `/userinfo` (GET and POST, RFC 6750 Bearer): the identité pivot claims of the granted
//! scopes, as JSON or as a signed JWT per client. Each access token discloses the
//! identity once, after checking again that the autorisation is active; the disclosure
//! is journaled (`autorisation_used`) in the transaction that marks the token used.

use super::{hs256_secret, no_store, subject_and_act, Registered};
use crate::AppState;
use actix_web::http::header::{self, HeaderValue};
use actix_web::{web, HttpRequest, HttpResponse};
use broker_core::client::UserinfoFormat;
use broker_core::oidc::claims::{userinfo_claims, userinfo_jwt};
use broker_core::oidc::error::{ErrorCode, OAuthError};
use broker_store::idp::{self, Disclosure};
use broker_core::oidc::grant::Grant;
use broker_core::Timestamp;
use broker_store::admin::Client;
use broker_store::oidc_state::{token_hash, GrantStore};
use std::sync::Arc;

fn bearer(req: &HttpRequest) -> Option<String> {
    let h = req.headers().get(header::AUTHORIZATION)?.to_str().ok()?;
    if h.len() > 7 && h[..7].eq_ignore_ascii_case("bearer ") {
        let t = h[7..].trim();
        (!t.is_empty()).then(|| t.to_owned())
    } else {
        None
    }
}

fn unauthorized(error: Option<&str>, description: &str) -> HttpResponse {
    let challenge = match error {
        // The description (French) goes in the body: header values are ASCII only.
        Some(e) => format!("Bearer realm=\"aidants-connect\", error=\"{e}\""),
        None => "Bearer realm=\"aidants-connect\"".to_owned(),
    };
    let mut res = no_store(HttpResponse::Unauthorized());
    if let Ok(v) = HeaderValue::from_str(&challenge) {
        res.insert_header((header::WWW_AUTHENTICATE, v));
    }
    match error {
        Some(_) => res.json(OAuthError::new(ErrorCode::InvalidToken, description).to_json()),
        None => res.finish(),
    }
}

enum Answer {
    Json(serde_json::Value),
    Jwt(String),
    Refused(&'static str),
}

pub async fn userinfo(req: HttpRequest, state: web::Data<AppState>) -> HttpResponse {
    let Some(token) = bearer(&req) else {
        return unauthorized(None, "");
    };
    match answer(&state, token).await {
        Ok(Answer::Json(v)) => no_store(HttpResponse::Ok()).json(v),
        Ok(Answer::Jwt(jwt)) => no_store(HttpResponse::Ok()).content_type("application/jwt").body(jwt),
        Ok(Answer::Refused(why)) => unauthorized(Some("invalid_token"), why),
        Err(e) => super::json_error(&e),
    }
}

/// What is known of a token before it is spent.
struct Presented {
    grant: Grant,
    client: Arc<Client>,
    sub: String,
    act: Option<serde_json::Value>,
}

/// Reads the token and its client, and works out what this client is told about who.
/// Neither the cache nor (within its copy's lifetime) the client needs a thread of the
/// blocking pool.
async fn presented(state: &web::Data<AppState>, token: &str, now: Timestamp) -> Result<Result<Presented, Answer>, OAuthError> {
    let grants = GrantStore::new(state.cache.as_ref());
    let Some(issued) = grants.token_async(token, now).await.map_err(OAuthError::internal)? else {
        return Ok(Err(Answer::Refused("Jeton inconnu, expiré ou révoqué.")));
    };
    let grant = issued.value;
    let client = match state.clients.fresh(&grant.client_id) {
        Some(client) => Some(client),
        None => {
            let (st, id) = (state.clone(), grant.client_id.clone());
            web::block(move || st.clients.get(&st.db, &id)).await.map_err(OAuthError::internal)?.map_err(OAuthError::internal)?
        }
    };
    let Some(client) = client else {
        return Ok(Err(Answer::Refused("Ce service en ligne n'est plus autorisé.")));
    };
    let (sub, act) = subject_and_act(state, &client, &grant.usager_sub, grant.acting.aidant().get(), grant.acting.organisation().get())?;
    Ok(Ok(Presented { grant, client, sub, act }))
}

async fn answer(state: &web::Data<AppState>, token: String) -> Result<Answer, OAuthError> {
    let now = state.clock.now();
    let p = match presented(state, &token, now).await? {
        Ok(p) => p,
        Err(refused) => return Ok(refused),
    };
    let hash = token_hash(&token);
    // Committed by the group writer with other disclosures; the task awaits, no thread waits.
    let (identity, client) = match idp::disclose_async(&state.db, Some(p.client), &hash, &p.grant, now).await.map_err(OAuthError::internal)? {
        Disclosure::Identity(found) => {
            let (identity, client) = *found;
            (identity, Registered::new(client))
        }
        Disclosure::ClientInactive => return Ok(Answer::Refused("Ce service en ligne n'est plus autorisé.")),
        Disclosure::NotActive => {
            let st = state.clone();
            web::block(move || GrantStore::new(st.cache.as_ref()).revoke_token(&token))
                .await
                .map_err(OAuthError::internal)?
                .map_err(OAuthError::internal)?;
            return Ok(Answer::Refused("Le mandat ne couvre plus cette démarche."));
        }
        Disclosure::AlreadyUsed => return Ok(Answer::Refused("Ce jeton a déjà servi.")),
    };
    // The token has served: its row in the database refuses any other use.
    let grant = p.grant;
    let mut claims = userinfo_claims(&p.sub, &identity, &grant.scopes);
    broker_core::oidc::subject::insert_act(&mut claims, p.act);
    match UserinfoFormat::parse(&client.client.userinfo_format) {
        Ok(UserinfoFormat::Jwt) => {
            let secret = hs256_secret(state, &client.client)?;
            let jwt = userinfo_jwt(claims, &state.issuer, &grant.client_id, now, client.alg(), &state.signing.keys(), secret.as_deref())
                .map_err(OAuthError::internal)?;
            Ok(Answer::Jwt(jwt))
        }
        _ => Ok(Answer::Json(serde_json::Value::Object(claims))),
    }
}
