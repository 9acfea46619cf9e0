//! `prefork_axum::serve(app, addr)`: an axum app served by one master process and N worker
//! processes that share the listening socket (Go's `fasthttp/prefork`, for axum).
//!
//! ```no_run
//! use axum::{routing::get, Router};
//!
//! fn main() -> Result<(), prefork_axum::Error> {
//!     let app = Router::new().route("/", get(|| async { "Hello, World!" }));
//!     prefork_axum::serve(app, "0.0.0.0:8080")
//! }
//! ```
//!
//! That `main` runs in the master and again in every worker: the master re-executes the
//! program (the environment, never argv, tells the copies apart, so your own argument parsing
//! is untouched), supervises, restarts crashed workers, and on SIGTERM or Ctrl+C lets every
//! worker finish its in-flight requests. Each worker runs the app on its own single-threaded
//! tokio runtime. See [`prefork_core`] for the process model.
//!
//! # State is built in each worker: the factory
//!
//! ```no_run
//! use std::sync::Arc;
//! use axum::{extract::State, routing::get, Router};
//!
//! struct Pool; // a database pool, an HTTP client, a cache...
//! impl Pool {
//!     async fn connect() -> std::io::Result<Pool> { Ok(Pool) }
//! }
//!
//! fn main() -> Result<(), prefork_axum::Error> {
//!     prefork_axum::serve_with(async |worker| {
//!         // Runs once in each worker, inside its runtime; never in the master.
//!         let pool = Arc::new(Pool::connect().await?);
//!         tracing::info!(worker = worker.id(), "app ready");
//!         Ok(Router::new()
//!             .route("/", get(|State(_pool): State<Arc<Pool>>| async { "Hello, World!" }))
//!             .with_state(pool))
//!     }, "0.0.0.0:8080")
//! }
//! ```
//!
//! A factory error in a starting worker stops the server with that message
//! ("worker 0 (pid 1234) failed to start: ..."), with no restart loop.
//!
//! # Vocabulary (the same in every prefork adapter)
//! | concept | here |
//! |---|---|
//! | serve an app on an address | [`serve(app, addr)`](serve), [`serve_tls(app, addr, files)`](serve_tls) |
//! | build the app in each worker | [`serve_with(factory, addr)`](serve_with); the factory is `async \|worker: &Worker\| -> Result<Router, BoxError>` |
//! | every option | [`Server`]: `Server::new(addr)` or `Server::from_prefork(p)`, then `.prefork(\|p\| ..)` for the process model ([`Prefork`]) and `.threads(n)` for the runtime |
//! | a worker's context | [`Worker`]: `id()`, listeners, `shutdown()`, `ready()`, `drain()`, `counters()` |
//! | one process, no master | [`Standalone`] (same `serve`, `serve_with`) |
//! | errors of the entry points | [`Error`] (its `Debug` is its message, for `fn main() -> Result<(), Error>`) |
//!
//! # No global state
//! Workers are separate processes, so:
//! - Nothing in memory is shared between them: a `static` counter, a `Mutex<HashMap>` cache or
//!   an in-process rate limiter exists once *per worker*, and each request sees the copy of the
//!   worker that happened to accept it. Keep shared state outside (a database, Redis, files).
//! - Connections (database pools, clients) are opened in each worker by the factory, after the
//!   worker started. Never open them in the master or before calling `serve`: a socket opened
//!   before is not inherited (every descriptor is close-on-exec) and the master would hold it
//!   for nothing.
//! - Code before `serve` in `main` runs in the master *and* in every worker. Keep it to parsing
//!   arguments and setting up logging.
//!
//! # `#[tokio::main]`
//! Do not wrap `main` in `#[tokio::main]`: the master must not run a runtime and each worker
//! builds its own. Calling [`serve`] (or any entry point here) inside a tokio runtime fails at
//! once, before anything is bound or started, with an error saying so. Use a plain `fn main()`
//! and do async set-up in the factory, which runs inside the worker's runtime.
//!
//! # Client addresses
//! Handlers can extract [`ConnectInfo<SocketAddr>`](axum::extract::ConnectInfo) (the peer's
//! address) without `into_make_service_with_connect_info`: every request carries it.
//!
//! # TLS
//! [`serve_tls`] (or [`Prefork::tls`] through [`Server::prefork`]) serves HTTPS with HTTP/2 or HTTP/1.1 by ALPN, through
//! rustls with the *ring* provider. The master loads and checks the certificate and key before
//! it starts any worker: a missing file, a file without a certificate or key, a key that does
//! not match, or swapped files fail at once with a message naming the file.
//!
//! # Without prefork
//! [`Standalone`] serves the same app from this one process on a multi-threaded runtime (what
//! `axum::serve` under `#[tokio::main]` does), stopping on SIGTERM/SIGINT: the baseline to
//! measure prefork against, or a development mode.
//!
//! ```no_run
//! # use axum::{routing::get, Router};
//! # fn main() -> Result<(), prefork_axum::Error> {
//! # let app = Router::new().route("/", get(|| async { "Hello, World!" }));
//! prefork_axum::Standalone::bind("127.0.0.1:8080")?.threads(4).serve(app)
//! # }
//! ```
//!
//! # Everything else
//! [`Server`] reaches every option: the process model through [`Server::prefork`] (workers,
//! `SO_REUSEPORT`, shutdown timeout, reload, health, hooks, TLS) and the threads per worker.
//! For a hand-written server on the same model, use [`prefork_tokio::Server::run`] (or
//! [`prefork_tokio::Standalone::run`]) and [`serve_worker`].
#![cfg_attr(docsrs, feature(doc_cfg))]
#![forbid(unsafe_code)]

