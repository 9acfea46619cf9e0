//! [`serve`] and [`Server::serve`]: an actix-web app factory served by prefork's own accept loop.
//!
//! Unlike [`run_prefork`](crate::HttpServerExt::run_prefork), which hands the listeners to
//! actix-server's accept thread, here each actix worker thread (an actix `Arbiter`) accepts for
//! itself, as the other adapters do, and hands each connection to actix-http's `HttpService`
//! built from the app factory. That gives actix what actix-server cannot:
//! - **balanced accept per connection** ([`prefork_core::balance`]): a worker over its share
//!   yields before it accepts, so a burst opened at once spreads over the workers;
//! - **plain HTTP on a TLS port is answered `400`** (HTTPS expected), before the handshake;
//! - a connection counts (for the balance and the drain) from its accept, not from the end of
//!   its TLS handshake;
//! - the [`Prefork`](prefork_core::Prefork)'s timeouts apply, as in the other adapters.

use std::fmt;
use std::future::poll_fn;
use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsFd, BorrowedFd};
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use actix_http::{HttpService, KeepAlive, Protocol, Request};
use actix_service::{map_config, IntoServiceFactory, Service, ServiceFactory, ServiceFactoryExt};
use actix_web::body::MessageBody;
use actix_web::dev::{AppConfig, Extensions, Response};
use actix_web::rt::net::{TcpListener, TcpStream, UnixListener, UnixStream};
use prefork_core::accept::{is_connection_error, log_accept_error, socket_name};
use prefork_core::{Drain, DrainConn, ListenAddr, Worker};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::config::{OnConnect, Server};
use crate::idle::ConnState;
use crate::middleware::{PreforkConn, WorkerState};

/// How long an accept loop pauses after an error that is not the connection's fault (EMFILE,
/// ENFILE, ENOBUFS, ENOMEM): long enough not to spin, short enough to resume at once when a
/// descriptor frees up.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// How stale actix-http's clock can be: its timers count from an `Instant` it refreshes every
/// 500 ms (its date service), so a deadline can fall up to this much before the timeout. It is
/// added to the `Prefork`'s timeouts, which are minimums: an idle connection is never closed
/// before the keep-alive timeout, and at most this much after it.
const ACTIX_CLOCK_STEP: Duration = Duration::from_millis(500);

/// A `Prefork` timeout as actix takes it: plus [`ACTIX_CLOCK_STEP`], and at most a year (actix
/// adds it to an `Instant`, which panics on overflow).
fn actix_timeout(timeout: Duration) -> Duration {
    const YEAR: Duration = Duration::from_secs(365 * 24 * 3600);
    timeout.min(YEAR) + ACTIX_CLOCK_STEP
}

/// How long a connection that is closing may take to shut down (actix-web's `HttpServer`
/// default for `client_disconnect_timeout`).
const DISCONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// Serves an actix-web app as a prefork server on `addr`, with [`Prefork`](prefork_core::Prefork)'s
/// defaults: one worker process per CPU, each running one actix worker thread. Blocks until the
/// server has stopped (SIGTERM or SIGINT to the master).
///
/// `factory` is actix's app factory, as `HttpServer::new` takes it (`|| App::new()...`); it runs
/// in each worker, once per actix worker thread, never in the master. Add
/// [`PreforkMiddleware`](crate::PreforkMiddleware) to the app.
///
/// ```no_run
/// use actix_web::{web, App};
/// use prefork_actix::PreforkMiddleware;
///
/// fn main() -> Result<(), prefork_actix::Error> {
///     prefork_actix::serve(
///         || App::new().route("/", web::get().to(|| async { "Hello" })).wrap(PreforkMiddleware),
///         "127.0.0.1:8080",
///     )
/// }
/// ```
///
/// # Errors
/// As [`Server::serve`].
pub fn serve<F, I, S, B>(factory: F, addr: impl Into<ListenAddr>) -> Result<(), prefork_core::Error>
where
    F: Fn() -> I + Send + Clone + 'static,
    I: IntoServiceFactory<S, Request> + 'static,
    S: ServiceFactory<Request, Config = AppConfig> + 'static,
    S::Error: Into<actix_web::Error> + 'static,
    S::InitError: fmt::Debug,
    S::Response: Into<Response<B>> + 'static,
    <S::Service as Service<Request>>::Future: 'static,
    S::Service: 'static,
    B: MessageBody + 'static,
{
    Server::new(addr).serve(factory)
}

