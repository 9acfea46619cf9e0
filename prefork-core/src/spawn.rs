//! Re-exec spawning: the child command, its environment, and the descriptors placed at 3.. .

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::process::{Child as Process, Command, Stdio};

use nix::fcntl::{fcntl, FcntlArg};

use crate::role::*;

/// What a [`command_producer`](crate::Prefork::command_producer) is told about the worker it
/// builds a command for.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct SpawnContext {
    /// The worker id, `0..workers`; it stays the same across respawns.
    pub worker_id: usize,
    /// How many times this worker id has been started before (0 for the first start).
    pub generation: u64,
}

/// The default worker command: `program` (the master's own image, or the program on disk for a
/// reload), with this process's arguments and `argv[0]`.
pub(crate) fn default_command(program: &std::path::Path) -> Command {
    let mut args = std::env::args_os();
    let mut cmd = Command::new(program);
    if let Some(arg0) = args.next() {
        cmd.arg0(arg0);
    }
    cmd.args(args);
    cmd
}

/// A timeout that may be off, as the worker's environment carries it: milliseconds, at least 1,
/// or 0 for none.
pub(crate) fn optional_ms(timeout: Option<std::time::Duration>) -> u128 {
    timeout.map_or(0, |d| d.as_millis().max(1))
}

/// What the master passes to every worker.
pub(crate) struct WorkerEnv<'a> {
    pub(crate) listeners: &'a [OwnedFd],
    /// `SO_REUSEPORT` mode: the value of `PREFORK_REUSEPORT`.
    pub(crate) reuseport: Option<&'a str>,
    pub(crate) backlog: i32,
    pub(crate) shutdown_timeout_ms: u128,
    pub(crate) drain_grace_ms: u128,
    /// The keep-alive and header read timeouts ([`optional_ms`]).
    pub(crate) keepalive_ms: u128,
    pub(crate) header_timeout_ms: u128,
    /// 0: no heartbeat (stats off and no watchdog).
    pub(crate) heartbeat_ms: u128,
    /// Whether the worker counts requests and connections.
    pub(crate) stats: bool,
    pub(crate) nofile: String,
    /// The balance table and this worker's slot in it.
    pub(crate) balance: Option<(BorrowedFd<'a>, usize)>,
    /// The TLS session tickets' salt (`crate::tickets`), when TLS is configured.
    pub(crate) tls_ticket_salt: Option<&'a str>,
}

