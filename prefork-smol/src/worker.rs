//! The worker's context its async code runs with: async listeners, worker id, shutdown, ready.

use std::fmt;
use std::future::Future;
use std::io;
use std::net::{SocketAddr, TcpListener};
use std::os::unix::net::UnixListener;
use std::sync::Arc;
use std::time::Duration;

use async_io::Async;
use prefork_core::Shutdown;
use smol::{Executor, Task};

use crate::runtime::SharedExecutor;

/// What a worker's async code receives: its listeners as smol types, its worker id, the shutdown
/// notification, the way to report ready, and the executor it runs on.
///
/// Handed to the closure of [`Server::run`](crate::Server::run) (in each worker) and of
/// [`Standalone::run`](crate::Standalone::run) (in the single process), inside the executor:
/// the closure's future runs on the calling thread, and [`Worker::spawn`] puts tasks on every
/// executor thread.
pub struct Worker {
    listeners: Vec<Async<TcpListener>>,
    unix_listeners: Vec<Async<UnixListener>>,
    drain: prefork_core::Drain,
    executor: SharedExecutor,
    /// The core context (no master in a [`Standalone`](crate::Standalone) process).
    core: prefork_core::Worker,
}

/// The former name of [`Worker`].
#[deprecated(since = "0.2.0", note = "renamed to `Worker`")]
pub type Context = Worker;

impl fmt::Debug for Worker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("Worker");
        d.field("id", &self.id())
            .field("listeners", &self.local_addrs())
            .field("shutdown_timeout", &self.shutdown_timeout())
            .field("prefork", &self.core.has_master());
        #[cfg(feature = "tls")]
        d.field("tls", &self.core.tls_config().is_some());
        d.finish_non_exhaustive()
    }
}

