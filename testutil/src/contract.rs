//! The end-to-end contract every example program meets (the example programs, and the
//! adapter issues' test lists), as reusable scenarios: each crate's end-to-end tests run them on
//! its own example, one `#[test]` per scenario, so the contract is written once and a new adapter
//! gets the whole suite by calling it.
//!
//! Every scenario runs the real example binary (a master with 2 workers on a free port of
//! 127.0.0.1, unless it is about `--no-prefork`) and talks to it with real clients. Parameters
//! say only what legitimately differs between adapters: extra flags, whether HTTP/2 is spoken on
//! plain TCP (h2c) or chosen by ALPN over TLS. Error messages are expected to start with the
//! program's name (`hyper_hello: ...`), as the examples print them.
//!
//! A scenario that ends with the server still running returns it ([`serves_from_every_worker`],
//! [`no_prefork_serves`], [`tls_serves_and_survives_bad_handshakes`]) so that a crate can check
//! its own details (threads, say) on the same processes; the scenario that stops it takes it
//! ([`replaces_a_killed_worker_and_dies_with_the_master`], [`no_prefork_drains_a_slow_request`]).
//! Dropping a [`Server`] kills what is left of it.

use std::collections::BTreeSet;
use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};

use super::*;

/// Starts `bin` as a master with 2 workers on a free port of 127.0.0.1, with `extra` flags,
/// and waits until it reports its address (not until the workers are ready: see
/// [`Server::wait_ready`]).
pub fn start(bin: &Path, extra: &[&str]) -> Server {
    let mut args = vec!["--addr", "127.0.0.1:0", "--workers", "2"];
    args.extend_from_slice(extra);
    Server::start(&bin.to_path_buf(), &args)
}

/// Checks the example contract's answer to `GET /`: `200`, `content-type: text/plain`, body
/// `Hello, World!`.
pub fn assert_hello(r: &Response) {
    assert_eq!((r.status, r.body.as_str()), (200, "Hello, World!"), "{r:?}");
    assert_eq!(r.content_type.as_deref(), Some("text/plain"), "{r:?}");
}

/// The program's name (the binary's file name), which starts its error messages.
fn program_name(bin: &Path) -> String {
    bin.file_name()
        .expect("a binary's path")
        .to_string_lossy()
        .into_owned()
}

fn kill_pid(pid: u32, sig: Signal) {
    let _ = kill(Pid::from_raw(pid as i32), sig);
}

/// Proves the prefork model serves and survives: [`serves_from_every_worker`], then
/// [`replaces_a_killed_worker_and_dies_with_the_master`], on one server started with
/// `extra` flags. `h2c`: the example also speaks HTTP/2 with prior knowledge on plain TCP.
pub fn serves_respawns_and_dies_with_the_master(bin: &Path, extra: &[&str], h2c: bool) {
    let s = serves_from_every_worker(bin, extra, h2c);
    replaces_a_killed_worker_and_dies_with_the_master(s);
}

/// Proves that every worker serves the example contract, on a master started with `extra`
/// flags: the two pids the master reported ready are exactly the pids answering `/pid`
/// across concurrent connections; `/` says hello over HTTP/1.1 with `text/plain`; an unknown
/// path is `404`; keep-alive requests on one connection all stay on one worker; with `h2c`,
/// HTTP/2 with prior knowledge says hello too.
///
/// Returns the server, still running, for the caller's own checks (its workers are
/// [`Server::wait_ready`]) and for [`replaces_a_killed_worker_and_dies_with_the_master`].
pub fn serves_from_every_worker(bin: &Path, extra: &[&str], h2c: bool) -> Server {
    let s = start(bin, extra);
    let ready: BTreeSet<u32> = s.wait_ready().into_iter().collect();
    assert_eq!(ready.len(), 2, "{}", s.log());
    assert_eq!(
        wait_for_distinct_pids(s.addr, 2),
        ready,
        "the pids answering /pid are the ready workers; log:\n{}",
        s.log()
    );

    let r = get(s.addr, "/").unwrap();
    assert_hello(&r);
    assert_eq!(r.version, hyper::Version::HTTP_11);
    assert_eq!(get(s.addr, "/nope").unwrap().status, 404);

    let mut conn = Http1::connect(s.addr).unwrap();
    let first = conn.get("/pid").unwrap().body;
    assert!(
        ready.contains(&first.parse().unwrap_or(0)),
        "/pid answered {first:?}"
    );
    for _ in 0..5 {
        let r = conn.get("/pid").unwrap();
        assert_eq!(
            (r.status, &r.body),
            (200, &first),
            "keep-alive stays on one worker"
        );
        assert_hello(&conn.get("/").unwrap());
    }

    if h2c {
        let r = get_h2c(s.addr, "/").unwrap();
        assert_eq!(r.version, hyper::Version::HTTP_2);
        assert_hello(&r);
    }
    s
}

