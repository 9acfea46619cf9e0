//! Test helpers shared by the prefork crates: start the example servers as real processes,
//! speak real HTTP to them (hyper's client: HTTP/1.1, h2c, TLS), and inspect the process tree.
//!
//! Every wait here is bounded; deadlines are generous so that a slow machine never fails a test,
//! and exist only so that a broken build cannot hang one.

use std::collections::BTreeSet;
use std::io::{self, BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::Request;
use hyper_util::rt::{TokioExecutor, TokioIo};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

pub use nix::sys::signal::Signal as Sig;

pub mod health;
pub mod load;
pub mod ops;
pub use load::{Load, LoadConfig};

/// The deadline for anything that should take a moment: a server's start, a worker's respawn, a
/// drain. Generous on purpose: it only keeps a broken build from hanging.
pub const DEADLINE: Duration = Duration::from_secs(30);

/// The path of an example binary built by `cargo test` (`target/<profile>/examples/NAME`).
pub fn example_bin(name: &str) -> PathBuf {
    // The test binary lives in target/<profile>/deps/.
    let exe = std::env::current_exe().expect("current_exe");
    let profile_dir = exe.parent().and_then(|d| d.parent()).expect("target dir");
    let path = profile_dir.join("examples").join(name);
    assert!(
        path.exists(),
        "{} is missing: run the tests with `cargo test --workspace` (which builds the examples)",
        path.display()
    );
    path
}

/// Polls `f` until it returns true or `timeout` passes: every millisecond for the first 200 ms
/// (so the benchmarks can time short events with it), every 10 ms after that.
pub fn wait_until(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    loop {
        if f() {
            return true;
        }
        let elapsed = start.elapsed();
        if elapsed >= timeout {
            return false;
        }
        let pause = if elapsed < Duration::from_millis(200) {
            1
        } else {
            10
        };
        std::thread::sleep(Duration::from_millis(pause));
    }
}

/// A server process (a master) started for a test. Dropping it kills the master and every
/// worker it still has, so a failing test leaves nothing behind.
#[derive(Debug)]
pub struct Server {
    child: Option<Child>,
    pid: u32,
    log: Arc<Mutex<String>>,
    /// The address the master reported (`listening addr=...`).
    pub addr: SocketAddr,
    seen_workers: Arc<Mutex<BTreeSet<u32>>>,
    readers: Vec<std::thread::JoinHandle<()>>,
}

impl Server {
    /// Starts `bin` with `args` (which should contain `--addr 127.0.0.1:0`) and waits until the
    /// master logs the address it listens on. Panics with the log if it does not.
    pub fn start(bin: &PathBuf, args: &[&str]) -> Server {
        Self::start_with_env(bin, args, &[])
    }

    /// [`Server::start`] with extra environment variables for the master.
    pub fn start_with_env(bin: &PathBuf, args: &[&str], env: &[(&str, &str)]) -> Server {
        Self::start_configured(bin, args, env, |_| {})
    }

    /// [`Server::start`] with the master's `Command` adjusted by `configure` first (a resource
    /// limit, say).
    pub fn start_with(
        bin: &PathBuf,
        args: &[&str],
        configure: impl FnOnce(&mut Command),
    ) -> Server {
        Self::start_configured(bin, args, &[], configure)
    }

    fn start_configured(
        bin: &PathBuf,
        args: &[&str],
        env: &[(&str, &str)],
        configure: impl FnOnce(&mut Command),
    ) -> Server {
        let mut s = Self::spawn_configured(bin, args, env, configure);
        let ok = wait_until(DEADLINE, || {
            s.find_addr().is_some() || s.child.as_mut().unwrap().try_wait().unwrap().is_some()
        });
        let addr = s.find_addr();
        match addr {
            Some(a) if ok => s.addr = a,
            _ => panic!("server did not report its address; log:\n{}", s.log()),
        }
        s
    }

    /// Starts `bin` with `args` and `env` and waits for the master's `all workers ready` line,
    /// for a server that listens on no TCP address (Unix sockets only). Panics with the log if
    /// it does not get there. [`Server::addr`] stays unset.
    pub fn start_ready(bin: &PathBuf, args: &[&str], env: &[(&str, &str)]) -> Server {
        let mut s = Self::spawn(bin, args, env);
        let ok = wait_until(DEADLINE, || {
            s.log().contains("all workers ready")
                || s.child.as_mut().unwrap().try_wait().unwrap().is_some()
        });
        if !ok || !s.log().contains("all workers ready") {
            panic!("workers never became ready; log:\n{}", s.log());
        }
        s
    }

    fn spawn(bin: &PathBuf, args: &[&str], env: &[(&str, &str)]) -> Server {
        Self::spawn_configured(bin, args, env, |_| {})
    }

    fn spawn_configured(
        bin: &PathBuf,
        args: &[&str],
        env: &[(&str, &str)],
        configure: impl FnOnce(&mut Command),
    ) -> Server {
        use std::os::unix::process::CommandExt;
        let mut cmd = Command::new(bin);
        // Its own process group, as a shell gives a foreground job: `signal_group` then acts like
        // Ctrl+C in a terminal.
        cmd.process_group(0);
        cmd.args(args)
            .env("NO_COLOR", "1")
            .env("RUST_LOG", "info")
            .env_remove("PREFORK_CHILD")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        configure(&mut cmd);
        let mut child = cmd.spawn().expect("spawn server");
        let log = Arc::new(Mutex::new(String::new()));
        let seen_workers = Arc::new(Mutex::new(BTreeSet::new()));
        let mut readers = Vec::new();
        for pipe in [
            child
                .stdout
                .take()
                .map(|p| Box::new(p) as Box<dyn io::Read + Send>),
            child
                .stderr
                .take()
                .map(|p| Box::new(p) as Box<dyn io::Read + Send>),
        ]
        .into_iter()
        .flatten()
        {
            let log = log.clone();
            let seen = seen_workers.clone();
            readers.push(std::thread::spawn(move || {
                for line in BufReader::new(pipe).lines() {
                    let Ok(line) = line else { break };
                    if line.contains("worker started") {
                        if let Some(pid) = field(&line, "pid").and_then(|p| p.parse().ok()) {
                            seen.lock().unwrap().insert(pid);
                        }
                    }
                    let mut l = log.lock().unwrap();
                    l.push_str(&line);
                    l.push('\n');
                }
            }));
        }
        Server {
            pid: child.id(),
            child: Some(child),
            log,
            addr: "0.0.0.0:0".parse().unwrap(),
            seen_workers,
            readers,
        }
    }

    fn find_addr(&self) -> Option<SocketAddr> {
        let log = self.log();
        log.lines()
            .filter(|l| l.contains("listening"))
            .find_map(|l| field(l, "addr")?.parse().ok())
    }

    /// Runs `bin` and expects it to exit on its own (a start-up failure). Returns its status and
    /// everything it printed.
    pub fn run_to_exit(bin: &PathBuf, args: &[&str], env: &[(&str, &str)]) -> (ExitStatus, String) {
        let mut s = Self::spawn(bin, args, env);
        let status = s
            .wait_exit(DEADLINE)
            .unwrap_or_else(|| panic!("process did not exit; log:\n{}", s.log()));
        // Everything it printed: its pipes reach end of file once no process holds them (bounded,
        // in case a stray worker still does).
        wait_until(DEADLINE, || s.readers.iter().all(|r| r.is_finished()));
        (status, s.log())
    }

    /// Everything the server printed so far (stdout and stderr).
    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// The master's pid.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Waits until the log contains `needle` (`count` times); returns whether it did.
    pub fn wait_log(&self, needle: &str, count: usize) -> bool {
        wait_until(DEADLINE, || self.log().matches(needle).count() >= count)
    }

    /// Waits for the master's `all workers ready` line and returns the pids it names.
    pub fn wait_ready(&self) -> Vec<u32> {
        assert!(
            self.wait_log("all workers ready", 1),
            "workers never became ready; log:\n{}",
            self.log()
        );
        let log = self.log();
        let line = log
            .lines()
            .find(|l| l.contains("all workers ready"))
            .unwrap();
        let pids = line
            .split("pids=[")
            .nth(1)
            .and_then(|r| r.split(']').next())
            .unwrap_or("");
        pids.split(',')
            .filter_map(|p| p.trim().parse().ok())
            .collect()
    }

    /// Every worker pid the master has logged as started.
    pub fn started_workers(&self) -> BTreeSet<u32> {
        self.seen_workers.lock().unwrap().clone()
    }

    /// Sends `sig` to the master.
    pub fn signal(&self, sig: Signal) {
        let _ = kill(Pid::from_raw(self.pid as i32), sig);
    }

    /// Sends `sig` to the master's whole process group, as a terminal does on Ctrl+C.
    pub fn signal_group(&self, sig: Signal) {
        let _ = kill(Pid::from_raw(-(self.pid as i32)), sig);
    }

    /// Waits for the master to exit.
    ///
    /// Once it has exited, also waits (bounded) until the output readers have read everything
    /// the processes printed, so that [`Server::log`] holds the workers' last lines too.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let child = self.child.as_mut()?;
        let mut status = None;
        wait_until(timeout, || {
            status = child.try_wait().ok().flatten();
            status.is_some()
        });
        if status.is_some() {
            wait_until(Duration::from_secs(5), || {
                self.readers.iter().all(|r| r.is_finished())
            });
        }
        status
    }

    /// The master's live (non-zombie) child processes.
    pub fn children(&self) -> Vec<u32> {
        children_of(self.pid)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let workers: Vec<u32> = self
            .started_workers()
            .into_iter()
            .chain(children_of(self.pid))
            .collect();
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        for pid in workers {
            let _ = kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
        }
    }
}

