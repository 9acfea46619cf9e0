//! Balanced accept on the real `std_hello`: a burst of connections opened at once is spread
//! over every worker (issue 16; on by default).

#[test]
fn a_burst_of_64_connections_spreads_over_2_4_and_8_workers() {
    prefork_testutil::ops::burst_is_balanced(&prefork_testutil::example_bin("std_hello"), &[]);
}

/// Balanced accept for connections that arrive one at a time (64, 5 ms apart) to 2, 4 and 8
/// workers: each holds between 0.5x and 1.5x of its share (`ops::one_at_a_time_is_balanced`).
#[test]
fn connections_arriving_one_at_a_time_spread_over_2_4_and_8_workers() {
    prefork_testutil::ops::one_at_a_time_is_balanced(
        &prefork_testutil::example_bin("std_hello"),
        &[],
    );
}

/// The measurement behind the figures (not a check): for N = 2, 4, 8, three bursts of 64
/// connections each, printed per worker. `BALANCE_BIN` picks the program (default: std_hello),
/// e.g. a release build of another adapter's contract program; run it with
/// `PREFORK_BALANCE=off` in the environment for the unbalanced figures. With `BALANCE_GAP_MS=5`
/// the 64 connections arrive one at a time instead, each 5 ms after the one before was
/// answered.
///
/// `BALANCE_BIN=$PWD/target/release/examples/hyper_hello cargo test --release -p prefork-core
/// --test balance -- --ignored --nocapture` (an absolute path: the test runs in the crate's
/// directory; `--release`: a debug build of the client opens the burst too slowly to be one)
#[test]
#[ignore]
fn distribution() {
    let bin = std::env::var_os("BALANCE_BIN")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| prefork_testutil::example_bin("std_hello"));
    let gap = std::env::var("BALANCE_GAP_MS")
        .ok()
        .and_then(|ms| ms.parse().ok())
        .map(std::time::Duration::from_millis);
    for workers in [2, 4, 8] {
        for round in 0..3 {
            let per = match gap {
                Some(gap) => prefork_testutil::ops::one_at_a_time(&bin, workers, gap),
                None => prefork_testutil::ops::burst(&bin, workers, &[]),
            };
            let mut counts: Vec<usize> = per.values().copied().collect();
            counts.sort_unstable_by(|a, b| b.cmp(a));
            counts.resize(workers.max(counts.len()), 0);
            println!("N={workers} round {round}: {counts:?}");
        }
    }
}
