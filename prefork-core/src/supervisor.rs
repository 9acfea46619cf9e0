//! The master's supervisor as a state machine: events in, actions out, no syscalls.
//!
//! [`Supervisor::on`] takes an [`Event`] (a signal, a worker's message, an exit, the passing of
//! time) and returns the [`Action`]s the driver (`driver.rs`) carries out: spawn a worker, signal
//! a pid, close the master's listeners, call a hook, tell systemd, finish. Every transition is
//! unit-tested below without a process.
//!
//! Vocabulary: a **slot** is a worker id (`0..workers`), stable across respawns; a **worker** is
//! one process in a slot, known by a [`Key`] unique for the master's life. A slot has one serving
//! worker, plus a replacement while a reload or recycle is under way. An **image** is the program
//! a worker runs: image 0 is the master's own executable; a reload creates image `g` from the
//! file on disk, and a respawn reuses the image its slot ran, so it always runs the same code as
//! its siblings, whatever happened to the file since.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use crate::policy::{self, RecoverPolicy, RecoveryBudget};
use crate::Error;

/// A worker's identity for the master's whole life (pids can be reused; keys are not).
pub(crate) type Key = u64;

/// A slot that fails to become ready this many times in a row ends the server: a broken deploy
/// or a crash loop at start-up, not a crash of a serving worker.
pub(crate) const MAX_FAILED_STARTS: u32 = 5;

/// A master whose loop did not run for this long was suspended (SIGSTOP, a paused VM): it
/// forgives the workers' silence instead of killing them.
const LATE: Duration = Duration::from_secs(3);

/// How long a hung worker gets between SIGABRT (a core dump where enabled) and SIGKILL.
const ABORT_GRACE: Duration = Duration::from_secs(1);

/// What the supervisor needs from the builder.
#[derive(Debug, Clone)]
pub(crate) struct Config {
    pub(crate) workers: usize,
    pub(crate) shutdown_timeout: Duration,
    pub(crate) ready_timeout: Duration,
    pub(crate) shutdown_delay: Duration,
    pub(crate) worker_timeout: Option<Duration>,
    pub(crate) max_requests: Option<u64>,
    pub(crate) max_requests_jitter: u64,
    pub(crate) max_memory: Option<u64>,
    pub(crate) surge: usize,
    pub(crate) recover: RecoverPolicy,
}

/// How the scale changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Scale {
    /// SIGTTIN.
    Up,
    /// SIGTTOU.
    Down,
    /// A handle's or the control socket's `scale(n)`.
    To(usize),
}

/// Something that happened.
#[derive(Debug)]
pub(crate) enum Event {
    /// The master starts: spawn every slot.
    Start,
    /// A [`Action::Spawn`] succeeded.
    Spawned { key: Key, pid: u32 },
    /// A [`Action::Spawn`] failed; `error` names the program.
    SpawnFailed { key: Key, error: String },
    /// The worker reported ready.
    Ready { key: Key },
    /// The worker reported a start-up error (it exits next).
    StartupError { key: Key, message: String },
    /// The worker's heartbeat with its counters.
    Heartbeat {
        key: Key,
        requests: u64,
        connections: u64,
    },
    /// The worker's resident memory, read by the driver.
    Memory { key: Key, rss: u64 },
    /// The worker exited (reaped); `status` is "exit status 3" or "signal 9 (SIGKILL)".
    Exited { key: Key, status: String },
    /// SIGTERM/SIGINT (graceful) or SIGQUIT (not), or a handle's `stop`.
    Stop { graceful: bool },
    /// SIGHUP or a handle's `reload`.
    Reload,
    /// SIGTTIN/SIGTTOU or a handle's `scale`.
    Scale(Scale),
    /// A hook returned an error.
    HookFailed(Error),
    /// Time passed: check deadlines.
    Tick,
}

/// What systemd (or a status line) is told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Notify {
    Ready(String),
    Reloading(String),
    Stopping,
    Status(String),
}

