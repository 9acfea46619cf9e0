//! A bounded HTTP/1.1 load generator for the tests: keep-alive clients and clients that open a
//! new connection per request, on hyper's client, counting every success and every failure by
//! kind.
//!
//! ```no_run
//! # let addr: std::net::SocketAddr = "127.0.0.1:8080".parse().unwrap();
//! use prefork_testutil::load::{Load, LoadConfig};
//!
//! let load = Load::start(addr, LoadConfig { keepalive: 16, new_conn: 4, path: "/".into(), ..Default::default() });
//! assert!(load.wait_ok(100), "{:?}", load.snapshot());
//! // ... restart a worker, reload, ...
//! let report = load.stop();
//! assert_eq!(report.failed(), 0, "{report:?}");
//! ```
//!
//! The clients behave as real ones do: a response with `Connection: close` is not a failure
//! (the keep-alive client reconnects for its next request), and a keep-alive connection that the
//! server closed while it was idle, *before* any byte of the next request was written, is retried
//! once on a new connection. A request that was written and then lost (reset, connection closed
//! before the response) is a failure.
//!
//! Everything is bounded: each client stops on [`Load::stop`], after
//! [`LoadConfig::max_duration`], or after [`LoadConfig::max_requests`] requests in all; each
//! request (connect included) is bounded by [`LoadConfig::request_timeout`]. Loopback only.

use std::collections::BTreeMap;
use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::http1::SendRequest;
use hyper::Request;
use hyper_util::rt::TokioIo;

/// What a [`Load`] sends, how many clients, and its bounds.
#[derive(Debug, Clone)]
pub struct LoadConfig {
    /// Clients that each keep one connection open and send their requests on it (reconnecting
    /// after a `Connection: close` response).
    pub keepalive: usize,
    /// Clients that open a new connection for each request (and send `Connection: close`).
    pub new_conn: usize,
    /// The path to `GET`. With `/pid`, the body must be a process id, and the [`Report`] counts
    /// the requests each pid answered.
    pub path: String,
    /// The body every `2xx` answer must have (`None`: any, except for `/pid`, which must be a
    /// number).
    pub expect_body: Option<String>,
    /// A pause between two requests of one client (0: none). A keep-alive connection is idle
    /// this long between its requests.
    pub pause: Duration,
    /// Each request, its connection set-up included, fails as a timeout past this.
    pub request_timeout: Duration,
    /// The load stops by itself after this long.
    pub max_duration: Duration,
    /// The load stops by itself after this many requests (all clients together).
    pub max_requests: u64,
}

impl Default for LoadConfig {
    fn default() -> Self {
        LoadConfig {
            keepalive: 4,
            new_conn: 1,
            path: "/".into(),
            expect_body: None,
            pause: Duration::ZERO,
            request_timeout: Duration::from_secs(10),
            max_duration: Duration::from_secs(120),
            max_requests: 10_000_000,
        }
    }
}

/// What a [`Load`] saw: successes, failures by kind, and how the connections behaved.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Report {
    /// Requests answered `2xx` with the expected body.
    pub ok: u64,
    /// Connections refused (`ECONNREFUSED`).
    pub refused: u64,
    /// Requests lost after they were sent: the connection was reset or closed before the
    /// response was complete.
    pub reset: u64,
    /// Requests (or their connection set-up) that took longer than the request timeout.
    pub timeout: u64,
    /// Answers outside `2xx`.
    pub non_2xx: u64,
    /// `2xx` answers with an unexpected body.
    pub wrong_body: u64,
    /// Any other failure.
    pub other: u64,
    /// Responses that carried `Connection: close` (keep-alive clients).
    pub closed_by_server: u64,
    /// Connections opened by keep-alive clients after their first (after a close).
    pub reconnects: u64,
    /// Requests retried on a new connection because the server had closed the idle keep-alive
    /// connection before the request was written (not failures).
    pub idle_retries: u64,
    /// With path `/pid`: the requests each worker pid answered.
    pub pids: BTreeMap<u32, u64>,
    /// The first few failures, described.
    pub samples: Vec<String>,
}

impl Report {
    /// Every failed request, all kinds together.
    pub fn failed(&self) -> u64 {
        self.refused + self.reset + self.timeout + self.non_2xx + self.wrong_body + self.other
    }
}