/// The value of `name=` in a tracing line (up to the next space).
pub fn field<'a>(line: &'a str, name: &str) -> Option<&'a str> {
    let pat = format!("{name}=");
    let start = line.find(&format!(" {pat}"))? + 1 + pat.len();
    line[start..].split_whitespace().next()
}

/// The process's state letter from /proc (`R`, `S`, `Z`, ...), or `None` if it is gone.
pub fn process_state(pid: u32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit(')').next()?.trim_start().chars().next()
}

/// Whether `pid` is a live process (zombies count as gone).
pub fn alive(pid: u32) -> bool {
    matches!(process_state(pid), Some(s) if s != 'Z' && s != 'X')
}

/// The live children of `pid`.
pub fn children_of(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    if let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) {
        for t in tasks.flatten() {
            if let Ok(s) = std::fs::read_to_string(t.path().join("children")) {
                out.extend(s.split_whitespace().filter_map(|p| p.parse::<u32>().ok()));
            }
        }
    }
    out.retain(|&p| alive(p));
    out
}

/// The open descriptors of `pid`: (fd, what it points to).
pub fn open_fds(pid: u32) -> Vec<(i32, String)> {
    let mut out = Vec::new();
    if let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fd")) {
        for e in dir.flatten() {
            let Some(fd) = e.file_name().to_str().and_then(|s| s.parse().ok()) else {
                continue;
            };
            let target = std::fs::read_link(e.path())
                .map(|p| p.display().to_string())
                .unwrap_or_default();
            out.push((fd, target));
        }
    }
    out.sort();
    out
}

fn rt() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("tokio runtime")
    })
}

/// Runs a future on the helpers' runtime, bounded by [`DEADLINE`].
pub fn block_on<F: std::future::Future>(f: F) -> io::Result<F::Output> {
    rt().block_on(async { tokio::time::timeout(DEADLINE, f).await })
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "timed out"))
}

/// An HTTP response as the tests see it.
#[derive(Debug, Clone)]
pub struct Response {
    /// The status code.
    pub status: u16,
    /// The protocol version (`HTTP/1.1`, `HTTP/2.0`).
    pub version: hyper::Version,
    /// The body as text.
    pub body: String,
    /// The content-type header, if any.
    pub content_type: Option<String>,
}

fn io_err(e: impl std::fmt::Display) -> io::Error {
    io::Error::other(e.to_string())
}

async fn send<B>(
    sender: &mut hyper::client::conn::http1::SendRequest<B>,
    req: Request<B>,
) -> io::Result<Response>
where
    B: hyper::body::Body + 'static,
{
    let resp = sender.send_request(req).await.map_err(io_err)?;
    collect(resp).await
}

async fn collect(resp: hyper::Response<hyper::body::Incoming>) -> io::Result<Response> {
    let status = resp.status().as_u16();
    let version = resp.version();
    let content_type = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let body = resp.into_body().collect().await.map_err(io_err)?.to_bytes();
    Ok(Response {
        status,
        version,
        body: String::from_utf8_lossy(&body).into_owned(),
        content_type,
    })
}

fn request(addr: SocketAddr, path: &str) -> Request<Empty<Bytes>> {
    Request::get(path)
        .header("host", addr.to_string())
        .body(Empty::new())
        .expect("request")
}

/// One HTTP/1.1 keep-alive connection.
#[derive(Debug)]
pub struct Http1 {
    addr: SocketAddr,
    sender: hyper::client::conn::http1::SendRequest<Empty<Bytes>>,
}

impl Http1 {
    /// Opens a connection.
    pub fn connect(addr: SocketAddr) -> io::Result<Http1> {
        block_on(async move {
            let stream = tokio::net::TcpStream::connect(addr).await?;
            let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
                .await
                .map_err(io_err)?;
            tokio::spawn(conn);
            Ok(Http1 { addr, sender })
        })?
    }

    /// Sends `GET path` on this connection.
    pub fn get(&mut self, path: &str) -> io::Result<Response> {
        let req = request(self.addr, path);
        let sender = &mut self.sender;
        block_on(async move {
            sender.ready().await.map_err(io_err)?;
            send(sender, req).await
        })?
    }
}

/// `GET path` over a new HTTP/1.1 connection.
pub fn get(addr: SocketAddr, path: &str) -> io::Result<Response> {
    Http1::connect(addr)?.get(path)
}

/// `GET path` over HTTP/2 with prior knowledge (h2c).
pub fn get_h2c(addr: SocketAddr, path: &str) -> io::Result<Response> {
    let req = request(addr, path);
    block_on(async move {
        let stream = tokio::net::TcpStream::connect(addr).await?;
        send_h2(stream, req).await
    })?
}

