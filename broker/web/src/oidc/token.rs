//! `POST /token`: the authorization code grant, with `client_secret_post` or
//! `client_secret_basic` (RFC 6749 §2.3.1, §4.1.3), answered with an access token and
//! an id_token; no refresh token.

use super::{form_pairs, hs256_secret, json_error, no_store};
use crate::AppState;
use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use broker_core::client::IdTokenAlg;
use broker_core::oidc::claims::{id_token_claims, sign_id_token, IdTokenInput, Scope};
use broker_core::oidc::error::{ErrorCode, OAuthError};
use broker_core::oidc::grant::{one, TokenRequest};
use broker_core::oidc::subject::{act_claim, ActingOrganisation, PairwiseKey};
use broker_core::secret::Secret;
use broker_store::admin::{self, Client};
use broker_store::idp;
use broker_store::oidc_state::GrantStore;
use data_encoding::BASE64;
use serde::Serialize;
use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

/// Access tokens serve `/userinfo` once, within this many seconds.
pub const ACCESS_TOKEN_SECONDS: u64 = 120;
/// id_token lifetime.
pub const ID_TOKEN_SECONDS: i64 = 300;

/// A hash no secret matches, compared when the client is unknown so that the answer
/// takes the same time either way.
const NO_CLIENT_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

struct Credentials {
    client_id: String,
    secret: String,
    basic: bool,
}

fn credentials(req: &HttpRequest, params: &[(String, String)]) -> Result<Credentials, OAuthError> {
    let invalid_client = || OAuthError::new(ErrorCode::InvalidClient, "Authentification du client refusée.");
    let in_body = (one(params, "client_id")?, one(params, "client_secret")?);
    match req.headers().get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()) {
        Some(h) if h.len() > 6 && h[..6].eq_ignore_ascii_case("basic ") => {
            if in_body.1.is_some() {
                return Err(OAuthError::invalid_request("une seule méthode d'authentification du client à la fois"));
            }
            let raw = BASE64.decode(h[6..].trim().as_bytes()).map_err(|_| invalid_client())?;
            let raw = String::from_utf8(raw).map_err(|_| invalid_client())?;
            let (id, secret) = raw.split_once(':').ok_or_else(invalid_client)?;
            let decode = |s: &str| url::form_urlencoded::parse(format!("v={s}").as_bytes()).next().map(|(_, v)| v.into_owned()).unwrap_or_default();
            let (id, secret) = (decode(id), decode(secret));
            if in_body.0.is_some_and(|b| b != id) {
                return Err(invalid_client());
            }
            Ok(Credentials { client_id: id, secret, basic: true })
        }
        _ => match in_body {
            (Some(id), Some(secret)) => Ok(Credentials { client_id: id.to_owned(), secret: secret.to_owned(), basic: false }),
            _ => Err(invalid_client()),
        },
    }
}

fn client_error(e: &OAuthError, basic: bool) -> HttpResponse {
    let mut res = json_error(e);
    if e.code == ErrorCode::InvalidClient && basic {
        res.headers_mut().insert(header::WWW_AUTHENTICATE, header::HeaderValue::from_static("Basic realm=\"aidants-connect\""));
    }
    res
}

/// The exchange, on the worker's thread: the client comes from [`TokenClients`] (the
/// database is read on the blocking pool only when the copy is missing or stale), the
/// code is redeemed and the access token stored in one cache round trip on the async
/// connection, and the id_token is signed inline (CPU only).
pub async fn token(req: HttpRequest, body: web::Bytes, state: web::Data<AppState>) -> HttpResponse {
    let params = form_pairs(&body);
    let creds = match credentials(&req, &params) {
        Ok(c) => c,
        Err(e) => return client_error(&e, req.headers().contains_key(header::AUTHORIZATION)),
    };
    let basic = creds.basic;
    match exchange(&state, creds, &params).await {
        Ok(answer) => no_store(HttpResponse::Ok()).json(answer),
        Err(e) => client_error(&e, basic),
    }
}

/// The answer of a successful exchange (RFC 6749 §5.1, OIDC Core §3.1.3.3).
#[derive(Serialize)]
struct TokenAnswer {
    access_token: String,
    token_type: &'static str,
    expires_in: u64,
    id_token: String,
    scope: String,
}

