//! The operator CLI, run as a process against both backends.

use broker_testkit::TestDb;
use serde_json::Value;
use std::process::Command;

struct Cli {
    t: TestDb,
    keys: tempfile::TempDir,
}

struct Out {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Cli {
    fn both() -> Vec<Cli> {
        TestDb::both().into_iter().map(Cli::new).collect()
    }

    fn new(t: TestDb) -> Cli {
        let cli = Cli { t, keys: tempfile::tempdir().unwrap() };
        assert_eq!(cli.run(&["keys", "init"]).code, 0);
        cli
    }

    fn run(&self, args: &[&str]) -> Out {
        self.run_with(args, &[])
    }

    fn run_with(&self, args: &[&str], env: &[(&str, &str)]) -> Out {
        let o = Command::new(env!("CARGO_BIN_EXE_broker"))
            .args(args)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("DATABASE_URL", &self.t.url)
            .env("AC_KEYS_DIR", self.keys.path())
            .env("AC_LOG", "warn")
            .envs(env.iter().copied())
            .output()
            .unwrap();
        Out {
            code: o.status.code().unwrap_or_else(|| { use std::os::unix::process::ExitStatusExt; panic!("{args:?} killed by signal {:?}: {}", o.status.signal(), String::from_utf8_lossy(&o.stderr)) }),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }

    fn json(&self, args: &[&str]) -> Value {
        self.json_with(args, &[])
    }

    fn json_with(&self, args: &[&str], env: &[(&str, &str)]) -> Value {
        let mut a = vec!["--json"];
        a.extend_from_slice(args);
        let o = self.run_with(&a, env);
        assert_eq!(o.code, 0, "{args:?}: {}", o.stderr);
        serde_json::from_str(o.stdout.trim()).unwrap_or_else(|e| panic!("{args:?}: {e}: {}", o.stdout))
    }

    fn journal_entries(&self) -> i64 {
        self.json(&["journal", "verify"])["entries"].as_i64().unwrap()
    }

    fn name(&self) -> &'static str {
        self.t.name()
    }
}

fn assert_refused(cli: &Cli, args: &[&str], needle: &str) {
    let before = cli.journal_entries();
    let o = cli.run(args);
    assert_eq!(o.code, 2, "{}: {args:?} should exit 2: {}", cli.name(), o.stderr);
    let lines: Vec<&str> = o.stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "{}: one-line message expected: {}", cli.name(), o.stderr);
    assert!(lines[0].contains(needle), "{}: {args:?}: message « {} » should mention « {needle} »", cli.name(), lines[0]);
    assert_eq!(cli.journal_entries(), before, "{}: {args:?} wrote to the journal", cli.name());
}

#[test]
fn bad_input_gets_one_clear_line_exit_code_2_and_writes_nothing() {
    for cli in Cli::both() {
        let org = cli.json(&["admin", "organisation", "create", "--name", "CCAS de Lille", "--siret", "81234567800013", "--demarches", "social,logement"]);
        let org_id = org["id"].as_i64().unwrap().to_string();
        assert_refused(&cli, &["admin", "organisation", "create", "--name", "X", "--siret", "81234567800014"], "SIRET");
        assert_refused(&cli, &["admin", "organisation", "create", "--name", "X", "--siret", "81234567800013", "--demarches", "social,impots"], "impots");
        assert_refused(&cli, &["admin", "aidant", "create", "--organisation", &org_id, "--email", "pas-une-adresse", "--first-name", "A", "--last-name", "B"], "e-mail");
        assert_refused(&cli, &["admin", "aidant", "create", "--organisation", "999", "--email", "a@exemple.fr", "--first-name", "A", "--last-name", "B"], "structure inconnue");
        assert_refused(&cli, &["admin", "client", "create", "--name", "FC", "--redirect-uri", "http://fc.exemple.fr/cb"], "https");
        assert_refused(&cli, &["admin", "client", "create", "--name", "FC", "--redirect-uri", "https://fc.exemple.fr/cb", "--id-token-alg", "none"], "algorithme");
        assert_refused(&cli, &["admin", "totp", "enroll-app", "--aidant", "inconnu@exemple.fr"], "aucun aidant");
        assert_eq!(cli.json(&["admin", "organisation", "list"]).as_array().unwrap().len(), 1, "{}", cli.name());
        assert_eq!(cli.json(&["admin", "client", "list"]).as_array().unwrap().len(), 0, "{}", cli.name());
    }
}

