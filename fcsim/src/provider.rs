//! FranceConnect simulator, provider side: FranceConnect v2 as the broker's relying party
//! sees it (see `docs/franceconnect-simulator.md`), for the embedded default and the tests.
//!
//! Mounted with [`configure`] at the path of [`ProviderSettings::issuer`] (by default
//! `{base}/simulateur-franceconnect/api/v2`), it serves:
//! - `GET {issuer}/.well-known/openid-configuration` and `GET {issuer}/jwks` (one ES256 key);
//! - `GET {issuer}/authorize`: checks the request as FranceConnect does, then shows a page
//!   where one picks a test identity ([`IDENTITIES`]) and a scenario, or cancels;
//! - `POST {issuer}/authorize/choix`: the page's form; `303 redirect_uri?code&state`, or
//!   `?error=access_denied&state` when "Annuler" is pressed;
//! - `POST {issuer}/token` (`client_secret_post`): access token, ES256 id_token;
//! - `GET|POST {issuer}/userinfo` (Bearer): the identity as an ES256 JWT (`application/jwt`);
//! - `GET {issuer}/session/end`: `303 post_logout_redirect_uri?state`.
//!
//! Authorization requests: an unknown `client_id` or a `redirect_uri` that is not exactly
//! registered gets an error page, never a redirect. Every other fault — unknown or repeated
//! parameter, `response_type` other than `code`, scope without `openid` or with an unknown
//! scope, missing `state`, `nonce` shorter than 22 characters, `acr_values` other than
//! eidas1..3, bad `prompt` or `claims` — goes back to the redirect_uri with
//! `error=invalid_request` (or `unsupported_response_type`, `invalid_scope`),
//! `error_description` and `state`. Accepted parameters: `client_id`, `response_type`,
//! `redirect_uri`, `scope`, `state`, `nonce`, `acr_values`, and optionally `prompt` and
//! `claims`.
//!
//! Nothing is kept between requests but one set: the checked request travels in the page
//! as a token signed by the simulator's key, and so do the code (identity, scenario, nonce,
//! acr, scope, client, redirect_uri, expiry after [`CODE_TTL`] seconds, random `jti`) and
//! the access token (valid [`TOKEN_TTL`] seconds). Several instances given the same key seed
//! ([`ProviderSettings::with_key_seed`]) therefore publish the same JWKS and redeem each
//! other's codes. Single use of a code is enforced by the set of redeemed `jti`s, which is
//! per process: with several instances, a code can be redeemed once on each within its
//! lifetime. That is acceptable for a simulator, not for a real provider.
//!
//! Failure scenarios ([`Failure`]), chosen on the identity page next to the identity:
//! - `erreur-jeton`: `/token` answers 400 `invalid_grant`;
//! - `signature-id-token`: the id_token is signed with another key under the published kid;
//! - `nonce-different`: the id_token's `nonce` is not the request's;
//! - `niveau-insuffisant`: the id_token's `acr` is `eidas0`, below eidas1;
//! - `signature-userinfo`: the userinfo JWT is signed with another key under the published
//!   kid.
//!
//! The usager cancelling is the "Annuler" button. Otherwise the id_token's `acr` is the
//! first value of the request's `acr_values`, and `sub` is pairwise: a hash of the client
//! and the identity, stable across restarts and instances.

mod identities;
mod jws;

pub use identities::{identity, Failure, Identity, IDENTITIES};

use actix_web::http::{header, StatusCode};
use actix_web::{web, HttpRequest, HttpResponse};
use askama::Template;
use data_encoding::BASE64URL_NOPAD;
use jws::Key;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Where the simulator lives under the broker's base URL.
pub const DEFAULT_PATH: &str = "/simulateur-franceconnect/api/v2";
/// Lifetime of an authorization code, in seconds.
pub const CODE_TTL: i64 = 60;
/// Lifetime of an access token and of an id_token, in seconds.
pub const TOKEN_TTL: i64 = 60;
/// How long the identity page may stay open, in seconds.
const REQUEST_TTL: i64 = 30 * 60;
/// The levels FranceConnect accepts in `acr_values`.
pub const ACR_VALUES: [&str; 3] = ["eidas1", "eidas2", "eidas3"];
/// The level put in the id_token by the [`Failure::LowAcr`] scenario.
pub const LOW_ACR: &str = "eidas0";
/// Scopes: one per claim, plus FranceConnect's bundles `profile`, `birth`, `identite_pivot`.
pub const SCOPES: [&str; 12] = [
    "openid",
    "given_name",
    "family_name",
    "birthdate",
    "gender",
    "birthplace",
    "birthcountry",
    "email",
    "preferred_username",
    "profile",
    "birth",
    "identite_pivot",
];
const PARAMETERS: [&str; 9] = ["client_id", "response_type", "redirect_uri", "scope", "state", "nonce", "acr_values", "prompt", "claims"];
const MIN_NONCE: usize = 22;

const TYP_REQUEST: &str = "fcsim-demande+jwt";
const TYP_CODE: &str = "fcsim-code+jwt";
const TYP_ACCESS: &str = "at+jwt";
const TYP_JWT: &str = "JWT";

