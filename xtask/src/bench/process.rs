//! Process-model costs of our programs: start-up, respawn, graceful stop, idle memory.

use std::path::Path;
use std::time::{Duration, Instant};

use prefork_testutil::{Server, Sig};
use serde::Serialize;

use super::procfs::{private_kb, pss_kb, rss_kb};
use super::report::Spread;

/// Medians over the trials.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct ProcessCosts {
    pub(crate) server: String,
    pub(crate) startup_ms: f64,
    pub(crate) respawn_ms: f64,
    /// SIGHUP to `reload complete`: every worker replaced by a new one that reported ready.
    pub(crate) reload_ms: f64,
    pub(crate) stop_ms: f64,
    pub(crate) master_rss_mb: f64,
    pub(crate) master_pss_mb: f64,
    pub(crate) master_private_mb: f64,
    pub(crate) worker_pss_mb: f64,
}

impl ProcessCosts {
    pub(crate) fn row(&self) -> String {
        format!(
            "| {} | {:.1} | {:.1} | {:.1} | {:.1} | {:.2} | {:.2} | {:.2} | {:.2} |",
            self.server,
            self.startup_ms,
            self.respawn_ms,
            self.reload_ms,
            self.stop_ms,
            self.master_rss_mb,
            self.master_pss_mb,
            self.master_private_mb,
            self.worker_pss_mb
        )
    }
}

/// Start-up (launch to every worker ready), respawn (SIGKILL of a worker to its replacement's
/// ready), rolling reload (SIGHUP to `reload complete`), graceful stop of idle workers, and idle
/// memory: medians over `trials` runs.
pub(crate) fn costs(server: &str, bin: &Path, workers: usize, trials: usize) -> ProcessCosts {
    let mut startup = Vec::new();
    let mut respawn = Vec::new();
    let mut reload = Vec::new();
    let mut stop = Vec::new();
    let mut rss = Vec::new();
    let mut master_pss = Vec::new();
    let mut private = Vec::new();
    let mut pss = Vec::new();
    let workers = workers.to_string();
    let args = ["--addr", "127.0.0.1:0", "--workers", &workers];
    let bin = bin.to_path_buf();
    for _ in 0..trials.max(1) {
        let t0 = Instant::now();
        let mut s = Server::start_with_env(&bin, &args, &[("RUST_LOG", "prefork_core=debug")]);
        s.wait_ready();
        startup.push(t0.elapsed().as_secs_f64() * 1000.0);
        // Idle memory, once the workers are up.
        std::thread::sleep(Duration::from_millis(100));
        let mb = |kb: u64| kb as f64 / 1024.0;
        rss.push(mb(rss_kb(s.pid())));
        master_pss.push(mb(pss_kb(s.pid())));
        private.push(mb(private_kb(s.pid())));
        let kids = s.children();
        if !kids.is_empty() {
            pss.push(mb(kids.iter().map(|&p| pss_kb(p)).sum::<u64>()) / kids.len() as f64);
        }
        // Respawn: kill one worker, wait for the replacement's `worker ready` line.
        let before = s.log().matches("worker ready").count();
        if let Some(&victim) = kids.first() {
            let t = Instant::now();
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(victim as i32), Sig::SIGKILL);
            if s.wait_log("worker ready", before + 1) {
                respawn.push(t.elapsed().as_secs_f64() * 1000.0);
            }
        }
        // Rolling reload of every (idle) worker.
        let done = s.log().matches("reload complete").count();
        let t = Instant::now();
        s.signal(Sig::SIGHUP);
        if s.wait_log("reload complete", done + 1) {
            reload.push(t.elapsed().as_secs_f64() * 1000.0);
        }
        let t = Instant::now();
        s.signal(Sig::SIGTERM);
        if s.wait_exit(Duration::from_secs(30)).is_some() {
            stop.push(t.elapsed().as_secs_f64() * 1000.0);
        }
    }
    let med = |v: Vec<f64>| Spread::of(v).median;
    ProcessCosts {
        server: server.to_owned(),
        startup_ms: med(startup),
        respawn_ms: med(respawn),
        reload_ms: med(reload),
        stop_ms: med(stop),
        master_rss_mb: med(rss),
        master_pss_mb: med(master_pss),
        master_private_mb: med(private),
        worker_pss_mb: med(pss),
    }
}
