//! A closed-loop HTTP/1.1 load generator: `connections` keep-alive connections, each
//! sending its next request as soon as the previous answer is read, spread over a few
//! client threads (one single-threaded tokio runtime each). Every latency is recorded.

use crate::stats::Measure;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The requests of one load phase, as raw bytes.
pub enum Requests {
    /// The same request again and again.
    Repeat(Vec<u8>),
    /// Each request once (single-use codes, single-use access tokens): the phase ends
    /// early if they run out.
    Each(Vec<Vec<u8>>),
}

impl Requests {
    fn get(&self, i: usize) -> Option<&[u8]> {
        match self {
            Requests::Repeat(r) => Some(r),
            Requests::Each(list) => list.get(i).map(Vec::as_slice),
        }
    }
}

/// A target: where to connect and what to put in the `Host` header.
#[derive(Clone)]
pub struct Target {
    pub addr: SocketAddr,
    pub host: String,
}

impl Target {
    /// `http://host:port` (no TLS, no path).
    pub fn parse(base: &str) -> anyhow::Result<Self> {
        let url = url::Url::parse(base)?;
        anyhow::ensure!(url.scheme() == "http", "http:// only: {base}");
        let host = url.host_str().ok_or_else(|| anyhow::anyhow!("no host in {base}"))?.to_owned();
        let port = url.port_or_known_default().unwrap_or(80);
        let ip = if host == "localhost" { "127.0.0.1".to_owned() } else { host.clone() };
        let addr = format!("{ip}:{port}").parse()?;
        Ok(Self { addr, host: format!("{host}:{port}") })
    }

    pub fn get(&self, path: &str, extra_headers: &[(&str, &str)]) -> Vec<u8> {
        let mut r = format!("GET {path} HTTP/1.1\r\nHost: {}\r\nAccept: */*\r\n", self.host);
        for (k, v) in extra_headers {
            r.push_str(&format!("{k}: {v}\r\n"));
        }
        r.push_str("\r\n");
        r.into_bytes()
    }

    pub fn post_form(&self, path: &str, pairs: &[(&str, &str)]) -> Vec<u8> {
        let body = url::form_urlencoded::Serializer::new(String::new()).extend_pairs(pairs).finish();
        format!(
            "POST {path} HTTP/1.1\r\nHost: {}\r\nAccept: application/json\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n{body}",
            self.host,
            body.len()
        )
        .into_bytes()
    }
}

/// Settings of one load phase.
#[derive(Clone, Copy)]
pub struct Load {
    pub connections: usize,
    pub threads: usize,
    pub duration: Duration,
    /// The status every answer must have; any other counts as an error.
    pub expect: u16,
}

/// One answer read off the wire.
struct Answer {
    status: u16,
    /// The server asked to close the connection after this answer.
    close: bool,
    /// The answer's bytes (head and body), kept only for error reports.
    raw_len: usize,
}

struct Shared {
    requests: Requests,
    next: AtomicUsize,
    errors: AtomicU64,
    first_error: Mutex<Option<String>>,
    started: Instant,
    deadline: Instant,
    load: Load,
}

/// Runs one phase against `target` and returns what was measured.
pub fn run(target: &Target, requests: Requests, load: Load) -> anyhow::Result<Measure> {
    let started = Instant::now();
    let shared = Arc::new(Shared {
        requests,
        next: AtomicUsize::new(0),
        errors: AtomicU64::new(0),
        first_error: Mutex::new(None),
        started,
        deadline: started + load.duration,
        load,
    });
    let threads = load.threads.clamp(1, load.connections.max(1));
    let mut handles = Vec::new();
    for t in 0..threads {
        let conns = load.connections / threads + usize::from(t < load.connections % threads);
        let shared = shared.clone();
        let target = target.clone();
        handles.push(std::thread::spawn(move || -> io::Result<Vec<u32>> {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            rt.block_on(async move {
                let mut tasks = Vec::new();
                for _ in 0..conns {
                    tasks.push(tokio::spawn(connection(target.clone(), shared.clone())));
                }
                let mut latencies = Vec::new();
                for t in tasks {
                    latencies.extend(t.await.map_err(io::Error::other)?);
                }
                Ok(latencies)
            })
        }));
    }
    let mut latencies = Vec::new();
    for h in handles {
        latencies.extend(h.join().map_err(|_| anyhow::anyhow!("client thread panicked"))??);
    }
    let elapsed = started.elapsed();
    let exhausted = match &shared.requests {
        Requests::Each(list) => shared.next.load(Ordering::Relaxed) >= list.len(),
        Requests::Repeat(_) => false,
    };
    let first_error = shared.first_error.lock().unwrap().take();
    Ok(Measure::new(latencies, shared.errors.load(Ordering::Relaxed), elapsed, exhausted, first_error))
}

