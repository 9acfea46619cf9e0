//! The entry point: a [`Prefork`] plus the shape of each worker's tokio runtime.

use std::future::Future;
use std::io;
use std::net::SocketAddr;

use hyper::body::{Body, Incoming};
use hyper::service::Service;
use hyper::{Request, Response};
use prefork_core::{Error, ListenAddr, Prefork};

use crate::worker::Worker;
use crate::BoxError;

/// A prefork server whose workers each serve on their own tokio runtime.
///
/// The master never builds a runtime: it supervises with `prefork-core`'s blocking loop. Each
/// worker, after it is started, builds one runtime (single-threaded by default, see
/// [`Server::threads`]), turns its inherited listeners into [`tokio::net::TcpListener`]s and
/// serves. Every process-model option (workers, reload, health, TLS, hooks) is on the
/// [`Prefork`], reached with [`Server::prefork`].
///
/// ```no_run
/// use std::convert::Infallible;
/// use hyper::{body::Incoming, Request, Response};
/// use hyper::service::service_fn;
///
/// fn main() -> Result<(), prefork_tokio::Error> {
///     let service = service_fn(|_req: Request<Incoming>| async {
///         Ok::<_, Infallible>(Response::new(String::from("Hello, World!")))
///     });
///     prefork_tokio::Server::new("127.0.0.1:8080")
///         .prefork(|p| p.workers(2))
///         .serve(service)
/// }
/// ```
#[derive(Debug)]
#[must_use = "a Server does nothing until `serve`, `serve_with` or `run` is called"]
pub struct Server {
    prefork: Prefork,
    threads: usize,
    max_request_head: usize,
}

/// The former name of [`Server`].
#[deprecated(
    since = "0.2.0",
    note = "renamed to `Server` (`Server::from_prefork(prefork)`)"
)]
pub type Builder = Server;

impl Server {
    /// A server listening on `addr` (`"0.0.0.0:8080"`, `"[::]:8080"`, `"localhost:3000"`, a
    /// `SocketAddr`, `"unix:/run/app.sock"`; port 0 picks a free port shared by every worker),
    /// with [`Prefork`]'s defaults.
    pub fn new(addr: impl Into<ListenAddr>) -> Self {
        Server::from_prefork(Prefork::new(addr))
    }

    /// A server with the process model configured in `prefork`.
    pub fn from_prefork(prefork: Prefork) -> Self {
        Server {
            prefork,
            threads: 1,
            max_request_head: crate::DEFAULT_MAX_BUF_SIZE,
        }
    }

    /// Changes the process-model configuration: `.prefork(|p| p.workers(4).reuseport(true))`.
    pub fn prefork(mut self, configure: impl FnOnce(Prefork) -> Prefork) -> Self {
        self.prefork = configure(self.prefork);
        self
    }

    /// The former name of [`Server::prefork`].
    #[deprecated(since = "0.2.0", note = "renamed to `prefork`")]
    pub fn map_prefork(self, f: impl FnOnce(Prefork) -> Prefork) -> Self {
        self.prefork(f)
    }

    /// Worker threads of each worker's runtime. Default: 1, a `current_thread` runtime (one
    /// process per core is the point of prefork); more builds a multi-threaded runtime with
    /// this many threads.
    ///
    /// `0` is refused by [`Server::run`] (in the master, before any worker starts).
    pub fn threads(mut self, threads: usize) -> Self {
        self.threads = threads;
        self
    }

    /// The largest HTTP/1 request head (request line and headers) that [`Server::serve`] and
    /// [`Server::serve_with`] accept, in bytes; a larger one is answered `431 Request Header
    /// Fields Too Large`. Default: [`DEFAULT_MAX_BUF_SIZE`](crate::DEFAULT_MAX_BUF_SIZE), 8 KiB
    /// (values below 8 KiB count as 8 KiB). Raise it for clients that send large cookies or
    /// tokens: any limit above 8 KiB costs about 4 KiB more memory per idle keep-alive
    /// connection (see the crate docs, *Memory per connection*).
    pub fn max_request_head(mut self, bytes: usize) -> Self {
        self.max_request_head = bytes;
        self
    }

