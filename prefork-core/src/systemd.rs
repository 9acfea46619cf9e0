//! The service manager's protocols: socket activation (`LISTEN_FDS`) and readiness notification
//! (`NOTIFY_SOCKET`, `sd_notify(3)`).
//!
//! # Socket activation
//! When `LISTEN_PID` equals the master's pid and `LISTEN_FDS` ≥ 1, the master takes the sockets
//! the service manager passed at fd 3.. (once: a second [`Prefork::run`](crate::Prefork::run) in
//! the same process binds on its own) instead of binding. Each configured address is matched to
//! a passed socket by its name (`FileDescriptorName=` in the `.socket` unit, as
//! `LISTEN_FDNAMES` carries it: the configured address text, or the path of a `unix:` address)
//! or else by its local address (a configured port 0 matches any port on that host). The match
//! must be a listening stream socket of the address's family; anything else is an error that
//! names the fd and what it is. The master never changes its own environment: the workers'
//! commands simply do not get `LISTEN_*` (nor `NOTIFY_SOCKET`, `WATCHDOG_*`), and they inherit
//! the sockets the library's own way.
//!
//! # Notification
//! [`Notifier`] speaks the notification protocol. The master's supervisor sends, with
//! `NOTIFY_SOCKET` set (e.g. `Type=notify-reload` units):
//!
//! | when | call |
//! |---|---|
//! | once every worker is ready | [`Notifier::mainpid`], [`Notifier::status`] (`"2 workers ready"`), [`Notifier::ready`] |
//! | a reload starts / progresses | [`Notifier::reloading`] (`RELOADING=1` + `MONOTONIC_USEC`), [`Notifier::status`] (`"reloading 1/2"`) |
//! | the reload is done (or abandoned) | [`Notifier::status`], [`Notifier::ready`] |
//! | a stop starts | [`Notifier::stopping`] |
//! | every [`Notifier::watchdog_interval`] from the master's loop | [`Notifier::watchdog`] |
//!
//! A program that serves from a single process (no master) may use it the same way.

use std::ffi::OsStr;
use std::io;
use std::os::fd::{BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::{SocketAddr as UnixAddr, UnixDatagram};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use sd_notify::NotifyState;
use socket2::{Domain, SockRef, Type};

use crate::Error;

/// The variables of the service manager's protocols, none of which a worker gets.
pub(crate) const MANAGER_ENV: [&str; 6] = [
    "LISTEN_FDS",
    "LISTEN_PID",
    "LISTEN_FDNAMES",
    "NOTIFY_SOCKET",
    "WATCHDOG_USEC",
    "WATCHDOG_PID",
];

/// Set once the passed sockets have been taken: they are taken exactly once per process.
static TAKEN: AtomicBool = AtomicBool::new(false);

/// A socket passed by the service manager.
#[derive(Debug)]
pub(crate) struct Passed {
    pub(crate) fd: OwnedFd,
    /// Its `LISTEN_FDNAMES` entry (`"unknown"` when the manager sent none).
    pub(crate) name: String,
}

/// Takes the sockets passed for this process, if `LISTEN_PID` names it: `None` without socket
/// activation (or when they were taken already). Each is marked close-on-exec.
///
/// # Errors
/// [`Error::Config`] when the variables are malformed or a passed fd is not open.
pub(crate) fn take_listen_fds() -> Result<Option<Vec<Passed>>, Error> {
    let fds: Vec<(RawFd, String)> = sd_notify::listen_fds_with_names()
        .map_err(|e| {
            let n: RawFd = std::env::var("LISTEN_FDS")
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            if let Some(fd) = (3..3 + n.clamp(0, 4096)).find(|&fd| !crate::listener::fd_is_open(fd))
            {
                return Error::Config(format!(
                    "socket activation: LISTEN_FDS={n} but fd {fd} is not open"
                ));
            }
            Error::Config(format!(
                "socket activation: LISTEN_PID={:?} LISTEN_FDS={:?} LISTEN_FDNAMES={:?}: {e}",
                std::env::var("LISTEN_PID").unwrap_or_default(),
                std::env::var("LISTEN_FDS").unwrap_or_default(),
                std::env::var("LISTEN_FDNAMES").unwrap_or_default(),
            ))
        })?
        .collect();
    if fds.is_empty() || TAKEN.swap(true, Ordering::SeqCst) {
        return Ok(None);
    }
    let passed = fds
        .into_iter()
        .map(|(fd, name)| {
            // SAFETY: `listen_fds_with_names` checked that the fd is open (it set close-on-exec
            // on it) and the protocol hands it to this process alone; TAKEN ensures it is
            // wrapped only once.
            let fd = unsafe { OwnedFd::from_raw_fd(fd) };
            Passed { fd, name }
        })
        .collect();
    Ok(Some(passed))
}

/// What a descriptor is, for matching and for error messages.
#[derive(Debug)]
pub(crate) struct Described {
    pub(crate) domain: Option<Domain>,
    pub(crate) stream: bool,
    pub(crate) listening: bool,
    pub(crate) local: Option<socket2::SockAddr>,
    /// E.g. `"a listening TCP socket on 127.0.0.1:8080"`, `"a UDP socket on ..."`,
    /// `"not a socket"`.
    pub(crate) text: String,
}

pub(crate) fn describe(fd: BorrowedFd<'_>) -> Described {
    let sock = SockRef::from(&fd);
    let Ok(ty) = sock.r#type() else {
        return Described {
            domain: None,
            stream: false,
            listening: false,
            local: None,
            text: "not a socket".into(),
        };
    };
    let local = sock.local_addr().ok();
    let domain = local.as_ref().map(|a| a.domain());
    let stream = ty == Type::STREAM;
    let listening = stream && sock.is_listener().unwrap_or(false);
    let family = match domain {
        Some(d) if d == Domain::UNIX => "Unix",
        Some(d) if d == Domain::IPV4 || d == Domain::IPV6 => {
            if stream {
                "TCP"
            } else if ty == Type::DGRAM {
                "UDP"
            } else {
                "IP"
            }
        }
        _ => "other-family",
    };
    let kind = if ty == Type::STREAM {
        "stream"
    } else if ty == Type::DGRAM {
        "datagram"
    } else if ty == Type::SEQPACKET {
        "seqpacket"
    } else {
        "raw"
    };
    let state = if listening {
        "listening "
    } else if stream {
        "non-listening "
    } else {
        ""
    };
    let on = local.as_ref().map(show_addr).unwrap_or_default();
    Described {
        domain,
        stream,
        listening,
        local,
        text: format!("a {state}{family} {kind} socket{on}"),
    }
}

