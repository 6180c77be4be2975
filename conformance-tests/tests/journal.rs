//! The journal as an auditor meets it: signed checkpoints, the journal key, proofs, the
//! export and the stand-alone verifier of the real binary, and each tampering it must
//! report with its own message.

use broker_core::checkpoint::{Checkpoint, JournalKey, VerifierKey};
use broker_core::journal::parse_hash;
use broker_core::merkle;
use broker_testkit::{redis_url, TestDb};
use conformance_tests::{broker_bin, Broker};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;

/// `broker ARGS` on the storage and keys of `b`: exit code, stdout, stderr.
fn broker(b: &Broker, db: &str, args: &[&str], extra: &[(&str, &str)]) -> (i32, String, String) {
    let o = Command::new(broker_bin())
        .args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("AC_LOG", "warn")
        .env("AC_KEYS_DIR", b.dir.path().join("keys"))
        .env("AC_ISSUER", &b.issuer)
        .env("DATABASE_URL", db)
        .envs(extra.iter().copied())
        .output()
        .unwrap();
    (o.status.code().unwrap_or(-1), String::from_utf8_lossy(&o.stdout).into_owned(), String::from_utf8_lossy(&o.stderr).into_owned())
}

fn json_ok(b: &Broker, db: &str, args: &[&str]) -> Value {
    let mut all = vec!["--json"];
    all.extend_from_slice(args);
    let (code, stdout, stderr) = broker(b, db, &all, &[]);
    assert_eq!(code, 0, "broker {args:?}: {stderr}{stdout}");
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("broker {args:?}: not JSON ({e}): {stdout}"))
}

fn sqlite_url(b: &Broker) -> String {
    format!("sqlite://{}", b.dir.path().join("b.sqlite3").display())
}

fn seed_entries(b: &Broker, db: &str, n: usize) {
    for i in 0..n {
        let siret = siret(i);
        json_ok(b, db, &["admin", "organisation", "create", "--name", &format!("Structure {i}"), "--siret", &siret]);
    }
}

/// A valid SIRET (Luhn) that differs with `i`.
fn siret(i: usize) -> String {
    let base = format!("8123456{:06}", i % 1_000_000);
    for last in 0..10 {
        let s = format!("{base}{last}");
        let sum: u32 = s
            .chars()
            .rev()
            .enumerate()
            .map(|(k, c)| {
                let d = c.to_digit(10).unwrap();
                if k % 2 == 1 {
                    let x = d * 2;
                    if x > 9 { x - 9 } else { x }
                } else {
                    d
                }
            })
            .sum();
        if sum % 10 == 0 {
            return s;
        }
    }
    unreachable!()
}

fn write(dir: &Path, name: &str, content: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, content).unwrap();
    p
}

fn journal_key(b: &Broker) -> JournalKey {
    let hex_seed = std::fs::read_to_string(b.dir.path().join("keys/journal-ed25519.key")).unwrap();
    let seed: [u8; 32] = hex::decode(hex_seed.trim()).unwrap().try_into().unwrap();
    JournalKey::from_seed(&origin(b), &seed).unwrap()
}

fn origin(b: &Broker) -> String {
    format!("{}/journal", b.issuer.trim_start_matches("http://"))
}

/// Runs the stand-alone verifier and expects it to refuse with `message`.
fn refused(b: &Broker, args: &[&str], message: &str) -> String {
    let (code, stdout, stderr) = broker(b, "postgres://nobody@127.0.0.1:1/none", args, &[]);
    assert_eq!(code, 1, "{args:?} must fail: {stdout}{stderr}");
    assert!(stderr.contains(message), "{args:?}: expected « {message} », got: {stderr}");
    stderr
}

