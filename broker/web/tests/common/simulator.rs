//! Playing the usager on the FranceConnect simulator's identity page over HTTP.

use super::{world, World, ISSUER};
use actix_web::web;
use broker_testkit::TestDb;
use broker_web::franceconnect::{FcClient, FcSettings};
use broker_web::AppState;
use fcsim::provider::{self, ProviderSettings};
use openidconnect::reqwest;
use std::collections::HashMap;
use std::sync::Arc;

pub const CLIENT_ID: &str = "aidants-connect-test";
pub const SECRET: &str = "secret-de-test";
pub const SALT: [u8; 32] = [5u8; 32];

/// The simulator on 127.0.0.1:0, knowing the test broker's redirect URIs.
pub fn serve_simulator() -> String {
    let make = |base: &str| {
        ProviderSettings::new(
            ProviderSettings::issuer_under(base),
            CLIENT_ID,
            SECRET,
            vec![format!("{ISSUER}/mandats/nouveau/franceconnect/retour")],
            vec![format!("{ISSUER}/mandats/nouveau")],
        )
        .with_key_seed(b"graine")
    };
    provider::serve_on_loopback(make, |_| {}).0
}

/// A world whose broker uses the simulator.
pub fn fc_world(t: TestDb, base: &str) -> World {
    let mut w = world(t);
    let fc = FcClient::new(FcSettings {
        issuer: ProviderSettings::issuer_under(base),
        client_id: CLIENT_ID.into(),
        client_secret: SECRET.into(),
        redirect_uri: format!("{ISSUER}/mandats/nouveau/franceconnect/retour"),
        post_logout_redirect_uri: format!("{ISSUER}/mandats/nouveau"),
    })
    .unwrap();
    let state = AppState { franceconnect: Some(Arc::new(fc)), usager_salt: SALT, ..(**w.state).clone() };
    w.state = web::Data::new(state);
    w
}

/// Plays the usager on the simulator; returns the callback path on the broker.
pub async fn usager_on_simulator(base: &str, authorize: &str, identity: &str, scenario: &str, action: &str) -> String {
    let location = choose(&http(), base, authorize, identity, scenario, action).await;
    location.strip_prefix(ISSUER).unwrap_or_else(|| panic!("{location}")).to_owned()
}

/// An HTTP client that does not follow redirects.
pub fn http() -> reqwest::Client {
    reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap()
}

fn unescape(s: &str) -> String {
    s.replace("&#x2f;", "/").replace("&#47;", "/").replace("&quot;", "\"").replace("&amp;", "&")
}

fn attribute(html: &str, prefix: &str) -> String {
    let start = html.find(prefix).unwrap_or_else(|| panic!("{prefix} not in the page")) + prefix.len();
    let len = html[start..].find('"').unwrap();
    unescape(&html[start..start + len])
}

/// The query parameters of an absolute URL.
pub fn query(url: &str) -> HashMap<String, String> {
    url::Url::parse(url).unwrap().query_pairs().into_owned().collect()
}

/// Opens the simulator's page at `authorize` (served under `base`) and submits the identity,
/// the scenario and the action, "choisir" or "annuler". Returns where the simulator's 303 goes.
pub async fn choose(http: &reqwest::Client, base: &str, authorize: &str, identity: &str, scenario: &str, action: &str) -> String {
    let page = http.get(authorize).send().await.unwrap();
    assert_eq!(page.status(), 200, "the simulator accepts the request");
    let html = page.text().await.unwrap();
    let action_path = attribute(&html, "<form method=\"post\" action=\"");
    let demande = attribute(&html, "name=\"demande\" value=\"");
    let body = url::form_urlencoded::Serializer::new(String::new())
        .append_pair("demande", &demande)
        .append_pair("identite", identity)
        .append_pair("scenario", scenario)
        .append_pair("action", action)
        .finish();
    let resp = http
        .post(format!("{base}{action_path}"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 303);
    resp.headers()["location"].to_str().unwrap().to_owned()
}
