//! TLS handshakes with tokio-rustls, each bounded by the handshake timeout; plain HTTP sent to
//! the TLS port is answered `400` instead.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use prefork_core::accept::{
    is_plain_http, HandshakeEnd, PLAIN_HTTP_PEEK_LEN, PLAIN_HTTP_READ_LIMIT, PLAIN_HTTP_RESPONSE,
};
use prefork_core::rustls::ServerConfig;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

use crate::serve::Peek;

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
    ///
    /// First, one peek at what the client sent: plain HTTP
    /// ([`is_plain_http`](prefork_core::accept::is_plain_http)) is answered `400` (HTTPS
    /// expected) and the connection closed, also `None` (on TCP: a Unix socket is not peeked). The handshake timeout bounds it all:
    /// a client that sends nothing is closed when it expires.
    pub(crate) async fn handshake<I>(&self, mut stream: I, peer: SocketAddr) -> Option<TlsStream<I>>
    where
        I: AsyncRead + AsyncWrite + Peek + Unpin,
    {
        let mut plain_http = false;
        let accept = async {
            let mut first = [0u8; PLAIN_HTTP_PEEK_LEN];
            if let Some(Ok(n)) = stream.peek_first(&mut first).await {
                if is_plain_http(&first[..n]) {
                    plain_http = true;
                    return Outcome::PlainHttp(refuse_plain_http(&mut stream).await);
                }
            }
            Outcome::Tls(self.acceptor.accept(stream).await)
        };
        match tokio::time::timeout(self.handshake_timeout, accept).await {
            Ok(Outcome::Tls(Ok(tls))) => {
                tracing::trace!(
                    %peer,
                    alpn = ?tls.get_ref().1.alpn_protocol().map(String::from_utf8_lossy),
                    "TLS handshake done"
                );
                Some(tls)
            }
            Ok(Outcome::Tls(Err(e))) => {
                HandshakeEnd::Failed(&e).log(peer, self.handshake_timeout);
                None
            }
            Ok(Outcome::PlainHttp(result)) => {
                HandshakeEnd::PlainHttp(result.as_ref().err()).log(peer, self.handshake_timeout);
                None
            }
            Err(_) => {
                HandshakeEnd::TimedOut { plain_http }.log(peer, self.handshake_timeout);
                None
            }
        }
    }
}

/// How the start of a connection on the TLS port ended.
enum Outcome<T> {
    /// The handshake ran.
    Tls(io::Result<T>),
    /// Plain HTTP was sent and answered `400`.
    PlainHttp(io::Result<()>),
}

/// Answers plain HTTP with `400` and ends the connection: writes the answer, ends the sending
/// side, then reads (and drops) what the client sent until it closes, so that the close is not a
/// reset that could destroy the answer before the client reads it.
async fn refuse_plain_http<I>(stream: &mut I) -> io::Result<()>
where
    I: AsyncRead + AsyncWrite + Unpin,
{
    stream.write_all(PLAIN_HTTP_RESPONSE).await?;
    stream.shutdown().await?;
    tokio::io::copy(
        &mut (&mut *stream).take(PLAIN_HTTP_READ_LIMIT),
        &mut tokio::io::sink(),
    )
    .await?;
    Ok(())
}
