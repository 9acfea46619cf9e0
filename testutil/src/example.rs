//! What the example programs share: the flags of the example contract and the
//! logging set-up. Examples are allowed dev-dependencies, so they take these from here instead of
//! repeating them four times.

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
    /// Turn off balanced accept across the workers (the shared connection table; on by
    /// default).
    #[arg(long)]
    pub no_balance: bool,
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
    /// Workers count nothing and report no stats (the master's stats show zeros); the
    /// heartbeat watchdog is off too unless --worker-timeout is given, so workers send no
    /// heartbeat. Refused with --max-requests.
    #[arg(long)]
    pub no_stats: bool,
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
    /// How long an idle keep-alive connection stays open, in milliseconds (0: until the client
    /// closes it); default: the library's (75 s).
    #[arg(long)]
    pub keepalive_timeout_ms: Option<u64>,
    /// How long a request head may take from its first byte, in milliseconds (0: no limit);
    /// default: the library's (30 s). hyper-based adapters.
    #[arg(long)]
    pub header_timeout_ms: Option<u64>,
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
    /// `--shutdown-timeout-ms`, the health (`--no-stats` included) and drain options, and `--cert/--key` when given.
    pub fn prefork(&self) -> prefork_core::Prefork {
        let mut prefork = prefork_core::Prefork::new(self.addr.as_str())
            .reuseport(self.reuseport)
            .balance(!self.no_balance)
            .shutdown_timeout(self.shutdown_timeout());
        if let Some(n) = self.workers {
            prefork = prefork.workers(n);
        }
        if self.no_stats {
            prefork = prefork.stats(false).worker_timeout(None);
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
        // 0: no timeout.
        let optional = |ms: u64| (ms > 0).then(|| Duration::from_millis(ms));
        if let Some(ms) = self.keepalive_timeout_ms {
            prefork = prefork.keepalive_timeout(optional(ms));
        }
        if let Some(ms) = self.header_timeout_ms {
            prefork = prefork.header_read_timeout(optional(ms));
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
