//! One process, no master: the same serve loop on `threads` executor threads. The baseline that
//! prefork is measured against, and a handy mode for development.

use std::future::Future;
use std::io;
use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;

use hyper::body::{Body, Incoming};
use hyper::service::Service;
use hyper::{Request, Response};
use prefork_core::{BoxError, Error, Shutdown};

use crate::runtime::{self, SharedExecutor};
use crate::Worker;

/// A single-process server: the listeners are bound here, one `smol::Executor` runs on
/// [`Standalone::threads`] threads, and SIGTERM or SIGINT drains it. The same [`Worker`] context
/// and serve loop as a prefork worker, without the master; the settings, checks and signal
/// handling are [`prefork_core::Standalone`]'s, shared by every adapter.
///
/// ```no_run
/// # let service = hyper::service::service_fn(|_| async {
/// #     Ok::<_, std::convert::Infallible>(hyper::Response::new(String::new()))
/// # });
/// prefork_smol::Standalone::bind("127.0.0.1:8080")?
///     .threads(4)
///     .serve(service)?;
/// # Ok::<(), prefork_smol::Error>(())
/// ```
#[derive(Debug)]
#[must_use = "a Standalone server does nothing until `serve`, `serve_with` or `run` is called"]
pub struct Standalone(prefork_core::Standalone);

impl Standalone {
    /// Serves on these listeners (bound by the caller).
    pub fn new(listeners: Vec<TcpListener>) -> Self {
        Standalone(prefork_core::Standalone::new(listeners))
    }

    /// Binds `addr` as a prefork master does (see [`prefork_core::Standalone::bind`]).
    ///
    /// # Errors
    /// The address does not resolve, or binding fails (port in use, permission denied); the
    /// message names the address.
    pub fn bind(addr: impl Into<prefork_core::ListenAddr>) -> Result<Self, Error> {
        prefork_core::Standalone::bind(addr).map(Standalone)
    }

    /// Executor threads. Default: the number of CPUs available to this process. `0` is
    /// refused before anything is served.
    pub fn threads(self, threads: usize) -> Self {
        Standalone(self.0.threads(threads))
    }

    /// How long in-flight requests may take to finish once the shutdown starts. Default:
    /// 30 s; nothing kills this process, so the drain may take all of it.
    pub fn shutdown_timeout(self, timeout: Duration) -> Self {
        Standalone(self.0.shutdown_timeout(timeout))
    }

    /// Stops on this notification instead of on SIGTERM/SIGINT (see
    /// [`prefork_core::Standalone::shutdown`]).
    pub fn shutdown(self, shutdown: Shutdown) -> Self {
        Standalone(self.0.shutdown(shutdown))
    }

    /// Serves TLS with this configuration (loaded and validated before anything is served).
    #[cfg(feature = "tls")]
    pub fn tls(self, tls: prefork_core::TlsConfig) -> Self {
        Standalone(self.0.tls(tls))
    }

    /// Serves a hyper service, as [`Server::serve`](crate::Server::serve) does in a worker.
    ///
    /// # Errors
    /// Zero threads, no listener, a bad TLS configuration (naming the file), or a signal handler
    /// that cannot be installed.
    pub fn serve<S, B>(self, service: S) -> Result<(), Error>
    where
        S: Service<Request<Incoming>, Response = Response<B>> + Send + Sync + 'static,
        S::Future: Send + 'static,
        S::Error: Into<BoxError>,
        B: Body + Send + 'static,
        B::Data: Send,
        B::Error: Into<BoxError>,
    {
        self.serve_with(async move |_| Ok(service))
    }

    /// Serves the hyper service that `factory` builds inside the executor.
    ///
    /// # Errors
    /// As [`Standalone::serve`], and the factory's error.
    pub fn serve_with<F, S, B>(self, factory: F) -> Result<(), Error>
    where
        F: AsyncFnOnce(&Worker) -> Result<S, BoxError>,
        S: Service<Request<Incoming>, Response = Response<B>> + Send + Sync + 'static,
        S::Future: Send + 'static,
        S::Error: Into<BoxError>,
        B: Body + Send + 'static,
        B::Data: Send,
        B::Error: Into<BoxError>,
    {
        self.run(move |worker| async move {
            let service = factory(&worker)
                .await
                .map_err(prefork_core::into_io_error)?;
            crate::http::serve(worker, Arc::new(service)).await
        })
    }

    /// Runs raw async code with the process's [`Worker`] context (id 0; `ready` does nothing),
    /// as [`Server::run`](crate::Server::run) does in a worker.
    ///
    /// # Errors
    /// As [`Standalone::serve`], and the error `f` returned.
    pub fn run<F, Fut>(self, f: F) -> Result<(), Error>
    where
        F: FnOnce(Worker) -> Fut,
        Fut: Future<Output = io::Result<()>>,
    {
        let (core, threads) = self.0.into_worker()?;
        runtime::block_on(threads, move |executor: SharedExecutor| async move {
            f(Worker::from_core(core, executor)?).await
        })
        .map_err(Error::Serve)
    }
}
