//! A broker to play against, as FranceConnect meets it: its storage (the embedded
//! default, a SQLite file with the in-process cache, or PostgreSQL and Redis), data
//! seeded through `broker admin`, a development clock the tests move forward, and an
//! aidant's browser driven over HTTP (forms, cookies, redirects not followed).

use crate::{broker_bin, Broker};
use broker_core::totp::{Seed, APP_STEP, DIGITS};
use broker_core::Timestamp;
use broker_testkit::{redis_url, TestDb};
use serde_json::Value;
use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use url::Url;

/// Where the broker keeps its data.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// The embedded default: a SQLite file and the in-process cache.
    Sqlite,
    /// PostgreSQL and Redis (a fresh database and a unique cache prefix per test).
    Postgres,
}

/// Starts `n` brokers with `env`, every one after the first on the first one's issuer
/// (one service behind a load balancer).
pub fn start_brokers(env: &[(String, String)], n: usize) -> Vec<Broker> {
    let mut brokers: Vec<Broker> = Vec::new();
    for _ in 0..n {
        let mut e: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let issuer = brokers.first().map(|b| b.issuer.clone());
        if let Some(i) = &issuer {
            e.push(("AC_ISSUER", i));
        }
        brokers.push(Broker::start(&e));
    }
    brokers
}

/// Writes the development clock's offset (`AC_DEV_CLOCK_OFFSET_FILE`): written aside then
/// renamed, so that a broker never reads a half-written offset.
pub fn write_clock(file: &std::path::Path, offset: i64) {
    let mut tmp = file.as_os_str().to_owned();
    tmp.push(".tmp");
    std::fs::write(&tmp, offset.to_string()).unwrap();
    std::fs::rename(&tmp, file).unwrap();
}

impl Backend {
    /// Adds the database (and on PostgreSQL, Redis and a fresh cache prefix) settings of
    /// this backend to `env`: a SQLite file in `dir`, or a fresh PostgreSQL database,
    /// returned so that it lives as long as the test.
    pub fn store_env(self, env: &mut Vec<(String, String)>, dir: &std::path::Path, prefix: &str) -> Option<TestDb> {
        match self {
            Backend::Sqlite => {
                env.push(("DATABASE_URL".into(), format!("sqlite://{}", dir.join("b.sqlite3").display())));
                None
            }
            Backend::Postgres => {
                let t = TestDb::postgres_url_only();
                env.push(("DATABASE_URL".into(), t.url.clone()));
                env.push(("REDIS_URL".into(), redis_url()));
                env.push(("AC_CACHE_PREFIX".into(), format!("ac-{prefix}-{}:", hex::encode(rand::random::<[u8; 8]>()))));
                Some(t)
            }
        }
    }
}

/// The address FranceConnect's core registers as its callback.
pub const CALLBACK: &str = "https://fc.exemple.gouv.fr/api/v2/oidc-callback";
/// A second callback registered for the same client.
pub const OTHER_CALLBACK: &str = "https://fc.exemple.gouv.fr/api/v2/oidc-callback-secours";
/// The core's post-logout callback.
pub const LOGOUT_CALLBACK: &str = "https://fc.exemple.gouv.fr/api/v2/client/logout-callback";

pub struct Aidant {
    pub id: i64,
    pub email: String,
    pub seed: Seed,
    pub organisation: i64,
}

/// A usager as registered, with the identité pivot the broker must disclose.
#[derive(Clone, Debug)]
pub struct Usager {
    pub id: i64,
    pub sub: String,
    pub given_name: String,
    pub family_name: String,
    pub preferred_username: Option<String>,
    pub birthdate: String,
    pub gender: String,
    pub birthplace: String,
    pub birthcountry: String,
    pub email: String,
}

pub struct Mandat {
    pub id: i64,
    /// (autorisation id, démarche key)
    pub autorisations: Vec<(i64, String)>,
}

impl Mandat {
    pub fn autorisation(&self, demarche: &str) -> i64 {
        self.autorisations.iter().find(|(_, d)| d == demarche).map(|(id, _)| *id).unwrap_or_else(|| panic!("no autorisation for {demarche}"))
    }
}

