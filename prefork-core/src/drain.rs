//! The loss-free drain, runtime-agnostic: the bookkeeping every adapter's connections share.
//!
//! Once the worker's shutdown starts, a connection must end **at a request boundary**, never
//! under a client that has sent (or is about to send) a request:
//! - a request in flight is answered, and its response asks the client to close
//!   (`Connection: close` on HTTP/1.1, which the server then honours);
//! - a keep-alive connection with nothing in flight stays open for the drain grace
//!   ([`Worker::drain_grace`](crate::Worker::drain_grace)): a client about to send gets its answer
//!   (with `Connection: close`) instead of a reset; a connection on which nothing at all is read
//!   for a whole grace is closed;
//! - HTTP/2 gets GOAWAY at once (the protocol tells the client which streams were not
//!   processed, so it can retry them safely).
//!
//! [`Drain`] is the worker's side (one per worker): the drain flag, the open-connection count,
//! the request and connection [`Counters`]. [`DrainConn`] is one connection's side, shared by the
//! connection's task, its I/O (every read is activity) and its service (each request in flight).
//! [`DrainConn::drive`] runs a connection future (a hyper connection, say) through the drain
//! with the runtime's own timer.

use std::future::{poll_fn, Future};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Poll, Waker};
use std::time::Duration;

use crate::health::{ConnectionGuard, Counters};
use crate::shutdown::Shutdown;

/// The default header read timeout: 30 s. A request head must arrive whole within it of its
/// first byte (a client that trickles its headers cannot hold a connection forever); an idle
/// keep-alive connection waiting for its next request is the keep-alive timeout's instead.
/// See [`Prefork::header_read_timeout`](crate::Prefork::header_read_timeout).
pub const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// The default idle keep-alive timeout: 75 s, nginx's `keepalive_timeout`.
pub const DEFAULT_KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(75);

/// A worker's drain state: whether the drain has started, the connections still open, and the
/// counters every request and connection is counted in. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Drain {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    shutdown: Shutdown,
    draining: AtomicBool,
    open: AtomicUsize,
    counters: Counters,
    grace: Duration,
    /// Idle keep-alive connections are closed after this long, draining or not.
    idle_timeout: Option<Duration>,
    /// The task waiting in [`Drain::closed`].
    waiter: Mutex<Option<Waker>>,
    /// Open connections' peak: memory goes back to the system after a wave.
    peak: crate::memory::Peak,
}

impl Drain {
    /// The drain of a worker (or a single process) that stops when `shutdown` completes,
    /// keeps idle keep-alive connections open for `grace` once it does, and counts requests and
    /// connections in `counters`.
    pub fn new(shutdown: Shutdown, counters: Counters, grace: Duration) -> Drain {
        Drain {
            inner: Arc::new(Inner {
                shutdown,
                draining: AtomicBool::new(false),
                open: AtomicUsize::new(0),
                counters,
                grace,
                idle_timeout: Some(DEFAULT_KEEPALIVE_TIMEOUT),
                waiter: Mutex::new(None),
                peak: Default::default(),
            }),
        }
    }

    /// Closes a connection that stays idle (no request in flight, nothing read) for this long,
    /// draining or not: `None` keeps idle connections open until the client closes them.
    /// Default: [`DEFAULT_KEEPALIVE_TIMEOUT`] (75 s, nginx's `keepalive_timeout`).
    ///
    /// # Panics
    /// If the drain was already cloned or handed out a connection (set it first).
    pub fn idle_timeout(mut self, timeout: Option<Duration>) -> Drain {
        Arc::get_mut(&mut self.inner)
            .expect("Drain::idle_timeout must be set before the drain is shared")
            .idle_timeout = timeout;
        self
    }

    /// The drain of this worker: its shutdown, counters and
    /// [`drain_grace`](crate::Worker::drain_grace).
    pub fn for_worker(worker: &crate::Worker) -> Drain {
        Drain::new(worker.shutdown(), worker.counters(), worker.drain_grace())
            .idle_timeout(worker.keepalive_timeout())
    }

