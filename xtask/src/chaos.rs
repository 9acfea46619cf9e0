//! `cargo xtask chaos`: the fault scenarios under load, counted.
//!
//! For each scenario and adapter: start the contract program (release build, 2 workers unless the
//! scenario says otherwise), drive it with the project's own load client (keep-alive connections
//! and new-connection-per-request, counting every failure by kind), inject the fault, then check
//! the aftermath: worker count, no zombie, no process left after the stop, the master's open fds
//! and memory unchanged. Markdown and JSON go to `target/chaos/`; the command fails when a
//! scenario loses what it promised not to.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::{Args, ValueEnum};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use prefork_testutil::load::{Load, LoadConfig, Report};
use prefork_testutil::{alive, children_of, process_state, temp_dir, wait_until, Server};

/// `cargo xtask chaos` options.
#[derive(Args, Debug)]
pub(crate) struct ChaosArgs {
    /// Adapters to run (default: all).
    #[arg(long, value_enum, value_delimiter = ',')]
    adapters: Vec<Adapter>,
    /// Scenarios to run (default: all).
    #[arg(long, value_enum, value_delimiter = ',')]
    scenarios: Vec<Scenario>,
    /// Seconds of load for the scenarios that run for a time (recycling).
    #[arg(long, default_value_t = 10)]
    duration: u64,
    /// A few seconds per scenario and fewer repetitions (what CI runs).
    #[arg(long)]
    quick: bool,
    /// Skip building the contract programs (they are already built).
    #[arg(long)]
    no_build: bool,
    /// Use the debug builds (`target/debug/examples`, what `cargo test` builds) instead of
    /// release builds.
    #[arg(long)]
    debug: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, ValueEnum)]
enum Adapter {
    Std,
    Hyper,
    Axum,
    Actix,
    Smol,
}

impl Adapter {
    const ALL: [Adapter; 5] = [
        Adapter::Std,
        Adapter::Hyper,
        Adapter::Axum,
        Adapter::Actix,
        Adapter::Smol,
    ];

    fn program(self) -> &'static str {
        match self {
            Adapter::Std => "std_hello",
            Adapter::Hyper => "hyper_hello",
            Adapter::Axum => "axum_hello",
            Adapter::Actix => "actix_hello",
            Adapter::Smol => "smol_hello",
        }
    }

    fn name(self) -> &'static str {
        match self {
            Adapter::Std => "std",
            Adapter::Hyper => "hyper",
            Adapter::Axum => "axum",
            Adapter::Actix => "actix",
            Adapter::Smol => "smol",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, ValueEnum)]
enum Scenario {
    KillWorker,
    Reload,
    Scale,
    MaxRequests,
    MaxMemory,
    HungWorker,
    StoppedWorker,
    StoppedMaster,
    KillMaster,
    Sigterm,
    ReplacedBinary,
    CrashLoop,
    SignalStorm,
    Respawns,
    SlowClients,
    BadInput,
    Pid1,
}

impl Scenario {
    const ALL: [Scenario; 17] = [
        Scenario::KillWorker,
        Scenario::Reload,
        Scenario::Scale,
        Scenario::MaxRequests,
        Scenario::MaxMemory,
        Scenario::HungWorker,
        Scenario::StoppedWorker,
        Scenario::StoppedMaster,
        Scenario::KillMaster,
        Scenario::Sigterm,
        Scenario::ReplacedBinary,
        Scenario::CrashLoop,
        Scenario::SignalStorm,
        Scenario::Respawns,
        Scenario::SlowClients,
        Scenario::BadInput,
        Scenario::Pid1,
    ];

    fn name(self) -> String {
        self.to_possible_value()
            .map(|v| v.get_name().to_owned())
            .unwrap_or_default()
    }

    fn promise(self) -> &'static str {
        match self {
            Scenario::KillWorker => "only the killed worker's in-flight requests fail; replaced each time",
            Scenario::Reload => "0 failed requests over rolling reloads (HUP)",
            Scenario::Scale => "0 failed requests over TTIN x3, TTOU x3; ends with 2 workers",
            Scenario::MaxRequests => "0 failed requests while workers recycle by --max-requests",
            Scenario::MaxMemory => "leaking worker replaced within 10 s; 0 failed on other connections",
            Scenario::HungWorker => "a blocked worker is replaced within timeout + 3 s; the other serves throughout",
            Scenario::StoppedWorker => "a SIGSTOPped worker is replaced within timeout + 3 s; the other serves throughout",
            Scenario::StoppedMaster => "master stopped past the worker timeout, then resumed: no worker killed",
            Scenario::KillMaster => "every worker gone within 1 s; the port can be bound again at once",
            Scenario::Sigterm => "slow requests in flight complete with 200; exit 0; new connections refused, not hung",
            Scenario::ReplacedBinary => "binary replaced + worker killed: serving; broken binary + HUP: old generation kept",
            Scenario::CrashLoop => "workers that exit 1 at start: error within a few seconds, no spin, no zombie",
            Scenario::SignalStorm => "500 mixed HUP/TTIN/TTOU/USR1 in 2 s: converges to its target; no zombie; fds unchanged",
            Scenario::Respawns => "1000 worker replacements: master fds and memory unchanged",
            Scenario::SlowClients => "2000 connections sending one byte a second: others still served",
            Scenario::BadInput => "oversized headers, garbage, half-open TLS: connection closed, no worker restarts",
            Scenario::Pid1 => "as PID 1 in a pid namespace: serves, SIGTERM exits 0, orphans reaped",
        }
    }
}

