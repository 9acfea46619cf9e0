//! HTTP clients (hyper: HTTP/1.1, h2c, TLS) and raw-socket helpers.

use std::collections::BTreeSet;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::Request;
use hyper_util::rt::{TokioExecutor, TokioIo};

use crate::{process_state, wait_until, DEADLINE};

fn rt() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("tokio runtime")
    })
}

/// Runs a future on the helpers' runtime, bounded by [`DEADLINE`].
pub fn block_on<F: std::future::Future>(f: F) -> io::Result<F::Output> {
    rt().block_on(async { tokio::time::timeout(DEADLINE, f).await })
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "timed out"))
}

/// An HTTP response as the tests see it.
#[derive(Debug, Clone)]
pub struct Response {
    /// The status code.
    pub status: u16,
    /// The protocol version (`HTTP/1.1`, `HTTP/2.0`).
    pub version: hyper::Version,
    /// The body as text.
    pub body: String,
    /// The content-type header, if any.
    pub content_type: Option<String>,
}

fn io_err(e: impl std::fmt::Display) -> io::Error {
    io::Error::other(e.to_string())
}

async fn send<B>(
    sender: &mut hyper::client::conn::http1::SendRequest<B>,
    req: Request<B>,
) -> io::Result<Response>
where
    B: hyper::body::Body + 'static,
{
    let resp = sender.send_request(req).await.map_err(io_err)?;
    collect(resp).await
}

async fn collect(resp: hyper::Response<hyper::body::Incoming>) -> io::Result<Response> {
    let status = resp.status().as_u16();
    let version = resp.version();
    let content_type = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let body = resp.into_body().collect().await.map_err(io_err)?.to_bytes();
    Ok(Response {
        status,
        version,
        body: String::from_utf8_lossy(&body).into_owned(),
        content_type,
    })
}

fn request(addr: SocketAddr, path: &str) -> Request<Empty<Bytes>> {
    Request::get(path)
        .header("host", addr.to_string())
        .body(Empty::new())
        .expect("request")
}

/// One HTTP/1.1 keep-alive connection.
#[derive(Debug)]
pub struct Http1 {
    addr: SocketAddr,
    sender: hyper::client::conn::http1::SendRequest<Empty<Bytes>>,
}

impl Http1 {
    /// Opens a connection.
    pub fn connect(addr: SocketAddr) -> io::Result<Http1> {
        block_on(async move {
            let stream = tokio::net::TcpStream::connect(addr).await?;
            let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
                .await
                .map_err(io_err)?;
            tokio::spawn(conn);
            Ok(Http1 { addr, sender })
        })?
    }

    /// Sends `GET path` on this connection.
    pub fn get(&mut self, path: &str) -> io::Result<Response> {
        let req = request(self.addr, path);
        let sender = &mut self.sender;
        block_on(async move {
            sender.ready().await.map_err(io_err)?;
            send(sender, req).await
        })?
    }
}

/// `GET path` over a new HTTP/1.1 connection.
pub fn get(addr: SocketAddr, path: &str) -> io::Result<Response> {
    Http1::connect(addr)?.get(path)
}

/// `GET path` over HTTP/2 with prior knowledge (h2c).
pub fn get_h2c(addr: SocketAddr, path: &str) -> io::Result<Response> {
    let req = request(addr, path);
    block_on(async move {
        let stream = tokio::net::TcpStream::connect(addr).await?;
        send_h2(stream, req).await
    })?
}

/// Sends `req` as the one request of a new HTTP/2 connection over `io`, then closes it.
async fn send_h2<T>(io: T, req: Request<Empty<Bytes>>) -> io::Result<Response>
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(io))
            .await
            .map_err(io_err)?;
    let conn = tokio::spawn(conn);
    let resp = sender.send_request(req).await.map_err(io_err)?;
    let r = collect(resp).await;
    // Close the connection before returning: its task only runs inside these helpers, so a
    // connection left open would never answer the server's GOAWAY during a drain.
    drop(sender);
    let _ = conn.await;
    r
}