fn show_addr(a: &socket2::SockAddr) -> String {
    if let Some(s) = a.as_socket() {
        return format!(" on {s}");
    }
    match a.as_pathname() {
        Some(p) => format!(" on unix:{}", p.display()),
        None if a.is_unnamed() => " (unnamed)".into(),
        None => " (abstract)".into(),
    }
}

/// A sender of service-manager notifications (`sd_notify(3)`): see the [module docs](self) for
/// when the master sends what.
///
/// Sending never blocks and never fails the server: each method returns the error for the caller
/// to log.
#[derive(Debug)]
pub struct Notifier {
    socket: UnixDatagram,
    addr: UnixAddr,
    watchdog: Option<Duration>,
}

impl Notifier {
    /// The notifier the service manager asked for: `None` when `NOTIFY_SOCKET` is unset or
    /// empty. Reads `WATCHDOG_USEC` and `WATCHDOG_PID` too (see
    /// [`Notifier::watchdog_interval`]). The environment is left as it is.
    ///
    /// # Errors
    /// When the socket address is not usable (an unsupported `vsock:` address, say).
    pub fn from_env() -> io::Result<Option<Notifier>> {
        let Some(path) = std::env::var_os("NOTIFY_SOCKET").filter(|p| !p.is_empty()) else {
            return Ok(None);
        };
        let mut n = Notifier::new(&path)?;
        n.watchdog = watchdog_from(
            std::env::var("WATCHDOG_USEC").ok().as_deref(),
            std::env::var("WATCHDOG_PID").ok().as_deref(),
            std::process::id(),
        );
        Ok(Some(n))
    }

    /// A notifier for the socket at `path`: a file system path, or `@name` for an abstract
    /// socket (Linux). No watchdog.
    ///
    /// # Errors
    /// When the address is not usable or no datagram socket can be created.
    pub fn new(path: impl AsRef<OsStr>) -> io::Result<Notifier> {
        let path = path.as_ref();
        let addr = notify_addr(path)?;
        let socket = UnixDatagram::unbound()?;
        socket.set_nonblocking(true)?;
        Ok(Notifier {
            socket,
            addr,
            watchdog: None,
        })
    }

