//! The demonstration e-service (development only). It plays FranceConnect's core in front
//! of the broker: the authorization request carries exactly the core's parameters
//! (`response_type=code`, `scope=openid profile email birth`, `acr_values=eidas1`, state and
//! nonce of 64 hexadecimal characters, `prompt=login`, and the `claims` parameter asking
//! for `rep_scope` with every démarche), the code is exchanged with `client_secret_post`,
//! the id_token is verified (signature against the JWKS, issuer, audience, expiry, nonce,
//! acr, at_hash) and userinfo is called.
//!
//! The state and nonce are bound to the browser through the session (keys `fcsim.*`).
//! Calls to the broker go over HTTP with an asynchronous client, so a worker answering a
//! demo page keeps serving the broker's own requests meanwhile.

use actix_session::Session;
use actix_web::http::{header, StatusCode};
use actix_web::{web, HttpResponse};
use askama::Template;
use broker_core::Demarche;
use openidconnect::core::{
    CoreAuthDisplay, CoreAuthPrompt, CoreAuthenticationFlow, CoreErrorResponseType, CoreGenderClaim, CoreJsonWebKey,
    CoreJweContentEncryptionAlgorithm, CoreJwsSigningAlgorithm, CoreRevocableToken, CoreRevocationErrorResponse,
    CoreTokenIntrospectionResponse, CoreTokenType,
};
use openidconnect::{
    reqwest, AccessTokenHash, AdditionalClaims, AuthType, AuthenticationContextClass, AuthorizationCode, Client, ClientId,
    ClientSecret, CsrfToken, EmptyExtraTokenFields, EndpointMaybeSet, EndpointNotSet, EndpointSet, IdToken, IdTokenFields,
    IssuerUrl, JsonWebKey, LogoutRequest, Nonce, OAuth2TokenResponse, PostLogoutRedirectUrl, ProviderMetadataWithLogout, RedirectUrl, Scope,
    StandardErrorResponse, StandardTokenResponse, TokenResponse, UserInfoClaims,
};
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// The authentication level FranceConnect asks every identity provider for.
pub const ACR: &str = "eidas1";
/// The scopes the core asks for, besides `openid` (which the client library adds first).
pub const SCOPES: [&str; 3] = ["profile", "email", "birth"];
/// The core's outgoing HTTP timeout.
const HTTP_TIMEOUT: Duration = Duration::from_secs(6);

const K_REQUEST: &str = "fcsim.demande";
const K_CONNECTION: &str = "fcsim.connexion";
const K_LOGOUT_STATE: &str = "fcsim.deconnexion";

/// Where the broker is and how the demo e-service is registered there.
#[derive(Debug, Clone)]
pub struct DemoSettings {
    /// The broker's issuer (public base URL, without trailing slash). The demo pages are
    /// served under it, at `{issuer}/demo`.
    pub issuer: String,
    pub client_id: String,
    pub client_secret: String,
}

impl DemoSettings {
    pub fn redirect_uri(&self) -> String {
        format!("{}/demo/retour", self.issuer.trim_end_matches('/'))
    }

    pub fn post_logout_redirect_uri(&self) -> String {
        format!("{}/demo", self.issuer.trim_end_matches('/'))
    }
}

/// The id_token's claim beyond the standard ones: the démarches the aidant acts for.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RepScope {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rep_scope: Option<Vec<String>>,
}
impl AdditionalClaims for RepScope {}

/// The identité pivot's claims that OpenID Connect does not define.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BirthClaims {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub birthplace: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub birthcountry: Option<String>,
}
impl AdditionalClaims for BirthClaims {}

type DemoIdTokenFields =
    IdTokenFields<RepScope, EmptyExtraTokenFields, CoreGenderClaim, CoreJweContentEncryptionAlgorithm, CoreJwsSigningAlgorithm>;
type DemoTokenResponse = StandardTokenResponse<DemoIdTokenFields, CoreTokenType>;
type DemoIdToken = IdToken<RepScope, CoreGenderClaim, CoreJweContentEncryptionAlgorithm, CoreJwsSigningAlgorithm>;

