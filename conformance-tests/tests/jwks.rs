//! `/jwks` of the running binary: the signing keys it publishes (one line of keys per
//! algorithm, ES256 and RS256 side by side), the caching headers, a rotation made with
//! the CLI while it runs, and production's refusal to start without an ES256 signing key.

use conformance_tests::{agent, broker_bin, Broker};
use serde_json::Value;
use std::process::Command;
use std::time::{Duration, Instant};

const PRIVATE: &[&str] = &["d", "p", "q", "dp", "dq", "qi", "k"];

fn keys_of(body: &str) -> Vec<Value> {
    let v: Value = serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"));
    v["keys"].as_array().unwrap().clone()
}

fn assert_public_only(key: &Value) {
    for m in PRIVATE {
        assert!(key.get(*m).is_none(), "private member {m} published: {key}");
    }
    assert_eq!(key["use"], "sig");
    let mut names: Vec<&str> = key.as_object().unwrap().keys().map(String::as_str).collect();
    names.sort_unstable();
    let expected: &[&str] = match key["kty"].as_str() {
        Some("EC") => &["alg", "crv", "kid", "kty", "use", "x", "y"],
        Some("RSA") => &["alg", "e", "kid", "kty", "n", "use"],
        other => panic!("unexpected kty {other:?}"),
    };
    assert_eq!(names, expected);
}

/// The `broker` command with the running broker's keys and database.
fn cli(b: &Broker, args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let o = Command::new(broker_bin())
        .args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("AC_KEYS_DIR", b.dir.path().join("keys"))
        .env("DATABASE_URL", format!("sqlite://{}", b.dir.path().join("b.sqlite3").display()))
        .env("AC_LOG", "warn")
        .envs(env.iter().copied())
        .output()
        .unwrap();
    (o.status.code().unwrap_or(-1), String::from_utf8_lossy(&o.stdout).into_owned(), String::from_utf8_lossy(&o.stderr).into_owned())
}

/// The published key of an algorithm (exactly one expected).
fn key_of<'a>(keys: &'a [Value], alg: &str) -> &'a Value {
    let found: Vec<&Value> = keys.iter().filter(|k| k["alg"] == alg).collect();
    assert_eq!(found.len(), 1, "one {alg} key expected: {keys:?}");
    found[0]
}

/// `keys list --json` as (kid, alg, state).
fn states(b: &Broker) -> Vec<(String, String, String)> {
    let (code, stdout, stderr) = cli(b, &["--json", "keys", "list"], &[]);
    assert_eq!(code, 0, "{stderr}");
    let list: Value = serde_json::from_str(stdout.trim()).unwrap();
    let s = |k: &Value, f: &str| k[f].as_str().unwrap().to_owned();
    list.as_array().unwrap().iter().map(|k| (s(k, "kid"), s(k, "alg"), s(k, "state"))).collect()
}

