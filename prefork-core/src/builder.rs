//! The `Prefork` builder: every option of the process model, and `run`.

use std::fmt;
use std::io;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use crate::child::{self, Child, ChildConfig};
use crate::error::BoxError;
use crate::listener::{ListenAddr, Network};
use crate::policy::RecoverPolicy;
use crate::spawn::SpawnContext;
use crate::{role, supervisor, Error};

pub(crate) type SpawnHook = Box<dyn FnMut(u32) -> Result<(), BoxError>>;
pub(crate) type ReadyHook = Box<dyn FnMut(&[u32]) -> Result<(), BoxError>>;
pub(crate) type RecoverHook = Box<dyn FnMut(u32, u32)>;
pub(crate) type CommandProducer = Box<dyn FnMut(&SpawnContext) -> io::Result<Command>>;

/// The default time a stopping worker gets to finish in-flight requests before SIGKILL:
/// 30 seconds, gunicorn's `graceful_timeout`.
pub const DEFAULT_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(30);

/// The default time a worker gets from its start to its `ready`: 60 seconds.
pub const DEFAULT_READY_TIMEOUT: Duration = Duration::from_secs(60);

/// A prefork server: one master process supervising N worker processes that share the
/// listening socket(s).
///
/// The same `run` call supervises in the master and serves in each worker: the master re-executes
/// the current binary with the original arguments, and the role is decided by the environment
/// (`PREFORK_CHILD=1`), never by argv. See the [crate docs](crate) for the process model.
///
/// All setters take and return `self`; each documents its default.
pub struct Prefork {
    pub(crate) addrs: Vec<ListenAddr>,
    pub(crate) network: Network,
    pub(crate) workers: Option<usize>,
    pub(crate) reuseport: bool,
    pub(crate) backlog: Option<i32>,
    pub(crate) shutdown_timeout: Duration,
    pub(crate) ready_timeout: Duration,
    pub(crate) recover: RecoverPolicy,
    pub(crate) on_child_spawn: Option<SpawnHook>,
    pub(crate) on_master_ready: Option<ReadyHook>,
    pub(crate) on_child_recover: Option<RecoverHook>,
    pub(crate) on_master_death: Option<child::MasterDeathHook>,
    pub(crate) command_producer: Option<CommandProducer>,
    #[cfg(feature = "tls")]
    pub(crate) tls: Option<crate::tls::TlsConfig>,
}

impl fmt::Debug for Prefork {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Prefork")
            .field("addrs", &self.addrs)
            .field("network", &self.network)
            .field("workers", &self.workers)
            .field("reuseport", &self.reuseport)
            .field("backlog", &self.backlog)
            .field("shutdown_timeout", &self.shutdown_timeout)
            .field("ready_timeout", &self.ready_timeout)
            .field("recover", &self.recover)
            .finish_non_exhaustive()
    }
}

impl Default for Prefork {
    fn default() -> Self {
        Prefork {
            addrs: Vec::new(),
            network: Network::default(),
            workers: None,
            reuseport: false,
            backlog: None,
            shutdown_timeout: DEFAULT_SHUTDOWN_TIMEOUT,
            ready_timeout: DEFAULT_READY_TIMEOUT,
            recover: RecoverPolicy::default(),
            on_child_spawn: None,
            on_master_ready: None,
            on_child_recover: None,
            on_master_death: None,
            command_producer: None,
            #[cfg(feature = "tls")]
            tls: None,
        }
    }
}

impl Prefork {
    /// A prefork server listening on `addr` (more with [`Prefork::listen`]).
    pub fn new(addr: impl Into<ListenAddr>) -> Self {
        Prefork::default().listen(addr)
    }

    /// Adds a listen address. Every worker serves every listener.
    pub fn listen(mut self, addr: impl Into<ListenAddr>) -> Self {
        self.addrs.push(addr.into());
        self
    }

