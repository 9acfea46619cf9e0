//! Listener conversions: the std listeners a worker inherits into smol's
//! `async_io::Async<TcpListener>`, and on to async-std's listener.

use std::io;
use std::net::TcpListener;

use async_io::Async;

/// Converts a std listener into smol's async listener.
///
/// `async_io::Async<TcpListener>` is the type under `smol::net::TcpListener` (which converts from
/// it with `From`) and under `async_std::net::TcpListener`: all three share one reactor, so a
/// listener converted here works with any executor. The socket is put in non-blocking mode if it
/// is not already (the listeners of a [`Child`](prefork_core::Child) already are).
///
/// # Errors
/// Fails if the socket cannot be registered with the async-io reactor (e.g. the process is out
/// of descriptors); the message names the listener's address.
///
/// # Example
/// ```no_run
/// let std_listener = std::net::TcpListener::bind("127.0.0.1:0")?;
/// let listener = prefork_smol::into_async(std_listener)?;
/// let listener = smol::net::TcpListener::from(listener);
/// # std::io::Result::Ok(())
/// ```
pub fn into_async(listener: TcpListener) -> io::Result<Async<TcpListener>> {
    let addr = describe(&listener);
    Async::new(listener).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("listener on {addr}: cannot register it with the async-io reactor: {e}"),
        )
    })
}

/// Converts a smol listener into async-std's listener. Both are built on the same async-io
/// reactor, so the socket is simply handed over.
///
/// async-std is discontinued upstream (its authors point to smol as its successor); this
/// conversion exists for code that still uses it. Prefer smol's types in new code.
///
/// # Errors
/// Fails if the socket cannot be taken back from the reactor; the message names its address.
///
/// # Panics
/// async-std's own `From<std::net::TcpListener>` panics if the reactor cannot register the
/// socket again, which happens only when the kernel refuses an `epoll_ctl` call (out of memory).
#[cfg(feature = "async-std")]
pub fn into_async_std(listener: Async<TcpListener>) -> io::Result<async_std::net::TcpListener> {
    let addr = describe(listener.get_ref());
    let std = listener.into_inner().map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("listener on {addr}: cannot take it back from the async-io reactor: {e}"),
        )
    })?;
    Ok(async_std::net::TcpListener::from(std))
}

pub(crate) fn describe(listener: &TcpListener) -> String {
    listener
        .local_addr()
        .map(|a| a.to_string())
        .unwrap_or_else(|_| "<unknown address>".to_owned())
}