/// The OIDC client as built from the broker's discovery document: authorization endpoint
/// set, token and userinfo endpoints as discovered.
pub type DemoClient = Client<
    RepScope,
    CoreAuthDisplay,
    CoreGenderClaim,
    CoreJweContentEncryptionAlgorithm,
    CoreJsonWebKey,
    CoreAuthPrompt,
    StandardErrorResponse<CoreErrorResponseType>,
    DemoTokenResponse,
    CoreTokenIntrospectionResponse,
    CoreRevocableToken,
    CoreRevocationErrorResponse,
    EndpointSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointMaybeSet,
    EndpointMaybeSet,
>;

/// Per worker: the settings and the HTTP client (connections stay on the worker's runtime).
struct Demo {
    settings: DemoSettings,
    http: reqwest::Client,
}

/// Registers the demo pages under `/demo`.
pub fn configure(cfg: &mut web::ServiceConfig, settings: DemoSettings) {
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(HTTP_TIMEOUT)
        .build()
        .expect("HTTP client configuration");
    let demo = web::Data::new(Demo { settings, http });
    cfg.service(
        web::scope("/demo")
            .app_data(demo)
            .service(web::resource("").get(home).head(home))
            .route("/connexion", web::get().to(choose_provider))
            .route("/connexion/aidants-connect", web::get().to(start))
            .route("/retour", web::get().to(callback))
            .route("/deconnexion", web::post().to(logout)),
    );
}

// ------------------------------------------------------------------ the OIDC client

/// What can go wrong while talking to the broker, for the logs and the error page.
#[derive(Debug)]
pub enum DemoError {
    Discovery(String),
    Configuration(String),
    Token(String),
    IdToken(String),
    UserInfo(String),
}

impl std::fmt::Display for DemoError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DemoError::Discovery(e) => write!(f, "discovery: {e}"),
            DemoError::Configuration(e) => write!(f, "configuration: {e}"),
            DemoError::Token(e) => write!(f, "token: {e}"),
            DemoError::IdToken(e) => write!(f, "id_token: {e}"),
            DemoError::UserInfo(e) => write!(f, "userinfo: {e}"),
        }
    }
}

/// Error chain of a library error, one line.
fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

/// Fetches the broker's discovery document and its JWKS (the core does it each time).
pub async fn discover(settings: &DemoSettings, http: &reqwest::Client) -> Result<ProviderMetadataWithLogout, DemoError> {
    let issuer = IssuerUrl::new(settings.issuer.clone()).map_err(|e| DemoError::Configuration(format!("issuer: {e}")))?;
    ProviderMetadataWithLogout::discover_async(issuer, http).await.map_err(|e| DemoError::Discovery(chain(&e)))
}

/// The client registered at the broker, authenticating at the token endpoint with
/// `client_secret_post` as FranceConnect's core does.
pub fn client(metadata: &ProviderMetadataWithLogout, settings: &DemoSettings) -> Result<DemoClient, DemoError> {
    let redirect = RedirectUrl::new(settings.redirect_uri()).map_err(|e| DemoError::Configuration(format!("redirect_uri: {e}")))?;
    Ok(DemoClient::from_provider_metadata(
        metadata.clone(),
        ClientId::new(settings.client_id.clone()),
        Some(ClientSecret::new(settings.client_secret.clone())),
    )
    .set_redirect_uri(redirect)
    .set_auth_type(AuthType::RequestBody))
}

/// The `claims` parameter: `rep_scope` in the id_token, essential, with every démarche.
pub fn rep_scope_claims() -> String {
    let values: Vec<&str> = Demarche::ALL.iter().map(|d| d.key()).collect();
    serde_json::json!({ "id_token": { "rep_scope": { "essential": true, "values": values } } }).to_string()
}

/// 32 random bytes in hexadecimal: the core's state and nonce (64 characters).
pub fn random_hex64() -> String {
    hex::encode(rand::random::<[u8; 32]>())
}