/// The simulator's registration of the relying party, its issuer and its key seed.
#[derive(Clone)]
pub struct ProviderSettings {
    /// The issuer, without trailing slash; the simulator is mounted at its path.
    pub issuer: String,
    pub client_id: String,
    pub client_secret: String,
    /// Accepted `redirect_uri` values (exact match).
    pub redirect_uris: Vec<String>,
    /// Accepted `post_logout_redirect_uri` values (exact match).
    pub post_logout_redirect_uris: Vec<String>,
    key_seed: [u8; 32],
    used_codes: Arc<UsedCodes>,
}

impl std::fmt::Debug for ProviderSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProviderSettings")
            .field("issuer", &self.issuer)
            .field("client_id", &self.client_id)
            .field("client_secret", &"[redacted]")
            .field("redirect_uris", &self.redirect_uris)
            .field("post_logout_redirect_uris", &self.post_logout_redirect_uris)
            .finish_non_exhaustive()
    }
}

impl ProviderSettings {
    /// Settings with a random key seed: fine for one process (its workers share the clone).
    pub fn new(
        issuer: impl Into<String>,
        client_id: impl Into<String>,
        client_secret: impl Into<String>,
        redirect_uris: Vec<String>,
        post_logout_redirect_uris: Vec<String>,
    ) -> ProviderSettings {
        ProviderSettings {
            issuer: issuer.into().trim_end_matches('/').to_owned(),
            client_id: client_id.into(),
            client_secret: client_secret.into(),
            redirect_uris,
            post_logout_redirect_uris,
            key_seed: rand::random(),
            used_codes: Arc::default(),
        }
    }

    /// The issuer of a simulator mounted at [`DEFAULT_PATH`] under `base_url`.
    pub fn issuer_under(base_url: &str) -> String {
        format!("{}{DEFAULT_PATH}", base_url.trim_end_matches('/'))
    }

    /// Derives the signing key from `secret` instead of a random seed, so that every
    /// instance given the same secret publishes the same key.
    pub fn with_key_seed(mut self, secret: &[u8]) -> ProviderSettings {
        let mut h = Sha256::new();
        h.update(b"fcsim provider key seed\0");
        h.update(secret);
        self.key_seed = h.finalize().into();
        self
    }
}

/// The `jti`s of redeemed codes, until they expire.
#[derive(Default)]
struct UsedCodes(Mutex<HashMap<String, i64>>);

impl UsedCodes {
    /// True the first time a `jti` is seen before its expiry.
    fn consume(&self, jti: &str, exp: i64, now: i64) -> bool {
        let mut used = self.0.lock().unwrap_or_else(|e| e.into_inner());
        used.retain(|_, e| *e >= now);
        used.insert(jti.to_owned(), exp).is_none()
    }
}

/// Per worker: settings, keys, and the documents served as they are.
struct Provider {
    settings: ProviderSettings,
    mount: String,
    key: Key,
    /// Signs what the failure scenarios must make unverifiable.
    other_key: Key,
    discovery: String,
    jwks: String,
}

/// Serves the simulator over HTTP on `127.0.0.1`, on a port the system picks: a convenience
/// for tests and demonstrations, not for deployment. `make` builds the settings from the
/// server's base URL (`http://127.0.0.1:{port}`); `routes` registers extra routes ahead of
/// the simulator's, which therefore take precedence (pass `|_| {}` for none). The server has
/// one worker, ignores signals and is spawned on the current actix runtime, so this must be
/// called from within one (e.g. an `#[actix_web::test]`). Returns the base URL and the
/// settings.
///
/// # Panics
/// When no loopback port can be bound, or under [`configure`]'s conditions.
pub fn serve_on_loopback<F>(make: impl FnOnce(&str) -> ProviderSettings, routes: F) -> (String, ProviderSettings)
where
    F: Fn(&mut web::ServiceConfig) + Clone + Send + 'static,
{
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("loopback port");
    let base = format!("http://{}", listener.local_addr().expect("bound address"));
    let settings = make(&base);
    let served = settings.clone();
    let server = actix_web::HttpServer::new(move || {
        let served = served.clone();
        let routes = routes.clone();
        actix_web::App::new().configure(move |cfg| {
            routes(cfg);
            configure(cfg, served);
        })
    })
    .workers(1)
    .disable_signals()
    .listen(listener)
    .expect("listen on the bound port")
    .run();
    actix_web::rt::spawn(server);
    (base, settings)
}

/// Registers the simulator's endpoints at the path of `settings.issuer`.
///
/// # Panics
/// When the issuer is not an absolute URL.
pub fn configure(cfg: &mut web::ServiceConfig, settings: ProviderSettings) {
    let provider = Provider::new(settings);
    let mount = provider.mount.clone();
    cfg.service(
        web::scope(&mount)
            .app_data(web::Data::new(provider))
            .route("/.well-known/openid-configuration", web::get().to(discovery))
            .route("/jwks", web::get().to(jwks))
            .route("/authorize", web::get().to(authorize))
            .route("/authorize/choix", web::post().to(choose))
            .route("/token", web::post().to(token))
            .route("/userinfo", web::get().to(userinfo))
            .route("/userinfo", web::post().to(userinfo))
            .route("/session/end", web::get().to(session_end)),
    );
}

