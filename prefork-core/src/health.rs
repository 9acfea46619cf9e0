//! The worker's side of health reporting: counters the adapters keep, and the heartbeat that
//! carries them to the master from inside the worker's event loop.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::worker::Control;

/// The default interval between two heartbeats of a worker.
pub const DEFAULT_HEARTBEAT_INTERVAL: Duration = Duration::from_secs(1);

/// The heartbeat interval for a watchdog timeout: 1 s, or a quarter of a shorter timeout.
pub(crate) fn heartbeat_interval(worker_timeout: Option<Duration>) -> Duration {
    match worker_timeout {
        Some(t) => (t / 4).clamp(Duration::from_millis(10), DEFAULT_HEARTBEAT_INTERVAL),
        None => DEFAULT_HEARTBEAT_INTERVAL,
    }
}

#[derive(Debug, Default)]
struct CountersInner {
    requests: AtomicU64,
    connections: AtomicU64,
    /// The worker's slot in the master's balance table: open connections are mirrored there.
    balance: crate::balance::Balance,
}

/// A worker's request and connection counters, reported to the master with each heartbeat.
///
/// Cheap to clone (one `Arc`); counting is one relaxed atomic add, nothing is sent per request.
/// Adapters call [`Counters::request`] once per request and hold a [`ConnectionGuard`] per open
/// connection.
#[derive(Debug, Clone, Default)]
pub struct Counters(Arc<CountersInner>);

impl Counters {
    /// Counters whose open connections are also counted in the balance table.
    pub(crate) fn with_balance(balance: crate::balance::Balance) -> Counters {
        Counters(Arc::new(CountersInner {
            balance,
            ..CountersInner::default()
        }))
    }

    /// Counts one request.
    #[inline]
    pub fn request(&self) {
        self.0.requests.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts an open connection until the returned guard is dropped.
    #[inline]
    pub fn connection(&self) -> ConnectionGuard {
        self.0.connections.fetch_add(1, Ordering::Relaxed);
        self.0.balance.opened();
        ConnectionGuard(self.clone())
    }

    /// Requests served so far by this worker.
    pub fn requests(&self) -> u64 {
        self.0.requests.load(Ordering::Relaxed)
    }

    /// Connections open now.
    pub fn connections(&self) -> u64 {
        self.0.connections.load(Ordering::Relaxed)
    }
}

/// An open connection, counted by [`Counters::connection`] until dropped.
#[derive(Debug)]
#[must_use = "the connection is counted only while the guard lives"]
pub struct ConnectionGuard(Counters);

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        self.0 .0.connections.fetch_sub(1, Ordering::Relaxed);
        self.0 .0.balance.closed();
    }
}

/// Sends the worker's heartbeat, with its counters, to the master.
///
/// Run it **inside the worker's event loop** (a task on its runtime, or the accept loop of a
/// thread-based server): the master's watchdog treats a worker whose heartbeats stop for longer
/// than [`Prefork::worker_timeout`](crate::Prefork::worker_timeout) as hung and replaces it, so a
/// heartbeat from a separate thread would hide exactly the failure it exists to detect.
///
/// ```no_run
/// # async fn sleep(_: std::time::Duration) {}
/// # async fn example(child: &prefork_core::Worker) {
/// let heartbeat = child.heartbeat();
/// // e.g. tokio::spawn(async move { ... }) on the worker's runtime:
/// loop {
///     sleep(heartbeat.interval()).await;
///     heartbeat.beat();
/// }
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct Heartbeat {
    control: Option<Arc<Control>>,
    counters: Counters,
    interval: Duration,
}

impl Heartbeat {
    pub(crate) fn new(
        control: Option<Arc<Control>>,
        counters: Counters,
        interval: Duration,
    ) -> Self {
        Heartbeat {
            control,
            counters,
            interval,
        }
    }

    /// How often to call [`Heartbeat::beat`].
    pub fn interval(&self) -> Duration {
        self.interval
    }

    /// The counters this heartbeat reports.
    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    /// Sends one heartbeat with the current counters. Never blocks: if the master is not
    /// reading (it is stopped, or gone), the beat is dropped.
    pub fn beat(&self) {
        if let Some(control) = &self.control {
            control.heartbeat(self.counters.requests(), self.counters.connections());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_count_requests_and_open_connections() {
        let c = Counters::default();
        c.request();
        c.request();
        let a = c.connection();
        let b = c.clone().connection();
        assert_eq!((c.requests(), c.connections()), (2, 2));
        drop(a);
        assert_eq!(c.connections(), 1);
        drop(b);
        assert_eq!(c.connections(), 0);
    }
}
