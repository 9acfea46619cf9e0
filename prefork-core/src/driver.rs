//! The thin driver around the [`Supervisor`]: it binds, spawns, signals, polls and reaps, and
//! turns what it sees into events. All decisions are the supervisor's.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::io::{self, Read};
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::poll::{PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{kill, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

use crate::builder::Prefork;
use crate::control::{self, ControlSocket, Request};
use crate::handle::{Command, MasterHandle, Stats, WorkerStats};
use crate::listener;
use crate::signals::MasterSignals;
use crate::spawn::{self, SpawnContext, WorkerEnv};
use crate::supervisor::{Action, Config, Event, Key, Notify, Scale, Supervisor};
use crate::Error;

/// Longest sleep of the loop: the watchdog and the lateness check need a regular tick.
const MAX_TICK: Duration = Duration::from_secs(1);
/// How often the master reads its workers' resident memory when `max_memory` is set.
const MEMORY_INTERVAL: Duration = Duration::from_secs(2);
/// Durations are capped here so that `Instant + Duration` can never overflow.
const FOREVER: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// One worker process, as the driver knows it.
#[derive(Debug)]
struct Proc {
    pid: u32,
    control: UnixStream,
    buf: Vec<u8>,
    eof: bool,
}

/// The programs workers run: image 0 is the master's own executable; each reload opens the file
/// on disk once, and respawns of that generation execute the opened file.
#[derive(Debug)]
struct Images {
    /// The path the master was started from, resolved at start.
    path: PathBuf,
    opened: BTreeMap<u64, OwnedFd>,
}

impl Images {
    /// The program to execute for `image`. `min_fd` keeps an opened image's descriptor above the
    /// slots the spawn places descriptors on.
    fn program(&mut self, image: u64, min_fd: RawFd) -> io::Result<PathBuf> {
        if image == 0 {
            return Ok(if cfg!(target_os = "linux") {
                PathBuf::from("/proc/self/exe")
            } else {
                self.path.clone()
            });
        }
        if !cfg!(target_os = "linux") {
            return Ok(self.path.clone());
        }
        if !self.opened.contains_key(&image) {
            let file = std::fs::File::open(&self.path)?;
            let high = nix::fcntl::fcntl(&file, nix::fcntl::FcntlArg::F_DUPFD_CLOEXEC(min_fd))?;
            // SAFETY: F_DUPFD_CLOEXEC just returned this descriptor; nothing else owns it.
            let fd = unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(high) };
            self.opened.insert(image, fd);
        }
        Ok(PathBuf::from(format!(
            "/proc/self/fd/{}",
            self.opened[&image].as_raw_fd()
        )))
    }
}

/// The master's entry point.
pub(crate) fn run(mut cfg: Prefork) -> Result<(), Error> {
    let n = cfg.worker_count();
    if n == 0 {
        return Err(Error::Config("workers must be at least 1, got 0".into()));
    }
    if cfg.addrs.is_empty() {
        return Err(Error::Config("no listen address was given".into()));
    }
    if !cfg.stats && cfg.max_requests.is_some() {
        return Err(Error::Config(
            "max_requests cannot work with stats(false): the master recycles a worker by the \
             requests it counts, and with stats off workers count nothing; drop one of the two"
                .into(),
        ));
    }
    if cfg.reuseport && !cfg!(target_os = "linux") {
        return Err(Error::Config(
            "SO_REUSEPORT mode needs Linux: other systems do not balance connections across \
             such sockets; use the default shared-socket mode"
                .into(),
        ));
    }
    let path = std::env::current_exe()
        .map_err(|e| Error::io("finding the program to start workers from", e))?;
    #[cfg(feature = "tls")]
    if let Some(tls) = &cfg.tls {
        tls.load()?;
    }
    let setup = crate::privilege::prepare(&cfg)?;
    let bound = listener::bind_all(&cfg.addrs, cfg.network, cfg.reuseport, cfg.backlog, n)?;
    let notifier = match crate::systemd::Notifier::from_env() {
        Ok(n) => n,
        Err(e) => {
            tracing::warn!(error = %e, "NOTIFY_SOCKET is set but unusable; not notifying systemd");
            None
        }
    };
    let control = match &cfg.control_socket {
        Some(p) => Some(ControlSocket::bind(p)?),
        None => None,
    };
    let signals = MasterSignals::install()
        .map_err(|e| Error::io("installing the master's signal handlers", e))?;
    let (wake_rx, wake_tx) =
        UnixStream::pair().map_err(|e| Error::io("creating the handle's wake-up socket", e))?;
    for s in [&wake_rx, &wake_tx] {
        s.set_nonblocking(true)
            .map_err(|e| Error::io("creating the handle's wake-up socket", e))?;
    }
    let handle = MasterHandle(cfg.handle.clone());
    *handle.0.wake.lock().unwrap_or_else(|e| e.into_inner()) = Some(wake_tx);

    // The balance table: only with a shared socket (in SO_REUSEPORT mode the kernel picks the
    // socket, and deferring an accept would only delay that worker's own queue).
    let balance = if !cfg.balance
        || bound.reuseport.is_some()
        || std::env::var_os("PREFORK_BALANCE").is_some_and(|v| v == "off")
    {
        None
    } else {
        match crate::balance::Table::create() {
            Ok(t) => Some(t),
            Err(e) => {
                tracing::debug!(error = %e, "no balance table; workers accept unbalanced");
                None
            }
        }
    };
    let cap = |d: Duration| d.min(FOREVER);
    let sup = Supervisor::new(Config {
        workers: n,
        shutdown_timeout: cap(cfg.shutdown_timeout),
        ready_timeout: cap(cfg.ready_timeout),
        shutdown_delay: cap(cfg.shutdown_delay),
        worker_timeout: cfg.worker_timeout.map(cap),
        max_requests: cfg.max_requests,
        max_requests_jitter: cfg.max_requests_jitter,
        max_memory: cfg.max_memory,
        surge: cfg.reload_surge.max(1),
        recover: cfg.recover,
    });
    cfg.shutdown_timeout = cap(cfg.shutdown_timeout);
    let mut driver = Driver {
        sup,
        procs: HashMap::new(),
        listeners: bound.listeners,
        reservations: bound.reservations,
        setup,
        notifier,
        last_ping: Instant::now(),
        reuseport: bound.reuseport,
        backlog: bound.backlog,
        images: Images {
            path,
            opened: BTreeMap::new(),
        },
        control,
        handle: handle.clone(),
        wake_rx,
        pid1: std::process::id() == 1,
        last_memory: Instant::now(),
        balance,
        balance_slots: HashMap::new(),
        #[cfg(feature = "tls")]
        tls_ticket_salt: cfg.tls.as_ref().and_then(|_| crate::tickets::new_salt()),
        #[cfg(not(feature = "tls"))]
        tls_ticket_salt: None,
        cfg,
    };
    let result = driver.run_loop(&signals);
    *handle.0.wake.lock().unwrap_or_else(|e| e.into_inner()) = None;
    result
}

struct Driver {
    cfg: Prefork,
    sup: Supervisor,
    procs: HashMap<Key, Proc>,
    listeners: Vec<OwnedFd>,
    /// Held until `run` returns: dropping it removes the Unix socket files.
    reservations: listener::Reservations,
    /// User, group, CPU and TLS hand-over for each worker.
    setup: Option<crate::privilege::WorkerSetup>,
    notifier: Option<crate::systemd::Notifier>,
    last_ping: Instant,
    reuseport: Option<String>,
    backlog: i32,
    images: Images,
    control: Option<ControlSocket>,
    handle: MasterHandle,
    wake_rx: UnixStream,
    pid1: bool,
    last_memory: Instant,
    /// The balance table (shared-socket mode), and each worker process's slot in it.
    balance: Option<crate::balance::Table>,
    balance_slots: HashMap<Key, usize>,
    /// The salt of the TLS session tickets all workers open (`crate::tickets`), with TLS.
    tls_ticket_salt: Option<String>,
}

impl Driver {
    fn run_loop(&mut self, signals: &MasterSignals) -> Result<(), Error> {
        let mut events = VecDeque::from([Event::Start]);
        loop {
            while let Some(event) = events.pop_front() {
                let actions = self.sup.on(event, Instant::now());
                for action in actions {
                    if let Some(result) = self.exec(action, &mut events) {
                        return result;
                    }
                }
            }
            self.sync_balance();
            let keep = self.sup.images_in_use();
            self.images.opened.retain(|g, _| keep.contains(g));

            self.wait(signals);

            let pending = signals.take();
            for sig in &pending.ignored {
                let name = Signal::try_from(*sig).map(|s| s.as_str()).unwrap_or("?");
                tracing::warn!(
                    signal = name,
                    "ignoring a signal that means nothing to the master"
                );
            }
            for _ in 0..pending.quit {
                events.push_back(Event::Stop { graceful: false });
            }
            for _ in 0..pending.stop {
                events.push_back(Event::Stop { graceful: true });
            }
            if pending.reload > 0 {
                tracing::info!("SIGHUP: rolling reload");
                events.push_back(Event::Reload);
            }
            for _ in 0..pending.more {
                events.push_back(Event::Scale(Scale::Up));
            }
            for _ in 0..pending.fewer {
                events.push_back(Event::Scale(Scale::Down));
            }
            self.commands(&mut events);
            self.control_requests(&mut events);
            self.read_controls(&mut events);
            self.reap(&mut events);
            if self.sup.wants_memory() && self.last_memory.elapsed() >= MEMORY_INTERVAL {
                self.last_memory = Instant::now();
                for (key, pid) in self.sup.ready_workers() {
                    if let Some(rss) = rss_bytes(pid) {
                        events.push_back(Event::Memory { key, rss });
                    }
                }
            }
            self.watchdog();
            events.push_back(Event::Tick);
        }
    }

    /// Carries out one action; `Some` ends the loop with `run`'s result.
    fn exec(&mut self, action: Action, events: &mut VecDeque<Event>) -> Option<Result<(), Error>> {
        match action {
            Action::Spawn {
                key,
                slot,
                image,
                starts,
            } => match self.spawn(key, slot, image, starts) {
                Ok((pid, control)) => {
                    self.procs.insert(
                        key,
                        Proc {
                            pid,
                            control,
                            buf: Vec::new(),
                            eof: false,
                        },
                    );
                    events.push_back(Event::Spawned { key, pid });
                    if let Some(hook) = self.cfg.on_worker_spawn.as_mut() {
                        if let Err(e) = hook(pid) {
                            events.push_back(Event::HookFailed(Error::Hook {
                                hook: "on_worker_spawn",
                                source: e,
                            }));
                        }
                    }
                }
                Err(error) => events.push_back(Event::SpawnFailed { key, error }),
            },
            Action::Signal { pid, signal } => {
                // Not reaped yet, so the pid is still our worker's; ESRCH (already exited) is
                // harmless.
                let _ = kill(Pid::from_raw(pid as i32), signal);
            }
            Action::CloseListeners => {
                self.listeners.clear();
                self.reservations.sockets.clear();
            }
            Action::AllReady { pids } => {
                if let Some(hook) = self.cfg.on_master_ready.as_mut() {
                    if let Err(e) = hook(&pids) {
                        events.push_back(Event::HookFailed(Error::Hook {
                            hook: "on_master_ready",
                            source: e,
                        }));
                    }
                }
            }
            Action::Recovered { old, new } => {
                if let Some(hook) = self.cfg.on_worker_recover.as_mut() {
                    hook(old, new);
                }
            }
            Action::Notify(n) => self.notify(n),
            Action::Done(result) => {
                self.control = None;
                return Some(result);
            }
        }
        None
    }

    fn notify(&mut self, n: Notify) {
        let Some(notifier) = &self.notifier else {
            return;
        };
        let sent = match &n {
            Notify::Ready(status) => notifier
                .mainpid(std::process::id())
                .and_then(|()| notifier.status(status))
                .and_then(|()| notifier.ready()),
            Notify::Reloading(status) => {
                notifier.reloading().and_then(|()| notifier.status(status))
            }
            Notify::Stopping => notifier.stopping(),
            Notify::Status(status) => notifier.status(status),
        };
        if let Err(e) = sent {
            tracing::debug!(error = %e, ?n, "sd_notify");
        }
    }

    /// Pings systemd's watchdog from the loop itself (a stuck master stops pinging).
    fn watchdog(&mut self) {
        let Some(notifier) = &self.notifier else {
            return;
        };
        let Some(interval) = notifier.watchdog_interval() else {
            return;
        };
        if self.last_ping.elapsed() >= interval {
            self.last_ping = Instant::now();
            if let Err(e) = notifier.watchdog() {
                tracing::debug!(error = %e, "sd_notify WATCHDOG=1");
            }
        }
    }

    /// Marks each worker process's balance slot accepting while the supervisor has it ready
    /// (not starting, not draining) and its heartbeats are on time: a worker whose event loop
    /// is stuck stops pulling the average down (the others would otherwise all be over it and
    /// accept only after their patience) long before the watchdog replaces it.
    fn sync_balance(&self) {
        let Some(table) = &self.balance else {
            return;
        };
        let late = 3 * crate::health::heartbeat_interval(self.cfg.worker_timeout);
        let accepting: std::collections::HashSet<u32> = self
            .sup
            .stats(Instant::now())
            .into_iter()
            .filter(|w| w.ready && w.heartbeat_age.is_none_or(|age| age <= late))
            .map(|w| w.pid)
            .collect();
        for (key, &i) in &self.balance_slots {
            let on = self
                .procs
                .get(key)
                .is_some_and(|p| accepting.contains(&p.pid));
            table.set_accepting(i, on);
        }
    }

    fn spawn(
        &mut self,
        key: Key,
        slot: usize,
        image: u64,
        starts: u64,
    ) -> Result<(u32, UnixStream), String> {
        let ctx = SpawnContext {
            worker_id: slot,
            generation: starts,
        };
        // The listeners, the control socket and the balance table.
        let n_fds = (self.listeners.len() + 2) as RawFd;
        let (cmd, program) = match self.cfg.command_producer.as_mut() {
            Some(producer) => {
                let cmd = producer(&ctx).map_err(|e| {
                    format!("starting worker {slot}: the command producer failed: {e}")
                })?;
                let program = PathBuf::from(cmd.get_program());
                (cmd, program)
            }
            None => {
                let path = self.images.path.clone();
                let exe = self
                    .images
                    .program(image, crate::role::FIRST_FD + n_fds + 1)
                    .map_err(|e| format!("starting worker {slot} from {}: {e}", path.display()))?;
                (spawn::default_command(&exe), path)
            }
        };
        let mut cmd = cmd;
        if let Some(setup) = &self.setup {
            setup
                .apply(&mut cmd, slot)
                .map_err(|e| format!("preparing worker {slot}: {e}"))?;
        }
        let balance_slot = self.balance.as_mut().and_then(|t| t.alloc());
        let env = WorkerEnv {
            listeners: &self.listeners,
            reuseport: self.reuseport.as_deref(),
            backlog: self.backlog,
            shutdown_timeout_ms: self.cfg.shutdown_timeout.as_millis(),
            drain_grace_ms: self.cfg.drain_grace.as_millis(),
            keepalive_ms: crate::spawn::optional_ms(self.cfg.keepalive_timeout),
            header_timeout_ms: crate::spawn::optional_ms(self.cfg.header_read_timeout),
            heartbeat_ms: if self.cfg.stats || self.cfg.worker_timeout.is_some() {
                crate::health::heartbeat_interval(self.cfg.worker_timeout).as_millis()
            } else {
                0
            },
            stats: self.cfg.stats,
            nofile: self.cfg.nofile.env_value(),
            balance: self
                .balance
                .as_ref()
                .zip(balance_slot)
                .map(|(t, i)| (t.fd(), i)),
            tls_ticket_salt: self.tls_ticket_salt.as_deref(),
        };
        let spawned = spawn::spawn(cmd, slot, &env);
        if let Some(i) = balance_slot {
            match &spawned {
                Ok(_) => {
                    self.balance_slots.insert(key, i);
                }
                Err(_) => self.balance.as_mut().into_iter().for_each(|t| t.free(i)),
            }
        }
        let (process, control) = spawned
            .map_err(|e| format!("starting worker {slot} from {}: {e}", program.display()))?;
        // Reaped with waitpid by pid (or -1 as PID 1); std's handle is not needed.
        Ok((process.id(), control))
    }

    /// Sleeps until a signal, a message, a command or the next deadline.
    fn wait(&self, signals: &MasterSignals) {
        let now = Instant::now();
        let mut next = now + MAX_TICK;
        if let Some(t) = self.sup.next_deadline() {
            next = next.min(t);
        }
        if let Some(i) = self.notifier.as_ref().and_then(|n| n.watchdog_interval()) {
            next = next.min(self.last_ping + i);
        }
        if self.procs.values().any(|p| p.eof) {
            // A control socket closed: that process is exiting; reap it soon.
            next = next.min(now + Duration::from_millis(5));
        }
        let mut fds = vec![
            PollFd::new(signals.as_fd(), PollFlags::POLLIN),
            PollFd::new(self.wake_rx.as_fd(), PollFlags::POLLIN),
        ];
        if let Some(c) = &self.control {
            for (fd, write) in c.poll_fds() {
                let mut flags = PollFlags::POLLIN;
                if write {
                    flags |= PollFlags::POLLOUT;
                }
                fds.push(PollFd::new(fd, flags));
            }
        }
        for p in self.procs.values().filter(|p| !p.eof) {
            fds.push(PollFd::new(p.control.as_fd(), PollFlags::POLLIN));
        }
        let ms = next.saturating_duration_since(now).as_millis().min(60_000) as u16;
        let _ = nix::poll::poll(&mut fds, PollTimeout::from(ms));
    }

    fn stats(&self) -> Stats {
        let mut workers: Vec<WorkerStats> = self
            .sup
            .stats(Instant::now())
            .into_iter()
            .map(|w| WorkerStats {
                id: w.id,
                pid: w.pid,
                generation: w.generation,
                state: w.state,
                ready: w.ready,
                requests: w.requests,
                connections: w.connections,
                rss_bytes: rss_bytes(w.pid).or(w.rss_bytes),
                heartbeat_age: w.heartbeat_age,
                uptime: w.uptime,
                restarts: w.restarts,
            })
            .collect();
        workers.sort_by_key(|w| (w.id, w.pid));
        Stats {
            master_pid: std::process::id(),
            workers_target: self.sup.target(),
            generation: self.sup.generation(),
            reloading: self.sup.reloading(),
            workers,
        }
    }

    fn commands(&mut self, events: &mut VecDeque<Event>) {
        let mut buf = [0u8; 64];
        while matches!((&self.wake_rx).read(&mut buf), Ok(n) if n > 0) {}
        for cmd in self.handle.take() {
            match cmd {
                Command::Reload => events.push_back(Event::Reload),
                Command::Scale(n) => events.push_back(Event::Scale(Scale::To(n))),
                Command::Stop { graceful } => events.push_back(Event::Stop { graceful }),
                Command::Stats(reply) => {
                    let _ = reply.send(self.stats());
                }
            }
        }
    }

    fn control_requests(&mut self, events: &mut VecDeque<Event>) {
        let Some(mut control) = self.control.take() else {
            return;
        };
        for (client, request) in control.service() {
            let answer = match request {
                Err(message) => control::error_line(&message),
                Ok(Request::Stats) => self.stats().to_json().to_string(),
                Ok(Request::Reload) => {
                    events.push_back(Event::Reload);
                    serde_json::json!({"ok": true, "command": "reload"}).to_string()
                }
                Ok(Request::Scale(n)) => {
                    events.push_back(Event::Scale(Scale::To(n)));
                    serde_json::json!({"ok": true, "command": "scale", "workers": n}).to_string()
                }
                Ok(Request::Stop { graceful }) => {
                    events.push_back(Event::Stop { graceful });
                    serde_json::json!({"ok": true, "command": "stop", "graceful": graceful})
                        .to_string()
                }
            };
            control.answer(client, &answer);
        }
        control.flush();
        self.control = Some(control);
    }

    /// Reads what the workers said on their control sockets.
    fn read_controls(&mut self, events: &mut VecDeque<Event>) {
        for (&key, p) in &mut self.procs {
            read_control(key, p, events);
        }
    }

    /// Collects exited workers (and, as PID 1, any orphan).
    fn reap(&mut self, events: &mut VecDeque<Event>) {
        let mut exited = Vec::new();
        if self.pid1 {
            loop {
                match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
                    Ok(WaitStatus::StillAlive) | Err(_) => break,
                    Ok(status) => {
                        if let Some(pid) = status.pid() {
                            exited.push((pid.as_raw() as u32, describe(status)));
                        }
                    }
                }
            }
        } else {
            for p in self.procs.values() {
                match waitpid(Pid::from_raw(p.pid as i32), Some(WaitPidFlag::WNOHANG)) {
                    Ok(WaitStatus::StillAlive) => {}
                    Ok(status @ (WaitStatus::Exited(..) | WaitStatus::Signaled(..))) => {
                        exited.push((p.pid, describe(status)))
                    }
                    Ok(_) => {}
                    Err(e) => {
                        tracing::error!(pid = p.pid, error = %e, "waitpid failed");
                        if e == nix::errno::Errno::ECHILD {
                            exited.push((p.pid, "already reaped".into()));
                        }
                    }
                }
            }
        }
        for (pid, status) in exited {
            match self.sup.key_of(pid) {
                Some(key) => {
                    if let (Some(t), Some(i)) =
                        (self.balance.as_mut(), self.balance_slots.remove(&key))
                    {
                        t.free(i);
                    }
                    if let Some(mut p) = self.procs.remove(&key) {
                        // What it said last (its start-up error) counts before its exit.
                        read_control(key, &mut p, events);
                    }
                    events.push_back(Event::Exited { key, status });
                }
                None => tracing::debug!(pid, status = %status, "reaped an orphaned process"),
            }
        }
    }
}

