//! Figures of the runs: medians and spreads per configuration, per-round ratios of ours against
//! each peer, the Markdown report and the raw JSON.

use std::fmt::Write as _;

use serde::Serialize;

/// One measured run of one server in one case and round (the raw JSON keeps every one).
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Sample {
    pub(crate) round: usize,
    pub(crate) case: String,
    pub(crate) server: String,
    pub(crate) mode: String,
    pub(crate) workers: usize,
    pub(crate) conns: usize,
    /// h2load streams per connection (0 for wrk runs).
    pub(crate) streams: usize,
    pub(crate) rps: f64,
    pub(crate) p50_ms: f64,
    pub(crate) p99_ms: f64,
    pub(crate) errors: u64,
    /// The server tree's CPU, % of one core.
    pub(crate) cpu_pct: f64,
    /// rps over the server tree's CPU (cores busy).
    pub(crate) rps_per_core: f64,
    /// Peak PSS of the server tree while loaded, MiB.
    pub(crate) pss_mb: f64,
    pub(crate) procs: usize,
    /// c10k: PSS of the tree before the load, MiB.
    pub(crate) pss_idle_mb: Option<f64>,
    /// c10k: PSS of the tree 5 s after the load, MiB.
    pub(crate) pss_after_mb: Option<f64>,
    /// reload: p99 and errors of the same load without the reload.
    pub(crate) p99_base_ms: Option<f64>,
    pub(crate) errors_base: Option<u64>,
    /// reload: what the master did with SIGHUP.
    pub(crate) reload: Option<String>,
    /// Ours with stats on, 2+ workers: requests each worker process served over the warm-up
    /// and the load, in worker-id order (from the master's stats).
    pub(crate) worker_requests: Option<Vec<u64>>,
}

/// Median, min and max of one figure over the rounds.
#[derive(Debug, Clone, Copy, Serialize)]
pub(crate) struct Spread {
    pub(crate) median: f64,
    pub(crate) min: f64,
    pub(crate) max: f64,
}

impl Spread {
    pub(crate) fn of(mut v: Vec<f64>) -> Spread {
        v.retain(|x| !x.is_nan());
        if v.is_empty() {
            return Spread {
                median: f64::NAN,
                min: f64::NAN,
                max: f64::NAN,
            };
        }
        v.sort_by(|a, b| a.total_cmp(b));
        let n = v.len();
        let median = if n % 2 == 1 {
            v[n / 2]
        } else {
            (v[n / 2 - 1] + v[n / 2]) / 2.0
        };
        Spread {
            median,
            min: v[0],
            max: v[n - 1],
        }
    }

    /// `median (min–max)`, or just the value for one run.
    fn fmt(&self, decimals: usize) -> String {
        if self.median.is_nan() {
            "–".into()
        } else if self.min == self.max {
            format!("{:.*}", decimals, self.median)
        } else {
            format!(
                "{:.*} ({:.*}–{:.*})",
                decimals, self.median, decimals, self.min, decimals, self.max
            )
        }
    }
}

/// One configuration (case, server, mode) over its rounds.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Summary {
    pub(crate) case: String,
    pub(crate) server: String,
    pub(crate) mode: String,
    pub(crate) conns: usize,
    pub(crate) streams: usize,
    pub(crate) rounds: usize,
    pub(crate) rps: Spread,
    pub(crate) p50_ms: Spread,
    pub(crate) p99_ms: Spread,
    pub(crate) errors: u64,
    pub(crate) cpu_pct: Spread,
    pub(crate) rps_per_core: Spread,
    pub(crate) pss_mb: Spread,
    pub(crate) procs: usize,
    pub(crate) pss_idle_mb: Option<Spread>,
    pub(crate) pss_after_mb: Option<Spread>,
    /// c10k: (loaded PSS - idle PSS) / connections, KiB.
    pub(crate) kib_per_conn: Option<Spread>,
    pub(crate) p99_base_ms: Option<Spread>,
    pub(crate) errors_base: Option<u64>,
    pub(crate) reload: Vec<String>,
    /// Each worker's share of the requests, %, largest first: per rank, the median over the
    /// rounds.
    pub(crate) worker_shares_pct: Option<Vec<f64>>,
    /// The busiest worker's requests over the idlest one's.
    pub(crate) worker_max_min: Option<Spread>,
}