    /// The low-level entry point: supervises in the master; in each worker, builds the runtime
    /// and runs `main(worker)` on it, with the [`Worker`] context (tokio listeners, worker id,
    /// shutdown future, ready report). Use it for any tokio server: raw TCP, tonic, a custom
    /// accept loop, or async set-up before [`Worker::serve`].
    ///
    /// `main` must call [`Worker::ready`] once it accepts ([`Worker::serve`] does), and return
    /// once [`Worker::shutdown`] has completed and its work is drained. An error returned
    /// before `ready` reaches the master, which stops and returns it as
    /// [`Error::WorkerStartup`] ("worker N (pid P) failed to start: ...").
    ///
    /// ```no_run
    /// use tokio::io::AsyncWriteExt;
    ///
    /// fn main() -> Result<(), prefork_tokio::Error> {
    ///     prefork_tokio::Server::new("127.0.0.1:7000").run(|mut worker| async move {
    ///         let listener = worker.take_listeners().remove(0);
    ///         let mut shutdown = worker.shutdown();
    ///         worker.ready()?;
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
    /// Everything [`Prefork::run`] returns, and:
    /// - called inside a tokio runtime (e.g. from `#[tokio::main]`): refused at once, in the
    ///   master and in a worker alike, before anything is bound or started. Call it from a plain
    ///   `fn main()`; do async set-up inside `main`, which runs in the worker's runtime.
    /// - `threads(0)`.
    /// - in a worker, the runtime cannot be built, or `main` fails.
    pub fn run<F, Fut>(self, main: F) -> Result<(), Error>
    where
        F: FnOnce(Worker) -> Fut,
        Fut: Future<Output = io::Result<()>>,
    {
        refuse_nested_runtime()?;
        if self.threads == 0 {
            return Err(Error::Config(
                "threads per worker must be at least 1".into(),
            ));
        }
        let threads = self.threads;
        self.prefork.run(move |worker| {
            let runtime = build_runtime(threads, Some(worker.balance()))?;
            let result = runtime.block_on(async move { main(Worker::from_core(worker)?).await });
            // Whatever is still running (connections past the drain budget, blocking
            // tasks) is abandoned: the process is about to exit.
            runtime.shutdown_background();
            result
        })
    }

    /// Serves `service` (cloned for each connection) with hyper-util's automatic connection
    /// builder: HTTP/1.1 with keep-alive, h2c, and over TLS HTTP/2 or HTTP/1.1 by ALPN. See
    /// [`Worker::serve`] for the accept loop and the graceful shutdown.
    ///
    /// # Errors
    /// As [`Server::run`].
    pub fn serve<S, B>(self, service: S) -> Result<(), Error>
    where
        S: Service<Request<Incoming>, Response = Response<B>> + Clone + Send + 'static,
        S::Future: Send + 'static,
        S::Error: Into<BoxError>,
        B: Body + Send + 'static,
        B::Data: Send,
        B::Error: Into<BoxError>,
    {
        let head = self.max_request_head;
        self.run(move |worker| {
            let http = builder(head, worker.core().header_read_timeout());
            worker.serve_with(http, move |_: SocketAddr| service.clone())
        })
    }

    /// Builds the service in each worker with `factory` (async, once per worker, inside the
    /// worker's runtime, never in the master: open pools and clients there), then serves it as
    /// [`Server::serve`] does.
    ///
    /// ```no_run
    /// use std::convert::Infallible;
    /// use hyper::{body::Incoming, service::service_fn, Request, Response};
    ///
    /// fn main() -> Result<(), prefork_tokio::Error> {
    ///     prefork_tokio::Server::new("127.0.0.1:8080").serve_with(async |worker| {
    ///         let id = worker.id(); // per-worker state is built here
    ///         Ok(service_fn(move |_: Request<Incoming>| async move {
    ///             Ok::<_, Infallible>(Response::new(format!("worker {id}")))
    ///         }))
    ///     })
    /// }
    /// ```
    ///
    /// # Errors
    /// As [`Server::run`]; a factory error in a starting worker stops the server with that
    /// message ([`Error::WorkerStartup`]), with no restart loop.
    pub fn serve_with<F, S, B>(self, factory: F) -> Result<(), Error>
    where
        F: AsyncFnOnce(&Worker) -> Result<S, BoxError>,
        S: Service<Request<Incoming>, Response = Response<B>> + Clone + Send + 'static,
        S::Future: Send + 'static,
        S::Error: Into<BoxError>,
        B: Body + Send + 'static,
        B::Data: Send,
        B::Error: Into<BoxError>,
    {
        let head = self.max_request_head;
        self.run(move |worker| async move {
            let http = builder(head, worker.core().header_read_timeout());
            let service = factory(&worker)
                .await
                .map_err(prefork_core::into_io_error)?;
            worker
                .serve_with(http, move |_: SocketAddr| service.clone())
                .await
        })
    }
}

