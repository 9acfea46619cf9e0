//! The worker side: run a configured actix `Server` on an actix `System`, report ready once it
//! accepts, and drain it without loss on the worker's shutdown notification.

use std::future::{poll_fn, Future};
use std::io;
use std::pin::{pin, Pin};
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use actix_web::dev::Server;
use prefork_core::accept::HandedOffListener;
use prefork_core::Worker;

use crate::balance::Steer;
use crate::middleware::WorkerState;

/// How long the drain lets actix's accept thread act on `pause` before this worker's listener
/// copies are closed under it (it acts within microseconds; this only has to cover a busy
/// thread).
const PAUSE_SETTLE: Duration = Duration::from_millis(20);

/// Runs `server` until it has stopped: on this thread if it runs no async runtime, else on a
/// thread of its own (a runtime cannot be started inside another).
pub(crate) fn run(
    server: Server,
    child: &Worker,
    state: &Arc<WorkerState>,
    steer: &Steer,
    handed_off: Vec<HandedOffListener>,
) -> io::Result<()> {
    on_a_thread_outside_any_runtime(|| run_here(server, child, state, steer, handed_off))
}

/// Runs `f` on this thread if it runs no async runtime, else on a thread of its own
/// (`prefork-actix`; a runtime cannot be started inside another), and waits for it.
pub(crate) fn on_a_thread_outside_any_runtime<T: Send>(
    f: impl FnOnce() -> io::Result<T> + Send,
) -> io::Result<T> {
    if tokio::runtime::Handle::try_current().is_err() {
        return f();
    }
    // Inside `#[actix_web::main]` (or `#[tokio::main]`): this thread is busy running the caller's
    // runtime, blocked in this call; the server gets its own thread and System.
    std::thread::scope(|scope| {
        let thread = std::thread::Builder::new()
            .name("prefork-actix".to_owned())
            .spawn_scoped(scope, f)
            .map_err(|e| io::Error::new(e.kind(), format!("starting the server thread: {e}")))?;
        thread
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}

fn run_here(
    server: Server,
    child: &Worker,
    state: &Arc<WorkerState>,
    steer: &Steer,
    handed_off: Vec<HandedOffListener>,
) -> io::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| io::Error::new(e.kind(), format!("starting the async runtime: {e}")))?;
    actix_rt::System::with_tokio_rt(|| runtime)
        .block_on(drive(server, child, state, steer, handed_off))
}

/// Polls `fut` and the server together: `Err` with the server's result if it ended first.
async fn alongside<F: Future>(server: &mut Server, fut: F) -> Result<F::Output, io::Result<()>> {
    let mut fut = pin!(fut);
    poll_fn(|cx| {
        if let Poll::Ready(out) = fut.as_mut().poll(cx) {
            return Poll::Ready(Ok(out));
        }
        if let Poll::Ready(result) = Pin::new(&mut *server).poll(cx) {
            return Poll::Ready(Err(result));
        }
        Poll::Pending
    })
    .await
}

/// Starts the server, reports ready, serves until the worker's shutdown notification, then
/// drains:
/// 1. the drain flag is set (every HTTP/1 response from now carries `Connection: close`);
/// 2. actix's accept thread is paused and this worker's listener copies are closed at once (in
///    the shared-socket mode the other workers keep accepting from the queue; on a final stop,
///    with every copy closed, new connections are refused instead of hanging);
/// 3. the connections end at their request boundaries (busy keep-alive ones after their next
///    response, idle ones once idle for the drain grace: see [`crate::idle`], which runs on the
///    actix worker threads), until none is open or [`Worker::drain_timeout`] has passed since the
///    notification, exactly;
/// 4. the server is dropped, which stops actix's threads at once.
///
/// actix's own graceful stop (`ServerHandle::stop(true)`) is not used: it drops connections
/// accepted but not yet handed to a worker thread, closes idle keep-alive connections under a
/// client that may be sending, and counts its timeout in whole seconds.
async fn drive(
    mut server: Server,
    child: &Worker,
    state: &Arc<WorkerState>,
    steer: &Steer,
    handed_off: Vec<HandedOffListener>,
) -> io::Result<()> {
    let handle = server.handle();
    // The first poll starts the server, blocking until every actix worker has built its app;
    // a start-up failure (an app factory that failed or panicked) ends the future here.
    if let Poll::Ready(result) = poll_fn(|cx| Poll::Ready(Pin::new(&mut server).poll(cx))).await {
        return result;
    }
    let fallback_heartbeat = fallback_heartbeat(child, state);
    if let Err(e) = child.ready() {
        // The master is gone: the shutdown notification completes as well.
        tracing::warn!(error = %e, "cannot report ready to the master");
    }

    // Until the shutdown notification, actix's accept thread is paused and resumed as the
    // balance table says (crate::balance); the drain then pauses it for good.
    let serving = async {
        tokio::select! {
            reason = child.shutdown() => reason,
            never = steer.run(handle.clone()) => match never {},
        }
    };
    let reason = match alongside(&mut server, serving).await {
        Ok(reason) => reason,
        Err(result) => return result,
    };
    let deadline = start_drain(child, &state.drain, reason);
    let paused = alongside(&mut server, async {
        handle.pause().await;
        actix_rt::time::sleep(PAUSE_SETTLE).await;
    })
    .await;
    if let Err(result) = paused {
        return result;
    }
    close_listener_copies(handed_off);
    if let Err(result) = alongside(&mut server, drained(child, &state.drain, deadline)).await {
        return result;
    }
    if let Some(task) = fallback_heartbeat {
        task.abort();
    }
    // Stops the accept thread and the worker threads without waiting for them.
    drop(server);
    Ok(())
}