/// Serves an actix-web app over HTTPS on `addr` (HTTP/2 or HTTP/1.1 by ALPN), with the
/// certificate chain and private key of `files`, loaded and checked by the master before any
/// worker starts; otherwise as [`serve`]. Plain HTTP sent to the port is answered `400`.
///
/// ```no_run
/// use actix_web::{web, App};
/// use prefork_actix::{PemFiles, PreforkMiddleware};
///
/// fn main() -> Result<(), prefork_actix::Error> {
///     prefork_actix::serve_tls(
///         || App::new().route("/", web::get().to(|| async { "Hello" })).wrap(PreforkMiddleware),
///         "0.0.0.0:8443",
///         PemFiles { cert_chain: "cert.pem".into(), private_key: "key.pem".into() },
///     )
/// }
/// ```
///
/// For embedded PEM bytes or your own rustls configuration, use
/// [`Prefork::tls`](prefork_core::Prefork::tls) with a [`TlsConfig`](prefork_core::TlsConfig)
/// (`Server::new(addr).prefork(|p| p.tls(config)).serve(factory)`).
///
/// # Errors
/// As [`serve`], and a TLS error naming the file ("TLS: key.pem: no private key found").
#[cfg(feature = "tls")]
pub fn serve_tls<F, I, S, B>(
    factory: F,
    addr: impl Into<ListenAddr>,
    files: prefork_core::PemFiles,
) -> Result<(), prefork_core::Error>
where
    F: Fn() -> I + Send + Clone + 'static,
    I: IntoServiceFactory<S, Request> + 'static,
    S: ServiceFactory<Request, Config = AppConfig> + 'static,
    S::Error: Into<actix_web::Error> + 'static,
    S::InitError: fmt::Debug,
    S::Response: Into<Response<B>> + 'static,
    <S::Service as Service<Request>>::Future: 'static,
    S::Service: 'static,
    B: MessageBody + 'static,
{
    Server::new(addr)
        .prefork(|p| p.tls(prefork_core::TlsConfig::from_pem_files(files)))
        .serve(factory)
}

impl Server {
    /// Serves actix-web's app factory (`|| App::new()...`, as `HttpServer::new` takes it) with
    /// these settings: supervises in the master, serves in a worker. Blocks until the server has
    /// stopped; not a future.
    ///
    /// **In the master** this is [`Prefork::run`](prefork_core::Prefork::run): bind, start the
    /// workers, supervise them until SIGTERM/SIGINT, return when none is left. The factory is
    /// never called there and no async runtime is started.
    ///
    /// **In a worker** each of [`threads`](Server::threads) actix worker threads builds the app
    /// and accepts on the inherited listeners itself (balanced with the other workers per
    /// connection), answers plain HTTP on a TLS port with `400`, and serves each connection
    /// with actix-http (HTTP/1.1; HTTP/2 by ALPN over TLS). The worker reports ready once every
    /// thread has built its app; a factory that fails stops the start (the master's error,
    /// without a restart loop). On the worker's shutdown notification it drains without loss
    /// (see the [crate docs](crate#the-loss-free-drain)).
    ///
    /// The [`Prefork`](prefork_core::Prefork)'s timeouts apply:
    /// [`keepalive_timeout`](prefork_core::Prefork::keepalive_timeout) (75 s; `None`: no idle
    /// timeout) is actix's `keep_alive`;
    /// [`header_read_timeout`](prefork_core::Prefork::header_read_timeout) (30 s; `None`: off)
    /// is actix's `client_request_timeout`, which actix counts from the accept for a
    /// connection's first request and from the end of the previous response for the next ones
    /// (each plus 500 ms, the step of the clock actix's timers read, so neither fires early);
    /// the TLS handshake timeout is [`TlsConfig::handshake_timeout`](prefork_core::TlsConfig::handshake_timeout).
    ///
    /// [`Server::on_connect`]'s callback sees the connection as
    /// `actix_web::rt::net::TcpStream`, `tokio_rustls::server::TlsStream<TcpStream>` (TLS; the
    /// crate re-exports [`tokio_rustls`](crate::tokio_rustls)), or `actix_web::rt::net::UnixStream`.
    ///
    /// # Errors
    /// - [`Error::Config`](prefork_core::Error::Config): `threads` is 0, before anything starts.
    /// - Every error of [`Prefork::run`](prefork_core::Prefork::run): zero workers, a bad address,
    ///   a port in use, a bad certificate or key, a worker that failed to start (e.g. its app
    ///   factory failed), too many unexpected worker exits, a failed hook.
    pub fn serve<F, I, S, B>(self, factory: F) -> Result<(), prefork_core::Error>
    where
        F: Fn() -> I + Send + Clone + 'static,
        I: IntoServiceFactory<S, Request> + 'static,
        S: ServiceFactory<Request, Config = AppConfig> + 'static,
        S::Error: Into<actix_web::Error> + 'static,
        S::InitError: fmt::Debug,
        S::Response: Into<Response<B>> + 'static,
        <S::Service as Service<Request>>::Future: 'static,
        S::Service: 'static,
        B: MessageBody + 'static,
    {
        let Server {
            prefork,
            threads,
            on_connect,
        } = self;
        crate::config::check_threads(threads)?;
        // The one place that knows the app's types: the rest of the worker is not generic.
        let start_thread: StartThread = Box::new(move |shared, listeners, built| {
            let factory = factory.clone();
            Box::new(move || {
                actix_rt::spawn(serve_thread(shared, listeners, factory, built));
            })
        });
        prefork.run(move |child| {
            crate::worker::on_a_thread_outside_any_runtime(move || {
                run_worker(child, start_thread, threads, on_connect)
            })
        })?;
        Ok(())
    }
}