/// Reads what one worker said on its control socket, without blocking.
fn read_control(key: Key, p: &mut Proc, events: &mut VecDeque<Event>) {
    if p.eof && p.buf.is_empty() {
        return;
    }
    let mut chunk = [0u8; 1024];
    while !p.eof {
        match (&p.control).read(&mut chunk) {
            Ok(0) => p.eof = true,
            Ok(n) => p.buf.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(_) => p.eof = true,
        }
        if p.buf.len() > 64 * 1024 && !p.buf.contains(&b'\n') {
            // Not a worker of ours speaking: stop listening to it.
            p.buf.clear();
            p.eof = true;
        }
    }
    let mut last_beat = None;
    while let Some(end) = p.buf.iter().position(|&b| b == b'\n') {
        let line: Vec<u8> = p.buf.drain(..=end).collect();
        let line = String::from_utf8_lossy(&line[..line.len() - 1]).into_owned();
        match parse_message(&line) {
            Some(Message::Ready(v)) if v == crate::role::PROTOCOL_VERSION => {
                events.push_back(Event::Ready { key })
            }
            Some(Message::Ready(v)) => events.push_back(Event::StartupError {
                key,
                message: format!(
                    "it speaks prefork control protocol {v} and this master {}: restart the \
                     master with the new build (a reload cannot change the protocol)",
                    crate::role::PROTOCOL_VERSION
                ),
            }),
            Some(Message::Error(message)) => events.push_back(Event::StartupError { key, message }),
            // Only the newest beat of a batch matters.
            Some(Message::Heartbeat(r, c)) => last_beat = Some((r, c)),
            None => tracing::debug!(pid = p.pid, line, "unknown control message"),
        }
    }
    if let Some((requests, connections)) = last_beat {
        events.push_back(Event::Heartbeat {
            key,
            requests,
            connections,
        });
    }
}

