//! `claims.id_token.rep_scope`: which démarches the e-service accepts, as FranceConnect's
//! core sends it, and how the id_token answers.
//!
//! FranceConnect's core always sends, to Aidants Connect,
//! `{"id_token":{"rep_scope":{"essential":true,"values":<the e-service's list>}}}`, and
//! that list is empty, or absent, for an e-service that restricts nothing (most of them).
//! On return it checks, only when the e-service's list is not empty, that the id_token's
//! `rep_scope` (an array of strings) shares at least one value with that list: it
//! compares strings. So:
//!
//! - `values` empty or absent, or `rep_scope: null`: [`RepScope::Any`]; the aidant may
//!   pick any démarche of the usager's autorisations that the organisation allows, and
//!   the id_token names it with FranceConnect's label ([`label`]);
//! - values given: each is a démarche key (`argent`) or one of FranceConnect's labels
//!   ([`ALIASES`]); the id_token answers with the spelling the request used for the
//!   chosen démarche ([`RepScope::answer`]);
//! - unknown values beside known ones are ignored (the caller logs
//!   [`ParsedRepScope::ignored`]); when no value is known, `invalid_request` names them;
//! - once the aidant is known, a restricted list must be within the organisation's
//!   allowed démarches, else `access_denied` ([`RepScope::within`]).

use super::error::{ErrorCode, OAuthError};
use crate::Demarche;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Every spelling of a démarche the broker understands in `rep_scope`: its key, then
/// FranceConnect's label (accents and case as FranceConnect's own code writes them, in
/// its `DelegationScope` list), then the label without accents. Matching is exact
/// (case-sensitive): FranceConnect compares strings the same way.
pub const ALIASES: [(Demarche, &[&str]); 10] = [
    (Demarche::Papiers, &["papiers", "Papier-Citoyenneté-Elections", "Papier-Citoyennete-Elections"]),
    (Demarche::Famille, &["famille", "Famille-Scolarité", "Famille-Scolarite"]),
    (Demarche::Social, &["social", "Social-Santé", "Social-Sante"]),
    (Demarche::Travail, &["travail", "Travail-Formation"]),
    (Demarche::Logement, &["logement", "Logement"]),
    (Demarche::Transports, &["transports", "Transports-Mobilité", "Transports-Mobilite"]),
    (Demarche::Argent, &["argent", "Argent-Impots-Consommation"]),
    (Demarche::Justice, &["justice", "Justice"]),
    (Demarche::Etranger, &["etranger", "Etranger-Europe"]),
    (Demarche::Loisirs, &["loisirs", "Loisirs-Sport-Culture"]),
];

/// The démarche a `rep_scope` value names, if any.
pub fn alias(value: &str) -> Option<Demarche> {
    ALIASES.iter().find(|(_, spellings)| spellings.contains(&value)).map(|(d, _)| *d)
}

/// FranceConnect's label of a démarche (`Argent-Impots-Consommation`).
pub fn label(d: Demarche) -> &'static str {
    ALIASES.iter().find(|(x, _)| *x == d).map(|(_, s)| s[1]).unwrap_or(d.key())
}

/// A démarche the e-service accepts, with the spelling its request used.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Accepted {
    pub demarche: Demarche,
    pub spelling: String,
}

/// What `rep_scope` asked for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", content = "accepted", rename_all = "snake_case")]
pub enum RepScope {
    /// No list: the e-service restricts nothing.
    Any,
    /// The démarches the e-service accepts, in canonical order, each once (with the
    /// first spelling the request used for it).
    Among(Vec<Accepted>),
}

/// A parsed `rep_scope` request, and the values it ignored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedRepScope {
    pub scope: RepScope,
    /// Unknown values next to known ones, each cut to [`IGNORED_VALUE_MAX`] characters,
    /// at most [`IGNORED_LIST_MAX`] of them (for an info-level log line).
    pub ignored: Vec<String>,
}

/// Longest ignored value kept for the log (characters).
pub const IGNORED_VALUE_MAX: usize = 40;
/// Most ignored values kept for the log.
pub const IGNORED_LIST_MAX: usize = 5;

fn invalid(description: impl Into<String>) -> OAuthError {
    OAuthError::invalid_request(description)
}

/// A value quoted back: at most [`IGNORED_VALUE_MAX`] characters, control characters
/// replaced.
fn quoted(v: &str) -> String {
    let mut out: String = v.chars().take(IGNORED_VALUE_MAX).map(|c| if c.is_control() { '?' } else { c }).collect();
    if v.chars().count() > IGNORED_VALUE_MAX {
        out.push('…');
    }
    out
}

