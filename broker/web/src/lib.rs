//! HTTP side of the broker: probes, pages, aidant sign-in and second factors, static
//! DSFR assets. Handlers stay thin: they call `core` for decisions and `store` for data,
//! and run every blocking call on the blocking pool.

pub mod attestation;
pub mod csrf;
pub mod audit;
pub mod capability;
pub mod espace;
pub mod franceconnect;
pub mod guard;
pub mod home;
pub mod journal_public;
pub mod jwks;
pub mod mail;
pub mod mail_sender;
pub mod mandat_new;
pub mod metrics;
pub mod oidc;
pub mod page_error;
pub mod pages;
pub mod passkeys;
pub mod probes;
pub mod referent;
pub mod referent_stats;
pub mod referent_totp;
pub mod session_store;
pub mod signin;
pub mod throttle;
pub mod usager_space;
pub mod usagers;

use actix_session::config::BrowserSession;
use actix_session::SessionMiddleware;
use actix_web::body::{BoxBody, MessageBody};
use actix_web::cookie::{time, Key, SameSite};
use actix_web::dev::{Service, ServiceFactory, ServiceRequest, ServiceResponse};
use actix_web::http::header::{self, HeaderValue};
use actix_web::{web, App, HttpResponse, HttpServer};
use broker_core::time::Clock;
use broker_store::cache::Cache;
use broker_store::seal::Sealer;
use broker_store::Db;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

/// Everything a handler needs, passed explicitly with `web::Data`.
#[derive(Clone)]
pub struct AppState {
    pub db: Db,
    pub cache: Arc<dyn Cache>,
    /// Public base URL, without trailing slash.
    pub issuer: String,
    pub sealer: Sealer,
    /// Where the mail queue's messages go (SMTP or the development outbox).
    pub mailer: Arc<mail::Mailer>,
    /// The mail queue's sender, woken when a request queues a message.
    pub mail: mail_sender::MailSender,
    pub passkeys: Arc<passkeys::Passkeys>,
    pub clock: Arc<dyn Clock>,
    /// The broker's signing keys (reloaded when their directory changes) and the JWKS.
    pub signing: Arc<broker_core::signing::store::KeyStore>,
    /// Development mode: plain-HTTP cookies, the outbox page, no HSTS.
    pub development: bool,
    /// A reverse proxy in front sets `X-Forwarded-For`: the client address
    /// (for rate limits) is read from there instead of the socket.
    pub behind_proxy: bool,
    /// FranceConnect, to identify a usager when a mandat is made (absent when not configured).
    pub franceconnect: Option<Arc<franceconnect::FcClient>>,
    /// Key of the usager key: `broker_core::identite::usager_key(usager_salt, fc_sub)`.
    pub usager_salt: [u8; 32],
    /// The journal key, whose public part `/journal/cle` publishes (absent in tests).
    pub journal_key: Option<Arc<broker_core::checkpoint::JournalKey>>,
    /// Registered clients, read through a short-lived copy.
    pub clients: Arc<broker_store::idp::ClientCache>,
    /// The same clients as `/token` uses them (with what it derives from each), kept as
    /// long as `clients` keeps its copies.
    pub token_clients: Arc<oidc::token::TokenClients>,
}

pub struct ServeOptions {
    pub listen: String,
    pub assets_dir: PathBuf,
    pub workers: usize,
    /// 64 bytes signing the session cookie.
    pub session_key: [u8; 64],
    /// More routes, registered in every worker's application (the demonstration e-service
    /// in development).
    pub extra: Option<Arc<dyn Fn(&mut web::ServiceConfig) + Send + Sync>>,
}

pub const CSP: &str = "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; \
font-src 'self'; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'; object-src 'none'";

const WEBAUTHN_JS: &str = include_str!("../static/webauthn.js");

async fn webauthn_js() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/javascript; charset=utf-8")
        .insert_header(("Cache-Control", "no-cache"))
        .body(WEBAUTHN_JS)
}

