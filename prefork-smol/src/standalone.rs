//! One process, no master: the same serve loop on `threads` executor threads. The baseline that
//! prefork is measured against, and a handy mode for development.

use std::fmt;
use std::future::Future;
use std::io;
use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;

use hyper::body::{Body, Incoming};
use hyper::service::Service;
use hyper::{Request, Response};
use prefork_core::{Shutdown, DEFAULT_SHUTDOWN_TIMEOUT};

use crate::http::BoxError;
use crate::runtime::{self, SharedExecutor};
use crate::Context;

/// A single-process server: the listeners are bound here, one `smol::Executor` runs on
/// [`Standalone::threads`] threads, and SIGTERM or SIGINT drains it. The same [`Context`] and
/// serve loop as a prefork worker, without the master.
///
/// ```no_run
/// # let service = hyper::service::service_fn(|_| async {
/// #     Ok::<_, std::convert::Infallible>(hyper::Response::new(String::new()))
/// # });
/// prefork_smol::Standalone::bind("127.0.0.1:8080")?
///     .threads(4)
///     .serve(service)?;
/// # std::io::Result::Ok(())
/// ```
#[must_use = "a Standalone server does nothing until `serve`, `serve_with` or `run` is called"]
pub struct Standalone {
    listeners: Vec<TcpListener>,
    threads: usize,
    shutdown_timeout: Duration,
    shutdown: Option<Shutdown>,
    #[cfg(feature = "tls")]
    tls: Option<prefork_core::TlsConfig>,
}

impl fmt::Debug for Standalone {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let addrs: Vec<_> = self
            .listeners
            .iter()
            .map(crate::listener::describe)
            .collect();
        let mut d = f.debug_struct("Standalone");
        d.field("listeners", &addrs)
            .field("threads", &self.threads)
            .field("shutdown_timeout", &self.shutdown_timeout)
            .field("shutdown", &self.shutdown);
        #[cfg(feature = "tls")]
        d.field("tls", &self.tls);
        d.finish()
    }
}

impl Standalone {
    /// Serves on these listeners (bound by the caller).
    pub fn new(listeners: Vec<TcpListener>) -> Self {
        Standalone {
            listeners,
            threads: 1,
            shutdown_timeout: DEFAULT_SHUTDOWN_TIMEOUT,
            shutdown: None,
            #[cfg(feature = "tls")]
            tls: None,
        }
    }

    /// Binds `addr` (its first resolved address) with `SO_REUSEADDR` and a large backlog
    /// (`/proc/sys/net/core/somaxconn`, else 4096), as a prefork master does.
    ///
    /// # Errors
    /// The address does not resolve, or binding fails (port in use, permission denied); the
    /// message names the address.
    pub fn bind(addr: impl Into<prefork_core::ListenAddr>) -> io::Result<Self> {
        Ok(Standalone::new(vec![prefork_core::bind(addr)?]))
    }

    /// Executor threads. Default: 1. `0` is refused by `serve`/`run` with
    /// [`io::ErrorKind::InvalidInput`].
    pub fn threads(mut self, threads: usize) -> Self {
        self.threads = threads;
        self
    }

    /// How long in-flight requests may take to finish once the shutdown starts. Default:
    /// [`DEFAULT_SHUTDOWN_TIMEOUT`] (30 s).
    pub fn shutdown_timeout(mut self, timeout: Duration) -> Self {
        self.shutdown_timeout = timeout;
        self
    }

    /// Stops on this notification instead of on SIGTERM/SIGINT (no signal handler is then
    /// installed): for tests, or a program that decides itself when to stop
    /// ([`Shutdown::trigger`]).
    ///
    /// By default the first SIGTERM or SIGINT starts a graceful shutdown, and a second one exits
    /// the process at once with status 1.
    pub fn shutdown(mut self, shutdown: Shutdown) -> Self {
        self.shutdown = Some(shutdown);
        self
    }

    /// Serves TLS with this configuration (loaded and validated by `serve`/`run` before
    /// anything is served).
    #[cfg(feature = "tls")]
    pub fn tls(mut self, tls: prefork_core::TlsConfig) -> Self {
        self.tls = Some(tls);
        self
    }

    /// Serves a hyper service, as [`Server::serve`](crate::Server::serve) does in a worker.
    ///
    /// # Errors
    /// Zero threads, no listener, a bad TLS configuration (naming the file), or a signal handler
    /// that cannot be installed.
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

    /// Serves the hyper service that `factory` builds inside the executor.
    ///
    /// # Errors
    /// As [`Standalone::serve`], and the factory's error.
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

    /// Runs raw async code with the process's [`Context`] (worker id 0; `ready` does nothing),
    /// as [`Server::run`](crate::Server::run) does in a worker.
    ///
    /// # Errors
    /// As [`Standalone::serve`], and the error `f` returned.
    pub fn run<F, Fut>(self, f: F) -> io::Result<()>
    where
        F: FnOnce(Context) -> Fut,
        Fut: Future<Output = io::Result<()>>,
    {
        runtime::check_threads(self.threads)?;
        if self.listeners.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "no listener to serve on",
            ));
        }
        #[cfg(feature = "tls")]
        let tls = match &self.tls {
            Some(t) => Some((t.load()?, t.get_handshake_timeout())),
            None => None,
        };
        let shutdown = match self.shutdown {
            Some(s) => s,
            None => Shutdown::on_signals().map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!("cannot install SIGTERM/SIGINT handlers: {e}"),
                )
            })?,
        };
        let mut listeners = Vec::with_capacity(self.listeners.len());
        for l in self.listeners {
            l.set_nonblocking(true).map_err(|e| {
                let addr = crate::listener::describe(&l);
                io::Error::new(e.kind(), format!("listener on {addr}: {e}"))
            })?;
            let l = crate::into_async(l)?;
            if let Ok(addr) = l.get_ref().local_addr() {
                tracing::info!(%addr, threads = self.threads, "listening");
            }
            listeners.push(l);
        }
        let shutdown_timeout = self.shutdown_timeout;
        runtime::block_on(self.threads, move |executor: SharedExecutor| {
            f(Context {
                worker_id: 0,
                listeners,
                unix_listeners: Vec::new(),
                drain: prefork_core::Drain::new(
                    shutdown.clone(),
                    prefork_core::Counters::default(),
                    prefork_core::DEFAULT_DRAIN_GRACE,
                ),
                shutdown,
                shutdown_timeout,
                executor,
                child: None,
                #[cfg(feature = "tls")]
                tls,
            })
        })
    }
}
