//! Tokio adapter for [`prefork_core`]: one tokio runtime per worker process, serving any hyper
//! service (HTTP/1.1 keep-alive, h2c, and HTTPS with HTTP/2 by ALPN) on the listeners the
//! master passed down, with a loss-free drain on shutdown.
//!
//! ```no_run
//! use std::convert::Infallible;
//! use hyper::{body::Incoming, service::service_fn, Request, Response};
//!
//! fn main() -> Result<(), prefork_tokio::Error> {
//!     let hello = service_fn(|_: Request<Incoming>| async {
//!         Ok::<_, Infallible>(Response::new(String::from("Hello, World!")))
//!     });
//!     prefork_tokio::serve(hello, "127.0.0.1:8080")
//! }
//! ```
//!
//! The same `main` supervises in the master and serves in every worker (see
//! [`prefork_core`]'s docs for the process model). Axum users want `prefork-axum`, built on this
//! crate.
//!
//! # Vocabulary (the same in every prefork adapter)
//! | concept | here |
//! |---|---|
//! | serve an app on an address | [`serve(app, addr)`](serve), [`serve_tls(app, addr, files)`](serve_tls) |
//! | build the app in each worker | [`serve_with(factory, addr)`](serve_with); the factory is `async \|worker: &Worker\| -> Result<App, BoxError>` |
//! | every option | [`Server`]: `Server::new(addr)` or `Server::from_prefork(p)`, then `.prefork(\|p\| ..)` for the process model ([`Prefork`]) and `.threads(n)` for the runtime |
//! | a worker's context | [`Worker`]: `id()`, listeners, `shutdown()`, `ready()`, `drain()`, `counters()` |
//! | any tokio server, not only HTTP | [`Server::run`] with an `async` closure taking the [`Worker`] |
//! | one process, no master | [`Standalone`] (same `serve`, `serve_with`, `run`) |
//! | errors of the entry points | [`Error`] (its `Debug` is its message, for `fn main() -> Result<(), Error>`) |
//!
//! # Runtimes
//! The master never builds a runtime. Each worker builds one after it is started: a
//! `current_thread` runtime by default (one process per core is the point), or a multi-threaded
//! one with [`Server::threads`]. Everything per-worker (pools, clients, caches) is built inside
//! that runtime, in the factory of [`serve_with`] or the closure of [`Server::run`], never in
//! the master.
//!
//! Calling an entry point inside a tokio runtime (from `#[tokio::main]`, say) fails at once
//! with an error that says so: building a worker's runtime there would panic, and a master
//! inside a runtime would block it. Use a plain `fn main()`.
//!
//! # Without prefork
//! [`Standalone`] runs the same service, factory or closure in this one process, on a
//! multi-threaded runtime, stopping on SIGTERM/SIGINT: the baseline to measure prefork against,
//! or a development mode behind a flag.
//!
//! ```no_run
//! # use std::convert::Infallible;
//! # use hyper::{body::Incoming, service::service_fn, Request, Response};
//! # fn main() -> Result<(), prefork_tokio::Error> {
//! # let hello = service_fn(|_: Request<Incoming>| async {
//! #     Ok::<_, Infallible>(Response::new(String::from("Hello, World!")))
//! # });
//! # let single_process = false;
//! if single_process {
//!     prefork_tokio::Standalone::bind("127.0.0.1:8080")?.threads(4).serve(hello)
//! } else {
//!     prefork_tokio::Server::new("127.0.0.1:8080").prefork(|p| p.workers(4)).serve(hello)
//! }
//! # }
//! ```
//!
//! # Shutdown
//! On SIGTERM (sent by the master), SIGINT, or the master's death, [`Worker::serve`] stops
//! accepting, ends each keep-alive connection at a request boundary (the next response carries
//! `Connection: close`, HTTP/2 gets GOAWAY, a connection idle for
//! [`Prefork::drain_grace`](prefork_core::Prefork::drain_grace) is closed), lets in-flight
//! requests finish, and returns; the worker then exits 0. The drain lasts at most
//! [`Worker::drain_timeout`]: the shutdown timeout less a margin (a quarter, at most 1 s), so
//! that the worker exits on its own before the master's SIGKILL. A [`Standalone`] server, which
//! no master kills, drains for the whole shutdown timeout.
//!
//! # TLS
//! With the `tls` feature (on by default), [`serve_tls`] or
//! [`Prefork::tls`](prefork_core::Prefork::tls): each worker serves HTTPS through tokio-rustls
//! with the configuration the master loaded and validated: HTTP/2 or HTTP/1.1 by ALPN, every
//! handshake bounded by [`TlsConfig::handshake_timeout`](prefork_core::TlsConfig::handshake_timeout);
//! a failed handshake costs that connection only. The crypto provider is *ring*.
//!
//! # Performance notes
//! Accepted sockets get `TCP_NODELAY`; the accept loop runs in the task that called
//! [`Worker::serve`] and each connection is served in one task, with no channel or extra
//! task in between; the adapter allocates nothing per request.
//!
//! # Memory per connection
//! An idle HTTP/1.1 keep-alive connection costs about 12 KiB of resident memory (PSS, measured
//! with `cargo xtask connmem` at 2,000 and 10,000 connections), besides the kernel's socket
//! buffers. Its heap (about 20 KB allocated, of which only the touched pages are resident):
//!
//! | part | size | what sets it |
//! |---|---|---|
//! | hyper's read buffer | 8 KiB (16 KiB above an 8 KiB head limit) | [`DEFAULT_MAX_BUF_SIZE`], [`Server::max_request_head`] (axum: `prefork_axum::Server::max_request_head`), `http1().max_buf_size(n)` |
//! | hyper's write (headers) buffer | 8 KiB | fixed in hyper |
//! | the connection's task | about 1.6 KiB | the hyper connection, held once; grows with your service's size |
//! | timers, drain bookkeeping, shutdown waiter, reactor entry | under 1 KiB | fixed |
//!
//! What you can tune, and what it costs:
//! - **The request head limit**: [`http_builder`] accepts heads of up to 8 KiB (`431` above).
//!   `http.http1().max_buf_size(64 * 1024)` accepts larger ones for about 4 KiB more per idle
//!   connection (hyper-util's HTTP/1-or-2 detection reads the first 24 bytes on their own and
//!   hyper then doubles its read buffer; at 8 KiB it cannot).
//! - **The keep-alive timeout**: idle connections are closed after
//!   [`Prefork::keepalive_timeout`](prefork_core::Prefork::keepalive_timeout) (75 s); a shorter
//!   one holds fewer idle connections at a time.
//! - **Your service**: it is cloned into every connection's task (`make_service` per
//!   connection): keep it an `Arc` or a few handles, not a large struct.
//! - **After a wave**: once the open connections of a worker fall to a quarter of a peak of at
//!   least [`RELEASE_AFTER_PEAK`](prefork_core::memory::RELEASE_AFTER_PEAK) (1,024), the worker
//!   gives the allocator's free pages back to the system
//!   ([`release_free_memory`](prefork_core::memory::release_free_memory), glibc's
//!   `malloc_trim`, about a millisecond per 100 MiB, once per wave). With another global
//!   allocator (jemalloc, mimalloc) configure its own decay instead.
//! - `MALLOC_ARENA_MAX=1` or `2` in the environment bounds glibc's per-thread arenas for a
//!   multi-threaded runtime ([`Server::threads`]); the default `current_thread` runtime allocates
//!   from one thread anyway.
//! - TLS connections cost rustls' buffers on top (its handshake runs in a task of its own, so a
//!   connection's task is no larger than plain HTTP's plus the TLS stream).
#![cfg_attr(docsrs, feature(doc_cfg))]
#![forbid(unsafe_code)]