/// The authorization request as the core sends it.
pub fn authorization_url(client: &DemoClient, state: &str, nonce: &str) -> url::Url {
    let (state, nonce) = (state.to_owned(), nonce.to_owned());
    let mut request = client.authorize_url(CoreAuthenticationFlow::AuthorizationCode, move || CsrfToken::new(state), move || Nonce::new(nonce));
    for s in SCOPES {
        request = request.add_scope(Scope::new(s.to_owned()));
    }
    let (url, _, _) = request
        .add_auth_context_value(AuthenticationContextClass::new(ACR.to_owned()))
        .add_prompt(CoreAuthPrompt::Login)
        .add_extra_param("claims", rep_scope_claims())
        .url();
    url
}

/// The identity and démarche received, kept in the session for the demo pages.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Received {
    pub sub: String,
    pub given_name: String,
    pub family_name: String,
    pub preferred_username: Option<String>,
    pub birthdate: String,
    pub gender: String,
    pub birthplace: String,
    pub birthcountry: String,
    pub email: String,
    pub acr: String,
    /// The id_token's `rep_scope`, as received.
    pub rep_scope: Vec<String>,
    /// The raw id_token, for `id_token_hint` at logout.
    pub id_token: String,
    /// The state of the request answered: reloading the result page shows it again.
    pub state: String,
}

/// The id_token checks the core makes beyond the library's (signature, `iss`, `aud`, `exp`,
/// `iat`, nonce): `acr` present and equal to the requested level, `at_hash` when present,
/// `rep_scope` an array sharing at least one démarche with the request.
fn verify_id_token(client: &DemoClient, settings: &DemoSettings, token: &DemoTokenResponse, nonce: &str) -> Result<(DemoIdToken, String, Vec<String>, String), DemoError> {
    let id_token = token.id_token().ok_or_else(|| DemoError::IdToken("absent from the token response".into()))?.clone();
    let verifier = client.id_token_verifier().set_auth_context_verifier_fn(|acr: Option<&AuthenticationContextClass>| match acr {
        Some(a) if a.as_str() == ACR => Ok(()),
        Some(a) => Err(format!("acr {} instead of {ACR}", a.as_str())),
        None => Err("acr missing".to_owned()),
    });
    let claims = id_token.claims(&verifier, &Nonce::new(nonce.to_owned())).map_err(|e| DemoError::IdToken(chain(&e)))?;
    if let Some(expected) = claims.access_token_hash() {
        let alg = id_token.signing_alg().map_err(|e| DemoError::IdToken(chain(&e)))?;
        let actual = if *alg == CoreJwsSigningAlgorithm::HmacSha256 {
            AccessTokenHash::from_token(token.access_token(), alg, &CoreJsonWebKey::new_symmetric(settings.client_secret.as_bytes().to_vec()))
        } else {
            let key = id_token.signing_key(&verifier).map_err(|e| DemoError::IdToken(chain(&e)))?;
            AccessTokenHash::from_token(token.access_token(), alg, key)
        }
        .map_err(|e| DemoError::IdToken(chain(&e)))?;
        if actual != *expected {
            return Err(DemoError::IdToken("at_hash does not match the access token".into()));
        }
    }
    let rep_scope = claims.additional_claims().rep_scope.clone().ok_or_else(|| DemoError::IdToken("rep_scope missing".into()))?;
    if !rep_scope.iter().any(|k| Demarche::from_key(k).is_some()) {
        return Err(DemoError::IdToken(format!("rep_scope {rep_scope:?} shares no démarche with the request")));
    }
    let acr = claims.auth_context_ref().map(|a| a.to_string()).unwrap_or_default();
    let sub = claims.subject().to_string();
    Ok((id_token, sub, rep_scope, acr))
}

