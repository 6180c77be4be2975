//! Outgoing e-mail: plain-text UTF-8 messages sent through an SMTP server, or written to
//! a local outbox directory when no server is configured (development).
//!
//! SMTP URLs (lettre's `SmtpTransport::from_url`):
//!
//! | URL | connection |
//! |---|---|
//! | `smtp://host:port` | plain SMTP, **no TLS** (port 25 by default): local relays and tests only |
//! | `smtp://host:port?tls=required` | STARTTLS, required (port 587 by default) |
//! | `smtp://host:port?tls=opportunistic` | STARTTLS when the server offers it (port 587 by default) |
//! | `smtps://host:port` | implicit TLS (port 465 by default) |
//!
//! Credentials go in the URL, percent-encoded: `smtps://user:pa%40ss@smtp.example.fr`.
//! A path sets the EHLO name: `smtp://host:25/broker.example.fr`. TLS uses rustls with
//! the Mozilla root certificates (webpki-roots). Every connection times out after 10 s.
//!
//! [`Mailer::send`] blocks: call it from `actix_web::web::block`. The message body may
//! hold sign-in links: it never appears in an error or a log line.

use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use lettre::message::header::ContentType;
use lettre::message::Mailbox;
use lettre::{SmtpTransport, Transport};
use serde::{Deserialize, Serialize};

/// Timeout of each SMTP connection and command.
pub const SMTP_TIMEOUT: Duration = Duration::from_secs(10);

/// A plain-text UTF-8 message to one recipient.
#[derive(Clone, PartialEq, Eq)]
pub struct Message {
    /// The recipient: `aidant@example.fr` or `Camille Martin <aidant@example.fr>`.
    pub to: String,
    pub subject: String,
    pub text: String,
}

impl fmt::Debug for Message {
    // The body may hold a sign-in link: never printed.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Message")
            .field("to", &self.to)
            .field("subject", &self.subject)
            .finish_non_exhaustive()
    }
}

/// Why a message could not be sent. The text never holds the message body, nor the
/// SMTP credentials.
#[derive(Debug, thiserror::Error)]
pub enum MailError {
    /// Bad SMTP URL or sender address (a configuration mistake).
    #[error("envoi de l'e-mail impossible : configuration invalide ({0})")]
    Config(String),
    /// The recipient address cannot be used.
    #[error("envoi de l'e-mail impossible : adresse du destinataire invalide")]
    Recipient,
    /// The message could not be built (should not happen with a valid recipient).
    #[error("envoi de l'e-mail impossible : message invalide ({0})")]
    Build(String),
    /// The SMTP server is unreachable, timed out or refused the message.
    #[error("envoi de l'e-mail impossible : {0}")]
    Transport(String),
    /// The outbox directory cannot be written.
    #[error("envoi de l'e-mail impossible : écriture dans la boîte d'envoi locale ({0})")]
    Outbox(String),
}

impl MailError {
    /// Trying again cannot help this message: its recipient is wrong, or the server
    /// refused it for good (5xx). A refused sign-in to the server (530 to 539) or a
    /// configuration mistake is the service's to fix: the message waits.
    pub fn is_permanent(&self) -> bool {
        match self {
            MailError::Recipient | MailError::Build(_) => true,
            MailError::Transport(t) => t.starts_with(PERMANENT) && !t.contains("(code 53"),
            MailError::Config(_) | MailError::Outbox(_) => false,
        }
    }
}

const PERMANENT: &str = "refusé par le serveur SMTP";

/// Where messages go.
#[derive(Clone)]
pub enum Mailer {
    Smtp {
        transport: SmtpTransport,
        from: Mailbox,
        /// The URL without credentials nor query, for logs.
        target: String,
    },
    Outbox { dir: PathBuf, from: Mailbox },
}

impl fmt::Debug for Mailer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.describe())
    }
}

/// One message of the outbox, for the development page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxEntry {
    /// The `.eml` file name, inside the outbox directory.
    pub file_name: String,
    pub to: String,
    pub subject: String,
    pub body: String,
    pub modified: SystemTime,
}

/// Written next to each `.eml` file (same stem, `.json`), so that the outbox can be
/// listed without decoding MIME.
#[derive(Serialize, Deserialize)]
struct Sidecar {
    to: String,
    subject: String,
    text: String,
}

