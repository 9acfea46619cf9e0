//! End-to-end tests of prefork-actix on the real example programs: a master and two worker
//! processes on 127.0.0.1, real signals, real HTTP/1.1, HTTP/2 and TLS clients. The example
//! contract's scenarios come from `prefork_testutil::contract`, shared with every adapter; the
//! rest is actix's own: worker threads, the app factory, `actix_fn_main`.
//!
//! `actix_hello` starts from `#[actix_web::main]` (a worker serves on its own `prefork-actix`
//! thread); `actix_fn_main` from a plain `fn main()` (a worker serves on its main thread).

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use prefork_testutil::{
    alive, assert_all_gone, contract, get, ops, read_response, tcp_sockets, wait_for_distinct_pids,
    wait_until, Server, Sig, DEADLINE,
};

/// actix-web's `HttpServer::listen` speaks HTTP/1.1 only on plain TCP (h2c would need
/// `listen_auto_h2c`).
const H2C: bool = false;

fn hello() -> PathBuf {
    prefork_testutil::example_bin("actix_hello")
}

/// The names of `pid`'s threads (as the kernel keeps them: 15 bytes at most).
fn thread_names(pid: u32) -> Vec<String> {
    let mut names = Vec::new();
    if let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) {
        for task in tasks.flatten() {
            if let Ok(name) = std::fs::read_to_string(task.path().join("comm")) {
                names.push(name.trim_end().to_owned());
            }
        }
    }
    names
}

/// actix worker threads in `pid` (each runs on an arbiter thread `actix-rt|system:N|arbiter:M`).
fn actix_worker_threads(pid: u32) -> usize {
    thread_names(pid)
        .iter()
        .filter(|n| n.starts_with("actix-rt|system"))
        .count()
}

// ---------------------------------------------------------------------------------------------
// The example contract, plus actix's thread layout checked on the servers it starts.

#[test]
fn serves_with_one_actix_thread_per_worker_respawns_and_dies_with_the_master() {
    let s = contract::serves_from_every_worker(&hello(), &[], H2C);
    for pid in s.wait_ready() {
        assert_eq!(
            actix_worker_threads(pid),
            1,
            "one actix worker thread per process by default: {:?}",
            thread_names(pid)
        );
        assert!(
            thread_names(pid).iter().any(|n| n == "prefork-actix"),
            "under #[actix_web::main] the server runs on its own thread: {:?}",
            thread_names(pid)
        );
    }
    contract::replaces_a_killed_worker_and_dies_with_the_master(s);
}

/// Balanced accept (on by default): each actix worker thread accepts for itself
/// (`Server::serve`) and yields while its worker is over its share, so a burst of 64
/// connections opened at once spreads over 2, 4 and 8 workers (`ops::burst_is_balanced`).
#[test]
fn a_burst_of_64_connections_spreads_over_2_4_and_8_workers() {
    prefork_testutil::ops::burst_is_balanced(&hello(), &[]);
}

/// Balanced accept for connections that arrive one at a time (64, 5 ms apart) to 2, 4 and 8
/// workers: each holds between 0.5x and 1.5x of its share (`ops::one_at_a_time_is_balanced`).
#[test]
fn connections_arriving_one_at_a_time_spread_over_2_4_and_8_workers() {
    prefork_testutil::ops::one_at_a_time_is_balanced(&hello(), &[]);
}

/// Under `run_prefork` (`--http-server`) actix-server's accept thread accepts, in a loop that
/// cannot be asked before each `accept`: the balance pauses it from outside once its worker is
/// over its share, so connections arriving in waves spread over 2 and 4 workers
/// (`ops::waves_are_balanced`); a burst opened at once is not spread.
#[test]
fn under_run_prefork_connections_in_waves_spread_over_2_and_4_workers() {
    prefork_testutil::ops::waves_are_balanced(&hello(), &[2, 4], &["--http-server"]);
}

/// The `Prefork`'s keep-alive timeout is actix's `keep_alive` under `Server::serve`: an idle
/// keep-alive connection is closed after it, a busy one is not.
#[test]
fn idle_keepalive_connections_close_after_the_keepalive_timeout() {
    contract::idle_keepalive_connections_close_after_the_keepalive_timeout(&hello(), &[]);
}

#[test]
fn sigterm_drains_a_slow_request() {
    contract::sigterm_drains_a_slow_request(&hello(), &[]);
}

#[test]
fn under_run_prefork_sigterm_drains_a_slow_request() {
    contract::sigterm_drains_a_slow_request(&hello(), &["--http-server"]);
}

#[test]
fn bad_input_fails_fast() {
    contract::bad_input_fails_fast(&hello());
}

#[test]
fn no_prefork_is_actix_with_n_threads_in_one_process_and_drains() {
    let s = contract::no_prefork_serves(&hello(), H2C);
    assert_eq!(actix_worker_threads(s.pid()), 2, "--workers 2 threads");
    contract::no_prefork_drains_a_slow_request(s);
}

