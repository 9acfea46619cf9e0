//! The factory, `ConnectInfo`, embedded TLS and the `#[tokio::main]` refusal, with the master
//! running inside this test process and the workers being this same test binary, re-executed:
//! its `main` (a `harness = false` test) runs [`worker`] in a worker, and otherwise the test
//! cases.

use std::cell::RefCell;
use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::process::Command;
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::routing::get;
use axum::Router;
use prefork_axum::prefork_core::{is_worker, SpawnContext};
use prefork_axum::{BoxError, Prefork, Server, Worker};
use prefork_testutil::{alive, get_h2c, wait_until, DEADLINE};

/// How often [`factory`] ran in this process.
static FACTORY_CALLS: AtomicUsize = AtomicUsize::new(0);

/// The factory under test. `/factory` answers "<pid the factory ran in> <factory runs in this
/// process> <worker id> <pid answering>"; `/peer` the `ConnectInfo` address.
async fn factory(worker: &Worker) -> Result<Router, BoxError> {
    let worker = worker.id();
    FACTORY_CALLS.fetch_add(1, Ordering::SeqCst);
    let built_in = std::process::id();
    // Async work, on the worker's runtime.
    tokio::time::sleep(Duration::from_millis(1)).await;
    if std::env::var_os("TEST_FACTORY_FAIL").is_some() {
        return Err("cannot reach db.invalid:5432".into());
    }
    Ok(Router::new()
        .route(
            "/factory",
            get(move || async move {
                format!(
                    "{built_in} {} {worker} {}",
                    FACTORY_CALLS.load(Ordering::SeqCst),
                    std::process::id()
                )
            }),
        )
        .route(
            "/peer",
            get(|ConnectInfo(peer): ConnectInfo<SocketAddr>| async move { peer.to_string() }),
        ))
}

fn main() {
    if is_worker() {
        worker();
    }
    #[cfg_attr(not(feature = "tls"), allow(unused_mut))]
    let mut cases = prefork_testutil::cases![
        factory_runs_once_in_each_worker_never_in_the_master_and_connect_info_works,
        a_failing_factory_is_the_masters_error_without_a_restart_loop,
        inside_a_tokio_runtime_fails_fast_with_a_clear_message,
    ]
    .to_vec();
    #[cfg(feature = "tls")]
    cases.push(prefork_testutil::cases![embedded_pem_serves_https_with_http2][0]);
    prefork_testutil::harness::run(&cases);
}

/// The worker side, in a worker started by the tests below: serves [`factory`]'s app (two
/// runtime threads, to show that the factory still runs once per process) until told to stop.
fn worker() -> ! {
    #[cfg_attr(not(feature = "tls"), allow(unused_mut))]
    let mut builder = Server::new("127.0.0.1:0").threads(2);
    #[cfg(feature = "tls")]
    if let (Ok(cert), Ok(key)) = (
        std::env::var("TEST_CERT_PEM"),
        std::env::var("TEST_KEY_PEM"),
    ) {
        builder = builder.prefork(|p| p.tls(prefork_axum::TlsConfig::from_pem(cert, key)));
    }
    let result = builder.serve_with(factory);
    std::process::exit(if result.is_ok() { 0 } else { 1 });
}

/// Re-executes this test binary: as a worker, it runs [`worker`].
fn producer(env: Vec<(String, String)>) -> impl FnMut(&SpawnContext) -> std::io::Result<Command> {
    move |_ctx| {
        let mut cmd = Command::new(std::env::current_exe()?);
        cmd.envs(env.iter().map(|(k, v)| (k, v)));
        Ok(cmd)
    }
}

/// A port that was free a moment ago (the master must bind a known port: the hooks do not see
/// the address).
fn free_addr() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// Runs a master in this process with `env` for its workers; `checks` runs once every worker
/// is ready (with the address and the worker pids), then the master stops. Returns the pids;
/// re-raises a failed check once everything is stopped.
fn with_server(
    builder: impl FnOnce(Prefork) -> Server,
    env: Vec<(String, String)>,
    checks: impl FnOnce(SocketAddr, &[u32]) + 'static,
) -> Vec<u32> {
    let addr = free_addr();
    let pids = Rc::new(RefCell::new(Vec::new()));
    let failure = Rc::new(RefCell::new(None));
    let (p, f) = (pids.clone(), failure.clone());
    let mut checks = Some(checks);
    let err = builder(
        Prefork::new(addr)
            .workers(2)
            .shutdown_timeout(Duration::from_secs(10))
            .command_producer(producer(env))
            .on_master_ready(move |ready| {
                p.borrow_mut().extend_from_slice(ready);
                let checks = checks.take().unwrap();
                if let Err(panic) = catch_unwind(AssertUnwindSafe(|| checks(addr, ready))) {
                    *f.borrow_mut() = Some(panic);
                }
                Err("checks done".into())
            }),
    )
    .serve_with(factory)
    .unwrap_err();
    let pids = pids.borrow().clone();
    for &pid in &pids {
        assert!(
            wait_until(DEADLINE, || !alive(pid)),
            "worker {pid} left running"
        );
    }
    if let Some(panic) = failure.borrow_mut().take() {
        std::panic::resume_unwind(panic);
    }
    assert!(err.to_string().contains("checks done"), "{err}");
    pids
}

