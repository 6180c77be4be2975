//! Delivers the mail queue (`broker_store::mail_queue`): a thread takes the due messages,
//! writes each notice out (`broker_core::notice`) and hands it to the [`Mailer`] (SMTP, or
//! the development outbox), then marks it sent, due again later, or given up. A request
//! that queues a message wakes it; otherwise it looks at the queue every second, so
//! messages due again after a failure, or queued by another instance, go out too. An SMTP
//! outage holds messages in the queue; no request waits for the mail server.

use crate::mail::{Mailer, Message};
use broker_core::notice::Notice;
use broker_core::time::Clock;
use broker_core::Timestamp;
use broker_store::mail_queue::{self, Outcome};
use broker_store::{Db, StoreError};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

/// Messages taken at once by a sender.
const BATCH: i64 = 20;

/// What one pass did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pass {
    pub sent: usize,
    pub retry: usize,
    pub given_up: usize,
}

impl Pass {
    pub fn taken(&self) -> usize {
        self.sent + self.retry + self.given_up
    }
}

/// Messages of a pass sent at the same time, each on its own SMTP connection.
const PARALLEL: usize = 4;

/// Sign-in links are of no use after this many seconds: not sent later.
const SIGNIN_LINK_SECONDS: i64 = 300;

/// Writes out and sends one claimed message: `Err((permanent, error))` when not delivered.
fn send_one(mailer: &Mailer, base: &str, m: &mail_queue::Claimed, now: Timestamp) -> Result<(), (bool, String)> {
    if m.key.starts_with("connexion:") && now >= m.queued_at.plus_seconds(SIGNIN_LINK_SECONDS) {
        return Err((true, "lien de connexion expiré avant l'envoi".to_owned()));
    }
    let notice = serde_json::from_str::<Notice>(&m.notice).map_err(|_| (true, "avis illisible".to_owned()))?;
    let r = notice.render(base);
    mailer
        .send_keyed(&Message { to: m.recipient.clone(), subject: r.subject, text: r.text }, Some(&m.key))
        .map_err(|e| (e.is_permanent(), e.to_string()))
}

/// Delivers the messages due at `now`, up to [`BATCH`] of them, [`PARALLEL`] at a time.
pub fn deliver_due(db: &Db, mailer: &Mailer, base: &str, now: Timestamp) -> Result<Pass, StoreError> {
    let claimed = db.write(|c| mail_queue::claim(c, now, BATCH))?;
    let per_thread = claimed.len().div_ceil(PARALLEL).max(1);
    // Each message is marked as soon as it is sent: a sender that stops mid-batch sends
    // again only the message it was sending.
    let passes: Vec<Pass> = std::thread::scope(|s| {
        let handles: Vec<_> = claimed
            .chunks(per_thread)
            .map(|chunk| s.spawn(move || chunk.iter().fold(Pass::default(), |mut pass, m| {
                record(db, m, send_one(mailer, base, m, now), now, &mut pass);
                pass
            })))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap_or_default()).collect()
    });
    Ok(passes.into_iter().fold(Pass::default(), |a, p| Pass { sent: a.sent + p.sent, retry: a.retry + p.retry, given_up: a.given_up + p.given_up }))
}

/// Marks `m` sent, due again, or given up.
fn record(db: &Db, m: &mail_queue::Claimed, result: Result<(), (bool, String)>, now: Timestamp, pass: &mut Pass) {
    match result {
        Ok(()) => match db.write(|c| mail_queue::sent(c, m.id, now)) {
            Ok(()) => pass.sent += 1,
            Err(e) => tracing::error!(message = m.id, error = %e, "e-mail sent but not marked: it may be sent again"),
        },
        Err((permanent, error)) => match db.write(|c| mail_queue::failed(c, m, &error, permanent, now)) {
            Ok(Outcome::Retry { at }) => {
                tracing::warn!(message = m.id, attempts = m.attempts, error = %error, retry_at = %at.rfc3339(), "e-mail not delivered, tried again later");
                pass.retry += 1;
            }
            Ok(Outcome::GivenUp) => {
                tracing::error!(message = m.id, attempts = m.attempts, error = %error, "e-mail given up");
                pass.given_up += 1;
            }
            Err(e) => tracing::error!(message = m.id, error = %e, "failed e-mail not marked"),
        },
    }
}

struct Signal {
    woken: Mutex<bool>,
    cv: Condvar,
    stop: AtomicBool,
}

/// The delivering thread, woken by [`MailSender::wake`]; stopped when the last handle is
/// dropped.
#[derive(Clone)]
pub struct MailSender {
    signal: Arc<Signal>,
    _stop: Arc<StopOnDrop>,
}

struct StopOnDrop(Arc<Signal>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.stop.store(true, Ordering::SeqCst);
        self.0.cv.notify_all();
    }
}

impl MailSender {
    /// Starts the thread: it looks at the queue when woken, and every `poll` otherwise.
    pub fn start(db: Db, mailer: Arc<Mailer>, base: String, clock: Arc<dyn Clock>, poll: Duration) -> MailSender {
        let signal = Arc::new(Signal { woken: Mutex::new(true), cv: Condvar::new(), stop: AtomicBool::new(false) });
        let s = signal.clone();
        let spawned = std::thread::Builder::new().name("mail-sender".into()).spawn(move || loop {
            if s.stop.load(Ordering::SeqCst) {
                break;
            }
            let busy = match deliver_due(&db, &mailer, &base, clock.now()) {
                Ok(p) => {
                    crate::metrics::record_mail(&p);
                    p.taken() as i64 == BATCH
                }
                Err(e) => {
                    tracing::warn!(error = %e, "mail queue not read");
                    false
                }
            };
            if busy {
                continue;
            }
            let woken = s.woken.lock().unwrap_or_else(|p| p.into_inner());
            let (mut woken, _) = s.cv.wait_timeout_while(woken, poll, |w| !*w && !s.stop.load(Ordering::SeqCst)).unwrap_or_else(|p| p.into_inner());
            *woken = false;
        });
        if let Err(e) = spawned {
            tracing::error!(error = %e, "mail sender not started");
        }
        MailSender { _stop: Arc::new(StopOnDrop(signal.clone())), signal }
    }

    /// Asks the thread to look at the queue now (a message was just queued).
    pub fn wake(&self) {
        *self.signal.woken.lock().unwrap_or_else(|p| p.into_inner()) = true;
        self.signal.cv.notify_all();
    }
}
