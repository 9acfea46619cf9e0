//! The per-connection hyper service: the app, plus the peer address for `ConnectInfo`.

use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;

use axum::extract::ConnectInfo;
use axum::routing::future::RouteFuture;
use axum::Router;
use hyper::body::Incoming;
use hyper::Request;
use prefork_tokio::Worker;

/// `app` for one connection from `peer`.
#[derive(Clone)]
pub(crate) struct AppService {
    app: Router,
    peer: SocketAddr,
}

impl hyper::service::Service<Request<Incoming>> for AppService {
    type Response = axum::response::Response;
    type Error = Infallible;
    type Future = RouteFuture<Infallible>;

    #[inline]
    fn call(&self, mut req: Request<Incoming>) -> Self::Future {
        // What `Router::into_make_service_with_connect_info::<SocketAddr>()` provides.
        req.extensions_mut().insert(ConnectInfo(self.peer));
        // A `Router` is always ready (its `poll_ready` returns `Ready(Ok(()))` without looking
        // at anything), so calling a clone (an `Arc` increment) directly is allowed.
        tower::Service::call(&mut self.app.clone(), req)
    }
}

/// Serves `app` on the worker's listeners until its shutdown completes, then drains (see
/// [`Worker::serve`]). Handlers can extract `ConnectInfo<SocketAddr>`; HTTP/2 websockets
/// (extended CONNECT) are enabled, as in `axum::serve`.
///
/// This is what [`Server::serve`](crate::Server::serve) runs in each worker and
/// [`Standalone::serve`](crate::Standalone::serve) in its one process; call it yourself from
/// [`prefork_tokio::Server::run`], [`prefork_tokio::Standalone::run`], or on a
/// [`Worker::standalone`] context.
///
/// # Errors
/// As [`Worker::serve`]: only when reporting ready fails.
pub async fn serve_worker(worker: Worker, app: Router) -> io::Result<()> {
    serve_worker_with(worker, app, prefork_tokio::DEFAULT_MAX_BUF_SIZE).await
}

/// [`serve_worker`] with a request-head limit (see [`Server::max_request_head`](crate::Server::max_request_head)).
pub(crate) async fn serve_worker_with(
    worker: Worker,
    app: Router,
    max_request_head: usize,
) -> io::Result<()> {
    let mut http = prefork_tokio::http_builder();
    http.http1()
        .max_buf_size(max_request_head.max(prefork_tokio::DEFAULT_MAX_BUF_SIZE))
        .header_read_timeout(worker.core().header_read_timeout());
    http.http2().enable_connect_protocol();
    worker
        .serve_with(http, move |peer| AppService {
            app: app.clone(),
            peer,
        })
        .await
}

/// The former name of [`serve_worker`].
#[deprecated(since = "0.2.0", note = "renamed to `serve_worker`")]
pub async fn serve_child(worker: Worker, app: Router) -> io::Result<()> {
    serve_worker(worker, app).await
}
