//! WebAuthn ceremonies (security keys, passkeys) over `webauthn-rs`, with plain JSON
//! in and out so that handlers only move JSON between the browser, the cache and the
//! store (`broker_store::webauthn`).
//!
//! Policy:
//! - **user verification required**, at registration and at every sign-in: the key
//!   checks its PIN or a biometric, so the key alone is a complete strong
//!   authentication;
//! - **discoverable credentials**: registration asks for a resident key
//!   (`residentKey: "required"`), and sign-in sends no `allowCredentials`, so the aidant
//!   types no e-mail: the authenticator returns the user handle, which maps back to the
//!   aidant ([`user_handle`]);
//! - attestation `none`: any authenticator is accepted (no vendor allow-list).
//!
//! A ceremony has two requests. `start_*` returns the options for the browser and a
//! state (JSON) that the caller keeps **server side** (the cache), bound to the
//! browser's session, and **takes out once** (get-and-delete) for `finish_*`: the state
//! holds the challenge, and using it only once is what stops replays when an
//! authenticator keeps no signature counter.
//!
//! Sign-in sequence for the caller:
//! 1. `start_signin()` → options to the page, state to the cache;
//! 2. `identify(response)` → `(aidant id, credential id)`; check the aidant is active
//!    and that `broker_store::webauthn::find_owner(credential id)` is that aidant;
//! 3. `finish_signin(state, response, passkeys of that aidant)` → verified;
//!    `broker_store::webauthn::mark_used` with the updated passkey if any.

use std::fmt;
use url::Url;
use webauthn_rs::prelude::{
    CreationChallengeResponse, CredentialID, DiscoverableAuthentication, DiscoverableKey, Passkey,
    PasskeyRegistration, PublicKeyCredential, RegisterPublicKeyCredential, Uuid, WebauthnBuilder,
};

/// The high half of every user handle: "AC" and zeros (see [`user_handle`]).
pub const USER_HANDLE_PREFIX: u64 = 0x4143_0000_0000_0000;

/// The relying party name shown by browsers and authenticators.
pub const RP_NAME: &str = "Aidants Connect";

/// The generic message shown to the aidant when a ceremony fails: it tells nothing
/// about which check failed.
pub const GENERIC_MESSAGE: &str = "La clé de sécurité n'a pas été reconnue. Réessayez ou utilisez votre code.";

/// The WebAuthn user handle (`user.id`) of an aidant: the UUID whose high 64 bits are
/// [`USER_HANDLE_PREFIX`] and whose low 64 bits are the aidant's id,
/// `Uuid::from_u64_pair(0x4143_0000_0000_0000, aidant_id as u64)`.
///
/// It is deterministic so that a discoverable assertion, which carries the user handle
/// stored in the authenticator, maps back to the aidant without a lookup table, and so
/// that registering a second key for the same aidant gives the authenticator the same
/// account (a key replaces the account's earlier credential instead of piling up
/// entries). It holds no personal data: only the database id, which the key stores.
pub fn user_handle(aidant_id: i64) -> Uuid {
    Uuid::from_u64_pair(USER_HANDLE_PREFIX, aidant_id as u64)
}

/// The aidant id of a user handle made by [`user_handle`], or `None` for any other
/// value (another site's format, a tampered handle, a non-positive id).
pub fn aidant_of_user_handle(handle: &[u8]) -> Option<i64> {
    let u = Uuid::from_slice(handle).ok()?;
    let (high, low) = u.as_u64_pair();
    let id = i64::try_from(low).ok()?;
    (high == USER_HANDLE_PREFIX && id > 0).then_some(id)
}

/// A failed ceremony: a French message for the aidant, and a detail for the logs
/// (which check failed; never personal data nor the browser's raw input).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PasskeyError {
    message: &'static str,
    detail: String,
}

impl PasskeyError {
    fn new(detail: impl Into<String>) -> Self {
        Self { message: GENERIC_MESSAGE, detail: detail.into() }
    }

