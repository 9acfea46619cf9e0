//! One process, no master: the same serving code on tokio's multi-threaded runtime. The
//! baseline that prefork is measured against, and a handy mode for development.

use std::future::Future;
use std::io;
use std::net::{SocketAddr, TcpListener};
use std::time::Duration;

use hyper::body::{Body, Incoming};
use hyper::service::Service;
use hyper::{Request, Response};
use prefork_core::{ListenAddr, Shutdown, DEFAULT_SHUTDOWN_TIMEOUT};

use crate::child::TokioChild;
use crate::BoxError;

/// A single-process server: the listeners are bound here, one multi-threaded tokio runtime
/// serves them, and SIGTERM or SIGINT drains it. The same [`TokioChild`] context and serve loop
/// as a prefork worker ([`Builder`](crate::Builder)), without the master: the baseline a prefork
/// deployment is measured against (tokio's usual set-up, as `#[tokio::main]`), or a mode for
/// development.
///
/// ```no_run
/// use std::convert::Infallible;
/// use hyper::{body::Incoming, service::service_fn, Request, Response};
///
/// fn main() -> std::io::Result<()> {
///     let hello = service_fn(|_: Request<Incoming>| async {
///         Ok::<_, Infallible>(Response::new(String::from("Hello, World!")))
///     });
///     prefork_tokio::Standalone::bind("127.0.0.1:8080")?
///         .threads(4)
///         .serve(hello)
/// }
/// ```
///
/// `serve` and `run` log `listening addr=<addr> threads=<n>` (through `tracing`, at `info`)
/// for each listener once the signal handlers are installed, then serve until the shutdown,
/// drain, and return `Ok(())`.
///
/// # Shutdown
/// By default the first SIGTERM or SIGINT starts a graceful shutdown (stop accepting, close idle
/// keep-alive connections, let in-flight requests finish) and a second one exits the process at
/// once with status 1 ([`Shutdown::on_signals`]); [`Standalone::shutdown`] replaces that with a
/// trigger of your own. The drain may take the whole [`Standalone::shutdown_timeout`]: unlike a
/// prefork worker, which keeps a margin before its master's SIGKILL (see
/// [`TokioChild::drain_timeout`]), nothing kills this process.
#[derive(Debug)]
#[must_use = "a Standalone server does nothing until `serve` or `run` is called"]
pub struct Standalone {
    listeners: Vec<TcpListener>,
    threads: Option<usize>,
    shutdown_timeout: Duration,
    shutdown: Option<Shutdown>,
    #[cfg(feature = "tls")]
    tls: Option<prefork_core::TlsConfig>,
}

impl Standalone {
    /// Serves on these listeners, bound by the caller (blocking or not: they are made
    /// non-blocking when serving).
    pub fn new(listeners: Vec<TcpListener>) -> Self {
        Standalone {
            listeners,
            threads: None,
            shutdown_timeout: DEFAULT_SHUTDOWN_TIMEOUT,
            shutdown: None,
            #[cfg(feature = "tls")]
            tls: None,
        }
    }

    /// Binds `addr` (`"0.0.0.0:8080"`, `"[::]:8080"`, `"localhost:3000"`, a `SocketAddr`; its
    /// first resolved address) as a prefork master does: `SO_REUSEADDR` and a large backlog
    /// (`/proc/sys/net/core/somaxconn`, else 4096). See [`prefork_core::bind`].
    ///
    /// # Errors
    /// The address does not parse or resolve, or binding fails (port in use, permission
    /// denied); the message names the address ("cannot listen on 127.0.0.1:8080: Address
    /// already in use").
    pub fn bind(addr: impl Into<ListenAddr>) -> io::Result<Self> {
        Ok(Standalone::new(vec![prefork_core::bind(addr)?]))
    }

    /// Worker threads of the multi-threaded runtime. Default: the number of CPUs available to
    /// this process, as `#[tokio::main]`. `1` still builds a multi-threaded runtime (one worker
    /// thread besides the thread that calls `serve`).
    ///
    /// `0` is refused by [`Standalone::serve`] and [`Standalone::run`] with
    /// [`io::ErrorKind::InvalidInput`], before anything is served.
    pub fn threads(mut self, threads: usize) -> Self {
        self.threads = Some(threads);
        self
    }

