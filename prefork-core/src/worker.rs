//! The worker side: the context a worker serves with, built from what the master passed.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::health::{Counters, Heartbeat, DEFAULT_HEARTBEAT_INTERVAL, IDLE_HEARTBEAT_INTERVAL};
use crate::listener::{self, Network};
use crate::role::*;
use crate::shutdown::{Shutdown, ShutdownReason};
use crate::Error;

/// Extra time a worker gives itself past the master's shutdown timeout before it exits on its
/// own: the master's SIGKILL normally comes first; this covers a dead master.
const SELF_EXIT_GRACE: Duration = Duration::from_secs(1);

/// Set once a worker took its inherited descriptors.
static TAKEN: AtomicBool = AtomicBool::new(false);

pub(crate) type MasterDeathHook = Arc<dyn Fn() + Send + Sync>;

/// The worker's end of its control socket.
#[derive(Debug)]
pub(crate) struct Control {
    stream: UnixStream,
    ready: AtomicBool,
    /// Keeps each line whole when the event loop's heartbeat and another thread write at once.
    write: Mutex<()>,
    /// Whether the first heartbeat was sent (the master watches the worker from then on).
    watched: AtomicBool,
}

impl Control {
    fn send(&self, line: &str) -> io::Result<()> {
        let _one_line_at_a_time = self.write.lock().unwrap_or_else(|e| e.into_inner());
        (&self.stream).write_all(line.as_bytes())
    }

    pub(crate) fn ready(&self) -> io::Result<()> {
        if self.ready.swap(true, Ordering::SeqCst) {
            return Ok(());
        }
        self.send(&format!("ready {PROTOCOL_VERSION}\n"))
    }

    /// `hb <requests> <connections>`, without blocking: a beat that does not fit in the socket
    /// buffer (the master is stopped or gone) is dropped. A line is written whole or not at all
    /// in practice (a few bytes into a buffer with room); a partial write is completed.
    pub(crate) fn heartbeat(&self, requests: u64, connections: u64) {
        let line = format!("hb {requests} {connections}\n");
        let _one_line_at_a_time = self.write.lock().unwrap_or_else(|e| e.into_inner());
        let sock = socket2::SockRef::from(&self.stream);
        match sock.send_with_flags(line.as_bytes(), libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL) {
            Ok(n) if n < line.len() => {
                let _ = (&self.stream).write_all(&line.as_bytes()[n..]);
            }
            _ => {}
        }
    }

    pub(crate) fn is_ready(&self) -> bool {
        self.ready.load(Ordering::SeqCst)
    }

    /// Reports a start-up failure to the master and exits with status 1: the master prints the
    /// message (as its own error, or a log line), so the worker's copy of `main` must not print
    /// it a second time.
    pub(crate) fn fail_start(&self, message: &str) -> ! {
        self.error(message);
        tracing::debug!(error = message, "start-up failed; the master reports it");
        std::process::exit(1)
    }

    pub(crate) fn error(&self, message: &str) {
        let one_line: String = message
            .chars()
            .map(|c| if c == '\n' || c == '\r' { ' ' } else { c })
            .collect();
        let _ = self.send(&format!("error {one_line}\n"));
    }
}

/// Everything a worker needs to serve: its id, its listeners, the shutdown notification, and
/// the way to tell the master it is ready.
///
/// Built by [`Prefork::run`](crate::Prefork::run) in a worker process and handed to the serve
/// function. Adapters (prefork-tokio, prefork-actix, prefork-smol) turn the listeners into their
/// runtime's types and call [`Worker::ready`] once they accept.
#[derive(Debug)]
pub struct Worker {
    worker_id: usize,
    listeners: Vec<TcpListener>,
    unix_listeners: Vec<UnixListener>,
    /// `None` for a [`Worker::standalone`] context: no master.
    control: Option<Arc<Control>>,
    shutdown: Shutdown,
    shutdown_timeout: Duration,
    drain_grace: Duration,
    keepalive_timeout: Option<Duration>,
    header_read_timeout: Option<Duration>,
    heartbeat_interval: Duration,
    /// `false` when the master needs no heartbeat (stats off and no watchdog).
    beats: bool,
    counters: Counters,
    balance: crate::balance::Balance,
    #[cfg(feature = "tls")]
    tls: Option<(Arc<rustls::ServerConfig>, Duration)>,
}