/// Code exchange, id_token verification and userinfo.
pub async fn finish(settings: &DemoSettings, http: &reqwest::Client, code: &str, state: &str, nonce: &str) -> Result<Received, DemoError> {
    let metadata = discover(settings, http).await?;
    let client = client(&metadata, settings)?;
    let token: DemoTokenResponse = client
        .exchange_code(AuthorizationCode::new(code.to_owned()))
        .map_err(|e| DemoError::Configuration(chain(&e)))?
        .request_async(http)
        .await
        .map_err(|e| DemoError::Token(chain(&e)))?;
    let (id_token, sub, rep_scope, acr) = verify_id_token(&client, settings, &token, nonce)?;
    let info: UserInfoClaims<BirthClaims, CoreGenderClaim> = client
        .user_info(token.access_token().clone(), Some(openidconnect::SubjectIdentifier::new(sub.clone())))
        .map_err(|e| DemoError::Configuration(chain(&e)))?
        .request_async(http)
        .await
        .map_err(|e| DemoError::UserInfo(chain(&e)))?;
    let extra = info.additional_claims();
    Ok(Received {
        sub,
        given_name: info.given_name().and_then(|n| n.get(None)).map(|n| n.to_string()).unwrap_or_default(),
        family_name: info.family_name().and_then(|n| n.get(None)).map(|n| n.to_string()).unwrap_or_default(),
        preferred_username: info.preferred_username().map(|n| n.to_string()),
        birthdate: info.birthdate().map(|b| b.to_string()).unwrap_or_default(),
        gender: info.gender().map(|g| g.to_string()).unwrap_or_default(),
        birthplace: extra.birthplace.clone().unwrap_or_default(),
        birthcountry: extra.birthcountry.clone().unwrap_or_default(),
        email: info.email().map(|e| e.to_string()).unwrap_or_default(),
        acr,
        rep_scope,
        id_token: id_token.to_string(),
        state: state.to_owned(),
    })
}

// ------------------------------------------------------------------------- pages

/// A request sent to the broker and not answered yet.
#[derive(Debug, Serialize, Deserialize)]
struct Pending {
    state: String,
    nonce: String,
}

struct Row {
    label: &'static str,
    claim: &'static str,
    value: String,
}

struct DemarcheView {
    key: String,
    title: String,
}

#[derive(Template)]
#[template(path = "accueil.html")]
struct HomePage {
    signed_out: bool,
    connection: Option<ConnectionView>,
}

#[derive(Template)]
#[template(path = "connexion.html")]
struct ProviderPage;

#[derive(Template)]
#[template(path = "retour.html")]
struct ResultPage {
    connection: ConnectionView,
}

#[derive(Template)]
#[template(path = "erreur.html")]
struct ErrorPage<'a> {
    title: &'a str,
    message: &'a str,
    detail: Option<String>,
    retry: bool,
}

struct ConnectionView {
    name: String,
    rows: Vec<Row>,
    demarches: Vec<DemarcheView>,
}

fn gender_label(g: &str) -> &'static str {
    match g {
        "female" => "femme",
        "male" => "homme",
        "unspecified" => "non précisé",
        _ => "valeur inattendue",
    }
}

impl ConnectionView {
    fn of(r: &Received) -> ConnectionView {
        let shown = |v: &str| if v.is_empty() { "(vide)".to_owned() } else { v.to_owned() };
        let mut rows = vec![
            Row { label: "Prénoms", claim: "given_name", value: shown(&r.given_name) },
            Row { label: "Nom de naissance", claim: "family_name", value: shown(&r.family_name) },
        ];
        if let Some(p) = &r.preferred_username {
            rows.push(Row { label: "Nom d'usage", claim: "preferred_username", value: shown(p) });
        }
        rows.extend([
            Row { label: "Date de naissance", claim: "birthdate", value: shown(&r.birthdate) },
            Row { label: "Sexe", claim: "gender", value: format!("{} ({})", shown(&r.gender), gender_label(&r.gender)) },
            Row { label: "Commune de naissance (code INSEE)", claim: "birthplace", value: shown(&r.birthplace) },
            Row { label: "Pays de naissance (code INSEE)", claim: "birthcountry", value: shown(&r.birthcountry) },
            Row { label: "Adresse e-mail", claim: "email", value: shown(&r.email) },
            Row { label: "Identifiant pour ce service", claim: "sub", value: shown(&r.sub) },
            Row { label: "Niveau d'authentification", claim: "acr", value: shown(&r.acr) },
        ]);
        let demarches = r
            .rep_scope
            .iter()
            .map(|k| DemarcheView {
                key: k.clone(),
                title: Demarche::from_key(k).map(|d| d.title().to_owned()).unwrap_or_else(|| "Démarche inconnue".to_owned()),
            })
            .collect();
        ConnectionView { name: format!("{} {}", r.given_name, r.family_name), rows, demarches }
    }
}

