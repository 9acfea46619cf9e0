//! `cargo xtask connmem`: memory per idle keep-alive connection, cheaply and precisely.
//!
//! Starts each server (ours: the release example programs; peers as in `bench`) under a soft fd
//! limit of 1024 like the c10k scenario, reads the PSS of the server tree idle, then opens
//! keep-alive connections up to each count of `--conns` (each sends one `GET / HTTP/1.1`, reads
//! the whole answer, then stays idle), lets the tree settle and reads the PSS again; per
//! connection = (PSS at N - PSS idle) / N. Last, closes every connection and reads what the tree
//! keeps 5 s later. No load generator, no timing: the figure does not depend on what else runs
//! on the machine.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context, Result};

use super::procfs::{field, pss_kb, tree};
use super::server::{self, Adapter, Launch, Limits, Mode, Peer, Proto, Started, Target};
use crate::project_root;

/// Options of `cargo xtask connmem`.
#[derive(clap::Args, Debug)]
pub(crate) struct ConnmemArgs {
    /// Servers: hyper, axum, actix, smol (ours, prefork mode), fasthttp-prefork, nginx.
    #[arg(long, value_delimiter = ',', default_value = "hyper,axum,smol,actix")]
    servers: Vec<String>,
    /// Connection counts to measure at, ascending (connections are added, not reopened).
    #[arg(long, value_delimiter = ',', default_value = "2000,10000")]
    conns: Vec<usize>,
    /// Worker processes.
    #[arg(long, default_value_t = 2)]
    workers: usize,
    /// Extra environment of the server (`KEY=VALUE`, repeatable), e.g. `MALLOC_ARENA_MAX=1`.
    #[arg(long = "env")]
    envs: Vec<String>,
    /// How long to let the tree settle before each reading, milliseconds.
    #[arg(long, default_value_t = 1000)]
    settle_ms: u64,
    /// Rounds per server (each with a fresh server).
    #[arg(long, default_value_t = 1)]
    rounds: usize,
}

fn target(name: &str) -> Result<Target> {
    Ok(match name {
        "hyper" => Target::Ours(Adapter::Hyper, Mode::Prefork),
        "axum" => Target::Ours(Adapter::Axum, Mode::Prefork),
        "actix" => Target::Ours(Adapter::Actix, Mode::Prefork),
        "smol" => Target::Ours(Adapter::Smol, Mode::Prefork),
        "std" => Target::Ours(Adapter::Std, Mode::Prefork),
        "fasthttp-prefork" => Target::Peer(Peer::FasthttpPrefork),
        "fasthttp" => Target::Peer(Peer::Fasthttp),
        "nginx" => Target::Peer(Peer::Nginx),
        other => bail!("unknown server {other:?}"),
    })
}

/// Memory of the server tree: (PSS, Private_Dirty summed, per-process PSS), KiB.
struct Reading {
    pss: u64,
    dirty: u64,
    per_proc: Vec<u64>,
}

fn read_tree(root: u32) -> Reading {
    let pids = tree(root);
    let per_proc: Vec<u64> = pids.iter().map(|&p| pss_kb(p)).collect();
    Reading {
        pss: per_proc.iter().sum(),
        dirty: pids
            .iter()
            .map(|&p| field(&format!("/proc/{p}/smaps_rollup"), "Private_Dirty:"))
            .sum(),
        per_proc,
    }
}

/// One keep-alive connection that has had one answer.
fn open_one(addr: SocketAddr) -> Result<TcpStream> {
    let mut s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    s.write_all(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: connmem\r\n\r\n")?;
    let mut buf = [0u8; 4096];
    let mut got = Vec::new();
    loop {
        let n = s.read(&mut buf)?;
        if n == 0 {
            bail!("closed before the answer ended");
        }
        got.extend_from_slice(&buf[..n]);
        if let Some(end) = got.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&got[..end]).to_ascii_lowercase();
            if !head.starts_with("http/1.1 200") {
                bail!("answer: {head}");
            }
            let len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse().ok())
                .context("no content-length")?;
            if got.len() >= end + 4 + len {
                return Ok(s);
            }
        }
    }
}

fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn kib(v: u64) -> String {
    format!("{:.1} MiB", v as f64 / 1024.0)
}

pub(crate) fn run(args: ConnmemArgs) -> Result<()> {
    let hard = server::hard_nofile(20_000);
    let most = args.conns.iter().copied().max().unwrap_or(0) as u64;
    nix::sys::resource::setrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE, hard, hard)
        .context("raising our fd limit")?;
    if most + 64 > hard {
        bail!("{most} connections need a hard fd limit above {hard}");
    }
    let log_dir: PathBuf = project_root().join("target/bench/connmem");
    std::fs::create_dir_all(&log_dir)?;
    let mut summary = Vec::new();
    for name in &args.servers {
        let t = target(name)?;
        for round in 1..=args.rounds {
            let port = free_port()?;
            let launch = Launch {
                port,
                workers: args.workers,
                sleep_ms: 0,
                proto: Proto::Http,
                certs: None,
                limits: Limits {
                    cpu: None,
                    nofile: Some((1024, hard)),
                },
                rust_log: "warn",
                control_socket: None,
            };
            let mut cmd = server::command(t, &launch)?;
            for kv in &args.envs {
                let (k, v) = kv.split_once('=').context("--env wants KEY=VALUE")?;
                cmd.env(k, v);
            }
            let log = log_dir.join(format!("{name}-r{round}.log"));
            let mut srv = Started::start(cmd, log)?;
            let r = measure(&mut srv, port, &args);
            srv.stop();
            let per = r.with_context(|| format!("{name}, round {round}"))?;
            summary.push((name.clone(), per));
        }
    }
    println!(
        "\nKiB of PSS per idle keep-alive connection ({} workers):",
        args.workers
    );
    for (name, per) in summary {
        let cols: Vec<String> = per.iter().map(|(n, k)| format!("{n}: {k:.1}")).collect();
        println!("  {name:<18} {}", cols.join("  "));
    }
    Ok(())
}

fn measure(srv: &mut Started, port: u16, args: &ConnmemArgs) -> Result<Vec<(usize, f64)>> {
    srv.wait_up(port, Proto::Http, None)?;
    std::thread::sleep(Duration::from_millis(500));
    let root = srv.pid();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse()?;
    let idle = read_tree(root);
    println!(
        "idle: PSS {} (per process {:?} KiB), private dirty {}",
        kib(idle.pss),
        idle.per_proc,
        kib(idle.dirty)
    );
    let mut conns = Vec::new();
    let mut per = Vec::new();
    for &n in &args.conns {
        while conns.len() < n {
            conns.push(open_one(addr).with_context(|| format!("connection {}", conns.len() + 1))?);
        }
        std::thread::sleep(Duration::from_millis(args.settle_ms));
        let at = read_tree(root);
        let k = at.pss.saturating_sub(idle.pss) as f64 / n as f64;
        println!(
            "{n} connections: PSS {} (per process {:?} KiB), private dirty {}: {k:.2} KiB per connection (dirty {:.2})",
            kib(at.pss),
            at.per_proc,
            kib(at.dirty),
            at.dirty.saturating_sub(idle.dirty) as f64 / n as f64
        );
        per.push((n, k));
    }
    drop(conns);
    std::thread::sleep(Duration::from_secs(5));
    let after = read_tree(root);
    println!(
        "5 s after closing: PSS {} (per process {:?} KiB), {} above idle",
        kib(after.pss),
        after.per_proc,
        kib(after.pss.saturating_sub(idle.pss))
    );
    Ok(per)
}