async fn exchange(state: &web::Data<AppState>, creds: Credentials, params: &[(String, String)]) -> Result<TokenAnswer, OAuthError> {
    let found = state.token_clients.get(state, &creds.client_id).await?;
    let matches = Secret::new(creds.secret).matches_hash(found.as_ref().map_or(NO_CLIENT_HASH, |c| c.client.secret_hash.as_str()));
    let client = match found {
        Some(c) if matches => c,
        _ => return Err(OAuthError::new(ErrorCode::InvalidClient, "Authentification du client refusée.").with_detail(format!("client {}", creds.client_id.len()))),
    };
    let request = TokenRequest::parse(params)?;
    let now = state.clock.now();
    let client_id = client.client.client_id.as_str();
    let exchanged = GrantStore::new(state.cache.as_ref()).exchange_code_async(client_id, &request, now, ACCESS_TOKEN_SECONDS).await?;
    let grant = exchanged.code.value;
    let rule = client.client.subject_rule();
    let sub = rule.usager(&client.pairwise, &grant.usager_sub);
    let act = match client.client.act_claim {
        true => Some(act_claim_of(state, &client, grant.acting.aidant().get(), grant.acting.organisation().get()).await?),
        false => None,
    };
    let amr: Vec<&str> = grant.amr.iter().map(String::as_str).collect();
    let claims = id_token_claims(&IdTokenInput {
        issuer: &state.issuer,
        client_id,
        sub: &sub,
        nonce: &grant.nonce,
        auth_time: grant.auth_time,
        now,
        lifetime_seconds: ID_TOKEN_SECONDS,
        amr: &amr,
        rep_scope: grant.rep_scope.as_deref(),
        access_token: &exchanged.access_token,
        alg: client.alg,
        act: act.as_ref(),
    });
    let id_token = sign_id_token(&claims, client.alg, &state.signing.keys(), client.hs256_secret.as_deref(), now).map_err(OAuthError::internal)?;
    Ok(TokenAnswer {
        access_token: exchanged.access_token,
        token_type: "Bearer",
        expires_in: ACCESS_TOKEN_SECONDS,
        id_token,
        scope: scope_string(&grant.scopes),
    })
}

/// The granted scopes, space-separated.
fn scope_string(scopes: &[Scope]) -> String {
    let mut out = String::with_capacity(scopes.len() * 8);
    for (i, s) in scopes.iter().enumerate() {
        if i > 0 {
            out.push(' ');
        }
        out.push_str(s.key());
    }
    out
}

/// The `act` claim for a client registered with it: the organisation is read on the
/// blocking pool.
async fn act_claim_of(state: &web::Data<AppState>, client: &TokenClient, aidant_id: i64, organisation_id: i64) -> Result<serde_json::Value, OAuthError> {
    let st = state.clone();
    let org = web::block(move || st.db.read(|c| admin::find_organisation(c, organisation_id)))
        .await
        .map_err(OAuthError::internal)?
        .map_err(OAuthError::internal)?;
    Ok(act_claim(&client.client.subject_rule(), &client.pairwise, aidant_id, ActingOrganisation { siret: &org.siret, name: &org.name }))
}

/// A registered client with what `/token` derives from it, computed once per copy: its
/// id_token algorithm, its HS256 secret unsealed, and the pairwise key.
pub struct TokenClient {
    pub client: Arc<Client>,
    pub alg: IdTokenAlg,
    pub hs256_secret: Option<Vec<u8>>,
    pub pairwise: PairwiseKey,
    /// The usager-salt key the pairwise key was derived from.
    salt: [u8; 32],
    fetched: Instant,
}

/// Active clients as `/token` uses them, each kept `ttl` (the same delay as
/// [`broker_store::idp::ClientCache`]: a client made inactive stops being served within
/// it). A fresh copy is used on the worker's thread; a missing or stale one is read from
/// the database on the blocking pool.
pub struct TokenClients {
    ttl: Duration,
    entries: RwLock<HashMap<String, Arc<TokenClient>>>,
}

/// Above this many copies, those past their lifetime are dropped on the next insertion.
const TOKEN_CLIENTS_SWEEP: usize = 1024;

impl TokenClients {
    pub fn new(ttl: Duration) -> Self {
        TokenClients { ttl, entries: RwLock::new(HashMap::new()) }
    }

    fn fresh(&self, client_id: &str, salt: &[u8; 32]) -> Option<Arc<TokenClient>> {
        let entries = self.entries.read().unwrap_or_else(|e| e.into_inner());
        entries.get(client_id).filter(|c| c.fetched.elapsed() < self.ttl && &c.salt == salt).cloned()
    }

    /// The active client `client_id`, as the database answered it at most `ttl` ago.
    pub async fn get(&self, state: &web::Data<AppState>, client_id: &str) -> Result<Option<Arc<TokenClient>>, OAuthError> {
        if let Some(c) = self.fresh(client_id, &state.usager_salt) {
            return Ok(Some(c));
        }
        let (st, id) = (state.clone(), client_id.to_owned());
        let found = web::block(move || idp::find_client(&st.db, &id)).await.map_err(OAuthError::internal)?.map_err(OAuthError::internal)?;
        let Some(client) = found else {
            self.entries.write().unwrap_or_else(|e| e.into_inner()).remove(client_id);
            return Ok(None);
        };
        let prepared = Arc::new(TokenClient {
            alg: IdTokenAlg::parse(&client.id_token_alg).unwrap_or(IdTokenAlg::Es256),
            hs256_secret: hs256_secret(state, &client)?,
            pairwise: PairwiseKey::derive(&state.usager_salt),
            salt: state.usager_salt,
            client: Arc::new(client),
            fetched: Instant::now(),
        });
        if !self.ttl.is_zero() {
            let mut entries = self.entries.write().unwrap_or_else(|e| e.into_inner());
            if entries.len() >= TOKEN_CLIENTS_SWEEP {
                entries.retain(|_, c| c.fetched.elapsed() < self.ttl);
            }
            entries.insert(client_id.to_owned(), prepared.clone());
        }
        Ok(Some(prepared))
    }
}