#[test]
fn development_publishes_a_first_key_of_each_algorithm_with_cache_headers_and_revalidation() {
    let mut b = Broker::start(&[]);
    let (status, headers, body) = b.get("/jwks");
    assert_eq!(status, 200, "{body}");
    assert_eq!(headers.get("content-type").unwrap(), "application/json");
    assert_eq!(headers.get("cache-control").unwrap(), "public, max-age=300");
    let etag = headers.get("etag").unwrap().to_str().unwrap().to_owned();
    assert!(etag.starts_with('"'), "strong ETag: {etag}");
    let keys = keys_of(&body);
    assert_eq!(keys.len(), 2, "one ES256 and one RS256 key, so that any registered client works: {body}");
    let ec = key_of(&keys, "ES256");
    assert_eq!((ec["kty"].as_str(), ec["crv"].as_str()), (Some("EC"), Some("P-256")));
    assert_eq!(key_of(&keys, "RS256")["kty"], "RSA");
    for key in &keys {
        assert_public_only(key);
        let kid = key["kid"].as_str().unwrap();
        assert!(b.dir.path().join("keys/signing").join(format!("{kid}.json")).exists(), "the key generated at start is in the key directory");
    }
    let mut signing: Vec<(String, String)> = states(&b).into_iter().map(|(_, alg, state)| (alg, state)).collect();
    signing.sort();
    assert_eq!(signing, vec![("ES256".into(), "signing".into()), ("RS256".into(), "signing".into())], "both sign at once");

    let a = agent();
    let r = a.get(format!("{}/jwks", b.base)).header("If-None-Match", &etag).call().unwrap();
    assert_eq!(r.status(), 304);
    assert_eq!(r.headers().get("etag").unwrap().to_str().unwrap(), etag);
    let r = a.get(format!("{}/jwks", b.base)).header("If-None-Match", "\"autre\"").call().unwrap();
    assert_eq!(r.status(), 200);
    let r = a.head(format!("{}/jwks", b.base)).call().unwrap();
    assert_eq!(r.status(), 200);

    let (code, stdout, _) = cli(&b, &["--json", "journal", "verify"], &[]);
    assert_eq!(code, 0, "{stdout}");
    let out = b.stop();
    for alg in ["(ES256)", "(RS256)"] {
        assert!(out.stderr.contains(&format!("clé de signature de développement générée {alg}")), "loud warning for {alg}: {}", out.stderr);
    }

    // A second start on the same keys and database finds both keys and generates nothing.
    let k = b.dir.path().join("keys").display().to_string();
    let db = format!("sqlite://{}", b.dir.path().join("b.sqlite3").display());
    let mut again = Broker::start(&[("AC_KEYS_DIR", &k), ("DATABASE_URL", &db)]);
    let (_, _, body) = again.get("/jwks");
    let sorted_kids = |keys: &[Value]| {
        let mut kids: Vec<String> = keys.iter().map(|k| k["kid"].as_str().unwrap().to_owned()).collect();
        kids.sort();
        kids
    };
    assert_eq!(sorted_kids(&keys_of(&body)), sorted_kids(&keys));
    let out = again.stop();
    assert!(!out.stderr.contains("clé de signature de développement générée"), "{}", out.stderr);
}

#[test]
fn a_key_rotated_with_the_cli_is_published_before_it_signs_and_leaves_the_other_algorithm_alone() {
    let b = Broker::start(&[]);
    let (_, headers, body) = b.get("/jwks");
    let before = keys_of(&body);
    let first_rs = key_of(&before, "RS256")["kid"].as_str().unwrap().to_owned();
    let first_es = key_of(&before, "ES256")["kid"].as_str().unwrap().to_owned();
    let etag = headers.get("etag").unwrap().to_str().unwrap().to_owned();

    let (code, stdout, stderr) = cli(&b, &["--json", "keys", "rotate", "--alg", "RS256"], &[]);
    assert_eq!(code, 0, "{stderr}");
    let rotated: Value = serde_json::from_str(stdout.trim()).unwrap();
    let new = rotated["kid"].as_str().unwrap().to_owned();

    // The running broker picks the new file up within a few seconds.
    let deadline = Instant::now() + Duration::from_secs(15);
    let keys = loop {
        let (_, h, body) = b.get("/jwks");
        let keys = keys_of(&body);
        if keys.iter().any(|k| k["kid"] == new.as_str()) {
            assert_ne!(h.get("etag").unwrap().to_str().unwrap(), etag, "a new key set, a new ETag");
            break keys;
        }
        assert!(Instant::now() < deadline, "rotated key not published: {body}");
        std::thread::sleep(Duration::from_millis(200));
    };
    let kids: Vec<&str> = keys.iter().map(|k| k["kid"].as_str().unwrap()).collect();
    assert_eq!(kids.len(), 3, "{kids:?}");
    assert_eq!(kids[0], new, "every key published, newest first");
    assert!(kids.contains(&first_rs.as_str()) && kids.contains(&first_es.as_str()), "{kids:?}");
    keys.iter().for_each(assert_public_only);

    // …while it does not sign yet: the first RS256 key still does, for the publish delay;
    // the ES256 key is not concerned.
    let state = |kid: &str| states(&b).into_iter().find(|(k, _, _)| k == kid).unwrap().2;
    assert_eq!((state(&first_rs), state(&new), state(&first_es)), ("signing".to_owned(), "pending".to_owned(), "signing".to_owned()));
}

