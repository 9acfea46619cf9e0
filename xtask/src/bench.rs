//! `cargo xtask bench`: load benchmarks of the example servers with wrk, process-model costs,
//! and optional peers (Go fasthttp prefork, Node cluster, nginx) measured in the same run.
//!
//! Everything runs on 127.0.0.1; every run is bounded by `--duration`.

use std::fmt::Write as _;
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use prefork_testutil::{children_of, get, Server, Sig};

use crate::{cargo, project_root};

/// Options of `cargo xtask bench`.
#[derive(clap::Args, Debug)]
pub(crate) struct BenchArgs {
    /// Adapters to measure: std, hyper, axum, actix, smol.
    #[arg(long, value_delimiter = ',', default_value = "hyper,axum,actix,smol")]
    adapters: Vec<String>,
    /// Modes: prefork (shared fd), reuseport, no-prefork.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "prefork,reuseport,no-prefork"
    )]
    modes: Vec<String>,
    /// Scenarios: plain (64 keep-alive connections) and seed (100 ms handler, 512 connections).
    #[arg(long, value_delimiter = ',', default_value = "plain,seed")]
    scenarios: Vec<String>,
    /// Peers from ../shared/bench to run in the same way: fasthttp-prefork, fasthttp,
    /// node-cluster, nginx (needs ../shared/bench/setup.sh once).
    #[arg(long, value_delimiter = ',')]
    peers: Vec<String>,
    /// Seconds of measured load per run (at most 60).
    #[arg(long, default_value_t = 5)]
    duration: u64,
    /// Seconds of warm-up load before each measured run.
    #[arg(long, default_value_t = 1)]
    warmup: u64,
    /// Worker processes (threads for --no-prefork).
    #[arg(long, default_value_t = 2)]
    workers: usize,
    /// wrk threads.
    #[arg(long, default_value_t = 1)]
    wrk_threads: usize,
    /// Runs of each load configuration, interleaved round by round; the table shows medians.
    #[arg(long, default_value_t = 1)]
    repeat: usize,
    /// Trials of each process-model measurement (medians are reported).
    #[arg(long, default_value_t = 20)]
    trials: usize,
    /// Skip the load runs.
    #[arg(long)]
    no_load: bool,
    /// Skip the process-model measurements.
    #[arg(long)]
    no_process: bool,
}

struct Scenario {
    name: &'static str,
    conns: usize,
    sleep_ms: u64,
}

const SCENARIOS: &[Scenario] = &[
    Scenario {
        name: "plain",
        conns: 64,
        sleep_ms: 0,
    },
    Scenario {
        name: "seed",
        conns: 512,
        sleep_ms: 100,
    },
];

/// (adapter, package, example)
const ADAPTERS: &[(&str, &str, &str)] = &[
    ("std", "prefork-core", "std_hello"),
    ("hyper", "prefork-tokio", "hyper_hello"),
    ("axum", "prefork-axum", "axum_hello"),
    ("actix", "prefork-actix", "actix_hello"),
    ("smol", "prefork-smol", "smol_hello"),
];

#[derive(Debug, Clone, Default)]
struct LoadResult {
    server: String,
    mode: String,
    scenario: String,
    conns: usize,
    rps: f64,
    p50_ms: f64,
    p99_ms: f64,
    errors: u64,
    cpu_pct: f64,
    pss_mb: f64,
    procs: usize,
}

