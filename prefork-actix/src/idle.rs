//! The drain grace for actix-web: once the worker drains, a keep-alive connection that stays idle
//! (no request in progress, none started or finished) for a whole
//! [`Drain::grace`](prefork_core::Drain::grace) is closed by the worker.
//!
//! actix-web gives no handle on a connection and no hook for closing one, so the worker keeps its
//! own books:
//! - every connection is registered ([`register`] from `on_connect` under
//!   [`run_prefork`](crate::HttpServerExt::run_prefork), [`register_socket`] by
//!   [`Server::serve`](crate::Server::serve)'s accept loop): its socket's descriptor and
//!   identity, in a list that belongs to the actix worker thread serving it (thread-local: each
//!   connection lives on one thread);
//! - [`PreforkMiddleware`](crate::PreforkMiddleware) holds a [`Busy`] guard from a request's
//!   start until its response body has been sent to the end (or dropped), so a streaming
//!   response counts as in progress until its last chunk;
//! - when the worker drains, a task on each actix worker thread ([`start_here`], started as the
//!   app is built there) looks at that thread's connections once per grace, and shuts down the
//!   read side of every socket that was idle since its previous look.
//!
//! actix then reads end-of-file, as if the client had closed its side: with no request in
//! progress it flushes whatever it still buffers and closes the connection, so the client sees a
//! clean end-of-file. A request that reached the socket just before the read side was shut down
//! is still read (the kernel returns queued data before the end-of-file), answered (with actix's
//! default `h1_allow_half_closed(true)`), and then the connection closes. HTTP/2 connections are closed the same way, without a GOAWAY frame: actix
//! has no hook to send one.
//!
//! Without the middleware no request is seen, so no connection could be told idle: nothing is
//! registered and nothing is closed here (actix's `keep_alive` timer still applies).

use std::any::Any;
use std::cell::{Cell, RefCell};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::os::unix::fs::MetadataExt as _;
use std::rc::{Rc, Weak};
use std::time::Duration;

use prefork_core::Drain;

/// One connection's state, shared by its connection data (`HttpRequest::conn_data`), the
/// requests in progress on it ([`Busy`]) and its thread's list.
#[derive(Debug)]
pub(crate) struct ConnState {
    socket: Option<Socket>,
    /// Requests in progress: from the middleware's call to the end of the response body.
    busy: Cell<u32>,
    /// Bumped when a request starts and when one ends: "something happened".
    activity: Cell<u64>,
    /// `activity` when the drain task last looked (`None`: not yet).
    seen: Cell<Option<u64>>,
    /// The read side was shut down (once is enough).
    shut: Cell<bool>,
}

/// A connection's socket: its descriptor number and the socket's identity (device and inode,
/// from `fstat` when the connection was registered).
///
/// Why the number is not someone else's descriptor when the drain task shuts it down: the
/// connection data that holds this state is normally dropped with the connection, and the drain
/// task runs on the connection's own actix worker thread, the only thread that closes it. But a
/// handler can keep an `HttpRequest` (which holds the connection data) after its connection has
/// closed, and then the number may be reused by another descriptor of this process. So before
/// the shutdown the number is checked to still name the same socket (`/proc/self/fd/N` has the
/// recorded device and inode; without `/proc` nothing is shut down); a live socket keeps its
/// inode, and between that check and the shutdown nothing else runs on this thread, which is
/// the only one that could close it.
#[derive(Debug, Clone, Copy)]
struct Socket {
    fd: RawFd,
    dev: u64,
    ino: u64,
}

impl Socket {
    fn of(fd: BorrowedFd<'_>) -> Option<Socket> {
        let stat = nix::sys::stat::fstat(fd).ok()?;
        #[allow(clippy::unnecessary_cast)] // `dev_t` and `ino_t` are not `u64` on every target
        Some(Socket {
            fd: fd.as_raw_fd(),
            dev: stat.st_dev as u64,
            ino: stat.st_ino as u64,
        })
    }

