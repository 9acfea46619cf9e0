//! A realistic axum service under prefork: per-worker state built by a factory, JSON in and out,
//! logging, and the process-model options (workers, shutdown timeout, worker recycling).
//!
//! Run with: `cargo run -p prefork-axum --example axum_app` (listens on `127.0.0.1:8080`; set
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

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use tracing_subscriber::EnvFilter;

fn main() -> Result<(), prefork_axum::Error> {
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

    prefork_axum::Server::new(addr)
        .prefork(|p| {
            p.workers(workers)
                // How long a stopping worker may finish its in-flight requests before SIGKILL.
                .shutdown_timeout(Duration::from_secs(10))
                // Replace a worker after ~10 000 requests (+ up to 1 000, so that they do not all
                // recycle together): its replacement starts first, nothing is dropped.
                .max_requests(10_000, 1_000)
        })
        // The factory runs once in each worker, inside its tokio runtime, never in the master:
        // the place to open connections and build caches. An error here (`?`) stops the server
        // with its message ("worker 0 (pid ..) failed to start: ..."), with no restart loop.
        .serve_with(async |worker| {
            let state = Arc::new(AppState {
                worker: worker.id(),
                db: Db::connect("postgres://localhost/shop").await?,
                requests: AtomicU64::new(0),
            });
            tracing::info!(worker = worker.id(), "app ready");
            Ok(Router::new()
                .route("/", get(status))
                .route("/orders", post(create_order))
                .with_state(state))
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

#[derive(Serialize)]
struct Status {
    worker: usize,
    pid: u32,
    requests_served_by_this_worker: u64,
    db: String,
}

async fn status(State(state): State<Arc<AppState>>) -> Json<Status> {
    let n = state.requests.fetch_add(1, Ordering::Relaxed) + 1;
    Json(Status {
        worker: state.worker,
        pid: std::process::id(),
        requests_served_by_this_worker: n,
        db: state.db.url.clone(),
    })
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
struct ApiError {
    error: String,
}

/// Echoes a valid order back as JSON. A body that is not JSON of this shape is rejected by the
/// `Json` extractor (400/415/422); the checks below answer 422 with a JSON error.
async fn create_order(
    State(state): State<Arc<AppState>>,
    Json(order): Json<NewOrder>,
) -> Result<(StatusCode, Json<Order>), (StatusCode, Json<ApiError>)> {
    state.requests.fetch_add(1, Ordering::Relaxed);
    if order.item.trim().is_empty() || !(1..=100).contains(&order.quantity) {
        let error = "item must not be empty and quantity must be 1 to 100".to_owned();
        return Err((StatusCode::UNPROCESSABLE_ENTITY, Json(ApiError { error })));
    }
    tracing::info!(worker = state.worker, item = %order.item, "order created");
    Ok((
        StatusCode::CREATED,
        Json(Order {
            item: order.item,
            quantity: order.quantity,
            worker: state.worker,
            pid: std::process::id(),
        }),
    ))
}
