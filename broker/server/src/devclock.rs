//! A development-only clock for black-box tests of time limits (a code after 60 s, a
//! flow after 5 minutes): the system time plus a number of seconds read from the file
//! named by `AC_DEV_CLOCK_OFFSET_FILE`. Refused in production.

use broker_core::time::Clock;
use broker_core::Timestamp;
use std::path::PathBuf;

pub struct OffsetFileClock {
    pub path: PathBuf,
}

impl Clock for OffsetFileClock {
    fn now(&self) -> Timestamp {
        let offset = std::fs::read_to_string(&self.path).ok().and_then(|s| s.trim().parse::<i64>().ok()).unwrap_or(0);
        Timestamp::now().plus_seconds(offset)
    }
}
