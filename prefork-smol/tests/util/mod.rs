//! Helpers shared by this crate's integration tests.
#![allow(dead_code)] // each test binary uses its own subset

use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;

use prefork_testutil::Server;

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

/// A connected TCP stream.
pub(crate) fn connect(addr: SocketAddr) -> TcpStream {
    TcpStream::connect(addr).expect("connect")
}
