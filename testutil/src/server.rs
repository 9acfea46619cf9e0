//! Server processes: a master started for a test, its log, its signals and its workers.

use std::collections::BTreeSet;
use std::io::{self, BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::{children_of, field, wait_until, DEADLINE};

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
