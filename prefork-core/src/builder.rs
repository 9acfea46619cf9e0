//! The `Prefork` builder: every option of the process model, and `run`.

use std::fmt;
use std::io;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use crate::error::BoxError;
use crate::listener::{ListenAddr, Network};
use crate::policy::RecoverPolicy;
use crate::spawn::SpawnContext;
use crate::worker::{self, Worker, WorkerConfig};
use crate::{driver, role, Error};

pub(crate) type SpawnHook = Box<dyn FnMut(u32) -> Result<(), BoxError>>;
pub(crate) type ReadyHook = Box<dyn FnMut(&[u32]) -> Result<(), BoxError>>;
pub(crate) type RecoverHook = Box<dyn FnMut(u32, u32)>;
pub(crate) type CommandProducer = Box<dyn FnMut(&SpawnContext) -> io::Result<Command>>;

/// The default time a stopping worker gets to finish in-flight requests before SIGKILL:
/// 30 seconds, gunicorn's `graceful_timeout`.
pub const DEFAULT_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(30);

/// The default time a worker gets from its start to its `ready`: 60 seconds.
pub const DEFAULT_READY_TIMEOUT: Duration = Duration::from_secs(60);

/// The default heartbeat watchdog timeout: 30 seconds, gunicorn's `timeout`.
pub const DEFAULT_WORKER_TIMEOUT: Duration = Duration::from_secs(30);

/// What a worker does with its soft `RLIMIT_NOFILE` at start-up
/// ([`Prefork::nofile_limit`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum NofileLimit {
    /// Raise the soft limit to the hard limit (the default; what Go's runtime does, and nginx's
    /// `worker_rlimit_nofile`): a soft limit of 1024 would stop a worker at about 1,000
    /// connections.
    #[default]
    Hard,
    /// Set the soft limit to this value (capped at the hard limit).
    Value(u64),
    /// Leave the limit as inherited.
    Keep,
}