/// One summary per configuration, in first-run order.
pub(crate) fn summarize(samples: &[Sample]) -> Vec<Summary> {
    let key = |s: &Sample| (s.case.clone(), s.server.clone(), s.mode.clone());
    let mut out: Vec<Summary> = Vec::new();
    for s in samples {
        if out
            .iter()
            .any(|o| (o.case.clone(), o.server.clone(), o.mode.clone()) == key(s))
        {
            continue;
        }
        let same: Vec<&Sample> = samples.iter().filter(|o| key(o) == key(s)).collect();
        let spread = |f: fn(&Sample) -> f64| Spread::of(same.iter().map(|s| f(s)).collect());
        let opt = |f: fn(&Sample) -> Option<f64>| {
            let v: Vec<f64> = same.iter().filter_map(|s| f(s)).collect();
            (!v.is_empty()).then(|| Spread::of(v))
        };
        out.push(Summary {
            case: s.case.clone(),
            server: s.server.clone(),
            mode: s.mode.clone(),
            conns: s.conns,
            streams: s.streams,
            rounds: same.len(),
            rps: spread(|s| s.rps),
            p50_ms: spread(|s| s.p50_ms),
            p99_ms: spread(|s| s.p99_ms),
            errors: same.iter().map(|s| s.errors).sum(),
            cpu_pct: spread(|s| s.cpu_pct),
            rps_per_core: spread(|s| s.rps_per_core),
            pss_mb: spread(|s| s.pss_mb),
            procs: same.iter().map(|s| s.procs).max().unwrap_or(0),
            pss_idle_mb: opt(|s| s.pss_idle_mb),
            pss_after_mb: opt(|s| s.pss_after_mb),
            kib_per_conn: opt(|s| {
                s.pss_idle_mb
                    .map(|idle| (s.pss_mb - idle) * 1024.0 / s.conns.max(1) as f64)
            }),
            p99_base_ms: opt(|s| s.p99_base_ms),
            errors_base: same.iter().map(|s| s.errors_base).sum(),
            reload: same.iter().filter_map(|s| s.reload.clone()).collect(),
            worker_shares_pct: median_shares(&same),
            worker_max_min: opt(|s| s.worker_requests.as_deref().map(super::workers::max_min)),
        });
    }
    out
}

/// Per rank (busiest worker first), the median share over the rounds that have shares.
fn median_shares(runs: &[&Sample]) -> Option<Vec<f64>> {
    let rounds: Vec<Vec<f64>> = runs
        .iter()
        .filter_map(|s| s.worker_requests.as_deref().map(super::workers::shares))
        .filter(|v| !v.is_empty())
        .collect();
    let n = rounds.iter().map(Vec::len).max()?;
    Some(
        (0..n)
            .map(|i| {
                Spread::of(
                    rounds
                        .iter()
                        .map(|r| r.get(i).copied().unwrap_or(0.0))
                        .collect(),
                )
                .median
            })
            .collect(),
    )
}

/// `52/48 (x1.08)`: the median shares and the max/min ratio (median, min–max), or `–`.
fn shares_cell(s: &Summary) -> String {
    match (&s.worker_shares_pct, &s.worker_max_min) {
        (Some(shares), Some(ratio)) => {
            let shares: Vec<String> = shares.iter().map(|p| format!("{p:.0}")).collect();
            format!("{} (x{})", shares.join("/"), ratio.fmt(2))
        }
        _ => "–".into(),
    }
}

