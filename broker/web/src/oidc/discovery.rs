//! `/.well-known/openid-configuration`: built once per issuer, served with a strong
//! `ETag` (the core fetches it often: it must be cheap).

use crate::AppState;
use actix_web::http::header::{self, HeaderValue};
use actix_web::web::Bytes;
use actix_web::{web, HttpRequest, HttpResponse};
use broker_core::oidc::claims::Scope;
use broker_core::secret::sha256_hex;
use serde_json::json;
use std::sync::{Arc, Mutex};

/// The discovery document of `issuer` (no trailing slash).
pub fn document(issuer: &str) -> serde_json::Value {
    let mut claims: Vec<&str> = vec!["sub", "iss", "aud", "exp", "iat", "auth_time", "nonce", "acr", "amr", "at_hash", "rep_scope", "act"];
    for s in Scope::ALL {
        for c in s.claims() {
            if !claims.contains(c) {
                claims.push(c);
            }
        }
    }
    json!({
        "issuer": issuer,
        "authorization_endpoint": format!("{issuer}/authorize"),
        "token_endpoint": format!("{issuer}/token"),
        "userinfo_endpoint": format!("{issuer}/userinfo"),
        "jwks_uri": format!("{issuer}/jwks"),
        "end_session_endpoint": format!("{issuer}/logout"),
        "scopes_supported": Scope::ALL.iter().map(|s| s.key()).collect::<Vec<_>>(),
        "response_types_supported": ["code"],
        "response_modes_supported": ["query"],
        "grant_types_supported": ["authorization_code"],
        "subject_types_supported": ["public", "pairwise"],
        "acr_values_supported": ["eidas1"],
        "prompt_values_supported": ["login", "none", "consent", "select_account"],
        "token_endpoint_auth_methods_supported": ["client_secret_post", "client_secret_basic"],
        "id_token_signing_alg_values_supported": ["ES256", "RS256", "HS256"],
        "userinfo_signing_alg_values_supported": ["ES256", "RS256", "HS256"],
        "code_challenge_methods_supported": ["S256"],
        "claims_parameter_supported": true,
        "request_parameter_supported": false,
        "request_uri_parameter_supported": false,
        "authorization_response_iss_parameter_supported": true,
        "claims_supported": claims,
        "ui_locales_supported": ["fr"],
    })
}

struct Built {
    issuer: String,
    body: Bytes,
    etag: String,
}

static CACHE: Mutex<Option<Arc<Built>>> = Mutex::new(None);

fn built(issuer: &str) -> Arc<Built> {
    let mut slot = CACHE.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(b) = slot.as_ref().filter(|b| b.issuer == issuer) {
        return b.clone();
    }
    let body = serde_json::to_vec(&document(issuer)).unwrap_or_default();
    let etag = format!("\"{}\"", &sha256_hex(&body)[..32]);
    let b = Arc::new(Built { issuer: issuer.to_owned(), body: Bytes::from(body), etag });
    *slot = Some(b.clone());
    b
}

pub async fn discovery(req: HttpRequest, state: web::Data<AppState>) -> HttpResponse {
    let doc = built(&state.issuer);
    let unchanged = req
        .headers()
        .get_all(header::IF_NONE_MATCH)
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().trim_start_matches("W/") == doc.etag || t.trim() == "*");
    let mut res = if unchanged { HttpResponse::NotModified() } else { HttpResponse::Ok() };
    res.insert_header((header::CACHE_CONTROL, "public, max-age=300"));
    if let Ok(v) = HeaderValue::from_str(&doc.etag) {
        res.insert_header((header::ETAG, v));
    }
    if unchanged {
        return res.finish();
    }
    res.content_type("application/json").body(doc.body.clone())
}
