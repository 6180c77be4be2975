//! Outgoing e-mail: through a real SMTP listener, into the outbox, and failures.

use std::time::Duration;

use broker_testkit::smtp::SmtpListener;
use broker_web::mail::{MailError, Mailer, Message};

const FROM: &str = "Aidants Connect <ne-pas-repondre@aidantsconnect.beta.gouv.fr>";

/// A long link, longer than a quoted-printable line (76 characters), with characters
/// that quoted-printable must escape (`=`).
fn link() -> String {
    format!(
        "http://127.0.0.1:8000/connexion/lien?jeton={}&suite=%2Fespace-aidant%2Fmandats%3Fp%3D2",
        "aB3-_x".repeat(16)
    )
}

fn message(link: &str) -> Message {
    Message {
        to: "Camille Martin <camille.martin@france-services.example.fr>".into(),
        subject: "Connexion à Aidants Connect".into(),
        text: format!(
            "Bonjour Camille,\n\nVoici votre lien de connexion à Aidants Connect, valable 10 minutes :\n\n{link}\n\n\
             Si vous n'êtes pas à l'origine de cette demande, ignorez ce message.\n\nL'équipe Aidants Connect\n"
        ),
    }
}

#[test]
fn smtp_delivers_to_the_recipient_and_the_link_survives_encoding() {
    let smtp = SmtpListener::start();
    let dir = tempfile::tempdir().unwrap();
    let mailer = Mailer::from_settings(Some(&smtp.url()), FROM, dir.path()).unwrap();
    assert!(mailer.describe().starts_with("SMTP smtp://127.0.0.1:"));
    let link = link();
    mailer.send(&message(&link)).unwrap();

    let got = smtp.wait_for(1, Duration::from_secs(5));
    assert_eq!(got.len(), 1);
    let r = &got[0];
    assert_eq!(r.mail_from, "ne-pas-repondre@aidantsconnect.beta.gouv.fr");
    assert_eq!(r.rcpt_to, vec!["camille.martin@france-services.example.fr".to_owned()]);
    assert_eq!(r.subject().as_deref(), Some("Connexion à Aidants Connect"));
    assert!(r.header("From").unwrap().contains("ne-pas-repondre@aidantsconnect.beta.gouv.fr"));
    assert!(r.header("To").unwrap().contains("camille.martin@france-services.example.fr"));
    assert!(r.header("Content-Type").unwrap().to_ascii_lowercase().starts_with("text/plain; charset=utf-8"));
    assert!(r.header("Date").is_some());
    assert!(r.header("Message-ID").unwrap().ends_with("@aidantsconnect.beta.gouv.fr>"));
    let body = r.body_text();
    assert!(body.contains("Voici votre lien de connexion à Aidants Connect"), "{body}");
    assert!(body.contains("L'équipe Aidants Connect"));
    assert_eq!(r.find_link("http://127.0.0.1:8000/").as_deref(), Some(link.as_str()));
    // Not sent as is: accents and the long line need an encoding.
    assert!(!r.data.contains(&link));
    // Nothing in the outbox in SMTP mode.
    assert!(mailer.outbox_messages().is_empty());
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}

#[test]
fn smtp_several_messages_on_one_listener() {
    let smtp = SmtpListener::start();
    let mailer = Mailer::from_settings(Some(&smtp.url()), FROM, std::path::Path::new("unused")).unwrap();
    for i in 0..3 {
        let m = Message { to: format!("aidant{i}@example.fr"), subject: format!("Essai {i}"), text: ".début\n..\n.\nfin".into() };
        mailer.send(&m).unwrap();
    }
    let got = smtp.wait_for(3, Duration::from_secs(5));
    assert_eq!(got.len(), 3);
    for (i, r) in got.iter().enumerate() {
        assert_eq!(r.rcpt_to, vec![format!("aidant{i}@example.fr")]);
        assert_eq!(r.subject(), Some(format!("Essai {i}")));
        // Dot-stuffing round trip (lines starting with a dot).
        assert_eq!(r.body_text().trim_end(), ".début\n..\n.\nfin");
    }
}

