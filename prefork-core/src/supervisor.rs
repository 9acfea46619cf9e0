//! The master: binds, spawns, supervises and stops the workers. A blocking loop around
//! `poll(2)`: signals and worker control sockets wake it, deadlines bound its waits.

use std::io::{self, Read};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::os::unix::process::ExitStatusExt;
use std::process::{Child as Process, ExitStatus};
use std::time::{Duration, Instant};

use nix::poll::{PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::builder::Prefork;
use crate::listener;
use crate::policy::{self, RecoveryBudget};
use crate::signals::MasterSignals;
use crate::spawn::{self, SpawnContext, WorkerEnv};
use crate::Error;

/// Longest sleep of the loop: a safety net that re-checks every worker even if a wake-up was
/// missed.
const MAX_TICK: Duration = Duration::from_secs(1);

/// One running worker process.
#[derive(Debug)]
struct Proc {
    process: Process,
    pid: u32,
    control: UnixStream,
    buf: Vec<u8>,
    eof: bool,
    started: Instant,
    ready_at: Option<Instant>,
    error: Option<String>,
    stopping: bool,
}

/// A worker slot, keyed by its id. Its process comes and goes; the id stays.
#[derive(Debug)]
struct Worker {
    id: usize,
    /// How many processes this slot has started.
    generation: u64,
    proc: Option<Proc>,
    /// Consecutive quick crashes, for the backoff.
    crashes: u32,
    respawn_at: Option<Instant>,
    /// The pid of the process a pending respawn replaces.
    replaces: Option<u32>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Until every worker has reported ready once.
    Starting,
    Running,
    Stopping {
        deadline: Instant,
        killed: bool,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stop {
    Graceful,
    Immediate,
}

struct Supervisor {
    cfg: Prefork,
    workers: Vec<Worker>,
    phase: Phase,
    outcome: Option<Result<(), Error>>,
    budget: RecoveryBudget,
    listeners: Vec<OwnedFd>,
    reuseport: Option<String>,
    backlog: i32,
}

/// The master's entry point.
pub(crate) fn run(cfg: Prefork) -> Result<(), Error> {
    let n = cfg.worker_count();
    if n == 0 {
        return Err(Error::Config("workers must be at least 1, got 0".into()));
    }
    if cfg.addrs.is_empty() {
        return Err(Error::Config("no listen address was given".into()));
    }
    if cfg.reuseport && !cfg!(target_os = "linux") {
        return Err(Error::Config(
            "SO_REUSEPORT mode needs Linux: other systems do not balance connections across \
             such sockets; use the default shared-socket mode"
                .into(),
        ));
    }
    #[cfg(feature = "tls")]
    if let Some(tls) = &cfg.tls {
        tls.load()?;
    }
    let bound = listener::bind_all(&cfg.addrs, cfg.network, cfg.reuseport, cfg.backlog, n)?;
    let listener::Bound {
        listeners,
        reuseport,
        backlog,
        reservations,
    } = bound;

    let signals = MasterSignals::install()
        .map_err(|e| Error::io("installing the master's signal handlers", e))?;
    let budget = RecoveryBudget::new(cfg.recover, n);
    let mut sup = Supervisor {
        cfg,
        workers: (0..n)
            .map(|id| Worker {
                id,
                generation: 0,
                proc: None,
                crashes: 0,
                respawn_at: None,
                replaces: None,
            })
            .collect(),
        phase: Phase::Starting,
        outcome: None,
        budget,
        listeners,
        reuseport,
        backlog,
    };
    let result = sup.run_loop(&signals);
    drop(reservations);
    result
}

/// "exit status 3" or "signal 9 (SIGKILL)".
pub(crate) fn describe(status: ExitStatus) -> String {
    if let Some(code) = status.code() {
        return format!("exit status {code}");
    }
    match status.signal() {
        Some(sig) => match Signal::try_from(sig) {
            Ok(s) => format!("signal {sig} ({})", s.as_str()),
            Err(_) => format!("signal {sig}"),
        },
        None => format!("{status}"),
    }
}

impl Supervisor {
    fn run_loop(&mut self, signals: &MasterSignals) -> Result<(), Error> {
        for id in 0..self.workers.len() {
            self.spawn_worker(id);
            if self.outcome.is_some() {
                break;
            }
        }
        loop {
            self.wait(signals);
            let pending = signals.take();
            if pending.quit {
                tracing::info!("SIGQUIT: stopping every worker now");
                self.stop(Stop::Immediate, Ok(()));
            }
            if pending.stop {
                if matches!(self.phase, Phase::Stopping { .. }) {
                    tracing::info!("second stop signal: stopping every worker now");
                    self.stop(Stop::Immediate, Ok(()));
                } else {
                    tracing::info!(
                        timeout_ms = self.cfg.shutdown_timeout.as_millis() as u64,
                        "stop signal: draining workers"
                    );
                    self.stop(Stop::Graceful, Ok(()));
                }
            }
            self.read_controls();
            self.check_ready_timeouts();
            self.reap();
            self.respawn_due();
            self.check_ready();
            if let Phase::Stopping { deadline, killed } = self.phase {
                if self.workers.iter().all(|w| w.proc.is_none()) {
                    return self.outcome.take().unwrap_or(Ok(()));
                }
                if !killed && Instant::now() >= deadline {
                    let left: Vec<u32> = self.live_pids();
                    if !left.is_empty() {
                        tracing::warn!(pids = ?left, "workers did not stop in time; sending SIGKILL");
                    }
                    self.signal_all(Signal::SIGKILL);
                    self.phase = Phase::Stopping {
                        deadline,
                        killed: true,
                    };
                }
            }
        }
    }

    fn live_pids(&self) -> Vec<u32> {
        self.workers
            .iter()
            .filter_map(|w| w.proc.as_ref().map(|p| p.pid))
            .collect()
    }

    /// Sleeps until a signal, a control message or the next deadline.
    fn wait(&self, signals: &MasterSignals) {
        let now = Instant::now();
        let mut next = now + MAX_TICK;
        for w in &self.workers {
            if let Some(at) = w.respawn_at {
                next = next.min(at);
            }
            if let Some(p) = &w.proc {
                if p.ready_at.is_none() && !p.stopping {
                    next = next.min(p.started + self.cfg.ready_timeout);
                }
                if p.eof {
                    // Its control socket closed: the process is exiting; reap it soon.
                    next = next.min(now + Duration::from_millis(5));
                }
            }
        }
        if let Phase::Stopping {
            deadline,
            killed: false,
        } = self.phase
        {
            next = next.min(deadline);
        }
        let mut fds = vec![PollFd::new(signals.as_fd(), PollFlags::POLLIN)];
        for w in &self.workers {
            if let Some(p) = w.proc.as_ref().filter(|p| !p.eof) {
                fds.push(PollFd::new(p.control.as_fd(), PollFlags::POLLIN));
            }
        }
        let ms = next.saturating_duration_since(now).as_millis().min(60_000) as u16;
        let _ = nix::poll::poll(&mut fds, PollTimeout::from(ms));
    }

    fn spawn_worker(&mut self, id: usize) {
        let w = &mut self.workers[id];
        let ctx = SpawnContext {
            worker_id: id,
            generation: w.generation,
        };
        let cmd = match self.cfg.command_producer.as_mut() {
            Some(producer) => producer(&ctx),
            None => spawn::default_command(),
        };
        let env = WorkerEnv {
            listeners: &self.listeners,
            reuseport: self.reuseport.as_deref(),
            backlog: self.backlog,
            shutdown_timeout_ms: self.cfg.shutdown_timeout.as_millis(),
            drain_grace_ms: self.cfg.drain_grace.as_millis(),
            heartbeat_ms: crate::health::heartbeat_interval(self.cfg.worker_timeout).as_millis(),
            nofile: self.cfg.nofile.env_value(),
        };
        let spawned = cmd.and_then(|cmd| spawn::spawn(cmd, id, &env));
        let (process, control) = match spawned {
            Ok(x) => x,
            Err(e) => {
                tracing::error!(worker = id, error = %e, "cannot start worker");
                self.stop(
                    Stop::Graceful,
                    Err(Error::io(format!("starting worker {id}"), e)),
                );
                return;
            }
        };
        let pid = process.id();
        w.generation += 1;
        w.respawn_at = None;
        w.proc = Some(Proc {
            process,
            pid,
            control,
            buf: Vec::new(),
            eof: false,
            started: Instant::now(),
            ready_at: None,
            error: None,
            stopping: false,
        });
        let replaced = w.replaces.take();
        tracing::info!(
            worker = id,
            pid,
            generation = w.generation,
            "worker started"
        );
        if let Some(hook) = self.cfg.on_child_spawn.as_mut() {
            if let Err(e) = hook(pid) {
                self.stop(
                    Stop::Graceful,
                    Err(Error::Hook {
                        hook: "on_child_spawn",
                        source: e,
                    }),
                );
                return;
            }
        }
        if let (Some(old), Some(hook)) = (replaced, self.cfg.on_child_recover.as_mut()) {
            hook(old, pid);
        }
    }

    /// Reads what the workers said on their control sockets.
    fn read_controls(&mut self) {
        let mut startup_failure = None;
        for w in &mut self.workers {
            let Some(p) = w.proc.as_mut() else { continue };
            if p.eof {
                continue;
            }
            let mut chunk = [0u8; 512];
            loop {
                match (&p.control).read(&mut chunk) {
                    Ok(0) => {
                        p.eof = true;
                        break;
                    }
                    Ok(n) => p.buf.extend_from_slice(&chunk[..n]),
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(_) => {
                        p.eof = true;
                        break;
                    }
                }
            }
            while let Some(end) = p.buf.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = p.buf.drain(..=end).collect();
                let line = String::from_utf8_lossy(&line[..line.len() - 1]).into_owned();
                if line == "ready" || line.starts_with("ready ") {
                    if p.ready_at.is_none() {
                        p.ready_at = Some(Instant::now());
                        tracing::debug!(worker = w.id, pid = p.pid, "worker ready");
                    }
                } else if let Some(msg) = line.strip_prefix("error ") {
                    tracing::error!(
                        worker = w.id,
                        pid = p.pid,
                        error = msg,
                        "worker failed to start"
                    );
                    p.error = Some(msg.to_owned());
                    if self.phase == Phase::Starting && startup_failure.is_none() {
                        startup_failure = Some(Error::ChildStartup {
                            worker: w.id,
                            pid: p.pid,
                            message: msg.to_owned(),
                        });
                    }
                } else {
                    tracing::debug!(worker = w.id, pid = p.pid, line, "unknown control message");
                }
            }
        }
        if let Some(e) = startup_failure {
            self.stop(Stop::Graceful, Err(e));
        }
    }

    /// Workers that did not report ready in time: during the initial start that fails the
    /// start; later the worker is killed and its exit counts as unexpected.
    fn check_ready_timeouts(&mut self) {
        let now = Instant::now();
        let timeout = self.cfg.ready_timeout;
        let mut failed = None;
        for w in &mut self.workers {
            let Some(p) = w.proc.as_mut() else { continue };
            if p.ready_at.is_some() || p.stopping || now < p.started + timeout {
                continue;
            }
            let message = format!("did not report ready within {} ms", timeout.as_millis());
            tracing::error!(worker = w.id, pid = p.pid, "worker {message}; killing it");
            let _ = kill(Pid::from_raw(p.pid as i32), Signal::SIGKILL);
            if p.error.is_none() {
                p.error = Some(message.clone());
            }
            // Counted once: from now on its exit decides (startup failure or crash).
            p.started = now + Duration::from_secs(3600 * 24 * 365);
            if self.phase == Phase::Starting && failed.is_none() {
                failed = Some(Error::ChildStartup {
                    worker: w.id,
                    pid: p.pid,
                    message,
                });
            }
        }
        if let Some(e) = failed {
            self.stop(Stop::Graceful, Err(e));
        }
    }

    /// Collects every exited worker and decides what follows.
    fn reap(&mut self) {
        let now = Instant::now();
        for id in 0..self.workers.len() {
            let w = &mut self.workers[id];
            let Some(p) = w.proc.as_mut() else { continue };
            let status = match p.process.try_wait() {
                Ok(Some(status)) => status,
                Ok(None) => continue,
                Err(e) => {
                    tracing::error!(worker = id, pid = p.pid, error = %e, "waitpid failed");
                    continue;
                }
            };
            let p = w.proc.take().expect("checked above");
            let status_text = describe(status);
            if p.stopping || matches!(self.phase, Phase::Stopping { .. }) {
                tracing::info!(worker = id, pid = p.pid, status = %status_text, "worker stopped");
                continue;
            }
            if self.phase == Phase::Starting && p.ready_at.is_none() {
                let message = p
                    .error
                    .unwrap_or_else(|| format!("exited before it was ready ({status_text})"));
                self.stop(
                    Stop::Graceful,
                    Err(Error::ChildStartup {
                        worker: id,
                        pid: p.pid,
                        message,
                    }),
                );
                continue;
            }
            tracing::warn!(worker = id, pid = p.pid, status = %status_text, "worker exited unexpectedly");
            match self.budget.record(now) {
                Err(exits) => {
                    let threshold = self.budget.threshold();
                    tracing::error!(
                        exits,
                        threshold,
                        "too many unexpected worker exits; stopping"
                    );
                    self.stop(
                        Stop::Graceful,
                        Err(Error::OverRecovery { exits, threshold }),
                    );
                }
                Ok(_) => {
                    let w = &mut self.workers[id];
                    let stable = p
                        .ready_at
                        .is_some_and(|t| now.duration_since(t) >= policy::STABLE_AFTER);
                    w.crashes = if stable { 1 } else { w.crashes + 1 };
                    let delay = policy::backoff(w.crashes);
                    w.respawn_at = Some(now + delay);
                    w.replaces = Some(p.pid);
                    tracing::info!(
                        worker = id,
                        delay_ms = delay.as_millis() as u64,
                        "respawning worker"
                    );
                }
            }
        }
    }

    fn respawn_due(&mut self) {
        if matches!(self.phase, Phase::Stopping { .. }) {
            return;
        }
        let now = Instant::now();
        for id in 0..self.workers.len() {
            if self.workers[id].respawn_at.is_some_and(|at| at <= now) {
                self.spawn_worker(id);
                if matches!(self.phase, Phase::Stopping { .. }) {
                    return;
                }
            }
        }
    }

    fn check_ready(&mut self) {
        if self.phase != Phase::Starting {
            return;
        }
        let all_ready = self
            .workers
            .iter()
            .all(|w| w.proc.as_ref().is_some_and(|p| p.ready_at.is_some()));
        if !all_ready {
            return;
        }
        self.phase = Phase::Running;
        let pids = self.live_pids();
        tracing::info!(workers = pids.len(), pids = ?pids, "all workers ready");
        if let Some(hook) = self.cfg.on_master_ready.as_mut() {
            if let Err(e) = hook(&pids) {
                self.stop(
                    Stop::Graceful,
                    Err(Error::Hook {
                        hook: "on_master_ready",
                        source: e,
                    }),
                );
            }
        }
    }

    /// Begins stopping every worker. The first outcome wins; a later immediate stop still
    /// escalates.
    fn stop(&mut self, how: Stop, outcome: Result<(), Error>) {
        if self.outcome.is_none() {
            if let Err(e) = &outcome {
                tracing::error!(error = %e, "stopping every worker");
            }
            self.outcome = Some(outcome);
        }
        for w in &mut self.workers {
            w.respawn_at = None;
        }
        let now = Instant::now();
        match how {
            Stop::Immediate => {
                self.signal_all(Signal::SIGKILL);
                self.phase = Phase::Stopping {
                    deadline: now,
                    killed: true,
                };
            }
            Stop::Graceful => {
                if matches!(self.phase, Phase::Stopping { .. }) {
                    return;
                }
                self.signal_all(Signal::SIGTERM);
                self.phase = Phase::Stopping {
                    deadline: now + self.cfg.shutdown_timeout,
                    killed: false,
                };
            }
        }
    }

    fn signal_all(&mut self, sig: Signal) {
        for w in &mut self.workers {
            if let Some(p) = w.proc.as_mut() {
                p.stopping = true;
                // The process is not reaped yet, so its pid cannot have been reused; ESRCH
                // (already exited) is harmless.
                let _ = kill(Pid::from_raw(p.pid as i32), sig);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn describe_names_signals() {
        assert_eq!(describe(ExitStatus::from_raw(9)), "signal 9 (SIGKILL)");
        assert_eq!(describe(ExitStatus::from_raw(3 << 8)), "exit status 3");
    }
}
