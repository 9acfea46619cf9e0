//! Listen addresses, binding in the master (shared-fd mode) or in each worker (`SO_REUSEPORT`
//! mode), and validation of inherited descriptors.

use std::fmt;
use std::io;
use std::net::{SocketAddr, TcpListener, ToSocketAddrs};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};

use socket2::{Domain, Protocol, SockAddr, SockRef, Socket, Type};

use crate::Error;

/// Which address families a TCP listener accepts (fasthttp's `Network`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Network {
    /// The address's own family; an IPv6 wildcard such as `[::]:8080` also accepts IPv4
    /// (dual-stack, `IPV6_V6ONLY` off). The default.
    #[default]
    Tcp,
    /// IPv4 only: a host name resolves to its first IPv4 address; an IPv6 address is an error.
    Tcp4,
    /// IPv6 only (`IPV6_V6ONLY` on): a host name resolves to its first IPv6 address.
    Tcp6,
}

impl Network {
    fn accepts(self, addr: &SocketAddr) -> bool {
        match self {
            Network::Tcp => true,
            Network::Tcp4 => addr.is_ipv4(),
            Network::Tcp6 => addr.is_ipv6(),
        }
    }

    fn name(self) -> &'static str {
        match self {
            Network::Tcp => "tcp",
            Network::Tcp4 => "tcp4",
            Network::Tcp6 => "tcp6",
        }
    }
}

/// A listen address as the user wrote it: `"0.0.0.0:8080"`, `"[::]:8080"`, `"localhost:3000"`,
/// a [`SocketAddr`], or a Unix domain socket `"unix:/run/app.sock"` ([`ListenAddr::unix`]).
/// Port 0 picks a free port (in the master, so every worker shares it).
///
/// A Unix socket is always bound by the master and shared by the workers (also in
/// `SO_REUSEPORT` mode). Its file is created with mode [`DEFAULT_UNIX_MODE`] (see
/// [`ListenAddr::unix_mode`]); a stale file left by a dead server is replaced, but never a socket
/// that some process still listens on; the file is removed when the master returns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenAddr {
    text: String,
    unix_mode: u32,
}

/// The default permission bits of a Unix socket file the master creates: `0o660` (owner and
/// group may connect).
pub const DEFAULT_UNIX_MODE: u32 = 0o660;

impl ListenAddr {
    fn new(text: String) -> Self {
        ListenAddr {
            text,
            unix_mode: DEFAULT_UNIX_MODE,
        }
    }

    /// A Unix domain socket address: the same as `"unix:" + path`.
    pub fn unix(path: impl AsRef<Path>) -> Self {
        ListenAddr::new(format!("unix:{}", path.as_ref().display()))
    }

    /// The permission bits of the socket file when this is a Unix address (ignored for TCP).
    /// Default: [`DEFAULT_UNIX_MODE`] (`0o660`).
    pub fn unix_mode(mut self, mode: u32) -> Self {
        self.unix_mode = mode & 0o7777;
        self
    }

    /// The socket file's path when this is a Unix address (`unix:/path`).
    pub fn unix_path(&self) -> Option<&Path> {
        self.text.strip_prefix("unix:").map(Path::new)
    }

    /// The text the address was given as.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Resolves the address for `network`: the first resolved address of that family.
    pub(crate) fn resolve(&self, network: Network) -> Result<SocketAddr, Error> {
        let err = |source| Error::Address {
            addr: self.text.clone(),
            source,
        };
        if self.unix_path().is_some() {
            return Err(err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "a Unix socket address, where a TCP address is needed",
            )));
        }
        let addrs = self.text.to_socket_addrs().map_err(err)?;
        let mut seen = false;
        for a in addrs {
            seen = true;
            if network.accepts(&a) {
                return Ok(a);
            }
        }
        let why = if seen {
            format!("no {} address", network.name())
        } else {
            "resolves to no address".to_owned()
        };
        Err(err(io::Error::new(io::ErrorKind::InvalidInput, why)))
    }
}

impl fmt::Display for ListenAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl From<&str> for ListenAddr {
    fn from(s: &str) -> Self {
        ListenAddr::new(s.to_owned())
    }
}

impl From<String> for ListenAddr {
    fn from(s: String) -> Self {
        ListenAddr::new(s)
    }
}