#[test]
fn export_and_checkpoint_verify_and_every_tamper_is_reported() {
    let b = Broker::start(&[("AC_JOURNAL_CHECKPOINT_SECONDS", "0")]);
    let db = sqlite_url(&b);
    seed_entries(&b, &db, 3);
    let work = tempfile::tempdir().unwrap();

    // The key, from the CLI and the public endpoint.
    let key = json_ok(&b, &db, &["journal", "key", "show"])["key"].as_str().unwrap().to_owned();
    let (status, headers, body) = b.get("/journal/cle");
    assert_eq!((status, body.trim()), (200, key.as_str()));
    assert_eq!(headers.get("content-type").unwrap(), "text/plain; charset=utf-8");
    let vkey = VerifierKey::parse(&key).unwrap();
    assert_eq!(vkey.name(), origin(&b));

    // A checkpoint, saved by an auditor, and the same from the public endpoint.
    let made = json_ok(&b, &db, &["journal", "checkpoint"]);
    let note = made["checkpoint"].as_str().unwrap().to_owned();
    let size = made["size"].as_i64().unwrap();
    let cp = vkey.verify(&note).unwrap();
    assert_eq!(cp.size as i64, size);
    assert!(size >= 3, "demo data and three structures: {size}");
    let (status, _, body) = b.get(&format!("/journal/checkpoint/{size}"));
    assert_eq!((status, body.as_str()), (200, note.as_str()));
    let saved = write(work.path(), "checkpoint.txt", &note);
    let saved = saved.to_str().unwrap();

    // The export, ending with the checkpoint that covers it (made by the export itself).
    let export = work.path().join("journal.jsonl");
    let exported = json_ok(&b, &db, &["journal", "export", "--output", export.to_str().unwrap()]);
    let entries = exported["entries"].as_i64().unwrap();
    assert_eq!(entries, size + 1, "the export covers the checkpoint's own entry");
    let text = std::fs::read_to_string(&export).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len() as i64, entries + 1);
    let last: Value = serde_json::from_str(lines[lines.len() - 1]).unwrap();
    assert_eq!(vkey.verify(last["checkpoint"].as_str().unwrap()).unwrap().size as i64, entries);
    let entry_lines: Vec<String> = lines[..lines.len() - 1].iter().map(|l| l.to_string()).collect();
    let with = |entries: &[String], name: &str| {
        let mut t = entries.join("\n");
        t.push('\n');
        t.push_str(lines[lines.len() - 1]);
        t.push('\n');
        write(work.path(), name, &t).to_str().unwrap().to_owned()
    };
    let export = export.to_str().unwrap().to_owned();

    // Intact: from the export without any database, and from the live database.
    let (code, stdout, stderr) = broker(&b, "postgres://nobody@127.0.0.1:1/none", &["--json", "journal", "verify", "--checkpoint", saved, "--export", &export, "--key", &key], &[]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    let ok: Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!((ok["ok"].as_bool(), ok["entries"].as_i64()), (Some(true), Some(entries)));
    let live = json_ok(&b, &db, &["journal", "verify", "--checkpoint", saved]);
    assert_eq!(live["ok"], true);
    assert!(live["consistent_with"].as_i64().unwrap() > size, "a newer checkpoint extends the saved one: {live}");
    // The plain verification still works.
    assert_eq!(json_ok(&b, &db, &["journal", "verify"])["ok"], true);

    // An inclusion proof, checked by the verifier; then a forged one.
    let proof = json_ok(&b, &db, &["journal", "prove", "inclusion", "--seq", "2", "--size", &size.to_string()]);
    let proof_file = write(work.path(), "proof.json", &proof.to_string());
    let (code, out, err) = broker(&b, "postgres://nobody@127.0.0.1:1/none", &["journal", "verify", "--checkpoint", saved, "--export", &export, "--key", &key, "--inclusion", proof_file.to_str().unwrap()], &[]);
    assert_eq!(code, 0, "{out}{err}");
    let mut forged = proof.clone();
    let first = forged["proof"][0].as_str().unwrap().to_owned();
    let flipped = format!("{}{}", if first.starts_with('0') { "1" } else { "0" }, &first[1..]);
    forged["proof"][0] = Value::String(flipped);
    let forged_file = write(work.path(), "forged-proof.json", &forged.to_string());
    refused(&b, &["journal", "verify", "--checkpoint", saved, "--export", &export, "--key", &key, "--inclusion", forged_file.to_str().unwrap()], "preuve falsifiée");
    let mut other_leaf = proof.clone();
    other_leaf["seq"] = Value::from(3);
    let other_file = write(work.path(), "moved-proof.json", &other_leaf.to_string());
    refused(&b, &["journal", "verify", "--checkpoint", saved, "--export", &export, "--key", &key, "--inclusion", other_file.to_str().unwrap()], "preuve falsifiée");

    let verify_export = |file: &str, message: &str| {
        refused(&b, &["journal", "verify", "--checkpoint", saved, "--export", file, "--key", &key], message)
    };

    // An edited entry.
    let mut edited = entry_lines.clone();
    assert!(edited[2].starts_with("{\"v\":1,\"seq\":3,") && edited[2].contains("\"client\":null"));
    edited[2] = edited[2].replacen("\"client\":null", "\"client\":\"x\"", 1);
    let err = verify_export(&with(&edited, "edited.jsonl"), "entrée modifiée");
    assert!(err.contains("n° 3"), "{err}");

    // A deleted entry: a gap.
    let mut deleted = entry_lines.clone();
    deleted.remove(3);
    let err = verify_export(&with(&deleted, "deleted.jsonl"), "entrée supprimée");
    assert!(err.contains("n° 4"), "{err}");

    // Two entries swapped.
    let mut swapped = entry_lines.clone();
    swapped.swap(1, 4);
    let err = verify_export(&with(&swapped, "swapped.jsonl"), "entrées permutées");
    assert!(err.contains("n° 2"), "{err}");

    // Truncated: the last entries the checkpoint covers are gone.
    let truncated = &entry_lines[..(size as usize - 2)];
    let err = verify_export(&with(truncated, "truncated.jsonl"), "journal tronqué");
    assert!(err.contains(&format!("en couvre {size}")), "{err}");

    // A fork: another root for the same size, signed by the journal key itself.
    let k = journal_key(&b);
    assert_eq!(k.verifier().to_string(), key);
    let mut other_root = cp.root;
    other_root[7] ^= 0x40;
    let fork_note = k.sign(&Checkpoint { origin: cp.origin.clone(), size: cp.size, root: other_root, time: cp.time }).unwrap();
    let fork = write(work.path(), "fork.txt", &fork_note);
    let fork = fork.to_str().unwrap();
    let err = refused(&b, &["journal", "verify", "--checkpoint", fork, "--export", &export, "--key", &key], "historique divergent (fork)");
    assert!(err.contains(&format!("taille {size}")), "{err}");
    // Against the live database too.
    let (code, _, err) = broker(&b, &db, &["journal", "verify", "--checkpoint", fork], &[]);
    assert_eq!(code, 1);
    assert!(err.contains("historique divergent (fork)"), "{err}");

    // A checkpoint signed by another key, and one whose text was changed.
    let stranger = JournalKey::generate(&cp.origin).unwrap();
    let other = write(work.path(), "other-key.txt", &stranger.sign(&cp).unwrap());
    refused(&b, &["journal", "verify", "--checkpoint", other.to_str().unwrap(), "--export", &export, "--key", &key], "signé par une autre clé");
    let changed = write(work.path(), "changed.txt", &note.replacen(&format!("\n{size}\n"), &format!("\n{}\n", size - 1), 1));
    refused(&b, &["journal", "verify", "--checkpoint", changed.to_str().unwrap(), "--export", &export, "--key", &key], "signature invalide");

    // The export's own last line removed.
    let headless = write(work.path(), "no-checkpoint.jsonl", &(entry_lines.join("\n") + "\n"));
    refused(&b, &["journal", "verify", "--checkpoint", saved, "--export", headless.to_str().unwrap(), "--key", &key], "export tronqué");
}