pub(crate) fn run(args: BenchArgs) -> Result<()> {
    let root = project_root();
    let out_dir = root.join("target").join("bench");
    std::fs::create_dir_all(&out_dir)?;
    if !args.no_load {
        check_wrk()?;
    }
    let duration = args.duration.clamp(1, 60);
    let adapters: Vec<&(&str, &str, &str)> = args
        .adapters
        .iter()
        .map(|a| {
            ADAPTERS
                .iter()
                .find(|(name, _, _)| name == a)
                .with_context(|| format!("unknown adapter {a:?} (std, hyper, axum, actix, smol)"))
        })
        .collect::<Result<_>>()?;
    for m in &args.modes {
        if !["prefork", "reuseport", "no-prefork"].contains(&m.as_str()) {
            bail!("unknown mode {m:?} (prefork, reuseport, no-prefork)");
        }
    }
    let scenarios: Vec<&Scenario> = args
        .scenarios
        .iter()
        .map(|s| {
            SCENARIOS
                .iter()
                .find(|sc| sc.name == s)
                .with_context(|| format!("unknown scenario {s:?} (plain, seed)"))
        })
        .collect::<Result<_>>()?;

    // Build the examples in release mode.
    let mut build = cargo();
    build.current_dir(&root).args(["build", "--release"]);
    for (_, package, example) in &adapters {
        build.args(["-p", package, "--example", example]);
    }
    crate::run(&mut build)?;
    let bin = |example: &str| root.join("target/release/examples").join(example);

    let mut md = String::new();
    let mut json = Vec::new();
    writeln!(
        md,
        "machine: {} cpus, {}; kernel {}; load average {}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        mem_total(),
        read_trim("/proc/sys/kernel/osrelease"),
        read_trim("/proc/loadavg")
    )?;
    writeln!(
        md,
        "command: cargo xtask bench {}\n",
        std::env::args().skip(2).collect::<Vec<_>>().join(" ")
    )?;

    if !args.no_load {
        // Every configuration once per round, rounds repeated: a noisy moment spreads over all
        // configurations instead of spoiling one.
        let mut runs: Vec<LoadResult> = Vec::new();
        for round in 1..=args.repeat.max(1) {
            for sc in &scenarios {
                let mut configs: Vec<(String, String)> = Vec::new();
                for (name, _, _) in &adapters {
                    for mode in &args.modes {
                        // std_hello has no single-process mode.
                        if !(*name == "std" && mode == "no-prefork") {
                            configs.push((name.to_string(), mode.clone()));
                        }
                    }
                }
                configs.extend(args.peers.iter().map(|p| (p.clone(), "peer".to_owned())));
                for (name, mode) in configs {
                    let port = free_port()?;
                    let cmd = match ADAPTERS.iter().find(|(n, _, _)| *n == name) {
                        Some((_, _, example)) => {
                            let mut cmd = Command::new(bin(example));
                            cmd.args(["--addr", &format!("127.0.0.1:{port}")])
                                .args(["--workers", &args.workers.to_string()])
                                .args(["--sleep-ms", &sc.sleep_ms.to_string()]);
                            match mode.as_str() {
                                "reuseport" => cmd.arg("--reuseport"),
                                "no-prefork" => cmd.arg("--no-prefork"),
                                _ => &mut cmd,
                            };
                            cmd
                        }
                        None => peer_command(&name, port, sc.sleep_ms, args.workers)?,
                    };
                    let r = load_run(cmd, port, &name, &mode, sc, duration, &args)?;
                    eprintln!("round {round}: {}", row(&r));
                    runs.push(r);
                }
            }
        }
        let loads = medians(&runs);
        writeln!(
            md,
            "## Load (wrk -t{} -d{duration}s after a {}s warm-up; medians of {} run(s) per row)\n",
            args.wrk_threads,
            args.warmup,
            args.repeat.max(1)
        )?;
        writeln!(md, "| server | mode | scenario | conns | rps | p50 ms | p99 ms | errors | CPU % | rps per core | PSS MiB | procs |")?;
        writeln!(md, "|---|---|---|---|---|---|---|---|---|---|---|---|")?;
        for r in &loads {
            writeln!(md, "{}", row(r))?;
            json.push(format!(
                "{{\"server\":\"{}\",\"mode\":\"{}\",\"scenario\":\"{}\",\"conns\":{},\"rps\":{:.0},\"p50_ms\":{:.3},\"p99_ms\":{:.3},\"errors\":{},\"cpu_pct\":{:.0},\"pss_mb\":{:.1},\"procs\":{}}}",
                r.server, r.mode, r.scenario, r.conns, r.rps, r.p50_ms, r.p99_ms, r.errors, r.cpu_pct, r.pss_mb, r.procs
            ));
        }
        md.push('\n');
        md.push_str(&goals(&loads));
    }

    let mut process_json = Vec::new();
    if !args.no_process {
        writeln!(
            md,
            "\n## Process model (medians of {} trials, {} workers)\n",
            args.trials, args.workers
        )?;
        writeln!(md, "| server | start-up ms | respawn ms | graceful stop ms | master RSS MiB | master PSS MiB | master private MiB | worker PSS MiB |")?;
        writeln!(md, "|---|---|---|---|---|---|---|---|")?;
        for (name, _, example) in &adapters {
            let p = process_costs(&bin(example), args.workers, args.trials)
                .with_context(|| format!("process-model costs of {example}"))?;
            let line = format!(
                "| {name} | {:.1} | {:.1} | {:.1} | {:.2} | {:.2} | {:.2} | {:.2} |",
                p.startup_ms,
                p.respawn_ms,
                p.stop_ms,
                p.master_rss_mb,
                p.master_pss_mb,
                p.master_uss_mb,
                p.worker_pss_mb
            );
            eprintln!("{line}");
            writeln!(md, "{line}")?;
            process_json.push(format!(
                "{{\"server\":\"{name}\",\"startup_ms\":{:.2},\"respawn_ms\":{:.2},\"stop_ms\":{:.2},\"master_rss_mb\":{:.2},\"master_pss_mb\":{:.2},\"master_private_mb\":{:.2},\"worker_pss_mb\":{:.2}}}",
                p.startup_ms, p.respawn_ms, p.stop_ms, p.master_rss_mb, p.master_pss_mb, p.master_uss_mb, p.worker_pss_mb
            ));
        }
    }

    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs();
    let json_path = out_dir.join(format!("bench-{stamp}.json"));
    std::fs::write(
        &json_path,
        format!(
            "{{\"load\":[{}],\"process\":[{}]}}\n",
            json.join(","),
            process_json.join(",")
        ),
    )?;
    let md_path = out_dir.join(format!("bench-{stamp}.md"));
    std::fs::write(&md_path, &md)?;
    println!("{md}");
    println!("written: {} and {}", md_path.display(), json_path.display());
    Ok(())
}