impl Worker {
    /// How long a draining worker keeps an idle keep-alive connection open before it closes it
    /// ([`Prefork::drain_grace`](crate::Prefork::drain_grace), default 1 s).
    ///
    /// The loss-free drain: once the shutdown starts, stop accepting; answer every request
    /// already received; give the next response on each keep-alive connection
    /// `Connection: close` (HTTP/2: GOAWAY); close a connection that stays idle for this long.
    /// A client that is about to send on a connection it believes open gets its answer instead of
    /// a reset.
    pub fn drain_grace(&self) -> Duration {
        self.drain_grace
    }

    /// How long an idle keep-alive connection stays open
    /// ([`Prefork::keepalive_timeout`](crate::Prefork::keepalive_timeout), default 75 s;
    /// `None`: until the client closes it).
    pub fn keepalive_timeout(&self) -> Option<Duration> {
        self.keepalive_timeout
    }

    /// How long a request head may take from its first byte
    /// ([`Prefork::header_read_timeout`](crate::Prefork::header_read_timeout), default 30 s;
    /// `None`: no limit). The hyper-based adapters set it as hyper's
    /// `http1().header_read_timeout` with [`timer::HeaderTimer`](crate::timer::HeaderTimer).
    pub fn header_read_timeout(&self) -> Option<Duration> {
        self.header_read_timeout
    }

    /// The worker's request and connection counters. Adapters count every request and open
    /// connection here; the master reads them from the heartbeats (stats, `max_requests`).
    /// [`Counters::disabled`] when [`Prefork::stats`](crate::Prefork::stats) is off.
    pub fn counters(&self) -> Counters {
        self.counters.clone()
    }

    /// This worker's handle on the master's balance table: call
    /// [`Balance::admit`](crate::balance::Balance::admit) (or
    /// [`poll_admit`](crate::balance::Balance::poll_admit)) before each `accept`, and mark the
    /// wait for a connection with [`Balance::parked`](crate::balance::Balance::parked) (or
    /// [`park`](crate::balance::Balance::park)), so that a worker holding more than its share
    /// of the open connections leaves a new connection to an idle worker holding fewer (see
    /// [`balance`](crate::balance)). The connections counted by [`Worker::counters`] are the
    /// ones balanced. Disabled (always admits) in `SO_REUSEPORT` mode, with
    /// [`Prefork::balance(false)`](crate::Prefork::balance), and in a [`Worker::standalone`]
    /// context.
    pub fn balance(&self) -> crate::balance::Balance {
        self.balance.clone()
    }

    /// The heartbeat to send from inside the worker's event loop, every
    /// [`Heartbeat::interval`]; see [`Heartbeat`].
    ///
    /// The first call sends a beat at once: from then on the master's watchdog watches this
    /// worker (a worker that never asks for its heartbeat is not watched, so a server written
    /// directly on [`Prefork::run`](crate::Prefork::run) without heartbeats is never killed for
    /// silence).
    ///
    /// When the master needs no heartbeat ([`Prefork::stats`](crate::Prefork::stats) off and
    /// [`Prefork::worker_timeout`](crate::Prefork::worker_timeout) `None`), the heartbeat is
    /// disabled ([`Heartbeat::is_enabled`]): it sends nothing and its interval is
    /// [`IDLE_HEARTBEAT_INTERVAL`](crate::IDLE_HEARTBEAT_INTERVAL).
    pub fn heartbeat(&self) -> Heartbeat {
        if !self.beats {
            return Heartbeat::new(None, self.counters.clone(), IDLE_HEARTBEAT_INTERVAL);
        }
        if let Some(c) = &self.control {
            if !c.watched.swap(true, Ordering::SeqCst) {
                c.heartbeat(self.counters.requests(), self.counters.connections());
            }
        }
        Heartbeat::new(
            self.control.clone(),
            self.counters.clone(),
            self.heartbeat_interval,
        )
    }

    /// The worker id, `0..workers`, stable across respawns.
    pub fn id(&self) -> usize {
        self.worker_id
    }

    /// The former name of [`Worker::id`].
    #[deprecated(since = "0.2.0", note = "renamed to `id`")]
    pub fn worker_id(&self) -> usize {
        self.worker_id
    }