impl Provider {
    fn new(settings: ProviderSettings) -> Provider {
        let issuer = url::Url::parse(&settings.issuer).expect("the simulator's issuer must be an absolute URL");
        let mount = issuer.path().trim_end_matches('/').to_owned();
        let key = Key::derive(&settings.key_seed, "fcsim provider signing key");
        let other_key = Key::derive(&settings.key_seed, "fcsim provider wrong key");
        let i = &settings.issuer;
        let discovery = serde_json::json!({
            "issuer": i,
            "authorization_endpoint": format!("{i}/authorize"),
            "token_endpoint": format!("{i}/token"),
            "userinfo_endpoint": format!("{i}/userinfo"),
            "end_session_endpoint": format!("{i}/session/end"),
            "jwks_uri": format!("{i}/jwks"),
            "response_types_supported": ["code"],
            "grant_types_supported": ["authorization_code"],
            "subject_types_supported": ["pairwise"],
            "id_token_signing_alg_values_supported": [jws::ALG],
            "userinfo_signing_alg_values_supported": [jws::ALG],
            "token_endpoint_auth_methods_supported": ["client_secret_post"],
            "acr_values_supported": ACR_VALUES,
            "scopes_supported": SCOPES,
            "claims_supported": ["sub", "given_name", "family_name", "birthdate", "gender", "birthplace", "birthcountry",
                "email", "preferred_username", "acr"],
            "claims_parameter_supported": true,
            "request_parameter_supported": false,
            "request_uri_parameter_supported": false,
        })
        .to_string();
        let jwks = serde_json::json!({ "keys": [key.public_jwk()] }).to_string();
        Provider { settings, mount, key, other_key, discovery, jwks }
    }
}

fn now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
}

fn random_id() -> String {
    hex::encode(rand::random::<[u8; 16]>())
}

/// The pairwise subject of an identity for a client: 64 hexadecimal characters and `v1`.
pub fn pairwise_sub(client_id: &str, identity_key: &str) -> String {
    let mut h = Sha256::new();
    h.update(b"fcsim sub\0");
    h.update(client_id.as_bytes());
    h.update([0]);
    h.update(identity_key.as_bytes());
    format!("{}v1", hex::encode(h.finalize()))
}

/// Equality that does not stop at the first difference.
fn same(a: &str, b: &str) -> bool {
    a.len() == b.len() && a.bytes().zip(b.bytes()).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// `base` with the query pairs appended.
fn with_query(base: &str, pairs: &[(&str, &str)]) -> Option<String> {
    let mut url = url::Url::parse(base).ok()?;
    {
        let mut q = url.query_pairs_mut();
        for (k, v) in pairs {
            q.append_pair(k, v);
        }
    }
    Some(url.into())
}

// ------------------------------------------------------------------ tokens carried

/// The checked authorization request, carried by the identity page.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Request {
    client_id: String,
    redirect_uri: String,
    scope: String,
    state: String,
    nonce: String,
    acr: String,
    exp: i64,
}

/// What an authorization code stands for.
#[derive(Debug, Serialize, Deserialize)]
struct Code {
    jti: String,
    client_id: String,
    redirect_uri: String,
    scope: String,
    nonce: String,
    acr: String,
    identity: String,
    scenario: Option<Failure>,
    exp: i64,
}

/// What an access token stands for.
#[derive(Debug, Serialize, Deserialize)]
struct Access {
    jti: String,
    client_id: String,
    sub: String,
    scope: String,
    identity: String,
    scenario: Option<Failure>,
    exp: i64,
}

// ------------------------------------------------------------------------- pages

struct IdentityView {
    key: &'static str,
    name: String,
    description: &'static str,
    birth: String,
    place: String,
}

struct FailureView {
    key: &'static str,
    label: &'static str,
}

#[derive(Template)]
#[template(path = "provider_identites.html")]
struct IdentityPage<'a> {
    action: String,
    service: &'a str,
    request: String,
    identities: Vec<IdentityView>,
    failures: Vec<FailureView>,
    error: Option<&'a str>,
}

#[derive(Template)]
#[template(path = "provider_erreur.html")]
struct ErrorPage<'a> {
    title: &'a str,
    message: &'a str,
    code: &'a str,
    detail: &'a str,
}

fn birth_label(date: &str) -> String {
    let (y, m, d) = (&date[..4], &date[5..7], &date[8..]);
    match (m, d) {
        ("00", _) => format!("en {y} (jour et mois inconnus)"),
        (_, "00") => format!("en {m}/{y} (jour inconnu)"),
        _ => format!("le {d}/{m}/{y}"),
    }
}

fn place_label(i: &Identity) -> String {
    if i.birthcountry == "99100" {
        format!("en France, commune de code INSEE {}", i.birthplace)
    } else {
        format!("à l'étranger, pays de code INSEE {} (commune vide)", i.birthcountry)
    }
}

