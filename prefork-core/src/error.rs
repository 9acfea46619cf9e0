//! The error type of the process model.

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;

/// A boxed error returned by a user hook.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// A user's boxed error (an app factory's, say) as the [`io::Error`] a worker's serve function
/// returns; an `io::Error` inside stays itself (its kind and OS code kept).
pub fn into_io_error(e: BoxError) -> io::Error {
    match e.downcast::<io::Error>() {
        Ok(io) => *io,
        Err(other) => io::Error::other(other),
    }
}

/// What went wrong in the master or in a worker's start-up.
///
/// Every variant's message names what failed and on which address, path or worker.
/// `Error` converts into [`std::io::Error`] (with a matching [`io::ErrorKind`]) for callers that
/// only want `io::Result` at their edge.
#[non_exhaustive]
pub enum Error {
    /// The configuration cannot work, e.g. `workers(0)`.
    Config(String),
    /// A listen address could not be parsed or resolved.
    Address {
        /// The address as the user gave it.
        addr: String,
        /// Why it was refused.
        source: io::Error,
    },
    /// Binding or listening on an address failed (port in use, permission denied, ...).
    Bind {
        /// The resolved address.
        addr: SocketAddr,
        /// The operating system's error.
        source: io::Error,
    },
    /// A system call of the process model failed (spawning a worker, creating a socket pair, ...).
    Io {
        /// What the library was doing.
        context: String,
        /// The operating system's error.
        source: io::Error,
    },
    /// `PREFORK_CHILD=1` is set, but this process was not started by a prefork master (or its
    /// inherited descriptors are not what the master passes). The process must not serve.
    NotAWorker(String),
    /// A worker failed before it reported ready during the initial start.
    WorkerStartup {
        /// The worker id (0..N-1).
        worker: usize,
        /// The worker's process id.
        pid: u32,
        /// The worker's own message, or its exit status if it sent none.
        message: String,
    },
    /// Workers exited unexpectedly more often than the recovery budget allows.
    OverRecovery {
        /// Unexpected exits counted (within the window, if one is set).
        exits: usize,
        /// The configured budget.
        threshold: usize,
    },
    /// A user hook returned an error; every worker was stopped.
    Hook {
        /// The hook's name, e.g. `on_master_ready`.
        hook: &'static str,
        /// The hook's error.
        source: BoxError,
    },
    /// A TLS certificate or key could not be loaded.
    Tls {
        /// The file (or `<memory>` for embedded PEM) that is at fault.
        path: PathBuf,
        /// What is wrong with it.
        message: String,
    },
    /// The worker's serve function failed.
    Serve(io::Error),
}

impl Error {
    pub(crate) fn io(context: impl Into<String>, source: io::Error) -> Self {
        Error::Io {
            context: context.into(),
            source,
        }
    }

    fn kind(&self) -> io::ErrorKind {
        match self {
            Error::Config(_) | Error::Address { .. } | Error::NotAWorker(_) | Error::Tls { .. } => {
                io::ErrorKind::InvalidInput
            }
            Error::Bind { source, .. } | Error::Io { source, .. } | Error::Serve(source) => {
                source.kind()
            }
            Error::WorkerStartup { .. } | Error::OverRecovery { .. } | Error::Hook { .. } => {
                io::ErrorKind::Other
            }
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Config(msg) => write!(f, "invalid prefork configuration: {msg}"),
            Error::Address { addr, source } => write!(f, "invalid listen address {addr:?}: {source}"),
            Error::Bind { addr, source } => write!(f, "cannot listen on {addr}: {source}"),
            Error::Io { context, source } => write!(f, "{context}: {source}"),
            Error::NotAWorker(msg) => write!(f, "PREFORK_CHILD=1 is set but {msg}"),
            Error::WorkerStartup {
                worker,
                pid,
                message,
            } => write!(f, "worker {worker} (pid {pid}) failed to start: {message}"),
            Error::OverRecovery { exits, threshold } => write!(
                f,
                "workers exited unexpectedly {exits} times, more than the recovery threshold of {threshold}; all workers stopped"
            ),
            Error::Hook { hook, source } => write!(f, "{hook} hook failed: {source}"),
            Error::Tls { path, message } => write!(f, "TLS: {}: {message}", path.display()),
            Error::Serve(e) => write!(f, "worker failed: {e}"),
        }
    }
}

/// The message, as `Display` (the way anyhow's errors print): `fn main() -> Result<(), Error>`
/// shows `Error: cannot listen on 127.0.0.1:3002: Address already in use (os error 98)` rather
/// than a nest of struct fields.
impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Address { source, .. }
            | Error::Bind { source, .. }
            | Error::Io { source, .. } => Some(source),
            Error::Serve(e) => Some(e),
            Error::Hook { source, .. } => Some(source.as_ref()),
            _ => None,
        }
    }
}

impl From<Error> for io::Error {
    fn from(e: Error) -> Self {
        match e {
            // Keep the OS error itself where the worker's serve function produced it.
            Error::Serve(inner) => inner,
            other => io::Error::new(other.kind(), other),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_reads_like_the_message() {
        let e = Error::Bind {
            addr: "127.0.0.1:3002".parse().unwrap(),
            source: io::Error::from_raw_os_error(98),
        };
        assert_eq!(format!("{e:?}"), e.to_string());
        assert!(format!("{e:?}").starts_with("cannot listen on 127.0.0.1:3002: "));
    }

    #[test]
    fn bind_error_names_the_address_and_keeps_the_kind() {
        let e = Error::Bind {
            addr: "127.0.0.1:8080".parse().unwrap(),
            source: io::Error::from(io::ErrorKind::AddrInUse),
        };
        assert!(e.to_string().contains("127.0.0.1:8080"));
        let io: io::Error = e.into();
        assert_eq!(io.kind(), io::ErrorKind::AddrInUse);
    }
}
