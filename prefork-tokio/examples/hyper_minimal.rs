//! The smallest prefork hyper server: one master process and one worker process per CPU, each
//! worker running a hyper service on its own single-threaded tokio runtime.
//!
//! Run with: `cargo run -p prefork-tokio --example hyper_minimal`, then
//! `curl http://127.0.0.1:8080/`. Ctrl+C (or SIGTERM) stops it gracefully.
//!
//! `main` runs in the master *and* again in every worker (the master re-executes this program),
//! so keep it free of side effects: no `#[tokio::main]`, each worker builds its own runtime.

use std::convert::Infallible;

use hyper::{body::Incoming, service::service_fn, Request, Response};

async fn hello(_: Request<Incoming>) -> Result<Response<String>, Infallible> {
    Ok(Response::new("Hello, World!".to_owned()))
}

fn main() -> Result<(), prefork_tokio::Error> {
    prefork_tokio::serve(service_fn(hello), "127.0.0.1:8080")
}
