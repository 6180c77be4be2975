//! A TCP forwarder on a loopback port, to take a server away from the broker under test
//! (and give it back) without touching the real server, which other tests share.
//!
//! While cut, the listening socket is closed: a new connection is refused (`ECONNREFUSED`,
//! as with a stopped server), and every live connection was shut down on both sides (the
//! peer reads end of file, as when the server closes it). `restore` listens again on the
//! same port.

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

pub struct Proxy {
    port: u16,
    shared: Arc<Shared>,
    acceptor: Option<JoinHandle<()>>,
}

struct Shared {
    target: SocketAddr,
    state: Mutex<State>,
    stop: AtomicBool,
    /// Bytes sent by clients towards the target, when recording.
    sent: Option<Mutex<Vec<u8>>>,
}

#[derive(Default)]
struct State {
    /// `None` while cut.
    listener: Option<TcpListener>,
    /// Both ends of every live connection, by id.
    live: Vec<(u64, TcpStream, TcpStream)>,
    next_id: u64,
}

impl Proxy {
    /// Forwards a free loopback port to `target` ("host:port").
    pub fn start(target: &str) -> Proxy {
        Proxy::spawn(target, false)
    }

    /// The same, keeping a copy of what clients send (see [`Proxy::sent`]).
    pub fn recording(target: &str) -> Proxy {
        Proxy::spawn(target, true)
    }

    fn spawn(target: &str, record: bool) -> Proxy {
        let target = target.to_socket_addrs().unwrap_or_else(|e| panic!("proxy target {target}: {e}")).next().expect("an address");
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let shared = Arc::new(Shared {
            target,
            state: Mutex::new(State { listener: Some(listener), ..State::default() }),
            stop: AtomicBool::new(false),
            sent: record.then(|| Mutex::new(Vec::new())),
        });
        let s = shared.clone();
        let acceptor = std::thread::spawn(move || accept_loop(s));
        Proxy { port, shared, acceptor: Some(acceptor) }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Closes the listening socket (new connections are refused) and shuts down every
    /// live connection on both sides.
    pub fn cut(&self) {
        let mut st = self.shared.lock();
        st.listener = None;
        for (_, client, server) in st.live.drain(..) {
            let _ = client.shutdown(Shutdown::Both);
            let _ = server.shutdown(Shutdown::Both);
        }
    }

    /// Listens again on the same port and forwards new connections.
    pub fn restore(&self) {
        let mut st = self.shared.lock();
        if st.listener.is_some() {
            return;
        }
        // The port was ours a moment ago; retry briefly should the bind race anything.
        let deadline = Instant::now() + Duration::from_secs(5);
        let listener = loop {
            match TcpListener::bind(("127.0.0.1", self.port)) {
                Ok(l) => break l,
                Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(50)),
                Err(e) => panic!("proxy cannot listen again on port {}: {e}", self.port),
            }
        };
        listener.set_nonblocking(true).unwrap();
        st.listener = Some(listener);
    }

    /// What clients have sent so far (lossy UTF-8); empty unless made with [`Proxy::recording`].
    pub fn sent(&self) -> String {
        self.shared.sent.as_ref().map(|s| String::from_utf8_lossy(&s.lock().unwrap_or_else(|e| e.into_inner())).into_owned()).unwrap_or_default()
    }
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn accept_loop(shared: Arc<Shared>) {
    while !shared.stop.load(Ordering::SeqCst) {
        let accepted = match &shared.lock().listener {
            Some(l) => l.accept().map(|(s, _)| s),
            None => Err(ErrorKind::WouldBlock.into()),
        };
        match accepted {
            Ok(client) => {
                let s = shared.clone();
                std::thread::spawn(move || forward(s, client));
            }
            Err(_) => std::thread::sleep(Duration::from_millis(2)),
        }
    }
}

/// Connects to the target and copies bytes both ways until either side ends.
fn forward(shared: Arc<Shared>, client: TcpStream) {
    let _ = client.set_nonblocking(false);
    let _ = client.set_nodelay(true);
    let Ok(server) = TcpStream::connect_timeout(&shared.target, Duration::from_secs(2)) else {
        let _ = client.shutdown(Shutdown::Both);
        return;
    };
    let _ = server.set_nodelay(true);
    let id = {
        let mut st = shared.lock();
        // Cut while connecting: the connection goes at once.
        if st.listener.is_none() {
            let _ = client.shutdown(Shutdown::Both);
            let _ = server.shutdown(Shutdown::Both);
            return;
        }
        let id = st.next_id;
        st.next_id += 1;
        st.live.push((id, client.try_clone().unwrap(), server.try_clone().unwrap()));
        id
    };
    let (c2, s2) = (client.try_clone().unwrap(), server.try_clone().unwrap());
    let back = std::thread::spawn(move || pump(s2, c2, None));
    pump(client, server, shared.sent.as_ref());
    let _ = back.join();
    shared.lock().live.retain(|(i, _, _)| *i != id);
}

/// Copies `from` to `to`; at the end (or on error) shuts both down, so the other
/// direction ends too.
fn pump(mut from: TcpStream, mut to: TcpStream, record: Option<&Mutex<Vec<u8>>>) {
    let mut buf = [0u8; 16 * 1024];
    loop {
        match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if let Some(r) = record {
                    r.lock().unwrap_or_else(|e| e.into_inner()).extend_from_slice(&buf[..n]);
                }
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
        }
    }
    let _ = from.shutdown(Shutdown::Both);
    let _ = to.shutdown(Shutdown::Both);
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        self.cut();
        if let Some(a) = self.acceptor.take() {
            let _ = a.join();
        }
    }
}
