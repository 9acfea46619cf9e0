//! The load scenarios: which servers each one runs, and one measured run of one server.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Result;
use clap::ValueEnum;
use prefork_testutil::Sig;

use super::load::{H2load, LoadStats, Wrk};
use super::procfs::{clk_tck, tree_cpu_ticks, tree_pss_kb};
use super::report::Sample;
use super::server::{self, Adapter, Launch, Limits, Mode, Peer, Proto, Started, Target};
use super::workers;

/// A load scenario (`--scenarios`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, ValueEnum)]
pub(crate) enum Scenario {
    /// `GET /` on 64 keep-alive connections, every `--modes` of ours.
    Plain,
    /// The handler sleeps 100 ms, 512 connections (ceiling 5120 rps).
    Seed,
    /// A new connection per request (`Connection: close`), 64 clients.
    Churn,
    /// A new TLS 1.3 connection per request, 64 clients.
    TlsHandshake,
    /// HTTPS on 64 keep-alive connections.
    TlsKeepalive,
    /// h2load: HTTP/2 over TLS and h2c, 16 connections x 64 streams.
    H2,
    /// 10,000 keep-alive connections; servers start under a soft fd limit of 1024.
    C10k,
    /// Server (master + 1 worker) on CPU 0, wrk on CPU 1, 64 keep-alive connections.
    Pinned,
    /// SIGHUP to the master in the middle of the load: failed requests and p99.
    Reload,
}

/// One measured configuration of a scenario (h2 has two: over TLS and h2c).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Case {
    pub(crate) scenario: Scenario,
    pub(crate) label: &'static str,
    pub(crate) proto: Proto,
    pub(crate) conns: usize,
    /// h2load's concurrent streams per connection (0: wrk drives the load).
    pub(crate) streams: usize,
    pub(crate) sleep_ms: u64,
    /// `Connection: close` on every request.
    pub(crate) close: bool,
}

/// What the runs of a bench share.
#[derive(Debug)]
pub(crate) struct Settings {
    pub(crate) secs: u64,
    pub(crate) warmup: u64,
    pub(crate) workers: usize,
    pub(crate) wrk_threads: usize,
    pub(crate) certs: (PathBuf, PathBuf),
    pub(crate) ca_pem: String,
    pub(crate) log_dir: PathBuf,
}

pub(crate) fn cases(scenario: Scenario, c10k_conns: usize) -> Vec<Case> {
    let case = |label, proto, conns| Case {
        scenario,
        label,
        proto,
        conns,
        streams: 0,
        sleep_ms: 0,
        close: false,
    };
    match scenario {
        Scenario::Plain => vec![case("plain", Proto::Http, 64)],
        Scenario::Seed => vec![Case {
            sleep_ms: 100,
            ..case("seed", Proto::Http, 512)
        }],
        Scenario::Churn => vec![Case {
            close: true,
            ..case("churn", Proto::Http, 64)
        }],
        Scenario::TlsHandshake => vec![Case {
            close: true,
            ..case("tls-handshake", Proto::Https, 64)
        }],
        Scenario::TlsKeepalive => vec![case("tls-keepalive", Proto::Https, 64)],
        Scenario::H2 => vec![
            Case {
                streams: 64,
                ..case("h2-tls", Proto::H2, 16)
            },
            Case {
                streams: 64,
                ..case("h2c", Proto::H2c, 16)
            },
        ],
        Scenario::C10k => vec![case("c10k", Proto::Http, c10k_conns)],
        Scenario::Pinned => vec![case("pinned", Proto::Http, 64)],
        Scenario::Reload => vec![case("reload", Proto::Http, 64)],
    }
}

/// The servers a case runs: ours in prefork mode (every `--modes` in plain and seed, but
/// stats-off in plain only, no-balance in plain, churn and pinned; also `--no-prefork` in
/// pinned), then the peers that can serve it.
pub(crate) fn targets(
    case: &Case,
    adapters: &[Adapter],
    modes: &[Mode],
    peers: &[Peer],
) -> Vec<Target> {
    let no_balance = modes.contains(&Mode::NoBalance).then_some(Mode::NoBalance);
    let modes: Vec<Mode> = match case.scenario {
        Scenario::Plain => modes.to_vec(),
        Scenario::Seed => modes
            .iter()
            .copied()
            .filter(|&m| m != Mode::StatsOff && m != Mode::NoBalance)
            .collect(),
        Scenario::Pinned => [Mode::Prefork, Mode::NoPrefork]
            .into_iter()
            .chain(no_balance)
            .collect(),
        Scenario::Churn => [Mode::Prefork].into_iter().chain(no_balance).collect(),
        _ => vec![Mode::Prefork],
    };
    let mut out = Vec::new();
    for &a in adapters {
        for &m in &modes {
            if server::ours_supports(a, m, case.proto) {
                out.push(Target::Ours(a, m));
            }
        }
    }
    for &p in peers {
        let fits = server::peer_supports(p, case.proto)
            && match case.scenario {
                // fasthttp and node cluster have no reload.
                Scenario::Reload => p == Peer::Nginx,
                _ => true,
            };
        if fits {
            out.push(Target::Peer(p));
        }
    }
    out
}

fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// One measured run of `target` in `case`.
pub(crate) fn run(target: Target, case: &Case, round: usize, s: &Settings) -> Result<Sample> {
    let port = free_port()?;
    let pinned = case.scenario == Scenario::Pinned;
    let c10k = case.scenario == Scenario::C10k;
    let reload = case.scenario == Scenario::Reload;
    let hard = server::hard_nofile(20_000.max(case.conns as u64 * 2));
    let server_limits = Limits {
        cpu: pinned.then_some(0),
        // The default soft limit: the server has to raise it itself to hold 10,000 connections.
        nofile: c10k.then_some((1024, hard)),
    };
    let client_limits = Limits {
        cpu: pinned.then_some(1),
        nofile: c10k.then_some((hard, hard)),
    };
    let workers = if pinned { 1 } else { s.workers };
    // Ours with counting workers: how the requests spread over them, from the master's stats
    // (not in reload, whose workers are replaced in the middle of the run).
    let control = match target {
        Target::Ours(_, Mode::Prefork | Mode::Reuseport | Mode::Pinned | Mode::NoBalance)
            if workers > 1 && !reload =>
        {
            Some(
                std::env::temp_dir()
                    .join(format!("prefork-bench-{}-{port}.sock", std::process::id())),
            )
        }
        _ => None,
    };
    let log = s.log_dir.join(format!(
        "{}-{}-{}-r{round}.log",
        case.label,
        target.server(),
        target.mode()
    ));
    let launch = Launch {
        port,
        workers,
        sleep_ms: case.sleep_ms,
        proto: case.proto,
        certs: Some((s.certs.0.as_path(), s.certs.1.as_path())),
        limits: server_limits,
        rust_log: if reload {
            "warn,prefork_core=info"
        } else {
            "warn"
        },
        control_socket: control.as_deref(),
    };
    let mut srv = Started::start(server::command(target, &launch)?, log)?;
    let result = measure(
        &mut srv,
        target,
        case,
        round,
        s,
        port,
        client_limits,
        workers,
        control.as_deref(),
    );
    srv.stop();
    if let Some(path) = &control {
        let _ = std::fs::remove_file(path);
    }
    result
}