/// Proves supervision and master-death handling on a running server (from
/// [`serves_from_every_worker`]): a worker killed with SIGKILL is logged as an unexpected
/// exit naming the signal, reaped (not even a zombie is left), and replaced under the same
/// worker id by a new process; the replacement and the survivor are then exactly the pids
/// answering, and `/` says hello. SIGKILL of the master then takes every worker down.
pub fn replaces_a_killed_worker_and_dies_with_the_master(mut s: Server) {
    let ready: BTreeSet<u32> = s.wait_ready().into_iter().collect();
    let victim = *ready.iter().next().unwrap();
    let log = s.log();
    let id = log
        .lines()
        .find(|l| l.contains("worker started") && field(l, "pid") == Some(&victim.to_string()))
        .and_then(|l| field(l, "worker"))
        .expect("the victim's start line")
        .to_owned();
    kill_pid(victim, Signal::SIGKILL);
    assert!(
        s.wait_log("worker started", 3),
        "no respawn; log:\n{}",
        s.log()
    );
    let log = s.log();
    assert!(log.contains("worker exited unexpectedly"), "{log}");
    assert!(log.contains("SIGKILL"), "the exit names the signal:\n{log}");
    let respawn = log
        .lines()
        .filter(|l| l.contains("worker started"))
        .nth(2)
        .unwrap();
    assert_eq!(
        field(respawn, "worker"),
        Some(id.as_str()),
        "same worker id:\n{log}"
    );
    let new_pid: u32 = field(respawn, "pid").unwrap().parse().unwrap();
    assert!(!ready.contains(&new_pid), "{log}");
    assert_all_gone([victim], &log);
    let mut expected = ready.clone();
    expected.remove(&victim);
    expected.insert(new_pid);
    assert_eq!(wait_for_distinct_pids(s.addr, 2), expected, "{}", s.log());
    assert_hello(&get(s.addr, "/").unwrap());

    s.signal(Signal::SIGKILL);
    s.wait_exit(DEADLINE).expect("the master dies");
    for pid in expected {
        assert!(
            wait_until(DEADLINE, || !alive(pid)),
            "worker {pid} outlived its master; log:\n{}",
            s.log()
        );
    }
}

/// A connection with a slow `GET /` in a worker's hands (the server runs with `--sleep-ms`):
/// the worker has accepted it (it answered `/pid` on it) and has read the request from the
/// socket. Read the answer from the returned stream.
pub fn slow_request_in_flight(s: &Server) -> TcpStream {
    let mut conn = TcpStream::connect(s.addr).unwrap();
    raw_get(&mut conn, "/pid");
    write!(conn, "GET / HTTP/1.1\r\nhost: test\r\n\r\n").unwrap();
    let client = conn.local_addr().unwrap();
    assert!(
        wait_until(DEADLINE, || server_has_read(s.addr, client)),
        "the server never read the request; log:\n{}",
        s.log()
    );
    conn
}

/// Sends SIGTERM to `s` while a slow `GET /` (the server runs with `--sleep-ms` of a second or
/// more) is in flight, and checks that the request completes with the hello answer.
fn sigterm_during_a_slow_request(s: &Server) {
    let mut conn = slow_request_in_flight(s);
    s.signal(Signal::SIGTERM);
    assert_eq!(
        read_response(&mut conn),
        "Hello, World!",
        "the in-flight request completes"
    );
}

/// Proves the graceful stop: SIGTERM to the master while a slow request (`--sleep-ms 1500`)
/// is in flight lets it complete with the hello answer; an idle keep-alive connection is
/// closed by the server rather than waited for (the shutdown timeout is set past
/// [`DEADLINE`], so waiting for it would fail the test); every worker exits 0, the master
/// exits 0, and no process is left. `extra` selects the listener mode (`--reuseport`).
pub fn sigterm_drains_a_slow_request(bin: &Path, extra: &[&str]) {
    let mut args = vec!["--sleep-ms", "1500", "--shutdown-timeout-ms", "60000"];
    args.extend_from_slice(extra);
    let mut s = start(bin, &args);
    let workers = s.wait_ready();

    // An idle keep-alive connection: it had one request answered.
    let mut idle = TcpStream::connect(s.addr).unwrap();
    let pid = raw_get(&mut idle, "/pid");
    assert!(
        workers.contains(&pid.parse().unwrap_or(0)),
        "/pid answered {pid:?}"
    );

    sigterm_during_a_slow_request(&s);
    assert!(
        server_closes(&mut idle),
        "the idle keep-alive connection was not closed; log:\n{}",
        s.log()
    );
    let status = s.wait_exit(DEADLINE).expect("the master exits");
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
}

/// The keep-alive timeout (`--keepalive-timeout-ms 1000`): a keep-alive connection that stays
/// idle after a request is closed by the worker (cleanly, without a drain), no sooner than the
/// timeout after its last request; one that sends a request every 300 ms for 2 s is never
/// closed meanwhile.
pub fn idle_keepalive_connections_close_after_the_keepalive_timeout(bin: &Path, extra: &[&str]) {
    const TIMEOUT: Duration = Duration::from_millis(1000);
    let mut args = vec!["--keepalive-timeout-ms", "1000"];
    args.extend_from_slice(extra);
    let s = start(bin, &args);
    s.wait_ready();
    let mut idle = TcpStream::connect(s.addr).unwrap();
    raw_get(&mut idle, "/pid");
    let last = Instant::now();
    let closed = read_until_closed(&mut idle);
    let after = last.elapsed();
    assert_eq!(
        closed.as_deref(),
        Some(&[][..]),
        "the idle connection is closed, without a word; log:\n{}",
        s.log()
    );
    let mut busy = TcpStream::connect(s.addr).unwrap();
    for _ in 0..7 {
        assert!(!raw_get(&mut busy, "/pid").is_empty());
        std::thread::sleep(Duration::from_millis(300));
    }
    assert!(
        !raw_get(&mut busy, "/pid").is_empty(),
        "the busy connection stays open"
    );
    assert!(after >= TIMEOUT, "closed {after:?} after its last request");
}

