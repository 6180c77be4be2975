//! The service as an operator and a browser see it: probes, home page, logs.

use broker_testkit::{redis_url, TestDb};
use conformance_tests::Broker;

#[test]
fn embedded_default_serves_health_home_and_prints_demo_credentials() {
    let mut b = Broker::start(&[]);
    let (status, _, body) = b.get("/healthz");
    assert_eq!((status, body.as_str()), (200, r#"{"status":"ok"}"#));
    let (status, _, body) = b.get("/readyz");
    assert_eq!(status, 200, "{body}");
    let ready: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!((ready["database"].as_str(), ready["cache"].as_str()), (Some("ok"), Some("ok")));

    let (status, headers, html) = b.get("/");
    assert_eq!(status, 200);
    assert!(html.contains(r#"<html lang="fr""#));
    assert!(html.contains("/static/dsfr/dsfr.min.css"));
    assert!(html.contains("Étranger - Europe") && html.contains("Argent - Impôts - Consommation"));
    assert!(headers.get("content-security-policy").unwrap().to_str().unwrap().contains("frame-ancestors 'none'"));
    assert_eq!(headers.get("x-content-type-options").unwrap(), "nosniff");
    let (status, headers, css) = b.get("/static/dsfr/dsfr.min.css");
    assert_eq!(status, 200);
    assert!(headers.get("content-type").unwrap().to_str().unwrap().starts_with("text/css"));
    assert!(css.contains(".fr-header"));

    let out = b.stop();
    assert!(out.stdout.contains("marie.aidante@structure-demo.test"), "{}", out.stdout);
    let secret = out.stdout.lines().find_map(|l| l.strip_prefix("Secret TOTP     : ")).expect("secret printed");
    assert!(secret.len() >= 26 && secret.chars().all(|c| c.is_ascii_uppercase() || ('2'..='7').contains(&c)), "{secret}");
    let code = out.stdout.lines().find_map(|l| l.strip_prefix("Code actuel     : ")).expect("code printed");
    assert!(code[..6].chars().all(|c| c.is_ascii_digit()), "{code}");
    assert!(out.stdout.contains(&format!("{}/", b.issuer)), "URL to open is printed");
}

#[test]
fn demo_data_is_seeded_once() {
    let mut first = Broker::start(&[]);
    let db = format!("sqlite://{}", first.dir.path().join("b.sqlite3").display());
    let keys = first.dir.path().join("keys").display().to_string();
    let out1 = first.stop();
    let mut second = Broker::start(&[("DATABASE_URL", &db), ("AC_KEYS_DIR", &keys)]);
    let out2 = second.stop();
    let secret = |s: &str| s.lines().find(|l| l.starts_with("Secret TOTP")).map(str::to_owned);
    assert_eq!(secret(&out1.stdout), secret(&out2.stdout), "same demo aidant, same TOTP app");
    assert!(!out2.stderr.contains("clé de développement générée"), "keys are generated on first start only");
}

#[test]
fn readiness_follows_postgres_and_redis() {
    let t = TestDb::postgres();
    let mut b = Broker::start(&[("DATABASE_URL", &t.url), ("REDIS_URL", &redis_url())]);
    let (status, _, body) = b.get("/readyz");
    assert_eq!(status, 200, "{body}");
    drop(t); // drops the database under the running broker
    let (status, _, body) = b.get("/readyz");
    assert_eq!(status, 503, "{body}");
    assert!(body.contains(r#""database":"unreachable""#), "{body}");
    assert_eq!(b.get("/healthz").0, 200, "the process itself is alive");
    b.stop();
}

#[test]
fn an_unreachable_cache_makes_the_broker_not_ready() {
    let b = Broker::start(&[("REDIS_URL", "redis://127.0.0.1:1")]);
    let (status, _, body) = b.get("/readyz");
    assert_eq!(status, 503);
    assert!(body.contains(r#""cache":"unreachable""#) && body.contains(r#""database":"ok""#), "{body}");
    assert_eq!(b.get("/healthz").0, 200);
}

#[test]
fn production_logs_are_json_without_query_strings_and_report_unknown_settings() {
    let keys = tempfile::tempdir().unwrap();
    let k = keys.path().display().to_string();
    let init = std::process::Command::new(conformance_tests::broker_bin())
        .args(["keys", "init"])
        .env("AC_KEYS_DIR", &k)
        .output()
        .unwrap();
    assert!(init.status.success());
    // Production also needs a signing key (its creation is journaled in this database).
    let db = format!("sqlite://{}", keys.path().join("p.sqlite3").display());
    let generate = std::process::Command::new(conformance_tests::broker_bin())
        .args(["keys", "generate"])
        .env("AC_KEYS_DIR", &k)
        .env("DATABASE_URL", &db)
        .output()
        .unwrap();
    assert!(generate.status.success(), "{}", String::from_utf8_lossy(&generate.stderr));
    let mut b = Broker::start(&[
        ("AC_ENV", "production"),
        ("AC_ISSUER", "https://aidants.exemple.gouv.fr"),
        ("AC_SMTP_URL", "smtp://127.0.0.1:2525"),
        ("AC_KEYS_DIR", &k),
        ("DATABASE_URL", &db),
        ("AC_LISTN", "0.0.0.0:1"),
    ]);
    assert_eq!(b.get("/?code=SECRETCODE123&state=abc").0, 200);
    let out = b.stop();
    assert!(!out.stdout.contains("Secret TOTP"), "no demo data in production");
    assert!(!out.stderr.contains("SECRETCODE123") && !out.stdout.contains("SECRETCODE123"), "query strings are never logged");
    let lines: Vec<serde_json::Value> = out
        .stderr
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON: {l}: {e}")))
        .collect();
    assert!(lines.iter().any(|l| l["path"] == "/" && l["status"] == 200), "request logged");
    assert!(lines.iter().any(|l| l["variables"].as_str() == Some("AC_LISTN")), "unknown AC_ variable reported");
}

#[test]
fn production_refuses_to_start_without_keys_or_https_issuer() {
    let run = |env: &[(&str, &str)]| {
        let dir = tempfile::tempdir().unwrap();
        let mut c = std::process::Command::new(conformance_tests::broker_bin());
        c.arg("serve").env_clear().env("AC_KEYS_DIR", dir.path()).env("DATABASE_URL", format!("sqlite://{}", dir.path().join("d.sqlite3").display()));
        for (k, v) in env {
            c.env(k, v);
        }
        let o = c.output().unwrap();
        (o.status.code(), String::from_utf8_lossy(&o.stderr).into_owned())
    };
    let (code, err) = run(&[("AC_ENV", "production"), ("AC_ISSUER", "http://aidants.exemple.fr")]);
    assert_eq!(code, Some(2));
    assert!(err.contains("https://"), "{err}");
    let (code, err) = run(&[("AC_ENV", "production"), ("AC_ISSUER", "https://aidants.exemple.fr")]);
    assert_eq!(code, Some(2));
    assert!(err.contains("AC_SMTP_URL"), "{err}");
    let (code, err) = run(&[
        ("AC_ENV", "production"),
        ("AC_ISSUER", "https://aidants.exemple.fr"),
        ("AC_SMTP_URL", "smtp://127.0.0.1:2525"),
        ("AC_LISTEN", "127.0.0.1:0"),
    ]);
    assert_eq!(code, Some(1));
    assert!(err.contains("clé manquante"), "{err}");
}
