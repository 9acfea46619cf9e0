//! Operations scenarios under load, shared by every adapter's tests: rolling reloads and scaling
//! while a load client counts every failure. Each proves "zero failed requests" with a real
//! client, keep-alive and new-connection-per-request, not a claim.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use crate::load::{Load, LoadConfig};
use crate::{contract, wait_until, Server, Sig, DEADLINE};

/// The load of the operations scenarios: 64 keep-alive connections and 2 clients that open a
/// new connection per request, on `GET /pid`.
pub fn load_config() -> LoadConfig {
    LoadConfig {
        keepalive: 64,
        new_conn: 2,
        path: "/pid".into(),
        pause: Duration::from_millis(1),
        max_duration: Duration::from_secs(120),
        ..LoadConfig::default()
    }
}

/// The master's live children once there are exactly `n` (bounded).
pub fn children(s: &Server, n: usize) -> BTreeSet<u32> {
    assert!(
        wait_until(DEADLINE, || s.children().len() == n),
        "expected {n} workers, have {:?}; log:\n{}",
        s.children(),
        s.log()
    );
    s.children().into_iter().collect()
}

/// Five rolling reloads (SIGHUP, each waited for until the master logs `reload complete`) under
/// constant load: no request fails, and every worker pid changed each time.
pub fn reloads_under_load_lose_nothing(bin: &Path, extra: &[&str]) {
    let s = contract::start(bin, extra);
    s.wait_ready();
    let load = Load::start(s.addr, load_config());
    assert!(load.wait_ok(500), "{:?}\n{}", load.snapshot(), s.log());
    let mut before = children(&s, 2);
    for round in 1..=5 {
        s.signal(Sig::SIGHUP);
        assert!(
            s.wait_log("reload complete", round),
            "reload {round} did not complete; {:?}\n{}",
            load.snapshot(),
            s.log()
        );
        let after = children(&s, 2);
        assert!(
            after.is_disjoint(&before),
            "round {round}: {before:?} -> {after:?}"
        );
        assert!(load.wait_ok(200), "round {round}: {:?}", load.snapshot());
        before = after;
    }
    let report = load.stop();
    assert_eq!(report.failed(), 0, "{report:?}\n{}", s.log());
    assert!(
        report.closed_by_server > 0,
        "the drains closed connections at request boundaries"
    );
    assert!(
        report.pids.len() >= 12,
        "answered by every generation: {report:?}"
    );
}

/// SIGTTIN three times, then SIGTTOU three times, under constant load: no request fails and
/// the master ends with 2 workers, each answering.
pub fn scaling_under_load_loses_nothing(bin: &Path, extra: &[&str]) {
    let s = contract::start(bin, extra);
    s.wait_ready();
    let load = Load::start(s.addr, load_config());
    assert!(load.wait_ok(500), "{:?}\n{}", load.snapshot(), s.log());
    for n in 3..=5 {
        s.signal(Sig::SIGTTIN);
        children(&s, n);
        assert!(load.wait_ok(100), "{:?}", load.snapshot());
    }
    for n in (2..=4).rev() {
        s.signal(Sig::SIGTTOU);
        children(&s, n);
        assert!(load.wait_ok(100), "{:?}", load.snapshot());
    }
    let report = load.stop();
    assert_eq!(report.failed(), 0, "{report:?}\n{}", s.log());
    let last = children(&s, 2);
    assert_eq!(
        crate::wait_for_distinct_pids(s.addr, 2),
        last,
        "{}",
        s.log()
    );
}

/// Starts `bin` with `workers` workers, opens a burst of 64 connections at once
/// ([`connections_per_pid`](crate::load::connections_per_pid)), and returns how many each worker
/// holds (pid 0: failed connections).
pub fn burst(bin: &Path, workers: usize, extra: &[&str]) -> std::collections::BTreeMap<u32, usize> {
    burst_with_log(bin, workers, extra).0
}

