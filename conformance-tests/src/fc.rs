//! FranceConnect's core as the broker's OpenID Connect client, built on the
//! `openidconnect` crate: discovery, the authorization request the core sends, the code
//! exchange with `client_secret_post`, id_token verification with the JWKS (or the
//! client secret for HS256), userinfo as JSON or as a signed JWT, and logout.

use crate::idp::{Idp, Registration, CALLBACK};
use data_encoding::BASE64URL_NOPAD;
use openidconnect::core::{
    CoreAuthDisplay, CoreAuthPrompt, CoreAuthenticationFlow, CoreErrorResponseType, CoreGenderClaim, CoreJsonWebKey, CoreJweContentEncryptionAlgorithm,
    CoreJwsSigningAlgorithm, CoreRevocableToken, CoreRevocationErrorResponse, CoreTokenIntrospectionResponse, CoreTokenType,
};
use openidconnect::{
    AccessToken, AdditionalClaims, AuthType, AuthenticationContextClass, AuthorizationCode, Client, ClientId, ClientSecret, CsrfToken, EmptyExtraTokenFields,
    EndpointMaybeSet, EndpointNotSet, EndpointSet, HttpRequest, HttpResponse, IdToken, IdTokenClaims, IdTokenFields, IssuerUrl, JsonWebKey, LogoutRequest, Nonce,
    PkceCodeChallenge, PkceCodeVerifier, PostLogoutRedirectUrl, ProviderMetadataWithLogout, RedirectUrl, RequestTokenError, Scope, StandardErrorResponse,
    StandardTokenResponse, SubjectIdentifier, SyncHttpClient, UserInfoClaims, UserInfoResponseType,
};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::cell::RefCell;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use url::Url;

/// The claims FranceConnect reads beyond the standard ones: `rep_scope` in the id_token,
/// `birthplace` and `birthcountry` at userinfo.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
pub struct FcClaims {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rep_scope: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub birthplace: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub birthcountry: Option<String>,
    /// The acting aidant (RFC 8693 §4.1), for a client registered with `--act-claim`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub act: Option<Value>,
}

impl AdditionalClaims for FcClaims {}

pub type FcIdTokenFields = IdTokenFields<FcClaims, EmptyExtraTokenFields, CoreGenderClaim, CoreJweContentEncryptionAlgorithm, CoreJwsSigningAlgorithm>;
pub type FcTokenResponse = StandardTokenResponse<FcIdTokenFields, CoreTokenType>;
pub type FcIdTokenClaims = IdTokenClaims<FcClaims, CoreGenderClaim>;
pub type FcIdToken = IdToken<FcClaims, CoreGenderClaim, CoreJweContentEncryptionAlgorithm, CoreJwsSigningAlgorithm>;
pub type FcUserInfoClaims = UserInfoClaims<FcClaims, CoreGenderClaim>;
pub type FcClient = Client<
    FcClaims,
    CoreAuthDisplay,
    CoreGenderClaim,
    CoreJweContentEncryptionAlgorithm,
    CoreJsonWebKey,
    CoreAuthPrompt,
    StandardErrorResponse<CoreErrorResponseType>,
    FcTokenResponse,
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

/// An HTTP answer as received.
#[derive(Clone, Debug)]
pub struct Raw {
    pub status: u16,
    pub headers: openidconnect::http::HeaderMap,
    pub body: Vec<u8>,
}

impl Raw {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }
}

/// The core's HTTP client: URLs of the issuer go to one instance's loopback address;
/// the last answer is kept for inspection.
pub struct Http {
    issuer: String,
    base: String,
    agent: ureq::Agent,
    pub last: RefCell<Option<Raw>>,
}

impl Http {
    pub fn new(issuer: &str, base: &str) -> Self {
        let agent = ureq::Agent::config_builder().http_status_as_error(false).max_redirects(0).timeout_global(Some(Duration::from_secs(15))).build().into();
        Http { issuer: issuer.to_owned(), base: base.to_owned(), agent, last: RefCell::new(None) }
    }