/// The header read timeout (`--header-timeout-ms 300`) counts from a head's first byte, as
/// nginx's `client_header_timeout`: a keep-alive connection idle for longer than it is still
/// open and served (the idle wait is the keep-alive timeout's, 75 s), and a head that stops
/// half way is cut once the timeout has passed since its first byte, without a `200`.
pub fn header_read_timeout_counts_from_the_heads_first_byte(bin: &Path, extra: &[&str]) {
    use std::io::Write;
    const TIMEOUT: Duration = Duration::from_millis(300);
    let mut args = vec!["--header-timeout-ms", "300"];
    args.extend_from_slice(extra);
    let s = start(bin, &args);
    s.wait_ready();
    let mut c = TcpStream::connect(s.addr).unwrap();
    assert!(!raw_get(&mut c, "/pid").is_empty());
    // Idle for more than three header read timeouts: that is the state under test, not a wait
    // for something to happen.
    std::thread::sleep(4 * TIMEOUT);
    assert!(
        !raw_get(&mut c, "/pid").is_empty(),
        "an idle keep-alive connection outlives the header read timeout; log:\n{}",
        s.log()
    );
    let begun = Instant::now();
    c.write_all(b"GET /pid HTTP/1.1\r\nho").unwrap();
    let closed = read_until_closed(&mut c);
    let waited = begun.elapsed();
    let closed = closed.unwrap_or_else(|| panic!("a stalled head is cut; log:\n{}", s.log()));
    assert!(
        !String::from_utf8_lossy(&closed).contains(" 200 "),
        "no answer to half a head: {closed:?}"
    );
    // Bounded well below the default timeouts (30 s, 75 s): the flag's timeout cut it.
    assert!(
        waited >= TIMEOUT && waited < Duration::from_secs(10),
        "cut {waited:?} after its first byte"
    );
}

/// Proves the loss-free drain of one worker under load (`extra`: the listener mode): with
/// keep-alive clients and new-connection-per-request clients asking `/pid` without pause,
/// SIGTERM to one worker directly makes it stop accepting and end each keep-alive
/// connection at a request boundary. Checks: 0 failed requests; keep-alive clients got
/// `Connection: close` and reconnected; a request sent on an idle keep-alive connection to
/// that worker after its drain began (within the grace, `--drain-grace-ms 5000`) is answered
/// by it, with `Connection: close`, and the connection is then closed; the worker exits 0
/// and the load keeps being served.
pub fn drain_under_load_loses_nothing(bin: &Path, extra: &[&str]) {
    use crate::load::{Load, LoadConfig};
    let mut args = vec!["--shutdown-timeout-ms", "20000", "--drain-grace-ms", "5000"];
    args.extend_from_slice(extra);
    let s = start(bin, &args);
    let workers = s.wait_ready();
    let load = Load::start(
        s.addr,
        LoadConfig {
            keepalive: 8,
            new_conn: 2,
            path: "/pid".into(),
            ..Default::default()
        },
    );
    assert!(load.wait_ok(300), "the load is served: {load:?}");
    // The victim: the worker serving most of the load (it holds keep-alive clients).
    let before = load.snapshot();
    let victim = *before
        .pids
        .iter()
        .max_by_key(|(_, n)| **n)
        .map(|(p, _)| p)
        .unwrap();
    assert!(workers.contains(&victim), "{before:?}");

    // An idle keep-alive connection to the victim (bounded search). The connections that
    // reached another worker stay open until then: with balanced accept the victim, holding
    // more than its share, leaves new connections to the others until they hold as many.
    let mut idle = None;
    let mut elsewhere = Vec::new();
    for _ in 0..200 {
        let mut c = TcpStream::connect(s.addr).unwrap();
        if raw_get(&mut c, "/pid") == victim.to_string() {
            idle = Some(c);
            break;
        }
        elsewhere.push(c);
    }
    drop(elsewhere);
    let mut idle = idle.expect("no connection reached the victim worker");
    let before = load.snapshot();

    kill_pid(victim, Signal::SIGTERM);
    // The drain has begun once a keep-alive client was told to close...
    assert!(
        wait_until(DEADLINE, || load.snapshot().closed_by_server
            > before.closed_by_server),
        "no keep-alive client got Connection: close: {load:?}; log:\n{}",
        s.log()
    );
    // ...and the idle connection, within its grace, still gets an answer, then the close.
    write!(idle, "GET /pid HTTP/1.1\r\nhost: test\r\n\r\n").unwrap();
    let answer = read_until_closed(&mut idle).expect("the idle connection is closed after");
    let answer = String::from_utf8_lossy(&answer).to_ascii_lowercase();
    assert!(
        answer.starts_with("http/1.1 200") && answer.ends_with(&victim.to_string()),
        "the request on the idle connection is answered by the draining worker: {answer:?}"
    );
    assert!(answer.contains("connection: close"), "{answer:?}");

    assert!(
        wait_until(DEADLINE, || !alive(victim)),
        "the victim did not exit; log:\n{}",
        s.log()
    );
    assert!(load.wait_ok(300), "the load goes on: {load:?}");
    let report = load.stop();
    assert_eq!(report.failed(), 0, "{report:?}; log:\n{}", s.log());
    assert!(report.reconnects > 0, "{report:?}");
    let log = s.log();
    let exit = log
        .lines()
        .find(|l| l.contains("exited") && field(l, "pid") == Some(&victim.to_string()))
        .unwrap_or_else(|| panic!("no exit line for {victim}:\n{log}"));
    assert!(exit.contains("exit status 0"), "the worker exits 0: {exit}");
}