impl fmt::Debug for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Report")
            .field("ok", &self.ok)
            .field("failed", &self.failed())
            .field("refused", &self.refused)
            .field("reset", &self.reset)
            .field("timeout", &self.timeout)
            .field("non_2xx", &self.non_2xx)
            .field("wrong_body", &self.wrong_body)
            .field("other", &self.other)
            .field("closed_by_server", &self.closed_by_server)
            .field("reconnects", &self.reconnects)
            .field("idle_retries", &self.idle_retries)
            .field("pids", &self.pids)
            .field("samples", &self.samples)
            .finish()
    }
}

/// How one request failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Refused,
    Reset,
    Timeout,
    Non2xx,
    WrongBody,
    Other,
}

#[derive(Default)]
struct Counts {
    requests: AtomicU64,
    ok: AtomicU64,
    refused: AtomicU64,
    reset: AtomicU64,
    timeout: AtomicU64,
    non_2xx: AtomicU64,
    wrong_body: AtomicU64,
    other: AtomicU64,
    closed_by_server: AtomicU64,
    reconnects: AtomicU64,
    idle_retries: AtomicU64,
    pids: Mutex<BTreeMap<u32, u64>>,
    samples: Mutex<Vec<String>>,
}

impl Counts {
    fn fail(&self, kind: Kind, what: String) {
        let c = match kind {
            Kind::Refused => &self.refused,
            Kind::Reset => &self.reset,
            Kind::Timeout => &self.timeout,
            Kind::Non2xx => &self.non_2xx,
            Kind::WrongBody => &self.wrong_body,
            Kind::Other => &self.other,
        };
        c.fetch_add(1, Ordering::Relaxed);
        let mut s = self.samples.lock().unwrap();
        if s.len() < 10 {
            s.push(format!("{kind:?}: {what}"));
        }
    }

    fn report(&self) -> Report {
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        Report {
            ok: g(&self.ok),
            refused: g(&self.refused),
            reset: g(&self.reset),
            timeout: g(&self.timeout),
            non_2xx: g(&self.non_2xx),
            wrong_body: g(&self.wrong_body),
            other: g(&self.other),
            closed_by_server: g(&self.closed_by_server),
            reconnects: g(&self.reconnects),
            idle_retries: g(&self.idle_retries),
            pids: self.pids.lock().unwrap().clone(),
            samples: self.samples.lock().unwrap().clone(),
        }
    }
}

struct State {
    addr: SocketAddr,
    cfg: LoadConfig,
    counts: Counts,
    stop: AtomicBool,
    stop_notify: tokio::sync::Notify,
    end: Instant,
}

impl State {
    /// Whether the clients should stop, and takes one request from the budget if not.
    fn next_request(&self) -> bool {
        if self.stop.load(Ordering::Relaxed) || Instant::now() >= self.end {
            return false;
        }
        self.counts.requests.fetch_add(1, Ordering::Relaxed) < self.cfg.max_requests
    }

    async fn pause(&self) {
        if self.cfg.pause.is_zero() {
            return;
        }
        tokio::select! {
            () = tokio::time::sleep(self.cfg.pause) => {}
            () = self.stop_notify.notified() => {}
        }
    }

    /// Checks a response; returns whether it asked to close the connection.
    async fn check(&self, resp: hyper::Response<hyper::body::Incoming>) -> Result<bool, Failure> {
        let status = resp.status();
        let close = resp
            .headers()
            .get(hyper::header::CONNECTION)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.eq_ignore_ascii_case("close"));
        let body = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| classify(&e, "reading the body"))?
            .to_bytes();
        if !status.is_success() {
            return Err(Failure(Kind::Non2xx, format!("status {status}")));
        }
        let text = String::from_utf8_lossy(&body);
        if let Some(expected) = &self.cfg.expect_body {
            if text != expected.as_str() {
                return Err(Failure(Kind::WrongBody, format!("body {text:?}")));
            }
        }
        if self.cfg.path == "/pid" {
            match text.trim().parse::<u32>() {
                Ok(pid) => *self.counts.pids.lock().unwrap().entry(pid).or_default() += 1,
                Err(_) => return Err(Failure(Kind::WrongBody, format!("/pid body {text:?}"))),
            }
        }
        Ok(close)
    }

    fn request(&self, close: bool) -> Request<Empty<Bytes>> {
        let mut b = Request::get(self.cfg.path.as_str()).header("host", self.addr.to_string());
        if close {
            b = b.header("connection", "close");
        }
        b.body(Empty::new()).expect("request")
    }
}

/// A failed request: its kind and a description.
#[derive(Debug)]
struct Failure(Kind, String);

