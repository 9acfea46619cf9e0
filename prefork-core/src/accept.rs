//! What every adapter's accept loop shares: which accept errors concern one connection only,
//! what to say when the process runs out of descriptors, how a TLS port tells and answers
//! plain HTTP, and how a worker lets go of a listener it handed to a server that owns it
//! ([`HandedOffListener`]).

use std::io;
use std::mem::ManuallyDrop;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

/// Whether an `accept` error concerns the one connection being accepted (the peer gave up
/// before it was accepted), not the listener: skip it and accept the next at once.
pub fn is_connection_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::Interrupted
    )
}

/// For an `accept` error caused by a descriptor limit, which limit to raise, with the current
/// values; `None` for any other error.
///
/// - EMFILE: the process's soft `RLIMIT_NOFILE` (named with its soft and hard values): raise it
///   with `ulimit -n`, `LimitNOFILE=` in a systemd unit, or
///   [`Prefork::nofile_limit`](crate::Prefork::nofile_limit) (workers raise it to the hard limit
///   by default).
/// - ENFILE: the system-wide limit (`fs.file-max` / `fs.nr_open`).
pub fn descriptor_limit_hint(e: &io::Error) -> Option<String> {
    match e.raw_os_error()? {
        libc::EMFILE => {
            let (soft, hard) =
                nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
                    .map(|(s, h)| (s.to_string(), h.to_string()))
                    .unwrap_or_else(|_| ("?".into(), "?".into()));
            Some(format!(
                "this worker has reached its open-file limit (soft RLIMIT_NOFILE = {soft}, \
                 hard = {hard}): raise it with `ulimit -n` (soft, up to the hard limit; \
                 `ulimit -Hn` as root for the hard one), `LimitNOFILE=` in the systemd unit, \
                 or Prefork::nofile_limit"
            ))
        }
        libc::ENFILE => Some(
            "the system has reached its open-file limit: raise `fs.file-max` (sysctl) or close \
             descriptors elsewhere"
                .to_owned(),
        ),
        _ => None,
    }
}

/// Logs an `accept` error that is not the connection's fault, at `error`, naming the listener,
/// the pause before the next try, and for EMFILE/ENFILE the limit to raise.
pub fn log_accept_error(
    listener: &dyn std::fmt::Display,
    e: &io::Error,
    pause: std::time::Duration,
) {
    let pause_ms = pause.as_millis() as u64;
    match descriptor_limit_hint(e) {
        Some(hint) => tracing::error!(
            listener = %listener,
            error = %e,
            pause_ms,
            "accept failed: {hint}; retrying after a pause"
        ),
        None => tracing::error!(
            listener = %listener,
            error = %e,
            pause_ms,
            "accept failed; retrying after a pause"
        ),
    }
}

/// How many first bytes of a connection on a TLS port an adapter peeks at to tell plain HTTP
/// from a TLS handshake ([`is_plain_http`]): the longest method it accepts, and a space.
pub const PLAIN_HTTP_PEEK_LEN: usize = 17;

/// Whether the first bytes a client sent to a TLS port are a plain HTTP request rather than a
/// TLS handshake: not a handshake record (its first byte is `0x16`) but a method, 1 to 16 ASCII
/// letters, then a space (`GET / HTTP/1.1`). The adapters answer it with
/// [`PLAIN_HTTP_RESPONSE`] and close; anything else (a handshake, garbage, fewer bytes than a
/// method and its space) goes to the TLS handshake, which fails on what is not TLS.
pub fn is_plain_http(first: &[u8]) -> bool {
    let letters = first.iter().take_while(|b| b.is_ascii_alphabetic()).count();
    (1..=16).contains(&letters) && first.get(letters) == Some(&b' ')
}

/// The answer to plain HTTP on a TLS port (as nginx's "400 The plain HTTP request was sent to
/// HTTPS port"): `400 Bad Request`, `Connection: close`, and a one-line text body saying that
/// the port expects HTTPS.
pub const PLAIN_HTTP_RESPONSE: &[u8] = b"HTTP/1.1 400 Bad Request\r\n\
content-type: text/plain; charset=utf-8\r\n\
content-length: 52\r\n\
connection: close\r\n\
\r\n\
This port expects HTTPS (TLS); plain HTTP was sent.\n";

