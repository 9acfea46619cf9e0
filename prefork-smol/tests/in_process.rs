//! The library in this process, without a master: `Standalone` with embedded-PEM TLS, and its
//! configuration errors.

use std::convert::Infallible;
use std::net::TcpListener;

use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response};
use prefork_smol::prefork_core::{Shutdown, ShutdownReason};
use prefork_smol::Standalone;
use prefork_testutil::get;

async fn hello(_: Request<Incoming>) -> Result<Response<String>, Infallible> {
    Ok(Response::new("Hello, World!".to_owned()))
}

fn local_listener() -> (TcpListener, std::net::SocketAddr) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    (listener, addr)
}

#[cfg(feature = "tls")]
#[test]
fn embedded_pem_serves_https() {
    use prefork_smol::prefork_core::TlsConfig;
    use prefork_testutil::{get_tls, TestCerts};

    let certs = TestCerts::generate();
    let (listener, addr) = local_listener();
    let shutdown = Shutdown::new().unwrap();
    let tls = TlsConfig::from_pem(certs.cert_pem.clone(), certs.key_pem.clone());
    let server = {
        let shutdown = shutdown.clone();
        std::thread::spawn(move || {
            Standalone::new(vec![listener])
                .tls(tls)
                .shutdown(shutdown)
                .serve(service_fn(hello))
        })
    };
    let h2: &[&[u8]] = &[b"h2", b"http/1.1"];
    let http1: &[&[u8]] = &[b"http/1.1"];
    for alpn in [h2, http1] {
        let r = get_tls(addr, "/", &certs.ca_pem, alpn).unwrap();
        assert_eq!((r.status, r.body.as_str()), (200, "Hello, World!"));
    }
    shutdown.trigger(ShutdownReason::Requested);
    server.join().unwrap().unwrap();
}

#[cfg(feature = "tls")]
#[test]
fn bad_embedded_pem_is_refused_before_serving() {
    use prefork_smol::prefork_core::TlsConfig;
    let (listener, _) = local_listener();
    let e = Standalone::new(vec![listener])
        .tls(TlsConfig::from_pem("junk", "junk"))
        .shutdown(Shutdown::new().unwrap())
        .serve(service_fn(hello))
        .unwrap_err();
    assert!(e.to_string().contains("<memory>"), "{e}");
    assert!(e.to_string().contains("no certificate"), "{e}");
}

#[test]
fn plain_http_on_several_threads_then_a_clean_stop() {
    let (listener, addr) = local_listener();
    let shutdown = Shutdown::new().unwrap();
    let server = {
        let shutdown = shutdown.clone();
        std::thread::spawn(move || {
            Standalone::new(vec![listener])
                .threads(3)
                .shutdown(shutdown)
                .serve_with(async |worker| {
                    assert_eq!(worker.id(), 0);
                    assert!(!worker.is_prefork_worker());
                    Ok(service_fn(hello))
                })
        })
    };
    let r = get(addr, "/").unwrap();
    assert_eq!((r.status, r.body.as_str()), (200, "Hello, World!"));
    shutdown.trigger(ShutdownReason::Requested);
    server.join().unwrap().unwrap();
    // The listener is closed: nothing accepts any more.
    assert!(std::net::TcpStream::connect(addr).is_err());
}

#[test]
fn zero_threads_and_no_listener_are_refused() {
    let (listener, _) = local_listener();
    let e = Standalone::new(vec![listener])
        .threads(0)
        .shutdown(Shutdown::new().unwrap())
        .serve(service_fn(hello))
        .unwrap_err();
    assert!(e.to_string().contains("at least 1"), "{e}");
    let e = Standalone::new(Vec::new())
        .shutdown(Shutdown::new().unwrap())
        .serve(service_fn(hello))
        .unwrap_err();
    assert!(e.to_string().contains("no listener"), "{e}");
}
