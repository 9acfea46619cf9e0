//! The worker's side of prefork inside the actix app: the middleware that counts requests, ends
//! keep-alive connections at a request boundary once the drain has started, tells the drain
//! grace which connections have a request in progress, and runs the heartbeat on each actix
//! worker thread.
//!
//! The app factory returns the user's `App`, whose middleware type the adapter cannot change:
//! the user adds [`PreforkMiddleware`] with `App::wrap`. What the adapter can do around the app
//! it does there: every connection gets its [`DrainConn`](prefork_core::DrainConn) (open
//! connections are counted with or without the middleware) and its place in the drain grace's
//! books ([`crate::idle`]), from `Server::serve`'s accept loop or `run_prefork`'s `on_connect`.

use std::cell::Cell;
use std::fmt;
use std::future::{ready, Future, Ready};
use std::pin::Pin;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use actix_http::ConnectionType;
use actix_web::body::{BodySize, MessageBody};
use actix_web::dev::{Service, ServiceRequest, ServiceResponse, Transform};
use actix_web::http::Version;
use actix_web::web::Bytes;
use prefork_core::{Drain, DrainConn, Heartbeat};

use crate::idle::{Busy, ConnState};

/// One connection's drain state, stored in actix's connection data (`on_connect_ext` under
/// `Server::serve`, `on_connect` under `run_prefork`).
pub(crate) struct PreforkConn {
    pub(crate) drain: DrainConn,
    /// The drain grace's state of this connection (`None`: this thread runs no drain task).
    pub(crate) idle: Option<Rc<ConnState>>,
}

/// The worker process's state the middleware reads (one per process, set by
/// `Server::serve` or `run_prefork` before the app is built).
#[derive(Debug)]
pub(crate) struct WorkerState {
    pub(crate) drain: Drain,
    heartbeat: Option<Heartbeat>,
    pulse: Pulse,
}

static CURRENT: Mutex<Option<Arc<WorkerState>>> = Mutex::new(None);

thread_local! {
    /// The worker state whose heartbeat task this thread runs (its address), if any.
    static BEATING_FOR: Cell<usize> = const { Cell::new(0) };
}

impl WorkerState {
    /// Installs the state of this worker process, for every app the middleware wraps from now.
    pub(crate) fn install(
        drain: Drain,
        heartbeat: Option<Heartbeat>,
        threads: usize,
    ) -> Arc<WorkerState> {
        let state = Arc::new(WorkerState {
            drain,
            heartbeat,
            pulse: Pulse::new(threads),
        });
        *CURRENT.lock().unwrap_or_else(|e| e.into_inner()) = Some(state.clone());
        state
    }

