//! FranceConnect relying party: the broker identifies a usager through FranceConnect v2
//! when a mandat is made (shared/docs/franceconnect.md §2).
//!
//! - [`FcClient::begin`] builds the authorization request: `client_id`, `response_type=code`,
//!   `redirect_uri`, `scope` ([`SCOPE`]), `state`, `nonce` (32 random bytes each, 43
//!   base64url characters) and `acr_values=eidas1`, nothing else (FranceConnect rejects
//!   unknown parameters). The caller keeps the [`Pending`] request in the aidant's session
//!   with [`store_pending`] and gets it back, once, with [`take_pending`].
//! - On the callback, an `error` parameter becomes an [`FcError`] through [`callback_error`];
//!   a `code` goes to [`FcClient::finish`]: code exchange (`client_secret_post`), id_token
//!   verified (ES256 or RS256 signature with a key of FranceConnect's JWKS, `iss`, `aud`,
//!   `exp`, `iat`, `nonce`, `at_hash` when present, `acr` one of eidas1..3), then the signed
//!   userinfo (`application/jwt`) verified here (`openidconnect` v4 only verifies RS256
//!   userinfo): signature with the JWKS key of its `kid`, `iss`, `aud`, `exp` when present,
//!   `sub` equal to the id_token's; the claims are checked by [`IdentitePivot::validate`].
//! - [`FcClient::logout_url`] ends the usager's FranceConnect session once the identity is
//!   captured.
//!
//! Discovery and the JWKS are fetched on first use and kept [`CACHE_TTL`]; a token whose
//! `kid` is not in the cached JWKS makes the client fetch the JWKS once more before it
//! refuses the token (key rotation at FranceConnect).
//!
//! Errors carry a message in plain French for the aidant ([`FcError::message`]) and a
//! technical detail for the logs (`Display`), which never contains personal data.

use actix_session::Session;
use broker_core::identite::IdentitePivot;
use broker_core::secret::{constant_time_eq, random_bytes};
use data_encoding::BASE64URL_NOPAD;
use openidconnect::core::{
    CoreAuthenticationFlow, CoreClient, CoreIdToken, CoreJsonWebKey, CoreJsonWebKeySet, CoreJwsSigningAlgorithm, CoreTokenResponse,
};
use openidconnect::{
    reqwest, AccessToken, AccessTokenHash, AuthType, AuthenticationContextClass, AuthorizationCode, ClaimsVerificationError, ClientId,
    ClientSecret, CsrfToken, EndpointMaybeSet, EndpointNotSet, EndpointSet, IssuerUrl, JsonWebKey, Nonce, OAuth2TokenResponse,
    ProviderMetadataWithLogout, RedirectUrl, RequestTokenError, Scope, SignatureVerificationError, TokenResponse,
};
use serde::{Deserialize, Serialize};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};
use url::Url;

/// The level asked for, and the levels accepted in the id_token.
pub const ACR_REQUESTED: &str = "eidas1";
pub const ACR_ACCEPTED: [&str; 3] = ["eidas1", "eidas2", "eidas3"];
/// The identity claims asked for (`openid` first, as sent).
pub const SCOPE: &str = "openid given_name family_name birthdate gender birthplace birthcountry email preferred_username";
/// How long discovery and the JWKS are kept before they are fetched again.
pub const CACHE_TTL: Duration = Duration::from_secs(5 * 60);
/// Timeout of each call to FranceConnect.
pub const HTTP_TIMEOUT: Duration = Duration::from_secs(10);
/// An id_token issued further in the future than this (clock skew) or longer ago than
/// [`IAT_MAX_AGE`] is refused.
const IAT_SKEW: chrono::Duration = chrono::Duration::seconds(60);
const IAT_MAX_AGE: chrono::Duration = chrono::Duration::minutes(10);
/// Session key of the pending request.
pub const SESSION_KEY: &str = "fc.demande";