impl From<&String> for ListenAddr {
    fn from(s: &String) -> Self {
        ListenAddr::new(s.clone())
    }
}

impl From<SocketAddr> for ListenAddr {
    fn from(a: SocketAddr) -> Self {
        ListenAddr::new(a.to_string())
    }
}

/// The accept backlog: `/proc/sys/net/core/somaxconn` where readable, else 4096 (the kernel
/// caps it at somaxconn anyway).
pub(crate) fn default_backlog() -> i32 {
    std::fs::read_to_string("/proc/sys/net/core/somaxconn")
        .ok()
        .and_then(|s| s.trim().parse::<i32>().ok())
        .filter(|&n| n > 0)
        .unwrap_or(4096)
}

/// Creates a TCP socket for `addr` with `SO_REUSEADDR` (and `SO_REUSEPORT` if asked) and binds
/// it. The socket is close-on-exec.
pub(crate) fn bind_socket(
    addr: SocketAddr,
    network: Network,
    reuseport: bool,
) -> Result<Socket, Error> {
    let err = |source| Error::Bind { addr, source };
    let socket =
        Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP)).map_err(err)?;
    socket.set_reuse_address(true).map_err(err)?;
    if reuseport {
        socket.set_reuse_port(true).map_err(err)?;
    }
    if addr.is_ipv6() {
        socket.set_only_v6(network == Network::Tcp6).map_err(err)?;
    }
    socket.bind(&addr.into()).map_err(err)?;
    Ok(socket)
}

/// Binds and listens: the master's shared listener, or a worker's own `SO_REUSEPORT` listener.
pub(crate) fn listen(
    addr: SocketAddr,
    network: Network,
    reuseport: bool,
    backlog: i32,
) -> Result<Socket, Error> {
    let socket = bind_socket(addr, network, reuseport)?;
    socket
        .listen(backlog)
        .map_err(|source| Error::Bind { addr, source })?;
    Ok(socket)
}

/// Binds `addr` the way a prefork master does (`SO_REUSEADDR`, the backlog from
/// `/proc/sys/net/core/somaxconn`), for a process that serves without a master: a
/// single-process mode such as the examples' `--no-prefork` baseline. The listener is
/// non-blocking.
///
/// # Errors
/// [`Error::Address`] if the address does not parse or resolve, [`Error::Bind`] if binding fails
/// (port in use, permission denied); both name the address.
pub fn bind(addr: impl Into<ListenAddr>) -> Result<TcpListener, Error> {
    let resolved = addr.into().resolve(Network::Tcp)?;
    let socket = listen(resolved, Network::Tcp, false, default_backlog())?;
    let listener = TcpListener::from(OwnedFd::from(socket));
    listener
        .set_nonblocking(true)
        .map_err(|source| Error::Bind {
            addr: resolved,
            source,
        })?;
    Ok(listener)
}

/// What the master binds before it starts any worker.
#[derive(Debug)]
pub(crate) struct Bound {
    /// Shared-socket mode: the listening sockets every worker inherits, in configured order
    /// (TCP and Unix alike; Unix ones are shared in `SO_REUSEPORT` mode too).
    pub(crate) listeners: Vec<OwnedFd>,
    /// `SO_REUSEPORT` mode: the value of `PREFORK_REUSEPORT` (the addresses each worker binds).
    pub(crate) reuseport: Option<String>,
    /// The listen backlog.
    pub(crate) backlog: i32,
    /// What the master keeps until it returns; dropping it releases the reservations and
    /// removes the Unix socket files.
    pub(crate) reservations: Reservations,
}

/// Held by the master until `run` returns.
#[derive(Debug, Default)]
pub(crate) struct Reservations {
    /// `SO_REUSEPORT` mode: each address kept bound (not listening) by the master, which
    /// validates it, fixes a port chosen with port 0, and reserves it for the workers.
    pub(crate) sockets: Vec<Socket>,
    /// The Unix socket files the master created; each is removed on drop.
    pub(crate) unix_files: Vec<UnixSocketFile>,
}

/// A Unix socket file this master created. Dropping it removes the file, if it is still the
/// same socket (not one that someone else put at that path since).
#[derive(Debug)]
pub(crate) struct UnixSocketFile {
    path: PathBuf,
    dev: u64,
    ino: u64,
}