    pub fn last(&self) -> Raw {
        self.last.borrow().clone().expect("no HTTP answer yet")
    }
}

impl SyncHttpClient for Http {
    type Error = ureq::Error;

    fn call(&self, request: HttpRequest) -> Result<HttpResponse, Self::Error> {
        let (mut parts, body) = request.into_parts();
        let uri = parts.uri.to_string();
        let routed = match uri.strip_prefix(&self.issuer) {
            Some(rest) => format!("{}{rest}", self.base),
            None => uri,
        };
        parts.uri = routed.parse().map_err(|e: openidconnect::http::uri::InvalidUri| ureq::Error::BadUri(e.to_string()))?;
        let res = self.agent.run(openidconnect::http::Request::from_parts(parts, body))?;
        let (parts, mut body) = res.into_parts();
        let bytes = body.read_to_vec()?;
        *self.last.borrow_mut() = Some(Raw { status: parts.status.as_u16(), headers: parts.headers.clone(), body: bytes.clone() });
        Ok(HttpResponse::from_parts(parts, bytes))
    }
}

/// One authorization request, as the core sends it, and what it keeps to check the answer.
pub struct AuthRequest {
    pub url: Url,
    pub state: String,
    pub nonce: Nonce,
    pub pkce_verifier: Option<PkceCodeVerifier>,
}

impl AuthRequest {
    /// The same request with parameters replaced (`Some`) or removed (`None`).
    pub fn with(&self, changes: &[(&str, Option<&str>)]) -> Url {
        let mut pairs: Vec<(String, String)> = self.url.query_pairs().into_owned().collect();
        for (name, value) in changes {
            match value {
                Some(v) => match pairs.iter_mut().find(|(k, _)| k == name) {
                    Some(p) => p.1 = (*v).to_owned(),
                    None => pairs.push(((*name).to_owned(), (*v).to_owned())),
                },
                None => pairs.retain(|(k, _)| k != name),
            }
        }
        let mut u = self.url.clone();
        u.query_pairs_mut().clear().extend_pairs(pairs);
        u
    }
}

/// A refusal at `/token`: what the library made of it and the raw answer.
#[derive(Debug)]
pub struct TokenRefusal {
    /// The `error` the library parsed (RFC 6749 §5.2), if it parsed one.
    pub error: Option<String>,
    pub raw: Raw,
}

type TokenError = RequestTokenError<ureq::Error, StandardErrorResponse<CoreErrorResponseType>>;

fn refusal(e: TokenError, http: &Http) -> TokenRefusal {
    let error = match &e {
        RequestTokenError::ServerResponse(r) => Some(r.error().as_ref().to_owned()),
        _ => None,
    };
    TokenRefusal { error, raw: http.last() }
}

/// The verified userinfo answer.
pub struct UserInfo {
    pub claims: FcUserInfoClaims,
    pub raw: Raw,
    /// For a signed answer: the JOSE header and the claims as sent.
    pub jwt: Option<(Value, Value)>,
}

/// FranceConnect's core, registered with the broker.
pub struct Core {
    pub registration: Registration,
    pub metadata: ProviderMetadataWithLogout,
    pub client: FcClient,
    pub issuer: String,
    https: Vec<Http>,
    offset: Arc<AtomicI64>,
}

pub fn random_hex64() -> String {
    hex::encode(rand::random::<[u8; 32]>())
}

/// `n` random letters and digits.
pub fn random_alnum(n: usize) -> String {
    use rand::Rng;
    rand::thread_rng().sample_iter(&rand::distributions::Alphanumeric).take(n).map(char::from).collect()
}

/// What FranceConnect's core checks on the broker's answers, beyond the id_token's
/// signature and standard claims, mirrored from its public sources:
/// - [`token_result`]: the oidc-client library's `TokenResultDto`
///   (`back/libs/oidc-client`, `getTokenFromProvider`): `acr` a non-empty alphanumeric
///   string, `amr` (defaulting to `[]`) an array of strings, `rep_scope` absent or an
///   array of strings;
/// - [`rep_scope_matches`]: core-fcp's Aidants Connect verify handler
///   (`core-fcp-aidants-connect-verify.handler.ts`): when the e-service's list is not
///   empty, the id_token's `rep_scope` shares at least one value with it (strings
///   compared as they are), else the login fails (Y600020);
/// - [`identity`]: core-fcp's `OidcIdentityDto` and the oidc-client `MinIdentityDto`.
pub mod core_checks {
    use serde_json::Value;