/// Where an actix worker thread says whether it built its app.
type Built = tokio::sync::mpsc::UnboundedSender<io::Result<()>>;

/// Makes what an actix worker thread (an arbiter) runs: build the app, then accept and serve
/// ([`serve_thread`]).
type StartThread = Box<dyn FnMut(Arc<Shared>, Listeners, Built) -> Box<dyn FnOnce() + Send> + Send>;

/// What every serving thread of a worker shares.
struct Shared {
    drain: Drain,
    balance: prefork_core::balance::Balance,
    keep_alive: KeepAlive,
    request_timeout: Duration,
    on_connect: Option<OnConnect>,
    #[cfg(feature = "tls")]
    tls: Option<crate::tls::Tls>,
}

/// One serving thread's copies of the listeners.
struct Listeners {
    tcp: Vec<std::net::TcpListener>,
    unix: Vec<std::os::unix::net::UnixListener>,
}

impl Listeners {
    fn try_clone(&self) -> io::Result<Listeners> {
        Ok(Listeners {
            tcp: self
                .tcp
                .iter()
                .map(|l| l.try_clone())
                .collect::<Result<_, _>>()?,
            unix: self
                .unix
                .iter()
                .map(|l| l.try_clone())
                .collect::<Result<_, _>>()?,
        })
    }
}

fn run_worker(
    mut child: Worker,
    start_thread: StartThread,
    threads: usize,
    on_connect: Option<OnConnect>,
) -> io::Result<()> {
    crate::ext::check_tls_feature(&child)?;
    let state = WorkerState::install(Drain::for_worker(&child), Some(child.heartbeat()), threads);
    let shared = Arc::new(Shared {
        drain: state.drain.clone(),
        balance: child.balance(),
        keep_alive: child
            .keepalive_timeout()
            .map_or(KeepAlive::Os, |t| KeepAlive::Timeout(actix_timeout(t))),
        request_timeout: child
            .header_read_timeout()
            .map_or(Duration::ZERO, actix_timeout),
        on_connect,
        #[cfg(feature = "tls")]
        tls: child
            .tls_config()
            .map(|config| crate::tls::Tls::new(config, child.tls_handshake_timeout())),
    });
    let listeners = Listeners {
        tcp: child.take_listeners(),
        unix: child.take_unix_listeners(),
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| io::Error::new(e.kind(), format!("starting the async runtime: {e}")))?;
    actix_rt::System::with_tokio_rt(|| runtime).block_on(coordinate(
        &child,
        &state,
        shared,
        listeners,
        start_thread,
        threads,
    ))
}