#[test]
fn operator_journey_is_journaled_and_verifies() {
    for cli in Cli::both() {
        let org = cli.json(&["admin", "organisation", "create", "--name", "France Services Arras", "--siret", "81234567800013", "--address", "1 place des Héros"]);
        let org_id = org["id"].as_i64().unwrap().to_string();
        let a = cli.json(&["admin", "aidant", "create", "--organisation", &org_id, "--email", "Jean.Martin@Exemple.fr", "--first-name", "Jean", "--last-name", "Martin", "--referent"]);
        assert_eq!(a["email"], "jean.martin@exemple.fr");
        let dup = cli.run(&["admin", "aidant", "create", "--organisation", &org_id, "--email", "JEAN.MARTIN@exemple.fr", "--first-name", "J", "--last-name", "M"]);
        assert_eq!(dup.code, 2, "{}", cli.name());

        let app = cli.json(&["admin", "totp", "enroll-app", "--aidant", "jean.martin@exemple.fr"]);
        let secret = app["secret"].as_str().unwrap();
        assert!(app["otpauth_uri"].as_str().unwrap().starts_with("otpauth://totp/"));
        assert!(app["otpauth_uri"].as_str().unwrap().contains(secret));

        let client = cli.json(&["admin", "client", "create", "--name", "FranceConnect", "--redirect-uri", "https://fc.exemple.fr/api/v2/oidc-callback", "--post-logout-redirect-uri", "https://fc.exemple.fr/api/v2/client/logout-callback", "--id-token-alg", "RS256", "--userinfo", "jwt"]);
        let listed = cli.json(&["admin", "client", "list"]);
        assert_eq!(listed[0]["client_id"], client["client_id"]);
        assert!(!listed.to_string().contains(client["client_secret"].as_str().unwrap()), "the secret is shown once only");

        let text = cli.run(&["admin", "aidant", "list"]);
        assert!(text.stdout.contains("jean.martin@exemple.fr") && text.stdout.contains("referent@"), "{}", text.stdout);
        let off = cli.json(&["admin", "aidant", "deactivate", "--email", "jean.martin@exemple.fr"]);
        assert_eq!(off["active"], false);

        let v = cli.json(&["journal", "verify"]);
        assert_eq!(v["ok"], true);
        assert_eq!(v["entries"], 5, "{}: org, aidant, app, client, deactivation", cli.name());
    }
}

#[test]
fn card_import_reports_duplicates_and_imports_nothing_half_way() {
    for cli in Cli::both() {
        let dir = tempfile::tempdir().unwrap();
        let seed = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP";
        let good = dir.path().join("good.csv");
        std::fs::write(&good, format!("serial,seed,step,digits\nC-001,{seed},60,6\nC-002,{seed},60,6\n")).unwrap();
        assert_eq!(cli.json(&["admin", "totp", "import-cards", good.to_str().unwrap()])["imported"], 2);

        let dups = dir.path().join("dups.csv");
        std::fs::write(&dups, format!("serial,seed,step,digits\nC-003,{seed},60,6\nC-002,{seed},60,6\nC-004,{seed},60,6\nC-004,{seed},60,6\n")).unwrap();
        let o = cli.run(&["admin", "totp", "import-cards", dups.to_str().unwrap()]);
        assert_eq!(o.code, 2, "{}", o.stderr);
        assert!(o.stderr.contains("C-002") && o.stderr.contains("C-004") && !o.stderr.contains("C-003"), "{}", o.stderr);

        let bad = dir.path().join("bad.csv");
        std::fs::write(&bad, format!("serial,seed,step,digits\nC-005,{seed},60,6\nC-006,pas-du-base32,60,6\n")).unwrap();
        let o = cli.run(&["admin", "totp", "import-cards", bad.to_str().unwrap()]);
        assert_eq!(o.code, 2);
        assert!(o.stderr.contains("ligne 3"), "{}", o.stderr);

        // Only the first import landed: one journal entry, and C-003 / C-005 can still be imported.
        assert_eq!(cli.journal_entries(), 1, "{}", cli.name());
        let later = dir.path().join("later.csv");
        std::fs::write(&later, format!("serial,seed,step,digits\nC-003,{seed},60,6\nC-005,{seed},60,6\n")).unwrap();
        assert_eq!(cli.json(&["admin", "totp", "import-cards", later.to_str().unwrap()])["imported"], 2);
    }
}

#[test]
fn migrate_applies_every_migration_once_on_a_fresh_database() {
    let t = TestDb::postgres_url_only();
    let cli = Cli::new(t);
    let first = cli.json(&["migrate"]);
    assert_eq!(first["backend"], "postgres");
    assert!(!first["applied"].as_array().unwrap().is_empty());
    assert_eq!(cli.json(&["migrate"])["applied"].as_array().unwrap().len(), 0);
}

