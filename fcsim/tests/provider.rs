//! The FranceConnect simulator (provider side) driven by a real relying party: the
//! `openidconnect` crate over HTTP against a server on a loopback port.

use data_encoding::BASE64URL_NOPAD;
use fcsim::provider::{self, Failure, Identity, ProviderSettings, IDENTITIES};
use openidconnect::core::{
    CoreAuthenticationFlow, CoreClient, CoreErrorResponseType, CoreIdToken, CoreJsonWebKey, CoreJwsSigningAlgorithm,
    CoreTokenResponse,
};
use openidconnect::{
    reqwest, AuthType, AuthenticationContextClass, AuthorizationCode, ClaimsVerificationError, ClientId, ClientSecret, CsrfToken,
    EndpointMaybeSet, EndpointNotSet, EndpointSet, IssuerUrl, JsonWebKey, LogoutRequest, Nonce, OAuth2TokenResponse,
    PostLogoutRedirectUrl, ProviderMetadataWithLogout, RedirectUrl, RequestTokenError, Scope, TokenResponse,
};
use serde_json::Value;
use std::collections::HashMap;

const CLIENT_ID: &str = "aidants-connect-test";
const SECRET: &str = "secret-de-test";
const CLAIM_SCOPES: [&str; 8] =
    ["given_name", "family_name", "birthdate", "gender", "birthplace", "birthcountry", "email", "preferred_username"];

type Rp = CoreClient<EndpointSet, EndpointNotSet, EndpointNotSet, EndpointNotSet, EndpointMaybeSet, EndpointMaybeSet>;

/// A simulator on a loopback port, and a relying party configured from its discovery.
struct Sim {
    base: String,
    issuer: String,
    http: reqwest::Client,
    metadata: ProviderMetadataWithLogout,
    rp: Rp,
}

fn http() -> reqwest::Client {
    reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap()
}

fn settings_for(base: &str) -> ProviderSettings {
    ProviderSettings::new(
        ProviderSettings::issuer_under(base),
        CLIENT_ID,
        SECRET,
        vec![format!("{base}/rp/retour")],
        vec![format!("{base}/rp/au-revoir")],
    )
}

async fn start() -> Sim {
    let (base, settings) = provider::serve_on_loopback(settings_for, |_| {});
    let http = http();
    let metadata = ProviderMetadataWithLogout::discover_async(IssuerUrl::new(settings.issuer.clone()).unwrap(), &http).await.unwrap();
    let rp = CoreClient::from_provider_metadata(metadata.clone(), ClientId::new(CLIENT_ID.into()), Some(ClientSecret::new(SECRET.into())))
        .set_redirect_uri(RedirectUrl::new(format!("{base}/rp/retour")).unwrap())
        .set_auth_type(AuthType::RequestBody);
    Sim { base, issuer: settings.issuer, http, metadata, rp }
}

/// What the relying party keeps between the authorization request and the callback.
struct Pending {
    url: url::Url,
    state: String,
    nonce: Nonce,
}

impl Sim {
    fn authorization(&self) -> Pending {
        let mut request = self.rp.authorize_url(CoreAuthenticationFlow::AuthorizationCode, CsrfToken::new_random, Nonce::new_random);
        for s in CLAIM_SCOPES {
            request = request.add_scope(Scope::new(s.into()));
        }
        let (url, state, nonce) = request.add_auth_context_value(AuthenticationContextClass::new("eidas1".into())).url();
        Pending { url, state: state.secret().clone(), nonce }
    }

    async fn get(&self, url: &str) -> reqwest::Response {
        self.http.get(url).send().await.unwrap()
    }

