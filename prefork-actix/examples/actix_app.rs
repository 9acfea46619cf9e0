//! A realistic actix-web service under prefork: per-worker state built in each worker, JSON in
//! and out, logging, and the process-model options (workers, shutdown timeout, worker
//! recycling).
//!
//! Run with: `cargo run -p prefork-actix --example actix_app` (listens on `127.0.0.1:8080`; set
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
use std::time::Duration;

use actix_web::{error, get, post, web, App, HttpResponse, HttpServer, Responder};
use prefork_actix::{HttpServerExt as _, PreforkMiddleware, Server};
use serde::{Deserialize, Serialize};
use tracing_subscriber::EnvFilter;

fn main() -> Result<(), prefork_actix::Error> {
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

    // actix's app factory: it runs in each worker process, once per actix worker thread (one per
    // process by default, see `threads` below), and never in the master. Build state here.
    HttpServer::new(|| {
        App::new()
            // Async set-up (a connection pool): built before the worker accepts anything. If it
            // fails, the worker fails to start and the master stops with an error (no restart
            // loop).
            .data_factory(|| Db::connect("postgres://localhost/shop"))
            .app_data(web::Data::new(AppState {
                worker: prefork_actix::prefork_core::worker_id().unwrap_or(0),
                requests: AtomicU64::new(0),
            }))
            // Bad JSON bodies get a JSON error too.
            .app_data(
                web::JsonConfig::default()
                    .limit(64 * 1024)
                    .error_handler(|err, _req| {
                        let body = ApiError {
                            error: err.to_string(),
                        };
                        let response = HttpResponse::BadRequest().json(body);
                        error::InternalError::from_response(err, response).into()
                    }),
            )
            .service(status)
            .service(create_order)
            .default_service(web::to(|| async {
                HttpResponse::NotFound().json(ApiError {
                    error: "not found".to_owned(),
                })
            }))
            // Last, so it sees every response: it lets a stopping worker drain keep-alive
            // connections and feeds the master's request counts and heartbeat.
            .wrap(PreforkMiddleware)
    })
    // actix's own settings stay on the HttpServer (but no `bind`, `workers` or signals:
    // prefork owns those).
    .keep_alive(Duration::from_secs(30))
    .run_prefork(
        Server::new(addr)
            .prefork(|p| {
                p.workers(workers)
                    // How long a stopping worker may finish its in-flight requests before SIGKILL.
                    .shutdown_timeout(Duration::from_secs(10))
                    // Replace a worker after ~10 000 requests (+ up to 1 000, so that they do not
                    // all recycle together): its replacement starts first, nothing is dropped.
                    .max_requests(10_000, 1_000)
            })
            // actix worker threads per worker process.
            .threads(1),
    )
}

/// The state of ONE worker process (of one actix thread in it, with `threads(n)` above 1).
/// Workers are separate processes: each has its own copy of this, so `requests` counts what this
/// worker served, not the whole server. Anything that must be shared (sessions, rate limits)
/// belongs in a database or a cache server.
struct AppState {
    worker: usize,
    requests: AtomicU64,
}

/// Stands for a connection pool (sqlx, deadpool, an HTTP client...): opened by each worker.
struct Db {
    url: String,
}

impl Db {
    async fn connect(url: &str) -> std::io::Result<Db> {
        actix_web::rt::time::sleep(Duration::from_millis(10)).await; // the handshake
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

#[get("/")]
async fn status(state: web::Data<AppState>, db: web::Data<Db>) -> impl Responder {
    let n = state.requests.fetch_add(1, Ordering::Relaxed) + 1;
    web::Json(Status {
        worker: state.worker,
        pid: std::process::id(),
        requests_served_by_this_worker: n,
        db: db.url.clone(),
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

/// Echoes a valid order back as JSON; 422 with a JSON error when it does not make sense.
#[post("/orders")]
async fn create_order(state: web::Data<AppState>, order: web::Json<NewOrder>) -> HttpResponse {
    state.requests.fetch_add(1, Ordering::Relaxed);
    let order = order.into_inner();
    if order.item.trim().is_empty() || !(1..=100).contains(&order.quantity) {
        return HttpResponse::UnprocessableEntity().json(ApiError {
            error: "item must not be empty and quantity must be 1 to 100".to_owned(),
        });
    }
    tracing::info!(worker = state.worker, item = %order.item, "order created");
    HttpResponse::Created().json(Order {
        item: order.item,
        quantity: order.quantity,
        worker: state.worker,
        pid: std::process::id(),
    })
}
