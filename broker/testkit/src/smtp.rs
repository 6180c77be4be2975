//! A real, minimal SMTP server on 127.0.0.1 for the tests: it accepts every message
//! (no TLS, no AUTH) and keeps them in memory.
//!
//! ```no_run
//! let smtp = broker_testkit::smtp::SmtpListener::start();
//! // … configure the broker with smtp.url(), send a message …
//! let got = smtp.wait_for(1, std::time::Duration::from_secs(5));
//! let link = got[0].find_link("http://127.0.0.1");
//! ```
//!
//! A mail server outage: [`SmtpListener::stop`] closes the port and every open
//! connection; [`SmtpListener::start_on`] serves the same port again.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// One message accepted by the listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Received {
    /// The `MAIL FROM` address, without angle brackets (empty for the null sender).
    pub mail_from: String,
    /// The `RCPT TO` addresses, without angle brackets.
    pub rcpt_to: Vec<String>,
    /// The message as received after `DATA`, dot-unstuffed, with its CRLF line ends,
    /// without the final `.` line.
    pub data: String,
}

struct Shared {
    received: Mutex<Vec<Received>>,
    stop: AtomicBool,
    /// The connections being served (a number of each, and a handle to close it).
    open: Mutex<Vec<(u64, TcpStream)>>,
}

