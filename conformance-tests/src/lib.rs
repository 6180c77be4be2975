//! Starts the real `broker` binary on a free loopback port and talks HTTP to it.
//! [`idp`] seeds a broker through its CLI and drives an aidant's browser; [`fc`] plays
//! FranceConnect's core, an OpenID Connect client of the broker.

/// Each case as a module with one test per backend, `case::sqlite` and `case::postgres`:
/// `on_both_backends! { fn name(backend) { … } … }` (the test file imports `Backend`).
#[macro_export]
macro_rules! on_both_backends {
    ($($(#[$doc:meta])* fn $name:ident($b:ident) $body:block)*) => {
        $(
            $(#[$doc])*
            mod $name {
                #[allow(unused_imports)]
                use super::*;
                fn case($b: Backend) $body
                #[test]
                fn sqlite() {
                    case(Backend::Sqlite)
                }
                #[test]
                fn postgres() {
                    case(Backend::Postgres)
                }
            }
        )*
    };
}

/// The cookies a test client holds, as a browser keeps them (names only: no path nor
/// expiry handling beyond removal).
#[derive(Debug, Default, Clone)]
pub struct CookieJar(Vec<(String, String)>);

impl CookieJar {
    /// Applies one `Set-Cookie` value: a new value replaces the old one; an empty value or
    /// `Max-Age=0` removes the cookie.
    pub fn keep(&mut self, set_cookie: &str) {
        let Some((name, value)) = set_cookie.split(';').next().unwrap_or("").split_once('=') else { return };
        let (name, value) = (name.trim().to_owned(), value.trim().to_owned());
        let gone = value.is_empty() || set_cookie.to_ascii_lowercase().contains("max-age=0");
        self.0.retain(|(k, _)| *k != name);
        if !gone {
            self.0.push((name, value));
        }
    }

    /// The `Cookie` header to send, if any cookie is held.
    pub fn header(&self) -> Option<String> {
        (!self.0.is_empty()).then(|| self.0.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join("; "))
    }
}

pub mod fc;
pub mod idp;
pub mod proxy;

use std::io::Read;
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The `broker` binary: `BROKER_BIN`, or the one built beside this test.
pub fn broker_bin() -> PathBuf {
    if let Ok(p) = std::env::var("BROKER_BIN") {
        return p.into();
    }
    let exe = std::env::current_exe().expect("current exe");
    let p = exe.parent().and_then(|d| d.parent()).expect("target dir").join("broker");
    assert!(p.exists(), "{} missing: build the workspace first (cargo build --workspace)", p.display());
    p
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

pub fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(10)))
        .build()
        .into()
}

pub struct Broker {
    /// Where to send requests (loopback address).
    pub base: String,
    /// The public URL the broker was given (`AC_ISSUER`).
    pub issuer: String,
    child: Option<Child>,
    /// What the process printed so far (read continuously, so that it never blocks on a
    /// full pipe), and the threads reading it.
    printed: Arc<Mutex<(Vec<u8>, Vec<u8>)>>,
    readers: Vec<JoinHandle<()>>,
    pub dir: tempfile::TempDir,
}

/// Why a start failed: the process exited (its port taken by another, or else), or it
/// never got healthy.
struct Exit {
    port_taken: bool,
}

pub struct Output {
    pub stdout: String,
    pub stderr: String,
}

impl Broker {
    /// Starts `broker serve` with the given extra environment and waits until this very
    /// process says it listens and answers /healthz. A port taken by another process
    /// between its choice and the broker's bind is replaced by another one (unless the
    /// caller chose `AC_LISTEN`).
    pub fn start(env: &[(&str, &str)]) -> Broker {
        let mut dir = tempfile::tempdir().unwrap();
        let printed = Arc::new(Mutex::new((Vec::new(), Vec::new())));
        let chosen_listen = env.iter().any(|(k, _)| *k == "AC_LISTEN");
        for attempt in 1.. {
            let port = free_port();
            let base = format!("http://127.0.0.1:{port}");
            let assets = concat!(env!("CARGO_MANIFEST_DIR"), "/../node_modules/@gouvfr/dsfr/dist");
            let mut cmd = Command::new(broker_bin());
            cmd.arg("serve")
                .env_clear()
                .env("PATH", std::env::var("PATH").unwrap_or_default())
                .env("AC_LISTEN", format!("127.0.0.1:{port}"))
                .env("AC_ISSUER", format!("http://localhost:{port}"))
                .env("AC_OUTBOX_DIR", dir.path().join("outbox"))
                .env("AC_KEYS_DIR", dir.path().join("keys"))
                .env("AC_ASSETS_DIR", assets)
                .env("DATABASE_URL", format!("sqlite://{}", dir.path().join("b.sqlite3").display()))
                .stdout(Stdio::piped())
                .stderr(Stdio::piped());
            for (k, v) in env {
                cmd.env(k, v);
            }
            let mut child = cmd.spawn().expect("spawn broker");
            let mut readers = Vec::new();
            if let Some(out) = child.stdout.take() {
                readers.push(drain(out, printed.clone(), false));
            }
            if let Some(err) = child.stderr.take() {
                readers.push(drain(err, printed.clone(), true));
            }
            let issuer = env.iter().find(|(k, _)| *k == "AC_ISSUER").map(|(_, v)| v.to_string()).unwrap_or_else(|| format!("http://localhost:{port}"));
            let mut b = Broker { base, issuer, child: Some(child), printed: printed.clone(), readers, dir };
            match b.wait_healthy() {
                Ok(()) => return b,
                Err(Exit { port_taken: true }) if !chosen_listen && attempt < 5 => {
                    // The stopped attempt's output stays in `printed`, ahead of the next one's.
                    b.child = None;
                    dir = std::mem::replace(&mut b.dir, tempfile::tempdir().unwrap());
                }
                Err(_) => {
                    let out = b.stop();
                    panic!("broker did not start on {}:\n{}\n{}", b.base, out.stdout, out.stderr);
                }
            }
        }
        unreachable!()
    }

    /// Waits for the announcement of this process (not of another one that would hold the
    /// port), then for /healthz.
    fn wait_healthy(&mut self) -> Result<(), Exit> {
        let deadline = Instant::now() + Duration::from_secs(30);
        let announcement = format!("écoute sur {}", self.base);
        let a = agent();
        while Instant::now() < deadline {
            if let Some(_status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                for r in self.readers.drain(..) {
                    let _ = r.join();
                }
                let taken = String::from_utf8_lossy(&self.printed.lock().unwrap_or_else(|e| e.into_inner()).1).contains("os error 98");
                return Err(Exit { port_taken: taken });
            }
            let announced = String::from_utf8_lossy(&self.printed.lock().unwrap_or_else(|e| e.into_inner()).0).contains(&announcement);
            if announced {
                if let Ok(r) = a.get(format!("{}/healthz", self.base)).call() {
                    if r.status() == 200 {
                        return Ok(());
                    }
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Err(Exit { port_taken: false })
    }

    /// GET, returning status, headers of interest and body.
    pub fn get(&self, path: &str) -> (u16, ureq::http::HeaderMap, String) {
        let mut r = agent().get(format!("{}{}", self.base, path)).call().unwrap();
        let status = r.status().as_u16();
        let headers = r.headers().clone();
        let body = r.body_mut().read_to_string().unwrap_or_default();
        (status, headers, body)
    }

    /// Stops the broker and returns what it printed.
    pub fn stop(&mut self) -> Output {
        let Some(mut child) = self.child.take() else {
            return Output { stdout: String::new(), stderr: String::new() };
        };
        let _ = child.kill();
        let _ = child.wait();
        for r in self.readers.drain(..) {
            let _ = r.join();
        }
        let (stdout, stderr) = std::mem::take(&mut *self.printed.lock().unwrap_or_else(|e| e.into_inner()));
        Output { stdout: String::from_utf8_lossy(&stdout).into_owned(), stderr: String::from_utf8_lossy(&stderr).into_owned() }
    }

    /// The process id of the running broker.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// What the running process has printed on stderr so far.
    pub fn stderr_so_far(&self) -> String {
        String::from_utf8_lossy(&self.printed.lock().unwrap_or_else(|e| e.into_inner()).1).into_owned()
    }
}

/// Reads a pipe of the child to its end, appending to stdout (or stderr) of `printed`.
fn drain(mut pipe: impl Read + Send + 'static, printed: Arc<Mutex<(Vec<u8>, Vec<u8>)>>, stderr: bool) -> JoinHandle<()> {
    std::thread::spawn(move || {
        let mut buf = [0u8; 8192];
        loop {
            match pipe.read(&mut buf) {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    let mut p = printed.lock().unwrap_or_else(|e| e.into_inner());
                    if stderr { &mut p.1 } else { &mut p.0 }.extend_from_slice(&buf[..n]);
                }
            }
        }
    })
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.stop();
    }
}
