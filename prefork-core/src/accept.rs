//! What every adapter's accept loop shares: which accept errors concern one connection only,
//! what to say when the process runs out of descriptors, and how a TLS port tells and answers
//! plain HTTP.

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
}