    /// GET the identity page, then POST its form with these fields besides the request.
    async fn answer(&self, url: &url::Url, fields: &[(&str, &str)]) -> reqwest::Response {
        let page = self.get(url.as_str()).await;
        assert_eq!(page.status(), 200);
        let html = page.text().await.unwrap();
        let action = attribute(&html, "<form method=\"post\" action=\"");
        let demande = attribute(&html, "name=\"demande\" value=\"");
        let mut body = url::form_urlencoded::Serializer::new(String::new());
        body.append_pair("demande", &demande);
        for (k, v) in fields {
            body.append_pair(k, v);
        }
        self.http
            .post(format!("{}{action}", self.base))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body.finish())
            .send()
            .await
            .unwrap()
    }

    /// Picks an identity and a scenario; returns the code after checking the redirection.
    async fn code(&self, pending: &Pending, identity: &str, scenario: &str) -> String {
        let resp = self.answer(&pending.url, &[("identite", identity), ("scenario", scenario), ("action", "choisir")]).await;
        let q = redirected_to(&resp, &format!("{}/rp/retour", self.base));
        assert_eq!(q.get("state").map(String::as_str), Some(pending.state.as_str()));
        assert_eq!(q.len(), 2, "code and state only: {q:?}");
        q["code"].clone()
    }

    async fn exchange(&self, code: &str) -> Result<CoreTokenResponse, String> {
        self.rp.exchange_code(AuthorizationCode::new(code.into())).unwrap().request_async(&self.http).await.map_err(|e| match e {
            RequestTokenError::ServerResponse(r) => r.error().as_ref().to_owned(),
            other => panic!("token request failed without an OAuth error: {other:?}"),
        })
    }

    /// The userinfo response, checked as a JWT (`application/jwt`); its header and claims
    /// and whether its signature verifies with the key of its kid in the discovered JWKS.
    async fn user_info(&self, access_token: &str) -> (Value, Value, bool) {
        let resp = self.http.get(self.metadata.userinfo_endpoint().unwrap().as_str()).bearer_auth(access_token).send().await.unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.headers()["content-type"], "application/jwt");
        let jwt = resp.text().await.unwrap();
        let parts: Vec<&str> = jwt.split('.').collect();
        assert_eq!(parts.len(), 3);
        let header: Value = decode(parts[0]);
        let claims: Value = decode(parts[1]);
        assert_eq!(header["alg"], "ES256");
        let key = self.jwk(header["kid"].as_str().unwrap());
        let signature = BASE64URL_NOPAD.decode(parts[2].as_bytes()).unwrap();
        let message = format!("{}.{}", parts[0], parts[1]);
        let verified = key.verify_signature(&CoreJwsSigningAlgorithm::EcdsaP256Sha256, message.as_bytes(), &signature).is_ok();
        (header, claims, verified)
    }

    fn jwk(&self, kid: &str) -> &CoreJsonWebKey {
        self.metadata.jwks().keys().iter().find(|k| k.key_id().map(|id| id.as_str()) == Some(kid)).expect("kid in the JWKS")
    }
}

/// The relying party's id_token check: the library's (signature against the JWKS, iss,
/// aud, exp, iat, nonce) plus `acr` at least eidas1.
fn verify(rp: &Rp, token: &CoreIdToken, nonce: &Nonce) -> Result<(String, String), ClaimsVerificationError> {
    let verifier = rp.id_token_verifier().set_auth_context_verifier_fn(|acr: Option<&AuthenticationContextClass>| match acr.map(|a| a.as_str()) {
        Some("eidas1" | "eidas2" | "eidas3") => Ok(()),
        other => Err(format!("acr {other:?} below eidas1")),
    });
    let claims = token.claims(&verifier, nonce)?;
    Ok((claims.subject().to_string(), claims.auth_context_ref().unwrap().to_string()))
}

async fn json(resp: reqwest::Response) -> Value {
    serde_json::from_str(&resp.text().await.unwrap()).unwrap()
}

fn decode(part: &str) -> Value {
    serde_json::from_slice(&BASE64URL_NOPAD.decode(part.as_bytes()).unwrap()).unwrap()
}

fn unescape(s: &str) -> String {
    s.replace("&#x2f;", "/").replace("&#47;", "/").replace("&quot;", "\"").replace("&#x27;", "'").replace("&#39;", "'").replace("&amp;", "&")
}

/// The value of an attribute that follows `prefix` in the page.
fn attribute(html: &str, prefix: &str) -> String {
    let start = html.find(prefix).unwrap_or_else(|| panic!("{prefix} not in the page")) + prefix.len();
    let len = html[start..].find('"').unwrap();
    unescape(&html[start..start + len])
}

/// The query of a 303 to `target`.
fn redirected_to(resp: &reqwest::Response, target: &str) -> HashMap<String, String> {
    assert_eq!(resp.status(), 303, "{resp:?}");
    let location = url::Url::parse(resp.headers()["location"].to_str().unwrap()).unwrap();
    assert_eq!(&location.as_str()[..location.as_str().find('?').unwrap()], target);
    location.query_pairs().map(|(k, v)| (k.into_owned(), v.into_owned())).collect()
}

