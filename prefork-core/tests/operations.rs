//! The deploy-safe master on the real `std_hello`: a replaced or broken binary, SIGHUP rolling
//! reloads, TTIN/TTOU, stray signals, crashes without a lifetime budget, the control socket.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use prefork_testutil::{
    alive, contract, get, raw_get, server_has_read, temp_dir, wait_for_distinct_pids, wait_until,
    Server, Sig, DEADLINE,
};

fn bin() -> PathBuf {
    prefork_testutil::example_bin("std_hello")
}

/// A copy of std_hello in a directory of its own, so the test can replace it.
fn copied_bin(tag: &str) -> PathBuf {
    let dir = temp_dir(tag);
    let path = dir.join("std_hello");
    std::fs::copy(bin(), &path).unwrap();
    path
}

/// Replaces `path` the way `cargo build`, a package upgrade or a deploy script does: a new file
/// renamed over the old one (the running master's image becomes "(deleted)").
fn replace_with(path: &Path, contents: &[u8], executable: bool) {
    use std::os::unix::fs::PermissionsExt;
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, contents).unwrap();
    let mode = if executable { 0o755 } else { 0o644 };
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(mode)).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

fn exe_of(pid: u32) -> String {
    std::fs::read_link(format!("/proc/{pid}/exe"))
        .map(|p| p.display().to_string())
        .unwrap_or_default()
}

fn start(bin: &Path, extra: &[&str]) -> Server {
    let s = contract::start(bin, extra);
    s.wait_ready();
    s
}

/// The pids that answer `/pid` once exactly `n` distinct ones do (bounded).
fn serving(s: &Server, n: usize) -> BTreeSet<u32> {
    let pids = wait_for_distinct_pids(s.addr, n);
    assert_eq!(pids.len(), n, "log:\n{}", s.log());
    pids
}

/// The master's live children, once there are exactly `n` of them (bounded).
fn children(s: &Server, n: usize) -> BTreeSet<u32> {
    assert!(
        wait_until(DEADLINE, || s.children().len() == n),
        "expected {n} workers, have {:?}; log:\n{}",
        s.children(),
        s.log()
    );
    s.children().into_iter().collect()
}

#[test]
fn a_replaced_binary_still_respawns_and_a_reload_runs_the_new_file() {
    let path = copied_bin("replaced");
    let s = start(&path, &[]);
    let before = children(&s, 2);
    replace_with(&path, &std::fs::read(bin()).unwrap(), true);
    let victim = *before.iter().next().unwrap();
    assert!(exe_of(victim).ends_with("(deleted)"), "{}", exe_of(victim));

    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(victim as i32), Sig::SIGKILL);
    assert!(s.wait_log("worker started", 3), "no respawn:\n{}", s.log());
    assert!(wait_until(DEADLINE, || !alive(victim)));
    let after_crash = serving(&s, 2);
    assert!(!after_crash.contains(&victim));
    assert!(!s.log().contains("No such file"), "{}", s.log());

    s.signal(Sig::SIGHUP);
    assert!(s.wait_log("reload complete", 1), "{}", s.log());
    let reloaded = children(&s, 2);
    assert!(reloaded.is_disjoint(&after_crash), "every worker replaced");
    for pid in &reloaded {
        let exe = exe_of(*pid);
        assert!(
            exe.ends_with("std_hello") && !exe.contains("deleted"),
            "worker {pid} runs {exe:?}"
        );
    }
    assert_eq!(serving(&s, 2), reloaded);
}

#[test]
fn a_broken_binary_fails_the_reload_and_the_old_workers_keep_serving() {
    let path = copied_bin("broken");
    let good = std::fs::read(bin()).unwrap();
    let s = start(&path, &[]);
    let old = children(&s, 2);

    replace_with(&path, b"#!/bin/sh\necho broken build >&2\nexit 1\n", true);
    s.signal(Sig::SIGHUP);
    assert!(s.wait_log("reload abandoned", 1), "{}", s.log());
    assert!(alive(s.pid()));
    assert_eq!(serving(&s, 2), old, "the old workers keep serving");

    // A file that cannot even be executed fails the same way.
    replace_with(&path, b"not a program", false);
    s.signal(Sig::SIGHUP);
    assert!(s.wait_log("reload abandoned", 2), "{}", s.log());
    assert!(
        s.log().contains(&path.display().to_string()),
        "the error names the program:\n{}",
        s.log()
    );
    assert_eq!(serving(&s, 2), old);

    replace_with(&path, &good, true);
    s.signal(Sig::SIGHUP);
    assert!(s.wait_log("reload complete", 1), "{}", s.log());
    let new = children(&s, 2);
    assert!(new.is_disjoint(&old), "{}", s.log());
}

#[test]
fn the_default_budget_survives_repeated_crashes() {
    let s = start(&bin(), &[]);
    for round in 0..4 {
        let pids = serving(&s, 2);
        let victim = *pids.iter().next().unwrap();
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(victim as i32), Sig::SIGKILL);
        assert!(
            s.wait_log("worker started", 3 + round),
            "round {round}: no respawn:\n{}",
            s.log()
        );
        let now = serving(&s, 2);
        assert!(!now.contains(&victim), "round {round}");
    }
    assert!(alive(s.pid()), "{}", s.log());
}

#[test]
fn stray_signals_do_not_kill_the_master() {
    let s = start(&bin(), &[]);
    let pids = serving(&s, 2);
    for sig in [Sig::SIGUSR1, Sig::SIGUSR2, Sig::SIGALRM] {
        s.signal(sig);
    }
    assert!(s.wait_log("ignoring a signal", 1), "{}", s.log());
    assert!(alive(s.pid()));
    assert_eq!(serving(&s, 2), pids);
}