#[test]
fn production_refuses_to_start_without_an_es256_signing_key_and_publishes_both_algorithms() {
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("keys");
    let db = format!("sqlite://{}", dir.path().join("p.sqlite3").display());
    let run = |args: &[&str]| {
        let o = Command::new(broker_bin())
            .args(args)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("AC_ENV", "production")
            .env("AC_ISSUER", "https://aidants.exemple.fr")
            .env("AC_SMTP_URL", "smtp://127.0.0.1:2525")
            .env("AC_LISTEN", "127.0.0.1:0")
            .env("AC_KEYS_DIR", &keys)
            .env("DATABASE_URL", &db)
            .output()
            .unwrap();
        (o.status.code(), String::from_utf8_lossy(&o.stderr).into_owned())
    };
    assert_eq!(run(&["keys", "init"]).0, Some(0));
    let (code, err) = run(&["serve"]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("aucune clé de signature ES256") && err.contains("broker keys generate --alg ES256"), "{err}");
    assert!(!dir.path().join("p.sqlite3").exists(), "refused before touching the database");

    // An RS256 key alone is not enough: ES256 is the default algorithm of clients.
    let (code, err) = run(&["keys", "generate", "--alg", "RS256"]);
    assert_eq!(code, Some(0), "{err}");
    let (code, err) = run(&["serve"]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("aucune clé de signature ES256") && err.contains("broker keys generate --alg ES256"), "{err}");

    let (code, err) = run(&["keys", "generate", "--alg", "ES256"]);
    assert_eq!(code, Some(0), "{err}");
    let k = keys.display().to_string();
    let b = Broker::start(&[
        ("AC_ENV", "production"),
        ("AC_ISSUER", "https://aidants.exemple.fr"),
        ("AC_SMTP_URL", "smtp://127.0.0.1:2525"),
        ("AC_KEYS_DIR", &k),
        ("DATABASE_URL", &db),
    ]);
    let (status, _, body) = b.get("/jwks");
    assert_eq!(status, 200);
    let published = keys_of(&body);
    assert_eq!(published.len(), 2, "{body}");
    assert_eq!(key_of(&published, "RS256")["kty"], "RSA");
    assert_eq!(key_of(&published, "ES256")["kty"], "EC");
    published.iter().for_each(assert_public_only);
}

#[test]
fn production_warns_at_start_about_a_client_whose_algorithm_has_no_signing_key() {
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("keys");
    let k = keys.display().to_string();
    let db = format!("sqlite://{}", dir.path().join("p.sqlite3").display());
    let prod = [
        ("AC_ENV", "production"),
        ("AC_ISSUER", "https://aidants.exemple.fr"),
        ("AC_SMTP_URL", "smtp://127.0.0.1:2525"),
        ("AC_KEYS_DIR", k.as_str()),
        ("DATABASE_URL", db.as_str()),
    ];
    let run = |args: &[&str]| {
        let o = Command::new(broker_bin()).args(args).env_clear().env("PATH", std::env::var("PATH").unwrap_or_default()).envs(prod).output().unwrap();
        assert!(o.status.success(), "{args:?}: {}", String::from_utf8_lossy(&o.stderr));
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    run(&["keys", "init"]);
    run(&["keys", "generate"]);
    let client: Value = serde_json::from_str(
        run(&["--json", "admin", "client", "create", "--name", "FranceConnect", "--redirect-uri", "https://fc.exemple.fr/cb", "--id-token-alg", "RS256"]).trim(),
    )
    .unwrap();
    let client_id = client["client_id"].as_str().unwrap();

    let mut b = Broker::start(&prod);
    assert_eq!(b.get("/jwks").0, 200);
    let out = b.stop();
    let warning = out
        .stderr
        .lines()
        .find(|l| l.contains("without a signing key"))
        .unwrap_or_else(|| panic!("no warning about the RS256 client: {}", out.stderr));
    assert!(warning.contains("RS256") && warning.contains(client_id) && warning.contains("broker keys generate --alg RS256"), "{warning}");
}
