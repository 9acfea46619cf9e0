//! End-to-end tests on the real `smol_hello` example: real worker processes, real sockets on
//! 127.0.0.1, real signals, real HTTP(S) clients.

mod util;

use std::collections::BTreeSet;
use std::process::Command;
use std::time::Duration;

use nix::sys::signal::kill;
use nix::unistd::Pid;
use prefork_testutil::{
    alive, field, get, open_fds, wait_for_distinct_pids, wait_until, Http1, Server, Sig, DEADLINE,
};
use prefork_testutil::{assert_all_gone, raw_get, server_closes};
use util::{connect, hello_bin, start};

fn start_two(extra: &[&str]) -> Server {
    let mut args = vec!["--workers", "2"];
    args.extend_from_slice(extra);
    start(&hello_bin(), &args)
}

#[test]
fn two_workers_serve_keep_alive_survive_a_killed_worker_and_die_with_the_master() {
    let mut s = start_two(&[]);
    let ready: BTreeSet<u32> = s.wait_ready().into_iter().collect();
    assert_eq!(ready.len(), 2, "{}", s.log());

    // Both workers answer, with their own pids.
    assert_eq!(wait_for_distinct_pids(s.addr, 2), ready, "{}", s.log());
    let r = get(s.addr, "/").unwrap();
    assert_eq!((r.status, r.body.as_str()), (200, "Hello, World!"));
    assert_eq!(r.content_type.as_deref(), Some("text/plain"));
    assert_eq!(get(s.addr, "/nope").unwrap().status, 404);

    // Keep-alive: three requests on one connection, all answered by the same worker.
    let mut conn = Http1::connect(s.addr).unwrap();
    let pids: BTreeSet<String> = (0..3).map(|_| conn.get("/pid").unwrap().body).collect();
    assert_eq!(pids.len(), 1, "one connection, one worker: {pids:?}");
    assert_eq!(conn.get("/").unwrap().body, "Hello, World!");

    // A worker killed with SIGKILL is replaced, and the new one serves.
    let victim = *ready.iter().next().unwrap();
    kill(Pid::from_raw(victim as i32), Sig::SIGKILL).unwrap();
    assert!(
        s.wait_log("worker started", 3),
        "no respawn; log:\n{}",
        s.log()
    );
    let log = s.log();
    assert!(log.contains("worker exited unexpectedly"), "{log}");
    let respawn = log
        .lines()
        .filter(|l| l.contains("worker started"))
        .nth(2)
        .unwrap();
    let new_pid: u32 = field(respawn, "pid").unwrap().parse().unwrap();
    let expected: BTreeSet<u32> = ready
        .iter()
        .copied()
        .filter(|&p| p != victim)
        .chain([new_pid])
        .collect();
    assert_eq!(wait_for_distinct_pids(s.addr, 2), expected, "{}", s.log());
    assert_eq!(get(s.addr, "/").unwrap().body, "Hello, World!");

    // SIGKILL of the master: the workers see their control socket close and exit.
    s.signal(Sig::SIGKILL);
    s.wait_exit(DEADLINE).expect("master dies");
    for pid in expected {
        assert!(
            wait_until(DEADLINE, || !alive(pid)),
            "worker {pid} outlived its master; log:\n{}",
            s.log()
        );
    }
}

#[test]
fn sigterm_finishes_a_slow_request_closes_idle_connections_and_exits_zero() {
    let mut s = start_two(&["--sleep-ms", "1500"]);
    let workers = s.wait_ready();
    let addr = s.addr;

    // An idle keep-alive connection (it had one request answered).
    let mut idle = connect(addr);
    let pid = raw_get(&mut idle, "/pid");
    assert!(pid.parse::<u32>().is_ok(), "{pid}");

    let slow = std::thread::spawn(move || get(addr, "/"));
    // Give the request time to reach a worker before the stop.
    std::thread::sleep(Duration::from_millis(400));
    s.signal(Sig::SIGTERM);

    let r = slow
        .join()
        .unwrap()
        .expect("the in-flight request completes");
    assert_eq!((r.status, r.body.as_str()), (200, "Hello, World!"));
    assert!(
        server_closes(&mut idle),
        "the idle keep-alive connection was not closed; log:\n{}",
        s.log()
    );
    let status = s.wait_exit(DEADLINE).expect("master exits");
    let log = s.log();
    assert!(
        status.success(),
        "master exit status {status:?}; log:\n{log}"
    );
    assert_all_gone(workers, &log);
    assert_eq!(
        log.matches("status=exit status 0").count(),
        2,
        "both workers drained and exited 0:\n{log}"
    );
    assert!(!log.contains("exited unexpectedly"), "{log}");
    assert!(!log.contains("still open after the drain timeout"), "{log}");
}

