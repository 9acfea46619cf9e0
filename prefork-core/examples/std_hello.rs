//! A blocking, std-only HTTP/1.1 responder under prefork: no async runtime anywhere.
//!
//! Run with: `cargo run -p prefork-core --example std_hello -- --addr 127.0.0.1:8080 --workers 2`
//!
//! `GET /` answers `Hello, World!`, `GET /pid` the worker's pid, `GET /block?ms=N` blocks the
//! worker's event loop for N ms, `GET /leak?mb=N` leaks N MiB.
//!
//! The thread model: one event-loop thread per worker polls the listeners, the shutdown
//! notification and a wake-up socket, accepts, and sends the heartbeats (poll timeout: one
//! heartbeat interval); each connection is served on a thread of its own. `/block` is handed to
//! the event-loop thread and runs there, so a blocked handler stops the heartbeats (and the
//! accepting) exactly as a blocked event loop does in the async adapters, and the master's
//! watchdog replaces the worker.
//!
//! SIGTERM (or Ctrl+C) drains without loss: the worker stops accepting and drops its listener
//! copies at once (the other workers keep the shared queue); every request already received is
//! answered, its response carries `Connection: close`; a keep-alive connection idle for the
//! drain grace is closed; the whole drain is bounded by the drain timeout.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use clap::Parser;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use prefork_core::accept::{is_connection_error, log_accept_error};
use prefork_core::balance::{Admit, AdmitWait, Balance, Parked};
use prefork_core::{Drain, DrainConn, Worker};
use prefork_testutil::example;

/// The contract programs' shared flags, plus two of this example's own.
#[derive(Parser, Debug)]
struct Args {
    #[command(flatten)]
    common: example::Args,
    /// Unexpected worker exits tolerated (default: max(1, workers / 2)).
    #[arg(long)]
    recover_threshold: Option<usize>,
    /// A file each worker reads at start-up (stands for the config or data an app needs).
    #[arg(long)]
    require_file: Option<std::path::PathBuf>,
    /// Each worker leaves an orphan at start-up: a `sleep` whose parent shell exits at once, so
    /// it is re-parented (to the master when the master is PID 1). For the PID 1 test.
    #[arg(long, hide = true)]
    orphan: bool,
}

fn main() {
    example::init_tracing();
    let args = Args::parse();
    let common = &args.common;
    if common.no_prefork || common.cert.is_some() {
        eprintln!("std_hello: --no-prefork and --cert are not supported by this example");
        std::process::exit(2);
    }
    // `Prefork::new(addr).workers(n).reuseport(..).shutdown_timeout(..)` from the flags.
    let mut prefork = common.prefork();
    if let Some(n) = args.recover_threshold {
        prefork = prefork.recover_threshold(n);
    }
    let sleep = common.sleep();
    let result = prefork.run(|child| {
        // Per-worker state is built here, in the worker, never in the master.
        if let Some(path) = &args.require_file {
            std::fs::read(path).map_err(|e| {
                io::Error::new(e.kind(), format!("cannot read {}: {e}", path.display()))
            })?;
        }
        if args.orphan {
            std::process::Command::new("sh")
                .args(["-c", "sleep 600 </dev/null >/dev/null 2>&1 &"])
                .status()?;
        }
        serve(child, sleep)
    });
    if let Err(e) = result {
        eprintln!("std_hello: {e}");
        std::process::exit(1);
    }
}

/// A listener of either kind: every TCP and Unix listener the master passed is served.
enum Listener {
    Tcp(TcpListener),
    Unix(UnixListener),
}

impl Listener {
    fn as_fd(&self) -> BorrowedFd<'_> {
        match self {
            Listener::Tcp(l) => l.as_fd(),
            Listener::Unix(l) => l.as_fd(),
        }
    }

    fn describe(&self) -> String {
        match self {
            Listener::Tcp(l) => l.local_addr().map(|a| a.to_string()).unwrap_or_default(),
            Listener::Unix(l) => l
                .local_addr()
                .ok()
                .and_then(|a| a.as_pathname().map(|p| format!("unix:{}", p.display())))
                .unwrap_or_else(|| "unix socket".into()),
        }
    }
}

/// How long a client may take to send a request's head (slow or silent clients are closed).
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// How long an idle keep-alive connection stays open.
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(75);
/// The longest request head accepted (request line and headers).
const MAX_HEAD: usize = 64 * 1024;