/// `GET /factory` answers, parsed: (pid the factory ran in, its runs there, worker id, pid).
fn factory_report(body: &str) -> (u32, usize, usize, u32) {
    let v: Vec<&str> = body.split_whitespace().collect();
    assert_eq!(v.len(), 4, "{body}");
    (
        v[0].parse().unwrap(),
        v[1].parse().unwrap(),
        v[2].parse().unwrap(),
        v[3].parse().unwrap(),
    )
}

/// A raw HTTP/1.1 `GET path` from a socket whose local address we know.
fn raw_get(addr: SocketAddr, path: &str) -> (SocketAddr, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(DEADLINE)).unwrap();
    let local = s.local_addr().unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\n\r\n"
    )
    .unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    let body = resp.split("\r\n\r\n").nth(1).unwrap_or("").to_owned();
    (local, body)
}

fn factory_runs_once_in_each_worker_never_in_the_master_and_connect_info_works() {
    let master = std::process::id();
    let pids = with_server(Server::from_prefork, Vec::new(), move |addr, ready| {
        let ready: BTreeSet<u32> = ready.iter().copied().collect();
        // New connections until both workers answered (bounded).
        let mut seen = BTreeSet::new();
        let mut workers = BTreeSet::new();
        for _ in 0..200 {
            let (_, body) = raw_get(addr, "/factory");
            let (built_in, runs, worker, answering) = factory_report(&body);
            assert_eq!(built_in, answering, "built in the worker that serves it");
            assert_ne!(built_in, master, "never built in the master");
            assert!(
                ready.contains(&built_in),
                "{built_in} is not a worker {ready:?}"
            );
            assert_eq!(runs, 1, "built once per worker");
            seen.insert(built_in);
            workers.insert(worker);
            if seen.len() == 2 {
                break;
            }
        }
        assert_eq!(seen, ready, "both workers built their own app");
        assert_eq!(workers, BTreeSet::from([0, 1]));

        // ConnectInfo<SocketAddr> is the client's address, over HTTP/1.1 and h2c.
        let (local, body) = raw_get(addr, "/peer");
        assert_eq!(body, local.to_string());
        let r = get_h2c(addr, "/peer").unwrap();
        assert_eq!(r.version, hyper::Version::HTTP_2);
        let peer: SocketAddr = r.body.parse().unwrap();
        assert_eq!(peer.ip().to_string(), "127.0.0.1");
        // `get_h2c` leaves its connection task on the helpers' runtime, which runs only inside
        // their calls: one more call lets it close that connection, else the workers' drain
        // would wait for it (for the client's PING ack) up to the shutdown timeout.
        assert_eq!(prefork_testutil::get(addr, "/peer").unwrap().status, 200);
    });
    assert_eq!(pids.len(), 2);
    assert_eq!(
        FACTORY_CALLS.load(Ordering::SeqCst),
        0,
        "the master never ran the factory"
    );
}

#[cfg(feature = "tls")]
fn embedded_pem_serves_https_with_http2() {
    let certs = prefork_testutil::TestCerts::generate();
    let env = vec![
        ("TEST_CERT_PEM".to_owned(), certs.cert_pem.clone()),
        ("TEST_KEY_PEM".to_owned(), certs.key_pem.clone()),
    ];
    let (cert, key) = (certs.cert_pem.clone(), certs.key_pem.clone());
    let ca = certs.ca_pem.clone();
    with_server(
        move |p| Server::from_prefork(p.tls(prefork_axum::TlsConfig::from_pem(cert, key))),
        env,
        move |addr, _| {
            let r = prefork_testutil::get_tls(addr, "/peer", &ca, &[b"h2", b"http/1.1"]).unwrap();
            assert_eq!((r.status, r.version), (200, hyper::Version::HTTP_2));
            let peer: SocketAddr = r.body.parse().unwrap();
            assert_eq!(peer.ip().to_string(), "127.0.0.1");
            let r = prefork_testutil::get_tls(addr, "/factory", &ca, &[b"http/1.1"]).unwrap();
            assert_eq!((r.status, r.version), (200, hyper::Version::HTTP_11));
        },
    );
}

fn a_failing_factory_is_the_masters_error_without_a_restart_loop() {
    let spawned = Rc::new(RefCell::new(Vec::new()));
    let s = spawned.clone();
    let err = Server::from_prefork(
        Prefork::new("127.0.0.1:0")
            .workers(2)
            .command_producer(producer(vec![(
                "TEST_FACTORY_FAIL".to_owned(),
                "1".to_owned(),
            )]))
            .on_worker_spawn(move |pid| {
                s.borrow_mut().push(pid);
                Ok(())
            }),
    )
    .serve_with(factory)
    .unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("failed to start"), "{msg}");
    assert!(msg.contains("cannot reach db.invalid:5432"), "{msg}");
    assert_eq!(spawned.borrow().len(), 2, "no restart loop");
    for &pid in spawned.borrow().iter() {
        assert!(
            wait_until(DEADLINE, || !alive(pid)),
            "worker {pid} left running"
        );
    }
}

fn inside_a_tokio_runtime_fails_fast_with_a_clear_message() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let err = runtime
        .block_on(async { prefork_axum::serve(Router::new(), "127.0.0.1:0") })
        .unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("not inside a tokio runtime"), "{msg}");
    assert!(msg.contains("#[tokio::main]"), "{msg}");
    assert_eq!(FACTORY_CALLS.load(Ordering::SeqCst), 0);
}