/// The signing key files (name and content), to check that a refused command wrote nothing.
fn signing_files(cli: &Cli) -> Vec<(String, String)> {
    let dir = cli.keys.path().join("signing");
    let Ok(entries) = std::fs::read_dir(&dir) else { return Vec::new() };
    let mut out: Vec<(String, String)> = entries
        .map(|e| e.unwrap())
        .map(|e| (e.file_name().to_string_lossy().into_owned(), std::fs::read_to_string(e.path()).unwrap()))
        .collect();
    out.sort();
    out
}

/// Journal entries of the signing keys: (operation, kid, alg, via).
fn signing_entries(cli: &Cli) -> Vec<(String, String, String, String)> {
    broker_testkit::journal(&cli.t.db, |c| broker_store::journal::page(c, 0, 1000))
        .unwrap()
        .into_iter()
        .filter(|r| r.action == "signing_key_rotated")
        .map(|r| {
            let d: Value = serde_json::from_str(&r.details).unwrap();
            let s = |k: &str| d[k].as_str().unwrap_or_default().to_owned();
            (s("operation"), s("kid"), s("alg"), s("via"))
        })
        .collect()
}

/// (kid, alg, state) of every key, as `keys list --json` gives them.
fn key_states(cli: &Cli) -> Vec<(String, String, String)> {
    let list = cli.json(&["keys", "list"]);
    let s = |k: &Value, f: &str| k[f].as_str().unwrap().to_owned();
    list.as_array().unwrap().iter().map(|k| (s(k, "kid"), s(k, "alg"), s(k, "state"))).collect()
}

#[test]
fn signing_keys_are_generated_rotated_retired_and_journaled_per_algorithm() {
    for cli in Cli::both() {
        let name = cli.name();
        assert_eq!(cli.json(&["keys", "list"]), serde_json::json!([]), "{name}");
        let first = cli.json(&["keys", "generate"]);
        let kid1 = first["kid"].as_str().unwrap().to_owned();
        assert_eq!((first["alg"].as_str(), first["state"].as_str(), first["published"].as_bool()), (Some("ES256"), Some("signing"), Some(true)), "{name}");

        // The file holds the private key, mode 0600; no output ever shows it.
        let path = cli.keys.path().join("signing").join(format!("{kid1}.json"));
        let file: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        let d = file["private_jwk"]["d"].as_str().expect("private key in the file").to_owned();
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600, "{name}");
        }
        assert!(!first.to_string().contains(&d), "{name}: generate printed the private key");

        // `--if-missing` is per algorithm: nothing for ES256, the first RS256 key, then nothing.
        let again = cli.json(&["keys", "generate", "--if-missing"]);
        assert_eq!((again["generated"].as_bool(), again["alg"].as_str()), (Some(false), Some("ES256")), "{name}");
        let rsa = cli.json(&["keys", "generate", "--alg", "RS256", "--if-missing"]);
        let kid_rs = rsa["kid"].as_str().unwrap().to_owned();
        assert_eq!((rsa["alg"].as_str(), rsa["state"].as_str()), (Some("RS256"), Some("signing")), "{name}: signs at once, beside the ES256 key");
        let again = cli.json(&["keys", "generate", "--alg", "RS256", "--if-missing"]);
        assert_eq!((again["generated"].as_bool(), again["alg"].as_str()), (Some(false), Some("RS256")), "{name}");

        // Rotating RS256 adds a key that signs later, in place of the RS256 key only.
        let rotated = cli.json(&["keys", "rotate", "--alg", "RS256"]);
        let kid2 = rotated["kid"].as_str().unwrap().to_owned();
        assert_eq!((rotated["alg"].as_str(), rotated["state"].as_str(), rotated["published"].as_bool()), (Some("RS256"), Some("pending"), Some(true)), "{name}");
        let created = broker_core::Timestamp::parse_rfc3339(rotated["created_at"].as_str().unwrap()).unwrap();
        let active = broker_core::Timestamp::parse_rfc3339(rotated["active_from"].as_str().unwrap()).unwrap();
        assert_eq!(active.micros() - created.micros(), 3600 * 1_000_000, "{name}: AC_KEY_PUBLISH_DELAY_SECONDS defaults to one hour");

        let es = |kid: &str, state: &str| (kid.to_owned(), "ES256".to_owned(), state.to_owned());
        let rs = |kid: &str, state: &str| (kid.to_owned(), "RS256".to_owned(), state.to_owned());
        assert_eq!(key_states(&cli), vec![es(&kid1, "signing"), rs(&kid_rs, "signing"), rs(&kid2, "pending")], "{name}");
        let text = cli.run(&["keys", "list"]);
        assert!(text.stdout.contains(&kid1) && text.stdout.contains("signe") && text.stdout.contains("en attente"), "{name}: {}", text.stdout);
        assert!(text.stdout.contains(&format!("ES256 : signe avec {kid1}")) && text.stdout.contains(&format!("RS256 : signe avec {kid_rs}")), "{name}: {}", text.stdout);
        assert!(!text.stdout.contains(&d) && !cli.json(&["keys", "list"]).to_string().contains(&d), "{name}");

        // The RS256 key is the only one signing RS256 until its successor is active.
        assert_refused(&cli, &["keys", "retire", "--kid", &kid_rs], "seule qui signe en RS256");

        // An ES256 rotation with no delay takes over at once; then the first key can be retired.
        let third = cli.json_with(&["keys", "rotate"], &[("AC_KEY_PUBLISH_DELAY_SECONDS", "0")]);
        let kid3 = third["kid"].as_str().unwrap().to_owned();
        assert_eq!((third["alg"].as_str(), third["state"].as_str()), (Some("ES256"), Some("signing")), "{name}");
        let retired = cli.json(&["keys", "retire", "--kid", &kid1]);
        assert_eq!((retired["state"].as_str(), retired["published"].as_bool()), (Some("retired"), Some(true)), "{name}: published during the grace period");
        assert!(retired["published_until"].is_string(), "{name}");
        let file: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        assert!(file["retired_at"].is_string(), "{name}: the retirement is in the file");
        assert_eq!(
            key_states(&cli),
            vec![es(&kid1, "retired"), rs(&kid_rs, "signing"), es(&kid3, "signing"), rs(&kid2, "pending")],
            "{name}: the ES256 rotation left RS256 as it was (keys listed by active_from)"
        );

        assert_eq!(
            signing_entries(&cli),
            vec![
                ("generate".into(), kid1.clone(), "ES256".into(), "cli".into()),
                ("generate".into(), kid_rs.clone(), "RS256".into(), "cli".into()),
                ("rotate".into(), kid2.clone(), "RS256".into(), "cli".into()),
                ("rotate".into(), kid3.clone(), "ES256".into(), "cli".into()),
                ("retire".into(), kid1.clone(), "ES256".into(), "cli".into()),
            ],
            "{name}"
        );
        assert_eq!(cli.json(&["journal", "verify"])["ok"], true, "{name}");
    }
}