    /// How often to call [`Notifier::watchdog`]: half of `WATCHDOG_USEC`, when it is set and
    /// `WATCHDOG_PID` is unset or this process's pid (`sd_watchdog_enabled(3)`).
    pub fn watchdog_interval(&self) -> Option<Duration> {
        self.watchdog
    }

    /// `READY=1`: start-up (or a reload) is complete.
    pub fn ready(&self) -> io::Result<()> {
        self.send(&[NotifyState::Ready])
    }

    /// `RELOADING=1` with `MONOTONIC_USEC=` (required by `Type=notify-reload`): a reload
    /// starts. Send [`Notifier::ready`] when it is done.
    pub fn reloading(&self) -> io::Result<()> {
        self.send(&[NotifyState::Reloading, NotifyState::monotonic_usec_now()?])
    }

    /// `STOPPING=1`: a stop has begun.
    pub fn stopping(&self) -> io::Result<()> {
        self.send(&[NotifyState::Stopping])
    }

    /// `STATUS=...`: one line a human reads in `systemctl status`, e.g. `"2 workers ready"`.
    /// Line breaks are replaced by spaces.
    pub fn status(&self, status: &str) -> io::Result<()> {
        let one_line = status.replace(['\n', '\r'], " ");
        self.send(&[NotifyState::Status(&one_line)])
    }

    /// `MAINPID=pid`: the service's main process.
    pub fn mainpid(&self, pid: u32) -> io::Result<()> {
        self.send(&[NotifyState::MainPid(pid)])
    }

    /// `WATCHDOG=1`: the keep-alive ping; send it every [`Notifier::watchdog_interval`].
    pub fn watchdog(&self) -> io::Result<()> {
        self.send(&[NotifyState::Watchdog])
    }

    /// Sends several assignments in one datagram.
    pub fn send(&self, states: &[NotifyState<'_>]) -> io::Result<()> {
        let msg: String = states.iter().map(|s| format!("{s}\n")).collect();
        tracing::debug!(message = msg.trim_end(), "notifying the service manager");
        let n = self.socket.send_to_addr(msg.as_bytes(), &self.addr)?;
        if n != msg.len() {
            return Err(io::Error::new(
                io::ErrorKind::WriteZero,
                "notification datagram cut short",
            ));
        }
        Ok(())
    }
}

fn notify_addr(path: &OsStr) -> io::Result<UnixAddr> {
    use std::os::unix::ffi::OsStrExt;
    let bytes = path.as_bytes();
    if let Some(name) = bytes.strip_prefix(b"@") {
        #[cfg(any(target_os = "linux", target_os = "android"))]
        {
            use std::os::linux::net::SocketAddrExt;
            return UnixAddr::from_abstract_name(name);
        }
        #[cfg(not(any(target_os = "linux", target_os = "android")))]
        {
            let _ = name;
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "NOTIFY_SOCKET names an abstract socket, which only Linux has",
            ));
        }
    }
    if bytes.first() != Some(&b'/') {
        return Err(io::Error::new(
            io::ErrorKind::Unsupported,
            format!(
                "NOTIFY_SOCKET={:?} is neither an absolute path nor an abstract socket (@name)",
                path
            ),
        ));
    }
    UnixAddr::from_pathname(path)
}

