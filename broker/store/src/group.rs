//! Group commit: requests that must commit a journaled change before they answer hand it
//! to the process's writer thread, which commits many of them in one transaction.
//!
//! The writer takes every job waiting (at most [`MAX_JOBS`]), runs them in one write
//! transaction and commits once: the journal entries of the whole batch are numbered
//! together under the head lock, in one multi-row insert, and the commit's synchronous
//! flush is paid once for the batch. While it commits, the next jobs queue, so a batch
//! grows with the load and a lone request is committed at once.
//!
//! Each job gets its own answer:
//! - [`Job::Run`] runs in a savepoint: its error undoes its own work and entries only;
//! - [`Job::Append`] only adds journal entries: no statement of its own;
//! - disclosures are checked and marked with multi-row statements
//!   ([`crate::disclosure::disclose_all`]): a refused one is answered as refused, the others go on;
//! - if the transaction itself fails (the database went away, the commit failed), every
//!   job of the batch gets an error: no job is ever answered as done without its entries.

use crate::conn::{Pool, PooledConnection};
use crate::disclosure::{DiscloseRequest, Disclosed};
use crate::{AnyConnection, StoreError};
use broker_core::journal::Entry;
use std::any::Any;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};

/// Jobs committed in one transaction, at most.
pub const MAX_JOBS: usize = 256;
/// Jobs run in savepoints per transaction, at most (PostgreSQL keeps a transaction's
/// first 64 subtransactions in shared memory; more would slow every reader).
const MAX_SAVEPOINTS: usize = 48;

pub(crate) type Output = Result<Box<dyn Any + Send>, StoreError>;
pub(crate) type Work = Box<dyn FnOnce(&mut AnyConnection) -> Output + Send>;

/// Where a job's answer goes: a thread that waits, or a task that awaits.
pub(crate) enum Reply<T> {
    Wait(mpsc::SyncSender<T>),
    Notify(tokio::sync::oneshot::Sender<T>),
}

impl<T> Reply<T> {
    fn send(self, v: T) {
        // The requester may have gone (a closed connection): its answer is dropped, the
        // work is committed all the same.
        match self {
            Reply::Wait(s) => drop(s.send(v)),
            Reply::Notify(s) => drop(s.send(v)),
        }
    }
}

pub(crate) enum Job {
    /// Any write, run in a savepoint of the batch's transaction.
    Run(Work, Reply<Output>),
    /// Journal entries alone (a sign-in): nothing can fail on its own, no savepoint.
    Append(Vec<Entry>, Reply<Result<(), StoreError>>),
    /// An identity disclosure at `/userinfo`.
    Disclose(DiscloseRequest, Reply<Result<Disclosed, StoreError>>),
}

/// What the writer has committed since it started, and what waits for it now.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GroupStats {
    /// Batches taken, each run in one transaction.
    pub batches: u64,
    /// Jobs in them.
    pub jobs: u64,
    /// Jobs in the queue now, not yet taken into a batch: their journal entries are not
    /// numbered yet.
    pub waiting: u64,
}

#[derive(Default)]
struct Counters {
    batches: AtomicU64,
    jobs: AtomicU64,
    /// Counted before a job is queued and uncounted when a batch takes it (or when it is
    /// refused), so it never goes below zero.
    waiting: AtomicU64,
}

/// The writer threads and the queue to them. When the last handle goes, the threads
/// commit what is queued and stop.
pub(crate) struct Writer {
    queue: Mutex<Option<mpsc::Sender<Job>>>,
    threads: Mutex<Vec<std::thread::JoinHandle<()>>>,
    counters: Arc<Counters>,
}

impl Writer {
    /// `threads` writers take turns at the queue: while one commits, the next gathers
    /// and runs its batch up to the head lock (PostgreSQL); one is enough on SQLite,
    /// where a write transaction excludes every other.
    pub(crate) fn start(pool: Pool, breaker: Arc<crate::breaker::Breaker>, threads: usize) -> Self {
        let (tx, rx) = mpsc::channel();
        let rx = Arc::new(Mutex::new(rx));
        let counters = Arc::new(Counters::default());
        let threads = (0..threads.max(1))
            .map(|i| {
                let (rx, pool, breaker, counting) = (rx.clone(), pool.clone(), breaker.clone(), counters.clone());
                std::thread::Builder::new()
                    .name(format!("group-commit-{i}"))
                    .spawn(move || run(&rx, &pool, &breaker, &counting))
                    .expect("spawn a group-commit writer")
            })
            .collect();
        Self { queue: Mutex::new(Some(tx)), threads: Mutex::new(threads), counters }
    }

    pub(crate) fn stats(&self) -> GroupStats {
        GroupStats {
            batches: self.counters.batches.load(Ordering::Relaxed),
            jobs: self.counters.jobs.load(Ordering::Relaxed),
            waiting: self.counters.waiting.load(Ordering::Relaxed),
        }
    }

