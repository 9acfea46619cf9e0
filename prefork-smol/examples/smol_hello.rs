//! Hello World on smol + hyper under prefork: the contract program the tests and benchmarks drive.
//!
//! Run with: `cargo run -p prefork-smol --example smol_hello -- --addr 127.0.0.1:8080 --workers 2`
//!
//! `GET /` answers `Hello, World!` (after `--sleep-ms`), `GET /pid` the worker's pid.
//! `--no-prefork` serves from one process with `--workers` executor threads (the benchmark
//! baseline); `--cert PATH --key PATH` serve HTTPS (HTTP/2 or HTTP/1.1 by ALPN). SIGTERM (or
//! Ctrl+C) drains in-flight requests and exits 0.

use std::convert::Infallible;
use std::time::Duration;

use bytes::Bytes;
use clap::Parser;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use prefork_smol::{Server, Standalone};
use prefork_testutil::example;

/// The contract programs' shared flags.
#[derive(Parser, Debug)]
struct Args {
    #[command(flatten)]
    common: example::Args,
}

fn main() {
    example::init_tracing();
    let args = Args::parse();
    if let Err(e) = run(&args.common) {
        eprintln!("smol_hello: {e}");
        std::process::exit(1);
    }
}

fn run(args: &example::Args) -> std::io::Result<()> {
    if cfg!(not(feature = "tls")) && args.cert.is_some() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::Unsupported,
            "--cert needs the `tls` feature of prefork-smol",
        ));
    }
    let sleep = args.sleep();
    let service = service_fn(move |req| hello(req, sleep));
    if args.no_prefork {
        let server = Standalone::bind(args.addr.as_str())?
            .threads(args.workers_or_cpus())
            .shutdown_timeout(args.shutdown_timeout());
        #[cfg(feature = "tls")]
        let server = match args.tls() {
            Some(tls) => server.tls(tls),
            None => server,
        };
        return Ok(server.serve(service)?);
    }
    Ok(Server::from_prefork(args.prefork()).serve(service)?)
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
