//! TLS configuration: a rustls `ServerConfig` from PEM files, PEM bytes, or the user's own.
//!
//! The crypto provider is *ring*: it builds in a fraction of aws-lc-rs's time on a small machine
//! and needs no cmake. ALPN offers `h2` then `http/1.1`.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rustls::ServerConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::Error;

/// The PEM files of a certificate chain and its private key. Named fields, so the two cannot be
/// swapped silently (fasthttp's `ListenAndServeTLS(addr, certKey, certFile)` trap); a swap is
/// also detected and reported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PemFiles {
    /// The certificate chain, leaf first.
    pub cert_chain: PathBuf,
    /// The private key (PKCS#8, PKCS#1 or SEC1).
    pub private_key: PathBuf,
}

/// Where a worker's TLS configuration comes from. The master loads it once before starting any
/// worker, so a missing or bad file fails there with a clear message; each worker loads it again
/// (state is never shared between processes).
///
/// From PEM files or bytes, TLS 1.3 sessions resume on every worker: each worker seals the
/// session tickets it sends under a key all workers of the master derive alike (from the
/// private key, a random salt the master draws at its start, and the current six-hour period),
/// so a returning client that reaches another worker through the shared socket resumes instead
/// of a full handshake. A configuration of your own ([`TlsConfig::from_config`]) keeps its own
/// session handling.
#[derive(Clone)]
pub struct TlsConfig {
    source: Source,
    alpn: Vec<Vec<u8>>,
    handshake_timeout: Duration,
    /// In a worker: the master's ticket salt (`crate::tickets`).
    ticket_salt: Option<String>,
}

/// How long a client may take to complete the TLS handshake before its connection is dropped:
/// 10 seconds. A stalled handshake must not pin a connection slot forever.
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Clone)]
enum Source {
    Files(PemFiles),
    Pem {
        cert_chain: Vec<u8>,
        private_key: Vec<u8>,
    },
    Config(Arc<ServerConfig>),
}

impl fmt::Debug for TlsConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let source = match &self.source {
            Source::Files(files) => format!("{files:?}"),
            Source::Pem { .. } => "Pem { .. }".to_owned(),
            Source::Config(_) => "ServerConfig { .. }".to_owned(),
        };
        f.debug_struct("TlsConfig")
            .field("source", &source)
            .finish()
    }
}

const MEMORY: &str = "<memory>";

impl TlsConfig {
    /// From PEM files, read when the server starts (not now).
    pub fn from_pem_files(files: PemFiles) -> Self {
        TlsConfig {
            source: Source::Files(files),
            alpn: default_alpn(),
            handshake_timeout: DEFAULT_HANDSHAKE_TIMEOUT,
            ticket_salt: None,
        }
    }

    /// From PEM bytes embedded in the program (fasthttp's `ListenAndServeTLSEmbed`).
    pub fn from_pem(cert_chain: impl Into<Vec<u8>>, private_key: impl Into<Vec<u8>>) -> Self {
        TlsConfig {
            source: Source::Pem {
                cert_chain: cert_chain.into(),
                private_key: private_key.into(),
            },
            alpn: default_alpn(),
            handshake_timeout: DEFAULT_HANDSHAKE_TIMEOUT,
            ticket_salt: None,
        }
    }

    /// The user's own rustls configuration, used as it is (ALPN included).
    pub fn from_config(config: Arc<ServerConfig>) -> Self {
        TlsConfig {
            source: Source::Config(config),
            alpn: Vec::new(),
            handshake_timeout: DEFAULT_HANDSHAKE_TIMEOUT,
            ticket_salt: None,
        }
    }

    /// Replaces the ALPN protocols offered (default `h2`, `http/1.1`); ignored for
    /// [`TlsConfig::from_config`]. Adapters whose framework cannot speak HTTP/2 set `http/1.1`.
    pub fn alpn(mut self, protocols: &[&[u8]]) -> Self {
        self.alpn = protocols.iter().map(|p| p.to_vec()).collect();
        self
    }

    /// How long a TLS handshake may take before the connection is dropped. Default:
    /// [`DEFAULT_HANDSHAKE_TIMEOUT`] (10 s). Adapters apply it to every connection.
    pub fn handshake_timeout(mut self, timeout: Duration) -> Self {
        self.handshake_timeout = timeout;
        self
    }

