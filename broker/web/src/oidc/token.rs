//! `POST /token`: the authorization code grant, with `client_secret_post` or
//! `client_secret_basic` (RFC 6749 §2.3.1, §4.1.3), answered with an access token and
//! an id_token; no refresh token.

use super::{form_pairs, hs256_secret, json_error, no_store, subject_and_act, Registered};
use crate::AppState;
use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use broker_core::oidc::authorize::verify_pkce;
use broker_core::oidc::claims::{id_token_claims, sign_id_token, IdTokenInput};
use broker_core::oidc::error::{ErrorCode, OAuthError};
use broker_core::secret::Secret;
use broker_core::Timestamp;
use broker_store::oidc_state::{self, AccessGrant};
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

fn one<'a>(params: &'a [(String, String)], name: &str) -> Result<Option<&'a str>, OAuthError> {
    let mut found = params.iter().filter(|(k, v)| k == name && !v.is_empty());
    let first = found.next().map(|(_, v)| v.as_str());
    if found.next().is_some() {
        return Err(OAuthError::invalid_request(format!("le paramètre {name} est répété")));
    }
    Ok(first)
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
    match one(params, "grant_type")? {
        Some("authorization_code") => {}
        Some(_) => return Err(OAuthError::new(ErrorCode::UnsupportedGrantType, "Seul grant_type=authorization_code est accepté.")),
        None => return Err(OAuthError::invalid_request("grant_type est obligatoire")),
    }
    let code = one(params, "code")?.ok_or_else(|| OAuthError::invalid_request("code est obligatoire"))?;
    let redirect_uri = one(params, "redirect_uri")?.ok_or_else(|| OAuthError::invalid_request("redirect_uri est obligatoire"))?;
    let verifier = one(params, "code_verifier")?;
    let now = state.clock.now();
    let (grant, access_token) = oidc_state::redeem_code_for_token(state.cache.as_ref(), code, &client.client.client_id, redirect_uri, now)?;
    let pkce_ok = match (&grant.code_challenge, verifier) {
        (Some(challenge), Some(v)) => verify_pkce(challenge, v),
        (None, None) => true,
        _ => false,
    };
    if !pkce_ok {
        return Err(OAuthError::new(ErrorCode::InvalidGrant, "Code d'autorisation invalide, expiré ou déjà utilisé.").with_detail("PKCE"));
    }
    let access = AccessGrant {
        client_id: grant.client_id.clone(),
        usager_id: grant.usager_id,
        usager_sub: grant.usager_sub.clone(),
        aidant_id: grant.aidant_id,
        organisation_id: grant.organisation_id,
        demarche: grant.demarche.clone(),
        autorisation_id: grant.autorisation_id,
        mandat_id: grant.mandat_id,
        scopes: grant.scopes.clone(),
        expires_at: 0,
    };
    oidc_state::store_access_token_confirming(state.cache.as_ref(), &access_token, access, now, ACCESS_TOKEN_SECONDS, code)?;
    let alg = client.alg();
    let amr: Vec<&str> = grant.amr.iter().map(String::as_str).collect();
    let (sub, act) = subject_and_act(state, &client.client, &grant.usager_sub, grant.aidant_id, grant.organisation_id)?;
    let claims = id_token_claims(&IdTokenInput {
        issuer: &state.issuer,
        client_id: &client.client.client_id,
        sub: &sub,
        nonce: &grant.nonce,
        auth_time: Timestamp::from_micros(grant.auth_time),
        now,
        lifetime_seconds: ID_TOKEN_SECONDS,
        amr: &amr,
        rep_scope: grant.rep_scope.as_deref(),
        access_token: &access_token,
        alg,
        act: act.as_ref(),
    });
    let secret = hs256_secret(state, &client.client)?;
    let id_token = sign_id_token(&claims, alg, &state.signing.keys(), secret.as_deref(), now).map_err(OAuthError::internal)?;
    Ok(json!({
        "access_token": access_token,
        "token_type": "Bearer",
        "expires_in": ACCESS_TOKEN_SECONDS,
        "id_token": id_token,
        "scope": grant.scopes.join(" "),
    }))
}