/// How the broker is registered at FranceConnect.
#[derive(Clone)]
pub struct FcSettings {
    /// FranceConnect's issuer, e.g. `https://fcp.integ01.dev-franceconnect.fr/api/v2`.
    pub issuer: String,
    pub client_id: String,
    pub client_secret: String,
    pub redirect_uri: String,
    pub post_logout_redirect_uri: String,
}

impl std::fmt::Debug for FcSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FcSettings")
            .field("issuer", &self.issuer)
            .field("client_id", &self.client_id)
            .field("client_secret", &"[redacted]")
            .field("redirect_uri", &self.redirect_uri)
            .field("post_logout_redirect_uri", &self.post_logout_redirect_uri)
            .finish()
    }
}

/// Settings that cannot make a client (not absolute URLs).
#[derive(Debug, thiserror::Error)]
#[error("FranceConnect settings: {0}")]
pub struct InvalidSettings(pub String);

/// An authorization request sent and not answered yet, bound to the aidant's session.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pending {
    pub state: String,
    pub nonce: String,
}

impl std::fmt::Debug for Pending {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Pending(…)")
    }
}

/// The usager as FranceConnect identified them.
#[derive(Clone, PartialEq, Eq)]
pub struct FcIdentity {
    /// FranceConnect's `sub` for the broker. Not to be stored: the usager's key is
    /// [`broker_core::identite::usager_key`] of it.
    pub fc_sub: String,
    /// The identité pivot, validated.
    pub identity: IdentitePivot,
    /// The raw id_token, for `id_token_hint` at logout.
    pub id_token: String,
}

/// Personal data: `Debug` shows none of it.
impl std::fmt::Debug for FcIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FcIdentity(…)")
    }
}

/// The signed document whose signature failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Document {
    IdToken,
    Userinfo,
}

/// Why an identification through FranceConnect failed. `Display` gives the technical
/// detail for the logs; [`FcError::title`] and [`FcError::message`] what the aidant reads.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FcError {
    /// The usager cancelled on FranceConnect (callback `error=access_denied`).
    #[error("callback: access_denied (cancelled by the usager)")]
    Cancelled,
    /// The callback carried another error.
    #[error("callback: {error}{}", description.as_deref().map(|d| format!(" ({d})")).unwrap_or_default())]
    Refused { error: String, description: Option<String> },
    /// The token endpoint refused the code or answered something unreadable.
    #[error("token endpoint: {0}")]
    Token(String),
    /// A signature did not verify with FranceConnect's keys.
    #[error("{document:?} signature: {detail}")]
    BadSignature { document: Document, detail: String },
    /// The id_token's nonce is not the one of the request made from this session.
    #[error("id_token: nonce differs from the request's")]
    WrongNonce,
    /// The id_token's `acr` is missing or not one of eidas1..3.
    #[error("id_token: {0}")]
    AcrTooLow(String),
    /// Another id_token check failed (missing, iss, aud, exp, iat, at_hash).
    #[error("id_token: {0}")]
    BadIdToken(String),
    /// The userinfo response is not a valid signed JWT for this client and usager.
    #[error("userinfo: {0}")]
    BadUserinfo(String),
    /// The identity received does not satisfy the identité pivot's rules.
    #[error("identity: {0}")]
    InvalidIdentity(String),
    /// FranceConnect could not be reached or answered with a server error.
    #[error("FranceConnect unreachable: {0}")]
    Unreachable(String),
}

const RETRY_OR_SUPPORT: &str =
    "Relancez l'identification. Si le problème se reproduit, contactez le support d'Aidants Connect.";

