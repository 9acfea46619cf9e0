//! The worker's shutdown notification: a runtime-agnostic future, a blocking wait, and a file
//! descriptor that becomes readable, for servers that poll.

use std::collections::HashMap;
use std::future::Future;
use std::io::Write;
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::net::UnixStream;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::task::{Context, Poll};

use atomic_waker::AtomicWaker;
use std::time::Duration;

/// Why a worker was asked to stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ShutdownReason {
    /// The worker received this signal (SIGTERM from the master, or SIGINT).
    Signal(i32),
    /// The master process is gone: the control channel reached end of file.
    MasterGone,
    /// [`Shutdown::trigger`] was called by the application.
    Requested,
}

/// Completes once the worker should stop: on SIGTERM, SIGINT or the master's death.
///
/// Cheap to clone; every clone observes the same event. Use it as a future in any runtime
/// (`shutdown.clone().await`), block on it with [`Shutdown::wait`], or poll
/// [`Shutdown::as_fd`] in a blocking server's `poll(2)` loop.
///
/// # Cancel safety
/// Dropping the future loses nothing: a new clone completes as soon as the event has happened.
pub struct Shutdown {
    inner: Arc<Inner>,
    /// This waiter's registration: its key and the waker slot `trigger` wakes. A poll after the
    /// first only updates the slot (no lock, no search), so the cost of a poll does not grow
    /// with the number of waiters (one per connection in the adapters).
    slot: Option<(u64, Arc<AtomicWaker>)>,
}

struct Inner {
    /// Set (under `state`'s lock) when triggered: the lock-free fast path of `poll`.
    triggered: AtomicBool,
    state: Mutex<State>,
    cond: Condvar,
    // Becomes readable when triggered: one byte is written to `wake_tx` and never read.
    wake_rx: UnixStream,
    wake_tx: UnixStream,
}

struct State {
    reason: Option<ShutdownReason>,
    next_key: u64,
    wakers: HashMap<u64, Arc<AtomicWaker>>,
}

impl Clone for Shutdown {
    fn clone(&self) -> Self {
        // A clone is a new waiter: it must not share the original's waker slot.
        Shutdown {
            inner: self.inner.clone(),
            slot: None,
        }
    }
}

impl std::fmt::Debug for Shutdown {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shutdown")
            .field("reason", &self.reason())
            .finish()
    }
}

