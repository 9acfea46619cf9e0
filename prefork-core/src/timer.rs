//! hyper's HTTP/1 header read timeout, without a timer entry per request, and counted from the
//! first byte of a head. For the hyper-based adapters (feature `hyper`); each supplies its
//! runtime's timer through [`RuntimeTimer`].
//!
//! hyper arms its header read timeout (`http1().header_read_timeout`) every time it starts
//! reading a request head and drops it once the head is parsed: with the runtime's own hyper
//! timer, a boxed sleep registered in and removed from the runtime's timers for every request on
//! a keep-alive connection (about 15 % of a worker's user-space instructions per request for a
//! small `GET` on tokio). [`HeaderTimer`] hands hyper a plain deadline instead. Polled by a
//! connection task through [`Deadlines::watch`], the deadline only tells the task the time by
//! which it must be woken; the task keeps one runtime timer for that, moved only when it fires,
//! i.e. once per timeout period at most, not per request. Polled anywhere else, the deadline
//! falls back to a runtime timer of its own, as the runtime's hyper timer would.
//!
//! hyper also arms the timeout while a keep-alive connection waits, idle, for its next request,
//! so with the runtime's hyper timer an idle keep-alive connection is closed after the header
//! read timeout (30 s by default) rather than after the keep-alive timeout (75 s). Watched by a
//! connection task, a deadline armed on an idle connection counts from the first byte of the
//! next head instead ([`DrainConn::is_reading`](crate::DrainConn::is_reading)), as nginx's
//! `client_header_timeout` does: the idle wait is the keep-alive timeout's.
//!
//! An adapter gives hyper's HTTP/1 builder `.timer(HeaderTimer::<ItsTimer>::new())` and
//! `.header_read_timeout(worker.header_read_timeout())`, and spawns each connection as a
//! [`Connection`] (the connection driven through the drain, with its [`Deadlines`]).

use std::cell::Cell;
use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use hyper::rt::{Sleep, Timer};

/// A runtime's timer, as [`HeaderTimer`] and [`Deadlines`] use it: one implementation per
/// adapter (tokio's `Sleep`, async-io's `Timer`).
pub trait RuntimeTimer: 'static {
    /// The runtime's timer future: ready once its deadline has passed (its output is ignored).
    type Sleep: Future + Send + Sync + 'static;

    /// A timer that fires at `deadline`.
    fn sleep_until(deadline: Instant) -> Self::Sleep;

    /// Moves `sleep` to fire at `deadline` instead (the waker is registered again by the next
    /// poll).
    fn reset(sleep: Pin<&mut Self::Sleep>, deadline: Instant);

    /// Whether `sleep`, set for `deadline`, has fired. Default: `deadline` has passed.
    fn is_elapsed(sleep: &Self::Sleep, deadline: Instant) -> bool {
        let _ = sleep;
        Instant::now() >= deadline
    }
}

/// hyper's HTTP/1 timer (`http1::Builder::timer`): deadlines that cost nothing until they
/// expire, counted from the first byte of a head on a keep-alive connection (see the module
/// docs). `R` is the runtime's timer.
pub struct HeaderTimer<R>(PhantomData<fn() -> R>);

impl<R> HeaderTimer<R> {
    /// The timer (it holds nothing).
    pub const fn new() -> Self {
        HeaderTimer(PhantomData)
    }
}

impl<R> Default for HeaderTimer<R> {
    fn default() -> Self {
        HeaderTimer::new()
    }
}

impl<R> Clone for HeaderTimer<R> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<R> Copy for HeaderTimer<R> {}

impl<R> std::fmt::Debug for HeaderTimer<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HeaderTimer")
    }
}

impl<R: RuntimeTimer> Timer for HeaderTimer<R> {
    fn sleep(&self, duration: Duration) -> Pin<Box<dyn Sleep>> {
        self.sleep_until(Instant::now() + duration)
    }