mod serve;
mod server;
mod standalone;
#[cfg(test)]
mod test_server;
mod timer;
#[cfg(feature = "tls")]
mod tls;
mod worker;

#[allow(deprecated)]
pub use server::Builder;
pub use server::Server;
pub use standalone::Standalone;
pub use worker::Worker;

/// The former name of [`Worker`].
#[deprecated(since = "0.2.0", note = "renamed to `Worker`")]
pub type TokioChild = Worker;

/// The process model this adapter runs on (the matching version).
pub use prefork_core;
#[doc(no_inline)]
pub use prefork_core::{BoxError, Error, ListenAddr, Prefork, Shutdown, ShutdownReason};
#[cfg(feature = "tls")]
#[doc(no_inline)]
pub use prefork_core::{PemFiles, TlsConfig};

/// The hyper-util connection builder [`Worker::serve_with`] takes.
pub use hyper_util::server::conn::auto::Builder as HttpBuilder;

/// The default time a client has to send a request's headers, from the head's first byte:
/// 30 s (hyper's default once a timer is set; Puma's `first_data_timeout`; nginx's
/// `client_header_timeout` is 60 s). A keep-alive connection waiting, idle, for its next
/// request is not timed by it but by the keep-alive timeout (75 s) in a connection served by
/// [`Worker::serve`]; with hyper-util's `TokioTimer` it would be closed after this timeout.
/// Set it per server with [`Prefork::header_read_timeout`](prefork_core::Prefork::header_read_timeout).
#[doc(no_inline)]
pub use prefork_core::DEFAULT_HEADER_READ_TIMEOUT;