impl NofileLimit {
    pub(crate) fn env_value(self) -> String {
        match self {
            NofileLimit::Hard => "hard".into(),
            NofileLimit::Value(n) => n.to_string(),
            NofileLimit::Keep => "keep".into(),
        }
    }
}

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
    pub(crate) drain_grace: Duration,
    pub(crate) keepalive_timeout: Option<Duration>,
    pub(crate) header_read_timeout: Option<Duration>,
    pub(crate) balance: bool,
    pub(crate) shutdown_delay: Duration,
    pub(crate) reload_surge: usize,
    pub(crate) worker_timeout: Option<Duration>,
    pub(crate) stats: bool,
    pub(crate) max_requests: Option<u64>,
    pub(crate) max_requests_jitter: u64,
    pub(crate) max_memory: Option<u64>,
    pub(crate) nofile: NofileLimit,
    pub(crate) control_socket: Option<std::path::PathBuf>,
    pub(crate) handle: Arc<crate::handle::Shared>,
    pub(crate) on_worker_spawn: Option<SpawnHook>,
    pub(crate) on_master_ready: Option<ReadyHook>,
    pub(crate) on_worker_recover: Option<RecoverHook>,
    pub(crate) on_master_death: Option<worker::MasterDeathHook>,
    pub(crate) command_producer: Option<CommandProducer>,
    #[cfg(feature = "tls")]
    pub(crate) tls: Option<crate::tls::TlsConfig>,
    pub(crate) user: Option<String>,
    pub(crate) group: Option<String>,
    pub(crate) cpu_affinity: bool,
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
            .field("drain_grace", &self.drain_grace)
            .field("keepalive_timeout", &self.keepalive_timeout)
            .field("header_read_timeout", &self.header_read_timeout)
            .field("balance", &self.balance)
            .field("shutdown_delay", &self.shutdown_delay)
            .field("reload_surge", &self.reload_surge)
            .field("worker_timeout", &self.worker_timeout)
            .field("stats", &self.stats)
            .field("max_requests", &self.max_requests)
            .field("max_requests_jitter", &self.max_requests_jitter)
            .field("max_memory", &self.max_memory)
            .field("nofile", &self.nofile)
            .field("control_socket", &self.control_socket)
            .field("user", &self.user)
            .field("group", &self.group)
            .field("cpu_affinity", &self.cpu_affinity)
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
            drain_grace: crate::worker::DEFAULT_DRAIN_GRACE,
            keepalive_timeout: Some(crate::drain::DEFAULT_KEEPALIVE_TIMEOUT),
            header_read_timeout: Some(crate::drain::DEFAULT_HEADER_READ_TIMEOUT),
            balance: true,
            shutdown_delay: Duration::ZERO,
            reload_surge: 1,
            worker_timeout: Some(DEFAULT_WORKER_TIMEOUT),
            stats: true,
            max_requests: None,
            max_requests_jitter: 0,
            max_memory: None,
            nofile: NofileLimit::Hard,
            control_socket: None,
            handle: Arc::default(),
            on_worker_spawn: None,
            on_master_ready: None,
            on_worker_recover: None,
            on_master_death: None,
            command_producer: None,
            #[cfg(feature = "tls")]
            tls: None,
            user: None,
            group: None,
            cpu_affinity: false,
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
        self.shutdown_timeout = saturate(timeout);
        self
    }

    /// How long a worker may take from its start to [`Worker::ready`]. Default:
    /// [`DEFAULT_READY_TIMEOUT`] (60 s).
    ///
    /// During the initial start, a worker that misses it fails the start
    /// ([`Error::WorkerStartup`]); later, a respawned worker that misses it is killed and counts
    /// as an unexpected exit. A worker stuck in its start-up never hangs the master.
    pub fn ready_timeout(mut self, timeout: Duration) -> Self {
        self.ready_timeout = saturate(timeout);
        self
    }

    /// Unexpected exits of serving workers tolerated before the master stops every worker and
    /// returns [`Error::OverRecovery`] (fasthttp's `RecoverThreshold` semantics; combine with
    /// [`Prefork::recover_window`] to count only recent exits).
    ///
    /// Default: **no such budget**. A worker that was serving and crashes is always respawned
    /// (after a short backoff that grows while it keeps crashing); the master gives up only when a
    /// worker id fails to *become ready* 5 times in a row (a broken deploy, a crash loop at
    /// start-up) or, during the initial start, on the first failure.
    pub fn recover_threshold(mut self, threshold: usize) -> Self {
        self.recover.threshold = Some(threshold);
        self
    }

    /// Counts only the unexpected exits within this sliding window toward the threshold.
    /// Default: none (every exit in the master's life counts, as in fasthttp).
    pub fn recover_window(mut self, window: Duration) -> Self {
        self.recover.window = Some(saturate(window));
        self
    }

    /// How long a draining worker keeps an idle keep-alive connection open before closing it.
    /// Default: [`DEFAULT_DRAIN_GRACE`](crate::DEFAULT_DRAIN_GRACE) (1 s). See
    /// [`Worker::drain_grace`].
    pub fn drain_grace(mut self, grace: Duration) -> Self {
        self.drain_grace = saturate(grace);
        self
    }

    /// How long an idle keep-alive connection (no request in flight, nothing received) stays
    /// open before the worker closes it; `None` keeps it until the client closes it. Default:
    /// [`DEFAULT_KEEPALIVE_TIMEOUT`](crate::DEFAULT_KEEPALIVE_TIMEOUT) (75 s, nginx's
    /// `keepalive_timeout`): idle clients cannot hold a worker's descriptors forever.
    pub fn keepalive_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.keepalive_timeout = timeout.map(saturate);
        self
    }

    /// How long a request head may take to arrive, counted from its first byte (nginx's
    /// `client_header_timeout`); a connection whose head is not complete by then is closed
    /// (HTTP/1; hyper answers nothing). `None`: no limit. Default:
    /// [`DEFAULT_HEADER_READ_TIMEOUT`](crate::DEFAULT_HEADER_READ_TIMEOUT) (30 s). An idle
    /// keep-alive connection waiting for its next request is not cut by it: that wait is the
    /// [`keepalive_timeout`](Prefork::keepalive_timeout)'s. Applied by the hyper-based adapters
    /// (prefork-tokio, prefork-axum, prefork-smol); see [`Worker::header_read_timeout`].
    pub fn header_read_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.header_read_timeout = timeout.map(saturate);
        self
    }

    /// Balanced accept in the shared-socket mode: the workers share a table of their open
    /// connections, and a worker over its share leaves a new connection to an idle worker that
    /// holds fewer (see [`balance`](crate::balance)). Default: **on**. It spreads a burst of
    /// connections evenly (64 connections opened at once on 8 workers: 4 to 10 each instead of
    /// 64 on one), and costs nothing measurable under steady churn (a new connection per
    /// request): a worker only ever yields to one that is idle, never sleeps on a timer. Off
    /// (`false`), every worker accepts whatever it can, as a plain shared socket does. No
    /// effect in `SO_REUSEPORT` mode (the kernel picks the socket); the master's environment
    /// variable `PREFORK_BALANCE=off` turns it off as well.
    pub fn balance(mut self, on: bool) -> Self {
        self.balance = on;
        self
    }

    /// On SIGTERM/SIGINT, keep accepting for this long before the drain starts, so that a load
    /// balancer (a Kubernetes Service, say) has time to stop sending new connections. Default:
    /// zero. Within Kubernetes, set it to a few seconds, or use a `preStop` sleep instead.
    pub fn shutdown_delay(mut self, delay: Duration) -> Self {
        self.shutdown_delay = saturate(delay);
        self
    }

    /// How many replacement workers a rolling reload (SIGHUP) or a recycle may run beside the
    /// workers they replace. Default: 1 (one worker at a time). At least 1.
    pub fn reload_surge(mut self, surge: usize) -> Self {
        self.reload_surge = surge.max(1);
        self
    }

    /// The heartbeat watchdog: a serving worker whose heartbeats stop for longer than this (its
    /// event loop is blocked, deadlocked or stopped) is killed and replaced. `None` turns the
    /// watchdog off. Default: [`DEFAULT_WORKER_TIMEOUT`] (30 s).
    pub fn worker_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.worker_timeout = timeout.map(saturate);
        self
    }

    /// Whether workers count their requests and open connections for the master's stats
    /// ([`MasterHandle::stats`](crate::MasterHandle::stats), the control socket) and
    /// [`Prefork::max_requests`]. Default: on.
    ///
    /// Off, every worker's [`Worker::counters`](crate::Worker::counters) are [`Counters::disabled`](crate::Counters::disabled)
    /// (counting is a predictable branch that does nothing), the master's stats show zero
    /// requests and connections, and, if [`Prefork::worker_timeout`] is `None` too, workers send
    /// no heartbeat at all: for servers that want no per-request bookkeeping beyond their own.
    /// [`Prefork::run`] refuses it together with
    /// [`Prefork::max_requests`] ([`Error::Config`]). Balanced accept ([`Prefork::balance`])
    /// keeps working.
    pub fn stats(mut self, on: bool) -> Self {
        self.stats = on;
        self
    }

    /// Recycles a worker after it served this many requests (plus a random `0..=jitter`, so
    /// workers do not recycle together): its replacement starts first, and the old worker drains
    /// once the new one is ready, so capacity never drops. Default: off.
    pub fn max_requests(mut self, requests: u64, jitter: u64) -> Self {
        self.max_requests = Some(requests).filter(|&n| n > 0);
        self.max_requests_jitter = jitter;
        self
    }

    /// Recycles a worker whose resident memory exceeds this many bytes (read by the master from
    /// `/proc` every few seconds), the same way as [`Prefork::max_requests`]. Default: off.
    pub fn max_memory(mut self, bytes: u64) -> Self {
        self.max_memory = Some(bytes).filter(|&n| n > 0);
        self
    }

    /// What each worker does with its soft file-descriptor limit at start-up. Default:
    /// [`NofileLimit::Hard`].
    pub fn nofile_limit(mut self, limit: NofileLimit) -> Self {
        self.nofile = limit;
        self
    }

    /// Serves the master's control socket at `path`: a Unix socket (mode 0600) speaking one JSON
    /// object per line, e.g. `{"command":"stats"}`, `{"command":"reload"}`,
    /// `{"command":"scale","workers":3}`, `{"command":"stop"}`. Default: none.
    pub fn control_socket(mut self, path: impl Into<std::path::PathBuf>) -> Self {
        self.control_socket = Some(path.into());
        self
    }

    /// Called in the master with the pid of every worker it starts (initial and respawned).
    /// An error stops every worker and [`Prefork::run`] returns [`Error::Hook`].
    pub fn on_worker_spawn<F>(mut self, hook: F) -> Self
    where
        F: FnMut(u32) -> Result<(), BoxError> + 'static,
    {
        self.on_worker_spawn = Some(Box::new(hook));
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
    pub fn on_worker_recover<F>(mut self, hook: F) -> Self
    where
        F: FnMut(u32, u32) + 'static,
    {
        self.on_worker_recover = Some(Box::new(hook));
        self
    }

    /// The former name of [`Prefork::on_worker_spawn`].
    #[deprecated(since = "0.2.0", note = "renamed to `on_worker_spawn`")]
    pub fn on_child_spawn<F>(self, hook: F) -> Self
    where
        F: FnMut(u32) -> Result<(), BoxError> + 'static,
    {
        self.on_worker_spawn(hook)
    }

    /// The former name of [`Prefork::on_worker_recover`].
    #[deprecated(since = "0.2.0", note = "renamed to `on_worker_recover`")]
    pub fn on_child_recover<F>(self, hook: F) -> Self
    where
        F: FnMut(u32, u32) + 'static,
    {
        self.on_worker_recover(hook)
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
    /// [`Prefork::run`] (or `is_worker` and an adapter) to serve.
    pub fn command_producer<F>(mut self, producer: F) -> Self
    where
        F: FnMut(&SpawnContext) -> io::Result<Command> + 'static,
    {
        self.command_producer = Some(Box::new(producer));
        self
    }

    /// Serves TLS with this configuration. The master loads and validates it before it starts
    /// any worker; each worker loads it again and gets it from [`Worker::tls_config`].
    #[cfg(feature = "tls")]
    pub fn tls(mut self, tls: crate::tls::TlsConfig) -> Self {
        self.tls = Some(tls);
        self
    }

    /// A handle to the master this `Prefork` runs: reload, scale, stop and stats from a hook or
    /// another thread. See [`MasterHandle`](crate::MasterHandle).
    pub fn handle(&self) -> crate::MasterHandle {
        crate::MasterHandle(self.handle.clone())
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
    /// In a worker it builds the [`Worker`] context from the inherited descriptors and calls
    /// `serve` with it; `serve` must call [`Worker::ready`] once it accepts and return when the
    /// [`Worker::shutdown`] notification completes and in-flight work is done. If the worker's
    /// start-up fails (here, or in `serve` before it reported ready), the error is sent to the
    /// master, which reports it (as [`Error::WorkerStartup`] during the initial start), and the
    /// worker process **exits with status 1 without returning**, so the message is printed once.
    ///
    /// The master installs handlers for SIGTERM, SIGINT, SIGQUIT and SIGCHLD while it runs and
    /// unregisters them before it returns; signal-hook keeps its process-wide handler in place,
    /// so after `run` returns SIGTERM and SIGINT no longer end the process by themselves: return
    /// from `main` (the normal case) or handle them yourself.
    ///
    /// # Errors
    /// - [`Error::Config`]: zero workers, no listen address, `SO_REUSEPORT` off Linux,
    ///   [`Prefork::max_requests`] with [`Prefork::stats`] off; an
    ///   unknown [`Prefork::user`]/[`Prefork::group`], or a user set while the master is not
    ///   root; a socket passed by the service manager that does not fit the configuration.
    /// - [`Error::Address`], [`Error::Bind`]: a bad address, a port in use.
    /// - [`Error::WorkerStartup`]: a worker failed before it was ready during the initial start.
    /// - [`Error::OverRecovery`]: too many unexpected worker exits.
    /// - [`Error::Hook`]: a hook returned an error.
    /// - [`Error::NotAWorker`]: `PREFORK_CHILD=1` without a master (in the "worker").
    /// - [`Error::Serve`]: in a worker, `serve` failed.
    pub fn run<F>(mut self, serve: F) -> Result<(), Error>
    where
        F: FnOnce(Worker) -> io::Result<()>,
    {
        if role::is_worker() {
            let child = worker::from_env(WorkerConfig {
                network: self.network,
                shutdown_timeout: self.shutdown_timeout,
                on_master_death: self.on_master_death.take(),
                #[cfg(feature = "tls")]
                tls: self.tls.take(),
            })?;
            let control = child.control();
            // Every line the worker logs on this thread (the library's and the user's, in a
            // single-threaded runtime every task's) carries its worker id and pid.
            let span = tracing::info_span!("worker", id = child.id(), pid = std::process::id());
            let _entered = span.enter();
            return serve(child).map_err(|e| {
                if let Some(c) = control.filter(|c| !c.is_ready()) {
                    c.fail_start(&e.to_string());
                }
                Error::Serve(e)
            });
        }
        driver::run(self)
    }

    /// Runs the workers as this user: a name (`"www-data"`) or a numeric uid. The master stays
    /// root: it binds (port 80, say), reads the TLS files (so a key may stay readable by root
    /// only) and starts each worker with the user's supplementary groups, gid and uid set before
    /// exec, so no worker ever runs as root. Default: workers run as the master's user.
    ///
    /// [`Prefork::run`] fails with [`Error::Config`] before anything is started when the user
    /// does not exist, or when the master is not root (unless the user is the master's own).
    /// Linux only.
    pub fn user(mut self, name_or_id: impl Into<String>) -> Self {
        self.user = Some(name_or_id.into());
        self
    }

    /// Runs the workers with this group (a name or a numeric gid) instead of the user's primary
    /// group. With [`Prefork::user`] unset, only the group (and the supplementary groups, to
    /// just this one) change. Default: the user's primary group. Linux only.
    pub fn group(mut self, name_or_id: impl Into<String>) -> Self {
        self.group = Some(name_or_id.into());
        self
    }

    /// Pins worker `i` to one CPU: the `i mod n`-th of the `n` CPUs the master may run on (its
    /// own affinity mask, so `taskset` and cpusets are honoured), like nginx's
    /// `worker_cpu_affinity auto`. Default: off (the scheduler places workers). Linux only.
    pub fn cpu_affinity(mut self, on: bool) -> Self {
        self.cpu_affinity = on;
        self
    }
}

/// The longest duration the process model keeps: 100 years. Longer ones (`Duration::MAX`, "never")
/// are cut to it, so that `Instant + duration` cannot overflow anywhere.
const FOREVER: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

fn saturate(d: Duration) -> Duration {
    d.min(FOREVER)
}

#[cfg(test)]
mod saturate_tests {
    use super::*;

    #[test]
    fn duration_max_is_cut_so_that_deadlines_cannot_overflow() {
        let p = Prefork::new("127.0.0.1:0")
            .shutdown_timeout(Duration::MAX)
            .ready_timeout(Duration::MAX)
            .worker_timeout(Some(Duration::MAX))
            .shutdown_delay(Duration::MAX);
        let now = std::time::Instant::now();
        for d in [
            p.shutdown_timeout,
            p.ready_timeout,
            p.worker_timeout.unwrap(),
            p.shutdown_delay,
        ] {
            assert_eq!(d, FOREVER);
            assert!(now.checked_add(d).is_some());
        }
    }
}
