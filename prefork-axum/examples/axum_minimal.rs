//! The smallest prefork axum server: one master process and one worker process per CPU, all
//! serving the same router on one shared listening socket.
//!
//! Run with: `cargo run -p prefork-axum --example axum_minimal`, then
//! `curl http://127.0.0.1:8080/`.
//! Ctrl+C (or SIGTERM) stops it gracefully.
//!
//! `main` runs in the master *and* again in every worker (the master re-executes this program),
//! so keep it free of side effects: no `#[tokio::main]`, each worker builds its own runtime.

use axum::{routing::get, Router};

fn main() -> Result<(), prefork_axum::Error> {
    let app = Router::new().route("/", get(|| async { "Hello, World!" }));
    prefork_axum::serve(app, "127.0.0.1:8080")
}