/// What one scenario run measured.
#[derive(Debug)]
struct Outcome {
    held: bool,
    report: Report,
    notes: Vec<String>,
    skipped: Option<String>,
    secs: f64,
}

impl Outcome {
    fn new() -> Self {
        Outcome {
            held: true,
            report: Report::default(),
            notes: Vec::new(),
            skipped: None,
            secs: 0.0,
        }
    }

    /// Records a check: the promise holds only if every check does.
    fn check(&mut self, ok: bool, what: impl Into<String>) {
        let what = what.into();
        if !ok {
            self.held = false;
            self.notes.push(format!("FAILED: {what}"));
        }
    }

    fn note(&mut self, what: impl Into<String>) {
        self.notes.push(what.into());
    }

    fn skip(why: &str) -> Self {
        let mut o = Outcome::new();
        o.skipped = Some(why.to_owned());
        o
    }
}

struct Ctx {
    bin: PathBuf,
    adapter: Adapter,
    quick: bool,
    duration: Duration,
}

impl Ctx {
    fn start(&self, extra: &[&str]) -> Server {
        let mut args = vec!["--addr", "127.0.0.1:0", "--workers", "2"];
        args.extend_from_slice(extra);
        let s = Server::start(&self.bin, &args);
        s.wait_ready();
        s
    }

    fn reps(&self, full: usize, quick: usize) -> usize {
        if self.quick {
            quick
        } else {
            full
        }
    }
}

pub(crate) fn run(args: ChaosArgs) -> Result<()> {
    let root = crate::project_root();
    if !args.no_build {
        let mut cmd = crate::cargo();
        cmd.args(["build", "--workspace", "--examples"]);
        if !args.debug {
            cmd.arg("--release");
        }
        crate::run(cmd.current_dir(&root))?;
    }
    let adapters = if args.adapters.is_empty() {
        Adapter::ALL.to_vec()
    } else {
        args.adapters.clone()
    };
    let scenarios = if args.scenarios.is_empty() {
        Scenario::ALL.to_vec()
    } else {
        args.scenarios.clone()
    };
    let examples = root
        .join("target")
        .join(if args.debug { "debug" } else { "release" })
        .join("examples");
    let duration = Duration::from_secs(if args.quick { 3 } else { args.duration });
    let mut rows = Vec::new();
    for &scenario in &scenarios {
        for &adapter in &adapters {
            let bin = examples.join(adapter.program());
            if !bin.exists() {
                bail!("{} is missing: run without --no-build", bin.display());
            }
            let ctx = Ctx {
                bin,
                adapter,
                quick: args.quick,
                duration,
            };
            eprintln!("chaos: {} / {} ...", scenario.name(), adapter.name());
            let t0 = Instant::now();
            let mut outcome = run_one(scenario, &ctx);
            outcome.secs = t0.elapsed().as_secs_f64();
            let verdict = match (&outcome.skipped, outcome.held) {
                (Some(why), _) => format!("skipped ({why})"),
                (None, true) => "held".to_owned(),
                (None, false) => "BROKEN".to_owned(),
            };
            eprintln!(
                "chaos: {} / {}: {verdict}; ok {} failed {}; {}",
                scenario.name(),
                adapter.name(),
                outcome.report.ok,
                outcome.report.failed(),
                outcome.notes.join("; ")
            );
            rows.push((scenario, adapter, outcome));
        }
    }
    let out = root.join("target/chaos");
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    let md = markdown(&rows, &args);
    std::fs::write(out.join("chaos.md"), &md)?;
    std::fs::write(
        out.join("chaos.json"),
        serde_json::to_string_pretty(&json(&rows))?,
    )?;
    println!("{md}");
    println!("written to {}", out.display());
    let broken: Vec<String> = rows
        .iter()
        .filter(|(_, _, o)| o.skipped.is_none() && !o.held)
        .map(|(s, a, _)| format!("{} / {}", s.name(), a.name()))
        .collect();
    if !broken.is_empty() {
        bail!("promises broken: {}", broken.join(", "));
    }
    Ok(())
}