    /// Whether the descriptor number still names this socket.
    fn still_ours(self) -> bool {
        std::fs::metadata(format!("/proc/self/fd/{}", self.fd))
            .is_ok_and(|m| m.dev() == self.dev && m.ino() == self.ino)
    }

    /// Shuts down the read side: actix reads end-of-file and closes the connection itself.
    /// (Shutting down both sides would also make a response to a request that arrived at this
    /// very moment fail; the read side alone lets actix read and answer it.)
    fn shut_reading(self) -> bool {
        if !self.still_ours() {
            tracing::debug!(
                fd = self.fd,
                "idle connection already gone; not shutting it down"
            );
            return false;
        }
        match nix::sys::socket::shutdown(self.fd, nix::sys::socket::Shutdown::Read) {
            Ok(()) => true,
            Err(e) => {
                tracing::debug!(fd = self.fd, error = %e, "shutting down an idle connection");
                false
            }
        }
    }
}

impl ConnState {
    /// Requests in progress.
    #[cfg(test)]
    pub(crate) fn busy(&self) -> u32 {
        self.busy.get()
    }

    /// A connection that is not registered anywhere (for tests).
    #[cfg(test)]
    pub(crate) fn unregistered() -> Rc<ConnState> {
        Rc::new(ConnState {
            socket: None,
            busy: Cell::new(0),
            activity: Cell::new(0),
            seen: Cell::new(None),
            shut: Cell::new(false),
        })
    }

    /// Bytes arrived on the connection (under [`Server::serve`](crate::Server::serve), whose
    /// connection I/O sees reads): something happened, so a request head still arriving is not
    /// taken for an idle connection.
    pub(crate) fn touch(&self) {
        self.activity.set(self.activity.get().wrapping_add(1));
    }

    /// One look by the drain task: shuts the connection's reading down if nothing happened on it
    /// since the previous look and no request is in progress. Returns whether it did.
    fn look(&self) -> bool {
        let now = self.activity.get();
        let quiet = self.seen.replace(Some(now)) == Some(now);
        if !quiet || self.busy.get() != 0 || self.shut.get() {
            return false;
        }
        let Some(socket) = self.socket else {
            return false;
        };
        self.shut.set(true);
        socket.shut_reading()
    }
}

/// A dropped connection leaves its thread's list soon: a `Weak` keeps its state's allocation, and
/// thousands of those left behind by a wave of connections, scattered over the heap, would keep
/// the allocator from giving the wave's memory back (`Drain` trims it once the connections are
/// gone). The list is pruned once it holds more than twice the live connections (plus
/// [`MIN_PRUNE`]): amortised O(1) per connection.
impl Drop for ConnState {
    fn drop(&mut self) {
        if self.socket.is_none() {
            return;
        }
        let _ = REGISTRY.try_with(|r| {
            // Never borrowed while a connection's state drops (the drain task's look holds
            // strong references only to states that stay alive); skip rather than panic.
            let Ok(mut r) = r.try_borrow_mut() else {
                return;
            };
            r.live = r.live.saturating_sub(1);
            if r.conns.len() > 2 * r.live + MIN_PRUNE {
                r.conns.retain(|c| c.strong_count() > 0);
                if r.conns.capacity() > 4 * r.conns.len() + MIN_PRUNE {
                    r.conns.shrink_to_fit();
                }
            }
        });
    }
}

/// A request in progress on a connection: from the middleware's call until the response body
/// has ended or been dropped.
#[derive(Debug)]
pub(crate) struct Busy(Rc<ConnState>);

impl Busy {
    pub(crate) fn new(conn: &Rc<ConnState>) -> Busy {
        conn.busy.set(conn.busy.get() + 1);
        conn.activity.set(conn.activity.get().wrapping_add(1));
        Busy(conn.clone())
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        let conn = &self.0;
        conn.busy.set(conn.busy.get().saturating_sub(1));
        conn.activity.set(conn.activity.get().wrapping_add(1));
    }
}

