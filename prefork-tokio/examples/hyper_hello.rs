//! A hyper service under prefork: one `current_thread` tokio runtime per worker process.
//!
//! Run with: `cargo run -p prefork-tokio --example hyper_hello -- --addr 127.0.0.1:8080 --workers 2`
//!
//! `GET /` answers `Hello, World!` (after `--sleep-ms`), `GET /pid` the worker's pid,
//! `GET /block?ms=N` blocks the worker's event loop for N ms, `GET /leak?mb=N` leaks N MiB.
//! `--cert PATH --key PATH` serves HTTPS (HTTP/2 by ALPN). SIGTERM (or Ctrl+C) drains.
//! `--no-prefork` serves the same service from this one process on tokio's multi-threaded
//! runtime with `--workers` threads: the baseline for the benchmarks.

use std::convert::Infallible;
use std::io;
use std::time::Duration;

use bytes::Bytes;
use clap::Parser;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use prefork_testutil::example;
use prefork_tokio::Standalone;

/// The contract programs' shared flags.
#[derive(Parser, Debug)]
struct Args {
    #[command(flatten)]
    common: example::Args,
}

fn main() {
    example::init_tracing();
    let args = Args::parse().common;
    let result = if args.no_prefork {
        single_process(&args)
    } else {
        prefork(&args)
    };
    if let Err(e) = result {
        eprintln!("hyper_hello: {e}");
        std::process::exit(1);
    }
}

fn prefork(args: &example::Args) -> io::Result<()> {
    tls(args)?; // refuses --cert without the `tls` feature
    let prefork = args.prefork();
    let sleep = args.sleep();
    Ok(prefork_tokio::Server::from_prefork(prefork)
        .serve(service_fn(move |req| hello(req, sleep)))?)
}

async fn hello(
    req: Request<Incoming>,
    sleep: Duration,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let (status, body) = match req.uri().path() {
        "/" => {
            if !sleep.is_zero() {
                tokio::time::sleep(sleep).await;
            }
            (StatusCode::OK, Bytes::from_static(b"Hello, World!"))
        }
        "/pid" => (StatusCode::OK, Bytes::from(std::process::id().to_string())),
        "/block" => (
            StatusCode::OK,
            Bytes::from(example::block(req.uri().query())),
        ),
        "/leak" => (
            StatusCode::OK,
            Bytes::from(example::leak(req.uri().query())),
        ),
        _ => (StatusCode::NOT_FOUND, Bytes::from_static(b"Not Found")),
    };
    let mut resp = Response::new(Full::new(body));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    Ok(resp)
}

/// `--no-prefork`: the same service and serving code, in this one process, on a multi-threaded
/// runtime with `--workers` threads. Logs `listening addr=...` like the master does, and drains
/// on SIGTERM/SIGINT.
fn single_process(args: &example::Args) -> io::Result<()> {
    let threads = args.workers_or_cpus();
    if threads == 0 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "invalid configuration: workers must be at least 1",
        ));
    }
    #[cfg_attr(not(feature = "tls"), allow(unused_variables))]
    let tls = tls(args)?;
    let server = Standalone::bind(args.addr.as_str())?
        .threads(threads)
        .shutdown_timeout(args.shutdown_timeout());
    #[cfg(feature = "tls")]
    let server = match tls {
        Some(tls) => server.tls(tls),
        None => server,
    };
    let sleep = args.sleep();
    Ok(server.serve(service_fn(move |req| hello(req, sleep)))?)
}

/// `--cert`/`--key`, refused when this build cannot serve TLS.
fn tls(args: &example::Args) -> io::Result<Option<prefork_tokio::prefork_core::TlsConfig>> {
    let tls = args.tls();
    if tls.is_some() && cfg!(not(feature = "tls")) {
        return Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "--cert/--key: built without the `tls` feature",
        ));
    }
    Ok(tls)
}
