//! End-to-end scenarios shared by the adapters' example programs (the same file lives in
//! prefork-tokio and prefork-axum; it belongs in prefork-testutil once both have landed).
//! Every scenario runs the real example binary as a master with 2 workers on 127.0.0.1.

#![allow(dead_code)]

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use prefork_testutil::{
    alive, field, get, get_h2c, get_tls, process_state, wait_for_distinct_pids, wait_until, Http1,
    Server, Sig, TestCerts, DEADLINE,
};

pub(crate) fn start(bin: &PathBuf, extra: &[&str]) -> Server {
    let mut args = vec!["--addr", "127.0.0.1:0", "--workers", "2"];
    args.extend_from_slice(extra);
    Server::start(bin, &args)
}

/// Waits until every pid in `pids` is gone from the process table (not even a zombie).
pub(crate) fn assert_all_gone(pids: impl IntoIterator<Item = u32>, log: &str) {
    for pid in pids {
        assert!(
            wait_until(DEADLINE, || process_state(pid).is_none()),
            "process {pid} is still there (state {:?}); log:\n{log}",
            process_state(pid)
        );
    }
}

fn kill(pid: u32, sig: Sig) {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), sig).unwrap();
}

/// Both workers answer; keep-alive and h2c work; a worker killed with SIGKILL is replaced and
/// later requests succeed; SIGKILL of the master takes the workers down.
pub(crate) fn serves_recovers_and_dies_with_its_master(bin: &PathBuf) {
    let mut s = start(bin, &[]);
    let ready: BTreeSet<u32> = s.wait_ready().into_iter().collect();
    assert_eq!(ready.len(), 2, "{}", s.log());
    assert_eq!(
        wait_for_distinct_pids(s.addr, 2),
        ready,
        "the pids answering /pid are the ready workers; log:\n{}",
        s.log()
    );

    let r = get(s.addr, "/").unwrap();
    assert_eq!((r.status, r.body.as_str()), (200, "Hello, World!"));
    assert_eq!(r.content_type.as_deref(), Some("text/plain"));
    assert_eq!(r.version, hyper::Version::HTTP_11);
    assert_eq!(get(s.addr, "/nope").unwrap().status, 404);

    // Keep-alive: several requests on one connection, all served by the same worker.
    let mut conn = Http1::connect(s.addr).unwrap();
    let first = conn.get("/pid").unwrap().body;
    for _ in 0..5 {
        let r = conn.get("/pid").unwrap();
        assert_eq!((r.status, &r.body), (200, &first));
        assert_eq!(conn.get("/").unwrap().body, "Hello, World!");
    }

    // h2c: HTTP/2 with prior knowledge.
    let r = get_h2c(s.addr, "/").unwrap();
    assert_eq!(r.version, hyper::Version::HTTP_2);
    assert_eq!((r.status, r.body.as_str()), (200, "Hello, World!"));

    // A worker killed with SIGKILL is replaced; requests keep succeeding.
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
    let mut expected = ready.clone();
    expected.remove(&victim);
    expected.insert(new_pid);
    assert_eq!(
        wait_for_distinct_pids(s.addr, 2),
        expected,
        "log:\n{}",
        s.log()
    );
    assert_eq!(get(s.addr, "/").unwrap().body, "Hello, World!");
    assert_all_gone([victim], &log);

    // SIGKILL of the master: the workers notice at once and go.
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

/// SIGTERM during a slow request: it finishes with 200, an idle keep-alive connection is closed
/// (not waited for), every worker exits 0, the master exits 0 and no process is left.
pub(crate) fn sigterm_drains_a_slow_request(bin: &PathBuf, extra: &[&str]) {
    let mut args = vec!["--sleep-ms", "1500"];
    args.extend_from_slice(extra);
    let mut s = start(bin, &args);
    let workers = s.wait_ready();
    let addr = s.addr;
    let mut idle = Http1::connect(addr).unwrap();
    assert_eq!(idle.get("/pid").unwrap().status, 200);
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
    // Had the idle connection been waited for, the drain would have run into the timeout.
    assert!(!log.contains("drain did not finish"), "{log}");
    assert!(idle.get("/pid").is_err(), "the idle connection was closed");
}

/// `--no-prefork`: one process serves (its own pid), HTTP/1.1 and h2c, and drains on SIGTERM.
pub(crate) fn no_prefork_serves_and_drains(bin: &PathBuf) {
    let mut s = start(bin, &["--no-prefork", "--sleep-ms", "1000"]);
    let r = get(s.addr, "/pid").unwrap();
    assert_eq!(r.body, s.pid().to_string(), "served by the process itself");
    assert!(s.children().is_empty(), "no worker process");
    assert_eq!(
        get_h2c(s.addr, "/pid").unwrap().version,
        hyper::Version::HTTP_2
    );
    let addr = s.addr;
    let request = std::thread::spawn(move || get(addr, "/"));
    std::thread::sleep(Duration::from_millis(300));
    s.signal(Sig::SIGTERM);
    let r = request
        .join()
        .unwrap()
        .expect("in-flight request completes");
    assert_eq!((r.status, r.body.as_str()), (200, "Hello, World!"));
    let status = s.wait_exit(DEADLINE).expect("exits");
    assert!(status.success(), "{status:?}; log:\n{}", s.log());
}

/// A busy port (shared and reuseport mode, and `--no-prefork`) and `--workers 0` fail fast,
/// naming the address and the cause, with no worker started.
pub(crate) fn bad_start_fails_fast(bin: &PathBuf, name: &str) {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    for mode in [&[][..], &["--reuseport"][..], &["--no-prefork"][..]] {
        let mut args = vec!["--addr", addr.as_str(), "--workers", "2"];
        args.extend_from_slice(mode);
        let (status, log) = Server::run_to_exit(bin, &args, &[]);
        assert_eq!(status.code(), Some(1), "{mode:?}: {log}");
        assert!(
            log.contains(&format!("{name}: cannot listen on {addr}")),
            "{mode:?}: {log}"
        );
        assert!(log.contains("Address already in use"), "{mode:?}: {log}");
        assert!(!log.contains("worker started"), "{mode:?}: {log}");
    }
    for mode in [&[][..], &["--no-prefork"][..]] {
        let mut args = vec!["--addr", "127.0.0.1:0", "--workers", "0"];
        args.extend_from_slice(mode);
        let (status, log) = Server::run_to_exit(bin, &args, &[]);
        assert_eq!(status.code(), Some(1), "{mode:?}: {log}");
        assert!(
            log.contains("workers must be at least 1"),
            "{mode:?}: {log}"
        );
        assert!(!log.contains("worker started"), "{mode:?}: {log}");
    }
}

/// Reads until the server closes the connection; panics if it stays open past [`DEADLINE`].
fn assert_closed_by_server(mut stream: TcpStream, what: &str) {
    stream.set_read_timeout(Some(DEADLINE)).unwrap();
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return,
            Ok(_) => continue, // a TLS alert, say
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return,
            Err(e) => panic!("{what}: the server did not close the connection: {e}"),
        }
    }
}

