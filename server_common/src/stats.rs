//! The counters behind the shutdown summary (`docs/contract.md` §6).
//!
//! They live in one anonymous **shared** mapping (`mmap(MAP_SHARED | MAP_ANONYMOUS)`) made
//! before any fork, so the forking models count correctly without pipes: a child's
//! `fetch_add` lands in the same physical page the parent reads at shutdown. For the threaded
//! and single-process models the mapping behaves like any static. Each worker counts into its
//! own cache line, so two cores serving requests never fight over one counter.

use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicU64, Ordering::Acquire, Ordering::Relaxed, Ordering::Release};
use std::time::Instant;

use nix::sys::mman::{MapFlags, ProtFlags, mmap_anonymous};

/// The most workers a summary can tell apart; `--workers` is capped to it.
pub const MAX_WORKERS: usize = 256;

/// One worker's counters, alone on a 64-byte cache line.
#[repr(C, align(64))]
#[derive(Debug, Default)]
pub struct Counters {
    /// Connections this worker accepted.
    pub accepted: AtomicU64,
    /// HTTP requests answered `200 OK`.
    pub requests: AtomicU64,
    /// HTTP error responses sent (400, 431, 501, 505).
    pub errors: AtomicU64,
    /// Bytes echoed back (echo protocol).
    pub bytes: AtomicU64,
}

impl Counters {
    /// A private set of counters, for tests and tools that run a `Session` outside a server.
    pub fn detached() -> &'static Counters {
        Box::leak(Box::default())
    }
}

/// Everything the summary reports, shared by every thread and forked child of one server.
#[repr(C)]
pub struct Stats {
    /// Connections open right now (all workers), and the most ever open at once.
    live: Padded,
    peak: Padded,
    /// How many worker slots the model uses (1 for models without workers).
    workers: usize,
    has_workers: bool,
    started: Instant,
    slots: [Counters; MAX_WORKERS],
}

#[repr(C, align(64))]
struct Padded(AtomicU64);

impl Stats {
    /// Maps the counters into shared memory and leaks them: they live as long as the process
    /// and are inherited by every child forked after this call. `workers` is `None` for models
    /// without a worker pool (their summary has no per-worker line).
    pub fn new_shared(workers: Option<usize>) -> &'static Stats {
        let size = NonZeroUsize::new(size_of::<Stats>()).expect("Stats is not zero-sized");
        // SAFETY: a fresh anonymous mapping overlaps nothing of ours; we check the result.
        let ptr = unsafe {
            mmap_anonymous(
                None,
                size,
                ProtFlags::PROT_READ | ProtFlags::PROT_WRITE,
                MapFlags::MAP_SHARED,
            )
        }
        .expect("mmap of a few KiB for the counters failed: the machine is out of memory");
        let stats = ptr.cast::<Stats>().as_ptr();
        // SAFETY: the mapping is page-aligned (more than Stats' 64-byte alignment), large enough,
        // and zero-filled by the kernel; all-zero bytes are valid `AtomicU64`s, `usize`s and
        // `bool`s. `Instant` is written with `ptr::write` before any reference exists, so no
        // reference ever sees an unwritten `Instant`. The mapping is never unmapped, so the
        // `'static` borrow stays valid for the life of the process (and of each child).
        unsafe {
            std::ptr::addr_of_mut!((*stats).started).write(Instant::now());
            std::ptr::addr_of_mut!((*stats).workers)
                .write(workers.unwrap_or(1).clamp(1, MAX_WORKERS));
            std::ptr::addr_of_mut!((*stats).has_workers).write(workers.is_some());
            &*stats
        }
    }

    /// The counters of worker `i` (0 for models without workers).
    pub fn worker(&self, i: usize) -> &Counters {
        &self.slots[i]
    }

    /// Counts one accepted connection for worker `i` and marks it live until the guard drops.
    ///
    /// At every instant `peak <= accepted`: the accept is counted first, and the peak is
    /// raised with Release ordering, so a reader that loads the peak with Acquire (see
    /// [`Stats::peak`]) and *then* reads the accept counters sees at least that many accepts —
    /// the summary stays consistent while connections are still arriving.
    pub fn accepted(&'static self, i: usize) -> LiveConn {
        self.slots[i].accepted.fetch_add(1, Relaxed);
        let now = self.live.0.fetch_add(1, Relaxed) + 1;
        self.peak.0.fetch_max(now, Release);
        LiveConn { stats: self }
    }

    pub fn live(&self) -> u64 {
        self.live.0.load(Relaxed)
    }

    /// The most connections open at once so far. Read it *before* the accept counters.
    pub fn peak(&self) -> u64 {
        self.peak.0.load(Acquire)
    }

    pub fn started(&self) -> Instant {
        self.started
    }

    /// The sum of one counter over all workers.
    pub fn total(&self, field: impl Fn(&Counters) -> &AtomicU64) -> u64 {
        self.slots[..self.workers]
            .iter()
            .map(|c| field(c).load(Relaxed))
            .sum()
    }

    /// Per-worker values of one counter, or `None` for models without workers.
    pub fn per_worker(&self, field: impl Fn(&Counters) -> &AtomicU64) -> Option<Vec<u64>> {
        self.has_workers.then(|| {
            self.slots[..self.workers]
                .iter()
                .map(|c| field(c).load(Relaxed))
                .collect()
        })
    }
}

/// A live connection in the counts; dropping it (when the connection closes) decrements
/// "connections open now". Keep it beside the descriptor it counts.
#[derive(Debug)]
#[must_use = "dropping the guard at once marks the connection closed"]
pub struct LiveConn {
    stats: &'static Stats,
}

impl Drop for LiveConn {
    fn drop(&mut self) {
        self.stats.live.0.fetch_sub(1, Relaxed);
    }
}

impl std::fmt::Debug for Stats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stats")
            .field("live", &self.live())
            .field("peak", &self.peak())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_live_and_peak() {
        let s = Stats::new_shared(Some(2));
        let a = s.accepted(0);
        let b = s.accepted(1);
        drop(a);
        let _c = s.accepted(1);
        drop(b);
        assert_eq!(s.live(), 1);
        assert_eq!(s.peak(), 2);
        assert_eq!(s.per_worker(|c| &c.accepted), Some(vec![1, 2]));
        assert_eq!(s.total(|c| &c.accepted), 3);
    }

    #[test]
    fn shared_across_fork() {
        let s = Stats::new_shared(None);
        // SAFETY: the child only does an atomic add and _exit(2), both async-signal-safe, so it
        // is fine even though the test harness has other threads.
        match unsafe { nix::unistd::fork() }.expect("fork") {
            nix::unistd::ForkResult::Child => {
                s.worker(0).requests.fetch_add(5, Relaxed);
                // SAFETY: _exit ends the child without running the parent's atexit handlers.
                unsafe { libc::_exit(0) }
            }
            nix::unistd::ForkResult::Parent { child } => {
                nix::sys::wait::waitpid(child, None).expect("waitpid");
                assert_eq!(s.total(|c| &c.requests), 5);
                assert_eq!(s.per_worker(|c| &c.requests), None);
            }
        }
    }
}