impl FcError {
    /// A short heading for the aidant.
    pub fn title(&self) -> &'static str {
        match self {
            FcError::Cancelled => "Identification annulée",
            FcError::AcrTooLow(_) => "Niveau de sécurité insuffisant",
            FcError::InvalidIdentity(_) => "Identité incomplète",
            FcError::Unreachable(_) => "FranceConnect ne répond pas",
            _ => "L'identification a échoué",
        }
    }

    /// What happened and what to do, in plain French, for the aidant.
    pub fn message(&self) -> String {
        match self {
            FcError::Cancelled => "L'usager a annulé l'identification sur FranceConnect. Aucune information n'a été transmise. \
                Vous pouvez relancer l'identification quand l'usager est prêt."
                .into(),
            FcError::Refused { .. } => format!("FranceConnect a refusé la demande d'identification. {RETRY_OR_SUPPORT}"),
            FcError::Token(_) => format!("FranceConnect n'a pas confirmé l'identification de l'usager. {RETRY_OR_SUPPORT}"),
            FcError::BadSignature { .. } | FcError::BadIdToken(_) | FcError::BadUserinfo(_) => format!(
                "La réponse de FranceConnect n'a pas pu être vérifiée : par sécurité, elle n'a pas été utilisée. {RETRY_OR_SUPPORT}"
            ),
            FcError::WrongNonce => "La réponse de FranceConnect ne correspond pas à la demande faite depuis ce navigateur : \
                par sécurité, elle n'a pas été utilisée. Relancez l'identification depuis ce navigateur, dans un seul onglet."
                .into(),
            FcError::AcrTooLow(_) => "Le moyen de connexion choisi par l'usager sur FranceConnect n'offre pas le niveau de \
                sécurité exigé pour un mandat. Relancez l'identification et proposez à l'usager un autre compte \
                (impots.gouv.fr, ameli.fr, l'Identité Numérique La Poste…)."
                .into(),
            FcError::InvalidIdentity(_) => "L'identité transmise par FranceConnect est incomplète ou mal formée : le mandat \
                ne peut pas être établi avec ce compte. Relancez l'identification avec un autre compte de l'usager ; si le \
                problème se reproduit, contactez le support d'Aidants Connect."
                .into(),
            FcError::Unreachable(_) => "FranceConnect ne répond pas pour le moment. Patientez quelques minutes, puis relancez \
                l'identification."
                .into(),
        }
    }
}

/// Keeps at most `max` characters, without control characters: for values received on
/// the callback, which anyone can forge.
fn printable(s: &str, max: usize) -> String {
    s.chars().filter(|c| !c.is_control()).take(max).collect()
}

/// The callback's `error` and `error_description` as an [`FcError`].
pub fn callback_error(error: &str, error_description: Option<&str>) -> FcError {
    if error == "access_denied" {
        return FcError::Cancelled;
    }
    FcError::Refused {
        error: printable(error, 64),
        description: error_description.map(|d| printable(d, 300)).filter(|d| !d.is_empty()),
    }
}

/// Keeps `pending` in the session, replacing an earlier request.
pub fn store_pending(session: &Session, pending: &Pending) -> Result<(), actix_session::SessionInsertError> {
    session.insert(SESSION_KEY, pending)
}

/// Takes the session's pending request (it is gone afterwards, whatever the outcome) and
/// returns it when its state is `state`.
pub fn take_pending(session: &Session, state: &str) -> Option<Pending> {
    let stored = session.remove_as::<Pending>(SESSION_KEY).and_then(Result::ok);
    matching(stored, state)
}

/// The pending request when it was made with `state`.
pub fn matching(stored: Option<Pending>, state: &str) -> Option<Pending> {
    stored.filter(|p| !state.is_empty() && constant_time_eq(p.state.as_bytes(), state.as_bytes()))
}

/// 32 random bytes, base64url without padding (43 characters).
fn random_token() -> String {
    BASE64URL_NOPAD.encode(&random_bytes::<32>())
}

/// One error and its causes, on one line.
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

type Rp = CoreClient<EndpointSet, EndpointNotSet, EndpointNotSet, EndpointNotSet, EndpointMaybeSet, EndpointMaybeSet>;

/// Discovery and JWKS as fetched.
struct Provider {
    metadata: ProviderMetadataWithLogout,
    fetched: Instant,
}

/// The relying-party client. One per process is enough: the HTTP client keeps no idle
/// connection, so workers (each on its own runtime) can share it.
pub struct FcClient {
    settings: FcSettings,
    issuer: IssuerUrl,
    redirect_uri: RedirectUrl,
    post_logout: Url,
    http: reqwest::Client,
    cache: RwLock<Option<Arc<Provider>>>,
}

