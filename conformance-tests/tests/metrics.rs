//! `/metrics` of the running binary, on its own listener (`AC_METRICS_LISTEN`): every
//! family in the Prometheus text format with plausible values, route templates instead
//! of paths, nothing on the public address, and the refusal to serve metrics there. On
//! the embedded default and on PostgreSQL with Redis.

use broker_testkit::{redis_url, TestDb};
use conformance_tests::idp::Backend;
use conformance_tests::{agent, broker_bin, free_port, on_both_backends, Broker};
use std::collections::BTreeMap;
use std::process::Command;
use std::time::{Duration, Instant};

/// One sample: its name, its labels and its value.
#[derive(Debug)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// The samples of a text exposition, comments left out.
fn parse(text: &str) -> Vec<Sample> {
    text.lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|line| {
            let (series, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("no value: {line}"));
            let value = match value {
                "+Inf" => f64::INFINITY,
                "-Inf" => f64::NEG_INFINITY,
                v => v.parse().unwrap_or_else(|_| panic!("bad value: {line}")),
            };
            let (name, labels) = match series.split_once('{') {
                None => (series, BTreeMap::new()),
                Some((name, rest)) => (name, labels(rest.strip_suffix('}').unwrap_or_else(|| panic!("bad labels: {line}")))),
            };
            Sample { name: name.to_owned(), labels, value }
        })
        .collect()
}

/// `a="x",b="y"`, with `\"` and `\\` escapes in values.
fn labels(mut rest: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    while !rest.is_empty() {
        let (key, after) = rest.split_once("=\"").unwrap_or_else(|| panic!("bad label: {rest}"));
        let mut value = String::new();
        let mut chars = after.char_indices();
        let end = loop {
            match chars.next() {
                Some((_, '\\')) => value.push(chars.next().map(|(_, c)| if c == 'n' { '\n' } else { c }).unwrap()),
                Some((i, '"')) => break i,
                Some((_, c)) => value.push(c),
                None => panic!("unterminated label value: {rest}"),
            }
        };
        out.insert(key.to_owned(), value);
        rest = after[end + 1..].trim_start_matches(',');
    }
    out
}

struct Scrape {
    text: String,
    samples: Vec<Sample>,
}

impl Scrape {
    /// Values of `name` whose labels include `with`.
    fn values(&self, name: &str, with: &[(&str, &str)]) -> Vec<f64> {
        self.samples
            .iter()
            .filter(|s| s.name == name && with.iter().all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v)))
            .map(|s| s.value)
            .collect()
    }

    /// The one value of `name` with these labels.
    fn one(&self, name: &str, with: &[(&str, &str)]) -> f64 {
        let found = self.values(name, with);
        assert_eq!(found.len(), 1, "one sample of {name} {with:?} expected:\n{}", self.text);
        found[0]
    }

    fn described(&self, name: &str, kind: &str) {
        assert!(self.text.contains(&format!("# HELP {name} ")), "no HELP for {name}:\n{}", self.text);
        assert!(self.text.contains(&format!("# TYPE {name} {kind}\n")), "{name} is not a {kind}:\n{}", self.text);
    }
}

fn scrape(metrics: &str) -> Scrape {
    let mut r = agent().get(format!("{metrics}/metrics")).call().unwrap();
    assert_eq!(r.status(), 200);
    let content_type = r.headers().get("content-type").unwrap().to_str().unwrap().to_owned();
    assert!(content_type.starts_with("text/plain; version=0.0.4"), "{content_type}");
    let text = r.body_mut().read_to_string().unwrap();
    let samples = parse(&text);
    Scrape { text, samples }
}

