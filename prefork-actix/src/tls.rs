//! TLS for [`Server::serve`](crate::Server::serve): tokio-rustls handshakes on prefork's own
//! accept loop, each bounded by the handshake timeout; plain HTTP sent to the TLS port is
//! answered `400` (HTTPS expected) and the connection closed, as nginx does.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use actix_http::Protocol;
use actix_web::rt::net::TcpStream;
use prefork_core::accept::{
    is_plain_http, HandshakeEnd, PLAIN_HTTP_PEEK_LEN, PLAIN_HTTP_READ_LIMIT, PLAIN_HTTP_RESPONSE,
};
use prefork_core::rustls::ServerConfig;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

/// A worker's TLS set-up: the acceptor and how long a handshake may take.
#[derive(Clone)]
pub(crate) struct Tls {
    acceptor: TlsAcceptor,
    handshake_timeout: Duration,
}

impl Tls {
    /// The configuration validated by the master (its ALPN list as it is: `h2` and
    /// `http/1.1` by default).
    pub(crate) fn new(config: Arc<ServerConfig>, handshake_timeout: Duration) -> Tls {
        Tls {
            acceptor: TlsAcceptor::from(config),
            handshake_timeout,
        }
    }

    /// Runs the handshake: the TLS stream and the protocol the client chose by ALPN, or `None`
    /// (and a `debug` line) if the handshake failed or timed out, which costs this connection
    /// only. First, one peek at what the client sent: plain HTTP
    /// ([`is_plain_http`](prefork_core::accept::is_plain_http)) is answered `400` and the
    /// connection closed, also `None`. The handshake timeout bounds it all.
    pub(crate) async fn handshake(
        &self,
        mut stream: TcpStream,
        peer: SocketAddr,
    ) -> Option<(TlsStream<TcpStream>, Protocol)> {
        let mut plain_http = false;
        let accept = async {
            let mut first = [0u8; PLAIN_HTTP_PEEK_LEN];
            if let Ok(n) = stream.peek(&mut first).await {
                if is_plain_http(&first[..n]) {
                    plain_http = true;
                    return Err(refuse_plain_http(&mut stream).await);
                }
            }
            Ok(self.acceptor.accept(stream).await)
        };
        match actix_rt::time::timeout(self.handshake_timeout, accept).await {
            Ok(Ok(Ok(tls))) => {
                let protocol = match tls.get_ref().1.alpn_protocol() {
                    Some(b"h2") => Protocol::Http2,
                    _ => Protocol::Http1,
                };
                tracing::trace!(%peer, ?protocol, "TLS handshake done");
                Some((tls, protocol))
            }
            Ok(Ok(Err(e))) => {
                HandshakeEnd::Failed(&e).log(peer, self.handshake_timeout);
                None
            }
            Ok(Err(result)) => {
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

/// Answers plain HTTP with `400` and ends the connection: writes the answer, ends the sending
/// side, then reads (and drops) what the client sent until it closes, so that the close is not a
/// reset that could destroy the answer before the client reads it.
async fn refuse_plain_http(stream: &mut TcpStream) -> io::Result<()> {
    stream.write_all(PLAIN_HTTP_RESPONSE).await?;
    stream.shutdown().await?;
    tokio::io::copy(
        &mut (&mut *stream).take(PLAIN_HTTP_READ_LIMIT),
        &mut tokio::io::sink(),
    )
    .await?;
    Ok(())
}