/// Something for the driver to do.
#[derive(Debug)]
pub(crate) enum Action {
    /// Start a worker in `slot` from `image`; answer with [`Event::Spawned`] or
    /// [`Event::SpawnFailed`]. `starts` is how many workers the slot started before.
    Spawn {
        key: Key,
        slot: usize,
        image: u64,
        starts: u64,
    },
    /// Send `signal` to `pid` (not reaped yet, so the pid is still ours).
    Signal { pid: u32, signal: Signal },
    /// The final stop began: close the master's own listener copies, so that once the workers
    /// closed theirs new connections are refused instead of queued.
    CloseListeners,
    /// Every slot is ready for the first time: call `on_master_ready`.
    AllReady { pids: Vec<u32> },
    /// A crashed worker's replacement is ready: call `on_worker_recover`.
    Recovered { old: u32, new: u32 },
    /// Tell systemd.
    Notify(Notify),
    /// No worker is left: `run` returns this.
    Done(Result<(), Error>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Starting,
    Ready,
    Draining { deadline: Instant, killed: bool },
}

/// Why a worker was started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Purpose {
    /// The slot's serving worker (first start, respawn, scale-up).
    Serve,
    /// A surge replacement of `old`: once ready, `old` drains.
    Replace { old: Key, why: Why },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Why {
    Reload,
    Recycle,
}

#[derive(Debug)]
struct Worker {
    key: Key,
    slot: usize,
    image: u64,
    pid: u32,
    state: State,
    purpose: Purpose,
    started: Instant,
    ready_at: Option<Instant>,
    /// The last heartbeat; `None` until the first (the watchdog watches only workers that beat).
    last_beat: Option<Instant>,
    requests: u64,
    connections: u64,
    rss: Option<u64>,
    /// Recycle after this many requests.
    quota: Option<u64>,
    /// Wants a recycle (quota or memory) that could not start yet.
    recycle: Option<String>,
    error: Option<String>,
    /// The master is killing it (ready timeout or watchdog).
    killed: Option<Kill>,
}

/// How far the master got in killing a worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kill {
    /// SIGABRT sent at this instant (a hung worker: a core dump where enabled); SIGKILL follows.
    Aborted(Instant),
    /// SIGKILL sent: its exit decides what follows.
    Killed,
}

impl Worker {
    fn live(&self) -> bool {
        !matches!(self.state, State::Draining { .. })
    }
}

#[derive(Debug, Default)]
struct Slot {
    image: u64,
    starts: u64,
    /// Respawns after an unexpected exit (for stats).
    restarts: u64,
    crashes: u32,
    failed_starts: u32,
    respawn_at: Option<Instant>,
    /// The pid a pending respawn replaces (for `on_worker_recover`).
    replaces: Option<u32>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Until every slot has been ready once.
    Starting,
    Running,
    /// `shutdown_delay`: still serving until then.
    Delaying {
        until: Instant,
    },
    Stopping,
}

/// One worker, for stats.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct WorkerInfo {
    pub(crate) id: usize,
    pub(crate) pid: u32,
    pub(crate) generation: u64,
    pub(crate) state: &'static str,
    pub(crate) ready: bool,
    pub(crate) requests: u64,
    pub(crate) connections: u64,
    pub(crate) rss_bytes: Option<u64>,
    pub(crate) heartbeat_age: Option<Duration>,
    pub(crate) uptime: Duration,
    pub(crate) restarts: u64,
}

/// The supervisor's state.
#[derive(Debug)]
pub(crate) struct Supervisor {
    cfg: Config,
    phase: Phase,
    slots: Vec<Slot>,
    workers: Vec<Worker>,
    next_key: Key,
    /// The newest image (bumped by each reload).
    latest_image: u64,
    /// The image the last completed reload rolled out (new slots run it).
    current_image: u64,
    /// A rolling reload under way, toward this image.
    reload: Option<u64>,
    budget: Option<RecoveryBudget>,
    outcome: Option<Result<(), Error>>,
    listeners_closed: bool,
    done: bool,
    last_tick: Option<Instant>,
    /// Seed for the `max_requests` jitter.
    jitter_seed: u64,
}

impl Supervisor {
    pub(crate) fn new(cfg: Config) -> Self {
        let budget = cfg
            .recover
            .threshold
            .map(|_| RecoveryBudget::new(cfg.recover, cfg.workers));
        let jitter_seed = {
            use std::hash::{BuildHasher, Hasher};
            let mut h = std::collections::hash_map::RandomState::new().build_hasher();
            h.write_u32(std::process::id());
            h.finish()
        };
        Supervisor {
            slots: (0..cfg.workers).map(|_| Slot::default()).collect(),
            cfg,
            phase: Phase::Starting,
            workers: Vec::new(),
            next_key: 1,
            latest_image: 0,
            current_image: 0,
            reload: None,
            budget,
            outcome: None,
            listeners_closed: false,
            done: false,
            last_tick: None,
            jitter_seed,
        }
    }

