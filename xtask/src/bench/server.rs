//! The servers under test: ours (each adapter's example program) and the peers in
//! `benches/peers/`, how to start them (CPU pin, fd limit, logs to a file) and stop them.

use std::fs::File;
use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::ValueEnum;
use prefork_testutil::Sig;

use super::procfs::tree;
use crate::project_root;

/// An adapter's example program (the example contract: `--addr --workers --reuseport
/// --no-prefork --sleep-ms --cert --key`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, ValueEnum)]
pub(crate) enum Adapter {
    /// prefork-core's std_hello (blocking std::net; no TLS, no `--no-prefork`).
    Std,
    Hyper,
    Axum,
    Actix,
    Smol,
}

impl Adapter {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Adapter::Std => "std",
            Adapter::Hyper => "hyper",
            Adapter::Axum => "axum",
            Adapter::Actix => "actix",
            Adapter::Smol => "smol",
        }
    }

    /// (package, example)
    pub(crate) fn example(self) -> (&'static str, &'static str) {
        match self {
            Adapter::Std => ("prefork-core", "std_hello"),
            Adapter::Hyper => ("prefork-tokio", "hyper_hello"),
            Adapter::Axum => ("prefork-axum", "axum_hello"),
            Adapter::Actix => ("prefork-actix", "actix_hello"),
            Adapter::Smol => ("prefork-smol", "smol_hello"),
        }
    }

    /// Serves HTTPS with `--cert/--key`.
    pub(crate) fn tls(self) -> bool {
        self != Adapter::Std
    }

    /// Has the framework's own single-process server (`--no-prefork`).
    pub(crate) fn no_prefork(self) -> bool {
        self != Adapter::Std
    }

    /// Speaks cleartext HTTP/2 with prior knowledge (actix-web's `listen` is HTTP/1.1 only; smol serves HTTP/2 over TLS only).
    pub(crate) fn h2c(self) -> bool {
        matches!(self, Adapter::Hyper | Adapter::Axum)
    }

    pub(crate) fn bin(self) -> PathBuf {
        project_root()
            .join("target/release/examples")
            .join(self.example().1)
    }
}

/// How one of our programs serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, ValueEnum)]
pub(crate) enum Mode {
    /// Master + workers sharing one listening socket.
    Prefork,
    /// Master + workers, one SO_REUSEPORT socket each.
    Reuseport,
    /// Master + workers sharing one socket, worker i pinned to CPU i (`--cpu-affinity`).
    Pinned,
    /// The framework's own multi-threaded single-process server (`--workers` threads).
    NoPrefork,
    /// As prefork, with stats and heartbeats off (`--no-stats`: no counting, no watchdog): the
    /// hot-path cost of both, against prefork in the same rounds (plain scenario only).
    StatsOff,
    /// As prefork, with balanced accept off (`--no-balance`: every worker accepts whatever it
    /// can, as a plain shared socket does), against prefork in the same rounds (plain, churn
    /// and pinned scenarios).
    NoBalance,
}

impl Mode {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Mode::Prefork => "prefork",
            Mode::Reuseport => "reuseport",
            Mode::Pinned => "cpu-affinity",
            Mode::NoPrefork => "no-prefork",
            Mode::StatsOff => "prefork-stats-off",
            Mode::NoBalance => "prefork-no-balance",
        }
    }
}

/// The peers in `benches/peers/` (see its setup.sh).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, ValueEnum)]
pub(crate) enum Peer {
    /// Go fasthttp under fasthttp/prefork (one child per worker, shared socket).
    FasthttpPrefork,
    /// Go fasthttp in one process (GOMAXPROCS = the CPUs).
    Fasthttp,
    /// nginx, `--workers` worker processes.
    Nginx,
    /// Node's cluster module, `--workers` workers.
    NodeCluster,
}

impl Peer {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Peer::FasthttpPrefork => "fasthttp-prefork",
            Peer::Fasthttp => "fasthttp",
            Peer::Nginx => "nginx",
            Peer::NodeCluster => "node-cluster",
        }
    }
}

/// Who serves: one of ours in a mode, or a peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum Target {
    Ours(Adapter, Mode),
    Peer(Peer),
}

impl Target {
    pub(crate) fn server(self) -> &'static str {
        match self {
            Target::Ours(a, _) => a.name(),
            Target::Peer(p) => p.name(),
        }
    }

    pub(crate) fn mode(self) -> &'static str {
        match self {
            Target::Ours(_, m) => m.name(),
            Target::Peer(_) => "peer",
        }
    }

    pub(crate) fn label(self) -> String {
        format!("{} {}", self.server(), self.mode())
    }
}