fn render<T: Template>(status: StatusCode, t: &T) -> HttpResponse {
    match t.render() {
        Ok(body) => HttpResponse::build(status)
            .content_type("text/html; charset=utf-8")
            .insert_header((header::CACHE_CONTROL, "no-store"))
            .body(body),
        Err(e) => {
            tracing::error!(error = %e, "demo template rendering failed");
            HttpResponse::InternalServerError().content_type("text/plain; charset=utf-8").body("Une erreur interne est survenue.")
        }
    }
}

fn error_page(status: StatusCode, title: &str, message: &str, detail: Option<String>) -> HttpResponse {
    render(status, &ErrorPage { title, message, detail, retry: true })
}

fn broker_unreachable(e: &DemoError) -> HttpResponse {
    tracing::warn!(error = %e, "demo: broker call failed");
    error_page(
        StatusCode::BAD_GATEWAY,
        "Aidants Connect ne répond pas",
        "Le service de démonstration n'a pas pu joindre Aidants Connect. Vérifiez que l'adresse publique (AC_ISSUER) est joignable depuis le serveur, puis réessayez.",
        Some(e.to_string()),
    )
}

fn see_other(location: &str) -> HttpResponse {
    HttpResponse::SeeOther().insert_header((header::LOCATION, location)).finish()
}

fn connection(session: &Session) -> Option<Received> {
    session.get::<Received>(K_CONNECTION).ok().flatten()
}

#[derive(Deserialize)]
struct HomeQuery {
    state: Option<String>,
}

/// `GET /demo`: the e-service's home page. Coming back from the broker's logout (with
/// `state`), it says the user is signed out.
async fn home(session: Session, q: web::Query<HomeQuery>) -> HttpResponse {
    let mut signed_out = false;
    if let Some(state) = &q.state {
        // The broker's logout ends the whole browser session: the stored state may be gone.
        let expected = session.remove_as::<String>(K_LOGOUT_STATE).and_then(Result::ok);
        signed_out = expected.is_none_or(|e| &e == state);
    }
    let connection = if signed_out { None } else { connection(&session).as_ref().map(ConnectionView::of) };
    render(StatusCode::OK, &HomePage { signed_out, connection })
}

/// `GET /demo/connexion`: the choice of an identity provider, as on FranceConnect.
async fn choose_provider() -> HttpResponse {
    render(StatusCode::OK, &ProviderPage)
}

/// `GET /demo/connexion/aidants-connect`: discovery, then 303 to the broker's /authorize.
async fn start(demo: web::Data<Demo>, session: Session) -> HttpResponse {
    let metadata = match discover(&demo.settings, &demo.http).await {
        Ok(m) => m,
        Err(e) => return broker_unreachable(&e),
    };
    let client = match client(&metadata, &demo.settings) {
        Ok(c) => c,
        Err(e) => return broker_unreachable(&e),
    };
    let pending = Pending { state: random_hex64(), nonce: random_hex64() };
    let url = authorization_url(&client, &pending.state, &pending.nonce);
    if session.insert(K_REQUEST, &pending).is_err() {
        return error_page(StatusCode::INTERNAL_SERVER_ERROR, "Une erreur interne est survenue", "Réessayez dans quelques instants.", None);
    }
    see_other(url.as_str())
}

#[derive(Deserialize)]
struct CallbackQuery {
    code: Option<String>,
    state: Option<String>,
    iss: Option<String>,
    error: Option<String>,
    error_description: Option<String>,
}