/// One row per configuration (in first-run order): the median of each figure over its runs,
/// errors summed.
fn medians(runs: &[LoadResult]) -> Vec<LoadResult> {
    let key = |r: &LoadResult| (r.server.clone(), r.mode.clone(), r.scenario.clone());
    let mut out: Vec<LoadResult> = Vec::new();
    for r in runs {
        if out.iter().any(|o| key(o) == key(r)) {
            continue;
        }
        let same: Vec<&LoadResult> = runs.iter().filter(|o| key(o) == key(r)).collect();
        let med = |f: fn(&LoadResult) -> f64| median(same.iter().map(|r| f(r)).collect());
        out.push(LoadResult {
            rps: med(|r| r.rps),
            p50_ms: med(|r| r.p50_ms),
            p99_ms: med(|r| r.p99_ms),
            cpu_pct: med(|r| r.cpu_pct),
            pss_mb: med(|r| r.pss_mb),
            errors: same.iter().map(|r| r.errors).sum(),
            ..r.clone()
        });
    }
    out
}

fn row(r: &LoadResult) -> String {
    // Requests per second of server CPU: steadier than rps when wrk shares the cores.
    let per_core = if r.cpu_pct > 0.0 {
        r.rps / (r.cpu_pct / 100.0)
    } else {
        f64::NAN
    };
    format!(
        "| {} | {} | {} | {} | {:.0} | {:.2} | {:.2} | {} | {:.0} | {:.0} | {:.1} | {} |",
        r.server,
        r.mode,
        r.scenario,
        r.conns,
        r.rps,
        r.p50_ms,
        r.p99_ms,
        r.errors,
        r.cpu_pct,
        per_core,
        r.pss_mb,
        r.procs
    )
}

/// The goals of the benchmark issue, checked against one run's figures.
fn goals(loads: &[LoadResult]) -> String {
    let find = |server: &str, mode: &str, sc: &str| {
        loads
            .iter()
            .find(|r| r.server == server && r.mode == mode && r.scenario == sc)
    };
    let mut out = String::from("### Ratios in this run\n\n");
    if let (Some(a), Some(f)) = (
        find("axum", "prefork", "plain"),
        find("fasthttp-prefork", "peer", "plain"),
    ) {
        let _ = writeln!(
            out,
            "- axum prefork / fasthttp prefork, plain: rps x{:.2} (goal >= 1.10), rps per server core x{:.2}, p99 {:.2} vs {:.2} ms (goal: no worse)",
            a.rps / f.rps,
            (a.rps / a.cpu_pct) / (f.rps / f.cpu_pct),
            a.p99_ms,
            f.p99_ms
        );
    }
    for (name, _, _) in ADAPTERS {
        for sc in ["plain", "seed"] {
            if let (Some(p), Some(n)) = (find(name, "prefork", sc), find(name, "no-prefork", sc)) {
                let _ = writeln!(
                    out,
                    "- {name} {sc}: prefork / no-prefork rps x{:.2}, p99 {:.2} vs {:.2} ms (goal: prefork >= no-prefork)",
                    p.rps / n.rps,
                    p.p99_ms,
                    n.p99_ms
                );
            }
        }
        if let Some(s) = find(name, "prefork", "seed") {
            let _ = writeln!(
                out,
                "- {name} seed: {:.1}% of the 5120 rps ceiling (goal >= 97%), p99 {:.1} ms (goal <= 105)",
                s.rps / 5120.0 * 100.0,
                s.p99_ms
            );
        }
    }
    out
}

