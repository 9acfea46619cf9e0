//! A handle to the running master, for code: reload, scale, stop and stats from a hook or
//! another thread. The control socket speaks the same commands as JSON.

use std::io::Write;
use std::os::unix::net::UnixStream;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How long [`MasterHandle::stats`] waits for the master's answer.
const STATS_TIMEOUT: Duration = Duration::from_secs(5);

/// A command to the master.
#[derive(Debug)]
pub(crate) enum Command {
    Reload,
    Scale(usize),
    Stop { graceful: bool },
    Stats(mpsc::Sender<Stats>),
}

#[derive(Debug, Default)]
pub(crate) struct Shared {
    pub(crate) queue: Mutex<Vec<Command>>,
    /// The driver's wake-up socket while the master runs.
    pub(crate) wake: Mutex<Option<UnixStream>>,
}

/// A handle to the running master: [`Prefork::handle`](crate::Prefork::handle) gives one before
/// [`Prefork::run`](crate::Prefork::run); it is `Clone + Send + Sync`, so a hook or another
/// thread of the master process can reload, scale, stop and read stats.
///
/// Commands sent before `run` starts are carried out once it does; in a worker process the
/// handle does nothing (workers have no master of their own).
///
/// ```no_run
/// let prefork = prefork_core::Prefork::new("127.0.0.1:8080");
/// let handle = prefork.handle();
/// std::thread::spawn(move || {
///     // e.g. when a deploy tool says so:
///     handle.reload();
/// });
/// ```
#[derive(Debug, Clone, Default)]
pub struct MasterHandle(pub(crate) Arc<Shared>);

impl MasterHandle {
    fn send(&self, cmd: Command) {
        self.0
            .queue
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(cmd);
        if let Some(wake) = self
            .0
            .wake
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
        {
            let _ = (&*wake).write(&[1]);
        }
    }

    /// Starts a rolling reload, as SIGHUP does: each worker is replaced by one running the
    /// program as it is now on disk, one at a time, each old worker draining only once its
    /// replacement is ready.
    pub fn reload(&self) {
        self.send(Command::Reload);
    }

    /// Sets the number of workers (at least 1), as SIGTTIN/SIGTTOU do one at a time. Workers
    /// removed drain first.
    pub fn scale(&self, workers: usize) {
        self.send(Command::Scale(workers));
    }

    /// Stops the server: gracefully (drain, as SIGTERM) or at once (as SIGQUIT).
    pub fn stop(&self, graceful: bool) {
        self.send(Command::Stop { graceful });
    }

    /// The master's view of its workers, or `None` if the master is not running (or did not
    /// answer within 5 s).
    pub fn stats(&self) -> Option<Stats> {
        if self
            .0
            .wake
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_none()
        {
            return None;
        }
        let (tx, rx) = mpsc::channel();
        self.send(Command::Stats(tx));
        rx.recv_timeout(STATS_TIMEOUT).ok()
    }

    pub(crate) fn take(&self) -> Vec<Command> {
        std::mem::take(&mut *self.0.queue.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

/// The master's state, from [`MasterHandle::stats`] or the control socket's `stats` command.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// The master's pid.
    pub master_pid: u32,
    /// The configured number of workers (after scaling).
    pub workers_target: usize,
    /// The newest program generation (0 at start, one more per reload).
    pub generation: u64,
    /// Whether a rolling reload is under way.
    pub reloading: bool,
    /// Every worker process, in worker-id order (a slot has two during a reload or recycle).
    pub workers: Vec<WorkerStats>,
}

/// One worker process in [`Stats`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct WorkerStats {
    /// The worker id (`0..workers`).
    pub id: usize,
    /// Its process id.
    pub pid: u32,
    /// The program generation it runs (see [`Stats::generation`]).
    pub generation: u64,
    /// `starting`, `ready` or `draining`.
    pub state: &'static str,
    /// Whether it serves (reported ready and is not draining).
    pub ready: bool,
    /// Requests served, as of its last heartbeat.
    pub requests: u64,
    /// Connections open, as of its last heartbeat.
    pub connections: u64,
    /// Resident memory in bytes (from `/proc`), if readable.
    pub rss_bytes: Option<u64>,
    /// Time since its last heartbeat (`None` before the first).
    pub heartbeat_age: Option<Duration>,
    /// Time since it was started.
    pub uptime: Duration,
    /// How often this worker id was respawned after an unexpected exit.
    pub restarts: u64,
}

impl Stats {
    /// The JSON object the control socket answers `stats` with.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "ok": true,
            "master_pid": self.master_pid,
            "workers_target": self.workers_target,
            "generation": self.generation,
            "reloading": self.reloading,
            "workers": self.workers.iter().map(|w| serde_json::json!({
                "id": w.id,
                "pid": w.pid,
                "generation": w.generation,
                "state": w.state,
                "ready": w.ready,
                "requests": w.requests,
                "connections": w.connections,
                "rss_bytes": w.rss_bytes,
                "heartbeat_age_ms": w.heartbeat_age.map(|d| d.as_millis() as u64),
                "uptime_ms": w.uptime.as_millis() as u64,
                "restarts": w.restarts,
            })).collect::<Vec<_>>(),
        })
    }
}