#[allow(clippy::too_many_arguments)]
fn measure(
    srv: &mut Started,
    target: Target,
    case: &Case,
    round: usize,
    s: &Settings,
    port: u16,
    limits: Limits,
    workers: usize,
    control: Option<&Path>,
) -> Result<Sample> {
    srv.wait_up(port, case.proto, Some(&s.ca_pem))?;
    // Let every worker come up before the load.
    std::thread::sleep(Duration::from_millis(300));
    let root = srv.pid();
    let (pss_idle_kb, _) = tree_pss_kb(root);
    let scheme = if case.proto.tls() { "https" } else { "http" };
    let url = format!("{scheme}://127.0.0.1:{port}/");
    let h2log = s.log_dir.join(format!("h2load-{port}.log"));
    let load = |secs: u64, warmup: u64| -> Result<LoadStats> {
        if case.streams > 0 {
            H2load {
                url: &url,
                secs,
                warmup,
                conns: case.conns,
                streams: case.streams,
                threads: s.wrk_threads,
                limits,
                log: &h2log,
            }
            .run()
        } else {
            Wrk {
                url: &url,
                secs,
                conns: case.conns,
                threads: s.wrk_threads,
                close: case.close,
                timeout_secs: if case.scenario == Scenario::C10k {
                    10
                } else {
                    2
                },
                limits,
            }
            .run()
        }
    };
    // Per-worker request counts before the warm-up and after the load, read while the server
    // is idle (a failure costs the figure, not the run).
    let counts = |since: Instant| {
        control.and_then(|c| match workers::requests(c, since) {
            Ok(v) => Some(v),
            Err(e) => {
                eprintln!("no worker shares for {}: {e:#}", target.label());
                None
            }
        })
    };
    let before = counts(Instant::now());

    if s.warmup > 0 && case.streams == 0 {
        load(s.warmup, 0)?;
    }
    // Reload: the same load without a reload first, for the p99 outside it.
    let base = if case.scenario == Scenario::Reload {
        Some(load(s.secs, 0)?)
    } else {
        None
    };

    // PSS of the tree, sampled once a second while loaded (peak kept).
    let stop = Arc::new(AtomicBool::new(false));
    let peak = Arc::new(Mutex::new((0u64, 0usize)));
    let sampler = {
        let (stop, peak) = (stop.clone(), peak.clone());
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(500));
            while !stop.load(Ordering::SeqCst) {
                let (pss, procs) = tree_pss_kb(root);
                let mut pk = peak.lock().unwrap();
                pk.0 = pk.0.max(pss);
                pk.1 = pk.1.max(procs);
                drop(pk);
                std::thread::sleep(Duration::from_millis(1000));
            }
        })
    };
    let hup = (case.scenario == Scenario::Reload)
        .then(|| reload_during(root, srv.log.clone(), s.secs, target));
    let cpu0 = tree_cpu_ticks(root);
    let t0 = Instant::now();
    // c10k: at least 3 s, since opening 10,000 connections takes about a second here.
    let secs = if case.scenario == Scenario::C10k {
        s.secs.max(3)
    } else {
        s.secs
    };
    let stats = load(secs, if case.streams > 0 { s.warmup } else { 0 });
    let cpu1 = tree_cpu_ticks(root);
    let ended = Instant::now();
    let secs = t0.elapsed().as_secs_f64();
    stop.store(true, Ordering::SeqCst);
    let _ = sampler.join();
    let reload_status = hup.map(|h| h.join().unwrap_or_else(|_| "reload thread panicked".into()));
    let stats = stats?;
    let (pss_peak, procs) = *peak.lock().unwrap();
    // c10k: what the tree keeps 5 s after the connections are gone.
    let pss_after_kb = (case.scenario == Scenario::C10k).then(|| {
        std::thread::sleep(Duration::from_secs(5));
        tree_pss_kb(root).0
    });
    let worker_requests = match before {
        Some(before) => counts(ended).map(|after| workers::served(&before, &after)),
        None => None,
    };
    let reload_status = reload_status.map(|st| {
        if srv.running() {
            st
        } else {
            format!("{st}; master exited")
        }
    });
    let cpu_pct = cpu1.saturating_sub(cpu0) as f64 / clk_tck() / secs * 100.0;
    Ok(Sample {
        round,
        case: case.label.to_owned(),
        server: target.server().to_owned(),
        mode: target.mode().to_owned(),
        workers,
        conns: case.conns,
        streams: case.streams,
        rps: stats.rps,
        p50_ms: stats.p50_ms,
        p99_ms: stats.p99_ms,
        errors: stats.errors,
        cpu_pct,
        rps_per_core: if cpu_pct > 0.0 {
            stats.rps / (cpu_pct / 100.0)
        } else {
            f64::NAN
        },
        pss_mb: pss_peak as f64 / 1024.0,
        procs,
        pss_idle_mb: (case.scenario == Scenario::C10k).then_some(pss_idle_kb as f64 / 1024.0),
        pss_after_mb: pss_after_kb.map(|kb| kb as f64 / 1024.0),
        p99_base_ms: base.as_ref().map(|b| b.p99_ms),
        errors_base: base.as_ref().map(|b| b.errors),
        reload: reload_status,
        worker_requests,
    })
}

/// Sends SIGHUP to the master a third of the way into the load, then waits (until the load
/// ends) for our master's `reload complete` line. Returns what happened.
fn reload_during(
    master: u32,
    log: PathBuf,
    secs: u64,
    target: Target,
) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let at = Duration::from_secs_f64(secs as f64 / 3.0);
        std::thread::sleep(at);
        let before = count(&log, "reload complete");
        let t = Instant::now();
        let pid = nix::unistd::Pid::from_raw(master as i32);
        if let Err(e) = nix::sys::signal::kill(pid, Sig::SIGHUP) {
            return format!("SIGHUP failed: {e}");
        }
        if let Target::Peer(_) = target {
            // nginx logs no completion line at the `warn` level it runs with.
            return "SIGHUP sent".into();
        }
        let deadline = Duration::from_secs_f64(secs as f64 * 2.0 / 3.0);
        while t.elapsed() < deadline {
            if count(&log, "reload complete") > before {
                return format!("complete in {:.0} ms", t.elapsed().as_secs_f64() * 1000.0);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        "no `reload complete` before the load ended".into()
    })
}

fn count(log: &Path, needle: &str) -> usize {
    std::fs::read_to_string(log)
        .map(|s| s.matches(needle).count())
        .unwrap_or(0)
}