    /// The listeners, in the order they were configured, each in non-blocking mode.
    pub fn listeners(&self) -> &[TcpListener] {
        &self.listeners
    }

    /// Takes the listeners out of the context (leaving it empty), e.g. to convert them to a
    /// runtime's own type.
    pub fn take_listeners(&mut self) -> Vec<TcpListener> {
        std::mem::take(&mut self.listeners)
    }

    /// The Unix domain socket listeners (`unix:/path` addresses), in the order they were
    /// configured, each in non-blocking mode. [`Worker::listeners`] holds the TCP ones.
    pub fn unix_listeners(&self) -> &[UnixListener] {
        &self.unix_listeners
    }

    /// Takes the Unix domain socket listeners out of the context (leaving it without any).
    pub fn take_unix_listeners(&mut self) -> Vec<UnixListener> {
        std::mem::take(&mut self.unix_listeners)
    }

    /// The local addresses of the listeners.
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.listeners
            .iter()
            .filter_map(|l| l.local_addr().ok())
            .collect()
    }

    /// Completes on SIGTERM, SIGINT or the master's death. Clone it freely.
    pub fn shutdown(&self) -> Shutdown {
        self.shutdown.clone()
    }

    /// How long the master waits for a stopping worker before it kills it: the budget for
    /// draining in-flight requests.
    pub fn shutdown_timeout(&self) -> Duration {
        self.shutdown_timeout
    }

    /// How long to let in-flight work finish once the shutdown starts: the shutdown timeout less
    /// a margin (a quarter of it, at most 1 s), so a worker that drains for its whole budget still
    /// exits on its own before the master's SIGKILL.
    pub fn drain_timeout(&self) -> Duration {
        if self.control.is_none() {
            return self.shutdown_timeout;
        }
        drain_timeout(self.shutdown_timeout)
    }

    /// Tells the master that this worker accepts connections. Call it once the accept loop runs;
    /// later calls do nothing.
    ///
    /// # Errors
    /// Fails if the master is gone (the control socket is closed).
    pub fn ready(&self) -> io::Result<()> {
        match &self.control {
            Some(c) => c.ready(),
            None => Ok(()),
        }
    }

    /// Whether the master was configured with TLS ([`Prefork::tls`](crate::Prefork)). Always
    /// available, so an adapter built without TLS support can refuse to serve plain text on a
    /// port meant for TLS.
    pub fn tls_requested(&self) -> bool {
        #[cfg(feature = "tls")]
        {
            self.tls.is_some()
        }
        #[cfg(not(feature = "tls"))]
        {
            false
        }
    }

    /// The validated TLS configuration, if [`Prefork::tls`](crate::Prefork::tls) was set.
    #[cfg(feature = "tls")]
    pub fn tls_config(&self) -> Option<Arc<rustls::ServerConfig>> {
        self.tls.as_ref().map(|(c, _)| c.clone())
    }

    /// How long a TLS handshake may take (see [`TlsConfig::handshake_timeout`](crate::TlsConfig::handshake_timeout)).
    #[cfg(feature = "tls")]
    pub fn tls_handshake_timeout(&self) -> Duration {
        self.tls
            .as_ref()
            .map(|(_, t)| *t)
            .unwrap_or(crate::tls::DEFAULT_HANDSHAKE_TIMEOUT)
    }

    pub(crate) fn control(&self) -> Option<Arc<Control>> {
        self.control.clone()
    }

    /// A context for serving **without a master**: the same serving code in this one process
    /// (a `--no-prefork` baseline, a development mode), on listeners you bound (e.g. with
    /// [`bind`](crate::bind)), stopping when `shutdown` completes (e.g. [`Shutdown::on_signals`]).
    ///
    /// The worker id is 0; [`Worker::ready`] and heartbeats do nothing; the drain rule is the
    /// same as in a worker, except that [`Worker::drain_timeout`] is the whole shutdown timeout
    /// ([`DEFAULT_SHUTDOWN_TIMEOUT`](crate::DEFAULT_SHUTDOWN_TIMEOUT) unless set with
    /// [`Worker::with_shutdown_timeout`]), since no master will kill the process.
    pub fn standalone(listeners: Vec<TcpListener>, shutdown: Shutdown) -> Worker {
        Worker {
            worker_id: 0,
            listeners,
            unix_listeners: Vec::new(),
            control: None,
            shutdown,
            shutdown_timeout: crate::DEFAULT_SHUTDOWN_TIMEOUT,
            drain_grace: DEFAULT_DRAIN_GRACE,
            keepalive_timeout: Some(crate::drain::DEFAULT_KEEPALIVE_TIMEOUT),
            header_read_timeout: Some(crate::drain::DEFAULT_HEADER_READ_TIMEOUT),
            heartbeat_interval: DEFAULT_HEARTBEAT_INTERVAL,
            beats: true,
            counters: Counters::default(),
            balance: crate::balance::Balance::disabled(),
            #[cfg(feature = "tls")]
            tls: None,
        }
    }

    /// Replaces the shutdown timeout of a [`Worker::standalone`] context (a worker's comes from
    /// its master).
    pub fn with_shutdown_timeout(mut self, timeout: Duration) -> Self {
        self.shutdown_timeout = timeout;
        self
    }

    /// Serves TLS with this configuration and handshake timeout in a [`Worker::standalone`]
    /// context (a worker's comes from its master, loaded and validated there).
    #[cfg(feature = "tls")]
    pub fn with_tls(
        mut self,
        config: Arc<rustls::ServerConfig>,
        handshake_timeout: Duration,
    ) -> Self {
        self.tls = Some((config, handshake_timeout));
        self
    }

    /// Whether this context has a master (`false` for [`Worker::standalone`]).
    pub fn has_master(&self) -> bool {
        self.control.is_some()
    }
}