#[test]
fn outbox_writes_a_file_listed_newest_first() {
    let dir = tempfile::tempdir().unwrap();
    let outbox = dir.path().join("outbox/sub"); // created when needed
    let mailer = Mailer::from_settings(None, FROM, &outbox).unwrap();
    assert_eq!(mailer.outbox_dir(), Some(outbox.as_path()));
    assert!(mailer.outbox_messages().is_empty());

    let link = link();
    let first = message(&link);
    mailer.send(&first).unwrap();
    std::thread::sleep(Duration::from_millis(20));
    let second = Message { to: "referent@example.fr".into(), subject: "Deuxième message".into(), text: "Texte".into() };
    mailer.send(&second).unwrap();

    let emls: Vec<_> = std::fs::read_dir(&outbox)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().into_string().unwrap())
        .filter(|n| n.ends_with(".eml"))
        .collect();
    assert_eq!(emls.len(), 2, "{emls:?}");
    assert!(!std::fs::read_dir(&outbox).unwrap().flatten().any(|e| e.file_name().to_string_lossy().ends_with(".tmp")));

    let list = mailer.outbox_messages();
    assert_eq!(list.len(), 2);
    assert_eq!(list[0].to, "referent@example.fr");
    assert_eq!(list[0].subject, "Deuxième message");
    assert_eq!(list[0].body, "Texte");
    assert_eq!(list[1].to, first.to);
    assert_eq!(list[1].subject, "Connexion à Aidants Connect");
    assert_eq!(list[1].body, first.text);
    assert!(list[1].body.contains(&link));
    assert!(list[0].modified >= list[1].modified);
    for e in &list {
        assert!(e.file_name.ends_with(".eml"));
        let (stamp, rest) = e.file_name.split_once('-').unwrap();
        assert!(stamp.ends_with('Z') && stamp.starts_with("20"), "{}", e.file_name);
        assert!(rest.len() > 4);
    }

    // The .eml is a real RFC 5322 message.
    let eml = std::fs::read_to_string(outbox.join(&list[1].file_name)).unwrap();
    assert!(eml.contains("\r\nTo: "));
    assert!(eml.contains("camille.martin@france-services.example.fr"));
    assert!(eml.contains("Subject: "));
    assert!(eml.to_ascii_lowercase().contains("content-type: text/plain; charset=utf-8"));
    assert!(eml.contains("\r\n\r\n"));
}

#[test]
fn unreachable_server_fails_without_the_body() {
    let mailer = Mailer::from_settings(Some("smtp://127.0.0.1:1"), FROM, std::path::Path::new("unused")).unwrap();
    let secret = "http://127.0.0.1:8000/connexion/lien?jeton=SECRET-TOKEN-123";
    let e = mailer.send(&message(secret)).unwrap_err();
    assert!(matches!(e, MailError::Transport(_)), "{e:?}");
    let text = e.to_string();
    assert!(text.starts_with("envoi de l'e-mail impossible : "), "{text}");
    assert!(!text.contains("SECRET-TOKEN"), "{text}");
    assert!(!format!("{e:?}").contains("SECRET-TOKEN"));
    assert!(!format!("{:?}", message(secret)).contains("SECRET-TOKEN"));
}

#[test]
fn bad_recipient_and_bad_settings() {
    let dir = tempfile::tempdir().unwrap();
    let mailer = Mailer::from_settings(None, FROM, dir.path()).unwrap();
    let e = mailer.send(&Message { to: "pas-une-adresse".into(), subject: "s".into(), text: "t".into() }).unwrap_err();
    assert!(matches!(e, MailError::Recipient));
    assert!(mailer.outbox_messages().is_empty());
    assert!(matches!(Mailer::from_settings(None, "", dir.path()), Err(MailError::Config(_))));
    let e = Mailer::from_settings(Some("ftp://user:hunter2@example.fr"), FROM, dir.path()).unwrap_err();
    assert!(matches!(e, MailError::Config(_)));
    assert!(!e.to_string().contains("hunter2"));
    // smtps:// and STARTTLS URLs are accepted (TLS compiled in).
    Mailer::from_settings(Some("smtps://user:pass@smtp.example.fr"), FROM, dir.path()).unwrap();
    Mailer::from_settings(Some("smtp://smtp.example.fr:587?tls=required"), FROM, dir.path()).unwrap();
}
