//! `/healthz`: the process answers. `/readyz`: the database and the cache answer too.

use crate::AppState;
use actix_web::{web, HttpResponse};
use serde_json::json;

pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok()
        .insert_header(("Cache-Control", "no-store"))
        .json(json!({ "status": "ok" }))
}

pub async fn readyz(state: web::Data<AppState>) -> HttpResponse {
    let st = state.clone();
    let checks = web::block(move || {
        let db = st.db.ping();
        let cache = st.cache.ping();
        (db, cache)
    })
    .await;
    let (db_ok, cache_ok) = match &checks {
        Ok((db, cache)) => {
            if let Err(e) = db {
                tracing::warn!(error = %e, "readiness: database unreachable");
            }
            if let Err(e) = cache {
                tracing::warn!(error = %e, "readiness: cache unreachable");
            }
            (db.is_ok(), cache.is_ok())
        }
        Err(_) => (false, false),
    };
    let word = |ok: bool| if ok { "ok" } else { "unreachable" };
    let body = json!({
        "status": if db_ok && cache_ok { "ready" } else { "not_ready" },
        "database": word(db_ok),
        "cache": word(cache_ok),
    });
    let mut res = if db_ok && cache_ok { HttpResponse::Ok() } else { HttpResponse::ServiceUnavailable() };
    res.insert_header(("Cache-Control", "no-store")).json(body)
}