    /// The address families to listen on. Default: [`Network::Tcp`] (the address's own family,
    /// dual-stack for an IPv6 wildcard).
    pub fn network(mut self, network: Network) -> Self {
        self.network = network;
        self
    }

    /// The number of worker processes. Default: the number of CPUs available to this process
    /// ([`std::thread::available_parallelism`], which honours CPU affinity and cgroup quotas).
    ///
    /// `0` is refused by [`Prefork::run`] with [`Error::Config`].
    pub fn workers(mut self, workers: usize) -> Self {
        self.workers = Some(workers);
        self
    }

    /// `SO_REUSEPORT` mode: each worker binds its own socket and the kernel spreads connections
    /// across them. Default: off (the master binds once and the workers share one accept queue).
    ///
    /// The master still resolves and test-binds each address first, so a bad address fails in
    /// the master. Caveats: connections queued on a worker's socket are dropped when that worker
    /// exits (shared-fd mode loses nothing), and only Linux balances such sockets, so
    /// [`Prefork::run`] refuses this mode elsewhere.
    pub fn reuseport(mut self, on: bool) -> Self {
        self.reuseport = on;
        self
    }

    /// The listen backlog. Default: `/proc/sys/net/core/somaxconn` where readable, else 4096.
    pub fn backlog(mut self, backlog: i32) -> Self {
        self.backlog = Some(backlog);
        self
    }

    /// How long a stopping worker may drain before SIGKILL. Default:
    /// [`DEFAULT_SHUTDOWN_TIMEOUT`] (30 s).
    pub fn shutdown_timeout(mut self, timeout: Duration) -> Self {
        self.shutdown_timeout = timeout;
        self
    }

    /// How long a worker may take from its start to [`Child::ready`]. Default:
    /// [`DEFAULT_READY_TIMEOUT`] (60 s).
    ///
    /// During the initial start, a worker that misses it fails the start
    /// ([`Error::ChildStartup`]); later, a respawned worker that misses it is killed and counts
    /// as an unexpected exit. A worker stuck in its start-up never hangs the master.
    pub fn ready_timeout(mut self, timeout: Duration) -> Self {
        self.ready_timeout = timeout;
        self
    }

    /// Unexpected worker exits tolerated before the master stops every worker and returns
    /// [`Error::OverRecovery`]. Default: `max(1, workers / 2)`, as in fasthttp.
    pub fn recover_threshold(mut self, threshold: usize) -> Self {
        self.recover.threshold = Some(threshold);
        self
    }

    /// Counts only the unexpected exits within this sliding window toward the threshold.
    /// Default: none (every exit in the master's life counts, as in fasthttp).
    pub fn recover_window(mut self, window: Duration) -> Self {
        self.recover.window = Some(window);
        self
    }

    /// Called in the master with the pid of every worker it starts (initial and respawned).
    /// An error stops every worker and [`Prefork::run`] returns [`Error::Hook`].
    pub fn on_child_spawn<F>(mut self, hook: F) -> Self
    where
        F: FnMut(u32) -> Result<(), BoxError> + 'static,
    {
        self.on_child_spawn = Some(Box::new(hook));
        self
    }

    /// Called in the master once every worker has reported ready (it accepts connections), with
    /// their pids in worker-id order. An error stops every worker and [`Prefork::run`] returns
    /// [`Error::Hook`].
    pub fn on_master_ready<F>(mut self, hook: F) -> Self
    where
        F: FnMut(&[u32]) -> Result<(), BoxError> + 'static,
    {
        self.on_master_ready = Some(Box::new(hook));
        self
    }

    /// Called in the master when a worker that exited unexpectedly has been replaced, with the
    /// old and the new pid.
    pub fn on_child_recover<F>(mut self, hook: F) -> Self
    where
        F: FnMut(u32, u32) + 'static,
    {
        self.on_child_recover = Some(Box::new(hook));
        self
    }

