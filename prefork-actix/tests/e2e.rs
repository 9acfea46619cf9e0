//! End-to-end tests of prefork-actix on the real example programs: a master and two worker
//! processes on 127.0.0.1, real signals, real HTTP/1.1, HTTP/2 and TLS clients.
//!
//! `actix_hello` starts from `#[actix_web::main]` (a worker serves on its own `prefork-actix`
//! thread); `actix_minimal` from a plain `fn main()` (a worker serves on its main thread).

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Duration;

use prefork_testutil::{
    alive, field, get, process_state, wait_for_distinct_pids, wait_until, Server, Sig, DEADLINE,
};

fn hello() -> PathBuf {
    prefork_testutil::example_bin("actix_hello")
}

/// Starts `actix_hello` with two workers on a free port.
fn start(extra: &[&str]) -> Server {
    let mut args = vec!["--addr", "127.0.0.1:0", "--workers", "2"];
    args.extend_from_slice(extra);
    Server::start(&hello(), &args)
}

fn kill(pid: u32, sig: Sig) {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), sig).unwrap();
}

/// Waits until every pid in `pids` is gone from the process table (not even a zombie).
fn assert_all_gone(pids: impl IntoIterator<Item = u32>, log: &str) {
    for pid in pids {
        assert!(
            wait_until(DEADLINE, || process_state(pid).is_none()),
            "process {pid} is still there (state {:?}); log:\n{log}",
            process_state(pid)
        );
    }
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
// Plain HTTP

#[test]
fn two_workers_answer_a_killed_one_is_replaced_and_master_death_ends_them() {
    let mut s = start(&[]);
    let ready: BTreeSet<u32> = s.wait_ready().into_iter().collect();
    assert_eq!(ready.len(), 2, "{}", s.log());
    assert_eq!(
        wait_for_distinct_pids(s.addr, 2),
        ready,
        "pids answering /pid must be the ready workers; log:\n{}",
        s.log()
    );
    let r = get(s.addr, "/").unwrap();
    assert_eq!((r.status, r.body.as_str()), (200, "Hello, World!"));
    assert_eq!(r.content_type.as_deref(), Some("text/plain"));
    for &pid in &ready {
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

    // SIGKILL one worker: the master logs it and starts a replacement that serves.
    let victim = *ready.iter().next().unwrap();
    kill(victim, Sig::SIGKILL);
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
    assert!(!ready.contains(&new_pid));
    assert_all_gone([victim], &log);
    let mut expected = ready.clone();
    expected.remove(&victim);
    expected.insert(new_pid);
    assert_eq!(wait_for_distinct_pids(s.addr, 2), expected, "{}", s.log());
    let r = get(s.addr, "/").unwrap();
    assert_eq!((r.status, r.body.as_str()), (200, "Hello, World!"));

    // SIGKILL the master: the workers learn it through their control socket and exit.
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
fn sigterm_drains_a_slow_request_and_exits_zero() {
    let mut s = start(&["--sleep-ms", "1500"]);
    let workers = s.wait_ready();
    let addr = s.addr;
    let request = std::thread::spawn(move || get(addr, "/"));
    // Give the request time to reach a worker before the stop.
    std::thread::sleep(Duration::from_millis(400));
    s.signal(Sig::SIGTERM);
    let r = request
        .join()
        .unwrap()
        .expect("the in-flight request completes");
    assert_eq!((r.status, r.body.as_str()), (200, "Hello, World!"));
    let status = s.wait_exit(DEADLINE).expect("master exits");
    let log = s.log();
    assert!(
        status.success(),
        "master exit status {status:?}; log:\n{log}"
    );
    assert_all_gone(workers, &log);
    assert_eq!(log.matches("status=exit status 0").count(), 2, "{log}");
    assert!(!log.contains("exited unexpectedly"), "{log}");
}

#[test]
fn busy_port_zero_workers_and_zero_threads_fail_fast_with_the_cause() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let (status, log) = Server::run_to_exit(&hello(), &["--addr", &addr, "--workers", "2"], &[]);
    assert_eq!(status.code(), Some(1), "{log}");
    assert!(log.contains(&format!("cannot listen on {addr}")), "{log}");
    assert!(log.contains("Address already in use"), "{log}");
    assert!(!log.contains("worker started"), "{log}");

    let (status, log) =
        Server::run_to_exit(&hello(), &["--addr", "127.0.0.1:0", "--workers", "0"], &[]);
    assert_eq!(status.code(), Some(1), "{log}");
    assert!(log.contains("workers must be at least 1"), "{log}");
    assert!(!log.contains("worker started"), "{log}");

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
    let missing = "/nonexistent/prefork-actix-app-data.bin";
    let (status, log) = Server::run_to_exit(
        &hello(),
        &[
            "--addr",
            "127.0.0.1:0",
            "--workers",
            "2",
            "--require-file",
            missing,
        ],
        &[],
    );
    assert_eq!(status.code(), Some(1), "{log}");
    // The worker's own error (sent on its control channel, which happens only before ready),
    // not merely its exit status.
    assert!(
        log.contains("failed to start: Can not start server service"),
        "actix's start-up error reaches the master:\n{log}"
    );
    assert!(log.contains(&format!("cannot read {missing}")), "{log}");
    assert_eq!(log.matches("worker started").count(), 2, "{log}");
    assert!(!log.contains("all workers ready"), "{log}");
}

#[test]
fn plain_fn_main_serves_and_stops() {
    let bin = prefork_testutil::example_bin("actix_minimal");
    let mut s = Server::start(&bin, &["--addr", "127.0.0.1:0", "--workers", "2"]);
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

#[test]
fn no_prefork_is_actix_in_one_process() {
    let mut s = start(&["--no-prefork"]);
    let r = get(s.addr, "/pid").unwrap();
    assert_eq!(r.body, s.pid().to_string(), "one process serves");
    let r = get(s.addr, "/").unwrap();
    assert_eq!((r.status, r.body.as_str()), (200, "Hello, World!"));
    assert_eq!(r.content_type.as_deref(), Some("text/plain"));
    assert!(s.children().is_empty());
    assert_eq!(actix_worker_threads(s.pid()), 2, "--workers 2 threads");
    s.signal(Sig::SIGTERM);
    let status = s.wait_exit(DEADLINE).expect("server exits");
    assert!(status.success(), "{status:?}; log:\n{}", s.log());
}

// ---------------------------------------------------------------------------------------------
// TLS (the example refuses --cert without the `tls` feature)
#[cfg(feature = "tls")]
mod tls {
    use std::io::{Read, Write};
    use std::net::{SocketAddr, TcpStream};
    use std::path::Path;

    use prefork_testutil::{get_tls, temp_dir, TestCerts};

    use super::*;

    struct Certs {
        ca: String,
        cert: PathBuf,
        key: PathBuf,
        dir: PathBuf,
    }

    fn certs(tag: &str) -> Certs {
        let generated = TestCerts::generate();
        let dir = temp_dir(tag);
        let (cert, key) = generated.write_to(&dir);
        Certs {
            ca: generated.ca_pem,
            cert,
            key,
            dir,
        }
    }

    fn path(p: &Path) -> &str {
        p.to_str().unwrap()
    }

    /// Reads from `stream` until the server closes it; returns what it sent, or `None` if it was
    /// still open at the deadline.
    fn read_until_closed(stream: &mut TcpStream) -> Option<Vec<u8>> {
        stream.set_read_timeout(Some(DEADLINE)).unwrap();
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        for _ in 0..1000 {
            match stream.read(&mut buf) {
                Ok(0) => return Some(got),
                Ok(n) => got.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return Some(got),
                Err(_) => return None,
            }
        }
        None
    }

    /// Asks `/pid` over HTTPS until `n` distinct workers answered (bounded); returns them.
    fn tls_pids(addr: SocketAddr, ca: &str, n: usize) -> BTreeSet<u32> {
        let mut seen = BTreeSet::new();
        let end = std::time::Instant::now() + DEADLINE;
        for _ in 0..500 {
            if let Ok(r) = get_tls(addr, "/pid", ca, &[b"http/1.1"]) {
                seen.extend(r.body.trim().parse::<u32>().ok());
            }
            if seen.len() >= n || std::time::Instant::now() >= end {
                break;
            }
        }
        seen
    }

    #[test]
    fn https_with_h2_by_alpn_and_bad_handshakes_cost_only_their_connection() {
        let c = certs("actix-tls");
        let s = start(&[
            "--cert",
            path(&c.cert),
            "--key",
            path(&c.key),
            "--tls-handshake-timeout-ms",
            "300",
            "--threads",
            "2",
        ]);
        let ready: BTreeSet<u32> = s.wait_ready().into_iter().collect();
        for &pid in &ready {
            assert_eq!(
                actix_worker_threads(pid),
                2,
                "--threads 2: {:?}",
                thread_names(pid)
            );
        }

        let r = get_tls(s.addr, "/", &c.ca, &[b"http/1.1"]).unwrap();
        assert_eq!((r.status, r.body.as_str()), (200, "Hello, World!"));
        assert_eq!(format!("{:?}", r.version), "HTTP/1.1");
        let r = get_tls(s.addr, "/", &c.ca, &[b"h2", b"http/1.1"]).unwrap();
        assert_eq!((r.status, r.body.as_str()), (200, "Hello, World!"));
        assert_eq!(
            format!("{:?}", r.version),
            "HTTP/2.0",
            "h2 negotiated by ALPN"
        );

        // Plain HTTP to the TLS port: no HTTP answer, the connection is closed.
        let mut plain = TcpStream::connect(s.addr).unwrap();
        plain
            .write_all(b"GET / HTTP/1.1\r\nhost: localhost\r\n\r\n")
            .unwrap();
        let answer = read_until_closed(&mut plain).expect("plain HTTP connection closed");
        assert!(!answer.starts_with(b"HTTP/"), "{answer:?}");

        // Random bytes: closed.
        let mut garbage = TcpStream::connect(s.addr).unwrap();
        let mut x: u32 = 0x9e37_79b9;
        let bytes: Vec<u8> = (0..1024)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                x as u8
            })
            .collect();
        garbage.write_all(&bytes).unwrap();
        assert!(
            read_until_closed(&mut garbage).is_some(),
            "garbage connection closed"
        );

        // A client that stalls mid-handshake (a ClientHello record header announcing 512 bytes,
        // then a few of them): closed by the handshake timeout.
        let mut stalled = TcpStream::connect(s.addr).unwrap();
        stalled
            .write_all(&[
                0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03,
            ])
            .unwrap();
        assert!(
            read_until_closed(&mut stalled).is_some(),
            "the server must close a stalled handshake; log:\n{}",
            s.log()
        );

        // Both workers are the original ones and still serve HTTPS.
        assert_eq!(tls_pids(s.addr, &c.ca, 2), ready, "{}", s.log());
        assert_eq!(
            s.children().into_iter().collect::<BTreeSet<_>>(),
            ready,
            "{}",
            s.log()
        );
        assert!(!s.log().contains("exited unexpectedly"), "{}", s.log());
        let _ = std::fs::remove_dir_all(&c.dir);
    }

    #[test]
    fn bad_tls_inputs_fail_fast_naming_the_path() {
        let c = certs("actix-tls-bad");
        let other = certs("actix-tls-other");
        let junk = c.dir.join("junk.pem");
        std::fs::write(&junk, "not a PEM file\n").unwrap();
        let missing = c.dir.join("missing.pem");

        let cases: [(&str, &Path, &Path, &Path, &str); 5] = [
            (
                "missing cert file",
                &missing,
                &c.key,
                &missing,
                "cannot read",
            ),
            (
                "no certificate",
                &junk,
                &c.key,
                &junk,
                "no certificate found",
            ),
            ("no key", &c.cert, &junk, &junk, "no private key found"),
            (
                "key not matching",
                &c.cert,
                &other.key,
                &other.key,
                "does not match the certificate",
            ),
            ("swapped", &c.key, &c.cert, &c.key, "swapped"),
        ];
        for (case, cert, key, named, message) in cases {
            let (status, log) = Server::run_to_exit(
                &hello(),
                &[
                    "--addr",
                    "127.0.0.1:0",
                    "--workers",
                    "2",
                    "--cert",
                    path(cert),
                    "--key",
                    path(key),
                ],
                &[],
            );
            assert_eq!(status.code(), Some(1), "{case}: {log}");
            assert!(log.contains(path(named)), "{case}: names the path:\n{log}");
            assert!(log.contains(message), "{case}: says {message:?}:\n{log}");
            assert!(!log.contains("worker started"), "{case}: no worker:\n{log}");
        }
        let _ = std::fs::remove_dir_all(&c.dir);
        let _ = std::fs::remove_dir_all(&other.dir);
    }
}
