//! The extension trait on `actix_web::HttpServer`: supervise in the master, serve in a worker.

use std::sync::Arc;
use std::{fmt, io};

use actix_http::Request;
use actix_service::IntoServiceFactory;
use actix_web::body::MessageBody;
use actix_web::dev::{AppConfig, Response, Service, ServiceFactory};
use actix_web::{Error, HttpServer};
use prefork_core::accept::HandedOffListener;
use prefork_core::{Drain, Worker};

use crate::balance::Steer;
use crate::config::{OnConnect, Server};
use crate::middleware::{PreforkConn, WorkerState};
use crate::worker;

mod private {
    pub trait Sealed {}
}

impl<F, I, S, B> private::Sealed for HttpServer<F, I, S, B>
where
    F: Fn() -> I + Send + Clone + 'static,
    I: IntoServiceFactory<S, Request>,
    S: ServiceFactory<Request, Config = AppConfig>,
    S::Error: Into<Error>,
    S::InitError: fmt::Debug,
    S::Response: Into<Response<B>>,
    B: MessageBody,
{
}

/// Runs an [`actix_web::HttpServer`] as a prefork server: one master process supervising N
/// worker processes that share the listening socket(s).
///
/// For an existing, configured `HttpServer` (actix settings [`Server::serve`] does not take:
/// `max_connections`, `backlog`, buffer sizes, ...). actix-server's accept thread then accepts:
/// a burst of connections opened at once is not spread over the workers, and plain HTTP on a
/// TLS port gets a TLS alert rather than a `400`; prefer [`serve`](crate::serve) otherwise.
///
/// Sealed: implemented for `HttpServer` only. See the [crate docs](crate) for the full picture.
pub trait HttpServerExt: private::Sealed {
    /// Supervises in the master; serves this server in a worker. Blocks until the server is
    /// stopped; not a future, so there is nothing to `.await`.
    ///
    /// `config` is a configured [`Prefork`](prefork_core::Prefork) (address(es), worker
    /// processes, `SO_REUSEPORT`, shutdown timeout, recovery budget, hooks, TLS), or a
    /// [`Server`] for more actix threads per process.
    ///
    /// **In the master** this is [`Prefork::run`](prefork_core::Prefork::run): bind, start the
    /// workers (re-executing this program), supervise them until SIGTERM/SIGINT, return when none
    /// is left. The app factory is never called and no async runtime is needed or started; the
    /// calling thread is blocked while the master supervises, which is fine even inside
    /// `#[actix_web::main]` because the master serves nothing.
    ///
    /// **In a worker** it configures this `HttpServer` and runs it:
    /// - `listen` on each inherited listener (`listen_rustls_0_23` with the TLS configuration
    ///   validated by the master, when [`Prefork::tls`](prefork_core::Prefork::tls) is set, and
    ///   `tls_handshake_timeout` from it);
    /// - `workers(threads)`: one actix worker thread per process by default;
    /// - `disable_signals()`: prefork's worker side handles SIGTERM/SIGINT and the master's
    ///   death, so signals are not handled twice;
    /// - `on_connect`: gives each connection its drain state (counts it, and records its socket
    ///   on the actix worker thread serving it, for the drain grace); a callback of your own goes
    ///   on [`Server::on_connect`], and runs too;
    /// - `listen_uds` on each inherited Unix domain socket (`unix:/path` addresses), plain
    ///   HTTP/1.1;
    /// - reports ready to the master once actix has started its worker threads (each has built
    ///   its app) and its accept thread;
    /// - on the worker's shutdown notification, drains without loss (see the
    ///   [crate docs](crate#the-loss-free-drain)), bounded by
    ///   [`Worker::drain_timeout`](prefork_core::Worker::drain_timeout) exactly.
    ///
    /// Where the calling thread already runs an async runtime (`#[actix_web::main]`,
    /// `#[tokio::main]`), the server runs on a thread of its own (`prefork-actix`) with a new
    /// actix `System`, and the calling thread waits for it; otherwise it runs on the calling
    /// thread.
    ///
    /// Configure everything else on the `HttpServer` as usual (`keep_alive`,
    /// `client_request_timeout`, `max_connections`, ...), and add
    /// [`PreforkMiddleware`](crate::PreforkMiddleware) to the app. Do not call `bind`/`listen`
    /// (the listeners come from the [`Prefork`](prefork_core::Prefork)), nor `workers`,
    /// `disable_signals`, `on_connect` (use [`Server::on_connect`]) or `shutdown_signal`, which
    /// this method owns; actix's `shutdown_timeout` is not used (prefork's drain timeout is).
    ///
    /// # Errors
    /// - [`InvalidInput`](io::ErrorKind::InvalidInput): `threads` is 0, or the `HttpServer`
    ///   already has sockets (`bind` or `listen` was called); checked before anything starts.
    /// - Every error of [`Prefork::run`](prefork_core::Prefork::run), converted into
    ///   [`io::Error`] with its message (the [`prefork_core::Error`] is its inner error): zero
    ///   workers, a bad address, a port in use, a bad certificate or key, a worker that failed to
    ///   start (e.g. its app factory failed), too many unexpected worker exits, a failed hook.
    /// - In a worker: actix failing to start or serve, e.g. `cannot serve on 127.0.0.1:8080: ...`.
    ///
    /// # Panics
    /// Propagates a panic of the server's own `prefork-actix` thread (see above) to the caller.
    fn run_prefork(self, server: impl Into<Server>) -> Result<(), prefork_core::Error>;
}

