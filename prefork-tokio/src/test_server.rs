//! A worker serving `ok` in-process, for the unit tests that need a real served connection.

use std::net::SocketAddr;
use std::thread::JoinHandle;

use prefork_core::Shutdown;

/// Serves `ok` to every request with `http` from a standalone worker on a thread of its own
/// (a current-thread runtime, as a worker runs with one thread): its address, the shutdown that
/// stops it, and the thread to join.
pub(crate) fn serve_ok(
    http: crate::HttpBuilder<hyper_util::rt::TokioExecutor>,
) -> (SocketAddr, Shutdown, JoinHandle<std::io::Result<()>>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let shutdown = Shutdown::new().unwrap();
    let stop = shutdown.clone();
    let server = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let worker = crate::Worker::standalone(vec![listener], shutdown)?;
            let ok = hyper::service::service_fn(|_| async {
                Ok::<_, std::convert::Infallible>(hyper::Response::new(String::from("ok")))
            });
            worker.serve_with(http, move |_| ok).await
        })
    });
    (addr, stop, server)
}