/// The drain budget for a given shutdown timeout: the timeout less a margin (a quarter of it, at
/// most 1 s), so a process that drains for its whole budget still exits on its own before the
/// master's SIGKILL. [`Worker::drain_timeout`] applies it to the worker's timeout; adapters use it
/// where they hold the timeout themselves.
pub fn drain_timeout(shutdown_timeout: Duration) -> Duration {
    shutdown_timeout.saturating_sub((shutdown_timeout / 4).min(Duration::from_secs(1)))
}

/// The default [`Worker::drain_grace`]: 1 s, long enough for a busy keep-alive client's next
/// request to arrive and be answered with `Connection: close`.
pub const DEFAULT_DRAIN_GRACE: Duration = Duration::from_secs(1);

fn env_var(name: &str) -> Result<String, Error> {
    std::env::var(name).map_err(|_| {
        Error::NotAWorker(format!(
            "{name} is missing: this process was not started by a prefork master \
             (unset {ENV_CHILD} to run it as the master)"
        ))
    })
}

fn env_num<T: std::str::FromStr>(name: &str) -> Result<T, Error> {
    let v = env_var(name)?;
    v.parse().map_err(|_| {
        Error::NotAWorker(format!(
            "{name}={v:?} is not a number: this process was not started by a prefork master \
             (unset {ENV_CHILD} to run it as the master)"
        ))
    })
}

/// Settings the worker side takes from the builder.
pub(crate) struct WorkerConfig {
    pub(crate) network: Network,
    pub(crate) shutdown_timeout: Duration,
    pub(crate) on_master_death: Option<MasterDeathHook>,
    #[cfg(feature = "tls")]
    pub(crate) tls: Option<crate::tls::TlsConfig>,
}

