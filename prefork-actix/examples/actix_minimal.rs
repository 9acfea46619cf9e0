//! The smallest prefork actix-web server: one master process and one worker process per CPU,
//! all serving the same app on one shared listening socket.
//!
//! Run with: `cargo run -p prefork-actix --example actix_minimal`, then
//! `curl http://127.0.0.1:8080/`. Ctrl+C (or SIGTERM) stops it gracefully.
//!
//! `main` runs in the master *and* again in every worker (the master re-executes this program).
//! A plain `fn main()` is enough: the master runs no async runtime, each worker starts its own
//! (`#[actix_web::main]` works too). `prefork_actix::serve(factory, addr)` replaces
//! `HttpServer::new(factory).bind(addr)?.run().await`.

use actix_web::{web, App};
use prefork_actix::PreforkMiddleware;

fn main() -> Result<(), prefork_actix::Error> {
    prefork_actix::serve(
        || {
            App::new()
                .route("/", web::get().to(|| async { "Hello, World!" }))
                // Last, so it sees every response: it lets a stopping worker drain keep-alive
                // connections and feeds the master's request counts and heartbeat.
                .wrap(PreforkMiddleware)
        },
        "127.0.0.1:8080",
    )
}
