//! End-to-end tests on the real `axum_hello` example: a master and 2 worker processes on
//! 127.0.0.1, real HTTP clients, real signals.

mod util;

use std::path::PathBuf;

fn bin() -> PathBuf {
    prefork_testutil::example_bin("axum_hello")
}

#[test]
fn serves_recovers_and_dies_with_its_master() {
    util::serves_recovers_and_dies_with_its_master(&bin());
}

#[test]
fn sigterm_drains_a_slow_request() {
    // The shared socket here (the hyper suite covers the reuseport mode).
    util::sigterm_drains_a_slow_request(&bin(), &[]);
}

#[test]
fn no_prefork_serves_and_drains() {
    util::no_prefork_serves_and_drains(&bin());
}

#[test]
fn bad_start_fails_fast() {
    util::bad_start_fails_fast(&bin(), "axum_hello");
}

#[cfg(feature = "tls")]
#[test]
fn tls_serves_and_survives_bad_handshakes() {
    util::tls_serves_and_survives_bad_handshakes(&bin());
}

#[cfg(feature = "tls")]
#[test]
fn tls_bad_inputs_fail_fast() {
    util::tls_bad_inputs_fail_fast(&bin(), "axum_hello");
}