/// This actix worker thread's connections.
struct Registry {
    /// Whether this thread runs the drain task (connections are registered only then).
    running: bool,
    conns: Vec<Weak<ConnState>>,
    /// Connections in `conns` not yet dropped.
    live: usize,
}

const MIN_PRUNE: usize = 64;

thread_local! {
    static REGISTRY: RefCell<Registry> = const {
        RefCell::new(Registry {
            running: false,
            conns: Vec::new(),
            live: 0,
        })
    };
}

/// Starts this thread's drain task, once per thread: after the worker's shutdown, every
/// [`Drain::grace`] it closes the connections of this thread that stayed idle since its
/// previous look. Call it on an actix worker thread (as the app is built there).
pub(crate) fn start_here(drain: &Drain) {
    let first = REGISTRY.with(|r| !std::mem::replace(&mut r.borrow_mut().running, true));
    if !first {
        return;
    }
    let drain = drain.clone();
    actix_rt::spawn(async move {
        let _ = drain.shutdown().await;
        // A zero grace still gives a request that is being handed to actix one tick.
        let grace = drain.grace().max(Duration::from_millis(1));
        loop {
            let closed = look_at_all();
            if closed > 0 {
                tracing::debug!(
                    closed,
                    "closed idle keep-alive connections after the drain grace"
                );
            }
            actix_rt::time::sleep(grace).await;
        }
    });
}

/// Registers a new connection of this thread (`io` is what actix's `on_connect` hands over).
/// `None` if this thread runs no drain task (the app has no `PreforkMiddleware`).
pub(crate) fn register(io: &dyn Any) -> Option<Rc<ConnState>> {
    register_socket(socket_of(io))
}

/// Registers a new connection of this thread by its socket (`None`: a stream without one, never
/// shut down). `None` if this thread runs no drain task (the app has no `PreforkMiddleware`).
pub(crate) fn register_socket(socket: Option<BorrowedFd<'_>>) -> Option<Rc<ConnState>> {
    REGISTRY.with(|r| {
        let mut r = r.borrow_mut();
        if !r.running {
            return None;
        }
        let conn = Rc::new(ConnState {
            socket: socket.and_then(Socket::of),
            busy: Cell::new(0),
            activity: Cell::new(0),
            seen: Cell::new(None),
            shut: Cell::new(false),
        });
        if conn.socket.is_some() {
            r.conns.push(Rc::downgrade(&conn));
            r.live += 1;
        }
        Some(conn)
    })
}

/// One look at every connection of this thread; returns how many were closed.
fn look_at_all() -> usize {
    REGISTRY.with(|r| {
        let mut closed = 0;
        r.borrow_mut().conns.retain(|c| match c.upgrade() {
            Some(conn) => {
                closed += usize::from(conn.look());
                true
            }
            None => false,
        });
        closed
    })
}