/// Builds the worker's context from its environment and inherited descriptors, or explains why
/// this process is not a proper worker. Nothing is served and nothing waits.
pub(crate) fn from_env(cfg: WorkerConfig) -> Result<Worker, Error> {
    let protocol = env_var(ENV_PROTOCOL)?;
    if protocol != PROTOCOL_VERSION.to_string() {
        return Err(Error::NotAWorker(format!(
            "its master speaks prefork control protocol {:?} and this program speaks {PROTOCOL_VERSION}: \
             a reload cannot change the protocol; restart the master with this build",
            protocol
        )));
    }
    let worker_id: usize = env_num(ENV_WORKER_ID)?;
    // Unsigned and bounded: no negative or huge number from a forged environment reaches a
    // descriptor call.
    let control_fd: u16 = env_num(ENV_CONTROL_FD)?;
    let n_listeners: u16 = env_num(ENV_LISTEN_FDS)?;
    let (control_fd, n_listeners) = (RawFd::from(control_fd), i32::from(n_listeners));
    if control_fd != FIRST_FD + n_listeners {
        return Err(Error::NotAWorker(format!(
            "{ENV_CONTROL_FD}={control_fd} does not follow the {n_listeners} listener(s) at fd {FIRST_FD}"
        )));
    }
    // The inherited descriptors are owned once per process: a second `Prefork::run` in a worker
    // would wrap them again and close them twice.
    if TAKEN.swap(true, Ordering::SeqCst) {
        return Err(Error::NotAWorker(
            "the inherited descriptors were already taken by an earlier Prefork::run in this \
             process: run it once per worker"
                .to_owned(),
        ));
    }
    let control = take_control_socket(control_fd)?;
    let control = Arc::new(Control {
        stream: control,
        ready: AtomicBool::new(false),
        write: Mutex::new(()),
        watched: AtomicBool::new(false),
    });
    // From here on the master is listening: report failures to it as well.
    // From here on the master is listening: a failure goes to it, and it reports it.
    let fail = |e: Error| -> Error { control.fail_start(&e.to_string()) };

    let env_ms = |name: &str| {
        std::env::var(name)
            .ok()
            .and_then(|v| v.parse().ok())
            .map(Duration::from_millis)
    };
    let shutdown_timeout = env_ms(ENV_SHUTDOWN_TIMEOUT_MS).unwrap_or(cfg.shutdown_timeout);
    let drain_grace = env_ms(ENV_DRAIN_GRACE_MS).unwrap_or(DEFAULT_DRAIN_GRACE);
    // A timeout that may be off: 0 is none, unset is the default.
    let optional_ms = |name: &str, default: Duration| match env_ms(name) {
        Some(d) if d.is_zero() => None,
        Some(d) => Some(d),
        None => Some(default),
    };
    let keepalive_timeout = optional_ms(ENV_KEEPALIVE_MS, crate::drain::DEFAULT_KEEPALIVE_TIMEOUT);
    let header_read_timeout = optional_ms(
        ENV_HEADER_TIMEOUT_MS,
        crate::drain::DEFAULT_HEADER_READ_TIMEOUT,
    );
    // Stats off: nothing is counted; with no watchdog either, the master passes a heartbeat
    // interval of 0 and the worker sends no heartbeat at all.
    let stats = std::env::var(ENV_STATS).map_or(true, |v| v != "off");
    let beats = stats || env_ms(ENV_HEARTBEAT_MS) != Some(Duration::ZERO);
    let heartbeat_interval = env_ms(ENV_HEARTBEAT_MS)
        .filter(|d| !d.is_zero())
        .unwrap_or(DEFAULT_HEARTBEAT_INTERVAL);
    raise_nofile_limit(std::env::var(ENV_NOFILE).ok().as_deref());
    let balance = take_balance_table(control_fd + 1);

    let mut listeners = Vec::new();
    let mut unix_listeners = Vec::new();
    for i in 0..n_listeners {
        let what = format!("listener {i}");
        if listener::is_unix_socket(FIRST_FD + i) {
            let l = listener::inherit_unix_listener(FIRST_FD + i, &what)
                .map_err(|m| fail(Error::NotAWorker(m)))?;
            unix_listeners.push(l);
            continue;
        }
        let l = listener::inherit_tcp_listener(FIRST_FD + i, &what)
            .map_err(|m| fail(Error::NotAWorker(m)))?;
        listeners.push(l);
    }
    if let Ok(spec) = std::env::var(ENV_REUSEPORT) {
        let backlog = std::env::var(ENV_BACKLOG)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(listener::default_backlog);
        for item in spec.split(',').filter(|s| !s.is_empty()) {
            let (addr, network) = match item.strip_suffix("/dual") {
                Some(a) => (a, Network::Tcp),
                None if item.starts_with('[') => (item, Network::Tcp6),
                None => (item, cfg.network),
            };
            let addr: SocketAddr = addr.parse().map_err(|_| {
                fail(Error::NotAWorker(format!(
                    "{ENV_REUSEPORT} holds {item:?}, not an address"
                )))
            })?;
            let socket = listener::listen(addr, network, true, backlog).map_err(fail)?;
            let l = TcpListener::from(OwnedFd::from(socket));
            l.set_nonblocking(true)
                .map_err(|e| fail(Error::io(format!("listener on {addr}"), e)))?;
            listeners.push(l);
        }
    }
    if listeners.is_empty() && unix_listeners.is_empty() {
        return Err(fail(Error::NotAWorker(
            "the master passed no listener".to_owned(),
        )));
    }

    // With a user or group set, the master read the TLS files (they may be root's alone) and
    // passed their bytes.
    #[cfg(target_os = "linux")]
    let from_master = crate::privilege::take_tls_pem().map_err(fail)?;
    #[cfg(all(target_os = "linux", feature = "tls"))]
    let cfg_tls = match (cfg.tls, from_master) {
        (Some(t), Some((cert, key))) => Some(t.with_pem(cert, key)),
        (t, _) => t,
    };
    #[cfg(all(not(target_os = "linux"), feature = "tls"))]
    let cfg_tls = cfg.tls;
    #[cfg(all(target_os = "linux", not(feature = "tls")))]
    drop(from_master);
    // Session tickets that every worker of this master opens (a returning client reaches any).
    #[cfg(feature = "tls")]
    let cfg_tls = match (cfg_tls, std::env::var(ENV_TLS_TICKET_SALT)) {
        (Some(t), Ok(salt)) => Some(t.with_ticket_salt(salt)),
        (t, _) => t,
    };
    #[cfg(feature = "tls")]
    let tls = match cfg_tls {
        Some(t) => Some((t.load().map_err(fail)?, t.handshake_timeout_value())),
        None => None,
    };

    let shutdown = Shutdown::new().map_err(|e| fail(Error::io("shutdown notification", e)))?;
    watch(
        &control,
        &shutdown,
        shutdown_timeout,
        cfg.on_master_death.clone(),
    )
    .map_err(fail)?;

    Ok(Worker {
        worker_id,
        listeners,
        unix_listeners,
        control: Some(control),
        shutdown,
        shutdown_timeout,
        drain_grace,
        keepalive_timeout,
        header_read_timeout,
        heartbeat_interval,
        beats,
        counters: Counters::with_balance(balance.clone(), stats),
        balance,
        #[cfg(feature = "tls")]
        tls,
    })
}

