//! Failing fast while a store is unreachable.
//!
//! Waiting for a connection to a server that is down costs the whole connection timeout,
//! and a page makes several store calls: without a limit, a page would take several
//! times that timeout before it could say that the service is unavailable. After a
//! failed attempt, the breaker stays open for [`Breaker::window`]: calls during that time
//! fail at once, without waiting. The first call after the window tries the server
//! again, so service resumes by itself once the server is back.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

#[derive(Debug)]
pub struct Breaker {
    origin: Instant,
    /// Milliseconds since `origin` until which calls fail at once (0: closed).
    open_until_ms: AtomicU64,
    window: Duration,
}

impl Breaker {
    pub fn new(window: Duration) -> Self {
        Breaker { origin: Instant::now(), open_until_ms: AtomicU64::new(0), window }
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.origin.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Whether calls fail at once now.
    pub fn is_open(&self) -> bool {
        self.now_ms() < self.open_until_ms.load(Ordering::Relaxed)
    }

    /// A call could not reach the server: fail fast for the window.
    pub fn trip(&self) {
        let until = self.now_ms().saturating_add(u64::try_from(self.window.as_millis()).unwrap_or(u64::MAX)).max(1);
        self.open_until_ms.store(until, Ordering::Relaxed);
    }

    /// A call reached the server.
    pub fn close(&self) {
        if self.open_until_ms.load(Ordering::Relaxed) != 0 {
            self.open_until_ms.store(0, Ordering::Relaxed);
        }
    }

    pub fn window(&self) -> Duration {
        self.window
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_for_the_window_after_a_failure_then_closed() {
        let b = Breaker::new(Duration::from_millis(80));
        assert!(!b.is_open());
        b.trip();
        assert!(b.is_open());
        std::thread::sleep(Duration::from_millis(120));
        assert!(!b.is_open(), "tried again after the window");
        b.trip();
        b.close();
        assert!(!b.is_open());
    }
}
