//! tokio's side of [`prefork_core::timer`]: hyper's header read timeout as a plain deadline
//! (no timer-wheel entry per request), counted from a head's first byte, watched by one tokio
//! timer per connection task.

use std::pin::Pin;
use std::time::Instant;

use prefork_core::timer::RuntimeTimer;

/// tokio's timer for [`prefork_core::timer`].
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Tokio;

impl RuntimeTimer for Tokio {
    type Sleep = tokio::time::Sleep;

    fn sleep_until(deadline: Instant) -> Self::Sleep {
        tokio::time::sleep_until(deadline.into())
    }

    fn reset(sleep: Pin<&mut Self::Sleep>, deadline: Instant) {
        sleep.reset(deadline.into());
    }

    fn is_elapsed(sleep: &Self::Sleep, _deadline: Instant) -> bool {
        sleep.is_elapsed()
    }
}

/// The HTTP/1 timer of [`http_builder`](crate::http_builder).
pub(crate) type HeaderTimer = prefork_core::timer::HeaderTimer<Tokio>;

/// A connection task's one timer for its [`HeaderTimer`] deadlines.
#[cfg(test)]
pub(crate) type Deadlines = prefork_core::timer::Deadlines<Tokio>;

/// A connection's task, watching its deadlines with tokio's timer.
pub(crate) type Connection<F> = prefork_core::timer::Connection<F, Tokio>;

#[cfg(test)]
mod tests {
    use super::*;
    use hyper::rt::{Sleep, Timer};
    use std::time::Duration;

    fn deadline_in(ms: u64) -> Pin<Box<dyn Sleep>> {
        HeaderTimer::new().sleep(Duration::from_millis(ms))
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