    fn strings(v: &Value) -> Option<Vec<&str>> {
        v.as_array()?.iter().map(Value::as_str).collect()
    }

    pub fn token_result(id_token: &Value) -> Result<(), String> {
        let acr = id_token["acr"].as_str().ok_or("acr is not a string")?;
        if acr.is_empty() || !acr.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return Err(format!("acr is not alphanumeric: {acr:?}"));
        }
        if let Some(amr) = id_token.get("amr") {
            strings(amr).ok_or_else(|| format!("amr is not an array of strings: {amr}"))?;
        }
        if let Some(rep) = id_token.get("rep_scope") {
            strings(rep).ok_or_else(|| format!("rep_scope is not an array of strings: {rep}"))?;
        }
        Ok(())
    }

    pub fn rep_scope_matches(id_token: &Value, service_list: &[&str]) -> Result<(), String> {
        if service_list.is_empty() {
            return Ok(());
        }
        let got = id_token.get("rep_scope").and_then(strings).ok_or("rep_scope missing while the e-service has a list")?;
        if got.iter().any(|v| service_list.contains(v)) {
            Ok(())
        } else {
            Err(format!("rep_scope {got:?} shares nothing with {service_list:?} (Y600020)"))
        }
    }

    fn safe(name: &str, v: &Value, min: usize, max: usize) -> Result<(), String> {
        let s = v.as_str().ok_or_else(|| format!("{name} is not a string"))?;
        let n = s.chars().count();
        if n < min || n > max || s.chars().any(char::is_control) {
            return Err(format!("{name} refused: {s:?}"));
        }
        Ok(())
    }

    fn cog(v: &str) -> bool {
        let b = v.as_bytes();
        b.len() == 5
            && ((b[0] == b'2' && (b[1] == b'A' || b[1] == b'B')) || (b[0].is_ascii_digit() && b[1].is_ascii_digit()))
            && b[2..].iter().all(u8::is_ascii_digit)
    }

    fn email(v: &str) -> bool {
        match v.split_once('@') {
            Some((local, domain)) => {
                !local.is_empty() && !domain.starts_with('.') && domain.contains('.') && !v.contains(char::is_whitespace) && !domain.contains('@')
            }
            None => false,
        }
    }

    pub fn identity(u: &Value) -> Result<(), String> {
        let sub = u["sub"].as_str().ok_or("sub is not a string")?;
        if sub.is_empty() || !sub.is_ascii() {
            return Err(format!("sub refused: {sub:?}"));
        }
        safe("given_name", &u["given_name"], 1, 256)?;
        safe("family_name", &u["family_name"], 1, 256)?;
        safe("birthdate", &u["birthdate"], 0, usize::MAX)?;
        match u["gender"].as_str() {
            Some("female" | "male") => {}
            other => return Err(format!("gender refused: {other:?}")),
        }
        let country = u["birthcountry"].as_str().ok_or("birthcountry missing")?;
        if !cog(country) {
            return Err(format!("birthcountry is not a COG code: {country:?}"));
        }
        if country == "99100" && !u["birthplace"].as_str().is_some_and(cog) {
            return Err(format!("birthplace is not a COG code: {}", u["birthplace"]));
        }
        if let Some(p) = u.get("preferred_username") {
            safe("preferred_username", p, 0, usize::MAX)?;
        }
        match u["email"].as_str() {
            Some(e) if email(e) => Ok(()),
            other => Err(format!("email refused (required): {other:?}")),
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;
        use serde_json::json;

        #[test]
        fn the_checks_refuse_what_the_core_refuses() {
            let ok = json!({"acr": "eidas1", "amr": ["pwd", "otp", "mfa"], "rep_scope": ["Famille-Scolarité"]});
            assert_eq!(token_result(&ok), Ok(()));
            assert!(token_result(&json!({"acr": "eidas-1"})).is_err());
            assert!(token_result(&json!({"acr": "eidas1", "amr": "mfa"})).is_err());
            assert!(token_result(&json!({"acr": "eidas1", "rep_scope": "argent"})).is_err());
            assert_eq!(rep_scope_matches(&ok, &[]), Ok(()));
            assert_eq!(rep_scope_matches(&json!({}), &[]), Ok(()));
            assert_eq!(rep_scope_matches(&ok, &["Famille-Scolarité", "Travail-Formation"]), Ok(()));
            assert!(rep_scope_matches(&ok, &["famille"]).is_err(), "strings compared as they are");
            assert!(rep_scope_matches(&json!({}), &["famille"]).is_err());

            let id = json!({"sub": "abc", "given_name": "Jeanne Marie", "family_name": "Martin", "birthdate": "1952-03-14",
                            "gender": "female", "birthplace": "75107", "birthcountry": "99100", "email": "j.martin@exemple.fr"});
            assert_eq!(identity(&id), Ok(()));
            let with = |k: &str, v: Value| {
                let mut x = id.clone();
                x[k] = v;
                identity(&x)
            };
            assert!(with("email", Value::Null).is_err(), "e-mail required");
            assert!(with("email", json!("pas-une-adresse")).is_err());
            assert!(with("gender", json!("F")).is_err());
            assert!(with("birthplace", json!("")).is_err(), "born in France: a commune code");
            assert!(with("birthcountry", json!("France")).is_err());
            assert!(with("given_name", json!("")).is_err());
            assert!(with("sub", json!("é")).is_err());
            let mut abroad = id.clone();
            abroad["birthcountry"] = json!("99134");
            abroad["birthplace"] = json!("");
            assert_eq!(identity(&abroad), Ok(()));
        }
    }
}