    fn sleep_until(&self, deadline: Instant) -> Pin<Box<dyn Sleep>> {
        Box::pin(Deadline::<R> {
            deadline,
            timeout: deadline.saturating_duration_since(Instant::now()),
            idle: Idle::No,
            fallback: None,
        })
    }
}

/// One of hyper's timeouts: ready once `deadline` has passed.
struct Deadline<R: RuntimeTimer> {
    deadline: Instant,
    /// From arming to `deadline`: how long the head may take from its first byte when the
    /// deadline was armed on an idle connection.
    timeout: Duration,
    idle: Idle,
    /// Outside a connection task that watches deadlines: a runtime timer of its own.
    fallback: Option<Pin<Box<R::Sleep>>>,
}

/// Whether a watched deadline was armed while its connection was idle.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Idle {
    /// Not seen idle: `deadline` counts from arming.
    No,
    /// Idle when polled: no deadline until the next head's first byte.
    Waiting,
    /// Was idle; `deadline` was moved to the first byte plus `timeout`.
    Moved,
}

impl<R: RuntimeTimer> Sleep for Deadline<R> {}

impl<R: RuntimeTimer> Future for Deadline<R> {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.fallback.is_none() {
            match SCOPE.with(|s| s.get()) {
                Some(scope) => {
                    if !scope.reading {
                        // An idle keep-alive connection: the keep-alive timeout's, not ours.
                        if self.idle == Idle::No {
                            self.idle = Idle::Waiting;
                        }
                        SCOPE.with(|s| {
                            s.set(Some(Scope {
                                waiting: true,
                                ..scope
                            }))
                        });
                        return Poll::Pending;
                    }
                    if self.idle == Idle::Waiting {
                        self.idle = Idle::Moved;
                        self.deadline = Instant::now() + self.timeout;
                    }
                    if scope.passed.is_some_and(|passed| self.deadline <= passed) {
                        return Poll::Ready(());
                    }
                    // The task polling us wakes itself by then.
                    let earliest = scope
                        .earliest
                        .map_or(self.deadline, |e| e.min(self.deadline));
                    SCOPE.with(|s| {
                        s.set(Some(Scope {
                            earliest: Some(earliest),
                            ..scope
                        }))
                    });
                    return Poll::Pending;
                }
                None => {
                    let deadline = self.deadline;
                    self.fallback = Some(Box::pin(R::sleep_until(deadline)));
                }
            }
        }
        match &mut self.fallback {
            Some(sleep) => sleep.as_mut().poll(cx).map(|_| ()),
            None => Poll::Pending,
        }
    }
}

/// What a connection task tells the [`Deadline`]s it polls, and what they tell it back.
#[derive(Debug, Clone, Copy)]
struct Scope {
    /// Every deadline up to this one has passed (the task's timer fired for it).
    passed: Option<Instant>,
    /// The earliest deadline still pending: the task must be woken by then.
    earliest: Option<Instant>,
    /// The connection has read part of a request since its last response (see [`Idle`]).
    reading: bool,
    /// A deadline is waiting for the first byte of a head.
    waiting: bool,
}

thread_local! {
    /// Set while a connection task that watches deadlines polls its connection.
    static SCOPE: Cell<Option<Scope>> = const { Cell::new(None) };
}

/// A connection task's side of [`HeaderTimer`]: one runtime timer, set for the earliest pending
/// deadline of hyper's and moved only when it fires (or when an earlier deadline comes up).
pub struct Deadlines<R: RuntimeTimer> {
    /// The timer and the deadline it was set for.
    timer: Option<(Instant, Pin<Box<R::Sleep>>)>,
}

impl<R: RuntimeTimer> Default for Deadlines<R> {
    fn default() -> Self {
        Deadlines { timer: None }
    }
}

impl<R: RuntimeTimer> std::fmt::Debug for Deadlines<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Deadlines")
            .field("timer_at", &self.timer.as_ref().map(|(at, _)| *at))
            .finish()
    }
}

