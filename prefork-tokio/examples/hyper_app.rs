//! A realistic hyper service under prefork: per-worker state built by a factory, JSON in and
//! out, logging, and the process-model options (workers, shutdown timeout, worker recycling).
//!
//! Run with: `cargo run -p prefork-tokio --example hyper_app` (listens on `127.0.0.1:8080`; set
//! `ADDR=127.0.0.1:3000` and `WORKERS=2` to change that), then:
//!
//! ```text
//! curl http://127.0.0.1:8080/
//! curl -X POST http://127.0.0.1:8080/orders -H 'content-type: application/json' \
//!      -d '{"item": "coffee", "quantity": 2}'
//! ```
//!
//! Stopping: SIGTERM or Ctrl+C to the master drains every worker (they stop accepting, finish
//! the requests in flight, then exit) and the program exits 0; a second signal stops at once.
//! SIGHUP is a rolling reload: each worker in turn is replaced by a fresh one running the
//! binary as it is now on disk, without dropping a connection (`kill -HUP <master pid>` after a
//! `cargo build`).

use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper::body::Incoming;
use hyper::header::CONTENT_TYPE;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use serde::{Deserialize, Serialize};
use tracing_subscriber::EnvFilter;

/// The largest request body read, in bytes.
const MAX_BODY: usize = 64 * 1024;

fn main() -> Result<(), prefork_tokio::Error> {
    // Logging first: this runs in the master and in every worker (each is this same program),
    // so every process logs to the same stderr. `RUST_LOG=debug` for more.
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .init();

    // Plain configuration only (the environment and argv are the same in every process).
    let addr = std::env::var("ADDR").unwrap_or_else(|_| "127.0.0.1:8080".to_owned());
    let workers = std::env::var("WORKERS")
        .ok()
        .and_then(|w| w.parse().ok())
        .unwrap_or(4);

    prefork_tokio::Server::new(addr)
        .prefork(|p| {
            p.workers(workers)
                // How long a stopping worker may finish its in-flight requests before SIGKILL.
                .shutdown_timeout(Duration::from_secs(10))
                // Replace a worker after ~10 000 requests (+ up to 1 000, so that they do not all
                // recycle together): its replacement starts first, nothing is dropped.
                .max_requests(10_000, 1_000)
        })
        // The factory runs once in each worker, inside its tokio runtime, never in the master:
        // the place to open connections and build caches. It returns the service, cloned for
        // each connection. An error here (`?`) stops the server with its message ("worker 0
        // (pid ..) failed to start: ..."), with no restart loop.
        .serve_with(async |worker| {
            let state = Arc::new(AppState {
                worker: worker.id(),
                db: Db::connect("postgres://localhost/shop").await?,
                requests: AtomicU64::new(0),
            });
            tracing::info!(worker = worker.id(), "app ready");
            Ok(service_fn(move |req| handle(Arc::clone(&state), req)))
        })
}

/// The state of ONE worker process. Workers are separate processes: each has its own copy of
/// this, so `requests` counts what this worker served, not the whole server. Anything that must
/// be shared (sessions, rate limits) belongs in a database or a cache server.
struct AppState {
    worker: usize,
    db: Db,
    requests: AtomicU64,
}

/// Stands for a connection pool (sqlx, deadpool, an HTTP client...): opened by each worker.
struct Db {
    url: String,
}

impl Db {
    async fn connect(url: &str) -> std::io::Result<Db> {
        tokio::time::sleep(Duration::from_millis(10)).await; // the handshake
        Ok(Db {
            url: url.to_owned(),
        })
    }
}

/// The router: every error becomes a JSON response, so the service never fails.
async fn handle(
    state: Arc<AppState>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let n = state.requests.fetch_add(1, Ordering::Relaxed) + 1;
    let response = match (req.method(), req.uri().path()) {
        (&Method::GET, "/") => json(
            StatusCode::OK,
            &Status {
                worker: state.worker,
                pid: std::process::id(),
                requests_served_by_this_worker: n,
                db: state.db.url.clone(),
            },
        ),
        (&Method::POST, "/orders") => create_order(&state, req).await,
        (_, "/" | "/orders") => error(StatusCode::METHOD_NOT_ALLOWED, "method not allowed"),
        _ => error(StatusCode::NOT_FOUND, "not found"),
    };
    Ok(response)
}

#[derive(Serialize)]
struct Status {
    worker: usize,
    pid: u32,
    requests_served_by_this_worker: u64,
    db: String,
}

#[derive(Deserialize)]
struct NewOrder {
    item: String,
    quantity: u32,
}

#[derive(Serialize)]
struct Order {
    item: String,
    quantity: u32,
    worker: usize,
    pid: u32,
}

#[derive(Serialize)]
struct ApiError<'a> {
    error: &'a str,
}

/// Reads (at most [`MAX_BODY`] bytes of) a JSON order, checks it and echoes it back.
async fn create_order(state: &AppState, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let body = match Limited::new(req.into_body(), MAX_BODY).collect().await {
        Ok(body) => body.to_bytes(),
        Err(e) if e.is::<LengthLimitError>() => {
            return error(StatusCode::PAYLOAD_TOO_LARGE, "body too large")
        }
        Err(_) => return error(StatusCode::BAD_REQUEST, "could not read the body"),
    };
    let order: NewOrder = match serde_json::from_slice(&body) {
        Ok(order) => order,
        Err(e) => return error(StatusCode::BAD_REQUEST, &format!("invalid JSON: {e}")),
    };
    if order.item.trim().is_empty() || !(1..=100).contains(&order.quantity) {
        return error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "item must not be empty and quantity must be 1 to 100",
        );
    }
    tracing::info!(worker = state.worker, item = %order.item, "order created");
    json(
        StatusCode::CREATED,
        &Order {
            item: order.item,
            quantity: order.quantity,
            worker: state.worker,
            pid: std::process::id(),
        },
    )
}

fn json(status: StatusCode, value: &impl Serialize) -> Response<Full<Bytes>> {
    let body = serde_json::to_vec(value).expect("these types always serialize");
    Response::builder()
        .status(status)
        .header(CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(body)))
        .expect("a valid response")
}

fn error(status: StatusCode, message: &str) -> Response<Full<Bytes>> {
    json(status, &ApiError { error: message })
}
