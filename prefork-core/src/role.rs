//! Which role this process plays, decided by the environment alone (never by argv).

/// Set to `1` in every worker's environment by the master.
pub const ENV_CHILD: &str = "PREFORK_CHILD";
/// The worker id, `0..workers`.
pub const ENV_WORKER_ID: &str = "PREFORK_WORKER_ID";
/// How many inherited listeners start at fd 3 (shared-fd mode).
pub(crate) const ENV_LISTEN_FDS: &str = "PREFORK_LISTEN_FDS";
/// The fd of the worker's end of its control socket.
pub(crate) const ENV_CONTROL_FD: &str = "PREFORK_CONTROL_FD";
/// `SO_REUSEPORT` mode: the addresses the worker binds itself, comma-separated; an address
/// followed by `/dual` is an IPv6 address with `IPV6_V6ONLY` off.
pub(crate) const ENV_REUSEPORT: &str = "PREFORK_REUSEPORT";
/// The listen backlog the worker uses for its own sockets.
pub(crate) const ENV_BACKLOG: &str = "PREFORK_BACKLOG";
/// The master's shutdown timeout in milliseconds.
pub(crate) const ENV_SHUTDOWN_TIMEOUT_MS: &str = "PREFORK_SHUTDOWN_TIMEOUT_MS";

/// The fd of the master's balance table (a memfd), right after the control socket; absent when
/// the master keeps none (`SO_REUSEPORT` mode, `PREFORK_BALANCE=off`).
pub(crate) const ENV_BALANCE_FD: &str = "PREFORK_BALANCE_FD";
/// This worker process's slot in the balance table.
pub(crate) const ENV_BALANCE_SLOT: &str = "PREFORK_BALANCE_SLOT";

/// The control protocol version the master speaks; a worker of another version refuses to start.
pub(crate) const ENV_PROTOCOL: &str = "PREFORK_PROTOCOL";
/// How often the worker sends a heartbeat, in milliseconds; 0: never (no watchdog, stats off).
pub(crate) const ENV_HEARTBEAT_MS: &str = "PREFORK_HEARTBEAT_MS";
/// `off`: the worker counts nothing ([`Prefork::stats`](crate::Prefork::stats)).
pub(crate) const ENV_STATS: &str = "PREFORK_STATS";
/// How long a draining worker keeps an idle keep-alive connection open, in milliseconds.
pub(crate) const ENV_DRAIN_GRACE_MS: &str = "PREFORK_DRAIN_GRACE_MS";
/// The idle keep-alive timeout in milliseconds (0: none).
pub(crate) const ENV_KEEPALIVE_MS: &str = "PREFORK_KEEPALIVE_MS";
/// The header read timeout in ms (0: none).
pub(crate) const ENV_HEADER_TIMEOUT_MS: &str = "PREFORK_HEADER_TIMEOUT_MS";
/// The worker's soft `RLIMIT_NOFILE`: `hard`, `keep`, or a number.
pub(crate) const ENV_NOFILE: &str = "PREFORK_NOFILE";
/// With TLS: the salt of the session tickets every worker of the master opens (hex; see
/// `crate::tickets`).
pub(crate) const ENV_TLS_TICKET_SALT: &str = "PREFORK_TLS_TICKET_SALT";

/// The version of the master ↔ worker control protocol. A worker started by a master of another
/// version (after a reload into a build with a different protocol) fails its start with a
/// message saying to restart the master.
pub(crate) const PROTOCOL_VERSION: u32 = 1;

/// The first inherited listener's fd; further listeners follow, then the control socket.
pub(crate) const FIRST_FD: i32 = 3;

/// Whether this process is a prefork worker (`PREFORK_CHILD=1` in its environment).
///
/// The master sets this on each worker's `Command`; it never changes its own environment.
/// A process that has `PREFORK_CHILD=1` but was not started by a master (say the variable was
/// exported by mistake) is still reported as a worker here, and
/// [`Prefork::run`](crate::Prefork::run) then refuses to serve with
/// [`Error::NotAWorker`](crate::Error::NotAWorker): it never binds, forks or serves on a random
/// descriptor.
pub fn is_worker() -> bool {
    std::env::var_os(ENV_CHILD).is_some_and(|v| v == "1")
}

/// The former name of [`is_worker`].
#[deprecated(since = "0.2.0", note = "renamed to `is_worker`")]
pub fn is_child() -> bool {
    is_worker()
}

/// The worker id (`0..workers`) when this process is a worker started by a master.
pub fn worker_id() -> Option<usize> {
    if !is_worker() {
        return None;
    }
    std::env::var(ENV_WORKER_ID).ok()?.parse().ok()
}
