//! Sequences of the supervisor's state machine, without a process: a harness plays the driver,
//! giving each spawned worker a pid and recording the signals sent.

use std::collections::VecDeque;

use super::*;

fn config(workers: usize) -> Config {
    Config {
        workers,
        shutdown_timeout: Duration::from_secs(30),
        ready_timeout: Duration::from_secs(60),
        shutdown_delay: Duration::ZERO,
        worker_timeout: Some(Duration::from_secs(30)),
        max_requests: None,
        max_requests_jitter: 0,
        max_memory: None,
        surge: 1,
        recover: RecoverPolicy::default(),
    }
}

/// Plays the driver: spawns always succeed with increasing pids (unless `fail_spawns`).
struct Harness {
    sup: Supervisor,
    now: Instant,
    next_pid: u32,
    /// key → pid of every spawned worker.
    spawned: Vec<(Key, u32, usize, u64)>,
    signals: Vec<(u32, Signal)>,
    notes: Vec<Notify>,
    done: Option<Result<(), Error>>,
    all_ready: Vec<Vec<u32>>,
    recovered: Vec<(u32, u32)>,
    closed: bool,
    fail_spawns: bool,
}

impl Harness {
    fn new(cfg: Config) -> Self {
        let mut h = Harness {
            sup: Supervisor::new(cfg),
            now: Instant::now(),
            next_pid: 100,
            spawned: Vec::new(),
            signals: Vec::new(),
            notes: Vec::new(),
            done: None,
            all_ready: Vec::new(),
            recovered: Vec::new(),
            closed: false,
            fail_spawns: false,
        };
        h.send(Event::Start);
        h
    }

    /// Starts and makes every initial worker ready.
    fn running(cfg: Config) -> Self {
        let n = cfg.workers;
        let mut h = Harness::new(cfg);
        for pid in h.pids_spawned().into_iter().take(n) {
            h.ready(pid);
        }
        assert_eq!(h.all_ready.len(), 1);
        h
    }

    fn send(&mut self, event: Event) {
        let mut queue = VecDeque::from([event]);
        while let Some(e) = queue.pop_front() {
            for a in self.sup.on(e, self.now) {
                match a {
                    Action::Spawn {
                        key, slot, image, ..
                    } => {
                        if self.fail_spawns {
                            queue.push_back(Event::SpawnFailed {
                                key,
                                error: "starting worker: No such file or directory".into(),
                            });
                        } else {
                            let pid = self.next_pid;
                            self.next_pid += 1;
                            self.spawned.push((key, pid, slot, image));
                            queue.push_back(Event::Spawned { key, pid });
                        }
                    }
                    Action::Signal { pid, signal } => self.signals.push((pid, signal)),
                    Action::CloseListeners => self.closed = true,
                    Action::AllReady { pids } => self.all_ready.push(pids),
                    Action::Recovered { old, new } => self.recovered.push((old, new)),
                    Action::Notify(n) => self.notes.push(n),
                    Action::Done(r) => {
                        assert!(self.done.is_none(), "Done twice");
                        self.done = Some(r);
                    }
                }
            }
        }
    }

    fn key(&self, pid: u32) -> Key {
        self.spawned.iter().find(|s| s.1 == pid).expect("spawned").0
    }

    fn pids_spawned(&self) -> Vec<u32> {
        self.spawned.iter().map(|s| s.1).collect()
    }

    fn last_pid(&self) -> u32 {
        self.spawned.last().expect("a spawn").1
    }

    fn image_of(&self, pid: u32) -> u64 {
        self.spawned.iter().find(|s| s.1 == pid).expect("spawned").3
    }

    fn ready(&mut self, pid: u32) {
        let key = self.key(pid);
        self.send(Event::Ready { key });
    }

    fn exit(&mut self, pid: u32, status: &str) {
        let key = self.key(pid);
        self.send(Event::Exited {
            key,
            status: status.into(),
        });
    }

    fn beat(&mut self, pid: u32, requests: u64) {
        let key = self.key(pid);
        self.send(Event::Heartbeat {
            key,
            requests,
            connections: 1,
        });
    }

    fn advance(&mut self, d: Duration) {
        self.now += d;
        self.send(Event::Tick);
    }

    fn signalled(&self, pid: u32, sig: Signal) -> bool {
        self.signals.contains(&(pid, sig))
    }

    /// Exits every worker that got SIGTERM or SIGKILL and has not exited yet.
    fn exit_signalled(&mut self) {
        let pids: Vec<u32> = self
            .signals
            .iter()
            .filter(|(_, s)| matches!(s, Signal::SIGTERM | Signal::SIGKILL))
            .map(|(p, _)| *p)
            .collect();
        for pid in pids {
            if self.sup.key_of(pid).is_some() {
                self.exit(pid, "exit status 0");
            }
        }
    }

