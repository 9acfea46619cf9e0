//! An actix-web app served over HTTPS by prefork workers (HTTP/2 or HTTP/1.1, as the client's
//! ALPN asks). The master loads and checks the certificate and key before it starts any worker,
//! so a missing or mismatched file fails at once with its path in the message.
//!
//! Run with: `cargo run -p prefork-actix --example actix_tls -- cert.pem key.pem`
//! (or set `TLS_CERT` and `TLS_KEY`; the default is `certs/cert.pem` and `certs/key.pem`;
//! `ADDR` changes the address, `127.0.0.1:8443` by default).
//!
//! A certificate to test with: in this repository, `cargo xtask certs` writes a throwaway CA and
//! a `localhost` certificate into `certs/`; then
//! `curl --cacert certs/ca.pem https://localhost:8443/`.
//! Elsewhere, a self-signed one:
//!
//! ```text
//! openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 30 \
//!     -subj /CN=localhost -addext subjectAltName=DNS:localhost,IP:127.0.0.1 \
//!     -keyout key.pem -out cert.pem
//! curl -k https://127.0.0.1:8443/
//! ```

use actix_web::{web, App, HttpRequest};
use prefork_actix::{PemFiles, PreforkMiddleware, Server, TlsConfig};
use tracing_subscriber::EnvFilter;

async fn hello(req: HttpRequest) -> String {
    format!("Hello over TLS! ({:?})\n", req.version())
}

fn main() -> Result<(), prefork_actix::Error> {
    // Runs in the master and in every worker: each logs to this stderr.
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .init();

    let mut args = std::env::args().skip(1);
    let cert_chain = args
        .next()
        .or_else(|| std::env::var("TLS_CERT").ok())
        .unwrap_or_else(|| "certs/cert.pem".to_owned());
    let private_key = args
        .next()
        .or_else(|| std::env::var("TLS_KEY").ok())
        .unwrap_or_else(|| "certs/key.pem".to_owned());
    let addr = std::env::var("ADDR").unwrap_or_else(|_| "127.0.0.1:8443".to_owned());

    let tls = TlsConfig::from_pem_files(PemFiles {
        cert_chain: cert_chain.into(),
        private_key: private_key.into(),
    });
    // Plain HTTP sent to this port is answered `400` (HTTPS expected), as nginx does.
    Server::new(addr).prefork(|p| p.tls(tls)).serve(|| {
        App::new()
            .route("/", web::get().to(hello))
            .wrap(PreforkMiddleware)
    })
}
