//! [`Counted`], the hyper service wrapper the hyper-based adapters (prefork-tokio, prefork-smol)
//! put around the application's service on each connection, so that the drain knows about every
//! request. Behind the `hyper` feature; nothing here depends on an async runtime.

use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use hyper::header::{HeaderValue, CONNECTION};
use hyper::service::Service;
use hyper::{Request, Response, Version};

use crate::DrainConn;

/// A connection's service: counts each request ([`DrainConn::request_started`], which also
/// feeds `max_requests`) and, once the drain has started, gives each HTTP/1 response
/// `Connection: close`, so that the connection ends after it ([`DrainConn::response_ready`]).
/// A request whose response future is dropped (the client went away) stops counting as in
/// flight.
#[derive(Debug, Clone)]
pub struct Counted<S> {
    inner: S,
    conn: DrainConn,
}

impl<S> Counted<S> {
    /// Wraps `inner`, the service of the connection `conn`.
    pub fn new(inner: S, conn: &DrainConn) -> Self {
        Counted {
            inner,
            conn: conn.clone(),
        }
    }
}

impl<S, R, B> Service<Request<R>> for Counted<S>
where
    S: Service<Request<R>, Response = Response<B>>,
{
    type Response = Response<B>;
    type Error = S::Error;
    type Future = CountedFuture<S::Future>;

    fn call(&self, req: Request<R>) -> Self::Future {
        let version = req.version();
        self.conn.request_started(version == Version::HTTP_2);
        CountedFuture {
            inner: self.inner.call(req),
            conn: Some(self.conn.clone()),
            http1: version < Version::HTTP_2,
        }
    }
}

pin_project_lite::pin_project! {
    /// A response on its way: see [`Counted`].
    #[derive(Debug)]
    pub struct CountedFuture<F> {
        #[pin]
        inner: F,
        conn: Option<DrainConn>,
        http1: bool,
    }

    impl<F> PinnedDrop for CountedFuture<F> {
        fn drop(this: Pin<&mut Self>) {
            // A request whose future was dropped (the client went away) is no longer in flight.
            if let Some(conn) = this.project().conn.take() {
                let _ = conn.response_ready();
            }
        }
    }
}

impl<F, B, E> Future for CountedFuture<F>
where
    F: Future<Output = Result<Response<B>, E>>,
{
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let mut out = ready!(this.inner.poll(cx));
        if let Some(conn) = this.conn.take() {
            if conn.response_ready() && *this.http1 {
                if let Ok(resp) = &mut out {
                    resp.headers_mut()
                        .insert(CONNECTION, HeaderValue::from_static("close"));
                }
            }
        }
        Poll::Ready(out)
    }
}