/// `url` with a parameter replaced (`Some`), removed (`None`) or added.
fn with_param(url: &url::Url, name: &str, value: Option<&str>) -> url::Url {
    let mut pairs: Vec<(String, String)> = url.query_pairs().into_owned().filter(|(k, _)| k != name).collect();
    if let Some(v) = value {
        pairs.push((name.into(), v.into()));
    }
    let mut out = url.clone();
    out.query_pairs_mut().clear().extend_pairs(pairs);
    out
}

fn identity_claims(i: &Identity) -> Vec<(&'static str, Option<&'static str>)> {
    vec![
        ("given_name", Some(i.given_name)),
        ("family_name", Some(i.family_name)),
        ("birthdate", Some(i.birthdate)),
        ("gender", Some(i.gender)),
        ("birthplace", Some(i.birthplace)),
        ("birthcountry", Some(i.birthcountry)),
        ("email", Some(i.email)),
        ("preferred_username", i.preferred_username),
    ]
}

#[actix_web::test]
async fn discovery_announces_franceconnect_v2_endpoints_and_algorithms() {
    let sim = start().await;
    let url = format!("{}/simulateur-franceconnect/api/v2/.well-known/openid-configuration", sim.base);
    let d: Value = json(sim.get(&url).await).await;
    let i = format!("{}/simulateur-franceconnect/api/v2", sim.base);
    assert_eq!(d["issuer"], i);
    assert_eq!(d["authorization_endpoint"], format!("{i}/authorize"));
    assert_eq!(d["token_endpoint"], format!("{i}/token"));
    assert_eq!(d["userinfo_endpoint"], format!("{i}/userinfo"));
    assert_eq!(d["end_session_endpoint"], format!("{i}/session/end"));
    assert_eq!(d["jwks_uri"], format!("{i}/jwks"));
    assert_eq!(d["id_token_signing_alg_values_supported"], serde_json::json!(["ES256"]));
    assert_eq!(d["userinfo_signing_alg_values_supported"], serde_json::json!(["ES256"]));
    assert_eq!(d["acr_values_supported"], serde_json::json!(["eidas1", "eidas2", "eidas3"]));
    assert_eq!(d["token_endpoint_auth_methods_supported"], serde_json::json!(["client_secret_post"]));
    let scopes: Vec<&str> = d["scopes_supported"].as_array().unwrap().iter().map(|s| s.as_str().unwrap()).collect();
    for s in ["openid"].iter().chain(CLAIM_SCOPES.iter()) {
        assert!(scopes.contains(s), "{s}");
    }
    let keys = sim.metadata.jwks().keys();
    assert_eq!(keys.len(), 1, "one key, fetched by the library from jwks_uri");
    let jwks: Value = json(sim.get(&format!("{i}/jwks")).await).await;
    assert_eq!(jwks["keys"][0]["kty"], "EC");
    assert_eq!(jwks["keys"][0]["crv"], "P-256");
    assert!(jwks["keys"][0].get("d").is_none(), "no private member");
}

#[actix_web::test]
async fn every_identity_goes_through_code_exchange_id_token_and_signed_userinfo() {
    let sim = start().await;
    let mut subs = Vec::new();
    for identity in IDENTITIES {
        let pending = sim.authorization();
        let code = sim.code(&pending, identity.key, "normal").await;
        let token = sim.exchange(&code).await.unwrap();
        assert_eq!(token.token_type().as_ref(), "bearer");
        let (sub, acr) = verify(&sim.rp, token.id_token().unwrap(), &pending.nonce).unwrap();
        assert_eq!(acr, "eidas1");
        let (header, claims, verified) = sim.user_info(token.access_token().secret()).await;
        assert!(verified, "userinfo signature");
        assert_eq!(header["kid"], sim.metadata.jwks().keys()[0].key_id().unwrap().as_str());
        assert_eq!(claims["iss"], sim.issuer);
        assert_eq!(claims["aud"], CLIENT_ID);
        assert_eq!(claims["sub"], sub, "same sub in id_token and userinfo");
        for (name, value) in identity_claims(&identity) {
            match value {
                Some(v) => assert_eq!(claims[name], v, "{} {name}", identity.key),
                None => assert!(claims.get(name).is_none(), "{} {name}", identity.key),
            }
        }
        subs.push(sub);
    }
    let mut distinct = subs.clone();
    distinct.sort();
    distinct.dedup();
    assert_eq!(distinct.len(), IDENTITIES.len(), "one sub per identity");

    let again = sim.authorization();
    let code = sim.code(&again, IDENTITIES[0].key, "normal").await;
    let token = sim.exchange(&code).await.unwrap();
    assert_eq!(verify(&sim.rp, token.id_token().unwrap(), &again.nonce).unwrap().0, subs[0], "the sub is stable");
}

