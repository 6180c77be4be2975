//! `POST /token`: the authorization code grant, with `client_secret_post` or
//! `client_secret_basic` (RFC 6749 §2.3.1, §4.1.3), answered with an access token and
//! an id_token; no refresh token.

use super::{form_pairs, hs256_secret, json_error, no_store, subject_and_act, Registered};
use crate::AppState;
use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use broker_core::oidc::claims::{id_token_claims, sign_id_token, IdTokenInput};
use broker_core::oidc::error::{ErrorCode, OAuthError};
use broker_core::oidc::grant::{check_redemption, one, Issued, TokenRequest};
use broker_core::secret::Secret;
use broker_store::oidc_state::GrantStore;
use data_encoding::BASE64;
use serde_json::json;

/// Access tokens serve `/userinfo` once, within this many seconds.
pub const ACCESS_TOKEN_SECONDS: u64 = 120;
/// id_token lifetime.
pub const ID_TOKEN_SECONDS: i64 = 300;

/// A hash no secret matches, compared when the client is unknown so that the answer
/// takes the same time either way.
const NO_CLIENT_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

struct Credentials {
    client_id: String,
    secret: String,
    basic: bool,
}

fn credentials(req: &HttpRequest, params: &[(String, String)]) -> Result<Credentials, OAuthError> {
    let invalid_client = || OAuthError::new(ErrorCode::InvalidClient, "Authentification du client refusée.");
    let in_body = (one(params, "client_id")?, one(params, "client_secret")?);
    match req.headers().get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()) {
        Some(h) if h.len() > 6 && h[..6].eq_ignore_ascii_case("basic ") => {
            if in_body.1.is_some() {
                return Err(OAuthError::invalid_request("une seule méthode d'authentification du client à la fois"));
            }
            let raw = BASE64.decode(h[6..].trim().as_bytes()).map_err(|_| invalid_client())?;
            let raw = String::from_utf8(raw).map_err(|_| invalid_client())?;
            let (id, secret) = raw.split_once(':').ok_or_else(invalid_client)?;
            let decode = |s: &str| url::form_urlencoded::parse(format!("v={s}").as_bytes()).next().map(|(_, v)| v.into_owned()).unwrap_or_default();
            let (id, secret) = (decode(id), decode(secret));
            if in_body.0.is_some_and(|b| b != id) {
                return Err(invalid_client());
            }
            Ok(Credentials { client_id: id, secret, basic: true })
        }
        _ => match in_body {
            (Some(id), Some(secret)) => Ok(Credentials { client_id: id.to_owned(), secret: secret.to_owned(), basic: false }),
            _ => Err(invalid_client()),
        },
    }
}

fn client_error(e: &OAuthError, basic: bool) -> HttpResponse {
    let mut res = json_error(e);
    if e.code == ErrorCode::InvalidClient && basic {
        res.headers_mut().insert(header::WWW_AUTHENTICATE, header::HeaderValue::from_static("Basic realm=\"aidants-connect\""));
    }
    res
}

pub async fn token(req: HttpRequest, body: web::Bytes, state: web::Data<AppState>) -> HttpResponse {
    let params = form_pairs(&body);
    let creds = match credentials(&req, &params) {
        Ok(c) => c,
        Err(e) => return client_error(&e, req.headers().contains_key(header::AUTHORIZATION)),
    };
    let basic = creds.basic;
    let st = state.clone();
    match web::block(move || exchange(&st, &creds, &params)).await {
        Ok(Ok(body)) => no_store(HttpResponse::Ok()).json(body),
        Ok(Err(e)) => client_error(&e, basic),
        Err(e) => json_error(&OAuthError::internal(e)),
    }
}

fn exchange(state: &AppState, creds: &Credentials, params: &[(String, String)]) -> Result<serde_json::Value, OAuthError> {
    let client = state.clients.get(&state.db, &creds.client_id).map_err(OAuthError::internal)?;
    let secret = Secret::new(creds.secret.clone());
    let matches = secret.matches_hash(client.as_ref().map_or(NO_CLIENT_HASH, |c| c.secret_hash.as_str()));
    let client = match client {
        Some(c) if matches => Registered::new(c),
        _ => return Err(OAuthError::new(ErrorCode::InvalidClient, "Authentification du client refusée.").with_detail(format!("client {}", creds.client_id.len()))),
    };
    let request = TokenRequest::parse(params)?;
    let now = state.clock.now();
    let grants = GrantStore::new(state.cache.as_ref());
    let (code, access_token) = grants.redeem_code(&client.client.client_id, request.code)?;
    check_redemption(&code, &client.client.client_id, &request, now)?;
    let grant = code.value;
    let (sub, act) = subject_and_act(state, &client.client, &grant.usager_sub, grant.acting.aidant().get(), grant.acting.organisation().get())?;
    let alg = client.alg();
    let amr: Vec<&str> = grant.amr.iter().map(String::as_str).collect();
    let claims = id_token_claims(&IdTokenInput {
        issuer: &state.issuer,
        client_id: &client.client.client_id,
        sub: &sub,
        nonce: &grant.nonce,
        auth_time: grant.auth_time,
        now,
        lifetime_seconds: ID_TOKEN_SECONDS,
        amr: &amr,
        rep_scope: grant.rep_scope.as_deref(),
        access_token: &access_token,
        alg,
        act: act.as_ref(),
    });
    let scope = grant.scopes.iter().map(|s| s.key()).collect::<Vec<_>>().join(" ");
    grants.store_token_confirming(&access_token, &Issued::new(grant, now, ACCESS_TOKEN_SECONDS), request.code, now)?;
    let secret = hs256_secret(state, &client.client)?;
    let id_token = sign_id_token(&claims, alg, &state.signing.keys(), secret.as_deref(), now).map_err(OAuthError::internal)?;
    Ok(json!({
        "access_token": access_token,
        "token_type": "Bearer",
        "expires_in": ACCESS_TOKEN_SECONDS,
        "id_token": id_token,
        "scope": scope,
    }))
}
