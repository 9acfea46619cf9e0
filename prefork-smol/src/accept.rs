//! The accept loop: stops on shutdown, survives EMFILE.

use std::future::Future;
use std::io;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::pin::pin;
use std::time::Duration;

use async_io::{Async, Timer};
use prefork_core::balance::Balance;
use prefork_core::Shutdown;
use smol::future;

/// The first pause after an accept error such as EMFILE; it doubles while errors repeat.
pub(crate) const ACCEPT_BACKOFF_MIN: Duration = Duration::from_millis(10);
/// The longest pause between accept attempts while errors repeat.
pub(crate) const ACCEPT_BACKOFF_MAX: Duration = Duration::from_secs(1);

/// What `make_service`-like code sees as the peer of a connection on a Unix domain socket,
/// which has no peer IP address: the unspecified address `0.0.0.0:0`.
pub(crate) const UNIX_PEER: SocketAddr = SocketAddr::V4(std::net::SocketAddrV4::new(
    std::net::Ipv4Addr::UNSPECIFIED,
    0,
));

/// A listener the accept loop serves: TCP or a Unix domain socket.
pub(crate) trait Listen: Send + Sync + 'static {
    type Stream: Send + 'static;
    fn accept_one(&self) -> impl Future<Output = io::Result<(Self::Stream, SocketAddr)>> + Send;
    fn describe(&self) -> String;
}

impl Listen for Async<TcpListener> {
    type Stream = Async<TcpStream>;
    async fn accept_one(&self) -> io::Result<(Async<TcpStream>, SocketAddr)> {
        let (stream, peer) = self.accept().await?;
        let _ = stream.get_ref().set_nodelay(true);
        Ok((stream, peer))
    }
    fn describe(&self) -> String {
        crate::listener::describe(self.get_ref())
    }
}

impl Listen for Async<UnixListener> {
    type Stream = Async<UnixStream>;
    async fn accept_one(&self) -> io::Result<(Async<UnixStream>, SocketAddr)> {
        let (stream, _) = self.accept().await?;
        Ok((stream, UNIX_PEER))
    }
    fn describe(&self) -> String {
        prefork_core::accept::socket_name(self.get_ref().as_fd())
    }
}

/// What the start of a TLS connection needs from the accepted socket besides reading and
/// writing (to answer plain HTTP on a TLS port, see `tls::handshake`).
#[cfg_attr(not(feature = "tls"), allow(dead_code))]
pub(crate) trait Socket {
    /// Copies the first bytes the client sent into `buf` without consuming them, once some have
    /// come; `None` where the stream cannot be peeked.
    fn peek_first<'a>(
        &'a self,
        buf: &'a mut [u8],
    ) -> impl Future<Output = Option<io::Result<usize>>> + Send + 'a;

    /// Ends the sending side (the client reads the end after what was sent). async-io's
    /// `close` only flushes.
    fn shutdown_write(&self) -> io::Result<()>;
}

impl Socket for Async<TcpStream> {
    async fn peek_first<'a>(&'a self, buf: &'a mut [u8]) -> Option<io::Result<usize>> {
        Some(self.peek(buf).await)
    }

    fn shutdown_write(&self) -> io::Result<()> {
        self.get_ref().shutdown(std::net::Shutdown::Write)
    }
}

/// async-io has no `peek` for a Unix stream: TLS on a Unix socket goes to the handshake at once.
impl Socket for Async<UnixStream> {
    async fn peek_first<'a>(&'a self, _: &'a mut [u8]) -> Option<io::Result<usize>> {
        None
    }

    fn shutdown_write(&self) -> io::Result<()> {
        self.get_ref().shutdown(std::net::Shutdown::Write)
    }
}

enum Event<T> {
    Accepted(T),
    Stop,
}

