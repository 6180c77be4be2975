//! Typed journal events for mandat changes and their use: one variant per action, with
//! its typed fields, turned into an [`Entry`] in one place so that every path writes the
//! same columns and details for the same action.

use super::{Action, Entry};
use crate::capability::{ActingFor, AidantId, AutorisationId, MandatId, OrganisationId, UsagerId};
use crate::duree::Duree;
use crate::{Demarche, Timestamp};

/// Who made a change to a usager's mandats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Actor {
    /// An aidant, from the pages or the command line.
    Aidant(AidantId),
    /// The usager, from their own space (journaled with `"by":"usager"`).
    Usager,
}

impl Actor {
    pub fn aidant(self) -> Option<AidantId> {
        match self {
            Actor::Aidant(a) => Some(a),
            Actor::Usager => None,
        }
    }
}

/// The parties of a mandat: its organisation and its usager.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Parties {
    pub organisation: OrganisationId,
    pub usager: UsagerId,
}

/// One mandat change, as the journal records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// The usager was identified through FranceConnect by an aidant.
    UsagerIdentified { by: AidantId, parties: Parties },
    MandatCreated { by: AidantId, parties: Parties, mandat: MandatId, duree: Duree, demarches: Vec<Demarche>, expires_at: Timestamp },
    AutorisationCreated { by: AidantId, parties: Parties, mandat: MandatId, autorisation: AutorisationId, demarche: Demarche },
    /// An autorisation revoked because a new mandat covers the same démarche.
    AutorisationSuperseded { by: AidantId, parties: Parties, mandat: MandatId, autorisation: AutorisationId, demarche: Demarche, by_mandat: MandatId },
    AutorisationRevoked { by: Actor, parties: Parties, mandat: MandatId, autorisation: AutorisationId, demarche: Demarche },
    /// The last active autorisation of the mandat was revoked; `demarches` are those
    /// revoked by this change, in autorisation order.
    MandatRevoked { by: Actor, parties: Parties, mandat: MandatId, demarches: Vec<Demarche> },
    MandatRenewed { by: AidantId, parties: Parties, mandat: MandatId, renews: MandatId },
    AttestationCreated { by: Actor, parties: Parties, mandat: MandatId, fingerprint: String, kind: &'static str, legal_text_version: String },
    /// An e-service received the usager's identity for an aidant acting for them.
    AutorisationUsed { acting: ActingFor, client: String },
}

impl Event {
    pub fn action(&self) -> Action {
        match self {
            Event::UsagerIdentified { .. } => Action::UsagerIdentified,
            Event::MandatCreated { .. } => Action::MandatCreated,
            Event::AutorisationCreated { .. } => Action::AutorisationCreated,
            Event::AutorisationSuperseded { .. } | Event::AutorisationRevoked { .. } => Action::AutorisationRevoked,
            Event::MandatRevoked { .. } => Action::MandatRevoked,
            Event::MandatRenewed { .. } => Action::MandatRenewed,
            Event::AttestationCreated { .. } => Action::AttestationCreated,
            Event::AutorisationUsed { .. } => Action::AutorisationUsed,
        }
    }

