//! The prefork server: every [`Prefork`] option, executor threads per worker, and the three
//! ways to serve (a hyper service, a factory of one, or raw async code).

use std::future::Future;
use std::io;
use std::sync::Arc;

use hyper::body::{Body, Incoming};
use hyper::service::Service;
use hyper::{Request, Response};
use prefork_core::{BoxError, Error, ListenAddr, Prefork};

use crate::runtime::{self, SharedExecutor};
use crate::Worker;

/// Serves a hyper service from prefork workers on `addr`: one worker process per CPU, each with
/// a single-threaded smol executor, HTTP/1.1 with keep-alive, graceful shutdown on SIGTERM.
///
/// This is `Server::new(addr).serve(service)`; use [`Server`] for every other
/// option (workers, TLS, hooks, executor threads). Call it from `main`: it supervises in the
/// master and serves in each worker (see [`prefork_core`]'s process model).
///
/// # Errors
/// As [`Server::serve`].
///
/// # Example
/// ```no_run
/// use std::convert::Infallible;
/// use hyper::{body::Incoming, Request, Response};
///
/// async fn hello(_: Request<Incoming>) -> Result<Response<String>, Infallible> {
///     Ok(Response::new("Hello, World!".to_owned()))
/// }
///
/// fn main() -> Result<(), prefork_smol::Error> {
///     prefork_smol::serve(hyper::service::service_fn(hello), "127.0.0.1:8080")
/// }
/// ```
pub fn serve<S, B>(service: S, addr: impl Into<ListenAddr>) -> Result<(), Error>
where
    S: Service<Request<Incoming>, Response = Response<B>> + Send + Sync + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    Server::new(addr).serve(service)
}

/// Builds the service in each worker with `factory` (async, once per worker, inside its
/// executor, never in the master), then serves it on `addr`. See [`Server::serve_with`].
///
/// # Errors
/// As [`Server::serve`], and the factory's error if it fails in a starting worker.
pub fn serve_with<F, S, B>(factory: F, addr: impl Into<ListenAddr>) -> Result<(), Error>
where
    F: AsyncFnOnce(&Worker) -> Result<S, BoxError>,
    S: Service<Request<Incoming>, Response = Response<B>> + Send + Sync + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    Server::new(addr).serve_with(factory)
}

/// Serves `service` over HTTPS on `addr` (HTTP/2 or HTTP/1.1 by ALPN) with the certificate
/// chain and key in `files`, loaded and checked by the master before any worker starts.
///
/// # Errors
/// As [`serve`], and a TLS error naming the file ("TLS: key.pem: no private key found").
#[cfg(feature = "tls")]
pub fn serve_tls<S, B>(
    service: S,
    addr: impl Into<ListenAddr>,
    files: prefork_core::PemFiles,
) -> Result<(), Error>
where
    S: Service<Request<Incoming>, Response = Response<B>> + Send + Sync + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    Server::new(addr)
        .prefork(|p| p.tls(prefork_core::TlsConfig::from_pem_files(files)))
        .serve(service)
}

/// A prefork server on smol: a [`Prefork`] (every process-model option: workers, listeners,
/// `SO_REUSEPORT`, TLS, shutdown timeout, recovery, hooks) plus the executor threads of each
/// worker.
///
/// ```no_run
/// use std::time::Duration;
/// use prefork_smol::Server;
/// # let service = hyper::service::service_fn(|_| async {
/// #     Ok::<_, std::convert::Infallible>(hyper::Response::new(String::new()))
/// # });
///
/// Server::new("0.0.0.0:8080")
///     .prefork(|p| p.workers(4).shutdown_timeout(Duration::from_secs(10)))
///     .threads(1)
///     .serve(service)?;
/// # Ok::<(), prefork_smol::Error>(())
/// ```
#[derive(Debug)]
#[must_use = "a Server does nothing until `serve`, `serve_with` or `run` is called"]
pub struct Server {
    prefork: Prefork,
    threads: usize,
}

impl From<Prefork> for Server {
    fn from(prefork: Prefork) -> Self {
        Server::from_prefork(prefork)
    }
}

impl Server {
    /// A server listening on `addr` (`"0.0.0.0:8080"`, `"[::]:8080"`, `"localhost:3000"`, a
    /// `SocketAddr`, `"unix:/run/app.sock"`), with [`Prefork`]'s defaults.
    pub fn new(addr: impl Into<ListenAddr>) -> Self {
        Server::from_prefork(Prefork::new(addr))
    }

    /// A server with the process model configured by `prefork`.
    pub fn from_prefork(prefork: Prefork) -> Self {
        Server {
            prefork,
            threads: 1,
        }
    }

    /// Changes the process-model options, e.g. `.prefork(|p| p.workers(2))`.
    pub fn prefork(mut self, configure: impl FnOnce(Prefork) -> Prefork) -> Self {
        self.prefork = configure(self.prefork);
        self
    }

