//! What [`HttpServerExt::run_prefork`](crate::HttpServerExt::run_prefork) takes: the process model
//! plus the one setting that belongs to actix.

use std::any::Any;
use std::fmt;
use std::sync::Arc;

use actix_web::dev::Extensions;
use prefork_core::Prefork;

/// A connection callback, as `HttpServer::on_connect` takes.
pub(crate) type OnConnect = Arc<dyn Fn(&dyn Any, &mut Extensions) + Send + Sync>;

/// actix worker threads per worker process by default: one. One process per core is the point of
/// prefork; a second thread per process only helps handlers that block.
pub const DEFAULT_THREADS: usize = 1;

/// A prefork actix-web server's settings: every process-model option (a configured
/// [`Prefork`]: address(es), worker processes, `SO_REUSEPORT`, shutdown timeout, recovery budget,
/// hooks, TLS) plus the number of actix worker threads in each process.
///
/// A bare [`Prefork`] converts into a `Config` with the defaults, so most programs never name
/// this type:
///
/// ```no_run
/// use actix_web::{App, HttpServer};
/// use prefork_actix::{Config, HttpServerExt as _, Prefork};
///
/// fn main() -> std::io::Result<()> {
///     HttpServer::new(|| App::new())
///         .run_prefork(Config::new(Prefork::new("127.0.0.1:8080").workers(4)).threads(2))
/// }
/// ```
pub struct Config {
    pub(crate) prefork: Prefork,
    pub(crate) threads: usize,
    pub(crate) on_connect: Option<OnConnect>,
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("prefork", &self.prefork)
            .field("threads", &self.threads)
            .field("on_connect", &self.on_connect.is_some())
            .finish()
    }
}

impl Config {
    /// The settings for `prefork`, with [`DEFAULT_THREADS`] actix worker thread per process.
    pub fn new(prefork: Prefork) -> Self {
        Config {
            prefork,
            threads: DEFAULT_THREADS,
            on_connect: None,
        }
    }

    /// A callback for each new connection, as actix's `HttpServer::on_connect` (which
    /// [`run_prefork`](crate::HttpServerExt::run_prefork) owns: it gives every connection its
    /// drain state there). Called after prefork's own, on the actix worker thread.
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
    /// `0` is refused by [`run_prefork`](crate::HttpServerExt::run_prefork) with an
    /// [`InvalidInput`](std::io::ErrorKind::InvalidInput) error before any worker starts
    /// (actix itself would panic).
    pub fn threads(mut self, threads: usize) -> Self {
        self.threads = threads;
        self
    }
}

impl From<Prefork> for Config {
    fn from(prefork: Prefork) -> Self {
        Config::new(prefork)
    }
}
