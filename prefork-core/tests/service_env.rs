//! Where services run, with real processes on `std_hello`: privilege drop (`--user`),
//! CPU pinning (`--cpu-affinity`), Unix domain sockets (`unix:/path`) and the master as PID 1
//! of a pid namespace (`unshare --pid --fork --mount-proc`).

use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use prefork_testutil::{
    children_of, contract, get, process_state, wait_until, Server, Sig, DEADLINE,
};

fn bin() -> PathBuf {
    prefork_testutil::example_bin("std_hello")
}

/// A `Name:` line of `/proc/<pid>/status`, e.g. `Uid` → `"65534\t65534\t65534\t65534"`.
fn status_field(pid: u32, name: &str) -> String {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{name}:")))
        .map(|v| v.trim().to_owned())
        .unwrap_or_default()
}

/// The first (real) id of a `Uid:`/`Gid:` line.
fn real_id(pid: u32, name: &str) -> u32 {
    status_field(pid, name)
        .split_whitespace()
        .next()
        .and_then(|v| v.parse().ok())
        .unwrap_or(u32::MAX)
}

fn nobody() -> Option<nix::unistd::User> {
    nix::unistd::User::from_name("nobody").ok().flatten()
}

#[test]
fn as_root_workers_run_as_the_user_and_the_master_stays_root() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: needs root (the master drops privileges per worker)");
        return;
    }
    let Some(nobody) = nobody() else {
        eprintln!("skipped: no user `nobody` on this machine");
        return;
    };
    let s = contract::start(&bin(), &["--user", "nobody"]);
    let workers = s.wait_ready();
    assert_eq!(workers.len(), 2, "{}", s.log());
    for &w in &workers {
        let uids = status_field(w, "Uid");
        let gids = status_field(w, "Gid");
        let want_u = nobody.uid.as_raw().to_string();
        let want_g = nobody.gid.as_raw().to_string();
        assert!(
            uids.split_whitespace().all(|u| u == want_u),
            "worker {w}: Uid {uids}"
        );
        assert!(
            gids.split_whitespace().all(|g| g == want_g),
            "worker {w}: Gid {gids}"
        );
        let groups = status_field(w, "Groups");
        assert!(
            !groups.split_whitespace().any(|g| g == "0"),
            "worker {w} kept root's group: {groups}"
        );
    }
    assert_eq!(real_id(s.pid(), "Uid"), 0);
    assert_eq!(status_field(s.pid(), "Uid"), "0\t0\t0\t0");
    contract::assert_hello(&get(s.addr, "/").unwrap());
    let pid: u32 = get(s.addr, "/pid").unwrap().body.parse().unwrap();
    assert!(workers.contains(&pid));
}

#[test]
fn an_unknown_user_fails_the_start_and_nothing_starts() {
    let (status, log) = Server::run_to_exit(
        &bin(),
        &[
            "--addr",
            "127.0.0.1:0",
            "--workers",
            "2",
            "--user",
            "no-such-user-prefork",
        ],
        &[],
    );
    assert!(!status.success(), "{log}");
    assert!(
        log.contains("user \"no-such-user-prefork\" does not exist"),
        "{log}"
    );
    assert!(
        !log.contains("worker started") && !log.contains("listening"),
        "{log}"
    );
}

#[test]
fn reuseport_with_a_user_refuses_a_privileged_port_up_front() {
    if !nix::unistd::geteuid().is_root() || nobody().is_none() {
        eprintln!("skipped: needs root and the user nobody");
        return;
    }
    let (status, log) = Server::run_to_exit(
        &bin(),
        &[
            "--addr",
            "127.0.0.1:81",
            "--workers",
            "2",
            "--reuseport",
            "--user",
            "nobody",
        ],
        &[],
    );
    assert!(!status.success(), "{log}");
    assert!(
        log.contains("127.0.0.1:81") && log.contains("below 1024"),
        "{log}"
    );
    assert!(!log.contains("worker started"), "{log}");
}

#[test]
fn cpu_affinity_pins_each_worker_to_its_own_cpu() {
    let allowed = nix::sched::sched_getaffinity(nix::unistd::Pid::from_raw(0)).unwrap();
    let cpus = (0..nix::sched::CpuSet::count())
        .filter(|&c| allowed.is_set(c).unwrap_or(false))
        .count();
    let s = contract::start(&bin(), &["--cpu-affinity"]);
    let workers = s.wait_ready();
    let lists: Vec<String> = workers
        .iter()
        .map(|&w| status_field(w, "Cpus_allowed_list"))
        .collect();
    for l in &lists {
        assert!(
            l.parse::<usize>().is_ok(),
            "not a single CPU: {lists:?}; log:\n{}",
            s.log()
        );
    }
    if cpus >= 2 {
        assert_ne!(lists[0], lists[1], "{lists:?}");
    }
    // The master itself is not pinned.
    assert!(
        status_field(s.pid(), "Cpus_allowed_list")
            .parse::<usize>()
            .is_err()
            || cpus == 1,
        "{}",
        status_field(s.pid(), "Cpus_allowed_list")
    );
    contract::assert_hello(&get(s.addr, "/").unwrap());
}