impl Mailer {
    /// SMTP when `smtp_url` is set (see the module documentation for the URL forms),
    /// otherwise the outbox `outbox_dir` (created at the first message).
    pub fn from_settings(smtp_url: Option<&str>, from: &str, outbox_dir: &Path) -> Result<Self, MailError> {
        let from: Mailbox = from
            .trim()
            .parse()
            .map_err(|_| MailError::Config("adresse d'expédition invalide".into()))?;
        match smtp_url.map(str::trim).filter(|u| !u.is_empty()) {
            Some(url) => {
                // lettre's errors for a bad URL do not repeat the URL (nor its password).
                let transport = SmtpTransport::from_url(url)
                    .map_err(|e| MailError::Config(format!("URL SMTP : {e}")))?
                    .timeout(Some(SMTP_TIMEOUT))
                    .build();
                Ok(Mailer::Smtp { transport, from, target: redact_url(url) })
            }
            None => Ok(Mailer::Outbox { dir: outbox_dir.to_path_buf(), from }),
        }
    }

    /// An outbox mailer (tests, development).
    pub fn outbox(dir: impl Into<PathBuf>, from: &str) -> Result<Self, MailError> {
        Self::from_settings(None, from, &dir.into())
    }

    /// The sender address.
    pub fn from_mailbox(&self) -> &Mailbox {
        match self {
            Mailer::Smtp { from, .. } | Mailer::Outbox { from, .. } => from,
        }
    }

    /// Outbox mode (no SMTP server configured).
    pub fn is_outbox(&self) -> bool {
        matches!(self, Mailer::Outbox { .. })
    }

    /// The outbox directory, in outbox mode.
    pub fn outbox_dir(&self) -> Option<&Path> {
        match self {
            Mailer::Smtp { .. } => None,
            Mailer::Outbox { dir, .. } => Some(dir),
        }
    }

    /// For the start-up log: `SMTP smtp://host:port` (no credentials) or
    /// `boîte d'envoi locale <dir>`.
    pub fn describe(&self) -> String {
        match self {
            Mailer::Smtp { target, .. } => format!("SMTP {target}"),
            Mailer::Outbox { dir, .. } => format!("boîte d'envoi locale {}", dir.display()),
        }
    }

    /// Builds the RFC 5322 message (From, To, Subject, Date, Message-ID, plain-text UTF-8
    /// body; lettre picks 7bit, quoted-printable or base64).
    pub fn build(&self, m: &Message) -> Result<lettre::Message, MailError> {
        self.build_with_id(m, None)
    }

    /// [`Mailer::build`] with a `Message-ID` derived from `key` when given: the same
    /// notice delivered twice carries the same identifier.
    pub fn build_with_id(&self, m: &Message, key: Option<&str>) -> Result<lettre::Message, MailError> {
        let from = self.from_mailbox();
        let to: Mailbox = m.to.trim().parse().map_err(|_| MailError::Recipient)?;
        let local = match key {
            Some(k) => broker_core::secret::sha256_hex(k.as_bytes())[..32].to_owned(),
            None => format!("{:016x}{:016x}", rand::random::<u64>(), rand::random::<u64>()),
        };
        let id = format!("<{local}@{}>", from.email.domain());
        lettre::Message::builder()
            .from(from.clone())
            .to(to)
            .subject(m.subject.as_str())
            .message_id(Some(id))
            .header(ContentType::TEXT_PLAIN)
            .body(m.text.clone())
            .map_err(|e| MailError::Build(e.to_string()))
    }

    /// Sends (SMTP) or writes (outbox) one message. Blocking.
    pub fn send(&self, m: &Message) -> Result<(), MailError> {
        self.send_keyed(m, None)
    }

    /// [`Mailer::send`], the `Message-ID` derived from `key` when given.
    pub fn send_keyed(&self, m: &Message, key: Option<&str>) -> Result<(), MailError> {
        let email = self.build_with_id(m, key)?;
        match self {
            Mailer::Smtp { transport, .. } => transport
                .send(&email)
                .map(|_| ())
                .map_err(|e| MailError::Transport(transport_error(&e))),
            Mailer::Outbox { dir, .. } => write_outbox(dir, m, &email.formatted()),
        }
    }

    /// The outbox messages, newest first; empty in SMTP mode or when the directory does
    /// not exist yet. Files without their `.json` sidecar are left out.
    pub fn outbox_messages(&self) -> Vec<OutboxEntry> {
        let Some(dir) = self.outbox_dir() else { return Vec::new() };
        let Ok(read) = std::fs::read_dir(dir) else { return Vec::new() };
        let mut out = Vec::new();
        for entry in read.flatten() {
            let path = entry.path();
            if path.extension().and_then(|e| e.to_str()) != Some("eml") {
                continue;
            }
            let Some(file_name) = path.file_name().and_then(|n| n.to_str()).map(str::to_owned) else { continue };
            let Ok(meta) = entry.metadata() else { continue };
            let sidecar = std::fs::read(path.with_extension("json"))
                .ok()
                .and_then(|b| serde_json::from_slice::<Sidecar>(&b).ok());
            let Some(s) = sidecar else {
                tracing::warn!(file = %file_name, "boîte d'envoi locale : fichier .json illisible ou absent");
                continue;
            };
            out.push(OutboxEntry {
                file_name,
                to: s.to,
                subject: s.subject,
                body: s.text,
                modified: meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
            });
        }
        out.sort_by(|a, b| b.modified.cmp(&a.modified).then_with(|| b.file_name.cmp(&a.file_name)));
        out
    }
}

