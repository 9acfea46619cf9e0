//! Runtime-agnostic prefork: one master process supervising N worker processes that share the
//! listening socket(s), a port of Go's `fasthttp/prefork` without its known faults.
//!
//! ```no_run
//! use std::io::{Read, Write};
//!
//! fn main() -> Result<(), prefork_core::Error> {
//!     prefork_core::Prefork::new("127.0.0.1:8080")
//!         .workers(2)
//!         .run(|worker| {
//!             // Runs in each worker: a blocking server on the inherited listener.
//!             let listener = &worker.listeners()[0];
//!             listener.set_nonblocking(false)?;
//!             worker.ready()?;
//!             for stream in listener.incoming() {
//!                 let mut stream = stream?;
//!                 let mut buf = [0u8; 1024];
//!                 let _ = stream.read(&mut buf)?;
//!                 stream.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")?;
//!             }
//!             Ok(())
//!         })
//! }
//! ```
//! (A real server also stops on [`Worker::shutdown`]; see `examples/std_hello.rs`, which polls
//! the listener together with [`Shutdown::as_fd`] and drains in-flight requests.)
//!
//! # Vocabulary (shared by the adapters)
//! [`Prefork`] is the process model's configuration; [`Worker`] is a worker's context (its id,
//! listeners, [`Shutdown`], `ready`); the adapters' `Server` wraps a `Prefork` (reached with
//! `.prefork(|p| ..)`) and their `serve(app, addr)` / `serve_with(factory, addr)` call
//! [`Prefork::run`]; [`Standalone`] is the same context without a master; [`Error`] is what the
//! entry points return (its `Debug` is its message).
//!
//! # The process model
//!
//! `main()` runs in the master and again in every worker: the master re-executes
//! [`std::env::current_exe`] with the original arguments, and the environment
//! (`PREFORK_CHILD=1`, `PREFORK_WORKER_ID=k`) tells the copies apart, never argv, so your own
//! argument parsing is untouched. Re-exec (not a bare `fork`) is always safe, even when the
//! master has started threads.
//!
//! - **Listeners.** By default the master binds (`SO_REUSEADDR`, backlog from
//!   `/proc/sys/net/core/somaxconn`) and every worker inherits the socket at fd 3, 4, ...: all
//!   accept from one queue, and a stopping worker loses nothing; a shared table keeps a burst
//!   of connections spread over the workers ([`balance`], [`Prefork::balance`]). With
//!   [`Prefork::reuseport`] each worker binds its own `SO_REUSEPORT` socket instead (Linux
//!   only). Every other descriptor stays close-on-exec.
//! - **Where services run.** Under systemd socket activation the master uses the passed
//!   sockets instead of binding, and [`systemd::Notifier`] speaks `sd_notify`; listen addresses
//!   may be Unix sockets (`unix:/path`, [`Worker::unix_listeners`]); the workers may run as
//!   another user ([`Prefork::user`], [`Prefork::group`]) and be pinned to one CPU each
//!   ([`Prefork::cpu_affinity`]). See `deploy/` for systemd, container and Kubernetes files.
//! - **Control channel.** Each worker gets one end of a Unix socket pair. It reports `ready`
//!   once it accepts ([`Worker::ready`]), or an error if its start-up fails; end of file tells
//!   it that the master is gone, at once, without polling.
//! - **Supervision.** The master is a state machine driven by signals, worker messages,
//!   exits and time. A worker that exits unexpectedly is logged (pid, worker id, exit status or
//!   signal) and respawned under the same worker id, from the same program image its siblings
//!   run, after a short backoff that grows while it keeps crashing. There is no lifetime crash
//!   budget by default: the master gives up only when a worker id fails to become ready 5 times in
//!   a row ([`Prefork::recover_threshold`] restores fasthttp's budget).
//! - **Health.** Workers send a [`Heartbeat`] from inside their event loop; one silent for
//!   [`Prefork::worker_timeout`] is replaced. [`Prefork::max_requests`] and
//!   [`Prefork::max_memory`] recycle workers surge first (the replacement is ready before the old
//!   worker drains). [`MasterHandle::stats`] and the [`Prefork::control_socket`] report each
//!   worker's requests, connections and memory ([`Prefork::stats`] turns the counting off).
//! - **Signals.** SIGTERM or SIGINT: the master closes its listener copies and each worker drains
//!   ([`Worker::drain_grace`]) and exits; after [`Prefork::shutdown_timeout`] the rest get SIGKILL,
//!   and `run` returns `Ok(())`. A second SIGTERM/SIGINT, or SIGQUIT, stops at once. SIGHUP
//!   reloads the workers one by one from the program on disk, each old worker draining only once
//!   its replacement is ready; SIGTTIN/SIGTTOU add or remove a worker; SIGUSR1, SIGUSR2 and other
//!   stray signals are logged and ignored. Workers run in their own process groups, so Ctrl+C in a
//!   terminal reaches the master only and each worker is told once. [`MasterHandle`] does the
//!   same from code.
//! - **Master death.** If the master dies (even by SIGKILL), every worker's shutdown
//!   notification completes and it drains and exits.
//! - **Start-up errors.** A worker that fails before it is ready during the initial start
//!   (a bind error, a bad file) makes the master stop the others and return
//!   [`Error::WorkerStartup`] with the worker's own message: no restart loop.
//!
//! # State
//! Workers are separate processes: build pools, caches and connections inside `serve` (the
//! adapters take factories for that), never in the master, and do not expect in-memory state to
//! be shared between workers.
//!
//! # Logging
//! Through [`tracing`]; the library prints nothing itself. Install a subscriber to see the
//! master's lines (`worker started`, `all workers ready`, `worker exited unexpectedly`, ...).
//!
//! # Platforms
//! Linux first; macOS builds and runs the shared-socket mode. Other platforms are refused at
//! compile time.
#![cfg_attr(docsrs, feature(doc_cfg))]