fn tls_args<'a>(cert: &'a Path, key: &'a Path) -> Vec<&'a str> {
    vec![
        "--cert",
        cert.to_str().unwrap(),
        "--key",
        key.to_str().unwrap(),
    ]
}

/// HTTPS with a client that trusts the test CA: HTTP/2 by ALPN, HTTP/1.1 by ALPN or without;
/// plain HTTP, random bytes and a client stalled mid-handshake cost their connection only.
pub(crate) fn tls_serves_and_survives_bad_handshakes(bin: &PathBuf) {
    let certs = TestCerts::generate();
    let dir = prefork_testutil::temp_dir("tls");
    let (cert, key) = certs.write_to(&dir);
    let mut args = tls_args(&cert, &key);
    args.extend_from_slice(&["--tls-handshake-timeout-ms", "500"]);
    let s = start(bin, &args);
    let workers = s.wait_ready();
    let ca = certs.ca_pem.as_str();

    let r = get_tls(s.addr, "/", ca, &[b"h2", b"http/1.1"]).unwrap();
    assert_eq!((r.status, r.body.as_str()), (200, "Hello, World!"));
    assert_eq!(r.version, hyper::Version::HTTP_2, "h2 chosen by ALPN");
    let r = get_tls(s.addr, "/", ca, &[b"http/1.1"]).unwrap();
    assert_eq!(
        (r.version, r.body.as_str()),
        (hyper::Version::HTTP_11, "Hello, World!")
    );
    let r = get_tls(s.addr, "/", ca, &[]).unwrap();
    assert_eq!(
        (r.version, r.body.as_str()),
        (hyper::Version::HTTP_11, "Hello, World!")
    );

    // Plain HTTP to the TLS port.
    let mut plain = TcpStream::connect(s.addr).unwrap();
    plain
        .write_all(b"GET / HTTP/1.1\r\nhost: localhost\r\n\r\n")
        .unwrap();
    assert_closed_by_server(plain, "plain HTTP");
    // Random bytes.
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
    assert_closed_by_server(junk, "random bytes");
    // A client that starts a handshake (a record header announcing a ClientHello) and stalls:
    // the handshake timeout (500 ms here) closes it.
    let mut stalled = TcpStream::connect(s.addr).unwrap();
    stalled
        .write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01])
        .unwrap();
    let silent = TcpStream::connect(s.addr).unwrap();
    assert_closed_by_server(stalled, "stalled handshake");
    assert_closed_by_server(silent, "silent client");

    // The workers kept serving.
    let r = get_tls(s.addr, "/pid", ca, &[b"h2", b"http/1.1"]).unwrap();
    assert_eq!(r.status, 200);
    for pid in &workers {
        assert!(alive(*pid), "worker {pid} died; log:\n{}", s.log());
    }
    assert!(!s.log().contains("exited unexpectedly"), "{}", s.log());
    let _ = std::fs::remove_dir_all(dir);
}