impl RepScope {
    /// Parses `claims.id_token.rep_scope`: `null`, or an object with an optional boolean
    /// `essential` and either `values` (a list of strings) or `value` (one string).
    pub fn parse(request: &Value) -> Result<ParsedRepScope, OAuthError> {
        let any = || Ok(ParsedRepScope { scope: RepScope::Any, ignored: Vec::new() });
        let request = match request {
            Value::Null => return any(),
            Value::Object(o) => o,
            _ => return Err(invalid("claims.id_token.rep_scope doit être un objet JSON ou null.")),
        };
        if !matches!(request.get("essential"), None | Some(Value::Bool(_))) {
            return Err(invalid("claims.id_token.rep_scope.essential doit être un booléen."));
        }
        let values: Vec<&Value> = match (request.get("value"), request.get("values")) {
            (Some(_), Some(_)) => {
                return Err(invalid("claims.id_token.rep_scope : value et values ne peuvent pas être donnés ensemble."))
            }
            (None | Some(Value::Null), None) | (None, Some(Value::Null)) => return any(),
            (Some(v), None) => vec![v],
            (None, Some(Value::Array(vs))) => vs.iter().collect(),
            (None, Some(_)) => return Err(invalid("claims.id_token.rep_scope.values doit être une liste.")),
        };
        let mut accepted: Vec<Accepted> = Vec::new();
        let mut unknown: Vec<&str> = Vec::new();
        for v in values {
            let Value::String(v) = v else {
                return Err(invalid("claims.id_token.rep_scope : les démarches sont des chaînes."));
            };
            match alias(v) {
                Some(d) if accepted.iter().any(|a| a.demarche == d) => {}
                Some(d) => accepted.push(Accepted { demarche: d, spelling: v.clone() }),
                None => unknown.push(v),
            }
        }
        if accepted.is_empty() && unknown.is_empty() {
            return any();
        }
        let ignored: Vec<String> = unknown.iter().take(IGNORED_LIST_MAX).map(|v| quoted(v)).collect();
        if accepted.is_empty() {
            let mut named = ignored.iter().map(|v| format!("« {v} »")).collect::<Vec<_>>().join(", ");
            if unknown.len() > IGNORED_LIST_MAX {
                named.push_str(", …");
            }
            return Err(invalid(format!(
                "Aucune démarche connue dans rep_scope : {named}. Démarches possibles : {} (ou les libellés de FranceConnect).",
                crate::demarche::all_keys()
            )));
        }
        accepted.sort_by_key(|a| a.demarche);
        Ok(ParsedRepScope { scope: RepScope::Among(accepted), ignored })
    }

    /// The démarches the e-service restricts to; `None` when it restricts nothing.
    pub fn restricted_to(&self) -> Option<Vec<Demarche>> {
        match self {
            RepScope::Any => None,
            RepScope::Among(list) => Some(list.iter().map(|a| a.demarche).collect()),
        }
    }

    /// Once the aidant is known: the démarches they may pick among, given their
    /// organisation's allowed démarches. A restricted list must lie within them, else
    /// `access_denied` naming the others; with no list, the organisation's démarches.
    pub fn within(&self, allowed_for_org: &[Demarche]) -> Result<Vec<Demarche>, OAuthError> {
        let Some(requested) = self.restricted_to() else {
            return Ok(allowed_for_org.to_vec());
        };
        let refused: Vec<Demarche> = requested.iter().copied().filter(|d| !allowed_for_org.contains(d)).collect();
        if !refused.is_empty() {
            return Err(OAuthError::new(
                ErrorCode::AccessDenied,
                format!(
                    "Votre structure n'est pas habilitée pour ces démarches : {}.",
                    Demarche::join(&refused).replace(',', ", ")
                ),
            ));
        }
        Ok(requested)
    }

    /// The id_token's `rep_scope` value for the chosen démarche: the spelling the request
    /// used for it, or FranceConnect's label when the request restricted nothing.
    pub fn answer(&self, chosen: Demarche) -> String {
        match self {
            RepScope::Among(list) => list
                .iter()
                .find(|a| a.demarche == chosen)
                .map(|a| a.spelling.clone())
                .unwrap_or_else(|| label(chosen).to_owned()),
            RepScope::Any => label(chosen).to_owned(),
        }
    }
}

#[cfg(test)]
#[path = "rep_scope_tests.rs"]
mod tests;