/// `sd_watchdog_enabled(3)`: the ping interval (half the timeout) when the watchdog is on for
/// process `me`.
fn watchdog_from(usec: Option<&str>, pid: Option<&str>, me: u32) -> Option<Duration> {
    let usec: u64 = usec?.trim().parse().ok().filter(|&u| u > 0)?;
    if let Some(pid) = pid.filter(|p| !p.is_empty()) {
        if pid.trim().parse::<u32>().ok()? != me {
            return None;
        }
    }
    Some(Duration::from_micros(usec) / 2)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    fn receiver() -> (tempdir::Dir, UnixDatagram, std::path::PathBuf) {
        let dir = tempdir::Dir::new();
        let path = dir.0.join("notify.sock");
        let rx = UnixDatagram::bind(&path).unwrap();
        rx.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        (dir, rx, path)
    }

    fn recv(rx: &UnixDatagram) -> String {
        let mut buf = [0u8; 4096];
        let n = rx.recv(&mut buf).unwrap();
        String::from_utf8(buf[..n].to_vec()).unwrap()
    }

    mod tempdir {
        /// A directory removed on drop.
        pub(super) struct Dir(pub(super) std::path::PathBuf);
        impl Dir {
            pub(super) fn new() -> Dir {
                use std::sync::atomic::{AtomicUsize, Ordering};
                static N: AtomicUsize = AtomicUsize::new(0);
                let p = std::env::temp_dir().join(format!(
                    "prefork-sd-{}-{}",
                    std::process::id(),
                    N.fetch_add(1, Ordering::SeqCst)
                ));
                std::fs::create_dir_all(&p).unwrap();
                Dir(p)
            }
        }
        impl Drop for Dir {
            fn drop(&mut self) {
                let _ = std::fs::remove_dir_all(&self.0);
            }
        }
    }

    #[test]
    fn sends_each_state_as_the_protocol_says() {
        let (_dir, rx, path) = receiver();
        let n = Notifier::new(&path).unwrap();
        assert_eq!(n.watchdog_interval(), None);
        n.mainpid(42).unwrap();
        assert_eq!(recv(&rx), "MAINPID=42\n");
        n.status("2 workers\nready").unwrap();
        assert_eq!(recv(&rx), "STATUS=2 workers ready\n");
        n.ready().unwrap();
        assert_eq!(recv(&rx), "READY=1\n");
        n.reloading().unwrap();
        let msg = recv(&rx);
        let mut lines = msg.lines();
        assert_eq!(lines.next(), Some("RELOADING=1"));
        let usec: u64 = lines
            .next()
            .and_then(|l| l.strip_prefix("MONOTONIC_USEC="))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no MONOTONIC_USEC in {msg:?}"));
        assert!(usec > 0);
        n.ready().unwrap();
        assert_eq!(recv(&rx), "READY=1\n");
        n.watchdog().unwrap();
        assert_eq!(recv(&rx), "WATCHDOG=1\n");
        n.stopping().unwrap();
        assert_eq!(recv(&rx), "STOPPING=1\n");
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn abstract_sockets_work() {
        use std::os::linux::net::SocketAddrExt;
        let name = format!("prefork-test-{}", std::process::id());
        let rx = UnixDatagram::bind_addr(&UnixAddr::from_abstract_name(&name).unwrap()).unwrap();
        rx.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let n = Notifier::new(format!("@{name}")).unwrap();
        n.ready().unwrap();
        assert_eq!(recv(&rx), "READY=1\n");
    }

    #[test]
    fn a_relative_or_vsock_address_is_refused() {
        assert!(Notifier::new("vsock:2:1234").is_err());
        assert!(Notifier::new("relative/path").is_err());
    }

    #[test]
    fn no_listener_is_an_error_not_a_hang() {
        let (_dir, rx, path) = receiver();
        drop(rx);
        let n = Notifier::new(&path).unwrap();
        assert!(n.ready().is_err());
    }

    #[test]
    fn watchdog_interval_is_half_for_this_process_only() {
        assert_eq!(
            watchdog_from(Some("4000000"), None, 7),
            Some(Duration::from_secs(2))
        );
        assert_eq!(
            watchdog_from(Some("4000000"), Some("7"), 7),
            Some(Duration::from_secs(2))
        );
        assert_eq!(watchdog_from(Some("4000000"), Some("8"), 7), None);
        assert_eq!(watchdog_from(Some("0"), None, 7), None);
        assert_eq!(watchdog_from(Some("junk"), None, 7), None);
        assert_eq!(watchdog_from(None, Some("7"), 7), None);
    }

    #[test]
    fn describe_names_what_a_descriptor_is() {
        let file = std::fs::File::open("/dev/null").unwrap();
        assert_eq!(describe(file.as_fd()).text, "not a socket");
        let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let d = describe(udp.as_fd());
        assert!(
            d.text.starts_with("a UDP datagram socket on 127.0.0.1:"),
            "{}",
            d.text
        );
        assert!(!d.listening);
        let tcp = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let d = describe(tcp.as_fd());
        assert!(
            d.text
                .starts_with("a listening TCP stream socket on 127.0.0.1:"),
            "{}",
            d.text
        );
        assert!(d.listening && d.stream);
        let (a, _b) = std::os::unix::net::UnixStream::pair().unwrap();
        let d = describe(a.as_fd());
        assert_eq!(d.text, "a non-listening Unix stream socket (unnamed)");
    }
}