#[test]
fn bad_signing_key_input_gets_exit_2_and_writes_nothing() {
    for cli in Cli::both() {
        let name = cli.name();
        // Nothing yet: rotating needs a first key of the algorithm, and a bad algorithm creates nothing.
        assert_refused(&cli, &["keys", "rotate"], "broker keys generate --alg ES256");
        assert_refused(&cli, &["keys", "rotate", "--alg", "RS256"], "broker keys generate --alg RS256");
        assert_refused(&cli, &["keys", "generate", "--alg", "HS256"], "ES256 ou RS256");
        assert!(signing_files(&cli).is_empty(), "{name}");

        let kid = cli.json(&["keys", "generate", "--alg", "RS256"])["kid"].as_str().unwrap().to_owned();
        let files = signing_files(&cli);
        assert_eq!(files.len(), 1, "{name}");
        assert_refused(&cli, &["keys", "rotate", "--alg", "none"], "ES256 ou RS256");
        assert_refused(&cli, &["keys", "generate", "--alg", "RS256"], "broker keys rotate --alg RS256");
        assert_refused(&cli, &["keys", "rotate"], "broker keys generate --alg ES256");
        assert_refused(&cli, &["keys", "retire", "--kid", "inconnue"], "inconnue");
        assert_refused(&cli, &["keys", "retire", "--kid", "../seal"], "inconnue");
        // Key ids are base64url: one may begin with « - », and is still taken as the value.
        assert_refused(&cli, &["keys", "retire", "--kid", "-inconnue"], "« -inconnue »");
        assert_refused(&cli, &["keys", "retire", "--kid", &kid], "seule qui signe en RS256");
        assert_eq!(signing_files(&cli), files, "{name}: no key file created or changed");
        assert_eq!(signing_entries(&cli).len(), 1, "{name}");

        // A key of the other algorithm signing beside it does not make it retirable.
        let es = cli.json(&["keys", "generate"]);
        assert_eq!(es["alg"], "ES256", "{name}");
        assert_refused(&cli, &["keys", "retire", "--kid", &kid], "broker keys rotate --alg RS256");
        assert_eq!(signing_entries(&cli).len(), 2, "{name}");
        assert_eq!(signing_files(&cli).len(), 2, "{name}");
    }
}

