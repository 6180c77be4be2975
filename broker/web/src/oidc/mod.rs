//! The identity provider FranceConnect's core calls: discovery, `/authorize` and the
//! aidant's choice of usager and démarche, `/token`, `/userinfo` and logout. Flows, codes
//! and tokens live in the shared cache, never in process memory, so any instance can
//! answer any step; only registered clients are copied in memory, for a few seconds.

pub mod authorize;
pub mod discovery;
pub mod logout;
pub mod token;
pub mod userinfo;

use crate::AppState;
use actix_web::http::header;
use actix_web::{HttpResponse, HttpResponseBuilder};
use broker_core::client::IdTokenAlg;
use broker_core::oidc::authorize::{AsClientView, ClientView, Outcome};
use broker_core::oidc::error::OAuthError;
use broker_store::admin::{self, Client};
use std::sync::Arc;

/// Parameters of a query string or a form body, in order.
pub fn form_pairs(raw: &[u8]) -> Vec<(String, String)> {
    url::form_urlencoded::parse(raw).into_owned().collect()
}

/// A registered client with its redirect URIs split, as the checks want them.
pub struct Registered {
    pub client: Arc<Client>,
    pub redirect_uris: Vec<String>,
}

impl Registered {
    pub fn new(client: impl Into<Arc<Client>>) -> Self {
        let client = client.into();
        let redirect_uris = client.redirect_uri_list().into_iter().map(str::to_owned).collect();
        Self { client, redirect_uris }
    }

    pub fn alg(&self) -> IdTokenAlg {
        IdTokenAlg::parse(&self.client.id_token_alg).unwrap_or(IdTokenAlg::Es256)
    }
}

impl AsClientView for Registered {
    fn client_view(&self) -> ClientView<'_> {
        ClientView { client_id: &self.client.client_id, redirect_uris: &self.redirect_uris }
    }
}

/// The client secret of an HS256 client, unsealed (it signs that client's tokens).
pub fn hs256_secret(state: &AppState, client: &Client) -> Result<Option<Vec<u8>>, OAuthError> {
    match &client.secret_sealed {
        Some(sealed) if client.id_token_alg == IdTokenAlg::Hs256.key() => state
            .sealer
            .open(sealed, &admin::client_context(&client.client_id))
            .map(Some)
            .map_err(OAuthError::internal),
        _ => Ok(None),
    }
}

/// What one client is told about who: the usager's `sub` as that client sees it
/// (public or pairwise), and the `act` claim when the client is registered with it.
pub fn subject_and_act(
    state: &AppState,
    client: &Client,
    usager_sub: &str,
    aidant_id: i64,
    organisation_id: i64,
) -> Result<(String, Option<serde_json::Value>), OAuthError> {
    use broker_core::oidc::subject::{act_claim, ActingOrganisation, PairwiseKey};
    let key = PairwiseKey::derive(&state.usager_salt);
    let rule = client.subject_rule();
    let sub = rule.usager(&key, usager_sub);
    if !client.act_claim {
        return Ok((sub, None));
    }
    let org = state.db.read(|c| admin::find_organisation(c, organisation_id)).map_err(OAuthError::internal)?;
    let act = act_claim(&rule, &key, aidant_id, ActingOrganisation { siret: &org.siret, name: &org.name });
    Ok((sub, Some(act)))
}

/// The one place an authorization step's outcome becomes an answer: a page for an
/// untrusted client or redirect URI (never a redirect), else a `303` to the registered
/// URI with the error or the code, `state` and `iss` (RFC 9207).
pub fn respond(outcome: Outcome, issuer: &str) -> HttpResponse {
    let url = match outcome {
        Outcome::Page(e) => return error_page(&e),
        Outcome::Error { to, state, error } => {
            tracing::info!(error = %error.code, "authorization refused, sent back to the client");
            error.redirect_url(to.as_str(), state.as_deref(), issuer).ok()
        }
        Outcome::Code { to, state, code } => url::Url::parse(to.as_str()).ok().map(|mut url| {
            url.query_pairs_mut().append_pair("code", &code).append_pair("state", &state).append_pair("iss", issuer);
            url
        }),
    };
    match url {
        Some(url) => crate::guard::see_other(url.as_str()),
        None => crate::pages::server_error(),
    }
}

/// The page for an authorization request that cannot be sent back to its client.
fn error_page(e: &OAuthError) -> HttpResponse {
    use actix_web::http::StatusCode;
    // A caller's mistake (unknown client, unregistered redirect_uri) is not the
    // service's failure: info; only a failure of the service is an error.
    if let Some(d) = &e.detail {
        if e.http_status() >= 500 {
            tracing::error!(error = %e.code, detail = %d, "authorize failed");
        } else {
            tracing::info!(error = %e.code, detail = %d, "authorization request refused");
        }
    }
    let (title, message) = match e.code {
        broker_core::oidc::error::ErrorCode::ServerError => (
            "Le service rencontre un problème",
            "La demande de connexion n'a pas pu être traitée. Retournez sur le service en ligne et réessayez dans quelques instants.".to_owned(),
        ),
        _ => (
            "Demande de connexion refusée",
            format!("Le service en ligne qui vous a envoyé ici n'est pas reconnu par Aidants Connect, ou son adresse de retour n'est pas enregistrée ({}). Aucune information n'a été transmise. Fermez cette page et prévenez le service en ligne.", e.description),
        ),
    };
    let status = StatusCode::from_u16(e.http_status()).unwrap_or(StatusCode::BAD_REQUEST);
    crate::pages::error_page(status, title, &message)
}

/// Headers of every answer carrying tokens or identities (RFC 6749 §5.1).
pub fn no_store(mut b: HttpResponseBuilder) -> HttpResponseBuilder {
    b.insert_header((header::CACHE_CONTROL, "no-store")).insert_header((header::PRAGMA, "no-cache"));
    b
}

/// An RFC 6749 §5.2 JSON error; the detail (if any) goes to the log only.
pub fn json_error(e: &OAuthError) -> HttpResponse {
    if let Some(d) = &e.detail {
        if e.http_status() >= 500 {
            tracing::error!(error = %e.code, detail = %d, "oidc request failed");
        } else {
            tracing::info!(error = %e.code, detail = %d, "oidc request refused");
        }
    }
    let status = actix_web::http::StatusCode::from_u16(e.http_status()).unwrap_or(actix_web::http::StatusCode::BAD_REQUEST);
    no_store(HttpResponse::build(status)).json(e.to_json())
}
