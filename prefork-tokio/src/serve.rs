//! The accept loop, one task per connection, and the loss-free drain.

use std::future::{poll_fn, Future};
use std::io;
use std::net::SocketAddr;
use std::os::fd::AsFd;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper::body::{Body, Incoming};
use hyper::service::Service;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use prefork_core::accept::{is_connection_error, log_accept_error, socket_name};
use prefork_core::service::Counted;
use prefork_core::DrainConn;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream, UnixListener, UnixStream};

use crate::timer::Connection;
use crate::worker::Worker;
use crate::BoxError;

/// How long the accept loop pauses after an error that is not the connection's fault (EMFILE,
/// ENFILE, ENOBUFS, ENOMEM): long enough not to spin, short enough to resume at once when a
/// descriptor frees up.
pub(crate) const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// What every connection task shares.
struct Shared {
    http: auto::Builder<TokioExecutor>,
    #[cfg(feature = "tls")]
    tls: Option<crate::tls::Tls>,
}

/// A listener of either kind: TCP, or a Unix domain socket (`unix:/path`).
pub(crate) enum AnyListener {
    Tcp(TcpListener),
    Unix(UnixListener),
}

impl AnyListener {
    fn poll_accept(&self, cx: &mut Context<'_>) -> Poll<io::Result<(AnyStream, SocketAddr)>> {
        match self {
            AnyListener::Tcp(l) => l
                .poll_accept(cx)
                .map_ok(|(s, peer)| (AnyStream::Tcp(s), peer)),
            // No peer IP on a Unix socket: the service sees the unspecified address.
            AnyListener::Unix(l) => l
                .poll_accept(cx)
                .map_ok(|(s, _)| (AnyStream::Unix(s), UNIX_PEER)),
        }
    }

    fn describe(&self) -> String {
        socket_name(match self {
            AnyListener::Tcp(l) => l.as_fd(),
            AnyListener::Unix(l) => l.as_fd(),
        })
    }
}

/// What `make_service` receives for a connection on a Unix domain socket, which has no peer IP
/// address: the unspecified address `0.0.0.0:0`.
pub(crate) const UNIX_PEER: SocketAddr = SocketAddr::V4(std::net::SocketAddrV4::new(
    std::net::Ipv4Addr::UNSPECIFIED,
    0,
));

/// An accepted connection of either kind.
enum AnyStream {
    Tcp(TcpStream),
    Unix(UnixStream),
}

/// A connection whose first bytes can be looked at before the TLS handshake reads them (to
/// answer plain HTTP on a TLS port, see `Tls::handshake`).
pub(crate) trait Peek {
    /// Copies the first bytes the client sent into `buf` without consuming them, once some have
    /// come; `None` where the stream cannot be peeked.
    #[cfg_attr(not(feature = "tls"), allow(dead_code))]
    fn peek_first<'a>(
        &'a self,
        buf: &'a mut [u8],
    ) -> impl Future<Output = Option<io::Result<usize>>> + Send + 'a;
}

impl Peek for TcpStream {
    async fn peek_first<'a>(&'a self, buf: &'a mut [u8]) -> Option<io::Result<usize>> {
        Some(self.peek(buf).await)
    }
}

/// tokio's Unix stream has no `peek`: TLS on a Unix socket goes to the handshake at once.
impl Peek for UnixStream {
    async fn peek_first<'a>(&'a self, _: &'a mut [u8]) -> Option<io::Result<usize>> {
        None
    }
}

pub(crate) async fn serve<M, S, B>(
    child: Worker,
    listeners: Vec<AnyListener>,
    http: auto::Builder<TokioExecutor>,
    mut make_service: M,
) -> io::Result<()>
where
    M: FnMut(SocketAddr) -> S,
    S: Service<Request<Incoming>, Response = Response<B>> + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    let shared = Arc::new(Shared {
        http,
        #[cfg(feature = "tls")]
        tls: child.tls.clone(),
    });
    let drain = child.drain();
    let mut shutdown = child.shutdown();
    let addrs: Vec<String> = listeners.iter().map(AnyListener::describe).collect();
    let heartbeat = child.core().has_master().then(|| {
        let hb = child.core().heartbeat();
        // Inside the worker's event loop: a blocked loop stops the beats.
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(hb.interval());
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                hb.beat();
            }
        })
    });
    tracing::debug!(worker = child.id(), ?addrs, "accepting");
    child.ready()?;

    // A worker over its share of the open connections leaves a new connection to an idle
    // worker holding fewer (prefork_core::balance): it yields before accepting, and marks
    // itself parked while it waits for a connection.
    let balance = child.balance();
    let mut next = 0;
    let reason = loop {
        if !balance.may_accept() {
            tokio::select! {
                biased;
                reason = &mut shutdown => break reason,
                () = balance.admit(tokio::task::yield_now) => {}
            }
        }
        let accept = balance.parked(poll_fn(|cx| poll_accept_any(&listeners, &mut next, cx)));
        let accepted = tokio::select! {
            biased;
            reason = &mut shutdown => break reason,
            accepted = accept => accepted,
        };
        match accepted {
            Ok((stream, peer)) => {
                let service = make_service(peer);
                let conn = drain.connection();
                match stream {
                    AnyStream::Tcp(stream) => {
                        if let Err(e) = stream.set_nodelay(true) {
                            tracing::debug!(error = %e, %peer, "TCP_NODELAY");
                        }
                        spawn_connection(stream, peer, service, &shared, conn);
                    }
                    AnyStream::Unix(stream) => {
                        spawn_connection(stream, peer, service, &shared, conn);
                    }
                }
            }
            Err(e) if is_connection_error(&e) => {
                tracing::debug!(error = %e, "accept: connection error");
            }
            Err(e) => {
                log_accept_error(&DisplayAddrs(&addrs), &e, ACCEPT_BACKOFF);
                tokio::select! {
                    biased;
                    reason = &mut shutdown => break reason,
                    () = tokio::time::sleep(ACCEPT_BACKOFF) => {}
                }
            }
        }
    };

    // Stop accepting at once: in the shared-socket mode the queue stays open for the other
    // workers; every connection task now ends its connection at a request boundary.
    drain.start();
    drop(listeners);
    let budget = child.drain_timeout();
    tracing::debug!(?reason, open = drain.open(), "draining");
    if tokio::time::timeout(budget, drain.closed()).await.is_err() {
        tracing::warn!(
            timeout_ms = budget.as_millis() as u64,
            open = drain.open(),
            "drain did not finish within the shutdown timeout; closing the remaining connections"
        );
    }
    if let Some(h) = heartbeat {
        h.abort();
    }
    Ok(())
}

