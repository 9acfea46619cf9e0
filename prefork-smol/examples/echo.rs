//! A raw TCP echo server under prefork: the lower-level entry point, `Server::run`, whose
//! closure gets each worker's context (async listeners, worker id, shutdown, ready) inside the
//! worker's executor.
//!
//! Run with: `cargo run -p prefork-smol --example echo -- --addr 127.0.0.1:7000 --workers 2`
//! and try it with `nc 127.0.0.1 7000`.
//!
//! SIGTERM stops accepting; open connections get most of `--shutdown-timeout-ms` to finish,
//! then close.

use std::io;
use std::time::Duration;

use async_io::Timer;
use clap::Parser;
use prefork_smol::prefork_core::Prefork;
use prefork_smol::{Server, Worker};
use prefork_testutil::example;
use smol::future;
use smol::net::{TcpListener, TcpStream};

/// The example contract's address and worker flags (the HTTP ones are ignored here).
#[derive(Parser, Debug)]
struct Args {
    #[command(flatten)]
    common: example::Args,
}

fn main() {
    example::init_tracing();
    let args = Args::parse().common;
    let mut prefork = Prefork::new(args.addr.as_str())
        .reuseport(args.reuseport)
        .shutdown_timeout(args.shutdown_timeout());
    if let Some(n) = args.workers {
        prefork = prefork.workers(n);
    }
    if let Err(e) = Server::from_prefork(prefork).run(echo_worker) {
        eprintln!("echo: {e}");
        std::process::exit(1);
    }
}

async fn echo_worker(mut ctx: Worker) -> io::Result<()> {
    let listener = TcpListener::from(ctx.take_listeners().remove(0));
    // Count connections: each task holds a clone of `open`; `closed` ends when all are gone.
    let (open, closed) = smol::channel::bounded::<()>(1);
    ctx.ready()?;
    tracing::info!(worker = ctx.id(), "echo worker accepting");

    let accept = async {
        loop {
            match listener.accept().await {
                Ok((stream, _peer)) => {
                    let open = open.clone();
                    ctx.spawn(async move {
                        let _ = echo(stream).await;
                        drop(open);
                    })
                    .detach();
                }
                // EMFILE and the like: pause, then go on accepting.
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    Timer::after(Duration::from_millis(50)).await;
                }
            }
        }
    };
    future::or(accept, ctx.shutdown()).await;
    drop(listener);
    drop(open);
    // Drain: wait for the open connections, at most the drain timeout (the shutdown timeout
    // less a margin to exit before the master's SIGKILL).
    future::or(
        async {
            let _ = closed.recv().await;
        },
        async {
            Timer::after(ctx.drain_timeout()).await;
        },
    )
    .await;
    Ok(())
}

async fn echo(stream: TcpStream) -> io::Result<u64> {
    let mut writer = stream.clone();
    smol::io::copy(stream, &mut writer).await
}