#[test]
fn ttin_and_ttou_scale_and_respawns_keep_the_new_count() {
    let s = start(&bin(), &[]);
    s.signal(Sig::SIGTTIN);
    let three = children(&s, 3);
    assert_eq!(serving(&s, 3), three);
    s.signal(Sig::SIGTTOU);
    children(&s, 2);
    s.signal(Sig::SIGTTOU);
    let one = children(&s, 1);
    s.signal(Sig::SIGTTOU);
    assert!(s.wait_log("already at one worker", 1), "{}", s.log());
    assert_eq!(children(&s, 1), one, "never below one");
    // A crash respawns only what the new count keeps.
    let pid = *one.iter().next().unwrap();
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), Sig::SIGKILL);
    assert!(wait_until(DEADLINE, || !alive(pid)));
    let after = serving(&s, 1);
    assert!(!after.contains(&pid));
    assert_eq!(children(&s, 1), after);
}

#[test]
fn sigterm_closes_the_port_at_once_while_a_slow_request_drains() {
    let s = start(&bin(), &["--sleep-ms", "3000"]);
    let mut conn = std::net::TcpStream::connect(s.addr).unwrap();
    raw_get(&mut conn, "/pid");
    write!(conn, "GET / HTTP/1.1\r\nhost: test\r\n\r\n").unwrap();
    let client = conn.local_addr().unwrap();
    assert!(wait_until(DEADLINE, || server_has_read(s.addr, client)));
    s.signal(Sig::SIGTERM);
    // New connections are refused (not queued, not hung) within a second.
    let t0 = Instant::now();
    let refused = wait_until(Duration::from_secs(5), || {
        std::net::TcpStream::connect_timeout(&s.addr, Duration::from_millis(500))
            .is_err_and(|e| e.kind() == std::io::ErrorKind::ConnectionRefused)
    });
    assert!(
        refused,
        "new connections were not refused; log:\n{}",
        s.log()
    );
    assert!(
        t0.elapsed() < Duration::from_secs(1),
        "took {:?}",
        t0.elapsed()
    );
    // The slow request still completes.
    let body = prefork_testutil::read_response(&mut conn);
    assert_eq!(body, "Hello, World!");
}

fn control(path: &Path) -> (BufReader<UnixStream>, UnixStream) {
    let stream = UnixStream::connect(path).unwrap();
    stream.set_read_timeout(Some(DEADLINE)).unwrap();
    (BufReader::new(stream.try_clone().unwrap()), stream)
}

fn ask(conn: &mut (BufReader<UnixStream>, UnixStream), line: &str) -> serde_json::Value {
    writeln!(conn.1, "{line}").unwrap();
    let mut answer = String::new();
    conn.0.read_line(&mut answer).unwrap();
    serde_json::from_str(&answer).unwrap_or_else(|e| panic!("{answer:?}: {e}"))
}

#[test]
fn the_control_socket_reports_stats_scales_and_explains_errors() {
    let dir = temp_dir("control");
    let sock = dir.join("control.sock");
    let s = start(&bin(), &["--control-socket", sock.to_str().unwrap()]);
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&sock).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let pids = serving(&s, 2);
    let mut c = control(&sock);

    let stats = ask(&mut c, r#"{"command":"stats"}"#);
    assert_eq!(stats["ok"], true, "{stats}");
    let workers = stats["workers"].as_array().unwrap();
    assert_eq!(workers.len(), 2, "{stats}");
    let listed: BTreeSet<u32> = workers
        .iter()
        .map(|w| w["pid"].as_u64().unwrap() as u32)
        .collect();
    assert_eq!(listed, pids);
    for w in workers {
        assert_eq!(w["ready"], true);
        assert!(w["rss_bytes"].as_u64().unwrap() > 0, "{w}");
        assert!(w["requests"].is_u64() && w["generation"].is_u64() && w["id"].is_u64());
    }

    let bad = ask(&mut c, "this is not json");
    assert_eq!(bad["ok"], false);
    assert!(bad["error"].as_str().unwrap().contains("JSON"), "{bad}");
    let unknown = ask(&mut c, r#"{"command":"dance"}"#);
    assert!(unknown["error"]
        .as_str()
        .unwrap()
        .contains("unknown command"));

    // The same connection stays usable.
    let scaled = ask(&mut c, r#"{"command":"scale","workers":3}"#);
    assert_eq!(scaled["ok"], true);
    children(&s, 3);
    assert!(wait_until(DEADLINE, || {
        let st = ask(&mut c, r#"{"command":"stats"}"#);
        st["workers"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|w| w["ready"] == true)
            .count()
            == 3
    }));

    // A client that connects and says nothing does not block the master.
    let _silent = UnixStream::connect(&sock).unwrap();
    assert_eq!(get(s.addr, "/").unwrap().status, 200);
    let stats = ask(&mut c, r#"{"command":"stats"}"#);
    assert_eq!(stats["workers_target"], 3);

    let stop = ask(&mut c, r#"{"command":"stop"}"#);
    assert_eq!(stop["ok"], true);
    let mut s = s;
    let status = s.wait_exit(DEADLINE).expect("the master stops");
    assert!(status.success(), "{}", s.log());
    assert!(!sock.exists(), "the socket file is removed on exit");
}

#[test]
fn reloads_under_load_lose_nothing() {
    prefork_testutil::ops::reloads_under_load_lose_nothing(&bin(), &[]);
}

#[test]
fn scaling_under_load_loses_nothing() {
    prefork_testutil::ops::scaling_under_load_loses_nothing(&bin(), &[]);
}
