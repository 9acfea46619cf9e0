//! Worker health on the real `std_hello`: the heartbeat watchdog (a blocked event loop, a stopped
//! worker, a stopped master), recycling by requests and memory under load, and 10,000
//! connections under a soft fd limit of 1024. The scenarios are shared by every adapter
//! (`prefork_testutil::health`).

use std::path::PathBuf;

use prefork_testutil::health;

fn bin() -> PathBuf {
    prefork_testutil::example_bin("std_hello")
}

#[test]
fn a_blocked_worker_is_replaced() {
    health::a_blocked_worker_is_replaced(&bin(), &[]);
}

#[test]
fn a_stopped_worker_is_replaced() {
    health::a_stopped_worker_is_replaced(&bin(), &[]);
}

#[test]
fn a_stopped_master_kills_no_worker() {
    health::a_stopped_master_kills_no_worker(&bin(), &[]);
}

#[test]
fn max_requests_recycles_without_losing_capacity() {
    health::max_requests_recycles_without_losing_capacity(&bin(), &[]);
}

#[test]
fn max_memory_replaces_a_leaking_worker() {
    health::max_memory_replaces_a_leaking_worker(&bin(), &[]);
}

#[test]
fn ten_thousand_connections_under_a_soft_limit_of_1024() {
    health::ten_thousand_connections_under_a_soft_limit_of_1024(&bin(), &[]);
}

#[test]
fn no_stats_reports_zeros_and_refuses_max_requests() {
    health::no_stats_reports_zeros_and_refuses_max_requests(&bin(), &[]);
}