#[test]
fn public_endpoints_serve_checkpoints_key_and_proofs_on_postgres() {
    let t = TestDb::postgres_url_only();
    let prefix = format!("ac-journal-{}:", hex::encode(rand::random::<[u8; 6]>()));
    let b = Broker::start(&[("DATABASE_URL", &t.url), ("REDIS_URL", &redis_url()), ("AC_CACHE_PREFIX", &prefix), ("AC_JOURNAL_CHECKPOINT_SECONDS", "1")]);
    let db = t.url.clone();
    let (_, _, key) = b.get("/journal/cle");
    let vkey = VerifierKey::parse(key.trim()).unwrap();

    // The server signs a checkpoint of the demo data on its own.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let first = loop {
        let (status, headers, body) = b.get("/journal/checkpoint");
        if status == 200 {
            assert_eq!(headers.get("content-type").unwrap(), "text/plain; charset=utf-8");
            break vkey.verify(&body).unwrap();
        }
        assert_eq!(status, 404, "{body}");
        assert!(std::time::Instant::now() < deadline, "no checkpoint after 20 s");
        std::thread::sleep(std::time::Duration::from_millis(200));
    };
    seed_entries(&b, &db, 2);
    let second = loop {
        let (_, _, body) = b.get("/journal/checkpoint");
        let cp = vkey.verify(&body).unwrap();
        if cp.size >= first.size + 3 {
            break cp;
        }
        assert!(std::time::Instant::now() < deadline + std::time::Duration::from_secs(10), "no new checkpoint");
        std::thread::sleep(std::time::Duration::from_millis(200));
    };

    for seq in 1..=second.size {
        let (status, _, body) = b.get(&format!("/journal/preuves/inclusion?seq={seq}&taille={}", second.size));
        assert_eq!(status, 200, "{body}");
        let p: Value = serde_json::from_str(&body).unwrap();
        let proof: Vec<merkle::Hash> = p["proof"].as_array().unwrap().iter().map(|h| parse_hash(h.as_str().unwrap()).unwrap()).collect();
        let leaf = parse_hash(p["leaf_hash"].as_str().unwrap()).unwrap();
        assert_eq!(merkle::verify_inclusion(&leaf, seq - 1, second.size, &proof, &second.root), Ok(()), "seq {seq}");
        assert_eq!(vkey.verify(p["checkpoint"].as_str().unwrap()).unwrap(), second);
    }
    let (status, _, body) = b.get(&format!("/journal/preuves/coherence?de={}&a={}", first.size, second.size));
    assert_eq!(status, 200, "{body}");
    let p: Value = serde_json::from_str(&body).unwrap();
    let proof: Vec<merkle::Hash> = p["proof"].as_array().unwrap().iter().map(|h| parse_hash(h.as_str().unwrap()).unwrap()).collect();
    assert_eq!(merkle::verify_consistency(first.size, second.size, &first.root, &second.root, &proof), Ok(()));
    let (status, _, body) = b.get(&format!("/journal/checkpoint/{}", first.size));
    assert_eq!(vkey.verify(&body).unwrap(), first, "{status}");

    for (path, status) in [
        ("/journal/checkpoint/999999".to_owned(), 404),
        ("/journal/checkpoint/abc".to_owned(), 400),
        ("/journal/preuves/inclusion?seq=1&taille=999999".to_owned(), 404),
        (format!("/journal/preuves/inclusion?seq={}&taille={}", second.size + 1, second.size), 400),
        ("/journal/preuves/inclusion?seq=x".to_owned(), 400),
        ("/journal/preuves/inclusion".to_owned(), 400),
        (format!("/journal/preuves/coherence?de=1&a={}", second.size + 500), 404),
        (format!("/journal/preuves/coherence?de={}&a={}", second.size, first.size), 400),
        ("/journal/preuves/coherence?de=1".to_owned(), 400),
    ] {
        let (got, headers, body) = b.get(&path);
        assert_eq!(got, status, "{path}: {body}");
        assert!(headers.get("content-type").unwrap().to_str().unwrap().starts_with("application/json"), "{path}");
        assert!(serde_json::from_str::<Value>(&body).unwrap()["error"].is_string(), "{path}: {body}");
    }
    drop(b);
}