impl Provider {
    fn identity_page(&self, request: &Request, error: Option<&str>) -> HttpResponse {
        let page = IdentityPage {
            action: format!("{}/authorize/choix", self.mount),
            service: &request.client_id,
            request: self.key.sign(TYP_REQUEST, request),
            identities: IDENTITIES
                .iter()
                .map(|i| IdentityView {
                    key: i.key,
                    name: format!("{} {}", i.given_name, i.family_name),
                    description: i.description,
                    birth: birth_label(i.birthdate),
                    place: place_label(i),
                })
                .collect(),
            failures: Failure::ALL.iter().map(|f| FailureView { key: f.key(), label: f.label() }).collect(),
            error,
        };
        render(if error.is_some() { StatusCode::BAD_REQUEST } else { StatusCode::OK }, &page)
    }
}

fn render<T: Template>(status: StatusCode, t: &T) -> HttpResponse {
    match t.render() {
        Ok(body) => HttpResponse::build(status)
            .content_type("text/html; charset=utf-8")
            .insert_header((header::CACHE_CONTROL, "no-store"))
            .body(body),
        Err(e) => {
            tracing::error!(error = %e, "FranceConnect simulator: template rendering failed");
            HttpResponse::InternalServerError().content_type("text/plain; charset=utf-8").body("Une erreur interne est survenue.")
        }
    }
}

fn error_page(title: &str, message: &str, code: &str, detail: &str) -> HttpResponse {
    render(StatusCode::BAD_REQUEST, &ErrorPage { title, message, code, detail })
}

fn see_other(location: &str) -> HttpResponse {
    HttpResponse::SeeOther().insert_header((header::LOCATION, location)).insert_header((header::CACHE_CONTROL, "no-store")).finish()
}

// ------------------------------------------------------------------- discovery, JWKS

async fn discovery(p: web::Data<Provider>) -> HttpResponse {
    HttpResponse::Ok().content_type("application/json").body(p.discovery.clone())
}

async fn jwks(p: web::Data<Provider>) -> HttpResponse {
    HttpResponse::Ok().content_type("application/json").body(p.jwks.clone())
}

// ----------------------------------------------------------------------- authorize

/// Why an authorization request is refused.
#[derive(Debug)]
enum Refusal {
    /// Client or redirect_uri not trusted: an error page.
    Page { title: &'static str, message: &'static str, detail: String },
    /// Back to the client with an RFC 6749 error.
    Redirect { redirect_uri: String, state: Option<String>, error: &'static str, description: String },
}

impl Refusal {
    fn response(&self) -> HttpResponse {
        match self {
            Refusal::Page { title, message, detail } => error_page(title, message, "invalid_request", detail),
            Refusal::Redirect { redirect_uri, state, error, description } => {
                let mut pairs = vec![("error", *error), ("error_description", description.as_str())];
                if let Some(s) = state {
                    pairs.push(("state", s));
                }
                match with_query(redirect_uri, &pairs) {
                    Some(location) => see_other(&location),
                    None => error_page("Demande refusée", "L'adresse de retour du service est invalide.", error, description),
                }
            }
        }
    }
}

fn values<'a>(params: &'a [(String, String)], name: &str) -> Vec<&'a str> {
    params.iter().filter(|(k, _)| k == name).map(|(_, v)| v.as_str()).collect()
}

fn single<'a>(params: &'a [(String, String)], name: &str) -> Option<&'a str> {
    match values(params, name)[..] {
        [v] => Some(v),
        _ => None,
    }
}

