//! Shared scaffolding of the HTTP tests: a world (database, cache, SMTP listener,
//! clock, one aidant with a TOTP app), a cookie-keeping browser, and the sign-in flow.
#![allow(dead_code)]

pub mod simulator;

use actix_web::body::MessageBody;
use actix_web::dev::{Service, ServiceResponse};
use actix_web::http::{header, Method, StatusCode};
use actix_web::test::{self, TestRequest};
use actix_web::web;
use broker_core::signing::store::KeyStore;
use broker_core::signing::{Alg, KeySet};
use broker_core::time::{Clock, ManualClock};
use broker_core::totp::Seed;
use broker_core::Timestamp;
use broker_store::admin::{self, NewAidant};
use broker_store::cache::{Cache, InProcess, Redis};
use broker_store::seal::Sealer;
use broker_store::{journal, Backend};
use broker_testkit::smtp::SmtpListener;
use broker_testkit::TestDb;
use broker_web::AppState;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

pub const ISSUER: &str = "http://localhost:8080";

pub struct World {
    pub t: TestDb,
    pub state: web::Data<AppState>,
    pub clock: Arc<ManualClock>,
    pub smtp: SmtpListener,
    pub email: String,
    pub seed: Seed,
    pub aidant_id: i64,
    _outbox: tempfile::TempDir,
}

pub fn world(t: TestDb) -> World {
    let cache: Arc<dyn Cache> = match t.db.backend() {
        Backend::Sqlite => Arc::new(InProcess::new()),
        Backend::Postgres => {
            let prefix = format!("ac-test-{}:", hex::encode(rand::random::<[u8; 6]>()));
            Arc::new(Redis::new(&broker_testkit::redis_url(), &prefix).unwrap())
        }
    };
    let sealer = Sealer::new(&[9u8; 32]);
    let org = admin::create_organisation(&t.db, "France Services Tourcoing", "81234567800013", "", None).unwrap();
    let email = format!("aidant-{}@exemple.fr", hex::encode(rand::random::<[u8; 4]>()));
    let a = admin::create_aidant(&t.db, &NewAidant { organisation_id: org.id, email: &email, first_name: "Nadia", last_name: "Benali", profession: "", referent: false }).unwrap();
    let (_, seed) = admin::enroll_app(&t.db, &sealer, &email).unwrap();
    let smtp = SmtpListener::start();
    let outbox = tempfile::tempdir().unwrap();
    let mailer = broker_web::mail::Mailer::from_settings(Some(&smtp.url()), "Aidants Connect <ne-pas-repondre@exemple.fr>", outbox.path()).unwrap();
    let clock = Arc::new(ManualClock::new(Timestamp::now()));
    let mailer = Arc::new(mailer);
    let mail = broker_web::mail_sender::MailSender::start(t.db.clone(), mailer.clone(), ISSUER.into(), clock.clone(), std::time::Duration::from_millis(200));
    let state = web::Data::new(AppState {
        db: t.db.clone(),
        cache,
        issuer: ISSUER.into(),
        sealer,
        mailer,
        mail,
        passkeys: Arc::new(broker_web::passkeys::Passkeys::new(ISSUER).unwrap()),
        clock: clock.clone(),
        signing: Arc::new(KeyStore::fixed(KeySet::first(Alg::Es256, clock.now()).unwrap())),
        development: true,
        behind_proxy: true,
        franceconnect: None,
        usager_salt: [5u8; 32],
        journal_key: None,
        clients: Arc::new(broker_store::idp::ClientCache::new(std::time::Duration::from_secs(10))),
        token_clients: Arc::new(broker_web::oidc::token::TokenClients::new(std::time::Duration::from_secs(10))),
    });
    World { t, state, clock, smtp, email, seed, aidant_id: a.id, _outbox: outbox }
}

impl World {
    /// The current organisation of the world's aidant.
    pub fn organisation(&self) -> i64 {
        self.t.db.read(|c| broker_store::auth::find_active_by_id(c, self.aidant_id)).unwrap().unwrap().current_organisation_id.unwrap()
    }

