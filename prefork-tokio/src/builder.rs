//! The entry point: a [`Prefork`] plus the shape of each worker's tokio runtime.

use std::future::Future;
use std::io;
use std::net::SocketAddr;

use hyper::body::{Body, Incoming};
use hyper::service::Service;
use hyper::{Request, Response};
use prefork_core::Prefork;

use crate::child::TokioChild;
use crate::BoxError;

/// Runs a [`Prefork`] server whose workers each serve on their own tokio runtime.
///
/// The master never builds a runtime: it supervises with `prefork-core`'s blocking loop. Each
/// worker, after it is started, builds one runtime (single-threaded by default, see
/// [`Builder::threads`]), turns its inherited listeners into [`tokio::net::TcpListener`]s and
/// serves.
///
/// ```no_run
/// use std::convert::Infallible;
/// use hyper::{body::Incoming, Request, Response};
/// use hyper::service::service_fn;
/// use prefork_tokio::prefork_core::Prefork;
///
/// fn main() -> std::io::Result<()> {
///     let service = service_fn(|_req: Request<Incoming>| async {
///         Ok::<_, Infallible>(Response::new(String::from("Hello, World!")))
///     });
///     prefork_tokio::Builder::new(Prefork::new("127.0.0.1:8080").workers(2)).serve(service)
/// }
/// ```
#[derive(Debug)]
pub struct Builder {
    prefork: Prefork,
    threads: usize,
}

impl Builder {
    /// Serves with the process model configured in `prefork` (address, workers, reuseport,
    /// shutdown timeout, recovery budget, hooks, TLS).
    pub fn new(prefork: Prefork) -> Self {
        Builder {
            prefork,
            threads: 1,
        }
    }

    /// Worker threads of each worker's runtime. Default: 1, a `current_thread` runtime (one
    /// process per core is the point of prefork); more builds a multi-threaded runtime with
    /// this many threads.
    ///
    /// `0` is refused by [`Builder::run`] (in the master, before any worker starts).
    pub fn threads(mut self, threads: usize) -> Self {
        self.threads = threads;
        self
    }

    /// Changes the process-model configuration, e.g. `.map_prefork(|p| p.workers(4))`.
    pub fn map_prefork(mut self, f: impl FnOnce(Prefork) -> Prefork) -> Self {
        self.prefork = f(self.prefork);
        self
    }

    /// The low-level entry point: supervises in the master; in each worker, builds the runtime
    /// and runs `serve(child)` on it, with the [`TokioChild`] context (tokio listeners, worker
    /// id, shutdown future, ready report). Use it for any tokio server: raw TCP, tonic, a custom
    /// accept loop, or async set-up before [`TokioChild::serve`].
    ///
    /// `serve` must call [`TokioChild::ready`] once it accepts ([`TokioChild::serve`] does), and
    /// return once [`TokioChild::shutdown`] has completed and its work is drained. An error
    /// returned before `ready` reaches the master, which stops and returns it as
    /// [`prefork_core::Error::ChildStartup`] ("worker N (pid P) failed to start: ...").
    ///
    /// ```no_run
    /// use prefork_tokio::prefork_core::Prefork;
    /// use tokio::io::AsyncWriteExt;
    ///
    /// fn main() -> std::io::Result<()> {
    ///     prefork_tokio::Builder::new(Prefork::new("127.0.0.1:7000")).run(|mut child| async move {
    ///         let listener = child.take_listeners().remove(0);
    ///         let mut shutdown = child.shutdown();
    ///         child.ready()?;
    ///         loop {
    ///             tokio::select! {
    ///                 _ = &mut shutdown => return Ok(()),
    ///                 accepted = listener.accept() => {
    ///                     let Ok((mut stream, _)) = accepted else { continue };
    ///                     tokio::spawn(async move { let _ = stream.write_all(b"hi\n").await; });
    ///                 }
    ///             }
    ///         }
    ///     })
    /// }
    /// ```
    ///
    /// # Errors
    /// Everything [`Prefork::run`] returns, converted to [`io::Error`], and:
    /// - called inside a tokio runtime (e.g. from `#[tokio::main]`): refused at once, in the
    ///   master and in a worker alike, before anything is bound or started. Call it from a plain
    ///   `fn main()`; do async set-up inside `serve`, which runs in the worker's runtime.
    /// - `threads(0)`.
    /// - in a worker, the runtime cannot be built, or `serve` fails.
    pub fn run<F, Fut>(self, serve: F) -> io::Result<()>
    where
        F: FnOnce(TokioChild) -> Fut,
        Fut: Future<Output = io::Result<()>>,
    {
        refuse_nested_runtime()?;
        if self.threads == 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "invalid prefork configuration: threads per worker must be at least 1",
            ));
        }
        let threads = self.threads;
        self.prefork
            .run(move |child| {
                let runtime = build_runtime(threads)?;
                let result = runtime.block_on(async move {
                    let child = TokioChild::from_core(child)?;
                    serve(child).await
                });
                // Whatever is still running (connections past the drain budget, blocking
                // tasks) is abandoned: the process is about to exit.
                runtime.shutdown_background();
                result
            })
            .map_err(io::Error::from)
    }

    /// Serves `service` (cloned for each connection) with hyper-util's automatic connection
    /// builder: HTTP/1.1 with keep-alive, h2c, and over TLS HTTP/2 or HTTP/1.1 by ALPN. See
    /// [`TokioChild::serve`] for the accept loop and the graceful shutdown.
    ///
    /// # Errors
    /// As [`Builder::run`].
    pub fn serve<S, B>(self, service: S) -> io::Result<()>
    where
        S: Service<Request<Incoming>, Response = Response<B>> + Clone + Send + 'static,
        S::Future: Send + 'static,
        S::Error: Into<BoxError>,
        B: Body + Send + 'static,
        B::Data: Send,
        B::Error: Into<BoxError>,
    {
        self.run(move |child| child.serve(move |_: SocketAddr| service.clone()))
    }
}

/// Fails if the calling thread is inside a tokio runtime: building the worker's runtime there
/// would panic, and the master must not run one at all.
pub(crate) fn refuse_nested_runtime() -> io::Result<()> {
    if tokio::runtime::Handle::try_current().is_ok() {
        return Err(io::Error::other(
            "prefork must be started from a plain `fn main()`, not inside a tokio runtime \
             (e.g. `#[tokio::main]`): the master runs no runtime and each worker builds its own; \
             remove `#[tokio::main]` and do async set-up in the worker (the factory or `run` \
             closure runs inside the worker's runtime)",
        ));
    }
    Ok(())
}

fn build_runtime(threads: usize) -> io::Result<tokio::runtime::Runtime> {
    let mut builder = if threads == 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        b.worker_threads(threads);
        b
    };
    builder.enable_all().build().map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("building the worker's tokio runtime: {e}"),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn builder() -> Builder {
        Builder::new(Prefork::new("127.0.0.1:0").workers(1))
    }

    #[test]
    fn zero_threads_is_refused_before_anything_starts() {
        let err = builder()
            .threads(0)
            .run(|_| async { unreachable!("nothing is served") })
            .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
        assert!(err
            .to_string()
            .contains("threads per worker must be at least 1"));
    }

    #[test]
    fn inside_a_runtime_is_refused_with_the_fix() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let err = runtime
            .block_on(async { builder().run(|_| async { unreachable!("nothing is served") }) })
            .unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("not inside a tokio runtime"), "{msg}");
        assert!(msg.contains("plain `fn main()`"), "{msg}");
    }
}