/// [`burst`], with the server's log.
pub fn burst_with_log(
    bin: &Path,
    workers: usize,
    extra: &[&str],
) -> (std::collections::BTreeMap<u32, usize>, String) {
    let s = all_ready(bin, workers, extra);
    let per = crate::load::connections_per_pid(s.addr, 64);
    (per, s.log())
}

/// `bin` started on 127.0.0.1 with `workers` workers, every one ready (and so counted in the
/// balance table). No warm-up requests: their connections would still be closing when the
/// test's arrive and skew the counts the balance works on.
fn all_ready(bin: &Path, workers: usize, extra: &[&str]) -> Server {
    let n = workers.to_string();
    let mut args = vec!["--addr", "127.0.0.1:0", "--workers", n.as_str()];
    args.extend_from_slice(extra);
    let s = Server::start(&bin.to_path_buf(), &args);
    assert_eq!(s.wait_ready().len(), workers, "{}", s.log());
    s
}

/// Balanced accept, on by default: a burst of 64 connections opened at once to 2 workers leaves
/// each holding between 0.5× and 1.5× of its share (16..=48); to 4 and 8 workers, every worker
/// holds some and none more than twice its share (1..=32, 1..=16). The goal is 0.5×–1.5× at 4
/// and 8 workers as well, which the balanced default meets in most bursts, but not every one on
/// a busy 2-core machine where workers wait for a core (and the other tests of the binary run
/// beside this one): each worker count gets up to 3 bursts, and one within the bounds passes.
/// Only the distribution is asserted, no timing; without balancing one worker takes nearly the
/// whole burst (64/0, 64/0/0/0, 49/9/5/1/0/0/0/0), which fails every bound in every burst.
pub fn burst_is_balanced(bin: &Path, extra: &[&str]) {
    for workers in [2, 4, 8] {
        let share = 64 / workers;
        let fair = if workers == 2 {
            share / 2..=share * 3 / 2
        } else {
            1..=share * 2
        };
        spread_in_one_of_3(workers, &fair, "a burst of 64 connections", || {
            burst_with_log(bin, workers, extra)
        });
    }
}

/// Runs `open` (64 connections to `workers` workers: how many each holds, and the server's log)
/// up to 3 times, and fails unless one left every worker holding within `fair`.
fn spread_in_one_of_3(
    workers: usize,
    fair: &std::ops::RangeInclusive<usize>,
    what: &str,
    mut open: impl FnMut() -> (std::collections::BTreeMap<u32, usize>, String),
) {
    let mut seen = Vec::new();
    let balanced = (0..3).any(|_| {
        let (per, log) = open();
        let ok =
            !per.contains_key(&0) && per.len() == workers && per.values().all(|n| fair.contains(n));
        seen.push((per, log));
        ok
    });
    let (_, last_log) = seen.last().cloned().unwrap_or_default();
    let tries: Vec<_> = seen.into_iter().map(|(per, _)| per).collect();
    assert!(
        balanced,
        "{workers} workers: none of 3 tries ({what}) left every worker holding {fair:?} \
         (pid 0: failed connections): {tries:?}\nlast log:\n{last_log}"
    );
}

/// Balanced accept for connections that arrive one at a time, as a server's clients mostly
/// do: 64 keep-alive connections, each opened 5 ms after the one before was answered (longer
/// than a worker over its share yields to another, `balance::YIELD_CAP`), to 2, 4 and 8
/// workers leave each holding between 0.5× and 1.5× of its share. Each arrival finds every
/// worker parked in accept, so a worker must ask the balance table when a connection wakes it,
/// not only before it waits: asked only before, the worker that wakes first takes nearly every
/// connection (62/2, 59/2/2/1). Only the distribution is asserted; the gap shapes the arrivals.
pub fn one_at_a_time_is_balanced(bin: &Path, extra: &[&str]) {
    for workers in [2, 4, 8] {
        let share = 64 / workers;
        let fair = share / 2..=share * 3 / 2;
        // Up to 3 tries, as for bursts: the other tests of the binary run beside this one, and
        // a worker that waits for a core longer than another yields to it takes nothing.
        spread_in_one_of_3(
            workers,
            &fair,
            "64 connections arriving one at a time",
            || one_at_a_time_with_log(bin, workers, Duration::from_millis(5), extra),
        );
    }
}

