//! The accept loop, one task per connection, and the graceful drain.

use std::future::poll_fn;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper::body::{Body, Incoming};
use hyper::service::Service;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};

use crate::child::TokioChild;
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

pub(crate) async fn serve<M, S, B>(
    child: TokioChild,
    listeners: Vec<TcpListener>,
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
    let graceful = GracefulShutdown::new();
    let mut shutdown = child.shutdown();
    let addrs: Vec<SocketAddr> = listeners
        .iter()
        .filter_map(|l| l.local_addr().ok())
        .collect();
    tracing::debug!(worker = child.worker_id(), ?addrs, "accepting");
    child.ready()?;

    let mut next = 0;
    let reason = loop {
        let accepted = tokio::select! {
            biased;
            reason = &mut shutdown => break reason,
            accepted = poll_fn(|cx| poll_accept_any(&listeners, &mut next, cx)) => accepted,
        };
        match accepted {
            Ok((stream, peer)) => {
                let service = make_service(peer);
                spawn_connection(stream, peer, service, &shared, graceful.watcher());
            }
            Err(e) if is_connection_error(&e) => {
                tracing::debug!(error = %e, "accept: connection error");
            }
            Err(e) => {
                tracing::error!(
                    error = %e,
                    backoff_ms = ACCEPT_BACKOFF.as_millis() as u64,
                    "accept failed; retrying after a pause"
                );
                tokio::select! {
                    biased;
                    reason = &mut shutdown => break reason,
                    () = tokio::time::sleep(ACCEPT_BACKOFF) => {}
                }
            }
        }
    };

    // Stop accepting: in the shared-socket mode the queue stays open for the other workers.
    drop(listeners);
    let open = graceful.count();
    let budget = child.drain_timeout();
    tracing::debug!(?reason, open, "draining");
    if tokio::time::timeout(budget, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            timeout_ms = budget.as_millis() as u64,
            "drain did not finish within the shutdown timeout; closing the remaining connections"
        );
    }
    Ok(())
}

/// Polls every listener once, starting after the one that accepted last, so that no listener
/// starves the others.
fn poll_accept_any(
    listeners: &[TcpListener],
    next: &mut usize,
    cx: &mut Context<'_>,
) -> Poll<io::Result<(TcpStream, SocketAddr)>> {
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

/// Errors that concern the one connection being accepted, not the listener.
fn is_connection_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    )
}

fn spawn_connection<S, B>(
    stream: TcpStream,
    peer: SocketAddr,
    service: S,
    shared: &Arc<Shared>,
    watcher: Watcher,
) where
    S: Service<Request<Incoming>, Response = Response<B>> + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    if let Err(e) = stream.set_nodelay(true) {
        tracing::debug!(error = %e, %peer, "TCP_NODELAY");
    }
    let shared = shared.clone();
    tokio::spawn(async move {
        #[cfg(feature = "tls")]
        if let Some(tls) = &shared.tls {
            if let Some(stream) = tls.handshake(stream, peer).await {
                serve_connection(&shared.http, stream, peer, service, watcher).await;
            }
            return;
        }
        serve_connection(&shared.http, stream, peer, service, watcher).await;
    });
}

async fn serve_connection<I, S, B>(
    http: &auto::Builder<TokioExecutor>,
    io: I,
    peer: SocketAddr,
    service: S,
    watcher: Watcher,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: Service<Request<Incoming>, Response = Response<B>> + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    let conn = http.serve_connection_with_upgrades(TokioIo::new(io), service);
    if let Err(e) = watcher.watch(conn).await {
        tracing::debug!(error = %e, %peer, "connection ended with an error");
    }
}
