//! An axum app under prefork, its router built in each worker by a factory.
//!
//! Run with: `cargo run -p prefork-axum --example axum_hello -- --addr 127.0.0.1:8080 --workers 2`
//!
//! `GET /` answers `Hello, World!` (after `--sleep-ms`), `GET /pid` the worker's pid,
//! `GET /block?ms=N` blocks the worker's event loop for N ms, `GET /leak?mb=N` leaks N MiB.
//! `--cert PATH --key PATH` serves HTTPS (HTTP/2 by ALPN). SIGTERM (or Ctrl+C) drains.
//! `--no-prefork` serves the same app from this one process on tokio's multi-threaded runtime
//! with `--workers` threads: the baseline for the benchmarks.

use std::io;
use std::time::Duration;

use axum::http::header::CONTENT_TYPE;
use axum::routing::get;
use axum::Router;
use clap::Parser;
use prefork_axum::Standalone;
use prefork_testutil::example;

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
        eprintln!("axum_hello: {e}");
        std::process::exit(1);
    }
}

fn app(sleep: Duration) -> Router {
    Router::new()
        .route(
            "/",
            get(move || async move {
                if !sleep.is_zero() {
                    tokio::time::sleep(sleep).await;
                }
                ([(CONTENT_TYPE, "text/plain")], "Hello, World!")
            }),
        )
        .route(
            "/pid",
            get(|| async {
                (
                    [(CONTENT_TYPE, "text/plain")],
                    std::process::id().to_string(),
                )
            }),
        )
        // Both run on the worker's event-loop thread: /block stalls it, as a broken handler.
        .route(
            "/block",
            get(|uri: axum::http::Uri| async move { example::block(uri.query()) }),
        )
        .route(
            "/leak",
            get(|uri: axum::http::Uri| async move { example::leak(uri.query()) }),
        )
}

fn prefork(args: &example::Args) -> io::Result<()> {
    tls(args)?; // refuses --cert without the `tls` feature
    let prefork = args.prefork();
    let sleep = args.sleep();
    // The factory runs in each worker (where pools and caches would be built), never here.
    Ok(prefork_axum::Server::from_prefork(prefork)
        .serve_with(async move |_worker| Ok(app(sleep)))?)
}

/// `--no-prefork`: the same app and serving code, in this one process, on a multi-threaded
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
    Ok(server.serve(app(args.sleep()))?)
}

/// `--cert`/`--key`, refused when this build cannot serve TLS.
fn tls(args: &example::Args) -> io::Result<Option<prefork_axum::prefork_core::TlsConfig>> {
    let tls = args.tls();
    if tls.is_some() && cfg!(not(feature = "tls")) {
        return Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "--cert/--key: built without the `tls` feature",
        ));
    }
    Ok(tls)
}