impl Provider {
    /// The authorization request's checks, in FranceConnect's order of trust: client and
    /// redirect_uri first (a page when they fail), then the rest (a redirect).
    fn check_authorize(&self, params: &[(String, String)], now: i64) -> Result<Request, Refusal> {
        let s = &self.settings;
        if single(params, "client_id") != Some(s.client_id.as_str()) {
            return Err(Refusal::Page {
                title: "Service inconnu",
                message: "Le service qui demande la connexion n'est pas enregistré auprès de ce simulateur de FranceConnect. Vérifiez l'identifiant client (client_id) du service.",
                detail: format!("client_id : {}", values(params, "client_id").join(", ")),
            });
        }
        let redirect_uri = match single(params, "redirect_uri") {
            Some(r) if s.redirect_uris.iter().any(|u| u == r) => r,
            _ => {
                return Err(Refusal::Page {
                    title: "Adresse de retour inconnue",
                    message: "L'adresse de retour (redirect_uri) de la demande n'est pas exactement l'une de celles enregistrées pour ce service : la connexion ne peut pas continuer.",
                    detail: format!("redirect_uri : {}", values(params, "redirect_uri").join(", ")),
                })
            }
        };
        let state = single(params, "state").filter(|v| !v.is_empty());
        let refuse = |error: &'static str, description: String| Refusal::Redirect {
            redirect_uri: redirect_uri.to_owned(),
            state: state.map(str::to_owned),
            error,
            description,
        };
        for (name, _) in params {
            if !PARAMETERS.contains(&name.as_str()) {
                return Err(refuse("invalid_request", format!("paramètre inconnu : {name}")));
            }
            if values(params, name).len() > 1 {
                return Err(refuse("invalid_request", format!("paramètre répété : {name}")));
            }
        }
        match single(params, "response_type") {
            Some("code") => {}
            Some(other) => return Err(refuse("unsupported_response_type", format!("response_type non pris en charge : {other}"))),
            None => return Err(refuse("invalid_request", "response_type manquant".into())),
        }
        let scope = single(params, "scope").unwrap_or_default();
        let scopes: Vec<&str> = scope.split(' ').filter(|v| !v.is_empty()).collect();
        if !scopes.contains(&"openid") {
            return Err(refuse("invalid_scope", "le scope doit contenir openid".into()));
        }
        if let Some(unknown) = scopes.iter().find(|v| !SCOPES.contains(v)) {
            return Err(refuse("invalid_scope", format!("scope inconnu : {unknown}")));
        }
        let Some(state) = state else {
            return Err(refuse("invalid_request", "state manquant".into()));
        };
        let nonce = single(params, "nonce").unwrap_or_default();
        if nonce.chars().count() < MIN_NONCE {
            return Err(refuse("invalid_request", format!("nonce manquant ou de moins de {MIN_NONCE} caractères")));
        }
        let acr_values: Vec<&str> = single(params, "acr_values").unwrap_or_default().split(' ').filter(|v| !v.is_empty()).collect();
        let Some(acr) = acr_values.first() else {
            return Err(refuse("invalid_request", "acr_values manquant".into()));
        };
        if let Some(bad) = acr_values.iter().find(|v| !ACR_VALUES.contains(v)) {
            return Err(refuse("invalid_request", format!("acr_values non pris en charge : {bad}")));
        }
        if let Some(prompt) = single(params, "prompt") {
            if prompt.split(' ').any(|v| !matches!(v, "login" | "consent")) {
                return Err(refuse("invalid_request", format!("prompt non pris en charge : {prompt}")));
            }
        }
        if let Some(claims) = single(params, "claims") {
            if !serde_json::from_str::<serde_json::Value>(claims).is_ok_and(|v| v.is_object()) {
                return Err(refuse("invalid_request", "claims n'est pas un objet JSON".into()));
            }
        }
        Ok(Request {
            client_id: s.client_id.clone(),
            redirect_uri: redirect_uri.to_owned(),
            scope: scopes.join(" "),
            state: state.to_owned(),
            nonce: nonce.to_owned(),
            acr: (*acr).to_owned(),
            exp: now + REQUEST_TTL,
        })
    }
}

/// `GET {issuer}/authorize`
async fn authorize(p: web::Data<Provider>, q: web::Query<Vec<(String, String)>>) -> HttpResponse {
    match p.check_authorize(&q, now()) {
        Ok(request) => p.identity_page(&request, None),
        Err(refusal) => refusal.response(),
    }
}

#[derive(Deserialize)]
struct Choice {
    demande: Option<String>,
    identite: Option<String>,
    scenario: Option<String>,
    action: Option<String>,
}

/// `POST {issuer}/authorize/choix`: the identity page's answer.
async fn choose(p: web::Data<Provider>, form: web::Form<Choice>) -> HttpResponse {
    let now = now();
    let request = form
        .demande
        .as_deref()
        .and_then(|t| p.key.verify::<Request>(TYP_REQUEST, t))
        .filter(|r| r.exp > now && r.client_id == p.settings.client_id && p.settings.redirect_uris.contains(&r.redirect_uri));
    let Some(request) = request else {
        return error_page(
            "Demande expirée",
            "Cette demande de connexion a expiré ou n'est pas valable. Retournez sur le service et recommencez la connexion.",
            "invalid_request",
            "demande absente, expirée ou altérée",
        );
    };
    if form.action.as_deref() == Some("annuler") {
        let pairs = [("error", "access_denied"), ("error_description", "l'usager a annulé la connexion"), ("state", request.state.as_str())];
        return match with_query(&request.redirect_uri, &pairs) {
            Some(location) => see_other(&location),
            None => error_page("Demande refusée", "L'adresse de retour du service est invalide.", "invalid_request", ""),
        };
    }
    let Some(identity) = form.identite.as_deref().and_then(identity) else {
        return p.identity_page(&request, Some("Choisissez une identité de test avant de continuer."));
    };
    let scenario = match form.scenario.as_deref() {
        None | Some("") | Some("normal") => None,
        Some(key) => match Failure::from_key(key) {
            Some(f) => Some(f),
            None => return p.identity_page(&request, Some("Ce scénario de test n'existe pas : choisissez-en un dans la liste.")),
        },
    };
    let code = Code {
        jti: random_id(),
        client_id: request.client_id.clone(),
        redirect_uri: request.redirect_uri.clone(),
        scope: request.scope.clone(),
        nonce: request.nonce.clone(),
        acr: request.acr.clone(),
        identity: identity.key.to_owned(),
        scenario,
        exp: now + CODE_TTL,
    };
    let code = p.key.sign(TYP_CODE, &code);
    match with_query(&request.redirect_uri, &[("code", &code), ("state", &request.state)]) {
        Some(location) => see_other(&location),
        None => error_page("Demande refusée", "L'adresse de retour du service est invalide.", "invalid_request", ""),
    }
}

