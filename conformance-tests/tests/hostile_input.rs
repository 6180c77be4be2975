//! Bad input, as an attacker or a broken client sends it (the hardening issue's test):
//! control characters and NUL, broken UTF-8 and percent-encodings, overlong values, huge
//! and deeply nested `claims`, duplicated parameters, malformed `Authorization` headers,
//! wrong content types. Sent to every public endpoint, and, signed in as a référent and
//! as an auditor, to the pages' filters and forms. The broker must refuse each cleanly:
//! never a 5xx, never a cut answer (an export with a bad filter is refused before any
//! body), nothing logged at ERROR, and it still answers /healthz and /readyz afterwards.
//!
//! Requests go over a raw TCP socket (one connection each), so that the test can send
//! what an HTTP library would refuse to build (a NUL byte in a header, a 100 KB URL) and
//! see exactly where an answer stops. Every offender is printed; the test fails once, at
//! the end, with the whole list. `HOSTILE_INPUT_TRACE=FILE` appends every request, its
//! status and its time to FILE.

use broker_core::totp::Seed;
use conformance_tests::CookieJar;
use conformance_tests::on_both_backends;
use conformance_tests::idp::{Aidant, Backend, Idp, Mandat, Page, Registration, Usager, CALLBACK, LOGOUT_CALLBACK};
use data_encoding::{BASE64, BASE64URL_NOPAD};
use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::time::{Duration, Instant};


// ---- raw HTTP ----------------------------------------------------------------------------

/// Time allowed to each request.
const TIMEOUT: Duration = Duration::from_secs(10);
const FORM: &str = "application/x-www-form-urlencoded";

/// A request as bytes on the wire: anything goes in the target, headers and body.
struct Req {
    method: &'static str,
    target: Vec<u8>,
    headers: Vec<(String, Vec<u8>)>,
    /// (Content-Type, body); a POST without one is sent with `Content-Length: 0`.
    body: Option<(Option<String>, Vec<u8>)>,
}

impl Req {
    fn get(target: impl AsRef<[u8]>) -> Req {
        Req { method: "GET", target: target.as_ref().to_vec(), headers: Vec::new(), body: None }
    }

    fn post(target: impl AsRef<[u8]>) -> Req {
        Req { method: "POST", target: target.as_ref().to_vec(), headers: Vec::new(), body: None }
    }

    /// A POST of a url-encoded body written as is (already percent-encoded).
    fn post_raw_form(target: impl AsRef<[u8]>, body: impl Into<Vec<u8>>) -> Req {
        Req::post(target).body(Some(FORM), body)
    }

    /// A POST of `pairs`, url-encoded here.
    fn post_form(target: impl AsRef<[u8]>, pairs: &[(&str, &str)]) -> Req {
        let mut s = url::form_urlencoded::Serializer::new(String::new());
        for (k, v) in pairs {
            s.append_pair(k, v);
        }
        Req::post_raw_form(target, s.finish())
    }

    fn header(mut self, name: &str, value: impl AsRef<[u8]>) -> Req {
        self.headers.push((name.to_owned(), value.as_ref().to_vec()));
        self
    }

    fn body(mut self, content_type: Option<&str>, body: impl Into<Vec<u8>>) -> Req {
        self.body = Some((content_type.map(str::to_owned), body.into()));
        self
    }

    fn bytes(&self, host: &str, cookies: Option<String>) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(self.method.as_bytes());
        out.push(b' ');
        out.extend_from_slice(&self.target);
        out.extend_from_slice(format!(" HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n").as_bytes());
        if let Some(c) = cookies {
            out.extend_from_slice(format!("Cookie: {c}\r\n").as_bytes());
        }
        for (k, v) in &self.headers {
            out.extend_from_slice(k.as_bytes());
            out.extend_from_slice(b": ");
            out.extend_from_slice(v);
            out.extend_from_slice(b"\r\n");
        }
        match &self.body {
            Some((ct, body)) => {
                if let Some(ct) = ct {
                    out.extend_from_slice(format!("Content-Type: {ct}\r\n").as_bytes());
                }
                out.extend_from_slice(format!("Content-Length: {}\r\n\r\n", body.len()).as_bytes());
                out.extend_from_slice(body);
            }
            None if self.method == "POST" => out.extend_from_slice(b"Content-Length: 0\r\n\r\n"),
            None => out.extend_from_slice(b"\r\n"),
        }
        out
    }
}

/// An answer as read off the socket.
struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    /// The whole body arrived: the last chunk, `Content-Length` bytes, or the end of an
    /// undelimited body without a reset.
    complete: bool,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    fn page(&self) -> Page {
        Page {
            status: self.status,
            location: self.header("location").map(str::to_owned),
            content_type: self.header("content-type").map(str::to_owned),
            body: String::from_utf8_lossy(&self.body).into_owned(),
        }
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// A chunked body: (bytes, whether the last chunk arrived).
fn dechunk(mut rest: &[u8]) -> (Vec<u8>, bool) {
    let mut body = Vec::new();
    loop {
        let Some(eol) = find(rest, b"\r\n") else { return (body, false) };
        let size = String::from_utf8_lossy(&rest[..eol]);
        let Ok(size) = usize::from_str_radix(size.split(';').next().unwrap_or("").trim(), 16) else { return (body, false) };
        rest = &rest[eol + 2..];
        if size == 0 {
            return (body, true);
        }
        if rest.len() < size + 2 {
            body.extend_from_slice(&rest[..rest.len().min(size)]);
            return (body, false);
        }
        body.extend_from_slice(&rest[..size]);
        rest = &rest[size + 2..];
    }
}

fn parse_answer(raw: &[u8], reset: bool) -> Option<Answer> {
    let end = find(raw, b"\r\n\r\n")?;
    let head = String::from_utf8_lossy(&raw[..end]);
    let mut lines = head.split("\r\n");
    let status = lines.next()?.split(' ').nth(1)?.parse().ok()?;
    let headers: Vec<(String, String)> = lines.filter_map(|l| l.split_once(':')).map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned())).collect();
    let rest = &raw[end + 4..];
    let get = |n: &str| headers.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone());
    let (body, complete) = if get("transfer-encoding").is_some_and(|t| t.to_ascii_lowercase().contains("chunked")) {
        dechunk(rest)
    } else if let Some(len) = get("content-length").and_then(|l| l.parse::<usize>().ok()) {
        (rest[..rest.len().min(len)].to_vec(), rest.len() >= len)
    } else {
        (rest.to_vec(), !reset)
    };
    Some(Answer { status, headers, body, complete })
}

/// Sends `request` on a new connection and reads the answer: up to its end when it is
/// delimited (`Content-Length`, last chunk), else until the server closes the
/// connection. The request is written by another thread, so that an answer sent before
/// the whole body was read (413) is still received.
fn exchange(addr: &str, request: Vec<u8>) -> Result<Answer, String> {
    let mut stream = TcpStream::connect(addr).map_err(|e| format!("connect: {e}"))?;
    stream.set_read_timeout(Some(TIMEOUT)).ok();
    stream.set_write_timeout(Some(TIMEOUT)).ok();
    let mut writer = stream.try_clone().map_err(|e| e.to_string())?;
    let sending = std::thread::spawn(move || writer.write_all(&request).and_then(|_| writer.flush()));
    let deadline = Instant::now() + TIMEOUT;
    let (mut raw, mut buf, mut failure) = (Vec::new(), vec![0u8; 64 * 1024], None);
    loop {
        if Instant::now() > deadline {
            failure = Some("timed out".to_owned());
            break;
        }
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                raw.extend_from_slice(&buf[..n]);
                // The server may keep the connection a while (a request body it did not
                // read): a delimited answer is whole once its framing says so.
                if parse_answer(&raw, true).is_some_and(|a| a.complete) {
                    break;
                }
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => {
                failure = Some(e.to_string());
                break;
            }
        }
    }
    let _ = stream.shutdown(std::net::Shutdown::Both);
    let _ = sending.join();
    // A reset after a delimited body (the server closing on a request body it did not
    // read) loses nothing: completeness comes from the framing.
    match parse_answer(&raw, failure.is_some()) {
        Some(a) => Ok(a),
        None => Err(format!("{} ({} bytes received)", failure.unwrap_or_else(|| "connection closed".into()), raw.len())),
    }
}