/// A minimal SMTP server thread, stopped when dropped.
pub struct SmtpListener {
    port: u16,
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl SmtpListener {
    /// Binds 127.0.0.1 on a free port and starts serving.
    pub fn start() -> SmtpListener {
        SmtpListener::serve_from(TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0"))
    }

    /// Binds 127.0.0.1:`port` (e.g. the port of a listener stopped before, to play a mail
    /// server coming back) and starts serving. Waits up to 5 s for the port to be free.
    pub fn start_on(port: u16) -> SmtpListener {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            match TcpListener::bind(("127.0.0.1", port)) {
                Ok(l) => return SmtpListener::serve_from(l),
                Err(e) if e.kind() == std::io::ErrorKind::AddrInUse && Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(50));
                }
                Err(e) => panic!("bind 127.0.0.1:{port}: {e}"),
            }
        }
    }

    fn serve_from(listener: TcpListener) -> SmtpListener {
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let shared = Arc::new(Shared { received: Mutex::new(Vec::new()), stop: AtomicBool::new(false), open: Mutex::new(Vec::new()) });
        let s = shared.clone();
        let thread = std::thread::Builder::new()
            .name(format!("smtp-{port}"))
            .spawn(move || {
                let mut next = 0u64;
                while !s.stop.load(Ordering::SeqCst) {
                    match listener.accept() {
                        Ok((stream, _)) => {
                            next += 1;
                            let n = next;
                            if let Ok(handle) = stream.try_clone() {
                                s.open.lock().unwrap().push((n, handle));
                            }
                            let s = s.clone();
                            std::thread::spawn(move || {
                                let _ = serve(stream, &s);
                                s.open.lock().unwrap().retain(|(i, _)| *i != n);
                            });
                        }
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                            std::thread::sleep(Duration::from_millis(5));
                        }
                        Err(_) => std::thread::sleep(Duration::from_millis(5)),
                    }
                }
            })
            .unwrap();
        SmtpListener { port, shared, thread: Some(thread) }
    }

    /// Stops serving, as a mail server that goes away: the port is closed (connections
    /// are refused) and the connections open are cut. The messages received so far stay
    /// readable.
    pub fn stop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        for (_, c) in self.shared.open.lock().unwrap().drain(..) {
            let _ = c.shutdown(std::net::Shutdown::Both);
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `smtp://127.0.0.1:PORT` (plain SMTP, no TLS).
    pub fn url(&self) -> String {
        format!("smtp://127.0.0.1:{}", self.port)
    }

    /// The messages received so far.
    pub fn received(&self) -> Vec<Received> {
        self.shared.received.lock().unwrap().clone()
    }

    /// Waits until at least `n` messages were received, or `timeout`; returns all the
    /// messages received (possibly fewer than `n` after the timeout).
    pub fn wait_for(&self, n: usize, timeout: Duration) -> Vec<Received> {
        let end = Instant::now() + timeout;
        loop {
            let got = self.received();
            if got.len() >= n || Instant::now() >= end {
                return got;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for SmtpListener {
    fn drop(&mut self) {
        self.stop();
    }
}

#[derive(Default)]
struct Transaction {
    from: Option<String>,
    rcpt: Vec<String>,
}

fn serve(stream: TcpStream, shared: &Shared) -> std::io::Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut out = stream.try_clone()?;
    let mut input = BufReader::new(stream);
    let reply = |out: &mut TcpStream, s: &str| -> std::io::Result<()> {
        // One write per reply, as a mail server does.
        out.write_all(format!("{s}\r\n").as_bytes())?;
        out.flush()
    };
    reply(&mut out, "220 127.0.0.1 ESMTP broker-testkit")?;
    let mut greeted = false;
    let mut tx = Transaction::default();
    let mut line = Vec::new();
    loop {
        if shared.stop.load(Ordering::SeqCst) {
            return Ok(());
        }
        line.clear();
        if input.read_until(b'\n', &mut line)? == 0 {
            return Ok(());
        }
        let text = String::from_utf8_lossy(&line);
        let text = text.trim_end_matches(['\r', '\n']);
        let (verb, arg) = match text.split_once(' ') {
            Some((v, a)) => (v.to_ascii_uppercase(), a.trim()),
            None => (text.to_ascii_uppercase(), ""),
        };
        match verb.as_str() {
            "EHLO" if !arg.is_empty() => {
                greeted = true;
                tx = Transaction::default();
                reply(&mut out, &format!("250-127.0.0.1 bonjour {arg}"))?;
                reply(&mut out, "250-8BITMIME")?;
                reply(&mut out, "250-SMTPUTF8")?;
                reply(&mut out, "250 SIZE 10485760")?;
            }
            "HELO" if !arg.is_empty() => {
                greeted = true;
                tx = Transaction::default();
                reply(&mut out, "250 127.0.0.1")?;
            }
            "EHLO" | "HELO" => reply(&mut out, "501 5.5.4 domaine manquant")?,
            "MAIL" => match path_arg(arg, "FROM:") {
                _ if !greeted => reply(&mut out, "503 5.5.1 EHLO/HELO d'abord")?,
                _ if tx.from.is_some() => reply(&mut out, "503 5.5.1 transaction déjà commencée")?,
                Some(from) => {
                    tx.from = Some(from);
                    reply(&mut out, "250 2.1.0 OK")?;
                }
                None => reply(&mut out, "501 5.5.4 syntaxe : MAIL FROM:<adresse>")?,
            },
            "RCPT" => match path_arg(arg, "TO:") {
                _ if tx.from.is_none() => reply(&mut out, "503 5.5.1 MAIL FROM d'abord")?,
                Some(to) if !to.is_empty() => {
                    tx.rcpt.push(to);
                    reply(&mut out, "250 2.1.5 OK")?;
                }
                _ => reply(&mut out, "501 5.5.4 syntaxe : RCPT TO:<adresse>")?,
            },
            "DATA" if !arg.is_empty() => reply(&mut out, "501 5.5.4 DATA sans argument")?,
            "DATA" => {
                if tx.from.is_none() || tx.rcpt.is_empty() {
                    reply(&mut out, "503 5.5.1 MAIL FROM et RCPT TO d'abord")?;
                    continue;
                }
                reply(&mut out, "354 envoyez le message, terminez par <CRLF>.<CRLF>")?;
                let data = read_data(&mut input)?;
                let t = std::mem::take(&mut tx);
                shared.received.lock().unwrap().push(Received {
                    mail_from: t.from.unwrap_or_default(),
                    rcpt_to: t.rcpt,
                    data,
                });
                reply(&mut out, "250 2.0.0 message accepté")?;
            }
            "RSET" => {
                tx = Transaction::default();
                reply(&mut out, "250 2.0.0 OK")?;
            }
            "NOOP" => reply(&mut out, "250 2.0.0 OK")?,
            "VRFY" => reply(&mut out, "252 2.5.0 non vérifié")?,
            "QUIT" => {
                reply(&mut out, "221 2.0.0 au revoir")?;
                return Ok(());
            }
            _ => reply(&mut out, "500 5.5.2 commande inconnue")?,
        }
    }
}

/// `FROM:<a@b> PARAMS` → `a@b` (case-insensitive keyword, optional space after `:`).
fn path_arg(arg: &str, keyword: &str) -> Option<String> {
    if arg.len() < keyword.len() || !arg[..keyword.len()].eq_ignore_ascii_case(keyword) {
        return None;
    }
    let rest = arg[keyword.len()..].trim_start();
    let rest = rest.strip_prefix('<')?;
    let end = rest.find('>')?;
    Some(rest[..end].to_owned())
}

/// Reads the DATA lines up to the `.` line, removing the leading dot of stuffed lines.
fn read_data(input: &mut impl BufRead) -> std::io::Result<String> {
    let mut data = Vec::new();
    let mut line = Vec::new();
    loop {
        line.clear();
        if input.read_until(b'\n', &mut line)? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        if line == b".\r\n" || line == b".\n" {
            break;
        }
        let l = if line.first() == Some(&b'.') { &line[1..] } else { &line[..] };
        data.extend_from_slice(l);
    }
    Ok(String::from_utf8_lossy(&data).into_owned())
}

impl Received {
    /// The header block (unfolded), up to the first empty line.
    fn split(&self) -> (&str, &str) {
        match self.data.find("\r\n\r\n") {
            Some(i) => (&self.data[..i], &self.data[i + 4..]),
            None => match self.data.find("\n\n") {
                Some(i) => (&self.data[..i], &self.data[i + 2..]),
                None => (&self.data[..], ""),
            },
        }
    }

    /// The raw value of the first header `name` (case-insensitive), unfolded.
    pub fn header(&self, name: &str) -> Option<String> {
        let (head, _) = self.split();
        let mut value: Option<String> = None;
        for l in head.split('\n') {
            let l = l.trim_end_matches('\r');
            if l.starts_with([' ', '\t']) {
                if let Some(v) = value.as_mut() {
                    v.push(' ');
                    v.push_str(l.trim_start());
                }
                continue;
            }
            if value.is_some() {
                break;
            }
            if let Some((n, v)) = l.split_once(':') {
                if n.trim().eq_ignore_ascii_case(name) {
                    value = Some(v.trim().to_owned());
                }
            }
        }
        value
    }

    /// The `Subject` header, RFC 2047 encoded words decoded.
    pub fn subject(&self) -> Option<String> {
        self.header("Subject").map(|s| decode_encoded_words(&s))
    }

    /// The body decoded from its Content-Transfer-Encoding (quoted-printable, base64,
    /// 7bit/8bit), as UTF-8, with CRLF line ends turned into LF.
    pub fn body_text(&self) -> String {
        let (_, body) = self.split();
        let cte = self.header("Content-Transfer-Encoding").unwrap_or_default().to_ascii_lowercase();
        let bytes = match cte.trim() {
            "quoted-printable" => decode_qp(body),
            "base64" => decode_base64(body),
            _ => body.as_bytes().to_vec(),
        };
        String::from_utf8_lossy(&bytes).replace("\r\n", "\n")
    }

    /// The first link in the decoded body starting with `prefix`, up to the first space,
    /// line end, `<`, `>`, `"` or `'`.
    pub fn find_link(&self, prefix: &str) -> Option<String> {
        let body = self.body_text();
        let start = body.find(prefix)?;
        let link: String = body[start..]
            .chars()
            .take_while(|c| !c.is_whitespace() && !matches!(c, '<' | '>' | '"' | '\''))
            .collect();
        Some(link)
    }
}

fn hex_val(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Quoted-printable: `=XX` bytes and `=` soft line breaks.
pub fn decode_qp(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'=' {
            if b[i + 1..].starts_with(b"\r\n") {
                i += 3;
                continue;
            }
            if b[i + 1..].starts_with(b"\n") {
                i += 2;
                continue;
            }
            if i + 2 < b.len() {
                if let (Some(h), Some(l)) = (hex_val(b[i + 1]), hex_val(b[i + 2])) {
                    out.push(h << 4 | l);
                    i += 3;
                    continue;
                }
            }
        }
        out.push(b[i]);
        i += 1;
    }
    out
}

/// Base64 (standard alphabet), ignoring line breaks and other non-alphabet bytes.
pub fn decode_base64(s: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in s.bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' | b'-' => 62,
            b'/' | b'_' => 63,
            b'=' => break,
            _ => continue,
        } as u32;
        acc = acc << 6 | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    out
}

/// RFC 2047: `=?charset?B?…?=` and `=?charset?Q?…?=` (UTF-8 assumed); the white space
/// between two adjacent encoded words is dropped.
pub fn decode_encoded_words(s: &str) -> String {
    let mut out = String::new();
    let mut rest = s;
    let mut last_was_word = false;
    while let Some(start) = rest.find("=?") {
        let decoded = parse_word(&rest[start..]);
        let Some((text, used)) = decoded else {
            out.push_str(&rest[..start + 2]);
            rest = &rest[start + 2..];
            last_was_word = false;
            continue;
        };
        let between = &rest[..start];
        if !(last_was_word && between.trim().is_empty()) {
            out.push_str(between);
        }
        out.push_str(&text);
        rest = &rest[start + used..];
        last_was_word = true;
    }
    out.push_str(rest);
    out
}

/// `=?cs?E?text?=` at the start of `s` → (decoded, length used).
fn parse_word(s: &str) -> Option<(String, usize)> {
    let inner = s.strip_prefix("=?")?;
    let (_charset, after) = inner.split_once('?')?;
    let (enc, after) = after.split_once('?')?;
    let end = after.find("?=")?;
    let payload = &after[..end];
    let bytes = match enc {
        "B" | "b" => decode_base64(payload),
        "Q" | "q" => decode_qp(&payload.replace('_', " ")),
        _ => return None,
    };
    let used = 2 + inner.len() - after.len() + end + 2;
    Some((String::from_utf8_lossy(&bytes).into_owned(), used))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decoders() {
        assert_eq!(decode_qp("caf=C3=A9 =\r\nsuite=3D"), "café suite=".as_bytes());
        assert_eq!(decode_base64("Y2Fmw6k=\r\n"), "café".as_bytes());
        assert_eq!(decode_encoded_words("=?utf-8?b?Q29ubmV4aW9uIMOg?= =?utf-8?q?_Aidants?= x"), "Connexion à Aidants x");
        assert_eq!(path_arg("FROM:<a@b.fr> BODY=8BITMIME", "FROM:").as_deref(), Some("a@b.fr"));
        assert_eq!(path_arg("to: <c@d.fr>", "TO:").as_deref(), Some("c@d.fr"));
    }
}