/// `GET /demo/retour`: the broker's answer. Checks state and iss, then exchanges the code.
/// Reloading the page of a connection already made shows it again without a new exchange.
async fn callback(demo: web::Data<Demo>, session: Session, q: web::Query<CallbackQuery>) -> HttpResponse {
    if let Some(c) = connection(&session).filter(|c| q.state.as_deref() == Some(c.state.as_str())) {
        return render(StatusCode::OK, &ResultPage { connection: ConnectionView::of(&c) });
    }
    let pending = session.remove_as::<Pending>(K_REQUEST).and_then(Result::ok);
    let Some(pending) = pending else {
        return error_page(
            StatusCode::BAD_REQUEST,
            "Aucune connexion en cours",
            "Ce navigateur n'a pas de demande de connexion en cours (elle a déjà abouti, ou la session a expiré). Recommencez depuis le service.",
            None,
        );
    };
    if q.state.as_deref() != Some(pending.state.as_str()) {
        return error_page(
            StatusCode::BAD_REQUEST,
            "Réponse refusée",
            "La réponse d'Aidants Connect ne correspond pas à la demande de ce navigateur (paramètre state différent). Recommencez depuis le service.",
            None,
        );
    }
    let issuer = demo.settings.issuer.trim_end_matches('/');
    if q.iss.as_deref() != Some(issuer) {
        return error_page(
            StatusCode::BAD_REQUEST,
            "Réponse refusée",
            "La réponse ne vient pas d'Aidants Connect (paramètre iss absent ou différent).",
            Some(format!("iss reçu : {}", q.iss.as_deref().unwrap_or("(absent)"))),
        );
    }
    if let Some(error) = &q.error {
        if error == "access_denied" {
            return render(
                StatusCode::OK,
                &ErrorPage {
                    title: "Connexion annulée",
                    message: "La connexion avec Aidants Connect a été annulée : aucune information n'a été transmise au service.",
                    detail: None,
                    retry: true,
                },
            );
        }
        let detail = match &q.error_description {
            Some(d) => format!("{error} : {d}"),
            None => error.clone(),
        };
        return error_page(StatusCode::OK, "La connexion a échoué", "Aidants Connect a refusé la demande de connexion.", Some(detail));
    }
    let Some(code) = q.code.as_deref().filter(|c| !c.is_empty()) else {
        return error_page(StatusCode::BAD_REQUEST, "Réponse refusée", "La réponse d'Aidants Connect ne contient pas de code.", None);
    };
    let received = match finish(&demo.settings, &demo.http, code, &pending.state, &pending.nonce).await {
        Ok(r) => r,
        Err(e @ DemoError::Discovery(_)) | Err(e @ DemoError::Configuration(_)) => return broker_unreachable(&e),
        Err(e) => {
            tracing::warn!(error = %e, "demo: authentication response refused");
            return error_page(
                StatusCode::BAD_GATEWAY,
                "La connexion a échoué",
                "La réponse d'Aidants Connect n'a pas passé les vérifications que fait FranceConnect.",
                Some(e.to_string()),
            );
        }
    };
    let view = ConnectionView::of(&received);
    if session.insert(K_CONNECTION, &received).is_err() {
        return error_page(StatusCode::INTERNAL_SERVER_ERROR, "Une erreur interne est survenue", "Réessayez dans quelques instants.", None);
    }
    render(StatusCode::OK, &ResultPage { connection: view })
}

/// `POST /demo/deconnexion`: forgets the connection here, then 303 to the broker's
/// end_session_endpoint with id_token_hint, state and post_logout_redirect_uri, as the
/// core does. (A cross-site form carries no session cookie: SameSite=Lax.)
async fn logout(demo: web::Data<Demo>, session: Session) -> HttpResponse {
    let Some(received) = session.remove_as::<Received>(K_CONNECTION).and_then(Result::ok) else {
        return see_other("/demo");
    };
    let metadata = match discover(&demo.settings, &demo.http).await {
        Ok(m) => m,
        Err(e) => return broker_unreachable(&e),
    };
    match logout_url(&metadata, &demo.settings, &received.id_token, &random_hex64()) {
        Some((url, state)) => {
            let _ = session.insert(K_LOGOUT_STATE, state);
            see_other(url.as_str())
        }
        None => see_other("/demo"),
    }
}