// --------------------------------------------------------------------------- token

/// An OAuth error for the token endpoint's JSON body.
#[derive(Debug, PartialEq, Eq)]
struct OAuthError {
    status: StatusCode,
    error: &'static str,
    description: String,
}

impl OAuthError {
    fn grant(description: &str) -> OAuthError {
        OAuthError { status: StatusCode::BAD_REQUEST, error: "invalid_grant", description: description.to_owned() }
    }

    fn response(&self) -> HttpResponse {
        HttpResponse::build(self.status)
            .insert_header((header::CACHE_CONTROL, "no-store"))
            .json(serde_json::json!({ "error": self.error, "error_description": self.description }))
    }
}

#[derive(Debug, Default, Deserialize)]
struct TokenForm {
    grant_type: Option<String>,
    code: Option<String>,
    redirect_uri: Option<String>,
    client_id: Option<String>,
    client_secret: Option<String>,
}

/// `at_hash`: the left half of SHA-256 of the access token, base64url.
fn at_hash(access_token: &str) -> String {
    BASE64URL_NOPAD.encode(&Sha256::digest(access_token.as_bytes())[..16])
}

impl Provider {
    /// The code exchange: client, grant type, code (signature, expiry, client,
    /// redirect_uri, single use), scenario, then the tokens.
    fn exchange(&self, form: &TokenForm, now: i64) -> Result<serde_json::Value, OAuthError> {
        let s = &self.settings;
        let client_ok = form.client_id.as_deref() == Some(s.client_id.as_str())
            && form.client_secret.as_deref().is_some_and(|secret| same(secret, &s.client_secret));
        if !client_ok {
            return Err(OAuthError {
                status: StatusCode::UNAUTHORIZED,
                error: "invalid_client",
                description: "client inconnu ou secret incorrect (client_secret_post)".into(),
            });
        }
        if form.grant_type.as_deref() != Some("authorization_code") {
            return Err(OAuthError {
                status: StatusCode::BAD_REQUEST,
                error: "unsupported_grant_type",
                description: "seul authorization_code est pris en charge".into(),
            });
        }
        let code: Code = form
            .code
            .as_deref()
            .and_then(|c| self.key.verify(TYP_CODE, c))
            .ok_or_else(|| OAuthError::grant("code inconnu"))?;
        if code.exp <= now {
            return Err(OAuthError::grant("code expiré"));
        }
        if code.client_id != s.client_id {
            return Err(OAuthError::grant("code émis pour un autre client"));
        }
        if form.redirect_uri.as_deref() != Some(code.redirect_uri.as_str()) {
            return Err(OAuthError::grant("redirect_uri différente de celle de la demande"));
        }
        if !s.used_codes.consume(&code.jti, code.exp, now) {
            return Err(OAuthError::grant("code déjà utilisé"));
        }
        if code.scenario == Some(Failure::TokenError) {
            return Err(OAuthError::grant("scénario de test : échange du code refusé"));
        }
        let sub = pairwise_sub(&s.client_id, &code.identity);
        let access = Access {
            jti: random_id(),
            client_id: s.client_id.clone(),
            sub: sub.clone(),
            scope: code.scope.clone(),
            identity: code.identity.clone(),
            scenario: code.scenario,
            exp: now + TOKEN_TTL,
        };
        let access_token = self.key.sign(TYP_ACCESS, &access);
        let nonce = if code.scenario == Some(Failure::WrongNonce) { random_id() } else { code.nonce.clone() };
        let acr = if code.scenario == Some(Failure::LowAcr) { LOW_ACR.to_owned() } else { code.acr.clone() };
        let claims = serde_json::json!({
            "iss": s.issuer,
            "sub": sub,
            "aud": s.client_id,
            "exp": now + TOKEN_TTL,
            "iat": now,
            "auth_time": now,
            "nonce": nonce,
            "acr": acr,
            "at_hash": at_hash(&access_token),
        });
        let id_token = if code.scenario == Some(Failure::IdTokenSignature) {
            self.other_key.sign_as(self.key.kid(), TYP_JWT, &claims)
        } else {
            self.key.sign(TYP_JWT, &claims)
        };
        Ok(serde_json::json!({
            "access_token": access_token,
            "token_type": "Bearer",
            "expires_in": TOKEN_TTL,
            "id_token": id_token,
            "scope": code.scope,
        }))
    }
}

/// `POST {issuer}/token`
async fn token(p: web::Data<Provider>, form: web::Form<TokenForm>) -> HttpResponse {
    match p.exchange(&form, now()) {
        Ok(body) => HttpResponse::Ok()
            .insert_header((header::CACHE_CONTROL, "no-store"))
            .insert_header((header::PRAGMA, "no-cache"))
            .json(body),
        Err(e) => e.response(),
    }
}

// ------------------------------------------------------------------------ userinfo