impl Drop for UnixSocketFile {
    fn drop(&mut self) {
        use std::os::unix::fs::MetadataExt;
        match std::fs::symlink_metadata(&self.path) {
            Ok(m) if m.dev() == self.dev && m.ino() == self.ino => {
                match std::fs::remove_file(&self.path) {
                    Ok(()) => {
                        tracing::debug!(path = %self.path.display(), "removed the socket file")
                    }
                    Err(e) => {
                        tracing::warn!(path = %self.path.display(), error = %e, "cannot remove the socket file")
                    }
                }
            }
            _ => {
                tracing::debug!(path = %self.path.display(), "socket file already gone or replaced; left alone")
            }
        }
    }
}

/// Binds a Unix stream socket at `path` with permission bits `mode` and listens. A stale socket
/// file (nothing accepts on it) is removed first; a live one, or a file that is not a socket,
/// is an error.
pub(crate) fn bind_unix(
    path: &Path,
    mode: u32,
    backlog: i32,
) -> Result<(Socket, UnixSocketFile), Error> {
    use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
    let ctx = |what: &str| format!("cannot listen on unix:{}: {what}", path.display());
    match std::fs::symlink_metadata(path) {
        Ok(m) if !m.file_type().is_socket() => {
            return Err(Error::io(
                ctx("the path exists and is not a socket; it is left alone"),
                io::Error::from(io::ErrorKind::AlreadyExists),
            ))
        }
        Ok(_) => match std::os::unix::net::UnixStream::connect(path) {
            Ok(_) => {
                return Err(Error::io(
                    ctx("another process listens on this socket; it is not replaced"),
                    io::Error::from(io::ErrorKind::AddrInUse),
                ))
            }
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                std::fs::remove_file(path)
                    .map_err(|e| Error::io(ctx("cannot remove the stale socket file"), e))?;
                tracing::info!(path = %path.display(), "removed a stale socket file");
            }
            Err(e) => {
                return Err(Error::io(
                    ctx("cannot tell whether the existing socket is in use"),
                    e,
                ))
            }
        },
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(Error::io(ctx("cannot inspect the path"), e)),
    }
    let socket =
        Socket::new(Domain::UNIX, Type::STREAM, None).map_err(|e| Error::io(ctx("socket"), e))?;
    let addr = SockAddr::unix(path).map_err(|e| Error::io(ctx("bad path"), e))?;
    socket.bind(&addr).map_err(|e| Error::io(ctx("bind"), e))?;
    let meta = std::fs::symlink_metadata(path).map_err(|e| Error::io(ctx("stat"), e))?;
    let file = UnixSocketFile {
        path: path.to_owned(),
        dev: meta.dev(),
        ino: meta.ino(),
    };
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(|e| Error::io(ctx(&format!("cannot set mode {mode:o}")), e))?;
    socket
        .listen(backlog)
        .map_err(|e| Error::io(ctx("listen"), e))?;
    Ok((socket, file))
}

/// Binds every configured address (shared-socket mode) or validates and reserves it
/// (`SO_REUSEPORT` mode), logging each. Under socket activation (`LISTEN_PID` is this process)
/// the sockets the service manager passed are used instead; see [`crate::systemd`].
pub(crate) fn bind_all(
    addrs: &[ListenAddr],
    network: Network,
    reuseport: bool,
    backlog: Option<i32>,
    workers: usize,
) -> Result<Bound, Error> {
    let backlog = backlog.unwrap_or_else(default_backlog);
    if let Some(passed) = crate::systemd::take_listen_fds()? {
        if reuseport {
            return Err(Error::Config(
                "SO_REUSEPORT mode cannot serve the sockets passed by the service manager \
                 (socket activation): use the default shared-socket mode"
                    .into(),
            ));
        }
        return use_passed(addrs, network, passed, backlog, workers);
    }
    let mut bound = Bound {
        listeners: Vec::new(),
        reuseport: None,
        backlog,
        reservations: Reservations::default(),
    };
    let mut spec = Vec::new();
    for a in addrs {
        if let Some(path) = a.unix_path() {
            let (s, file) = bind_unix(path, a.unix_mode, backlog)?;
            tracing::info!(addr = %a, workers, "listening");
            bound.listeners.push(OwnedFd::from(s));
            bound.reservations.unix_files.push(file);
            continue;
        }
        let addr = a.resolve(network)?;
        if reuseport {
            let s = bind_socket(addr, network, true)?;
            let local = s
                .local_addr()
                .ok()
                .and_then(|l| l.as_socket())
                .unwrap_or(addr);
            let dual = local.is_ipv6() && network == Network::Tcp;
            spec.push(format!("{local}{}", if dual { "/dual" } else { "" }));
            tracing::info!(addr = %local, workers, "listening (SO_REUSEPORT, one socket per worker)");
            bound.reservations.sockets.push(s);
        } else {
            let s = listen(addr, network, false, backlog)?;
            let local = s.local_addr().ok().and_then(|l| l.as_socket());
            tracing::info!(addr = %local.unwrap_or(addr), workers, "listening");
            bound.listeners.push(OwnedFd::from(s));
        }
    }
    bound.reuseport = (!spec.is_empty()).then(|| spec.join(","));
    Ok(bound)
}