#[actix_web::test]
async fn userinfo_returns_only_what_the_scopes_grant() {
    let sim = start().await;
    let mut request = sim.rp.authorize_url(CoreAuthenticationFlow::AuthorizationCode, CsrfToken::new_random, Nonce::new_random);
    request = request.add_scope(Scope::new("given_name".into())).add_scope(Scope::new("birth".into()));
    let (url, state, nonce) = request.add_auth_context_value(AuthenticationContextClass::new("eidas1".into())).url();
    let pending = Pending { url, state: state.secret().clone(), nonce };
    let code = sim.code(&pending, "jean-pierre-durand", "normal").await;
    let token = sim.exchange(&code).await.unwrap();
    let (_, claims, verified) = sim.user_info(token.access_token().secret()).await;
    assert!(verified);
    let mut names: Vec<&String> = claims.as_object().unwrap().keys().collect();
    names.sort();
    assert_eq!(names, ["aud", "birthcountry", "birthplace", "given_name", "iat", "iss", "sub"]);
    assert_eq!(claims["given_name"], "Jean Pierre");
}

#[actix_web::test]
async fn the_identity_page_is_french_labelled_and_offers_identities_and_scenarios() {
    let sim = start().await;
    let pending = sim.authorization();
    let resp = sim.get(pending.url.as_str()).await;
    assert_eq!(resp.status(), 200);
    assert!(resp.headers()["content-type"].to_str().unwrap().starts_with("text/html"));
    let html = resp.text().await.unwrap();
    assert!(html.contains("<html lang=\"fr\""));
    assert!(html.contains("<h1>Choisissez une identité de test</h1>"));
    assert!(html.contains(CLIENT_ID), "names the service");
    for i in IDENTITIES {
        assert!(html.contains(&format!("<input type=\"radio\" id=\"identite-{}\" name=\"identite\" value=\"{}\"", i.key, i.key)), "{}", i.key);
        assert!(html.contains(&format!("<label class=\"fr-label\" for=\"identite-{}\">{} {}", i.key, i.given_name, i.family_name)), "{}", i.key);
    }
    for f in Failure::ALL {
        assert!(html.contains(&format!("<label class=\"fr-label\" for=\"scenario-{}\">", f.key())), "{}", f.key());
    }
    assert!(html.contains("value=\"annuler\""));
}

#[actix_web::test]
async fn continuing_without_an_identity_shows_the_page_again_with_a_message() {
    let sim = start().await;
    let pending = sim.authorization();
    let resp = sim.answer(&pending.url, &[("scenario", "normal"), ("action", "choisir")]).await;
    assert_eq!(resp.status(), 400);
    assert!(resp.headers().get("location").is_none());
    let html = resp.text().await.unwrap();
    assert!(html.contains("role=\"alert\""));
    assert!(html.contains("Choisissez une identité de test avant de continuer."));
    assert!(html.contains("name=\"demande\""), "the form is there again");
}

#[actix_web::test]
async fn cancelling_returns_access_denied_with_the_state() {
    let sim = start().await;
    let pending = sim.authorization();
    let resp = sim.answer(&pending.url, &[("action", "annuler")]).await;
    let q = redirected_to(&resp, &format!("{}/rp/retour", sim.base));
    assert_eq!(q["error"], "access_denied");
    assert_eq!(q["state"], pending.state);
    assert!(!q.contains_key("code"));
}

#[actix_web::test]
async fn scenario_token_error_answers_invalid_grant() {
    let sim = start().await;
    let pending = sim.authorization();
    let code = sim.code(&pending, "marie-martin", Failure::TokenError.key()).await;
    assert_eq!(sim.exchange(&code).await.unwrap_err(), "invalid_grant");
}