/// An accepted connection of either kind.
enum Stream {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl Stream {
    fn try_clone(&self) -> io::Result<Stream> {
        Ok(match self {
            Stream::Tcp(s) => Stream::Tcp(s.try_clone()?),
            Stream::Unix(s) => Stream::Unix(s.try_clone()?),
        })
    }

    fn prepare(&self) -> io::Result<()> {
        // Wake up now and then while idle, to notice a shutdown.
        let idle = Some(Duration::from_millis(50));
        match self {
            Stream::Tcp(s) => {
                s.set_nonblocking(false)?;
                s.set_nodelay(true)?;
                s.set_read_timeout(idle)
            }
            Stream::Unix(s) => {
                s.set_nonblocking(false)?;
                s.set_read_timeout(idle)
            }
        }
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.read(buf),
            Stream::Unix(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.write(buf),
            Stream::Unix(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.flush(),
            Stream::Unix(s) => s.flush(),
        }
    }
}

/// Work the connection threads hand to the accept loop's thread: `/block` runs there, so a
/// blocked handler blocks the loop that accepts and sends the heartbeats, as a blocked event loop
/// would in an async adapter.
type Job = Box<dyn FnOnce() + Send>;

/// The connection threads' way into the accept loop's thread.
struct LoopHandle {
    jobs: Mutex<mpsc::Sender<Job>>,
    wake: UnixStream,
}

impl LoopHandle {
    /// Runs `f` on the accept loop's thread and returns its result; runs it here if the loop is
    /// gone (the worker is past its drain).
    fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        let (tx, rx) = mpsc::sync_channel(1);
        let f = Arc::new(Mutex::new(Some(f)));
        let job_f = f.clone();
        let job: Job = Box::new(move || {
            if let Some(f) = job_f.lock().unwrap_or_else(|e| e.into_inner()).take() {
                let _ = tx.send(f());
            }
        });
        let sent = self
            .jobs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .send(job)
            .is_ok();
        if sent {
            let _ = (&self.wake).write(&[1]);
            if let Ok(v) = rx.recv() {
                return v;
            }
        }
        let f = f.lock().unwrap_or_else(|e| e.into_inner()).take();
        f.expect("the job ran but sent nothing")()
    }
}

fn serve(mut child: Worker, sleep: Duration) -> io::Result<()> {
    let shutdown = child.shutdown();
    let drain = Drain::for_worker(&child);
    let heartbeat = child.heartbeat();
    let listeners: Vec<Listener> = child
        .take_listeners()
        .into_iter()
        .map(Listener::Tcp)
        .chain(child.take_unix_listeners().into_iter().map(Listener::Unix))
        .collect();
    let (wake_rx, wake_tx) = UnixStream::pair()?;
    wake_rx.set_nonblocking(true)?;
    wake_tx.set_nonblocking(true)?;
    let (jobs_tx, jobs) = mpsc::channel::<Job>();
    let looper = Arc::new(LoopHandle {
        jobs: Mutex::new(jobs_tx),
        wake: wake_tx,
    });
    let run_jobs = || {
        let mut buf = [0u8; 64];
        while matches!((&wake_rx).read(&mut buf), Ok(n) if n > 0) {}
        while let Ok(job) = jobs.try_recv() {
            job();
        }
    };
    let interval = heartbeat.interval();
    let mut last_beat = Instant::now();
    let beat = |last_beat: &mut Instant| {
        if last_beat.elapsed() >= interval {
            heartbeat.beat();
            *last_beat = Instant::now();
        }
    };
    // The balance table: a worker over its share of the open connections leaves a new
    // connection to an idle worker holding fewer (see prefork_core::balance).
    let balance = child.balance();
    let mut admit = AdmitWait::default();
    child.ready()?;
    // The event loop: accepts, runs `/block`, and beats. A poll timeout of one heartbeat
    // interval keeps the beats going while idle; a blocked loop stops them.
    loop {
        let ls = &listeners;
        let mut fds: Vec<PollFd<'_>> = ls
            .iter()
            .map(|l| PollFd::new(l.as_fd(), PollFlags::POLLIN))
            .collect();
        fds.push(PollFd::new(shutdown.as_fd(), PollFlags::POLLIN));
        fds.push(PollFd::new(wake_rx.as_fd(), PollFlags::POLLIN));
        let timeout = interval.saturating_sub(last_beat.elapsed());
        // Waiting for a connection with nothing else to do: parked, until the accept was tried.
        let mut parked = Some(balance.park());
        match poll(&mut fds, poll_timeout(timeout)) {
            Ok(_) => {}
            Err(nix::errno::Errno::EINTR) => {}
            Err(e) => return Err(e.into()),
        }
        let readable: Vec<bool> = fds[..ls.len()]
            .iter()
            .map(|f| f.revents().is_some_and(|r| !r.is_empty()))
            .collect();
        drop(fds);
        beat(&mut last_beat);
        run_jobs();
        if shutdown.is_triggered() {
            break;
        }
        for (l, _) in ls.iter().zip(readable).filter(|(_, r)| *r) {
            accept_all(l, &drain, &balance, &mut admit, &looper, sleep, &mut parked);
        }
    }
    // Stop accepting at once and drop this worker's listener copies: in the shared-socket mode
    // the queue stays with the other workers.
    drain.start();
    drop(listeners);
    // Drain: every connection answers what it has received with `Connection: close`, or is
    // closed after an idle grace; bounded by the drain timeout.
    let deadline = Instant::now() + child.drain_timeout();
    while drain.open() > 0 && Instant::now() < deadline {
        let mut fds = [PollFd::new(wake_rx.as_fd(), PollFlags::POLLIN)];
        let _ = poll(&mut fds, poll_timeout(Duration::from_millis(5)));
        run_jobs();
        beat(&mut last_beat);
    }
    if drain.open() > 0 {
        tracing::warn!(
            open = drain.open(),
            "connections still open after the drain timeout; closing them"
        );
    }
    Ok(())
}

fn poll_timeout(d: Duration) -> PollTimeout {
    PollTimeout::try_from(d.as_millis().clamp(1, 60_000) as i32).unwrap_or(PollTimeout::MAX)
}

/// How long the accept loop pauses after an accept error that is not the connection's fault
/// (EMFILE, ENFILE, ...).
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// Accepts until the queue is empty. Before each accept it asks the balance table, and while
/// it says to leave the connection to an idle worker holding fewer, it yields the CPU to that
/// worker (`sched_yield`) and asks again. `parked` (this loop's parked mark) is dropped once
/// an accept was tried.
fn accept_all(
    listener: &Listener,
    drain: &Drain,
    balance: &Balance,
    admit: &mut AdmitWait,
    looper: &Arc<LoopHandle>,
    sleep: Duration,
    parked: &mut Option<Parked>,
) {
    // The first accept after the wait: the connection that woke this loop woke the others too.
    let mut woken = true;
    loop {
        let answer = if woken {
            balance.poll_admit_woken(admit)
        } else {
            balance.poll_admit(admit)
        };
        if answer == Admit::Yield {
            std::thread::yield_now();
            continue;
        }
        let accepted = match listener {
            Listener::Tcp(l) => l.accept().map(|(s, _)| Stream::Tcp(s)),
            Listener::Unix(l) => l.accept().map(|(s, _)| Stream::Unix(s)),
        };
        // Tried: a worker yielding to this one resumes now.
        parked.take();
        woken = false;
        match accepted {
            Ok(stream) => {
                let conn = drain.connection();
                let looper = looper.clone();
                std::thread::spawn(move || {
                    let _ = connection(stream, &conn, &looper, sleep);
                });
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
            Err(e) if is_connection_error(&e) => continue,
            // EMFILE, ENFILE, ...: not fatal for the worker; the log names the limit to raise.
            Err(e) => {
                log_accept_error(&listener.describe(), &e, ACCEPT_BACKOFF);
                std::thread::sleep(ACCEPT_BACKOFF);
                return;
            }
        }
    }
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

/// One keep-alive connection: requests are answered one after another until the client closes;
/// once the worker drains, the next response carries `Connection: close`, and a connection idle
/// for the drain grace is closed.
fn connection(
    stream: Stream,
    conn: &DrainConn,
    looper: &LoopHandle,
    sleep: Duration,
) -> io::Result<()> {
    stream.prepare()?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut writer = stream;
    let mut raw = Vec::new();
    let drain = conn.drain();
    loop {
        raw.clear();
        let mut idle_since: Option<Instant> = None;
        let waiting = Instant::now();
        loop {
            let before = raw.len();
            match reader.read_until(b'\n', &mut raw) {
                Ok(0) => return Ok(()),
                Ok(_) => {
                    conn.on_read();
                    break;
                }
                Err(e) if is_timeout(&e) => {
                    if raw.len() > before {
                        conn.on_read();
                        idle_since = None;
                    }
                    // A request started but not finished in time (a slow or silent client), an
                    // idle keep-alive connection past its timeout, or garbage without a newline:
                    // closed.
                    if !raw.is_empty() && waiting.elapsed() >= HEADER_READ_TIMEOUT {
                        return Ok(());
                    }
                    if raw.len() > MAX_HEAD {
                        return Ok(());
                    }
                    if raw.is_empty() && waiting.elapsed() >= KEEPALIVE_TIMEOUT {
                        return Ok(());
                    }
                    if drain.is_draining() && raw.is_empty() {
                        let since = *idle_since.get_or_insert_with(Instant::now);
                        if since.elapsed() >= drain.grace() {
                            return Ok(());
                        }
                    }
                }
                Err(e) => return Err(e),
            }
        }
        conn.request_started(false);
        let line = String::from_utf8_lossy(&raw).into_owned();
        // Not an HTTP/1.x request line: 400, then closed (the worker is unaffected).
        let parts: Vec<&str> = line.split_whitespace().collect();
        if line.len() > MAX_HEAD
            || parts.len() != 3
            || !(parts[2] == "HTTP/1.1" || parts[2] == "HTTP/1.0")
        {
            let _ = conn.response_ready();
            let _ = writer.write_all(
                b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
            );
            return Ok(());
        }
        let result = respond(&mut reader, &mut writer, &line, sleep, conn, looper);
        if !result? {
            return Ok(());
        }
    }
}

/// Reads the rest of the request head and answers it. Returns whether to keep the connection.
fn respond(
    reader: &mut BufReader<Stream>,
    writer: &mut Stream,
    request_line: &str,
    sleep: Duration,
    conn: &DrainConn,
    looper: &LoopHandle,
) -> io::Result<bool> {
    let mut close = false;
    let mut header = String::new();
    let started = Instant::now();
    let mut head_bytes = request_line.len();
    loop {
        header.clear();
        match reader.read_line(&mut header) {
            Ok(0) => {
                let _ = conn.response_ready();
                return Ok(false);
            }
            Ok(n) => {
                conn.on_read();
                head_bytes += n;
                if head_bytes > MAX_HEAD {
                    let _ = conn.response_ready();
                    writer.write_all(
                        b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
                    )?;
                    return Ok(false);
                }
            }
            Err(e) if is_timeout(&e) => {
                if started.elapsed() >= HEADER_READ_TIMEOUT || header.len() > MAX_HEAD {
                    let _ = conn.response_ready();
                    return Ok(false);
                }
                continue;
            }
            Err(e) => {
                let _ = conn.response_ready();
                return Err(e);
            }
        }
        if header == "\r\n" || header == "\n" {
            break;
        }
        let lower = header.to_ascii_lowercase();
        if lower.starts_with("connection:") && lower.contains("close") {
            close = true;
        }
    }
    if request_line.ends_with("HTTP/1.0\r\n") {
        close = true;
    }
    let target = request_line.split_whitespace().nth(1).unwrap_or("/");
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p, Some(q.to_owned())),
        None => (target, None),
    };
    let (status, body) = match path {
        "/" => {
            if !sleep.is_zero() {
                std::thread::sleep(sleep);
            }
            ("200 OK", "Hello, World!".to_owned())
        }
        "/pid" => ("200 OK", std::process::id().to_string()),
        // Blocks the accept loop's thread (the worker's event loop): see `LoopHandle`.
        "/block" => (
            "200 OK",
            looper.run(move || example::block(query.as_deref())),
        ),
        "/leak" => ("200 OK", example::leak(query.as_deref())),
        _ => ("404 Not Found", "Not Found".to_owned()),
    };
    // Once the drain has started, this response is the connection's last.
    if conn.response_ready() {
        close = true;
    }
    let connection = if close { "close" } else { "keep-alive" };
    write!(
        writer,
        "HTTP/1.1 {status}\r\ncontent-type: text/plain\r\ncontent-length: {}\r\nconnection: {connection}\r\n\r\n{body}",
        body.len()
    )?;
    writer.flush()?;
    Ok(!close)
}
