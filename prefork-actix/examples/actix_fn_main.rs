//! A contract program (driven by `tests/e2e.rs`): prefork actix-web from a plain `fn main()`
//! (no async runtime in the master at all; each worker starts its own). The copyable version is
//! `actix_minimal`.
//!
//! Run with: `cargo run -p prefork-actix --example actix_fn_main -- --addr 127.0.0.1:8080 --workers 2`
//!
//! Takes the contract programs' shared flags but uses only `--addr` and
//! `--workers`; see `actix_hello` for the full program.

use actix_web::{web, App, HttpServer};
use clap::Parser;
use prefork_actix::{HttpServerExt as _, Prefork, PreforkMiddleware};
use prefork_testutil::example;

#[derive(Parser, Debug)]
struct Args {
    #[command(flatten)]
    common: example::Args,
}

fn main() -> Result<(), prefork_actix::Error> {
    example::init_tracing();
    let args = Args::parse().common;
    let mut prefork = Prefork::new(args.addr.as_str());
    if let Some(n) = args.workers {
        prefork = prefork.workers(n);
    }
    HttpServer::new(|| {
        App::new()
            .route("/", web::get().to(|| async { "Hello, World!" }))
            .route(
                "/pid",
                web::get().to(|| async { std::process::id().to_string() }),
            )
            .wrap(PreforkMiddleware)
    })
    .run_prefork(prefork)
}
