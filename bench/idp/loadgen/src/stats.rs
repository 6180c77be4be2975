//! What one load phase measured, and the results file every phase appends to.

use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::Path;
use std::time::Duration;

pub struct Measure {
    /// Latencies of the successful requests, µs, sorted.
    latencies: Vec<u32>,
    pub errors: u64,
    pub elapsed: Duration,
    /// The single-use requests ran out before the end of the phase.
    pub exhausted: bool,
    pub first_error: Option<String>,
}

impl Measure {
    pub fn new(mut latencies: Vec<u32>, errors: u64, elapsed: Duration, exhausted: bool, first_error: Option<String>) -> Self {
        latencies.sort_unstable();
        Self { latencies, errors, elapsed, exhausted, first_error }
    }

    pub fn ok(&self) -> usize {
        self.latencies.len()
    }

    /// Successful requests per second over the whole phase.
    pub fn rps(&self) -> f64 {
        self.ok() as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// The `q` quantile (0..=1) of the latencies, in milliseconds (nearest rank).
    pub fn quantile_ms(&self, q: f64) -> f64 {
        if self.latencies.is_empty() {
            return f64::NAN;
        }
        let rank = ((q * self.latencies.len() as f64).ceil() as usize).clamp(1, self.latencies.len());
        f64::from(self.latencies[rank - 1]) / 1000.0
    }

    pub fn result(&self, label: &str) -> PhaseResult {
        PhaseResult {
            label: label.to_owned(),
            requests: self.ok() as u64,
            errors: self.errors,
            seconds: self.elapsed.as_secs_f64(),
            rps: self.rps(),
            p50_ms: self.quantile_ms(0.50),
            p99_ms: self.quantile_ms(0.99),
            max_ms: self.quantile_ms(1.0),
            exhausted: self.exhausted,
        }
    }
}

/// One line of the results file (JSON lines).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PhaseResult {
    pub label: String,
    pub requests: u64,
    pub errors: u64,
    pub seconds: f64,
    pub rps: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    pub exhausted: bool,
}

impl PhaseResult {
    pub fn print(&self) {
        println!(
            "  {:<18} {:>9.0} req/s  p50 {:>7.2} ms  p99 {:>7.2} ms  max {:>7.2} ms  ({} ok, {} errors, {:.1} s{})",
            self.label,
            self.rps,
            self.p50_ms,
            self.p99_ms,
            self.max_ms,
            self.requests,
            self.errors,
            self.seconds,
            if self.exhausted { ", single-use requests ran out" } else { "" }
        );
    }

    pub fn append(&self, file: &Path) -> anyhow::Result<()> {
        let mut f = std::fs::OpenOptions::new().create(true).append(true).open(file)?;
        writeln!(f, "{}", serde_json::to_string(self)?)?;
        Ok(())
    }
}

pub fn read_results(file: &Path) -> anyhow::Result<Vec<PhaseResult>> {
    let text = std::fs::read_to_string(file)?;
    text.lines().filter(|l| !l.trim().is_empty()).map(|l| Ok(serde_json::from_str(l)?)).collect()
}

struct Row {
    endpoint: &'static str,
    broker: &'static str,
    reference: &'static str,
    reference_name: &'static str,
    target: f64,
}

const ROWS: [Row; 5] = [
    Row { endpoint: "/token", broker: "broker.token", reference: "node.token-code", reference_name: "node authorization_code", target: 2.0 },
    Row { endpoint: "/token", broker: "broker.token", reference: "node.token", reference_name: "node client_credentials", target: 2.0 },
    Row { endpoint: "/userinfo", broker: "broker.userinfo", reference: "pg.insert", reference_name: "PostgreSQL INSERT tx", target: 0.8 },
    Row { endpoint: "discovery", broker: "broker.discovery", reference: "node.discovery", reference_name: "node-oidc-provider", target: 2.0 },
    Row { endpoint: "/jwks", broker: "broker.jwks", reference: "node.jwks", reference_name: "node-oidc-provider", target: 2.0 },
];

/// The side-by-side table; returns whether every target is met (a row with errors or a
/// missing side fails).
pub fn print_table(results: &[PhaseResult]) -> bool {
    let find = |label: &str| results.iter().rev().find(|r| r.label == label);
    let fmt_rps = |r: Option<&PhaseResult>| r.map_or("—".to_owned(), |r| format!("{:.0}", r.rps));
    let fmt_p99 = |r: Option<&PhaseResult>| r.map_or("—".to_owned(), |r| format!("{:.2} ms", r.p99_ms));
    println!();
    println!(
        "| {:<10} | {:>10} | {:>10} | {:<26} | {:>13} | {:>13} | {:>6} | {:>6} | {:<4} |",
        "endpoint", "broker rps", "broker p99", "reference", "reference rps", "reference p99", "ratio", "target", ""
    );
    println!("|{}|", ["-".repeat(12), "-".repeat(12), "-".repeat(12), "-".repeat(28), "-".repeat(15), "-".repeat(15), "-".repeat(8), "-".repeat(8), "-".repeat(6)].join("|"));
    let mut all_met = true;
    for row in &ROWS {
        let (b, r) = (find(row.broker), find(row.reference));
        let ratio = match (b, r) {
            (Some(b), Some(r)) if r.rps > 0.0 => Some(b.rps / r.rps),
            _ => None,
        };
        let clean = b.is_some_and(|b| b.errors == 0) && r.is_some_and(|r| r.errors == 0);
        let met = clean && ratio.is_some_and(|x| x >= row.target);
        all_met &= met;
        let verdict = match (ratio, clean) {
            (None, _) => "n/a",
            (Some(_), false) => "ERR",
            (Some(_), true) if met => "ok",
            _ => "LOW",
        };
        println!(
            "| {:<10} | {:>10} | {:>10} | {:<26} | {:>13} | {:>13} | {:>6} | {:>6} | {:<4} |",
            row.endpoint,
            fmt_rps(b),
            fmt_p99(b),
            row.reference_name,
            fmt_rps(r),
            fmt_p99(r),
            ratio.map_or("—".to_owned(), |x| format!("{x:.2}×")),
            format!("≥ {}×", row.target),
            verdict
        );
    }
    let with_errors: Vec<&PhaseResult> = results.iter().filter(|r| r.errors > 0).collect();
    if !with_errors.is_empty() {
        println!();
        for r in with_errors {
            println!("{}: {} failed requests (see the log above)", r.label, r.errors);
        }
    }
    all_met
}
