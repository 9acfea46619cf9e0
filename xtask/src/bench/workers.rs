//! How a run's requests spread over the workers of one of our prefork servers: the master's
//! control socket (`{"command":"stats"}`) read before and after the measured load.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// How long [`requests`] waits for every worker's next heartbeat.
const CATCH_UP: Duration = Duration::from_secs(5);

/// Requests served so far per worker process, keyed by (worker id, pid).
pub(crate) type Counts = BTreeMap<(u64, u64), u64>;

/// The master's answer to `stats`.
fn stats(socket: &Path) -> Result<serde_json::Value> {
    let what = || format!("the control socket {}", socket.display());
    let mut s = UnixStream::connect(socket).with_context(what)?;
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .with_context(what)?;
    writeln!(s, r#"{{"command":"stats"}}"#).with_context(what)?;
    let mut line = String::new();
    BufReader::new(s).read_line(&mut line).with_context(what)?;
    serde_json::from_str(&line).with_context(|| format!("{}: answered {line:?}", what()))
}

/// Requests served so far by each worker process, once every worker has sent a heartbeat after
/// `since` (the counts travel with the heartbeats, 1 s apart by default): with no load between
/// `since` and now, they include every request answered before `since`.
pub(crate) fn requests(socket: &Path, since: Instant) -> Result<Counts> {
    let deadline = Instant::now() + CATCH_UP;
    loop {
        let st = stats(socket)?;
        let workers = st["workers"].as_array().cloned().unwrap_or_default();
        let elapsed = since.elapsed().as_millis() as u64;
        let fresh = !workers.is_empty()
            && workers.iter().all(|w| {
                w["heartbeat_age_ms"]
                    .as_u64()
                    .is_some_and(|age| age + 1 < elapsed)
            });
        if fresh {
            return Ok(workers
                .iter()
                .map(|w| {
                    let n = |k: &str| w[k].as_u64().unwrap_or(0);
                    ((n("id"), n("pid")), n("requests"))
                })
                .collect());
        }
        if Instant::now() > deadline {
            bail!(
                "the workers sent no heartbeat within {CATCH_UP:?} (control socket {}): {st}",
                socket.display()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Requests each worker process served between two readings, in worker-id order (a process
/// that started in between counts from zero; one that exited is left out).
pub(crate) fn served(before: &Counts, after: &Counts) -> Vec<u64> {
    after
        .iter()
        .map(|(k, &n)| n.saturating_sub(before.get(k).copied().unwrap_or(0)))
        .collect()
}

/// Each worker's share of the requests, %, largest first (empty if nothing was served).
pub(crate) fn shares(served: &[u64]) -> Vec<f64> {
    let total: u64 = served.iter().sum();
    if total == 0 {
        return Vec::new();
    }
    let mut v: Vec<f64> = served
        .iter()
        .map(|&n| n as f64 * 100.0 / total as f64)
        .collect();
    v.sort_by(|a, b| b.total_cmp(a));
    v
}

/// The busiest worker's requests over the idlest one's (infinite if one served nothing, NaN
/// with fewer than two workers or no request).
pub(crate) fn max_min(served: &[u64]) -> f64 {
    let (Some(&max), Some(&min)) = (served.iter().max(), served.iter().min()) else {
        return f64::NAN;
    };
    if served.len() < 2 || max == 0 {
        f64::NAN
    } else {
        max as f64 / min as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_and_ratio_of_a_run() {
        let before: Counts = [((0, 10), 100), ((1, 11), 50)].into();
        // Worker 1 was replaced by pid 12 during the run.
        let after: Counts = [((0, 10), 620), ((1, 12), 480)].into();
        let s = served(&before, &after);
        assert_eq!(s, vec![520, 480]);
        assert_eq!(shares(&s), vec![52.0, 48.0]);
        assert!((max_min(&s) - 520.0 / 480.0).abs() < 1e-9);
        assert!(max_min(&[5, 0]).is_infinite());
        assert!(max_min(&[5]).is_nan());
        assert!(shares(&[0, 0]).is_empty());
    }
}