/// Sends `req` as the one request of a new HTTP/2 connection over `io`, then closes it.
async fn send_h2<T>(io: T, req: Request<Empty<Bytes>>) -> io::Result<Response>
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(io))
            .await
            .map_err(io_err)?;
    let conn = tokio::spawn(conn);
    let resp = sender.send_request(req).await.map_err(io_err)?;
    let r = collect(resp).await;
    // Close the connection before returning: its task only runs inside these helpers, so a
    // connection left open would never answer the server's GOAWAY during a drain.
    drop(sender);
    let _ = conn.await;
    r
}

/// Sends `requests` concurrent `GET /pid` over new connections and returns the distinct pids
/// that answered.
pub fn pids_answering(addr: SocketAddr, requests: usize) -> BTreeSet<u32> {
    let result = block_on(async move {
        let mut set = tokio::task::JoinSet::new();
        for _ in 0..requests {
            set.spawn(async move {
                let stream = tokio::net::TcpStream::connect(addr).await.ok()?;
                let (mut sender, conn) =
                    hyper::client::conn::http1::handshake(TokioIo::new(stream))
                        .await
                        .ok()?;
                tokio::spawn(conn);
                let r = send(&mut sender, request(addr, "/pid")).await.ok()?;
                r.body.trim().parse::<u32>().ok()
            });
        }
        let mut pids = BTreeSet::new();
        while let Some(r) = set.join_next().await {
            if let Ok(Some(pid)) = r {
                pids.insert(pid);
            }
        }
        pids
    });
    result.unwrap_or_default()
}

/// Asks `/pid` in concurrent batches until `n` distinct pids answered (bounded by a count and
/// [`DEADLINE`]); returns what was seen.
pub fn wait_for_distinct_pids(addr: SocketAddr, n: usize) -> BTreeSet<u32> {
    let mut seen = BTreeSet::new();
    let end = Instant::now() + DEADLINE;
    for _ in 0..200 {
        seen.extend(pids_answering(addr, 32));
        if seen.len() >= n || Instant::now() >= end {
            break;
        }
    }
    seen
}

/// Test certificates: a throwaway CA and a `localhost`/`127.0.0.1` leaf it signed.
#[derive(Debug, Clone)]
pub struct TestCerts {
    /// The CA certificate (PEM) a client must trust.
    pub ca_pem: String,
    /// The leaf certificate chain (PEM).
    pub cert_pem: String,
    /// The leaf's private key (PKCS#8 PEM).
    pub key_pem: String,
}

impl TestCerts {
    /// Generates a new CA and leaf.
    pub fn generate() -> TestCerts {
        use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
        let ca_key = KeyPair::generate().expect("ca key");
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("ca params");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "prefork test CA");
        let ca = ca_params.self_signed(&ca_key).expect("ca cert");
        let issuer = rcgen::Issuer::new(ca_params, ca_key);
        let key = KeyPair::generate().expect("leaf key");
        let params = CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
            .expect("leaf params");
        let leaf = params.signed_by(&key, &issuer).expect("leaf cert");
        TestCerts {
            ca_pem: ca.pem(),
            cert_pem: leaf.pem(),
            key_pem: key.serialize_pem(),
        }
    }

    /// Writes `cert.pem` and `key.pem` into `dir` and returns their paths.
    pub fn write_to(&self, dir: &std::path::Path) -> (PathBuf, PathBuf) {
        std::fs::create_dir_all(dir).expect("cert dir");
        let cert = dir.join("cert.pem");
        let key = dir.join("key.pem");
        std::fs::write(&cert, &self.cert_pem).expect("write cert");
        std::fs::write(&key, &self.key_pem).expect("write key");
        (cert, key)
    }
}

