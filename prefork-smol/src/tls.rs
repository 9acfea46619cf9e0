//! The TLS handshake, bounded in time: a failed or stalled handshake costs its connection only.

use std::net::SocketAddr;
use std::time::Duration;

use async_io::Timer;
use futures_rustls::server::TlsStream;
use futures_rustls::TlsAcceptor;
use prefork_core::Shutdown;
use smol::future;

/// Runs the server side of the handshake for at most `timeout`. `None` (the connection is
/// dropped, i.e. closed) if it fails, times out, or the worker starts to stop meanwhile (a
/// connection that never sent a request has nothing to drain).
pub(crate) async fn handshake<I>(
    acceptor: &TlsAcceptor,
    stream: I,
    timeout: Duration,
    shutdown: &Shutdown,
    peer: SocketAddr,
) -> Option<TlsStream<I>>
where
    I: futures_io::AsyncRead + futures_io::AsyncWrite + Unpin,
{
    // `None`: the timeout expired or the worker is stopping.
    let outcome = future::or(async { Some(acceptor.accept(stream).await) }, async {
        future::or(Timer::after(timeout), async {
            shutdown.clone().await;
            std::time::Instant::now()
        })
        .await;
        None
    })
    .await;
    match outcome {
        Some(Ok(tls)) => Some(tls),
        Some(Err(e)) => {
            tracing::debug!(%peer, error = %e, "TLS handshake failed; connection closed");
            None
        }
        None if shutdown.is_triggered() => None,
        None => {
            tracing::debug!(
                %peer,
                timeout_ms = timeout.as_millis() as u64,
                "TLS handshake timed out; connection closed"
            );
            None
        }
    }
}
