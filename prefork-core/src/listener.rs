//! Listen addresses, binding in the master (shared-fd mode) or in each worker (`SO_REUSEPORT`
//! mode), and validation of inherited descriptors.

use std::fmt;
use std::io;
use std::net::{SocketAddr, TcpListener, ToSocketAddrs};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

use socket2::{Domain, Protocol, SockRef, Socket, Type};

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
/// or a [`SocketAddr`]. Port 0 picks a free port (in the master, so every worker shares it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenAddr(String);

impl ListenAddr {
    /// Resolves the address for `network`: the first resolved address of that family.
    pub(crate) fn resolve(&self, network: Network) -> Result<SocketAddr, Error> {
        let err = |source| Error::Address {
            addr: self.0.clone(),
            source,
        };
        let addrs = self.0.to_socket_addrs().map_err(err)?;
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
        f.write_str(&self.0)
    }
}

impl From<&str> for ListenAddr {
    fn from(s: &str) -> Self {
        ListenAddr(s.to_owned())
    }
}

impl From<String> for ListenAddr {
    fn from(s: String) -> Self {
        ListenAddr(s)
    }
}

impl From<&String> for ListenAddr {
    fn from(s: &String) -> Self {
        ListenAddr(s.clone())
    }
}

impl From<SocketAddr> for ListenAddr {
    fn from(a: SocketAddr) -> Self {
        ListenAddr(a.to_string())
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
    /// Shared-socket mode: the listening sockets every worker inherits, in configured order.
    pub(crate) listeners: Vec<OwnedFd>,
    /// `SO_REUSEPORT` mode: the value of `PREFORK_REUSEPORT` (the addresses each worker binds).
    pub(crate) reuseport: Option<String>,
    /// The listen backlog.
    pub(crate) backlog: i32,
    /// `SO_REUSEPORT` mode: each address kept bound (not listening) by the master, which
    /// validates it, fixes a port chosen with port 0, and reserves it for the workers.
    pub(crate) reservations: Vec<Socket>,
}

/// Binds every configured address (shared-socket mode) or validates and reserves it
/// (`SO_REUSEPORT` mode), logging each.
pub(crate) fn bind_all(
    addrs: &[ListenAddr],
    network: Network,
    reuseport: bool,
    backlog: Option<i32>,
    workers: usize,
) -> Result<Bound, Error> {
    let backlog = backlog.unwrap_or_else(default_backlog);
    let mut bound = Bound {
        listeners: Vec::new(),
        reuseport: None,
        backlog,
        reservations: Vec::new(),
    };
    let mut spec = Vec::new();
    for a in addrs {
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
            bound.reservations.push(s);
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