/// Sets the soft `RLIMIT_NOFILE` as the master asked: `hard` (the default: up to the hard limit,
/// as Go's runtime and nginx's `worker_rlimit_nofile` do), a number (capped at the hard limit),
/// or `keep`.
fn raise_nofile_limit(spec: Option<&str>) {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let want = match spec.unwrap_or("hard") {
        "keep" => return,
        "hard" => None,
        n => match n.parse::<u64>() {
            Ok(n) => Some(n),
            Err(_) => return,
        },
    };
    let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) else {
        return;
    };
    let target = want.map_or(hard, |n| n.min(hard));
    if target == soft {
        return;
    }
    match setrlimit(Resource::RLIMIT_NOFILE, target, hard) {
        Ok(()) => tracing::debug!(from = soft, to = target, hard, "soft RLIMIT_NOFILE set"),
        Err(e) => tracing::warn!(error = %e, soft, target, "cannot set the soft RLIMIT_NOFILE"),
    }
}

/// Maps the balance table the master placed at `fd` (right after the control socket), then
/// closes the descriptor (the mapping stays). Balancing is an optimisation: anything unexpected
/// disables it, with a debug line.
fn take_balance_table(fd: RawFd) -> crate::balance::Balance {
    use crate::balance::Balance;
    let (Ok(at), Ok(slot)) = (
        std::env::var(ENV_BALANCE_FD),
        std::env::var(ENV_BALANCE_SLOT),
    ) else {
        return Balance::disabled();
    };
    if at != fd.to_string() || !listener::fd_is_open(fd) {
        tracing::debug!(
            at,
            fd,
            "no balance table where expected; accepting unbalanced"
        );
        return Balance::disabled();
    }
    // SAFETY: the master placed the table's memfd at this descriptor (checked open above) for
    // this worker; it is taken exactly once (from_env runs once per process) and closed when
    // `owned` drops.
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    let mapped = slot
        .parse::<usize>()
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "bad slot"))
        .and_then(|slot| Balance::map(std::os::fd::AsFd::as_fd(&owned), slot));
    match mapped {
        Ok(b) => b,
        Err(e) => {
            tracing::debug!(error = %e, "cannot map the balance table; accepting unbalanced");
            Balance::disabled()
        }
    }
}