/// Starts `bin` with `workers` workers and opens 64 keep-alive connections one at a time, each
/// `gap` after the one before was answered; returns how many each worker process holds
/// (pid 0: failed).
pub fn one_at_a_time(
    bin: &Path,
    workers: usize,
    gap: Duration,
) -> std::collections::BTreeMap<u32, usize> {
    one_at_a_time_with_log(bin, workers, gap, &[]).0
}

fn one_at_a_time_with_log(
    bin: &Path,
    workers: usize,
    gap: Duration,
    extra: &[&str],
) -> (std::collections::BTreeMap<u32, usize>, String) {
    let s = all_ready(bin, workers, extra);
    let per = crate::load::connections_per_pid_in_waves(s.addr, 64, 1, gap);
    (per, s.log())
}

/// Balanced accept where the accept loop cannot be asked before each `accept` (actix-web's
/// accept thread, paused and resumed from outside): 64 connections opened in waves of 8 (each
/// wave answered before the next opens) to each of `counts` workers leave every worker holding
/// some and none more than 1.5× its share. No timing in the assertion.
pub fn waves_are_balanced(bin: &Path, counts: &[usize], extra: &[&str]) {
    for &workers in counts {
        let share = 64 / workers;
        let s = all_ready(bin, workers, extra);
        let per = crate::load::connections_per_pid_in_waves(s.addr, 64, 8, Duration::ZERO);
        assert!(
            !per.contains_key(&0),
            "failed connections: {per:?}\n{}",
            s.log()
        );
        assert_eq!(
            per.len(),
            workers,
            "every one of {workers} workers holds some: {per:?}\n{}",
            s.log()
        );
        for (pid, n) in &per {
            assert!(
                *n <= share * 3 / 2,
                "{workers} workers: worker {pid} holds {n} of 64 connections, over 1.5x its \
                 share of {share}: {per:?}\n{}",
                s.log()
            );
        }
    }
}

/// `--addr unix:PATH`: a raw HTTP/1.1 request over a `UnixStream` gets `Hello, World!` from
/// every worker's accept loop, and SIGTERM drains and exits 0.
pub fn serves_on_a_unix_socket(bin: &Path) {
    use std::io::{Read, Write};
    let dir = crate::temp_dir("unix");
    let path = dir.join("hello.sock");
    let addr = format!("unix:{}", path.display());
    let mut s = Server::start_ready(
        &bin.to_path_buf(),
        &["--addr", &addr, "--workers", "2"],
        &[],
    );
    let get = |target: &str| {
        let mut c = std::os::unix::net::UnixStream::connect(&path).unwrap();
        c.set_read_timeout(Some(DEADLINE)).unwrap();
        write!(
            c,
            "GET {target} HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n"
        )
        .unwrap();
        let mut out = String::new();
        c.read_to_string(&mut out).unwrap();
        out
    };
    let hello = get("/");
    assert!(
        hello.starts_with("HTTP/1.1 200") && hello.ends_with("Hello, World!"),
        "{hello:?}\n{}",
        s.log()
    );
    let mut pids = BTreeSet::new();
    assert!(
        wait_until(DEADLINE, || {
            let r = get("/pid");
            pids.insert(r.rsplit("\r\n\r\n").next().unwrap_or("").to_owned());
            pids.len() >= 2
        }),
        "both workers answer: {pids:?}"
    );
    s.signal(Sig::SIGTERM);
    let status = s.wait_exit(DEADLINE).expect("the master exits");
    assert!(status.success(), "{}", s.log());
}
