//! TLS handshakes with tokio-rustls, each bounded by the handshake timeout.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use prefork_core::rustls::ServerConfig;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

/// A worker's TLS set-up: the acceptor and how long a handshake may take.
#[derive(Clone)]
pub(crate) struct Tls {
    acceptor: TlsAcceptor,
    handshake_timeout: Duration,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls")
            .field("alpn", &self.acceptor.config().alpn_protocols)
            .field("handshake_timeout", &self.handshake_timeout)
            .finish_non_exhaustive()
    }
}

impl Tls {
    pub(crate) fn new(config: Arc<ServerConfig>, handshake_timeout: Duration) -> Self {
        Tls {
            acceptor: TlsAcceptor::from(config),
            handshake_timeout,
        }
    }

    pub(crate) fn config(&self) -> Arc<ServerConfig> {
        self.acceptor.config().clone()
    }

    /// Runs the handshake; `None` (and a `debug` line) if it fails or times out: that costs
    /// this connection only. The protocol chosen by ALPN (`h2` or `http/1.1`, from the
    /// configuration's list) is what the client then speaks, and hyper-util's automatic builder
    /// follows it.
    pub(crate) async fn handshake<I>(&self, stream: I, peer: SocketAddr) -> Option<TlsStream<I>>
    where
        I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    {
        match tokio::time::timeout(self.handshake_timeout, self.acceptor.accept(stream)).await {
            Ok(Ok(tls)) => {
                tracing::trace!(
                    %peer,
                    alpn = ?tls.get_ref().1.alpn_protocol().map(String::from_utf8_lossy),
                    "TLS handshake done"
                );
                Some(tls)
            }
            Ok(Err(e)) => {
                tracing::debug!(%peer, error = %e, "TLS handshake failed");
                None
            }
            Err(_) => {
                tracing::debug!(
                    %peer,
                    timeout_ms = self.handshake_timeout.as_millis() as u64,
                    "TLS handshake timed out"
                );
                None
            }
        }
    }
}