/// Sends `requests` concurrent `GET /pid` over new connections and returns the distinct pids
/// that answered.
pub fn pids_answering(addr: SocketAddr, requests: usize) -> BTreeSet<u32> {
    let result = block_on(async move {
        let mut set = tokio::task::JoinSet::new();
        for _ in 0..requests {
            set.spawn(async move {
                let stream = tokio::net::TcpStream::connect(addr).await.ok()?;
                let (mut sender, conn) =
                    hyper::client::conn::http1::handshake(TokioIo::new(stream))
                        .await
                        .ok()?;
                tokio::spawn(conn);
                let r = send(&mut sender, request(addr, "/pid")).await.ok()?;
                r.body.trim().parse::<u32>().ok()
            });
        }
        let mut pids = BTreeSet::new();
        while let Some(r) = set.join_next().await {
            if let Ok(Some(pid)) = r {
                pids.insert(pid);
            }
        }
        pids
    });
    result.unwrap_or_default()
}

/// Asks `/pid` in concurrent batches until `n` distinct pids answered (bounded by a count and
/// [`DEADLINE`]); returns what was seen.
pub fn wait_for_distinct_pids(addr: SocketAddr, n: usize) -> BTreeSet<u32> {
    let mut seen = BTreeSet::new();
    let end = Instant::now() + DEADLINE;
    for _ in 0..200 {
        seen.extend(pids_answering(addr, 32));
        if seen.len() >= n || Instant::now() >= end {
            break;
        }
    }
    seen
}

/// A TLS client that trusts `ca_pem`, offers ALPN `alpn`, and keeps the session tickets it is
/// sent (rustls's default client session store).
fn tls_connector(ca_pem: &str, alpn: &[&[u8]]) -> io::Result<tokio_rustls::TlsConnector> {
    use rustls_pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pki_types::CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(cert.map_err(io_err)?).map_err(io_err)?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(io_err)?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(tokio_rustls::TlsConnector::from(Arc::new(config)))
}

/// `GET path` over HTTPS, trusting `ca_pem` and offering ALPN `alpn` (e.g. `[b"h2", b"http/1.1"]`).
pub fn get_tls(addr: SocketAddr, path: &str, ca_pem: &str, alpn: &[&[u8]]) -> io::Result<Response> {
    let connector = tls_connector(ca_pem, alpn)?;
    let req = request(addr, path);
    block_on(async move {
        let tcp = tokio::net::TcpStream::connect(addr).await?;
        let name = rustls_pki_types::ServerName::try_from("localhost").map_err(io_err)?;
        let tls = connector.connect(name, tcp).await?;
        let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
        if h2 {
            send_h2(tls, req).await
        } else {
            let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
                .await
                .map_err(io_err)?;
            tokio::spawn(conn);
            send(&mut sender, req).await
        }
    })?
}

/// `n` HTTPS connections to `addr` one after another (trusting `ca_pem`, HTTP/1.1), all from
/// one client that keeps the session tickets it is sent (rustls's default client session
/// store), each asking `GET /pid`: for each, the pid that answered and whether its handshake
/// resumed an earlier session.
pub fn tls_resumptions(addr: SocketAddr, ca_pem: &str, n: usize) -> io::Result<Vec<(u32, bool)>> {
    let connector = tls_connector(ca_pem, &[b"http/1.1"])?;
    block_on(async move {
        let mut seen = Vec::new();
        for _ in 0..n {
            let tcp = tokio::net::TcpStream::connect(addr).await?;
            let name = rustls_pki_types::ServerName::try_from("localhost").map_err(io_err)?;
            let tls = connector.connect(name, tcp).await?;
            let resumed = tls.get_ref().1.handshake_kind() == Some(rustls::HandshakeKind::Resumed);
            let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
                .await
                .map_err(io_err)?;
            let conn = tokio::spawn(conn);
            let r = send(&mut sender, request(addr, "/pid")).await?;
            drop(sender);
            // The connection task reads the tickets the server sent after the handshake.
            let _ = conn.await;
            seen.push((r.body.trim().parse().unwrap_or(0), resumed));
        }
        Ok(seen)
    })?
}

/// Waits until every pid in `pids` is gone from the process table (not even a zombie: its
/// parent reaped it). Panics with `log` otherwise.
pub fn assert_all_gone(pids: impl IntoIterator<Item = u32>, log: &str) {
    for pid in pids {
        assert!(
            wait_until(DEADLINE, || process_state(pid).is_none()),
            "process {pid} is still there (state {:?}); log:\n{log}",
            process_state(pid)
        );
    }
}