#[test]
fn production_needs_the_journal_key_and_says_how_to_make_it() {
    let dir = tempfile::tempdir().unwrap();
    let run = |args: &[&str]| {
        let o = Command::new(broker_bin())
            .args(args)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("AC_ENV", "production")
            .env("AC_ISSUER", "https://aidantsconnect.exemple.gouv.fr")
            .env("AC_SMTP_URL", "smtp://127.0.0.1:1")
            .env("AC_KEYS_DIR", dir.path().join("keys"))
            .env("DATABASE_URL", format!("sqlite://{}", dir.path().join("b.sqlite3").display()))
            .output()
            .unwrap();
        (o.status.code().unwrap_or(-1), String::from_utf8_lossy(&o.stdout).into_owned(), String::from_utf8_lossy(&o.stderr).into_owned())
    };
    assert_eq!(run(&["keys", "init"]).0, 0, "creates the journal key as well");
    let key_file = dir.path().join("keys/journal-ed25519.key");
    assert!(key_file.exists());
    std::fs::remove_file(&key_file).unwrap();
    let (code, _, err) = run(&["serve"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("clé du journal manquante") && err.contains("broker journal key generate"), "{err}");
    let (code, out, err) = run(&["--json", "journal", "key", "generate"]);
    assert_eq!(code, 0, "{err}");
    let made: Value = serde_json::from_str(out.trim()).unwrap();
    let key = made["key"].as_str().unwrap();
    assert!(key.starts_with("aidantsconnect.exemple.gouv.fr/journal+"), "{key}");
    let (_, shown, _) = run(&["journal", "key", "show"]);
    assert_eq!(shown.trim(), key);
    let (code, _, err) = run(&["journal", "key", "generate"]);
    assert_eq!(code, 2, "never replaced: {err}");
    let (code, _, err) = run(&["serve"]);
    assert_ne!(code, 0);
    assert!(!err.contains("clé du journal"), "the journal key is found now: {err}");
}