    /// The former name of [`Drain::for_worker`].
    #[deprecated(since = "0.2.0", note = "renamed to `for_worker`")]
    pub fn for_child(worker: &crate::Worker) -> Drain {
        Drain::for_worker(worker)
    }

    /// Marks the drain as started (the accept loop calls it when the shutdown completes;
    /// connections call it too when they see the shutdown first). Idempotent.
    pub fn start(&self) {
        self.inner.draining.store(true, Ordering::Release);
    }

    /// Whether the drain has started: responses from now on carry `Connection: close`.
    #[inline]
    pub fn is_draining(&self) -> bool {
        self.inner.draining.load(Ordering::Acquire)
    }

    /// The grace an idle keep-alive connection gets once the drain has started.
    pub fn grace(&self) -> Duration {
        self.inner.grace
    }

    /// The shutdown this drain follows.
    pub fn shutdown(&self) -> Shutdown {
        self.inner.shutdown.clone()
    }

    /// The counters requests and connections are counted in.
    pub fn counters(&self) -> &Counters {
        &self.inner.counters
    }

    /// Connections open now (every [`DrainConn`] not yet dropped).
    pub fn open(&self) -> usize {
        self.inner.open.load(Ordering::Acquire)
    }

    /// A new connection: counted as open (in the drain and the counters) until the last clone
    /// of the returned [`DrainConn`] is dropped.
    pub fn connection(&self) -> DrainConn {
        let open = self.inner.open.fetch_add(1, Ordering::AcqRel) + 1;
        self.inner.peak.opened(open);
        DrainConn {
            inner: Arc::new(ConnInner {
                drain: self.clone(),
                in_flight: AtomicU32::new(0),
                activity: AtomicU64::new(0),
                reading: AtomicBool::new(false),
                http2: AtomicBool::new(false),
                _counted: self.inner.counters.connection(),
            }),
        }
    }

    /// Completes once every connection is closed. Bound it with the drain timeout.
    pub async fn closed(&self) {
        poll_fn(|cx| {
            if self.open() == 0 {
                return Poll::Ready(());
            }
            *self.inner.waiter.lock().unwrap_or_else(|e| e.into_inner()) = Some(cx.waker().clone());
            if self.open() == 0 {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        })
        .await
    }

    fn closed_one(&self) {
        let open = self.inner.open.fetch_sub(1, Ordering::AcqRel) - 1;
        self.inner.peak.closed(open);
        if open == 0 {
            if let Some(w) = self
                .inner
                .waiter
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .take()
            {
                w.wake();
            }
        }
    }
}

/// One connection's drain state, shared by its task, its I/O and its service. Cheap to clone
/// (one `Arc`); every method is a relaxed atomic operation or two.
#[derive(Debug, Clone)]
pub struct DrainConn {
    inner: Arc<ConnInner>,
}

#[derive(Debug)]
struct ConnInner {
    drain: Drain,
    in_flight: AtomicU32,
    /// Bumped by every read and every request start and end: "something happened".
    activity: AtomicU64,
    /// A read returned data since the last response was ready: the next request's head has
    /// begun (or a body is being read).
    reading: AtomicBool,
    http2: AtomicBool,
    _counted: ConnectionGuard,
}

impl Drop for ConnInner {
    fn drop(&mut self) {
        self.drain.closed_one();
    }
}

impl DrainConn {
    /// Records that bytes were read from the connection (call it from the I/O wrapper on every
    /// read that returned data): a client that has started sending is never cut off.
    #[inline]
    pub fn on_read(&self) {
        self.inner.activity.fetch_add(1, Ordering::Relaxed);
        self.inner.reading.store(true, Ordering::Relaxed);
    }

    /// Whether a read returned data since the last response was ready (or since the
    /// connection opened): `false` on an idle keep-alive connection waiting for its next
    /// request, `true` once the client has started sending it. A header read timeout runs only
    /// while this is `true`; an idle connection is the keep-alive timeout's.
    #[inline]
    pub fn is_reading(&self) -> bool {
        self.inner.reading.load(Ordering::Relaxed)
    }

