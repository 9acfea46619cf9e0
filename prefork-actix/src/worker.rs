//! The worker side: run a configured actix `Server` on an actix `System`, report ready once it
//! accepts, and stop it gracefully on the worker's shutdown notification.

use std::future::{poll_fn, Future};
use std::io;
use std::pin::Pin;
use std::task::Poll;

use actix_web::dev::Server;
use prefork_core::Child;

/// Runs `server` until it has stopped: on this thread if it runs no async runtime, else on a
/// thread of its own (a runtime cannot be started inside another).
pub(crate) fn run(server: Server, child: &Child) -> io::Result<()> {
    if tokio::runtime::Handle::try_current().is_err() {
        return run_here(server, child);
    }
    // Inside `#[actix_web::main]` (or `#[tokio::main]`): this thread is busy running the caller's
    // runtime, blocked in this call; the server gets its own thread and System.
    std::thread::scope(|scope| {
        let thread = std::thread::Builder::new()
            .name("prefork-actix".to_owned())
            .spawn_scoped(scope, || run_here(server, child))
            .map_err(|e| io::Error::new(e.kind(), format!("starting the server thread: {e}")))?;
        thread
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}

fn run_here(server: Server, child: &Child) -> io::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| io::Error::new(e.kind(), format!("starting the async runtime: {e}")))?;
    actix_rt::System::with_tokio_rt(|| runtime).block_on(drive(server, child))
}

/// Polls the server; reports ready after its first poll (when actix has started its worker
/// threads, each with its app built, and its accept thread) and asks it to stop gracefully once
/// the worker's shutdown notification completes.
async fn drive(mut server: Server, child: &Child) -> io::Result<()> {
    let handle = server.handle();
    let mut shutdown = child.shutdown();
    let mut ready = false;
    let mut stopping = false;
    poll_fn(move |cx| {
        // The first poll starts the server, blocking until every actix worker has built its app;
        // a start-up failure (an app factory that failed or panicked) ends the future here.
        if let Poll::Ready(result) = Pin::new(&mut server).poll(cx) {
            return Poll::Ready(result);
        }
        if !ready {
            ready = true;
            if let Err(e) = child.ready() {
                // The master is gone: the shutdown notification completes as well.
                tracing::warn!(error = %e, "cannot report ready to the master");
            }
        }
        if !stopping {
            if let Poll::Ready(reason) = Pin::new(&mut shutdown).poll(cx) {
                stopping = true;
                tracing::debug!(?reason, "stopping the actix server gracefully");
                // `stop` queues the command at once; the server (woken by it) stops accepting,
                // drains within its shutdown timeout, and then completes.
                drop(handle.stop(true));
            }
        }
        Poll::Pending
    })
    .await
}