#[test]
fn production_needs_a_publish_delay_longer_than_the_jwks_cache() {
    let cli = Cli::new(TestDb::sqlite());
    let prod = [("AC_ENV", "production"), ("AC_ISSUER", "https://aidants.exemple.fr")];
    let o = cli.run_with(&["keys", "list"], &[prod[0], prod[1], ("AC_KEY_PUBLISH_DELAY_SECONDS", "60")]);
    assert_eq!(o.code, 2, "{}", o.stderr);
    assert!(o.stderr.contains("AC_KEY_PUBLISH_DELAY_SECONDS") && o.stderr.contains("300"), "{}", o.stderr);
    assert_eq!(cli.run_with(&["keys", "list"], &[prod[0], prod[1], ("AC_KEY_PUBLISH_DELAY_SECONDS", "300")]).code, 0);
    assert_eq!(cli.run_with(&["keys", "list"], &[("AC_KEY_PUBLISH_DELAY_SECONDS", "-1")]).code, 2);
}

/// Usagers in the database (`admin usager create` writes no journal entry).
fn usager_count(cli: &Cli) -> i64 {
    use diesel::prelude::*;
    cli.t.db.read(|c| Ok(broker_store::schema::usagers::table.count().get_result::<i64>(c)?)).unwrap()
}

/// A structure (optionally restricted to some démarches) with one aidant.
fn structure(cli: &Cli, siret: &str, email: &str, demarches: Option<&str>) -> String {
    let mut args = vec!["admin", "organisation", "create", "--name", "CCAS de Roubaix", "--siret", siret];
    if let Some(d) = demarches {
        args.extend(["--demarches", d]);
    }
    let org = cli.json(&args)["id"].as_i64().unwrap().to_string();
    cli.json(&["admin", "aidant", "create", "--organisation", &org, "--email", email, "--first-name", "Awa", "--last-name", "Diallo"]);
    org
}

fn usager(cli: &Cli, fc_sub: &str) -> Value {
    cli.json(&[
        "admin", "usager", "create", "--given-name", "Jean Pierre", "--family-name", "Lefèvre", "--birthdate", "1950-00-00",
        "--gender", "male", "--birthplace", "59512", "--birthcountry", "99100", "--email", "JP.Lefevre@exemple.fr", "--fc-sub", fc_sub,
    ])
}