/// Each bad certificate/key input fails in the master, before any worker, naming the file and
/// the problem.
pub(crate) fn tls_bad_inputs_fail_fast(bin: &PathBuf, name: &str) {
    let certs = TestCerts::generate();
    let dir = prefork_testutil::temp_dir("tls-bad");
    let (cert, key) = certs.write_to(&dir);
    let other = TestCerts::generate();
    let other_key = dir.join("other-key.pem");
    std::fs::write(&other_key, &other.key_pem).unwrap();
    let junk = dir.join("junk.pem");
    std::fs::write(&junk, "this is not PEM\n").unwrap();
    let missing = dir.join("missing.pem");

    let cases: [(&Path, &Path, &Path, &str); 5] = [
        (&missing, &key, &missing, "cannot read"),
        (&junk, &key, &junk, "no certificate found"),
        (&cert, &junk, &junk, "no private key found"),
        (
            &cert,
            &other_key,
            &other_key,
            "does not match the certificate",
        ),
        (&key, &cert, &key, "are the certificate and key swapped?"),
    ];
    for (c, k, named, problem) in cases {
        let mut args = vec!["--addr", "127.0.0.1:0", "--workers", "2"];
        args.extend(tls_args(c, k));
        let (status, log) = Server::run_to_exit(bin, &args, &[]);
        let case = format!("--cert {} --key {}", c.display(), k.display());
        assert_eq!(status.code(), Some(1), "{case}: {log}");
        assert!(log.contains(&format!("{name}: TLS: ")), "{case}: {log}");
        assert!(
            log.contains(&named.display().to_string()),
            "{case}: the message names {}:\n{log}",
            named.display()
        );
        assert!(log.contains(problem), "{case}: {log}");
        assert!(!log.contains("worker started"), "{case}: {log}");
    }
    let _ = std::fs::remove_dir_all(dir);
}