/// The inodes of the listening sockets on `addr` (one, or one per worker with `SO_REUSEPORT`).
fn listener_inodes(addr: SocketAddr) -> Vec<String> {
    tcp_sockets(addr)
        .iter()
        .filter(|s| s.listening)
        .map(|s| format!("socket:[{}]", s.inode))
        .collect()
}

/// Whether `pid` holds a descriptor on one of `sockets` (from [`listener_inodes`]). A draining
/// worker closes its listener copies as its drain begins, so `false` (while it lives) says the
/// drain has begun.
fn holds_one_of(pid: u32, sockets: &[String]) -> bool {
    open_fds(pid)
        .iter()
        .any(|(_, target)| sockets.contains(target))
}

/// Reads from `stream` until the server closes it, for at most `within`: whether the close was
/// a clean end of file (`Ok(0)`) rather than a reset, or `None` if the connection stayed open
/// (or the server sent data instead).
fn wait_for_eof(stream: &mut TcpStream, within: Duration) -> Option<bool> {
    use std::io::Read;
    stream.set_read_timeout(Some(within)).unwrap();
    let mut buf = [0u8; 256];
    match stream.read(&mut buf) {
        Ok(0) => Some(true),
        Ok(_) => None,
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ) =>
        {
            None
        }
        Err(_) => Some(false),
    }
}