    /// Called in a worker (on a background thread) when its master is gone, just before the
    /// worker's shutdown notification completes (a graceful drain follows anyway): use it for
    /// extra cleanup. Keep it short; the drain starts when it returns.
    pub fn on_master_death<F>(mut self, hook: F) -> Self
    where
        F: Fn() + Send + Sync + 'static,
    {
        self.on_master_death = Some(Arc::new(hook));
        self
    }

    /// Builds each worker's command instead of re-executing the current binary with its own
    /// arguments (fasthttp's `CommandProducer`). Return a `Command` that is not started; the
    /// library still places the listeners and control socket, sets the `PREFORK_*` environment,
    /// stdin to null and the process group, and spawns it. The program must call
    /// [`Prefork::run`] (or `is_child` and an adapter) to serve.
    pub fn command_producer<F>(mut self, producer: F) -> Self
    where
        F: FnMut(&SpawnContext) -> io::Result<Command> + 'static,
    {
        self.command_producer = Some(Box::new(producer));
        self
    }

    /// Serves TLS with this configuration. The master loads and validates it before it starts
    /// any worker; each worker loads it again and gets it from [`Child::tls_config`].
    #[cfg(feature = "tls")]
    pub fn tls(mut self, tls: crate::tls::TlsConfig) -> Self {
        self.tls = Some(tls);
        self
    }

    /// The configured worker count, or the default.
    pub fn worker_count(&self) -> usize {
        self.workers.unwrap_or_else(|| {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1)
        })
    }

    /// Runs the server: supervises in the master, serves in a worker.
    ///
    /// In the master this binds (or validates, in `SO_REUSEPORT` mode), starts the workers and
    /// supervises them until SIGTERM/SIGINT (graceful stop, `Ok(())`), SIGQUIT or a second
    /// SIGTERM/SIGINT (immediate stop, `Ok(())`), or a failure. It returns only when no worker is
    /// left. `serve` is not called in the master.
    ///
    /// In a worker it builds the [`Child`] context from the inherited descriptors and calls
    /// `serve` with it; `serve` must call [`Child::ready`] once it accepts and return when the
    /// [`Child::shutdown`] notification completes and in-flight work is done. If `serve` fails
    /// before it reported ready, its error is sent to the master, which reports it as
    /// [`Error::ChildStartup`].
    ///
    /// The master installs handlers for SIGTERM, SIGINT, SIGQUIT and SIGCHLD while it runs and
    /// unregisters them before it returns; signal-hook keeps its process-wide handler in place,
    /// so after `run` returns SIGTERM and SIGINT no longer end the process by themselves: return
    /// from `main` (the normal case) or handle them yourself.
    ///
    /// # Errors
    /// - [`Error::Config`]: zero workers, no listen address, `SO_REUSEPORT` off Linux.
    /// - [`Error::Address`], [`Error::Bind`]: a bad address, a port in use.
    /// - [`Error::ChildStartup`]: a worker failed before it was ready during the initial start.
    /// - [`Error::OverRecovery`]: too many unexpected worker exits.
    /// - [`Error::Hook`]: a hook returned an error.
    /// - [`Error::NotAChild`]: `PREFORK_CHILD=1` without a master (in the "worker").
    /// - [`Error::Serve`]: in a worker, `serve` failed.
    pub fn run<F>(mut self, serve: F) -> Result<(), Error>
    where
        F: FnOnce(Child) -> io::Result<()>,
    {
        if role::is_child() {
            let child = child::from_env(ChildConfig {
                network: self.network,
                shutdown_timeout: self.shutdown_timeout,
                on_master_death: self.on_master_death.take(),
                #[cfg(feature = "tls")]
                tls: self.tls.take(),
            })?;
            let control = child.control();
            return serve(child).map_err(|e| {
                if !control.is_ready() {
                    control.error(&e.to_string());
                }
                Error::Serve(e)
            });
        }
        supervisor::run(self)
    }
}
