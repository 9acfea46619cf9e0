//! The builder: every prefork option, then `serve(app)` or `serve_with(factory)`.

use std::future::Future;
use std::io;
use std::process::Command;
use std::time::Duration;

use axum::Router;
use prefork_core::{BoxError, ListenAddr, Network, Prefork, SpawnContext};

/// An axum app under prefork, with every option of the process model.
///
/// All setters take and return `self`; defaults are those of [`Prefork`] (workers: the number of
/// CPUs; shared listening socket; 30 s shutdown timeout; recovery budget `max(1, workers / 2)`)
/// and one `current_thread` runtime per worker.
///
/// ```no_run
/// use std::time::Duration;
/// use axum::{routing::get, Router};
///
/// fn main() -> std::io::Result<()> {
///     prefork_axum::Builder::new("0.0.0.0:8080")
///         .workers(4)
///         .shutdown_timeout(Duration::from_secs(10))
///         .on_master_ready(|pids| {
///             println!("serving from {pids:?}");
///             Ok(())
///         })
///         .serve_with(|_worker| async {
///             Ok(Router::new().route("/", get(|| async { "Hello, World!" })))
///         })
/// }
/// ```
#[derive(Debug)]
pub struct Builder {
    inner: prefork_tokio::Builder,
}

impl Builder {
    /// A server listening on `addr` (`"0.0.0.0:8080"`, `"[::]:8080"`, `"localhost:3000"`, a
    /// `SocketAddr`; port 0 picks a free port shared by every worker).
    pub fn new(addr: impl Into<ListenAddr>) -> Self {
        Builder::from_prefork(Prefork::new(addr))
    }

    /// Starts from a configured [`Prefork`] (more listeners, network, command producer, ...).
    pub fn from_prefork(prefork: Prefork) -> Self {
        Builder {
            inner: prefork_tokio::Builder::new(prefork),
        }
    }

    /// Changes the [`Prefork`] configuration, for options without a setter here.
    pub fn map_prefork(mut self, f: impl FnOnce(Prefork) -> Prefork) -> Self {
        self.inner = self.inner.map_prefork(f);
        self
    }

    /// Adds a listen address; every worker serves every listener.
    pub fn listen(self, addr: impl Into<ListenAddr>) -> Self {
        self.map_prefork(|p| p.listen(addr))
    }

    /// The address families to listen on. Default: [`Network::Tcp`] (the address's own
    /// family). See [`Prefork::network`].
    pub fn network(self, network: Network) -> Self {
        self.map_prefork(|p| p.network(network))
    }

    /// Worker processes. Default: the number of CPUs available to this process. `0` is refused
    /// when serving. See [`Prefork::workers`].
    pub fn workers(self, workers: usize) -> Self {
        self.map_prefork(|p| p.workers(workers))
    }

    /// One `SO_REUSEPORT` socket per worker instead of one shared socket (Linux only). Default:
    /// off. See [`Prefork::reuseport`] for the caveats.
    pub fn reuseport(self, on: bool) -> Self {
        self.map_prefork(|p| p.reuseport(on))
    }

    /// The listen backlog. Default: `/proc/sys/net/core/somaxconn`, else 4096.
    pub fn backlog(self, backlog: i32) -> Self {
        self.map_prefork(|p| p.backlog(backlog))
    }

    /// Worker threads per worker process. Default: 1 (a `current_thread` runtime); more builds a
    /// multi-threaded runtime. `0` is refused when serving.
    pub fn threads(mut self, threads: usize) -> Self {
        self.inner = self.inner.threads(threads);
        self
    }

    /// How long a stopping worker may drain in-flight requests before it is killed. Default:
    /// 30 s.
    pub fn shutdown_timeout(self, timeout: Duration) -> Self {
        self.map_prefork(|p| p.shutdown_timeout(timeout))
    }

    /// Unexpected worker exits tolerated before the master stops everything and fails. Default:
    /// `max(1, workers / 2)`. See [`Prefork::recover_threshold`].
    pub fn recover_threshold(self, threshold: usize) -> Self {
        self.map_prefork(|p| p.recover_threshold(threshold))
    }

    /// Counts only the exits within this sliding window toward the threshold. Default: none.
    pub fn recover_window(self, window: Duration) -> Self {
        self.map_prefork(|p| p.recover_window(window))
    }

    /// Called in the master with the pid of every worker it starts. See
    /// [`Prefork::on_child_spawn`].
    pub fn on_child_spawn<F>(self, hook: F) -> Self
    where
        F: FnMut(u32) -> Result<(), BoxError> + 'static,
    {
        self.map_prefork(|p| p.on_child_spawn(hook))
    }

    /// Called in the master once every worker serves, with their pids. See
    /// [`Prefork::on_master_ready`].
    pub fn on_master_ready<F>(self, hook: F) -> Self
    where
        F: FnMut(&[u32]) -> Result<(), BoxError> + 'static,
    {
        self.map_prefork(|p| p.on_master_ready(hook))
    }

    /// Called in the master when a crashed worker has been replaced (old pid, new pid).
    pub fn on_child_recover<F>(self, hook: F) -> Self
    where
        F: FnMut(u32, u32) + 'static,
    {
        self.map_prefork(|p| p.on_child_recover(hook))
    }

    /// Called in a worker (on a background thread) when its master is gone.
    pub fn on_master_death<F>(self, hook: F) -> Self
    where
        F: Fn() + Send + Sync + 'static,
    {
        self.map_prefork(|p| p.on_master_death(hook))
    }

    /// Builds each worker's command. See [`Prefork::command_producer`].
    pub fn command_producer<F>(self, producer: F) -> Self
    where
        F: FnMut(&SpawnContext) -> io::Result<Command> + 'static,
    {
        self.map_prefork(|p| p.command_producer(producer))
    }

    /// Serves HTTPS with this configuration (PEM files, embedded PEM, or your own rustls
    /// configuration), loaded and validated by the master before any worker starts.
    #[cfg(feature = "tls")]
    pub fn tls(self, tls: prefork_core::TlsConfig) -> Self {
        self.map_prefork(|p| p.tls(tls))
    }

    /// Serves `app`: supervises in the master, serves in each worker.
    ///
    /// `app` is a value built before this call, so it is built in the master too (and dropped
    /// unused there). That is fine for routes; build pools, clients and caches with
    /// [`Builder::serve_with`] instead.
    ///
    /// # Errors
    /// See [`crate::serve`].
    pub fn serve(self, app: Router) -> io::Result<()> {
        self.inner.run(move |child| crate::serve_child(child, app))
    }

    /// Builds the app in each worker with `factory`, then serves it. The factory runs once per
    /// worker process, inside that worker's tokio runtime, before the worker reports ready;
    /// never in the master. It gets the worker id (`0..workers`).
    ///
    /// # Errors
    /// See [`crate::serve`]. An error returned by the factory of a starting worker stops the
    /// server: the master returns "worker N (pid P) failed to start: <the factory's error>".
    pub fn serve_with<F, Fut>(self, factory: F) -> io::Result<()>
    where
        F: FnOnce(usize) -> Fut,
        Fut: Future<Output = Result<Router, BoxError>>,
    {
        self.inner.run(move |child| async move {
            let app = factory(child.worker_id()).await.map_err(io::Error::other)?;
            crate::serve_child(child, app).await
        })
    }
}