    fn current() -> Option<Arc<WorkerState>> {
        CURRENT.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// actix worker threads that run the heartbeat task (each registered as its app was built).
    pub(crate) fn beating_threads(&self) -> usize {
        self.pulse.registered()
    }

    /// Starts this thread's heartbeat task, once per thread, on the actix arbiter building the
    /// app: a handler that blocks this thread stops it.
    fn start_beating_here(self: &Arc<Self>) {
        let Some(heartbeat) = self.heartbeat.clone() else {
            return;
        };
        let me = Arc::as_ptr(self) as usize;
        if BEATING_FOR.with(|b| b.replace(me)) == me {
            return;
        }
        let Some(slot) = self.pulse.register() else {
            return;
        };
        let state = self.clone();
        actix_rt::spawn(async move {
            let mut tick = actix_rt::time::interval(heartbeat.interval());
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut seen = Vec::new();
            loop {
                tick.tick().await;
                state.pulse.tick(slot);
                // The first thread speaks for all: a beat only if every thread ticked since the
                // last one, so one blocked thread of several stops the beats too.
                if slot == 0 && state.pulse.all_ticked_since(&mut seen) {
                    heartbeat.beat();
                }
            }
        });
    }
}

/// One tick counter per actix worker thread.
#[derive(Debug)]
struct Pulse {
    next: AtomicUsize,
    ticks: Vec<AtomicU64>,
}

impl Pulse {
    fn new(threads: usize) -> Pulse {
        Pulse {
            next: AtomicUsize::new(0),
            ticks: (0..threads.max(1)).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    fn register(&self) -> Option<usize> {
        let slot = self.next.fetch_add(1, Ordering::AcqRel);
        (slot < self.ticks.len()).then_some(slot)
    }

    fn registered(&self) -> usize {
        self.next.load(Ordering::Acquire).min(self.ticks.len())
    }

    fn tick(&self, slot: usize) {
        self.ticks[slot].fetch_add(1, Ordering::Release);
    }

    /// Whether every registered thread ticked since `seen` (updated when so).
    fn all_ticked_since(&self, seen: &mut Vec<u64>) -> bool {
        let now: Vec<u64> = self.ticks[..self.registered()]
            .iter()
            .map(|t| t.load(Ordering::Acquire))
            .collect();
        seen.resize(now.len(), 0);
        if now.iter().zip(seen.iter()).all(|(n, s)| n != s) {
            *seen = now;
            true
        } else {
            false
        }
    }
}

/// The prefork middleware: **add it to the app** you serve with [`serve`](crate::serve) (or run
/// with [`run_prefork`](crate::HttpServerExt::run_prefork)), with `App::wrap` (outermost, i.e.
/// the last `wrap` call, so that it sees every response):
///
/// ```no_run
/// use actix_web::{web, App};
/// use prefork_actix::PreforkMiddleware;
///
/// fn main() -> Result<(), prefork_actix::Error> {
///     prefork_actix::serve(
///         || {
///             App::new()
///                 .route("/", web::get().to(|| async { "Hello, World!" }))
///                 .wrap(PreforkMiddleware)
///         },
///         "127.0.0.1:8080",
///     )
/// }
/// ```
///
/// In each worker process it
/// - **counts every request** (the master's stats and `max_requests` recycling read the count);
/// - once the worker drains, gives every HTTP/1 response `Connection: close`, so each keep-alive
///   connection ends **at a request boundary** (the loss-free drain);
/// - marks each connection busy from a request's start until its response body has been sent to
///   the end (the response's body is wrapped in a [`PreforkBody`] for that), so that the drain
///   closes a keep-alive connection only once it has been idle for the drain grace;
/// - runs the worker's **heartbeat** on each actix worker thread, as the app is built there: a
///   handler that blocks the thread stops the heartbeat, and the master's watchdog
///   ([`Prefork::worker_timeout`](prefork_core::Prefork::worker_timeout)) replaces the worker.
///
/// Without it, a worker still serves, counts connections and drains, but logs a warning at
/// start: requests are not counted, the heartbeat comes from the server's control thread (a
/// blocked handler is not noticed), keep-alive connections that stay busy are only closed at
/// the drain timeout and idle ones by actix's `keep_alive` timer. Outside a prefork worker (unit tests with `actix_web::test`, a
/// single-process mode) it does nothing.
#[derive(Debug, Clone, Copy, Default)]
pub struct PreforkMiddleware;

impl<S, B> Transform<S, ServiceRequest> for PreforkMiddleware
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = actix_web::Error>,
{
    type Response = ServiceResponse<PreforkBody<B>>;
    type Error = actix_web::Error;
    type Transform = PreforkService<S>;
    type InitError = ();
    type Future = Ready<Result<PreforkService<S>, ()>>;

    fn new_transform(&self, service: S) -> Self::Future {
        let state = WorkerState::current();
        if let Some(state) = &state {
            state.start_beating_here();
            crate::idle::start_here(&state.drain);
        }
        ready(Ok(PreforkService {
            inner: service,
            state,
        }))
    }
}

/// The service [`PreforkMiddleware`] wraps around the app.
#[derive(Debug)]
pub struct PreforkService<S> {
    inner: S,
    state: Option<Arc<WorkerState>>,
}

impl<S, B> Service<ServiceRequest> for PreforkService<S>
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = actix_web::Error>,
{
    type Response = ServiceResponse<PreforkBody<B>>;
    type Error = actix_web::Error;
    type Future = PreforkFuture<S::Future>;

    actix_service::forward_ready!(inner);

    fn call(&self, req: ServiceRequest) -> Self::Future {
        let http1 = req.version() < Version::HTTP_2;
        let (tracked, busy) = match &self.state {
            None => (Tracked::None, None),
            Some(state) => match req.request().conn_data::<PreforkConn>() {
                Some(conn) => {
                    conn.drain.request_started(!http1);
                    (
                        Tracked::Conn(conn.drain.clone()),
                        conn.idle.as_ref().map(Busy::new),
                    )
                }
                None => {
                    state.drain.counters().request();
                    (Tracked::Drain(state.drain.clone()), None)
                }
            },
        };
        PreforkFuture {
            inner: self.inner.call(req),
            tracked,
            busy,
            http1,
        }
    }
}

enum Tracked {
    None,
    /// The request's connection (`on_connect` ran for it).
    Conn(DrainConn),
    /// No connection data (a connection `on_connect` did not see): the worker's drain only.
    Drain(Drain),
}

impl Tracked {
    /// Records that the response is ready; whether it must close its connection.
    fn response_ready(&mut self) -> bool {
        match std::mem::replace(self, Tracked::None) {
            Tracked::None => false,
            Tracked::Conn(conn) => conn.response_ready(),
            Tracked::Drain(drain) => drain.is_draining(),
        }
    }
}

pin_project_lite::pin_project! {
    /// A response on its way through [`PreforkService`].
    pub struct PreforkFuture<F> {
        #[pin]
        inner: F,
        tracked: Tracked,
        // The request is in progress until the response's body has ended: handed to the body.
        busy: Option<Busy>,
        http1: bool,
    }

    impl<F> PinnedDrop for PreforkFuture<F> {
        fn drop(this: Pin<&mut Self>) {
            // A request whose future was dropped (the client went away) is no longer in flight.
            let _ = this.project().tracked.response_ready();
        }
    }
}

impl<F, B> Future for PreforkFuture<F>
where
    F: Future<Output = Result<ServiceResponse<B>, actix_web::Error>>,
{
    type Output = Result<ServiceResponse<PreforkBody<B>>, actix_web::Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let out = match this.inner.poll(cx) {
            Poll::Ready(out) => out,
            Poll::Pending => return Poll::Pending,
        };
        let close = this.tracked.response_ready() && *this.http1;
        // On an error the request ends here (`busy` is dropped with it).
        let mut res = out?;
        if close {
            res.response_mut()
                .head_mut()
                .set_connection_type(ConnectionType::Close);
        }
        let busy = this.busy.take();
        Poll::Ready(Ok(res.map_body(|_, inner| PreforkBody { inner, busy })))
    }
}

pin_project_lite::pin_project! {
    /// A response body through [`PreforkMiddleware`]: the body itself, unchanged; while it is
    /// being sent, its connection counts as busy for the drain grace (a keep-alive connection is
    /// closed by the drain only once it has been idle for the grace).
    pub struct PreforkBody<B> {
        #[pin]
        inner: B,
        busy: Option<Busy>,
    }
}

impl<B> fmt::Debug for PreforkBody<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PreforkBody")
            .field("in_progress", &self.busy.is_some())
            .finish_non_exhaustive()
    }
}