fn check_wrk() -> Result<()> {
    match Command::new("wrk").arg("--version").output() {
        Ok(_) => Ok(()),
        Err(_) => bail!(
            "wrk not found: install it with `apt-get install wrk` (or run ../shared/bench/setup.sh, which also builds the peers)"
        ),
    }
}

fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn read_trim(path: &str) -> String {
    std::fs::read_to_string(path)
        .map(|s| s.trim().to_owned())
        .unwrap_or_default()
}

fn mem_total() -> String {
    read_trim("/proc/meminfo")
        .lines()
        .find(|l| l.starts_with("MemTotal"))
        .map(|l| l.split_whitespace().skip(1).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

fn shared_bench() -> PathBuf {
    project_root().join("../shared/bench")
}

fn peer_command(peer: &str, port: u16, sleep_ms: u64, workers: usize) -> Result<Command> {
    let out = std::env::var("BENCH_OUT").unwrap_or_else(|_| "/tmp/prefork-bench".into());
    let fasthttp = PathBuf::from(&out).join("bin/fasthttp-peer");
    let addr = format!("127.0.0.1:{port}");
    let cmd = match peer {
        "fasthttp-prefork" | "fasthttp" => {
            if !fasthttp.exists() {
                bail!(
                    "{} is missing: run ../shared/bench/setup.sh",
                    fasthttp.display()
                );
            }
            let mut c = Command::new(&fasthttp);
            if peer == "fasthttp-prefork" {
                c.arg("-prefork");
            }
            c.args(["-addr", &addr, "-sleep", &format!("{sleep_ms}ms")]);
            c
        }
        "node-cluster" => {
            let mut c = Command::new("node");
            c.arg(shared_bench().join("peers/node-cluster/server.js"))
                .args(["--addr", &addr, "--workers", &workers.to_string()])
                .args(["--sleep", &sleep_ms.to_string()]);
            c
        }
        "nginx" => {
            let mut c = Command::new(shared_bench().join("peers/nginx/start.sh"));
            c.args([port.to_string(), workers.to_string(), sleep_ms.to_string()]);
            c
        }
        other => bail!("unknown peer {other:?} (fasthttp-prefork, fasthttp, node-cluster, nginx)"),
    };
    Ok(cmd)
}

/// Every pid in the tree under `root`, root included.
fn tree(root: u32) -> Vec<u32> {
    let mut all = vec![root];
    let mut i = 0;
    while i < all.len() {
        all.extend(children_of(all[i]));
        i += 1;
    }
    all
}

fn pss_kb(pid: u32) -> u64 {
    proc_field(&format!("/proc/{pid}/smaps_rollup"), "Pss:")
}

fn rss_kb(pid: u32) -> u64 {
    proc_field(&format!("/proc/{pid}/status"), "VmRSS:")
}

fn proc_field(path: &str, key: &str) -> u64 {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(key))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

/// utime + stime of a process, in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0;
    };
    let rest = stat.rsplit(')').next().unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    // After ")": state is field 0; utime and stime are fields 11 and 12.
    let get = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    get(11) + get(12)
}

fn clk_tck() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

struct Started {
    child: Child,
}

