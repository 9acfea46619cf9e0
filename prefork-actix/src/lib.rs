//! Prefork for actix-web: an existing app becomes a prefork server (one master process supervising
//! N worker processes that share the listening socket) by replacing `.bind(..)?.run().await` with
//! one call, [`run_prefork`](HttpServerExt::run_prefork).
//!
//! ```no_run
//! use actix_web::{web, App, HttpServer};
//! use prefork_actix::{HttpServerExt as _, Prefork, PreforkMiddleware};
//!
//! #[actix_web::main]
//! async fn main() -> Result<(), prefork_actix::Error> {
//!     HttpServer::new(|| {
//!         App::new()
//!             .route("/", web::get().to(|| async { "Hello, World!" }))
//!             .wrap(PreforkMiddleware)
//!     })
//!     .run_prefork(Prefork::new("127.0.0.1:8080"))
//! }
//! ```
//!
//! The same from a plain `fn main()`, with every process-model option on the [`Prefork`]:
//!
//! ```no_run
//! use std::time::Duration;
//! use actix_web::{web, App, HttpServer};
//! use prefork_actix::{HttpServerExt as _, Prefork};
//!
//! fn main() -> Result<(), prefork_actix::Error> {
//!     let prefork = Prefork::new("0.0.0.0:8080")
//!         .workers(4)                                 // processes (default: one per CPU)
//!         .reuseport(false)                           // one shared socket (the default)
//!         .shutdown_timeout(Duration::from_secs(10))  // drain budget per worker
//!         .recover_threshold(8)                       // unexpected exits tolerated
//!         .on_master_ready(|pids| {
//!             tracing::info!(?pids, "serving");
//!             Ok(())
//!         });
//!     HttpServer::new(|| App::new().route("/", web::get().to(|| async { "Hello, World!" })))
//!         .keep_alive(Duration::from_secs(30))  // actix's own settings stay on the HttpServer
//!         .run_prefork(prefork)
//! }
//! ```
//!
//! # Vocabulary (the same in every prefork adapter)
//! | concept | here |
//! |---|---|
//! | serve an app on an address | `HttpServer::new(app).run_prefork(Prefork::new(addr))` ([`HttpServerExt::run_prefork`]) |
//! | build the app in each worker | actix's own app factory (`HttpServer::new(\|\| App::new()...)`) runs in each worker only |
//! | every option | [`Server`]: `Server::new(addr)` or `Server::from_prefork(p)`, then `.prefork(\|p\| ..)` for the process model ([`Prefork`]) and `.threads(n)` for actix worker threads |
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
//! - **Worker:** the `HttpServer` is given the inherited listener(s) with `listen` (or
//!   `listen_rustls_0_23`), runs **one actix worker thread per process** by default
//!   ([`Server::threads`]), has actix's signal handling disabled (prefork handles SIGTERM and the
//!   master's death). It reports ready once actix accepts, and on SIGTERM (or the master's
//!   death) it drains without loss (below) and exits 0.
//!
//! # Add `PreforkMiddleware` to the app
//! actix-web's `HttpServer` keeps its app factory to itself, so the adapter cannot wrap your
//! app: add [`PreforkMiddleware`] with `.wrap(PreforkMiddleware)` (last, so it sees every
//! response). It counts requests (the master's stats, `max_requests`), ends keep-alive
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
//! 2. pauses actix's accept thread and closes its copies of the listening sockets at once (the
//!    other workers keep accepting from the shared queue; on a final stop, new connections are
//!    refused instead of hanging);
//! 3. closes every keep-alive connection that stays idle (no request in progress, none started
//!    or finished) for [`Prefork::drain_grace`] (1 s by default): a client that sends its next
//!    request within the grace is answered, with `Connection: close`. No connection is closed
//!    under a request in progress, and a streaming response is in progress until its last chunk;
//! 4. waits until every connection has ended, or for
//!    [`Worker::drain_timeout`](prefork_core::Worker::drain_timeout) (the shutdown timeout less a
//!    margin, so the worker exits before the master's SIGKILL), exactly, not rounded to
//!    seconds; connections still open then are dropped with the process.
//!
//! actix has no hook for closing a connection, so the grace is kept by the adapter:
//! `on_connect` records each connection's socket on the actix worker thread that serves it,
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
//! - **Reads are not seen.** The other adapters count every read as activity; here only
//!   requests are. A request head still arriving when the grace ends (a client sending it over
//!   more than a grace) is cut.
//!
//! actix's own graceful stop (`ServerHandle::stop(true)`) is not used: it drops connections
//! accepted but not yet handed to a worker thread and closes idle keep-alive connections at
//! once, under a client that may be sending.
//!
//! # Timeouts (on by default)
//! actix's, set on the `HttpServer` as usual:
//! - `client_request_timeout` (**5 s**): a new connection must deliver its first request's head
//!   within it (the header read timeout: slow-header clients are closed; `408` if partly sent);
//! - `keep_alive` (**5 s**): an idle keep-alive connection is closed after it (during a drain,
//!   after the drain grace if that comes first);
//! - `client_disconnect_timeout` (**1 s**): how long a closing connection may take to shut down;
//! - `tls_handshake_timeout`: from [`TlsConfig::handshake_timeout`] (10 s), with `tls`.
//!
//! [`Prefork::keepalive_timeout`] (75 s, the idle timeout of the other adapters) and
//! [`Prefork::header_read_timeout`] (30 s from a head's first byte) are **not**
//! applied: `HttpServer` does not tell whether you set `keep_alive` or `client_request_timeout`,
//! and overriding yours would be wrong. For the other adapters' behaviour, set them yourself:
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
//!   ([`Prefork::nofile_limit`]). If `accept` still fails, actix-server logs it itself, as
//!   `Error accepting connection: Too many open files (os error 24)` at `error` level (target
//!   `actix_server::accept`), pauses that listener for 500 ms and retries; raise the limit with
//!   `ulimit -n`, `LimitNOFILE=` or [`Prefork::nofile_limit`].
//!
//! # Unix domain sockets
//! `unix:/path` addresses are served with `HttpServer::listen_uds` (plain HTTP/1.1; TLS is for
//! TCP listeners).
//!
//! # `#[actix_web::main]` or `fn main()`
//! [`run_prefork`](HttpServerExt::run_prefork) blocks until the server has stopped; it is not a
//! future (there is nothing to `.await`), so it reads the same in both shapes:
//!
//! - Under `#[actix_web::main]`, the master blocks the runtime's thread while it supervises.
//!   That is fine: the master serves nothing, but do not expect tasks you spawned on that
//!   runtime to make progress. In a worker, that thread is already running a runtime, so the
//!   server runs on a thread of its own (`prefork-actix`) with a new actix `System`, and the
//!   calling thread waits for it.
//! - From a plain `fn main()` no runtime exists until a worker starts one for its server on the
//!   calling thread; the master never starts one.
//!
//! # App state is built per worker
//! The closure given to `HttpServer::new` is actix's app factory: it runs in each worker process,
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
//! `command_producer`, and [`tls`](Prefork::tls). The one actix setting prefork owns, threads per
//! process, is on [`Server`]:
//! `.run_prefork(Server::from_prefork(prefork).threads(2))`, as is a connection callback
//! ([`Server::on_connect`]). Everything else actix offers (keep-alive, timeouts,
//! `max_connections`, ...) is set on the `HttpServer` as usual, except `bind`/`listen`,
//! `workers`, `disable_signals`, `on_connect` and `shutdown_signal`, which prefork owns
//! (actix's `shutdown_timeout` is unused: the drain follows [`Prefork::shutdown_timeout`]).
//!
//! # TLS (feature `tls`, on by default)
//! Set [`Prefork::tls`]; the master loads and validates the certificate and key before it starts
//! any worker (a missing file, a file without a certificate or key, a key that does not match, or
//! swapped files fail there, naming the path), and each worker serves with actix-web's rustls 0.23
//! support. The crypto provider is prefork-core's *ring*; no aws-lc-rs is built.
//!
//! ```no_run
//! # #[cfg(feature = "tls")]
//! # fn main() -> Result<(), prefork_actix::Error> {
//! use actix_web::{App, HttpServer};
//! use prefork_actix::{HttpServerExt as _, PemFiles, Prefork, TlsConfig};
//!
//! let tls = TlsConfig::from_pem_files(PemFiles {
//!     cert_chain: "cert.pem".into(),
//!     private_key: "key.pem".into(),
//! });
//! HttpServer::new(|| App::new()).run_prefork(Prefork::new("0.0.0.0:8443").tls(tls))
//! # }
//! # #[cfg(not(feature = "tls"))]
//! # fn main() {}
//! ```
//!
//! - **HTTP/2 by ALPN:** actix offers `h2` and `http/1.1` on every TLS listener, ahead of any
//!   other protocol in the configuration (which are kept). It offers `h2` even when
//!   [`TlsConfig::alpn`] leaves it out: that is actix's rule.
//! - **Handshake timeout:** [`TlsConfig::handshake_timeout`] (default 10 s) becomes actix's
//!   `tls_handshake_timeout`, so a client that stalls mid-handshake loses its connection. A
//!   failed handshake (plain HTTP, garbage, a stall) costs that connection only.
//! - **Plain HTTP on the TLS port is not answered `400`** here, unlike the other adapters: the
//!   client gets rustls's fatal `decode_error` alert and the close. actix-web's `HttpServer`
//!   puts actix-tls's acceptor straight after the accept, with no hook before the handshake,
//!   and keeps the app factory and its settings (keep-alive, timeouts, ...) private, so the
//!   adapter, which is handed the `HttpServer`, cannot put a peek at the first bytes in front.
//!
//! # Logging
//! Through [`tracing`]: the master's lines (`listening`, `worker started`, `all workers ready`,
//! ...) come from [`prefork_core`], actix-server logs its own start and stop, and this crate logs
//! only at debug level.
#![cfg_attr(docsrs, feature(doc_cfg))]
// The one descriptor operation that needs `unsafe` (closing the listener copies actix-server
// still owns) is prefork-core's `accept::HandedOffListener`.
#![forbid(unsafe_code)]

mod balance;
mod config;
mod ext;
mod idle;
mod middleware;
mod worker;

#[allow(deprecated)]
pub use config::Config;
pub use config::{Server, DEFAULT_THREADS};
pub use ext::HttpServerExt;
pub use middleware::{PreforkBody, PreforkFuture, PreforkMiddleware, PreforkService};

/// The process model this crate builds on (the same version), for its other types.
pub use prefork_core;
#[doc(no_inline)]
pub use prefork_core::{BoxError, Error, Prefork};
#[cfg(feature = "tls")]
#[doc(no_inline)]
pub use prefork_core::{PemFiles, TlsConfig};
