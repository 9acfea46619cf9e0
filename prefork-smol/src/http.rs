//! The minimal HTTP server: hyper over smol (glue from `smol-hyper`), keep-alive, graceful
//! shutdown, and TLS with HTTP/2 by ALPN.

use std::error::Error as StdError;
use std::future::{poll_fn, Future};
use std::io;
use std::net::{SocketAddr, TcpStream};
use std::pin::{pin, Pin};
use std::sync::Arc;

use async_io::Async;
use hyper::body::{Body, Incoming};
use hyper::service::Service;
use hyper::{Request, Response};
use prefork_core::Shutdown;
use smol_hyper::rt::{FuturesIo, SmolTimer};

use crate::accept::{accept_loop, ConnectionGuard, Tracker};
use crate::runtime::SharedExecutor;
use crate::Context;

/// A boxed error, as hyper takes from services and bodies.
pub(crate) type BoxError = Box<dyn StdError + Send + Sync>;

/// What every connection task needs, shared.
struct Shared<S> {
    service: Arc<S>,
    shutdown: Shutdown,
    /// Runs HTTP/2 streams (HTTP/2 is only offered over TLS).
    #[cfg_attr(not(feature = "tls"), allow(dead_code))]
    executor: SharedExecutor,
    #[cfg(feature = "tls")]
    tls: Option<(futures_rustls::TlsAcceptor, std::time::Duration)>,
}

impl<S> Clone for Shared<S> {
    fn clone(&self) -> Self {
        Shared {
            service: self.service.clone(),
            shutdown: self.shutdown.clone(),
            executor: self.executor.clone(),
            #[cfg(feature = "tls")]
            tls: self.tls.clone(),
        }
    }
}

/// Serves `service` on every listener of `ctx` until its shutdown completes, then drains:
/// stops accepting, lets in-flight requests finish, closes idle keep-alive connections, and
/// gives up on the rest after [`Context::drain_timeout`].
pub(crate) async fn serve<S, B>(mut ctx: Context, service: Arc<S>) -> io::Result<()>
where
    S: Service<Request<Incoming>, Response = Response<B>> + Send + Sync + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    let listeners = ctx.take_listeners();
    if listeners.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "no listener to serve on",
        ));
    }
    let shared = Shared {
        service,
        shutdown: ctx.shutdown(),
        executor: ctx.executor().clone(),
        #[cfg(feature = "tls")]
        tls: ctx.tls_acceptor().map(|a| (a, ctx.tls_handshake_timeout())),
    };
    let tracker = Tracker::new();
    let mut accepting = Vec::with_capacity(listeners.len());
    for listener in listeners {
        let shared = shared.clone();
        let ex = ctx.executor().clone();
        let guards = tracker.guard();
        accepting.push(ctx.spawn(accept_loop(
            listener,
            ctx.shutdown(),
            move |stream, peer| {
                ex.spawn(connection(stream, peer, shared.clone(), guards.clone()))
                    .detach();
            },
        )));
    }
    // Each accept loop's closure holds a guard until the loop returns, which is before the
    // drain below starts: only connections are counted then.
    ctx.ready()?;
    tracing::debug!(worker = ctx.worker_id(), "serving");

    let reason = ctx.shutdown().await;
    for task in accepting {
        task.await;
    }
    tracing::debug!(worker = ctx.worker_id(), ?reason, "draining");
    let left = tracker.drain(ctx.drain_timeout()).await;
    if left > 0 {
        tracing::warn!(
            worker = ctx.worker_id(),
            connections = left,
            drain_timeout_ms = ctx.drain_timeout().as_millis() as u64,
            "connections still open after the drain timeout; closing them"
        );
    }
    Ok(())
}

/// One accepted connection: TLS handshake (bounded) if configured, then HTTP until the client
/// closes, or the worker stops and the connection has nothing in flight.
async fn connection<S, B>(
    stream: Async<TcpStream>,
    peer: SocketAddr,
    shared: Shared<S>,
    _guard: ConnectionGuard,
) where
    S: Service<Request<Incoming>, Response = Response<B>> + Send + Sync + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    #[cfg(feature = "tls")]
    if let Some((acceptor, timeout)) = &shared.tls {
        let Some(tls) =
            crate::tls::handshake(acceptor, stream, *timeout, &shared.shutdown, peer).await
        else {
            return;
        };
        let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
        let result = if h2 {
            serve_h2(FuturesIo::new(tls), &shared).await
        } else {
            serve_h1(FuturesIo::new(tls), &shared).await
        };
        log_result(result, peer);
        return;
    }
    log_result(serve_h1(FuturesIo::new(stream), &shared).await, peer);
}

fn log_result(result: Result<(), hyper::Error>, peer: SocketAddr) {
    if let Err(e) = result {
        tracing::debug!(%peer, error = %e, "connection ended with an error");
    }
}

async fn serve_h1<I, S, B>(io: I, shared: &Shared<S>) -> Result<(), hyper::Error>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    S: Service<Request<Incoming>, Response = Response<B>> + Send + Sync + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(SmolTimer::new())
        .serve_connection(io, shared.service.clone());
    until_stopped(conn, shared.shutdown.clone(), |c| c.graceful_shutdown()).await
}

#[cfg(feature = "tls")]
async fn serve_h2<I, S, B>(io: I, shared: &Shared<S>) -> Result<(), hyper::Error>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    S: Service<Request<Incoming>, Response = Response<B>> + Send + Sync + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    let exec = smol_hyper::rt::SmolExecutor::new(shared.executor.clone());
    let conn = hyper::server::conn::http2::Builder::new(exec)
        .timer(SmolTimer::new())
        .serve_connection(io, shared.service.clone());
    until_stopped(conn, shared.shutdown.clone(), |c| c.graceful_shutdown()).await
}

/// Drives a hyper connection; once `shutdown` completes, asks it to shut down gracefully
/// (HTTP/1: finish the request in flight, then close, or close at once if idle; HTTP/2: GOAWAY)
/// and keeps driving it to the end.
async fn until_stopped<C: Future>(
    conn: C,
    mut shutdown: Shutdown,
    graceful: impl FnOnce(Pin<&mut C>),
) -> C::Output {
    let mut conn = pin!(conn);
    let mut graceful = Some(graceful);
    poll_fn(|cx| {
        if graceful.is_some() && Pin::new(&mut shutdown).poll(cx).is_ready() {
            if let Some(graceful) = graceful.take() {
                graceful(conn.as_mut());
            }
        }
        conn.as_mut().poll(cx)
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn graceful_shutdown_is_requested_once_and_the_connection_still_finishes() {
        let shutdown = Shutdown::new().unwrap();
        let calls = std::cell::Cell::new(0);
        let s = shutdown.clone();
        let out = smol::block_on(until_stopped(
            async {
                s.trigger(prefork_core::ShutdownReason::Requested);
                async_io::Timer::after(std::time::Duration::from_millis(5)).await;
                7
            },
            shutdown,
            |_| calls.set(calls.get() + 1),
        ));
        assert_eq!((out, calls.get()), (7, 1));
    }
}