impl Started {
    fn start(mut cmd: Command) -> Result<Started> {
        use std::os::unix::process::CommandExt;
        cmd.env("RUST_LOG", "warn")
            .env_remove("PREFORK_CHILD")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0);
        let child = cmd.spawn().with_context(|| format!("starting {cmd:?}"))?;
        Ok(Started { child })
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn stop(mut self) {
        let pids = tree(self.pid());
        let pgid = nix::unistd::Pid::from_raw(-(self.pid() as i32));
        let _ = nix::sys::signal::kill(pgid, Sig::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        for pid in pids.into_iter().chain(tree(self.pid())) {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), Sig::SIGKILL);
        }
        let _ = nix::sys::signal::kill(pgid, Sig::SIGKILL);
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[allow(clippy::too_many_arguments)]
fn load_run(
    cmd: Command,
    port: u16,
    server: &str,
    mode: &str,
    sc: &Scenario,
    duration: u64,
    args: &BenchArgs,
) -> Result<LoadResult> {
    let server_proc = Started::start(cmd)?;
    let addr = format!("127.0.0.1:{port}").parse()?;
    let up = prefork_testutil::wait_until(Duration::from_secs(15), || {
        get(addr, "/").map(|r| r.status == 200).unwrap_or(false)
    });
    if !up {
        server_proc.stop();
        bail!("{server} ({mode}) did not answer on {addr}");
    }
    // Let every worker come up before the load.
    std::thread::sleep(Duration::from_millis(300));
    let url = format!("http://127.0.0.1:{port}/");
    if args.warmup > 0 {
        wrk(&url, args.warmup, sc.conns, args.wrk_threads)?;
    }
    let root = server_proc.pid();
    let stop = Arc::new(AtomicBool::new(false));
    let peak = Arc::new(Mutex::new((0u64, 0usize)));
    let sampler = {
        let (stop, peak) = (stop.clone(), peak.clone());
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(500));
            while !stop.load(Ordering::SeqCst) {
                let pids = tree(root);
                let pss: u64 = pids.iter().map(|&p| pss_kb(p)).sum();
                let mut pk = peak.lock().unwrap();
                pk.0 = pk.0.max(pss);
                pk.1 = pk.1.max(pids.len());
                drop(pk);
                std::thread::sleep(Duration::from_millis(1000));
            }
        })
    };
    let cpu0: u64 = tree(root).iter().map(|&p| cpu_ticks(p)).sum();
    let t0 = Instant::now();
    let out = wrk(&url, duration, sc.conns, args.wrk_threads)?;
    let cpu1: u64 = tree(root).iter().map(|&p| cpu_ticks(p)).sum();
    let secs = t0.elapsed().as_secs_f64();
    stop.store(true, Ordering::SeqCst);
    let _ = sampler.join();
    server_proc.stop();
    let (pss, procs) = *peak.lock().unwrap();
    let mut r = parse_wrk(&out).with_context(|| format!("parsing wrk output:\n{out}"))?;
    r.server = server.to_owned();
    r.mode = mode.to_owned();
    r.scenario = sc.name.to_owned();
    r.conns = sc.conns;
    r.cpu_pct = cpu1.saturating_sub(cpu0) as f64 / clk_tck() / secs * 100.0;
    r.pss_mb = pss as f64 / 1024.0;
    r.procs = procs;
    Ok(r)
}

