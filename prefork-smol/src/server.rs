//! The prefork server: every [`Prefork`] option, executor threads per worker, and the three
//! ways to serve (a hyper service, a factory of one, or raw async code).

use std::future::Future;
use std::io;
use std::sync::Arc;

use hyper::body::{Body, Incoming};
use hyper::service::Service;
use hyper::{Request, Response};
use prefork_core::{ListenAddr, Prefork};

use crate::http::BoxError;
use crate::runtime::{self, SharedExecutor};
use crate::Context;

/// Serves a hyper service from prefork workers on `addr`: one worker process per CPU, each with
/// a single-threaded smol executor, HTTP/1.1 with keep-alive, graceful shutdown on SIGTERM.
///
/// This is `Server::new(Prefork::new(addr)).serve(service)`; use [`Server`] for every other
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
/// fn main() -> std::io::Result<()> {
///     prefork_smol::serve("127.0.0.1:8080", hyper::service::service_fn(hello))
/// }
/// ```
pub fn serve<S, B>(addr: impl Into<ListenAddr>, service: S) -> io::Result<()>
where
    S: Service<Request<Incoming>, Response = Response<B>> + Send + Sync + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    Server::new(Prefork::new(addr)).serve(service)
}

/// A prefork server on smol: a [`Prefork`] (every process-model option: workers, listeners,
/// `SO_REUSEPORT`, TLS, shutdown timeout, recovery, hooks) plus the executor threads of each
/// worker.
///
/// ```no_run
/// use std::time::Duration;
/// use prefork_smol::{prefork_core::Prefork, Server};
/// # let service = hyper::service::service_fn(|_| async {
/// #     Ok::<_, std::convert::Infallible>(hyper::Response::new(String::new()))
/// # });
///
/// Server::new(
///     Prefork::new("0.0.0.0:8080")
///         .workers(4)
///         .shutdown_timeout(Duration::from_secs(10)),
/// )
/// .threads(1)
/// .serve(service)?;
/// # std::io::Result::Ok(())
/// ```
#[derive(Debug)]
#[must_use = "a Server does nothing until `serve`, `serve_with` or `run` is called"]
pub struct Server {
    prefork: Prefork,
    threads: usize,
}

impl From<Prefork> for Server {
    fn from(prefork: Prefork) -> Self {
        Server::new(prefork)
    }
}

impl Server {
    /// A server with the process model configured by `prefork`.
    pub fn new(prefork: Prefork) -> Self {
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
    /// [`Context::drain_timeout`] (the [`Prefork::shutdown_timeout`] less a margin). A TLS
    /// handshake that fails or outlasts its timeout closes that connection only; plain HTTP sent
    /// to the TLS port is answered `400 Bad Request` (HTTPS expected), then closed. Accept errors
    /// such as EMFILE are logged and retried after a short pause; they never stop the worker.
    ///
    /// The service is shared by every connection (it is put in an `Arc`), hence `Sync`. It is
    /// built in every process, the master included; build per-worker state (pools,
    /// connections) with [`Server::serve_with`] instead.
    ///
    /// # Errors
    /// In the master, the [`prefork_core::Error`] of [`Prefork::run`] as an [`io::Error`]: a bad
    /// configuration, a port in use, a bad TLS file, a worker that failed to start, too many
    /// worker crashes. In a worker, what failed while it served.
    pub fn serve<S, B>(self, service: S) -> io::Result<()>
    where
        S: Service<Request<Incoming>, Response = Response<B>> + Send + Sync + 'static,
        S::Future: Send + 'static,
        S::Error: Into<BoxError>,
        B: Body + Send + 'static,
        B::Data: Send,
        B::Error: Into<BoxError>,
    {
        self.serve_with(move |_| std::future::ready(Ok(service)))
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
    /// prefork_smol::Server::new(prefork_smol::prefork_core::Prefork::new("127.0.0.1:8080"))
    ///     .serve_with(|ctx| {
    ///         let worker = ctx.worker_id();
    ///         async move {
    ///             // e.g. connect to a database here, once per worker.
    ///             Ok(service_fn(move |_| async move {
    ///                 Ok::<_, Infallible>(Response::new(format!("worker {worker}")))
    ///             }))
    ///         }
    ///     })?;
    /// # std::io::Result::Ok(())
    /// ```
    pub fn serve_with<F, Fut, S, B>(self, factory: F) -> io::Result<()>
    where
        F: FnOnce(&Context) -> Fut,
        Fut: Future<Output = io::Result<S>>,
        S: Service<Request<Incoming>, Response = Response<B>> + Send + Sync + 'static,
        S::Future: Send + 'static,
        S::Error: Into<BoxError>,
        B: Body + Send + 'static,
        B::Data: Send,
        B::Error: Into<BoxError>,
    {
        self.run(move |ctx| async move {
            let service = factory(&ctx).await?;
            crate::http::serve(ctx, Arc::new(service)).await
        })
    }

    /// Runs raw async code in each worker: `f` receives the worker's [`Context`] (async
    /// listeners, worker id, shutdown notification, `ready`, executor) and its future runs
    /// inside the worker's executor, on the worker's main thread (it need not be `Send`).
    ///
    /// `f` must call [`Context::ready`] once it accepts, stop accepting when
    /// [`Context::shutdown`] completes, and return once its work is drained (within
    /// [`Context::drain_timeout`]). Tasks it spawned and left running are dropped when it
    /// returns. An error returned before `ready` is the worker's start-up error: the master
    /// stops and reports it instead of respawning.
    ///
    /// # Errors
    /// As [`Server::serve`]; in a worker, the error `f` returned.
    ///
    /// # Example
    /// An echo server (see `examples/echo.rs` for the full program):
    /// ```no_run
    /// use prefork_smol::{prefork_core::Prefork, Server};
    ///
    /// Server::new(Prefork::new("127.0.0.1:7000")).run(|mut ctx| async move {
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
    /// # std::io::Result::Ok(())
    /// ```
    pub fn run<F, Fut>(self, f: F) -> io::Result<()>
    where
        F: FnOnce(Context) -> Fut,
        Fut: Future<Output = io::Result<()>>,
    {
        let Server { prefork, threads } = self;
        runtime::check_threads(threads)?;
        prefork
            .run(|mut child| {
                #[cfg(not(feature = "tls"))]
                if child.tls_requested() {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidInput,
                        "TLS is configured but prefork-smol was built without its `tls` feature",
                    ));
                }
                let listeners = child
                    .take_listeners()
                    .into_iter()
                    .map(crate::into_async)
                    .collect::<io::Result<Vec<_>>>()?;
                let unix_listeners = child
                    .take_unix_listeners()
                    .into_iter()
                    .map(|l| {
                        async_io::Async::new(l).map_err(|e| {
                            io::Error::new(
                                e.kind(),
                                format!("registering a Unix listener with async-io: {e}"),
                            )
                        })
                    })
                    .collect::<io::Result<Vec<_>>>()?;
                runtime::block_on(threads, move |executor: SharedExecutor| {
                    let ctx = Context {
                        worker_id: child.worker_id(),
                        listeners,
                        unix_listeners,
                        shutdown: child.shutdown(),
                        shutdown_timeout: child.shutdown_timeout(),
                        drain: prefork_core::Drain::for_child(&child),
                        executor,
                        #[cfg(feature = "tls")]
                        tls: child
                            .tls_config()
                            .map(|c| (c, child.tls_handshake_timeout())),
                        child: Some(child),
                    };
                    f(ctx)
                })
            })
            .map_err(io::Error::from)
    }
}
