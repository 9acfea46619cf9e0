//! One process, no master: the app on tokio's multi-threaded runtime, as `axum::serve` would run
//! it, with the same serving code as a prefork worker.

use std::net::TcpListener;
use std::time::Duration;

use axum::Router;
use prefork_core::{BoxError, Error, ListenAddr, Shutdown};
use prefork_tokio::Worker;

/// An axum app served by this one process, without a master: one multi-threaded tokio runtime,
/// stopped by SIGTERM or SIGINT. The benchmark baseline for [`Server`](crate::Server), or a
/// development mode behind a flag; the app is served exactly as in a prefork worker
/// ([`serve_worker`](crate::serve_worker): `ConnectInfo`, HTTP/1.1, h2c, TLS, graceful drain).
///
/// ```no_run
/// use axum::{routing::get, Router};
///
/// fn main() -> Result<(), prefork_axum::Error> {
///     let app = Router::new().route("/", get(|| async { "Hello, World!" }));
///     if std::env::args().any(|a| a == "--single-process") {
///         prefork_axum::Standalone::bind("0.0.0.0:8080")?.threads(4).serve(app)
///     } else {
///         prefork_axum::Server::new("0.0.0.0:8080").prefork(|p| p.workers(4)).serve(app)
///     }
/// }
/// ```
///
/// It logs `listening addr=<addr> threads=<n>` for each listener. The first SIGTERM or SIGINT
/// drains (for up to the whole [`Standalone::shutdown_timeout`]: no master will kill this
/// process) and a second one exits at once. Built on [`prefork_tokio::Standalone`].
#[derive(Debug)]
#[must_use = "a Standalone server does nothing until `serve` or `serve_with` is called"]
pub struct Standalone {
    inner: prefork_tokio::Standalone,
}

impl Standalone {
    /// Serves on these listeners, bound by the caller.
    pub fn new(listeners: Vec<TcpListener>) -> Self {
        Standalone {
            inner: prefork_tokio::Standalone::new(listeners),
        }
    }

    /// Binds `addr` as a prefork master does (`SO_REUSEADDR`, a large backlog). See
    /// [`prefork_tokio::Standalone::bind`].
    ///
    /// # Errors
    /// The address does not resolve or cannot be bound; the message names it ("cannot listen
    /// on 127.0.0.1:8080: Address already in use").
    pub fn bind(addr: impl Into<ListenAddr>) -> Result<Self, Error> {
        Ok(Standalone {
            inner: prefork_tokio::Standalone::bind(addr)?,
        })
    }

    /// Worker threads of the runtime. Default: the number of CPUs available to this process
    /// (as `#[tokio::main]`). `0` is refused when serving.
    pub fn threads(mut self, threads: usize) -> Self {
        self.inner = self.inner.threads(threads);
        self
    }

    /// How long in-flight requests may take to finish once the shutdown starts. Default: 30 s.
    pub fn shutdown_timeout(mut self, timeout: Duration) -> Self {
        self.inner = self.inner.shutdown_timeout(timeout);
        self
    }

    /// Stops when `shutdown` is triggered instead of on SIGTERM/SIGINT (no signal handler is
    /// then installed). See [`prefork_tokio::Standalone::shutdown`].
    pub fn shutdown(mut self, shutdown: Shutdown) -> Self {
        self.inner = self.inner.shutdown(shutdown);
        self
    }

    /// Serves HTTPS with this configuration, loaded and validated before anything is served.
    #[cfg(feature = "tls")]
    pub fn tls(mut self, tls: prefork_core::TlsConfig) -> Self {
        self.inner = self.inner.tls(tls);
        self
    }

    /// Serves `app` until the shutdown, then drains and returns `Ok(())`.
    ///
    /// # Errors
    /// Before anything is served: called inside a tokio runtime (`#[tokio::main]`),
    /// `threads(0)`, a TLS configuration that does not load (naming the file), or signal
    /// handlers that cannot be installed. See [`prefork_tokio::Standalone::run`].
    pub fn serve(self, app: Router) -> Result<(), Error> {
        self.inner
            .run(move |worker| crate::serve_worker(worker, app))
    }

    /// Builds the app with `factory` inside the runtime (async set-up: pools, clients), then
    /// serves it. The factory gets a worker context with id 0, so that the factory given to
    /// [`Server::serve_with`](crate::Server::serve_with) can be used unchanged.
    ///
    /// # Errors
    /// As [`Standalone::serve`], and the factory's error.
    pub fn serve_with<F>(self, factory: F) -> Result<(), Error>
    where
        F: AsyncFnOnce(&Worker) -> Result<Router, BoxError>,
    {
        self.inner.run(move |worker| async move {
            let app = factory(&worker)
                .await
                .map_err(prefork_core::into_io_error)?;
            crate::serve_worker(worker, app).await
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prefork_core::ShutdownReason;

    #[test]
    fn the_factory_runs_as_worker_0_and_the_given_shutdown_stops_it() {
        let shutdown = Shutdown::new().unwrap();
        let stop = shutdown.clone();
        Standalone::bind("127.0.0.1:0")
            .unwrap()
            .threads(1)
            .shutdown(shutdown)
            .serve_with(async move |worker| {
                assert_eq!(worker.id(), 0);
                assert!(
                    tokio::runtime::Handle::try_current().is_ok(),
                    "in the runtime"
                );
                stop.trigger(ShutdownReason::Requested);
                Ok(Router::new())
            })
            .unwrap();
    }

    #[test]
    fn a_factory_error_is_returned() {
        let err = Standalone::bind("127.0.0.1:0")
            .unwrap()
            .shutdown(Shutdown::new().unwrap())
            .serve_with(async |_| Err::<Router, BoxError>("no database".into()))
            .unwrap_err();
        assert!(err.to_string().contains("no database"), "{err}");
    }

    #[test]
    fn zero_threads_is_refused() {
        let err = Standalone::bind("127.0.0.1:0")
            .unwrap()
            .threads(0)
            .serve(Router::new())
            .unwrap_err();
        assert!(
            err.to_string().contains("threads must be at least 1"),
            "{err}"
        );
    }
}
