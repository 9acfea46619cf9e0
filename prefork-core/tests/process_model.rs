//! End-to-end tests of the process model on the real `std_hello` example: real worker
//! processes, real sockets on 127.0.0.1, real signals.

use std::collections::BTreeSet;
use std::path::PathBuf;

use prefork_testutil::{
    alive, assert_all_gone, children_of, contract, open_fds, wait_until, Server, Sig, DEADLINE,
};

fn bin() -> PathBuf {
    prefork_testutil::example_bin("std_hello")
}

fn start(extra: &[&str]) -> Server {
    contract::start(&bin(), extra)
}

// The contract every example server meets (prefork-testutil's `contract` module); std_hello
// has no `--no-prefork` and no TLS.

/// std_hello speaks HTTP/1.1 only.
const H2C: bool = false;

#[test]
fn serves_respawns_and_dies_with_the_master() {
    contract::serves_respawns_and_dies_with_the_master(&bin(), &[], H2C);
}

#[test]
fn reuseport_mode_serves_from_every_worker() {
    contract::serves_from_every_worker(&bin(), &["--reuseport"], H2C);
}

#[test]
fn sigterm_drains_a_slow_request() {
    contract::sigterm_drains_a_slow_request(&bin(), &[]);
}

#[test]
fn bad_input_fails_fast() {
    contract::bad_input_fails_fast(&bin());
}

#[test]
fn a_workers_startup_error_is_the_masters_error() {
    contract::a_workers_startup_error_is_the_masters_error(&bin(), &[]);
}

// The process model itself.

#[test]
fn over_recovery_stops_everything_with_an_error() {
    let mut s = start(&["--recover-threshold", "1"]);
    s.wait_ready();
    // Kill whatever worker is running until the master gives up: the 2nd unexpected exit is
    // over a threshold of 1.
    let mut killed = BTreeSet::new();
    let gave_up = wait_until(DEADLINE, || {
        for pid in s.children() {
            if killed.insert(pid) {
                let _ =
                    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), Sig::SIGKILL);
            }
        }
        !alive(s.pid())
    });
    assert!(gave_up, "master still running; log:\n{}", s.log());
    let status = s.wait_exit(DEADLINE).unwrap();
    let log = s.log();
    assert_eq!(status.code(), Some(1), "{log}");
    assert!(
        log.contains("more than the recovery threshold of 1"),
        "{log}"
    );
    assert_all_gone(s.started_workers(), &log);
}

#[test]
fn sigint_stops_each_worker_once_and_exits_zero() {
    // Ctrl+C in a terminal sends SIGINT to the foreground process group. The workers run in
    // their own process groups, so only the master sees it, and each worker exits 0 on the
    // single SIGTERM the master forwards.
    let mut s = start(&[]);
    let workers = s.wait_ready();
    s.signal_group(Sig::SIGINT);
    let status = s.wait_exit(DEADLINE).expect("master exits");
    assert!(status.success(), "{}", s.log());
    let log = s.log();
    assert_eq!(log.matches("status=exit status 0").count(), 2, "{log}");
    assert_all_gone(workers, &log);
}

#[test]
fn stray_prefork_child_is_refused() {
    // Exported by mistake: no master, no inherited descriptors.
    let (status, log) = Server::run_to_exit(
        &bin(),
        &["--addr", "127.0.0.1:0"],
        &[("PREFORK_CHILD", "1")],
    );
    assert_eq!(status.code(), Some(1), "{log}");
    assert!(log.contains("PREFORK_CHILD=1 is set but"), "{log}");
    assert!(!log.contains("listening"), "{log}");
    // A full set of variables, but fds 3 and 4 are not what a master passes.
    let (status, log) = Server::run_to_exit(
        &bin(),
        &["--addr", "127.0.0.1:0"],
        &[
            ("PREFORK_CHILD", "1"),
            ("PREFORK_WORKER_ID", "0"),
            ("PREFORK_LISTEN_FDS", "1"),
            ("PREFORK_CONTROL_FD", "4"),
        ],
    );
    assert_eq!(status.code(), Some(1), "{log}");
    assert!(log.contains("PREFORK_CHILD=1 is set but"), "{log}");
    // Forged numbers (negative, huge, not numbers) are refused before any descriptor is touched:
    // an error, never a panic.
    for (listen, control) in [("-4", "-1"), ("1", "99999999"), ("x", "4"), ("1", "-1")] {
        let (status, log) = Server::run_to_exit(
            &bin(),
            &["--addr", "127.0.0.1:0"],
            &[
                ("PREFORK_CHILD", "1"),
                ("PREFORK_PROTOCOL", "1"),
                ("PREFORK_WORKER_ID", "0"),
                ("PREFORK_LISTEN_FDS", listen),
                ("PREFORK_CONTROL_FD", control),
            ],
        );
        assert_eq!(status.code(), Some(1), "{listen}/{control}: {log}");
        assert!(log.contains("PREFORK_CHILD=1 is set but"), "{log}");
        assert!(!log.contains("panicked"), "{log}");
    }
}

/// Every descriptor a worker holds from 3 up is close-on-exec (`/proc/<pid>/fdinfo` flags):
/// nothing of the master's, not its control socket, not its listeners, reaches a process the
/// worker starts.
#[test]
fn every_worker_descriptor_is_close_on_exec() {
    let s = start(&[]);
    let workers = s.wait_ready();
    for pid in workers {
        for (fd, target) in open_fds(pid).into_iter().filter(|(fd, _)| *fd > 2) {
            let info =
                std::fs::read_to_string(format!("/proc/{pid}/fdinfo/{fd}")).unwrap_or_default();
            let flags = info
                .lines()
                .find_map(|l| l.strip_prefix("flags:"))
                .and_then(|f| u32::from_str_radix(f.trim(), 8).ok());
            // fdinfo may race with a descriptor that was just closed.
            let Some(flags) = flags else { continue };
            assert!(
                flags & 0o2_000_000 != 0,
                "worker {pid}: fd {fd} ({target}) is inheritable (flags {flags:o})"
            );
        }
    }
}

#[test]
fn workers_inherit_only_stdio_listener_and_control_socket() {
    let s = start(&[]);
    let workers = s.wait_ready();
    let master = open_fds(s.pid());
    let ours: BTreeSet<String> = open_fds(std::process::id())
        .into_iter()
        .map(|(_, t)| t)
        .collect();
    let listener = master
        .iter()
        .find(|(fd, _)| *fd == 3)
        .map(|(_, t)| t.clone())
        .expect("master listener at fd 3");
    for pid in workers {
        let fds = open_fds(pid);
        assert!(
            fds.iter().any(|(fd, t)| *fd == 3 && *t == listener),
            "listener at 3: {fds:?}"
        );
        assert!(
            fds.iter()
                .any(|(fd, t)| *fd == 4 && t.starts_with("socket:")),
            "control socket at 4: {fds:?}"
        );
        // Anything else the worker shares with the master must have come from outside both
        // (this test process's own inherited descriptors), never from the master itself.
        let leaked: Vec<_> = fds
            .iter()
            .filter(|(fd, t)| {
                *fd > 2
                    && *t != listener
                    && master.iter().any(|(_, mt)| mt == t)
                    && !ours.contains(t)
            })
            .collect();
        assert!(
            leaked.is_empty(),
            "worker {pid} inherited master fds {leaked:?}\nworker: {fds:?}\nmaster: {master:?}"
        );
    }
    assert!(children_of(s.pid()).len() == 2);
}