#[test]
fn no_prefork_serves_on_threads_survives_emfile_and_drains_on_sigterm() {
    let mut s = start(
        &hello_bin(),
        &["--no-prefork", "--workers", "2", "--sleep-ms", "300"],
    );
    let log = s.log();
    assert!(log.contains("threads=2"), "{log}");
    let r = get(s.addr, "/").unwrap();
    assert_eq!((r.status, r.body.as_str()), (200, "Hello, World!"));
    assert_eq!(r.content_type.as_deref(), Some("text/plain"));
    assert_eq!(
        get(s.addr, "/pid").unwrap().body,
        s.pid().to_string(),
        "one process serves"
    );
    assert!(s.children().is_empty(), "no worker processes");

    // EMFILE: lower the server's descriptor limit so that exactly one more can be opened (the
    // lowest free number), then open connections until one cannot be accepted.
    let pid = s.pid();
    let open: BTreeSet<i32> = open_fds(pid).into_iter().map(|(fd, _)| fd).collect();
    let first_free = (0..).find(|fd| !open.contains(fd)).unwrap();
    let set_limit = |soft: i32| {
        let ok = Command::new("prlimit")
            .args(["--pid", &pid.to_string(), &format!("--nofile={soft}:")])
            .status()
            .expect("prlimit")
            .success();
        assert!(ok, "prlimit failed");
    };
    set_limit(first_free + 1);
    let mut conns = Vec::new();
    for _ in 0..32 {
        conns.push(connect(s.addr));
        if wait_until(Duration::from_millis(200), || {
            s.log().contains("accept failed; retrying after a pause")
        }) {
            break;
        }
    }
    assert!(
        s.log().contains("Too many open files"),
        "no EMFILE logged after {} connections; log:\n{}",
        conns.len(),
        s.log()
    );
    // An accepted connection is served meanwhile.
    assert_eq!(raw_get(&mut conns[0], "/pid"), pid.to_string());
    // Once the others are gone, the connection that waited in the queue is accepted and served.
    let mut waiting = conns.pop().unwrap();
    drop(conns);
    assert_eq!(raw_get(&mut waiting, "/pid"), pid.to_string());
    drop(waiting);
    set_limit(1024);
    assert_eq!(get(s.addr, "/").unwrap().body, "Hello, World!");
    assert!(alive(pid));

    // SIGTERM drains the slow request and exits 0.
    let addr = s.addr;
    let slow = std::thread::spawn(move || get(addr, "/"));
    std::thread::sleep(Duration::from_millis(150));
    s.signal(Sig::SIGTERM);
    let r = slow
        .join()
        .unwrap()
        .expect("the in-flight request completes");
    assert_eq!(r.status, 200);
    let status = s.wait_exit(DEADLINE).expect("exits");
    assert!(status.success(), "{status:?}; log:\n{}", s.log());
}

#[test]
fn busy_port_and_zero_workers_fail_fast_with_the_cause() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    for mode in [&[][..], &["--reuseport"][..], &["--no-prefork"][..]] {
        let mut args = vec!["--addr", addr.as_str(), "--workers", "2"];
        args.extend_from_slice(mode);
        let (status, log) = Server::run_to_exit(&hello_bin(), &args, &[]);
        assert_eq!(status.code(), Some(1), "{mode:?}: {log}");
        assert!(
            log.contains(&format!("cannot listen on {addr}")),
            "{mode:?}: {log}"
        );
        assert!(log.contains("Address already in use"), "{mode:?}: {log}");
        assert!(!log.contains("worker started"), "{mode:?}: {log}");
    }
    let (status, log) = Server::run_to_exit(
        &hello_bin(),
        &["--addr", "127.0.0.1:0", "--workers", "0"],
        &[],
    );
    assert_eq!(status.code(), Some(1), "{log}");
    assert!(log.contains("workers must be at least 1"), "{log}");
    assert!(!log.contains("worker started"), "{log}");
    let (status, log) = Server::run_to_exit(
        &hello_bin(),
        &["--addr", "127.0.0.1:0", "--workers", "0", "--no-prefork"],
        &[],
    );
    assert_eq!(status.code(), Some(1), "{log}");
    assert!(log.contains("executor threads must be at least 1"), "{log}");
}
