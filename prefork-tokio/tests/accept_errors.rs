//! An accept error such as EMFILE does not end the accept loop: it is logged, the loop pauses
//! briefly and retries, and the queued connection is served once a descriptor is free.
//!
//! Its own test binary: it lowers this process's descriptor limit for a moment.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::{Arc, Mutex};

use prefork_testutil::{wait_until, DEADLINE};
use prefork_tokio::{Shutdown, ShutdownReason, Worker};

#[derive(Clone, Default)]
struct Log(Arc<Mutex<Vec<u8>>>);

impl Write for Log {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Log {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

fn hello() -> impl hyper::service::Service<
    hyper::Request<hyper::body::Incoming>,
    Response = hyper::Response<String>,
    Error = std::convert::Infallible,
    Future = impl Send,
> + Clone {
    hyper::service::service_fn(|_| async {
        Ok::<_, std::convert::Infallible>(hyper::Response::new("Hello, World!".to_owned()))
    })
}

/// Sends a request on `stream` and returns the whole response (the request asks to close).
fn exchange(mut stream: TcpStream) -> String {
    stream.set_read_timeout(Some(DEADLINE)).unwrap();
    stream
        .write_all(b"GET / HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        .unwrap();
    let mut resp = String::new();
    stream.read_to_string(&mut resp).unwrap();
    resp
}

/// A TCP socket, connected without allocating a descriptor at connect time.
fn socket() -> std::os::fd::OwnedFd {
    use nix::sys::socket::{socket, AddressFamily, SockFlag, SockType};
    socket(
        AddressFamily::Inet,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .unwrap()
}

fn connect(fd: &std::os::fd::OwnedFd, addr: SocketAddr) {
    let SocketAddr::V4(v4) = addr else {
        unreachable!()
    };
    nix::sys::socket::connect(fd.as_raw_fd(), &nix::sys::socket::SockaddrIn::from(v4)).unwrap();
}

#[test]
fn emfile_is_logged_and_the_accept_loop_goes_on() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};

    let log = Log::default();
    let writer = log.clone();
    tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .init();

    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let shutdown = Shutdown::new().unwrap();
    let stop = shutdown.clone();
    let server = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async move {
            Worker::standalone(vec![listener], shutdown)?
                .serve(|_| hello())
                .await
        })
    });
    assert!(exchange(TcpStream::connect(addr).unwrap()).ends_with("Hello, World!"));

    // Leave no descriptor free: the server's next accept fails with EMFILE.
    let client = socket();
    let lowest_free = std::fs::File::open("/dev/null").unwrap().as_raw_fd() as u64;
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
    setrlimit(Resource::RLIMIT_NOFILE, lowest_free, hard).unwrap();
    connect(&client, addr);
    let failed = wait_until(DEADLINE, || {
        log.text().matches("accept failed").count() >= 2
    });
    setrlimit(Resource::RLIMIT_NOFILE, soft, hard).unwrap();
    let text = log.text();
    assert!(failed, "no accept error logged:\n{text}");
    assert!(text.contains("Too many open files"), "{text}");

    // The loop went on: the queued connection is served now.
    let resp = exchange(TcpStream::from(client));
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    assert!(resp.ends_with("Hello, World!"), "{resp}");

    stop.trigger(ShutdownReason::Requested);
    server.join().unwrap().unwrap();
}