    /// The entry to append, stamped at `at` (the instant of the change).
    pub fn entry(&self, at: Timestamp) -> Entry {
        fn base(action: Action, by: Actor, p: &Parties) -> Entry {
            let e = Entry::new(action);
            let e = match by {
                Actor::Aidant(a) => e.aidant(a.get()),
                Actor::Usager => e,
            };
            e.organisation(p.organisation.get()).usager(p.usager.get())
        }
        fn usager_detail(e: Entry, by: Actor) -> Entry {
            match by {
                Actor::Aidant(_) => e,
                Actor::Usager => e.detail("by", "usager"),
            }
        }
        let a = self.action();
        let e = match self {
            Event::UsagerIdentified { by, parties } => base(a, Actor::Aidant(*by), parties).detail("method", "franceconnect"),
            Event::MandatCreated { by, parties, mandat, duree, demarches, expires_at } => base(a, Actor::Aidant(*by), parties)
                .mandat(mandat.get())
                .detail("duree_jours", duree.days())
                .detail("demarches", Demarche::join(demarches))
                .detail("expires_at", expires_at.rfc3339()),
            Event::AutorisationCreated { by, parties, mandat, autorisation, demarche } => {
                base(a, Actor::Aidant(*by), parties).mandat(mandat.get()).autorisation(autorisation.get()).demarche(*demarche)
            }
            Event::AutorisationSuperseded { by, parties, mandat, autorisation, demarche, by_mandat } => base(a, Actor::Aidant(*by), parties)
                .mandat(mandat.get())
                .autorisation(autorisation.get())
                .detail("reason", "superseded")
                .detail("by_mandat", by_mandat.get())
                .demarche(*demarche),
            Event::AutorisationRevoked { by, parties, mandat, autorisation, demarche } => {
                usager_detail(base(a, *by, parties), *by).mandat(mandat.get()).autorisation(autorisation.get()).detail("reason", "revoked").demarche(*demarche)
            }
            Event::MandatRevoked { by, parties, mandat, demarches } => {
                usager_detail(base(a, *by, parties), *by).mandat(mandat.get()).detail("demarches", Demarche::join(demarches))
            }
            Event::MandatRenewed { by, parties, mandat, renews } => base(a, Actor::Aidant(*by), parties).mandat(mandat.get()).detail("renews", renews.get()),
            Event::AttestationCreated { by, parties, mandat, fingerprint, kind, legal_text_version } => base(a, *by, parties)
                .mandat(mandat.get())
                .attestation_hash(fingerprint.clone())
                .detail("kind", *kind)
                .detail("legal_text_version", legal_text_version.clone()),
            Event::AutorisationUsed { acting, client } => Entry::new(a)
                .aidant(acting.aidant().get())
                .organisation(acting.organisation().get())
                .usager(acting.usager().get())
                .mandat(acting.mandat().get())
                .autorisation(acting.autorisation().get())
                .client(client.clone())
                .demarche(acting.demarche()),
        };
        e.at(at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: Timestamp = Timestamp::from_micros(1_800_000_000_000_000);
    const P: Parties = Parties { organisation: OrganisationId(1), usager: UsagerId(9) };

    #[test]
    fn a_revocation_by_the_usager_has_no_aidant_and_says_so() {
        let e = Event::AutorisationRevoked { by: Actor::Usager, parties: P, mandat: MandatId(4), autorisation: AutorisationId(5), demarche: Demarche::Argent }.entry(T);
        assert_eq!((e.action, e.aidant, e.organisation, e.usager, e.mandat, e.autorisation, e.demarche), (Action::AutorisationRevoked, None, Some(1), Some(9), Some(4), Some(5), Some(Demarche::Argent)));
        assert_eq!(e.record(T).details, r#"{"by":"usager","reason":"revoked"}"#);
        assert_eq!(e.at, Some(T));
        let by_aidant = Event::MandatRevoked { by: Actor::Aidant(AidantId(7)), parties: P, mandat: MandatId(4), demarches: vec![Demarche::Argent, Demarche::Social] }.entry(T);
        assert_eq!(by_aidant.aidant, Some(7));
        assert_eq!(by_aidant.record(T).details, format!(r#"{{"demarches":"{}"}}"#, Demarche::join(&[Demarche::Argent, Demarche::Social])));
    }

    #[test]
    fn a_superseded_autorisation_names_the_new_mandat() {
        let e = Event::AutorisationSuperseded { by: AidantId(7), parties: P, mandat: MandatId(3), autorisation: AutorisationId(30), demarche: Demarche::Social, by_mandat: MandatId(4) }.entry(T);
        assert_eq!(e.action, Action::AutorisationRevoked);
        assert_eq!(e.record(T).details, r#"{"by_mandat":4,"reason":"superseded"}"#);
    }
}