/// A client registered with `broker admin client create`.
#[derive(Clone, Debug)]
pub struct Registration {
    pub client_id: String,
    pub secret: String,
    /// ES256, RS256 or HS256.
    pub alg: String,
    /// json or jwt.
    pub userinfo: String,
    pub redirect_uris: Vec<String>,
    pub post_logout_uris: Vec<String>,
}

/// One or more `broker serve` processes on one storage, with the same keys and issuer.
pub struct Idp {
    /// Dropped first: the processes stop before their database goes.
    pub brokers: Vec<Broker>,
    pg: Option<TestDb>,
    pub backend: Backend,
    env: Vec<(String, String)>,
    offset: Arc<AtomicI64>,
    last_step: AtomicI64,
    outbox: PathBuf,
    clock_file: PathBuf,
    _work: tempfile::TempDir,
}

impl Idp {
    /// One broker on `backend`.
    pub fn start(backend: Backend) -> Idp {
        Idp::start_instances(backend, 1)
    }

    /// `n` brokers sharing storage, keys, cache prefix and issuer (the first one's).
    pub fn start_instances(backend: Backend, n: usize) -> Idp {
        Idp::start_with_env(backend, n, |_, _| None)
    }

    /// The same, with the environment of the brokers and of the CLI changed before
    /// anything starts: `edit(name, value)` returns a replacement value, or `None` to keep
    /// it (e.g. DATABASE_URL and REDIS_URL sent through a [`crate::proxy::Proxy`]).
    pub fn start_with_env(backend: Backend, n: usize, edit: impl Fn(&str, &str) -> Option<String>) -> Idp {
        let work = tempfile::tempdir().unwrap();
        let outbox = work.path().join("outbox");
        let clock_file = work.path().join("clock-offset");
        std::fs::write(&clock_file, "0").unwrap();
        let mut env: Vec<(String, String)> = vec![
            ("AC_KEYS_DIR".into(), work.path().join("keys").display().to_string()),
            ("AC_OUTBOX_DIR".into(), outbox.display().to_string()),
            ("AC_DEV_CLOCK_OFFSET_FILE".into(), clock_file.display().to_string()),
        ];
        let pg = backend.store_env(&mut env, work.path(), "conformance");
        for (k, v) in env.iter_mut() {
            if let Some(new) = edit(k, v) {
                *v = new;
            }
        }
        let brokers = start_brokers(&env, n);
        Idp {
            brokers,
            pg,
            backend,
            env,
            offset: Arc::new(AtomicI64::new(0)),
            last_step: AtomicI64::new(0),
            outbox,
            clock_file,
            _work: work,
        }
    }

    /// The issuer every instance announces.
    pub fn issuer(&self) -> &str {
        &self.brokers[0].issuer
    }

    pub fn database_url(&self) -> &str {
        &self.env.iter().find(|(k, _)| k == "DATABASE_URL").unwrap().1
    }

    /// What every instance printed so far on stderr (to explain a failure).
    pub fn logs(&self) -> String {
        self.brokers.iter().map(|b| b.stderr_so_far()).collect::<Vec<_>>().join("\n----\n")
    }

    // ---- the development clock ------------------------------------------------------

    /// The shared offset, in seconds, of the brokers' clock.
    pub fn offset(&self) -> Arc<AtomicI64> {
        self.offset.clone()
    }

    /// Moves the brokers' clock forward by `seconds`.
    pub fn advance(&self, seconds: i64) {
        let o = self.offset.fetch_add(seconds, Ordering::SeqCst) + seconds;
        write_clock(&self.clock_file, o);
    }

    /// The brokers' time.
    pub fn now(&self) -> Timestamp {
        Timestamp::now().plus_seconds(self.offset.load(Ordering::SeqCst))
    }

    /// A TOTP code of a time step never used before (each step is accepted once): when
    /// the current step has served, the clock moves on to the next one.
    pub fn totp(&self, aidant: &Aidant) -> String {
        let step = |at: Timestamp| at.micros() / 1_000_000 / APP_STEP as i64;
        let last = self.last_step.load(Ordering::SeqCst);
        if step(self.now()) <= last {
            let into = self.now().micros() / 1_000_000 % APP_STEP as i64;
            self.advance((last - step(self.now())) * APP_STEP as i64 + APP_STEP as i64 - into + 1);
        }
        let now = self.now();
        self.last_step.store(step(now), Ordering::SeqCst);
        aidant.seed.code_at(APP_STEP, DIGITS, now)
    }