/// `<UTC timestamp>-<random>.eml` (and `.json`), written through temporary files and
/// renamed, the `.eml` last: a listed `.eml` is complete and has its sidecar.
fn write_outbox(dir: &Path, m: &Message, eml: &[u8]) -> Result<(), MailError> {
    let io = |e: std::io::Error| MailError::Outbox(e.kind().to_string());
    std::fs::create_dir_all(dir).map_err(io)?;
    let stem = format!(
        "{}-{:012x}",
        chrono::Utc::now().format("%Y%m%dT%H%M%S%.6fZ"),
        rand::random::<u64>() >> 16
    );
    let sidecar = serde_json::to_vec_pretty(&Sidecar { to: m.to.clone(), subject: m.subject.clone(), text: m.text.clone() })
        .map_err(|e| MailError::Outbox(e.to_string()))?;
    write_atomically(&dir.join(format!("{stem}.json")), &sidecar).map_err(io)?;
    write_atomically(&dir.join(format!("{stem}.eml")), eml).map_err(io)?;
    Ok(())
}

fn write_atomically(path: &Path, content: &[u8]) -> std::io::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(content)?;
    f.sync_all()?;
    drop(f);
    std::fs::rename(&tmp, path)
}

/// lettre's SMTP error, in short: its kind, the server's reply code or the I/O cause.
/// Never the reply's text: a refusal usually quotes the recipient's address, which must
/// not reach the logs.
fn transport_error(e: &lettre::transport::smtp::Error) -> String {
    let what = if e.is_timeout() {
        "délai dépassé".to_owned()
    } else if e.is_permanent() {
        PERMANENT.to_owned()
    } else if e.is_tls() {
        "échec de la négociation TLS".to_owned()
    } else if e.is_transient() {
        "erreur temporaire du serveur SMTP".to_owned()
    } else {
        "serveur SMTP injoignable ou erreur de connexion".to_owned()
    };
    let io = std::error::Error::source(e).and_then(|s| s.downcast_ref::<std::io::Error>());
    match (e.status(), io) {
        (Some(code), _) => format!("{what} (code {code})"),
        (None, Some(io)) => format!("{what} ({})", io.kind()),
        (None, None) => what,
    }
}

/// `scheme://host:port` from an SMTP URL: no credentials, no path, no query.
fn redact_url(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("smtp", url));
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host = authority.rsplit_once('@').map(|(_, h)| h).unwrap_or(authority);
    format!("{scheme}://{host}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_credentials() {
        assert_eq!(redact_url("smtps://u:p%40ss@smtp.example.fr:465/ehlo?tls=x"), "smtps://smtp.example.fr:465");
        assert_eq!(redact_url("smtp://127.0.0.1:2525"), "smtp://127.0.0.1:2525");
    }

    #[test]
    fn only_a_refusal_of_the_message_itself_gives_it_up() {
        assert!(MailError::Recipient.is_permanent());
        assert!(MailError::Transport(format!("{PERMANENT} (code 550)")).is_permanent());
        assert!(!MailError::Transport(format!("{PERMANENT} (code 535)")).is_permanent(), "a refused sign-in to the server waits");
        assert!(!MailError::Transport("délai dépassé".into()).is_permanent());
        assert!(!MailError::Config("URL".into()).is_permanent());
    }

    #[test]
    fn bad_settings() {
        let d = Path::new("outbox");
        assert!(matches!(Mailer::from_settings(None, "pas une adresse", d), Err(MailError::Config(_))));
        assert!(matches!(Mailer::from_settings(Some("http://x"), "a@b.fr", d), Err(MailError::Config(_))));
        let m = Mailer::from_settings(Some("smtp://u:secret@localhost:2525"), "Aidants Connect <a@b.fr>", d).unwrap();
        assert_eq!(m.describe(), "SMTP smtp://localhost:2525");
        assert!(!format!("{m:?}").contains("secret"));
        let e = m.send(&Message { to: "x\r\nBcc: y@z.fr".into(), subject: "s".into(), text: "t".into() });
        assert!(matches!(e, Err(MailError::Recipient)));
    }
}