/// A fresh temporary directory under the system's temp dir (removed by the caller if it cares).
pub fn temp_dir(tag: &str) -> PathBuf {
    static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    let dir = std::env::temp_dir().join(format!("prefork-test-{tag}-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

/// `GET path` over HTTPS, trusting `ca_pem` and offering ALPN `alpn` (e.g. `[b"h2", b"http/1.1"]`).
pub fn get_tls(addr: SocketAddr, path: &str, ca_pem: &str, alpn: &[&[u8]]) -> io::Result<Response> {
    use rustls_pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pki_types::CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(cert.map_err(io_err)?).map_err(io_err)?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(io_err)?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let req = request(addr, path);
    block_on(async move {
        let tcp = tokio::net::TcpStream::connect(addr).await?;
        let name = rustls_pki_types::ServerName::try_from("localhost").map_err(io_err)?;
        let tls = connector.connect(name, tcp).await?;
        let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
        if h2 {
            send_h2(tls, req).await
        } else {
            let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
                .await
                .map_err(io_err)?;
            tokio::spawn(conn);
            send(&mut sender, req).await
        }
    })?
}

/// What the example programs share: the flags of the example contract and the
/// logging set-up. Examples are allowed dev-dependencies, so they take these from here instead of
/// repeating them four times.
pub mod example {
    use std::path::PathBuf;
    use std::time::Duration;

    /// The example contract's flags.
    #[derive(clap::Args, Debug, Clone)]
    #[group(id = "example-contract")]
    pub struct Args {
        /// Listen address: `HOST:PORT` or `unix:/path`.
        #[arg(long, default_value = "127.0.0.1:8080")]
        pub addr: String,
        /// Worker processes (threads with --no-prefork); default: the number of CPUs.
        #[arg(long)]
        pub workers: Option<usize>,
        /// One SO_REUSEPORT socket per worker instead of one shared socket.
        #[arg(long)]
        pub reuseport: bool,
        /// Serve from one process with the framework's usual multi-threaded set-up (the baseline).
        #[arg(long)]
        pub no_prefork: bool,
        /// The `/` handler sleeps this long before answering.
        #[arg(long, default_value_t = 0)]
        pub sleep_ms: u64,
        /// Certificate chain (PEM): serve HTTPS. Needs --key.
        #[arg(long, requires = "key")]
        pub cert: Option<PathBuf>,
        /// Private key (PEM) for --cert.
        #[arg(long, requires = "cert")]
        pub key: Option<PathBuf>,
        /// How long stopping workers may drain, in milliseconds.
        #[arg(long, default_value_t = 30_000)]
        pub shutdown_timeout_ms: u64,
        /// How long a TLS handshake may take, in milliseconds.
        #[arg(long, default_value_t = 10_000)]
        pub tls_handshake_timeout_ms: u64,
        /// Heartbeat watchdog timeout in seconds (0 = off); default: the library's (30 s).
        #[arg(long)]
        pub worker_timeout: Option<f64>,
        /// Recycle a worker after this many requests.
        #[arg(long)]
        pub max_requests: Option<u64>,
        /// Up to this many extra requests before a recycle, chosen at random per worker.
        #[arg(long, default_value_t = 0)]
        pub max_requests_jitter: u64,
        /// Recycle a worker whose resident memory passes this many MiB.
        #[arg(long)]
        pub max_memory_mb: Option<u64>,
        /// The master's JSON control socket.
        #[arg(long)]
        pub control_socket: Option<PathBuf>,
        /// Keep accepting this long after SIGTERM before draining, in milliseconds.
        #[arg(long, default_value_t = 0)]
        pub shutdown_delay_ms: u64,
        /// Run the workers as this user (name or uid); the master must be root.
        #[arg(long)]
        pub user: Option<String>,
        /// Run the workers with this group (name or gid).
        #[arg(long)]
        pub group: Option<String>,
        /// Pin worker i to one CPU (i modulo the CPUs the master may use).
        #[arg(long)]
        pub cpu_affinity: bool,
        /// How long a draining worker keeps an idle keep-alive connection open, in
        /// milliseconds; default: the library's.
        #[arg(long)]
        pub drain_grace_ms: Option<u64>,
    }

    impl Args {
        /// The handler's sleep.
        pub fn sleep(&self) -> Duration {
            Duration::from_millis(self.sleep_ms)
        }

        /// The shutdown timeout.
        pub fn shutdown_timeout(&self) -> Duration {
            Duration::from_millis(self.shutdown_timeout_ms)
        }

        /// The TLS configuration from `--cert` and `--key` (with the handshake timeout), if given.
        /// It is loaded and validated by the master before any worker starts.
        pub fn tls(&self) -> Option<prefork_core::TlsConfig> {
            let (cert, key) = (self.cert.clone()?, self.key.clone()?);
            Some(
                prefork_core::TlsConfig::from_pem_files(prefork_core::PemFiles {
                    cert_chain: cert,
                    private_key: key,
                })
                .handshake_timeout(Duration::from_millis(self.tls_handshake_timeout_ms)),
            )
        }

        /// The process model these flags describe: `--addr`, `--workers`, `--reuseport`,
        /// `--shutdown-timeout-ms`, the health and drain options, and `--cert/--key` when given.
        pub fn prefork(&self) -> prefork_core::Prefork {
            let mut prefork = prefork_core::Prefork::new(self.addr.as_str())
                .reuseport(self.reuseport)
                .shutdown_timeout(self.shutdown_timeout());
            if let Some(n) = self.workers {
                prefork = prefork.workers(n);
            }
            if let Some(secs) = self.worker_timeout {
                prefork = prefork
                    .worker_timeout(Some(Duration::from_secs_f64(secs)).filter(|d| !d.is_zero()));
            }
            if let Some(n) = self.max_requests {
                prefork = prefork.max_requests(n, self.max_requests_jitter);
            }
            if let Some(mb) = self.max_memory_mb {
                prefork = prefork.max_memory(mb << 20);
            }
            if let Some(path) = &self.control_socket {
                prefork = prefork.control_socket(path);
            }
            if self.shutdown_delay_ms > 0 {
                prefork = prefork.shutdown_delay(Duration::from_millis(self.shutdown_delay_ms));
            }
            if let Some(ms) = self.drain_grace_ms {
                prefork = prefork.drain_grace(Duration::from_millis(ms));
            }
            if let Some(tls) = self.tls() {
                prefork = prefork.tls(tls);
            }
            if let Some(user) = &self.user {
                prefork = prefork.user(user);
            }
            if let Some(group) = &self.group {
                prefork = prefork.group(group);
            }
            if self.cpu_affinity {
                prefork = prefork.cpu_affinity(true);
            }
            prefork
        }

        /// `--workers`, or the number of CPUs.
        pub fn workers_or_cpus(&self) -> usize {
            self.workers.unwrap_or_else(|| {
                std::thread::available_parallelism()
                    .map(|n| n.get())
                    .unwrap_or(1)
            })
        }
    }

    /// The number `key=N` in a query string (`ms=250&x=1`), if any.
    pub fn query_u64(query: Option<&str>, key: &str) -> Option<u64> {
        query?
            .split('&')
            .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('=')?.parse().ok())
    }

    /// `GET /block?ms=N`: blocks the calling thread (the worker's event-loop thread, when called
    /// from a handler) for N ms with `std::thread::sleep`, as a broken handler would. Returns
    /// the body to answer with.
    pub fn block(query: Option<&str>) -> String {
        let ms = query_u64(query, "ms").unwrap_or(0);
        std::thread::sleep(Duration::from_millis(ms));
        format!("blocked {ms} ms")
    }

    /// `GET /leak?mb=N`: allocates N MiB, touches every page, and never frees them (they stay
    /// in a static list), as a leaking handler would. Returns the body to answer with.
    pub fn leak(query: Option<&str>) -> String {
        static LEAKED: std::sync::Mutex<Vec<Vec<u8>>> = std::sync::Mutex::new(Vec::new());
        let mb = query_u64(query, "mb").unwrap_or(0).min(1 << 16);
        let mut block = vec![0u8; (mb as usize) << 20];
        for page in block.chunks_mut(4096) {
            page[0] = 1;
        }
        std::hint::black_box(&block);
        let mut leaked = LEAKED.lock().unwrap_or_else(|e| e.into_inner());
        leaked.push(block);
        let total: usize = leaked.iter().map(Vec::len).sum();
        format!("leaked {mb} MiB ({} MiB in all)", total >> 20)
    }

    /// Logs to stderr through `tracing` (level from `RUST_LOG`, default `info`; colours only on a
    /// terminal).
    pub fn init_tracing() {
        use std::io::IsTerminal;
        let filter = tracing_subscriber::EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
        let _ = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .with_ansi(std::io::stderr().is_terminal())
            .try_init();
    }
}

/// Waits until every pid in `pids` is gone from the process table (not even a zombie: its
/// parent reaped it). Panics with `log` otherwise.
pub fn assert_all_gone(pids: impl IntoIterator<Item = u32>, log: &str) {
    for pid in pids {
        assert!(
            wait_until(DEADLINE, || process_state(pid).is_none()),
            "process {pid} is still there (state {:?}); log:\n{log}",
            process_state(pid)
        );
    }
}

/// Reads until the server closes the connection (end of file or reset) and returns what it
/// sent before closing (an alert, a response); `None` if it stayed open for [`DEADLINE`].
pub fn read_until_closed(stream: &mut std::net::TcpStream) -> Option<Vec<u8>> {
    use std::io::Read;
    stream.set_read_timeout(Some(DEADLINE)).unwrap();
    let end = Instant::now() + DEADLINE;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    for _ in 0..1000 {
        match stream.read(&mut buf) {
            Ok(0) => return Some(got),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                return None
            }
            Err(_) => return Some(got),
        }
        if Instant::now() >= end {
            break;
        }
    }
    None
}

/// Reads until the server closes the connection (end of file or reset): `true`; `false` if it
/// stayed open for [`DEADLINE`]. Whatever the server sends first (an alert, a response) is
/// skipped.
pub fn server_closes(stream: &mut std::net::TcpStream) -> bool {
    read_until_closed(stream).is_some()
}

/// Sends `GET path` over a raw keep-alive connection and reads exactly one `200` response;
/// returns its body.
pub fn raw_get(stream: &mut std::net::TcpStream, path: &str) -> String {
    use std::io::Write;
    write!(stream, "GET {path} HTTP/1.1\r\nhost: test\r\n\r\n").unwrap();
    read_response(stream)
}

/// Reads exactly one `200` response from a raw connection; returns its body.
pub fn read_response(stream: &mut std::net::TcpStream) -> String {
    use std::io::Read;
    stream.set_read_timeout(Some(DEADLINE)).unwrap();
    let mut data = Vec::new();
    let mut buf = [0u8; 1024];
    for _ in 0..1000 {
        let text = String::from_utf8_lossy(&data).into_owned();
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let len: usize = head
                .lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case("content-length")
                        .then(|| v.trim().parse().ok())?
                })
                .expect("content-length");
            if body.len() >= len {
                assert!(head.starts_with("HTTP/1.1 200"), "{head}");
                return body[..len].to_owned();
            }
        }
        let n = stream.read(&mut buf).expect("response");
        assert!(n > 0, "connection closed mid-response: {text:?}");
        data.extend_from_slice(&buf[..n]);
    }
    panic!("no complete response");
}

