//! The e-mails the service sends, as data: what each notice says, to whom and why.
//!
//! A notice is stored in the mail queue as JSON (its `kind` and fields) and written out
//! as text only when it is delivered, with the service's public address. Each text says
//! why the reader receives it and what to do. A notice to a usager never carries more
//! than the usager already knows: their own first name, the structures and aidants they
//! chose, the démarches and services of their own mandats.

use crate::{Demarche, Timestamp};
use serde::{Deserialize, Serialize};

/// One e-mail, before it is written out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Notice {
    /// A message already written by the page that sends it (sign-in link, invitation,
    /// sign-in lock).
    Message { subject: String, text: String },
    /// To an aidant added to a structure by its référent: a new account, or an existing
    /// one joining another structure.
    Invitation { organisation: String, new_account: bool },
    /// Weekly, to each active aidant of a structure: its mandats that end within 30 days.
    MandatsExpiring { first_name: String, organisation: String, mandats: Vec<ExpiringMandat> },
    /// Weekly, to each référent of a structure: its aidants who cannot sign in, having
    /// no working second factor.
    MissingSecondFactor { first_name: String, organisation: String, aidants: Vec<AidantLine> },
    /// To an aidant who has not signed in for 150 days.
    InactivityWarning { first_name: String, last_signin: Timestamp, deactivation_on: Timestamp },
    /// To each référent of the structures of an aidant deactivated after 180 days
    /// without a sign-in.
    InactiveAidantDeactivated { first_name: String, organisation: String, aidant: AidantLine, last_signin: Timestamp },
    /// To a usager: the uses of their mandats since the last notice.
    MandatUses { first_name: String, uses: Vec<Use> },
    /// To a usager: one of their mandats was created, renewed or revoked.
    MandatChanged { first_name: String, change: MandatChange, organisation: String, demarches: Vec<Demarche>, expires_at: Timestamp, fingerprint: String },
}

/// A mandat about to end, as its structure's aidants see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExpiringMandat {
    pub mandat: i64,
    pub usager: i64,
    pub usager_name: String,
    pub expires_at: Timestamp,
    pub demarches: Vec<Demarche>,
}

/// An aidant, named for their référents.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AidantLine {
    pub id: i64,
    pub name: String,
    pub email: String,
}

/// One use of a mandat: an e-service received the usager's identity.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Use {
    pub at: Timestamp,
    pub organisation: String,
    pub aidant: String,
    pub demarche: Demarche,
    pub service: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MandatChange {
    Created,
    Renewed,
    Revoked,
}

/// A notice written out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    pub subject: String,
    pub text: String,
}

const SIGNATURE: &str = "\nAidants Connect\n";

fn list_demarches(list: &[Demarche]) -> String {
    list.iter().map(|d| d.title()).collect::<Vec<_>>().join(", ")
}