    /// Records a request that reached the service (and counts it); `http2` tells the drain to
    /// end this connection with GOAWAY instead of waiting for a request boundary.
    #[inline]
    pub fn request_started(&self, http2: bool) {
        self.inner.drain.inner.counters.request();
        self.inner.in_flight.fetch_add(1, Ordering::Relaxed);
        self.inner.activity.fetch_add(1, Ordering::Relaxed);
        if http2 {
            self.inner.http2.store(true, Ordering::Relaxed);
        }
    }

    /// Records that the response to a request is ready (or the request failed). Returns `true`
    /// if the drain has started: the response must then carry `Connection: close` (HTTP/1.1),
    /// and the connection ends after it.
    #[inline]
    pub fn response_ready(&self) -> bool {
        self.inner.reading.store(false, Ordering::Relaxed);
        self.inner.in_flight.fetch_sub(1, Ordering::Relaxed);
        self.inner.activity.fetch_add(1, Ordering::Relaxed);
        self.inner.drain.is_draining()
    }

    /// The worker's drain.
    pub fn drain(&self) -> &Drain {
        &self.inner.drain
    }

    fn in_flight(&self) -> u32 {
        self.inner.in_flight.load(Ordering::Relaxed)
    }

    fn activity(&self) -> u64 {
        self.inner.activity.load(Ordering::Relaxed)
    }

    /// Drives `conn` (a connection future) to its end through the loss-free drain: until the
    /// shutdown, it just runs; then HTTP/2 gets `graceful` at once (GOAWAY), and an HTTP/1
    /// connection gets `graceful` (hyper: close if idle, else finish the request in flight and
    /// close) only once nothing at all happened on it, and nothing was in flight, for a whole
    /// [`Drain::grace`]. Meanwhile every response carries `Connection: close` (see
    /// [`DrainConn::response_ready`]), which ends the connection at its next request boundary.
    ///
    /// `sleep` is the runtime's timer. The caller bounds the whole drain (the worker stops
    /// waiting after its drain timeout).
    ///
    /// The returned future holds `conn` in place (one copy, never moved again) beside a few
    /// words of its own: it adds nothing to a connection's memory but a clone of this
    /// `DrainConn`, a [`Shutdown`] waiter and, once the connection has been polled, one boxed
    /// timer.
    pub fn drive<C, S, G, T>(&self, conn: C, sleep: S, graceful: G) -> Drive<C, S, G, T>
    where
        C: Future,
        S: FnMut(Duration) -> T,
        G: FnMut(Pin<&mut C>),
        T: Future<Output = ()>,
    {
        Drive {
            conn,
            dc: self.clone(),
            sleep,
            graceful,
            shutdown: self.inner.drain.shutdown(),
            phase: Phase::Serving { idle: None },
        }
    }
}

/// How many quiet checks in a row close an idle keep-alive connection: the timer runs a
/// quarter of the keep-alive timeout, so a connection closes 1 to 1.25 timeouts after it fell
/// silent.
const IDLE_CHECKS: u32 = 4;

/// Where a driven connection is in the drain.
enum Phase<T> {
    /// Not draining; `idle` is the keep-alive timer (a quarter of the timeout), the activity
    /// seen when it was set, and how many of its periods in a row were quiet.
    Serving {
        idle: Option<(u64, u8, Pin<Box<T>>)>,
    },
    /// Draining, HTTP/1: waiting for a whole quiet grace.
    Grace { seen: u64, timer: Pin<Box<T>> },
    /// `graceful` was called: the connection ends on its own.
    Closing,
}

pin_project_lite::pin_project! {
    /// The future of [`DrainConn::drive`]: the connection's output once it has ended.
    #[must_use = "futures do nothing unless polled"]
    pub struct Drive<C, S, G, T> {
        #[pin]
        conn: C,
        dc: DrainConn,
        sleep: S,
        graceful: G,
        shutdown: Shutdown,
        phase: Phase<T>,
    }
}

impl<C, S, G, T> std::fmt::Debug for Drive<C, S, G, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Drive")
            .field("conn", &self.dc)
            .finish_non_exhaustive()
    }
}