/// Starts `threads` actix worker threads (arbiters), each building the app and accepting on its
/// copies of the listeners; reports ready once every one has built its app; on the shutdown
/// notification (each thread stops accepting by itself and closes its copies), waits until
/// every connection has ended, or for [`Worker::drain_timeout`] exactly.
async fn coordinate(
    child: &Worker,
    state: &Arc<WorkerState>,
    shared: Arc<Shared>,
    listeners: Listeners,
    mut start_thread: StartThread,
    threads: usize,
) -> io::Result<()> {
    let (built_tx, mut built_rx) = tokio::sync::mpsc::unbounded_channel();
    let mut arbiters = Vec::with_capacity(threads);
    let stop_all = |arbiters: &[actix_rt::Arbiter]| {
        for arbiter in arbiters {
            arbiter.stop();
        }
    };
    for _ in 0..threads {
        let copies = listeners.try_clone()?;
        let arbiter = actix_rt::Arbiter::new();
        arbiter.spawn_fn(start_thread(shared.clone(), copies, built_tx.clone()));
        arbiters.push(arbiter);
    }
    // Each thread holds its own copies now: the drain closes them all.
    drop(listeners);
    drop(built_tx);
    for _ in 0..threads {
        match built_rx.recv().await {
            Some(Ok(())) => {}
            Some(Err(e)) => {
                stop_all(&arbiters);
                return Err(e);
            }
            None => {
                stop_all(&arbiters);
                return Err(io::Error::other(
                    "an actix worker thread ended while starting",
                ));
            }
        }
    }
    let fallback_heartbeat = crate::worker::fallback_heartbeat(child, state);
    if let Err(e) = child.ready() {
        // The master is gone: the shutdown notification completes as well.
        tracing::warn!(error = %e, "cannot report ready to the master");
    }
    let reason = child.shutdown().await;
    let deadline = crate::worker::start_drain(child, &state.drain, reason);
    crate::worker::drained(child, &state.drain, deadline).await;
    if let Some(task) = fallback_heartbeat {
        task.abort();
    }
    stop_all(&arbiters);
    Ok(())
}

/// One actix worker thread: builds the app for each listener (as actix-web's `HttpServer` does:
/// an `AppConfig` per listener, with its address and scheme), says so on `built`, then accepts
/// until the worker's shutdown notification and closes its copies of the listeners. Its
/// connections go on being served until the process ends.
async fn serve_thread<F, I, S, B>(
    shared: Arc<Shared>,
    listeners: Listeners,
    factory: F,
    built: Built,
) where
    F: Fn() -> I + Send + Clone + 'static,
    I: IntoServiceFactory<S, Request> + 'static,
    S: ServiceFactory<Request, Config = AppConfig> + 'static,
    S::Error: Into<actix_web::Error> + 'static,
    S::InitError: fmt::Debug,
    S::Response: Into<Response<B>> + 'static,
    <S::Service as Service<Request>>::Future: 'static,
    S::Service: 'static,
    B: MessageBody + 'static,
{
    #[cfg(feature = "tls")]
    let secure = shared.tls.is_some();
    #[cfg(not(feature = "tls"))]
    let secure = false;
    let mut accepting = Vec::new();
    let mut handlers = Vec::new();
    let tcp = listeners.tcp.into_iter().map(|l| {
        let addr = l.local_addr()?;
        l.set_nonblocking(true)?;
        io::Result::Ok((addr, secure, AnyListener::Tcp(TcpListener::from_std(l)?)))
    });
    let unix = listeners.unix.into_iter().map(|l| {
        l.set_nonblocking(true)?;
        // actix-web's `HttpServer::listen_uds` gives a Unix socket's app this address.
        Ok((
            UNIX_APP_ADDR,
            false,
            AnyListener::Unix(UnixListener::from_std(l)?),
        ))
    });
    for listener in tcp.chain(unix) {
        let result = async {
            let (addr, secure, accept) = listener?;
            let config = AppConfig::__priv_test_new(secure, addr.to_string(), addr);
            let shared_ = shared.clone();
            let mut http = HttpService::build()
                .keep_alive(shared.keep_alive)
                .client_request_timeout(shared.request_timeout)
                .client_disconnect_timeout(DISCONNECT_TIMEOUT)
                .local_addr(addr)
                .on_connect_ext(move |io: &Io, data: &mut Extensions| {
                    data.insert(PreforkConn {
                        drain: io.conn.clone(),
                        idle: io.idle.clone(),
                    });
                    if let Some(user) = &shared_.on_connect {
                        user(io.stream.as_any(), data);
                    }
                });
            if secure {
                http = http.secure();
            }
            let app = factory()
                .into_factory()
                .map_err(|e| e.into().error_response());
            let service = http.finish(map_config(app, move |()| config.clone()));
            let handler =
                ServiceFactory::<(Io, Protocol, Option<SocketAddr>)>::new_service(&service, ())
                    .await
                    .map_err(|()| {
                        io::Error::other(format!(
                            "the app factory failed on {} (its error is logged above)",
                            accept.describe()
                        ))
                    })?;
            io::Result::Ok((accept, Rc::new(handler)))
        }
        .await;
        match result {
            Ok((accept, handler)) => {
                accepting.push(accept);
                handlers.push(handler);
            }
            Err(e) => {
                let _ = built.send(Err(e));
                return;
            }
        }
    }
    let _ = built.send(Ok(()));
    drop(built);

    let addrs: Vec<String> = accepting.iter().map(AnyListener::describe).collect();
    let mut shutdown = shared.drain.shutdown();
    let balance = shared.balance.clone();
    let mut next = 0;
    loop {
        if !balance.may_accept() {
            tokio::select! {
                biased;
                _ = &mut shutdown => break,
                () = balance.admit(actix_rt::task::yield_now) => {}
            }
        }
        let accept = balance.parked(poll_fn(|cx| poll_accept_any(&accepting, &mut next, cx)));
        let accepted = tokio::select! {
            biased;
            _ = &mut shutdown => break,
            accepted = accept => accepted,
        };
        match accepted {
            Ok((index, stream, peer)) => {
                let conn = shared.drain.connection();
                spawn_connection(&shared, handlers[index].clone(), stream, peer, conn);
            }
            Err(e) if is_connection_error(&e) => {
                tracing::debug!(error = %e, "accept: connection error");
            }
            Err(e) => {
                log_accept_error(&addrs.join(","), &e, ACCEPT_BACKOFF);
                tokio::select! {
                    biased;
                    _ = &mut shutdown => break,
                    () = actix_rt::time::sleep(ACCEPT_BACKOFF) => {}
                }
            }
        }
    }
    // This thread's copies of the listeners close here: in the shared-socket mode the queue
    // stays open for the other workers; on a final stop, with every copy closed, new
    // connections are refused instead of hanging.
    drop(accepting);
}