/// After [`PLAIN_HTTP_RESPONSE`], how much more an adapter reads (and discards) while it waits
/// for the client to close: closing a socket with unread data resets the connection, and the
/// reset can destroy the answer before the client has read it.
pub const PLAIN_HTTP_READ_LIMIT: u64 = 64 * 1024;

/// How the start of a connection on a TLS port ended without a TLS stream, as every adapter's
/// handshake logs it ([`HandshakeEnd::log`]: one `debug` line; the connection costs nothing
/// more).
#[derive(Debug)]
pub enum HandshakeEnd<'a> {
    /// The TLS handshake failed (garbage, a protocol error, the client left).
    Failed(&'a io::Error),
    /// Plain HTTP was sent and answered `400`; the error, if sending the answer or waiting for
    /// the client's close failed.
    PlainHttp(Option<&'a io::Error>),
    /// The handshake timeout expired; `plain_http`: after the `400` was sent, waiting for the
    /// client to close.
    TimedOut {
        /// Plain HTTP was sent and answered `400` before the timeout.
        plain_http: bool,
    },
}

impl HandshakeEnd<'_> {
    /// Logs how the connection from `peer` ended, at `debug` level (`timeout`: the handshake
    /// timeout).
    pub fn log(&self, peer: std::net::SocketAddr, timeout: std::time::Duration) {
        let timeout_ms = timeout.as_millis() as u64;
        match self {
            HandshakeEnd::Failed(e) => {
                tracing::debug!(%peer, error = %e, "TLS handshake failed; connection closed");
            }
            HandshakeEnd::PlainHttp(e) => tracing::debug!(
                %peer,
                error = e.map(tracing::field::display),
                "plain HTTP on the TLS port: answered 400, connection closed"
            ),
            HandshakeEnd::TimedOut { plain_http: true } => tracing::debug!(
                %peer,
                timeout_ms,
                "plain HTTP on the TLS port: answered 400; the client did not close within the \
                 handshake timeout, connection closed"
            ),
            HandshakeEnd::TimedOut { plain_http: false } => {
                tracing::debug!(%peer, timeout_ms, "TLS handshake timed out; connection closed");
            }
        }
    }
}

/// A listening socket's descriptor handed to a server that owns it from then on (as
/// actix-server's accept thread owns the listeners actix-web is given), remembered so that this
/// process can let go of the socket while that server still holds the descriptor number:
/// [`close_socket`](HandedOffListener::close_socket).
///
/// Why: when a worker drains it stops accepting and must drop its reference to the listening
/// socket at once (with one shared socket the other workers keep accepting from its queue; on a
/// final stop, once every copy is closed, new connections are refused instead of waiting in a
/// queue that nobody reads), but a server that owns its listeners closes them only when it is
/// dropped, after the drain.
#[derive(Debug)]
pub struct HandedOffListener {
    fd: RawFd,
    /// The socket's identity (device and inode, from `fstat`) when it was remembered.
    dev: u64,
    ino: u64,
    /// The listener's address, for messages: `127.0.0.1:8080` or `unix:/path`.
    name: String,
}