    fn with_message(message: &'static str, detail: impl Into<String>) -> Self {
        Self { message, detail: detail.into() }
    }

    fn json(what: &str, e: &serde_json::Error) -> Self {
        // serde_json's own message may quote the input: only its position is kept.
        Self::new(format!("{what}: JSON illisible ({:?}, ligne {}, colonne {})", e.classify(), e.line(), e.column()))
    }

    fn webauthn(step: &str, e: &webauthn_rs::prelude::WebauthnError) -> Self {
        Self::new(format!("{step}: {e:?}"))
    }

    /// For the aidant.
    pub fn message(&self) -> &str {
        self.message
    }

    /// For the logs.
    pub fn detail(&self) -> &str {
        &self.detail
    }
}

impl fmt::Display for PasskeyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.message)
    }
}

impl std::error::Error for PasskeyError {}

/// A credential that passed registration, to store with
/// `broker_store::webauthn::add_credential`.
#[derive(Debug, Clone)]
pub struct NewCredential {
    /// Base64url without padding.
    pub credential_id: String,
    /// The serialised `webauthn_rs::prelude::Passkey`.
    pub passkey_json: String,
}

/// A verified sign-in.
#[derive(Debug, Clone)]
pub struct SigninResult {
    /// Base64url without padding.
    pub credential_id: String,
    /// The passkey to store back when the signature counter or the backup state
    /// changed (`broker_store::webauthn::mark_used`).
    pub updated_passkey_json: Option<String>,
}

pub fn encode_id(bytes: &[u8]) -> String {
    data_encoding::BASE64URL_NOPAD.encode(bytes)
}

fn decode_id(s: &str) -> Option<Vec<u8>> {
    data_encoding::BASE64URL_NOPAD.decode(s.trim_end_matches('=').as_bytes()).ok()
}

/// The relying party: the broker's public host.
#[derive(Debug, Clone)]
pub struct Passkeys {
    webauthn: webauthn_rs::Webauthn,
}

impl Passkeys {
    /// `issuer` is the broker's public URL (`https://host[:port][/path]`): the RP id is
    /// its host and the only accepted origin is its scheme, host and port. Browsers
    /// refuse an IP address as RP id: in development use `http://localhost:8000`,
    /// not `http://127.0.0.1:8000`.
    pub fn new(issuer: &str) -> Result<Self, PasskeyError> {
        let url = Url::parse(issuer.trim()).map_err(|e| PasskeyError::new(format!("issuer invalide : {e}")))?;
        let host = url
            .domain()
            .ok_or_else(|| PasskeyError::new("issuer sans nom de domaine : WebAuthn n'accepte pas une adresse IP comme RP id"))?
            .to_owned();
        let origin = Url::parse(&url.origin().ascii_serialization())
            .map_err(|e| PasskeyError::new(format!("origine de l'issuer invalide : {e}")))?;
        let webauthn = WebauthnBuilder::new(&host, &origin)
            .and_then(|b| b.rp_name(RP_NAME).build())
            .map_err(|e| PasskeyError::webauthn("configuration", &e))?;
        Ok(Self { webauthn })
    }