#[test]
fn no_prefork_bad_input_fails_fast() {
    contract::no_prefork_bad_input_fails_fast(&hello());
}

#[cfg(feature = "tls")]
#[test]
fn tls_serves_h2_on_the_threads_asked_and_survives_bad_handshakes() {
    let s = contract::tls_serves_and_survives_bad_handshakes(&hello(), &["--threads", "2"], true);
    for pid in s.wait_ready() {
        assert_eq!(
            actix_worker_threads(pid),
            2,
            "--threads 2: {:?}",
            thread_names(pid)
        );
    }
}

/// Plain HTTP on the TLS port: a `400` saying HTTPS is expected, then the close; the workers
/// keep serving HTTPS.
#[cfg(feature = "tls")]
#[test]
fn tls_answers_plain_http_with_400() {
    contract::tls_answers_plain_http_with_400(&hello(), &[]);
}

/// Under `run_prefork`, actix-web's own TLS listeners: HTTP/2 by ALPN, bad handshakes cost
/// their connection only (plain HTTP gets a TLS alert, not a `400`).
#[cfg(feature = "tls")]
#[test]
fn under_run_prefork_tls_serves_h2_and_survives_bad_handshakes() {
    contract::tls_serves_and_survives_bad_handshakes(&hello(), &["--http-server"], true);
}

/// TLS sessions resume on whichever worker a returning client reaches.
#[cfg(feature = "tls")]
#[test]
fn tls_sessions_resume_on_every_worker() {
    contract::tls_sessions_resume_on_every_worker(&hello(), &[]);
}

#[cfg(feature = "tls")]
#[test]
fn bad_tls_inputs_fail_fast() {
    contract::bad_tls_inputs_fail_fast(&hello());
}

// ---------------------------------------------------------------------------------------------
// actix's own

#[test]
fn zero_threads_fail_fast_with_the_cause() {
    let (status, log) = Server::run_to_exit(
        &hello(),
        &["--addr", "127.0.0.1:0", "--workers", "2", "--threads", "0"],
        &[],
    );
    assert_eq!(status.code(), Some(1), "{log}");
    assert!(
        log.contains("threads per worker must be at least 1"),
        "{log}"
    );
    assert!(!log.contains("worker started"), "{log}");
}

#[test]
fn a_failing_app_factory_is_the_masters_error_without_a_restart_loop() {
    // Ready is reported only once actix has built the app in its worker threads: a worker whose
    // `App::data_factory` fails never reports ready, so the master stops with its error instead
    // of respawning it over and over.
    let log = contract::a_workers_startup_error_is_the_masters_error(&hello(), &[]);
    // The worker's own error (sent on its control channel, which happens only before ready),
    // not merely its exit status.
    assert!(
        log.contains("failed to start: the app factory failed on 127.0.0.1:"),
        "actix's start-up error reaches the master:\n{log}"
    );
    // The same under `run_prefork`, where actix-server builds the apps.
    let log = contract::a_workers_startup_error_is_the_masters_error(&hello(), &["--http-server"]);
    assert!(
        log.contains("failed to start: Can not start server service"),
        "actix's start-up error reaches the master:\n{log}"
    );
}

#[test]
fn plain_fn_main_serves_on_the_main_thread_and_stops() {
    let bin = prefork_testutil::example_bin("actix_fn_main");
    let mut s = contract::start(&bin, &[]);
    let ready: BTreeSet<u32> = s.wait_ready().into_iter().collect();
    assert_eq!(wait_for_distinct_pids(s.addr, 2), ready, "{}", s.log());
    let r = get(s.addr, "/").unwrap();
    assert_eq!((r.status, r.body.as_str()), (200, "Hello, World!"));
    for &pid in &ready {
        assert!(
            !thread_names(pid).iter().any(|n| n == "prefork-actix"),
            "without a runtime the server runs on the main thread: {:?}",
            thread_names(pid)
        );
    }
    s.signal(Sig::SIGTERM);
    let status = s.wait_exit(DEADLINE).expect("master exits");
    assert!(status.success(), "{status:?}; log:\n{}", s.log());
    assert_all_gone(ready, &s.log());
}

// ---------------------------------------------------------------------------------------------
// The loss-free drain, the heartbeat watchdog and Unix sockets, through PreforkMiddleware.

#[test]
fn under_run_prefork_drain_under_load_loses_nothing() {
    contract::drain_under_load_loses_nothing(&hello(), &["--http-server"]);
}

#[test]
fn drain_under_load_loses_nothing() {
    contract::drain_under_load_loses_nothing(&hello(), &[]);
}

/// A request head sent one byte at a time across several drain graces is still answered.
#[test]
fn drain_answers_a_head_sent_across_several_graces() {
    contract::drain_answers_a_head_sent_across_several_graces(&hello(), &[]);
}

/// actix's own `keep_alive` timer would close an idle keep-alive connection only after 75 s
/// (`actix_hello` sets the other adapters' timeout): within the scenario's deadlines it is the
/// drain grace that closes it.
#[test]
fn drain_grace_closes_idle_keepalive_connections() {
    contract::drain_grace_closes_idle_keepalive_connections(&hello(), &[]);
}