/// The protocol a run speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Proto {
    Http,
    Https,
    /// HTTP/2 over TLS (ALPN).
    H2,
    /// Cleartext HTTP/2, prior knowledge.
    H2c,
}

impl Proto {
    pub(crate) fn tls(self) -> bool {
        matches!(self, Proto::Https | Proto::H2)
    }
}

/// What a server start needs besides the target.
#[derive(Debug, Clone)]
pub(crate) struct Launch<'a> {
    pub(crate) port: u16,
    pub(crate) workers: usize,
    pub(crate) sleep_ms: u64,
    pub(crate) proto: Proto,
    /// (cert, key) PEM files, for TLS.
    pub(crate) certs: Option<(&'a Path, &'a Path)>,
    pub(crate) limits: Limits,
    /// `RUST_LOG` of our servers.
    pub(crate) rust_log: &'a str,
    /// The master's control socket (`--control-socket`), for ours: per-worker stats.
    pub(crate) control_socket: Option<&'a Path>,
}

/// CPU affinity and fd limit, applied to a command between fork and exec.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Limits {
    /// Run on this CPU only.
    pub(crate) cpu: Option<usize>,
    /// RLIMIT_NOFILE (soft, hard).
    pub(crate) nofile: Option<(u64, u64)>,
}

impl Limits {
    pub(crate) fn apply(self, cmd: &mut Command) {
        if self.cpu.is_none() && self.nofile.is_none() {
            return;
        }
        // SAFETY: the closure runs in the child between fork and exec and calls only
        // sched_setaffinity and setrlimit (async-signal-safe system calls) on stack data.
        unsafe {
            cmd.pre_exec(move || {
                if let Some(cpu) = self.cpu {
                    // SAFETY: an all-zero cpu_set_t is a valid empty set.
                    let mut set: libc::cpu_set_t = std::mem::zeroed();
                    libc::CPU_SET(cpu, &mut set);
                    if libc::sched_setaffinity(0, std::mem::size_of_val(&set), &set) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                if let Some((soft, hard)) = self.nofile {
                    nix::sys::resource::setrlimit(
                        nix::sys::resource::Resource::RLIMIT_NOFILE,
                        soft,
                        hard,
                    )?;
                }
                Ok(())
            });
        }
    }
}

/// The hard fd limit the c10k runs use: at least `want`, at most what the kernel allows.
pub(crate) fn hard_nofile(want: u64) -> u64 {
    let nr_open = super::procfs::read_trim("/proc/sys/fs/nr_open")
        .parse()
        .unwrap_or(1 << 20);
    let (_, hard) = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
        .unwrap_or((1024, 4096));
    // Raising the hard limit needs CAP_SYS_RESOURCE; without it, keep the current one.
    // SAFETY: geteuid has no preconditions and cannot fail.
    let privileged = unsafe { libc::geteuid() } == 0;
    if privileged {
        want.max(hard).min(nr_open)
    } else {
        hard
    }
}

/// The directory of the peers' sources and scripts.
pub(crate) fn peers_dir() -> PathBuf {
    project_root().join("benches/peers")
}

/// Where setup.sh puts the built Go peer (`BENCH_OUT`, default target/bench/peers).
pub(crate) fn fasthttp_bin() -> PathBuf {
    std::env::var_os("BENCH_OUT")
        .map(PathBuf::from)
        .unwrap_or_else(|| project_root().join("target/bench/peers"))
        .join("bin/fasthttp-peer")
}

/// Whether a peer can serve `proto` at all.
pub(crate) fn peer_supports(peer: Peer, proto: Proto) -> bool {
    match peer {
        Peer::Nginx => true,
        Peer::FasthttpPrefork | Peer::Fasthttp => matches!(proto, Proto::Http | Proto::Https),
        Peer::NodeCluster => proto == Proto::Http,
    }
}

/// Whether one of ours can serve `proto` in `mode`.
pub(crate) fn ours_supports(adapter: Adapter, mode: Mode, proto: Proto) -> bool {
    (mode != Mode::NoPrefork || adapter.no_prefork())
        && match proto {
            Proto::Http => true,
            Proto::Https | Proto::H2 => adapter.tls(),
            Proto::H2c => adapter.h2c(),
        }
}

/// The command that starts `target` as `launch` says.
pub(crate) fn command(target: Target, launch: &Launch<'_>) -> Result<Command> {
    let addr = format!("127.0.0.1:{}", launch.port);
    let workers = launch.workers.to_string();
    let mut cmd = match target {
        Target::Ours(adapter, mode) => {
            let mut c = Command::new(adapter.bin());
            c.args(["--addr", &addr, "--workers", &workers])
                .args(["--sleep-ms", &launch.sleep_ms.to_string()])
                .env("RUST_LOG", launch.rust_log);
            match mode {
                Mode::Prefork => {}
                Mode::Reuseport => {
                    c.arg("--reuseport");
                }
                Mode::Pinned => {
                    c.arg("--cpu-affinity");
                }
                Mode::NoPrefork => {
                    c.arg("--no-prefork");
                }
                Mode::StatsOff => {
                    c.arg("--no-stats");
                }
                Mode::NoBalance => {
                    c.arg("--no-balance");
                }
            }
            if let Some(path) = launch.control_socket {
                c.arg("--control-socket").arg(path);
            }
            if launch.proto.tls() {
                let (cert, key) = launch.certs.context("TLS run without certificates")?;
                c.arg("--cert").arg(cert).arg("--key").arg(key);
            }
            c
        }
        Target::Peer(peer @ (Peer::FasthttpPrefork | Peer::Fasthttp)) => {
            let bin = fasthttp_bin();
            if !bin.exists() {
                bail!(
                    "{} is missing: run benches/peers/setup.sh (or setup.sh --build)",
                    bin.display()
                );
            }
            let mut c = Command::new(bin);
            c.args(["-addr", &addr, "-sleep", &format!("{}ms", launch.sleep_ms)]);
            if peer == Peer::FasthttpPrefork {
                c.args(["-prefork", "-workers", &workers]);
            }
            if launch.proto.tls() {
                let (cert, key) = launch.certs.context("TLS run without certificates")?;
                c.arg("-cert").arg(cert).arg("-key").arg(key);
            }
            c
        }
        Target::Peer(Peer::Nginx) => {
            let mut c = Command::new(peers_dir().join("nginx/start.sh"));
            let mode = match launch.proto {
                Proto::Http => "plain",
                Proto::Https => "ssl",
                Proto::H2 => "h2",
                Proto::H2c => "h2c",
            };
            c.args([
                launch.port.to_string(),
                workers,
                launch.sleep_ms.to_string(),
                mode.to_owned(),
            ]);
            if let Some((cert, key)) = launch.certs {
                c.env("CERT", cert).env("KEY", key);
            }
            c
        }
        Target::Peer(Peer::NodeCluster) => {
            let mut c = Command::new("node");
            c.arg(peers_dir().join("node-cluster/server.js"))
                .args(["--addr", &addr, "--workers", &workers])
                .args(["--sleep", &launch.sleep_ms.to_string()]);
            c
        }
    };
    launch.limits.apply(&mut cmd);
    Ok(cmd)
}

/// A started server: its own process group, logs in a file.
#[derive(Debug)]
pub(crate) struct Started {
    child: Child,
    pub(crate) log: PathBuf,
}

impl Started {
    pub(crate) fn start(mut cmd: Command, log: PathBuf) -> Result<Started> {
        let out = File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        cmd.env_remove("PREFORK_CHILD")
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .process_group(0);
        let child = cmd.spawn().with_context(|| format!("starting {cmd:?}"))?;
        Ok(Started { child, log })
    }

    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The server's output so far.
    pub(crate) fn output(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Whether the started process (the master) is still running.
    pub(crate) fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Waits until `GET /` answers 200 in `proto` (15 s at most).
    pub(crate) fn wait_up(&mut self, port: u16, proto: Proto, ca_pem: Option<&str>) -> Result<()> {
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse()?;
        let up = prefork_testutil::wait_until(Duration::from_secs(15), || {
            let r = match (proto, ca_pem) {
                (Proto::Http, _) => prefork_testutil::get(addr, "/"),
                (Proto::H2c, _) => prefork_testutil::get_h2c(addr, "/"),
                (Proto::Https, Some(ca)) => prefork_testutil::get_tls(addr, "/", ca, &[]),
                (Proto::H2, Some(ca)) => prefork_testutil::get_tls(addr, "/", ca, &[b"h2"]),
                (_, None) => return false,
            };
            r.map(|r| r.status == 200).unwrap_or(false)
        });
        if !up {
            bail!(
                "no answer on {addr} ({proto:?}); server output:\n{}",
                self.output()
            );
        }
        Ok(())
    }

    /// SIGTERM to the group, SIGKILL to whatever is left after 5 s.
    pub(crate) fn stop(mut self) {
        let pids = tree(self.pid());
        let pgid = nix::unistd::Pid::from_raw(-(self.pid() as i32));
        let _ = nix::sys::signal::kill(pgid, Sig::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        for pid in pids.into_iter().chain(tree(self.pid())) {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), Sig::SIGKILL);
        }
        let _ = nix::sys::signal::kill(pgid, Sig::SIGKILL);
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
