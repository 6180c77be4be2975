//! TOTP devices (RFC 6238 over RFC 4226 HOTP, HMAC-SHA-1), built on `totp-rs`:
//! phone apps (30-second step) and physical cards (60-second step, imported by serial).

use crate::secret::{constant_time_eq, random_bytes};
use crate::validate::Invalid;
use crate::Timestamp;
use data_encoding::BASE32_NOPAD;
use totp_rs::{Algorithm, Builder, Totp};

pub const APP_STEP: u64 = 30;
pub const CARD_STEP: u64 = 60;
pub const DIGITS: u8 = 6;
pub const ISSUER: &str = "Aidants Connect";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceKind {
    App,
    Card,
}

impl DeviceKind {
    pub const fn key(self) -> &'static str {
        match self {
            DeviceKind::App => "totp_app",
            DeviceKind::Card => "totp_card",
        }
    }

    /// The kind stored under `key`, if any.
    pub fn from_key(key: &str) -> Option<DeviceKind> {
        [DeviceKind::App, DeviceKind::Card].into_iter().find(|k| k.key() == key)
    }
}

/// A TOTP seed: 20 random bytes for devices the service creates.
#[derive(Clone, PartialEq, Eq)]
pub struct Seed(Vec<u8>);

impl std::fmt::Debug for Seed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Seed(…)")
    }
}

impl Seed {
    pub fn generate() -> Self {
        Self(random_bytes::<20>().to_vec())
    }

    pub fn from_bytes(bytes: Vec<u8>) -> Self {
        Self(bytes)
    }

    /// Base32 (RFC 4648) without padding, case-insensitive, spaces ignored;
    /// at least 128 bits as RFC 4226 requires.
    pub fn from_base32(text: &str) -> Result<Self, Invalid> {
        let clean: String = text
            .chars()
            .filter(|c| !c.is_whitespace())
            .map(|c| c.to_ascii_uppercase())
            .collect::<String>()
            .trim_end_matches('=')
            .to_owned();
        let bytes = BASE32_NOPAD
            .decode(clean.as_bytes())
            .map_err(|_| Invalid("graine TOTP invalide (base32 attendu)".into()))?;
        if bytes.len() < 16 {
            return Err(Invalid("graine TOTP trop courte (128 bits au moins)".into()));
        }
        Ok(Self(bytes))
    }

    pub fn bytes(&self) -> &[u8] {
        &self.0
    }

    pub fn base32(&self) -> String {
        BASE32_NOPAD.encode(&self.0)
    }

    fn totp(&self, step: u64, digits: u8, account: &str) -> Totp {
        Builder::new()
            .with_algorithm(Algorithm::SHA1)
            .with_digits(digits)
            .with_skew(0)
            .with_step_duration(step)
            .with_secret(self.0.clone())
            .with_issuer(Some(ISSUER))
            .with_account_name(account.replace(':', ""))
            .build_noncompliant()
    }

    /// The code shown by the device at `at`.
    pub fn code_at(&self, step: u64, digits: u8, at: Timestamp) -> String {
        self.totp(step, digits, "").generate(at.unix_seconds()).to_string()
    }

    /// `otpauth://totp/...` URI for a phone app to scan.
    pub fn otpauth_uri(&self, step: u64, digits: u8, account: &str) -> String {
        self.totp(step, digits, account)
            .to_url()
            .unwrap_or_default()
    }
}

/// One row of an operator's card stock file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CardRecord {
    pub serial: String,
    pub seed: Seed,
    pub step: u64,
    pub digits: u8,
}

impl CardRecord {
    pub fn parse(serial: &str, seed: &str, step: &str, digits: &str) -> Result<Self, Invalid> {
        let serial = serial.trim();
        if serial.is_empty()
            || serial.len() > 64
            || !serial.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(Invalid(format!("numéro de série invalide : « {serial} »")));
        }
        let step: u64 = step
            .trim()
            .parse()
            .ok()
            .filter(|s| *s == APP_STEP || *s == CARD_STEP)
            .ok_or_else(|| Invalid(format!("carte {serial} : pas de temps invalide « {} » (30 ou 60)", step.trim())))?;
        let digits: u8 = digits
            .trim()
            .parse()
            .ok()
            .filter(|d| *d == 6 || *d == 8)
            .ok_or_else(|| Invalid(format!("carte {serial} : nombre de chiffres invalide « {} » (6 ou 8)", digits.trim())))?;
        let seed = Seed::from_base32(seed).map_err(|e| Invalid(format!("carte {serial} : {e}")))?;
        Ok(Self { serial: serial.to_owned(), seed, step, digits })
    }
}

/// Steps tried on each side of the expected counter: a code typed just before the
/// device moved on, or a clock a few seconds apart, is still accepted.
pub const WINDOW: i64 = 1;

/// Largest clock drift, in steps, learned for a device. A card whose clock runs away
/// further than this (plus [`WINDOW`]) stops working and must be replaced.
pub const MAX_DRIFT_STEPS: i32 = 10;

/// What the service remembers about a device between two sign-ins.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeviceState {
    /// Seconds per code (30 for apps, usually 60 for cards).
    pub step: u64,
    /// Number of digits of a code (6 or 8).
    pub digits: u8,
    /// Learned offset of the device's clock, in steps (positive: the device is ahead).
    pub drift_steps: i32,
    /// Counter of the last accepted code: it and every older one are refused.
    pub last_used_counter: Option<i64>,
}

/// An accepted code: the counter it was generated for, and the drift to remember.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Accepted {
    pub counter: i64,
    pub drift_steps: i32,
}

/// Checks a code typed by an aidant against a device at `now`.
///
/// The code must be exactly `digits` ASCII digits (surrounding white space ignored).
/// With T = now / step, the counters T + drift + d for d in -[`WINDOW`]..=[`WINDOW`] are
/// tried, d = 0 first: the window follows the learned drift instead of widening, so a
/// drifting card keeps working. A counter at or below `last_used_counter` is refused,
/// so an accepted code is never accepted twice for a device, nor an older one after it.
/// On success the new drift is counter − T, clamped to ±[`MAX_DRIFT_STEPS`]; the caller
/// stores it with the counter.
pub fn check(seed: &Seed, state: &DeviceState, code: &str, now: Timestamp) -> Option<Accepted> {
    let code = code.trim();
    if state.step == 0 || code.len() != usize::from(state.digits) || !code.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let step = i64::try_from(state.step).ok()?;
    let t = i64::try_from(now.unix_seconds() / state.step).ok()?;
    let centre = t + i64::from(state.drift_steps.clamp(-MAX_DRIFT_STEPS, MAX_DRIFT_STEPS));
    let offsets = std::iter::once(0).chain((1..=WINDOW).flat_map(|d| [-d, d]));
    for counter in offsets.map(|d| centre + d) {
        if counter < 0 || state.last_used_counter.is_some_and(|last| counter <= last) {
            continue;
        }
        let Some(at) = counter.checked_mul(step).and_then(|s| s.checked_mul(1_000_000)) else {
            continue;
        };
        let expected = seed.code_at(state.step, state.digits, Timestamp::from_micros(at));
        if constant_time_eq(expected.as_bytes(), code.as_bytes()) {
            let drift = (counter - t).clamp(i64::from(-MAX_DRIFT_STEPS), i64::from(MAX_DRIFT_STEPS));
            return Some(Accepted { counter, drift_steps: drift as i32 });
        }
    }
    None
}

#[cfg(test)]
#[path = "totp_tests.rs"]
mod tests;
