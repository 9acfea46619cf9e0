//! A blocking, std-only HTTP/1.1 responder under prefork: no async runtime anywhere.
//!
//! Run with: `cargo run -p prefork-core --example std_hello -- --addr 127.0.0.1:8080 --workers 2`
//!
//! `GET /` answers `Hello, World!`, `GET /pid` the worker's pid. SIGTERM (or Ctrl+C) drains:
//! the worker stops accepting, finishes the requests in flight, and exits 0.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::AsFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use prefork_core::{Child, Shutdown};
use prefork_testutil::example;

/// The example contract's flags (see DESIGN.md), plus two of this example's own.
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
enum Listener<'a> {
    Tcp(&'a TcpListener),
    Unix(&'a UnixListener),
}

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

fn serve(child: Child, sleep: Duration) -> io::Result<()> {
    let shutdown = child.shutdown();
    let in_flight = Arc::new(AtomicUsize::new(0));
    let listeners: Vec<Listener<'_>> = child
        .listeners()
        .iter()
        .map(Listener::Tcp)
        .chain(child.unix_listeners().iter().map(Listener::Unix))
        .collect();
    child.ready()?;
    loop {
        let mut fds: Vec<PollFd<'_>> = listeners
            .iter()
            .map(|l| match l {
                Listener::Tcp(l) => PollFd::new(l.as_fd(), PollFlags::POLLIN),
                Listener::Unix(l) => PollFd::new(l.as_fd(), PollFlags::POLLIN),
            })
            .collect();
        fds.push(PollFd::new(shutdown.as_fd(), PollFlags::POLLIN));
        match poll(&mut fds, PollTimeout::NONE) {
            Ok(_) => {}
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(e.into()),
        }
        if shutdown.is_triggered() {
            break;
        }
        for l in &listeners {
            accept_all(l, &shutdown, &in_flight, sleep);
        }
    }
    // Drain: the listener stays open in the other workers; we only wait for our own requests.
    let deadline = Instant::now() + child.shutdown_timeout();
    while in_flight.load(Ordering::SeqCst) > 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    Ok(())
}

fn accept_all(
    listener: &Listener<'_>,
    shutdown: &Shutdown,
    in_flight: &Arc<AtomicUsize>,
    sleep: Duration,
) {
    loop {
        let accepted = match listener {
            Listener::Tcp(l) => l.accept().map(|(s, _)| Stream::Tcp(s)),
            Listener::Unix(l) => l.accept().map(|(s, _)| Stream::Unix(s)),
        };
        match accepted {
            Ok(stream) => {
                let shutdown = shutdown.clone();
                let in_flight = in_flight.clone();
                std::thread::spawn(move || {
                    let _ = connection(stream, &shutdown, &in_flight, sleep);
                });
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
            // EMFILE, ECONNABORTED, ...: not fatal for the worker.
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                std::thread::sleep(Duration::from_millis(10));
                return;
            }
        }
    }
}

/// One keep-alive connection: requests are answered one after another until the client closes,
/// or the worker is stopping and the connection is idle.
fn connection(
    stream: Stream,
    shutdown: &Shutdown,
    in_flight: &AtomicUsize,
    sleep: Duration,
) -> io::Result<()> {
    stream.prepare()?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut writer = stream;
    let mut line = String::new();
    loop {
        line.clear();
        match reader.read_line(&mut line) {
            Ok(0) => return Ok(()),
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                if shutdown.is_triggered() && line.is_empty() {
                    return Ok(());
                }
                continue;
            }
            Err(e) => return Err(e),
        }
        in_flight.fetch_add(1, Ordering::SeqCst);
        let result = respond(
            &mut reader,
            &mut writer,
            &line,
            sleep,
            shutdown.is_triggered(),
        );
        in_flight.fetch_sub(1, Ordering::SeqCst);
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
    stopping: bool,
) -> io::Result<bool> {
    let mut close = stopping;
    let mut header = String::new();
    loop {
        header.clear();
        match reader.read_line(&mut header) {
            Ok(0) => return Ok(false),
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                continue
            }
            Err(e) => return Err(e),
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
    let path = request_line.split_whitespace().nth(1).unwrap_or("/");
    let (status, body) = match path {
        "/" => {
            if !sleep.is_zero() {
                std::thread::sleep(sleep);
            }
            ("200 OK", "Hello, World!".to_owned())
        }
        "/pid" => ("200 OK", std::process::id().to_string()),
        _ => ("404 Not Found", "Not Found".to_owned()),
    };
    let conn = if close { "close" } else { "keep-alive" };
    write!(
        writer,
        "HTTP/1.1 {status}\r\ncontent-type: text/plain\r\ncontent-length: {}\r\nconnection: {conn}\r\n\r\n{body}",
        body.len()
    )?;
    writer.flush()?;
    Ok(!close)
}
