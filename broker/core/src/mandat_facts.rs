//! What the store knows of a mandat and its autorisations, and the status derived from
//! them at an instant. Nothing here is stored: status is always computed from the
//! creation instant, the expiry instant and the revocation instants.

use crate::{Demarche, Timestamp};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Active,
    Expired,
    Revoked,
}

impl Status {
    pub const fn label(self) -> &'static str {
        match self {
            Status::Active => "actif",
            Status::Expired => "expiré",
            Status::Revoked => "révoqué",
        }
    }
}

/// What the store knows of one autorisation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AutorisationFacts {
    pub id: i64,
    pub demarche: Demarche,
    pub revoked_at: Option<Timestamp>,
}

impl AutorisationFacts {
    fn revoked_by(&self, now: Timestamp) -> bool {
        self.revoked_at.is_some_and(|r| r <= now)
    }

    /// Status of this autorisation within a mandat expiring at `expires_at`.
    /// A revocation that happened before expiry wins over expiry.
    pub fn status(&self, expires_at: Timestamp, now: Timestamp) -> Status {
        match self.revoked_at {
            Some(r) if r <= now && r < expires_at => Status::Revoked,
            _ if now >= expires_at => Status::Expired,
            _ => Status::Active,
        }
    }
}

/// What the store knows of one mandat.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MandatFacts {
    pub id: i64,
    pub organisation_id: i64,
    pub usager_id: i64,
    pub created_at: Timestamp,
    pub expires_at: Timestamp,
    pub autorisations: Vec<AutorisationFacts>,
}

/// How long an ended mandat stays in lists.
pub const LIST_RETENTION_DAYS: i64 = 365;

impl MandatFacts {
    /// Active: not expired and at least one autorisation not revoked.
    /// Revoked: every autorisation revoked before expiry. Expired otherwise.
    pub fn status(&self, now: Timestamp) -> Status {
        let all_revoked_before_expiry = !self.autorisations.is_empty()
            && self
                .autorisations
                .iter()
                .all(|a| a.status(self.expires_at, now) == Status::Revoked);
        if all_revoked_before_expiry {
            Status::Revoked
        } else if now >= self.expires_at {
            Status::Expired
        } else if self.autorisations.iter().any(|a| !a.revoked_by(now)) {
            Status::Active
        } else {
            Status::Revoked
        }
    }

    /// The instant the mandat stopped being usable, if it has.
    pub fn ended_at(&self, now: Timestamp) -> Option<Timestamp> {
        match self.status(now) {
            Status::Active => None,
            Status::Expired => Some(self.expires_at),
            Status::Revoked => self.autorisations.iter().filter_map(|a| a.revoked_at).max(),
        }
    }

    /// Mandats expired or revoked for more than 365 days are left out of lists.
    /// They are never deleted.
    pub fn shown_in_lists(&self, now: Timestamp) -> bool {
        match self.ended_at(now) {
            None => true,
            Some(end) => now <= end.plus_days(LIST_RETENTION_DAYS),
        }
    }

    /// Démarches this mandat lets an aidant act for, at `now`.
    pub fn active_demarches(&self, now: Timestamp) -> Vec<Demarche> {
        self.autorisations
            .iter()
            .filter(|a| a.status(self.expires_at, now) == Status::Active)
            .map(|a| a.demarche)
            .collect()
    }
}
