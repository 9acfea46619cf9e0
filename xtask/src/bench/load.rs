//! The load generators: wrk (HTTP/1.1 and HTTPS) and h2load (HTTP/2), each run bounded in time
//! (`timeout -k`), each under an optional CPU pin and fd limit, and their output parsed.

use std::path::Path;
use std::process::Command;

use anyhow::{bail, Context, Result};

use super::server::Limits;

/// What one measured load run gives.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct LoadStats {
    pub(crate) rps: f64,
    pub(crate) p50_ms: f64,
    pub(crate) p99_ms: f64,
    /// Socket errors (connect, read, write, timeout) plus non-2xx answers.
    pub(crate) errors: u64,
}

/// One wrk run.
#[derive(Debug, Clone)]
pub(crate) struct Wrk<'a> {
    pub(crate) url: &'a str,
    pub(crate) secs: u64,
    pub(crate) conns: usize,
    pub(crate) threads: usize,
    /// Send `Connection: close`: a new connection (and TLS handshake) per request.
    pub(crate) close: bool,
    /// wrk's per-request timeout.
    pub(crate) timeout_secs: u64,
    pub(crate) limits: Limits,
}

impl Wrk<'_> {
    pub(crate) fn run(&self) -> Result<LoadStats> {
        let mut cmd = Command::new("timeout");
        cmd.args(["-k", "5", &(self.secs + 30).to_string(), "wrk"])
            .args(["-t", &self.threads.max(1).to_string()])
            .args(["-c", &self.conns.max(self.threads).to_string()])
            .args(["-d", &format!("{}s", self.secs)])
            .args(["--timeout", &format!("{}s", self.timeout_secs)])
            .arg("--latency");
        if self.close {
            cmd.args(["-H", "Connection: close"]);
        }
        cmd.arg(self.url);
        self.limits.apply(&mut cmd);
        let out = cmd.output().context("running wrk")?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        if !out.status.success() {
            bail!(
                "wrk failed ({}): {}{stdout}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            );
        }
        parse_wrk(&stdout).with_context(|| format!("parsing wrk output:\n{stdout}"))
    }
}

/// One h2load run: `conns` connections with `streams` concurrent streams each.
#[derive(Debug, Clone)]
pub(crate) struct H2load<'a> {
    pub(crate) url: &'a str,
    pub(crate) secs: u64,
    pub(crate) warmup: u64,
    pub(crate) conns: usize,
    pub(crate) streams: usize,
    pub(crate) threads: usize,
    pub(crate) limits: Limits,
    /// Where h2load writes one line per request (its percentiles come from there).
    pub(crate) log: &'a Path,
}