    /// Handles one event at `now`.
    pub(crate) fn on(&mut self, event: Event, now: Instant) -> Vec<Action> {
        let mut out = Vec::new();
        match event {
            Event::Start => {
                for slot in 0..self.slots.len() {
                    self.spawn(slot, Purpose::Serve, self.slots[slot].image, now, &mut out);
                }
            }
            Event::Spawned { key, pid } => {
                if let Some(w) = self.worker_mut(key) {
                    w.pid = pid;
                    tracing::info!(worker = w.slot, pid, generation = w.image, "worker started");
                }
            }
            Event::SpawnFailed { key, error } => {
                tracing::error!(error = %error, "cannot start a worker");
                if let Some(w) = self.remove(key) {
                    self.failed_start(w, error, now, &mut out);
                }
            }
            Event::Ready { key } => self.ready(key, now, &mut out),
            Event::StartupError { key, message } => {
                let starting = self.phase == Phase::Starting;
                let Some(w) = self.worker_mut(key) else {
                    return out;
                };
                tracing::error!(worker = w.slot, pid = w.pid, error = %message, "worker failed to start");
                w.error = Some(message.clone());
                if starting {
                    let (slot, pid) = (w.slot, w.pid);
                    self.stop_with(
                        Err(Error::WorkerStartup {
                            worker: slot,
                            pid,
                            message,
                        }),
                        now,
                        &mut out,
                    );
                }
            }
            Event::Heartbeat {
                key,
                requests,
                connections,
            } => {
                let running = self.phase == Phase::Running;
                let Some(w) = self.worker_mut(key) else {
                    return out;
                };
                w.last_beat = Some(now);
                w.requests = requests;
                w.connections = connections;
                if running
                    && w.state == State::Ready
                    && w.recycle.is_none()
                    && w.quota.is_some_and(|q| requests >= q)
                {
                    w.recycle = Some(format!("served {requests} requests"));
                    self.start_recycles(now, &mut out);
                }
            }
            Event::Memory { key, rss } => {
                let limit = self.cfg.max_memory;
                let running = self.phase == Phase::Running;
                let Some(w) = self.worker_mut(key) else {
                    return out;
                };
                w.rss = Some(rss);
                if let Some(limit) = limit.filter(|&l| rss > l) {
                    if running && w.state == State::Ready && w.recycle.is_none() {
                        tracing::warn!(
                            worker = w.slot,
                            pid = w.pid,
                            rss_mib = rss >> 20,
                            limit_mib = limit >> 20,
                            "worker over its memory limit; replacing it"
                        );
                        w.recycle = Some(format!("resident memory {} MiB", rss >> 20));
                        self.start_recycles(now, &mut out);
                    }
                }
            }
            Event::Exited { key, status } => {
                if let Some(w) = self.remove(key) {
                    self.exited(w, status, now, &mut out);
                }
            }
            Event::Stop { graceful } => self.stop_signal(graceful, now, &mut out),
            Event::Reload => self.begin_reload(now, &mut out),
            Event::Scale(how) => self.scale(how, now, &mut out),
            Event::HookFailed(e) => self.stop_with(Err(e), now, &mut out),
            Event::Tick => self.tick(now, &mut out),
        }
        if self.phase == Phase::Stopping && self.workers.is_empty() && !self.done {
            self.done = true;
            out.push(Action::Done(self.outcome.take().unwrap_or(Ok(()))));
        }
        out
    }