/// Starts the drain on the worker's shutdown notification (`reason`): every HTTP/1 response
/// from now carries `Connection: close`. Returns when it must end: [`Worker::drain_timeout`]
/// from now, exactly.
pub(crate) fn start_drain(
    child: &Worker,
    drain: &prefork_core::Drain,
    reason: prefork_core::ShutdownReason,
) -> actix_rt::time::Instant {
    let now = actix_rt::time::Instant::now();
    let deadline = now
        .checked_add(child.drain_timeout())
        .unwrap_or_else(|| now + Duration::from_secs(365 * 24 * 3600));
    drain.start();
    tracing::debug!(?reason, open = drain.open(), "draining");
    deadline
}

/// Waits until every connection has ended, or until `deadline` (then says how many are left).
pub(crate) async fn drained(
    child: &Worker,
    drain: &prefork_core::Drain,
    deadline: actix_rt::time::Instant,
) {
    match tokio::time::timeout_at(deadline, drain.closed()).await {
        Ok(()) => tracing::debug!("drained"),
        Err(_elapsed) => tracing::warn!(
            timeout_ms = child.drain_timeout().as_millis() as u64,
            open = drain.open(),
            "drain did not finish within the shutdown timeout; closing the remaining connections"
        ),
    }
}

/// Without [`PreforkMiddleware`](crate::PreforkMiddleware) in the app no actix worker thread
/// runs the heartbeat: beat from this (the server's control) thread instead, so the watchdog does
/// not kill a healthy worker, and say what is lost.
pub(crate) fn fallback_heartbeat(
    child: &Worker,
    state: &Arc<WorkerState>,
) -> Option<actix_rt::task::JoinHandle<()>> {
    if state.beating_threads() > 0 || !child.has_master() {
        return None;
    }
    tracing::warn!(
        worker = child.id(),
        "the app has no prefork_actix::PreforkMiddleware (add `.wrap(PreforkMiddleware)`): \
         requests are not counted, a blocked handler is not noticed by the heartbeat watchdog, \
         and when the worker drains, busy keep-alive connections are not closed at a request \
         boundary nor idle ones after the drain grace"
    );
    let heartbeat = child.heartbeat();
    Some(actix_rt::spawn(async move {
        let mut tick = actix_rt::time::interval(heartbeat.interval());
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            heartbeat.beat();
        }
    }))
}

/// Closes this process's copies of the listening sockets while actix's accept thread, paused,
/// leaves them alone ([`HandedOffListener::close_socket`]: each descriptor is atomically replaced
/// by one on `/dev/null`, so the listening socket's reference is dropped now and the accept thread
/// closes only `/dev/null` when it stops). A copy that cannot be closed is logged and closes when
/// the server is dropped.
fn close_listener_copies(handed_off: Vec<HandedOffListener>) {
    let count = handed_off.len();
    for listener in handed_off {
        if let Err(e) = listener.close_socket() {
            tracing::warn!(error = %e, "the listener stays open until the server stops");
        }
    }
    tracing::debug!(listeners = count, "listener copies closed");
}