fn run_one(scenario: Scenario, ctx: &Ctx) -> Outcome {
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| match scenario {
        Scenario::KillWorker => kill_worker(ctx),
        Scenario::Reload => reload(ctx),
        Scenario::Scale => scale(ctx),
        Scenario::MaxRequests => max_requests(ctx),
        Scenario::MaxMemory => max_memory(ctx),
        Scenario::HungWorker => hung(ctx, false),
        Scenario::StoppedWorker => hung(ctx, true),
        Scenario::StoppedMaster => stopped_master(ctx),
        Scenario::KillMaster => kill_master(ctx),
        Scenario::Sigterm => sigterm(ctx),
        Scenario::ReplacedBinary => replaced_binary(ctx),
        Scenario::CrashLoop => crash_loop(ctx),
        Scenario::SignalStorm => signal_storm(ctx),
        Scenario::Respawns => respawns(ctx),
        Scenario::SlowClients => slow_clients(ctx),
        Scenario::BadInput => bad_input(ctx),
        Scenario::Pid1 => pid1(ctx),
    }));
    result.unwrap_or_else(|panic| {
        let mut o = Outcome::new();
        let msg = panic
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_default();
        let short: String = msg.chars().take(400).collect();
        o.check(false, format!("the scenario panicked: {short}"));
        o
    })
}

// ---- helpers -------------------------------------------------------------------------------

const DEADLINE: Duration = prefork_testutil::DEADLINE;

fn load_cfg() -> LoadConfig {
    LoadConfig {
        keepalive: 32,
        new_conn: 2,
        path: "/pid".into(),
        pause: Duration::from_millis(1),
        request_timeout: Duration::from_secs(10),
        max_duration: Duration::from_secs(300),
        ..LoadConfig::default()
    }
}

fn signal(pid: u32, sig: Signal) {
    let _ = kill(Pid::from_raw(pid as i32), sig);
}

fn fd_count(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

fn rss_kib(pid: u32) -> u64 {
    crate::bench::procfs::rss_kb(pid)
}

/// Every child of `pid`, zombies included.
fn all_children(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    if let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) {
        for t in tasks.flatten() {
            if let Ok(s) = std::fs::read_to_string(t.path().join("children")) {
                out.extend(s.split_whitespace().filter_map(|p| p.parse::<u32>().ok()));
            }
        }
    }
    out
}

/// The server side of the established IPv4 connections to `addr`: how many, and the bytes they
/// have not read yet.
fn server_side(addr: SocketAddr) -> (usize, u64) {
    let conns: Vec<_> = prefork_testutil::tcp_sockets(addr)
        .into_iter()
        .filter(|s| s.established)
        .collect();
    (conns.len(), conns.iter().map(|s| s.unread).sum())
}

fn no_zombie(pid: u32) -> bool {
    wait_until(Duration::from_secs(5), || {
        all_children(pid)
            .iter()
            .all(|&c| process_state(c) != Some('Z'))
    })
}

fn workers(s: &Server, n: usize) -> Option<BTreeSet<u32>> {
    wait_until(DEADLINE, || children_of(s.pid()).len() == n)
        .then(|| children_of(s.pid()).into_iter().collect())
}

/// The master's state before a fault, to compare after it.
struct Baseline {
    fds: usize,
    rss_kib: u64,
    /// The scenario reloads (see [`aftermath`]).
    reloaded: bool,
}

fn baseline(s: &Server) -> Baseline {
    Baseline {
        fds: fd_count(s.pid()),
        rss_kib: rss_kib(s.pid()),
        reloaded: false,
    }
}

/// Worker count, no zombie, the master's fds and memory as before; then a graceful stop that
/// leaves no process behind.
fn aftermath(o: &mut Outcome, mut s: Server, before: &Baseline, expect_workers: usize) {
    let w = workers(&s, expect_workers);
    o.check(
        w.is_some(),
        format!(
            "{expect_workers} workers at the end (have {:?})",
            children_of(s.pid())
        ),
    );
    o.check(no_zombie(s.pid()), "no zombie");
    // After a reload the master keeps one descriptor more: the program file of the current
    // generation, which respawns execute. A worker that just exited may still hold its control
    // socket in the master until the master has reaped it: wait (bounded) for that to settle.
    let expected = |fds: usize| fds == before.fds || (before.reloaded && fds == before.fds + 1);
    let mut fds = fd_count(s.pid());
    wait_until(Duration::from_secs(5), || {
        fds = fd_count(s.pid());
        expected(fds)
    });
    o.check(expected(fds), format!("master fds {} -> {fds}", before.fds));
    let rss = rss_kib(s.pid());
    // Allocator noise: a few hundred KiB; a leak per event shows up as far more.
    o.check(
        rss <= before.rss_kib + 1024,
        format!("master RSS {} KiB -> {rss} KiB", before.rss_kib),
    );
    let started = s.started_workers();
    s.signal(Signal::SIGTERM);
    let status = s.wait_exit(DEADLINE);
    o.check(
        status.is_some_and(|st| st.success()),
        format!("graceful stop exits 0 ({status:?})"),
    );
    let left: Vec<u32> = started.into_iter().filter(|&p| alive(p)).collect();
    o.check(
        wait_until(Duration::from_secs(5), || left.iter().all(|&p| !alive(p))),
        format!("no process left after the stop ({left:?})"),
    );
}