/// Reads until the server closes the connection (end of file or reset) and returns what it
/// sent before closing (an alert, a response); `None` if it stayed open for [`DEADLINE`].
pub fn read_until_closed(stream: &mut std::net::TcpStream) -> Option<Vec<u8>> {
    use std::io::Read;
    stream.set_read_timeout(Some(DEADLINE)).unwrap();
    let end = Instant::now() + DEADLINE;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    for _ in 0..1000 {
        match stream.read(&mut buf) {
            Ok(0) => return Some(got),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                return None
            }
            Err(_) => return Some(got),
        }
        if Instant::now() >= end {
            break;
        }
    }
    None
}

/// Reads until the server closes the connection (end of file or reset): `true`; `false` if it
/// stayed open for [`DEADLINE`]. Whatever the server sends first (an alert, a response) is
/// skipped.
pub fn server_closes(stream: &mut std::net::TcpStream) -> bool {
    read_until_closed(stream).is_some()
}

/// Sends `GET path` over a raw keep-alive connection and reads exactly one `200` response;
/// returns its body.
pub fn raw_get(stream: &mut std::net::TcpStream, path: &str) -> String {
    use std::io::Write;
    write!(stream, "GET {path} HTTP/1.1\r\nhost: test\r\n\r\n").unwrap();
    read_response(stream)
}

/// Reads exactly one `200` response from a raw connection; returns its body.
pub fn read_response(stream: &mut std::net::TcpStream) -> String {
    use std::io::Read;
    stream.set_read_timeout(Some(DEADLINE)).unwrap();
    let mut data = Vec::new();
    let mut buf = [0u8; 1024];
    for _ in 0..1000 {
        let text = String::from_utf8_lossy(&data).into_owned();
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let len: usize = head
                .lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case("content-length")
                        .then(|| v.trim().parse().ok())?
                })
                .expect("content-length");
            if body.len() >= len {
                assert!(head.starts_with("HTTP/1.1 200"), "{head}");
                return body[..len].to_owned();
            }
        }
        let n = stream.read(&mut buf).expect("response");
        assert!(n > 0, "connection closed mid-response: {text:?}");
        data.extend_from_slice(&buf[..n]);
    }
    panic!("no complete response");
}

/// Whether the server end of the IPv4 connection `server` <- `client` has read everything the
/// client sent (its receive queue in `/proc/net/tcp` is empty): the readiness signal for "the
/// request is in the server's hands".
pub fn server_has_read(server: SocketAddr, client: SocketAddr) -> bool {
    tcp_sockets(server)
        .iter()
        .any(|s| s.remote == client && s.unread == 0)
}

/// One IPv4 TCP socket from `/proc/net/tcp`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcpSocket {
    /// The peer's address.
    pub remote: SocketAddr,
    /// Whether the connection is established (state `01`).
    pub established: bool,
    /// Whether this is a listening socket (state `0A`).
    pub listening: bool,
    /// Bytes received and not yet read by the process.
    pub unread: u64,
    /// The socket's inode: a process holds it if one of its descriptors points to
    /// `socket:[INODE]` (see [`open_fds`](crate::open_fds)).
    pub inode: u64,
}

/// The IPv4 TCP sockets whose local address is `local` (a server's side of its connections),
/// from `/proc/net/tcp`; empty for an IPv6 address or when the table cannot be read.
pub fn tcp_sockets(local: SocketAddr) -> Vec<TcpSocket> {
    let SocketAddr::V4(a) = local else {
        return Vec::new();
    };
    let local = format!(
        "{:08X}:{:04X}",
        u32::from_le_bytes(a.ip().octets()),
        a.port()
    );
    let parse_addr = |hex: &str| -> Option<SocketAddr> {
        let (ip, port) = hex.split_once(':')?;
        let ip = u32::from_str_radix(ip, 16).ok()?.to_le_bytes();
        Some(SocketAddr::from((ip, u16::from_str_radix(port, 16).ok()?)))
    };
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap_or_default();
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() <= 9 || f[1] != local {
                return None;
            }
            Some(TcpSocket {
                remote: parse_addr(f[2])?,
                established: f[3] == "01",
                listening: f[3] == "0A",
                unread: u64::from_str_radix(f[4].split(':').nth(1)?, 16).ok()?,
                inode: f[9].parse().ok()?,
            })
        })
        .collect()
}
