//! The per-process executor: one `smol::Executor` driven by the calling thread and, on request,
//! by more threads of its own.

use std::future::Future;
use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Wake, Waker};
use std::thread::JoinHandle;

use prefork_core::balance::RuntimeIdle;
use smol::channel::Sender;
use smol::Executor;

/// The executor every task of a worker runs on.
pub(crate) type SharedExecutor = Arc<Executor<'static>>;

/// Extra threads that run the executor until they are told to stop; joined on drop.
struct Threads {
    stop: Option<Sender<()>>,
    handles: Vec<JoinHandle<()>>,
}

impl Drop for Threads {
    fn drop(&mut self) {
        // Closing the channel ends every thread's `run`.
        drop(self.stop.take());
        for handle in self.handles.drain(..) {
            let _ = handle.join();
        }
    }
}

pub(crate) fn check_threads(threads: usize) -> io::Result<()> {
    if threads == 0 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "executor threads must be at least 1",
        ));
    }
    Ok(())
}

/// Runs `f`'s future on a new executor driven by this thread plus `threads - 1` more, and returns
/// its output. Tasks still running when the future completes are dropped with the executor.
pub(crate) fn block_on<F, Fut, T>(threads: usize, f: F) -> io::Result<T>
where
    F: FnOnce(SharedExecutor) -> Fut,
    Fut: Future<Output = io::Result<T>>,
{
    block_on_reporting(threads, None, f)
}

/// What [`drive`] tells when its thread blocks for lack of work and when it runs again:
/// [`RuntimeIdle`] (the balance table), or a test's counter.
trait ParkHooks {
    fn park(&self);
    fn unpark(&self);
}

impl ParkHooks for RuntimeIdle {
    fn park(&self) {
        RuntimeIdle::park(self);
    }

    fn unpark(&self) {
        RuntimeIdle::unpark(self);
    }
}

/// The waker `drive` polls with: wakes the thread's `block_on` and records that it did, so a
/// poll that ends `Pending` after waking itself (the executor's cooperative yield after every
/// 200 tasks, or a wake from another thread during the poll) is not taken for idle: `block_on`
/// polls again at once instead of blocking.
struct Woken {
    woken: AtomicBool,
    inner: Waker,
}

impl Wake for Woken {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.woken.store(true, Ordering::Relaxed);
        self.inner.wake_by_ref();
    }
}

/// Runs `fut` on this thread, telling `idle` (if any) when the thread is about to block for
/// lack of work (the future is pending and nothing woke it meanwhile) and when it runs again.
fn drive<T>(fut: impl Future<Output = T>, idle: Option<impl ParkHooks>) -> T {
    let Some(idle) = idle else {
        return async_io::block_on(fut);
    };
    let mut fut = std::pin::pin!(fut);
    let mut parked = false;
    let mut waker: Option<(Arc<Woken>, Waker)> = None;
    async_io::block_on(std::future::poll_fn(move |cx| {
        if std::mem::take(&mut parked) {
            idle.unpark();
        }
        let (woken, waker) = match &waker {
            Some((w, _)) if w.inner.will_wake(cx.waker()) => waker.as_ref().unwrap(),
            _ => {
                let w = Arc::new(Woken {
                    woken: AtomicBool::new(false),
                    inner: cx.waker().clone(),
                });
                waker.insert((w.clone(), Waker::from(w)))
            }
        };
        woken.woken.store(false, Ordering::Relaxed);
        let r = fut.as_mut().poll(&mut Context::from_waker(waker));
        if r.is_pending() && !woken.woken.load(Ordering::Relaxed) {
            idle.park();
            parked = true;
        }
        r
    }))
}

/// [`block_on`], with every executor thread reporting to `idle` when it parks and unparks (the
/// balance table's view of an idle worker).
pub(crate) fn block_on_reporting<F, Fut, T>(
    threads: usize,
    idle: Option<RuntimeIdle>,
    f: F,
) -> io::Result<T>
where
    F: FnOnce(SharedExecutor) -> Fut,
    Fut: Future<Output = io::Result<T>>,
{
    check_threads(threads)?;
    let ex: SharedExecutor = Arc::new(Executor::new());
    let (stop, stopped) = smol::channel::bounded::<()>(1);
    let mut extra = Threads {
        stop: Some(stop),
        handles: Vec::with_capacity(threads - 1),
    };
    for i in 1..threads {
        let ex = ex.clone();
        let stopped = stopped.clone();
        let idle = idle.clone();
        let handle = std::thread::Builder::new()
            .name(format!("prefork-smol-{i}"))
            .spawn(move || {
                let _ = drive(ex.run(stopped.recv()), idle);
            })
            .map_err(|e| {
                io::Error::new(e.kind(), format!("cannot start executor thread {i}: {e}"))
            })?;
        extra.handles.push(handle);
    }
    let result = drive(ex.run(f(ex.clone())), idle);
    drop(extra);
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;
    use std::sync::Mutex;

    /// Counts parks and unparks.
    #[derive(Clone, Default)]
    struct Count(Arc<Counts>);

    #[derive(Default)]
    struct Counts {
        parks: std::sync::atomic::AtomicUsize,
        unparks: std::sync::atomic::AtomicUsize,
    }

    impl ParkHooks for Count {
        fn park(&self) {
            self.0.parks.fetch_add(1, Ordering::Relaxed);
        }
        fn unpark(&self) {
            self.0.unparks.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// A thread that yields (a future that wakes itself before returning `Pending`, as the
    /// executor does every 200 tasks) is busy, not idle; one that waits for a timer is idle.
    #[test]
    fn a_self_waking_poll_is_not_idle_and_a_wait_is() {
        let count = Count::default();
        drive(
            async {
                for _ in 0..1000 {
                    smol::future::yield_now().await;
                }
            },
            Some(count.clone()),
        );
        assert_eq!(
            count.0.parks.load(Ordering::Relaxed),
            0,
            "1000 yields, no park"
        );
        drive(
            async_io::Timer::after(std::time::Duration::from_millis(20)),
            Some(count.clone()),
        );
        assert_eq!(
            count.0.parks.load(Ordering::Relaxed),
            1,
            "a wait parks once"
        );
        assert_eq!(
            count.0.unparks.load(Ordering::Relaxed),
            1,
            "and unparks once"
        );
    }

    #[test]
    fn zero_threads_is_refused() {
        let e = block_on(0, |_| async { Ok(()) }).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
        assert!(e.to_string().contains("at least 1"), "{e}");
    }

    #[test]
    fn tasks_run_on_every_thread() {
        // Each task blocks its thread briefly, so with 3 threads and 3 concurrent tasks every
        // thread ends up running one (bounded: at most 50 attempts).
        let seen = Arc::new(Mutex::new(BTreeSet::new()));
        let s = seen.clone();
        block_on(3, move |ex| async move {
            for _ in 0..50 {
                let tasks: Vec<_> = (0..3)
                    .map(|_| {
                        let s = s.clone();
                        ex.spawn(async move {
                            std::thread::sleep(std::time::Duration::from_millis(20));
                            s.lock()
                                .unwrap()
                                .insert(format!("{:?}", std::thread::current().id()));
                        })
                    })
                    .collect();
                for t in tasks {
                    t.await;
                }
                if s.lock().unwrap().len() == 3 {
                    break;
                }
            }
            Ok(())
        })
        .unwrap();
        assert_eq!(seen.lock().unwrap().len(), 3);
    }
}
