//! An auditor's export of a large journal: 100,000 entries streamed over HTTP by the real
//! broker with flat memory (its peak RSS barely moves while it sends tens of megabytes),
//! then checked by the stand-alone verifier, with no database, which names the one entry
//! changed in it.

use broker_core::journal::{Action, Entry};
use broker_core::totp::Seed;
use broker_core::Demarche;
use broker_store::{journal, DatabaseUrl, Db};
use conformance_tests::CookieJar;
use conformance_tests::broker_bin;
use conformance_tests::idp::{Aidant, Backend, Idp, Page};
use serde_json::Value;
use std::io::{BufRead, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// Entries the test adds to the journal.
const ENTRIES: usize = 100_000;
/// Entries per write transaction of the second writer.
const BATCH: usize = 2_000;
/// The export must weigh at least this much…
const MIN_EXPORT_BYTES: u64 = 25 * 1024 * 1024;
/// …while the broker's peak RSS grows by less than this.
const MAX_PEAK_GROWTH_KB: u64 = 24 * 1024;

/// How often the broker's RSS is read while the export arrives (bytes)…
const SAMPLE_EVERY: u64 = 5 * 1024 * 1024;
/// …and how much it may grow from the first reading to the last one.
const MAX_STREAMING_GROWTH_KB: u64 = 8 * 1024;

/// `VmHWM` (peak resident set) and `VmRSS` of a process, in kB.
fn memory_kb(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |name: &str| -> u64 {
        let line = status.lines().find(|l| l.starts_with(name)).unwrap_or_else(|| panic!("no {name} in /proc/{pid}/status"));
        line[name.len()..].trim().trim_end_matches("kB").trim().parse().unwrap()
    };
    (field("VmHWM:"), field("VmRSS:"))
}

/// A minimal browser of its own (the shared one reads bodies into a `String`, up to
/// ureq's 10 MB limit): keeps cookies, does not follow redirects, and can stream a body.
struct Client {
    base: String,
    issuer: String,
    cookies: CookieJar,
    agent: ureq::Agent,
}

impl Client {
    fn new(idp: &Idp) -> Client {
        let agent = ureq::Agent::config_builder().http_status_as_error(false).max_redirects(0).timeout_global(Some(Duration::from_secs(120))).build().into();
        Client { base: idp.brokers[0].base.clone(), issuer: idp.issuer().to_owned(), cookies: CookieJar::default(), agent }
    }

    fn url(&self, target: &str) -> String {
        let path = target.strip_prefix(&self.issuer).unwrap_or(target);
        assert!(path.starts_with('/'), "not an address of the broker: {target}");
        format!("{}{path}", self.base)
    }

    fn cookie_header(&self) -> String {
        self.cookies.header().unwrap_or_default()
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

    fn get(&mut self, target: &str) -> Page {
        let res = self.agent.get(self.url(target)).header("Cookie", self.cookie_header()).call().unwrap();
        self.page(res)
    }

    fn post(&mut self, target: &str, form: &[(&str, &str)]) -> Page {
        let res = self.agent.post(self.url(target)).header("Cookie", self.cookie_header()).send_form(form.iter().copied()).unwrap();
        self.page(res)
    }

    /// GETs `target` and copies the body, as it arrives, into `file`: (status,
    /// content type, bytes written, and the `VmRSS` of process `pid` each time another
    /// [`SAMPLE_EVERY`] bytes have arrived: (bytes so far, kB)).
    fn download(&mut self, target: &str, file: &Path, pid: u32) -> (u16, String, u64, Vec<(u64, u64)>) {
        let res = self.agent.get(self.url(target)).header("Cookie", self.cookie_header()).call().unwrap();
        let status = res.status().as_u16();
        let ctype = res.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
        let mut reader = res.into_body().into_reader();
        let mut out = BufWriter::new(std::fs::File::create(file).unwrap());
        let mut buf = vec![0u8; 64 * 1024];
        let (mut written, mut profile) = (0u64, Vec::new());
        loop {
            let n = reader.read(&mut buf).unwrap();
            if n == 0 {
                break;
            }
            out.write_all(&buf[..n]).unwrap();
            if (written + n as u64) / SAMPLE_EVERY > written / SAMPLE_EVERY {
                profile.push((written + n as u64, memory_kb(pid).1));
            }
            written += n as u64;
        }
        out.flush().unwrap();
        (status, ctype, written, profile)
    }
}

/// Sign-in messages written to the outbox for `email`, oldest first.
fn messages(outbox: &Path, email: &str) -> Vec<(String, String)> {
    let Ok(dir) = std::fs::read_dir(outbox) else { return Vec::new() };
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

/// The aidant's sign-in (e-mail and TOTP code, then the e-mailed link), as
/// `Idp::sign_in` does it, with the cookies kept in `c`.
fn sign_in(idp: &Idp, c: &mut Client, aidant: &Aidant, outbox: &Path) {
    let form = c.get("/connexion");
    assert_eq!(form.status, 200, "sign-in form: {}", form.body);
    let suite = form.hidden("suite").unwrap_or_default();
    let before = messages(outbox, &aidant.email).len();
    let code = idp.totp(aidant);
    let sent = c.post("/connexion", &[("csrf", &form.csrf()), ("email", &aidant.email), ("code", &code), ("suite", &suite)]);
    assert!(sent.shows("Consultez votre messagerie"), "sign-in refused ({}): {}\n{}", sent.status, alert(&sent), tail(&idp.logs()));
    let deadline = Instant::now() + Duration::from_secs(20);
    let text = loop {
        let m = messages(outbox, &aidant.email);
        if m.len() > before {
            break m.last().unwrap().1.clone();
        }
        assert!(Instant::now() < deadline, "no sign-in e-mail in the outbox {}", outbox.display());
        std::thread::sleep(Duration::from_millis(50));
    };
    let prefix = format!("{}/connexion/lien?jeton=", idp.issuer());
    let at = text.find(&prefix).unwrap_or_else(|| panic!("no sign-in link in: {text}"));
    let link: String = text[at..].chars().take_while(|c| !c.is_whitespace()).collect();
    let jeton = link.split("jeton=").nth(1).unwrap().to_owned();
    let confirm = c.get(&link);
    assert_eq!(confirm.status, 200, "link page: {}\n{}", alert(&confirm), tail(&idp.logs()));
    let done = c.post("/connexion/lien", &[("csrf", &confirm.csrf()), ("jeton", &jeton)]);
    assert_eq!(done.status, 303, "link confirmation: {}\n{}", alert(&done), tail(&idp.logs()));
}

/// The text of a page's title and error alert (to explain a failure).
fn alert(p: &Page) -> String {
    let text = |from: &str, to: &str| p.body.find(from).map(|i| &p.body[i..]).and_then(|s| s.find(to).map(|j| s[..j].to_owned()));
    let strip = |s: String| {
        let mut out = String::new();
        let mut tag = false;
        for ch in s.chars() {
            match ch {
                '<' => tag = true,
                '>' => tag = false,
                c if !tag => out.push(c),
                _ => {}
            }
        }
        out.split_whitespace().collect::<Vec<_>>().join(" ")
    };
    format!("{} | {}", text("<title", "</title>").map(strip).unwrap_or_default(), text("fr-alert--error", "</div>").map(strip).unwrap_or_default())
}

/// The last lines the broker printed.
fn tail(logs: &str) -> String {
    let lines: Vec<&str> = logs.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}

/// The stand-alone verifier, with a database it cannot reach and no keys: exit code,
/// stdout, stderr.
fn verify(idp: &Idp, key: &str, checkpoint: &Path, export: &Path) -> (i32, String, String) {
    let no_keys = tempfile::tempdir().unwrap();
    let o = Command::new(broker_bin())
        .args(["--json", "journal", "verify", "--checkpoint"])
        .arg(checkpoint)
        .arg("--export")
        .arg(export)
        .args(["--key", key])
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("AC_LOG", "warn")
        .env("AC_ISSUER", idp.issuer())
        .env("AC_KEYS_DIR", no_keys.path())
        .env("DATABASE_URL", "postgres://nobody@127.0.0.1:1/none")
        .output()
        .unwrap();
    (o.status.code().unwrap_or(-1), String::from_utf8_lossy(&o.stdout).into_owned(), String::from_utf8_lossy(&o.stderr).into_owned())
}

#[test]
fn an_export_of_100k_entries_streams_with_flat_memory_and_verifies() {
    let started = Instant::now();
    let idp = Idp::start(Backend::Sqlite);
    let pid = idp.brokers[0].pid().expect("broker running");
    let url = idp.database_url().to_owned();
    let work: PathBuf = Path::new(url.strip_prefix("sqlite://").expect("a SQLite URL")).parent().unwrap().to_path_buf();
    let outbox = work.join("outbox");
    let org = idp.organisation("France Services de Tourcoing", None);
    let aidant = idp.aidant(org);
    let db = Db::open(&DatabaseUrl::parse(&url), 2).unwrap();
    let head_before = journal::head(&mut db.conn().unwrap()).unwrap().0;

    // A second writer on the broker's SQLite file fills the journal while the broker
    // runs; the auditor is created and signs in once it is done.
    let filling = {
        let db = db.clone();
        let aidant_id = aidant.id;
        std::thread::spawn(move || {
            let t = Instant::now();
            let motif = "Consultation du dossier de l'usager pour une demande d'aide au logement, pièces justificatives vérifiées sur place avec l'aidant";
            for start in (0..ENTRIES).step_by(BATCH) {
                let entries: Vec<Entry> = (start..start + BATCH)
                    .map(|i| {
                        Entry::new(Action::AutorisationUsed)
                            .aidant(aidant_id)
                            .organisation(org)
                            .usager(1_000 + (i % 500) as i64)
                            .mandat(5_000 + (i % 700) as i64)
                            .autorisation(9_000 + i as i64)
                            .demarche(Demarche::Logement)
                            .client("client-x")
                            .detail("motif", motif)
                            .detail("n", i as i64)
                    })
                    .collect();
                db.write(|c| journal::append(c, &entries)).unwrap_or_else(|e| panic!("second writer, batch at {start}: {e}"));
            }
            t.elapsed()
        })
    };
    let fill_time = filling.join().expect("second writer");
    let email = format!("auditeur-{}@controle.exemple.gouv.fr", hex::encode(rand::random::<[u8; 4]>()));
    let created = idp.cli_ok(&["admin", "auditor", "create", "--email", &email, "--first-name", "Paul", "--last-name", "Contrôle"]);
    assert_eq!(created["email"].as_str(), Some(email.as_str()));
    let enrolled = idp.cli_ok(&["admin", "totp", "enroll-app", "--aidant", &email]);
    let auditor = Aidant {
        id: created["id"].as_i64().expect("auditor id"),
        email: email.clone(),
        seed: Seed::from_base32(enrolled["secret"].as_str().expect("TOTP secret")).expect("base32 secret"),
        organisation: 0,
    };
    let mut client = Client::new(&idp);
    sign_in(&idp, &mut client, &auditor, &outbox);
    let head_after = journal::head(&mut db.conn().unwrap()).unwrap().0;
    assert!(head_after >= head_before + ENTRIES as i64, "every entry numbered: {head_before} → {head_after}");
    assert_eq!(idp.brokers[0].get("/healthz").0, 200, "the broker still serves:\n{}", idp.logs());
    println!("journal filled: {ENTRIES} entries in {} transactions in {:.1} s (head {head_before} → {head_after})", ENTRIES / BATCH, fill_time.as_secs_f64());

    // The export, streamed to a file; the broker's peak RSS before and after.
    let dir = tempfile::tempdir().unwrap();
    let export = dir.path().join("journal.jsonl");
    let (peak_before, rss_before) = memory_kb(pid);
    let t = Instant::now();
    let (status, ctype, bytes, profile) = client.download("/audit/export.jsonl", &export, pid);
    let export_time = t.elapsed();
    let (peak_after, rss_after) = memory_kb(pid);
    assert_eq!(status, 200, "export: {}", std::fs::read_to_string(&export).unwrap_or_default().chars().take(2000).collect::<String>());
    assert!(ctype.starts_with("application/jsonl"), "{ctype}");
    println!(
        "export: {bytes} bytes ({:.1} MiB) in {:.1} s; broker VmHWM {peak_before} kB → {peak_after} kB (+{} kB), VmRSS {rss_before} kB → {rss_after} kB",
        bytes as f64 / 1048576.0,
        export_time.as_secs_f64(),
        peak_after.saturating_sub(peak_before)
    );
    println!("broker VmRSS as the export arrived (MiB received: kB): {}", profile.iter().map(|(b, kb)| format!("{}: {kb}", b / 1048576)).collect::<Vec<_>>().join(", "));
    assert_eq!(std::fs::metadata(&export).unwrap().len(), bytes);
    // While the body flows (tens of megabytes), the broker's resident memory stays put.
    let (first, last) = (profile.first().unwrap(), profile.last().unwrap());
    assert!(profile.len() >= 5, "{profile:?}");
    assert!(
        last.1.saturating_sub(first.1) < MAX_STREAMING_GROWTH_KB,
        "the broker's RSS grew from {} kB to {} kB between {} and {} bytes received (bound {MAX_STREAMING_GROWTH_KB} kB)",
        first.1,
        last.1,
        first.0,
        last.0
    );
    assert!(bytes >= MIN_EXPORT_BYTES, "export of {bytes} bytes, at least {MIN_EXPORT_BYTES} expected");
    assert!(
        peak_after.saturating_sub(peak_before) < MAX_PEAK_GROWTH_KB,
        "the broker's peak RSS grew by {} kB while exporting {bytes} bytes (bound {MAX_PEAK_GROWTH_KB} kB)",
        peak_after - peak_before
    );

    // Every entry line, then the checkpoint that covers them; one line from the middle.
    let mut lines = 0usize;
    let mut last = String::new();
    let middle_at = ENTRIES / 2;
    let mut middle = String::new();
    for line in BufReader::new(std::fs::File::open(&export).unwrap()).lines() {
        let line = line.unwrap();
        if !last.is_empty() {
            assert!(last.starts_with("{\"v\":1,\"seq\":"), "line {lines} is not an entry: {last}");
        }
        lines += 1;
        if lines == middle_at {
            middle = line.clone();
        }
        last = line;
    }
    let entry_lines = lines - 1;
    assert!(entry_lines >= ENTRIES, "{entry_lines} entry lines");
    let tail: Value = serde_json::from_str(&last).unwrap();
    let note = tail["checkpoint"].as_str().unwrap_or_else(|| panic!("last line is not the checkpoint: {last}")).to_owned();
    let note_file = dir.path().join("checkpoint.txt");
    std::fs::write(&note_file, &note).unwrap();
    // The verification key, as published by the broker.
    let (status, _, key) = idp.brokers[0].get("/journal/cle");
    assert_eq!(status, 200, "{key}");
    let key = key.trim().to_owned();

    // The stand-alone verifier accepts it, with no database.
    let t = Instant::now();
    let (code, stdout, stderr) = verify(&idp, &key, &note_file, &export);
    let verify_time = t.elapsed();
    assert_eq!(code, 0, "verifier: {stdout}{stderr}");
    let ok: Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(ok["ok"], true, "{ok}");
    assert_eq!(ok["entries"].as_u64(), Some(entry_lines as u64), "{ok}");
    println!("verifier: {entry_lines} entries accepted in {:.1} s (exit 0): {}", verify_time.as_secs_f64(), stdout.trim());

    // One character changed in one entry of the middle: refused, naming that entry.
    let middle_seq = serde_json::from_str::<Value>(&middle).unwrap()["seq"].as_i64().unwrap();
    assert!(middle.contains("\"client\":\"client-x\""), "{middle}");
    let edited = middle.replacen("\"client\":\"client-x\"", "\"client\":\"client-y\"", 1);
    assert_eq!(edited.len(), middle.len());
    let tampered = dir.path().join("tampered.jsonl");
    {
        let mut out = BufWriter::new(std::fs::File::create(&tampered).unwrap());
        let mut reader = BufReader::new(std::fs::File::open(&export).unwrap());
        let mut buf = String::new();
        let mut n = 0usize;
        while reader.read_line(&mut buf).unwrap() > 0 {
            n += 1;
            if n == middle_at {
                assert_eq!(buf.trim_end(), middle);
                out.write_all(edited.as_bytes()).unwrap();
                out.write_all(b"\n").unwrap();
            } else {
                out.write_all(buf.as_bytes()).unwrap();
            }
            buf.clear();
        }
        out.flush().unwrap();
    }
    assert_eq!(std::fs::metadata(&tampered).unwrap().len(), bytes);
    let (code, stdout, stderr) = verify(&idp, &key, &note_file, &tampered);
    assert_eq!(code, 1, "the tampered export must be refused: {stdout}{stderr}");
    let refusal: Value = serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("{e}: {stdout}{stderr}"));
    assert_eq!(refusal["failure"], "edited", "{refusal}");
    assert!(stderr.contains("entrée modifiée") && stderr.contains(&format!("n° {middle_seq} ")), "entry n° {middle_seq} expected: {stderr}");
    println!("tampered export refused: {}", stderr.trim());
    println!("total {:.1} s", started.elapsed().as_secs_f64());
}
