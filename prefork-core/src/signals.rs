//! The master's signal queue: signal handlers only set flags and wake the supervisor's poll.

use std::io::{self, Read};
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use signal_hook::consts::{SIGCHLD, SIGINT, SIGQUIT, SIGTERM};
use signal_hook::SigId;

/// The signals the master acts on.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Pending {
    /// SIGTERM or SIGINT: graceful stop (forced if already stopping).
    pub(crate) stop: bool,
    /// SIGQUIT: immediate stop.
    pub(crate) quit: bool,
    /// SIGCHLD: some worker changed state.
    pub(crate) child: bool,
}

/// Installed for the master's lifetime; dropping it unregisters the handlers.
#[derive(Debug)]
pub(crate) struct MasterSignals {
    ids: Vec<SigId>,
    stop: Arc<AtomicBool>,
    quit: Arc<AtomicBool>,
    child: Arc<AtomicBool>,
    wake_rx: UnixStream,
}

impl MasterSignals {
    pub(crate) fn install() -> io::Result<Self> {
        let (wake_rx, wake_tx) = UnixStream::pair()?;
        wake_rx.set_nonblocking(true)?;
        wake_tx.set_nonblocking(true)?;
        let stop = Arc::new(AtomicBool::new(false));
        let quit = Arc::new(AtomicBool::new(false));
        let child = Arc::new(AtomicBool::new(false));
        let mut this = MasterSignals {
            ids: Vec::new(),
            stop: stop.clone(),
            quit: quit.clone(),
            child: child.clone(),
            wake_rx,
        };
        for (sig, flag) in [
            (SIGTERM, &stop),
            (SIGINT, &stop),
            (SIGQUIT, &quit),
            (SIGCHLD, &child),
        ] {
            // Dropping `this` on an error unregisters what was installed so far.
            this.ids
                .push(signal_hook::flag::register(sig, Arc::clone(flag))?);
            this.ids.push(signal_hook::low_level::pipe::register(
                sig,
                wake_tx.try_clone()?,
            )?);
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
        Pending {
            stop: self.stop.swap(false, Ordering::SeqCst),
            quit: self.quit.swap(false, Ordering::SeqCst),
            child: self.child.swap(false, Ordering::SeqCst),
        }
    }
}

impl Drop for MasterSignals {
    fn drop(&mut self) {
        for id in self.ids.drain(..) {
            signal_hook::low_level::unregister(id);
        }
    }
}