#[test]
fn unix_socket_stale_file_replaced_served_and_removed_on_exit() {
    let dir = TempDir::new("unix");
    let path = dir.0.join("app.sock");
    // A stale socket file: bound, then its listener closed (a crashed server leaves this).
    drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
    assert!(path.exists());
    let addr = format!("unix:{}", path.display());
    let mut s = Server::start_ready(&bin(), &["--addr", &addr, "--workers", "2"], &[]);
    assert!(
        s.log().contains("removed a stale socket file"),
        "{}",
        s.log()
    );
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o660);
    assert_eq!(unix_get(&path, "/"), "Hello, World!");
    // Both workers answer on it.
    let mut pids = std::collections::BTreeSet::new();
    let ok = wait_until(DEADLINE, || {
        for _ in 0..16 {
            pids.insert(unix_get(&path, "/pid"));
        }
        pids.len() >= 2
    });
    assert!(ok, "{pids:?}");
    s.signal(Sig::SIGTERM);
    let status = s.wait_exit(DEADLINE).expect("master exits");
    assert!(status.success(), "{status:?}; log:\n{}", s.log());
    assert!(!path.exists(), "the socket file is left behind");
}

#[test]
fn a_live_unix_socket_is_never_replaced() {
    let dir = TempDir::new("unix-live");
    let path = dir.0.join("busy.sock");
    let _someone_else = std::os::unix::net::UnixListener::bind(&path).unwrap();
    let addr = format!("unix:{}", path.display());
    let (status, log) = Server::run_to_exit(&bin(), &["--addr", &addr, "--workers", "1"], &[]);
    assert!(!status.success(), "{log}");
    assert!(
        log.contains(&path.display().to_string()) && log.contains("another process listens"),
        "{log}"
    );
    assert!(!log.contains("worker started"), "{log}");
    // Still theirs.
    assert!(std::os::unix::net::UnixStream::connect(&path).is_ok());
}

/// `unshare` with a new pid namespace, or `None` (with the reason printed) where it is not
/// permitted.
fn unshare() -> Option<PathBuf> {
    let exe = ["/usr/bin/unshare", "/bin/unshare"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())?;
    let ok = std::process::Command::new(&exe)
        .args(["--pid", "--fork", "--mount-proc", "true"])
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        eprintln!("skipped: `unshare --pid --fork --mount-proc` is not permitted here");
        return None;
    }
    Some(exe)
}

/// Starts std_hello as PID 1 of a new pid namespace; returns the server (whose pid is
/// `unshare`'s) and the master's pid as seen from here.
fn start_as_pid1(extra: &[&str]) -> Option<(Server, u32)> {
    let unshare = unshare()?;
    let b = bin();
    let mut args = vec![
        "--pid",
        "--fork",
        "--mount-proc",
        b.to_str().unwrap(),
        "--addr",
        "127.0.0.1:0",
        "--workers",
        "2",
    ];
    args.extend_from_slice(extra);
    let s = Server::start(&unshare, &args);
    let mut master = None;
    wait_until(DEADLINE, || {
        master = children_of(s.pid()).first().copied();
        master.is_some()
    });
    let master = master.expect("unshare's child");
    // It is PID 1 inside its namespace.
    let nspid = status_field(master, "NSpid");
    assert!(
        nspid.ends_with("\t1") || nspid.ends_with(" 1"),
        "NSpid {nspid}"
    );
    Some((s, master))
}

#[test]
fn as_pid1_it_serves_and_exits_zero_on_sigterm() {
    let Some((mut s, master)) = start_as_pid1(&[]) else {
        return;
    };
    s.wait_ready();
    contract::assert_hello(&get(s.addr, "/").unwrap());
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(master as i32), Sig::SIGTERM);
    let status = s.wait_exit(DEADLINE).expect("exits");
    assert!(status.success(), "{status:?}; log:\n{}", s.log());
}

#[test]
fn as_pid1_it_reaps_orphans() {
    let Some((mut s, master)) = start_as_pid1(&["--orphan"]) else {
        return;
    };
    s.wait_ready();
    // Each worker's `sh -c 'sleep 600 &'` exited at once, so each sleep was re-parented to
    // PID 1: the master. (The log names pids as the namespace sees them; these are ours.)
    let is_sleep = |p: &u32| {
        std::fs::read_to_string(format!("/proc/{p}/comm")).is_ok_and(|c| c.trim() == "sleep")
    };
    let mut orphans = Vec::new();
    wait_until(DEADLINE, || {
        orphans = children_of(master).into_iter().filter(is_sleep).collect();
        orphans.len() >= 2
    });
    assert!(!orphans.is_empty(), "no orphan re-parented to the master");
    for &o in &orphans {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(o as i32), Sig::SIGKILL);
    }
    for &o in &orphans {
        assert!(
            wait_until(DEADLINE, || process_state(o).is_none()),
            "orphan {o} was not reaped (state {:?}); log:\n{}",
            process_state(o),
            s.log()
        );
    }
    let r = get(s.addr, "/");
    assert!(r.is_ok(), "{r:?}; orphans {orphans:?} log:\n{}", s.log());
    contract::assert_hello(&get(s.addr, "/").unwrap());
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(master as i32), Sig::SIGTERM);
    let status = s.wait_exit(DEADLINE).expect("exits");
    assert!(status.success(), "{status:?}; log:\n{}", s.log());
}

/// `GET path` over a Unix socket (HTTP/1.0, so the server closes after answering); the body.
fn unix_get(path: &Path, req: &str) -> String {
    let mut s = std::os::unix::net::UnixStream::connect(path).unwrap();
    s.set_read_timeout(Some(DEADLINE)).unwrap();
    write!(s, "GET {req} HTTP/1.0\r\nhost: test\r\n\r\n").unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    out.split_once("\r\n\r\n").unwrap().1.to_owned()
}

/// A directory removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        let p = std::env::temp_dir().join(format!("prefork-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
