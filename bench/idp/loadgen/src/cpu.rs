//! CPU time of the processes taking part in a phase, by command name, read from
//! `/proc/*/stat` (Linux; elsewhere nothing is reported). Indicative only: every
//! process of that name on the machine is counted, and a process that exits during the
//! phase is not.

use std::collections::BTreeMap;

const WATCHED: [&str; 5] = ["broker", "node", "postgres", "redis-server", "broker-bench"];
/// `/proc` reports CPU time in USER_HZ ticks, 100 per second on Linux.
const TICKS_PER_SECOND: f64 = 100.0;

/// Ticks (user + system) per command name.
pub struct Snapshot(BTreeMap<&'static str, u64>);

impl Snapshot {
    pub fn take() -> Self {
        let mut totals = BTreeMap::new();
        let Ok(dir) = std::fs::read_dir("/proc") else { return Self(totals) };
        for entry in dir.flatten() {
            let name = entry.file_name();
            if !name.to_string_lossy().bytes().all(|b| b.is_ascii_digit()) {
                continue;
            }
            let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else { continue };
            // pid (comm) state ppid … : comm may hold spaces, so split at the last ')'.
            let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else { continue };
            let comm = &stat[open + 1..close];
            let Some(watched) = WATCHED.iter().find(|w| **w == comm) else { continue };
            let fields: Vec<&str> = stat[close + 1..].split_whitespace().collect();
            // After the comm: state is field 3 of the line, utime 14 and stime 15.
            let ticks = |i: usize| fields.get(i - 3).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
            *totals.entry(*watched).or_insert(0) += ticks(14) + ticks(15);
        }
        Self(totals)
    }

    /// CPU µs per request of each command name that used at least half a µs per request
    /// since `before`.
    pub fn per_request(&self, before: &Snapshot, requests: usize) -> String {
        let mut parts = Vec::new();
        for (name, after) in &self.0 {
            let used = after.saturating_sub(before.0.get(name).copied().unwrap_or(0));
            if requests == 0 {
                continue;
            }
            let us = used as f64 / TICKS_PER_SECOND * 1e6 / requests as f64;
            if us >= 0.5 {
                parts.push(format!("{name} {us:.0} µs"));
            }
        }
        parts.join(", ")
    }
}