/// Registers the routes; shared by the server and the tests.
pub fn configure(cfg: &mut web::ServiceConfig, assets_dir: PathBuf, development: bool) {
    cfg.service(web::resource("/healthz").get(probes::healthz).head(probes::healthz))
        .service(web::resource("/readyz").get(probes::readyz).head(probes::readyz))
        .service(web::resource("/jwks").get(jwks::jwks).head(jwks::jwks))
        .service(web::resource("/").get(home::home).head(home::home))
        .service(web::resource("/.well-known/openid-configuration").get(oidc::discovery::discovery).head(oidc::discovery::discovery))
        .service(web::resource("/authorize").get(oidc::authorize::authorize_get).post(oidc::authorize::authorize_post))
        .route("/autorisation/{flow}", web::get().to(oidc::authorize::choose_usager))
        .route("/autorisation/{flow}/usager", web::post().to(oidc::authorize::pick_usager))
        .route("/autorisation/{flow}/demarche", web::get().to(oidc::authorize::choose_demarche))
        .route("/autorisation/{flow}/demarche", web::post().to(oidc::authorize::pick_demarche))
        .route("/autorisation/{flow}/annuler", web::post().to(oidc::authorize::cancel))
        .route("/token", web::post().to(oidc::token::token))
        .service(web::resource("/userinfo").get(oidc::userinfo::userinfo).post(oidc::userinfo::userinfo))
        .service(web::resource("/logout").get(oidc::logout::logout_get).post(oidc::logout::logout_post))
        .service(web::resource("/connexion").get(signin::form).post(signin::submit))
        .service(web::resource("/connexion/lien").get(signin::link_page).post(signin::link_confirm))
        .route("/connexion/cle/options", web::post().to(espace::assertion_options))
        .route("/connexion/cle", web::post().to(espace::assertion_finish))
        .route("/deconnexion", web::post().to(signin::sign_out))
        .service(web::resource("/reauthentification").get(signin::reauth_form).post(signin::reauth_submit))
        .route("/reauthentification/cle/options", web::post().to(espace::assertion_options))
        .route("/reauthentification/cle", web::post().to(espace::assertion_finish))
        .route("/espace", web::get().to(espace::home))
        .route("/espace/securite", web::get().to(espace::security))
        .route("/espace/securite/cles/options", web::post().to(espace::registration_options))
        .route("/espace/securite/cles", web::post().to(espace::registration_finish))
        .route("/espace/securite/cles/{id}/retirer", web::post().to(espace::remove_key))
        .route("/static/app/webauthn.js", web::get().to(webauthn_js))
        .configure(attestation::routes)
        .configure(mandat_new::routes)
        .configure(usagers::routes)
        .configure(usager_space::routes)
        .configure(audit::routes)
        .configure(referent::routes)
        .configure(referent_totp::routes)
        .configure(referent_stats::routes)
        .configure(journal_public::routes)
        .service(actix_files::Files::new("/static/dsfr", assets_dir).prefer_utf8(true));
    if development {
        cfg.route("/dev/courriels", web::get().to(pages::outbox));
    }
    cfg.default_service(web::to(pages::not_found));
}

fn add_security_headers<B>(res: &mut ServiceResponse<B>, development: bool) {
    let h = res.headers_mut();
    h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    if !development {
        h.insert(header::STRICT_TRANSPORT_SECURITY, HeaderValue::from_static("max-age=63072000; includeSubDomains"));
    }
}

/// Paths answered in JSON (or another machine format): their errors stay in that format,
/// never an HTML page.
fn machine_endpoint(path: &str) -> bool {
    const EXACT: &[&str] = &["/token", "/userinfo", "/jwks", "/healthz", "/readyz", "/audit/api", "/audit/export.csv", "/audit/export.jsonl"];
    EXACT.contains(&path)
        || path.starts_with("/.well-known/")
        || path.starts_with("/journal/")
        || path.ends_with("/options")
        || matches!(path, "/connexion/cle" | "/reauthentification/cle" | "/espace/securite/cles")
}

/// What a request gets when a part the service needs (the database, the cache) cannot
/// be reached: a DSFR page "Service momentanément indisponible" (503, `Retry-After`), or
/// for a machine endpoint a JSON error `temporarily_unavailable` (503).
pub fn unavailable(path: &str) -> HttpResponse {
    let mut res = if machine_endpoint(path) {
        HttpResponse::ServiceUnavailable().insert_header(("Cache-Control", "no-store")).json(serde_json::json!({
            "error": "temporarily_unavailable",
            "error_description": "Le service est momentanément indisponible. Réessayez dans quelques instants.",
        }))
    } else {
        pages::error_page(
            actix_web::http::StatusCode::SERVICE_UNAVAILABLE,
            "Service momentanément indisponible",
            "Aidants Connect ne peut pas traiter votre demande pour le moment. Rien n'a été perdu de ce que vous aviez déjà enregistré. Réessayez dans quelques minutes ; si le problème dure, prévenez votre référent.",
        )
    };
    res.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("30"));
    res
}

/// Whether the database or the cache could not be reached a moment ago.
fn storage_unreachable(state: Option<&web::Data<AppState>>) -> bool {
    state.is_some_and(|s| s.db.unreachable() || s.cache.unreachable())
}

/// A page (not a machine endpoint, not a static file).
fn is_page(path: &str) -> bool {
    !machine_endpoint(path) && !path.starts_with("/static/")
}

/// While storage is unreachable, a page becomes the unavailable page: any answer to a
/// safe request (a GET that found no session because the cache is down must not send
/// the browser to the sign-in form), and any failure of another one.
fn settle(res: ServiceResponse<BoxBody>, state: Option<&web::Data<AppState>>) -> ServiceResponse<BoxBody> {
    let safe = matches!(*res.request().method(), actix_web::http::Method::GET | actix_web::http::Method::HEAD);
    if is_page(res.request().path()) && (safe || res.status().is_server_error()) && storage_unreachable(state) {
        let (req, _) = res.into_parts();
        let path = req.path().to_owned();
        return ServiceResponse::new(req, unavailable(&path));
    }
    res
}