/// Scrapes until `ready` holds (a background task's first figures), 20 s at most.
fn scrape_until(metrics: &str, ready: impl Fn(&Scrape) -> bool) -> Scrape {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let s = scrape(metrics);
        if ready(&s) || Instant::now() > deadline {
            return s;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A broker with metrics on a free loopback port; returns it, the metrics base URL and
/// the PostgreSQL database it uses (kept until the end of the test).
fn start(backend: Backend, extra: &[(&str, &str)]) -> (Broker, String, Option<TestDb>) {
    let metrics = format!("127.0.0.1:{}", free_port());
    let mut env: Vec<(String, String)> = vec![("AC_METRICS_LISTEN".into(), metrics.clone())];
    let pg = match backend {
        Backend::Sqlite => None,
        Backend::Postgres => {
            let t = TestDb::postgres_url_only();
            env.push(("DATABASE_URL".into(), t.url.clone()));
            env.push(("REDIS_URL".into(), redis_url()));
            env.push(("AC_CACHE_PREFIX".into(), format!("ac-metrics-{}:", hex::encode(rand::random::<[u8; 8]>()))));
            Some(t)
        }
    };
    env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    let e: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    (Broker::start(&e), format!("http://{metrics}"), pg)
}

const DISCOVERY: &str = "/.well-known/openid-configuration";

on_both_backends! {
    fn every_family_is_served_on_the_private_listener_only(backend) {
        let (b, metrics, _pg) = start(backend, &[]);
        for _ in 0..3 {
            assert_eq!(b.get(DISCOVERY).0, 200);
        }
        for _ in 0..2 {
            assert_eq!(b.get("/jwks").0, 200);
        }
        assert_eq!(b.get("/").0, 200);
        b.get("/autorisation/flux-secret-4242");
        assert_eq!(b.get("/nulle-part/jeanne.martin@example.test").0, 404);
        let (status, _, body) = b.get("/metrics");
        assert_eq!(status, 404, "no metrics on the public address: {body}");

        // The periodic task signs its first checkpoint shortly after start.
        // The scheduled jobs run once at start too.
        let s = scrape_until(&metrics, |s| {
            !s.values("broker_journal_checkpoint_age_seconds", &[]).is_empty() && s.values("broker_job_last_run_success", &[]).len() == 4
        });

        // Requests, by route template, method and status.
        s.described("broker_http_requests_total", "counter");
        s.described("broker_http_request_duration_seconds", "histogram");
        let requests = |route: &str, status: &str| s.one("broker_http_requests_total", &[("route", route), ("method", "GET"), ("status", status)]);
        assert!(requests(DISCOVERY, "200") >= 3.0);
        assert!(requests("/jwks", "200") >= 2.0);
        assert!(requests("/", "200") >= 1.0);
        assert!(requests("unmatched", "404") >= 1.0, "{}", s.text);
        assert!(!s.values("broker_http_requests_total", &[("route", "/autorisation/{flow}")]).is_empty(), "{}", s.text);
        assert!(requests("/healthz", "200") >= 1.0, "the start-up probe is counted");
        for private in ["flux-secret-4242", "jeanne.martin", "nulle-part", "/metrics"] {
            assert!(!s.text.contains(private), "{private} in the metrics:\n{}", s.text);
        }
        let count = s.one("broker_http_request_duration_seconds_count", &[("route", DISCOVERY)]);
        assert!(count >= 3.0);
        let sum = s.one("broker_http_request_duration_seconds_sum", &[("route", DISCOVERY)]);
        assert!(sum.is_finite() && sum > 0.0 && sum < count * 5.0, "{sum}");
        let bucket = |le: &str| s.one("broker_http_request_duration_seconds_bucket", &[("route", DISCOVERY), ("le", le)]);
        assert!(bucket("0.0005") <= bucket("5"));
        assert_eq!(bucket("+Inf"), count);

        // The database pool, and the waits for a connection.
        for g in ["broker_db_pool_connections_in_use", "broker_db_pool_connections_idle", "broker_db_pool_connections_max"] {
            s.described(g, "gauge");
        }
        let in_use = s.one("broker_db_pool_connections_in_use", &[]);
        let idle = s.one("broker_db_pool_connections_idle", &[]);
        let max = s.one("broker_db_pool_connections_max", &[]);
        assert!(in_use >= 0.0 && idle >= 0.0 && max >= 1.0, "{in_use} {idle} {max}");
        assert!(in_use <= max && in_use + idle <= max, "{in_use} + {idle} > {max}");
        s.described("broker_db_pool_waits_total", "counter");
        s.described("broker_db_pool_wait_seconds", "histogram");
        let waits = s.one("broker_db_pool_waits_total", &[]);
        let acquisitions = s.one("broker_db_pool_wait_seconds_count", &[]);
        assert!(waits >= 0.0 && acquisitions >= 1.0 && waits <= acquisitions, "{waits} {acquisitions}");

        // Cache errors, every kind shown from the start.
        s.described("broker_cache_errors_total", "counter");
        for kind in ["unavailable", "connection", "timeout", "reply"] {
            assert!(s.one("broker_cache_errors_total", &[("kind", kind)]) >= 0.0);
        }

        // The journal: the group-commit queue and the latest checkpoint.
        s.described("broker_journal_writes_waiting", "gauge");
        assert!(s.one("broker_journal_writes_waiting", &[]) >= 0.0);
        s.described("broker_journal_checkpoint_age_seconds", "gauge");
        let age = s.one("broker_journal_checkpoint_age_seconds", &[]);
        assert!(age.is_finite() && (0.0..600.0).contains(&age), "{age}");

        // The mail queue.
        for g in ["broker_mail_queue_waiting", "broker_mail_queue_retrying", "broker_mail_queue_given_up", "broker_mail_queue_oldest_age_seconds"] {
            s.described(g, "gauge");
            let v = s.one(g, &[]);
            assert!(v.is_finite() && v >= 0.0, "{g} = {v}");
        }
        assert!(s.one("broker_mail_queue_retrying", &[]) <= s.one("broker_mail_queue_waiting", &[]));
        s.described("broker_mail_delivered_total", "counter");
        s.described("broker_mail_delivery_failures_total", "counter");
        for kind in ["retry", "given_up"] {
            assert!(s.one("broker_mail_delivery_failures_total", &[("kind", kind)]) >= 0.0);
        }

        // Each scheduled job: its last run (a moment ago, successful) and its next due instant.
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs_f64();
        for job in ["rappel-mandats-echeance", "rappel-seconds-facteurs", "inactivite-aidants", "avis-usagers"] {
            let last = s.one("broker_job_last_run_timestamp_seconds", &[("job", job)]);
            assert!(last <= now + 1.0 && last > now - 600.0, "{job}: {last} vs {now}");
            assert_eq!(s.one("broker_job_last_run_success", &[("job", job)]), 1.0, "{job}");
            let took = s.one("broker_job_last_run_duration_seconds", &[("job", job)]);
            assert!((0.0..60.0).contains(&took), "{job}: {took}");
            assert!(s.one("broker_job_next_due_timestamp_seconds", &[("job", job)]) >= last + 599.0, "{job}");
        }

        // A later scrape sees the counters grow.
        assert_eq!(b.get(DISCOVERY).0, 200);
        let again = scrape(&metrics);
        assert!(again.one("broker_http_requests_total", &[("route", DISCOVERY), ("method", "GET"), ("status", "200")]) >= requests(DISCOVERY, "200") + 1.0);
    }
}

#[test]
fn an_unreachable_cache_is_counted_by_kind() {
    let (b, metrics, _) = start(Backend::Sqlite, &[("REDIS_URL", "redis://127.0.0.1:1")]);
    assert_eq!(b.get("/readyz").0, 503);
    assert_eq!(b.get("/readyz").0, 503);
    let s = scrape(&metrics);
    let errors = |kind: &str| s.one("broker_cache_errors_total", &[("kind", kind)]);
    assert!(errors("connection") >= 1.0, "{}", s.text);
    assert!(errors("connection") + errors("unavailable") >= 2.0, "{}", s.text);
    assert_eq!(errors("reply"), 0.0);
    assert!(s.one("broker_http_requests_total", &[("route", "/readyz"), ("method", "GET"), ("status", "503")]) >= 2.0);
}

#[test]
fn metrics_are_refused_on_the_public_address() {
    let port = free_port();
    for (listen, metrics) in [(format!("127.0.0.1:{port}"), format!("127.0.0.1:{port}")), (format!("127.0.0.1:{port}"), format!("0.0.0.0:{port}"))] {
        let dir = tempfile::tempdir().unwrap();
        let o = Command::new(broker_bin())
            .arg("serve")
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("AC_LISTEN", &listen)
            .env("AC_METRICS_LISTEN", &metrics)
            .env("AC_KEYS_DIR", dir.path().join("keys"))
            .env("DATABASE_URL", format!("sqlite://{}", dir.path().join("b.sqlite3").display()))
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{stderr}");
        assert!(stderr.contains("AC_METRICS_LISTEN") && stderr.contains("adresse publique"), "{stderr}");
        assert!(!dir.path().join("b.sqlite3").exists(), "refused before anything is written");
    }
}
