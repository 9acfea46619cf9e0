//! async-std through the same reactor: the worker's listener converted to
//! `async_std::net::TcpListener`, serving HTTP with hyper on async-std's streams.
//!
//! Built and run by plain `cargo test`: the crate's dev-dependency on itself turns the
//! `async-std` feature on for its tests.

use std::convert::Infallible;
use std::io;
use std::net::TcpListener;

use async_std::net::TcpStream;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response};
use prefork_smol::prefork_core::{Shutdown, ShutdownReason};
use prefork_smol::{Standalone, Worker};
use prefork_testutil::{get, Http1};
use smol::future;
use smol_hyper::rt::{FuturesIo, SmolTimer};

async fn hello(_: Request<Incoming>) -> Result<Response<String>, Infallible> {
    Ok(Response::new("Hello from async-std".to_owned()))
}

async fn serve_async_std(mut ctx: Worker) -> io::Result<()> {
    let listener = ctx.take_async_std_listeners()?.remove(0);
    ctx.ready()?;
    let accept = async {
        loop {
            let (stream, _): (TcpStream, _) = listener.accept().await?;
            ctx.spawn(async move {
                let _ = hyper::server::conn::http1::Builder::new()
                    .timer(SmolTimer::new())
                    .serve_connection(FuturesIo::new(stream), service_fn(hello))
                    .await;
            })
            .detach();
        }
    };
    future::or(accept, async {
        ctx.shutdown().await;
        Ok(())
    })
    .await
}

#[test]
fn async_std_listener_serves_http() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let shutdown = Shutdown::new().unwrap();
    let server = {
        let shutdown = shutdown.clone();
        std::thread::spawn(move || {
            Standalone::new(vec![listener])
                .threads(2)
                .shutdown(shutdown)
                .run(serve_async_std)
        })
    };
    let r = get(addr, "/").unwrap();
    assert_eq!((r.status, r.body.as_str()), (200, "Hello from async-std"));
    let mut conn = Http1::connect(addr).unwrap();
    for _ in 0..3 {
        assert_eq!(conn.get("/").unwrap().body, "Hello from async-std");
    }
    shutdown.trigger(ShutdownReason::Requested);
    server.join().unwrap().unwrap();
}