/// A browser of the broker over raw HTTP: keeps its cookies, follows no redirect.
struct Client {
    addr: String,
    cookies: CookieJar,
}

impl Client {
    fn new(idp: &Idp) -> Client {
        Client { addr: idp.brokers[0].base.trim_start_matches("http://").to_owned(), cookies: CookieJar::default() }
    }

    fn send(&mut self, r: &Req) -> Result<Answer, String> {
        let a = exchange(&self.addr, r.bytes(&self.addr, self.cookies.header()))?;
        for (k, h) in &a.headers {
            if k == "set-cookie" {
                self.cookies.keep(h);
            }
        }
        Ok(a)
    }
}

// ---- the corpus ----------------------------------------------------------------------------

/// A hostile value as sent (already percent-encoded), or a parameter sent twice.
#[derive(Clone)]
struct Hostile {
    class: String,
    raw: String,
    dup: bool,
}

fn hv(class: &str, raw: impl Into<String>) -> Hostile {
    Hostile { class: class.to_owned(), raw: raw.into(), dup: false }
}

fn enc(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// Control characters, broken UTF-8 and percent-encodings, overlong values, and the
/// parameter given twice.
fn text_corpus() -> Vec<Hostile> {
    vec![
        hv("nul", "a%00b"),
        hv("nul-alone", "%00"),
        hv("ctl-01", "a%01b"),
        hv("esc", "a%1b%5b31mb"),
        hv("del", "a%7fb"),
        hv("crlf", "a%0d%0aSet-Cookie:%20x%3dy"),
        hv("utf8-fffe", "%ff%fe"),
        hv("utf8-c328", "%c3%28"),
        hv("lone-percent", "%"),
        hv("bad-escape", "a%zz%4"),
        hv("bidi-override", "%e2%80%aeabc"),
        hv("quotes", "%27%22%3c%3e%3b--"),
        hv("10kb", "a".repeat(10 * 1024)),
        hv("100kb", "a".repeat(100 * 1024)),
        Hostile { class: "duplicated".into(), raw: String::new(), dup: true },
    ]
}

/// Edges of the numbers the broker parses (ids, sizes, durations).
fn numeric_corpus() -> Vec<Hostile> {
    vec![
        hv("zero", "0"),
        hv("minus-one", "-1"),
        hv("i64-max", "9223372036854775807"),
        hv("i64-overflow", "9223372036854775808"),
        hv("huge", "99999999999999999999999"),
        hv("exponent", "1e3"),
        hv("plus-sign", "%2b1"),
        hv("hex", "0x10"),
    ]
}

/// Values for a path segment.
fn path_corpus() -> Vec<Hostile> {
    let mut v: Vec<Hostile> = text_corpus().into_iter().filter(|h| !h.dup).collect();
    v.extend(numeric_corpus());
    v.push(hv("traversal", "..%2f..%2f..%2fetc%2fpasswd"));
    v.push(hv("flow-id-with-nul", "0123456789abcdef0123456789abcde%00"));
    v
}

/// The query or form `base` with `name` replaced by `v` (added when absent); a duplicated
/// parameter repeats the base value (or `1`).
fn with(base: &[(&str, String)], name: &str, v: &Hostile) -> String {
    let hostile = |k: &str, b: Option<&str>| if v.dup { format!("{k}={b}&{k}={b}", b = b.unwrap_or("1")) } else { format!("{k}={}", v.raw) };
    let mut out: Vec<String> = Vec::new();
    let mut placed = false;
    for (k, val) in base {
        if *k == name {
            out.push(hostile(k, Some(val)));
            placed = true;
        } else {
            out.push(format!("{k}={val}"));
        }
    }
    if !placed {
        out.push(hostile(name, None));
    }
    out.join("&")
}

/// The value the server decodes from `v` (as `application/x-www-form-urlencoded`).
fn decoded(v: &Hostile) -> String {
    url::form_urlencoded::parse(format!("x={}", v.raw).as_bytes()).next().map(|(_, v)| v.into_owned()).unwrap_or_default()
}

/// Bodies of the wrong kind for a form (or JSON) endpoint.
fn wrong_bodies() -> Vec<(&'static str, Option<&'static str>, Vec<u8>)> {
    let deep_json = format!("{}{}", "[".repeat(5000), "]".repeat(5000));
    vec![
        ("json-body", Some("application/json"), br#"{"csrf":"x","email":"a@b.fr","client_id":"x","code":"123456"}"#.to_vec()),
        ("empty-body", None, Vec::new()),
        ("empty-form", Some(FORM), Vec::new()),
        ("multipart", Some("multipart/form-data; boundary=XyZ"), b"--XyZ\r\nContent-Disposition: form-data; name=\"csrf\"\r\n\r\nx\r\n--XyZ--\r\n".to_vec()),
        ("text-with-nul", Some("text/plain"), b"a\x00b\xff\xfe".to_vec()),
        ("raw-latin1-form", Some("application/x-www-form-urlencoded; charset=iso-8859-1"), b"csrf=\xff&email=\xe9\x00&client_id=\xff\xfe".to_vec()),
        ("deep-json", Some("application/json"), deep_json.into_bytes()),
        ("1mb-form", Some(FORM), format!("csrf=x&email={}", "a".repeat(1024 * 1024)).into_bytes()),
    ]
}

// ---- checking the answers and the log ----------------------------------------------------

/// Sends the requests, and keeps what went wrong.
struct Check<'a> {
    idp: &'a Idp,
    offenders: Vec<String>,
    /// Where the part of the broker's stderr not yet read starts (a line start).
    log_pos: usize,
    sent: usize,
    /// `HOSTILE_INPUT_TRACE=FILE`: every request and its status, appended to FILE.
    trace: Option<std::fs::File>,
}

fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\x1b' && chars.peek() == Some(&'[') {
            chars.next();
            for c in chars.by_ref() {
                if ('@'..='~').contains(&c) {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// A line of the text log at ERROR level (timestamp, then the level), or a panic.
fn is_error_line(line: &str) -> bool {
    line.split_whitespace().take(3).any(|t| t == "ERROR") || line.contains("panicked at")
}

fn shorten(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_owned()
    } else {
        format!("{}… ({} bytes)", s.chars().take(n).collect::<String>(), s.len())
    }
}

impl<'a> Check<'a> {
    fn new(idp: &'a Idp) -> Check<'a> {
        let logs = idp.brokers[0].stderr_so_far();
        let pos = logs.rfind('\n').map(|i| i + 1).unwrap_or(0);
        let trace = std::env::var("HOSTILE_INPUT_TRACE").ok().map(|f| std::fs::OpenOptions::new().create(true).append(true).open(f).expect("trace file"));
        Check { idp, offenders: Vec::new(), log_pos: pos, sent: 0, trace }
    }

    fn offend(&mut self, what: String) {
        println!("OFFENDER [{:?}]: {what}", self.idp.backend);
        self.offenders.push(what);
    }

    /// Sends `r` as `who`: a 5xx, a cut answer or no answer is an offence, and so is any
    /// line the broker logged at ERROR meanwhile.
    fn send(&mut self, who: &mut Client, what: &str, r: Req) -> Option<Answer> {
        self.sent += 1;
        let t = Instant::now();
        let got = who.send(&r);
        let answered = t.elapsed();
        match &got {
            Ok(a) if a.status >= 500 => self.offend(format!("{what} -> {}", a.status)),
            Ok(a) if !a.complete => self.offend(format!("{what} -> {} then the connection was cut ({} bytes of body)", a.status, a.body.len())),
            Err(e) => self.offend(format!("{what} -> no answer: {e}")),
            Ok(_) => {}
        }
        let abnormal = got.as_ref().map_or(true, |a| a.status >= 500 || !a.complete);
        // An answer that went through the application was logged (`http: request`) once
        // the handler was done: waiting for that line puts the handler's own lines in
        // this request's share of the log.
        let logged = got.as_ref().is_ok_and(|a| a.header("content-security-policy").is_some());
        self.read_log(what, if logged { Until::Request } else { Until::Parser }, abnormal);
        if let Some(f) = &mut self.trace {
            let status = got.as_ref().map_or_else(|e| e.clone(), |a| format!("{} {}", a.status, a.header("location").unwrap_or("")));
            let _ = writeln!(f, "{:?}\t{}\t{status}\t{} ms\t{} ms", self.idp.backend, shorten(what, 200), answered.as_millis(), t.elapsed().as_millis());
        }
        got.ok()
    }

    /// `send`, for a step that must get an answer.
    fn page(&mut self, who: &mut Client, what: &str, r: Req) -> Page {
        self.send(who, what, r).unwrap_or_else(|| panic!("{what}: no answer\n{}", tail(&self.idp.logs()))).page()
    }

    fn read_log(&mut self, what: &str, until: Until, abnormal: bool) {
        if abnormal {
            // A streaming export logs its failure from another thread.
            std::thread::sleep(Duration::from_millis(30));
        }
        let deadline = Instant::now() + match until {
            Until::Request => Duration::from_millis(500),
            Until::Parser => Duration::from_millis(50),
            Until::Now => Duration::ZERO,
        };
        loop {
            let logs = self.idp.brokers[0].stderr_so_far();
            let region = &logs[self.log_pos.min(logs.len())..];
            let whole = region.rfind('\n').map(|i| i + 1).unwrap_or(0);
            let lines: Vec<String> = region[..whole].lines().map(strip_ansi).collect();
            let seen = match until {
                Until::Request => lines.iter().any(|l| l.contains("http: request method=")),
                Until::Parser => lines.iter().any(|l| l.contains("actix_http::")),
                Until::Now => true,
            };
            if seen || Instant::now() > deadline {
                for l in lines.iter().filter(|l| is_error_line(l)) {
                    let l = shorten(l, 400);
                    self.offend(format!("{what} -> logged: {l}"));
                }
                self.log_pos += whole;
                return;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }
}

/// What marks the end of a request's share of the log.
#[derive(Clone, Copy)]
enum Until {
    /// The application's access line (`http: request …`), written once the handler is done.
    Request,
    /// A line of the HTTP parser, for an answer the application never saw (if any comes).
    Parser,
    /// Whatever has arrived.
    Now,
}

/// The last lines the broker printed.
fn tail(logs: &str) -> String {
    let lines: Vec<&str> = logs.lines().collect();
    lines[lines.len().saturating_sub(20)..].iter().map(|l| shorten(l, 300)).collect::<Vec<_>>().join("\n")
}

// ---- the world ---------------------------------------------------------------------------

/// One broker with a structure, its référent, a usager with a mandat, an auditor and
/// FranceConnect registered as a client.
struct World {
    idp: Idp,
    referent: Aidant,
    auditor: Aidant,
    usager: Usager,
    mandat: Mandat,
    client: Registration,
}

fn world(backend: Backend) -> World {
    let idp = Idp::start(backend);
    let org = idp.organisation("France Services Tourcoing", None);
    // `Idp::aidant` makes a plain aidant: the référent is created here.
    let email = format!("referente-{}@france-services.exemple.fr", hex::encode(rand::random::<[u8; 4]>()));
    let o = org.to_string();
    let created = idp.cli_ok(&[
        "admin", "aidant", "create", "--organisation", &o, "--email", &email, "--first-name", "Nadia", "--last-name", "Benali", "--profession", "Conseillère numérique",
        "--referent",
    ]);
    let enrolled = idp.cli_ok(&["admin", "totp", "enroll-app", "--aidant", &email]);
    let referent = Aidant {
        id: created["id"].as_i64().expect("aidant id"),
        email,
        seed: Seed::from_base32(enrolled["secret"].as_str().expect("TOTP secret")).expect("base32 secret"),
        organisation: org,
    };
    let usager = idp.usager("Jeanne Marie", "Martin", "1952-03-14");
    let mandat = idp.mandat(&referent, &usager, "argent,famille,logement");
    let email = format!("auditeur-{}@controle.exemple.gouv.fr", hex::encode(rand::random::<[u8; 4]>()));
    let created = idp.cli_ok(&["admin", "auditor", "create", "--email", &email, "--first-name", "Paul", "--last-name", "Contrôle"]);
    let enrolled = idp.cli_ok(&["admin", "totp", "enroll-app", "--aidant", &email]);
    let auditor = Aidant {
        id: created["id"].as_i64().expect("auditor id"),
        email,
        seed: Seed::from_base32(enrolled["secret"].as_str().expect("TOTP secret")).expect("base32 secret"),
        organisation: 0,
    };
    let client = idp.client("ES256", "json");
    World { idp, referent, auditor, usager, mandat, client }
}

/// The broker's outbox, from its environment.
fn outbox_dir(idp: &Idp) -> PathBuf {
    let pid = idp.brokers[0].pid().expect("broker running");
    let env = std::fs::read(format!("/proc/{pid}/environ")).expect("broker environment");
    env.split(|b| *b == 0)
        .find_map(|kv| kv.strip_prefix(b"AC_OUTBOX_DIR=").map(|v| PathBuf::from(String::from_utf8_lossy(v).into_owned())))
        .expect("AC_OUTBOX_DIR")
}

/// Texts of the messages written to the outbox for `email`, oldest first.
fn messages(outbox: &std::path::Path, email: &str) -> Vec<String> {
    let Ok(dir) = std::fs::read_dir(outbox) else { return Vec::new() };
    let mut found: Vec<(String, String)> = dir
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .filter_map(|p| {
            let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&p).ok()?).ok()?;
            (v["to"].as_str() == Some(email)).then(|| (p.file_name().unwrap().to_string_lossy().into_owned(), v["text"].as_str().unwrap_or("").to_owned()))
        })
        .collect();
    found.sort();
    found.into_iter().map(|(_, t)| t).collect()
}

/// Signs `a` in with `who`: e-mail and TOTP code, then the e-mailed link.
fn sign_in(c: &mut Check, who: &mut Client, w: &World, a: &Aidant) {
    let form = c.page(who, "setup: GET /connexion", Req::get("/connexion"));
    assert_eq!(form.status, 200, "sign-in form: {}", form.body);
    let outbox = outbox_dir(&w.idp);
    let before = messages(&outbox, &a.email).len();
    let code = w.idp.totp(a);
    let sent = c.page(who, "setup: POST /connexion", Req::post_form("/connexion", &[("csrf", &form.csrf()), ("email", &a.email), ("code", &code), ("suite", "/espace")]));
    assert!(sent.shows("Consultez votre messagerie"), "sign-in refused ({}): {}", sent.status, sent.body);
    let deadline = Instant::now() + Duration::from_secs(10);
    let text = loop {
        let m = messages(&outbox, &a.email);
        if m.len() > before {
            break m.last().unwrap().clone();
        }
        assert!(Instant::now() < deadline, "no sign-in e-mail in {}", outbox.display());
        std::thread::sleep(Duration::from_millis(50));
    };
    let at = text.find("/connexion/lien?jeton=").unwrap_or_else(|| panic!("no sign-in link in: {text}"));
    let link: String = text[at..].chars().take_while(|c| !c.is_whitespace()).collect();
    let jeton = link.split("jeton=").nth(1).unwrap().to_owned();
    let confirm = c.page(who, "setup: GET /connexion/lien", Req::get(&link));
    assert_eq!(confirm.status, 200, "link page: {}", confirm.body);
    let done = c.page(who, "setup: POST /connexion/lien", Req::post_form("/connexion/lien", &[("csrf", &confirm.csrf()), ("jeton", &jeton)]));
    assert_eq!(done.status, 303, "link confirmation: {}", done.body);
}

/// The CSRF token of `who`'s session, read from a page.
fn csrf_of(c: &mut Check, who: &mut Client, page: &str) -> String {
    let p = c.page(who, &format!("setup: GET {page}"), Req::get(page));
    assert_eq!(p.status, 200, "{page}: {:?} {}", p.location, p.body);
    p.csrf()
}

fn random_hex(n: usize) -> String {
    (0..n).map(|_| format!("{:x}", rand::random::<u8>() % 16)).collect()
}

// ---- the public endpoints ------------------------------------------------------------------

fn oidc_endpoints(c: &mut Check, anon: &mut Client, w: &World) {
    let id = enc(&w.client.client_id);
    let secret = enc(&w.client.secret);

    // Documents that take no parameter: junk in the query anyway.
    for path in ["/.well-known/openid-configuration", "/jwks", "/", "/healthz", "/readyz"] {
        for v in text_corpus() {
            c.send(anon, &format!("GET {path} x={}", v.class), Req::get(format!("{path}?{}", with(&[], "x", &v))));
        }
    }

    // /authorize: one parameter at a time turns hostile, the others as the core sends them.
    let authorize: Vec<(&str, String)> = vec![
        ("client_id", id.clone()),
        ("response_type", "code".into()),
        ("redirect_uri", enc(CALLBACK)),
        ("scope", enc("openid profile email birth")),
        ("acr_values", "eidas1".into()),
        ("state", random_hex(64)),
        ("nonce", random_hex(64)),
        ("prompt", "login".into()),
        ("claims", enc(r#"{"id_token":{"rep_scope":{"essential":true,"values":["argent"]}}}"#)),
        ("code_challenge_method", "S256".into()),
        ("code_challenge", "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM".into()),
    ];
    let names = ["client_id", "redirect_uri", "state", "nonce", "scope", "claims", "prompt", "code_challenge", "code_challenge_method", "response_type", "acr_values"];
    for name in names {
        for v in text_corpus() {
            let q = with(&authorize, name, &v);
            c.send(anon, &format!("GET /authorize {name}={}", v.class), Req::get(format!("/authorize?{q}")));
            c.send(anon, &format!("POST /authorize {name}={}", v.class), Req::post_raw_form("/authorize", q));
        }
    }
    // `claims`: huge, deeply nested, invalid JSON.
    let nested = |n: usize| format!("{}{}", "[".repeat(n), "]".repeat(n));
    let objects = |n: usize| format!("{}1{}", r#"{"a":"#.repeat(n), "}".repeat(n));
    let many = format!(r#"{{"id_token":{{"rep_scope":{{"essential":true,"values":[{}]}}}}}}"#, vec!["\"argent\""; 700].join(","));
    let claims: Vec<(&str, String)> = vec![
        ("claims-5000-nested-arrays", nested(5000)),
        ("claims-3000-nested-arrays", nested(3000)),
        ("claims-1000-nested-objects", objects(1000)),
        ("claims-rep_scope-nested-values", format!(r#"{{"id_token":{{"rep_scope":{{"essential":true,"values":{}}}}}}}"#, nested(120))),
        ("claims-700-values", many),
        ("claims-nul-in-values", r#"{"id_token":{"rep_scope":{"essential":true,"values":["a\u0000b"]}}}"#.into()),
        ("claims-nul-in-key", r#"{"id_token":{"rep\u0000scope":{"essential":true}}}"#.into()),
        ("claims-lone-surrogate", r#"{"id_token":{"rep_scope":{"values":["\ud800"]}}}"#.into()),
        ("claims-huge-number", r#"{"id_token":{"rep_scope":{"essential":1e999999,"values":[1e999999]}}}"#.into()),
        ("claims-truncated", r#"{"id_token":{"rep_scope":"#.into()),
        ("claims-duplicate-keys", r#"{"id_token":{},"id_token":{"rep_scope":{}}}"#.into()),
        ("claims-not-an-object", r#"["id_token"]"#.into()),
        ("claims-100kb-object", format!(r#"{{"a":"{}"}}"#, "x".repeat(100 * 1024))),
        ("claims-1mb-object", format!(r#"{{"a":"{}"}}"#, "x".repeat(1024 * 1024))),
    ];
    for (class, json) in &claims {
        let v = hv(class, enc(json));
        let q = with(&authorize, "claims", &v);
        c.send(anon, &format!("GET /authorize claims={class}"), Req::get(format!("/authorize?{q}")));
        c.send(anon, &format!("POST /authorize claims={class}"), Req::post_raw_form("/authorize", q));
    }
    // Every parameter sent twice at once.
    let twice = format!("{0}&{0}", authorize.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join("&"));
    c.send(anon, "GET /authorize all-parameters=duplicated", Req::get(format!("/authorize?{twice}")));
    for (class, ct, body) in wrong_bodies() {
        c.send(anon, &format!("POST /authorize body={class}"), Req::post("/authorize").body(ct, body));
    }

    // /token: form fields, with the client's real credentials in the body.
    let token: Vec<(&str, String)> = vec![
        ("grant_type", "authorization_code".into()),
        ("code", random_hex(43)),
        ("redirect_uri", enc(CALLBACK)),
        ("client_id", id.clone()),
        ("client_secret", secret.clone()),
    ];
    for name in ["client_id", "client_secret", "grant_type", "code", "redirect_uri", "code_verifier"] {
        for v in text_corpus() {
            c.send(anon, &format!("POST /token {name}={}", v.class), Req::post_raw_form("/token", with(&token, name, &v)));
        }
    }
    // /token: the Basic header (client_secret_basic), the body without credentials.
    let basic_body = "grant_type=authorization_code&code=abc&redirect_uri=".to_owned() + &enc(CALLBACK);
    let b64 = |s: &[u8]| BASE64.encode(s);
    let cid = w.client.client_id.as_bytes();
    let mut nul_id = cid.to_vec();
    nul_id.splice(1..1, *b"\0");
    let headers: Vec<(&str, Vec<u8>)> = vec![
        ("basic-not-base64", b"Basic !!!not*base64!!!".to_vec()),
        ("basic-no-colon", format!("Basic {}", b64(b"client-sans-deux-points")).into_bytes()),
        ("basic-nul-in-client-id", format!("Basic {}", b64(&[nul_id.as_slice(), &b":secret"[..]].concat())).into_bytes()),
        ("basic-nul-alone", format!("Basic {}", b64(b"\0:\0")).into_bytes()),
        ("basic-percent-nul-in-client-id", format!("Basic {}", b64(b"a%00b:secret")).into_bytes()),
        ("basic-percent-nul-in-secret", format!("Basic {}", b64(&[cid, &b":%00"[..]].concat())).into_bytes()),
        ("basic-invalid-utf8", format!("Basic {}", b64(b"\xff\xfe:\xc3\x28")).into_bytes()),
        ("basic-control-chars", format!("Basic {}", b64(b"a\x01\x1b\x7fb:c\r\nd")).into_bytes()),
        ("basic-10kb", format!("Basic {}", b64(&[vec![b'a'; 10 * 1024], b":b".to_vec()].concat())).into_bytes()),
        ("basic-100kb-header", format!("Basic {}", "A".repeat(100 * 1024)).into_bytes()),
        ("basic-empty", b"Basic ".to_vec()),
        ("basic-no-space", b"Basic".to_vec()),
        ("basic-lower-case", format!("basic {}", b64(b"x:y")).into_bytes()),
        ("raw-nul-byte", b"Basic YTpi\x00YQ==".to_vec()),
        ("raw-non-ascii", b"Basic \xff\xfe\xfd".to_vec()),
        ("bearer-instead", b"Bearer abc".to_vec()),
    ];
    for (class, h) in &headers {
        c.send(anon, &format!("POST /token Authorization={class}"), Req::post_raw_form("/token", basic_body.clone()).header("Authorization", h));
    }
    c.send(
        anon,
        "POST /token Authorization=twice",
        Req::post_raw_form("/token", basic_body.clone()).header("Authorization", format!("Basic {}", b64(b"a:b"))).header("Authorization", format!("Basic {}", b64(b"c:d"))),
    );
    c.send(anon, "POST /token Authorization=basic-and-body-secret", Req::post_raw_form("/token", with(&token, "x", &hv("x", "1"))).header("Authorization", format!("Basic {}", b64(b"a:b"))));
    for (class, ct, body) in wrong_bodies() {
        c.send(anon, &format!("POST /token body={class}"), Req::post("/token").body(ct, body));
    }

    // /userinfo: Bearer headers.
    let jwt_like = format!("{}.{}.x", BASE64URL_NOPAD.encode(br#"{"alg":"none"}"#), BASE64URL_NOPAD.encode(b"{\"sub\":\"a\\u0000b\"}"));
    let bearers: Vec<(&str, Vec<u8>)> = vec![
        ("bearer-10kb", format!("Bearer {}", "a".repeat(10 * 1024)).into_bytes()),
        ("bearer-100kb", format!("Bearer {}", "a".repeat(100 * 1024)).into_bytes()),
        ("bearer-jwt-alg-none", format!("Bearer {jwt_like}").into_bytes()),
        ("bearer-percent-nul", b"Bearer a%00b".to_vec()),
        ("bearer-empty", b"Bearer ".to_vec()),
        ("bearer-blank", b"Bearer      ".to_vec()),
        ("bearer-no-space", b"Bearer".to_vec()),
        ("bearer-lower-case", b"bearer abc".to_vec()),
        ("raw-nul-byte", b"Bearer a\x00b".to_vec()),
        ("raw-control-char", b"Bearer a\x01b".to_vec()),
        ("raw-non-ascii", b"Bearer \xff\xfe\xc3\x28".to_vec()),
        ("basic-instead", format!("Basic {}", b64(b"a:b")).into_bytes()),
    ];
    for (class, h) in &bearers {
        c.send(anon, &format!("GET /userinfo Authorization={class}"), Req::get("/userinfo").header("Authorization", h));
        c.send(anon, &format!("POST /userinfo Authorization={class}"), Req::post("/userinfo").header("Authorization", h));
    }
    c.send(anon, "GET /userinfo Authorization=twice", Req::get("/userinfo").header("Authorization", "Bearer a").header("Authorization", "Bearer b"));
    for v in text_corpus() {
        c.send(anon, &format!("GET /userinfo access_token={}", v.class), Req::get(format!("/userinfo?{}", with(&[], "access_token", &v))));
        c.send(anon, &format!("POST /userinfo access_token={}", v.class), Req::post_raw_form("/userinfo", with(&[], "access_token", &v)));
    }

    // /logout, without a session (a signed-in one would end).
    let logout: Vec<(&str, String)> = vec![("client_id", id.clone()), ("post_logout_redirect_uri", enc(LOGOUT_CALLBACK)), ("state", "abc".into())];
    for name in ["client_id", "post_logout_redirect_uri", "state", "id_token_hint"] {
        for v in text_corpus() {
            let q = with(&logout, name, &v);
            c.send(anon, &format!("GET /logout {name}={}", v.class), Req::get(format!("/logout?{q}")));
            c.send(anon, &format!("POST /logout {name}={}", v.class), Req::post_raw_form("/logout", q));
        }
    }
    let part = |s: &[u8]| BASE64URL_NOPAD.encode(s);
    let hints: Vec<(&str, String)> = vec![
        ("jwt-aud-with-nul", format!("{}.{}.x", part(br#"{"alg":"none"}"#), part(b"{\"aud\":\"a\\u0000b\"}"))),
        ("jwt-aud-10kb", format!("{}.{}.x", part(br#"{"alg":"none"}"#), part(format!(r#"{{"aud":"{}"}}"#, "a".repeat(10 * 1024)).as_bytes()))),
        ("jwt-aud-array", format!("{}.{}.x", part(br#"{"alg":"HS256"}"#), part(br#"{"aud":["a","b"]}"#))),
        ("jwt-aud-is-client-hs256-forged", format!("{}.{}.x", part(br#"{"alg":"HS256"}"#), part(format!(r#"{{"aud":"{}"}}"#, w.client.client_id).as_bytes()))),
        ("jwt-payload-not-json", format!("{}.{}.x", part(br#"{"alg":"none"}"#), part(b"\xff\x00"))),
        ("jwt-deep-payload", format!("{}.{}.x", part(br#"{"alg":"none"}"#), part(format!("{}{}", "[".repeat(5000), "]".repeat(5000)).as_bytes()))),
        ("jwt-many-dots", ".".repeat(10 * 1024)),
    ];
    for (class, hint) in &hints {
        for extra in [&logout[..], &logout[..0]] {
            let with_client = if extra.is_empty() { "" } else { " with client" };
            let q = with(extra, "id_token_hint", &hv(class, enc(hint)));
            c.send(anon, &format!("GET /logout id_token_hint={class}{with_client}"), Req::get(format!("/logout?{q}")));
            c.send(anon, &format!("POST /logout id_token_hint={class}{with_client}"), Req::post_raw_form("/logout", q));
        }
    }
    for v in text_corpus() {
        c.send(anon, &format!("POST /logout csrf={}", v.class), Req::post_raw_form("/logout", with(&logout, "csrf", &v)));
    }
    for (class, ct, body) in wrong_bodies() {
        c.send(anon, &format!("POST /logout body={class}"), Req::post("/logout").body(ct, body));
    }
}

fn public_pages(c: &mut Check, anon: &mut Client) {
    // Sign-in. Refused attempts count against the address (30 lock it): the values that
    // reach the database come first, and fewer than 30 are sent in all.
    for v in text_corpus() {
        c.send(anon, &format!("GET /connexion suite={}", v.class), Req::get(format!("/connexion?{}", with(&[], "suite", &v))));
    }
    let csrf = csrf_of(c, anon, "/connexion");
    let signin: Vec<(&str, String)> = vec![("csrf", csrf.clone()), ("email", enc("personne@exemple.fr")), ("code", "123456".into()), ("suite", "%2Fespace".into())];
    for v in text_corpus() {
        c.send(anon, &format!("POST /connexion email={}", v.class), Req::post_raw_form("/connexion", with(&signin, "email", &v)));
    }
    for v in text_corpus().into_iter().filter(|v| ["nul", "utf8-fffe", "10kb"].contains(&v.class.as_str())) {
        c.send(anon, &format!("POST /connexion code={}", v.class), Req::post_raw_form("/connexion", with(&signin, "code", &v)));
    }
    for v in text_corpus() {
        c.send(anon, &format!("POST /connexion csrf={}", v.class), Req::post_raw_form("/connexion", with(&signin, "csrf", &v)));
    }
    for (class, ct, body) in wrong_bodies() {
        c.send(anon, &format!("POST /connexion body={class}"), Req::post("/connexion").body(ct, body));
    }
    // The e-mailed link.
    for v in text_corpus() {
        c.send(anon, &format!("GET /connexion/lien jeton={}", v.class), Req::get(format!("/connexion/lien?{}", with(&[], "jeton", &v))));
    }
    let csrf = csrf_of(c, anon, "/connexion/lien?jeton=abc");
    for v in text_corpus() {
        c.send(anon, &format!("POST /connexion/lien jeton={}", v.class), Req::post_raw_form("/connexion/lien", with(&[("csrf", csrf.clone())], "jeton", &v)));
    }
    for (class, ct, body) in wrong_bodies() {
        c.send(anon, &format!("POST /connexion/lien body={class}"), Req::post("/connexion/lien").body(ct, body));
    }
    // Security keys: JSON endpoints.
    for path in ["/connexion/cle/options", "/connexion/cle", "/reauthentification/cle/options", "/reauthentification/cle"] {
        for (class, ct, body) in wrong_bodies() {
            c.send(anon, &format!("POST {path} body={class}"), Req::post(path).body(ct, body).header("X-CSRF-Token", &csrf));
        }
        c.send(anon, &format!("POST {path} X-CSRF-Token=raw-non-ascii"), Req::post(path).body(Some("application/json"), "{}").header("X-CSRF-Token", b"\xff\xfe"));
    }
    for (class, credential) in [("nul-in-credential", "\"a\\u0000b\"".to_owned()), ("10kb-credential-id", format!(r#"{{"id":"{0}","rawId":"{0}","type":"public-key"}}"#, "A".repeat(10 * 1024)))] {
        c.send(anon, "setup: POST /connexion/cle/options", Req::post("/connexion/cle/options").header("X-CSRF-Token", &csrf));
        let body = format!(r#"{{"credential":{credential},"suite":"/espace"}}"#);
        c.send(anon, &format!("POST /connexion/cle credential={class}"), Req::post("/connexion/cle").body(Some("application/json"), body).header("X-CSRF-Token", &csrf));
    }
    // Re-authentication and sign-out, without a session.
    for v in text_corpus() {
        c.send(anon, &format!("GET /reauthentification suite={}", v.class), Req::get(format!("/reauthentification?{}", with(&[], "suite", &v))));
        c.send(anon, &format!("POST /reauthentification code={}", v.class), Req::post_raw_form("/reauthentification", with(&[("csrf", csrf.clone())], "code", &v)));
        c.send(anon, &format!("POST /deconnexion csrf={}", v.class), Req::post_raw_form("/deconnexion", with(&[], "csrf", &v)));
    }
    for (class, ct, body) in wrong_bodies() {
        c.send(anon, &format!("POST /reauthentification body={class}"), Req::post("/reauthentification").body(ct, body.clone()));
        c.send(anon, &format!("POST /deconnexion body={class}"), Req::post("/deconnexion").body(ct, body));
    }

    // A flow that does not exist.
    for v in path_corpus() {
        let p = format!("/autorisation/{}", v.raw);
        c.send(anon, &format!("GET /autorisation/{{flow}} flow={}", v.class), Req::get(&p));
        c.send(anon, &format!("GET /autorisation/{{flow}}/demarche flow={}", v.class), Req::get(format!("{p}/demarche")));
        for step in ["usager", "demarche", "annuler"] {
            c.send(anon, &format!("POST /autorisation/{{flow}}/{step} flow={}", v.class), Req::post_raw_form(format!("{p}/{step}"), format!("csrf={csrf}&usager=1&demarche=argent")));
        }
    }
    let bogus = format!("/autorisation/{}", random_hex(32));
    for v in text_corpus() {
        c.send(anon, &format!("GET /autorisation/{{bogus}} q={}", v.class), Req::get(format!("{bogus}?{}", with(&[], "q", &v))));
        c.send(anon, &format!("POST /autorisation/{{bogus}}/usager usager={}", v.class), Req::post_raw_form(format!("{bogus}/usager"), with(&[("csrf", csrf.clone())], "usager", &v)));
        c.send(anon, &format!("POST /autorisation/{{bogus}}/demarche demarche={}", v.class), Req::post_raw_form(format!("{bogus}/demarche"), with(&[("csrf", csrf.clone())], "demarche", &v)));
        c.send(anon, &format!("POST /autorisation/{{bogus}}/annuler csrf={}", v.class), Req::post_raw_form(format!("{bogus}/annuler"), with(&[], "csrf", &v)));
    }
    for (class, ct, body) in wrong_bodies() {
        c.send(anon, &format!("POST /autorisation/{{bogus}}/usager body={class}"), Req::post(format!("{bogus}/usager")).body(ct, body));
    }

    // Attestation check, the journal's public face.
    for v in path_corpus() {
        c.send(anon, &format!("GET /attestations/verifier/{{fp}} fp={}", v.class), Req::get(format!("/attestations/verifier/{}", v.raw)));
        c.send(anon, &format!("GET /journal/checkpoint/{{size}} size={}", v.class), Req::get(format!("/journal/checkpoint/{}", v.raw)));
    }
    c.send(anon, "GET /attestations/verifier/{fp} fp=unknown-64-hex", Req::get(format!("/attestations/verifier/{}", random_hex(64))));
    let numbers: Vec<Hostile> = text_corpus().into_iter().chain(numeric_corpus()).collect();
    for v in &numbers {
        for (name, other) in [("seq", ("taille", "1")), ("taille", ("seq", "1"))] {
            let q = with(&[(other.0, other.1.to_owned())], name, v);
            c.send(anon, &format!("GET /journal/preuves/inclusion {name}={}", v.class), Req::get(format!("/journal/preuves/inclusion?{q}")));
        }
        for (name, other) in [("de", ("a", "1")), ("a", ("de", "1"))] {
            let q = with(&[(other.0, other.1.to_owned())], name, v);
            c.send(anon, &format!("GET /journal/preuves/coherence {name}={}", v.class), Req::get(format!("/journal/preuves/coherence?{q}")));
        }
    }
    for path in ["/journal/checkpoint", "/journal/cle"] {
        c.send(anon, &format!("GET {path} x=10kb"), Req::get(format!("{path}?x={}", "a".repeat(10 * 1024))));
    }

    // The usager's space (FranceConnect is not configured here).
    for v in text_corpus() {
        for name in ["revocation", "erreur", "avis"] {
            c.send(anon, &format!("GET /espace-usager {name}={}", v.class), Req::get(format!("/espace-usager?{}", with(&[], name, &v))));
        }
        for path in ["/espace-usager/connexion", "/espace-usager/quitter", "/espace-usager/autorisations/1/revoquer", "/espace-usager/mandats/1/revoquer", "/espace-usager/avis"] {
            c.send(anon, &format!("POST {path} csrf={}", v.class), Req::post_raw_form(path, with(&[], "csrf", &v)));
        }
        c.send(anon, &format!("POST /espace-usager/avis avis={}", v.class), Req::post_raw_form("/espace-usager/avis", with(&[("csrf", csrf.clone())], "avis", &v)));
    }
    for v in path_corpus() {
        c.send(anon, &format!("GET /espace-usager/revocations/{{fp}} fp={}", v.class), Req::get(format!("/espace-usager/revocations/{}", v.raw)));
        for kind in ["autorisations", "mandats"] {
            c.send(anon, &format!("POST /espace-usager/{kind}/{{id}}/revoquer id={}", v.class), Req::post_raw_form(format!("/espace-usager/{kind}/{}/revoquer", v.raw), format!("csrf={csrf}")));
        }
    }
    for (class, ct, body) in wrong_bodies() {
        c.send(anon, &format!("POST /espace-usager/connexion body={class}"), Req::post("/espace-usager/connexion").body(ct, body));
    }
    // FranceConnect's callback, with nobody waiting for it.
    for name in ["code", "state", "error", "error_description"] {
        for v in text_corpus() {
            let base = [("code", "abc".to_owned()), ("state", "def".to_owned())];
            c.send(anon, &format!("GET /mandats/nouveau/franceconnect/retour {name}={}", v.class), Req::get(format!("/mandats/nouveau/franceconnect/retour?{}", with(&base, name, &v))));
        }
    }

    // Any path, static files, the development outbox.
    for v in path_corpus() {
        c.send(anon, &format!("GET /{{path}} path={}", v.class), Req::get(format!("/{}", v.raw)));
        c.send(anon, &format!("GET /static/dsfr/{{path}} path={}", v.class), Req::get(format!("/static/dsfr/{}", v.raw)));
    }
    c.send(anon, "GET /dev/courriels x=10kb", Req::get(format!("/dev/courriels?x={}", "a".repeat(10 * 1024))));

    // Malformed at the HTTP level: the server's parser answers, the application never sees it.
    let raw: Vec<(&str, Req)> = vec![
        ("raw non-ASCII bytes in the path", Req::get(b"/authorize?client_id=\xff\xfe\x00".to_vec())),
        ("raw space-less garbage target", Req::get(b"\x01\x02".to_vec())),
        ("NUL byte in a header", Req::get("/").header("X-Test", b"a\x00b")),
        ("non-ASCII header value", Req::get("/").header("X-Test", b"\xff\xfe")),
        ("100 KB header", Req::get("/").header("X-Test", "a".repeat(100 * 1024))),
        ("200 KB header", Req::get("/").header("X-Test", "a".repeat(200 * 1024))),
        ("session cookie with NUL escape", Req::get("/espace").header("Cookie", "ac_session=%00")),
        ("session cookie of 10 KB", Req::get("/espace").header("Cookie", format!("ac_session={}", "a".repeat(10 * 1024)))),
        ("session cookie non-ASCII", Req::get("/espace").header("Cookie", b"ac_session=\xff\xfe")),
        ("session cookie twice", Req::get("/espace").header("Cookie", "ac_session=a; ac_session=b")),
        ("Content-Length not a number", Req::get("/token").header("Content-Length", "abc")),
        ("chunked and Content-Length", Req::post("/token").header("Transfer-Encoding", "chunked").body(Some(FORM), "0\r\n\r\n")),
    ];
    for (what, r) in raw {
        c.send(anon, &format!("{} {} ({what})", r.method, String::from_utf8_lossy(&r.target).chars().take(40).collect::<String>()), r);
    }

    // The cookie that binds a flow to its browser, read on every step of that flow.
    let flow = random_hex(32);
    let path = format!("/autorisation/{flow}");
    for v in text_corpus() {
        let cookie = format!("ac_flux_{flow}={}", v.raw);
        c.send(anon, &format!("GET {path} flow cookie={}", v.class), Req::get(path.as_str()).header("Cookie", cookie));
    }
    for name in [format!("ac_flux_{}", "f".repeat(300)), "ac_appareil_99999999999999999999999".to_owned(), "ac_appareil_-1".to_owned()] {
        c.send(anon, &format!("GET {path} cookie name {}", shorten(&name, 30)), Req::get(path.as_str()).header("Cookie", format!("{name}=0.0")));
    }
}

// ---- signed in -------------------------------------------------------------------------------

/// The audit filters (the query of /audit, its API and its exports).
const AUDIT_FILTERS: [&str; 9] = ["aidant", "usager", "structure", "demarche", "action", "client", "du", "au", "apres"];

/// Whether an export must refuse this value of `field` (4xx, before any body): a control
/// character anywhere, a parameter given twice, and what the field cannot hold (a
/// number, a date, a known démarche or action). `apres` is ignored by exports.
fn bad_filter(field: &str, v: &Hostile) -> bool {
    if field == "apres" {
        return false;
    }
    if v.dup {
        return true;
    }
    let d = decoded(v);
    if d.chars().any(char::is_control) {
        return true;
    }
    let t = d.trim();
    if t.is_empty() {
        return false;
    }
    match field {
        "aidant" | "usager" | "structure" => t.parse::<i64>().is_err(),
        "du" | "au" => chrono::NaiveDate::parse_from_str(t, "%Y-%m-%d").is_err(),
        "demarche" | "action" => true,
        _ => false,
    }
}

fn audit(c: &mut Check, who: &mut Client, reader: &str) {
    for field in AUDIT_FILTERS {
        let mut values = text_corpus();
        if ["aidant", "usager", "structure", "apres"].contains(&field) {
            values.extend(numeric_corpus());
        }
        for v in &values {
            let q = with(&[], field, v);
            for path in ["/audit", "/audit/api"] {
                c.send(who, &format!("GET {path} {field}={} (as {reader})", v.class), Req::get(format!("{path}?{q}")));
            }
            for path in ["/audit/export.csv", "/audit/export.jsonl"] {
                let what = format!("GET {path} {field}={} (as {reader})", v.class);
                let Some(a) = c.send(who, &what, Req::get(format!("{path}?{q}"))) else { continue };
                if a.complete && bad_filter(field, v) && !(400..500).contains(&a.status) {
                    c.offend(format!("{what} -> {} with {} bytes of export: a 4xx was due before any body", a.status, a.body.len()));
                }
            }
        }
    }
}

fn signed_in(c: &mut Check, referent: &mut Client, auditor: &mut Client, w: &World) {
    audit(c, auditor, "auditor");
    audit(c, referent, "referent");

    // Usager search and pages.
    for (who, name) in [(&mut *referent, "referent"), (&mut *auditor, "auditor")] {
        for v in text_corpus() {
            c.send(who, &format!("GET /usagers q={} (as {name})", v.class), Req::get(format!("/usagers?{}", with(&[], "q", &v))));
        }
    }
    let u = w.usager.id;
    let m = w.mandat.id;
    let a = w.mandat.autorisation("argent");
    for v in path_corpus() {
        for template in [
            "/usagers/{id}",
            "/usagers/{id}/mandats/{m}/renouveler",
            "/usagers/{u}/mandats/{id}/renouveler",
            "/usagers/{u}/autorisations/{id}/revoquer",
            "/usagers/{u}/revocations/{id}",
            "/mandats/{id}/attestation",
            "/referent/aidants/{id}",
            "/referent/aidants/{id}/carte",
            "/referent/aidants/{id}/cles",
        ] {
            let p = template.replace("{u}", &u.to_string()).replace("{m}", &m.to_string()).replace("{id}", &v.raw);
            c.send(referent, &format!("GET {template} id={}", v.class), Req::get(&p));
        }
    }

    // The identity provider's flow, started by the référent, with its usager search.
    let csrf = csrf_of(c, referent, "/referent/aidants/nouveau");
    let q = format!(
        "client_id={}&response_type=code&redirect_uri={}&scope=openid&acr_values=eidas1&state={}&nonce={}",
        enc(&w.client.client_id),
        enc(CALLBACK),
        random_hex(64),
        random_hex(64)
    );
    let start = c.page(referent, "setup: GET /authorize", Req::get(format!("/authorize?{q}")));
    let flow = start.flow().unwrap_or_else(|| panic!("no flow started ({}): {:?} {}", start.status, start.location, start.body));
    let page = c.page(referent, "setup: GET /autorisation/{flow}", Req::get(&flow));
    assert_eq!(page.status, 200, "flow page: {:?} {}", page.location, page.body);
    for v in text_corpus() {
        c.send(referent, &format!("GET /autorisation/{{flow}} q={}", v.class), Req::get(format!("{flow}?{}", with(&[], "q", &v))));
    }
    for v in text_corpus().into_iter().chain(numeric_corpus()) {
        c.send(referent, &format!("POST /autorisation/{{flow}}/usager usager={}", v.class), Req::post_raw_form(format!("{flow}/usager"), with(&[("csrf", csrf.clone())], "usager", &v)));
    }
    let picked = c.page(referent, "setup: POST /autorisation/{flow}/usager", Req::post_form(format!("{flow}/usager"), &[("csrf", &csrf), ("usager", &u.to_string())]));
    assert_eq!(picked.location.as_deref(), Some(format!("{flow}/demarche").as_str()), "{}", picked.body);
    for v in text_corpus() {
        c.send(referent, &format!("POST /autorisation/{{flow}}/demarche demarche={}", v.class), Req::post_raw_form(format!("{flow}/demarche"), with(&[("csrf", csrf.clone())], "demarche", &v)));
        c.send(referent, &format!("POST /autorisation/{{flow}}/annuler csrf={}", v.class), Req::post_raw_form(format!("{flow}/annuler"), with(&[], "csrf", &v)));
    }
    for (class, ct, body) in wrong_bodies() {
        c.send(referent, &format!("POST /autorisation/{{flow}}/demarche body={class}"), Req::post(format!("{flow}/demarche")).body(ct, body));
    }

    // The référent's forms.
    for v in text_corpus() {
        c.send(referent, &format!("GET /referent ok={}", v.class), Req::get(format!("/referent?{}", with(&[], "ok", &v))));
        c.send(referent, &format!("GET /espace ok={}", v.class), Req::get(format!("/espace?{}", with(&[], "ok", &v))));
        c.send(referent, &format!("GET /espace/securite ok={}", v.class), Req::get(format!("/espace/securite?{}", with(&[], "ok", &v))));
        for field in ["email", "prenom", "nom", "profession"] {
            let member = vec![
                ("csrf", csrf.clone()),
                ("email", enc(&format!("nouvel-aidant-{}@france-services.exemple.fr", random_hex(8)))),
                ("prenom", "Ana".to_owned()),
                ("nom", "Lopes".to_owned()),
                ("profession", "Conseill%C3%A8re".to_owned()),
            ];
            c.send(referent, &format!("POST /referent/aidants/nouveau {field}={}", v.class), Req::post_raw_form("/referent/aidants/nouveau", with(&member, field, &v)));
        }
        c.send(referent, &format!("POST /referent/demarches demarche={}", v.class), Req::post_raw_form("/referent/demarches", with(&[("csrf", csrf.clone())], "demarche", &v)));
        let r = w.referent.id;
        c.send(referent, &format!("POST /referent/aidants/{{id}}/carte serie={}", v.class), Req::post_raw_form(format!("/referent/aidants/{r}/carte"), with(&[("csrf", csrf.clone())], "serie", &v)));
        c.send(referent, &format!("POST /referent/aidants/{{id}}/carte/{{device}}/valider code={}", v.class), Req::post_raw_form(format!("/referent/aidants/{r}/carte/1/valider"), with(&[("csrf", csrf.clone())], "code", &v)));
        for field in ["raison", "precision"] {
            let base = vec![("csrf", csrf.clone()), ("raison", "perdue".to_owned()), ("precision", "x".to_owned())];
            c.send(referent, &format!("POST /referent/aidants/{{id}}/carte/{{device}}/dissocier {field}={}", v.class), Req::post_raw_form(format!("/referent/aidants/{r}/carte/1/dissocier"), with(&base, field, &v)));
        }
        c.send(referent, &format!("POST /referent/aidants/{{id}}/application/{{device}}/confirmer code={}", v.class), Req::post_raw_form(format!("/referent/aidants/{r}/application/1/confirmer"), with(&[("csrf", csrf.clone())], "code", &v)));
        c.send(referent, &format!("POST /referent/aidants/{{id}}/desactiver csrf={}", v.class), Req::post_raw_form(format!("/referent/aidants/{r}/desactiver"), with(&[], "csrf", &v)));
        c.send(referent, &format!("POST /espace/securite/cles/options name={}", v.class), Req::post("/espace/securite/cles/options").header("X-CSRF-Token", &csrf).body(Some("application/json"), serde_json::json!({ "name": decoded(&v) }).to_string()));
    }
    for v in text_corpus().into_iter().chain(numeric_corpus()) {
        c.send(referent, &format!("POST /espace/structure structure={}", v.class), Req::post_raw_form("/espace/structure", with(&[("csrf", csrf.clone())], "structure", &v)));
    }
    for v in path_corpus() {
        c.send(referent, &format!("POST /referent/aidants/{{id}}/desactiver id={}", v.class), Req::post_raw_form(format!("/referent/aidants/{}/desactiver", v.raw), format!("csrf={csrf}")));
        c.send(referent, &format!("POST /espace/securite/cles/{{id}}/retirer id={}", v.class), Req::post_raw_form(format!("/espace/securite/cles/{}/retirer", v.raw), format!("csrf={csrf}")));
    }
    for (class, ct, body) in wrong_bodies() {
        for path in ["/referent/aidants/nouveau", "/referent/demarches", "/espace/structure", "/mandats/nouveau", "/espace/securite/cles/options", "/espace/securite/cles"] {
            c.send(referent, &format!("POST {path} body={class}"), Req::post(path).body(ct, body.clone()).header("X-CSRF-Token", &csrf));
        }
    }

    // A new mandat: each field alone (both valid would go on to FranceConnect, which is
    // not configured here and answers 503 by design).
    for v in text_corpus().into_iter().chain(numeric_corpus()).filter(|v| !v.dup) {
        for field in ["demarche", "duree"] {
            c.send(referent, &format!("POST /mandats/nouveau {field}={}", v.class), Req::post_raw_form("/mandats/nouveau", with(&[("csrf", csrf.clone())], field, &v)));
        }
        c.send(referent, &format!("GET /mandats/nouveau state={}", v.class), Req::get(format!("/mandats/nouveau?{}", with(&[], "state", &v))));
        for field in ["consentement", "code"] {
            let base = vec![("csrf", csrf.clone()), ("consentement", "oui".to_owned()), ("code", "123456".to_owned())];
            c.send(referent, &format!("POST /mandats/nouveau/recapitulatif {field}={}", v.class), Req::post_raw_form("/mandats/nouveau/recapitulatif", with(&base, field, &v)));
        }
    }
    // Renewing and revoking (never confirmed).
    for v in text_corpus().into_iter().chain(numeric_corpus()) {
        for field in ["demarche", "duree"] {
            let base = vec![("csrf", csrf.clone()), ("demarche", "argent".to_owned()), ("duree", "365".to_owned())];
            c.send(referent, &format!("POST /usagers/{{id}}/mandats/{{mid}}/renouveler {field}={}", v.class), Req::post_raw_form(format!("/usagers/{u}/mandats/{m}/renouveler"), with(&base, field, &v)));
        }
        c.send(referent, &format!("POST /usagers/{{id}}/autorisations/{{aid}}/revoquer confirmation={}", v.class), Req::post_raw_form(format!("/usagers/{u}/autorisations/{a}/revoquer"), with(&[("csrf", csrf.clone())], "confirmation", &v)));
        c.send(referent, &format!("POST /usagers/{{id}}/mandats/{{mid}}/revoquer confirmation={}", v.class), Req::post_raw_form(format!("/usagers/{u}/mandats/{m}/revoquer"), with(&[("csrf", csrf.clone())], "confirmation", &v)));
        c.send(referent, &format!("POST /usagers/{{id}}/mandats/{{mid}}/renouveler/recapitulatif consentement={}", v.class), Req::post_raw_form(format!("/usagers/{u}/mandats/{m}/renouveler/recapitulatif"), with(&[("csrf", csrf.clone())], "consentement", &v)));
    }
    // FranceConnect's callback for a signed-in aidant.
    for name in ["code", "state", "error", "error_description"] {
        for v in text_corpus() {
            c.send(referent, &format!("GET /mandats/nouveau/franceconnect/retour {name}={} (signed in)", v.class), Req::get(format!("/mandats/nouveau/franceconnect/retour?{}", with(&[("state", "abc".to_owned())], name, &v))));
        }
    }

    // Re-authentication, as the auditor: the codes first (five refusals lock the e-mail,
    // and the code is no longer checked).
    let acsrf = csrf_of(c, auditor, "/espace");
    for v in text_corpus().into_iter().filter(|v| ["nul", "utf8-fffe", "10kb", "crlf"].contains(&v.class.as_str())) {
        c.send(auditor, &format!("POST /reauthentification code={} (signed in)", v.class), Req::post_raw_form("/reauthentification", with(&[("csrf", acsrf.clone())], "code", &v)));
    }
    for v in text_corpus() {
        c.send(auditor, &format!("GET /reauthentification suite={} (signed in)", v.class), Req::get(format!("/reauthentification?{}", with(&[], "suite", &v))));
        c.send(auditor, &format!("POST /reauthentification suite={} (signed in)", v.class), Req::post_raw_form("/reauthentification", with(&[("csrf", acsrf.clone()), ("code", String::new())], "suite", &v)));
    }
}

// ---- the case ------------------------------------------------------------------------------

on_both_backends! {
    /// Hostile values on every endpoint get a clean refusal: no 5xx, no cut answer (an
    /// export with a bad filter is refused before any body), no ERROR in the log, and
    /// the broker still healthy and ready afterwards.
    fn hostile_input_is_refused_cleanly_and_the_broker_keeps_serving(backend) {
        let started = Instant::now();
        let w = world(backend);
        let mut c = Check::new(&w.idp);
        let (mut anon, mut referent, mut auditor) = (Client::new(&w.idp), Client::new(&w.idp), Client::new(&w.idp));
        sign_in(&mut c, &mut referent, &w, &w.referent);
        sign_in(&mut c, &mut auditor, &w, &w.auditor);
        let setup = started.elapsed();

        let t = Instant::now();
        oidc_endpoints(&mut c, &mut anon, &w);
        let oidc = (c.sent, t.elapsed());
        let t = Instant::now();
        let before = c.sent;
        public_pages(&mut c, &mut Client::new(&w.idp));
        let pages = (c.sent - before, t.elapsed());
        let t = Instant::now();
        let before = c.sent;
        signed_in(&mut c, &mut referent, &mut auditor, &w);
        let signed = (c.sent - before, t.elapsed());

        // The sessions lived through it all (else part of the corpus went unchecked).
        for (who, name) in [(&mut referent, "référent"), (&mut auditor, "auditor")] {
            let p = c.page(who, "check: GET /espace", Req::get("/espace"));
            if p.status != 200 {
                c.offend(format!("the {name}'s session ended during the corpus (GET /espace -> {} {:?})", p.status, p.location));
            }
        }
        // Still serving.
        for probe in ["/healthz", "/readyz"] {
            match c.send(&mut anon, &format!("check: GET {probe}"), Req::get(probe)) {
                Some(a) if a.status == 200 => {}
                Some(a) => c.offend(format!("after the corpus, GET {probe} -> {}: {}", a.status, String::from_utf8_lossy(&a.body))),
                None => c.offend(format!("after the corpus, GET {probe}: no answer")),
            }
        }
        // Anything logged at ERROR after the last request.
        std::thread::sleep(Duration::from_millis(200));
        c.read_log("after the corpus", Until::Now, false);

        println!(
            "{backend:?}: {} requests in {:.1} s (setup {:.1} s; OIDC {} in {:.1} s; pages {} in {:.1} s; signed in {} in {:.1} s)",
            c.sent,
            started.elapsed().as_secs_f64(),
            setup.as_secs_f64(),
            oidc.0,
            oidc.1.as_secs_f64(),
            pages.0,
            pages.1.as_secs_f64(),
            signed.0,
            signed.1.as_secs_f64()
        );
        assert!(c.offenders.is_empty(), "{backend:?}: {} offending requests:\n{}", c.offenders.len(), c.offenders.join("\n"));
    }
}
