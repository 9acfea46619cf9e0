//! What [`Server::serve`] and [`HttpServerExt::run_prefork`](crate::HttpServerExt::run_prefork)
//! take: the process model plus the settings that belong to actix.

use std::any::Any;
use std::fmt;
use std::sync::Arc;

use actix_web::dev::Extensions;
use prefork_core::{ListenAddr, Prefork};

/// A connection callback, as `HttpServer::on_connect` takes.
pub(crate) type OnConnect = Arc<dyn Fn(&dyn Any, &mut Extensions) + Send + Sync>;

/// actix worker threads per worker process by default: one. One process per core is the point of
/// prefork; a second thread per process only helps handlers that block.
pub const DEFAULT_THREADS: usize = 1;

/// A prefork actix-web server's settings: the process model (a [`Prefork`], reached with
/// [`Server::prefork`]: address(es), worker processes, `SO_REUSEPORT`, shutdown timeout, reload,
/// health, hooks, TLS) plus the number of actix worker threads in each process.
///
/// [`Server::serve`] serves an app factory with it; a bare [`Prefork`] also converts into a
/// `Server` with the defaults, for [`run_prefork`](crate::HttpServerExt::run_prefork):
///
/// ```no_run
/// use actix_web::App;
/// use prefork_actix::Server;
///
/// fn main() -> Result<(), prefork_actix::Error> {
///     Server::new("127.0.0.1:8080")
///         .prefork(|p| p.workers(4))
///         .threads(2)
///         .serve(|| App::new())
/// }
/// ```
pub struct Server {
    pub(crate) prefork: Prefork,
    pub(crate) threads: usize,
    pub(crate) on_connect: Option<OnConnect>,
}

/// The former name of [`Server`].
#[deprecated(since = "0.2.0", note = "renamed to `Server`")]
pub type Config = Server;

impl fmt::Debug for Server {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Server")
            .field("prefork", &self.prefork)
            .field("threads", &self.threads)
            .field("on_connect", &self.on_connect.is_some())
            .finish()
    }
}

impl Server {
    /// A server listening on `addr` (`"0.0.0.0:8080"`, `"[::]:8080"`, a `SocketAddr`,
    /// `"unix:/run/app.sock"`), with [`Prefork`]'s defaults and [`DEFAULT_THREADS`] actix worker
    /// thread per process.
    pub fn new(addr: impl Into<ListenAddr>) -> Self {
        Server::from_prefork(Prefork::new(addr))
    }

    /// The settings for `prefork`, with [`DEFAULT_THREADS`] actix worker thread per process.
    pub fn from_prefork(prefork: Prefork) -> Self {
        Server {
            prefork,
            threads: DEFAULT_THREADS,
            on_connect: None,
        }
    }

    /// Changes the process-model configuration: `.prefork(|p| p.workers(4))`.
    pub fn prefork(mut self, configure: impl FnOnce(Prefork) -> Prefork) -> Self {
        self.prefork = configure(self.prefork);
        self
    }

    /// A callback for each new connection, as actix's `HttpServer::on_connect` (which
    /// [`run_prefork`](crate::HttpServerExt::run_prefork) owns: it gives every connection its
    /// drain state there). Called after prefork's own, on the actix worker thread, with the
    /// connection's stream (under [`Server::serve`]: `actix_web::rt::net::TcpStream`,
    /// `tokio_rustls::server::TlsStream<TcpStream>` or `actix_web::rt::net::UnixStream`).
    pub fn on_connect<CB>(mut self, f: CB) -> Self
    where
        CB: Fn(&dyn Any, &mut Extensions) + Send + Sync + 'static,
    {
        self.on_connect = Some(Arc::new(f));
        self
    }

    /// actix worker threads in each worker process (actix's `HttpServer::workers`, per listener).
    /// Default: [`DEFAULT_THREADS`] (1).
    ///
    /// `0` is refused by [`Server::serve`] and
    /// [`run_prefork`](crate::HttpServerExt::run_prefork) with an
    /// [`Error::Config`](prefork_core::Error::Config) before any worker starts
    /// (actix itself would panic).
    pub fn threads(mut self, threads: usize) -> Self {
        self.threads = threads;
        self
    }
}

impl From<Prefork> for Server {
    fn from(prefork: Prefork) -> Self {
        Server::from_prefork(prefork)
    }
}

/// Refuses 0 actix worker threads per process (actix itself would panic) before anything starts.
pub(crate) fn check_threads(threads: usize) -> Result<(), prefork_core::Error> {
    if threads == 0 {
        return Err(prefork_core::Error::Config(
            "prefork-actix: threads per worker must be at least 1".into(),
        ));
    }
    Ok(())
}
