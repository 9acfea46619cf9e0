//! hyper's HTTP/1 timer without a timer-wheel entry per request.
//!
//! hyper arms its header read timeout (`http1().header_read_timeout`) every time it starts
//! reading a request head and drops it once the head is parsed: with `TokioTimer`, a boxed tokio
//! `Sleep` registered in and removed from the runtime's timer wheel for every request on a
//! keep-alive connection (about 15 % of the worker's user-space instructions per request for a
//! small `GET`). [`HeaderTimer`] hands hyper a plain deadline instead. Polled by a connection
//! task of [`Worker::serve`](crate::Worker::serve), the deadline only tells the task the time
//! by which it must be woken ([`Deadlines`]); the task keeps one tokio timer for that, moved
//! only when it fires, i.e. once per timeout period at most, not per request. Polled anywhere
//! else (an accept loop of your own using [`http_builder`](crate::http_builder)), the deadline
//! falls back to a tokio `Sleep` of its own, as `TokioTimer` would.
//!
//! hyper also arms the timeout while a keep-alive connection waits, idle, for its next request,
//! so with `TokioTimer` an idle keep-alive connection is closed after the header read timeout
//! (30 s) rather than after the keep-alive timeout (75 s). Watched by a connection task, a
//! deadline armed on an idle connection counts from the first byte of the next head instead
//! (the connection's [`DrainConn::is_reading`](prefork_core::DrainConn::is_reading)), as
//! nginx's `client_header_timeout` does: the idle wait is the keep-alive timeout's.

use std::cell::Cell;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use hyper::rt::{Sleep, Timer};

/// The HTTP/1 timer of [`http_builder`](crate::http_builder): deadlines that cost nothing
/// until they expire (see the module docs).
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct HeaderTimer;

impl Timer for HeaderTimer {
    fn sleep(&self, duration: std::time::Duration) -> Pin<Box<dyn Sleep>> {
        self.sleep_until(Instant::now() + duration)
    }

    fn sleep_until(&self, deadline: Instant) -> Pin<Box<dyn Sleep>> {
        Box::pin(Deadline {
            deadline,
            timeout: deadline.saturating_duration_since(Instant::now()),
            idle: Idle::No,
            fallback: None,
        })
    }
}