    // ---- the operator's CLI ------------------------------------------------------------

    /// `broker --json ARGS` on this storage and keys: the JSON printed, or the error.
    pub fn cli(&self, args: &[&str], extra_env: &[(&str, &str)]) -> Result<Value, String> {
        let o = Command::new(broker_bin())
            .arg("--json")
            .args(args)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("AC_LOG", "warn")
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .envs(extra_env.iter().copied())
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&o.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&o.stderr).into_owned();
        if !o.status.success() {
            return Err(format!("broker {args:?} exited with {}: {stderr}{stdout}", o.status));
        }
        serde_json::from_str(stdout.trim()).map_err(|e| format!("broker {args:?}: not JSON ({e}): {stdout}"))
    }

    pub fn cli_ok(&self, args: &[&str]) -> Value {
        self.cli(args, &[]).unwrap_or_else(|e| panic!("{e}"))
    }

    /// A structure; `demarches` restricts its allowed démarches (all by default).
    pub fn organisation(&self, name: &str, demarches: Option<&str>) -> i64 {
        let siret = siret();
        let mut args = vec!["admin", "organisation", "create", "--name", name, "--siret", &siret, "--address", "1 place de la Mairie, 59200 Tourcoing"];
        if let Some(d) = demarches {
            args.extend(["--demarches", d]);
        }
        self.cli_ok(&args)["id"].as_i64().expect("organisation id")
    }

    /// An aidant of `organisation` with a TOTP application.
    pub fn aidant(&self, organisation: i64) -> Aidant {
        let email = format!("aidant-{}@france-services.exemple.fr", hex::encode(rand::random::<[u8; 4]>()));
        let org = organisation.to_string();
        let created = self.cli_ok(&["admin", "aidant", "create", "--organisation", &org, "--email", &email, "--first-name", "Nadia", "--last-name", "Benali", "--profession", "Conseillère numérique"]);
        let enrolled = self.cli_ok(&["admin", "totp", "enroll-app", "--aidant", &email]);
        let seed = Seed::from_base32(enrolled["secret"].as_str().expect("TOTP secret")).expect("base32 secret");
        Aidant { id: created["id"].as_i64().expect("aidant id"), email, seed, organisation }
    }

    /// Registers a usager born in Tourcoing (as if FranceConnect had identified them).
    pub fn usager(&self, given_name: &str, family_name: &str, birthdate: &str) -> Usager {
        self.register_usager(Usager {
            id: 0,
            sub: String::new(),
            given_name: given_name.into(),
            family_name: family_name.into(),
            preferred_username: None,
            birthdate: birthdate.into(),
            gender: "female".into(),
            birthplace: "59599".into(),
            birthcountry: "99100".into(),
            email: format!("{}.{}@courriel.exemple.fr", given_name.to_lowercase().replace(' ', "-"), family_name.to_lowercase()),
        })
    }

    /// Registers the usager `u` (its `id` and `sub` are set from the answer).
    pub fn register_usager(&self, mut u: Usager) -> Usager {
        let fc_sub = format!("fc-{}", hex::encode(rand::random::<[u8; 16]>()));
        let mut args = vec![
            "admin", "usager", "create", "--given-name", &u.given_name, "--family-name", &u.family_name, "--birthdate", &u.birthdate, "--gender", &u.gender,
            "--birthplace", &u.birthplace, "--birthcountry", &u.birthcountry, "--email", &u.email, "--fc-sub", &fc_sub,
        ];
        if let Some(p) = &u.preferred_username {
            args.extend(["--preferred-username", p.as_str()]);
        }
        let out = self.cli_ok(&args);
        u.id = out["id"].as_i64().expect("usager id");
        u.sub = out["sub"].as_str().expect("usager sub").to_owned();
        u
    }

    /// A mandat of a year signed by `aidant` for `usager` on `demarches` (comma-separated).
    pub fn mandat(&self, aidant: &Aidant, usager: &Usager, demarches: &str) -> Mandat {
        let id = usager.id.to_string();
        let out = self.cli_ok(&["admin", "mandat", "create", "--aidant", &aidant.email, "--usager", &id, "--demarches", demarches, "--duree", "365"]);
        let autorisations = out["autorisations"]
            .as_array()
            .expect("autorisations")
            .iter()
            .map(|a| (a["id"].as_i64().unwrap(), a["demarche"].as_str().unwrap().to_owned()))
            .collect();
        Mandat { id: out["mandat_id"].as_i64().expect("mandat id"), autorisations }
    }

    pub fn revoke(&self, aidant: &Aidant, autorisation: i64) {
        let id = autorisation.to_string();
        self.cli_ok(&["admin", "mandat", "revoke", "--aidant", &aidant.email, "--autorisation", &id]);
    }

    /// FranceConnect's registration: id_token `alg`, userinfo `json` or `jwt`, the two
    /// callbacks and the post-logout callback; with the public subject, so that a case
    /// can compare `sub` with the usager's broker id.
    pub fn client(&self, alg: &str, userinfo: &str) -> Registration {
        self.client_with(alg, userinfo, &["--subject-type", "public"])
    }

    /// A client registered with `alg`, `userinfo` and `extra` options; with no extra
    /// option, the defaults of `broker admin client create` (pairwise subjects, no `act`).
    pub fn client_with(&self, alg: &str, userinfo: &str, extra: &[&str]) -> Registration {
        let mut args = vec![
            "admin",
            "client",
            "create",
            "--name",
            "FranceConnect",
            "--redirect-uri",
            CALLBACK,
            OTHER_CALLBACK,
            "--post-logout-redirect-uri",
            LOGOUT_CALLBACK,
            "--id-token-alg",
            alg,
            "--userinfo",
            userinfo,
        ];
        args.extend_from_slice(extra);
        let out = self.cli_ok(&args);
        let list = |k: &str| out[k].as_array().unwrap().iter().map(|v| v.as_str().unwrap().to_owned()).collect::<Vec<_>>();
        Registration {
            client_id: out["client_id"].as_str().expect("client_id").to_owned(),
            secret: out["client_secret"].as_str().expect("client_secret").to_owned(),
            alg: out["id_token_alg"].as_str().unwrap().to_owned(),
            userinfo: out["userinfo"].as_str().unwrap().to_owned(),
            redirect_uris: list("redirect_uris"),
            post_logout_uris: list("post_logout_redirect_uris"),
        }
    }

    // ---- the journal ---------------------------------------------------------------------

    /// The journal entries with `action` (every entry committed so far is numbered).
    pub fn journal_entries(&self, action: &str) -> Vec<broker_core::journal::Record> {
        let opened;
        let db = match &self.pg {
            Some(t) => &t.db,
            None => {
                opened = broker_store::Db::open(&broker_store::DatabaseUrl::parse(self.database_url()), 1).unwrap();
                &opened
            }
        };
        let all = broker_testkit::journal(db, |c| broker_store::journal::page(c, 0, 100_000)).unwrap();
        all.into_iter().filter(|r| r.action == action).collect()
    }

    // ---- the aidant's browser ---------------------------------------------------------

    /// A browser sending each request to the next instance in turn.
    pub fn browser(&self) -> Browser {
        Browser { bases: self.brokers.iter().map(|b| b.base.clone()).collect(), issuer: self.issuer().to_owned(), next: 0, cookies: crate::CookieJar::default() }
    }

    /// Messages written to the outbox for `email`, oldest first: (file name, text).
    fn messages(&self, email: &str) -> Vec<(String, String)> {
        let Ok(dir) = std::fs::read_dir(&self.outbox) else { return Vec::new() };
        let mut found: Vec<(String, String)> = dir
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "json"))
            .filter_map(|p| {
                let v: Value = serde_json::from_slice(&std::fs::read(&p).ok()?).ok()?;
                (v["to"].as_str() == Some(email)).then(|| (p.file_name().unwrap().to_string_lossy().into_owned(), v["text"].as_str().unwrap_or("").to_owned()))
            })
            .collect();
        found.sort();
        found
    }

    /// Signs in at `/connexion?suite=…` (the page the broker sent the browser to): e-mail
    /// and TOTP code, then the e-mailed link and its confirmation. Returns the last answer
    /// (a redirect to `suite`).
    pub fn sign_in(&self, b: &mut Browser, aidant: &Aidant, connexion: &str) -> Page {
        let form = b.get(connexion);
        assert_eq!(form.status, 200, "sign-in form: {}", form.body);
        let suite = form.hidden("suite").unwrap_or_default();
        let before = self.messages(&aidant.email).len();
        let code = self.totp(aidant);
        let sent = b.post("/connexion", &[("csrf", &form.csrf()), ("email", &aidant.email), ("code", &code), ("suite", &suite)]);
        assert!(sent.shows("Consultez votre messagerie"), "sign-in refused ({}): {}", sent.status, sent.body);
        let deadline = Instant::now() + Duration::from_secs(10);
        let text = loop {
            let m = self.messages(&aidant.email);
            if m.len() > before {
                break m.last().unwrap().1.clone();
            }
            assert!(Instant::now() < deadline, "no sign-in e-mail in the outbox");
            std::thread::sleep(Duration::from_millis(50));
        };
        let prefix = format!("{}/connexion/lien?jeton=", self.issuer());
        let at = text.find(&prefix).unwrap_or_else(|| panic!("no sign-in link in: {text}"));
        let link: String = text[at..].chars().take_while(|c| !c.is_whitespace()).collect();
        let jeton = link.split("jeton=").nth(1).unwrap().to_owned();
        let confirm = b.get(&link);
        assert_eq!(confirm.status, 200, "link page: {}", confirm.body);
        let done = b.post("/connexion/lien", &[("csrf", &confirm.csrf()), ("jeton", &jeton)]);
        assert_eq!(done.status, 303, "link confirmation: {}", done.body);
        done
    }

    /// Proves a fresh second factor at `/reauthentification?suite=…`.
    pub fn reauthenticate(&self, b: &mut Browser, aidant: &Aidant, reauth: &str) -> Page {
        let form = b.get(reauth);
        assert_eq!(form.status, 200, "reauthentication form: {}", form.body);
        let suite = form.hidden("suite").unwrap_or_default();
        let code = self.totp(aidant);
        let done = b.post("/reauthentification", &[("csrf", &form.csrf()), ("code", &code), ("suite", &suite)]);
        assert_eq!(done.status, 303, "reauthentication: {}", done.body);
        done
    }

    /// Sends the browser to an authorization URL of the client; on success the broker
    /// answers with the flow's page (`/autorisation/{flow}`).
    pub fn authorize(&self, b: &mut Browser, url: &Url) -> Page {
        b.get(url.as_str())
    }

    /// Opens the flow page, proving who the aidant is as the broker asks (sign-in, or a
    /// fresh second factor), up to the page "Choisir l'usager".
    pub fn open_flow(&self, b: &mut Browser, aidant: &Aidant, flow: &str) -> (Page, Proof) {
        let mut proof = Proof::None;
        let mut page = b.get(flow);
        for _ in 0..2 {
            let Some(loc) = page.location.clone() else { break };
            if loc.starts_with("/connexion?") && proof == Proof::None {
                let back = self.sign_in(b, aidant, &loc);
                assert_eq!(back.location.as_deref(), Some(flow), "back to the flow after signing in");
                proof = Proof::SignIn;
            } else if loc.starts_with("/reauthentification?") && proof == Proof::None {
                let back = self.reauthenticate(b, aidant, &loc);
                assert_eq!(back.location.as_deref(), Some(flow), "back to the flow after reauthentication");
                proof = Proof::Reauthentication;
            } else {
                break;
            }
            page = b.get(flow);
        }
        (page, proof)
    }

    /// The whole aidant's part: authorize, prove who they are, pick the usager and
    /// (when asked) the démarche. Returns the callback the browser is sent to.
    pub fn run_flow(&self, b: &mut Browser, aidant: &Aidant, url: &Url, usager: &Usager, demarche: Option<&str>) -> Callback {
        let start = self.authorize(b, url);
        let flow = start.flow().unwrap_or_else(|| panic!("no flow started ({}): {:?} {}", start.status, start.location, start.body));
        let (page, _) = self.open_flow(b, aidant, &flow);
        assert_eq!(page.status, 200, "usager page: {:?} {}", page.location, page.body);
        let next = self.pick_usager(b, &flow, &page, usager);
        if let Some(cb) = next.callback() {
            assert!(demarche.is_none(), "the démarche page was skipped though a choice was expected");
            return cb;
        }
        let d = demarche.expect("a démarche to choose");
        assert_eq!(next.location.as_deref(), Some(format!("{flow}/demarche").as_str()), "{}", next.body);
        let page = b.get(&format!("{flow}/demarche"));
        assert_eq!(page.status, 200, "démarche page: {}", page.body);
        self.pick_demarche(b, &flow, &page, d).callback().expect("a callback after the démarche")
    }

    pub fn pick_usager(&self, b: &mut Browser, flow: &str, page: &Page, usager: &Usager) -> Page {
        let id = usager.id.to_string();
        assert!(page.button_values("usager").contains(&id), "usager {id} not offered: {}", page.body);
        b.post(&format!("{flow}/usager"), &[("csrf", &page.csrf()), ("usager", &id)])
    }

    pub fn pick_demarche(&self, b: &mut Browser, flow: &str, page: &Page, demarche: &str) -> Page {
        b.post(&format!("{flow}/demarche"), &[("csrf", &page.csrf()), ("demarche", demarche)])
    }
}

