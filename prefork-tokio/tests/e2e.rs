//! End-to-end tests on the real `hyper_hello` example: a master and 2 worker processes on
//! 127.0.0.1, real HTTP clients, real signals. The scenarios are the example contract's
//! (`prefork_testutil::contract`), shared with every adapter.

use std::path::PathBuf;

use prefork_testutil::contract;

/// hyper-util's auto builder speaks HTTP/2 with prior knowledge on plain TCP.
const H2C: bool = true;

fn bin() -> PathBuf {
    prefork_testutil::example_bin("hyper_hello")
}

#[test]
fn serves_respawns_and_dies_with_the_master() {
    contract::serves_respawns_and_dies_with_the_master(&bin(), &[], H2C);
}

#[test]
fn sigterm_drains_a_slow_request_reuseport() {
    // The reuseport mode here (the axum suite covers the shared socket).
    contract::sigterm_drains_a_slow_request(&bin(), &["--reuseport"]);
}

#[test]
fn bad_input_fails_fast() {
    contract::bad_input_fails_fast(&bin());
}

#[test]
fn no_prefork_serves_and_drains() {
    contract::no_prefork_serves_and_drains(&bin(), H2C);
}

#[test]
fn no_prefork_bad_input_fails_fast() {
    contract::no_prefork_bad_input_fails_fast(&bin());
}

#[cfg(feature = "tls")]
#[test]
fn tls_serves_and_survives_bad_handshakes() {
    contract::tls_serves_and_survives_bad_handshakes(&bin(), &[], true);
}

/// Plain HTTP on the TLS port: a `400` saying HTTPS is expected, then the close; the workers
/// keep serving HTTPS.
#[cfg(feature = "tls")]
#[test]
fn tls_answers_plain_http_with_400() {
    contract::tls_answers_plain_http_with_400(&bin(), &[]);
}

/// TLS sessions resume on whichever worker a returning client reaches.
#[cfg(feature = "tls")]
#[test]
fn tls_sessions_resume_on_every_worker() {
    contract::tls_sessions_resume_on_every_worker(&bin(), &[]);
}

#[cfg(feature = "tls")]
#[test]
fn bad_tls_inputs_fail_fast() {
    contract::bad_tls_inputs_fail_fast(&bin());
}

/// A request head sent one byte at a time across several drain graces is still answered.
#[test]
fn drain_answers_a_head_sent_across_several_graces() {
    contract::drain_answers_a_head_sent_across_several_graces(&bin(), &[]);
}

#[test]
fn drain_under_load_loses_nothing() {
    contract::drain_under_load_loses_nothing(&bin(), &[]);
}

/// Balanced accept (issue 16, on by default): a burst of 64 connections to 2, 4 and 8 workers
/// leaves each holding its share within the bounds of `ops::burst_is_balanced`.
#[test]
fn a_burst_of_64_connections_spreads_over_2_4_and_8_workers() {
    prefork_testutil::ops::burst_is_balanced(&bin(), &[]);
}

/// Balanced accept for connections that arrive one at a time (64, 5 ms apart) to 2, 4 and 8
/// workers: each holds between 0.5x and 1.5x of its share (`ops::one_at_a_time_is_balanced`).
#[test]
fn connections_arriving_one_at_a_time_spread_over_2_4_and_8_workers() {
    prefork_testutil::ops::one_at_a_time_is_balanced(&bin(), &[]);
}

/// Unix domain sockets (`--addr unix:PATH`) are served by the same accept loop.
#[test]
fn serves_on_a_unix_socket() {
    prefork_testutil::ops::serves_on_a_unix_socket(&bin());
}

/// An idle keep-alive connection is closed after the keep-alive timeout, a busy one is not.
#[test]
fn idle_keepalive_connections_close_after_the_keepalive_timeout() {
    contract::idle_keepalive_connections_close_after_the_keepalive_timeout(&bin(), &[]);
}

#[test]
fn header_read_timeout_counts_from_the_heads_first_byte() {
    contract::header_read_timeout_counts_from_the_heads_first_byte(&bin(), &[]);
}
