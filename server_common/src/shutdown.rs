//! How a server stops (`docs/contract.md` §6): SIGINT or SIGTERM → summary on stdout → exit 0.
//!
//! UNP's servers print their CPU report from inside a SIGINT handler, which is not
//! async-signal-safe (stdio and malloc inside a handler can deadlock). We do the safe version:
//! SIGINT and SIGTERM are *blocked* in every thread, and one dedicated thread waits for them
//! with sigwait(2), then prints the summary from ordinary code and ends the process. The model's
//! own threads never see a signal, so no blocking call of theirs is ever interrupted by one, and
//! the model needs no "should I stop?" flag at all: process exit closes every descriptor.

use std::io::Write;

use nix::sys::signal::{SigHandler, SigSet, SigmaskHow, Signal, pthread_sigmask, signal};

use crate::error::{Context, SetupError};
use crate::report::write_summary;
use crate::stats::Stats;

/// The signals that stop a server.
pub fn stop_signals() -> SigSet {
    let mut set = SigSet::empty();
    set.add(Signal::SIGINT);
    set.add(Signal::SIGTERM);
    set
}

/// SIGPIPE's default action kills the process when it writes to a socket the peer has closed.
/// Rust's runtime already ignores it at start-up, but a server must not rely on a runtime
/// detail: say so explicitly. (Writes also pass MSG_NOSIGNAL.)
pub fn ignore_sigpipe() -> nix::Result<()> {
    // SAFETY: SIG_IGN installs no handler code, so nothing can run in signal context.
    unsafe { signal(Signal::SIGPIPE, SigHandler::SigIgn) }.map(drop)
}

/// Call first in `main`, before any other thread is spawned: blocks SIGINT/SIGTERM in this
/// thread — and so in every thread spawned from it later, which inherits the mask — ignores
/// SIGPIPE, and starts the thread that waits for a stop signal.
///
/// When a signal arrives, `before_report` runs on that thread (forking models stop and reap
/// their children there; any model may return extra summary lines), then the summary is printed
/// and the process exits 0 with `_exit(2)`, without waiting for threads blocked on idle clients.
pub fn exit_on_signal<F>(
    crate_name: &'static str,
    stats: &'static Stats,
    before_report: F,
) -> Result<(), SetupError>
where
    F: FnOnce() -> Vec<(String, String)> + Send + 'static,
{
    ignore_sigpipe().context("cannot ignore SIGPIPE")?;
    let set = stop_signals();
    pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&set), None)
        .context("cannot block SIGINT/SIGTERM")?;
    std::thread::Builder::new()
        .name("signals".into())
        .stack_size(64 * 1024)
        .spawn(move || {
            // sigwait(2) only fails for an invalid set; ours is constant, so treat it as SIGTERM.
            let sig = set.wait().unwrap_or(Signal::SIGTERM);
            let extra = before_report();
            let mut out = std::io::stdout().lock();
            // If stdout is gone there is nobody to tell; exit 0 all the same.
            let _ = write_summary(&mut out, crate_name, stats, sig.as_str(), &extra);
            let _ = out.flush();
            // SAFETY: _exit(2) ends every thread at once without running atexit handlers or
            // destructors that other, still-running threads might race with. Stdout is flushed.
            unsafe { libc::_exit(0) }
        })
        .context("cannot spawn the signal thread")?;
    Ok(())
}

/// In a forked child: restore the default action of SIGINT/SIGTERM and unblock them, so the
/// parent (or Ctrl-C on the terminal's process group) can stop the child with a plain kill(2).
/// The mask and dispositions are inherited across fork; the parent's signal thread is not.
pub fn default_signals_in_child() -> nix::Result<()> {
    let set = stop_signals();
    for sig in set.iter() {
        // SAFETY: SIG_DFL installs no handler code.
        unsafe { signal(sig, SigHandler::SigDfl) }?;
    }
    pthread_sigmask(SigmaskHow::SIG_UNBLOCK, Some(&set), None)
}