impl Worker {
    /// Converts the core context, on the worker's executor: registers the listeners with the
    /// async-io reactor.
    pub(crate) fn from_core(
        mut core: prefork_core::Worker,
        executor: SharedExecutor,
    ) -> io::Result<Worker> {
        #[cfg(not(feature = "tls"))]
        if core.tls_requested() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "TLS is configured but prefork-smol was built without its `tls` feature",
            ));
        }
        let listeners = core
            .take_listeners()
            .into_iter()
            .map(crate::into_async)
            .collect::<io::Result<Vec<_>>>()?;
        let unix_listeners = core
            .take_unix_listeners()
            .into_iter()
            .map(|l| {
                Async::new(l).map_err(|e| {
                    io::Error::new(
                        e.kind(),
                        format!("registering a Unix listener with async-io: {e}"),
                    )
                })
            })
            .collect::<io::Result<Vec<_>>>()?;
        Ok(Worker {
            listeners,
            unix_listeners,
            drain: prefork_core::Drain::for_worker(&core),
            executor,
            core,
        })
    }

    /// The worker id, `0..workers`, stable across respawns (`0` in a standalone process).
    pub fn id(&self) -> usize {
        self.core.id()
    }

    /// The former name of [`Worker::id`].
    #[deprecated(since = "0.2.0", note = "renamed to `id`")]
    pub fn worker_id(&self) -> usize {
        self.id()
    }

    /// The core context, for what this type does not forward (drain grace, keep-alive
    /// timeout, counters).
    pub fn core(&self) -> &prefork_core::Worker {
        &self.core
    }

    /// The listeners, in the order they were configured, registered with the async-io reactor.
    pub fn listeners(&self) -> &[Async<TcpListener>] {
        &self.listeners
    }

    /// Takes the listeners out of the context (leaving it empty), e.g. to move them into accept
    /// tasks. Wrap one in `smol::net::TcpListener::from` for smol's `incoming()` stream.
    pub fn take_listeners(&mut self) -> Vec<Async<TcpListener>> {
        std::mem::take(&mut self.listeners)
    }

    /// The Unix domain socket listeners (`unix:/path` addresses), registered with the async-io
    /// reactor. [`serve`](crate::serve) serves them with the TCP ones; a connection on them has
    /// no peer IP address.
    pub fn unix_listeners(&self) -> &[Async<UnixListener>] {
        &self.unix_listeners
    }

    /// Takes the Unix domain socket listeners out of the context.
    pub fn take_unix_listeners(&mut self) -> Vec<Async<UnixListener>> {
        std::mem::take(&mut self.unix_listeners)
    }

    /// Takes the listeners out of the context as async-std listeners (built on the same async-io
    /// reactor, see [`into_async_std`](crate::into_async_std)).
    ///
    /// async-std is discontinued upstream and smol is its successor: prefer
    /// [`Worker::take_listeners`] in new code.
    ///
    /// # Errors
    /// See [`into_async_std`](crate::into_async_std).
    #[cfg(feature = "async-std")]
    pub fn take_async_std_listeners(&mut self) -> io::Result<Vec<async_std::net::TcpListener>> {
        self.take_listeners()
            .into_iter()
            .map(crate::into_async_std)
            .collect()
    }

    /// The local addresses of the listeners still in the context.
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.listeners
            .iter()
            .filter_map(|l| l.get_ref().local_addr().ok())
            .collect()
    }

    /// Completes on SIGTERM, SIGINT or the master's death (see [`prefork_core::Shutdown`]).
    /// Each call returns a new waiter; await it, or race it against `accept`.
    pub fn shutdown(&self) -> Shutdown {
        self.core.shutdown()
    }

    /// The shutdown timeout: how long after [`Worker::shutdown`] completes the master waits
    /// before it kills this worker with SIGKILL. Drain within [`Worker::drain_timeout`], which
    /// leaves a margin to exit cleanly.
    pub fn shutdown_timeout(&self) -> Duration {
        self.core.shutdown_timeout()
    }

    /// How long to let in-flight work finish once [`Worker::shutdown`] completes before closing
    /// what is left and returning: the shutdown timeout less a margin (a quarter of it, at most
    /// one second), so that the worker exits on its own (status 0) before the master's SIGKILL;
    /// in a standalone process, which nothing kills, the whole shutdown timeout.
    pub fn drain_timeout(&self) -> Duration {
        self.core.drain_timeout()
    }

    /// The worker's drain state ([`prefork_core::Drain`]): request and connection counters (sent
    /// to the master with the heartbeats) and the flag that ends each connection at its next
    /// request boundary once the shutdown starts. For an accept loop of your own: count each
    /// connection with [`prefork_core::Drain::connection`] and drive it with
    /// [`prefork_core::DrainConn::drive`].
    pub fn drain(&self) -> prefork_core::Drain {
        self.drain.clone()
    }

    /// The worker's handle on the master's balance table ([`prefork_core::balance`]): an accept
    /// loop of your own calls [`Balance::admit`](prefork_core::balance::Balance::admit) (with
    /// `smol::future::yield_now`) before each `accept` and wraps the accept in
    /// [`Balance::parked`](prefork_core::balance::Balance::parked); [`serve`](crate::serve)
    /// does, and the executor reports its idle threads. Disabled in a standalone process.
    pub fn balance(&self) -> prefork_core::balance::Balance {
        self.core.balance()
    }

    /// The heartbeat to send from inside the worker's executor (`None` in a standalone
    /// process); [`serve`](crate::serve) runs it for you.
    pub fn heartbeat(&self) -> Option<prefork_core::Heartbeat> {
        self.core.has_master().then(|| self.core.heartbeat())
    }

    /// Tells the master that this worker accepts connections. Call it once the accept loop
    /// runs; later calls do nothing. In a standalone process it does nothing.
    ///
    /// Until it is called, an error returned by the worker's closure reaches the master, which
    /// stops and reports it ("worker N (pid P) failed to start: ...") instead of respawning.
    ///
    /// # Errors
    /// Fails if the master is gone.
    pub fn ready(&self) -> io::Result<()> {
        self.core.ready()
    }

    /// Whether this context belongs to a prefork worker (`false` for a standalone process).
    pub fn is_prefork_worker(&self) -> bool {
        self.core.has_master()
    }

    /// The executor the worker runs on (a `smol::Executor` driven by the worker's executor
    /// threads). Clone it into tasks that spawn more tasks.
    pub fn executor(&self) -> &Arc<Executor<'static>> {
        &self.executor
    }

    /// Spawns a task on the worker's executor. Detach it (`.detach()`) to let it run on its own;
    /// tasks still running when the worker's closure returns are dropped.
    pub fn spawn<T: Send + 'static>(
        &self,
        future: impl Future<Output = T> + Send + 'static,
    ) -> Task<T> {
        self.executor.spawn(future)
    }

    /// The validated TLS configuration, if the server was configured with one.
    #[cfg(feature = "tls")]
    pub fn tls_config(&self) -> Option<Arc<prefork_core::rustls::ServerConfig>> {
        self.core.tls_config()
    }

    /// A futures-rustls acceptor for [`Worker::tls_config`], if TLS is configured. Bound each
    /// handshake by [`Worker::tls_handshake_timeout`] (e.g. race it against an
    /// `async_io::Timer`), or a client that stalls mid-handshake holds its connection forever.
    #[cfg(feature = "tls")]
    pub fn tls_acceptor(&self) -> Option<futures_rustls::TlsAcceptor> {
        self.tls_config().map(futures_rustls::TlsAcceptor::from)
    }

    /// How long a TLS handshake may take before the connection is dropped (see
    /// [`TlsConfig::handshake_timeout`](prefork_core::TlsConfig::handshake_timeout)).
    #[cfg(feature = "tls")]
    pub fn tls_handshake_timeout(&self) -> Duration {
        self.core.tls_handshake_timeout()
    }
}
