//! Worker-health scenarios shared by every adapter's tests: the heartbeat watchdog (a blocked
//! event loop, a stopped worker, a stopped master), recycling by requests and by memory under
//! load, 10,000 connections under a soft fd limit of 1024, and stats turned off (`--no-stats`).

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::load::{Load, LoadConfig};
use crate::ops::children;
use crate::{alive, contract, raw_get, temp_dir, wait_until, Server, DEADLINE};

fn signal(pid: u32, sig: Signal) {
    let _ = kill(Pid::from_raw(pid as i32), sig);
}

/// Asks the master's control socket for `stats`.
pub fn stats(socket: &Path) -> serde_json::Value {
    let mut s = UnixStream::connect(socket).expect("control socket");
    s.set_read_timeout(Some(DEADLINE)).unwrap();
    writeln!(s, r#"{{"command":"stats"}}"#).unwrap();
    let mut line = String::new();
    BufReader::new(s).read_line(&mut line).unwrap();
    serde_json::from_str(&line).unwrap_or_else(|e| panic!("{line:?}: {e}"))
}

/// Workers the stats call ready.
pub fn ready_count(stats: &serde_json::Value) -> usize {
    stats["workers"]
        .as_array()
        .map(|w| w.iter().filter(|w| w["ready"] == true).count())
        .unwrap_or(0)
}

/// A worker whose event loop blocks (`GET /block?ms=60000`) is replaced within 5 s under
/// `--worker-timeout 2`, and the master says which worker and for how long it was silent; the
/// other worker keeps answering throughout.
pub fn a_blocked_worker_is_replaced(bin: &Path, extra: &[&str]) {
    let mut args = vec!["--worker-timeout", "2"];
    args.extend_from_slice(extra);
    let s = contract::start(bin, &args);
    s.wait_ready();
    let before = children(&s, 2);
    let mut conn = TcpStream::connect(s.addr).unwrap();
    let victim: u32 = raw_get(&mut conn, "/pid").trim().parse().unwrap();
    assert!(before.contains(&victim));
    write!(conn, "GET /block?ms=60000 HTTP/1.1\r\nhost: test\r\n\r\n").unwrap();
    let load = Load::start(
        s.addr,
        LoadConfig {
            keepalive: 0,
            new_conn: 2,
            path: "/pid".into(),
            request_timeout: Duration::from_secs(3),
            ..LoadConfig::default()
        },
    );
    let t0 = Instant::now();
    assert!(
        wait_until(Duration::from_secs(10), || !alive(victim)),
        "the blocked worker {victim} was not replaced; log:\n{}",
        s.log()
    );
    let took = t0.elapsed();
    // The promise is 5 s (timeout + 1 s of abort grace + a tick); `cargo xtask chaos` times
    // it; the test only bounds it generously.
    assert!(
        took < Duration::from_secs(10),
        "replaced only after {took:?}"
    );
    assert!(
        s.log().contains("stopped sending heartbeats"),
        "{}",
        s.log()
    );
    let after = children(&s, 2);
    assert!(!after.contains(&victim));
    assert!(load.wait_ok(20), "{:?}", load.snapshot());
    let report = load.stop();
    let other = before.iter().find(|&&p| p != victim).copied().unwrap();
    assert!(
        report.pids.get(&other).copied().unwrap_or(0) > 0,
        "the other worker answered throughout: {report:?}"
    );
}

/// Starts `bin` with `--worker-timeout 2` and a control socket, and waits until every worker
/// has sent a heartbeat (the watchdog watches the workers that beat).
fn start_beating(bin: &Path, extra: &[&str], tag: &str) -> (Server, std::path::PathBuf) {
    let sock = temp_dir(tag).join("control.sock");
    let mut args = vec![
        "--worker-timeout",
        "2",
        "--control-socket",
        sock.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    let s = contract::start(bin, &args);
    s.wait_ready();
    let beating = wait_until(DEADLINE, || {
        let st = stats(&sock);
        let ws = st["workers"].as_array().cloned().unwrap_or_default();
        ws.len() == 2 && ws.iter().all(|w| w["heartbeat_age_ms"].is_u64())
    });
    assert!(
        beating,
        "workers send no heartbeat: {}\n{}",
        stats(&sock),
        s.log()
    );
    (s, sock)
}

/// A SIGSTOPped worker is replaced within 5 s under `--worker-timeout 2`.
pub fn a_stopped_worker_is_replaced(bin: &Path, extra: &[&str]) {
    let (s, _sock) = start_beating(bin, extra, "stopped-worker");
    let before = children(&s, 2);
    let victim = *before.iter().next().unwrap();
    signal(victim, Signal::SIGSTOP);
    let t0 = Instant::now();
    let replaced = wait_until(Duration::from_secs(15), || {
        !alive(victim) && s.children().len() == 2
    });
    assert!(replaced, "stopped worker not replaced; log:\n{}", s.log());
    assert!(
        t0.elapsed() < Duration::from_secs(10),
        "after {:?}",
        t0.elapsed()
    );
}

/// The master itself SIGSTOPped for 5 s (past a 2 s worker timeout), then resumed: it kills no
/// worker.
pub fn a_stopped_master_kills_no_worker(bin: &Path, extra: &[&str]) {
    let (s, _sock) = start_beating(bin, extra, "stopped-master");
    let before = children(&s, 2);
    s.signal(Signal::SIGSTOP);
    std::thread::sleep(Duration::from_secs(5));
    s.signal(Signal::SIGCONT);
    // Two watchdog periods after the resume: any false positive would have fired by then.
    std::thread::sleep(Duration::from_secs(3));
    let after: BTreeSet<u32> = s.children().into_iter().collect();
    assert_eq!(after, before, "no worker replaced; log:\n{}", s.log());
    assert!(
        !s.log().contains("stopped sending heartbeats"),
        "{}",
        s.log()
    );
}

/// `--max-requests 500` under load: at least 5 recycles, no failed request, and the control
/// socket never shows fewer than 2 ready workers.
pub fn max_requests_recycles_without_losing_capacity(bin: &Path, extra: &[&str]) {
    let sock = temp_dir("recycle").join("control.sock");
    let mut args = vec![
        "--max-requests",
        "500",
        "--max-requests-jitter",
        "50",
        "--control-socket",
        sock.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    let s = contract::start(bin, &args);
    s.wait_ready();
    let load = Load::start(
        s.addr,
        LoadConfig {
            keepalive: 16,
            new_conn: 2,
            path: "/pid".into(),
            ..LoadConfig::default()
        },
    );
    let mut min_ready = usize::MAX;
    let done = wait_until(Duration::from_secs(60), || {
        min_ready = min_ready.min(ready_count(&stats(&sock)));
        s.log().matches("recycling worker").count() >= 5
    });
    let report = load.stop();
    assert!(done, "fewer than 5 recycles; {report:?}\n{}", s.log());
    assert_eq!(report.failed(), 0, "{report:?}\n{}", s.log());
    assert!(
        min_ready >= 2,
        "capacity dropped to {min_ready} ready workers"
    );
}

/// `--max-memory-mb 64` and `GET /leak?mb=100`: that worker is replaced within 10 s (the master
/// logs the figure), and a concurrent client loses nothing.
pub fn max_memory_replaces_a_leaking_worker(bin: &Path, extra: &[&str]) {
    let mut args = vec!["--max-memory-mb", "64"];
    args.extend_from_slice(extra);
    let s = contract::start(bin, &args);
    s.wait_ready();
    let load = Load::start(
        s.addr,
        LoadConfig {
            keepalive: 4,
            new_conn: 1,
            path: "/pid".into(),
            ..LoadConfig::default()
        },
    );
    let mut conn = TcpStream::connect(s.addr).unwrap();
    let victim: u32 = raw_get(&mut conn, "/pid").trim().parse().unwrap();
    raw_get(&mut conn, "/leak?mb=100");
    drop(conn);
    assert!(
        wait_until(Duration::from_secs(30), || !alive(victim)),
        "the leaking worker was not replaced; log:\n{}",
        s.log()
    );
    assert!(s.log().contains("over its memory limit"), "{}", s.log());
    children(&s, 2);
    assert!(load.wait_ok(20));
    let report = load.stop();
    assert_eq!(report.failed(), 0, "{report:?}\n{}", s.log());
}

/// Sets the soft RLIMIT_NOFILE of the process about to exec (a test's server) to `soft`.
fn with_soft_nofile(cmd: &mut std::process::Command, soft: u64) {
    use std::os::unix::process::CommandExt;
    // SAFETY: the closure runs between fork and exec and only calls getrlimit/setrlimit, which
    // are async-signal-safe system calls.
    unsafe {
        cmd.pre_exec(move || {
            use nix::sys::resource::{getrlimit, setrlimit, Resource};
            let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE)?;
            setrlimit(Resource::RLIMIT_NOFILE, soft.min(hard), hard)?;
            Ok(())
        });
    }
}

/// 10,000 concurrent keep-alive connections against 2 workers started under a soft fd limit of
/// 1024 (hard limit ≥ 20000): every connection is accepted (the workers raised their soft limit
/// to the hard one) and answered, and nothing logs "Too many open files".
pub fn ten_thousand_connections_under_a_soft_limit_of_1024(bin: &Path, extra: &[&str]) {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
    if hard < 20_000 {
        eprintln!("skipped: the hard RLIMIT_NOFILE is {hard}, below 20000");
        return;
    }
    // This test process needs 10,000 descriptors of its own.
    if soft < hard {
        setrlimit(Resource::RLIMIT_NOFILE, hard, hard).unwrap();
    }
    let sock = temp_dir("c10k").join("control.sock");
    let mut args = vec![
        "--addr",
        "127.0.0.1:0",
        "--workers",
        "2",
        "--control-socket",
        sock.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    let s = Server::start_with(&bin.to_path_buf(), &args, |cmd| with_soft_nofile(cmd, 1024));
    s.wait_ready();
    let mut conns = Vec::with_capacity(10_000);
    for i in 0..10_000 {
        match TcpStream::connect(s.addr) {
            Ok(c) => conns.push(c),
            Err(e) => panic!("connection {i}: {e}"),
        }
    }
    // Every connection is accepted and counted by a worker.
    let all = wait_until(Duration::from_secs(60), || {
        let st = stats(&sock);
        st["workers"]
            .as_array()
            .map(|w| {
                w.iter()
                    .map(|w| w["connections"].as_u64().unwrap_or(0))
                    .sum::<u64>()
            })
            .unwrap_or(0)
            >= 10_000
    });
    assert!(
        all,
        "not every connection was accepted: {}\n{}",
        stats(&sock),
        s.log()
    );
    // And answered: a request on the last and the first few.
    for c in conns.iter_mut().rev().take(3) {
        raw_get(c, "/");
    }
    assert!(!s.log().contains("Too many open files"), "{}", s.log());
}

/// `--no-stats` (stats off, no watchdog): the server answers, the master's stats show zero
/// requests and connections and no heartbeat for every worker; and `--max-requests` with
/// `--no-stats` is refused before any worker starts, with a message that names both.
pub fn no_stats_reports_zeros_and_refuses_max_requests(bin: &Path, extra: &[&str]) {
    let sock = temp_dir("no-stats").join("control.sock");
    let mut args = vec!["--no-stats", "--control-socket", sock.to_str().unwrap()];
    args.extend_from_slice(extra);
    let s = contract::start(bin, &args);
    s.wait_ready();
    // Keep-alive requests and fresh connections, held open while the stats are read.
    let mut held = TcpStream::connect(s.addr).unwrap();
    for _ in 0..20 {
        raw_get(&mut held, "/pid");
        raw_get(&mut TcpStream::connect(s.addr).unwrap(), "/pid");
    }
    // Past a default heartbeat interval: counted requests would have been reported by now.
    std::thread::sleep(prefork_core::DEFAULT_HEARTBEAT_INTERVAL * 3 / 2);
    let st = stats(&sock);
    let workers = st["workers"].as_array().cloned().unwrap_or_default();
    assert_eq!(workers.len(), 2, "{st}");
    for w in &workers {
        assert_eq!(w["ready"], true, "{st}");
        assert_eq!(w["requests"], 0, "nothing counted: {st}");
        assert_eq!(w["connections"], 0, "nothing counted: {st}");
        assert!(w["heartbeat_age_ms"].is_null(), "no heartbeat: {st}");
    }
    drop(s);

    let (status, log) = Server::run_to_exit(
        &bin.to_path_buf(),
        &[
            "--addr",
            "127.0.0.1:0",
            "--workers",
            "2",
            "--no-stats",
            "--max-requests",
            "100",
        ],
        &[],
    );
    assert_eq!(status.code(), Some(1), "{log}");
    assert!(
        log.contains("max_requests cannot work with stats(false)"),
        "{log}"
    );
    assert!(!log.contains("worker started"), "{log}");
}