/// The claims each scope grants.
fn granted(scope: &str) -> Vec<&'static str> {
    let mut out: Vec<&'static str> = Vec::new();
    for s in scope.split(' ') {
        let claims: &[&'static str] = match s {
            "given_name" => &["given_name"],
            "family_name" => &["family_name"],
            "birthdate" => &["birthdate"],
            "gender" => &["gender"],
            "birthplace" => &["birthplace"],
            "birthcountry" => &["birthcountry"],
            "email" => &["email"],
            "preferred_username" => &["preferred_username"],
            "profile" => &["given_name", "family_name", "birthdate", "gender", "preferred_username"],
            "birth" => &["birthplace", "birthcountry"],
            "identite_pivot" => &["given_name", "family_name", "birthdate", "gender", "birthplace", "birthcountry"],
            _ => &[],
        };
        for c in claims {
            if !out.contains(c) {
                out.push(c);
            }
        }
    }
    out
}

impl Provider {
    /// The signed userinfo response for a bearer token, or the `WWW-Authenticate` error
    /// (code and description, ASCII as a header value must be).
    fn user_info(&self, bearer: Option<&str>, now: i64) -> Result<String, (&'static str, &'static str)> {
        let token = bearer.ok_or(("invalid_request", "access token missing"))?;
        let access: Access = self.key.verify(TYP_ACCESS, token).ok_or(("invalid_token", "access token unknown"))?;
        if access.exp <= now {
            return Err(("invalid_token", "access token expired"));
        }
        if access.client_id != self.settings.client_id {
            return Err(("invalid_token", "access token of another client"));
        }
        let i = identity(&access.identity).ok_or(("invalid_token", "unknown identity"))?;
        let mut claims = serde_json::Map::new();
        claims.insert("iss".into(), self.settings.issuer.clone().into());
        claims.insert("aud".into(), access.client_id.clone().into());
        claims.insert("iat".into(), now.into());
        claims.insert("sub".into(), access.sub.clone().into());
        for c in granted(&access.scope) {
            let value = match c {
                "given_name" => Some(i.given_name),
                "family_name" => Some(i.family_name),
                "birthdate" => Some(i.birthdate),
                "gender" => Some(i.gender),
                "birthplace" => Some(i.birthplace),
                "birthcountry" => Some(i.birthcountry),
                "email" => Some(i.email),
                "preferred_username" => i.preferred_username,
                _ => None,
            };
            if let Some(v) = value {
                claims.insert(c.into(), v.into());
            }
        }
        Ok(if access.scenario == Some(Failure::UserinfoSignature) {
            self.other_key.sign_as(self.key.kid(), TYP_JWT, &claims)
        } else {
            self.key.sign(TYP_JWT, &claims)
        })
    }
}

/// `GET|POST {issuer}/userinfo`
async fn userinfo(p: web::Data<Provider>, req: HttpRequest) -> HttpResponse {
    let bearer = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim());
    match p.user_info(bearer, now()) {
        Ok(jwt) => HttpResponse::Ok().insert_header((header::CACHE_CONTROL, "no-store")).content_type("application/jwt").body(jwt),
        Err((error, description)) => HttpResponse::Unauthorized()
            .insert_header((header::WWW_AUTHENTICATE, format!("Bearer error=\"{error}\", error_description=\"{description}\"")))
            .finish(),
    }
}

// --------------------------------------------------------------------- session end

#[derive(Debug, Deserialize)]
struct HintClaims {
    iss: String,
    aud: String,
}

impl Provider {
    /// The logout request's checks; the redirection on success.
    fn check_logout(&self, params: &[(String, String)]) -> Result<String, (&'static str, String)> {
        const ACCEPTED: [&str; 4] = ["id_token_hint", "state", "post_logout_redirect_uri", "client_id"];
        for (name, _) in params {
            if !ACCEPTED.contains(&name.as_str()) {
                return Err(("paramètre inconnu", name.clone()));
            }
            if values(params, name).len() > 1 {
                return Err(("paramètre répété", name.clone()));
            }
        }
        let s = &self.settings;
        let target = single(params, "post_logout_redirect_uri")
            .filter(|u| s.post_logout_redirect_uris.iter().any(|r| r == u))
            .ok_or(("post_logout_redirect_uri absente ou non enregistrée", String::new()))?;
        let state = single(params, "state").filter(|v| !v.is_empty()).ok_or(("state manquant", String::new()))?;
        if single(params, "client_id").is_some_and(|c| c != s.client_id) {
            return Err(("client_id inconnu", String::new()));
        }
        let hint: HintClaims = single(params, "id_token_hint")
            .and_then(|t| self.key.verify(TYP_JWT, t))
            .ok_or(("id_token_hint absent ou non émis par ce simulateur", String::new()))?;
        if hint.iss != s.issuer || hint.aud != s.client_id {
            return Err(("id_token_hint émis pour un autre service", String::new()));
        }
        with_query(target, &[("state", state)]).ok_or(("post_logout_redirect_uri invalide", String::new()))
    }
}