/// Whether the server end of the IPv4 connection `server` <- `client` has read everything the
/// client sent (its receive queue in `/proc/net/tcp` is empty): the readiness signal for "the
/// request is in the server's hands".
pub fn server_has_read(server: SocketAddr, client: SocketAddr) -> bool {
    let hex = |a: SocketAddr| match a {
        SocketAddr::V4(a) => format!(
            "{:08X}:{:04X}",
            u32::from_le_bytes(a.ip().octets()),
            a.port()
        ),
        SocketAddr::V6(_) => String::new(),
    };
    let (local, remote) = (hex(server), hex(client));
    let Ok(table) = std::fs::read_to_string("/proc/net/tcp") else {
        return false;
    };
    table.lines().skip(1).any(|line| {
        let f: Vec<&str> = line.split_whitespace().collect();
        f.len() > 4
            && f[1] == local
            && f[2] == remote
            && f[4]
                .split(':')
                .nth(1)
                .is_some_and(|rx| rx.trim_start_matches('0').is_empty())
    })
}

/// The end-to-end contract every example program meets (the example programs, and the
/// adapter issues' test lists), as reusable scenarios: each crate's end-to-end tests run them on
/// its own example, one `#[test]` per scenario, so the contract is written once and a new adapter
/// gets the whole suite by calling it.
///
/// Every scenario runs the real example binary (a master with 2 workers on a free port of
/// 127.0.0.1, unless it is about `--no-prefork`) and talks to it with real clients. Parameters
/// say only what legitimately differs between adapters: extra flags, whether HTTP/2 is spoken on
/// plain TCP (h2c) or chosen by ALPN over TLS. Error messages are expected to start with the
/// program's name (`hyper_hello: ...`), as the examples print them.
///
/// A scenario that ends with the server still running returns it ([`serves_from_every_worker`](contract::serves_from_every_worker),
/// [`no_prefork_serves`](contract::no_prefork_serves), [`tls_serves_and_survives_bad_handshakes`](contract::tls_serves_and_survives_bad_handshakes)) so that a crate can check
/// its own details (threads, say) on the same processes; the scenario that stops it takes it
/// ([`replaces_a_killed_worker_and_dies_with_the_master`](contract::replaces_a_killed_worker_and_dies_with_the_master), [`no_prefork_drains_a_slow_request`](contract::no_prefork_drains_a_slow_request)).
/// Dropping a [`Server`] kills what is left of it.
pub mod contract {
    use std::collections::BTreeSet;
    use std::io::Write;
    use std::net::{SocketAddr, TcpStream};
    use std::path::Path;

    use super::*;

    /// Starts `bin` as a master with 2 workers on a free port of 127.0.0.1, with `extra` flags,
    /// and waits until it reports its address (not until the workers are ready: see
    /// [`Server::wait_ready`]).
    pub fn start(bin: &Path, extra: &[&str]) -> Server {
        let mut args = vec!["--addr", "127.0.0.1:0", "--workers", "2"];
        args.extend_from_slice(extra);
        Server::start(&bin.to_path_buf(), &args)
    }

    /// Checks the example contract's answer to `GET /`: `200`, `content-type: text/plain`, body
    /// `Hello, World!`.
    pub fn assert_hello(r: &Response) {
        assert_eq!((r.status, r.body.as_str()), (200, "Hello, World!"), "{r:?}");
        assert_eq!(r.content_type.as_deref(), Some("text/plain"), "{r:?}");
    }

    /// The program's name (the binary's file name), which starts its error messages.
    fn program_name(bin: &Path) -> String {
        bin.file_name()
            .expect("a binary's path")
            .to_string_lossy()
            .into_owned()
    }

    fn kill_pid(pid: u32, sig: Signal) {
        let _ = kill(Pid::from_raw(pid as i32), sig);
    }

    /// Proves the prefork model serves and survives: [`serves_from_every_worker`], then
    /// [`replaces_a_killed_worker_and_dies_with_the_master`], on one server started with
    /// `extra` flags. `h2c`: the example also speaks HTTP/2 with prior knowledge on plain TCP.
    pub fn serves_respawns_and_dies_with_the_master(bin: &Path, extra: &[&str], h2c: bool) {
        let s = serves_from_every_worker(bin, extra, h2c);
        replaces_a_killed_worker_and_dies_with_the_master(s);
    }

    /// Proves that every worker serves the example contract, on a master started with `extra`
    /// flags: the two pids the master reported ready are exactly the pids answering `/pid`
    /// across concurrent connections; `/` says hello over HTTP/1.1 with `text/plain`; an unknown
    /// path is `404`; keep-alive requests on one connection all stay on one worker; with `h2c`,
    /// HTTP/2 with prior knowledge says hello too.
    ///
    /// Returns the server, still running, for the caller's own checks (its workers are
    /// [`Server::wait_ready`]) and for [`replaces_a_killed_worker_and_dies_with_the_master`].
    pub fn serves_from_every_worker(bin: &Path, extra: &[&str], h2c: bool) -> Server {
        let s = start(bin, extra);
        let ready: BTreeSet<u32> = s.wait_ready().into_iter().collect();
        assert_eq!(ready.len(), 2, "{}", s.log());
        assert_eq!(
            wait_for_distinct_pids(s.addr, 2),
            ready,
            "the pids answering /pid are the ready workers; log:\n{}",
            s.log()
        );

        let r = get(s.addr, "/").unwrap();
        assert_hello(&r);
        assert_eq!(r.version, hyper::Version::HTTP_11);
        assert_eq!(get(s.addr, "/nope").unwrap().status, 404);

        let mut conn = Http1::connect(s.addr).unwrap();
        let first = conn.get("/pid").unwrap().body;
        assert!(
            ready.contains(&first.parse().unwrap_or(0)),
            "/pid answered {first:?}"
        );
        for _ in 0..5 {
            let r = conn.get("/pid").unwrap();
            assert_eq!(
                (r.status, &r.body),
                (200, &first),
                "keep-alive stays on one worker"
            );
            assert_hello(&conn.get("/").unwrap());
        }

        if h2c {
            let r = get_h2c(s.addr, "/").unwrap();
            assert_eq!(r.version, hyper::Version::HTTP_2);
            assert_hello(&r);
        }
        s
    }