/// Ours against one other configuration in one case, round by round.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Comparison {
    pub(crate) case: String,
    pub(crate) ours: String,
    pub(crate) other: String,
    /// ours / other rps in each round where both ran.
    pub(crate) rps_ratios: Vec<f64>,
    pub(crate) rps_ratio: Spread,
    pub(crate) rps_verdict: &'static str,
    /// ours / other p99 in each round (below 1: ours is lower).
    pub(crate) p99_ratios: Vec<f64>,
    pub(crate) p99_ratio: Spread,
    pub(crate) p99_verdict: &'static str,
}

/// Rounds a verdict needs at least.
pub(crate) const MIN_ROUNDS: usize = 3;

/// "higher" / "lower" only where the spreads do not overlap or the ratio is on the same side of
/// 1 in every round (of at least [`MIN_ROUNDS`]); otherwise "no clear difference".
fn verdict(ours: &[f64], other: &[f64], ratios: &[f64]) -> &'static str {
    let (o, t) = (Spread::of(ours.to_vec()), Spread::of(other.to_vec()));
    if ratios.len() < MIN_ROUNDS {
        "too few rounds"
    } else if o.min > t.max || ratios.iter().all(|&r| r > 1.0) {
        "higher"
    } else if o.max < t.min || ratios.iter().all(|&r| r < 1.0) {
        "lower"
    } else {
        "no clear difference"
    }
}

/// Every prefork configuration of ours against every peer of the same case, and (where both
/// ran) against the same adapter's `no-prefork`, `prefork-stats-off` (the ratio is then
/// stats on / stats off) and `prefork-no-balance` (balanced / unbalanced); `cpu-affinity` against the same adapter's unpinned `prefork`.
pub(crate) fn compare(samples: &[Sample]) -> Vec<Comparison> {
    let sums = summarize(samples);
    let mut out = Vec::new();
    for ours in sums
        .iter()
        .filter(|s| s.mode == "prefork" || s.mode == "cpu-affinity")
    {
        let others = sums.iter().filter(|o| {
            o.case == ours.case
                && if ours.mode == "cpu-affinity" {
                    // Pinned workers against the same server unpinned, same run.
                    o.server == ours.server && o.mode == "prefork"
                } else {
                    o.mode == "peer"
                        || (o.server == ours.server
                            && (o.mode == "no-prefork"
                                || o.mode == "prefork-stats-off"
                                || o.mode == "prefork-no-balance"))
                }
        });
        for other in others {
            let runs = |s: &Summary| -> Vec<&Sample> {
                samples
                    .iter()
                    .filter(|x| x.case == s.case && x.server == s.server && x.mode == s.mode)
                    .collect()
            };
            let (a, b) = (runs(ours), runs(other));
            let mut rps_ratios = Vec::new();
            let mut p99_ratios = Vec::new();
            for x in &a {
                if let Some(y) = b.iter().find(|y| y.round == x.round) {
                    rps_ratios.push(x.rps / y.rps);
                    p99_ratios.push(x.p99_ms / y.p99_ms);
                }
            }
            let rps = |v: &[&Sample]| v.iter().map(|s| s.rps).collect::<Vec<_>>();
            let p99 = |v: &[&Sample]| v.iter().map(|s| s.p99_ms).collect::<Vec<_>>();
            out.push(Comparison {
                case: ours.case.clone(),
                ours: format!("{} {}", ours.server, ours.mode),
                other: format!("{} {}", other.server, other.mode),
                rps_ratio: Spread::of(rps_ratios.clone()),
                rps_verdict: verdict(&rps(&a), &rps(&b), &rps_ratios),
                p99_ratio: Spread::of(p99_ratios.clone()),
                p99_verdict: verdict(&p99(&a), &p99(&b), &p99_ratios),
                rps_ratios,
                p99_ratios,
            });
        }
    }
    out
}

