//! The server: the process model ([`Prefork`]), the runtime's threads, then `serve(app)` or
//! `serve_with(factory)`.

use std::io;
use std::process::Command;
use std::time::Duration;

use axum::Router;
use prefork_core::{BoxError, Error, ListenAddr, Network, Prefork, SpawnContext};
use prefork_tokio::Worker;

/// An axum app under prefork, with every option: the process model on the [`Prefork`]
/// (reached with [`Server::prefork`]: workers, reload, health, TLS, hooks; its defaults are
/// one worker per CPU, a shared listening socket, a 30 s shutdown timeout) and one
/// `current_thread` runtime per worker ([`Server::threads`]).
///
/// ```no_run
/// use std::time::Duration;
/// use axum::{routing::get, Router};
///
/// fn main() -> Result<(), prefork_axum::Error> {
///     prefork_axum::Server::new("0.0.0.0:8080")
///         .prefork(|p| {
///             p.workers(4)
///                 .shutdown_timeout(Duration::from_secs(10))
///                 .on_master_ready(|pids| {
///                     tracing::info!(?pids, "serving");
///                     Ok(())
///                 })
///         })
///         .serve_with(async |worker| {
///             tracing::info!(worker = worker.id(), "building the app");
///             Ok(Router::new().route("/", get(|| async { "Hello, World!" })))
///         })
/// }
/// ```
#[derive(Debug)]
#[must_use = "a Server does nothing until `serve` or `serve_with` is called"]
pub struct Server {
    inner: prefork_tokio::Server,
    max_request_head: usize,
}

/// The former name of [`Server`].
#[deprecated(since = "0.2.0", note = "renamed to `Server`")]
pub type Builder = Server;

impl Server {
    /// A server listening on `addr` (`"0.0.0.0:8080"`, `"[::]:8080"`, `"localhost:3000"`, a
    /// `SocketAddr`; port 0 picks a free port shared by every worker).
    pub fn new(addr: impl Into<ListenAddr>) -> Self {
        Server::from_prefork(Prefork::new(addr))
    }

    /// Starts from a configured [`Prefork`] (more listeners, network, command producer, ...).
    pub fn from_prefork(prefork: Prefork) -> Self {
        Server {
            inner: prefork_tokio::Server::from_prefork(prefork),
            max_request_head: prefork_tokio::DEFAULT_MAX_BUF_SIZE,
        }
    }

    /// Changes the process-model configuration:
    /// `.prefork(|p| p.workers(4).max_requests(10_000, 500))`.
    pub fn prefork(mut self, configure: impl FnOnce(Prefork) -> Prefork) -> Self {
        self.inner = self.inner.prefork(configure);
        self
    }

    /// The former name of [`Server::prefork`].
    #[deprecated(since = "0.2.0", note = "renamed to `prefork`")]
    pub fn map_prefork(self, f: impl FnOnce(Prefork) -> Prefork) -> Self {
        self.prefork(f)
    }