/// The whole application: routes, sessions, security headers, request logs and
/// metrics. Request logs carry method, path (never the query string, which may hold codes
/// or tokens), status and duration only; metrics, the route template instead of the path
/// ([`metrics::record_request`]).
pub fn app(
    state: web::Data<AppState>,
    assets_dir: PathBuf,
    session_key: &[u8; 64],
) -> App<
    impl ServiceFactory<ServiceRequest, Config = (), Response = ServiceResponse<impl MessageBody>, Error = actix_web::Error, InitError = ()>,
> {
    let development = state.development;
    let sessions = SessionMiddleware::builder(session_store::CacheSessionStore::new(state.cache.clone()), Key::from(session_key))
        .cookie_name("ac_session".into())
        .cookie_secure(!development)
        .cookie_http_only(true)
        .cookie_same_site(SameSite::Lax)
        .session_lifecycle(BrowserSession::default().state_ttl(time::Duration::hours(guard::SESSION_HOURS)))
        .build();
    App::new()
        .app_data(state)
        .app_data(web::FormConfig::default().limit(16 * 1024))
        .app_data(web::JsonConfig::default().limit(64 * 1024))
        .wrap(actix_web::middleware::from_fn(end_sessions_of_deactivated))
        .wrap(sessions)
        .wrap_fn(move |req, srv| {
            let started = Instant::now();
            let method = req.method().to_string();
            let path = broker_core::validate::log_value(req.path());
            let state = req.app_data::<web::Data<AppState>>().cloned();
            // While the database or the cache is known to be down, a page answers at once
            // that the service is unavailable, instead of failing step by step.
            let call = if is_page(req.path()) && storage_unreachable(state.as_ref()) {
                let p = req.path().to_owned();
                Err(req.into_response(unavailable(&p)))
            } else {
                Ok(srv.call(req))
            };
            async move {
                let mut res = match call {
                    Err(early) => early.map_into_boxed_body(),
                    Ok(fut) => settle(fut.await?.map_into_boxed_body(), state.as_ref()),
                };
                add_security_headers(&mut res, development);
                metrics::record_request(&res, started.elapsed());
                tracing::info!(
                    target: "http",
                    method = %method,
                    path = %path,
                    status = res.status().as_u16(),
                    duration_ms = started.elapsed().as_secs_f64() * 1000.0,
                    "request"
                );
                Ok(res)
            }
        })
        .configure(move |cfg| configure(cfg, assets_dir, development))
}

/// Ends the session of an aidant deactivated since they signed in, before the request
/// is handled: the handler then sees nobody signed in.
async fn end_sessions_of_deactivated(
    req: ServiceRequest,
    next: actix_web::middleware::Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    use actix_session::SessionExt;
    if !req.path().starts_with("/static/") {
        let session = req.get_session();
        if let (Some(aidant), Some(state)) = (session.get::<i64>(guard::K_AIDANT).ok().flatten(), req.app_data::<web::Data<AppState>>().cloned()) {
            let active = web::block(move || state.db.read(|c| broker_store::referent::is_active(c, aidant))).await;
            if matches!(active, Ok(Ok(false))) {
                session.purge();
            }
        }
    }
    next.call(req).await
}

/// Checks the database and the cache every second in the background, so that while one
/// is down every page says so at once, and service resumes within a second of its return
/// (see `broker_store::breaker`).
fn watch_storage(state: web::Data<AppState>) {
    let spawned = std::thread::Builder::new().name("storage-watch".into()).spawn(move || {
        let (mut db_was_up, mut cache_was_up) = (true, true);
        loop {
            let db_up = state.db.probe().is_ok();
            let cache_up = state.cache.probe().is_ok();
            if db_up != db_was_up {
                if db_up { tracing::warn!("database reachable again") } else { tracing::error!("database unreachable") }
            }
            if cache_up != cache_was_up {
                if cache_up { tracing::warn!("cache reachable again") } else { tracing::error!("cache unreachable") }
            }
            (db_was_up, cache_was_up) = (db_up, cache_up);
            std::thread::sleep(std::time::Duration::from_secs(1));
        }
    });
    if let Err(e) = spawned {
        tracing::error!(error = %e, "storage watch not started");
    }
}

/// Runs the HTTP server until it is stopped.
pub async fn serve(state: AppState, opts: ServeOptions) -> std::io::Result<()> {
    let issuer = state.issuer.clone();
    let data = web::Data::new(state);
    watch_storage(data.clone());
    let assets = opts.assets_dir.clone();
    let key = opts.session_key;
    let extra = opts.extra.clone();
    let server = HttpServer::new(move || {
        app(data.clone(), assets.clone(), &key).configure(|cfg| {
            if let Some(f) = &extra {
                f(cfg)
            }
        })
    })
        .workers(opts.workers.max(1))
        .bind(&opts.listen)?;
    // Announced once the socket is bound: whoever started the process may now connect.
    for addr in server.addrs() {
        tracing::info!(%addr, "listening");
        println!("Aidants Connect écoute sur http://{addr} (adresse publique : {issuer})");
    }
    server.run().await
}