/// The end_session request, when the broker advertises the endpoint and the id_token
/// parses; returns the URL and its state.
pub fn logout_url(metadata: &ProviderMetadataWithLogout, settings: &DemoSettings, id_token: &str, state: &str) -> Option<(url::Url, String)> {
    let endpoint = metadata.additional_metadata().end_session_endpoint.clone()?;
    let hint: DemoIdToken = id_token.parse().ok()?;
    let post_logout = PostLogoutRedirectUrl::new(settings.post_logout_redirect_uri()).ok()?;
    let url = LogoutRequest::from(endpoint)
        .set_id_token_hint(&hint)
        .set_client_id(ClientId::new(settings.client_id.clone()))
        .set_post_logout_redirect_uri(post_logout)
        .set_state(CsrfToken::new(state.to_owned()))
        .http_get_url();
    Some((url, state.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use openidconnect::core::{CoreResponseType, CoreSubjectIdentifierType};
    use openidconnect::{
        AuthUrl, EmptyAdditionalProviderMetadata, EndSessionUrl, JsonWebKeySet, JsonWebKeySetUrl, LogoutProviderMetadata,
        ResponseTypes, TokenUrl, UserInfoUrl,
    };
    use std::collections::HashMap;

    const ISSUER: &str = "http://localhost:8000";

    fn settings() -> DemoSettings {
        DemoSettings { issuer: ISSUER.into(), client_id: "demo-service".into(), client_secret: "s3cr3t".into() }
    }

    fn metadata() -> ProviderMetadataWithLogout {
        ProviderMetadataWithLogout::new(
            IssuerUrl::new(ISSUER.into()).unwrap(),
            AuthUrl::new(format!("{ISSUER}/authorize")).unwrap(),
            JsonWebKeySetUrl::new(format!("{ISSUER}/jwks")).unwrap(),
            vec![ResponseTypes::new(vec![CoreResponseType::Code])],
            vec![CoreSubjectIdentifierType::Public],
            vec![CoreJwsSigningAlgorithm::EcdsaP256Sha256],
            LogoutProviderMetadata {
                end_session_endpoint: Some(EndSessionUrl::new(format!("{ISSUER}/logout")).unwrap()),
                additional_metadata: EmptyAdditionalProviderMetadata {},
            },
        )
        .set_token_endpoint(Some(TokenUrl::new(format!("{ISSUER}/token")).unwrap()))
        .set_userinfo_endpoint(Some(UserInfoUrl::new(format!("{ISSUER}/userinfo")).unwrap()))
        .set_jwks(JsonWebKeySet::new(vec![]))
    }

    fn params(url: &url::Url) -> HashMap<String, Vec<String>> {
        let mut out: HashMap<String, Vec<String>> = HashMap::new();
        for (k, v) in url.query_pairs() {
            out.entry(k.into_owned()).or_default().push(v.into_owned());
        }
        out
    }

    fn one<'a>(p: &'a HashMap<String, Vec<String>>, k: &str) -> &'a str {
        let v = p.get(k).unwrap_or_else(|| panic!("{k} missing"));
        assert_eq!(v.len(), 1, "{k} repeated");
        &v[0]
    }

    #[test]
    fn the_authorization_request_carries_exactly_the_cores_parameters() {
        let (state, nonce) = (random_hex64(), random_hex64());
        let url = authorization_url(&client(&metadata(), &settings()).unwrap(), &state, &nonce);
        assert_eq!(format!("{}://{}{}", url.scheme(), url.host_str().unwrap(), url.path()), "http://localhost/authorize");
        assert_eq!(url.port(), Some(8000));
        let p = params(&url);
        let mut names: Vec<&str> = p.keys().map(String::as_str).collect();
        names.sort();
        assert_eq!(names, ["acr_values", "claims", "client_id", "nonce", "prompt", "redirect_uri", "response_type", "scope", "state"]);
        assert_eq!(one(&p, "response_type"), "code");
        assert_eq!(one(&p, "client_id"), "demo-service");
        assert_eq!(one(&p, "redirect_uri"), "http://localhost:8000/demo/retour");
        assert_eq!(one(&p, "scope"), "openid profile email birth");
        assert_eq!(one(&p, "acr_values"), "eidas1");
        assert_eq!(one(&p, "prompt"), "login");
        assert_eq!(one(&p, "state"), state);
        assert_eq!(one(&p, "nonce"), nonce);
        let claims: serde_json::Value = serde_json::from_str(one(&p, "claims")).unwrap();
        assert_eq!(
            claims,
            serde_json::json!({"id_token": {"rep_scope": {"essential": true, "values":
                ["papiers", "famille", "social", "travail", "logement", "transports", "argent", "justice", "etranger", "loisirs"]}}})
        );
    }

    #[test]
    fn state_and_nonce_are_64_hex_characters_and_differ() {
        let (a, b) = (random_hex64(), random_hex64());
        for v in [&a, &b] {
            assert_eq!(v.len(), 64);
            assert!(v.bytes().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f')), "{v}");
        }
        assert_ne!(a, b);
    }

    #[test]
    fn the_token_request_uses_client_secret_post() {
        let c = client(&metadata(), &settings()).unwrap();
        assert!(matches!(c.auth_type(), AuthType::RequestBody));
        assert_eq!(c.token_uri().map(|u| u.as_str()), Some("http://localhost:8000/token"));
        assert_eq!(c.user_info_url().map(|u| u.as_str()), Some("http://localhost:8000/userinfo"));
    }

    #[test]
    fn the_logout_request_names_the_token_the_state_and_the_demo_page() {
        // An unsigned token is enough here: only its text is sent back as the hint.
        let header = data(br#"{"alg":"ES256","kid":"k1"}"#);
        let body = data(br#"{"iss":"http://localhost:8000","sub":"u1","aud":"demo-service","exp":4102444800,"iat":1700000000}"#);
        let token = format!("{header}.{body}.c2ln");
        let (url, state) = logout_url(&metadata(), &settings(), &token, "etat").unwrap();
        assert_eq!(state, "etat");
        assert_eq!(url.path(), "/logout");
        let p = params(&url);
        assert_eq!(one(&p, "id_token_hint"), token);
        assert_eq!(one(&p, "state"), "etat");
        assert_eq!(one(&p, "client_id"), "demo-service");
        assert_eq!(one(&p, "post_logout_redirect_uri"), "http://localhost:8000/demo");
    }

    fn data(bytes: &[u8]) -> String {
        data_encoding::BASE64URL_NOPAD.encode(bytes)
    }

    #[test]
    fn the_connection_view_shows_every_claim_and_the_demarche_title() {
        let r = Received {
            sub: "abc".into(),
            given_name: "Jean Pierre".into(),
            family_name: "Lefèvre".into(),
            preferred_username: None,
            birthdate: "1948-05-12".into(),
            gender: "male".into(),
            birthplace: "59350".into(),
            birthcountry: "99100".into(),
            email: "jp@example.test".into(),
            acr: "eidas1".into(),
            rep_scope: vec!["argent".into()],
            id_token: String::new(),
            state: String::new(),
        };
        let v = ConnectionView::of(&r);
        let claims: Vec<&str> = v.rows.iter().map(|r| r.claim).collect();
        assert_eq!(claims, ["given_name", "family_name", "birthdate", "gender", "birthplace", "birthcountry", "email", "sub", "acr"]);
        assert_eq!(v.demarches.len(), 1);
        assert_eq!(v.demarches[0].title, "Argent - Impôts - Consommation");
        let html = ResultPage { connection: v }.render().unwrap();
        assert!(html.contains("Jean Pierre"));
        assert!(html.contains("Argent - Impôts - Consommation"));
        assert!(html.contains("male (homme)"));
    }
}