impl<F, I, S, B> HttpServerExt for HttpServer<F, I, S, B>
where
    F: Fn() -> I + Send + Clone + 'static,
    I: IntoServiceFactory<S, Request>,
    S: ServiceFactory<Request, Config = AppConfig> + 'static,
    S::Error: Into<Error> + 'static,
    S::InitError: fmt::Debug,
    S::Response: Into<Response<B>> + 'static,
    <S::Service as Service<Request>>::Future: 'static,
    S::Service: 'static,
    B: MessageBody + 'static,
{
    fn run_prefork(self, server: impl Into<Server>) -> Result<(), prefork_core::Error> {
        let Server {
            prefork,
            threads,
            on_connect,
        } = server.into();
        crate::config::check_threads(threads)?;
        if !self.addrs().is_empty() {
            return Err(prefork_core::Error::Config(format!(
                "prefork-actix: the HttpServer is already bound to {:?}; remove the \
                 bind/listen call: the listen addresses come from the Prefork",
                self.addrs()
            )));
        }
        prefork.run(|mut child| {
            let state =
                WorkerState::install(Drain::for_worker(&child), Some(child.heartbeat()), threads);
            // The listeners actix's accept thread will own, closed by the drain.
            let mut handed_off = Vec::new();
            let steer = Steer::new(child.balance());
            let server = attach(
                self,
                &mut child,
                threads,
                &state,
                &steer,
                on_connect,
                &mut handed_off,
            )?;
            worker::run(server.run(), &child, &state, &steer, handed_off)
        })?;
        Ok(())
    }
}

