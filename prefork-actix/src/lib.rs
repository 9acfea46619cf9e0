//! Prefork for actix-web: an app becomes a prefork server (one master process supervising N
//! worker processes that share the listening socket) with one call, [`serve`], in place of
//! `HttpServer::new(factory).bind(addr)?.run().await`.
//!
//! ```no_run
//! use actix_web::{web, App};
//! use prefork_actix::PreforkMiddleware;
//!
//! fn main() -> Result<(), prefork_actix::Error> {
//!     prefork_actix::serve(
//!         || {
//!             App::new()
//!                 .route("/", web::get().to(|| async { "Hello, World!" }))
//!                 .wrap(PreforkMiddleware)
//!         },
//!         "127.0.0.1:8080",
//!     )
//! }
//! ```
//!
//! The same with every process-model option on the [`Prefork`] (`#[actix_web::main]` works
//! too):
//!
//! ```no_run
//! use std::time::Duration;
//! use actix_web::{web, App};
//! use prefork_actix::{PreforkMiddleware, Server};
//!
//! fn main() -> Result<(), prefork_actix::Error> {
//!     Server::new("0.0.0.0:8080")
//!         .prefork(|p| {
//!             p.workers(4)                                 // processes (default: one per CPU)
//!                 .shutdown_timeout(Duration::from_secs(10))  // drain budget per worker
//!                 .keepalive_timeout(Some(Duration::from_secs(30)))
//!                 .recover_threshold(8)                       // unexpected exits tolerated
//!         })
//!         .threads(1)                                         // actix threads per process
//!         .serve(|| {
//!             App::new()
//!                 .route("/", web::get().to(|| async { "Hello, World!" }))
//!                 .wrap(PreforkMiddleware)
//!         })
//! }
//! ```
//!
//! # Two entry points
//! - **[`serve`] / [`Server::serve`]** take actix's app factory (`|| App::new()...`, what
//!   `HttpServer::new` takes). Each actix worker thread accepts on the inherited listeners
//!   itself, as the other adapters do, and hands each connection to actix-http's
//!   `HttpService`: connections are balanced across the workers one by one (a burst opened at
//!   once spreads over them), plain HTTP sent to a TLS port is answered `400`, and the
//!   [`Prefork`]'s timeouts apply (see [Timeouts](#timeouts-on-by-default)). Use this.
//! - **[`run_prefork`](HttpServerExt::run_prefork)** takes an existing, configured
//!   `actix_web::HttpServer` (`HttpServer::new(f).keep_alive(..).run_prefork(prefork)`), for
//!   actix settings `serve` does not take (`max_connections`, `backlog`, buffer sizes, ...).
//!   actix-server's accept thread then accepts; it cannot be asked before each `accept`, so the
//!   balance pauses it from outside and a burst opened at once is not spread (connections
//!   arriving over time are); plain HTTP on a TLS port gets a TLS alert, not a `400`; actix's
//!   own timeouts apply.
//!
//! # Vocabulary (the same in every prefork adapter)
//! | concept | here |
//! |---|---|
//! | serve an app on an address | [`serve(factory, addr)`](serve), [`serve_tls(factory, addr, files)`](serve_tls) for HTTPS, or `HttpServer::new(factory).run_prefork(Prefork::new(addr))` ([`HttpServerExt::run_prefork`]) |
//! | build the app in each worker | actix's own app factory (`\|\| App::new()...`) runs in each worker only |
//! | every option | [`Server`]: `Server::new(addr)` or `Server::from_prefork(p)`, then `.prefork(\|p\| ..)` for the process model ([`Prefork`]), `.threads(n)` for actix worker threads, `.serve(factory)` |
//! | a worker's context | [`prefork_core::Worker`] (the middleware and the drain use it for you) |
//! | errors of the entry points | [`Error`] (its `Debug` is its message, for `fn main() -> Result<(), Error>`) |
//!
//! # What happens where
//! `main()` runs in the master and again in every worker (the master re-executes the program;
//! see [`prefork_core`]). The same call does the right thing in each:
//!
//! - **Master:** [`Prefork::run`] binds, starts the workers and supervises them (respawns a
//!   worker that dies, stops all on SIGTERM/SIGINT) until none is left, then returns. It runs no
//!   async runtime and never calls the app factory.
//! - **Worker:** runs **one actix worker thread per process** by default ([`Server::threads`]).
//!   With [`serve`], each thread builds the app and accepts for itself; with
//!   [`run_prefork`](HttpServerExt::run_prefork), the `HttpServer` is given the inherited
//!   listener(s) with `listen` (or `listen_rustls_0_23`) and has actix's signal handling
//!   disabled. Either way the worker reports ready once every thread has built its app, and on
//!   SIGTERM (or the master's death) it drains without loss (below) and exits 0.
//!
//! # Add `PreforkMiddleware` to the app
//! The app factory returns your `App`, whose middleware type the adapter cannot change: add
//! [`PreforkMiddleware`] with `.wrap(PreforkMiddleware)` (last, so it sees every response). It counts requests (the master's stats, `max_requests`), ends keep-alive
//! connections at a request boundary when the worker drains (and tells the drain which
//! connections are idle), and runs the heartbeat on each actix worker thread. Without it a
//! worker serves, but logs a warning at start, counts no requests, beats from its control thread
//! (a blocked handler goes unnoticed), cannot close busy keep-alive connections before the drain
//! timeout and leaves idle ones to actix's `keep_alive` timer.
//!
//! # The loss-free drain
//! On SIGTERM, a reload, a scale-down or a recycle, a worker:
//! 1. marks the drain: every HTTP/1 response from then on carries `Connection: close`, so each
//!    keep-alive connection ends after the response to the request it already sent;
//! 2. stops accepting and closes its copies of the listening sockets at once (with
//!    [`run_prefork`](HttpServerExt::run_prefork): pauses actix's accept thread first); the
//!    other workers keep accepting from the shared queue; on a final stop, new connections are
//!    refused instead of hanging;
//! 3. closes every keep-alive connection that stays idle (no request in progress, none started
//!    or finished) for [`Prefork::drain_grace`] (1 s by default): a client that sends its next
//!    request within the grace is answered, with `Connection: close`. No connection is closed
//!    under a request in progress, and a streaming response is in progress until its last chunk;
//! 4. waits until every connection has ended, or for
//!    [`Worker::drain_timeout`](prefork_core::Worker::drain_timeout) (the shutdown timeout less a
//!    margin, so the worker exits before the master's SIGKILL), exactly, not rounded to
//!    seconds; connections still open then are dropped with the process.
//!
//! actix has no hook for closing a connection, so the grace is kept by the adapter: each
//! connection's socket is recorded on the actix worker thread that serves it,
//! [`PreforkMiddleware`] marks the connection busy from a request's start to the end of its
//! response body, and once the drain starts a task on each actix worker thread looks at that
//! thread's connections once per grace and shuts down the read side of every socket on which
//! nothing happened since its previous look. actix reads end-of-file, as if the client had
//! closed its side, and closes the connection: the client sees a clean end of file. A connection
//! idle since before the drain is closed one grace after it starts; one used during the drain,
//! between one and two graces after its last request. Without [`PreforkMiddleware`] no request
//! is seen, so no connection is closed this way (actix's `keep_alive` timer still applies).
//!
//! Limits, all from what actix-web 4 / actix-http 3 let an adapter do:
//! - **HTTP/2 gets no GOAWAY.** actix-http's HTTP/2 dispatcher is private and has no graceful
//!   shutdown (the graceful-shutdown signal actix-http has for HTTP/1 is internal, fired only by
//!   actix's own graceful stop): an HTTP/2 connection is closed once idle for the grace, like an
//!   HTTP/1 one, without being told first. One that always has a request in progress ends at the
//!   drain timeout.
//! - **Reads are not seen by the grace under [`run_prefork`](HttpServerExt::run_prefork).**
//!   [`serve`] counts every read as activity, as the other adapters do; under `run_prefork` only
//!   requests are, so a request head still arriving when the grace ends (a client sending it
//!   over more than a grace) is cut.
//!
//! actix's own graceful stop (`ServerHandle::stop(true)`) is not used: it drops connections
//! accepted but not yet handed to a worker thread and closes idle keep-alive connections at
//! once, under a client that may be sending.
//!
//! # Timeouts (on by default)
//! With [`serve`], the [`Prefork`]'s, as in the other adapters:
//! - [`Prefork::keepalive_timeout`] (**75 s**; `None`: none) is actix's `keep_alive`: an idle
//!   keep-alive connection is closed after it (during a drain, after the drain grace if that
//!   comes first);
//! - [`Prefork::header_read_timeout`] (**30 s**; `None`: off) is actix's
//!   `client_request_timeout`: a request head must arrive within it (slow-header clients are
//!   closed; `408` if partly sent). actix counts it from the accept for a connection's first
//!   request, not from the head's first byte as the other adapters do;
//! - both are minimums: actix's timers count from a clock it refreshes every 500 ms, so the
//!   adapter gives actix each timeout plus 500 ms, and a connection is closed between the
//!   timeout and half a second after it, never before;
//! - `client_disconnect_timeout` is 1 s (how long a closing connection may take to shut down);
//! - [`TlsConfig::handshake_timeout`] (10 s), with `tls`.
//!
//! With [`run_prefork`](HttpServerExt::run_prefork), actix's, set on the `HttpServer` as
//! usual (`client_request_timeout` 5 s, `keep_alive` 5 s, `client_disconnect_timeout` 1 s;
//! `tls_handshake_timeout` from [`TlsConfig::handshake_timeout`]): the `HttpServer` does not
//! tell whether you set them, and overriding yours would be wrong. For the other adapters'
//! idle timeout, set
//! `.keep_alive(prefork_actix::prefork_core::DEFAULT_KEEPALIVE_TIMEOUT)`.
//!
//! # Health
//! - **Heartbeat:** [`PreforkMiddleware`] starts a heartbeat task on each actix worker thread as
//!   the app is built there; with several threads, a beat is sent only when every thread ticked,
//!   so one blocked thread is enough for the master's watchdog
//!   ([`Prefork::worker_timeout`]) to replace the worker. actix's accept thread is separate and
//!   keeps handing connections to a blocked worker thread until then.
//! - **Counters:** connections via `on_connect`, requests via the middleware, reported with each
//!   heartbeat.
//! - **Descriptors:** workers raise their soft `RLIMIT_NOFILE` to the hard limit at start
//!   ([`Prefork::nofile_limit`]). If `accept` still fails, [`serve`] logs it once with the
//!   limit and how to raise it, pauses that thread's accepts for 50 ms and retries (as the other
//!   adapters); under [`run_prefork`](HttpServerExt::run_prefork), actix-server logs it itself
//!   (`Error accepting connection: Too many open files`, target `actix_server::accept`) and
//!   pauses for 500 ms. Raise the limit with `ulimit -n`, `LimitNOFILE=` or
//!   [`Prefork::nofile_limit`].
//!
//! # Unix domain sockets
//! `unix:/path` addresses serve plain HTTP/1.1 (TLS is for TCP listeners); under
//! [`run_prefork`](HttpServerExt::run_prefork), with `HttpServer::listen_uds`.
//!
//! # `#[actix_web::main]` or `fn main()`
//! [`serve`] and [`run_prefork`](HttpServerExt::run_prefork) block until the server has
//! stopped; they are not futures (there is nothing to `.await`), so they read the same in both
//! shapes:
//!
//! - Under `#[actix_web::main]`, the master blocks the runtime's thread while it supervises.
//!   That is fine: the master serves nothing, but do not expect tasks you spawned on that
//!   runtime to make progress. In a worker, that thread is already running a runtime, so the
//!   server's actix `System` runs on a thread of its own (`prefork-actix`), and the calling
//!   thread waits for it.
//! - From a plain `fn main()` no runtime exists until a worker starts one for its server on the
//!   calling thread; the master never starts one.
//!
//! # App state is built per worker
//! The closure given to [`serve`] (or `HttpServer::new`) is actix's app factory: it runs in each worker process,
//! once per actix worker thread and listener, and never in the master. Build pools, caches and
//! connections there (or with `App::data_factory` when that is async). Workers are separate
//! processes: `web::Data` is not shared between them. Code in `main()` before the call runs in
//! every process, the master included; guard it with [`prefork_core::is_child`] if that matters.
//!
//! # Options
//! Every process-model option is a setter on the [`Prefork`] you pass: listen addresses,
//! [`workers`](Prefork::workers), [`reuseport`](Prefork::reuseport),
//! [`shutdown_timeout`](Prefork::shutdown_timeout), the recovery budget
//! ([`recover_threshold`](Prefork::recover_threshold), [`recover_window`](Prefork::recover_window)),
//! the hooks (`on_child_spawn`, `on_master_ready`, `on_child_recover`, `on_master_death`),
//! `command_producer`, the timeouts, and [`tls`](Prefork::tls). The one actix setting prefork
//! owns, threads per process, is on [`Server`]: `Server::from_prefork(prefork).threads(2)`, as
//! is a connection callback ([`Server::on_connect`]). Under
//! [`run_prefork`](HttpServerExt::run_prefork), everything else actix offers (keep-alive,
//! timeouts, `max_connections`, ...) is set on the `HttpServer` as usual, except
//! `bind`/`listen`, `workers`, `disable_signals`, `on_connect` and `shutdown_signal`, which
//! prefork owns (actix's `shutdown_timeout` is unused: the drain follows
//! [`Prefork::shutdown_timeout`]).
//!
//! # TLS (feature `tls`, on by default)
//! Set [`Prefork::tls`]; the master loads and validates the certificate and key before it starts
//! any worker (a missing file, a file without a certificate or key, a key that does not match, or
//! swapped files fail there, naming the path), and each worker serves TLS with rustls 0.23
//! (tokio-rustls under [`serve`], actix-web's own support under
//! [`run_prefork`](HttpServerExt::run_prefork)). The crypto provider is prefork-core's *ring*;
//! no aws-lc-rs is built.
//!
//! ```no_run
//! # #[cfg(feature = "tls")]
//! # fn main() -> Result<(), prefork_actix::Error> {
//! use actix_web::App;
//! use prefork_actix::{PemFiles, Server, TlsConfig};
//!
//! let tls = TlsConfig::from_pem_files(PemFiles {
//!     cert_chain: "cert.pem".into(),
//!     private_key: "key.pem".into(),
//! });
//! Server::new("0.0.0.0:8443").prefork(|p| p.tls(tls)).serve(|| App::new())
//! # }
//! # #[cfg(not(feature = "tls"))]
//! # fn main() {}
//! ```
//!
//! - **HTTP/2 by ALPN:** under [`serve`], the protocols of [`TlsConfig::alpn`] (`h2` and
//!   `http/1.1` by default) are offered; `h2` is served as HTTP/2, anything else as HTTP/1.1.
//!   actix-web's own TLS listeners ([`run_prefork`](HttpServerExt::run_prefork)) offer `h2`
//!   and `http/1.1` ahead of any other protocol in the configuration, even when
//!   [`TlsConfig::alpn`] leaves `h2` out: that is actix's rule.
//! - **Handshake timeout:** [`TlsConfig::handshake_timeout`] (default 10 s) bounds each
//!   handshake, so a client that stalls mid-handshake loses its connection. A failed handshake
//!   (plain HTTP, garbage, a stall) costs that connection only.
//! - **Plain HTTP on the TLS port** is answered under [`serve`] as nginx does: a `400` saying
//!   that the port expects HTTPS, then the close. Under
//!   [`run_prefork`](HttpServerExt::run_prefork) the client gets rustls's fatal `decode_error`
//!   alert and the close instead: actix-web's `HttpServer` puts actix-tls's acceptor straight
//!   after the accept, with no hook before the handshake.
//!
//! # Logging
//! Through [`tracing`]: the master's lines (`listening`, `worker started`, `all workers ready`,
//! ...) come from [`prefork_core`], actix-http logs an app factory's failure
//! (`Initialization of HTTP service error`), actix-server its own start and stop under
//! [`run_prefork`](HttpServerExt::run_prefork), and this crate logs only at debug level, but
//! for an accept error that is not the connection's fault.
#![cfg_attr(docsrs, feature(doc_cfg))]
// The one descriptor operation that needs `unsafe` (closing the listener copies actix-server
// still owns) is prefork-core's `accept::HandedOffListener`.
#![forbid(unsafe_code)]

mod balance;
mod config;
mod ext;
mod idle;
mod middleware;
mod serve;
#[cfg(feature = "tls")]
mod tls;
mod worker;

#[allow(deprecated)]
pub use config::Config;
pub use config::{Server, DEFAULT_THREADS};
pub use ext::HttpServerExt;
pub use middleware::{PreforkBody, PreforkFuture, PreforkMiddleware, PreforkService};
pub use serve::serve;
#[cfg(feature = "tls")]
pub use serve::serve_tls;

/// The process model this crate builds on (the same version), for its other types.
pub use prefork_core;
#[doc(no_inline)]
pub use prefork_core::{BoxError, Error, Prefork};
#[cfg(feature = "tls")]
#[doc(no_inline)]
pub use prefork_core::{PemFiles, TlsConfig};
/// The TLS stream type [`Server::serve`] hands to [`Server::on_connect`]
/// (`tokio_rustls::server::TlsStream<actix_web::rt::net::TcpStream>`).
#[cfg(feature = "tls")]
pub use tokio_rustls;
