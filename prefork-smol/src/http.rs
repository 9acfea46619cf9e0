//! The minimal HTTP server: hyper over smol (glue from `smol-hyper`), keep-alive, graceful
//! shutdown, and TLS with HTTP/2 by ALPN.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;

use hyper::body::{Body, Incoming};
use hyper::service::Service;
use hyper::{Request, Response};
use prefork_core::service::Counted;
use prefork_core::timer::{Connection, HeaderTimer, RuntimeTimer};
use prefork_core::{Drain, DrainConn, Shutdown};
#[cfg(feature = "tls")]
use smol_hyper::rt::SmolTimer;
use std::time::Instant;

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
    /// hyper's HTTP/1 header read timeout ([`prefork_core::Worker::header_read_timeout`]).
    header_read_timeout: Option<std::time::Duration>,
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
            header_read_timeout: self.header_read_timeout,
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
        header_read_timeout: ctx.core().header_read_timeout(),
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
                spawn_connection(&ex, stream, peer, &shared, conn);
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
                spawn_connection(&ex, stream, peer, &shared, conn);
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
///
/// A plain connection's task is the hyper connection itself and a few words ([`serve_h1`] is no
/// `async fn`, whose arguments would stay in the task beside the connection they were moved
/// into); a TLS connection's handshake runs in a task of its own, which then spawns the
/// connection's, so that neither keeps the room of the other for the connection's whole life.
fn spawn_connection<I, S, B>(
    ex: &SharedExecutor,
    stream: I,
    peer: SocketAddr,
    shared: &Shared<S>,
    conn: DrainConn,
) where
    I: futures_io::AsyncRead + futures_io::AsyncWrite + Socket + Unpin + Send + 'static,
    S: Service<Request<Incoming>, Response = Response<B>> + Send + Sync + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    #[cfg(feature = "tls")]
    if shared.tls.is_some() {
        let shared = shared.clone();
        ex.spawn(async move {
            let Some((acceptor, timeout)) = &shared.tls else {
                return;
            };
            let Some(tls) =
                crate::tls::handshake(acceptor, stream, *timeout, &shared.shutdown, peer).await
            else {
                return;
            };
            let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
            let io = Tracked::new(tls, &conn);
            if h2 {
                shared
                    .executor
                    .spawn(serve_h2(io, &shared, conn, peer))
                    .detach();
            } else {
                shared
                    .executor
                    .spawn(serve_h1(io, &shared, conn, peer))
                    .detach();
            }
        })
        .detach();
        return;
    }
    let io = Tracked::new(stream, &conn);
    ex.spawn(serve_h1(io, shared, conn, peer)).detach();
}

fn serve_h1<I, S, B>(
    io: I,
    shared: &Shared<S>,
    conn: DrainConn,
    peer: SocketAddr,
) -> Connection<impl Future<Output = Result<(), hyper::Error>> + Send + 'static, Smol>
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
        .timer(HeaderTimer::<Smol>::new())
        .header_read_timeout(shared.header_read_timeout)
        .serve_connection(io, service);
    let driven = conn.drive(hyper_conn, sleep, |c| c.graceful_shutdown());
    Connection::new(driven, conn, peer)
}

#[cfg(feature = "tls")]
fn serve_h2<I, S, B>(
    io: I,
    shared: &Shared<S>,
    conn: DrainConn,
    peer: SocketAddr,
) -> Connection<impl Future<Output = Result<(), hyper::Error>> + Send + 'static, Smol>
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
    let driven = conn.drive(hyper_conn, sleep, |c| c.graceful_shutdown());
    Connection::new(driven, conn, peer)
}

/// async-io's timer for [`prefork_core::timer`].
struct Smol;

impl RuntimeTimer for Smol {
    type Sleep = async_io::Timer;

    fn sleep_until(deadline: Instant) -> async_io::Timer {
        async_io::Timer::at(deadline)
    }

    fn reset(sleep: Pin<&mut async_io::Timer>, deadline: Instant) {
        sleep.get_mut().set_at(deadline);
    }
}

/// The runtime's timer for [`DrainConn::drive`].
async fn sleep(d: std::time::Duration) {
    async_io::Timer::after(d).await;
}

/// The connection's I/O, as hyper reads and writes it: every read that returns data is activity
/// (a client that has started sending is never cut off by the drain).
///
/// Reads go through a scratch buffer of the thread's, then into hyper's buffer
/// ([`ReadBufCursor::put_slice`](hyper::rt::ReadBufCursor::put_slice)): `futures_io` reads into
/// initialized memory only, and the usual glue (`smol_hyper::rt::FuturesIo`) zeroes hyper's
/// whole unfilled buffer (8 KiB) on every poll, pending ones included. That costs a `memset` per
/// read and makes every page of every idle connection's read buffer resident; copying the bytes
/// that came costs one `memcpy` of those bytes only.
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

/// The most one read takes from the socket (hyper asks for 8 KiB at first, more for large
/// bodies).
const SCRATCH_LEN: usize = 16 * 1024;

thread_local! {
    /// Initialized once per thread that runs connections.
    static SCRATCH: std::cell::RefCell<Box<[u8]>> =
        std::cell::RefCell::new(vec![0; SCRATCH_LEN].into_boxed_slice());
}

impl<I: futures_io::AsyncRead + Unpin> hyper::rt::Read for Tracked<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        mut buf: hyper::rt::ReadBufCursor<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        let want = buf.remaining().min(SCRATCH_LEN);
        if want == 0 {
            return std::task::Poll::Ready(Ok(()));
        }
        SCRATCH.with(|scratch| {
            // Not re-entered: the inner read does not call back into hyper.
            let mut scratch = scratch.borrow_mut();
            let r = Pin::new(&mut self.io).poll_read(cx, &mut scratch[..want]);
            if let std::task::Poll::Ready(Ok(n)) = r {
                buf.put_slice(&scratch[..n]);
                if n > 0 {
                    self.conn.on_read();
                }
            }
            r.map_ok(|_| ())
        })
    }
}

impl<I: futures_io::AsyncWrite + Unpin> hyper::rt::Write for Tracked<I> {
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

    fn poll_shutdown(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_close(cx)
    }
}
