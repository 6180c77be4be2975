//! The broker while its cache (Redis) or its database (PostgreSQL) is gone, then back:
//! pages answer a French maintenance page at once, JSON endpoints keep JSON errors,
//! /readyz names what is missing, and the service resumes without a restart.
//!
//! The real servers are shared with other tests and never stopped: the broker reaches
//! them through a [`Proxy`] each, which the test cuts and restores. PostgreSQL and Redis
//! only: the embedded default has no server to lose.

use broker_testkit::{pg_admin_url, redis_url};
use conformance_tests::fc::Core;
use conformance_tests::idp::{Backend, Idp, CALLBACK};
use conformance_tests::proxy::Proxy;
use serde_json::Value;
use std::time::{Duration, Instant};
use url::Url;

/// The longest a page may take while a backend is down.
const QUICK: Duration = Duration::from_secs(3);
/// How long the service may take to resume once a backend is back.
const RESUME: Duration = Duration::from_secs(10);

/// "host:port" of a server URL, and the same URL sent to 127.0.0.1:`port` instead
/// (user, database name, Redis db and parameters kept).
fn through(url: &str, default_port: u16, port: u16) -> (String, String) {
    let mut u = Url::parse(url).unwrap_or_else(|e| panic!("{url}: {e}"));
    let target = format!("{}:{}", u.host_str().expect("a host"), u.port().unwrap_or(default_port));
    u.set_host(Some("127.0.0.1")).unwrap();
    u.set_port(Some(port)).unwrap();
    (target, u.to_string())
}

fn target_of(url: &str, default_port: u16) -> String {
    through(url, default_port, 1).0
}

/// An HTTP answer and how long it took.
struct Answer {
    status: u16,
    headers: ureq::http::HeaderMap,
    body: String,
    took: Duration,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

#[derive(Clone, Copy)]
enum Req<'a> {
    Get,
    Form(&'a [(&'a str, &'a str)]),
    Bearer(&'a str),
}

/// One request (redirects not followed), timed and printed; a transport error is
/// status 0 with the error as body.
fn call(base: &str, step: &str, path: &str, cookie: Option<&str>, how: Req) -> Answer {
    let agent: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).max_redirects(0).timeout_global(Some(Duration::from_secs(30))).build().into();
    let url = format!("{base}{path}");
    let started = Instant::now();
    let res = match how {
        Req::Get | Req::Bearer(_) => {
            let mut r = agent.get(&url);
            if let Some(c) = cookie {
                r = r.header("Cookie", c);
            }
            if let Req::Bearer(t) = how {
                r = r.header("Authorization", &format!("Bearer {t}"));
            }
            r.call()
        }
        Req::Form(form) => {
            let mut r = agent.post(&url);
            if let Some(c) = cookie {
                r = r.header("Cookie", c);
            }
            r.send_form(form.iter().copied())
        }
    };
    let a = match res {
        Ok(mut r) => {
            let status = r.status().as_u16();
            let headers = r.headers().clone();
            let body = r.body_mut().read_to_string().unwrap_or_default();
            Answer { status, headers, body, took: started.elapsed() }
        }
        Err(e) => Answer { status: 0, headers: Default::default(), body: format!("transport error: {e}"), took: started.elapsed() },
    };
    let shown: String = path.chars().take(60).collect();
    let who = if cookie.is_some() { "with session" } else { "no cookie" };
    let h = |n: &str| a.header(n).map(|v| v.chars().take(40).collect::<String>()).unwrap_or_else(|| "-".into());
    eprintln!(
        "[{step}] {shown} ({who}) -> {} in {} ms; content-type={} retry-after={} csp={} x-frame-options={} x-content-type-options={} body={} bytes",
        a.status,
        a.took.as_millis(),
        h("content-type"),
        h("retry-after"),
        if a.header("content-security-policy").is_some() { "yes" } else { "-" },
        h("x-frame-options"),
        h("x-content-type-options"),
        a.body.len(),
    );
    a
}

/// Failures gathered along the way (one line per answer), so that every step runs and
/// reports.
#[derive(Default)]
struct Checks(Vec<String>);

impl Checks {
    /// Records `what` with the problems found in one answer, if any.
    fn answer(&mut self, what: String, problems: Vec<String>) {
        if !problems.is_empty() {
            let line = format!("{what}: {}", problems.join("; "));
            eprintln!("    FAILED {line}");
            self.0.push(line);
        }
    }