/// A drain answers what was received, even slowly: on a keep-alive connection that served one
/// request, once its worker drains (`--drain-grace-ms 200`), the next request head is sent one
/// byte every 50 ms (2.5 s, several graces): the bytes keep the connection from being taken for
/// idle, and the request is answered `200` with `Connection: close`, then the connection closes.
pub fn drain_answers_a_head_sent_across_several_graces(bin: &Path, extra: &[&str]) {
    use std::io::Read;
    let mut args = vec!["--drain-grace-ms", "200", "--shutdown-timeout-ms", "60000"];
    args.extend_from_slice(extra);
    let s = start(bin, &args);
    s.wait_ready();
    let mut conn = TcpStream::connect(s.addr).unwrap();
    let pid: u32 = raw_get(&mut conn, "/pid").parse().unwrap_or(0);
    let listeners = listener_inodes(s.addr);
    assert!(holds_one_of(pid, &listeners), "{listeners:?}");
    s.signal(Signal::SIGTERM);
    assert!(
        wait_until(DEADLINE, || !holds_one_of(pid, &listeners)),
        "worker {pid} did not begin to drain; log:\n{}",
        s.log()
    );
    let head = b"GET /pid HTTP/1.1\r\nhost: test\r\nx-pad: 0123456789\r\n\r\n";
    for byte in head {
        if conn.write_all(&[*byte]).is_err() {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    conn.set_read_timeout(Some(DEADLINE)).unwrap();
    let mut answer = Vec::new();
    let _ = conn.read_to_end(&mut answer);
    let answer = String::from_utf8_lossy(&answer).to_ascii_lowercase();
    assert!(
        answer.starts_with("http/1.1 200 ") && answer.contains("connection: close"),
        "the slowly sent request is answered, with Connection: close: {answer:?}; log:\n{}",
        s.log()
    );
    assert!(answer.ends_with(&pid.to_string()), "{answer:?}");
}

/// Proves the drain grace on idle keep-alive connections, for an example whose own idle
/// keep-alive timeout is long (75 s, as every contract program's), so that only the grace can
/// close them in time. Started with `--drain-grace-ms 500` and a shutdown timeout of 60 s (past
/// every deadline here), with two keep-alive connections that each had one request answered and
/// then stay idle; then SIGTERM to the master:
/// - the one that stays idle is closed by its worker with a clean end of file, no sooner than
///   the grace after the signal, and within 10 s (a worker waiting for its keep-alive timeout or
///   its drain timeout instead fails here);
/// - the other sends its next request once its worker has begun to drain (it has closed its
///   listener copies), within the grace: that worker answers it, `200` with
///   `Connection: close`, and then closes the connection;
/// - both workers exit 0, and the master exits 0 within 15 s of the signal.
///
/// "Within the grace" is certain only if the request left less than a grace after the signal
/// (the drain cannot begin before it): on a machine so busy that this test saw the drain begin
/// later than that, the attempt proves nothing, and the scenario starts over (3 attempts).
pub fn drain_grace_closes_idle_keepalive_connections(bin: &Path, extra: &[&str]) {
    const GRACE: Duration = Duration::from_millis(500);
    let mut args = vec!["--drain-grace-ms", "500", "--shutdown-timeout-ms", "60000"];
    args.extend_from_slice(extra);
    for attempt in 1..=3 {
        let mut s = start(bin, &args);
        let workers = s.wait_ready();

        let mut idle = TcpStream::connect(s.addr).unwrap();
        let idle_pid: u32 = raw_get(&mut idle, "/pid").parse().unwrap_or(0);
        let mut late = TcpStream::connect(s.addr).unwrap();
        let late_pid: u32 = raw_get(&mut late, "/pid").parse().unwrap_or(0);
        assert!(
            workers.contains(&idle_pid) && workers.contains(&late_pid),
            "{idle_pid} {late_pid} {workers:?}"
        );
        let listeners = listener_inodes(s.addr);
        assert!(
            holds_one_of(late_pid, &listeners),
            "{listeners:?} {:?}",
            open_fds(late_pid)
        );

        let signalled = Instant::now();
        s.signal(Signal::SIGTERM);
        assert!(
            wait_until(DEADLINE, || !holds_one_of(late_pid, &listeners)),
            "worker {late_pid} did not begin to drain; log:\n{}",
            s.log()
        );
        write!(late, "GET /pid HTTP/1.1\r\nhost: test\r\n\r\n").unwrap();
        let sent_after = signalled.elapsed();
        if sent_after >= GRACE {
            eprintln!(
                "attempt {attempt}: the drain was seen to begin only {sent_after:?} after \
                 SIGTERM (a busy machine); starting over"
            );
            continue;
        }
        let answer =
            read_until_closed(&mut late).expect("the connection is closed after the answer");
        let answer = String::from_utf8_lossy(&answer).to_ascii_lowercase();
        assert!(
            answer.starts_with("http/1.1 200") && answer.ends_with(&late_pid.to_string()),
            "a request sent {sent_after:?} after SIGTERM, within the grace, is answered by the \
             draining worker: {answer:?}; log:\n{}",
            s.log()
        );
        assert!(answer.contains("connection: close"), "{answer:?}");

        let clean = wait_for_eof(&mut idle, Duration::from_secs(10)).unwrap_or_else(|| {
            panic!(
                "the idle keep-alive connection to {idle_pid} was not closed within 10 s of \
                 SIGTERM (grace {GRACE:?}); log:\n{}",
                s.log()
            )
        });
        let closed_after = signalled.elapsed();
        assert!(clean, "closed with a reset, not an end of file");
        assert!(
            closed_after >= GRACE,
            "the idle connection was closed {closed_after:?} after SIGTERM, before the grace"
        );

        let status = s
            .wait_exit(Duration::from_secs(15).saturating_sub(signalled.elapsed()))
            .unwrap_or_else(|| panic!("the master did not exit within 15 s; log:\n{}", s.log()));
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
        return;
    }
    panic!("3 attempts on a machine too busy to send a request within a 500 ms grace");
}

/// Runs `bin` with `args` and expects it to exit on its own with status 1 and a message that
/// starts with the program's name; returns everything it printed.
fn fails_fast(bin: &Path, args: &[&str]) -> String {
    let (status, log) = Server::run_to_exit(&bin.to_path_buf(), args, &[]);
    assert_eq!(status.code(), Some(1), "{args:?}: {log}");
    let name = program_name(bin);
    assert!(log.contains(&format!("{name}: ")), "{args:?}: {log}");
    log
}

/// `bin` with `mode` flags, on a port that another socket holds, fails fast naming the
/// address and the OS's cause, with no worker started.
fn busy_port_fails_fast(bin: &Path, mode: &[&str]) {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let mut args = vec!["--addr", addr.as_str(), "--workers", "2"];
    args.extend_from_slice(mode);
    let log = fails_fast(bin, &args);
    let name = program_name(bin);
    assert!(
        log.contains(&format!("{name}: cannot listen on {addr}")),
        "{mode:?}: {log}"
    );
    assert!(log.contains("Address already in use"), "{mode:?}: {log}");
    assert!(!log.contains("worker started"), "{mode:?}: {log}");
}

/// Proves that bad start-up input fails fast, in the master, before any worker starts: a
/// busy port (shared-socket and `SO_REUSEPORT` modes) names the address and the OS's cause;
/// `--workers 0` is refused; an invalid address is named. Each exits with status 1 and a
/// message that starts with the program's name.
pub fn bad_input_fails_fast(bin: &Path) {
    busy_port_fails_fast(bin, &[]);
    busy_port_fails_fast(bin, &["--reuseport"]);
    let log = fails_fast(bin, &["--addr", "127.0.0.1:0", "--workers", "0"]);
    assert!(log.contains("workers must be at least 1"), "{log}");
    assert!(!log.contains("worker started"), "{log}");
    let log = fails_fast(bin, &["--addr", "127.0.0.1:99999"]);
    assert!(log.contains("127.0.0.1:99999"), "{log}");
    assert!(!log.contains("worker started"), "{log}");
}

/// Proves that a worker's start-up error is the master's error, without a restart loop, for
/// examples that take `--require-file PATH` (a file each worker reads before it reports
/// ready; a test-only flag): with a missing file, the master exits with status
/// 1 and the worker's own message (`failed to start: ... cannot read <path>`), only the two
/// initial workers were ever started, and none was reported ready.
///
/// `extra`: more flags for `bin`. Returns the log, for the caller's own checks on the message.
pub fn a_workers_startup_error_is_the_masters_error(bin: &Path, extra: &[&str]) -> String {
    let missing = "/nonexistent/prefork-app-data.bin";
    let mut args = vec![
        "--addr",
        "127.0.0.1:0",
        "--workers",
        "2",
        "--require-file",
        missing,
    ];
    args.extend_from_slice(extra);
    let log = fails_fast(bin, &args);
    assert!(log.contains("failed to start"), "{log}");
    assert!(
        log.contains(&format!("cannot read {missing}")),
        "the worker's own message:\n{log}"
    );
    assert_eq!(log.matches("worker started").count(), 2, "{log}");
    assert!(!log.contains("all workers ready"), "{log}");
    let printed = format!("{}: ", program_name(bin));
    assert_eq!(
        log.lines().filter(|l| l.starts_with(&printed)).count(),
        1,
        "printed once, by the master (the worker exits quietly):\n{log}"
    );
    log
}

/// Proves the `--no-prefork` baseline: [`no_prefork_serves`], then
/// [`no_prefork_drains_a_slow_request`]. `h2c`: the example also speaks HTTP/2 with prior
/// knowledge on plain TCP.
pub fn no_prefork_serves_and_drains(bin: &Path, h2c: bool) {
    let s = no_prefork_serves(bin, h2c);
    no_prefork_drains_a_slow_request(s);
}

/// Proves that `--no-prefork --workers 2` is one process on 2 threads: `/pid` answers its
/// own pid, it has no child, its `listening` line says `threads=2`; an unknown path is
/// `404`; with `h2c`, HTTP/2 with prior knowledge works. The server runs with
/// `--sleep-ms 1000` (`/` is slow, `/pid` is not).
///
/// Returns the server, still running, for the caller's own checks and for
/// [`no_prefork_drains_a_slow_request`].
pub fn no_prefork_serves(bin: &Path, h2c: bool) -> Server {
    let s = start(bin, &["--no-prefork", "--sleep-ms", "1000"]);
    let log = s.log();
    let listening = log.lines().find(|l| l.contains("listening")).unwrap();
    assert_eq!(field(listening, "threads"), Some("2"), "{log}");
    let r = get(s.addr, "/pid").unwrap();
    assert_eq!(r.body, s.pid().to_string(), "served by the process itself");
    assert!(s.children().is_empty(), "no worker process");
    assert_eq!(get(s.addr, "/nope").unwrap().status, 404);
    if h2c {
        let r = get_h2c(s.addr, "/pid").unwrap();
        assert_eq!(r.version, hyper::Version::HTTP_2);
        assert_eq!(r.body, s.pid().to_string());
    }
    s
}

/// Proves the single process's graceful stop (on a server from [`no_prefork_serves`]):
/// SIGTERM during a slow request lets it complete with the hello answer, and the process
/// exits 0.
pub fn no_prefork_drains_a_slow_request(mut s: Server) {
    sigterm_during_a_slow_request(&s);
    let status = s.wait_exit(DEADLINE).expect("the server exits");
    assert!(status.success(), "{status:?}; log:\n{}", s.log());
}

/// Proves that `--no-prefork` fails fast on bad input too: a busy port names the address
/// and the OS's cause, `--workers 0` is refused ("must be at least 1"); both exit with
/// status 1 and a message that starts with the program's name.
pub fn no_prefork_bad_input_fails_fast(bin: &Path) {
    busy_port_fails_fast(bin, &["--no-prefork"]);
    let log = fails_fast(
        bin,
        &["--addr", "127.0.0.1:0", "--workers", "0", "--no-prefork"],
    );
    assert!(log.contains("must be at least 1"), "{log}");
}

/// Asks `/pid` over HTTPS on new connections until `n` distinct workers answered (bounded
/// by a count and [`DEADLINE`]); returns them.
fn tls_pids(addr: SocketAddr, ca: &str, n: usize) -> BTreeSet<u32> {
    let mut seen = BTreeSet::new();
    let end = Instant::now() + DEADLINE;
    for _ in 0..500 {
        if let Ok(r) = get_tls(addr, "/pid", ca, &[b"http/1.1"]) {
            seen.extend(r.body.trim().parse::<u32>().ok());
        }
        if seen.len() >= n || Instant::now() >= end {
            break;
        }
    }
    seen
}

/// Starts `bin` as [`start`] does, serving HTTPS with fresh test certificates (written to the
/// returned directory) and `--tls-handshake-timeout-ms handshake_timeout_ms`, plus `extra`.
fn start_tls(
    bin: &Path,
    handshake_timeout_ms: &str,
    extra: &[&str],
) -> (Server, TestCerts, PathBuf) {
    let certs = TestCerts::generate();
    let dir = temp_dir("contract-tls");
    let (cert, key) = certs.write_to(&dir);
    let (cert, key) = (cert.to_str().unwrap(), key.to_str().unwrap());
    let mut args = vec![
        "--cert",
        cert,
        "--key",
        key,
        "--tls-handshake-timeout-ms",
        handshake_timeout_ms,
    ];
    args.extend_from_slice(extra);
    (start(bin, &args), certs, dir)
}

/// Proves HTTPS with `--cert/--key` (plus `extra` flags) and that bad handshakes cost their
/// connection only. Through a client that trusts the test CA, `/` says hello: over HTTP/2
/// when `h2` is offered (if `expect_h2`, else HTTP/1.1), over HTTP/1.1 when only it or no
/// ALPN is offered. Plain HTTP sent to the TLS port is not served (at most a `400`: see
/// [`tls_answers_plain_http_with_400`]) and is closed;
/// random bytes are closed; a client that stalls mid-handshake and one that sends nothing are
/// closed by the handshake timeout (`--tls-handshake-timeout-ms 300`). Afterwards the same
/// two workers (none restarted) all still serve HTTPS.
///
/// Returns the server, still running, for the caller's own checks.
pub fn tls_serves_and_survives_bad_handshakes(
    bin: &Path,
    extra: &[&str],
    expect_h2: bool,
) -> Server {
    let (s, certs, dir) = start_tls(bin, "300", extra);
    let workers: BTreeSet<u32> = s.wait_ready().into_iter().collect();
    let ca = certs.ca_pem.as_str();

    let r = get_tls(s.addr, "/", ca, &[b"h2", b"http/1.1"]).unwrap();
    assert_hello(&r);
    let negotiated = if expect_h2 {
        hyper::Version::HTTP_2
    } else {
        hyper::Version::HTTP_11
    };
    assert_eq!(r.version, negotiated, "chosen by ALPN");
    let http1: &[&[u8]] = &[b"http/1.1"];
    for alpn in [http1, &[]] {
        let r = get_tls(s.addr, "/", ca, alpn).unwrap();
        assert_hello(&r);
        assert_eq!(r.version, hyper::Version::HTTP_11, "ALPN {alpn:?}");
    }

    // Plain HTTP to the TLS port: not served (a 400 at most), the connection is closed.
    let mut plain = TcpStream::connect(s.addr).unwrap();
    plain
        .write_all(b"GET / HTTP/1.1\r\nhost: localhost\r\n\r\n")
        .unwrap();
    let answer = read_until_closed(&mut plain).expect("plain HTTP: connection left open");
    assert!(
        !answer.starts_with(b"HTTP/") || answer.starts_with(b"HTTP/1.1 400 "),
        "plain HTTP must not be served: {:?}",
        String::from_utf8_lossy(&answer)
    );
    // Random bytes: closed.
    let mut junk = TcpStream::connect(s.addr).unwrap();
    let mut x: u32 = 0x9e37_79b9;
    let bytes: Vec<u8> = (0..1024)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect();
    let _ = junk.write_all(&bytes);
    assert!(
        server_closes(&mut junk),
        "random bytes: connection left open"
    );
    // A ClientHello record header announcing 512 bytes, then a few of them and nothing more;
    // and a client that sends nothing at all. Both wait on the same handshake timeout.
    let mut stalled = TcpStream::connect(s.addr).unwrap();
    stalled
        .write_all(&[
            0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03,
        ])
        .unwrap();
    let mut silent = TcpStream::connect(s.addr).unwrap();
    assert!(
        server_closes(&mut stalled),
        "stalled handshake: connection left open; log:\n{}",
        s.log()
    );
    assert!(
        server_closes(&mut silent),
        "silent client: connection left open; log:\n{}",
        s.log()
    );

    // The workers kept serving: the same ones, none restarted.
    assert_hello(&get_tls(s.addr, "/", ca, &[b"h2", b"http/1.1"]).unwrap());
    assert_eq!(tls_pids(s.addr, ca, 2), workers, "{}", s.log());
    assert_eq!(s.started_workers(), workers, "{}", s.log());
    assert_eq!(
        s.children().into_iter().collect::<BTreeSet<_>>(),
        workers,
        "{}",
        s.log()
    );
    assert!(!s.log().contains("exited unexpectedly"), "{}", s.log());
    let _ = std::fs::remove_dir_all(dir);
    s
}

/// TLS sessions resume on every worker, as behind nginx: the tickets a worker sends open in
/// every worker of the same master (a returning client reaches any of them through the shared
/// socket). 24 HTTPS connections one after another from one client that keeps its tickets, to
/// 2 workers: every connection after the first resumed its session, and both workers answered
/// (with per-worker session caches, about half of them were full handshakes). Fails if
/// neither of 5 such clients reached both workers.
pub fn tls_sessions_resume_on_every_worker(bin: &Path, extra: &[&str]) {
    let (s, certs, dir) = start_tls(bin, "10000", extra);
    s.wait_ready();
    // Up to 5 clients of 24 connections, until one has been answered by both workers (the
    // shared socket does not promise which worker accepts a lone connection).
    let mut clients = Vec::new();
    for _ in 0..5 {
        let seen = tls_resumptions(s.addr, &certs.ca_pem, 24).unwrap();
        assert!(
            seen[1..].iter().all(|(_, resumed)| *resumed),
            "every connection after the first resumed (pid, resumed): {seen:?}"
        );
        let pids: BTreeSet<u32> = seen.iter().map(|(pid, _)| *pid).collect();
        clients.push(seen);
        if pids.len() == 2 {
            let _ = std::fs::remove_dir_all(dir);
            return;
        }
    }
    panic!(
        "no client was answered by both workers, so no session crossed workers: {clients:?}; \
         log:\n{}",
        s.log()
    );
}

/// Proves that plain HTTP sent to the TLS port (`--cert/--key`, plus `extra` flags) is told it
/// went to the wrong port, as nginx does: `GET / HTTP/1.1` in plain text gets
/// `HTTP/1.1 400 Bad Request` with `Connection: close` and a text body saying that the port
/// expects HTTPS, and the server then closes the connection itself, at once (the handshake
/// timeout is 20 s: a close that waited for it would fail here). Several times, so that both
/// workers are likely to answer one. The workers are unaffected: HTTPS right after is served
/// `200` by the same two workers, none restarted.
///
/// Returns the server, still running, for the caller's own checks.
pub fn tls_answers_plain_http_with_400(bin: &Path, extra: &[&str]) -> Server {
    let (s, certs, dir) = start_tls(bin, "20000", extra);
    let workers: BTreeSet<u32> = s.wait_ready().into_iter().collect();
    let ca = certs.ca_pem.as_str();
    for _ in 0..6 {
        let mut plain = TcpStream::connect(s.addr).unwrap();
        plain
            .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        let sent = Instant::now();
        let answer = read_until_closed(&mut plain).unwrap_or_else(|| {
            panic!(
                "plain HTTP: the connection was left open; log:\n{}",
                s.log()
            )
        });
        assert!(
            sent.elapsed() < Duration::from_secs(10),
            "closed only after {:?}, not right after the 400",
            sent.elapsed()
        );
        let answer = String::from_utf8_lossy(&answer);
        let (head, body) = answer.split_once("\r\n\r\n").unwrap_or((&answer, ""));
        assert!(
            head.starts_with("HTTP/1.1 400 Bad Request\r\n"),
            "plain HTTP gets a 400: {answer:?}"
        );
        assert!(
            head.to_ascii_lowercase().contains("\r\nconnection: close"),
            "{answer:?}"
        );
        assert_eq!(
            body, "This port expects HTTPS (TLS); plain HTTP was sent.\n",
            "{answer:?}"
        );
    }

    // The workers are unaffected: the same ones serve HTTPS, none restarted.
    let r = get_tls(s.addr, "/", ca, &[b"http/1.1"]).unwrap();
    assert_hello(&r);
    assert_eq!(tls_pids(s.addr, ca, 2), workers, "{}", s.log());
    assert_eq!(s.started_workers(), workers, "{}", s.log());
    assert!(!s.log().contains("exited unexpectedly"), "{}", s.log());
    let _ = std::fs::remove_dir_all(dir);
    s
}

/// Proves that bad TLS input fails in the master, before any worker starts: a missing
/// certificate file, a file with no certificate, one with no key, a key that does not match
/// the certificate, certificate and key swapped. Each exits with status 1 and a message
/// `<program>: TLS: ...` naming the offending file and the problem.
pub fn bad_tls_inputs_fail_fast(bin: &Path) {
    let name = program_name(bin);
    let dir = temp_dir("contract-bad-tls");
    let (cert, key) = TestCerts::generate().write_to(&dir);
    let junk = dir.join("junk.pem");
    std::fs::write(&junk, "not a PEM file\n").unwrap();
    let other_key = dir.join("other-key.pem");
    std::fs::write(&other_key, TestCerts::generate().key_pem).unwrap();
    let missing = dir.join("missing.pem");

    let cases: [(&str, &Path, &Path, &Path, &str); 5] = [
        ("missing cert", &missing, &key, &missing, "cannot read"),
        ("no certificate", &junk, &key, &junk, "no certificate found"),
        ("no key", &cert, &junk, &junk, "no private key found"),
        (
            "key not matching",
            &cert,
            &other_key,
            &other_key,
            "does not match the certificate",
        ),
        (
            "swapped",
            &key,
            &cert,
            &key,
            "are the certificate and key swapped?",
        ),
    ];
    for (case, cert_arg, key_arg, named, problem) in cases {
        let args = [
            "--addr",
            "127.0.0.1:0",
            "--workers",
            "2",
            "--cert",
            cert_arg.to_str().unwrap(),
            "--key",
            key_arg.to_str().unwrap(),
        ];
        let log = fails_fast(bin, &args);
        assert!(log.contains(&format!("{name}: TLS: ")), "{case}: {log}");
        let named = named.display().to_string();
        assert!(
            log.contains(&named),
            "{case}: the path {named} is named:\n{log}"
        );
        assert!(
            log.contains(problem),
            "{case}: {problem:?} expected:\n{log}"
        );
        assert!(!log.contains("worker started"), "{case}: {log}");
    }
    let _ = std::fs::remove_dir_all(dir);
}