mod server;
mod service;
mod standalone;

use axum::Router;

#[allow(deprecated)]
pub use server::Builder;
pub use server::Server;
#[allow(deprecated)]
pub use service::serve_child;
pub use service::serve_worker;
pub use standalone::Standalone;

/// The process model (the matching version).
pub use prefork_core;
#[doc(no_inline)]
pub use prefork_core::{BoxError, Error, ListenAddr, Network, Prefork};
#[cfg(feature = "tls")]
#[doc(no_inline)]
pub use prefork_core::{PemFiles, TlsConfig};
/// The tokio adapter this crate is built on.
pub use prefork_tokio;
#[doc(no_inline)]
pub use prefork_tokio::Worker;

/// Serves `app` on `addr` with one worker process per CPU: supervises in the master, serves in
/// each worker. Returns when the server has stopped (SIGTERM or SIGINT: `Ok(())` once every
/// worker has drained).
///
/// `app` is built before this call, in the master too; build state in the workers with
/// [`serve_with`].
///
/// # Errors
/// Each message names the address, path or worker concerned:
/// - called inside a tokio runtime (`#[tokio::main]`);
/// - the address cannot be resolved or bound (e.g. "cannot listen on 127.0.0.1:8080: Address
///   already in use");
/// - a worker fails to start (its own message), or workers crash more often than the recovery
///   budget allows;
/// - a bad configuration (`workers(0)`, `threads(0)`);
/// - in a worker: `PREFORK_CHILD=1` set without a master.
pub fn serve(app: Router, addr: impl Into<ListenAddr>) -> Result<(), Error> {
    Server::new(addr).serve(app)
}

/// Builds the app in each worker with `factory` (async, once per worker, never in the master),
/// then serves it on `addr`. See [`Server::serve_with`].
///
/// # Errors
/// As [`serve`], and the factory's error if it fails in a starting worker.
pub fn serve_with<F>(factory: F, addr: impl Into<ListenAddr>) -> Result<(), Error>
where
    F: AsyncFnOnce(&Worker) -> Result<Router, BoxError>,
{
    Server::new(addr).serve_with(factory)
}

/// Serves `app` over HTTPS on `addr` (HTTP/2 or HTTP/1.1 by ALPN) with the certificate chain
/// and key in `files`, checked by the master before any worker starts.
///
/// ```no_run
/// use axum::{routing::get, Router};
/// use prefork_axum::PemFiles;
///
/// fn main() -> Result<(), prefork_axum::Error> {
///     let app = Router::new().route("/", get(|| async { "Hello, World!" }));
///     prefork_axum::serve_tls(app, "0.0.0.0:8443", PemFiles {
///         cert_chain: "cert.pem".into(),
///         private_key: "key.pem".into(),
///     })
/// }
/// ```
///
/// For embedded PEM bytes or your own rustls configuration, use [`Prefork::tls`] with a
/// [`TlsConfig`] (`Server::new(addr).prefork(|p| p.tls(config))`).
///
/// # Errors
/// As [`serve`], and a TLS error naming the file ("TLS: key.pem: no private key found").
#[cfg(feature = "tls")]
pub fn serve_tls(app: Router, addr: impl Into<ListenAddr>, files: PemFiles) -> Result<(), Error> {
    Server::new(addr)
        .prefork(|p| p.tls(TlsConfig::from_pem_files(files)))
        .serve(app)
}