enum Message {
    Ready(u32),
    Error(String),
    Heartbeat(u64, u64),
}

fn parse_message(line: &str) -> Option<Message> {
    if line == "ready" {
        return Some(Message::Ready(0));
    }
    if let Some(v) = line.strip_prefix("ready ") {
        return v.parse().ok().map(Message::Ready);
    }
    if let Some(msg) = line.strip_prefix("error ") {
        return Some(Message::Error(msg.to_owned()));
    }
    let mut it = line.strip_prefix("hb ")?.split(' ');
    let requests = it.next()?.parse().ok()?;
    let connections = it.next()?.parse().ok()?;
    Some(Message::Heartbeat(requests, connections))
}

/// "exit status 3" or "signal 9 (SIGKILL)".
pub(crate) fn describe(status: WaitStatus) -> String {
    match status {
        WaitStatus::Exited(_, code) => format!("exit status {code}"),
        WaitStatus::Signaled(_, sig, _) => format!("signal {} ({})", sig as i32, sig.as_str()),
        other => format!("{other:?}"),
    }
}

/// A process's resident memory, from `/proc/<pid>/status`.
pub(crate) fn rss_bytes(pid: u32) -> Option<u64> {
    let status =
        std::fs::read_to_string(Path::new("/proc").join(pid.to_string()).join("status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn describe_names_signals() {
        let pid = Pid::from_raw(1);
        assert_eq!(
            describe(WaitStatus::Signaled(pid, Signal::SIGKILL, false)),
            "signal 9 (SIGKILL)"
        );
        assert_eq!(describe(WaitStatus::Exited(pid, 3)), "exit status 3");
    }

    #[test]
    fn parses_worker_messages() {
        assert!(matches!(parse_message("ready 1"), Some(Message::Ready(1))));
        assert!(matches!(parse_message("ready"), Some(Message::Ready(0))));
        assert!(matches!(
            parse_message("hb 10 2"),
            Some(Message::Heartbeat(10, 2))
        ));
        assert!(matches!(parse_message("error boom"), Some(Message::Error(m)) if m == "boom"));
        assert!(parse_message("hb x").is_none());
        assert!(parse_message("garbage").is_none());
    }

    #[test]
    fn reads_our_own_memory() {
        assert!(rss_bytes(std::process::id()).unwrap() > 0);
    }
}
