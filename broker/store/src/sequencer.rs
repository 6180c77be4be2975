//! The journal sequencer of one process (PostgreSQL).

use crate::conn::Pool;
use crate::StoreError;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

/// The journal sequencer of one process (PostgreSQL): a thread that numbers pending
/// entries. Writers wake it after their commit and go on; each pass numbers every entry
/// committed before it started, in one transaction, so one commit serves many writers.
pub(crate) struct Sequencer {
    state: Mutex<SeqState>,
    cv: Condvar,
    pub(crate) sweep: AtomicBool,
}

#[derive(Default)]
struct SeqState {
    requested: u64,
    completed: u64,
    shutdown: bool,
}

impl Sequencer {
    fn lock(&self) -> std::sync::MutexGuard<'_, SeqState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Asks for a pass, without waiting for it.
    pub(crate) fn notify(&self) {
        self.lock().requested += 1;
        self.cv.notify_all();
    }

    /// Asks for a pass and waits until it has run.
    pub(crate) fn flush(&self) {
        let mut st = self.lock();
        st.requested += 1;
        let target = st.requested;
        self.cv.notify_all();
        while st.completed < target && !st.shutdown {
            st = self.cv.wait(st).unwrap_or_else(|p| p.into_inner());
        }
    }

    fn run(&self, pool: Pool) {
        loop {
            let (target, last) = {
                let mut st = self.lock();
                while st.requested == st.completed && !st.shutdown {
                    let (next, timeout) = self.cv.wait_timeout(st, Duration::from_secs(1)).unwrap_or_else(|p| p.into_inner());
                    st = next;
                    if timeout.timed_out() && self.sweep.load(Ordering::Relaxed) {
                        break;
                    }
                }
                (st.requested, st.shutdown)
            };
            let result = pool
                .get()
                .map_err(|e| StoreError::Unavailable(e.to_string()))
                .and_then(|mut c| crate::journal::sequence_pending(&mut c));
            if let Err(e) = &result {
                // The entries stay pending with their change; the next pass numbers them.
                tracing::error!(error = %e, "journal sequencing failed");
            }
            {
                let mut st = self.lock();
                st.completed = st.completed.max(target);
                self.cv.notify_all();
            }
            if last {
                return;
            }
            if result.is_err() {
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
}

/// Owns the sequencer thread. When the last clone of the `Db` goes, the thread runs a
/// final pass and stops, so a short-lived command leaves nothing pending.
pub(crate) struct SequencerHandle {
    pub(crate) seq: Arc<Sequencer>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl SequencerHandle {
    pub(crate) fn start(pool: Pool) -> Self {
        let seq = Arc::new(Sequencer { state: Mutex::new(SeqState::default()), cv: Condvar::new(), sweep: AtomicBool::new(false) });
        let worker = seq.clone();
        let thread = std::thread::Builder::new()
            .name("journal-sequencer".into())
            .spawn(move || worker.run(pool))
            .expect("spawn the journal sequencer");
        Self { seq, thread: Mutex::new(Some(thread)) }
    }
}

impl Drop for SequencerHandle {
    fn drop(&mut self) {
        self.seq.lock().shutdown = true;
        self.seq.cv.notify_all();
        if let Some(t) = self.thread.lock().unwrap_or_else(|p| p.into_inner()).take() {
            let _ = t.join();
        }
    }
}