// ---- scenarios -----------------------------------------------------------------------------

fn kill_worker(ctx: &Ctx) -> Outcome {
    let mut o = Outcome::new();
    let s = ctx.start(&[]);
    let before = baseline(&s);
    let load = Load::start(s.addr, load_cfg());
    o.check(load.wait_ok(200), "load running");
    let kills = ctx.reps(20, 3);
    for i in 0..kills {
        let Some(pids) = workers(&s, 2) else {
            o.check(false, format!("kill {i}: 2 workers"));
            break;
        };
        let victim = *pids.iter().next().unwrap();
        signal(victim, Signal::SIGKILL);
        let replaced = wait_until(DEADLINE, || {
            let now: BTreeSet<u32> = children_of(s.pid()).into_iter().collect();
            now.len() == 2 && !now.contains(&victim)
        });
        o.check(replaced, format!("kill {i}: worker {victim} replaced"));
        o.check(load.wait_ok(100), format!("kill {i}: serving after"));
        // Wait past the stable period only in the full run: the backoff grows otherwise.
        if !ctx.quick {
            std::thread::sleep(Duration::from_millis(300));
        }
    }
    let report = load.stop();
    // What a killed worker had in flight: at most its share of the keep-alive connections and
    // the new-connection clients, per kill.
    let bound = (kills * (load_cfg().keepalive + load_cfg().new_conn)) as u64;
    o.check(
        report.failed() <= bound,
        format!("{} failed, at most {bound} in flight", report.failed()),
    );
    o.check(report.timeout == 0, "no request hung");
    o.report = report;
    aftermath(&mut o, s, &before, 2);
    o
}

fn reload(ctx: &Ctx) -> Outcome {
    let mut o = Outcome::new();
    let s = ctx.start(&[]);
    let mut before = baseline(&s);
    before.reloaded = true;
    let load = Load::start(s.addr, load_cfg());
    o.check(load.wait_ok(200), "load running");
    let n = ctx.reps(10, 3);
    let t0 = Instant::now();
    for round in 1..=n {
        s.signal(Signal::SIGHUP);
        o.check(
            s.wait_log("reload complete", round),
            format!("reload {round} completes"),
        );
        o.check(load.wait_ok(50), format!("serving after reload {round}"));
    }
    o.note(format!(
        "{n} reloads in {:.1} s",
        t0.elapsed().as_secs_f64()
    ));
    let report = load.stop();
    o.check(report.failed() == 0, format!("{} failed", report.failed()));
    o.report = report;
    aftermath(&mut o, s, &before, 2);
    o
}

fn scale(ctx: &Ctx) -> Outcome {
    let mut o = Outcome::new();
    let s = ctx.start(&[]);
    let before = baseline(&s);
    let load = Load::start(s.addr, load_cfg());
    o.check(load.wait_ok(200), "load running");
    for n in 3..=5 {
        s.signal(Signal::SIGTTIN);
        o.check(workers(&s, n).is_some(), format!("TTIN: {n} workers"));
    }
    for n in (2..=4).rev() {
        s.signal(Signal::SIGTTOU);
        o.check(workers(&s, n).is_some(), format!("TTOU: {n} workers"));
    }
    o.check(load.wait_ok(100), "serving after");
    let report = load.stop();
    o.check(report.failed() == 0, format!("{} failed", report.failed()));
    o.report = report;
    aftermath(&mut o, s, &before, 2);
    o
}

fn max_requests(ctx: &Ctx) -> Outcome {
    let mut o = Outcome::new();
    let quota = if ctx.quick { "300" } else { "2000" };
    let s = ctx.start(&["--max-requests", quota, "--max-requests-jitter", "50"]);
    let before = baseline(&s);
    let load = Load::start(s.addr, load_cfg());
    std::thread::sleep(ctx.duration);
    let report = load.stop();
    let recycles = s.log().matches("recycling worker").count();
    o.note(format!("{recycles} recycles"));
    o.check(recycles >= 2, format!("workers recycled ({recycles})"));
    o.check(report.failed() == 0, format!("{} failed", report.failed()));
    o.report = report;
    aftermath(&mut o, s, &before, 2);
    o
}