impl Core {
    /// Discovery (and the JWKS) fetched now from instance 0.
    pub fn discover(idp: &Idp, registration: &Registration) -> Core {
        let https: Vec<Http> = idp.brokers.iter().map(|b| Http::new(idp.issuer(), &b.base)).collect();
        let issuer = IssuerUrl::new(idp.issuer().to_owned()).unwrap();
        let metadata = ProviderMetadataWithLogout::discover(&issuer, &https[0]).unwrap_or_else(|e| panic!("discovery failed: {e:?}"));
        let client = FcClient::from_provider_metadata(
            metadata.clone(),
            ClientId::new(registration.client_id.clone()),
            Some(ClientSecret::new(registration.secret.clone())),
        )
        .set_redirect_uri(RedirectUrl::new(CALLBACK.to_owned()).unwrap())
        .set_auth_type(AuthType::RequestBody);
        Core { registration: registration.clone(), metadata, client, issuer: idp.issuer().to_owned(), https, offset: idp.offset() }
    }

    /// The HTTP client that talks to instance `i`.
    pub fn http(&self, i: usize) -> &Http {
        &self.https[i]
    }

    pub fn alg(&self) -> CoreJwsSigningAlgorithm {
        serde_json::from_value(Value::String(self.registration.alg.clone())).unwrap()
    }

    /// The request the core sends for Aidants Connect: scope openid profile email birth,
    /// acr_values=eidas1, prompt=login, state and nonce of 64 hex characters, and
    /// `claims` asking for `rep_scope` among `rep_scope` (when given).
    pub fn auth_request(&self, rep_scope: Option<&[&str]>) -> AuthRequest {
        self.auth_request_with(rep_scope, false)
    }

    /// The same, with a PKCE S256 challenge when `pkce`.
    pub fn auth_request_with(&self, rep_scope: Option<&[&str]>, pkce: bool) -> AuthRequest {
        let claims = rep_scope.map(|values| serde_json::json!({ "id_token": { "rep_scope": { "essential": true, "values": values } } }));
        self.request_of(random_hex64(), random_hex64(), claims, pkce)
    }

