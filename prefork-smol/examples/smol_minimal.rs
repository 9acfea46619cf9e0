//! The smallest prefork smol server: one master process and one worker process per CPU, each
//! worker running a hyper service on its own single-threaded smol executor.
//!
//! Run with: `cargo run -p prefork-smol --example smol_minimal`, then
//! `curl http://127.0.0.1:8080/`. Ctrl+C (or SIGTERM) stops it gracefully.
//!
//! `main` runs in the master *and* again in every worker (the master re-executes this program),
//! so keep it free of side effects. No `smol::block_on` is needed: each worker runs its own
//! executor.

use std::convert::Infallible;

use hyper::{body::Incoming, service::service_fn, Request, Response};

async fn hello(_: Request<Incoming>) -> Result<Response<String>, Infallible> {
    Ok(Response::new("Hello, World!".to_owned()))
}

fn main() -> Result<(), prefork_smol::Error> {
    prefork_smol::serve(service_fn(hello), "127.0.0.1:8080")
}