/// The address a Unix socket's app sees as its local address (actix-web's `HttpServer` uses
/// the same).
const UNIX_APP_ADDR: SocketAddr = SocketAddr::V4(std::net::SocketAddrV4::new(
    std::net::Ipv4Addr::LOCALHOST,
    8080,
));

/// Starts one connection's task: on a TLS port the handshake (or the `400` to plain HTTP) in a
/// task of its own, which then starts the connection's; otherwise the connection's at once. A
/// task keeps the room of its largest state for its whole life: a plain connection's task holds
/// no room for a handshake, a TLS connection's none for the handshake it finished.
fn spawn_connection<H>(
    shared: &Arc<Shared>,
    handler: Rc<H>,
    stream: AnyStream,
    peer: Option<SocketAddr>,
    conn: DrainConn,
) where
    H: Service<(Io, Protocol, Option<SocketAddr>), Response = ()> + 'static,
    H::Error: fmt::Debug,
{
    let tcp = match stream {
        AnyStream::Tcp(tcp) => tcp,
        AnyStream::Unix(unix) => {
            actix_rt::spawn(dispatch(
                handler,
                Stream::Unix(unix),
                Protocol::Http1,
                peer,
                conn,
            ));
            return;
        }
    };
    if let Err(e) = tcp.set_nodelay(true) {
        tracing::debug!(error = %e, ?peer, "TCP_NODELAY");
    }
    #[cfg(feature = "tls")]
    if let (Some(_), Some(peer)) = (&shared.tls, peer) {
        let shared = shared.clone();
        actix_rt::spawn(async move {
            let Some(tls) = &shared.tls else { return };
            if let Some((tls, protocol)) = tls.handshake(tcp, peer).await {
                let stream = Stream::Tls(Box::new(tls));
                actix_rt::spawn(dispatch(handler, stream, protocol, Some(peer), conn));
            }
        });
        return;
    }
    #[cfg(not(feature = "tls"))]
    let _ = shared;
    actix_rt::spawn(dispatch(
        handler,
        Stream::Tcp(tcp),
        Protocol::Http1,
        peer,
        conn,
    ));
}

/// One connection served by actix-http's dispatcher, to its end.
async fn dispatch<H>(
    handler: Rc<H>,
    stream: Stream,
    protocol: Protocol,
    peer: Option<SocketAddr>,
    conn: DrainConn,
) where
    H: Service<(Io, Protocol, Option<SocketAddr>), Response = ()>,
    H::Error: fmt::Debug,
{
    let idle = crate::idle::register_socket(Some(stream.socket()));
    let io = Io { stream, conn, idle };
    if let Err(e) = poll_fn(|cx| handler.poll_ready(cx)).await {
        tracing::debug!(?peer, error = ?e, "the app is not ready: connection closed");
        return;
    }
    if let Err(e) = handler.call((io, protocol, peer)).await {
        tracing::debug!(?peer, error = ?e, "connection ended with an error");
    }
}