    /// Starts adding a key for a signed-in aidant. `exclude` are the credential ids
    /// already stored for them (the authenticator refuses to register twice). Returns
    /// the options for `navigator.credentials.create` (`{"publicKey": {...}}`) and the
    /// state to keep server side.
    pub fn start_registration(
        &self,
        aidant_id: i64,
        email: &str,
        display_name: &str,
        exclude: &[String],
    ) -> Result<(serde_json::Value, String), PasskeyError> {
        if aidant_id <= 0 {
            return Err(PasskeyError::new("identifiant d'aidant invalide"));
        }
        let exclude: Vec<CredentialID> = exclude
            .iter()
            .map(|s| decode_id(s).map(CredentialID::from).ok_or_else(|| PasskeyError::new("identifiant de clé stocké illisible")))
            .collect::<Result<_, _>>()?;
        let exclude = (!exclude.is_empty()).then_some(exclude);
        let (ccr, state): (CreationChallengeResponse, PasskeyRegistration) = self
            .webauthn
            .start_passkey_registration(user_handle(aidant_id), email, display_name, exclude)
            .map_err(|e| PasskeyError::webauthn("début d'enregistrement", &e))?;
        let mut options = serde_json::to_value(&ccr).map_err(|e| PasskeyError::json("options d'enregistrement", &e))?;
        // `start_passkey_registration` asks for `residentKey: "discouraged"`; sign-in
        // without e-mail needs a discoverable credential. The RP cannot check residency
        // anyway (see `finish_registration` for the credProps hint), so only the
        // request to the authenticator changes; user verification stays "required".
        let selection = options
            .pointer_mut("/publicKey/authenticatorSelection")
            .and_then(|v| v.as_object_mut())
            .ok_or_else(|| PasskeyError::new("options d'enregistrement sans authenticatorSelection"))?;
        selection.insert("residentKey".into(), "required".into());
        selection.insert("requireResidentKey".into(), true.into());
        let state = serde_json::to_string(&state).map_err(|e| PasskeyError::json("état d'enregistrement", &e))?;
        Ok((options, state))
    }

    /// Verifies the browser's answer to `navigator.credentials.create` against the
    /// state `start_registration` gave. Refuses a credential the browser reports as not
    /// discoverable (`credProps.rk == false`): it could never be used to sign in.
    pub fn finish_registration(&self, state_json: &str, response: &serde_json::Value) -> Result<NewCredential, PasskeyError> {
        let state: PasskeyRegistration =
            serde_json::from_str(state_json).map_err(|e| PasskeyError::json("état d'enregistrement", &e))?;
        let reg: RegisterPublicKeyCredential =
            serde_json::from_value(response.clone()).map_err(|e| PasskeyError::json("réponse d'enregistrement", &e))?;
        if reg.extensions.cred_props.as_ref().and_then(|p| p.rk) == Some(false) {
            return Err(PasskeyError::with_message(
                "Cette clé ne peut pas enregistrer votre compte : utilisez une clé de sécurité compatible FIDO2 ou un autre appareil.",
                "identifiant non découvrable (credProps.rk = false)",
            ));
        }
        let passkey: Passkey = self
            .webauthn
            .finish_passkey_registration(&reg, &state)
            .map_err(|e| PasskeyError::webauthn("fin d'enregistrement", &e))?;
        let passkey_json = serde_json::to_string(&passkey).map_err(|e| PasskeyError::json("clé", &e))?;
        Ok(NewCredential { credential_id: encode_id(passkey.cred_id().as_slice()), passkey_json })
    }

    /// Starts a sign-in without e-mail: no `allowCredentials`, `userVerification:
    /// "required"`. Returns the options for `navigator.credentials.get`
    /// (`{"publicKey": {...}}`, modal: the page adds `mediation: "conditional"` itself
    /// if it wants autofill) and the state to keep server side.
    pub fn start_signin(&self) -> Result<(serde_json::Value, String), PasskeyError> {
        let (rcr, state) = self
            .webauthn
            .start_discoverable_authentication()
            .map_err(|e| PasskeyError::webauthn("début de connexion", &e))?;
        let mut options = serde_json::to_value(&rcr).map_err(|e| PasskeyError::json("options de connexion", &e))?;
        // webauthn-rs marks this ceremony for conditional mediation (autofill only);
        // the sign-in button needs the ordinary modal prompt.
        if let Some(o) = options.as_object_mut() {
            o.remove("mediation");
        }
        let state = serde_json::to_string(&state).map_err(|e| PasskeyError::json("état de connexion", &e))?;
        Ok((options, state))
    }

    /// Reads who the assertion claims to be, before any verification: the aidant id
    /// from the user handle and the credential id (base64url without padding). Nothing
    /// is proven yet: the caller loads that aidant's passkeys for `finish_signin`.
    pub fn identify(&self, response: &serde_json::Value) -> Result<(i64, String), PasskeyError> {
        let cred: PublicKeyCredential =
            serde_json::from_value(response.clone()).map_err(|e| PasskeyError::json("réponse de connexion", &e))?;
        self.identify_parsed(&cred)
    }