fn max_memory(ctx: &Ctx) -> Outcome {
    let mut o = Outcome::new();
    let s = ctx.start(&["--max-memory-mb", "64"]);
    let before = baseline(&s);
    let load = Load::start(s.addr, load_cfg());
    o.check(load.wait_ok(200), "load running");
    let pids = workers(&s, 2).unwrap_or_default();
    let leak = prefork_testutil::get(s.addr, "/leak?mb=100");
    o.check(
        leak.as_ref().is_ok_and(|r| r.status == 200),
        format!("/leak answered ({:?})", leak.as_ref().map(|r| r.status)),
    );
    let t0 = Instant::now();
    let replaced = wait_until(Duration::from_secs(10), || {
        s.log().contains("over its memory limit")
            && children_of(s.pid()).len() == 2
            && !pids.iter().all(|p| children_of(s.pid()).contains(p))
    });
    o.check(replaced, "the leaking worker replaced within 10 s");
    o.note(format!(
        "replaced after {:.1} s",
        t0.elapsed().as_secs_f64()
    ));
    o.check(load.wait_ok(100), "serving after");
    let report = load.stop();
    o.check(report.failed() == 0, format!("{} failed", report.failed()));
    o.report = report;
    aftermath(&mut o, s, &before, 2);
    o
}

fn hung(ctx: &Ctx, stop_signal: bool) -> Outcome {
    let mut o = Outcome::new();
    let s = ctx.start(&["--worker-timeout", "2"]);
    let before = baseline(&s);
    let pids = workers(&s, 2).unwrap_or_default();
    // The victim: the worker that answers a fresh connection.
    let mut conn = TcpStream::connect(s.addr).expect("connect");
    let victim: u32 = prefork_testutil::raw_get(&mut conn, "/pid")
        .trim()
        .parse()
        .unwrap_or(0);
    o.check(pids.contains(&victim), "found the victim");
    let mut cfg = load_cfg();
    cfg.request_timeout = Duration::from_secs(2);
    let load = Load::start(s.addr, cfg);
    o.check(load.wait_ok(100), "load running");
    let t0 = Instant::now();
    if stop_signal {
        signal(victim, Signal::SIGSTOP);
    } else {
        let _ = write!(conn, "GET /block?ms=60000 HTTP/1.1\r\nhost: chaos\r\n\r\n");
    }
    let replaced = wait_until(Duration::from_secs(5) + Duration::from_secs(3), || {
        !alive(victim) && children_of(s.pid()).len() == 2
    });
    let took = t0.elapsed();
    o.check(replaced, "replaced within timeout + 3 s");
    o.note(format!("replaced after {:.1} s", took.as_secs_f64()));
    o.check(
        load.wait_ok(100),
        "the other worker served throughout and after",
    );
    let report = load.stop();
    // The victim's own connections fail (timeouts, resets); the rest must not.
    o.note(format!(
        "{} failed on the hung worker's connections",
        report.failed()
    ));
    o.report = report;
    aftermath(&mut o, s, &before, 2);
    o
}

fn stopped_master(ctx: &Ctx) -> Outcome {
    let mut o = Outcome::new();
    let s = ctx.start(&["--worker-timeout", "2"]);
    let before = baseline(&s);
    let pids = workers(&s, 2).unwrap_or_default();
    let load = Load::start(s.addr, load_cfg());
    o.check(load.wait_ok(100), "load running");
    s.signal(Signal::SIGSTOP);
    std::thread::sleep(Duration::from_secs(5));
    s.signal(Signal::SIGCONT);
    o.check(load.wait_ok(200), "serving after");
    std::thread::sleep(Duration::from_secs(3));
    let now: BTreeSet<u32> = children_of(s.pid()).into_iter().collect();
    o.check(
        now == pids,
        format!("no worker killed ({pids:?} -> {now:?})"),
    );
    let report = load.stop();
    o.check(report.failed() == 0, format!("{} failed", report.failed()));
    o.report = report;
    aftermath(&mut o, s, &before, 2);
    o
}

fn kill_master(ctx: &Ctx) -> Outcome {
    let mut o = Outcome::new();
    let mut s = ctx.start(&[]);
    let pids = workers(&s, 2).unwrap_or_default();
    let load = Load::start(s.addr, load_cfg());
    o.check(load.wait_ok(100), "load running");
    let t0 = Instant::now();
    s.signal(Signal::SIGKILL);
    let _ = s.wait_exit(DEADLINE);
    let gone = wait_until(Duration::from_secs(5), || pids.iter().all(|&p| !alive(p)));
    let took = t0.elapsed();
    o.check(
        gone && took <= Duration::from_secs(1) + Duration::from_millis(200),
        format!("workers gone after {:.2} s", took.as_secs_f64()),
    );
    o.report = load.stop();
    let rebind = std::net::TcpListener::bind(s.addr);
    o.check(
        rebind.is_ok(),
        format!("the port binds again at once ({:?})", rebind.err()),
    );
    o
}

