//! One process, no master: the worker context every adapter's `Standalone` serves on.

use std::fmt;
use std::net::TcpListener;
use std::time::Duration;

use crate::{Error, ListenAddr, Shutdown, Worker, DEFAULT_SHUTDOWN_TIMEOUT};

/// The settings of a single-process server (no master, no workers): the listeners, the number
/// of runtime threads, the shutdown trigger and timeout, TLS. Every adapter's `Standalone`
/// (prefork-tokio, prefork-axum, prefork-smol) is this plus its runtime, so the checks, the
/// signal handling and the drain rule are the same everywhere: the baseline a prefork
/// deployment is measured against, or a development mode behind a flag.
///
/// [`Standalone::into_worker`] turns it into a [`Worker`] context (worker id 0, no master)
/// that the adapter serves on exactly as a prefork worker does.
///
/// ```
/// use prefork_core::{Shutdown, Standalone};
///
/// # fn main() -> Result<(), prefork_core::Error> {
/// let shutdown = Shutdown::new().map_err(|e| prefork_core::Error::Serve(e))?;
/// let (worker, threads) = Standalone::bind("127.0.0.1:0")?
///     .threads(2)
///     .shutdown(shutdown)
///     .into_worker()?;
/// assert_eq!((worker.id(), threads, worker.has_master()), (0, 2, false));
/// # Ok(())
/// # }
/// ```
#[must_use = "a Standalone server does nothing until it is served"]
pub struct Standalone {
    listeners: Vec<TcpListener>,
    threads: Option<usize>,
    shutdown_timeout: Duration,
    shutdown: Option<Shutdown>,
    #[cfg(feature = "tls")]
    tls: Option<crate::TlsConfig>,
}

impl fmt::Debug for Standalone {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let addrs: Vec<_> = self
            .listeners
            .iter()
            .filter_map(|l| l.local_addr().ok())
            .collect();
        let mut d = f.debug_struct("Standalone");
        d.field("listeners", &addrs)
            .field("threads", &self.threads)
            .field("shutdown_timeout", &self.shutdown_timeout)
            .field("shutdown", &self.shutdown);
        #[cfg(feature = "tls")]
        d.field("tls", &self.tls.is_some());
        d.finish()
    }
}

impl Standalone {
    /// Serves on these listeners, bound by the caller (blocking or not: the adapter makes them
    /// non-blocking).
    pub fn new(listeners: Vec<TcpListener>) -> Self {
        Standalone {
            listeners,
            threads: None,
            shutdown_timeout: DEFAULT_SHUTDOWN_TIMEOUT,
            shutdown: None,
            #[cfg(feature = "tls")]
            tls: None,
        }
    }

    /// Binds `addr` (`"0.0.0.0:8080"`, `"[::]:8080"`, `"localhost:3000"`, a `SocketAddr`; its
    /// first resolved address) as a prefork master does: `SO_REUSEADDR` and a large backlog.
    /// See [`bind`](crate::bind).
    ///
    /// # Errors
    /// The address does not parse or resolve, or binding fails; the message names the address
    /// ("cannot listen on 127.0.0.1:8080: Address already in use").
    pub fn bind(addr: impl Into<ListenAddr>) -> Result<Self, Error> {
        Ok(Standalone::new(vec![crate::bind(addr)?]))
    }

    /// Runtime threads. Default: the number of CPUs available to this process (what
    /// `#[tokio::main]` does). `0` is refused by [`Standalone::into_worker`].
    pub fn threads(mut self, threads: usize) -> Self {
        self.threads = Some(threads);
        self
    }

    /// How long in-flight requests may take to finish once the shutdown starts. Default:
    /// [`DEFAULT_SHUTDOWN_TIMEOUT`] (30 s); connections still open then are dropped. Unlike a
    /// prefork worker, which keeps a margin before its master's SIGKILL, nothing kills this
    /// process, so the drain may take all of it.
    pub fn shutdown_timeout(mut self, timeout: Duration) -> Self {
        self.shutdown_timeout = timeout;
        self
    }

    /// Stops when `shutdown` is triggered instead of on SIGTERM/SIGINT (no signal handler is
    /// then installed): for tests, or a program that decides itself when to stop
    /// ([`Shutdown::trigger`]). By default the first SIGTERM or SIGINT starts a graceful
    /// shutdown and a second one exits the process at once with status 1
    /// ([`Shutdown::on_signals`]).
    pub fn shutdown(mut self, shutdown: Shutdown) -> Self {
        self.shutdown = Some(shutdown);
        self
    }

