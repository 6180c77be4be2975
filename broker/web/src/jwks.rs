//! `GET /jwks`: the public keys that verify the broker's signatures (a JWK Set,
//! RFC 7517), built by `broker_core::signing` from an allow-list of public members.
//!
//! The body is built once per key set and per period in which the published keys stay
//! the same; its strong `ETag` lets clients revalidate with `If-None-Match` (304).
//! Clients may keep it `JWKS_MAX_AGE_SECONDS`: a rotation publishes the new key longer
//! than that before it signs. The key directory is looked at for changes (a rotation
//! made with the CLI while the service runs) at most every couple of seconds.

use crate::AppState;
use actix_web::http::header::{self, HeaderValue};
use actix_web::{web, HttpRequest, HttpResponse};
use broker_core::signing::JWKS_MAX_AGE_SECONDS;

/// Loads the key directory again if it changed (on the blocking pool, only when due).
pub async fn refresh_keys(state: &web::Data<AppState>) {
    if !state.signing.refresh_due() {
        return;
    }
    let st = state.clone();
    match web::block(move || st.signing.refresh()).await {
        Ok(Ok(true)) => tracing::info!("signing keys reloaded"),
        Ok(Ok(false)) => {}
        Ok(Err(e)) => tracing::error!(error = %e, "signing keys not reloaded: the previous keys stay in use"),
        Err(e) => tracing::error!(error = %e, "signing keys: reload task failed"),
    }
}

/// Whether `If-None-Match` names this entity tag (weak comparison, RFC 9110 §13.1.2).
fn not_modified(req: &HttpRequest, etag: &str) -> bool {
    req.headers().get_all(header::IF_NONE_MATCH).filter_map(|v| v.to_str().ok()).flat_map(|v| v.split(',')).any(|tag| {
        let tag = tag.trim();
        tag == "*" || tag.strip_prefix("W/").unwrap_or(tag) == etag
    })
}

pub async fn jwks(req: HttpRequest, state: web::Data<AppState>) -> HttpResponse {
    refresh_keys(&state).await;
    let doc = state.signing.jwks(state.clock.now());
    let unchanged = not_modified(&req, &doc.etag);
    let mut res = if unchanged { HttpResponse::NotModified() } else { HttpResponse::Ok() };
    res.insert_header((header::CACHE_CONTROL, format!("public, max-age={JWKS_MAX_AGE_SECONDS}")));
    if let Ok(etag) = HeaderValue::from_str(&doc.etag) {
        res.insert_header((header::ETAG, etag));
    }
    if unchanged {
        return res.finish();
    }
    res.content_type("application/json").body(doc.body.clone())
}