/// The load section of the Markdown report.
pub(crate) fn markdown(samples: &[Sample]) -> String {
    let sums = summarize(samples);
    let mut md = String::new();
    let mut cases: Vec<&str> = Vec::new();
    for s in &sums {
        if !cases.contains(&s.case.as_str()) {
            cases.push(&s.case);
        }
    }
    for case in cases {
        let rows: Vec<&Summary> = sums.iter().filter(|s| s.case == case).collect();
        let _ = writeln!(md, "### {case}\n");
        // Ours with counting workers: how the requests spread over them.
        let shares = rows.iter().any(|s| s.worker_shares_pct.is_some());
        let _ = writeln!(md, "| server | mode | conns | rounds | rps | p50 ms | p99 ms | errors | CPU % | rps per core | PSS MiB | procs |{}", if shares { " worker shares % (max/min) |" } else { "" });
        let _ = writeln!(
            md,
            "|---|---|---|---|---|---|---|---|---|---|---|---|{}",
            if shares { "---|" } else { "" }
        );
        for s in &rows {
            let conns = if s.streams > 0 {
                format!("{}x{}", s.conns, s.streams)
            } else {
                s.conns.to_string()
            };
            let _ = writeln!(
                md,
                "| {} | {} | {conns} | {} | {} | {} | {} | {} | {} | {} | {} | {} |{}",
                s.server,
                s.mode,
                s.rounds,
                s.rps.fmt(0),
                s.p50_ms.fmt(2),
                s.p99_ms.fmt(2),
                s.errors,
                s.cpu_pct.fmt(0),
                s.rps_per_core.fmt(0),
                s.pss_mb.fmt(1),
                s.procs,
                if shares {
                    format!(" {} |", shares_cell(s))
                } else {
                    String::new()
                }
            );
        }
        md.push('\n');
        if shares {
            let _ = writeln!(md, "Worker shares: each worker's part of the requests over the warm-up and the load, busiest first (per rank, the median over the rounds), from the master's stats before and after; max/min: the busiest worker's requests over the idlest one's, median (min–max).\n");
        }
        if rows.iter().any(|s| s.pss_idle_mb.is_some()) {
            let _ = writeln!(md, "Memory of the server tree (PSS, MiB): idle before the load, peak while loaded, 5 s after; KiB per connection = (loaded - idle) / connections.\n");
            let _ = writeln!(
                md,
                "| server | mode | idle | loaded | 5 s after | KiB per connection |"
            );
            let _ = writeln!(md, "|---|---|---|---|---|---|");
            for s in &rows {
                let f = |v: &Option<Spread>, d| v.as_ref().map_or("–".into(), |v| v.fmt(d));
                let _ = writeln!(
                    md,
                    "| {} | {} | {} | {} | {} | {} |",
                    s.server,
                    s.mode,
                    f(&s.pss_idle_mb, 1),
                    s.pss_mb.fmt(1),
                    f(&s.pss_after_mb, 1),
                    f(&s.kib_per_conn, 1)
                );
            }
            md.push('\n');
        }
        if rows.iter().any(|s| s.p99_base_ms.is_some()) {
            let _ = writeln!(md, "Reload: the same load without and with a SIGHUP to the master a third of the way in.\n");
            let _ = writeln!(md, "| server | mode | errors without | errors with reload | p99 ms without | p99 ms with reload | reload |");
            let _ = writeln!(md, "|---|---|---|---|---|---|---|");
            for s in &rows {
                let _ = writeln!(
                    md,
                    "| {} | {} | {} | {} | {} | {} | {} |",
                    s.server,
                    s.mode,
                    s.errors_base.unwrap_or(0),
                    s.errors,
                    s.p99_base_ms.map_or("–".into(), |v| v.fmt(2)),
                    s.p99_ms.fmt(2),
                    s.reload.join("; ")
                );
            }
            md.push('\n');
        }
    }
    let cmp = compare(samples);
    if !cmp.is_empty() {
        let _ = writeln!(md, "### Ours against the others, round by round\n");
        let _ = writeln!(md, "Ratios are ours / other within the same round: median (min–max); against `prefork-stats-off` the ratio is stats on / stats off, the hot-path cost of counting and heartbeats; against `prefork-no-balance` it is balanced accept on / off. A verdict says higher or lower only where the spreads do not overlap or the ratio is on the same side of 1 in every round.\n");
        let _ = writeln!(
            md,
            "| case | ours | other | rps ratio | rps | p99 ratio | p99 |"
        );
        let _ = writeln!(md, "|---|---|---|---|---|---|---|");
        for c in &cmp {
            let _ = writeln!(
                md,
                "| {} | {} | {} | x{} | {} | x{} | {} |",
                c.case,
                c.ours,
                c.other,
                c.rps_ratio.fmt(2),
                c.rps_verdict,
                c.p99_ratio.fmt(2),
                c.p99_verdict
            );
        }
        md.push('\n');
    }
    md
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(round: usize, server: &str, mode: &str, rps: f64, p99: f64) -> Sample {
        Sample {
            round,
            case: "plain".into(),
            server: server.into(),
            mode: mode.into(),
            workers: 2,
            conns: 64,
            streams: 0,
            rps,
            p50_ms: 0.5,
            p99_ms: p99,
            errors: 0,
            cpu_pct: 100.0,
            rps_per_core: rps,
            pss_mb: 5.0,
            procs: 3,
            pss_idle_mb: None,
            pss_after_mb: None,
            p99_base_ms: None,
            errors_base: None,
            reload: None,
            worker_requests: None,
        }
    }

    #[test]
    fn spread_and_verdicts() {
        let s = Spread::of(vec![3.0, 1.0, 2.0, 10.0]);
        assert_eq!((s.median, s.min, s.max), (2.5, 1.0, 10.0));
        // Overlapping spreads, but ours ahead in every round: higher.
        let mut samples = vec![
            sample(1, "axum", "prefork", 100.0, 1.0),
            sample(1, "nginx", "peer", 90.0, 1.0),
            sample(2, "axum", "prefork", 80.0, 2.0),
            sample(2, "nginx", "peer", 79.0, 1.0),
        ];
        assert_eq!(compare(&samples)[0].rps_verdict, "too few rounds");
        samples.push(sample(3, "axum", "prefork", 95.0, 0.5));
        samples.push(sample(3, "nginx", "peer", 94.0, 1.0));
        let c = compare(&samples);
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].rps_verdict, "higher");
        assert_eq!(c[0].p99_verdict, "no clear difference");
        assert!(markdown(&samples).contains("| plain | axum prefork | nginx peer |"));
    }

    #[test]
    fn stats_on_against_stats_off() {
        let samples: Vec<Sample> = (1..=3)
            .flat_map(|r| {
                [
                    sample(r, "hyper", "prefork", 99.0, 1.0),
                    sample(r, "hyper", "prefork-stats-off", 100.0, 1.0),
                ]
            })
            .collect();
        let c = compare(&samples);
        assert_eq!(c.len(), 1);
        assert_eq!(
            (c[0].ours.as_str(), c[0].other.as_str()),
            ("hyper prefork", "hyper prefork-stats-off")
        );
        assert!((c[0].rps_ratio.median - 0.99).abs() < 1e-9);
        assert_eq!(c[0].rps_verdict, "lower");
    }

    #[test]
    fn worker_shares_in_the_table() {
        let mut ours = sample(1, "hyper", "prefork", 100.0, 1.0);
        ours.worker_requests = Some(vec![480, 520]);
        let samples = vec![ours, sample(1, "nginx", "peer", 90.0, 1.0)];
        let md = markdown(&samples);
        assert!(md.contains("| 52/48 (x1.08) |"), "{md}");
        assert!(md.contains("| 3 | – |"), "peers get no figure: {md}");
    }
}