    /// Executor threads in each worker. Default: 1 (one process per core is the point of
    /// prefork; the worker's executor is then driven by its main thread alone).
    ///
    /// With more, a `smol::Executor` is run by the main thread and `threads - 1` others, and
    /// tasks move between them. `0` is refused by `serve`/`run` with
    /// [`io::ErrorKind::InvalidInput`], in the master, before any worker starts.
    pub fn threads(mut self, threads: usize) -> Self {
        self.threads = threads;
        self
    }

    /// Serves a hyper service: HTTP/1.1 with keep-alive on plain listeners; with TLS
    /// ([`Prefork::tls`]), HTTP/2 or HTTP/1.1 as the client's ALPN asks.
    ///
    /// In each worker: accepts on every listener, reports ready, and on SIGTERM (or the master's
    /// death) stops accepting, lets in-flight requests finish, closes idle keep-alive
    /// connections, and returns once all connections are gone or after
    /// [`Worker::drain_timeout`] (the [`Prefork::shutdown_timeout`] less a margin). A TLS
    /// handshake that fails or outlasts its timeout closes that connection only; plain HTTP sent
    /// to the TLS port is answered `400 Bad Request` (HTTPS expected), then closed. Accept errors
    /// such as EMFILE are logged and retried after a short pause; they never stop the worker.
    ///
    /// The service is shared by every connection (it is put in an `Arc`), hence `Sync`. It is
    /// built in every process, the master included; build per-worker state (pools,
    /// connections) with [`Server::serve_with`] instead.
    ///
    /// # Errors
    /// In the master, the [`Error`] of [`Prefork::run`]: a bad configuration, a port in use, a
    /// bad TLS file, a worker that failed to start. In a worker, what failed while it served.
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

    /// Like [`Server::serve`], with the service built by `factory` in each worker, inside its
    /// executor: the place to open database pools and connections or load caches. An error
    /// from the factory is the worker's start-up error: the master stops and reports it.
    ///
    /// # Errors
    /// As [`Server::serve`].
    ///
    /// # Example
    /// ```no_run
    /// use std::convert::Infallible;
    /// use hyper::{service::service_fn, Response};
    ///
    /// prefork_smol::Server::new("127.0.0.1:8080")
    ///     .serve_with(async |worker| {
    ///         let id = worker.id(); // e.g. connect to a database here, once per worker.
    ///         Ok(service_fn(move |_| async move {
    ///             Ok::<_, Infallible>(Response::new(format!("worker {id}")))
    ///         }))
    ///     })?;
    /// # Ok::<(), prefork_smol::Error>(())
    /// ```
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

    /// Runs raw async code in each worker: `f` receives the worker's [`Worker`] context (async
    /// listeners, worker id, shutdown notification, `ready`, executor) and its future runs
    /// inside the worker's executor, on the worker's main thread (it need not be `Send`).
    ///
    /// `f` must call [`Worker::ready`] once it accepts, stop accepting when
    /// [`Worker::shutdown`] completes, and return once its work is drained (within
    /// [`Worker::drain_timeout`]). Tasks it spawned and left running are dropped when it
    /// returns. An error returned before `ready` is the worker's start-up error: the master
    /// stops and reports it instead of respawning.
    ///
    /// # Errors
    /// As [`Server::serve`]; in a worker, the error `f` returned.
    ///
    /// # Example
    /// An echo server (see `examples/echo.rs` for the full program):
    /// ```no_run
    /// use prefork_smol::Server;
    ///
    /// Server::new("127.0.0.1:7000").run(|mut ctx| async move {
    ///     let listener = smol::net::TcpListener::from(ctx.take_listeners().remove(0));
    ///     ctx.ready()?;
    ///     let shutdown = ctx.shutdown();
    ///     let accept = async {
    ///         loop {
    ///             let (stream, _) = listener.accept().await?;
    ///             let mut writer = stream.clone();
    ///             ctx.spawn(async move {
    ///                 let _ = smol::io::copy(stream, &mut writer).await;
    ///             })
    ///             .detach();
    ///         }
    ///     };
    ///     smol::future::or(accept, async {
    ///         shutdown.await;
    ///         Ok(())
    ///     })
    ///     .await
    /// })?;
    /// # Ok::<(), prefork_smol::Error>(())
    /// ```
    pub fn run<F, Fut>(self, f: F) -> Result<(), Error>
    where
        F: FnOnce(Worker) -> Fut,
        Fut: Future<Output = io::Result<()>>,
    {
        let Server { prefork, threads } = self;
        runtime::check_threads(threads).map_err(|e| Error::Config(e.to_string()))?;
        prefork.run(|core| {
            let balance = core.balance();
            let idle = balance.is_enabled().then(|| balance.runtime_idle(threads));
            runtime::block_on_reporting(threads, idle, move |executor: SharedExecutor| async move {
                f(Worker::from_core(core, executor)?).await
            })
        })
    }
}