impl std::fmt::Debug for FcClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FcClient").field("settings", &self.settings).finish_non_exhaustive()
    }
}

/// What the id_token verification found.
struct IdTokenFacts {
    sub: String,
}

impl FcClient {
    /// A client; nothing is fetched until the first request.
    pub fn new(settings: FcSettings) -> Result<FcClient, InvalidSettings> {
        let issuer = IssuerUrl::new(settings.issuer.trim_end_matches('/').to_owned())
            .map_err(|e| InvalidSettings(format!("issuer: {e}")))?;
        let redirect_uri = RedirectUrl::new(settings.redirect_uri.clone()).map_err(|e| InvalidSettings(format!("redirect_uri: {e}")))?;
        let post_logout = Url::parse(&settings.post_logout_redirect_uri).map_err(|e| InvalidSettings(format!("post_logout_redirect_uri: {e}")))?;
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(HTTP_TIMEOUT)
            .pool_max_idle_per_host(0)
            .build()
            .map_err(|e| InvalidSettings(format!("HTTP client: {e}")))?;
        Ok(FcClient { settings, issuer, redirect_uri, post_logout, http, cache: RwLock::new(None) })
    }

    pub fn settings(&self) -> &FcSettings {
        &self.settings
    }

    fn cached(&self) -> Option<Arc<Provider>> {
        self.cache.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn keep(&self, provider: Arc<Provider>) {
        *self.cache.write().unwrap_or_else(|e| e.into_inner()) = Some(provider);
    }

    /// Discovery and JWKS, from the cache while fresh.
    async fn provider(&self) -> Result<Arc<Provider>, FcError> {
        if let Some(p) = self.cached().filter(|p| p.fetched.elapsed() < CACHE_TTL) {
            return Ok(p);
        }
        let metadata = ProviderMetadataWithLogout::discover_async(self.issuer.clone(), &self.http)
            .await
            .map_err(|e| FcError::Unreachable(format!("discovery: {}", chain(&e))))?;
        let p = Arc::new(Provider { metadata, fetched: Instant::now() });
        self.keep(p.clone());
        Ok(p)
    }

    /// The JWKS fetched again (a key id was unknown), discovery kept.
    async fn refetch_jwks(&self, p: &Provider) -> Result<Arc<Provider>, FcError> {
        tracing::info!(issuer = %self.settings.issuer, "FranceConnect: unknown key id, fetching the JWKS again");
        let jwks = CoreJsonWebKeySet::fetch_async(p.metadata.jwks_uri(), &self.http)
            .await
            .map_err(|e| FcError::Unreachable(format!("jwks: {}", chain(&e))))?;
        let fresh = Arc::new(Provider { metadata: p.metadata.clone().set_jwks(jwks), fetched: p.fetched });
        self.keep(fresh.clone());
        Ok(fresh)
    }

    fn client(&self, p: &Provider) -> Rp {
        CoreClient::from_provider_metadata(
            p.metadata.clone(),
            ClientId::new(self.settings.client_id.clone()),
            Some(ClientSecret::new(self.settings.client_secret.clone())),
        )
        .set_redirect_uri(self.redirect_uri.clone())
        .set_auth_type(AuthType::RequestBody)
    }

    /// The authorization request to send the browser to, and what to keep in the session.
    pub async fn begin(&self) -> Result<(Url, Pending), FcError> {
        let p = self.provider().await?;
        let pending = Pending { state: random_token(), nonce: random_token() };
        let (state, nonce) = (pending.state.clone(), pending.nonce.clone());
        let client = self.client(&p);
        let mut request =
            client.authorize_url(CoreAuthenticationFlow::AuthorizationCode, move || CsrfToken::new(state), move || Nonce::new(nonce));
        for scope in SCOPE.split(' ').filter(|s| *s != "openid") {
            request = request.add_scope(Scope::new(scope.to_owned()));
        }
        let (url, _, _) = request.add_auth_context_value(AuthenticationContextClass::new(ACR_REQUESTED.to_owned())).url();
        Ok((url, pending))
    }

    /// Exchanges the callback's `code`, verifies the id_token against the session's
    /// `nonce`, then fetches and verifies the signed userinfo.
    pub async fn finish(&self, code: &str, nonce: &str) -> Result<FcIdentity, FcError> {
        let mut p = self.provider().await?;
        let token: CoreTokenResponse = self
            .client(&p)
            .exchange_code(AuthorizationCode::new(code.to_owned()))
            .map_err(|e| FcError::Unreachable(format!("discovery without token_endpoint: {e}")))?
            .request_async(&self.http)
            .await
            .map_err(token_error)?;
        let id_token = token.id_token().ok_or_else(|| FcError::BadIdToken("absent from the token response".into()))?;
        let nonce = Nonce::new(nonce.to_owned());
        let facts = match self.verify_id_token(&p, id_token, &nonce, token.access_token()) {
            Err(ClaimsVerificationError::SignatureVerification(SignatureVerificationError::NoMatchingKey)) => {
                p = self.refetch_jwks(&p).await?;
                self.verify_id_token(&p, id_token, &nonce, token.access_token())
            }
            other => other,
        }
        .map_err(id_token_error)?;
        let identity = self.userinfo(&mut p, token.access_token(), &facts.sub).await?;
        Ok(FcIdentity { fc_sub: facts.sub, identity, id_token: id_token.to_string() })
    }

    fn verify_id_token(
        &self,
        p: &Provider,
        id_token: &CoreIdToken,
        nonce: &Nonce,
        access_token: &AccessToken,
    ) -> Result<IdTokenFacts, ClaimsVerificationError> {
        let client = self.client(p);
        let verifier = client
            .id_token_verifier()
            .set_allowed_algs([CoreJwsSigningAlgorithm::EcdsaP256Sha256, CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha256])
            .set_auth_context_verifier_fn(|acr: Option<&AuthenticationContextClass>| match acr.map(|a| a.as_str()) {
                Some(a) if ACR_ACCEPTED.contains(&a) => Ok(()),
                Some(a) => Err(format!("acr {} is below eidas1", printable(a, 32))),
                None => Err("acr missing".to_owned()),
            })
            .set_issue_time_verifier_fn(|iat| {
                let now = chrono::Utc::now();
                if iat > now + IAT_SKEW {
                    Err(format!("iat {iat} is in the future"))
                } else if iat < now - IAT_MAX_AGE {
                    Err(format!("iat {iat} is too old"))
                } else {
                    Ok(())
                }
            });
        let claims = id_token.claims(&verifier, nonce)?;
        if let Some(expected) = claims.access_token_hash() {
            let alg = id_token.signing_alg().map_err(ClaimsVerificationError::SignatureVerification)?;
            let key = id_token.signing_key(&verifier).map_err(ClaimsVerificationError::SignatureVerification)?;
            let actual = AccessTokenHash::from_token(access_token, alg, key)
                .map_err(|e| ClaimsVerificationError::Other(format!("at_hash: {e}")))?;
            if actual != *expected {
                return Err(ClaimsVerificationError::Other("at_hash does not match the access token".into()));
            }
        }
        Ok(IdTokenFacts { sub: claims.subject().to_string() })
    }

    /// GET userinfo with the access token; the JWT verified with the JWKS key of its kid
    /// (the JWKS fetched again once if the kid is unknown), then its claims.
    async fn userinfo(&self, p: &mut Arc<Provider>, access_token: &AccessToken, sub: &str) -> Result<IdentitePivot, FcError> {
        let endpoint = p.metadata.userinfo_endpoint().ok_or_else(|| FcError::BadUserinfo("no userinfo_endpoint in discovery".into()))?;
        let resp = self
            .http
            .get(endpoint.url().clone())
            .bearer_auth(access_token.secret())
            .header("accept", "application/jwt")
            .send()
            .await
            .map_err(|e| FcError::Unreachable(format!("userinfo: {}", chain(&e))))?;
        let status = resp.status();
        if status.is_server_error() {
            return Err(FcError::Unreachable(format!("userinfo: status {status}")));
        }
        if status != reqwest::StatusCode::OK {
            let challenge = resp.headers().get("www-authenticate").and_then(|v| v.to_str().ok()).map(|v| printable(v, 200));
            return Err(FcError::BadUserinfo(format!("status {status}, WWW-Authenticate {challenge:?}")));
        }
        let content_type = resp.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
        if content_type.split(';').next().map(str::trim) != Some("application/jwt") {
            return Err(FcError::BadUserinfo(format!("content type {:?}, a signed JWT (application/jwt) is required", printable(&content_type, 64))));
        }
        let body = resp.text().await.map_err(|e| FcError::Unreachable(format!("userinfo body: {}", chain(&e))))?;
        let jws = Jws::parse(body.trim())?;
        let key = match jws.key(&p.metadata) {
            Some(k) => k.clone(),
            None => {
                *p = self.refetch_jwks(p).await?;
                jws.key(&p.metadata).cloned().ok_or_else(|| FcError::BadSignature {
                    document: Document::Userinfo,
                    detail: "no key of the JWKS has the kid of the userinfo JWT".into(),
                })?
            }
        };
        key.verify_signature(&jws.alg, jws.signing_input.as_bytes(), &jws.signature)
            .map_err(|e| FcError::BadSignature { document: Document::Userinfo, detail: e.to_string() })?;
        let claims: UserinfoClaims = serde_json::from_slice(&jws.payload)
            .map_err(|e| FcError::BadUserinfo(format!("claims are not the expected JSON object ({:?} at column {})", e.classify(), e.column())))?;
        if claims.iss.as_deref() != Some(p.metadata.issuer().as_str()) {
            return Err(FcError::BadUserinfo("iss is not FranceConnect's issuer".into()));
        }
        let aud_ok = match &claims.aud {
            Some(serde_json::Value::String(a)) => *a == self.settings.client_id,
            Some(serde_json::Value::Array(all)) => all.iter().any(|a| a.as_str() == Some(self.settings.client_id.as_str())),
            _ => false,
        };
        if !aud_ok {
            return Err(FcError::BadUserinfo("aud does not name this client".into()));
        }
        if !claims.sub.as_deref().is_some_and(|s| constant_time_eq(s.as_bytes(), sub.as_bytes())) {
            return Err(FcError::BadUserinfo("sub differs from the id_token's".into()));
        }
        if claims.exp.is_some_and(|exp| exp <= chrono::Utc::now().timestamp()) {
            return Err(FcError::BadUserinfo("expired (exp)".into()));
        }
        let identity = IdentitePivot {
            given_name: claims.given_name.unwrap_or_default(),
            family_name: claims.family_name.unwrap_or_default(),
            preferred_username: claims.preferred_username.filter(|u| !u.trim().is_empty()),
            birthdate: claims.birthdate.unwrap_or_default(),
            gender: claims.gender.unwrap_or_default(),
            birthplace: claims.birthplace.unwrap_or_default(),
            birthcountry: claims.birthcountry.unwrap_or_default(),
            email: claims.email.unwrap_or_default(),
        };
        identity.validate().map_err(|e| FcError::InvalidIdentity(e.0))
    }

    /// FranceConnect's `session/end` for this id_token: `id_token_hint`, `state` and
    /// `post_logout_redirect_uri`. Uses the discovery already fetched, even if stale.
    pub async fn logout_url(&self, id_token: &str, state: &str) -> Result<Url, FcError> {
        let p = match self.cached() {
            Some(p) => p,
            None => self.provider().await?,
        };
        let endpoint = p
            .metadata
            .additional_metadata()
            .end_session_endpoint
            .clone()
            .ok_or_else(|| FcError::Unreachable("no end_session_endpoint in discovery".into()))?;
        let mut url = endpoint.url().clone();
        url.query_pairs_mut()
            .append_pair("id_token_hint", id_token)
            .append_pair("state", state)
            .append_pair("post_logout_redirect_uri", self.post_logout.as_str());
        Ok(url)
    }
}

fn token_error<RE: std::error::Error + 'static>(
    e: RequestTokenError<RE, openidconnect::StandardErrorResponse<openidconnect::core::CoreErrorResponseType>>,
) -> FcError {
    match e {
        RequestTokenError::ServerResponse(r) => FcError::Token(match r.error_description() {
            Some(d) => format!("{} ({})", r.error().as_ref(), printable(d, 300)),
            None => r.error().as_ref().to_owned(),
        }),
        RequestTokenError::Request(e) => FcError::Unreachable(format!("token: {}", chain(&e))),
        RequestTokenError::Parse(e, _) => FcError::Token(format!("unreadable response (at {})", e.path())),
        RequestTokenError::Other(e) => FcError::Token(printable(&e, 300)),
    }
}

