//! The board: a page of shared memory where every event-loop thread, in every client process,
//! posts how far it has got, and where the top process posts "go" and "stop".
//!
//! It is mapped `MAP_SHARED | MAP_ANONYMOUS` before any fork, so parent and children see the
//! same bytes; all fields are atomics, which work across processes as across threads. One
//! mechanism thus serves one process or many: the start barrier (every thread posts `ready`
//! once its connections are open; the top process then posts the common start time in `go`),
//! the one-line progress status, and Ctrl-C.

use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use nix::sys::mman::{MapFlags, ProtFlags, mmap_anonymous};

/// What the top process posts for everyone.
#[repr(C, align(64))]
pub struct Header {
    /// The instant (clock ns, never 0) at which the transfer phase begins; 0 until then.
    pub go: AtomicU64,
    /// Non-zero: every thread stops now and reports what it has (Ctrl-C, or no connection).
    pub stop: AtomicU64,
}

/// What one event-loop thread posts. Only that thread writes it (relaxed stores, once per
/// loop iteration); the top process reads it. A cache line each, so threads never contend.
#[repr(C, align(64))]
pub struct Slot {
    /// 1 once this thread's initial connections are all established or given up.
    pub ready: AtomicU64,
    /// 1 once the thread has finished (also if it panicked).
    pub done: AtomicU64,
    pub established: AtomicU64,
    pub connects: AtomicU64,
    pub messages: AtomicU64,
    pub errors: AtomicU64,
}

pub struct Board {
    pub header: &'static Header,
    pub slots: &'static [Slot],
}

impl Board {
    /// Maps a board for `n` threads in all. Lives until the process exits (never unmapped).
    pub fn new(n: usize) -> nix::Result<Board> {
        let len = size_of::<Header>() + n * size_of::<Slot>();
        let len = NonZeroUsize::new(len).unwrap_or(NonZeroUsize::MIN); // Header alone is 64 bytes
        // SAFETY: a fresh anonymous mapping at an address of the kernel's choosing overlaps
        // nothing of ours. It is zero-filled and page-aligned, and zero is a valid value of
        // every field (all are AtomicU64), so the casts below produce valid references. It is
        // never unmapped, so `'static` holds; it is shared with children forked later, which is
        // sound because atomics are the only access.
        unsafe {
            let p = mmap_anonymous(
                None,
                len,
                ProtFlags::PROT_READ | ProtFlags::PROT_WRITE,
                MapFlags::MAP_SHARED,
            )?;
            let header = &*p.as_ptr().cast::<Header>();
            let first = p
                .as_ptr()
                .cast::<u8>()
                .add(size_of::<Header>())
                .cast::<Slot>();
            Ok(Board {
                header,
                slots: std::slice::from_raw_parts(first, n),
            })
        }
    }

    /// The common start time, once posted.
    pub fn go(&self) -> Option<u64> {
        match self.header.go.load(Relaxed) {
            0 => None,
            t => Some(t),
        }
    }

    pub fn stopped(&self) -> bool {
        self.header.stop.load(Relaxed) != 0
    }

    pub fn stop(&self) {
        self.header.stop.store(1, Relaxed);
    }

    /// Sums one field over all slots.
    pub fn sum(&self, field: impl Fn(&Slot) -> &AtomicU64) -> u64 {
        self.slots.iter().map(|s| field(s).load(Relaxed)).sum()
    }

    pub fn all(&self, field: impl Fn(&Slot) -> &AtomicU64) -> bool {
        self.slots.iter().all(|s| field(s).load(Relaxed) != 0)
    }
}

/// Sets `slot.done` when dropped: a thread that panics still counts as finished, so the top
/// process never waits for it forever.
pub struct DoneOnDrop<'a>(pub &'a Slot);

impl Drop for DoneOnDrop<'_> {
    fn drop(&mut self) {
        self.0.done.store(1, Relaxed);
    }
}