impl H2load<'_> {
    pub(crate) fn run(&self) -> Result<LoadStats> {
        let mut cmd = Command::new("timeout");
        cmd.args([
            "-k",
            "5",
            &(self.secs + self.warmup + 30).to_string(),
            "h2load",
        ])
        .args(["-t", &self.threads.max(1).to_string()])
        .args(["-c", &self.conns.max(self.threads).to_string()])
        .args(["-m", &self.streams.to_string()])
        .args(["-D", &self.secs.to_string()])
        .arg(format!("--warm-up-time={}", self.warmup))
        .arg(format!("--log-file={}", self.log.display()))
        .arg(self.url);
        self.limits.apply(&mut cmd);
        let out = cmd.output().context("running h2load")?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        if !out.status.success() {
            bail!(
                "h2load failed ({}): {}{stdout}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let mut stats =
            parse_h2load(&stdout).with_context(|| format!("parsing h2load output:\n{stdout}"))?;
        let log = std::fs::read_to_string(self.log)
            .with_context(|| format!("reading {}", self.log.display()))?;
        let _ = std::fs::remove_file(self.log);
        let (p50, p99) = h2load_percentiles(&log);
        stats.p50_ms = p50;
        stats.p99_ms = p99;
        Ok(stats)
    }
}

/// Whether the load tools are installed; the error says how to get them.
pub(crate) fn check(tool: &str) -> Result<()> {
    match Command::new(tool).arg("--version").output() {
        Ok(_) => Ok(()),
        Err(_) => bail!(
            "{tool} not found: run benches/peers/setup.sh once (it installs wrk, h2load, Go, nginx \
             from the distribution's packages and builds the Go peer)"
        ),
    }
}

/// Milliseconds from a wrk latency such as `512.00us`, `4.55ms` or `1.02s`.
pub(crate) fn wrk_ms(v: &str) -> Option<f64> {
    let split = v.find(|c: char| c.is_ascii_alphabetic())?;
    let (num, unit) = v.split_at(split);
    let n: f64 = num.parse().ok()?;
    Some(match unit {
        "us" => n / 1000.0,
        "ms" => n,
        "s" => n * 1000.0,
        "m" => n * 60_000.0,
        _ => return None,
    })
}

pub(crate) fn parse_wrk(out: &str) -> Option<LoadStats> {
    let mut r = LoadStats::default();
    let mut have_rps = false;
    for line in out.lines() {
        let t = line.trim();
        if let Some(v) = t.strip_prefix("Requests/sec:") {
            r.rps = v.trim().parse().ok()?;
            have_rps = true;
        } else if let Some(v) = t.strip_prefix("50%") {
            r.p50_ms = wrk_ms(v.trim())?;
        } else if let Some(v) = t.strip_prefix("99%") {
            r.p99_ms = wrk_ms(v.trim())?;
        } else if let Some(v) = t.strip_prefix("Socket errors:") {
            r.errors += v
                .split(',')
                .filter_map(|p| p.split_whitespace().last()?.parse::<u64>().ok())
                .sum::<u64>();
        } else if let Some(v) = t.strip_prefix("Non-2xx or 3xx responses:") {
            r.errors += v.trim().parse::<u64>().unwrap_or(0);
        }
    }
    have_rps.then_some(r)
}

/// rps and errors from h2load's summary (`finished in 1.00s, 126809.00 req/s, ...` and
/// `requests: N total, N started, N done, N succeeded, N failed, N errored, N timeout`).
pub(crate) fn parse_h2load(out: &str) -> Option<LoadStats> {
    let mut r = LoadStats::default();
    let mut have_rps = false;
    for line in out.lines() {
        let t = line.trim();
        if let Some(v) = t.strip_prefix("finished in ") {
            let rps = v.split(',').nth(1)?.trim().strip_suffix(" req/s")?;
            r.rps = rps.parse().ok()?;
            have_rps = true;
        } else if let Some(v) = t.strip_prefix("requests:") {
            for part in v.split(',') {
                let mut it = part.split_whitespace();
                let (n, what) = (it.next()?, it.next()?);
                if ["failed", "errored", "timeout"].contains(&what) {
                    r.errors += n.parse::<u64>().ok()?;
                }
            }
        } else if let Some(v) = t.strip_prefix("status codes:") {
            for part in v.split(',') {
                let mut it = part.split_whitespace();
                let (n, what) = (it.next()?, it.next()?);
                if what != "2xx" {
                    r.errors += n.parse::<u64>().ok()?;
                }
            }
        }
    }
    have_rps.then_some(r)
}

/// p50 and p99 in ms from h2load's `--log-file` (`start µs \t status \t duration µs` per line).
pub(crate) fn h2load_percentiles(log: &str) -> (f64, f64) {
    let mut us: Vec<u64> = log
        .lines()
        .filter_map(|l| l.split('\t').nth(2)?.trim().parse().ok())
        .collect();
    if us.is_empty() {
        return (f64::NAN, f64::NAN);
    }
    us.sort_unstable();
    let at = |q: f64| us[((us.len() - 1) as f64 * q).round() as usize] as f64 / 1000.0;
    (at(0.50), at(0.99))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_wrk_output() {
        let out = "Running 5s test @ http://127.0.0.1:1/\n  1 threads and 64 connections\n  Latency Distribution\n     50%  512.00us\n     75%    1.00ms\n     90%    2.00ms\n     99%    8.08ms\n  1000 requests in 5.00s, 1.00MB read\n  Socket errors: connect 1, read 2, write 0, timeout 3\n  Non-2xx or 3xx responses: 4\nRequests/sec:  57172.12\n";
        let r = parse_wrk(out).unwrap();
        assert_eq!(r.rps, 57172.12);
        assert_eq!(r.p50_ms, 0.512);
        assert_eq!(r.p99_ms, 8.08);
        assert_eq!(r.errors, 10);
        assert_eq!(wrk_ms("1.02s"), Some(1020.0));
    }

    #[test]
    fn parses_h2load_output() {
        let out = "finished in 1.00s, 126809.00 req/s, 9.07MB/s\nrequests: 126809 total, 126841 started, 126809 done, 126800 succeeded, 5 failed, 3 errored, 1 timeout\nstatus codes: 126800 2xx, 0 3xx, 2 4xx, 0 5xx\n";
        let r = parse_h2load(out).unwrap();
        assert_eq!(r.rps, 126809.0);
        assert_eq!(r.errors, 11);
        let log = (1..=100)
            .map(|i| format!("1795766804976900\t200\t{}\n", i * 1000))
            .collect::<String>();
        assert_eq!(h2load_percentiles(&log), (51.0, 99.0));
    }
}
