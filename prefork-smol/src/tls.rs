//! The TLS handshake, bounded in time: a failed or stalled handshake costs its connection only.
//! Plain HTTP sent to the TLS port is answered `400` instead.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use async_io::Timer;
use futures_rustls::server::TlsStream;
use futures_rustls::TlsAcceptor;
use prefork_core::accept::{
    is_plain_http, HandshakeEnd, PLAIN_HTTP_PEEK_LEN, PLAIN_HTTP_READ_LIMIT, PLAIN_HTTP_RESPONSE,
};
use prefork_core::Shutdown;
use smol::future;
use smol::io::{AsyncReadExt, AsyncWriteExt};

use crate::accept::Socket;

/// How the start of a connection on the TLS port ended.
enum Outcome<T> {
    /// The handshake ran.
    Tls(io::Result<T>),
    /// Plain HTTP was sent and answered `400`.
    PlainHttp(io::Result<()>),
}

/// Runs the server side of the handshake for at most `timeout`. `None` (the connection is
/// dropped, i.e. closed) if it fails, times out, or the worker starts to stop meanwhile (a
/// connection that never sent a request has nothing to drain).
///
/// First, one peek at what the client sent: plain HTTP
/// ([`is_plain_http`](prefork_core::accept::is_plain_http)) is answered `400` (HTTPS expected)
/// and the connection closed, also `None` (on TCP: a Unix socket is not peeked). The same
/// timeout bounds it: a client that sends nothing is closed when it expires.
pub(crate) async fn handshake<I>(
    acceptor: &TlsAcceptor,
    mut stream: I,
    timeout: Duration,
    shutdown: &Shutdown,
    peer: SocketAddr,
) -> Option<TlsStream<I>>
where
    I: futures_io::AsyncRead + futures_io::AsyncWrite + Socket + Unpin,
{
    let mut plain_http = false;
    let accept = async {
        let mut first = [0u8; PLAIN_HTTP_PEEK_LEN];
        if let Some(Ok(n)) = stream.peek_first(&mut first).await {
            if is_plain_http(&first[..n]) {
                plain_http = true;
                return Some(Outcome::PlainHttp(refuse_plain_http(&mut stream).await));
            }
        }
        Some(Outcome::Tls(acceptor.accept(stream).await))
    };
    // `None`: the timeout expired or the worker is stopping.
    let outcome = future::or(accept, async {
        future::or(Timer::after(timeout), async {
            shutdown.clone().await;
            std::time::Instant::now()
        })
        .await;
        None
    })
    .await;
    match outcome {
        Some(Outcome::Tls(Ok(tls))) => Some(tls),
        Some(Outcome::Tls(Err(e))) => {
            HandshakeEnd::Failed(&e).log(peer, timeout);
            None
        }
        Some(Outcome::PlainHttp(result)) => {
            HandshakeEnd::PlainHttp(result.as_ref().err()).log(peer, timeout);
            None
        }
        None if shutdown.is_triggered() => None,
        None => {
            HandshakeEnd::TimedOut { plain_http }.log(peer, timeout);
            None
        }
    }
}

/// Answers plain HTTP with `400` and ends the connection: writes the answer, ends the sending
/// side, then reads (and drops) what the client sent until it closes, so that the close is not a
/// reset that could destroy the answer before the client reads it.
async fn refuse_plain_http<I>(stream: &mut I) -> io::Result<()>
where
    I: futures_io::AsyncRead + futures_io::AsyncWrite + Socket + Unpin,
{
    stream.write_all(PLAIN_HTTP_RESPONSE).await?;
    stream.flush().await?;
    stream.shutdown_write()?;
    smol::io::copy((&mut *stream).take(PLAIN_HTTP_READ_LIMIT), smol::io::sink()).await?;
    Ok(())
}