/// Socket activation: matches each configured address to a passed socket (by name, else by
/// local address) and checks that it is a listening stream socket of the right family.
fn use_passed(
    addrs: &[ListenAddr],
    network: Network,
    passed: Vec<crate::systemd::Passed>,
    backlog: i32,
    workers: usize,
) -> Result<Bound, Error> {
    use crate::systemd::describe;
    let mut left: Vec<Option<crate::systemd::Passed>> = passed.into_iter().map(Some).collect();
    let inventory = |left: &[Option<crate::systemd::Passed>]| {
        left.iter()
            .flatten()
            .map(|p| {
                format!(
                    "fd {} (name {:?}): {}",
                    p.fd.as_raw_fd(),
                    p.name,
                    describe(p.fd.as_fd()).text
                )
            })
            .collect::<Vec<_>>()
            .join("; ")
    };
    let mut listeners = Vec::new();
    for a in addrs {
        let unix = a.unix_path();
        let tcp = match unix {
            Some(_) => None,
            None => Some(a.resolve(network)?),
        };
        let name_matches = |p: &crate::systemd::Passed| {
            p.name == a.as_str() || unix.is_some_and(|u| Path::new(&p.name) == u)
        };
        let addr_matches = |p: &crate::systemd::Passed| {
            let d = describe(p.fd.as_fd());
            let Some(local) = d.local else { return false };
            match (unix, tcp) {
                (Some(path), _) => local.as_pathname() == Some(path),
                (None, Some(want)) => local.as_socket().is_some_and(|got| {
                    got.ip() == want.ip() && (want.port() == 0 || got.port() == want.port())
                }),
                (None, None) => false,
            }
        };
        let i = left
            .iter()
            .position(|p| p.as_ref().is_some_and(name_matches))
            .or_else(|| {
                left.iter()
                    .position(|p| p.as_ref().is_some_and(addr_matches))
            });
        let Some(i) = i else {
            return Err(Error::Config(format!(
                "socket activation: no socket passed by the service manager matches {a} \
                 (by name or by local address); passed: {}",
                inventory(&left)
            )));
        };
        let p = left[i].take().expect("position found it");
        let d = describe(p.fd.as_fd());
        let family_ok = match (unix, tcp, d.domain) {
            (Some(_), _, Some(dom)) => dom == Domain::UNIX,
            (None, Some(want), Some(dom)) => dom == Domain::for_address(want),
            _ => false,
        };
        if !(d.stream && d.listening && family_ok) {
            let family = match (unix, tcp) {
                (Some(_), _) => "Unix",
                (None, Some(w)) if w.is_ipv6() => "TCP/IPv6",
                _ => "TCP/IPv4",
            };
            return Err(Error::Config(format!(
                "socket activation: fd {} (name {:?}) passed for {a} is {}, not a listening \
                 {family} stream socket",
                p.fd.as_raw_fd(),
                p.name,
                d.text
            )));
        }
        tracing::info!(
            addr = %local_text(&d),
            fd = p.fd.as_raw_fd(),
            name = %p.name,
            workers,
            "listening (socket passed by the service manager)"
        );
        listeners.push(p.fd);
    }
    for p in left.into_iter().flatten() {
        tracing::warn!(
            fd = p.fd.as_raw_fd(),
            name = %p.name,
            "socket passed by the service manager matches no configured address; closing it"
        );
    }
    Ok(Bound {
        listeners,
        reuseport: None,
        backlog,
        reservations: Reservations::default(),
    })
}