    fn identify_parsed(&self, cred: &PublicKeyCredential) -> Result<(i64, String), PasskeyError> {
        let (uuid, cred_id) = self
            .webauthn
            .identify_discoverable_authentication(cred)
            .map_err(|e| PasskeyError::webauthn("identification", &e))?;
        let aidant = aidant_of_user_handle(uuid.as_bytes()).ok_or_else(|| PasskeyError::new("identifiant d'utilisateur inconnu"))?;
        Ok((aidant, encode_id(cred_id)))
    }

    /// Verifies the assertion against the state `start_signin` gave and `stored`, the
    /// passkey JSONs of the aidant `identify` returned: the credential must be one of
    /// them (so the user handle and the credential belong to the same aidant), the
    /// signature must verify with its key, user verification must be present, and the
    /// signature counter must have moved forward when the key keeps one (a counter
    /// that did not is refused as a possible cloned key).
    pub fn finish_signin(
        &self,
        state_json: &str,
        response: &serde_json::Value,
        stored: &[String],
    ) -> Result<SigninResult, PasskeyError> {
        let state: DiscoverableAuthentication =
            serde_json::from_str(state_json).map_err(|e| PasskeyError::json("état de connexion", &e))?;
        let cred: PublicKeyCredential =
            serde_json::from_value(response.clone()).map_err(|e| PasskeyError::json("réponse de connexion", &e))?;
        // A discoverable sign-in must carry a user handle of ours.
        let (_, credential_id) = self.identify_parsed(&cred)?;
        let mut passkeys: Vec<Passkey> = stored
            .iter()
            .map(|p| serde_json::from_str(p).map_err(|e| PasskeyError::json("clé stockée", &e)))
            .collect::<Result<_, _>>()?;
        let keys: Vec<DiscoverableKey> = passkeys.iter().map(DiscoverableKey::from).collect();
        let result = self
            .webauthn
            .finish_discoverable_authentication(&cred, state, &keys)
            .map_err(|e| PasskeyError::webauthn("fin de connexion", &e))?;
        if !result.user_verified() {
            // Already enforced by the policy; kept as a guard against a library change.
            return Err(PasskeyError::new("vérification de l'utilisateur absente"));
        }
        let mut updated = None;
        for pk in &mut passkeys {
            if let Some(changed) = pk.update_credential(&result) {
                if changed {
                    updated = Some(serde_json::to_string(pk).map_err(|e| PasskeyError::json("clé mise à jour", &e))?);
                }
                break;
            }
        }
        Ok(SigninResult { credential_id, updated_passkey_json: updated })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_handles_map_back_to_the_aidant_only() {
        for id in [1, 42, i64::MAX] {
            assert_eq!(aidant_of_user_handle(user_handle(id).as_bytes()), Some(id));
        }
        assert_eq!(aidant_of_user_handle(Uuid::from_u64_pair(0x4143_0000_0000_0001, 7).as_bytes()), None);
        assert_eq!(aidant_of_user_handle(Uuid::from_u64_pair(USER_HANDLE_PREFIX, u64::MAX).as_bytes()), None);
        assert_eq!(aidant_of_user_handle(Uuid::from_u64_pair(USER_HANDLE_PREFIX, 0).as_bytes()), None);
        assert_eq!(aidant_of_user_handle(b"short"), None);
    }

    #[test]
    fn the_rp_is_the_issuer_host_and_an_ip_address_is_refused() {
        assert!(Passkeys::new("https://aidantsconnect.beta.gouv.fr/oidc").is_ok());
        assert!(Passkeys::new("http://localhost:8000").is_ok());
        let e = Passkeys::new("http://127.0.0.1:8000").unwrap_err();
        assert_eq!(e.message(), GENERIC_MESSAGE);
        assert!(e.detail().contains("adresse IP"), "{}", e.detail());
    }
}
