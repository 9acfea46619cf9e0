//! `cargo xtask bench`: load benchmarks of our example servers against peers (Go fasthttp
//! prefork, nginx, Node cluster; see `benches/peers/`), in interleaved rounds, with medians and
//! spreads, and the process-model costs.
//!
//! Everything runs on 127.0.0.1; every load run is bounded by `--duration` (and a `timeout`).
//!
//! - `load`: wrk and h2load, driven and parsed
//! - `server`: ours and the peers, started (CPU pin, fd limit) and stopped
//! - `scenario`: what each scenario runs, one measured run
//! - `procfs`: memory and CPU of process trees
//! - `process`: start-up, respawn, stop and idle memory of ours
//! - `workers`: how a run's requests spread over our workers (the master's control socket)
//! - `connmem`: memory per idle keep-alive connection (`cargo xtask connmem`)
//! - `report` and `chart`: medians, spreads, per-round ratios; Markdown, JSON, SVG

use std::fmt::Write as _;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use serde_json::json;

use crate::{cargo, project_root};

mod chart;
pub(crate) mod connmem;
mod load;
mod process;
pub(crate) mod procfs;
mod report;
mod scenario;
mod server;
mod workers;

use scenario::{Case, Scenario, Settings};
use server::{Adapter, Mode, Peer, Target};

/// Options of `cargo xtask bench`.
#[derive(clap::Args, Debug)]
pub(crate) struct BenchArgs {
    /// Our adapters to measure (their example programs, built in release mode).
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "hyper,axum,actix,smol"
    )]
    adapters: Vec<Adapter>,
    /// Our modes in the plain and seed scenarios (the others run prefork; pinned also
    /// no-prefork; stats-off runs in plain only; no-balance in plain, churn and pinned).
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "prefork,reuseport,no-prefork,stats-off"
    )]
    modes: Vec<Mode>,
    /// Scenarios to run.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "plain,seed,churn,tls-handshake,tls-keepalive,h2,c10k,pinned,reload"
    )]
    scenarios: Vec<Scenario>,
    /// Peers from benches/peers/ to run the same way, in the same rounds (run
    /// benches/peers/setup.sh once first).
    #[arg(long, value_enum, value_delimiter = ',')]
    peers: Vec<Peer>,
    /// Seconds of measured load per run (at most 60).
    #[arg(long, default_value_t = 5)]
    duration: u64,
    /// Seconds of warm-up load before each measured run.
    #[arg(long, default_value_t = 1)]
    warmup: u64,
    /// Worker processes (threads for no-prefork, workers of the peers); pinned uses 1.
    #[arg(long, default_value_t = 2)]
    workers: usize,
    /// wrk and h2load threads.
    #[arg(long, default_value_t = 1)]
    wrk_threads: usize,
    /// Rounds: every configuration runs once per round, the rounds one after another, and the
    /// report gives the median and min–max over the rounds.
    #[arg(long, default_value_t = 5)]
    repeat: usize,
    /// Connections of the c10k scenario.
    #[arg(long, default_value_t = 10_000)]
    c10k_conns: usize,
    /// Trials of each process-model measurement (medians are reported).
    #[arg(long, default_value_t = 20)]
    trials: usize,
    /// A smoke run: 1 round of 1 s without warm-up, 3 process-model trials.
    #[arg(long)]
    quick: bool,
    /// Print the runs and an estimate of the time they take, and stop.
    #[arg(long)]
    dry_run: bool,
    /// Use the release examples as they are (no `cargo build --release`).
    #[arg(long)]
    no_build: bool,
    /// Skip the load runs.
    #[arg(long)]
    no_load: bool,
    /// Skip the process-model measurements.
    #[arg(long)]
    no_process: bool,
}

/// Every (case, target) of one round, in order.
fn plan(args: &BenchArgs) -> Vec<(Case, Vec<Target>)> {
    let mut out = Vec::new();
    for &sc in &args.scenarios {
        if sc == Scenario::Pinned && std::thread::available_parallelism().map_or(1, |n| n.get()) < 2
        {
            eprintln!("pinned needs 2 CPUs: skipped");
            continue;
        }
        for case in scenario::cases(sc, args.c10k_conns) {
            let targets = scenario::targets(&case, &args.adapters, &args.modes, &args.peers);
            if !targets.is_empty() {
                out.push((case, targets));
            }
        }
    }
    out
}

