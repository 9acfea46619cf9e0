//! actix-web under prefork, started from `#[actix_web::main]`: the contract program the tests and benchmarks drive.
//!
//! Run with: `cargo run -p prefork-actix --example actix_hello -- --addr 127.0.0.1:8080 --workers 2`
//!
//! `GET /` answers `Hello, World!` (after `--sleep-ms`), `GET /pid` the worker's pid,
//! `GET /block?ms=N` after blocking the actix worker thread for N ms, `GET /leak?mb=N` after
//! allocating N MiB it never frees. With
//! `--cert PATH --key PATH` it serves HTTPS (HTTP/2 by ALPN). `--http-server` serves through
//! actix-web's own `HttpServer` (`run_prefork`) instead of `Server::serve`. `--no-prefork` is actix's own
//! multi-threaded server with `--workers` threads in one process, the benchmarks' baseline.
//! SIGTERM (or Ctrl+C) drains and exits 0.

use std::io;
use std::path::PathBuf;
use std::time::Duration;

use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use clap::Parser;
use prefork_actix::{HttpServerExt as _, PreforkMiddleware, Server};
use prefork_testutil::example;

/// The `Prefork`'s idle keep-alive timeout (75 s by default), for actix's own `HttpServer`
/// (`--http-server`, `--no-prefork`; actix's default is 5 s).
const KEEPALIVE: Duration = prefork_actix::prefork_core::DEFAULT_KEEPALIVE_TIMEOUT;

/// The contract programs' shared flags, plus two of this example's own.
#[derive(Parser, Debug)]
struct Args {
    #[command(flatten)]
    common: example::Args,
    /// actix worker threads in each worker process.
    #[arg(long, default_value_t = prefork_actix::DEFAULT_THREADS)]
    threads: usize,
    /// A file each worker's app reads at start-up (stands for the config or data an app needs).
    #[arg(long)]
    require_file: Option<PathBuf>,
    /// Serve through actix-web's own `HttpServer` and its accept thread
    /// (`HttpServer::run_prefork`) instead of `Server::serve`'s accept loops.
    #[arg(long)]
    http_server: bool,
}

#[actix_web::main]
async fn main() {
    example::init_tracing();
    let args = Args::parse();
    let result = if args.common.cert.is_some() && !cfg!(feature = "tls") {
        Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "--cert needs the `tls` feature of prefork-actix",
        ))
    } else if args.common.no_prefork {
        single_process(&args).await
    } else {
        prefork(&args)
    };
    if let Err(e) = result {
        eprintln!("actix_hello: {e}");
        std::process::exit(1);
    }
}

/// Per-worker state, built by `App::data_factory` in each actix worker thread (so in each worker
/// process, never in the master). If it fails, actix does not start and, during prefork's initial
/// start, the master stops with "worker N (pid P) failed to start".
async fn load_required_file(path: Option<PathBuf>) -> Result<usize, String> {
    let Some(path) = path else { return Ok(0) };
    std::fs::read(&path).map(|data| data.len()).map_err(|e| {
        // actix reports only "Can not start server service 0": say why here.
        let message = format!("cannot read {}: {e}", path.display());
        tracing::error!("{message}");
        message
    })
}

/// The routes. actix calls the app factory (`|| App::new()...`) in every worker thread of every
/// worker process, never in the master.
fn routes(cfg: &mut web::ServiceConfig, sleep: Duration) {
    cfg.route(
        "/",
        web::get().to(move || async move {
            if !sleep.is_zero() {
                actix_web::rt::time::sleep(sleep).await;
            }
            HttpResponse::Ok()
                .content_type("text/plain")
                .body("Hello, World!")
        }),
    )
    .route(
        "/pid",
        web::get().to(|| async {
            HttpResponse::Ok()
                .content_type("text/plain")
                .body(std::process::id().to_string())
        }),
    )
    // A broken handler: blocks the actix worker thread (and so the worker's heartbeat).
    .route(
        "/block",
        web::get().to(|req: HttpRequest| async move {
            let body = example::block(Some(req.query_string()));
            HttpResponse::Ok().content_type("text/plain").body(body)
        }),
    )
    // A leaking handler: N MiB allocated, touched and never freed.
    .route(
        "/leak",
        web::get().to(|req: HttpRequest| async move {
            let body = example::leak(Some(req.query_string()));
            HttpResponse::Ok().content_type("text/plain").body(body)
        }),
    );
}

/// The prefork server: this blocks (the master supervises, a worker serves). Each actix worker
/// thread accepts for itself ([`Server::serve`]): balanced per connection, plain HTTP on a TLS
/// port answered `400`, the `Prefork`'s timeouts (`--keepalive-ms`, `--header-timeout-ms`).
fn prefork(args: &Args) -> io::Result<()> {
    let common = &args.common;
    let (sleep, required) = (common.sleep(), args.require_file.clone());
    let app = move || {
        let required = required.clone();
        App::new()
            .data_factory(move || load_required_file(required.clone()))
            .configure(|cfg| routes(cfg, sleep))
            // Counts requests, ends keep-alive connections at a request boundary when the
            // worker drains (and idle ones after the drain grace), and runs the heartbeat on
            // each actix worker thread.
            .wrap(PreforkMiddleware)
    };
    let server = Server::from_prefork(common.prefork()).threads(args.threads);
    if args.http_server {
        // actix's own timeouts: the `Prefork`'s idle keep-alive timeout set by hand.
        HttpServer::new(app)
            .keep_alive(KEEPALIVE)
            .run_prefork(server)?;
    } else {
        server.serve(app)?;
    }
    Ok(())
}

/// actix's own multi-threaded server in one process: the baseline.
async fn single_process(args: &Args) -> io::Result<()> {
    let common = &args.common;
    let threads = common.workers_or_cpus();
    if threads == 0 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "--workers must be at least 1",
        ));
    }
    let (sleep, required) = (common.sleep(), args.require_file.clone());
    let server = HttpServer::new(move || {
        let required = required.clone();
        App::new()
            .data_factory(move || load_required_file(required.clone()))
            .configure(|cfg| routes(cfg, sleep))
    })
    .keep_alive(KEEPALIVE)
    .workers(threads)
    .shutdown_timeout(common.shutdown_timeout().as_secs());
    let server = match common.tls() {
        #[cfg(feature = "tls")]
        Some(tls) => {
            let config = tls.load().map_err(io::Error::from)?;
            server
                .tls_handshake_timeout(std::time::Duration::from_millis(
                    common.tls_handshake_timeout_ms,
                ))
                .bind_rustls_0_23(common.addr.as_str(), (*config).clone())
        }
        _ => server.bind(common.addr.as_str()),
    }
    .map_err(|e| io::Error::new(e.kind(), format!("cannot listen on {}: {e}", common.addr)))?;
    for addr in server.addrs() {
        tracing::info!(%addr, threads, "listening");
    }
    // actix handles SIGTERM (graceful drain), SIGINT and SIGQUIT itself here.
    server.run().await
}