fn demarches_of(m: &Value) -> Vec<(String, String)> {
    m["autorisations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| (a["demarche"].as_str().unwrap().to_owned(), a["status"].as_str().unwrap_or_default().to_owned()))
        .collect()
}

#[test]
fn usagers_and_mandats_are_seeded_through_the_cli_and_listed() {
    for cli in Cli::both() {
        let name = cli.name();
        let org = structure(&cli, "81234567800013", "awa.diallo@exemple.fr", None);
        let u = usager(&cli, "fc-sub-123");
        let id = u["id"].as_i64().unwrap();
        let sub = u["sub"].as_str().unwrap().to_owned();
        assert!(sub.len() == 64 && sub.bytes().all(|b| b.is_ascii_hexdigit()) && !sub.contains("fc-sub"), "{name}: {sub}");
        assert_eq!(usager(&cli, "fc-sub-123"), u, "{name}: same FranceConnect sub, same usager");
        let abroad = cli.json(&[
            "admin", "usager", "create", "--given-name", "Fatima", "--family-name", "Benali", "--birthdate", "1962-03-00",
            "--gender", "female", "--birthcountry", "99352", "--email", "f.benali@exemple.fr", "--preferred-username", "Roux", "--fc-sub", "fc-sub-456",
        ]);
        assert_ne!(abroad["id"], u["id"], "{name}");
        assert_ne!(abroad["sub"], u["sub"], "{name}");
        assert_eq!(usager_count(&cli), 2, "{name}");
        assert_eq!(cli.journal_entries(), 2, "{name}: no journal action for a usager made by hand");

        let id_s = id.to_string();
        let m = cli.json(&["admin", "mandat", "create", "--aidant", "Awa.Diallo@exemple.fr", "--usager", &id_s, "--demarches", "argent,famille", "--duree", "365"]);
        let mandat_id = m["mandat_id"].as_i64().unwrap();
        let auts: Vec<(&str, i64)> = m["autorisations"].as_array().unwrap().iter().map(|a| (a["demarche"].as_str().unwrap(), a["id"].as_i64().unwrap())).collect();
        assert_eq!(auts.iter().map(|a| a.0).collect::<Vec<_>>(), vec!["famille", "argent"], "{name}: canonical order");
        let created = broker_core::Timestamp::now();
        let expires = broker_core::Timestamp::parse_rfc3339(m["expires_at"].as_str().unwrap()).unwrap();
        assert!((expires.micros() - created.plus_days(365).micros()).abs() < 60_000_000, "{name}: expires in 365 days");
        assert_eq!((m["organisation_id"].to_string(), m["usager_id"].as_i64()), (org.clone(), Some(id)), "{name}");

        let listed = cli.json(&["admin", "mandat", "list", "--organisation", &org]);
        let list = listed.as_array().unwrap();
        assert_eq!(list.len(), 1, "{name}");
        assert_eq!((list[0]["mandat_id"].as_i64(), list[0]["usager_id"].as_i64(), list[0]["status"].as_str()), (Some(mandat_id), Some(id), Some("active")), "{name}");
        assert_eq!(list[0]["expires_at"], m["expires_at"], "{name}");
        assert_eq!(demarches_of(&list[0]), vec![("famille".into(), "active".into()), ("argent".into(), "active".into())], "{name}");

        // A second mandat for argent supersedes the first one's argent and keeps famille.
        let m2 = cli.json(&["admin", "mandat", "create", "--aidant", "awa.diallo@exemple.fr", "--usager", &id_s, "--demarches", "argent", "--duree", "1"]);
        let argent_old = auts.iter().find(|a| a.0 == "argent").unwrap().1;
        assert_eq!(m2["superseded"], serde_json::json!([argent_old]), "{name}");
        let list = cli.json(&["admin", "mandat", "list", "--organisation", &org]);
        assert_eq!(demarches_of(&list[0]), vec![("famille".into(), "active".into()), ("argent".into(), "revoked".into())], "{name}");
        assert_eq!(demarches_of(&list[1]), vec![("argent".into(), "active".into())], "{name}");
        let text = cli.run(&["admin", "mandat", "list", "--organisation", &org]);
        assert!(text.stdout.contains("actif") && text.stdout.contains("argent"), "{name}: {}", text.stdout);

        let v = cli.json(&["journal", "verify"]);
        assert_eq!(v["ok"], true, "{name}");
        assert_eq!(v["entries"], 2 + 3 + 3, "{name}: mandat + 2 autorisations, then mandat + autorisation + supersession");
    }
}

#[test]
fn bad_usager_and_mandat_input_gets_exit_2_and_writes_nothing() {
    for cli in Cli::both() {
        let name = cli.name();
        let org = structure(&cli, "81234567800013", "awa.diallo@exemple.fr", Some("social,logement"));
        let id = usager(&cli, "fc-sub-123")["id"].as_i64().unwrap().to_string();
        let person = |birthdate: &'static str, birthplace: &'static str, birthcountry: &'static str, gender: &'static str| {
            vec![
                "admin", "usager", "create", "--given-name", "Jean", "--family-name", "Martin", "--birthdate", birthdate, "--gender", gender,
                "--birthplace", birthplace, "--birthcountry", birthcountry, "--email", "jm@exemple.fr", "--fc-sub", "autre-sub",
            ]
        };
        assert_refused(&cli, &person("1950-02-30", "59512", "99100", "male"), "birthdate");
        assert_refused(&cli, &person("1950-00-12", "59512", "99100", "male"), "birthdate");
        assert_refused(&cli, &person("1950-01-01", "59512", "99109", "male"), "birthplace");
        assert_refused(&cli, &person("1950-01-01", "", "99100", "male"), "birthplace");
        assert_refused(&cli, &person("1950-01-01", "59512", "99100", "homme"), "gender");
        assert_eq!(usager_count(&cli), 1, "{name}: no usager written");

        let mandat = |aidant: &'static str, usager: &str, demarches: &'static str, duree: &'static str| -> Vec<String> {
            ["admin", "mandat", "create", "--aidant", aidant, "--usager", usager, "--demarches", demarches, "--duree", duree].map(String::from).to_vec()
        };
        for (args, needle) in [
            (mandat("awa.diallo@exemple.fr", &id, "social,impots", "31"), "impots"),
            (mandat("awa.diallo@exemple.fr", &id, "", "31"), "vide"),
            (mandat("awa.diallo@exemple.fr", &id, "social", "30"), "1, 31, 182 ou 365"),
            (mandat("awa.diallo@exemple.fr", &id, "social", "366"), "1, 31, 182 ou 365"),
            (mandat("awa.diallo@exemple.fr", &id, "social", "un an"), "1, 31, 182 ou 365"),
            (mandat("inconnu@exemple.fr", &id, "social", "31"), "aucun aidant"),
            (mandat("pas-une-adresse", &id, "social", "31"), "e-mail"),
            (mandat("awa.diallo@exemple.fr", "999", "social", "31"), "usager inconnu"),
            (mandat("awa.diallo@exemple.fr", &id, "social,argent", "31"), "argent"),
        ] {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            assert_refused(&cli, &args, needle);
        }
        cli.json(&["admin", "aidant", "deactivate", "--email", "awa.diallo@exemple.fr"]);
        assert_refused(&cli, &mandat("awa.diallo@exemple.fr", &id, "social", "31").iter().map(String::as_str).collect::<Vec<_>>(), "désactivé");
        assert_eq!(cli.json(&["admin", "mandat", "list", "--organisation", &org]), serde_json::json!([]), "{name}: no mandat written");
        assert_refused(&cli, &["admin", "mandat", "list", "--organisation", "999"], "structure inconnue");

        // Usagers and mandats made by hand are for development only.
        let prod = [("AC_ENV", "production"), ("AC_ISSUER", "https://aidants.exemple.fr")];
        let before = cli.journal_entries();
        let m_args = mandat("awa.diallo@exemple.fr", &id, "social", "31");
        for args in [person("1950-01-01", "59512", "99100", "male"), m_args.iter().map(String::as_str).collect()] {
            let o = cli.run_with(&args, &prod);
            assert_eq!(o.code, 2, "{name}: {args:?}: {}", o.stderr);
            assert!(o.stderr.contains("réservé au développement"), "{name}: {}", o.stderr);
        }
        assert_eq!((cli.journal_entries(), usager_count(&cli)), (before, 1), "{name}");
    }
}