    /// The request exactly as FranceConnect's core builds it for Aidants Connect (its
    /// Aidants Connect authorize handler): a `state` of 32 characters and a `nonce` of 43
    /// (what its `openid-client` library generates), and `claims` with
    /// `rep_scope: {essential: true, values: <the e-service's list>}`, where that list may
    /// be empty or absent (`None`: the `values` member is left out).
    pub fn auth_request_as_core(&self, values: Option<&[&str]>) -> AuthRequest {
        let nonce = BASE64URL_NOPAD.encode(&rand::random::<[u8; 32]>());
        assert_eq!(nonce.len(), 43);
        let rep_scope = match values {
            Some(v) => serde_json::json!({ "essential": true, "values": v }),
            None => serde_json::json!({ "essential": true }),
        };
        self.request_of(random_alnum(32), nonce, Some(serde_json::json!({ "id_token": { "rep_scope": rep_scope } })), false)
    }

    /// The core's authorization request: scope openid profile email birth,
    /// acr_values=eidas1, prompt=login, this `state` and `nonce`, `claims` when given,
    /// and a PKCE S256 challenge when `pkce`.
    fn request_of(&self, state: String, nonce: String, claims: Option<Value>, pkce: bool) -> AuthRequest {
        let (s, n) = (state.clone(), nonce.clone());
        let mut req = self
            .client
            .authorize_url(CoreAuthenticationFlow::AuthorizationCode, move || CsrfToken::new(s), move || Nonce::new(n))
            .add_scope(Scope::new("profile".into()))
            .add_scope(Scope::new("email".into()))
            .add_scope(Scope::new("birth".into()))
            .add_auth_context_value(AuthenticationContextClass::new("eidas1".into()))
            .add_prompt(CoreAuthPrompt::Login);
        if let Some(claims) = claims {
            req = req.add_extra_param("claims", claims.to_string());
        }
        let mut verifier = None;
        if pkce {
            let (challenge, v) = PkceCodeChallenge::new_random_sha256();
            req = req.set_pkce_challenge(challenge);
            verifier = Some(v);
        }
        let (url, csrf, nonce) = req.url();
        assert_eq!(csrf.secret(), &state);
        AuthRequest { url, state, nonce, pkce_verifier: verifier }
    }

    /// `POST /token` at instance `on` with `client_secret_post`.
    pub fn exchange_on(&self, on: usize, code: &str, verifier: Option<&str>) -> Result<FcTokenResponse, TokenRefusal> {
        let http = self.http(on);
        let mut req = self.client.exchange_code(AuthorizationCode::new(code.to_owned())).expect("token endpoint discovered");
        if let Some(v) = verifier {
            req = req.set_pkce_verifier(PkceCodeVerifier::new(v.to_owned()));
        }
        req.request(http).map_err(|e| refusal(e, http))
    }

    pub fn exchange(&self, code: &str) -> Result<FcTokenResponse, TokenRefusal> {
        self.exchange_on(0, code, None)
    }

    /// The same exchange, sent to another redirect URI or secret than registered here.
    pub fn exchange_as(&self, code: &str, redirect_uri: &str, secret: &str) -> Result<FcTokenResponse, TokenRefusal> {
        let client = self.client.clone().set_redirect_uri(RedirectUrl::new(redirect_uri.to_owned()).unwrap()).set_client_secret(ClientSecret::new(secret.to_owned()));
        let http = self.http(0);
        client.exchange_code(AuthorizationCode::new(code.to_owned())).unwrap().request(http).map_err(|e| refusal(e, http))
    }

    /// The same exchange with `client_secret_basic`.
    pub fn exchange_basic(&self, code: &str) -> Result<FcTokenResponse, TokenRefusal> {
        let client = self.client.clone().set_auth_type(AuthType::BasicAuth);
        let http = self.http(0);
        client.exchange_code(AuthorizationCode::new(code.to_owned())).unwrap().request(http).map_err(|e| refusal(e, http))
    }