/// How the aidant proved who they were to reach the flow.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Proof {
    None,
    SignIn,
    Reauthentication,
}

/// A valid SIRET (Luhn), random.
fn siret() -> String {
    let mut digits: Vec<u32> = (0..13).map(|i| if i == 0 { 8 } else { rand::random::<u32>() % 10 }).collect();
    let weighted = |i: usize, d: u32| if i % 2 == 0 { let x = d * 2; if x > 9 { x - 9 } else { x } } else { d };
    let sum: u32 = digits.iter().enumerate().map(|(i, &d)| weighted(i, d)).sum();
    digits.push((10 - sum % 10) % 10);
    digits.iter().map(|d| char::from_digit(*d, 10).unwrap()).collect()
}

/// An answer as a browser gets it (redirects are not followed).
#[derive(Debug)]
pub struct Page {
    pub status: u16,
    pub location: Option<String>,
    pub content_type: Option<String>,
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

    /// The value of the first `<input … name="NAME" value="…">`.
    pub fn hidden(&self, name: &str) -> Option<String> {
        let at = self.body.find(&format!("name=\"{name}\" value=\""))?;
        let rest = &self.body[at + name.len() + 15..];
        Some(unescape(&rest[..rest.find('"')?]))
    }

    pub fn csrf(&self) -> String {
        self.hidden("csrf").unwrap_or_else(|| panic!("no csrf field in: {}", self.body))
    }