    /// How long in-flight requests may take to finish once the shutdown starts. Default:
    /// [`DEFAULT_SHUTDOWN_TIMEOUT`] (30 s). Connections still open then are dropped.
    pub fn shutdown_timeout(mut self, timeout: Duration) -> Self {
        self.shutdown_timeout = timeout;
        self
    }

    /// Stops when `shutdown` is triggered instead of on SIGTERM/SIGINT (no signal handler is
    /// then installed): for tests, or a program that decides itself when to stop
    /// ([`Shutdown::trigger`]).
    ///
    /// ```no_run
    /// use prefork_tokio::{Shutdown, ShutdownReason, Standalone};
    ///
    /// # fn main() -> std::io::Result<()> {
    /// # let service = hyper::service::service_fn(|_| async {
    /// #     Ok::<_, std::convert::Infallible>(hyper::Response::new(String::new()))
    /// # });
    /// let shutdown = Shutdown::new()?;
    /// let stop = shutdown.clone();
    /// std::thread::spawn(move || {
    ///     std::thread::sleep(std::time::Duration::from_secs(60));
    ///     stop.trigger(ShutdownReason::Requested);
    /// });
    /// Standalone::bind("127.0.0.1:8080")?.shutdown(shutdown).serve(service)
    /// # }
    /// ```
    pub fn shutdown(mut self, shutdown: Shutdown) -> Self {
        self.shutdown = Some(shutdown);
        self
    }

    /// Serves HTTPS with this configuration (HTTP/2 or HTTP/1.1 by ALPN, each handshake bounded
    /// by [`TlsConfig::handshake_timeout`](prefork_core::TlsConfig::handshake_timeout)). The
    /// certificate and key are loaded and validated by [`Standalone::serve`] /
    /// [`Standalone::run`] before anything is served.
    #[cfg(feature = "tls")]
    pub fn tls(mut self, tls: prefork_core::TlsConfig) -> Self {
        self.tls = Some(tls);
        self
    }