fn take_control_socket(fd: RawFd) -> Result<UnixStream, Error> {
    if !listener::fd_is_open(fd) {
        return Err(Error::NotAWorker(format!(
            "its control socket (fd {fd}) is not open: this process was not started by a prefork \
             master (unset {ENV_CHILD} to run it as the master)"
        )));
    }
    // SAFETY: the fd is open (checked above); the borrow only inspects it.
    let borrowed = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
    let sock = socket2::SockRef::from(&borrowed);
    let is_unix_stream = sock.r#type().ok() == Some(socket2::Type::STREAM)
        && sock.local_addr().map(|a| a.is_unix()).unwrap_or(false);
    if !is_unix_stream {
        return Err(Error::NotAWorker(format!(
            "fd {fd} is not the control socket a prefork master passes (not a Unix stream \
             socket): this process was not started by a prefork master"
        )));
    }
    // SAFETY: the fd is an open Unix stream socket that the master placed here for us; we take
    // ownership exactly once.
    let stream = unsafe { UnixStream::from_raw_fd(fd) };
    listener::set_cloexec(&stream).map_err(|e| Error::io("control socket", e))?;
    Ok(stream)
}

/// Starts the threads that turn SIGTERM/SIGINT and the master's death into the shutdown
/// notification, plus the watchdog that ends a worker that outlives its drain budget.
fn watch(
    control: &Arc<Control>,
    shutdown: &Shutdown,
    timeout: Duration,
    on_master_death: Option<MasterDeathHook>,
) -> Result<(), Error> {
    shutdown
        .trigger_on_signals(false)
        .map_err(|e| Error::io("installing SIGTERM/SIGINT handlers", e))?;

    let mut stream = control
        .stream
        .try_clone()
        .map_err(|e| Error::io("control socket", e))?;
    let s = shutdown.clone();
    std::thread::Builder::new()
        .name("prefork-master-watch".into())
        .spawn(move || {
            let mut buf = [0u8; 64];
            loop {
                match stream.read(&mut buf) {
                    Ok(0) => break,
                    Ok(_) => continue, // reserved for messages from the master
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(_) => break,
                }
            }
            tracing::warn!("the master process is gone; shutting down");
            // The hook first: once the shutdown is triggered the serve loop may drain and the
            // process exit, which would cut a running hook short.
            if let Some(hook) = on_master_death {
                hook();
            }
            s.trigger(ShutdownReason::MasterGone);
        })
        .map_err(|e| Error::io("starting the master watch thread", e))?;

    let s = shutdown.clone();
    std::thread::Builder::new()
        .name("prefork-watchdog".into())
        .spawn(move || {
            let reason = s.wait();
            std::thread::sleep(timeout.saturating_add(SELF_EXIT_GRACE));
            tracing::error!(
                ?reason,
                timeout_ms = timeout.as_millis() as u64,
                "worker did not finish draining within the shutdown timeout; exiting"
            );
            std::process::exit(1);
        })
        .map_err(|e| Error::io("starting the watchdog thread", e))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_standalone_context_serves_without_a_master() {
        let l = crate::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let c = Worker::standalone(vec![l], Shutdown::new().unwrap())
            .with_shutdown_timeout(Duration::from_secs(7));
        assert!(!c.has_master());
        assert_eq!(c.id(), 0);
        assert_eq!(c.local_addrs(), vec![addr]);
        c.ready().unwrap();
        c.heartbeat().beat();
        assert_eq!(
            c.drain_timeout(),
            Duration::from_secs(7),
            "no master: the whole budget"
        );
        c.shutdown().trigger(ShutdownReason::Requested);
        assert!(c.shutdown().is_triggered());
    }

    #[test]
    fn drain_leaves_a_margin_before_the_kill() {
        assert_eq!(
            drain_timeout(Duration::from_secs(30)),
            Duration::from_secs(29)
        );
        assert_eq!(
            drain_timeout(Duration::from_secs(2)),
            Duration::from_millis(1500)
        );
        assert_eq!(drain_timeout(Duration::ZERO), Duration::ZERO);
    }
}