fn local_text(d: &crate::systemd::Described) -> String {
    match &d.local {
        Some(l) => match (l.as_socket(), l.as_pathname()) {
            (Some(s), _) => s.to_string(),
            (None, Some(p)) => format!("unix:{}", p.display()),
            _ => "?".into(),
        },
        None => "?".into(),
    }
}

/// Is `fd` open in this process?
pub(crate) fn fd_is_open(fd: RawFd) -> bool {
    if fd < 0 {
        return false;
    }
    nix::fcntl::fcntl(
        // SAFETY: F_GETFD on any non-negative integer is harmless; the borrow ends with this call.
        unsafe { BorrowedFd::borrow_raw(fd) },
        nix::fcntl::FcntlArg::F_GETFD,
    )
    .is_ok()
}

/// Takes ownership of inherited descriptor `fd` if it is a listening TCP socket: marks it
/// close-on-exec (so it does not leak into the worker's own subprocesses) and non-blocking.
///
/// `what` names the descriptor in errors. The fd is left untouched when it is not open or not a
/// listening TCP socket.
pub(crate) fn inherit_tcp_listener(fd: RawFd, what: &str) -> Result<TcpListener, String> {
    if !fd_is_open(fd) {
        return Err(format!("{what} (fd {fd}) is not open"));
    }
    // SAFETY: the fd is open (checked above) and we only borrow it to inspect it.
    let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
    let sock = SockRef::from(&borrowed);
    let ty = sock
        .r#type()
        .map_err(|e| format!("{what} (fd {fd}) is not a socket: {e}"))?;
    if ty != Type::STREAM {
        return Err(format!("{what} (fd {fd}) is not a stream socket"));
    }
    let local = sock
        .local_addr()
        .map_err(|e| format!("{what} (fd {fd}): cannot read its address: {e}"))?;
    if local.as_socket().is_none() {
        return Err(format!("{what} (fd {fd}) is not a TCP socket"));
    }
    #[cfg(any(target_os = "linux", target_os = "android"))]
    if !sock.is_listener().unwrap_or(false) {
        return Err(format!("{what} (fd {fd}) is not a listening socket"));
    }
    // SAFETY: the fd is open, is a listening TCP socket, and nothing else in this process owns
    // it: the master placed it here for us and we take it exactly once.
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    set_cloexec(&owned).map_err(|e| format!("{what} (fd {fd}): {e}"))?;
    let listener = TcpListener::from(owned);
    listener
        .set_nonblocking(true)
        .map_err(|e| format!("{what} (fd {fd}): {e}"))?;
    Ok(listener)
}

/// Whether inherited descriptor `fd` is a Unix domain socket (so the worker takes it with
/// [`inherit_unix_listener`] rather than [`inherit_tcp_listener`]).
pub(crate) fn is_unix_socket(fd: RawFd) -> bool {
    if !fd_is_open(fd) {
        return false;
    }
    // SAFETY: the fd is open (checked above) and we only borrow it to inspect it.
    let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
    SockRef::from(&borrowed)
        .local_addr()
        .is_ok_and(|a| a.domain() == Domain::UNIX)
}

/// Takes ownership of inherited descriptor `fd` if it is a listening Unix stream socket: marks it
/// close-on-exec and non-blocking. `what` names the descriptor in errors.
pub(crate) fn inherit_unix_listener(fd: RawFd, what: &str) -> Result<UnixListener, String> {
    if !fd_is_open(fd) {
        return Err(format!("{what} (fd {fd}) is not open"));
    }
    // SAFETY: the fd is open (checked above) and we only borrow it to inspect it.
    let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
    let d = crate::systemd::describe(borrowed);
    if d.domain != Some(Domain::UNIX) || !d.stream || !d.listening {
        return Err(format!(
            "{what} (fd {fd}) is {}, not a listening Unix stream socket",
            d.text
        ));
    }
    // SAFETY: the fd is open, is a listening Unix socket, and nothing else in this process owns
    // it: the master placed it here for us and we take it exactly once.
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    set_cloexec(&owned).map_err(|e| format!("{what} (fd {fd}): {e}"))?;
    let listener = UnixListener::from(owned);
    listener
        .set_nonblocking(true)
        .map_err(|e| format!("{what} (fd {fd}): {e}"))?;
    Ok(listener)
}