    /// The values of every `name="NAME" value="…"` (submit buttons).
    pub fn button_values(&self, name: &str) -> Vec<String> {
        let needle = format!("name=\"{name}\" value=\"");
        self.body
            .match_indices(&needle)
            .filter_map(|(i, _)| {
                let rest = &self.body[i + needle.len()..];
                rest.find('"').map(|e| unescape(&rest[..e]))
            })
            .collect()
    }

    /// The flow page a successful `/authorize` sends the browser to.
    pub fn flow(&self) -> Option<String> {
        let loc = self.location.as_deref().filter(|_| self.status == 303)?;
        let id = loc.strip_prefix("/autorisation/")?;
        (id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit())).then(|| loc.to_owned())
    }

    /// The callback to the client this answer redirects to (absolute URL), if any.
    pub fn callback(&self) -> Option<Callback> {
        let loc = self.location.as_deref().filter(|_| self.status == 303)?;
        let url = Url::parse(loc).ok()?;
        Some(Callback::new(url))
    }
}

/// A redirect to the client, with its query parameters.
#[derive(Debug, Clone)]
pub struct Callback {
    pub url: Url,
    pub params: HashMap<String, String>,
    /// Every parameter name, in order, repeated as often as given.
    pub names: Vec<String>,
}

impl Callback {
    pub fn new(url: Url) -> Self {
        let names = url.query_pairs().map(|(k, _)| k.into_owned()).collect();
        let params = url.query_pairs().into_owned().collect();
        Callback { url, params, names }
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.params.get(name).map(String::as_str)
    }