#[actix_web::test]
async fn scenario_bad_id_token_signature_fails_verification_with_the_jwks() {
    let sim = start().await;
    let pending = sim.authorization();
    let code = sim.code(&pending, "marie-martin", Failure::IdTokenSignature.key()).await;
    let token = sim.exchange(&code).await.unwrap();
    let id_token = token.id_token().unwrap();
    let kid = decode(id_token.to_string().split('.').next().unwrap())["kid"].clone();
    assert_eq!(kid, sim.metadata.jwks().keys()[0].key_id().unwrap().as_str(), "announced under the published kid");
    let err = verify(&sim.rp, id_token, &pending.nonce).unwrap_err();
    assert!(matches!(err, ClaimsVerificationError::SignatureVerification(_)), "{err:?}");
    let (_, _, verified) = sim.user_info(token.access_token().secret()).await;
    assert!(verified, "only the id_token is affected");
}

#[actix_web::test]
async fn scenario_wrong_nonce_fails_the_nonce_check() {
    let sim = start().await;
    let pending = sim.authorization();
    let code = sim.code(&pending, "karim-benali", Failure::WrongNonce.key()).await;
    let token = sim.exchange(&code).await.unwrap();
    let err = verify(&sim.rp, token.id_token().unwrap(), &pending.nonce).unwrap_err();
    assert!(matches!(err, ClaimsVerificationError::InvalidNonce(_)), "{err:?}");
}

#[actix_web::test]
async fn scenario_low_acr_is_refused_by_an_eidas1_check_and_is_otherwise_valid() {
    let sim = start().await;
    let pending = sim.authorization();
    let code = sim.code(&pending, "helene-lefevre", Failure::LowAcr.key()).await;
    let token = sim.exchange(&code).await.unwrap();
    let id_token = token.id_token().unwrap();
    let err = verify(&sim.rp, id_token, &pending.nonce).unwrap_err();
    assert!(matches!(err, ClaimsVerificationError::InvalidAuthContext(_)), "{err:?}");
    let claims = id_token.claims(&sim.rp.id_token_verifier(), &pending.nonce).unwrap();
    assert_eq!(claims.auth_context_ref().unwrap().as_str(), "eidas0");
}

#[actix_web::test]
async fn scenario_bad_userinfo_signature_fails_verification_with_the_jwks() {
    let sim = start().await;
    let pending = sim.authorization();
    let code = sim.code(&pending, "aminata-diallo", Failure::UserinfoSignature.key()).await;
    let token = sim.exchange(&code).await.unwrap();
    verify(&sim.rp, token.id_token().unwrap(), &pending.nonce).expect("the id_token is valid");
    let (header, claims, verified) = sim.user_info(token.access_token().secret()).await;
    assert!(!verified, "userinfo signed with another key");
    assert_eq!(header["kid"], sim.metadata.jwks().keys()[0].key_id().unwrap().as_str());
    assert_eq!(claims["birthdate"], "1958-00-00");
}

#[actix_web::test]
async fn a_code_is_redeemed_once() {
    let sim = start().await;
    let pending = sim.authorization();
    let code = sim.code(&pending, "marie-martin", "normal").await;
    sim.exchange(&code).await.unwrap();
    assert_eq!(sim.exchange(&code).await.unwrap_err(), "invalid_grant");
}

#[actix_web::test]
async fn the_token_endpoint_wants_client_secret_post_and_the_right_secret() {
    let sim = start().await;
    let pending = sim.authorization();
    let code = sim.code(&pending, "marie-martin", "normal").await;
    let basic = sim.rp.clone().set_auth_type(AuthType::BasicAuth);
    let err = basic.exchange_code(AuthorizationCode::new(code.clone())).unwrap().request_async(&sim.http).await.unwrap_err();
    assert!(matches!(&err, RequestTokenError::ServerResponse(r) if *r.error() == CoreErrorResponseType::InvalidClient), "{err:?}");
    let wrong = sim.rp.clone().set_client_secret(ClientSecret::new("autre".into()));
    let err = wrong.exchange_code(AuthorizationCode::new(code.clone())).unwrap().request_async(&sim.http).await.unwrap_err();
    assert!(matches!(&err, RequestTokenError::ServerResponse(r) if *r.error() == CoreErrorResponseType::InvalidClient), "{err:?}");
    sim.exchange(&code).await.expect("the code was not spent by the refused attempts");
}

