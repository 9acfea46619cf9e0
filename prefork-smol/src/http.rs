//! The minimal HTTP server: hyper over smol (glue from `smol-hyper`), keep-alive, graceful
//! shutdown, and TLS with HTTP/2 by ALPN.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;

use hyper::body::{Body, Incoming};
use hyper::service::Service;
use hyper::{Request, Response};
use prefork_core::service::Counted;
use prefork_core::{Drain, DrainConn, Shutdown};
use smol_hyper::rt::{FuturesIo, SmolTimer};

use crate::accept::{accept_loop, Socket};
use crate::runtime::SharedExecutor;
use crate::Worker;

/// A boxed error, as hyper takes from services and bodies.
pub(crate) use prefork_core::BoxError;

/// What every connection task needs, shared.
struct Shared<S> {
    service: Arc<S>,
    #[cfg_attr(not(feature = "tls"), allow(dead_code))]
    shutdown: Shutdown,
    drain: Drain,
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
            drain: self.drain.clone(),
            executor: self.executor.clone(),
            #[cfg(feature = "tls")]
            tls: self.tls.clone(),
        }
    }
}

/// Serves `service` on every listener of `ctx` until its shutdown completes, then drains:
/// stops accepting, lets in-flight requests finish, closes idle keep-alive connections, and
/// gives up on the rest after [`Worker::drain_timeout`].
pub(crate) async fn serve<S, B>(mut ctx: Worker, service: Arc<S>) -> io::Result<()>
where
    S: Service<Request<Incoming>, Response = Response<B>> + Send + Sync + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    let listeners = ctx.take_listeners();
    let unix_listeners = ctx.take_unix_listeners();
    if listeners.is_empty() && unix_listeners.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "no listener to serve on",
        ));
    }
    let drain = ctx.drain();
    let shared = Shared {
        service,
        shutdown: ctx.shutdown(),
        drain: drain.clone(),
        executor: ctx.executor().clone(),
        #[cfg(feature = "tls")]
        tls: ctx.tls_acceptor().map(|a| (a, ctx.tls_handshake_timeout())),
    };
    let mut accepting = Vec::with_capacity(listeners.len());
    for listener in listeners {
        let shared = shared.clone();
        let ex = ctx.executor().clone();
        accepting.push(ctx.spawn(accept_loop(
            listener,
            ctx.shutdown(),
            ctx.balance(),
            move |stream, peer| {
                let conn = shared.drain.connection();
                ex.spawn(connection(stream, peer, shared.clone(), conn))
                    .detach();
            },
        )));
    }
    // Unix domain sockets: the same loop and drain; no peer IP (`UNIX_PEER`).
    for listener in unix_listeners {
        let shared = shared.clone();
        let ex = ctx.executor().clone();
        accepting.push(ctx.spawn(accept_loop(
            listener,
            ctx.shutdown(),
            ctx.balance(),
            move |stream, peer| {
                let conn = shared.drain.connection();
                ex.spawn(connection(stream, peer, shared.clone(), conn))
                    .detach();
            },
        )));
    }
    // The heartbeat runs on the worker's executor: a blocked executor stops the beats.
    let heartbeat = ctx.heartbeat().map(|hb| {
        ctx.spawn(async move {
            loop {
                async_io::Timer::after(hb.interval()).await;
                hb.beat();
            }
        })
    });
    ctx.ready()?;
    tracing::debug!(worker = ctx.id(), "serving");

    let reason = ctx.shutdown().await;
    drain.start();
    for task in accepting {
        task.await;
    }
    tracing::debug!(worker = ctx.id(), ?reason, open = drain.open(), "draining");
    let all_closed = smol::future::or(
        async {
            drain.closed().await;
            true
        },
        async {
            async_io::Timer::after(ctx.drain_timeout()).await;
            false
        },
    )
    .await;
    if let Some(hb) = heartbeat {
        drop(hb); // cancels the task
    }
    let left = if all_closed { 0 } else { drain.open() };
    if left > 0 {
        tracing::warn!(
            worker = ctx.id(),
            connections = left,
            drain_timeout_ms = ctx.drain_timeout().as_millis() as u64,
            "connections still open after the drain timeout; closing them"
        );
    }
    Ok(())
}

/// One accepted connection: TLS handshake (bounded) if configured, then HTTP until the client
/// closes, or the worker stops and the connection has nothing in flight.
async fn connection<I, S, B>(stream: I, peer: SocketAddr, shared: Shared<S>, conn: DrainConn)
where
    I: futures_io::AsyncRead + futures_io::AsyncWrite + Socket + Unpin + Send + 'static,
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
        let io = FuturesIo::new(Tracked::new(tls, &conn));
        let result = if h2 {
            serve_h2(io, &shared, conn).await
        } else {
            serve_h1(io, &shared, conn).await
        };
        log_result(result, peer);
        return;
    }
    let io = FuturesIo::new(Tracked::new(stream, &conn));
    log_result(serve_h1(io, &shared, conn).await, peer);
}

fn log_result(result: Result<(), hyper::Error>, peer: SocketAddr) {
    if let Err(e) = result {
        tracing::debug!(%peer, error = %e, "connection ended with an error");
    }
}

async fn serve_h1<I, S, B>(io: I, shared: &Shared<S>, conn: DrainConn) -> Result<(), hyper::Error>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    S: Service<Request<Incoming>, Response = Response<B>> + Send + Sync + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    let service = Counted::new(shared.service.clone(), &conn);
    let hyper_conn = hyper::server::conn::http1::Builder::new()
        .timer(SmolTimer::new())
        .serve_connection(io, service);
    conn.drive(hyper_conn, sleep, |c| c.graceful_shutdown())
        .await
}

#[cfg(feature = "tls")]
async fn serve_h2<I, S, B>(io: I, shared: &Shared<S>, conn: DrainConn) -> Result<(), hyper::Error>
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
    let service = Counted::new(shared.service.clone(), &conn);
    let hyper_conn = hyper::server::conn::http2::Builder::new(exec)
        .timer(SmolTimer::new())
        .serve_connection(io, service);
    conn.drive(hyper_conn, sleep, |c| c.graceful_shutdown())
        .await
}

/// The runtime's timer for [`DrainConn::drive`].
async fn sleep(d: std::time::Duration) {
    async_io::Timer::after(d).await;
}

/// The connection's I/O: every read that returns data is activity (a client that has started
/// sending is never cut off by the drain).
struct Tracked<I> {
    io: I,
    conn: DrainConn,
}

impl<I> Tracked<I> {
    fn new(io: I, conn: &DrainConn) -> Self {
        Tracked {
            io,
            conn: conn.clone(),
        }
    }
}

impl<I: futures_io::AsyncRead + Unpin> futures_io::AsyncRead for Tracked<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut [u8],
    ) -> std::task::Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.io).poll_read(cx, buf);
        if matches!(r, std::task::Poll::Ready(Ok(n)) if n > 0) {
            self.conn.on_read();
        }
        r
    }
}

impl<I: futures_io::AsyncWrite + Unpin> futures_io::AsyncWrite for Tracked<I> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> std::task::Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn poll_flush(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_close(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_close(cx)
    }
}
