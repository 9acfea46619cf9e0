//! The worker's side of health reporting: counters the adapters keep, and the heartbeat that
//! carries them to the master from inside the worker's event loop.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::worker::Control;

/// The default interval between two heartbeats of a worker.
pub const DEFAULT_HEARTBEAT_INTERVAL: Duration = Duration::from_secs(1);

/// The [`Heartbeat::interval`] when no heartbeat is needed ([`Prefork::stats`](crate::Prefork::stats)
/// off and no watchdog): [`Heartbeat::beat`] then sends nothing, and a heartbeat loop written as
/// documented wakes up once an hour for nothing instead of once a second.
pub const IDLE_HEARTBEAT_INTERVAL: Duration = Duration::from_secs(3600);

/// The heartbeat interval for a watchdog timeout: 1 s, or a quarter of a shorter timeout.
pub(crate) fn heartbeat_interval(worker_timeout: Option<Duration>) -> Duration {
    match worker_timeout {
        Some(t) => (t / 4).clamp(Duration::from_millis(10), DEFAULT_HEARTBEAT_INTERVAL),
        None => DEFAULT_HEARTBEAT_INTERVAL,
    }
}

#[derive(Debug)]
struct CountersInner {
    /// `false`: [`Prefork::stats`](crate::Prefork::stats) is off and nothing is counted.
    enabled: bool,
    requests: AtomicU64,
    connections: AtomicU64,
    /// The worker's slot in the master's balance table: open connections are mirrored there.
    balance: crate::balance::Balance,
}

impl Default for CountersInner {
    fn default() -> Self {
        CountersInner {
            enabled: true,
            requests: AtomicU64::new(0),
            connections: AtomicU64::new(0),
            balance: crate::balance::Balance::disabled(),
        }
    }
}

/// A worker's request and connection counters, reported to the master with each heartbeat.
///
/// Cheap to clone (one `Arc`); counting is one relaxed atomic add, nothing is sent per request.
/// Adapters call [`Counters::request`] once per request and hold a [`ConnectionGuard`] per open
/// connection. With [`Prefork::stats`](crate::Prefork::stats) off the worker's counters are
/// [`Counters::disabled`]: the same calls then count nothing (one predictable branch each).
#[derive(Debug, Clone, Default)]
pub struct Counters(Arc<CountersInner>);

impl Counters {
    /// Counters that count nothing: [`Counters::requests`] and [`Counters::connections`] stay 0.
    /// A worker gets these when [`Prefork::stats`](crate::Prefork::stats) is off.
    pub fn disabled() -> Counters {
        Counters(Arc::new(CountersInner {
            enabled: false,
            ..CountersInner::default()
        }))
    }

    /// Counters (counting, or [`disabled`](Counters::disabled) with `enabled` false) whose open
    /// connections are also counted in the balance table, which works either way.
    pub(crate) fn with_balance(balance: crate::balance::Balance, enabled: bool) -> Counters {
        Counters(Arc::new(CountersInner {
            enabled,
            balance,
            ..CountersInner::default()
        }))
    }

    /// Whether these counters count (`false` for [`Counters::disabled`]).
    pub fn is_enabled(&self) -> bool {
        self.0.enabled
    }

    /// Counts one request.
    #[inline]
    pub fn request(&self) {
        if self.0.enabled {
            self.0.requests.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Counts an open connection until the returned guard is dropped.
    #[inline]
    pub fn connection(&self) -> ConnectionGuard {
        if !self.0.enabled && !self.0.balance.is_enabled() {
            return ConnectionGuard(None);
        }
        if self.0.enabled {
            self.0.connections.fetch_add(1, Ordering::Relaxed);
        }
        self.0.balance.opened();
        ConnectionGuard(Some(self.clone()))
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
pub struct ConnectionGuard(Option<Counters>);

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        if let Some(c) = &self.0 {
            if c.0.enabled {
                c.0.connections.fetch_sub(1, Ordering::Relaxed);
            }
            c.0.balance.closed();
        }
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

    /// How often to call [`Heartbeat::beat`]: [`IDLE_HEARTBEAT_INTERVAL`] when the beats go
    /// nowhere (see [`Heartbeat::is_enabled`]).
    pub fn interval(&self) -> Duration {
        self.interval
    }

    /// Whether [`Heartbeat::beat`] sends anything: `false` without a master
    /// ([`Worker::standalone`](crate::Worker::standalone)) and when the master needs no heartbeat
    /// ([`Prefork::stats`](crate::Prefork::stats) off and
    /// [`Prefork::worker_timeout`](crate::Prefork::worker_timeout) `None`). A server may then
    /// skip its heartbeat task altogether.
    pub fn is_enabled(&self) -> bool {
        self.control.is_some()
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

    #[test]
    fn disabled_counters_count_nothing() {
        let c = Counters::disabled();
        assert!(!c.is_enabled());
        c.request();
        let a = c.connection();
        assert_eq!((c.requests(), c.connections()), (0, 0));
        drop(a);
        assert_eq!(c.connections(), 0);
    }
}