/// One keep-alive connection's loop: latencies (µs) of the answers with the expected
/// status; other answers and I/O failures are counted as errors.
async fn connection(target: Target, shared: Arc<Shared>) -> Vec<u32> {
    let mut latencies = Vec::with_capacity(4096);
    let mut stream: Option<TcpStream> = None;
    let mut buf: Vec<u8> = Vec::with_capacity(16 * 1024);
    loop {
        if Instant::now() >= shared.deadline {
            break;
        }
        let i = shared.next.fetch_add(1, Ordering::Relaxed);
        let Some(req) = shared.requests.get(i) else { break };
        if stream.is_none() {
            match TcpStream::connect(target.addr).await {
                Ok(s) => {
                    let _ = s.set_nodelay(true);
                    stream = Some(s);
                }
                Err(e) => {
                    error(&shared, format!("connect {}: {e}", target.addr));
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            }
        }
        let s = stream.as_mut().expect("connected above");
        let sent = Instant::now();
        buf.clear();
        let answer = match s.write_all(req).await {
            Ok(()) => read_answer(s, &mut buf).await,
            Err(e) => Err(e),
        };
        let took = sent.elapsed();
        match answer {
            Ok(a) => {
                if a.status == shared.load.expect {
                    latencies.push(u32::try_from(took.as_micros()).unwrap_or(u32::MAX));
                } else {
                    let text = String::from_utf8_lossy(&buf[..a.raw_len.min(buf.len()).min(600)]).into_owned();
                    error(&shared, format!("status {} (request #{i}, {:.1} s in):\n{text}", a.status, shared.started.elapsed().as_secs_f64()));
                }
                if a.close {
                    stream = None;
                }
            }
            Err(e) => {
                error(&shared, format!("request #{i}: {e}"));
                stream = None;
            }
        }
    }
    latencies
}

fn error(shared: &Shared, message: String) {
    shared.errors.fetch_add(1, Ordering::Relaxed);
    let mut first = shared.first_error.lock().unwrap();
    if first.is_none() {
        *first = Some(message);
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

async fn fill(s: &mut TcpStream, buf: &mut Vec<u8>) -> io::Result<()> {
    let mut chunk = [0u8; 16 * 1024];
    let n = s.read(&mut chunk).await?;
    if n == 0 {
        return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "connection closed by the server"));
    }
    buf.extend_from_slice(&chunk[..n]);
    Ok(())
}

/// Reads one complete answer (Content-Length or chunked body) into `buf`.
async fn read_answer(s: &mut TcpStream, buf: &mut Vec<u8>) -> io::Result<Answer> {
    let head_end = loop {
        if let Some(p) = find(buf, b"\r\n\r\n") {
            break p + 4;
        }
        fill(s, buf).await?;
    };
    let head = std::str::from_utf8(&buf[..head_end]).map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "head not UTF-8"))?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status: u16 = status_line
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, format!("bad status line: {status_line}")))?;
    let (mut length, mut chunked, mut close) = (None, false, status_line.starts_with("HTTP/1.0"));
    for line in lines {
        let Some((name, value)) = line.split_once(':') else { continue };
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            length = value.parse::<usize>().ok();
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = value.to_ascii_lowercase().contains("chunked");
        } else if name.eq_ignore_ascii_case("connection") {
            close = value.eq_ignore_ascii_case("close");
        }
    }
    let no_body = status == 204 || status == 304 || (100..200).contains(&status);
    if no_body {
        return Ok(Answer { status, close, raw_len: head_end });
    }
    if chunked {
        let mut pos = head_end;
        loop {
            let line_end = loop {
                if let Some(p) = find(&buf[pos..], b"\r\n") {
                    break pos + p;
                }
                fill(s, buf).await?;
            };
            let size_text = std::str::from_utf8(&buf[pos..line_end]).unwrap_or("").split(';').next().unwrap_or("").trim().to_owned();
            let size = usize::from_str_radix(&size_text, 16).map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "bad chunk size"))?;
            pos = line_end + 2;
            if size == 0 {
                // Trailers (none expected), then the empty line.
                loop {
                    if let Some(p) = find(&buf[pos..], b"\r\n") {
                        if p == 0 {
                            return Ok(Answer { status, close, raw_len: pos + 2 });
                        }
                        pos += p + 2;
                        continue;
                    }
                    fill(s, buf).await?;
                }
            }
            while buf.len() < pos + size + 2 {
                fill(s, buf).await?;
            }
            pos += size + 2;
        }
    }
    match length {
        Some(n) => {
            while buf.len() < head_end + n {
                fill(s, buf).await?;
            }
            Ok(Answer { status, close, raw_len: head_end + n })
        }
        None => {
            // Body delimited by the end of the connection.
            loop {
                match fill(s, buf).await {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => break,
                    Err(e) => return Err(e),
                }
            }
            Ok(Answer { status, close: true, raw_len: buf.len() })
        }
    }
}

/// One request, its status and body: to check a target before loading it.
pub fn probe(target: &Target, request: &[u8]) -> anyhow::Result<(u16, String)> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    rt.block_on(async {
        let mut s = TcpStream::connect(target.addr).await?;
        s.write_all(request).await?;
        let mut buf = Vec::new();
        let a = read_answer(&mut s, &mut buf).await?;
        let text = String::from_utf8_lossy(&buf[..a.raw_len.min(buf.len())]).into_owned();
        let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
        Ok((a.status, body))
    })
}