fn id_token_error(e: ClaimsVerificationError) -> FcError {
    match e {
        ClaimsVerificationError::SignatureVerification(SignatureVerificationError::NoMatchingKey) => FcError::BadSignature {
            document: Document::IdToken,
            detail: "no key of the JWKS has the kid of the id_token".into(),
        },
        ClaimsVerificationError::SignatureVerification(e) => FcError::BadSignature { document: Document::IdToken, detail: e.to_string() },
        ClaimsVerificationError::InvalidNonce(_) => FcError::WrongNonce,
        ClaimsVerificationError::InvalidAuthContext(detail) => FcError::AcrTooLow(detail),
        other => FcError::BadIdToken(other.to_string()),
    }
}

/// The userinfo claims read: the JWT's, then the identité pivot's.
#[derive(Deserialize)]
struct UserinfoClaims {
    iss: Option<String>,
    aud: Option<serde_json::Value>,
    sub: Option<String>,
    exp: Option<i64>,
    given_name: Option<String>,
    family_name: Option<String>,
    preferred_username: Option<String>,
    birthdate: Option<String>,
    gender: Option<String>,
    birthplace: Option<String>,
    birthcountry: Option<String>,
    email: Option<String>,
}

#[derive(Deserialize)]
struct JoseHeader {
    alg: String,
    kid: Option<String>,
}