    /// The JWKS as published now.
    pub fn fetch_jwks(&self) -> Value {
        let req = openidconnect::http::Request::builder().method("GET").uri(self.metadata.jwks_uri().url().as_str()).body(Vec::new()).unwrap();
        self.http(0).call(req).expect("JWKS request");
        let raw = self.http(0).last();
        assert_eq!(raw.status, 200, "{}", raw.text());
        raw.json()
    }

    /// The brokers' current time, as the core's clock (the tests move the brokers' clock).
    fn time_fn(&self) -> impl Fn() -> chrono::DateTime<chrono::Utc> + Send + Sync + 'static {
        let offset = self.offset.clone();
        move || chrono::Utc::now() + chrono::Duration::seconds(offset.load(Ordering::SeqCst))
    }

    /// Verifies the id_token as the core does: signature with the registered algorithm
    /// only (JWKS key by `kid`, or the client secret for HS256), iss, aud, exp, nonce;
    /// then `at_hash` against the access token.
    pub fn verify_id_token(&self, tokens: &FcTokenResponse, nonce: &Nonce) -> Result<FcIdTokenClaims, String> {
        use openidconnect::{OAuth2TokenResponse, TokenResponse};
        let id_token = tokens.id_token().ok_or("no id_token")?;
        let verifier = self.client.id_token_verifier().set_allowed_algs(vec![self.alg()]).set_time_fn(self.time_fn());
        let claims = id_token.claims(&verifier, nonce).map_err(|e| format!("id_token refused: {e:?}"))?.clone();
        if let Some(expected) = claims.access_token_hash() {
            let alg = id_token.signing_alg().map_err(|e| format!("{e:?}"))?;
            let computed = if self.registration.alg == "HS256" {
                openidconnect::AccessTokenHash::from_token(tokens.access_token(), alg, &CoreJsonWebKey::new_symmetric(self.registration.secret.as_bytes().to_vec()))
            } else {
                let key = id_token.signing_key(&verifier).map_err(|e| format!("{e:?}"))?;
                openidconnect::AccessTokenHash::from_token(tokens.access_token(), alg, key)
            }
            .map_err(|e| format!("{e:?}"))?;
            if &computed != expected {
                return Err(format!("at_hash {} does not match the access token ({})", expected.as_str(), computed.as_str()));
            }
        }
        Ok(claims)
    }

    /// Verifies an id_token received as text (signature, iss, aud, exp, nonce).
    pub fn verify_id_token_text(&self, text: &str, nonce: &Nonce) -> Result<FcIdTokenClaims, String> {
        let token: FcIdToken = text.parse().map_err(|e| format!("not an id_token: {e:?}"))?;
        let verifier = self.client.id_token_verifier().set_allowed_algs(vec![self.alg()]).set_time_fn(self.time_fn());
        token.claims(&verifier, nonce).map(Clone::clone).map_err(|e| format!("id_token refused: {e:?}"))
    }

    /// Verifies a compact JWS with the registered algorithm: the JWKS key named by `kid`,
    /// or the client secret for HS256. Returns (header, claims).
    pub fn verify_jws(&self, jws: &str) -> Result<(Value, Value), String> {
        let parts: Vec<&str> = jws.split('.').collect();
        let [h, p, s] = parts.as_slice() else { return Err(format!("not a compact JWS: {jws}")) };
        let decode = |x: &str| BASE64URL_NOPAD.decode(x.as_bytes()).map_err(|e| format!("base64url: {e}"));
        let header: Value = serde_json::from_slice(&decode(h)?).map_err(|e| format!("header: {e}"))?;
        let payload: Value = serde_json::from_slice(&decode(p)?).map_err(|e| format!("payload: {e}"))?;
        let signature = decode(s)?;
        if header["alg"] != self.registration.alg.as_str() {
            return Err(format!("alg {} instead of {}", header["alg"], self.registration.alg));
        }
        let alg = self.alg();
        let input = format!("{h}.{p}");
        if self.registration.alg == "HS256" {
            CoreJsonWebKey::new_symmetric(self.registration.secret.as_bytes().to_vec()).verify_signature(&alg, input.as_bytes(), &signature).map_err(|e| format!("{e:?}"))?;
        } else {
            let kid = header["kid"].as_str().ok_or("no kid")?;
            let key = self.metadata.jwks().keys().iter().find(|k| k.key_id().map(|x| x.as_str()) == Some(kid)).ok_or_else(|| format!("kid {kid} not in the JWKS"))?;
            key.verify_signature(&alg, input.as_bytes(), &signature).map_err(|e| format!("{e:?}"))?;
        }
        Ok((header, payload))
    }

    /// `/userinfo` at instance `on` with the access token, in the registered format. A
    /// signed answer is verified (signature, iss, aud); `sub` must be `sub`.
    pub fn userinfo_on(&self, on: usize, access: &AccessToken, sub: &SubjectIdentifier) -> Result<UserInfo, Raw> {
        let http = self.http(on);
        if self.registration.userinfo == "json" {
            let claims = self.client.user_info(access.clone(), Some(sub.clone())).expect("userinfo endpoint").request(http);
            let raw = http.last();
            return match claims {
                Ok(c) => Ok(UserInfo { claims: c, raw, jwt: None }),
                Err(_) => Err(raw),
            };
        }
        if self.registration.alg == "RS256" {
            // The library verifies RS256 signed answers by itself.
            let claims = self
                .client
                .user_info(access.clone(), Some(sub.clone()))
                .expect("userinfo endpoint")
                .set_response_type(UserInfoResponseType::Jwt)
                .require_signed_response(true)
                .request(http);
            let raw = http.last();
            let claims = match claims {
                Ok(c) => c,
                Err(e) if raw.status == 200 => panic!("signed userinfo refused by the library: {e:?}: {}", raw.text()),
                Err(_) => return Err(raw),
            };
            let jwt = self.verify_jws(&raw.text()).unwrap_or_else(|e| panic!("{e}"));
            return Ok(UserInfo { claims, raw, jwt: Some(jwt) });
        }
        let req = openidconnect::http::Request::builder()
            .method("GET")
            .uri(self.metadata.userinfo_endpoint().expect("userinfo endpoint").url().as_str())
            .header("Accept", "application/jwt")
            .header("Authorization", format!("Bearer {}", access.secret()))
            .body(Vec::new())
            .unwrap();
        http.call(req).expect("userinfo request");
        let raw = http.last();
        if raw.status != 200 {
            return Err(raw);
        }
        let (header, payload) = self.verify_jws(&raw.text()).unwrap_or_else(|e| panic!("signed userinfo: {e}"));
        assert_eq!(payload["iss"], self.issuer.as_str(), "iss of the signed userinfo");
        let aud_ok = payload["aud"] == self.registration.client_id.as_str() || payload["aud"].as_array().is_some_and(|a| a.len() == 1 && a[0] == self.registration.client_id.as_str());
        assert!(aud_ok, "aud of the signed userinfo: {}", payload["aud"]);
        let claims = FcUserInfoClaims::from_json::<ureq::Error>(&serde_json::to_vec(&payload).unwrap(), Some(sub)).unwrap_or_else(|e| panic!("userinfo claims: {e:?}"));
        Ok(UserInfo { claims, raw, jwt: Some((header, payload)) })
    }

    pub fn userinfo(&self, access: &AccessToken, sub: &SubjectIdentifier) -> Result<UserInfo, Raw> {
        self.userinfo_on(0, access, sub)
    }

    /// The logout URL the core sends the browser to (RP-initiated logout).
    pub fn logout_url(&self, tokens: &FcTokenResponse, post_logout: &str, state: &str) -> Url {
        use openidconnect::TokenResponse;
        let end = self.metadata.additional_metadata().end_session_endpoint.clone().expect("end_session_endpoint discovered");
        LogoutRequest::from(end)
            .set_id_token_hint(tokens.id_token().expect("id_token"))
            .set_client_id(ClientId::new(self.registration.client_id.clone()))
            .set_post_logout_redirect_uri(PostLogoutRedirectUrl::new(post_logout.to_owned()).unwrap())
            .set_state(CsrfToken::new(state.to_owned()))
            .http_get_url()
    }
}
