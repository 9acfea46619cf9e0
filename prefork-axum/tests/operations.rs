//! Operations under load on the real `axum_hello`: five rolling reloads (SIGHUP) and TTIN/TTOU while a
//! load client counts every failure, keep-alive and new-connection-per-request: zero failed
//! requests. The scenarios are shared by every adapter (`prefork_testutil::ops`).

use std::path::PathBuf;

fn bin() -> PathBuf {
    prefork_testutil::example_bin("axum_hello")
}

#[test]
fn reloads_under_load_lose_nothing() {
    prefork_testutil::ops::reloads_under_load_lose_nothing(&bin(), &[]);
}

#[test]
fn scaling_under_load_loses_nothing() {
    prefork_testutil::ops::scaling_under_load_loses_nothing(&bin(), &[]);
}