    /// The address without its query (what the client registered).
    pub fn target(&self) -> String {
        let mut u = self.url.clone();
        u.set_query(None);
        u.to_string()
    }
}

/// A browser: keeps cookies, does not follow redirects, sends each request to the next
/// instance in turn (a load balancer without affinity).
pub struct Browser {
    bases: Vec<String>,
    issuer: String,
    next: usize,
    cookies: crate::CookieJar,
}

impl Browser {
    fn agent() -> ureq::Agent {
        ureq::Agent::config_builder().http_status_as_error(false).max_redirects(0).timeout_global(Some(Duration::from_secs(15))).build().into()
    }

    /// The instance for the next request, and the path of `target` (a path, or an
    /// absolute URL of the issuer).
    fn route(&mut self, target: &str) -> String {
        let path = target.strip_prefix(&self.issuer).unwrap_or(target);
        assert!(path.starts_with('/'), "not an address of the broker: {target}");
        let base = &self.bases[self.next % self.bases.len()];
        self.next += 1;
        format!("{base}{path}")
    }

    fn cookie_header(&self) -> Option<String> {
        self.cookies.header()
    }

    fn keep(&mut self, res: &ureq::http::Response<ureq::Body>) {
        for h in res.headers().get_all("set-cookie") {
            if let Ok(h) = h.to_str() {
                self.cookies.keep(h);
            }
        }
    }

