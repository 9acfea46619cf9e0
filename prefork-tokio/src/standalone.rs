//! One process, no master: the same serving code on tokio's multi-threaded runtime. The
//! baseline that prefork is measured against, and a handy mode for development.

use std::future::Future;
use std::io;
use std::net::{SocketAddr, TcpListener};
use std::time::Duration;

use hyper::body::{Body, Incoming};
use hyper::service::Service;
use hyper::{Request, Response};
use prefork_core::{Error, ListenAddr, Shutdown};

use crate::worker::Worker;
use crate::BoxError;

/// A single-process server: the listeners are bound here, one multi-threaded tokio runtime
/// serves them, and SIGTERM or SIGINT drains it. The same [`Worker`] context and serve loop
/// as a prefork worker ([`Server`](crate::Server)), without the master: the baseline a prefork
/// deployment is measured against (tokio's usual set-up, as `#[tokio::main]`), or a mode for
/// development. The settings, checks and signal handling are
/// [`prefork_core::Standalone`]'s, shared by every adapter.
///
/// ```no_run
/// use std::convert::Infallible;
/// use hyper::{body::Incoming, service::service_fn, Request, Response};
///
/// fn main() -> Result<(), prefork_tokio::Error> {
///     let hello = service_fn(|_: Request<Incoming>| async {
///         Ok::<_, Infallible>(Response::new(String::from("Hello, World!")))
///     });
///     prefork_tokio::Standalone::bind("127.0.0.1:8080")?
///         .threads(4)
///         .serve(hello)
/// }
/// ```
///
/// # Shutdown
/// By default the first SIGTERM or SIGINT starts a graceful shutdown (stop accepting, close idle
/// keep-alive connections, let in-flight requests finish) and a second one exits the process at
/// once with status 1; [`Standalone::shutdown`] replaces that with a trigger of your own. The
/// drain may take the whole [`Standalone::shutdown_timeout`]: nothing kills this process.
#[derive(Debug)]
#[must_use = "a Standalone server does nothing until `serve`, `serve_with` or `run` is called"]
pub struct Standalone(prefork_core::Standalone);

impl Standalone {
    /// Serves on these listeners, bound by the caller.
    pub fn new(listeners: Vec<TcpListener>) -> Self {
        Standalone(prefork_core::Standalone::new(listeners))
    }

    /// Binds `addr` as a prefork master does (see [`prefork_core::Standalone::bind`]).
    ///
    /// # Errors
    /// The address does not parse or resolve, or binding fails; the message names the address
    /// ("cannot listen on 127.0.0.1:8080: Address already in use").
    pub fn bind(addr: impl Into<ListenAddr>) -> Result<Self, Error> {
        prefork_core::Standalone::bind(addr).map(Standalone)
    }

    /// Worker threads of the multi-threaded runtime. Default: the number of CPUs available to
    /// this process, as `#[tokio::main]`. `0` is refused before anything is served.
    pub fn threads(self, threads: usize) -> Self {
        Standalone(self.0.threads(threads))
    }

    /// How long in-flight requests may take to finish once the shutdown starts. Default:
    /// 30 s. Connections still open then are dropped.
    pub fn shutdown_timeout(self, timeout: Duration) -> Self {
        Standalone(self.0.shutdown_timeout(timeout))
    }

    /// Stops when `shutdown` is triggered instead of on SIGTERM/SIGINT (see
    /// [`prefork_core::Standalone::shutdown`]).
    pub fn shutdown(self, shutdown: Shutdown) -> Self {
        Standalone(self.0.shutdown(shutdown))
    }

    /// Serves HTTPS with this configuration (HTTP/2 or HTTP/1.1 by ALPN); the certificate and
    /// key are loaded and validated before anything is served.
    #[cfg(feature = "tls")]
    pub fn tls(self, tls: prefork_core::TlsConfig) -> Self {
        Standalone(self.0.tls(tls))
    }