    /// Proves supervision and master-death handling on a running server (from
    /// [`serves_from_every_worker`]): a worker killed with SIGKILL is logged as an unexpected
    /// exit naming the signal, reaped (not even a zombie is left), and replaced under the same
    /// worker id by a new process; the replacement and the survivor are then exactly the pids
    /// answering, and `/` says hello. SIGKILL of the master then takes every worker down.
    pub fn replaces_a_killed_worker_and_dies_with_the_master(mut s: Server) {
        let ready: BTreeSet<u32> = s.wait_ready().into_iter().collect();
        let victim = *ready.iter().next().unwrap();
        let log = s.log();
        let id = log
            .lines()
            .find(|l| l.contains("worker started") && field(l, "pid") == Some(&victim.to_string()))
            .and_then(|l| field(l, "worker"))
            .expect("the victim's start line")
            .to_owned();
        kill_pid(victim, Signal::SIGKILL);
        assert!(
            s.wait_log("worker started", 3),
            "no respawn; log:\n{}",
            s.log()
        );
        let log = s.log();
        assert!(log.contains("worker exited unexpectedly"), "{log}");
        assert!(log.contains("SIGKILL"), "the exit names the signal:\n{log}");
        let respawn = log
            .lines()
            .filter(|l| l.contains("worker started"))
            .nth(2)
            .unwrap();
        assert_eq!(
            field(respawn, "worker"),
            Some(id.as_str()),
            "same worker id:\n{log}"
        );
        let new_pid: u32 = field(respawn, "pid").unwrap().parse().unwrap();
        assert!(!ready.contains(&new_pid), "{log}");
        assert_all_gone([victim], &log);
        let mut expected = ready.clone();
        expected.remove(&victim);
        expected.insert(new_pid);
        assert_eq!(wait_for_distinct_pids(s.addr, 2), expected, "{}", s.log());
        assert_hello(&get(s.addr, "/").unwrap());

        s.signal(Signal::SIGKILL);
        s.wait_exit(DEADLINE).expect("the master dies");
        for pid in expected {
            assert!(
                wait_until(DEADLINE, || !alive(pid)),
                "worker {pid} outlived its master; log:\n{}",
                s.log()
            );
        }
    }

    /// Sends SIGTERM to `s` while a slow `GET /` (the server runs with `--sleep-ms` of a second or
    /// more) is in flight, and checks that the request completes with the hello answer.
    fn sigterm_during_a_slow_request(s: &Server) {
        let mut conn = TcpStream::connect(s.addr).unwrap();
        // A worker has accepted the connection (it answers on it)...
        raw_get(&mut conn, "/pid");
        write!(conn, "GET / HTTP/1.1\r\nhost: test\r\n\r\n").unwrap();
        // ...and has read the slow request from it.
        let client = conn.local_addr().unwrap();
        assert!(
            wait_until(DEADLINE, || server_has_read(s.addr, client)),
            "the server never read the request; log:\n{}",
            s.log()
        );
        s.signal(Signal::SIGTERM);
        assert_eq!(
            read_response(&mut conn),
            "Hello, World!",
            "the in-flight request completes"
        );
    }

    /// Proves the graceful stop: SIGTERM to the master while a slow request (`--sleep-ms 1500`)
    /// is in flight lets it complete with the hello answer; an idle keep-alive connection is
    /// closed by the server rather than waited for (the shutdown timeout is set past
    /// [`DEADLINE`], so waiting for it would fail the test); every worker exits 0, the master
    /// exits 0, and no process is left. `extra` selects the listener mode (`--reuseport`).
    pub fn sigterm_drains_a_slow_request(bin: &Path, extra: &[&str]) {
        let mut args = vec!["--sleep-ms", "1500", "--shutdown-timeout-ms", "60000"];
        args.extend_from_slice(extra);
        let mut s = start(bin, &args);
        let workers = s.wait_ready();

        // An idle keep-alive connection: it had one request answered.
        let mut idle = TcpStream::connect(s.addr).unwrap();
        let pid = raw_get(&mut idle, "/pid");
        assert!(
            workers.contains(&pid.parse().unwrap_or(0)),
            "/pid answered {pid:?}"
        );

        sigterm_during_a_slow_request(&s);
        assert!(
            server_closes(&mut idle),
            "the idle keep-alive connection was not closed; log:\n{}",
            s.log()
        );
        let status = s.wait_exit(DEADLINE).expect("the master exits");
        let log = s.log();
        assert!(
            status.success(),
            "master exit status {status:?}; log:\n{log}"
        );
        assert_all_gone(workers, &log);
        assert_eq!(
            log.matches("status=exit status 0").count(),
            2,
            "both workers drained and exited 0:\n{log}"
        );
        assert!(!log.contains("exited unexpectedly"), "{log}");
    }

    /// Proves the loss-free drain of one worker under load (`extra`: the listener mode): with
    /// keep-alive clients and new-connection-per-request clients asking `/pid` without pause,
    /// SIGTERM to one worker directly makes it stop accepting and end each keep-alive
    /// connection at a request boundary. Checks: 0 failed requests; keep-alive clients got
    /// `Connection: close` and reconnected; a request sent on an idle keep-alive connection to
    /// that worker after its drain began (within the grace, `--drain-grace-ms 5000`) is answered
    /// by it, with `Connection: close`, and the connection is then closed; the worker exits 0
    /// and the load keeps being served.
    pub fn drain_under_load_loses_nothing(bin: &Path, extra: &[&str]) {
        use crate::load::{Load, LoadConfig};
        let mut args = vec!["--shutdown-timeout-ms", "20000", "--drain-grace-ms", "5000"];
        args.extend_from_slice(extra);
        let s = start(bin, &args);
        let workers = s.wait_ready();
        let load = Load::start(
            s.addr,
            LoadConfig {
                keepalive: 8,
                new_conn: 2,
                path: "/pid".into(),
                ..Default::default()
            },
        );
        assert!(load.wait_ok(300), "the load is served: {load:?}");
        // The victim: the worker serving most of the load (it holds keep-alive clients).
        let before = load.snapshot();
        let victim = *before
            .pids
            .iter()
            .max_by_key(|(_, n)| **n)
            .map(|(p, _)| p)
            .unwrap();
        assert!(workers.contains(&victim), "{before:?}");

        // An idle keep-alive connection to the victim (bounded search).
        let mut idle = None;
        for _ in 0..200 {
            let mut c = TcpStream::connect(s.addr).unwrap();
            if raw_get(&mut c, "/pid") == victim.to_string() {
                idle = Some(c);
                break;
            }
        }
        let mut idle = idle.expect("no connection reached the victim worker");
        let before = load.snapshot();

        kill_pid(victim, Signal::SIGTERM);
        // The drain has begun once a keep-alive client was told to close...
        assert!(
            wait_until(DEADLINE, || load.snapshot().closed_by_server
                > before.closed_by_server),
            "no keep-alive client got Connection: close: {load:?}; log:\n{}",
            s.log()
        );
        // ...and the idle connection, within its grace, still gets an answer, then the close.
        write!(idle, "GET /pid HTTP/1.1\r\nhost: test\r\n\r\n").unwrap();
        let answer = read_until_closed(&mut idle).expect("the idle connection is closed after");
        let answer = String::from_utf8_lossy(&answer).to_ascii_lowercase();
        assert!(
            answer.starts_with("http/1.1 200") && answer.ends_with(&victim.to_string()),
            "the request on the idle connection is answered by the draining worker: {answer:?}"
        );
        assert!(answer.contains("connection: close"), "{answer:?}");

        assert!(
            wait_until(DEADLINE, || !alive(victim)),
            "the victim did not exit; log:\n{}",
            s.log()
        );
        assert!(load.wait_ok(300), "the load goes on: {load:?}");
        let report = load.stop();
        assert_eq!(report.failed(), 0, "{report:?}; log:\n{}", s.log());
        assert!(report.reconnects > 0, "{report:?}");
        let log = s.log();
        let exit = log
            .lines()
            .find(|l| l.contains("exited") && field(l, "pid") == Some(&victim.to_string()))
            .unwrap_or_else(|| panic!("no exit line for {victim}:\n{log}"));
        assert!(exit.contains("exit status 0"), "the worker exits 0: {exit}");
    }