    /// The earliest instant at which a [`Event::Tick`] has something to do.
    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        let mut next: Option<Instant> = None;
        let mut at = |t: Instant| next = Some(next.map_or(t, |n| n.min(t)));
        for s in &self.slots {
            if let Some(t) = s.respawn_at {
                at(t);
            }
        }
        for w in &self.workers {
            match w.state {
                State::Starting if w.killed.is_none() => at(w.started + self.cfg.ready_timeout),
                State::Draining {
                    deadline,
                    killed: false,
                } => at(deadline),
                State::Ready => match (w.killed, self.cfg.worker_timeout, w.last_beat) {
                    (Some(Kill::Aborted(k)), _, _) => at(k + ABORT_GRACE),
                    (None, Some(t), Some(b)) => at(b + t),
                    _ => {}
                },
                _ => {}
            }
        }
        if let Phase::Delaying { until } = self.phase {
            at(until);
        }
        next
    }

    /// Images still needed by a slot or a live worker (the driver keeps those open).
    pub(crate) fn images_in_use(&self) -> BTreeSet<u64> {
        let mut s: BTreeSet<u64> = self.slots.iter().map(|s| s.image).collect();
        s.extend(self.workers.iter().map(|w| w.image));
        s.insert(self.current_image);
        if let Some(r) = self.reload {
            s.insert(r);
        }
        s
    }

    /// The worker with this pid.
    pub(crate) fn key_of(&self, pid: u32) -> Option<Key> {
        self.workers.iter().find(|w| w.pid == pid).map(|w| w.key)
    }

    /// The configured worker count (changed by scaling).
    pub(crate) fn target(&self) -> usize {
        self.slots.len()
    }

    /// Whether a rolling reload is under way.
    pub(crate) fn reloading(&self) -> bool {
        self.reload.is_some()
    }

    /// The newest image (the reload generation).
    pub(crate) fn generation(&self) -> u64 {
        self.latest_image
    }

    /// Every worker, for stats, in slot order.
    pub(crate) fn stats(&self, now: Instant) -> Vec<WorkerInfo> {
        let mut v: Vec<WorkerInfo> = self
            .workers
            .iter()
            .filter(|w| w.pid != 0)
            .map(|w| WorkerInfo {
                id: w.slot,
                pid: w.pid,
                generation: w.image,
                state: match (w.state, w.purpose) {
                    (State::Starting, _) => "starting",
                    (State::Ready, _) => "ready",
                    (State::Draining { .. }, _) => "draining",
                },
                ready: w.state == State::Ready,
                requests: w.requests,
                connections: w.connections,
                rss_bytes: w.rss,
                heartbeat_age: w.last_beat.map(|b| now.saturating_duration_since(b)),
                uptime: now.saturating_duration_since(w.started),
                restarts: self.slots.get(w.slot).map_or(0, |s| s.restarts),
            })
            .collect();
        v.sort_by_key(|w| (w.id, w.pid));
        v
    }

    /// Live workers whose memory the driver should read.
    pub(crate) fn wants_memory(&self) -> bool {
        self.cfg.max_memory.is_some()
    }

    /// Ready workers, as (key, pid).
    pub(crate) fn ready_workers(&self) -> Vec<(Key, u32)> {
        self.workers
            .iter()
            .filter(|w| w.state == State::Ready)
            .map(|w| (w.key, w.pid))
            .collect()
    }

    fn worker_mut(&mut self, key: Key) -> Option<&mut Worker> {
        self.workers.iter_mut().find(|w| w.key == key)
    }

    fn remove(&mut self, key: Key) -> Option<Worker> {
        let i = self.workers.iter().position(|w| w.key == key)?;
        Some(self.workers.remove(i))
    }

    fn spawn(
        &mut self,
        slot: usize,
        purpose: Purpose,
        image: u64,
        now: Instant,
        out: &mut Vec<Action>,
    ) {
        let key = self.next_key;
        self.next_key += 1;
        let s = &mut self.slots[slot];
        let starts = s.starts;
        s.starts += 1;
        if purpose == Purpose::Serve {
            s.respawn_at = None;
        }
        self.workers.push(Worker {
            key,
            slot,
            image,
            pid: 0,
            state: State::Starting,
            purpose,
            started: now,
            ready_at: None,
            last_beat: None,
            requests: 0,
            connections: 0,
            rss: None,
            quota: None,
            recycle: None,
            error: None,
            killed: None,
        });
        out.push(Action::Spawn {
            key,
            slot,
            image,
            starts,
        });
    }

    fn quota(&self, pid: u32) -> Option<u64> {
        let base = self.cfg.max_requests?;
        let jitter = self.cfg.max_requests_jitter;
        if jitter == 0 {
            return Some(base);
        }
        // A splitmix64 step over the seed and the pid: enough to spread workers apart.
        let mut z = self.jitter_seed ^ u64::from(pid).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        Some(base + z % (jitter + 1))
    }

    fn ready(&mut self, key: Key, now: Instant, out: &mut Vec<Action>) {
        let Some(i) = self.workers.iter().position(|w| w.key == key) else {
            return;
        };
        if self.workers[i].state != State::Starting || self.workers[i].killed.is_some() {
            return;
        }
        let quota = self.quota(self.workers[i].pid);
        let w = &mut self.workers[i];
        w.state = State::Ready;
        w.ready_at = Some(now);
        w.quota = quota;
        tracing::debug!(worker = w.slot, pid = w.pid, "worker ready");
        let (slot, pid, purpose, image) = (w.slot, w.pid, w.purpose, w.image);
        w.purpose = Purpose::Serve;
        if let Some(s) = self.slots.get_mut(slot) {
            s.failed_starts = 0;
            s.image = image;
            if let Some(old) = s.replaces.take() {
                out.push(Action::Recovered { old, new: pid });
            }
        }
        if let Purpose::Replace { old, why } = purpose {
            if let Some(o) = self.workers.iter_mut().find(|o| o.key == old) {
                tracing::info!(
                    worker = slot,
                    old_pid = o.pid,
                    new_pid = pid,
                    reason = match why {
                        Why::Reload => "reload",
                        Why::Recycle => o.recycle.as_deref().unwrap_or("recycle"),
                    },
                    "replacement ready; draining the old worker"
                );
                drain(o, now + self.cfg.shutdown_timeout, out);
            }
        }
        if self.phase == Phase::Starting && self.all_ready() {
            self.phase = Phase::Running;
            let pids: Vec<u32> = self.serving_pids();
            tracing::info!(workers = pids.len(), pids = ?pids, "all workers ready");
            out.push(Action::Notify(Notify::Ready(format!(
                "{} workers ready",
                pids.len()
            ))));
            out.push(Action::AllReady { pids });
        }
        self.continue_reload(now, out);
        self.start_recycles(now, out);
    }

    fn all_ready(&self) -> bool {
        (0..self.slots.len()).all(|slot| {
            self.workers
                .iter()
                .any(|w| w.slot == slot && w.state == State::Ready && w.purpose == Purpose::Serve)
        })
    }

    fn serving_pids(&self) -> Vec<u32> {
        let mut v: Vec<(usize, u32)> = self
            .workers
            .iter()
            .filter(|w| w.live() && w.purpose == Purpose::Serve && w.state == State::Ready)
            .map(|w| (w.slot, w.pid))
            .collect();
        v.sort();
        v.into_iter().map(|(_, p)| p).collect()
    }

    /// The slot's serving worker (not a replacement, not draining).
    fn server(&self, slot: usize) -> Option<&Worker> {
        self.workers
            .iter()
            .find(|w| w.slot == slot && w.live() && w.purpose == Purpose::Serve)
    }

    fn replacement_of(&self, old: Key) -> Option<Key> {
        self.workers.iter().find_map(|w| match w.purpose {
            Purpose::Replace { old: o, .. } if o == old && w.live() => Some(w.key),
            _ => None,
        })
    }

    fn replacements(&self, why: Option<Why>) -> usize {
        self.workers
            .iter()
            .filter(|w| {
                w.live()
                    && matches!(w.purpose, Purpose::Replace { why: y, .. } if why.is_none_or(|x| x == y))
            })
            .count()
    }

    /// A worker that never became ready is gone (exit, spawn error, ready timeout).
    fn failed_start(&mut self, w: Worker, message: String, now: Instant, out: &mut Vec<Action>) {
        if self.phase == Phase::Stopping {
            return;
        }
        if self.phase == Phase::Starting {
            self.stop_with(
                Err(Error::WorkerStartup {
                    worker: w.slot,
                    pid: w.pid,
                    message,
                }),
                now,
                out,
            );
            return;
        }
        match w.purpose {
            Purpose::Replace {
                old,
                why: Why::Reload,
            } => {
                tracing::error!(
                    worker = w.slot,
                    pid = w.pid,
                    error = %message,
                    "reload abandoned: the new worker failed to start; the other workers keep serving"
                );
                self.reload = None;
                out.push(Action::Notify(Notify::Ready(format!(
                    "reload failed: {message}"
                ))));
                let _ = old;
            }
            Purpose::Replace {
                old,
                why: Why::Recycle,
            } => {
                tracing::error!(
                    worker = w.slot,
                    pid = w.pid,
                    error = %message,
                    "recycle: the new worker failed to start; the old one keeps serving"
                );
                // Try again later, unless the slot keeps failing.
                let _ = old;
                self.count_failed_start(w.slot, &message, now, out);
            }
            Purpose::Serve => {
                if w.slot >= self.slots.len() {
                    return; // scaled down meanwhile
                }
                if self.count_failed_start(w.slot, &message, now, out) {
                    let s = &mut self.slots[w.slot];
                    let delay = policy::backoff(s.failed_starts);
                    s.respawn_at = Some(now + delay);
                    tracing::info!(
                        worker = w.slot,
                        delay_ms = delay.as_millis() as u64,
                        "respawning worker"
                    );
                }
            }
        }
    }

    /// Counts a failed start of `slot`; stops the server (returning false) after
    /// [`MAX_FAILED_STARTS`] in a row.
    fn count_failed_start(
        &mut self,
        slot: usize,
        message: &str,
        now: Instant,
        out: &mut Vec<Action>,
    ) -> bool {
        let Some(s) = self.slots.get_mut(slot) else {
            return false;
        };
        s.failed_starts += 1;
        if s.failed_starts >= MAX_FAILED_STARTS {
            let n = s.failed_starts;
            self.stop_with(
                Err(Error::Config(format!(
                    "worker {slot} failed to start {n} times in a row; last error: {message}"
                ))),
                now,
                out,
            );
            return false;
        }
        true
    }

    fn exited(&mut self, w: Worker, status: String, now: Instant, out: &mut Vec<Action>) {
        if matches!(w.state, State::Draining { .. }) || self.phase == Phase::Stopping {
            tracing::info!(worker = w.slot, pid = w.pid, status = %status, "worker stopped");
            self.continue_reload(now, out);
            self.start_recycles(now, out);
            return;
        }
        if w.state == State::Starting {
            let message = w
                .error
                .clone()
                .unwrap_or_else(|| format!("exited before it was ready ({status})"));
            tracing::warn!(worker = w.slot, pid = w.pid, status = %status, "worker exited before it was ready");
            self.failed_start(w, message, now, out);
            return;
        }
        // A serving worker crashed (or the watchdog killed it).
        tracing::warn!(worker = w.slot, pid = w.pid, status = %status, "worker exited unexpectedly");
        if let Some(budget) = self.budget.as_mut() {
            if let Err(exits) = budget.record(now) {
                let threshold = budget.threshold();
                tracing::error!(
                    exits,
                    threshold,
                    "too many unexpected worker exits; stopping"
                );
                self.stop_with(Err(Error::OverRecovery { exits, threshold }), now, out);
                return;
            }
        }
        if let Some(rkey) = self.replacement_of(w.key) {
            // Its replacement was already starting: it takes over the slot.
            if let Some(r) = self.worker_mut(rkey) {
                r.purpose = Purpose::Serve;
            }
            return;
        }
        if w.slot >= self.slots.len() {
            return;
        }
        let s = &mut self.slots[w.slot];
        let stable = w
            .ready_at
            .is_some_and(|t| now.duration_since(t) >= policy::STABLE_AFTER);
        s.crashes = if stable { 1 } else { s.crashes + 1 };
        s.restarts += 1;
        let delay = policy::backoff(s.crashes);
        s.respawn_at = Some(now + delay);
        s.replaces = Some(w.pid);
        tracing::info!(
            worker = w.slot,
            delay_ms = delay.as_millis() as u64,
            "respawning worker"
        );
    }

    fn stop_signal(&mut self, graceful: bool, now: Instant, out: &mut Vec<Action>) {
        match (graceful, self.phase) {
            (true, Phase::Stopping | Phase::Delaying { .. }) | (false, _) => {
                tracing::info!("stopping every worker now");
                self.begin_stop(false, Ok(()), now, out);
            }
            (true, _) if !self.cfg.shutdown_delay.is_zero() => {
                tracing::info!(
                    delay_ms = self.cfg.shutdown_delay.as_millis() as u64,
                    "stop signal: still accepting for the shutdown delay, then draining"
                );
                self.phase = Phase::Delaying {
                    until: now + self.cfg.shutdown_delay,
                };
                self.reload = None;
                out.push(Action::Notify(Notify::Stopping));
            }
            (true, _) => {
                tracing::info!(
                    timeout_ms = self.cfg.shutdown_timeout.as_millis() as u64,
                    "stop signal: draining workers"
                );
                self.begin_stop(true, Ok(()), now, out);
            }
        }
    }

    /// Stops everything with `outcome` (the first outcome wins).
    fn stop_with(&mut self, outcome: Result<(), Error>, now: Instant, out: &mut Vec<Action>) {
        if let Err(e) = &outcome {
            if self.outcome.is_none() {
                tracing::error!(error = %e, "stopping every worker");
            }
        }
        self.begin_stop(true, outcome, now, out);
    }

    fn begin_stop(
        &mut self,
        graceful: bool,
        outcome: Result<(), Error>,
        now: Instant,
        out: &mut Vec<Action>,
    ) {
        if self.outcome.is_none() {
            self.outcome = Some(outcome);
        }
        if self.phase != Phase::Stopping {
            out.push(Action::Notify(Notify::Stopping));
        }
        self.phase = Phase::Stopping;
        self.reload = None;
        for s in &mut self.slots {
            s.respawn_at = None;
        }
        if !self.listeners_closed {
            self.listeners_closed = true;
            out.push(Action::CloseListeners);
        }
        let deadline = now + self.cfg.shutdown_timeout;
        for w in &mut self.workers {
            if graceful {
                if w.live() {
                    drain(w, deadline, out);
                }
            } else if !matches!(w.state, State::Draining { killed: true, .. }) {
                w.state = State::Draining {
                    deadline: now,
                    killed: true,
                };
                if w.pid != 0 {
                    out.push(Action::Signal {
                        pid: w.pid,
                        signal: Signal::SIGKILL,
                    });
                }
            }
        }
    }

    fn begin_reload(&mut self, now: Instant, out: &mut Vec<Action>) {
        if self.phase != Phase::Running {
            tracing::warn!("reload requested while the master is starting or stopping; ignored");
            return;
        }
        self.latest_image += 1;
        self.reload = Some(self.latest_image);
        tracing::info!(
            generation = self.latest_image,
            workers = self.slots.len(),
            "reloading: replacing each worker with the program on disk"
        );
        out.push(Action::Notify(Notify::Reloading(format!(
            "reloading 0/{}",
            self.slots.len()
        ))));
        self.continue_reload(now, out);
    }

    fn continue_reload(&mut self, now: Instant, out: &mut Vec<Action>) {
        let Some(target) = self.reload else { return };
        if self.phase != Phase::Running {
            return;
        }
        let n = self.slots.len();
        let mut in_progress = self.replacements(Some(Why::Reload));
        let mut done = 0;
        for slot in 0..n {
            let Some(server) = self.server(slot) else {
                continue; // respawn pending: wait for it
            };
            if server.image == target && server.state == State::Ready {
                done += 1;
                continue;
            }
            if server.state != State::Ready || self.replacement_of(server.key).is_some() {
                continue;
            }
            if in_progress >= self.cfg.surge {
                continue;
            }
            let old = server.key;
            self.spawn(
                slot,
                Purpose::Replace {
                    old,
                    why: Why::Reload,
                },
                target,
                now,
                out,
            );
            in_progress += 1;
        }
        if done == n {
            self.reload = None;
            self.current_image = target;
            tracing::info!(generation = target, workers = n, "reload complete");
            out.push(Action::Notify(Notify::Ready(format!(
                "{n} workers ready (generation {target})"
            ))));
        } else {
            out.push(Action::Notify(Notify::Status(format!(
                "reloading {done}/{n}"
            ))));
        }
    }

    fn start_recycles(&mut self, now: Instant, out: &mut Vec<Action>) {
        if self.phase != Phase::Running || self.reload.is_some() {
            return;
        }
        let mut busy = self.replacements(None);
        let wanted: Vec<(Key, usize, u64)> = self
            .workers
            .iter()
            .filter(|w| {
                w.recycle.is_some() && w.state == State::Ready && w.purpose == Purpose::Serve
            })
            .map(|w| (w.key, w.slot, w.image))
            .collect();
        for (key, slot, image) in wanted {
            if busy >= self.cfg.surge {
                break;
            }
            if self.replacement_of(key).is_some() || slot >= self.slots.len() {
                continue;
            }
            if let Some(w) = self.workers.iter().find(|w| w.key == key) {
                tracing::info!(
                    worker = slot,
                    pid = w.pid,
                    reason = w.recycle.as_deref().unwrap_or(""),
                    "recycling worker: starting its replacement"
                );
            }
            self.spawn(
                slot,
                Purpose::Replace {
                    old: key,
                    why: Why::Recycle,
                },
                image,
                now,
                out,
            );
            busy += 1;
        }
    }

    fn scale(&mut self, how: Scale, now: Instant, out: &mut Vec<Action>) {
        if self.phase != Phase::Running {
            tracing::warn!("scaling requested while the master is starting or stopping; ignored");
            return;
        }
        let from = self.slots.len();
        let to = match how {
            Scale::Up => from + 1,
            Scale::Down => from.saturating_sub(1).max(1),
            Scale::To(n) => n.max(1),
        };
        if to == from {
            if how == Scale::Down {
                tracing::info!("already at one worker; not scaling down");
            }
            return;
        }
        tracing::info!(from, to, "scaling workers");
        out.push(Action::Notify(Notify::Status(format!(
            "scaling to {to} workers"
        ))));
        while self.slots.len() < to {
            let slot = self.slots.len();
            self.slots.push(Slot {
                image: self.current_image,
                ..Slot::default()
            });
            self.spawn(slot, Purpose::Serve, self.current_image, now, out);
        }
        if self.slots.len() > to {
            self.slots.truncate(to);
            let deadline = now + self.cfg.shutdown_timeout;
            for w in &mut self.workers {
                if w.slot >= to && w.live() {
                    drain(w, deadline, out);
                }
            }
        }
        self.continue_reload(now, out);
    }

    fn tick(&mut self, now: Instant, out: &mut Vec<Action>) {
        // Was the master itself suspended? Then silence proves nothing.
        if let Some(last) = self.last_tick {
            let gap = now.saturating_duration_since(last);
            if gap > LATE {
                tracing::warn!(
                    late_ms = gap.as_millis() as u64,
                    "the master was not running for a while (stopped or suspended); \
                     restarting the workers' heartbeat clocks"
                );
                for w in &mut self.workers {
                    if w.last_beat.is_some() {
                        w.last_beat = Some(now);
                    }
                }
            }
        }
        self.last_tick = Some(now);

        if let Phase::Delaying { until } = self.phase {
            if now >= until {
                tracing::info!("shutdown delay over: draining workers");
                self.begin_stop(true, Ok(()), now, out);
            }
        }

        let starting = self.phase == Phase::Starting;
        let mut startup_failure = None;
        for w in &mut self.workers {
            match w.state {
                State::Starting if w.killed.is_none() && w.pid != 0 => {
                    if now < w.started + self.cfg.ready_timeout {
                        continue;
                    }
                    let message = format!(
                        "did not report ready within {} ms",
                        self.cfg.ready_timeout.as_millis()
                    );
                    tracing::error!(worker = w.slot, pid = w.pid, "worker {message}; killing it");
                    w.killed = Some(Kill::Killed);
                    w.error.get_or_insert(message.clone());
                    out.push(Action::Signal {
                        pid: w.pid,
                        signal: Signal::SIGKILL,
                    });
                    if starting && startup_failure.is_none() {
                        startup_failure = Some(Error::WorkerStartup {
                            worker: w.slot,
                            pid: w.pid,
                            message,
                        });
                    }
                }
                State::Ready => {
                    match w.killed {
                        Some(Kill::Aborted(at)) if now >= at + ABORT_GRACE => {
                            out.push(Action::Signal {
                                pid: w.pid,
                                signal: Signal::SIGKILL,
                            });
                            w.killed = Some(Kill::Killed);
                            continue;
                        }
                        Some(_) => continue,
                        None => {}
                    }
                    let (Some(timeout), Some(beat)) = (self.cfg.worker_timeout, w.last_beat) else {
                        continue;
                    };
                    let silent = now.saturating_duration_since(beat);
                    if silent > timeout {
                        tracing::error!(
                            worker = w.slot,
                            pid = w.pid,
                            silent_ms = silent.as_millis() as u64,
                            timeout_ms = timeout.as_millis() as u64,
                            "worker stopped sending heartbeats (hung); aborting and replacing it"
                        );
                        w.killed = Some(Kill::Aborted(now));
                        out.push(Action::Signal {
                            pid: w.pid,
                            signal: Signal::SIGABRT,
                        });
                    }
                }
                State::Draining {
                    deadline,
                    killed: false,
                } if now >= deadline => {
                    tracing::warn!(
                        worker = w.slot,
                        pid = w.pid,
                        "worker did not stop within the shutdown timeout; sending SIGKILL"
                    );
                    w.state = State::Draining {
                        deadline,
                        killed: true,
                    };
                    out.push(Action::Signal {
                        pid: w.pid,
                        signal: Signal::SIGKILL,
                    });
                }
                _ => {}
            }
        }
        if let Some(e) = startup_failure {
            self.stop_with(Err(e), now, out);
        }

        if self.phase != Phase::Stopping {
            for slot in 0..self.slots.len() {
                if self.slots[slot].respawn_at.is_some_and(|t| t <= now)
                    && self.server(slot).is_none()
                {
                    let image = self.slots[slot].image;
                    self.spawn(slot, Purpose::Serve, image, now, out);
                } else if self.slots[slot].respawn_at.is_some_and(|t| t <= now) {
                    self.slots[slot].respawn_at = None;
                }
            }
        }
        self.start_recycles(now, out);
    }
}

fn drain(w: &mut Worker, deadline: Instant, out: &mut Vec<Action>) {
    w.state = State::Draining {
        deadline,
        killed: false,
    };
    if w.pid != 0 {
        out.push(Action::Signal {
            pid: w.pid,
            signal: Signal::SIGTERM,
        });
    }
}

#[cfg(test)]
mod tests;
