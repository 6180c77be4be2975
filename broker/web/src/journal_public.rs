//! The journal's public face: signed checkpoints, the journal's public key, and proofs
//! (docs/audit.md). Everything here is public data: no session, no personal data.
//!
//! - `GET /journal/checkpoint`: the latest signed checkpoint (a C2SP signed note, text);
//! - `GET /journal/checkpoint/{size}`: the checkpoint of that size;
//! - `GET /journal/cle`: the verifier key string `<name>+<key id>+<base64 key>`;
//! - `GET /journal/preuves/inclusion?seq=S&taille=N`: inclusion proof of entry `S` in the
//!   tree of the checkpoint of size `N` (the latest when `taille` is absent), JSON;
//! - `GET /journal/preuves/coherence?de=M&a=N`: consistency proof between the
//!   checkpoints of sizes `M` and `N`, JSON;
//! - `GET /journal/tile/<L>/<N>[.p/<W>]`: a tile of the tree (C2SP tlog-tiles), its
//!   hashes concatenated (32 bytes each), `application/octet-stream`.
//!
//! Hashes in the JSON answers are lower-case hex. Unknown sizes answer 404 and bad input
//! 400, both with `{"error": "…"}`; an unknown tile answers 404 with a plain text.

use crate::AppState;
use actix_web::http::header;
use actix_web::{web, HttpResponse};
use broker_core::merkle::tile::TileId;
use broker_store::{checkpoints, tiles, StoreError};
use serde_json::json;
use std::collections::HashMap;

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/journal/checkpoint", web::get().to(latest))
        .route("/journal/checkpoint/{size}", web::get().to(by_size))
        .route("/journal/cle", web::get().to(key))
        .route("/journal/preuves/inclusion", web::get().to(inclusion))
        .route("/journal/preuves/coherence", web::get().to(consistency))
        .route("/journal/tile/{path:.*}", web::get().to(tile));
}

fn error(status: actix_web::http::StatusCode, message: impl Into<String>) -> HttpResponse {
    HttpResponse::build(status)
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .json(json!({ "error": message.into() }))
}

fn bad_request(message: impl Into<String>) -> HttpResponse {
    error(actix_web::http::StatusCode::BAD_REQUEST, message)
}

fn not_found(message: impl Into<String>) -> HttpResponse {
    error(actix_web::http::StatusCode::NOT_FOUND, message)
}

fn store_error(e: StoreError) -> HttpResponse {
    match e {
        StoreError::NotFound(m) => not_found(m),
        StoreError::Invalid(m) => bad_request(m),
        e => {
            tracing::error!(error = %e, "journal proof failed");
            error(actix_web::http::StatusCode::SERVICE_UNAVAILABLE, "journal momentanément indisponible")
        }
    }
}

fn note(body: String) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/plain; charset=utf-8")
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .body(body)
}

/// Runs a read on the blocking pool.
async fn read<T: Send + 'static>(
    state: &web::Data<AppState>,
    f: impl FnOnce(&mut broker_store::AnyConnection) -> Result<T, StoreError> + Send + 'static,
) -> Result<T, HttpResponse> {
    let st = state.clone();
    match web::block(move || st.db.read(f)).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(store_error(e)),
        Err(e) => Err(store_error(StoreError::Unavailable(e.to_string()))),
    }
}

/// A non-negative decimal number, from a query parameter or the path.
fn number(name: &str, value: Option<&String>) -> Result<Option<i64>, HttpResponse> {
    match value {
        None => Ok(None),
        Some(v) => match v.parse::<i64>() {
            Ok(n) if n >= 0 && v.bytes().all(|b| b.is_ascii_digit()) => Ok(Some(n)),
            _ => Err(bad_request(format!("« {name} » : nombre entier positif attendu"))),
        },
    }
}

fn required(name: &str, q: &HashMap<String, String>) -> Result<i64, HttpResponse> {
    number(name, q.get(name))?.ok_or_else(|| bad_request(format!("paramètre « {name} » manquant")))
}

pub async fn latest(state: web::Data<AppState>) -> HttpResponse {
    match read(&state, checkpoints::latest).await {
        Ok(Some(cp)) => note(cp.note),
        Ok(None) => not_found("aucun point de contrôle publié pour l'instant"),
        Err(res) => res,
    }
}

pub async fn by_size(state: web::Data<AppState>, path: web::Path<String>) -> HttpResponse {
    let size = match number("taille", Some(&path.into_inner())) {
        Ok(Some(n)) => n,
        Ok(None) => unreachable!("a value was given"),
        Err(res) => return res,
    };
    match read(&state, move |c| checkpoints::by_size(c, size)).await {
        Ok(Some(cp)) => note(cp.note),
        Ok(None) => not_found(format!("aucun point de contrôle de taille {size}")),
        Err(res) => res,
    }
}

pub async fn key(state: web::Data<AppState>) -> HttpResponse {
    match &state.journal_key {
        Some(k) => HttpResponse::Ok()
            .content_type("text/plain; charset=utf-8")
            .insert_header((header::CACHE_CONTROL, "public, max-age=3600"))
            .body(format!("{}\n", k.verifier())),
        None => not_found("clé du journal non configurée"),
    }
}

pub async fn inclusion(state: web::Data<AppState>, q: web::Query<HashMap<String, String>>) -> HttpResponse {
    let (seq, size) = match (required("seq", &q), number("taille", q.get("taille"))) {
        (Ok(s), Ok(n)) => (s, n),
        (Err(res), _) | (_, Err(res)) => return res,
    };
    match read(&state, move |c| checkpoints::inclusion(c, seq, size)).await {
        Ok(p) => HttpResponse::Ok().insert_header((header::CACHE_CONTROL, "no-cache")).json(p),
        Err(res) => res,
    }
}

pub async fn consistency(state: web::Data<AppState>, q: web::Query<HashMap<String, String>>) -> HttpResponse {
    let (from, to) = match (required("de", &q), required("a", &q)) {
        (Ok(m), Ok(n)) => (m, n),
        (Err(res), _) | (_, Err(res)) => return res,
    };
    match read(&state, move |c| checkpoints::consistency(c, from, to)).await {
        Ok(p) => HttpResponse::Ok().insert_header((header::CACHE_CONTROL, "public, max-age=3600")).json(p),
        Err(res) => res,
    }
}

fn tile_not_found(message: String) -> HttpResponse {
    HttpResponse::NotFound()
        .content_type("text/plain; charset=utf-8")
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .body(format!("{message}\n"))
}

/// A tile of the current numbered tree: a full tile once stored (never changes), or a
/// partial tile whose hashes all exist (a prefix of its full tile).
pub async fn tile(state: web::Data<AppState>, path: web::Path<String>) -> HttpResponse {
    let id = match TileId::parse(&format!("tile/{}", path.into_inner())) {
        Ok(id) => id,
        Err(e) => return tile_not_found(format!("tuile inconnue : {e}")),
    };
    let cache = if id.is_full() { "public, max-age=31536000, immutable" } else { "public, max-age=60" };
    match read(&state, move |c| tiles::body(c, id)).await {
        Ok(Some(body)) => HttpResponse::Ok()
            .content_type("application/octet-stream")
            .insert_header((header::CACHE_CONTROL, cache))
            .body(body),
        Ok(None) => tile_not_found(format!("tuile {} absente : l'arbre du journal ne la contient pas (encore)", id.path())),
        Err(res) => res,
    }
}