impl HandedOffListener {
    /// Remembers `listener`'s descriptor: its number, the socket's identity (device and inode)
    /// and its address (for messages). Call it before the listener is handed over.
    ///
    /// # Errors
    /// `fstat` fails on the descriptor (the message names the descriptor).
    pub fn of(listener: &impl AsFd) -> io::Result<Self> {
        let fd = listener.as_fd();
        let name = socket_name(fd);
        let (dev, ino) = identity(fd).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!(
                    "listener {name} (fd {}): cannot read its identity (fstat): {e}",
                    fd.as_raw_fd()
                ),
            )
        })?;
        Ok(HandedOffListener {
            fd: fd.as_raw_fd(),
            dev,
            ino,
            name,
        })
    }

    /// The listener's address as remembered: `127.0.0.1:8080`, `unix:/path`, or `?`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Drops this process's reference to the listening socket now: the descriptor number is
    /// atomically made to refer to `/dev/null` instead (`dup3` with `O_CLOEXEC`; `dup2`, then
    /// close-on-exec, where `dup3` does not exist), so the number stays open and the owner, when
    /// it closes the listener later, closes only `/dev/null`.
    ///
    /// The owner must no longer use the descriptor as a listener (actix's accept thread is
    /// paused first) and must not close it while this runs. If the number no longer names the
    /// socket it named when remembered (the owner closed it and the number was reused), nothing
    /// is changed and an error says so; that check cannot catch a close that races with this
    /// call, which is why the owner must not close the descriptor meanwhile.
    ///
    /// # Errors
    /// Each names the listener's address and descriptor: `/dev/null` cannot be opened, the
    /// descriptor no longer names the remembered socket, or `dup3` fails.
    pub fn close_socket(self) -> io::Result<()> {
        let HandedOffListener { fd, dev, ino, name } = self;
        let what = format!("closing this process's copy of listener {name} (fd {fd})");
        let devnull = std::fs::File::open("/dev/null")
            .map_err(|e| io::Error::new(e.kind(), format!("{what}: cannot open /dev/null: {e}")))?;
        // SAFETY: `fstat` on any descriptor number is harmless (EBADF if it is not open); the
        // borrow is used for this one call only.
        let current = identity(unsafe { BorrowedFd::borrow_raw(fd) });
        if current.ok() != Some((dev, ino)) {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("{what}: the descriptor no longer names that socket; left as it is"),
            ));
        }
        // SAFETY: `fd` is open and names the remembered socket (checked just above); its owner
        // neither uses nor closes it while this runs (this function's contract). The `OwnedFd`
        // is never dropped (`ManuallyDrop`): the owner keeps the number and closes it later.
        let mut target = ManuallyDrop::new(unsafe { OwnedFd::from_raw_fd(fd) });
        replace_with(&devnull, &mut target)
            .map_err(|e| io::Error::new(e.kind(), format!("{what}: {e}")))?;
        tracing::debug!(listener = %name, fd, "listener copy closed");
        Ok(())
    }
}

/// Makes `target`'s number refer to what `source` refers to, close-on-exec, atomically.
#[cfg(any(target_os = "linux", target_os = "freebsd"))]
fn replace_with(source: &impl AsFd, target: &mut OwnedFd) -> io::Result<()> {
    nix::unistd::dup3(source, target, nix::fcntl::OFlag::O_CLOEXEC)
        .map_err(|e| io::Error::new(io::Error::from(e).kind(), format!("dup3: {e}")))
}

/// Makes `target`'s number refer to what `source` refers to (`dup2`), then close-on-exec.
#[cfg(not(any(target_os = "linux", target_os = "freebsd")))]
fn replace_with(source: &impl AsFd, target: &mut OwnedFd) -> io::Result<()> {
    nix::unistd::dup2(source, target)
        .map_err(|e| io::Error::new(io::Error::from(e).kind(), format!("dup2: {e}")))?;
    crate::listener::set_cloexec(&*target)
}

/// A descriptor's identity: device and inode from `fstat`.
fn identity(fd: BorrowedFd<'_>) -> io::Result<(u64, u64)> {
    let stat = nix::sys::stat::fstat(fd)?;
    #[allow(clippy::unnecessary_cast)] // `dev_t` and `ino_t` are not `u64` on every target
    Ok((stat.st_dev as u64, stat.st_ino as u64))
}