/// Classifies a hyper error by the I/O error under it.
fn classify(e: &(dyn std::error::Error + 'static), what: &str) -> Failure {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(s) = source {
        if let Some(io) = s.downcast_ref::<io::Error>() {
            return Failure(io_kind(io), format!("{what}: {e}"));
        }
        source = s.source();
    }
    let kind = match e.downcast_ref::<hyper::Error>() {
        Some(h) if h.is_incomplete_message() || h.is_canceled() || h.is_closed() => Kind::Reset,
        Some(h) if h.is_timeout() => Kind::Timeout,
        _ => Kind::Other,
    };
    Failure(kind, format!("{what}: {e}"))
}

fn io_kind(e: &io::Error) -> Kind {
    match e.kind() {
        io::ErrorKind::ConnectionRefused => Kind::Refused,
        io::ErrorKind::ConnectionReset
        | io::ErrorKind::ConnectionAborted
        | io::ErrorKind::BrokenPipe
        | io::ErrorKind::UnexpectedEof => Kind::Reset,
        io::ErrorKind::TimedOut => Kind::Timeout,
        _ => Kind::Other,
    }
}

async fn connect(addr: SocketAddr) -> Result<SendRequest<Empty<Bytes>>, Failure> {
    let stream = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| Failure(io_kind(&e), format!("connecting to {addr}: {e}")))?;
    let _ = stream.set_nodelay(true);
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| classify(&e, "HTTP/1 handshake"))?;
    tokio::spawn(conn);
    Ok(sender)
}

