//! Typed capabilities: "this aidant acts in this organisation" and "this aidant may act
//! for this usager on this démarche, now".
//!
//! Each has private fields and one checked constructor, fed with the facts the store read
//! at an instant. Code that acts for a usager takes an [`ActingFor`]; it cannot be built
//! without the mandat check, so no caller can forget it. Ids are newtypes, so that an
//! aidant id cannot be passed where a usager id is expected.

use crate::mandat_facts::{MandatFacts, Status};
use crate::{Demarche, Timestamp};
use serde::{Deserialize, Serialize};
use std::fmt;

macro_rules! id_type {
    ($($(#[$doc:meta])* $name:ident),* $(,)?) => {$(
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(pub i64);

        impl $name {
            pub const fn get(self) -> i64 {
                self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }

        impl From<$name> for i64 {
            fn from(id: $name) -> i64 {
                id.0
            }
        }
    )*};
}

id_type!(
    /// An aidant's account.
    AidantId,
    /// A structure (organisation).
    OrganisationId,
    /// A usager, as the broker knows them.
    UsagerId,
    /// A mandat.
    MandatId,
    /// One démarche of a mandat.
    AutorisationId,
);

/// What the store knows of an aidant when a request needs their organisation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AidantFacts {
    pub id: AidantId,
    pub active: bool,
    pub current_organisation: Option<OrganisationId>,
}

/// What the store knows of an organisation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrganisationFacts {
    pub id: OrganisationId,
    pub allowed_demarches: Vec<Demarche>,
}

/// Why a capability is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("compte d'aidant désactivé")]
    AidantInactive,
    #[error("aucune structure choisie pour cet aidant")]
    NoOrganisation,
    #[error("le mandat appartient à une autre structure")]
    OtherOrganisation,
    #[error("la structure n'est pas habilitée pour la démarche {0}")]
    DemarcheNotAllowed(Demarche),
    #[error("le mandat ne comprend pas la démarche {0}")]
    NoAutorisation(Demarche),
    #[error("le mandat a expiré")]
    Expired,
    #[error("la démarche a été révoquée")]
    Revoked,
}

/// An active aidant acting in their current organisation, with that organisation's
/// allowed démarches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InOrganisation {
    aidant: AidantId,
    organisation: OrganisationId,
    allowed: Vec<Demarche>,
}

impl InOrganisation {
    /// The aidant must be active and `organisation` their current one.
    pub fn check(aidant: &AidantFacts, organisation: &OrganisationFacts) -> Result<Self, Refusal> {
        if !aidant.active {
            return Err(Refusal::AidantInactive);
        }
        match aidant.current_organisation {
            None => Err(Refusal::NoOrganisation),
            Some(o) if o != organisation.id => Err(Refusal::OtherOrganisation),
            Some(o) => Ok(InOrganisation { aidant: aidant.id, organisation: o, allowed: organisation.allowed_demarches.clone() }),
        }
    }

    pub fn aidant(&self) -> AidantId {
        self.aidant
    }

    pub fn organisation(&self) -> OrganisationId {
        self.organisation
    }

    /// The démarches the organisation may do (or, once narrowed, the part of them a
    /// request accepts).
    pub fn allowed(&self) -> &[Demarche] {
        &self.allowed
    }

    /// The same capability restricted to `demarches` (never widened).
    pub fn narrowed(&self, demarches: &[Demarche]) -> InOrganisation {
        InOrganisation { allowed: self.allowed.iter().copied().filter(|d| demarches.contains(d)).collect(), ..self.clone() }
    }
}

/// An aidant who may act, at `checked_at`, for a usager on one démarche: the mandat is
/// their organisation's, the organisation may do the démarche, and the mandat's
/// autorisation for it is active at that instant (not expired, not revoked).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActingFor {
    aidant: AidantId,
    organisation: OrganisationId,
    usager: UsagerId,
    mandat: MandatId,
    autorisation: AutorisationId,
    demarche: Demarche,
    checked_at: Timestamp,
}

impl ActingFor {
    /// The one way to get an [`ActingFor`]: the facts of the mandat, read at `now`.
    pub fn check(by: &InOrganisation, mandat: &MandatFacts, demarche: Demarche, now: Timestamp) -> Result<Self, Refusal> {
        if mandat.organisation_id != by.organisation.0 {
            return Err(Refusal::OtherOrganisation);
        }
        if !by.allowed.contains(&demarche) {
            return Err(Refusal::DemarcheNotAllowed(demarche));
        }
        let a = mandat.autorisations.iter().find(|a| a.demarche == demarche).ok_or(Refusal::NoAutorisation(demarche))?;
        match a.status(mandat.expires_at, now) {
            Status::Active => Ok(ActingFor {
                aidant: by.aidant,
                organisation: by.organisation,
                usager: UsagerId(mandat.usager_id),
                mandat: MandatId(mandat.id),
                autorisation: AutorisationId(a.id),
                demarche,
                checked_at: now,
            }),
            Status::Expired => Err(Refusal::Expired),
            Status::Revoked => Err(Refusal::Revoked),
        }
    }

    /// The same capability checked again at `now` against fresh facts of its mandat (for
    /// a step that happens later: the code, then userinfo).
    pub fn recheck(&self, by: &InOrganisation, mandat: &MandatFacts, now: Timestamp) -> Result<Self, Refusal> {
        if by.aidant != self.aidant || mandat.id != self.mandat.0 {
            return Err(Refusal::OtherOrganisation);
        }
        ActingFor::check(by, mandat, self.demarche, now)
    }

    pub fn aidant(&self) -> AidantId {
        self.aidant
    }
    pub fn organisation(&self) -> OrganisationId {
        self.organisation
    }
    pub fn usager(&self) -> UsagerId {
        self.usager
    }
    pub fn mandat(&self) -> MandatId {
        self.mandat
    }
    pub fn autorisation(&self) -> AutorisationId {
        self.autorisation
    }
    pub fn demarche(&self) -> Demarche {
        self.demarche
    }
    pub fn checked_at(&self) -> Timestamp {
        self.checked_at
    }
}

#[cfg(test)]
#[path = "capability_tests.rs"]
mod tests;
