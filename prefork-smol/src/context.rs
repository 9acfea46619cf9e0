//! The context a worker's async code runs with: async listeners, worker id, shutdown, ready.

use std::fmt;
use std::future::Future;
use std::io;
use std::net::{SocketAddr, TcpListener};
use std::os::unix::net::UnixListener;
use std::sync::Arc;
use std::time::Duration;

use async_io::Async;
use prefork_core::{Child, Shutdown};
use smol::{Executor, Task};

use crate::runtime::SharedExecutor;

/// What a worker's async code receives: its listeners as smol types, its worker id, the shutdown
/// notification, the way to report ready, and the executor it runs on.
///
/// Handed to the closure of [`Server::run`](crate::Server::run) (in each worker) and of
/// [`Standalone::run`](crate::Standalone::run) (in the single process), inside the executor:
/// the closure's future runs on the calling thread, and [`Context::spawn`] puts tasks on every
/// executor thread.
pub struct Context {
    pub(crate) worker_id: usize,
    pub(crate) listeners: Vec<Async<TcpListener>>,
    pub(crate) unix_listeners: Vec<Async<UnixListener>>,
    pub(crate) shutdown: Shutdown,
    pub(crate) shutdown_timeout: Duration,
    pub(crate) drain: prefork_core::Drain,
    pub(crate) executor: SharedExecutor,
    /// `None` in a [`Standalone`](crate::Standalone) process: nobody waits for `ready`.
    pub(crate) child: Option<Child>,
    #[cfg(feature = "tls")]
    pub(crate) tls: Option<(Arc<prefork_core::rustls::ServerConfig>, Duration)>,
}

impl fmt::Debug for Context {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("Context");
        d.field("worker_id", &self.worker_id)
            .field("listeners", &self.local_addrs())
            .field("shutdown", &self.shutdown)
            .field("shutdown_timeout", &self.shutdown_timeout)
            .field("prefork", &self.child.is_some());
        #[cfg(feature = "tls")]
        d.field("tls", &self.tls.is_some());
        d.finish_non_exhaustive()
    }
}

impl Context {
    /// The worker id, `0..workers`, stable across respawns (`0` in a standalone process).
    pub fn worker_id(&self) -> usize {
        self.worker_id
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
    /// [`Context::take_listeners`] in new code.
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
        self.shutdown.clone()
    }

    /// The shutdown timeout: how long after [`Context::shutdown`] completes the master waits
    /// before it kills this worker with SIGKILL. Drain within [`Context::drain_timeout`], which
    /// leaves a margin to exit cleanly.
    pub fn shutdown_timeout(&self) -> Duration {
        self.shutdown_timeout
    }

    /// How long to let in-flight work finish once [`Context::shutdown`] completes before closing
    /// what is left and returning: the shutdown timeout less a margin (a quarter of it, at most
    /// one second), so that the worker exits on its own (status 0) before the master's SIGKILL.
    pub fn drain_timeout(&self) -> Duration {
        prefork_core::drain_timeout(self.shutdown_timeout)
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
    /// `async_io::Timer::after`) before each `accept`; [`serve`](crate::serve) does. Disabled
    /// in a standalone process.
    pub fn balance(&self) -> prefork_core::balance::Balance {
        self.child
            .as_ref()
            .map(Child::balance)
            .unwrap_or_else(prefork_core::balance::Balance::disabled)
    }

    /// The heartbeat to send from inside the worker's executor (`None` in a standalone
    /// process); [`serve`](crate::serve) runs it for you.
    pub fn heartbeat(&self) -> Option<prefork_core::Heartbeat> {
        self.child.as_ref().map(|c| c.heartbeat())
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
        match &self.child {
            Some(child) => child.ready(),
            None => Ok(()),
        }
    }

    /// Whether this context belongs to a prefork worker (`false` for a standalone process).
    pub fn is_prefork_worker(&self) -> bool {
        self.child.is_some()
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
        self.tls.as_ref().map(|(c, _)| c.clone())
    }

    /// A futures-rustls acceptor for [`Context::tls_config`], if TLS is configured. Bound each
    /// handshake by [`Context::tls_handshake_timeout`] (e.g. race it against an
    /// `async_io::Timer`), or a client that stalls mid-handshake holds its connection forever.
    #[cfg(feature = "tls")]
    pub fn tls_acceptor(&self) -> Option<futures_rustls::TlsAcceptor> {
        self.tls_config().map(futures_rustls::TlsAcceptor::from)
    }

    /// How long a TLS handshake may take before the connection is dropped (see
    /// [`TlsConfig::handshake_timeout`](prefork_core::TlsConfig::handshake_timeout)).
    #[cfg(feature = "tls")]
    pub fn tls_handshake_timeout(&self) -> Duration {
        self.tls
            .as_ref()
            .map(|(_, t)| *t)
            .unwrap_or(prefork_core::DEFAULT_HANDSHAKE_TIMEOUT)
    }
}
