//! The worker's context on its tokio runtime.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use hyper::body::{Body, Incoming};
use hyper::service::Service;
use hyper::{Request, Response};
use hyper_util::rt::TokioExecutor;
use hyper_util::server::conn::auto;
use prefork_core::{Counters, Drain, Shutdown};
use tokio::net::{TcpListener, UnixListener};

use crate::BoxError;

/// A worker's context inside its tokio runtime: the listeners as [`tokio::net::TcpListener`]s,
/// the worker id, the shutdown future, the drain budget, and the way to tell the master that
/// the worker is ready.
///
/// Handed to the closure of [`Server::run`](crate::Server::run) in each worker. Serve HTTP
/// with [`Worker::serve`], or take the listeners and run any accept loop.
#[derive(Debug)]
pub struct Worker {
    worker_id: usize,
    listeners: Vec<TcpListener>,
    unix_listeners: Vec<UnixListener>,
    shutdown: Shutdown,
    shutdown_timeout: Duration,
    drain: Drain,
    core: prefork_core::Worker,
    #[cfg(feature = "tls")]
    pub(crate) tls: Option<crate::tls::Tls>,
}

impl Worker {
    /// Converts the core context (in the worker's runtime).
    pub(crate) fn from_core(mut child: prefork_core::Worker) -> io::Result<Self> {
        #[cfg(not(feature = "tls"))]
        if child.tls_requested() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "TLS is configured but prefork-tokio was built without its `tls` feature",
            ));
        }
        let listeners = convert(child.take_listeners())?;
        let unix_listeners = child
            .take_unix_listeners()
            .into_iter()
            .map(|l| {
                l.set_nonblocking(true)?;
                UnixListener::from_std(l).map_err(|e| {
                    io::Error::new(
                        e.kind(),
                        format!("registering a Unix listener with tokio: {e}"),
                    )
                })
            })
            .collect::<io::Result<Vec<_>>>()?;
        Ok(Worker {
            worker_id: child.id(),
            listeners,
            unix_listeners,
            shutdown: child.shutdown(),
            shutdown_timeout: child.shutdown_timeout(),
            drain: Drain::for_worker(&child),
            #[cfg(feature = "tls")]
            tls: child
                .tls_config()
                .map(|c| crate::tls::Tls::new(c, child.tls_handshake_timeout())),
            core: child,
        })
    }

    /// A context for serving without prefork: the same serving code in this one process, on
    /// listeners you bound, stopping when `shutdown` is triggered (e.g. from a signal handler).
    /// The worker id is 0, [`Worker::ready`] does nothing, and the drain budget is
    /// [`DEFAULT_SHUTDOWN_TIMEOUT`](prefork_core::DEFAULT_SHUTDOWN_TIMEOUT) unless changed with [`Worker::with_shutdown_timeout`].
    ///
    /// [`Standalone`](crate::Standalone) builds the runtime, binds, installs the signal
    /// handlers and calls this for you; use it directly when you already run inside a tokio
    /// runtime of your own.
    ///
    /// # Errors
    /// Fails if a listener cannot be made non-blocking or registered with the runtime; the
    /// message names its address.
    ///
    /// # Panics
    /// Outside a tokio runtime (as [`TcpListener::from_std`]).
    pub fn standalone(
        listeners: Vec<std::net::TcpListener>,
        shutdown: Shutdown,
    ) -> io::Result<Self> {
        for l in &listeners {
            l.set_nonblocking(true)
                .map_err(|e| with_addr(l, "making the listener non-blocking", e))?;
        }
        Worker::from_core(prefork_core::Worker::standalone(listeners, shutdown))
    }

    /// Replaces the shutdown timeout (see [`Worker::shutdown_timeout`]). In a worker, the
    /// master's own deadline still bounds the drain (see [`Worker::drain_timeout`]).
    pub fn with_shutdown_timeout(mut self, timeout: Duration) -> Self {
        self.shutdown_timeout = timeout;
        if !self.core.has_master() {
            // Nothing kills a standalone process: its drain may take the whole timeout.
            self.core = self.core.with_shutdown_timeout(timeout);
        }
        self
    }

    /// Serves TLS with this configuration (ALPN included) and handshake timeout. A worker
    /// started by [`Server::run`](crate::Server::run) already has the configuration of
    /// [`Prefork::tls`](prefork_core::Prefork::tls), loaded and validated by the master.
    #[cfg(feature = "tls")]
    pub fn with_tls(
        mut self,
        config: std::sync::Arc<prefork_core::rustls::ServerConfig>,
        handshake_timeout: Duration,
    ) -> Self {
        self.tls = Some(crate::tls::Tls::new(config, handshake_timeout));
        self
    }

    /// The worker id, `0..workers`, stable across respawns (0 for a standalone context).
    pub fn id(&self) -> usize {
        self.worker_id
    }

    /// The former name of [`Worker::id`].
    #[deprecated(since = "0.2.0", note = "renamed to `id`")]
    pub fn worker_id(&self) -> usize {
        self.worker_id
    }

    /// The listeners, in the order they were configured.
    pub fn listeners(&self) -> &[TcpListener] {
        &self.listeners
    }

    /// Takes the listeners out of the context, for an accept loop of your own (then
    /// [`Worker::serve`] has nothing left to serve).
    pub fn take_listeners(&mut self) -> Vec<TcpListener> {
        std::mem::take(&mut self.listeners)
    }

    /// The Unix domain socket listeners (`unix:/path` addresses), in the order they were
    /// configured. [`Worker::serve`] serves them with the TCP ones.
    pub fn unix_listeners(&self) -> &[UnixListener] {
        &self.unix_listeners
    }

    /// Takes the Unix domain socket listeners out of the context.
    pub fn take_unix_listeners(&mut self) -> Vec<UnixListener> {
        std::mem::take(&mut self.unix_listeners)
    }

    /// Completes on SIGTERM, SIGINT or the master's death: stop accepting and drain. Cheap to
    /// clone; use it as a future (`child.shutdown().await`) or in `tokio::select!`.
    pub fn shutdown(&self) -> Shutdown {
        self.shutdown.clone()
    }

    /// The shutdown timeout: in a worker, how long the master waits for it once it asked it
    /// to stop (then SIGKILL); in a standalone context, how long the drain may take.
    pub fn shutdown_timeout(&self) -> Duration {
        self.shutdown_timeout
    }

    /// How long [`Worker::serve`] lets in-flight requests finish once the shutdown starts.
    ///
    /// - In a worker: [`prefork_core::Worker::drain_timeout`] (the master's shutdown timeout less a quarter,
    ///   at most 1 s), so that a worker draining for its whole budget still exits on its own
    ///   before the master's SIGKILL; never more than [`Worker::shutdown_timeout`] if that
    ///   was lowered with [`Worker::with_shutdown_timeout`].
    /// - In a standalone context: the whole [`Worker::shutdown_timeout`], since no master
    ///   will kill the process.
    pub fn drain_timeout(&self) -> Duration {
        self.core.drain_timeout().min(self.shutdown_timeout)
    }

    /// Tells the master that this worker accepts connections. Call it once your accept loop
    /// runs ([`Worker::serve`] does it for you); later calls do nothing.
    ///
    /// # Errors
    /// Fails if the master is gone.
    pub fn ready(&self) -> io::Result<()> {
        self.core.ready()
    }

    /// The TLS configuration this context serves with, if any.
    #[cfg(feature = "tls")]
    pub fn tls_config(&self) -> Option<std::sync::Arc<prefork_core::rustls::ServerConfig>> {
        self.tls.as_ref().map(|t| t.config())
    }

    /// The worker's drain state (see [`Drain`]): the request and connection counters the
    /// master reads from the heartbeats, and the flag that tells connections to end at their
    /// next request boundary. For an accept loop of your own: count each connection with
    /// [`Drain::connection`] and drive it with [`prefork_core::DrainConn::drive`].
    pub fn drain(&self) -> Drain {
        self.drain.clone()
    }

    /// The worker's request and connection counters ([`Worker::serve`] counts every
    /// request and connection).
    pub fn counters(&self) -> Counters {
        self.drain.counters().clone()
    }

    /// The worker's handle on the master's balance table ([`prefork_core::balance`]): an accept
    /// loop of your own calls [`Balance::admit`](prefork_core::balance::Balance::admit) (with
    /// `tokio::task::yield_now`) before each `accept` and wraps the accept in
    /// [`Balance::parked`](prefork_core::balance::Balance::parked) ([`Worker::serve`]
    /// does; the runtime the builder starts reports its idle threads). Disabled in a standalone
    /// context.
    pub fn balance(&self) -> prefork_core::balance::Balance {
        self.core.balance()
    }

    /// The core context, for what this type does not forward (heartbeat, drain grace,
    /// keep-alive timeout).
    pub fn core(&self) -> &prefork_core::Worker {
        &self.core
    }

    /// Serves HTTP on every listener until the shutdown future completes, then drains, with
    /// the connection builder of [`http_builder`](crate::http_builder).
    ///
    /// `make_service` is called once per accepted connection with the peer's address (on a Unix
    /// domain socket, which has no peer IP, the unspecified address `0.0.0.0:0`), and
    /// returns the service for that connection (clone your service, or wrap it to add the
    /// address to each request).
    ///
    /// - **Accepting.** One loop over all listeners, in the task that calls `serve` (no extra
    ///   hop); each connection gets `TCP_NODELAY` and one task of its own. [`Worker::ready`]
    ///   is reported just before the loop starts.
    /// - **Protocols.** hyper-util's automatic builder: HTTP/1.1 with keep-alive, or HTTP/2 when
    ///   the client opens with the HTTP/2 preface (h2c, or `h2` negotiated by ALPN over TLS);
    ///   HTTP upgrades (websockets) work.
    /// - **TLS.** With a TLS configuration, each connection's handshake runs in its own task,
    ///   bounded by the handshake timeout; a failed or stalled handshake (garbage, a client that
    ///   stops mid-handshake) costs that connection only and is logged at `debug`. Plain HTTP
    ///   sent to the TLS port is answered `400 Bad Request` (HTTPS expected), then closed.
    /// - **Shutdown.** When [`Worker::shutdown`] completes: the listeners are closed (in the
    ///   shared-socket mode the other workers keep accepting from the queue), idle keep-alive
    ///   connections are closed, in-flight requests finish (HTTP/1.1 answers them with
    ///   `connection: close`, HTTP/2 sends GOAWAY), all bounded by
    ///   [`Worker::drain_timeout`] (in a worker, the shutdown timeout less a margin so the
    ///   worker ends on its own before the master's SIGKILL); connections still open then are
    ///   dropped.
    ///
    /// # Errors
    /// Only from reporting ready (the master is gone). Accept errors never end the loop:
    /// connection-level errors (ECONNABORTED, ECONNRESET) are skipped; others, such as EMFILE or
    /// ENFILE (out of descriptors), are logged at `error` and retried after a short backoff.
    pub async fn serve<M, S, B>(self, make_service: M) -> io::Result<()>
    where
        M: FnMut(SocketAddr) -> S,
        S: Service<Request<Incoming>, Response = Response<B>> + Send + 'static,
        S::Future: Send + 'static,
        S::Error: Into<BoxError>,
        B: Body + Send + 'static,
        B::Data: Send,
        B::Error: Into<BoxError>,
    {
        let http =
            crate::server::builder(crate::DEFAULT_MAX_BUF_SIZE, self.core.header_read_timeout());
        self.serve_with(http, make_service).await
    }

    /// [`Worker::serve`] with your own hyper-util connection builder (HTTP/2 settings,
    /// header limits, timeouts); see [`http_builder`](crate::http_builder).
    ///
    /// # Errors
    /// As [`Worker::serve`].
    pub async fn serve_with<M, S, B>(
        mut self,
        http: auto::Builder<TokioExecutor>,
        make_service: M,
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
        use crate::serve::AnyListener;
        let listeners = self
            .take_listeners()
            .into_iter()
            .map(AnyListener::Tcp)
            .chain(
                self.take_unix_listeners()
                    .into_iter()
                    .map(AnyListener::Unix),
            )
            .collect();
        crate::serve::serve(self, listeners, http, make_service).await
    }
}

fn convert(listeners: Vec<std::net::TcpListener>) -> io::Result<Vec<TcpListener>> {
    listeners
        .into_iter()
        .map(|l| {
            let addr = l.local_addr().ok();
            TcpListener::from_std(l).map_err(|e| {
                let at = addr.map(|a| format!(" on {a}")).unwrap_or_default();
                io::Error::new(
                    e.kind(),
                    format!("registering the listener{at} with tokio: {e}"),
                )
            })
        })
        .collect()
}

fn with_addr(l: &std::net::TcpListener, what: &str, e: io::Error) -> io::Error {
    let at = l
        .local_addr()
        .map(|a| format!(" on {a}"))
        .unwrap_or_default();
    io::Error::new(e.kind(), format!("{what}{at}: {e}"))
}