/// On a final stop the listening socket closes at once, while a slow request is still in flight
/// on a draining worker: that worker lets go of the listener copy actix's accept thread owns
/// (prefork-core's `HandedOffListener`), so new connections are refused rather than queued where
/// nobody accepts them. Without it the socket would listen on until the slow request had ended
/// and its worker exited.
#[test]
fn a_final_stop_closes_the_listening_socket_while_a_slow_request_drains() {
    let mut s = contract::start(
        &hello(),
        &["--sleep-ms", "5000", "--shutdown-timeout-ms", "60000"],
    );
    let workers = s.wait_ready();
    let listening = |s: &Server| tcp_sockets(s.addr).iter().any(|t| t.listening);
    assert!(listening(&s), "no listening socket on {}", s.addr);

    // A slow request in a worker's hands (read from the socket), answered on another thread.
    let mut conn = contract::slow_request_in_flight(&s);
    let slow = std::thread::spawn(move || (read_response(&mut conn), Instant::now()));

    s.signal(Sig::SIGTERM);
    assert!(
        wait_until(DEADLINE, || !listening(&s)),
        "the listening socket stayed open; log:\n{}",
        s.log()
    );
    let closed_at = Instant::now();
    let refused = std::net::TcpStream::connect(s.addr).unwrap_err();
    assert_eq!(
        refused.kind(),
        std::io::ErrorKind::ConnectionRefused,
        "{refused}"
    );

    let (answer, answered_at) = slow.join().unwrap();
    assert_eq!(answer, "Hello, World!", "the in-flight request completes");
    assert!(
        closed_at < answered_at,
        "the listener closed only after the slow request had ended; log:\n{}",
        s.log()
    );
    let status = s.wait_exit(DEADLINE).expect("the master exits");
    assert!(status.success(), "{status:?}; log:\n{}", s.log());
    assert_all_gone(workers, &s.log());
}

#[test]
fn reloads_under_load_lose_nothing() {
    ops::reloads_under_load_lose_nothing(&hello(), &[]);
}

#[test]
fn scaling_under_load_loses_nothing() {
    ops::scaling_under_load_loses_nothing(&hello(), &[]);
}

#[test]
fn a_handler_that_blocks_the_worker_thread_stops_its_heartbeat_and_it_is_replaced() {
    let s = contract::start(&hello(), &["--worker-timeout", "2"]);
    let workers: BTreeSet<u32> = s.wait_ready().into_iter().collect();
    assert_eq!(wait_for_distinct_pids(s.addr, 2), workers, "{}", s.log());
    // A connection to one worker (whichever accepts it), then the blocking request on it.
    let mut conn = std::net::TcpStream::connect(s.addr).unwrap();
    let victim: u32 = prefork_testutil::raw_get(&mut conn, "/pid")
        .parse()
        .unwrap();
    assert!(workers.contains(&victim));
    write!(conn, "GET /block?ms=60000 HTTP/1.1\r\nhost: test\r\n\r\n").unwrap();
    let blocked_at = Instant::now();
    // The other worker keeps answering meanwhile.
    let other = *workers.iter().find(|&&p| p != victim).unwrap();
    assert!(
        wait_until(DEADLINE, || !alive(victim)),
        "the blocked worker was not replaced; log:\n{}",
        s.log()
    );
    let replaced_after = blocked_at.elapsed();
    assert!(
        replaced_after < Duration::from_secs(5) + Duration::from_millis(500),
        "replaced after {replaced_after:?}; log:\n{}",
        s.log()
    );
    assert!(
        s.log().contains("stopped sending heartbeats"),
        "the master says why: {}",
        s.log()
    );
    let pids = prefork_testutil::pids_answering(s.addr, 20);
    assert!(pids.contains(&other), "{pids:?}");
    assert!(!pids.contains(&victim), "{pids:?}");
    // The replacement becomes ready and serves too.
    let now = wait_for_distinct_pids(s.addr, 2);
    assert!(now.contains(&other) && !now.contains(&victim), "{now:?}");
}

#[test]
fn serves_on_a_unix_socket() {
    let dir = prefork_testutil::temp_dir("actix-unix");
    let path = dir.join("hello.sock");
    let addr = format!("unix:{}", path.display());
    let mut s = Server::start_ready(&hello(), &["--addr", addr.as_str(), "--workers", "2"], &[]);
    let mut stream = std::os::unix::net::UnixStream::connect(&path).unwrap();
    stream.set_read_timeout(Some(DEADLINE)).unwrap();
    write!(
        stream,
        "GET / HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n"
    )
    .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer:?}");
    assert!(answer.ends_with("Hello, World!"), "{answer:?}");
    s.signal(Sig::SIGTERM);
    let status = s.wait_exit(DEADLINE).expect("master exits");
    assert!(status.success(), "{status:?}; log:\n{}", s.log());
}
