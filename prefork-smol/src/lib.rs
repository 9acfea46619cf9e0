//! Prefork for [smol]: each worker process turns its inherited listeners into
//! `async_io::Async<TcpListener>` and runs its own smol executor (single-threaded by default),
//! with a minimal hyper server on top, TLS through futures-rustls, and async-std through the
//! same reactor.
//!
//! ```no_run
//! use std::convert::Infallible;
//! use hyper::{body::Incoming, service::service_fn, Request, Response};
//!
//! async fn hello(_: Request<Incoming>) -> Result<Response<String>, Infallible> {
//!     Ok(Response::new("Hello, World!".to_owned()))
//! }
//!
//! fn main() -> Result<(), prefork_smol::Error> {
//!     prefork_smol::serve(service_fn(hello), "127.0.0.1:8080")
//! }
//! ```
//!
//! `main()` runs in the master and again in every worker (see [`prefork_core`] for the process
//! model): the same `serve` call supervises in the master and serves in a worker.
//!
//! # Vocabulary (the same in every prefork adapter)
//! | concept | here |
//! |---|---|
//! | serve an app on an address | [`serve(service, addr)`](serve), [`serve_tls(service, addr, files)`](serve_tls) |
//! | build the app in each worker | [`serve_with(factory, addr)`](serve_with); the factory is `async \|worker: &Worker\| -> Result<S, BoxError>` |
//! | every option | [`Server`]: `Server::new(addr)` or `Server::from_prefork(p)`, then `.prefork(\|p\| ..)` for the process model ([`Prefork`]) and `.threads(n)` for the executor |
//! | a worker's context | [`Worker`]: `id()`, listeners, `shutdown()`, `ready()`, `drain()`, `spawn()` |
//! | any async server, not only HTTP | [`Server::run`] with an `async` closure taking the [`Worker`] |
//! | one process, no master | [`Standalone`] (same `serve`, `serve_with`, `run`) |
//! | errors of the entry points | [`Error`] (its `Debug` is its message, for `fn main() -> Result<(), Error>`) |
//!
//! # Three ways to serve
//! - [`serve`] / [`Server::serve`]: a hyper service. HTTP/1.1 with keep-alive on plain
//!   listeners (no h2c); over TLS, HTTP/2 or HTTP/1.1 as the client's ALPN asks. Graceful
//!   shutdown on SIGTERM: stop accepting, finish in-flight requests, close idle keep-alive
//!   connections, all within [`Prefork::shutdown_timeout`](prefork_core::Prefork::shutdown_timeout).
//!   A request head must arrive within
//!   [`Prefork::header_read_timeout`](prefork_core::Prefork::header_read_timeout) (30 s) of its
//!   first byte; an idle keep-alive connection is closed after
//!   [`Prefork::keepalive_timeout`](prefork_core::Prefork::keepalive_timeout) (75 s).
//!   HTTP upgrades (WebSocket) are not enabled.
//! - [`Server::serve_with`]: the same, with the service built in each worker by an async factory
//!   (pools, connections and caches belong to a worker, never to the master).
//! - [`Server::run`]: raw async code. The closure gets the worker's [`Worker`] context (async
//!   listeners, worker id, shutdown future, `ready`, executor) and runs inside the worker's
//!   executor: a TCP server of any protocol (`examples/echo.rs`).
//!
//! [`Server`] reaches a [`prefork_core::Prefork`] for every process-model option (workers,
//! listeners, `SO_REUSEPORT`, TLS, reload, health, hooks) and adds the executor threads per worker.
//! [`Standalone`] runs the same code in one process without a master (the benchmark baseline).
//!
//! # The executor
//! Each worker runs one `smol::Executor`, driven by its main thread (`async_io::block_on`) and,
//! with [`Server::threads`] above 1, by more threads. Services and spawned tasks are therefore
//! `Send`; the closure given to [`Server::run`] is not spawned and need not be. The async-io
//! reactor is driven by whichever thread is blocked on it.
//!
//! # Accept errors
//! An accept error never stops a worker. One that concerns a single connection
//! (`ECONNABORTED`, ...) is skipped; one that concerns the process (`EMFILE`, `ENFILE`,
//! `ENOBUFS`) is logged with `tracing::warn!` and retried after a pause that starts at 10 ms and
//! doubles up to 1 s while the errors last.
//!
//! # TLS (feature `tls`, on by default)
//! Configure it with [`Prefork::tls`](prefork_core::Prefork::tls): the master loads and
//! validates the certificate and key before it starts any worker, so a missing file, a file
//! without a certificate or key, or a key that does not match fails at once with the path in the
//! message. Each handshake is bounded by
//! [`TlsConfig::handshake_timeout`](prefork_core::TlsConfig::handshake_timeout); a failed or
//! stalled handshake closes that connection only. The crypto provider is *ring*.
//!
//! # async-std (feature `async-std`)
//! async-std is discontinued upstream; its authors name smol as its successor. Its listener is
//! built on the same async-io reactor, so `into_async_std` and
//! `Worker::take_async_std_listeners` simply hand the socket over, for code that still uses
//! it.
//!
//! [smol]: https://docs.rs/smol
#![cfg_attr(docsrs, feature(doc_cfg))]
#![forbid(unsafe_code)]

mod accept;
mod http;
mod listener;
mod runtime;
mod server;
mod standalone;
#[cfg(feature = "tls")]
mod tls;
mod worker;

pub use listener::into_async;
#[cfg(feature = "async-std")]
pub use listener::into_async_std;
#[doc(no_inline)]
pub use prefork_core::{BoxError, Error, ListenAddr, Prefork, Shutdown, ShutdownReason};
#[cfg(feature = "tls")]
pub use server::serve_tls;
pub use server::{serve, serve_with, Server};
pub use standalone::Standalone;
#[allow(deprecated)]
pub use worker::Context;
pub use worker::Worker;

/// The futures-rustls version [`Context::tls_acceptor`] returns.
#[cfg(feature = "tls")]
pub use futures_rustls;
/// The hyper version the serve loop speaks.
pub use hyper;
/// The process model this adapter drives (re-exported so that versions match).
pub use prefork_core;