#[actix_web::test]
async fn an_unknown_parameter_is_refused_back_to_the_client() {
    let sim = start().await;
    let pending = sim.authorization();
    let resp = sim.get(with_param(&pending.url, "code_challenge", Some("abc")).as_str()).await;
    let q = redirected_to(&resp, &format!("{}/rp/retour", sim.base));
    assert_eq!(q["error"], "invalid_request");
    assert!(q["error_description"].contains("code_challenge"), "{q:?}");
    assert_eq!(q["state"], pending.state);
    assert!(!q.contains_key("code"));
    let resp = sim.get(with_param(&pending.url, "prompt", Some("login")).as_str()).await;
    assert_eq!(resp.status(), 200, "prompt is a FranceConnect parameter");
}

#[actix_web::test]
async fn faulty_requests_go_back_with_the_rfc_error() {
    let sim = start().await;
    let pending = sim.authorization();
    let cases: [(&str, Option<&str>, &str); 7] = [
        ("nonce", Some("trop-court"), "invalid_request"),
        ("nonce", None, "invalid_request"),
        ("scope", Some("given_name email"), "invalid_scope"),
        ("scope", Some("openid adresse"), "invalid_scope"),
        ("response_type", Some("token"), "unsupported_response_type"),
        ("acr_values", Some("eidas4"), "invalid_request"),
        ("acr_values", None, "invalid_request"),
    ];
    for (name, value, error) in cases {
        let resp = sim.get(with_param(&pending.url, name, value).as_str()).await;
        let q = redirected_to(&resp, &format!("{}/rp/retour", sim.base));
        assert_eq!(q["error"], error, "{name}={value:?}");
        assert_eq!(q["state"], pending.state, "{name}={value:?}");
    }
    let resp = sim.get(with_param(&pending.url, "state", None).as_str()).await;
    let q = redirected_to(&resp, &format!("{}/rp/retour", sim.base));
    assert_eq!(q["error"], "invalid_request");
    assert!(!q.contains_key("state"));
    let mut repeated = pending.url.clone();
    repeated.query_pairs_mut().append_pair("nonce", "une-autre-valeur-assez-longue");
    let q = redirected_to(&sim.get(repeated.as_str()).await, &format!("{}/rp/retour", sim.base));
    assert_eq!(q["error"], "invalid_request");
}

#[actix_web::test]
async fn an_unregistered_redirect_uri_or_client_gets_a_page_not_a_redirect() {
    let sim = start().await;
    let pending = sim.authorization();
    for (name, value) in [
        ("redirect_uri", format!("{}/rp/retour/", sim.base)),
        ("redirect_uri", "https://attaquant.example/retour".to_owned()),
        ("client_id", "service-inconnu".to_owned()),
    ] {
        let resp = sim.get(with_param(&pending.url, name, Some(&value)).as_str()).await;
        assert_eq!(resp.status(), 400, "{name}={value}");
        assert!(resp.headers().get("location").is_none(), "{name}={value}");
        let html = resp.text().await.unwrap();
        assert!(html.contains("<html lang=\"fr\""));
        assert!(html.contains("<code id=\"code-erreur\">invalid_request</code>"), "{html}");
    }
}

#[actix_web::test]
async fn userinfo_refuses_a_missing_or_foreign_bearer() {
    let sim = start().await;
    let url = sim.metadata.userinfo_endpoint().unwrap().as_str().to_owned();
    let resp = sim.http.get(&url).send().await.unwrap();
    assert_eq!(resp.status(), 401);
    assert!(resp.headers()["www-authenticate"].to_str().unwrap().starts_with("Bearer error=\"invalid_request\""));
    let pending = sim.authorization();
    let code = sim.code(&pending, "marie-martin", "normal").await;
    let resp = sim.http.get(&url).bearer_auth(&code).send().await.unwrap();
    assert_eq!(resp.status(), 401, "a code is not an access token");
    assert!(resp.headers()["www-authenticate"].to_str().unwrap().starts_with("Bearer error=\"invalid_token\""));
}