#[test]
fn an_autorisation_is_revoked_once_by_an_aidant_of_its_structure() {
    for cli in Cli::both() {
        let name = cli.name();
        let org = structure(&cli, "81234567800013", "awa.diallo@exemple.fr", None);
        structure(&cli, "73282932000074", "autre@exemple.fr", None);
        let id = usager(&cli, "fc-sub-123")["id"].as_i64().unwrap().to_string();
        let m = cli.json(&["admin", "mandat", "create", "--aidant", "awa.diallo@exemple.fr", "--usager", &id, "--demarches", "social,argent", "--duree", "182"]);
        let aut = |d: &str| m["autorisations"].as_array().unwrap().iter().find(|a| a["demarche"] == d).unwrap()["id"].as_i64().unwrap().to_string();
        let (social, argent) = (aut("social"), aut("argent"));

        assert_refused(&cli, &["admin", "mandat", "revoke", "--aidant", "autre@exemple.fr", "--autorisation", &social], "autorisation inconnue");
        assert_refused(&cli, &["admin", "mandat", "revoke", "--aidant", "awa.diallo@exemple.fr", "--autorisation", "999"], "autorisation inconnue");

        let r = cli.json(&["admin", "mandat", "revoke", "--aidant", "awa.diallo@exemple.fr", "--autorisation", &social]);
        assert_eq!((r["demarche"].as_str(), r["mandat_status"].as_str(), r["mandat_id"].clone()), (Some("social"), Some("active"), m["mandat_id"].clone()), "{name}");
        assert_refused(&cli, &["admin", "mandat", "revoke", "--aidant", "awa.diallo@exemple.fr", "--autorisation", &social], "déjà révoquée");

        let r = cli.json(&["admin", "mandat", "revoke", "--aidant", "awa.diallo@exemple.fr", "--autorisation", &argent]);
        assert_eq!(r["mandat_status"], "revoked", "{name}: every autorisation revoked");
        let list = cli.json(&["admin", "mandat", "list", "--organisation", &org]);
        assert_eq!(list[0]["status"], "revoked", "{name}");
        assert_eq!(demarches_of(&list[0]), vec![("social".into(), "revoked".into()), ("argent".into(), "revoked".into())], "{name}");
        assert!(list[0]["autorisations"][0]["revoked_at"].is_string(), "{name}");

        let revocations: Vec<(Option<i64>, bool, String)> = broker_testkit::journal(&cli.t.db, |c| broker_store::journal::page(c, 0, 1000))
            .unwrap()
            .into_iter()
            .filter(|r| r.action == "autorisation_revoked")
            .map(|r| (r.autorisation, r.aidant.is_some(), r.details))
            .collect();
        let ids: Vec<String> = revocations.iter().map(|r| r.0.unwrap().to_string()).collect();
        assert_eq!(ids, vec![social.clone(), argent.clone()], "{name}");
        assert!(revocations.iter().all(|r| r.1 && r.2.contains(r#""reason":"revoked""#)), "{name}: {revocations:?}");
        assert_eq!(cli.json(&["journal", "verify"])["ok"], true, "{name}");
    }
}

/// The journal entries of one mandat: action, démarche, whether an aidant is named, and the
/// details of the entries revocation writes.
fn mandat_entries(cli: &Cli, mandat: i64) -> Vec<(String, Option<String>, bool, String)> {
    broker_testkit::journal(&cli.t.db, |c| broker_store::journal::page(c, 0, 1000))
        .unwrap()
        .into_iter()
        .filter(|r| r.mandat == Some(mandat))
        .map(|r| {
            let details = if r.action == "mandat_created" { String::new() } else { r.details };
            (r.action, r.demarche, r.aidant.is_some(), details)
        })
        .collect()
}

#[test]
fn the_cli_revokes_with_the_same_journal_entries_as_the_pages() {
    use broker_core::capability::{AidantId, AutorisationId};
    for cli in Cli::both() {
        let name = cli.name();
        structure(&cli, "81234567800013", "awa.diallo@exemple.fr", None);
        let mandat = |fc_sub: &str| {
            let id = usager(&cli, fc_sub)["id"].as_i64().unwrap().to_string();
            cli.json(&["admin", "mandat", "create", "--aidant", "awa.diallo@exemple.fr", "--usager", &id, "--demarches", "social,argent", "--duree", "182"])
        };
        let auts = |m: &Value| m["autorisations"].as_array().unwrap().iter().map(|a| a["id"].as_i64().unwrap()).collect::<Vec<_>>();
        let (by_cli, by_page) = (mandat("fc-sub-cli"), mandat("fc-sub-page"));

        for a in auts(&by_cli) {
            cli.json(&["admin", "mandat", "revoke", "--aidant", "awa.diallo@exemple.fr", "--autorisation", &a.to_string()]);
        }
        // The store function the usagers pages call.
        let aidant = cli.t.db.read(|c| broker_store::admin::find_aidant_by_email(c, "awa.diallo@exemple.fr")).unwrap();
        let by = broker_store::capabilities::in_organisation(&cli.t.db, AidantId(aidant.id)).unwrap();
        for a in auts(&by_page) {
            broker_store::mandat_changes::revoke_autorisation(&cli.t.db, &by, AutorisationId(a), broker_core::Timestamp::now()).unwrap();
        }

        let from_cli = mandat_entries(&cli, by_cli["mandat_id"].as_i64().unwrap());
        let from_page = mandat_entries(&cli, by_page["mandat_id"].as_i64().unwrap());
        assert_eq!(from_cli, from_page, "{name}");
        let actions: Vec<&str> = from_cli.iter().map(|e| e.0.as_str()).collect();
        assert_eq!(
            actions,
            vec![
                "mandat_created",
                "autorisation_created",
                "autorisation_created",
                "autorisation_revoked",
                "attestation_created",
                "autorisation_revoked",
                "mandat_revoked",
                "attestation_created"
            ],
            "{name}"
        );
        assert_eq!(cli.json(&["journal", "verify"])["ok"], true, "{name}");
    }
}

#[test]
fn migrate_builds_missing_journal_tiles_and_verify_reports_a_changed_tile() {
    use broker_core::journal::{Action, Entry};
    use diesel::connection::SimpleConnection;
    for cli in Cli::both() {
        let name = cli.name();
        let entries: Vec<Entry> = (0..600).map(|i| Entry::new(Action::AidantLogin).aidant(i + 1).detail("method", "totp")).collect();
        cli.t.db.write(|c| broker_store::journal::append(c, &entries)).unwrap();
        // Tiles missing, as in a journal numbered before tiles existed.
        let (forget, change) = match name {
            "sqlite" => (
                "DROP TRIGGER journal_tiles_no_update; DROP TRIGGER journal_tiles_no_delete; DELETE FROM journal_tiles;",
                "UPDATE journal_tiles SET root = zeroblob(32) WHERE level = 0 AND idx = 1",
            ),
            _ => (
                "ALTER TABLE journal_tiles DISABLE TRIGGER USER; DELETE FROM journal_tiles;",
                "UPDATE journal_tiles SET root = decode(repeat('00', 32), 'hex') WHERE level = 0 AND idx = 1",
            ),
        };
        cli.t.db.read(|c| Ok(c.batch_execute(forget)?)).unwrap();
        let m = cli.json(&["migrate"]);
        assert_eq!(m["journal_tiles_built"], 2, "{name}: {m}");
        assert_eq!(cli.json(&["journal", "verify"])["ok"], true, "{name}");

        cli.t.db.read(|c| Ok(c.batch_execute(change)?)).unwrap();
        let o = cli.run(&["--json", "journal", "verify"]);
        assert_eq!(o.code, 1, "{name}: {}", o.stdout);
        let v: Value = serde_json::from_str(o.stdout.trim()).unwrap();
        assert_eq!((v["fault"].as_str(), v["tile"].as_str(), v["first_bad_seq"].as_i64()), (Some("TileMismatch"), Some("tile/0/001"), Some(257)), "{name}: {v}");
        let text = cli.run(&["journal", "verify"]);
        assert!(text.stdout.contains("tuile tile/0/001 différente des entrées qu'elle couvre"), "{name}: {}", text.stdout);
    }
}