    /// Runs `bin` with `args` and expects it to exit on its own with status 1 and a message that
    /// starts with the program's name; returns everything it printed.
    fn fails_fast(bin: &Path, args: &[&str]) -> String {
        let (status, log) = Server::run_to_exit(&bin.to_path_buf(), args, &[]);
        assert_eq!(status.code(), Some(1), "{args:?}: {log}");
        let name = program_name(bin);
        assert!(log.contains(&format!("{name}: ")), "{args:?}: {log}");
        log
    }

    /// `bin` with `mode` flags, on a port that another socket holds, fails fast naming the
    /// address and the OS's cause, with no worker started.
    fn busy_port_fails_fast(bin: &Path, mode: &[&str]) {
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = taken.local_addr().unwrap().to_string();
        let mut args = vec!["--addr", addr.as_str(), "--workers", "2"];
        args.extend_from_slice(mode);
        let log = fails_fast(bin, &args);
        let name = program_name(bin);
        assert!(
            log.contains(&format!("{name}: cannot listen on {addr}")),
            "{mode:?}: {log}"
        );
        assert!(log.contains("Address already in use"), "{mode:?}: {log}");
        assert!(!log.contains("worker started"), "{mode:?}: {log}");
    }

    /// Proves that bad start-up input fails fast, in the master, before any worker starts: a
    /// busy port (shared-socket and `SO_REUSEPORT` modes) names the address and the OS's cause;
    /// `--workers 0` is refused; an invalid address is named. Each exits with status 1 and a
    /// message that starts with the program's name.
    pub fn bad_input_fails_fast(bin: &Path) {
        busy_port_fails_fast(bin, &[]);
        busy_port_fails_fast(bin, &["--reuseport"]);
        let log = fails_fast(bin, &["--addr", "127.0.0.1:0", "--workers", "0"]);
        assert!(log.contains("workers must be at least 1"), "{log}");
        assert!(!log.contains("worker started"), "{log}");
        let log = fails_fast(bin, &["--addr", "127.0.0.1:99999"]);
        assert!(log.contains("127.0.0.1:99999"), "{log}");
        assert!(!log.contains("worker started"), "{log}");
    }

    /// Proves that a worker's start-up error is the master's error, without a restart loop, for
    /// examples that take `--require-file PATH` (a file each worker reads before it reports
    /// ready; a test-only flag): with a missing file, the master exits with status
    /// 1 and the worker's own message (`failed to start: ... cannot read <path>`), only the two
    /// initial workers were ever started, and none was reported ready.
    ///
    /// Returns the log, for the caller's own checks on the message.
    pub fn a_workers_startup_error_is_the_masters_error(bin: &Path) -> String {
        let missing = "/nonexistent/prefork-app-data.bin";
        let args = [
            "--addr",
            "127.0.0.1:0",
            "--workers",
            "2",
            "--require-file",
            missing,
        ];
        let log = fails_fast(bin, &args);
        assert!(log.contains("failed to start"), "{log}");
        assert!(
            log.contains(&format!("cannot read {missing}")),
            "the worker's own message:\n{log}"
        );
        assert_eq!(log.matches("worker started").count(), 2, "{log}");
        assert!(!log.contains("all workers ready"), "{log}");
        let printed = format!("{}: ", program_name(bin));
        assert_eq!(
            log.lines().filter(|l| l.starts_with(&printed)).count(),
            1,
            "printed once, by the master (the worker exits quietly):\n{log}"
        );
        log
    }

    /// Proves the `--no-prefork` baseline: [`no_prefork_serves`], then
    /// [`no_prefork_drains_a_slow_request`]. `h2c`: the example also speaks HTTP/2 with prior
    /// knowledge on plain TCP.
    pub fn no_prefork_serves_and_drains(bin: &Path, h2c: bool) {
        let s = no_prefork_serves(bin, h2c);
        no_prefork_drains_a_slow_request(s);
    }

    /// Proves that `--no-prefork --workers 2` is one process on 2 threads: `/pid` answers its
    /// own pid, it has no child, its `listening` line says `threads=2`; an unknown path is
    /// `404`; with `h2c`, HTTP/2 with prior knowledge works. The server runs with
    /// `--sleep-ms 1000` (`/` is slow, `/pid` is not).
    ///
    /// Returns the server, still running, for the caller's own checks and for
    /// [`no_prefork_drains_a_slow_request`].
    pub fn no_prefork_serves(bin: &Path, h2c: bool) -> Server {
        let s = start(bin, &["--no-prefork", "--sleep-ms", "1000"]);
        let log = s.log();
        let listening = log.lines().find(|l| l.contains("listening")).unwrap();
        assert_eq!(field(listening, "threads"), Some("2"), "{log}");
        let r = get(s.addr, "/pid").unwrap();
        assert_eq!(r.body, s.pid().to_string(), "served by the process itself");
        assert!(s.children().is_empty(), "no worker process");
        assert_eq!(get(s.addr, "/nope").unwrap().status, 404);
        if h2c {
            let r = get_h2c(s.addr, "/pid").unwrap();
            assert_eq!(r.version, hyper::Version::HTTP_2);
            assert_eq!(r.body, s.pid().to_string());
        }
        s
    }

    /// Proves the single process's graceful stop (on a server from [`no_prefork_serves`]):
    /// SIGTERM during a slow request lets it complete with the hello answer, and the process
    /// exits 0.
    pub fn no_prefork_drains_a_slow_request(mut s: Server) {
        sigterm_during_a_slow_request(&s);
        let status = s.wait_exit(DEADLINE).expect("the server exits");
        assert!(status.success(), "{status:?}; log:\n{}", s.log());
    }

    /// Proves that `--no-prefork` fails fast on bad input too: a busy port names the address
    /// and the OS's cause, `--workers 0` is refused ("must be at least 1"); both exit with
    /// status 1 and a message that starts with the program's name.
    pub fn no_prefork_bad_input_fails_fast(bin: &Path) {
        busy_port_fails_fast(bin, &["--no-prefork"]);
        let log = fails_fast(
            bin,
            &["--addr", "127.0.0.1:0", "--workers", "0", "--no-prefork"],
        );
        assert!(log.contains("must be at least 1"), "{log}");
    }

