//! Throttled diagnostics on stderr: at most one line per second per call site, with a count of
//! what was suppressed. An accept loop hitting EMFILE thousands of times a second must not turn
//! logging into the bottleneck (`docs/contract.md` §2).

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

/// One call site's throttle: the second it last printed, and how many lines it swallowed since.
pub struct Throttle {
    last_sec: AtomicU64,
    suppressed: AtomicU64,
}

impl Throttle {
    pub const fn new() -> Self {
        Throttle {
            last_sec: AtomicU64::new(u64::MAX),
            suppressed: AtomicU64::new(0),
        }
    }

    /// Prints `msg` unless this throttle already printed within the current second. Lock-free
    /// and safe to call from any thread or forked child.
    pub fn warn(&self, msg: std::fmt::Arguments<'_>) {
        let now = seconds_since_start();
        let last = self.last_sec.load(Ordering::Relaxed);
        if last == now
            || self
                .last_sec
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_err()
        {
            self.suppressed.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let skipped = self.suppressed.swap(0, Ordering::Relaxed);
        if skipped > 0 {
            eprintln!("{msg} (and {skipped} more like it)");
        } else {
            eprintln!("{msg}");
        }
    }
}

impl Default for Throttle {
    fn default() -> Self {
        Self::new()
    }
}

fn seconds_since_start() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_secs()
}

/// `warn_throttled!("accept: {e}")`: eprintln!, at most once a second for this call site.
#[macro_export]
macro_rules! warn_throttled {
    ($($arg:tt)*) => {{
        static THROTTLE: $crate::log::Throttle = $crate::log::Throttle::new();
        THROTTLE.warn(format_args!($($arg)*));
    }};
}