/// Completes `cmd` for worker `worker_id` and starts it. Returns the process and the master's
/// end of the control socket.
///
/// The worker gets the listeners at fd 3, 4, ..., its control socket right after them, and the
/// balance table (if any) after that. Every other descriptor of the master is close-on-exec and
/// does not reach the worker.
pub(crate) fn spawn(
    mut cmd: Command,
    worker_id: usize,
    env: &WorkerEnv<'_>,
) -> io::Result<(Process, UnixStream)> {
    let (master_end, child_end) = UnixStream::pair()?;
    let mut sources: Vec<BorrowedFd<'_>> = env.listeners.iter().map(|l| l.as_fd()).collect();
    sources.push(child_end.as_fd());
    let control_fd = FIRST_FD + sources.len() as RawFd - 1;
    if let Some((fd, _)) = env.balance {
        sources.push(fd);
    }
    let n = sources.len() as RawFd;

    // Copies of the sources above every target slot (close-on-exec in the master), so placing one
    // at its target can never overwrite another source.
    let high = sources
        .iter()
        .map(|fd| fcntl(fd, FcntlArg::F_DUPFD_CLOEXEC(FIRST_FD + n)).map_err(io::Error::from))
        .collect::<io::Result<Vec<RawFd>>>()?;
    // SAFETY: each fd was just returned by F_DUPFD_CLOEXEC and is owned by nobody else.
    let high: Vec<OwnedFd> = high
        .into_iter()
        .map(|fd| unsafe { std::os::fd::FromRawFd::from_raw_fd(fd) })
        .collect();
    // Occupy every free target slot while spawning: std's exec-error pipe is opened during
    // `spawn` at the lowest free numbers, and must not land on a slot we are about to dup2 over.
    let mut placeholders = Vec::new();
    for target in FIRST_FD..FIRST_FD + n {
        if !crate::listener::fd_is_open(target) {
            let fd = fcntl(&high[0], FcntlArg::F_DUPFD_CLOEXEC(target))?;
            // SAFETY: freshly duplicated, owned by nobody else.
            placeholders.push(unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) });
        }
    }

    cmd.stdin(Stdio::null())
        .env(ENV_CHILD, "1")
        .env(ENV_WORKER_ID, worker_id.to_string())
        .env(ENV_LISTEN_FDS, env.listeners.len().to_string())
        .env(ENV_CONTROL_FD, control_fd.to_string())
        .env(ENV_BACKLOG, env.backlog.to_string())
        .env(ENV_SHUTDOWN_TIMEOUT_MS, env.shutdown_timeout_ms.to_string())
        .env(ENV_PROTOCOL, PROTOCOL_VERSION.to_string())
        .env(ENV_DRAIN_GRACE_MS, env.drain_grace_ms.to_string())
        .env(ENV_KEEPALIVE_MS, env.keepalive_ms.to_string())
        .env(ENV_HEADER_TIMEOUT_MS, env.header_timeout_ms.to_string())
        .env(ENV_HEARTBEAT_MS, env.heartbeat_ms.to_string())
        .env(ENV_STATS, if env.stats { "on" } else { "off" })
        .env(ENV_NOFILE, &env.nofile);
    // The service manager's variables are the master's alone (socket activation, notify,
    // watchdog); the master never changes its own environment, so strip them here.
    for var in crate::systemd::MANAGER_ENV {
        cmd.env_remove(var);
    }
    match env.balance {
        Some((_, slot)) => cmd
            .env(ENV_BALANCE_FD, (control_fd + 1).to_string())
            .env(ENV_BALANCE_SLOT, slot.to_string()),
        None => cmd.env_remove(ENV_BALANCE_FD).env_remove(ENV_BALANCE_SLOT),
    };
    match env.tls_ticket_salt {
        Some(salt) => cmd.env(ENV_TLS_TICKET_SALT, salt),
        None => cmd.env_remove(ENV_TLS_TICKET_SALT),
    };
    match env.reuseport {
        Some(addrs) => cmd.env(ENV_REUSEPORT, addrs),
        None => cmd.env_remove(ENV_REUSEPORT),
    };
    // Its own process group: a Ctrl+C in the terminal reaches the master only, which then stops
    // the workers once (with SIGTERM), instead of every worker seeing SIGINT and SIGTERM.
    cmd.process_group(0);

    let raw: Vec<RawFd> = high.iter().map(|fd| fd.as_raw_fd()).collect();
    // Descriptors the master itself inherited without close-on-exec (from a shell, a test
    // runner, a supervisor) must not reach the worker: everything from the first free slot up is
    // marked close-on-exec in the child, except a descriptor the worker is meant to get (the TLS
    // hand-over, named in its environment).
    let keep: RawFd = cmd
        .get_envs()
        .find(|(k, _)| *k == crate::privilege::ENV_TLS_FD)
        .and_then(|(_, v)| v?.to_str()?.parse().ok())
        .unwrap_or(-1);
    let first_free = FIRST_FD + n;
    let fd_limit = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
        .map(|(soft, _)| soft.min(1 << 20) as RawFd)
        .unwrap_or(1024);
    // SAFETY: runs in the forked child before exec, calling only dup2, fcntl and close_range
    // (async-signal-safe) without allocating; `raw`'s descriptors stay open in the master until
    // `spawn` returns, so they are valid in the child.
    unsafe {
        cmd.pre_exec(move || {
            for (i, &fd) in raw.iter().enumerate() {
                // dup2 clears FD_CLOEXEC on the target, so exactly these fds cross the exec.
                if libc::dup2(fd, FIRST_FD + i as RawFd) == -1 {
                    return Err(io::Error::last_os_error());
                }
            }
            mark_cloexec_from(first_free, keep, fd_limit);
            Ok(())
        });
    }
    let process = cmd.spawn()?;
    drop(placeholders);
    drop(high);
    drop(child_end);
    master_end.set_nonblocking(true)?;
    Ok((process, master_end))
}

/// Marks every descriptor from `first` up close-on-exec, except `keep`. Runs between fork and
/// exec: only system calls, no allocation. `close_range(CLOSE_RANGE_CLOEXEC)` (Linux 5.11) where
/// available, else `fcntl` over every number below `limit`.
fn mark_cloexec_from(first: RawFd, keep: RawFd, limit: RawFd) {
    let ranges = if keep >= first {
        [(first, keep - 1), (keep + 1, RawFd::MAX)]
    } else {
        [(first, RawFd::MAX), (0, -1)]
    };
    for (lo, hi) in ranges {
        if lo > hi {
            continue;
        }
        #[cfg(target_os = "linux")]
        {
            // SAFETY: close_range with CLOSE_RANGE_CLOEXEC only changes descriptor flags.
            let r = unsafe {
                libc::syscall(
                    libc::SYS_close_range,
                    lo as libc::c_uint,
                    hi as libc::c_uint,
                    libc::CLOSE_RANGE_CLOEXEC,
                )
            };
            if r == 0 {
                continue;
            }
        }
        for fd in lo..hi.min(limit.saturating_sub(1)).saturating_add(1) {
            // SAFETY: F_GETFD/F_SETFD on any number: EBADF for one that is not open.
            unsafe {
                let flags = libc::fcntl(fd, libc::F_GETFD);
                if flags >= 0 && flags & libc::FD_CLOEXEC == 0 {
                    libc::fcntl(fd, libc::F_SETFD, flags | libc::FD_CLOEXEC);
                }
            }
        }
    }
}