    /// Builds the runtime and runs `serve(child)` on it, with a [`TokioChild`] context (tokio
    /// listeners, worker id 0, the shutdown future; [`TokioChild::ready`] does nothing), as
    /// [`Builder::run`](crate::Builder::run) does in each worker. `serve` should return once
    /// [`TokioChild::shutdown`] has completed and its work is drained; tasks still running
    /// then are abandoned.
    ///
    /// ```no_run
    /// use tokio::io::AsyncWriteExt;
    ///
    /// fn main() -> std::io::Result<()> {
    ///     prefork_tokio::Standalone::bind("127.0.0.1:7000")?.run(|mut child| async move {
    ///         let listener = child.take_listeners().remove(0);
    ///         let mut shutdown = child.shutdown();
    ///         loop {
    ///             tokio::select! {
    ///                 _ = &mut shutdown => return Ok(()),
    ///                 accepted = listener.accept() => {
    ///                     let Ok((mut stream, _)) = accepted else { continue };
    ///                     tokio::spawn(async move { let _ = stream.write_all(b"hi\n").await; });
    ///                 }
    ///             }
    ///         }
    ///     })
    /// }
    /// ```
    ///
    /// # Errors
    /// Each before anything is served:
    /// - called inside a tokio runtime (e.g. from `#[tokio::main]`): use a plain `fn main()`, or
    ///   serve a [`TokioChild::standalone`] context on your runtime;
    /// - `threads(0)`, or no listener;
    /// - the TLS configuration does not load (the message names the file);
    /// - the signal handlers or the runtime cannot be set up, or a listener cannot be
    ///   registered with tokio (the message names its address).
    ///
    /// And then the error `serve` returns.
    pub fn run<F, Fut>(self, serve: F) -> io::Result<()>
    where
        F: FnOnce(TokioChild) -> Fut,
        Fut: Future<Output = io::Result<()>>,
    {
        if tokio::runtime::Handle::try_current().is_ok() {
            return Err(io::Error::other(
                "prefork_tokio::Standalone builds its own tokio runtime: call `serve`/`run` from \
                 a plain `fn main()`, not inside a tokio runtime (e.g. `#[tokio::main]`); on a \
                 runtime of your own, serve a `TokioChild::standalone` context instead",
            ));
        }
        let threads = match self.threads {
            Some(0) => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "invalid configuration: threads must be at least 1",
                ))
            }
            Some(n) => n,
            None => std::thread::available_parallelism().map_or(1, |n| n.get()),
        };
        if self.listeners.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "invalid configuration: no listener to serve on",
            ));
        }
        #[cfg(feature = "tls")]
        let tls = match &self.tls {
            Some(tls) => Some((tls.load()?, tls.get_handshake_timeout())),
            None => None,
        };
        // Installed before `listening` is logged: a signal sent once the address is known is
        // never missed.
        let shutdown = match self.shutdown {
            Some(shutdown) => shutdown,
            None => Shutdown::on_signals().map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!("cannot install the SIGTERM/SIGINT handlers: {e}"),
                )
            })?,
        };
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .enable_all()
            .build()
            .map_err(|e| io::Error::new(e.kind(), format!("building the tokio runtime: {e}")))?;
        let addrs: Vec<Option<SocketAddr>> =
            self.listeners.iter().map(|l| l.local_addr().ok()).collect();
        let shutdown_timeout = self.shutdown_timeout;
        let listeners = self.listeners;
        let result = runtime.block_on(async move {
            let child = TokioChild::standalone(listeners, shutdown)?
                .with_shutdown_timeout(shutdown_timeout);
            #[cfg(feature = "tls")]
            let child = match tls {
                Some((config, handshake_timeout)) => child.with_tls(config, handshake_timeout),
                None => child,
            };
            for addr in addrs.into_iter().flatten() {
                tracing::info!(%addr, threads, "listening");
            }
            serve(child).await
        });
        // Whatever is still running (connections past the drain budget, blocking tasks) is
        // abandoned: the server has stopped.
        runtime.shutdown_background();
        result
    }

    /// Serves `service` (cloned for each connection) with hyper-util's automatic connection
    /// builder, as [`Builder::serve`](crate::Builder::serve) does in each worker: HTTP/1.1 with
    /// keep-alive, h2c, and over TLS HTTP/2 or HTTP/1.1 by ALPN. See [`TokioChild::serve`] for
    /// the accept loop and the graceful shutdown.
    ///
    /// # Errors
    /// As [`Standalone::run`].
    pub fn serve<S, B>(self, service: S) -> io::Result<()>
    where
        S: Service<Request<Incoming>, Response = Response<B>> + Clone + Send + 'static,
        S::Future: Send + 'static,
        S::Error: Into<BoxError>,
        B: Body + Send + 'static,
        B::Data: Send,
        B::Error: Into<BoxError>,
    {
        self.run(move |child| child.serve(move |_: SocketAddr| service.clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listener() -> TcpListener {
        TcpListener::bind("127.0.0.1:0").unwrap()
    }

    fn never(_: TokioChild) -> std::future::Ready<io::Result<()>> {
        unreachable!("nothing is served")
    }

    #[test]
    fn zero_threads_is_refused_before_anything_starts() {
        let err = Standalone::new(vec![listener()])
            .threads(0)
            .run(never)
            .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
        assert!(
            err.to_string().contains("threads must be at least 1"),
            "{err}"
        );
    }

    #[test]
    fn no_listener_is_refused() {
        let err = Standalone::new(Vec::new()).run(never).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
        assert!(err.to_string().contains("no listener"), "{err}");
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
        assert!(msg.contains("TokioChild::standalone"), "{msg}");
    }

    #[test]
    fn bind_names_the_address_in_use() {
        let taken = listener();
        let addr = taken.local_addr().unwrap();
        let err = Standalone::bind(addr).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AddrInUse);
        assert!(
            err.to_string()
                .contains(&format!("cannot listen on {addr}")),
            "{err}"
        );
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
            .run(|child| async move {
                let handle = tokio::runtime::Handle::current();
                assert_eq!(
                    handle.runtime_flavor(),
                    tokio::runtime::RuntimeFlavor::MultiThread
                );
                assert_eq!(handle.metrics().num_workers(), 2);
                assert_eq!(child.worker_id(), 0);
                assert_eq!(child.listeners().len(), 1);
                assert_eq!(child.drain_timeout(), timeout, "no margin without a master");
                child.ready()?;
                stop.trigger(prefork_core::ShutdownReason::Requested);
                child.shutdown().await;
                Ok(())
            })
            .unwrap();
    }
}
