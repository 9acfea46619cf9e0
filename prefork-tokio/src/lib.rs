//! Tokio adapter for [`prefork_core`]: one tokio runtime per worker process, serving any hyper
//! service (HTTP/1.1 keep-alive, h2c, and HTTPS with HTTP/2 by ALPN) on the listeners the
//! master passed down, with a graceful drain on shutdown.
//!
//! ```no_run
//! use std::convert::Infallible;
//! use hyper::{body::Incoming, service::service_fn, Request, Response};
//! use prefork_tokio::prefork_core::Prefork;
//!
//! fn main() -> std::io::Result<()> {
//!     let hello = service_fn(|_: Request<Incoming>| async {
//!         Ok::<_, Infallible>(Response::new(String::from("Hello, World!")))
//!     });
//!     prefork_tokio::Builder::new(Prefork::new("127.0.0.1:8080")).serve(hello)
//! }
//! ```
//!
//! The same `main` supervises in the master and serves in every worker (see
//! [`prefork_core`]'s docs for the process model). Axum users want `prefork-axum`, built on this
//! crate.
//!
//! # Runtimes
//! The master never builds a runtime. Each worker builds one after it is started: a
//! `current_thread` runtime by default (one process per core is the point), or a multi-threaded
//! one with [`Builder::threads`]. Everything per-worker (pools, clients, caches) is built inside
//! that runtime, in the [`Builder::run`] closure, never in the master.
//!
//! Calling [`Builder::run`] or [`Builder::serve`] inside a tokio runtime (from
//! `#[tokio::main]`, say) fails at once with an error that says so: building a worker's runtime
//! there would panic, and a master inside a runtime would block it. Use a plain `fn main()`.
//!
//! # Two levels
//! - [`Builder::serve`]: a hyper service, cloned per connection.
//! - [`Builder::run`]: your async closure runs in each worker with a [`TokioChild`] (tokio
//!   listeners, worker id, shutdown future, `ready`): async set-up then
//!   [`TokioChild::serve`], or any other tokio server (raw TCP, tonic, a custom accept loop).
//!
//! # Without prefork
//! [`Standalone`] runs the same service or closure in this one process, on a multi-threaded
//! runtime, stopping on SIGTERM/SIGINT: the baseline to measure prefork against, or a
//! development mode behind a flag.
//!
//! ```no_run
//! # use std::convert::Infallible;
//! # use hyper::{body::Incoming, service::service_fn, Request, Response};
//! # use prefork_tokio::prefork_core::Prefork;
//! # fn main() -> std::io::Result<()> {
//! # let hello = service_fn(|_: Request<Incoming>| async {
//! #     Ok::<_, Infallible>(Response::new(String::from("Hello, World!")))
//! # });
//! # let single_process = false;
//! if single_process {
//!     prefork_tokio::Standalone::bind("127.0.0.1:8080")?.threads(4).serve(hello)
//! } else {
//!     prefork_tokio::Builder::new(Prefork::new("127.0.0.1:8080").workers(4)).serve(hello)
//! }
//! # }
//! ```
//!
//! # Shutdown
//! On SIGTERM (sent by the master), SIGINT, or the master's death, [`TokioChild::serve`] stops
//! accepting, closes idle keep-alive connections, lets in-flight requests finish, and returns;
//! the worker then exits 0. The drain lasts at most [`TokioChild::drain_timeout`]: the shutdown
//! timeout less a margin (a quarter, at most 1 s), so that the worker exits on its own before
//! the master's SIGKILL. A [`Standalone`] server, which no master kills, drains for the whole
//! shutdown timeout.
//!
//! # TLS
//! With the `tls` feature (on by default) and [`Prefork::tls`](prefork_core::Prefork::tls), each
//! worker serves HTTPS through tokio-rustls with the configuration the master loaded and
//! validated: HTTP/2 or HTTP/1.1 by ALPN, every handshake bounded by
//! [`TlsConfig::handshake_timeout`](prefork_core::TlsConfig::handshake_timeout); a failed
//! handshake costs that connection only. The crypto provider is *ring*.
//!
//! # Performance notes
//! Accepted sockets get `TCP_NODELAY`; the accept loop runs in the task that called
//! [`TokioChild::serve`] and each connection is served in one task, with no channel or extra
//! task in between; the adapter allocates nothing per request.
#![cfg_attr(docsrs, feature(doc_cfg))]
#![forbid(unsafe_code)]

mod builder;
mod child;
mod serve;
mod standalone;
#[cfg(feature = "tls")]
mod tls;

pub use builder::Builder;
pub use child::TokioChild;
pub use standalone::Standalone;

/// The process model this adapter runs on (the matching version).
pub use prefork_core;
#[cfg(feature = "tls")]
#[doc(no_inline)]
pub use prefork_core::{PemFiles, TlsConfig};
#[doc(no_inline)]
pub use prefork_core::{Prefork, Shutdown, ShutdownReason};

/// The hyper-util connection builder [`TokioChild::serve`] uses.
pub use hyper_util::server::conn::auto::Builder as HttpBuilder;

/// The error type services may return (hyper's bound).
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// The default time a client has to send a request's headers: 30 s (hyper's default once a
/// timer is set; Puma's `first_data_timeout`; nginx's `client_header_timeout` is 60 s).
pub const DEFAULT_HEADER_READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// The connection builder [`TokioChild::serve`] uses: hyper-util's automatic HTTP/1.1 + HTTP/2
/// builder on tokio, with hyper's defaults (as `axum::serve`) plus a timer and an HTTP/1 header
/// read timeout of [`DEFAULT_HEADER_READ_TIMEOUT`], so a client that trickles its headers (one
/// byte a second) cannot hold a connection forever. Idle keep-alive connections are closed
/// after [`Prefork::keepalive_timeout`](prefork_core::Prefork::keepalive_timeout) (75 s) by the
/// drain machinery. Tune the builder and pass it to [`TokioChild::serve_with`]:
///
/// ```
/// use std::time::Duration;
///
/// let mut http = prefork_tokio::http_builder();
/// http.http1().header_read_timeout(Duration::from_secs(10));
/// // child.serve_with(http, make_service).await
/// ```
pub fn http_builder() -> HttpBuilder<hyper_util::rt::TokioExecutor> {
    let mut http = HttpBuilder::new(hyper_util::rt::TokioExecutor::new());
    http.http1()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(DEFAULT_HEADER_READ_TIMEOUT);
    http.http2().timer(hyper_util::rt::TokioTimer::new());
    http
}