    /// Adds a listen address; every worker serves every listener.
    #[deprecated(
        since = "0.2.0",
        note = "set it on the process model: `.prefork(|p| p.listen(..))`"
    )]
    pub fn listen(self, addr: impl Into<ListenAddr>) -> Self {
        self.prefork(|p| p.listen(addr))
    }

    /// The address families to listen on. Default: [`Network::Tcp`] (the address's own
    /// family). See [`Prefork::network`].
    #[deprecated(
        since = "0.2.0",
        note = "set it on the process model: `.prefork(|p| p.network(..))`"
    )]
    pub fn network(self, network: Network) -> Self {
        self.prefork(|p| p.network(network))
    }

    /// Worker processes. Default: the number of CPUs available to this process. `0` is refused
    /// when serving. See [`Prefork::workers`].
    #[deprecated(
        since = "0.2.0",
        note = "set it on the process model: `.prefork(|p| p.workers(..))`"
    )]
    pub fn workers(self, workers: usize) -> Self {
        self.prefork(|p| p.workers(workers))
    }

    /// One `SO_REUSEPORT` socket per worker instead of one shared socket (Linux only). Default:
    /// off. See [`Prefork::reuseport`] for the caveats.
    #[deprecated(
        since = "0.2.0",
        note = "set it on the process model: `.prefork(|p| p.reuseport(..))`"
    )]
    pub fn reuseport(self, on: bool) -> Self {
        self.prefork(|p| p.reuseport(on))
    }

    /// The listen backlog. Default: `/proc/sys/net/core/somaxconn`, else 4096.
    #[deprecated(
        since = "0.2.0",
        note = "set it on the process model: `.prefork(|p| p.backlog(..))`"
    )]
    pub fn backlog(self, backlog: i32) -> Self {
        self.prefork(|p| p.backlog(backlog))
    }

    /// Worker threads per worker process. Default: 1 (a `current_thread` runtime); more builds a
    /// multi-threaded runtime. `0` is refused when serving.
    pub fn threads(mut self, threads: usize) -> Self {
        self.inner = self.inner.threads(threads);
        self
    }

    /// How long a stopping worker may drain in-flight requests before it is killed. Default:
    /// 30 s.
    #[deprecated(
        since = "0.2.0",
        note = "set it on the process model: `.prefork(|p| p.shutdown_timeout(..))`"
    )]
    pub fn shutdown_timeout(self, timeout: Duration) -> Self {
        self.prefork(|p| p.shutdown_timeout(timeout))
    }

    /// Unexpected worker exits tolerated before the master stops everything and fails. Default:
    /// `max(1, workers / 2)`. See [`Prefork::recover_threshold`].
    #[deprecated(
        since = "0.2.0",
        note = "set it on the process model: `.prefork(|p| p.recover_threshold(..))`"
    )]
    pub fn recover_threshold(self, threshold: usize) -> Self {
        self.prefork(|p| p.recover_threshold(threshold))
    }

    /// Counts only the exits within this sliding window toward the threshold. Default: none.
    #[deprecated(
        since = "0.2.0",
        note = "set it on the process model: `.prefork(|p| p.recover_window(..))`"
    )]
    pub fn recover_window(self, window: Duration) -> Self {
        self.prefork(|p| p.recover_window(window))
    }

    /// Called in the master with the pid of every worker it starts. See
    /// [`Prefork::on_worker_spawn`].
    #[deprecated(
        since = "0.2.0",
        note = "set it on the process model: `.prefork(|p| p.on_worker_spawn(..))`"
    )]
    pub fn on_worker_spawn<F>(self, hook: F) -> Self
    where
        F: FnMut(u32) -> Result<(), BoxError> + 'static,
    {
        self.prefork(|p| p.on_worker_spawn(hook))
    }

    /// Called in the master once every worker serves, with their pids. See
    /// [`Prefork::on_master_ready`].
    #[deprecated(
        since = "0.2.0",
        note = "set it on the process model: `.prefork(|p| p.on_master_ready(..))`"
    )]
    pub fn on_master_ready<F>(self, hook: F) -> Self
    where
        F: FnMut(&[u32]) -> Result<(), BoxError> + 'static,
    {
        self.prefork(|p| p.on_master_ready(hook))
    }

    /// Called in the master when a crashed worker has been replaced (old pid, new pid).
    #[deprecated(
        since = "0.2.0",
        note = "set it on the process model: `.prefork(|p| p.on_worker_recover(..))`"
    )]
    pub fn on_worker_recover<F>(self, hook: F) -> Self
    where
        F: FnMut(u32, u32) + 'static,
    {
        self.prefork(|p| p.on_worker_recover(hook))
    }

    /// Called in a worker (on a background thread) when its master is gone.
    #[deprecated(
        since = "0.2.0",
        note = "set it on the process model: `.prefork(|p| p.on_master_death(..))`"
    )]
    pub fn on_master_death<F>(self, hook: F) -> Self
    where
        F: Fn() + Send + Sync + 'static,
    {
        self.prefork(|p| p.on_master_death(hook))
    }

    /// Builds each worker's command. See [`Prefork::command_producer`].
    #[deprecated(
        since = "0.2.0",
        note = "set it on the process model: `.prefork(|p| p.command_producer(..))`"
    )]
    pub fn command_producer<F>(self, producer: F) -> Self
    where
        F: FnMut(&SpawnContext) -> io::Result<Command> + 'static,
    {
        self.prefork(|p| p.command_producer(producer))
    }

    /// Serves HTTPS with this configuration (PEM files, embedded PEM, or your own rustls
    /// configuration), loaded and validated by the master before any worker starts.
    #[cfg(feature = "tls")]
    #[deprecated(
        since = "0.2.0",
        note = "set it on the process model: `.prefork(|p| p.tls(..))`"
    )]
    pub fn tls(self, tls: prefork_core::TlsConfig) -> Self {
        self.prefork(|p| p.tls(tls))
    }

    /// Serves `app`: supervises in the master, serves in each worker.
    ///
    /// `app` is a value built before this call, so it is built in the master too (and dropped
    /// unused there). That is fine for routes; build pools, clients and caches with
    /// [`Server::serve_with`] instead.
    ///
    /// # Errors
    /// See [`crate::serve`].
    pub fn serve(self, app: Router) -> Result<(), Error> {
        self.inner
            .run(move |worker| crate::serve_worker(worker, app))
    }

    /// Builds the app in each worker with `factory`, then serves it. The factory runs once per
    /// worker process, inside that worker's tokio runtime, before the worker reports ready;
    /// never in the master. It gets the worker's context ([`Worker`]: `id()`, `shutdown()`, ...).
    ///
    /// # Errors
    /// See [`crate::serve`]. An error returned by the factory of a starting worker stops the
    /// server: the master returns "worker N (pid P) failed to start: <the factory's error>".
    pub fn serve_with<F>(self, factory: F) -> Result<(), Error>
    where
        F: AsyncFnOnce(&Worker) -> Result<Router, BoxError>,
    {
        let head = self.max_request_head;
        self.inner.run(move |worker| async move {
            let app = factory(&worker)
                .await
                .map_err(prefork_core::into_io_error)?;
            crate::service::serve_worker_with(worker, app, head).await
        })
    }
}
