//! End-to-end tests on the real `smol_hello` example: real worker processes, real sockets on
//! 127.0.0.1, real signals, real HTTP(S) clients. The example contract's scenarios come from
//! `prefork_testutil::contract`, shared with every adapter.

use std::collections::BTreeSet;
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use prefork_testutil::{alive, contract, get, open_fds, raw_get, wait_until};

/// prefork-smol's serve loop speaks HTTP/1.1 only on plain TCP.
const H2C: bool = false;

fn bin() -> PathBuf {
    prefork_testutil::example_bin("smol_hello")
}

#[test]
fn serves_respawns_and_dies_with_the_master() {
    contract::serves_respawns_and_dies_with_the_master(&bin(), &[], H2C);
}

#[test]
fn sigterm_drains_a_slow_request() {
    contract::sigterm_drains_a_slow_request(&bin(), &[]);
}

#[test]
fn bad_input_fails_fast() {
    contract::bad_input_fails_fast(&bin());
}

/// A worker reports ready only once its app factory has built the service and its accept loop
/// runs: a factory that fails (`--require-file` of a missing file) is then the worker's start-up
/// error, which the master reports and exits with, instead of a crash after ready that it would
/// respawn over and over.
#[test]
fn a_failing_app_factory_is_the_masters_error_without_a_restart_loop() {
    let log = contract::a_workers_startup_error_is_the_masters_error(&bin(), &[]);
    assert!(
        log.contains("No such file or directory"),
        "the OS's cause reaches the master:\n{log}"
    );
    assert!(!log.contains("app built"), "{log}");
}

/// Ready waits for a slow app factory: with a factory that takes a second, each worker logs
/// `app built` before the master hears that it is ready (`all workers ready` comes after both),
/// and a request right after is served.
#[test]
fn ready_waits_for_a_slow_app_factory() {
    let s = contract::start(&bin(), &["--factory-delay-ms", "1000"]);
    let workers = s.wait_ready();
    let log = s.log();
    let ready_at = log.find("all workers ready").unwrap();
    let built: Vec<&str> = log[..ready_at]
        .lines()
        .filter(|l| l.contains("app built"))
        .collect();
    for pid in &workers {
        assert!(
            built.iter().any(|l| l.contains(&format!("pid={pid}"))),
            "worker {pid} was reported ready before its app factory finished; log:\n{log}"
        );
    }
    contract::assert_hello(&get(s.addr, "/").unwrap());
}

#[test]
fn no_prefork_serves_survives_emfile_and_drains() {
    let s = contract::no_prefork_serves(&bin(), H2C);

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
        conns.push(TcpStream::connect(s.addr).unwrap());
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
    assert_eq!(get(s.addr, "/pid").unwrap().body, pid.to_string());
    assert!(alive(pid));

    contract::no_prefork_drains_a_slow_request(s);
}

#[test]
fn no_prefork_bad_input_fails_fast() {
    contract::no_prefork_bad_input_fails_fast(&bin());
}

#[cfg(feature = "tls")]
#[test]
fn tls_serves_and_survives_bad_handshakes() {
    contract::tls_serves_and_survives_bad_handshakes(&bin(), &[], true);
}

/// Plain HTTP on the TLS port: a `400` saying HTTPS is expected, then the close; the workers
/// keep serving HTTPS.
#[cfg(feature = "tls")]
#[test]
fn tls_answers_plain_http_with_400() {
    contract::tls_answers_plain_http_with_400(&bin(), &[]);
}

/// TLS sessions resume on whichever worker a returning client reaches.
#[cfg(feature = "tls")]
#[test]
fn tls_sessions_resume_on_every_worker() {
    contract::tls_sessions_resume_on_every_worker(&bin(), &[]);
}

#[cfg(feature = "tls")]
#[test]
fn bad_tls_inputs_fail_fast() {
    contract::bad_tls_inputs_fail_fast(&bin());
}

/// A request head sent one byte at a time across several drain graces is still answered.
#[test]
fn drain_answers_a_head_sent_across_several_graces() {
    contract::drain_answers_a_head_sent_across_several_graces(&bin(), &[]);
}

#[test]
fn drain_under_load_loses_nothing() {
    contract::drain_under_load_loses_nothing(&bin(), &[]);
}

/// Balanced accept (issue 16, on by default): a burst of 64 connections to 2, 4 and 8 workers
/// leaves each holding its share within the bounds of `ops::burst_is_balanced`.
#[test]
fn a_burst_of_64_connections_spreads_over_2_4_and_8_workers() {
    prefork_testutil::ops::burst_is_balanced(&bin(), &[]);
}

/// Balanced accept for connections that arrive one at a time (64, 5 ms apart) to 2, 4 and 8
/// workers: each holds between 0.5x and 1.5x of its share (`ops::one_at_a_time_is_balanced`).
#[test]
fn connections_arriving_one_at_a_time_spread_over_2_4_and_8_workers() {
    prefork_testutil::ops::one_at_a_time_is_balanced(&bin(), &[]);
}

/// Unix domain sockets (`--addr unix:PATH`) are served by the same accept loop.
#[test]
fn serves_on_a_unix_socket() {
    prefork_testutil::ops::serves_on_a_unix_socket(&bin());
}

/// An idle keep-alive connection is closed after the keep-alive timeout, a busy one is not.
#[test]
fn idle_keepalive_connections_close_after_the_keepalive_timeout() {
    contract::idle_keepalive_connections_close_after_the_keepalive_timeout(&bin(), &[]);
}

#[test]
fn header_read_timeout_counts_from_the_heads_first_byte() {
    contract::header_read_timeout_counts_from_the_heads_first_byte(&bin(), &[]);
}