/// A listener of either kind, on the thread's runtime.
enum AnyListener {
    Tcp(TcpListener),
    Unix(UnixListener),
}

impl AnyListener {
    fn poll_accept(
        &self,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<(AnyStream, Option<SocketAddr>)>> {
        match self {
            AnyListener::Tcp(l) => l
                .poll_accept(cx)
                .map_ok(|(s, peer)| (AnyStream::Tcp(s), Some(peer))),
            AnyListener::Unix(l) => l
                .poll_accept(cx)
                .map_ok(|(s, _)| (AnyStream::Unix(s), None)),
        }
    }

    fn describe(&self) -> String {
        socket_name(match self {
            AnyListener::Tcp(l) => l.as_fd(),
            AnyListener::Unix(l) => l.as_fd(),
        })
    }
}

/// Polls every listener once, starting after the one that accepted last, so that no listener
/// starves the others; the index of the listener that accepted.
#[allow(clippy::type_complexity)]
fn poll_accept_any(
    listeners: &[AnyListener],
    next: &mut usize,
    cx: &mut Context<'_>,
) -> Poll<io::Result<(usize, AnyStream, Option<SocketAddr>)>> {
    let n = listeners.len();
    for i in 0..n {
        let idx = (*next + i) % n;
        if let Poll::Ready(r) = listeners[idx].poll_accept(cx) {
            *next = (idx + 1) % n;
            return Poll::Ready(r.map(|(s, peer)| (idx, s, peer)));
        }
    }
    Poll::Pending
}

/// An accepted connection of either kind.
enum AnyStream {
    Tcp(TcpStream),
    Unix(UnixStream),
}

/// A connection as actix-http serves it.
enum Stream {
    Tcp(TcpStream),
    /// Boxed: a plain connection does not pay for TLS's state.
    #[cfg(feature = "tls")]
    Tls(Box<tokio_rustls::server::TlsStream<TcpStream>>),
    Unix(UnixStream),
}

impl Stream {
    fn socket(&self) -> BorrowedFd<'_> {
        match self {
            Stream::Tcp(s) => s.as_fd(),
            #[cfg(feature = "tls")]
            Stream::Tls(s) => s.get_ref().0.as_fd(),
            Stream::Unix(s) => s.as_fd(),
        }
    }

    fn as_any(&self) -> &dyn std::any::Any {
        match self {
            Stream::Tcp(s) => s,
            #[cfg(feature = "tls")]
            Stream::Tls(s) => &**s,
            Stream::Unix(s) => s,
        }
    }
}

/// The I/O actix-http's dispatcher drives: the stream, the connection's drain state (counted
/// open until the connection ends), and its place in the drain grace's books.
pub(crate) struct Io {
    stream: Stream,
    conn: DrainConn,
    idle: Option<Rc<ConnState>>,
}

/// `$e` with `$s` the pinned stream under `$io` (a `&mut Io`).
macro_rules! on_stream {
    ($io:expr, $s:ident => $e:expr) => {
        match &mut $io.stream {
            Stream::Tcp($s) => {
                let $s = Pin::new($s);
                $e
            }
            #[cfg(feature = "tls")]
            Stream::Tls($s) => {
                let $s = Pin::new(&mut **$s);
                $e
            }
            Stream::Unix($s) => {
                let $s = Pin::new($s);
                $e
            }
        }
    };
}

impl AsyncRead for Io {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let r = on_stream!(this, s => s.poll_read(cx, buf));
        // Only the drain grace's books look at reads here (`DrainConn`'s own activity is for
        // the hyper adapters' connection driver, which actix does not use).
        if buf.filled().len() > before {
            if let Some(idle) = &this.idle {
                idle.touch();
            }
        }
        r
    }
}

impl AsyncWrite for Io {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        on_stream!(self.get_mut(), s => s.poll_write(cx, buf))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        on_stream!(self.get_mut(), s => s.poll_flush(cx))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        on_stream!(self.get_mut(), s => s.poll_shutdown(cx))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        on_stream!(self.get_mut(), s => s.poll_write_vectored(cx, bufs))
    }

    fn is_write_vectored(&self) -> bool {
        match &self.stream {
            Stream::Tcp(s) => s.is_write_vectored(),
            #[cfg(feature = "tls")]
            Stream::Tls(s) => s.is_write_vectored(),
            Stream::Unix(s) => s.is_write_vectored(),
        }
    }
}