    fn check(&mut self, ok: bool, what: impl FnOnce() -> String) {
        if !ok {
            self.answer(what(), vec!["failed".into()]);
        }
    }
}

/// The page's title, or the start of the body, on one line.
fn snippet(s: &str) -> String {
    if let Some(t) = s.split_once("<title>").and_then(|(_, r)| r.split_once("</title>")) {
        return format!("title {:?}", t.0.trim());
    }
    format!("body {:?}", s.chars().take(120).collect::<String>())
}

/// A page while a backend is down: 503, Retry-After, a French HTML maintenance page with
/// the security headers of every page, at once.
fn maintenance_page(c: &mut Checks, step: &str, what: &str, a: &Answer) {
    let mut p = Vec::new();
    let mut need = |ok: bool, problem: String| {
        if !ok {
            p.push(problem)
        }
    };
    need(a.status == 503, format!("status {} ({})", a.status, snippet(&a.body)));
    need(a.header("retry-after").is_some_and(|v| !v.trim().is_empty()), "no Retry-After".into());
    need(a.header("content-type").is_some_and(|v| v.starts_with("text/html")), format!("content-type {:?}", a.header("content-type")));
    need(a.body.contains("<html lang=\"fr\""), "no <html lang=\"fr\"".into());
    need(a.body.to_lowercase().contains("momentanément indisponible"), "no « momentanément indisponible »".into());
    need(a.header("content-security-policy").is_some_and(|v| v.contains("frame-ancestors 'none'")), "no CSP frame-ancestors 'none'".into());
    need(a.header("x-frame-options") == Some("DENY"), format!("X-Frame-Options {:?}", a.header("x-frame-options")));
    need(a.header("x-content-type-options") == Some("nosniff"), format!("X-Content-Type-Options {:?}", a.header("x-content-type-options")));
    need(a.took < QUICK, format!("took {} ms", a.took.as_millis()));
    c.answer(format!("[{step}] {what}"), p);
}

/// /readyz names what is missing, at once.
fn readiness(c: &mut Checks, step: &str, a: &Answer, database: &str, cache: &str) {
    let v: Value = serde_json::from_str(&a.body).unwrap_or(Value::Null);
    let mut p = Vec::new();
    if a.status != 503 {
        p.push(format!("status {}", a.status));
    }
    if v["database"] != database || v["cache"] != cache {
        p.push(format!("database {database} and cache {cache} expected: {}", a.body));
    }
    if a.took >= QUICK {
        p.push(format!("took {} ms", a.took.as_millis()));
    }
    c.answer(format!("[{step}] /readyz"), p);
}

/// JSON endpoints keep JSON errors: `/token` a JSON `error`, `/userinfo` JSON or a bare 401.
fn json_errors(c: &mut Checks, step: &str, token: &Answer, userinfo: &Answer) {
    let html = |a: &Answer| a.header("content-type").is_some_and(|v| v.starts_with("text/html")) || a.body.contains("<html");
    let json = |a: &Answer| a.header("content-type").is_some_and(|v| v.starts_with("application/json")) && serde_json::from_str::<Value>(&a.body).is_ok();
    let v: Value = serde_json::from_str(&token.body).unwrap_or(Value::Null);
    let mut p = Vec::new();
    if !(400..600).contains(&token.status) {
        p.push(format!("status {}", token.status));
    }
    if html(token) || !json(token) || !v["error"].is_string() {
        p.push(format!("not a JSON error ({:?}): {}", token.header("content-type"), snippet(&token.body)));
    }
    c.answer(format!("[{step}] /token"), p);
    let mut p = Vec::new();
    let bare_401 = userinfo.status == 401 && userinfo.body.trim().is_empty();
    if !(400..600).contains(&userinfo.status) {
        p.push(format!("status {}", userinfo.status));
    }
    if html(userinfo) || !(json(userinfo) || bare_401) {
        p.push(format!("neither JSON nor a bare 401 ({:?}): {}", userinfo.header("content-type"), snippet(&userinfo.body)));
    }
    c.answer(format!("[{step}] /userinfo"), p);
}

/// Polls /readyz and /connexion until both answer 200, up to [`RESUME`].
fn resumes(c: &mut Checks, base: &str, step: &str) {
    let started = Instant::now();
    loop {
        let ready = call(base, step, "/readyz", None, Req::Get).status == 200;
        if ready && call(base, step, "/connexion", None, Req::Get).status == 200 {
            eprintln!("[{step}] resumed {} ms after the restore", started.elapsed().as_millis());
            return;
        }
        if started.elapsed() > RESUME {
            c.check(false, || format!("[{step}] /readyz and /connexion not both 200 within {} s", RESUME.as_secs()));
            return;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

#[test]
fn pages_answer_a_maintenance_page_while_redis_then_postgresql_are_down() {
    let redis = Proxy::start(&target_of(&redis_url(), 6379));
    let pg = Proxy::start(&target_of(&pg_admin_url(), 5432));
    // Declared after the proxies: the broker stops before they go.
    let mut idp = Idp::start_with_env(Backend::Postgres, 1, |k, v| match k {
        "DATABASE_URL" => Some(through(v, 5432, pg.port()).1),
        "REDIS_URL" => Some(through(v, 6379, redis.port()).1),
        _ => None,
    });
    let base = idp.brokers[0].base.clone();
    let pid = idp.brokers[0].pid();
    let mut c = Checks::default();

    // ---- 1. everything up ------------------------------------------------------------------
    let org = idp.organisation("France Services Tourcoing", None);
    let aidant = idp.aidant(org);
    let usager = idp.usager("Jeanne Marie", "Martin", "1952-03-14");
    idp.mandat(&aidant, &usager, "argent,famille,logement");
    let client = idp.client("ES256", "json");
    let core = Core::discover(&idp, &client);

    // The harness browser keeps its cookies to itself: it goes through a recording proxy,
    // whose log gives the session cookie for the requests that need every header.
    let web = Proxy::recording(base.trim_start_matches("http://"));
    let real = std::mem::replace(&mut idp.brokers[0].base, format!("http://127.0.0.1:{}", web.port()));
    let mut b = idp.browser();
    idp.brokers[0].base = real;
    let issuer = idp.issuer().to_owned();
    let authorize = || core.auth_request(None).url.as_str()[issuer.len()..].to_owned();
    let start = idp.authorize(&mut b, &core.auth_request(None).url);
    let flow = start.flow().unwrap_or_else(|| panic!("no flow started ({}): {:?} {}", start.status, start.location, start.body));
    let (page, _) = idp.open_flow(&mut b, &aidant, &flow);
    assert_eq!(page.status, 200, "usager page: {:?} {}", page.location, page.body);
    let sent = web.sent();
    let cookie = sent
        .lines()
        .filter_map(|l| l.split_once(':').filter(|(k, _)| k.eq_ignore_ascii_case("cookie")).map(|(_, v)| v.trim().to_owned()))
        .last()
        .expect("the browser sent its cookies");
    assert!(cookie.contains("ac_session="), "{cookie}");
    let session = Some(cookie.as_str());

    let step = "1 up";
    let a = call(&base, step, "/readyz", None, Req::Get);
    assert_eq!(a.status, 200, "{}", a.body);
    for who in [session, None] {
        let a = call(&base, step, "/", who, Req::Get);
        assert_eq!(a.status, 200);
        assert!(a.header("content-security-policy").is_some_and(|v| v.contains("frame-ancestors 'none'")));
    }
    assert_eq!(call(&base, step, "/connexion", None, Req::Get).status, 200);
    assert_eq!(call(&base, step, "/espace", session, Req::Get).status, 200);
    assert_eq!(call(&base, step, &flow, session, Req::Get).status, 200);
    let a = call(&base, step, &authorize(), session, Req::Get);
    assert!(a.status == 303 && a.header("location").is_some_and(|l| l.starts_with("/autorisation/")), "{} {:?}", a.status, a.header("location"));

    let token_form = [
        ("grant_type", "authorization_code"),
        ("code", "code-inconnu-0123456789abcdef0123456789abcdef"),
        ("redirect_uri", CALLBACK),
        ("client_id", client.client_id.as_str()),
        ("client_secret", client.secret.as_str()),
    ];
    let bogus_bearer = "jeton-inconnu-0123456789abcdef0123456789abcdef";
    let label = |path: &str, who: Option<&str>| format!("{} ({})", path.chars().take(20).collect::<String>(), if who.is_some() { "with session" } else { "no cookie" });
    let pages = |step: &str, c: &mut Checks| {
        let asked: Vec<(String, Option<&str>)> = [session, None]
            .into_iter()
            .flat_map(|who| ["/connexion".to_owned(), authorize(), flow.clone(), "/espace".to_owned(), "/".to_owned()].map(|p| (p, who)))
            .collect();
        for (path, who) in &asked {
            let a = call(&base, step, path, *who, Req::Get);
            maintenance_page(c, step, &label(path, *who), &a);
        }
        // The same pages at once, as several browsers ask them: more than the
        // connections a pool kept, and still no answer may wait.
        let burst = format!("{step}, at once");
        let answers: Vec<Answer> = std::thread::scope(|s| {
            let asking: Vec<_> = asked.iter().map(|(path, who)| s.spawn(|| call(&base, &burst, path, *who, Req::Get))).collect();
            asking.into_iter().map(|h| h.join().expect("request thread")).collect()
        });
        for ((path, who), a) in asked.iter().zip(&answers) {
            maintenance_page(c, &burst, &label(path, *who), a);
        }
        let token = call(&base, step, "/token", None, Req::Form(&token_form));
        let userinfo = call(&base, step, "/userinfo", None, Req::Bearer(bogus_bearer));
        json_errors(c, step, &token, &userinfo);
    };

    // ---- 2. Redis gone ---------------------------------------------------------------------
    redis.cut();
    let step = "2 redis down";
    pages(step, &mut c);
    let a = call(&base, step, "/readyz", None, Req::Get);
    readiness(&mut c, step, &a, "ok", "unreachable");

    // ---- 3. Redis back ---------------------------------------------------------------------
    redis.restore();
    resumes(&mut c, &base, "3 redis back");
    // The session lives in Redis, which kept it: /espace then reads the database.
    let a = call(&base, "3 redis back", "/espace", session, Req::Get);
    c.check(a.status == 200, || format!("[3 redis back] /espace with the session: {}", a.status));

    // ---- 4. PostgreSQL gone ----------------------------------------------------------------
    pg.cut();
    let step = "4 postgresql down";
    pages(step, &mut c);
    let a = call(&base, step, "/readyz", None, Req::Get);
    readiness(&mut c, step, &a, "unreachable", "ok");

    // ---- 5. PostgreSQL back ----------------------------------------------------------------
    pg.restore();
    let step = "5 postgresql back";
    resumes(&mut c, &base, step);
    // Signed-in pages work again. Should the outage have ended the session, signing in
    // again is acceptable.
    let started = Instant::now();
    let mut espace = b.get("/espace");
    eprintln!("[{step}] /espace (harness browser) -> {} in {} ms", espace.status, started.elapsed().as_millis());
    if espace.status == 303 && espace.location.as_deref().is_some_and(|l| l.starts_with("/connexion")) {
        eprintln!("[{step}] the session was lost: signing in again");
        let back = idp.sign_in(&mut b, &aidant, espace.location.as_deref().unwrap());
        assert_eq!(back.location.as_deref(), Some("/espace"));
        espace = b.get("/espace");
    }
    c.check(espace.status == 200 && espace.content_type.as_deref().is_some_and(|t| t.starts_with("text/html")), || {
        format!("[{step}] /espace signed in: {} {:?}", espace.status, espace.location)
    });
    c.check(idp.brokers[0].pid() == pid && call(&base, step, "/healthz", None, Req::Get).status == 200, || format!("[{step}] the broker is not the same live process"));

    if !c.0.is_empty() {
        let logs = idp.logs();
        let tail: Vec<&str> = logs.lines().rev().take(40).collect();
        eprintln!("---- broker stderr (last lines) ----");
        for l in tail.into_iter().rev() {
            eprintln!("{l}");
        }
        panic!("{} failed checks:\n{}", c.0.len(), c.0.join("\n"));
    }
}