    /// A usager registered under FranceConnect `sub` (salt `[5; 32]`, as the world's
    /// state), born in Paris 7e, with an e-mail.
    pub fn usager(&self, sub: &str, given: &str, family: &str) -> i64 {
        use broker_core::identite::{usager_key, IdentitePivot, FRANCE};
        let identity = IdentitePivot {
            given_name: given.into(),
            family_name: family.into(),
            preferred_username: None,
            birthdate: "1962-08-24".into(),
            gender: "female".into(),
            birthplace: "75107".into(),
            birthcountry: FRANCE.into(),
            email: "usager@exemple.fr".into(),
        }
        .validate()
        .unwrap();
        self.t.db.write(|c| broker_store::mandats::upsert_usager(c, &usager_key(&[5; 32], sub), &identity, self.clock.now())).unwrap()
    }

    pub fn code(&self) -> String {
        self.seed.code_at(30, 6, self.clock.now())
    }

    pub fn actions(&self) -> Vec<String> {
        broker_testkit::journal(&self.t.db, |c| journal::page(c, 0, 1000)).unwrap().into_iter().map(|r| r.action).collect()
    }
}

/// A browser: keeps cookies between requests.
#[derive(Default, Clone)]
pub struct Browser {
    cookies: HashMap<String, String>,
}

pub struct Page {
    pub status: StatusCode,
    pub location: Option<String>,
    pub body: String,
}

fn unescape(html: &str) -> String {
    html.replace("&#x27;", "'").replace("&#39;", "'").replace("&quot;", "\"").replace("&#34;", "\"").replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")
}

impl Page {
    /// Whether the page shows this text (HTML entities decoded).
    pub fn shows(&self, text: &str) -> bool {
        unescape(&self.body).contains(text)
    }

    pub fn csrf(&self) -> String {
        let at = self.body.find("name=\"csrf\" value=\"").or_else(|| self.body.find("name=\"csrf-token\" content=\"")).expect("csrf token in page");
        let rest = &self.body[at..];
        let start = rest.find("value=\"").or_else(|| rest.find("content=\"")).unwrap();
        let rest = &rest[start..];
        let q = rest.find('"').unwrap() + 1;
        rest[q..q + rest[q..].find('"').unwrap()].to_owned()
    }
}

impl Browser {
    pub async fn send<S, B>(&mut self, app: &S, req: TestRequest) -> Page
    where
        S: Service<actix_http::Request, Response = ServiceResponse<B>, Error = actix_web::Error>,
        B: MessageBody,
    {
        let mut req = req;
        if !self.cookies.is_empty() {
            let c: Vec<String> = self.cookies.iter().map(|(k, v)| format!("{k}={v}")).collect();
            req = req.insert_header((header::COOKIE, c.join("; ")));
        }
        let res = test::call_service(app, req.to_request()).await;
        for c in res.response().cookies() {
            if c.max_age().is_some_and(|m| m.is_zero()) || c.value().is_empty() {
                self.cookies.remove(c.name());
            } else {
                self.cookies.insert(c.name().to_owned(), c.value().to_owned());
            }
        }
        let status = res.status();
        let location = res.headers().get(header::LOCATION).map(|l| l.to_str().unwrap().to_owned());
        let body = String::from_utf8(test::read_body(res).await.to_vec()).unwrap();
        Page { status, location, body }
    }

    pub async fn get<S, B>(&mut self, app: &S, path: &str) -> Page
    where
        S: Service<actix_http::Request, Response = ServiceResponse<B>, Error = actix_web::Error>,
        B: MessageBody,
    {
        self.send(app, TestRequest::get().uri(path)).await
    }

    pub async fn post<S, B>(&mut self, app: &S, path: &str, form: &[(&str, &str)]) -> Page
    where
        S: Service<actix_http::Request, Response = ServiceResponse<B>, Error = actix_web::Error>,
        B: MessageBody,
    {
        self.send(app, TestRequest::default().method(Method::POST).uri(path).set_form(form)).await
    }
}

