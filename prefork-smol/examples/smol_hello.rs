//! Hello World on smol + hyper under prefork: the contract program the tests and benchmarks drive.
//!
//! Run with: `cargo run -p prefork-smol --example smol_hello -- --addr 127.0.0.1:8080 --workers 2`
//!
//! `GET /` answers `Hello, World!` (after `--sleep-ms`), `GET /pid` the worker's pid.
//! `--no-prefork` serves from one process with `--workers` executor threads (the benchmark
//! baseline); `--cert PATH --key PATH` serve HTTPS (HTTP/2 or HTTP/1.1 by ALPN). SIGTERM (or
//! Ctrl+C) drains in-flight requests and exits 0. Under prefork, each worker builds its service
//! in an app factory (`Server::serve_with`), which `--require-file` can make fail and
//! `--factory-delay-ms` slow.

use std::convert::Infallible;
use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;
use clap::Parser;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use prefork_smol::{Server, Standalone};
use prefork_testutil::example;

/// The contract programs' shared flags, plus two of this example's own (for its app factory).
#[derive(Parser, Debug)]
struct Args {
    #[command(flatten)]
    common: example::Args,
    /// A file each worker's app factory reads at start-up (stands for the config or data an app
    /// needs): missing, the worker fails to start.
    #[arg(long)]
    require_file: Option<PathBuf>,
    /// How long each worker's app factory takes (a slow start-up: pools, caches), in
    /// milliseconds.
    #[arg(long, default_value_t = 0)]
    factory_delay_ms: u64,
}

fn main() {
    example::init_tracing();
    let args = Args::parse();
    if let Err(e) = run(&args) {
        eprintln!("smol_hello: {e}");
        std::process::exit(1);
    }
}

fn run(args: &Args) -> std::io::Result<()> {
    let (common, required) = (&args.common, args.require_file.clone());
    let delay = Duration::from_millis(args.factory_delay_ms);
    if cfg!(not(feature = "tls")) && common.cert.is_some() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::Unsupported,
            "--cert needs the `tls` feature of prefork-smol",
        ));
    }
    let sleep = common.sleep();
    let service = service_fn(move |req| hello(req, sleep));
    if common.no_prefork {
        let server = Standalone::bind(common.addr.as_str())?
            .threads(common.workers_or_cpus())
            .shutdown_timeout(common.shutdown_timeout());
        #[cfg(feature = "tls")]
        let server = match common.tls() {
            Some(tls) => server.tls(tls),
            None => server,
        };
        return Ok(server.serve(service)?);
    }
    // The app factory runs in each worker, inside its executor, before the worker reports
    // ready; an error is the worker's start-up error, which the master reports.
    Ok(
        Server::from_prefork(common.prefork()).serve_with(async move |worker| {
            if !delay.is_zero() {
                async_io::Timer::after(delay).await;
            }
            if let Some(path) = required {
                std::fs::read(&path).map_err(|e| {
                    std::io::Error::new(e.kind(), format!("cannot read {}: {e}", path.display()))
                })?;
            }
            tracing::info!(worker = worker.id(), "app built");
            Ok(service)
        })?,
    )
}

async fn hello(
    req: Request<Incoming>,
    sleep: Duration,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let (status, body) = match req.uri().path() {
        "/" => {
            if !sleep.is_zero() {
                async_io::Timer::after(sleep).await;
            }
            (StatusCode::OK, Bytes::from_static(b"Hello, World!"))
        }
        "/pid" => (StatusCode::OK, Bytes::from(std::process::id().to_string())),
        // Both run on the worker's executor thread: /block stalls it, as a broken handler.
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
    let response = Response::builder()
        .status(status)
        .header("content-type", "text/plain")
        .body(Full::new(body))
        .expect("a valid response");
    Ok(response)
}
