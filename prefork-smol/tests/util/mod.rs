//! Helpers shared by this crate's integration tests.
#![allow(dead_code)] // each test binary uses its own subset

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;

use prefork_testutil::{process_state, wait_until, Server, DEADLINE};

/// The `smol_hello` example binary.
pub(crate) fn hello_bin() -> PathBuf {
    prefork_testutil::example_bin("smol_hello")
}

/// Starts `bin` on 127.0.0.1:0 with `extra` flags.
pub(crate) fn start(bin: &PathBuf, extra: &[&str]) -> Server {
    let mut args = vec!["--addr", "127.0.0.1:0"];
    args.extend_from_slice(extra);
    Server::start(bin, &args)
}

/// Waits until every pid in `pids` is gone from the process table (not even a zombie).
pub(crate) fn assert_all_gone(pids: impl IntoIterator<Item = u32>, log: &str) {
    for pid in pids {
        assert!(
            wait_until(DEADLINE, || process_state(pid).is_none()),
            "process {pid} is still there (state {:?}); log:\n{log}",
            process_state(pid)
        );
    }
}

/// Reads until the server closes the connection (end of file or reset): `true`; `false` if it
/// stayed open for [`DEADLINE`]. Whatever the server sends first (an alert, a response) is
/// skipped.
pub(crate) fn server_closes(stream: &mut TcpStream) -> bool {
    stream.set_read_timeout(Some(DEADLINE)).unwrap();
    let mut buf = [0u8; 4096];
    for _ in 0..1000 {
        match stream.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                return false
            }
            Err(_) => return true,
        }
    }
    false
}

/// Sends `GET path` over a raw keep-alive connection and reads exactly one response; returns
/// its body.
pub(crate) fn raw_get(stream: &mut TcpStream, path: &str) -> String {
    write!(stream, "GET {path} HTTP/1.1\r\nhost: test\r\n\r\n").unwrap();
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

/// A connected TCP stream.
pub(crate) fn connect(addr: SocketAddr) -> TcpStream {
    TcpStream::connect(addr).expect("connect")
}