fn sigterm(ctx: &Ctx) -> Outcome {
    let mut o = Outcome::new();
    let mut s = ctx.start(&["--sleep-ms", "2000"]);
    let addr = s.addr;
    let slow: Vec<_> = (0..8)
        .map(|_| std::thread::spawn(move || prefork_testutil::get(addr, "/")))
        .collect();
    // Every slow request is in a worker's hands (the servers have read them).
    let in_hand = wait_until(DEADLINE, || {
        let (conns, unread) = server_side(addr);
        conns >= 8 && unread == 0
    });
    o.check(in_hand, "slow requests received");
    s.signal(Signal::SIGTERM);
    let t0 = Instant::now();
    let refused = wait_until(Duration::from_secs(3), || {
        TcpStream::connect_timeout(&addr, Duration::from_millis(500))
            .is_err_and(|e| e.kind() == std::io::ErrorKind::ConnectionRefused)
    });
    o.check(
        refused && t0.elapsed() < Duration::from_secs(1),
        format!(
            "new connections refused after {:.2} s",
            t0.elapsed().as_secs_f64()
        ),
    );
    let mut ok = 0;
    for h in slow {
        if matches!(h.join(), Ok(Ok(r)) if r.status == 200) {
            ok += 1;
        }
    }
    o.check(ok == 8, format!("{ok}/8 slow requests completed with 200"));
    o.report.ok = ok;
    let status = s.wait_exit(DEADLINE);
    o.check(
        status.is_some_and(|st| st.success()),
        format!("exit 0 ({status:?})"),
    );
    o
}

fn replaced_binary(ctx: &Ctx) -> Outcome {
    let mut o = Outcome::new();
    let dir = temp_dir("chaos-binary");
    let path = dir.join(ctx.adapter.program());
    std::fs::copy(&ctx.bin, &path).expect("copy the binary");
    let copy = Ctx {
        bin: path.clone(),
        adapter: ctx.adapter,
        quick: ctx.quick,
        duration: ctx.duration,
    };
    let s = copy.start(&[]);
    let before = baseline(&s);
    let load = Load::start(s.addr, load_cfg());
    o.check(load.wait_ok(100), "load running");
    let replace = |contents: &[u8]| {
        use std::os::unix::fs::PermissionsExt;
        let tmp = path.with_extension("new");
        std::fs::write(&tmp, contents).unwrap();
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::rename(&tmp, &path).unwrap();
    };
    let good = std::fs::read(&ctx.bin).expect("read the binary");
    replace(&good);
    let pids = workers(&s, 2).unwrap_or_default();
    let victim = *pids.iter().next().unwrap_or(&0);
    signal(victim, Signal::SIGKILL);
    o.check(
        wait_until(DEADLINE, || {
            !alive(victim) && children_of(s.pid()).len() == 2
        }),
        "killed worker respawned after the binary was replaced",
    );
    let report1 = load.snapshot();
    replace(b"#!/bin/sh\nexit 1\n");
    let old = workers(&s, 2).unwrap_or_default();
    s.signal(Signal::SIGHUP);
    o.check(
        s.wait_log("reload abandoned", 1),
        "the broken reload is abandoned",
    );
    let now: BTreeSet<u32> = children_of(s.pid()).into_iter().collect();
    o.check(now == old, "the old generation keeps serving");
    o.check(load.wait_ok(100), "serving after");
    replace(&good);
    let report = load.stop();
    o.check(
        report.failed() <= report1.failed(),
        format!(
            "no failure after the kill ({} -> {})",
            report1.failed(),
            report.failed()
        ),
    );
    o.report = report;
    aftermath(&mut o, s, &before, 2);
    o
}

fn crash_loop(ctx: &Ctx) -> Outcome {
    let mut o = Outcome::new();
    // Each worker's start-up fails (std_hello reads a file that does not exist; the other
    // programs get a certificate that does not exist, which the master refuses first).
    let extra: Vec<&str> = match ctx.adapter {
        Adapter::Std => vec!["--require-file", "/nonexistent/chaos"],
        _ => return Outcome::skip("only std_hello has a start-up that fails in the worker"),
    };
    let mut args = vec!["--addr", "127.0.0.1:0", "--workers", "2"];
    args.extend(extra);
    let t0 = Instant::now();
    let (status, log) = Server::run_to_exit(&ctx.bin, &args, &[]);
    let took = t0.elapsed();
    o.check(!status.success(), "exits with an error");
    o.check(
        took < Duration::from_secs(5),
        format!("within {:.1} s", took.as_secs_f64()),
    );
    o.check(
        log.matches("worker started").count() <= 2,
        "no restart loop",
    );
    o.note(format!("returned after {:.2} s", took.as_secs_f64()));
    o
}