    /// Asks `/pid` over HTTPS on new connections until `n` distinct workers answered (bounded
    /// by a count and [`DEADLINE`]); returns them.
    fn tls_pids(addr: SocketAddr, ca: &str, n: usize) -> BTreeSet<u32> {
        let mut seen = BTreeSet::new();
        let end = Instant::now() + DEADLINE;
        for _ in 0..500 {
            if let Ok(r) = get_tls(addr, "/pid", ca, &[b"http/1.1"]) {
                seen.extend(r.body.trim().parse::<u32>().ok());
            }
            if seen.len() >= n || Instant::now() >= end {
                break;
            }
        }
        seen
    }

    /// Proves HTTPS with `--cert/--key` (plus `extra` flags) and that bad handshakes cost their
    /// connection only. Through a client that trusts the test CA, `/` says hello: over HTTP/2
    /// when `h2` is offered (if `expect_h2`, else HTTP/1.1), over HTTP/1.1 when only it or no
    /// ALPN is offered. Plain HTTP sent to the TLS port gets no HTTP answer and is closed;
    /// random bytes are closed; a client that stalls mid-handshake and one that sends nothing are
    /// closed by the handshake timeout (`--tls-handshake-timeout-ms 300`). Afterwards the same
    /// two workers (none restarted) all still serve HTTPS.
    ///
    /// Returns the server, still running, for the caller's own checks.
    pub fn tls_serves_and_survives_bad_handshakes(
        bin: &Path,
        extra: &[&str],
        expect_h2: bool,
    ) -> Server {
        let certs = TestCerts::generate();
        let dir = temp_dir("contract-tls");
        let (cert, key) = certs.write_to(&dir);
        let (cert, key) = (cert.to_str().unwrap(), key.to_str().unwrap());
        let mut args = vec![
            "--cert",
            cert,
            "--key",
            key,
            "--tls-handshake-timeout-ms",
            "300",
        ];
        args.extend_from_slice(extra);
        let s = start(bin, &args);
        let workers: BTreeSet<u32> = s.wait_ready().into_iter().collect();
        let ca = certs.ca_pem.as_str();

        let r = get_tls(s.addr, "/", ca, &[b"h2", b"http/1.1"]).unwrap();
        assert_hello(&r);
        let negotiated = if expect_h2 {
            hyper::Version::HTTP_2
        } else {
            hyper::Version::HTTP_11
        };
        assert_eq!(r.version, negotiated, "chosen by ALPN");
        let http1: &[&[u8]] = &[b"http/1.1"];
        for alpn in [http1, &[]] {
            let r = get_tls(s.addr, "/", ca, alpn).unwrap();
            assert_hello(&r);
            assert_eq!(r.version, hyper::Version::HTTP_11, "ALPN {alpn:?}");
        }

        // Plain HTTP to the TLS port: no HTTP answer, the connection is closed.
        let mut plain = TcpStream::connect(s.addr).unwrap();
        plain
            .write_all(b"GET / HTTP/1.1\r\nhost: localhost\r\n\r\n")
            .unwrap();
        let answer = read_until_closed(&mut plain).expect("plain HTTP: connection left open");
        assert!(
            !answer.starts_with(b"HTTP/"),
            "plain HTTP must not be answered: {:?}",
            String::from_utf8_lossy(&answer)
        );
        // Random bytes: closed.
        let mut junk = TcpStream::connect(s.addr).unwrap();
        let mut x: u32 = 0x9e37_79b9;
        let bytes: Vec<u8> = (0..1024)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                x as u8
            })
            .collect();
        let _ = junk.write_all(&bytes);
        assert!(
            server_closes(&mut junk),
            "random bytes: connection left open"
        );
        // A ClientHello record header announcing 512 bytes, then a few of them and nothing more;
        // and a client that sends nothing at all. Both wait on the same handshake timeout.
        let mut stalled = TcpStream::connect(s.addr).unwrap();
        stalled
            .write_all(&[
                0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03,
            ])
            .unwrap();
        let mut silent = TcpStream::connect(s.addr).unwrap();
        assert!(
            server_closes(&mut stalled),
            "stalled handshake: connection left open; log:\n{}",
            s.log()
        );
        assert!(
            server_closes(&mut silent),
            "silent client: connection left open; log:\n{}",
            s.log()
        );

        // The workers kept serving: the same ones, none restarted.
        assert_hello(&get_tls(s.addr, "/", ca, &[b"h2", b"http/1.1"]).unwrap());
        assert_eq!(tls_pids(s.addr, ca, 2), workers, "{}", s.log());
        assert_eq!(s.started_workers(), workers, "{}", s.log());
        assert_eq!(
            s.children().into_iter().collect::<BTreeSet<_>>(),
            workers,
            "{}",
            s.log()
        );
        assert!(!s.log().contains("exited unexpectedly"), "{}", s.log());
        let _ = std::fs::remove_dir_all(dir);
        s
    }

    /// Proves that bad TLS input fails in the master, before any worker starts: a missing
    /// certificate file, a file with no certificate, one with no key, a key that does not match
    /// the certificate, certificate and key swapped. Each exits with status 1 and a message
    /// `<program>: TLS: ...` naming the offending file and the problem.
    pub fn bad_tls_inputs_fail_fast(bin: &Path) {
        let name = program_name(bin);
        let dir = temp_dir("contract-bad-tls");
        let (cert, key) = TestCerts::generate().write_to(&dir);
        let junk = dir.join("junk.pem");
        std::fs::write(&junk, "not a PEM file\n").unwrap();
        let other_key = dir.join("other-key.pem");
        std::fs::write(&other_key, TestCerts::generate().key_pem).unwrap();
        let missing = dir.join("missing.pem");

        let cases: [(&str, &Path, &Path, &Path, &str); 5] = [
            ("missing cert", &missing, &key, &missing, "cannot read"),
            ("no certificate", &junk, &key, &junk, "no certificate found"),
            ("no key", &cert, &junk, &junk, "no private key found"),
            (
                "key not matching",
                &cert,
                &other_key,
                &other_key,
                "does not match the certificate",
            ),
            (
                "swapped",
                &key,
                &cert,
                &key,
                "are the certificate and key swapped?",
            ),
        ];
        for (case, cert_arg, key_arg, named, problem) in cases {
            let args = [
                "--addr",
                "127.0.0.1:0",
                "--workers",
                "2",
                "--cert",
                cert_arg.to_str().unwrap(),
                "--key",
                key_arg.to_str().unwrap(),
            ];
            let log = fails_fast(bin, &args);
            assert!(log.contains(&format!("{name}: TLS: ")), "{case}: {log}");
            let named = named.display().to_string();
            assert!(
                log.contains(&named),
                "{case}: the path {named} is named:\n{log}"
            );
            assert!(
                log.contains(problem),
                "{case}: {problem:?} expected:\n{log}"
            );
            assert!(!log.contains("worker started"), "{case}: {log}");
        }
        let _ = std::fs::remove_dir_all(dir);
    }
}