impl<C, S, G, T> Future for Drive<C, S, G, T>
where
    C: Future,
    S: FnMut(Duration) -> T,
    G: FnMut(Pin<&mut C>),
    T: Future<Output = ()>,
{
    type Output = C::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> Poll<C::Output> {
        let mut this = self.project();
        if let Poll::Ready(out) = this.conn.as_mut().poll(cx) {
            return Poll::Ready(out);
        }
        let dc = &*this.dc;
        let drain = &dc.inner.drain;
        loop {
            match this.phase {
                Phase::Serving { idle } => {
                    if !drain.is_draining() && Pin::new(&mut *this.shutdown).poll(cx).is_pending() {
                        let Some(timeout) = drain.inner.idle_timeout else {
                            return Poll::Pending;
                        };
                        // The idle keep-alive timeout, checked lazily (nothing is reset per
                        // request): a timer of a quarter of it, and the connection closes after
                        // IDLE_CHECKS quiet quarters in a row, i.e. between 1 and 1.25 timeouts
                        // after the last activity.
                        let step = timeout / IDLE_CHECKS;
                        let sleep = &mut *this.sleep;
                        let (seen, quiet, timer) =
                            idle.get_or_insert_with(|| (dc.activity(), 0, Box::pin(sleep(step))));
                        if timer.as_mut().poll(cx).is_pending() {
                            return Poll::Pending;
                        }
                        let now = dc.activity();
                        if dc.in_flight() == 0 && now == *seen {
                            *quiet += 1;
                            if u32::from(*quiet) >= IDLE_CHECKS {
                                (this.graceful)(this.conn.as_mut());
                                *this.phase = Phase::Closing;
                                continue;
                            }
                        } else {
                            *seen = now;
                            *quiet = 0;
                        }
                        *timer = Box::pin((this.sleep)(step));
                        continue;
                    }
                    drain.start();
                    if dc.inner.http2.load(Ordering::Relaxed) {
                        (this.graceful)(this.conn.as_mut());
                        *this.phase = Phase::Closing;
                    } else {
                        *this.phase = Phase::Grace {
                            seen: dc.activity(),
                            timer: Box::pin((this.sleep)(drain.grace())),
                        };
                    }
                }
                Phase::Grace { seen, timer } => {
                    if timer.as_mut().poll(cx).is_pending() {
                        return Poll::Pending;
                    }
                    let now = dc.activity();
                    if dc.in_flight() == 0 && now == *seen {
                        (this.graceful)(this.conn.as_mut());
                        *this.phase = Phase::Closing;
                    } else {
                        *seen = now;
                        *timer = Box::pin((this.sleep)(drain.grace()));
                    }
                }
                Phase::Closing => {
                    // `graceful` may have made the connection ready to end: poll it again.
                    return this.conn.as_mut().poll(cx);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ShutdownReason;
    use std::task::Context;

    fn noop_cx<R>(f: impl FnOnce(&mut Context<'_>) -> R) -> R {
        let waker = Waker::noop();
        f(&mut Context::from_waker(waker))
    }

    #[test]
    fn counts_connections_and_requests_and_wakes_when_all_closed() {
        let counters = Counters::default();
        let drain = Drain::new(
            Shutdown::new().unwrap(),
            counters.clone(),
            Duration::from_secs(1),
        );
        let a = drain.connection();
        let a2 = a.clone();
        let b = drain.connection();
        assert_eq!((drain.open(), counters.connections()), (2, 2));
        a.request_started(false);
        assert!(!a.response_ready());
        drain.start();
        a.request_started(false);
        assert!(
            a.response_ready(),
            "a response during the drain asks to close"
        );
        assert_eq!(counters.requests(), 2);
        let mut closed = Box::pin(drain.closed());
        noop_cx(|cx| assert!(closed.as_mut().poll(cx).is_pending()));
        drop((a, a2, b));
        assert_eq!((drain.open(), counters.connections()), (0, 0));
        noop_cx(|cx| assert!(closed.as_mut().poll(cx).is_ready()));
    }

    /// A connection future that ends once `graceful` was called on it.
    struct FakeConn {
        closed: bool,
    }
    impl Future for FakeConn {
        type Output = &'static str;
        fn poll(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<&'static str> {
            if self.closed {
                Poll::Ready("closed")
            } else {
                Poll::Pending
            }
        }
    }

    /// A timer that fires when the test says so.
    fn manual_timer(fire: &Arc<AtomicBool>) -> impl Future<Output = ()> {
        let fire = fire.clone();
        poll_fn(move |_| {
            if fire.swap(false, Ordering::SeqCst) {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        })
    }

    #[test]
    fn an_idle_keepalive_connection_is_closed_after_the_idle_timeout() {
        let drain = Drain::new(
            Shutdown::new().unwrap(),
            Counters::default(),
            Duration::from_secs(1),
        )
        .idle_timeout(Some(Duration::from_secs(75)));
        let conn = drain.connection();
        let fire = Arc::new(AtomicBool::new(false));
        let mut fut = Box::pin(conn.drive(
            FakeConn { closed: false },
            |_| manual_timer(&fire),
            |mut c| c.closed = true,
        ));
        noop_cx(|cx| assert!(fut.as_mut().poll(cx).is_pending()));
        // A request during the first quarter: kept, and the count starts again.
        conn.on_read();
        fire.store(true, Ordering::SeqCst);
        noop_cx(|cx| assert!(fut.as_mut().poll(cx).is_pending()));
        // Three quiet quarters: still open.
        for _ in 0..3 {
            fire.store(true, Ordering::SeqCst);
            noop_cx(|cx| assert!(fut.as_mut().poll(cx).is_pending()));
        }
        // The fourth: a whole quiet timeout, closed, though no drain started.
        fire.store(true, Ordering::SeqCst);
        noop_cx(|cx| assert_eq!(fut.as_mut().poll(cx), Poll::Ready("closed")));
        assert!(!drain.is_draining());
    }

    #[test]
    fn an_idle_http1_connection_is_closed_only_after_a_quiet_grace() {
        let shutdown = Shutdown::new().unwrap();
        let drain = Drain::new(
            shutdown.clone(),
            Counters::default(),
            Duration::from_secs(1),
        );
        let conn = drain.connection();
        let fire = Arc::new(AtomicBool::new(false));
        let closes = std::cell::Cell::new(0);
        let mut fut = Box::pin(conn.drive(
            FakeConn { closed: false },
            |_| manual_timer(&fire),
            |mut c| {
                closes.set(closes.get() + 1);
                c.closed = true;
            },
        ));
        noop_cx(|cx| assert!(fut.as_mut().poll(cx).is_pending()));
        shutdown.trigger(ShutdownReason::Requested);
        noop_cx(|cx| assert!(fut.as_mut().poll(cx).is_pending()));
        assert!(drain.is_draining());
        // The client sends during the grace: the grace starts again.
        conn.on_read();
        conn.request_started(false);
        fire.store(true, Ordering::SeqCst);
        noop_cx(|cx| assert!(fut.as_mut().poll(cx).is_pending()));
        assert_eq!(closes.get(), 0, "not closed under a request in flight");
        assert!(conn.response_ready());
        fire.store(true, Ordering::SeqCst);
        noop_cx(|cx| assert!(fut.as_mut().poll(cx).is_pending()));
        assert_eq!(closes.get(), 0, "activity during that grace");
        // A whole quiet grace: closed.
        fire.store(true, Ordering::SeqCst);
        noop_cx(|cx| assert_eq!(fut.as_mut().poll(cx), Poll::Ready("closed")));
        assert_eq!(closes.get(), 1);
    }

    #[test]
    fn http2_gets_goaway_at_once() {
        let shutdown = Shutdown::new().unwrap();
        let drain = Drain::new(
            shutdown.clone(),
            Counters::default(),
            Duration::from_secs(1),
        );
        let conn = drain.connection();
        conn.request_started(true);
        let _ = conn.response_ready();
        let mut fut = Box::pin(conn.drive(
            FakeConn { closed: false },
            |_| std::future::pending::<()>(),
            |mut c| c.closed = true,
        ));
        noop_cx(|cx| assert!(fut.as_mut().poll(cx).is_pending()));
        shutdown.trigger(ShutdownReason::Requested);
        noop_cx(|cx| assert_eq!(fut.as_mut().poll(cx), Poll::Ready("closed")));
    }
}