    /// Serves HTTPS with this configuration; the certificate and key are loaded and validated
    /// by [`Standalone::into_worker`], before anything is served.
    #[cfg(feature = "tls")]
    pub fn tls(mut self, tls: crate::TlsConfig) -> Self {
        self.tls = Some(tls);
        self
    }

    /// Checks the settings, loads TLS, installs the SIGTERM/SIGINT handlers (unless a
    /// [`Standalone::shutdown`] was given) and logs `listening addr=.. threads=..` for each
    /// listener (through `tracing`, at `info`), then returns the worker context (id 0, no
    /// master: [`Worker::ready`] and heartbeats do nothing, [`Worker::drain_timeout`] is the
    /// whole shutdown timeout) and the number of threads the adapter's runtime should run.
    ///
    /// # Errors
    /// Each names its cause: `threads(0)`, no listener, a TLS file that does not load, or the
    /// signal handlers cannot be installed.
    pub fn into_worker(self) -> Result<(Worker, usize), Error> {
        let threads = match self.threads {
            Some(0) => {
                return Err(Error::Config(
                    "threads must be at least 1 (a standalone server)".into(),
                ))
            }
            Some(n) => n,
            None => std::thread::available_parallelism().map_or(1, |n| n.get()),
        };
        if self.listeners.is_empty() {
            return Err(Error::Config(
                "no listener to serve on (a standalone server)".into(),
            ));
        }
        #[cfg(feature = "tls")]
        let tls = match &self.tls {
            Some(tls) => Some((tls.load()?, tls.handshake_timeout_value())),
            None => None,
        };
        // Installed before `listening` is logged: a signal sent once the address is known is
        // never missed.
        let shutdown = match self.shutdown {
            Some(shutdown) => shutdown,
            None => Shutdown::on_signals()
                .map_err(|e| Error::io("cannot install the SIGTERM/SIGINT handlers", e))?,
        };
        for l in &self.listeners {
            l.set_nonblocking(true).map_err(|e| {
                let at = l
                    .local_addr()
                    .map(|a| format!(" on {a}"))
                    .unwrap_or_default();
                Error::io(format!("making the listener{at} non-blocking"), e)
            })?;
        }
        for addr in self.listeners.iter().filter_map(|l| l.local_addr().ok()) {
            tracing::info!(%addr, threads, "listening");
        }
        let worker = Worker::standalone(self.listeners, shutdown)
            .with_shutdown_timeout(self.shutdown_timeout);
        #[cfg(feature = "tls")]
        let worker = match tls {
            Some((config, handshake_timeout)) => worker.with_tls(config, handshake_timeout),
            None => worker,
        };
        Ok((worker, threads))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listener() -> TcpListener {
        TcpListener::bind("127.0.0.1:0").unwrap()
    }

    #[test]
    fn zero_threads_and_no_listener_are_refused() {
        let err = Standalone::new(vec![listener()])
            .threads(0)
            .into_worker()
            .unwrap_err();
        assert!(matches!(err, Error::Config(_)), "{err}");
        assert!(
            err.to_string().contains("threads must be at least 1"),
            "{err}"
        );
        let err = Standalone::new(Vec::new()).into_worker().unwrap_err();
        assert!(err.to_string().contains("no listener"), "{err}");
    }

    #[test]
    fn bind_names_the_address_in_use() {
        let taken = listener();
        let addr = taken.local_addr().unwrap();
        let err = Standalone::bind(addr).unwrap_err();
        assert!(
            format!("{err:?}").starts_with(&format!("cannot listen on {addr}")),
            "{err:?}"
        );
    }

    #[test]
    fn the_context_has_no_master_and_the_whole_timeout() {
        let timeout = Duration::from_millis(1234);
        let (worker, threads) = Standalone::new(vec![listener()])
            .threads(3)
            .shutdown_timeout(timeout)
            .shutdown(Shutdown::new().unwrap())
            .into_worker()
            .unwrap();
        assert_eq!(threads, 3);
        assert_eq!(worker.id(), 0);
        assert!(!worker.has_master());
        assert_eq!(worker.drain_timeout(), timeout);
        worker.ready().unwrap();
    }
}