fn wrk(url: &str, secs: u64, conns: usize, threads: usize) -> Result<String> {
    let out = Command::new("timeout")
        .args(["-k", "5", &(secs + 15).to_string(), "wrk"])
        .args(["-t", &threads.to_string(), "-c", &conns.to_string()])
        .args([
            "-d",
            &format!("{secs}s"),
            "--timeout",
            "2s",
            "--latency",
            url,
        ])
        .output()
        .context("running wrk")?;
    if !out.status.success() {
        bail!("wrk failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Milliseconds from a wrk latency such as `512.00us`, `4.55ms` or `1.02s`.
fn wrk_ms(v: &str) -> Option<f64> {
    let split = v.find(|c: char| c.is_ascii_alphabetic())?;
    let (num, unit) = v.split_at(split);
    let n: f64 = num.parse().ok()?;
    Some(match unit {
        "us" => n / 1000.0,
        "ms" => n,
        "s" => n * 1000.0,
        "m" => n * 60_000.0,
        _ => return None,
    })
}

fn parse_wrk(out: &str) -> Option<LoadResult> {
    let mut r = LoadResult::default();
    let mut have_rps = false;
    for line in out.lines() {
        let t = line.trim();
        if let Some(v) = t.strip_prefix("Requests/sec:") {
            r.rps = v.trim().parse().ok()?;
            have_rps = true;
        } else if let Some(v) = t.strip_prefix("50%") {
            r.p50_ms = wrk_ms(v.trim())?;
        } else if let Some(v) = t.strip_prefix("99%") {
            r.p99_ms = wrk_ms(v.trim())?;
        } else if let Some(v) = t.strip_prefix("Socket errors:") {
            r.errors += v
                .split(',')
                .filter_map(|p| p.split_whitespace().last()?.parse::<u64>().ok())
                .sum::<u64>();
        } else if let Some(v) = t.strip_prefix("Non-2xx or 3xx responses:") {
            r.errors += v.trim().parse::<u64>().unwrap_or(0);
        }
    }
    have_rps.then_some(r)
}

struct ProcessCosts {
    startup_ms: f64,
    respawn_ms: f64,
    stop_ms: f64,
    master_rss_mb: f64,
    master_pss_mb: f64,
    master_uss_mb: f64,
    worker_pss_mb: f64,
}

fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// Start-up (launch to every worker ready), respawn (SIGKILL of a worker to its replacement's
/// ready), graceful stop of idle workers, and idle memory: medians over `trials` runs.
fn process_costs(bin: &PathBuf, workers: usize, trials: usize) -> Result<ProcessCosts> {
    let mut startup = Vec::new();
    let mut respawn = Vec::new();
    let mut stop = Vec::new();
    let mut rss = Vec::new();
    let mut master_pss = Vec::new();
    let mut uss = Vec::new();
    let mut pss = Vec::new();
    let args = ["--addr", "127.0.0.1:0", "--workers", &workers.to_string()];
    let args: Vec<&str> = args.to_vec();
    for _ in 0..trials.max(1) {
        let t0 = Instant::now();
        let mut s = Server::start_with_env(bin, &args, &[("RUST_LOG", "prefork_core=debug")]);
        s.wait_ready();
        startup.push(t0.elapsed().as_secs_f64() * 1000.0);
        // Idle memory, once the workers are up.
        std::thread::sleep(Duration::from_millis(100));
        rss.push(rss_kb(s.pid()) as f64 / 1024.0);
        master_pss.push(pss_kb(s.pid()) as f64 / 1024.0);
        let rollup = format!("/proc/{}/smaps_rollup", s.pid());
        let private = proc_field(&rollup, "Private_Clean:") + proc_field(&rollup, "Private_Dirty:");
        uss.push(private as f64 / 1024.0);
        let kids = s.children();
        if !kids.is_empty() {
            pss.push(
                kids.iter().map(|&p| pss_kb(p)).sum::<u64>() as f64 / 1024.0 / kids.len() as f64,
            );
        }
        // Respawn: kill one worker, wait for the replacement's `worker ready` line.
        let before = s.log().matches("worker ready").count();
        if let Some(&victim) = kids.first() {
            let t = Instant::now();
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(victim as i32), Sig::SIGKILL);
            if s.wait_log("worker ready", before + 1) {
                respawn.push(t.elapsed().as_secs_f64() * 1000.0);
            }
        }
        let t = Instant::now();
        s.signal(Sig::SIGTERM);
        if s.wait_exit(Duration::from_secs(30)).is_some() {
            stop.push(t.elapsed().as_secs_f64() * 1000.0);
        }
    }
    Ok(ProcessCosts {
        startup_ms: median(startup),
        respawn_ms: median(respawn),
        stop_ms: median(stop),
        master_rss_mb: median(rss),
        master_pss_mb: median(master_pss),
        master_uss_mb: median(uss),
        worker_pss_mb: median(pss),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_wrk_output() {
        let out = "Running 5s test @ http://127.0.0.1:1/\n  1 threads and 64 connections\n  Latency Distribution\n     50%  512.00us\n     75%    1.00ms\n     90%    2.00ms\n     99%    8.08ms\n  1000 requests in 5.00s, 1.00MB read\n  Socket errors: connect 1, read 2, write 0, timeout 3\n  Non-2xx or 3xx responses: 4\nRequests/sec:  57172.12\n";
        let r = parse_wrk(out).unwrap();
        assert_eq!(r.rps, 57172.12);
        assert_eq!(r.p50_ms, 0.512);
        assert_eq!(r.p99_ms, 8.08);
        assert_eq!(r.errors, 10);
        assert_eq!(wrk_ms("1.02s"), Some(1020.0));
    }
}