/// The socket under the stream actix hands to `on_connect`: plain TCP, TLS over TCP, or a Unix
/// domain socket.
fn socket_of(io: &dyn Any) -> Option<BorrowedFd<'_>> {
    use actix_web::rt::net::{TcpStream, UnixStream};
    if let Some(tcp) = io.downcast_ref::<TcpStream>() {
        return Some(tcp.as_fd());
    }
    #[cfg(feature = "tls")]
    if let Some(tls) = io.downcast_ref::<actix_tls::accept::rustls_0_23::TlsStream<TcpStream>>() {
        return Some(tls.get_ref().0.as_fd());
    }
    if let Some(unix) = io.downcast_ref::<UnixStream>() {
        return Some(unix.as_fd());
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::os::unix::net::UnixStream;

    fn conn_on(stream: &UnixStream) -> Rc<ConnState> {
        Rc::new(ConnState {
            socket: Socket::of(stream.as_fd()),
            busy: Cell::new(0),
            activity: Cell::new(0),
            seen: Cell::new(None),
            shut: Cell::new(false),
        })
    }

    /// A wave of connections that came and went leaves no entries behind in the thread's list
    /// (each would keep its state's allocation, and the allocator its pages).
    #[test]
    fn the_list_lets_go_of_dropped_connections() {
        REGISTRY.with(|r| r.borrow_mut().running = true);
        let pairs: Vec<_> = (0..200).map(|_| UnixStream::pair().unwrap()).collect();
        let conns: Vec<_> = pairs
            .iter()
            .map(|(ours, _)| register_socket(Some(ours.as_fd())).unwrap())
            .collect();
        assert_eq!(REGISTRY.with(|r| r.borrow().conns.len()), 200);
        drop(conns);
        let (left, live) = REGISTRY.with(|r| (r.borrow().conns.len(), r.borrow().live));
        assert_eq!(live, 0);
        assert!(
            left <= 2,
            "{left} entries left after every connection dropped"
        );
    }

    fn reads_eof(stream: &mut UnixStream) -> bool {
        stream.set_nonblocking(true).unwrap();
        matches!(stream.read(&mut [0u8; 8]), Ok(0))
    }

    #[test]
    fn closes_only_after_a_quiet_look_and_never_under_a_request() {
        let (mut ours, _peer) = UnixStream::pair().unwrap();
        let conn = conn_on(&ours);
        assert!(!conn.look(), "the first look only marks");
        let busy = Busy::new(&conn);
        assert!(!conn.look(), "a request started since");
        assert!(!conn.look(), "a request in progress");
        drop(busy);
        assert!(!conn.look(), "a request ended since");
        assert!(!reads_eof(&mut ours));
        assert!(conn.look(), "quiet for a whole period");
        assert!(reads_eof(&mut ours), "the read side is shut down");
        assert!(!conn.look(), "once");
    }

    #[test]
    fn a_request_that_reached_the_socket_before_the_shutdown_is_still_read() {
        use std::io::Write;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let mut client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (mut server, _) = listener.accept().unwrap();
        let conn = Rc::new(ConnState {
            socket: Socket::of(server.as_fd()),
            busy: Cell::new(0),
            activity: Cell::new(0),
            seen: Cell::new(Some(0)),
            shut: Cell::new(false),
        });
        client.write_all(b"GET / HTTP/1.1\r\n\r\n").unwrap();
        // Until the kernel has queued it on the server's side.
        server.set_nonblocking(true).unwrap();
        let mut buf = [0u8; 64];
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while server.peek(&mut buf).map_or(true, |n| n < 18) {
            assert!(std::time::Instant::now() < deadline, "nothing arrived");
            std::thread::yield_now();
        }
        assert!(conn.look());
        assert_eq!(
            server.read(&mut buf).unwrap(),
            18,
            "the queued request first"
        );
        assert_eq!(server.read(&mut buf).unwrap(), 0, "then end of file");
        server.write_all(b"HTTP/1.1 200 OK\r\n\r\n").unwrap();
        let mut answer = [0u8; 19];
        client.read_exact(&mut answer).unwrap();
        assert_eq!(
            &answer, b"HTTP/1.1 200 OK\r\n\r\n",
            "and it can be answered"
        );
    }

    #[test]
    fn a_descriptor_number_reused_by_another_socket_is_left_alone() {
        let (ours, _peer) = UnixStream::pair().unwrap();
        let conn = conn_on(&ours);
        let fd = ours.as_raw_fd();
        drop(ours);
        // The lowest free number: most likely `fd` again; if not, the check still must hold.
        let (mut other, _other_peer) = UnixStream::pair().unwrap();
        assert!(!conn.look());
        assert!(!conn.look(), "not our socket any more");
        if other.as_raw_fd() == fd {
            assert!(!reads_eof(&mut other), "the new socket was not touched");
        }
    }
}