impl Shutdown {
    /// A new, untriggered notification.
    ///
    /// # Errors
    /// Fails only if the process cannot create a socket pair (fd exhaustion).
    pub fn new() -> std::io::Result<Self> {
        let (wake_rx, wake_tx) = UnixStream::pair()?;
        wake_tx.set_nonblocking(true)?;
        Ok(Shutdown {
            inner: Arc::new(Inner {
                triggered: AtomicBool::new(false),
                state: Mutex::new(State {
                    reason: None,
                    next_key: 0,
                    wakers: HashMap::new(),
                }),
                cond: Condvar::new(),
                wake_rx,
                wake_tx,
            }),
            slot: None,
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.inner
            .state
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }

    /// A notification triggered by the first SIGTERM or SIGINT, for a process that runs without
    /// a master (a single-process mode, such as the examples' `--no-prefork` baseline); a second
    /// SIGTERM or SIGINT exits the process at once with status 1, as a second Ctrl+C does to a
    /// master. In a prefork worker use [`Worker::shutdown`](crate::Worker::shutdown) instead,
    /// which also completes on the master's death.
    ///
    /// # Errors
    /// Fails if the signal handlers or their thread cannot be installed.
    pub fn on_signals() -> std::io::Result<Shutdown> {
        let shutdown = Shutdown::new()?;
        shutdown.trigger_on_signals(true)?;
        Ok(shutdown)
    }

    /// Starts a thread that triggers this notification on the first SIGTERM or SIGINT, and
    /// exits the process on the second if `exit_on_second`.
    pub(crate) fn trigger_on_signals(&self, exit_on_second: bool) -> std::io::Result<()> {
        use signal_hook::consts::{SIGINT, SIGTERM};
        let mut signals = signal_hook::iterator::Signals::new([SIGTERM, SIGINT])?;
        let s = self.clone();
        std::thread::Builder::new()
            .name("prefork-signals".into())
            .spawn(move || {
                let mut signals = signals.forever();
                if let Some(sig) = signals.next() {
                    if exit_on_second {
                        tracing::info!(signal = sig, "stop signal: draining");
                    } else {
                        // A worker: the master already logged the stop.
                        tracing::debug!(signal = sig, "stop signal: draining");
                    }
                    s.trigger(ShutdownReason::Signal(sig));
                }
                if exit_on_second {
                    if let Some(sig) = signals.next() {
                        tracing::warn!(signal = sig, "second stop signal: exiting at once");
                        std::process::exit(1);
                    }
                }
            })?;
        Ok(())
    }

    /// Triggers the shutdown (the first reason wins). Returns `true` if this call triggered it.
    pub fn trigger(&self, reason: ShutdownReason) -> bool {
        let wakers = {
            let mut state = self.lock();
            if state.reason.is_some() {
                return false;
            }
            state.reason = Some(reason);
            self.inner.triggered.store(true, Ordering::Release);
            std::mem::take(&mut state.wakers)
        };
        self.inner.cond.notify_all();
        let _ = (&self.inner.wake_tx).write(&[1]);
        for waker in wakers.into_values() {
            waker.wake();
        }
        true
    }

    /// Whether the shutdown has been triggered, and why.
    pub fn reason(&self) -> Option<ShutdownReason> {
        self.lock().reason
    }

    /// Whether the shutdown has been triggered.
    pub fn is_triggered(&self) -> bool {
        self.inner.triggered.load(Ordering::Acquire)
    }

    /// Blocks the calling thread until the shutdown is triggered.
    pub fn wait(&self) -> ShutdownReason {
        let mut state = self.lock();
        loop {
            if let Some(reason) = state.reason {
                return reason;
            }
            state = self
                .inner
                .cond
                .wait(state)
                .unwrap_or_else(|poison| poison.into_inner());
        }
    }

    /// Blocks at most `timeout`; `None` if the shutdown was not triggered in that time.
    pub fn wait_timeout(&self, timeout: Duration) -> Option<ShutdownReason> {
        let state = self.lock();
        let (state, _) = self
            .inner
            .cond
            .wait_timeout_while(state, timeout, |s| s.reason.is_none())
            .unwrap_or_else(|poison| poison.into_inner());
        state.reason
    }

    /// A descriptor that becomes readable (and stays readable) once the shutdown is triggered.
    ///
    /// For blocking servers: `poll(2)` it together with the listener, so `accept` never has to
    /// be interrupted. Do not read from it.
    pub fn as_fd(&self) -> BorrowedFd<'_> {
        self.inner.wake_rx.as_fd()
    }
}

impl Future for Shutdown {
    type Output = ShutdownReason;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<ShutdownReason> {
        let this = self.get_mut();
        if let Some((_, slot)) = &this.slot {
            // Registered: update the slot, then look again (a trigger that raced the
            // registration has set the flag before it woke the slots).
            slot.register(cx.waker());
            if !this.inner.triggered.load(Ordering::Acquire) {
                return Poll::Pending;
            }
        }
        let inner = this.inner.clone();
        let mut state = inner
            .state
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        if let Some(reason) = state.reason {
            return Poll::Ready(reason);
        }
        if this.slot.is_none() {
            let key = state.next_key;
            state.next_key += 1;
            let slot = Arc::new(AtomicWaker::new());
            slot.register(cx.waker());
            state.wakers.insert(key, slot.clone());
            this.slot = Some((key, slot));
        }
        Poll::Pending
    }
}

impl Drop for Shutdown {
    fn drop(&mut self) {
        if let Some((key, _)) = &self.slot {
            let key = *key;
            self.lock().wakers.remove(&key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::task::{Wake, Waker};

    struct Flag(std::sync::atomic::AtomicBool);
    impl Wake for Flag {
        fn wake(self: Arc<Self>) {
            self.0.store(true, std::sync::atomic::Ordering::SeqCst);
        }
    }

    #[test]
    fn future_wakes_on_trigger_and_first_reason_wins() {
        let s = Shutdown::new().unwrap();
        let mut fut = s.clone();
        let flag = Arc::new(Flag(false.into()));
        let waker = Waker::from(flag.clone());
        let mut cx = Context::from_waker(&waker);
        assert!(Pin::new(&mut fut).poll(&mut cx).is_pending());
        assert!(s.trigger(ShutdownReason::MasterGone));
        assert!(!s.trigger(ShutdownReason::Requested));
        assert!(flag.0.load(std::sync::atomic::Ordering::SeqCst));
        assert_eq!(
            Pin::new(&mut fut).poll(&mut cx),
            Poll::Ready(ShutdownReason::MasterGone)
        );
        assert_eq!(s.wait(), ShutdownReason::MasterGone);
    }

    #[test]
    fn blocking_wait_and_fd_see_a_trigger_from_another_thread() {
        let s = Shutdown::new().unwrap();
        assert_eq!(s.wait_timeout(Duration::from_millis(10)), None);
        let t = {
            let s = s.clone();
            std::thread::spawn(move || s.trigger(ShutdownReason::Signal(15)))
        };
        assert_eq!(s.wait(), ShutdownReason::Signal(15));
        t.join().unwrap();
        let mut fds = [nix::poll::PollFd::new(
            s.as_fd(),
            nix::poll::PollFlags::POLLIN,
        )];
        assert_eq!(nix::poll::poll(&mut fds, 0u16).unwrap(), 1);
    }

    #[test]
    fn a_repoll_with_another_waker_is_the_one_woken_among_many_waiters() {
        let s = Shutdown::new().unwrap();
        let first = Arc::new(Flag(false.into()));
        let second = Arc::new(Flag(false.into()));
        let others = Waker::from(Arc::new(Flag(false.into())));
        let mut waiters: Vec<Shutdown> = (0..1000).map(|_| s.clone()).collect();
        for w in &mut waiters {
            assert!(Pin::new(w)
                .poll(&mut Context::from_waker(&others))
                .is_pending());
        }
        let mut fut = s.clone();
        let (w1, w2) = (Waker::from(first.clone()), Waker::from(second.clone()));
        assert!(Pin::new(&mut fut)
            .poll(&mut Context::from_waker(&w1))
            .is_pending());
        assert!(Pin::new(&mut fut)
            .poll(&mut Context::from_waker(&w2))
            .is_pending());
        assert!(s.trigger(ShutdownReason::Requested));
        assert!(second.0.load(std::sync::atomic::Ordering::SeqCst));
        assert!(!first.0.load(std::sync::atomic::Ordering::SeqCst));
        assert_eq!(
            Pin::new(&mut fut).poll(&mut Context::from_waker(&w2)),
            Poll::Ready(ShutdownReason::Requested)
        );
        assert!(s.is_triggered());
    }

    #[test]
    fn dropped_futures_leave_no_wakers_behind() {
        let s = Shutdown::new().unwrap();
        let waker = Waker::from(Arc::new(Flag(false.into())));
        let mut cx = Context::from_waker(&waker);
        for _ in 0..100 {
            let mut fut = s.clone();
            assert!(Pin::new(&mut fut).poll(&mut cx).is_pending());
            assert!(Pin::new(&mut fut).poll(&mut cx).is_pending());
        }
        assert!(s.lock().wakers.is_empty());
    }
}
