//! The master's control socket: a Unix socket (mode 0600) speaking one JSON object per line each
//! way. Non-blocking throughout: a slow or hostile client never blocks the supervisor loop.

use std::io::{self, Read, Write};
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};

use crate::Error;

/// The longest request line; a longer one is answered with an error and the client dropped.
const MAX_LINE: usize = 64 * 1024;
/// Unsent answers a client may pile up (it does not read) before it is dropped.
const MAX_PENDING_OUT: usize = 1 << 20;
/// Clients served at once; more are answered with an error and closed.
const MAX_CLIENTS: usize = 32;

/// A parsed request.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Request {
    Stats,
    Reload,
    Scale(usize),
    Stop { graceful: bool },
}

/// Parses one request line: `{"command":"stats"}`, `{"command":"reload"}`,
/// `{"command":"scale","workers":3}`, `{"command":"stop"}` (`"graceful":false` to stop at once).
pub(crate) fn parse(line: &str) -> Result<Request, String> {
    let v: serde_json::Value =
        serde_json::from_str(line).map_err(|e| format!("not a JSON object: {e}"))?;
    let Some(cmd) = v.get("command").and_then(|c| c.as_str()) else {
        return Err("missing \"command\" (one of stats, reload, scale, stop)".into());
    };
    match cmd {
        "stats" => Ok(Request::Stats),
        "reload" => Ok(Request::Reload),
        "scale" => match v.get("workers").and_then(|n| n.as_u64()) {
            Some(n) if (1..=4096).contains(&n) => Ok(Request::Scale(n as usize)),
            _ => Err("scale needs \"workers\": a number from 1 to 4096".into()),
        },
        "stop" => Ok(Request::Stop {
            graceful: v.get("graceful").and_then(|g| g.as_bool()).unwrap_or(true),
        }),
        other => Err(format!(
            "unknown command {other:?} (one of stats, reload, scale, stop)"
        )),
    }
}

/// An error answer.
pub(crate) fn error_line(message: &str) -> String {
    serde_json::json!({ "ok": false, "error": message }).to_string()
}

#[derive(Debug)]
struct Client {
    stream: UnixStream,
    input: Vec<u8>,
    output: Vec<u8>,
    closing: bool,
}

/// The listening control socket and its clients.
#[derive(Debug)]
pub(crate) struct ControlSocket {
    listener: UnixListener,
    path: PathBuf,
    clients: Vec<Client>,
}

impl ControlSocket {
    /// Binds `path` (mode 0600). A stale socket file nobody listens on is replaced; a live one,
    /// or any other file, is an error naming the path.
    pub(crate) fn bind(path: &Path) -> Result<Self, Error> {
        let err = |what: &str, e: io::Error| {
            Error::io(format!("control socket {}: {what}", path.display()), e)
        };
        if let Ok(meta) = std::fs::symlink_metadata(path) {
            use std::os::unix::fs::FileTypeExt;
            if !meta.file_type().is_socket() {
                return Err(err(
                    "exists and is not a socket",
                    io::Error::from(io::ErrorKind::AlreadyExists),
                ));
            }
            if UnixStream::connect(path).is_ok() {
                return Err(err(
                    "another process is listening on it",
                    io::Error::from(io::ErrorKind::AddrInUse),
                ));
            }
            std::fs::remove_file(path).map_err(|e| err("removing the stale socket", e))?;
        }
        let listener = UnixListener::bind(path).map_err(|e| err("bind", e))?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
            .map_err(|e| err("chmod 0600", e))?;
        listener
            .set_nonblocking(true)
            .map_err(|e| err("non-blocking", e))?;
        tracing::info!(path = %path.display(), "control socket listening");
        Ok(ControlSocket {
            listener,
            path: path.to_owned(),
            clients: Vec::new(),
        })
    }

    /// The descriptors to poll: the listener, then each client (readable, and writable while it
    /// has output pending).
    pub(crate) fn poll_fds(&self) -> Vec<(BorrowedFd<'_>, bool)> {
        let mut v = vec![(self.listener.as_fd(), false)];
        v.extend(
            self.clients
                .iter()
                .map(|c| (c.stream.as_fd(), !c.output.is_empty())),
        );
        v
    }

