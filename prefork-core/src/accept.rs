//! What every adapter's accept loop shares: which accept errors concern one connection only, and
//! what to say when the process runs out of descriptors.

use std::io;

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
}