/// Configures the server for this worker and attaches the inherited listeners.
fn attach<F, I, S, B>(
    server: HttpServer<F, I, S, B>,
    child: &mut Worker,
    threads: usize,
    state: &Arc<WorkerState>,
    steer: &Arc<Steer>,
    user_on_connect: Option<OnConnect>,
    handed_off: &mut Vec<HandedOffListener>,
) -> io::Result<HttpServer<F, I, S, B>>
where
    F: Fn() -> I + Send + Clone + 'static,
    I: IntoServiceFactory<S, Request>,
    S: ServiceFactory<Request, Config = AppConfig> + 'static,
    S::Error: Into<Error> + 'static,
    S::InitError: fmt::Debug,
    S::Response: Into<Response<B>> + 'static,
    <S::Service as Service<Request>>::Future: 'static,
    S::Service: 'static,
    B: MessageBody + 'static,
{
    check_tls_feature(child)?;
    let drain = state.drain.clone();
    let steer = steer.clone();
    let mut server = server
        .workers(threads)
        .disable_signals()
        .on_connect(move |io, data| {
            data.insert(PreforkConn {
                drain: drain.connection(),
                idle: crate::idle::register(io),
            });
            steer.accepted();
            if let Some(user) = &user_on_connect {
                user(io, data);
            }
        });
    #[cfg(feature = "tls")]
    let tls = child.tls_config().map(|config| actix_tls_config(&config));
    #[cfg(feature = "tls")]
    if tls.is_some() {
        server = server.tls_handshake_timeout(child.tls_handshake_timeout());
    }
    for listener in child.take_listeners() {
        let addr = listener.local_addr()?;
        handed_off.push(HandedOffListener::of(&listener)?);
        #[cfg(feature = "tls")]
        let attached = match &tls {
            Some(config) => server.listen_rustls_0_23(listener, config.clone()),
            None => server.listen(listener),
        };
        #[cfg(not(feature = "tls"))]
        let attached = server.listen(listener);
        server = attached
            .map_err(|e| io::Error::new(e.kind(), format!("cannot serve on {addr}: {e}")))?;
    }
    // Unix domain sockets (`unix:/path`) serve plain HTTP/1.1.
    for listener in child.take_unix_listeners() {
        let path = listener
            .local_addr()
            .ok()
            .and_then(|a| a.as_pathname().map(|p| p.display().to_string()))
            .unwrap_or_else(|| "a unix socket".to_owned());
        handed_off.push(HandedOffListener::of(&listener)?);
        server = server
            .listen_uds(listener)
            .map_err(|e| io::Error::new(e.kind(), format!("cannot serve on unix:{path}: {e}")))?;
    }
    tracing::debug!(worker = child.id(), threads, "starting the actix server");
    Ok(server)
}

/// Refuses a TLS configuration when this crate was built without its `tls` feature.
pub(crate) fn check_tls_feature(child: &Worker) -> io::Result<()> {
    #[cfg(not(feature = "tls"))]
    if child.tls_requested() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "TLS is configured but prefork-actix was built without its `tls` feature",
        ));
    }
    #[cfg(feature = "tls")]
    let _ = child;
    Ok(())
}

/// actix offers `h2` (with its `http2` feature, which `tls` turns on) and `http/1.1` on every
/// TLS listener, in front of the configuration's own ALPN list; drop those two from the list so
/// they are not offered twice, and keep any other protocol the user configured.
#[cfg(feature = "tls")]
fn actix_tls_config(
    config: &prefork_core::rustls::ServerConfig,
) -> prefork_core::rustls::ServerConfig {
    let mut config = config.clone();
    config
        .alpn_protocols
        .retain(|p| p.as_slice() != b"h2" && p.as_slice() != b"http/1.1");
    config
}

#[cfg(all(test, feature = "tls"))]
mod tests {
    use super::*;

    #[cfg(feature = "tls")]
    #[test]
    fn alpn_keeps_only_protocols_actix_does_not_add() {
        let mut config = prefork_core::rustls::ServerConfig::builder_with_provider(
            std::sync::Arc::new(prefork_core::rustls::crypto::ring::default_provider()),
        )
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_cert_resolver(std::sync::Arc::new(NoCert));
        config.alpn_protocols = vec![b"h2".to_vec(), b"acme-tls/1".to_vec(), b"http/1.1".to_vec()];
        assert_eq!(
            actix_tls_config(&config).alpn_protocols,
            vec![b"acme-tls/1".to_vec()]
        );
    }

    #[cfg(feature = "tls")]
    #[derive(Debug)]
    struct NoCert;

    #[cfg(feature = "tls")]
    impl prefork_core::rustls::server::ResolvesServerCert for NoCert {
        fn resolve(
            &self,
            _: prefork_core::rustls::server::ClientHello<'_>,
        ) -> Option<std::sync::Arc<prefork_core::rustls::sign::CertifiedKey>> {
            None
        }
    }
}