    fn serving(&self) -> Vec<u32> {
        self.sup
            .stats(self.now)
            .into_iter()
            .filter(|w| w.ready)
            .map(|w| w.pid)
            .collect()
    }
}

#[test]
fn starts_every_worker_and_reports_ready_once_all_are() {
    let mut h = Harness::new(config(2));
    assert_eq!(h.pids_spawned(), vec![100, 101]);
    h.ready(100);
    assert!(h.all_ready.is_empty());
    h.ready(101);
    assert_eq!(h.all_ready, vec![vec![100, 101]]);
    assert!(matches!(h.notes.last(), Some(Notify::Ready(_))));
}

#[test]
fn sigterm_drains_and_a_second_one_kills() {
    let mut h = Harness::running(config(2));
    h.send(Event::Stop { graceful: true });
    assert!(
        h.closed,
        "the master closes its listener copies when the stop begins"
    );
    assert!(h.signalled(100, Signal::SIGTERM) && h.signalled(101, Signal::SIGTERM));
    assert!(h.notes.contains(&Notify::Stopping));
    h.send(Event::Stop { graceful: true });
    assert!(h.signalled(100, Signal::SIGKILL) && h.signalled(101, Signal::SIGKILL));
    h.exit(100, "signal 9 (SIGKILL)");
    assert!(h.done.is_none());
    h.exit(101, "signal 9 (SIGKILL)");
    assert!(matches!(h.done, Some(Ok(()))));
}

#[test]
fn the_shutdown_timeout_ends_in_sigkill() {
    let mut h = Harness::running(config(1));
    h.send(Event::Stop { graceful: true });
    h.advance(Duration::from_secs(29));
    assert!(!h.signalled(100, Signal::SIGKILL));
    h.advance(Duration::from_secs(2));
    assert!(h.signalled(100, Signal::SIGKILL));
}

#[test]
fn shutdown_delay_keeps_serving_then_drains() {
    let mut cfg = config(1);
    cfg.shutdown_delay = Duration::from_secs(5);
    let mut h = Harness::running(cfg);
    h.send(Event::Stop { graceful: true });
    assert!(!h.signalled(100, Signal::SIGTERM) && !h.closed);
    h.advance(Duration::from_secs(6));
    assert!(h.signalled(100, Signal::SIGTERM) && h.closed);
}

#[test]
fn a_crashed_worker_is_always_respawned_and_recovered() {
    let mut h = Harness::running(config(2));
    for round in 0..10 {
        let victim = h.serving()[0];
        h.exit(victim, "signal 9 (SIGKILL)");
        assert!(
            h.done.is_none(),
            "round {round}: the server must not give up"
        );
        h.advance(Duration::from_secs(6)); // past any backoff
        let new = h.last_pid();
        h.ready(new);
        assert!(h.recovered.contains(&(victim, new)));
        h.advance(Duration::from_secs(11)); // stable again
    }
}

#[test]
fn a_configured_budget_keeps_fasthttps_semantics() {
    let mut cfg = config(2);
    cfg.recover.threshold = Some(1);
    let mut h = Harness::running(cfg);
    h.exit(100, "exit status 3");
    assert!(h.done.is_none());
    h.advance(Duration::from_secs(1));
    let new = h.last_pid();
    h.ready(new);
    h.exit(new, "exit status 3");
    h.exit_signalled();
    assert!(matches!(
        h.done,
        Some(Err(Error::OverRecovery {
            exits: 2,
            threshold: 1
        }))
    ));
}