/// One request on a keep-alive connection (opened first if `conn` is empty); retries once on a
/// new connection if the server had closed the old one before the request was written.
async fn keepalive_request(
    st: &State,
    conn: &mut Option<SendRequest<Empty<Bytes>>>,
    opened: &mut bool,
) -> Result<(), Failure> {
    let mut retried = false;
    loop {
        let fresh = conn.is_none();
        let sender = match conn {
            Some(s) => s,
            None => {
                let c = connect(st.addr).await?;
                if std::mem::replace(opened, true) {
                    st.counts.reconnects.fetch_add(1, Ordering::Relaxed);
                }
                conn.insert(c)
            }
        };
        // An idle connection the server closed: the dispatcher may still be catching up with
        // the end of file; wait for it to say whether the connection can take a request.
        let result = match sender.ready().await {
            Ok(()) => sender
                .try_send_request(st.request(false))
                .await
                .map_err(|mut e| {
                    let unsent = e.take_message().is_some();
                    (e.into_error(), unsent)
                }),
            Err(e) => Err((e, true)),
        };
        match result {
            Ok(resp) => {
                let close = st.check(resp).await;
                if close.as_ref().is_ok_and(|c| *c) {
                    st.counts.closed_by_server.fetch_add(1, Ordering::Relaxed);
                    *conn = None;
                }
                if close.is_err() {
                    *conn = None;
                }
                return close.map(|_| ());
            }
            Err((e, unsent)) => {
                *conn = None;
                if unsent && !fresh && !retried {
                    // Nothing was written: the connection was closed while idle. A real client
                    // retries such a request on a new connection.
                    retried = true;
                    st.counts.idle_retries.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                let what = if unsent {
                    "the connection closed before the request was written (after a retry)"
                } else {
                    "request"
                };
                return Err(classify(&e, what));
            }
        }
    }
}

async fn keepalive_client(st: Arc<State>) {
    let mut conn: Option<SendRequest<Empty<Bytes>>> = None;
    let mut opened = false;
    while st.next_request() {
        let r = tokio::time::timeout(
            st.cfg.request_timeout,
            keepalive_request(&st, &mut conn, &mut opened),
        )
        .await
        .unwrap_or_else(|_| {
            Err(Failure(
                Kind::Timeout,
                format!("no answer within {:?}", st.cfg.request_timeout),
            ))
        });
        match r {
            Ok(()) => {
                st.counts.ok.fetch_add(1, Ordering::Relaxed);
            }
            Err(Failure(kind, what)) => {
                conn = None;
                st.counts.fail(kind, what);
            }
        }
        st.pause().await;
    }
}

async fn new_conn_request(st: &State) -> Result<(), Failure> {
    let mut sender = connect(st.addr).await?;
    let resp = sender
        .send_request(st.request(true))
        .await
        .map_err(|e| classify(&e, "request"))?;
    st.check(resp).await.map(|_| ())
}

async fn new_conn_client(st: Arc<State>) {
    while st.next_request() {
        let r = tokio::time::timeout(st.cfg.request_timeout, new_conn_request(&st))
            .await
            .unwrap_or_else(|_| {
                Err(Failure(
                    Kind::Timeout,
                    format!("no answer within {:?}", st.cfg.request_timeout),
                ))
            });
        match r {
            Ok(()) => {
                st.counts.ok.fetch_add(1, Ordering::Relaxed);
            }
            Err(Failure(kind, what)) => st.counts.fail(kind, what),
        }
        st.pause().await;
    }
}

/// A running load: clients on a tokio runtime of their own, in background threads, until
/// [`Load::stop`] (or their bounds).
pub struct Load {
    state: Arc<State>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl fmt::Debug for Load {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Load")
            .field("addr", &self.state.addr)
            .field("cfg", &self.state.cfg)
            .field("report", &self.snapshot())
            .finish()
    }
}

impl Load {
    /// Starts `cfg.keepalive` keep-alive clients and `cfg.new_conn` new-connection clients
    /// against `addr` (a loopback address), on a 2-thread tokio runtime in the background.
    ///
    /// # Panics
    /// If `addr` is not a loopback address, or the runtime cannot be built.
    pub fn start(addr: SocketAddr, cfg: LoadConfig) -> Load {
        assert!(addr.ip().is_loopback(), "load only on loopback, not {addr}");
        let state = Arc::new(State {
            addr,
            end: Instant::now() + cfg.max_duration,
            cfg,
            counts: Counts::default(),
            stop: AtomicBool::new(false),
            stop_notify: tokio::sync::Notify::new(),
        });
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("testutil-load")
            .enable_all()
            .build()
            .expect("the load's tokio runtime");
        let st = state.clone();
        let thread = std::thread::Builder::new()
            .name("testutil-load".into())
            .spawn(move || {
                runtime.block_on(async move {
                    let mut set = tokio::task::JoinSet::new();
                    for _ in 0..st.cfg.keepalive {
                        set.spawn(keepalive_client(st.clone()));
                    }
                    for _ in 0..st.cfg.new_conn {
                        set.spawn(new_conn_client(st.clone()));
                    }
                    while set.join_next().await.is_some() {}
                });
                runtime.shutdown_timeout(Duration::from_secs(1));
            })
            .expect("the load's thread");
        Load {
            state,
            thread: Some(thread),
        }
    }

    /// The counts so far (the load keeps running).
    pub fn snapshot(&self) -> Report {
        self.state.counts.report()
    }

    /// Waits until at least `n` more requests than now have succeeded, bounded by
    /// [`DEADLINE`](crate::DEADLINE); returns whether they did.
    pub fn wait_ok(&self, n: u64) -> bool {
        let target = self.state.counts.ok.load(Ordering::Relaxed) + n;
        crate::wait_until(crate::DEADLINE, || {
            self.state.counts.ok.load(Ordering::Relaxed) >= target
        })
    }

    /// Stops every client after its current request and returns the final counts.
    pub fn stop(mut self) -> Report {
        self.halt();
        self.snapshot()
    }

    /// Waits (bounded by [`DEADLINE`](crate::DEADLINE)) until the clients have used up
    /// [`LoadConfig::max_requests`] or [`LoadConfig::max_duration`], then returns the counts.
    pub fn stop_after_budget(mut self) -> Report {
        if let Some(t) = &self.thread {
            crate::wait_until(crate::DEADLINE, || t.is_finished());
        }
        self.halt();
        self.snapshot()
    }

    fn halt(&mut self) {
        self.state.stop.store(true, Ordering::Relaxed);
        self.state.stop_notify.notify_waiters();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        self.halt();
    }
}

/// Opens `n` HTTP/1.1 connections to `addr` at once, then (once every one is connected) asks
/// `GET /pid` on each, and returns how many connections each worker pid holds. Connections that
/// fail are counted under pid 0. Bounded by [`DEADLINE`](crate::DEADLINE).
///
/// This is the balance measurement: which worker accepted each connection of a burst.
pub fn connections_per_pid(addr: SocketAddr, n: usize) -> BTreeMap<u32, usize> {
    assert!(addr.ip().is_loopback(), "load only on loopback, not {addr}");
    let out = crate::block_on(async move {
        let connects = (0..n).map(|_| connect(addr));
        let conns = futures_join_all(connects).await;
        let asks = conns
            .into_iter()
            .map(|c| async move { ask_pid(&mut c.ok()?, addr).await });
        let pids = futures_join_all(asks).await;
        let mut map = BTreeMap::new();
        for p in pids {
            *map.entry(p.unwrap_or(0)).or_default() += 1;
        }
        map
    });
    out.unwrap_or_default()
}

/// Opens `n` keep-alive connections to `addr` in waves of `wave`: each wave's connections are
/// opened at once and each asks `GET /pid`, and the next wave starts `gap` after every answer
/// of this one arrived; all stay open until the end. Returns how many connections each worker
/// process holds (pid 0: failed). Unlike [`connections_per_pid`], a worker sees its earlier
/// waves' connections counted before the next wave arrives.
pub fn connections_per_pid_in_waves(
    addr: SocketAddr,
    n: usize,
    wave: usize,
    gap: Duration,
) -> BTreeMap<u32, usize> {
    assert!(addr.ip().is_loopback(), "load only on loopback, not {addr}");
    let out = crate::block_on(async move {
        let mut held = Vec::new();
        let mut map = BTreeMap::new();
        let mut left = n;
        while left > 0 {
            let k = left.min(wave.max(1));
            left -= k;
            let conns = futures_join_all((0..k).map(|_| async move {
                let mut sender = connect(addr).await.ok()?;
                let pid = ask_pid(&mut sender, addr).await?;
                Some((pid, sender))
            }))
            .await;
            for c in conns {
                match c {
                    Some((pid, sender)) => {
                        *map.entry(pid).or_default() += 1;
                        held.push(sender);
                    }
                    None => *map.entry(0).or_default() += 1,
                }
            }
            if left > 0 && !gap.is_zero() {
                tokio::time::sleep(gap).await;
            }
        }
        drop(held);
        map
    });
    out.unwrap_or_default()
}

/// `GET /pid` on `sender`: the pid of the worker that answered, `None` on any failure.
async fn ask_pid(sender: &mut SendRequest<Empty<Bytes>>, addr: SocketAddr) -> Option<u32> {
    let req = Request::get("/pid")
        .header("host", addr.to_string())
        .body(Empty::<Bytes>::new())
        .ok()?;
    let resp = sender.send_request(req).await.ok()?;
    let body = resp.into_body().collect().await.ok()?.to_bytes();
    String::from_utf8_lossy(&body).trim().parse::<u32>().ok()
}

/// Runs every future concurrently on the current task's runtime and returns their outputs in
/// order.
async fn futures_join_all<F>(futs: impl IntoIterator<Item = F>) -> Vec<F::Output>
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    let handles: Vec<_> = futs.into_iter().map(tokio::spawn).collect();
    let mut out = Vec::with_capacity(handles.len());
    for h in handles {
        out.push(h.await.expect("a load task panicked"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{BufRead, BufReader, Write};

    /// A tiny keep-alive server: answers `ok`, and every third response on a connection carries
    /// `Connection: close` and ends it. Connection-per-request clients are answered once.
    fn closing_server() -> SocketAddr {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        std::thread::spawn(move || {
            for s in l.incoming() {
                let Ok(s) = s else { break };
                std::thread::spawn(move || {
                    let mut r = BufReader::new(s.try_clone().unwrap());
                    let mut w = s;
                    for n in 1.. {
                        let mut client_close = false;
                        loop {
                            let mut line = String::new();
                            if r.read_line(&mut line).unwrap_or(0) == 0 {
                                return;
                            }
                            client_close |= line.eq_ignore_ascii_case("connection: close\r\n");
                            if line == "\r\n" {
                                break;
                            }
                        }
                        let close = client_close || n % 3 == 0;
                        let hdr = if close { "connection: close\r\n" } else { "" };
                        let _ = write!(w, "HTTP/1.1 200 OK\r\ncontent-length: 2\r\n{hdr}\r\nok");
                        if close {
                            return;
                        }
                    }
                });
            }
        });
        addr
    }

    #[test]
    fn connection_close_is_not_a_failure_and_the_client_reconnects() {
        let addr = closing_server();
        let load = Load::start(
            addr,
            LoadConfig {
                keepalive: 4,
                new_conn: 2,
                expect_body: Some("ok".into()),
                max_requests: 600,
                ..Default::default()
            },
        );
        assert!(load.wait_ok(300), "{load:?}");
        let r = load.stop();
        assert_eq!(r.failed(), 0, "{r:?}");
        assert!(r.closed_by_server > 0 && r.reconnects > 0, "{r:?}");
    }

    #[test]
    fn a_refused_connection_is_counted_as_refused() {
        let addr = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let r = Load::start(
            addr,
            LoadConfig {
                keepalive: 1,
                new_conn: 1,
                max_requests: 10,
                ..Default::default()
            },
        )
        .stop_after_budget();
        assert_eq!((r.refused, r.ok), (10, 0), "{r:?}");
    }
}