    fn page(&mut self, mut res: ureq::http::Response<ureq::Body>) -> Page {
        self.keep(&res);
        let header = |n: &str| res.headers().get(n).and_then(|v| v.to_str().ok()).map(str::to_owned);
        let (location, content_type) = (header("location"), header("content-type"));
        Page { status: res.status().as_u16(), location, content_type, body: res.body_mut().read_to_string().unwrap_or_default() }
    }

    pub fn get(&mut self, target: &str) -> Page {
        let url = self.route(target);
        let mut req = Self::agent().get(&url);
        if let Some(c) = self.cookie_header() {
            req = req.header("Cookie", &c);
        }
        let res = req.call().unwrap_or_else(|e| panic!("GET {url}: {e}"));
        self.page(res)
    }

    /// GETs every target at the same moment, each request carrying the cookies held now
    /// (as a browser's tabs do), then keeps the cookies of every answer, in order.
    pub fn get_all_at_once(&mut self, targets: &[String]) -> Vec<Page> {
        let cookies = self.cookie_header();
        let urls: Vec<String> = targets.iter().map(|t| self.route(t)).collect();
        let barrier = std::sync::Arc::new(std::sync::Barrier::new(urls.len()));
        let handles: Vec<_> = urls
            .into_iter()
            .map(|url| {
                let (cookies, barrier) = (cookies.clone(), barrier.clone());
                std::thread::spawn(move || {
                    let mut req = Self::agent().get(&url);
                    if let Some(c) = &cookies {
                        req = req.header("Cookie", c);
                    }
                    barrier.wait();
                    req.call().unwrap_or_else(|e| panic!("GET {url}: {e}"))
                })
            })
            .collect();
        let answers: Vec<_> = handles.into_iter().map(|h| h.join().expect("request thread")).collect();
        answers.into_iter().map(|res| self.page(res)).collect()
    }

    pub fn post(&mut self, target: &str, form: &[(&str, &str)]) -> Page {
        let url = self.route(target);
        let mut req = Self::agent().post(&url);
        if let Some(c) = self.cookie_header() {
            req = req.header("Cookie", &c);
        }
        let res = req.send_form(form.iter().copied()).unwrap_or_else(|e| panic!("POST {url}: {e}"));
        self.page(res)
    }
}