impl Notice {
    /// The kind, as stored beside the notice (and shown in the référent space).
    pub fn kind(&self) -> &'static str {
        match self {
            Notice::Message { .. } => "message",
            Notice::Invitation { .. } => "invitation",
            Notice::MandatsExpiring { .. } => "mandats_expiring",
            Notice::MissingSecondFactor { .. } => "missing_second_factor",
            Notice::InactivityWarning { .. } => "inactivity_warning",
            Notice::InactiveAidantDeactivated { .. } => "inactive_aidant_deactivated",
            Notice::MandatUses { .. } => "mandat_uses",
            Notice::MandatChanged { .. } => "mandat_changed",
        }
    }

    /// A short French label of a stored kind, for the référent space.
    pub fn kind_label(kind: &str) -> &'static str {
        match kind {
            "message" => "Message de service",
            "invitation" => "Invitation d'un aidant",
            "mandats_expiring" => "Rappel : mandats bientôt échus",
            "missing_second_factor" => "Rappel : aidants sans second facteur",
            "inactivity_warning" => "Avertissement d'inactivité",
            "inactive_aidant_deactivated" => "Désactivation pour inactivité",
            "mandat_uses" => "Avis d'utilisation d'un mandat",
            "mandat_changed" => "Avis de changement d'un mandat",
            _ => "Autre message",
        }
    }

    /// The subject and text, with links under `base` (the public address, no trailing slash).
    pub fn render(&self, base: &str) -> Rendered {
        match self {
            Notice::Message { subject, text } => Rendered { subject: subject.clone(), text: text.clone() },
            Notice::Invitation { organisation, new_account: true } => Rendered {
                subject: format!("Aidants Connect : vous faites partie de la structure {organisation}"),
                text: format!(
                    "Bonjour,\n\nVotre référent vous a ouvert un compte Aidants Connect pour la structure {organisation}.\n\n\
                     Pour vous connecter, il vous faut un moyen de connexion : une carte à code, une application à code ou \
                     une clé de sécurité. Votre référent l'active avec vous.\n\nEnsuite, connectez-vous ici : {base}/connexion\n\n\
                     Si vous ne travaillez pas pour cette structure, ignorez ce message.\n{SIGNATURE}"
                ),
            },
            Notice::Invitation { organisation, new_account: false } => Rendered {
                subject: format!("Aidants Connect : vous faites partie de la structure {organisation}"),
                text: format!(
                    "Bonjour,\n\nVous faites maintenant aussi partie de la structure {organisation} sur Aidants Connect.\n\
                     Une fois connecté(e), choisissez la structure pour laquelle vous travaillez depuis « Mon espace ».\n\n\
                     {base}/connexion\n{SIGNATURE}"
                ),
            },
            Notice::MandatsExpiring { first_name, organisation, mandats } => {
                let mut text = format!(
                    "Bonjour {first_name},\n\nVous recevez ce message parce que vous êtes aidant(e) de la structure {organisation}. \
                     {} de cette structure {} dans les 30 prochains jours :\n\n",
                    if mandats.len() == 1 { "Un mandat" } else { "Des mandats" },
                    if mandats.len() == 1 { "prend fin" } else { "prennent fin" },
                );
                for m in mandats {
                    text.push_str(&format!(
                        "- {} : fin le {} ({})\n  Renouveler : {base}/usagers/{}/mandats/{}/renouveler\n",
                        m.usager_name,
                        m.expires_at.paris_date(),
                        list_demarches(&m.demarches),
                        m.usager,
                        m.mandat
                    ));
                }
                text.push_str(
                    "\nSi la personne souhaite que vous continuiez à l'aider, renouvelez le mandat avec elle avant sa fin : \
                     elle devra de nouveau s'identifier avec FranceConnect. Sinon, vous n'avez rien à faire : le mandat \
                     prendra fin de lui-même.\n",
                );
                text.push_str(SIGNATURE);
                let subject = if mandats.len() == 1 {
                    "Un mandat de votre structure prend fin dans les 30 jours".to_owned()
                } else {
                    format!("{} mandats de votre structure prennent fin dans les 30 jours", mandats.len())
                };
                Rendered { subject, text }
            }
            Notice::MissingSecondFactor { first_name, organisation, aidants } => {
                let mut text = format!(
                    "Bonjour {first_name},\n\nVous recevez ce message parce que vous êtes référent(e) de la structure {organisation}. \
                     {} ne {} pas se connecter : aucun second facteur (clé de sécurité, application ou carte) n'est \
                     utilisable sur {} compte :\n\n",
                    if aidants.len() == 1 { "Cet aidant" } else { "Ces aidants" },
                    if aidants.len() == 1 { "peut" } else { "peuvent" },
                    if aidants.len() == 1 { "son" } else { "leur" },
                );
                for a in aidants {
                    text.push_str(&format!("- {} ({}) : {base}/referent/aidants/{}\n", a.name, a.email, a.id));
                }
                text.push_str(
                    "\nDepuis la fiche de chaque aidant, associez-lui une carte, une application ou une clé de sécurité. \
                     S'il ou elle a quitté la structure, désactivez son compte.\n",
                );
                text.push_str(SIGNATURE);
                Rendered { subject: "Des aidants de votre structure ne peuvent pas se connecter".into(), text }
            }
            Notice::InactivityWarning { first_name, last_signin, deactivation_on } => Rendered {
                subject: "Votre compte Aidants Connect sera désactivé faute de connexion".into(),
                text: format!(
                    "Bonjour {first_name},\n\nVous ne vous êtes pas connecté(e) à Aidants Connect depuis le {}. \
                     Sans connexion de votre part, votre compte sera désactivé le {}, et vos référents en seront \
                     informés.\n\nPour garder votre compte, connectez-vous simplement : {base}/connexion\n\n\
                     Si vous n'aidez plus personne avec Aidants Connect, vous n'avez rien à faire.\n{SIGNATURE}",
                    last_signin.paris_date(),
                    deactivation_on.paris_date()
                ),
            },
            Notice::InactiveAidantDeactivated { first_name, organisation, aidant, last_signin } => Rendered {
                subject: "Un compte d'aidant de votre structure a été désactivé pour inactivité".into(),
                text: format!(
                    "Bonjour {first_name},\n\nVous recevez ce message parce que vous êtes référent(e) de la structure \
                     {organisation}. Le compte de {} ({}) a été désactivé : sans connexion depuis le {} (plus de \
                     180 jours). Ses mandats restent valables pour les autres aidants de la structure.\n\n\
                     Si cette personne aide toujours des usagers, réactivez son compte depuis sa fiche : \
                     {base}/referent/aidants/{}\n{SIGNATURE}",
                    aidant.name,
                    aidant.email,
                    last_signin.paris_date(),
                    aidant.id
                ),
            },
            Notice::MandatUses { first_name, uses } => {
                let mut text = format!(
                    "Bonjour {first_name},\n\nVous recevez ce message parce que vous avez donné mandat à une structure \
                     d'aide pour faire des démarches en ligne à votre place. {} :\n\n",
                    if uses.len() == 1 { "Votre mandat a été utilisé" } else { "Vos mandats ont été utilisés" }
                );
                for u in uses {
                    text.push_str(&format!(
                        "- le {} : {} ({}) pour « {} », sur le service {}\n",
                        u.at.paris_date_time(),
                        u.aidant,
                        u.organisation,
                        u.demarche.title(),
                        u.service
                    ));
                }
                text.push_str(&format!(
                    "\nSi vous ne reconnaissez pas une de ces démarches, ou si vous ne voulez plus être aidé(e), révoquez le \
                     mandat depuis votre espace (connexion avec FranceConnect) : {base}/espace-usager\n\
                     Vous pouvez aussi y désactiver ces avis.\n{SIGNATURE}"
                ));
                Rendered { subject: "Votre mandat Aidants Connect a été utilisé".into(), text }
            }
            Notice::MandatChanged { first_name, change, organisation, demarches, expires_at, fingerprint } => {
                let list = list_demarches(demarches);
                let (subject, what) = match change {
                    MandatChange::Created => {
                        ("Vous avez signé un mandat Aidants Connect", format!("Vous avez signé un mandat avec la structure {organisation}, pour : {list}."))
                    }
                    MandatChange::Renewed => {
                        ("Votre mandat Aidants Connect a été renouvelé", format!("Votre mandat avec la structure {organisation} a été renouvelé, pour : {list}."))
                    }
                    MandatChange::Revoked => {
                        ("Votre mandat Aidants Connect a été révoqué", format!("Votre mandat avec la structure {organisation} a été révoqué, pour : {list}."))
                    }
                };
                let validity = match change {
                    MandatChange::Revoked => "La structure ne peut plus faire ces démarches pour vous.".to_owned(),
                    _ => format!(
                        "Il permet aux aidants de cette structure de faire ces démarches pour vous jusqu'au {}.",
                        expires_at.paris_date()
                    ),
                };
                Rendered {
                    subject: subject.into(),
                    text: format!(
                        "Bonjour {first_name},\n\n{what}\n{validity}\n\n\
                         Vous pouvez vérifier l'attestation de ce changement ici : {base}/attestations/verifier/{fingerprint}\n\
                         Pour voir ou révoquer vos mandats : {base}/espace-usager\n{SIGNATURE}"
                    ),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = "https://aidants.example.fr";

    fn t(s: &str) -> Timestamp {
        Timestamp::parse_rfc3339(s).unwrap()
    }

    #[test]
    fn notices_round_trip_as_json_with_their_kind() {
        let n = Notice::MandatUses {
            first_name: "Angela".into(),
            uses: vec![Use {
                at: t("2026-12-08T09:30:00Z"),
                organisation: "CCAS de Lyon".into(),
                aidant: "Nadia Benali".into(),
                demarche: Demarche::Argent,
                service: "Impots.gouv".into(),
            }],
        };
        let json = serde_json::to_value(&n).unwrap();
        assert_eq!(json["kind"], n.kind());
        assert_eq!(serde_json::from_value::<Notice>(json).unwrap(), n);
        let r = n.render(BASE);
        assert!(r.text.contains("le 08/12/2026 à 10:30 : Nadia Benali (CCAS de Lyon)"), "{}", r.text);
        assert!(r.text.contains(&format!("{BASE}/espace-usager")));
        assert!(r.text.contains("désactiver ces avis"));
    }

    #[test]
    fn expiring_mandats_say_which_and_how_to_renew() {
        let n = Notice::MandatsExpiring {
            first_name: "Nadia".into(),
            organisation: "CCAS de Lyon".into(),
            mandats: vec![ExpiringMandat {
                mandat: 7,
                usager: 3,
                usager_name: "Angela Dubois".into(),
                expires_at: t("2027-01-02T10:00:00Z"),
                demarches: vec![Demarche::Argent, Demarche::Famille],
            }],
        };
        let r = n.render(BASE);
        assert_eq!(r.subject, "Un mandat de votre structure prend fin dans les 30 jours");
        assert!(r.text.contains("aidant(e) de la structure CCAS de Lyon"));
        assert!(r.text.contains("Angela Dubois : fin le 02/01/2027"));
        assert!(r.text.contains(&format!("{BASE}/usagers/3/mandats/7/renouveler")));
    }

    #[test]
    fn every_kind_has_a_label_and_says_why_it_is_sent() {
        let a = AidantLine { id: 4, name: "Léo Martin".into(), email: "leo@exemple.fr".into() };
        let all = [
            Notice::MissingSecondFactor { first_name: "R".into(), organisation: "O".into(), aidants: vec![a.clone()] },
            Notice::InactivityWarning { first_name: "L".into(), last_signin: t("2026-01-01T12:00:00Z"), deactivation_on: t("2026-06-30T12:00:00Z") },
            Notice::InactiveAidantDeactivated { first_name: "R".into(), organisation: "O".into(), aidant: a, last_signin: t("2026-01-01T12:00:00Z") },
            Notice::MandatChanged {
                first_name: "A".into(),
                change: MandatChange::Revoked,
                organisation: "O".into(),
                demarches: vec![Demarche::Social],
                expires_at: t("2027-01-01T00:00:00Z"),
                fingerprint: "abc".into(),
            },
        ];
        for n in all {
            assert_ne!(Notice::kind_label(n.kind()), "Autre message");
            let r = n.render(BASE);
            assert!(!r.subject.is_empty());
            assert!(r.text.contains(BASE), "{}", r.text);
        }
    }
}