/// [`http_builder`](crate::http_builder) with a request-head limit (hyper refuses one below
/// 8 KiB) and the worker's header read timeout.
pub(crate) fn builder(
    max_request_head: usize,
    header_read_timeout: Option<std::time::Duration>,
) -> hyper_util::server::conn::auto::Builder<hyper_util::rt::TokioExecutor> {
    let mut http = crate::http_builder();
    http.http1()
        .max_buf_size(max_request_head.max(crate::DEFAULT_MAX_BUF_SIZE))
        .header_read_timeout(header_read_timeout);
    http
}

/// Fails if the calling thread is inside a tokio runtime: building the worker's runtime there
/// would panic, and the master must not run one at all.
pub(crate) fn refuse_nested_runtime() -> Result<(), Error> {
    if tokio::runtime::Handle::try_current().is_ok() {
        return Err(Error::Config(
            "prefork must be started from a plain `fn main()`, not inside a tokio runtime \
             (e.g. `#[tokio::main]`): the master runs no runtime and each worker builds its own; \
             remove `#[tokio::main]` and do async set-up in the worker (the factory or `run` \
             closure runs inside the worker's runtime)"
                .into(),
        ));
    }
    Ok(())
}

fn build_runtime(
    threads: usize,
    balance: Option<prefork_core::balance::Balance>,
) -> io::Result<tokio::runtime::Runtime> {
    let mut builder = if threads == 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        b.worker_threads(threads);
        b
    };
    // The balance table learns when the worker is idle: a worker over its share leaves a new
    // connection to an idle one.
    if let Some(b) = balance.filter(|b| b.is_enabled()) {
        let idle = b.runtime_idle(threads);
        let unpark = idle.clone();
        builder
            .on_thread_park(move || idle.park())
            .on_thread_unpark(move || unpark.unpark());
    }
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

    /// The status a 12 KiB request head gets from a worker serving with `head_limit`.
    fn status_of_a_12k_head(head_limit: usize) -> String {
        use std::io::{Read, Write};
        let (addr, stop, server) = crate::test_server::serve_ok(super::builder(
            head_limit,
            Some(crate::DEFAULT_HEADER_READ_TIMEOUT),
        ));
        let mut c = std::net::TcpStream::connect(addr).unwrap();
        c.set_read_timeout(Some(std::time::Duration::from_secs(30)))
            .unwrap();
        let cookie = "a".repeat(12 * 1024);
        write!(
            c,
            "GET / HTTP/1.1\r\nhost: x\r\ncookie: {cookie}\r\nconnection: close\r\n\r\n"
        )
        .unwrap();
        let mut answer = String::new();
        let _ = c.read_to_string(&mut answer);
        stop.trigger(prefork_core::ShutdownReason::Requested);
        server.join().unwrap().unwrap();
        answer.lines().next().unwrap_or_default().to_owned()
    }

    #[test]
    fn max_request_head_raises_the_8k_default() {
        assert!(status_of_a_12k_head(0).contains(" 431 "));
        assert!(status_of_a_12k_head(crate::DEFAULT_MAX_BUF_SIZE).contains(" 431 "));
        assert!(status_of_a_12k_head(64 * 1024).contains(" 200 "));
    }

    fn builder() -> Server {
        Server::new("127.0.0.1:0").prefork(|p| p.workers(1))
    }

    #[test]
    fn zero_threads_is_refused_before_anything_starts() {
        let err = builder()
            .threads(0)
            .run(|_| async { unreachable!("nothing is served") })
            .unwrap_err();
        assert!(matches!(err, Error::Config(_)), "{err}");
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