#[cfg(not(unix))]
compile_error!(
    "prefork supports Linux and macOS only: it needs fork/exec, fd passing and Unix signals"
);

pub mod accept;
pub mod balance;
mod builder;
mod control;
mod drain;
mod driver;
mod error;
mod handle;
mod health;
mod listener;
pub mod memory;
mod policy;
mod privilege;
mod role;
#[cfg(feature = "hyper")]
pub mod service;
mod shutdown;
mod signals;
mod spawn;
mod standalone;
mod supervisor;
pub mod systemd;
#[cfg(feature = "tls")]
mod tickets;
#[cfg(feature = "hyper")]
pub mod timer;
#[cfg(feature = "tls")]
mod tls;
mod worker;

pub use builder::{
    NofileLimit, Prefork, DEFAULT_READY_TIMEOUT, DEFAULT_SHUTDOWN_TIMEOUT, DEFAULT_WORKER_TIMEOUT,
};
pub use worker::{drain_timeout, Worker, DEFAULT_DRAIN_GRACE};

/// The former name of [`Worker`] (which no longer collides with [`std::process::Child`]).
#[deprecated(since = "0.2.0", note = "renamed to `Worker`")]
pub type Child = Worker;
pub use drain::{Drain, DrainConn, Drive, DEFAULT_HEADER_READ_TIMEOUT, DEFAULT_KEEPALIVE_TIMEOUT};
pub use error::{into_io_error, BoxError, Error};
pub use handle::{MasterHandle, Stats, WorkerStats};
pub use health::{
    ConnectionGuard, Counters, Heartbeat, DEFAULT_HEARTBEAT_INTERVAL, IDLE_HEARTBEAT_INTERVAL,
};
pub use listener::{bind, ListenAddr, Network, DEFAULT_UNIX_MODE};
#[allow(deprecated)]
pub use role::is_child;
pub use role::{is_worker, worker_id, ENV_CHILD, ENV_WORKER_ID};
pub use shutdown::{Shutdown, ShutdownReason};
pub use spawn::SpawnContext;
pub use standalone::Standalone;
#[cfg(feature = "tls")]
pub use tls::{PemFiles, TlsConfig, DEFAULT_HANDSHAKE_TIMEOUT};

/// The rustls version this crate builds TLS configurations with.
#[cfg(feature = "tls")]
pub use rustls;