/// The largest HTTP/1 request head (request line and headers) [`http_builder`] accepts, and
/// hyper's HTTP/1 buffer limit: 8 KiB, nginx's limit for one header line (fasthttp's default is
/// 4 KiB, hyper's own about 400 KiB). A larger head is answered `431 Request Header Fields Too
/// Large`.
///
/// At 8 KiB an idle keep-alive connection keeps an 8 KiB read buffer; with any larger limit it
/// keeps 16 KiB (hyper-util's HTTP/1-or-2 detection hands hyper the first 24 bytes in a read of
/// their own, and hyper then doubles its buffer to read the rest), about 4 KiB more resident
/// memory per idle connection (see the crate docs, *Memory per connection*).
pub const DEFAULT_MAX_BUF_SIZE: usize = 8 * 1024;

/// The connection builder [`Worker::serve`] uses: hyper-util's automatic HTTP/1.1 + HTTP/2
/// builder on tokio, with hyper's defaults (as `axum::serve`) plus a timer, an HTTP/1 header
/// read timeout of [`DEFAULT_HEADER_READ_TIMEOUT`], so a client that trickles its headers (one
/// byte a second) cannot hold a connection forever, and request heads of at most
/// [`DEFAULT_MAX_BUF_SIZE`] (8 KiB), which halves an idle connection's read buffer. Idle
/// keep-alive connections are closed after
/// [`Prefork::keepalive_timeout`](prefork_core::Prefork::keepalive_timeout) (75 s) by the drain
/// machinery.
///
/// The HTTP/1 timer is not hyper-util's `TokioTimer`: hyper arms the header read timeout
/// anew for every request on a keep-alive connection, and this timer makes that a plain
/// deadline, watched by one tokio timer per connection that moves only when it fires, and
/// counted from the first byte of a head rather than from the end of the previous response
/// (a connection served by [`Worker::serve_with`]; elsewhere each deadline gets a tokio timer
/// of its own, as with `TokioTimer`). A timer set with `http1().timer(..)` replaces it. Tune the
/// builder and pass it to [`Worker::serve_with`]:
///
/// ```
/// use std::time::Duration;
///
/// let mut http = prefork_tokio::http_builder();
/// http.http1()
///     .header_read_timeout(Duration::from_secs(10))
///     // Heads of up to 64 KiB, for about 4 KiB more memory per idle connection.
///     .max_buf_size(64 * 1024);
/// // child.serve_with(http, make_service).await
/// ```
pub fn http_builder() -> HttpBuilder<hyper_util::rt::TokioExecutor> {
    let mut http = HttpBuilder::new(hyper_util::rt::TokioExecutor::new());
    http.http1()
        .timer(timer::HeaderTimer::new())
        .header_read_timeout(DEFAULT_HEADER_READ_TIMEOUT)
        .max_buf_size(DEFAULT_MAX_BUF_SIZE);
    http.http2().timer(hyper_util::rt::TokioTimer::new());
    http
}

/// Serves `service` (a hyper service, cloned for each connection) on `addr` with one worker
/// process per CPU: supervises in the master, serves in each worker. Returns when the server
/// has stopped (SIGTERM or SIGINT: `Ok(())` once every worker has drained). See [`Server`] for
/// every option.
///
/// # Errors
/// Each message names the address, path or worker concerned: the address cannot be resolved or
/// bound ("cannot listen on 127.0.0.1:8080: Address already in use"), called inside a tokio
/// runtime, a worker fails to start, a bad configuration.
pub fn serve<S, B>(service: S, addr: impl Into<ListenAddr>) -> Result<(), Error>
where
    S: hyper::service::Service<
            hyper::Request<hyper::body::Incoming>,
            Response = hyper::Response<B>,
        > + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    Server::new(addr).serve(service)
}

/// Builds the service in each worker with `factory` (async, once per worker, inside its
/// runtime, never in the master), then serves it on `addr`. See [`Server::serve_with`].
///
/// # Errors
/// As [`serve`], and the factory's error if it fails in a starting worker.
pub fn serve_with<F, S, B>(factory: F, addr: impl Into<ListenAddr>) -> Result<(), Error>
where
    F: AsyncFnOnce(&Worker) -> Result<S, BoxError>,
    S: hyper::service::Service<
            hyper::Request<hyper::body::Incoming>,
            Response = hyper::Response<B>,
        > + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: hyper::body::Body + Send + 'static,
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
    files: PemFiles,
) -> Result<(), Error>
where
    S: hyper::service::Service<
            hyper::Request<hyper::body::Incoming>,
            Response = hyper::Response<B>,
        > + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    Server::new(addr)
        .prefork(|p| p.tls(TlsConfig::from_pem_files(files)))
        .serve(service)
}