/// A socket's local address for log lines and messages: `127.0.0.1:8080`, `unix:/path`, or `?`
/// (an unnamed or closed socket). The adapters name their listeners with it.
pub fn socket_name(fd: BorrowedFd<'_>) -> String {
    match socket2::SockRef::from(&fd).local_addr() {
        Ok(a) => match (a.as_socket(), a.as_pathname()) {
            (Some(s), _) => s.to_string(),
            (None, Some(p)) => format!("unix:{}", p.display()),
            _ => "?".to_owned(),
        },
        Err(_) => "?".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emfile_names_the_limit_to_raise() {
        let hint = descriptor_limit_hint(&io::Error::from_raw_os_error(libc::EMFILE)).unwrap();
        assert!(
            hint.contains("RLIMIT_NOFILE") && hint.contains("ulimit -n"),
            "{hint}"
        );
        assert!(hint.contains("LimitNOFILE="), "{hint}");
        assert!(descriptor_limit_hint(&io::Error::from_raw_os_error(libc::ENFILE)).is_some());
        assert!(descriptor_limit_hint(&io::Error::from_raw_os_error(libc::ENOMEM)).is_none());
    }

    #[test]
    fn plain_http_is_told_from_a_tls_handshake() {
        for plain in [
            &b"GET / HTTP/1.1\r\n"[..],
            b"POST /x HTTP/1.1",
            b"OPTIONS * HTTP/1.1",
            b"get /",
            b"PROPPATCH ",
        ] {
            assert!(is_plain_http(plain), "{:?}", String::from_utf8_lossy(plain));
        }
        for other in [
            &[0x16, 0x03, 0x01, 0x02, 0x00][..],
            b"",
            b"GET",
            b" GET / HTTP/1.1",
            b"G3T / HTTP/1.1",
            b"ABCDEFGHIJKLMNOPQ / HTTP/1.1",
            b"\x80\x01GET ",
        ] {
            assert!(
                !is_plain_http(other),
                "{:?}",
                String::from_utf8_lossy(other)
            );
        }
        assert!(is_plain_http(b"ABCDEFGHIJKLMNOP "));
        assert_eq!(b"ABCDEFGHIJKLMNOP ".len(), PLAIN_HTTP_PEEK_LEN);
    }

    #[test]
    fn the_plain_http_answer_is_a_complete_400() {
        let text = std::str::from_utf8(PLAIN_HTTP_RESPONSE).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 400 Bad Request\r\n"), "{head}");
        assert!(head.contains("\r\nconnection: close"), "{head}");
        assert!(body.contains("expects HTTPS"), "{body}");
        assert!(
            head.contains(&format!("\r\ncontent-length: {}", body.len())),
            "{head}"
        );
    }

    /// The owner's listener stands in for actix's: handed off, its socket is closed by
    /// `close_socket` (a connection is refused), while its descriptor number stays open, on
    /// `/dev/null` and close-on-exec, for the owner to close later.
    #[test]
    fn closing_a_handed_off_listener_drops_the_socket_and_keeps_the_number() {
        use std::os::unix::fs::MetadataExt as _;

        let owner = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = owner.local_addr().unwrap();
        std::net::TcpStream::connect(addr).expect("listening before");
        let handed = HandedOffListener::of(&owner).unwrap();
        assert_eq!(handed.name(), addr.to_string());
        handed.close_socket().unwrap();

        let e = std::net::TcpStream::connect(addr).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::ConnectionRefused, "{e}");
        let devnull = std::fs::metadata("/dev/null").unwrap();
        assert_eq!(
            identity(owner.as_fd()).unwrap(),
            (devnull.dev(), devnull.ino()),
            "the number now names /dev/null"
        );
        let flags = nix::fcntl::fcntl(owner.as_fd(), nix::fcntl::FcntlArg::F_GETFD).unwrap();
        assert!(
            nix::fcntl::FdFlag::from_bits_truncate(flags).contains(nix::fcntl::FdFlag::FD_CLOEXEC)
        );
        // The owner closes its descriptor (now /dev/null) as usual.
        drop(owner);
    }

    /// A number that no longer names the remembered socket (its owner closed it and the number
    /// was reused) is left alone, and the error says which listener and descriptor.
    #[test]
    fn a_reused_descriptor_number_is_left_alone() {
        let mut owned = OwnedFd::from(std::net::TcpListener::bind("127.0.0.1:0").unwrap());
        let addr = socket_name(owned.as_fd());
        let handed = HandedOffListener::of(&owned).unwrap();
        // The number now names another socket, as if closed and reused.
        let other = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        nix::unistd::dup2(&other, &mut owned).unwrap();
        let e = handed.close_socket().unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains(&addr), "{msg}");
        assert!(msg.contains(&format!("fd {}", owned.as_raw_fd())), "{msg}");
        assert!(msg.contains("no longer names that socket"), "{msg}");
        assert_eq!(
            identity(owned.as_fd()).unwrap(),
            identity(other.as_fd()).unwrap(),
            "the number still names the other socket"
        );
    }
}