/// Accepts connections from `listener` and hands each to `on_connection`, until `shutdown`
/// completes; then drops the listener (the worker's copy of it). Before each accept, `balance`
/// may hold the loop back (yielding) while this worker holds more than its share of the open
/// connections and an idle worker holds fewer; while it waits for a connection, the loop is
/// marked parked (see [`prefork_core::balance`]).
///
/// Accept errors are not fatal: a per-connection error is retried at once; any other (EMFILE,
/// ENFILE, ENOBUFS, ENOMEM) is logged and retried after a pause that doubles from
/// [`ACCEPT_BACKOFF_MIN`] up to [`ACCEPT_BACKOFF_MAX`] while the errors last.
pub(crate) async fn accept_loop<L: Listen>(
    listener: L,
    shutdown: Shutdown,
    balance: Balance,
    mut on_connection: impl FnMut(L::Stream, SocketAddr),
) {
    let addr = listener.describe();
    let mut shutdown = pin!(shutdown);
    let mut backoff = ACCEPT_BACKOFF_MIN;
    loop {
        if !balance.may_accept() {
            let stopped = future::or(
                async {
                    balance.admit(future::yield_now).await;
                    false
                },
                async {
                    shutdown.as_mut().await;
                    true
                },
            )
            .await;
            if stopped {
                break;
            }
        }
        // The shutdown is polled first: under load `accept` is always ready, and it must not
        // keep a stopping worker accepting.
        let event = future::or(
            async {
                shutdown.as_mut().await;
                Event::Stop
            },
            async { Event::Accepted(balance.parked(listener.accept_one()).await) },
        )
        .await;
        match event {
            Event::Stop => break,
            Event::Accepted(Ok((stream, peer))) => {
                backoff = ACCEPT_BACKOFF_MIN;
                on_connection(stream, peer);
            }
            Event::Accepted(Err(e)) if prefork_core::accept::is_connection_error(&e) => {
                tracing::debug!(%addr, error = %e, "accept: connection failed before it was accepted");
            }
            Event::Accepted(Err(e)) => {
                prefork_core::accept::log_accept_error(&addr, &e, backoff);
                let stopped = future::or(
                    async {
                        Timer::after(backoff).await;
                        false
                    },
                    async {
                        shutdown.as_mut().await;
                        true
                    },
                )
                .await;
                if stopped {
                    break;
                }
                backoff = (backoff * 2).min(ACCEPT_BACKOFF_MAX);
            }
        }
    }
    tracing::debug!(%addr, "stopped accepting");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stopping_accept_loop_leaves_pending_connections_alone() {
        // Connections wait in the queue, yet the loop stops at once: in shared-socket mode they
        // belong to the workers that keep accepting.
        let shutdown = Shutdown::new().unwrap();
        let listener = Async::<TcpListener>::bind(([127, 0, 0, 1], 0)).unwrap();
        let addr = listener.get_ref().local_addr().unwrap();
        let _queued: Vec<_> = (0..3).map(|_| TcpStream::connect(addr).unwrap()).collect();
        shutdown.trigger(prefork_core::ShutdownReason::Requested);
        let mut accepted = 0;
        smol::block_on(accept_loop(
            listener,
            shutdown,
            Balance::disabled(),
            |_, _| accepted += 1,
        ));
        assert_eq!(accepted, 0);
    }

    #[test]
    fn accept_loop_stops_on_shutdown() {
        let shutdown = Shutdown::new().unwrap();
        let listener = Async::<TcpListener>::bind(([127, 0, 0, 1], 0)).unwrap();
        let addr = listener.get_ref().local_addr().unwrap();
        let s = shutdown.clone();
        smol::block_on(async move {
            let mut accepted = 0;
            let client = std::thread::spawn(move || {
                let _c = TcpStream::connect(addr).unwrap();
                s.trigger(prefork_core::ShutdownReason::Requested);
            });
            accept_loop(listener, shutdown, Balance::disabled(), |_, _| {
                accepted += 1
            })
            .await;
            client.join().unwrap();
            assert!(accepted <= 1);
        });
    }
}