    /// Builds the runtime and runs `main(worker)` on it, with a [`Worker`] context (tokio
    /// listeners, worker id 0, the shutdown future; [`Worker::ready`] does nothing), as
    /// [`Server::run`](crate::Server::run) does in each worker. `main` should return once
    /// [`Worker::shutdown`] has completed and its work is drained; tasks still running then
    /// are abandoned.
    ///
    /// # Errors
    /// Each before anything is served: called inside a tokio runtime (use a plain
    /// `fn main()`, or serve a [`Worker::standalone`] context on your runtime); what
    /// [`prefork_core::Standalone::into_worker`] refuses (`threads(0)`, no listener, a TLS file
    /// that does not load); the runtime cannot be built or a listener registered with it. And
    /// then the error `main` returns.
    pub fn run<F, Fut>(self, main: F) -> Result<(), Error>
    where
        F: FnOnce(Worker) -> Fut,
        Fut: Future<Output = io::Result<()>>,
    {
        if tokio::runtime::Handle::try_current().is_ok() {
            return Err(Error::Config(
                "prefork_tokio::Standalone builds its own tokio runtime: call `serve`/`run` from \
                 a plain `fn main()`, not inside a tokio runtime (e.g. `#[tokio::main]`); on a \
                 runtime of your own, serve a `Worker::standalone` context instead"
                    .into(),
            ));
        }
        let (worker, threads) = self.0.into_worker()?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .enable_all()
            .build()
            .map_err(|e| {
                Error::Serve(io::Error::new(
                    e.kind(),
                    format!("building the tokio runtime: {e}"),
                ))
            })?;
        let result = runtime.block_on(async move { main(Worker::from_core(worker)?).await });
        // Whatever is still running (connections past the drain budget, blocking tasks) is
        // abandoned: the server has stopped.
        runtime.shutdown_background();
        result.map_err(Error::Serve)
    }

    /// Serves `service` (cloned for each connection), as [`Server::serve`](crate::Server::serve)
    /// does in each worker. See [`Worker::serve`] for the accept loop and the graceful shutdown.
    ///
    /// # Errors
    /// As [`Standalone::run`].
    pub fn serve<S, B>(self, service: S) -> Result<(), Error>
    where
        S: Service<Request<Incoming>, Response = Response<B>> + Clone + Send + 'static,
        S::Future: Send + 'static,
        S::Error: Into<BoxError>,
        B: Body + Send + 'static,
        B::Data: Send,
        B::Error: Into<BoxError>,
    {
        self.run(move |worker| worker.serve(move |_: SocketAddr| service.clone()))
    }

    /// Builds the service with `factory` inside the runtime, then serves it, as
    /// [`Server::serve_with`](crate::Server::serve_with) does in each worker.
    ///
    /// # Errors
    /// As [`Standalone::run`], and the factory's error.
    pub fn serve_with<F, S, B>(self, factory: F) -> Result<(), Error>
    where
        F: AsyncFnOnce(&Worker) -> Result<S, BoxError>,
        S: Service<Request<Incoming>, Response = Response<B>> + Clone + Send + 'static,
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
            worker.serve(move |_: SocketAddr| service.clone()).await
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listener() -> TcpListener {
        TcpListener::bind("127.0.0.1:0").unwrap()
    }

    fn never(_: Worker) -> std::future::Ready<io::Result<()>> {
        unreachable!("nothing is served")
    }

    #[test]
    fn zero_threads_is_refused_before_anything_starts() {
        let err = Standalone::new(vec![listener()])
            .threads(0)
            .run(never)
            .unwrap_err();
        assert!(
            err.to_string().contains("threads must be at least 1"),
            "{err}"
        );
    }

    #[test]
    fn inside_a_runtime_is_refused_with_the_fix() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let err = runtime
            .block_on(async { Standalone::new(vec![listener()]).run(never) })
            .unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("not inside a tokio runtime"), "{msg}");
        assert!(msg.contains("Worker::standalone"), "{msg}");
    }

    #[test]
    fn runs_on_threads_and_stops_on_the_given_shutdown() {
        let shutdown = Shutdown::new().unwrap();
        let stop = shutdown.clone();
        let timeout = Duration::from_millis(1234);
        Standalone::bind("127.0.0.1:0")
            .unwrap()
            .threads(2)
            .shutdown_timeout(timeout)
            .shutdown(shutdown)
            .run(|worker| async move {
                let handle = tokio::runtime::Handle::current();
                assert_eq!(
                    handle.runtime_flavor(),
                    tokio::runtime::RuntimeFlavor::MultiThread
                );
                assert_eq!(handle.metrics().num_workers(), 2);
                assert_eq!(worker.id(), 0);
                assert_eq!(worker.listeners().len(), 1);
                assert_eq!(
                    worker.drain_timeout(),
                    timeout,
                    "no margin without a master"
                );
                worker.ready()?;
                stop.trigger(prefork_core::ShutdownReason::Requested);
                worker.shutdown().await;
                Ok(())
            })
            .unwrap();
    }
}
