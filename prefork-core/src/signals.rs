//! The master's signal queue: handlers only count signals and wake the driver's poll.

use std::io::{self, Read};
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use signal_hook::consts::*;
use signal_hook::SigId;

/// Signals whose default action would end the master but which mean nothing to it: logged and
/// ignored, so a stray `kill -USR1` is never an outage.
const IGNORED: [i32; 5] = [SIGUSR1, SIGUSR2, SIGALRM, SIGVTALRM, SIGIO];

/// The signals the master acts on, counted since the last [`MasterSignals::take`].
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct Pending {
    /// SIGTERM or SIGINT: graceful stop (forced if already stopping).
    pub(crate) stop: usize,
    /// SIGQUIT: immediate stop.
    pub(crate) quit: usize,
    /// SIGHUP: rolling reload.
    pub(crate) reload: usize,
    /// SIGTTIN: one worker more.
    pub(crate) more: usize,
    /// SIGTTOU: one worker fewer.
    pub(crate) fewer: usize,
    /// Signals ignored, by number.
    pub(crate) ignored: Vec<i32>,
}

/// Installed for the master's lifetime; dropping it unregisters the handlers.
#[derive(Debug)]
pub(crate) struct MasterSignals {
    ids: Vec<SigId>,
    counts: Vec<(i32, Arc<AtomicUsize>)>,
    wake_rx: UnixStream,
}

impl MasterSignals {
    pub(crate) fn install() -> io::Result<Self> {
        let (wake_rx, wake_tx) = UnixStream::pair()?;
        wake_rx.set_nonblocking(true)?;
        wake_tx.set_nonblocking(true)?;
        let mut this = MasterSignals {
            ids: Vec::new(),
            counts: Vec::new(),
            wake_rx,
        };
        let handled = [SIGTERM, SIGINT, SIGQUIT, SIGHUP, SIGTTIN, SIGTTOU, SIGCHLD];
        for sig in handled.into_iter().chain(IGNORED) {
            let count = Arc::new(AtomicUsize::new(0));
            let c = Arc::clone(&count);
            // SAFETY: the handler only increments an atomic counter, which is async-signal-safe;
            // it allocates nothing and takes no lock.
            let id = unsafe {
                signal_hook::low_level::register(sig, move || {
                    c.fetch_add(1, Ordering::SeqCst);
                })
            }?;
            // Dropping `this` on an error unregisters what was installed so far.
            this.ids.push(id);
            this.ids.push(signal_hook::low_level::pipe::register(
                sig,
                wake_tx.try_clone()?,
            )?);
            this.counts.push((sig, count));
        }
        Ok(this)
    }

    /// Readable when a signal arrived since the last [`MasterSignals::take`].
    pub(crate) fn as_fd(&self) -> BorrowedFd<'_> {
        self.wake_rx.as_fd()
    }

    /// The signals received since the last call.
    pub(crate) fn take(&self) -> Pending {
        let mut buf = [0u8; 64];
        while matches!((&self.wake_rx).read(&mut buf), Ok(n) if n > 0) {}
        let mut p = Pending::default();
        for (sig, count) in &self.counts {
            let n = count.swap(0, Ordering::SeqCst);
            if n == 0 {
                continue;
            }
            match *sig {
                SIGTERM | SIGINT => p.stop += n,
                SIGQUIT => p.quit += n,
                SIGHUP => p.reload += n,
                SIGTTIN => p.more += n,
                SIGTTOU => p.fewer += n,
                SIGCHLD => {}
                other => p.ignored.push(other),
            }
        }
        p
    }
}

impl Drop for MasterSignals {
    fn drop(&mut self) {
        for id in self.ids.drain(..) {
            signal_hook::low_level::unregister(id);
        }
    }
}