impl<B: MessageBody> MessageBody for PreforkBody<B> {
    type Error = B::Error;

    #[inline]
    fn size(&self) -> BodySize {
        self.inner.size()
    }

    fn poll_next(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Bytes, Self::Error>>> {
        let this = self.project();
        let next = this.inner.poll_next(cx);
        if matches!(next, Poll::Ready(None | Some(Err(_)))) {
            // The last chunk is out (or the body failed): the request is over.
            *this.busy = None;
        }
        next
    }

    #[inline]
    fn try_into_bytes(self) -> Result<Bytes, Self> {
        let PreforkBody { inner, busy } = self;
        inner
            .try_into_bytes()
            .map_err(|inner| PreforkBody { inner, busy })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A streaming body of `chunks` chunks, one per poll.
    struct Chunks(u8);

    impl MessageBody for Chunks {
        type Error = std::convert::Infallible;

        fn size(&self) -> BodySize {
            BodySize::Stream
        }

        fn poll_next(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Bytes, Self::Error>>> {
            if self.0 == 0 {
                return Poll::Ready(None);
            }
            self.0 -= 1;
            Poll::Ready(Some(Ok(Bytes::from_static(b"chunk"))))
        }
    }

    fn poll_body<B: MessageBody>(body: Pin<&mut B>) -> Poll<Option<Result<Bytes, B::Error>>> {
        body.poll_next(&mut Context::from_waker(std::task::Waker::noop()))
    }

    #[test]
    fn a_streaming_response_is_in_progress_until_its_last_chunk() {
        let conn = ConnState::unregistered();
        let mut body = std::pin::pin!(PreforkBody {
            inner: Chunks(2),
            busy: Some(Busy::new(&conn)),
        });
        assert_eq!(conn.busy(), 1);
        assert!(matches!(poll_body(body.as_mut()), Poll::Ready(Some(Ok(_)))));
        assert!(matches!(poll_body(body.as_mut()), Poll::Ready(Some(Ok(_)))));
        assert_eq!(conn.busy(), 1, "the body has not ended yet");
        assert!(matches!(poll_body(body.as_mut()), Poll::Ready(None)));
        assert_eq!(conn.busy(), 0, "ended");
    }

    #[test]
    fn a_dropped_response_body_is_no_longer_in_progress() {
        let conn = ConnState::unregistered();
        let body = PreforkBody {
            inner: Chunks(2),
            busy: Some(Busy::new(&conn)),
        };
        // Not a body of known bytes: it stays what it was, still in progress.
        let body = body.try_into_bytes().unwrap_err();
        assert_eq!(conn.busy(), 1);
        drop(body);
        assert_eq!(conn.busy(), 0);
        // A body of known bytes is handed over whole: the request is over.
        let body = PreforkBody {
            inner: Bytes::from_static(b"hello"),
            busy: Some(Busy::new(&conn)),
        };
        assert_eq!(body.try_into_bytes().unwrap(), "hello");
        assert_eq!(conn.busy(), 0);
    }

    #[test]
    fn a_beat_needs_every_thread() {
        let pulse = Pulse::new(2);
        let (a, b) = (pulse.register().unwrap(), pulse.register().unwrap());
        assert_eq!(pulse.register(), None);
        let mut seen = Vec::new();
        pulse.tick(a);
        assert!(!pulse.all_ticked_since(&mut seen), "b did not tick");
        pulse.tick(b);
        assert!(pulse.all_ticked_since(&mut seen));
        pulse.tick(a);
        assert!(!pulse.all_ticked_since(&mut seen), "b is blocked");
        pulse.tick(b);
        assert!(pulse.all_ticked_since(&mut seen));
    }
}