/// `GET {issuer}/session/end`
async fn session_end(p: web::Data<Provider>, q: web::Query<Vec<(String, String)>>) -> HttpResponse {
    match p.check_logout(&q) {
        Ok(location) => see_other(&location),
        Err((reason, name)) => {
            let detail = if name.is_empty() { reason.to_owned() } else { format!("{reason} : {name}") };
            error_page(
                "Déconnexion refusée",
                "La demande de déconnexion de FranceConnect n'est pas valable : le service n'a pas été redirigé.",
                "invalid_request",
                &detail,
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ISSUER: &str = "http://localhost:8000/simulateur-franceconnect/api/v2";
    const RETOUR: &str = "http://localhost:8000/retour";

    fn provider() -> Provider {
        Provider::new(ProviderSettings::new(ISSUER, "rp", "secret", vec![RETOUR.into()], vec!["http://localhost:8000/fin".into()]))
    }

    fn code(p: &Provider, exp: i64, scenario: Option<Failure>) -> String {
        p.key.sign(
            TYP_CODE,
            &Code {
                jti: random_id(),
                client_id: "rp".into(),
                redirect_uri: RETOUR.into(),
                scope: "openid given_name".into(),
                nonce: "n".repeat(22),
                acr: "eidas1".into(),
                identity: "marie-martin".into(),
                scenario,
                exp,
            },
        )
    }

    fn form(code: String) -> TokenForm {
        TokenForm {
            grant_type: Some("authorization_code".into()),
            code: Some(code),
            redirect_uri: Some(RETOUR.into()),
            client_id: Some("rp".into()),
            client_secret: Some("secret".into()),
        }
    }

    #[test]
    fn a_code_past_its_lifetime_is_refused() {
        let p = provider();
        let t = now();
        let c = code(&p, t + CODE_TTL, None);
        assert_eq!(p.exchange(&form(c.clone()), t + CODE_TTL).unwrap_err(), OAuthError::grant("code expiré"));
        assert!(p.exchange(&form(c), t + CODE_TTL - 1).is_ok());
    }

    #[test]
    fn an_access_token_past_its_lifetime_is_refused_at_userinfo() {
        let p = provider();
        let t = now();
        let body = p.exchange(&form(code(&p, t + CODE_TTL, None)), t).unwrap();
        let at = body["access_token"].as_str().unwrap();
        assert!(p.user_info(Some(at), t + TOKEN_TTL - 1).is_ok());
        assert_eq!(p.user_info(Some(at), t + TOKEN_TTL).unwrap_err().0, "invalid_token");
    }

    #[test]
    fn a_code_is_not_an_access_token_nor_the_reverse() {
        let p = provider();
        let t = now();
        let c = code(&p, t + CODE_TTL, None);
        assert_eq!(p.user_info(Some(&c), t).unwrap_err().0, "invalid_token");
        let body = p.exchange(&form(c), t).unwrap();
        let at = body["access_token"].as_str().unwrap().to_owned();
        assert_eq!(p.exchange(&form(at), t).unwrap_err(), OAuthError::grant("code inconnu"));
    }

    #[test]
    fn used_codes_are_forgotten_once_expired() {
        let used = UsedCodes::default();
        assert!(used.consume("a", 100, 50));
        assert!(!used.consume("a", 100, 60));
        assert!(used.consume("b", 200, 150));
        assert_eq!(used.0.lock().unwrap().len(), 1, "a, expired at 100, is purged at 150");
    }

    #[test]
    fn bundles_grant_their_claims_once() {
        assert_eq!(granted("openid"), Vec::<&str>::new());
        assert_eq!(granted("openid profile birth"), ["given_name", "family_name", "birthdate", "gender", "preferred_username", "birthplace", "birthcountry"]);
        assert_eq!(granted("openid email given_name identite_pivot"), ["email", "given_name", "family_name", "birthdate", "gender", "birthplace", "birthcountry"]);
    }

    #[test]
    fn birth_dates_read_in_plain_french() {
        assert_eq!(birth_label("1962-08-24"), "le 24/08/1962");
        assert_eq!(birth_label("1981-07-00"), "en 07/1981 (jour inconnu)");
        assert_eq!(birth_label("1958-00-00"), "en 1958 (jour et mois inconnus)");
    }

    #[test]
    fn the_pairwise_sub_depends_on_client_and_identity_only() {
        let a = pairwise_sub("rp", "marie-martin");
        assert_eq!(a, pairwise_sub("rp", "marie-martin"));
        assert_ne!(a, pairwise_sub("other", "marie-martin"));
        assert_ne!(a, pairwise_sub("rp", "karim-benali"));
        assert_eq!(a.len(), 66);
        assert!(a.ends_with("v1"));
    }

    #[test]
    fn settings_debug_hides_the_secret() {
        let s = format!("{:?}", ProviderSettings::new(ISSUER, "rp", "tres-secret", vec![], vec![]));
        assert!(!s.contains("tres-secret"), "{s}");
        assert!(s.contains("rp"));
    }

    #[test]
    fn the_mount_path_is_the_issuers_path() {
        assert_eq!(provider().mount, "/simulateur-franceconnect/api/v2");
        assert_eq!(ProviderSettings::issuer_under("https://ac.example/"), "https://ac.example/simulateur-franceconnect/api/v2");
    }
}