fn control_stats(path: &Path) -> Option<serde_json::Value> {
    let mut stream = UnixStream::connect(path).ok()?;
    stream.set_read_timeout(Some(DEADLINE)).ok()?;
    writeln!(stream, r#"{{"command":"stats"}}"#).ok()?;
    let mut line = String::new();
    BufReader::new(stream).read_line(&mut line).ok()?;
    serde_json::from_str(&line).ok()
}

fn signal_storm(ctx: &Ctx) -> Outcome {
    let mut o = Outcome::new();
    let sock = temp_dir("chaos-storm").join("control.sock");
    let s = ctx.start(&["--control-socket", sock.to_str().unwrap()]);
    let mut before = baseline(&s);
    before.reloaded = true;
    let load = Load::start(s.addr, load_cfg());
    o.check(load.wait_ok(100), "load running");
    let n = ctx.reps(500, 100);
    let sigs = [
        Signal::SIGHUP,
        Signal::SIGTTIN,
        Signal::SIGTTOU,
        Signal::SIGUSR1,
    ];
    let pause = Duration::from_secs(2) / n as u32;
    for i in 0..n {
        s.signal(sigs[(i * 7 + i / 3) % sigs.len()]);
        std::thread::sleep(pause);
    }
    // Converges: the target it settled on is what runs, every worker ready, no reload left.
    let converged = wait_until(Duration::from_secs(60), || {
        control_stats(&sock).is_some_and(|st| {
            let target = st["workers_target"].as_u64().unwrap_or(0) as usize;
            let ws = st["workers"].as_array().cloned().unwrap_or_default();
            st["reloading"] == false
                && ws.len() == target
                && ws.iter().all(|w| w["ready"] == true)
                && children_of(s.pid()).len() == target
        })
    });
    o.check(converged, "converged to its target worker count");
    let target = control_stats(&sock)
        .and_then(|st| st["workers_target"].as_u64())
        .unwrap_or(0) as usize;
    o.note(format!("{n} signals; settled at {target} workers"));
    o.check(load.wait_ok(100), "serving after");
    let report = load.stop();
    o.check(report.failed() == 0, format!("{} failed", report.failed()));
    o.report = report;
    aftermath(&mut o, s, &before, target.max(1));
    o
}

fn respawns(ctx: &Ctx) -> Outcome {
    let mut o = Outcome::new();
    // Recycling after every few requests replaces workers as fast as they start, without the
    // crash backoff that a kill loop would (rightly) trigger.
    let s = ctx.start(&["--max-requests", "5"]);
    let before = baseline(&s);
    let target = ctx.reps(1000, 100);
    let mut cfg = load_cfg();
    cfg.keepalive = 4;
    cfg.new_conn = 2;
    let load = Load::start(s.addr, cfg);
    let done = wait_until(
        Duration::from_secs(if ctx.quick { 120 } else { 600 }),
        || s.log().matches("worker started").count() >= target + 2,
    );
    let report = load.stop();
    let n = s.log().matches("worker started").count().saturating_sub(2);
    o.check(done, format!("{n} of {target} replacements"));
    o.note(format!("{n} replacements"));
    o.check(report.failed() == 0, format!("{} failed", report.failed()));
    o.report = report;
    aftermath(&mut o, s, &before, 2);
    o
}

fn slow_clients(ctx: &Ctx) -> Outcome {
    let mut o = Outcome::new();
    let s = ctx.start(&[]);
    let before = baseline(&s);
    let n = ctx.reps(2000, 300);
    let mut slow = Vec::new();
    for _ in 0..n {
        match TcpStream::connect(s.addr) {
            Ok(c) => slow.push(c),
            Err(e) => {
                o.check(false, format!("connect: {e}"));
                break;
            }
        }
    }
    let load = Load::start(s.addr, load_cfg());
    let served = load.wait_ok(200);
    let t0 = Instant::now();
    let secs = if ctx.quick { 3 } else { 10 };
    while t0.elapsed() < Duration::from_secs(secs) {
        for c in &mut slow {
            let _ = c.set_nonblocking(true);
            let _ = c.write(b"G");
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    o.check(served, "other clients served while slow clients trickle");
    let report = load.stop();
    o.check(report.failed() == 0, format!("{} failed", report.failed()));
    o.report = report;
    drop(slow);
    aftermath(&mut o, s, &before, 2);
    o
}

fn bad_input(ctx: &Ctx) -> Outcome {
    let mut o = Outcome::new();
    let s = ctx.start(&[]);
    let before = baseline(&s);
    let pids = workers(&s, 2).unwrap_or_default();
    let inputs: Vec<Vec<u8>> = vec![
        format!(
            "GET / HTTP/1.1\r\nhost: x\r\nx-big: {}\r\n\r\n",
            "a".repeat(1 << 20)
        )
        .into_bytes(),
        b"\x00\x01\x02garbage\r\n\r\n\xff\xfe".to_vec(),
        // A TLS ClientHello's first bytes, then silence, on a plain port.
        vec![
            0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03,
        ],
        b"GET / HTTP/9.9\r\n\r\n".to_vec(),
    ];
    // All at once: the slowest is bounded by the header read timeout (30 s).
    let handles: Vec<_> = inputs
        .into_iter()
        .enumerate()
        .map(|(i, bytes)| {
            let addr = s.addr;
            std::thread::spawn(move || {
                let Ok(mut c) = TcpStream::connect(addr) else {
                    return (i, false, 0.0);
                };
                // The client keeps its side open: the server must close the connection itself.
                let _ = c.write_all(&bytes);
                c.set_read_timeout(Some(Duration::from_secs(75))).ok();
                let t0 = Instant::now();
                let mut sink = Vec::new();
                let closed = match c.read_to_end(&mut sink) {
                    Ok(_) => true,
                    Err(e) => !matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ),
                };
                (i, closed, t0.elapsed().as_secs_f64())
            })
        })
        .collect();
    for h in handles {
        if let Ok((i, closed, secs)) = h.join() {
            o.check(
                closed,
                format!("input {i}: connection closed by the server"),
            );
            o.note(format!("input {i} closed after {secs:.1} s"));
        }
    }
    let now: BTreeSet<u32> = children_of(s.pid()).into_iter().collect();
    o.check(now == pids, "no worker restarted");
    o.check(
        prefork_testutil::get(s.addr, "/").is_ok_and(|r| r.status == 200),
        "still serving",
    );
    aftermath(&mut o, s, &before, 2);
    o
}

fn pid1(ctx: &Ctx) -> Outcome {
    let mut o = Outcome::new();
    if ctx.adapter != Adapter::Std {
        return Outcome::skip("the PID 1 behaviour is the master's; run once, with std_hello");
    }
    let probe = std::process::Command::new("unshare")
        .args(["--pid", "--fork", "--mount-proc", "true"])
        .status();
    if !probe.is_ok_and(|s| s.success()) {
        return Outcome::skip("unshare --pid is not permitted here");
    }
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
        l.local_addr().unwrap().port()
    };
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let mut child = std::process::Command::new("unshare")
        .args(["--pid", "--fork", "--mount-proc", "--kill-child"])
        .arg(&ctx.bin)
        .args(["--addr", &addr.to_string(), "--workers", "2", "--orphan"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("unshare");
    let served = wait_until(DEADLINE, || {
        prefork_testutil::get(addr, "/").is_ok_and(|r| r.status == 200)
    });
    o.check(served, "serves as PID 1");
    // The master inside is the child of `unshare`: signal it there.
    let inner = all_children(child.id()).into_iter().next();
    if let Some(master) = inner {
        o.check(no_zombie(master), "orphans reaped (no zombie)");
        signal(master, Signal::SIGTERM);
    }
    let status = wait_until(DEADLINE, || child.try_wait().ok().flatten().is_some());
    o.check(status, "SIGTERM ends it");
    let _ = child.kill();
    let _ = child.wait();
    o
}

// ---- report --------------------------------------------------------------------------------

fn markdown(rows: &[(Scenario, Adapter, Outcome)], args: &ChaosArgs) -> String {
    let mut s = String::new();
    s.push_str(&format!(
        "`cargo xtask chaos{}` — {} adapters x {} scenarios\n\n",
        if args.quick { " --quick" } else { "" },
        rows.iter().map(|r| r.1).collect::<BTreeSet<_>>().len(),
        rows.iter().map(|r| r.0).collect::<BTreeSet<_>>().len(),
    ));
    s.push_str("| scenario | adapter | promise | verdict | requests ok | failed | refused | reset | timeout | non-2xx | wrong body | notes |\n");
    s.push_str("|---|---|---|---|---|---|---|---|---|---|---|---|\n");
    for (sc, ad, o) in rows {
        let verdict = match (&o.skipped, o.held) {
            (Some(_), _) => "skipped",
            (None, true) => "held",
            (None, false) => "**BROKEN**",
        };
        let r = &o.report;
        let mut notes = o.notes.join("; ");
        if let Some(why) = &o.skipped {
            notes = why.clone();
        }
        s.push_str(&format!(
            "| {} | {} | {} | {verdict} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
            sc.name(),
            ad.name(),
            sc.promise(),
            r.ok,
            r.failed(),
            r.refused,
            r.reset,
            r.timeout,
            r.non_2xx,
            r.wrong_body,
            notes.replace('|', "/"),
        ));
    }
    s
}

fn json(rows: &[(Scenario, Adapter, Outcome)]) -> serde_json::Value {
    serde_json::Value::Array(
        rows.iter()
            .map(|(sc, ad, o)| {
                serde_json::json!({
                    "scenario": sc.name(),
                    "adapter": ad.name(),
                    "promise": sc.promise(),
                    "held": o.held,
                    "skipped": o.skipped,
                    "secs": o.secs,
                    "ok": o.report.ok,
                    "failed": o.report.failed(),
                    "refused": o.report.refused,
                    "reset": o.report.reset,
                    "timeout": o.report.timeout,
                    "non_2xx": o.report.non_2xx,
                    "wrong_body": o.report.wrong_body,
                    "other": o.report.other,
                    "closed_by_server": o.report.closed_by_server,
                    "notes": o.notes,
                })
            })
            .collect(),
    )
}
