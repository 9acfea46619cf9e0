//! Test helpers shared by the prefork crates: start the example servers as real processes,
//! speak real HTTP to them (hyper's client: HTTP/1.1, h2c, TLS), and inspect the process tree.
//!
//! Every wait here is bounded; deadlines are generous so that a slow machine never fails a test,
//! and exist only so that a broken build cannot hang one.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

pub use nix::sys::signal::Signal as Sig;

pub mod harness;
pub mod health;
pub mod load;
pub mod ops;
pub use load::{Load, LoadConfig};
pub mod contract;
pub mod example;

mod certs;
mod client;
mod procfs;
mod server;

pub use certs::*;
pub use client::*;
pub use procfs::*;
pub use server::*;

/// The deadline for anything that should take a moment: a server's start, a worker's respawn, a
/// drain. Generous on purpose: it only keeps a broken build from hanging.
pub const DEADLINE: Duration = Duration::from_secs(30);

/// The path of an example binary built by `cargo test` (`target/<profile>/examples/NAME`).
pub fn example_bin(name: &str) -> PathBuf {
    // The test binary lives in target/<profile>/deps/.
    let exe = std::env::current_exe().expect("current_exe");
    let profile_dir = exe.parent().and_then(|d| d.parent()).expect("target dir");
    let path = profile_dir.join("examples").join(name);
    assert!(
        path.exists(),
        "{} is missing: run the tests with `cargo test --workspace` (which builds the examples)",
        path.display()
    );
    path
}

/// Polls `f` until it returns true or `timeout` passes: every millisecond for the first 200 ms
/// (so the benchmarks can time short events with it), every 10 ms after that.
pub fn wait_until(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    loop {
        if f() {
            return true;
        }
        let elapsed = start.elapsed();
        if elapsed >= timeout {
            return false;
        }
        let pause = if elapsed < Duration::from_millis(200) {
            1
        } else {
            10
        };
        std::thread::sleep(Duration::from_millis(pause));
    }
}