    pub(crate) fn submit(&self, job: Job) {
        let queue = self.queue.lock().unwrap_or_else(|p| p.into_inner());
        self.counters.waiting.fetch_add(1, Ordering::Relaxed);
        let refused = match queue.as_ref() {
            Some(q) => q.send(job).err().map(|mpsc::SendError(job)| job),
            None => Some(job),
        };
        if let Some(job) = refused {
            self.counters.waiting.fetch_sub(1, Ordering::Relaxed);
            refuse(job, "le service s'arrête");
        }
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        self.queue.lock().unwrap_or_else(|p| p.into_inner()).take();
        for t in self.threads.lock().unwrap_or_else(|p| p.into_inner()).drain(..) {
            let _ = t.join();
        }
    }
}

fn refuse(job: Job, why: &str) {
    let e = || StoreError::Unavailable(why.to_owned());
    match job {
        Job::Run(_, reply) => reply.send(Err(e())),
        Job::Append(_, reply) => reply.send(Err(e())),
        Job::Disclose(_, reply) => reply.send(Err(e())),
    }
}

/// The jobs of the next batch: the first to come, then every one waiting.
fn next_batch(rx: &Mutex<mpsc::Receiver<Job>>) -> Option<Vec<Job>> {
    let rx = rx.lock().unwrap_or_else(|p| p.into_inner());
    let first = rx.recv().ok()?;
    let mut savepoints = usize::from(matches!(first, Job::Run(..)));
    let mut jobs = vec![first];
    while jobs.len() < MAX_JOBS && savepoints < MAX_SAVEPOINTS {
        match rx.try_recv() {
            Ok(job) => {
                savepoints += usize::from(matches!(job, Job::Run(..)));
                jobs.push(job);
            }
            Err(_) => break,
        }
    }
    Some(jobs)
}

fn run(rx: &Mutex<mpsc::Receiver<Job>>, pool: &Pool, breaker: &crate::breaker::Breaker, counters: &Counters) {
    while let Some(jobs) = next_batch(rx) {
        // Counted before any job is answered: whoever got an answer sees its batch counted.
        counters.batches.fetch_add(1, Ordering::Relaxed);
        counters.jobs.fetch_add(jobs.len() as u64, Ordering::Relaxed);
        counters.waiting.fetch_sub(jobs.len() as u64, Ordering::Relaxed);
        commit_batch(jobs, pool, breaker);
    }
}

fn connection(pool: &Pool, breaker: &crate::breaker::Breaker) -> Result<PooledConnection, StoreError> {
    if breaker.is_open() {
        return Err(StoreError::Unavailable("base de données injoignable (nouvel essai dans un instant)".into()));
    }
    match pool.get_timeout(crate::db::CONNECTION_WAIT) {
        Ok(c) => {
            breaker.close();
            Ok(c)
        }
        Err(e) => {
            breaker.trip();
            Err(StoreError::Unavailable(e.to_string()))
        }
    }
}

/// Runs `jobs` in one write transaction and answers each.
fn commit_batch(jobs: Vec<Job>, pool: &Pool, breaker: &crate::breaker::Breaker) {
    let mut works = Vec::new();
    let mut run_replies = Vec::new();
    let mut entries = Vec::new();
    let mut append_replies = Vec::new();
    let mut requests = Vec::new();
    let mut disclose_replies = Vec::new();
    for job in jobs {
        match job {
            Job::Run(w, r) => {
                works.push(w);
                run_replies.push(r);
            }
            Job::Append(e, r) => {
                entries.extend(e);
                append_replies.push(r);
            }
            Job::Disclose(d, r) => {
                requests.push(d);
                disclose_replies.push(r);
            }
        }
    }
    let out = connection(pool, breaker).and_then(|mut c| {
        let out = crate::tx::write_tx(&mut c, |c| {
            let mut ran = Vec::with_capacity(works.len());
            for w in works {
                ran.push(crate::tx::savepoint(c, w)?);
            }
            crate::journal::append(c, &entries)?;
            let disclosed = crate::disclosure::disclose_all(c, &requests)?;
            Ok((ran, disclosed))
        });
        if crate::db::lost_connection(&out) {
            breaker.trip();
        }
        out
    });
    match out {
        Ok((ran, disclosed)) => {
            for (r, v) in run_replies.into_iter().zip(ran) {
                r.send(v);
            }
            for r in append_replies {
                r.send(Ok(()));
            }
            for (r, v) in disclose_replies.into_iter().zip(disclosed) {
                r.send(Ok(v));
            }
        }
        Err(e) => {
            tracing::error!(error = %e, jobs = run_replies.len() + append_replies.len() + disclose_replies.len(), "group commit failed");
            let failed = || StoreError::Unavailable(format!("écriture non enregistrée : {e}"));
            for r in run_replies {
                r.send(Err(failed()));
            }
            for r in append_replies {
                r.send(Err(failed()));
            }
            for r in disclose_replies {
                r.send(Err(failed()));
            }
        }
    }
}
