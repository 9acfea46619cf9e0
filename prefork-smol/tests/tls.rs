//! TLS end to end on the real `smol_hello` example (`--cert/--key`): HTTPS with HTTP/2 and
//! HTTP/1.1 by ALPN, bad handshakes that cost one connection only, and bad certificate inputs
//! that fail in the master before any worker starts.
#![cfg(feature = "tls")]

mod util;

use std::collections::BTreeSet;
use std::io::Write;

use prefork_testutil::server_closes;
use prefork_testutil::{get, get_tls, temp_dir, Server, TestCerts};
use util::{connect, hello_bin, start};

#[test]
fn https_serves_h2_and_http1_and_bad_handshakes_cost_one_connection() {
    let certs = TestCerts::generate();
    let dir = temp_dir("smol-tls");
    let (cert, key) = certs.write_to(&dir);
    let (cert, key) = (cert.to_str().unwrap(), key.to_str().unwrap());
    let s = start(
        &hello_bin(),
        &[
            "--workers",
            "2",
            "--cert",
            cert,
            "--key",
            key,
            "--tls-handshake-timeout-ms",
            "300",
        ],
    );
    let workers: BTreeSet<u32> = s.wait_ready().into_iter().collect();

    let r = get_tls(s.addr, "/", &certs.ca_pem, &[b"h2", b"http/1.1"]).unwrap();
    assert_eq!((r.status, r.body.as_str()), (200, "Hello, World!"));
    assert_eq!(r.version, hyper::Version::HTTP_2, "h2 by ALPN");
    let r = get_tls(s.addr, "/", &certs.ca_pem, &[b"http/1.1"]).unwrap();
    assert_eq!((r.status, r.body.as_str()), (200, "Hello, World!"));
    assert_eq!(r.version, hyper::Version::HTTP_11);
    let r = get_tls(s.addr, "/pid", &certs.ca_pem, &[]).unwrap();
    assert!(workers.contains(&r.body.parse().unwrap()), "{}", r.body);

    // Plain HTTP to the TLS port: that request fails, nothing else.
    assert!(get(s.addr, "/").is_err(), "plain HTTP must not be answered");
    // Random bytes: the server closes that connection.
    let mut junk = connect(s.addr);
    let bytes: Vec<u8> = (0u32..512)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 7) as u8)
        .collect();
    let _ = junk.write_all(&bytes);
    assert!(
        server_closes(&mut junk),
        "random bytes: connection left open"
    );
    // A client that stalls mid-handshake (a TLS record header, then nothing) is cut off by the
    // handshake timeout.
    let mut stalled = connect(s.addr);
    stalled.write_all(&[0x16, 0x03, 0x01, 0x02]).unwrap();
    assert!(
        server_closes(&mut stalled),
        "stalled handshake: connection left open"
    );

    // The workers kept serving: same pids, no restart.
    let r = get_tls(s.addr, "/", &certs.ca_pem, &[b"h2", b"http/1.1"]).unwrap();
    assert_eq!(r.body, "Hello, World!");
    assert_eq!(s.started_workers(), workers, "{}", s.log());
    assert!(!s.log().contains("exited unexpectedly"), "{}", s.log());
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn bad_tls_inputs_fail_fast_naming_the_path_with_no_worker_started() {
    let certs = TestCerts::generate();
    let dir = temp_dir("smol-bad-tls");
    let (cert, key) = certs.write_to(&dir);
    let junk = dir.join("junk.pem");
    std::fs::write(&junk, "not a PEM file\n").unwrap();
    let other_key = dir.join("other-key.pem");
    std::fs::write(&other_key, TestCerts::generate().key_pem).unwrap();
    let missing = dir.join("missing.pem");

    let p = |p: &std::path::PathBuf| p.to_str().unwrap().to_owned();
    let cases = [
        (
            "missing cert",
            p(&missing),
            p(&key),
            p(&missing),
            "cannot read",
        ),
        (
            "no certificate",
            p(&junk),
            p(&key),
            p(&junk),
            "no certificate found",
        ),
        (
            "no key",
            p(&cert),
            p(&junk),
            p(&junk),
            "no private key found",
        ),
        (
            "key not matching",
            p(&cert),
            p(&other_key),
            p(&other_key),
            "does not match",
        ),
        ("swapped", p(&key), p(&cert), p(&key), "swapped"),
    ];
    for (case, cert_arg, key_arg, named, why) in cases {
        let (status, log) = Server::run_to_exit(
            &hello_bin(),
            &[
                "--addr",
                "127.0.0.1:0",
                "--workers",
                "2",
                "--cert",
                &cert_arg,
                "--key",
                &key_arg,
            ],
            &[],
        );
        assert_eq!(status.code(), Some(1), "{case}: {log}");
        assert!(
            log.contains(&named),
            "{case}: the path {named} is named:\n{log}"
        );
        assert!(log.contains(why), "{case}: {why:?} expected:\n{log}");
        assert!(!log.contains("worker started"), "{case}: {log}");
    }
    let _ = std::fs::remove_dir_all(dir);
}