/// The listeners' addresses, for log lines.
struct DisplayAddrs<'a>(&'a [String]);

impl std::fmt::Display for DisplayAddrs<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, a) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{a}")?;
        }
        Ok(())
    }
}

/// Polls every listener once, starting after the one that accepted last, so that no listener
/// starves the others.
fn poll_accept_any(
    listeners: &[AnyListener],
    next: &mut usize,
    cx: &mut Context<'_>,
) -> Poll<io::Result<(AnyStream, SocketAddr)>> {
    let n = listeners.len();
    for i in 0..n {
        let idx = (*next + i) % n;
        if let Poll::Ready(r) = listeners[idx].poll_accept(cx) {
            *next = (idx + 1) % n;
            return Poll::Ready(r);
        }
    }
    Poll::Pending
}

fn spawn_connection<I, S, B>(
    stream: I,
    peer: SocketAddr,
    service: S,
    shared: &Arc<Shared>,
    conn: DrainConn,
) where
    I: AsyncRead + AsyncWrite + Peek + Unpin + Send + 'static,
    S: Service<Request<Incoming>, Response = Response<B>> + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    #[cfg(feature = "tls")]
    if shared.tls.is_some() {
        // The handshake in a task of its own, then the connection in another one sized for it
        // alone (a task keeps the room of its largest state for its whole life).
        let shared = shared.clone();
        tokio::spawn(async move {
            let Some(tls) = &shared.tls else { return };
            if let Some(stream) = tls.handshake(stream, peer).await {
                tokio::spawn(serve_connection(&shared.http, stream, peer, service, conn));
            }
        });
        return;
    }
    tokio::spawn(serve_connection(&shared.http, stream, peer, service, conn));
}

/// One connection served to its end through the drain: the hyper connection, held once and in
/// place (no `async` block around it, which would keep a second copy of it), and the peer
/// address for the log line.
fn serve_connection<I, S, B>(
    http: &auto::Builder<TokioExecutor>,
    io: I,
    peer: SocketAddr,
    service: S,
    conn: DrainConn,
) -> Connection<impl Future<Output = Result<(), BoxError>> + Send + 'static>
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: Service<Request<Incoming>, Response = Response<B>> + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    let io = Tracked {
        io,
        conn: conn.clone(),
    };
    let service = Counted::new(service, &conn);
    // Owned: the connection keeps a clone of the builder until it knows the protocol (a few
    // reference counts), and borrows nothing from the accept loop.
    let hyper_conn = http
        .serve_connection_with_upgrades(TokioIo::new(io), service)
        .into_owned();
    let driven = conn.drive(hyper_conn, tokio::time::sleep, |c| c.graceful_shutdown());
    Connection::new(driven, conn, peer)
}

/// The connection's I/O: every read that returns data is activity (a client that has started
/// sending is never cut off by the drain).
struct Tracked<I> {
    io: I,
    conn: DrainConn,
}

impl<I: AsyncRead + Unpin> AsyncRead for Tracked<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.io).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.conn.on_read();
        }
        r
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Tracked<I> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stream(l: &std::net::TcpListener) -> TcpStream {
        let c = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
        c.set_nonblocking(true).unwrap();
        TcpStream::from_std(c).unwrap()
    }

    /// A connection's task holds the hyper connection once: no copy of it left behind in an
    /// `async` block, no room for TLS in a plain connection (each idle connection pays for
    /// every byte of its task).
    #[tokio::test]
    async fn the_task_of_a_connection_is_the_hyper_connection_and_a_few_words() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let svc = hyper::service::service_fn(|_| async {
            Ok::<_, std::convert::Infallible>(Response::new(String::new()))
        });
        let drain = prefork_core::Drain::new(
            prefork_core::Shutdown::new().unwrap(),
            Default::default(),
            Duration::from_secs(1),
        );
        let http = crate::http_builder();
        let conn = drain.connection();
        let io = Tracked {
            io: stream(&l),
            conn: conn.clone(),
        };
        let hyper_conn = http
            .serve_connection_with_upgrades(TokioIo::new(io), Counted::new(svc, &conn))
            .into_owned();
        let alone = std::mem::size_of_val(&hyper_conn);
        drop(hyper_conn);
        let task = serve_connection(&http, stream(&l), UNIX_PEER, svc, conn);
        let size = std::mem::size_of_val(&task);
        assert!(
            size <= alone + 128,
            "task {size} bytes, the hyper connection alone {alone}"
        );
    }
}
