//! `broker jobs`: the scheduled jobs (list, run what is due) for cron-style deployments,
//! the operator's checks and the tests.

use super::*;
use broker_store::jobs;

#[derive(Subcommand, Debug)]
pub(super) enum JobsCmd {
    /// Liste les tâches planifiées : périodicité, prochaine échéance, dernier passage et son résultat.
    List,
    /// Exécute les tâches arrivées à échéance (une seule fois entre toutes les instances),
    /// puis envoie les e-mails en attente.
    RunDue,
}

fn rfc(t: Option<Timestamp>) -> serde_json::Value {
    t.map_or(serde_json::Value::Null, |t| json!(t.rfc3339()))
}

pub(super) fn jobs_cmd(cmd: JobsCmd, s: &Settings, json: bool) -> Result<(), Failure> {
    let db = open_db(s)?;
    let clock = clock(s)?;
    match cmd {
        JobsCmd::List => {
            let list = jobs::list(&db, clock.now())?;
            let queue = db.read(broker_store::mail_queue::stats)?;
            let value = json!({
                "jobs": list.iter().map(|j| json!({
                    "name": j.job.name(),
                    "description": j.job.description(),
                    "schedule": j.job.schedule(),
                    "period_seconds": j.job.period_seconds(),
                    "next_due_at": j.next_due_at.rfc3339(),
                    "last_run_at": rfc(j.last_run_at),
                    "last_outcome": j.last_outcome,
                    "last_duration_micros": j.last_duration_micros,
                })).collect::<Vec<_>>(),
                "mail_queue": {
                    "waiting": queue.waiting,
                    "retrying": queue.retrying,
                    "given_up": queue.given_up,
                    "delivered": queue.delivered,
                    "oldest_waiting_since": rfc(queue.oldest_waiting_since),
                },
            });
            out(json, value, || {
                let mut lines: Vec<String> = list
                    .iter()
                    .map(|j| {
                        let last = match (&j.last_run_at, &j.last_outcome) {
                            (Some(at), Some(o)) => format!("dernier passage {} : {o}", at.paris_date_time()),
                            _ => "jamais exécutée".to_owned(),
                        };
                        format!("{:<26} {:<22} prochaine échéance {} ; {last}", j.job.name(), j.job.schedule(), j.next_due_at.paris_date_time())
                    })
                    .collect();
                lines.push(format!(
                    "E-mails : {} en attente (dont {} à réessayer), {} abandonnés, {} envoyés",
                    queue.waiting, queue.retrying, queue.given_up, queue.delivered
                ));
                lines.join("\n")
            });
            Ok(())
        }
        JobsCmd::RunDue => {
            let runs = jobs::run_due(&db, clock.now())?;
            let mailer = broker_web::mail::Mailer::from_settings(s.smtp_url.as_deref(), &s.mail_from, &s.outbox_dir)
                .map_err(|e| Failure { code: 2, message: e.to_string() })?;
            let mut mail = broker_web::mail_sender::Pass::default();
            loop {
                let p = broker_web::mail_sender::deliver_due(&db, &mailer, &s.issuer, clock.now())?;
                mail.sent += p.sent;
                mail.retry += p.retry;
                mail.given_up += p.given_up;
                if p.taken() == 0 || p.sent == 0 {
                    break;
                }
            }
            let value = json!({
                "runs": runs.iter().map(|r| json!({ "name": r.job.name(), "ok": r.ok, "outcome": r.outcome, "micros": r.micros })).collect::<Vec<_>>(),
                "mail": { "sent": mail.sent, "retry": mail.retry, "given_up": mail.given_up },
            });
            out(json, value, || {
                let mut lines: Vec<String> = runs.iter().map(|r| format!("{} : {} ({} ms)", r.job.name(), r.outcome, r.micros / 1000)).collect();
                if lines.is_empty() {
                    lines.push("Aucune tâche à échéance.".to_owned());
                }
                lines.push(format!("E-mails envoyés : {} ; à réessayer : {} ; abandonnés : {}", mail.sent, mail.retry, mail.given_up));
                lines.join("\n")
            });
            if runs.iter().any(|r| !r.ok) {
                return Err(Failure { code: 1, message: "une tâche a échoué (voir ci-dessus)".into() });
            }
            Ok(())
        }
    }
}