/// Seconds one run of `case` takes, roughly (start, warm-up, load, stop).
fn estimate(case: &Case, secs: u64, warmup: u64) -> f64 {
    let mut t = 1.5 + (warmup + secs) as f64;
    match case.scenario {
        Scenario::Reload => t += secs as f64,
        Scenario::C10k => t += 7.0,
        _ => {}
    }
    t
}

pub(crate) fn run(mut args: BenchArgs) -> Result<()> {
    if args.quick {
        args.duration = 1;
        args.warmup = 0;
        args.repeat = 1;
        args.trials = 3;
    }
    args.duration = args.duration.clamp(1, 60);
    let repeat = args.repeat.max(1);
    let root = project_root();
    let out_dir = root.join("target/bench");
    let plan = if args.no_load {
        Vec::new()
    } else {
        plan(&args)
    };

    let runs: usize = plan.iter().map(|(_, t)| t.len()).sum::<usize>() * repeat;
    let secs: f64 = plan
        .iter()
        .map(|(c, t)| estimate(c, args.duration, args.warmup) * t.len() as f64)
        .sum::<f64>()
        * repeat as f64;
    let process_secs = if args.no_process {
        0.0
    } else {
        args.adapters.len() as f64 * args.trials as f64 * 0.15
    };
    eprintln!(
        "bench: {runs} load runs ({} per round, {repeat} rounds), about {:.0} min with the process model",
        runs / repeat,
        (secs + process_secs) / 60.0
    );
    if args.dry_run {
        for (case, targets) in &plan {
            let names: Vec<String> = targets.iter().map(|t| t.label()).collect();
            eprintln!("  {}: {}", case.label, names.join(", "));
        }
        return Ok(());
    }

    let wrk_needed = plan.iter().any(|(c, _)| c.streams == 0);
    if wrk_needed {
        load::check("wrk")?;
    }
    if plan.iter().any(|(c, _)| c.streams > 0) {
        load::check("h2load")?;
    }
    if !args.no_build {
        let mut build = cargo();
        build.current_dir(&root).args(["build", "--release"]);
        for a in &args.adapters {
            let (package, example) = a.example();
            build.args(["-p", package, "--example", example]);
        }
        crate::run(&mut build)?;
    }
    for a in &args.adapters {
        if !a.bin().exists() {
            bail!(
                "{} is missing: build it or drop --no-build",
                a.bin().display()
            );
        }
    }

    let stamp = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
    let log_dir = out_dir.join(format!("logs-{stamp}"));
    std::fs::create_dir_all(&log_dir).with_context(|| format!("creating {}", log_dir.display()))?;
    let certs = prefork_testutil::TestCerts::generate();
    let cert_dir = out_dir.join("certs");
    std::fs::create_dir_all(&cert_dir)?;
    let (cert, key) = certs.write_to(&cert_dir);
    let settings = Settings {
        secs: args.duration,
        warmup: args.warmup,
        workers: args.workers,
        wrk_threads: args.wrk_threads,
        certs: (cert, key),
        ca_pem: certs.ca_pem.clone(),
        log_dir: log_dir.clone(),
    };

    let mut md = String::new();
    writeln!(
        md,
        "machine: {} cpus, {}; kernel {}; load average before the run {}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        procfs::mem_total(),
        procfs::read_trim("/proc/sys/kernel/osrelease"),
        procfs::read_trim("/proc/loadavg")
    )?;
    writeln!(
        md,
        "command: cargo xtask bench {}\n",
        std::env::args().skip(2).collect::<Vec<_>>().join(" ")
    )?;

    // Every configuration once per round, the rounds one after another: a noisy moment spreads
    // over all configurations instead of spoiling one. Within a round the order rotates, so no
    // server always runs first (or right after the heaviest one).
    let mut samples = Vec::new();
    let mut failures = Vec::new();
    let started = std::time::Instant::now();
    for round in 1..=repeat {
        for (case, targets) in &plan {
            let n = targets.len();
            for i in 0..n {
                let target = targets[(i + round - 1) % n];
                match scenario::run(target, case, round, &settings) {
                    Ok(s) => {
                        eprintln!(
                            "[{:>4.0}s] round {round}/{repeat} {}: {}: {:.0} rps, p99 {:.2} ms, {} errors, CPU {:.0} %, PSS {:.1} MiB{}",
                            started.elapsed().as_secs_f64(),
                            case.label,
                            target.label(),
                            s.rps,
                            s.p99_ms,
                            s.errors,
                            s.cpu_pct,
                            s.pss_mb,
                            s.reload.as_ref().map_or(String::new(), |r| format!(", reload: {r}"))
                        );
                        samples.push(s);
                    }
                    Err(e) => {
                        let msg =
                            format!("round {round} {}: {}: {e:#}", case.label, target.label());
                        eprintln!("FAILED {msg}");
                        failures.push(msg);
                    }
                }
                // Let TIME_WAIT sockets and the page cache settle a little between servers.
                std::thread::sleep(Duration::from_millis(200));
            }
        }
    }

    if !plan.is_empty() {
        writeln!(
            md,
            "## Load ({} round(s), {} s of load after a {} s warm-up per run, {} workers, {} wrk/h2load thread(s); median (min–max) over the rounds)\n",
            repeat, args.duration, args.warmup, args.workers, args.wrk_threads
        )?;
        md.push_str(&report::markdown(&samples));
        if !failures.is_empty() {
            writeln!(md, "### Failed runs\n")?;
            for f in &failures {
                writeln!(md, "- {}", f.replace('\n', " "))?;
            }
            md.push('\n');
        }
    }

    let mut process = Vec::new();
    if !args.no_process {
        writeln!(
            md,
            "## Process model (medians of {} trials, {} workers)\n",
            args.trials, args.workers
        )?;
        writeln!(md, "| server | start-up ms | respawn ms | reload ms | graceful stop ms | master RSS MiB | master PSS MiB | master private MiB | worker PSS MiB |")?;
        writeln!(md, "|---|---|---|---|---|---|---|---|---|")?;
        for a in &args.adapters {
            let p = process::costs(a.name(), &a.bin(), args.workers, args.trials);
            eprintln!("{}", p.row());
            writeln!(md, "{}", p.row())?;
            process.push(p);
        }
        md.push('\n');
    }

    let summaries = report::summarize(&samples);
    let json = json!({
        "stamp": stamp,
        "command": std::env::args().skip(2).collect::<Vec<_>>(),
        "machine": {
            "cpus": std::thread::available_parallelism().map_or(0, |n| n.get()),
            "mem_total": procfs::mem_total(),
            "kernel": procfs::read_trim("/proc/sys/kernel/osrelease"),
        },
        "settings": {
            "duration_s": args.duration,
            "warmup_s": args.warmup,
            "workers": args.workers,
            "wrk_threads": args.wrk_threads,
            "rounds": repeat,
        },
        "samples": samples,
        "summary": summaries,
        "comparisons": report::compare(&samples),
        "failures": failures,
        "process": process,
    });
    let json_path = out_dir.join(format!("bench-{stamp}.json"));
    std::fs::write(&json_path, serde_json::to_string_pretty(&json)? + "\n")?;
    let svg_path = out_dir.join(format!("bench-{stamp}.svg"));
    if !summaries.is_empty() {
        chart::write(&svg_path, &summaries)?;
        writeln!(
            md,
            "![rps and p99 per server and case]({})",
            svg_path.file_name().unwrap().to_string_lossy()
        )?;
    }
    let md_path = out_dir.join(format!("bench-{stamp}.md"));
    std::fs::write(&md_path, &md)?;
    println!("{md}");
    println!(
        "written: {}, {}{} (server logs in {})",
        md_path.display(),
        json_path.display(),
        if summaries.is_empty() {
            String::new()
        } else {
            format!(", {}", svg_path.display())
        },
        log_dir.display()
    );
    Ok(())
}