#[test]
fn a_slot_that_keeps_failing_to_start_ends_the_server() {
    let mut h = Harness::running(config(2));
    h.exit(100, "signal 9 (SIGKILL)");
    for i in 0..MAX_FAILED_STARTS {
        h.advance(Duration::from_secs(6));
        let pid = h.last_pid();
        assert_ne!(pid, 100);
        h.exit(pid, "exit status 1");
        if i + 1 < MAX_FAILED_STARTS {
            assert!(h.done.is_none());
        }
    }
    h.exit_signalled();
    match &h.done {
        Some(Err(e)) => assert!(e.to_string().contains("failed to start 5 times"), "{e}"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_spawn_failure_after_start_up_is_a_failed_start_not_the_end() {
    let mut h = Harness::running(config(2));
    h.fail_spawns = true;
    h.exit(100, "signal 9 (SIGKILL)");
    h.advance(Duration::from_secs(1));
    assert!(h.done.is_none());
    h.fail_spawns = false;
    h.advance(Duration::from_secs(1));
    let pid = h.last_pid();
    h.ready(pid);
    assert_eq!(h.serving().len(), 2);
}

#[test]
fn an_initial_start_up_error_stops_everything() {
    let mut h = Harness::new(config(2));
    h.ready(100);
    let key = h.key(101);
    h.send(Event::StartupError {
        key,
        message: "cannot read config.toml".into(),
    });
    assert!(h.signalled(100, Signal::SIGTERM));
    h.exit(101, "exit status 1");
    h.exit(100, "exit status 0");
    match &h.done {
        Some(Err(Error::WorkerStartup {
            worker: 1, message, ..
        })) => {
            assert_eq!(message, "cannot read config.toml")
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_ready_timeout_at_start_fails_the_start() {
    let mut h = Harness::new(config(1));
    h.advance(Duration::from_secs(61));
    assert!(h.signalled(100, Signal::SIGKILL));
    h.exit(100, "signal 9 (SIGKILL)");
    assert!(
        matches!(&h.done, Some(Err(Error::WorkerStartup { message, .. })) if message.contains("did not report ready"))
    );
}

#[test]
fn reload_replaces_one_worker_at_a_time_gated_on_ready() {
    let mut h = Harness::running(config(2));
    h.send(Event::Reload);
    assert!(matches!(
        h.notes.last(),
        Some(Notify::Reloading(_)) | Some(Notify::Status(_))
    ));
    let first = h.last_pid();
    assert_eq!(h.image_of(first), 1, "a reload runs the program on disk");
    assert_eq!(
        h.pids_spawned().len(),
        3,
        "surge 1: one replacement at a time"
    );
    assert!(
        !h.signalled(100, Signal::SIGTERM),
        "the old one drains only once the new is ready"
    );
    h.ready(first);
    assert!(h.signalled(100, Signal::SIGTERM));
    let second = h.last_pid();
    assert_ne!(second, first);
    h.exit(100, "exit status 0");
    h.ready(second);
    assert!(h.signalled(101, Signal::SIGTERM));
    h.exit(101, "exit status 0");
    assert!(!h.sup.reloading());
    assert_eq!(h.serving(), vec![first, second]);
    assert!(matches!(h.notes.last(), Some(Notify::Ready(_))));
}

#[test]
fn a_failed_replacement_abandons_the_reload_and_keeps_the_old_workers() {
    let mut h = Harness::running(config(2));
    h.send(Event::Reload);
    let new = h.last_pid();
    let key = h.key(new);
    h.send(Event::StartupError {
        key,
        message: "bad certificate".into(),
    });
    h.exit(new, "exit status 1");
    assert!(h.done.is_none());
    assert!(!h.sup.reloading());
    assert_eq!(h.serving(), vec![100, 101]);
    assert!(!h.signalled(100, Signal::SIGTERM));
    assert!(matches!(h.notes.last(), Some(Notify::Ready(s)) if s.contains("bad certificate")));
    // A later reload tries again.
    h.send(Event::Reload);
    let again = h.last_pid();
    assert_ne!(again, new);
    assert_eq!(h.image_of(again), 2);
}

#[test]
fn a_replacement_that_never_gets_ready_is_killed_and_abandons_the_reload() {
    let mut h = Harness::running(config(1));
    h.send(Event::Reload);
    let new = h.last_pid();
    h.advance(Duration::from_secs(61));
    assert!(h.signalled(new, Signal::SIGKILL));
    h.exit(new, "signal 9 (SIGKILL)");
    assert!(h.done.is_none() && !h.sup.reloading());
    assert_eq!(h.serving(), vec![100]);
}

#[test]
fn a_crash_during_a_reload_is_respawned_and_the_reload_completes() {
    let mut h = Harness::running(config(2));
    h.send(Event::Reload);
    let r0 = h.last_pid(); // replacing 100
    h.exit(101, "signal 9 (SIGKILL)"); // the other one crashes meanwhile
    h.ready(r0);
    h.exit(100, "exit status 0");
    h.advance(Duration::from_secs(1)); // respawn of slot 1, from its old image
    let respawned = h.last_pid();
    assert_eq!(h.image_of(respawned), 0);
    h.ready(respawned);
    // ... which the reload then replaces.
    let r1 = h.last_pid();
    assert_eq!(h.image_of(r1), 1);
    h.ready(r1);
    h.exit(respawned, "exit status 0");
    assert!(!h.sup.reloading());
    assert_eq!(h.serving(), vec![r0, r1]);
}

#[test]
fn the_old_worker_crashing_during_its_replacement_hands_over_to_it() {
    let mut h = Harness::running(config(1));
    h.send(Event::Reload);
    let new = h.last_pid();
    h.exit(100, "signal 11 (SIGSEGV)");
    h.advance(Duration::from_secs(1));
    assert_eq!(
        h.last_pid(),
        new,
        "no respawn: the replacement takes the slot"
    );
    h.ready(new);
    assert_eq!(h.serving(), vec![new]);
    assert!(!h.sup.reloading());
}

#[test]
fn a_stop_during_a_reload_stops_old_and_new() {
    let mut h = Harness::running(config(2));
    h.send(Event::Reload);
    let new = h.last_pid();
    h.send(Event::Stop { graceful: true });
    for pid in [100, 101, new] {
        assert!(h.signalled(pid, Signal::SIGTERM), "{pid}");
    }
    h.exit_signalled();
    assert!(matches!(h.done, Some(Ok(()))));
}

#[test]
fn hup_during_a_reload_restarts_the_rollout_on_the_newest_program() {
    let mut h = Harness::running(config(2));
    h.send(Event::Reload);
    let r0 = h.last_pid();
    h.send(Event::Reload);
    h.ready(r0); // image 1, already behind
    h.exit(100, "exit status 0");
    // Every worker not on image 2 is replaced, including the one just started.
    let mut rounds = 0;
    while h.sup.reloading() && rounds < 10 {
        rounds += 1;
        let pid = h.last_pid();
        h.ready(pid);
        h.exit_signalled();
    }
    let images: Vec<u64> = h.serving().iter().map(|&p| h.image_of(p)).collect();
    assert_eq!(images, vec![2, 2]);
}

#[test]
fn ttin_adds_a_worker_and_ttou_drains_one_never_below_one() {
    let mut h = Harness::running(config(2));
    h.send(Event::Scale(Scale::Up));
    let new = h.last_pid();
    assert_eq!(h.sup.target(), 3);
    h.ready(new);
    h.send(Event::Scale(Scale::Down));
    assert!(
        h.signalled(new, Signal::SIGTERM),
        "the highest worker id leaves"
    );
    h.exit(new, "exit status 0");
    h.send(Event::Scale(Scale::Down));
    h.exit_signalled();
    h.send(Event::Scale(Scale::Down));
    assert_eq!(h.sup.target(), 1);
    assert_eq!(h.serving(), vec![100]);
    // A later crash respawns only what the new count keeps.
    h.exit(100, "signal 9 (SIGKILL)");
    h.advance(Duration::from_secs(1));
    assert_eq!(h.sup.stats(h.now).len(), 1);
}

#[test]
fn ttou_during_a_reload_drains_the_slot_and_the_reload_completes() {
    let mut h = Harness::running(config(2));
    h.send(Event::Reload);
    let r0 = h.last_pid();
    h.send(Event::Scale(Scale::Down)); // slot 1 (pid 101) leaves
    assert!(h.signalled(101, Signal::SIGTERM));
    h.exit(101, "exit status 0");
    h.ready(r0);
    h.exit(100, "exit status 0");
    assert!(!h.sup.reloading());
    assert_eq!(h.serving(), vec![r0]);
}

#[test]
fn the_watchdog_aborts_then_kills_a_silent_worker_and_replaces_it() {
    let mut cfg = config(2);
    cfg.worker_timeout = Some(Duration::from_secs(2));
    let mut h = Harness::running(cfg);
    h.beat(100, 1);
    h.beat(101, 1);
    for _ in 0..3 {
        h.now += Duration::from_millis(900);
        h.beat(101, 1); // 101 stays healthy
        h.send(Event::Tick);
    }
    assert!(h.signalled(100, Signal::SIGABRT));
    assert!(!h.signalled(101, Signal::SIGABRT));
    h.advance(Duration::from_millis(1100));
    assert!(h.signalled(100, Signal::SIGKILL));
    h.exit(100, "signal 9 (SIGKILL)");
    h.advance(Duration::from_millis(100));
    assert_eq!(h.last_pid(), 102, "replaced");
}

#[test]
fn a_worker_that_never_beat_is_not_watched() {
    let mut cfg = config(1);
    cfg.worker_timeout = Some(Duration::from_secs(2));
    let mut h = Harness::running(cfg);
    h.advance(Duration::from_secs(1));
    h.advance(Duration::from_secs(1));
    h.advance(Duration::from_secs(1));
    assert!(h.signals.is_empty());
}

#[test]
fn a_suspended_master_does_not_kill_its_workers_when_it_resumes() {
    let mut cfg = config(2);
    cfg.worker_timeout = Some(Duration::from_secs(2));
    let mut h = Harness::running(cfg);
    h.beat(100, 1);
    h.beat(101, 1);
    h.advance(Duration::from_millis(500));
    h.advance(Duration::from_secs(10)); // the master was stopped for 10 s
    assert!(h.signals.is_empty(), "{:?}", h.signals);
    h.advance(Duration::from_millis(500));
    assert!(h.signals.is_empty(), "{:?}", h.signals);
}

#[test]
fn a_draining_worker_is_judged_by_the_shutdown_timeout_not_the_heartbeat() {
    let mut cfg = config(1);
    cfg.worker_timeout = Some(Duration::from_secs(2));
    let mut h = Harness::running(cfg);
    h.beat(100, 1);
    h.send(Event::Stop { graceful: true });
    for _ in 0..10 {
        h.advance(Duration::from_secs(1));
    }
    assert!(!h.signalled(100, Signal::SIGABRT) && !h.signalled(100, Signal::SIGKILL));
}

#[test]
fn max_requests_recycles_surge_first() {
    let mut cfg = config(2);
    cfg.max_requests = Some(100);
    let mut h = Harness::running(cfg);
    h.beat(100, 99);
    assert_eq!(h.pids_spawned().len(), 2);
    h.beat(100, 100);
    let new = h.last_pid();
    assert_eq!(h.pids_spawned().len(), 3);
    assert!(!h.signalled(100, Signal::SIGTERM), "capacity first");
    assert_eq!(h.serving().len(), 2);
    h.ready(new);
    assert!(h.signalled(100, Signal::SIGTERM));
    h.exit(100, "exit status 0");
    assert_eq!(h.serving(), vec![new, 101]);
    // Recycling is not a crash: nothing counts toward a failure.
    assert!(h.recovered.is_empty());
}

#[test]
fn recycles_wait_for_each_other_within_the_surge() {
    let mut cfg = config(2);
    cfg.max_requests = Some(10);
    let mut h = Harness::running(cfg);
    h.beat(100, 10);
    h.beat(101, 10);
    assert_eq!(h.pids_spawned().len(), 3, "one at a time");
    let a = h.last_pid();
    h.ready(a);
    h.exit(100, "exit status 0");
    assert_eq!(h.pids_spawned().len(), 4, "then the next");
}

#[test]
fn jitter_spreads_quotas_within_bounds() {
    let mut cfg = config(1);
    cfg.max_requests = Some(1000);
    cfg.max_requests_jitter = 100;
    let sup = Supervisor::new(cfg);
    let quotas: BTreeSet<u64> = (1..50).map(|pid| sup.quota(pid).unwrap()).collect();
    assert!(quotas.iter().all(|&q| (1000..=1100).contains(&q)));
    assert!(quotas.len() > 5, "{quotas:?}");
}

#[test]
fn max_memory_recycles_a_worker_over_the_limit() {
    let mut cfg = config(1);
    cfg.max_memory = Some(64 << 20);
    let mut h = Harness::running(cfg);
    let key = h.key(100);
    h.send(Event::Memory { key, rss: 32 << 20 });
    assert_eq!(h.pids_spawned().len(), 1);
    h.send(Event::Memory {
        key,
        rss: 128 << 20,
    });
    assert_eq!(h.pids_spawned().len(), 2);
    let new = h.last_pid();
    h.ready(new);
    assert!(h.signalled(100, Signal::SIGTERM));
}

#[test]
fn reload_and_scale_are_ignored_while_starting() {
    let mut h = Harness::new(config(1));
    h.send(Event::Reload);
    h.send(Event::Scale(Scale::Up));
    assert_eq!(h.pids_spawned().len(), 1);
    assert!(!h.sup.reloading());
}

#[test]
fn a_hook_failure_stops_everything_with_its_error() {
    let mut h = Harness::running(config(1));
    h.send(Event::HookFailed(Error::Hook {
        hook: "on_master_ready",
        source: "nope".into(),
    }));
    h.exit_signalled();
    assert!(matches!(h.done, Some(Err(Error::Hook { .. }))));
}

#[test]
fn next_deadline_covers_ready_timeouts_and_respawns() {
    let mut h = Harness::new(config(1));
    let start = h.now;
    assert_eq!(h.sup.next_deadline(), Some(start + Duration::from_secs(60)));
    h.ready(100);
    assert_eq!(h.sup.next_deadline(), None);
    h.exit(100, "signal 9 (SIGKILL)");
    assert_eq!(
        h.sup.next_deadline(),
        Some(start + policy::backoff(1)),
        "the respawn's backoff"
    );
}
