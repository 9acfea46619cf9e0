//! Balanced accept for actix-web's own `HttpServer`
//! ([`run_prefork`](crate::HttpServerExt::run_prefork); [`Server::serve`](crate::Server::serve)
//! asks [`prefork_core::balance`] before each accept, as the other adapters do).
//!
//! actix-server accepts on a thread of its own, in a loop that cannot be asked before each
//! `accept`, so the worker steers it from outside instead: each connection it accepted
//! (`on_connect`, on the actix worker thread) wakes a task on the server's control thread,
//! which pauses actix's accept thread once this worker is over its share while another worker
//! holding fewer waits in accept ([`Balance::should_pause`]), and resumes it once that is no
//! longer so (looked at every millisecond while paused). Paused, the accept thread leaves the
//! shared queue to the other workers: nothing queued is lost or delayed by this worker.
//!
//! Toward the other workers, an actix worker counts as parked in accept whenever its accept
//! thread is not paused (that thread does nothing but wait for connections), and as idle (it
//! does not report its runtime's idle threads); each accepted connection counts as one wake.

use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use actix_web::dev::ServerHandle;
use prefork_core::balance::{Balance, Parked};
use tokio::sync::Notify;

/// How often a paused worker looks again whether it may resume.
const PAUSED_TICK: Duration = Duration::from_millis(1);

/// One worker process's steering of its accept thread.
#[derive(Debug)]
pub(crate) struct Steer {
    balance: Balance,
    /// The server's handle, once it runs.
    handle: OnceLock<ServerHandle>,
    /// Whether the accept thread was told to pause.
    paused: AtomicBool,
    /// Woken when the accept thread was paused.
    paused_now: Notify,
    /// Held while the accept thread is not paused (renewed per accepted connection, which
    /// counts a wake).
    parked: Mutex<Option<Parked>>,
}

impl Steer {
    /// Steering with `balance` (does nothing when it is disabled).
    pub(crate) fn new(balance: Balance) -> Arc<Steer> {
        let parked = balance.is_enabled().then(|| balance.park());
        Arc::new(Steer {
            balance,
            handle: OnceLock::new(),
            paused: AtomicBool::new(false),
            paused_now: Notify::new(),
            parked: Mutex::new(parked),
        })
    }

    /// actix's accept thread handed a connection to a worker thread (called from `on_connect`,
    /// on that worker thread): pauses the accept thread at once if this worker is now over its
    /// share (the command is on its way before this returns).
    pub(crate) fn accepted(&self) {
        if !self.balance.is_enabled() || self.paused.load(Ordering::Acquire) {
            return;
        }
        if self.balance.should_pause() {
            let Some(handle) = self.handle.get() else {
                return;
            };
            if self.paused.swap(true, Ordering::AcqRel) {
                return;
            }
            self.set_parked(false);
            // `pause` sends its command when called; its future only waits for the answer.
            drop(handle.pause());
            self.paused_now.notify_one();
            tracing::trace!(share = ?self.balance.share(), "balance: paused accepting");
        } else {
            let mut parked = self.parked.lock().unwrap_or_else(|e| e.into_inner());
            if parked.is_some() {
                // Drop the old guard after taking the new one: one more wake, still parked.
                let renewed = self.balance.park();
                drop(parked.replace(renewed));
            }
        }
    }

    fn set_parked(&self, on: bool) {
        let mut parked = self.parked.lock().unwrap_or_else(|e| e.into_inner());
        *parked = on.then(|| self.balance.park());
    }

    /// Resumes actix's accept thread whenever this worker paused it and may accept again; runs
    /// until dropped (the drain drops it before it pauses the accept thread for good).
    pub(crate) async fn run(&self, handle: ServerHandle) -> Infallible {
        let _ = self.handle.set(handle.clone());
        if !self.balance.is_enabled() {
            return std::future::pending().await;
        }
        loop {
            if !self.paused.load(Ordering::Acquire) {
                self.paused_now.notified().await;
                continue;
            }
            tokio::time::sleep(PAUSED_TICK).await;
            if !self.balance.should_pause() {
                handle.resume().await;
                self.set_parked(true);
                self.paused.store(false, Ordering::Release);
                tracing::trace!("balance: accepting again");
            }
        }
    }
}

impl Drop for Steer {
    fn drop(&mut self) {
        self.set_parked(false);
    }
}