#[macro_export]
macro_rules! app {
    ($w:expr) => {
        test::init_service(broker_web::app($w.state.clone(), std::path::PathBuf::from("/nonexistent"), &[7u8; 64])).await
    };
}

/// Signs in with e-mail + code and the e-mailed link; returns the browser.
pub async fn sign_in<S, B>(w: &World, app: &S) -> Browser
where
    S: Service<actix_http::Request, Response = ServiceResponse<B>, Error = actix_web::Error>,
    B: MessageBody,
{
    sign_in_as(w, app, &w.email, &w.seed).await
}

/// Signs in as another aidant of the world, whose TOTP app has `seed`.
pub async fn sign_in_as<S, B>(w: &World, app: &S, email: &str, seed: &Seed) -> Browser
where
    S: Service<actix_http::Request, Response = ServiceResponse<B>, Error = actix_web::Error>,
    B: MessageBody,
{
    let mut b = Browser::default();
    let before = w.smtp.received().len();
    let form = b.get(app, "/connexion").await;
    let code = seed.code_at(30, 6, w.clock.now());
    let sent = b.post(app, "/connexion", &[("csrf", &form.csrf()), ("email", email), ("code", &code), ("suite", "/espace")]).await;
    assert!(sent.shows("Consultez votre messagerie"), "{}", sent.body);
    let link = wait_for_link(w, email, before);
    let path = link.strip_prefix(ISSUER).unwrap().to_owned();
    let confirm = b.get(app, &path).await;
    assert_eq!(confirm.status, StatusCode::OK);
    let jeton = path.split("jeton=").nth(1).unwrap().to_owned();
    let done = b.post(app, "/connexion/lien", &[("csrf", &confirm.csrf()), ("jeton", &jeton)]).await;
    assert_eq!((done.status, done.location.as_deref()), (StatusCode::SEE_OTHER, Some("/espace")), "{}", done.body);
    b
}

pub async fn request_link<S, B>(w: &World, app: &S, b: &mut Browser) -> String
where
    S: Service<actix_http::Request, Response = ServiceResponse<B>, Error = actix_web::Error>,
    B: MessageBody,
{
    let before = w.smtp.received().len();
    let form = b.get(app, "/connexion").await;
    let p = b.post(app, "/connexion", &[("csrf", &form.csrf()), ("email", &w.email), ("code", &w.code())]).await;
    assert!(p.shows("Consultez votre messagerie"), "{}", p.body);
    let link = wait_for_link(w, &w.email, before);
    link.split("jeton=").nth(1).unwrap().to_owned()
}

/// How many messages the mail queue holds (delivered or not), whose key starts with
/// `prefix` (`connexion:` for sign-in links, `""` for all).
pub fn queued(w: &World, prefix: &str) -> usize {
    use diesel::prelude::*;
    use broker_store::schema::mail_queue as q;
    let keys: Vec<String> = w.t.db.read(|c| Ok(q::table.select(q::idempotency_key).load(c)?)).unwrap();
    keys.iter().filter(|k| k.starts_with(prefix)).count()
}

/// The sign-in link of the first message to `email` received after the first `before`
/// ones (messages go out from the mail queue, in the background: other messages may come
/// before it).
pub fn wait_for_link(w: &World, email: &str, before: usize) -> String {
    let prefix = format!("{ISSUER}/connexion/lien?jeton=");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let found = w.smtp.received().into_iter().skip(before).find_map(|m| (m.rcpt_to == vec![email.to_owned()]).then(|| m.find_link(&prefix)).flatten());
        if let Some(link) = found {
            return link;
        }
        assert!(std::time::Instant::now() < deadline, "no sign-in link e-mailed to {email}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The messages received whose subject contains `subject`, once at least `n` arrived
/// (at most 10 s), and after a short while more to see any extra one.
pub fn wait_for_subject(w: &World, subject: &str, n: usize) -> Vec<broker_testkit::smtp::Received> {
    let matching = || w.smtp.received().into_iter().filter(|m| m.subject().is_some_and(|s| s.contains(subject))).collect::<Vec<_>>();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while matching().len() < n && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(500));
    matching()
}

