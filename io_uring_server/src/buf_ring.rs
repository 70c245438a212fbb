//! Support code for lesson 13, not its model: the provided-buffer ring every recv draws its
//! buffer from — the `struct io_uring_buf` entries, their page-aligned allocation, their
//! registration with the ring (io_uring_register_buf_ring(3); liburing's
//! io_uring_setup_buf_ring(3) does the same in C) and the tail we bump to hand a buffer back.
//! What the model needs of it (`main.rs`): a recv names this pool (`BUFFER_SELECT`, group
//! [`BGID`]) instead of a buffer, so the kernel takes one only once data has arrived, and an
//! idle connection holds none.

use std::alloc::{Layout, alloc_zeroed};
use std::sync::atomic::{AtomicU16, Ordering};

use io_uring::IoUring;
use nix::errno::Errno;
use server_common::{Context, SetupError};

/// The recv buffer pool: BUFS buffers (a power of two) of BUF_SIZE bytes, 4 MiB in all.
pub const BUFS: u16 = 1024;
pub const BUF_SIZE: usize = 4096;
/// The pool's buffer group id, named by every recv.
pub const BGID: u16 = 0;

/// `struct io_uring_buf`: one entry of the provided-buffer ring (io_uring_register_buf_ring(3)).
#[repr(C)]
struct BufEntry {
    addr: u64,
    len: u32,
    bid: u16,
    resv: u16,
}

/// The pool every recv takes its buffer from: a ring of entries we fill and the kernel empties.
/// A buffer in the ring is the kernel's — it may write into it at any moment; a completion hands
/// one to us, with the bytes received, until `give_back`. The memory is a function of the
/// pool's size, not of the number of connections: a recv waiting on an idle connection holds no
/// buffer (were it to bring its own, 19,000 idle clients would pin 74 MiB).
pub struct Pool {
    entries: *mut BufEntry,
    /// The ring's tail, which we advance and the kernel reads: it overlays entry 0's `resv`.
    tail: &'static AtomicU16,
    next_tail: u16,
    bufs: *mut u8,
}

impl Pool {
    pub fn new(ring: &IoUring) -> Result<Pool, SetupError> {
        // The entries must be page aligned. Leaked with the buffers: neither is ever freed.
        let layout = Layout::from_size_align(usize::from(BUFS) * size_of::<BufEntry>(), 4096)
            .expect("a constant layout: non-zero size, power-of-two alignment");
        // SAFETY: the layout's size is not zero.
        let entries = unsafe { alloc_zeroed(layout) }.cast::<BufEntry>();
        let bufs = Box::leak(vec![0u8; usize::from(BUFS) * BUF_SIZE].into_boxed_slice());
        if entries.is_null() {
            return Err(std::io::Error::from(std::io::ErrorKind::OutOfMemory))
                .context("cannot allocate the buffer ring");
        }
        // SAFETY: `entries` is page aligned, zeroed and BUFS entries long, and it is leaked, as
        // are the buffers: both stay valid until the process exits, longer than the ring.
        unsafe {
            ring.submitter()
                .register_buf_ring_with_flags(entries as u64, BUFS, BGID, 0)
        }
        .context("cannot register the buffer ring")?;
        // SAFETY: entry 0 lives as long as the process; u16 and AtomicU16 have the same size
        // and alignment, and from now on the tail is only ever written with atomic stores.
        let tail = unsafe { &*std::ptr::addr_of!((*entries).resv).cast::<AtomicU16>() };
        let mut pool = Pool {
            entries,
            tail,
            next_tail: 0,
            bufs: bufs.as_mut_ptr(),
        };
        (0..BUFS).for_each(|bid| pool.give_back(Some(bid)));
        Ok(pool)
    }

    /// Hands buffer `bid` — if a completion brought one — back to the kernel: from the store
    /// below on, any recv may write into it.
    pub fn give_back(&mut self, bid: Option<u16>) {
        let Some(bid) = bid else { return };
        assert!(bid < BUFS, "the kernel names only buffers we gave it");
        let i = usize::from(self.next_tail % BUFS);
        // SAFETY: i < BUFS, inside the array. The kernel reads only entries between its head and
        // the published tail; entry i lies past the tail (the ring holds at most BUFS buffers
        // and `bid` is out of it), so nobody else touches it. Writing fields through the raw
        // pointer makes no reference, and leaves `resv` — the tail, in entry 0 — alone.
        unsafe {
            let e = self.entries.add(i);
            (*e).addr = self.bufs.add(usize::from(bid) * BUF_SIZE) as u64;
            (*e).len = BUF_SIZE as u32;
            (*e).bid = bid;
        }
        self.next_tail = self.next_tail.wrapping_add(1);
        // Release: the kernel sees the entry's fields before it sees the tail that covers them.
        self.tail.store(self.next_tail, Ordering::Release);
    }

    /// What a recv completion brought: the bytes the kernel put in buffer `bid` (empty at EOF),
    /// or its error.
    ///
    /// # Safety
    /// `res` and `bid` come from one recv completion, and `bid` has not been given back since.
    pub unsafe fn received(&self, res: i32, bid: Option<u16>) -> Result<&[u8], Errno> {
        let (len, bid) = match (usize::try_from(res), bid) {
            (Ok(0), _) => return Ok(&[]),
            (Ok(len), Some(bid)) => (len, bid),
            (Ok(_), None) => return Err(Errno::EIO), // cannot be: BUFFER_SELECT names the buffer
            (Err(_), _) => return Err(Errno::from_raw(-res)),
        };
        assert!(
            bid < BUFS && len <= BUF_SIZE,
            "a completion within its buffer"
        );
        // SAFETY: the kernel wrote these bytes and then let go of the buffer: it cannot pick it
        // again before `give_back`, which needs `&mut self` and so waits for this borrow to end.
        Ok(unsafe { std::slice::from_raw_parts(self.bufs.add(usize::from(bid) * BUF_SIZE), len) })
    }
}