    /// The handshake timeout set with [`TlsConfig::handshake_timeout`] (a worker reads it from
    /// [`Worker::tls_handshake_timeout`](crate::Worker::tls_handshake_timeout)).
    #[deprecated(
        since = "0.2.0",
        note = "use `Worker::tls_handshake_timeout` in the worker that serves"
    )]
    pub fn get_handshake_timeout(&self) -> Duration {
        self.handshake_timeout
    }

    pub(crate) fn handshake_timeout_value(&self) -> Duration {
        self.handshake_timeout
    }

    /// Loads and validates the configuration.
    ///
    /// # Errors
    /// [`Error::Tls`] naming the path (or `<memory>`) when a file is missing or unreadable,
    /// holds no certificate or no private key, or the key does not match the certificate.
    pub fn load(&self) -> Result<Arc<ServerConfig>, Error> {
        let (certs, key, cert_path, key_path) = match &self.source {
            Source::Config(c) => return Ok(c.clone()),
            Source::Files(f) => {
                let cert = read(&f.cert_chain)?;
                let key = read(&f.private_key)?;
                (
                    parse_certs(&cert, &f.cert_chain)?,
                    parse_key(&key, &f.private_key)?,
                    f.cert_chain.clone(),
                    f.private_key.clone(),
                )
            }
            Source::Pem {
                cert_chain,
                private_key,
            } => (
                parse_certs(cert_chain, Path::new(MEMORY))?,
                parse_key(private_key, Path::new(MEMORY))?,
                PathBuf::from(MEMORY),
                PathBuf::from(MEMORY),
            ),
        };
        // Kept for the session tickets' key before the key moves into the configuration.
        let secret = self
            .ticket_salt
            .as_ref()
            .map(|salt| (salt, key.secret_der().to_vec()));
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| tls_err(&cert_path, e.to_string()))?
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .map_err(|e| {
                let why = match e {
                    rustls::Error::InconsistentKeys(_) => format!(
                        "the private key in {} does not match the certificate",
                        key_path.display()
                    ),
                    other => other.to_string(),
                };
                tls_err(&cert_path, why)
            })?;
        config.alpn_protocols = self.alpn.clone();
        if let Some((salt, secret)) = secret {
            match crate::tickets::SharedTicketer::new(salt, &secret) {
                Some(ticketer) => {
                    config.ticketer = Arc::new(ticketer);
                    // One ticket per connection (rustls sends 2): every connection gives its
                    // client the ticket for its next one, so a client that opens k connections
                    // at once holds k tickets for next time, and each handshake seals one
                    // ticket less.
                    config.send_tls13_tickets = 1;
                }
                None => tracing::warn!(
                    "the master's TLS ticket salt is malformed: sessions resume only on the \
                     worker that made them"
                ),
            }
        }
        Ok(Arc::new(config))
    }
}

impl TlsConfig {
    /// The PEM files, when the configuration is read from files.
    #[cfg_attr(not(target_os = "linux"), allow(dead_code))]
    pub(crate) fn pem_files(&self) -> Option<&PemFiles> {
        match &self.source {
            Source::Files(f) => Some(f),
            _ => None,
        }
    }

    /// The same configuration, whose session tickets open in every worker of the master that
    /// drew `salt` (see `crate::tickets`). No effect on a configuration of the user's own
    /// ([`TlsConfig::from_config`]), whose session handling stays theirs.
    pub(crate) fn with_ticket_salt(mut self, salt: String) -> TlsConfig {
        self.ticket_salt = Some(salt);
        self
    }

    /// The same configuration (ALPN, handshake timeout) with the PEM bytes the master read for
    /// this worker instead of the files.
    pub(crate) fn with_pem(&self, cert_chain: Vec<u8>, private_key: Vec<u8>) -> TlsConfig {
        TlsConfig {
            source: Source::Pem {
                cert_chain,
                private_key,
            },
            alpn: self.alpn.clone(),
            handshake_timeout: self.handshake_timeout,
            ticket_salt: self.ticket_salt.clone(),
        }
    }
}

fn default_alpn() -> Vec<Vec<u8>> {
    vec![b"h2".to_vec(), b"http/1.1".to_vec()]
}

fn tls_err(path: &Path, message: impl Into<String>) -> Error {
    Error::Tls {
        path: path.to_owned(),
        message: message.into(),
    }
}

fn read(path: &Path) -> Result<Vec<u8>, Error> {
    std::fs::read(path).map_err(|e| tls_err(path, format!("cannot read: {e}")))
}

fn parse_certs(pem: &[u8], path: &Path) -> Result<Vec<CertificateDer<'static>>, Error> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| tls_err(path, format!("bad PEM: {e}")))?;
    if certs.is_empty() {
        let hint = if PrivateKeyDer::from_pem_slice(pem).is_ok() {
            " (it holds a private key: are the certificate and key swapped?)"
        } else {
            ""
        };
        return Err(tls_err(path, format!("no certificate found{hint}")));
    }
    Ok(certs)
}

fn parse_key(pem: &[u8], path: &Path) -> Result<PrivateKeyDer<'static>, Error> {
    PrivateKeyDer::from_pem_slice(pem).map_err(|e| {
        let hint = if CertificateDer::pem_slice_iter(pem).any(|c| c.is_ok()) {
            " (it holds a certificate: are the certificate and key swapped?)"
        } else {
            ""
        };
        let why = match e {
            rustls_pki_types::pem::Error::NoItemsFound => "no private key found".to_owned(),
            other => format!("bad private key: {other}"),
        };
        tls_err(path, format!("{why}{hint}"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cert() -> (String, String) {
        let c = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
        (c.cert.pem(), c.signing_key.serialize_pem())
    }

    #[test]
    fn embedded_pem_loads_with_alpn() {
        let (c, k) = cert();
        let cfg = TlsConfig::from_pem(c, k).load().unwrap();
        assert_eq!(
            cfg.alpn_protocols,
            vec![b"h2".to_vec(), b"http/1.1".to_vec()]
        );
    }

    #[test]
    fn swapped_or_mismatched_inputs_are_named() {
        let (c, k) = cert();
        let e = TlsConfig::from_pem(k.clone(), c.clone())
            .load()
            .unwrap_err();
        assert!(e.to_string().contains("swapped"), "{e}");
        let (_, other_key) = cert();
        let e = TlsConfig::from_pem(c, other_key).load().unwrap_err();
        assert!(e.to_string().contains("does not match"), "{e}");
        let e = TlsConfig::from_pem("junk", k).load().unwrap_err();
        assert!(e.to_string().contains("no certificate"), "{e}");
    }

    #[test]
    fn missing_file_names_the_path() {
        let e = TlsConfig::from_pem_files(PemFiles {
            cert_chain: "/nonexistent/cert.pem".into(),
            private_key: "/nonexistent/key.pem".into(),
        })
        .load()
        .unwrap_err();
        assert!(e.to_string().contains("/nonexistent/cert.pem"), "{e}");
        assert!(e.to_string().contains("cannot read"), "{e}");
    }
}