/// A compact JWS, split and decoded; nothing verified yet.
struct Jws {
    alg: CoreJwsSigningAlgorithm,
    kid: Option<String>,
    signing_input: String,
    payload: Vec<u8>,
    signature: Vec<u8>,
}

impl Jws {
    fn parse(compact: &str) -> Result<Jws, FcError> {
        let bad = |what: &str| FcError::BadUserinfo(format!("not a compact JWS: {what}"));
        let parts: Vec<&str> = compact.split('.').collect();
        let [header, payload, signature] = parts.as_slice() else { return Err(bad("three parts expected")) };
        let decode = |part: &str| BASE64URL_NOPAD.decode(part.as_bytes());
        let header: JoseHeader = serde_json::from_slice(&decode(header).map_err(|_| bad("header encoding"))?).map_err(|_| bad("header"))?;
        let alg = match header.alg.as_str() {
            "ES256" => CoreJwsSigningAlgorithm::EcdsaP256Sha256,
            "RS256" => CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha256,
            other => {
                return Err(FcError::BadSignature {
                    document: Document::Userinfo,
                    detail: format!("algorithm {} is not ES256 or RS256", printable(other, 16)),
                })
            }
        };
        Ok(Jws {
            alg,
            kid: header.kid,
            signing_input: format!("{}.{}", parts[0], parts[1]),
            payload: decode(payload).map_err(|_| bad("payload encoding"))?,
            signature: decode(signature).map_err(|_| bad("signature encoding"))?,
        })
    }

    /// The key of the JWKS for this JWS: the one of its kid, or the only key when it has none.
    fn key<'a>(&self, metadata: &'a ProviderMetadataWithLogout) -> Option<&'a CoreJsonWebKey> {
        let keys = metadata.jwks().keys();
        match &self.kid {
            Some(kid) => keys.iter().find(|k| k.key_id().map(|id| id.as_str()) == Some(kid.as_str())),
            None if keys.len() == 1 => keys.first(),
            None => None,
        }
    }
}

#[cfg(test)]
#[path = "franceconnect_tests.rs"]
mod tests;