    /// Accepts, reads and writes what is ready without blocking; returns the complete request
    /// lines, each with the index of its client for [`ControlSocket::answer`].
    pub(crate) fn service(&mut self) -> Vec<(usize, Result<Request, String>)> {
        loop {
            match self.listener.accept() {
                Ok((stream, _)) => {
                    if stream.set_nonblocking(true).is_err() {
                        continue;
                    }
                    let mut c = Client {
                        stream,
                        input: Vec::new(),
                        output: Vec::new(),
                        closing: false,
                    };
                    if self.clients.len() >= MAX_CLIENTS {
                        c.output =
                            format!("{}\n", error_line("too many control clients")).into_bytes();
                        c.closing = true;
                    }
                    self.clients.push(c);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => break,
            }
        }
        let mut requests = Vec::new();
        for (i, c) in self.clients.iter_mut().enumerate() {
            let mut buf = [0u8; 4096];
            while !c.closing {
                match (&c.stream).read(&mut buf) {
                    Ok(0) => {
                        c.closing = true;
                    }
                    Ok(n) => c.input.extend_from_slice(&buf[..n]),
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(_) => c.closing = true,
                }
                if c.input.len() > MAX_LINE && !c.input.contains(&b'\n') {
                    c.output.extend_from_slice(
                        format!("{}\n", error_line("request line too long")).as_bytes(),
                    );
                    c.input.clear();
                    c.closing = true;
                }
            }
            while let Some(end) = c.input.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = c.input.drain(..=end).collect();
                let text = String::from_utf8_lossy(&line[..line.len() - 1]);
                let text = text.trim();
                if text.is_empty() {
                    continue;
                }
                requests.push((i, parse(text)));
            }
        }
        requests
    }

    /// Queues `line` (without its newline) for client `i`.
    pub(crate) fn answer(&mut self, i: usize, line: &str) {
        if let Some(c) = self.clients.get_mut(i) {
            c.output.extend_from_slice(line.as_bytes());
            c.output.push(b'\n');
        }
    }

    /// Writes what each client can take, and drops finished or misbehaving clients. Call after
    /// the answers of one [`ControlSocket::service`] round.
    pub(crate) fn flush(&mut self) {
        for c in &mut self.clients {
            while !c.output.is_empty() {
                match (&c.stream).write(&c.output) {
                    Ok(0) => {
                        c.output.clear();
                        c.closing = true;
                    }
                    Ok(n) => {
                        c.output.drain(..n);
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(_) => {
                        c.output.clear();
                        c.closing = true;
                    }
                }
            }
            if c.output.len() > MAX_PENDING_OUT {
                c.output.clear();
                c.closing = true;
            }
        }
        self.clients.retain(|c| !(c.closing && c.output.is_empty()));
    }
}

impl Drop for ControlSocket {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_commands_and_explains_bad_ones() {
        assert_eq!(parse(r#"{"command":"stats"}"#), Ok(Request::Stats));
        assert_eq!(parse(r#"{"command":"reload"}"#), Ok(Request::Reload));
        assert_eq!(
            parse(r#"{"command":"scale","workers":3}"#),
            Ok(Request::Scale(3))
        );
        assert_eq!(
            parse(r#"{"command":"stop"}"#),
            Ok(Request::Stop { graceful: true })
        );
        assert_eq!(
            parse(r#"{"command":"stop","graceful":false}"#),
            Ok(Request::Stop { graceful: false })
        );
        assert!(parse("garbage").unwrap_err().contains("not a JSON object"));
        assert!(parse(r#"{"command":"dance"}"#)
            .unwrap_err()
            .contains("unknown command"));
        assert!(parse(r#"{"command":"scale","workers":0}"#).is_err());
        assert!(parse(r#"{"x":1}"#).unwrap_err().contains("missing"));
    }
}