#[actix_web::test]
async fn session_end_goes_back_with_the_state_to_a_registered_uri_only() {
    let sim = start().await;
    let pending = sim.authorization();
    let code = sim.code(&pending, "ange-santoni", "normal").await;
    let token = sim.exchange(&code).await.unwrap();
    let endpoint = sim.metadata.additional_metadata().end_session_endpoint.clone().unwrap();
    let logout = |target: String| {
        LogoutRequest::from(endpoint.clone())
            .set_id_token_hint(token.id_token().unwrap())
            .set_post_logout_redirect_uri(PostLogoutRedirectUrl::new(target).unwrap())
            .set_state(CsrfToken::new("etat-de-deconnexion".into()))
            .http_get_url()
    };
    let resp = sim.get(logout(format!("{}/rp/au-revoir", sim.base)).as_str()).await;
    let q = redirected_to(&resp, &format!("{}/rp/au-revoir", sim.base));
    assert_eq!(q.len(), 1);
    assert_eq!(q["state"], "etat-de-deconnexion");

    let resp = sim.get(logout("https://attaquant.example/".into()).as_str()).await;
    assert_eq!(resp.status(), 400);
    assert!(resp.headers().get("location").is_none());

    let forged = with_param(&logout(format!("{}/rp/au-revoir", sim.base)), "id_token_hint", Some("a.b.c"));
    let resp = sim.get(forged.as_str()).await;
    assert_eq!(resp.status(), 400, "a hint the simulator did not sign");
}

#[actix_web::test]
async fn instances_sharing_a_key_seed_share_the_jwks_and_redeem_each_others_codes() {
    let (base_a, settings_a) = provider::serve_on_loopback(|base| settings_for(base).with_key_seed(b"graine commune"), |_| {});
    let issuer = settings_a.issuer.clone();
    let (base_b, _) = provider::serve_on_loopback(|_| settings_for(&base_a).with_key_seed(b"graine commune"), |_| {});
    let (base_c, _) = provider::serve_on_loopback(|_| settings_for(&base_a), |_| {});
    let http = http();
    let path = "/simulateur-franceconnect/api/v2";
    let jwks = |base: String| {
        let http = http.clone();
        async move { http.get(format!("{base}{path}/jwks")).send().await.unwrap().text().await.unwrap() }
    };
    let (a, b, c) = (jwks(base_a.clone()).await, jwks(base_b.clone()).await, jwks(base_c.clone()).await);
    assert_eq!(a, b);
    assert_ne!(a, c, "a random seed gives another key");

    let metadata = ProviderMetadataWithLogout::discover_async(IssuerUrl::new(issuer).unwrap(), &http).await.unwrap();
    let rp = CoreClient::from_provider_metadata(metadata.clone(), ClientId::new(CLIENT_ID.into()), Some(ClientSecret::new(SECRET.into())))
        .set_redirect_uri(RedirectUrl::new(format!("{base_a}/rp/retour")).unwrap())
        .set_auth_type(AuthType::RequestBody);
    let sim = Sim { base: base_a.clone(), issuer: settings_a.issuer.clone(), http: http.clone(), metadata, rp };
    let pending = sim.authorization();
    let code = sim.code(&pending, "marie-martin", "normal").await;
    let form = |code: &str| {
        url::form_urlencoded::Serializer::new(String::new())
            .append_pair("grant_type", "authorization_code")
            .append_pair("code", code)
            .append_pair("redirect_uri", &format!("{base_a}/rp/retour"))
            .append_pair("client_id", CLIENT_ID)
            .append_pair("client_secret", SECRET)
            .finish()
    };
    let post = |base: &str, body: String| {
        http.post(format!("{base}{path}/token")).header("content-type", "application/x-www-form-urlencoded").body(body).send()
    };
    assert_eq!(post(&base_c, form(&code)).await.unwrap().status(), 400, "another key does not know the code");
    let resp = post(&base_b, form(&code)).await.unwrap();
    assert_eq!(resp.status(), 200, "issued by A, redeemed at B");
    let body: Value = json(resp).await;
    let id_token: CoreIdToken = serde_json::from_value(body["id_token"].clone()).unwrap();
    verify(&sim.rp, &id_token, &pending.nonce).expect("B's id_token verifies with A's JWKS");
    let (_, claims, verified) = sim.user_info(body["access_token"].as_str().unwrap()).await;
    assert!(verified && claims["given_name"] == "Marie", "B's access token accepted by A");
}
