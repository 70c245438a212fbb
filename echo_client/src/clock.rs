//! One clock for the whole run: nanoseconds since the run began, on CLOCK_MONOTONIC.
//!
//! `Instant` reads CLOCK_MONOTONIC, which is system-wide on Linux, and a forked child inherits
//! the parent's base `Instant`; so a time taken in any thread of any client process is
//! comparable with every other. That is what lets the parent release all processes' transfer
//! phases at one shared instant (the open loop's schedule is computed from it).

use std::sync::OnceLock;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

static BASE: OnceLock<Instant> = OnceLock::new();
/// The wall-clock time (Unix seconds) read beside [`BASE`], to place the run's instants on the
/// calendar for a report (`transfer.started_unix_s`): the harness lines them up with its own
/// samples of the server.
static WALL_BASE: OnceLock<f64> = OnceLock::new();

/// Fixes the clock's origin. Call once in `main`, before any fork or thread.
pub fn start() {
    BASE.get_or_init(Instant::now);
    WALL_BASE.get_or_init(|| {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64())
    });
}

/// The wall-clock time (Unix seconds) of the instant `ns` of this clock. Good to the
/// microseconds between the two reads in [`start`] (and to any step of the wall clock since):
/// enough to line a phase of seconds up with another process's samples.
pub fn unix_at(ns: u64) -> f64 {
    WALL_BASE.get().copied().unwrap_or(0.0) + secs(ns)
}

/// Nanoseconds since [`start`]: a vDSO clock_gettime(2), about 20 ns.
#[inline]
pub fn now() -> u64 {
    BASE.get_or_init(Instant::now).elapsed().as_nanos() as u64
}

pub const NS_PER_SEC: u64 = 1_000_000_000;

/// Seconds as f64, for reports.
pub fn secs(ns: u64) -> f64 {
    ns as f64 / NS_PER_SEC as f64
}

/// The wall-clock time as RFC 3339 UTC (`2025-11-22T15:45:00Z`), for the report's
/// `started_at`. Hand-rolled (days → civil date, H. Hinnant's algorithm) to spare a dependency.
pub fn utc_now_rfc3339() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    rfc3339(secs)
}

fn rfc3339(unix: u64) -> String {
    let (days, rem) = ((unix / 86_400) as i64, unix % 86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn rfc3339_dates() {
        assert_eq!(super::rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(super::rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(super::rfc3339(1_763_826_300), "2025-11-22T15:45:00Z");
    }
}