pub(crate) fn set_cloexec(fd: &impl AsRawFd) -> io::Result<()> {
    use nix::fcntl::{fcntl, FcntlArg, FdFlag};
    // SAFETY: the caller holds the fd open for the duration of this call.
    let fd = unsafe { BorrowedFd::borrow_raw(fd.as_raw_fd()) };
    fcntl(fd, FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_by_network() {
        let a = ListenAddr::from("127.0.0.1:0");
        assert!(a.resolve(Network::Tcp4).unwrap().is_ipv4());
        let e = a.resolve(Network::Tcp6).unwrap_err();
        assert!(e.to_string().contains("no tcp6 address"), "{e}");
        assert!(e.to_string().contains("127.0.0.1:0"), "{e}");
        let e = ListenAddr::from("127.0.0.1:99999")
            .resolve(Network::Tcp)
            .unwrap_err();
        assert!(e.to_string().contains("127.0.0.1:99999"), "{e}");
        let e = ListenAddr::from("no-port")
            .resolve(Network::Tcp)
            .unwrap_err();
        assert!(matches!(e, Error::Address { .. }));
    }

    #[test]
    fn port_in_use_is_a_bind_error_naming_the_address() {
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = taken.local_addr().unwrap();
        let e = listen(addr, Network::Tcp, false, 128).unwrap_err();
        match &e {
            Error::Bind { addr: a, source } => {
                assert_eq!(*a, addr);
                assert_eq!(source.kind(), io::ErrorKind::AddrInUse);
            }
            other => panic!("unexpected {other:?}"),
        }
        assert!(e.to_string().contains(&addr.to_string()));
    }

    #[test]
    fn inherit_refuses_what_is_not_a_listener() {
        let file = std::fs::File::open("/dev/null").unwrap();
        let e = inherit_tcp_listener(file.as_raw_fd(), "listener 0").unwrap_err();
        assert!(e.contains("not a socket"), "{e}");
        let (a, _b) = std::os::unix::net::UnixStream::pair().unwrap();
        let e = inherit_tcp_listener(a.as_raw_fd(), "listener 0").unwrap_err();
        assert!(e.contains("not a TCP socket"), "{e}");
        let connected_only = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let e = inherit_tcp_listener(connected_only.as_raw_fd(), "listener 0").unwrap_err();
        assert!(e.contains("not a stream socket"), "{e}");
        assert!(inherit_tcp_listener(100_000, "listener 0")
            .unwrap_err()
            .contains("not open"));
    }

    #[test]
    fn inherit_takes_a_listener() {
        let s = listen("127.0.0.1:0".parse().unwrap(), Network::Tcp, false, 16).unwrap();
        let fd = std::os::fd::IntoRawFd::into_raw_fd(OwnedFd::from(s));
        let l = inherit_tcp_listener(fd, "listener 0").unwrap();
        assert!(l.local_addr().unwrap().port() != 0);
    }

    #[test]
    fn ipv6_wildcard_is_dual_stack_unless_tcp6() {
        use std::net::TcpStream;
        let wildcard: SocketAddr = "[::]:0".parse().unwrap();
        let Ok(dual) = listen(wildcard, Network::Tcp, false, 16) else {
            return; // no IPv6 on this machine
        };
        let port = dual.local_addr().unwrap().as_socket().unwrap().port();
        assert!(
            TcpStream::connect(("127.0.0.1", port)).is_ok(),
            "tcp: IPv4 reaches [::]"
        );
        assert!(TcpStream::connect(("::1", port)).is_ok());
        let v6only = listen(wildcard, Network::Tcp6, false, 16).unwrap();
        let port = v6only.local_addr().unwrap().as_socket().unwrap().port();
        assert!(TcpStream::connect(("::1", port)).is_ok());
        assert!(
            TcpStream::connect(("127.0.0.1", port)).is_err(),
            "tcp6 is IPv6 only"
        );
    }

    #[test]
    fn backlog_is_positive() {
        assert!(default_backlog() > 0);
    }
}
