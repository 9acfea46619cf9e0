//! What [`HttpServerExt::run_prefork`](crate::HttpServerExt::run_prefork) takes: the process model
//! plus the one setting that belongs to actix.

use prefork_core::Prefork;

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
#[derive(Debug)]
pub struct Config {
    pub(crate) prefork: Prefork,
    pub(crate) threads: usize,
}

impl Config {
    /// The settings for `prefork`, with [`DEFAULT_THREADS`] actix worker thread per process.
    pub fn new(prefork: Prefork) -> Self {
        Config {
            prefork,
            threads: DEFAULT_THREADS,
        }
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