impl<R: RuntimeTimer> Deadlines<R> {
    /// Polls `f` (the connection) so that the [`HeaderTimer`] deadlines it polls rely on this
    /// task's timer, then sets that timer for the earliest deadline they reported. `reading`:
    /// whether the connection has read part of a request since its last response (pass
    /// `|| conn.is_reading()` of the connection's [`DrainConn`](crate::DrainConn)); a deadline
    /// armed while it is `false` starts counting at the next head's first byte.
    pub fn watch<T>(
        &mut self,
        cx: &mut Context<'_>,
        reading: impl Fn() -> bool,
        f: impl FnOnce(&mut Context<'_>) -> Poll<T>,
    ) -> Poll<T> {
        let passed = match &self.timer {
            Some((at, timer)) if R::is_elapsed(timer, *at) => Some(*at),
            _ => None,
        };
        let was_reading = reading();
        let outer = SCOPE.with(|s| {
            s.replace(Some(Scope {
                passed,
                earliest: None,
                reading: was_reading,
                waiting: false,
            }))
        });
        let out = f(cx);
        let scope = SCOPE.with(|s| s.replace(outer));
        if out.is_pending() {
            if let Some(deadline) = scope.and_then(|scope| scope.earliest) {
                self.wake_by(deadline, cx);
            }
            // A deadline saw the connection idle, but the head began later in this same poll
            // (hyper polls its timer before it reads): poll again, so that its clock starts now.
            if !was_reading && scope.is_some_and(|scope| scope.waiting) && reading() {
                cx.waker().wake_by_ref();
            }
        }
        out
    }

    /// Makes sure the task is woken no later than `deadline`.
    fn wake_by(&mut self, deadline: Instant, cx: &mut Context<'_>) {
        match &mut self.timer {
            // Set for no later, and not fired yet: it will do (and, when it fires, the
            // deadline pending then is reported again).
            Some((at, timer)) if *at <= deadline && !R::is_elapsed(timer, *at) => return,
            Some((at, timer)) => {
                *at = deadline;
                R::reset(timer.as_mut(), deadline);
            }
            None => {
                self.timer = Some((deadline, Box::pin(R::sleep_until(deadline))));
            }
        }
        if let Some((_, timer)) = &mut self.timer {
            // Registers the task's waker; a deadline already passed wakes it at once.
            if timer.as_mut().poll(cx).is_ready() {
                cx.waker().wake_by_ref();
            }
        }
    }
}

pin_project_lite::pin_project! {
    /// One connection's task in a hyper-based adapter: the connection as driven through the
    /// drain ([`DrainConn::drive`](crate::DrainConn::drive)), polled with its [`Deadlines`]
    /// (hyper's header read timeout, from a head's first byte), ending with a `debug` line if
    /// the connection ended with an error.
    pub struct Connection<F, R: RuntimeTimer> {
        #[pin]
        driven: F,
        deadlines: Deadlines<R>,
        conn: crate::DrainConn,
        peer: std::net::SocketAddr,
    }
}

impl<F, R: RuntimeTimer> Connection<F, R> {
    /// The task of `driven` (`conn.drive(hyper_conn, ..)`), served to `peer`.
    pub fn new(driven: F, conn: crate::DrainConn, peer: std::net::SocketAddr) -> Self {
        Connection {
            driven,
            deadlines: Deadlines::default(),
            conn,
            peer,
        }
    }
}

impl<F, E, R> Future for Connection<F, R>
where
    F: Future<Output = Result<(), E>>,
    E: std::fmt::Display,
    R: RuntimeTimer,
{
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.project();
        let driven = this.driven;
        let conn = &*this.conn;
        this.deadlines
            .watch(cx, || conn.is_reading(), |cx| driven.poll(cx))
            .map(|result| {
                if let Err(e) = result {
                    tracing::debug!(peer = %this.peer, error = %e, "connection ended with an error");
                }
            })
    }
}