/// One of hyper's timeouts: ready once `deadline` has passed.
struct Deadline {
    deadline: Instant,
    /// From arming to `deadline`: how long the head may take from its first byte when the
    /// deadline was armed on an idle connection.
    timeout: Duration,
    idle: Idle,
    /// Outside a connection task that watches deadlines: a tokio timer of its own.
    fallback: Option<Pin<Box<tokio::time::Sleep>>>,
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

impl Sleep for Deadline {}

impl Future for Deadline {
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
                    self.fallback = Some(Box::pin(tokio::time::sleep_until(self.deadline.into())));
                }
            }
        }
        match &mut self.fallback {
            Some(sleep) => sleep.as_mut().poll(cx),
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

/// A connection task's side of [`HeaderTimer`]: one tokio timer, set for the earliest pending
/// deadline of hyper's and moved only when it fires (or when an earlier deadline comes up).
#[derive(Default)]
pub(crate) struct Deadlines {
    /// The timer and the deadline it was set for.
    timer: Option<(Instant, Pin<Box<tokio::time::Sleep>>)>,
}

impl Deadlines {
    /// Polls `f` (the connection) so that the [`Deadline`]s it polls rely on this task's timer,
    /// then sets that timer for the earliest deadline they reported. `reading`: whether the
    /// connection has read part of a request since its last response (see [`Idle`]).
    pub(crate) fn watch<T>(
        &mut self,
        cx: &mut Context<'_>,
        reading: impl Fn() -> bool,
        f: impl FnOnce(&mut Context<'_>) -> Poll<T>,
    ) -> Poll<T> {
        let passed = match &self.timer {
            Some((at, timer)) if timer.is_elapsed() => Some(*at),
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
            Some((at, timer)) if *at <= deadline && !timer.is_elapsed() => return,
            Some((at, timer)) => {
                *at = deadline;
                timer.as_mut().reset(deadline.into());
            }
            None => {
                self.timer = Some((
                    deadline,
                    Box::pin(tokio::time::sleep_until(deadline.into())),
                ));
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn deadline_in(ms: u64) -> Pin<Box<dyn Sleep>> {
        HeaderTimer.sleep(Duration::from_millis(ms))
    }

    /// Polled outside a connection task, a deadline is an ordinary timer.
    #[tokio::test]
    async fn a_deadline_alone_fires_on_its_own() {
        let start = Instant::now();
        deadline_in(30).await;
        assert!(start.elapsed() >= Duration::from_millis(30));
    }

    /// Polled through `Deadlines::watch`, a deadline registers no timer of its own: the
    /// task's one timer wakes it, and hyper's next deadline reuses that timer.
    #[tokio::test]
    async fn deadlines_watched_by_the_task_fire_through_its_timer() {
        let mut deadlines = Deadlines::default();
        for _ in 0..2 {
            let start = Instant::now();
            let mut sleep = deadline_in(30);
            std::future::poll_fn(|cx| deadlines.watch(cx, || true, |cx| sleep.as_mut().poll(cx)))
                .await;
            assert!(start.elapsed() >= Duration::from_millis(30));
        }
        // A later deadline than the timer's: the timer fires first, then moves.
        let mut later = deadline_in(60);
        let mut first = true;
        let start = Instant::now();
        std::future::poll_fn(|cx| {
            deadlines.watch(
                cx,
                || true,
                |cx| {
                    if first {
                        first = false;
                        // An earlier deadline, dropped before it expires (a head that came in).
                        let mut early = deadline_in(20);
                        assert!(early.as_mut().poll(cx).is_pending());
                    }
                    later.as_mut().poll(cx)
                },
            )
        })
        .await;
        assert!(start.elapsed() >= Duration::from_millis(60));
    }

    /// End to end: a served keep-alive connection idle for longer than the header read timeout
    /// stays open, and one that starts a head and stalls is closed the header read timeout
    /// after the head's first byte, by the connection task's timer.
    #[test]
    fn a_trickled_head_is_cut_off_after_the_header_read_timeout() {
        use std::io::{Read, Write};
        let mut http = crate::http_builder();
        http.http1().header_read_timeout(Duration::from_millis(300));
        let (addr, stop, server) = crate::test_server::serve_ok(http);
        let mut c = std::net::TcpStream::connect(addr).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        // A whole request first: served, and the timeout starts again for the next head.
        c.write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n").unwrap();
        let mut buf = [0; 1024];
        let n = c.read(&mut buf).unwrap();
        assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
        // Idle for more than the header read timeout: an idle keep-alive connection is the
        // keep-alive timeout's (75 s), so it is still open and serves the next request (with
        // `TokioTimer` hyper closed it after the header read timeout).
        std::thread::sleep(Duration::from_millis(1000));
        c.write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n").unwrap();
        let n = c.read(&mut buf).unwrap();
        assert!(
            String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"),
            "an idle keep-alive connection outlives the header read timeout"
        );
        // Idle again, then a head that stops half way: cut off the timeout after its first
        // byte.
        std::thread::sleep(Duration::from_millis(500));
        let start = Instant::now();
        c.write_all(b"GET / HTTP/1.1\r\nho").unwrap();
        let n = c.read(&mut buf).unwrap_or(0);
        let waited = start.elapsed();
        assert_eq!(n, 0, "closed without an answer");
        assert!(
            waited >= Duration::from_millis(300) && waited < Duration::from_secs(5),
            "{waited:?}"
        );
        stop.trigger(prefork_core::ShutdownReason::Requested);
        server.join().unwrap().unwrap();
    }
}
